from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from workspaces.models import RATE_LIMIT_MAX, RATE_LIMIT_MIN, Invite, Member
from workspaces.services import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH


class WorkspaceForm(forms.Form):
    name = forms.CharField(
        min_length=2,
        max_length=100,
        error_messages={
            "required": "Give the workspace a name.",
            "min_length": "Use at least 2 characters.",
            "max_length": "Use at most 100 characters.",
        },
    )
    description = forms.CharField(required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"]).strip()
        if len(name) < 2:
            raise forms.ValidationError("Use at least 2 characters.")
        return name


class WorkspaceSettingsForm(forms.Form):
    """Parses the Settings form. The rules (lengths, the rate limit's range) are workspace_update's; the
    lengths only reach the inputs here as HTML hints."""

    name = forms.CharField(
        error_messages={"required": "Give the workspace a name."},
        widget=forms.TextInput(attrs={"maxlength": NAME_MAX_LENGTH}),
    )
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "maxlength": DESCRIPTION_MAX_LENGTH})
    )
    rate_limit_per_minute = forms.IntegerField(
        required=False,
        label="Rate limit per token (requests per minute)",
        error_messages={"invalid": "Enter a whole number of requests, or leave it empty."},
        widget=forms.NumberInput(attrs={"min": RATE_LIMIT_MIN, "max": RATE_LIMIT_MAX}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        server_limit = settings.GATEWAY_RATE_LIMIT_DEFAULT
        field = self.fields["rate_limit_per_minute"]
        field.help_text = f"Empty: follow the server's setting (GATEWAY_RATE_LIMIT, now {server_limit})."


class WorkspaceDeleteForm(forms.Form):
    confirm_name = forms.CharField(
        label="Type the workspace's name to confirm",
        max_length=200,
        error_messages={"required": "Type the workspace's name to confirm."},
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )


class OwnershipTransferForm(forms.Form):
    to = forms.ModelChoiceField(
        queryset=Member.objects.none(),
        label="New owner",
        empty_label="Choose a member",
        error_messages={
            "required": "Choose the member who becomes the owner.",
            "invalid_choice": "Choose a current member of this workspace.",
        },
    )

    def __init__(self, *args: Any, member: Member, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["to"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = (
            Member.objects.current()
            .filter(workspace_id=member.workspace_id)
            .exclude(role=Member.Role.OWNER)
            .select_related("user")
            .order_by("user__username")
        )
        field.label_from_instance = lambda m: f"{m.display_name} ({m.get_role_display()})"  # type: ignore[method-assign,assignment]


class ActivityFilterForm(forms.Form):
    """The activity log's filters (GET): one action, one actor (a user id among the log's actors)."""

    action = forms.ChoiceField(required=False, label="Action")
    actor = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Actor")

    def __init__(
        self, *args: Any, actions: list[tuple[str, str]], actors: list[tuple[int, str]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [("", "Every action"), *actions]  # type: ignore[attr-defined]
        self.fields["actor"].choices = [("", "Everyone"), *((str(pk), name) for pk, name in actors)]  # type: ignore[attr-defined]


class InviteForm(forms.Form):
    """Parses the invite form; member_invite decides whether the address may be invited."""

    email = forms.CharField(
        max_length=254,
        label="Email",
        error_messages={"required": "Enter the email address to invite."},
        widget=forms.EmailInput(attrs={"placeholder": "bob@example.com", "autocomplete": "off"}),
    )
    role = forms.ChoiceField(choices=Invite.Role.choices, initial=Invite.Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Member.Role.choices)
