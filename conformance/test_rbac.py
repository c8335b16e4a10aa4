"""Azure RBAC: built-in role definitions, role assignments, deny-by-default, scope inheritance."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.keyvault import models as kvm

from harness import API_SUBSCRIPTION_ALIAS, ROLE_IDS, assert_arm_error, expect_error, unique, vault_params


def denied(fn, *args, **kwargs):
    """fn must fail with 403 AuthorizationFailed."""
    return expect_error(403, fn, *args, code="AuthorizationFailed", **kwargs)


def _assignment_body(coffer, role, principal_id):
    return {"role_definition_id": coffer.role_definition_id(role), "principal_id": principal_id,
            "principal_type": "ServicePrincipal"}


def _new_vault_call(coffer, clients, rg, name=None):
    return lambda: clients.keyvault.vaults.begin_create_or_update(
        rg, name or unique("kv", 16), vault_params(coffer.tenant_id)).result()


# ---------------------------------------------------------------- role definitions

@pytest.mark.parametrize("role", sorted(ROLE_IDS))
def test_builtin_role_definition_has_the_azure_id(coffer, admin, role):
    found = list(admin.authorization.role_definitions.list(coffer.sub_scope(), filter=f"roleName eq '{role}'"))
    assert len(found) == 1, [d.role_name for d in found]
    definition = found[0]
    assert definition.name == ROLE_IDS[role]
    assert definition.id == coffer.role_definition_id(role)
    assert definition.role_name == role


def test_role_definitions_listed_at_a_vault_scope(coffer, admin, rg):
    vault = coffer.create_vault(rg)
    role = "Key Vault Crypto Service Encryption User"
    found = list(admin.authorization.role_definitions.list(vault.id, filter=f"roleName eq '{role}'"))
    assert [d.id for d in found] == [coffer.role_definition_id(role)]


# ---------------------------------------------------------------- role assignments

def test_role_assignment_lifecycle(coffer, admin, rg, sp):
    scope = coffer.rg_scope(rg)
    name = str(uuid.uuid4())
    created = admin.authorization.role_assignments.create(scope, name, _assignment_body(coffer, "Reader", sp.object_id))
    assert created.name == name
    assert created.id.lower() == f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}".lower()
    assert created.scope.lower() == scope.lower()
    assert created.role_definition_id == coffer.role_definition_id("Reader")
    assert created.principal_id == sp.object_id
    assert created.principal_type == "ServicePrincipal"

    got = admin.authorization.role_assignments.get(scope, name)
    assert (got.id, got.principal_id, got.role_definition_id) == (created.id, sp.object_id, created.role_definition_id)
    assert name in {a.name for a in admin.authorization.role_assignments.list_for_scope(scope)}

    admin.authorization.role_assignments.delete(scope, name)
    with pytest.raises(ResourceNotFoundError):
        admin.authorization.role_assignments.get(scope, name)
    assert name not in {a.name for a in admin.authorization.role_assignments.list_for_scope(scope)}


@pytest.mark.parametrize("scope_kind", ["subscription", "vault"])
def test_role_assignment_at_other_scopes(coffer, admin, rg, sp, scope_kind):
    scope = coffer.sub_scope() if scope_kind == "subscription" else coffer.create_vault(rg).id
    created = coffer.assign_role(scope, "Key Vault Crypto Officer", sp.object_id)
    assert created.scope.lower() == scope.lower()
    assert created.name in {a.name for a in admin.authorization.role_assignments.list_for_scope(scope)}


@pytest.mark.beyond_contract
def test_a_managed_identity_can_be_assigned_a_role(coffer, rg):
    """The CMK flow starts here: the account's identity gets a key role on the vault."""
    vault = coffer.create_vault(rg)
    identity = coffer.create_identity(rg)
    created = coffer.assign_role(vault.id, "Key Vault Crypto Service Encryption User", identity.principal_id)
    assert created.principal_id == identity.principal_id


# ---------------------------------------------------------------- deny by default

def test_a_fresh_principal_cannot_write_anything(coffer, rg, sp):
    mine = coffer.clients_for(sp)
    denied(mine.resource.resource_groups.create_or_update, unique("rg-"), {"location": "eastus"})
    denied(_new_vault_call(coffer, mine, rg))
    denied(mine.msi.user_assigned_identities.create_or_update, rg, unique("id-"), {"location": "eastus"})
    # Not even by granting itself Owner.
    denied(mine.authorization.role_assignments.create, coffer.rg_scope(rg), str(uuid.uuid4()),
           _assignment_body(coffer, "Owner", sp.object_id))


def test_outside_its_scope_a_principal_gets_403_not_404(coffer, rg, sp):
    vault = coffer.create_vault(rg)
    mine = coffer.clients_for(sp)
    denied(mine.resource.resource_groups.get, rg)
    denied(mine.resource.resource_groups.get, unique("rg-missing-"))
    denied(mine.keyvault.vaults.get, rg, vault.name)
    denied(mine.keyvault.vaults.get, rg, unique("kv", 16))


def test_reader_can_read_but_not_write(coffer, admin, rg, sp):
    vault = coffer.create_vault(rg)
    identity = coffer.create_identity(rg)
    coffer.assign_role(coffer.rg_scope(rg), "Reader", sp.object_id)
    mine = coffer.clients_for(sp)

    assert mine.resource.resource_groups.get(rg).name == rg
    assert mine.keyvault.vaults.get(rg, vault.name).id == vault.id
    assert vault.name in {v.name for v in mine.keyvault.vaults.list_by_resource_group(rg)}
    assert mine.msi.user_assigned_identities.get(rg, identity.name).principal_id == identity.principal_id

    denied(_new_vault_call(coffer, mine, rg))
    denied(mine.keyvault.vaults.update, rg, vault.name, kvm.VaultPatchParameters(tags={"x": "y"}))
    denied(mine.keyvault.vaults.delete, rg, vault.name)
    denied(mine.msi.user_assigned_identities.create_or_update, rg, unique("id-"), {"location": "eastus"})
    denied(mine.resource.resource_groups.create_or_update, unique("rg-"), {"location": "eastus"})
    denied(lambda: mine.resource.resource_groups.begin_delete(rg).result())
    denied(mine.authorization.role_assignments.create, coffer.rg_scope(rg), str(uuid.uuid4()),
           _assignment_body(coffer, "Reader", coffer.new_sp().object_id))
    # Nothing changed.
    assert admin.keyvault.vaults.get(rg, vault.name).tags in (None, {})


def test_contributor_creates_vaults_but_cannot_assign_roles(coffer, rg, sp):
    coffer.assign_role(coffer.rg_scope(rg), "Contributor", sp.object_id)
    mine = coffer.clients_for(sp)

    vault = _new_vault_call(coffer, mine, rg)()
    assert vault.properties.provisioning_state == "Succeeded"
    patched = mine.keyvault.vaults.update(rg, vault.name, kvm.VaultPatchParameters(tags={"by": "contributor"}))
    assert patched.tags == {"by": "contributor"}
    identity = mine.msi.user_assigned_identities.create_or_update(rg, unique("id-"), {"location": "eastus"})
    assert identity.principal_id

    denied(mine.authorization.role_assignments.create, vault.id, str(uuid.uuid4()),
           _assignment_body(coffer, "Key Vault Crypto Officer", sp.object_id))


def test_a_group_assignment_does_not_reach_a_sibling_group(coffer, rg, sp):
    sibling = coffer.create_rg()
    sibling_vault = coffer.create_vault(sibling)
    coffer.assign_role(coffer.rg_scope(rg), "Contributor", sp.object_id)
    mine = coffer.clients_for(sp)

    assert _new_vault_call(coffer, mine, rg)().name  # inside its group: allowed
    denied(_new_vault_call(coffer, mine, sibling))
    denied(mine.keyvault.vaults.get, sibling, sibling_vault.name)
    denied(mine.resource.resource_groups.get, sibling)


def test_a_vault_assignment_covers_only_that_vault(coffer, rg, sp):
    mine_vault, other_vault = coffer.create_vault(rg), coffer.create_vault(rg)
    coffer.assign_role(mine_vault.id, "Reader", sp.object_id)
    mine = coffer.clients_for(sp)

    assert mine.keyvault.vaults.get(rg, mine_vault.name).id == mine_vault.id
    denied(mine.keyvault.vaults.get, rg, other_vault.name)
    denied(mine.resource.resource_groups.get, rg)


def test_a_subscription_assignment_covers_every_group(coffer, rg, sp):
    vault = coffer.create_vault(rg)
    coffer.assign_role(coffer.sub_scope(), "Reader", sp.object_id)
    mine = coffer.clients_for(sp)

    assert mine.resource.resource_groups.get(rg).name == rg
    assert rg in {g.name for g in mine.resource.resource_groups.list()}
    assert mine.keyvault.vaults.get(rg, vault.name).id == vault.id


def test_owner_of_a_group_can_delegate_inside_it_only(coffer, rg, sp):
    vault = coffer.create_vault(rg)
    sibling = coffer.create_rg()
    coffer.assign_role(coffer.rg_scope(rg), "Owner", sp.object_id)
    owner = coffer.clients_for(sp)
    reader = coffer.new_sp()

    owner.authorization.role_assignments.create(coffer.rg_scope(rg), str(uuid.uuid4()),
                                                _assignment_body(coffer, "Reader", reader.object_id))
    owner.authorization.role_assignments.create(vault.id, str(uuid.uuid4()),
                                                _assignment_body(coffer, "Key Vault Crypto Officer", reader.object_id))
    assert coffer.clients_for(reader).resource.resource_groups.get(rg).name == rg

    denied(owner.authorization.role_assignments.create, coffer.sub_scope(), str(uuid.uuid4()),
           _assignment_body(coffer, "Reader", reader.object_id))
    denied(owner.authorization.role_assignments.create, coffer.rg_scope(sibling), str(uuid.uuid4()),
           _assignment_body(coffer, "Reader", reader.object_id))


def test_deleting_the_assignment_revokes_access(coffer, admin, rg, sp):
    assignment = coffer.assign_role(coffer.rg_scope(rg), "Reader", sp.object_id)
    mine = coffer.clients_for(sp)
    assert mine.resource.resource_groups.get(rg).name == rg

    admin.authorization.role_assignments.delete(coffer.rg_scope(rg), assignment.name)
    denied(mine.resource.resource_groups.get, rg)


# ---------------------------------------------------------------- tenant administration is not RBAC

@pytest.mark.parametrize("role", [None, "Owner"])
def test_only_tenant_admins_create_subscriptions(coffer, sp, role):
    """A subscription Owner is still not a tenant administrator."""
    if role:
        coffer.assign_role(coffer.sub_scope(), role, sp.object_id)
    token = coffer.token(coffer.credential_for(sp))
    r = coffer.arm("PUT", f"/providers/Microsoft.Subscription/aliases/{unique('alias-')}"
                          f"?api-version={API_SUBSCRIPTION_ALIAS}",
                   token=token, json={"properties": {"displayName": "nope", "workload": "Production"}})
    assert_arm_error(r, 403, "AuthorizationFailed")
    r = coffer.arm("POST", "/coffer/admin/servicePrincipals", token=token, json={"displayName": "nope"})
    assert_arm_error(r, 403, "AuthorizationFailed")
