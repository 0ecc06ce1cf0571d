"""The add/edit form of an upstream server. It only parses and presents: the rules of every field live in
``gateway.services.server_validate``, which ``server_create`` and ``server_update`` apply (so a REST API or
CLI gets the same ones); the view puts a ``ServerInvalid`` back beside the fields."""

from __future__ import annotations

from typing import Any

from django import forms

from gateway import secret_urls, services
from gateway.models import Server
from workspaces.models import Workspace

ORIGIN_NOTE = (
    "Changing the URL's scheme, host or port clears the stored credential unless you enter it again here: "
    "a secret is never sent to a host it was not entered for."
)


def _text(**attrs: Any) -> forms.TextInput:
    return forms.TextInput(attrs=attrs)


class ServerForm(forms.Form):
    name = forms.CharField(
        required=False,
        widget=_text(placeholder="GitHub", autofocus=True, maxlength=services.NAME_MAX_LENGTH),
    )
    slug = forms.CharField(
        required=False,
        help_text="The prefix of this server's tools (<code>slug__tool</code>). Empty: made from the name.",
        widget=_text(placeholder="github", maxlength=services.SLUG_MAX_LENGTH, **{"class": "mono"}),
    )
    # A CharField, not a URLField: Django's URL validator refuses single-label hosts such as the
    # "http://github-mcp:8080/mcp" of a Docker network; the service's URL guard decides instead.
    url = forms.CharField(
        label="URL",
        required=False,
        help_text="The server's Streamable HTTP endpoint, e.g. <code>https://mcp.example.com/mcp</code>.",
        widget=forms.URLInput(
            attrs={"placeholder": "https://mcp.example.com/mcp", "maxlength": services.URL_MAX_LENGTH}
        ),
    )
    credential_kind = forms.ChoiceField(
        label="Credential", choices=Server.CredentialKind.choices, initial=Server.CredentialKind.NONE
    )
    credential_header = forms.CharField(
        label="Header name",
        required=False,
        help_text="Only for “Named header”, e.g. <code>X-API-Key</code>.",
        widget=_text(maxlength=services.HEADER_MAX_LENGTH),
    )
    credential = forms.CharField(
        label="Credential value",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    timeout_seconds = forms.IntegerField(
        label="Timeout (seconds)",
        initial=60,
        # Parsing only: an empty box is no number (server_update reads None as "keep"); the range is the
        # service's rule.
        error_messages={
            "required": "Enter a timeout in seconds.",
            "invalid": "Enter a whole number of seconds.",
        },
        widget=forms.NumberInput(attrs={"min": 1, "max": services.TIMEOUT_MAX_SECONDS}),
    )

    expose_names = forms.BooleanField(
        label="Expose names as they are",
        required=False,
        help_text=(
            "Off (the default): clients see <code>slug__tool</code>, <code>slug__prompt</code> and "
            "<code>aerostack://slug/…</code> resource URIs. On: this server's tools, prompts and resources "
            "keep their upstream names, so the gateway can replace this one server without clients "
            "noticing. Refused when another server of the workspace already exposes one of those names."
        ),
    )

    def __init__(self, *args: Any, workspace: Workspace, server: Server | None = None, **kwargs: Any) -> None:
        if server is not None:
            # The URL as the Servers tab shows it (secret-looking parts masked): sent back unchanged, it keeps
            # the stored URL (server_update).
            kwargs.setdefault(
                "initial",
                {
                    field: server.url_display if field == "url" else getattr(server, field)
                    for field in services.SERVER_FIELDS
                },
            )
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        self.server = server
        if server is not None and server.has_credential:
            self.fields[
                "credential"
            ].help_text = f"A credential is stored. Leave empty to keep it. {ORIGIN_NOTE}"
            self.fields["url"].help_text += " Another scheme, host or port clears the stored credential."
        elif server is not None:
            self.fields["credential"].help_text = "No credential."
        if server is not None and secret_urls.MASK in server.url_display:
            self.fields["url"].help_text += (
                f" Parts that may be secret are shown as {secret_urls.MASK}: leave the URL as it is to keep"
                " it, or enter the whole URL again to change it."
            )

    @property
    def values(self) -> dict[str, Any]:
        """The parsed values as keyword arguments of server_create / server_update (credential included)."""
        return {field: self.cleaned_data[field] for field in (*services.SERVER_FIELDS, "credential")}

    def refuse(self, exc: services.ServerInvalid) -> None:
        """Show the service's refusal beside each field it names."""
        for field, message in exc.errors.items():
            self.add_error(field if field in self.fields else None, message)
