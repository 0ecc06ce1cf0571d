"""The Tokens tab: list, create (the raw value shown once), rotate (the successor shown once), revoke."""

from __future__ import annotations

import json
import secrets

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from analytics.selectors import token_last_rows
from gateway.models import Server
from tokens import scopes as token_scopes
from tokens.clients import client_snippets, gateway_url, mcp_json
from tokens.forms import TokenCreateForm, TokenRotateForm
from tokens.models import Token
from tokens.selectors import visible_tokens
from tokens.services import (
    EXPIRY_NOTICE,
    CreatedToken,
    TokenError,
    token_create,
    token_revoke,
    token_rotate,
)
from workspaces.models import Member
from workspaces.permissions import Action, allows
from workspaces.selectors import membership_or_404
from workspaces.views import public_base_url

FORM_ID_TTL = 24 * 3600


def _holders(member: Member) -> list[Member]:
    """Every membership, current or ended, that holds a token here: the choices of the holder filter."""
    return list(
        Member.objects.filter(workspace_id=member.workspace_id, tokens__isnull=False)
        .select_related("user")
        .distinct()
        .order_by("user__username", "created_at")
    )


def _token_or_404(member: Member, token_id: int) -> Token:
    try:
        return visible_tokens(member).select_related("workspace").get(pk=token_id)
    except Token.DoesNotExist:
        raise Http404("No such token") from None


def _server_names(workspace_id: int) -> dict[int, str]:
    return dict(Server.objects.filter(workspace_id=workspace_id).values_list("pk", "name"))


def render_created_token(
    request: HttpRequest,
    *,
    member: Member,
    created: CreatedToken,
    joined: bool = False,
    predecessor: Token | None = None,
) -> HttpResponse:
    """The show-once page of a new token: the raw value, ``mcp_json``, its scopes and the connect snippets.

    Also what a new member sees after accepting an invite (``joined``) and the successor of a rotated token
    (``predecessor``). Callers are ``never_cache`` views; the raw value is in this response only.
    """
    workspace = member.workspace
    base_url = public_base_url(request)
    context = {
        "member": member,
        "workspace": workspace,
        "tab": "tokens",
        "joined": joined,
        "predecessor": predecessor,
        "scope_lines": token_scopes.describe(created.token.scopes, _server_names(workspace.pk)),
        "token": created.token,
        "raw_token": created.raw,
        "gateway_url": gateway_url(workspace, base_url),
        "mcp_json": json.dumps(mcp_json(workspace, created.raw, base_url), indent=2),
        "snippets": client_snippets(workspace, created.raw, base_url),
    }
    return render(request, "tokens/created.html", context)


@login_required
@require_GET
def token_list(request: HttpRequest, slug: str) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    now = timezone.now()
    tokens = visible_tokens(member)
    holders = _holders(member) if allows(member, Action.TOKEN_ANY) else []
    holder_id = request.GET.get("holder", "")
    selected = next((holder for holder in holders if str(holder.pk) == holder_id), None)
    if selected is not None:
        tokens = tokens.filter(member=selected)
    names = _server_names(member.workspace_id)
    soon = now + EXPIRY_NOTICE
    page = list(tokens.select_related("rotated_from", "successor"))
    # "Last used": the later of last_used_at (every request, written at most once a minute) and the token's
    # newest usage row, so that it never says earlier than the Analytics tab's newest call of the token.
    seen = token_last_rows(member.workspace_id, [token.pk for token in page])
    rows = [
        {
            "token": token,
            "last_used": max(filter(None, (token.last_used_at, seen.get(token.pk))), default=None),
            "status": token.status_at(now),
            "scopes": token_scopes.describe(token.scopes, names),
            # The successor of a rotated token (one query per page: prefetched below).
            "successor": getattr(token, "successor", None),
            "expiring_soon": token.expires_at is not None
            and now < token.expires_at <= soon
            and token.revoked_at is None,
        }
        for token in page
    ]
    context = {
        "member": member,
        "workspace": member.workspace,
        "tab": "tokens",
        "rows": rows,
        "holders": holders,
        "selected_holder": selected,
    }
    return render(request, "tokens/list.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_new(request: HttpRequest, slug: str) -> HttpResponse:
    """The New Token form; a valid POST answers with the show-once page.

    The raw token exists only in this response: it is never stored, never put in the session, and the
    response is ``never_cache``. Submitting the same form twice (a reload of the result page re-posts it)
    is recognised by its one-time ``form_id`` and creates nothing: the value is not shown again.
    """
    member = membership_or_404(request.user, slug)
    workspace = member.workspace
    if request.method == "GET":
        form = TokenCreateForm(member=member, initial={"form_id": secrets.token_hex(16)})
        return render(
            request,
            "tokens/new.html",
            {"member": member, "workspace": workspace, "tab": "tokens", "form": form},
        )
    form = TokenCreateForm(request.POST, member=member)
    if form.is_valid():
        form_id = form.cleaned_data["form_id"]
        if form_id and not cache.add(f"token-form:{member.pk}:{form_id}", 1, FORM_ID_TTL):
            messages.info(
                request,
                "That token was already created. Its value is shown only once: "
                "revoke it and create a new one if you lost it.",
            )
            return redirect("token_list", slug=workspace.slug)
        try:
            created = token_create(
                workspace=workspace,
                holder=form.cleaned_data["holder"],
                name=form.cleaned_data["name"],
                expires_in=form.cleaned_data["expires_in"],
                created_by=request.user,  # type: ignore[arg-type]
                scopes=form.cleaned_data["scopes"],
            )
        except TokenError as exc:
            form.add_error(_form_field(form, exc.field), exc.message)
        else:
            return render_created_token(request, member=member, created=created)
    return render(
        request,
        "tokens/new.html",
        {"member": member, "workspace": workspace, "tab": "tokens", "form": form},
        status=400,
    )


def _form_field(form: TokenCreateForm, field: str) -> str | None:
    """Where a service error goes: beside its own field, else beside the name (the cap, for members
    who have no holder field)."""
    field = {"scopes": "scope_servers"}.get(field, field)
    return field if field in form.fields else "name"


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_rotate_view(request: HttpRequest, slug: str, token_id: int) -> HttpResponse:
    """GET offers the grace choices; POST rotates and answers with the successor's show-once page.

    Unlike creation there is no one-time form id: a re-post finds the token already rotated and is refused
    with a message, so a reload can never mint a second successor.
    """
    member = membership_or_404(request.user, slug)
    token = _token_or_404(member, token_id)
    form = TokenRotateForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                created = token_rotate(
                    token=token,
                    actor=request.user,  # type: ignore[arg-type]
                    grace_seconds=form.cleaned_data["grace"],
                )
            except TokenError as exc:
                form.add_error("grace" if exc.field == "grace_seconds" else None, exc.message)
            else:
                return render_created_token(request, member=member, created=created, predecessor=token)
    context = {
        "member": member,
        "workspace": member.workspace,
        "tab": "tokens",
        "token": token,
        "status": token.status,
        "form": form,
    }
    return render(request, "tokens/rotate.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke_view(request: HttpRequest, slug: str, token_id: int) -> HttpResponse:
    """GET asks for confirmation (works without JavaScript); POST revokes at once and for good."""
    member = membership_or_404(request.user, slug)
    token = _token_or_404(member, token_id)
    if request.method == "POST":
        was_active = token.revoked_at is None
        token_revoke(token=token, actor=request.user)  # type: ignore[arg-type]
        if was_active:
            messages.success(request, f"Token “{token.name}” was revoked. It can never be used again.")
        return redirect("token_list", slug=slug)
    context = {
        "member": member,
        "workspace": member.workspace,
        "tab": "tokens",
        "token": token,
        "status": token.status,
    }
    return render(request, "tokens/revoke_confirm.html", context)
