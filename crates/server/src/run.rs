//! Running the server: bind, boot, serve, publish `endpoints.json`, wait for a signal, shut
//! down gracefully.
//!
//! The automation contract: once every listener accepts connections the server writes
//! `DATA_DIR/endpoints.json` atomically (no secrets; real ports even when started on port 0)
//! and prints one line `COFFER_READY <absolute path of endpoints.json>` on standard output.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use coffer_api::{AppState, Endpoints};
use coffer_domain::audit::AuditSink;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bootstrap::{BootParams, boot};
use crate::config::ServerConfig;
use crate::keyfile::write_private;
use crate::proxy::{ProxyRoutes, serve as serve_proxy};
use crate::{listen, tls};

fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

pub async fn run(cfg: ServerConfig) -> anyhow::Result<()> {
    // Install the signal handlers first: a SIGTERM that arrives right after COFFER_READY
    // must shut down gracefully, not kill the process with the default action.
    let signals = Signals::install()?;
    let main_l = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let blob_l = TcpListener::bind(cfg.blob_listen)
        .await
        .with_context(|| format!("binding {}", cfg.blob_listen))?;
    let proxy_l = TcpListener::bind(cfg.proxy_listen)
        .await
        .with_context(|| format!("binding {}", cfg.proxy_listen))?;
    let (main_a, blob_a, proxy_a) = (
        main_l.local_addr()?,
        blob_l.local_addr()?,
        proxy_l.local_addr()?,
    );
    let host = url_host(&cfg.public_host);
    let endpoints = Endpoints {
        origin: format!("https://{host}:{}", main_a.port()),
        blob_origin: format!("https://{host}:{}", blob_a.port()),
        dns_suffix: cfg.dns_suffix.clone(),
        main_port: main_a.port(),
        blob_port: blob_a.port(),
    };
    let booted = boot(BootParams {
        data_dir: &cfg.data_dir,
        seal_key_file: &cfg.seal_key_file,
        dns_suffix: &cfg.dns_suffix,
        origin: &endpoints.origin,
        vault_dns_suffix: &endpoints.vault_dns_suffix(),
        blob_dns_suffix: &endpoints.blob_dns_suffix(),
        regions: cfg.regions.clone(),
        test_clock: cfg.test_clock,
        cmk: cfg.cmk.clone(),
        remote_vaults: if cfg.remote_vaults.is_empty() {
            None
        } else {
            Some(Arc::new(crate::remote_vault::RemoteVaults::new(
                &cfg.remote_vaults,
            )?))
        },
        events: coffer_domain::events::EventsConfig {
            retry_base: cfg.webhook_retry_seconds,
            near_expiry_days: cfg.near_expiry_days,
            vault_dns_suffix: endpoints.vault_dns_suffix(),
        },
    })
    .await?;
    let tls = tls::prepare(booted.store.as_ref(), &booted.root, &cfg).await?;
    if cfg.seal_key_file.starts_with(&cfg.data_dir) {
        tracing::warn!(
            key_file = %cfg.seal_key_file.display(),
            "the seal key file is inside the data directory: a copy of the directory is enough to \
             decrypt it. Keep the key file elsewhere in production (--seal-key-file)"
        );
    }
    if cfg.data_dir.join("admin-credentials.json").exists() {
        tracing::warn!(
            "DATA_DIR/admin-credentials.json still holds the administrator's secret in clear; \
             move it out of the data directory once you have signed in"
        );
    }
    if cfg.test_clock {
        tracing::warn!("the test clock is enabled: administrators can move time forward");
    }

    let faults = Arc::new(coffer_api::Faults::default());
    let metrics = Arc::new(coffer_api::metrics::Metrics::default());
    let audit: Arc<dyn AuditSink> = Arc::new(coffer_api::GuardedAudit {
        inner: booted.store.clone(),
        faults: faults.clone(),
        metrics: metrics.clone(),
    });
    let state = Arc::new(AppState {
        identity: booted.identity.clone(),
        mgmt: booted.mgmt.clone(),
        keyvault: booted.keyvault.clone(),
        blob: booted.blob.clone(),
        audit,
        clock: booted.clock.clone(),
        endpoints: endpoints.clone(),
        faults,
        audit_retention: cfg.audit_retention,
        metrics,
        events: booted.events.clone(),
        throttle: cfg
            .vault_throttle
            .then(|| Arc::new(coffer_api::throttle::Throttle::default())),
    });
    booted.events.connect(
        Arc::new(crate::webhooks::HttpsWebhooks::new(
            cfg.webhook_ca_file.as_deref(),
        )?),
        state.audit.clone(),
    );
    // CMK accounts with an in-process vault follow key changes as they happen.
    let _cmk_watcher = booted.mgmt.spawn_cmk_watcher();
    let (tx, rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(listen::serve_tls(
        main_l,
        tls.server_config.clone(),
        coffer_api::main_router(state.clone()).nest(
            "/console",
            coffer_console::router(coffer_console::Console::new(
                state.clone(),
                Arc::new(ChainCheck {
                    store: booted.store.clone(),
                    keys: crate::bootstrap::audit_keys(&booted.root)?,
                }),
            )),
        ),
        rx.clone(),
    ));
    tasks.spawn(listen::serve_tls(
        blob_l,
        tls.server_config.clone(),
        coffer_api::blob_router(state.clone()),
        rx.clone(),
    ));
    tasks.spawn(serve_proxy(
        proxy_l,
        ProxyRoutes {
            dns_suffix: cfg.dns_suffix.clone(),
            public_host: cfg.public_host.clone(),
            main: main_a,
            blob: blob_a,
            main_port: main_a.port(),
            blob_port: blob_a.port(),
        },
        rx.clone(),
    ));
    // Background work: scheduled purges (vaults, keys) and policy-driven key rotation.
    {
        let state = state.clone();
        let mut rx = rx.clone();
        tasks.spawn(async move {
            let period = cfg.cmk.poll_interval.min(Duration::from_secs(30));
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => coffer_api::run_due_work(&state).await,
                    _ = rx.changed() => break,
                }
            }
        });
    }

    let ep_path = cfg.data_dir.join("endpoints.json");
    let doc = json!({
        "version": 1,
        "tenant_id": booted.tenant_id,
        "subscription_id": booted.subscription_id,
        "regions": cfg.regions,
        "authority": endpoints.origin,
        "management": endpoints.origin,
        "blob": endpoints.blob_origin,
        "vault_dns_suffix": endpoints.vault_dns_suffix(),
        "blob_dns_suffix": endpoints.blob_dns_suffix(),
        "proxy": format!("http://{}", proxy_a),
        "console": format!("{}/console", endpoints.origin),
        "metrics": format!("{}/metrics", endpoints.origin),
        "ca_cert": tls.ca_cert_path,
    });
    write_endpoints(&ep_path, &serde_json::to_vec_pretty(&doc)?)?;
    tracing::info!(
        management = %endpoints.origin, blob = %endpoints.blob_origin, proxy = %proxy_a,
        data_dir = %cfg.data_dir.display(), "Coffer is ready"
    );
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "COFFER_READY {}", ep_path.display())?;
        out.flush()?;
    }

    signals.wait().await;
    tracing::info!("shutting down");
    let _ = tx.send(true);
    while tasks.join_next().await.is_some() {}
    booted.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

fn write_endpoints(path: &PathBuf, bytes: &[u8]) -> anyhow::Result<()> {
    // Not secret, but written atomically like the secret files so readers never see half a file.
    write_private(path, bytes)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The console's "Verify chain": the same check as `coffer audit verify`, on the live store.
struct ChainCheck {
    store: Arc<coffer_store_sqlite::SqliteStore>,
    keys: coffer_store_sqlite::AuditKeys,
}

#[async_trait::async_trait]
impl coffer_console::ChainVerifier for ChainCheck {
    async fn verify(&self) -> Result<coffer_domain::audit::chain::Verdict, String> {
        self.store
            .verify_audit(&self.keys)
            .await
            .map_err(|e| e.to_string())
    }
}
