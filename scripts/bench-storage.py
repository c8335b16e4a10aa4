#!/usr/bin/env python3
"""Blob storage benchmark: Coffer vs Azurite vs nginx, side by side on this machine, all HTTPS.

Run from the repository root, after a release build (scripts/bench-storage.sh installs the
tools first and then runs this):

    scripts/bench-storage.sh            # or: .venv/bin/python scripts/bench-storage.py --azurite PATH

It starts, on free loopback ports, in one temporary directory:
- Coffer: a copy of target/release/coffer (or --bin / $COFFER_BIN) through conformance/harness.py;
  a storage account is created with azure-mgmt-storage, its key read with list_keys;
- Azurite (`azurite-blob`, the npm package, no encryption) with a self-signed certificate made
  here with openssl, account devstoreaccount1 and its well-known key, `--silent` (no access log);
- nginx (Debian) serving the same files as static files over TLS 1.3 with `sendfile on`.

Both blob servers are addressed path-style, `https://127.0.0.1:PORT/{account}/{container}/{blob}`,
and authorized with an account SAS from azure-storage-blob's generate_account_sas (srt=sco,
sp=rwdlac) in the query string, so every request is a fixed string: no per-request signing.
Then it measures, interleaving the servers so that drift on the shared machine hits all alike:

1. 256 MiB (--big-mib) single Put Blob with curl (`-X PUT --data-binary @file`), --transfers
   times per server; and download of that blob with the same curl command (plus nginx), each
   to /dev/null. MB/s = 10^6 bytes / curl's time_total. Bytes read back are checked (SHA-256).
   curl's own CPU (rusage) is recorded too: curl takes a download on one thread, so bytes / its
   CPU (less what a download of an empty blob costs it) is the fastest it could have taken them,
   the limit of the load generator itself.
2. 4 KiB Put Blob and Get Blob with wrk (--threads threads, --connections keep-alive
   connections, --seconds per round, --rounds rounds): every PUT writes the same 4 KiB body to
   the same blob, every GET reads one 4 KiB blob. nginx serves a 4 KiB static file for scale.
3. Peak memory of the server process while it takes a 1 GiB (--mem-mib) Put Blob (`curl -T`,
   streamed: curl 7.88 refuses `--data-binary @file` above 1 GiB) and serves it back: VmHWM from /proc/<pid>/status (reset before each transfer by writing 5 to
   /proc/<pid>/clear_refs), and the largest VmRSS sampled every 10 ms.

Server CPU per operation comes from /proc/<pid>/stat (utime + stime of the server and its child
processes), context switches from /proc/<pid>/task/*/status. It records the machine load
(/proc/loadavg, and the CPU time used by every other process while it measured), and prints a
Markdown report on stdout. --diagnose then adds, for Coffer only and outside the timed figures,
per-operation CPU and context switches by server thread group, strace -c syscall counts and a perf
profile for 4 KiB GETs and PUTs, GETs of an empty blob (no object file opened), and one big
download and upload. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "conformance"))

import requests  # noqa: E402
from azure.mgmt.storage import models as sm  # noqa: E402
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas  # noqa: E402

import harness  # noqa: E402

X_MS_VERSION = "2025-01-05"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "bench"
MB = 1e6
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not listening on {port} after {timeout}s")


# --------------------------------------------------------------------------- /proc

def proc_table() -> dict[int, tuple[int, str, float, int]]:
    """pid -> (ppid, name, utime+stime seconds, flags) for every process."""
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
        out[int(d.name)] = (int(f[1]), name, (int(f[11]) + int(f[12])) / CLK_TCK, int(f[6]))
    return out


def descendants(root: int, table: dict) -> set[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds of a server: its process (all threads) and its child processes (nginx workers)."""
    table = proc_table()
    return sum(table[p][2] for p in descendants(root, table) if p in table)


def ctx_switches(root: int) -> int:
    total = 0
    table = proc_table()
    for pid in descendants(root, table):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
            except OSError:
                pass
    return total


def thread_snapshot(pid: int) -> dict[int, tuple[str, float, int]]:
    """tid -> (thread name without its trailing number, CPU seconds, context switches)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            raw = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue
        name = re.sub(r"[-_]?\d+$", "", raw[raw.index("(") + 1:raw.rindex(")")])
        f = raw.rsplit(")", 1)[1].split()
        cs = sum(int(line.split()[1]) for line in status.splitlines()
                 if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))
        out[int(task.name)] = (name, (int(f[11]) + int(f[12])) / CLK_TCK, cs)
    return out


def threads_delta(before: dict, after: dict, total_cpu: float) -> list[tuple[str, int, int, float, int]]:
    """Per thread name: (name, threads alive at the end, of which new, CPU seconds, context
    switches) between two snapshots; threads that exited in between are one extra row whose CPU
    is the process total minus the rest (their context switches are not known)."""
    rows: dict[str, list] = {}
    for tid, (name, cpu, cs) in after.items():
        _n, cpu0, cs0 = before.get(tid, (name, 0.0, 0))
        r = rows.setdefault(name, [name, 0, 0, 0.0, 0])
        r[1] += 1
        r[2] += tid not in before
        r[3] += cpu - cpu0
        r[4] += cs - cs0
    out = sorted((tuple(r) for r in rows.values()), key=lambda r: -r[3])
    gone = [tid for tid in before if tid not in after]
    if gone:
        rest = total_cpu - sum(r[3] for r in out)
        out.append((f"(exited during the run: {len(gone)})", 0, 0, max(rest, 0.0), -1))
    return out


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def children_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class OtherLoad(threading.Thread):
    """Once a second, the CPU time of every user-space process that is not this script or below
    it (servers, curl, wrk): how much the measurements had to share the machine."""

    PF_KTHREAD = 0x00200000

    def __init__(self):
        super().__init__(daemon=True)
        self.seconds = 0.0
        self.peak = 0.0
        self.by_name: dict[str, float] = {}
        self.done = threading.Event()

    def snapshot(self) -> dict[int, tuple[str, float]]:
        table = proc_table()
        mine = descendants(os.getpid(), table)
        return {pid: (name, cpu) for pid, (_ppid, name, cpu, flags) in table.items()
                if not flags & self.PF_KTHREAD and pid not in mine}

    def run(self) -> None:
        prev, t_prev = self.snapshot(), time.monotonic()
        while not self.done.wait(1.0):
            now, t_now = self.snapshot(), time.monotonic()
            step = 0.0
            for pid, (name, cpu) in now.items():
                delta = cpu - prev.get(pid, (name, 0.0))[1]
                if delta > 0:
                    step += delta
                    self.by_name[name] = self.by_name.get(name, 0.0) + delta
            self.seconds += step
            self.peak = max(self.peak, step / max(t_now - t_prev, 1e-3))
            prev, t_prev = now, t_now

    def top(self) -> str:
        names = sorted(self.by_name.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{n} {s:.0f} s" for n, s in names if s >= 0.5) or "none"


class MemSampler(threading.Thread):
    """Largest VmRSS of `pid`, sampled every 10 ms, after resetting its VmHWM."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.max_rss = 0
        self.samples = 0
        self.done = threading.Event()
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        self.start_rss = status_kib(pid, "VmRSS")

    def run(self) -> None:
        while not self.done.is_set():
            self.max_rss = max(self.max_rss, status_kib(self.pid, "VmRSS"))
            self.samples += 1
            time.sleep(0.01)

    def finish(self) -> dict:
        self.done.set()
        self.join()
        return {"start": self.start_rss / 1024, "max_rss": self.max_rss / 1024,
                "hwm": status_kib(self.pid, "VmHWM") / 1024, "samples": self.samples}


def machine() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", tempfile.gettempdir()],
                        capture_output=True, text=True).stdout.split()
    fs = " on ".join(fs) if fs else "?"
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "mem": mem, "tmpfs": fs}


def tool_version(cmd: list[str], pattern: str) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
    except OSError:
        return "?"
    m = re.search(pattern, p.stdout + p.stderr)
    return m.group(1) if m else "?"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --------------------------------------------------------------------------- servers

class Server:
    """One HTTPS server under test: how to reach a blob, which CA to trust, whose CPU to count."""

    def __init__(self, name: str, pid: int, origin: str, prefix: str, sas: str, ca: str):
        self.name, self.pid, self.origin, self.prefix, self.sas, self.ca = name, pid, origin, prefix, sas, ca

    def url(self, blob: str) -> str:
        u = f"{self.origin}{self.prefix}/{blob}"
        return f"{u}?{self.sas}" if self.sas else u

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = self.ca
        s.headers["x-ms-version"] = X_MS_VERSION
        return s


def make_cert(d: Path) -> tuple[str, str]:
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,digitalSignature,keyCertSign"],
                   check=True, capture_output=True)
    return str(cert), str(key)


def account_sas(account: str, key: str) -> str:
    return generate_account_sas(
        account, key,
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=3),
    )


def create_container(srv: Server) -> None:
    url = f"{srv.origin}{srv.prefix}?restype=container&{srv.sas}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with srv.session() as s:
                r = s.put(url, timeout=30)
            if r.status_code == 201:
                return
            err = f"{r.status_code} {r.text[:300]}"
        except requests.RequestException as e:
            err = str(e)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{srv.name}: create container: {err}")
        time.sleep(0.5)


def write_random(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 * MIB))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- load generators

CURL_BASE = ["curl", "-sS", "--http1.1", "--tlsv1.3", "--noproxy", "*", "-H", f"x-ms-version: {X_MS_VERSION}",
             "-w", "%{http_code} %{size_upload} %{size_download} %{time_total}"]


def curl_cmd(srv: Server, blob: str, upload: Optional[Path] = None, stream: bool = False,
             out: str = "/dev/null") -> list[str]:
    """`--data-binary @file` reads the file into curl's memory first (at most 1 GiB in curl 7.88);
    `stream` uses `-T file` instead (a streamed PUT), for the memory figures."""
    cmd = CURL_BASE + ["--cacert", srv.ca, "-o", out]
    if upload is not None and stream:
        cmd += ["-H", "x-ms-blob-type: BlockBlob", "-T", str(upload)]
    elif upload is not None:
        cmd += ["-X", "PUT", "-H", "x-ms-blob-type: BlockBlob", "--data-binary", f"@{upload}"]
    return cmd + [srv.url(blob)]


def curl(srv: Server, blob: str, size: int, upload: Optional[Path] = None,
         mem: bool = False) -> dict:
    """One timed curl transfer: MB/s from curl's time_total, server CPU and context switches."""
    os.sync()  # earlier writes' writeback does not land on this transfer
    cmd = curl_cmd(srv, blob, upload, stream=mem)
    sampler = MemSampler(srv.pid) if mem else None
    if sampler:
        sampler.start()
    cpu0, cs0 = tree_cpu(srv.pid), ctx_switches(srv.pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, cs = tree_cpu(srv.pid) - cpu0, ctx_switches(srv.pid) - cs0
    # curl's own CPU (user + system), from the rusage of the waited child
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    memory = sampler.finish() if sampler else None
    if p.returncode != 0:
        raise RuntimeError(f"{srv.name}: curl failed ({p.returncode}): {p.stderr[:500]}")
    code, up, down, secs = p.stdout.split()
    want = 201 if upload else 200
    moved = int(up) if upload else int(down)
    if int(code) != want or moved != size:
        raise RuntimeError(f"{srv.name}: curl HTTP {code}, {moved} of {size} bytes")
    return {"mbs": size / float(secs) / MB, "secs": float(secs), "cpu": cpu, "cs": cs, "mem": memory,
            "client": client}


def sha256_of(srv: Server, blob: str) -> str:
    cmd = CURL_BASE[:-2] + ["--cacert", srv.ca, "-f", "-o", "-", srv.url(blob)]
    h = hashlib.sha256()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        for chunk in iter(lambda: p.stdout.read(MIB), b""):
            h.update(chunk)
    if p.returncode != 0:
        raise RuntimeError(f"{srv.name}: reading {blob} back failed ({p.returncode})")
    return h.hexdigest()


WRK_LUA = r"""-- generated by scripts/bench-storage.py
local method, size = "%(method)s", %(size)d
wrk.method = method
wrk.headers["x-ms-version"] = "%(version)s"
if method == "PUT" then
  math.randomseed(42)
  local t = {}
  for i = 1, size do t[i] = string.char(math.random(0, 255)) end
  wrk.body = table.concat(t)
  wrk.headers["x-ms-blob-type"] = "BlockBlob"
  wrk.headers["Content-Type"] = "application/octet-stream"
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d,"mean_us":%%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


class Wrk:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args = args
        self.scripts = {}
        for method in ("GET", "PUT"):
            path = tmp / f"wrk-{method.lower()}.lua"
            path.write_text(WRK_LUA % {"method": method, "size": args.small, "version": X_MS_VERSION})
            self.scripts[method] = path

    def cmd(self, method: str, url: str, seconds: float) -> list[str]:
        a = self.args
        return ["wrk", "-t", str(a.threads), "-c", str(a.connections), "-d", f"{seconds:g}s", "--timeout", "10s",
                "-s", str(self.scripts[method]), url]

    def run(self, srv: Server, method: str, blob: str, seconds: Optional[float] = None) -> dict:
        os.sync()
        cmd = self.cmd(method, srv.url(blob), seconds or self.args.seconds)
        cpu0, cs0, me0 = tree_cpu(srv.pid), ctx_switches(srv.pid), children_seconds()
        p = subprocess.run(cmd, capture_output=True, text=True)
        cpu, cs, me = tree_cpu(srv.pid) - cpu0, ctx_switches(srv.pid) - cs0, children_seconds() - me0
        m = re.search(r"^WRKJSON (.*)$", p.stdout, re.M)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"{srv.name}: wrk failed ({p.returncode}): {p.stdout[-500:]} {p.stderr[-500:]}")
        r = json.loads(m.group(1))
        n = r["requests"]
        r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        r["ops"] = n / (r["duration_us"] / 1e6)
        r["cpu_us"] = cpu / n * 1e6
        r["cs"] = cs / n
        r["wrk_us"] = me / n * 1e6
        r["bytes_per_op"] = r["bytes"] / n
        return r


# --------------------------------------------------------------------------- the run

class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-storage-"))
        self.procs: list[subprocess.Popen] = []
        self.coffer: Optional[harness.Coffer] = None
        self.servers: dict[str, Server] = {}

    # ---- start

    def start_coffer(self) -> Server:
        src = harness.coffer_binary()
        binary = self.tmp / "coffer-bin"
        shutil.copy2(src, binary)  # the lead may rebuild target/release meanwhile
        self.binary = (str(src), hashlib.sha256(binary.read_bytes()).hexdigest()[:12])
        os.environ["COFFER_BIN"] = str(binary)
        c = self.coffer = harness.Coffer(self.tmp / "coffer")
        c.start()
        clients = c.mgmt_clients()
        rg = c.create_rg()
        name = "bench" + uuid.uuid4().hex[:16]
        clients.storage.storage_accounts.begin_create(rg, name, sm.StorageAccountCreateParameters(
            sku=sm.Sku(name="Standard_LRS"), kind="StorageV2", location="eastus")).result()
        key = clients.storage.storage_accounts.list_keys(rg, name)["keys"][0].value
        srv = Server("Coffer", c.proc.pid, c.endpoints["blob"], f"/{name}/{CONTAINER}", account_sas(name, key), c.ca)
        create_container(srv)
        return srv

    def start_azurite(self, cert: str, key: str) -> Server:
        port = free_port()
        loc = self.tmp / "azurite"
        loc.mkdir()
        cmd = [self.args.azurite, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--cert", cert, "--key", key,
               "--location", str(loc), "--skipApiVersionCheck", "--loose", "--silent"]
        self.azurite_cmd = cmd
        with open(self.tmp / "azurite.log", "wb") as out:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_port(port, p, "azurite")
        srv = Server("Azurite", p.pid, f"https://127.0.0.1:{port}", f"/{AZURITE_ACCOUNT}/{CONTAINER}",
                     account_sas(AZURITE_ACCOUNT, AZURITE_KEY), cert)
        create_container(srv)
        return srv

    def start_nginx(self, cert: str, key: str, www: Path) -> Server:
        port = free_port()
        d = self.tmp / "nginx"
        d.mkdir()
        conf = d / "nginx.conf"
        conf.write_text(f"""daemon off;
master_process on;
worker_processes auto;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    default_type application/octet-stream;
    client_body_temp_path {d}/body;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        root {www};
    }}
}}
""")
        self.nginx_conf = conf.read_text()
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        with open(d / "stdout.log", "wb") as out:
            p = subprocess.Popen([nginx, "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_port(port, p, "nginx")
        return Server("nginx", p.pid, f"https://127.0.0.1:{port}", f"/{CONTAINER}", "", cert)

    def cipher(self, srv: Server) -> str:
        host = srv.origin.split("//", 1)[1]
        p = subprocess.run(["openssl", "s_client", "-connect", host, "-CAfile", srv.ca, "-brief"],
                           input="", capture_output=True, text=True, timeout=30)
        proto = re.search(r"Protocol version: (\S+)", p.stderr)
        suite = re.search(r"Ciphersuite: (\S+)", p.stderr)
        return f"{proto.group(1) if proto else '?'} {suite.group(1) if suite else '?'}"

    def start(self) -> None:
        a = self.args
        log(f"temporary directory {self.tmp}")
        cert, key = make_cert(self.tmp)
        www = self.tmp / "www"
        (www / CONTAINER).mkdir(parents=True)
        self.big = www / CONTAINER / "big.bin"
        self.small = www / CONTAINER / "small.bin"
        self.empty = www / CONTAINER / "empty.bin"
        self.empty.write_bytes(b"")
        self.mem = self.tmp / "mem.bin"
        log(f"writing {a.big_mib} MiB, {a.mem_mib} MiB and {a.small} B files of random bytes")
        self.big_sha = write_random(self.big, a.big_mib * MIB)
        self.small_sha = write_random(self.small, a.small)
        self.mem_sha = write_random(self.mem, a.mem_mib * MIB) if a.mem_mib else None
        log("starting Coffer, Azurite and nginx")
        self.servers["Coffer"] = self.start_coffer()
        self.servers["Azurite"] = self.start_azurite(cert, key)
        self.servers["nginx"] = self.start_nginx(cert, key, www)
        self.ciphers = {n: self.cipher(s) for n, s in self.servers.items()}
        self.wrk = Wrk(a, self.tmp)
        for name in ("Coffer", "Azurite"):
            srv = self.servers[name]
            curl(srv, "small.bin", a.small, upload=self.small)
            assert sha256_of(srv, "small.bin") == self.small_sha, f"{name}: small.bin read back differs"
            curl(srv, "empty.bin", 0, upload=self.empty)
        for name, srv in self.servers.items():
            log(f"{name}: pid {srv.pid}, {srv.origin}, {self.ciphers[name]}")

    # ---- measure

    def transfers(self) -> dict:
        a, size = self.args, self.args.big_mib * MIB
        res = {n: {"up": [], "down": []} for n in self.servers}
        for i in range(a.transfers):
            for name in ("Coffer", "Azurite"):
                r = curl(self.servers[name], f"big-{i}.bin", size, upload=self.big)
                res[name]["up"].append(r)
                log(f"{name}: upload {a.big_mib} MiB {r['mbs']:.0f} MB/s, server CPU {r['cpu']:.2f} s, "
                    f"curl CPU {r['client']:.2f} s")
        for name in ("Coffer", "Azurite"):
            got = sha256_of(self.servers[name], "big-0.bin")
            assert got == self.big_sha, f"{name}: big-0.bin read back with different bytes"
        # What curl spends on a download of nothing (start, TLS handshake, request): not per byte.
        self.curl_fixed = {n: median([curl(s, "empty.bin", 0)["client"] for _ in range(3)])
                           for n, s in self.servers.items()}
        for i in range(a.transfers):
            for name in ("Coffer", "Azurite", "nginx"):
                blob = "big.bin" if name == "nginx" else f"big-{i}.bin"
                r = curl(self.servers[name], blob, size)
                r["client_fixed"] = self.curl_fixed[name]
                res[name]["down"].append(r)
                log(f"{name}: download {a.big_mib} MiB {r['mbs']:.0f} MB/s, server CPU {r['cpu']:.2f} s, "
                    f"curl CPU {r['client']:.2f} s")
        return res

    def small_ops(self) -> dict:
        a = self.args
        res = {n: {"PUT": [], "GET": []} for n in self.servers}
        for rnd in range(a.rounds):
            for name in ("Coffer", "Azurite", "nginx"):
                for method in ("PUT", "GET"):
                    if name == "nginx" and method == "PUT":
                        continue
                    blob = "small-put.bin" if method == "PUT" else "small.bin"
                    r = self.wrk.run(self.servers[name], method, blob)
                    res[name][method].append(r)
                    log(f"{name}: 4 KiB {method} {r['ops']:.0f}/s p50 {r['p50_us'] / 1000:.2f} ms "
                        f"p99 {r['p99_us'] / 1000:.2f} ms server {r['cpu_us']:.0f} µs/op "
                        f"{r['cs']:.1f} cs/op, wrk {r['wrk_us']:.0f} µs/op, errors {r['errors']}")
        return res

    def memory(self) -> dict:
        a = self.args
        res = {}
        if not a.mem_mib:
            return res
        size = a.mem_mib * MIB
        for name in ("Coffer", "Azurite"):
            srv = self.servers[name]
            up = curl(srv, "mem.bin", size, upload=self.mem, mem=True)
            down = curl(srv, "mem.bin", size, mem=True)
            res[name] = {"up": up, "down": down}
            log(f"{name}: {a.mem_mib} MiB upload {up['mbs']:.0f} MB/s peak {up['mem']['hwm']:.0f} MiB; "
                f"download {down['mbs']:.0f} MB/s peak {down['mem']['hwm']:.0f} MiB")
        assert sha256_of(self.servers["Coffer"], "mem.bin") == self.mem_sha, "Coffer: mem.bin differs"
        return res

    def diagnose(self) -> str:
        """Where Coffer's CPU goes (not part of the timed figures): for 4 KiB GETs and PUTs (wrk, as
        above) and one big download and upload (curl), per operation: CPU and context switches of
        each group of server threads (by thread name), syscalls counted with strace -c -f, and a
        perf profile (cpu-clock, self time). Tracing slows the server; only counts are used."""
        srv, a, out = self.servers["Coffer"], self.args, []
        secs, size = 5.0, a.big_mib * MIB
        empty = self.tmp / "empty.bin"
        empty.write_bytes(b"")
        curl(srv, "empty.bin", 0, upload=empty)
        cases = [
            ("4 KiB GET", "request", lambda: self.wrk.run(srv, "GET", "small.bin", secs)["requests"]),
            ("4 KiB PUT", "request", lambda: self.wrk.run(srv, "PUT", "small-put.bin", secs)["requests"]),
            ("GET of an empty blob (the GET path without opening an object file)", "request",
             lambda: self.wrk.run(srv, "GET", "empty.bin", secs)["requests"]),
            (f"{a.big_mib} MiB download", "MiB", lambda: curl(srv, "big-0.bin", size) and a.big_mib),
            (f"{a.big_mib} MiB upload", "MiB", lambda: curl(srv, "diag.bin", size, upload=self.big) and a.big_mib),
        ]
        for label, unit, run in cases:
            out.append(f"#### {label}\n")
            t0, c0 = thread_snapshot(srv.pid), tree_cpu(srv.pid)
            n = run()
            t1, c1 = thread_snapshot(srv.pid), tree_cpu(srv.pid)
            out.append(f"Server threads, untraced run ({n} {unit}s; server CPU {(c1 - c0) / n * 1e6:.0f} µs per "
                       f"{unit} in all): CPU and context switches per {unit}, by thread name.\n")
            out.append(f"| thread name | threads at the end (new) | CPU µs per {unit} | context switches per {unit} |")
            out.append("|---|---|---|---|")
            for name, alive, new, cpu, cs in threads_delta(t0, t1, c1 - c0):
                if cpu > 0 or cs > 0:
                    out.append(f"| {name} | {alive} ({new}) | {cpu / n * 1e6:.0f} | "
                               f"{'?' if cs < 0 else f'{cs / n:.1f}'} |")
            out.append("")
            if shutil.which("strace"):
                st_out = self.tmp / "strace.txt"
                st = subprocess.Popen(["strace", "-c", "-w", "-f", "-p", str(srv.pid), "-o", str(st_out)],
                                      stderr=subprocess.DEVNULL)
                time.sleep(1.0)
                n = run()
                st.send_signal(signal.SIGINT)
                st.wait(60)
                rows, fsync_us = [], ""
                for line in st_out.read_text().splitlines()[2:]:
                    f = line.split()
                    if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
                        rows.append((int(f[3]) / n, f[-1]))
                        if f[-1] in ("fsync", "fdatasync"):
                            fsync_us += f" {f[-1]} takes {int(f[2]) / 1000:.1f} ms on average (wall)."
                rows.sort(reverse=True)
                out.append(f"Syscalls per {unit} (strace -c -w -f, {n} {unit}s under strace, ≥ 0.05 per {unit}): "
                           + ", ".join(f"{name} {c:.2f}" for c, name in rows if c >= 0.05) + "." + fsync_us + "\n")
            if shutil.which("perf"):
                data = self.tmp / "perf.data"
                pf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-p", str(srv.pid),
                                       "-o", str(data)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
                run()
                pf.send_signal(signal.SIGINT)
                pf.wait(60)
                def perf_rows(sort: str, limit: float) -> list[str]:
                    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                                          "--sort", sort, "--percent-limit", str(limit)],
                                         capture_output=True, text=True).stdout
                    return [re.sub(r"(\s+-)+\s*$", "", ln).rstrip() for ln in rep.splitlines()
                            if ln.strip() and not ln.lstrip().startswith("#")]
                out.append(f"perf record -e cpu-clock, self time by object, then symbols ≥ 1 %:\n")
                out.append("```\n" + "\n".join(perf_rows("dso", 0.5)[:8] + [""] + perf_rows("dso,symbol", 1.0)[:25])
                           + "\n```\n")
        return "\n".join(out)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.coffer is not None:
            code = self.coffer.stop()
            harness.forget(self.coffer)
            if code not in (0, None):
                log(f"coffer exited with {code}")
        if self.args.keep:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- report

def curl_limit(rs: list) -> float:
    """The rate curl could have moved these transfers at if it never waited: bytes / curl's CPU
    beyond what a download of nothing costs it (start, handshake)."""
    per_byte = [r["client"] - r.get("client_fixed", 0.0) for r in rs]
    return median([r["mbs"] * r["secs"] / c for r, c in zip(rs, per_byte) if c > 0] or [0.0])


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "—"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def report(args, m, bench: Bench, tp: dict, small: dict, mem: dict, load: dict, wall: float) -> str:
    out = []
    a = args
    out.append(f"Machine: {m['nproc']} cores ({m['cpu']}), {m['mem']}, Linux {m['kernel']}, temporary files on "
               f"{m['tmpfs']}. Coffer binary {bench.binary[0]} (sha256 `{bench.binary[1]}`); Azurite "
               f"{m['azurite']} (Node {m['node']}); nginx {m['nginx']}; wrk {m['wrk']}; curl {m['curl']}.")
    out.append(f"Run started {load['started']} UTC, {wall:.0f} s in all. Load average {load['before']} before, "
               f"{load['after']} after. While it measured, other processes used {load['other']:.2f} cores on "
               f"average (peak 1-s sample {load['peak']:.2f}; most: {load['top']}).")
    out.append("TLS: " + "; ".join(f"{n} {c}" for n, c in bench.ciphers.items()) + ".\n")

    def med(name, kind, key="mbs"):
        return median([r[key] for r in tp[name][kind]])

    def rng(name, kind, key="mbs"):
        xs = [r[key] for r in tp[name][kind]]
        return f"{min(xs):.0f}–{max(xs):.0f}"

    def best(name, method):
        rs = sorted(small[name][method], key=lambda r: r["ops"])
        return rs[len(rs) // 2]

    cu, au = med("Coffer", "up"), med("Azurite", "up")
    cd, ad, nd = med("Coffer", "down"), med("Azurite", "down"), med("nginx", "down")
    cp, ap = best("Coffer", "PUT")["ops"], best("Azurite", "PUT")["ops"]
    cg, ag, ng = best("Coffer", "GET")["ops"], best("Azurite", "GET")["ops"], best("nginx", "GET")["ops"]
    out.append("| figure | Coffer | Azurite | nginx | Coffer / Azurite | Coffer / nginx | target | result |")
    out.append("|---|---|---|---|---|---|---|---|")
    out.append(f"| {a.big_mib} MiB upload, MB/s | {cu:.0f} | {au:.0f} | — | {ratio(cu, au)} | — | ≥ 3× Azurite | {verdict(cu >= 3 * au)} |")
    out.append(f"| {a.big_mib} MiB download, MB/s | {cd:.0f} | {ad:.0f} | {nd:.0f} | {ratio(cd, ad)} | {cd / nd:.0%} | ≥ 3× Azurite; ≥ 60 % of nginx | {verdict(cd >= 3 * ad)}; {verdict(cd >= 0.6 * nd)} |")
    out.append(f"| 4 KiB PUT, ops/s | {cp:.0f} | {ap:.0f} | — | {ratio(cp, ap)} | — | ≥ 3× Azurite | {verdict(cp >= 3 * ap)} |")
    out.append(f"| 4 KiB GET, ops/s | {cg:.0f} | {ag:.0f} | {ng:.0f} | {ratio(cg, ag)} | {cg / ng:.0%} | ≥ 3× Azurite | {verdict(cg >= 3 * ag)} |")
    if mem:
        cmu, cmd = mem["Coffer"]["up"]["mem"], mem["Coffer"]["down"]["mem"]
        amu, amd = mem["Azurite"]["up"]["mem"], mem["Azurite"]["down"]["mem"]
        for label, c, az in (("upload", cmu, amu), ("download", cmd, amd)):
            peak = max(c["hwm"], c["max_rss"])
            out.append(f"| peak server memory, {a.mem_mib} MiB {label}, MiB (VmHWM) | {c['hwm']:.0f} | {az['hwm']:.0f} "
                       f"| — | — | — | < 100 MiB | {verdict(peak < 100)} |")
    out.append("")
    out.append(f"Transfers: `curl` (same command for every server, `--http1.1 --tlsv1.3`, to/from a file), "
               f"{a.transfers} of each per server, interleaved; median shown, MB = 10^6 bytes, from curl's "
               f"`time_total`. Server CPU from `/proc/<pid>/stat` (server and its child processes).\n")
    out.append("| server | upload MB/s (median) | min–max | server CPU s per upload | curl CPU s per upload | download MB/s (median) | min–max | server CPU s per download | curl CPU s per download | both, CPU s per download | curl busy, download | curl's own limit, download MB/s |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("Coffer", "Azurite", "nginx"):
        if tp[name]["up"]:
            up = (f"{med(name, 'up'):.0f} | {rng(name, 'up')} | {med(name, 'up', 'cpu'):.2f} "
                  f"| {med(name, 'up', 'client'):.2f}")
        else:
            up = "— | — | — | —"
        both = median([r["cpu"] + r["client"] for r in tp[name]["down"]])
        busy = median([(r["client"] - r.get("client_fixed", 0.0)) / r["secs"] for r in tp[name]["down"]])
        out.append(f"| {name} | {up} | {med(name, 'down'):.0f} | {rng(name, 'down')} | {med(name, 'down', 'cpu'):.2f} "
                   f"| {med(name, 'down', 'client'):.2f} | {both:.2f} | {busy:.0%} | {curl_limit(tp[name]['down']):.0f} |")
    out.append("")
    out.append(f"curl's CPU is its user + system time (rusage). Server and curl share the {m['nproc']} "
               f"cores: a transfer takes at least (server CPU + curl CPU) / {m['nproc']} of wall time. "
               f"curl moves a download on one thread, so it takes at least curl's own CPU time: *curl busy* is "
               f"curl's CPU for the bytes (its CPU less that of a download of an empty blob: "
               + ", ".join(f"{n} {v * 1000:.0f} ms" for n, v in bench.curl_fixed.items())
               + f") / transfer time, and *curl's own limit* is the bytes / that CPU, the fastest curl "
               f"could have taken them from that server (median over the transfers).")
    lim = curl_limit(tp["Coffer"]["down"])
    out.append(f"\nDownload and the load generator: 3× Azurite is {3 * ad:.0f} MB/s; curl's own limit in "
               f"Coffer's downloads was {lim:.0f} MB/s ({lim / ad:.2f}× Azurite), and Coffer reached "
               f"{cd / lim:.0%} of it.")
    out.append("")
    out.append(f"4 KiB operations: `wrk -t {a.threads} -c {a.connections} -d {a.seconds:g}s` with a Lua script "
               f"(fixed request: PUT of one 4 KiB random body to one blob, or GET of one 4 KiB blob; account SAS "
               f"in the query string), {a.rounds} rounds per server, interleaved; the median round is shown. "
               f"*Server-bound* = {m['nproc']} cores / server CPU per operation (what the server would sustain "
               f"with the load generator elsewhere); wrk's own CPU per operation is shown too, since both share "
               f"the {m['nproc']} cores.\n")
    out.append("| server | operation | ops/s (median round) | all rounds | p50 ms | p99 ms | server CPU µs/op | server-bound ops/s | context switches/op | wrk CPU µs/op | errors |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("Coffer", "Azurite", "nginx"):
        for method in ("PUT", "GET"):
            rs = small[name][method]
            if not rs:
                continue
            b = best(name, method)
            rounds = ", ".join(f"{r['ops']:.0f}" for r in rs)
            out.append(f"| {name} | {method} | {b['ops']:.0f} | {rounds} "
                       f"| {b['p50_us'] / 1000:.2f} | {b['p99_us'] / 1000:.2f} | {b['cpu_us']:.0f} "
                       f"| {m['nproc'] / b['cpu_us'] * 1e6:.0f} | {b['cs']:.1f} | {b['wrk_us']:.0f} "
                       f"| {sum(r['errors'] for r in rs)} |")
    out.append("")
    if mem:
        out.append(f"Memory: one {a.mem_mib} MiB Put Blob with curl (`-T file`, streamed: curl 7.88 refuses "
                   f"`--data-binary @file` of 1 GiB), then one download of it; VmHWM reset "
                   f"(`echo 5 > /proc/<pid>/clear_refs`) before each, VmRSS sampled every 10 ms.\n")
        out.append("| server | transfer | MB/s | VmRSS before, MiB | largest VmRSS sampled, MiB | VmHWM after, MiB |")
        out.append("|---|---|---|---|---|---|")
        for name in ("Coffer", "Azurite"):
            for kind in ("up", "down"):
                r = mem[name][kind]
                x = r["mem"]
                out.append(f"| {name} | {'upload' if kind == 'up' else 'download'} | {r['mbs']:.0f} | {x['start']:.0f} "
                           f"| {x['max_rss']:.0f} | {x['hwm']:.0f} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", help="coffer binary (default $COFFER_BIN or target/release/coffer)")
    p.add_argument("--azurite", default=str(REPO / ".bench-tools/node_modules/.bin/azurite-blob"))
    p.add_argument("--big-mib", type=int, default=256)
    p.add_argument("--mem-mib", type=int, default=1024, help="blob size for the memory figures (0: skip)")
    p.add_argument("--small", type=int, default=4096, help="bytes per small blob")
    p.add_argument("--transfers", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="duration of one wrk round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=8, help="wrk connections (concurrent clients)")
    p.add_argument("--diagnose", action="store_true", help="also strace -c and perf Coffer under 4 KiB ops")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    if args.bin:
        os.environ["COFFER_BIN"] = str(Path(args.bin).resolve())
    if not Path(args.azurite).exists():
        sys.exit(f"azurite-blob not found at {args.azurite}: run scripts/bench-storage.sh")
    harness.scrub_proxy_env()
    m = machine()
    m["azurite"] = "?"
    for d in Path(args.azurite).resolve().parents:  # node_modules/azurite/dist/src/blob/main.js
        pkg = d / "package.json"
        if pkg.is_file() and json.loads(pkg.read_text()).get("name") == "azurite":
            m["azurite"] = json.loads(pkg.read_text())["version"]
            break
    m["node"] = tool_version(["node", "--version"], r"v(\S+)")
    m["nginx"] = tool_version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], r"nginx/(\S+)")
    m["wrk"] = tool_version(["wrk", "-v"], r"wrk (?:debian/)?(\S+)")
    m["curl"] = tool_version(["curl", "--version"], r"curl (\S+)")
    load = {"started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "before": loadavg()}
    t0 = time.perf_counter()
    bench = Bench(args)
    diag = ""
    try:
        bench.start()
        sampler = OtherLoad()
        sampler.start()
        t_meas = time.perf_counter()
        tp = bench.transfers()
        small = bench.small_ops()
        mem = bench.memory()
        measured = time.perf_counter() - t_meas
        sampler.done.set()
        sampler.join()
        load.update(other=sampler.seconds / measured, peak=sampler.peak, top=sampler.top(), after=loadavg())
        if args.diagnose:
            diag = bench.diagnose()
    except BaseException:
        if bench.coffer is not None:
            log(f"FAILED; Coffer log tail:\n{bench.coffer.log_tail(40)}")
        raise
    finally:
        bench.stop()
    wall = time.perf_counter() - t0
    shown = list(sys.argv[1:])
    if "--azurite" in shown:  # added by scripts/bench-storage.sh
        i = shown.index("--azurite")
        del shown[i:i + 2]
    print("Command: `" + " ".join(shlex.quote(x) for x in ["scripts/bench-storage.sh", *shown]) + "`\n")
    print(report(args, m, bench, tp, small, mem, load, wall))
    if diag:
        print("### Diagnostics (Coffer under strace / perf; not timed figures)\n")
        print(diag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
