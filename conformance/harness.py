"""Start a Coffer server and talk to it with the official Azure SDKs.

The server contract (flags, COFFER_READY line, endpoints.json, admin-credentials.json, admin
endpoints) is described in the Foundation issue; this module is the only place that knows it.
Tests use the `Coffer` object handed out by the fixtures in conftest.py.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import requests
import requests.adapters
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault import models as kvm
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.resource.subscriptions import SubscriptionClient
from azure.mgmt.storage import StorageManagementClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature

REPO_ROOT = Path(__file__).resolve().parent.parent

ARM_SCOPE = "https://management.core.windows.net//.default"
ARM_SCOPE_ALT = "https://management.azure.com/.default"
ARM_AUDIENCE = "https://management.core.windows.net/"
STORAGE_SCOPE = "https://storage.azure.com/.default"
PUBLIC_VAULT_SCOPE = "https://vault.azure.net/.default"

REGIONS = ("eastus", "westeurope")
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
HTTP_TIMEOUT_S = 30

# api-versions the pinned SDKs send (the server must accept any; raw requests use these).
API_RESOURCES = "2025-04-01"
API_SUBSCRIPTIONS = "2022-12-01"
API_KEYVAULT = "2026-05-15"
API_MSI = "2024-11-30"
API_AUTHORIZATION = "2022-04-01"
API_SUBSCRIPTION_ALIAS = "2021-10-01"
API_KEYVAULT_DATA = "7.6"  # raw Key Vault data-plane requests (the SDK sends 2025-07-01)

# Built-in role definition names (GUIDs) exactly as in Azure.
ROLE_IDS = {
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "Key Vault Crypto Officer": "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
    "Key Vault Crypto Service Encryption User": "e147488a-f6f5-4113-8e2d-b22465e65bf6",
}

# Key Vault data-plane roles (kept apart from ROLE_IDS, which parametrizes test_rbac.py).
KV_ROLE_IDS = {
    "Key Vault Administrator": "00482a5a-887f-4fb3-b363-3b7fe8e74483",
    "Key Vault Crypto Officer": "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
    "Key Vault Crypto User": "12338af0-0e69-4776-bea7-57ae8d297424",
    "Key Vault Crypto Service Encryption User": "e147488a-f6f5-4113-8e2d-b22465e65bf6",
    "Key Vault Reader": "21090545-7ca7-4776-b22c-e363652d74d2",
}

PROXY_ENV_VARS = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "all_proxy", "no_proxy",
)

_ADMIN = object()  # sentinel: "use the admin's token"
_PRINCIPAL = object()  # sentinel: "use the token of the vault's principal"


def scrub_proxy_env() -> None:
    """Tests reach the proxy only when they ask for it explicitly."""
    for name in PROXY_ENV_VARS:
        os.environ.pop(name, None)


def coffer_binary() -> Path:
    return Path(os.environ.get("COFFER_BIN") or REPO_ROOT / "target" / "release" / "coffer")


# --------------------------------------------------------------------------- small helpers

def unique(prefix: str, length: int = 12) -> str:
    """A fresh resource name: prefix + hex, valid for RGs, vaults and identities."""
    return prefix + uuid.uuid4().hex[:length]


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_jwt(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWS, without verifying it."""
    header, claims, _sig = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(claims))


def verify_rs256(token: str, jwk: dict) -> None:
    """Raise cryptography's InvalidSignature unless `token` is signed by the RSA `jwk`."""
    header, claims, sig = token.split(".")
    public = rsa.RSAPublicNumbers(
        int.from_bytes(b64url_decode(jwk["e"]), "big"),
        int.from_bytes(b64url_decode(jwk["n"]), "big"),
    ).public_key()
    public.verify(b64url_decode(sig), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())


def raw_request_head(coffer: "Coffer", request: str) -> bytes:
    """Send `request` (a request line and headers, no body) over TLS to the blob endpoint and
    return the response's head: for requests the SDK cannot make (a body never sent)."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    url = urlsplit(coffer.endpoints["blob"])
    ctx = ssl.create_default_context(cafile=coffer.ca)
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=url.hostname) as s:
        s.sendall(request.replace("{host}", url.netloc).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, "connection closed before a response"
            head += chunk
    return head


def sign_rs256(header: dict, claims: dict, key: Optional[rsa.RSAPrivateKey] = None) -> str:
    """A JWT signed with `key` (a fresh RSA key by default): for forgery tests."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input = b64url_encode(json.dumps(header).encode()) + "." + b64url_encode(json.dumps(claims).encode())
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url_encode(signature)


def error_code(exc: HttpResponseError) -> Optional[str]:
    """The ARM error code the SDK parsed from `{"error":{"code":...}}`."""
    return exc.error.code if getattr(exc, "error", None) is not None else None


def expect_error(status: int, fn: Callable, *args: Any, code: Optional[str] = None, **kwargs: Any) -> HttpResponseError:
    """Call fn(*args, **kwargs); it must raise HttpResponseError with `status` (and `code`)."""
    with pytest.raises(HttpResponseError) as info:
        fn(*args, **kwargs)
    exc = info.value
    assert exc.status_code == status, f"expected HTTP {status}, got {exc.status_code}: {exc}"
    if code is not None:
        assert error_code(exc) == code, f"expected error code {code!r}, got {error_code(exc)!r}: {exc}"
    return exc


def assert_arm_error(resp: requests.Response, status: Optional[int] = None, code: Optional[str] = None) -> dict:
    """An ARM error response: `{"error":{"code":str,"message":str}}` with a JSON content type."""
    if status is not None:
        assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:500]}"
    assert "json" in resp.headers.get("Content-Type", ""), f"not JSON: {resp.headers.get('Content-Type')!r}"
    body = resp.json()
    error = body.get("error")
    assert isinstance(error, dict), f"no ARM error object in {body!r}"
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str), body
    if code is not None:
        assert error["code"] == code, body
    return error


def assert_oauth_error(resp: requests.Response, status: int, error: Optional[str] = None) -> dict:
    """An OAuth2/Entra error: `{"error":str,"error_description":str}`."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:500]}"
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("error_description"), str), body
    if error is not None:
        assert body["error"] == error, body
    return body


def vault_params(
    tenant_id: str,
    location: str = "eastus",
    *,
    purge_protection: bool = True,
    retention_days: int = 7,
    create_mode: Optional[str] = None,
    tags: Optional[dict] = None,
) -> kvm.VaultCreateOrUpdateParameters:
    """Vault PUT body. Built from models: azure-mgmt-keyvault 14 sends plain dicts verbatim, so a
    snake_case dict would reach the wire as `tenant_id` instead of `tenantId`."""
    props = kvm.VaultProperties(
        tenant_id=tenant_id,
        sku=kvm.Sku(family="A", name="standard"),
        enable_rbac_authorization=True,
        enable_soft_delete=True,
        soft_delete_retention_in_days=retention_days,
    )
    if purge_protection:
        props.enable_purge_protection = True
    if create_mode:
        props.create_mode = create_mode
    if tags is not None:
        return kvm.VaultCreateOrUpdateParameters(location=location, properties=props, tags=tags)
    return kvm.VaultCreateOrUpdateParameters(location=location, properties=props)


class StaticTokenCredential:
    """A TokenCredential that always returns the same raw token (to feed the SDK a bad one)."""

    def __init__(self, token: str):
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


@dataclass(frozen=True)
class Principal:
    client_id: str
    client_secret: str
    object_id: str
    tenant_id: str


@dataclass
class MgmtClients:
    resource: ResourceManagementClient
    subscriptions: SubscriptionClient
    keyvault: KeyVaultManagementClient
    msi: ManagedServiceIdentityClient
    authorization: AuthorizationManagementClient
    storage: StorageManagementClient


class _NoDelayProxyAdapter(requests.adapters.HTTPAdapter):
    """urllib3 turns Nagle's algorithm back on for proxied connections; with TLS records written
    separately for headers and body, each POST through a tunnel then waits ~40 ms for a delayed ACK.
    Raw requests in tests switch it off again (the SDK clients keep urllib3's default)."""

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs.setdefault("socket_options", [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        return super().proxy_manager_for(proxy, **proxy_kwargs)


# --------------------------------------------------------------------------- the server

_LIVE: list["Coffer"] = []


def live_servers() -> list["Coffer"]:
    return list(_LIVE)


def forget(server: "Coffer") -> None:
    if server in _LIVE:
        _LIVE.remove(server)


class CofferStartError(RuntimeError):
    pass


class Coffer:
    """One Coffer server process (data dir + flags) and client helpers bound to its endpoints.

    `start()` may be called again after `stop()` (same data dir, same flags): ports change, so
    every cached client is dropped and endpoints.json is read again.
    """

    def __init__(self, base_dir: Path, *, test_clock: bool = False, extra_args: tuple[str, ...] = ()):
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base_dir / "coffer.stderr.log"
        self.test_clock = test_clock
        self.extra_args = tuple(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.endpoints_path: Optional[Path] = None
        self.endpoints: dict = {}
        self.admin: dict = {}
        self._stdout_tail: list[str] = []
        self._reset_caches()

    # ---- process control

    def command(self) -> list[str]:
        cmd = [
            str(coffer_binary()), "server",
            "--data-dir", str(self.data_dir),
            "--listen", "127.0.0.1:0",
            "--blob-listen", "127.0.0.1:0",
            "--proxy-listen", "127.0.0.1:0",
            "--regions", ",".join(REGIONS),
        ]
        if self.test_clock:
            cmd.append("--test-clock")
        cmd.extend(self.extra_args)
        return cmd

    def start(self) -> "Coffer":
        binary = coffer_binary()
        if not binary.is_file():
            raise CofferStartError(f"coffer binary not found at {binary} (cargo build --release, or set COFFER_BIN)")
        env = {k: v for k, v in os.environ.items() if k not in PROXY_ENV_VARS}
        env.setdefault("RUST_BACKTRACE", "1")
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env,
                text=True, bufsize=1,
            )
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._pump_stdout, args=(self.proc, lines), daemon=True).start()
        if self not in _LIVE:
            _LIVE.append(self)

        try:
            self.endpoints_path = self._wait_ready(lines)
        except CofferStartError:
            forget(self)
            raise
        self._reset_caches()
        self.endpoints = json.loads(self.endpoints_path.read_text())
        self.admin = json.loads((self.data_dir / "admin-credentials.json").read_text())
        return self

    def _wait_ready(self, lines: "queue.Queue[Optional[str]]") -> Path:
        """Read stdout lines until `COFFER_READY <path>`; fail if the process exits or is too slow."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise CofferStartError(f"no COFFER_READY line within {READY_TIMEOUT_S}s\n{self.log_tail()}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the process is exiting
                try:
                    code: Any = self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._kill()
                    code = "killed"
                raise CofferStartError(f"coffer exited ({code}) before COFFER_READY\n{self.log_tail()}")
            if line.startswith("COFFER_READY "):
                return Path(line[len("COFFER_READY "):].strip())

    def _pump_stdout(self, proc: subprocess.Popen, lines: "queue.Queue[Optional[str]]") -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._stdout_tail = (self._stdout_tail + [line.rstrip("\n")])[-50:]
            lines.put(line.rstrip("\n"))
        lines.put(None)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> Optional[int]:
        """SIGTERM and wait; returns the exit code (None if the process was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._kill()
                raise AssertionError(f"coffer did not exit within {STOP_TIMEOUT_S}s of SIGTERM\n{self.log_tail()}")
        return self.proc.returncode

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 200) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        out = "\n".join(text.splitlines()[-lines:])
        if self._stdout_tail:
            out += "\n----- stdout tail\n" + "\n".join(self._stdout_tail)
        return out

    # ---- endpoints

    def _reset_caches(self) -> None:
        self._admin_credential: Optional[ClientSecretCredential] = None
        self._admin_clients: dict[str, MgmtClients] = {}
        self._oidc: Optional[dict] = None

    @property
    def tenant_id(self) -> str:
        return self.endpoints["tenant_id"]

    @property
    def subscription_id(self) -> str:
        return self.endpoints["subscription_id"]

    @property
    def authority(self) -> str:
        return self.endpoints["authority"]

    @property
    def management(self) -> str:
        return self.endpoints["management"]

    @property
    def ca(self) -> str:
        return self.endpoints["ca_cert"]

    @property
    def proxy(self) -> str:
        return self.endpoints["proxy"]

    @property
    def vault_dns_suffix(self) -> str:
        return self.endpoints["vault_dns_suffix"]

    @property
    def blob_dns_suffix(self) -> str:
        return self.endpoints["blob_dns_suffix"]

    @property
    def vault_scope(self) -> str:
        return f"https://{self.vault_dns_suffix}/.default"

    def sub_scope(self, subscription_id: Optional[str] = None) -> str:
        return f"/subscriptions/{subscription_id or self.subscription_id}"

    def rg_scope(self, rg: str, subscription_id: Optional[str] = None) -> str:
        return f"{self.sub_scope(subscription_id)}/resourceGroups/{rg}"

    def vault_id(self, rg: str, name: str) -> str:
        return f"{self.rg_scope(rg)}/providers/Microsoft.KeyVault/vaults/{name}"

    def role_definition_id(self, role: str, subscription_id: Optional[str] = None) -> str:
        guid = ROLE_IDS.get(role) or KV_ROLE_IDS.get(role, role)
        return f"{self.sub_scope(subscription_id)}/providers/Microsoft.Authorization/roleDefinitions/{guid}"

    # ---- SDK objects

    def _sdk_kwargs(self) -> dict:
        # No retries (a 5xx must fail the test at once), explicit trust, no proxy from the environment.
        return dict(connection_verify=self.ca, use_env_settings=False, retry_total=0,
                    connection_timeout=HTTP_TIMEOUT_S, read_timeout=HTTP_TIMEOUT_S * 2)

    def credential(self, client_id: Optional[str] = None, secret: Optional[str] = None) -> ClientSecretCredential:
        """A credential for (client_id, secret); the admin service principal by default."""
        if client_id is None:
            if self._admin_credential is None:
                self._admin_credential = self.credential(self.admin["client_id"], self.admin["client_secret"])
            return self._admin_credential
        return ClientSecretCredential(
            self.tenant_id, client_id, secret, authority=self.authority,
            disable_instance_discovery=True, **self._sdk_kwargs(),
        )

    def credential_for(self, principal: Principal) -> ClientSecretCredential:
        return self.credential(principal.client_id, principal.client_secret)

    def mgmt_clients(self, cred: Any = None, subscription_id: Optional[str] = None) -> MgmtClients:
        """All management clients for `cred` (admin by default) on `subscription_id` (default one)."""
        sub = subscription_id or self.subscription_id
        if cred is None and sub in self._admin_clients:
            return self._admin_clients[sub]
        credential = cred if cred is not None else self.credential()
        kw = dict(base_url=self.management, credential_scopes=[ARM_SCOPE], **self._sdk_kwargs())
        clients = MgmtClients(
            resource=ResourceManagementClient(credential, sub, **kw),
            subscriptions=SubscriptionClient(credential, **kw),
            keyvault=KeyVaultManagementClient(credential, sub, **kw),
            msi=ManagedServiceIdentityClient(credential, sub, **kw),
            authorization=AuthorizationManagementClient(credential, sub, **kw),
            storage=StorageManagementClient(credential, sub, **kw),
        )
        if cred is None:
            self._admin_clients[sub] = clients
        return clients

    def clients_for(self, principal: Principal, subscription_id: Optional[str] = None) -> MgmtClients:
        return self.mgmt_clients(self.credential_for(principal), subscription_id)

    def token(self, cred: Any = None, scope: str = ARM_SCOPE) -> str:
        return (cred or self.credential()).get_token(scope).token

    # ---- raw HTTP

    def http(self, proxy: bool = False) -> requests.Session:
        """A requests session trusting the Coffer CA, ignoring proxy env vars (or using Coffer's proxy)."""
        session = requests.Session()
        session.trust_env = False
        session.verify = self.ca
        if proxy:
            session.proxies = {"https": self.proxy, "http": self.proxy}
            session.mount("https://", _NoDelayProxyAdapter())
        return session

    def arm(self, method: str, path: str, *, token: Any = _ADMIN, headers: Optional[dict] = None,
            **kwargs: Any) -> requests.Response:
        """A raw management request; `token` is the admin's by default, None for no Authorization."""
        headers = dict(headers or {})
        if token is _ADMIN:
            token = self.token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        with self.http() as s:
            return s.request(method, self.management + path, headers=headers, timeout=HTTP_TIMEOUT_S, **kwargs)

    def oidc(self) -> dict:
        if self._oidc is None:
            with self.http() as s:
                r = s.get(f"{self.authority}/{self.tenant_id}/v2.0/.well-known/openid-configuration",
                          timeout=HTTP_TIMEOUT_S)
            r.raise_for_status()
            self._oidc = r.json()
        return self._oidc

    def token_request(self, data: Any, **kwargs: Any) -> requests.Response:
        """POST to the token endpoint named by OIDC discovery (form-encoded when `data` is a dict)."""
        with self.http() as s:
            return s.post(self.oidc()["token_endpoint"], data=data, timeout=HTTP_TIMEOUT_S, **kwargs)

    def raw_token(self, client_id: Optional[str] = None, secret: Optional[str] = None, scope: str = ARM_SCOPE) -> str:
        """A fresh token from the token endpoint, bypassing every client-side cache."""
        r = self.token_request({
            "client_id": client_id or self.admin["client_id"],
            "client_secret": secret or self.admin["client_secret"],
            "grant_type": "client_credentials",
            "scope": scope,
        })
        assert r.status_code == 200, f"token request failed: {r.status_code} {r.text[:500]}"
        return r.json()["access_token"]

    # ---- Coffer admin endpoints

    def new_sp(self, name: Optional[str] = None, token: Any = _ADMIN) -> Principal:
        """A fresh service principal with no role assignments."""
        r = self.arm("POST", "/coffer/admin/servicePrincipals", token=token,
                     json={"displayName": name or unique("sp-")})
        assert r.status_code == 201, f"creating a service principal: {r.status_code} {r.text[:500]}"
        body = r.json()
        return Principal(body["client_id"], body["client_secret"], body["object_id"], body["tenant_id"])

    def advance_clock(self, seconds: int) -> int:
        """Move the test clock (the server runs due background work before answering). Tokens cached
        before the jump may now be expired on the server, so a fresh admin token is used and the cached
        admin credential and clients are dropped."""
        r = self.arm("POST", "/coffer/admin/clock", token=self.raw_token(), json={"advanceSeconds": seconds})
        assert r.status_code == 200, f"advancing the clock: {r.status_code} {r.text[:500]}"
        self._reset_caches()
        return r.json()["now"]

    # ---- resources through the SDK (admin by default)

    def create_rg(self, clients: Optional[MgmtClients] = None, name: Optional[str] = None,
                  location: str = "eastus") -> str:
        name = name or unique("rg-")
        (clients or self.mgmt_clients()).resource.resource_groups.create_or_update(name, {"location": location})
        return name

    def create_vault(self, rg: str, name: Optional[str] = None, clients: Optional[MgmtClients] = None,
                     **params: Any) -> kvm.Vault:
        name = name or unique("kv", 16)
        params.setdefault("location", "eastus")
        poller = (clients or self.mgmt_clients()).keyvault.vaults.begin_create_or_update(
            rg, name, vault_params(self.tenant_id, **params))
        return poller.result()

    def create_identity(self, rg: str, name: Optional[str] = None, clients: Optional[MgmtClients] = None):
        name = name or unique("id-")
        return (clients or self.mgmt_clients()).msi.user_assigned_identities.create_or_update(
            rg, name, {"location": "eastus"})

    def assign_role(self, scope: str, role: str, principal_id: str, clients: Optional[MgmtClients] = None):
        return (clients or self.mgmt_clients()).authorization.role_assignments.create(
            scope, str(uuid.uuid4()),
            {"role_definition_id": self.role_definition_id(role), "principal_id": principal_id,
             "principal_type": "ServicePrincipal"},
        )

    # ---- Key Vault data plane (vault hosts have no DNS: every client goes through the CONNECT proxy)

    def _vault_kwargs(self) -> dict:
        return dict(self._sdk_kwargs(), proxies={"https": self.proxy})

    def key_client(self, vault_url: str, cred: Any = None) -> KeyClient:
        """A KeyClient on `vault_url` (the default verify_challenge_resource=True stays on)."""
        return KeyClient(vault_url, cred if cred is not None else self.credential(), **self._vault_kwargs())

    def crypto_client(self, key: "KeyVaultKey | str", cred: Any = None, *, remote_only: bool = False
                      ) -> CryptographyClient:
        """A CryptographyClient for a key (or key id). The SDK does public-key operations (encrypt,
        wrap, verify) locally once it has fetched the key, and for an oct key it even makes up a random
        local key (the service never returns `k`). `remote_only=True` makes every operation a service
        call: it marks the client initialized before it can fetch the key (pinned SDK internals)."""
        client = CryptographyClient(key, cred if cred is not None else self.credential(), **self._vault_kwargs())
        if remote_only:
            client._key = None
            client._initialized = True
            client._not_before = client._expires_on = None
        return client

    def vault_request(self, method: str, url: str, *, token: Optional[str] = None,
                      session: Optional[requests.Session] = None, **kwargs: Any) -> requests.Response:
        """A raw request to a vault host through the proxy; `token` None sends no Authorization.
        Pass a `session` from http(proxy=True) to reuse its tunnel."""
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if session is not None:
            return session.request(method, url, headers=headers, timeout=HTTP_TIMEOUT_S, **kwargs)
        with self.http(proxy=True) as s:
            return s.request(method, url, headers=headers, timeout=HTTP_TIMEOUT_S, **kwargs)

    def data_vault(self, rg: Optional[str] = None, *, role: str = "Key Vault Administrator",
                   purge_protection: bool = False, retention_days: int = 7, **params: Any) -> "DataVault":
        """A fresh vault plus a fresh principal holding `role` on it (the admin, an Owner, has no
        data actions), and a KeyClient for that principal."""
        rg = rg or self.create_rg()
        vault = self.create_vault(rg, purge_protection=purge_protection, retention_days=retention_days, **params)
        principal = self.new_sp(unique("kv-user-"))
        if role:
            self.assign_role(vault.id, role, principal.object_id)
        return DataVault(self, rg, vault, principal)


class DataVault:
    """A vault, a principal with a data role on it, and that principal's KeyClient."""

    def __init__(self, coffer: Coffer, rg: str, vault: kvm.Vault, principal: Principal):
        self.coffer = coffer
        self.rg = rg
        self.principal = principal
        self._bind(vault)

    def _bind(self, vault: kvm.Vault) -> None:
        self.vault = vault
        self.name: str = vault.name
        self.url: str = vault.properties.vault_uri  # https://{name}.vault.coffer.internal:{port}/
        self.cred = self.coffer.credential_for(self.principal)
        self.keys = self.coffer.key_client(self.url, self.cred)
        self.session = self.coffer.http(proxy=True)  # raw requests reuse one tunnel

    def reconnect(self) -> "DataVault":
        """New credential and clients, after a restart (new port) or a clock jump (stale tokens)."""
        self._bind(self.coffer.mgmt_clients().keyvault.vaults.get(self.rg, self.name))
        return self

    def principal_with(self, role: Optional[str]) -> Principal:
        """A new principal holding `role` (None: no role at all) on this vault."""
        principal = self.coffer.new_sp(unique("kv-other-"))
        if role:
            self.coffer.assign_role(self.vault.id, role, principal.object_id)
        return principal

    def client_for(self, principal: Principal) -> KeyClient:
        return self.coffer.key_client(self.url, self.coffer.credential_for(principal))

    def crypto(self, key: "KeyVaultKey | str", principal: Optional[Principal] = None, *,
               remote_only: bool = False) -> CryptographyClient:
        cred = self.cred if principal is None else self.coffer.credential_for(principal)
        return self.coffer.crypto_client(key, cred, remote_only=remote_only)

    def token(self, principal: Optional[Principal] = None) -> str:
        cred = self.cred if principal is None else self.coffer.credential_for(principal)
        return self.coffer.token(cred, scope=self.coffer.vault_scope)

    def url_for(self, path_or_url: str, api_version: Optional[str] = API_KEYVAULT_DATA) -> str:
        url = path_or_url if path_or_url.startswith("https://") else self.url.rstrip("/") + path_or_url
        if api_version:
            url += ("&" if "?" in url else "?") + f"api-version={api_version}"
        return url

    def raw(self, method: str, path_or_url: str, *, token: Any = _PRINCIPAL,
            api_version: Optional[str] = API_KEYVAULT_DATA, **kwargs: Any) -> requests.Response:
        """A raw data-plane request as this vault's principal (`token=None`: no Authorization).
        `path_or_url` is a path like "/keys/k1/create" or a full kid-based URL."""
        if token is _PRINCIPAL:
            token = self.token()
        return self.coffer.vault_request(method, self.url_for(path_or_url, api_version), token=token,
                                         session=self.session, **kwargs)

    def op(self, kid: str, operation: str, **body: Any) -> dict:
        """POST {kid}/{operation} (encrypt, decrypt, wrapkey, unwrapkey, sign, verify) on the service;
        bytes values are sent base64url. Returns the JSON body of a 200."""
        wire = {k: b64url_encode(v) if isinstance(v, bytes) else v for k, v in body.items()}
        r = self.raw("POST", f"{kid}/{operation}", json=wire)
        assert r.status_code == 200, f"{operation}: {r.status_code} {r.text[:500]}"
        return r.json()


# --------------------------------------------------------------------------- JWKs and local crypto cross-checks

# Key Vault curve name -> (cryptography curve, coordinate bytes, signature algorithm, its hash)
EC_CURVES = {
    "P-256": (ec.SECP256R1, 32, "ES256", hashes.SHA256),
    "P-256K": (ec.SECP256K1, 32, "ES256K", hashes.SHA256),
    "P-384": (ec.SECP384R1, 48, "ES384", hashes.SHA384),
    "P-521": (ec.SECP521R1, 66, "ES512", hashes.SHA512),
}
SIGNATURE_HASHES = {
    "RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512,
    "PS256": hashes.SHA256, "PS384": hashes.SHA384, "PS512": hashes.SHA512,
    "ES256": hashes.SHA256, "ES256K": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512,
}


def int_bytes(value: int, length: Optional[int] = None) -> bytes:
    """Big-endian unsigned bytes (minimal length unless `length`), as JWKs carry them."""
    return value.to_bytes(length or max(1, (value.bit_length() + 7) // 8), "big")


def digest(alg: str, data: bytes) -> bytes:
    h = hashes.Hash(SIGNATURE_HASHES[alg]())
    h.update(data)
    return h.finalize()


def rsa_jwk(key: rsa.RSAPrivateKey, **fields: Any) -> JsonWebKey:
    """The full private JWK of a `cryptography` RSA key (for import_key)."""
    priv = key.private_numbers()
    pub = priv.public_numbers
    return JsonWebKey(kty=fields.pop("kty", "RSA"), n=int_bytes(pub.n), e=int_bytes(pub.e), d=int_bytes(priv.d),
                      p=int_bytes(priv.p), q=int_bytes(priv.q), dp=int_bytes(priv.dmp1), dq=int_bytes(priv.dmq1),
                      qi=int_bytes(priv.iqmp), **fields)


def ec_jwk(key: ec.EllipticCurvePrivateKey, crv: str, **fields: Any) -> JsonWebKey:
    size = EC_CURVES[crv][1]
    priv = key.private_numbers()
    return JsonWebKey(kty=fields.pop("kty", "EC"), crv=crv, x=int_bytes(priv.public_numbers.x, size),
                      y=int_bytes(priv.public_numbers.y, size), d=int_bytes(priv.private_value, size), **fields)


def public_key(jwk: Any):
    """A `cryptography` public key from a returned JWK (RSA or EC); EC points are checked to be on the curve."""
    kty = str(getattr(jwk.kty, "value", jwk.kty))
    if kty.startswith("RSA"):
        return rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")).public_key()
    crv = str(getattr(jwk.crv, "value", jwk.crv))
    return ec.EllipticCurvePublicNumbers(int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"),
                                         EC_CURVES[crv][0]()).public_key()


def oaep(alg: str) -> padding.AsymmetricPadding:
    if alg == "RSA1_5":
        return padding.PKCS1v15()
    algorithm = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
    return padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)


def verify_locally(jwk: Any, alg: str, digest_bytes: bytes, signature: bytes) -> None:
    """Raise InvalidSignature unless `signature` (Key Vault's format: raw r||s for EC) verifies with `jwk`."""
    key = public_key(jwk)
    h = SIGNATURE_HASHES[alg]()
    if alg.startswith("RS"):
        key.verify(signature, digest_bytes, padding.PKCS1v15(), Prehashed(h))
    elif alg.startswith("PS"):
        key.verify(signature, digest_bytes, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), Prehashed(h))
    else:
        half = len(signature) // 2
        der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
        key.verify(der, digest_bytes, ec.ECDSA(Prehashed(h)))


def sign_locally(private: Any, alg: str, digest_bytes: bytes, crv: Optional[str] = None) -> bytes:
    """A signature in Key Vault's format (raw r||s for EC) from a local private key."""
    h = SIGNATURE_HASHES[alg]()
    if alg.startswith("RS"):
        return private.sign(digest_bytes, padding.PKCS1v15(), Prehashed(h))
    if alg.startswith("PS"):
        return private.sign(digest_bytes, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), Prehashed(h))
    r, s = decode_dss_signature(private.sign(digest_bytes, ec.ECDSA(Prehashed(h))))
    size = EC_CURVES[crv][1]
    return int_bytes(r, size) + int_bytes(s, size)
