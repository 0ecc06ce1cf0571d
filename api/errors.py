"""One error body for every 4xx of the API: ``{"error": {"code", "message", "fields"}}``.

The services' refusals (``TokenError``, ``WorkspaceError``, ``MemberError``, ``ServerInvalid``,
``ApiKeyError``) become 400s naming their fields, ``NotAllowed`` a 403 with its sentence, ``Http404`` a 404:
views call the services and never translate errors themselves.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from api.services import ApiKeyError
from gateway.services import ServerInvalid
from tokens.services import TokenError
from workspaces.services import MemberError, WorkspaceError


def _first_message(value: Any) -> str:
    if isinstance(value, list | tuple):
        return _first_message(value[0]) if value else ""
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_first_message(item)}" for key, item in value.items())
    return str(value)


def error_body(code: str, message: str, fields: dict[str, str] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _field_errors(fields: dict[str, str]) -> exceptions.ValidationError:
    return exceptions.ValidationError({name: [message] for name, message in fields.items()})


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, TokenError | WorkspaceError | ApiKeyError):
        exc = _field_errors({exc.field or "non_field_errors": exc.message})
    elif isinstance(exc, MemberError):
        exc = _field_errors({exc.field or "non_field_errors": str(exc)})
    elif isinstance(exc, ServerInvalid):
        exc = _field_errors(dict(exc.errors))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or "Your role does not allow this.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    assert isinstance(exc, exceptions.APIException)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        fields = {str(name): _first_message(value) for name, value in detail.items()}
        message = "; ".join(f"{name}: {text}" for name, text in fields.items())
        response.data = error_body("invalid", f"Invalid input: {message}", fields)
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        response.data = error_body(str(code), _first_message(exc.detail))
    return response


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any unknown URL under ``/api/``: the API's error body, not the dashboard's HTML 404 page."""
    return JsonResponse(error_body("not_found", "No such API endpoint"), status=status.HTTP_404_NOT_FOUND)
