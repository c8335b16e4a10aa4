//! Test support: a real `coffer server` process on port 0 in a temporary data directory,
//! synchronised on its `COFFER_READY` line (never on sleeps), stopped with SIGTERM.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    args: Vec<String>,
    pub endpoints: Value,
}

impl TestServer {
    /// Start `bin server` on port 0 with `extra` flags in a fresh data directory.
    pub fn start(bin: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut s = Self {
            child: None,
            dir,
            bin: bin.to_path_buf(),
            args: extra.iter().map(|s| s.to_string()).collect(),
            endpoints: Value::Null,
        };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let stderr = std::fs::File::create(self.dir.path().join("server.log"))?;
        let mut child = Command::new(&self.bin)
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--blob-listen",
                "127.0.0.1:0",
                "--proxy-listen",
                "127.0.0.1:0",
            ])
            .args(&self.args)
            .env_remove("COFFER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("COFFER_READY ") {
                    let _ = tx.send(p.to_string());
                }
            }
        });
        self.child = Some(child);
        let path = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(p) => p,
            Err(_) => bail!("the server did not become ready; log:\n{}", self.log()),
        };
        self.endpoints = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        Ok(())
    }

    /// The server's process id (benchmarks read its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn endpoint(&self, key: &str) -> String {
        self.endpoints[key].as_str().unwrap_or_default().to_string()
    }

    pub fn admin_credentials(&self) -> anyhow::Result<Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(
            self.data_dir().join("admin-credentials.json"),
        )?)?)
    }

    /// An HTTPS client that trusts the server's CA and ignores proxy settings.
    pub fn http(&self) -> anyhow::Result<reqwest::Client> {
        let ca = std::fs::read(self.endpoint("ca_cert"))?;
        Ok(reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
            .build()?)
    }

    /// A token for `scope` with the client-credentials grant.
    pub async fn token(
        &self,
        client_id: &str,
        secret: &str,
        scope: &str,
    ) -> anyhow::Result<String> {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.endpoint("authority"),
            self.endpoint("tenant_id")
        );
        let resp = self
            .http()?
            .post(url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", scope),
            ])
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        if !status.is_success() {
            bail!("token request failed: {status} {v}");
        }
        Ok(v["access_token"].as_str().unwrap_or_default().to_string())
    }

    /// The administrator's management-plane token.
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        let c = self.admin_credentials()?;
        self.token(
            c["client_id"].as_str().unwrap_or_default(),
            c["client_secret"].as_str().unwrap_or_default(),
            "https://management.core.windows.net//.default",
        )
        .await
    }

    /// SIGTERM, then wait; returns the exit status code.
    pub fn stop(&mut self) -> anyhow::Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let status = child.wait()?;
        Ok(status.code())
    }

    /// Stop and start again on the same data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let code = self.stop()?;
        if code != Some(0) {
            bail!("server exited with {code:?}; log:\n{}", self.log());
        }
        self.launch()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
