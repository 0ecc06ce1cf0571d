"""What the API reads and writes. Input serializers only parse; the services decide (and refuse)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework import serializers

from gateway.models import Server
from tokens.models import Token
from workspaces.models import Invite, Member, Workspace


class ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="not_found, permission_denied, invalid, authentication_failed...")
    message = serializers.CharField(help_text="One sentence for a human.")

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # ``fields`` is a Serializer attribute, so this field is added here rather than declared.
        found = super().get_fields()
        found["fields"] = serializers.DictField(
            child=serializers.CharField(), help_text="The message for each offending input field."
        )
        return found


class ErrorSerializer(serializers.Serializer[Any]):
    """The body of every 4xx answer."""

    error = ErrorDetailSerializer()


class UserSerializer(serializers.ModelSerializer[User]):
    class Meta:
        model = User
        fields = ["id", "username", "email"]


class WorkspaceSerializer(serializers.ModelSerializer[Workspace]):
    role = serializers.SerializerMethodField()
    gateway_url = serializers.SerializerMethodField()
    effective_rate_limit = serializers.IntegerField(read_only=True)

    class Meta:
        model = Workspace
        fields = [
            "slug",
            "name",
            "description",
            "rate_limit_per_minute",
            "effective_rate_limit",
            "role",
            "gateway_url",
            "created_at",
        ]
        read_only_fields = fields

    def get_role(self, workspace: Workspace) -> str:
        roles: dict[int, str] = self.context.get("roles", {})
        return roles.get(workspace.pk, "")

    def get_gateway_url(self, workspace: Workspace) -> str:
        return f"{self.context.get('base_url', '')}{workspace.gateway_path}"


class WorkspaceCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200, trim_whitespace=False)
    description = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)


class WorkspaceUpdateSerializer(serializers.Serializer[Any]):
    """A PATCH: the fields left out keep their value; ``rate_limit_per_minute: null`` follows the server."""

    name = serializers.CharField(required=False, max_length=200, trim_whitespace=False)
    description = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    rate_limit_per_minute = serializers.IntegerField(required=False, allow_null=True)


class TokenSerializer(serializers.ModelSerializer[Token]):
    holder = serializers.CharField(source="member.display_name", read_only=True)
    holder_id = serializers.IntegerField(source="member_id", read_only=True)
    status = serializers.SerializerMethodField()

    class Meta:
        model = Token
        fields = [
            "id",
            "name",
            "hint",
            "holder",
            "holder_id",
            "status",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "scopes",
            "rotated_from",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "scopes": {"help_text": "null: every server; else {server id: null (all tools) or [tool names]}"},
            "rotated_from": {"help_text": "The token (id) this one replaced by a rotation"},
        }

    def get_status(self, token: Token) -> str:
        now = self.context.get("now") or timezone.now()
        return str(token.status_at(now).value)


class TokenCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200, trim_whitespace=False)
    expires_in = serializers.IntegerField(
        required=False, allow_null=True, default=None, help_text="Seconds until expiry; null: never."
    )
    holder_id = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The member (id) who holds the token; default: yourself. Owners and admins only.",
    )
    scopes = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(), allow_null=True),
        required=False,
        allow_null=True,
        default=None,
        help_text="Limit the token to these servers: {server id: null (all its tools) or [tool names]}; "
        "null or absent: every server, also those added later.",
    )

    def validate_scopes(self, value: dict[str, Any] | None) -> dict[int, list[str] | None] | None:
        if value is None:
            return None
        if not all(str(key).isdigit() for key in value):
            raise serializers.ValidationError("Name servers by their id (a whole number).")
        return {int(key): tools for key, tools in value.items()}


class TokenRotateSerializer(serializers.Serializer[Any]):
    grace_seconds = serializers.IntegerField(
        default=0, help_text="How long the old token keeps working (0: revoked at once)."
    )


class RotatedTokenSerializer(serializers.Serializer[Any]):
    token = TokenSerializer(help_text="The successor")
    raw = serializers.CharField(help_text="The successor itself: shown this once, never again.")
    mcp_json = serializers.DictField(child=serializers.JSONField())
    previous = TokenSerializer(help_text="The rotated token, with the time it stops working")


class CreatedTokenSerializer(serializers.Serializer[Any]):
    token = TokenSerializer()
    raw = serializers.CharField(help_text="The token itself: shown this once, never again.")
    mcp_json = serializers.DictField(child=serializers.JSONField())


class MeSerializer(serializers.Serializer[Any]):
    user = UserSerializer()
    key = serializers.DictField(child=serializers.CharField(allow_null=True), allow_null=True)


class MemberSerializer(serializers.ModelSerializer[Member]):
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.CharField(source="user.email", read_only=True)

    class Meta:
        model = Member
        fields = ["id", "username", "email", "role", "created_at"]
        read_only_fields = fields


class MemberRowSerializer(serializers.Serializer[Any]):
    """One line of the Members tab."""

    id = serializers.IntegerField(source="member.pk")
    username = serializers.CharField(source="member.user.username")
    role = serializers.CharField(source="member.role")
    joined_at = serializers.DateTimeField(source="member.created_at")
    active_tokens = serializers.IntegerField()
    tool_calls = serializers.IntegerField()
    last_active = serializers.DateTimeField(allow_null=True)


class RoleSerializer(serializers.Serializer[Any]):
    role = serializers.CharField(help_text="owner, admin or member")


class InviteSerializer(serializers.ModelSerializer[Invite]):
    invited_by = serializers.CharField(source="invited_by.username", allow_null=True, read_only=True)

    class Meta:
        model = Invite
        fields = ["id", "email", "role", "invited_by", "created_at", "sent_at", "expires_at"]
        read_only_fields = fields


class InviteCreateSerializer(serializers.Serializer[Any]):
    email = serializers.CharField(max_length=254)
    role = serializers.CharField(default="member", help_text="admin or member")


class SentInviteSerializer(serializers.Serializer[Any]):
    invite = InviteSerializer()
    delivered = serializers.BooleanField(help_text="Whether the email went out (false: check the mail setup)")


class ServerSerializer(serializers.ModelSerializer[Server]):
    status = serializers.CharField(read_only=True)
    tool_count = serializers.IntegerField(read_only=True)
    prompt_count = serializers.IntegerField(read_only=True)
    resource_count = serializers.IntegerField(read_only=True, help_text="Resources and resource templates")
    name_conflicts = serializers.ListField(
        source="all_conflicts",
        child=serializers.CharField(),
        read_only=True,
        help_text="Items of an expose_names server that could not keep their own name, and why",
    )
    has_credential = serializers.BooleanField(read_only=True)
    url = serializers.CharField(
        source="url_display",
        read_only=True,
        help_text=(
            "The URL with secret-looking path segments and every query value shown as ••••; the full URL is "
            "stored encrypted and never returned. Sent back unchanged in a PATCH, it keeps the stored URL"
        ),
    )

    class Meta:
        model = Server
        fields = [
            "id",
            "name",
            "slug",
            "url",
            "credential_kind",
            "credential_header",
            "has_credential",
            "timeout_seconds",
            "expose_names",
            "enabled",
            "status",
            "tool_count",
            "prompt_count",
            "resource_count",
            "name_conflicts",
            "last_checked_at",
            "last_error",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ServerWriteSerializer(serializers.Serializer[Any]):
    """Parsing only: gateway.services.server_validate decides what is a valid server."""

    name = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    slug = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    url = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Stored encrypted; answers show it with its secret-looking parts masked",
    )
    credential_kind = serializers.CharField(required=False, help_text="none, bearer or header")
    credential_header = serializers.CharField(required=False, allow_blank=True)
    credential = serializers.CharField(
        required=False, allow_blank=True, write_only=True, help_text="Stored encrypted, never returned."
    )
    timeout_seconds = serializers.IntegerField(required=False, allow_null=True)
    expose_names = serializers.BooleanField(
        required=False,
        help_text="Its tools, prompts and resources keep their upstream names (refused on a collision)",
    )
    enabled = serializers.BooleanField(required=False, help_text="PATCH only: switch the server on or off")


class ConnectionTestSerializer(serializers.Serializer[Any]):
    ok = serializers.BooleanField()
    tool_count = serializers.IntegerField()
    server_name = serializers.CharField()
    error = serializers.CharField()
    server = ServerSerializer()


class ToolSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(help_text="The upstream's own name of the tool")
    gateway_name = serializers.CharField(help_text="The name MCP clients see: <server>__<tool>")
    description = serializers.CharField()
    enabled = serializers.BooleanField()


class ToolSwitchSerializer(serializers.Serializer[Any]):
    enabled = serializers.BooleanField()


class AuditEventSerializer(serializers.Serializer[Any]):
    """An audit event as the Activity export writes it (``workspaces.activity.export_record``)."""

    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    action = serializers.CharField()
    actor_id = serializers.IntegerField(allow_null=True)
    actor = serializers.CharField(allow_null=True)
    subject_id = serializers.IntegerField(allow_null=True)
    subject = serializers.CharField(allow_null=True)
    target = serializers.CharField()
    summary = serializers.CharField()
    details = serializers.DictField(child=serializers.JSONField())


class UsageRowSerializer(serializers.Serializer[Any]):
    key = serializers.CharField(help_text="The tool (<server>__<tool>) or the member's username")
    calls = serializers.IntegerField()
    failures = serializers.IntegerField(help_text="Calls that failed (tool or upstream error, timeout)")
    average_ms = serializers.FloatField(allow_null=True)


class UsageSummarySerializer(serializers.Serializer[Any]):
    since = serializers.DateTimeField()
    scope = serializers.CharField(help_text="workspace (owners, admins) or own (members)")
    calls = serializers.IntegerField()
    failures = serializers.IntegerField(help_text="Calls that failed (tool or upstream error, timeout)")
    average_ms = serializers.FloatField(allow_null=True)
    by_tool = UsageRowSerializer(many=True)
    by_member = UsageRowSerializer(many=True)
