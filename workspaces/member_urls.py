from __future__ import annotations

from django.urls import path

from workspaces import members

urlpatterns = [
    path("", members.member_list, name="member_list"),
    path("invite/", members.member_invite_view, name="member_invite"),
    path("invites/<int:invite_id>/resend/", members.invite_resend_view, name="invite_resend"),
    path("invites/<int:invite_id>/revoke/", members.invite_revoke_view, name="invite_revoke"),
    path("leave/", members.member_leave_view, name="member_leave"),
    path("<int:member_id>/remove/", members.member_remove_view, name="member_remove"),
    path("<int:member_id>/role/", members.member_role_view, name="member_role"),
]
