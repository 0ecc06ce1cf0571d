"""The Members tab (members, roles, removal, leaving, pending invites) and the invite link pages.

Views only parse and present: every rule (who may invite, remove, change roles; the last owner; the invite
quota) is in workspaces/services.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tokens.views import render_created_token
from workspaces.forms import InviteForm, RoleForm
from workspaces.models import Invite, Member
from workspaces.permissions import Action, NotAllowed, allows, require
from workspaces.selectors import (
    INVITE_SESSION_KEY,
    MemberRow,
    invite_by_secret_hash,
    member_rows,
    membership_or_404,
    open_invites,
)
from workspaces.services import (
    InviteRefusal,
    InviteRefused,
    MemberError,
    SentInvite,
    invite_accept,
    invite_refusal,
    invite_resend,
    invite_revoke,
    invite_secret_hash,
    is_last_owner,
    may_manage_member,
    member_invite,
    member_leave,
    member_remove,
    member_set_role,
)
from workspaces.views import public_base_url

INVITE_SECRET_MAX_LENGTH = 128


@dataclass(frozen=True)
class _Line:
    """A Members tab row with what the viewer may do to it, decided here rather than in template tags
    (at 200 members the template's per-row work is most of the page's time)."""

    row: MemberRow
    is_you: bool
    controls: bool  # role select and Remove: services decide for good, this only hides what would be refused
    remove_url: str
    role_url: str


def _lines(member: Member, rows: list[MemberRow]) -> list[_Line]:
    base = reverse("member_list", args=[member.workspace.slug])
    return [
        _Line(
            row=row,
            is_you=row.member.pk == member.pk,
            controls=row.member.pk != member.pk and may_manage_member(actor=member, member=row.member),
            remove_url=f"{base}{row.member.pk}/remove/",
            role_url=f"{base}{row.member.pk}/role/",
        )
        for row in rows
    ]


def _page(
    request: HttpRequest, member: Member, *, invite_form: InviteForm | None = None, status: int = 200
) -> HttpResponse:
    workspace = member.workspace
    may_invite = allows(member, Action.MEMBER_INVITE)
    is_owner = member.role == Member.Role.OWNER
    context: dict[str, Any] = {
        "member": member,
        "workspace": workspace,
        "tab": "members",
        "lines": _lines(member, member_rows(workspace)),
        "may_invite": may_invite,
        "may_manage": allows(member, Action.MEMBER_MANAGE),
        "roles": [choice for choice in Member.Role.choices if is_owner or choice[0] != Member.Role.OWNER],
        "now": timezone.now(),
    }
    if may_invite:
        context["invites"] = list(open_invites(workspace))
        context["invite_form"] = invite_form or InviteForm()
        context["expiry_days"] = settings.INVITE_EXPIRY_DAYS
    return render(request, "workspaces/members.html", context, status=status)


def _current_member_or_404(member: Member, member_id: int) -> Member:
    try:
        return (
            Member.objects.current()
            .select_related("user", "workspace")
            .get(pk=member_id, workspace_id=member.workspace_id)
        )
    except Member.DoesNotExist:
        raise Http404("No such member") from None


def _open_invite_or_404(member: Member, invite_id: int) -> Invite:
    try:
        return (
            Invite.objects.open()
            .select_related("workspace")
            .get(pk=invite_id, workspace_id=member.workspace_id)
        )
    except Invite.DoesNotExist:
        raise Http404("No such invite") from None


def _report_sent(request: HttpRequest, sent: SentInvite, verb: str) -> None:
    if sent.delivered:
        messages.success(request, f"Invite {verb} to {sent.invite.email}.")
    else:
        messages.error(
            request,
            f"The invite to {sent.invite.email} was saved, but the email could not be sent. "
            "Check the mail settings and re-send it.",
        )


@login_required
@require_GET
def member_list(request: HttpRequest, slug: str) -> HttpResponse:
    return _page(request, membership_or_404(request.user, slug))


@login_required
@require_POST
def member_invite_view(request: HttpRequest, slug: str) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    require(member, Action.MEMBER_INVITE)
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            sent = member_invite(
                actor=member,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                base_url=public_base_url(request),
            )
        except MemberError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            _report_sent(request, sent, "sent")
            return redirect("member_list", slug=slug)
    return _page(request, member, invite_form=form, status=400)


@login_required
@require_POST
def invite_resend_view(request: HttpRequest, slug: str, invite_id: int) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    require(member, Action.MEMBER_INVITE)
    invite = _open_invite_or_404(member, invite_id)
    try:
        sent = invite_resend(actor=member, invite=invite, base_url=public_base_url(request))
    except MemberError as exc:
        messages.error(request, exc.message)
    else:
        _report_sent(request, sent, "sent again")
    return redirect("member_list", slug=slug)


@login_required
@require_POST
def invite_revoke_view(request: HttpRequest, slug: str, invite_id: int) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    require(member, Action.MEMBER_INVITE)
    invite = _open_invite_or_404(member, invite_id)
    try:
        invite_revoke(actor=member, invite=invite)
    except MemberError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"The invite to {invite.email} was revoked; its link no longer works.")
    return redirect("member_list", slug=slug)


@login_required
@require_http_methods(["GET", "POST"])
def member_remove_view(request: HttpRequest, slug: str, member_id: int) -> HttpResponse:
    """GET asks for confirmation (works without JavaScript); POST removes."""
    member = membership_or_404(request.user, slug)
    require(member, Action.MEMBER_MANAGE)
    target = _current_member_or_404(member, member_id)
    if not may_manage_member(actor=member, member=target):
        raise NotAllowed("Only an owner can remove an owner.")
    if request.method == "POST":
        try:
            member_remove(actor=member, member=target)
        except MemberError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                f"{target.display_name} was removed from {member.workspace.name}; their tokens are revoked.",
            )
        return redirect("member_list", slug=slug)
    context = {
        "member": member,
        "workspace": member.workspace,
        "tab": "members",
        "target": target,
        "active_tokens": target.tokens.filter(revoked_at__isnull=True).count(),
    }
    return render(request, "workspaces/member_remove_confirm.html", context)


@login_required
@require_POST
def member_role_view(request: HttpRequest, slug: str, member_id: int) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    require(member, Action.MEMBER_MANAGE)
    target = _current_member_or_404(member, member_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose Owner, Admin or Member.")
        return redirect("member_list", slug=slug)
    try:
        changed = member_set_role(actor=member, member=target, role=form.cleaned_data["role"])
    except MemberError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{changed.display_name} is now {changed.get_role_display().lower()}.")
    return redirect("member_list", slug=slug)


@login_required
@require_http_methods(["GET", "POST"])
def member_leave_view(request: HttpRequest, slug: str) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    if request.method == "POST":
        try:
            member_leave(member=member)
        except MemberError as exc:
            messages.error(request, exc.message)
            return redirect("member_list", slug=slug)
        messages.success(request, f"You left {member.workspace.name}; your tokens there are revoked.")
        return redirect("workspace_list")
    context = {
        "member": member,
        "workspace": member.workspace,
        "tab": "members",
        "active_tokens": member.tokens.filter(revoked_at__isnull=True).count(),
        "last_owner": is_last_owner(member),
    }
    return render(request, "workspaces/member_leave_confirm.html", context)


# --- The invite link ----------------------------------------------------------------------------------------

_REFUSAL_STATUS = {
    InviteRefusal.UNKNOWN: 404,
    InviteRefusal.EXPIRED: 410,
    InviteRefusal.USED: 410,
    InviteRefusal.REVOKED: 410,
    InviteRefusal.WRONG_ACCOUNT: 403,
    InviteRefusal.ALREADY_MEMBER: 200,
}


@require_GET
def invite_open(request: HttpRequest, secret: str) -> HttpResponse:
    """The emailed link: keep only the secret's hash in the session and move on to a URL without it."""
    request.session[INVITE_SESSION_KEY] = invite_secret_hash(secret[:INVITE_SECRET_MAX_LENGTH])
    return redirect("invite_accept")


def _invite_page_login_url() -> str:
    return reverse("login") + "?" + urlencode({"next": reverse("invite_accept")})


def _invite_page(request: HttpRequest, invite: Invite | None, refusal: InviteRefusal | None) -> HttpResponse:
    next_url = reverse("invite_accept")
    context = {
        "invite": invite,
        "refusal": refusal.value if refusal else "",
        "login_url": _invite_page_login_url(),
        "signup_url": reverse("signup")
        + "?"
        + urlencode({"next": next_url, "email": invite.email if invite else ""}),
        "joined_already": bool(
            refusal == InviteRefusal.USED
            and invite is not None
            and invite.member is not None
            and invite.member.user_id == request.user.pk
        ),
    }
    status = _REFUSAL_STATUS[refusal] if refusal else 200
    return render(request, "workspaces/invite.html", context, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
def invite_accept_view(request: HttpRequest) -> HttpResponse:
    """GET says what the invite is and what to do; POST (logged in as the invited address) joins.

    Accepting is a POST on purpose: mail scanners that open every link must not use the invite up.
    """
    secret_hash = request.session.get(INVITE_SESSION_KEY)
    user: User | None = request.user if request.user.is_authenticated else None
    if request.method == "POST" and user is not None and secret_hash:
        try:
            joined = invite_accept(secret_hash=secret_hash, user=user)
        except InviteRefused as exc:
            return _invite_page(request, exc.invite, exc.refusal)
        request.session.pop(INVITE_SESSION_KEY, None)
        return render_created_token(request, member=joined.member, created=joined.token, joined=True)
    invite = invite_by_secret_hash(secret_hash)
    refusal = invite_refusal(invite=invite, user=user, now=timezone.now())
    if request.method == "POST" and refusal is None:
        return redirect(_invite_page_login_url())  # anonymous POST: log in first
    return _invite_page(request, invite, refusal)


@require_POST
def invite_switch_account(request: HttpRequest) -> HttpResponse:
    """Logged in as someone else: log out, keep the invite, and log in (or sign up) as the invited address."""
    secret_hash = request.session.get(INVITE_SESSION_KEY)
    logout(request)
    if secret_hash:
        request.session[INVITE_SESSION_KEY] = secret_hash
    return redirect("invite_accept")
