"""Key Vault cryptography (CryptographyClient and raw requests), cross-checked with `cryptography`.

The SDK runs encrypt/wrap/verify locally once it holds the public key; `kv.crypto(..., remote_only=True)`
and `kv.op(...)` (raw) make the vault do them. Decrypt, unwrap and sign always run in the vault.
"""

from __future__ import annotations

import os

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import JsonWebKey, KeyOperation
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from harness import (
    EC_CURVES, b64url_decode, b64url_encode, digest, ec_jwk, error_code, oaep, public_key, rsa_jwk, sign_locally,
    unique,
    verify_locally,
)

RSA_ALGS = ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"]
AES_SIZES = {"128": 16, "192": 24, "256": 32}
CEK = bytes(range(32))


def new_rsa(size=2048):
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def import_rsa(kv, size=2048, **kwargs):
    private = new_rsa(size)
    return private, kv.keys.import_key(unique("rsa-"), rsa_jwk(private), **kwargs)


def import_oct(kv, nbytes, **kwargs):
    k = os.urandom(nbytes)
    return k, kv.keys.import_key(unique("oct-"), JsonWebKey(kty="oct-HSM", k=k), **kwargs)


def assert_status(status, fn, *args, code=None, **kwargs):
    with pytest.raises(HttpResponseError) as info:
        fn(*args, **kwargs)
    assert info.value.status_code == status, f"expected {status}, got {info.value.status_code}: {info.value}"
    if code:
        assert error_code(info.value) == code, str(info.value)
    return info.value


def raw_error(kv, kid, operation, body, status=400, code="BadParameter"):
    r = kv.raw("POST", f"{kid}/{operation}", json=body)
    assert r.status_code == status, f"{operation} {body}: {r.status_code} {r.text[:300]}"
    assert r.json()["error"]["code"] == code, r.text[:300]


# ---------------------------------------------------------------- RSA wrap / encrypt

@pytest.mark.parametrize("alg", RSA_ALGS)
def test_vault_wrap_is_unwrapped_locally(kv, alg):
    private, key = import_rsa(kv)
    result = kv.crypto(key.id, remote_only=True).wrap_key(alg, CEK)
    assert result.key_id == key.id and result.algorithm == alg
    assert len(result.encrypted_key) == 256
    assert private.decrypt(result.encrypted_key, oaep(alg)) == CEK

    raw = kv.op(key.id, "wrapkey", alg=alg, value=CEK)
    assert raw["kid"] == key.id
    assert private.decrypt(b64url_decode(raw["value"]), oaep(alg)) == CEK
    # ... and the vault takes its own output back.
    assert kv.crypto(key).unwrap_key(alg, result.encrypted_key).key == CEK


@pytest.mark.parametrize("alg", RSA_ALGS)
def test_local_wrap_is_unwrapped_by_the_vault(kv, alg):
    key = kv.keys.create_rsa_key(unique("rsa-"))
    wrapped = public_key(key.key).encrypt(CEK, oaep(alg))
    unwrapped = kv.crypto(key).unwrap_key(alg, wrapped)
    assert unwrapped.key == CEK and unwrapped.key_id == key.id
    # The SDK's own local path (public JWK only) agrees.
    local = CryptographyClient.from_jwk(key.key).wrap_key(KeyWrapAlgorithm(alg), CEK)
    assert kv.crypto(key.id).unwrap_key(alg, local.encrypted_key).key == CEK


@pytest.mark.parametrize("size", [2048, 3072, 4096])
@pytest.mark.parametrize("alg", RSA_ALGS)
def test_vault_encrypt_and_decrypt_rsa(kv, alg, size):
    private, key = import_rsa(kv, size)
    plaintext = b"attack at dawn"
    enc = kv.crypto(key.id, remote_only=True).encrypt(alg, plaintext)
    assert len(enc.ciphertext) == size // 8
    assert private.decrypt(enc.ciphertext, oaep(alg)) == plaintext
    assert kv.crypto(key.id).decrypt(alg, enc.ciphertext).plaintext == plaintext
    local = private.public_key().encrypt(plaintext, oaep(alg))
    assert kv.crypto(key.id).decrypt(alg, local).plaintext == plaintext


def test_rsa_encryption_is_randomized(kv):
    _private, key = import_rsa(kv)
    client = kv.crypto(key.id, remote_only=True)
    for alg in RSA_ALGS:
        assert client.encrypt(alg, b"same").ciphertext != client.encrypt(alg, b"same").ciphertext


def test_sdk_default_client_round_trip(kv):
    """The everyday CMK path: CryptographyClient(key id) wraps locally and unwraps in the vault."""
    key = kv.keys.create_rsa_key(unique("cmk-"), size=3072)
    client = kv.crypto(key.id)
    wrapped = client.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, CEK)
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == CEK
    enc = client.encrypt(EncryptionAlgorithm.rsa_oaep, b"hello")
    assert client.decrypt(EncryptionAlgorithm.rsa_oaep, enc.ciphertext).plaintext == b"hello"


def test_hsm_keys_do_crypto(kv):
    rsa_key = kv.keys.create_rsa_key(unique("rsahsm-"), hardware_protected=True)
    wrapped = kv.crypto(rsa_key.id, remote_only=True).wrap_key("RSA-OAEP", CEK)
    assert kv.crypto(rsa_key.id).unwrap_key("RSA-OAEP", wrapped.encrypted_key).key == CEK
    ec_key = kv.keys.create_ec_key(unique("echsm-"), curve="P-256", hardware_protected=True)
    d = digest("ES256", b"hsm")
    sig = kv.crypto(ec_key.id).sign("ES256", d).signature
    verify_locally(ec_key.key, "ES256", d, sig)


# ---------------------------------------------------------------- AES (oct keys)

@pytest.mark.parametrize("bits", list(AES_SIZES))
def test_aes_key_wrap(kv, bits):
    alg = f"A{bits}KW"
    k, key = import_oct(kv, AES_SIZES[bits])
    client = kv.crypto(key.id, remote_only=True)
    for cek in (CEK[:16], CEK):
        wrapped = client.wrap_key(alg, cek)
        assert wrapped.encrypted_key == aes_key_wrap(k, cek), "RFC 3394 is deterministic"
        assert aes_key_unwrap(k, wrapped.encrypted_key) == cek
        assert client.unwrap_key(alg, aes_key_wrap(k, cek)).key == cek


def test_aes_key_wrap_with_a_generated_key(kv):
    key = kv.keys.create_oct_key(unique("oct-"), size=256, hardware_protected=True)
    client = kv.crypto(key.id, remote_only=True)
    wrapped = client.wrap_key(KeyWrapAlgorithm.aes_256, CEK)
    assert len(wrapped.encrypted_key) == len(CEK) + 8
    assert client.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key == CEK


@pytest.mark.parametrize("aad", [b"header", None], ids=["aad", "no-aad"])
@pytest.mark.parametrize("bits", list(AES_SIZES))
def test_aes_gcm(kv, bits, aad):
    alg = f"A{bits}GCM"
    k, key = import_oct(kv, AES_SIZES[bits])
    client = kv.crypto(key.id, remote_only=True)
    plaintext = b"the vault picks the nonce"
    enc = client.encrypt(alg, plaintext, additional_authenticated_data=aad)
    assert len(enc.iv) == 12, "the service generates a 96-bit IV"
    assert len(enc.tag) == 16
    assert len(enc.ciphertext) == len(plaintext)
    assert AESGCM(k).decrypt(enc.iv, enc.ciphertext + enc.tag, aad) == plaintext
    dec = client.decrypt(alg, enc.ciphertext, iv=enc.iv, authentication_tag=enc.tag,
                         additional_authenticated_data=aad)
    assert dec.plaintext == plaintext
    assert client.encrypt(alg, plaintext, additional_authenticated_data=aad).iv != enc.iv, "a fresh IV each time"

    nonce = os.urandom(12)
    local = AESGCM(k).encrypt(nonce, plaintext, aad)
    assert client.decrypt(alg, local[:-16], iv=nonce, authentication_tag=local[-16:],
                          additional_authenticated_data=aad).plaintext == plaintext


def test_aes_gcm_rejects_tampering(kv):
    _k, key = import_oct(kv, 32)
    client = kv.crypto(key.id, remote_only=True)
    enc = client.encrypt("A256GCM", b"integrity", additional_authenticated_data=b"aad")
    bad_tag = bytes([enc.tag[0] ^ 1]) + enc.tag[1:]
    bad_ct = bytes([enc.ciphertext[0] ^ 1]) + enc.ciphertext[1:]
    cases = [(enc.ciphertext, bad_tag, b"aad"), (bad_ct, enc.tag, b"aad"),
             (enc.ciphertext, enc.tag, b"other aad"), (enc.ciphertext, enc.tag, None)]
    for ct, tag, aad in cases:
        assert_status(400, client.decrypt, "A256GCM", ct, iv=enc.iv, authentication_tag=tag,
                      additional_authenticated_data=aad)


@pytest.mark.parametrize("bits", list(AES_SIZES))
def test_aes_cbc(kv, bits):
    alg = f"A{bits}CBC"
    k, key = import_oct(kv, AES_SIZES[bits])
    client = kv.crypto(key.id, remote_only=True)
    iv, plaintext = os.urandom(16), b"sixteen byte blk" * 2
    enc = client.encrypt(alg, plaintext, iv=iv)
    encryptor = Cipher(algorithms.AES(k), modes.CBC(iv)).encryptor()
    assert enc.ciphertext == encryptor.update(plaintext) + encryptor.finalize()
    assert client.decrypt(alg, enc.ciphertext, iv=iv).plaintext == plaintext
    # Without padding the plaintext must be block-aligned.
    raw_error(kv, key.id, "encrypt", {"alg": alg, "value": "AAAA", "iv": "A" * 22})


@pytest.mark.parametrize("length", [0, 1, 16, 33])
@pytest.mark.parametrize("bits", list(AES_SIZES))
def test_aes_cbc_pad(kv, bits, length):
    alg = f"A{bits}CBCPAD"
    k, key = import_oct(kv, AES_SIZES[bits])
    client = kv.crypto(key.id, remote_only=True)
    iv, plaintext = os.urandom(16), os.urandom(length)
    enc = client.encrypt(alg, plaintext, iv=iv)
    padder = sym_padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(k), modes.CBC(iv)).encryptor()
    assert enc.ciphertext == encryptor.update(padder.update(plaintext) + padder.finalize()) + encryptor.finalize()
    assert client.decrypt(alg, enc.ciphertext, iv=iv).plaintext == plaintext


# ---------------------------------------------------------------- sign / verify

@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
def test_rsa_signatures(kv, alg):
    private, key = import_rsa(kv)
    d = digest(alg, b"a message")
    signed = kv.crypto(key.id).sign(alg, d)
    assert signed.key_id == key.id and signed.algorithm == alg
    assert len(signed.signature) == 256
    verify_locally(key.key, alg, d, signed.signature)
    if alg.startswith("RS"):
        assert signed.signature == sign_locally(private, alg, d), "PKCS#1 v1.5 signatures are deterministic"

    vault = kv.crypto(key.id, remote_only=True)
    assert vault.verify(alg, d, signed.signature).is_valid is True
    assert vault.verify(alg, d, sign_locally(private, alg, d)).is_valid is True
    assert vault.verify(alg, digest(alg, b"another message"), signed.signature).is_valid is False
    assert kv.crypto(key.id).verify(alg, d, signed.signature).is_valid is True  # the SDK's local path


@pytest.mark.parametrize("curve", list(EC_CURVES))
def test_ec_signatures(kv, curve):
    _cls, size, alg, _hash = EC_CURVES[curve]
    private = ec.generate_private_key(EC_CURVES[curve][0]())
    key = kv.keys.import_key(unique("ec-"), ec_jwk(private, curve))
    d = digest(alg, b"a message")
    signed = kv.crypto(key.id).sign(alg, d)
    assert len(signed.signature) == 2 * size, "raw r||s, each padded to the coordinate size"
    verify_locally(key.key, alg, d, signed.signature)

    vault = kv.crypto(key.id, remote_only=True)
    assert vault.verify(alg, d, signed.signature).is_valid is True
    assert vault.verify(alg, d, sign_locally(private, alg, d, curve)).is_valid is True
    tampered = signed.signature[:-1] + bytes([signed.signature[-1] ^ 1])
    assert vault.verify(alg, d, tampered).is_valid is False
    with pytest.raises(InvalidSignature):
        verify_locally(key.key, alg, d, tampered)


@pytest.mark.parametrize("curve", list(EC_CURVES))
def test_ec_signatures_with_a_generated_key(kv, curve):
    alg = EC_CURVES[curve][2]
    key = kv.keys.create_ec_key(unique("ec-"), curve=curve)
    d = digest(alg, b"generated")
    sig = kv.op(key.id, "sign", alg=alg, value=d)
    assert sig["kid"] == key.id
    verify_locally(key.key, alg, d, b64url_decode(sig["value"]))
    assert kv.op(key.id, "verify", alg=alg, digest=d, value=b64url_decode(sig["value"])) == {"value": True}


# ---------------------------------------------------------------- versions

def test_unversioned_key_id_uses_the_latest_version(kv):
    name = unique("latest-")
    kv.keys.create_rsa_key(name)
    latest = kv.keys.create_rsa_key(name)
    r = kv.raw("POST", f"{kv.url}keys/{name}//wrapkey", json={"alg": "RSA-OAEP", "value": "AAECAw"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["kid"] == latest.id
    wrapped = public_key(latest.key).encrypt(CEK, oaep("RSA-OAEP"))
    assert kv.crypto(f"{kv.url}keys/{name}").unwrap_key("RSA-OAEP", wrapped).key == CEK


def test_old_versions_keep_working(kv):
    name = unique("old-")
    first = kv.keys.create_rsa_key(name)
    second = kv.keys.rotate_key(name)
    wrapped = public_key(first.key).encrypt(CEK, oaep("RSA-OAEP-256"))
    assert kv.crypto(first.id).unwrap_key("RSA-OAEP-256", wrapped).key == CEK
    assert_status(400, kv.crypto(second.id).unwrap_key, "RSA-OAEP-256", wrapped)


# ---------------------------------------------------------------- key_ops, wrong algorithms, bad input

def test_key_ops_restrict_operations(kv):
    key = kv.keys.create_rsa_key(unique("signonly-"), key_operations=[KeyOperation.sign, KeyOperation.verify])
    wrapped = public_key(key.key).encrypt(CEK, oaep("RSA-OAEP"))
    for operation, body in (("encrypt", {"alg": "RSA-OAEP", "value": "AAAA"}),
                            ("decrypt", {"alg": "RSA-OAEP", "value": wrapped}),
                            ("wrapkey", {"alg": "RSA-OAEP", "value": "AAAA"}),
                            ("unwrapkey", {"alg": "RSA-OAEP", "value": wrapped})):
        body = {k: v if isinstance(v, str) else b64url_encode(v) for k, v in body.items()}
        raw_error(kv, key.id, operation, body, status=403, code="Forbidden")
    assert_status(403, kv.crypto(key.id).unwrap_key, "RSA-OAEP", wrapped, code="Forbidden")
    d = digest("RS256", b"ok")
    verify_locally(key.key, "RS256", d, kv.crypto(key.id).sign("RS256", d).signature)

    kv.keys.update_key_properties(key.name, key_operations=["sign", "verify", "unwrapKey"])
    assert kv.crypto(key.id).unwrap_key("RSA-OAEP", wrapped).key == CEK


def test_wrap_only_key_cannot_sign(kv):
    key = kv.keys.create_rsa_key(unique("wraponly-"), key_operations=["wrapKey", "unwrapKey"])
    assert_status(403, kv.crypto(key.id).sign, "RS256", digest("RS256", b"x"), code="Forbidden")
    raw_error(kv, key.id, "encrypt", {"alg": "RSA-OAEP", "value": "AAAA"}, status=403, code="Forbidden")


D32, D48, D20 = "A" * 43, "A" * 64, "A" * 27  # base64url of 32, 48 and 20 zero bytes


INVALID_CRYPTO = [
    ("rsa", "encrypt", {"alg": "A256GCM", "value": "AAAA"}),
    ("rsa", "wrapkey", {"alg": "A256KW", "value": D32}),
    ("rsa", "sign", {"alg": "ES256", "value": D32}),
    ("rsa", "encrypt", {"alg": "RSA-FOO", "value": "AAAA"}),
    ("rsa", "encrypt", {"alg": "RSA-OAEP", "value": "not base64url!"}),
    ("rsa", "encrypt", {"alg": "RSA-OAEP"}),
    ("rsa", "encrypt", {"value": "AAAA"}),
    ("rsa", "encrypt", {"alg": "RSA-OAEP", "value": "A" * 400}),  # longer than OAEP can carry
    ("rsa", "sign", {"alg": "RS256", "value": D20}),            # digest length does not match SHA-256
    ("rsa", "sign", {"alg": "PS512", "value": D32}),
    ("rsa", "verify", {"alg": "RS256", "digest": "!!", "value": "AAAA"}),
    ("ec", "sign", {"alg": "ES384", "value": D48}),             # P-256 key, P-384 algorithm
    ("ec", "sign", {"alg": "RS256", "value": D32}),
    ("ec", "sign", {"alg": "ES256", "value": D48}),
    ("oct", "wrapkey", {"alg": "A256KW", "value": D32}),          # 128-bit key, 256-bit algorithm
    ("oct", "encrypt", {"alg": "A256GCM", "value": "AAAA"}),
    ("oct", "wrapkey", {"alg": "RSA-OAEP", "value": D32}),
    ("oct", "wrapkey", {"alg": "A128KW", "value": "AAAA"}),       # KW input must be a multiple of 8 bytes
    ("oct", "encrypt", {"alg": "A128CBCPAD", "value": D32, "iv": "AAAAAAAAAAA"}),  # 8-byte iv
    ("oct", "decrypt", {"alg": "A128GCM", "value": D32}),          # GCM decrypt without iv and tag
]


@pytest.mark.parametrize("kind, operation, body", INVALID_CRYPTO,
                         ids=[f"{kind}-{op}-{body.get('alg', 'no-alg')}-{i}" for i, (kind, op, body)
                              in enumerate(INVALID_CRYPTO)])
def test_invalid_crypto_request_is_400(kv, kind, operation, body):
    if kind == "rsa":
        key = kv.keys.create_rsa_key(unique("bad-"))
    elif kind == "ec":
        key = kv.keys.create_ec_key(unique("bad-"), curve="P-256")
    else:
        key = kv.keys.create_oct_key(unique("bad-"), size=128, hardware_protected=True)
    raw_error(kv, key.id, operation, body)


@pytest.mark.parametrize("kind, operation, body", [
    ("ec", "encrypt", {"alg": "RSA-OAEP", "value": "AAAA"}),
    ("ec", "wrapkey", {"alg": "A256KW", "value": D32}),
    ("oct", "sign", {"alg": "RS256", "value": D32}),
], ids=["ec-encrypt", "ec-wrapkey", "oct-sign"])
def test_operation_the_key_type_cannot_do_is_refused(kv, kind, operation, body):
    """The operation is outside the key's default key_ops *and* the algorithm does not fit the key:
    Azure may report either (403 Forbidden or 400 BadParameter); never a success, never a 5xx."""
    key = (kv.keys.create_ec_key(unique("kind-")) if kind == "ec"
           else kv.keys.create_oct_key(unique("kind-"), size=256, hardware_protected=True))
    r = kv.raw("POST", f"{key.id}/{operation}", json=body)
    assert (r.status_code, r.json()["error"]["code"]) in {(400, "BadParameter"), (403, "Forbidden")}, r.text[:300]


def test_malformed_crypto_bodies_are_400(kv):
    key = kv.keys.create_rsa_key(unique("badjson-"))
    for body in (b"{", b"[]", b"null", b'{"alg": 5, "value": "AAAA"}', b'{"alg": "RSA-OAEP", "value": 5}'):
        r = kv.raw("POST", f"{key.id}/encrypt", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, f"{body!r}: {r.status_code} {r.text[:300]}"
        assert r.json()["error"]["code"] == "BadParameter"


def test_decrypting_garbage_is_400(kv):
    rsa_key = kv.keys.create_rsa_key(unique("garbage-"))
    assert_status(400, kv.crypto(rsa_key.id).decrypt, "RSA-OAEP", os.urandom(256))
    assert_status(400, kv.crypto(rsa_key.id).unwrap_key, "RSA-OAEP-256", os.urandom(256))
    assert_status(400, kv.crypto(rsa_key.id).decrypt, "RSA-OAEP", os.urandom(255))  # wrong length
    oct_key = kv.keys.create_oct_key(unique("garbage-"), size=256, hardware_protected=True)
    assert_status(400, kv.crypto(oct_key.id, remote_only=True).unwrap_key, "A256KW", os.urandom(40))
    assert_status(400, kv.crypto(oct_key.id, remote_only=True).decrypt, "A256CBCPAD", os.urandom(32),
                  iv=os.urandom(16))


def test_crypto_on_unknown_key_or_version_is_404(kv):
    with pytest.raises(ResourceNotFoundError) as info:
        kv.crypto(f"{kv.url}keys/{unique('nokey-')}/{'0' * 32}", remote_only=True).unwrap_key("RSA-OAEP", b"x" * 256)
    assert error_code(info.value) == "KeyNotFound"
    key = kv.keys.create_rsa_key(unique("known-"))
    with pytest.raises(ResourceNotFoundError) as info:
        kv.crypto(f"{kv.url}keys/{key.name}/{'0' * 32}", remote_only=True).sign("RS256", digest("RS256", b"x"))
    assert error_code(info.value) == "KeyNotFound"


def test_outputs_keep_their_leading_zeros(kv):
    """r||s halves and RSA outputs are fixed-length even when their big-endian value starts with a zero
    byte (about 1 output in 128 for ES256, 1 in 256 for RSA): 500 rounds make that case near certain."""
    ec_key = kv.keys.create_ec_key(unique("pad-ec-"), curve="P-256")
    rsa_key = kv.keys.create_rsa_key(unique("pad-rsa-"))
    d = digest("ES256", b"padding")
    for i in range(500):
        sig = b64url_decode(kv.op(ec_key.id, "sign", alg="ES256", value=d)["value"])
        assert len(sig) == 64, f"signature {i} is {len(sig)} bytes"
        verify_locally(ec_key.key, "ES256", d, sig)
        rsa_sig = b64url_decode(kv.op(rsa_key.id, "sign", alg="PS256", value=d)["value"])
        assert len(rsa_sig) == 256, f"RSA signature {i} is {len(rsa_sig)} bytes"
        wrapped = b64url_decode(kv.op(rsa_key.id, "wrapkey", alg="RSA-OAEP", value=CEK)["value"])
        assert len(wrapped) == 256, f"RSA ciphertext {i} is {len(wrapped)} bytes"
