//! A minimal client for Coffer's own endpoints, acting as the local administrator described
//! by a data directory (`endpoints.json` + `admin-credentials.json`).
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

pub struct AdminClient {
    http: reqwest::Client,
    management: String,
    token: String,
}

pub fn random_password() -> anyhow::Result<String> {
    let mut buf = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .context("reading randomness")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn field<'a>(v: &'a Value, k: &str, file: &str) -> anyhow::Result<&'a str> {
    v.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{file} has no '{k}'"))
}

impl AdminClient {
    pub async fn from_data_dir(dir: &Path) -> anyhow::Result<Self> {
        let ep = read_json(&dir.join("endpoints.json"))
            .context("is the server running with this --data-dir?")?;
        let creds = read_json(&dir.join("admin-credentials.json"))
            .context("the administrator credentials file is needed for local administration")?;
        let ca = std::fs::read(field(&ep, "ca_cert", "endpoints.json")?)
            .context("reading the CA certificate")?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
            .build()?;
        let authority = field(&ep, "authority", "endpoints.json")?;
        let tenant = field(&ep, "tenant_id", "endpoints.json")?;
        let form = [
            ("grant_type", "client_credentials"),
            (
                "client_id",
                field(&creds, "client_id", "admin-credentials.json")?,
            ),
            (
                "client_secret",
                field(&creds, "client_secret", "admin-credentials.json")?,
            ),
            ("scope", "https://management.core.windows.net//.default"),
        ];
        let body = serde_urlencoded::to_string(form)?;
        let resp = http
            .post(format!("{authority}/{tenant}/oauth2/v2.0/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .context("contacting the server")?;
        let status = resp.status();
        let v: Value = resp.json().await.context("reading the token response")?;
        if !status.is_success() {
            bail!(
                "sign-in failed ({status}): {}",
                v.get("error_description")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
            );
        }
        Ok(Self {
            http,
            management: field(&ep, "management", "endpoints.json")?.to_string(),
            token: field(&v, "access_token", "the token response")?.to_string(),
        })
    }

    /// GET `path` with query pairs; the body as text (JSON or JSON Lines).
    pub async fn get_text(&self, path: &str, query: &[(String, String)]) -> anyhow::Result<String> {
        let qs = serde_urlencoded::to_string(query)?;
        let resp = self
            .http
            .get(format!("{}{path}?{qs}", self.management))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = resp.status();
        let text = String::from_utf8(resp.bytes().await?.to_vec())?;
        if !status.is_success() {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = v["error"]["code"].as_str().unwrap_or("Error");
            let msg = v["error"]["message"].as_str().unwrap_or("request failed");
            bail!("({code}) {msg}");
        }
        Ok(text)
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .put(format!("{}{path}", self.management))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = v["error"]["code"].as_str().unwrap_or("Error");
            let msg = v["error"]["message"].as_str().unwrap_or("request failed");
            bail!("({code}) {msg}");
        }
        Ok(v)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.management))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = v["error"]["code"].as_str().unwrap_or("Error");
            let msg = v["error"]["message"].as_str().unwrap_or("request failed");
            bail!("({code}) {msg}");
        }
        Ok(v)
    }
}
