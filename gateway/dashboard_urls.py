from __future__ import annotations

from django.urls import path

from gateway import dashboard

urlpatterns = [
    path("", dashboard.server_list, name="server_list"),
    path("new/", dashboard.server_new, name="server_new"),
    path("<int:server_id>/", dashboard.server_detail, name="server_detail"),
    path("<int:server_id>/edit/", dashboard.server_edit, name="server_edit"),
    path("<int:server_id>/toggle/", dashboard.server_toggle, name="server_toggle"),
    path("<int:server_id>/delete/", dashboard.server_delete, name="server_delete"),
    path("<int:server_id>/test/", dashboard.server_test, name="server_test"),
    path("<int:server_id>/tools/toggle/", dashboard.tool_toggle, name="tool_toggle"),
]
