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


def test_cpk_on_put_blob_from_url(coffer, account):
    """Put Blob From URL (`upload_blob_from_url`): the source's key travels in
    x-ms-source-encryption-key, the destination's in x-ms-encryption-key; either may be absent."""
    r1, r2 = os.urandom(32), os.urandom(32)
    k1, k2 = cpk_of(r1), cpk_of(r2)
    cc = _client(coffer, account).create_container(unique("cpkcopy-").lower())
    data = os.urandom(150_000)
    src = cc.get_blob_client("src-cpk")
    src.upload_blob(data, cpk=k1)
    plain = cc.get_blob_client("src-plain")
    plain.upload_blob(data)

    # CPK source -> destination under another key.
    d1 = cc.get_blob_client("dst-k2")
    r = d1.upload_blob_from_url(src.url, source_cpk=k1, cpk=k2)
    assert r["encryption_key_sha256"] == k2.key_hash
    assert d1.download_blob(cpk=k2).readall() == data
    refused(lambda: d1.download_blob(cpk=k1).readall(), "BlobUsesCustomerSpecifiedEncryption")
    refused(lambda: d1.download_blob().readall(), "BlobUsesCustomerSpecifiedEncryption")
    # CPK source -> destination under the account's key.
    d2 = cc.get_blob_client("dst-plain")
    d2.upload_blob_from_url(src.url, source_cpk=k1)
    assert d2.download_blob().readall() == data
    assert d2.get_blob_properties().encryption_key_sha256 is None
    # Plain source -> CPK destination.
    d3 = cc.get_blob_client("dst-from-plain")
    d3.upload_blob_from_url(plain.url, cpk=k2)
    assert d3.download_blob(cpk=k2).readall() == data
    # A CPK source without its key, or with another key: refused, nothing written.
    refused(lambda: cc.get_blob_client("x1").upload_blob_from_url(src.url),
            "BlobUsesCustomerSpecifiedEncryption")
    refused(lambda: cc.get_blob_client("x2").upload_blob_from_url(src.url, source_cpk=k2, cpk=k2),
            "BlobUsesCustomerSpecifiedEncryption")
    # A source key for a source that has none.
    refused(lambda: cc.get_blob_client("x3").upload_blob_from_url(plain.url, source_cpk=k1),
            "BlobDoesNotUseCustomerSpecifiedEncryption")
    assert {b.name for b in cc.list_blobs()} == {"src-cpk", "src-plain", "dst-k2", "dst-plain", "dst-from-plain"}
    # Neither key is anywhere in the data directory.
    needles = [r for raw in (r1, r2) for r in (raw, base64.b64encode(raw), raw.hex().encode())]
    for f in Path(coffer.data_dir).rglob("*"):
        if f.is_file():
            content = f.read_bytes()
            assert not any(n in content for n in needles), f"{f} contains a customer-provided key"
