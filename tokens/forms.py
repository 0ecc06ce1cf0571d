from __future__ import annotations

from typing import Any

from django import forms

from gateway.models import Server
from tokens.services import EXPIRES_IN_MAX_SECONDS, GRACE_CHOICES, NAME_MAX_LENGTH
from workspaces.models import Member
from workspaces.permissions import Action, allows

EXPIRY_CHOICES = [
    ("never", "No expiry"),
    ("3600", "1 hour"),
    ("86400", "24 hours"),
    ("2592000", "30 days"),
    ("7776000", "90 days"),
    ("custom", "Custom (seconds)"),
]


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=NAME_MAX_LENGTH,
        error_messages={
            "required": "Give the token a name, e.g. “Alice Cursor”.",
            "max_length": f"Use at most {NAME_MAX_LENGTH} characters.",
        },
        widget=forms.TextInput(attrs={"placeholder": "Alice Cursor", "autofocus": True}),
    )
    holder = forms.ModelChoiceField(queryset=Member.objects.none(), required=False, empty_label=None)
    expires = forms.ChoiceField(choices=EXPIRY_CHOICES, initial="never", label="Expiration")
    custom_seconds = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=EXPIRES_IN_MAX_SECONDS,
        label="Custom expiry in seconds",
        error_messages={
            "invalid": "Enter a whole number of seconds.",
            "min_value": "Enter at least 1 second.",
            "max_value": f"Enter at most {EXPIRES_IN_MAX_SECONDS} seconds (10 years).",
        },
    )
    # Scopes: no server ticked means every server (also servers added later); ticked servers make an
    # allow-list, and ticked tools narrow their server to those tools (see tokens/scopes.py).
    scope_servers = forms.TypedMultipleChoiceField(
        required=False,
        coerce=int,
        widget=forms.CheckboxSelectMultiple,
        label="Servers",
        help_text="Leave all unticked for every server of the workspace, including servers added later. "
        "Once you tick one, the token sees only the ticked servers.",
    )
    scope_tools = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Only these tools (optional)",
        help_text="Ticking tools of a server limits the token to those tools of it; "
        "a server without ticked tools gives all of its tools.",
    )
    # One-time form id: a reload or double submit of the same form creates nothing new (see token_new).
    form_id = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)

    def __init__(self, *args: Any, member: Member, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.member = member
        # Which holders to offer is presentation; token_create itself decides who may hold a token.
        if allows(member, Action.TOKEN_ANY):
            queryset = (
                Member.objects.current().filter(workspace_id=member.workspace_id).select_related("user")
            )
            self.fields["holder"].queryset = queryset  # type: ignore[attr-defined]
            self.fields["holder"].initial = member.pk
            self.fields["holder"].label_from_instance = lambda m: f"{m.display_name} ({m.get_role_display()})"  # type: ignore[attr-defined]
        else:
            del self.fields["holder"]
        servers = list(Server.objects.filter(workspace_id=member.workspace_id).order_by("slug"))
        self.fields["scope_servers"].choices = [(s.pk, f"{s.name} ({s.slug})") for s in servers]  # type: ignore[attr-defined]
        self.fields["scope_tools"].choices = [  # type: ignore[attr-defined]
            (f"{s.pk}:{tool['name']}", f"{s.slug}: {tool['name']}")
            for s in servers
            for tool in (s.tools_snapshot or [])
            if isinstance(tool, dict) and isinstance(tool.get("name"), str)
        ]

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if not name:
            raise forms.ValidationError("Give the token a name, e.g. “Alice Cursor”.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        expires = cleaned.get("expires")
        if expires == "custom":
            if cleaned.get("custom_seconds") is None and "custom_seconds" not in self.errors:
                self.add_error("custom_seconds", "Enter the number of seconds, or pick a preset.")
            cleaned["expires_in"] = cleaned.get("custom_seconds")
        elif expires and expires != "never":
            cleaned["expires_in"] = int(expires)
        else:
            cleaned["expires_in"] = None
        cleaned["holder"] = cleaned.get("holder") or self.member
        cleaned["scopes"] = self._scopes(cleaned)
        return cleaned

    @staticmethod
    def _scopes(cleaned: dict[str, Any]) -> dict[int, list[str] | None] | None:
        tools: dict[int, list[str]] = {}
        for choice in cleaned.get("scope_tools") or []:
            server_id, _, tool = str(choice).partition(":")
            tools.setdefault(int(server_id), []).append(tool)
        server_ids = set(cleaned.get("scope_servers") or []) | set(tools)
        if not server_ids:
            return None
        return {server_id: tools.get(server_id) for server_id in sorted(server_ids)}


GRACE_LABELS = {0: "Revoke it now", 3600: "Keep it working for 1 hour", 86400: "Keep it working for 24 hours"}


class TokenRotateForm(forms.Form):
    grace = forms.TypedChoiceField(
        coerce=int,
        choices=[
            (seconds, GRACE_LABELS.get(seconds, f"Keep it working for {seconds // 86400} days"))
            for seconds in GRACE_CHOICES
        ],
        initial=86400,
        widget=forms.RadioSelect,
        label="What happens to the old token",
        error_messages={"required": "Choose what happens to the old token."},
    )
