from __future__ import annotations

from django import forms


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
