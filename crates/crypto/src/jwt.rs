//! RS256 JSON Web Tokens (RFC 7519 compact form) for the identity plane.
//!
//! Only RS256 is produced and only RS256 is accepted: the header's `alg` must be exactly
//! `RS256` and its `kid` must name the server's signing key, so `none`/HMAC confusion is
//! impossible. Claims are validated by the caller (the domain's token service), which owns the
//! clock.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, RSA_PKCS1_SHA256, UnparsedPublicKey};
use coffer_secret::SecretBytes;
use serde::Serialize;
use serde_json::Value;

use crate::{CryptoError, b64, random};

/// The token-signing key. Private material never leaves this type except as PKCS#8 for sealing.
pub struct SigningKey {
    pair: KeyPair,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey {{ kid: {:?} }}", self.kid)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    pub kty: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
    pub alg: &'static str,
    pub kid: String,
    pub n: String,
    pub e: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature is invalid")]
    BadSignature,
}

impl SigningKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| CryptoError::Failed)?;
        Self::with_pair(pair)
    }

    pub fn from_pkcs8(der: &SecretBytes) -> Result<Self, CryptoError> {
        let pair = KeyPair::from_pkcs8(der.expose()).map_err(|_| CryptoError::InvalidKey)?;
        Self::with_pair(pair)
    }

    fn with_pair(pair: KeyPair) -> Result<Self, CryptoError> {
        // kid = base64url(SHA-256(public key DER))[..16]: stable across restarts.
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pair.public_key().as_ref());
        let kid = b64::url_encode(&digest.as_ref()[..12]);
        Ok(Self { pair, kid })
    }

    pub fn to_pkcs8(&self) -> Result<SecretBytes, CryptoError> {
        let der = self.pair.as_der().map_err(|_| CryptoError::Failed)?;
        Ok(SecretBytes::from_slice(der.as_ref()))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwk(&self) -> Jwk {
        let pk = self.pair.public_key();
        Jwk {
            kty: "RSA",
            use_: "sig",
            alg: "RS256",
            kid: self.kid.clone(),
            n: b64::url_encode(pk.modulus().big_endian_without_leading_zero()),
            e: b64::url_encode(pk.exponent().big_endian_without_leading_zero()),
        }
    }

    /// Sign `claims` as a compact JWS.
    pub fn sign(&self, claims: &Value) -> Result<String, CryptoError> {
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let mut input = format!(
            "{}.{}",
            b64::url_encode(header.to_string().as_bytes()),
            b64::url_encode(claims.to_string().as_bytes())
        );
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| CryptoError::Failed)?;
        input.push('.');
        input.push_str(&b64::url_encode(&sig));
        Ok(input)
    }

    /// Verify the signature and header of a compact JWS; returns its claims (unvalidated).
    pub fn verify(&self, token: &str) -> Result<Value, TokenError> {
        if token.len() > 16 * 1024 {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Value = b64::url_decode(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(TokenError::BadSignature);
        }
        if header.get("kid").and_then(Value::as_str) != Some(self.kid.as_str()) {
            return Err(TokenError::BadSignature);
        }
        let sig = b64::url_decode(s).ok_or(TokenError::Malformed)?;
        let signed = &token[..h.len() + 1 + p.len()];
        UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.pair.public_key().as_ref(),
        )
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| TokenError::BadSignature)?;
        let claims: Value = b64::url_decode(p)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if !claims.is_object() {
            return Err(TokenError::Malformed);
        }
        Ok(claims)
    }
}

/// A random token identifier (the `uti` claim).
pub fn token_id() -> Result<String, CryptoError> {
    Ok(b64::url_encode(&random::array::<16>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let k = SigningKey::generate().unwrap_or_else(|_| unreachable!());
        let t = k
            .sign(&serde_json::json!({"aud": "x", "exp": 1}))
            .unwrap_or_default();
        assert_eq!(
            k.verify(&t)
                .ok()
                .and_then(|c| c["aud"].as_str().map(String::from)),
            Some("x".into())
        );
        // tamper with the payload
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = b64::url_encode(br#"{"aud":"y","exp":1}"#);
        parts[1] = &forged;
        assert_eq!(k.verify(&parts.join(".")), Err(TokenError::BadSignature));
        // another key's token is refused
        let other = SigningKey::generate().unwrap_or_else(|_| unreachable!());
        let t2 = other
            .sign(&serde_json::json!({"aud": "x"}))
            .unwrap_or_default();
        assert!(k.verify(&t2).is_err());
        assert_eq!(k.verify("a.b"), Err(TokenError::Malformed));
    }

    #[test]
    fn pkcs8_round_trip_keeps_kid() {
        let k = SigningKey::generate().unwrap_or_else(|_| unreachable!());
        let der = k.to_pkcs8().unwrap_or_else(|_| unreachable!());
        let k2 = SigningKey::from_pkcs8(&der).unwrap_or_else(|_| unreachable!());
        assert_eq!(k.kid(), k2.kid());
        assert_eq!(k.jwk(), k2.jwk());
    }
}
