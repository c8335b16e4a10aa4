//! AES-256-GCM sealing of records with associated data.
//!
//! Byte format of a sealed record (version 1):
//! `0x01 ‖ nonce (12 bytes, random) ‖ ciphertext ‖ tag (16 bytes)`.
//! The associated data (for example `"vault-key:{vault}/{name}/{version}"`) is not stored: the
//! caller must present the same identity to open the record, so a ciphertext moved to another
//! row fails to decrypt. Callers never choose nonces.
//!
//! Random 96-bit nonces are safe for far more than the number of records one key seals here
//! (metadata records, not bulk data; the bulk data stream format is separate).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use coffer_secret::SecretBytes;

use crate::{CryptoError, random};

const VERSION: u8 = 1;

/// A 256-bit AES-GCM key. No `Clone`, no `Debug` of the value.
pub struct SealingKey {
    key: LessSafeKey,
    raw: SecretBytes,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([REDACTED])")
    }
}

impl SealingKey {
    pub fn from_bytes(bytes: SecretBytes) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::InvalidKey);
        }
        let unbound =
            UnboundKey::new(&AES_256_GCM, bytes.expose()).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            raw: bytes,
        })
    }

    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_bytes(SecretBytes::new(random::bytes(32)?))
    }

    /// Raw key bytes, for sealing this key under another one.
    pub fn expose_bytes(&self) -> &[u8] {
        self.raw.expose()
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce_bytes: [u8; NONCE_LEN] = random::array()?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| CryptoError::Failed)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != VERSION {
            return Err(CryptoError::Decrypt);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| CryptoError::Decrypt)?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        body.truncate(plain_len);
        Ok(SecretBytes::new(body))
    }

    /// Derive an independent 32-byte subkey for `purpose` (HKDF-SHA256).
    pub fn derive(&self, purpose: &str) -> Result<SecretBytes, CryptoError> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"coffer-v1");
        let prk = salt.extract(self.raw.expose());
        let info = [purpose.as_bytes()];
        let okm = prk
            .expand(&info, hkdf::HKDF_SHA256)
            .map_err(|_| CryptoError::Failed)?;
        let mut out = vec![0u8; 32];
        okm.fill(&mut out).map_err(|_| CryptoError::Failed)?;
        Ok(SecretBytes::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::from_bytes(SecretBytes::new(vec![7u8; 32])).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn round_trip_and_binding() {
        let k = key();
        let sealed = k.seal(b"vault/a/1", b"private").unwrap_or_default();
        assert_eq!(
            k.open(b"vault/a/1", &sealed).map(|s| s.expose().to_vec()),
            Ok(b"private".to_vec())
        );
        assert_eq!(
            k.open(b"vault/a/2", &sealed).err(),
            Some(CryptoError::Decrypt)
        );
    }

    #[test]
    fn any_flipped_bit_fails() {
        let k = key();
        let sealed = k.seal(b"ad", b"0123456789abcdef").unwrap_or_default();
        for i in 0..sealed.len() * 8 {
            let mut t = sealed.clone();
            t[i / 8] ^= 1 << (i % 8);
            assert!(k.open(b"ad", &t).is_err(), "bit {i}");
        }
        assert!(k.open(b"ad", &sealed[..sealed.len() - 1]).is_err());
    }

    #[test]
    fn wrong_key_length_is_rejected() {
        assert!(SealingKey::from_bytes(SecretBytes::new(vec![0; 16])).is_err());
    }

    #[test]
    fn derived_keys_differ_by_purpose() {
        let k = key();
        let a = k.derive("a").unwrap_or_else(|_| unreachable!());
        let b = k.derive("b").unwrap_or_else(|_| unreachable!());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
