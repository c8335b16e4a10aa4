//! The wire protocols: one module per protocol, each parsing requests into typed operations,
//! calling the domain, and mapping domain errors to that protocol's wire errors in one place.
//!
//! - [`identity`]: Entra-shaped token service, OIDC discovery, JWKS, cloud metadata.
//! - [`arm`]: Azure Resource Manager (management plane) and Coffer's admin endpoints.
//! - [`vault`]: the Key Vault data plane (`{vault}.vault.{suffix}`).
//! - [`blob`]: the Blob data plane listener.
//! - [`ops`]: health and readiness.
//!
//! API modules never name a storage backend: they see the domain's services only.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use coffer_domain::audit::AuditSink;
use coffer_domain::blob::BlobService;
use coffer_domain::clock::Clock;
use coffer_domain::identity::IdentityService;
use coffer_domain::keyvault::KeyVaultService;
use coffer_domain::mgmt::MgmtService;

pub mod arm;
pub mod blob;
pub mod body;
pub mod identity;
pub mod metrics;
pub mod ops;
pub mod sas;
pub mod sharedkey;
pub mod throttle;
pub mod vault;

/// Public names and origins the server answers to.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// `https://127.0.0.1:P`: identity, management, console, ops.
    pub origin: String,
    /// `https://127.0.0.1:Q`: blob (path style).
    pub blob_origin: String,
    /// DNS suffix, e.g. `coffer.internal`.
    pub dns_suffix: String,
    /// Port of the main listener (vault hosts are served there).
    pub main_port: u16,
    /// Port of the blob listener.
    pub blob_port: u16,
}

impl Endpoints {
    fn with_port(host: &str, port: u16) -> String {
        if port == 443 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        }
    }
    /// `vault.{suffix}[:port]`.
    pub fn vault_dns_suffix(&self) -> String {
        Self::with_port(&format!("vault.{}", self.dns_suffix), self.main_port)
    }
    /// `blob.{suffix}[:port]`.
    pub fn blob_dns_suffix(&self) -> String {
        Self::with_port(&format!("blob.{}", self.dns_suffix), self.blob_port)
    }
    /// The Key Vault resource (challenge `resource=` and token audience).
    pub fn vault_resource(&self) -> String {
        format!("https://{}", self.vault_dns_suffix())
    }
    /// The vault name when `host` is `{vault}.vault.{suffix}[:port]`.
    pub fn vault_name_of_host<'a>(&self, host: &'a str) -> Option<&'a str> {
        let h = strip_port(host);
        let suffix = format!(".vault.{}", self.dns_suffix);
        let n = h.len().checked_sub(suffix.len())?;
        if n > 0 && h[n..].eq_ignore_ascii_case(&suffix) && !h[..n].contains('.') {
            Some(&h[..n])
        } else {
            None
        }
    }
    /// The account name when `host` is `{account}.blob.{suffix}[:port]`.
    pub fn account_of_host<'a>(&self, host: &'a str) -> Option<&'a str> {
        let h = strip_port(host);
        let suffix = format!(".blob.{}", self.dns_suffix);
        let n = h.len().checked_sub(suffix.len())?;
        if n > 0 && h[n..].eq_ignore_ascii_case(&suffix) && !h[..n].contains('.') {
            Some(&h[..n])
        } else {
            None
        }
    }
}

/// `host[:port]` → `host` (IPv6 literals in brackets keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..=h.len()])
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

pub struct AppState {
    pub identity: Arc<IdentityService>,
    pub mgmt: Arc<MgmtService>,
    pub keyvault: Arc<KeyVaultService>,
    pub blob: Arc<BlobService>,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<Clock>,
    pub endpoints: Endpoints,
    /// Faults a test can inject (only on a server started with --test-clock).
    pub faults: Arc<Faults>,
    /// Seconds audit records are kept (None: forever).
    pub audit_retention: Option<i64>,
    pub metrics: Arc<metrics::Metrics>,
    pub events: Arc<coffer_domain::events::EventService>,
    /// Per-vault throttling in Azure's style, when turned on (`--vault-throttle`).
    pub throttle: Option<Arc<throttle::Throttle>>,
}

/// Injected faults, for tests of failure behaviour.
#[derive(Default)]
pub struct Faults {
    pub audit_fails: std::sync::atomic::AtomicBool,
}

/// The audit sink every protocol writes through: the store's, unless a test made it fail.
pub struct GuardedAudit {
    pub inner: Arc<dyn AuditSink>,
    pub faults: Arc<Faults>,
    pub metrics: Arc<metrics::Metrics>,
}

impl GuardedAudit {
    fn check(&self) -> coffer_domain::Result<()> {
        self.metrics.audit_records.inc();
        if self
            .faults
            .audit_fails
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.metrics.audit_failures.inc();
            return Err(coffer_domain::DomainError::Internal(
                "the audit log is unavailable (injected fault)".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl AuditSink for GuardedAudit {
    async fn record(&self, rec: &coffer_domain::audit::AuditRecord) -> coffer_domain::Result<()> {
        self.check()?;
        self.inner.record(rec).await
    }
    async fn record_queued(
        &self,
        rec: &coffer_domain::audit::AuditRecord,
    ) -> coffer_domain::Result<()> {
        self.check()?;
        self.inner.record_queued(rec).await
    }
    async fn query(
        &self,
        f: &coffer_domain::audit::AuditFilter,
    ) -> coffer_domain::Result<Vec<serde_json::Value>> {
        self.inner.query(f).await
    }
    async fn prune(&self, before: i64) -> coffer_domain::Result<u64> {
        self.inner.prune(before).await
    }
}

/// The client's address, attached to each request by the listener.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The client's `User-Agent` for audit records (clipped; never a secret).
pub fn user_agent(h: &http::HeaderMap) -> String {
    h.get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect()
}

pub fn peer_ip(req: &Request) -> String {
    req.extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip().to_string())
        .unwrap_or_default()
}

fn host_of(req: &Request) -> String {
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// The main listener: routes by `Host` to a vault, else by path to identity, management,
/// admin and ops.
pub async fn main_dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let start = std::time::Instant::now();
    let metrics = state.metrics.clone();
    let (plane, resp) = route_main(state, req).await;
    record(&metrics, plane, &resp, start);
    resp
}

async fn route_main(state: Arc<AppState>, req: Request) -> (&'static str, Response) {
    let host = host_of(&req);
    if let Some(vault) = state
        .endpoints
        .vault_name_of_host(&host)
        .map(str::to_string)
    {
        return ("vault", vault::handle(state, vault, req).await);
    }
    let path = req.uri().path().to_string();
    if path == "/metrics" && req.method() == http::Method::GET {
        let headers = req.headers().clone();
        return ("ops", ops::metrics(&state, &headers).await);
    }
    if path == "/readyz" && req.method() == http::Method::GET {
        return ("ops", ops::readyz(&state).await);
    }
    if let Some(resp) = ops::route(&state, &req, &path) {
        return ("ops", resp);
    }
    if let Some(endpoint) = identity::Endpoint::parse(req.method(), &path) {
        return ("identity", identity::handle(state, endpoint, req).await);
    }
    ("management", arm::handle(state, req).await)
}

fn record(m: &metrics::Metrics, plane: &'static str, resp: &Response, start: std::time::Instant) {
    let op = resp
        .extensions()
        .get::<metrics::OpName>()
        .map(|o| o.0.as_str())
        .unwrap_or("unknown");
    m.request(plane, op, resp.status().as_u16(), start.elapsed());
}

/// Name the operation a response answered (for the request metrics).
pub(crate) fn named(mut resp: Response, op: impl Into<String>) -> Response {
    resp.extensions_mut().insert(metrics::OpName(op.into()));
    resp
}

/// The blob listener: host-style or path-style accounts.
pub async fn blob_dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let start = std::time::Instant::now();
    let metrics = state.metrics.clone();
    let mut resp = blob::handle(state, req).await;
    record(&metrics, "blob", &resp, start);
    // Blob content is the users' data, served from the console's host (another port): a
    // browser must never run it as a page of this site (no script, no cookies, no sniffing).
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Due background work: purge soft-deleted vaults and keys past their date, rotate keys whose
/// rotation policy says so. Run periodically, and at once after the test clock moves.
pub async fn run_due_work(state: &AppState) {
    match state.mgmt.purge_due_vaults().await {
        Ok(n) if n > 0 => tracing::info!(purged = n, "purged deleted vaults past their date"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "scheduled vault purge failed"),
    }
    match state.blob.collect_garbage().await {
        Ok((e, c)) if e + c > 0 => tracing::info!(
            expired_blocks = e,
            collected_objects = c,
            "blob garbage collection"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "blob garbage collection failed"),
    }
    if let Some(keep) = state.audit_retention {
        match state.audit.prune(state.clock.now() - keep).await {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "audit retention"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "audit retention failed"),
        }
    }
    if let Err(e) = state.mgmt.cmk_poll_due().await {
        tracing::error!(error = %e, "customer-managed key poll failed");
    }
    match state.events.scan_key_expiry(&state.keyvault).await {
        Ok(n) if n > 0 => tracing::info!(events = n, "key expiry events"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "key expiry scan failed"),
    }
    if let Err(e) = state.events.deliver_due().await {
        tracing::error!(error = %e, "webhook retries failed");
    }
    match state.keyvault.run_due().await {
        Ok((p, r)) if p + r > 0 => tracing::info!(purged = p, rotated = r, "key maintenance"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "scheduled key maintenance failed"),
    }
}

pub fn main_router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .fallback(main_dispatch)
        .with_state(state)
}

pub fn blob_router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .fallback(blob_dispatch)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoints {
        Endpoints {
            origin: "https://127.0.0.1:8443".into(),
            blob_origin: "https://127.0.0.1:10000".into(),
            dns_suffix: "coffer.internal".into(),
            main_port: 8443,
            blob_port: 10000,
        }
    }

    #[test]
    fn hosts() {
        let e = ep();
        assert_eq!(
            e.vault_name_of_host("kv1.vault.coffer.internal:8443"),
            Some("kv1")
        );
        assert_eq!(
            e.vault_name_of_host("KV1.VAULT.coffer.internal"),
            Some("KV1")
        );
        assert_eq!(e.vault_name_of_host("vault.coffer.internal"), None);
        assert_eq!(e.vault_name_of_host("a.b.vault.coffer.internal"), None);
        assert_eq!(e.vault_name_of_host("127.0.0.1:8443"), None);
        assert_eq!(
            e.account_of_host("acct.blob.coffer.internal:10000"),
            Some("acct")
        );
        assert_eq!(e.vault_dns_suffix(), "vault.coffer.internal:8443");
        assert_eq!(e.vault_resource(), "https://vault.coffer.internal:8443");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
