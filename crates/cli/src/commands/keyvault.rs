//! `coffer keyvault create|list|show|delete` (ARM `Microsoft.KeyVault/vaults`) and
//! `coffer keyvault key …` (the Key Vault data plane at `https://{vault}.{vault_dns_suffix}`).
//!
//! Key Vault data actions need a data role on the vault: the administrator is Owner of the
//! subscription, which grants none. `coffer keyvault create --grant-self` assigns the
//! signed-in principal "Key Vault Crypto Officer" on the new vault; otherwise assign a role
//! with `coffer role assignment create`. JSON output is the service's own JSON (key bundles
//! with Unix times, as on the wire).
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{ClientArgs, group_of, parse_time, tags, unix_to_rfc3339};
use crate::commands::group::GROUP_API;
use crate::error::usage;
use crate::session::Session;

pub const KEYVAULT_API: &str = "2026-02-01";
/// "Key Vault Crypto Officer".
pub const CRYPTO_OFFICER: &str = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603";

#[derive(Subcommand, Debug)]
pub enum KeyvaultCmd {
    /// Create a vault (RBAC authorization, soft delete on).
    ///
    /// Example: coffer keyvault create -g rg1 -n kv1 -l eastus --enable-purge-protection true --retention-days 7 --grant-self
    Create {
        /// Resource group.
        #[arg(short = 'g', long)]
        resource_group: String,
        /// Vault name (3-24 characters: letters, digits, hyphens).
        #[arg(short, long)]
        name: String,
        /// Location [default: the resource group's].
        #[arg(short, long)]
        location: Option<String>,
        /// Purge protection (cannot be turned off again). Needed for customer-managed keys.
        #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
        enable_purge_protection: Option<bool>,
        /// Days a deleted vault or key is kept before it is purged (7-90).
        #[arg(long, default_value_t = 90)]
        retention_days: u32,
        /// standard or premium.
        #[arg(long, default_value = "standard")]
        sku: String,
        /// Tags: space-separated KEY=VALUE pairs.
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        /// Also assign yourself "Key Vault Crypto Officer" on the new vault (Owner and
        /// Contributor grant no data actions).
        #[arg(long)]
        grant_self: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List vaults (of a resource group, or of the whole subscription).
    ///
    /// Example: coffer keyvault list -g rg1 -o table
    List {
        /// Resource group.
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a vault.
    ///
    /// Example: coffer keyvault show -n kv1 --query properties.vaultUri -o tsv
    Show {
        /// Vault name.
        #[arg(short, long)]
        name: String,
        /// Resource group [default: found by name].
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a vault (soft delete: it can be recovered until its retention ends).
    ///
    /// Example: coffer keyvault delete -n kv1
    Delete {
        /// Vault name.
        #[arg(short, long)]
        name: String,
        /// Resource group [default: found by name].
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Keys in a vault.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kty {
    #[value(name = "RSA")]
    Rsa,
    #[value(name = "RSA-HSM")]
    RsaHsm,
    #[value(name = "EC")]
    Ec,
    #[value(name = "EC-HSM")]
    EcHsm,
    #[value(name = "oct")]
    Oct,
    #[value(name = "oct-HSM")]
    OctHsm,
}

impl Kty {
    fn wire(self) -> &'static str {
        match self {
            Kty::Rsa => "RSA",
            Kty::RsaHsm => "RSA-HSM",
            Kty::Ec => "EC",
            Kty::EcHsm => "EC-HSM",
            Kty::Oct => "oct",
            Kty::OctHsm => "oct-HSM",
        }
    }
}

/// `--vault-name` and `-n`.
#[derive(Args, Debug)]
pub struct KeyRef {
    /// Vault name.
    #[arg(long)]
    pub vault_name: String,
    /// Key name.
    #[arg(short, long)]
    pub name: String,
}

/// Attribute flags shared by `key create` and `key set-attributes`.
#[derive(Args, Debug)]
pub struct KeyAttrs {
    /// Enable or disable the key.
    #[arg(long, value_name = "true|false")]
    pub enabled: Option<bool>,
    /// Expiry: RFC 3339, YYYY-MM-DD or Unix seconds.
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    /// Not usable before: RFC 3339, YYYY-MM-DD or Unix seconds.
    #[arg(long, value_name = "TIME")]
    pub not_before: Option<String>,
    /// Permitted operations (encrypt decrypt sign verify wrapKey unwrapKey).
    #[arg(long, num_args = 1..)]
    pub ops: Vec<String>,
    /// Tags: space-separated KEY=VALUE pairs.
    #[arg(long, num_args = 1..)]
    pub tags: Vec<String>,
}

impl KeyAttrs {
    fn apply(&self, body: &mut Value) -> anyhow::Result<()> {
        let mut a = Map::new();
        if let Some(e) = self.enabled {
            a.insert("enabled".into(), json!(e));
        }
        if let Some(e) = &self.expires {
            a.insert("exp".into(), json!(parse_time(e)?));
        }
        if let Some(n) = &self.not_before {
            a.insert("nbf".into(), json!(parse_time(n)?));
        }
        if !a.is_empty() {
            body["attributes"] = Value::Object(a);
        }
        if !self.ops.is_empty() {
            body["key_ops"] = json!(self.ops);
        }
        if let Some(t) = tags(&self.tags)? {
            body["tags"] = t;
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create a key, or a new version of it.
    ///
    /// Example: coffer keyvault key create --vault-name kv1 -n cmk --kty RSA --size 3072
    Create {
        #[command(flatten)]
        key: KeyRef,
        /// Key type.
        #[arg(long, value_enum, default_value = "RSA")]
        kty: Kty,
        /// RSA key size in bits (2048, 3072, 4096) or oct size (128, 192, 256).
        #[arg(long)]
        size: Option<u32>,
        /// Elliptic curve (P-256, P-384, P-521, P-256K).
        #[arg(long)]
        curve: Option<String>,
        #[command(flatten)]
        attrs: KeyAttrs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Import a key from a JWK file holding its private parts (RSA: n, e, d, p, q, dp, dq, qi;
    /// EC: crv, x, y, d; oct: k). The file must be readable by its owner only; - reads
    /// standard input.
    ///
    /// Example: coffer keyvault key import --vault-name kv1 -n byok --jwk-file ./key.jwk.json
    Import {
        #[command(flatten)]
        key: KeyRef,
        /// The JWK (JSON) file, or - for standard input.
        #[arg(long, value_name = "FILE")]
        jwk_file: String,
        /// software or hsm.
        #[arg(long, default_value = "software", value_parser = ["software", "hsm"])]
        protection: String,
        #[command(flatten)]
        attrs: KeyAttrs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the keys of a vault (latest versions).
    ///
    /// Example: coffer keyvault key list --vault-name kv1 -o table
    List {
        /// Vault name.
        #[arg(long)]
        vault_name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the versions of a key.
    ///
    /// Example: coffer keyvault key list-versions --vault-name kv1 -n cmk
    ListVersions {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the deleted keys of a vault.
    ///
    /// Example: coffer keyvault key list-deleted --vault-name kv1
    ListDeleted {
        /// Vault name.
        #[arg(long)]
        vault_name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a key (its public part and attributes).
    ///
    /// Example: coffer keyvault key show --vault-name kv1 -n cmk --query key.kid -o tsv
    Show {
        #[command(flatten)]
        key: KeyRef,
        /// A version [default: the latest].
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a new version of a key (accounts with a versionless CMK move to it).
    ///
    /// Example: coffer keyvault key rotate --vault-name kv1 -n cmk
    Rotate {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a key's attributes: enable or disable it, set its expiry, operations, tags.
    ///
    /// Example: coffer keyvault key set-attributes --vault-name kv1 -n cmk --enabled false
    SetAttributes {
        #[command(flatten)]
        key: KeyRef,
        /// A version [default: the latest].
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        attrs: KeyAttrs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key (soft delete: recoverable until purged).
    ///
    /// Example: coffer keyvault key delete --vault-name kv1 -n cmk
    Delete {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a deleted key.
    ///
    /// Example: coffer keyvault key show-deleted --vault-name kv1 -n cmk
    ShowDeleted {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Recover a deleted key.
    ///
    /// Example: coffer keyvault key recover --vault-name kv1 -n cmk
    Recover {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Purge a deleted key for good (refused when the vault has purge protection).
    ///
    /// Example: coffer keyvault key purge --vault-name kv1 -n old-key
    Purge {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A key's rotation policy.
    RotationPolicy {
        #[command(subcommand)]
        cmd: RotationPolicyCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum RotationPolicyCmd {
    /// Show a key's rotation policy.
    ///
    /// Example: coffer keyvault key rotation-policy show --vault-name kv1 -n cmk
    Show {
        #[command(flatten)]
        key: KeyRef,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set a key's rotation policy from JSON (inline, or @FILE).
    ///
    /// Example: coffer keyvault key rotation-policy update --vault-name kv1 -n cmk --value '{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P90D"},"action":{"type":"Rotate"}}],"attributes":{"expiryTime":"P1Y"}}'
    Update {
        #[command(flatten)]
        key: KeyRef,
        /// The policy as JSON, or @FILE to read it from a file.
        #[arg(long)]
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn vault_view(v: &Value) -> Vec<(&'static str, Value)> {
    vec![
        ("Name", v["name"].clone()),
        (
            "ResourceGroup",
            v["id"]
                .as_str()
                .and_then(group_of)
                .map(Value::String)
                .unwrap_or(Value::Null),
        ),
        ("Location", v["location"].clone()),
        ("VaultUri", v["properties"]["vaultUri"].clone()),
        (
            "PurgeProtection",
            v["properties"]["enablePurgeProtection"].clone(),
        ),
    ]
}

/// (name, version) of a `kid` (`https://vault/keys/NAME[/VERSION]`).
fn kid_parts(kid: &str) -> (Value, Value) {
    let segs: Vec<&str> = kid.split('/').collect();
    match segs
        .iter()
        .position(|s| *s == "keys" || *s == "deletedkeys")
    {
        Some(i) => (
            segs.get(i + 1).map(|s| json!(s)).unwrap_or(Value::Null),
            segs.get(i + 2)
                .filter(|s| !s.is_empty())
                .map(|s| json!(s))
                .unwrap_or(Value::Null),
        ),
        None => (Value::Null, Value::Null),
    }
}

fn key_view(v: &Value) -> Vec<(&'static str, Value)> {
    let kid = v["key"]["kid"].as_str().or(v["kid"].as_str()).unwrap_or("");
    let (name, version) = kid_parts(kid);
    let a = &v["attributes"];
    let mut row = vec![("Name", name)];
    if !version.is_null() {
        row.push(("Version", version));
    }
    if !v["key"]["kty"].is_null() {
        row.push(("Kty", v["key"]["kty"].clone()));
    }
    row.extend([
        ("Enabled", a["enabled"].clone()),
        ("Expires", unix_to_rfc3339(&a["exp"])),
        ("Created", unix_to_rfc3339(&a["created"])),
    ]);
    if !v["scheduledPurgeDate"].is_null() {
        row.push(("PurgeDate", unix_to_rfc3339(&v["scheduledPurgeDate"])));
    }
    row
}

/// A vault's ARM id, by name (searching the subscription when no group is given).
pub async fn vault_id(s: &Session, name: &str, group: Option<&str>) -> anyhow::Result<String> {
    if let Some(g) = group {
        return Ok(format!(
            "{}/resourceGroups/{g}/providers/Microsoft.KeyVault/vaults/{name}",
            s.subscription_path()
        ));
    }
    let all = s
        .arm_list(&format!(
            "{}/providers/Microsoft.KeyVault/vaults?api-version={KEYVAULT_API}",
            s.subscription_path()
        ))
        .await?;
    all.iter()
        .find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .and_then(|v| v["id"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            crate::error::ApiError {
                status: 404,
                code: "ResourceNotFound".into(),
                message: format!("The vault '{name}' was not found in the subscription."),
                request_id: None,
            }
            .into()
        })
}

pub async fn run(cmd: KeyvaultCmd) -> anyhow::Result<()> {
    match cmd {
        KeyvaultCmd::Create {
            resource_group,
            name,
            location,
            enable_purge_protection,
            retention_days,
            sku,
            tags: t,
            grant_self,
            client,
        } => {
            let s = client.session()?;
            let location = match location {
                Some(l) => l,
                None => s
                    .arm(
                        Method::GET,
                        &format!(
                            "{}/resourcegroups/{resource_group}?api-version={GROUP_API}",
                            s.subscription_path()
                        ),
                        None,
                    )
                    .await?["location"]
                    .as_str()
                    .unwrap_or("eastus")
                    .to_string(),
            };
            let mut props = json!({
                "tenantId": s.ep.tenant_id,
                "sku": {"family": "A", "name": sku},
                "accessPolicies": [],
                "enableRbacAuthorization": true,
                "enableSoftDelete": true,
                "softDeleteRetentionInDays": retention_days,
                "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow"},
            });
            if enable_purge_protection == Some(true) {
                props["enablePurgeProtection"] = json!(true);
            }
            let mut body = json!({"location": location, "properties": props});
            if let Some(t) = tags(&t)? {
                body["tags"] = t;
            }
            let id = format!(
                "{}/resourceGroups/{resource_group}/providers/Microsoft.KeyVault/vaults/{name}",
                s.subscription_path()
            );
            let v = s
                .arm(
                    Method::PUT,
                    &format!("{id}?api-version={KEYVAULT_API}"),
                    Some(&body),
                )
                .await?;
            if grant_self {
                let vid = v["id"].as_str().unwrap_or(&id);
                crate::commands::role::grant_self(
                    &s,
                    vid,
                    (CRYPTO_OFFICER, "Key Vault Crypto Officer"),
                    "vault",
                )
                .await?;
            }
            client.printer().print_view(&v, Some(&vault_view))
        }
        KeyvaultCmd::List {
            resource_group,
            client,
        } => {
            let s = client.session()?;
            let base = match &resource_group {
                Some(g) => format!("{}/resourceGroups/{g}", s.subscription_path()),
                None => s.subscription_path(),
            };
            let v = s
                .arm_list(&format!(
                    "{base}/providers/Microsoft.KeyVault/vaults?api-version={KEYVAULT_API}"
                ))
                .await?;
            client
                .printer()
                .print_view(&Value::Array(v), Some(&vault_view))
        }
        KeyvaultCmd::Show {
            name,
            resource_group,
            client,
        } => {
            let s = client.session()?;
            let id = vault_id(&s, &name, resource_group.as_deref()).await?;
            let v = s
                .arm(
                    Method::GET,
                    &format!("{id}?api-version={KEYVAULT_API}"),
                    None,
                )
                .await?;
            client.printer().print_view(&v, Some(&vault_view))
        }
        KeyvaultCmd::Delete {
            name,
            resource_group,
            client,
        } => {
            let s = client.session()?;
            let id = vault_id(&s, &name, resource_group.as_deref()).await?;
            s.arm(
                Method::DELETE,
                &format!("{id}?api-version={KEYVAULT_API}"),
                None,
            )
            .await?;
            Ok(())
        }
        KeyvaultCmd::Key { cmd } => run_key(cmd).await,
    }
}

fn enc(name: &str) -> String {
    crate::blob::encode_path(name, false)
}

async fn run_key(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create {
            key,
            kty,
            size,
            curve,
            attrs,
            client,
        } => {
            let s = client.session()?;
            let mut body = json!({"kty": kty.wire()});
            match kty {
                Kty::Rsa | Kty::RsaHsm | Kty::Oct | Kty::OctHsm => {
                    if curve.is_some() {
                        return Err(usage("--curve is for EC keys"));
                    }
                    if let Some(n) = size {
                        body["key_size"] = json!(n);
                    }
                }
                Kty::Ec | Kty::EcHsm => {
                    if size.is_some() {
                        return Err(usage("--size is for RSA and oct keys; use --curve"));
                    }
                    body["crv"] = json!(curve.unwrap_or_else(|| "P-256".into()));
                }
            }
            attrs.apply(&mut body)?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::POST,
                    &format!("/keys/{}/create", enc(&key.name)),
                    Some(&body),
                )
                .await?;
            client.printer().print_view(&v, Some(&key_view))
        }
        KeyCmd::Import {
            key,
            jwk_file,
            protection,
            attrs,
            client,
        } => {
            let text = if jwk_file == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                    .map_err(|e| usage(format!("reading the JWK from standard input: {e}")))?;
                t
            } else {
                crate::profile::read_secret_file(std::path::Path::new(&jwk_file))?
            };
            let mut jwk: Value = serde_json::from_str(&text)
                .map_err(|e| usage(format!("--jwk-file is not JSON: {e}")))?;
            if !jwk.is_object() {
                return Err(usage("--jwk-file must hold a JWK object"));
            }
            let mut body = json!({});
            attrs.apply(&mut body)?;
            if let Some(ops) = body.as_object_mut().and_then(|m| m.remove("key_ops")) {
                jwk["key_ops"] = ops;
            }
            body["key"] = jwk;
            body["Hsm"] = json!(protection == "hsm");
            let s = client.session()?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::PUT,
                    &format!("/keys/{}", enc(&key.name)),
                    Some(&body),
                )
                .await?;
            client.printer().print_view(&v, Some(&key_view))
        }
        KeyCmd::List { vault_name, client } => {
            let s = client.session()?;
            let v = s.vault_list(&vault_name, "/keys").await?;
            client
                .printer()
                .print_view(&Value::Array(v), Some(&key_view))
        }
        KeyCmd::ListVersions { key, client } => {
            let s = client.session()?;
            let v = s
                .vault_list(
                    &key.vault_name,
                    &format!("/keys/{}/versions", enc(&key.name)),
                )
                .await?;
            client
                .printer()
                .print_view(&Value::Array(v), Some(&key_view))
        }
        KeyCmd::ListDeleted { vault_name, client } => {
            let s = client.session()?;
            let v = s.vault_list(&vault_name, "/deletedkeys").await?;
            client
                .printer()
                .print_view(&Value::Array(v), Some(&key_view))
        }
        KeyCmd::Show {
            key,
            version,
            client,
        } => {
            let s = client.session()?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::GET,
                    &format!(
                        "/keys/{}/{}",
                        enc(&key.name),
                        version.as_deref().map(enc).unwrap_or_default()
                    ),
                    None,
                )
                .await?;
            client.printer().print_view(&v, Some(&key_view))
        }
        KeyCmd::Rotate { key, client } => {
            let s = client.session()?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::POST,
                    &format!("/keys/{}/rotate", enc(&key.name)),
                    None,
                )
                .await?;
            client.printer().print_view(&v, Some(&key_view))
        }
        KeyCmd::SetAttributes {
            key,
            version,
            attrs,
            client,
        } => {
            let s = client.session()?;
            let mut body = json!({});
            attrs.apply(&mut body)?;
            if body.as_object().is_some_and(Map::is_empty) {
                return Err(usage(
                    "nothing to change: give --enabled, --expires, --not-before, --ops or --tags",
                ));
            }
            let v = s
                .vault(
                    &key.vault_name,
                    Method::PATCH,
                    &format!(
                        "/keys/{}/{}",
                        enc(&key.name),
                        version.as_deref().map(enc).unwrap_or_default()
                    ),
                    Some(&body),
                )
                .await?;
            client.printer().print_view(&v, Some(&key_view))
        }
        KeyCmd::Delete { key, client } => {
            let s = client.session()?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::DELETE,
                    &format!("/keys/{}", enc(&key.name)),
                    None,
                )
                .await?;
            client.printer().print_view(&v, Some(&key_view))
        }
        KeyCmd::ShowDeleted { key, client } => {
            let s = client.session()?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::GET,
                    &format!("/deletedkeys/{}", enc(&key.name)),
                    None,
                )
                .await?;
            client.printer().print_view(&v, Some(&key_view))
        }
        KeyCmd::Recover { key, client } => {
            let s = client.session()?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::POST,
                    &format!("/deletedkeys/{}/recover", enc(&key.name)),
                    None,
                )
                .await?;
            client.printer().print_view(&v, Some(&key_view))
        }
        KeyCmd::Purge { key, client } => {
            let s = client.session()?;
            s.vault(
                &key.vault_name,
                Method::DELETE,
                &format!("/deletedkeys/{}", enc(&key.name)),
                None,
            )
            .await?;
            Ok(())
        }
        KeyCmd::RotationPolicy {
            cmd: RotationPolicyCmd::Show { key, client },
        } => {
            let s = client.session()?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::GET,
                    &format!("/keys/{}/rotationpolicy", enc(&key.name)),
                    None,
                )
                .await?;
            client.printer().print(&v)
        }
        KeyCmd::RotationPolicy {
            cmd: RotationPolicyCmd::Update { key, value, client },
        } => {
            let text = match value.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| usage(format!("--value @{path}: {e}")))?,
                None => value,
            };
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| usage(format!("--value is not JSON: {e}")))?;
            let s = client.session()?;
            let v = s
                .vault(
                    &key.vault_name,
                    Method::PUT,
                    &format!("/keys/{}/rotationpolicy", enc(&key.name)),
                    Some(&body),
                )
                .await?;
            client.printer().print(&v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids() {
        assert_eq!(
            kid_parts("https://kv.vault.x:1/keys/cmk/abc"),
            (json!("cmk"), json!("abc"))
        );
        assert_eq!(
            kid_parts("https://kv.vault.x:1/keys/cmk"),
            (json!("cmk"), Value::Null)
        );
        assert_eq!(
            kid_parts("https://kv/deletedkeys/k"),
            (json!("k"), Value::Null)
        );
    }
}
