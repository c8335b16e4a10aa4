//! `coffer login` profiles: a service principal signs in with its secret from an environment
//! variable, a private file or standard input (never a flag value); the profile and its
//! token cache are mode 0600 and never hold the secret; commands run as the profile; an
//! expired token with no secret source asks to sign in again; `coffer logout` forgets it.
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use coffer_testkit::TestServer;
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coffer"))
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `coffer` with a private config directory and no data directory in its environment.
fn run(
    config: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> anyhow::Result<Out> {
    let mut c = Command::new(bin());
    c.args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("COFFER_DATA_DIR")
        .env_remove("COFFER_PROFILE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn()?;
    if let (Some(s), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(s.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn ok_json(o: Out, what: &str) -> anyhow::Result<Value> {
    anyhow::ensure!(o.code == 0, "{what} exited with {}: {}", o.code, o.stderr);
    Ok(serde_json::from_str(&o.stdout)?)
}

fn mode(p: &Path) -> anyhow::Result<u32> {
    Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
}

#[tokio::test]
async fn login_profiles_keep_no_secret_and_cache_tokens_privately() -> anyhow::Result<()> {
    let server = TestServer::start(&bin(), &[])?;
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("config");
    let dir = server.data_dir();
    let dir_s = dir.to_string_lossy().into_owned();

    // A service principal, Owner of the subscription (created as the local administrator).
    let sp = ok_json(
        run(
            &config,
            &[
                "sp",
                "create",
                "--name",
                "ops",
                "--data-dir",
                &dir_s,
                "-o",
                "json",
            ],
            &[],
            None,
        )?,
        "sp create",
    )?;
    let (client_id, secret, oid) = (
        sp["client_id"].as_str().unwrap_or_default().to_string(),
        sp["client_secret"].as_str().unwrap_or_default().to_string(),
        sp["object_id"].as_str().unwrap_or_default().to_string(),
    );
    ok_json(
        run(
            &config,
            &[
                "role",
                "assignment",
                "create",
                "--assignee-object-id",
                &oid,
                "--role",
                "Owner",
                "--data-dir",
                &dir_s,
                "-o",
                "json",
            ],
            &[],
            None,
        )?,
        "role assignment create",
    )?;

    let management = server.endpoint("management");
    let tenant = server.endpoint("tenant_id");
    let ca = server.endpoint("ca_cert");
    let login = |profile: &str, extra: &[&str], env: &[(&str, &str)], stdin: Option<&str>| {
        let mut args = vec![
            "login",
            "--profile",
            profile,
            "--endpoint",
            management.as_str(),
            "--tenant",
            tenant.as_str(),
            "-u",
            client_id.as_str(),
            "--ca-file",
            ca.as_str(),
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        run(&config, &args, env, stdin)
    };

    // A secret file others can read is refused.
    let loose = tmp.path().join("loose-secret");
    std::fs::write(&loose, format!("{secret}\n"))?;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644))?;
    let refused = login(
        "ops",
        &["--secret-file", loose.to_str().unwrap_or_default()],
        &[],
        None,
    )?;
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("chmod 600"), "{}", refused.stderr);

    // From an environment variable.
    let me = ok_json(
        login(
            "ops",
            &["--secret-env", "OPS_SECRET"],
            &[("OPS_SECRET", &secret)],
            None,
        )?,
        "login",
    )?;
    assert_eq!(me["id"], server.endpoint("subscription_id"), "{me}");
    assert_eq!(me["user"]["objectId"], oid.as_str(), "{me}");

    // Commands run as the profile: named, and as the default.
    let g = ok_json(
        run(
            &config,
            &[
                "group",
                "create",
                "-n",
                "rg-ops",
                "-l",
                "eastus",
                "--profile",
                "ops",
                "-o",
                "json",
            ],
            &[("OPS_SECRET", &secret)],
            None,
        )?,
        "group create",
    )?;
    assert_eq!(g["name"], "rg-ops");
    let shown = ok_json(
        run(&config, &["account", "show", "-o", "json"], &[], None)?,
        "account show",
    )?;
    assert_eq!(shown["user"]["objectId"], oid.as_str(), "{shown}");
    // The tokens are cached: no secret needed while they are valid.
    let groups = ok_json(
        run(&config, &["group", "list", "-o", "json"], &[], None)?,
        "group list",
    )?;
    assert!(
        groups
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "rg-ops")),
        "{groups}"
    );

    // Files: private, and without the secret.
    let cdir = config.join("coffer");
    let profiles = cdir.join("profiles.json");
    let tokens = cdir.join("tokens").join("ops.json");
    assert_eq!(mode(&profiles)?, 0o600);
    assert_eq!(mode(&tokens)?, 0o600);
    assert_eq!(mode(&cdir)?, 0o700);
    for f in [&profiles, &tokens] {
        let text = std::fs::read_to_string(f)?;
        assert!(!text.contains(&secret), "{} holds the secret", f.display());
    }
    assert!(std::fs::read_to_string(&profiles)?.contains("OPS_SECRET"));

    // From standard input: the secret is not kept, so once the cached tokens have expired
    // the profile must sign in again.
    let piped = ok_json(
        login(
            "piped",
            &["--secret-stdin"],
            &[],
            Some(&format!("{secret}\n")),
        )?,
        "login",
    )?;
    assert_eq!(piped["profile"], "piped");
    let listed = run(
        &config,
        &["group", "list", "--profile", "piped", "-o", "json"],
        &[],
        None,
    )?;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let cache = cdir.join("tokens").join("piped.json");
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(&cache)?)?;
    if let Some(m) = t.as_object_mut() {
        for v in m.values_mut() {
            v["expiresOn"] = serde_json::json!(1);
        }
    }
    std::fs::write(&cache, t.to_string())?;
    let expired = run(&config, &["group", "list", "--profile", "piped"], &[], None)?;
    assert_eq!(expired.code, 1, "{}", expired.stderr);
    assert!(
        expired.stderr.contains("coffer login --profile piped"),
        "{}",
        expired.stderr
    );
    // The env-sourced profile renews its tokens by itself.
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(&tokens)?)?;
    if let Some(m) = t.as_object_mut() {
        for v in m.values_mut() {
            v["expiresOn"] = serde_json::json!(1);
        }
    }
    std::fs::write(&tokens, t.to_string())?;
    let renewed = run(
        &config,
        &[
            "group",
            "show",
            "-n",
            "rg-ops",
            "--profile",
            "ops",
            "-o",
            "json",
        ],
        &[("OPS_SECRET", &secret)],
        None,
    )?;
    assert_eq!(renewed.code, 0, "{}", renewed.stderr);

    // Logout forgets the profile and its tokens.
    let out = run(&config, &["logout", "--profile", "ops"], &[], None)?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!tokens.exists());
    let gone = run(&config, &["group", "list", "--profile", "ops"], &[], None)?;
    assert_ne!(gone.code, 0);
    assert!(
        gone.stderr.contains("no profile named 'ops'"),
        "{}",
        gone.stderr
    );
    Ok(())
}
