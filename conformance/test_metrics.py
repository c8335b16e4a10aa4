"""Prometheus metrics at `/metrics` (tenant administrators' management token): the counters move
for the operations a test performs."""

from __future__ import annotations

import datetime
import re

from azure.keyvault.keys.crypto import KeyWrapAlgorithm
from azure.mgmt.storage import models as sm

from harness import unique
from test_cmk import ENCRYPTION_USER, blob_service, cmk, create_account, protected_vault, update

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def scrape(coffer) -> dict[tuple[str, frozenset], float]:
    r = coffer.arm("GET", "/metrics")
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        m = LINE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(metrics, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))


def test_metrics_require_an_administrator(coffer):
    assert coffer.arm("GET", "/metrics", token=None).status_code == 401
    outsider = coffer.new_sp(unique("scraper-"))
    r = coffer.arm("GET", "/metrics", token=coffer.raw_token(outsider.client_id, outsider.client_secret))
    assert r.status_code == 403


def test_counters_move_for_the_operations_performed(coffer, rg):
    before = scrape(coffer)
    kv = protected_vault(coffer, rg)
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10)
    key = kv.keys.create_rsa_key(unique("m-"), size=2048, expires_on=expires)
    kv.crypto(key, remote_only=True).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    update(coffer, rg, account.name, encryption=cmk(kv.url, key.name))
    container = blob_service(coffer, account).get_container_client(unique("c-").lower())
    container.create_container()
    container.upload_blob("b", b"measured")
    for _ in range(5):
        assert container.get_blob_client("b").download_blob().readall() == b"measured"
    after = scrape(coffer)

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("coffer_requests_total", plane="blob", operation="GetBlob", status="206") == 5  # the SDK reads in ranges
    assert moved("coffer_requests_total", plane="blob", operation="PutBlob", status="201") == 1
    assert moved("coffer_requests_total", plane="management",
                 operation="Microsoft.Storage/storageAccounts/write") >= 2
    assert moved("coffer_requests_total", plane="identity", operation="Token") >= 1
    assert moved("coffer_request_duration_seconds_count", plane="blob") >= 7
    assert moved("coffer_vault_operations_total", vault=kv.name, key=key.name, operation="KeyWrap",
                 algorithm="RSA-OAEP-256", result="success") == 1
    assert moved("coffer_vault_operations_total", vault=kv.name, key=key.name, operation="KeyCreate") == 1
    assert moved("coffer_cmk_cache_lookups_total", result="hit") >= 4
    assert moved("coffer_cmk_vault_calls_total") >= 3
    assert value(after, "coffer_cmk_status", account=account.name, status="Healthy") == 1
    assert value(after, "coffer_cmk_status", account=account.name, status="KeyDisabled") == 0
    ttl = value(after, "coffer_key_expiry_seconds", vault=kv.name, key=key.name)
    assert 9 * 86400 < ttl <= 10 * 86400
    assert moved("coffer_audit_records_total") >= 10
