//! The tamper-evident audit log: `coffer audit verify` passes an untouched log and names the
//! first bad record after an edit, a deletion, a reordering or a truncation of the stored log.
use std::path::{Path, PathBuf};
use std::process::Command;

use coffer_testkit::TestServer;
use serde_json::Value;
use sqlx::Connection;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coffer"))
}

/// Run `coffer audit verify` on a data directory: (exit code, JSON output).
fn verify(dir: &Path) -> anyhow::Result<(i32, Value)> {
    let out = Command::new(bin())
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .env_remove("COFFER_SEAL_KEY_FILE")
        .output()?;
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Ok((out.status.code().unwrap_or(-1), v))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// Apply `sql` to a copy of the stopped server's data directory, then verify the copy.
async fn tampered(src: &Path, name: &str, sql: &[&str]) -> anyhow::Result<(i32, Value)> {
    let dir = src.with_file_name(format!("tampered-{name}"));
    copy_dir(src, &dir)?;
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("coffer.db").display()))
            .await?;
    for s in sql {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*s))
            .execute(&mut db)
            .await?;
    }
    db.close().await?;
    verify(&dir)
}

#[tokio::test]
async fn audit_verify_detects_edits_deletions_reordering_and_truncation() -> anyhow::Result<()> {
    let mut s = TestServer::start(&bin(), &[])?;
    let token = s.admin_token().await?;
    let http = s.http()?;
    let sub = s.endpoint("subscription_id");
    // Audited management writes (and one denial), one request at a time.
    for i in 0..8 {
        let r = http
            .put(format!(
                "{}/subscriptions/{sub}/resourcegroups/audit-rg-{i}?api-version=2024-11-01",
                s.endpoint("management")
            ))
            .bearer_auth(&token)
            .json(&serde_json::json!({"location": "eastus"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "{}", r.status());
    }
    let denied = http
        .put(format!(
            "{}/subscriptions/{sub}/resourcegroups/nope?api-version=2024-11-01",
            s.endpoint("management")
        ))
        .bearer_auth("not-a-token")
        .json(&serde_json::json!({"location": "eastus"}))
        .send()
        .await?;
    anyhow::ensure!(denied.status() == 401);
    // Verify while the server runs, then stop it and work on copies.
    let (code, v) = verify(&s.data_dir())?;
    assert_eq!(code, 0, "{v}");
    assert_eq!(s.stop()?, Some(0));
    let dir = s.data_dir();
    let (code, v) = verify(&dir)?;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["intact"], true);
    let n = v["records"].as_i64().unwrap_or(0);
    assert!(n >= 8, "{v}");
    let head = v["headSeq"].as_i64().unwrap_or(0);
    // Checkpoints are periodic (the first batch always gets one): the newest one's record.
    let last_checkpoint: i64 = {
        let mut db = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.join("coffer.db").display()
        ))
        .await?;
        let n = sqlx::query_scalar("SELECT MAX(seq) FROM audit_checkpoint")
            .fetch_one(&mut db)
            .await?;
        db.close().await?;
        n
    };

    let cases: Vec<(&str, Vec<String>, i64)> = vec![
        (
            "edit",
            vec!["UPDATE audit SET data = replace(data, 'Success', 'Failure') WHERE seq = 3".into()],
            3,
        ),
        ("delete", vec!["DELETE FROM audit WHERE seq = 4".into()], 4),
        (
            "reorder",
            vec![
                "UPDATE audit SET seq = -1 WHERE seq = 5".into(),
                "UPDATE audit SET seq = 5 WHERE seq = 6".into(),
                "UPDATE audit SET seq = 6 WHERE seq = -1".into(),
            ],
            5,
        ),
        (
            "truncate",
            vec![format!("DELETE FROM audit WHERE seq > {}", head - 2)],
            head - 1,
        ),
        (
            "forged-checkpoint",
            vec!["UPDATE audit_checkpoint SET sig = (CASE WHEN substr(sig, 1, 1) = '0' THEN '1' ELSE '0' END) || substr(sig, 2) WHERE seq = (SELECT MAX(seq) FROM audit_checkpoint)".into()],
            last_checkpoint,
        ),
        (
            "forged-append",
            vec![format!("INSERT INTO audit (seq, time, data, hash) VALUES ({}, 1, '{{}}', '{}')", head + 1, "ab".repeat(32))],
            head + 1,
        ),
    ];
    for (name, sql, first_bad) in cases {
        let sql: Vec<&str> = sql.iter().map(String::as_str).collect();
        let (code, v) = tampered(&dir, name, &sql).await?;
        assert_eq!(code, 3, "{name}: {v}");
        assert_eq!(v["intact"], false, "{name}: {v}");
        assert_eq!(v["firstBadRecord"], first_bad, "{name}: {v}");
        assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    // The original is still intact after all that.
    assert_eq!(verify(&dir)?.0, 0);
    Ok(())
}
