from __future__ import annotations

from django import forms

from workspaces.models import Invite, Member


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
