//! Encryption scopes (`Microsoft.Storage/storageAccounts/{account}/encryptionScopes/{name}`):
//! a key of their own for the blobs written in them, sealed under the platform key
//! (`source: Microsoft.Storage`) or wrapped by a customer-managed key of their own
//! (`source: Microsoft.KeyVault`, `keyVaultProperties.keyUri`; the same machinery as an
//! account's, see `cmk.rs`). Scopes can be disabled (their blobs then refuse every request)
//! and, as in Azure, not deleted.
use coffer_crypto::{b64, random};
use coffer_secret::SecretBytes;
use serde_json::{Map, Value, json};

use super::cmk::cmk_principal;
use super::storage::{STORAGE_TYPE, ScopeKey};
use super::{Body, MgmtService, Put, bad, public, resource_id};
use crate::clock::rfc3339;
use crate::cmk::KeyRef;
use crate::identity::Caller;
use crate::model::Resource;
use crate::{DomainError, Result};

pub const SCOPE_TYPE: &str = "Microsoft.Storage/storageAccounts/encryptionScopes";

fn is_keyvault(body: &Value) -> bool {
    body["properties"]["source"].as_str() == Some("Microsoft.KeyVault")
}

fn invalid_param(message: impl Into<String>) -> DomainError {
    DomainError::CmkInvalid {
        code: "InvalidValuesForRequestParameters",
        message: message.into(),
    }
}

pub(super) fn scope_aad(account: &str, scope: &str, version: u64) -> Vec<u8> {
    format!(
        "storage-scope-aek:{account}:{}:{version}",
        scope.to_ascii_lowercase()
    )
    .into_bytes()
}

/// Scope names: 3–63 letters, digits and dashes, starting with a letter or digit.
pub fn validate_scope_name(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(DomainError::InvalidName {
            kind: "encryption scope",
            name: name.chars().take(64).collect(),
            rule: "3-63 letters, digits and dashes, starting with a letter or digit",
        })
    }
}

impl MgmtService {
    fn scope_id(sub: &str, rg: &str, account: &str, name: &str) -> String {
        format!(
            "{}/encryptionScopes/{name}",
            resource_id(sub, rg, STORAGE_TYPE, account)
        )
    }

    /// Apply `properties` of a create or update request to a scope body. Every check (the key's
    /// included) happens before the caller stores anything.
    async fn apply_scope_props(
        &self,
        b: &mut Value,
        props: Option<Body<'_>>,
        new: bool,
        account: &Resource,
    ) -> Result<()> {
        let Some(p) = props else { return Ok(()) };
        self.apply_scope_key(b, &p, new, account).await?;
        if let Some(state) = p.str("state")? {
            let s = if state.eq_ignore_ascii_case("Enabled") {
                "Enabled"
            } else if state.eq_ignore_ascii_case("Disabled") {
                "Disabled"
            } else {
                return Err(bad("state must be Enabled or Disabled"));
            };
            b["properties"]["state"] = json!(s);
        }
        if let Some(infra) = p.bool("requireInfrastructureEncryption")? {
            let cur = b["properties"]["requireInfrastructureEncryption"]
                .as_bool()
                .unwrap_or(false);
            if new {
                // A scope of an account with infrastructure encryption has it too (as Azure).
                b["properties"]["requireInfrastructureEncryption"] = json!(cur || infra);
            } else if infra != cur {
                return Err(DomainError::PropertyCannotChange(
                    "requireInfrastructureEncryption",
                ));
            }
        }
        b["properties"]["lastModifiedTime"] = json!(rfc3339(self.clock.now()));
        Ok(())
    }

    /// `source` and `keyVaultProperties.keyUri`: put the scope's key under a customer-managed
    /// key (validated as an account's, reached as the account's identity), move it to another
    /// key, or back to the platform key.
    async fn apply_scope_key(
        &self,
        b: &mut Value,
        p: &Body<'_>,
        new: bool,
        account: &Resource,
    ) -> Result<()> {
        let kvp = p.object("keyVaultProperties")?;
        let key_uri = match &kvp {
            Some(k) => k.str("keyUri")?.filter(|u| !u.is_empty()),
            None => None,
        };
        let wants_kv = match p.str("source")? {
            Some(s) if s.eq_ignore_ascii_case("Microsoft.KeyVault") => true,
            Some(s) if s.eq_ignore_ascii_case("Microsoft.Storage") => false,
            Some(_) => {
                return Err(bad(
                    "source must be Microsoft.Storage or Microsoft.KeyVault",
                ));
            }
            None => is_keyvault(b) || key_uri.is_some(),
        };
        if !wants_kv {
            if is_keyvault(b) {
                self.cmk_to_platform(b).await?;
                b["properties"]["source"] = json!("Microsoft.Storage");
                if let Some(m) = b["properties"].as_object_mut() {
                    m.remove("keyVaultProperties");
                }
            }
            return Ok(());
        }
        let Some(uri) = key_uri else {
            if is_keyvault(b) {
                return Ok(()); // source restated, nothing to change
            }
            return Err(invalid_param(
                "keyVaultProperties.keyUri (https://{vault}/keys/{name}[/{version}]) is required with source Microsoft.KeyVault",
            ));
        };
        let key = KeyRef::from_key_uri(uri).map_err(invalid_param)?;
        let prev = b["properties"]["keyVaultProperties"].clone();
        if is_keyvault(b)
            && prev["keyUri"]
                .as_str()
                .and_then(|u| KeyRef::from_key_uri(u).ok())
                .is_some_and(|k| k == key)
        {
            return Ok(()); // the same key restated
        }
        // The account's identity reaches the vault: the user-assigned identity its own
        // customer-managed key uses, else its system-assigned identity.
        let uai = account.body["properties"]["encryption"]["identity"]["userAssignedIdentity"]
            .as_str()
            .filter(|s| !s.is_empty());
        let principal = cmk_principal(&account.body, uai)?;
        let location = account.location.clone().unwrap_or_default();
        let (_, kid) = self.cmk_enable(b, &key, &principal, &location, new).await?;
        let mut kv = Map::new();
        kv.insert("keyUri".into(), json!(uri.trim()));
        self.report_key(&mut kv, &prev, &kid);
        b["properties"]["source"] = json!("Microsoft.KeyVault");
        b["properties"]["keyVaultProperties"] = Value::Object(kv);
        Ok(())
    }

    fn render_scope(&self, mut b: Value) -> Value {
        self.cmk_render(&mut b);
        public(b)
    }

    /// `PUT .../encryptionScopes/{name}`: create, or update the state of an existing scope.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_encryption_scope(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        account: &str,
        name: &str,
        body: &Value,
        patch: bool,
    ) -> Result<Put> {
        let acct_id = resource_id(sub, rg, STORAGE_TYPE, account);
        let id = Self::scope_id(sub, rg, account, name);
        self.authorize(
            caller,
            "Microsoft.Storage/storageAccounts/encryptionScopes/write",
            &id,
        )
        .await?;
        validate_scope_name(name)?;
        let acct = self.store.get_resource(&acct_id).await?.ok_or_else(|| {
            DomainError::ResourceNotFound {
                resource_type: STORAGE_TYPE.into(),
                name: account.into(),
            }
        })?;
        let req = Body::obj(body)?;
        if let Some(mut r) = self.store.get_resource(&id).await? {
            self.apply_scope_props(&mut r.body, req.object("properties")?, false, &acct)
                .await?;
            self.store.put_resource(&r).await?;
            return Ok(Put {
                body: self.render_scope(r.body),
                created: false,
            });
        }
        if patch {
            return Err(DomainError::ResourceNotFound {
                resource_type: SCOPE_TYPE.into(),
                name: name.into(),
            });
        }
        let now = rfc3339(self.clock.now());
        let aek = SecretBytes::new(random::bytes(32)?);
        let account_infra = acct.body["properties"]["encryption"]["requireInfrastructureEncryption"]
            .as_bool() == Some(true);
        let mut b = json!({
            "id": id, "name": name, "type": SCOPE_TYPE,
            "properties": {
                "source": "Microsoft.Storage", "state": "Enabled",
                "creationTime": now, "lastModifiedTime": now,
                "requireInfrastructureEncryption": account_infra,
            },
            "_aek": {"version": 1, "sealed": b64::std_encode(&self.root.seal(&scope_aad(account, name, 1), aek.expose())?)},
        });
        self.apply_scope_props(&mut b, req.object("properties")?, true, &acct)
            .await?;
        self.store
            .put_resource(&Resource {
                id,
                resource_type: SCOPE_TYPE.into(),
                subscription_id: acct.subscription_id.clone(),
                resource_group: acct.resource_group.clone(),
                name: name.into(),
                location: acct.location.clone(),
                body: b.clone(),
            })
            .await?;
        Ok(Put {
            body: self.render_scope(b),
            created: true,
        })
    }

    pub async fn get_encryption_scope(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        account: &str,
        name: &str,
    ) -> Result<Value> {
        let id = Self::scope_id(sub, rg, account, name);
        self.authorize(
            caller,
            "Microsoft.Storage/storageAccounts/encryptionScopes/read",
            &id,
        )
        .await?;
        let not_found = || DomainError::ResourceNotFound {
            resource_type: SCOPE_TYPE.into(),
            name: name.chars().take(64).collect(),
        };
        let r = self.store.get_resource(&id).await?.ok_or_else(not_found)?;
        // A scope under a customer-managed key reports the key version in use and its health:
        // refresh them (no vault call while the cached key is valid).
        self.cmk_observe(&r).await;
        let r = self.store.get_resource(&id).await?.ok_or_else(not_found)?;
        Ok(self.render_scope(r.body))
    }

    pub async fn list_encryption_scopes(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        account: &str,
    ) -> Result<Vec<Value>> {
        let acct_id = resource_id(sub, rg, STORAGE_TYPE, account);
        self.authorize(
            caller,
            "Microsoft.Storage/storageAccounts/encryptionScopes/read",
            &acct_id,
        )
        .await?;
        let prefix = format!("{}/encryptionscopes/", acct_id.to_ascii_lowercase());
        Ok(self
            .store
            .list_resources(sub, Some(rg), Some(SCOPE_TYPE))
            .await?
            .into_iter()
            .filter(|r| r.id.to_ascii_lowercase().starts_with(&prefix))
            .map(|r| self.render_scope(r.body))
            .collect())
    }

    /// The key of an enabled scope of an account (by account name), and its id for object
    /// headers. A disabled scope fails with 403 `EncryptionScopeDisabled`; a scope whose
    /// customer-managed key cannot be used, with the account's 403 codes
    /// (`KeyVaultEncryptionKeyNotFound`, ...).
    pub async fn scope_key(
        &self,
        account: &str,
        scope: &str,
        correlation: &str,
    ) -> Result<ScopeKey> {
        // The name comes from a request header: validated before it becomes part of an id.
        validate_scope_name(scope)?;
        let acct = self.account_by_name(account).await?;
        let id = format!("{}/encryptionScopes/{scope}", acct.id);
        let r = self.store.get_resource(&id).await?.ok_or_else(|| {
            DomainError::InvalidProperty(format!(
                "the encryption scope '{}' does not exist in this storage account",
                scope.chars().take(64).collect::<String>()
            ))
        })?;
        if r.body["properties"]["state"].as_str() != Some("Enabled") {
            return Err(DomainError::ScopeDisabled(r.name.clone()));
        }
        let version = r.body["_aek"]["version"].as_u64().unwrap_or(1);
        let key = self.holder_aek(&r, correlation).await?;
        Ok(ScopeKey {
            aek_id: format!("{account}/scope/{}/aek/{version}", r.name),
            name: r.name,
            key,
            infra: r.body["properties"]["requireInfrastructureEncryption"].as_bool() == Some(true),
        })
    }
}
