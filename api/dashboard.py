"""The account's API keys page (list with last use, create: shown once, revoke) and the API docs page."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from api.models import ApiKey
from api.services import ApiKeyError, api_key_create, api_key_revoke
from tokens.forms import EXPIRY_CHOICES

KEY_EXPIRY_CHOICES = [choice for choice in EXPIRY_CHOICES if choice[0] != "custom"]


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        error_messages={"required": "Give the key a name, e.g. “Laptop CLI”."},
        widget=forms.TextInput(attrs={"placeholder": "Laptop CLI"}),
    )
    expires = forms.ChoiceField(choices=KEY_EXPIRY_CHOICES, initial="never", label="Expiration")

    @property
    def expires_in(self) -> int | None:
        value = self.cleaned_data["expires"]
        return None if value == "never" else int(value)


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def _page(request: HttpRequest, form: ApiKeyCreateForm, status: int = 200) -> HttpResponse:
    now = timezone.now()
    keys = ApiKey.objects.filter(user=_user(request))
    rows = [(key, key.status_at(now)) for key in keys]
    return render(request, "api/keys.html", {"form": form, "rows": rows}, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """GET lists the user's keys; a valid POST creates one and shows it this once (``never_cache``)."""
    if request.method == "GET":
        return _page(request, ApiKeyCreateForm())
    form = ApiKeyCreateForm(request.POST)
    if form.is_valid():
        try:
            created = api_key_create(
                user=_user(request), name=form.cleaned_data["name"], expires_in=form.expires_in
            )
        except ApiKeyError as exc:
            form.add_error("name" if exc.field == "name" else None, exc.message)
        else:
            return render(request, "api/key_created.html", {"key": created.key, "raw_key": created.raw})
    return _page(request, form, status=400)


@login_required
@require_POST
def api_key_revoke_view(request: HttpRequest, key_id: int) -> HttpResponse:
    key = get_object_or_404(ApiKey, pk=key_id, user=_user(request))  # another user's key: 404
    was_active = key.revoked_at is None
    api_key_revoke(key=key, actor=_user(request))
    if was_active:
        messages.success(request, f"API key “{key.name}” was revoked. It can never be used again.")
    return redirect("api_keys")


@require_GET
def api_docs(request: HttpRequest) -> HttpResponse:
    """Swagger UI from the vendored files (drf-spectacular-sidecar), started by static/js/api-docs.js: no
    inline script, so the strict CSP holds."""
    return render(request, "api/docs.html")
