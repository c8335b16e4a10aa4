"""Blob data plane, first slice: containers and single-request block blobs with the official
azure-storage-blob SDK (Shared Key and bearer credentials), encryption at rest checked on disk."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.storage import models as sm
from azure.storage.blob import BlobServiceClient

from harness import unique


def _account_name() -> str:
    return "acc" + uuid.uuid4().hex[:12]


def _storage(coffer, cred=None):
    from azure.mgmt.storage import StorageManagementClient
    return StorageManagementClient(cred or coffer.credential(), coffer.subscription_id, base_url=coffer.management,
                                   credential_scopes=["https://management.core.windows.net//.default"],
                                   connection_verify=coffer.ca)


@pytest.fixture
def account(coffer, rg):
    name = _account_name()
    st = _storage(coffer)
    acct = st.storage_accounts.begin_create(rg, name, sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")).result()
    key = st.storage_accounts.list_keys(rg, name)["keys"][0].value
    return {"name": name, "id": acct.id, "key": key, "rg": rg}


def _client(coffer, account, key=None) -> BlobServiceClient:
    return BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                             credential={"account_name": account["name"], "account_key": key or account["key"]},
                             connection_verify=coffer.ca)


def test_container_lifecycle(coffer, account):
    svc = _client(coffer, account)
    name = unique("c-").lower()
    svc.create_container(name, metadata={"team": "keys"})
    with pytest.raises(ResourceExistsError):
        svc.create_container(name)
    props = svc.get_container_client(name).get_container_properties()
    assert props.metadata == {"team": "keys"}
    assert name in [c.name for c in svc.list_containers()]
    listed = {c.name: c for c in svc.list_containers(include_metadata=True)}
    assert listed[name].metadata == {"team": "keys"}
    svc.delete_container(name)
    with pytest.raises(ResourceNotFoundError):
        svc.get_container_client(name).get_container_properties()
    with pytest.raises(HttpResponseError) as info:
        svc.create_container("A_b")
    assert info.value.status_code == 400


@pytest.mark.parametrize("blob_name", ["plain.bin", "dir/file one.txt", "ünïcødé/名前.dat", "a+b%20c.bin"])
def test_round_trip_is_byte_exact(coffer, account, blob_name):
    cc = _client(coffer, account).create_container(unique("rt-").lower())
    data = os.urandom(200_003)
    cc.upload_blob(blob_name, data, metadata={"a1": "one", "a_1": "two"})
    got = cc.download_blob(blob_name).readall()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    props = cc.get_blob_client(blob_name).get_blob_properties()
    assert props.size == len(data)
    assert props.metadata == {"a1": "one", "a_1": "two"}
    assert props.server_encrypted is True
    assert cc.download_blob(blob_name, offset=65_530, length=70_000).readall() == data[65_530:135_530]
    assert cc.download_blob(blob_name, offset=len(data) - 3).readall() == data[-3:]


def test_empty_blob_and_overwrite_rules(coffer, account):
    cc = _client(coffer, account).create_container(unique("em-").lower())
    cc.upload_blob("empty", b"")
    assert cc.download_blob("empty").readall() == b""
    with pytest.raises(ResourceExistsError):
        cc.upload_blob("empty", b"x")  # overwrite=False sends If-None-Match: *
    cc.upload_blob("empty", b"now full", overwrite=True)
    assert cc.download_blob("empty").readall() == b"now full"


def test_listing_flat_hierarchical_and_paged(coffer, account):
    cc = _client(coffer, account).create_container(unique("ls-").lower())
    names = ["a/1", "a/2", "a/b/3", "b/4", "top", "zz"]
    for n in names:
        cc.upload_blob(n, n.encode())
    assert [b.name for b in cc.list_blobs()] == names
    assert [b.name for b in cc.list_blobs(name_starts_with="a/")] == ["a/1", "a/2", "a/b/3"]
    # The SDK yields a page's prefixes before its blobs.
    assert [b.name for b in cc.walk_blobs(delimiter="/")] == ["a/", "b/", "top", "zz"]
    assert [b.name for b in cc.walk_blobs(name_starts_with="a/", delimiter="/")] == ["a/b/", "a/1", "a/2"]
    pages = list(cc.list_blobs(results_per_page=2).by_page())
    assert [[b.name for b in p] for p in pages] == [names[0:2], names[2:4], names[4:6]]


def test_delete_blob(coffer, account):
    cc = _client(coffer, account).create_container(unique("dl-").lower())
    cc.upload_blob("x", b"1")
    cc.delete_blob("x")
    with pytest.raises(ResourceNotFoundError) as info:
        cc.download_blob("x").readall()
    assert info.value.error_code == "BlobNotFound"
    with pytest.raises(ResourceNotFoundError):
        cc.delete_blob("x")


def test_wrong_account_key_is_403(coffer, account):
    bad = _client(coffer, account, key=base64.b64encode(os.urandom(64)).decode())
    with pytest.raises(ClientAuthenticationError) as info:
        list(bad.list_containers())
    assert info.value.status_code == 403
    assert info.value.error_code == "AuthenticationFailed"


def test_bearer_tokens_follow_rbac(coffer, account):
    container = unique("rb-").lower()
    _client(coffer, account).create_container(container).upload_blob("seed", b"seed")
    url = f"{coffer.endpoints['blob']}/{account['name']}"
    reader, writer = coffer.new_sp(), coffer.new_sp()
    coffer.assign_role(account["id"], "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", reader.object_id)  # Storage Blob Data Reader
    coffer.assign_role(account["id"], "ba92f5b4-2d11-453d-a403-e96b0029c9fe", writer.object_id)  # Storage Blob Data Contributor
    w = BlobServiceClient(url, credential=coffer.credential_for(writer), connection_verify=coffer.ca)
    w.get_container_client(container).upload_blob("by-token", b"hello")
    r = BlobServiceClient(url, credential=coffer.credential_for(reader), connection_verify=coffer.ca)
    assert r.get_container_client(container).download_blob("by-token").readall() == b"hello"
    with pytest.raises(HttpResponseError) as info:
        r.get_container_client(container).upload_blob("nope", b"x")
    assert info.value.status_code == 403
    assert info.value.error_code == "AuthorizationPermissionMismatch"
    # Owner of the subscription has no data actions.
    o = BlobServiceClient(url, credential=coffer.credential(), connection_verify=coffer.ca)
    with pytest.raises(HttpResponseError) as info:
        o.get_container_client(container).download_blob("seed").readall()
    assert info.value.status_code == 403


def test_no_plaintext_on_disk_and_tampering_fails(coffer_private, rg=None):
    env = coffer_private
    rg = env.create_rg()
    name = _account_name()
    st = _storage(env)
    st.storage_accounts.begin_create(rg, name, sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")).result()
    key = st.storage_accounts.list_keys(rg, name)["keys"][0].value
    acct = {"name": name, "key": key}
    cc = _client(env, acct).create_container("secret")
    marker = b"COFFER-KNOWN-PLAINTEXT-MARKER-" + uuid.uuid4().hex.encode()
    cc.upload_blob("doc", marker * 3000, metadata={"label": "MetaMarker" + marker.decode()[-8:]})
    data_dir = Path(env.data_dir)
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    for p in files:
        body = p.read_bytes()
        assert marker not in body, f"plaintext found in {p}"
        assert ("MetaMarker" + marker.decode()[-8:]).encode() not in body, f"metadata in clear in {p}"
    # Flip one byte in the middle of the stored object: the read fails, never returns wrong data.
    # (empty files are spares, created ahead of small writes)
    objects = [p for p in (data_dir / "bytes").rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert len(objects) == 1
    blob = bytearray(objects[0].read_bytes())
    blob[len(blob) // 2] ^= 0x01
    objects[0].write_bytes(bytes(blob))
    with pytest.raises(Exception):
        got = cc.download_blob("doc").readall()
        assert got == marker * 3000  # never reached with wrong data
        raise AssertionError("tampered blob was served")
    # A blob of several read spans (the server reads 16 segments of 64 KiB at a time), tampered
    # in its third MiB: a ranged read of untouched segments still verifies and returns; a read
    # reaching the tampered segment fails, mid-stream or before, never with wrong data.
    big = os.urandom(3 * (1 << 20) + 11)
    cc.upload_blob("big", big)
    [obj] = [p for p in (data_dir / "bytes").rglob("*") if p.is_file() and p.stat().st_size > len(big)]
    stored = bytearray(obj.read_bytes())
    stored[len(stored) - (1 << 20) + 100] ^= 0x80
    obj.write_bytes(bytes(stored))
    assert cc.download_blob("big", offset=100, length=1 << 20).readall() == big[100:(1 << 20) + 100]
    for offset, length in ((0, None), (1 << 20, 2 << 20)):
        with pytest.raises(Exception):
            got = cc.download_blob("big", offset=offset, length=length, max_concurrency=1).readall()
            raise AssertionError(f"tampered blob was served ({len(got)} bytes)")


def test_ranges_across_read_spans(coffer, account):
    """Ranged reads that start, end and cross where the server's 1 MiB read spans meet (16
    segments of 64 KiB), in a blob of several spans, return exactly the bytes asked for."""
    svc = _client(coffer, account)
    cc = svc.create_container(unique("spans-").lower())
    data = os.urandom(5 * (1 << 20) + 4321)
    cc.upload_blob("spans", data)
    mib, seg = 1 << 20, 1 << 16
    cases = [(0, None), (mib - 1, 2), (mib, seg), (mib - seg - 5, 3 * seg), (seg + 1, 2 * mib + 17),
             (3 * mib + 7, None), (len(data) - 1, 1), (2 * mib - 1, mib + 2)]
    for offset, length in cases:
        end = len(data) if length is None else offset + length
        got = cc.download_blob("spans", offset=offset, length=length, max_concurrency=1).readall()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data[offset:end]).digest(), (offset, length)


def test_staged_upload_with_small_blocks(coffer, account):
    """A small max_single_put_size/max_block_size forces Put Block + Put Block List."""
    svc = BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                            credential={"account_name": account["name"], "account_key": account["key"]},
                            connection_verify=coffer.ca, max_single_put_size=64 * 1024, max_block_size=40 * 1024)
    cc = svc.create_container(unique("bk-").lower())
    data = os.urandom(500_001)
    cc.upload_blob("staged.bin", data, metadata={"kind": "staged"}, max_concurrency=3)
    bc = cc.get_blob_client("staged.bin")
    committed, uncommitted = bc.get_block_list("all")
    assert len(committed) == 13 and not uncommitted
    assert sum(b.size for b in committed) == len(data)
    assert hashlib.sha256(bc.download_blob().readall()).digest() == hashlib.sha256(data).digest()
    # a range across block boundaries
    assert bc.download_blob(offset=39_000, length=90_000).readall() == data[39_000:129_000]
    assert bc.get_blob_properties().metadata == {"kind": "staged"}


def test_block_list_semantics(coffer, account):
    cc = _client(coffer, account).create_container(unique("bl-").lower())
    bc = cc.get_blob_client("b")
    ids = [base64.b64encode(f"block-{i:03d}".encode()).decode() for i in range(3)]
    for i, bid in enumerate(ids):
        bc.stage_block(bid, f"<{i}>".encode())
    committed, uncommitted = bc.get_block_list("all")
    assert not committed and sorted(b.id for b in uncommitted) == sorted(ids)
    bc.commit_block_list([ids[2], ids[0]])
    assert bc.download_blob().readall() == b"<2><0>"
    committed, uncommitted = bc.get_block_list("all")
    assert [b.id for b in committed] == [ids[2], ids[0]] and not uncommitted
    # re-commit from committed blocks plus a new staged one
    new = base64.b64encode(b"block-new").decode()
    bc.stage_block(new, b"<n>")
    from azure.storage.blob import BlobBlock, BlockState
    bc.commit_block_list([BlobBlock(ids[0], BlockState.COMMITTED), BlobBlock(new, BlockState.UNCOMMITTED)])
    assert bc.download_blob().readall() == b"<0><n>"
    # an unknown block id is an InvalidBlockList error
    with pytest.raises(HttpResponseError) as info:
        bc.commit_block_list([base64.b64encode(b"missing").decode()])
    assert info.value.status_code == 400
    assert info.value.error_code == "InvalidBlockList"
    assert bc.download_blob().readall() == b"<0><n>", "a failed commit changes nothing"


def test_bad_block_list_xml_is_400(coffer, account):
    cc = _client(coffer, account).create_container(unique("bx-").lower())
    from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy  # noqa: F401 (SDK signs)
    bc = cc.get_blob_client("x")
    # Send a malformed block list through the SDK's pipeline so the request is signed.
    from azure.core.rest import HttpRequest
    req = HttpRequest("PUT", f"{bc.url}?comp=blocklist", content=b"<BlockList><Latest>abc</Latest>",
                      headers={"x-ms-version": "2025-11-05"})
    resp = bc._client._client.send_request(req)  # pylint: disable=protected-access
    assert resp.status_code == 400
    assert resp.headers["x-ms-error-code"] == "InvalidXmlDocument"


def test_host_style_urls_through_the_proxy(coffer, account):
    """`{account}.blob.{suffix}` through the CONNECT proxy, with nested blob names."""
    url = f"https://{account['name']}.{coffer.blob_dns_suffix}"
    svc = BlobServiceClient(url, credential={"account_name": account["name"], "account_key": account["key"]},
                            connection_verify=coffer.ca, proxies={"https": coffer.proxy})
    cc = svc.create_container(unique("hs-").lower())
    cc.upload_blob("logs/a.txt", b"A")
    cc.upload_blob("logs/b.txt", b"B")
    assert cc.download_blob("logs/a.txt").readall() == b"A"
    assert cc.download_blob("logs/b.txt").readall() == b"B"
    assert sorted(b.name for b in cc.list_blobs()) == ["logs/a.txt", "logs/b.txt"]


def test_conditional_requests(coffer, account):
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError
    import datetime
    cc = _client(coffer, account).create_container(unique("cd-").lower())
    bc = cc.get_blob_client("c")
    etag = bc.upload_blob(b"v1")["etag"]
    # reads
    assert bc.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified).readall() == b"v1"
    with pytest.raises(ResourceModifiedError) as info:
        bc.download_blob(etag='"0xDEADBEEF"', match_condition=MatchConditions.IfNotModified).readall()
    assert info.value.status_code == 412
    # 304 on HEAD: the SDK raises a plain HttpResponseError (no body to parse).
    with pytest.raises(HttpResponseError) as info:
        bc.get_blob_properties(etag=etag, match_condition=MatchConditions.IfModified)
    assert info.value.status_code == 304
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    with pytest.raises(HttpResponseError) as info:
        bc.get_blob_properties(if_modified_since=future)
    assert info.value.status_code == 304
    # writes
    with pytest.raises(ResourceModifiedError):
        bc.upload_blob(b"v2", overwrite=True, etag='"0xDEADBEEF"', match_condition=MatchConditions.IfNotModified)
    etag2 = bc.upload_blob(b"v2", overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified)["etag"]
    assert etag2 != etag
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    with pytest.raises(ResourceModifiedError):
        bc.delete_blob(if_unmodified_since=past)
    with pytest.raises(ResourceModifiedError):
        bc.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
    bc.delete_blob(etag=etag2, match_condition=MatchConditions.IfNotModified)


def test_metadata_properties_and_copy(coffer, account):
    from azure.storage.blob import ContentSettings
    svc = _client(coffer, account)
    cc = svc.create_container(unique("mp-").lower())
    bc = cc.get_blob_client("src")
    data = os.urandom(150_000)
    bc.upload_blob(data, metadata={"a": "1"})
    bc.set_blob_metadata({"b": "2", "c_3": "three"})
    assert bc.get_blob_properties().metadata == {"b": "2", "c_3": "three"}
    bc.set_http_headers(ContentSettings(content_type="text/csv", cache_control="no-cache"))
    props = bc.get_blob_properties()
    assert props.content_settings.content_type == "text/csv"
    assert props.content_settings.cache_control == "no-cache"
    assert props.metadata == {"b": "2", "c_3": "three"}, "properties do not touch metadata"
    # container metadata
    cc.set_container_metadata({"owner": "ops"})
    assert cc.get_container_properties().metadata == {"owner": "ops"}
    # synchronous copy within the account (re-encrypted under the destination's identity)
    dst = cc.get_blob_client("dir/copy")
    copy = dst.start_copy_from_url(bc.url)
    assert copy["copy_status"] == "success"
    assert dst.download_blob().readall() == data
    assert dst.get_blob_properties().metadata == {"b": "2", "c_3": "three"}
    # the copy is independent of its source
    bc.delete_blob()
    assert dst.download_blob().readall() == data


def test_shared_access_signatures(coffer, account):
    import datetime
    from azure.storage.blob import (AccountSasPermissions, BlobClient, BlobSasPermissions, ContainerClient,
                                    ContainerSasPermissions, ResourceTypes, generate_account_sas,
                                    generate_blob_sas, generate_container_sas)
    name = unique("sas-").lower()
    cc = _client(coffer, account).create_container(name)
    cc.upload_blob("doc.txt", b"shared")
    base = f"{coffer.endpoints['blob']}/{account['name']}"
    now = datetime.datetime.now(datetime.timezone.utc)
    # blob SAS, read only
    sas = generate_blob_sas(account["name"], name, "doc.txt", account_key=account["key"],
                            permission=BlobSasPermissions(read=True), expiry=now + datetime.timedelta(hours=1))
    bc = BlobClient.from_blob_url(f"{base}/{name}/doc.txt?{sas}", connection_verify=coffer.ca)
    assert bc.download_blob().readall() == b"shared"
    with pytest.raises(HttpResponseError) as info:
        bc.upload_blob(b"x", overwrite=True)
    assert info.value.status_code == 403
    # expired
    old = generate_blob_sas(account["name"], name, "doc.txt", account_key=account["key"],
                            permission=BlobSasPermissions(read=True), expiry=now - datetime.timedelta(minutes=5))
    with pytest.raises(HttpResponseError) as info:
        BlobClient.from_blob_url(f"{base}/{name}/doc.txt?{old}", connection_verify=coffer.ca).download_blob().readall()
    assert info.value.status_code == 403
    # tampered: the signature covers the permissions
    tampered = sas.replace("sp=r", "sp=rwd")
    with pytest.raises(HttpResponseError) as info:
        BlobClient.from_blob_url(f"{base}/{name}/doc.txt?{tampered}", connection_verify=coffer.ca).delete_blob()
    assert info.value.status_code == 403
    # container SAS: list + write
    csas = generate_container_sas(account["name"], name, account_key=account["key"],
                                  permission=ContainerSasPermissions(read=True, write=True, list=True),
                                  expiry=now + datetime.timedelta(hours=1))
    ccs = ContainerClient.from_container_url(f"{base}/{name}?{csas}", connection_verify=coffer.ca)
    ccs.upload_blob("new.txt", b"via container sas")
    assert sorted(b.name for b in ccs.list_blobs()) == ["doc.txt", "new.txt"]
    with pytest.raises(HttpResponseError):
        ccs.delete_blob("new.txt")
    # account SAS
    asas = generate_account_sas(account["name"], account_key=account["key"],
                                resource_types=ResourceTypes(service=True, container=True, object=True),
                                permission=AccountSasPermissions(read=True, list=True, create=True, write=True),
                                expiry=now + datetime.timedelta(hours=1))
    svc = BlobServiceClient(f"{base}?{asas}", connection_verify=coffer.ca)
    assert name in [c.name for c in svc.list_containers()]
    assert svc.get_blob_client(name, "doc.txt").download_blob().readall() == b"shared"


def test_content_md5_is_validated(coffer, account):
    cc = _client(coffer, account).create_container(unique("md-").lower())
    data = os.urandom(70_000)
    cc.upload_blob("ok", data, validate_content=True)
    props = cc.get_blob_client("ok").get_blob_properties()
    assert bytes(props.content_settings.content_md5) == hashlib.md5(data).digest()
    staged = BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                               credential={"account_name": account["name"], "account_key": account["key"]},
                               connection_verify=coffer.ca, max_single_put_size=16 * 1024, max_block_size=16 * 1024)
    staged.get_container_client(cc.container_name).upload_blob("blocks", data, validate_content=True)
    # A wrong Content-MD5 is refused and nothing is written.
    from azure.core.rest import HttpRequest
    bc = cc.get_blob_client("bad")
    req = HttpRequest("PUT", bc.url, content=b"hello",
                      headers={"x-ms-blob-type": "BlockBlob", "Content-MD5": base64.b64encode(b"0" * 16).decode(),
                               "x-ms-version": "2025-11-05"})
    resp = bc._client._client.send_request(req)  # pylint: disable=protected-access
    assert resp.status_code == 400
    assert resp.headers["x-ms-error-code"] == "Md5Mismatch"
    assert "bad" not in [b.name for b in cc.list_blobs()]


def test_uncommitted_blocks_expire_after_seven_days(coffer_clock):
    env = coffer_clock
    rg = env.create_rg()
    name = _account_name()
    st = _storage(env)
    st.storage_accounts.begin_create(rg, name, sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")).result()
    acct = {"name": name, "key": st.storage_accounts.list_keys(rg, name)["keys"][0].value}
    bc = _client(env, acct).create_container("staging").get_blob_client("b")
    bc.stage_block(base64.b64encode(b"old").decode(), b"abandoned")
    bc.upload_blob(b"committed")
    bc.stage_block(base64.b64encode(b"young").decode(), b"pending")
    assert len(bc.get_block_list("uncommitted")[1]) == 1  # committing dropped "old"
    env.advance_clock(6 * 86_400)
    assert len(bc.get_block_list("uncommitted")[1]) == 1
    env.advance_clock(2 * 86_400)
    committed, uncommitted = bc.get_block_list("all")
    assert uncommitted == []
    assert bc.download_blob().readall() == b"committed"
