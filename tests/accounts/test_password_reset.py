"""Password reset by email, with Django's views: link from the log-in page, templated email (plain + HTML),
the link works once, requests throttled per client IP."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from tests.conftest import Team

pytestmark = pytest.mark.django_db
URL = "/accounts/password/reset/"
LINK = re.compile(r"http://testserver(/accounts/password/reset/[^/\s\"]+/[^/\s\"]+/)")


def test_the_login_page_links_to_it(client: Client) -> None:
    assert f'href="{URL}"' in client.get("/accounts/login/").content.decode()
    assert client.get(URL).status_code == 200


def test_it_resets_a_password_through_the_emailed_link(client: Client, team: Team) -> None:
    response = client.post(URL, {"email": "Alice@Example.com"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/sent/"
    assert "Check your email" in client.get(response["Location"]).content.decode()
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"] and message.subject == "Reset your Aerostack password"
    html, mimetype = message.alternatives[0]  # type: ignore[attr-defined]
    assert mimetype == "text/html"
    text_link = LINK.search(str(message.body))
    html_link = LINK.search(str(html))
    assert text_link and html_link and text_link.group(1) == html_link.group(1)
    assert "<a " not in str(message.body) and '<a href="http://testserver/accounts/password/reset/' in str(
        html
    )

    form = client.get(text_link.group(1), follow=True)
    assert form.status_code == 200 and "Choose a new password" in form.content.decode()
    set_password_url = form.redirect_chain[-1][0]
    assert "set-password" in set_password_url  # the token left the URL for the session, as Django does
    done = client.post(
        set_password_url, {"new_password1": "Zebra-Lantern-77", "new_password2": "Zebra-Lantern-77"}
    )
    assert done.status_code == 302 and done["Location"] == "/accounts/password/reset/done/"
    assert Client().login(username="alice@example.com", password="Zebra-Lantern-77")
    # The link works once.
    again = Client().get(text_link.group(1), follow=True)
    assert "This reset link is not valid" in again.content.decode()


def test_it_says_the_same_for_an_unknown_address(client: Client, team: Team) -> None:
    response = client.post(URL, {"email": "nobody@example.com"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/sent/"
    assert not mail.outbox


def test_it_shows_a_bad_address_beside_the_field(client: Client) -> None:
    response = client.post(URL, {"email": "not-an-address"})
    assert response.status_code == 400
    assert re.search(
        r'<div class="error" id="id_email_error"><p>Enter a valid email address', response.content.decode()
    )


def test_it_throttles_requests_per_ip(client: Client, team: Team, settings) -> None:  # type: ignore[no-untyped-def]
    settings.PASSWORD_RESET_RATE = "2/h"
    for _ in range(2):
        assert client.post(URL, {"email": "alice@example.com"}).status_code == 302
    blocked = client.post(URL, {"email": "alice@example.com"})
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) >= 1
    assert len(mail.outbox) == 2
    other_ip = Client(REMOTE_ADDR="10.9.8.7").post(URL, {"email": "alice@example.com"})
    assert other_ip.status_code == 302


def test_it_keeps_csrf_on(csrf_client: Client, team: Team) -> None:
    assert csrf_client.post(URL, {"email": "alice@example.com"}).status_code == 403
    assert not mail.outbox
