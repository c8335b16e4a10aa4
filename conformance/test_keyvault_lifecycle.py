"""Key lifecycle: soft delete, recover, purge, purge protection, disabled / expired / not-yet-valid keys,
backup and restore, scheduled rotation and purge on the test clock, and persistence across a restart."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys import JsonWebKey, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from harness import (
    API_SUBSCRIPTION_ALIAS, b64url_encode, digest, ec_jwk, error_code, expect_error, int_bytes, oaep, public_key,
    rsa_jwk, unique, vault_params, verify_locally,
)

DAY = 24 * 3600
CEK = bytes(range(32))
CLOCK_SLACK = timedelta(minutes=5)


def now() -> datetime:
    return datetime.now(timezone.utc)


def names(props) -> set[str]:
    return {p.name for p in props}


def assert_key_not_found(fn, *args, **kwargs):
    with pytest.raises(ResourceNotFoundError) as info:
        fn(*args, **kwargs)
    assert info.value.status_code == 404 and error_code(info.value) == "KeyNotFound", str(info.value)


def assert_forbidden(fn, *args, **kwargs):
    """A 403 that is about the key itself (state, validity, key_ops), not about RBAC."""
    exc = expect_error(403, fn, *args, code="Forbidden", **kwargs)
    assert (exc.error.innererror or {}).get("code") != "ForbiddenByRbac", str(exc)
    return exc


def raw_status(kv, kid, operation, body):
    wire = {k: b64url_encode(v) if isinstance(v, bytes) else v for k, v in body.items()}
    r = kv.raw("POST", f"{kid}/{operation}", json=wire)
    assert r.status_code < 500, r.text[:300]
    return r


def leaks(secret: bytes, blob: bytes) -> list[str]:
    """The encodings of `secret` found in `blob`: raw, hex, and base64 / base64url at every alignment
    (whole 3-byte groups of the secret encode the same way wherever the secret sits in a larger buffer)."""
    patterns = {"raw": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode()}
    for shift in range(3):
        chunk = secret[shift:]
        chunk = chunk[: len(chunk) - len(chunk) % 3]
        patterns[f"base64@{shift}"] = base64.b64encode(chunk)
        patterns[f"base64url@{shift}"] = base64.urlsafe_b64encode(chunk)
    return [label for label, pattern in patterns.items() if pattern in blob]


def rsa_material(kv, key):
    """What the operations below need: a locally wrapped CEK and a vault signature (made while allowed)."""
    d = digest("RS256", b"made before")
    return {
        "wrapped": public_key(key.key).encrypt(CEK, oaep("RSA-OAEP")),
        "digest": d,
        "signature": kv.crypto(key.id).sign("RS256", d).signature,
    }


def assert_time_invalid(kv, key, material):
    """Expired or not yet valid: encrypt / wrap / sign are refused; decrypt / unwrap / verify still work."""
    for operation, body in (("encrypt", {"alg": "RSA-OAEP", "value": b"x"}),
                            ("wrapkey", {"alg": "RSA-OAEP", "value": CEK}),
                            ("sign", {"alg": "RS256", "value": material["digest"]})):
        r = raw_status(kv, key.id, operation, body)
        assert r.status_code == 403, f"{operation}: {r.status_code} {r.text[:300]}"
        assert r.json()["error"]["code"] == "Forbidden"
    assert_forbidden(kv.crypto(key.id).sign, "RS256", material["digest"])
    assert kv.crypto(key.id).unwrap_key("RSA-OAEP", material["wrapped"]).key == CEK
    assert kv.crypto(key.id).decrypt("RSA-OAEP", material["wrapped"]).plaintext == CEK
    r = raw_status(kv, key.id, "verify", {"alg": "RS256", "digest": material["digest"], "value": material["signature"]})
    assert r.status_code == 200 and r.json()["value"] is True, r.text[:300]
    assert kv.keys.get_key(key.name).id == key.id, "an expired / not-yet-valid key can still be read"


# ---------------------------------------------------------------- soft delete, recover, purge

def test_delete_key(kv):
    name = unique("del-")
    key = kv.keys.create_rsa_key(name, tags={"t": "1"})
    deleted = kv.keys.begin_delete_key(name).result()
    assert deleted.name == name and deleted.id == key.id
    assert deleted.key.n == key.key.n
    assert deleted.recovery_id == f"{kv.url}deletedkeys/{name}"
    assert abs(deleted.deleted_date - now()) < CLOCK_SLACK
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=7), "the vault's retention"
    assert deleted.properties.tags == {"t": "1"}

    assert_key_not_found(kv.keys.get_key, name)
    assert_key_not_found(kv.keys.get_key, name, key.properties.version)
    assert_key_not_found(kv.keys.update_key_properties, name, enabled=False)
    assert_key_not_found(kv.crypto(key.id).unwrap_key, "RSA-OAEP", b"x" * 256)
    assert name not in names(kv.keys.list_properties_of_keys())

    got = kv.keys.get_deleted_key(name)
    assert (got.id, got.recovery_id, got.key.n) == (key.id, deleted.recovery_id, key.key.n)
    assert got.deleted_date == deleted.deleted_date and got.scheduled_purge_date == deleted.scheduled_purge_date
    listed = {d.name: d for d in kv.keys.list_deleted_keys()}
    assert name in listed and listed[name].recovery_id == deleted.recovery_id
    assert listed[name].scheduled_purge_date == deleted.scheduled_purge_date

    assert_key_not_found(kv.keys.begin_delete_key, name)  # already deleted


def test_recover_deleted_key(kv):
    name = unique("rec-")
    first = kv.keys.create_rsa_key(name, tags={"keep": "me"})
    second = kv.keys.create_rsa_key(name)
    wrapped = public_key(first.key).encrypt(CEK, oaep("RSA-OAEP"))
    _rotate_every_7_days(kv, name, expires_in="P45D")
    kv.keys.begin_delete_key(name).wait()

    recovered = kv.keys.begin_recover_deleted_key(name).result()
    assert recovered.id == second.id and recovered.key.n == second.key.n
    assert {p.id for p in kv.keys.list_properties_of_key_versions(name)} == {first.id, second.id}
    assert kv.keys.get_key(name, first.properties.version).properties.tags == {"keep": "me"}
    assert kv.crypto(first.id).unwrap_key("RSA-OAEP", wrapped).key == CEK
    assert name not in names(kv.keys.list_deleted_keys())
    assert_key_not_found(kv.keys.get_deleted_key, name)
    assert kv.keys.get_key_rotation_policy(name).expires_in == "P45D", "the rotation policy comes back too"


def test_deleted_name_cannot_be_reused_until_purged(kv):
    name = unique("reuse-")
    old = kv.keys.create_rsa_key(name)
    _rotate_every_7_days(kv, name)
    kv.keys.begin_delete_key(name).wait()

    with pytest.raises(ResourceExistsError) as info:
        kv.keys.create_rsa_key(name)
    assert info.value.status_code == 409 and error_code(info.value) == "Conflict"
    with pytest.raises(ResourceExistsError):
        kv.keys.import_key(name, rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))

    kv.keys.purge_deleted_key(name)
    assert_key_not_found(kv.keys.get_deleted_key, name)
    assert name not in names(kv.keys.list_deleted_keys())
    assert_key_not_found(kv.keys.begin_recover_deleted_key, name)

    fresh = kv.keys.create_rsa_key(name)
    assert fresh.id != old.id
    assert [p.id for p in kv.keys.list_properties_of_key_versions(name)] == [fresh.id], "old versions are gone"
    assert kv.keys.get_key_rotation_policy(name).expires_in is None, "and so is the old rotation policy"


def test_purge_recover_or_get_deleted_of_unknown_key_is_404(kv):
    live = unique("live-")
    kv.keys.create_ec_key(live)
    for name in (unique("never-"), live):  # a live key is not a deleted key
        assert_key_not_found(kv.keys.get_deleted_key, name)
        assert_key_not_found(kv.keys.purge_deleted_key, name)
        assert_key_not_found(kv.keys.begin_recover_deleted_key, name)
    assert_key_not_found(kv.keys.begin_delete_key, unique("never-"))
    assert kv.keys.get_key(live).name == live


def test_purge_is_refused_under_purge_protection(kv_protected):
    kv = kv_protected
    name = unique("protected-")
    key = kv.keys.create_rsa_key(name)
    assert key.properties.recovery_level == "CustomizedRecoverable"
    kv.keys.begin_delete_key(name).wait()
    exc = expect_error(403, kv.keys.purge_deleted_key, name)
    assert error_code(exc) == "Forbidden"
    assert kv.keys.get_deleted_key(name).id == key.id, "still there, still recoverable"
    assert kv.keys.begin_recover_deleted_key(name).result().id == key.id


@pytest.mark.parametrize("protect, days, level", [
    (False, 7, "CustomizedRecoverable+Purgeable"),
    (True, 7, "CustomizedRecoverable"),
    (False, 90, "Recoverable+Purgeable"),
    (True, 90, "Recoverable"),
])
def test_recovery_level_follows_the_vault(coffer, rg, protect, days, level):
    kv = coffer.data_vault(rg, purge_protection=protect, retention_days=days)
    key = kv.keys.create_ec_key(unique("level-"))
    assert key.properties.recovery_level == level
    assert key.properties.recoverable_days == days
    deleted = kv.keys.begin_delete_key(key.name).result()
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=days)


def test_list_deleted_keys_pages_past_25(kv):
    deleted = set()
    for _ in range(27):
        name = unique("gone-")
        kv.keys.create_oct_key(name)
        kv.keys.begin_delete_key(name).wait()
        deleted.add(name)
    kv.keys.create_oct_key(unique("alive-"))

    assert names(kv.keys.list_deleted_keys()) == deleted
    pages = [list(page) for page in kv.keys.list_deleted_keys(max_page_size=10).by_page()]
    assert len(pages) >= 3 and all(len(p) <= 10 for p in pages)
    r = kv.raw("GET", "/deletedkeys")
    assert r.status_code == 200 and len(r.json()["value"]) <= 25 and r.json()["nextLink"], r.text[:300]


def test_keys_follow_their_vault_through_delete_recover_and_purge(coffer, kv):
    admin = coffer.mgmt_clients()
    name, gone = unique("in-vault-"), unique("deleted-in-vault-")
    first, second = kv.keys.create_rsa_key(name), kv.keys.create_rsa_key(name)
    kv.keys.create_ec_key(gone)
    kv.keys.begin_delete_key(gone).wait()

    admin.keyvault.vaults.delete(kv.rg, kv.name)
    r = kv.raw("GET", f"/keys/{name}/")
    assert 400 <= r.status_code < 500, f"a deleted vault serves no keys: {r.status_code} {r.text[:300]}"

    admin.keyvault.vaults.begin_create_or_update(
        kv.rg, kv.name, vault_params(coffer.tenant_id, purge_protection=False, create_mode="recover")).result()
    # As in Azure, role assignments on the vault do not come back with it.
    coffer.assign_role(kv.vault.id, "Key Vault Administrator", kv.principal.object_id)
    kv.reconnect()
    assert {p.id for p in kv.keys.list_properties_of_key_versions(name)} == {first.id, second.id}
    assert kv.keys.get_deleted_key(gone).name == gone

    admin.keyvault.vaults.delete(kv.rg, kv.name)
    admin.keyvault.vaults.begin_purge_deleted(kv.name, "eastus").result()
    vault = coffer.create_vault(kv.rg, name=kv.name, purge_protection=False)
    coffer.assign_role(vault.id, "Key Vault Administrator", kv.principal.object_id)
    kv.reconnect()
    assert list(kv.keys.list_properties_of_keys()) == [], "a purged vault takes its keys with it"
    assert list(kv.keys.list_deleted_keys()) == []
    assert kv.keys.create_rsa_key(name).id not in {first.id, second.id}


# ---------------------------------------------------------------- disabled, expired, not yet valid

def test_disabled_key_refuses_everything_but_update(kv):
    name = unique("off-")
    key = kv.keys.create_rsa_key(name)
    material = rsa_material(kv, key)
    disabled = kv.keys.update_key_properties(name, enabled=False)
    assert disabled.properties.enabled is False

    assert_forbidden(kv.keys.get_key, name)
    assert_forbidden(kv.keys.get_key, name, key.properties.version)
    for operation, body in (("encrypt", {"alg": "RSA-OAEP", "value": b"x"}),
                            ("decrypt", {"alg": "RSA-OAEP", "value": material["wrapped"]}),
                            ("wrapkey", {"alg": "RSA-OAEP", "value": CEK}),
                            ("unwrapkey", {"alg": "RSA-OAEP", "value": material["wrapped"]}),
                            ("sign", {"alg": "RS256", "value": material["digest"]}),
                            ("verify", {"alg": "RS256", "digest": material["digest"], "value": material["signature"]})):
        r = raw_status(kv, key.id, operation, body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "Forbidden", f"{operation}: {r.text[:300]}"
    # The SDK path: it cannot read the key, so it asks the vault, which refuses.
    assert_forbidden(kv.crypto(key.id).unwrap_key, "RSA-OAEP", material["wrapped"])

    listed = {p.name: p for p in kv.keys.list_properties_of_keys()}
    assert listed[name].enabled is False, "a disabled key is still listed"
    assert [p.enabled for p in kv.keys.list_properties_of_key_versions(name)] == [False]

    assert kv.keys.update_key_properties(name, enabled=True).properties.enabled is True
    assert kv.keys.get_key(name).id == key.id
    assert kv.crypto(key.id).unwrap_key("RSA-OAEP", material["wrapped"]).key == CEK


def test_key_created_or_imported_disabled(kv):
    created = kv.keys.create_ec_key(unique("born-off-"), enabled=False)
    assert created.properties.enabled is False
    assert_forbidden(kv.keys.get_key, created.name)
    imported = kv.keys.import_key(unique("imp-off-"), JsonWebKey(kty="oct-HSM", k=os.urandom(32)), enabled=False)
    assert imported.properties.enabled is False
    r = raw_status(kv, imported.id, "wrapkey", {"alg": "A256KW", "value": CEK})
    assert r.status_code == 403


def test_disabling_one_version_leaves_the_latest_usable(kv):
    name = unique("ver-off-")
    first = kv.keys.create_rsa_key(name)
    second = kv.keys.create_rsa_key(name)
    kv.keys.update_key_properties(name, first.properties.version, enabled=False)
    assert kv.keys.get_key(name).id == second.id
    assert_forbidden(kv.keys.get_key, name, first.properties.version)


def test_expired_key(kv):
    name = unique("expired-")
    key = kv.keys.create_rsa_key(name)
    material = rsa_material(kv, key)
    kv.keys.update_key_properties(name, expires_on=now() - timedelta(hours=1))
    assert_time_invalid(kv, key, material)


def test_not_yet_valid_key(kv):
    name = unique("future-")
    key = kv.keys.create_rsa_key(name)
    material = rsa_material(kv, key)
    kv.keys.update_key_properties(name, not_before=now() + timedelta(days=1))
    assert_time_invalid(kv, key, material)


def test_expired_symmetric_key(kv):
    key = kv.keys.import_key(unique("exp-oct-"), JsonWebKey(kty="oct-HSM", k=os.urandom(32)))
    client = kv.crypto(key.id, remote_only=True)
    wrapped = client.wrap_key("A256KW", CEK).encrypted_key
    enc = client.encrypt("A256GCM", b"secret")
    kv.keys.update_key_properties(key.name, expires_on=now() - timedelta(minutes=5))
    assert_forbidden(client.wrap_key, "A256KW", CEK)
    assert_forbidden(client.encrypt, "A256GCM", b"secret")
    assert client.unwrap_key("A256KW", wrapped).key == CEK
    assert client.decrypt("A256GCM", enc.ciphertext, iv=enc.iv, authentication_tag=enc.tag).plaintext == b"secret"


# ---------------------------------------------------------------- backup and restore

def test_backup_and_restore_after_purge(kv):
    name = unique("bak-")
    first = kv.keys.create_rsa_key(name, tags={"v": "1"})
    second = kv.keys.create_rsa_key(name, tags={"v": "2"})
    wrapped = public_key(first.key).encrypt(CEK, oaep("RSA-OAEP-256"))
    backup = kv.keys.backup_key(name)
    assert isinstance(backup, bytes) and len(backup) > 0

    kv.keys.begin_delete_key(name).wait()
    kv.keys.purge_deleted_key(name)
    assert_key_not_found(kv.keys.get_deleted_key, name)

    restored = kv.keys.restore_key_backup(backup)
    assert restored.id == second.id and restored.key.n == second.key.n
    assert restored.properties.tags == {"v": "2"}
    assert {p.id for p in kv.keys.list_properties_of_key_versions(name)} == {first.id, second.id}
    assert kv.keys.get_key(name, first.properties.version).properties.tags == {"v": "1"}
    assert kv.crypto(first.id).unwrap_key("RSA-OAEP-256", wrapped).key == CEK, "the private key came back"


def test_restore_into_another_vault(coffer, kv):
    other = coffer.data_vault(kv.rg)
    name = unique("move-")
    key = kv.keys.create_rsa_key(name)
    signature = kv.crypto(key.id).sign("PS256", digest("PS256", b"moved")).signature

    restored = other.keys.restore_key_backup(kv.keys.backup_key(name))
    assert restored.id == f"{other.url}keys/{name}/{key.properties.version}", "same name and version, new vault"
    assert restored.key.n == key.key.n
    d = digest("PS256", b"moved")
    assert other.crypto(restored.id, remote_only=True).verify("PS256", d, signature).is_valid is True
    verify_locally(restored.key, "PS256", d, other.crypto(restored.id).sign("PS256", d).signature)
    assert kv.keys.get_key(name).id == key.id, "the source vault keeps its key"


@pytest.mark.beyond_contract
def test_restore_into_another_subscription_is_refused(coffer, kv):
    """Azure: "Both of the key vaults belong to the same Azure subscription" (security worlds)."""
    r = coffer.arm("PUT", f"/providers/Microsoft.Subscription/aliases/{unique('alias-')}"
                          f"?api-version={API_SUBSCRIPTION_ALIAS}",
                   json={"properties": {"displayName": "restore target", "workload": "Production"}})
    assert r.status_code in (200, 201), r.text
    clients = coffer.mgmt_clients(subscription_id=r.json()["properties"]["subscriptionId"])
    vault = coffer.create_vault(coffer.create_rg(clients), clients=clients)
    coffer.assign_role(vault.id, "Key Vault Administrator", kv.principal.object_id, clients=clients)
    target = coffer.key_client(vault.properties.vault_uri, kv.cred)

    name = unique("xsub-")
    kv.keys.create_ec_key(name)
    with pytest.raises(HttpResponseError) as info:
        target.restore_key_backup(kv.keys.backup_key(name))
    assert 400 <= info.value.status_code < 500
    assert_key_not_found(target.get_key, name)


@pytest.mark.beyond_contract
def test_restore_into_another_geography_is_refused(coffer, kv):
    """Azure: "Both of the Azure regions belong to the same geography" (security worlds)."""
    other = coffer.data_vault(kv.rg, location="westeurope")
    name = unique("xgeo-")
    kv.keys.create_ec_key(name)
    with pytest.raises(HttpResponseError) as info:
        other.keys.restore_key_backup(kv.keys.backup_key(name))
    assert 400 <= info.value.status_code < 500
    assert_key_not_found(other.keys.get_key, name)


def test_restore_over_an_existing_or_deleted_name_is_409(kv):
    name = unique("dup-")
    kv.keys.create_ec_key(name)
    backup = kv.keys.backup_key(name)
    with pytest.raises(ResourceExistsError) as info:
        kv.keys.restore_key_backup(backup)
    assert info.value.status_code == 409
    kv.keys.begin_delete_key(name).wait()
    with pytest.raises(ResourceExistsError):
        kv.keys.restore_key_backup(backup)  # deleted but not purged: the name is still taken


def test_restore_of_garbage_is_400(kv):
    name = unique("tamper-")
    kv.keys.create_rsa_key(name)
    backup = bytearray(kv.keys.backup_key(name))
    backup[len(backup) // 2] ^= 0x01
    kv.keys.begin_delete_key(name).wait()
    kv.keys.purge_deleted_key(name)
    for blob in (b"not a backup", bytes(backup), b"\x00"):
        expect_error(400, kv.keys.restore_key_backup, blob, code="BadParameter")
    for body in (b"{", b"{}", b'{"value": 5}', b'{"value": "***"}'):
        r = kv.raw("POST", "/keys/restore", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter", f"{body!r}: {r.text[:300]}"
    assert_key_not_found(kv.keys.get_key, name)


def test_backup_of_unknown_or_deleted_key_is_404(kv):
    assert_key_not_found(kv.keys.backup_key, unique("never-"))
    name = unique("bak-del-")
    kv.keys.create_ec_key(name)
    kv.keys.begin_delete_key(name).wait()
    assert_key_not_found(kv.keys.backup_key, name)


def test_backup_does_not_carry_the_private_key_in_clear(kv):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = unique("bak-clear-")
    kv.keys.import_key(name, rsa_jwk(private))
    backup = kv.keys.backup_key(name)
    numbers = private.private_numbers()
    for secret in (int_bytes(numbers.d, 256), int_bytes(numbers.p, 128)):
        assert not leaks(secret, backup), "private key material readable in the backup blob"


# ---------------------------------------------------------------- the test clock

def _rotate_every_7_days(kv, name, expires_in="P28D"):
    kv.keys.update_key_rotation_policy(
        name, KeyRotationPolicy(),
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P7D")],
        expires_in=expires_in)


def test_rotation_policy_rotates_on_schedule(coffer_clock):
    kv = coffer_clock.data_vault()
    name = unique("auto-")
    key = kv.keys.create_rsa_key(name, size=3072)
    _rotate_every_7_days(kv, name)

    coffer_clock.advance_clock(6 * DAY)
    kv.reconnect()
    assert [p.id for p in kv.keys.list_properties_of_key_versions(name)] == [key.id], "not due yet"

    coffer_clock.advance_clock(2 * DAY)
    kv.reconnect()
    versions = list(kv.keys.list_properties_of_key_versions(name))
    assert len(versions) == 2
    latest = kv.keys.get_key(name)
    assert latest.id != key.id and latest.id in {p.id for p in versions}
    assert latest.key_type == key.key_type and int.from_bytes(latest.key.n, "big").bit_length() == 3072
    created = latest.properties.created_on
    start = key.properties.created_on
    assert start + timedelta(days=7) <= created <= start + timedelta(days=8) + CLOCK_SLACK, "rotated when due"
    assert latest.properties.expires_on - created == timedelta(days=28), "the policy's expiryTime"

    coffer_clock.advance_clock(8 * DAY)
    kv.reconnect()
    assert len(list(kv.keys.list_properties_of_key_versions(name))) == 3, "rotation repeats from the new version"


def test_rotation_without_expiry_time(coffer_clock):
    kv = coffer_clock.data_vault()
    name = unique("auto-noexp-")
    key = kv.keys.create_ec_key(name, curve="P-384")
    kv.keys.update_key_rotation_policy(
        name, KeyRotationPolicy(),
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P10D")])
    coffer_clock.advance_clock(11 * DAY)
    kv.reconnect()
    latest = kv.keys.get_key(name)
    assert latest.id != key.id and latest.key.crv == "P-384"
    assert latest.properties.expires_on is None


def test_rotation_before_expiry(coffer_clock):
    kv = coffer_clock.data_vault()
    name = unique("auto-tbe-")
    key = kv.keys.create_rsa_key(name, expires_on=now() + timedelta(days=10))
    kv.keys.update_key_rotation_policy(
        name, KeyRotationPolicy(),
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P7D")],
        expires_in="P28D")
    coffer_clock.advance_clock(2 * DAY)  # expiry in 8 days: not due
    kv.reconnect()
    assert kv.keys.get_key(name).id == key.id
    coffer_clock.advance_clock(2 * DAY)  # expiry in 6 days: due
    kv.reconnect()
    latest = kv.keys.get_key(name)
    assert latest.id != key.id
    assert latest.properties.expires_on - latest.properties.created_on == timedelta(days=28)
    old = kv.keys.get_key(name, key.properties.version)
    assert old.properties.expires_on == key.properties.expires_on, "the old version keeps its expiry"


def test_notify_only_policy_does_not_rotate(coffer_clock):
    kv = coffer_clock.data_vault()
    name = unique("notify-")
    key = kv.keys.create_rsa_key(name, expires_on=now() + timedelta(days=20))
    coffer_clock.advance_clock(15 * DAY)  # inside the default Notify window (P30D before expiry)
    kv.reconnect()
    assert kv.keys.get_key(name).id == key.id


def test_timestamps_follow_the_test_clock(coffer_clock):
    kv = coffer_clock.data_vault()
    name = unique("stamps-")
    key = kv.keys.create_ec_key(name)
    coffer_clock.advance_clock(3600)
    kv.reconnect()
    updated = kv.keys.update_key_properties(name, tags={"touched": "yes"})
    assert updated.properties.created_on == key.properties.created_on
    assert updated.properties.updated_on - key.properties.updated_on >= timedelta(hours=1)
    deleted = kv.keys.begin_delete_key(name).result()
    assert deleted.deleted_date >= key.properties.created_on + timedelta(hours=1)
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=7)


def test_scheduled_purge_after_retention(coffer_clock):
    kv = coffer_clock.data_vault()  # no purge protection, 7 days
    name = unique("sched-")
    kv.keys.create_rsa_key(name)
    kv.keys.begin_delete_key(name).wait()

    coffer_clock.advance_clock(6 * DAY)
    kv.reconnect()
    assert kv.keys.get_deleted_key(name).name == name, "retention not over yet"

    coffer_clock.advance_clock(2 * DAY)
    kv.reconnect()
    assert_key_not_found(kv.keys.get_deleted_key, name)
    assert name not in names(kv.keys.list_deleted_keys())
    assert kv.keys.create_rsa_key(name).name == name, "the name is free again"
    assert len(list(kv.keys.list_properties_of_key_versions(name))) == 1


def test_scheduled_purge_also_happens_under_purge_protection(coffer_clock):
    kv = coffer_clock.data_vault(purge_protection=True)
    name = unique("sched-prot-")
    kv.keys.create_ec_key(name)
    kv.keys.begin_delete_key(name).wait()
    expect_error(403, kv.keys.purge_deleted_key, name)

    coffer_clock.advance_clock(8 * DAY)
    kv.reconnect()
    assert_key_not_found(kv.keys.get_deleted_key, name)
    assert kv.keys.create_ec_key(name).name == name


def test_expiry_follows_the_test_clock(coffer_clock):
    kv = coffer_clock.data_vault()
    name = unique("clock-exp-")
    key = kv.keys.create_rsa_key(name, expires_on=now() + timedelta(days=1))
    material = rsa_material(kv, key)
    coffer_clock.advance_clock(2 * DAY)
    kv.reconnect()
    assert_time_invalid(kv, key, material)


def test_not_before_follows_the_test_clock(coffer_clock):
    kv = coffer_clock.data_vault()
    name = unique("clock-nbf-")
    key = kv.keys.create_rsa_key(name, not_before=now() + timedelta(days=1))
    d = digest("RS256", b"later")
    assert_forbidden(kv.crypto(key.id).sign, "RS256", d)
    coffer_clock.advance_clock(2 * DAY)
    kv.reconnect()
    verify_locally(key.key, "RS256", d, kv.crypto(key.id).sign("RS256", d).signature)


# ---------------------------------------------------------------- restart

def test_keys_survive_a_restart(coffer_private):
    c = coffer_private
    kv = c.data_vault()
    rsa_name, ec_name, oct_name, off_name, gone_name = (unique(p) for p in ("rsa-", "ec-", "oct-", "off-", "gone-"))
    first = kv.keys.create_rsa_key(rsa_name, tags={"v": "1"})
    second = kv.keys.rotate_key(rsa_name)
    wrapped = public_key(first.key).encrypt(CEK, oaep("RSA-OAEP"))
    ec_key = kv.keys.create_ec_key(ec_name, curve="P-521")
    d = digest("ES512", b"before the restart")
    signature = kv.crypto(ec_key.id).sign("ES512", d).signature
    oct_key = kv.keys.create_oct_key(oct_name, size=256, hardware_protected=True)
    gcm = kv.crypto(oct_key.id, remote_only=True).encrypt("A256GCM", b"persisted", additional_authenticated_data=b"a")
    kv.keys.create_ec_key(off_name, enabled=False)
    gone = kv.keys.create_rsa_key(gone_name)
    kv.keys.begin_delete_key(gone_name).wait()
    _rotate_every_7_days(kv, rsa_name, expires_in="P60D")
    listed_before = names(kv.keys.list_properties_of_keys())

    assert c.stop() == 0
    c.start()
    kv.reconnect()

    assert names(kv.keys.list_properties_of_keys()) == listed_before
    versions = {p.version for p in kv.keys.list_properties_of_key_versions(rsa_name)}
    assert versions == {first.properties.version, second.properties.version}
    assert kv.keys.get_key(rsa_name).properties.version == second.properties.version
    assert kv.keys.get_key(rsa_name, first.properties.version).properties.tags == {"v": "1"}
    assert kv.crypto(f"{kv.url}keys/{rsa_name}/{first.properties.version}").unwrap_key("RSA-OAEP", wrapped).key == CEK

    ec_id = f"{kv.url}keys/{ec_name}/{ec_key.properties.version}"
    assert kv.crypto(ec_id, remote_only=True).verify("ES512", d, signature).is_valid is True
    verify_locally(ec_key.key, "ES512", d, kv.crypto(ec_id).sign("ES512", d).signature)
    oct_id = f"{kv.url}keys/{oct_name}/{oct_key.properties.version}"
    assert kv.crypto(oct_id, remote_only=True).decrypt(
        "A256GCM", gcm.ciphertext, iv=gcm.iv, authentication_tag=gcm.tag, additional_authenticated_data=b"a",
    ).plaintext == b"persisted"

    assert_forbidden(kv.keys.get_key, off_name)
    assert kv.keys.get_deleted_key(gone_name).key.n == gone.key.n
    policy = kv.keys.get_key_rotation_policy(rsa_name)
    assert policy.expires_in == "P60D"
    assert [(a.action, a.time_after_create) for a in policy.lifetime_actions] == [
        (KeyRotationPolicyAction.rotate, "P7D")]
    assert kv.keys.begin_recover_deleted_key(gone_name).result().key.n == gone.key.n


def test_no_private_key_material_on_disk(coffer_private):
    c = coffer_private
    kv = c.data_vault()
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_private = ec.generate_private_key(ec.SECP256R1())
    k = os.urandom(32)
    rsa_key = kv.keys.import_key(unique("clear-rsa-"), rsa_jwk(rsa_private), hardware_protected=True)
    kv.keys.import_key(unique("clear-ec-"), ec_jwk(ec_private, "P-256"))
    oct_key = kv.keys.import_key(unique("clear-oct-"), JsonWebKey(kty="oct-HSM", k=k))
    kv.keys.rotate_key(rsa_key.name)  # more writes after the imports
    numbers = rsa_private.private_numbers()
    secrets = {
        "RSA d": int_bytes(numbers.d, 256), "RSA p": int_bytes(numbers.p, 128), "RSA q": int_bytes(numbers.q, 128),
        "EC d": int_bytes(ec_private.private_numbers().private_value, 32), "oct k": k,
    }

    assert c.stop() == 0
    files = [p for p in c.base_dir.rglob("*") if p.is_file()]  # the data dir and the server's log
    assert any(p.is_relative_to(c.data_dir) for p in files)
    found = [f"{label} ({how}) in {path}" for path in files for label, secret in secrets.items()
             for how in leaks(secret, path.read_bytes())]
    assert not found, "private key material stored in clear:\n" + "\n".join(found)

    c.start()
    kv.reconnect()
    cek = os.urandom(32)
    oct_id = f"{kv.url}keys/{oct_key.name}/{oct_key.properties.version}"  # the port changed
    wrapped_cek = kv.crypto(oct_id, remote_only=True).wrap_key("A256KW", cek).encrypted_key
    assert wrapped_cek == aes_key_wrap(k, cek), "the key material itself survived"
    wrapped = rsa_private.public_key().encrypt(cek, oaep("RSA-OAEP"))
    rsa_id = f"{kv.url}keys/{rsa_key.name}/{rsa_key.properties.version}"
    assert kv.crypto(rsa_id).unwrap_key("RSA-OAEP", wrapped).key == cek
