//! `coffer storage account …` (ARM `Microsoft.Storage/storageAccounts`, including
//! customer-managed keys and the `cmk-status` view), `coffer storage container …` and
//! `coffer storage blob …` (the Blob service, path style on the blob endpoint).
//!
//! Blob commands sign requests with the account key by default (`--auth-mode key`, as `az`:
//! the key is read through ARM `listKeys`, which the subscription's Owner may call, or from
//! `AZURE_STORAGE_KEY`); `--auth-mode login` sends the signed-in principal's token instead
//! and needs a Storage Blob Data role on the account (`storage account create --grant-self`).
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::{ClientArgs, group_of, tags};
use crate::blob::{AuthMode, BlobClient};
use crate::commands::group::GROUP_API;
use crate::error::{ApiError, usage};
use crate::session::Session;
use crate::transfer;

pub const STORAGE_API: &str = "2025-08-01";
/// "Storage Blob Data Contributor".
pub const BLOB_DATA_CONTRIBUTOR: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";

#[derive(Subcommand, Debug)]
pub enum StorageCmd {
    /// Storage accounts.
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// Blob containers.
    Container {
        #[command(subcommand)]
        cmd: ContainerCmd,
    },
    /// Blobs: upload, download, list, delete.
    Blob {
        #[command(subcommand)]
        cmd: BlobCmd,
    },
}

/// Encryption and identity flags shared by `account create` and `account update`.
#[derive(Args, Debug)]
pub struct EncryptionArgs {
    /// Give the account a system-assigned managed identity (needed for a customer-managed key).
    #[arg(long)]
    pub assign_identity: bool,
    /// Identity type: SystemAssigned, UserAssigned, "SystemAssigned,UserAssigned" or None.
    #[arg(long)]
    pub identity_type: Option<String>,
    /// User-assigned identities (resource ids) to attach.
    #[arg(long, num_args = 1..)]
    pub user_identity_id: Vec<String>,
    /// Microsoft.Storage (platform key) or Microsoft.Keyvault (customer-managed key).
    #[arg(long, value_parser = ["Microsoft.Storage", "Microsoft.Keyvault"], ignore_case = true)]
    pub encryption_key_source: Option<String>,
    /// The vault's URI (https://kv1.vault.…/) or just its name.
    #[arg(long)]
    pub encryption_key_vault: Option<String>,
    /// The key's name.
    #[arg(long)]
    pub encryption_key_name: Option<String>,
    /// A key version to pin [default: none, the account follows new versions].
    #[arg(long)]
    pub encryption_key_version: Option<String>,
    /// The user-assigned identity (resource id) that reaches the vault [default: the
    /// system-assigned identity].
    #[arg(long)]
    pub key_vault_user_identity_id: Option<String>,
    /// Allow Shared Key (account key and SAS) requests.
    #[arg(long, value_name = "true|false")]
    pub allow_shared_key_access: Option<bool>,
    /// Tags: space-separated KEY=VALUE pairs.
    #[arg(long, num_args = 1..)]
    pub tags: Vec<String>,
}

impl EncryptionArgs {
    /// Fill `body` (a PUT or PATCH body) from the flags.
    fn apply(&self, s: &Session, body: &mut Value) -> anyhow::Result<()> {
        let identity_type = match (&self.identity_type, self.assign_identity) {
            (Some(t), _) => Some(t.clone()),
            (None, true) if self.user_identity_id.is_empty() => Some("SystemAssigned".to_string()),
            (None, true) => Some("SystemAssigned,UserAssigned".to_string()),
            (None, false) if !self.user_identity_id.is_empty() => Some("UserAssigned".to_string()),
            (None, false) => None,
        };
        if let Some(t) = identity_type {
            let mut id = json!({"type": t});
            if !self.user_identity_id.is_empty() {
                let m: serde_json::Map<String, Value> = self
                    .user_identity_id
                    .iter()
                    .map(|u| (u.clone(), json!({})))
                    .collect();
                id["userAssignedIdentities"] = Value::Object(m);
            }
            body["identity"] = id;
        }
        let kv_fields = self.encryption_key_vault.is_some()
            || self.encryption_key_name.is_some()
            || self.encryption_key_version.is_some()
            || self.key_vault_user_identity_id.is_some();
        match self
            .encryption_key_source
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("microsoft.keyvault") => {
                let (Some(vault), Some(name)) =
                    (&self.encryption_key_vault, &self.encryption_key_name)
                else {
                    return Err(usage(
                        "--encryption-key-source Microsoft.Keyvault needs --encryption-key-vault and --encryption-key-name",
                    ));
                };
                let uri = if vault.starts_with("https://") {
                    vault.clone()
                } else {
                    format!("{}/", s.vault_url(vault))
                };
                let mut kvp = json!({"keyname": name, "keyvaulturi": uri});
                if let Some(v) = &self.encryption_key_version {
                    kvp["keyversion"] = json!(v);
                }
                let mut enc = json!({"keySource": "Microsoft.Keyvault", "keyvaultproperties": kvp});
                if let Some(u) = &self.key_vault_user_identity_id {
                    enc["identity"] = json!({"userAssignedIdentity": u});
                }
                body["properties"]["encryption"] = enc;
            }
            Some(_) => {
                if kv_fields {
                    return Err(usage(
                        "--encryption-key-vault/-name/-version go with --encryption-key-source Microsoft.Keyvault",
                    ));
                }
                body["properties"]["encryption"] = json!({"keySource": "Microsoft.Storage"});
            }
            None if kv_fields => {
                return Err(usage(
                    "--encryption-key-vault/-name/-version need --encryption-key-source Microsoft.Keyvault",
                ));
            }
            None => {}
        }
        if let Some(a) = self.allow_shared_key_access {
            body["properties"]["allowSharedKeyAccess"] = json!(a);
        }
        if let Some(t) = tags(&self.tags)? {
            body["tags"] = t;
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum AccountCmd {
    /// Create a storage account.
    ///
    /// Example: coffer storage account create -g rg1 -n acct1 -l eastus --sku Standard_LRS --kind StorageV2 --assign-identity
    Create {
        /// Resource group.
        #[arg(short = 'g', long)]
        resource_group: String,
        /// Account name (3-24 lower-case letters and digits).
        #[arg(short, long)]
        name: String,
        /// Location [default: the resource group's].
        #[arg(short, long)]
        location: Option<String>,
        /// SKU.
        #[arg(long, default_value = "Standard_LRS")]
        sku: String,
        /// Kind.
        #[arg(long, default_value = "StorageV2")]
        kind: String,
        #[command(flatten)]
        enc: EncryptionArgs,
        /// Also assign yourself "Storage Blob Data Contributor" on the new account (for
        /// `--auth-mode login`).
        #[arg(long)]
        grant_self: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a storage account.
    ///
    /// Example: coffer storage account show -n acct1 --query identity.principalId -o tsv
    Show {
        /// Account name.
        #[arg(short, long)]
        name: String,
        /// Resource group [default: found by name].
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List storage accounts (of a resource group, or of the whole subscription).
    ///
    /// Example: coffer storage account list -o table
    List {
        /// Resource group.
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a storage account: identity, encryption (customer-managed key), tags.
    ///
    /// Example: coffer storage account update -g rg1 -n acct1 --encryption-key-source Microsoft.Keyvault --encryption-key-vault https://kv1.vault.coffer.internal:8443/ --encryption-key-name cmk
    Update {
        /// Account name.
        #[arg(short, long)]
        name: String,
        /// Resource group [default: found by name].
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        enc: EncryptionArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a storage account and its data (asks first unless --yes).
    ///
    /// Example: coffer storage account delete -g rg1 -n acct1 --yes
    Delete {
        /// Account name.
        #[arg(short, long)]
        name: String,
        /// Resource group [default: found by name].
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The account's encryption: key source, customer-managed key (vault, key, version in
    /// use) and its health (status, last unwrap, vault calls).
    ///
    /// Example: coffer storage account cmk-status -n acct1 -o table
    CmkStatus {
        /// Account name.
        #[arg(short, long)]
        name: String,
        /// Resource group [default: found by name].
        #[arg(short = 'g', long)]
        resource_group: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `--account-name` and `--auth-mode`.
#[derive(Args, Debug)]
pub struct AccountRef {
    /// Storage account name.
    #[arg(long)]
    pub account_name: String,
    /// key: Shared Key with the account key (read through ARM, or AZURE_STORAGE_KEY);
    /// login: your token (needs a Storage Blob Data role).
    #[arg(long, value_enum, default_value = "key")]
    pub auth_mode: AuthMode,
}

#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    /// Create a container; prints {"created": false} when it exists.
    ///
    /// Example: coffer storage container create --account-name acct1 -n backups
    Create {
        #[command(flatten)]
        account: AccountRef,
        /// Container name.
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List containers.
    ///
    /// Example: coffer storage container list --account-name acct1 -o table
    List {
        #[command(flatten)]
        account: AccountRef,
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a container and its blobs; prints {"deleted": false} when it does not exist.
    ///
    /// Example: coffer storage container delete --account-name acct1 -n backups
    Delete {
        #[command(flatten)]
        account: AccountRef,
        /// Container name.
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Transfer tuning.
#[derive(Args, Debug)]
pub struct TransferArgs {
    /// Parallel requests.
    #[arg(long, default_value_t = 4)]
    pub max_connections: usize,
    /// Block (and range) size in MiB; grown when a file needs more than 50,000 blocks.
    #[arg(long, default_value_t = 8, value_name = "MIB")]
    pub block_size: u64,
    /// No progress bar (there is none when standard error is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Subcommand, Debug)]
pub enum BlobCmd {
    /// Upload a file (or standard input with -f -) as a block blob, in parallel blocks.
    ///
    /// Example: coffer storage blob upload --account-name acct1 -c backups -n db.dump -f ./db.dump
    ///
    /// Example: pg_dump mydb | coffer storage blob upload --account-name acct1 -c backups -n db.sql -f -
    Upload {
        #[command(flatten)]
        account: AccountRef,
        /// Container name.
        #[arg(short = 'c', long)]
        container_name: String,
        /// Blob name [default: the file's name].
        #[arg(short, long)]
        name: Option<String>,
        /// File to upload, or - for standard input.
        #[arg(short, long)]
        file: String,
        /// Replace an existing blob (otherwise an existing blob is refused).
        #[arg(long)]
        overwrite: bool,
        /// Content type stored with the blob.
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        #[command(flatten)]
        transfer: TransferArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Download a blob to a file (or standard output with -f -) in parallel ranges; an
    /// interrupted download to a file resumes when run again.
    ///
    /// Example: coffer storage blob download --account-name acct1 -c backups -n db.dump -f ./db.dump
    ///
    /// Example: coffer storage blob download --account-name acct1 -c backups -n db.sql -f - | psql mydb
    Download {
        #[command(flatten)]
        account: AccountRef,
        /// Container name.
        #[arg(short = 'c', long)]
        container_name: String,
        /// Blob name.
        #[arg(short, long)]
        name: String,
        /// Destination file, or - for standard output.
        #[arg(short, long)]
        file: String,
        /// Start over even if a partial download of the same blob exists.
        #[arg(long)]
        no_resume: bool,
        #[command(flatten)]
        transfer: TransferArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List blobs.
    ///
    /// Example: coffer storage blob list --account-name acct1 -c backups --prefix 2026/ -o table
    List {
        #[command(flatten)]
        account: AccountRef,
        /// Container name.
        #[arg(short = 'c', long)]
        container_name: String,
        /// Only names starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Group names up to this delimiter (virtual directories).
        #[arg(long)]
        delimiter: Option<String>,
        /// At most this many blobs.
        #[arg(long)]
        num_results: Option<usize>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a blob.
    ///
    /// Example: coffer storage blob delete --account-name acct1 -c backups -n db.dump
    Delete {
        #[command(flatten)]
        account: AccountRef,
        /// Container name.
        #[arg(short = 'c', long)]
        container_name: String,
        /// Blob name.
        #[arg(short, long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn account_view(v: &Value) -> Vec<(&'static str, Value)> {
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
        ("Kind", v["kind"].clone()),
        ("Identity", v["identity"]["type"].clone()),
        (
            "KeySource",
            v["properties"]["encryption"]["keySource"].clone(),
        ),
        ("Status", v["properties"]["provisioningState"].clone()),
    ]
}

/// A storage account's ARM id, by name (searching the subscription when no group is given).
pub async fn account_id(s: &Session, name: &str, group: Option<&str>) -> anyhow::Result<String> {
    if let Some(g) = group {
        return Ok(format!(
            "{}/resourceGroups/{g}/providers/Microsoft.Storage/storageAccounts/{name}",
            s.subscription_path()
        ));
    }
    let all = s
        .arm_list(&format!(
            "{}/providers/Microsoft.Storage/storageAccounts?api-version={STORAGE_API}",
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
            ApiError {
                status: 404,
                code: "ResourceNotFound".into(),
                message: format!("The storage account '{name}' was not found in the subscription."),
                request_id: None,
            }
            .into()
        })
}

/// The `cmk-status` view of an account.
pub fn cmk_status(v: &Value) -> Value {
    let e = &v["properties"]["encryption"];
    json!({
        "name": v["name"],
        "id": v["id"],
        "keySource": e["keySource"],
        "identity": {"type": v["identity"]["type"], "principalId": v["identity"]["principalId"]},
        "encryptionIdentity": e["identity"],
        "keyVaultProperties": e["keyvaultproperties"],
        "cmkHealth": e["cmkHealth"],
    })
}

fn cmk_view(v: &Value) -> Vec<(&'static str, Value)> {
    let k = &v["keyVaultProperties"];
    let h = &v["cmkHealth"];
    vec![
        ("Name", v["name"].clone()),
        ("KeySource", v["keySource"].clone()),
        ("Vault", k["keyvaulturi"].clone()),
        ("Key", k["keyname"].clone()),
        (
            "VersionInUse",
            if h["keyVersionInUse"].is_null() {
                k["currentVersionedKeyIdentifier"].clone()
            } else {
                h["keyVersionInUse"].clone()
            },
        ),
        ("Status", h["status"].clone()),
        ("LastUnwrap", h["lastSuccessfulUnwrapTime"].clone()),
        ("Message", h["message"].clone()),
    ]
}

fn blob_view(v: &Value) -> Vec<(&'static str, Value)> {
    vec![
        ("Name", v["name"].clone()),
        ("Length", v["properties"]["contentLength"].clone()),
        ("LastModified", v["properties"]["lastModified"].clone()),
        (
            "ContentType",
            v["properties"]["contentSettings"]["contentType"].clone(),
        ),
    ]
}

fn container_view(v: &Value) -> Vec<(&'static str, Value)> {
    vec![
        ("Name", v["name"].clone()),
        ("LastModified", v["properties"]["lastModified"].clone()),
    ]
}

async fn get_account(s: &Session, name: &str, group: Option<&str>) -> anyhow::Result<Value> {
    let id = account_id(s, name, group).await?;
    s.arm(
        Method::GET,
        &format!("{id}?api-version={STORAGE_API}"),
        None,
    )
    .await
}

pub async fn run(cmd: StorageCmd) -> anyhow::Result<()> {
    match cmd {
        StorageCmd::Account { cmd } => run_account(cmd).await,
        StorageCmd::Container { cmd } => run_container(cmd).await,
        StorageCmd::Blob { cmd } => run_blob(cmd).await,
    }
}

async fn run_account(cmd: AccountCmd) -> anyhow::Result<()> {
    match cmd {
        AccountCmd::Create {
            resource_group,
            name,
            location,
            sku,
            kind,
            enc,
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
            let mut body = json!({
                "sku": {"name": sku},
                "kind": kind,
                "location": location,
                "properties": {"encryption": {"keySource": "Microsoft.Storage", "services": {"blob": {}}}},
            });
            enc.apply(&s, &mut body)?;
            let id = format!(
                "{}/resourceGroups/{resource_group}/providers/Microsoft.Storage/storageAccounts/{name}",
                s.subscription_path()
            );
            let v = s
                .arm(
                    Method::PUT,
                    &format!("{id}?api-version={STORAGE_API}"),
                    Some(&body),
                )
                .await?;
            if grant_self {
                let aid = v["id"].as_str().unwrap_or(&id);
                crate::commands::role::grant_self(
                    &s,
                    aid,
                    (BLOB_DATA_CONTRIBUTOR, "Storage Blob Data Contributor"),
                    "account",
                )
                .await?;
            }
            client.printer().print_view(&v, Some(&account_view))
        }
        AccountCmd::Show {
            name,
            resource_group,
            client,
        } => {
            let s = client.session()?;
            let v = get_account(&s, &name, resource_group.as_deref()).await?;
            client.printer().print_view(&v, Some(&account_view))
        }
        AccountCmd::List {
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
                    "{base}/providers/Microsoft.Storage/storageAccounts?api-version={STORAGE_API}"
                ))
                .await?;
            client
                .printer()
                .print_view(&Value::Array(v), Some(&account_view))
        }
        AccountCmd::Update {
            name,
            resource_group,
            enc,
            client,
        } => {
            let s = client.session()?;
            let mut body = json!({});
            enc.apply(&s, &mut body)?;
            if body.as_object().is_some_and(serde_json::Map::is_empty) {
                return Err(usage(
                    "nothing to change: give --assign-identity, --identity-type, --encryption-key-source, --allow-shared-key-access or --tags",
                ));
            }
            let id = account_id(&s, &name, resource_group.as_deref()).await?;
            let v = s
                .arm(
                    Method::PATCH,
                    &format!("{id}?api-version={STORAGE_API}"),
                    Some(&body),
                )
                .await?;
            client.printer().print_view(&v, Some(&account_view))
        }
        AccountCmd::Delete {
            name,
            resource_group,
            yes,
            client,
        } => {
            super::confirm(
                yes,
                &format!("This deletes the storage account '{name}' and all its data"),
            )?;
            let s = client.session()?;
            let id = account_id(&s, &name, resource_group.as_deref()).await?;
            s.arm(
                Method::DELETE,
                &format!("{id}?api-version={STORAGE_API}"),
                None,
            )
            .await?;
            Ok(())
        }
        AccountCmd::CmkStatus {
            name,
            resource_group,
            client,
        } => {
            let s = client.session()?;
            let v = get_account(&s, &name, resource_group.as_deref()).await?;
            client
                .printer()
                .print_view(&cmk_status(&v), Some(&cmk_view))
        }
    }
}

async fn run_container(cmd: ContainerCmd) -> anyhow::Result<()> {
    match cmd {
        ContainerCmd::Create {
            account,
            name,
            client,
        } => {
            let s = client.session()?;
            let c = BlobClient::connect(&s, &account.account_name, account.auth_mode).await?;
            let created = c.create_container(&name).await?;
            client.printer().print(&json!({"created": created}))
        }
        ContainerCmd::List {
            account,
            prefix,
            client,
        } => {
            let s = client.session()?;
            let c = BlobClient::connect(&s, &account.account_name, account.auth_mode).await?;
            let v = c.list_containers(prefix.as_deref()).await?;
            client
                .printer()
                .print_view(&Value::Array(v), Some(&container_view))
        }
        ContainerCmd::Delete {
            account,
            name,
            client,
        } => {
            let s = client.session()?;
            let c = BlobClient::connect(&s, &account.account_name, account.auth_mode).await?;
            let deleted = c.delete_container(&name).await?;
            client.printer().print(&json!({"deleted": deleted}))
        }
    }
}

async fn run_blob(cmd: BlobCmd) -> anyhow::Result<()> {
    match cmd {
        BlobCmd::Upload {
            account,
            container_name,
            name,
            file,
            overwrite,
            content_type,
            transfer: t,
            client,
        } => {
            let name = match name {
                Some(n) => n,
                None if file == "-" => {
                    return Err(usage("-n/--name is needed when uploading standard input"));
                }
                None => std::path::Path::new(&file)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| usage("-n/--name is needed: the file has no name"))?,
            };
            let s = client.session()?;
            let c = BlobClient::connect(&s, &account.account_name, account.auth_mode).await?;
            let o = transfer::Options::new(t.block_size, t.max_connections, t.no_progress);
            let u = transfer::Upload {
                container: &container_name,
                blob: &name,
                content_type: &content_type,
                overwrite,
            };
            let mut v = transfer::upload(&c, &u, &file, &o).await?;
            v["name"] = json!(name);
            v["container"] = json!(container_name);
            client.printer().print(&v)
        }
        BlobCmd::Download {
            account,
            container_name,
            name,
            file,
            no_resume,
            transfer: t,
            client,
        } => {
            let s = client.session()?;
            let c = BlobClient::connect(&s, &account.account_name, account.auth_mode).await?;
            let o = transfer::Options::new(t.block_size, t.max_connections, t.no_progress);
            let v = transfer::download(&c, &container_name, &name, &file, !no_resume, &o).await?;
            if file == "-" {
                return Ok(());
            }
            client.printer().print(&v)
        }
        BlobCmd::List {
            account,
            container_name,
            prefix,
            delimiter,
            num_results,
            client,
        } => {
            let s = client.session()?;
            let c = BlobClient::connect(&s, &account.account_name, account.auth_mode).await?;
            let v = c
                .list_blobs(
                    &container_name,
                    prefix.as_deref(),
                    delimiter.as_deref(),
                    num_results,
                )
                .await?;
            client
                .printer()
                .print_view(&Value::Array(v), Some(&blob_view))
        }
        BlobCmd::Delete {
            account,
            container_name,
            name,
            client,
        } => {
            let s = client.session()?;
            let c = BlobClient::connect(&s, &account.account_name, account.auth_mode).await?;
            c.delete_blob(&container_name, &name).await?;
            Ok(())
        }
    }
}
