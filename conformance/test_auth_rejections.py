"""401s: every bad or missing bearer token is refused, with a Bearer challenge and an ARM error body."""

from __future__ import annotations

import json
import time

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.keyvault.keys._shared.challenge_auth_policy import _validate_challenge_resource
from azure.keyvault.keys._shared.http_challenge import HttpChallenge

from harness import (
    API_RESOURCES, API_SUBSCRIPTIONS, STORAGE_SCOPE, StaticTokenCredential, assert_arm_error, b64url_encode,
    decode_jwt, sign_rs256, unique,
)


def _list_subscriptions(coffer, token):
    return coffer.arm("GET", f"/subscriptions?api-version={API_SUBSCRIPTIONS}", token=token)


def assert_401(resp):
    assert resp.status_code == 401, f"expected 401, got {resp.status_code}: {resp.text[:300]}"
    challenge = resp.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer"), f"WWW-Authenticate: {challenge!r}"
    assert_arm_error(resp)


def test_no_authorization_header(coffer):
    assert_401(_list_subscriptions(coffer, None))
    r = coffer.arm("PUT", f"/subscriptions/{coffer.subscription_id}/resourcegroups/{unique('rg-')}"
                          f"?api-version={API_RESOURCES}", token=None, json={"location": "eastus"})
    assert_401(r)


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer not-a-jwt", "Bearer a.b.c", "Basic YTpi"])
def test_malformed_authorization_header(coffer, header):
    with coffer.http() as s:
        r = s.get(f"{coffer.management}/subscriptions?api-version={API_SUBSCRIPTIONS}",
                  headers={"Authorization": header}, timeout=30)
    assert_401(r)


@pytest.mark.parametrize("audience", ["storage", "vault"])
def test_token_for_another_audience(coffer, audience):
    scope = STORAGE_SCOPE if audience == "storage" else coffer.vault_scope
    assert_401(_list_subscriptions(coffer, coffer.token(scope=scope)))


def test_token_signed_by_another_key(coffer):
    genuine = coffer.token()
    assert _list_subscriptions(coffer, genuine).status_code == 200  # control
    header, claims = decode_jwt(genuine)
    assert_401(_list_subscriptions(coffer, sign_rs256(header, claims)))


def test_token_with_a_tampered_payload(coffer):
    token = coffer.token()
    header, _claims, signature = token.split(".")
    forged_claims = dict(decode_jwt(token)[1], oid="00000000-0000-0000-0000-000000000000")
    tampered = ".".join([header, b64url_encode(json.dumps(forged_claims).encode()), signature])
    assert_401(_list_subscriptions(coffer, tampered))


def test_unsigned_token(coffer):
    _header, claims = decode_jwt(coffer.token())
    none_header = b64url_encode(b'{"alg":"none","typ":"JWT"}')
    body = b64url_encode(json.dumps(claims).encode())
    assert_401(_list_subscriptions(coffer, f"{none_header}.{body}."))


def test_sdk_reports_a_rejected_token_as_client_authentication_error(coffer):
    storage_token = coffer.token(scope=STORAGE_SCOPE)
    clients = coffer.mgmt_clients(StaticTokenCredential(storage_token))
    with pytest.raises(ClientAuthenticationError):
        clients.resource.resource_groups.get(unique("rg-"))


def test_expired_token(coffer_clock):
    token = coffer_clock.raw_token()
    assert _list_subscriptions(coffer_clock, token).status_code == 200  # control
    coffer_clock.advance_clock(7200)
    assert_401(_list_subscriptions(coffer_clock, token))
    # A token issued after the jump works again.
    fresh = coffer_clock.raw_token()
    claims = decode_jwt(fresh)[1]
    assert claims["iat"] >= time.time() + 7200 - 300, "new tokens should be stamped with the test clock"
    assert _list_subscriptions(coffer_clock, fresh).status_code == 200


def test_vault_host_challenge_without_token(coffer):
    """Through the proxy, the vault host answers 401 with a challenge the Key Vault SDK can follow."""
    url = f"https://v1.{coffer.vault_dns_suffix}/keys?api-version=7.6"
    with coffer.http(proxy=True) as s:
        r = s.get(url, timeout=30)
    assert r.status_code == 401
    header = r.headers["WWW-Authenticate"]
    assert header == (f'Bearer authorization="{coffer.authority}/{coffer.tenant_id}", '
                      f'resource="https://{coffer.vault_dns_suffix}"')
    # What azure-keyvault-keys does with it: parse, take the tenant, check the resource domain.
    challenge = HttpChallenge(url, header)
    assert challenge.is_bearer_challenge()
    assert challenge.tenant_id == coffer.tenant_id
    assert challenge.get_resource() + "/.default" == coffer.vault_scope
    _validate_challenge_resource(coffer.vault_scope, url)  # raises unless v1.<suffix> is under the resource
