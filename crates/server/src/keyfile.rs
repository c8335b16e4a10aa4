//! The key-file seal (the development default).
//!
//! `seal.key` holds 32 random bytes (mode 0600; a group- or world-readable key file is
//! refused). The root key is 32 other random bytes, stored only sealed under the key file as
//! `DATA_DIR/root.sealed` (AES-256-GCM, associated data `coffer:root-key:v1`). Losing the key
//! file loses every key in the server: back it up separately from the data directory.
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use coffer_crypto::aead::SealingKey;
use coffer_domain::seal::Seal;
use coffer_domain::{DomainError, Result};
use coffer_secret::SecretBytes;

const AAD: &[u8] = b"coffer:root-key:v1";

pub struct KeyFileSeal {
    key_file: PathBuf,
    sealed_root: PathBuf,
}

fn err(msg: String) -> DomainError {
    DomainError::Internal(msg)
}

/// Write `bytes` to a new file with mode 0600, atomically (temp file + rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Refuse secret files readable by group or others.
pub fn check_private(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(err(format!(
            "{} is readable by group or others; run chmod 600 on it",
            path.display()
        )));
    }
    Ok(())
}

impl KeyFileSeal {
    pub fn new(key_file: PathBuf, data_dir: &Path) -> Self {
        Self {
            key_file,
            sealed_root: data_dir.join("root.sealed"),
        }
    }

    fn kek(&self) -> Result<SealingKey> {
        if !self.key_file.exists() {
            let bytes = coffer_crypto::random::bytes(32)?;
            write_private(&self.key_file, &bytes)
                .map_err(|e| err(format!("creating {}: {e}", self.key_file.display())))?;
        }
        check_private(&self.key_file)?;
        let bytes = std::fs::read(&self.key_file)
            .map_err(|e| err(format!("reading {}: {e}", self.key_file.display())))?;
        SealingKey::from_bytes(SecretBytes::new(bytes)).map_err(|_| {
            err(format!(
                "{} does not hold a 32-byte key",
                self.key_file.display()
            ))
        })
    }
}

impl Seal for KeyFileSeal {
    fn kind(&self) -> &'static str {
        "key-file"
    }

    fn unseal_or_init(&self) -> Result<SealingKey> {
        let kek = self.kek()?;
        if self.sealed_root.exists() {
            let sealed = std::fs::read(&self.sealed_root)
                .map_err(|e| err(format!("reading {}: {e}", self.sealed_root.display())))?;
            let root = kek
                .open(AAD, &sealed)
                .map_err(|_| err("the root key cannot be unsealed with this key file".into()))?;
            return Ok(SealingKey::from_bytes(root)?);
        }
        let root = SealingKey::generate()?;
        let sealed = kek.seal(AAD, root.expose_bytes())?;
        write_private(&self.sealed_root, &sealed)
            .map_err(|e| err(format!("writing {}: {e}", self.sealed_root.display())))?;
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_unseal_gives_the_same_root() -> Result<()> {
        let dir =
            std::env::temp_dir().join(format!("coffer-seal-{}-{}", std::process::id(), line!()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
        let seal = KeyFileSeal::new(dir.join("seal.key"), &dir);
        let a = seal.unseal_or_init()?;
        let b = seal.unseal_or_init()?;
        assert_eq!(a.expose_bytes(), b.expose_bytes());
        let sealed = std::fs::read(dir.join("root.sealed")).map_err(|e| err(e.to_string()))?;
        assert!(!sealed.windows(32).any(|w| w == a.expose_bytes()));
        // a readable key file is refused
        std::fs::set_permissions(dir.join("seal.key"), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| err(e.to_string()))?;
        assert!(seal.unseal_or_init().is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
