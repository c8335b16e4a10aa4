//! `coffer login` and `coffer logout`: named profiles for a service principal on a server
//! (see [`crate::profile`] for what is stored where). The secret is never a flag value: it
//! is read from an environment variable (`--secret-env`), a file only its owner can read
//! (`--secret-file`), standard input (`--secret-stdin`) or a prompt that does not echo.
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

use crate::error::usage;
use crate::output::{Output, Printer};
use crate::profile::{self, Profile, Profiles, SecretSource};
use crate::session::{ARM_SCOPE, Endpoints, STORAGE_SCOPE, Secret, Session};

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Profile name.
    #[arg(long, default_value = "default", env = "COFFER_PROFILE")]
    pub profile: String,
    /// The server's management endpoint (`management` in its endpoints.json).
    #[arg(long)]
    pub endpoint: String,
    /// Tenant id.
    #[arg(long)]
    pub tenant: String,
    /// The service principal's client (application) id.
    #[arg(long, alias = "username", short = 'u')]
    pub client_id: String,
    /// Read the secret from this environment variable (now, and again when tokens expire).
    #[arg(long, value_name = "VAR", group = "secret")]
    pub secret_env: Option<String>,
    /// Read the secret from this file, which only its owner may read (now, and again when
    /// tokens expire).
    #[arg(long, value_name = "FILE", group = "secret")]
    pub secret_file: Option<PathBuf>,
    /// Read the secret from standard input (one line; not kept: sign in again after about
    /// an hour).
    #[arg(long, group = "secret")]
    pub secret_stdin: bool,
    /// Subscription [default: the first the principal can see].
    #[arg(long)]
    pub subscription: Option<String>,
    /// CA certificate (PEM) to trust, e.g. the server's ca.pem [default: the system's roots].
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// The blob endpoint for path-style requests [default: the management host with the
    /// blob port from the server's cloud metadata].
    #[arg(long)]
    pub blob_endpoint: Option<String>,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
}

fn not_empty(s: String, what: &str) -> anyhow::Result<String> {
    if s.is_empty() {
        bail!("{what} is empty")
    }
    Ok(s)
}

pub async fn login(a: LoginArgs) -> anyhow::Result<()> {
    if !profile::valid_name(&a.profile) {
        return Err(usage(format!(
            "--profile '{}': use letters, digits, '-', '_' and '.'",
            a.profile
        )));
    }
    let (secret, source) = if let Some(var) = &a.secret_env {
        let s =
            std::env::var(var).map_err(|_| anyhow!("the environment variable {var} is not set"))?;
        (not_empty(s, var)?, SecretSource::Env(var.clone()))
    } else if let Some(f) = &a.secret_file {
        let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        (profile::read_secret_file(&abs)?, SecretSource::File(abs))
    } else if a.secret_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the secret from standard input")?;
        (
            not_empty(
                line.trim_end_matches(['\r', '\n']).to_string(),
                "the secret",
            )?,
            SecretSource::None,
        )
    } else {
        (
            not_empty(profile::prompt_hidden("Client secret: ")?, "the secret")?,
            SecretSource::None,
        )
    };
    let ca_cert = a.ca_file.as_ref().map(|p| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .to_string_lossy()
            .into_owned()
    });
    let management = a.endpoint.trim_end_matches('/').to_string();
    // The server's cloud metadata: sign-in endpoint and the vault and storage suffixes.
    let probe = Session::new(
        Endpoints {
            tenant_id: a.tenant.clone(),
            subscription_id: String::new(),
            authority: management.clone(),
            management: management.clone(),
            blob: String::new(),
            vault_dns_suffix: String::new(),
            ca_cert: ca_cert.clone(),
        },
        a.client_id.clone(),
        Secret::Known(coffer_secret::SecretString::new(String::new())),
        None,
    )?;
    let resp = probe
        .http()
        .get(format!(
            "{management}/metadata/endpoints?api-version=2022-09-01"
        ))
        .send()
        .await
        .with_context(|| format!("contacting {management}"))?;
    if !resp.status().is_success() {
        return Err(crate::session::api_error(resp).await.into());
    }
    let meta: Value = resp.json().await.context("reading the cloud metadata")?;
    let authority = meta["authentication"]["loginEndpoint"]
        .as_str()
        .unwrap_or(&management)
        .trim_end_matches('/')
        .to_string();
    let vault_dns_suffix = meta["suffixes"]["keyVaultDns"]
        .as_str()
        .ok_or_else(|| anyhow!("the server's metadata has no suffixes.keyVaultDns"))?
        .trim_start_matches('.')
        .to_string();
    let blob = match &a.blob_endpoint {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => {
            let storage = meta["suffixes"]["storage"].as_str().unwrap_or("");
            let port = storage.rsplit_once(':').map(|(_, p)| p).unwrap_or("443");
            let url = reqwest::Url::parse(&management)?;
            let host = url.host_str().unwrap_or("127.0.0.1");
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            format!("https://{host}:{port}")
        }
    };
    let mut ep = Endpoints {
        tenant_id: a.tenant.clone(),
        subscription_id: String::new(),
        authority,
        management,
        blob,
        vault_dns_suffix,
        ca_cert: ca_cert.clone(),
    };
    let secret = coffer_secret::SecretString::new(secret);
    // Sign in, then pick the subscription.
    let s = Session::new(
        ep.clone(),
        a.client_id.clone(),
        Secret::Known(secret.clone()),
        None,
    )?;
    let subs = s
        .arm_list("/subscriptions?api-version=2022-12-01")
        .await
        .context("signing in")?;
    let sub = match &a.subscription {
        Some(want) => subs
            .iter()
            .find(|v| {
                v["subscriptionId"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(want))
            })
            .ok_or_else(|| anyhow!("the subscription {want} is not visible to this principal"))?,
        None => subs.first().ok_or_else(|| {
            anyhow!("this principal can see no subscription: assign it a role first")
        })?,
    };
    ep.subscription_id = sub["subscriptionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Tokens for every plane, cached under the profile.
    let s = Session::new(
        ep.clone(),
        a.client_id.clone(),
        Secret::Known(secret),
        Some(a.profile.clone()),
    )?;
    s.token(ARM_SCOPE).await?;
    s.token(&format!("https://{}/.default", ep.vault_dns_suffix))
        .await?;
    s.token(STORAGE_SCOPE).await?;
    let oid = s.object_id().await?;
    let mut all = Profiles::load()?;
    all.profiles.insert(
        a.profile.clone(),
        Profile {
            management: ep.management.clone(),
            authority: ep.authority.clone(),
            tenant_id: ep.tenant_id.clone(),
            subscription_id: ep.subscription_id.clone(),
            client_id: a.client_id.clone(),
            blob: ep.blob.clone(),
            vault_dns_suffix: ep.vault_dns_suffix.clone(),
            ca_cert,
            secret: source,
        },
    );
    all.default = Some(a.profile.clone());
    all.save()?;
    let out = json!({
        "profile": a.profile,
        "id": ep.subscription_id,
        "name": sub["displayName"],
        "tenantId": ep.tenant_id,
        "management": ep.management,
        "user": {"name": a.client_id, "type": "servicePrincipal", "objectId": oid},
        "isDefault": true,
    });
    Printer::new(a.output, None).print(&out)
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Profile name [default: the default profile].
    #[arg(long, env = "COFFER_PROFILE")]
    pub profile: Option<String>,
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<()> {
    let mut all = Profiles::load()?;
    let name = match a.profile.or_else(|| all.default.clone()) {
        Some(n) => n,
        None => bail!("not signed in: there is no default profile"),
    };
    if !profile::valid_name(&name) {
        return Err(usage(format!("--profile '{name}' is not a profile name")));
    }
    let existed = all.profiles.remove(&name).is_some();
    let token_file = profile::token_path(&name)?;
    let had_tokens = token_file.exists();
    if had_tokens {
        std::fs::remove_file(&token_file)
            .with_context(|| format!("removing {}", token_file.display()))?;
    }
    if all.default.as_deref() == Some(name.as_str()) {
        all.default = None;
    }
    if !existed && !had_tokens {
        bail!("no profile named '{name}'");
    }
    all.save()
}
