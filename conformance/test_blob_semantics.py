"""Blob semantics the SDK relies on, found by review (each failed before its fix): names XML
cannot carry, empty and malformed block lists, conditions on container deletes and metadata,
If-None-Match: * on Delete Blob, metadata rules (names given once, 8 KiB, many names, error
codes), listing page sizes above 5000, a block list's own Content-MD5, and echoed headers."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import ssl
from urllib.parse import urlsplit

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

from harness import raw_request_head, unique
from test_blob_basic import _client, account  # noqa: F401  (fixture)

NOW = datetime.datetime.now(datetime.timezone.utc)
YESTERDAY, TOMORROW = NOW - datetime.timedelta(days=1), NOW + datetime.timedelta(days=1)


def _container(coffer, account):
    return _client(coffer, account).create_container(unique("sem-").lower())


def _send(client, method, url=None, headers=None, content=None):
    """A raw request, signed with Shared Key by the SDK client's pipeline."""
    h = {"x-ms-version": "2025-11-05", **(headers or {})}
    return client._client._client.send_request(HttpRequest(method, url or client.url, headers=h, content=content))


def _raw_put(coffer, account, container, blob, headers):
    """Put Blob of b"x" with these header lines sent as they are (account SAS); (status,
    x-ms-error-code)."""
    sas = generate_account_sas(account["name"], account_key=account["key"],
                               resource_types=ResourceTypes(object=True),
                               permission=AccountSasPermissions(write=True, create=True),
                               expiry=TOMORROW)
    u = urlsplit(coffer.endpoints["blob"])
    conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=30,
                                       context=ssl.create_default_context(cafile=coffer.ca))
    try:
        conn.putrequest("PUT", f"/{account['name']}/{container}/{blob}?{sas}")
        for k, v in [("x-ms-version", "2025-11-05"), ("x-ms-blob-type", "BlockBlob"),
                     ("Content-Length", "1"), *headers]:
            conn.putheader(k, v)
        conn.endheaders(b"x")
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("x-ms-error-code")
    finally:
        conn.close()


def _refused(call, status, code=None):
    with pytest.raises(HttpResponseError) as info:
        call()
    assert info.value.status_code == status, info.value
    if code:
        assert info.value.error_code == code, info.value


def test_names_xml_cannot_carry_are_listed_encoded(coffer, account):
    cc = _container(coffer, account)
    odd = ["a\ufffeb", "dir\uffff/x", "c%d+e f"]
    for n in odd + ["plain"]:
        cc.upload_blob(n, n.encode())
    assert sorted(b.name for b in cc.list_blobs()) == sorted(odd + ["plain"])
    assert {b.name for b in cc.walk_blobs(delimiter="/")} == {"a\ufffeb", "c%d+e f", "dir\uffff/", "plain"}
    # one per page: the markers carry those names too
    pages = [[b.name for b in p] for p in cc.list_blobs(results_per_page=1).by_page()]
    assert sorted(n for p in pages for n in p) == sorted(odd + ["plain"]) and all(len(p) == 1 for p in pages)


def test_empty_and_malformed_block_lists(coffer, account):
    cc = _container(coffer, account)
    cc.upload_blob("empty", iter([]))  # unknown length: the SDK commits <BlockList />
    assert cc.get_blob_client("empty").get_blob_properties().size == 0
    bc = cc.upload_blob("kept", b"data")
    for body in (b"<BlockList><Latest></Latest></BlockList>", b"<BlockList><Latest/></BlockList>"):
        r = _send(bc, "PUT", url=bc.url + "?comp=blocklist", content=body)
        assert (r.status_code, r.headers["x-ms-error-code"]) == (400, "InvalidBlockList"), r.text()
    assert bc.download_blob().readall() == b"data"
    # the block list's own Content-MD5 is checked
    block = base64.b64encode(b"block-1").decode()
    bc.stage_block(block, b"new")
    xml = f'<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>{block}</Latest></BlockList>'.encode()
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = _send(bc, "PUT", url=bc.url + "?comp=blocklist", content=xml, headers={"Content-MD5": wrong})
    assert (r.status_code, r.headers["x-ms-error-code"]) == (400, "Md5Mismatch")
    bc.commit_block_list([block], validate_content=True)
    assert bc.download_blob().readall() == b"new"
    r = _send(bc, "GET", url=bc.url + "?comp=blocklist&blocklisttype=bogus")
    assert r.status_code == 400


def test_container_conditions(coffer, account):
    cc = _container(coffer, account)
    _refused(lambda: cc.set_container_metadata({"a": "b"}, if_modified_since=TOMORROW), 412, "ConditionNotMet")
    _refused(lambda: cc.delete_container(if_unmodified_since=YESTERDAY), 412, "ConditionNotMet")
    _refused(lambda: cc.delete_container(if_modified_since=TOMORROW), 412, "ConditionNotMet")
    assert cc.get_container_properties().metadata == {}
    cc.set_container_metadata({"a": "b"}, if_modified_since=YESTERDAY)
    cc.delete_container(if_unmodified_since=TOMORROW)
    assert not cc.exists()


def test_delete_blob_if_none_match_star(coffer, account):
    bc = _container(coffer, account).upload_blob("b", b"x")
    _refused(lambda: bc.delete_blob(match_condition=MatchConditions.IfMissing), 412, "ConditionNotMet")
    assert bc.exists()


def test_metadata_rules(coffer, account):
    cc = _container(coffer, account)
    many = {f"k{i}": "v" for i in range(300)}  # 300 headers, far under 8 KiB
    cc.upload_blob("many", b"x", metadata=many)
    # (read back from a listing: Python's http.client takes at most 100 response headers)
    [listed] = [b for b in cc.list_blobs(name_starts_with="many", include=["metadata"])]
    assert listed.metadata == many
    _refused(lambda: cc.upload_blob("big", b"x", metadata={"k": "v" * 9000}), 400, "MetadataTooLarge")
    _refused(lambda: cc.upload_blob("bad", b"x", metadata={"1abc": "v"}), 400, "InvalidMetadata")
    # one name twice (as `Key` and `key`): over a raw connection, the SDK would merge them
    status, code = _raw_put(coffer, account, cc.container_name, "dup",
                            [("x-ms-meta-Key", "1"), ("x-ms-meta-key", "2")])
    assert (status, code) == (400, "InvalidMetadata")
    _refused(lambda: cc.set_container_metadata({"k": "v" * 9000}), 400, "MetadataTooLarge")
    assert not cc.get_blob_client("big").exists() and not cc.get_blob_client("dup").exists()


def test_page_sizes_above_5000_mean_5000(coffer, account):
    svc = _client(coffer, account)
    cc = svc.create_container(unique("sem-").lower())
    cc.upload_blob("a", b"1")
    assert [b.name for b in cc.list_blobs(results_per_page=10000)] == ["a"]
    assert cc.container_name in [c.name for c in svc.list_containers(results_per_page=10000)]
    r = _send(cc, "GET", url=cc.url + "?restype=container&comp=list&maxresults=0")
    assert r.status_code == 400


def test_request_id_and_version_are_echoed(coffer, account):
    cc = _container(coffer, account)
    r = _send(cc, "GET", url=cc.url + "?restype=container")
    assert r.status_code == 200
    sent = r.request.headers
    assert r.headers["x-ms-client-request-id"] == sent["x-ms-client-request-id"]
    assert r.headers["x-ms-version"] == sent["x-ms-version"]


def test_a_copy_destination_reports_its_copy(coffer, account):
    """Get Blob Properties and List Blobs (include=copy) report the copy that wrote a blob
    (id, source without its SAS, status, progress, completion time) until Set Blob
    Properties or a new upload changes it."""
    from azure.storage.blob import ContentSettings
    cc = _container(coffer, account)
    src = cc.upload_blob("src", b"copied bytes")
    dst = cc.get_blob_client("dst")
    started = dst.start_copy_from_url(src.url + "?sv=2025-01-05&sig=secret")
    copy = dst.get_blob_properties().copy
    assert copy.status == "success" and copy.id == started["copy_id"]
    assert copy.source == src.url and "sig" not in copy.source
    assert copy.progress == "12/12" and copy.completion_time is not None
    [listed] = list(cc.list_blobs(name_starts_with="dst", include=["copy"]))
    assert (listed.copy.id, listed.copy.status, listed.copy.progress) == (copy.id, "success", "12/12")
    dst.set_blob_metadata({"k": "v"})  # metadata leaves it
    assert dst.get_blob_properties().copy.id == copy.id
    dst.set_http_headers(ContentSettings(content_type="text/plain"))
    assert dst.get_blob_properties().copy.status is None
    assert cc.upload_blob("src", b"new", overwrite=True).get_blob_properties().copy.id is None


def test_block_ids_of_a_blob_have_one_length(coffer, account):
    bc = _container(coffer, account).get_blob_client("b")
    short, long = base64.b64encode(b"aaaa").decode(), base64.b64encode(b"longer-id").decode()
    bc.stage_block(short, b"1")
    _refused(lambda: bc.stage_block(long, b"2"), 400, "InvalidBlobOrBlock")
    bc.commit_block_list([short])
    bc.stage_block(long, b"3")  # nothing uncommitted now: a new length is fine
    bc.commit_block_list([long])
    assert bc.download_blob().readall() == b"3"


def test_bodies_over_azure_limits_are_refused_before_they_are_sent(coffer, account):
    """Put Blob over 5000 MiB (and Put Block over 4000 MiB) is 413 RequestBodyTooLarge, answered
    to `Expect: 100-continue` at once: the client need not send the body."""
    cc = _container(coffer, account)
    sas = generate_account_sas(account["name"], account_key=account["key"],
                               resource_types=ResourceTypes(object=True),
                               permission=AccountSasPermissions(write=True, create=True), expiry=TOMORROW)
    block = base64.b64encode(b"blk").decode()
    for query, size in ((sas, 5001 << 20), (f"comp=block&blockid={block}&{sas}", 4001 << 20)):
        head = raw_request_head(coffer, f"PUT /{account['name']}/{cc.container_name}/big?{query} HTTP/1.1\r\n"
                                "Host: {host}\r\nx-ms-version: 2025-01-05\r\nx-ms-blob-type: BlockBlob\r\n"
                                f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head[:200]
        assert b"x-ms-error-code: RequestBodyTooLarge" in head
