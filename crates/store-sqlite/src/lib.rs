//! SQLite metadata backend (the embedded default), through sqlx.
//!
//! WAL journal, `synchronous=FULL` (a committed write survives power loss), foreign keys on.
//! Records are JSON documents keyed by lower-cased identifiers; dialect details stay here.
use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use std::sync::{Arc, OnceLock};

use coffer_domain::audit::{AuditFilter, AuditRecord, AuditSink, chain};
use coffer_domain::model::{
    BlobRecord, ContainerRecord, KeyRecord, KeyVersion, Principal, Resource, ResourceGroup,
    RoleAssignment, StagedBlock, Subscription,
};
use coffer_domain::rbac::normalize_scope;
use coffer_domain::store::{Expect, MetaStore, Replaced};
use coffer_domain::{DomainError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, SqlSafeStr};

/// Write transactions start with `BEGIN IMMEDIATE`: a deferred transaction that reads and
/// then writes fails at once with SQLITE_BUSY when another writer committed in between (the
/// busy timeout cannot help there); an immediate one waits its turn.
pub struct SqliteStore {
    /// Reads (WAL readers never wait for the writer).
    pool: SqlitePool,
    /// Every write, on one connection: writers queue in the pool instead of meeting in
    /// SQLite's busy handler, whose backoff sleeps (1, 2, 5 … 100 ms) showed up as
    /// 100–500 ms tail latency on concurrent blob writes (docs/benchmarks.md).
    writer: SqlitePool,
    audit: AuditWriter,
}

/// A blob version to commit: its key, its JSON, and where to send the record it replaced.
struct BlobJob {
    account: String,
    container: String,
    name: String,
    data: String,
    expect: Expect,
    /// The objects of the new version's blocks: each must be a part of the version it
    /// replaces or staged for the blob when it commits.
    blocks: Vec<String>,
    done: tokio::sync::oneshot::Sender<Result<Replaced>>,
}

/// Read the version a commit replaces (`k` = 0), write the new one, drop the blob's staged
/// blocks and return them (`k` = 1): one round trip to SQLite's worker thread (numbered
/// parameters are shared by the statements). (One query for a whole batch, built for its
/// size, measured slower: 1,700 against 3,000 4 KiB PUT/s.)
/// The record is written only into a container that exists (`k` = 2: rows written), so an
/// upload that outlived its container's deletion leaves no record behind.
const COMMIT_BLOB_SQL: &str = "SELECT 0 AS k, data FROM blobs WHERE account = ?1 AND container = ?2 AND name = ?3; \
     INSERT INTO blobs (account, container, name, data) SELECT ?1, ?2, ?3, ?4 \
     WHERE EXISTS (SELECT 1 FROM containers WHERE account = ?1 AND name = ?2) \
     ON CONFLICT(account, container, name) DO UPDATE SET data = excluded.data; \
     SELECT 2 AS k, changes() AS data; \
     DELETE FROM staged_blocks WHERE account = ?1 AND container = ?2 AND blob = ?3 RETURNING 1 AS k, data";

/// A record to append (its time and JSON), or `None`: a barrier that completes once every
/// record queued before it is committed (so a query sees what was queued before it).
type AuditJob = (
    i64,
    Option<String>,
    tokio::sync::oneshot::Sender<Result<()>>,
);

/// What the group-commit writer takes.
enum WriteJob {
    Audit(AuditJob),
    Blob(BlobJob),
}

/// Group commit for audit records and blob versions, on the writer connection: what arrives
/// together shares one transaction and one fsync, so neither caps request throughput at the
/// disk's small-write rate (docs/benchmarks.md).
/// - Audit records are durable (committed with `synchronous=FULL`) before `record` returns.
/// - Each blob commit gets back the version it replaced, in arrival order, so two writes of
///   one blob in a batch behave as if committed one after the other.
/// - If a batch fails, its audit records and each blob commit are retried apart, so one bad
///   commit fails alone.
struct AuditWriter {
    tx: tokio::sync::mpsc::Sender<WriteJob>,
    keys: Arc<OnceLock<AuditKeys>>,
}

/// The keys of the audit chain (set once at start-up, derived from the root key).
pub struct AuditKeys {
    pub chain: chain::ChainKey,
    pub signer: chain::Signer,
}

/// A checkpoint is signed when this many records or this much time passed since the last.
const CHECKPOINT_RECORDS: i64 = 1000;
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

const WRITE_BATCH: usize = 512;

/// The chain head the next record links to, and when the last checkpoint was signed.
struct Head {
    seq: i64,
    hash: chain::Hash,
    checkpointed_seq: i64,
    checkpointed_at: Option<std::time::Instant>,
}

impl AuditWriter {
    fn start(pool: SqlitePool) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WriteJob>(4096);
        let keys: Arc<OnceLock<AuditKeys>> = Arc::new(OnceLock::new());
        let sign = keys.clone();
        tokio::spawn(async move {
            let mut head = None;
            let mut batch = Vec::with_capacity(WRITE_BATCH);
            while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                let (mut audits, mut blobs) = (Vec::new(), Vec::new());
                for job in batch.drain(..) {
                    match job {
                        WriteJob::Audit(a) => audits.push(a),
                        WriteJob::Blob(b) => blobs.push(b),
                    }
                }
                let records = audits.iter().any(|(_, d, _)| d.is_some());
                let loaded = match &head {
                    Some(_) => Ok(()),
                    None if records => Self::load_head(&pool).await.map(|h| head = Some(h)),
                    None => Ok(()),
                };
                let keys = sign.get();
                let together = match (&loaded, head.as_mut()) {
                    (Ok(()), Some(h)) => Self::commit(&pool, &blobs, &audits, h, keys).await,
                    (Ok(()), None) if !records => {
                        Self::commit(&pool, &blobs, &[], &mut Head::genesis(), keys).await
                    }
                    (Err(e), _) => Err(sqlx::Error::Protocol(format!("audit head: {e}"))),
                    (Ok(()), None) => Err(sqlx::Error::Protocol("audit head".into())),
                };
                match together {
                    Ok(olds) => {
                        for (_, _, done) in audits {
                            let _ = done.send(Ok(()));
                        }
                        for (job, old) in blobs.into_iter().zip(olds) {
                            let _ = job.done.send(old);
                        }
                    }
                    Err(e) => {
                        // Apart: the records (if the head could be read), then each commit.
                        let audited = match (loaded, head.as_mut()) {
                            (Ok(()), Some(h)) if records => {
                                Self::commit(&pool, &[], &audits, h, keys).await.map(|_| ())
                            }
                            (Ok(()), _) if !records => Ok(()),
                            _ => Err(e),
                        };
                        for (_, _, done) in audits {
                            let _ = done.send(match &audited {
                                Ok(()) => Ok(()),
                                Err(e) => Err(DomainError::Internal(format!("audit: {e}"))),
                            });
                        }
                        // Two failures in a row look like the store, not one commit: the
                        // rest fail at once rather than each waiting out its own timeout.
                        let mut failed_in_a_row = 0;
                        for job in blobs {
                            let r = if failed_in_a_row < 2 {
                                Self::commit(
                                    &pool,
                                    std::slice::from_ref(&job),
                                    &[],
                                    &mut Head::genesis(),
                                    keys,
                                )
                                .await
                            } else {
                                Err(sqlx::Error::Protocol(
                                    "the metadata store is failing".into(),
                                ))
                            };
                            failed_in_a_row = if r.is_ok() { 0 } else { failed_in_a_row + 1 };
                            let _ = job.done.send(match r {
                                Ok(mut old) => old.pop().unwrap_or(Ok(Replaced::default())),
                                Err(e) => Err(db_err(e)),
                            });
                        }
                    }
                }
            }
        });
        Self { tx, keys }
    }

    async fn load_head(pool: &SqlitePool) -> std::result::Result<Head, sqlx::Error> {
        let row = sqlx::query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
        Ok(match row {
            None => Head::genesis(),
            Some(r) => Head {
                seq: r.get("seq"),
                checkpointed_seq: 0,
                checkpointed_at: None,
                // Records from before chaining: the chain starts after them.
                hash: r
                    .get::<Option<String>, _>("hash")
                    .and_then(|h| hex_hash(&h))
                    .unwrap_or(chain::GENESIS),
            },
        })
    }

    /// One transaction: each blob commit (one round trip to SQLite's worker thread each), then
    /// the audit records in one statement (a JSON array expanded by `json_each`; a trigger
    /// moves the stored head), and a signed checkpoint when one is due; one fsync. The head
    /// moves only once the transaction committed. Returns what each blob commit replaced.
    async fn commit(
        pool: &SqlitePool,
        blobs: &[BlobJob],
        audits: &[AuditJob],
        head: &mut Head,
        keys: Option<&AuditKeys>,
    ) -> std::result::Result<Vec<Result<Replaced>>, sqlx::Error> {
        let unkeyed;
        let chain_key = match keys {
            Some(k) => &k.chain,
            None => {
                unkeyed = chain::ChainKey::new(&[0u8; 32]);
                &unkeyed
            }
        };
        let (mut seq, mut hash) = (head.seq, head.hash);
        let mut rows = Vec::with_capacity(audits.len());
        let mut last_time = 0;
        for (time, data, _) in audits {
            let Some(data) = data else { continue };
            seq += 1;
            hash = chain::link(chain_key, &hash, seq, *time, data);
            last_time = *time;
            rows.push(serde_json::json!([seq, time, data, hex::encode(hash)]));
        }
        if rows.is_empty() && blobs.is_empty() {
            return Ok(Vec::new());
        }
        let due = !rows.is_empty()
            && (head
                .checkpointed_at
                .is_none_or(|t| t.elapsed() >= CHECKPOINT_INTERVAL)
                || seq - head.checkpointed_seq >= CHECKPOINT_RECORDS);
        let insert = (!rows.is_empty()).then(|| {
            sqlx::query(
                "INSERT INTO audit (seq, time, data, hash) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?) ORDER BY key",
            )
            .bind(serde_json::Value::Array(rows).to_string())
        });
        let insert = match insert {
            Some(insert) if blobs.is_empty() && !due => {
                // Records alone: one statement is its own transaction (one round trip).
                insert.execute(pool).await?;
                head.seq = seq;
                head.hash = hash;
                return Ok(Vec::new());
            }
            other => other,
        };
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut olds = Vec::with_capacity(blobs.len());
        let decode = |e: DomainError| sqlx::Error::Decode(Box::new(e));
        for job in blobs {
            if job.expect != Expect::Any || !job.blocks.is_empty() {
                // A conditional commit: the version it expects must be the one stored now
                // (earlier commits of this batch included), and its blocks still there; if
                // not, it writes nothing.
                let stored = sqlx::query(
                    "SELECT data FROM blobs WHERE account = ? AND container = ? AND name = ?",
                )
                .bind(&job.account)
                .bind(&job.container)
                .bind(&job.name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| from_json::<BlobRecord>(r.try_get::<&str, _>("data")?).map_err(decode))
                .transpose()?;
                let mut there = std::collections::HashSet::new();
                if !job.blocks.is_empty() {
                    there.extend(
                        stored
                            .iter()
                            .flat_map(|s| s.parts.iter().map(|p| p.object_id.clone())),
                    );
                    for r in sqlx::query(
                        "SELECT json_extract(data, '$.part.object_id') AS id FROM staged_blocks WHERE account = ? AND container = ? AND blob = ?",
                    )
                    .bind(&job.account)
                    .bind(&job.container)
                    .bind(&job.name)
                    .fetch_all(&mut *tx)
                    .await?
                    {
                        there.insert(r.try_get::<String, _>("id")?);
                    }
                }
                if !job.expect.holds(stored.as_ref())
                    || !job.blocks.iter().all(|b| there.contains(b))
                {
                    olds.push(Err(DomainError::ConditionNotMet));
                    continue;
                }
            }
            let found = sqlx::query(COMMIT_BLOB_SQL)
                .bind(&job.account)
                .bind(&job.container)
                .bind(&job.name)
                .bind(&job.data)
                .fetch_all(&mut *tx)
                .await?;
            // Decoded inside the transaction: an unreadable row rolls the commit back.
            let mut replaced = Replaced::default();
            let mut written = false;
            for r in found {
                match r.try_get::<i64, _>("k")? {
                    0 => {
                        let data = r.try_get::<&str, _>("data")?;
                        replaced.old = Some(from_json::<BlobRecord>(data).map_err(decode)?);
                    }
                    1 => {
                        let data = r.try_get::<&str, _>("data")?;
                        replaced
                            .dropped
                            .push(from_json::<StagedBlock>(data).map_err(decode)?);
                    }
                    _ => written = r.try_get::<i64, _>("data")? > 0,
                }
            }
            // No container (deleted while the upload ran): nothing written; the staged
            // blocks of a blob in no container are dropped with it (orphans for the
            // collector).
            olds.push(if written {
                Ok(replaced)
            } else {
                Err(DomainError::ContainerNotFound)
            });
        }
        if let Some(insert) = insert {
            insert.execute(&mut *tx).await?;
        }
        let signed = match keys.filter(|_| due) {
            Some(k) => {
                sqlx::query(
                    "INSERT INTO audit_checkpoint (seq, hash, time, sig) VALUES (?, ?, ?, ?)",
                )
                .bind(seq)
                .bind(hex::encode(hash))
                .bind(last_time)
                .bind(hex::encode(k.signer.sign(seq, &hash, last_time)))
                .execute(&mut *tx)
                .await?;
                true
            }
            None => false,
        };
        tx.commit().await?;
        if signed {
            head.checkpointed_seq = seq;
            head.checkpointed_at = Some(std::time::Instant::now());
        }
        head.seq = seq;
        head.hash = hash;
        Ok(olds)
    }
}

impl Head {
    fn genesis() -> Self {
        Head {
            seq: 0,
            hash: chain::GENESIS,
            checkpointed_seq: 0,
            checkpointed_at: None,
        }
    }
}

fn hex_hash(h: &str) -> Option<chain::Hash> {
    hex::decode(h)
        .ok()
        .and_then(|b| <chain::Hash>::try_from(b).ok())
}

fn db_err(e: sqlx::Error) -> DomainError {
    DomainError::Internal(format!("metadata store: {e}"))
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| DomainError::Internal(format!("encode: {e}")))
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| DomainError::Internal(format!("decode: {e}")))
}

fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../migrations/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("keys"),
            MigrationType::Simple,
            include_str!("../migrations/0002_keys.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("blobs"),
            MigrationType::Simple,
            include_str!("../migrations/0003_blobs.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("unique global names"),
            MigrationType::Simple,
            include_str!("../migrations/0004_unique_names.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            Cow::Borrowed("staged blocks"),
            MigrationType::Simple,
            include_str!("../migrations/0005_staged_blocks.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            Cow::Borrowed("audit chain"),
            MigrationType::Simple,
            include_str!("../migrations/0006_audit_chain.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            7,
            Cow::Borrowed("event deliveries"),
            MigrationType::Simple,
            include_str!("../migrations/0007_event_deliveries.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            8,
            Cow::Borrowed("audit head"),
            MigrationType::Simple,
            include_str!("../migrations/0008_audit_head.sql").into_sql_str(),
            false,
        ),
    ])
}

impl SqliteStore {
    /// Open (creating if needed) the database file and apply pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(db_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        // No ping before each checkout (sqlx's default): a connection to a local file does not
        // go stale, and the ping is one more round trip to the connection's worker thread for
        // every statement (measured: one fewer thread hand-off per audit batch and per read).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await
            .map_err(db_err)?;
        migrator()
            .run(&writer)
            .await
            .map_err(|e| DomainError::Internal(format!("migrations: {e}")))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        let audit = AuditWriter::start(writer.clone());
        Ok(Self {
            pool,
            writer,
            audit,
        })
    }

    /// An in-memory database (tests).
    pub async fn memory() -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:").map_err(db_err)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| DomainError::Internal(format!("migrations: {e}")))?;
        let audit = AuditWriter::start(pool.clone());
        Ok(Self {
            writer: pool.clone(),
            pool,
            audit,
        })
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn fetch_data<T: DeserializeOwned>(
        &self,
        q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Option<T>> {
        match q.fetch_optional(&self.pool).await.map_err(db_err)? {
            Some(row) => Ok(Some(from_json(row.get::<&str, _>("data"))?)),
            None => Ok(None),
        }
    }

    async fn fetch_all_data<T: DeserializeOwned>(
        &self,
        q: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Vec<T>> {
        q.fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| from_json(r.get::<&str, _>("data")))
            .collect()
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn get_setting(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>("value")))
    }

    async fn put_setting(&self, key: &str, value: &[u8]) -> Result<()> {
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn insert_principal(&self, p: &Principal) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO principals (object_id, client_id, username, data) VALUES (?, ?, ?, ?)",
        )
        .bind(lc(&p.object_id))
        .bind(p.client_id.as_deref().map(lc))
        .bind(p.username.as_deref().map(lc))
        .bind(to_json(p)?)
        .execute(&self.writer)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Err(DomainError::Conflict(
                "a principal with this name or id already exists".into(),
            )),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn get_principal(&self, object_id: &str) -> Result<Option<Principal>> {
        self.fetch_data(
            sqlx::query("SELECT data FROM principals WHERE object_id = ?").bind(lc(object_id)),
        )
        .await
    }

    async fn find_principal_by_client_id(&self, client_id: &str) -> Result<Option<Principal>> {
        self.fetch_data(
            sqlx::query("SELECT data FROM principals WHERE client_id = ?").bind(lc(client_id)),
        )
        .await
    }

    async fn find_principal_by_username(&self, username: &str) -> Result<Option<Principal>> {
        self.fetch_data(
            sqlx::query("SELECT data FROM principals WHERE username = ?").bind(lc(username)),
        )
        .await
    }

    async fn delete_principal(&self, object_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM principals WHERE object_id = ?")
            .bind(lc(object_id))
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn put_subscription(&self, s: &Subscription) -> Result<()> {
        sqlx::query("INSERT INTO subscriptions (id, data) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET data = excluded.data")
            .bind(lc(&s.subscription_id))
            .bind(to_json(s)?)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>> {
        self.fetch_data(sqlx::query("SELECT data FROM subscriptions WHERE id = ?").bind(lc(id)))
            .await
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        self.fetch_all_data(sqlx::query("SELECT data FROM subscriptions ORDER BY id"))
            .await
    }

    async fn put_resource_group(&self, g: &ResourceGroup) -> Result<bool> {
        let existed = self
            .get_resource_group(&g.subscription_id, &g.name)
            .await?
            .is_some();
        sqlx::query("INSERT INTO resource_groups (sub, name, data) VALUES (?, ?, ?) ON CONFLICT(sub, name) DO UPDATE SET data = excluded.data")
            .bind(lc(&g.subscription_id))
            .bind(lc(&g.name))
            .bind(to_json(g)?)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(!existed)
    }

    async fn get_resource_group(&self, sub: &str, name: &str) -> Result<Option<ResourceGroup>> {
        self.fetch_data(
            sqlx::query("SELECT data FROM resource_groups WHERE sub = ? AND name = ?")
                .bind(lc(sub))
                .bind(lc(name)),
        )
        .await
    }

    async fn list_resource_groups(&self, sub: &str) -> Result<Vec<ResourceGroup>> {
        self.fetch_all_data(
            sqlx::query("SELECT data FROM resource_groups WHERE sub = ? ORDER BY name")
                .bind(lc(sub)),
        )
        .await
    }

    async fn delete_resource_group(&self, sub: &str, name: &str) -> Result<bool> {
        let scope = normalize_scope(&format!("/subscriptions/{sub}/resourceGroups/{name}"));
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let n = sqlx::query("DELETE FROM resource_groups WHERE sub = ? AND name = ?")
            .bind(lc(sub))
            .bind(lc(name))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        sqlx::query("DELETE FROM resources WHERE sub = ? AND rg = ?")
            .bind(lc(sub))
            .bind(lc(name))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM role_assignments WHERE scope = ? OR substr(scope, 1, ?) = ?")
            .bind(&scope)
            .bind(scope.len() as i64 + 1)
            .bind(format!("{scope}/"))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }

    async fn put_resource(&self, r: &Resource) -> Result<bool> {
        let existed = self.get_resource(&r.id).await?.is_some();
        sqlx::query("INSERT INTO resources (id, type, sub, rg, name, data) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET data = excluded.data")
            .bind(lc(&r.id))
            .bind(lc(&r.resource_type))
            .bind(lc(&r.subscription_id))
            .bind(r.resource_group.as_deref().map(lc))
                        .bind(lc(&r.name))
            .bind(to_json(r)?)
            .execute(&self.writer)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    DomainError::Conflict(format!("The name '{}' is already in use.", r.name))
                }
                e => db_err(e),
            })?;
        Ok(!existed)
    }

    async fn get_resource(&self, id: &str) -> Result<Option<Resource>> {
        self.fetch_data(sqlx::query("SELECT data FROM resources WHERE id = ?").bind(lc(id)))
            .await
    }

    async fn list_resources(
        &self,
        sub: &str,
        group: Option<&str>,
        resource_type: Option<&str>,
    ) -> Result<Vec<Resource>> {
        self.fetch_all_data(
            sqlx::query(
                "SELECT data FROM resources WHERE sub = ? AND (? IS NULL OR rg = ?) AND (? IS NULL OR type = ?) ORDER BY id",
            )
            .bind(lc(sub))
            .bind(group.map(lc))
            .bind(group.map(lc))
            .bind(resource_type.map(lc))
            .bind(resource_type.map(lc)),
        )
        .await
    }

    async fn find_resources_by_name(
        &self,
        resource_type: &str,
        name: &str,
    ) -> Result<Vec<Resource>> {
        self.fetch_all_data(
            sqlx::query("SELECT data FROM resources WHERE type = ? AND name = ? ORDER BY id")
                .bind(lc(resource_type))
                .bind(lc(name)),
        )
        .await
    }

    async fn delete_resource(&self, id: &str) -> Result<bool> {
        let scope = normalize_scope(id);
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let n = sqlx::query("DELETE FROM resources WHERE id = ?")
            .bind(lc(id))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        // Assignments at or under a deleted resource go with it.
        sqlx::query("DELETE FROM role_assignments WHERE scope = ? OR substr(scope, 1, ?) = ?")
            .bind(&scope)
            .bind(scope.len() as i64 + 1)
            .bind(format!("{scope}/"))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(n > 0)
    }

    async fn put_role_assignment(&self, a: &RoleAssignment) -> Result<()> {
        let r = sqlx::query(
            "INSERT INTO role_assignments (scope, name, principal_id, data) VALUES (?, ?, ?, ?)",
        )
        .bind(normalize_scope(&a.scope))
        .bind(lc(&a.name))
        .bind(lc(&a.principal_id))
        .bind(to_json(a)?)
        .execute(&self.writer)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                Err(DomainError::RoleAssignmentExists)
            }
            Err(e) => Err(db_err(e)),
        }
    }

    async fn get_role_assignment(&self, scope: &str, name: &str) -> Result<Option<RoleAssignment>> {
        self.fetch_data(
            sqlx::query("SELECT data FROM role_assignments WHERE scope = ? AND name = ?")
                .bind(normalize_scope(scope))
                .bind(lc(name)),
        )
        .await
    }

    async fn list_role_assignments(&self) -> Result<Vec<RoleAssignment>> {
        self.fetch_all_data(sqlx::query(
            "SELECT data FROM role_assignments ORDER BY scope, name",
        ))
        .await
    }

    async fn list_role_assignments_for_principal(
        &self,
        principal_id: &str,
    ) -> Result<Vec<RoleAssignment>> {
        self.fetch_all_data(
            sqlx::query("SELECT data FROM role_assignments WHERE principal_id = ?")
                .bind(lc(principal_id)),
        )
        .await
    }

    async fn delete_role_assignment(&self, scope: &str, name: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM role_assignments WHERE scope = ? AND name = ?")
            .bind(normalize_scope(scope))
            .bind(lc(name))
            .execute(&self.writer)
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn put_key(&self, record: &KeyRecord, version: Option<&KeyVersion>) -> Result<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO keys (vault, name, data) VALUES (?, ?, ?) ON CONFLICT(vault, name) DO UPDATE SET data = excluded.data",
        )
        .bind(lc(&record.vault))
        .bind(lc(&record.name))
        .bind(to_json(record)?)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if let Some(v) = version {
            sqlx::query(
                "INSERT INTO key_versions (vault, name, version, data) VALUES (?, ?, ?, ?) ON CONFLICT(vault, name, version) DO UPDATE SET data = excluded.data",
            )
            .bind(lc(&v.vault))
            .bind(lc(&v.name))
            .bind(lc(&v.version))
            .bind(to_json(v)?)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn get_key_record(&self, vault: &str, name: &str) -> Result<Option<KeyRecord>> {
        self.fetch_data(
            sqlx::query("SELECT data FROM keys WHERE vault = ? AND name = ?")
                .bind(lc(vault))
                .bind(lc(name)),
        )
        .await
    }

    async fn list_key_records(&self, vault: Option<&str>) -> Result<Vec<KeyRecord>> {
        self.fetch_all_data(
            sqlx::query(
                "SELECT data FROM keys WHERE (? IS NULL OR vault = ?) ORDER BY vault, name",
            )
            .bind(vault.map(lc))
            .bind(vault.map(lc)),
        )
        .await
    }

    async fn get_key_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<KeyVersion>> {
        self.fetch_data(
            sqlx::query(
                "SELECT data FROM key_versions WHERE vault = ? AND name = ? AND version = ?",
            )
            .bind(lc(vault))
            .bind(lc(name))
            .bind(lc(version)),
        )
        .await
    }

    async fn list_key_versions(&self, vault: &str, name: &str) -> Result<Vec<KeyVersion>> {
        self.fetch_all_data(
            sqlx::query("SELECT data FROM key_versions WHERE vault = ? AND name = ? ORDER BY seq")
                .bind(lc(vault))
                .bind(lc(name)),
        )
        .await
    }

    async fn purge_key(&self, vault: &str, name: &str) -> Result<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        for q in [
            "DELETE FROM key_versions WHERE vault = ? AND name = ?",
            "DELETE FROM keys WHERE vault = ? AND name = ?",
        ] {
            sqlx::query(q)
                .bind(lc(vault))
                .bind(lc(name))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn purge_vault_keys(&self, vault: &str) -> Result<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        for q in [
            "DELETE FROM key_versions WHERE vault = ?",
            "DELETE FROM keys WHERE vault = ?",
        ] {
            sqlx::query(q)
                .bind(lc(vault))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn create_container(&self, c: &ContainerRecord) -> Result<bool> {
        let r = sqlx::query("INSERT INTO containers (account, name, data) VALUES (?, ?, ?)")
            .bind(&c.account)
            .bind(&c.name)
            .bind(to_json(c)?)
            .execute(&self.writer)
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(false),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn put_container(&self, c: &ContainerRecord) -> Result<()> {
        sqlx::query("UPDATE containers SET data = ? WHERE account = ? AND name = ?")
            .bind(to_json(c)?)
            .bind(&c.account)
            .bind(&c.name)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_container(&self, account: &str, name: &str) -> Result<Option<ContainerRecord>> {
        self.fetch_data(
            sqlx::query("SELECT data FROM containers WHERE account = ? AND name = ?")
                .bind(account)
                .bind(name),
        )
        .await
    }

    async fn list_containers(&self, account: &str) -> Result<Vec<ContainerRecord>> {
        self.fetch_all_data(
            sqlx::query("SELECT data FROM containers WHERE account = ? ORDER BY name")
                .bind(account),
        )
        .await
    }

    async fn delete_container(&self, account: &str, name: &str) -> Result<Option<Vec<BlobRecord>>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let n = sqlx::query("DELETE FROM containers WHERE account = ? AND name = ?")
            .bind(account)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        let rows = sqlx::query("SELECT data FROM blobs WHERE account = ? AND container = ?")
            .bind(account)
            .bind(name)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let blobs = rows
            .iter()
            .map(|r| from_json(r.get::<&str, _>("data")))
            .collect::<Result<Vec<BlobRecord>>>()?;
        for q in [
            "DELETE FROM blobs WHERE account = ? AND container = ?",
            "DELETE FROM staged_blocks WHERE account = ? AND container = ?",
        ] {
            sqlx::query(q)
                .bind(account)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Some(blobs))
    }

    async fn get_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
    ) -> Result<Option<BlobRecord>> {
        self.fetch_data(
            sqlx::query("SELECT data FROM blobs WHERE account = ? AND container = ? AND name = ?")
                .bind(account)
                .bind(container)
                .bind(name),
        )
        .await
    }

    async fn list_blobs(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        marker: &str,
        limit: usize,
    ) -> Result<Vec<BlobRecord>> {
        // Prefix match on bytes (no LIKE wildcards): substr comparison.
        self.fetch_all_data(
            sqlx::query(
                "SELECT data FROM blobs WHERE account = ? AND container = ? AND substr(name, 1, length(?)) = ? AND name > ? ORDER BY name LIMIT ?",
            )
            .bind(account)
            .bind(container)
            .bind(prefix)
            .bind(prefix)
            .bind(marker)
            .bind(limit as i64),
        )
        .await
    }

    async fn delete_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
        expect: &Expect,
    ) -> Result<Option<BlobRecord>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let old =
            sqlx::query("SELECT data FROM blobs WHERE account = ? AND container = ? AND name = ?")
                .bind(account)
                .bind(container)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .map(|r| from_json::<BlobRecord>(r.get::<&str, _>("data")))
                .transpose()?;
        if !expect.holds(old.as_ref()) {
            return Err(DomainError::ConditionNotMet); // the transaction rolls back
        }
        for q in [
            "DELETE FROM blobs WHERE account = ? AND container = ? AND name = ?",
            "DELETE FROM staged_blocks WHERE account = ? AND container = ? AND blob = ?",
        ] {
            sqlx::query(q)
                .bind(account)
                .bind(container)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(old)
    }

    async fn put_staged_block(&self, b: &StagedBlock) -> Result<Option<StagedBlock>> {
        let id = b.part.block_id.clone().unwrap_or_default();
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let old = sqlx::query(
            "SELECT data FROM staged_blocks WHERE account = ? AND container = ? AND blob = ? AND block_id = ?",
        )
        .bind(&b.account)
        .bind(&b.container)
        .bind(&b.blob)
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?
        .map(|r| from_json::<StagedBlock>(r.get::<&str, _>("data")))
        .transpose()?;
        let container = sqlx::query("SELECT 1 FROM containers WHERE account = ? AND name = ?")
            .bind(&b.account)
            .bind(&b.container)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if container.is_none() {
            return Err(DomainError::ContainerNotFound); // the transaction rolls back
        }
        sqlx::query(
            "INSERT INTO staged_blocks (account, container, blob, block_id, created, data) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(account, container, blob, block_id) DO UPDATE SET created = excluded.created, data = excluded.data",
        )
        .bind(&b.account)
        .bind(&b.container)
        .bind(&b.blob)
        .bind(&id)
        .bind(b.created)
        .bind(to_json(b)?)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(old)
    }

    async fn list_staged_blocks(
        &self,
        account: &str,
        container: &str,
        blob: &str,
    ) -> Result<Vec<StagedBlock>> {
        self.fetch_all_data(
            sqlx::query("SELECT data FROM staged_blocks WHERE account = ? AND container = ? AND blob = ? ORDER BY created, block_id")
                .bind(account)
                .bind(container)
                .bind(blob),
        )
        .await
    }

    async fn any_staged_block_id(
        &self,
        account: &str,
        container: &str,
        blob: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT block_id FROM staged_blocks WHERE account = ? AND container = ? AND blob = ? LIMIT 1",
        )
        .bind(account)
        .bind(container)
        .bind(blob)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| r.get::<String, _>("block_id")))
    }

    async fn commit_blob(&self, b: &BlobRecord, expect: &Expect) -> Result<Replaced> {
        let (done, result) = tokio::sync::oneshot::channel();
        let stopped = || DomainError::Internal("the metadata writer has stopped".into());
        self.audit
            .tx
            .send(WriteJob::Blob(BlobJob {
                account: b.account.clone(),
                container: b.container.clone(),
                name: b.name.clone(),
                data: to_json(b)?,
                expect: expect.clone(),
                blocks: b
                    .parts
                    .iter()
                    .filter(|p| p.block_id.is_some())
                    .map(|p| p.object_id.clone())
                    .collect(),
                done,
            }))
            .await
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }

    async fn delete_account_data(&self, account: &str) -> Result<()> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        for q in [
            "DELETE FROM staged_blocks WHERE account = ?",
            "DELETE FROM blobs WHERE account = ?",
            "DELETE FROM containers WHERE account = ?",
        ] {
            sqlx::query(q)
                .bind(account)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn update_blob(&self, b: &BlobRecord, etag: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE blobs SET data = ? WHERE account = ? AND container = ? AND name = ? AND json_extract(data, '$.etag') = ?",
        )
        .bind(to_json(b)?)
        .bind(&b.account)
        .bind(&b.container)
        .bind(&b.name)
        .bind(etag)
        .execute(&self.writer)
        .await
        .map_err(db_err)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn staged_blocks_before(&self, before: i64) -> Result<Vec<StagedBlock>> {
        self.fetch_all_data(
            sqlx::query("SELECT data FROM staged_blocks WHERE created < ? ORDER BY created")
                .bind(before),
        )
        .await
    }

    async fn delete_staged_block(&self, b: &StagedBlock) -> Result<bool> {
        let done = sqlx::query("DELETE FROM staged_blocks WHERE account = ? AND container = ? AND blob = ? AND block_id = ? AND json_extract(data, '$.part.object_id') = ?")
            .bind(&b.account)
            .bind(&b.container)
            .bind(&b.blob)
            .bind(b.part.block_id.clone().unwrap_or_default())
            .bind(&b.part.object_id)
            .execute(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn referenced_objects(&self) -> Result<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        // One read transaction, so one snapshot: a block list committed between two reads
        // would be in neither (no longer staged, not yet among the blobs read).
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for r in sqlx::query("SELECT data FROM blobs")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
        {
            let b: BlobRecord = from_json(r.get::<&str, _>("data"))?;
            out.extend(b.parts.into_iter().map(|p| p.object_id));
        }
        for r in sqlx::query("SELECT data FROM staged_blocks")
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
        {
            let b: StagedBlock = from_json(r.get::<&str, _>("data"))?;
            out.insert(b.part.object_id);
        }
        Ok(out)
    }

    async fn put_delivery(&self, d: &coffer_domain::events::Delivery) -> Result<()> {
        sqlx::query(
            "INSERT INTO event_delivery (id, subscription, state, due, data) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state, due = excluded.due, data = excluded.data",
        )
        .bind(&d.id)
        .bind(lc(&d.subscription))
        .bind(&d.state)
        .bind(d.due)
        .bind(to_json(d)?)
        .execute(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<coffer_domain::events::Delivery>> {
        self.fetch_all_data(
            sqlx::query(
                "SELECT data FROM event_delivery WHERE state = 'pending' AND due <= ? ORDER BY due LIMIT ?",
            )
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(1000)),
        )
        .await
    }

    async fn dead_letters(
        &self,
        subscription: &str,
    ) -> Result<Vec<coffer_domain::events::Delivery>> {
        self.fetch_all_data(
            sqlx::query(
                "SELECT data FROM event_delivery WHERE subscription = ? AND state = 'deadLettered' ORDER BY rowid DESC",
            )
            .bind(lc(subscription)),
        )
        .await
    }
}

#[async_trait]
impl AuditSink for SqliteStore {
    async fn record(&self, rec: &AuditRecord) -> Result<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.audit
            .tx
            .send(WriteJob::Audit((rec.time, Some(to_json(rec)?), done)))
            .await
            .map_err(|_| DomainError::Internal("the audit writer has stopped".into()))?;
        wait.await
            .map_err(|_| DomainError::Internal("the audit writer has stopped".into()))?
    }

    async fn query(&self, f: &AuditFilter) -> Result<Vec<serde_json::Value>> {
        // Read your writes: records queued without waiting (blob requests) are committed first.
        let (done, wait) = tokio::sync::oneshot::channel();
        self.audit
            .tx
            .send(WriteJob::Audit((0, None, done)))
            .await
            .map_err(|_| DomainError::Internal("the audit writer has stopped".into()))?;
        wait.await
            .map_err(|_| DomainError::Internal("the audit writer has stopped".into()))??;
        let mut sql = String::from("SELECT seq, data FROM audit WHERE seq > ?");
        let mut binds: Vec<String> = Vec::new();
        if f.from.is_some() {
            sql.push_str(" AND time >= ?");
        }
        if f.to.is_some() {
            sql.push_str(" AND time <= ?");
        }
        for (v, clause) in [
            (
                &f.resource,
                " AND (lower(json_extract(data, '$.resourceId')) = ? OR lower(json_extract(data, '$.resourceId')) LIKE ? ESCAPE '\\')",
            ),
            (
                &f.operation,
                " AND lower(json_extract(data, '$.operationName')) = ?",
            ),
            (
                &f.result,
                " AND lower(json_extract(data, '$.resultType')) = ?",
            ),
            (
                &f.correlation,
                " AND lower(json_extract(data, '$.correlationId')) = ?",
            ),
            (
                &f.caller,
                " AND ? IN (lower(json_extract(data, '$.identity.oid')), lower(json_extract(data, '$.identity.appid')), lower(json_extract(data, '$.identity.upn')))",
            ),
        ] {
            if let Some(v) = v {
                sql.push_str(clause);
                let v = v.to_ascii_lowercase();
                if clause.contains("LIKE") {
                    let esc = v
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_");
                    binds.push(v);
                    binds.push(format!("{}/%", esc.trim_end_matches('/')));
                } else {
                    binds.push(v);
                }
            }
        }
        if let Some(k) = &f.key {
            sql.push_str(" AND (lower(json_extract(data, '$.properties.id')) LIKE ? ESCAPE '\\' OR lower(json_extract(data, '$.properties.id')) LIKE ? ESCAPE '\\')");
            let esc = k
                .to_ascii_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            binds.push(format!("%/keys/{esc}"));
            binds.push(format!("%/keys/{esc}/%"));
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(f.after.unwrap_or(0));
        if let Some(t) = f.from {
            q = q.bind(t);
        }
        if let Some(t) = f.to {
            q = q.bind(t);
        }
        for b in binds {
            q = q.bind(b);
        }
        let limit = i64::try_from(f.limit.clamp(1, 10_000)).unwrap_or(1000);
        let rows = q.bind(limit).fetch_all(&self.pool).await.map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut v: serde_json::Value = from_json(r.get::<&str, _>("data"))?;
            v["seq"] = serde_json::json!(r.get::<i64, _>("seq"));
            out.push(v);
        }
        Ok(out)
    }

    async fn prune(&self, before: i64) -> Result<u64> {
        // The newest checkpoint that covers only records older than `before`.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let cut: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(c.seq) FROM audit_checkpoint c WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.seq <= c.seq AND a.time >= ?)",
        )
        .bind(before)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(cut) = cut else { return Ok(0) };
        let n = sqlx::query("DELETE FROM audit WHERE seq <= ?")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        // Keep the cut checkpoint: it anchors the chain of what remains.
        sqlx::query("DELETE FROM audit_checkpoint WHERE seq < ?")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(n)
    }

    async fn record_queued(&self, rec: &AuditRecord) -> Result<()> {
        let (done, _) = tokio::sync::oneshot::channel();
        self.audit
            .tx
            .send(WriteJob::Audit((rec.time, Some(to_json(rec)?), done)))
            .await
            .map_err(|_| DomainError::Internal("the audit writer has stopped".into()))
    }
}

impl SqliteStore {
    /// Audit records in order (the query API comes with the audit issue).
    pub async fn audit_records(&self) -> Result<Vec<serde_json::Value>> {
        self.fetch_all_data(sqlx::query("SELECT data FROM audit ORDER BY seq"))
            .await
    }

    /// Key the audit chain and sign checkpoints from now on (set once, at start-up, with keys
    /// derived from the root key).
    pub fn set_audit_keys(&self, keys: AuditKeys) {
        let _ = self.audit.keys.set(keys);
    }

    /// Check the stored audit log (see `chain::verify`).
    pub async fn verify_audit(&self, keys: &AuditKeys) -> Result<chain::Verdict> {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(|r| (r.get::<i64, _>("seq"), r.get::<String, _>("hash")));
        let cps = sqlx::query("SELECT seq, hash, time, sig FROM audit_checkpoint ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| chain::Checkpoint {
                seq: r.get("seq"),
                hash: r.get("hash"),
                time: r.get("time"),
                sig: hex::decode(r.get::<&str, _>("sig")).unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        let rows = sqlx::query("SELECT seq, time, data, hash FROM audit ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| chain::Row {
                seq: r.get("seq"),
                time: r.get("time"),
                data: r.get("data"),
                hash: r.get("hash"),
            });
        Ok(chain::verify(
            rows,
            &cps,
            head,
            &keys.chain,
            &keys.signer.public_key(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_domain::model::PrincipalKind;

    fn principal(id: &str, client: &str) -> Principal {
        Principal {
            object_id: id.into(),
            tenant_id: "t".into(),
            kind: PrincipalKind::ServicePrincipal,
            display_name: "x".into(),
            client_id: Some(client.into()),
            secret_verifier: None,
            username: None,
            password_verifier: None,
            is_admin: false,
            resource_id: None,
            created: 0,
        }
    }

    #[tokio::test]
    async fn principals_and_assignments_round_trip() -> Result<()> {
        let s = SqliteStore::memory().await?;
        s.insert_principal(&principal("P1", "C1")).await?;
        assert!(s.insert_principal(&principal("p2", "c1")).await.is_err());
        assert_eq!(
            s.find_principal_by_client_id("c1")
                .await?
                .map(|p| p.object_id),
            Some("P1".into())
        );
        let a = RoleAssignment {
            name: "n1".into(),
            scope: "/subscriptions/S/resourceGroups/RG".into(),
            principal_id: "P1".into(),
            principal_type: "ServicePrincipal".into(),
            role_definition_id: "r".into(),
            created: 0,
            created_by: "x".into(),
        };
        s.put_role_assignment(&a).await?;
        assert!(matches!(
            s.put_role_assignment(&a).await,
            Err(DomainError::RoleAssignmentExists)
        ));
        assert_eq!(s.list_role_assignments_for_principal("p1").await?.len(), 1);
        assert!(
            s.get_role_assignment("/subscriptions/s/resourcegroups/rg/", "N1")
                .await?
                .is_some()
        );
        s.put_resource_group(&ResourceGroup {
            subscription_id: "S".into(),
            name: "RG".into(),
            location: "eastus".into(),
            tags: serde_json::json!({}),
            created: 0,
        })
        .await?;
        assert!(s.delete_resource_group("s", "rg").await?);
        assert!(s.list_role_assignments().await?.is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn audit_records_keep_their_order() -> Result<()> {
        use coffer_domain::audit::AuditIdentity;
        let s = std::sync::Arc::new(SqliteStore::memory().await?);
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.record(&AuditRecord {
                    time: i,
                    resource_id: format!("r{i}"),
                    operation_name: "KeyGet".into(),
                    result_type: "Success".into(),
                    result_signature: 200,
                    caller_ip_address: String::new(),
                    identity: AuditIdentity::default(),
                    request_id: String::new(),
                    correlation_id: String::new(),
                    message: "it's \"quoted\"".into(),
                    ..Default::default()
                })
                .await
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| DomainError::Internal(e.to_string()))??;
        }
        let recs = s.audit_records().await?;
        assert_eq!(recs.len(), 50);
        assert_eq!(recs[0]["message"], "it's \"quoted\"");
        Ok(())
    }

    #[tokio::test]
    async fn a_query_sees_records_queued_before_it() -> Result<()> {
        let s = SqliteStore::memory().await?;
        for i in 0..20 {
            s.record_queued(&AuditRecord {
                time: i,
                operation_name: "GetBlob".into(),
                ..Default::default()
            })
            .await?;
        }
        let seen = s
            .query(&AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .await?;
        assert_eq!(seen.len(), 20);
        Ok(())
    }

    #[tokio::test]
    async fn audit_retention_prunes_whole_batches_and_the_rest_verifies() -> Result<()> {
        use coffer_domain::audit::chain::{ChainKey, Signer, Verdict};
        let s = SqliteStore::memory().await?;
        let keys = || -> Result<AuditKeys> {
            Ok(AuditKeys {
                chain: ChainKey::new(&[1u8; 32]),
                signer: Signer::from_seed(&[9u8; 32])
                    .ok_or_else(|| DomainError::Internal("signer".into()))?,
            })
        };
        let pk = keys()?;
        s.set_audit_keys(keys()?);
        for t in [100, 200, 300, 400] {
            s.record(&AuditRecord {
                time: t,
                operation_name: format!("op{t}"),
                ..Default::default()
            })
            .await?;
        }
        assert!(matches!(
            s.verify_audit(&pk).await?,
            Verdict::Intact { records: 4, .. }
        ));
        // Everything before 250 that a checkpoint covers goes (checkpoints are periodic: here
        // only the first batch has one), and the rest still verifies.
        assert_eq!(s.prune(250).await?, 1);
        assert!(matches!(
            s.verify_audit(&pk).await?,
            Verdict::Intact { records: 3, .. }
        ));
        let left = s
            .query(&coffer_domain::audit::AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .await?;
        assert_eq!(left.len(), 3);
        assert_eq!(left[0]["operationName"], "op200");
        // Pruning again with the same cut deletes nothing.
        assert_eq!(s.prune(250).await?, 0);
        Ok(())
    }

    /// A container "c" of account "acct", for the blob tests.
    async fn with_container(s: &SqliteStore) -> Result<()> {
        s.create_container(&coffer_domain::model::ContainerRecord {
            account: "acct".into(),
            name: "c".into(),
            etag: "e".into(),
            last_modified: 0,
            metadata: None,
            public_access: None,
            default_scope: None,
            deny_scope_override: false,
        })
        .await
        .map(drop)
    }

    /// Concurrent commits of one blob are group-committed, yet each gets back the version it
    /// replaced, as if they had run one after the other: every version but the last is
    /// replaced exactly once, and exactly one commit found no previous version.
    #[tokio::test]
    async fn group_committed_blob_versions_form_one_chain() -> Result<()> {
        let s = std::sync::Arc::new(SqliteStore::memory().await?);
        with_container(&s).await?;
        let version = |etag: String| BlobRecord {
            account: "acct".into(),
            container: "c".into(),
            name: "b".into(),
            region: "eastus".into(),
            etag,
            ..Default::default()
        };
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (s, rec) = (s.clone(), version(format!("v{i}")));
                tokio::spawn(async move { s.commit_blob(&rec, &Expect::Any).await })
            })
            .collect();
        let mut replaced = Vec::new();
        for t in tasks {
            let old = t
                .await
                .map_err(|e| DomainError::Internal(e.to_string()))??;
            replaced.push(old.old.map(|o| o.etag));
        }
        assert_eq!(replaced.iter().filter(|o| o.is_none()).count(), 1);
        let mut seen: Vec<String> = replaced.into_iter().flatten().collect();
        let last = s
            .get_blob("acct", "c", "b")
            .await?
            .map(|b| b.etag)
            .unwrap_or_default();
        seen.push(last);
        seen.sort();
        let mut all: Vec<String> = (0..40).map(|i| format!("v{i}")).collect();
        all.sort();
        assert_eq!(seen, all, "each version replaced once, the last one kept");
        // A properties update applies only to the version it read: one read before another
        // write committed is refused, and the newer version stays.
        let current = s.get_blob("acct", "c", "b").await?;
        let current = current.ok_or(DomainError::BlobNotFound)?;
        let mut stale = version("stale-update".into());
        assert!(!s.update_blob(&stale, "v-not-current").await?);
        stale.content_type = Some("text/plain".into());
        assert!(s.update_blob(&stale, &current.etag).await?);
        let now = s.get_blob("acct", "c", "b").await?;
        assert_eq!(now.map(|b| b.etag).as_deref(), Some("stale-update"));
        Ok(())
    }

    /// Conditional commits and deletes apply only to the version they expect, checked in the
    /// commit's transaction: of concurrent writes that all expect one version (group-committed
    /// together or not), exactly one commits; a refused one changes nothing.
    #[tokio::test]
    async fn conditional_commits_apply_to_the_version_they_expect() -> Result<()> {
        let s = std::sync::Arc::new(SqliteStore::memory().await?);
        with_container(&s).await?;
        let version = |etag: &str| BlobRecord {
            account: "acct".into(),
            container: "c".into(),
            name: "b".into(),
            region: "eastus".into(),
            etag: etag.into(),
            ..Default::default()
        };
        let refused = |r: Result<Replaced>| matches!(r, Err(DomainError::ConditionNotMet));
        let refused_delete =
            |r: Result<Option<BlobRecord>>| matches!(r, Err(DomainError::ConditionNotMet));
        // create only if absent: once
        assert!(
            s.commit_blob(&version("v0"), &Expect::Absent)
                .await?
                .old
                .is_none()
        );
        assert!(refused(s.commit_blob(&version("x"), &Expect::Absent).await));
        let etag = |e: &str| Expect::Etag(e.into());
        assert!(refused(s.commit_blob(&version("x"), &etag("nope")).await));
        assert_eq!(
            s.get_blob("acct", "c", "b")
                .await?
                .map(|b| b.etag)
                .as_deref(),
            Some("v0")
        );
        // 20 writers that all read v0: one wins
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (s, rec) = (s.clone(), version(&format!("w{i}")));
                tokio::spawn(async move { s.commit_blob(&rec, &Expect::Etag("v0".into())).await })
            })
            .collect();
        let mut won = Vec::new();
        for t in tasks {
            match t.await.map_err(|e| DomainError::Internal(e.to_string()))? {
                Ok(r) => won.push(r.old.map(|o| o.etag)),
                Err(DomainError::ConditionNotMet) => {}
                Err(e) => return Err(e),
            }
        }
        assert_eq!(won, vec![Some("v0".to_string())]);
        let current = s.get_blob("acct", "c", "b").await?.map(|b| b.etag);
        let current = current.ok_or(DomainError::BlobNotFound)?;
        // deletes likewise
        assert!(refused_delete(
            s.delete_blob("acct", "c", "b", &etag("v0")).await
        ));
        assert!(refused_delete(
            s.delete_blob("acct", "c", "b", &Expect::Absent).await
        ));
        assert!(s.get_blob("acct", "c", "b").await?.is_some());
        let gone = s.delete_blob("acct", "c", "b", &etag(&current)).await?;
        assert_eq!(gone.map(|b| b.etag), Some(current));
        assert!(
            s.delete_blob("acct", "c", "b", &Expect::Absent)
                .await?
                .is_none()
        );
        Ok(())
    }

    /// A block list commits only blocks that are still there when it commits (staged for
    /// the blob, or parts of the version it replaces): a block re-staged after the list was
    /// resolved refuses the commit, whose caller resolves it again. The staged blocks a
    /// commit drops come back to it (each to one caller only), and the collector drops a
    /// staged block only if it still holds the object it found.
    #[tokio::test]
    async fn block_lists_commit_only_blocks_still_there() -> Result<()> {
        use coffer_domain::model::Part;
        let s = SqliteStore::memory().await?;
        with_container(&s).await?;
        let part = |id: &str, object: &str| Part {
            object_id: object.into(),
            size: 1,
            block_id: Some(id.into()),
            format: None,
        };
        let stage = |id: &str, object: &str| StagedBlock {
            account: "acct".into(),
            container: "c".into(),
            blob: "b".into(),
            region: "eastus".into(),
            part: part(id, object),
            created: 1,
            cpk: None,
            scope: None,
        };
        let version = |etag: &str, parts: Vec<Part>| BlobRecord {
            account: "acct".into(),
            container: "c".into(),
            name: "b".into(),
            region: "eastus".into(),
            etag: etag.into(),
            parts,
            ..Default::default()
        };
        assert!(s.put_staged_block(&stage("A", "o1")).await?.is_none());
        assert!(s.put_staged_block(&stage("B", "o2")).await?.is_none());
        // A list resolved to A = o1; A is re-staged (o3, and o1 is deleted) before it commits.
        let replaced = s.put_staged_block(&stage("A", "o3")).await?;
        assert_eq!(replaced.map(|b| b.part.object_id).as_deref(), Some("o1"));
        let stale = version("v1", vec![part("A", "o1")]);
        assert!(matches!(
            s.commit_blob(&stale, &Expect::Absent).await,
            Err(DomainError::ConditionNotMet)
        ));
        assert_eq!(s.list_staged_blocks("acct", "c", "b").await?.len(), 2);
        assert!(s.any_staged_block_id("acct", "c", "b").await?.is_some());
        assert!(s.any_staged_block_id("acct", "c", "none").await?.is_none());
        // Resolved again: commits, and gets back both staged blocks it dropped.
        let r = s
            .commit_blob(&version("v1", vec![part("A", "o3")]), &Expect::Absent)
            .await?;
        let mut dropped: Vec<String> = r.dropped.into_iter().map(|b| b.part.object_id).collect();
        dropped.sort();
        assert_eq!(dropped, ["o2", "o3"]);
        assert!(s.list_staged_blocks("acct", "c", "b").await?.is_empty());
        // Committed blocks of the version replaced may be kept; blocks from nowhere may not.
        let keep = version("v2", vec![part("A", "o3")]);
        assert!(s.commit_blob(&keep, &etag_of("v1")).await?.old.is_some());
        assert!(matches!(
            s.commit_blob(&version("v3", vec![part("Z", "o9")]), &etag_of("v2"))
                .await,
            Err(DomainError::ConditionNotMet)
        ));
        // Put Blob (no blocks) over staged blocks drops them and hands them back.
        s.put_staged_block(&stage("C", "o4")).await?;
        let r = s.commit_blob(&version("v4", vec![]), &Expect::Any).await?;
        assert_eq!(r.dropped.len(), 1);
        // The collector: a block re-staged since it was listed is not dropped.
        let old = stage("D", "o5");
        s.put_staged_block(&old).await?;
        s.put_staged_block(&stage("D", "o6")).await?;
        assert!(!s.delete_staged_block(&old).await?);
        assert!(s.delete_staged_block(&stage("D", "o6")).await?);
        assert!(!s.delete_staged_block(&stage("D", "o6")).await?);
        // Nothing is written into a container deleted meanwhile.
        s.delete_container("acct", "c").await?;
        assert!(matches!(
            s.put_staged_block(&stage("E", "o7")).await,
            Err(DomainError::ContainerNotFound)
        ));
        assert!(matches!(
            s.commit_blob(&version("v5", vec![]), &Expect::Any).await,
            Err(DomainError::ContainerNotFound)
        ));
        assert!(s.get_blob("acct", "c", "b").await?.is_none());
        Ok(())
    }

    fn etag_of(e: &str) -> Expect {
        Expect::Etag(e.into())
    }

    #[tokio::test]
    async fn resources_are_case_insensitive() -> Result<()> {
        let s = SqliteStore::memory().await?;
        let r = Resource {
            id: "/subscriptions/S/resourceGroups/RG/providers/Microsoft.KeyVault/vaults/KV".into(),
            resource_type: "Microsoft.KeyVault/vaults".into(),
            subscription_id: "S".into(),
            resource_group: Some("RG".into()),
            name: "KV".into(),
            location: Some("eastus".into()),
            body: serde_json::json!({"a": 1}),
        };
        assert!(s.put_resource(&r).await?);
        assert!(!s.put_resource(&r).await?);
        assert!(s.get_resource(&r.id.to_lowercase()).await?.is_some());
        assert_eq!(
            s.list_resources("s", Some("rg"), Some("microsoft.keyvault/VAULTS"))
                .await?
                .len(),
            1
        );
        assert_eq!(s.list_resources("s", None, None).await?.len(), 1);
        assert_eq!(
            s.find_resources_by_name("Microsoft.KeyVault/vaults", "kv")
                .await?
                .len(),
            1
        );
        assert!(s.delete_resource(&r.id).await?);
        Ok(())
    }
}
