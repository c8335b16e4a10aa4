"""The audit log through its query API (`GET /coffer/admin/audit`): blob requests and the vault
calls they cause share a correlation id; writes are recorded as started before they run, so a log
that cannot be written stops them (fail closed); no secret reaches a record."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.storage import models as sm

from harness import unique
from test_cmk import ENCRYPTION_USER, blob_service, cmk, create_account, protected_vault, update


def audit(coffer, **filters) -> list[dict]:
    params = "&".join(f"{k}={v}" for k, v in filters.items())
    r = coffer.arm("GET", f"/coffer/admin/audit?{params}")
    assert r.status_code == 200, r.text
    return r.json()["value"]


def test_cmk_blob_read_and_the_unwrap_it_caused_share_a_correlation_id(coffer, rg):
    kv = protected_vault(coffer, rg)
    key = kv.keys.create_rsa_key(unique("cmk-"), size=2048)
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    principal = account.identity.principal_id
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, principal)
    svc = blob_service(coffer, account)
    container = svc.get_container_client(unique("c-").lower())
    container.create_container()
    container.upload_blob("b", b"audited")
    # Enabling the CMK leaves no unwrapped key cached: the next request asks the vault.
    update(coffer, rg, account.name, encryption=cmk(kv.url, key.name))
    seen = {}
    data = container.get_blob_client("b").download_blob(
        raw_response_hook=lambda r: seen.setdefault("rid", r.http_response.headers["x-ms-request-id"])).readall()
    assert data == b"audited"
    records = audit(coffer, correlationId=seen["rid"])
    ops = {r["operationName"]: r for r in records}
    assert "GetBlob" in ops and "KeyUnwrap" in ops, [r["operationName"] for r in records]
    read, unwrap = ops["GetBlob"], ops["KeyUnwrap"]
    assert read["resourceId"] == account.id and read["resultType"] == "Success"
    assert read["identity"]["upn"] == "account key"
    assert unwrap["identity"]["oid"] == principal  # the storage identity is the caller
    assert unwrap["resourceId"] == kv.vault.id and unwrap["resultType"] == "Success"
    assert unwrap["properties"]["id"].startswith(f"{kv.url.rstrip('/')}/keys/{key.name}/")
    for r in (read, unwrap):
        assert r["requestId"] and r["correlationId"] == seen["rid"] and "durationMs" in r
    # A warm read causes no vault call.
    seen.clear()
    container.get_blob_client("b").download_blob(
        raw_response_hook=lambda r: seen.setdefault("rid", r.http_response.headers["x-ms-request-id"])).readall()
    assert [r["operationName"] for r in audit(coffer, correlationId=seen["rid"])] == ["GetBlob"]


def test_query_filters_and_json_lines_export(coffer, rg):
    kv = coffer.data_vault(rg, role="Key Vault Crypto Officer")
    key = kv.keys.create_rsa_key(unique("q-"), size=2048)
    kv.keys.get_key(key.name)
    mine = audit(coffer, resourceId=kv.vault.id, caller=kv.principal.object_id)
    assert [r["operationName"] for r in mine if r["resultType"] != "Started"] == ["KeyCreate", "KeyGet"]
    assert all(r["identity"]["oid"] == kv.principal.object_id for r in mine)
    seqs = [r["seq"] for r in mine]
    assert seqs == sorted(seqs)
    started = audit(coffer, resourceId=kv.vault.id, result="Started")
    assert [r["operationName"] for r in started if r["operationName"].startswith("Key")] == ["KeyCreate"]
    assert "Microsoft.KeyVault/vaults/write" in [r["operationName"] for r in started]
    assert audit(coffer, resourceId=kv.vault.id, operation="KeyGet")[0]["properties"]["id"] == key.id
    assert {r["operationName"] for r in audit(coffer, resourceId=kv.vault.id, key=key.name)} >= {"KeyCreate", "KeyGet"}
    assert audit(coffer, resourceId=kv.vault.id, key="no-such-key") == []
    # Paging.
    page = coffer.arm("GET", f"/coffer/admin/audit?resourceId={kv.vault.id}&top=1").json()
    assert len(page["value"]) == 1 and page["nextLink"]
    # JSON Lines.
    r = coffer.arm("GET", f"/coffer/admin/audit?resourceId={kv.vault.id}&format=jsonl")
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [x["seq"] for x in lines] == [x["seq"] for x in audit(coffer, resourceId=kv.vault.id)]
    # Only tenant administrators read the log.
    outsider = coffer.new_sp(unique("nosy-"))
    r = coffer.arm("GET", "/coffer/admin/audit", token=coffer.raw_token(outsider.client_id, outsider.client_secret))
    assert r.status_code == 403
    assert coffer.arm("GET", "/coffer/admin/audit?top=0").status_code == 400
    assert coffer.arm("GET", "/coffer/admin/audit?from=yesterday").status_code == 400


def test_a_failing_audit_log_fails_the_operation_and_changes_nothing(coffer_clock):
    c = coffer_clock
    rg = c.create_rg()
    kv = c.data_vault(rg, role="Key Vault Crypto Officer")
    assert list(kv.keys.list_properties_of_keys()) == []  # signed in before the fault
    token = c.raw_token()
    assert c.arm("POST", "/coffer/admin/faults", json={"auditFails": True}, token=token).status_code == 200
    try:
        # Sign-ins are audited too: no token while the log is down.
        assert c.token_request({"client_id": c.admin["client_id"], "client_secret": c.admin["client_secret"],
                                "grant_type": "client_credentials",
                                "scope": "https://management.core.windows.net//.default"}).status_code >= 500
        name = unique("rg-")
        r = c.arm("PUT", f"/subscriptions/{c.subscription_id}/resourcegroups/{name}?api-version=2024-11-01",
                  json={"location": "eastus"}, token=token)
        assert r.status_code == 503, r.text
        with pytest.raises(HttpResponseError) as e:
            kv.keys.create_rsa_key("never", size=2048)
        assert e.value.status_code >= 500
    finally:
        assert c.arm("POST", "/coffer/admin/faults", json={"auditFails": False}, token=token).status_code == 200
    # Nothing was created.
    r = c.arm("GET", f"/subscriptions/{c.subscription_id}/resourcegroups/{name}?api-version=2024-11-01")
    assert r.status_code == 404
    assert [k.name for k in kv.keys.list_properties_of_keys()] == []


def test_no_secret_in_any_audit_record_or_log_line(coffer, rg):
    kv = protected_vault(coffer, rg)
    kv.keys.create_rsa_key(unique("s-"), size=2048)
    # Key bytes the test knows: an imported AES key, used once.
    from azure.keyvault.keys import JsonWebKey
    raw = bytes(range(32))
    kv.keys.import_key(unique("oct-"), JsonWebKey(kty="oct-HSM", k=raw, key_ops=["wrapKey", "unwrapKey"]))
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    keys = [k.value for k in coffer.mgmt_clients().storage.storage_accounts.list_keys(rg, account.name)["keys"]]
    svc = blob_service(coffer, account)
    svc.create_container(unique("c-").lower()).upload_blob("x", b"y")
    token = coffer.token()
    vault_token = kv.token()
    everything = coffer.arm("GET", "/coffer/admin/audit?format=jsonl&top=10000").text
    logs = coffer.log_tail(100000)
    secrets = {"admin secret": coffer.admin["client_secret"], "admin password": coffer.admin["password"],
               "principal secret": kv.principal.client_secret, "management token": token,
               "vault token": vault_token, **{f"account key {i}": k for i, k in enumerate(keys)},
               "key bytes (base64url)": base64.urlsafe_b64encode(raw).decode().rstrip("="),
               "key bytes (base64)": base64.b64encode(raw).decode(), "key bytes (hex)": raw.hex()}
    for what, secret in secrets.items():
        for part in (secret, secret[:24]):
            assert part not in everything, f"{what} in the audit log"
            assert part not in logs, f"{what} in the server log"
    assert everything.count("\n") > 10
    uuid.UUID(json.loads(everything.splitlines()[0])["requestId"] or str(uuid.uuid4()))
