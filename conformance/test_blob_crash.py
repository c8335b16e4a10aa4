"""Crash consistency: kill -9 the server during concurrent uploads, restart, and check that
every blob is its previous content or one complete new version, and that every acknowledged
write is there."""

from __future__ import annotations

import hashlib
import threading
import uuid

from azure.mgmt.storage import StorageManagementClient
from azure.mgmt.storage import models as sm
from azure.storage.blob import BlobServiceClient

WRITERS = 4
KILL_AFTER_ACKS = 24


def content(name: str, version: int) -> bytes:
    seed = hashlib.sha256(f"{name}:{version}".encode()).digest()
    # 96 KiB to 224 KiB: several segments, and (for odd writers) several blocks
    size = 96 * 1024 + (version % 5) * 32 * 1024
    return (seed * (size // len(seed) + 1))[:size]


def test_kill_minus_nine_during_uploads_leaves_old_or_new_never_a_mix(coffer_private):
    env = coffer_private
    rg = env.create_rg()
    name = "acc" + uuid.uuid4().hex[:12]
    st = StorageManagementClient(env.credential(), env.subscription_id, base_url=env.management,
                                 credential_scopes=["https://management.core.windows.net//.default"],
                                 connection_verify=env.ca)
    st.storage_accounts.begin_create(rg, name, sm.StorageAccountCreateParameters(
        sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")).result()
    key = st.storage_accounts.list_keys(rg, name)["keys"][0].value

    def client(blob_url: str, staged: bool) -> BlobServiceClient:
        kw = {"max_single_put_size": 64 * 1024, "max_block_size": 48 * 1024} if staged else {}
        return BlobServiceClient(blob_url, credential={"account_name": name, "account_key": key},
                                 connection_verify=env.ca, retry_total=0, **kw)

    base = f"{env.endpoints['blob']}/{name}"
    client(base, False).create_container("crash")
    # Version 0 of every blob exists before the crash.
    blobs = [f"w{w}/b{j}" for w in range(WRITERS) for j in range(3)]
    for b in blobs:
        client(base, False).get_container_client("crash").upload_blob(b, content(b, 0))

    acked: dict[str, int] = {b: 0 for b in blobs}
    attempted: dict[str, int] = {b: 0 for b in blobs}
    lock = threading.Lock()
    enough = threading.Event()
    total = [0]

    def writer(w: int) -> None:
        cc = client(base, staged=(w % 2 == 1)).get_container_client("crash")
        mine = [b for b in blobs if b.startswith(f"w{w}/")]
        version = 0
        while True:
            version += 1
            for b in mine:
                with lock:
                    attempted[b] = version
                try:
                    cc.upload_blob(b, content(b, version), overwrite=True, max_concurrency=2)
                except Exception:  # the server died: stop writing
                    return
                with lock:
                    acked[b] = version
                    total[0] += 1
                    if total[0] >= KILL_AFTER_ACKS:
                        enough.set()

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    for t in threads:
        t.start()
    assert enough.wait(timeout=120), "the writers did not make progress"
    env._kill()  # SIGKILL while uploads are in flight
    for t in threads:
        t.join(timeout=60)

    env.start()  # new ports: rebuild the URL
    cc = client(f"{env.endpoints['blob']}/{name}", False).get_container_client("crash")
    for b in blobs:
        got = cc.download_blob(b).readall()
        ok = {content(b, acked[b]), content(b, attempted[b])}
        assert got in ok, f"{b}: neither the acknowledged version {acked[b]} nor the in-flight {attempted[b]}"
    assert sum(acked.values()) >= KILL_AFTER_ACKS
