"""The HTTP CONNECT proxy: per-resource host names reach the server; other hosts are refused."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import pytest
import requests


def test_vault_host_through_the_proxy(coffer):
    with coffer.http(proxy=True) as s:
        r = s.get(f"https://v1.{coffer.vault_dns_suffix}/keys?api-version=7.6", timeout=30)
    assert r.status_code == 401  # the server's challenge, not a proxy answer
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")


def test_blob_host_through_the_proxy(coffer):
    with coffer.http(proxy=True) as s:
        r = s.get(f"https://acct.{coffer.blob_dns_suffix}/?comp=list", timeout=30)
    # Any answer from the blob service will do here (the account does not exist): the point is
    # that TLS to the server's certificate for *.blob.<suffix> succeeded through the tunnel.
    assert 200 <= r.status_code < 500, f"{r.status_code}: {r.text[:300]}"


def test_unknown_host_is_refused(coffer):
    with coffer.http(proxy=True) as s, pytest.raises(requests.exceptions.ProxyError):
        s.get("https://example.com/", timeout=30)


def test_unknown_host_connect_gets_403(coffer):
    proxy = urlparse(coffer.proxy)
    with socket.create_connection((proxy.hostname, proxy.port), timeout=30) as sock:
        sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        status_line = sock.makefile("rb").readline().decode("latin-1")
    version, status = status_line.split()[:2]
    assert version.startswith("HTTP/1.") and status == "403", status_line
