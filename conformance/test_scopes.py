"""Encryption scopes (platform-managed keys) with azure-mgmt-storage and azure-storage-blob:
blobs written in a scope have their DEKs wrapped by the scope's own key; a container can set a
default scope and deny overriding it; a disabled scope refuses its blobs and only them."""

from __future__ import annotations

import os

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.storage import models as sm
from azure.storage.blob import BlobServiceClient, ContainerEncryptionScope

from harness import unique
from test_blob_basic import _client, account  # noqa: F401  (fixture)


def scopes(coffer):
    return coffer.mgmt_clients().storage.encryption_scopes


def make_scope(coffer, account, name: str) -> sm.EncryptionScope:
    return scopes(coffer).put(account["rg"], account["name"], name,
                              sm.EncryptionScope(source="Microsoft.Storage", state="Enabled"))


def test_scopes_default_scope_override_and_disable(coffer, account):
    s1, s2 = unique("s1-").lower(), unique("s2-").lower()
    created = make_scope(coffer, account, s1)
    assert created.name == s1 and created.source == "Microsoft.Storage" and created.state == "Enabled"
    make_scope(coffer, account, s2)
    assert {s.name for s in scopes(coffer).list(account["rg"], account["name"])} >= {s1, s2}
    assert scopes(coffer).get(account["rg"], account["name"], s1).id == created.id

    svc = _client(coffer, account)
    cc = svc.create_container(unique("sc-").lower())
    data = os.urandom(100_000)
    blob = cc.get_blob_client("in-s1")
    r = blob.upload_blob(data, encryption_scope=s1)
    assert r["encryption_scope"] == s1
    assert blob.get_blob_properties().encryption_scope == s1
    assert blob.download_blob().readall() == data
    # Staged upload in a scope.
    staged = BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                               credential={"account_name": account["name"], "account_key": account["key"]},
                               connection_verify=coffer.ca, max_single_put_size=16 * 1024, max_block_size=16 * 1024)
    sblob = staged.get_blob_client(cc.container_name, "staged-s2")
    sblob.upload_blob(data, encryption_scope=s2)
    assert sblob.get_blob_properties().encryption_scope == s2
    assert sblob.download_blob().readall() == data
    plain = cc.get_blob_client("plain")
    plain.upload_blob(b"account key")
    assert plain.get_blob_properties().encryption_scope is None

    # A container whose default scope may not be overridden.
    locked = svc.create_container(unique("lk-").lower(), container_encryption_scope=ContainerEncryptionScope(
        default_encryption_scope=s1, prevent_encryption_scope_override=True))
    props = locked.get_container_properties()
    assert props.encryption_scope.default_encryption_scope == s1
    assert props.encryption_scope.prevent_encryption_scope_override is True
    locked.upload_blob("defaulted", b"x")
    assert locked.get_blob_client("defaulted").get_blob_properties().encryption_scope == s1
    with pytest.raises(HttpResponseError) as e:
        locked.upload_blob("other", b"x", encryption_scope=s2)
    assert e.value.status_code == 409
    # ... and one that allows it.
    open_ = svc.create_container(unique("op-").lower(), container_encryption_scope=ContainerEncryptionScope(
        default_encryption_scope=s1, prevent_encryption_scope_override=False))
    open_.upload_blob("other", b"x", encryption_scope=s2)
    assert open_.get_blob_client("other").get_blob_properties().encryption_scope == s2

    # Disable s1: its blobs are refused, the others are not.
    scopes(coffer).patch(account["rg"], account["name"], s1, sm.EncryptionScope(state="Disabled"))
    for fn in (lambda: blob.download_blob().readall(), blob.get_blob_properties,
               lambda: cc.upload_blob("new", b"x", encryption_scope=s1)):
        with pytest.raises(HttpResponseError) as e:
            fn()
        assert e.value.status_code == 403 and e.value.error_code == "EncryptionScopeDisabled"
    assert sblob.download_blob().readall() == data
    assert plain.download_blob().readall() == b"account key"
    scopes(coffer).patch(account["rg"], account["name"], s1, sm.EncryptionScope(state="Enabled"))
    assert blob.download_blob().readall() == data


def test_scope_validation(coffer, account):
    with pytest.raises(HttpResponseError) as e:
        scopes(coffer).put(account["rg"], account["name"], unique("kv-").lower(), sm.EncryptionScope(
            source="Microsoft.KeyVault",
            key_vault_properties=sm.EncryptionScopeKeyVaultProperties(key_uri="https://v.vault.coffer.internal/keys/k")))
    # A key of its own needs the account's managed identity (this account has none); the full
    # customer-managed-key flow of scopes is in test_scopes_cmk.py.
    assert e.value.status_code == 400 and e.value.error.code == "KeyVaultAuthenticationFailure"
    with pytest.raises(HttpResponseError) as e:
        scopes(coffer).put(account["rg"], account["name"], "x", sm.EncryptionScope(source="Microsoft.Storage"))
    assert e.value.status_code == 400
    cc = _client(coffer, account).create_container(unique("v-").lower())
    with pytest.raises(HttpResponseError) as e:
        cc.upload_blob("b", b"x", encryption_scope="no-such-scope")
    assert e.value.status_code == 400


def test_scope_names_are_case_insensitive_across_stage_and_commit(coffer, account):
    name = unique("cs").lower()
    make_scope(coffer, account, name)
    cc = _client(coffer, account).create_container(unique("c-").lower())
    blob = cc.get_blob_client("staged")
    blob.stage_block("YmxvY2sx", b"abc", encryption_scope=name.upper())
    blob.commit_block_list(["YmxvY2sx"], encryption_scope=name)
    assert blob.download_blob().readall() == b"abc"
    assert blob.get_blob_properties().encryption_scope.lower() == name
