//! The everyday client commands against a real server, driven by the `coffer` binary alone:
//! the whole customer-managed-key flow (vault with purge protection, key, account with a
//! system-assigned identity, role for that identity, CMK on, upload, key disabled → download
//! refused with Azure's code and a non-zero exit, key enabled → the same bytes), large-file
//! round trips matched by SHA-256, piping, an interrupted download that resumes, and the
//! output, error and exit-code contract.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use coffer_testkit::TestServer;
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coffer"))
}

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Out {
    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.stdout).map_err(|e| {
            anyhow::anyhow!(
                "not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `coffer` as the local administrator of one server.
struct Cli {
    dir: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("COFFER_DATA_DIR", &self.dir)
            .env_remove("AZURE_STORAGE_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn run_with(&self, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Out> {
        let mut child = self
            .command(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let data = data.to_vec();
            // Written from a thread: the child may fill its stdout pipe meanwhile.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        let out = child.wait_with_output()?;
        Ok(Out {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<Out> {
        self.run_with(args, None)
    }

    /// Run, require success, parse standard output as JSON.
    fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = self.run(args)?;
        anyhow::ensure!(
            out.code == 0,
            "coffer {args:?} exited with {}: {}",
            out.code,
            out.stderr
        );
        out.json()
    }

    /// Run, require success, the trimmed standard output.
    fn tsv(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run(args)?;
        anyhow::ensure!(
            out.code == 0,
            "coffer {args:?} exited with {}: {}",
            out.code,
            out.stderr
        );
        Ok(out.text().trim().to_string())
    }
}

fn start() -> anyhow::Result<(TestServer, Cli)> {
    let s = TestServer::start(&bin(), &[])?;
    let cli = Cli { dir: s.data_dir() };
    Ok((s, cli))
}

fn sha256_file(p: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(p)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().to_vec())
}

/// A file of `size` random bytes; its SHA-256.
fn random_file(p: &Path, size: usize) -> anyhow::Result<Vec<u8>> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(p)?);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        aws_lc_rs::rand::fill(&mut buf[..n]).map_err(|_| anyhow::anyhow!("rand"))?;
        ctx.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n;
    }
    f.flush()?;
    Ok(ctx.finish().as_ref().to_vec())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[tokio::test]
async fn cmk_flow_driven_by_the_cli_alone() -> anyhow::Result<()> {
    let (_server, cli) = start()?;
    let tmp = tempfile::tempdir()?;

    let group = cli.json(&[
        "group", "create", "-n", "rg-cmk", "-l", "eastus", "-o", "json",
    ])?;
    assert_eq!(
        group["properties"]["provisioningState"], "Succeeded",
        "{group}"
    );

    // The vault, with purge protection; --grant-self gives the administrator (Owner of the
    // subscription, no data actions) Key Vault Crypto Officer on it.
    let vault = cli.json(&[
        "keyvault",
        "create",
        "-g",
        "rg-cmk",
        "-n",
        "kv-cmk-cli",
        "-l",
        "eastus",
        "--enable-purge-protection",
        "true",
        "--retention-days",
        "7",
        "--grant-self",
        "-o",
        "json",
    ])?;
    assert_eq!(
        vault["properties"]["enablePurgeProtection"], true,
        "{vault}"
    );
    let vault_id = s(&vault["id"]).to_string();
    let vault_uri = s(&vault["properties"]["vaultUri"]).to_string();
    assert!(
        vault_uri.starts_with("https://kv-cmk-cli.vault."),
        "{vault}"
    );
    let me = cli.tsv(&["account", "show", "--query", "user.objectId", "-o", "tsv"])?;
    let mine = cli.json(&[
        "role",
        "assignment",
        "list",
        "--scope",
        &vault_id,
        "--assignee-object-id",
        &me,
        "-o",
        "json",
    ])?;
    assert!(
        mine.as_array().is_some_and(|a| a
            .iter()
            .any(|r| r["roleDefinitionName"] == "Key Vault Crypto Officer")),
        "{mine}"
    );

    let key = cli.json(&[
        "keyvault",
        "key",
        "create",
        "--vault-name",
        "kv-cmk-cli",
        "-n",
        "cmk",
        "--kty",
        "RSA",
        "--size",
        "2048",
        "-o",
        "json",
    ])?;
    let kid = s(&key["key"]["kid"]).to_string();
    assert!(kid.starts_with(&format!("{}keys/cmk/", vault_uri)), "{key}");

    // The account with a system-assigned identity, and that identity's role on the vault.
    let account = cli.json(&[
        "storage",
        "account",
        "create",
        "-g",
        "rg-cmk",
        "-n",
        "cmkcliacct",
        "-l",
        "eastus",
        "--sku",
        "Standard_LRS",
        "--kind",
        "StorageV2",
        "--assign-identity",
        "-o",
        "json",
    ])?;
    assert_eq!(account["identity"]["type"], "SystemAssigned", "{account}");
    let principal = s(&account["identity"]["principalId"]).to_string();
    assert!(!principal.is_empty(), "{account}");
    let assignment = cli.json(&[
        "role",
        "assignment",
        "create",
        "--assignee-object-id",
        &principal,
        "--role",
        "Key Vault Crypto Service Encryption User",
        "--scope",
        &vault_id,
        "-o",
        "json",
    ])?;
    assert_eq!(
        assignment["principalId"],
        principal.as_str(),
        "{assignment}"
    );
    assert!(
        s(&assignment["roleDefinitionId"])
            .to_ascii_lowercase()
            .ends_with("e147488a-f6f5-4113-8e2d-b22465e65bf6"),
        "{assignment}"
    );

    // Assigning it again is not an error: the existing assignment comes back.
    let again = cli.json(&[
        "role",
        "assignment",
        "create",
        "--assignee-object-id",
        &principal,
        "--role",
        "e147488a-f6f5-4113-8e2d-b22465e65bf6",
        "--scope",
        &vault_id,
        "-o",
        "json",
    ])?;
    assert_eq!(again["id"], assignment["id"], "{again}");

    // Customer-managed key on.
    let updated = cli.json(&[
        "storage",
        "account",
        "update",
        "-g",
        "rg-cmk",
        "-n",
        "cmkcliacct",
        "--encryption-key-source",
        "Microsoft.Keyvault",
        "--encryption-key-vault",
        &vault_uri,
        "--encryption-key-name",
        "cmk",
        "-o",
        "json",
    ])?;
    let enc = &updated["properties"]["encryption"];
    assert_eq!(enc["keySource"], "Microsoft.Keyvault", "{updated}");
    assert_eq!(
        enc["keyvaultproperties"]["currentVersionedKeyIdentifier"],
        kid.as_str(),
        "{updated}"
    );
    let status = cli.json(&[
        "storage",
        "account",
        "cmk-status",
        "-n",
        "cmkcliacct",
        "-o",
        "json",
    ])?;
    assert_eq!(status["keySource"], "Microsoft.Keyvault", "{status}");
    assert_eq!(status["keyVaultProperties"]["keyname"], "cmk", "{status}");
    assert_eq!(status["cmkHealth"]["status"], "Healthy", "{status}");

    // A container and a blob under the customer-managed key.
    let created = cli.json(&[
        "storage",
        "container",
        "create",
        "--account-name",
        "cmkcliacct",
        "-n",
        "secrets",
        "-o",
        "json",
    ])?;
    assert_eq!(created, serde_json::json!({"created": true}));
    let src = tmp.path().join("payload.bin");
    let sha = random_file(&src, 3 * 1024 * 1024 + 17)?;
    let src_s = src.to_string_lossy().into_owned();
    let up = cli.json(&[
        "storage",
        "blob",
        "upload",
        "--account-name",
        "cmkcliacct",
        "-c",
        "secrets",
        "-n",
        "payload.bin",
        "-f",
        &src_s,
        "-o",
        "json",
    ])?;
    assert_eq!(up["contentLength"], 3 * 1024 * 1024 + 17, "{up}");
    let dest = tmp.path().join("download.bin");
    let dest_s = dest.to_string_lossy().into_owned();
    let download = [
        "storage",
        "blob",
        "download",
        "--account-name",
        "cmkcliacct",
        "-c",
        "secrets",
        "-n",
        "payload.bin",
        "-f",
        dest_s.as_str(),
        "-o",
        "json",
    ];
    cli.json(&download)?;
    assert_eq!(sha256_file(&dest)?, sha);
    std::fs::remove_file(&dest)?;

    // Disable the key: the download fails with Azure's code, exit code 5 (refused), nothing
    // on standard output, no file.
    let disabled = cli.json(&[
        "keyvault",
        "key",
        "set-attributes",
        "--vault-name",
        "kv-cmk-cli",
        "-n",
        "cmk",
        "--enabled",
        "false",
        "-o",
        "json",
    ])?;
    assert_eq!(disabled["attributes"]["enabled"], false, "{disabled}");
    let failed = cli.run(&download)?;
    assert_eq!(failed.code, 5, "stderr: {}", failed.stderr);
    assert!(
        failed.stderr.contains("KeyVaultEncryptionKeyNotFound"),
        "stderr: {}",
        failed.stderr
    );
    assert!(failed.stdout.is_empty(), "stdout: {}", failed.text());
    assert!(!dest.exists());
    assert_eq!(
        cli.tsv(&[
            "storage",
            "account",
            "cmk-status",
            "-n",
            "cmkcliacct",
            "--query",
            "cmkHealth.status",
            "-o",
            "tsv"
        ])?,
        "KeyDisabled"
    );

    // Enable it again: the same bytes come back.
    let enabled = cli.json(&[
        "keyvault",
        "key",
        "set-attributes",
        "--vault-name",
        "kv-cmk-cli",
        "-n",
        "cmk",
        "--enabled",
        "true",
        "-o",
        "json",
    ])?;
    assert_eq!(enabled["attributes"]["enabled"], true, "{enabled}");
    cli.json(&download)?;
    assert_eq!(sha256_file(&dest)?, sha);

    // Rotate: the account follows the new version, the blob still reads.
    let rotated = cli.json(&[
        "keyvault",
        "key",
        "rotate",
        "--vault-name",
        "kv-cmk-cli",
        "-n",
        "cmk",
        "-o",
        "json",
    ])?;
    let new_kid = s(&rotated["key"]["kid"]).to_string();
    assert_ne!(new_kid, kid);
    assert_eq!(
        cli.tsv(&[
            "storage",
            "account",
            "show",
            "-n",
            "cmkcliacct",
            "--query",
            "properties.encryption.keyvaultproperties.currentVersionedKeyIdentifier",
            "-o",
            "tsv",
        ])?,
        new_kid
    );
    std::fs::remove_file(&dest)?;
    cli.json(&download)?;
    assert_eq!(sha256_file(&dest)?, sha);

    // Listing shows the blob; the identity's assignment can be deleted again.
    let blobs = cli.json(&[
        "storage",
        "blob",
        "list",
        "--account-name",
        "cmkcliacct",
        "-c",
        "secrets",
        "-o",
        "json",
    ])?;
    assert_eq!(blobs[0]["name"], "payload.bin", "{blobs}");
    assert_eq!(
        blobs[0]["properties"]["contentLength"],
        3 * 1024 * 1024 + 17,
        "{blobs}"
    );
    let del = cli.run(&[
        "role",
        "assignment",
        "delete",
        "--assignee-object-id",
        &principal,
        "--role",
        "Key Vault Crypto Service Encryption User",
        "--scope",
        &vault_id,
    ])?;
    assert_eq!(del.code, 0, "{}", del.stderr);
    let cut = cli.run(&download)?;
    assert_eq!(cut.code, 5, "{}", cut.stderr);
    Ok(())
}

/// An account (platform key) with a container, for the transfer tests.
fn storage(cli: &Cli) -> anyhow::Result<()> {
    cli.json(&[
        "group", "create", "-n", "rg-big", "-l", "eastus", "-o", "json",
    ])?;
    cli.json(&[
        "storage", "account", "create", "-g", "rg-big", "-n", "bigacct", "-o", "json",
    ])?;
    cli.json(&[
        "storage",
        "container",
        "create",
        "--account-name",
        "bigacct",
        "-n",
        "big",
        "-o",
        "json",
    ])?;
    Ok(())
}

#[tokio::test]
async fn large_files_round_trip_pipe_and_resume() -> anyhow::Result<()> {
    let (_server, cli) = start()?;
    let tmp = tempfile::tempdir()?;
    storage(&cli)?;
    const SIZE: usize = 200 * 1024 * 1024 + 12_345;
    let src = tmp.path().join("big.bin");
    let sha = random_file(&src, SIZE)?;
    let src_s = src.to_string_lossy().into_owned();

    let t = Instant::now();
    let up = cli.json(&[
        "storage",
        "blob",
        "upload",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "big.bin",
        "-f",
        &src_s,
        "-o",
        "json",
    ])?;
    assert_eq!(up["contentLength"], SIZE, "{up}");
    assert!(up["blocks"].as_u64().is_some_and(|b| b > 1), "{up}");
    eprintln!("upload of {SIZE} bytes: {:?}", t.elapsed());

    // Whole download: same SHA-256.
    let dest = tmp.path().join("back.bin");
    let dest_s = dest.to_string_lossy().into_owned();
    let t = Instant::now();
    let down = cli.json(&[
        "storage",
        "blob",
        "download",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "big.bin",
        "-f",
        &dest_s,
        "-o",
        "json",
    ])?;
    eprintln!("download: {:?}", t.elapsed());
    assert_eq!(down["contentLength"], SIZE, "{down}");
    assert_eq!(sha256_file(&dest)?, sha);
    std::fs::remove_file(&dest)?;

    // Interrupted: killed once the part file holds some data, then run again: it resumes
    // (says so on standard error) and the result matches.
    let mut child = cli
        .command(&[
            "storage",
            "blob",
            "download",
            "--account-name",
            "bigacct",
            "-c",
            "big",
            "-n",
            "big.bin",
            "-f",
            &dest_s,
            "--max-connections",
            "1",
            "--block-size",
            "1",
            "-o",
            "json",
        ])
        .stdin(Stdio::null())
        .spawn()?;
    let part = tmp.path().join("back.bin.coffer-part");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::fs::metadata(&part).is_ok_and(|m| m.len() >= 16 * 1024 * 1024) {
            child.kill()?;
            break;
        }
        if let Some(st) = child.try_wait()? {
            anyhow::bail!("the download ended ({st}) before it could be interrupted");
        }
        anyhow::ensure!(Instant::now() < deadline, "the download made no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.wait()?;
    assert!(!dest.exists());
    let resumed = cli.run(&[
        "storage",
        "blob",
        "download",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "big.bin",
        "-f",
        &dest_s,
        "-o",
        "json",
    ])?;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed.stderr.contains("resuming the download"),
        "{}",
        resumed.stderr
    );
    let v = resumed.json()?;
    assert!(
        v["resumedAt"]
            .as_u64()
            .is_some_and(|n| n >= 16 * 1024 * 1024),
        "{v}"
    );
    assert_eq!(sha256_file(&dest)?, sha);
    assert!(!part.exists());

    // Piping: standard input up, standard output down.
    let data = std::fs::read(&src)?;
    let piped = data[..40 * 1024 * 1024 + 3].to_vec();
    let up = cli.run_with(
        &[
            "storage",
            "blob",
            "upload",
            "--account-name",
            "bigacct",
            "-c",
            "big",
            "-n",
            "piped.bin",
            "-f",
            "-",
            "-o",
            "json",
        ],
        Some(&piped),
    )?;
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert_eq!(up.json()?["contentLength"], piped.len());
    let down = cli.run(&[
        "storage",
        "blob",
        "download",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "piped.bin",
        "-f",
        "-",
    ])?;
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert!(
        down.stdout == piped,
        "piped bytes differ ({} vs {} bytes)",
        down.stdout.len(),
        piped.len()
    );

    // Without --overwrite an existing blob is refused (exit 6); with it, replaced.
    let again = cli.run(&[
        "storage",
        "blob",
        "upload",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "piped.bin",
        "-f",
        &src_s,
    ])?;
    assert_eq!(again.code, 6, "{}", again.stderr);
    assert!(
        again.stderr.contains("BlobAlreadyExists"),
        "{}",
        again.stderr
    );
    let small = tmp.path().join("small.bin");
    let small_sha = random_file(&small, 1000)?;
    let small_s = small.to_string_lossy().into_owned();
    cli.json(&[
        "storage",
        "blob",
        "upload",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "piped.bin",
        "-f",
        &small_s,
        "--overwrite",
        "-o",
        "json",
    ])?;
    let down = cli.run(&[
        "storage",
        "blob",
        "download",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "piped.bin",
        "-f",
        "-",
    ])?;
    assert_eq!(
        digest::digest(&digest::SHA256, &down.stdout).as_ref(),
        small_sha.as_slice()
    );

    // Delete, then it is gone (exit 4).
    let del = cli.run(&[
        "storage",
        "blob",
        "delete",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "piped.bin",
    ])?;
    assert_eq!(del.code, 0, "{}", del.stderr);
    let gone = cli.run(&[
        "storage",
        "blob",
        "download",
        "--account-name",
        "bigacct",
        "-c",
        "big",
        "-n",
        "piped.bin",
        "-f",
        "-",
    ])?;
    assert_eq!(gone.code, 4, "{}", gone.stderr);
    assert!(gone.stderr.contains("BlobNotFound"), "{}", gone.stderr);
    Ok(())
}

#[tokio::test]
async fn output_formats_errors_and_exit_codes() -> anyhow::Result<()> {
    let (_server, cli) = start()?;
    cli.json(&[
        "group", "create", "-n", "rg-out", "-l", "eastus", "-o", "json",
    ])?;

    // JSON by default when piped; --query; tsv; table.
    let groups = cli.json(&["group", "list"])?;
    assert!(
        groups
            .as_array()
            .is_some_and(|a| a.iter().any(|g| g["name"] == "rg-out")),
        "{groups}"
    );
    assert_eq!(
        cli.json(&["group", "show", "-n", "rg-out", "--query", "location"])?,
        "eastus"
    );
    assert_eq!(
        cli.tsv(&[
            "group", "show", "-n", "rg-out", "--query", "name", "-o", "tsv"
        ])?,
        "rg-out"
    );
    let table = cli.tsv(&["group", "list", "-o", "table"])?;
    let mut lines = table.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("Name") && h.contains("Location")),
        "{table}"
    );
    assert!(
        lines.next().is_some_and(|d| d.starts_with("----")),
        "{table}"
    );
    assert!(table.contains("rg-out"), "{table}");
    let none = cli.run(&["group", "show", "-n", "rg-out", "-o", "none"])?;
    assert_eq!((none.code, none.stdout.len()), (0, 0));

    // Not found: exit 4, Azure's code on standard error, nothing on standard output.
    let missing = cli.run(&["group", "show", "-n", "no-such-group"])?;
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("(ResourceGroupNotFound)"),
        "{}",
        missing.stderr
    );
    assert!(missing.stdout.is_empty());
    let no_vault = cli.run(&["keyvault", "show", "-n", "no-such-vault"])?;
    assert_eq!(no_vault.code, 4, "{}", no_vault.stderr);

    // The vault exists but the administrator holds no data role on it: refused, exit 5.
    cli.json(&[
        "keyvault", "create", "-g", "rg-out", "-n", "kv-out-1", "-o", "json",
    ])?;
    let denied = cli.run(&["keyvault", "key", "list", "--vault-name", "kv-out-1"])?;
    assert_eq!(denied.code, 5, "{}", denied.stderr);

    // Usage errors: exit 2.
    let usage = cli.run(&["storage", "account", "update", "-n", "x"])?;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    let usage = cli.run(&[
        "storage",
        "account",
        "update",
        "-n",
        "x",
        "--encryption-key-source",
        "Microsoft.Keyvault",
    ])?;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    assert!(
        usage.stderr.contains("--encryption-key-vault"),
        "{}",
        usage.stderr
    );
    let bad_flag = cli.run(&["group", "create", "--nope"])?;
    assert_eq!(bad_flag.code, 2);
    let bad_query = cli.run(&["group", "list", "--query", "a..b"])?;
    assert_ne!(bad_query.code, 0);

    // Keys: create, list, show, delete, recover; purge protection refuses purge.
    cli.json(&[
        "keyvault",
        "create",
        "-g",
        "rg-out",
        "-n",
        "kv-out-2",
        "--enable-purge-protection",
        "--retention-days",
        "7",
        "--grant-self",
        "-o",
        "json",
    ])?;
    let kv = ["--vault-name", "kv-out-2"];
    let ec = cli.json(
        &[
            &["keyvault", "key", "create"][..],
            &kv,
            &["-n", "ec1", "--kty", "EC", "--curve", "P-256", "-o", "json"],
        ]
        .concat(),
    )?;
    assert_eq!(ec["key"]["kty"], "EC", "{ec}");
    let exp = cli.json(
        &[
            &["keyvault", "key", "create"][..],
            &kv,
            &["-n", "rsa1", "--expires", "2031-01-01", "-o", "json"],
        ]
        .concat(),
    )?;
    assert_eq!(exp["attributes"]["exp"], 1_924_992_000, "{exp}");
    let names = cli.json(
        &[
            &["keyvault", "key", "list"][..],
            &kv,
            &["--query", "[].kid"],
        ]
        .concat(),
    )?;
    assert_eq!(names.as_array().map(Vec::len), Some(2), "{names}");
    let deleted = cli.json(
        &[
            &["keyvault", "key", "delete"][..],
            &kv,
            &["-n", "rsa1", "-o", "json"],
        ]
        .concat(),
    )?;
    assert!(
        s(&deleted["recoveryId"]).ends_with("/deletedkeys/rsa1"),
        "{deleted}"
    );
    let purge = cli.run(&[&["keyvault", "key", "purge"][..], &kv, &["-n", "rsa1"]].concat())?;
    assert_ne!(purge.code, 0, "purge succeeded despite purge protection");
    let recovered = cli.json(
        &[
            &["keyvault", "key", "recover"][..],
            &kv,
            &["-n", "rsa1", "-o", "json"],
        ]
        .concat(),
    )?;
    assert!(
        s(&recovered["key"]["kid"]).contains("/keys/rsa1/"),
        "{recovered}"
    );
    let shown = cli.tsv(
        &[
            &["keyvault", "key", "show"][..],
            &kv,
            &["-n", "rsa1", "--query", "attributes.enabled", "-o", "tsv"],
        ]
        .concat(),
    )?;
    assert_eq!(shown, "true");

    // Import (an oct key from a private JWK file).
    let tmp = tempfile::tempdir()?;
    let jwk = tmp.path().join("k.jwk.json");
    std::fs::write(
        &jwk,
        r#"{"kty":"oct","k":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}"#,
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&jwk, std::fs::Permissions::from_mode(0o600))?;
    }
    let jwk_s = jwk.to_string_lossy().into_owned();
    let imported = cli.json(
        &[
            &["keyvault", "key", "import"][..],
            &kv,
            &[
                "-n",
                "byok",
                "--jwk-file",
                &jwk_s,
                "--ops",
                "wrapKey",
                "unwrapKey",
                "-o",
                "json",
            ],
        ]
        .concat(),
    )?;
    assert_eq!(imported["key"]["kty"], "oct", "{imported}");
    assert!(
        imported["key"]["k"].is_null(),
        "the key material came back: {imported}"
    );
    assert_eq!(
        imported["key"]["key_ops"],
        serde_json::json!(["wrapKey", "unwrapKey"]),
        "{imported}"
    );

    // Every command's --help has an example.
    for path in [
        &["group", "create"][..],
        &["group", "list"],
        &["group", "show"],
        &["group", "delete"],
        &["keyvault", "create"],
        &["keyvault", "list"],
        &["keyvault", "show"],
        &["keyvault", "delete"],
        &["keyvault", "key", "create"],
        &["keyvault", "key", "import"],
        &["keyvault", "key", "list"],
        &["keyvault", "key", "list-versions"],
        &["keyvault", "key", "list-deleted"],
        &["keyvault", "key", "show"],
        &["keyvault", "key", "show-deleted"],
        &["keyvault", "key", "rotate"],
        &["keyvault", "key", "set-attributes"],
        &["keyvault", "key", "delete"],
        &["keyvault", "key", "recover"],
        &["keyvault", "key", "purge"],
        &["keyvault", "key", "rotation-policy", "show"],
        &["keyvault", "key", "rotation-policy", "update"],
        &["role", "assignment", "create"],
        &["role", "assignment", "list"],
        &["role", "assignment", "delete"],
        &["role", "definition", "list"],
        &["storage", "account", "create"],
        &["storage", "account", "show"],
        &["storage", "account", "list"],
        &["storage", "account", "update"],
        &["storage", "account", "delete"],
        &["storage", "account", "cmk-status"],
        &["storage", "container", "create"],
        &["storage", "container", "list"],
        &["storage", "container", "delete"],
        &["storage", "blob", "upload"],
        &["storage", "blob", "download"],
        &["storage", "blob", "list"],
        &["storage", "blob", "delete"],
        &["account", "show"],
    ] {
        let help = cli.run(&[path, &["--help"][..]].concat())?;
        assert_eq!(help.code, 0, "{path:?}");
        assert!(
            help.text().contains("Example: coffer "),
            "no example in `coffer {} --help`",
            path.join(" ")
        );
    }
    let top = cli.run(&["--help"])?;
    assert!(top.text().contains("Exit codes:"), "{}", top.text());
    Ok(())
}
