//! Server configuration: a TOML file (`--config`), then environment variables, then flags.
//! Every setting is documented in `coffer server --help`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

/// Settings as given on the command line or in the environment (all optional: unset ones
/// fall back to the config file, then to the defaults).
#[derive(Debug, Default, Args)]
pub struct ServerArgs {
    /// TOML configuration file (keys as the long flags, with underscores: data_dir, listen, ...).
    #[arg(long, env = "COFFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: metadata database, sealed keys, CA certificate [default: ./coffer-data].
    #[arg(long, env = "COFFER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Main HTTPS listener: identity, management, console, ops, and every `{vault}.vault.{suffix}`
    /// host. Port 0 picks a free port (see endpoints.json) [default: 127.0.0.1:8443].
    #[arg(long, env = "COFFER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Blob HTTPS listener: path-style `/{account}/...` and `{account}.blob.{suffix}` hosts
    /// [default: 127.0.0.1:10000].
    #[arg(long, env = "COFFER_BLOB_LISTEN")]
    pub blob_listen: Option<SocketAddr>,
    /// HTTP CONNECT proxy that routes Coffer host names to the listeners, for clients without
    /// DNS for them (`HTTPS_PROXY=http://...`) [default: 127.0.0.1:8888].
    #[arg(long, env = "COFFER_PROXY_LISTEN")]
    pub proxy_listen: Option<SocketAddr>,
    /// Host name or IP that clients use to reach the listeners, used in every URL the server
    /// hands out [default: 127.0.0.1].
    #[arg(long, env = "COFFER_PUBLIC_HOST")]
    pub public_host: Option<String>,
    /// DNS suffix of vault and blob host names: `{vault}.vault.{suffix}`, `{account}.blob.{suffix}`
    /// [default: coffer.internal].
    #[arg(long, env = "COFFER_DNS_SUFFIX")]
    pub dns_suffix: Option<String>,
    /// Regions resources may be created in, comma-separated; each has its own byte store
    /// [default: eastus,westus,westeurope,northeurope].
    #[arg(long, env = "COFFER_REGIONS", value_delimiter = ',')]
    pub regions: Option<Vec<String>>,
    /// Key file of the key-file seal (32 random bytes, mode 0600), which seals the root key.
    /// Keep it outside the data directory in production [default: DATA_DIR/seal.key].
    #[arg(long, env = "COFFER_SEAL_KEY_FILE")]
    pub seal_key_file: Option<PathBuf>,
    /// PEM certificate chain to serve instead of the self-made one (with --tls-key).
    #[arg(long, env = "COFFER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (must not be group- or world-readable).
    #[arg(long, env = "COFFER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Let tenant administrators move the server clock forward (POST /coffer/admin/clock).
    /// For tests only: never enable it in production.
    #[arg(long, env = "COFFER_TEST_CLOCK")]
    pub test_clock: bool,
    /// Log filter (tracing EnvFilter syntax), logs go to stderr [default: info].
    #[arg(long, env = "COFFER_LOG")]
    pub log: Option<String>,
    /// Allow a storage account's customer-managed key to live in a vault of another region.
    /// The default policy refuses it (the same-region rule of Azure's portal).
    #[arg(long, env = "COFFER_CMK_ALLOW_CROSS_REGION")]
    pub cmk_allow_cross_region: bool,
    /// Seconds an unwrapped account key is used before the vault is asked again: the bound on
    /// revocation for a vault on another server (in-process vaults revoke at once) [default: 60].
    #[arg(long, env = "COFFER_CMK_CACHE_TTL")]
    pub cmk_cache_ttl: Option<u64>,
    /// Seconds between checks for new key versions of vaults on other servers [default: 60].
    #[arg(long, env = "COFFER_CMK_POLL_INTERVAL")]
    pub cmk_poll_interval: Option<u64>,
    /// Delete audit records older than this many days (whole signed batches, so the rest still
    /// verifies). Unset: keep every record.
    #[arg(long, env = "COFFER_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// PEM CA certificates to trust for event webhook endpoints, in addition to the system's.
    #[arg(long, env = "COFFER_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Days before a key version's expiry that KeyNearExpiry is sent [default: 30].
    #[arg(long, env = "COFFER_NEAR_EXPIRY_DAYS")]
    pub near_expiry_days: Option<u32>,
    /// Seconds before the first webhook retry; each retry doubles it, up to an hour [default: 10].
    #[arg(long, env = "COFFER_WEBHOOK_RETRY_SECONDS")]
    pub webhook_retry_seconds: Option<u32>,
    /// Throttle each vault as Azure Key Vault does (a weighted sum of 4,000 units per 10
    /// seconds; 429 with Retry-After beyond it), so that clients' retries can be exercised.
    #[arg(long, env = "COFFER_VAULT_THROTTLE")]
    pub vault_throttle: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    blob_listen: Option<SocketAddr>,
    proxy_listen: Option<SocketAddr>,
    public_host: Option<String>,
    dns_suffix: Option<String>,
    regions: Option<Vec<String>>,
    seal_key_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    test_clock: Option<bool>,
    log: Option<String>,
    cmk_allow_cross_region: Option<bool>,
    cmk_cache_ttl: Option<u64>,
    cmk_poll_interval: Option<u64>,
    audit_retention_days: Option<u32>,
    webhook_ca_file: Option<PathBuf>,
    near_expiry_days: Option<u32>,
    webhook_retry_seconds: Option<u32>,
    vault_throttle: Option<bool>,
    /// Vaults on other servers that hold customer-managed keys of this server's accounts.
    remote_vaults: Option<Vec<crate::remote_vault::RemoteVaultConfig>>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub blob_listen: SocketAddr,
    pub proxy_listen: SocketAddr,
    pub public_host: String,
    pub dns_suffix: String,
    pub regions: Vec<String>,
    pub seal_key_file: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub test_clock: bool,
    pub log: String,
    pub cmk: coffer_domain::mgmt::CmkConfig,
    pub remote_vaults: Vec<crate::remote_vault::RemoteVaultConfig>,
    /// Seconds audit records are kept (None: forever).
    pub audit_retention: Option<i64>,
    pub webhook_ca_file: Option<PathBuf>,
    pub near_expiry_days: i64,
    pub webhook_retry_seconds: i64,
    pub vault_throttle: bool,
}

/// A CMK interval in seconds: 1 to 86400, default 60.
fn seconds(flag: &str, v: Option<u64>) -> anyhow::Result<u64> {
    match v {
        None => Ok(60),
        Some(s) if (1..=86_400).contains(&s) => Ok(s),
        Some(s) => bail!("--{flag} must be between 1 and 86400 seconds (got {s})"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl ServerConfig {
    pub fn resolve(args: ServerArgs) -> anyhow::Result<Self> {
        let file: FileConfig = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("coffer-data"));
        let data_dir = std::path::absolute(&data_dir).context("resolving the data directory")?;
        let regions: Vec<String> = args
            .regions
            .or(file.regions)
            .unwrap_or_else(|| {
                ["eastus", "westus", "westeurope", "northeurope"]
                    .map(String::from)
                    .to_vec()
            })
            .into_iter()
            .map(|r| r.trim().to_ascii_lowercase())
            .filter(|r| !r.is_empty())
            .collect();
        if regions.is_empty() {
            bail!("at least one region must be configured");
        }
        for r in &regions {
            if !r.chars().all(|c| c.is_ascii_alphanumeric()) || r.len() > 40 {
                bail!("invalid region name '{r}': letters and digits only");
            }
        }
        let dns_suffix = args
            .dns_suffix
            .or(file.dns_suffix)
            .unwrap_or_else(|| "coffer.internal".into())
            .to_ascii_lowercase();
        if dns_suffix.is_empty()
            || !dns_suffix
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            bail!("invalid --dns-suffix '{dns_suffix}'");
        }
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key must be given together"),
        };
        Ok(Self {
            seal_key_file: args
                .seal_key_file
                .or(file.seal_key_file)
                .unwrap_or_else(|| data_dir.join("seal.key")),
            data_dir,
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| addr("127.0.0.1:8443")),
            blob_listen: args
                .blob_listen
                .or(file.blob_listen)
                .unwrap_or_else(|| addr("127.0.0.1:10000")),
            proxy_listen: args
                .proxy_listen
                .or(file.proxy_listen)
                .unwrap_or_else(|| addr("127.0.0.1:8888")),
            public_host: args
                .public_host
                .or(file.public_host)
                .unwrap_or_else(|| "127.0.0.1".into()),
            dns_suffix,
            regions,
            tls,
            test_clock: args.test_clock || file.test_clock.unwrap_or(false),
            vault_throttle: args.vault_throttle || file.vault_throttle.unwrap_or(false),
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            remote_vaults: file.remote_vaults.unwrap_or_default(),
            webhook_ca_file: args.webhook_ca_file.or(file.webhook_ca_file),
            near_expiry_days: match args.near_expiry_days.or(file.near_expiry_days) {
                None => 30,
                Some(d) if (1..=365).contains(&d) => i64::from(d),
                Some(_) => bail!("--near-expiry-days must be between 1 and 365"),
            },
            webhook_retry_seconds: match args.webhook_retry_seconds.or(file.webhook_retry_seconds) {
                None => 10,
                Some(s) if (1..=3600).contains(&s) => i64::from(s),
                Some(_) => bail!("--webhook-retry-seconds must be between 1 and 3600"),
            },
            audit_retention: match args.audit_retention_days.or(file.audit_retention_days) {
                None => None,
                Some(0) => bail!("--audit-retention-days must be at least 1"),
                Some(d) => Some(i64::from(d) * 86_400),
            },
            cmk: coffer_domain::mgmt::CmkConfig {
                allow_cross_region: args.cmk_allow_cross_region
                    || file.cmk_allow_cross_region.unwrap_or(false),
                cache_ttl: Duration::from_secs(seconds(
                    "cmk-cache-ttl",
                    args.cmk_cache_ttl.or(file.cmk_cache_ttl),
                )?),
                poll_interval: Duration::from_secs(seconds(
                    "cmk-poll-interval",
                    args.cmk_poll_interval.or(file.cmk_poll_interval),
                )?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_in() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("coffer-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let f = dir.join("c.toml");
        std::fs::write(
            &f,
            "regions = [\"westeurope\"]\ndns_suffix = \"example.test\"\nlisten = \"127.0.0.1:9000\"\n",
        )?;
        let c = ServerConfig::resolve(ServerArgs {
            config: Some(f.clone()),
            listen: Some(addr("127.0.0.1:0")),
            ..Default::default()
        })?;
        assert_eq!(c.regions, vec!["westeurope"]);
        assert_eq!(c.dns_suffix, "example.test");
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.blob_listen.port(), 10000);
        std::fs::write(&f, "bogus = 1\n")?;
        assert!(
            ServerConfig::resolve(ServerArgs {
                config: Some(f),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            ServerConfig::resolve(ServerArgs {
                regions: Some(vec!["e/x".into()]),
                ..Default::default()
            })
            .is_err()
        );
        Ok(())
    }
}
