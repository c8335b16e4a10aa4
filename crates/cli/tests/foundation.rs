//! Integration tests of the `coffer` binary: the automation contract, the client commands
//! that act as the local administrator, and the "no secret in clear on disk" invariant.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use coffer_testkit::TestServer;
use serde_json::Value;

const ARM_SCOPE: &str = "https://management.core.windows.net//.default";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coffer"))
}

fn coffer(args: &[&str], stdin: Option<&str>) -> anyhow::Result<Value> {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "coffer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test]
async fn endpoints_file_follows_the_contract() -> anyhow::Result<()> {
    let mut s = TestServer::start(&bin(), &["--regions", "eastus,westeurope"])?;
    let e = &s.endpoints;
    assert_eq!(e["version"], 1);
    assert_eq!(e["regions"], serde_json::json!(["eastus", "westeurope"]));
    for k in ["authority", "management", "blob", "console", "metrics"] {
        let v = e[k].as_str().unwrap_or_default();
        assert!(v.starts_with("https://127.0.0.1:"), "{k} = {v}");
        assert!(
            !v.ends_with(":0") && !v.contains(":0/"),
            "{k} reports port 0"
        );
    }
    assert!(
        e["proxy"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://127.0.0.1:")
    );
    let port = s
        .endpoint("management")
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        s.endpoint("vault_dns_suffix"),
        format!("vault.coffer.internal:{port}")
    );
    assert!(Path::new(&s.endpoint("ca_cert")).is_absolute());
    let text = std::fs::read_to_string(s.data_dir().join("endpoints.json"))?;
    let creds = s.admin_credentials()?;
    assert!(!text.contains(creds["client_secret"].as_str().unwrap_or("x")));
    // health
    let r = s
        .http()?
        .get(format!("{}/healthz", s.endpoint("management")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(s.stop()?, Some(0));
    Ok(())
}

#[tokio::test]
async fn cli_creates_principals_as_the_local_administrator() -> anyhow::Result<()> {
    let mut s = TestServer::start(&bin(), &[])?;
    let dir = s.data_dir();
    let dir = dir.to_str().unwrap_or_default();
    let sp = coffer(
        &[
            "sp",
            "create",
            "--name",
            "ci-app",
            "-o",
            "json",
            "--data-dir",
            dir,
        ],
        None,
    )?;
    for k in ["client_id", "client_secret", "object_id"] {
        assert!(
            sp[k].as_str().is_some_and(|v| !v.is_empty()),
            "missing {k}: {sp}"
        );
    }
    // The new principal signs in; it holds no role, so ARM writes are denied.
    let token = s
        .token(
            sp["client_id"].as_str().unwrap_or_default(),
            sp["client_secret"].as_str().unwrap_or_default(),
            ARM_SCOPE,
        )
        .await?;
    let url = format!(
        "{}/subscriptions/{}/resourcegroups/rg1?api-version=2024-11-01",
        s.endpoint("management"),
        s.endpoint("subscription_id")
    );
    let r = s
        .http()?
        .put(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"location": "eastus"}))
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["code"], "AuthorizationFailed");

    let user = coffer(
        &[
            "user",
            "create",
            "--name",
            "alice",
            "--password-stdin",
            "--data-dir",
            dir,
        ],
        Some("correct horse battery staple\n"),
    )?;
    assert_eq!(user["username"], "alice");
    assert!(user.get("password").is_none());
    let generated = coffer(
        &["user", "create", "--name", "bob", "--data-dir", dir],
        None,
    )?;
    assert!(
        generated["password"]
            .as_str()
            .is_some_and(|p| p.len() >= 32)
    );
    // A duplicate user is a clear error, not a crash.
    let dup = Command::new(bin())
        .args(["user", "create", "--name", "alice", "--data-dir", dir])
        .output()?;
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("Conflict"));
    assert_eq!(s.stop()?, Some(0));
    Ok(())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The byte strings a secret could appear as on disk: raw, hex, base64 and base64url.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    // A PEM body wraps base64 at 64 columns: the first 60 characters are enough to find it.
    let mut v = vec![secret.to_vec(), hex::encode(secret).into_bytes()];
    for s in [b64, b64url] {
        let n = s.len().min(60);
        v.push(s.as_bytes()[..n].to_vec());
    }
    v
}

#[tokio::test]
async fn data_directory_holds_no_secret_in_clear() -> anyhow::Result<()> {
    let mut s = TestServer::start(&bin(), &[])?;
    let dir = s.data_dir();
    let creds = s.admin_credentials()?;
    let sp = coffer(
        &[
            "sp",
            "create",
            "--name",
            "x",
            "--data-dir",
            dir.to_str().unwrap_or_default(),
        ],
        None,
    )?;
    // Some traffic, so that tokens and audit records exist.
    let token = s.admin_token().await?;
    let url = format!(
        "{}/subscriptions/{}/resourcegroups/rg1?api-version=2024-11-01",
        s.endpoint("management"),
        s.endpoint("subscription_id")
    );
    let r = s
        .http()?
        .put(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"location": "eastus"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    assert_eq!(s.stop()?, Some(0));

    let root = coffer_server::bootstrap::unseal(&dir, &dir.join("seal.key"))?;
    let store = coffer_store_sqlite::SqliteStore::open(&dir.join("coffer.db")).await?;
    let ca_key = coffer_server::tls::unseal_ca_key(&store, &root).await?;
    let signing = coffer_server::bootstrap::unseal_signing_key(&store, &root).await?;
    store.close().await;

    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, secret: &[u8]| {
        for e in encodings(secret) {
            needles.push((name.to_string(), e));
        }
    };
    add("root key", root.expose_bytes());
    add("CA private key", ca_key.expose());
    add("token signing key", signing.expose());
    // The private scalar inside the CA key's PKCS#8 (the last 32 bytes of the EC private key
    // are not at a fixed offset, so search any 32-byte window of the DER's tail instead).
    add("CA key tail", &ca_key.expose()[ca_key.len() - 32..]);
    for k in ["client_secret", "password"] {
        add(k, creds[k].as_str().unwrap_or("missing").as_bytes());
    }
    add(
        "new SP secret",
        sp["client_secret"].as_str().unwrap_or("missing").as_bytes(),
    );

    let files = files_under(&dir);
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        if f.file_name().is_some_and(|n| n == "admin-credentials.json") {
            continue;
        }
        let bytes = std::fs::read(&f)?;
        for (name, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{name} found in clear in {}",
                f.display()
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn restart_keeps_identity_and_data() -> anyhow::Result<()> {
    let mut s = TestServer::start(&bin(), &[])?;
    let tenant = s.endpoint("tenant_id");
    let sub = s.endpoint("subscription_id");
    let token = s.admin_token().await?;
    let url = format!(
        "{}/subscriptions/{sub}/resourcegroups/keep?api-version=2024-11-01",
        s.endpoint("management")
    );
    let r = s
        .http()?
        .put(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"location": "westus"}))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    s.restart()?;
    assert_eq!(s.endpoint("tenant_id"), tenant);
    assert_eq!(s.endpoint("subscription_id"), sub);
    // The old token is still valid (the issuer does not depend on the port).
    let url = format!(
        "{}/subscriptions/{sub}/resourcegroups/keep?api-version=2024-11-01",
        s.endpoint("management")
    );
    let r = s.http()?.get(&url).bearer_auth(&token).send().await?;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await?;
    assert_eq!(v["location"], "westus");
    assert_eq!(s.stop()?, Some(0));
    Ok(())
}

#[tokio::test]
async fn status_subscription_and_completions_commands() -> anyhow::Result<()> {
    let s = TestServer::start(&bin(), &["--regions", "eastus,westeurope"])?;
    let dir = s.data_dir();
    let dir = dir.to_str().unwrap_or_default();
    let st = coffer(&["status", "--data-dir", dir], None)?;
    assert_eq!(st["ready"], true, "{st}");
    assert_eq!(st["sealed"], false);
    assert_eq!(st["regions"], serde_json::json!(["eastus", "westeurope"]));
    assert_eq!(st["unhealthyCustomerManagedKeys"], serde_json::json!([]));
    assert_eq!(st["management"], s.endpoints["management"]);
    let sub = coffer(
        &[
            "subscription",
            "create",
            "--name",
            "Team keys",
            "--data-dir",
            dir,
        ],
        None,
    )?;
    let id = sub["subscriptionId"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 36, "{sub}");
    assert_ne!(id, s.endpoint("subscription_id"));
    let out = Command::new(bin()).args(["completions", "bash"]).output()?;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_coffer"));
    Ok(())
}
