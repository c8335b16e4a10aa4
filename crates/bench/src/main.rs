//! Key Vault wrap/unwrap throughput over HTTPS against a real server, beside the raw
//! aws-lc-rs rate of the same operation on the same machine (the crypto limit).
//!
//! `cargo run --release -p coffer-bench -- --seconds 5 --concurrency 8`
//! starts `target/release/coffer` on port 0, creates a vault and keys, then drives
//! `POST /keys/{name}/{version}/{wrapkey|unwrapkey}` with keep-alive connections.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey,
};
use clap::Parser;
use coffer_crypto::b64;
use coffer_testkit::TestServer;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// The coffer binary.
    #[arg(long, default_value = "target/release/coffer")]
    bin: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent requests in flight (each on its own keep-alive connection).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Give the server CPU 0 and this load generator CPU 1 (`taskset`), so that the load
    /// generator does not share the server's core; the crypto limit is then the raw rate of
    /// one thread on CPU 0.
    #[arg(long)]
    pin: bool,
    /// Only these keys (comma-separated labels: RSA-2048,RSA-3072,RSA-4096,AES-256).
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
    /// Internal (used by `--pin`): print the raw aws-lc-rs rate of `LABEL:OP` and exit.
    #[arg(long, hide = true)]
    raw: Option<String>,
    /// Threads for `--raw`.
    #[arg(long, hide = true, default_value_t = 1)]
    raw_threads: usize,
}

struct Stats {
    ops: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Raw aws-lc-rs RSA-OAEP-256 decryption rate with `threads` threads (parsed key, no I/O).
fn raw_rsa_unwrap(bits: KeySize, threads: usize, secs: u64) -> anyhow::Result<f64> {
    let key = PrivateDecryptingKey::generate(bits).map_err(|_| anyhow::anyhow!("keygen"))?;
    let public =
        OaepPublicEncryptingKey::new(key.public_key()).map_err(|_| anyhow::anyhow!("pub"))?;
    let mut ct = vec![0u8; public.ciphertext_size()];
    let n = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut ct, None)
        .map_err(|_| anyhow::anyhow!("enc"))?
        .len();
    ct.truncate(n);
    let key = Arc::new(OaepPrivateDecryptingKey::new(key).map_err(|_| anyhow::anyhow!("oaep"))?);
    let ct = Arc::new(ct);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (key, ct) = (key.clone(), ct.clone());
            std::thread::spawn(move || {
                let mut out = vec![0u8; 1024];
                let mut count = 0u64;
                while Instant::now() < deadline {
                    if key
                        .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut out, None)
                        .is_ok()
                    {
                        count += 1;
                    }
                }
                count
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    Ok(total as f64 / secs as f64)
}

/// Raw AES-256 key wrap rate (RFC 3394) with `threads` threads.
fn raw_kw(threads: usize, secs: u64, unwrap: bool) -> f64 {
    use aws_lc_rs::key_wrap::{AES_256, KeyEncryptionKey, KeyWrap};
    let kek = [9u8; 32];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let mut count = 0u64;
                let mut out = [0u8; 48];
                let mut wrapped = [0u8; 40];
                if let Ok(k) = KeyEncryptionKey::new(&AES_256, &kek)
                    && let Ok(w) = k.wrap(&[1u8; 32], &mut wrapped)
                {
                    let w = w.to_vec();
                    while Instant::now() < deadline {
                        let Ok(k) = KeyEncryptionKey::new(&AES_256, &kek) else {
                            break;
                        };
                        let ok = if unwrap {
                            k.unwrap(&w, &mut out).is_ok()
                        } else {
                            k.wrap(&[1u8; 32], &mut out).is_ok()
                        };
                        if ok {
                            count += 1;
                        }
                    }
                }
                count
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / secs as f64
}

async fn load(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Value,
    conc: usize,
    secs: u64,
) -> anyhow::Result<Stats> {
    let body = Arc::new(body.to_string());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (c, url, token, body) = (
            client.clone(),
            url.to_string(),
            token.to_string(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = c
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    all.sort_unstable();
    Ok(Stats {
        ops: all.len() as f64 / secs as f64,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    })
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks: f64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the ")" of the command name; utime and stime are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0)
}

/// The raw aws-lc-rs rate of `op` with the key of `label`, or NaN where there is no raw
/// counterpart (RSA wrap is a public-key operation, not the limit).
fn raw_rate(label: &str, op: &str, threads: usize, secs: u64) -> anyhow::Result<f64> {
    let size = match label {
        "RSA-2048" => Some(KeySize::Rsa2048),
        "RSA-3072" => Some(KeySize::Rsa3072),
        "RSA-4096" => Some(KeySize::Rsa4096),
        _ => None,
    };
    Ok(match (size, op) {
        (Some(sz), "unwrapkey") => raw_rsa_unwrap(sz, threads, secs)?,
        (Some(_), _) => f64::NAN,
        (None, o) => raw_kw(threads, secs, o == "unwrapkey"),
    })
}

/// `raw_rate` in a child process pinned to CPU 0, one thread.
fn raw_rate_pinned(label: &str, op: &str, secs: u64) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(exe)
        .args(["--raw", &format!("{label}:{op}"), "--raw-threads", "1"])
        .args(["--seconds", &secs.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!("raw rate: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Pin every thread of `pid` to `cpu`.
fn pin(pid: u32, cpu: u32) -> anyhow::Result<()> {
    let ok = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?
        .success();
    if !ok {
        bail!("taskset could not pin process {pid} to CPU {cpu}");
    }
    Ok(())
}

fn claims(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(b64::url_decode)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(raw) = &args.raw {
        let (label, op) = raw.split_once(':').unwrap_or((raw, "unwrapkey"));
        println!("{}", raw_rate(label, op, args.raw_threads, args.seconds)?);
        return Ok(());
    }
    let server = TestServer::start(&args.bin, &[]).context("starting the server")?;
    let http = server.http()?;
    let mgmt = server.endpoint("management");
    let sub = server.endpoint("subscription_id");
    let admin = server.admin_token().await?;
    let oid = claims(&admin)["oid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ok = |r: reqwest::Response| async move {
        let s = r.status();
        let t = r.text().await.unwrap_or_default();
        if !s.is_success() {
            bail!("{s}: {t}");
        }
        Ok::<Value, anyhow::Error>(serde_json::from_str(&t).unwrap_or(Value::Null))
    };
    ok(http
        .put(format!(
            "{mgmt}/subscriptions/{sub}/resourcegroups/bench?api-version=x"
        ))
        .bearer_auth(&admin)
        .json(&json!({"location": "eastus"}))
        .send()
        .await?)
    .await?;
    let vault = ok(http
        .put(format!("{mgmt}/subscriptions/{sub}/resourceGroups/bench/providers/Microsoft.KeyVault/vaults/benchkv?api-version=x"))
        .bearer_auth(&admin)
        .json(&json!({"location": "eastus", "properties": {"tenantId": server.endpoint("tenant_id"), "sku": {"family": "A", "name": "standard"}}}))
        .send()
        .await?)
    .await?;
    let vault_id = vault["id"].as_str().unwrap_or_default().to_string();
    ok(http
        .put(format!("{mgmt}{vault_id}/providers/Microsoft.Authorization/roleAssignments/6a1e0c0e-0000-4000-8000-000000000001?api-version=x"))
        .bearer_auth(&admin)
        .json(&json!({"properties": {"roleDefinitionId": format!("/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/14b46e9e-c2b7-41b4-b07b-48a6ebf60603"), "principalId": oid}}))
        .send()
        .await?)
    .await?;
    let creds = server.admin_credentials()?;
    let vault_suffix = server.endpoint("vault_dns_suffix");
    let vault_token = server
        .token(
            creds["client_id"].as_str().unwrap_or_default(),
            creds["client_secret"].as_str().unwrap_or_default(),
            &format!("https://{vault_suffix}/.default"),
        )
        .await?;
    let host = vault_suffix.split(':').next().unwrap_or_default();
    let port: u16 = vault_suffix
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .parse()?;
    let ca = std::fs::read(server.endpoint("ca_cert"))?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .resolve(
            &format!("benchkv.{host}"),
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .pool_max_idle_per_host(args.concurrency * 2)
        .http1_only()
        .build()?;
    let base = format!("https://benchkv.{vault_suffix}");

    let pid = server.pid().unwrap_or(0);
    let own = std::process::id();
    let (cores, raw_threads) = if args.pin {
        pin(pid, 0)?;
        pin(own, 1)?;
        (1.0, 1)
    } else {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        (n as f64, n)
    };
    let raw_where = if args.pin {
        "1 thread on the server's CPU".to_string()
    } else {
        format!("{raw_threads} threads")
    };
    println!(
        "| key | operation | HTTPS ops/s | p50 ms | p99 ms | server CPU µs/op | server-bound ops/s | load generator CPU % | raw aws-lc-rs ops/s ({raw_where}) | HTTPS / raw | server-bound / raw |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let cases: [(&str, Value, &str); 4] = [
        (
            "RSA-2048",
            json!({"kty": "RSA", "key_size": 2048}),
            "RSA-OAEP-256",
        ),
        (
            "RSA-3072",
            json!({"kty": "RSA", "key_size": 3072}),
            "RSA-OAEP-256",
        ),
        (
            "RSA-4096",
            json!({"kty": "RSA", "key_size": 4096}),
            "RSA-OAEP-256",
        ),
        ("AES-256", json!({"kty": "oct", "key_size": 256}), "A256KW"),
    ];
    for (label, create, alg) in cases {
        if !args.keys.is_empty() && !args.keys.iter().any(|k| k.eq_ignore_ascii_case(label)) {
            continue;
        }
        let name = label.to_ascii_lowercase();
        let key = ok(client
            .post(format!("{base}/keys/{name}/create?api-version=7.6"))
            .bearer_auth(&vault_token)
            .json(&create)
            .send()
            .await?)
        .await?;
        let kid = key["key"]["kid"].as_str().unwrap_or_default().to_string();
        let version = kid.rsplit('/').next().unwrap_or_default().to_string();
        let wrapped = ok(client
            .post(format!(
                "{base}/keys/{name}/{version}/wrapkey?api-version=7.6"
            ))
            .bearer_auth(&vault_token)
            .json(&json!({"alg": alg, "value": b64::url_encode(&[5u8; 32])}))
            .send()
            .await?)
        .await?;
        let ct = wrapped["value"].as_str().unwrap_or_default().to_string();
        for (op, body) in [
            ("unwrapkey", json!({"alg": alg, "value": ct})),
            (
                "wrapkey",
                json!({"alg": alg, "value": b64::url_encode(&[5u8; 32])}),
            ),
        ] {
            let url = format!("{base}/keys/{name}/{version}/{op}?api-version=7.6");
            let cpu0 = cpu_seconds(pid);
            let own0 = cpu_seconds(own);
            let s = load(
                &client,
                &url,
                &vault_token,
                body,
                args.concurrency,
                args.seconds,
            )
            .await?;
            let cpu_per_op = (cpu_seconds(pid) - cpu0) / (s.ops * args.seconds as f64);
            let own_busy = 100.0 * (cpu_seconds(own) - own0) / args.seconds as f64;
            let server_bound = cores / cpu_per_op;
            let raw = if args.pin {
                raw_rate_pinned(label, op, args.seconds)?
            } else {
                raw_rate(label, op, raw_threads, args.seconds)?
            };
            let pct = |x: f64| {
                if raw.is_nan() {
                    "—".to_string()
                } else {
                    format!("{:.0}%", 100.0 * x / raw)
                }
            };
            let raw_s = if raw.is_nan() {
                "—".to_string()
            } else {
                format!("{raw:.0}")
            };
            println!(
                "| {label} | {op} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {raw_s} | {} | {} |",
                s.ops,
                s.p50_ms,
                s.p99_ms,
                cpu_per_op * 1e6,
                server_bound,
                own_busy,
                pct(s.ops),
                pct(server_bound)
            );
        }
    }
    Ok(())
}
