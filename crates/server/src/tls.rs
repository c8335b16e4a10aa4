//! TLS, always. On first start Coffer makes its own CA (ECDSA P-256, 10 years): the CA's
//! private key is kept only sealed under the root key (settings `tls.ca_key`), its
//! certificate is written to `DATA_DIR/ca.pem` for clients to trust. A fresh server
//! certificate is issued by that CA at every start (SANs: localhost, 127.0.0.1, ::1, the public
//! host, and `*.vault.{suffix}` / `*.blob.{suffix}`), its key held only in memory.
//! Operators may serve their own certificate instead (`--tls-cert`, `--tls-key`).
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use coffer_crypto::aead::SealingKey;
use coffer_domain::store::MetaStore;
use coffer_secret::SecretBytes;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::ServerConfig;
use crate::keyfile::check_private;

const CA_KEY_AAD: &[u8] = b"coffer:tls:ca-key:v1";

pub struct TlsMaterial {
    pub server_config: Arc<rustls::ServerConfig>,
    /// The PEM file clients should trust.
    pub ca_cert_path: PathBuf,
}

fn ca_params(cn: &str) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Coffer");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    Ok(p)
}

pub async fn prepare(
    store: &dyn MetaStore,
    root: &SealingKey,
    cfg: &ServerConfig,
) -> anyhow::Result<TlsMaterial> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (chain, key, ca_cert_path) = match &cfg.tls {
        Some((cert, key)) => {
            check_private(key).map_err(|e| anyhow!("{e}"))?;
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("reading {}", cert.display()))?;
            let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
                std::fs::File::open(key)?,
            ))?
            .ok_or_else(|| anyhow!("{} holds no private key", key.display()))?;
            (chain, key, std::path::absolute(cert)?)
        }
        None => {
            let (ca_key, cn) = load_or_create_ca(store, root).await?;
            let ca_cert = ca_params(&cn)?.self_signed(&ca_key)?;
            let ca_pem = ca_cert.pem();
            let ca_path = cfg.data_dir.join("ca.pem");
            let stored_pem = store.get_setting("tls.ca_cert_pem").await?;
            let pem_to_write = match stored_pem {
                Some(p) => String::from_utf8(p).context("stored CA certificate")?,
                None => {
                    store
                        .put_setting("tls.ca_cert_pem", ca_pem.as_bytes())
                        .await?;
                    ca_pem
                }
            };
            if std::fs::read_to_string(&ca_path).ok().as_deref() != Some(pem_to_write.as_str()) {
                std::fs::write(&ca_path, &pem_to_write)?;
            }
            let ca_der = rustls_pemfile::certs(&mut pem_to_write.as_bytes())
                .next()
                .ok_or_else(|| anyhow!("stored CA certificate is empty"))??;
            let issuer = Issuer::new(ca_params(&cn)?, ca_key);
            let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let mut lp = CertificateParams::new(vec![
                "localhost".to_string(),
                format!("*.vault.{}", cfg.dns_suffix),
                format!("*.blob.{}", cfg.dns_suffix),
                format!("vault.{}", cfg.dns_suffix),
                format!("blob.{}", cfg.dns_suffix),
            ])?;
            for ip in ["127.0.0.1", "::1"] {
                lp.subject_alt_names.push(SanType::IpAddress(ip.parse()?));
            }
            match cfg.public_host.parse::<std::net::IpAddr>() {
                Ok(ip) if !ip.is_loopback() => lp.subject_alt_names.push(SanType::IpAddress(ip)),
                Ok(_) => {}
                Err(_) if cfg.public_host != "localhost" => lp
                    .subject_alt_names
                    .push(SanType::DnsName(cfg.public_host.clone().try_into()?)),
                Err(_) => {}
            }
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "Coffer server");
            lp.distinguished_name = dn;
            lp.use_authority_key_identifier_extension = true;
            lp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            lp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let now = time::OffsetDateTime::now_utc();
            lp.not_before = now - time::Duration::days(1);
            lp.not_after = now + time::Duration::days(365);
            let leaf = lp.signed_by(&leaf_key, &issuer)?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
            (vec![leaf.der().clone(), ca_der], key, ca_path)
        }
    };
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        server_config: Arc::new(sc),
        ca_cert_path,
    })
}

async fn load_or_create_ca(
    store: &dyn MetaStore,
    root: &SealingKey,
) -> anyhow::Result<(KeyPair, String)> {
    if let (Some(sealed), Some(cn)) = (
        store.get_setting("tls.ca_key").await?,
        store.get_setting("tls.ca_cn").await?,
    ) {
        let der = root
            .open(CA_KEY_AAD, &sealed)
            .map_err(|_| anyhow!("the CA key cannot be unsealed"))?;
        let key = KeyPair::try_from(der.expose()).context("CA key")?;
        return Ok((key, String::from_utf8(cn)?));
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let der = SecretBytes::new(key.serialize_der());
    let sealed = root.seal(CA_KEY_AAD, der.expose())?;
    let cn = format!("Coffer Local CA {}", &coffer_crypto::random::uuid()?[..8]);
    store.put_setting("tls.ca_key", &sealed).await?;
    store.put_setting("tls.ca_cn", cn.as_bytes()).await?;
    Ok((key, cn))
}

/// The CA private key in PKCS#8 DER (for tests that prove it never reaches disk in clear).
pub async fn unseal_ca_key(
    store: &dyn MetaStore,
    root: &SealingKey,
) -> anyhow::Result<SecretBytes> {
    let sealed = store
        .get_setting("tls.ca_key")
        .await?
        .ok_or_else(|| anyhow!("no CA key"))?;
    root.open(CA_KEY_AAD, &sealed)
        .map_err(|_| anyhow!("the CA key cannot be unsealed"))
}
