//! Key vaults and keys.
use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, Method, StatusCode};
use maud::{Markup, html};
use serde_json::{Value, json};

use crate::api::{API_KEYVAULT, API_RG, API_SUBS, enc_segment};
use crate::{
    Console, FormData, Q, Session, alert, csrf, enc, html_response, layout, notice, page, posted,
    q, rfc3339, s, signed_in,
};

/// Key Vault Crypto Officer (Azure's built-in role id).
const CRYPTO_OFFICER: &str = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603";

/// Subscription ids the user can see.
pub(crate) async fn subscriptions(c: &Console, sess: &Session) -> Vec<(String, String)> {
    c.arm(
        sess,
        Method::GET,
        &format!("/subscriptions?api-version={API_SUBS}"),
        None,
    )
    .await
    .items()
    .iter()
    .map(|v| {
        (
            s(v, "/subscriptionId").to_string(),
            s(v, "/displayName").to_string(),
        )
    })
    .collect()
}

/// Resources of `kind` (e.g. `Microsoft.KeyVault/vaults`) in every visible subscription.
pub(crate) async fn list_kind(c: &Console, sess: &Session, kind: &str, api: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (sub, _) in subscriptions(c, sess).await {
        let r = c
            .arm(
                sess,
                Method::GET,
                &format!("/subscriptions/{sub}/providers/{kind}?api-version={api}"),
                None,
            )
            .await;
        out.extend(r.items());
    }
    out.sort_by(|a, b| s(a, "/name").cmp(s(b, "/name")));
    out
}

/// The resource group of a resource id.
pub(crate) fn group_of(id: &str) -> &str {
    let parts: Vec<&str> = id.split('/').collect();
    parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("resourceGroups"))
        .and_then(|i| parts.get(i + 1))
        .copied()
        .unwrap_or("")
}

/// Create the resource group if it does not exist (as the user).
pub(crate) async fn ensure_group(
    c: &Console,
    sess: &Session,
    sub: &str,
    rg: &str,
    location: &str,
) -> Result<(), String> {
    let path = format!(
        "/subscriptions/{}/resourcegroups/{}?api-version={API_RG}",
        enc_segment(sub),
        enc_segment(rg)
    );
    if c.arm(sess, Method::GET, &path, None).await.ok() {
        return Ok(());
    }
    let r = c
        .arm(
            sess,
            Method::PUT,
            &path,
            Some(&json!({"location": location})),
        )
        .await;
    if r.ok() { Ok(()) } else { Err(r.error()) }
}

pub(crate) fn region_select(c: &Console, id: &str) -> Markup {
    html! {
        label for=(id) { "Region" }
        select #(id) name="location" {
            @for r in c.state.mgmt.regions() { option value=(r) { (r) } }
        }
    }
}

pub(crate) fn placement_fields(subs: &[(String, String)]) -> Markup {
    html! {
        label for="subscription" { "Subscription" }
        select #subscription name="subscription" {
            @for (id, name) in subs { option value=(id) { (name) " (" (id) ")" } }
        }
        label for="resource-group" { "Resource group" }
        input #resource-group name="resourceGroup" required placeholder="an existing or new group";
    }
}

pub async fn list(State(c): State<Arc<Console>>, h: HeaderMap) -> Response {
    let sess = signed_in!(c, h);
    list_page(&c, &sess, None, StatusCode::OK).await
}

async fn list_page(c: &Console, sess: &Session, err: Option<&str>, status: StatusCode) -> Response {
    let vaults = list_kind(c, sess, "Microsoft.KeyVault/vaults", API_KEYVAULT).await;
    let subs = subscriptions(c, sess).await;
    let body = html! {
        @if let Some(e) = err { (alert(e)) }
        table aria-label="Key vaults" {
            thead { tr { th { "Name" } th { "Resource group" } th { "Region" } th { "Soft-delete retention (days)" } th { "Purge protection" } } }
            tbody {
                @for v in &vaults {
                    tr {
                        td { a href={"/console/vault?id=" (enc(s(v, "/id")))} { (s(v, "/name")) } }
                        td { (group_of(s(v, "/id"))) }
                        td { (s(v, "/location")) }
                        td { (v.pointer("/properties/softDeleteRetentionInDays").and_then(Value::as_i64).unwrap_or(90)) }
                        td { @if v.pointer("/properties/enablePurgeProtection").and_then(Value::as_bool).unwrap_or(false) { "Enabled" } @else { "Disabled" } }
                    }
                }
                @if vaults.is_empty() { tr { td colspan="5" { "No key vaults yet." } } }
            }
        }
        section aria-labelledby="create-vault" {
            h2 #create-vault { "Create a key vault" }
            form method="post" action="/console/vaults" {
                (csrf(sess))
                label for="vault-name" { "Key vault name" }
                input #vault-name name="name" required pattern="[A-Za-z0-9-]{3,24}";
                (placement_fields(&subs))
                (region_select(c, "vault-region"))
                label for="retention" { "Days to retain deleted vaults" }
                input #retention name="retention" type="number" min="7" max="90" value="90";
                label.check { input type="checkbox" name="purgeProtection" value="on"; "Enable purge protection" }
                label.check { input type="checkbox" name="grantSelf" value="on" checked; "Grant me the Key Vault Crypto Officer role on this vault" }
                button type="submit" { "Create" }
            }
        }
    };
    let mut r = html_response(status, layout(sess, "vaults", "Key vaults", body));
    *r.status_mut() = status;
    r
}

pub async fn create(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    Form(f): Form<FormData>,
) -> Response {
    let sess = posted!(c, h, f);
    let (sub, rg, name, loc) = (
        q(&f, "subscription"),
        q(&f, "resourceGroup").trim(),
        q(&f, "name").trim(),
        q(&f, "location"),
    );
    if let Err(e) = ensure_group(&c, &sess, sub, rg, loc).await {
        return list_page(&c, &sess, Some(&e), StatusCode::BAD_REQUEST).await;
    }
    let retention: i64 = q(&f, "retention").parse().unwrap_or(90);
    let mut props = json!({
        "tenantId": sess.principal.tenant_id,
        "sku": {"family": "A", "name": "standard"},
        "enableRbacAuthorization": true,
        "enableSoftDelete": true,
        "softDeleteRetentionInDays": retention,
    });
    if f.contains_key("purgeProtection") {
        props["enablePurgeProtection"] = json!(true);
    }
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{}",
        enc_segment(sub),
        enc_segment(rg),
        enc_segment(name)
    );
    let r = c
        .arm(
            &sess,
            Method::PUT,
            &format!("{id}?api-version={API_KEYVAULT}"),
            Some(&json!({"location": loc, "properties": props})),
        )
        .await;
    if !r.ok() {
        return list_page(&c, &sess, Some(&r.error()), r.status).await;
    }
    let id = s(&r.body, "/id").to_string();
    if f.contains_key("grantSelf") {
        let g = crate::iam::assign(&c, &sess, &id, CRYPTO_OFFICER, sess.oid()).await;
        if !g.ok() {
            return show_page(
                &c,
                &sess,
                &id,
                Some(&format!(
                    "The vault was created, but the role could not be granted: {}",
                    g.error()
                )),
                None,
            )
            .await;
        }
    }
    Redirect::to(&format!("/console/vault?id={}", enc(&id))).into_response()
}

/// The vault (ARM body) named by `?id=`, or an error page.
async fn vault_of(c: &Console, sess: &Session, id: &str) -> Result<Value, Response> {
    c.resource(sess, id, API_KEYVAULT, "vaults", "Key vault")
        .await
}

fn key_name_of(kid: &str) -> &str {
    kid.split("/keys/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

fn date(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_i64)
        .map(rfc3339)
        .unwrap_or_else(|| "—".into())
}

pub async fn show(State(c): State<Arc<Console>>, h: HeaderMap, qs: Q) -> Response {
    let sess = signed_in!(c, h);
    show_page(&c, &sess, q(&qs, "id"), None, None).await
}

async fn show_page(
    c: &Console,
    sess: &Session,
    id: &str,
    err: Option<&str>,
    ok: Option<&str>,
) -> Response {
    let v = match vault_of(c, sess, id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let uri = s(&v, "/properties/vaultUri").to_string();
    let keys = c.vault_all(sess, &uri, "/keys").await;
    let gone = c
        .vault_all(sess, &uri, "/deletedkeys")
        .await
        .unwrap_or_default();
    let can_write = c
        .can(sess, coffer_domain::keyvault::actions::UPDATE, true, id)
        .await;
    let body = html! {
        @if let Some(e) = err { (alert(e)) }
        @if let Some(m) = ok { (notice(m)) }
        dl.props {
            dt { "Vault URI" } dd { (uri) }
            dt { "Region" } dd { (s(&v, "/location")) }
            dt { "Soft delete" } dd { (v.pointer("/properties/softDeleteRetentionInDays").and_then(Value::as_i64).unwrap_or(90)) " days" }
            dt { "Purge protection" } dd { @if v.pointer("/properties/enablePurgeProtection").and_then(Value::as_bool).unwrap_or(false) { "Enabled" } @else { "Disabled" } }
        }
        h2 { "Keys" }
        @if let Err(e) = &keys { (alert(e)) }
        table aria-label="Keys" {
            thead { tr { th { "Name" } th { "Status" } th { "Expiration date" } } }
            tbody {
                @for k in keys.as_deref().unwrap_or_default() {
                    @let name = key_name_of(s(k, "/kid"));
                    tr {
                        td { a href={"/console/vault/key?id=" (enc(id)) "&name=" (enc(name))} { (name) } }
                        td { @if k.pointer("/attributes/enabled").and_then(Value::as_bool).unwrap_or(false) { "Enabled" } @else { "Disabled" } }
                        td { (date(k, "/attributes/exp")) }
                    }
                }
            }
        }
        @if !gone.is_empty() {
            h2 { "Deleted keys" }
            table aria-label="Deleted keys" {
                thead { tr { th { "Name" } th { "Deleted" } th { "Scheduled purge" } th { "Actions" } } }
                tbody {
                    @for k in &gone {
                        @let name = key_name_of(s(k, "/kid"));
                        tr {
                            td { (name) }
                            td { (date(k, "/deletedDate")) }
                            td { (date(k, "/scheduledPurgeDate")) }
                            td {
                                form.inline method="post" action="/console/vault/key" {
                                    (csrf(sess))
                                    input type="hidden" name="id" value=(id);
                                    input type="hidden" name="name" value=(name);
                                    button name="action" value="recover" disabled[!can_write] aria-label={"Recover " (name)} { "Recover" }
                                    button name="action" value="purge" disabled[!can_write] aria-label={"Purge " (name)} { "Purge" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="generate" {
            h2 #generate { "Generate" }
            form method="post" action="/console/vault/keys" {
                (csrf(sess))
                input type="hidden" name="id" value=(id);
                input type="hidden" name="mode" value="generate";
                label for="key-name" { "Name" }
                input #key-name name="name" required pattern="[A-Za-z0-9-]{1,127}";
                label for="key-type" { "Key type" }
                select #key-type name="kty" { option value="RSA" { "RSA" } option value="EC" { "EC" } }
                label for="key-size" { "RSA key size" }
                select #key-size name="size" { option { "2048" } option { "3072" } option { "4096" } }
                label for="curve" { "Elliptic curve name" }
                select #curve name="crv" { option { "P-256" } option { "P-384" } option { "P-521" } option { "P-256K" } }
                label for="gen-nbf" { "Activation date" }
                input #gen-nbf name="nbf" type="datetime-local";
                label for="gen-exp" { "Expiration date" }
                input #gen-exp name="exp" type="datetime-local";
                label.check { input type="checkbox" name="enabled" value="on" checked; "Enabled" }
                button type="submit" disabled[!can_write] { "Generate" }
            }
        }
        section aria-labelledby="import" {
            h2 #import { "Import" }
            form method="post" action="/console/vault/keys" {
                (csrf(sess))
                input type="hidden" name="id" value=(id);
                input type="hidden" name="mode" value="import";
                label for="import-name" { "Name" }
                input #import-name name="name" required pattern="[A-Za-z0-9-]{1,127}";
                label for="import-key" { "Key (JWK or PEM)" }
                textarea #import-key name="key" rows="6" required {}
                button type="submit" disabled[!can_write] { "Import" }
            }
        }
    };
    page(
        sess,
        "vaults",
        &format!("Key vault {}", s(&v, "/name")),
        body,
    )
}

/// `datetime-local` (UTC) or RFC 3339 → Unix seconds.
fn parse_time(v: &str) -> Result<Option<i64>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let full = if v.len() == 16 {
        format!("{v}:00Z")
    } else if v.ends_with('Z') || v.contains('+') {
        v.to_string()
    } else {
        format!("{v}Z")
    };
    time::OffsetDateTime::parse(&full, &time::format_description::well_known::Rfc3339)
        .map(|t| Some(t.unix_timestamp()))
        .map_err(|_| format!("'{v}' is not a date and time (YYYY-MM-DDTHH:MM, UTC)"))
}

fn attributes(f: &FormData) -> Result<Value, String> {
    let mut a = json!({});
    if let Some(t) = parse_time(q(f, "nbf"))? {
        a["nbf"] = json!(t);
    }
    if let Some(t) = parse_time(q(f, "exp"))? {
        a["exp"] = json!(t);
    }
    Ok(a)
}

pub async fn key_create(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    Form(f): Form<FormData>,
) -> Response {
    let sess = posted!(c, h, f);
    let id = q(&f, "id").to_string();
    let v = match vault_of(&c, &sess, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let uri = s(&v, "/properties/vaultUri");
    let name = q(&f, "name").trim();
    let r = if q(&f, "mode") == "import" {
        let key = match crate::pem::to_jwk(q(&f, "key")) {
            Ok(k) => k,
            Err(e) => return show_page(&c, &sess, &id, Some(&e), None).await,
        };
        c.vault(
            &sess,
            uri,
            Method::PUT,
            &format!("/keys/{}", enc_segment(name)),
            Some(&json!({"key": key})),
        )
        .await
    } else {
        let mut attrs = match attributes(&f) {
            Ok(a) => a,
            Err(e) => return show_page(&c, &sess, &id, Some(&e), None).await,
        };
        attrs["enabled"] = json!(f.contains_key("enabled"));
        let mut body = json!({"kty": q(&f, "kty"), "attributes": attrs});
        if q(&f, "kty") == "EC" {
            body["crv"] = json!(q(&f, "crv"));
        } else {
            body["key_size"] = json!(q(&f, "size").parse::<u32>().unwrap_or(2048));
        }
        c.vault(
            &sess,
            uri,
            Method::POST,
            &format!("/keys/{}/create", enc_segment(name)),
            Some(&body),
        )
        .await
    };
    if !r.ok() {
        return show_page(&c, &sess, &id, Some(&r.error()), None).await;
    }
    Redirect::to(&format!(
        "/console/vault/key?id={}&name={}",
        enc(&id),
        enc(name)
    ))
    .into_response()
}

fn dependents_table(deps: &[Value]) -> Markup {
    html! {
        table aria-label="Dependent storage accounts" {
            thead { tr { th { "Storage account" } th { "Key version in use" } th { "Automatic updates" } th { "Status" } } }
            tbody {
                @for d in deps {
                    tr {
                        td { (s(d, "/storageAccountId").rsplit('/').next().unwrap_or("")) }
                        td { (s(d, "/keyVersion")) }
                        td { @if d.get("followsNewVersions").and_then(Value::as_bool).unwrap_or(false) { "Yes" } @else { "No" } }
                        td { (s(d, "/status")) }
                    }
                }
                @if deps.is_empty() { tr { td colspan="4" { "No storage account uses this key." } } }
            }
        }
    }
}

pub async fn key_show(State(c): State<Arc<Console>>, h: HeaderMap, qs: Q) -> Response {
    let sess = signed_in!(c, h);
    key_page(&c, &sess, q(&qs, "id"), q(&qs, "name"), None, None).await
}

async fn key_page(
    c: &Console,
    sess: &Session,
    id: &str,
    name: &str,
    err: Option<&str>,
    ok: Option<&str>,
) -> Response {
    let v = match vault_of(c, sess, id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let uri = s(&v, "/properties/vaultUri");
    let kp = format!("/keys/{}", enc_segment(name));
    let key = c.vault(sess, uri, Method::GET, &kp, None).await;
    let versions = c
        .vault_all(sess, uri, &format!("{kp}/versions"))
        .await
        .unwrap_or_default();
    let policy = c
        .vault(
            sess,
            uri,
            Method::GET,
            &format!("{kp}/rotationpolicy"),
            None,
        )
        .await;
    let deps = c
        .vault(sess, uri, Method::GET, &format!("{kp}/dependents"), None)
        .await
        .items();
    let can_write = c
        .can(sess, coffer_domain::keyvault::actions::UPDATE, true, id)
        .await;
    let k = &key.body;
    let enabled = k
        .pointer("/attributes/enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let rotate_days = policy
        .body
        .get("lifetimeActions")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| s(x, "/action/type").eq_ignore_ascii_case("rotate"))
        })
        .map(|x| days_of(s(x, "/trigger/timeAfterCreate")))
        .unwrap_or_default();
    let expiry_days = days_of(s(&policy.body, "/attributes/expiryTime"));
    let mut vs = versions;
    vs.sort_by_key(|x| {
        std::cmp::Reverse(
            x.pointer("/attributes/created")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        )
    });
    let body = html! {
        @if let Some(e) = err { (alert(e)) }
        @if let Some(m) = ok { (notice(m)) }
        @if !key.ok() { (alert(&key.error())) }
        p { a href={"/console/vault?id=" (enc(id))} { "Back to key vault " (s(&v, "/name")) } }
        dl.props {
            dt { "Key identifier" } dd { (s(k, "/key/kid")) }
            dt { "Key type" } dd { (s(k, "/key/kty")) }
            dt { "Status" } dd #key-status { @if enabled { "Enabled" } @else { "Disabled" } }
            dt { "Activation date" } dd { (date(k, "/attributes/nbf")) }
            dt { "Expiration date" } dd { (date(k, "/attributes/exp")) }
            dt { "Permitted operations" } dd { (k.pointer("/key/key_ops").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()) }
        }
        form.actions method="post" action="/console/vault/key" {
            (csrf(sess))
            input type="hidden" name="id" value=(id);
            input type="hidden" name="name" value=(name);
            @if enabled {
                button name="action" value="disable" disabled[!can_write] { "Disable" }
            } @else {
                button name="action" value="enable" disabled[!can_write] { "Enable" }
            }
            button name="action" value="rotate" disabled[!can_write] { "Rotate now" }
            button.danger name="action" value="delete" disabled[!can_write] { "Delete" }
        }
        h2 { "Storage accounts that depend on this key" }
        (dependents_table(&deps))
        h2 { "Versions" }
        table aria-label="Versions" {
            thead { tr { th { "Version" } th { "Status" } th { "Created" } th { "Activation date" } th { "Expiration date" } th { "Used by" } } }
            tbody {
                @for x in &vs {
                    @let ver = s(x, "/kid").rsplit('/').next().unwrap_or("");
                    tr {
                        td { code { (ver) } }
                        td { @if x.pointer("/attributes/enabled").and_then(Value::as_bool).unwrap_or(false) { "Enabled" } @else { "Disabled" } }
                        td { (date(x, "/attributes/created")) }
                        td { (date(x, "/attributes/nbf")) }
                        td { (date(x, "/attributes/exp")) }
                        td { (deps.iter().filter(|d| s(d, "/keyVersion") == ver).filter_map(|d| s(d, "/storageAccountId").rsplit('/').next()).collect::<Vec<_>>().join(", ")) }
                    }
                }
            }
        }
        section aria-labelledby="dates" {
            h2 #dates { "Activation and expiration" }
            form method="post" action="/console/vault/key" {
                (csrf(sess))
                input type="hidden" name="id" value=(id);
                input type="hidden" name="name" value=(name);
                label for="nbf" { "Activation date" }
                input #nbf name="nbf" type="datetime-local";
                label for="exp" { "Expiration date" }
                input #exp name="exp" type="datetime-local";
                button name="action" value="dates" disabled[!can_write] { "Save dates" }
            }
        }
        section aria-labelledby="policy" {
            h2 #policy { "Rotation policy" }
            form method="post" action="/console/vault/key" {
                (csrf(sess))
                input type="hidden" name="id" value=(id);
                input type="hidden" name="name" value=(name);
                label for="rotate-after" { "Rotate automatically after (days since creation)" }
                input #rotate-after name="rotateDays" type="number" min="7" value=(rotate_days);
                label for="expiry-time" { "Set expiration time of new versions to (days)" }
                input #expiry-time name="expiryDays" type="number" min="28" value=(expiry_days);
                label for="notify-before" { "Notify before expiry (days)" }
                input #notify-before name="notifyDays" type="number" min="7";
                button name="action" value="policy" disabled[!can_write] { "Save rotation policy" }
            }
        }
    };
    page(sess, "vaults", &format!("Key {name}"), body)
}

fn days_of(iso: &str) -> String {
    iso.strip_prefix('P')
        .and_then(|d| d.strip_suffix('D'))
        .filter(|d| d.chars().all(|c| c.is_ascii_digit()))
        .unwrap_or("")
        .to_string()
}

/// A confirmation step: what depends on the key, before it is disabled or deleted.
fn confirm(sess: &Session, id: &str, name: &str, action: &str, deps: &[Value]) -> Response {
    let verb = if action == "disable" {
        "Disable"
    } else {
        "Delete"
    };
    let body = html! {
        p { @if deps.is_empty() { "No storage account uses this key." } @else {
            "These storage accounts use this key. " (verb) "ing it cuts off all access to their data until it is "
            @if action == "disable" { "enabled" } @else { "recovered" } " again."
        } }
        (dependents_table(deps))
        form.actions method="post" action="/console/vault/key" {
            (csrf(sess))
            input type="hidden" name="id" value=(id);
            input type="hidden" name="name" value=(name);
            input type="hidden" name="confirm" value="yes";
            button.danger name="action" value=(action) { "Confirm " (verb.to_lowercase()) }
            a href={"/console/vault/key?id=" (enc(id)) "&name=" (enc(name))} { "Cancel" }
        }
    };
    page(sess, "vaults", &format!("{verb} key {name}?"), body)
}

pub async fn key_action(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    Form(f): Form<FormData>,
) -> Response {
    let sess = posted!(c, h, f);
    let (id, name, action) = (q(&f, "id"), q(&f, "name"), q(&f, "action"));
    let v = match vault_of(&c, &sess, id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let uri = s(&v, "/properties/vaultUri");
    let kp = format!("/keys/{}", enc_segment(name));
    let confirmed = q(&f, "confirm") == "yes";
    if matches!(action, "disable" | "delete") && !confirmed {
        let deps = c
            .vault(&sess, uri, Method::GET, &format!("{kp}/dependents"), None)
            .await;
        if !deps.ok() {
            return key_page(&c, &sess, id, name, Some(&deps.error()), None).await;
        }
        return confirm(&sess, id, name, action, &deps.items());
    }
    let (r, done) = match action {
        "enable" | "disable" => (
            c.vault(
                &sess,
                uri,
                Method::PATCH,
                &kp,
                Some(&json!({"attributes": {"enabled": action == "enable"}})),
            )
            .await,
            if action == "enable" {
                "The key is enabled."
            } else {
                "The key is disabled."
            },
        ),
        "dates" => match attributes(&f) {
            Ok(a) => (
                c.vault(
                    &sess,
                    uri,
                    Method::PATCH,
                    &kp,
                    Some(&json!({"attributes": a})),
                )
                .await,
                "Dates saved.",
            ),
            Err(e) => return key_page(&c, &sess, id, name, Some(&e), None).await,
        },
        "rotate" => (
            c.vault(&sess, uri, Method::POST, &format!("{kp}/rotate"), None)
                .await,
            "A new version was created.",
        ),
        "policy" => {
            let mut actions = Vec::new();
            if let Ok(d) = q(&f, "rotateDays").parse::<u32>() {
                actions.push(json!({"trigger": {"timeAfterCreate": format!("P{d}D")}, "action": {"type": "Rotate"}}));
            }
            if let Ok(d) = q(&f, "notifyDays").parse::<u32>() {
                actions.push(json!({"trigger": {"timeBeforeExpiry": format!("P{d}D")}, "action": {"type": "Notify"}}));
            }
            let mut p = json!({"lifetimeActions": actions});
            if let Ok(d) = q(&f, "expiryDays").parse::<u32>() {
                p["attributes"] = json!({"expiryTime": format!("P{d}D")});
            }
            (
                c.vault(
                    &sess,
                    uri,
                    Method::PUT,
                    &format!("{kp}/rotationpolicy"),
                    Some(&p),
                )
                .await,
                "Rotation policy saved.",
            )
        }
        "delete" => {
            let r = c.vault(&sess, uri, Method::DELETE, &kp, None).await;
            if r.ok() {
                return show_page(&c, &sess, id, None, Some(&format!("Key {name} deleted."))).await;
            }
            (r, "")
        }
        "recover" | "purge" => {
            let (m, p) = if action == "recover" {
                (
                    Method::POST,
                    format!("/deletedkeys/{}/recover", enc_segment(name)),
                )
            } else {
                (
                    Method::DELETE,
                    format!("/deletedkeys/{}", enc_segment(name)),
                )
            };
            let r = c.vault(&sess, uri, m, &p, None).await;
            return if r.ok() {
                show_page(
                    &c,
                    &sess,
                    id,
                    None,
                    Some(&format!("Key {name}: {action} done.")),
                )
                .await
            } else {
                show_page(&c, &sess, id, Some(&r.error()), None).await
            };
        }
        _ => return crate::forbidden("Unknown action."),
    };
    if r.ok() {
        key_page(&c, &sess, id, name, None, Some(done)).await
    } else {
        let mut resp = key_page(&c, &sess, id, name, Some(&r.error()), None).await;
        *resp.status_mut() = r.status;
        resp
    }
}

/// Keys and versions of a vault, for the Encryption page's pickers.
pub async fn api_keys(State(c): State<Arc<Console>>, h: HeaderMap, qs: Q) -> Response {
    let Some(sess) = c.session(&h) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let v = match vault_of(&c, &sess, q(&qs, "vault")).await {
        Ok(v) => v,
        Err(_) => return (StatusCode::NOT_FOUND, Json(json!({"keys": []}))).into_response(),
    };
    let uri = s(&v, "/properties/vaultUri");
    let mut out = Vec::new();
    for k in c.vault_all(&sess, uri, "/keys").await.unwrap_or_default() {
        let name = key_name_of(s(&k, "/kid")).to_string();
        let versions: Vec<String> = c
            .vault_all(
                &sess,
                uri,
                &format!("/keys/{}/versions", enc_segment(&name)),
            )
            .await
            .unwrap_or_default()
            .iter()
            .map(|x| s(x, "/kid").rsplit('/').next().unwrap_or("").to_string())
            .collect();
        out.push(json!({"name": name, "versions": versions}));
    }
    Json(json!({"vaultUri": uri, "keys": out})).into_response()
}
