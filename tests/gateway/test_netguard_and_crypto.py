from __future__ import annotations

from typing import Any

import pytest

from gateway.crypto import CredentialUnreadable, decrypt, encrypt
from gateway.netguard import UpstreamAddressRefused, check_upstream_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/mcp",
        "http://localhost/mcp",
        "http://10.0.0.5/mcp",
        "http://192.168.1.1/mcp",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:80/mcp",
        "http://0.0.0.0/mcp",
        "http://[::ffff:127.0.0.1]/mcp",
    ],
)
def test_it_refuses_private_addresses(url: str, settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    with pytest.raises(UpstreamAddressRefused, match="ALLOW_PRIVATE_UPSTREAMS"):
        check_upstream_url(url)


def test_it_accepts_public_addresses(settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    check_upstream_url("https://93.184.215.14/mcp")  # a literal public address: no DNS, no traffic


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "http://"),
        ("http:///nohost", "http://"),
        ("https://user:pw@example.com/mcp", "credential field"),
    ],
)
def test_it_refuses_bad_urls_even_when_private_is_allowed(url: str, message: str, settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    with pytest.raises(UpstreamAddressRefused, match=message):
        check_upstream_url(url)


def test_it_allows_loopback_when_configured(settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    check_upstream_url("http://127.0.0.1:9/mcp")


def test_it_encrypts_credentials(settings: Any) -> None:
    token = encrypt("upstream-secret-value")
    assert "upstream-secret-value" not in token and decrypt(token) == "upstream-secret-value"
    assert encrypt("upstream-secret-value") != token  # random IV each time


def test_it_rotates_keys(settings: Any) -> None:
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    stored = encrypt("s3cret")
    settings.ENCRYPTION_KEYS = [new, old]
    assert decrypt(stored) == "s3cret"
    settings.ENCRYPTION_KEYS = [new]
    with pytest.raises(CredentialUnreadable):
        decrypt(stored)
