"""Regression tests for findings of the security review (each names what it protects)."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.keyvault import models as kvm
from azure.mgmt.storage import models as sm
from azure.storage.blob import BlobServiceClient

from harness import API_KEYVAULT, API_SUBSCRIPTION_ALIAS, unique, vault_params


def _storage(coffer, cred=None, subscription_id=None):
    from azure.mgmt.storage import StorageManagementClient
    return StorageManagementClient(cred or coffer.credential(), subscription_id or coffer.subscription_id,
                                   base_url=coffer.management,
                                   credential_scopes=["https://management.core.windows.net//.default"],
                                   connection_verify=coffer.ca)


def test_a_deleted_vault_can_only_be_recovered_by_its_own_id(coffer, admin, rg):
    """Recovering under another group (or subscription) must not adopt the vault and its keys."""
    name = unique("kv", 16)
    admin.keyvault.vaults.begin_create_or_update(rg, name, vault_params(coffer.tenant_id)).result()
    admin.keyvault.vaults.delete(rg, name)
    other_rg = coffer.create_rg()
    r = coffer.arm("PUT", f"/subscriptions/{coffer.subscription_id}/resourceGroups/{other_rg}/providers/"
                          f"Microsoft.KeyVault/vaults/{name}?api-version={API_KEYVAULT}",
                   json={"location": "eastus", "properties": {"tenantId": coffer.tenant_id, "createMode": "recover",
                                                              "sku": {"family": "A", "name": "standard"}}})
    assert r.status_code == 409, r.text
    # The rightful owner still can.
    recovered = admin.keyvault.vaults.begin_create_or_update(
        rg, name, vault_params(coffer.tenant_id, create_mode="recover")).result()
    assert recovered.name == name


def test_attaching_a_user_assigned_identity_needs_assign_rights(coffer, rg):
    """A principal may not attach (and later act as) an identity it has no rights on."""
    identity = coffer.create_identity(rg)
    attacker = coffer.new_sp()
    attacker_rg = coffer.create_rg()
    coffer.assign_role(coffer.rg_scope(attacker_rg), "Contributor", attacker.object_id)
    st = _storage(coffer, coffer.credential_for(attacker))
    with pytest.raises(HttpResponseError) as info:
        st.storage_accounts.begin_create(attacker_rg, "acc" + uuid.uuid4().hex[:12], sm.StorageAccountCreateParameters(
            sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus",
            identity=sm.Identity(type="UserAssigned", user_assigned_identities={identity.id: sm.UserAssignedIdentity()}))).result()
    assert info.value.status_code == 400
    assert identity.principal_id not in str(info.value)


def test_shared_key_can_be_disabled(coffer, rg):
    name = "acc" + uuid.uuid4().hex[:12]
    st = _storage(coffer)
    st.storage_accounts.begin_create(rg, name, sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus", allow_shared_key_access=False)).result()
    key = st.storage_accounts.list_keys(rg, name)["keys"][0].value
    svc = BlobServiceClient(f"{coffer.endpoints['blob']}/{name}", credential={"account_name": name, "account_key": key},
                            connection_verify=coffer.ca)
    with pytest.raises(HttpResponseError) as info:
        svc.create_container("nope")
    assert info.value.status_code == 403
    assert info.value.error_code == "KeyBasedAuthenticationNotPermitted"


def test_network_rules_that_are_not_enforced_are_refused(coffer, rg):
    with pytest.raises(HttpResponseError) as info:
        _storage(coffer).storage_accounts.begin_create(rg, "acc" + uuid.uuid4().hex[:12], sm.StorageAccountCreateParameters(
            sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus",
            network_rule_set=sm.NetworkRuleSet(default_action="Deny"))).result()
    assert info.value.status_code == 400


def test_a_recreated_account_does_not_inherit_the_old_blob_index(coffer, rg):
    name = "acc" + uuid.uuid4().hex[:12]
    st = _storage(coffer)
    params = sm.StorageAccountCreateParameters(sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")
    st.storage_accounts.begin_create(rg, name, params).result()
    key = st.storage_accounts.list_keys(rg, name)["keys"][0].value
    svc = BlobServiceClient(f"{coffer.endpoints['blob']}/{name}", credential={"account_name": name, "account_key": key},
                            connection_verify=coffer.ca)
    svc.create_container("secret-names").upload_blob("salaries-2026.xlsx", b"x")
    st.storage_accounts.delete(rg, name)
    st.storage_accounts.begin_create(rg, name, params).result()
    key = st.storage_accounts.list_keys(rg, name)["keys"][0].value
    svc = BlobServiceClient(f"{coffer.endpoints['blob']}/{name}", credential={"account_name": name, "account_key": key},
                            connection_verify=coffer.ca)
    assert [c.name for c in svc.list_containers()] == []


def test_shared_key_without_a_fresh_date_is_refused(coffer, rg):
    """A signed request is bound to its time: no date (or a stale one) is refused."""
    import hashlib, hmac, email.utils, time, requests
    name = "acc" + uuid.uuid4().hex[:12]
    st = _storage(coffer)
    st.storage_accounts.begin_create(rg, name, sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")).result()
    key = base64.b64decode(st.storage_accounts.list_keys(rg, name)["keys"][0].value)

    def signed(date_header):
        headers = {"x-ms-version": "2025-11-05"}
        if date_header:
            headers["x-ms-date"] = date_header
        xms = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
        sts = "GET\n" + "\n" * 11 + xms + f"/{name}/{name}\ncomp:list"
        sig = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
        headers["Authorization"] = f"SharedKey {name}:{sig}"
        return requests.get(f"{coffer.endpoints['blob']}/{name}?comp=list", headers=headers, verify=coffer.ca)

    assert signed(email.utils.formatdate(usegmt=True)).status_code == 200
    assert signed(None).status_code == 403
    assert signed(email.utils.formatdate(time.time() - 3600, usegmt=True)).status_code == 403


def test_storage_account_name_conflicts_use_azure_codes(coffer, rg):
    """A taken name is 409 StorageAccountAlreadyTaken; checkNameAvailability needs the type."""
    name = "acc" + uuid.uuid4().hex[:12]
    st = _storage(coffer)
    params = sm.StorageAccountCreateParameters(sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")
    st.storage_accounts.begin_create(rg, name, params).result()
    with pytest.raises(HttpResponseError) as info:
        st.storage_accounts.begin_create(coffer.create_rg(), name, params).result()
    assert info.value.status_code == 409
    assert info.value.error.code == "StorageAccountAlreadyTaken"
    path = f"/subscriptions/{coffer.subscription_id}/providers/Microsoft.Storage/checkNameAvailability?api-version=2025-08-01"
    assert coffer.arm("POST", path, json={"name": name}).status_code == 400
    assert coffer.arm("POST", path, json={"name": name, "type": "Microsoft.Foo/bars"}).status_code == 400
    r = coffer.arm("POST", path, json={"name": name, "type": "Microsoft.Storage/storageAccounts"})
    assert r.status_code == 200 and r.json()["nameAvailable"] is False
