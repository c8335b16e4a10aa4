//! Access control (IAM): role assignments at a scope.
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, State};
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode};
use maud::html;
use serde_json::json;

use crate::api::{API_AUTHZ, API_KEYVAULT, API_MSI, API_STORAGE, ApiResp};
use crate::vaults::{list_kind, subscriptions};
use crate::{
    Console, FormData, Q, Session, alert, csrf, html_response, layout, notice, posted, q, s,
    signed_in,
};

/// Assign `role` (a role definition GUID) at `scope` to `principal`, as the user.
pub(crate) async fn assign(
    c: &Console,
    sess: &Session,
    scope: &str,
    role: &str,
    principal: &str,
) -> ApiResp {
    let sub = scope
        .split('/')
        .nth(2)
        .map(|s| format!("/subscriptions/{s}"))
        .unwrap_or_default();
    let name = coffer_crypto::random::uuid().unwrap_or_default();
    c.arm(
        sess,
        Method::PUT,
        &format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={API_AUTHZ}"
        ),
        Some(&json!({"properties": {
            "roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}"),
            "principalId": principal,
        }})),
    )
    .await
}

pub async fn page(State(c): State<Arc<Console>>, h: HeaderMap, qs: Q) -> Response {
    let sess = signed_in!(c, h);
    let scope = q(&qs, "scope");
    if !scope.is_empty() && !crate::valid_id(scope) {
        return crate::bad_request("Not a scope.");
    }
    render(&c, &sess, scope, None, None, StatusCode::OK).await
}

async fn render(
    c: &Console,
    sess: &Session,
    scope: &str,
    err: Option<&str>,
    ok: Option<&str>,
    status: StatusCode,
) -> Response {
    let subs = subscriptions(c, sess).await;
    let vaults = list_kind(c, sess, "Microsoft.KeyVault/vaults", API_KEYVAULT).await;
    let accounts = list_kind(c, sess, "Microsoft.Storage/storageAccounts", API_STORAGE).await;
    let identities = list_kind(
        c,
        sess,
        "Microsoft.ManagedIdentity/userAssignedIdentities",
        API_MSI,
    )
    .await;
    let scope = if scope.is_empty() {
        subs.first()
            .map(|(s, _)| format!("/subscriptions/{s}"))
            .unwrap_or_default()
    } else {
        scope.to_string()
    };
    let mut scopes: Vec<(String, String)> = subs
        .iter()
        .map(|(id, n)| (format!("/subscriptions/{id}"), format!("Subscription {n}")))
        .collect();
    scopes.extend(vaults.iter().map(|v| {
        (
            s(v, "/id").to_string(),
            format!("Key vault {}", s(v, "/name")),
        )
    }));
    scopes.extend(accounts.iter().map(|a| {
        (
            s(a, "/id").to_string(),
            format!("Storage account {}", s(a, "/name")),
        )
    }));
    // Who the known principals are.
    let mut members: Vec<(String, String)> =
        vec![(sess.oid().to_string(), format!("{} (you)", sess.username))];
    for a in &accounts {
        let p = s(a, "/identity/principalId");
        if !p.is_empty() {
            members.push((
                p.to_string(),
                format!(
                    "{} (storage account, system-assigned identity)",
                    s(a, "/name")
                ),
            ));
        }
    }
    for i in &identities {
        members.push((
            s(i, "/properties/principalId").to_string(),
            format!("{} (user-assigned identity)", s(i, "/name")),
        ));
    }
    let who: HashMap<String, String> = members
        .iter()
        .map(|(id, n)| (id.to_ascii_lowercase(), n.clone()))
        .collect();
    let defs = c
        .arm(
            sess,
            Method::GET,
            &format!(
                "{scope}/providers/Microsoft.Authorization/roleDefinitions?api-version={API_AUTHZ}"
            ),
            None,
        )
        .await
        .items();
    let role_name: HashMap<String, String> = defs
        .iter()
        .map(|d| {
            (
                s(d, "/name").to_ascii_lowercase(),
                s(d, "/properties/roleName").to_string(),
            )
        })
        .collect();
    let listed = c
        .arm(
            sess,
            Method::GET,
            &format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments?api-version={API_AUTHZ}"
            ),
            None,
        )
        .await;
    let can_write = c
        .can(
            sess,
            "Microsoft.Authorization/roleAssignments/write",
            false,
            &scope,
        )
        .await;
    let mut roles: Vec<(String, String)> = defs
        .iter()
        .map(|d| {
            (
                s(d, "/name").to_string(),
                s(d, "/properties/roleName").to_string(),
            )
        })
        .collect();
    roles.sort_by(|a, b| a.1.cmp(&b.1));
    let body = html! {
        @if let Some(e) = err { (alert(e)) }
        @if let Some(m) = ok { (notice(m)) }
        form method="get" action="/console/iam" {
            label for="scope" { "Scope" }
            select #scope name="scope" {
                @for (id, label) in &scopes { option value=(id) selected[id.eq_ignore_ascii_case(&scope)] { (label) } }
            }
            button type="submit" { "Show" }
        }
        p { "Role assignments that apply at " code { (scope) } }
        @if !listed.ok() { (alert(&listed.error())) }
        table aria-label="Role assignments" {
            thead { tr { th { "Role" } th { "Member" } th { "Scope" } th { "Actions" } } }
            tbody {
                @for a in listed.items() {
                    @let def = s(&a, "/properties/roleDefinitionId").rsplit('/').next().unwrap_or("").to_ascii_lowercase();
                    @let pid = s(&a, "/properties/principalId");
                    tr {
                        td { (role_name.get(&def).cloned().unwrap_or(def.clone())) }
                        td { (who.get(&pid.to_ascii_lowercase()).cloned().unwrap_or_else(|| pid.to_string())) }
                        td { code { (s(&a, "/properties/scope")) } }
                        td {
                            form.inline method="post" action="/console/iam" {
                                (csrf(sess))
                                input type="hidden" name="scope" value=(scope);
                                input type="hidden" name="assignment" value=(s(&a, "/id"));
                                button.danger name="action" value="remove" disabled[!can_write] { "Remove" }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="add-assignment" {
            h2 #add-assignment { "Add role assignment" }
            form method="post" action="/console/iam" {
                (csrf(sess))
                input type="hidden" name="scope" value=(scope);
                label for="role" { "Role" }
                select #role name="role" {
                    @for (id, n) in &roles { option value=(id) { (n) } }
                }
                label for="member" { "Member" }
                select #member name="member" {
                    @for (id, n) in &members { option value=(id) { (n) } }
                }
                label for="object-id" { "Or object ID" }
                input #object-id name="objectId" placeholder="a principal's object ID";
                button name="action" value="add" disabled[!can_write] { "Assign" }
            }
        }
    };
    html_response(status, layout(sess, "iam", "Access control (IAM)", body))
}

pub async fn action(
    State(c): State<Arc<Console>>,
    h: HeaderMap,
    Form(f): Form<FormData>,
) -> Response {
    let sess = posted!(c, h, f);
    let scope = q(&f, "scope");
    if !crate::valid_id(scope) {
        return crate::bad_request("Not a scope.");
    }
    let r = match q(&f, "action") {
        "add" => {
            let principal = match q(&f, "objectId").trim() {
                "" => q(&f, "member"),
                p => p,
            };
            assign(&c, &sess, scope, q(&f, "role"), principal).await
        }
        "remove" => {
            let id = q(&f, "assignment");
            if !crate::valid_id(id)
                || !id
                    .to_ascii_lowercase()
                    .contains("/providers/microsoft.authorization/roleassignments/")
            {
                return crate::bad_request("Not a role assignment id.");
            }
            c.arm(
                &sess,
                Method::DELETE,
                &format!("{id}?api-version={API_AUTHZ}"),
                None,
            )
            .await
        }
        _ => return crate::forbidden("Unknown action."),
    };
    if r.ok() {
        render(
            &c,
            &sess,
            scope,
            None,
            Some("Role assignments updated."),
            StatusCode::OK,
        )
        .await
    } else {
        render(&c, &sess, scope, Some(&r.error()), None, r.status).await
    }
}
