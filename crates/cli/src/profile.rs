//! Named sign-in profiles (`coffer login`, `coffer logout`) and their token caches.
//!
//! Files, in `$XDG_CONFIG_HOME/coffer` (else `~/.config/coffer`), directory mode 0700:
//! - `profiles.json` (mode 0600): for each profile the server's endpoints, tenant,
//!   subscription, client id, CA file and *where* the secret comes from (the name of an
//!   environment variable or the path of a file), never the secret itself; plus the default
//!   profile (the last one signed in).
//! - `tokens/{profile}.json` (mode 0600): access tokens by scope with their expiry. A token
//!   is a bearer credential for about an hour; when one has expired the secret is read again
//!   from its source, or, for a secret typed at a prompt, `coffer login` must be run again.
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

/// Where a profile's client secret comes from when a token must be renewed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SecretSource {
    /// An environment variable (its name).
    Env(String),
    /// A file readable by its owner only (its path).
    File(PathBuf),
    /// Typed at a prompt or piped once: not kept.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub management: String,
    pub authority: String,
    pub tenant_id: String,
    pub subscription_id: String,
    pub client_id: String,
    pub blob: String,
    pub vault_dns_suffix: String,
    pub ca_cert: Option<String>,
    pub secret: SecretSource,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profiles {
    pub default: Option<String>,
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedToken {
    pub access_token: String,
    /// Unix seconds.
    pub expires_on: i64,
}

/// The CLI's configuration directory.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("coffer"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("neither XDG_CONFIG_HOME nor HOME is set"))?;
    Ok(PathBuf::from(home).join(".config").join("coffer"))
}

fn ensure_dir(p: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Write `bytes` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn profiles_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("profiles.json"))
}

pub fn token_path(profile: &str) -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("tokens").join(format!("{profile}.json")))
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

impl Profiles {
    pub fn load() -> anyhow::Result<Self> {
        let p = profiles_path()?;
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t).with_context(|| format!("parsing {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    pub fn save(&self) -> anyhow::Result<()> {
        write_private(&profiles_path()?, &serde_json::to_vec_pretty(self)?)
    }

    pub fn get(&self, name: &str) -> anyhow::Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| {
            anyhow!("no profile named '{name}': sign in with `coffer login --profile {name} ...`")
        })
    }
}

pub fn load_tokens(profile: &str) -> BTreeMap<String, CachedToken> {
    token_path(profile)
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

pub fn save_tokens(profile: &str, tokens: &BTreeMap<String, CachedToken>) -> anyhow::Result<()> {
    write_private(&token_path(profile)?, &serde_json::to_vec(tokens)?)
}

/// Read a secret from a file that only its owner may read (trailing newline dropped).
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} can be read by others (mode {:o}): chmod 600 it first",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let s = s.trim_end_matches(['\r', '\n']).to_string();
    if s.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(s)
}

/// The secret from its remembered source, if it has one.
pub fn secret_from(source: &SecretSource) -> anyhow::Result<Option<String>> {
    match source {
        SecretSource::Env(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => bail!("the environment variable {var} (this profile's secret) is not set"),
        },
        SecretSource::File(p) => read_secret_file(p).map(Some),
        SecretSource::None => Ok(None),
    }
}

/// Read a line from the terminal without echoing it.
pub fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    let hid = stty("-echo").is_ok_and(|s| s.success());
    let mut line = String::new();
    let r = std::io::stdin().read_line(&mut line);
    if hid {
        let _ = stty("echo");
    }
    eprintln!();
    r.context("reading the secret")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("prod-eu_1"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name(""));
    }

    #[test]
    fn secret_files_must_be_private() -> anyhow::Result<()> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("s");
        std::fs::write(&p, "abc\n")?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        assert!(read_secret_file(&p).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        assert_eq!(read_secret_file(&p)?, "abc");
        let w = d.path().join("sub").join("w.json");
        write_private(&w, b"{}")?;
        assert_eq!(std::fs::metadata(&w)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }
}
