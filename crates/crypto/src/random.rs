//! Randomness from aws-lc-rs's system RNG.
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::CryptoError;

pub fn bytes(n: usize) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Failed)?;
    Ok(out)
}

pub fn array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| CryptoError::Failed)?;
    Ok(out)
}

/// A random version-4 UUID, lower-case hyphenated.
pub fn uuid() -> Result<String, CryptoError> {
    let mut b: [u8; 16] = array()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A random secret of 32 bytes rendered URL-safe (43 chars), for client secrets and passwords.
pub fn token() -> Result<String, CryptoError> {
    Ok(crate::b64::url_encode(&array::<32>()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_is_v4_shaped() {
        let u = super::uuid().unwrap_or_default();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(super::uuid().unwrap_or_default(), u);
    }
}
