//! Opening the data directory: unseal the root key, open the metadata store, load (or on
//! first start create) the tenant, the token-signing key, the default subscription and the
//! administrator.
//!
//! On first start the administrator's credentials are written once to
//! `DATA_DIR/admin-credentials.json` (mode 0600): the only secret Coffer ever writes in clear,
//! which operators move away after signing in.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use coffer_crypto::aead::SealingKey;
use coffer_crypto::jwt::SigningKey;
use coffer_domain::clock::Clock;
use coffer_domain::cmk::LocalVaultClient;
use coffer_domain::identity::{Audiences, IdentityService};
use coffer_domain::keyvault::KeyVaultService;
use coffer_domain::mgmt::{MgmtConfig, MgmtService};
use coffer_domain::model::RoleAssignment;
use coffer_domain::rbac::{Rbac, builtin};
use coffer_domain::seal::Seal;
use coffer_domain::store::MetaStore;
use coffer_secret::SecretString;
use coffer_store_sqlite::SqliteStore;
use serde_json::json;

use crate::keyfile::{KeyFileSeal, write_private};

const SIGNING_KEY_AAD: &[u8] = b"coffer:identity:signing-key:v1";

pub struct Booted {
    pub store: Arc<SqliteStore>,
    pub root: Arc<SealingKey>,
    pub clock: Arc<Clock>,
    pub identity: Arc<IdentityService>,
    pub mgmt: Arc<MgmtService>,
    pub keyvault: Arc<KeyVaultService>,
    pub blob: Arc<coffer_domain::blob::BlobService>,
    pub events: Arc<coffer_domain::events::EventService>,
    pub tenant_id: String,
    pub subscription_id: String,
    pub first_start: bool,
}

pub struct BootParams<'a> {
    pub data_dir: &'a Path,
    pub seal_key_file: &'a Path,
    pub dns_suffix: &'a str,
    pub origin: &'a str,
    pub vault_dns_suffix: &'a str,
    pub blob_dns_suffix: &'a str,
    pub regions: Vec<String>,
    pub test_clock: bool,
    pub cmk: coffer_domain::mgmt::CmkConfig,
    /// Vaults on other servers (customer-managed keys held elsewhere).
    pub remote_vaults: Option<Arc<dyn coffer_domain::cmk::VaultClient>>,
    pub events: coffer_domain::events::EventsConfig,
}

/// Create the data directory (mode 0700) if needed.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// The root key of a data directory (key-file seal).
pub fn unseal(data_dir: &Path, seal_key_file: &Path) -> anyhow::Result<SealingKey> {
    KeyFileSeal::new(seal_key_file.to_path_buf(), data_dir)
        .unseal_or_init()
        .map_err(|e| anyhow!("unsealing: {e}"))
}

/// The token-signing key in PKCS#8 DER (for tests that prove it never reaches disk in clear).
pub async fn unseal_signing_key(
    store: &dyn MetaStore,
    root: &SealingKey,
) -> anyhow::Result<coffer_secret::SecretBytes> {
    let sealed = store
        .get_setting("identity.signing_key")
        .await?
        .ok_or_else(|| anyhow!("no signing key"))?;
    root.open(SIGNING_KEY_AAD, &sealed)
        .map_err(|_| anyhow!("the signing key cannot be unsealed"))
}

/// The audit chain's HMAC key and checkpoint signing key, derived from the root key (never
/// stored).
pub fn audit_keys(root: &SealingKey) -> anyhow::Result<coffer_store_sqlite::AuditKeys> {
    let seed = root.derive("audit-checkpoint-ed25519")?;
    let chain = root.derive("audit-chain-hmac")?;
    Ok(coffer_store_sqlite::AuditKeys {
        chain: coffer_domain::audit::chain::ChainKey::new(chain.expose()),
        signer: coffer_domain::audit::chain::Signer::from_seed(seed.expose())
            .ok_or_else(|| anyhow!("the audit checkpoint key cannot be derived"))?,
    })
}

/// Verify the audit log of a data directory (the server may be running).
pub async fn verify_audit(
    data_dir: &Path,
    seal_key_file: &Path,
) -> anyhow::Result<coffer_domain::audit::chain::Verdict> {
    let db = data_dir.join("coffer.db");
    if !db.is_file() {
        anyhow::bail!(
            "{} is not a Coffer data directory (no coffer.db)",
            data_dir.display()
        );
    }
    let root = unseal(data_dir, seal_key_file)?;
    let store = SqliteStore::open(&db).await.map_err(|e| anyhow!("{e}"))?;
    let v = store
        .verify_audit(&audit_keys(&root)?)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    store.close().await;
    Ok(v)
}

pub async fn boot(p: BootParams<'_>) -> anyhow::Result<Booted> {
    prepare_data_dir(p.data_dir)?;
    let root = unseal(p.data_dir, p.seal_key_file)?;
    let store = Arc::new(
        SqliteStore::open(&p.data_dir.join("coffer.db"))
            .await
            .map_err(|e| anyhow!("{e}"))?,
    );
    store.set_audit_keys(audit_keys(&root)?);
    let clock = Arc::new(if p.test_clock {
        Clock::shiftable()
    } else {
        Clock::system()
    });

    let tenant = store.get_setting("tenant_id").await?;
    let first_start = tenant.is_none();
    let tenant_id = match tenant {
        Some(t) => String::from_utf8(t)?,
        None => coffer_crypto::random::uuid()?,
    };
    let signing = match store.get_setting("identity.signing_key").await? {
        Some(sealed) => {
            let der = root
                .open(SIGNING_KEY_AAD, &sealed)
                .map_err(|_| anyhow!("the token signing key cannot be unsealed"))?;
            SigningKey::from_pkcs8(&der)?
        }
        None => {
            let k = SigningKey::generate()?;
            let der = k.to_pkcs8()?;
            store
                .put_setting(
                    "identity.signing_key",
                    &root.seal(SIGNING_KEY_AAD, der.expose())?,
                )
                .await?;
            k
        }
    };
    let audiences = Audiences {
        management: vec![
            "https://management.core.windows.net".into(),
            "https://management.azure.com".into(),
            p.origin.trim_end_matches('/').into(),
        ],
        vault: vec![
            format!("https://{}", p.vault_dns_suffix),
            "https://vault.azure.net".into(),
        ],
        storage: vec!["https://storage.azure.com".into()],
    };
    let issuer_base = format!("https://sts.{}", p.dns_suffix);
    let cached = Arc::new(coffer_domain::cache::CachedStore::new(store.clone()));
    let changes = cached.changes();
    let dyn_store: Arc<dyn MetaStore> = cached;
    let identity = Arc::new(IdentityService::new(
        dyn_store.clone(),
        clock.clone(),
        signing,
        root.derive("client-secret-verifier")?,
        tenant_id.clone(),
        issuer_base,
        audiences,
    ));
    let rbac = Arc::new(Rbac::new(dyn_store.clone())?);
    let root = Arc::new(root);
    let keyvault = Arc::new(KeyVaultService::new(
        dyn_store.clone(),
        rbac.clone(),
        clock.clone(),
        root.clone(),
    )?);
    let mgmt = Arc::new(MgmtService::new(
        dyn_store.clone(),
        rbac,
        identity.clone(),
        clock.clone(),
        MgmtConfig {
            regions: p.regions,
            vault_dns_suffix: p.vault_dns_suffix.to_string(),
            blob_dns_suffix: p.blob_dns_suffix.to_string(),
        },
        root.clone(),
        Arc::new(LocalVaultClient::new(
            keyvault.clone(),
            dyn_store.clone(),
            store.clone(),
            p.vault_dns_suffix.to_string(),
            p.remote_vaults,
        )),
        changes,
        p.cmk,
    ));

    // One byte store per region: an account's bytes stay in its region.
    let mut regions = std::collections::HashMap::new();
    for r in mgmt.regions() {
        let store: Arc<dyn coffer_domain::bytes::ByteStore> = Arc::new(
            coffer_bytes_fs::FsByteStore::new(p.data_dir.join("bytes").join(r))
                .map_err(|e| anyhow!("{e}"))?,
        );
        regions.insert(r.clone(), store);
    }
    let events = coffer_domain::events::EventService::new(
        dyn_store.clone(),
        clock.clone(),
        root.clone(),
        p.events,
    );
    keyvault.set_events(events.clone());
    mgmt.set_events(events.clone());
    let blob = Arc::new(coffer_domain::blob::BlobService::new(
        dyn_store.clone(),
        mgmt.clone(),
        Arc::new(Rbac::new(dyn_store.clone())?),
        clock.clone(),
        regions,
    ));

    let subscription_id = if first_start {
        first_start_setup(
            dyn_store.as_ref(),
            &identity,
            &mgmt,
            &clock,
            p.data_dir,
            &tenant_id,
        )
        .await?
    } else {
        String::from_utf8(
            store
                .get_setting("default_subscription")
                .await?
                .ok_or_else(|| anyhow!("the data directory has no default subscription"))?,
        )?
    };
    Ok(Booted {
        store,
        root,
        clock,
        identity,
        mgmt,
        keyvault,
        blob,
        events,
        tenant_id,
        subscription_id,
        first_start,
    })
}

async fn first_start_setup(
    store: &dyn MetaStore,
    identity: &IdentityService,
    mgmt: &MgmtService,
    clock: &Clock,
    data_dir: &Path,
    tenant_id: &str,
) -> anyhow::Result<String> {
    let (sp, secret) = identity
        .create_service_principal("Coffer administrator", true)
        .await?;
    let password = SecretString::new(coffer_crypto::random::token()?);
    let user = identity.create_user("admin", &password, true).await?;
    let sub = mgmt
        .create_subscription("Coffer default", &sp.object_id)
        .await?;
    store
        .put_role_assignment(&RoleAssignment {
            name: coffer_crypto::random::uuid()?,
            scope: format!("/subscriptions/{}", sub.subscription_id),
            principal_id: user.object_id.clone(),
            principal_type: "User".into(),
            role_definition_id: builtin::OWNER.into(),
            created: clock.now(),
            created_by: sp.object_id.clone(),
        })
        .await?;
    let creds = json!({
        "client_id": sp.client_id,
        "client_secret": secret.expose(),
        "username": "admin",
        "password": password.expose(),
        "tenant_id": tenant_id,
        "subscription_id": sub.subscription_id,
    });
    let path = data_dir.join("admin-credentials.json");
    write_private(&path, creds.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    store
        .put_setting("default_subscription", sub.subscription_id.as_bytes())
        .await?;
    // Written last: a first start that died half-way is redone from scratch.
    store.put_setting("tenant_id", tenant_id.as_bytes()).await?;
    eprintln!(
        "Coffer: first start. Administrator credentials were written to {} (mode 0600). \
         Sign in, then move that file out of the data directory.",
        path.display()
    );
    Ok(sub.subscription_id)
}
