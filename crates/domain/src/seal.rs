//! The seal: how the root key is protected at rest. The key-file seal is the development
//! default; passphrase (Argon2id), Shamir and PKCS#11 seals implement the same trait.
use coffer_crypto::aead::SealingKey;

use crate::Result;

pub trait Seal: Send + Sync {
    /// A short name for logs and status ("key-file", "passphrase", ...).
    fn kind(&self) -> &'static str;
    /// Produce the root key: unseal the existing one, or create and seal a new one.
    fn unseal_or_init(&self) -> Result<SealingKey>;
}
