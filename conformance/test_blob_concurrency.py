"""Conditional writes under concurrency, with azure-storage-blob: the conditions a write
carries (If-None-Match: * from `overwrite=False`, If-Match from `etag` + `IfNotModified`) hold
for the version it replaces when it commits, not only when the request arrived. Of writers
racing on one version exactly one wins; the others get Azure's 409/412 and change nothing."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobBlock, BlobServiceClient

from harness import raw_request_head, unique
from test_blob_basic import account  # noqa: F401  (fixture)

WRITERS = 8
BODY = 1 << 20  # each upload takes a while: the race window is wide


def _container(coffer, account):
    svc = BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                            credential={"account_name": account["name"], "account_key": account["key"]},
                            connection_verify=coffer.ca)
    return svc.create_container(unique("race-").lower())


def _race(fn):
    """Run fn(i) in WRITERS threads released together; (winners, refusals) by index."""
    start = threading.Barrier(WRITERS)

    def one(i):
        start.wait()
        try:
            return i, fn(i), None
        except HttpResponseError as e:
            return i, None, e

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(one, range(WRITERS)))
    return [(i, r) for i, r, e in results if e is None], [(i, e) for i, r, e in results if e is not None]


def test_create_only_if_absent_has_one_winner(coffer, account):
    cc = _container(coffer, account)
    bodies = [os.urandom(BODY) for _ in range(WRITERS)]
    won, refused = _race(lambda i: cc.get_blob_client("once").upload_blob(bodies[i], overwrite=False))
    assert len(won) == 1, refused
    for _, e in refused:
        assert isinstance(e, ResourceExistsError) and e.status_code == 409 and e.error_code == "BlobAlreadyExists"
    [(winner, props)] = won
    got = cc.download_blob("once").readall()
    assert hashlib.sha256(got).digest() == hashlib.sha256(bodies[winner]).digest()
    assert cc.get_blob_client("once").get_blob_properties().etag == props["etag"]


def test_if_match_has_one_winner_per_version(coffer, account):
    cc = _container(coffer, account)
    bc = cc.get_blob_client("doc")
    etag = bc.upload_blob(b"v0")["etag"]
    bodies = [os.urandom(BODY) for _ in range(WRITERS)]
    won, refused = _race(lambda i: bc.upload_blob(bodies[i], overwrite=True, etag=etag,
                                                  match_condition=MatchConditions.IfNotModified))
    assert len(won) == 1, refused
    for _, e in refused:
        assert e.status_code == 412 and e.error_code == "ConditionNotMet"
    [(winner, _)] = won
    assert bc.download_blob().readall() == bodies[winner]
    # Delete with the stale ETag: refused, the winner stays; with the current one: deleted.
    with pytest.raises(HttpResponseError) as info:
        bc.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
    assert info.value.status_code == 412
    current = bc.get_blob_properties().etag
    bc.delete_blob(etag=current, match_condition=MatchConditions.IfNotModified)
    assert not bc.exists()


def test_block_lists_commit_against_the_version_they_read(coffer, account):
    """Writers each stage a block and commit it under If-Match of one version: one commit wins;
    the committed blob is exactly the winner's block (its object was not dropped by a loser)."""
    cc = _container(coffer, account)
    bc = cc.get_blob_client("blocks")
    etag = bc.upload_blob(b"base")["etag"]
    blocks = [os.urandom(BODY // 4) for _ in range(WRITERS)]
    ids = [base64.b64encode(f"block-{i:02d}".encode()).decode() for i in range(WRITERS)]
    for i in range(WRITERS):
        bc.stage_block(ids[i], blocks[i])
    won, refused = _race(lambda i: bc.commit_block_list([BlobBlock(ids[i])], etag=etag,
                                                        match_condition=MatchConditions.IfNotModified))
    assert len(won) == 1, refused
    for _, e in refused:
        assert e.status_code == 412 and e.error_code == "ConditionNotMet"
    [(winner, _)] = won
    assert bc.download_blob().readall() == blocks[winner]


def test_a_refused_large_body_gets_the_error_not_a_reset(coffer, account):
    """A write refused before its body is read (a wrong key, a failed condition) still gets
    Azure's error: the server reads the rest of the body before answering."""
    cc = _container(coffer, account)
    big = os.urandom(8 << 20)
    bad = BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                            credential={"account_name": account["name"],
                                        "account_key": base64.b64encode(b"k" * 64).decode()},
                            connection_verify=coffer.ca, retry_total=0)
    with pytest.raises(HttpResponseError) as info:
        bad.get_blob_client(cc.container_name, "x").upload_blob(big)
    assert info.value.status_code == 403 and info.value.error_code == "AuthenticationFailed"
    bc = cc.get_blob_client("y")
    bc.upload_blob(b"there")
    once = BlobServiceClient(f"{coffer.endpoints['blob']}/{account['name']}",
                             credential={"account_name": account["name"], "account_key": account["key"]},
                             connection_verify=coffer.ca, retry_total=0)
    with pytest.raises(ResourceExistsError) as info:
        once.get_blob_client(cc.container_name, "y").upload_blob(big, overwrite=False)
    assert info.value.status_code == 409
    assert bc.download_blob().readall() == b"there"


def test_a_refused_request_that_expects_100_continue_is_answered_at_once(coffer, account):
    """With `Expect: 100-continue` the body is not sent until the server asks: a refusal is the
    final answer at once (no 100 Continue, no waiting for a body to drain)."""
    head = raw_request_head(coffer, f"PUT /{account['name']}/nope/x HTTP/1.1\r\nHost: {{host}}\r\n"
                            "x-ms-version: 2025-01-05\r\nx-ms-blob-type: BlockBlob\r\n"
                            f"Content-Length: {8 << 20}\r\nExpect: 100-continue\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode()
    assert status.startswith("HTTP/1.1 4"), status


def test_metadata_and_property_updates_honour_their_conditions(coffer, account):
    """Set Blob Metadata and Set Blob Properties apply If-Match and If-Unmodified-Since, and of
    updaters racing on one ETag exactly one wins (the update commits only over that version)."""
    import datetime

    from azure.storage.blob import ContentSettings

    cc = _container(coffer, account)
    bc = cc.get_blob_client("props")
    etag = bc.upload_blob(b"data", metadata={"v": "0"})["etag"]
    won, refused = _race(lambda i: bc.set_blob_metadata({"v": str(i + 1)}, etag=etag,
                                                        match_condition=MatchConditions.IfNotModified))
    assert len(won) == 1, refused
    for _, e in refused:
        assert e.status_code == 412 and e.error_code == "ConditionNotMet"
    [(winner, _)] = won
    props = bc.get_blob_properties()
    assert props.metadata == {"v": str(winner + 1)}
    with pytest.raises(HttpResponseError) as info:
        bc.set_http_headers(ContentSettings(content_type="text/plain"), etag=etag,
                            match_condition=MatchConditions.IfNotModified)
    assert info.value.status_code == 412
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc)
    with pytest.raises(HttpResponseError) as info:
        bc.set_blob_metadata({"v": "late"}, if_unmodified_since=past)
    assert info.value.status_code == 412
    assert bc.get_blob_properties().metadata == {"v": str(winner + 1)}
    bc.set_http_headers(ContentSettings(content_type="text/plain"), etag=props.etag,
                        match_condition=MatchConditions.IfNotModified)
    assert bc.get_blob_properties().content_settings.content_type == "text/plain"


def test_copies_honour_destination_and_source_conditions(coffer, account):
    """Copy Blob and Put Blob From URL apply the destination's conditional headers (If-Match,
    If-None-Match incl. `*` from `overwrite=False`, If-(Un)Modified-Since) and the source's
    (`x-ms-source-if-*`): 412 ConditionNotMet / SourceConditionNotMet, 409 BlobAlreadyExists
    for `*` over an existing blob, and nothing changes. Of copies racing on one destination
    ETag exactly one wins."""
    import datetime

    cc = _container(coffer, account)
    src = cc.get_blob_client("src")
    src_etag = src.upload_blob(b"source bytes")["etag"]
    dst = cc.get_blob_client("dst")
    dst_etag = dst.upload_blob(b"destination bytes")["etag"]
    past = datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc)
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)

    def refused(call, status, code):
        with pytest.raises(HttpResponseError) as info:
            call()
        assert (info.value.status_code, info.value.error_code) == (status, code), info.value
        assert dst.download_blob().readall() == b"destination bytes"
        assert dst.get_blob_properties().etag == dst_etag

    # the destination's conditions
    refused(lambda: dst.start_copy_from_url(src.url, etag='"0x1"', match_condition=MatchConditions.IfNotModified),
            412, "ConditionNotMet")
    refused(lambda: dst.start_copy_from_url(src.url, if_unmodified_since=past), 412, "ConditionNotMet")
    refused(lambda: dst.start_copy_from_url(src.url, etag=dst_etag, match_condition=MatchConditions.IfModified),
            412, "ConditionNotMet")
    refused(lambda: dst.start_copy_from_url(src.url, match_condition=MatchConditions.IfMissing),
            409, "BlobAlreadyExists")
    refused(lambda: dst.upload_blob_from_url(src.url), 409, "BlobAlreadyExists")  # overwrite=False
    refused(lambda: dst.upload_blob_from_url(src.url, overwrite=True, if_modified_since=future),
            412, "ConditionNotMet")
    # the source's conditions
    refused(lambda: dst.start_copy_from_url(src.url, source_etag='"0x1"',
                                            source_match_condition=MatchConditions.IfNotModified),
            412, "SourceConditionNotMet")
    refused(lambda: dst.start_copy_from_url(src.url, source_etag=src_etag,
                                            source_match_condition=MatchConditions.IfModified),
            412, "SourceConditionNotMet")
    refused(lambda: dst.start_copy_from_url(src.url, source_if_modified_since=future), 412, "SourceConditionNotMet")
    refused(lambda: dst.upload_blob_from_url(src.url, overwrite=True, source_if_unmodified_since=past),
            412, "SourceConditionNotMet")
    # conditions that hold
    assert dst.start_copy_from_url(src.url, etag=dst_etag, match_condition=MatchConditions.IfNotModified,
                                   source_etag=src_etag,
                                   source_match_condition=MatchConditions.IfNotModified)["copy_status"] == "success"
    assert dst.download_blob().readall() == b"source bytes"
    fresh = cc.get_blob_client("fresh")
    fresh.upload_blob_from_url(src.url, source_if_unmodified_since=future)  # absent: If-None-Match: * holds
    assert fresh.download_blob().readall() == b"source bytes"
    # racing copies on one destination version: one wins
    etag = dst.get_blob_properties().etag
    sources = []
    for i in range(WRITERS):
        s = cc.get_blob_client(f"src{i}")
        s.upload_blob(os.urandom(BODY))
        sources.append(s)
    won, lost = _race(lambda i: dst.start_copy_from_url(sources[i].url, etag=etag,
                                                        match_condition=MatchConditions.IfNotModified))
    assert len(won) == 1, lost
    for _, e in lost:
        assert (e.status_code, e.error_code) == (412, "ConditionNotMet")
    [(winner, _)] = won
    assert dst.download_blob().readall() == sources[winner].download_blob().readall()


def test_a_block_restaged_while_its_list_commits_is_never_lost(coffer, account):
    """Put Block List racing a Put Block that re-stages one of its blocks (same id, new
    bytes): the list commits either block, whole, never one whose object the re-staging
    deleted. Repeated, with small blocks (their files are recycled at once) and blocks
    overwritten by other blobs' writes meanwhile."""
    cc = _container(coffer, account)
    block_id = base64.b64encode(b"the-block").decode()
    other = cc.get_blob_client("churn")
    for n in range(40):
        bc = cc.get_blob_client(f"restaged-{n}")
        old, new = os.urandom(4096), os.urandom(4096)
        bc.stage_block(block_id, old)
        start = threading.Barrier(2)

        def commit():
            start.wait()
            return bc.commit_block_list([BlobBlock(block_id)])

        def restage():
            start.wait()
            bc.stage_block(block_id, new)
            for _ in range(4):  # reuse freed small files at once
                other.upload_blob(os.urandom(4096), overwrite=True)

        with ThreadPoolExecutor(2) as pool:
            committed, _ = pool.submit(commit), pool.submit(restage)
            committed.result()
        assert bc.download_blob().readall() in (old, new), f"round {n}"
