"""Identity plane: endpoints.json, OIDC discovery, JWKS, client-credentials tokens, admin endpoints."""

from __future__ import annotations

import os
import stat
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
from azure.core.exceptions import ClientAuthenticationError

from harness import (
    ARM_AUDIENCE, ARM_SCOPE, ARM_SCOPE_ALT, PUBLIC_VAULT_SCOPE, REGIONS, STORAGE_SCOPE,
    API_SUBSCRIPTIONS, assert_arm_error, assert_oauth_error, decode_jwt, is_uuid, unique, verify_rs256,
)


def _port(url: str) -> int:
    return urlparse(url).port


# ---------------------------------------------------------------- files written by the server

def test_endpoints_file_describes_the_server(coffer):
    e = coffer.endpoints
    assert coffer.endpoints_path.resolve() == (coffer.data_dir / "endpoints.json").resolve()
    assert e["version"] == 1
    assert is_uuid(e["tenant_id"]) and is_uuid(e["subscription_id"])
    assert e["regions"] == list(REGIONS)
    for key in ("authority", "management", "blob", "console", "metrics"):
        assert urlparse(e[key]).scheme == "https", key
        assert urlparse(e[key]).hostname == "127.0.0.1", key
    assert urlparse(e["proxy"]).scheme == "http" and urlparse(e["proxy"]).hostname == "127.0.0.1"
    main_port = _port(e["management"])
    assert _port(e["authority"]) == main_port
    assert e["console"] == f"https://127.0.0.1:{main_port}/console"
    assert e["metrics"] == f"https://127.0.0.1:{main_port}/metrics"
    assert e["vault_dns_suffix"] == f"vault.coffer.internal:{main_port}"
    assert e["blob_dns_suffix"] == f"blob.coffer.internal:{_port(e['blob'])}"
    ca = Path(e["ca_cert"])
    assert ca.is_absolute() and ca.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_admin_credentials_file_is_private(coffer):
    path = coffer.data_dir / "admin-credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for key in ("client_id", "client_secret", "username", "password"):
        assert isinstance(coffer.admin[key], str) and coffer.admin[key], key


# ---------------------------------------------------------------- discovery and keys

def test_oidc_discovery_document(coffer):
    doc = coffer.oidc()
    tenant_base = f"{coffer.authority}/{coffer.tenant_id}/"
    # MSAL reads these two with [...]; the token endpoint must be https under /{tenant}/.
    assert doc["token_endpoint"].startswith(tenant_base)
    assert doc["authorization_endpoint"].startswith("https://")
    assert coffer.tenant_id in doc["issuer"]
    with coffer.http() as s:
        jwks = s.get(doc["jwks_uri"], timeout=30)
    assert jwks.status_code == 200
    keys = jwks.json()["keys"]
    assert keys, "JWKS has no keys"
    for key in keys:
        assert key["kty"] == "RSA" and key["kid"] and key["n"] and key["e"]


def _jwk(coffer, kid):
    with coffer.http() as s:
        keys = s.get(coffer.oidc()["jwks_uri"], timeout=30).json()["keys"]
    matching = [k for k in keys if k["kid"] == kid]
    assert len(matching) == 1, f"kid {kid!r} not in JWKS"
    return matching[0]


# ---------------------------------------------------------------- tokens

@pytest.mark.parametrize("scope_name", ["arm", "arm-alt", "vault", "vault-public", "storage"])
def test_token_claims_and_signature(coffer, scope_name):
    scope = {
        "arm": ARM_SCOPE, "arm-alt": ARM_SCOPE_ALT, "vault": coffer.vault_scope,
        "vault-public": PUBLIC_VAULT_SCOPE, "storage": STORAGE_SCOPE,
    }[scope_name]
    expected_aud = ARM_AUDIENCE if scope == ARM_SCOPE else scope[: -len("/.default")]

    access = coffer.credential().get_token(scope)
    header, claims = decode_jwt(access.token)
    now = time.time()

    assert header["alg"] == "RS256"
    verify_rs256(access.token, _jwk(coffer, header["kid"]))
    if scope == ARM_SCOPE_ALT:  # Azure writes this audience with or without the slash
        assert claims["aud"].rstrip("/") == expected_aud.rstrip("/")
    else:
        assert claims["aud"] == expected_aud
    assert claims["tid"] == coffer.tenant_id
    assert coffer.tenant_id in claims["iss"]
    assert claims["appid"] == coffer.admin["client_id"]
    assert is_uuid(claims["oid"])
    assert claims["nbf"] <= now + 60 and claims["iat"] <= now + 60
    assert now < claims["exp"] and 300 <= claims["exp"] - claims["iat"] <= 86400
    assert abs(access.expires_on - claims["exp"]) <= 120, "expires_in disagrees with the exp claim"


def test_token_response_shape(coffer):
    r = coffer.token_request({
        "client_id": coffer.admin["client_id"], "client_secret": coffer.admin["client_secret"],
        "grant_type": "client_credentials", "scope": ARM_SCOPE,
    })
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"].lower() == "bearer"
    assert int(body["expires_in"]) > 300
    assert decode_jwt(body["access_token"])[1]["aud"] == ARM_AUDIENCE


def test_token_request_with_client_info_and_cae_claims(coffer):
    """MSAL always sends client_info=1 and, for CAE (Key Vault), a claims parameter."""
    r = coffer.token_request({
        "client_id": coffer.admin["client_id"], "client_secret": coffer.admin["client_secret"],
        "grant_type": "client_credentials", "client_info": "1", "scope": coffer.vault_scope,
        "claims": '{"access_token": {"xms_cc": {"values": ["CP1"]}}}',
    })
    assert r.status_code == 200, r.text
    # And through the SDK, which adds the claims itself when CAE is enabled.
    fresh = coffer.credential(coffer.admin["client_id"], coffer.admin["client_secret"])
    assert fresh.get_token(coffer.vault_scope, enable_cae=True).token


@pytest.mark.parametrize("scope", [ARM_SCOPE, ARM_SCOPE_ALT])
def test_both_arm_audiences_are_accepted_by_arm(coffer, scope):
    token = coffer.raw_token(scope=scope)
    r = coffer.arm("GET", f"/subscriptions?api-version={API_SUBSCRIPTIONS}", token=token)
    assert r.status_code == 200, r.text


def test_wrong_secret_is_rejected(coffer):
    cred = coffer.credential(coffer.admin["client_id"], "not-the-secret")
    with pytest.raises(ClientAuthenticationError):
        cred.get_token(ARM_SCOPE)
    r = coffer.token_request({
        "client_id": coffer.admin["client_id"], "client_secret": "not-the-secret",
        "grant_type": "client_credentials", "scope": ARM_SCOPE,
    })
    body = assert_oauth_error(r, 401, "invalid_client")
    assert body["error_description"].startswith("AADSTS7000215")


def test_unknown_client_is_rejected(coffer):
    ghost = str(uuid.uuid4())
    with pytest.raises(ClientAuthenticationError):
        coffer.credential(ghost, "whatever").get_token(ARM_SCOPE)
    r = coffer.token_request({
        "client_id": ghost, "client_secret": "whatever", "grant_type": "client_credentials", "scope": ARM_SCOPE,
    })
    assert 400 <= r.status_code < 500
    assert_oauth_error(r, r.status_code)


def test_unknown_scope_is_rejected(coffer):
    scope = "https://nothing.example/.default"
    with pytest.raises(ClientAuthenticationError):
        coffer.credential(coffer.admin["client_id"], coffer.admin["client_secret"]).get_token(scope)
    r = coffer.token_request({
        "client_id": coffer.admin["client_id"], "client_secret": coffer.admin["client_secret"],
        "grant_type": "client_credentials", "scope": scope,
    })
    body = assert_oauth_error(r, 400, "invalid_resource")
    assert body["error_description"].startswith("AADSTS500011")


# ---------------------------------------------------------------- principals (admin endpoint)

def test_new_service_principal_gets_its_own_token(coffer):
    sp = coffer.new_sp(unique("sp-"))
    assert sp.tenant_id == coffer.tenant_id
    assert is_uuid(sp.client_id) and is_uuid(sp.object_id) and sp.client_secret
    claims = decode_jwt(coffer.token(coffer.credential_for(sp)))[1]
    assert claims["appid"] == sp.client_id
    assert claims["oid"] == sp.object_id
    assert claims["tid"] == coffer.tenant_id


def test_service_principals_are_distinct(coffer):
    a, b = coffer.new_sp(), coffer.new_sp()
    assert len({a.client_id, b.client_id, a.object_id, b.object_id}) == 4
    assert a.client_secret != b.client_secret


def test_admin_creates_a_user(coffer):
    username = unique("alice")
    r = coffer.arm("POST", "/coffer/admin/users", json={"username": username, "password": "Pa55word!" + username})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["username"] == username
    assert body["tenant_id"] == coffer.tenant_id
    assert is_uuid(body["object_id"])


def test_non_admin_cannot_use_the_admin_endpoint(coffer, sp):
    token = coffer.token(coffer.credential_for(sp))
    r = coffer.arm("POST", "/coffer/admin/servicePrincipals", token=token, json={"displayName": "x"})
    assert_arm_error(r, 403, "AuthorizationFailed")
    r = coffer.arm("POST", "/coffer/admin/users", token=token,
                   json={"username": unique("mallory"), "password": "Pa55word!x"})
    assert_arm_error(r, 403, "AuthorizationFailed")


def test_admin_endpoint_requires_a_token(coffer):
    r = coffer.arm("POST", "/coffer/admin/servicePrincipals", token=None, json={"displayName": "x"})
    assert r.status_code == 401


def test_clock_endpoint_absent_without_test_clock(coffer):
    r = coffer.arm("POST", "/coffer/admin/clock", json={"advanceSeconds": 60})
    assert r.status_code == 404


def test_clock_advances_when_enabled(coffer_clock):
    first = coffer_clock.advance_clock(0)
    second = coffer_clock.advance_clock(3600)
    assert second - first >= 3600
    assert abs(first - time.time()) < 300, "the test clock should start at the real time"
