"""The Settings tab (owners): rename, description, rate limit; transfer ownership; delete the workspace.

Views parse and present; workspaces/services.py checks the role again under a row lock and audits.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from workspaces.forms import OwnershipTransferForm, WorkspaceDeleteForm, WorkspaceSettingsForm
from workspaces.models import Member
from workspaces.permissions import Action
from workspaces.selectors import membership_or_404
from workspaces.services import WorkspaceError, ownership_transfer, workspace_delete, workspace_update


def _page(request: HttpRequest, member: Member, template: str, form: Form, **extra: Any) -> HttpResponse:
    context = {"member": member, "workspace": member.workspace, "tab": "settings", "form": form, **extra}
    return render(request, f"workspaces/{template}", context, status=400 if form.is_bound else 200)


def _refused(form: Form, exc: WorkspaceError) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


@login_required
@require_http_methods(["GET", "POST"])
def workspace_settings(request: HttpRequest, slug: str) -> HttpResponse:
    member = membership_or_404(request.user, slug, action=Action.SETTINGS)
    workspace = member.workspace
    initial = {
        "name": workspace.name,
        "description": workspace.description,
        "rate_limit_per_minute": workspace.rate_limit_per_minute,
    }
    form = WorkspaceSettingsForm(request.POST if request.method == "POST" else None, initial=initial)
    if form.is_valid():
        try:
            workspace_update(
                actor=member,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                rate_limit_per_minute=form.cleaned_data["rate_limit_per_minute"],
            )
        except WorkspaceError as exc:
            _refused(form, exc)
        else:
            messages.success(request, "Saved the workspace settings.")
            return redirect("workspace_settings", slug=slug)
    return _page(request, member, "settings.html", form)


@login_required
@require_http_methods(["GET", "POST"])
def ownership_transfer_view(request: HttpRequest, slug: str) -> HttpResponse:
    """GET shows the form (a member to choose, what changes); POST hands ownership over."""
    member = membership_or_404(request.user, slug, action=Action.OWNERSHIP_TRANSFER)
    form = OwnershipTransferForm(request.POST if request.method == "POST" else None, member=member)
    if form.is_valid():
        try:
            heir = ownership_transfer(actor=member, to=form.cleaned_data["to"])
        except WorkspaceError as exc:
            _refused(form, exc)
        else:
            messages.success(
                request, f"{heir.display_name} now owns {member.workspace.name}. You are an admin."
            )
            return redirect("workspace_detail", slug=slug)
    return _page(request, member, "transfer.html", form)


@login_required
@require_http_methods(["GET", "POST"])
def workspace_delete_view(request: HttpRequest, slug: str) -> HttpResponse:
    """GET asks for the workspace's name (works without JavaScript); POST with the right name deletes."""
    member = membership_or_404(request.user, slug, action=Action.WORKSPACE_DELETE)
    form = WorkspaceDeleteForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        name = member.workspace.name
        try:
            workspace_delete(actor=member, confirm_name=form.cleaned_data["confirm_name"])
        except WorkspaceError as exc:
            _refused(form, exc)
        else:
            messages.success(request, f"Deleted {name}. Its tokens no longer work.")
            return redirect("workspace_list")
    return _page(request, member, "delete_confirm.html", form)
