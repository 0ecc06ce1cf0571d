"""The REST API under ``/api/v1/``: thin adapters that parse, call the same services as the dashboard and
present. Access: ``membership_or_404`` (strangers 404, as in the dashboard) with the action the endpoint
needs (members doing admins' work: 403); the services check the actor again inside their transactions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from api import serializers as s
from api.base import ApiListView, ApiView
from api.models import ApiKey
from tokens.clients import mcp_json
from tokens.models import Token
from tokens.selectors import visible_tokens
from tokens.services import CreatedToken, token_create, token_revoke, token_rotate
from workspaces.models import Member
from workspaces.permissions import Action
from workspaces.selectors import membership_or_404, memberships_for
from workspaces.services import workspace_create, workspace_update
from workspaces.views import public_base_url

ERRORS = {code: s.ErrorSerializer for code in (400, 401, 403, 404, 429)}


def _actor(request: Request) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _member(request: Request, slug: str, action: Action = Action.VIEW) -> Member:
    return membership_or_404(request.user, slug, action=action)


# -- who am I --------------------------------------------------------------------------------------------
class MeView(ApiView):
    @extend_schema(responses={200: s.MeSerializer, **ERRORS}, summary="The user the request acts as")
    def get(self, request: Request) -> Response:
        key = request.auth
        key_info = {"name": key.name, "hint": key.hint} if isinstance(key, ApiKey) else None
        return Response({"user": s.UserSerializer(_actor(request)).data, "key": key_info})


# -- workspaces ------------------------------------------------------------------------------------------
def _workspace_context(request: Request, memberships: list[Member]) -> dict[str, Any]:
    return {
        "roles": {member.workspace_id: member.role for member in memberships},
        "base_url": public_base_url(request._request),
    }


class WorkspaceListView(ApiListView):
    serializer_class = s.WorkspaceSerializer

    @extend_schema(
        responses={200: s.WorkspaceSerializer(many=True), **ERRORS},
        summary="The workspaces you belong to",
        parameters=[OpenApiParameter("q", str, description="Only names containing this text")],
    )
    def get(self, request: Request) -> Response:
        memberships = memberships_for(request.user)
        if request.query_params.get("q"):
            memberships = memberships.filter(workspace__name__icontains=request.query_params["q"])
        page = self.paginate_queryset(list(memberships))
        assert page is not None
        data = s.WorkspaceSerializer(
            [member.workspace for member in page], many=True, context=_workspace_context(request, page)
        ).data
        return self.get_paginated_response(data)

    @extend_schema(
        request=s.WorkspaceCreateSerializer,
        responses={201: s.WorkspaceSerializer, **ERRORS},
        summary="Create a workspace (you become its owner)",
    )
    def post(self, request: Request) -> Response:
        body = s.WorkspaceCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        workspace = workspace_create(
            name=body.validated_data["name"],
            description=body.validated_data["description"],
            owner=_actor(request),
        )
        member = _member(request, workspace.slug)
        data = s.WorkspaceSerializer(workspace, context=_workspace_context(request, [member])).data
        return Response(data, status=status.HTTP_201_CREATED)


class WorkspaceDetailView(ApiView):
    @extend_schema(responses={200: s.WorkspaceSerializer, **ERRORS}, summary="One workspace")
    def get(self, request: Request, slug: str) -> Response:
        member = _member(request, slug)
        return Response(
            s.WorkspaceSerializer(member.workspace, context=_workspace_context(request, [member])).data
        )

    @extend_schema(
        request=s.WorkspaceUpdateSerializer,
        responses={200: s.WorkspaceSerializer, **ERRORS},
        summary="Rename, describe or rate-limit a workspace (owners)",
    )
    def patch(self, request: Request, slug: str) -> Response:
        member = _member(request, slug, Action.SETTINGS)
        body = s.WorkspaceUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        workspace = member.workspace
        workspace = workspace_update(
            actor=member,
            name=values.get("name", workspace.name),
            description=values.get("description", workspace.description),
            rate_limit_per_minute=values.get("rate_limit_per_minute", workspace.rate_limit_per_minute),
        )
        return Response(s.WorkspaceSerializer(workspace, context=_workspace_context(request, [member])).data)


# -- tokens ----------------------------------------------------------------------------------------------
TOKEN_STATUSES = [choice.value for choice in Token.Status]


def _tokens_with_status(tokens: QuerySet[Token], wanted: str) -> QuerySet[Token]:
    now = timezone.now()
    if wanted == Token.Status.REVOKED:
        return tokens.filter(revoked_at__isnull=False)
    live = tokens.filter(revoked_at__isnull=True)
    if wanted == Token.Status.EXPIRED:
        return live.filter(expires_at__lte=now)
    return live.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class TokenListView(ApiListView):
    serializer_class = s.TokenSerializer

    @extend_schema(
        responses={200: s.TokenSerializer(many=True), **ERRORS},
        summary="Tokens (owners and admins: everyone's; members: their own)",
        parameters=[
            OpenApiParameter("status", str, enum=TOKEN_STATUSES, description="Only tokens in this state"),
            OpenApiParameter("holder", int, description="Only tokens of this member (id)"),
            OpenApiParameter("q", str, description="Only names containing this text"),
        ],
    )
    def get(self, request: Request, slug: str) -> Response:
        member = _member(request, slug, Action.TOKEN_OWN)
        tokens = visible_tokens(member)
        params = request.query_params
        wanted = params.get("status")
        if wanted:
            if wanted not in TOKEN_STATUSES:
                raise serializers.ValidationError({"status": f"Use one of {', '.join(TOKEN_STATUSES)}."})
            tokens = _tokens_with_status(tokens, wanted)
        if params.get("holder"):
            if not params["holder"].isdigit():
                raise serializers.ValidationError({"holder": "Give a member id (a whole number)."})
            tokens = tokens.filter(member_id=int(params["holder"]))
        if params.get("q"):
            tokens = tokens.filter(name__icontains=params["q"])
        page = self.paginate_queryset(tokens)
        return self.get_paginated_response(
            s.TokenSerializer(page, many=True, context={"now": timezone.now()}).data
        )

    @extend_schema(
        request=s.TokenCreateSerializer,
        responses={201: s.CreatedTokenSerializer, **ERRORS},
        summary="Create a token: its raw value and mcp_json are in this answer only",
    )
    def post(self, request: Request, slug: str) -> Response:
        member = _member(request, slug, Action.TOKEN_OWN)
        body = s.TokenCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        holder = member
        if values["holder_id"] is not None and values["holder_id"] != member.pk:
            holder = get_object_or_404(
                Member.objects.current().select_related("user"),
                workspace=member.workspace,
                pk=values["holder_id"],
            )
        created = token_create(
            workspace=member.workspace,
            holder=holder,
            name=values["name"],
            expires_in=values["expires_in"],
            created_by=_actor(request),
            scopes=values["scopes"],
        )
        return _show_once(request, member, created)


def _show_once(request: Request, member: Member, created: CreatedToken, **extra: dict[str, Any]) -> Response:
    """The answer that holds a raw token (create, rotate): its only appearance, never cached."""
    data = {
        "token": s.TokenSerializer(created.token).data,
        "raw": created.raw,
        "mcp_json": mcp_json(member.workspace, created.raw, public_base_url(request._request)),
        **extra,
    }
    response = Response(data, status=status.HTTP_201_CREATED)
    response["Cache-Control"] = "no-store"  # the raw value must not be kept by any cache
    return response


def _token_or_404(member: Member, token_id: int) -> Token:
    return get_object_or_404(visible_tokens(member).select_related("workspace"), pk=token_id)


class TokenDetailView(ApiView):
    @extend_schema(responses={200: s.TokenSerializer, **ERRORS}, summary="One token")
    def get(self, request: Request, slug: str, token_id: int) -> Response:
        token = _token_or_404(_member(request, slug, Action.TOKEN_OWN), token_id)
        return Response(s.TokenSerializer(token).data)


class TokenRevokeView(ApiView):
    @extend_schema(
        request=None,
        responses={200: s.TokenSerializer, **ERRORS},
        summary="Revoke a token at once and for good (idempotent)",
    )
    def post(self, request: Request, slug: str, token_id: int) -> Response:
        token = _token_or_404(_member(request, slug, Action.TOKEN_OWN), token_id)
        token = token_revoke(token=token, actor=_actor(request))
        return Response(s.TokenSerializer(token).data)


class TokenRotateView(ApiView):
    @extend_schema(
        request=s.TokenRotateSerializer,
        responses={201: s.RotatedTokenSerializer, **ERRORS},
        summary="Rotate a token: a successor (raw value once) replaces it; the old one stops after the grace",
    )
    def post(self, request: Request, slug: str, token_id: int) -> Response:
        member = _member(request, slug, Action.TOKEN_OWN)
        token = _token_or_404(member, token_id)
        body = s.TokenRotateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        grace = body.validated_data["grace_seconds"]
        created = token_rotate(token=token, actor=_actor(request), grace_seconds=grace)
        return _show_once(request, member, created, previous=s.TokenSerializer(token).data)
