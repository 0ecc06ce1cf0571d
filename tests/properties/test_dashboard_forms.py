"""Property-based bad input for the dashboard forms (hypothesis): the server form, the token form, sign-up,
log-in and workspace create, through Django's test client.

Each field is drawn together with whether the documented rules accept it; the oracle is that the whole form
is accepted (302, or 200 for the token page that shows the raw value once) exactly when every field is,
and refused with 400 and an error beside a field otherwise. Never a 5xx, never a traceback in the logs.
"""

from __future__ import annotations

import logging
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.models import Server
from gateway.services import suggest_slug
from tests.conftest import Team, login
from tests.factories import PASSWORD
from tests.live import free_port
from tokens.models import Token
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db
User = get_user_model()
FORM_SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLOSED_PORT = free_port()
# Text a browser can send: no lone surrogates (they cannot be encoded).
chars = st.characters(exclude_categories=("Cs",))
any_text = st.text(chars, max_size=40)
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")


def field(
    valid: st.SearchStrategy[str], invalid: st.SearchStrategy[str]
) -> st.SearchStrategy[tuple[str, bool]]:
    """A value and whether the rules accept it; valid 7 times in 8, so whole forms are often accepted too."""
    return st.integers(0, 7).flatmap(
        lambda n: invalid.map(lambda v: (v, False)) if n == 0 else valid.map(lambda v: (v, True))
    )


def text_ok(value: str, *, minimum: int = 1, maximum: int) -> bool:
    """Django's CharField: stripped, no NUL; then the length rules on the stripped value."""
    stripped = value.strip()
    return "\x00" not in value and minimum <= len(stripped) <= maximum


@pytest.fixture
def quiet(caplog: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """No network beyond loopback: a URL the generator made up must not start a DNS query."""
    real = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(socket.EAI_NONAME, "not resolved in tests")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    yield caplog


def assert_clean(response: Any, caplog: Any, accepted: bool, ok_status: int = 302) -> None:
    event("accepted" if accepted else "refused")  # --hypothesis-show-statistics shows the mix
    assert response.status_code < 500
    if accepted:
        assert response.status_code == ok_status, response.content.decode()[:2000]
    else:
        assert response.status_code == 400, response.status_code
        body = response.content.decode()
        assert 'class="error"' in body or 'class="error-box"' in body
    problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not problems, [r.getMessage() for r in problems]
    caplog.clear()


# -- servers ---------------------------------------------------------------------------------------------------
names = field(
    st.text(chars, min_size=1, max_size=100).filter(lambda v: text_ok(v, maximum=100)),
    st.sampled_from(["", "   ", "x" * 101, "a\x00b"])
    | any_text.filter(lambda v: not text_ok(v, maximum=100)),
)
slugs = st.sampled_from(["pattern", "pattern", "empty", "empty", "any"]).flatmap(
    lambda kind: {"pattern": st.from_regex(SLUG, fullmatch=True), "empty": st.just("")}.get(kind, any_text)
)
urls = field(
    st.builds(
        lambda p: f"http://127.0.0.1:{CLOSED_PORT}/{p}", st.from_regex(r"[a-z0-9/_.-]{0,30}", fullmatch=True)
    ),
    st.sampled_from(
        [
            "",
            "ftp://127.0.0.1/mcp",
            "http://user:pw@127.0.0.1/mcp",
            f"http://127.0.0.1:{CLOSED_PORT}/a b",
            "http://127.0.0.1:port/mcp",
            "http:///mcp",
            "http://" + "a" * 500,
            "mcp.example.com",
        ]
    )
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters=":"), max_size=30),
)
kinds = st.sampled_from(["none", "none", "bearer", "bearer", "header", "header", "basic", ""])
headers = field(
    st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True),
    st.sampled_from(["", "X API", "Host", "content-length", "Mcp-Session-Id", "X:Y", "Ключ"]),
)
credentials = field(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=60),
    st.sampled_from(["a\nb", "key\r\nX-Evil: 1", "sk-…", "tab\there", "\x7f"]),
)
timeouts = field(st.integers(1, 600).map(str), st.sampled_from(["0", "601", "-5", "abc", "", "1e3"]))


def slug_ok(slug: str, name: str, name_ok: bool, workspace: Workspace) -> bool:
    stripped = slug.strip()
    if "\x00" in slug:
        return False
    if stripped:
        candidate = stripped
        if not SLUG.fullmatch(candidate):
            return False
    else:
        if not name_ok:
            return False
        candidate = suggest_slug(name.strip())
        if not candidate:
            return False
    return not Server.objects.filter(workspace=workspace, slug=candidate).exists()


@settings(FORM_SETTINGS, max_examples=200)  # seven fields: more examples for enough accepted forms
@given(
    name=names,
    slug=slugs,
    url=urls,
    kind=kinds,
    header=headers,
    credential=credentials | st.just(("", True)),
    timeout=timeouts,
)
def test_the_server_form(
    client: Client,
    team: Team,
    quiet: Any,
    name: tuple[str, bool],
    slug: str,
    url: tuple[str, bool],
    kind: str,
    header: tuple[str, bool],
    credential: tuple[str, bool],
    timeout: tuple[str, bool],
) -> None:
    login(client, team.alice)
    accepted = (
        name[1]
        and slug_ok(slug, name[0], name[1], team.workspace)
        and url[1]
        and kind in ("none", "bearer", "header")
        and (header[1] or kind != "header")
        and credential[1]
        and (kind == "none" or credential[0].strip() != "")
        and timeout[1]
    )
    data = {
        "name": name[0],
        "slug": slug,
        "url": url[0],
        "credential_kind": kind,
        "credential_header": header[0],
        "credential": credential[0],
        "timeout_seconds": timeout[0],
    }
    before = Server.objects.count()
    response = client.post("/workspaces/acme-tools/servers/new/", data)
    assert_clean(response, quiet, accepted)
    assert Server.objects.count() == before + (1 if accepted else 0)


# -- tokens ----------------------------------------------------------------------------------------------------
token_names = field(
    st.text(chars, min_size=1, max_size=100).filter(lambda v: text_ok(v, maximum=100)),
    st.sampled_from(["", "  ", "n" * 101, "\x00"]),
)
expiries = st.sampled_from(["never", "3600", "86400", "2592000", "7776000", "custom", "", "1", "forever"])
custom_seconds = field(
    st.integers(1, 315_360_000).map(str) | st.just(""),
    st.sampled_from(["0", "-1", "315360001", "abc", "1.5"]),
)


@FORM_SETTINGS
@given(
    name=token_names, expires=expiries, custom=custom_seconds, holder=st.sampled_from(["", "mine", "bogus"])
)
def test_the_token_form(
    client: Client,
    team: Team,
    quiet: Any,
    name: tuple[str, bool],
    expires: str,
    custom: tuple[str, bool],
    holder: str,
) -> None:
    login(client, team.alice)
    # Reset per example: the examples of one run share the database, and a member may hold at most
    # TOKENS_PER_MEMBER_MAX active tokens (the cap has tests of its own in tests/tokens/test_token_cap.py).
    Token.objects.filter(member=team.alice).delete()
    data = {"name": name[0], "expires": expires, "custom_seconds": custom[0], "form_id": uuid.uuid4().hex}
    if holder:
        data["holder"] = str(team.alice.pk) if holder == "mine" else "999999"
    accepted = (
        name[1]
        and expires in ("never", "3600", "86400", "2592000", "7776000", "custom")
        and custom[1]
        and not (expires == "custom" and custom[0] == "")
        and holder != "bogus"
    )
    response = client.post("/workspaces/acme-tools/tokens/new/", data)
    assert_clean(response, quiet, accepted, ok_status=200)
    if accepted:
        assert "mwt_" in response.content.decode()


# -- sign-up, log-in, workspace create -----------------------------------------------------------------------------
emails = field(
    st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True).map(lambda local: f"{local}@example.com"),
    st.sampled_from(["", "no-at-sign", "a@", "@example.com", "a b@example.com", "x" * 150 + "@example.com"])
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="@"), max_size=20),
)
# Letters and digits mixed: never all digits (NumericPasswordValidator) or a common password.
passwords = st.from_regex(r"[a-zA-Z]{8}[0-9!#%&*+-]{4}[a-zA-Z0-9]{4,14}", fullmatch=True)


@FORM_SETTINGS
@given(
    email=emails,
    password=passwords,
    second=st.sampled_from(["same", "same", "other", "short", "common", "numeric"]),
    existing=st.booleans(),
)
def test_sign_up(
    team: Team, quiet: Any, settings: Any, email: tuple[str, bool], password: str, second: str, existing: bool
) -> None:
    settings.SIGNUP_RATE = "100000/h"  # its own tests cover the throttle
    address = "alice@example.com" if existing and email[1] else email[0]
    password1 = {"short": "short", "common": "password123", "numeric": "1234567890123"}.get(second, password)
    password2 = password + "x" if second == "other" else password1
    taken = User.objects.filter(username=address.strip().lower()).exists()  # made by an earlier example
    accepted = email[1] and not taken and second == "same"
    response = Client().post(
        "/accounts/signup/", {"email": address, "password1": password1, "password2": password2}
    )
    assert_clean(response, quiet, accepted)
    assert User.objects.filter(username=address.strip().lower()).exists() == (accepted or taken)


@FORM_SETTINGS
@given(
    username=st.sampled_from(["alice@example.com", " Alice@Example.com ", "bob@example.com"]) | any_text,
    password=st.sampled_from([PASSWORD, PASSWORD + " ", ""]) | any_text,
)
def test_log_in(team: Team, quiet: Any, settings: Any, username: str, password: str) -> None:
    settings.LOGIN_RATE = "100000/h"  # its own tests cover the throttle
    accepted = (
        username.strip().lower() in ("alice@example.com", "bob@example.com")
        and password == PASSWORD
        and "\x00" not in username
    )
    response = Client().post("/accounts/login/", {"username": username, "password": password})
    assert_clean(response, quiet, accepted)


@FORM_SETTINGS
@given(
    name=field(
        st.text(chars, min_size=2, max_size=100).filter(lambda v: text_ok(v, minimum=2, maximum=100)),
        st.sampled_from(["", "a", " a ", "n" * 101, "ab\x00"]),
    ),
    description=field(st.text(chars, max_size=50).filter(lambda v: "\x00" not in v), st.just("d" * 1001)),
)
def test_workspace_create(
    client: Client, team: Team, quiet: Any, name: tuple[str, bool], description: tuple[str, bool]
) -> None:
    login(client, team.alice)
    before = Workspace.objects.count()
    response = client.post("/workspaces/", {"name": name[0], "description": description[0]})
    accepted = name[1] and description[1]
    assert_clean(response, quiet, accepted)
    assert Workspace.objects.count() == before + (1 if accepted else 0)
