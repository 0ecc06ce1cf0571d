from __future__ import annotations

from django.urls import path

from tokens import views

urlpatterns = [
    path("", views.token_list, name="token_list"),
    path("new/", views.token_new, name="token_new"),
    path("<int:token_id>/rotate/", views.token_rotate_view, name="token_rotate"),
    path("<int:token_id>/revoke/", views.token_revoke_view, name="token_revoke"),
]
