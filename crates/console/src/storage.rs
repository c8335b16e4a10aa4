//! Storage accounts, their Encryption page (the seed's steps), containers and blobs.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Form, Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use maud::html;
use serde_json::{Value, json};

use crate::api::{
    API_KEYVAULT, API_MSI, API_STORAGE, MAX_PAGES, blob_error, enc_blob_path, enc_segment,
};
use crate::vaults::{
    ensure_group, group_of, list_kind, placement_fields, region_select, subscriptions,
};
use crate::{
    Console, FormData, Q, Session, alert, csrf, enc, html_response, layout, notice, page, posted,
    q, read_body, s, signed_in,
};

const WRITE: &str = "Microsoft.Storage/storageAccounts/write";

pub async fn list(State(c): State<Arc<Console>>, h: HeaderMap) -> Response {
    let sess = signed_in!(c, h);
    list_page(&c, &sess, None, StatusCode::OK).await
}

fn encryption_type(a: &Value) -> &'static str {
    if s(a, "/properties/encryption/keySource").eq_ignore_ascii_case("Microsoft.Keyvault") {
        "Customer-managed keys"
    } else {
        "Microsoft-managed keys"
    }
}

fn cmk_status(a: &Value) -> &str {
    match s(a, "/properties/encryption/cmkHealth/status") {
        "" => "—",
        x => x,
    }
}

async fn list_page(c: &Console, sess: &Session, err: Option<&str>, status: StatusCode) -> Response {
    let accounts = list_kind(c, sess, "Microsoft.Storage/storageAccounts", API_STORAGE).await;
    let subs = subscriptions(c, sess).await;
    let identities = list_kind(
        c,
        sess,
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        API_MSI,
    )
    .await;
    let body = html! {
        @if let Some(e) = err { (alert(e)) }
        table aria-label="Storage accounts" {
            thead { tr { th { "Name" } th { "Resource group" } th { "Region" } th { "Encryption type" } th { "CMK status" } } }
            tbody {
                @for a in &accounts {
                    tr {
                        td { a href={"/console/account?id=" (enc(s(a, "/id")))} { (s(a, "/name")) } }
                        td { (group_of(s(a, "/id"))) }
                        td { (s(a, "/location")) }
                        td { (encryption_type(a)) }
                        td { (cmk_status(a)) }
                    }
                }
                @if accounts.is_empty() { tr { td colspan="5" { "No storage accounts yet." } } }
            }
        }
        section aria-labelledby="create-account" {
            h2 #create-account { "Create a storage account" }
            form method="post" action="/console/storage" {
                (csrf(sess))
                label for="account-name" { "Storage account name" }
                input #account-name name="name" required pattern="[a-z0-9]{3,24}";
                (placement_fields(&subs))
                (region_select(c, "account-region"))
                label.check { input type="checkbox" name="systemIdentity" value="on" checked; "System-assigned managed identity" }
                label for="ua-identity" { "User-assigned managed identity" }
                select #ua-identity name="userIdentity" {
                    option value="" { "None" }
                    @for i in &identities { option value=(s(i, "/id")) { (s(i, "/name")) } }
                }
                button type="submit" { "Create" }
            }
        }
    };
    html_response(status, layout(sess, "storage", "Storage accounts", body))
}

fn identity_body(system: bool, user: Option<&str>) -> Option<Value> {
    match (system, user) {
        (false, None) => None,
        (true, None) => Some(json!({"type": "SystemAssigned"})),
        (sys, Some(u)) => Some(json!({
            "type": if sys { "SystemAssigned,UserAssigned" } else { "UserAssigned" },
            "userAssignedIdentities": { u: {} },
        })),
    }
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
    let user = Some(q(&f, "userIdentity")).filter(|u| !u.is_empty());
    let mut body = json!({
        "location": loc,
        "sku": {"name": "Standard_LRS"},
        "kind": "StorageV2",
        "properties": {},
    });
    if let Some(i) = identity_body(f.contains_key("systemIdentity"), user) {
        body["identity"] = i;
    }
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}",
        enc_segment(sub),
        enc_segment(rg),
        enc_segment(name)
    );
    let r = c
        .arm(
            &sess,
            Method::PUT,
            &format!("{id}?api-version={API_STORAGE}"),
            Some(&body),
        )
        .await;
    if !r.ok() {
        return list_page(&c, &sess, Some(&r.error()), r.status).await;
    }
    Redirect::to(&format!("/console/account?id={}", enc(&id))).into_response()
}

async fn account_of(c: &Console, sess: &Session, id: &str) -> Result<Value, Response> {
    c.resource(sess, id, API_STORAGE, "storage", "Storage account")
        .await
}

fn encryption_summary(a: &Value) -> maud::Markup {
    let kv = "/properties/encryption/keyvaultproperties";
    html! {
        dl.props aria-label="Encryption" {
            dt { "Encryption type" } dd #encryption-type { (encryption_type(a)) }
            @if encryption_type(a) == "Customer-managed keys" {
                dt { "Key" } dd { (s(a, &format!("{kv}/keyvaulturi"))) "keys/" (s(a, &format!("{kv}/keyname"))) }
                dt { "Key version in use" } dd #key-version { (s(a, &format!("{kv}/currentVersionedKeyIdentifier")).rsplit('/').next().unwrap_or("")) }
                dt { "Automatic key version updates" } dd { @if s(a, &format!("{kv}/keyversion")).is_empty() { "Enabled" } @else { "Disabled (pinned version)" } }
                dt { "CMK status" } dd #cmk-status { (cmk_status(a)) }
                @let m = s(a, "/properties/encryption/cmkHealth/message");
                @if !m.is_empty() { dt { "Status detail" } dd { (m) } }
            }
        }
    }
}

/// Containers of an account (Blob `List Containers`), or the error that prevented listing.
async fn containers(c: &Console, sess: &Session, a: &Value) -> Result<Vec<String>, String> {
    Ok(list_xml(c, sess, a, "", &[("comp", "list")], "Container")
        .await?
        .iter()
        .map(|c| field(c, "Name"))
        .collect())
}

/// The `<tag>` items of a Blob list operation, following `NextMarker` (at most `MAX_PAGES`
/// pages).
async fn list_xml(
    c: &Console,
    sess: &Session,
    a: &Value,
    rest: &str,
    query: &[(&str, &str)],
    tag: &str,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut marker = String::new();
    for _ in 0..MAX_PAGES {
        let mut q = query.to_vec();
        if !marker.is_empty() {
            q.push(("marker", &marker));
        }
        let resp = c
            .blob(
                sess,
                s(a, "/id"),
                s(a, "/name"),
                Method::GET,
                rest,
                &q,
                &[],
                Body::empty(),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(blob_error(resp).await);
        }
        let xml = read_body(resp.into_body(), 16 << 20)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        out.extend(elements(&xml, tag).iter().map(|x| x.to_string()));
        marker = field(&xml, "NextMarker");
        if marker.is_empty() {
            break;
        }
    }
    Ok(out)
}

/// The inner text of every `<tag>…</tag>`.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
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

fn field(xml: &str, tag: &str) -> String {
    elements(xml, tag)
        .first()
        .map(|v| {
            v.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        })
        .unwrap_or_default()
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
    let a = match account_of(c, sess, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let listed = containers(c, sess, &a).await;
    let can_write = c
        .can(
            sess,
            coffer_domain::blob::actions::CONTAINER_WRITE,
            true,
            id,
        )
        .await
        || c.can(
            sess,
            "Microsoft.Storage/storageAccounts/listKeys/action",
            false,
            id,
        )
        .await;
    let body = html! {
        @if let Some(e) = err { (alert(e)) }
        @if let Some(m) = ok { (notice(m)) }
        dl.props {
            dt { "Region" } dd { (s(&a, "/location")) }
            dt { "Identity" } dd { (match s(&a, "/identity/type") { "" => "None", t => t }) }
            @let p = s(&a, "/identity/principalId");
            @if !p.is_empty() { dt { "Principal ID (system-assigned)" } dd { code { (p) } } }
            dt { "Blob endpoint" } dd { (s(&a, "/properties/primaryEndpoints/blob")) }
        }
        (encryption_summary(&a))
        p { a href={"/console/account/encryption?id=" (enc(id))} { "Encryption" } }
        h2 { "Containers" }
        @match &listed {
            Err(e) => { (alert(e)) }
            Ok(list) => {
                table aria-label="Containers" {
                    thead { tr { th { "Name" } th { "Actions" } } }
                    tbody {
                        @for n in list {
                            tr {
                                td { a href={"/console/container?id=" (enc(id)) "&c=" (enc(n))} { (n) } }
                                td {
                                    form.inline method="post" action="/console/account/containers" {
                                        (csrf(sess))
                                        input type="hidden" name="id" value=(id);
                                        input type="hidden" name="container" value=(n);
                                        button.danger name="action" value="delete" disabled[!can_write] aria-label={"Delete container " (n)} { "Delete" }
                                    }
                                }
                            }
                        }
                        @if list.is_empty() { tr { td colspan="2" { "No containers yet." } } }
                    }
                }
            }
        }
        form method="post" action="/console/account/containers" {
            (csrf(sess))
            input type="hidden" name="id" value=(id);
            label for="container-name" { "Container name" }
            input #container-name name="container" required pattern="[a-z0-9-]{3,63}";
            button name="action" value="create" disabled[!can_write] { "Create container" }
        }
    };
    page(
        sess,
        "storage",
        &format!("Storage account {}", s(&a, "/name")),
        body,
    )
}

pub async fn container_action(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    Form(f): Form<FormData>,
) -> Response {
    let sess = posted!(c, h, f);
    let id = q(&f, "id");
    let a = match account_of(&c, &sess, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let name = q(&f, "container").trim();
    let method = if q(&f, "action") == "delete" {
        Method::DELETE
    } else {
        Method::PUT
    };
    let r = c
        .blob(
            &sess,
            id,
            s(&a, "/name"),
            method,
            &format!("/{}", enc_segment(name)),
            &[("restype", "container")],
            &[],
            Body::empty(),
        )
        .await;
    match r {
        Ok(r) if r.status().is_success() => {
            show_page(
                &c,
                &sess,
                id,
                None,
                Some(&format!("Container {name}: done.")),
            )
            .await
        }
        Ok(r) => {
            let status = r.status();
            let e = blob_error(r).await;
            crate::with_status(show_page(&c, &sess, id, Some(&e), None).await, status)
        }
        Err(e) => show_page(&c, &sess, id, Some(&e), None).await,
    }
}

pub async fn container(State(c): State<Arc<Console>>, h: HeaderMap, qs: Q) -> Response {
    let sess = signed_in!(c, h);
    container_page(&c, &sess, q(&qs, "id"), q(&qs, "c"), None, None).await
}

async fn container_page(
    c: &Console,
    sess: &Session,
    id: &str,
    name: &str,
    err: Option<&str>,
    ok: Option<&str>,
) -> Response {
    let a = match account_of(c, sess, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let blobs: Result<Vec<(String, String, String)>, String> = list_xml(
        c,
        sess,
        &a,
        &format!("/{}", enc_segment(name)),
        &[("restype", "container"), ("comp", "list")],
        "Blob",
    )
    .await
    .map(|items| {
        items
            .iter()
            .map(|b| {
                (
                    field(b, "Name"),
                    field(b, "Content-Length"),
                    field(b, "Last-Modified"),
                )
            })
            .collect()
    });
    let base = format!("id={}&c={}", enc(id), enc(name));
    let body = html! {
        @if let Some(e) = err { (alert(e)) }
        @if let Some(m) = ok { (notice(m)) }
        p { a href={"/console/account?id=" (enc(id))} { "Back to storage account " (s(&a, "/name")) } }
        @match &blobs {
            Err(e) => { (alert(e)) }
            Ok(list) => {
                table aria-label="Blobs" {
                    thead { tr { th { "Name" } th { "Size (bytes)" } th { "Last modified" } th { "Actions" } } }
                    tbody {
                        @for (n, size, modified) in list {
                            tr {
                                td { (n) }
                                td { (size) }
                                td { (modified) }
                                td {
                                    a href={"/console/container/download?" (base) "&name=" (enc(n))} aria-label={"Download " (n)} { "Download" }
                                    form.inline method="post" action="/console/container/delete" {
                                        (csrf(sess))
                                        input type="hidden" name="id" value=(id);
                                        input type="hidden" name="c" value=(name);
                                        input type="hidden" name="name" value=(n);
                                        button.danger aria-label={"Delete " (n)} { "Delete" }
                                    }
                                }
                            }
                        }
                        @if list.is_empty() { tr { td colspan="4" { "No blobs yet." } } }
                    }
                }
            }
        }
        section aria-labelledby="upload" {
            h2 #upload { "Upload" }
            form #upload-form data-action={"/console/container/upload?" (base)} data-csrf=(sess.csrf) {
                label for="upload-file" { "File" }
                input #upload-file type="file" required;
                label for="upload-name" { "Blob name" }
                input #upload-name placeholder="the file's name";
                button type="submit" { "Upload" }
                label for="upload-progress" { "Upload progress" }
                progress #upload-progress max="100" value="0" {}
                p #upload-status aria-live="polite" {}
            }
        }
    };
    page(sess, "storage", &format!("Container {name}"), body)
}

/// A request on the blob `name` of `container` in the account `id`: the account's name is
/// the id's last segment (the user's `listKeys` inside `Console::blob` proves the account
/// exists and that the user may use its key, so no separate lookup).
async fn blob_at(
    c: &Console,
    sess: &Session,
    id: &str,
    method: Method,
    (container, name): (&str, &str),
    extra: &[(&str, String)],
    body: Body,
) -> Result<Response, String> {
    if !crate::valid_id(id) {
        return Err("Not a storage account id.".into());
    }
    let account = id.rsplit('/').next().unwrap_or_default();
    c.blob(
        sess,
        id,
        account,
        method,
        &format!("/{}/{}", enc_segment(container), enc_blob_path(name)),
        &[],
        extra,
        body,
    )
    .await
}

/// The browser sends the file as the request body (the script shows progress); it streams
/// through to Put Blob.
pub async fn upload(State(c): State<Arc<Console>>, qs: Q, req: Request) -> Response {
    let h = req.headers().clone();
    let Some(sess) = c.session(&h) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if !c.check_post(&h, &sess, None) {
        return crate::forbidden("The upload's security token is missing or wrong (CSRF).");
    }
    let (id, container, name) = (q(&qs, "id"), q(&qs, "c"), q(&qs, "name"));
    if name.is_empty() || container.is_empty() {
        return (StatusCode::BAD_REQUEST, "A blob name is required.").into_response();
    }
    let len = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string();
    let r = blob_at(
        &c,
        &sess,
        id,
        Method::PUT,
        (container, name),
        &[
            ("x-ms-blob-type", "BlockBlob".into()),
            ("content-length", len),
            ("content-type", "application/octet-stream".into()),
        ],
        req.into_body(),
    )
    .await;
    match r {
        Ok(r) if r.status().is_success() => (StatusCode::CREATED, "Uploaded.").into_response(),
        Ok(r) => {
            let status = r.status();
            (status, blob_error(r).await).into_response()
        }
        Err(e) => (StatusCode::FORBIDDEN, e).into_response(),
    }
}

/// Get Blob, streamed to the browser as a download; a failure is a page with Azure's error.
pub async fn download(State(c): State<Arc<Console>>, h: HeaderMap, qs: Q) -> Response {
    let sess = signed_in!(c, h);
    let (id, container, name) = (q(&qs, "id"), q(&qs, "c"), q(&qs, "name"));
    let r = blob_at(
        &c,
        &sess,
        id,
        Method::GET,
        (container, name),
        &[],
        Body::empty(),
    )
    .await;
    let r = match r {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let status = r.status();
            let e = blob_error(r).await;
            return crate::with_status(
                page(&sess, "storage", "Download failed", alert(&e)),
                status,
            );
        }
        Err(e) => {
            return crate::with_status(
                page(&sess, "storage", "Download failed", alert(&e)),
                StatusCode::FORBIDDEN,
            );
        }
    };
    let (parts, body) = r.into_parts();
    let mut out = Response::new(body);
    if let Some(l) = parts.headers.get(header::CONTENT_LENGTH) {
        out.headers_mut().insert(header::CONTENT_LENGTH, l.clone());
    }
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let file: String = name
        .rsplit('/')
        .next()
        .unwrap_or("blob")
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ".-_".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        out.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    out
}

pub async fn blob_delete(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    Form(f): Form<FormData>,
) -> Response {
    let sess = posted!(c, h, f);
    let (id, container, name) = (q(&f, "id"), q(&f, "c"), q(&f, "name"));
    let r = blob_at(
        &c,
        &sess,
        id,
        Method::DELETE,
        (container, name),
        &[],
        Body::empty(),
    )
    .await;
    match r {
        Ok(r) if r.status().is_success() => {
            container_page(
                &c,
                &sess,
                id,
                container,
                None,
                Some(&format!("Deleted {name}.")),
            )
            .await
        }
        Ok(r) => {
            let status = r.status();
            let e = blob_error(r).await;
            crate::with_status(
                container_page(&c, &sess, id, container, Some(&e), None).await,
                status,
            )
        }
        Err(e) => container_page(&c, &sess, id, container, Some(&e), None).await,
    }
}

pub async fn encryption(State(c): State<Arc<Console>>, h: HeaderMap, qs: Q) -> Response {
    let sess = signed_in!(c, h);
    encryption_page(&c, &sess, q(&qs, "id"), None, None, StatusCode::OK).await
}

async fn encryption_page(
    c: &Console,
    sess: &Session,
    id: &str,
    err: Option<&str>,
    ok: Option<&str>,
    status: StatusCode,
) -> Response {
    let a = match account_of(c, sess, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let vaults = list_kind(c, sess, "Microsoft.KeyVault/vaults", API_KEYVAULT).await;
    let identities = list_kind(
        c,
        sess,
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        API_MSI,
    )
    .await;
    let can_write = c.can(sess, WRITE, false, id).await;
    let cmk = encryption_type(&a) == "Customer-managed keys";
    let ua = s(&a, "/properties/encryption/identity/userAssignedIdentity");
    let kvp = "/properties/encryption/keyvaultproperties";
    let current_vault = s(&a, &format!("{kvp}/keyvaulturi"))
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let is_current = |v: &Value| {
        cmk && s(v, "/properties/vaultUri")
            .trim_end_matches('/')
            .eq_ignore_ascii_case(&current_vault)
    };
    let body = html! {
        @if let Some(e) = err { (alert(e)) }
        @if let Some(m) = ok { (notice(m)) }
        p { a href={"/console/account?id=" (enc(id))} { "Back to storage account " (s(&a, "/name")) } }
        (encryption_summary(&a))
        form #encryption-form method="post" action="/console/account/encryption"
            data-key=(s(&a, &format!("{kvp}/keyname"))) data-version=(s(&a, &format!("{kvp}/keyversion"))) {
            (csrf(sess))
            input type="hidden" name="id" value=(id);
            fieldset {
                legend { "Encryption type" }
                label.check { input type="radio" name="keySource" value="Microsoft.Storage" checked[!cmk]; "Microsoft-managed keys" }
                label.check { input type="radio" name="keySource" value="Microsoft.Keyvault" checked[cmk]; "Customer-managed keys" }
            }
            fieldset #cmk-fields {
                legend { "Key selection method" }
                label.check { input type="radio" name="method" value="vault" checked; "Select from key vault" }
                label.check { input type="radio" name="method" value="uri"; "Enter key URI" }
                div #select-from-vault {
                    label for="kv-select" { "Key vault" }
                    select #kv-select name="vault" {
                        option value="" { "Select a key vault" }
                        @for v in &vaults { option value=(s(v, "/id")) selected[is_current(v)] { (s(v, "/name")) " (" (s(v, "/location")) ")" } }
                    }
                    label for="key-select" { "Key" }
                    select #key-select name="key" { option value="" { "Select a key" } }
                    label for="version-select" { "Version" }
                    select #version-select name="version" { option value="" { "Automatic updates (latest version)" } }
                }
                div #enter-key-uri {
                    label for="key-uri" { "Key URI" }
                    input #key-uri name="keyUri" placeholder="https://{vault}.vault…/keys/{name}[/{version}]";
                }
            }
            fieldset {
                legend { "Identity type" }
                label.check { input type="radio" name="identityType" value="SystemAssigned" checked[ua.is_empty()]; "System-assigned" }
                label.check { input type="radio" name="identityType" value="UserAssigned" checked[!ua.is_empty()]; "User-assigned" }
                label for="ua-select" { "User-assigned identity" }
                select #ua-select name="userIdentity" {
                    option value="" { "None" }
                    @for i in &identities { option value=(s(i, "/id")) selected[s(i, "/id").eq_ignore_ascii_case(ua)] { (s(i, "/name")) } }
                }
            }
            button type="submit" disabled[!can_write] { "Save" }
            @if !can_write { p.hint { "You can view this page but not change it: saving needs " code { (WRITE) } "." } }
        }
    };
    html_response(
        status,
        layout(
            sess,
            "storage",
            &format!("Encryption — {}", s(&a, "/name")),
            body,
        ),
    )
}

/// `https://{host}/keys/{name}[/{version}]` → (vault URI, name, version).
fn split_key_uri(uri: &str) -> Option<(String, String, String)> {
    let rest = uri.trim().strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let mut parts = path.trim_end_matches('/').split('/');
    if parts.next()? != "keys" {
        return None;
    }
    let name = parts.next().filter(|n| !n.is_empty())?.to_string();
    let version = parts.next().unwrap_or("").to_string();
    if parts.next().is_some() {
        return None;
    }
    Some((format!("https://{host}/"), name, version))
}

pub async fn encryption_save(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    Form(f): Form<FormData>,
) -> Response {
    let sess = posted!(c, h, f);
    let id = q(&f, "id");
    let a = match account_of(&c, &sess, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let fail = |e: String, st: StatusCode| {
        let c = c.clone();
        let sess = sess.clone();
        async move { encryption_page(&c, &sess, id, Some(&e), None, st).await }
    };
    let patch = if q(&f, "keySource") == "Microsoft.Keyvault" {
        let (vault_uri, key, version) = if q(&f, "method") == "uri" {
            match split_key_uri(q(&f, "keyUri")) {
                Some(x) => x,
                None => {
                    return fail(
                        "Enter the key's URI: https://{vault}.vault.{suffix}/keys/{name}, optionally followed by /{version}.".into(),
                        StatusCode::BAD_REQUEST,
                    )
                    .await;
                }
            }
        } else {
            let vault = q(&f, "vault");
            if !crate::valid_id(vault) || q(&f, "key").is_empty() {
                return fail(
                    "Select a key vault and a key.".into(),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
            let v = c
                .arm(
                    &sess,
                    Method::GET,
                    &format!("{vault}?api-version={API_KEYVAULT}"),
                    None,
                )
                .await;
            if !v.ok() {
                return fail(v.error(), v.status).await;
            }
            (
                s(&v.body, "/properties/vaultUri").to_string(),
                q(&f, "key").to_string(),
                q(&f, "version").to_string(),
            )
        };
        let user = Some(q(&f, "userIdentity"))
            .filter(|u| q(&f, "identityType") == "UserAssigned" && !u.is_empty());
        if q(&f, "identityType") == "UserAssigned" && user.is_none() {
            return fail(
                "Select the user-assigned identity the account uses to reach the key.".into(),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
        let mut enc = json!({
            "keySource": "Microsoft.Keyvault",
            "keyvaultproperties": {"keyvaulturi": vault_uri, "keyname": key, "keyversion": version},
        });
        let mut body = json!({});
        let has_system = s(&a, "/identity/type").contains("SystemAssigned");
        let attached = |u: &str| {
            a.pointer("/identity/userAssignedIdentities")
                .and_then(Value::as_object)
                .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(u)))
        };
        match user {
            Some(u) => {
                enc["identity"] = json!({"userAssignedIdentity": u});
                if !attached(u) {
                    body["identity"] = identity_body(has_system, Some(u)).unwrap_or(Value::Null);
                }
            }
            None if !has_system => {
                body["identity"] = json!({"type": "SystemAssigned"});
            }
            None => {}
        }
        body["properties"] = json!({"encryption": enc});
        body
    } else {
        json!({"properties": {"encryption": {"keySource": "Microsoft.Storage", "services": {"blob": {"enabled": true}}}}})
    };
    let r = c
        .arm(
            &sess,
            Method::PATCH,
            &format!("{id}?api-version={API_STORAGE}"),
            Some(&patch),
        )
        .await;
    if !r.ok() {
        return fail(r.error(), r.status).await;
    }
    encryption_page(
        &c,
        &sess,
        id,
        None,
        Some("Encryption settings saved."),
        StatusCode::OK,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_uris() {
        assert_eq!(
            split_key_uri("https://kv.vault.x:1/keys/k/abc"),
            Some(("https://kv.vault.x:1/".into(), "k".into(), "abc".into()))
        );
        assert_eq!(
            split_key_uri("https://kv.vault.x/keys/k/"),
            Some(("https://kv.vault.x/".into(), "k".into(), String::new()))
        );
        assert_eq!(split_key_uri("https://kv.vault.x/secrets/k"), None);
        assert_eq!(split_key_uri("http://kv/keys/k"), None);
        assert_eq!(split_key_uri("https://kv/keys/k/v/extra"), None);
    }

    #[test]
    fn xml_fields() {
        let x = "<Blobs><Blob><Name>a&amp;b</Name><Content-Length>3</Content-Length></Blob><Blob><Name>c</Name></Blob></Blobs>";
        let b = elements(x, "Blob");
        assert_eq!(b.len(), 2);
        assert_eq!(field(b[0], "Name"), "a&b");
        assert_eq!(field(b[1], "Content-Length"), "");
    }
}
