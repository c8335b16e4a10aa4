//! Local-filesystem byte store: `{root}/{id[0..2]}/{id}`. Objects are written to a temporary
//! file, fsynced, renamed into place, and the directory fsynced, so an object is either
//! absent or complete. Ids are validated server-made hex strings: no user input becomes a path.
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use coffer_domain::bytes::{ByteStore, ObjectWriter, check_object_id};
use coffer_domain::{DomainError, Result};
use tokio::io::AsyncWriteExt;

pub struct FsByteStore {
    root: PathBuf,
}

fn io(e: std::io::Error) -> DomainError {
    DomainError::Internal(format!("byte store: {e}"))
}

impl FsByteStore {
    pub fn new(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(io)?;
        Ok(Self { root })
    }

    fn path(&self, id: &str) -> Result<PathBuf> {
        check_object_id(id)?;
        Ok(self.root.join(&id[..2]).join(id))
    }
}

struct FsWriter {
    file: Option<tokio::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
}

#[async_trait]
impl ObjectWriter for FsWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write_all(data).await.map_err(io),
            None => Err(DomainError::Internal("writer closed".into())),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let mut f = self
            .file
            .take()
            .ok_or_else(|| DomainError::Internal("writer closed".into()))?;
        f.flush().await.map_err(io)?;
        f.sync_all().await.map_err(io)?;
        drop(f);
        tokio::fs::rename(&self.tmp, &self.dest).await.map_err(io)?;
        if let Some(dir) = self.dest.parent() {
            sync_dir(dir).await?;
        }
        Ok(())
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let d = tokio::fs::File::open(dir).await.map_err(io)?;
    d.sync_all().await.map_err(io)
}

#[async_trait]
impl ByteStore for FsByteStore {
    async fn create(&self, object_id: &str) -> Result<Box<dyn ObjectWriter>> {
        let dest = self.path(object_id)?;
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(io)?;
        }
        let tmp = dest.with_extension("tmp");
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(io)?;
        Ok(Box::new(FsWriter {
            file: Some(file),
            tmp,
            dest,
        }))
    }

    /// One positioned read on the blocking pool (open + pread): a single thread hand-off,
    /// where tokio::fs would make one per call (open, seek, read).
    async fn read(&self, object_id: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path(object_id)?;
        let len =
            usize::try_from(len).map_err(|_| DomainError::Internal("read too large".into()))?;
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(path)?;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, offset)?;
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(|_| DomainError::Internal("byte store read task".into()))?
        .map_err(io)
    }

    async fn read_prefix(&self, object_id: &str, max: u64) -> Result<Vec<u8>> {
        let path = self.path(object_id)?;
        let max =
            usize::try_from(max).map_err(|_| DomainError::Internal("read too large".into()))?;
        tokio::task::spawn_blocking(move || {
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
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(|_| DomainError::Internal("byte store read task".into()))?
        .map_err(io)
    }

    async fn list_older_than(&self, age: std::time::Duration) -> Result<Vec<String>> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let cutoff = std::time::SystemTime::now()
                .checked_sub(age)
                .unwrap_or(std::time::UNIX_EPOCH);
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
            Ok(out)
        })
        .await
        .map_err(|_| DomainError::Internal("byte store scan".into()))?
    }

    async fn delete(&self, object_id: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(object_id)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
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
        let w = s.create(id).await?;
        drop(w);
        assert!(s.read(id, 0, 0).await.is_err());
        // the collector's scan: committed objects are listed, abandoned partial writes removed
        let mut w = s.create(id).await?;
        w.write(b"x").await?;
        w.commit().await?;
        let other = "fedcba9876543210fedcba9876543210";
        let mut partial = s.create(other).await?;
        partial.write(b"half").await?;
        std::mem::forget(partial); // as if the process died mid-write
        let listed = s.list_older_than(std::time::Duration::ZERO).await?;
        assert_eq!(listed, vec![id.to_string()]);
        assert!(!dir.path().join("fe").join(format!("{other}.tmp")).exists());
        assert!(
            s.list_older_than(std::time::Duration::from_secs(3600))
                .await?
                .is_empty()
        );
        // ids are validated
        assert!(s.create("../etc/passwd").await.is_err());
        assert!(s.create("ABCDEF0123456789abcdef0123456789").await.is_err());
        Ok(())
    }
}
