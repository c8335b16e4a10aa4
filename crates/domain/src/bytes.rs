//! The byte store: where encrypted objects live (local files by default; S3 or Azure Blob
//! later). Everything handed to it is already ciphertext bound to its identity, so a byte
//! store is untrusted by construction. Each region has its own store.
//!
//! Object ids are random lower-case hex strings made by the server; a store must refuse any
//! other id (no user-controlled path ever reaches a filesystem or bucket key).
use async_trait::async_trait;

use crate::{DomainError, Result};

/// An object being written. Nothing is visible until [`commit`](ObjectWriter::commit)
/// returns; dropping the writer without committing discards what was written.
#[async_trait]
pub trait ObjectWriter: Send {
    async fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Make the object durable and visible.
    async fn commit(self: Box<Self>) -> Result<()>;
}

#[async_trait]
pub trait ByteStore: Send + Sync {
    /// A fresh object id for [`create`](ByteStore::create), for an object of about `len`
    /// bytes. A store may hand out ids it has prepared for (the file system store pre-creates
    /// files, so that a small write needs no directory update of its own).
    async fn allocate(&self, len: u64) -> Result<String> {
        let _ = len;
        new_object_id()
    }
    async fn create(&self, object_id: &str) -> Result<Box<dyn ObjectWriter>>;
    /// Read `len` bytes at `offset` (fails if the object is shorter).
    async fn read(&self, object_id: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Read up to `max` bytes from the start (fewer when the object is shorter): one call for
    /// an object's header, whatever its length.
    async fn read_prefix(&self, object_id: &str, max: u64) -> Result<Vec<u8>>;
    async fn delete(&self, object_id: &str) -> Result<()>;
    /// Delete an object the garbage collector found unreferenced and older than `age`, unless
    /// the store knows it is being written or it was modified since (true if deleted).
    async fn delete_orphan(&self, object_id: &str, age: std::time::Duration) -> Result<bool> {
        let _ = age;
        self.delete(object_id).await.map(|()| true)
    }
    /// Objects (and abandoned partial writes) last modified more than `age` ago: candidates
    /// for garbage collection.
    async fn list_older_than(&self, age: std::time::Duration) -> Result<Vec<String>>;
}

/// Object ids: 32 lower-case hex characters.
pub fn check_object_id(id: &str) -> Result<()> {
    if id.len() == 32
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        Ok(())
    } else {
        Err(DomainError::Internal("invalid object id".into()))
    }
}

pub fn new_object_id() -> Result<String> {
    Ok(coffer_crypto::random::bytes(16)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
