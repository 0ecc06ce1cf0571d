"""Upstream URLs at rest: encrypted (``url_encrypted``, the credentials' Fernet helper) plus a display form
with secret-looking path segments and every query value masked (``url_display``); the plain ``url`` column
goes. Hosted MCP servers often carry their key in the URL.

Backwards restores the plain column from the ciphertext; it stops with a clear error when a URL cannot be
decrypted (the encryption keys changed since it was stored), rather than losing it.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations, models


def encrypt_urls(apps: Any, schema_editor: Any) -> None:
    """Each URL encrypted; what earlier upstream errors quoted of its secret parts (the server's last error,
    its usage rows' detail) masked as new ones are."""
    from django.db.models import Value
    from django.db.models.functions import Replace

    from gateway.crypto import encrypt
    from gateway.secret_urls import MASK, display_url, scrub, secret_parts

    Server = apps.get_model("gateway", "Server")
    UsageEvent = apps.get_model("gateway", "UsageEvent")
    for server in Server.objects.only("id", "url", "last_error").iterator():
        Server.objects.filter(pk=server.pk).update(
            url_encrypted=encrypt(server.url),
            url_display=display_url(server.url),
            url="",
            last_error=scrub(server.last_error, server.url),
        )
        for piece in secret_parts(server.url):
            UsageEvent.objects.filter(server_id=server.pk, detail__contains=piece).update(
                detail=Replace("detail", Value(piece), Value(MASK))
            )


def decrypt_urls(apps: Any, schema_editor: Any) -> None:
    from gateway.crypto import CredentialUnreadable, decrypt

    Server = apps.get_model("gateway", "Server")
    for server in Server.objects.only("id", "url_encrypted").iterator():
        try:
            url = decrypt(server.url_encrypted, what="URL")
        except CredentialUnreadable as exc:
            raise RuntimeError(
                f"server {server.pk}: {exc} (set ENCRYPTION_KEYS / SECRET_KEY as they were when it was stored)"
            ) from None
        Server.objects.filter(pk=server.pk).update(url=url)


class Migration(migrations.Migration):
    dependencies = [("gateway", "0005_merge_features_and_usage")]

    operations = [
        # A default for the plain column, so that going backwards can add it again to a table with rows.
        migrations.AlterField(
            model_name="server", name="url", field=models.URLField(max_length=500, blank=True, default="")
        ),
        migrations.AddField(
            model_name="server",
            name="url_encrypted",
            field=models.TextField(default=""),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="server",
            name="url_display",
            field=models.CharField("URL", max_length=2000, default=""),
            preserve_default=False,
        ),
        migrations.RunPython(encrypt_urls, decrypt_urls),
        migrations.RemoveField(model_name="server", name="url"),
    ]
