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


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "2002:a00:1::",
        "::7f00:1",
        "64:ff9b:1::1",
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",
    ],  # NAT64, 6to4 and Teredo forms of private IPv4 addresses
)
def test_it_refuses_ipv6_forms_of_private_ipv4_addresses(address: str, settings: Any) -> None:
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    with pytest.raises(UpstreamAddressRefused):
        check_upstream_url(f"http://[{address}]/mcp")


def test_it_connects_only_to_the_addresses_it_checked(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name resolves to a public address for the check and to 127.0.0.1 afterwards."""
    import socket

    from gateway.upstream import UpstreamConfig, UpstreamError, UpstreamSession

    settings.ALLOW_PRIVATE_UPSTREAMS = False
    answers = iter(["93.184.215.14", "127.0.0.1", "127.0.0.1"])
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), 80))]
        return real_getaddrinfo(host, *args, **kwargs)

    connected: list[Any] = []
    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(
        socket,
        "create_connection",
        lambda address, *a, **k: connected.append(address) or (_ for _ in ()).throw(OSError("stop")),
    )
    session = UpstreamSession(
        UpstreamConfig(server_id=1, slug="x", url="http://rebind.example/mcp", timeout=2)
    )
    with pytest.raises(UpstreamError):
        session.request("tools/list")
    assert connected == [("93.184.215.14", 80)]  # the checked address, never a second look-up's answer
