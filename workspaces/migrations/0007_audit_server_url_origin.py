"""Activity rows of ``server.create`` kept the whole upstream URL, which may hold a secret in its path or
query: keep only its origin, as new rows do (gateway.services.url_for_audit)."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def _origin(url: str) -> str:
    from gateway.services import url_for_audit

    return url_for_audit(url)


def forwards(apps: Any, schema_editor: Any) -> None:
    AuditEvent = apps.get_model("workspaces", "AuditEvent")
    for event in AuditEvent.objects.filter(action="server.create").only("id", "details").iterator():
        url = (event.details or {}).get("url")
        if isinstance(url, str) and url and url != _origin(url):
            event.details = {**event.details, "url": _origin(url)}
            event.save(update_fields=["details"])


class Migration(migrations.Migration):
    dependencies = [("workspaces", "0006_invite")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
