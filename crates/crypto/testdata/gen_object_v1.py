"""Independent generator of the object format v1 test vectors (docs/design/blob-format.md),
written from the spec with the `cryptography` package, not from the Rust code.

Run: .venv/bin/python crates/crypto/testdata/gen_object_v1.py > crates/crypto/testdata/object-v1.json
"""
import hashlib, json, struct
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap


def build(name, aek, aek_id, dek, prefix, log2, ident, plaintext):
    wrapped = aes_key_wrap(aek, dek)
    header = (b"CFO1" + bytes([1, 1, log2, 0]) + struct.pack(">Q", len(plaintext)) + prefix
              + bytes([len(aek_id)]) + aek_id.encode() + bytes([len(wrapped)]) + wrapped)
    account, container, blob, object_id = ident
    idstr = f"{account}/{container}/{blob}/{object_id}".encode()
    aad = b"coffer-object-v1" + hashlib.sha256(header).digest() + struct.pack(">H", len(idstr)) + idstr
    size = 1 << log2
    n = max(1, -(-len(plaintext) // size))
    out = bytearray(header)
    for i in range(n):
        seg = plaintext[i * size:(i + 1) * size]
        nonce = prefix + struct.pack(">I", i) + bytes([1 if i == n - 1 else 0])
        out += AESGCM(dek).encrypt(nonce, seg, aad)
    return {"name": name, "aek": aek.hex(), "aek_id": aek_id, "dek": dek.hex(), "nonce_prefix": prefix.hex(),
            "segment_log2": log2, "account": account, "container": container, "blob": blob,
            "object_id": object_id, "plaintext": plaintext.hex(), "object": bytes(out).hex()}


aek = bytes(range(32))
dek = bytes(range(100, 132))
prefix = bytes.fromhex("0a0b0c0d0e0f10")
vectors = [
    build("empty", aek, "acct/aek/1", dek, prefix, 12, ("acct", "c", "empty.bin", "o1"), b""),
    build("short", aek, "acct/aek/1", dek, prefix, 12, ("acct", "c", "dir/f one.txt", "o2"), b"hello, coffer"),
    build("three-segments", aek, "acct/aek/2", dek, prefix, 12, ("acct", "data", "big", "o3"),
          bytes((i * 31) % 251 for i in range(2 * 4096 + 5))),
    build("exact-segment", aek, "acct/aek/2", dek, prefix, 12, ("acct", "data", "ünïcode+%", "o4"),
          bytes(4096)),
]
print(json.dumps({"format": "coffer object v1", "spec": "docs/design/blob-format.md", "vectors": vectors}, indent=1))
