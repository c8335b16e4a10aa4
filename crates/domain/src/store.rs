//! The metadata store, owned by the domain and implemented by backends (SQLite now,
//! PostgreSQL later). Identifiers are compared case-insensitively, as ARM does: backends key
//! resources, groups and scopes by their lower-cased form.
use async_trait::async_trait;

use crate::Result;
use crate::model::{
    BlobRecord, ContainerRecord, KeyRecord, KeyVersion, Principal, Resource, ResourceGroup,
    RoleAssignment, StagedBlock, Subscription,
};

/// What a write expects of the blob's committed version at the moment it commits; checked
/// in the commit's own transaction, so a condition evaluated against one version never
/// applies to another (If-Match, If-None-Match: *, a block list built from what it read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there.
    Any,
    /// No committed version.
    Absent,
    /// The version with this ETag.
    Etag(String),
}

impl Expect {
    /// Expect exactly `current` (a version read before, or its absence).
    pub fn current(current: Option<&BlobRecord>) -> Self {
        match current {
            Some(c) => Self::Etag(c.etag.clone()),
            None => Self::Absent,
        }
    }

    /// Whether `stored` (the committed version, if any) is what was expected.
    pub fn holds(&self, stored: Option<&BlobRecord>) -> bool {
        match (self, stored) {
            (Self::Any, _) | (Self::Absent, None) => true,
            (Self::Etag(e), Some(s)) => *e == s.etag,
            _ => false,
        }
    }
}

/// What a blob commit replaced: the committed version before it, and the staged blocks of
/// the blob it dropped. Each is handed to exactly one caller (read in the commit's own
/// transaction), which deletes the objects the new version does not reference.
#[derive(Debug, Default)]
pub struct Replaced {
    pub old: Option<BlobRecord>,
    pub dropped: Vec<StagedBlock>,
}

impl Replaced {
    /// The objects of the replaced version and the dropped blocks.
    pub fn unused(self) -> Vec<crate::model::Part> {
        let mut parts = self.old.map(|o| o.parts).unwrap_or_default();
        parts.extend(self.dropped.into_iter().map(|b| b.part));
        parts
    }
}

#[async_trait]
pub trait MetaStore: Send + Sync {
    async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>>;
    async fn put_setting(&self, key: &str, value: &[u8]) -> Result<()>;

    async fn insert_principal(&self, p: &Principal) -> Result<()>;
    async fn get_principal(&self, object_id: &str) -> Result<Option<Principal>>;
    async fn find_principal_by_client_id(&self, client_id: &str) -> Result<Option<Principal>>;
    async fn find_principal_by_username(&self, username: &str) -> Result<Option<Principal>>;
    async fn delete_principal(&self, object_id: &str) -> Result<()>;

    async fn put_subscription(&self, s: &Subscription) -> Result<()>;
    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>>;
    async fn list_subscriptions(&self) -> Result<Vec<Subscription>>;

    /// Insert or replace; returns true when the group did not exist.
    async fn put_resource_group(&self, g: &ResourceGroup) -> Result<bool>;
    async fn get_resource_group(&self, sub: &str, name: &str) -> Result<Option<ResourceGroup>>;
    async fn list_resource_groups(&self, sub: &str) -> Result<Vec<ResourceGroup>>;
    /// Delete the group with every resource in it and every role assignment under its scope.
    async fn delete_resource_group(&self, sub: &str, name: &str) -> Result<bool>;

    /// Insert or replace; returns true when the resource did not exist.
    async fn put_resource(&self, r: &Resource) -> Result<bool>;
    async fn get_resource(&self, id: &str) -> Result<Option<Resource>>;
    /// Resources of a subscription, optionally in one group and of one type.
    async fn list_resources(
        &self,
        sub: &str,
        group: Option<&str>,
        resource_type: Option<&str>,
    ) -> Result<Vec<Resource>>;
    /// Resources of a type across all subscriptions whose name matches (case-insensitive).
    async fn find_resources_by_name(
        &self,
        resource_type: &str,
        name: &str,
    ) -> Result<Vec<Resource>>;
    async fn delete_resource(&self, id: &str) -> Result<bool>;

    /// Insert; fails with `RoleAssignmentExists` on a duplicate name.
    async fn put_role_assignment(&self, a: &RoleAssignment) -> Result<()>;
    async fn get_role_assignment(&self, scope: &str, name: &str) -> Result<Option<RoleAssignment>>;
    async fn list_role_assignments(&self) -> Result<Vec<RoleAssignment>>;
    async fn list_role_assignments_for_principal(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>>;
    async fn delete_role_assignment(&self, scope: &str, name: &str) -> Result<bool>;

    /// Insert or replace a key record and, atomically with it, insert or replace a version.
    async fn put_key(&self, record: &KeyRecord, version: Option<&KeyVersion>) -> Result<()>;
    async fn get_key_record(&self, vault: &str, name: &str) -> Result<Option<KeyRecord>>;
    /// Key records of one vault (or of every vault), ordered by name.
    async fn list_key_records(&self, vault: Option<&str>) -> Result<Vec<KeyRecord>>;
    async fn get_key_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<KeyVersion>>;
    /// Versions of a key, oldest first (the last one is the current version).
    async fn list_key_versions(&self, vault: &str, name: &str) -> Result<Vec<KeyVersion>>;
    /// Remove a key and all its versions for good.
    async fn purge_key(&self, vault: &str, name: &str) -> Result<()>;
    /// Remove every key of a vault for good (vault purge).
    async fn purge_vault_keys(&self, vault: &str) -> Result<()>;

    /// Insert a container; false when it already exists.
    async fn create_container(&self, c: &ContainerRecord) -> Result<bool>;
    async fn put_container(&self, c: &ContainerRecord) -> Result<()>;
    async fn get_container(&self, account: &str, name: &str) -> Result<Option<ContainerRecord>>;
    async fn list_containers(&self, account: &str) -> Result<Vec<ContainerRecord>>;
    /// Delete a container and its blob records; returns the deleted blobs (their objects are
    /// the caller's to delete).
    async fn delete_container(&self, account: &str, name: &str) -> Result<Option<Vec<BlobRecord>>>;
    async fn get_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
    ) -> Result<Option<BlobRecord>>;
    /// Blobs of a container whose names start with `prefix`, in name order, after `marker`.
    async fn list_blobs(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        marker: &str,
        limit: usize,
    ) -> Result<Vec<BlobRecord>>;
    /// Delete a blob record (and its staged blocks) if the committed version is what
    /// `expect` says, else fail with [`DomainError::ConditionNotMet`](crate::DomainError)
    /// and change nothing; returns the deleted record.
    async fn delete_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
        expect: &Expect,
    ) -> Result<Option<BlobRecord>>;

    /// Stage a block (replacing a staged block with the same id); returns the replaced one.
    async fn put_staged_block(&self, b: &StagedBlock) -> Result<Option<StagedBlock>>;
    async fn list_staged_blocks(
        &self,
        account: &str,
        container: &str,
        blob: &str,
    ) -> Result<Vec<StagedBlock>>;
    /// The id of one block staged for the blob, if any (they all have one length).
    async fn any_staged_block_id(
        &self,
        account: &str,
        container: &str,
        blob: &str,
    ) -> Result<Option<String>>;
    /// Commit a blob and drop every staged block of it, atomically, if the committed version
    /// is what `expect` says and every block of `b` (a part with a block id) is a part of
    /// that version or a block staged for the blob now; else
    /// [`DomainError::ConditionNotMet`](crate::DomainError) and nothing changes. (A block
    /// list is resolved before it commits: a block re-staged meanwhile has had its old object
    /// deleted, which the new version must not reference.)
    async fn commit_blob(&self, b: &BlobRecord, expect: &Expect) -> Result<Replaced>;
    /// Remove every container, blob and staged block record of an account.
    async fn delete_account_data(&self, account: &str) -> Result<()>;
    /// Replace a committed blob's record (metadata/properties updates; staged blocks stay) if
    /// its stored etag is still `etag`; false when another write changed it meanwhile.
    async fn update_blob(&self, b: &BlobRecord, etag: &str) -> Result<bool>;
    /// Staged blocks created before `before` (Unix seconds), for expiry.
    async fn staged_blocks_before(&self, before: i64) -> Result<Vec<StagedBlock>>;
    /// Drop a staged block if it is still staged with `b`'s object (not re-staged or
    /// committed meanwhile); whether it did, i.e. whether its object is now the caller's to
    /// delete.
    async fn delete_staged_block(&self, b: &StagedBlock) -> Result<bool>;
    /// Every object id referenced by a committed blob or a staged block.
    async fn referenced_objects(&self) -> Result<std::collections::HashSet<String>>;

    // ---- event outbox
    async fn put_delivery(&self, d: &crate::events::Delivery) -> Result<()>;
    /// Pending deliveries due at or before `now`, oldest first.
    async fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<crate::events::Delivery>>;
    /// Dead-lettered deliveries of one subscription, newest first.
    async fn dead_letters(&self, subscription: &str) -> Result<Vec<crate::events::Delivery>>;
}
