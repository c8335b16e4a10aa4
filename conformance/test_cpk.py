"""Customer-provided keys (CPK) with azure-storage-blob: the request's AES-256 key encrypts the
blob's data and metadata; the server keeps only a keyed hash of it, never the key."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, CustomerProvidedEncryptionKey

from harness import unique
from test_blob_basic import _client, account  # noqa: F401  (fixture)


def cpk_of(key: bytes) -> CustomerProvidedEncryptionKey:
    return CustomerProvidedEncryptionKey(key_value=base64.b64encode(key).decode(),
                                         key_hash=base64.b64encode(hashlib.sha256(key).digest()).decode())


def refused(fn, code: str, status: int = 409) -> None:
    with pytest.raises(HttpResponseError) as e:
        fn()
    assert e.value.status_code == status, e.value
    assert e.value.error_code == code, e.value


def test_cpk_round_trips_and_key_checks(coffer, account):
    key, other = os.urandom(32), os.urandom(32)
    cpk, wrong = cpk_of(key), cpk_of(other)
    svc = _client(coffer, account)
    cc = svc.create_container(unique("cpk-").lower())
    marker = b"CPK-PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    data = marker * 5000

    blob = cc.get_blob_client("single")
    r = blob.upload_blob(data, cpk=cpk, metadata={"team": "keys"})
    assert r["encryption_key_sha256"] == cpk.key_hash
    assert blob.download_blob(cpk=cpk).readall() == data
    props = blob.get_blob_properties(cpk=cpk)
    assert props.encryption_key_sha256 == cpk.key_hash and props.metadata == {"team": "keys"}

    # Staged upload (Put Block + Put Block List), every block under the same key.
    staged = BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                               credential={"account_name": account["name"], "account_key": account["key"]},
                               connection_verify=coffer.ca, max_single_put_size=16 * 1024, max_block_size=16 * 1024)
    sblob = staged.get_blob_client(cc.container_name, "staged")
    sblob.upload_blob(data, cpk=cpk)
    assert sblob.download_blob(cpk=cpk).readall() == data

    # Without the key, with another key: refused (data, properties, metadata).
    refused(lambda: blob.download_blob().readall(), "BlobUsesCustomerSpecifiedEncryption")
    refused(blob.get_blob_properties, "BlobUsesCustomerSpecifiedEncryption")
    refused(lambda: blob.download_blob(cpk=wrong).readall(), "BlobUsesCustomerSpecifiedEncryption")
    refused(lambda: blob.set_blob_metadata({"a": "b"}), "BlobUsesCustomerSpecifiedEncryption")
    blob.set_blob_metadata({"a": "b"}, cpk=cpk)
    assert blob.get_blob_properties(cpk=cpk).metadata == {"a": "b"}
    # Blocks under another key cannot join the blob.
    sblob.stage_block("YmxvY2sy", b"x" * 10, cpk=wrong)
    refused(lambda: sblob.commit_block_list(["YmxvY2sy"], cpk=cpk), "BlobUsesCustomerSpecifiedEncryption")

    # Listing with metadata works; a CPK blob's metadata (sealed under its key) is not listed.
    listed = {b.name: b for b in cc.list_blobs(include=["metadata"])}
    assert listed["single"].metadata == {} and "staged" in listed

    # A key for a blob that has none.
    plain = cc.get_blob_client("plain")
    plain.upload_blob(b"no cpk")
    refused(lambda: plain.download_blob(cpk=cpk).readall(), "BlobDoesNotUseCustomerSpecifiedEncryption")

    # Bad headers: a hash that is not the key's.
    mismatched = CustomerProvidedEncryptionKey(key_value=cpk.key_value, key_hash=wrong.key_hash)
    with pytest.raises(HttpResponseError) as e:
        cc.get_blob_client("x").upload_blob(b"x", cpk=mismatched)
    assert e.value.status_code == 400

    # Neither the key nor the plaintext is anywhere in the data directory.
    needles = [key, base64.b64encode(key), key.hex().encode(), marker]
    for f in Path(coffer.data_dir).rglob("*"):
        if f.is_file():
            content = f.read_bytes()
            for n in needles:
                assert n not in content, f"{f} contains {n[:10]!r}"
