//! Azure RBAC: role definitions, assignments at hierarchical scopes, deny by default.
//!
//! A principal may perform `action` on `scope` when some assignment of theirs sits at `scope`
//! or at an ancestor of it (segment-wise, case-insensitive) and the assigned role's
//! `actions` (or `dataActions`) match the action while its `notActions` (`notDataActions`)
//! do not. Patterns use `*` as a wildcard, compared case-insensitively. Management roles grant
//! no data actions.
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::model::RoleAssignment;
use crate::store::MetaStore;
use crate::{DomainError, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    pub id: String,
    pub role_name: String,
    pub description: String,
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
}

/// Whether an action is a control-plane action or a data action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Control,
    Data,
}

/// Azure's well-known built-in role ids used by the server itself.
pub mod builtin {
    pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
    pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
    pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
}

const BUILTIN_JSON: &str = include_str!("builtin_roles.json");

pub struct RoleCatalog {
    roles: Vec<RoleDefinition>,
    by_id: HashMap<String, usize>,
}

impl RoleCatalog {
    pub fn builtin() -> Result<Self> {
        let roles: Vec<RoleDefinition> = serde_json::from_str(BUILTIN_JSON)
            .map_err(|e| DomainError::Internal(format!("built-in roles: {e}")))?;
        let by_id = roles
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.to_ascii_lowercase(), i))
            .collect();
        Ok(Self { roles, by_id })
    }

    pub fn all(&self) -> &[RoleDefinition] {
        &self.roles
    }

    pub fn get(&self, id: &str) -> Option<&RoleDefinition> {
        self.by_id
            .get(&id.to_ascii_lowercase())
            .map(|i| &self.roles[*i])
    }

    pub fn by_name(&self, name: &str) -> Option<&RoleDefinition> {
        self.roles
            .iter()
            .find(|r| r.role_name.eq_ignore_ascii_case(name))
    }
}

/// Case-insensitive glob match with `*` wildcards.
pub fn pattern_matches(pattern: &str, action: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let a = action.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

impl RoleDefinition {
    pub fn permits(&self, action: &str, kind: ActionKind) -> bool {
        let (allow, deny) = match kind {
            ActionKind::Control => (&self.actions, &self.not_actions),
            ActionKind::Data => (&self.data_actions, &self.not_data_actions),
        };
        allow.iter().any(|p| pattern_matches(p, action))
            && !deny.iter().any(|p| pattern_matches(p, action))
    }
}

/// Normalise a scope for comparison: lower-case, no trailing slash, `/` for the root.
pub fn normalize_scope(scope: &str) -> String {
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    if s.is_empty() { "/".into() } else { s }
}

/// Whether `ancestor` is `scope` or one of its ancestors, segment-wise.
pub fn scope_contains(ancestor: &str, scope: &str) -> bool {
    let a = normalize_scope(ancestor);
    let s = normalize_scope(scope);
    a == "/" || s == a || s.starts_with(&format!("{a}/"))
}

pub struct Rbac {
    store: Arc<dyn MetaStore>,
    catalog: RoleCatalog,
}

impl Rbac {
    pub fn new(store: Arc<dyn MetaStore>) -> Result<Self> {
        Ok(Self {
            store,
            catalog: RoleCatalog::builtin()?,
        })
    }

    pub fn catalog(&self) -> &RoleCatalog {
        &self.catalog
    }

    /// Whether `principal` may perform `action` at `scope`.
    pub async fn is_allowed(
        &self,
        principal: &str,
        action: &str,
        kind: ActionKind,
        scope: &str,
    ) -> Result<bool> {
        let assignments = self
            .store
            .list_role_assignments_for_principal(principal)
            .await?;
        Ok(self.permitted_by(&assignments, action, kind, scope))
    }

    /// Deny by default: `Forbidden` unless some assignment grants the action.
    pub async fn authorize(
        &self,
        principal: &str,
        action: &str,
        kind: ActionKind,
        scope: &str,
    ) -> Result<()> {
        if self.is_allowed(principal, action, kind, scope).await? {
            Ok(())
        } else {
            Err(DomainError::Forbidden {
                principal: principal.to_string(),
                action: action.to_string(),
                scope: scope.to_string(),
            })
        }
    }

    pub fn permitted_by(
        &self,
        assignments: &[RoleAssignment],
        action: &str,
        kind: ActionKind,
        scope: &str,
    ) -> bool {
        assignments.iter().any(|a| {
            scope_contains(&a.scope, scope)
                && self
                    .catalog
                    .get(&a.role_definition_id)
                    .is_some_and(|r| r.permits(action, kind))
        })
    }

    /// Whether the principal holds any assignment at, above or below `scope` (Azure lists a
    /// subscription to anyone with a role anywhere in it).
    pub async fn has_any_access(&self, principal: &str, scope: &str) -> Result<bool> {
        let assignments = self
            .store
            .list_role_assignments_for_principal(principal)
            .await?;
        Ok(assignments
            .iter()
            .any(|a| scope_contains(&a.scope, scope) || scope_contains(scope, &a.scope)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(pattern_matches("*", "Microsoft.KeyVault/vaults/write"));
        assert!(pattern_matches("*/read", "Microsoft.KeyVault/vaults/read"));
        assert!(!pattern_matches(
            "*/read",
            "Microsoft.KeyVault/vaults/write"
        ));
        assert!(pattern_matches(
            "Microsoft.Authorization/*/Write",
            "microsoft.authorization/roleAssignments/write"
        ));
        assert!(pattern_matches(
            "Microsoft.KeyVault/vaults/keys/*",
            "Microsoft.KeyVault/vaults/keys/wrap/action"
        ));
        assert!(!pattern_matches(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/readx"
        ));
        assert!(pattern_matches("a*b*c", "axxbyyc"));
        assert!(!pattern_matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn scopes_are_hierarchical_and_segment_wise() {
        assert!(scope_contains(
            "/subscriptions/S",
            "/subscriptions/s/resourceGroups/rg"
        ));
        assert!(scope_contains(
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s/resourcegroups/RG/"
        ));
        assert!(!scope_contains(
            "/subscriptions/s/resourceGroups/rg",
            "/subscriptions/s/resourceGroups/rg2"
        ));
        assert!(scope_contains("/", "/subscriptions/s"));
    }

    #[test]
    fn builtin_roles_have_azure_semantics() {
        let c = RoleCatalog::builtin().unwrap_or_else(|_| unreachable!());
        let owner = c.get(builtin::OWNER).unwrap_or_else(|| unreachable!());
        let contributor = c
            .get(builtin::CONTRIBUTOR)
            .unwrap_or_else(|| unreachable!());
        let reader = c.get(builtin::READER).unwrap_or_else(|| unreachable!());
        let ra = "Microsoft.Authorization/roleAssignments/write";
        assert!(owner.permits(ra, ActionKind::Control));
        assert!(!contributor.permits(ra, ActionKind::Control));
        assert!(contributor.permits("Microsoft.KeyVault/vaults/write", ActionKind::Control));
        assert!(!reader.permits("Microsoft.KeyVault/vaults/write", ActionKind::Control));
        assert!(reader.permits("Microsoft.KeyVault/vaults/read", ActionKind::Control));
        // management roles grant no data actions
        assert!(!owner.permits("Microsoft.KeyVault/vaults/keys/read", ActionKind::Data));
        let seu = c
            .by_name("Key Vault Crypto Service Encryption User")
            .unwrap_or_else(|| unreachable!());
        assert!(seu.permits(
            "Microsoft.KeyVault/vaults/keys/unwrap/action",
            ActionKind::Data
        ));
        assert!(!seu.permits("Microsoft.KeyVault/vaults/keys/delete", ActionKind::Data));
        assert_eq!(c.all().len(), 24);
    }
}
