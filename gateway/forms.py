"""The add/edit form of an upstream server. It only validates; gateway/services.py does the writes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.utils.text import slugify

from gateway.models import SERVER_SLUG_VALIDATOR, Server
from gateway.netguard import UpstreamAddressRefused, check_upstream_url
from workspaces.models import Workspace

TIMEOUT_MAX_SECONDS = 600
SLUG_MAX_LENGTH = 32
CREDENTIAL_MAX_LENGTH = 4000
# RFC 9110 "token": the characters a header field name may use.
HEADER_NAME_PATTERN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers the gateway sets itself for the MCP transport, or that frame the HTTP message: a credential in
# one of them would break every request to the upstream (or smuggle a second one), so they are refused.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Host",
        "Content-Length",
        "Mcp-Session-Id",
        "MCP-Protocol-Version",
        "Content-Type",
        "Accept",
        "Transfer-Encoding",
        "Connection",
    )
)


def suggest_slug(name: str) -> str:
    """The slug a server named ``name`` gets when none is given, e.g. "GitHub Issues" -> "github-issues"."""
    return slugify(name).replace("_", "-")[:SLUG_MAX_LENGTH].strip("-")


class ServerForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        error_messages={
            "required": "Give the server a name, e.g. “GitHub”.",
            "max_length": "Use at most 100 characters.",
        },
        widget=forms.TextInput(attrs={"placeholder": "GitHub", "autofocus": True}),
    )
    slug = forms.CharField(
        required=False,
        max_length=SLUG_MAX_LENGTH,
        validators=[SERVER_SLUG_VALIDATOR],
        error_messages={"max_length": f"Use at most {SLUG_MAX_LENGTH} characters."},
        help_text="The prefix of this server's tools (<code>slug__tool</code>). Empty: made from the name.",
        widget=forms.TextInput(attrs={"placeholder": "github", "class": "mono"}),
    )
    # A CharField, not a URLField: Django's URL validator refuses single-label hosts such as the
    # "http://github-mcp:8080/mcp" of a Docker network; check_upstream_url decides instead.
    url = forms.CharField(
        label="URL",
        max_length=500,
        error_messages={"required": "Enter the server's Streamable HTTP URL."},
        help_text="The server's Streamable HTTP endpoint, e.g. <code>https://mcp.example.com/mcp</code>.",
        widget=forms.URLInput(attrs={"placeholder": "https://mcp.example.com/mcp"}),
    )
    credential_kind = forms.ChoiceField(
        label="Credential", choices=Server.CredentialKind.choices, initial=Server.CredentialKind.NONE
    )
    credential_header = forms.CharField(
        label="Header name",
        required=False,
        max_length=100,
        help_text="Only for “Named header”, e.g. <code>X-API-Key</code>.",
    )
    credential = forms.CharField(
        label="Credential value",
        required=False,
        max_length=CREDENTIAL_MAX_LENGTH,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    timeout_seconds = forms.IntegerField(
        label="Timeout (seconds)",
        initial=60,
        min_value=1,
        max_value=TIMEOUT_MAX_SECONDS,
        error_messages={
            "required": "Enter a timeout in seconds.",
            "invalid": "Enter a whole number of seconds.",
            "min_value": "Enter at least 1 second.",
            "max_value": f"Enter at most {TIMEOUT_MAX_SECONDS} seconds.",
        },
    )

    server_fields = ("name", "slug", "url", "credential_kind", "credential_header", "timeout_seconds")

    def __init__(self, *args: Any, workspace: Workspace, server: Server | None = None, **kwargs: Any) -> None:
        if server is not None:
            kwargs.setdefault("initial", {field: getattr(server, field) for field in self.server_fields})
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.server = server
        if server is not None and server.has_credential:
            self.fields["credential"].help_text = "A credential is stored. Leave empty to keep it."
        elif server is not None:
            self.fields["credential"].help_text = "No credential."

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError("Give the server a name, e.g. “GitHub”.")
        return name

    def clean_url(self) -> str:
        url = str(self.cleaned_data["url"]).strip()
        if any(char.isspace() or ord(char) < 32 for char in url):
            raise forms.ValidationError("Enter the URL without spaces.")
        try:
            urlsplit(url).port  # noqa: B018 - raises ValueError on a port that is not a number
            check_upstream_url(url)
        except UpstreamAddressRefused as exc:
            raise forms.ValidationError(str(exc)) from exc
        except ValueError as exc:
            raise forms.ValidationError("Enter a valid URL, e.g. https://mcp.example.com/mcp.") from exc
        return url

    def clean_credential(self) -> str:
        credential = str(self.cleaned_data["credential"]).strip()
        # It becomes an HTTP header value: a line break would inject another header.
        if any(ord(char) < 32 or ord(char) == 127 for char in credential):
            raise forms.ValidationError("The credential cannot contain line breaks or control characters.")
        if not credential.isascii():
            # HTTP header values are bytes; a pasted “…” or “ would fail on every request instead of here.
            raise forms.ValidationError("The credential can only contain ASCII characters.")
        return credential

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        self._clean_slug(cleaned)
        self._clean_credential(cleaned)
        return cleaned

    def _clean_slug(self, cleaned: dict[str, Any]) -> None:
        if "slug" in self.errors or "name" not in cleaned:
            return
        slug = cleaned.get("slug") or suggest_slug(cleaned["name"])
        if not slug:
            self.add_error("slug", "Enter a slug: the name has no letters or digits to make one from.")
            return
        taken = Server.objects.filter(workspace=self.workspace, slug=slug)
        if self.server is not None:
            taken = taken.exclude(pk=self.server.pk)
        if taken.exists():
            self.add_error("slug", f"Another server of this workspace already uses the slug “{slug}”.")
            return
        cleaned["slug"] = slug

    def _clean_credential(self, cleaned: dict[str, Any]) -> None:
        kind = cleaned.get("credential_kind")
        header = str(cleaned.get("credential_header") or "").strip()
        if kind != Server.CredentialKind.HEADER:
            cleaned["credential_header"] = ""
        elif not header:
            self.add_error("credential_header", "Enter the name of the header that carries the credential.")
        elif not HEADER_NAME_PATTERN.fullmatch(header):
            self.add_error(
                "credential_header", "Use a valid header name, e.g. X-API-Key: no spaces, colons or quotes."
            )
        elif header.lower() in RESERVED_HEADERS:
            self.add_error("credential_header", f"{header} is set by the gateway itself; choose another.")
        else:
            cleaned["credential_header"] = header
        # A new credential is needed unless one is stored already (on edit, empty keeps it).
        stored = self.server is not None and self.server.has_credential
        needs_secret = kind in (Server.CredentialKind.BEARER, Server.CredentialKind.HEADER) and not stored
        if needs_secret and not cleaned.get("credential") and "credential" not in self.errors:
            self.add_error("credential", "Enter the credential, or choose “None”.")

    @property
    def server_values(self) -> dict[str, Any]:
        """The cleaned values as keyword arguments of server_create / server_update."""
        return {field: self.cleaned_data[field] for field in self.server_fields}
