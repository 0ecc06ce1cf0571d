from __future__ import annotations

import ipaddress

from django.test import RequestFactory

from aerostack.net import client_ip


def test_it_uses_the_peer_address_without_trusted_proxies(rf: RequestFactory, settings) -> None:  # type: ignore[no-untyped-def]
    settings.TRUSTED_PROXIES = []
    request = rf.get("/", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="1.1.1.1")
    assert client_ip(request) == "203.0.113.5"


def test_it_reads_forwarded_for_from_trusted_proxies_right_to_left(rf: RequestFactory, settings) -> None:  # type: ignore[no-untyped-def]
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.7, 10.0.0.9")
    assert client_ip(request) == "198.51.100.7"  # 6.6.6.6 was written by the client itself


def test_it_falls_back_to_the_peer_on_garbage(rf: RequestFactory, settings) -> None:  # type: ignore[no-untyped-def]
    settings.TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_ip(rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="not-an-ip")) == "10.0.0.2"
    assert client_ip(rf.get("/", REMOTE_ADDR="10.0.0.2")) == "10.0.0.2"
