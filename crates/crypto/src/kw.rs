//! AES Key Wrap (RFC 3394) for 128-, 192- and 256-bit KEKs.
//!
//! aws-lc-rs offers KW for AES-128 and AES-256 only; Key Vault also has A192KW. For one code
//! path this module implements the RFC 3394 index-based algorithm over aws-lc-rs's AES block
//! function (ECB on single blocks), checked against the RFC's test vectors and against
//! aws-lc-rs's own KW for the sizes it has.
use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    UnboundCipherKey,
};
use coffer_secret::SecretBytes;

use crate::keys::KeyError;

const IV: [u8; 8] = [0xA6; 8];

fn alg(kek: &[u8]) -> Result<&'static aws_lc_rs::cipher::Algorithm, KeyError> {
    match kek.len() {
        16 => Ok(&AES_128),
        24 => Ok(&AES_192),
        32 => Ok(&AES_256),
        _ => Err(KeyError::Internal),
    }
}

pub fn wrap(kek: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    if plaintext.len() < 16 || !plaintext.len().is_multiple_of(8) || plaintext.len() > 4096 {
        return Err(KeyError::Invalid(
            "the key to wrap must be 16 to 4096 bytes, a multiple of 8".into(),
        ));
    }
    let key =
        EncryptingKey::ecb(UnboundCipherKey::new(alg(kek)?, kek).map_err(|_| KeyError::Internal)?)
            .map_err(|_| KeyError::Internal)?;
    let n = plaintext.len() / 8;
    let mut a = IV;
    let mut r: Vec<[u8; 8]> = plaintext
        .chunks(8)
        .map(|c| c.try_into().unwrap_or([0; 8]))
        .collect();
    for j in 0..6u64 {
        for (i, ri) in r.iter_mut().enumerate() {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(ri);
            key.less_safe_encrypt(&mut b, EncryptionContext::None)
                .map_err(|_| KeyError::Internal)?;
            let t = (n as u64) * j + (i as u64) + 1;
            a.copy_from_slice(&b[..8]);
            for (x, y) in a.iter_mut().zip(t.to_be_bytes()) {
                *x ^= y;
            }
            ri.copy_from_slice(&b[8..]);
        }
    }
    let mut out = Vec::with_capacity(8 * (n + 1));
    out.extend_from_slice(&a);
    for ri in r {
        out.extend_from_slice(&ri);
    }
    Ok(out)
}

pub fn unwrap(kek: &[u8], wrapped: &[u8]) -> Result<SecretBytes, KeyError> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) || wrapped.len() > 4104 {
        return Err(KeyError::Invalid(
            "the wrapped key must be 24 to 4104 bytes, a multiple of 8".into(),
        ));
    }
    let key =
        DecryptingKey::ecb(UnboundCipherKey::new(alg(kek)?, kek).map_err(|_| KeyError::Internal)?)
            .map_err(|_| KeyError::Internal)?;
    let n = wrapped.len() / 8 - 1;
    let mut a: [u8; 8] = wrapped[..8].try_into().map_err(|_| KeyError::Internal)?;
    let mut r: Vec<[u8; 8]> = wrapped[8..]
        .chunks(8)
        .map(|c| c.try_into().unwrap_or([0; 8]))
        .collect();
    for j in (0..6u64).rev() {
        for i in (0..n).rev() {
            let t = (n as u64) * j + (i as u64) + 1;
            let mut b = [0u8; 16];
            for (k, y) in t.to_be_bytes().iter().enumerate() {
                b[k] = a[k] ^ y;
            }
            b[8..].copy_from_slice(&r[i]);
            key.decrypt(&mut b, DecryptionContext::None)
                .map_err(|_| KeyError::Internal)?;
            a.copy_from_slice(&b[..8]);
            r[i].copy_from_slice(&b[8..]);
        }
    }
    let ok = coffer_secret::ct_eq(&a, &IV);
    let out = SecretBytes::new(r.concat());
    if ok {
        Ok(out)
    } else {
        Err(KeyError::OperationFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::key_wrap::{AES_128 as KW128, AES_256 as KW256, KeyEncryptionKey, KeyWrap};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap_or_default()
    }

    /// RFC 3394 section 4 test vectors.
    #[test]
    fn rfc3394_vectors() -> Result<(), KeyError> {
        let cases = [
            (
                "000102030405060708090A0B0C0D0E0F",
                "00112233445566778899AABBCCDDEEFF",
                "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "00112233445566778899AABBCCDDEEFF",
                "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "00112233445566778899AABBCCDDEEFF",
                "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7",
            ),
            (
                "000102030405060708090A0B0C0D0E0F1011121314151617",
                "00112233445566778899AABBCCDDEEFF0001020304050607",
                "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2",
            ),
            (
                "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
                "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F",
                "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
            ),
        ];
        for (kek, key, wrapped) in cases {
            let w = wrap(&h(kek), &h(key))?;
            assert_eq!(hex::encode_upper(&w), wrapped);
            assert_eq!(unwrap(&h(kek), &w)?.expose(), h(key).as_slice());
            let mut bad = w.clone();
            bad[0] ^= 1;
            assert_eq!(unwrap(&h(kek), &bad).err(), Some(KeyError::OperationFailed));
        }
        Ok(())
    }

    #[test]
    fn agrees_with_aws_lc_kw() -> Result<(), KeyError> {
        for kek in [vec![3u8; 16], vec![4u8; 32]] {
            let data = [0x5au8; 40];
            let mut out = vec![0u8; 48];
            let w = if kek.len() == 16 {
                KeyEncryptionKey::new(&KW128, &kek)
                    .map_err(|_| KeyError::Internal)?
                    .wrap(&data, &mut out)
            } else {
                KeyEncryptionKey::new(&KW256, &kek)
                    .map_err(|_| KeyError::Internal)?
                    .wrap(&data, &mut out)
            }
            .map_err(|_| KeyError::Internal)?
            .to_vec();
            assert_eq!(wrap(&kek, &data)?, w);
        }
        Ok(())
    }
}
