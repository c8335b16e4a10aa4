//! Vault key material and the Key Vault cryptographic operations, on aws-lc-rs.
//!
//! Private material leaves this module only as [`Material`] (a [`SecretBytes`] meant to be
//! sealed under the root key). Its byte format, version 1:
//! `0x01 ‖ kind ‖ body`, kind `R` = RSA PKCS#8, `E` + curve id byte + PKCS#8 = EC,
//! `O` = raw AES key. Public parts are returned as a [`PublicJwk`].
//!
//! Operations follow Azure Key Vault: `sign`/`verify` take a digest (not the message); RSA
//! signatures are RS*/PS*, EC signatures are raw `r ‖ s`; RSA encryption is RSA-OAEP (SHA-1),
//! RSA-OAEP-256 and RSA1_5; AES keys do A*KW, A*GCM, A*CBC and A*CBCPAD.
use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{
    KeyPairComponents, KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256,
    OaepPrivateDecryptingKey, OaepPublicEncryptingKey, Pkcs1PrivateDecryptingKey,
    Pkcs1PublicEncryptingKey, PrivateDecryptingKey, PublicKeyComponents,
};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use std::sync::OnceLock;

use coffer_secret::SecretBytes;
use serde::Serialize;

use crate::{b64, random};

const MATERIAL_VERSION: u8 = 1;

/// Why a key operation was refused (all are the caller's fault: 400 on the wire).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("the algorithm '{0}' is not supported for this key type")]
    UnsupportedAlgorithm(String),
    /// Deliberately uninformative (no padding or tag oracle).
    #[error("the operation failed: the input is not valid for this key")]
    OperationFailed,
    #[error("internal cryptographic failure")]
    Internal,
}

fn invalid(msg: impl Into<String>) -> KeyError {
    KeyError::Invalid(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P256K,
    P384,
    P521,
}

impl Curve {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "P-256" => Some(Curve::P256),
            "P-256K" | "SECP256K1" => Some(Curve::P256K),
            "P-384" => Some(Curve::P384),
            "P-521" => Some(Curve::P521),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P256K => "P-256K",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
    fn id(self) -> u8 {
        match self {
            Curve::P256 => 1,
            Curve::P256K => 2,
            Curve::P384 => 3,
            Curve::P521 => 4,
        }
    }
    fn from_id(b: u8) -> Option<Self> {
        [Curve::P256, Curve::P256K, Curve::P384, Curve::P521]
            .into_iter()
            .find(|c| c.id() == b)
    }
    fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            Curve::P256K => &signature::ECDSA_P256K1_SHA256_FIXED_SIGNING,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }
    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P256K => &signature::ECDSA_P256K1_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        }
    }
    /// Field element size in bytes.
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 | Curve::P256K => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
    /// The signature algorithm Key Vault pairs with this curve.
    fn jws_alg(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P256K => "ES256K",
            Curve::P384 => "ES384",
            Curve::P521 => "ES512",
        }
    }
}

/// The public half of a key, as JWK members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PublicJwk {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// Sealable private material (see the module docs for the byte format).
pub struct Material(SecretBytes);

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Material([REDACTED])")
    }
}

impl Material {
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
    pub fn from_bytes(b: SecretBytes) -> Self {
        Material(b)
    }
    fn new(kind: &[u8], body: &[u8]) -> Self {
        let mut v = Vec::with_capacity(2 + kind.len() + body.len());
        v.push(MATERIAL_VERSION);
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        Material(SecretBytes::new(v))
    }
}

/// A generated or imported key: material to seal, public JWK, and its size/curve.
pub struct NewKey {
    pub material: Material,
    pub public: PublicJwk,
    /// RSA modulus bits or AES key bits.
    pub size: Option<u32>,
    pub curve: Option<Curve>,
}

fn rsa_public(pair: &aws_lc_rs::rsa::KeyPair) -> PublicJwk {
    let pk = pair.public_key();
    PublicJwk {
        n: Some(b64::url_encode(
            pk.modulus().big_endian_without_leading_zero(),
        )),
        e: Some(b64::url_encode(
            pk.exponent().big_endian_without_leading_zero(),
        )),
        ..Default::default()
    }
}

fn ec_public(pair: &EcdsaKeyPair, curve: Curve) -> Result<PublicJwk, KeyError> {
    let point = pair.public_key().as_ref();
    let l = curve.coordinate_len();
    if point.len() != 1 + 2 * l || point[0] != 4 {
        return Err(KeyError::Internal);
    }
    Ok(PublicJwk {
        crv: Some(curve.name().into()),
        x: Some(b64::url_encode(&point[1..1 + l])),
        y: Some(b64::url_encode(&point[1 + l..])),
        ..Default::default()
    })
}

pub fn generate_rsa(bits: u32) -> Result<NewKey, KeyError> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => return Err(invalid("RSA key_size must be 2048, 3072 or 4096")),
    };
    let pair = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| KeyError::Internal)?;
    let der = pair.as_der().map_err(|_| KeyError::Internal)?;
    Ok(NewKey {
        material: Material::new(b"R", der.as_ref()),
        public: rsa_public(&pair),
        size: Some(bits),
        curve: None,
    })
}

pub fn generate_ec(curve: Curve) -> Result<NewKey, KeyError> {
    let pair = EcdsaKeyPair::generate(curve.signing()).map_err(|_| KeyError::Internal)?;
    let der = pair.to_pkcs8v1().map_err(|_| KeyError::Internal)?;
    Ok(NewKey {
        public: ec_public(&pair, curve)?,
        material: Material::new(&[b'E', curve.id()], der.as_ref()),
        size: None,
        curve: Some(curve),
    })
}

pub fn generate_oct(bits: u32) -> Result<NewKey, KeyError> {
    if !matches!(bits, 128 | 192 | 256) {
        return Err(invalid("oct key_size must be 128, 192 or 256"));
    }
    let key = SecretBytes::new(random::bytes(bits as usize / 8).map_err(|_| KeyError::Internal)?);
    Ok(NewKey {
        material: Material::new(b"O", key.expose()),
        public: PublicJwk::default(),
        size: Some(bits),
        curve: None,
    })
}

/// An imported JWK's members (base64url values already decoded by the caller's JSON layer).
#[derive(Default, serde::Deserialize)]
pub struct ImportJwk {
    pub kty: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    pub d: Option<String>,
    pub p: Option<String>,
    pub q: Option<String>,
    pub dp: Option<String>,
    pub dq: Option<String>,
    pub qi: Option<String>,
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    pub k: Option<String>,
}

impl std::fmt::Debug for ImportJwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportJwk")
            .field("kty", &self.kty)
            .finish_non_exhaustive()
    }
}

fn member(v: &Option<String>, name: &str) -> Result<SecretBytes, KeyError> {
    let s = v
        .as_deref()
        .ok_or_else(|| invalid(format!("the JWK member '{name}' is required")))?;
    let b = b64::url_decode(s)
        .ok_or_else(|| invalid(format!("the JWK member '{name}' is not valid base64url")))?;
    if b.is_empty() {
        return Err(invalid(format!("the JWK member '{name}' is empty")));
    }
    Ok(SecretBytes::new(b))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

/// Validate and import a private JWK of the given base type (`RSA`, `EC`, `oct`).
pub fn import(base_kty: &str, jwk: &ImportJwk) -> Result<NewKey, KeyError> {
    match base_kty {
        "RSA" => {
            let n = member(&jwk.n, "n")?;
            let e = member(&jwk.e, "e")?;
            let bits = strip_zeros(n.expose()).len() * 8;
            if ![2048, 3072, 4096].contains(&bits) {
                return Err(invalid("RSA keys must be 2048, 3072 or 4096 bits"));
            }
            if strip_zeros(e.expose()) != [1, 0, 1] {
                return Err(invalid("the RSA public exponent must be 65537"));
            }
            let (d, p, q, dp, dq, qi) = (
                member(&jwk.d, "d")?,
                member(&jwk.p, "p")?,
                member(&jwk.q, "q")?,
                member(&jwk.dp, "dp")?,
                member(&jwk.dq, "dq")?,
                member(&jwk.qi, "qi")?,
            );
            let comps = KeyPairComponents {
                public_key: PublicKeyComponents {
                    n: strip_zeros(n.expose()),
                    e: strip_zeros(e.expose()),
                },
                d: d.expose(),
                p: p.expose(),
                q: q.expose(),
                dP: dp.expose(),
                dQ: dq.expose(),
                qInv: qi.expose(),
            };
            let pair = aws_lc_rs::rsa::KeyPair::from_components(&comps)
                .map_err(|_| invalid("the RSA key's parameters are inconsistent"))?;
            let der = pair.as_der().map_err(|_| KeyError::Internal)?;
            Ok(NewKey {
                material: Material::new(b"R", der.as_ref()),
                public: rsa_public(&pair),
                size: Some(bits as u32),
                curve: None,
            })
        }
        "EC" => {
            let curve = jwk
                .crv
                .as_deref()
                .and_then(Curve::parse)
                .ok_or_else(|| invalid("crv must be P-256, P-256K, P-384 or P-521"))?;
            let l = curve.coordinate_len();
            let (d, x, y) = (
                member(&jwk.d, "d")?,
                member(&jwk.x, "x")?,
                member(&jwk.y, "y")?,
            );
            if x.len() != l || y.len() != l || d.len() != l {
                return Err(invalid(format!(
                    "the members d, x and y of a {} key must be {l} bytes",
                    curve.name()
                )));
            }
            let mut point = Vec::with_capacity(1 + 2 * l);
            point.push(4);
            point.extend_from_slice(x.expose());
            point.extend_from_slice(y.expose());
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                curve.signing(),
                d.expose(),
                &point,
            )
            .map_err(|_| {
                invalid("the EC key is invalid: the point is not on the curve or does not match d")
            })?;
            let der = pair.to_pkcs8v1().map_err(|_| KeyError::Internal)?;
            Ok(NewKey {
                public: ec_public(&pair, curve)?,
                material: Material::new(&[b'E', curve.id()], der.as_ref()),
                size: None,
                curve: Some(curve),
            })
        }
        "oct" => {
            let k = member(&jwk.k, "k")?;
            if !matches!(k.len(), 16 | 24 | 32) {
                return Err(invalid("oct keys must be 128, 192 or 256 bits"));
            }
            Ok(NewKey {
                material: Material::new(b"O", k.expose()),
                public: PublicJwk::default(),
                size: Some(k.len() as u32 * 8),
                curve: None,
            })
        }
        _ => Err(invalid(
            "kty must be RSA, RSA-HSM, EC, EC-HSM, oct or oct-HSM",
        )),
    }
}

/// An RSA private key, parsed lazily into the aws-lc object each kind of operation needs
/// (parsing and the first private operation are costly, so a loaded key is worth keeping for
/// a short while; see the key handle cache in the domain).
pub struct RsaKey {
    pkcs8: SecretBytes,
    oaep_private: OnceLock<OaepPrivateDecryptingKey>,
    pkcs1_private: OnceLock<Pkcs1PrivateDecryptingKey>,
    oaep_public: OnceLock<OaepPublicEncryptingKey>,
    pkcs1_public: OnceLock<Pkcs1PublicEncryptingKey>,
    pair: OnceLock<aws_lc_rs::rsa::KeyPair>,
}

fn once<T>(cell: &OnceLock<T>, make: impl FnOnce() -> Result<T, KeyError>) -> Result<&T, KeyError> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let _ = cell.set(make()?);
    cell.get().ok_or(KeyError::Internal)
}

impl RsaKey {
    fn new(pkcs8: SecretBytes) -> Self {
        Self {
            pkcs8,
            oaep_private: OnceLock::new(),
            pkcs1_private: OnceLock::new(),
            oaep_public: OnceLock::new(),
            pkcs1_public: OnceLock::new(),
            pair: OnceLock::new(),
        }
    }
    fn private(&self) -> Result<PrivateDecryptingKey, KeyError> {
        PrivateDecryptingKey::from_pkcs8(self.pkcs8.expose()).map_err(|_| KeyError::Internal)
    }
    fn oaep_private(&self) -> Result<&OaepPrivateDecryptingKey, KeyError> {
        once(&self.oaep_private, || {
            OaepPrivateDecryptingKey::new(self.private()?).map_err(|_| KeyError::Internal)
        })
    }
    fn pkcs1_private(&self) -> Result<&Pkcs1PrivateDecryptingKey, KeyError> {
        once(&self.pkcs1_private, || {
            Pkcs1PrivateDecryptingKey::new(self.private()?).map_err(|_| KeyError::Internal)
        })
    }
    fn oaep_public(&self) -> Result<&OaepPublicEncryptingKey, KeyError> {
        once(&self.oaep_public, || {
            OaepPublicEncryptingKey::new(self.private()?.public_key())
                .map_err(|_| KeyError::Internal)
        })
    }
    fn pkcs1_public(&self) -> Result<&Pkcs1PublicEncryptingKey, KeyError> {
        once(&self.pkcs1_public, || {
            Pkcs1PublicEncryptingKey::new(self.private()?.public_key())
                .map_err(|_| KeyError::Internal)
        })
    }
    fn pair(&self) -> Result<&aws_lc_rs::rsa::KeyPair, KeyError> {
        once(&self.pair, || {
            aws_lc_rs::rsa::KeyPair::from_pkcs8(self.pkcs8.expose()).map_err(|_| KeyError::Internal)
        })
    }
    fn size_bytes(&self) -> Result<usize, KeyError> {
        Ok(self.oaep_public()?.ciphertext_size())
    }
}

/// A key loaded from its material. Its memory is released (and cleansed by aws-lc / zeroized)
/// when the last reference drops.
pub enum LoadedKey {
    Rsa(RsaKey),
    Ec(EcdsaKeyPair, Curve),
    Oct(SecretBytes),
}

/// Output of an encryption.
#[derive(Debug, Default)]
pub struct Sealed {
    pub value: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
}

fn digest_alg(alg: &str) -> Option<&'static digest::Algorithm> {
    match alg {
        "RS256" | "PS256" | "ES256" | "ES256K" => Some(&digest::SHA256),
        "RS384" | "PS384" | "ES384" => Some(&digest::SHA384),
        "RS512" | "PS512" | "ES512" => Some(&digest::SHA512),
        _ => None,
    }
}

fn aes_alg(len: usize) -> Result<&'static aws_lc_rs::cipher::Algorithm, KeyError> {
    match len {
        16 => Ok(&AES_128),
        24 => Ok(&AES_192),
        32 => Ok(&AES_256),
        _ => Err(KeyError::Internal),
    }
}

/// The AES key size an `A{bits}...` algorithm names.
fn aes_bits(alg: &str) -> Option<usize> {
    let rest = alg.strip_prefix('A')?;
    let bits: usize = rest.get(..3)?.parse().ok()?;
    matches!(bits, 128 | 192 | 256).then_some(bits)
}

impl LoadedKey {
    pub fn load(m: &Material) -> Result<Self, KeyError> {
        let b = m.expose();
        if b.len() < 2 || b[0] != MATERIAL_VERSION {
            return Err(KeyError::Internal);
        }
        match b[1] {
            b'R' => Ok(LoadedKey::Rsa(RsaKey::new(SecretBytes::from_slice(
                &b[2..],
            )))),
            b'E' if b.len() > 3 => {
                let curve = Curve::from_id(b[2]).ok_or(KeyError::Internal)?;
                let pair = EcdsaKeyPair::from_pkcs8(curve.signing(), &b[3..])
                    .map_err(|_| KeyError::Internal)?;
                Ok(LoadedKey::Ec(pair, curve))
            }
            b'O' => Ok(LoadedKey::Oct(SecretBytes::from_slice(&b[2..]))),
            _ => Err(KeyError::Internal),
        }
    }

    pub fn encrypt(
        &self,
        alg: &str,
        plaintext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
    ) -> Result<Sealed, KeyError> {
        match self {
            LoadedKey::Rsa(rsa) => {
                let mut out = vec![0u8; rsa.size_bytes()?];
                let n = match alg {
                    "RSA-OAEP" | "RSA-OAEP-256" => {
                        let oaep = if alg == "RSA-OAEP" {
                            &OAEP_SHA1_MGF1SHA1
                        } else {
                            &OAEP_SHA256_MGF1SHA256
                        };
                        let k = rsa.oaep_public()?;
                        if plaintext.len() > k.max_plaintext_size(oaep) {
                            return Err(invalid(
                                "the plaintext is too long for this key and algorithm",
                            ));
                        }
                        k.encrypt(oaep, plaintext, &mut out, None)
                            .map_err(|_| KeyError::OperationFailed)?
                            .len()
                    }
                    "RSA1_5" => {
                        let k = rsa.pkcs1_public()?;
                        if plaintext.len() > k.max_plaintext_size() {
                            return Err(invalid(
                                "the plaintext is too long for this key and algorithm",
                            ));
                        }
                        k.encrypt(plaintext, &mut out)
                            .map_err(|_| KeyError::OperationFailed)?
                            .len()
                    }
                    _ => return Err(KeyError::UnsupportedAlgorithm(alg.into())),
                };
                out.truncate(n);
                Ok(Sealed {
                    value: out,
                    ..Default::default()
                })
            }
            LoadedKey::Ec(..) => Err(KeyError::UnsupportedAlgorithm(alg.into())),
            LoadedKey::Oct(k) => {
                let bits =
                    aes_bits(alg).ok_or_else(|| KeyError::UnsupportedAlgorithm(alg.into()))?;
                check_aes_size(alg, bits, k.len())?;
                let mode = &alg[4..];
                match mode {
                    "GCM" => {
                        if iv.is_some() {
                            return Err(invalid(
                                "the service generates the IV for GCM encryption: do not send 'iv'",
                            ));
                        }
                        let nonce: [u8; 12] = random::array().map_err(|_| KeyError::Internal)?;
                        let aead_alg = match bits {
                            128 => &aws_lc_rs::aead::AES_128_GCM,
                            192 => &aws_lc_rs::aead::AES_192_GCM,
                            _ => &aws_lc_rs::aead::AES_256_GCM,
                        };
                        let key = aws_lc_rs::aead::LessSafeKey::new(
                            aws_lc_rs::aead::UnboundKey::new(aead_alg, k.expose())
                                .map_err(|_| KeyError::Internal)?,
                        );
                        let mut body = plaintext.to_vec();
                        let tag = key
                            .seal_in_place_separate_tag(
                                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                                aws_lc_rs::aead::Aad::from(aad.unwrap_or_default()),
                                &mut body,
                            )
                            .map_err(|_| KeyError::OperationFailed)?;
                        Ok(Sealed {
                            value: body,
                            iv: Some(nonce.to_vec()),
                            tag: Some(tag.as_ref().to_vec()),
                        })
                    }
                    "CBC" | "CBCPAD" => {
                        let iv16: [u8; 16] = match iv {
                            Some(v) => v
                                .try_into()
                                .map_err(|_| invalid("the IV must be 16 bytes"))?,
                            None => random::array().map_err(|_| KeyError::Internal)?,
                        };
                        let unbound = || {
                            UnboundCipherKey::new(aes_alg(k.len())?, k.expose())
                                .map_err(|_| KeyError::Internal)
                        };
                        let ctx = EncryptionContext::Iv128(FixedLength::from(iv16));
                        let value = if mode == "CBC" {
                            if plaintext.is_empty() || !plaintext.len().is_multiple_of(16) {
                                return Err(invalid(
                                    "A*CBC needs a plaintext that is a non-empty multiple of 16 bytes; use A*CBCPAD",
                                ));
                            }
                            let key =
                                EncryptingKey::cbc(unbound()?).map_err(|_| KeyError::Internal)?;
                            let mut buf = plaintext.to_vec();
                            key.less_safe_encrypt(&mut buf, ctx)
                                .map_err(|_| KeyError::OperationFailed)?;
                            buf
                        } else {
                            let key = PaddedBlockEncryptingKey::cbc_pkcs7(unbound()?)
                                .map_err(|_| KeyError::Internal)?;
                            let mut buf = plaintext.to_vec();
                            key.less_safe_encrypt(&mut buf, ctx)
                                .map_err(|_| KeyError::OperationFailed)?;
                            buf
                        };
                        Ok(Sealed {
                            value,
                            iv: Some(iv16.to_vec()),
                            tag: None,
                        })
                    }
                    _ => Err(KeyError::UnsupportedAlgorithm(alg.into())),
                }
            }
        }
    }

    pub fn decrypt(
        &self,
        alg: &str,
        ciphertext: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> Result<SecretBytes, KeyError> {
        match self {
            LoadedKey::Rsa(rsa) => {
                let size = rsa.size_bytes()?;
                if ciphertext.len() != size {
                    return Err(invalid("the ciphertext length does not match the key size"));
                }
                let mut out = vec![0u8; size];
                let n = match alg {
                    "RSA-OAEP" | "RSA-OAEP-256" => {
                        let oaep = if alg == "RSA-OAEP" {
                            &OAEP_SHA1_MGF1SHA1
                        } else {
                            &OAEP_SHA256_MGF1SHA256
                        };
                        rsa.oaep_private()?
                            .decrypt(oaep, ciphertext, &mut out, None)
                            .map_err(|_| KeyError::OperationFailed)?
                            .len()
                    }
                    "RSA1_5" => rsa
                        .pkcs1_private()?
                        .decrypt(ciphertext, &mut out)
                        .map_err(|_| KeyError::OperationFailed)?
                        .len(),
                    _ => return Err(KeyError::UnsupportedAlgorithm(alg.into())),
                };
                out.truncate(n);
                Ok(SecretBytes::new(out))
            }
            LoadedKey::Ec(..) => Err(KeyError::UnsupportedAlgorithm(alg.into())),
            LoadedKey::Oct(k) => {
                let bits =
                    aes_bits(alg).ok_or_else(|| KeyError::UnsupportedAlgorithm(alg.into()))?;
                check_aes_size(alg, bits, k.len())?;
                match &alg[4..] {
                    "GCM" => {
                        let nonce: [u8; 12] = iv
                            .ok_or_else(|| invalid("'iv' is required for GCM decryption"))?
                            .try_into()
                            .map_err(|_| invalid("the GCM IV must be 12 bytes"))?;
                        let tag =
                            tag.ok_or_else(|| invalid("'tag' is required for GCM decryption"))?;
                        if tag.len() != 16 {
                            return Err(invalid("the GCM tag must be 16 bytes"));
                        }
                        let aead_alg = match bits {
                            128 => &aws_lc_rs::aead::AES_128_GCM,
                            192 => &aws_lc_rs::aead::AES_192_GCM,
                            _ => &aws_lc_rs::aead::AES_256_GCM,
                        };
                        let key = aws_lc_rs::aead::LessSafeKey::new(
                            aws_lc_rs::aead::UnboundKey::new(aead_alg, k.expose())
                                .map_err(|_| KeyError::Internal)?,
                        );
                        let mut body = ciphertext.to_vec();
                        body.extend_from_slice(tag);
                        let n = key
                            .open_in_place(
                                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                                aws_lc_rs::aead::Aad::from(aad.unwrap_or_default()),
                                &mut body,
                            )
                            .map_err(|_| KeyError::OperationFailed)?
                            .len();
                        body.truncate(n);
                        Ok(SecretBytes::new(body))
                    }
                    mode @ ("CBC" | "CBCPAD") => {
                        let iv16: [u8; 16] = iv
                            .ok_or_else(|| invalid("'iv' is required for CBC decryption"))?
                            .try_into()
                            .map_err(|_| invalid("the IV must be 16 bytes"))?;
                        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
                            return Err(invalid(
                                "the ciphertext must be a non-empty multiple of 16 bytes",
                            ));
                        }
                        let unbound = UnboundCipherKey::new(aes_alg(k.len())?, k.expose())
                            .map_err(|_| KeyError::Internal)?;
                        let ctx = DecryptionContext::Iv128(FixedLength::from(iv16));
                        let mut buf = ciphertext.to_vec();
                        let n = if mode == "CBC" {
                            DecryptingKey::cbc(unbound)
                                .map_err(|_| KeyError::Internal)?
                                .decrypt(&mut buf, ctx)
                                .map_err(|_| KeyError::OperationFailed)?
                                .len()
                        } else {
                            PaddedBlockDecryptingKey::cbc_pkcs7(unbound)
                                .map_err(|_| KeyError::Internal)?
                                .decrypt(&mut buf, ctx)
                                .map_err(|_| KeyError::OperationFailed)?
                                .len()
                        };
                        buf.truncate(n);
                        Ok(SecretBytes::new(buf))
                    }
                    _ => Err(KeyError::UnsupportedAlgorithm(alg.into())),
                }
            }
        }
    }

    pub fn wrap(&self, alg: &str, key: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            LoadedKey::Oct(k) => {
                let bits =
                    kw_bits(alg).ok_or_else(|| KeyError::UnsupportedAlgorithm(alg.into()))?;
                check_aes_size(alg, bits, k.len())?;
                crate::kw::wrap(k.expose(), key)
            }
            _ => Ok(self.encrypt(alg, key, None, None)?.value),
        }
    }

    pub fn unwrap(&self, alg: &str, wrapped: &[u8]) -> Result<SecretBytes, KeyError> {
        match self {
            LoadedKey::Oct(k) => {
                let bits =
                    kw_bits(alg).ok_or_else(|| KeyError::UnsupportedAlgorithm(alg.into()))?;
                check_aes_size(alg, bits, k.len())?;
                crate::kw::unwrap(k.expose(), wrapped)
            }
            _ => self.decrypt(alg, wrapped, None, None, None),
        }
    }

    /// Sign a digest; EC signatures are raw `r ‖ s`.
    pub fn sign(&self, alg: &str, digest_bytes: &[u8]) -> Result<Vec<u8>, KeyError> {
        let dalg = digest_alg(alg).ok_or_else(|| KeyError::UnsupportedAlgorithm(alg.into()))?;
        let d = digest::Digest::import_less_safe(digest_bytes, dalg).map_err(|_| {
            invalid(format!(
                "the digest for {alg} must be {} bytes",
                dalg.output_len()
            ))
        })?;
        match self {
            LoadedKey::Rsa(rsa) => {
                let pair = rsa.pair()?;
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    _ => return Err(KeyError::UnsupportedAlgorithm(alg.into())),
                };
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign_digest(enc, &d, &mut sig)
                    .map_err(|_| KeyError::Internal)?;
                Ok(sig)
            }
            LoadedKey::Ec(pair, curve) => {
                if alg != curve.jws_alg() {
                    return Err(KeyError::UnsupportedAlgorithm(alg.into()));
                }
                Ok(pair
                    .sign_digest(&d)
                    .map_err(|_| KeyError::Internal)?
                    .as_ref()
                    .to_vec())
            }
            LoadedKey::Oct(_) => Err(KeyError::UnsupportedAlgorithm(alg.into())),
        }
    }

    pub fn verify(&self, alg: &str, digest_bytes: &[u8], sig: &[u8]) -> Result<bool, KeyError> {
        let dalg = digest_alg(alg).ok_or_else(|| KeyError::UnsupportedAlgorithm(alg.into()))?;
        let d = digest::Digest::import_less_safe(digest_bytes, dalg).map_err(|_| {
            invalid(format!(
                "the digest for {alg} must be {} bytes",
                dalg.output_len()
            ))
        })?;
        match self {
            LoadedKey::Rsa(rsa) => {
                let pair = rsa.pair()?;
                let v: &'static signature::RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return Err(KeyError::UnsupportedAlgorithm(alg.into())),
                };
                Ok(UnparsedPublicKey::new(v, pair.public_key().as_ref())
                    .verify_digest(&d, sig)
                    .is_ok())
            }
            LoadedKey::Ec(pair, curve) => {
                if alg != curve.jws_alg() {
                    return Err(KeyError::UnsupportedAlgorithm(alg.into()));
                }
                Ok(
                    UnparsedPublicKey::new(curve.verification(), pair.public_key().as_ref())
                        .verify_digest(&d, sig)
                        .is_ok(),
                )
            }
            LoadedKey::Oct(_) => Err(KeyError::UnsupportedAlgorithm(alg.into())),
        }
    }
}

/// An `A{bits}…` algorithm needs a key of exactly that size.
fn check_aes_size(alg: &str, bits: usize, key_len: usize) -> Result<(), KeyError> {
    if bits == key_len * 8 {
        Ok(())
    } else {
        Err(invalid(format!(
            "{alg} needs a {bits}-bit key; this key has {} bits",
            key_len * 8
        )))
    }
}

fn kw_bits(alg: &str) -> Option<usize> {
    match alg {
        "A128KW" => Some(128),
        "A192KW" => Some(192),
        "A256KW" => Some(256),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(b: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, b).as_ref().to_vec()
    }

    #[test]
    fn rsa_round_trips() -> Result<(), KeyError> {
        let k = generate_rsa(2048)?;
        assert_eq!(k.public.e.as_deref(), Some("AQAB"));
        let l = LoadedKey::load(&k.material)?;
        for alg in ["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"] {
            let c = l.wrap(alg, b"0123456789abcdef0123456789abcdef")?;
            assert_eq!(
                l.unwrap(alg, &c)?.expose(),
                b"0123456789abcdef0123456789abcdef"
            );
        }
        let mut bad = l.wrap("RSA-OAEP-256", b"k")?;
        bad[10] ^= 1;
        assert_eq!(
            l.unwrap("RSA-OAEP-256", &bad).err(),
            Some(KeyError::OperationFailed)
        );
        let d = sha256(b"hello");
        for alg in ["RS256", "PS256"] {
            let s = l.sign(alg, &d)?;
            assert!(l.verify(alg, &d, &s)?);
            assert!(!l.verify(alg, &sha256(b"other"), &s)?);
        }
        assert!(l.sign("RS256", &d[..31]).is_err());
        assert!(matches!(
            l.sign("ES256", &d),
            Err(KeyError::UnsupportedAlgorithm(_))
        ));
        Ok(())
    }

    #[test]
    fn ec_round_trips_on_every_curve() -> Result<(), KeyError> {
        for (curve, alg, dalg) in [
            (Curve::P256, "ES256", &digest::SHA256),
            (Curve::P256K, "ES256K", &digest::SHA256),
            (Curve::P384, "ES384", &digest::SHA384),
            (Curve::P521, "ES512", &digest::SHA512),
        ] {
            let k = generate_ec(curve)?;
            let l = LoadedKey::load(&k.material)?;
            let d = digest::digest(dalg, b"msg");
            let s = l.sign(alg, d.as_ref())?;
            assert_eq!(s.len(), 2 * curve.coordinate_len());
            assert!(l.verify(alg, d.as_ref(), &s)?);
            assert!(l.sign("ES384", &[0u8; 32]).is_err() || curve == Curve::P384);
        }
        Ok(())
    }

    #[test]
    fn aes_modes_round_trip() -> Result<(), KeyError> {
        for bits in [128u32, 192, 256] {
            let k = generate_oct(bits)?;
            let l = LoadedKey::load(&k.material)?;
            let gcm = format!("A{bits}GCM");
            let s = l.encrypt(&gcm, b"plain", None, Some(b"aad"))?;
            let back = l.decrypt(
                &gcm,
                &s.value,
                s.iv.as_deref(),
                Some(b"aad"),
                s.tag.as_deref(),
            )?;
            assert_eq!(back.expose(), b"plain");
            assert!(
                l.decrypt(
                    &gcm,
                    &s.value,
                    s.iv.as_deref(),
                    Some(b"x"),
                    s.tag.as_deref()
                )
                .is_err()
            );
            let cbc = format!("A{bits}CBC");
            let s = l.encrypt(&cbc, &[7u8; 32], None, None)?;
            assert_eq!(s.value.len(), 32);
            assert_eq!(
                l.decrypt(&cbc, &s.value, s.iv.as_deref(), None, None)?
                    .expose(),
                &[7u8; 32]
            );
            assert!(l.encrypt(&cbc, b"short", None, None).is_err());
            let pad = format!("A{bits}CBCPAD");
            let s = l.encrypt(&pad, b"short", None, None)?;
            assert_eq!(
                l.decrypt(&pad, &s.value, s.iv.as_deref(), None, None)?
                    .expose(),
                b"short"
            );
            let kw = format!("A{bits}KW");
            let w = l.wrap(&kw, &[9u8; 32])?;
            assert_eq!(l.unwrap(&kw, &w)?.expose(), &[9u8; 32]);
        }
        let k = generate_oct(256)?;
        let l = LoadedKey::load(&k.material)?;
        assert!(l.wrap("A128KW", &[0u8; 16]).is_err());
        Ok(())
    }

    #[test]
    fn imports_validate_consistency() -> Result<(), KeyError> {
        // EC: a point that is not on the curve is refused.
        let k = generate_ec(Curve::P256)?;
        let mut jwk = ImportJwk {
            crv: Some("P-256".into()),
            x: k.public.x.clone(),
            y: k.public.y.clone(),
            d: Some(b64::url_encode(&[1u8; 32])),
            ..Default::default()
        };
        assert!(import("EC", &jwk).is_err());
        jwk.d = None;
        assert!(import("EC", &jwk).is_err());
        // oct sizes
        let ok = ImportJwk {
            k: Some(b64::url_encode(&[1u8; 24])),
            ..Default::default()
        };
        assert_eq!(import("oct", &ok)?.size, Some(192));
        let bad = ImportJwk {
            k: Some(b64::url_encode(&[1u8; 20])),
            ..Default::default()
        };
        assert!(import("oct", &bad).is_err());
        let garbage = ImportJwk {
            k: Some("!!".into()),
            ..Default::default()
        };
        assert!(import("oct", &garbage).is_err());
        Ok(())
    }
}
