from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


def _workspace_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    # Cached tokens carry their workspace (slug, rate limit): a changed workspace must not be served stale.
    if not created:
        from tokens.services import tokens_invalidate_cached

        tokens_invalidate_cached(workspace_id=instance.pk)


def _token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    # Tokens are revoked, not deleted; but a deleted workspace takes its tokens with it, and a deleted token
    # must not live on in the shared cache.
    from tokens.services import invalidate_cached

    invalidate_cached(instance)


class TokensConfig(AppConfig):
    name = "tokens"

    def ready(self) -> None:
        from tokens.models import Token
        from workspaces.models import Workspace

        post_save.connect(_workspace_saved, sender=Workspace, dispatch_uid="tokens-workspace-saved")
        post_delete.connect(_token_deleted, sender=Token, dispatch_uid="tokens-token-deleted")
