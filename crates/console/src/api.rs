//! In-process calls to the wire handlers, as the signed-in user.
//!
//! Management and Key Vault requests carry a token issued to the user for that plane; Blob
//! requests are signed with the account's key, fetched by the user's own `listKeys` call
//! (what Azure's portal does with "Access key" authentication): a user without `listKeys`
//! cannot browse data, exactly as with `az storage blob --auth-mode key`.
use axum::body::Body;
use axum::response::Response;
use coffer_secret::SecretBytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use serde_json::Value;

use crate::{Console, Session, read_body};

pub const API_STORAGE: &str = "2023-05-01";
pub const API_KEYVAULT: &str = "2023-07-01";
pub const API_AUTHZ: &str = "2022-04-01";
pub const API_SUBS: &str = "2022-12-01";
pub const API_RG: &str = "2022-09-01";
pub const API_MSI: &str = "2023-01-31";
pub const API_KV_DATA: &str = "7.6";
pub const BLOB_VERSION: &str = "2025-01-05";

const MGMT_RESOURCE: &str = "https://management.core.windows.net/";
/// Largest JSON or XML answer the console reads from a handler.
const BODY_LIMIT: usize = 16 << 20;

/// Pages a list follows at most (bounded work per console page).
pub const MAX_PAGES: usize = 40;

/// The path and query of an absolute `nextLink`.
pub fn path_of(link: &str) -> String {
    let rest = link
        .strip_prefix("https://")
        .or_else(|| link.strip_prefix("http://"))
        .unwrap_or(link);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".into(),
    }
}

/// A handler's answer: its status and its JSON body (`Null` when empty or not JSON).
pub struct ApiResp {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiResp {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// "Code: message", from ARM's and Key Vault's `{"error": {...}}`.
    pub fn error(&self) -> String {
        let code = crate::s(&self.body, "/error/code");
        let msg = crate::s(&self.body, "/error/message");
        if code.is_empty() && msg.is_empty() {
            format!("The request failed with HTTP {}.", self.status.as_u16())
        } else {
            format!("{code}: {msg}")
        }
    }

    pub fn items(&self) -> Vec<Value> {
        self.body
            .get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

fn failed(msg: &str) -> ApiResp {
    ApiResp {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: serde_json::json!({"error": {"code": "ConsoleError", "message": msg}}),
    }
}

/// Percent-encode a path segment (RFC 3986 unreserved characters pass).
pub fn enc_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A blob name as a URL path: each segment encoded, `/` kept.
pub fn enc_blob_path(name: &str) -> String {
    name.split('/')
        .map(enc_segment)
        .collect::<Vec<_>>()
        .join("/")
}

impl Console {
    /// A token for the user and `resource`, reused while it has more than five minutes left
    /// (a fresh token per call would also churn the identity service's verified-token cache).
    fn bearer(&self, s: &Session, resource: &str) -> Option<HeaderValue> {
        let now = self.state.clock.now();
        let key = (s.oid().to_string(), resource.to_string());
        let cached = self.tokens.lock().ok().and_then(|m| {
            m.get(&key)
                .filter(|(_, exp)| exp - now > 300)
                .map(|(t, _)| t.clone())
        });
        let token = match cached {
            Some(t) => t,
            None => {
                let t = self.state.identity.issue(&s.principal, resource).ok()?;
                let v =
                    HeaderValue::from_str(&format!("Bearer {}", t.access_token.expose())).ok()?;
                if let Ok(mut m) = self.tokens.lock() {
                    if m.len() > 10_000 {
                        m.retain(|_, (_, exp)| *exp > now);
                    }
                    m.insert(key, (v.clone(), now + t.expires_in));
                }
                v
            }
        };
        let mut token = token;
        token.set_sensitive(true);
        Some(token)
    }

    fn request(
        &self,
        method: Method,
        host: &str,
        path: &str,
        auth: Option<HeaderValue>,
        body: Option<&Value>,
    ) -> Option<Request<Body>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .header(header::USER_AGENT, "Coffer-Console/0.1");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        if let Some(p) = crate::peer() {
            b = b.extension(p);
        }
        b.body(body).ok()
    }

    async fn json(resp: Response) -> ApiResp {
        let status = resp.status();
        let body = read_body(resp.into_body(), BODY_LIMIT)
            .await
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        ApiResp { status, body }
    }

    fn main_host(&self) -> String {
        self.state
            .endpoints
            .origin
            .trim_start_matches("https://")
            .to_string()
    }

    /// A Resource Manager request (`path` includes `api-version`).
    pub(crate) async fn arm(
        &self,
        s: &Session,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiResp {
        let Some(req) = self.request(
            method,
            &self.main_host(),
            path,
            self.bearer(s, MGMT_RESOURCE),
            body,
        ) else {
            return failed("the request could not be built");
        };
        Self::json(coffer_api::arm::handle(self.state.clone(), req).await).await
    }

    /// A Key Vault data-plane request to the vault at `vault_uri` (`path` without api-version).
    pub(crate) async fn vault(
        &self,
        s: &Session,
        vault_uri: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiResp {
        let host = vault_uri
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        let Some(name) = self
            .state
            .endpoints
            .vault_name_of_host(&host)
            .map(str::to_string)
        else {
            return failed("the vault is not served by this Coffer");
        };
        let path = if path.contains("api-version=") {
            path.to_string()
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}api-version={API_KV_DATA}")
        };
        let resource = self.state.endpoints.vault_resource();
        let Some(req) = self.request(method, &host, &path, self.bearer(s, &resource), body) else {
            return failed("the request could not be built");
        };
        Self::json(coffer_api::vault::handle(self.state.clone(), name, req).await).await
    }

    /// Every item of a Key Vault list, following `nextLink` (at most `MAX_PAGES` pages).
    pub(crate) async fn vault_all(
        &self,
        s: &Session,
        vault_uri: &str,
        path: &str,
    ) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut next = path.to_string();
        for _ in 0..MAX_PAGES {
            let r = self.vault(s, vault_uri, Method::GET, &next, None).await;
            if !r.ok() {
                return Err(r.error());
            }
            out.extend(r.items());
            match r.body.get("nextLink").and_then(Value::as_str) {
                Some(link) if !link.is_empty() => next = path_of(link),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The Resource Manager body of the resource `id` (from a form or query string, so
    /// checked as a resource path first), or the page to answer with: 400 for a bad id, the
    /// API's status and error otherwise. `nav`/`what` name the section and the resource kind.
    pub(crate) async fn resource(
        &self,
        s: &Session,
        id: &str,
        api_version: &str,
        nav: &str,
        what: &str,
    ) -> Result<Value, Response> {
        if !crate::valid_id(id) {
            return Err(crate::bad_request(&format!(
                "Not a {} id.",
                what.to_lowercase()
            )));
        }
        let r = self
            .arm(
                s,
                Method::GET,
                &format!("{id}?api-version={api_version}"),
                None,
            )
            .await;
        if r.ok() {
            Ok(r.body)
        } else {
            Err(crate::with_status(
                crate::page(s, nav, what, crate::alert(&r.error())),
                r.status,
            ))
        }
    }

    /// The first account key, by the user's own `listKeys` (RBAC-checked and audited).
    pub(crate) async fn account_key(
        &self,
        s: &Session,
        account_id: &str,
    ) -> Result<SecretBytes, String> {
        let r = self
            .arm(
                s,
                Method::POST,
                &format!("{account_id}/listKeys?api-version={API_STORAGE}"),
                None,
            )
            .await;
        if !r.ok() {
            return Err(format!(
                "{} To browse data the console uses the account's access key, which needs the \
                 Microsoft.Storage/storageAccounts/listKeys/action permission (Owner, Contributor \
                 or Storage Account Contributor).",
                r.error()
            ));
        }
        let key = crate::s(&r.body, "/keys/0/value");
        coffer_crypto::b64::std_decode(key)
            .map(SecretBytes::new)
            .ok_or_else(|| "the account key is unreadable".into())
    }

    /// A Blob request on `account`, signed with Shared Key. `rest` is the encoded path after
    /// the account (`/container[/blob]`), `query` the decoded query pairs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn blob(
        &self,
        s: &Session,
        account_id: &str,
        account: &str,
        method: Method,
        rest: &str,
        query: &[(&str, &str)],
        extra: &[(&str, String)],
        body: Body,
    ) -> Result<Response, String> {
        let key = self.account_key(s, account_id).await?;
        let path = format!("/{account}{rest}");
        let qs = serde_urlencoded::to_string(query).unwrap_or_default();
        let uri = if qs.is_empty() {
            path.clone()
        } else {
            format!("{path}?{qs}")
        };
        let host = self
            .state
            .endpoints
            .blob_origin
            .trim_start_matches("https://")
            .to_string();
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::HOST, host)
            .header(header::USER_AGENT, "Coffer-Console/0.1")
            .header("x-ms-version", BLOB_VERSION)
            .header(
                "x-ms-date",
                coffer_api::blob::httpdate(self.state.clock.now()),
            )
            .body(body)
            .map_err(|e| format!("the request could not be built: {e}"))?;
        if let Some(p) = crate::peer() {
            req.extensions_mut().insert(p);
        }
        for (k, v) in extra {
            let v = HeaderValue::from_str(v).map_err(|_| format!("bad header {k}"))?;
            let k = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("bad header {k}"))?;
            req.headers_mut().insert(k, v);
        }
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sts = coffer_api::sharedkey::string_to_sign(
            method.as_str(),
            req.headers(),
            account,
            &path,
            &pairs,
        );
        let sig = coffer_api::sharedkey::sign(key.expose(), &sts);
        let auth = HeaderValue::from_str(&format!("SharedKey {account}:{sig}"))
            .map_err(|_| "bad signature".to_string())?;
        req.headers_mut().insert(header::AUTHORIZATION, auth);
        Ok(coffer_api::blob::handle(self.state.clone(), req).await)
    }
}

/// `<Code>` and `<Message>` of a Blob XML error (or the status line).
pub async fn blob_error(resp: Response) -> String {
    let status = resp.status();
    let code = resp
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = read_body(resp.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let msg = body
        .split_once("<Message>")
        .and_then(|(_, r)| r.split_once("</Message>"))
        .map(|(m, _)| m.to_string())
        .unwrap_or_default();
    if code.is_empty() {
        format!("The request failed with HTTP {}.", status.as_u16())
    } else {
        format!("{code}: {msg}")
    }
}
