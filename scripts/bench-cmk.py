#!/usr/bin/env python3
"""Benchmark customer-managed keys (CMK) on storage accounts against a fresh Coffer server.

Run from the repository root, after a release build:

    .venv/bin/python scripts/bench-cmk.py

It starts target/release/coffer (or --bin / $COFFER_BIN) on port 0 in a temporary data dir,
sets everything up with the Azure SDKs (through conformance/harness.py, the one place that knows
the server contract), then MEASURES WITH RAW HTTP ONLY: keep-alive `requests.Session`s with
bearer tokens, and `curl` for the large download. It prints Markdown tables:

1. Rotation: POST {vault}/keys/{name}/rotate until the account's
   keyvaultproperties.currentVersionedKeyIdentifier shows the new version (polling GET on the
   account), with 0, 1,000 and 10,000 blobs in the account. Median of --rotations each.
2. Read throughput, CMK account vs an otherwise identical platform-key account in the same run:
   MiB/s of a --big-mib MiB download with curl (median of --downloads), and 4 KiB GETs per second
   with --concurrency threads, each with its own keep-alive session, for --seconds.
   Server CPU per operation comes from /proc/<pid>/stat (utime + stime).
3. Revocation / restore: from the vault's PATCH /keys/{name} {"attributes":{"enabled":false}}
   returning to the first 403 on a blob GET (polled back to back on one keep-alive session), and
   from re-enabling to the first 200. Median over --revocations repetitions.

For scale it also times plain account GETs, RSA-2048 key creation and plain 4 KiB GETs, counts
the vault calls the CMK account makes (cmkHealth.vaultCalls), and reports how much CPU other
processes used meanwhile (the machine may be shared with builds). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "conformance"))

import requests  # noqa: E402
from azure.mgmt.storage import models as sm  # noqa: E402

import harness  # noqa: E402
from harness import STORAGE_SCOPE, Coffer, unique  # noqa: E402

API_STORAGE = "2025-08-01"  # raw ARM GET of an account (cmkHealth is in this api-version's body)
API_KV = "7.6"
X_MS_VERSION = "2025-01-05"
ENCRYPTION_USER = "Key Vault Crypto Service Encryption User"  # e147488a-f6f5-4113-8e2d-b22465e65bf6
BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"  # Storage Blob Data Contributor
KEY_NOT_FOUND = "KeyVaultEncryptionKeyNotFound"
TIMEOUT = 120
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the server process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def busy_seconds() -> float:
    """CPU seconds spent by the whole machine so far (every core, every process)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / CLK_TCK  # user nice system irq softirq steal


def self_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system  # children: curl, once waited for


class OtherLoad(threading.Thread):
    """Samples, once a second, the CPU time of every user-space process other than this script,
    its children and the server: how much the measurements had to share the machine."""

    PF_KTHREAD = 0x00200000

    def __init__(self, exclude: set[int]):
        super().__init__(daemon=True)
        self.exclude = exclude
        self.seconds = 0.0
        self.by_name: dict[str, float] = {}
        self.done = threading.Event()

    def snapshot(self) -> dict[int, tuple[str, float]]:
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                raw = (d / "stat").read_text()
            except OSError:
                continue
            name = raw[raw.index("(") + 1:raw.rindex(")")]
            f = raw.rsplit(")", 1)[1].split()
            pid, ppid, flags = int(d.name), int(f[1]), int(f[6])
            if flags & self.PF_KTHREAD or pid in self.exclude or ppid in self.exclude:
                continue
            out[pid] = (name, (int(f[11]) + int(f[12])) / CLK_TCK)
        return out

    def run(self) -> None:
        prev = self.snapshot()
        while not self.done.wait(1.0):
            now = self.snapshot()
            for pid, (name, cpu) in now.items():
                delta = cpu - prev.get(pid, (name, 0.0))[1]
                if delta > 0:
                    self.seconds += delta
                    self.by_name[name] = self.by_name.get(name, 0.0) + delta
            prev = now

    def top(self) -> str:
        names = sorted(self.by_name.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{n} {s:.0f} s" for n, s in names if s >= 0.5) or "none"


def machine() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release()}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="coffer-bench-cmk-"))
        self.coffer = Coffer(self.base)
        self._local = threading.local()

    # ------------------------------------------------------------------ setup (SDKs allowed)

    def start(self) -> None:
        log(f"starting {harness.coffer_binary()} in {self.base}")
        self.coffer.start()
        c = self.coffer
        self.pid = c.proc.pid
        self.blob_origin = c.endpoints["blob"]
        self.rg = c.create_rg()
        # A vault with purge protection and a Crypto Officer principal (rotates, disables keys).
        self.kv = c.data_vault(self.rg, role="Key Vault Crypto Officer", purge_protection=True)
        self.vault_url = self.kv.url.rstrip("/")
        self.vault_session = c.http(proxy=True)  # one CONNECT tunnel, kept alive
        self.vault_token = c.raw_token(self.kv.principal.client_id, self.kv.principal.client_secret,
                                       scope=c.vault_scope)
        self.arm_session = c.http()
        self.arm_token = c.raw_token()
        # The blob-plane principal: Storage Blob Data Contributor on every account it uses.
        self.data_sp = c.new_sp(unique("bench-data-"))
        self.blob_token = c.raw_token(self.data_sp.client_id, self.data_sp.client_secret, scope=STORAGE_SCOPE)

    def new_key(self) -> str:
        return self.kv.keys.create_rsa_key(unique("cmk-"), size=2048).name

    def new_account(self, key_name: str | None) -> sm.StorageAccount:
        """An account with a system-assigned identity, a data role for the bench principal, and
        (if key_name) the vault key as its CMK (versionless: follows new versions)."""
        c = self.coffer
        clients = c.mgmt_clients()
        name = "bench" + uuid.uuid4().hex[:16]
        account = clients.storage.storage_accounts.begin_create(self.rg, name, sm.StorageAccountCreateParameters(
            sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus",
            identity=sm.Identity(type="SystemAssigned"))).result()
        c.assign_role(account.id, BLOB_DATA_CONTRIBUTOR, self.data_sp.object_id)
        if key_name:
            c.assign_role(self.kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
            account = clients.storage.storage_accounts.update(self.rg, name, sm.StorageAccountUpdateParameters(
                encryption=sm.Encryption(key_source="Microsoft.Keyvault", key_vault_properties=sm.KeyVaultProperties(
                    key_name=key_name, key_vault_uri=self.kv.url))))
            assert account.encryption.key_source == "Microsoft.Keyvault", account.encryption
        return account

    # ------------------------------------------------------------------ raw HTTP

    def blob_session(self) -> requests.Session:
        s = self.coffer.http()
        s.headers.update({"Authorization": f"Bearer {self.blob_token}", "x-ms-version": X_MS_VERSION})
        return s

    def thread_session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = self.blob_session()
        return s

    def blob_url(self, account: str, container: str, blob: str = "") -> str:
        return f"{self.blob_origin}/{account}/{container}" + (f"/{blob}" if blob else "")

    def create_container(self, account: str, container: str) -> None:
        with self.blob_session() as s:
            r = s.put(self.blob_url(account, container) + "?restype=container", timeout=TIMEOUT)
        assert r.status_code == 201, f"create container: {r.status_code} {r.text[:300]}"

    def put_blob(self, account: str, container: str, blob: str, data: bytes, s: requests.Session | None = None) -> None:
        s = s or self.thread_session()
        r = s.put(self.blob_url(account, container, blob), data=data, headers={"x-ms-blob-type": "BlockBlob"},
                  timeout=TIMEOUT)
        assert r.status_code == 201, f"put {blob}: {r.status_code} {r.text[:300]}"

    def fill(self, account: str, container: str, start: int, stop: int) -> float:
        """PUT blobs start..stop-1 (64 bytes each) with a thread pool; returns seconds."""
        payload = os.urandom(64)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(self.args.concurrency) as pool:
            for f in [pool.submit(self.put_blob, account, container, f"f/{i:06d}", payload) for i in range(start, stop)]:
                f.result()
        return time.perf_counter() - t0

    def account_get(self, account: sm.StorageAccount) -> dict:
        r = self.arm_session.get(f"{self.coffer.management}{account.id}?api-version={API_STORAGE}",
                                 headers={"Authorization": f"Bearer {self.arm_token}"}, timeout=TIMEOUT)
        assert r.status_code == 200, f"GET account: {r.status_code} {r.text[:300]}"
        return r.json()

    def vault(self, method: str, path: str, **kw) -> requests.Response:
        sep = "&" if "?" in path else "?"
        return self.vault_session.request(method, f"{self.vault_url}{path}{sep}api-version={API_KV}",
                                          headers={"Authorization": f"Bearer {self.vault_token}"},
                                          timeout=TIMEOUT, **kw)

    # ------------------------------------------------------------------ 1. rotation

    def rotation(self) -> list[dict]:
        key = self.new_key()
        account = self.new_account(key)
        container = "rot"
        self.create_container(account.name, container)
        rows, have = [], 0
        for size in self.args.blobs:
            if size > have:
                secs = self.fill(account.name, container, have, size)
                log(f"rotation: wrote {size - have} blobs in {secs:.1f}s ({(size - have) / secs:.0f} PUT/s)")
                have = size
            total, post, pickup, gets = [], [], [], []
            calls0 = self.account_get(account)["properties"]["encryption"]["cmkHealth"]["vaultCalls"]
            for _ in range(self.args.rotations):
                t0 = time.perf_counter()
                r = self.vault("POST", f"/keys/{key}/rotate")
                t1 = time.perf_counter()
                assert r.status_code == 200, f"rotate: {r.status_code} {r.text[:300]}"
                version = r.json()["key"]["kid"].rstrip("/").rsplit("/", 1)[1]
                n = 0
                while True:
                    n += 1
                    kvp = self.account_get(account)["properties"]["encryption"]["keyvaultproperties"]
                    if kvp["currentVersionedKeyIdentifier"].rstrip("/").rsplit("/", 1)[1] == version:
                        t2 = time.perf_counter()
                        break
                    if time.perf_counter() - t0 > 60:
                        raise AssertionError(f"rotation to {version} not picked up in 60 s: {kvp}")
                total.append(t2 - t0)
                post.append(t1 - t0)
                pickup.append(t2 - t1)
                gets.append(n)
            # Not timed: the account really uses the new version, and its data still reads.
            health = self.account_get(account)["properties"]["encryption"]["cmkHealth"]
            assert health["keyVersionInUse"] == version and health["status"] == "Healthy", health
            if have:
                with self.blob_session() as s:
                    g = s.get(self.blob_url(account.name, container, "f/000000"), timeout=TIMEOUT)
                assert g.status_code == 200 and len(g.content) == 64, (g.status_code, g.text[:300])
            # For scale: account GETs with nothing to pick up (and whether they call the vault).
            plain, calls1 = [], health["vaultCalls"]
            for _ in range(20):
                t0 = time.perf_counter()
                self.account_get(account)
                plain.append(time.perf_counter() - t0)
            plain_calls = self.account_get(account)["properties"]["encryption"]["cmkHealth"]["vaultCalls"] - calls1
            rows.append({"plain": plain, "plain_calls": plain_calls, "blobs": size, "total": total, "post": post, "pickup": pickup, "gets": gets,
                         "calls": (health["vaultCalls"] - calls0) / self.args.rotations})
            log(f"rotation with {size} blobs: median {median(total) * 1000:.1f} ms "
                f"(all: {', '.join(f'{x * 1000:.1f}' for x in total)}), GETs until seen: {gets}")
        # For scale: creating a fresh RSA-2048 key (the vault half of a rotation is a key generation).
        self.create_ms = []
        for _ in range(self.args.rotations):
            t0 = time.perf_counter()
            r = self.vault("POST", f"/keys/{unique('scale-')}/create", json={"kty": "RSA", "key_size": 2048})
            self.create_ms.append(time.perf_counter() - t0)
            assert r.status_code == 200, f"create key: {r.status_code} {r.text[:300]}"
        return rows

    # ------------------------------------------------------------------ 2. throughput

    def upload_big(self, account: str, container: str, data: bytes) -> None:
        with self.blob_session() as s:
            r = s.put(self.blob_url(account, container, "big.bin"), data=data,
                      headers={"x-ms-blob-type": "BlockBlob"}, timeout=600)
        assert r.status_code == 201, f"put big: {r.status_code} {r.text[:300]}"

    def verify_big(self, account: str, container: str, digest: str) -> None:
        h = hashlib.sha256()
        with self.blob_session() as s:
            with s.get(self.blob_url(account, container, "big.bin"), stream=True, timeout=600) as r:
                assert r.status_code == 200, r.status_code
                for chunk in r.iter_content(1 << 20):
                    h.update(chunk)
        assert h.hexdigest() == digest, "big blob read back with different bytes"

    def curl_download(self, account: str, container: str, size: int) -> tuple[float, float]:
        """One curl download to /dev/null: (MiB/s, server CPU seconds)."""
        cmd = ["curl", "-sS", "-o", "/dev/null", "--cacert", self.coffer.ca, "--noproxy", "*",
               "-H", f"Authorization: Bearer {self.blob_token}", "-H", f"x-ms-version: {X_MS_VERSION}",
               "-w", "%{http_code} %{size_download} %{time_total}", self.blob_url(account, container, "big.bin")]
        cpu0 = cpu_seconds(self.pid)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        cpu = cpu_seconds(self.pid) - cpu0
        code, got, secs = int(out[0]), int(out[1]), float(out[2])
        assert code == 200 and got == size, f"curl: HTTP {code}, {got} bytes"
        return size / secs / (1 << 20), cpu

    def small_gets(self, account: str, container: str) -> dict:
        """4 KiB GETs from `concurrency` threads with their own keep-alive sessions, for `seconds`."""
        url = self.blob_url(account, container, "small.bin")
        stop_at = [0.0]
        results: list[list[float]] = []
        errors: list[str] = []
        barrier = threading.Barrier(self.args.concurrency + 1)

        def worker():
            s = self.blob_session()
            s.get(url, timeout=TIMEOUT)  # connect + TLS handshake outside the timed window
            lat = []
            barrier.wait()
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at[0]:
                    break
                r = s.get(url, timeout=TIMEOUT)
                if r.status_code != 200 or len(r.content) != 4096:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    break
                lat.append(time.perf_counter() - t0)
            results.append(lat)
            s.close()

        threads = [threading.Thread(target=worker) for _ in range(self.args.concurrency)]
        for t in threads:
            t.start()
        stop_at[0] = time.perf_counter() + 3600
        barrier.wait()
        cpu0 = cpu_seconds(self.pid)
        t0 = time.perf_counter()
        stop_at[0] = t0 + self.args.seconds
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(self.pid) - cpu0
        assert not errors, errors[:3]
        lat = [x for lst in results for x in lst]
        return {"ops": len(lat) / elapsed, "n": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99),
                "cpu_us": cpu / len(lat) * 1e6}

    def throughput(self) -> tuple[dict, sm.StorageAccount, str]:
        key = self.new_key()
        accounts = {"CMK (RSA-2048, in-process vault)": self.new_account(key),
                    "platform key (Microsoft.Storage)": self.new_account(None)}
        size = self.args.big_mib << 20
        data = os.urandom(size)
        digest = hashlib.sha256(data).hexdigest()
        small = os.urandom(4096)
        for label, acc in accounts.items():
            self.create_container(acc.name, "tput")
            t0 = time.perf_counter()
            self.upload_big(acc.name, "tput", data)
            log(f"{label}: uploaded {self.args.big_mib} MiB in {time.perf_counter() - t0:.1f}s")
            self.verify_big(acc.name, "tput", digest)
            self.put_blob(acc.name, "tput", "small.bin", small, self.blob_session())
        del data
        cmk_account = accounts["CMK (RSA-2048, in-process vault)"]
        calls0 = self.account_get(cmk_account)["properties"]["encryption"]["cmkHealth"]["vaultCalls"]
        res = {label: {"mibs": [], "cpu": [], "small": []} for label in accounts}
        # Interleaved, so that drift on the shared machine hits both sides alike.
        for i in range(self.args.downloads):
            for label, acc in accounts.items():
                mibs, cpu = self.curl_download(acc.name, "tput", size)
                res[label]["mibs"].append(mibs)
                res[label]["cpu"].append(cpu)
        for label in accounts:
            log(f"{label}: download MiB/s {', '.join(f'{x:.0f}' for x in res[label]['mibs'])}")
        for _ in range(self.args.small_rounds):
            for label, acc in accounts.items():
                r = self.small_gets(acc.name, "tput")
                res[label]["small"].append(r)
                log(f"{label}: 4 KiB GET {r['ops']:.0f}/s p50 {r['p50'] * 1000:.2f} ms "
                    f"p99 {r['p99'] * 1000:.2f} ms server {r['cpu_us']:.0f} µs/op")
        h = self.account_get(cmk_account)["properties"]["encryption"]["cmkHealth"]
        res["_cmk_health_after"] = h
        res["_vault_calls_during_reads"] = h["vaultCalls"] - calls0
        return res, cmk_account, key

    # ------------------------------------------------------------------ 3. revocation

    def revocation(self, account: sm.StorageAccount, key: str) -> dict:
        url = self.blob_url(account.name, "tput", "small.bin")
        s = self.blob_session()
        assert s.get(url, timeout=TIMEOUT).status_code == 200
        cut, back, cut_polls, back_polls, patch_ms = [], [], [], [], []

        def set_enabled(enabled: bool) -> float:
            t0 = time.perf_counter()
            r = self.vault("PATCH", f"/keys/{key}", json={"attributes": {"enabled": enabled}})
            t1 = time.perf_counter()
            assert r.status_code == 200 and r.json()["attributes"]["enabled"] is enabled, r.text[:300]
            patch_ms.append(t1 - t0)
            return t1

        def poll(want: int) -> tuple[float, int, requests.Response]:
            t_ret = set_enabled(want == 200)
            n = 0
            while True:
                n += 1
                r = s.get(url, timeout=TIMEOUT)
                if r.status_code == want:
                    return time.perf_counter() - t_ret, n, r
                if r.status_code not in (200, 403):
                    raise AssertionError(f"unexpected {r.status_code} {r.text[:300]}")
                if time.perf_counter() - t_ret > 120:
                    raise AssertionError(f"no {want} within 120 s after the PATCH")

        for _ in range(self.args.revocations):
            dt, n, r = poll(403)
            code = r.headers.get("x-ms-error-code")
            assert code == KEY_NOT_FOUND, f"403 with x-ms-error-code {code!r}: {r.text[:300]}"
            cut.append(dt)
            cut_polls.append(n)
            dt, n, r = poll(200)
            assert len(r.content) == 4096
            back.append(dt)
            back_polls.append(n)
        # For scale: a plain 4 KiB GET on the same session with the key enabled.
        plain = []
        for _ in range(50):
            t0 = time.perf_counter()
            assert s.get(url, timeout=TIMEOUT).status_code == 200
            plain.append(time.perf_counter() - t0)
        s.close()
        log(f"revocation: cut {', '.join(f'{x * 1000:.2f}' for x in cut)} ms, polls {cut_polls}")
        log(f"restore: {', '.join(f'{x * 1000:.2f}' for x in back)} ms, polls {back_polls}")
        return {"cut": cut, "back": back, "cut_polls": cut_polls, "back_polls": back_polls, "patch": patch_ms,
                "plain": plain}

    def stop(self) -> None:
        code = self.coffer.stop()
        harness.forget(self.coffer)
        if code not in (0, None):
            log(f"coffer exited with {code}; log in {self.coffer.log_path}")


def ms(x: float) -> str:
    return f"{x * 1000:.1f}" if x >= 0.01 else f"{x * 1000:.2f}"


def report(args, m, binary, binary_sha, started, wall, rot, create_ms, tp, rev) -> str:
    out = []
    out.append(f"Machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}; "
               f"binary {binary} (sha256 {binary_sha}); run started {started} UTC, {wall:.0f} s in all. "
               f"While it measured, other user-space processes used {m['other_procs']:.2f} cores on average "
               f"(most: {m['other_top']}), and kernel threads and interrupts {m['other_kernel']:.2f} cores "
               f"(mostly this run's own disk and loopback traffic).\n")
    out.append("### Rotation (versionless CMK, RSA-2048, blobs of 64 bytes in the account)\n")
    out.append(f"Median of {args.rotations} rotations per row. *Total*: from issuing `POST /keys/{{name}}/rotate` "
               "to the first account GET whose `currentVersionedKeyIdentifier` names the new version.\n")
    out.append("| blobs in account | total ms (median) | min–max ms | rotate POST ms (median) | POST return → seen ms (median) | account GETs until seen (max) | vault calls per rotation |")
    out.append("|---|---|---|---|---|---|---|")
    for r in rot:
        out.append(f"| {r['blobs']:,} | {ms(median(r['total']))} | {ms(min(r['total']))}–{ms(max(r['total']))} "
                   f"| {ms(median(r['post']))} | {ms(median(r['pickup']))} | {max(r['gets'])} | {r['calls']:g} |")
    plain = [x for r in rot for x in r["plain"]]
    out.append(f"\nFor scale: an account GET with no new version to pick up takes {ms(median(plain))} ms "
               f"(median of {len(plain)}; {sum(r['plain_calls'] for r in rot)} vault calls in all); creating a "
               f"fresh RSA-2048 key (`POST /keys/{{name}}/create`) takes {ms(median(create_ms))} ms "
               f"(median of {len(create_ms)}, {ms(min(create_ms))}–{ms(max(create_ms))}).")
    out.append("")
    out.append("### Blob reads: CMK account vs platform-key account (same server, same run, interleaved)\n")
    out.append(f"Download: `curl` of a {args.big_mib} MiB blob to /dev/null, median of {args.downloads}. "
               f"4 KiB GET: {args.concurrency} threads with keep-alive sessions, {args.seconds:g} s per round, "
               f"{args.small_rounds} rounds (median round shown). Server CPU from /proc/<pid>/stat; "
               f"server-bound = {m['nproc']} cores / server CPU per operation.\n")
    out.append("| account | download MiB/s (median) | min–max | server CPU s per download | server-bound MiB/s "
               "| 4 KiB GET ops/s | all rounds | p50 ms | p99 ms | server CPU µs/GET | server-bound GET/s |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r in tp.items():
        if label.startswith("_"):
            continue
        best = sorted(r["small"], key=lambda x: x["ops"])[len(r["small"]) // 2]
        out.append(f"| {label} | {median(r['mibs']):.0f} | {min(r['mibs']):.0f}–{max(r['mibs']):.0f} "
                   f"| {median(r['cpu']):.2f} | {args.big_mib * m['nproc'] / median(r['cpu']):.0f} | {best['ops']:.0f} | {', '.join('%.0f' % x['ops'] for x in r['small'])} "
                   f"| {best['p50'] * 1000:.2f} | {best['p99'] * 1000:.2f} "
                   f"| {best['cpu_us']:.0f} | {m['nproc'] / best['cpu_us'] * 1e6:.0f} |")
    out.append("")
    out.append("### Revocation and restore (in-process vault)\n")
    out.append(f"Median of {args.revocations} repetitions; one keep-alive session polls `GET` of a 4 KiB blob back "
               "to back, starting when the vault's `PATCH /keys/{name}` returns.\n")
    out.append("| transition | median ms | min–max ms | GETs until the change (max) |")
    out.append("|---|---|---|---|")
    out.append(f"| disable → first 403 `{KEY_NOT_FOUND}` | {ms(median(rev['cut']))} | {ms(min(rev['cut']))}–{ms(max(rev['cut']))} | {max(rev['cut_polls'])} |")
    out.append(f"| re-enable → first 200 | {ms(median(rev['back']))} | {ms(min(rev['back']))}–{ms(max(rev['back']))} | {max(rev['back_polls'])} |")
    out.append(f"| (for scale: a 4 KiB GET, key enabled) | {ms(median(rev['plain']))} | {ms(min(rev['plain']))}–{ms(max(rev['plain']))} | — |")
    out.append(f"| (for scale: the vault `PATCH /keys/{{name}}` itself) | {ms(median(rev['patch']))} | {ms(min(rev['patch']))}–{ms(max(rev['patch']))} | — |")
    out.append("")
    out.append(f"Vault calls by the CMK account during all its timed reads: {tp['_vault_calls_during_reads']}. "
               f"Its cmkHealth afterwards: `{tp['_cmk_health_after']}`")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", help="coffer binary (default $COFFER_BIN or target/release/coffer)")
    p.add_argument("--blobs", default="0,1000,10000", help="blob counts for the rotation rows")
    p.add_argument("--rotations", type=int, default=7)
    p.add_argument("--big-mib", type=int, default=256)
    p.add_argument("--downloads", type=int, default=5)
    p.add_argument("--seconds", type=float, default=8.0, help="duration of one 4 KiB GET round")
    p.add_argument("--small-rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--revocations", type=int, default=15)
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = p.parse_args()
    args.blobs = [int(x) for x in args.blobs.split(",")]
    if args.bin:
        os.environ["COFFER_BIN"] = str(Path(args.bin).resolve())
    harness.scrub_proxy_env()
    binary = harness.coffer_binary()
    binary_sha = hashlib.sha256(Path(binary).read_bytes()).hexdigest()[:12]
    m = machine()
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    t_start = time.perf_counter()
    bench = Bench(args)
    try:
        bench.start()
        # CPU used by everything else on the machine while we measure (the lead's builds, say).
        busy0, self0, server0, t_meas0 = busy_seconds(), self_seconds(), cpu_seconds(bench.pid), time.perf_counter()
        sampler = OtherLoad({os.getpid(), bench.pid})
        sampler.start()
        rot = bench.rotation()
        tp, cmk_account, key = bench.throughput()
        rev = bench.revocation(cmk_account, key)
        measured = time.perf_counter() - t_meas0
        other = (busy_seconds() - busy0) - (self_seconds() - self0) - (cpu_seconds(bench.pid) - server0)
        sampler.done.set()
        sampler.join()
        m["other_procs"] = sampler.seconds / measured
        m["other_top"] = sampler.top()
        m["other_kernel"] = max(0.0, other - sampler.seconds) / measured
    except BaseException:
        log(f"FAILED; server log tail:\n{bench.coffer.log_tail(40)}")
        raise
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(bench.base, ignore_errors=True)
        else:
            log(f"data kept in {bench.base}")
    wall = time.perf_counter() - t_start
    print("Command: `" + " ".join(shlex.quote(a) for a in [".venv/bin/python", "scripts/bench-cmk.py", *sys.argv[1:]]) + "`\n")
    print(report(args, m, binary, binary_sha, started, wall, rot, bench.create_ms, tp, rev))
    return 0


if __name__ == "__main__":
    sys.exit(main())
