"""Dashboard pages of a workspace: the list, creating one, and its Overview tab."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from tokens.models import Token
from workspaces.forms import WorkspaceForm
from workspaces.models import Member
from workspaces.selectors import membership_or_404, memberships_for
from workspaces.services import workspace_create


def public_base_url(request: HttpRequest) -> str:
    """Where clients reach us: ``PUBLIC_URL`` when set, else the host this request came to."""
    return settings.PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")


@login_required
@require_http_methods(["GET", "POST"])
def workspace_list(request: HttpRequest) -> HttpResponse:
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        workspace = workspace_create(
            name=form.cleaned_data["name"],
            description=form.cleaned_data["description"],
            owner=request.user,  # type: ignore[arg-type]
        )
        return redirect(workspace)
    context = {"memberships": memberships_for(request.user), "form": form}
    return render(request, "workspaces/list.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def workspace_detail(request: HttpRequest, slug: str) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    workspace = member.workspace
    tokens = Token.objects.filter(workspace=workspace)
    if not member.can_manage:
        tokens = tokens.filter(member=member)
    context = {
        "member": member,
        "workspace": workspace,
        "tab": "overview",
        "gateway_url": public_base_url(request) + workspace.gateway_path,
        "token_count": tokens.filter(revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .count(),
        "member_count": Member.objects.current().filter(workspace=workspace).count(),
    }
    return render(request, "workspaces/detail.html", context)
