//! Overview, the audit log and monitoring charts (server-side SVG from the audit log).
use std::sync::Arc;

use axum::extract::{Form, State};
use axum::response::Response;
use http::{HeaderMap, Method};
use maud::{Markup, html};
use serde_json::Value;

use crate::api::{API_KEYVAULT, API_STORAGE, MAX_PAGES, path_of};
use crate::vaults::list_kind;
use crate::{
    Console, FormData, Q, Session, alert, enc, notice, page, posted, q, rfc3339, s, signed_in,
};

/// Every audit record matching `filter`, oldest first, through the management API
/// (administrators only), following `nextLink` for at most `MAX_PAGES` pages of 1,000.
async fn for_each_record(
    c: &Console,
    sess: &Session,
    filter: &[(&str, String)],
    mut f: impl FnMut(Value),
) -> Result<(), String> {
    let mut pairs: Vec<(&str, String)> = filter
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .cloned()
        .collect();
    pairs.push(("top", "1000".into()));
    pairs.push(("api-version", "2024-01-01".into()));
    let mut path = format!(
        "/coffer/admin/audit?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    );
    for _ in 0..MAX_PAGES {
        let r = c.arm(sess, Method::GET, &path, None).await;
        if !r.ok() {
            return Err(r.error());
        }
        let next = s(&r.body, "/nextLink").to_string();
        for rec in r.items() {
            f(rec);
        }
        if next.is_empty() {
            break;
        }
        path = path_of(&next);
    }
    Ok(())
}

/// The newest `keep` records matching `filter`, newest first.
async fn newest(
    c: &Console,
    sess: &Session,
    filter: &[(&str, String)],
    keep: usize,
    pick: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>, String> {
    let mut last = std::collections::VecDeque::with_capacity(keep + 1);
    for_each_record(c, sess, filter, |r| {
        if pick(&r) {
            last.push_back(r);
            if last.len() > keep {
                last.pop_front();
            }
        }
    })
    .await?;
    Ok(last.into_iter().rev().collect())
}

fn time_of(r: &Value) -> i64 {
    match r.get("time") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(t)) => {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map(|d| d.unix_timestamp())
                .unwrap_or(0)
        }
        _ => 0,
    }
}

fn caller(r: &Value) -> String {
    for k in ["/identity/upn", "/identity/oid", "/identity/appid"] {
        let v = s(r, k);
        if !v.is_empty() {
            return v.to_string();
        }
    }
    String::new()
}

fn is_denial(r: &Value) -> bool {
    matches!(
        r.get("resultSignature").and_then(Value::as_u64),
        Some(401 | 403)
    )
}

fn records_table(label: &str, recs: &[Value]) -> Markup {
    html! {
        table aria-label=(label) {
            thead { tr { th { "Time" } th { "Operation" } th { "Result" } th { "Status" } th { "Resource" } th { "Caller" } th { "Correlation ID" } } }
            tbody {
                @for r in recs {
                    tr {
                        td { (rfc3339(time_of(r))) }
                        td { (s(r, "/operationName")) }
                        td { (s(r, "/resultType")) }
                        td { (r.get("resultSignature").and_then(Value::as_u64).unwrap_or(0)) }
                        td { code { (s(r, "/resourceId")) } }
                        td { (caller(r)) }
                        td { code { (s(r, "/correlationId")) } }
                    }
                }
                @if recs.is_empty() { tr { td colspan="7" { "No records." } } }
            }
        }
    }
}

pub async fn overview(State(c): State<Arc<Console>>, h: HeaderMap) -> Response {
    let sess = signed_in!(c, h);
    let accounts = list_kind(&c, &sess, "Microsoft.Storage/storageAccounts", API_STORAGE).await;
    let vaults = list_kind(&c, &sess, "Microsoft.KeyVault/vaults", API_KEYVAULT).await;
    let now = c.state.clock.now();
    let horizon = now + 30 * 86_400;
    let mut expiring = Vec::new();
    for v in &vaults {
        let uri = s(v, "/properties/vaultUri");
        for k in c.vault_all(&sess, uri, "/keys").await.unwrap_or_default() {
            if let Some(exp) = k.pointer("/attributes/exp").and_then(Value::as_i64)
                && exp <= horizon
            {
                expiring.push((s(v, "/name").to_string(), s(&k, "/kid").to_string(), exp));
            }
        }
    }
    let denials = newest(
        &c,
        &sess,
        &[
            ("result", "Failure".into()),
            ("from", (now - 86_400).to_string()),
        ],
        10,
        is_denial,
    )
    .await;
    let body = html! {
        h2 { "Storage accounts" }
        table aria-label="Storage account encryption" {
            thead { tr { th { "Name" } th { "Encryption type" } th { "CMK status" } th { "Key version in use" } } }
            tbody {
                @for a in &accounts {
                    tr {
                        td { a href={"/console/account?id=" (enc(s(a, "/id")))} { (s(a, "/name")) } }
                        td { @if s(a, "/properties/encryption/keySource").eq_ignore_ascii_case("Microsoft.Keyvault") { "Customer-managed keys" } @else { "Microsoft-managed keys" } }
                        td { (match s(a, "/properties/encryption/cmkHealth/status") { "" => "—", x => x }) }
                        td { (s(a, "/properties/encryption/cmkHealth/keyVersionInUse")) }
                    }
                }
                @if accounts.is_empty() { tr { td colspan="4" { "No storage accounts." } } }
            }
        }
        h2 { "Keys nearing expiry" }
        table aria-label="Keys nearing expiry" {
            thead { tr { th { "Key vault" } th { "Key" } th { "Expires" } } }
            tbody {
                @for (v, kid, exp) in &expiring {
                    tr { td { (v) } td { code { (kid) } } td { (rfc3339(*exp)) @if *exp <= now { " (expired)" } } }
                }
                @if expiring.is_empty() { tr { td colspan="3" { "No key expires in the next 30 days." } } }
            }
        }
        h2 { "Recent denials" }
        @if let Ok(recent) = &denials {
            (records_table("Recent denials", recent))
        } @else {
            p { "Only administrators can read the audit log." }
        }
    };
    page(&sess, "overview", "Overview", body)
}

pub async fn audit_page(State(c): State<Arc<Console>>, h: HeaderMap, qs: Q) -> Response {
    let sess = signed_in!(c, h);
    render(&c, &sess, &qs, None).await
}

fn local_to_unix(v: &str) -> String {
    if v.is_empty() {
        return String::new();
    }
    let full = if v.len() == 16 {
        format!("{v}:00Z")
    } else {
        format!("{v}Z")
    };
    time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339)
        .map(|d| d.unix_timestamp().to_string())
        .unwrap_or_else(|_| v.to_string())
}

async fn render(
    c: &Console,
    sess: &Session,
    qs: &std::collections::HashMap<String, String>,
    verdict: Option<Markup>,
) -> Response {
    let filter = [
        ("from", local_to_unix(q(qs, "from"))),
        ("to", local_to_unix(q(qs, "to"))),
        ("resourceId", q(qs, "resource").to_string()),
        ("operation", q(qs, "operation").to_string()),
        ("caller", q(qs, "caller").to_string()),
        ("result", q(qs, "result").to_string()),
    ];
    let r = newest(c, sess, &filter, 500, |_| true).await;
    let body = html! {
        @if let Some(v) = verdict { (v) }
        form.filters method="get" action="/console/audit" {
            label for="from" { "From" } input #from name="from" type="datetime-local" value=(q(qs, "from"));
            label for="to" { "To" } input #to name="to" type="datetime-local" value=(q(qs, "to"));
            label for="resource" { "Resource" } input #resource name="resource" value=(q(qs, "resource"));
            label for="operation" { "Operation" } input #operation name="operation" value=(q(qs, "operation")) placeholder="e.g. KeyUnwrap";
            label for="caller" { "Caller" } input #caller name="caller" value=(q(qs, "caller"));
            label for="result" { "Result" }
            select #result name="result" {
                option value="" { "Any" }
                option value="Success" selected[q(qs, "result") == "Success"] { "Success" }
                option value="Failure" selected[q(qs, "result") == "Failure"] { "Failure" }
            }
            button type="submit" { "Apply" }
        }
        form method="post" action="/console/audit/verify" {
            (crate::csrf(sess))
            button type="submit" { "Verify chain" }
        }
        @match &r {
            Ok(recs) => {
                p { "Newest first; at most 500 shown." }
                (records_table("Audit records", recs))
            }
            Err(e) => { (alert(e)) }
        }
    };
    page(sess, "audit", "Audit log", body)
}

pub async fn verify(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    Form(f): Form<FormData>,
) -> Response {
    let sess = posted!(c, h, f);
    let verdict = if !sess.principal.is_admin {
        alert("AuthorizationFailed: only administrators can verify the audit log.")
    } else {
        use coffer_domain::audit::chain::Verdict;
        match c.verifier.verify().await {
            Ok(Verdict::Intact {
                records,
                checkpoints,
                head_seq,
                ..
            }) => notice(&format!(
                "The audit log is intact: {records} records, {checkpoints} signed checkpoints, head at record {head_seq}."
            )),
            Ok(Verdict::Broken { seq, reason }) => alert(&format!(
                "The audit log is NOT intact: record {seq}: {reason}"
            )),
            Err(e) => alert(&format!("The audit log could not be verified: {e}")),
        }
    };
    render(&c, &sess, &Default::default(), Some(verdict)).await
}

/// One series of a chart: a value per bucket.
struct Series<'a> {
    title: &'a str,
    unit: &'a str,
    values: Vec<f64>,
}

const BUCKETS: usize = 12;
const BUCKET_SECS: i64 = 300;

fn chart(s: &Series, start: i64) -> Markup {
    let (w, h, pad) = (600.0, 160.0, 30.0);
    let max = s.values.iter().cloned().fold(0.0_f64, f64::max).max(1.0);
    let bw = (w - pad) / BUCKETS as f64;
    html! {
        figure {
            figcaption { (s.title) }
            svg role="img" aria-label=(s.title) viewBox={"0 0 " (w) " " (h + 20.0)} width="100%" xmlns="http://www.w3.org/2000/svg" {
                title { (s.title) }
                line x1=(pad) y1=(h) x2=(w) y2=(h) stroke="#888" {}
                text x="0" y="12" font-size="10" fill="#444" { (format!("{max:.0}")) " " (s.unit) }
                @for (i, v) in s.values.iter().enumerate() {
                    @let bh = v / max * (h - 20.0);
                    rect x=(pad + i as f64 * bw + 2.0) y=(h - bh) width=(bw - 4.0) height=(bh) fill="#2f6fb3" {
                        title { (rfc3339(start + i as i64 * BUCKET_SECS)) ": " (format!("{v:.1}")) " " (s.unit) }
                    }
                }
                text x=(pad) y=(h + 15.0) font-size="10" fill="#444" { (rfc3339(start)) }
                text x=(w) y=(h + 15.0) font-size="10" fill="#444" text-anchor="end" { "now" }
            }
        }
    }
}

pub async fn monitoring(State(c): State<Arc<Console>>, h: HeaderMap) -> Response {
    let sess = signed_in!(c, h);
    let now = c.state.clock.now();
    let start = now - BUCKETS as i64 * BUCKET_SECS;
    let mut ops = vec![0.0; BUCKETS];
    let mut unwraps = vec![0.0; BUCKETS];
    let mut latency = [(0.0, 0.0); BUCKETS];
    let mut denials = vec![0.0; BUCKETS];
    let r = for_each_record(&c, &sess, &[("from", start.to_string())], |rec| {
        let i = ((time_of(&rec) - start) / BUCKET_SECS).clamp(0, BUCKETS as i64 - 1) as usize;
        let op = s(&rec, "/operationName");
        if op.starts_with("Key") {
            ops[i] += 1.0;
            let d = rec.get("durationMs").and_then(Value::as_f64).unwrap_or(0.0);
            latency[i].0 += d;
            latency[i].1 += 1.0;
        }
        if op == "KeyUnwrap" {
            unwraps[i] += 1.0;
        }
        if is_denial(&rec) {
            denials[i] += 1.0;
        }
    })
    .await;
    let series = [
        Series {
            title: "Vault operations",
            unit: "requests",
            values: ops,
        },
        Series {
            title: "Unwrap calls",
            unit: "calls",
            values: unwraps,
        },
        Series {
            title: "Vault latency (mean)",
            unit: "ms",
            values: latency
                .iter()
                .map(|(t, n)| if *n > 0.0 { t / n } else { 0.0 })
                .collect(),
        },
        Series {
            title: "Denials",
            unit: "requests",
            values: denials,
        },
    ];
    let body = html! {
        p { "The last hour in five-minute intervals, from the audit log. Prometheus metrics are at " code { "/metrics" } "." }
        @match &r {
            Ok(()) => { @for s in &series { (chart(s, start)) } }
            Err(e) => { (alert(e)) }
        }
    };
    page(&sess, "monitoring", "Monitoring", body)
}
