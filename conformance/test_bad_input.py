"""Bad input gets a 4xx with the right error shape, never a 5xx, and the server stays up."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from harness import (
    API_KEYVAULT, API_RESOURCES, API_SUBSCRIPTIONS, ARM_SCOPE, assert_arm_error, assert_oauth_error, unique,
)

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def bad_rg(coffer):
    return coffer.create_rg()


def rg_path(coffer, name):
    return f"/subscriptions/{coffer.subscription_id}/resourcegroups/{name}?api-version={API_RESOURCES}"


def vault_path(coffer, rg, name):
    return (f"/subscriptions/{coffer.subscription_id}/resourceGroups/{rg}"
            f"/providers/Microsoft.KeyVault/vaults/{name}?api-version={API_KEYVAULT}")


def assert_alive(coffer):
    r = coffer.arm("GET", f"/subscriptions?api-version={API_SUBSCRIPTIONS}")
    assert r.status_code == 200, "the server should still answer after bad input"


def _vault_body(coffer, **props):
    properties = {"tenantId": coffer.tenant_id, "sku": {"family": "A", "name": "standard"},
                  "enableRbacAuthorization": True}
    properties.update(props)
    return json.dumps({"location": "eastus", "properties": properties}).encode()


RAW_VAULT_BODIES = {
    "truncated-json": b'{"location": "eastus", "properties": {',
    "not-json": b"hello vault",
    "invalid-utf8": b'{"location": "\xff\xfe"}',
    "json-array": b"[]",
    "json-null": b"null",
    "location-number": b'{"location": 5}',
    "properties-string": b'{"location": "eastus", "properties": "x"}',
    "empty-object": b"{}",
    "deeply-nested": b"[" * 10000 + b"]" * 10000,
}
BAD_VAULT_PROPERTIES = {
    "sku-number": {"sku": 5},
    "retention-string": {"softDeleteRetentionInDays": "seven"},
    "rbac-string": {"enableRbacAuthorization": "yes"},
    "tenant-number": {"tenantId": 42},
}


@pytest.mark.parametrize("case", list(RAW_VAULT_BODIES) + list(BAD_VAULT_PROPERTIES))
def test_bad_vault_body_is_400(coffer, bad_rg, case):
    body = RAW_VAULT_BODIES.get(case) or _vault_body(coffer, **BAD_VAULT_PROPERTIES[case])
    name = unique("kv", 16)
    r = coffer.arm("PUT", vault_path(coffer, bad_rg, name), data=body, headers=JSON)
    assert_arm_error(r, 400)
    assert coffer.arm("GET", vault_path(coffer, bad_rg, name)).status_code == 404  # nothing was created
    if case == "deeply-nested":
        assert_alive(coffer)


@pytest.mark.parametrize("body", [
    b'{"location": "eastus"',
    b'{"location": 5}',
    b"[]",
    b"{}",
    b'{"location": "eastus", "tags": "x"}',
    b'{"location": "\xff"}',
], ids=["truncated-json", "location-number", "json-array", "no-location", "tags-string", "invalid-utf8"])
def test_bad_resource_group_body_is_400(coffer, body):
    r = coffer.arm("PUT", rg_path(coffer, unique("rg-")), data=body, headers=JSON)
    assert_arm_error(r, 400)


def test_huge_body_is_refused(coffer):
    body = b'{"location": "eastus", "tags": {"x": "' + b"a" * (5 * 1024 * 1024) + b'"}}'
    r = coffer.arm("PUT", rg_path(coffer, unique("rg-")), data=body, headers=JSON)
    assert r.status_code in (400, 413), r.status_code
    assert_arm_error(r)
    assert_alive(coffer)


@pytest.mark.parametrize("name", ["rg<>1", "r" * 91, "rg name"], ids=["angle-brackets", "91-chars", "space"])
def test_invalid_resource_group_name_is_400(coffer, name):
    r = coffer.arm("PUT", rg_path(coffer, quote(name, safe="")), json={"location": "eastus"})
    assert_arm_error(r, 400)


@pytest.mark.parametrize("name", ["a", "a_b", "k" * 25])
def test_invalid_vault_name_is_400(coffer, bad_rg, name):
    r = coffer.arm("PUT", vault_path(coffer, bad_rg, name), data=_vault_body(coffer), headers=JSON)
    assert_arm_error(r, 400)


@pytest.mark.parametrize("path", [
    "/subscriptions/{sub}/providers/Microsoft.Nope/things?api-version=2020-01-01",
    "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/unicorns/x?api-version=2020-01-01",
    "/definitely/not/a/route",
])
def test_unknown_arm_path_is_404(coffer, bad_rg, path):
    r = coffer.arm("GET", path.format(sub=coffer.subscription_id, rg=bad_rg))
    assert_arm_error(r, 404)


# ---------------------------------------------------------------- token endpoint

def _form(coffer, **overrides):
    form = {"client_id": coffer.admin["client_id"], "client_secret": coffer.admin["client_secret"],
            "grant_type": "client_credentials", "scope": ARM_SCOPE}
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_token_endpoint_garbage_form(coffer):
    r = coffer.token_request(b"\xff\x00%%zz&&==&=%", headers=FORM)
    assert_oauth_error(r, 400)


def test_token_endpoint_empty_body(coffer):
    assert_oauth_error(coffer.token_request(b"", headers=FORM), 400)


def test_token_endpoint_missing_grant_type(coffer):
    assert_oauth_error(coffer.token_request(_form(coffer, grant_type=None)), 400, "invalid_request")


@pytest.mark.parametrize("grant", ["urn:example:nonsense", "authorization_code_but_not_really"])
def test_token_endpoint_unsupported_grant_type(coffer, grant):
    assert_oauth_error(coffer.token_request(_form(coffer, grant_type=grant)), 400, "unsupported_grant_type")


def test_token_endpoint_empty_grant_type(coffer):
    body = assert_oauth_error(coffer.token_request(_form(coffer, grant_type="")), 400)
    assert body["error"] in ("invalid_request", "unsupported_grant_type")


def test_token_endpoint_json_body(coffer):
    r = coffer.token_request(json.dumps(_form(coffer)), headers=JSON)
    assert_oauth_error(r, 400)


def test_token_endpoint_missing_scope(coffer):
    assert_oauth_error(coffer.token_request(_form(coffer, scope=None)), 400)


# ---------------------------------------------------------------- never a 5xx

def test_odd_requests_never_get_5xx(coffer, bad_rg):
    probes = [
        ("PROPFIND", rg_path(coffer, bad_rg), {}),
        ("GET", f"/subscriptions/{coffer.subscription_id}/resourcegroups/{bad_rg}?api-version=%FF%FE", {}),
        ("GET", rg_path(coffer, "rg%00x"), {}),
        ("GET", rg_path(coffer, "r" * 8000), {}),
        ("PUT", rg_path(coffer, unique("rg-")), {"data": b'{"location": "eastus"}',
                                                 "headers": {"Content-Type": "text/plain"}}),
        ("POST", "/coffer/admin/servicePrincipals", {"data": b"{", "headers": JSON}),
        ("POST", "/coffer/admin/users", {"json": {"username": 5}}),
        ("POST", "/coffer/admin/clock", {"json": {"advanceSeconds": "soon"}}),
    ]
    failures = []
    for method, path, kwargs in probes:
        r = coffer.arm(method, path, **kwargs)
        if r.status_code >= 500:
            failures.append(f"{method} {path[:80]} -> {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    assert_alive(coffer)
