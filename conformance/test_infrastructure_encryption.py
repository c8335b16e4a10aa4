"""Infrastructure encryption (`requireInfrastructureEncryption`), with azure-mgmt-storage and
azure-storage-blob: chosen when an account or an encryption scope is created, never changed
afterwards; the data of such an account or scope is encrypted twice, the second layer under an
independent platform key with another algorithm (object format v2, docs/design/blob-format.md).

The test reads the stored objects in the data directory: a double-encrypted object carries two
layers in its header and 16 more bytes per segment, and nothing holds the plaintext.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.storage import models as sm
from azure.storage.blob import BlobServiceClient

from harness import unique
from test_cmk import account_name, blob_service

SEGMENT = 64 * 1024


def create(coffer, rg: str, infra: bool | None) -> sm.StorageAccount:
    enc = None if infra is None else sm.Encryption(key_source="Microsoft.Storage",
                                                   require_infrastructure_encryption=infra)
    return coffer.mgmt_clients().storage.storage_accounts.begin_create(rg, account_name(), sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus", encryption=enc)).result()


def parse_header(b: bytes) -> dict:
    """The object header (docs/design/blob-format.md), versions 1 and 2."""
    assert b[:4] == b"CFO1"
    h = {"version": b[4], "algorithm": b[5], "segment_log2": b[6],
         "plaintext_len": int.from_bytes(b[8:16], "big")}
    id_len = b[23]
    h["aek_id"] = b[24:24 + id_len].decode()
    at = 24 + id_len
    assert b[at] == 40
    at += 1 + 40
    if h["version"] == 2:
        h["outer_algorithm"] = b[at]
        at += 1 + 7
        key_len = b[at]
        h["outer_key_id"] = b[at + 1:at + 1 + key_len].decode()
        at += 1 + key_len
        assert b[at] == 40
        at += 1 + 40
    h["header_len"] = at
    return h


def stored_objects(coffer, aek_id_prefix: str) -> list[tuple[dict, int]]:
    """(header, file size) of every stored object whose AEK id starts with the prefix."""
    out = []
    for p in (coffer.data_dir / "bytes").rglob("*"):
        if p.is_file():
            b = p.read_bytes()
            if b[:4] == b"CFO1" and b[24:24 + b[23]].decode(errors="replace").startswith(aek_id_prefix):
                out.append((parse_header(b), len(b)))
    return out


def segments(n: int) -> int:
    return max(1, -(-n // SEGMENT))


def no_plaintext_in(data_dir: Path, *plains: bytes) -> None:
    probes = [p[i:i + 32] for p in plains for i in range(0, len(p) - 32, max(1, len(p) // 7))]
    for f in data_dir.rglob("*"):
        if f.is_file():
            content = f.read_bytes()
            for probe in probes:
                assert probe not in content, f"plaintext found in {f}"


def test_double_encrypted_objects_differ_and_both_read_back(coffer, rg):
    single = create(coffer, rg, None)
    double = create(coffer, rg, True)
    assert not single.encryption.require_infrastructure_encryption
    assert double.encryption.require_infrastructure_encryption is True
    data = os.urandom(5 * SEGMENT + 1234)  # six segments, the last one short
    for acct in (single, double):
        cc = blob_service(coffer, acct).get_container_client("data")
        cc.create_container()
        cc.upload_blob("same-plaintext", data)
        assert cc.get_blob_client("same-plaintext").download_blob().readall() == data
        assert cc.get_blob_client("same-plaintext").download_blob(offset=SEGMENT - 10, length=SEGMENT + 20).readall() \
            == data[SEGMENT - 10:2 * SEGMENT + 10]

    [(h1, size1)] = stored_objects(coffer, f"{single.name}/")
    [(h2, size2)] = stored_objects(coffer, f"{double.name}/")
    assert h1["version"] == 1 and h1["algorithm"] == 1 and "outer_algorithm" not in h1
    assert h2["version"] == 2 and h2["algorithm"] == 1  # inner layer: AES-256-GCM under the account's key
    assert h2["outer_algorithm"] == 2  # outer layer: ChaCha20-Poly1305 under the infrastructure key
    assert h2["outer_key_id"].startswith("platform/infrastructure/")
    assert h1["plaintext_len"] == h2["plaintext_len"] == len(data)
    n = segments(len(data))
    assert size1 == h1["header_len"] + len(data) + 16 * n  # one tag per segment
    assert size2 == h2["header_len"] + len(data) + 32 * n  # two tags per segment: two layers

    # A staged upload (Put Block + Put Block List) in the double-encrypted account.
    key = coffer.mgmt_clients().storage.storage_accounts.list_keys(rg, double.name)["keys"][0].value
    staged = BlobServiceClient(f"{coffer.endpoints['blob']}/{double.name}",
                               credential={"account_name": double.name, "account_key": key},
                               connection_verify=coffer.ca, max_single_put_size=100 * 1024,
                               max_block_size=100 * 1024)
    sb = staged.get_blob_client("data", "staged")
    sb.upload_blob(data)
    assert sb.download_blob().readall() == data
    assert all(h["version"] == 2 for h, _ in stored_objects(coffer, f"{double.name}/"))
    no_plaintext_in(coffer.data_dir, data)


def test_infrastructure_encryption_is_chosen_at_creation_only(coffer, rg):
    storage = coffer.mgmt_clients().storage
    double = create(coffer, rg, True)
    single = create(coffer, rg, False)
    for acct, other in ((double, False), (single, True)):
        with pytest.raises(HttpResponseError) as e:
            storage.storage_accounts.update(rg, acct.name, sm.StorageAccountUpdateParameters(
                encryption=sm.Encryption(key_source="Microsoft.Storage", require_infrastructure_encryption=other)))
        assert e.value.status_code == 400
        assert e.value.error.code == "AccountPropertyCannotBeUpdated", e.value.error.code
        assert "requireInfrastructureEncryption" in e.value.message
    # Restating the value it has is not a change.
    same = storage.storage_accounts.update(rg, double.name, sm.StorageAccountUpdateParameters(
        encryption=sm.Encryption(key_source="Microsoft.Storage", require_infrastructure_encryption=True)))
    assert same.encryption.require_infrastructure_encryption is True

    # Scopes: chosen at creation; a scope of a double-encrypted account is double-encrypted.
    s_infra, s_plain, s_inherit = (unique(p).lower() for p in ("si-", "sp-", "sh-"))
    created = storage.encryption_scopes.put(rg, single.name, s_infra, sm.EncryptionScope(
        source="Microsoft.Storage", require_infrastructure_encryption=True))
    assert created.require_infrastructure_encryption is True
    assert storage.encryption_scopes.put(rg, single.name, s_plain, sm.EncryptionScope(
        source="Microsoft.Storage")).require_infrastructure_encryption is False
    assert storage.encryption_scopes.put(rg, double.name, s_inherit, sm.EncryptionScope(
        source="Microsoft.Storage")).require_infrastructure_encryption is True
    for name, value in ((s_infra, False), (s_plain, True)):
        with pytest.raises(HttpResponseError) as e:
            storage.encryption_scopes.patch(rg, single.name, name, sm.EncryptionScope(
                require_infrastructure_encryption=value))
        assert e.value.status_code == 400
        assert e.value.error.code == "AccountPropertyCannotBeUpdated", e.value.error.code
    # A state change with the same value restated goes through.
    storage.encryption_scopes.patch(rg, single.name, s_infra, sm.EncryptionScope(
        state="Enabled", require_infrastructure_encryption=True))

    data = os.urandom(70_000)
    cc = blob_service(coffer, single).get_container_client("data")
    cc.create_container()
    cc.upload_blob("in-infra-scope", data, encryption_scope=s_infra)
    cc.upload_blob("in-plain-scope", data, encryption_scope=s_plain)
    cc.upload_blob("no-scope", data)
    for b in ("in-infra-scope", "in-plain-scope", "no-scope"):
        assert cc.get_blob_client(b).download_blob().readall() == data
    [(hi, _)] = stored_objects(coffer, f"{single.name}/scope/{s_infra}/")
    [(hp, _)] = stored_objects(coffer, f"{single.name}/scope/{s_plain}/")
    [(ha, _)] = stored_objects(coffer, f"{single.name}/aek/")
    assert (hi["version"], hp["version"], ha["version"]) == (2, 1, 1)
    dc = blob_service(coffer, double).get_container_client("data")
    dc.create_container()
    dc.upload_blob("in-inherited-scope", data, encryption_scope=s_inherit)
    assert dc.get_blob_client("in-inherited-scope").download_blob().readall() == data
    [(hh, _)] = stored_objects(coffer, f"{double.name}/scope/{s_inherit}/")
    assert hh["version"] == 2
    no_plaintext_in(coffer.data_dir, data)


def test_a_part_is_read_only_in_the_format_it_was_written_in(coffer_private):
    """Each part records its object format: a double-encrypted part whose record is made to say
    "one layer" (as if its object had been swapped for a single-layer one) is refused."""
    import json
    import sqlite3

    c = coffer_private
    rg = c.create_rg()
    account = create(c, rg, True)
    svc = blob_service(c, account)
    cc = svc.get_container_client("cnt")
    cc.create_container()
    data = os.urandom(100_000)
    cc.upload_blob("b", data)

    def parts_format(new=None):
        db = sqlite3.connect(c.data_dir / "coffer.db")
        try:
            row = db.execute("SELECT data FROM blobs WHERE account = ? AND name = 'b'", (account.name,)).fetchone()
            rec = json.loads(row[0])
            if new is not None:
                for p in rec["parts"]:
                    p["format"] = new
                db.execute("UPDATE blobs SET data = ? WHERE account = ? AND name = 'b'", (json.dumps(rec), account.name))
                db.commit()
            return [p.get("format") for p in rec["parts"]]
        finally:
            db.close()

    assert parts_format() == [2]
    assert c.stop() == 0
    parts_format(1)
    c.start()
    key = c.mgmt_clients().storage.storage_accounts.list_keys(rg, account.name)["keys"][0].value
    no_retry = BlobServiceClient(f"{c.endpoints['blob']}/{account.name}", retry_total=0,
                                 credential={"account_name": account.name, "account_key": key},
                                 connection_verify=c.ca)
    with pytest.raises(HttpResponseError) as e:
        no_retry.get_container_client("cnt").download_blob("b").readall()
    assert e.value.status_code == 500
    assert c.stop() == 0
    parts_format(2)
    c.start()
    assert blob_service(c, account).get_container_client("cnt").download_blob("b").readall() == data
