"""Storage accounts (Microsoft.Storage/storageAccounts) through azure-mgmt-storage and raw ARM requests.

azure-mgmt-storage 25 models are MutableMappings: `list_keys(...)["keys"]`, not `.keys` (the dict
method), and request bodies are built from models because a plain dict goes on the wire verbatim.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.storage import models as sm

from harness import assert_arm_error, expect_error, is_uuid, unique

API_STORAGE = "2025-08-01"  # what az CLI sends (AZURE-CLIENTS.md §5.2); the server accepts any
ACCOUNT_TYPE = "Microsoft.Storage/storageAccounts"
STORAGE_ACCOUNT_CONTRIBUTOR = "17d1049b-9a84-46fb-8f53-869881c3d3ab"  # built-in role GUID, as in Azure
JSON = {"Content-Type": "application/json"}

SKUS = ["Standard_LRS", "Standard_GRS", "Standard_RAGRS", "Standard_ZRS", "Standard_GZRS", "Standard_RAGZRS",
        "Premium_LRS", "Premium_ZRS"]
KINDS = ["StorageV2", "Storage", "BlobStorage", "BlockBlobStorage", "FileStorage"]


# ---------------------------------------------------------------- helpers

def account_name() -> str:
    """A fresh valid account name: 'sa' + 20 hex digits (lowercase, 22 characters)."""
    return "sa" + uuid.uuid4().hex[:20]


def params(location: str = "eastus", sku: str = "Standard_LRS", **kwargs: Any) -> sm.StorageAccountCreateParameters:
    return sm.StorageAccountCreateParameters(sku=sm.Sku(name=sku), location=location, **kwargs)


def create(clients, rg: str, name: Optional[str] = None, hook=None, **kwargs: Any) -> sm.StorageAccount:
    extra = {"raw_response_hook": hook} if hook else {}
    return clients.storage.storage_accounts.begin_create(rg, name or account_name(), params(**kwargs), **extra).result()


def create_call(clients, rg: str, name: Optional[str] = None, **kwargs: Any):
    return lambda: create(clients, rg, name, **kwargs)


def statuses():
    """A raw_response_hook collecting the HTTP status of every response of one SDK call."""
    seen: list[int] = []
    return seen, (lambda response: seen.append(response.http_response.status_code))


def check_name(clients, name: str) -> sm.CheckNameAvailabilityResult:
    return clients.storage.storage_accounts.check_name_availability(
        sm.StorageAccountCheckNameAvailabilityParameters(name=name, type=ACCOUNT_TYPE))


def keys_of(clients, rg: str, name: str) -> dict[str, str]:
    return {k["keyName"]: k["value"] for k in clients.storage.storage_accounts.list_keys(rg, name)["keys"]}


def regenerate(clients, rg: str, name: str, key_name: str) -> dict[str, str]:
    result = clients.storage.storage_accounts.regenerate_key(
        rg, name, sm.StorageAccountRegenerateKeyParameters(key_name=key_name))
    return {k["keyName"]: k["value"] for k in result["keys"]}


def account_path(coffer, rg: str, name: str, suffix: str = "", sub: Optional[str] = None) -> str:
    return (f"{coffer.rg_scope(rg, sub)}/providers/Microsoft.Storage/storageAccounts/{name}{suffix}"
            f"?api-version={API_STORAGE}")


def denied(fn, *args, **kwargs):
    return expect_error(403, fn, *args, code="AuthorizationFailed", **kwargs)


def assert_default_properties(coffer, account: sm.StorageAccount, name: str) -> None:
    props = account.properties
    assert props.provisioning_state == "Succeeded"
    assert props.primary_endpoints.blob == f"https://{name}.{coffer.blob_dns_suffix}/"
    assert props.primary_location == account.location
    assert props.encryption.key_source == "Microsoft.Storage"
    assert props.encryption.services.blob.enabled is True
    assert props.encryption.services.blob.key_type == "Account"
    assert props.encryption.require_infrastructure_encryption in (False, None)
    assert props.access_tier == "Hot"
    assert props.enable_https_traffic_only is True  # supportsHttpsTrafficOnly on the wire
    assert props.minimum_tls_version == "TLS1_2"
    assert props.creation_time is not None


# ---------------------------------------------------------------- checkNameAvailability

def test_free_valid_name_is_available(admin):
    result = check_name(admin, account_name())
    assert result.name_available is True
    assert not result.reason


@pytest.mark.parametrize("name", ["ab", "a" * 25, "Abc123", "abc-123", "abc_123", "abc.123", "abc 123", "ábc123"],
                         ids=["2-chars", "25-chars", "uppercase", "hyphen", "underscore", "dot", "space", "non-ascii"])
def test_invalid_name_is_not_available(admin, name):
    result = check_name(admin, name)
    assert result.name_available is False
    assert result.reason == "AccountNameInvalid"
    assert result.message


@pytest.mark.parametrize("name", ["abc", "a" * 24, "0123456789"], ids=["3-chars", "24-chars", "digits"])
def test_boundary_names_are_available(admin, name):
    # Names this short or plain may be taken by another test run only if created: these never are.
    result = check_name(admin, name)
    assert result.name_available is True, dict(result)


def test_taken_name_is_not_available_anywhere(coffer, admin, rg):
    name = create(admin, rg).name
    result = check_name(admin, name)
    assert result.name_available is False
    assert result.reason == "AlreadyExists"
    assert result.message

    # Global: the same answer in another subscription.
    r = coffer.arm("PUT", f"/providers/Microsoft.Subscription/aliases/{unique('alias-')}?api-version=2021-10-01",
                   json={"properties": {"displayName": "storage names", "workload": "Production"}})
    assert r.status_code in (200, 201), r.text
    other = coffer.mgmt_clients(subscription_id=r.json()["properties"]["subscriptionId"])
    result = check_name(other, name)
    assert (result.name_available, result.reason) == (False, "AlreadyExists")


# ---------------------------------------------------------------- create

def test_create_is_synchronous_with_defaults(coffer, admin, rg):
    name = account_name()
    seen, hook = statuses()
    account = create(admin, rg, name, hook=hook)
    assert seen == [200], "a synchronous create answers 200 (the SDK refuses 201)"
    assert account.id == f"{coffer.rg_scope(rg)}/providers/Microsoft.Storage/storageAccounts/{name}"
    assert account.name == name
    assert account.type == ACCOUNT_TYPE
    assert account.location == "eastus"
    assert account.kind == "StorageV2"
    assert (account.sku.name, account.sku.tier) == ("Standard_LRS", "Standard")
    assert not account.tags
    assert account.identity is None or account.identity.type == "None"
    assert_default_properties(coffer, account, name)

    got = admin.storage.storage_accounts.get_properties(rg, name)
    assert got.id == account.id
    assert_default_properties(coffer, got, name)


def test_create_with_tags_and_options(coffer, admin, rg):
    name = account_name()
    account = create(admin, rg, name, location="westeurope", tags={"team": "coffer", "env": "test"},
                     kind="StorageV2", access_tier="Cool", minimum_tls_version="TLS1_2")
    assert account.location == "westeurope"
    assert account.tags == {"team": "coffer", "env": "test"}
    assert account.properties.access_tier == "Cool"
    got = admin.storage.storage_accounts.get_properties(rg, name)
    assert (got.location, got.tags, got.properties.access_tier) == ("westeurope", account.tags, "Cool")


@pytest.mark.parametrize("sku", SKUS)
def test_create_each_sku(admin, rg, sku):
    account = create(admin, rg, sku=sku)
    assert account.sku.name == sku
    assert account.sku.tier == ("Premium" if sku.startswith("Premium") else "Standard")


@pytest.mark.parametrize("kind", KINDS)
def test_create_each_kind(admin, rg, kind):
    sku = "Premium_LRS" if kind in ("BlockBlobStorage", "FileStorage") else "Standard_LRS"
    account = create(admin, rg, kind=kind, sku=sku)
    assert account.kind == kind


def test_create_in_an_unknown_location_is_400(admin, rg):
    exc = expect_error(400, create_call(admin, rg, location="northpole"), code="LocationNotAvailableForResourceType")
    assert "eastus" in str(exc)


def test_create_with_system_assigned_identity(coffer, admin, rg):
    name = account_name()
    account = create(admin, rg, name, identity=sm.Identity(type="SystemAssigned"))
    assert account.identity.type == "SystemAssigned"
    assert is_uuid(account.identity.principal_id)
    assert account.identity.tenant_id == coffer.tenant_id
    got = admin.storage.storage_accounts.get_properties(rg, name)
    assert got.identity.principal_id == account.identity.principal_id
    other = create(admin, rg, identity=sm.Identity(type="SystemAssigned"))
    assert other.identity.principal_id != account.identity.principal_id


def test_create_with_user_assigned_identity(coffer, admin, rg):
    uai = coffer.create_identity(rg)
    name = account_name()
    account = create(admin, rg, name, identity=sm.Identity(
        type="UserAssigned", user_assigned_identities={uai.id: sm.UserAssignedIdentity()}))
    assert account.identity.type == "UserAssigned"
    assert not account.identity.principal_id
    assigned = {k.lower(): v for k, v in account.identity.user_assigned_identities.items()}
    assert set(assigned) == {uai.id.lower()}
    assert assigned[uai.id.lower()].principal_id == uai.principal_id
    assert assigned[uai.id.lower()].client_id == uai.client_id
    got = admin.storage.storage_accounts.get_properties(rg, name)
    assert {k.lower() for k in got.identity.user_assigned_identities} == {uai.id.lower()}


def test_create_with_system_and_user_assigned_identities(coffer, admin, rg):
    uai = coffer.create_identity(rg)
    account = create(admin, rg, identity=sm.Identity(
        type="SystemAssigned,UserAssigned", user_assigned_identities={uai.id: sm.UserAssignedIdentity()}))
    assert account.identity.type.replace(" ", "") == "SystemAssigned,UserAssigned"
    assert is_uuid(account.identity.principal_id)
    assert account.identity.principal_id != uai.principal_id
    assert account.identity.tenant_id == coffer.tenant_id
    assigned = {k.lower(): v for k, v in account.identity.user_assigned_identities.items()}
    assert assigned[uai.id.lower()].principal_id == uai.principal_id


def test_user_assigned_identity_must_exist(coffer, admin, rg):
    missing = f"{coffer.rg_scope(rg)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{unique('id-')}"
    name = account_name()
    expect_error(400, create_call(admin, rg, name, identity=sm.Identity(
        type="UserAssigned", user_assigned_identities={missing: sm.UserAssignedIdentity()})))
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.get_properties(rg, name)


def test_infrastructure_encryption_is_chosen_at_create_only(admin, rg):
    name = account_name()
    account = create(admin, rg, name, encryption=sm.Encryption(
        key_source="Microsoft.Storage", require_infrastructure_encryption=True,
        services=sm.EncryptionServices(blob=sm.EncryptionService(enabled=True))))
    assert account.properties.encryption.require_infrastructure_encryption is True

    for value in (False, True):  # changing it is refused; restating the current value is not a change
        update = sm.StorageAccountUpdateParameters(encryption=sm.Encryption(
            key_source="Microsoft.Storage", require_infrastructure_encryption=value))
        if value:
            assert admin.storage.storage_accounts.update(rg, name, update).properties.encryption \
                .require_infrastructure_encryption is True
        else:
            expect_error(400, admin.storage.storage_accounts.update, rg, name, update)
    assert admin.storage.storage_accounts.get_properties(rg, name).properties.encryption \
        .require_infrastructure_encryption is True

    plain = create(admin, rg)
    expect_error(400, admin.storage.storage_accounts.update, rg, plain.name, sm.StorageAccountUpdateParameters(
        encryption=sm.Encryption(key_source="Microsoft.Storage", require_infrastructure_encryption=True)))


def test_https_only_cannot_be_turned_off(admin, rg):
    name = account_name()
    expect_error(400, create_call(admin, rg, name, enable_https_traffic_only=False))
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.get_properties(rg, name)
    account = create(admin, rg, name, enable_https_traffic_only=True)
    assert account.properties.enable_https_traffic_only is True
    expect_error(400, admin.storage.storage_accounts.update, rg, name,
                 sm.StorageAccountUpdateParameters(enable_https_traffic_only=False))
    assert admin.storage.storage_accounts.get_properties(rg, name).properties.enable_https_traffic_only is True


def test_minimum_tls_version_can_be_set(admin, rg):
    name = account_name()
    assert create(admin, rg, name, minimum_tls_version="TLS1_0").properties.minimum_tls_version == "TLS1_0"
    updated = admin.storage.storage_accounts.update(rg, name, sm.StorageAccountUpdateParameters(
        minimum_tls_version="TLS1_2"))
    assert updated.properties.minimum_tls_version == "TLS1_2"


@pytest.mark.parametrize("name", ["ab", "a" * 25, "Abc123", "abc-123", "abc_123"],
                         ids=["2-chars", "25-chars", "uppercase", "hyphen", "underscore"])
def test_create_with_an_invalid_name_is_400(admin, rg, name):
    expect_error(400, create_call(admin, rg, name), code="AccountNameInvalid")


def test_name_taken_by_another_account_is_409(coffer, admin, rg):
    name = create(admin, rg).name
    other_rg = coffer.create_rg()
    expect_error(409, create_call(admin, other_rg, name))
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.get_properties(other_rg, name)
    # The original is untouched.
    assert admin.storage.storage_accounts.get_properties(rg, name).location == "eastus"


def test_name_taken_in_another_subscription_is_409(coffer, admin, rg):
    name = create(admin, rg).name
    r = coffer.arm("PUT", f"/providers/Microsoft.Subscription/aliases/{unique('alias-')}?api-version=2021-10-01",
                   json={"properties": {"displayName": "storage names", "workload": "Production"}})
    assert r.status_code in (200, 201), r.text
    other = coffer.mgmt_clients(subscription_id=r.json()["properties"]["subscriptionId"])
    other_rg = coffer.create_rg(other)
    expect_error(409, create_call(other, other_rg, name))


def test_create_in_a_missing_resource_group_is_404(admin):
    expect_error(404, create_call(admin, unique("rg-missing-")), code="ResourceGroupNotFound")


@pytest.mark.parametrize("sku,kind", [("Standard_XYZ", None), ("standard", None), ("Standard_LRS", "Bogus")],
                         ids=["unknown-sku", "partial-sku", "unknown-kind"])
def test_bad_sku_or_kind_is_400(admin, rg, sku, kind):
    name = account_name()
    kwargs = {"kind": kind} if kind else {}
    expect_error(400, create_call(admin, rg, name, sku=sku, **kwargs))
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.get_properties(rg, name)


def _cmk_encryption() -> sm.Encryption:
    return sm.Encryption(key_source="Microsoft.Keyvault", key_vault_properties=sm.KeyVaultProperties(
        key_name="cmk", key_vault_uri="https://somevault.vault.azure.net/"))


def test_customer_managed_key_is_refused_for_now(admin, rg):
    name = account_name()
    expect_error(400, create_call(admin, rg, name, identity=sm.Identity(type="SystemAssigned"),
                                  encryption=_cmk_encryption()))
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.get_properties(rg, name)

    create(admin, rg, name, identity=sm.Identity(type="SystemAssigned"))
    expect_error(400, admin.storage.storage_accounts.update, rg, name,
                 sm.StorageAccountUpdateParameters(tags={"changed": "yes"}, encryption=_cmk_encryption()))
    got = admin.storage.storage_accounts.get_properties(rg, name)
    assert got.properties.encryption.key_source == "Microsoft.Storage"
    assert not got.tags, "a refused PATCH must not apply any part of itself"


@pytest.mark.beyond_contract
def test_put_on_an_existing_account_updates_it_and_keeps_keys_and_identity(admin, rg):
    """As the Storage RP does: a second PUT with the same name in the same group is an update (200)."""
    name = account_name()
    first = create(admin, rg, name, identity=sm.Identity(type="SystemAssigned"))
    keys = keys_of(admin, rg, name)
    seen, hook = statuses()
    again = create(admin, rg, name, hook=hook, identity=sm.Identity(type="SystemAssigned"), tags={"second": "put"})
    assert seen == [200]
    assert again.id == first.id
    assert again.tags == {"second": "put"}
    assert again.identity.principal_id == first.identity.principal_id
    assert keys_of(admin, rg, name) == keys


# ---------------------------------------------------------------- get, update, list, delete

def test_get_a_missing_account_is_404(admin, rg):
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.get_properties(rg, account_name())


def test_update_merges_tags_and_sku_and_leaves_the_rest(coffer, admin, rg):
    name = account_name()
    account = create(admin, rg, name, tags={"a": "1"}, identity=sm.Identity(type="SystemAssigned"),
                     access_tier="Cool", minimum_tls_version="TLS1_1")
    keys = keys_of(admin, rg, name)

    seen, hook = statuses()
    updated = admin.storage.storage_accounts.update(rg, name, sm.StorageAccountUpdateParameters(
        tags={"b": "2"}), raw_response_hook=hook)
    assert seen == [200]
    assert updated.tags == {"b": "2"}  # tags are replaced as a whole, as in ARM
    assert (updated.sku.name, updated.kind) == ("Standard_LRS", "StorageV2")
    assert updated.identity.principal_id == account.identity.principal_id
    assert updated.properties.access_tier == "Cool"
    assert updated.properties.minimum_tls_version == "TLS1_1"
    assert updated.properties.encryption.key_source == "Microsoft.Storage"
    assert updated.properties.creation_time == account.properties.creation_time

    updated = admin.storage.storage_accounts.update(rg, name, sm.StorageAccountUpdateParameters(
        sku=sm.Sku(name="Standard_GRS")))
    assert (updated.sku.name, updated.sku.tier) == ("Standard_GRS", "Standard")
    assert updated.tags == {"b": "2"}

    updated = admin.storage.storage_accounts.update(rg, name, sm.StorageAccountUpdateParameters(access_tier="Hot"))
    assert updated.properties.access_tier == "Hot"
    assert updated.sku.name == "Standard_GRS"

    got = admin.storage.storage_accounts.get_properties(rg, name)
    assert (got.tags, got.sku.name, got.properties.access_tier) == ({"b": "2"}, "Standard_GRS", "Hot")
    assert got.identity.principal_id == account.identity.principal_id
    assert got.properties.primary_endpoints.blob == f"https://{name}.{coffer.blob_dns_suffix}/"
    assert keys_of(admin, rg, name) == keys, "an update must not touch the account keys"


def test_update_adds_and_removes_identities(coffer, admin, rg):
    name = account_name()
    create(admin, rg, name)
    uai = coffer.create_identity(rg)
    update = admin.storage.storage_accounts.update

    added = update(rg, name, sm.StorageAccountUpdateParameters(identity=sm.Identity(type="SystemAssigned")))
    assert added.identity.type == "SystemAssigned"
    principal = added.identity.principal_id
    assert is_uuid(principal)
    assert added.identity.tenant_id == coffer.tenant_id

    both = update(rg, name, sm.StorageAccountUpdateParameters(identity=sm.Identity(
        type="SystemAssigned,UserAssigned", user_assigned_identities={uai.id: sm.UserAssignedIdentity()})))
    assert both.identity.type.replace(" ", "") == "SystemAssigned,UserAssigned"
    assert both.identity.principal_id == principal, "the system-assigned principal is kept, not replaced"
    assert {k.lower() for k in both.identity.user_assigned_identities} == {uai.id.lower()}

    user_only = update(rg, name, sm.StorageAccountUpdateParameters(identity=sm.Identity(
        type="UserAssigned", user_assigned_identities={uai.id: sm.UserAssignedIdentity()})))
    assert user_only.identity.type == "UserAssigned"
    assert not user_only.identity.principal_id, "removing SystemAssigned drops its principal"
    assert {k.lower() for k in user_only.identity.user_assigned_identities} == {uai.id.lower()}

    none = update(rg, name, sm.StorageAccountUpdateParameters(identity=sm.Identity(type="None")))
    assert none.identity is None or none.identity.type == "None"
    assert none.identity is None or not none.identity.principal_id

    again = update(rg, name, sm.StorageAccountUpdateParameters(identity=sm.Identity(type="SystemAssigned")))
    assert is_uuid(again.identity.principal_id) and again.identity.principal_id != principal
    got = admin.storage.storage_accounts.get_properties(rg, name)
    assert got.identity.principal_id == again.identity.principal_id


def test_update_a_missing_account_is_404(admin, rg):
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.update(rg, account_name(), sm.StorageAccountUpdateParameters(tags={"a": "b"}))


def test_list_by_subscription_and_by_resource_group(coffer, admin, rg):
    other_rg = coffer.create_rg()
    mine = {create(admin, rg).name, create(admin, rg).name}
    theirs = create(admin, other_rg).name

    in_rg = {a.name: a for a in admin.storage.storage_accounts.list_by_resource_group(rg)}
    assert set(in_rg) == mine
    for name, account in in_rg.items():
        assert account.id == f"{coffer.rg_scope(rg)}/providers/Microsoft.Storage/storageAccounts/{name}"
        assert account.properties.primary_endpoints.blob == f"https://{name}.{coffer.blob_dns_suffix}/"
    assert {a.name for a in admin.storage.storage_accounts.list_by_resource_group(other_rg)} == {theirs}

    everywhere = {a.name for a in admin.storage.storage_accounts.list()}
    assert mine | {theirs} <= everywhere
    assert list(admin.storage.storage_accounts.list_by_resource_group(coffer.create_rg())) == []


def test_list_never_shows_keys(coffer, admin, rg):
    name = create(admin, rg).name
    keys = keys_of(admin, rg, name)
    for path in (account_path(coffer, rg, name),
                 f"{coffer.rg_scope(rg)}/providers/Microsoft.Storage/storageAccounts?api-version={API_STORAGE}",
                 f"{coffer.sub_scope()}/providers/Microsoft.Storage/storageAccounts?api-version={API_STORAGE}"):
        r = coffer.arm("GET", path)
        assert r.status_code == 200, r.text
        for value in keys.values():
            assert value not in r.text
        assert '"_' not in r.text, f"server-private fields leaked: {r.text[:300]}"


def test_delete_then_get_is_404_and_the_name_is_free(coffer, admin, rg):
    name = create(admin, rg, identity=sm.Identity(type="SystemAssigned")).name
    seen, hook = statuses()
    admin.storage.storage_accounts.delete(rg, name, raw_response_hook=hook)
    assert seen == [200]
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.get_properties(rg, name)
    assert name not in {a.name for a in admin.storage.storage_accounts.list()}
    assert check_name(admin, name).name_available is True
    r = coffer.arm("POST", account_path(coffer, rg, name, "/listKeys"))
    assert_arm_error(r, 404)

    # Deleting again is a no-op (204), and the name can be taken again, even from another group.
    seen, hook = statuses()
    admin.storage.storage_accounts.delete(rg, name, raw_response_hook=hook)
    assert seen == [204]
    other_rg = coffer.create_rg()
    assert create(admin, other_rg, name).name == name


def test_delete_forgets_the_keys(admin, rg):
    name = create(admin, rg).name
    old = keys_of(admin, rg, name)
    admin.storage.storage_accounts.delete(rg, name)
    create(admin, rg, name)
    new = keys_of(admin, rg, name)
    assert not set(old.values()) & set(new.values()), "a re-created account must get fresh keys"


def test_deleting_the_resource_group_deletes_its_accounts(coffer, admin):
    rg = coffer.create_rg()
    names = [create(admin, rg).name, create(admin, rg, identity=sm.Identity(type="SystemAssigned")).name]
    admin.resource.resource_groups.begin_delete(rg).result()
    listed = {a.name for a in admin.storage.storage_accounts.list()}
    for name in names:
        with pytest.raises(ResourceNotFoundError):
            admin.storage.storage_accounts.get_properties(rg, name)
        assert name not in listed
        assert check_name(admin, name).name_available is True
    # The names can be used again in a new group.
    new_rg = coffer.create_rg()
    assert create(admin, new_rg, names[0]).name == names[0]


# ---------------------------------------------------------------- keys

def test_list_keys(admin, rg):
    name = create(admin, rg).name
    seen, hook = statuses()
    result = admin.storage.storage_accounts.list_keys(rg, name, raw_response_hook=hook)
    assert seen == [200]
    keys = result["keys"]
    assert [k["keyName"] for k in keys] == ["key1", "key2"]
    for k in keys:
        assert k["permissions"] == "FULL"
        assert len(base64.b64decode(k["value"], validate=True)) == 64
    assert keys[0]["value"] != keys[1]["value"]
    assert keys_of(admin, rg, name) == {k["keyName"]: k["value"] for k in keys}, "listing is stable"
    other = keys_of(admin, rg, create(admin, rg).name)
    assert not set(other.values()) & {k["value"] for k in keys}, "every account has its own keys"


@pytest.mark.parametrize("which,other", [("key1", "key2"), ("key2", "key1")])
def test_regenerate_one_key(admin, rg, which, other):
    name = create(admin, rg).name
    before = keys_of(admin, rg, name)
    after = regenerate(admin, rg, name, which)
    assert set(after) == {"key1", "key2"}
    assert after[which] != before[which]
    assert len(base64.b64decode(after[which], validate=True)) == 64
    assert after[other] == before[other]
    assert keys_of(admin, rg, name) == after


def test_regenerate_with_a_bad_key_name_is_400(coffer, admin, rg):
    name = create(admin, rg).name
    before = keys_of(admin, rg, name)
    for body in ({"keyName": "key3"}, {"keyName": 1}, {}, "not an object"):
        r = coffer.arm("POST", account_path(coffer, rg, name, "/regenerateKey"), json=body)
        assert_arm_error(r, 400)
    r = coffer.arm("POST", account_path(coffer, rg, name, "/regenerateKey"), data=b'{"keyName":', headers=JSON)
    assert_arm_error(r, 400)
    assert keys_of(admin, rg, name) == before


def test_keys_of_a_missing_account_are_404(coffer, admin, rg):
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.list_keys(rg, account_name())
    r = coffer.arm("POST", account_path(coffer, rg, account_name(), "/regenerateKey"), json={"keyName": "key1"})
    assert_arm_error(r, 404)


# ---------------------------------------------------------------- RBAC

def test_reader_can_read_but_not_write_or_list_keys(coffer, admin, rg, sp):
    name = create(admin, rg).name
    coffer.assign_role(coffer.rg_scope(rg), "Reader", sp.object_id)
    mine = coffer.clients_for(sp)
    accounts = mine.storage.storage_accounts

    assert accounts.get_properties(rg, name).name == name
    assert name in {a.name for a in accounts.list_by_resource_group(rg)}

    denied(create_call(mine, rg))
    denied(accounts.update, rg, name, sm.StorageAccountUpdateParameters(tags={"by": "reader"}))
    denied(accounts.delete, rg, name)
    denied(accounts.list_keys, rg, name)
    denied(accounts.regenerate_key, rg, name, sm.StorageAccountRegenerateKeyParameters(key_name="key1"))

    got = admin.storage.storage_accounts.get_properties(rg, name)
    assert not got.tags, "the denied update must not have been applied"


def test_a_principal_without_a_role_gets_403(coffer, admin, rg, sp):
    name = create(admin, rg).name
    accounts = coffer.clients_for(sp).storage.storage_accounts
    denied(accounts.get_properties, rg, name)
    denied(accounts.get_properties, rg, account_name())  # 403, not 404: existence is not revealed
    denied(accounts.list_keys, rg, name)
    assert name not in {a.name for a in accounts.list()}


def test_contributor_can_create_and_list_keys(coffer, admin, rg, sp):
    coffer.assign_role(coffer.rg_scope(rg), "Contributor", sp.object_id)
    mine = coffer.clients_for(sp)
    name = account_name()
    account = create(mine, rg, name, identity=sm.Identity(type="SystemAssigned"))
    assert account.name == name and is_uuid(account.identity.principal_id)
    keys = keys_of(mine, rg, name)
    assert keys == keys_of(admin, rg, name)
    assert regenerate(mine, rg, name, "key2")["key1"] == keys["key1"]
    assert mine.storage.storage_accounts.update(rg, name, sm.StorageAccountUpdateParameters(
        tags={"by": "contributor"})).tags == {"by": "contributor"}
    mine.storage.storage_accounts.delete(rg, name)
    with pytest.raises(ResourceNotFoundError):
        admin.storage.storage_accounts.get_properties(rg, name)


def test_storage_account_contributor_can_create_accounts_only(coffer, admin, rg, sp):
    coffer.assign_role(coffer.rg_scope(rg), STORAGE_ACCOUNT_CONTRIBUTOR, sp.object_id)
    mine = coffer.clients_for(sp)
    name = create(mine, rg).name
    assert mine.storage.storage_accounts.get_properties(rg, name).name == name
    assert set(keys_of(mine, rg, name)) == {"key1", "key2"}
    mine.storage.storage_accounts.delete(rg, name)
    # Nothing beyond storage accounts.
    denied(mine.msi.user_assigned_identities.create_or_update, rg, unique("id-"), {"location": "eastus"})
    denied(coffer.create_vault, rg, clients=mine)


def test_reader_on_another_group_cannot_see_the_account(coffer, admin, rg, sp):
    name = create(admin, rg).name
    coffer.assign_role(coffer.rg_scope(coffer.create_rg()), "Reader", sp.object_id)
    accounts = coffer.clients_for(sp).storage.storage_accounts
    denied(accounts.get_properties, rg, name)


def test_system_assigned_identity_can_be_given_a_key_role(coffer, admin, rg):
    """The CMK flow's middle step: the account's principal gets a wrap/unwrap role on a vault."""
    account = create(admin, rg, identity=sm.Identity(type="SystemAssigned"))
    vault = coffer.create_vault(rg)
    created = coffer.assign_role(vault.id, "Key Vault Crypto Service Encryption User", account.identity.principal_id)
    assert created.principal_id == account.identity.principal_id
    assert created.principal_type == "ServicePrincipal"
    assert created.role_definition_id == coffer.role_definition_id("Key Vault Crypto Service Encryption User")
    assert created.name in {a.name for a in admin.authorization.role_assignments.list_for_scope(vault.id)}


# ---------------------------------------------------------------- concurrent requests

def _race(n: int, fn) -> list:
    """Run fn(0..n-1) on n threads released together by a barrier; their results in order."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _raw_keys(coffer, rg: str, name: str, token: str) -> dict[str, str]:
    r = coffer.arm("POST", account_path(coffer, rg, name, "/listKeys"), token=token)
    assert r.status_code == 200, r.text
    return {k["keyName"]: k["value"] for k in r.json()["keys"]}


def test_concurrent_creates_of_one_name_in_different_groups_make_one_account(coffer):
    """Names are global: of N simultaneous creates in N groups exactly one wins, the others get 409."""
    token = coffer.token()
    for _trial in range(3):
        groups = [coffer.create_rg() for _ in range(6)]
        name = account_name()
        codes = _race(len(groups), lambda i: coffer.arm(
            "PUT", account_path(coffer, groups[i], name), token=token, data=_account_body(), headers=JSON).status_code)
        owners = [g for g in groups if coffer.arm("GET", account_path(coffer, g, name), token=token).status_code == 200]
        assert sorted(codes) == [200] + [409] * (len(groups) - 1) and len(owners) == 1, \
            f"PUT statuses {codes}; {len(owners)} accounts named {name} exist"


def test_concurrent_creates_of_one_account_agree_on_its_identity(coffer, rg):
    """Simultaneous PUTs of one new account: every answer names the principal the account ends up with."""
    token = coffer.token()
    body = _account_body(identity={"type": "SystemAssigned"})
    for _trial in range(3):
        name = account_name()
        answers = _race(4, lambda i: coffer.arm("PUT", account_path(coffer, rg, name), token=token, data=body,
                                                headers=JSON))
        assert [a.status_code for a in answers] == [200] * 4, [a.text[:200] for a in answers]
        final = coffer.arm("GET", account_path(coffer, rg, name), token=token).json()["identity"]["principalId"]
        returned = [a.json()["identity"]["principalId"] for a in answers]
        assert set(returned) == {final}, f"PUT answers named principals {returned}; the account has {final}"


@pytest.mark.parametrize("other", ["regenerate-key2", "patch-tags"])
def test_a_regenerated_key_is_not_lost_to_a_concurrent_request(coffer, rg, other):
    """A key rotation (say, of a leaked key) must stick even when another write to the account races it."""
    token = coffer.token()
    name = account_name()
    r = coffer.arm("PUT", account_path(coffer, rg, name), token=token, data=_account_body(), headers=JSON)
    assert r.status_code == 200, r.text

    def act(i: int, trial: int):
        if i == 0:
            r = coffer.arm("POST", account_path(coffer, rg, name, "/regenerateKey"), token=token,
                           json={"keyName": "key1"})
            assert r.status_code == 200, r.text
            return {k["keyName"]: k["value"] for k in r.json()["keys"]}
        if other == "regenerate-key2":
            r = coffer.arm("POST", account_path(coffer, rg, name, "/regenerateKey"), token=token,
                           json={"keyName": "key2"})
            assert r.status_code == 200, r.text
            return {k["keyName"]: k["value"] for k in r.json()["keys"]}
        r = coffer.arm("PATCH", account_path(coffer, rg, name), token=token, json={"tags": {"trial": str(trial)}})
        assert r.status_code == 200, r.text
        return None

    for trial in range(10):
        rotated, second = _race(2, lambda i: act(i, trial))
        final = _raw_keys(coffer, rg, name, token)
        assert final["key1"] == rotated["key1"], f"trial {trial}: the regenerated key1 was reverted"
        if second is not None:
            assert final["key2"] == second["key2"], f"trial {trial}: the regenerated key2 was reverted"


# ---------------------------------------------------------------- at rest and across a restart

def _needles(keys: dict[str, str]) -> dict[str, bytes]:
    """Every form in which an account key could sit in a file."""
    needles = {}
    for label, value in keys.items():
        raw = base64.b64decode(value)
        needles[f"{label} raw"] = raw
        needles[f"{label} base64"] = value.encode()
        needles[f"{label} base64 unpadded"] = value.rstrip("=").encode()
        needles[f"{label} base64url"] = base64.urlsafe_b64encode(raw).rstrip(b"=")
        needles[f"{label} hex"] = raw.hex().encode()
        needles[f"{label} HEX"] = raw.hex().upper().encode()
        needles[f"{label} json-escaped base64"] = json.dumps(value)[1:-1].encode()
    return needles


def _files_containing(root: Path, needles: dict[str, bytes]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for label, needle in needles.items():
            if needle in data:
                found.append(f"{label} in {path.relative_to(root)}")
    return found


def test_account_keys_are_not_stored_in_clear_and_survive_a_restart(coffer_private):
    c = coffer_private
    admin = c.mgmt_clients()
    rg = c.create_rg()
    uai = c.create_identity(rg)
    name = create(admin, rg, identity=sm.Identity(
        type="SystemAssigned,UserAssigned", user_assigned_identities={uai.id: sm.UserAssignedIdentity()}),
        tags={"kept": "yes"}).name
    plain = create(admin, rg, sku="Standard_GRS").name
    seen_keys = {f"{name} {k}": v for k, v in keys_of(admin, rg, name).items()}
    old_key1 = seen_keys[f"{name} key1"]
    keys = regenerate(admin, rg, name, "key1")
    assert keys["key1"] != old_key1
    seen_keys.update({f"{name} {k} (current)": v for k, v in keys.items()})
    plain_keys = keys_of(admin, rg, plain)
    seen_keys.update({f"{plain} {k}": v for k, v in plain_keys.items()})
    before = admin.storage.storage_accounts.get_properties(rg, name)

    assert c.stop() == 0
    # Positive control: the scan does find a secret that is meant to be on disk.
    assert _files_containing(c.base_dir, {"admin secret": c.admin["client_secret"].encode()})
    found = _files_containing(c.base_dir, _needles(seen_keys))
    assert not found, "account keys found in clear on disk:\n" + "\n".join(found)

    c.start()
    admin = c.mgmt_clients()
    after = admin.storage.storage_accounts.get_properties(rg, name)
    assert after.id == before.id
    assert after.tags == {"kept": "yes"}
    assert after.identity.principal_id == before.identity.principal_id
    assert after.identity.tenant_id == before.identity.tenant_id
    assigned = {k.lower(): v for k, v in after.identity.user_assigned_identities.items()}
    assert assigned[uai.id.lower()].principal_id == uai.principal_id
    assert assigned[uai.id.lower()].client_id == uai.client_id
    assert after.properties.primary_endpoints.blob == f"https://{name}.{c.blob_dns_suffix}/"  # the new port
    assert keys_of(admin, rg, name) == keys, "keys (with the regenerated key1) must survive a restart"
    assert keys_of(admin, rg, plain) == plain_keys
    assert admin.storage.storage_accounts.get_properties(rg, plain).sku.name == "Standard_GRS"
    assert check_name(admin, name).name_available is False

    # And the keys still are not on disk after the restarted server has read and served them.
    assert c.stop() == 0
    found = _files_containing(c.base_dir, _needles(seen_keys))
    assert not found, "account keys found in clear on disk after a restart:\n" + "\n".join(found)
    c.start()


# ---------------------------------------------------------------- bad input (raw requests)

@pytest.fixture(scope="module")
def bad_rg(coffer):
    return coffer.create_rg()


RAW_BODIES = {
    "truncated-json": b'{"location": "eastus", "sku": {"name": "Standard_LRS"}',
    "not-json": b"hello storage",
    "invalid-utf8": b'{"location": "\xff\xfe", "sku": {"name": "Standard_LRS"}}',
    "json-array": b"[]",
    "json-null": b"null",
    "json-string": b'"account"',
    "empty-object": b"{}",
    "deeply-nested": b"[" * 10000 + b"]" * 10000,
}
BAD_FIELDS = {
    "location-number": {"location": 5},
    "location-missing": {"location": None},
    "sku-string": {"sku": "x"},
    "sku-missing": {"sku": None},
    "sku-name-number": {"sku": {"name": 5}},
    "sku-without-name": {"sku": {}},
    "kind-number": {"kind": 5},
    "tags-string": {"tags": "x"},
    "tag-value-number": {"tags": {"a": 1}},
    "identity-string": {"identity": "SystemAssigned"},
    "identity-type-unknown": {"identity": {"type": "Everything"}},
    "identity-type-number": {"identity": {"type": 5}},
    "user-assigned-without-map": {"identity": {"type": "UserAssigned"}},
    "user-assigned-empty-map": {"identity": {"type": "UserAssigned", "userAssignedIdentities": {}}},
    "user-assigned-map-string": {"identity": {"type": "UserAssigned", "userAssignedIdentities": "x"}},
    "properties-string": {"properties": "x"},
    "encryption-string": {"properties": {"encryption": "x"}},
    "key-source-number": {"properties": {"encryption": {"keySource": 5}}},
    "key-source-unknown": {"properties": {"encryption": {"keySource": "Microsoft.Nope"}}},
    "https-only-string": {"properties": {"supportsHttpsTrafficOnly": "yes"}},
    "infrastructure-encryption-string": {"properties": {"encryption": {"requireInfrastructureEncryption": "yes"}}},
    "tls-unknown": {"properties": {"minimumTlsVersion": "TLS9_9"}},
    "access-tier-unknown": {"properties": {"accessTier": "Lukewarm"}},
}


def _account_body(**overrides: Any) -> bytes:
    body: dict[str, Any] = {"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize("case", list(RAW_BODIES) + list(BAD_FIELDS))
def test_bad_create_body_is_400(coffer, bad_rg, case):
    body = RAW_BODIES.get(case) or _account_body(**BAD_FIELDS[case])
    name = account_name()
    r = coffer.arm("PUT", account_path(coffer, bad_rg, name), data=body, headers=JSON)
    assert_arm_error(r, 400)
    assert coffer.arm("GET", account_path(coffer, bad_rg, name)).status_code == 404, "nothing may be created"
    assert check_name(coffer.mgmt_clients(), name).name_available is True, "nor the name reserved"


def test_user_assigned_identity_that_is_not_an_identity_is_400(coffer, bad_rg):
    not_an_identity = coffer.rg_scope(bad_rg)
    for uai in (not_an_identity, "not-a-resource-id", ""):
        r = coffer.arm("PUT", account_path(coffer, bad_rg, account_name()), data=_account_body(
            identity={"type": "UserAssigned", "userAssignedIdentities": {uai: {}}}), headers=JSON)
        assert_arm_error(r, 400)


@pytest.fixture(scope="module")
def patch_target(coffer, bad_rg):
    return create(coffer.mgmt_clients(), bad_rg, identity=sm.Identity(type="SystemAssigned")).name


BAD_PATCHES = {
    "truncated-json": b'{"tags": {"a": "b"}',
    "not-json": b"patch me",
    "json-array": b"[]",
    "sku-string": b'{"sku": "x"}',
    "sku-unknown": b'{"sku": {"name": "Standard_XYZ"}}',
    "kind-unknown": b'{"kind": "Bogus"}',
    "tags-string": b'{"tags": "x"}',
    "identity-type-unknown": b'{"identity": {"type": "Everything"}}',
    "properties-string": b'{"properties": "x"}',
    "https-off": b'{"properties": {"supportsHttpsTrafficOnly": false}}',
    "cmk": b'{"properties": {"encryption": {"keySource": "Microsoft.Keyvault",'
           b' "keyvaultproperties": {"keyname": "k", "keyvaulturi": "https://v.vault.azure.net"}}}}',
}


@pytest.mark.parametrize("case", list(BAD_PATCHES))
def test_bad_patch_body_is_400_and_changes_nothing(coffer, bad_rg, patch_target, case):
    path = account_path(coffer, bad_rg, patch_target)
    before = coffer.arm("GET", path)
    assert before.status_code == 200, before.text
    r = coffer.arm("PATCH", path, data=BAD_PATCHES[case], headers=JSON)
    assert_arm_error(r, 400)
    after = coffer.arm("GET", path)
    assert after.json() == before.json()


@pytest.mark.parametrize("body", [b"{", b"[]", b"{}", b'{"name": 5, "type": "Microsoft.Storage/storageAccounts"}'],
                         ids=["truncated-json", "json-array", "no-name", "name-number"])
def test_bad_check_name_body_is_400(coffer, body):
    r = coffer.arm("POST", f"{coffer.sub_scope()}/providers/Microsoft.Storage/checkNameAvailability"
                           f"?api-version={API_STORAGE}", data=body, headers=JSON)
    assert_arm_error(r, 400)


def test_odd_storage_requests_never_get_5xx(coffer, bad_rg, patch_target):
    base = f"{coffer.rg_scope(bad_rg)}/providers/Microsoft.Storage/storageAccounts"
    probes = [
        ("PUT", f"{base}/{account_name()}?api-version={API_STORAGE}",
         {"data": _account_body(), "headers": {"Content-Type": "text/plain"}}),
        ("PUT", f"{base}/{account_name()}?api-version={API_STORAGE}", {"data": b"", "headers": JSON}),
        ("PATCH", f"{base}/{patch_target}?api-version={API_STORAGE}", {"data": b"", "headers": JSON}),
        ("POST", f"{base}/{patch_target}/listKeys?api-version={API_STORAGE}", {"data": b"{", "headers": JSON}),
        ("POST", f"{base}/{patch_target}/regenerateKey?api-version={API_STORAGE}", {"data": b"", "headers": JSON}),
        ("POST", f"{base}/{patch_target}/unknownAction?api-version={API_STORAGE}", {}),
        ("GET", f"{base}/{'a' * 300}?api-version={API_STORAGE}", {}),
        ("PUT", f"{base}/x%00y?api-version={API_STORAGE}", {"data": _account_body(), "headers": JSON}),
        ("DELETE", f"{base}/{account_name()}?api-version={API_STORAGE}", {}),
        ("PUT", f"{base}/{account_name()}?api-version={API_STORAGE}",
         {"data": _account_body(identity={"type": "UserAssigned",
                                          "userAssignedIdentities": {"/" * 2000: {}}}), "headers": JSON}),
    ]
    failures = []
    for method, path, kwargs in probes:
        r = coffer.arm(method, path, **kwargs)
        if r.status_code >= 500:
            failures.append(f"{method} {path[:100]} -> {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    r = coffer.arm("GET", account_path(coffer, bad_rg, patch_target))
    assert r.status_code == 200, "the server should still answer after bad input"


# ---------------------------------------------------------------- the az CLI's requests (AZURE-CLIENTS.md §5.2, §5.5, §5.7)

def test_az_cli_create_update_and_list_keys_flow(coffer, rg):
    sub = coffer.subscription_id
    name = account_name()
    path = account_path(coffer, rg, name)

    # az storage account create -g rg -n name -l eastus --sku Standard_LRS --kind StorageV2 --assign-identity
    r = coffer.arm("POST", f"/subscriptions/{sub}/providers/Microsoft.Storage/checkNameAvailability"
                           f"?api-version={API_STORAGE}", json={"name": name, "type": ACCOUNT_TYPE})
    assert r.status_code == 200, r.text
    assert r.json()["nameAvailable"] is True
    r = coffer.arm("PUT", path, json={
        "sku": {"name": "Standard_LRS"}, "kind": "StorageV2", "location": "eastus",
        "properties": {"encryption": {"keySource": "Microsoft.Storage", "services": {"blob": {}}}},
        "identity": {"type": "SystemAssigned"},
    })
    assert r.status_code == 200, r.text  # 200 Succeeded: no polling
    created = r.json()
    assert created["properties"]["provisioningState"] == "Succeeded"
    assert created["id"] == f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}"
    assert is_uuid(created["identity"]["principalId"])
    assert created["identity"]["tenantId"] == coffer.tenant_id
    assert created["properties"]["encryption"]["services"]["blob"]["enabled"] is True
    assert created["properties"]["primaryEndpoints"]["blob"] == f"https://{name}.{coffer.blob_dns_suffix}/"
    r = coffer.arm("POST", f"/subscriptions/{sub}/providers/Microsoft.Storage/checkNameAvailability"
                           f"?api-version={API_STORAGE}", json={"name": name, "type": ACCOUNT_TYPE})
    assert r.json()["nameAvailable"] is False

    # az storage account show -n name (no -g): list by subscription, then GET.
    r = coffer.arm("GET", f"/subscriptions/{sub}/providers/Microsoft.Storage/storageAccounts?api-version={API_STORAGE}")
    assert r.status_code == 200, r.text
    assert created["id"] in {a["id"] for a in r.json()["value"]}
    got = coffer.arm("GET", path)
    assert got.status_code == 200, got.text
    assert got.json()["identity"]["principalId"] == created["identity"]["principalId"]
    lower = coffer.arm("GET", f"/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.storage/storageaccounts/"
                              f"{name}?api-version={API_STORAGE}")
    assert lower.status_code == 200, "ARM paths are case-insensitive"
    assert lower.json()["id"] == created["id"]

    # az storage account update (generic update: GET, then PATCH the CLI's full body; only 200 is accepted).
    r = coffer.arm("PATCH", path, json={
        "sku": {"name": "Standard_LRS"}, "tags": {},
        "properties": {
            "encryption": {"services": {"blob": {"enabled": True, "keyType": "Account"},
                                        "file": {"enabled": True, "keyType": "Account"}},
                           "keySource": "Microsoft.Storage"},
            "accessTier": "Hot", "supportsHttpsTrafficOnly": True,
            "networkAcls": {"bypass": "AzureServices", "virtualNetworkRules": [], "ipRules": [],
                            "defaultAction": "Allow"},
        },
    })
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["id"] == created["id"]
    assert updated["identity"]["principalId"] == created["identity"]["principalId"], "PATCH without identity keeps it"
    assert updated["properties"]["encryption"]["keySource"] == "Microsoft.Storage"
    assert updated["properties"]["provisioningState"] == "Succeeded"

    # az storage blob ... --account-name name (no key): listKeys with $expand=kerb.
    r = coffer.arm("POST", f"{coffer.rg_scope(rg)}/providers/Microsoft.Storage/storageAccounts/{name}/listKeys"
                           f"?api-version={API_STORAGE}&$expand=kerb")
    assert r.status_code == 200, r.text
    keys = r.json()["keys"]
    assert [k["keyName"] for k in keys] == ["key1", "key2"]
    assert all(k["permissions"] == "FULL" and len(base64.b64decode(k["value"])) == 64 for k in keys)

