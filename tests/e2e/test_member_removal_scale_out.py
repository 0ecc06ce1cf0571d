"""Teams on two gunicorn nodes sharing PostgreSQL and Redis: an invite sent from one node is accepted on the
other, the new member's token works on both, and after the owner removes him on node A his very next
gateway request on node B gets 401 (the Redis token cache had his token as valid) and the workspace 404."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
import requests

from tests.conftest import need
from tests.e2e.test_gateway_e2e import Raw
from tests.e2e.test_scale_out import DATABASE_URL, REDIS_URL, _services_reachable
from tests.live import LiveServer, live_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.services]
TOKEN = re.compile(r"mwt_[0-9A-Za-z]{36}")
SETUP = """
import json
from django.contrib.auth.models import User
from workspaces.services import workspace_create
owner = User.objects.create_user(username="owner@example.com", email="owner@example.com", password="a-long-password-1")
ws = workspace_create(name="Scale Team", owner=owner)
print(json.dumps({"slug": ws.slug}))
"""


class Browser:
    """A dashboard user over plain HTTP, with the CSRF dance a browser does."""

    def __init__(self) -> None:
        self.session = requests.Session()
        self.session.trust_env = False

    def get(self, url: str) -> requests.Response:
        return self.session.get(url, timeout=15, allow_redirects=True)

    def post(
        self, url: str, data: dict[str, str] | None = None, *, form_page: str | None = None
    ) -> requests.Response:
        page = self.get(form_page or url).text
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert csrf, page[:2000]
        return self.session.post(
            url,
            data={**(data or {}), "csrfmiddlewaretoken": csrf.group(1)},
            headers={"Referer": form_page or url},
            timeout=15,
            allow_redirects=True,
        )


def _invite_link(mail_dir: Path) -> str:
    files = sorted(mail_dir.glob("*.log"))
    assert files, "no email was written"
    match = re.search(r"http://127\.0\.0\.1:\d+/invites/[A-Za-z0-9_-]+/", files[-1].read_text())
    assert match, files[-1].read_text()[:2000]
    return match.group(0)


def test_a_member_invited_on_one_node_and_removed_loses_access_on_the_other() -> None:
    need(
        _services_reachable(),
        f"PostgreSQL ({DATABASE_URL}) and Redis ({REDIS_URL}) are needed for the scale-out tests",
    )
    with tempfile.TemporaryDirectory(prefix="aerostack-mail-") as mail_dir:
        env = {"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL, "EMAIL_URL": f"file://{mail_dir}"}
        with live_cluster(2, extra_env=env) as (a, b):
            _run(a, b, Path(mail_dir))


def _run(a: LiveServer, b: LiveServer, mail_dir: Path) -> None:
    slug = json.loads(a.manage("shell", "-c", SETUP).strip().splitlines()[-1])["slug"]
    members_a = f"{a.url}/workspaces/{slug}/members/"

    owner = Browser()
    owner.post(f"{a.url}/accounts/login/", {"username": "owner@example.com", "password": "a-long-password-1"})
    sent = owner.post(
        f"{members_a}invite/", {"email": "bob@example.com", "role": "member"}, form_page=members_a
    )
    assert sent.status_code == 200 and "Invite sent to bob@example.com." in sent.text

    # Bob opens the link on node B, signs up there and accepts.
    bob = Browser()
    link = _invite_link(mail_dir).replace(a.url, b.url)
    page = bob.get(link)
    assert page.url == f"{b.url}/invites/accept/" and "Join Scale Team" in page.text
    signup = re.search(r'href="(/accounts/signup/\?[^"]+)"', page.text)
    assert signup
    signup_url = b.url + signup.group(1).replace("&amp;", "&")
    joined = bob.post(
        signup_url,
        {
            "email": "bob@example.com",
            "password1": "Zebra-Lantern-42",
            "password2": "Zebra-Lantern-42",
            "next": "/invites/accept/",
        },
    )
    assert joined.url == f"{b.url}/invites/accept/", joined.url
    accepted = bob.post(f"{b.url}/invites/accept/")
    assert accepted.status_code == 200 and "Welcome to Scale Team" in accepted.text
    tokens = set(TOKEN.findall(accepted.text))
    assert len(tokens) == 1
    raw = tokens.pop()

    # His token works on both nodes, and each node has it in the shared token cache now.
    on_a = Raw(a.port, slug, raw)
    on_a.initialize()
    on_b = on_a.on(b.port)
    assert on_a.request("ping")[0] == 200 and on_b.request("ping")[0] == 200
    assert bob.get(f"{b.url}/workspaces/{slug}/").status_code == 200

    # The owner removes him on node A.
    members = owner.get(members_a).text
    remove = re.search(
        r'href="(/workspaces/[^"]+/members/\d+/remove/)" aria-label="Remove bob@example.com"', members
    )
    assert remove
    removed = owner.post(a.url + remove.group(1))
    assert "bob@example.com was removed" in removed.text

    # The very next request on node B (and on A) is refused; the dashboard answers 404.
    assert on_b.request("ping")[0] == 401
    assert on_a.request("ping")[0] == 401
    assert bob.get(f"{b.url}/workspaces/{slug}/").status_code == 404
    listing = owner.get(f"{b.url}/workspaces/{slug}/tokens/").text
    assert "bob@example.com" in listing and "Revoked" in listing
    secret = link.rstrip("/").rsplit("/", 1)[1]
    for server in (a, b):
        log = server.log_text()
        assert "/invites/[redacted]/" in log or server is a  # node B served the link: its access log line
        assert raw not in log and secret not in log
