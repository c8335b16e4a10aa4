"""A graceful stop and a restart on the same data dir keep everything."""

from __future__ import annotations

from harness import API_RESOURCES, API_SUBSCRIPTION_ALIAS, expect_error, unique, vault_params


def test_everything_survives_a_restart(coffer_private):
    c = coffer_private
    admin = c.mgmt_clients()
    rg = c.create_rg()
    vault = c.create_vault(rg)
    deleted_vault = c.create_vault(rg)
    admin.keyvault.vaults.delete(rg, deleted_vault.name)
    identity = c.create_identity(rg)
    sp = c.new_sp("survivor")
    assignment = c.assign_role(c.rg_scope(rg), "Reader", sp.object_id)
    r = c.arm("PUT", f"/providers/Microsoft.Subscription/aliases/{unique('alias-')}?api-version={API_SUBSCRIPTION_ALIAS}",
              json={"properties": {"displayName": "kept", "workload": "Production"}})
    assert r.status_code in (200, 201), r.text
    second_sub = r.json()["properties"]["subscriptionId"]
    token_before = c.raw_token(sp.client_id, sp.client_secret)
    before = dict(c.endpoints)
    ca_before = open(c.ca, "rb").read()
    admin_before = dict(c.admin)

    assert c.stop() == 0, "SIGTERM must end the server gracefully with exit code 0"
    c.start()

    # Identity of the deployment.
    assert c.endpoints["tenant_id"] == before["tenant_id"]
    assert c.endpoints["subscription_id"] == before["subscription_id"]
    assert c.admin == admin_before
    assert open(c.ca, "rb").read() == ca_before, "clients trust the CA file: it must not change"

    # Resources (through new clients: the ports changed).
    admin = c.mgmt_clients()
    assert admin.resource.resource_groups.get(rg).name == rg
    got = admin.keyvault.vaults.get(rg, vault.name)
    assert got.id == vault.id
    assert got.properties.enable_purge_protection is True
    assert got.properties.vault_uri == f"https://{vault.name}.{c.vault_dns_suffix}/"  # the new port
    assert admin.keyvault.vaults.get_deleted(deleted_vault.name, "eastus").name == deleted_vault.name
    got_identity = admin.msi.user_assigned_identities.get(rg, identity.name)
    assert (got_identity.principal_id, got_identity.client_id) == (identity.principal_id, identity.client_id)
    assert admin.authorization.role_assignments.get(c.rg_scope(rg), assignment.name).principal_id == sp.object_id
    assert second_sub in {s.subscription_id for s in admin.subscriptions.subscriptions.list()}

    # The principal: its secret still works, and so does its access (and its limits).
    mine = c.clients_for(sp)
    assert mine.resource.resource_groups.get(rg).name == rg
    expect_error(403, lambda: mine.keyvault.vaults.begin_create_or_update(
        rg, unique("kv", 16), vault_params(c.tenant_id)).result(), code="AuthorizationFailed")

    # A token issued before the restart is still valid: the signing key persisted.
    r = c.arm("GET", f"/subscriptions/{c.subscription_id}/resourcegroups/{rg}?api-version={API_RESOURCES}",
              token=token_before)
    assert r.status_code == 200, r.text


def test_restart_with_nothing_created_keeps_the_ids(coffer_private):
    c = coffer_private
    before = dict(c.endpoints)
    assert c.stop() == 0
    c.start()
    assert (c.tenant_id, c.subscription_id) == (before["tenant_id"], before["subscription_id"])
    assert c.endpoints["regions"] == before["regions"]
    # The admin credentials on disk are the ones the server accepts.
    assert c.token()
