"""Independent generator of the object format v2 test vectors (infrastructure encryption,
docs/design/blob-format.md), written from the spec with the `cryptography` package, not from the
Rust code.

Run: .venv/bin/python crates/crypto/testdata/gen_object_v2.py > crates/crypto/testdata/object-v2.json
"""
import hashlib, json, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.keywrap import aes_key_wrap


def build(name, aek, aek_id, dek, prefix, infra, infra_id, outer_key, outer_prefix, log2, ident, plaintext):
    wrapped = aes_key_wrap(aek, dek)
    wrapped_outer = aes_key_wrap(infra, outer_key)
    header = (b"CFO1" + bytes([2, 1, log2, 0]) + struct.pack(">Q", len(plaintext)) + prefix
              + bytes([len(aek_id)]) + aek_id.encode() + bytes([len(wrapped)]) + wrapped
              + bytes([2]) + outer_prefix + bytes([len(infra_id)]) + infra_id.encode()
              + bytes([len(wrapped_outer)]) + wrapped_outer)
    account, container, blob, object_id = ident
    idstr = f"{account}/{container}/{blob}/{object_id}".encode()
    ident_enc = struct.pack(">H", len(idstr)) + idstr
    digest = hashlib.sha256(header).digest()
    aad = b"coffer-object-v1" + digest + ident_enc
    outer_aad = b"coffer-object-v2-outer" + digest + ident_enc
    size = 1 << log2
    n = max(1, -(-len(plaintext) // size))
    out = bytearray(header)
    for i in range(n):
        seg = plaintext[i * size:(i + 1) * size]
        last = bytes([1 if i == n - 1 else 0])
        inner = AESGCM(dek).encrypt(prefix + struct.pack(">I", i) + last, seg, aad)
        out += ChaCha20Poly1305(outer_key).encrypt(outer_prefix + struct.pack(">I", i) + last, inner, outer_aad)
    return {"name": name, "aek": aek.hex(), "aek_id": aek_id, "dek": dek.hex(), "nonce_prefix": prefix.hex(),
            "infra_key": infra.hex(), "infra_key_id": infra_id, "outer_key": outer_key.hex(),
            "outer_nonce_prefix": outer_prefix.hex(), "segment_log2": log2, "account": account,
            "container": container, "blob": blob, "object_id": object_id, "plaintext": plaintext.hex(),
            "object": bytes(out).hex()}


aek = bytes(range(32))
dek = bytes(range(100, 132))
prefix = bytes.fromhex("0a0b0c0d0e0f10")
infra = bytes(range(200, 232))
outer_key = bytes(range(50, 82))
outer_prefix = bytes.fromhex("a1a2a3a4a5a6a7")
iid = "platform/infrastructure/1"
vectors = [
    build("empty", aek, "acct/aek/1", dek, prefix, infra, iid, outer_key, outer_prefix, 12,
          ("acct", "c", "empty.bin", "o1"), b""),
    build("short", aek, "acct/scope/s1/aek/1", dek, prefix, infra, iid, outer_key, outer_prefix, 12,
          ("acct", "c", "dir/f one.txt", "o2"), b"hello, coffer"),
    build("three-segments", aek, "acct/aek/2", dek, prefix, infra, iid, outer_key, outer_prefix, 12,
          ("acct", "data", "big", "o3"), bytes((i * 31) % 251 for i in range(2 * 4096 + 5))),
]
print(json.dumps({"format": "coffer object v2", "spec": "docs/design/blob-format.md", "vectors": vectors}, indent=1))
