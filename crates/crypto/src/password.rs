//! Verifiers for credentials: Argon2id for human passwords (PHC string), HMAC-SHA256 under a
//! server key for high-entropy random client secrets (fast, and useless without the key).
//! Both verify in constant time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use aws_lc_rs::hmac;
use coffer_secret::SecretBytes;

use crate::{CryptoError, b64, random};

/// A well-formed Argon2id verifier (same parameters as real ones) that matches no password:
/// checked for unknown users so that sign-in time does not reveal which names exist.
pub const DUMMY_VERIFIER: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Yhj0Nn3A0bgsQ4PbAz4jvA5ZQ9R3y1xpeLBY7hC9Xd4";

fn argon() -> Result<Argon2<'static>, CryptoError> {
    // OWASP's second recommended Argon2id profile: m=19 MiB, t=2, p=1.
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|_| CryptoError::Failed)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hash a password with Argon2id; returns a PHC string (salt and parameters included).
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt_bytes: [u8; 16] = random::array()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| CryptoError::Failed)?;
    argon()?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| CryptoError::Failed)
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let Ok(a) = argon() else { return false };
    a.verify_password(password.as_bytes(), &parsed).is_ok()
}

/// Keyed hash of a random client secret: `hmac-sha256:` + base64url(HMAC(key, secret)).
pub fn hash_client_secret(key: &SecretBytes, secret: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let tag = hmac::sign(&k, secret.as_bytes());
    format!("hmac-sha256:{}", b64::url_encode(tag.as_ref()))
}

pub fn verify_client_secret(key: &SecretBytes, secret: &str, stored: &str) -> bool {
    let Some(expected) = stored
        .strip_prefix("hmac-sha256:")
        .and_then(b64::url_decode)
    else {
        return false;
    };
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    hmac::verify(&k, secret.as_bytes(), &expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn dummy_verifier_is_well_formed() {
        assert!(PasswordHash::new(DUMMY_VERIFIER).is_ok());
        assert!(!verify_password("anything", DUMMY_VERIFIER));
    }

    #[test]
    fn client_secret_round_trip() {
        let key = SecretBytes::new(vec![1; 32]);
        let h = hash_client_secret(&key, "s3cret");
        assert!(!h.contains("s3cret"));
        assert!(verify_client_secret(&key, "s3cret", &h));
        assert!(!verify_client_secret(&key, "s3creT", &h));
        assert!(!verify_client_secret(
            &SecretBytes::new(vec![2; 32]),
            "s3cret",
            &h
        ));
    }
}
