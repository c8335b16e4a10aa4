"""Customer-managed keys for storage accounts, end to end with the official SDKs: azure-identity,
azure-mgmt-storage, azure-mgmt-keyvault, azure-keyvault-keys and azure-storage-blob.

The vault is in-process, so revocation, restore and rotation take effect on the very next request:
no test here waits or polls. `properties.encryption.cmkHealth` is Coffer's extension (status, key
version in use, last unwrap, vault calls) and is read through raw ARM requests.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any, Optional

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.storage import models as sm
from azure.storage.blob import BlobServiceClient

from harness import API_SUBSCRIPTION_ALIAS, unique, vault_params

API_STORAGE = "2025-08-01"
ENCRYPTION_USER = "Key Vault Crypto Service Encryption User"
KEY_NOT_FOUND = "KeyVaultEncryptionKeyNotFound"


# ---------------------------------------------------------------- helpers

def account_name() -> str:
    return "cmk" + uuid.uuid4().hex[:18]


def create_account(coffer, rg: str, *, identity: Optional[sm.Identity] = None, encryption: Optional[sm.Encryption] = None,
                   location: str = "eastus", clients=None) -> sm.StorageAccount:
    clients = clients or coffer.mgmt_clients()
    return clients.storage.storage_accounts.begin_create(rg, account_name(), sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location=location, identity=identity,
        encryption=encryption)).result()


def cmk(vault_url: str, key_name: str, version: Optional[str] = None, uai: Optional[str] = None) -> sm.Encryption:
    return sm.Encryption(
        key_source="Microsoft.Keyvault",
        key_vault_properties=sm.KeyVaultProperties(key_name=key_name, key_vault_uri=vault_url, key_version=version),
        encryption_identity=sm.EncryptionIdentity(encryption_user_assigned_identity=uai) if uai else None)


def update(coffer, rg: str, name: str, clients=None, **params: Any) -> sm.StorageAccount:
    clients = clients or coffer.mgmt_clients()
    return clients.storage.storage_accounts.update(rg, name, sm.StorageAccountUpdateParameters(**params))


def raw_account(coffer, account: sm.StorageAccount) -> dict:
    r = coffer.arm("GET", f"{account.id}?api-version={API_STORAGE}")
    assert r.status_code == 200, r.text
    return r.json()


def health(coffer, account: sm.StorageAccount) -> dict:
    return raw_account(coffer, account)["properties"]["encryption"]["cmkHealth"]


def blob_service(coffer, account: sm.StorageAccount) -> BlobServiceClient:
    key = coffer.mgmt_clients().storage.storage_accounts.list_keys(
        account.id.split("/")[4], account.name)["keys"][0].value
    return BlobServiceClient(f"{coffer.endpoints['blob']}/{account.name}",
                             credential={"account_name": account.name, "account_key": key},
                             connection_verify=coffer.ca)


def refused(fn, code: str = KEY_NOT_FOUND) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as e:
        fn()
    assert e.value.status_code == 403, f"{e.value.status_code} {e.value}"
    assert e.value.error_code == code, f"{e.value.error_code} {e.value}"
    return e.value


def arm_refused(fn, code: str) -> HttpResponseError:
    with pytest.raises(HttpResponseError) as e:
        fn()
    assert e.value.status_code == 400, f"{e.value.status_code} {e.value}"
    assert e.value.error and e.value.error.code == code, f"{e.value.error and e.value.error.code}: {e.value.message}"
    return e.value


def protected_vault(coffer, rg: str, location: str = "eastus"):
    """A vault with soft delete and purge protection, and a Crypto Officer principal on it."""
    return coffer.data_vault(rg, role="Key Vault Crypto Officer", purge_protection=True, location=location)


class Blobs:
    """A container with one 1 MiB blob, and the ways to touch it that CMK revocation must cut."""

    def __init__(self, coffer, account: sm.StorageAccount):
        self.svc = blob_service(coffer, account)
        self.container = self.svc.get_container_client(unique("c-").lower())
        self.container.create_container()
        self.data = os.urandom(1024 * 1024)
        self.blob = self.container.get_blob_client("data/one-mebibyte.bin")
        self.blob.upload_blob(self.data)

    def read(self) -> bytes:
        return self.blob.download_blob().readall()

    def assert_intact(self) -> None:
        assert hashlib.sha256(self.read()).digest() == hashlib.sha256(self.data).digest()

    def assert_cut_off(self, code: str = KEY_NOT_FOUND) -> None:
        refused(self.read, code)
        refused(self.blob.get_blob_properties, code)  # HEAD: the code travels in x-ms-error-code
        refused(lambda: self.container.upload_blob(unique("new-"), b"x"), code)
        refused(lambda: self.blob.set_blob_metadata({"a": "b"}), code)
        refused(lambda: list(self.container.list_blobs()), code)


# ---------------------------------------------------------------- the whole flow

def test_cmk_flow_disable_rotate_regrant_switch_back(coffer, rg):
    kv = protected_vault(coffer, rg)
    key = kv.keys.create_rsa_key(unique("cmk-"), size=2048)
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    principal = account.identity.principal_id
    blobs = Blobs(coffer, account)  # written under the platform key first

    assignment = coffer.assign_role(kv.vault.id, ENCRYPTION_USER, principal)
    updated = update(coffer, rg, account.name, encryption=cmk(kv.url, key.name))
    props = updated.encryption.key_vault_properties
    assert updated.encryption.key_source == "Microsoft.Keyvault"
    assert props.current_versioned_key_identifier == key.id  # versioned kid
    assert not props.key_version  # versionless: follows new versions
    assert health(coffer, account)["status"] == "Healthy"
    blobs.assert_intact()  # nothing was re-encrypted: the AEK was only re-wrapped
    blobs.container.upload_blob("under-cmk.txt", b"hello")

    # Disable the key: every data operation is refused at once, with Azure's code.
    kv.keys.update_key_properties(key.name, enabled=False)
    blobs.assert_cut_off()
    h = health(coffer, account)
    assert h["status"] == "KeyDisabled", h
    # A caller with no data role learns nothing of the key's state: it is refused as such.
    nobody = coffer.new_sp(unique("nobody-"))
    outsider = BlobServiceClient(f"{coffer.endpoints['blob']}/{account.name}",
                                 credential=coffer.credential_for(nobody), connection_verify=coffer.ca)
    refused(lambda: list(outsider.get_container_client(blobs.container.container_name).list_blobs()),
            "AuthorizationPermissionMismatch")
    # The operators' view lists it among the accounts whose CMK is not healthy.
    unhealthy = coffer.arm("GET", "/coffer/admin/health").json()["unhealthyCustomerManagedKeys"]
    assert {"storageAccountId": account.id, "status": "KeyDisabled"}.items() <= next(
        u for u in unhealthy if u["storageAccountId"] == account.id).items()
    # Re-enable: the same bytes come back.
    kv.keys.update_key_properties(key.name, enabled=True)
    blobs.assert_intact()
    assert health(coffer, account)["status"] == "Healthy"

    # Rotate: the account moves to the new version (no blob rewritten), reads still work.
    rotated = kv.keys.rotate_key(key.name)
    assert rotated.properties.version != key.properties.version
    now = coffer.mgmt_clients().storage.storage_accounts.get_properties(rg, account.name)
    props = now.encryption.key_vault_properties
    assert props.current_versioned_key_identifier == rotated.id
    assert props.last_key_rotation_timestamp is not None
    assert health(coffer, account)["keyVersionInUse"] == rotated.properties.version
    blobs.assert_intact()
    assert blobs.container.get_blob_client("under-cmk.txt").download_blob().readall() == b"hello"

    # Remove the role assignment: cut off; grant again: back.
    coffer.mgmt_clients().authorization.role_assignments.delete(kv.vault.id, assignment.name)
    blobs.assert_cut_off()
    assert health(coffer, account)["status"] == "AccessDenied"
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, principal)
    blobs.assert_intact()

    # Delete the vault: KeyVaultVaultNotFound; recover it: back.
    mgmt = coffer.mgmt_clients()
    mgmt.keyvault.vaults.delete(rg, kv.name)
    blobs.assert_cut_off("KeyVaultVaultNotFound")
    assert health(coffer, account)["status"] == "VaultNotFound"
    mgmt.keyvault.vaults.begin_create_or_update(
        rg, kv.name, vault_params(coffer.tenant_id, create_mode="recover")).result()
    # Deleting the vault removed the role assignments under it: grant again, and the data is back.
    blobs.assert_cut_off()
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, principal)
    coffer.assign_role(kv.vault.id, "Key Vault Crypto Officer", kv.principal.object_id)
    blobs.assert_intact()

    # Switch back to Microsoft-managed keys: the key no longer matters.
    back = update(coffer, rg, account.name, encryption=sm.Encryption(key_source="Microsoft.Storage"))
    assert back.encryption.key_source == "Microsoft.Storage"
    assert back.encryption.key_vault_properties is None
    kv.keys.update_key_properties(key.name, enabled=False)
    blobs.assert_intact()


def test_deleted_key_is_cut_off_and_recovered_key_restores(coffer, rg):
    kv = protected_vault(coffer, rg)
    key = kv.keys.create_rsa_key(unique("cmk-"), size=3072)
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    update(coffer, rg, account.name, encryption=cmk(kv.url, key.name))
    blobs = Blobs(coffer, account)
    kv.keys.begin_delete_key(key.name).result()
    blobs.assert_cut_off()
    assert health(coffer, account)["status"] == "KeyNotFound"
    kv.keys.begin_recover_deleted_key(key.name).result()
    blobs.assert_intact()


def test_user_assigned_identity_at_creation_pinned_version_and_identity_deletion(coffer, rg):
    kv = protected_vault(coffer, rg)
    key = kv.keys.create_rsa_key(unique("cmk-"), size=2048)
    uai = coffer.create_identity(rg)
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, uai.principal_id)
    identity = sm.Identity(type="UserAssigned", user_assigned_identities={uai.id: {}})
    # A new account may start under a CMK only through a user-assigned identity.
    arm_refused(lambda: create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"),
                                       encryption=cmk(kv.url, key.name)), "KeyVaultAuthenticationFailure")
    account = create_account(coffer, rg, identity=identity,
                             encryption=cmk(kv.url, key.name, key.properties.version, uai=uai.id))
    props = account.encryption.key_vault_properties
    assert props.key_version == key.properties.version
    assert props.current_versioned_key_identifier == key.id
    assert account.encryption.encryption_identity.encryption_user_assigned_identity == uai.id
    blobs = Blobs(coffer, account)
    blobs.assert_intact()

    # Pinned: a new key version is not picked up.
    kv.keys.rotate_key(key.name)
    assert raw_account(coffer, account)["properties"]["encryption"]["keyvaultproperties"][
        "currentVersionedKeyIdentifier"] == key.id
    blobs.assert_intact()

    # The identity is deleted: the account cannot reach its key.
    coffer.mgmt_clients().msi.user_assigned_identities.delete(rg, uai.name)
    blobs.assert_cut_off("KeyVaultAccessTokenCannotBeAcquired")
    assert health(coffer, account)["status"] == "IdentityNotFound"


def test_enabling_is_validated_and_leaves_the_account_unchanged(coffer, rg):
    kv = protected_vault(coffer, rg)
    good = kv.keys.create_rsa_key(unique("ok-"), size=2048)
    bare = create_account(coffer, rg)  # no identity
    arm_refused(lambda: update(coffer, rg, bare.name, encryption=cmk(kv.url, good.name)),
                "KeyVaultAuthenticationFailure")

    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    blobs = Blobs(coffer, account)
    principal = account.identity.principal_id
    # The identity has no role yet.
    e = arm_refused(lambda: update(coffer, rg, account.name, encryption=cmk(kv.url, good.name)), "KeyVaultAccessDenied")
    assert "Key Vault Crypto Service Encryption User" in e.message
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, principal)

    from datetime import datetime, timedelta, timezone
    now = datetime.now(timezone.utc)
    cases = {
        "KeyVaultKeyNotFound": (kv.url, "no-such-key"),
        "KeyVaultKeyTypeNotSupported": (kv.url, kv.keys.create_ec_key(unique("ec-"), curve="P-256").name),
        "KeyVaultKeyOperationsNotPermitted": (kv.url, kv.keys.create_rsa_key(
            unique("sign-"), size=2048, key_operations=["sign", "verify"]).name),
        "KeyVaultKeyExpired": (kv.url, kv.keys.create_rsa_key(
            unique("old-"), size=2048, expires_on=now - timedelta(days=1)).name),
        "KeyVaultKeyNotYetValid": (kv.url, kv.keys.create_rsa_key(
            unique("later-"), size=2048, not_before=now + timedelta(days=1)).name),
        "KeyVaultKeyDisabled": (kv.url, kv.keys.create_rsa_key(unique("off-"), size=2048, enabled=False).name),
        "KeyVaultVaultNotFound": (kv.url.replace(kv.name, "nosuchvault" + uuid.uuid4().hex[:8]), good.name),
        "InvalidValuesForRequestParameters": ("http://not-https.example", good.name),
    }
    for code, (url, key_name) in cases.items():
        arm_refused(lambda: update(coffer, rg, account.name, encryption=cmk(url, key_name)), code)

    # A vault without purge protection cannot hold a customer-managed key.
    loose = coffer.data_vault(rg, role="Key Vault Crypto Officer", purge_protection=False)
    coffer.assign_role(loose.vault.id, ENCRYPTION_USER, principal)
    loose_key = loose.keys.create_rsa_key(unique("k-"), size=2048)
    arm_refused(lambda: update(coffer, rg, account.name, encryption=cmk(loose.url, loose_key.name)),
                "KeyVaultPolicyError")

    # The same-region rule: a vault in westeurope for an account in eastus.
    far = protected_vault(coffer, rg, location="westeurope")
    coffer.assign_role(far.vault.id, ENCRYPTION_USER, principal)
    far_key = far.keys.create_rsa_key(unique("far-"), size=2048)
    e = arm_refused(lambda: update(coffer, rg, account.name, encryption=cmk(far.url, far_key.name)),
                    "KeyVaultRegionMismatch")
    assert "westeurope" in e.message and "eastus" in e.message

    # Nothing changed: still Microsoft-managed keys, data intact.
    still = coffer.mgmt_clients().storage.storage_accounts.get_properties(rg, account.name)
    assert still.encryption.key_source == "Microsoft.Storage"
    assert still.encryption.key_vault_properties is None
    blobs.assert_intact()
    # And the good key works.
    assert update(coffer, rg, account.name, encryption=cmk(kv.url, good.name)).encryption.key_source == \
        "Microsoft.Keyvault"
    blobs.assert_intact()


def test_vault_in_another_subscription_of_the_tenant(coffer, rg):
    r = coffer.arm("PUT", f"/providers/Microsoft.Subscription/aliases/{unique('cmk-')}?api-version="
                          f"{API_SUBSCRIPTION_ALIAS}", json={"properties": {"displayName": "keys", "workload": "Production"}})
    assert r.status_code in (200, 201), r.text
    other = r.json()["properties"]["subscriptionId"]
    other_clients = coffer.mgmt_clients(subscription_id=other)
    other_rg = coffer.create_rg(other_clients)
    vault = coffer.create_vault(other_rg, clients=other_clients, purge_protection=True, retention_days=7)
    officer = coffer.new_sp(unique("officer-"))
    coffer.assign_role(vault.id, "Key Vault Crypto Officer", officer.object_id, clients=other_clients)
    keys = coffer.key_client(vault.properties.vault_uri, coffer.credential_for(officer))
    key = keys.create_rsa_key(unique("x-"), size=2048)

    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    coffer.assign_role(vault.id, ENCRYPTION_USER, account.identity.principal_id, clients=other_clients)
    blobs = Blobs(coffer, account)
    updated = update(coffer, rg, account.name, encryption=cmk(vault.properties.vault_uri, key.name))
    assert updated.encryption.key_vault_properties.current_versioned_key_identifier == key.id
    blobs.assert_intact()


def test_steady_state_reads_make_no_vault_calls(coffer, rg):
    kv = protected_vault(coffer, rg)
    key = kv.keys.create_rsa_key(unique("cmk-"), size=2048)
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    update(coffer, rg, account.name, encryption=cmk(kv.url, key.name))
    blob = blob_service(coffer, account).get_container_client(unique("c-").lower())
    blob.create_container()
    client = blob.get_blob_client("small")
    client.upload_blob(b"steady state")
    assert client.download_blob().readall() == b"steady state"  # warm
    before = health(coffer, account)["vaultCalls"]
    for _ in range(1000):
        assert client.download_blob().readall() == b"steady state"
    assert health(coffer, account)["vaultCalls"] == before


def test_vault_lists_the_accounts_that_depend_on_a_key(coffer, rg):
    kv = protected_vault(coffer, rg)
    key = kv.keys.create_rsa_key(unique("cmk-"), size=2048)
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    update(coffer, rg, account.name, encryption=cmk(kv.url, key.name))
    r = kv.raw("GET", f"/keys/{key.name}/dependents")
    assert r.status_code == 200, r.text
    deps = r.json()["value"]
    assert [d["storageAccountId"] for d in deps] == [account.id]
    assert deps[0]["keyVersion"] == key.properties.version
    assert deps[0]["followsNewVersions"] is True
    assert deps[0]["status"] == "Healthy"


def test_purged_key_shreds_the_data(coffer_clock):
    c = coffer_clock
    rg = c.create_rg()
    kv = protected_vault(c, rg)  # soft-delete retention: 7 days
    key = kv.keys.create_rsa_key(unique("cmk-"), size=2048)
    account = create_account(c, rg, identity=sm.Identity(type="SystemAssigned"))
    c.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    update(c, rg, account.name, encryption=cmk(kv.url, key.name))
    # Bearer tokens (not Shared Key, whose x-ms-date would be stale after the clock jump).
    reader = c.new_sp(unique("reader-"))
    c.assign_role(account.id, "ba92f5b4-2d11-453d-a403-e96b0029c9fe", reader.object_id)  # Storage Blob Data Contributor

    def container():
        svc = BlobServiceClient(f"{c.endpoints['blob']}/{account.name}", credential=c.credential_for(reader),
                                connection_verify=c.ca)
        return svc.get_container_client("shred")

    container().create_container()
    container().upload_blob("b", b"gone forever")
    kv.keys.begin_delete_key(key.name).result()
    c.advance_clock(8 * 86400)  # past the retention: the scheduler purges the key
    refused(lambda: container().get_blob_client("b").download_blob().readall())
    assert health(c, account)["status"] == "KeyNotFound"
    kv.reconnect()
    with pytest.raises(HttpResponseError) as e:
        kv.keys.get_deleted_key(key.name)
    assert e.value.status_code == 404  # nothing left to recover: the data is crypto-shredded


def test_cmk_survives_a_restart_on_new_ports(coffer_private):
    c = coffer_private
    rg = c.create_rg()
    kv = protected_vault(c, rg)
    key = kv.keys.create_rsa_key(unique("cmk-"), size=2048)
    account = create_account(c, rg, identity=sm.Identity(type="SystemAssigned"))
    c.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    update(c, rg, account.name, encryption=cmk(kv.url, key.name))
    blobs = Blobs(c, account)
    assert c.stop() == 0
    c.start()  # on port 0 again: the listeners usually get new ports
    # The key URI the account stored names the old port: it is still this server's vault.
    after = Blobs.__new__(Blobs)
    after.svc = blob_service(c, account)
    after.container = after.svc.get_container_client(blobs.container.container_name)
    after.blob = after.container.get_blob_client(blobs.blob.blob_name)
    after.data = blobs.data
    after.assert_intact()
    assert health(c, account)["status"] == "Healthy"
    kv.reconnect()
    kv.keys.update_key_properties(key.name, enabled=False)
    after.assert_cut_off()
