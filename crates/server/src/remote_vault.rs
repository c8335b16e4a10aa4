//! Vaults on another Coffer (or Key Vault-compatible) server, reached over HTTPS for
//! customer-managed keys: the storage accounts of this server keep their account keys wrapped
//! by a key held elsewhere.
//!
//! Each remote is configured in the server's TOML file (`[[remote_vaults]]`) with the service
//! principal this server signs in as at the remote's token endpoint (client-credentials grant),
//! the CA that signs the remote's certificate, the address to connect to (vault host names need
//! no DNS) and the remote's region (for the same-region rule). See docs/adr/0005.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coffer_crypto::b64;
use coffer_domain::cmk::{Call, CmkFailure, CmkStatus, KeyInfo, KeyRef, VaultClient, WRAP_ALG};
use coffer_secret::{SecretBytes, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

/// `[[remote_vaults]]` in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteVaultConfig {
    /// Key URIs whose host ends with this suffix go to this remote (`vault.example.internal:8443`).
    pub vault_dns_suffix: String,
    /// Where to connect, whatever the vault host name (no DNS needed): `127.0.0.1:8443`.
    pub connect: SocketAddr,
    /// The remote's token endpoint (`https://host:port/{tenant}/oauth2/v2.0/token`).
    pub token_url: String,
    /// The service principal this server signs in as at the remote.
    pub client_id: String,
    /// File holding that principal's client secret (keep it mode 0600).
    pub client_secret_file: PathBuf,
    /// PEM CA certificate of the remote's TLS certificate.
    pub ca_file: PathBuf,
    /// The remote vaults' region (the same-region rule compares it with the account's).
    pub region: String,
}

const API_VERSION: &str = "7.6";
const TIMEOUT: Duration = Duration::from_secs(10);

/// Every name resolves to the configured address.
struct Pinned(SocketAddr);

impl reqwest::dns::Resolve for Pinned {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = self.0;
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) })
    }
}

struct Remote {
    cfg: RemoteVaultConfig,
    http: reqwest::Client,
    secret: SecretString,
    token: tokio::sync::Mutex<Option<(SecretString, Instant)>>,
}

pub struct RemoteVaults {
    remotes: Vec<Remote>,
}

fn unreachable(e: impl std::fmt::Display) -> CmkFailure {
    CmkFailure {
        status: CmkStatus::VaultUnreachable,
        message: format!("the remote key vault could not be reached: {e}"),
    }
}

impl RemoteVaults {
    pub fn new(configs: &[RemoteVaultConfig]) -> anyhow::Result<Self> {
        let mut remotes = Vec::new();
        for cfg in configs {
            let ca = std::fs::read(&cfg.ca_file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", cfg.ca_file.display()))?;
            let secret = std::fs::read_to_string(&cfg.client_secret_file).map_err(|e| {
                anyhow::anyhow!("reading {}: {e}", cfg.client_secret_file.display())
            })?;
            if !cfg.token_url.starts_with("https://") {
                anyhow::bail!("remote_vaults.token_url must be https://");
            }
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(TIMEOUT)
                .dns_resolver(Arc::new(Pinned(cfg.connect)))
                .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
                .build()?;
            remotes.push(Remote {
                cfg: RemoteVaultConfig {
                    vault_dns_suffix: cfg.vault_dns_suffix.to_ascii_lowercase(),
                    ..cfg.clone()
                },
                http,
                secret: SecretString::new(secret.trim().to_string()),
                token: tokio::sync::Mutex::new(None),
            });
        }
        Ok(Self { remotes })
    }

    fn remote(&self, key: &KeyRef) -> Result<&Remote, CmkFailure> {
        let authority = key.authority();
        self.remotes
            .iter()
            .find(|r| {
                authority
                    .strip_suffix(&r.cfg.vault_dns_suffix)
                    .is_some_and(|v| v.ends_with('.') && v.len() > 1)
            })
            .ok_or_else(|| CmkFailure {
                status: CmkStatus::VaultNotFound,
                message: format!(
                    "the key vault {} is neither on this server nor on a configured remote",
                    key.vault_uri
                ),
            })
    }
}

impl Remote {
    async fn token(&self) -> Result<SecretString, CmkFailure> {
        let mut slot = self.token.lock().await;
        if let Some((t, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(SecretString::new(t.expose().to_string()));
        }
        let resp = self
            .http
            .post(&self.cfg.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.cfg.client_id.as_str()),
                ("client_secret", self.secret.expose()),
                ("scope", "https://vault.azure.net/.default"),
            ])
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(CmkFailure {
                status: if status.is_server_error() {
                    CmkStatus::VaultUnreachable
                } else {
                    CmkStatus::IdentityNotFound
                },
                message: format!(
                    "signing in at the remote key vault failed ({}): {}",
                    status.as_u16(),
                    body["error"].as_str().unwrap_or("unknown error")
                ),
            });
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| unreachable("the token response has no access_token"))?;
        let life = body["expires_in"]
            .as_u64()
            .unwrap_or(300)
            .saturating_sub(60);
        *slot = Some((
            SecretString::new(token.to_string()),
            Instant::now() + Duration::from_secs(life),
        ));
        Ok(SecretString::new(token.to_string()))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, CmkFailure> {
        let token = self.token().await?;
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut req = self
            .http
            .request(method, format!("{url}{sep}api-version={API_VERSION}"))
            .bearer_auth(token.expose());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let code = v["error"]["code"].as_str().unwrap_or_default();
        let inner = v["error"]["innererror"]["code"]
            .as_str()
            .unwrap_or_default();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        let s = match (status.as_u16(), code) {
            (403, _) if inner == "ForbiddenByRbac" => CmkStatus::AccessDenied,
            (403, _) if message.contains("disabled") => CmkStatus::KeyDisabled,
            (403, _) | (401, _) => CmkStatus::AccessDenied,
            (404, "KeyNotFound") => CmkStatus::KeyNotFound,
            (404, _) => CmkStatus::VaultNotFound,
            _ => CmkStatus::VaultUnreachable,
        };
        Err(CmkFailure {
            status: s,
            message: format!(
                "the remote key vault answered {} {code}: {}",
                status.as_u16(),
                message.chars().take(300).collect::<String>()
            ),
        })
    }
}

#[async_trait]
impl VaultClient for RemoteVaults {
    fn publishes_changes(&self, _: &KeyRef) -> bool {
        false
    }

    fn serves(&self, key: &KeyRef) -> bool {
        self.remote(key).is_ok()
    }

    async fn get_key(&self, _call: &Call<'_>, key: &KeyRef) -> Result<KeyInfo, CmkFailure> {
        let r = self.remote(key)?;
        let url = format!(
            "{}/keys/{}/{}",
            key.vault_uri,
            key.name,
            key.version.as_deref().unwrap_or_default()
        );
        let v = r.call(reqwest::Method::GET, &url, None).await?;
        let kid = v["key"]["kid"].as_str().unwrap_or_default();
        let version = kid.rsplit('/').next().unwrap_or_default().to_string();
        let n = v["key"]["n"].as_str().and_then(b64::url_decode);
        Ok(KeyInfo {
            version,
            kty: v["key"]["kty"].as_str().unwrap_or_default().to_string(),
            key_size: n.map(|n| {
                let lead = n.iter().take_while(|b| **b == 0).count();
                u32::try_from((n.len() - lead) * 8).unwrap_or(0)
            }),
            key_ops: v["key"]["key_ops"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|o| o.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            nbf: v["attributes"]["nbf"].as_i64(),
            exp: v["attributes"]["exp"].as_i64(),
            recovery_level: v["attributes"]["recoveryLevel"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            location: Some(r.cfg.region.clone()),
        })
    }

    async fn wrap(
        &self,
        _call: &Call<'_>,
        key: &KeyRef,
        plain: &[u8],
    ) -> Result<Vec<u8>, CmkFailure> {
        let r = self.remote(key)?;
        let version = key.version.as_deref().unwrap_or_default();
        let v = r
            .call(
                reqwest::Method::POST,
                &format!("{}/wrapkey", key.kid(version)),
                Some(json!({"alg": WRAP_ALG, "value": b64::url_encode(plain)})),
            )
            .await?;
        v["value"]
            .as_str()
            .and_then(b64::url_decode)
            .ok_or_else(|| unreachable("the wrapkey answer has no value"))
    }

    async fn unwrap(
        &self,
        _call: &Call<'_>,
        key: &KeyRef,
        wrapped: &[u8],
    ) -> Result<SecretBytes, CmkFailure> {
        let r = self.remote(key)?;
        let version = key.version.as_deref().unwrap_or_default();
        let v = r
            .call(
                reqwest::Method::POST,
                &format!("{}/unwrapkey", key.kid(version)),
                Some(json!({"alg": WRAP_ALG, "value": b64::url_encode(wrapped)})),
            )
            .await?;
        v["value"]
            .as_str()
            .and_then(b64::url_decode)
            .map(SecretBytes::new)
            .ok_or_else(|| unreachable("the unwrapkey answer has no value"))
    }
}
