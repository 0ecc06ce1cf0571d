"""Members, invites, servers and tools, the audit log and the usage summary under ``/api/v1/``: thin
adapters over the services the dashboard calls (workspaces/services.py, gateway/services.py) and its
selectors. Each endpoint asks ``membership_or_404`` for the action it needs, as the dashboard's view does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from api import serializers as s
from api.base import ApiListView, ApiView
from api.views import ERRORS, _actor, _member
from gateway import services as server_services
from gateway.models import Server
from gateway.protocol import build_tool_names
from gateway.selectors import usage_summary
from workspaces import activity
from workspaces.models import Invite, Member
from workspaces.permissions import Action
from workspaces.selectors import audit_events_for, member_rows, open_invites
from workspaces.services import invite_resend, invite_revoke, member_invite, member_remove, member_set_role
from workspaces.views import public_base_url

SLUG_TAKEN = "Another server of this workspace already uses this slug."


# -- members ---------------------------------------------------------------------------------------------
def _current_member_or_404(member: Member, member_id: int) -> Member:
    current = Member.objects.current().select_related("user", "workspace")
    return get_object_or_404(current, pk=member_id, workspace_id=member.workspace_id)


class MemberListView(ApiListView):
    serializer_class = s.MemberRowSerializer

    @extend_schema(
        responses={200: s.MemberRowSerializer(many=True), **ERRORS},
        summary="Current members with role, tokens, tool calls and last activity",
        parameters=[
            OpenApiParameter("role", str, enum=list(Member.Role.values), description="Only this role")
        ],
    )
    def get(self, request: Request, slug: str) -> Response:
        member = _member(request, slug)
        rows = member_rows(member.workspace)
        role = request.query_params.get("role")
        if role:
            if role not in Member.Role.values:
                raise serializers.ValidationError({"role": "Use owner, admin or member."})
            rows = [row for row in rows if row.member.role == role]
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(s.MemberRowSerializer(page, many=True).data)


class MemberDetailView(ApiView):
    @extend_schema(
        request=s.RoleSerializer,
        responses={200: s.MemberSerializer, **ERRORS},
        summary="Change a member's role (owners and admins; owners only by owners)",
    )
    def patch(self, request: Request, slug: str, member_id: int) -> Response:
        member = _member(request, slug, Action.MEMBER_MANAGE)
        body = s.RoleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        target = _current_member_or_404(member, member_id)
        changed = member_set_role(actor=member, member=target, role=body.validated_data["role"])
        return Response(s.MemberSerializer(changed).data)

    @extend_schema(
        request=None,
        responses={204: None, **ERRORS},
        summary="Remove a member: the membership ends and all their tokens are revoked",
    )
    def delete(self, request: Request, slug: str, member_id: int) -> Response:
        member = _member(request, slug, Action.MEMBER_MANAGE)
        member_remove(actor=member, member=_current_member_or_404(member, member_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- invites ---------------------------------------------------------------------------------------------
def _open_invite_or_404(member: Member, invite_id: int) -> Invite:
    invites = Invite.objects.open().select_related("workspace", "invited_by")
    return get_object_or_404(invites, pk=invite_id, workspace_id=member.workspace_id)


class InviteListView(ApiListView):
    serializer_class = s.InviteSerializer

    @extend_schema(responses={200: s.InviteSerializer(many=True), **ERRORS}, summary="Open invites")
    def get(self, request: Request, slug: str) -> Response:
        member = _member(request, slug, Action.MEMBER_INVITE)
        page = self.paginate_queryset(open_invites(member.workspace))
        return self.get_paginated_response(s.InviteSerializer(page, many=True).data)

    @extend_schema(
        request=s.InviteCreateSerializer,
        responses={201: s.SentInviteSerializer, **ERRORS},
        summary="Invite an email address (a single-use link is emailed)",
    )
    def post(self, request: Request, slug: str) -> Response:
        member = _member(request, slug, Action.MEMBER_INVITE)
        body = s.InviteCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sent = member_invite(
            actor=member,
            email=body.validated_data["email"],
            role=body.validated_data["role"],
            base_url=public_base_url(request._request),
        )
        data = {"invite": s.InviteSerializer(sent.invite).data, "delivered": sent.delivered}
        return Response(data, status=status.HTTP_201_CREATED)


class InviteResendView(ApiView):
    @extend_schema(
        request=None,
        responses={200: s.SentInviteSerializer, **ERRORS},
        summary="Send an invite again (a new link; older links stop working)",
    )
    def post(self, request: Request, slug: str, invite_id: int) -> Response:
        member = _member(request, slug, Action.MEMBER_INVITE)
        invite = _open_invite_or_404(member, invite_id)
        sent = invite_resend(actor=member, invite=invite, base_url=public_base_url(request._request))
        return Response({"invite": s.InviteSerializer(sent.invite).data, "delivered": sent.delivered})


class InviteDetailView(ApiView):
    @extend_schema(request=None, responses={204: None, **ERRORS}, summary="Revoke an open invite")
    def delete(self, request: Request, slug: str, invite_id: int) -> Response:
        member = _member(request, slug, Action.MEMBER_INVITE)
        invite_revoke(actor=member, invite=_open_invite_or_404(member, invite_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- servers and tools -----------------------------------------------------------------------------------
def _server_or_404(member: Member, server_id: int) -> Server:
    servers = Server.objects.select_related("workspace")
    return get_object_or_404(servers, workspace_id=member.workspace_id, pk=server_id)


def _server_fields(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key != "enabled"}


class ServerListView(ApiListView):
    serializer_class = s.ServerSerializer

    @extend_schema(responses={200: s.ServerSerializer(many=True), **ERRORS}, summary="Upstream servers")
    def get(self, request: Request, slug: str) -> Response:
        member = _member(request, slug)
        page = self.paginate_queryset(Server.objects.filter(workspace=member.workspace))
        return self.get_paginated_response(s.ServerSerializer(page, many=True).data)

    @extend_schema(
        request=s.ServerWriteSerializer,
        responses={201: s.ServerSerializer, **ERRORS},
        summary="Add an upstream server (owners and admins)",
    )
    def post(self, request: Request, slug: str) -> Response:
        member = _member(request, slug, Action.SERVER_MANAGE)
        body = s.ServerWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = _server_fields(body.validated_data)
        try:
            server = server_services.server_create(
                workspace=member.workspace,
                actor=_actor(request),
                **{"name": "", "url": "", **values},
            )
        except IntegrityError:  # a concurrent add took the slug between the check and the insert
            raise serializers.ValidationError({"slug": SLUG_TAKEN}) from None
        return Response(s.ServerSerializer(server).data, status=status.HTTP_201_CREATED)


class ServerDetailView(ApiView):
    @extend_schema(responses={200: s.ServerSerializer, **ERRORS}, summary="One upstream server")
    def get(self, request: Request, slug: str, server_id: int) -> Response:
        return Response(s.ServerSerializer(_server_or_404(_member(request, slug), server_id)).data)

    @extend_schema(
        request=s.ServerWriteSerializer,
        responses={200: s.ServerSerializer, **ERRORS},
        summary="Change a server, or enable/disable it (`enabled`); fields left out keep their value",
    )
    def patch(self, request: Request, slug: str, server_id: int) -> Response:
        member = _member(request, slug, Action.SERVER_MANAGE)
        server = _server_or_404(member, server_id)
        body = s.ServerWriteSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        values = _server_fields(body.validated_data)
        if values:
            try:
                server = server_services.server_update(server=server, actor=_actor(request), **values)
            except IntegrityError:
                raise serializers.ValidationError({"slug": SLUG_TAKEN}) from None
        if "enabled" in body.validated_data and body.validated_data["enabled"] != server.enabled:
            server = server_services.server_set_enabled(
                server=server, actor=_actor(request), enabled=body.validated_data["enabled"]
            )
        return Response(s.ServerSerializer(server).data)

    @extend_schema(request=None, responses={204: None, **ERRORS}, summary="Delete a server")
    def delete(self, request: Request, slug: str, server_id: int) -> Response:
        member = _member(request, slug, Action.SERVER_MANAGE)
        server_services.server_delete(server=_server_or_404(member, server_id), actor=_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ServerTestView(ApiView):
    @extend_schema(
        request=None,
        responses={200: s.ConnectionTestSerializer, **ERRORS},
        summary="Test the connection (initialize + tools/list); records the tools or the error",
    )
    def post(self, request: Request, slug: str, server_id: int) -> Response:
        member = _member(request, slug, Action.SERVER_MANAGE)
        server = _server_or_404(member, server_id)
        result = server_services.server_test(server=server)
        data = {
            "ok": result.ok,
            "tool_count": result.tool_count,
            "server_name": result.server_name,
            "error": result.error,
            "server": s.ServerSerializer(server).data,
        }
        return Response(data)


def _tools(server: Server) -> list[dict[str, Any]]:
    descriptions = {tool["name"]: tool.get("description", "") for tool in server.tools_snapshot}
    disabled = set(server.disabled_tools or [])
    return [
        {
            "name": tool.original_name,
            "gateway_name": tool.name,
            "description": descriptions[tool.original_name],
            "enabled": tool.original_name not in disabled,
        }
        for tool in build_tool_names([(server.slug, name) for name in descriptions])
    ]


class ToolListView(ApiListView):
    serializer_class = s.ToolSerializer

    @extend_schema(
        responses={200: s.ToolSerializer(many=True), **ERRORS},
        summary="The server's tools (from its last connection test) and whether each is on",
    )
    def get(self, request: Request, slug: str, server_id: int) -> Response:
        server = _server_or_404(_member(request, slug), server_id)
        page = self.paginate_queryset(_tools(server))
        return self.get_paginated_response(s.ToolSerializer(page, many=True).data)


class ToolDetailView(ApiView):
    @extend_schema(
        request=s.ToolSwitchSerializer,
        responses={200: s.ToolSerializer, **ERRORS},
        summary="Switch one tool on or off",
    )
    def patch(self, request: Request, slug: str, server_id: int, tool: str) -> Response:
        member = _member(request, slug, Action.SERVER_MANAGE)
        server = _server_or_404(member, server_id)
        body = s.ToolSwitchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        server = server_services.tool_set_enabled(
            server=server, actor=_actor(request), tool=tool, enabled=body.validated_data["enabled"]
        )
        return Response(next(row for row in _tools(server) if row["name"] == tool))


# -- audit events and usage ------------------------------------------------------------------------------
def _since(request: Request, default_days: int | None) -> datetime | None:
    raw = request.query_params.get("since")
    if not raw:
        return timezone.now() - timedelta(days=default_days) if default_days else None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise serializers.ValidationError(
            {"since": "Give an ISO 8601 time, e.g. 2026-12-01T09:00:00Z."}
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


AUDIT_FILTERS = [
    OpenApiParameter("action", str, description="Only this action, e.g. token.create"),
    OpenApiParameter("actor", int, description="Only events by this user (id)"),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="Only events at or after this time"),
]


def _audit_events(request: Request, slug: str) -> Any:
    member = _member(request, slug)
    actor = request.query_params.get("actor")
    if actor and not actor.isdigit():
        raise serializers.ValidationError({"actor": "Give a user id (a whole number)."})
    events = audit_events_for(
        member, action=request.query_params.get("action") or None, actor_id=int(actor) if actor else None
    )
    since = _since(request, None)
    return member, events.filter(created_at__gte=since) if since else events


class AuditEventListView(ApiListView):
    serializer_class = s.AuditEventSerializer

    @extend_schema(
        responses={200: s.AuditEventSerializer(many=True), **ERRORS},
        summary="The activity log (owners and admins: all of it; members: by or about them), newest first",
        parameters=AUDIT_FILTERS,
    )
    def get(self, request: Request, slug: str) -> Response:
        _, events = _audit_events(request, slug)
        page = self.paginate_queryset(events)
        return self.get_paginated_response([activity.export_record(event) for event in page or []])


class AuditEventExportView(ApiView):
    @extend_schema(
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, one event a row"),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="JSON Lines"),
            **ERRORS,
        },
        summary="Export the filtered log as CSV or JSON Lines (streamed)",
        parameters=[
            *AUDIT_FILTERS,
            OpenApiParameter("format", str, enum=["csv", "jsonl"], description="Default csv"),
        ],
    )
    def get(self, request: Request, slug: str) -> StreamingHttpResponse:
        # ``type``, not ``format``: DRF reads ``?format=`` to choose a renderer.
        fmt = request.query_params.get("type") or "csv"
        if fmt not in activity.EXPORT_FORMATS:
            raise serializers.ValidationError({"type": "Use csv or jsonl."})
        member, events = _audit_events(request, slug)
        return activity.export_response(events, fmt=fmt, slug=member.workspace.slug)


class UsageSummaryView(ApiView):
    @extend_schema(
        responses={200: s.UsageSummarySerializer, **ERRORS},
        summary="Tool calls, failures and mean duration, per tool and per member (members: their own)",
        parameters=[
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Default: 7 days ago"),
        ],
    )
    def get(self, request: Request, slug: str) -> Response:
        member = _member(request, slug)
        since = _since(request, 7)
        assert since is not None
        return Response(s.UsageSummarySerializer(usage_summary(member=member, since=since)).data)
