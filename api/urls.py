from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView

from api import dashboard, errors, team_views, views

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
    path(
        "v1/workspaces/<slug:slug>/tokens/<int:token_id>/rotate",
        views.TokenRotateView.as_view(),
        name="api_token_rotate",
    ),
    path("v1/workspaces/<slug:slug>/members", team_views.MemberListView.as_view(), name="api_members"),
    path(
        "v1/workspaces/<slug:slug>/members/<int:member_id>",
        team_views.MemberDetailView.as_view(),
        name="api_member",
    ),
    path("v1/workspaces/<slug:slug>/invites", team_views.InviteListView.as_view(), name="api_invites"),
    path(
        "v1/workspaces/<slug:slug>/invites/<int:invite_id>",
        team_views.InviteDetailView.as_view(),
        name="api_invite",
    ),
    path(
        "v1/workspaces/<slug:slug>/invites/<int:invite_id>/resend",
        team_views.InviteResendView.as_view(),
        name="api_invite_resend",
    ),
    path("v1/workspaces/<slug:slug>/servers", team_views.ServerListView.as_view(), name="api_servers"),
    path(
        "v1/workspaces/<slug:slug>/servers/<int:server_id>",
        team_views.ServerDetailView.as_view(),
        name="api_server",
    ),
    path(
        "v1/workspaces/<slug:slug>/servers/<int:server_id>/test",
        team_views.ServerTestView.as_view(),
        name="api_server_test",
    ),
    path(
        "v1/workspaces/<slug:slug>/servers/<int:server_id>/tools",
        team_views.ToolListView.as_view(),
        name="api_tools",
    ),
    path(
        "v1/workspaces/<slug:slug>/servers/<int:server_id>/tools/<str:tool>",
        team_views.ToolDetailView.as_view(),
        name="api_tool",
    ),
    path("v1/workspaces/<slug:slug>/audit-events", team_views.AuditEventListView.as_view(), name="api_audit"),
    path(
        "v1/workspaces/<slug:slug>/audit-events/export",
        team_views.AuditEventExportView.as_view(),
        name="api_audit_export",
    ),
    path("v1/workspaces/<slug:slug>/usage", team_views.UsageSummaryView.as_view(), name="api_usage"),
    re_path(r"^v1/.*$", errors.not_found),
]
