//! A signed-in client of the server's public APIs, the same ones the Azure SDKs use:
//! the token endpoint (client credentials), Azure Resource Manager, the Key Vault data plane
//! and the Blob service.
//!
//! - Tokens are fetched per scope (kept in memory, and for a profile in its token cache,
//!   see [`crate::profile`]):
//!   ARM `https://management.core.windows.net//.default`, vaults
//!   `https://{vault_dns_suffix}/.default` (or what a 401 challenge names), storage
//!   `https://storage.azure.com/.default`.
//! - Vault hosts (`{vault}.{vault_dns_suffix}`) usually have no DNS entry: the client connects
//!   to the address of the management endpoint (the listener that serves vault hosts) and
//!   still sends the vault's name as Host and TLS SNI, so the certificate check is unchanged.
//! - Blob requests use the path-style endpoint of `endpoints.json` (`{blob}/{account}/...`).
//! - Every error answer becomes an [`ApiError`] carrying Azure's error code.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use coffer_secret::SecretString;
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use crate::error::ApiError;
use crate::profile::{CachedToken, Profile, SecretSource, save_tokens, secret_from};

/// The ARM scope.
pub const ARM_SCOPE: &str = "https://management.core.windows.net//.default";
/// The storage scope.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// Key Vault data-plane api-version.
pub const VAULT_API: &str = "2025-07-01";

/// What `endpoints.json` (or a profile) tells a client.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub tenant_id: String,
    pub subscription_id: String,
    pub authority: String,
    pub management: String,
    pub blob: String,
    pub vault_dns_suffix: String,
    /// The CA to trust (None: the system's roots).
    pub ca_cert: Option<String>,
}

fn str_field(v: &Value, k: &str, file: &str) -> anyhow::Result<String> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{file} has no '{k}'"))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl Endpoints {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let v = read_json(path).context("is the server running with this --data-dir?")?;
        let f = "endpoints.json";
        Ok(Self {
            tenant_id: str_field(&v, "tenant_id", f)?,
            subscription_id: str_field(&v, "subscription_id", f)?,
            authority: str_field(&v, "authority", f)?,
            management: str_field(&v, "management", f)?
                .trim_end_matches('/')
                .to_string(),
            blob: str_field(&v, "blob", f)?.trim_end_matches('/').to_string(),
            vault_dns_suffix: str_field(&v, "vault_dns_suffix", f)?,
            ca_cert: Some(str_field(&v, "ca_cert", f)?),
        })
    }
}

/// Where the client secret is, when a token must be fetched.
pub enum Secret {
    /// In hand (data directory, or just typed at `coffer login`).
    Known(SecretString),
    /// To be read from a profile's source when needed.
    Source(SecretSource),
}

pub struct Session {
    pub ep: Endpoints,
    http: reqwest::Client,
    ca_pem: Option<Vec<u8>>,
    client_id: String,
    secret: Secret,
    /// The profile whose token cache this session reads and writes.
    profile: Option<String>,
    tokens: Mutex<BTreeMap<String, CachedToken>>,
    /// Clients for vault hosts (each pinned to the main listener's address).
    vault_clients: Mutex<HashMap<String, reqwest::Client>>,
}

fn header_str(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Turn an error answer of any plane into an [`ApiError`] (JSON `{"error":{code,message}}`,
/// OAuth `{"error","error_description"}`, or Blob XML `<Error><Code>…<Message>…` plus
/// `x-ms-error-code`).
pub async fn api_error(resp: Response) -> ApiError {
    let status = resp.status();
    let request_id = header_str(&resp, "x-ms-request-id");
    let header_code = header_str(&resp, "x-ms-error-code");
    let body = resp.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let (mut code, mut message) = (None, None);
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        match &v["error"] {
            Value::Object(e) => {
                code = e.get("code").and_then(Value::as_str).map(str::to_string);
                message = e.get("message").and_then(Value::as_str).map(str::to_string);
            }
            Value::String(c) => {
                code = Some(c.clone());
                message = v["error_description"].as_str().map(str::to_string);
            }
            _ => {}
        }
    } else if text.contains("<Error>") {
        code = xml_text(&text, "Code");
        message = xml_text(&text, "Message").map(|m| m.lines().next().unwrap_or("").to_string());
    }
    ApiError {
        status: status.as_u16(),
        code: header_code.or(code).unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("Error")
                .replace(' ', "")
        }),
        message: message
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("the server answered {status}")),
        request_id,
    }
}

/// The text of the first `<tag>…</tag>` in `xml` (entities decoded).
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml_unescape(&xml[start..end]))
}

pub fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The `key="value"` parameters of a `WWW-Authenticate: Bearer …` challenge.
fn challenge_params(h: &str) -> HashMap<String, String> {
    let rest = h.trim().strip_prefix("Bearer").unwrap_or(h).trim();
    rest.split([',', ' '])
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            )
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A token is used only while it has this many seconds left.
const TOKEN_MARGIN: i64 = 120;

impl Session {
    /// Sign in as the local administrator described by a data directory.
    pub fn from_data_dir(dir: &Path) -> anyhow::Result<Self> {
        let ep = Endpoints::from_file(&dir.join("endpoints.json"))?;
        let creds = read_json(&dir.join("admin-credentials.json"))
            .context("the administrator credentials file is needed for local administration")?;
        let f = "admin-credentials.json";
        let client_id = str_field(&creds, "client_id", f)?;
        let secret = Secret::Known(SecretString::new(str_field(&creds, "client_secret", f)?));
        Self::new(ep, client_id, secret, None)
    }

    /// Act as a profile saved by `coffer login`.
    pub fn from_profile(name: &str, p: &Profile) -> anyhow::Result<Self> {
        let ep = Endpoints {
            tenant_id: p.tenant_id.clone(),
            subscription_id: p.subscription_id.clone(),
            authority: p.authority.clone(),
            management: p.management.clone(),
            blob: p.blob.clone(),
            vault_dns_suffix: p.vault_dns_suffix.clone(),
            ca_cert: p.ca_cert.clone(),
        };
        let s = Self::new(
            ep,
            p.client_id.clone(),
            Secret::Source(p.secret.clone()),
            Some(name.to_string()),
        )?;
        if let Ok(mut t) = s.tokens.lock() {
            *t = crate::profile::load_tokens(name);
        }
        Ok(s)
    }

    pub fn new(
        ep: Endpoints,
        client_id: String,
        secret: Secret,
        profile: Option<String>,
    ) -> anyhow::Result<Self> {
        let ca_pem = match &ep.ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading the CA certificate {path}"))?,
            ),
            None => None,
        };
        let http = Self::builder(ca_pem.as_deref())?.build()?;
        Ok(Self {
            ep,
            http,
            ca_pem,
            client_id,
            secret,
            profile,
            tokens: Mutex::new(BTreeMap::new()),
            vault_clients: Mutex::new(HashMap::new()),
        })
    }

    fn builder(ca_pem: Option<&[u8]>) -> anyhow::Result<reqwest::ClientBuilder> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("coffer-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            b = b.tls_certs_only([reqwest::Certificate::from_pem(pem)?]);
        }
        Ok(b)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The signed-in principal's client (application) id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// An access token for `scope`: from the cache while it has two minutes left, else
    /// fetched with the client secret (and, for a profile, written to its token cache).
    pub async fn token(&self, scope: &str) -> anyhow::Result<String> {
        if let Ok(t) = self.tokens.lock()
            && let Some(tok) = t.get(scope)
            && tok.expires_on > now() + TOKEN_MARGIN
        {
            return Ok(tok.access_token.clone());
        }
        let secret = match &self.secret {
            Secret::Known(s) => s.expose().to_string(),
            Secret::Source(src) => match secret_from(src)? {
                Some(s) => s,
                None => bail!(
                    "the token of profile '{}' has expired; sign in again with `coffer login --profile {}`",
                    self.profile.as_deref().unwrap_or("default"),
                    self.profile.as_deref().unwrap_or("default")
                ),
            },
        };
        let secret = SecretString::new(secret);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", secret.expose()),
            ("scope", scope),
        ];
        let resp = self
            .http
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                self.ep.authority.trim_end_matches('/'),
                self.ep.tenant_id
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form)?)
            .send()
            .await
            .context("contacting the server's token endpoint")?;
        if !resp.status().is_success() {
            return Err(anyhow::Error::new(api_error(resp).await).context("signing in"));
        }
        let v: Value = resp.json().await.context("reading the token response")?;
        let tok = str_field(&v, "access_token", "the token response")?;
        let expires_in = v["expires_in"]
            .as_i64()
            .or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(3599);
        let snapshot = match self.tokens.lock() {
            Ok(mut t) => {
                t.insert(
                    scope.to_string(),
                    CachedToken {
                        access_token: tok.clone(),
                        expires_on: now() + expires_in,
                    },
                );
                t.retain(|_, c| c.expires_on > now());
                Some(t.clone())
            }
            Err(_) => None,
        };
        if let (Some(p), Some(t)) = (&self.profile, snapshot) {
            save_tokens(p, &t)?;
        }
        Ok(tok)
    }

    /// The object id of the signed-in principal (the `oid` claim of its ARM token).
    pub async fn object_id(&self) -> anyhow::Result<String> {
        let tok = self.token(ARM_SCOPE).await?;
        let payload = tok
            .split('.')
            .nth(1)
            .ok_or_else(|| anyhow!("the access token is not a JWT"))?;
        let bytes = coffer_crypto::b64::url_decode(payload.trim_end_matches('='))
            .ok_or_else(|| anyhow!("the access token is not a JWT"))?;
        let claims: Value = serde_json::from_slice(&bytes)?;
        claims["oid"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the access token has no oid claim"))
    }

    // ---- ARM ------------------------------------------------------------------------------

    /// An ARM request; `path` is relative to the management endpoint (starts with `/`) and
    /// carries its query (api-version). Returns the JSON body (Null when empty). Follows the
    /// long-running-operation headers (`Azure-AsyncOperation`, or 202 + `Location`).
    pub async fn arm(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.ep.management)
        };
        let token = self.token(ARM_SCOPE).await?;
        let mut req = self.http.request(method.clone(), &url).bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("contacting {}", self.ep.management))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(api_error(resp).await.into());
        }
        let async_op = header_str(&resp, "azure-asyncoperation");
        let location = header_str(&resp, "location");
        let v = json_body(resp).await?;
        if let Some(op) = async_op {
            self.poll_async(&op, &token).await?;
            if method == Method::PUT || method == Method::PATCH {
                return Box::pin(self.arm(Method::GET, path, None)).await;
            }
            return Ok(v);
        }
        if status == StatusCode::ACCEPTED
            && let Some(loc) = location
        {
            return self.poll_location(&loc, &token).await;
        }
        Ok(v)
    }

    async fn poll_async(&self, url: &str, token: &str) -> anyhow::Result<()> {
        for _ in 0..600 {
            let resp = self.http.get(url).bearer_auth(token).send().await?;
            if !resp.status().is_success() {
                return Err(api_error(resp).await.into());
            }
            let retry = retry_after(&resp);
            let v = json_body(resp).await?;
            match v["status"].as_str().unwrap_or("") {
                "Succeeded" => return Ok(()),
                "Failed" | "Canceled" => {
                    return Err(ApiError {
                        status: 200,
                        code: v["error"]["code"]
                            .as_str()
                            .unwrap_or("OperationFailed")
                            .into(),
                        message: v["error"]["message"]
                            .as_str()
                            .unwrap_or("the operation failed")
                            .into(),
                        request_id: None,
                    }
                    .into());
                }
                _ => tokio::time::sleep(retry).await,
            }
        }
        anyhow::bail!("the operation did not finish in time")
    }

    async fn poll_location(&self, url: &str, token: &str) -> anyhow::Result<Value> {
        for _ in 0..600 {
            let resp = self.http.get(url).bearer_auth(token).send().await?;
            let status = resp.status();
            if !status.is_success() {
                return Err(api_error(resp).await.into());
            }
            if status != StatusCode::ACCEPTED {
                return json_body(resp).await;
            }
            tokio::time::sleep(retry_after(&resp)).await;
        }
        anyhow::bail!("the operation did not finish in time")
    }

    /// Every item of an ARM list, following `nextLink`.
    pub async fn arm_list(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let v = self.arm(Method::GET, &p, None).await?;
            if let Some(a) = v["value"].as_array() {
                out.extend(a.iter().cloned());
            }
            next = v["nextLink"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string);
        }
        Ok(out)
    }

    pub fn subscription_path(&self) -> String {
        format!("/subscriptions/{}", self.ep.subscription_id)
    }

    // ---- Key Vault ------------------------------------------------------------------------

    /// `https://{vault}.{vault_dns_suffix}`.
    pub fn vault_url(&self, vault: &str) -> String {
        format!(
            "https://{}.{}",
            vault.to_ascii_lowercase(),
            self.ep.vault_dns_suffix
        )
    }

    fn vault_scope(&self) -> String {
        format!("https://{}/.default", self.ep.vault_dns_suffix)
    }

    /// A client for a vault host, connected to the main listener's address.
    async fn vault_client(&self, host: &str) -> anyhow::Result<reqwest::Client> {
        if let Ok(m) = self.vault_clients.lock()
            && let Some(c) = m.get(host)
        {
            return Ok(c.clone());
        }
        let mgmt = reqwest::Url::parse(&self.ep.management)?;
        let mhost = mgmt
            .host_str()
            .unwrap_or("127.0.0.1")
            .trim_matches(['[', ']']);
        let port = mgmt.port_or_known_default().unwrap_or(443);
        let addr: SocketAddr = tokio::net::lookup_host((mhost, port))
            .await
            .with_context(|| format!("resolving {mhost}"))?
            .next()
            .ok_or_else(|| anyhow!("{mhost} has no address"))?;
        let c = Self::builder(self.ca_pem.as_deref())?
            .resolve(host, addr)
            .build()?;
        if let Ok(mut m) = self.vault_clients.lock() {
            m.insert(host.to_string(), c.clone());
        }
        Ok(c)
    }

    /// A Key Vault data-plane request: `path` below the vault (e.g. `/keys/k/create`), the
    /// api-version is added. Answers the 401 challenge once (token for the scope it names).
    pub async fn vault(
        &self,
        vault: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let base = self.vault_url(vault);
        let url = if path.starts_with("https://") {
            path.to_string()
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{base}{path}{sep}api-version={VAULT_API}")
        };
        let host = reqwest::Url::parse(&url)?
            .host_str()
            .unwrap_or_default()
            .to_string();
        let client = self.vault_client(&host).await?;
        let mut scope = self.vault_scope();
        for attempt in 0..2 {
            let token = self.token(&scope).await?;
            let mut req = client.request(method.clone(), &url).bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("contacting the vault {base}"))?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let p = header_str(&resp, "www-authenticate")
                    .map(|h| challenge_params(&h))
                    .unwrap_or_default();
                let named = p.get("scope").cloned().or_else(|| {
                    p.get("resource")
                        .map(|r| format!("{}/.default", r.trim_end_matches('/')))
                });
                if let Some(s) = named.filter(|s| *s != scope) {
                    scope = s;
                    continue;
                }
            }
            if !resp.status().is_success() {
                return Err(api_error(resp).await.into());
            }
            return json_body(resp).await;
        }
        anyhow::bail!("the vault refused every token")
    }

    /// Every item of a Key Vault list, following `nextLink`.
    pub async fn vault_list(&self, vault: &str, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let v = self.vault(vault, Method::GET, &p, None).await?;
            if let Some(a) = v["value"].as_array() {
                out.extend(a.iter().cloned());
            }
            next = v["nextLink"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string);
        }
        Ok(out)
    }

    /// The storage bearer token (for `--auth-mode login`).
    pub async fn storage_token(&self) -> anyhow::Result<String> {
        self.token(STORAGE_SCOPE).await
    }
}

fn retry_after(resp: &Response) -> Duration {
    header_str(resp, "retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.clamp(1, 30)))
        .unwrap_or(Duration::from_secs(1))
}

async fn json_body(resp: Response) -> anyhow::Result<Value> {
    let b = resp.bytes().await?;
    if b.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&b).context("the server's answer is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge() {
        let p = challenge_params(
            "Bearer authorization=\"https://127.0.0.1:8443/t\", resource=\"https://vault.coffer.internal:8443\"",
        );
        assert_eq!(p["resource"], "https://vault.coffer.internal:8443");
        assert_eq!(p["authorization"], "https://127.0.0.1:8443/t");
    }

    #[test]
    fn xml() {
        let x = "<?xml version=\"1.0\"?><Error><Code>KeyVaultEncryptionKeyNotFound</Code><Message>a &amp; b\nRequestId:1</Message></Error>";
        assert_eq!(
            xml_text(x, "Code").as_deref(),
            Some("KeyVaultEncryptionKeyNotFound")
        );
        assert_eq!(
            xml_text(x, "Message").as_deref(),
            Some("a & b\nRequestId:1")
        );
        assert_eq!(xml_text(x, "Nope"), None);
    }
}
