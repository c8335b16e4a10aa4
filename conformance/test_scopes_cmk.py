"""Encryption scopes under their own customer-managed key (source Microsoft.KeyVault), with
azure-mgmt-storage, azure-keyvault-keys and azure-storage-blob.

Each scope's key is wrapped by its own key in a vault, as the account's key is by the account's:
disabling a scope's key cuts off that scope's blobs and nothing else; rotating it re-wraps only
that scope. The vault is in-process, so every change takes effect on the next request.
"""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.storage import models as sm

from harness import unique
from test_cmk import (ENCRYPTION_USER, arm_refused, blob_service, cmk, create_account,
                      protected_vault, refused, update)

API_STORAGE = "2023-05-01"


def scopes(coffer):
    return coffer.mgmt_clients().storage.encryption_scopes


def kv_scope(key_uri: str) -> sm.EncryptionScope:
    return sm.EncryptionScope(source="Microsoft.KeyVault",
                              key_vault_properties=sm.EncryptionScopeKeyVaultProperties(key_uri=key_uri))


def versionless(kv, key) -> str:
    return f"{kv.url.rstrip('/')}/keys/{key.name}"


def raw_scope(coffer, scope_id: str) -> dict:
    r = coffer.arm("GET", f"{scope_id}?api-version={API_STORAGE}")
    assert r.status_code == 200, r.text
    return r.json()


def stored_wrapped(coffer, resource_id: str) -> str:
    """The wrapped (or sealed) key a resource keeps in the metadata store, read from the data dir."""
    db = sqlite3.connect(f"file:{coffer.data_dir / 'coffer.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT data FROM resources WHERE lower(id) = lower(?)", (resource_id,)).fetchone()
    finally:
        db.close()
    assert row is not None, resource_id
    aek = json.loads(row[0])["body"]["_aek"]
    return aek.get("wrapped") or aek["sealed"]


def test_scope_cmk_disable_rotate_only_that_scope(coffer, rg):
    kv = protected_vault(coffer, rg)
    k_acct = kv.keys.create_rsa_key(unique("acct-"), size=2048)
    k_s1 = kv.keys.create_rsa_key(unique("s1-"), size=2048)
    k_s2 = kv.keys.create_rsa_key(unique("s2-"), size=3072)
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    account = update(coffer, rg, account.name, encryption=cmk(kv.url, k_acct.name))
    s1, s2, sp = unique("s1-").lower(), unique("s2-").lower(), unique("sp-").lower()

    # s1 follows new versions of its key (versionless URI); s2 is pinned to one version.
    c1 = scopes(coffer).put(rg, account.name, s1, kv_scope(versionless(kv, k_s1)))
    assert c1.source == "Microsoft.KeyVault" and c1.state == "Enabled"
    assert c1.key_vault_properties.key_uri == versionless(kv, k_s1)
    assert c1.key_vault_properties.current_versioned_key_identifier == k_s1.id
    c2 = scopes(coffer).put(rg, account.name, s2, kv_scope(k_s2.id))
    assert c2.key_vault_properties.key_uri == k_s2.id
    assert c2.key_vault_properties.current_versioned_key_identifier == k_s2.id
    scopes(coffer).put(rg, account.name, sp, sm.EncryptionScope(source="Microsoft.Storage"))
    got = scopes(coffer).get(rg, account.name, s1)
    assert got.source == "Microsoft.KeyVault" and got.key_vault_properties.current_versioned_key_identifier == k_s1.id
    assert raw_scope(coffer, c1.id)["properties"]["cmkHealth"]["status"] in ("Healthy", "Unknown")

    cc = blob_service(coffer, account).get_container_client(unique("c-").lower())
    cc.create_container()
    data = {name: os.urandom(200_000) for name in ("in-s1", "in-s2", "in-sp", "plain")}
    blobs = {name: cc.get_blob_client(name) for name in data}
    for name, scope in (("in-s1", s1), ("in-s2", s2), ("in-sp", sp), ("plain", None)):
        blobs[name].upload_blob(data[name], encryption_scope=scope)
    assert blobs["in-s1"].get_blob_properties().encryption_scope == s1

    def intact(*names):
        for n in names:
            assert blobs[n].download_blob().readall() == data[n], n

    intact(*data)

    # Disable s1's key: s1's blobs are refused with the account's codes; everything else works.
    kv.keys.update_key_properties(k_s1.name, enabled=False)
    refused(lambda: blobs["in-s1"].download_blob().readall())
    refused(blobs["in-s1"].get_blob_properties)
    refused(lambda: blobs["in-s1"].set_blob_metadata({"a": "b"}))
    refused(lambda: cc.upload_blob("new-in-s1", b"x", encryption_scope=s1))
    intact("in-s2", "in-sp", "plain")
    cc.upload_blob("new-plain", b"still writable")
    cc.upload_blob("new-in-s2", b"still writable", encryption_scope=s2)
    assert raw_scope(coffer, c1.id)["properties"]["cmkHealth"]["status"] == "KeyDisabled"
    unhealthy = coffer.arm("GET", "/coffer/admin/health").json()["unhealthyCustomerManagedKeys"]
    assert any(u["storageAccountId"] == account.id and u.get("encryptionScope") == s1 for u in unhealthy), unhealthy
    # Re-enable: the same bytes.
    kv.keys.update_key_properties(k_s1.name, enabled=True)
    intact(*data)
    assert raw_scope(coffer, c1.id)["properties"]["cmkHealth"]["status"] == "Healthy"

    # Rotate s1's key: only s1's wrapped key moves.
    ids = {"acct": account.id, "s1": c1.id, "s2": c2.id, "sp": f"{account.id}/encryptionScopes/{sp}"}
    before = {k: stored_wrapped(coffer, v) for k, v in ids.items()}
    rotated = kv.keys.rotate_key(k_s1.name)
    now = scopes(coffer).get(rg, account.name, s1)
    assert now.key_vault_properties.current_versioned_key_identifier == rotated.id
    assert now.key_vault_properties.last_key_rotation_timestamp is not None
    after = {k: stored_wrapped(coffer, v) for k, v in ids.items()}
    assert after["s1"] != before["s1"]
    assert {k: after[k] for k in ("acct", "s2", "sp")} == {k: before[k] for k in ("acct", "s2", "sp")}
    assert scopes(coffer).get(rg, account.name, s2).key_vault_properties.current_versioned_key_identifier == k_s2.id
    acct_now = coffer.mgmt_clients().storage.storage_accounts.get_properties(rg, account.name)
    assert acct_now.encryption.key_vault_properties.current_versioned_key_identifier == k_acct.id
    intact(*data)

    # A pinned scope does not follow a new version of its key.
    kv.keys.rotate_key(k_s2.name)
    assert scopes(coffer).get(rg, account.name, s2).key_vault_properties.current_versioned_key_identifier == k_s2.id
    assert stored_wrapped(coffer, c2.id) == before["s2"]
    intact(*data)

    # The vault lists the scope among the dependents of its key.
    deps = kv.raw("GET", f"/keys/{k_s1.name}/dependents").json()["value"]
    assert [(d["storageAccountId"], d.get("encryptionScope")) for d in deps] == [(account.id, s1)]

    # Disabling the account's key cuts off everything, scopes included (metadata is under it).
    kv.keys.update_key_properties(k_acct.name, enabled=False)
    refused(lambda: blobs["plain"].download_blob().readall())
    kv.keys.update_key_properties(k_acct.name, enabled=True)
    intact(*data)

    # Back to Microsoft-managed keys for s1: its key no longer matters.
    back = scopes(coffer).patch(rg, account.name, s1, sm.EncryptionScope(source="Microsoft.Storage"))
    assert back.source == "Microsoft.Storage" and back.key_vault_properties is None
    kv.keys.update_key_properties(k_s1.name, enabled=False)
    intact(*data)
    # ... and to a customer-managed key again (an existing scope can change its key).
    kv.keys.update_key_properties(k_s1.name, enabled=True)
    again = scopes(coffer).patch(rg, account.name, s1, kv_scope(versionless(kv, k_s1)))
    assert again.key_vault_properties.current_versioned_key_identifier == rotated.id
    intact(*data)


def test_scope_cmk_validation(coffer, rg):
    kv = protected_vault(coffer, rg)
    good = kv.keys.create_rsa_key(unique("ok-"), size=2048)
    bare = create_account(coffer, rg)  # no managed identity
    arm_refused(lambda: scopes(coffer).put(rg, bare.name, unique("s-").lower(), kv_scope(versionless(kv, good))),
                "KeyVaultAuthenticationFailure")

    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    name = unique("s-").lower()
    # The account's identity has no role on the vault yet.
    e = arm_refused(lambda: scopes(coffer).put(rg, account.name, name, kv_scope(versionless(kv, good))),
                    "KeyVaultAccessDenied")
    assert ENCRYPTION_USER in e.message
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    cases = {
        "KeyVaultKeyNotFound": f"{kv.url.rstrip('/')}/keys/no-such-key",
        "KeyVaultKeyTypeNotSupported": versionless(kv, kv.keys.create_ec_key(unique("ec-"), curve="P-256")),
        "KeyVaultKeyOperationsNotPermitted": versionless(kv, kv.keys.create_rsa_key(
            unique("sign-"), size=2048, key_operations=["sign", "verify"])),
        "KeyVaultKeyDisabled": versionless(kv, kv.keys.create_rsa_key(unique("off-"), size=2048, enabled=False)),
        "InvalidValuesForRequestParameters": "https://not-a-key-uri.example/secrets/x",
    }
    for code, uri in cases.items():
        arm_refused(lambda: scopes(coffer).put(rg, account.name, name, kv_scope(uri)), code)
    # keyVaultProperties is required with source Microsoft.KeyVault.
    arm_refused(lambda: scopes(coffer).put(rg, account.name, name, sm.EncryptionScope(source="Microsoft.KeyVault")),
                "InvalidValuesForRequestParameters")
    loose = coffer.data_vault(rg, role="Key Vault Crypto Officer", purge_protection=False)
    coffer.assign_role(loose.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    arm_refused(lambda: scopes(coffer).put(rg, account.name, name, kv_scope(
        versionless(loose, loose.keys.create_rsa_key(unique("k-"), size=2048)))), "KeyVaultPolicyError")
    far = protected_vault(coffer, rg, location="westeurope")
    coffer.assign_role(far.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    arm_refused(lambda: scopes(coffer).put(rg, account.name, name, kv_scope(
        versionless(far, far.keys.create_rsa_key(unique("far-"), size=2048)))), "KeyVaultRegionMismatch")
    # None of these created the scope.
    with pytest.raises(HttpResponseError) as e:
        scopes(coffer).get(rg, account.name, name)
    assert e.value.status_code == 404
    # The good key works, and a blob in the scope round-trips.
    assert scopes(coffer).put(rg, account.name, name, kv_scope(versionless(kv, good))).source == "Microsoft.KeyVault"
    cc = blob_service(coffer, account).get_container_client(unique("c-").lower())
    cc.create_container()
    cc.upload_blob("b", b"scoped", encryption_scope=name)
    assert cc.get_blob_client("b").download_blob().readall() == b"scoped"


def test_deleting_an_account_deletes_its_scopes(coffer, rg):
    kv = protected_vault(coffer, rg)
    key = kv.keys.create_rsa_key(unique("k-"), size=2048)
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    s_kv, s_pl = unique("kv-").lower(), unique("pl-").lower()
    scopes(coffer).put(rg, account.name, s_kv, kv_scope(versionless(kv, key)))
    scopes(coffer).put(rg, account.name, s_pl, sm.EncryptionScope(source="Microsoft.Storage"))
    storage = coffer.mgmt_clients().storage
    storage.storage_accounts.delete(rg, account.name)
    # The vault no longer lists the scope as a dependent of its key.
    assert kv.raw("GET", f"/keys/{key.name}/dependents").json()["value"] == []
    # A new account with the same name starts without scopes.
    storage.storage_accounts.begin_create(rg, account.name, sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")).result()
    assert list(scopes(coffer).list(rg, account.name)) == []
    for name in (s_kv, s_pl):
        with pytest.raises(HttpResponseError) as e:
            scopes(coffer).get(rg, account.name, name)
        assert e.value.status_code == 404


def test_an_identity_a_key_uses_cannot_be_detached(coffer, rg):
    """Detaching the identity a customer-managed key reaches its vault with would leave the key
    in use as an identity the account no longer has: refused, for the account and its scopes."""
    kv = protected_vault(coffer, rg)
    key = kv.keys.create_rsa_key(unique("k-"), size=2048)
    uai = coffer.create_identity(rg)
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, uai.principal_id)
    both = sm.Identity(type="SystemAssigned,UserAssigned", user_assigned_identities={uai.id: {}})
    account = create_account(coffer, rg, identity=both)
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    update(coffer, rg, account.name, encryption=cmk(kv.url, key.name, uai=uai.id))
    system_only = sm.Identity(type="SystemAssigned")
    e = arm_refused(lambda: update(coffer, rg, account.name, identity=system_only), "BadRequest")
    assert "customer-managed key" in e.message
    # A scope set up now reaches the vault as the same user-assigned identity.
    name = unique("s-").lower()
    scopes(coffer).put(rg, account.name, name, kv_scope(versionless(kv, key)))
    # The account goes back to Microsoft-managed keys; the scope still uses the identity.
    update(coffer, rg, account.name, encryption=sm.Encryption(key_source="Microsoft.Storage"))
    e = arm_refused(lambda: update(coffer, rg, account.name, identity=system_only), "BadRequest")
    assert f"encryption scope '{name}'" in e.message
    # Dropping the system-assigned identity, which nothing uses, is fine.
    after = update(coffer, rg, account.name,
                   identity=sm.Identity(type="UserAssigned", user_assigned_identities={uai.id: {}}))
    assert after.identity.type == "UserAssigned"
    # Once the scope is on Microsoft-managed keys, the identity can go.
    scopes(coffer).patch(rg, account.name, name, sm.EncryptionScope(source="Microsoft.Storage"))
    update(coffer, rg, account.name, identity=sm.Identity(type="None"))
