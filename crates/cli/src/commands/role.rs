//! `coffer role assignment create|list|delete` and `coffer role definition list`
//! (ARM `Microsoft.Authorization`). Roles are named by display name ("Key Vault Crypto
//! Service Encryption User"), GUID, or full role definition id.
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::ClientArgs;
use crate::error::{ApiError, usage};
use crate::session::Session;

pub const ROLE_DEF_API: &str = "2022-05-01-preview";
pub const ROLE_ASSIGN_API: &str = "2022-04-01";

#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Role assignments: who holds which role at which scope.
    Assignment {
        #[command(subcommand)]
        cmd: AssignmentCmd,
    },
    /// Role definitions (the built-in roles).
    Definition {
        #[command(subcommand)]
        cmd: DefinitionCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum DefinitionCmd {
    /// List the role definitions, or one by name.
    ///
    /// Example: coffer role definition list --name "Key Vault Crypto Officer" --query [0].name -o tsv
    List {
        /// A role name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AssignmentCmd {
    /// Assign a role to a principal at a scope.
    ///
    /// Example: coffer role assignment create --assignee-object-id 0b1c… --role "Key Vault Crypto Service Encryption User" --scope /subscriptions/S/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1
    Create {
        /// Object id of the user, service principal or managed identity.
        #[arg(long)]
        assignee_object_id: String,
        /// User, ServicePrincipal or Group [default: from the principal].
        #[arg(long)]
        assignee_principal_type: Option<String>,
        /// Role name, GUID or role definition id.
        #[arg(long)]
        role: String,
        /// Scope (an ARM id) [default: the resource group given with -g, else the subscription].
        #[arg(long)]
        scope: Option<String>,
        /// Resource group, as the scope.
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List role assignments at a scope (and above and below it).
    ///
    /// Example: coffer role assignment list --scope /subscriptions/S/resourceGroups/rg1 --assignee-object-id 0b1c… -o table
    List {
        /// Only this principal's assignments.
        #[arg(long)]
        assignee_object_id: Option<String>,
        /// Only this role (name, GUID or id).
        #[arg(long)]
        role: Option<String>,
        /// Scope [default: the resource group given with -g, else the subscription].
        #[arg(long)]
        scope: Option<String>,
        /// Resource group, as the scope.
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete role assignments: by id, or those at exactly --scope matching
    /// --assignee-object-id and/or --role.
    ///
    /// Example: coffer role assignment delete --assignee-object-id 0b1c… --role "Key Vault Crypto Officer" --scope /subscriptions/S/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/kv1
    Delete {
        /// Role assignment ids.
        #[arg(long, num_args = 1..)]
        ids: Vec<String>,
        /// Only this principal's assignments.
        #[arg(long)]
        assignee_object_id: Option<String>,
        /// Only this role (name, GUID or id).
        #[arg(long)]
        role: Option<String>,
        /// Scope [default: the resource group given with -g, else the subscription].
        #[arg(long)]
        scope: Option<String>,
        /// Resource group, as the scope.
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn scope_of(s: &Session, scope: Option<String>, group: Option<String>) -> anyhow::Result<String> {
    match (scope, group) {
        (Some(_), Some(_)) => Err(usage("give --scope or -g, not both")),
        (Some(sc), None) => Ok(sc.trim_end_matches('/').to_string()),
        (None, Some(g)) => Ok(format!("{}/resourceGroups/{g}", s.subscription_path())),
        (None, None) => Ok(s.subscription_path()),
    }
}

/// The role definition id for a role name, GUID or id.
pub async fn role_definition_id(s: &Session, role: &str) -> anyhow::Result<String> {
    if role.starts_with('/') {
        return Ok(role.to_string());
    }
    if is_guid(role) {
        return Ok(format!(
            "{}/providers/Microsoft.Authorization/roleDefinitions/{role}",
            s.subscription_path()
        ));
    }
    let filter = format!("roleName eq '{}'", role.replace('\'', "''"));
    let q =
        serde_urlencoded::to_string([("$filter", filter.as_str()), ("api-version", ROLE_DEF_API)])?;
    let defs = s
        .arm_list(&format!(
            "{}/providers/Microsoft.Authorization/roleDefinitions?{q}",
            s.subscription_path()
        ))
        .await?;
    defs.first()
        .and_then(|d| d["id"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError {
                status: 404,
                code: "RoleDefinitionDoesNotExist".into(),
                message: format!("No role is named '{role}' (see coffer role definition list)."),
                request_id: None,
            }
            .into()
        })
}

/// Assign `role` (name, GUID or id) to `principal` at `scope`; the created assignment, or
/// the existing one when the principal already holds the role there (so scripts can re-run).
/// `--grant-self`: give the signed-in principal `role` on a resource just created.
pub async fn grant_self(
    s: &Session,
    scope: &str,
    (role, role_name): (&str, &str),
    what: &str,
) -> anyhow::Result<()> {
    let me = s.object_id().await?;
    assign(s, scope, role, &me, None)
        .await
        .map(|_| ())
        .map_err(|e| {
            e.context(format!(
                "the {what} was created, but assigning you {role_name} failed"
            ))
        })
}

pub async fn assign(
    s: &Session,
    scope: &str,
    role: &str,
    principal: &str,
    principal_type: Option<&str>,
) -> anyhow::Result<Value> {
    let rd = role_definition_id(s, role).await?;
    let name = coffer_crypto::random::uuid().map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
    let mut props = json!({"roleDefinitionId": rd, "principalId": principal});
    if let Some(t) = principal_type {
        props["principalType"] = json!(t);
    }
    let scope = scope.trim_end_matches('/');
    let path = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?api-version={ROLE_ASSIGN_API}"
    );
    match s
        .arm(Method::PUT, &path, Some(&json!({"properties": props})))
        .await
    {
        Err(e) if crate::blob::is_code(&e, "RoleAssignmentExists") => {
            let existing = matching(s, scope, Some(principal), Some(&rd), true).await?;
            existing.into_iter().next().ok_or(e)
        }
        other => other,
    }
}

/// role definition GUID → name, for list output.
async fn role_names(s: &Session) -> anyhow::Result<Vec<(String, String)>> {
    let defs = s
        .arm_list(&format!(
            "{}/providers/Microsoft.Authorization/roleDefinitions?api-version={ROLE_DEF_API}",
            s.subscription_path()
        ))
        .await?;
    Ok(defs
        .iter()
        .filter_map(|d| {
            Some((
                d["name"].as_str()?.to_ascii_lowercase(),
                d["properties"]["roleName"].as_str()?.to_string(),
            ))
        })
        .collect())
}

fn guid_of(id: &str) -> String {
    id.rsplit('/').next().unwrap_or(id).to_ascii_lowercase()
}

/// An assignment as `az` prints it: `properties` lifted to the top, plus the role's name.
fn flatten(a: &Value, names: &[(String, String)]) -> Value {
    let mut out = json!({"id": a["id"], "name": a["name"], "type": a["type"]});
    if let (Some(o), Some(p)) = (out.as_object_mut(), a["properties"].as_object()) {
        for (k, v) in p {
            o.insert(k.clone(), v.clone());
        }
    }
    let guid = guid_of(a["properties"]["roleDefinitionId"].as_str().unwrap_or(""));
    if let Some((_, n)) = names.iter().find(|(g, _)| *g == guid) {
        out["roleDefinitionName"] = json!(n);
    }
    out
}

fn view(v: &Value) -> Vec<(&'static str, Value)> {
    vec![
        ("Principal", v["principalId"].clone()),
        ("Role", v["roleDefinitionName"].clone()),
        ("Scope", v["scope"].clone()),
    ]
}

async fn matching(
    s: &Session,
    scope: &str,
    principal: Option<&str>,
    role: Option<&str>,
    at_scope: bool,
) -> anyhow::Result<Vec<Value>> {
    let mut filters = Vec::new();
    if at_scope {
        filters.push("atScope()".to_string());
    }
    if let Some(p) = principal {
        filters.push(format!("principalId eq '{p}'"));
    }
    let mut pairs = vec![("api-version".to_string(), ROLE_ASSIGN_API.to_string())];
    if !filters.is_empty() {
        pairs.push(("$filter".into(), filters.join(" and ")));
    }
    let q = serde_urlencoded::to_string(&pairs)?;
    let all = s
        .arm_list(&format!(
            "{scope}/providers/Microsoft.Authorization/roleAssignments?{q}"
        ))
        .await?;
    let role_guid = match role {
        Some(r) => Some(guid_of(&role_definition_id(s, r).await?)),
        None => None,
    };
    Ok(all
        .into_iter()
        .filter(|a| {
            role_guid.as_deref().is_none_or(|g| {
                guid_of(a["properties"]["roleDefinitionId"].as_str().unwrap_or("")) == g
            })
        })
        .filter(|a| {
            !at_scope
                || a["properties"]["scope"]
                    .as_str()
                    .is_some_and(|sc| sc.trim_end_matches('/').eq_ignore_ascii_case(scope))
        })
        .collect())
}

pub async fn run(cmd: RoleCmd) -> anyhow::Result<()> {
    match cmd {
        RoleCmd::Definition {
            cmd: DefinitionCmd::List { name, client },
        } => {
            let s = client.session()?;
            let v = match name {
                Some(n) => {
                    let filter = format!("roleName eq '{}'", n.replace('\'', "''"));
                    let q = serde_urlencoded::to_string([
                        ("$filter", filter.as_str()),
                        ("api-version", ROLE_DEF_API),
                    ])?;
                    s.arm_list(&format!(
                        "{}/providers/Microsoft.Authorization/roleDefinitions?{q}",
                        s.subscription_path()
                    ))
                    .await?
                }
                None => {
                    s.arm_list(&format!(
                        "{}/providers/Microsoft.Authorization/roleDefinitions?api-version={ROLE_DEF_API}",
                        s.subscription_path()
                    ))
                    .await?
                }
            };
            let view = |d: &Value| {
                vec![
                    ("Name", d["properties"]["roleName"].clone()),
                    ("Id", d["name"].clone()),
                    ("Description", d["properties"]["description"].clone()),
                ]
            };
            client.printer().print_view(&Value::Array(v), Some(&view))
        }
        RoleCmd::Assignment { cmd } => match cmd {
            AssignmentCmd::Create {
                assignee_object_id,
                assignee_principal_type,
                role,
                scope,
                resource_group,
                client,
            } => {
                let s = client.session()?;
                let scope = scope_of(&s, scope, resource_group)?;
                let a = assign(
                    &s,
                    &scope,
                    &role,
                    &assignee_object_id,
                    assignee_principal_type.as_deref(),
                )
                .await?;
                let names = role_names(&s).await.unwrap_or_default();
                client
                    .printer()
                    .print_view(&flatten(&a, &names), Some(&view))
            }
            AssignmentCmd::List {
                assignee_object_id,
                role,
                scope,
                resource_group,
                client,
            } => {
                let s = client.session()?;
                let scope = scope_of(&s, scope, resource_group)?;
                let all = matching(
                    &s,
                    &scope,
                    assignee_object_id.as_deref(),
                    role.as_deref(),
                    false,
                )
                .await?;
                let names = role_names(&s).await.unwrap_or_default();
                let out: Vec<Value> = all.iter().map(|a| flatten(a, &names)).collect();
                client.printer().print_view(&Value::Array(out), Some(&view))
            }
            AssignmentCmd::Delete {
                ids,
                assignee_object_id,
                role,
                scope,
                resource_group,
                client,
            } => {
                let s = client.session()?;
                let targets: Vec<String> = if !ids.is_empty() {
                    if assignee_object_id.is_some()
                        || role.is_some()
                        || scope.is_some()
                        || resource_group.is_some()
                    {
                        return Err(usage("--ids cannot be combined with other selectors"));
                    }
                    ids
                } else {
                    if assignee_object_id.is_none() && role.is_none() {
                        return Err(usage(
                            "give --ids, or --assignee-object-id and/or --role (with --scope or -g)",
                        ));
                    }
                    let scope = scope_of(&s, scope, resource_group)?;
                    let found = matching(
                        &s,
                        &scope,
                        assignee_object_id.as_deref(),
                        role.as_deref(),
                        true,
                    )
                    .await?;
                    if found.is_empty() {
                        return Err(ApiError {
                            status: 404,
                            code: "RoleAssignmentNotFound".into(),
                            message: "No matching role assignment at this scope.".into(),
                            request_id: None,
                        }
                        .into());
                    }
                    found
                        .iter()
                        .filter_map(|a| a["id"].as_str().map(str::to_string))
                        .collect()
                };
                for id in targets {
                    s.arm(
                        Method::DELETE,
                        &format!("{}?api-version={ROLE_ASSIGN_API}", id.trim_end_matches('/')),
                        None,
                    )
                    .await?;
                }
                Ok(())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids() {
        assert!(is_guid("e147488a-f6f5-4113-8e2d-b22465e65bf6"));
        assert!(!is_guid("Key Vault Crypto Officer"));
        assert!(!is_guid("e147488a-f6f5-4113-8e2d-b22465e65bf"));
        let a = json!({"id": "/x/ra/1", "name": "1", "type": "t", "properties": {
            "principalId": "p", "scope": "/s", "roleDefinitionId": "/s/providers/Microsoft.Authorization/roleDefinitions/E147488A-f6f5-4113-8e2d-b22465e65bf6"}});
        let f = flatten(
            &a,
            &[("e147488a-f6f5-4113-8e2d-b22465e65bf6".into(), "Enc".into())],
        );
        assert_eq!(f["principalId"], "p");
        assert_eq!(f["roleDefinitionName"], "Enc");
        assert_eq!(f["id"], "/x/ra/1");
    }
}
