//! A Blob service client for one storage account, path style (`{blob endpoint}/{account}/…`),
//! authenticated with the account key (Shared Key, the `az` default: the key comes from ARM
//! `listKeys`, or from `AZURE_STORAGE_KEY`) or with a bearer token (`--auth-mode login`, which
//! needs a Storage Blob Data role for the signed-in principal).
//!
//! Shared Key string-to-sign (what the server re-derives, `api::sharedkey`):
//! `VERB\n` + Content-Encoding, -Language, -Length (empty for 0), -MD5, -Type, Date,
//! If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range (each + `\n`), then
//! each `x-ms-*` header `name:value\n`, then `/{account}{path as sent}` and, for each query
//! parameter sorted by name, `\n{name}:{decoded value}`. This client only sends the fixed
//! `x-ms-*` headers below, whose plain sort equals the SDK collation.
use std::sync::Arc;

use anyhow::{Context, anyhow};
use aws_lc_rs::hmac;
use coffer_secret::SecretBytes;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::session::{Session, api_error, xml_text};

/// The x-ms-version sent.
pub const BLOB_VERSION: &str = "2026-10-06";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Shared Key with the account key (from ARM listKeys, or AZURE_STORAGE_KEY).
    Key,
    /// A bearer token of the signed-in principal (needs a Storage Blob Data role).
    Login,
}

enum Auth {
    Key(SecretBytes),
    Token(String),
}

/// A client for one account. Cheap to clone (parallel transfers clone it into tasks).
#[derive(Clone)]
pub struct BlobClient {
    http: reqwest::Client,
    /// `https://host:port/{account}`.
    base: String,
    pub account: String,
    auth: Arc<Auth>,
}

/// Percent-encode a path segment (or a blob name, keeping its `/`).
pub fn encode_path(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn now_rfc1123() -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

/// The Shared Key string to sign. `headers` hold lower-case names.
pub fn string_to_sign(
    method: &str,
    headers: &[(String, String)],
    account: &str,
    path: &str,
    query: &[(String, String)],
) -> String {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let mut s = format!("{method}\n");
    for name in [
        "content-encoding",
        "content-language",
        "content-length",
        "content-md5",
        "content-type",
        "date",
        "if-modified-since",
        "if-match",
        "if-none-match",
        "if-unmodified-since",
        "range",
    ] {
        let v = get(name);
        if !(name == "content-length" && v == "0") {
            s.push_str(v);
        }
        s.push('\n');
    }
    let mut xms: Vec<&(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .collect();
    xms.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in xms {
        s.push_str(&format!("{k}:{}\n", v.trim()));
    }
    s.push('/');
    s.push_str(account);
    s.push_str(path);
    let mut q: Vec<&(String, String)> = query.iter().collect();
    q.sort_by_key(|a| a.0.to_ascii_lowercase());
    for (k, v) in q {
        s.push_str(&format!("\n{}:{v}", k.to_ascii_lowercase()));
    }
    s
}

impl BlobClient {
    /// A client for `account`: finds the account key through ARM for `AuthMode::Key`.
    pub async fn connect(s: &Session, account: &str, mode: AuthMode) -> anyhow::Result<Self> {
        let auth = match mode {
            AuthMode::Login => Auth::Token(s.storage_token().await?),
            AuthMode::Key => match std::env::var("AZURE_STORAGE_KEY") {
                Ok(k) if !k.is_empty() => Auth::Key(SecretBytes::new(
                    coffer_crypto::b64::std_decode(k.trim())
                        .ok_or_else(|| anyhow!("AZURE_STORAGE_KEY is not base64"))?,
                )),
                _ => {
                    let id = crate::commands::storage::account_id(s, account, None).await?;
                    let keys = s
                        .arm(
                            Method::POST,
                            &format!(
                                "{id}/listKeys?api-version={}",
                                crate::commands::storage::STORAGE_API
                            ),
                            None,
                        )
                        .await
                        .context("listing the account keys (use --auth-mode login to sign blob requests with a token instead)")?;
                    let k = keys["keys"][0]["value"]
                        .as_str()
                        .ok_or_else(|| anyhow!("listKeys returned no key"))?;
                    Auth::Key(SecretBytes::new(
                        coffer_crypto::b64::std_decode(k)
                            .ok_or_else(|| anyhow!("the account key is not base64"))?,
                    ))
                }
            },
        };
        Ok(Self {
            http: s.http().clone(),
            base: format!("{}/{}", s.ep.blob, account),
            account: account.to_string(),
            auth: Arc::new(auth),
        })
    }

    /// A signed request. `container`/`blob` are raw names; `headers` lower-case names (the
    /// Content-Length of a body must be among them); `query` unencoded pairs.
    pub fn request(
        &self,
        method: Method,
        container: Option<&str>,
        blob: Option<&str>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
    ) -> anyhow::Result<RequestBuilder> {
        let mut path = String::new();
        if let Some(c) = container {
            path.push('/');
            path.push_str(&encode_path(c, false));
        }
        if let Some(b) = blob {
            path.push('/');
            path.push_str(&encode_path(b, true));
        }
        let qpairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let qs = serde_urlencoded::to_string(&qpairs)?;
        let url = if qs.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{qs}", self.base)
        };
        let parsed = reqwest::Url::parse(&url)?;
        let mut hs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        hs.push(("x-ms-date".into(), now_rfc1123()));
        hs.push(("x-ms-version".into(), BLOB_VERSION.into()));
        let mut rb = self.http.request(method.clone(), parsed.clone());
        for (k, v) in &hs {
            rb = rb.header(k.as_str(), v.as_str());
        }
        match self.auth.as_ref() {
            Auth::Token(t) => rb = rb.bearer_auth(t),
            Auth::Key(key) => {
                let sts =
                    string_to_sign(method.as_str(), &hs, &self.account, parsed.path(), &qpairs);
                let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
                let sig = coffer_crypto::b64::std_encode(hmac::sign(&k, sts.as_bytes()).as_ref());
                rb = rb.header("authorization", format!("SharedKey {}:{sig}", self.account));
            }
        }
        Ok(rb)
    }

    /// Send, and turn an error answer into an [`ApiError`].
    pub async fn send(rb: RequestBuilder) -> anyhow::Result<Response> {
        let resp = rb.send().await.context("contacting the blob service")?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await.into());
        }
        Ok(resp)
    }

    pub async fn create_container(&self, name: &str) -> anyhow::Result<bool> {
        let rb = self.request(
            Method::PUT,
            Some(name),
            None,
            &[("restype", "container".into())],
            &[("content-length", "0".into())],
        )?;
        match Self::send(rb).await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, "ContainerAlreadyExists") => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_container(&self, name: &str) -> anyhow::Result<bool> {
        let rb = self.request(
            Method::DELETE,
            Some(name),
            None,
            &[("restype", "container".into())],
            &[],
        )?;
        match Self::send(rb).await {
            Ok(_) => Ok(true),
            Err(e) if is_code(&e, "ContainerNotFound") => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn list_containers(&self, prefix: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let mut q = vec![("comp", "list".to_string())];
            if let Some(p) = prefix {
                q.push(("prefix", p.to_string()));
            }
            if !marker.is_empty() {
                q.push(("marker", marker.clone()));
            }
            let rb = self.request(Method::GET, None, None, &q, &[])?;
            let xml = Self::send(rb).await?.text().await?;
            for c in elements(&xml, "Container") {
                out.push(json!({
                    "name": xml_text(c, "Name").unwrap_or_default(),
                    "properties": {
                        "lastModified": xml_text(c, "Last-Modified"),
                        "etag": xml_text(c, "Etag"),
                    }
                }));
            }
            marker = xml_text(&xml, "NextMarker").unwrap_or_default();
            if marker.is_empty() {
                return Ok(out);
            }
        }
    }

    pub async fn list_blobs(
        &self,
        container: &str,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        limit: Option<usize>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let mut q = vec![
                ("restype", "container".to_string()),
                ("comp", "list".to_string()),
            ];
            if let Some(p) = prefix {
                q.push(("prefix", p.to_string()));
            }
            if let Some(d) = delimiter {
                q.push(("delimiter", d.to_string()));
            }
            if !marker.is_empty() {
                q.push(("marker", marker.clone()));
            }
            let rb = self.request(Method::GET, Some(container), None, &q, &[])?;
            let xml = Self::send(rb).await?.text().await?;
            for p in elements(&xml, "BlobPrefix") {
                out.push(json!({"name": listed_name(p), "isPrefix": true}));
            }
            for b in elements(&xml, "Blob") {
                let len = xml_text(b, "Content-Length").and_then(|l| l.parse::<u64>().ok());
                out.push(json!({
                    "name": listed_name(b),
                    "container": container,
                    "properties": {
                        "contentLength": len,
                        "lastModified": xml_text(b, "Last-Modified"),
                        "creationTime": xml_text(b, "Creation-Time"),
                        "etag": xml_text(b, "Etag"),
                        "blobType": xml_text(b, "BlobType"),
                        "serverEncrypted": xml_text(b, "ServerEncrypted").map(|v| v == "true"),
                        "contentSettings": {
                            "contentType": xml_text(b, "Content-Type").filter(|s| !s.is_empty()),
                            "contentMd5": xml_text(b, "Content-MD5").filter(|s| !s.is_empty()),
                        },
                    }
                }));
                if limit.is_some_and(|l| out.len() >= l) {
                    return Ok(out);
                }
            }
            marker = xml_text(&xml, "NextMarker").unwrap_or_default();
            if marker.is_empty() {
                return Ok(out);
            }
        }
    }

    /// HEAD of a blob: (size, etag).
    pub async fn properties(
        &self,
        container: &str,
        blob: &str,
    ) -> anyhow::Result<(u64, String, Option<String>)> {
        let rb = self.request(Method::HEAD, Some(container), Some(blob), &[], &[])?;
        let resp = match Self::send(rb).await {
            Ok(r) => r,
            Err(e) => {
                // A HEAD answer carries the error code but no message: ask again with a
                // one-byte GET to show the service's message.
                let rb = self.request(
                    Method::GET,
                    Some(container),
                    Some(blob),
                    &[],
                    &[("x-ms-range", "bytes=0-0".into())],
                )?;
                return Err(match Self::send(rb).await {
                    Err(detailed) if detailed.downcast_ref::<ApiError>().is_some() => detailed,
                    _ => e,
                });
            }
        };
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let size = h("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("the blob's properties have no Content-Length"))?;
        Ok((size, h("etag").unwrap_or_default(), h("content-type")))
    }

    pub async fn delete_blob(&self, container: &str, blob: &str) -> anyhow::Result<()> {
        let rb = self.request(Method::DELETE, Some(container), Some(blob), &[], &[])?;
        Self::send(rb).await?;
        Ok(())
    }
}

/// Whether an error is an [`ApiError`] with this code.
pub fn is_code(e: &anyhow::Error, code: &str) -> bool {
    e.chain()
        .find_map(|c| c.downcast_ref::<ApiError>())
        .is_some_and(|a| a.code == code)
}

/// The inner text of each `<tag>…</tag>` element (not nested in itself).
/// A listed blob's or prefix's name: `<Name>` text, or percent-decoded when the service
/// sent it `Encoded="true"` (a name holding characters XML cannot carry).
fn listed_name(el: &str) -> String {
    const ENCODED: &str = "<Name Encoded=\"true\">";
    if let Some(i) = el.find(ENCODED) {
        let rest = &el[i + ENCODED.len()..];
        if let Some(j) = rest.find("</Name>") {
            return percent_decode(&rest[..j]);
        }
    }
    xml_text(el, "Name").unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(
            encode_path("dir/file one+.txt", true),
            "dir/file%20one%2B.txt"
        );
        assert_eq!(encode_path("a/b", false), "a%2Fb");
        assert_eq!(encode_path("é", true), "%C3%A9");
    }

    #[test]
    fn string_to_sign_matches_the_sdk_example() {
        // AZURE-CLIENTS.md: Put Blob as the Python SDK signs it (metadata left out).
        let h = vec![
            ("content-length".to_string(), "5".to_string()),
            (
                "content-type".to_string(),
                "application/octet-stream".to_string(),
            ),
            ("if-none-match".to_string(), "*".to_string()),
            ("x-ms-version".to_string(), "2026-10-06".to_string()),
            ("x-ms-blob-type".to_string(), "BlockBlob".to_string()),
            (
                "x-ms-date".to_string(),
                "Sun, 29 Nov 2026 09:22:10 GMT".to_string(),
            ),
        ];
        let s = string_to_sign(
            "PUT",
            &h,
            "devstoreaccount1",
            "/devstoreaccount1/cont/dir/file%20one.txt",
            &[
                ("comp".into(), "block".into()),
                ("blockid".into(), "AA==".into()),
            ],
        );
        assert_eq!(
            s,
            "PUT\n\n\n5\n\napplication/octet-stream\n\n\n\n*\n\n\nx-ms-blob-type:BlockBlob\nx-ms-date:Sun, 29 Nov 2026 09:22:10 GMT\nx-ms-version:2026-10-06\n/devstoreaccount1/devstoreaccount1/cont/dir/file%20one.txt\nblockid:AA==\ncomp:block"
        );
        assert!(now_rfc1123().ends_with(" GMT"));
    }

    #[test]
    fn xml_elements() {
        let x = "<Blobs><Blob><Name>a</Name></Blob><Blob><Name>b&amp;c</Name></Blob></Blobs><NextMarker/>";
        let e = elements(x, "Blob");
        assert_eq!(e.len(), 2);
        assert_eq!(xml_text(e[1], "Name").as_deref(), Some("b&c"));
        assert_eq!(xml_text(x, "NextMarker"), None);
        let e = "<Blob><Name Encoded=\"true\">a%EF%BF%BEb%25</Name></Blob>";
        assert_eq!(listed_name(e), "a\u{FFFE}b%");
    }
}
