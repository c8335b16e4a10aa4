//! The web console at `/console`: server-rendered pages (maud templates compiled into the
//! binary, one bundled stylesheet and script, no CDN).
//!
//! The console holds no authority of its own. A signed-in user's actions are requests to the
//! same wire handlers every client uses — Resource Manager, the Key Vault data plane and the
//! Blob API — made in-process with a token issued to that user, so RBAC, validation and audit
//! are exactly what the SDKs and `az` get, and a Reader can do in the console only what a
//! Reader can do with `az`.
//!
//! Security: sign-in with a console user's name and password (Argon2id), rate-limited per user
//! name and per client address; a random session id in a `__Host-` cookie (HttpOnly, Secure,
//! SameSite=Strict), stored server-side only as its SHA-256; a per-session CSRF token checked in
//! constant time on every POST, plus an Origin check; a strict Content-Security-Policy.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Query, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use coffer_api::AppState;
use coffer_domain::model::Principal;
use coffer_secret::SecretString;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

mod api;
mod audit;
mod iam;
mod pem;
mod storage;
mod vaults;

/// Checks the audit chain on demand (the server wires the store and the chain keys).
#[async_trait::async_trait]
pub trait ChainVerifier: Send + Sync {
    async fn verify(&self) -> Result<coffer_domain::audit::chain::Verdict, String>;
}

const SESSION_COOKIE: &str = "__Host-coffer-session";
const PRESESSION_COOKIE: &str = "__Host-coffer-signin";
const SESSION_IDLE: Duration = Duration::from_secs(60 * 60);
const SESSION_MAX: Duration = Duration::from_secs(8 * 60 * 60);
const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins allowed before a user name is locked out.
const FREE_FAILURES: u32 = 5;
/// Failed sign-ins allowed from one client address (many users may share one, e.g. a proxy).
const FREE_FAILURES_ADDR: u32 = 50;
const LOCKOUT_BASE: Duration = Duration::from_secs(30);
const LOCKOUT_MAX: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten after this long without one (so the lockout keeps growing for a
/// patient attacker instead of starting over every `LOCKOUT_MAX`).
const FAILURE_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);
/// Sessions one user may hold at once (the oldest is closed when a new one opens).
const SESSIONS_PER_USER: usize = 16;

pub struct Console {
    pub(crate) state: Arc<AppState>,
    verifier: Arc<dyn ChainVerifier>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    limiter: Mutex<Limiter>,
    /// Tokens issued to signed-in users, by (object id, resource): (header, expiry).
    tokens: Mutex<HashMap<(String, String), (HeaderValue, i64)>>,
}

tokio::task_local! {
    /// The browser's address while a console request is served (for the audit records of the
    /// API calls it makes).
    static PEER: Option<coffer_api::PeerAddr>;
}

pub(crate) fn peer() -> Option<coffer_api::PeerAddr> {
    PEER.try_with(|p| *p).ok().flatten()
}

#[derive(Clone)]
pub(crate) struct Session {
    pub principal: Principal,
    pub username: String,
    pub csrf: String,
    created: Instant,
    last: Instant,
}

impl Session {
    pub fn oid(&self) -> &str {
        &self.principal.object_id
    }
}

/// Sign-in attempts by key (a user name or a client address). An attempt counts as a failure
/// from the moment it starts (so a burst of parallel guesses cannot all pass the check before
/// the first is counted); a success takes it back. After `free` failures each further one
/// doubles the lockout, up to `LOCKOUT_MAX`.
#[derive(Default)]
struct Limiter {
    failures: HashMap<String, Failures>,
}

struct Failures {
    count: u32,
    last: Instant,
    /// Whether a refusal during the current lockout was already audited.
    refusal_audited: bool,
}

impl Limiter {
    fn locked_for(&self, key: &str, free: u32, now: Instant) -> Option<Duration> {
        let f = self.failures.get(key)?;
        if f.count < free || now.duration_since(f.last) >= FAILURE_MEMORY {
            return None;
        }
        let exp = (f.count - free).min(10);
        let lock = (LOCKOUT_BASE * 2u32.pow(exp)).min(LOCKOUT_MAX);
        let until = f.last + lock;
        (until > now).then(|| until - now)
    }
    /// Count an attempt as a failure until it succeeds.
    fn attempt(&mut self, key: &str, now: Instant) {
        if self.failures.len() > 100_000 {
            self.failures
                .retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
        }
        let f = self.failures.entry(key.to_string()).or_insert(Failures {
            count: 0,
            last: now,
            refusal_audited: false,
        });
        if now.duration_since(f.last) >= FAILURE_MEMORY {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        f.refusal_audited = false;
    }
    /// The attempt succeeded: a user name starts over; an address only gets this attempt back
    /// (one valid account must not reset the limit of a whole address).
    fn succeeded(&mut self, key: &str, forget: bool) {
        if forget {
            self.failures.remove(key);
        } else if let Some(f) = self.failures.get_mut(key) {
            f.count = f.count.saturating_sub(1);
        }
    }
    /// Whether a refusal while `key` is locked should be audited (the first of each lockout:
    /// refusals cost no Argon2 work, so auditing each would let anyone flood the log).
    fn audit_refusal(&mut self, key: &str) -> bool {
        match self.failures.get_mut(key) {
            Some(f) if !f.refusal_audited => {
                f.refusal_audited = true;
                true
            }
            _ => false,
        }
    }
}

/// The address a client's failures are counted under: IPv6 by /64 (one host usually has a
/// whole /64 to rotate through).
fn address_key(ip: Option<std::net::IpAddr>) -> String {
    match ip {
        Some(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(std::net::IpAddr::V6(v6)) => format!("ip:{}", v6.to_canonical()),
        Some(ip) => format!("ip:{ip}"),
        None => "ip:unknown".into(),
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b).as_ref());
    out
}

fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn ct_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn random_token() -> String {
    coffer_crypto::random::token().unwrap_or_default()
}

/// Compare a presented token with the expected one; an empty token never matches.
fn token_ok(presented: &str, expected: &str) -> bool {
    !expected.is_empty() && ct_eq(presented, expected)
}

pub(crate) type FormData = HashMap<String, String>;

impl Console {
    pub fn new(state: Arc<AppState>, verifier: Arc<dyn ChainVerifier>) -> Arc<Self> {
        Arc::new(Self {
            state,
            verifier,
            sessions: Mutex::new(HashMap::new()),
            limiter: Mutex::new(Limiter::default()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The signed-in session of a request (sliding idle timeout, absolute maximum).
    pub(crate) fn session(&self, h: &HeaderMap) -> Option<Session> {
        let id = cookie(h, SESSION_COOKIE)?;
        let key = sha256(id.as_bytes());
        let now = Instant::now();
        let mut m = self.sessions.lock().ok()?;
        let s = m.get_mut(&key)?;
        if now.duration_since(s.last) > SESSION_IDLE || now.duration_since(s.created) > SESSION_MAX
        {
            m.remove(&key);
            return None;
        }
        s.last = now;
        Some(s.clone())
    }

    fn start_session(&self, mut principal: Principal, username: String) -> Option<String> {
        // The session keeps who signed in, never their verifiers.
        principal.password_verifier = None;
        principal.secret_verifier = None;
        let (id, csrf) = (random_token(), random_token());
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut m = self.sessions.lock().ok()?;
        // One user cannot take every slot: past the per-user cap, their oldest session closes.
        let mut mine: Vec<([u8; 32], Instant)> = m
            .iter()
            .filter(|(_, s)| s.principal.object_id == principal.object_id)
            .map(|(k, s)| (*k, s.created))
            .collect();
        if mine.len() >= SESSIONS_PER_USER {
            mine.sort_by_key(|(_, t)| *t);
            for (k, _) in &mine[..=mine.len() - SESSIONS_PER_USER] {
                m.remove(k);
            }
        }
        if m.len() >= MAX_SESSIONS {
            m.retain(|_, s| {
                now.duration_since(s.last) <= SESSION_IDLE
                    && now.duration_since(s.created) <= SESSION_MAX
            });
            if m.len() >= MAX_SESSIONS {
                return None;
            }
        }
        m.insert(
            sha256(id.as_bytes()),
            Session {
                principal,
                username,
                csrf,
                created: now,
                last: now,
            },
        );
        Some(id)
    }

    fn end_session(&self, h: &HeaderMap) {
        if let Some(id) = cookie(h, SESSION_COOKIE)
            && let Ok(mut m) = self.sessions.lock()
        {
            m.remove(&sha256(id.as_bytes()));
        }
    }

    /// Whether the user holds `action` at `scope` (to show or disable controls; the API
    /// decides again when the action is taken).
    pub(crate) async fn can(&self, s: &Session, action: &str, data: bool, scope: &str) -> bool {
        let kind = if data {
            coffer_domain::rbac::ActionKind::Data
        } else {
            coffer_domain::rbac::ActionKind::Control
        };
        self.state
            .mgmt
            .rbac()
            .is_allowed(s.oid(), action, kind, scope)
            .await
            .unwrap_or(false)
    }

    /// A POST is accepted only with the session's CSRF token and, when the browser says where
    /// it comes from, from this origin (`Origin: null` — a sandboxed or privacy-stripped
    /// context — is refused; pages are served with `Referrer-Policy: same-origin` so the
    /// browser names this origin on its own forms).
    pub(crate) fn check_post(&self, h: &HeaderMap, s: &Session, token: Option<&str>) -> bool {
        let origin_ok = match h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(o) => self.is_own_origin(o),
        };
        let token = token.or_else(|| h.get("x-csrf-token").and_then(|v| v.to_str().ok()));
        origin_ok && token.is_some_and(|t| token_ok(t, &s.csrf))
    }

    /// Whether a browser's `Origin` names the console (browsers drop the default port).
    fn is_own_origin(&self, o: &str) -> bool {
        let ours = self.state.endpoints.origin.as_str();
        o.eq_ignore_ascii_case(ours)
            || ours
                .strip_suffix(":443")
                .is_some_and(|bare| o.eq_ignore_ascii_case(bare))
    }
}

/// Every console response: no caching, no framing, no sniffing, scripts and styles only from
/// this origin.
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// The console lives on the bare origin only: `/console` on a vault host is that vault's path.
async fn hardened(
    State(c): State<Arc<Console>>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if c.state.endpoints.vault_name_of_host(host).is_some() {
        // Nesting stripped `/console`: the vault sees the path as sent.
        if let Some(orig) = req.extensions().get::<axum::extract::OriginalUri>() {
            *req.uri_mut() = orig.0.clone();
        }
        return coffer_api::main_dispatch(State(c.state.clone()), req).await;
    }
    let peer = req.extensions().get::<coffer_api::PeerAddr>().copied();
    PEER.scope(peer, async move { harden(next.run(req).await) })
        .await
}

pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route("/overview", get(audit::overview))
        .route("/audit", get(audit::audit_page))
        .route("/audit/verify", post(audit::verify))
        .route("/monitoring", get(audit::monitoring))
        .route("/vaults", get(vaults::list).post(vaults::create))
        .route("/vault", get(vaults::show))
        .route("/vault/keys", post(vaults::key_create))
        .route("/vault/key", get(vaults::key_show).post(vaults::key_action))
        .route("/api/keys", get(vaults::api_keys))
        .route("/storage", get(storage::list).post(storage::create))
        .route("/account", get(storage::show))
        .route(
            "/account/encryption",
            get(storage::encryption).post(storage::encryption_save),
        )
        .route("/account/containers", post(storage::container_action))
        .route("/container", get(storage::container))
        .route("/container/upload", post(storage::upload))
        .route("/container/download", get(storage::download))
        .route("/container/delete", post(storage::blob_delete))
        .route("/iam", get(iam::page).post(iam::action))
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            hardened,
        ))
        .with_state(console)
}

async fn root(State(c): State<Arc<Console>>, h: HeaderMap) -> Response {
    match c.session(&h) {
        Some(_) => Redirect::to("/console/overview").into_response(),
        None => Redirect::to("/console/signin").into_response(),
    }
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/console.js"),
    )
        .into_response()
}

pub(crate) fn html_response(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// Navigation: (label, href, key).
const NAV: [(&str, &str, &str); 6] = [
    ("Overview", "/console/overview", "overview"),
    ("Key vaults", "/console/vaults", "vaults"),
    ("Storage accounts", "/console/storage", "storage"),
    ("Access control (IAM)", "/console/iam", "iam"),
    ("Audit log", "/console/audit", "audit"),
    ("Monitoring", "/console/monitoring", "monitoring"),
];

pub(crate) fn layout(s: &Session, active: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Coffer" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                header.top {
                    span.brand { "Coffer" }
                    nav aria-label="Main" {
                        @for (label, href, key) in NAV {
                            @if key == active {
                                a href=(href) aria-current="page" { (label) }
                            } @else {
                                a href=(href) { (label) }
                            }
                        }
                    }
                    form.signout method="post" action="/console/signout" {
                        span.user { (s.username) }
                        (csrf(s))
                        button type="submit" { "Sign out" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub(crate) fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

pub(crate) fn page(s: &Session, active: &str, title: &str, body: Markup) -> Response {
    html_response(StatusCode::OK, layout(s, active, title, body))
}

/// An inline error: Azure's code and message, and what to do about it.
pub(crate) fn alert(msg: &str) -> Markup {
    html! { div.alert role="alert" { (msg) } }
}

pub(crate) fn notice(msg: &str) -> Markup {
    html! { div.notice role="status" { (msg) } }
}

/// A resource id taken from a form or query string: `/subscriptions/…` with no query,
/// fragment, dot or empty segments, so it names a resource path and nothing else.
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() <= 1024
        && id.starts_with("/subscriptions/")
        && !id.contains(['?', '#', '%', '\\'])
        && id[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A page with `status` (the status an API call answered with).
pub(crate) fn with_status(mut r: Response, status: StatusCode) -> Response {
    *r.status_mut() = status;
    r
}

pub(crate) fn bad_request(msg: &str) -> Response {
    with_status(forbidden(msg), StatusCode::BAD_REQUEST)
}

pub(crate) fn signin_redirect() -> Response {
    Redirect::to("/console/signin").into_response()
}

pub(crate) fn forbidden(msg: &str) -> Response {
    html_response(
        StatusCode::FORBIDDEN,
        html! { (DOCTYPE) html lang="en" { head { meta charset="utf-8"; title { "Forbidden — Coffer" } } body { main { h1 { "Forbidden" } (alert(msg)) } } } },
    )
}

/// The session of a request, or the sign-in page.
macro_rules! signed_in {
    ($c:expr, $h:expr) => {
        match $c.session(&$h) {
            Some(s) => s,
            None => return crate::signin_redirect(),
        }
    };
}
pub(crate) use signed_in;

/// The session of a POST whose CSRF token checks out, else 403.
macro_rules! posted {
    ($c:expr, $h:expr, $form:expr) => {{
        let s = crate::signed_in!($c, $h);
        if !$c.check_post(&$h, &s, $form.get("csrf").map(String::as_str)) {
            return crate::forbidden(
                "The form's security token is missing or wrong (CSRF). Reload the page and try again.",
            );
        }
        s
    }};
}
pub(crate) use posted;

fn signin_page(status: StatusCode, pre: &str, error: Option<&str>) -> Response {
    let m = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in — Coffer" }
                link rel="stylesheet" href="/console/static/console.css";
            }
            body.signin {
                main {
                    h1 { "Sign in to Coffer" }
                    @if let Some(e) = error { (alert(e)) }
                    form method="post" action="/console/signin" {
                        input type="hidden" name="csrf" value=(pre);
                        label for="username" { "Username" }
                        input #username name="username" autocomplete="username" required;
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required;
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    };
    let mut r = html_response(status, m);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{PRESESSION_COOKIE}={pre}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn signin_form(State(c): State<Arc<Console>>, h: HeaderMap) -> Response {
    if c.session(&h).is_some() {
        return Redirect::to("/console/overview").into_response();
    }
    signin_page(StatusCode::OK, &random_token(), None)
}

async fn signin(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    peer: Option<axum::Extension<coffer_api::PeerAddr>>,
    Form(f): Form<FormData>,
) -> Response {
    // Login CSRF: the form's token must match the cookie set with the form, and the browser
    // must say the form is ours (a page on another port of this host can set cookies for it).
    let pre_ok = match (cookie(&h, PRESESSION_COOKIE), f.get("csrf")) {
        (Some(a), Some(b)) => token_ok(b, a),
        _ => false,
    };
    let origin_ok = h
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| c.is_own_origin(o));
    if !pre_ok || !origin_ok {
        return forbidden(
            "The sign-in form expired or was not sent by this page (CSRF). Reload it and sign in again.",
        );
    }
    let username: String = f
        .get("username")
        .map(|u| u.trim().chars().take(64).collect())
        .unwrap_or_default();
    let password = SecretString::new(f.get("password").cloned().unwrap_or_default());
    let addr = peer.map(|p| p.0.0.ip());
    let ip = addr.map(|a| a.to_string()).unwrap_or_default();
    let (ukey, ikey) = (
        format!("user:{}", username.to_ascii_lowercase()),
        address_key(addr),
    );
    let now = Instant::now();
    // Check and count the attempt under one lock, before the password is verified.
    let locked = match c.limiter.lock() {
        Ok(mut l) => {
            let wait = l.locked_for(&ukey, FREE_FAILURES, now).max(l.locked_for(
                &ikey,
                FREE_FAILURES_ADDR,
                now,
            ));
            match wait {
                Some(w) => Some((w, l.audit_refusal(&ukey) || l.audit_refusal(&ikey))),
                None => {
                    l.attempt(&ukey, now);
                    l.attempt(&ikey, now);
                    None
                }
            }
        }
        Err(_) => Some((LOCKOUT_BASE, false)),
    };
    if let Some((wait, audit)) = locked {
        if audit {
            audit_signin(&c, &username, &ip, None, 429).await;
        }
        let mut r = signin_page(
            StatusCode::TOO_MANY_REQUESTS,
            &random_token(),
            Some(&format!(
                "Too many failed sign-in attempts. Try again in {} seconds.",
                wait.as_secs().max(1)
            )),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let verified = c
        .state
        .identity
        .verify_user_password(&username, &password)
        .await
        .ok()
        .flatten();
    let Some(p) = verified else {
        audit_signin(&c, &username, &ip, None, 401).await;
        return signin_page(
            StatusCode::UNAUTHORIZED,
            &random_token(),
            Some("The user name or password is incorrect."),
        );
    };
    if let Ok(mut l) = c.limiter.lock() {
        l.succeeded(&ukey, true);
        l.succeeded(&ikey, false);
    }
    if !audit_signin(&c, &username, &ip, Some(&p), 302).await {
        return html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            html! { p { "The sign-in could not be audited; try again later." } },
        );
    }
    let Some(id) = c.start_session(p, username) else {
        return html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            html! { p { "Too many open sessions; try again later." } },
        );
    };
    let mut r = Redirect::to("/console/overview").into_response();
    for v in [
        format!("{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict"),
        format!("{PRESESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

/// Sign-ins are audited (allowed or denied). Returns whether the record was written.
async fn audit_signin(
    c: &Console,
    username: &str,
    ip: &str,
    p: Option<&Principal>,
    status: u16,
) -> bool {
    let rid = coffer_crypto::random::uuid().unwrap_or_default();
    let rec = coffer_domain::audit::AuditRecord {
        time: c.state.clock.now(),
        resource_id: "/console".into(),
        operation_name: "ConsoleSignIn".into(),
        result_type: if p.is_some() { "Success" } else { "Failure" }.into(),
        result_signature: status,
        caller_ip_address: ip.into(),
        identity: coffer_domain::audit::AuditIdentity {
            tid: p.map(|p| p.tenant_id.clone()).unwrap_or_default(),
            oid: p.map(|p| p.object_id.clone()).unwrap_or_default(),
            appid: String::new(),
            upn: username.chars().take(64).collect(),
        },
        request_id: rid.clone(),
        correlation_id: rid,
        ..Default::default()
    };
    c.state.audit.record(&rec).await.is_ok()
}

async fn signout(State(c): State<Arc<Console>>, h: HeaderMap, Form(f): Form<FormData>) -> Response {
    let _ = posted!(c, h, f);
    c.end_session(&h);
    let mut r = Redirect::to("/console/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Query-string helper.
pub(crate) type Q = Query<HashMap<String, String>>;

pub(crate) fn q<'a>(m: &'a HashMap<String, String>, k: &str) -> &'a str {
    m.get(k).map(String::as_str).unwrap_or("")
}

/// Percent-encode a query value.
pub(crate) fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)])
        .map(|x| x[2..].to_string())
        .unwrap_or_default()
}

/// Time (Unix seconds) as RFC 3339.
pub(crate) fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub(crate) fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Read a whole (small) in-process response body.
pub(crate) async fn read_body(b: Body, limit: usize) -> Option<bytes::Bytes> {
    http_body_util::Limited::new(b, limit)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_grows_and_clears() {
        let mut l = Limiter::default();
        let t = Instant::now();
        let f = FREE_FAILURES;
        for _ in 0..f {
            assert!(l.locked_for("u", f, t).is_none());
            l.attempt("u", t);
        }
        assert_eq!(l.locked_for("u", f, t), Some(LOCKOUT_BASE));
        assert!(l.audit_refusal("u") && !l.audit_refusal("u"));
        l.attempt("u", t);
        assert_eq!(l.locked_for("u", f, t), Some(LOCKOUT_BASE * 2));
        assert!(l.locked_for("u", f, t + LOCKOUT_MAX).is_none());
        // The count is kept a day: the next failure after a lockout locks for longer.
        let later = t + LOCKOUT_MAX;
        l.attempt("u", later);
        assert_eq!(l.locked_for("u", f, later), Some(LOCKOUT_BASE * 4));
        // After a quiet day it starts again.
        let day = later + FAILURE_MEMORY;
        l.attempt("u", day);
        assert!(l.locked_for("u", f, day).is_none());
        // A success forgets a user name, and gives an address back only its attempt.
        l.succeeded("u", true);
        assert!(l.locked_for("u", f, day).is_none());
        for _ in 0..3 {
            l.attempt("a", t);
        }
        l.succeeded("a", false);
        assert_eq!(l.failures.get("a").map(|x| x.count), Some(2));
    }

    #[test]
    fn addresses_are_keyed_by_host_or_v6_prefix() {
        use std::net::IpAddr;
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6"
            .parse()
            .unwrap_or(IpAddr::from([0u8; 4]));
        assert_eq!(address_key(Some(v6)), "ip:2001:db8:1:2::/64");
        let v4: IpAddr = "10.1.2.3".parse().unwrap_or(IpAddr::from([0u8; 4]));
        assert_eq!(address_key(Some(v4)), "ip:10.1.2.3");
        assert!(!token_ok("", "") && token_ok("abc", "abc"));
        assert!(valid_id(
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/v"
        ));
        for bad in [
            "/subscriptions/s/../../coffer/admin/users",
            "/subscriptions/s/x?api-version=1",
            "/subscriptions/s/x#y",
            "/subscriptions//x",
            "/subscriptions/s/%2e%2e/x",
            "/coffer/admin",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn cookies_and_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-coffer-session=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(ct_eq("abc", "abc") && !ct_eq("abc", "abd") && !ct_eq("abc", "ab"));
        assert_eq!(enc("a b&c/d"), "a+b%26c%2Fd");
    }
}
