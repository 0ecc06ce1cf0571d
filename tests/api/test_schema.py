"""The OpenAPI schema generates without a warning or error, validates, and the docs page works under the CSP."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator


def test_it_generates_the_schema_without_warnings(db: None) -> None:
    GENERATOR_STATS.reset()
    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert not GENERATOR_STATS._warn_cache, list(GENERATOR_STATS._warn_cache)
    assert not GENERATOR_STATS._error_cache, list(GENERATOR_STATS._error_cache)
    assert all(path.startswith("/api/v1/") for path in schema["paths"])
    assert "/api/v1/workspaces/{slug}/tokens" in schema["paths"]
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_the_management_command_validates_and_fails_on_warnings(tmp_path, db: None) -> None:  # type: ignore[no-untyped-def]
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    assert "openapi: 3" in (tmp_path / "schema.yml").read_text()


@pytest.mark.django_db
def test_it_serves_the_schema_and_a_docs_page_without_inline_script(client: Client) -> None:
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert b"/api/v1/workspaces" in schema.content
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert "swagger-ui-bundle.js" in html and "js/api-docs.js" in html
    assert "<script>" not in html and "http" not in html.split("<body>")[1]  # no inline script, no CDN
