"""The Activity tab: the workspace's audit log, filtered by action and actor, paginated, exported.

Owners and admins read every event; members read the events they did or that are about them
(``audit_events_for``). The exports hold exactly what the page's filters select, streamed
(``activity.export_response``).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from workspaces import activity
from workspaces.forms import ActivityFilterForm
from workspaces.models import AuditEvent, Member
from workspaces.selectors import audit_events_for, audit_filter_choices, membership_or_404

PAGE_SIZE = 50


def _filtered(request: HttpRequest, member: Member) -> tuple[ActivityFilterForm, QuerySet[AuditEvent]]:
    actions, actors = audit_filter_choices(member)
    form = ActivityFilterForm(request.GET or None, actions=activity.action_choices(actions), actors=actors)
    if not form.is_bound:
        return form, audit_events_for(member)
    if not form.is_valid():
        return form, AuditEvent.objects.none()
    events = audit_events_for(
        member, action=form.cleaned_data["action"] or None, actor_id=form.cleaned_data["actor"]
    )
    return form, events


@login_required
@require_GET
def activity_log(request: HttpRequest, slug: str) -> HttpResponse:
    member = membership_or_404(request.user, slug)
    form, events = _filtered(request, member)
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "member": member,
        "workspace": member.workspace,
        "tab": "activity",
        "form": form,
        "page": page,
        "rows": [(event, activity.actor_name(event), activity.summary(event)) for event in page],
        "query": query.urlencode(),
    }
    return render(request, "workspaces/activity.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def activity_export(request: HttpRequest, slug: str, fmt: str) -> HttpResponse | StreamingHttpResponse:
    """The filtered log as CSV or JSON Lines, streamed row by row (a big log never sits in memory)."""
    member = membership_or_404(request.user, slug)
    form, events = _filtered(request, member)
    if form.errors:
        return render(
            request,
            "workspaces/activity.html",
            {"member": member, "workspace": member.workspace, "tab": "activity", "form": form},
            status=400,
        )
    return activity.export_response(events, fmt=fmt, slug=member.workspace.slug)
