//! A read-through cache in front of a [`MetaStore`] for the records every data-plane request
//! reads (principals, role assignments, vault resources, key records and versions, blob
//! containers).
//!
//! Writes go to the backend first, then invalidate what they touch, so on one node the cache
//! is never stale. Only ciphertext and public metadata are cached (key versions hold their
//! material sealed). With several nodes sharing a database, entries also expire after
//! [`TTL`], which bounds staleness (see DESIGN.md §4; cross-node notification comes with the
//! PostgreSQL backend).
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::Result;
use crate::cmk::Changes;
use crate::model::{
    BlobRecord, ContainerRecord, KeyRecord, KeyVersion, Principal, Resource, ResourceGroup,
    RoleAssignment, StagedBlock, Subscription,
};
use crate::store::{Expect, MetaStore, Replaced};

pub const TTL: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 100_000;

struct Map<K, V>(RwLock<HashMap<K, (Instant, V)>>);

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn new() -> Self {
        Self(RwLock::new(HashMap::new()))
    }
    fn get(&self, k: &K) -> Option<V> {
        let g = self.0.read().ok()?;
        g.get(k)
            .filter(|(t, _)| t.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }
    /// Insert a value read from the backend when the change generation was `seen`, unless a
    /// write has happened since (its invalidation may already have run, and the value may be
    /// stale). Checked under the map's lock, which every invalidation also takes.
    fn put(&self, k: K, v: V, seen: u64, changes: &Changes) {
        if let Ok(mut g) = self.0.write() {
            if changes.current() != seen {
                return;
            }
            if g.len() >= MAX_ENTRIES {
                g.clear();
            }
            g.insert(k, (Instant::now(), v));
        }
    }
    fn clear(&self) {
        if let Ok(mut g) = self.0.write() {
            g.clear();
        }
    }
}

/// After a committed write: bump the generation (fills in flight are dropped), clear, and bump
/// again (whoever read the generation before the clear revalidates after it).
fn invalidate(changes: &Changes, clear: impl FnOnce()) {
    changes.bump();
    clear();
    changes.bump();
}

pub struct CachedStore {
    inner: Arc<dyn MetaStore>,
    principals: Map<String, Option<Principal>>,
    assignments: Map<String, Vec<RoleAssignment>>,
    by_name: Map<(String, String), Vec<Resource>>,
    key_records: Map<(String, String), Option<KeyRecord>>,
    key_versions: Map<(String, String, String), Option<KeyVersion>>,
    containers: Map<(String, String), Option<ContainerRecord>>,
    /// Bumped after every write that may change what a customer-managed key permits.
    changes: Arc<Changes>,
    /// Bumped around container writes (not a CMK change: kept apart from `changes`).
    container_changes: Changes,
}

fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

impl CachedStore {
    pub fn new(inner: Arc<dyn MetaStore>) -> Self {
        Self {
            inner,
            principals: Map::new(),
            assignments: Map::new(),
            by_name: Map::new(),
            key_records: Map::new(),
            key_versions: Map::new(),
            containers: Map::new(),
            changes: Arc::new(Changes::default()),
            container_changes: Changes::default(),
        }
    }

    fn containers_changed(&self) {
        invalidate(&self.container_changes, || self.containers.clear());
    }

    /// The change feed this store publishes (see [`crate::cmk::Changes`]).
    pub fn changes(&self) -> Arc<Changes> {
        self.changes.clone()
    }

    fn invalidate(&self, clear: impl FnOnce()) {
        invalidate(&self.changes, clear);
    }

    fn resources_changed(&self) {
        self.invalidate(|| {
            self.by_name.clear();
            // Deleting a resource also deletes role assignments under it.
            self.assignments.clear();
        });
    }

    fn keys_changed(&self) {
        self.invalidate(|| {
            self.key_records.clear();
            self.key_versions.clear();
        });
    }
}

#[async_trait]
impl MetaStore for CachedStore {
    async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_setting(key).await
    }
    async fn put_setting(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner.put_setting(key, value).await
    }

    async fn insert_principal(&self, p: &Principal) -> Result<()> {
        let r = self.inner.insert_principal(p).await;
        self.invalidate(|| self.principals.clear());
        r
    }
    async fn get_principal(&self, object_id: &str) -> Result<Option<Principal>> {
        let k = lc(object_id);
        if let Some(v) = self.principals.get(&k) {
            return Ok(v);
        }
        let seen = self.changes.current();
        let v = self.inner.get_principal(object_id).await?;
        self.principals.put(k, v.clone(), seen, &self.changes);
        Ok(v)
    }
    async fn find_principal_by_client_id(&self, client_id: &str) -> Result<Option<Principal>> {
        self.inner.find_principal_by_client_id(client_id).await
    }
    async fn find_principal_by_username(&self, username: &str) -> Result<Option<Principal>> {
        self.inner.find_principal_by_username(username).await
    }
    async fn delete_principal(&self, object_id: &str) -> Result<()> {
        let r = self.inner.delete_principal(object_id).await;
        self.invalidate(|| self.principals.clear());
        r
    }

    async fn put_subscription(&self, s: &Subscription) -> Result<()> {
        self.inner.put_subscription(s).await
    }
    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>> {
        self.inner.get_subscription(id).await
    }
    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        self.inner.list_subscriptions().await
    }

    async fn put_resource_group(&self, g: &ResourceGroup) -> Result<bool> {
        self.inner.put_resource_group(g).await
    }
    async fn get_resource_group(&self, sub: &str, name: &str) -> Result<Option<ResourceGroup>> {
        self.inner.get_resource_group(sub, name).await
    }
    async fn list_resource_groups(&self, sub: &str) -> Result<Vec<ResourceGroup>> {
        self.inner.list_resource_groups(sub).await
    }
    async fn delete_resource_group(&self, sub: &str, name: &str) -> Result<bool> {
        let r = self.inner.delete_resource_group(sub, name).await;
        self.resources_changed();
        r
    }

    async fn put_resource(&self, r: &Resource) -> Result<bool> {
        let out = self.inner.put_resource(r).await;
        self.resources_changed();
        out
    }
    async fn get_resource(&self, id: &str) -> Result<Option<Resource>> {
        self.inner.get_resource(id).await
    }
    async fn list_resources(
        &self,
        sub: &str,
        group: Option<&str>,
        resource_type: Option<&str>,
    ) -> Result<Vec<Resource>> {
        self.inner.list_resources(sub, group, resource_type).await
    }
    async fn find_resources_by_name(
        &self,
        resource_type: &str,
        name: &str,
    ) -> Result<Vec<Resource>> {
        let k = (lc(resource_type), lc(name));
        if let Some(v) = self.by_name.get(&k) {
            return Ok(v);
        }
        let seen = self.changes.current();
        let v = self
            .inner
            .find_resources_by_name(resource_type, name)
            .await?;
        self.by_name.put(k, v.clone(), seen, &self.changes);
        Ok(v)
    }
    async fn delete_resource(&self, id: &str) -> Result<bool> {
        let r = self.inner.delete_resource(id).await;
        self.resources_changed();
        r
    }

    async fn put_role_assignment(&self, a: &RoleAssignment) -> Result<()> {
        let r = self.inner.put_role_assignment(a).await;
        self.invalidate(|| self.assignments.clear());
        r
    }
    async fn get_role_assignment(&self, scope: &str, name: &str) -> Result<Option<RoleAssignment>> {
        self.inner.get_role_assignment(scope, name).await
    }
    async fn list_role_assignments(&self) -> Result<Vec<RoleAssignment>> {
        self.inner.list_role_assignments().await
    }
    async fn list_role_assignments_for_principal(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>> {
        let k = lc(principal_id);
        if let Some(v) = self.assignments.get(&k) {
            return Ok(v);
        }
        let seen = self.changes.current();
        let v = self
            .inner
            .list_role_assignments_for_principal(principal_id)
            .await?;
        self.assignments.put(k, v.clone(), seen, &self.changes);
        Ok(v)
    }
    async fn delete_role_assignment(&self, scope: &str, name: &str) -> Result<bool> {
        let r = self.inner.delete_role_assignment(scope, name).await;
        self.invalidate(|| self.assignments.clear());
        r
    }

    async fn put_key(&self, record: &KeyRecord, version: Option<&KeyVersion>) -> Result<()> {
        let r = self.inner.put_key(record, version).await;
        self.keys_changed();
        r
    }
    async fn get_key_record(&self, vault: &str, name: &str) -> Result<Option<KeyRecord>> {
        let k = (lc(vault), lc(name));
        if let Some(v) = self.key_records.get(&k) {
            return Ok(v);
        }
        let seen = self.changes.current();
        let v = self.inner.get_key_record(vault, name).await?;
        self.key_records.put(k, v.clone(), seen, &self.changes);
        Ok(v)
    }
    async fn list_key_records(&self, vault: Option<&str>) -> Result<Vec<KeyRecord>> {
        self.inner.list_key_records(vault).await
    }
    async fn get_key_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<KeyVersion>> {
        let k = (lc(vault), lc(name), lc(version));
        if let Some(v) = self.key_versions.get(&k) {
            return Ok(v);
        }
        let seen = self.changes.current();
        let v = self.inner.get_key_version(vault, name, version).await?;
        self.key_versions.put(k, v.clone(), seen, &self.changes);
        Ok(v)
    }
    async fn list_key_versions(&self, vault: &str, name: &str) -> Result<Vec<KeyVersion>> {
        self.inner.list_key_versions(vault, name).await
    }
    async fn purge_key(&self, vault: &str, name: &str) -> Result<()> {
        let r = self.inner.purge_key(vault, name).await;
        self.keys_changed();
        r
    }
    async fn purge_vault_keys(&self, vault: &str) -> Result<()> {
        let r = self.inner.purge_vault_keys(vault).await;
        self.keys_changed();
        r
    }

    async fn create_container(&self, c: &ContainerRecord) -> Result<bool> {
        let r = self.inner.create_container(c).await;
        self.containers_changed();
        r
    }
    async fn put_container(&self, c: &ContainerRecord) -> Result<()> {
        let r = self.inner.put_container(c).await;
        self.containers_changed();
        r
    }
    async fn get_container(&self, account: &str, name: &str) -> Result<Option<ContainerRecord>> {
        let k = (account.to_string(), name.to_string());
        if let Some(v) = self.containers.get(&k) {
            return Ok(v);
        }
        let seen = self.container_changes.current();
        let v = self.inner.get_container(account, name).await?;
        self.containers
            .put(k, v.clone(), seen, &self.container_changes);
        Ok(v)
    }
    async fn list_containers(&self, account: &str) -> Result<Vec<ContainerRecord>> {
        self.inner.list_containers(account).await
    }
    async fn delete_container(&self, account: &str, name: &str) -> Result<Option<Vec<BlobRecord>>> {
        let r = self.inner.delete_container(account, name).await;
        self.containers_changed();
        r
    }
    async fn get_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
    ) -> Result<Option<BlobRecord>> {
        self.inner.get_blob(account, container, name).await
    }
    async fn list_blobs(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        marker: &str,
        limit: usize,
    ) -> Result<Vec<BlobRecord>> {
        self.inner
            .list_blobs(account, container, prefix, marker, limit)
            .await
    }
    async fn delete_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
        expect: &Expect,
    ) -> Result<Option<BlobRecord>> {
        self.inner
            .delete_blob(account, container, name, expect)
            .await
    }

    async fn put_staged_block(&self, b: &StagedBlock) -> Result<Option<StagedBlock>> {
        self.inner.put_staged_block(b).await
    }
    async fn list_staged_blocks(
        &self,
        account: &str,
        container: &str,
        blob: &str,
    ) -> Result<Vec<StagedBlock>> {
        self.inner
            .list_staged_blocks(account, container, blob)
            .await
    }
    async fn any_staged_block_id(
        &self,
        account: &str,
        container: &str,
        blob: &str,
    ) -> Result<Option<String>> {
        self.inner
            .any_staged_block_id(account, container, blob)
            .await
    }
    async fn commit_blob(&self, b: &BlobRecord, expect: &Expect) -> Result<Replaced> {
        self.inner.commit_blob(b, expect).await
    }
    async fn delete_account_data(&self, account: &str) -> Result<()> {
        let r = self.inner.delete_account_data(account).await;
        self.containers_changed();
        r
    }
    async fn update_blob(&self, b: &BlobRecord, etag: &str) -> Result<bool> {
        self.inner.update_blob(b, etag).await
    }
    async fn staged_blocks_before(&self, before: i64) -> Result<Vec<StagedBlock>> {
        self.inner.staged_blocks_before(before).await
    }
    async fn delete_staged_block(&self, b: &StagedBlock) -> Result<bool> {
        self.inner.delete_staged_block(b).await
    }
    async fn referenced_objects(&self) -> Result<std::collections::HashSet<String>> {
        self.inner.referenced_objects().await
    }
    async fn put_delivery(&self, d: &crate::events::Delivery) -> Result<()> {
        self.inner.put_delivery(d).await
    }
    async fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<crate::events::Delivery>> {
        self.inner.due_deliveries(now, limit).await
    }
    async fn dead_letters(&self, subscription: &str) -> Result<Vec<crate::events::Delivery>> {
        self.inner.dead_letters(subscription).await
    }
}
