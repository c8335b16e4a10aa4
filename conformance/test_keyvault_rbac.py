"""Key Vault data-plane authorization: the challenge, audiences, and the built-in Key Vault data roles."""

from __future__ import annotations

import os

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.keyvault.keys import JsonWebKey, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
from azure.keyvault.keys._shared.http_challenge import HttpChallenge

from harness import (
    API_SUBSCRIPTIONS, STORAGE_SCOPE, StaticTokenCredential, digest, error_code, oaep, public_key, unique,
    verify_locally,
)

CEK = bytes(range(32))


def assert_rbac_denied(fn, *args, **kwargs):
    """403 Forbidden with innererror ForbiddenByRbac, as Key Vault answers a caller without the data action."""
    with pytest.raises(HttpResponseError) as info:
        fn(*args, **kwargs)
    exc = info.value
    assert exc.status_code == 403, f"expected 403, got {exc.status_code}: {exc}"
    assert error_code(exc) == "Forbidden", str(exc)
    assert (exc.error.innererror or {}).get("code") == "ForbiddenByRbac", f"innererror: {exc.error.innererror}"


def assert_challenge(coffer, resp):
    assert resp.status_code == 401, f"expected 401, got {resp.status_code}: {resp.text[:300]}"
    header = resp.headers.get("WWW-Authenticate", "")
    assert header == (f'Bearer authorization="{coffer.authority}/{coffer.tenant_id}", '
                      f'resource="https://{coffer.vault_dns_suffix}"'), header
    challenge = HttpChallenge(resp.request.url, header)
    assert challenge.tenant_id == coffer.tenant_id
    assert resp.json()["error"]["code"] == "Unauthorized"


def _rotate_policy():
    return [KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")]


@pytest.fixture
def seeded(kv):
    """kv plus an RSA key and an oct key made by its administrator, and a wrapped CEK for each."""
    rsa_key = kv.keys.create_rsa_key(unique("rsa-"))
    oct_key = kv.keys.create_oct_key(unique("oct-"), size=256, hardware_protected=True)
    kv.rsa_key, kv.oct_key = rsa_key, oct_key
    kv.rsa_wrapped = public_key(rsa_key.key).encrypt(CEK, oaep("RSA-OAEP"))
    kv.oct_wrapped = kv.crypto(oct_key.id, remote_only=True).wrap_key("A256KW", CEK).encrypted_key
    return kv


# ---------------------------------------------------------------- authentication

def test_challenge_on_a_vault(kv):
    for method, path in (("GET", "/keys"), ("POST", f"/keys/{unique('k-')}/create"), ("GET", "/deletedkeys")):
        assert_challenge(kv.coffer, kv.raw(method, path, token=None))


@pytest.mark.parametrize("audience", ["management", "storage"])
def test_token_for_another_audience_gets_the_challenge(coffer, seeded, audience):
    kv = seeded
    cred = coffer.credential_for(kv.principal)
    token = coffer.token(cred) if audience == "management" else coffer.token(cred, scope=STORAGE_SCOPE)
    assert_challenge(coffer, kv.raw("GET", f"/keys/{kv.rsa_key.name}/", token=token))
    assert_challenge(coffer, kv.raw("POST", f"/keys/{unique('k-')}/create", token=token, json={"kty": "EC"}))
    # The SDK follows the challenge, gets the same wrong token again, and gives up.
    client = coffer.key_client(kv.url, StaticTokenCredential(token))
    with pytest.raises(ClientAuthenticationError):
        client.get_key(kv.rsa_key.name)


def test_garbage_token_gets_the_challenge(kv):
    assert_challenge(kv.coffer, kv.raw("GET", "/keys", token="not-a-jwt"))
    header, claims, _sig = kv.token().split(".")
    assert_challenge(kv.coffer, kv.raw("GET", "/keys", token=f"{header}.{claims}.AAAA"))


def test_expired_token_gets_the_challenge(coffer_clock):
    kv = coffer_clock.data_vault()
    token = kv.token()
    assert kv.raw("GET", "/keys", token=token).status_code == 200  # control
    coffer_clock.advance_clock(7200)
    assert_challenge(coffer_clock, kv.raw("GET", "/keys", token=token))
    kv.reconnect()  # a new token, stamped with the test clock
    assert kv.raw("GET", "/keys").status_code == 200


def test_vault_token_is_refused_by_management(kv):
    r = kv.coffer.arm("GET", f"/subscriptions?api-version={API_SUBSCRIPTIONS}", token=kv.token())
    assert r.status_code == 401


# ---------------------------------------------------------------- no role

def test_principal_without_a_role_is_forbidden_by_rbac(seeded):
    kv = seeded
    keys = kv.client_for(kv.principal_with(None))
    assert_rbac_denied(keys.get_key, kv.rsa_key.name)
    assert_rbac_denied(lambda: list(keys.list_properties_of_keys()))
    assert_rbac_denied(keys.create_rsa_key, unique("nope-"))
    assert_rbac_denied(keys.get_key, unique("missing-"))  # 403, not 404: existence is not disclosed
    r = kv.raw("GET", "/keys", token=kv.token(kv.principal_with(None)))
    assert r.status_code == 403 and r.json()["error"]["innererror"]["code"] == "ForbiddenByRbac", r.text[:300]


def test_subscription_owner_has_no_data_actions(coffer, seeded):
    kv = seeded
    keys = coffer.key_client(kv.url)  # the admin: Owner of the subscription
    assert_rbac_denied(keys.get_key, kv.rsa_key.name)
    assert_rbac_denied(keys.create_ec_key, unique("owner-"))
    assert_rbac_denied(coffer.crypto_client(kv.rsa_key.id).unwrap_key, "RSA-OAEP", kv.rsa_wrapped)


# ---------------------------------------------------------------- built-in roles

def test_crypto_officer_manages_the_whole_key_lifecycle(seeded):
    kv = seeded
    officer = kv.principal_with("Key Vault Crypto Officer")
    keys = kv.client_for(officer)
    name = unique("officer-")
    key = keys.create_rsa_key(name)
    keys.import_key(unique("officer-imp-"), JsonWebKey(kty="oct-HSM", k=os.urandom(16)))
    assert keys.update_key_properties(name, tags={"by": "officer"}).properties.tags == {"by": "officer"}
    assert keys.rotate_key(name).id != key.id
    keys.update_key_rotation_policy(name, KeyRotationPolicy(), lifetime_actions=_rotate_policy())
    assert keys.get_key_rotation_policy(name).lifetime_actions[0].time_after_create == "P30D"
    d = digest("RS256", b"officer")
    verify_locally(key.key, "RS256", d, kv.crypto(key.id, officer).sign("RS256", d).signature)
    backup = keys.backup_key(name)
    keys.begin_delete_key(name).wait()
    assert name in {k.name for k in keys.list_deleted_keys()}
    keys.begin_recover_deleted_key(name).wait()
    keys.begin_delete_key(name).wait()
    keys.purge_deleted_key(name)
    assert keys.restore_key_backup(backup).name == name
    assert len(keys.get_random_bytes(16)) == 16


def test_crypto_service_encryption_user_can_only_read_wrap_and_unwrap(seeded):
    kv = seeded
    seu = kv.principal_with("Key Vault Crypto Service Encryption User")
    keys = kv.client_for(seu)
    assert keys.get_key(kv.rsa_key.name).id == kv.rsa_key.id

    rsa_client = kv.crypto(kv.rsa_key.id, seu, remote_only=True)
    assert rsa_client.unwrap_key("RSA-OAEP", kv.rsa_wrapped).key == CEK
    wrapped = rsa_client.wrap_key("RSA-OAEP", CEK).encrypted_key
    assert kv.crypto(kv.rsa_key.id).unwrap_key("RSA-OAEP", wrapped).key == CEK
    oct_client = kv.crypto(kv.oct_key.id, seu, remote_only=True)
    assert oct_client.unwrap_key("A256KW", kv.oct_wrapped).key == CEK
    assert oct_client.wrap_key("A256KW", CEK).encrypted_key == kv.oct_wrapped  # RFC 3394 is deterministic
    # The CMK flow as storage runs it: the SDK fetches the key, wraps locally, unwraps in the vault.
    sdk = kv.crypto(kv.rsa_key.id, seu)
    assert sdk.unwrap_key("RSA-OAEP-256", sdk.wrap_key("RSA-OAEP-256", CEK).encrypted_key).key == CEK

    assert_rbac_denied(keys.create_rsa_key, unique("seu-"))
    assert_rbac_denied(keys.import_key, unique("seu-"), JsonWebKey(kty="oct-HSM", k=os.urandom(16)))
    assert_rbac_denied(keys.begin_delete_key, kv.rsa_key.name)
    assert_rbac_denied(keys.update_key_properties, kv.rsa_key.name, enabled=False)
    assert_rbac_denied(keys.rotate_key, kv.rsa_key.name)
    assert_rbac_denied(keys.backup_key, kv.rsa_key.name)
    assert_rbac_denied(rsa_client.sign, "RS256", digest("RS256", b"x"))
    assert_rbac_denied(rsa_client.decrypt, "RSA-OAEP", kv.rsa_wrapped)
    assert_rbac_denied(rsa_client.encrypt, "RSA-OAEP", b"x")
    assert_rbac_denied(rsa_client.verify, "RS256", digest("RS256", b"x"), b"\0" * 256)
    assert_rbac_denied(keys.update_key_rotation_policy, kv.rsa_key.name, KeyRotationPolicy(),
                       lifetime_actions=_rotate_policy())
    # Nothing changed.
    assert kv.keys.get_key(kv.rsa_key.name).properties.enabled is True
    assert len(list(kv.keys.list_properties_of_key_versions(kv.rsa_key.name))) == 1


def test_crypto_user_uses_keys_but_cannot_manage_them(seeded):
    kv = seeded
    user = kv.principal_with("Key Vault Crypto User")
    keys = kv.client_for(user)
    name = kv.rsa_key.name
    assert name in {k.name for k in keys.list_properties_of_keys()}
    client = kv.crypto(kv.rsa_key.id, user, remote_only=True)
    assert client.unwrap_key("RSA-OAEP", kv.rsa_wrapped).key == CEK
    assert client.decrypt("RSA-OAEP", client.encrypt("RSA-OAEP", b"user").ciphertext).plaintext == b"user"
    d = digest("PS384", b"user")
    sig = client.sign("PS384", d).signature
    assert client.verify("PS384", d, sig).is_valid is True
    assert keys.update_key_properties(name, tags={"by": "user"}).properties.tags == {"by": "user"}
    assert keys.backup_key(name)

    assert_rbac_denied(keys.create_rsa_key, unique("user-"))
    assert_rbac_denied(keys.import_key, unique("user-"), JsonWebKey(kty="oct-HSM", k=os.urandom(16)))
    assert_rbac_denied(keys.begin_delete_key, name)
    assert_rbac_denied(keys.rotate_key, name)
    assert_rbac_denied(keys.update_key_rotation_policy, name, KeyRotationPolicy(), lifetime_actions=_rotate_policy())
    kv.keys.begin_delete_key(kv.oct_key.name).wait()
    assert_rbac_denied(keys.purge_deleted_key, kv.oct_key.name)
    assert_rbac_denied(keys.begin_recover_deleted_key, kv.oct_key.name)
    assert kv.keys.get_key(name).id == kv.rsa_key.id


def test_key_vault_reader_reads_metadata_only(seeded):
    kv = seeded
    reader = kv.principal_with("Key Vault Reader")
    keys = kv.client_for(reader)
    name = kv.rsa_key.name
    assert {name, kv.oct_key.name} <= {k.name for k in keys.list_properties_of_keys()}
    assert keys.get_key(name).key.n == kv.rsa_key.key.n, "the public key is metadata"
    assert [p.id for p in keys.list_properties_of_key_versions(name)] == [kv.rsa_key.id]
    assert keys.get_key_rotation_policy(name).lifetime_actions

    client = kv.crypto(kv.rsa_key.id, reader, remote_only=True)
    assert_rbac_denied(client.wrap_key, "RSA-OAEP", CEK)
    assert_rbac_denied(client.unwrap_key, "RSA-OAEP", kv.rsa_wrapped)
    assert_rbac_denied(client.sign, "RS256", digest("RS256", b"x"))
    assert_rbac_denied(client.decrypt, "RSA-OAEP", kv.rsa_wrapped)
    assert_rbac_denied(kv.crypto(kv.oct_key.id, reader, remote_only=True).unwrap_key, "A256KW", kv.oct_wrapped)
    assert_rbac_denied(keys.create_ec_key, unique("reader-"))
    assert_rbac_denied(keys.update_key_properties, name, enabled=False)
    assert_rbac_denied(keys.begin_delete_key, name)
    assert_rbac_denied(keys.backup_key, name)
    assert kv.keys.get_key(name).properties.enabled is True


# ---------------------------------------------------------------- scopes

@pytest.mark.parametrize("scope_kind", ["resource-group", "subscription"])
def test_data_role_inherited_from_a_wider_scope(coffer, seeded, scope_kind):
    kv = seeded
    principal = kv.principal_with(None)
    scope = coffer.rg_scope(kv.rg) if scope_kind == "resource-group" else coffer.sub_scope()
    coffer.assign_role(scope, "Key Vault Crypto Service Encryption User", principal.object_id)
    client = kv.crypto(kv.rsa_key.id, principal, remote_only=True)
    assert client.unwrap_key("RSA-OAEP", kv.rsa_wrapped).key == CEK
    assert_rbac_denied(kv.client_for(principal).create_rsa_key, unique("inherit-"))


def test_vault_assignment_does_not_reach_another_vault(coffer, seeded):
    kv = seeded
    other = coffer.data_vault(kv.rg)
    other_key = other.keys.create_rsa_key(unique("other-"))
    # kv.principal is Key Vault Administrator on kv only.
    assert_rbac_denied(coffer.key_client(other.url, kv.cred).get_key, other_key.name)
    assert_rbac_denied(kv.crypto(other_key.id, remote_only=True).wrap_key, "RSA-OAEP", CEK)


def test_deleting_the_assignment_revokes_data_access(coffer, seeded):
    kv = seeded
    principal = kv.principal_with(None)
    assignment = coffer.assign_role(kv.vault.id, "Key Vault Crypto User", principal.object_id)
    client = kv.crypto(kv.rsa_key.id, principal, remote_only=True)
    assert client.unwrap_key("RSA-OAEP", kv.rsa_wrapped).key == CEK

    coffer.mgmt_clients().authorization.role_assignments.delete(kv.vault.id, assignment.name)
    assert_rbac_denied(client.unwrap_key, "RSA-OAEP", kv.rsa_wrapped)  # same token, checked per request


def test_management_role_grants_no_data_access(coffer, seeded):
    """Contributor / Key Vault Contributor manage the vault resource but cannot touch keys."""
    kv = seeded
    principal = kv.principal_with(None)
    coffer.assign_role(kv.vault.id, "Contributor", principal.object_id)
    coffer.assign_role(kv.vault.id, "f25e0fa2-a7c8-4377-a976-54943a77a395", principal.object_id)  # KV Contributor
    keys = kv.client_for(principal)
    assert_rbac_denied(keys.get_key, kv.rsa_key.name)
    assert_rbac_denied(keys.create_rsa_key, unique("contrib-"))
    assert coffer.clients_for(principal).keyvault.vaults.get(kv.rg, kv.name).id == kv.vault.id



@pytest.mark.beyond_contract
def test_role_assigned_on_a_single_key(coffer, seeded):
    """Azure RBAC scopes can name one key: {vault id}/keys/{name}."""
    kv = seeded
    principal = kv.principal_with(None)
    coffer.assign_role(f"{kv.vault.id}/keys/{kv.rsa_key.name}", "Key Vault Crypto User", principal.object_id)
    keys = kv.client_for(principal)
    assert keys.get_key(kv.rsa_key.name).id == kv.rsa_key.id
    assert kv.crypto(kv.rsa_key.id, principal).unwrap_key("RSA-OAEP", kv.rsa_wrapped).key == CEK
    assert_rbac_denied(keys.get_key, kv.oct_key.name)
    assert_rbac_denied(kv.crypto(kv.oct_key.id, principal, remote_only=True).unwrap_key, "A256KW", kv.oct_wrapped)
    assert_rbac_denied(lambda: list(keys.list_properties_of_keys()))  # listing needs the vault scope
