"""factory_boy factories shared by the whole suite."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from tokens.services import token_create
from workspaces.models import Member, Workspace

PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}@example.com")
    email = factory.SelfAttribute("username")
    password = factory.django.Password(PASSWORD)


class WorkspaceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Workspace

    name = factory.Sequence(lambda n: f"Workspace {n}")
    slug = factory.Sequence(lambda n: f"workspace-{n}")


class MemberFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Member

    workspace = factory.SubFactory(WorkspaceFactory)
    user = factory.SubFactory(UserFactory)
    role = Member.Role.MEMBER


def make_token(  # type: ignore[no-untyped-def]
    member: Member, name: str = "Alice Cursor", expires_in: int | None = None, scopes: Any = None
):
    """A token through the real service, so tests see exactly what users get."""
    return token_create(
        workspace=member.workspace,
        holder=member,
        name=name,
        expires_in=expires_in,
        created_by=member.user,
        scopes=scopes,
    )
