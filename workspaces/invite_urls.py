from __future__ import annotations

from django.urls import path

from workspaces import members

urlpatterns = [
    path("accept/", members.invite_accept_view, name="invite_accept"),
    path("switch-account/", members.invite_switch_account, name="invite_switch_account"),
    path("<str:secret>/", members.invite_open, name="invite_open"),
]
