from __future__ import annotations

from typing import Any

from django import forms

from tokens.services import EXPIRES_IN_MAX_SECONDS, NAME_MAX_LENGTH
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
        return cleaned
