from __future__ import annotations

from django.urls import path

from api import dashboard

urlpatterns = [
    path("", dashboard.api_keys, name="api_keys"),
    path("<int:key_id>/revoke/", dashboard.api_key_revoke_view, name="api_key_revoke"),
]
