from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views import View


class GatewayView(View):
    def post(self, request: HttpRequest, slug: str) -> JsonResponse:
        return JsonResponse(
            {"jsonrpc": "2.0", "id": None, "error": {"code": -32601, "message": "Not available yet"}},
            status=501,
        )
