"""Blob checksums beyond Content-MD5 (x-ms-content-crc64, x-ms-range-get-content-md5) and the
Get/Set Blob Service Properties operations, with azure-storage-blob (crc64 needs
azure-storage-extensions, pinned in requirements.txt)."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobServiceClient, CorsRule, RetentionPolicy
from azure.storage.extensions import checksums

from harness import unique
from test_blob_basic import _client, account  # noqa: F401  (fixture)


def crc64(data: bytes) -> bytes:
    return checksums.crc64.compute(data, 0).to_bytes(8, "little")


def raw_put(bc, data: bytes, **headers: str):
    req = HttpRequest("PUT", bc.url, content=data,
                      headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2025-11-05", **headers})
    return bc._client._client.send_request(req)  # pylint: disable=protected-access


def test_crc64_is_validated_on_put_blob_and_put_block(coffer, account):
    cc = _client(coffer, account).create_container(unique("crc-").lower())
    data = os.urandom(100_000)
    # The SDK computes x-ms-content-crc64 for a bytes upload and checks the echo.
    cc.upload_blob("ok", data, validate_content="crc64")
    assert cc.get_blob_client("ok").download_blob().readall() == data
    staged = BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                               credential={"account_name": account["name"], "account_key": account["key"]},
                               connection_verify=coffer.ca, max_single_put_size=16 * 1024, max_block_size=16 * 1024)
    blocks = staged.get_blob_client(cc.container_name, "blocks")
    blocks.stage_block("YmxvY2sx", data[:1000], validate_content="crc64")
    blocks.commit_block_list(["YmxvY2sx"])
    assert blocks.download_blob().readall() == data[:1000]

    resp = raw_put(cc.get_blob_client("good"), b"hello", **{"x-ms-content-crc64": base64.b64encode(crc64(b"hello")).decode()})
    assert resp.status_code == 201
    assert resp.headers["x-ms-content-crc64"] == base64.b64encode(crc64(b"hello")).decode()
    # A wrong CRC64 is refused and nothing is written.
    resp = raw_put(cc.get_blob_client("bad"), b"hello", **{"x-ms-content-crc64": base64.b64encode(crc64(b"hellO")).decode()})
    assert resp.status_code == 400 and resp.headers["x-ms-error-code"] == "Crc64Mismatch"
    resp = raw_put(cc.get_blob_client("bad"), b"hello", **{"x-ms-content-crc64": "not base64 of 8 bytes"})
    assert resp.status_code == 400
    # A structured-message body would be stored as framing bytes: refused.
    resp = raw_put(cc.get_blob_client("bad"), b"hello", **{"x-ms-structured-body": "XSM/1.0; properties=crc64"})
    assert resp.status_code == 400
    assert "bad" not in [b.name for b in cc.list_blobs()]


def test_range_get_content_md5(coffer, account):
    cc = _client(coffer, account).create_container(unique("rmd5-").lower())
    data = os.urandom(5 * 1024 * 1024)
    bc = cc.get_blob_client("big")
    bc.upload_blob(data)
    # validate_content=True on a ranged download sends x-ms-range-get-content-md5: true and
    # checks the Content-MD5 of each range.
    got = bc.download_blob(offset=1000, length=300_000, validate_content=True).readall()
    assert got == data[1000:301_000]
    req = HttpRequest("GET", bc.url, headers={"x-ms-version": "2025-11-05", "x-ms-range": "bytes=0-99",
                                              "x-ms-range-get-content-md5": "true"})
    resp = bc._client._client.send_request(req, stream=True)  # pylint: disable=protected-access
    assert resp.status_code == 206
    assert base64.b64decode(resp.headers["Content-MD5"]) == hashlib.md5(data[:100]).digest()
    # More than 4 MiB, or no range at all: 400.
    for headers in ({"x-ms-range": f"bytes=0-{4 * 1024 * 1024}"}, {}):
        req = HttpRequest("GET", bc.url, headers={"x-ms-version": "2025-11-05",
                                                  "x-ms-range-get-content-md5": "true", **headers})
        assert bc._client._client.send_request(req, stream=True).status_code == 400  # pylint: disable=protected-access


def test_service_properties_are_stored_and_merged(coffer, account):
    svc = _client(coffer, account)
    fresh = svc.get_service_properties()
    assert fresh["delete_retention_policy"].enabled is False
    assert fresh["cors"] == []
    svc.set_service_properties(
        delete_retention_policy=RetentionPolicy(enabled=True, days=7),
        cors=[CorsRule(["https://app.example"], ["GET", "PUT"], max_age_in_seconds=60)])
    props = svc.get_service_properties()
    assert props["delete_retention_policy"].enabled is True and props["delete_retention_policy"].days == 7
    assert [r.allowed_origins for r in props["cors"]] == ["https://app.example"]
    # A section not sent keeps its value.
    svc.set_service_properties(cors=[])
    props = svc.get_service_properties()
    assert props["delete_retention_policy"].days == 7 and props["cors"] == []
    # Malformed or foreign documents are refused.
    for body in (b"<StorageServiceProperties><Logging>", b"<Other/>",
                 b"<StorageServiceProperties><Bogus/></StorageServiceProperties>"):
        req = HttpRequest("PUT", f"{svc.url}?restype=service&comp=properties", content=body,
                          headers={"x-ms-version": "2025-11-05"})
        resp = svc._client._client.send_request(req)  # pylint: disable=protected-access
        assert resp.status_code == 400, body
        assert resp.headers["x-ms-error-code"] == "InvalidXmlDocument"


def test_checksums_of_large_bodies(coffer, account):
    """Bodies of 1 MiB and more are hashed on a thread beside the encryption: the same answers."""
    cc = _client(coffer, account).create_container(unique("big-").lower())
    data = os.urandom(3 * 1024 * 1024 + 17)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    good = base64.b64encode(crc64(data)).decode()
    resp = raw_put(cc.get_blob_client("ok"), data, **{"Content-MD5": md5, "x-ms-content-crc64": good})
    assert resp.status_code == 201, resp.text()
    assert resp.headers["Content-MD5"] == md5 and resp.headers["x-ms-content-crc64"] == good
    props = cc.get_blob_client("ok").get_blob_properties()
    assert bytes(props.content_settings.content_md5) == hashlib.md5(data).digest()
    assert cc.get_blob_client("ok").download_blob().readall() == data
    bad_md5 = base64.b64encode(hashlib.md5(data[:-1]).digest()).decode()
    resp = raw_put(cc.get_blob_client("bad"), data, **{"Content-MD5": bad_md5})
    assert resp.status_code == 400 and resp.headers["x-ms-error-code"] == "Md5Mismatch"
    resp = raw_put(cc.get_blob_client("bad"), data, **{"x-ms-content-crc64": base64.b64encode(crc64(data[1:])).decode()})
    assert resp.status_code == 400 and resp.headers["x-ms-error-code"] == "Crc64Mismatch"
    assert [b.name for b in cc.list_blobs()] == ["ok"]
