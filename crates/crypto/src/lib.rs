//! Cryptographic building blocks for Coffer. No I/O, no async.
//!
//! Every primitive comes from aws-lc-rs (argon2 for password hashing). Modules:
//! - [`aead`]: AES-256-GCM sealing of small records with associated data (the "barrier").
//! - [`jwt`]: RS256 JSON Web Tokens for the identity plane.
//! - [`password`]: Argon2id password hashes and keyed (HMAC) hashes of random client secrets.
//! - [`random`]: random bytes, tokens and identifiers.

pub mod aead;
pub mod b64;
pub mod checksum;
pub mod jwt;
pub mod keys;
pub mod kw;
pub mod object;
pub mod password;
pub mod random;

/// The one opaque error of the crypto layer: no detail that could serve as an oracle.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("decryption failed")]
    Decrypt,
    #[error("invalid key material")]
    InvalidKey,
    #[error("cryptographic operation failed")]
    Failed,
}
