"""The Servers tab: list, add, edit, enable/disable, delete, test connection, per-tool switches.

Every member may look; only owners and admins act (others get 403). All writes go through
gateway/services.py, which audits them and refreshes the gateway catalog.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from gateway import services
from gateway.forms import ServerForm
from gateway.models import Server
from gateway.protocol import build_exposed_names, build_tool_names
from workspaces.models import Member
from workspaces.permissions import Action
from workspaces.selectors import membership_or_404

SLUG_TAKEN = "Another server of this workspace already uses this slug."


def _server_or_404(member: Member, server_id: int) -> Server:
    try:
        return Server.objects.select_related("workspace").get(workspace_id=member.workspace_id, pk=server_id)
    except Server.DoesNotExist:
        raise Http404("No such server") from None


def _actor(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # login_required ran first
    return request.user


def _page(
    request: HttpRequest, member: Member, template: str, status: int = 200, **extra: Any
) -> HttpResponse:
    context = {"member": member, "workspace": member.workspace, "tab": "servers", **extra}
    return render(request, f"gateway/{template}", context, status=status)


def _tool_rows(server: Server) -> list[dict[str, Any]]:
    """Each tool of the last snapshot under the name gateway clients see, with its switch state."""
    descriptions = {tool["name"]: tool.get("description", "") for tool in server.tools_snapshot}
    disabled = set(server.disabled_tools or [])
    verbatim = {server.slug: server.pk} if server.expose_names else {}
    exposed, _ = build_exposed_names([(server.slug, name) for name in descriptions], verbatim)
    # An item that fell back from its own name at the last list (a collision) shows the name clients get.
    fell_back = {c.get("name") for c in server.name_conflicts or [] if isinstance(c, dict)}
    if fell_back:
        exposed = [
            t if t.original_name not in fell_back else build_tool_names([(server.slug, t.original_name)])[0]
            for t in exposed
        ]
    return [
        {"tool": t, "description": descriptions[t.original_name], "on": t.original_name not in disabled}
        for t in exposed
    ]


def _report_test(request: HttpRequest, server: Server) -> None:
    result = services.server_test(server=server)
    if result.ok:
        count = result.tool_count
        extra = "".join(
            f", {n} {what}{pluralize(n)}"
            for n, what in ((result.prompt_count, "prompt"), (result.resource_count, "resource"))
            if n
        )
        messages.success(request, f"Connected to {server.name}: {count} tool{pluralize(count)}{extra}")
    else:
        messages.error(request, f"Could not connect to {server.name}: {result.error}")


def _flag(request: HttpRequest) -> bool | None:
    """The ``enabled`` field of a switch form: "1" on, "0" off, anything else None."""
    return {"1": True, "0": False}.get(request.POST.get("enabled", ""))


def _bad_switch(request: HttpRequest, member: Member, server: Server, message: str) -> HttpResponse:
    messages.error(request, message)
    return _page(request, member, "server_detail.html", 400, server=server, tools=_tool_rows(server))


def _bound(request: HttpRequest) -> Any:
    return request.POST if request.method == "POST" else None


@login_required
@require_GET
def server_list(request: HttpRequest, slug: str) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    servers = Server.objects.filter(workspace=member.workspace)
    return _page(request, member, "server_list.html", servers=servers)


@sensitive_post_parameters("url", "credential")  # hidden in error reports: the URL may hold a key
@login_required
@require_http_methods(["GET", "POST"])
def server_new(request: HttpRequest, slug: str) -> HttpResponse:
    """Add a server, then test it once so the list shows its tools (or the exact error) right away."""
    member = membership_or_404(request.user, slug, action=Action.SERVER_MANAGE)
    form = ServerForm(_bound(request), workspace=member.workspace)
    if request.method == "POST" and form.is_valid():
        try:
            server = services.server_create(workspace=member.workspace, actor=_actor(request), **form.values)
        except services.ServerInvalid as exc:
            form.refuse(exc)
        except IntegrityError:  # a concurrent add took the slug between the check and the insert
            form.add_error("slug", SLUG_TAKEN)
        else:
            messages.success(request, f"Added {server.name}.")
            _report_test(request, server)
            return redirect("server_list", slug=slug)
    return _page(request, member, "server_form.html", 400 if form.is_bound else 200, form=form)


@sensitive_post_parameters("url", "credential")
@login_required
@require_http_methods(["GET", "POST"])
def server_edit(request: HttpRequest, slug: str, server_id: int) -> HttpResponse:
    member = membership_or_404(request.user, slug, action=Action.SERVER_MANAGE)
    server = _server_or_404(member, server_id)
    form = ServerForm(_bound(request), workspace=member.workspace, server=server)
    if request.method == "POST" and form.is_valid():
        had_credential = server.has_credential
        try:
            # An empty credential keeps the stored secret (unless the URL's origin changes).
            services.server_update(server=server, actor=_actor(request), **form.values)
        except services.ServerInvalid as exc:
            form.refuse(exc)
        except IntegrityError:
            server.refresh_from_db()  # server_update had already set the refused values on it
            form.add_error("slug", SLUG_TAKEN)
        else:
            messages.success(request, f"Saved {server.name}.")
            if had_credential and not server.has_credential and server.credential_kind != "none":
                messages.warning(
                    request,
                    f"The stored credential of {server.name} was cleared: {services.CREDENTIAL_CLEARED}. "
                    "Enter it again to send it to the new address.",
                )
            return redirect("server_detail", slug=slug, server_id=server.pk)
    context = {"form": form, "server": server}
    return _page(request, member, "server_form.html", 400 if form.is_bound else 200, **context)


@login_required
@require_GET
def server_detail(request: HttpRequest, slug: str, server_id: int) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    server = _server_or_404(member, server_id)
    return _page(request, member, "server_detail.html", server=server, tools=_tool_rows(server))


@login_required
@require_POST
def server_toggle(request: HttpRequest, slug: str, server_id: int) -> HttpResponse:
    """An explicit target state ("1"/"0"), not a flip: a double submit cannot undo itself."""
    member = membership_or_404(request.user, slug, action=Action.SERVER_MANAGE)
    server = _server_or_404(member, server_id)
    enabled = _flag(request)
    if enabled is None:
        return _bad_switch(request, member, server, "Send enabled=1 (on) or enabled=0 (off).")
    services.server_set_enabled(server=server, actor=_actor(request), enabled=enabled)
    if enabled:
        messages.success(request, f"Enabled {server.name}: its tools are offered again.")
    else:
        messages.success(request, f"Disabled {server.name}: its tools are no longer offered.")
    return redirect("server_detail", slug=slug, server_id=server.pk)


@login_required
@require_http_methods(["GET", "POST"])
def server_delete(request: HttpRequest, slug: str, server_id: int) -> HttpResponse:
    """GET asks for confirmation (works without JavaScript); POST deletes."""
    member = membership_or_404(request.user, slug, action=Action.SERVER_MANAGE)
    server = _server_or_404(member, server_id)
    if request.method == "POST":
        services.server_delete(server=server, actor=_actor(request))
        messages.success(request, f"Deleted {server.name}. Its tools are gone from the gateway.")
        return redirect("server_list", slug=slug)
    return _page(request, member, "server_delete_confirm.html", server=server)


@login_required
@require_POST
def server_test(request: HttpRequest, slug: str, server_id: int) -> HttpResponse:
    member = membership_or_404(request.user, slug, action=Action.SERVER_MANAGE)
    server = _server_or_404(member, server_id)
    _report_test(request, server)
    return redirect("server_detail", slug=slug, server_id=server.pk)


@login_required
@require_POST
def tool_toggle(request: HttpRequest, slug: str, server_id: int) -> HttpResponse:
    member = membership_or_404(request.user, slug, action=Action.SERVER_MANAGE)
    server = _server_or_404(member, server_id)
    tool, enabled = request.POST.get("tool", ""), _flag(request)
    if enabled is None:
        return _bad_switch(request, member, server, "Send enabled=1 (on) or enabled=0 (off).")
    try:
        services.tool_set_enabled(server=server, actor=_actor(request), tool=tool, enabled=enabled)
    except services.ServerInvalid as exc:
        return _bad_switch(request, member, server, exc.errors["tool"])
    messages.success(request, f"Turned {'on' if enabled else 'off'} {tool} of {server.name}.")
    return redirect("server_detail", slug=slug, server_id=server.pk)
