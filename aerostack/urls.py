from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from aerostack import accounts, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.health, name="health"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/login/", accounts.ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password/", accounts.password_change, name="password_change"),
    # Before admin.site.urls: the admin's log-in gets the dashboard log-in's per-IP failure throttle.
    path("admin/login/", accounts.admin_login, name="admin_login"),
    path("accounts/password/reset/", accounts.ThrottledPasswordResetView.as_view(), name="password_reset"),
    path(
        "accounts/password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(template_name="accounts/password_reset_done.html"),
        name="password_reset_done",
    ),
    path(
        "accounts/password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(template_name="accounts/password_reset_confirm.html"),
        name="password_reset_confirm",
    ),
    path(
        "accounts/password/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(template_name="accounts/password_reset_complete.html"),
        name="password_reset_complete",
    ),
    path("admin/", admin.site.urls),
    path("workspaces/", include("workspaces.urls")),
    path("workspaces/<slug:slug>/tokens/", include("tokens.urls")),
    path("workspaces/<slug:slug>/servers/", include("gateway.dashboard_urls")),
    path("workspaces/<slug:slug>/members/", include("workspaces.member_urls")),
    path("workspaces/<slug:slug>/analytics/", include("analytics.urls")),
    path("invites/", include("workspaces.invite_urls")),
    path("api/", include("api.urls")),
    path("account/api-keys/", include("api.dashboard_urls")),
    path("", include("gateway.urls")),
]
