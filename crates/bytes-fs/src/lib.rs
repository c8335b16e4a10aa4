//! Local-filesystem byte store: `{root}/{id[0..2]}/{id}`. An object is either absent or
//! complete and durable before its writer's `commit` returns (and only then can a record
//! reference it). Ids are validated server-made hex strings: no user input becomes a path.
//!
//! Two ways in:
//! - **Small objects** (up to [`SPARE_MAX_LEN`] bytes of content) are held in memory until
//!   committed, then written into a *spare* file and fsynced in one blocking call. Spare files
//!   are created empty ahead of time, [`SPARE_BATCH`] at a time in one directory with one
//!   directory fsync, so a small write needs no directory update of its own: one fsync instead
//!   of two, and one thread hand-off instead of one per file operation (those were most of a
//!   4 KiB Put Blob's cost).
//! - **Large objects** stream into a temporary file that is fsynced, renamed into place and
//!   its directory fsynced at commit. While they stream, every [`WRITEBACK_EVERY`] bytes a
//!   background `fdatasync` (on a blocking thread, at most one at a time) starts writing the
//!   file out, so the commit's fsync finds little left to write instead of the whole object
//!   (for 256 MiB on this project's test machine: about 100 ms, 15 % of an upload). An error
//!   of any of them fails the commit.
//!
//! Deleting a small object *recycles* its file: truncated and renamed to a fresh id, it
//! becomes a free spare (up to [`SPARE_MAX_FREE`] of them), so a workload that overwrites
//! small blobs creates and deletes no inode per write. On ext4 without a journal every inode
//! allocation scans past the inodes deleted in the last minutes, so unlinking one file per
//! write made each new file dearer the longer the load ran (docs/benchmarks.md). An object id
//! is never used twice: a reader still holding the old record finds no file, and a late or
//! repeated deletion of the old id finds nothing to delete (were the id reused, it would
//! truncate the object now in that file, and a reader of the same blob name could take that
//! object for the one it was looking for). Recycled files are renamed into one directory per
//! [`SPARE_BATCH`], which is fsynced once before they are handed out, so the new name of a
//! file an acknowledged write went into survives a crash.
//!
//! A spare's name exists before its object does, so the garbage collector must not take it
//! for an old orphan: [`ByteStore::delete_orphan`] skips every spare not yet committed (kept
//! in memory from creation until its writer commits or is dropped) and every file modified
//! within the grace period, checked under the same lock. A spare that sat unused for
//! [`SPARE_MAX_AGE`] is no longer handed out; it becomes an ordinary empty orphan.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coffer_domain::bytes::{ByteStore, ObjectWriter, check_object_id, new_object_id};
use coffer_domain::{DomainError, Result};
use tokio::io::AsyncWriteExt;

/// Objects up to this size are buffered in memory and written at commit in one blocking call.
pub const BUFFERED_MAX: usize = 256 * 1024;
/// Writes of up to this much content get a spare file (the object adds a header and tags).
pub const SPARE_MAX_LEN: u64 = 128 * 1024;
/// Spare files created together (in one directory, with one directory fsync).
pub const SPARE_BATCH: usize = 64;
/// A spare file is handed out only this long after its creation.
pub const SPARE_MAX_AGE: Duration = Duration::from_secs(600);
/// Deleted objects of at most this many bytes are recycled as spares ...
pub const RECYCLE_MAX_BYTES: u64 = 2 * SPARE_MAX_LEN;
/// ... while fewer than this many spares are free.
pub const SPARE_MAX_FREE: usize = 1024;
/// A streaming object starts a background write-out after this many bytes written since
/// the last one began (if none is still running).
pub const WRITEBACK_EVERY: u64 = 16 << 20;

/// Spare files: free ones (with their creation time, oldest first) and ones handed out whose
/// writer has not committed or been dropped yet.
#[derive(Default)]
struct Spares {
    free: Vec<(String, Instant)>,
    issued: HashSet<String>,
    /// Recycled files renamed into the directory `recycle_prefix` whose new names are not
    /// durable yet (handed out once it is fsynced).
    recycled: Vec<String>,
    recycle_prefix: Option<String>,
}

pub struct FsByteStore {
    root: PathBuf,
    spares: Arc<Mutex<Spares>>,
    /// One refill at a time.
    refill: tokio::sync::Mutex<()>,
}

fn io(e: std::io::Error) -> DomainError {
    DomainError::Internal(format!("byte store: {e}"))
}

fn poisoned() -> DomainError {
    DomainError::Internal("byte store: lock poisoned".into())
}

impl FsByteStore {
    /// Open the store, creating the root and its 256 prefix directories (made durable once,
    /// so no write has to create a directory).
    pub fn new(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(io)?;
        let mut created = false;
        for p in 0..=255u8 {
            let dir = root.join(format!("{p:02x}"));
            if !dir.is_dir() {
                std::fs::create_dir(&dir).map_err(io)?;
                created = true;
            }
        }
        if created {
            std::fs::File::open(&root)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(Self {
            root,
            spares: Arc::new(Mutex::new(Spares::default())),
            refill: tokio::sync::Mutex::new(()),
        })
    }

    fn path(&self, id: &str) -> Result<PathBuf> {
        check_object_id(id)?;
        Ok(self.root.join(&id[..2]).join(id))
    }

    /// A fresh spare, if one is at hand (marked issued).
    fn take_spare(&self) -> Result<Option<String>> {
        let mut s = self.spares.lock().map_err(|_| poisoned())?;
        // Batches are appended in order: the stale ones are at the front.
        let stale = s
            .free
            .iter()
            .take_while(|(_, at)| at.elapsed() >= SPARE_MAX_AGE)
            .count();
        s.free.drain(..stale);
        let Some((id, _)) = s.free.pop() else {
            return Ok(None);
        };
        s.issued.insert(id.clone());
        Ok(Some(id))
    }

    /// Hand out `ids` as free spares from now on.
    fn add_free(&self, ids: Vec<String>) -> Result<()> {
        let now = Instant::now();
        self.spares
            .lock()
            .map_err(|_| poisoned())?
            .free
            .extend(ids.into_iter().map(|id| (id, now)));
        Ok(())
    }

    /// Make a batch of recycled files' new names durable (their directory fsynced once), then
    /// hand them out as free spares.
    async fn publish_recycled(&self, prefix: String, ids: Vec<String>) -> Result<()> {
        let dir = self.root.join(&prefix);
        blocking(move || std::fs::File::open(&dir)?.sync_all()).await?;
        self.add_free(ids)
    }

    /// The recycled files not yet published (fewer than a batch), published now.
    async fn publish_pending(&self) -> Result<()> {
        let pending = {
            let mut s = self.spares.lock().map_err(|_| poisoned())?;
            let ids = std::mem::take(&mut s.recycled);
            s.recycle_prefix
                .take()
                .filter(|_| !ids.is_empty())
                .map(|p| (p, ids))
        };
        match pending {
            Some((prefix, ids)) => self.publish_recycled(prefix, ids).await,
            None => Ok(()),
        }
    }

    /// Create a batch of empty spare files in one directory, then fsync it once.
    async fn make_spares(&self) -> Result<()> {
        let first = new_object_id()?;
        let prefix = first[..2].to_string();
        let ids = (0..SPARE_BATCH)
            .map(|_| new_object_id().map(|id| format!("{prefix}{}", &id[2..])))
            .collect::<Result<Vec<_>>>()?;
        let dir = self.root.join(&prefix);
        let made = {
            let ids = ids.clone();
            blocking(move || {
                for id in &ids {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(dir.join(id))?;
                }
                std::fs::File::open(&dir)?.sync_all()
            })
            .await
        };
        made?;
        self.add_free(ids)
    }
}

enum Body {
    /// Nothing on disk yet.
    Buffered(Vec<u8>),
    /// Streaming into the temporary file.
    Open(Streaming),
    Closed,
}

/// A temporary file being streamed into, and its background write-outs.
struct Streaming {
    file: tokio::fs::File,
    /// Another handle on the same file, for `fdatasync` beside the writes.
    syncer: Arc<std::fs::File>,
    /// Bytes written since the last write-out began.
    unsynced: u64,
    /// The write-out running, if any.
    syncing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Streaming {
    fn new(file: std::fs::File) -> std::io::Result<Self> {
        Ok(Self {
            syncer: Arc::new(file.try_clone()?),
            file: tokio::fs::File::from_std(file),
            unsynced: 0,
            syncing: None,
        })
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data).await.map_err(io)?;
        self.unsynced += data.len() as u64;
        if self.unsynced >= WRITEBACK_EVERY {
            let idle = match &self.syncing {
                Some(h) if !h.is_finished() => false,
                Some(_) => {
                    self.settle().await?;
                    true
                }
                None => true,
            };
            if idle {
                let f = self.syncer.clone();
                self.syncing = Some(tokio::task::spawn_blocking(move || f.sync_data()));
                self.unsynced = 0;
            }
        }
        Ok(())
    }

    /// Wait for the running write-out, if any; its error is the object's.
    async fn settle(&mut self) -> Result<()> {
        if let Some(h) = self.syncing.take() {
            h.await
                .map_err(|_| DomainError::Internal("byte store task".into()))?
                .map_err(io)?;
        }
        Ok(())
    }

    /// Flush what is buffered and wait for the write-outs: the file, ready to be published.
    async fn finish(mut self) -> Result<std::fs::File> {
        self.file.flush().await.map_err(io)?;
        self.settle().await?;
        Ok(self.file.into_std().await)
    }
}

struct FsWriter {
    body: Body,
    tmp: PathBuf,
    dest: PathBuf,
    /// Set when `dest` is a spare handed out to this writer: released (no longer protected
    /// from the collector) once the object is committed or the writer dropped.
    spare: Option<(String, Arc<Mutex<Spares>>)>,
    /// The temporary file exists and nothing else will remove it.
    tmp_exists: bool,
}

impl FsWriter {
    fn release_spare(&mut self) {
        if let Some((id, spares)) = self.spare.take()
            && let Ok(mut s) = spares.lock()
        {
            s.issued.remove(&id);
        }
    }
}

/// Create the temporary file for an object and write `head` into it; on failure nothing is
/// left behind.
fn create_tmp(tmp: &Path, head: &[u8]) -> std::io::Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)?;
    match std::io::Write::write_all(&mut f, head) {
        Ok(()) => Ok(f),
        Err(e) => {
            drop(f);
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// Make a fully written temporary file durable and visible under its final name; if that
/// fails before the rename, the temporary file is removed.
fn publish(file: std::fs::File, tmp: &Path, dest: &Path) -> std::io::Result<()> {
    let renamed = file.sync_all().and_then(|()| {
        drop(file);
        std::fs::rename(tmp, dest)
    });
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    match dest.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Write a whole small object: into its spare file when it has one (the directory entry is
/// already durable: one fsync), else through a temporary file.
fn write_small(body: &[u8], spare: bool, tmp: &Path, dest: &Path) -> std::io::Result<()> {
    if spare {
        // Only an existing, empty file is written in place; anything else (a spare removed
        // by hand, say) goes through a temporary file.
        let existing = std::fs::OpenOptions::new().write(true).open(dest);
        if let Ok(mut f) = existing
            && f.metadata().is_ok_and(|m| m.len() == 0)
        {
            return std::io::Write::write_all(&mut f, body).and_then(|()| f.sync_all());
        }
    }
    publish(create_tmp(tmp, body)?, tmp, dest)
}

/// The modification time before which a file is older than `age`.
fn modified_before(age: Duration) -> std::time::SystemTime {
    std::time::SystemTime::now()
        .checked_sub(age)
        .unwrap_or(std::time::UNIX_EPOCH)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| DomainError::Internal("byte store task".into()))?
        .map_err(io)
}

#[async_trait]
impl ObjectWriter for FsWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.body {
            Body::Buffered(buf) if buf.len() + data.len() <= BUFFERED_MAX => {
                buf.extend_from_slice(data);
                Ok(())
            }
            Body::Buffered(buf) => {
                // Too large to buffer: stream from here on, through a temporary file.
                let (tmp, head) = (self.tmp.clone(), std::mem::take(buf));
                self.body = Body::Closed;
                let file = blocking(move || create_tmp(&tmp, &head)).await?;
                self.tmp_exists = true;
                let mut file = Streaming::new(file).map_err(io)?;
                let written = file.write(data).await;
                self.body = Body::Open(file);
                written
            }
            Body::Open(f) => f.write(data).await,
            Body::Closed => Err(DomainError::Internal("writer closed".into())),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let (tmp, dest, spare) = (self.tmp.clone(), self.dest.clone(), self.spare.is_some());
        let done = match std::mem::replace(&mut self.body, Body::Closed) {
            Body::Buffered(buf) => blocking(move || write_small(&buf, spare, &tmp, &dest)).await,
            Body::Open(f) => {
                // Finished, the file is handed to `publish`; if not, Drop removes it.
                let file = f.finish().await?;
                self.tmp_exists = false;
                blocking(move || publish(file, &tmp, &dest)).await
            }
            Body::Closed => Err(DomainError::Internal("writer closed".into())),
        };
        // Written (fresh modification time) or failed: the collector may judge it now.
        self.release_spare();
        done
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // A writer dropped while streaming (or whose flush failed) leaves its temporary
        // file: remove it. A buffered one wrote nothing; `publish` cleans up after itself.
        if self.tmp_exists {
            let _ = std::fs::remove_file(&self.tmp);
        }
        self.release_spare();
    }
}

#[async_trait]
impl ByteStore for FsByteStore {
    async fn allocate(&self, len: u64) -> Result<String> {
        if len > SPARE_MAX_LEN {
            return new_object_id();
        }
        if let Some(id) = self.take_spare()? {
            return Ok(id);
        }
        let _one = self.refill.lock().await;
        if let Some(id) = self.take_spare()? {
            return Ok(id);
        }
        // Recycled files waiting for a full batch are cheaper than new ones.
        self.publish_pending().await?;
        if let Some(id) = self.take_spare()? {
            return Ok(id);
        }
        if let Err(e) = self.make_spares().await {
            // Spares are an optimisation: write through a temporary file instead.
            tracing::warn!(error = %e, "could not create spare object files");
        }
        match self.take_spare()? {
            Some(id) => Ok(id),
            None => new_object_id(),
        }
    }

    async fn create(&self, object_id: &str) -> Result<Box<dyn ObjectWriter>> {
        let dest = self.path(object_id)?;
        let tmp = dest.with_extension("tmp");
        let issued = {
            let mut s = self.spares.lock().map_err(|_| poisoned())?;
            // Ids come from `allocate`; one created otherwise must never be handed out too.
            if let Some(at) = s.free.iter().position(|(f, _)| f == object_id) {
                s.free.remove(at);
                s.issued.insert(object_id.to_string());
            }
            s.issued.contains(object_id)
        };
        Ok(Box::new(FsWriter {
            body: Body::Buffered(Vec::new()),
            tmp,
            dest,
            spare: issued.then(|| (object_id.to_string(), self.spares.clone())),
            tmp_exists: false,
        }))
    }

    /// Delete an unreferenced object, unless it is a spare not yet committed or was modified
    /// within `age` (both checked under the spares' lock, which a writer takes to release its
    /// spare after writing it).
    async fn delete_orphan(&self, object_id: &str, age: Duration) -> Result<bool> {
        let path = self.path(object_id)?;
        let spares = self.spares.clone();
        let id = object_id.to_string();
        blocking(move || {
            let s = spares
                .lock()
                .map_err(|_| std::io::Error::other("lock poisoned"))?;
            if s.issued.contains(&id)
                || s.recycled.contains(&id)
                || s.free.iter().any(|(f, _)| *f == id)
            {
                return Ok(false);
            }
            let cutoff = modified_before(age);
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if !old {
                return Ok(false);
            }
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// One read on the blocking pool (open, seek, read): a single thread hand-off, where
    /// tokio::fs would make one per call. The buffer is filled without zeroing it first.
    async fn read(&self, object_id: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path(object_id)?;
        let want =
            usize::try_from(len).map_err(|_| DomainError::Internal("read too large".into()))?;
        blocking(move || {
            use std::io::{Read, Seek};
            let mut f = std::fs::File::open(path)?;
            f.seek(std::io::SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(want);
            f.take(len).read_to_end(&mut buf)?;
            if buf.len() != want {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(buf)
        })
        .await
    }

    async fn read_prefix(&self, object_id: &str, max: u64) -> Result<Vec<u8>> {
        let path = self.path(object_id)?;
        let max =
            usize::try_from(max).map_err(|_| DomainError::Internal("read too large".into()))?;
        blocking(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(path)?;
            let mut buf = vec![0u8; max];
            let mut got = 0;
            while got < max {
                match f.read_at(&mut buf[got..], got as u64)? {
                    0 => break,
                    n => got += n,
                }
            }
            buf.truncate(got);
            Ok(buf)
        })
        .await
    }

    async fn list_older_than(&self, age: std::time::Duration) -> Result<Vec<String>> {
        let root = self.root.clone();
        let spares = self.spares.clone();
        blocking(move || {
            let mut out = Vec::new();
            let cutoff = modified_before(age);
            let Ok(dirs) = std::fs::read_dir(&root) else {
                return Ok(out);
            };
            for d in dirs.flatten() {
                let Ok(files) = std::fs::read_dir(d.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    let old = f
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t < cutoff);
                    if !old {
                        continue;
                    }
                    let id = name.strip_suffix(".tmp").unwrap_or(&name);
                    if check_object_id(id).is_err() {
                        continue;
                    }
                    if name.ends_with(".tmp") {
                        // An abandoned partial write: never visible, safe to remove now.
                        let _ = std::fs::remove_file(f.path());
                    } else {
                        out.push(name);
                    }
                }
            }
            // Spares are not objects (`delete_orphan` would skip them anyway).
            let s = spares
                .lock()
                .map_err(|_| std::io::Error::other("lock poisoned"))?;
            let spare: HashSet<&str> = (s.free.iter().map(|(f, _)| f.as_str()))
                .chain(s.issued.iter().map(String::as_str))
                .chain(s.recycled.iter().map(String::as_str))
                .collect();
            out.retain(|id| !spare.contains(id.as_str()));
            Ok(out)
        })
        .await
    }

    /// Recycle a small object's file as a spare under a fresh id (truncated and renamed under
    /// the spares' lock, so no one can be handed it before it is empty, and the old id names
    /// nothing from then on), or remove the file.
    async fn delete(&self, object_id: &str) -> Result<()> {
        let path = self.path(object_id)?;
        let spares = self.spares.clone();
        let root = self.root.clone();
        let id = object_id.to_string();
        let fresh = new_object_id()?;
        let full = blocking(move || {
            let mut s = spares
                .lock()
                .map_err(|_| std::io::Error::other("lock poisoned"))?;
            if s.free.iter().any(|(f, _)| *f == id) || s.recycled.contains(&id) {
                return Ok(None); // a spare: not an object
            }
            if !s.issued.contains(&id) && s.free.len() + s.recycled.len() < SPARE_MAX_FREE {
                let f = match std::fs::OpenOptions::new().write(true).open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                if f.metadata()?.len() <= RECYCLE_MAX_BYTES {
                    f.set_len(0)?;
                    let prefix = s
                        .recycle_prefix
                        .get_or_insert_with(|| fresh[..2].to_string())
                        .clone();
                    let new_id = format!("{prefix}{}", &fresh[2..]);
                    std::fs::rename(&path, root.join(&prefix).join(&new_id))?;
                    s.recycled.push(new_id);
                    if s.recycled.len() >= SPARE_BATCH {
                        s.recycle_prefix = None;
                        return Ok(Some((prefix, std::mem::take(&mut s.recycled))));
                    }
                    return Ok(None);
                }
            }
            drop(s);
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        if let Some((prefix, ids)) = full {
            self.publish_recycled(prefix, ids).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_commit_read_delete() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io)?;
        let s = FsByteStore::new(dir.path().to_path_buf())?;
        let id = "0123456789abcdef0123456789abcdef";
        let mut w = s.create(id).await?;
        w.write(b"hello ").await?;
        w.write(b"world").await?;
        assert!(s.read(id, 0, 1).await.is_err(), "invisible before commit");
        w.commit().await?;
        assert_eq!(s.read(id, 6, 5).await?, b"world");
        assert!(s.read(id, 6, 50).await.is_err());
        s.delete(id).await?;
        assert!(s.read(id, 0, 1).await.is_err());
        // an abandoned writer leaves nothing
        let abandoned = "abababababababababababababababab";
        let w = s.create(abandoned).await?;
        drop(w);
        assert!(s.read(abandoned, 0, 0).await.is_err());
        // the collector's scan: committed objects are listed, abandoned partial writes removed
        let mut w = s.create(id).await?;
        w.write(b"x").await?;
        w.commit().await?;
        let other = "fedcba9876543210fedcba9876543210";
        // what a process that died mid-write leaves (written directly: a forgotten writer's
        // last write may still be in flight, touching the file after the scan's cutoff)
        std::fs::write(
            dir.path().join("fe").join(format!("{other}.tmp")),
            vec![7u8; BUFFERED_MAX + 1],
        )
        .map_err(io)?;
        let listed = s.list_older_than(std::time::Duration::ZERO).await?;
        assert_eq!(listed, vec![id.to_string()]);
        assert!(!dir.path().join("fe").join(format!("{other}.tmp")).exists());
        assert!(
            s.list_older_than(std::time::Duration::from_secs(3600))
                .await?
                .is_empty()
        );
        // a large object streams through its temporary file; the bytes on either side of the
        // switch from buffering land in order
        let big = "00112233445566778899aabbccddeeff";
        let mut w = s.create(big).await?;
        let chunk: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut all = Vec::new();
        for _ in 0..5 {
            w.write(&chunk).await?;
            all.extend_from_slice(&chunk);
        }
        assert!(dir.path().join("00").join(format!("{big}.tmp")).exists());
        w.commit().await?;
        assert!(!dir.path().join("00").join(format!("{big}.tmp")).exists());
        assert_eq!(s.read(big, 0, all.len() as u64).await?, all);
        // a streaming writer dropped without commit removes its temporary file
        let gone = "ffeeddccbbaa99887766554433221100";
        let mut w = s.create(gone).await?;
        w.write(&vec![1u8; BUFFERED_MAX * 2]).await?;
        drop(w);
        assert!(!dir.path().join("ff").join(format!("{gone}.tmp")).exists());
        assert!(s.read(gone, 0, 0).await.is_err());
        // ids are validated
        assert!(s.create("../etc/passwd").await.is_err());
        assert!(s.create("ABCDEF0123456789abcdef0123456789").await.is_err());
        Ok(())
    }

    /// An object larger than a few write-out intervals streams with write-outs started
    /// beside it (the last one may still run at commit, which waits for it) and reads back
    /// byte for byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_objects_are_written_out_while_they_stream() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io)?;
        let s = FsByteStore::new(dir.path().to_path_buf())?;
        let id = s.allocate(3 * WRITEBACK_EVERY + 7).await?;
        let mut w = s.create(&id).await?;
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let mut written = 0u64;
        while written < 3 * WRITEBACK_EVERY {
            w.write(&chunk).await?;
            written += chunk.len() as u64;
        }
        w.write(b"the end").await?;
        w.commit().await?;
        let path = dir.path().join(&id[..2]).join(&id);
        assert_eq!(
            std::fs::metadata(&path).map_err(io)?.len(),
            3 * WRITEBACK_EVERY + 7
        );
        assert_eq!(s.read(&id, 3 * WRITEBACK_EVERY, 7).await?, b"the end");
        let at = WRITEBACK_EVERY + 12345;
        assert_eq!(
            s.read(&id, at, 100).await?,
            chunk[(at % (1 << 20)) as usize..][..100]
        );
        // dropped mid-stream, with a write-out maybe running: nothing is left behind
        let gone = s.allocate(2 * WRITEBACK_EVERY).await?;
        let mut w = s.create(&gone).await?;
        for _ in 0..(WRITEBACK_EVERY >> 20) + 1 {
            w.write(&chunk).await?;
        }
        drop(w);
        assert!(
            std::fs::read_dir(dir.path().join(&gone[..2]))
                .map_err(io)?
                .filter_map(|e| e.ok())
                .all(|e| !e.file_name().to_string_lossy().starts_with(&gone))
        );
        Ok(())
    }

    /// A deleted small object's file becomes a free spare (empty at once); a large one is
    /// removed; deleting twice recycles once; the collector leaves free spares alone.
    #[tokio::test]
    async fn deleted_small_objects_are_recycled_as_spares() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io)?;
        let s = FsByteStore::new(dir.path().to_path_buf())?;
        let files = || -> Result<usize> {
            let mut n = 0;
            for d in std::fs::read_dir(dir.path()).map_err(io)? {
                n += std::fs::read_dir(d.map_err(io)?.path())
                    .map_err(io)?
                    .count();
            }
            Ok(n)
        };
        let mut old = Vec::new();
        for i in 0..3u8 {
            let id = s.allocate(4096).await?;
            let mut w = s.create(&id).await?;
            w.write(&[i; 4096]).await?;
            w.commit().await?;
            old.push(id);
        }
        let before = files()?;
        for id in &old {
            s.delete(id).await?;
            s.delete(id).await?; // twice: nothing more happens
            assert!(!dir.path().join(&id[..2]).join(id).exists(), "renamed away");
            assert!(s.read(id, 0, 1).await.is_err());
            assert!(!s.delete_orphan(id, Duration::ZERO).await?);
        }
        assert_eq!(files()?, before, "no file removed: recycled");
        // The batch's other spares go first; then the recycled files, under fresh ids, empty.
        for _ in 3..SPARE_BATCH {
            let id = s.allocate(10).await?;
            drop(s.create(&id).await?);
        }
        let again = s.allocate(10).await?;
        assert!(!old.contains(&again), "an id is never used twice");
        let path = dir.path().join(&again[..2]).join(&again);
        assert_eq!(std::fs::metadata(&path).map_err(io)?.len(), 0);
        assert_eq!(files()?, before, "no file created: a recycled one");
        let mut w = s.create(&again).await?;
        w.write(b"second life").await?;
        w.commit().await?;
        // a late deletion of an old id leaves the new object alone
        s.delete(&old[0]).await?;
        assert_eq!(s.read(&again, 0, 11).await?, b"second life");
        let id = again;
        // a large object's file is removed
        let big = s.allocate(RECYCLE_MAX_BYTES + 1).await?;
        let mut w = s.create(&big).await?;
        w.write(&vec![1u8; RECYCLE_MAX_BYTES as usize + 1]).await?;
        w.commit().await?;
        s.delete(&big).await?;
        assert!(!dir.path().join(&big[..2]).join(&big).exists());
        // an id created without `allocate` is never handed out as a spare as well
        let mut w = s.create(&id).await?;
        w.write(b"x").await?;
        w.commit().await?;
        s.delete(&id).await?;
        let w = s.create(&id).await?;
        assert_ne!(s.allocate(10).await?, id);
        drop(w);
        Ok(())
    }

    #[tokio::test]
    async fn small_objects_go_into_pre_created_spares() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io)?;
        let s = FsByteStore::new(dir.path().to_path_buf())?;
        let id = s.allocate(12).await?;
        check_object_id(&id)?;
        let spare = dir.path().join(&id[..2]).join(&id);
        assert_eq!(
            std::fs::metadata(&spare).map_err(io)?.len(),
            0,
            "created empty"
        );
        // one batch, in one directory
        let batch = std::fs::read_dir(dir.path().join(&id[..2]))
            .map_err(io)?
            .count();
        assert_eq!(batch, SPARE_BATCH);
        let mut w = s.create(&id).await?;
        w.write(b"small ").await?;
        w.write(b"object").await?;
        w.commit().await?;
        assert_eq!(s.read(&id, 0, 12).await?, b"small object");
        assert!(!spare.with_extension("tmp").exists());
        // the next allocation is another spare of the batch
        let next = s.allocate(13).await?;
        assert_ne!(next, id);
        assert_eq!(next[..2], id[..2]);
        // a spare that vanished meanwhile (say, collected) is written through a temporary file
        std::fs::remove_file(dir.path().join(&next[..2]).join(&next)).map_err(io)?;
        let mut w = s.create(&next).await?;
        w.write(b"still written").await?;
        w.commit().await?;
        assert_eq!(s.read(&next, 0, 13).await?, b"still written");
        // a large object gets no spare: it streams through a temporary file
        let big = s.allocate(SPARE_MAX_LEN + 1).await?;
        assert!(!dir.path().join(&big[..2]).join(&big).exists());
        let mut w = s.create(&big).await?;
        w.write(&vec![3u8; BUFFERED_MAX + 10]).await?;
        assert!(
            dir.path()
                .join(&big[..2])
                .join(format!("{big}.tmp"))
                .exists()
        );
        w.commit().await?;
        assert_eq!(s.read(&big, BUFFERED_MAX as u64, 10).await?, vec![3u8; 10]);
        Ok(())
    }

    /// The collector never deletes a spare that is free or being written, nor a file
    /// modified within its grace period; it deletes an old unreferenced one.
    #[tokio::test]
    async fn the_collector_spares_spares() -> Result<()> {
        let dir = tempfile::tempdir().map_err(io)?;
        let s = FsByteStore::new(dir.path().to_path_buf())?;
        let id = s.allocate(10).await?;
        let free = s.allocate(10).await?; // handed out, never created: still protected
        assert!(!s.delete_orphan(&id, Duration::ZERO).await?, "issued");
        let mut w = s.create(&id).await?;
        w.write(b"0123456789").await?;
        assert!(
            !s.delete_orphan(&id, Duration::ZERO).await?,
            "being written"
        );
        w.commit().await?;
        assert!(
            !s.delete_orphan(&id, Duration::from_secs(3600)).await?,
            "just written"
        );
        assert!(s.delete_orphan(&id, Duration::ZERO).await?, "old enough");
        assert!(s.read(&id, 0, 1).await.is_err());
        // a spare still in the free list is protected too
        let pooled = {
            let g = s.spares.lock().map_err(|_| poisoned())?;
            g.free.first().map(|(f, _)| f.clone()).unwrap_or_default()
        };
        assert!(!pooled.is_empty());
        assert!(!s.delete_orphan(&pooled, Duration::ZERO).await?);
        // a writer dropped without commit releases its spare
        drop(s.create(&free).await?);
        assert!(s.delete_orphan(&free, Duration::ZERO).await?);
        Ok(())
    }
}
