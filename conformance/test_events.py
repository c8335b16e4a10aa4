"""Event subscriptions and CloudEvents webhooks: a local HTTPS receiver gets KeyNewVersionCreated,
KeyNearExpiry and KeyExpired (time shifted with the test clock), a CMK status change when the key
is disabled; a failing receiver gets retries, then the event is dead-lettered.

Every delivery is signed as Standard Webhooks do: `webhook-signature: v1,<base64 HMAC-SHA256 of
"{webhook-id}.{webhook-timestamp}.{body}">` with the secret shown once at subscription creation.
Waiting for a delivery is a bounded wait on the receiver's queue, never a sleep.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.server
import json
import queue
import ssl
import threading

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.storage import models as sm
from azure.storage.blob import BlobServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import Coffer, forget, unique
from test_cmk import ENCRYPTION_USER, cmk, create_account, protected_vault, update

API = "2025-02-15"
WAIT_S = 15
NOTHING_S = 2  # how long "nothing more arrives" is watched for


def make_tls(tmp_path):
    """A CA and a certificate for 127.0.0.1 signed by it (PEM paths)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=400))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=400))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": tmp_path / "hook-ca.pem", "cert": tmp_path / "hook.pem", "key": tmp_path / "hook.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


class Receiver:
    """An HTTPS webhook receiver on 127.0.0.1:0. `status` is what it answers."""

    def __init__(self, tls, status: int = 200):
        self.status = status
        self.got: "queue.Queue[dict]" = queue.Queue()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.got.put({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls["cert"], tls["key"])
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/hook?code=s3cr3t"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, event_type: str, timeout: float = WAIT_S) -> dict:
        """The next delivery of `event_type` (others are skipped), within `timeout` seconds."""
        while True:
            d = self.got.get(timeout=timeout)
            ev = json.loads(d["body"])
            if ev["type"] == event_type:
                d["event"] = ev
                return d

    def close(self):
        self.server.shutdown()


def verify_signature(delivery: dict, secret: str) -> None:
    h = delivery["headers"]
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + delivery["body"]
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == f"v1,{want}"
    assert h["content-type"].startswith("application/cloudevents+json")


class WithWebhooks(Coffer):
    def __init__(self, base_dir, ca, **kwargs):
        super().__init__(base_dir, **kwargs)
        self.hook_ca = ca

    def command(self) -> list[str]:
        return super().command() + ["--webhook-ca-file", str(self.hook_ca), "--webhook-retry-seconds", "10"]


@pytest.fixture
def env(tmp_path):
    tls = make_tls(tmp_path)
    server = WithWebhooks(tmp_path / "coffer", tls["ca"], test_clock=True).start()
    receivers: list[Receiver] = []

    def receiver(status: int = 200) -> Receiver:
        r = Receiver(tls, status)
        receivers.append(r)
        return r

    yield server, receiver
    for r in receivers:
        r.close()
    server.stop()
    forget(server)


def subscribe(coffer, scope: str, url: str, types: list[str] | None = None, attempts: int = 30) -> dict:
    body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": url}},
                           "eventDeliverySchema": "CloudEventSchemaV1_0",
                           "retryPolicy": {"maxDeliveryAttempts": attempts, "eventTimeToLiveInMinutes": 1440}}}
    if types:
        body["properties"]["filter"] = {"includedEventTypes": types}
    name = unique("sub-")
    r = coffer.arm("PUT", f"{scope}/providers/Microsoft.EventGrid/eventSubscriptions/{name}?api-version={API}", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["properties"]["signingSecret"].startswith("whsec_")
    # The endpoint URL (it may carry a token) is never shown again, nor the secret.
    got = coffer.arm("GET", f"{out['id']}?api-version={API}").json()
    assert got["properties"]["destination"]["properties"] == {"endpointBaseUrl": url.split("?")[0]}
    assert "signingSecret" not in got["properties"] and "s3cr3t" not in json.dumps(got)
    return out


def test_key_events_cmk_status_change_and_expiry(env):
    coffer, receiver = env
    hook = receiver()
    rg = coffer.create_rg()
    kv = protected_vault(coffer, rg)
    sub = subscribe(coffer, kv.vault.id, hook.url)
    secret = sub["properties"]["signingSecret"]

    key = kv.keys.create_rsa_key(unique("ev-"), size=2048)
    d = hook.next("Microsoft.KeyVault.KeyNewVersionCreated")
    verify_signature(d, secret)
    ev = d["event"]
    assert ev["specversion"] == "1.0" and ev["source"] == kv.vault.id and ev["subject"] == key.name
    assert ev["data"]["Id"] == key.id and ev["data"]["Version"] == key.properties.version
    assert ev["data"]["VaultName"] == kv.name and ev["data"]["ObjectType"] == "Key"
    rotated = kv.keys.rotate_key(key.name)
    assert hook.next("Microsoft.KeyVault.KeyNewVersionCreated")["event"]["data"]["Id"] == rotated.id

    # A storage account on the key: its CMK status change is an event (and an audit record).
    account = create_account(coffer, rg, identity=sm.Identity(type="SystemAssigned"))
    coffer.assign_role(kv.vault.id, ENCRYPTION_USER, account.identity.principal_id)
    update(coffer, rg, account.name, encryption=cmk(kv.url, key.name))
    acct_hook = receiver()
    subscribe(coffer, account.id, acct_hook.url, types=["Coffer.Storage.CustomerManagedKeyStatusChanged"])
    reader = coffer.new_sp(unique("reader-"))
    coffer.assign_role(account.id, "ba92f5b4-2d11-453d-a403-e96b0029c9fe", reader.object_id)
    svc = BlobServiceClient(f"{coffer.endpoints['blob']}/{account.name}", credential=coffer.credential_for(reader),
                            connection_verify=coffer.ca)
    svc.create_container("ctr").upload_blob("b", b"x")
    kv.keys.update_key_properties(key.name, enabled=False)
    with pytest.raises(HttpResponseError):
        svc.get_blob_client("ctr", "b").download_blob().readall()
    change = acct_hook.next("Coffer.Storage.CustomerManagedKeyStatusChanged")["event"]
    assert change["source"] == account.id
    assert change["data"]["oldStatus"] == "Healthy" and change["data"]["newStatus"] == "KeyDisabled"
    records = coffer.arm("GET", f"/coffer/admin/audit?resourceId={account.id}&operation=StorageAccountCmkStatusChange").json()
    assert [r["resultType"] for r in records["value"]][-1] == "KeyDisabled"
    kv.keys.update_key_properties(key.name, enabled=True)

    # Near expiry (30 days before exp) and expiry, driven by the test clock.
    expiring = kv.keys.create_rsa_key(unique("exp-"), size=2048,
                                      expires_on=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=40))
    hook.next("Microsoft.KeyVault.KeyNewVersionCreated")
    coffer.advance_clock(11 * 86400)
    near = hook.next("Microsoft.KeyVault.KeyNearExpiry")["event"]
    assert near["subject"] == expiring.name and near["data"]["Version"] == expiring.properties.version
    coffer.advance_clock(30 * 86400)
    gone = hook.next("Microsoft.KeyVault.KeyExpired")["event"]
    assert gone["subject"] == expiring.name
    # Each is sent once.
    coffer.advance_clock(86400)
    with pytest.raises(queue.Empty):
        hook.next("Microsoft.KeyVault.KeyExpired", timeout=NOTHING_S)


def test_failing_receiver_gets_retries_then_dead_letter(env):
    coffer, receiver = env
    bad = receiver(status=500)
    rg = coffer.create_rg()
    kv = coffer.data_vault(rg, role="Key Vault Crypto Officer")
    sub = subscribe(coffer, kv.vault.id, bad.url, types=["Microsoft.KeyVault.KeyNewVersionCreated"], attempts=3)
    kv.keys.create_rsa_key(unique("dl-"), size=2048)
    first = bad.next("Microsoft.KeyVault.KeyNewVersionCreated")
    coffer.advance_clock(10)  # first retry after 10 s
    second = bad.next("Microsoft.KeyVault.KeyNewVersionCreated")
    coffer.advance_clock(20)  # then 20 s
    third = bad.next("Microsoft.KeyVault.KeyNewVersionCreated")
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == third["headers"]["webhook-id"]
    coffer.advance_clock(3600)
    with pytest.raises(queue.Empty):
        bad.next("Microsoft.KeyVault.KeyNewVersionCreated", timeout=NOTHING_S)
    r = coffer.arm("GET", f"{sub['id']}/deadLetters?api-version={API}")
    assert r.status_code == 200, r.text
    dead = r.json()["value"]
    assert len(dead) == 1 and dead[0]["attempts"] == 3
    assert dead[0]["event"]["type"] == "Microsoft.KeyVault.KeyNewVersionCreated"
    assert "500" in dead[0]["lastError"]


def test_subscription_validation(coffer, rg):
    kv = coffer.data_vault(rg)
    base = f"{kv.vault.id}/providers/Microsoft.EventGrid/eventSubscriptions/s1?api-version={API}"

    def put(dest_url: str, **props):
        body = {"properties": {"destination": {"endpointType": "WebHook", "properties": {"endpointUrl": dest_url}},
                               **props}}
        return coffer.arm("PUT", base, json=body)

    assert put("http://127.0.0.1:9/hook").status_code == 400  # TLS only
    assert put("https://127.0.0.1:9/hook", filter={"includedEventTypes": ["Microsoft.Storage.BlobCreated"]}).status_code == 400
    assert put("https://127.0.0.1:9/hook", retryPolicy={"maxDeliveryAttempts": 0}).status_code == 400
    assert put("https://127.0.0.1:9/hook", eventDeliverySchema="EventGridSchema").status_code == 400
    missing = coffer.arm("PUT", f"{kv.vault.id}2/providers/Microsoft.EventGrid/eventSubscriptions/s1?api-version={API}",
                         json={"properties": {"destination": {"endpointType": "WebHook",
                                                              "properties": {"endpointUrl": "https://x.example/"}}}})
    assert missing.status_code == 404
    outsider = coffer.new_sp(unique("o-"))
    denied = coffer.arm("PUT", base, token=coffer.raw_token(outsider.client_id, outsider.client_secret),
                        json={"properties": {"destination": {"endpointType": "WebHook",
                                                             "properties": {"endpointUrl": "https://x.example/"}}}})
    assert denied.status_code == 403
    assert put("https://x.example/hook").status_code == 201
    listed = coffer.arm("GET", f"{kv.vault.id}/providers/Microsoft.EventGrid/eventSubscriptions?api-version={API}")
    assert [s["name"] for s in listed.json()["value"]] == ["s1"]
    assert coffer.arm("DELETE", base).status_code == 200
    assert coffer.arm("GET", base).status_code == 404


def test_webhook_metrics(env):
    coffer, receiver = env
    ok, bad = receiver(), receiver(status=503)
    rg = coffer.create_rg()
    kv = coffer.data_vault(rg, role="Key Vault Crypto Officer")
    subscribe(coffer, kv.vault.id, ok.url)
    subscribe(coffer, kv.vault.id, bad.url, attempts=1)
    kv.keys.create_rsa_key(unique("m-"), size=2048)
    ok.next("Microsoft.KeyVault.KeyNewVersionCreated")
    bad.next("Microsoft.KeyVault.KeyNewVersionCreated")
    text = ""
    for _ in range(50):  # the attempt's outcome is recorded just after the receiver answers
        text = coffer.arm("GET", "/metrics").text
        if 'coffer_webhook_deliveries_total{result="deadLettered"} 1' in text:
            break
    assert 'coffer_webhook_deliveries_total{result="delivered"} 1' in text
    assert 'coffer_webhook_deliveries_total{result="failed"} 1' in text
    assert 'coffer_webhook_deliveries_total{result="deadLettered"} 1' in text
