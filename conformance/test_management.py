"""Management plane through the official SDKs: subscriptions, resource groups, vaults, identities."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.keyvault import models as kvm

from harness import (
    API_SUBSCRIPTION_ALIAS, ROLE_IDS, decode_jwt, expect_error, is_uuid, unique, vault_params,
)

QUICK_S = 10  # an LRO the server finishes synchronously (or with Retry-After: 0|1) ends well within this


def _statuses():
    """A raw_response_hook collecting the HTTP status of every response of one SDK call."""
    seen: list[int] = []
    return seen, (lambda response: seen.append(response.http_response.status_code))


# ---------------------------------------------------------------- subscriptions

def test_subscription_list_contains_the_default_subscription(coffer, admin):
    subs = {s.subscription_id: s for s in admin.subscriptions.subscriptions.list()}
    assert coffer.subscription_id in subs
    sub = subs[coffer.subscription_id]
    assert sub.id == f"/subscriptions/{coffer.subscription_id}"
    assert sub.tenant_id == coffer.tenant_id
    assert sub.state == "Enabled"
    assert sub.display_name


def test_subscription_get(coffer, admin):
    sub = admin.subscriptions.subscriptions.get(coffer.subscription_id)
    assert sub.subscription_id == coffer.subscription_id
    assert sub.id == f"/subscriptions/{coffer.subscription_id}"


def test_admin_creates_a_subscription_and_owns_it(coffer):
    alias = unique("alias-")
    r = coffer.arm("PUT", f"/providers/Microsoft.Subscription/aliases/{alias}?api-version={API_SUBSCRIPTION_ALIAS}",
                   json={"properties": {"displayName": "conformance " + alias, "workload": "Production"}})
    assert r.status_code in (200, 201), r.text
    new_sub = r.json()["properties"]["subscriptionId"]
    assert is_uuid(new_sub) and new_sub != coffer.subscription_id

    clients = coffer.mgmt_clients(subscription_id=new_sub)
    assert clients.subscriptions.subscriptions.get(new_sub).subscription_id == new_sub
    rg = coffer.create_rg(clients)
    assert clients.resource.resource_groups.get(rg).id == f"/subscriptions/{new_sub}/resourceGroups/{rg}"
    admin_oid = decode_jwt(coffer.token())[1]["oid"]
    owners = [a for a in clients.authorization.role_assignments.list_for_scope(f"/subscriptions/{new_sub}")
              if a.role_definition_id.lower().endswith(ROLE_IDS["Owner"]) and a.principal_id == admin_oid]
    assert owners, "the creator should hold Owner on the new subscription"


# ---------------------------------------------------------------- resource groups

def test_resource_group_create_then_update(coffer, admin):
    name = unique("rg-")
    seen, hook = _statuses()
    created = admin.resource.resource_groups.create_or_update(name, {"location": "eastus"}, raw_response_hook=hook)
    assert seen == [201]
    assert created.name == name
    assert created.id == f"/subscriptions/{coffer.subscription_id}/resourceGroups/{name}"
    assert created.location == "eastus"
    assert created.properties.provisioning_state == "Succeeded"

    seen, hook = _statuses()
    updated = admin.resource.resource_groups.create_or_update(
        name, {"location": "eastus", "tags": {"team": "coffer"}}, raw_response_hook=hook)
    assert seen == [200]
    assert updated.tags == {"team": "coffer"}
    assert admin.resource.resource_groups.get(name).tags == {"team": "coffer"}


def test_resource_group_list(admin, rg):
    assert rg in {g.name for g in admin.resource.resource_groups.list()}


def test_resource_group_get_missing_is_404(admin):
    expect_error(404, admin.resource.resource_groups.get, unique("rg-missing-"))
    assert admin.resource.resource_groups.check_existence(unique("rg-missing-")) is False


def test_resource_group_delete(admin, rg):
    start = time.monotonic()
    admin.resource.resource_groups.begin_delete(rg).result()
    assert time.monotonic() - start < QUICK_S, "delete must finish without the SDK's 30 s default poll"
    with pytest.raises(ResourceNotFoundError):
        admin.resource.resource_groups.get(rg)
    assert admin.resource.resource_groups.check_existence(rg) is False


def test_resource_group_delete_cascades_to_its_resources(coffer, admin, rg):
    vault = coffer.create_vault(rg)
    identity = coffer.create_identity(rg)
    admin.resource.resource_groups.begin_delete(rg).result()
    with pytest.raises(ResourceNotFoundError):
        admin.keyvault.vaults.get(rg, vault.name)
    with pytest.raises(ResourceNotFoundError):
        admin.msi.user_assigned_identities.get(rg, identity.name)


@pytest.mark.beyond_contract
def test_resource_group_delete_soft_deletes_its_vaults(coffer, admin, rg):
    """As in Azure: a vault removed with its group is soft-deleted, not destroyed."""
    vault = coffer.create_vault(rg)
    admin.resource.resource_groups.begin_delete(rg).result()
    deleted = admin.keyvault.vaults.get_deleted(vault.name, "eastus")
    assert deleted.properties.vault_id.lower() == vault.id.lower()


# ---------------------------------------------------------------- vaults

def test_vault_create(coffer, admin, rg):
    name = unique("kv", 16)
    seen, hook = _statuses()
    start = time.monotonic()
    vault = admin.keyvault.vaults.begin_create_or_update(
        rg, name, vault_params(coffer.tenant_id), raw_response_hook=hook).result()
    assert time.monotonic() - start < QUICK_S
    assert seen and seen[0] in (200, 201)  # 202 is rejected by the SDK
    assert vault.name == name
    assert vault.id == coffer.vault_id(rg, name)
    assert vault.type == "Microsoft.KeyVault/vaults"
    assert vault.location == "eastus"
    p = vault.properties
    assert p.provisioning_state == "Succeeded"
    assert p.vault_uri == f"https://{name}.{coffer.vault_dns_suffix}/"
    assert p.tenant_id == coffer.tenant_id
    assert p.sku.family == "A" and p.sku.name == "standard"
    assert p.enable_rbac_authorization is True
    assert p.enable_soft_delete is True
    assert p.soft_delete_retention_in_days == 7
    assert p.enable_purge_protection is True

    got = admin.keyvault.vaults.get(rg, name)
    assert got.id == vault.id and got.properties.vault_uri == p.vault_uri


def test_vault_put_again_is_an_update(coffer, admin, rg):
    name = coffer.create_vault(rg).name
    seen, hook = _statuses()
    vault = admin.keyvault.vaults.begin_create_or_update(
        rg, name, vault_params(coffer.tenant_id, tags={"env": "test"}), raw_response_hook=hook).result()
    assert seen[0] == 200
    assert vault.tags == {"env": "test"}


def test_vault_in_the_second_region(coffer, admin, rg):
    vault = coffer.create_vault(rg, location="westeurope")
    assert vault.location == "westeurope"
    assert admin.keyvault.vaults.get(rg, vault.name).location == "westeurope"


def test_vault_get_missing_is_404(admin, rg):
    with pytest.raises(ResourceNotFoundError):
        admin.keyvault.vaults.get(rg, unique("kv", 16))


def test_vault_list_by_resource_group(coffer, admin, rg):
    other_rg = coffer.create_rg()
    a, b = coffer.create_vault(rg), coffer.create_vault(rg)
    elsewhere = coffer.create_vault(other_rg)
    names = {v.name for v in admin.keyvault.vaults.list_by_resource_group(rg)}
    assert names == {a.name, b.name}
    assert elsewhere.name not in names


def test_vault_patch_merges(coffer, admin, rg):
    name = coffer.create_vault(rg).name
    seen, hook = _statuses()
    patched = admin.keyvault.vaults.update(rg, name, kvm.VaultPatchParameters(tags={"cost": "0"}),
                                           raw_response_hook=hook)
    assert seen == [200]
    assert patched.tags == {"cost": "0"}
    got = admin.keyvault.vaults.get(rg, name)
    assert got.tags == {"cost": "0"}
    assert got.properties.enable_rbac_authorization is True
    assert got.properties.enable_purge_protection is True
    assert got.properties.soft_delete_retention_in_days == 7
    assert got.properties.vault_uri == f"https://{name}.{coffer.vault_dns_suffix}/"


def test_vault_delete_leaves_a_deleted_vault(coffer, admin, rg):
    vault = coffer.create_vault(rg)
    admin.keyvault.vaults.delete(rg, vault.name)
    with pytest.raises(ResourceNotFoundError):
        admin.keyvault.vaults.get(rg, vault.name)
    assert vault.name not in {v.name for v in admin.keyvault.vaults.list_by_resource_group(rg)}

    deleted = admin.keyvault.vaults.get_deleted(vault.name, "eastus")
    assert deleted.name == vault.name
    assert deleted.properties.vault_id.lower() == vault.id.lower()
    assert deleted.properties.location == "eastus"
    assert deleted.properties.purge_protection_enabled is True
    retention = deleted.properties.scheduled_purge_date - deleted.properties.deletion_date
    assert abs(retention.total_seconds() - 7 * 86400) < 3600
    assert vault.name in {d.name for d in admin.keyvault.vaults.list_deleted()}


def test_vault_recover(coffer, admin, rg):
    vault = coffer.create_vault(rg)
    admin.keyvault.vaults.delete(rg, vault.name)
    recovered = admin.keyvault.vaults.begin_create_or_update(
        rg, vault.name, vault_params(coffer.tenant_id, create_mode="recover")).result()
    assert recovered.id == vault.id
    assert recovered.properties.vault_uri == vault.properties.vault_uri
    assert recovered.properties.enable_purge_protection is True
    assert admin.keyvault.vaults.get(rg, vault.name).properties.provisioning_state == "Succeeded"
    with pytest.raises(ResourceNotFoundError):
        admin.keyvault.vaults.get_deleted(vault.name, "eastus")


def test_purge_a_vault_without_purge_protection(coffer, admin, rg):
    vault = coffer.create_vault(rg, purge_protection=False)
    assert not vault.properties.enable_purge_protection
    admin.keyvault.vaults.delete(rg, vault.name)
    start = time.monotonic()
    admin.keyvault.vaults.begin_purge_deleted(vault.name, "eastus").result()
    assert time.monotonic() - start < QUICK_S
    with pytest.raises(ResourceNotFoundError):
        admin.keyvault.vaults.get_deleted(vault.name, "eastus")
    assert vault.name not in {d.name for d in admin.keyvault.vaults.list_deleted()}
    # The name is free again.
    again = coffer.create_vault(rg, name=vault.name, purge_protection=False)
    assert again.properties.provisioning_state == "Succeeded"


def test_purge_is_refused_under_purge_protection(coffer, admin, rg):
    vault = coffer.create_vault(rg)
    admin.keyvault.vaults.delete(rg, vault.name)
    with pytest.raises(HttpResponseError) as info:
        admin.keyvault.vaults.begin_purge_deleted(vault.name, "eastus").result()
    assert info.value.status_code in (400, 409), f"purge under purge protection must be refused: {info.value}"
    assert admin.keyvault.vaults.get_deleted(vault.name, "eastus").name == vault.name


@pytest.mark.parametrize("days", [6, 91])
def test_vault_retention_out_of_range_is_400(coffer, admin, rg, days):
    expect_error(400, lambda: admin.keyvault.vaults.begin_create_or_update(
        rg, unique("kv", 16), vault_params(coffer.tenant_id, retention_days=days)).result())


def test_vault_purge_protection_cannot_be_disabled(coffer, admin, rg):
    name = coffer.create_vault(rg).name
    patch = kvm.VaultPatchParameters(properties=kvm.VaultPatchProperties(enable_purge_protection=False))
    expect_error(400, admin.keyvault.vaults.update, rg, name, patch)
    assert admin.keyvault.vaults.get(rg, name).properties.enable_purge_protection is True


def test_vault_unknown_location_is_400(coffer, admin, rg):
    name = unique("kv", 16)
    expect_error(400, lambda: admin.keyvault.vaults.begin_create_or_update(
        rg, name, vault_params(coffer.tenant_id, location="mars")).result(),
        code="LocationNotAvailableForResourceType")
    with pytest.raises(ResourceNotFoundError):
        admin.keyvault.vaults.get(rg, name)


@pytest.mark.parametrize("name", [
    "a_b",            # underscore
    "ab",             # shorter than 3
    "k" * 25,         # longer than 24
    "-kvabc",         # must start with a letter
    "kvabc-",         # must end with a letter or digit
    "kv--abc",        # no consecutive hyphens
])
def test_vault_invalid_name_is_400(coffer, admin, rg, name):
    expect_error(400, lambda: admin.keyvault.vaults.begin_create_or_update(
        rg, name, vault_params(coffer.tenant_id)).result())


@pytest.mark.beyond_contract
def test_vault_names_are_globally_unique(coffer, admin, rg):
    """vault_uri is derived from the name alone, so a second vault may not take it (Azure: 409)."""
    name = coffer.create_vault(rg).name
    other_rg = coffer.create_rg()
    expect_error(409, lambda: admin.keyvault.vaults.begin_create_or_update(
        other_rg, name, vault_params(coffer.tenant_id)).result())


# ---------------------------------------------------------------- user-assigned identities

def test_user_assigned_identity_lifecycle(coffer, admin, rg):
    name = unique("id-")
    seen, hook = _statuses()
    identity = admin.msi.user_assigned_identities.create_or_update(rg, name, {"location": "eastus"},
                                                                   raw_response_hook=hook)
    assert seen == [201]
    assert identity.name == name
    assert identity.id == f"{coffer.rg_scope(rg)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    assert identity.type == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert identity.location == "eastus"
    assert identity.tenant_id == coffer.tenant_id
    assert is_uuid(identity.principal_id) and is_uuid(identity.client_id)

    got = admin.msi.user_assigned_identities.get(rg, name)
    assert (got.principal_id, got.client_id) == (identity.principal_id, identity.client_id)
    assert name in {i.name for i in admin.msi.user_assigned_identities.list_by_resource_group(rg)}

    # PUT again: an update that keeps the identity's principal.
    seen, hook = _statuses()
    again = admin.msi.user_assigned_identities.create_or_update(
        rg, name, {"location": "eastus", "tags": {"a": "b"}}, raw_response_hook=hook)
    assert seen == [200]
    assert again.principal_id == identity.principal_id and again.tags == {"a": "b"}

    admin.msi.user_assigned_identities.delete(rg, name)
    with pytest.raises(ResourceNotFoundError):
        admin.msi.user_assigned_identities.get(rg, name)


def test_identities_are_distinct(coffer, rg):
    a, b = coffer.create_identity(rg), coffer.create_identity(rg)
    assert len({a.principal_id, b.principal_id, a.client_id, b.client_id}) == 4
