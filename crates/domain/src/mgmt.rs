//! The management service (ARM-shaped resources): subscriptions, resource groups, key vaults
//! (with soft delete), user-assigned identities, role definitions and role assignments.
//!
//! Every operation authorizes first (so a caller outside their scope learns nothing: 403, not
//! 404), then validates, then acts. Resource bodies are kept in their ARM representation.
use std::sync::Arc;

use coffer_crypto::aead::SealingKey;
use coffer_secret::SecretBytes;
use serde_json::{Map, Value, json};

use crate::clock::{Clock, rfc3339};
use crate::identity::{Caller, IdentityService};
use crate::model::{Resource, ResourceGroup, RoleAssignment, Subscription};
use crate::rbac::{ActionKind, Rbac, RoleDefinition, builtin, normalize_scope, scope_contains};
use crate::store::MetaStore;
use crate::{DomainError, Result, names};

pub const VAULT_TYPE: &str = "Microsoft.KeyVault/vaults";
pub const DELETED_VAULT_TYPE: &str = "Microsoft.KeyVault/deletedVaults";
pub const IDENTITY_TYPE: &str = "Microsoft.ManagedIdentity/userAssignedIdentities";
pub const ALIAS_TYPE: &str = "Microsoft.Subscription/aliases";

pub struct MgmtConfig {
    pub regions: Vec<String>,
    /// `vault.<suffix>[:port]`: a vault's URI is `https://{name}.{vault_dns_suffix}/`.
    pub vault_dns_suffix: String,
    /// `blob.<suffix>[:port]`: an account's blob endpoint is `https://{name}.{blob_dns_suffix}/`.
    pub blob_dns_suffix: String,
}

mod cmk;
mod events;
mod scopes;
mod storage;
pub use cmk::{CmkConfig, CmkHealth, CmkStats};
pub use scopes::SCOPE_TYPE;
pub use storage::{BlobAccount, STORAGE_TYPE, ScopeKey, validate_account_name};

pub struct MgmtService {
    /// Serialises management writes: they read, check and write back resource documents
    /// (name reservations, identities, account keys), so two concurrent writes must not
    /// interleave. Management writes are rare; the data planes never take this lock.
    writes: tokio::sync::Mutex<()>,
    /// Seals account keys and account encryption keys.
    root: Arc<SealingKey>,
    store: Arc<dyn MetaStore>,
    rbac: Arc<Rbac>,
    identity: Arc<IdentityService>,
    clock: Arc<Clock>,
    config: MgmtConfig,
    cmk: cmk::CmkState,
    events: std::sync::OnceLock<Arc<crate::events::EventService>>,
    /// HMAC key for customer-provided key hashes (derived from the root key once).
    cpk_hash_key: std::sync::OnceLock<aws_lc_rs::hmac::Key>,
    /// The infrastructure key (derived from the root key once; see `infrastructure_key`).
    infra_key: std::sync::OnceLock<SecretBytes>,
}

/// Outcome of a PUT: the resource body and whether it was created (201) or updated (200).
pub struct Put {
    pub body: Value,
    pub created: bool,
}

fn bad(msg: impl Into<String>) -> DomainError {
    DomainError::InvalidProperty(msg.into())
}

/// Typed access to an untrusted JSON request body.
struct Body<'a>(&'a Value);

impl<'a> Body<'a> {
    fn obj(v: &'a Value) -> Result<Self> {
        if v.is_object() {
            Ok(Self(v))
        } else {
            Err(bad("the request body must be a JSON object"))
        }
    }
    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(format!("the property '{key}' must be a string"))),
        }
    }
    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(format!("the property '{key}' must be a boolean"))),
        }
    }
    fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad(format!("the property '{key}' must be an integer"))),
        }
    }
    fn object(&self, key: &str) -> Result<Option<Body<'a>>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(Body(v))),
            Some(_) => Err(bad(format!("the property '{key}' must be an object"))),
        }
    }
    fn tags(&self) -> Result<Option<Value>> {
        match self.0.get("tags") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => {
                if m.len() > 50 {
                    return Err(bad("a resource may have at most 50 tags"));
                }
                for (k, v) in m {
                    let ok = !k.is_empty()
                        && k.chars().count() <= 512
                        && v.as_str().is_some_and(|s| s.chars().count() <= 256);
                    if !ok {
                        return Err(bad(
                            "tags must map names of 1-512 characters to string values of at most 256 characters",
                        ));
                    }
                }
                Ok(Some(Value::Object(m.clone())))
            }
            Some(_) => Err(bad("the property 'tags' must be an object")),
        }
    }
}

fn sub_scope(sub: &str) -> String {
    format!("/subscriptions/{sub}")
}

fn rg_scope(sub: &str, rg: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}")
}

fn resource_id(sub: &str, rg: &str, rtype: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{rtype}/{name}")
}

fn deleted_vault_id(sub: &str, location: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{name}"
    )
}

/// The subscription named by a scope (`/subscriptions/{s}/...`), if any.
pub fn scope_subscription(scope: &str) -> Option<&str> {
    let mut it = scope.trim_start_matches('/').split('/');
    match (it.next(), it.next()) {
        (Some(k), Some(s)) if k.eq_ignore_ascii_case("subscriptions") && !s.is_empty() => Some(s),
        _ => None,
    }
}

/// Strip server-private fields before a body goes on the wire.
fn public(mut body: Value) -> Value {
    if let Some(m) = body.as_object_mut() {
        m.retain(|k, _| !k.starts_with('_'));
    }
    body
}

impl MgmtService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn MetaStore>,
        rbac: Arc<Rbac>,
        identity: Arc<IdentityService>,
        clock: Arc<Clock>,
        config: MgmtConfig,
        root: Arc<SealingKey>,
        vaults: Arc<dyn crate::cmk::VaultClient>,
        changes: Arc<crate::cmk::Changes>,
        cmk_config: CmkConfig,
    ) -> Self {
        Self {
            writes: tokio::sync::Mutex::new(()),
            root,
            store,
            rbac,
            identity,
            clock,
            config,
            cmk: cmk::CmkState::new(vaults, changes, cmk_config),
            events: std::sync::OnceLock::new(),
            cpk_hash_key: std::sync::OnceLock::new(),
            infra_key: std::sync::OnceLock::new(),
        }
    }

    /// Publish storage events (CMK status and key-version changes) from now on.
    pub fn set_events(&self, events: Arc<crate::events::EventService>) {
        let _ = self.events.set(events);
    }

    /// Hold this while performing a management write (see `writes`).
    pub async fn write_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    pub fn regions(&self) -> &[String] {
        &self.config.regions
    }

    pub fn rbac(&self) -> &Rbac {
        &self.rbac
    }

    async fn authorize(&self, caller: &Caller, action: &str, scope: &str) -> Result<()> {
        self.rbac
            .authorize(&caller.object_id, action, ActionKind::Control, scope)
            .await
    }

    fn check_location(&self, location: &str, resource_type: &str) -> Result<String> {
        let norm = location.replace(' ', "").to_ascii_lowercase();
        if self.config.regions.contains(&norm) {
            Ok(norm)
        } else {
            Err(DomainError::LocationNotAvailable {
                location: location.chars().take(64).collect(),
                resource_type: resource_type.into(),
                available: self.config.regions.join(", "),
            })
        }
    }

    async fn require_group(&self, sub: &str, rg: &str) -> Result<ResourceGroup> {
        self.store
            .get_resource_group(sub, rg)
            .await?
            .ok_or_else(|| DomainError::ResourceGroupNotFound(rg.to_string()))
    }

    // ---- subscriptions -------------------------------------------------------------------

    pub fn subscription_body(s: &Subscription) -> Value {
        json!({
            "id": sub_scope(&s.subscription_id),
            "subscriptionId": s.subscription_id,
            "tenantId": s.tenant_id,
            "displayName": s.display_name,
            "state": "Enabled",
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "PayAsYouGo_2014-09-01",
                "spendingLimit": "Off"
            },
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "tags": {}
        })
    }

    pub async fn list_subscriptions(&self, caller: &Caller) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for s in self.store.list_subscriptions().await? {
            if self
                .rbac
                .has_any_access(&caller.object_id, &sub_scope(&s.subscription_id))
                .await?
            {
                out.push(Self::subscription_body(&s));
            }
        }
        Ok(out)
    }

    pub async fn get_subscription(&self, caller: &Caller, sub: &str) -> Result<Value> {
        let scope = sub_scope(sub);
        if !self.rbac.has_any_access(&caller.object_id, &scope).await? {
            return Err(DomainError::Forbidden {
                principal: caller.object_id.clone(),
                action: "Microsoft.Resources/subscriptions/read".into(),
                scope,
            });
        }
        let s = self
            .store
            .get_subscription(sub)
            .await?
            .ok_or_else(|| DomainError::SubscriptionNotFound(sub.to_string()))?;
        Ok(Self::subscription_body(&s))
    }

    /// Create a subscription and make `owner` its Owner (bootstrap and aliases).
    pub async fn create_subscription(
        &self,
        display_name: &str,
        owner: &str,
    ) -> Result<Subscription> {
        let s = Subscription {
            subscription_id: coffer_crypto::random::uuid()?,
            tenant_id: self.identity.tenant_id().to_string(),
            display_name: display_name.to_string(),
            created: self.clock.now(),
        };
        self.store.put_subscription(&s).await?;
        let a = RoleAssignment {
            name: coffer_crypto::random::uuid()?,
            scope: sub_scope(&s.subscription_id),
            principal_id: owner.to_string(),
            principal_type: "ServicePrincipal".into(),
            role_definition_id: builtin::OWNER.into(),
            created: self.clock.now(),
            created_by: owner.to_string(),
        };
        self.store.put_role_assignment(&a).await?;
        Ok(s)
    }

    fn require_admin(caller: &Caller, action: &str) -> Result<()> {
        if caller.is_admin {
            Ok(())
        } else {
            Err(DomainError::Forbidden {
                principal: caller.object_id.clone(),
                action: action.into(),
                scope: "/".into(),
            })
        }
    }

    /// `PUT /providers/Microsoft.Subscription/aliases/{alias}`: tenant administrators only.
    pub async fn put_alias(&self, caller: &Caller, alias: &str, body: &Value) -> Result<Put> {
        Self::require_admin(caller, "Microsoft.Subscription/aliases/write")?;
        names::alias(alias)?;
        let body = Body::obj(body)?;
        let props = body.object("properties")?;
        let display = match &props {
            Some(p) => p.str("displayName")?.unwrap_or(alias),
            None => alias,
        };
        if display.is_empty() || display.chars().count() > 64 {
            return Err(bad("displayName must be 1 to 64 characters"));
        }
        let id = format!("/providers/Microsoft.Subscription/aliases/{alias}");
        if let Some(existing) = self.store.get_resource(&id).await? {
            return Ok(Put {
                body: existing.body,
                created: false,
            });
        }
        let s = self.create_subscription(display, &caller.object_id).await?;
        let out = json!({
            "id": id, "name": alias, "type": ALIAS_TYPE,
            "properties": {"subscriptionId": s.subscription_id, "provisioningState": "Succeeded"}
        });
        self.store
            .put_resource(&Resource {
                id,
                resource_type: ALIAS_TYPE.into(),
                subscription_id: s.subscription_id,
                resource_group: None,
                name: alias.into(),
                location: None,
                body: out.clone(),
            })
            .await?;
        Ok(Put {
            body: out,
            created: true,
        })
    }

    pub async fn get_alias(&self, caller: &Caller, alias: &str) -> Result<Value> {
        Self::require_admin(caller, "Microsoft.Subscription/aliases/read")?;
        let id = format!("/providers/Microsoft.Subscription/aliases/{alias}");
        self.store
            .get_resource(&id)
            .await?
            .map(|r| r.body)
            .ok_or_else(|| DomainError::ResourceNotFound {
                resource_type: ALIAS_TYPE.into(),
                name: alias.into(),
            })
    }

    // ---- resource groups ------------------------------------------------------------------

    fn group_body(g: &ResourceGroup) -> Value {
        json!({
            "id": g.id(), "name": g.name, "type": "Microsoft.Resources/resourceGroups",
            "location": g.location, "tags": g.tags,
            "properties": {"provisioningState": "Succeeded"}
        })
    }

    pub async fn put_group(
        &self,
        caller: &Caller,
        sub: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put> {
        self.authorize(
            caller,
            "Microsoft.Resources/subscriptions/resourceGroups/write",
            &rg_scope(sub, name),
        )
        .await?;
        names::resource_group(name)?;
        let body = Body::obj(body)?;
        if self.store.get_subscription(sub).await?.is_none() {
            return Err(DomainError::SubscriptionNotFound(sub.into()));
        }
        let location = body
            .str("location")?
            .ok_or_else(|| bad("the property 'location' is required"))?;
        let location = self.check_location(location, "resourceGroups")?;
        let tags = body.tags()?;
        let existing = self.store.get_resource_group(sub, name).await?;
        if let Some(e) = &existing
            && e.location != location
        {
            return Err(DomainError::Conflict(format!(
                "Invalid resource group location '{location}'. The Resource group already exists in location '{}'.",
                e.location
            )));
        }
        let g = ResourceGroup {
            subscription_id: sub.into(),
            name: existing
                .as_ref()
                .map(|e| e.name.clone())
                .unwrap_or_else(|| name.into()),
            location,
            tags: tags.unwrap_or_else(|| json!({})),
            created: existing
                .as_ref()
                .map(|e| e.created)
                .unwrap_or_else(|| self.clock.now()),
        };
        let created = self.store.put_resource_group(&g).await?;
        Ok(Put {
            body: Self::group_body(&g),
            created,
        })
    }

    pub async fn patch_group(
        &self,
        caller: &Caller,
        sub: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value> {
        self.authorize(
            caller,
            "Microsoft.Resources/subscriptions/resourceGroups/write",
            &rg_scope(sub, name),
        )
        .await?;
        let body = Body::obj(body)?;
        let mut g = self.require_group(sub, name).await?;
        if let Some(t) = body.tags()? {
            g.tags = t;
        }
        self.store.put_resource_group(&g).await?;
        Ok(Self::group_body(&g))
    }

    pub async fn get_group(&self, caller: &Caller, sub: &str, name: &str) -> Result<Value> {
        self.authorize(
            caller,
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            &rg_scope(sub, name),
        )
        .await?;
        Ok(Self::group_body(&self.require_group(sub, name).await?))
    }

    pub async fn list_groups(&self, caller: &Caller, sub: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for g in self.store.list_resource_groups(sub).await? {
            if self
                .rbac
                .is_allowed(
                    &caller.object_id,
                    "Microsoft.Resources/subscriptions/resourceGroups/read",
                    ActionKind::Control,
                    &g.id(),
                )
                .await?
            {
                out.push(Self::group_body(&g));
            }
        }
        Ok(out)
    }

    /// Delete a group and everything in it (vaults are soft-deleted, identities removed).
    pub async fn delete_group(&self, caller: &Caller, sub: &str, name: &str) -> Result<bool> {
        self.authorize(
            caller,
            "Microsoft.Resources/subscriptions/resourceGroups/delete",
            &rg_scope(sub, name),
        )
        .await?;
        if self.store.get_resource_group(sub, name).await?.is_none() {
            return Err(DomainError::ResourceGroupNotFound(name.to_string()));
        }
        for r in self.store.list_resources(sub, Some(name), None).await? {
            if r.resource_type.eq_ignore_ascii_case(VAULT_TYPE) {
                self.soft_delete_vault(r).await?;
            } else if r.resource_type.eq_ignore_ascii_case(IDENTITY_TYPE) {
                self.remove_identity(r).await?;
            } else if r.resource_type.eq_ignore_ascii_case(STORAGE_TYPE) {
                self.remove_storage_account(r).await?;
            }
        }
        self.store.delete_resource_group(sub, name).await
    }

    /// `GET .../resources?$filter=...` (resourceType / name equality, joined by `and`).
    pub async fn list_generic(
        &self,
        caller: &Caller,
        sub: &str,
        rg: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Vec<Value>> {
        let (ftype, fname) = parse_resource_filter(filter.unwrap_or(""))?;
        if let Some(g) = rg {
            self.authorize(
                caller,
                "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
                &rg_scope(sub, g),
            )
            .await?;
        }
        let mut out = Vec::new();
        for r in self.store.list_resources(sub, rg, ftype.as_deref()).await? {
            if r.resource_group.is_none() {
                continue;
            }
            if fname
                .as_deref()
                .is_some_and(|n| !n.eq_ignore_ascii_case(&r.name))
            {
                continue;
            }
            let action = format!("{}/read", r.resource_type);
            if self
                .rbac
                .is_allowed(&caller.object_id, &action, ActionKind::Control, &r.id)
                .await?
            {
                out.push(json!({
                    "id": r.id, "name": r.name, "type": r.resource_type,
                    "location": r.location, "tags": r.body.get("tags").cloned().unwrap_or(json!({}))
                }));
            }
        }
        Ok(out)
    }

    // ---- generic typed resources ----------------------------------------------------------

    pub async fn get_resource(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        rtype: &str,
        name: &str,
    ) -> Result<Value> {
        let id = resource_id(sub, rg, rtype, name);
        self.authorize(caller, &format!("{rtype}/read"), &id)
            .await?;
        self.store
            .get_resource(&id)
            .await?
            .map(|r| self.render(r))
            .ok_or_else(|| DomainError::ResourceNotFound {
                resource_type: rtype.into(),
                name: name.into(),
            })
    }

    /// The wire view of a stored resource: private fields dropped, derived fields (a vault's
    /// URI depends on the server's current port) filled in.
    fn render(&self, r: Resource) -> Value {
        let mut body = public(r.body);
        if r.resource_type.eq_ignore_ascii_case(VAULT_TYPE) {
            body["properties"]["vaultUri"] = json!(self.vault_uri(&r.name));
        }
        body
    }

    /// `POST .../providers/Microsoft.KeyVault/checkNameAvailability`.
    pub async fn check_vault_name(
        &self,
        caller: &Caller,
        sub: &str,
        body: &Value,
    ) -> Result<Value> {
        self.authorize(
            caller,
            "Microsoft.KeyVault/checkNameAvailability/read",
            &sub_scope(sub),
        )
        .await?;
        let req = Body::obj(body)?;
        let name = req
            .str("name")?
            .ok_or_else(|| bad("the property 'name' is required"))?;
        if let Err(e) = names::vault(name) {
            return Ok(
                json!({"nameAvailable": false, "reason": "AccountNameInvalid", "message": e.to_string()}),
            );
        }
        let taken = !self
            .store
            .find_resources_by_name(VAULT_TYPE, name)
            .await?
            .is_empty()
            || !self
                .store
                .find_resources_by_name(DELETED_VAULT_TYPE, name)
                .await?
                .is_empty();
        Ok(if taken {
            json!({"nameAvailable": false, "reason": "AlreadyExists", "message": format!("The vault name '{name}' is already in use.")})
        } else {
            json!({"nameAvailable": true})
        })
    }

    pub async fn list_typed(
        &self,
        caller: &Caller,
        sub: &str,
        rg: Option<&str>,
        rtype: &str,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for r in self.store.list_resources(sub, rg, Some(rtype)).await? {
            if self
                .rbac
                .is_allowed(
                    &caller.object_id,
                    &format!("{rtype}/read"),
                    ActionKind::Control,
                    &r.id,
                )
                .await?
            {
                out.push(self.render(r));
            }
        }
        Ok(out)
    }

    // ---- key vaults -----------------------------------------------------------------------

    fn vault_uri(&self, name: &str) -> String {
        format!(
            "https://{}.{}/",
            name.to_ascii_lowercase(),
            self.config.vault_dns_suffix
        )
    }

    pub async fn put_vault(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put> {
        let id = resource_id(sub, rg, VAULT_TYPE, name);
        self.authorize(caller, "Microsoft.KeyVault/vaults/write", &id)
            .await?;
        names::vault(name)?;
        let req = Body::obj(body)?;
        self.require_group(sub, rg).await?;
        let location = req
            .str("location")?
            .ok_or_else(|| bad("the property 'location' is required"))?;
        let location = self.check_location(location, VAULT_TYPE)?;
        let props = req.object("properties")?;
        let existing = self.store.get_resource(&id).await?;
        let create_mode = match &props {
            Some(p) => p.str("createMode")?.map(str::to_ascii_lowercase),
            None => None,
        };
        let mut base = match &existing {
            Some(e) => e.body.clone(),
            None => {
                let others = self.store.find_resources_by_name(VAULT_TYPE, name).await?;
                if !others.is_empty() {
                    return Err(DomainError::VaultNameInUse(name.into()));
                }
                let deleted = self
                    .store
                    .find_resources_by_name(DELETED_VAULT_TYPE, name)
                    .await?;
                match (deleted.into_iter().next(), create_mode.as_deref()) {
                    // Only the vault's own id may recover it: same subscription, group and
                    // name (otherwise anyone could adopt another tenant's deleted vault and
                    // its keys). A mismatch looks exactly like a name in use.
                    (Some(d), Some("recover"))
                        if d.subscription_id.eq_ignore_ascii_case(sub)
                            && d.body["properties"]["vaultId"]
                                .as_str()
                                .is_some_and(|v| v.eq_ignore_ascii_case(&id)) =>
                    {
                        return self.recover_vault(d, sub, rg, &id, &location).await;
                    }
                    (Some(_), _) => {
                        return Err(DomainError::Conflict(format!(
                            "A vault with the same name '{name}' already exists in deleted state. Recover it (createMode 'recover') or purge it first."
                        )));
                    }
                    (None, Some("recover")) => {
                        return Err(DomainError::ResourceNotFound {
                            resource_type: DELETED_VAULT_TYPE.into(),
                            name: name.into(),
                        });
                    }
                    (None, _) => json!({"properties": {}}),
                }
            }
        };
        if let Some(e) = &existing
            && e.location.as_deref() != Some(location.as_str())
        {
            return Err(bad(format!(
                "the vault '{name}' exists in location '{}'; its location cannot change",
                e.location.clone().unwrap_or_default()
            )));
        }
        self.apply_vault_properties(
            &mut base,
            props.as_ref(),
            existing.is_none(),
            &caller.tenant_id,
        )?;
        if let Some(t) = req.tags()? {
            base["tags"] = t;
        } else if existing.is_none() {
            base["tags"] = json!({});
        }
        self.save_vault(base, &id, sub, rg, name, &location, existing.is_none())
            .await
    }

    pub async fn patch_vault(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value> {
        let id = resource_id(sub, rg, VAULT_TYPE, name);
        self.authorize(caller, "Microsoft.KeyVault/vaults/write", &id)
            .await?;
        let req = Body::obj(body)?;
        let existing =
            self.store
                .get_resource(&id)
                .await?
                .ok_or_else(|| DomainError::ResourceNotFound {
                    resource_type: VAULT_TYPE.into(),
                    name: name.into(),
                })?;
        let mut base = existing.body.clone();
        let props = req.object("properties")?;
        self.apply_vault_properties(&mut base, props.as_ref(), false, &caller.tenant_id)?;
        if let Some(t) = req.tags()? {
            base["tags"] = t;
        }
        let loc = existing.location.clone().unwrap_or_default();
        let saved = self
            .save_vault(base, &id, sub, rg, &existing.name, &loc, false)
            .await?;
        Ok(saved.body)
    }

    /// Merge the request's vault properties into `base`, enforcing Azure's rules.
    fn apply_vault_properties(
        &self,
        base: &mut Value,
        props: Option<&Body<'_>>,
        new: bool,
        tenant: &str,
    ) -> Result<()> {
        let cur = base.get("properties").cloned().unwrap_or_else(|| json!({}));
        let mut p: Map<String, Value> = cur.as_object().cloned().unwrap_or_default();
        let empty = json!({});
        let req = props.map(|b| Body(b.0)).unwrap_or(Body(&empty));

        let tenant_id = match req.str("tenantId")? {
            Some(t) if !names::is_guid(t) => return Err(bad("tenantId must be a GUID")),
            Some(t) if !t.eq_ignore_ascii_case(self.identity.tenant_id()) => {
                return Err(bad(format!(
                    "the tenant '{t}' is not a tenant of this server"
                )));
            }
            Some(t) => t.to_ascii_lowercase(),
            None => p
                .get("tenantId")
                .and_then(Value::as_str)
                .unwrap_or(tenant)
                .to_string(),
        };
        p.insert("tenantId".into(), json!(tenant_id));

        if let Some(sku) = req.object("sku")? {
            let name = sku.str("name")?.unwrap_or("standard").to_ascii_lowercase();
            if name != "standard" && name != "premium" {
                return Err(bad("sku.name must be 'standard' or 'premium'"));
            }
            let family = sku.str("family")?.unwrap_or("A");
            if family != "A" {
                return Err(bad("sku.family must be 'A'"));
            }
            p.insert("sku".into(), json!({"family": "A", "name": name}));
        } else if new {
            p.insert("sku".into(), json!({"family": "A", "name": "standard"}));
        }

        if req.bool("enableSoftDelete")? == Some(false) {
            return Err(bad(
                "soft delete is always enabled on Coffer vaults: enableSoftDelete cannot be false",
            ));
        }
        p.insert("enableSoftDelete".into(), json!(true));

        let current_ret = p.get("softDeleteRetentionInDays").and_then(Value::as_i64);
        match (req.int("softDeleteRetentionInDays")?, current_ret) {
            (Some(d), _) if !(7..=90).contains(&d) => {
                return Err(bad(format!(
                    "softDeleteRetentionInDays must be between 7 and 90 (got {d})"
                )));
            }
            (Some(d), Some(c)) if !new && d != c => {
                return Err(bad(format!(
                    "softDeleteRetentionInDays cannot be changed once set (it is {c})"
                )));
            }
            (Some(d), _) => {
                p.insert("softDeleteRetentionInDays".into(), json!(d));
            }
            (None, None) => {
                p.insert("softDeleteRetentionInDays".into(), json!(90));
            }
            (None, Some(_)) => {}
        }

        let current_pp = p.get("enablePurgeProtection").and_then(Value::as_bool) == Some(true);
        match req.bool("enablePurgeProtection")? {
            Some(false) if current_pp => {
                return Err(bad(
                    "purge protection cannot be disabled once enabled: enablePurgeProtection cannot be set to false",
                ));
            }
            Some(true) => {
                p.insert("enablePurgeProtection".into(), json!(true));
            }
            _ => {}
        }

        for key in [
            "enableRbacAuthorization",
            "enabledForDeployment",
            "enabledForDiskEncryption",
            "enabledForTemplateDeployment",
        ] {
            match req.bool(key)? {
                Some(b) => {
                    p.insert(key.into(), json!(b));
                }
                None if new => {
                    let default = key == "enableRbacAuthorization";
                    p.insert(key.into(), json!(default));
                }
                None => {}
            }
        }
        match req.0.get("accessPolicies") {
            None | Some(Value::Null) => {
                p.entry("accessPolicies").or_insert_with(|| json!([]));
            }
            Some(Value::Array(a)) => {
                if a.len() > 1024 {
                    return Err(bad("a vault may have at most 1024 access policies"));
                }
                p.insert("accessPolicies".into(), Value::Array(a.clone()));
            }
            Some(_) => return Err(bad("the property 'accessPolicies' must be an array")),
        }
        if let Some(acl) = req.object("networkAcls")? {
            if acl
                .str("defaultAction")?
                .is_some_and(|a| !a.eq_ignore_ascii_case("Allow"))
            {
                return Err(bad(
                    "network rules are not enforced by this server: networkAcls.defaultAction must be Allow",
                ));
            }
            p.insert("networkAcls".into(), acl.0.clone());
        }
        match req.str("publicNetworkAccess")? {
            Some(v) if !v.eq_ignore_ascii_case("Enabled") => {
                return Err(bad(
                    "network rules are not enforced by this server: publicNetworkAccess must be Enabled",
                ));
            }
            Some(v) => {
                p.insert("publicNetworkAccess".into(), json!(v));
            }
            None => {
                p.entry("publicNetworkAccess")
                    .or_insert_with(|| json!("Enabled"));
            }
        }
        match req.str("createMode")? {
            None => {}
            Some(m) if m.eq_ignore_ascii_case("default") || m.eq_ignore_ascii_case("recover") => {}
            Some(_) => return Err(bad("createMode must be 'default' or 'recover'")),
        }
        p.insert("provisioningState".into(), json!("Succeeded"));
        base["properties"] = Value::Object(p);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn save_vault(
        &self,
        mut body: Value,
        id: &str,
        sub: &str,
        rg: &str,
        name: &str,
        location: &str,
        new: bool,
    ) -> Result<Put> {
        body["id"] = json!(id);
        body["name"] = json!(name);
        body["type"] = json!(VAULT_TYPE);
        body["location"] = json!(location);
        body["properties"]["vaultUri"] = json!(self.vault_uri(name));
        let now = rfc3339(self.clock.now());
        if new {
            body["systemData"] = json!({"createdAt": now, "lastModifiedAt": now});
        } else {
            body["systemData"]["lastModifiedAt"] = json!(now);
        }
        let created = self
            .store
            .put_resource(&Resource {
                id: id.into(),
                resource_type: VAULT_TYPE.into(),
                subscription_id: sub.into(),
                resource_group: Some(rg.into()),
                name: name.into(),
                location: Some(location.into()),
                body: body.clone(),
            })
            .await?;
        Ok(Put { body, created })
    }

    async fn recover_vault(
        &self,
        deleted: Resource,
        sub: &str,
        rg: &str,
        id: &str,
        location: &str,
    ) -> Result<Put> {
        let original = deleted
            .body
            .get("_original")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if deleted.location.as_deref() != Some(location) {
            return Err(bad(
                "a deleted vault must be recovered in the location it was deleted from",
            ));
        }
        self.store.delete_resource(&deleted.id).await?;
        let name = deleted.name.clone();
        self.save_vault(original, id, sub, rg, &name, location, true)
            .await
    }

    async fn soft_delete_vault(&self, r: Resource) -> Result<()> {
        let now = self.clock.now();
        let days = r.body["properties"]["softDeleteRetentionInDays"]
            .as_i64()
            .unwrap_or(90);
        let location = r.location.clone().unwrap_or_default();
        let did = deleted_vault_id(&r.subscription_id, &location, &r.name);
        let body = json!({
            "id": did, "name": r.name, "type": DELETED_VAULT_TYPE,
            "properties": {
                "vaultId": r.id, "location": location,
                "deletionDate": rfc3339(now),
                "scheduledPurgeDate": rfc3339(now + days * 86_400),
                "scheduledPurgeUnix": now + days * 86_400,
                "tags": r.body.get("tags").cloned().unwrap_or(json!({})),
                "purgeProtectionEnabled": r.body["properties"]["enablePurgeProtection"].as_bool() == Some(true)
            },
            "_original": r.body,
        });
        self.store
            .put_resource(&Resource {
                id: did,
                resource_type: DELETED_VAULT_TYPE.into(),
                subscription_id: r.subscription_id.clone(),
                resource_group: None,
                name: r.name.clone(),
                location: Some(location),
                body,
            })
            .await?;
        self.store.delete_resource(&r.id).await?;
        Ok(())
    }

    pub async fn delete_vault(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<bool> {
        let id = resource_id(sub, rg, VAULT_TYPE, name);
        self.authorize(caller, "Microsoft.KeyVault/vaults/delete", &id)
            .await?;
        match self.store.get_resource(&id).await? {
            Some(r) => {
                self.soft_delete_vault(r).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn deleted_view(mut body: Value) -> Value {
        if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
            p.remove("scheduledPurgeUnix");
        }
        public(body)
    }

    pub async fn list_deleted_vaults(&self, caller: &Caller, sub: &str) -> Result<Vec<Value>> {
        self.authorize(
            caller,
            "Microsoft.KeyVault/locations/deletedVaults/read",
            &sub_scope(sub),
        )
        .await?;
        Ok(self
            .store
            .list_resources(sub, None, Some(DELETED_VAULT_TYPE))
            .await?
            .into_iter()
            .map(|r| Self::deleted_view(r.body))
            .collect())
    }

    async fn find_deleted(&self, sub: &str, location: &str, name: &str) -> Result<Resource> {
        self.store
            .get_resource(&deleted_vault_id(sub, &location.to_ascii_lowercase(), name))
            .await?
            .ok_or_else(|| DomainError::ResourceNotFound {
                resource_type: DELETED_VAULT_TYPE.into(),
                name: name.into(),
            })
    }

    pub async fn get_deleted_vault(
        &self,
        caller: &Caller,
        sub: &str,
        location: &str,
        name: &str,
    ) -> Result<Value> {
        self.authorize(
            caller,
            "Microsoft.KeyVault/locations/deletedVaults/read",
            &sub_scope(sub),
        )
        .await?;
        Ok(Self::deleted_view(
            self.find_deleted(sub, location, name).await?.body,
        ))
    }

    pub async fn purge_deleted_vault(
        &self,
        caller: &Caller,
        sub: &str,
        location: &str,
        name: &str,
    ) -> Result<()> {
        self.authorize(
            caller,
            "Microsoft.KeyVault/locations/deletedVaults/purge/action",
            &sub_scope(sub),
        )
        .await?;
        let d = self.find_deleted(sub, location, name).await?;
        let protected = d.body["properties"]["purgeProtectionEnabled"].as_bool() == Some(true);
        let due = d.body["properties"]["scheduledPurgeUnix"]
            .as_i64()
            .unwrap_or(0);
        if protected && self.clock.now() < due {
            return Err(DomainError::Conflict(format!(
                "The vault '{name}' has purge protection enabled: it cannot be purged before its scheduled purge date {}.",
                rfc3339(due)
            )));
        }
        self.store.delete_resource(&d.id).await?;
        // Purging a vault purges its keys: crypto-shredding of everything they protect.
        self.store.purge_vault_keys(&d.name).await?;
        Ok(())
    }

    /// Purge every deleted vault whose scheduled purge date has passed; returns how many.
    pub async fn purge_due_vaults(&self) -> Result<usize> {
        let now = self.clock.now();
        let mut n = 0;
        for s in self.store.list_subscriptions().await? {
            for d in self
                .store
                .list_resources(&s.subscription_id, None, Some(DELETED_VAULT_TYPE))
                .await?
            {
                if d.body["properties"]["scheduledPurgeUnix"]
                    .as_i64()
                    .unwrap_or(i64::MAX)
                    <= now
                {
                    self.store.delete_resource(&d.id).await?;
                    self.store.purge_vault_keys(&d.name).await?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    // ---- user-assigned identities ---------------------------------------------------------

    pub async fn put_identity(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put> {
        let id = resource_id(sub, rg, IDENTITY_TYPE, name);
        self.authorize(
            caller,
            "Microsoft.ManagedIdentity/userAssignedIdentities/write",
            &id,
        )
        .await?;
        names::identity(name)?;
        let req = Body::obj(body)?;
        self.require_group(sub, rg).await?;
        let location = req
            .str("location")?
            .ok_or_else(|| bad("the property 'location' is required"))?;
        let location = self.check_location(location, IDENTITY_TYPE)?;
        let tags = req.tags()?;
        if let Some(mut e) = self.store.get_resource(&id).await? {
            if let Some(t) = tags {
                e.body["tags"] = t;
            }
            self.store.put_resource(&e).await?;
            return Ok(Put {
                body: e.body,
                created: false,
            });
        }
        let p = self.identity.create_managed_identity(&id, name).await?;
        let body = json!({
            "id": id, "name": name, "type": IDENTITY_TYPE, "location": location,
            "tags": tags.unwrap_or_else(|| json!({})),
            "properties": {
                "tenantId": p.tenant_id, "principalId": p.object_id,
                "clientId": p.client_id, "isolationScope": "None"
            }
        });
        self.store
            .put_resource(&Resource {
                id,
                resource_type: IDENTITY_TYPE.into(),
                subscription_id: sub.into(),
                resource_group: Some(rg.into()),
                name: name.into(),
                location: Some(location),
                body: body.clone(),
            })
            .await?;
        Ok(Put {
            body,
            created: true,
        })
    }

    async fn remove_identity(&self, r: Resource) -> Result<()> {
        if let Some(pid) = r.body["properties"]["principalId"].as_str() {
            self.store.delete_principal(pid).await?;
        }
        self.store.delete_resource(&r.id).await?;
        Ok(())
    }

    pub async fn delete_identity(
        &self,
        caller: &Caller,
        sub: &str,
        rg: &str,
        name: &str,
    ) -> Result<bool> {
        let id = resource_id(sub, rg, IDENTITY_TYPE, name);
        self.authorize(
            caller,
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
            &id,
        )
        .await?;
        match self.store.get_resource(&id).await? {
            Some(r) => {
                self.remove_identity(r).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    // ---- role definitions -----------------------------------------------------------------

    fn role_definition_prefix(scope: &str) -> String {
        match scope_subscription(scope) {
            Some(s) => format!("/subscriptions/{s}"),
            None => String::new(),
        }
    }

    pub fn role_definition_body(scope: &str, r: &RoleDefinition) -> Value {
        json!({
            "id": format!("{}/providers/Microsoft.Authorization/roleDefinitions/{}", Self::role_definition_prefix(scope), r.id),
            "name": r.id,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": r.role_name,
                "type": "BuiltInRole",
                "description": r.description,
                "assignableScopes": ["/"],
                "permissions": [{
                    "actions": r.actions, "notActions": r.not_actions,
                    "dataActions": r.data_actions, "notDataActions": r.not_data_actions
                }],
                "createdOn": "2015-02-02T21:55:09.8806423Z",
                "updatedOn": "2024-01-01T00:00:00.0000000Z",
                "createdBy": null,
                "updatedBy": null
            }
        })
    }

    /// Role definitions are a public catalog: any signed-in principal of the tenant may read them.
    pub fn list_role_definitions(&self, scope: &str, filter: Option<&str>) -> Result<Vec<Value>> {
        let f = filter.unwrap_or("").trim();
        let by_name = parse_eq(f, "roleName")?;
        let by_type = parse_eq(f, "type")?;
        if !f.is_empty() && by_name.is_none() && by_type.is_none() {
            return Err(DomainError::InvalidProperty(format!(
                "unsupported $filter '{}': use roleName eq '...' or type eq 'BuiltInRole'",
                f.chars().take(100).collect::<String>()
            )));
        }
        Ok(self
            .rbac
            .catalog()
            .all()
            .iter()
            .filter(|r| {
                by_name
                    .as_deref()
                    .is_none_or(|n| r.role_name.eq_ignore_ascii_case(n))
            })
            .filter(|_| {
                by_type
                    .as_deref()
                    .is_none_or(|t| t.eq_ignore_ascii_case("BuiltInRole"))
            })
            .map(|r| Self::role_definition_body(scope, r))
            .collect())
    }

    pub fn get_role_definition(&self, scope: &str, id: &str) -> Result<Value> {
        self.rbac
            .catalog()
            .get(id)
            .map(|r| Self::role_definition_body(scope, r))
            .ok_or_else(|| DomainError::RoleDefinitionNotFound(id.chars().take(64).collect()))
    }

    // ---- role assignments -----------------------------------------------------------------

    fn assignment_body(a: &RoleAssignment) -> Value {
        json!({
            "id": a.id(),
            "name": a.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/{}", Self::role_definition_prefix(&a.scope), a.role_definition_id),
                "principalId": a.principal_id,
                "principalType": a.principal_type,
                "scope": a.scope,
                "condition": null,
                "conditionVersion": null,
                "createdOn": rfc3339(a.created),
                "updatedOn": rfc3339(a.created),
                "createdBy": a.created_by,
                "updatedBy": a.created_by,
                "delegatedManagedIdentityResourceId": null,
                "description": null
            }
        })
    }

    async fn check_scope(&self, scope: &str) -> Result<()> {
        let norm = normalize_scope(scope);
        if norm == "/" {
            return Ok(());
        }
        if !scope.starts_with('/') || scope.len() > 1024 || scope.contains("//") {
            return Err(bad("the scope is not a valid resource id"));
        }
        let sub = scope_subscription(scope)
            .ok_or_else(|| bad("the scope must be '/' or start with /subscriptions/{id}"))?;
        if self.store.get_subscription(sub).await?.is_none() {
            return Err(DomainError::SubscriptionNotFound(sub.into()));
        }
        Ok(())
    }

    pub async fn put_role_assignment(
        &self,
        caller: &Caller,
        scope: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put> {
        self.authorize(
            caller,
            "Microsoft.Authorization/roleAssignments/write",
            scope,
        )
        .await?;
        self.check_scope(scope).await?;
        if !names::is_guid(name) {
            return Err(bad("the role assignment name must be a GUID"));
        }
        let req = Body::obj(body)?;
        let props = req
            .object("properties")?
            .ok_or_else(|| bad("the property 'properties' is required"))?;
        let rd = props
            .str("roleDefinitionId")?
            .ok_or_else(|| bad("properties.roleDefinitionId is required"))?;
        let rd_guid = rd.rsplit('/').next().unwrap_or_default();
        let role =
            self.rbac.catalog().get(rd_guid).ok_or_else(|| {
                DomainError::RoleDefinitionNotFound(rd.chars().take(200).collect())
            })?;
        let principal_id = props
            .str("principalId")?
            .ok_or_else(|| bad("properties.principalId is required"))?;
        let principal = self
            .store
            .get_principal(&principal_id.to_ascii_lowercase())
            .await?
            .ok_or_else(|| {
                DomainError::PrincipalNotFound(principal_id.chars().take(64).collect())
            })?;
        let principal_type = match props.str("principalType")? {
            Some(t)
                if [
                    "User",
                    "Group",
                    "ServicePrincipal",
                    "ForeignGroup",
                    "Device",
                ]
                .contains(&t) =>
            {
                t.to_string()
            }
            Some(_) => {
                return Err(bad(
                    "principalType must be User, Group, ServicePrincipal, ForeignGroup or Device",
                ));
            }
            None => match principal.kind {
                crate::model::PrincipalKind::User => "User".into(),
                _ => "ServicePrincipal".into(),
            },
        };
        let norm = normalize_scope(scope);
        let all = self
            .store
            .list_role_assignments_for_principal(&principal.object_id)
            .await?;
        if let Some(same) = all
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name) && normalize_scope(&a.scope) == norm)
        {
            if same.role_definition_id.eq_ignore_ascii_case(&role.id) {
                return Ok(Put {
                    body: Self::assignment_body(same),
                    created: false,
                });
            }
            return Err(bad(
                "role assignments cannot be updated: delete and create it again",
            ));
        }
        if all.iter().any(|a| {
            normalize_scope(&a.scope) == norm && a.role_definition_id.eq_ignore_ascii_case(&role.id)
        }) {
            return Err(DomainError::RoleAssignmentExists);
        }
        if self.store.get_role_assignment(scope, name).await?.is_some() {
            return Err(DomainError::Conflict(
                "a role assignment with this name already exists at this scope".into(),
            ));
        }
        let a = RoleAssignment {
            name: name.to_ascii_lowercase(),
            scope: scope.trim_end_matches('/').to_string(),
            principal_id: principal.object_id.clone(),
            principal_type,
            role_definition_id: role.id.clone(),
            created: self.clock.now(),
            created_by: caller.object_id.clone(),
        };
        self.store.put_role_assignment(&a).await?;
        Ok(Put {
            body: Self::assignment_body(&a),
            created: true,
        })
    }

    pub async fn get_role_assignment(
        &self,
        caller: &Caller,
        scope: &str,
        name: &str,
    ) -> Result<Value> {
        self.authorize(
            caller,
            "Microsoft.Authorization/roleAssignments/read",
            scope,
        )
        .await?;
        self.store
            .get_role_assignment(scope, name)
            .await?
            .map(|a| Self::assignment_body(&a))
            .ok_or_else(|| DomainError::ResourceNotFound {
                resource_type: "Microsoft.Authorization/roleAssignments".into(),
                name: name.chars().take(64).collect(),
            })
    }

    /// Returns the deleted assignment's body, or None when there was none (204).
    pub async fn delete_role_assignment(
        &self,
        caller: &Caller,
        scope: &str,
        name: &str,
    ) -> Result<Option<Value>> {
        self.authorize(
            caller,
            "Microsoft.Authorization/roleAssignments/delete",
            scope,
        )
        .await?;
        let Some(a) = self.store.get_role_assignment(scope, name).await? else {
            return Ok(None);
        };
        self.store.delete_role_assignment(scope, name).await?;
        Ok(Some(Self::assignment_body(&a)))
    }

    /// Assignments at, above and below `scope` (`atScope()`: at and above only), optionally
    /// for one principal (`principalId eq '…'` or `assignedTo('…')`).
    pub async fn list_role_assignments(
        &self,
        caller: &Caller,
        scope: &str,
        filter: Option<&str>,
    ) -> Result<Vec<Value>> {
        self.authorize(
            caller,
            "Microsoft.Authorization/roleAssignments/read",
            scope,
        )
        .await?;
        let f = filter.unwrap_or("").trim();
        let mut at_scope = false;
        let mut principal: Option<String> = None;
        for clause in split_and(f) {
            let c = clause.trim();
            if c.eq_ignore_ascii_case("atScope()") {
                at_scope = true;
            } else if let Some(p) = parse_eq(c, "principalId")? {
                principal = Some(p);
            } else if let Some(p) = parse_call(c, "assignedTo") {
                principal = Some(p);
            } else if !c.is_empty() {
                return Err(bad(format!(
                    "unsupported $filter clause '{}'",
                    c.chars().take(100).collect::<String>()
                )));
            }
        }
        Ok(self
            .store
            .list_role_assignments()
            .await?
            .into_iter()
            .filter(|a| {
                scope_contains(&a.scope, scope) || (!at_scope && scope_contains(scope, &a.scope))
            })
            .filter(|a| {
                principal
                    .as_deref()
                    .is_none_or(|p| a.principal_id.eq_ignore_ascii_case(p))
            })
            .map(|a| Self::assignment_body(&a))
            .collect())
    }
}

fn split_and(f: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let lower = f.to_ascii_lowercase();
    let mut start = 0;
    while let Some(pos) = lower[start..].find(" and ") {
        out.push(&f[start..start + pos]);
        start += pos + 5;
    }
    if start < f.len() {
        out.push(&f[start..]);
    }
    out
}

/// Parse `{field} eq '{value}'` (case-insensitive field) from a single clause or a filter with
/// `and`-joined clauses. `Ok(None)` when the field is absent.
fn parse_eq(filter: &str, field: &str) -> Result<Option<String>> {
    for clause in split_and(filter) {
        let c = clause.trim();
        let Some((lhs, rhs)) = c.split_once(' ') else {
            continue;
        };
        if !lhs.eq_ignore_ascii_case(field) {
            continue;
        }
        let rhs = rhs.trim_start();
        let Some(v) = rhs
            .get(..3)
            .filter(|op| op.eq_ignore_ascii_case("eq "))
            .and_then(|_| rhs[3..].trim().strip_prefix('\''))
            .and_then(|v| v.strip_suffix('\''))
        else {
            return Err(bad(format!(
                "invalid $filter clause '{}'",
                c.chars().take(100).collect::<String>()
            )));
        };
        return Ok(Some(v.replace("''", "'")));
    }
    Ok(None)
}

fn parse_call(clause: &str, func: &str) -> Option<String> {
    let c = clause.trim();
    let head = c.get(..func.len())?;
    if !head.eq_ignore_ascii_case(func) {
        return None;
    }
    c[func.len()..]
        .trim()
        .strip_prefix("('")?
        .strip_suffix("')")
        .map(str::to_string)
}

fn parse_resource_filter(f: &str) -> Result<(Option<String>, Option<String>)> {
    let rtype = parse_eq(f, "resourceType")?;
    let name = parse_eq(f, "name")?;
    for clause in split_and(f) {
        let c = clause.trim().to_ascii_lowercase();
        if !c.is_empty() && !c.starts_with("resourcetype ") && !c.starts_with("name ") {
            return Err(bad(format!(
                "unsupported $filter clause '{}': use resourceType eq '...' and/or name eq '...'",
                clause.chars().take(100).collect::<String>()
            )));
        }
    }
    Ok((rtype, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let (t, n) = parse_resource_filter(
            "resourceType eq 'Microsoft.KeyVault/vaults' and name eq 'vault1'",
        )
        .unwrap_or_default();
        assert_eq!(t.as_deref(), Some("Microsoft.KeyVault/vaults"));
        assert_eq!(n.as_deref(), Some("vault1"));
        assert!(parse_resource_filter("tagName eq 'x'").is_err());
        assert_eq!(
            parse_eq("roleName eq 'Key Vault Crypto Officer'", "roleName").unwrap_or_default(),
            Some("Key Vault Crypto Officer".into())
        );
        assert!(parse_eq("roleName ne 'x'", "roleName").is_err());
        assert_eq!(
            parse_call("assignedTo('abc')", "assignedTo"),
            Some("abc".into())
        );
        assert_eq!(
            split_and("atScope() and principalId eq 'x'"),
            vec!["atScope()", "principalId eq 'x'"]
        );
    }

    #[test]
    fn scope_subscriptions() {
        assert_eq!(
            scope_subscription("/subscriptions/abc/resourceGroups/x"),
            Some("abc")
        );
        assert_eq!(scope_subscription("/"), None);
        assert_eq!(scope_subscription("/providers/x"), None);
    }
}
