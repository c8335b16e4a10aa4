"""Checks of the test harness itself: they need no Coffer server."""

from __future__ import annotations

import json
import shutil

import pytest
from azure.mgmt.keyvault._utils.model_base import SdkJSONEncoder
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import (
    Coffer, CofferStartError, b64url_encode, decode_jwt, live_servers, sign_rs256, verify_rs256, vault_params,
)


def _jwk(key: rsa.RSAPrivateKey) -> dict:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "n": b64url_encode(numbers.n.to_bytes(256, "big")), "e": b64url_encode(b"\x01\x00\x01")}


def test_rs256_helpers_round_trip():
    key, other = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    token = sign_rs256({"alg": "RS256", "kid": "k1"}, {"aud": "x", "n": 1}, key)
    assert decode_jwt(token) == ({"alg": "RS256", "kid": "k1"}, {"aud": "x", "n": 1})
    verify_rs256(token, _jwk(key))
    with pytest.raises(InvalidSignature):
        verify_rs256(token, _jwk(other))


def test_vault_params_reach_the_wire_in_camel_case():
    wire = json.loads(json.dumps(vault_params("t", retention_days=9, create_mode="recover", tags={"a": "b"}),
                                 cls=SdkJSONEncoder, exclude_readonly=True))
    assert wire == {
        "location": "eastus",
        "tags": {"a": "b"},
        "properties": {
            "tenantId": "t", "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": True,
            "enableSoftDelete": True, "softDeleteRetentionInDays": 9, "enablePurgeProtection": True,
            "createMode": "recover",
        },
    }
    assert "enablePurgeProtection" not in json.loads(
        json.dumps(vault_params("t", purge_protection=False), cls=SdkJSONEncoder))["properties"]


def test_start_reports_a_missing_binary(tmp_path, monkeypatch):
    monkeypatch.setenv("COFFER_BIN", str(tmp_path / "no-such-coffer"))
    with pytest.raises(CofferStartError, match="not found"):
        Coffer(tmp_path).start()


def test_start_reports_an_early_exit_with_its_stderr(tmp_path, monkeypatch):
    false = shutil.which("false")
    assert false
    monkeypatch.setenv("COFFER_BIN", false)
    server = Coffer(tmp_path)
    with pytest.raises(CofferStartError, match=r"exited \(1\) before COFFER_READY"):
        server.start()
    assert server not in live_servers()
    assert "===== start" in server.log_tail()
