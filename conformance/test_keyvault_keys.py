"""Key Vault keys through azure-keyvault-keys: create, import, get, list (paging), update, rotate,
rotation policy, random bytes, and the 400/404 answers to bad requests."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import (
    JsonWebKey, KeyCurveName, KeyOperation, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction,
    KeyType,
)
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness import (
    EC_CURVES, b64url_decode, b64url_encode, ec_jwk, error_code, expect_error, public_key, rsa_jwk, unique,
)

ALL_RSA_OPS = {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
KID = re.compile(r"^https://(?P<host>[^/]+)/keys/(?P<name>[0-9A-Za-z-]+)/(?P<version>[0-9a-f]{32})$")
CLOCK_SLACK = timedelta(minutes=5)


def now() -> datetime:
    return datetime.now(timezone.utc)


def whole_seconds(delta: timedelta) -> datetime:
    return (now() + delta).replace(microsecond=0)


def assert_kid(kv, kid: str, name: str) -> str:
    """`kid` is https://{vault host}/keys/{name}/{32 hex}; returns the version."""
    m = KID.match(kid)
    assert m, f"not a versioned key id: {kid!r}"
    assert m["host"] == urlparse(kv.url).netloc and m["name"] == name, kid
    return m["version"]


def ops(key) -> set[str]:
    return {str(getattr(op, "value", op)) for op in key.key_operations}


def assert_fresh_properties(kv, key, name):
    props = key.properties
    assert props.name == name and props.vault_url.rstrip("/") == kv.url.rstrip("/")
    assert props.version == assert_kid(kv, key.id, name)
    assert props.enabled is True
    assert abs(props.created_on - now()) < CLOCK_SLACK
    assert props.updated_on == props.created_on
    assert props.recovery_level == "CustomizedRecoverable+Purgeable"  # 7-day retention, no purge protection
    assert props.recoverable_days == 7
    assert props.not_before is None and props.expires_on is None


def all_versions(kv, name):
    return list(kv.keys.list_properties_of_key_versions(name))


# ---------------------------------------------------------------- create

@pytest.mark.parametrize("size", [2048, 3072, 4096])
def test_create_rsa_key(kv, size):
    name = unique("rsa-")
    key = kv.keys.create_rsa_key(name, size=size)
    assert key.name == name
    assert key.key_type == KeyType.rsa
    assert int.from_bytes(key.key.n, "big").bit_length() == size
    assert len(key.key.n) == size // 8, "n is unsigned big-endian, no leading zero byte"
    assert int.from_bytes(key.key.e, "big") == 65537
    assert key.key.d is None and key.key.p is None and key.key.q is None, "no private material on the wire"
    assert key.key.kid == key.id
    assert ops(key) == ALL_RSA_OPS
    assert_fresh_properties(kv, key, name)

    got = kv.keys.get_key(name)
    assert (got.id, got.key.n, got.key.e) == (key.id, key.key.n, key.key.e)


@pytest.mark.parametrize("curve", list(EC_CURVES))
def test_create_ec_key(kv, curve):
    name = unique("ec-")
    key = kv.keys.create_ec_key(name, curve=curve)
    assert key.key_type == KeyType.ec
    assert key.key.crv == curve
    size = EC_CURVES[curve][1]
    assert len(key.key.x) == size and len(key.key.y) == size, "coordinates are fixed-length"
    public_key(key.key)  # raises unless (x, y) is on the curve
    assert key.key.d is None
    assert ops(key) == {"sign", "verify"}
    assert_fresh_properties(kv, key, name)
    assert kv.keys.get_key(name).key.x == key.key.x


@pytest.mark.parametrize("hsm", [False, True], ids=["oct", "oct-HSM"])
@pytest.mark.parametrize("size", [128, 192, 256])
def test_create_oct_key(kv, size, hsm):
    name = unique("oct-")
    key = kv.keys.create_oct_key(name, size=size, hardware_protected=hsm)
    assert key.key_type == (KeyType.oct_hsm if hsm else KeyType.oct)
    assert key.key.k is None, "a symmetric key never leaves the vault"
    assert ops(key) == {"encrypt", "decrypt", "wrapKey", "unwrapKey"}
    assert_fresh_properties(kv, key, name)


def test_create_hardware_protected_rsa_and_ec(kv):
    rsa_key = kv.keys.create_rsa_key(unique("rsahsm-"), hardware_protected=True)
    assert rsa_key.key_type == KeyType.rsa_hsm
    assert int.from_bytes(rsa_key.key.n, "big").bit_length() == 2048  # the default size
    ec_key = kv.keys.create_ec_key(unique("echsm-"), curve=KeyCurveName.p_384, hardware_protected=True)
    assert ec_key.key_type == KeyType.ec_hsm and ec_key.key.crv == "P-384"
    assert kv.keys.get_key(ec_key.name).key_type == KeyType.ec_hsm


def test_create_with_attributes_and_tags(kv):
    name = unique("attrs-")
    nbf, exp = whole_seconds(timedelta(days=-1)), whole_seconds(timedelta(days=30))
    tags = {"env": "test", "owner": "conformance"}
    key = kv.keys.create_rsa_key(name, key_operations=[KeyOperation.sign, KeyOperation.verify],
                                 not_before=nbf, expires_on=exp, tags=tags, enabled=True)
    for got in (key, kv.keys.get_key(name)):
        assert ops(got) == {"sign", "verify"}
        assert got.properties.not_before == nbf
        assert got.properties.expires_on == exp
        assert got.properties.tags == tags
        assert got.properties.enabled is True


def test_second_create_makes_a_new_version(kv):
    name = unique("twice-")
    first = kv.keys.create_rsa_key(name)
    second = kv.keys.create_rsa_key(name)
    v1, v2 = assert_kid(kv, first.id, name), assert_kid(kv, second.id, name)
    assert v1 != v2 and first.key.n != second.key.n

    assert kv.keys.get_key(name).id == second.id, "the latest version is the newest"
    old = kv.keys.get_key(name, version=v1)
    assert (old.id, old.key.n) == (first.id, first.key.n)
    assert {p.version for p in all_versions(kv, name)} == {v1, v2}
    assert [p.name for p in kv.keys.list_properties_of_keys()].count(name) == 1


def test_get_unknown_key_or_version_is_404(kv):
    with pytest.raises(ResourceNotFoundError) as info:
        kv.keys.get_key(unique("missing-"))
    assert info.value.status_code == 404 and error_code(info.value) == "KeyNotFound"

    name = unique("known-")
    kv.keys.create_ec_key(name)
    with pytest.raises(ResourceNotFoundError) as info:
        kv.keys.get_key(name, version="0" * 32)
    assert error_code(info.value) == "KeyNotFound"


def test_vaults_are_isolated(coffer, kv):
    other = coffer.data_vault(kv.rg)
    name = unique("same-")
    mine, theirs = kv.keys.create_rsa_key(name), other.keys.create_rsa_key(name)
    assert mine.key.n != theirs.key.n
    assert [p.name for p in other.keys.list_properties_of_keys()] == [name]
    with pytest.raises(ResourceNotFoundError):
        other.keys.get_key(name, mine.properties.version)  # a version of the other vault's key
    other.keys.begin_delete_key(name).wait()
    assert kv.keys.get_key(name).id == mine.id
    assert name not in {d.name for d in kv.keys.list_deleted_keys()}


def test_a_version_of_another_key_is_not_found(kv):
    a, b = kv.keys.create_rsa_key(unique("a-")), kv.keys.create_rsa_key(unique("b-"))
    wrong = f"{kv.url}keys/{a.name}/{b.properties.version}"
    with pytest.raises(ResourceNotFoundError):
        kv.keys.get_key(a.name, b.properties.version)
    with pytest.raises(ResourceNotFoundError):
        kv.keys.update_key_properties(a.name, b.properties.version, tags={"x": "y"})
    with pytest.raises(ResourceNotFoundError):
        kv.crypto(wrong).sign("RS256", bytes(32))
    assert kv.keys.get_key(b.name).properties.tags == {}


# ---------------------------------------------------------------- import

@pytest.mark.parametrize("hsm", [False, True], ids=["RSA", "RSA-HSM"])
def test_import_rsa_key(kv, hsm):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = unique("imp-rsa-")
    key = kv.keys.import_key(name, rsa_jwk(private), hardware_protected=hsm)
    assert key.key_type == (KeyType.rsa_hsm if hsm else KeyType.rsa)
    assert int.from_bytes(key.key.n, "big") == private.public_key().public_numbers().n
    assert int.from_bytes(key.key.e, "big") == 65537
    assert key.key.d is None and key.key.p is None and key.key.dp is None
    assert ops(key) == ALL_RSA_OPS, "a JWK without key_ops gets the type's default operations"
    assert_kid(kv, key.id, name)
    assert kv.keys.get_key(name).key.n == key.key.n


@pytest.mark.parametrize("curve", list(EC_CURVES))
def test_import_ec_key(kv, curve):
    private = ec.generate_private_key(EC_CURVES[curve][0]())
    name = unique("imp-ec-")
    key = kv.keys.import_key(name, ec_jwk(private, curve))
    assert key.key_type == KeyType.ec and key.key.crv == curve
    numbers = private.public_key().public_numbers()
    assert (int.from_bytes(key.key.x, "big"), int.from_bytes(key.key.y, "big")) == (numbers.x, numbers.y)
    assert key.key.d is None
    assert ops(key) == {"sign", "verify"}


def test_ec_coordinates_keep_their_leading_zeros(kv):
    """JWK EC coordinates are fixed-length: a point whose x starts with a zero byte is still 32 bytes."""
    while True:  # about 1 key in 256 qualifies; generating locally is cheap
        private = ec.generate_private_key(ec.SECP256R1())
        if private.public_key().public_numbers().x < 1 << 248:
            break
    key = kv.keys.import_key(unique("imp-zero-"), ec_jwk(private, "P-256"))
    assert len(key.key.x) == 32 and key.key.x[0] == 0
    assert kv.keys.get_key(key.name).key.x == key.key.x


@pytest.mark.parametrize("hsm", [False, True], ids=["oct", "oct-HSM"])
@pytest.mark.parametrize("size", [16, 24, 32])
def test_import_oct_key(kv, size, hsm):
    name = unique("imp-oct-")
    key = kv.keys.import_key(name, JsonWebKey(kty="oct", k=bytes(range(size))), hardware_protected=hsm)
    assert key.key_type == (KeyType.oct_hsm if hsm else KeyType.oct)
    assert key.key.k is None
    assert ops(key) == {"encrypt", "decrypt", "wrapKey", "unwrapKey"}


def test_import_with_attributes(kv):
    name = unique("imp-attrs-")
    exp = whole_seconds(timedelta(days=10))
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = kv.keys.import_key(name, rsa_jwk(private, key_ops=["wrapKey", "unwrapKey"]), expires_on=exp,
                             tags={"imported": "yes"})
    got = kv.keys.get_key(name)
    for k in (key, got):
        assert ops(k) == {"wrapKey", "unwrapKey"}
        assert k.properties.expires_on == exp
        assert k.properties.tags == {"imported": "yes"}


def test_import_makes_a_new_version_of_an_existing_key(kv):
    name = unique("imp-again-")
    created = kv.keys.create_rsa_key(name)
    imported = kv.keys.import_key(name, rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    assert imported.id != created.id
    assert kv.keys.get_key(name).id == imported.id
    assert len(all_versions(kv, name)) == 2


# ---------------------------------------------------------------- list and paging

def _pages(paged):
    return [list(page) for page in paged.by_page()]


def _raw_pages(kv, path):
    """Follow nextLink from `path` with raw requests; returns the list of `value` arrays."""
    pages, url = [], path
    while url:
        r = kv.raw("GET", url, api_version=None if "api-version=" in url else "7.6")
        assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"
        body = r.json()
        pages.append(body["value"])
        url = body.get("nextLink")
        if url:
            assert url.startswith(kv.url.rstrip("/") + "/"), f"nextLink must be absolute on the vault: {url}"
        assert len(pages) < 50, "nextLink never ends"
    return pages


def test_list_keys_pages_past_25(kv):
    names = {unique("many-") for _ in range(30)}
    for name in names:
        kv.keys.create_oct_key(name)

    listed = [p.name for p in kv.keys.list_properties_of_keys()]
    assert sorted(listed) == sorted(names), "every key exactly once"

    raw = _raw_pages(kv, "/keys")
    assert len(raw) >= 2 and all(len(page) <= 25 for page in raw), [len(p) for p in raw]
    items = [item for page in raw for item in page]
    assert sorted(i["kid"] for i in items) == sorted(f"{kv.url}keys/{n}" for n in names), "kid has no version"
    assert all("key" not in i and i["attributes"]["enabled"] is True for i in items), "no key material in lists"

    pages = _pages(kv.keys.list_properties_of_keys(max_page_size=7))
    assert all(len(page) <= 7 for page in pages) and len(pages) >= 5
    assert sorted(p.name for page in pages for p in page) == sorted(names)


def test_list_key_versions_pages_past_25(kv):
    name = unique("versions-")
    ids = {kv.keys.create_oct_key(name).id for _ in range(27)}

    listed = all_versions(kv, name)
    assert {p.id for p in listed} == ids and len(listed) == 27
    assert all(p.name == name for p in listed)

    raw = _raw_pages(kv, f"/keys/{name}/versions")
    assert len(raw) >= 2 and all(len(page) <= 25 for page in raw)
    assert sorted(i["kid"] for page in raw for i in page) == sorted(ids)

    pages = _pages(kv.keys.list_properties_of_key_versions(name, max_page_size=10))
    assert all(len(page) <= 10 for page in pages) and len(pages) >= 3
    assert {p.id for page in pages for p in page} == ids


def test_page_size_of_one(kv):
    names = {unique("one-") for _ in range(3)}
    for name in names:
        kv.keys.create_ec_key(name)
    pages = _pages(kv.keys.list_properties_of_keys(max_page_size=1))
    assert [len(p) for p in pages] == [1, 1, 1]
    assert {p[0].name for p in pages} == names


@pytest.mark.parametrize("maxresults", ["26", "100", "0", "-1", "ten"])
def test_page_size_out_of_range_is_400(kv, maxresults):
    """Key Vault pages hold at most 25 items; a larger (or non-positive) maxresults is refused."""
    for path in ("/keys", "/deletedkeys"):
        r = kv.raw("GET", f"{path}?maxresults={maxresults}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter", f"{path}: {r.text[:300]}"


def test_list_versions_of_unknown_key_is_404_or_empty(kv):
    """Azure answers 200 with an empty list or 404 KeyNotFound here; either is fine, a 5xx is not."""
    try:
        assert list(kv.keys.list_properties_of_key_versions(unique("nothing-"))) == []
    except ResourceNotFoundError as exc:
        assert error_code(exc) == "KeyNotFound"


# ---------------------------------------------------------------- update

def test_update_key_properties(kv):
    name = unique("upd-")
    key = kv.keys.create_rsa_key(name, tags={"a": "1"})
    nbf, exp = whole_seconds(timedelta(days=-2)), whole_seconds(timedelta(days=60))
    updated = kv.keys.update_key_properties(name, enabled=True, not_before=nbf, expires_on=exp,
                                            tags={"b": "2"}, key_operations=[KeyOperation.encrypt, "decrypt"])
    assert updated.id == key.id, "an update does not make a new version"
    assert updated.key.n == key.key.n
    for got in (updated, kv.keys.get_key(name)):
        assert got.properties.not_before == nbf
        assert got.properties.expires_on == exp
        assert got.properties.tags == {"b": "2"}, "tags are replaced, not merged"
        assert ops(got) == {"encrypt", "decrypt"}
        assert got.properties.created_on == key.properties.created_on
        assert got.properties.updated_on >= key.properties.updated_on
    assert len(all_versions(kv, name)) == 1


def test_update_without_changes_keeps_everything(kv):
    name = unique("upd-none-")
    key = kv.keys.create_ec_key(name, tags={"keep": "me"}, expires_on=whole_seconds(timedelta(days=3)))
    updated = kv.keys.update_key_properties(name, enabled=True)
    assert updated.properties.tags == {"keep": "me"}
    assert updated.properties.expires_on == key.properties.expires_on
    assert ops(updated) == ops(key)


def test_update_one_version_leaves_the_others(kv):
    name = unique("upd-ver-")
    first = kv.keys.create_rsa_key(name, tags={"v": "1"})
    second = kv.keys.create_rsa_key(name, tags={"v": "2"})
    kv.keys.update_key_properties(name, first.properties.version, tags={"v": "1-updated"})
    assert kv.keys.get_key(name, first.properties.version).properties.tags == {"v": "1-updated"}
    assert kv.keys.get_key(name).properties.tags == {"v": "2"}
    assert kv.keys.get_key(name).id == second.id


def test_update_unknown_key_is_404(kv):
    with pytest.raises(ResourceNotFoundError) as info:
        kv.keys.update_key_properties(unique("missing-"), enabled=False)
    assert error_code(info.value) == "KeyNotFound"


# ---------------------------------------------------------------- rotate and rotation policy

def test_rotate_key_makes_a_new_version_of_the_same_kind(kv):
    name = unique("rot-")
    key = kv.keys.create_rsa_key(name, size=3072, tags={"t": "x"})
    rotated = kv.keys.rotate_key(name)
    assert rotated.name == name and rotated.id != key.id
    assert_kid(kv, rotated.id, name)
    assert rotated.key_type == KeyType.rsa
    assert int.from_bytes(rotated.key.n, "big").bit_length() == 3072
    assert rotated.key.n != key.key.n
    assert kv.keys.get_key(name).id == rotated.id
    assert {p.id for p in all_versions(kv, name)} == {key.id, rotated.id}


def test_rotate_ec_and_oct_keys(kv):
    ec_key = kv.keys.create_ec_key(unique("rot-ec-"), curve="P-521")
    rotated = kv.keys.rotate_key(ec_key.name)
    assert rotated.key.crv == "P-521" and rotated.key.x != ec_key.key.x
    oct_key = kv.keys.create_oct_key(unique("rot-oct-"), size=128, hardware_protected=True)
    assert kv.keys.rotate_key(oct_key.name).key_type == KeyType.oct_hsm


def test_rotate_unknown_key_is_404(kv):
    expect_error(404, kv.keys.rotate_key, unique("missing-"), code="KeyNotFound")


def test_default_rotation_policy(kv):
    name = unique("pol-default-")
    kv.keys.create_rsa_key(name)
    policy = kv.keys.get_key_rotation_policy(name)
    assert policy.id == f"{kv.url}keys/{name}/rotationpolicy"
    assert len(policy.lifetime_actions) == 1
    action = policy.lifetime_actions[0]
    assert action.action == KeyRotationPolicyAction.notify
    assert action.time_before_expiry == "P30D" and action.time_after_create is None
    assert policy.expires_in is None


def test_rotation_policy_round_trip(kv):
    name = unique("pol-")
    kv.keys.create_rsa_key(name)
    actions = [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D"),
               KeyRotationLifetimeAction(KeyRotationPolicyAction.notify, time_before_expiry="P10D")]
    set_policy = kv.keys.update_key_rotation_policy(name, KeyRotationPolicy(), lifetime_actions=actions,
                                                   expires_in="P90D")
    for policy in (set_policy, kv.keys.get_key_rotation_policy(name)):
        assert policy.id == f"{kv.url}keys/{name}/rotationpolicy"
        assert policy.expires_in == "P90D"
        got = {(a.action, a.time_after_create, a.time_before_expiry) for a in policy.lifetime_actions}
        assert got == {(KeyRotationPolicyAction.rotate, "P30D", None), (KeyRotationPolicyAction.notify, None, "P10D")}
        assert policy.created_on is not None and policy.updated_on is not None


@pytest.mark.beyond_contract
def test_empty_lifetime_actions_reset_the_default_policy(kv):
    """Documented for the Key Vault clients: "You may also reset the key rotation policy to its default
    values by setting lifetimeActions to an empty array." (KeyRotationPolicyProperties)."""
    name = unique("pol-reset-")
    kv.keys.create_rsa_key(name)
    kv.keys.update_key_rotation_policy(
        name, KeyRotationPolicy(),
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")])
    kv.keys.update_key_rotation_policy(name, KeyRotationPolicy())  # sends "lifetimeActions": []
    policy = kv.keys.get_key_rotation_policy(name)
    assert [(a.action, a.time_after_create, a.time_before_expiry) for a in policy.lifetime_actions] == [
        (KeyRotationPolicyAction.notify, None, "P30D")]


def test_rotation_policy_of_unknown_key_is_404(kv):
    expect_error(404, kv.keys.get_key_rotation_policy, unique("missing-"), code="KeyNotFound")


@pytest.mark.parametrize("actions, expires_in", [
    ([("rotate", "P7D", None)], "P27D"),     # expiryTime below P28D
    ([("rotate", "P6D", None)], "P90D"),     # timeAfterCreate below P7D
    ([("rotate", "P6D", None)], None),
    ([("rotate", "PT1H", None)], None),
    ([("rotate", "P7D", None)], "P1D"),
    ([("rotate", "thirty days", None)], None),  # not an ISO 8601 duration
    ([("rotate", None, None)], None),          # no trigger at all
    ([("rotate", "P22D", None)], "P28D"),     # rotation less than 7 days before expiry
    ([("rotate", "P30D", None), ("rotate", "P40D", None)], None),  # two Rotate actions
    ([("rotate", "P30D", "P10D")], "P90D"),   # both triggers on one action
    ([("notify", "P30D", None)], "P90D"),     # Notify fires only before expiry
    ([("Explode", "P30D", None)], None),      # no such action
    ([("notify", None, "P6D")], "P90D"),      # timeBeforeExpiry below P7D
], ids=["expiry-P27D", "after-create-P6D", "after-create-P6D-no-expiry", "after-create-PT1H", "expiry-P1D",
        "not-a-duration", "no-trigger", "after-create-too-close-to-expiry", "two-rotates", "two-triggers",
        "notify-after-create", "unknown-action", "before-expiry-P6D"])
def test_invalid_rotation_policy_is_400(kv, actions, expires_in):
    name = unique("pol-bad-")
    kv.keys.create_rsa_key(name)
    lifetime = [KeyRotationLifetimeAction(a, time_after_create=tac, time_before_expiry=tbe) for a, tac, tbe in actions]
    expect_error(400, kv.keys.update_key_rotation_policy, name, KeyRotationPolicy(), lifetime_actions=lifetime,
                 expires_in=expires_in, code="BadParameter")
    assert kv.keys.get_key_rotation_policy(name).expires_in is None, "a rejected policy is not stored"


def test_rotation_policy_minimums_are_accepted(kv):
    name = unique("pol-min-")
    kv.keys.create_rsa_key(name)
    policy = kv.keys.update_key_rotation_policy(
        name, KeyRotationPolicy(),
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P7D")],
        expires_in="P28D")
    assert policy.expires_in == "P28D"
    assert policy.lifetime_actions[0].time_after_create == "P7D"


def test_rotate_applies_the_policy_expiry_to_the_new_version(kv):
    name = unique("pol-exp-")
    kv.keys.create_rsa_key(name)
    kv.keys.update_key_rotation_policy(
        name, KeyRotationPolicy(),
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")],
        expires_in="P90D")
    rotated = kv.keys.rotate_key(name)
    props = rotated.properties
    assert props.expires_on is not None, "the policy's expiryTime applies to new versions"
    assert props.expires_on - props.created_on == timedelta(days=90)


# ---------------------------------------------------------------- random bytes

@pytest.mark.parametrize("count", [1, 32, 128])
def test_get_random_bytes(kv, count):
    data = kv.keys.get_random_bytes(count)
    assert isinstance(data, bytes) and len(data) == count


def test_random_bytes_are_random(kv):
    draws = {kv.keys.get_random_bytes(32) for _ in range(4)}
    assert len(draws) == 4


@pytest.mark.parametrize("body", [{"count": 0}, {"count": 129}, {"count": -1}, {"count": "8"}, {}],
                         ids=["zero", "129", "negative", "string", "missing"])
def test_random_bytes_bad_count_is_400(kv, body):
    r = kv.raw("POST", "/rng", json=body)
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    assert r.json()["error"]["code"] == "BadParameter"


# ---------------------------------------------------------------- bad input: 400 / 404, never 5xx

@pytest.mark.parametrize("name", ["a_b", "a.b", "a b", "caf\u00e9", "x" * 128, "a+b"],
                         ids=["underscore", "dot", "space", "non-ascii", "128-chars", "plus"])
def test_invalid_key_name_is_400(kv, name):
    expect_error(400, kv.keys.create_rsa_key, name, code="BadParameter")


@pytest.mark.parametrize("name", ["x" * 127, "-", "0", "Key-01-UPPER"])
def test_valid_key_names(kv, name):
    assert kv.keys.create_oct_key(name).name == name


@pytest.mark.beyond_contract
def test_key_names_are_case_insensitive(kv):
    """Key Vault object names are case-insensitive: another case finds the same key."""
    name = unique("Case-")
    key = kv.keys.create_ec_key(name)
    assert kv.keys.get_key(name.upper()).id.lower() == key.id.lower()


@pytest.mark.parametrize("size", [1024, 2047, 2049, 8192, 0])
def test_bad_rsa_size_is_400(kv, size):
    expect_error(400, kv.keys.create_rsa_key, unique("bad-size-"), size=size, code="BadParameter")


@pytest.mark.parametrize("curve", ["P-192", "secp256r1", "Ed25519", "p-256"])
def test_bad_ec_curve_is_400(kv, curve):
    expect_error(400, kv.keys.create_ec_key, unique("bad-crv-"), curve=curve, code="BadParameter")


@pytest.mark.parametrize("size", [64, 100, 384, 512])
def test_bad_oct_size_is_400(kv, size):
    expect_error(400, kv.keys.create_oct_key, unique("bad-oct-"), size=size, hardware_protected=True,
                 code="BadParameter")


JSON_HEADERS = {"Content-Type": "application/json"}

BAD_CREATE_BODIES = {
    "truncated-json": b'{"kty": "RSA"',
    "not-json": b"make me a key",
    "json-array": b"[]",
    "json-null": b"null",
    "invalid-utf8": b'{"kty": "\xff"}',
    "no-kty": json.dumps({"key_size": 2048}).encode(),
    "unknown-kty": json.dumps({"kty": "DSA"}).encode(),
    "kty-number": json.dumps({"kty": 5}).encode(),
    "size-string": json.dumps({"kty": "RSA", "key_size": "big"}).encode(),
    "unknown-key-op": json.dumps({"kty": "RSA", "key_ops": ["fly"]}).encode(),
    "key-ops-string": json.dumps({"kty": "RSA", "key_ops": "sign"}).encode(),
    "exp-string": json.dumps({"kty": "RSA", "attributes": {"exp": "tomorrow"}}).encode(),
    "attributes-list": json.dumps({"kty": "RSA", "attributes": []}).encode(),
    "tags-string": json.dumps({"kty": "RSA", "tags": "x"}).encode(),
    "tag-value-number": json.dumps({"kty": "RSA", "tags": {"a": 1}}).encode(),
    "deeply-nested": b'{"kty": ' + b"[" * 10000 + b"]" * 10000 + b"}",
}


@pytest.mark.parametrize("case", list(BAD_CREATE_BODIES))
def test_bad_create_body_is_400(kv, case):
    name = unique("bad-body-")
    r = kv.raw("POST", f"/keys/{name}/create", data=BAD_CREATE_BODIES[case], headers=JSON_HEADERS)
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    assert r.json()["error"]["code"] == "BadParameter"
    with pytest.raises(ResourceNotFoundError):
        kv.keys.get_key(name)


def _valid_rsa_import():
    jwk = rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return {f: b64url_encode(getattr(jwk, f)) for f in ("n", "e", "d", "p", "q", "dp", "dq", "qi")} | {"kty": "RSA"}


def _valid_ec_import(crv="P-256"):
    jwk = ec_jwk(ec.generate_private_key(EC_CURVES[crv][0]()), crv)
    return {"kty": "EC", "crv": crv, "x": b64url_encode(jwk.x), "y": b64url_encode(jwk.y), "d": b64url_encode(jwk.d)}


def _bad_import(case):
    rsa_key, ec_key = _valid_rsa_import(), _valid_ec_import()
    if case == "rsa-no-d":
        rsa_key.pop("d")
        return {"key": rsa_key}
    if case == "rsa-bad-base64":
        return {"key": dict(rsa_key, n="not*base64url!")}
    if case == "rsa-public-only":
        return {"key": {"kty": "RSA", "n": rsa_key["n"], "e": rsa_key["e"]}}
    if case == "rsa-small":
        small = rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024))
        return {"key": {f: b64url_encode(getattr(small, f)) for f in ("n", "e", "d", "p", "q", "dp", "dq", "qi")}
                | {"kty": "RSA"}}
    if case == "ec-off-curve":
        x = bytearray(b64url_decode(ec_key["x"]))
        x[-1] ^= 1
        return {"key": dict(ec_key, x=b64url_encode(bytes(x)))}
    if case == "ec-unknown-curve":
        return {"key": dict(ec_key, crv="P-192")}
    if case == "ec-no-d":
        ec_key.pop("d")
        return {"key": ec_key}
    if case == "oct-10-bytes":
        return {"key": {"kty": "oct", "k": b64url_encode(b"0123456789")}}
    if case == "oct-no-k":
        return {"key": {"kty": "oct"}}
    if case == "no-key":
        return {"Hsm": False}
    if case == "key-string":
        return {"key": "RSA"}
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["rsa-no-d", "rsa-bad-base64", "rsa-public-only", "rsa-small", "ec-off-curve",
                                  "ec-unknown-curve", "ec-no-d", "oct-10-bytes", "oct-no-k", "no-key", "key-string"])
def test_bad_import_is_400(kv, case):
    name = unique("bad-imp-")
    r = kv.raw("PUT", f"/keys/{name}", json=_bad_import(case))
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    assert r.json()["error"]["code"] == "BadParameter"
    with pytest.raises(ResourceNotFoundError):
        kv.keys.get_key(name)


def test_bad_update_body_is_400(kv):
    name = unique("bad-upd-")
    kv.keys.create_ec_key(name)
    for body in (b"{", b"[]", json.dumps({"attributes": {"enabled": "no"}}).encode(),
                 json.dumps({"key_ops": ["fly"]}).encode(), json.dumps({"tags": ["x"]}).encode()):
        r = kv.raw("PATCH", f"/keys/{name}/", data=body, headers=JSON_HEADERS)
        assert r.status_code == 400, f"{body!r}: {r.status_code} {r.text[:300]}"
        assert r.json()["error"]["code"] == "BadParameter"
    assert kv.keys.get_key(name).properties.enabled is True


@pytest.mark.parametrize("api_version", [None, "1999-01-01", "banana"])
def test_missing_or_unknown_api_version_is_400(kv, api_version):
    r = kv.raw("GET", "/keys", api_version=api_version)
    assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
    assert r.json()["error"]["code"] == "BadParameter"


@pytest.mark.parametrize("api_version", ["7.0", "7.4", "7.5", "7.6", "2025-07-01"])
def test_supported_api_versions(kv, api_version):
    name = unique("apiv-")
    kv.keys.create_ec_key(name)
    r = kv.raw("GET", f"/keys/{name}/", api_version=api_version)
    assert r.status_code == 200, f"{r.status_code} {r.text[:300]}"
    assert r.json()["key"]["kid"].startswith(f"{kv.url}keys/{name}/")


def test_unknown_operation_path_is_4xx(kv):
    name = unique("path-")
    kv.keys.create_ec_key(name)
    for method, path in (("POST", f"/keys/{name}/explode"), ("GET", "/secretz"), ("DELETE", "/keys"),
                         ("POST", f"/keys/{name}/0123/fly")):
        r = kv.raw(method, path, json={})
        assert 400 <= r.status_code < 500, f"{method} {path}: {r.status_code} {r.text[:300]}"
