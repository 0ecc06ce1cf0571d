"""What every API view shares: key or session authentication, signed-in users only, the per-key rate limit,
pages, and the one error body. Set per view (not in ``REST_FRAMEWORK``), so the gateway's DRF view keeps
its own JSON-RPC refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_framework import generics
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from api.authentication import ApiKeyAuthentication, PerKeyRateThrottle
from api.errors import exception_handler
from api.pagination import Pages


class ApiView(APIView):
    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_classes = [PerKeyRateThrottle]

    def get_exception_handler(self) -> Callable[[Exception, dict[str, Any]], Any]:
        return exception_handler

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        for header, value in getattr(request, "rate_limit_headers", {}).items():
            response[header] = value
        return response


class ApiListView(ApiView, generics.GenericAPIView[Any]):
    """A paginated list (and usually the create of its kind)."""

    pagination_class = Pages


def only_api_v1(endpoints: list[tuple[str, str, str, Any]], **kwargs: Any) -> list[tuple[str, str, str, Any]]:
    """drf-spectacular preprocessing hook: the schema describes ``/api/v1/`` only (not the MCP gateway)."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/v1/")]
