from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from api import dashboard, errors, views

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("docs/", dashboard.api_docs, name="api_docs"),
    path("v1/me", views.MeView.as_view(), name="api_me"),
    path("v1/workspaces", views.WorkspaceListView.as_view(), name="api_workspaces"),
    path("v1/workspaces/<slug:slug>", views.WorkspaceDetailView.as_view(), name="api_workspace"),
    path("v1/workspaces/<slug:slug>/tokens", views.TokenListView.as_view(), name="api_tokens"),
    path(
        "v1/workspaces/<slug:slug>/tokens/<int:token_id>", views.TokenDetailView.as_view(), name="api_token"
    ),
    path(
        "v1/workspaces/<slug:slug>/tokens/<int:token_id>/revoke",
        views.TokenRevokeView.as_view(),
        name="api_token_revoke",
    ),
    re_path(r"^v1/.*$", errors.not_found),
]
