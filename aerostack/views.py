from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("workspace_list")
    return redirect("login")


def ratelimited(
    request: HttpRequest, exception: Exception | None = None, retry_after: int = 60
) -> HttpResponse:
    """The page for a throttled dashboard request (django-ratelimit's RATELIMIT_VIEW)."""
    response = render(request, "429.html", {"retry_after": retry_after}, status=429)
    response["Retry-After"] = str(max(retry_after, 1))
    return response


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return render(request, "403_csrf.html", status=403)
