//! The blob service: containers and block blobs, every byte encrypted at rest.
//!
//! A blob's bytes are one encrypted object (`docs/design/blob-format.md`) in the byte store of
//! its account's region, under a fresh DEK wrapped by the account's AEK; user metadata is
//! sealed under the AEK. A write becomes visible only when its metadata record commits, after
//! the object is durable; the object it replaces is deleted afterwards (a crash in between
//! leaves an orphan object, never a mix).
use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use coffer_crypto::aead::SealingKey;
use coffer_crypto::b64;
use coffer_crypto::object::{
    DEFAULT_SEGMENT_LOG2, InfraKey, MAX_HEADER_LEN, ObjectDecryptor, ObjectEncryptor,
    ObjectIdentity, TAG_LEN,
};
use coffer_secret::SecretBytes;

use crate::bytes::ByteStore;
use crate::clock::Clock;
use crate::identity::Caller;
use crate::mgmt::{BlobAccount, MgmtService};
use crate::model::{BlobRecord, ContainerRecord, CopyInfo, Part, StagedBlock};
use crate::rbac::{ActionKind, Rbac};
use crate::store::{Expect, MetaStore};
use crate::{DomainError, Result};

/// A write's conditions (Azure's conditional headers), evaluated against the committed
/// version the write would replace (`None`: there is none); an error refuses the write.
/// The commit then expects that very version, so the conditions cannot pass for one version
/// and apply to another; when a concurrent write got in between, they are evaluated again
/// against the newer version (a few times at most, then 412).
/// A container operation's conditions against the container as it is (Err: refused).
pub type ContainerCondition<'a> = &'a (dyn Fn(&ContainerRecord) -> Result<()> + Send + Sync);
pub type WriteCondition<'a> = &'a (dyn Fn(Option<&BlobRecord>) -> Result<()> + Send + Sync);

/// Times a conditional write evaluates its conditions again after losing a race.
const CONDITION_RETRIES: usize = 5;

/// How a blob request was authenticated.
pub enum BlobAuth {
    /// Shared Key (or an account SAS): the account key holder, full access.
    SharedKey,
    /// A bearer token: authorized by RBAC data actions.
    Token(Caller),
}

pub mod actions {
    pub const CONTAINER_READ: &str =
        "Microsoft.Storage/storageAccounts/blobServices/containers/read";
    pub const CONTAINER_WRITE: &str =
        "Microsoft.Storage/storageAccounts/blobServices/containers/write";
    pub const CONTAINER_DELETE: &str =
        "Microsoft.Storage/storageAccounts/blobServices/containers/delete";
    pub const BLOB_READ: &str =
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";
    pub const BLOB_WRITE: &str =
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write";
    pub const BLOB_DELETE: &str =
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete";
}

/// A source of request body bytes (implemented by the protocol layer). Chunks are shared
/// buffers: the body's frames pass to the checksum thread and the encryption uncopied.
#[async_trait]
pub trait ByteSource: Send {
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>>;
}

/// Bodies at least this large have their checksums computed on a blocking thread beside the
/// encryption (MD5 alone is slower than AES-GCM: inline, it set the upload rate); smaller ones
/// inline, where a thread hand-off would cost more than the hashing.
const OFFLOAD_CHECKSUMS: u64 = 1 << 20;

/// MD5 (always) and CRC-64 (when the client sent one) of an upload's plaintext.
enum Checksummer {
    Inline(
        coffer_crypto::checksum::Md5,
        Option<coffer_crypto::checksum::Crc64>,
    ),
    Offloaded {
        tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
        done: tokio::task::JoinHandle<([u8; 16], Option<[u8; 8]>)>,
    },
}

impl Checksummer {
    fn start(len: u64, crc: bool) -> Self {
        use coffer_crypto::checksum::{Crc64, Md5};
        if len < OFFLOAD_CHECKSUMS {
            return Self::Inline(Md5::new(), crc.then(Crc64::new));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
        let done = tokio::task::spawn_blocking(move || {
            let (mut md5, mut crc) = (Md5::new(), crc.then(Crc64::new));
            while let Some(chunk) = rx.blocking_recv() {
                md5.update(&chunk);
                if let Some(c) = crc.as_mut() {
                    c.update(&chunk);
                }
            }
            (md5.finish(), crc.map(Crc64::finish))
        });
        Self::Offloaded { tx, done }
    }

    /// Account for `chunk`; hands it back for encryption.
    async fn update(&mut self, chunk: bytes::Bytes) -> Result<bytes::Bytes> {
        match self {
            Self::Inline(md5, crc) => {
                md5.update(&chunk);
                if let Some(c) = crc.as_mut() {
                    c.update(&chunk);
                }
            }
            Self::Offloaded { tx, .. } => tx
                .send(chunk.clone())
                .await
                .map_err(|_| DomainError::Internal("the checksum thread stopped".into()))?,
        }
        Ok(chunk)
    }

    async fn finish(self) -> Result<([u8; 16], Option<[u8; 8]>)> {
        match self {
            Self::Inline(md5, crc) => Ok((md5.finish(), crc.map(|c| c.finish()))),
            Self::Offloaded { tx, done } => {
                drop(tx);
                done.await
                    .map_err(|_| DomainError::Internal("the checksum thread failed".into()))
            }
        }
    }
}

/// Content headers of a blob.
#[derive(Debug, Clone, Default)]
pub struct ContentHeaders {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub content_md5: Option<String>,
}

/// Container names: 3–63 lower-case letters, digits and single dashes, starting and ending
/// with a letter or digit (`$root` aside).
pub fn validate_container_name(name: &str) -> Result<()> {
    let b = name.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(DomainError::InvalidName {
            kind: "container",
            name: name.chars().take(64).collect(),
            rule: "3-63 characters of lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
        })
    }
}

/// Block ids: base64 of at most 64 bytes (Azure's rule).
pub fn validate_block_id(id: &str) -> Result<()> {
    match coffer_crypto::b64::std_decode(id) {
        Some(b) if !b.is_empty() && b.len() <= 64 => Ok(()),
        _ => Err(DomainError::InvalidProperty(
            "the block id must be base64 of 1 to 64 bytes".into(),
        )),
    }
}

/// Blob names: 1–1024 characters, no control characters.
pub fn validate_blob_name(name: &str) -> Result<()> {
    if !name.is_empty() && name.chars().count() <= 1024 && !name.chars().any(|c| c.is_control()) {
        Ok(())
    } else {
        Err(DomainError::InvalidName {
            kind: "blob",
            name: name.chars().take(64).collect(),
            rule: "1-1024 characters, no control characters",
        })
    }
}

fn meta_aad(account: &str, container: &str, blob: &str) -> Vec<u8> {
    format!("coffer-meta-v1\n{account}\n{container}\n{blob}").into_bytes()
}

/// One entry of a hierarchical listing.
pub enum ListItem {
    Blob(Box<BlobRecord>),
    Prefix(String),
}

pub struct BlobService {
    store: Arc<dyn MetaStore>,
    mgmt: Arc<MgmtService>,
    rbac: Arc<Rbac>,
    clock: Arc<Clock>,
    regions: HashMap<String, Arc<dyn ByteStore>>,
}

/// Segments read from the byte store in one call by a reader (1 MiB of 64 KiB segments):
/// one thread hand-off and one open per span instead of per segment.
const READ_AHEAD_SEGMENTS: u64 = 16;

/// A decrypting reader over one part's range, a span of segments at a time.
struct PartReader {
    object_id: String,
    dec: ObjectDecryptor,
    next: u64,
    last: u64,
    /// Plaintext offsets [start, end) within the part.
    start: u64,
    end: u64,
}

/// A decrypting reader over a range of a blob: it walks the blob's parts and releases only
/// segments whose tags verified.
pub struct BlobReader {
    bytes: Arc<dyn ByteStore>,
    aek: SecretBytes,
    /// The outer layer's key of double-encrypted (version 2) objects.
    infra: SecretBytes,
    account: String,
    container: String,
    blob: String,
    /// (part, offset of the part in the blob).
    parts: Vec<(Part, u64)>,
    next_part: usize,
    current: Option<PartReader>,
    /// Verified plaintext of the span read last, not yet returned (slices of one buffer).
    ready: std::collections::VecDeque<bytes::Bytes>,
    start: u64,
    end: u64,
}

impl PartReader {
    /// The span starting at segment `first`: (first, last, byte offset, byte length).
    fn span_at(&self, first: u64) -> (u64, u64, u64, u64) {
        let last = self.last.min(first + READ_AHEAD_SEGMENTS - 1);
        let at = self.dec.segment_offset(first);
        (
            first,
            last,
            at,
            self.dec.segment_offset(last) + self.dec.segment_len(last) - at,
        )
    }
}

impl BlobReader {
    async fn open_part(&self, part: &Part, from: u64, to: u64) -> Result<PartReader> {
        let identity = ObjectIdentity {
            account: self.account.clone(),
            container: self.container.clone(),
            blob: self.blob.clone(),
            object_id: part.object_id.clone(),
        };
        // The header (its length depends on the version and the key ids; at most
        // MAX_HEADER_LEN bytes, docs/design/blob-format.md), read in one call.
        let prefix = self
            .bytes
            .read_prefix(&part.object_id, MAX_HEADER_LEN as u64)
            .await?;
        let dec = ObjectDecryptor::open(&self.aek, Some(&self.infra), &prefix, &identity).map_err(
            |_| DomainError::Internal("a stored blob header failed authentication".into()),
        )?;
        if dec.header.plaintext_len != part.size {
            return Err(DomainError::Internal("stored part size mismatch".into()));
        }
        if part.format.is_some_and(|f| f != dec.header.version()) {
            return Err(DomainError::Internal(
                "a stored object is not in the format its blob was written in".into(),
            ));
        }
        let (first, last) = if from < to {
            dec.segments_for(from, to)
        } else {
            (1, 0)
        };
        Ok(PartReader {
            object_id: part.object_id.clone(),
            dec,
            next: first,
            last,
            start: from,
            end: to,
        })
    }

    /// The next chunk of verified plaintext, or None at the end of the range. Segments are
    /// read [`READ_AHEAD_SEGMENTS`] at a time and every one of a span is verified before any
    /// of it is returned; the chunks are slices of the span's buffer, not copies.
    pub async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Ok(Some(chunk));
            }
            if let Some(r) = self.current.as_mut() {
                if r.next <= r.last && r.start < r.end {
                    let (first, last, at, len) = r.span_at(r.next);
                    let mut span = self.bytes.read(&r.object_id, at, len).await?;
                    r.next = last + 1;
                    let base = span.as_ptr().addr();
                    let mut ranges = Vec::with_capacity((last - first + 1) as usize);
                    for i in first..=last {
                        let from_span = (r.dec.segment_offset(i) - at) as usize;
                        let seg_len = r.dec.segment_len(i) as usize;
                        let seg = span
                            .get_mut(from_span..from_span + seg_len)
                            .ok_or_else(|| DomainError::Internal("short segment read".into()))?;
                        let plain = r.dec.open_segment(i, seg).map_err(|_| {
                            DomainError::Internal(
                                "a stored blob segment failed authentication".into(),
                            )
                        })?;
                        let (p0, plen) = (plain.as_ptr().addr() - base, plain.len() as u64);
                        let seg_start = i * r.dec.header.segment_size();
                        let from = r.start.saturating_sub(seg_start).min(plen) as usize;
                        let to = (r.end - seg_start).min(plen) as usize;
                        if from < to {
                            ranges.push(p0 + from..p0 + to);
                        }
                    }
                    let span = bytes::Bytes::from(span);
                    self.ready
                        .extend(ranges.into_iter().map(|rg| span.slice(rg)));
                    continue;
                }
                self.current = None;
            }
            // Open the next part that overlaps [start, end).
            let Some((part, offset)) = self.parts.get(self.next_part).cloned() else {
                return Ok(None);
            };
            self.next_part += 1;
            let (p_start, p_end) = (offset, offset + part.size);
            if p_end <= self.start || p_start >= self.end || part.size == 0 {
                continue;
            }
            let from = self.start.max(p_start) - p_start;
            let to = self.end.min(p_end) - p_start;
            self.current = Some(self.open_part(&part, from, to).await?);
        }
    }
}

/// Kinds of Put Block List entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockListKind {
    Committed,
    Uncommitted,
    Latest,
}

/// Whether a request's customer-provided key (or its absence) is the blob's.
pub fn check_cpk(rec: &BlobRecord, acct: &BlobAccount) -> Result<()> {
    match (&rec.cpk, &acct.cpk) {
        (None, None) => Ok(()),
        (Some(a), Some(b)) if coffer_secret::ct_eq(a.as_bytes(), b.as_bytes()) => Ok(()),
        (Some(_), None) => Err(DomainError::Cpk {
            code: "BlobUsesCustomerSpecifiedEncryption",
            message: "The blob is encrypted with a customer-provided key, but the request does not provide it (x-ms-encryption-key, x-ms-encryption-key-sha256).".into(),
        }),
        (Some(_), Some(_)) => Err(DomainError::Cpk {
            code: "BlobUsesCustomerSpecifiedEncryption",
            message: "The customer-provided key of the request is not the key the blob is encrypted with.".into(),
        }),
        (None, Some(_)) => Err(DomainError::Cpk {
            code: "BlobDoesNotUseCustomerSpecifiedEncryption",
            message: "The blob is not encrypted with a customer-provided key; send the request without one.".into(),
        }),
    }
}

/// The objects of `old` parts that `keep` no longer references.
fn unreferenced(old: Vec<Part>, keep: &[Part]) -> Vec<String> {
    let keep: std::collections::HashSet<&str> = keep.iter().map(|k| k.object_id.as_str()).collect();
    // Each once: a block listed twice is one object (deleted twice, a recycled file would be
    // taken from whoever was handed it meanwhile).
    let mut seen = std::collections::HashSet::new();
    old.into_iter()
        .filter(|p| !keep.contains(p.object_id.as_str()))
        .map(|p| p.object_id)
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// Delete objects, best effort: one left behind is an orphan for the garbage collector.
async fn delete_objects(bytes: &dyn ByteStore, ids: Vec<String>) {
    for id in ids {
        if let Err(e) = bytes.delete(&id).await {
            tracing::warn!(error = %e, "orphaned object left behind");
        }
    }
}

/// Transfer checksums a client sent with an upload, checked against the received bytes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checksums {
    /// `Content-MD5`.
    pub md5: Option<[u8; 16]>,
    /// `x-ms-content-crc64` (little-endian, as the SDK sends it).
    pub crc64: Option<[u8; 8]>,
}

/// Azure's limits: a Put Blob body, and a block.
pub const MAX_PUT_BLOB_BYTES: u64 = 5000 * 1024 * 1024;
pub const MAX_BLOCK_BYTES: u64 = 4000 * 1024 * 1024;

/// Uncommitted blocks expire after 7 days, as in Azure.
pub const STAGED_BLOCK_TTL: i64 = 7 * 86_400;
/// Unreferenced objects younger than this are left alone (uploads in flight).
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The largest number of blocks a blob may have (Azure's limit).
pub const MAX_BLOCKS: usize = 50_000;

impl BlobService {
    pub fn new(
        store: Arc<dyn MetaStore>,
        mgmt: Arc<MgmtService>,
        rbac: Arc<Rbac>,
        clock: Arc<Clock>,
        regions: HashMap<String, Arc<dyn ByteStore>>,
    ) -> Self {
        Self {
            store,
            mgmt,
            rbac,
            clock,
            regions,
        }
    }

    /// The account and its key; `correlation` (the request id) goes into the audit records of
    /// any vault call this causes.
    pub async fn account(&self, name: &str, correlation: &str) -> Result<BlobAccount> {
        self.mgmt.blob_account(name, correlation).await
    }

    pub async fn account_keys(&self, name: &str) -> Result<Vec<SecretBytes>> {
        self.mgmt.account_keys(name).await
    }

    fn bytes_for(&self, region: &str) -> Result<Arc<dyn ByteStore>> {
        self.regions
            .get(region)
            .cloned()
            .ok_or_else(|| DomainError::Internal(format!("no byte store for region {region}")))
    }

    /// Authorize a request's data or control action (used before reporting that the
    /// account's customer-managed key cannot be used, so only authorized callers learn it).
    pub async fn authorize_action(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        action: &str,
        kind: ActionKind,
        container: Option<&str>,
    ) -> Result<()> {
        self.authorize(auth, acct, action, kind, container).await
    }

    async fn authorize(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        action: &str,
        kind: ActionKind,
        container: Option<&str>,
    ) -> Result<()> {
        match auth {
            BlobAuth::SharedKey => Ok(()),
            BlobAuth::Token(c) => {
                let scope = match container {
                    Some(ct) => format!("{}/blobServices/default/containers/{ct}", acct.id),
                    None => acct.id.clone(),
                };
                self.rbac
                    .authorize(&c.object_id, action, kind, &scope)
                    .await
            }
        }
    }

    fn etag(&self) -> Result<String> {
        let r = coffer_crypto::random::bytes(8)?;
        Ok(format!(
            "\"0x{}\"",
            r.iter().map(|b| format!("{b:02X}")).collect::<String>()
        ))
    }

    fn seal_metadata(
        acct: &BlobAccount,
        container: &str,
        blob: &str,
        meta: &[(String, String)],
    ) -> Result<Option<String>> {
        if meta.is_empty() {
            return Ok(None);
        }
        let key = SealingKey::from_bytes(acct.aek()?.duplicate())?;
        let json = serde_json::to_vec(meta).map_err(|e| DomainError::Internal(e.to_string()))?;
        Ok(Some(b64::std_encode(
            &key.seal(&meta_aad(&acct.name, container, blob), &json)?,
        )))
    }

    pub fn open_metadata(
        acct: &BlobAccount,
        container: &str,
        blob: &str,
        sealed: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        let Some(s) = sealed else {
            return Ok(Vec::new());
        };
        let key = SealingKey::from_bytes(acct.aek()?.duplicate())?;
        let raw =
            b64::std_decode(s).ok_or_else(|| DomainError::Internal("metadata encoding".into()))?;
        let plain = key
            .open(&meta_aad(&acct.name, container, blob), &raw)
            .map_err(|_| DomainError::Internal("metadata failed authentication".into()))?;
        serde_json::from_slice(plain.expose()).map_err(|e| DomainError::Internal(e.to_string()))
    }

    // ---- containers -----------------------------------------------------------------------

    pub async fn create_container(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        name: &str,
        meta: &[(String, String)],
        default_scope: Option<&str>,
        deny_scope_override: bool,
    ) -> Result<ContainerRecord> {
        self.authorize(
            auth,
            acct,
            actions::CONTAINER_WRITE,
            ActionKind::Control,
            Some(name),
        )
        .await?;
        validate_container_name(name)?;
        let default_scope = match default_scope {
            Some(s) => {
                self.mgmt
                    .scope_key(&acct.name, s, &acct.correlation)
                    .await?;
                Some(s.to_string())
            }
            None if deny_scope_override => {
                return Err(DomainError::InvalidProperty(
                    "x-ms-deny-encryption-scope-override needs x-ms-default-encryption-scope"
                        .into(),
                ));
            }
            None => None,
        };
        let c = ContainerRecord {
            account: acct.name.clone(),
            name: name.into(),
            etag: self.etag()?,
            last_modified: self.clock.now(),
            metadata: Self::seal_metadata(acct, name, "", meta)?,
            public_access: None,
            default_scope,
            deny_scope_override,
        };
        if !self.store.create_container(&c).await? {
            return Err(DomainError::ContainerAlreadyExists);
        }
        Ok(c)
    }

    /// The encryption scope a write into `container` uses: the request's, else the
    /// container's default; refused when the container denies overriding its default.
    pub async fn write_scope(
        &self,
        acct: &BlobAccount,
        container: &str,
        requested: Option<&str>,
    ) -> Result<Option<crate::mgmt::ScopeKey>> {
        let c = self.store.get_container(&acct.name, container).await?;
        let default = c.as_ref().and_then(|c| c.default_scope.clone());
        if let (Some(c), Some(r)) = (&c, requested)
            && c.deny_scope_override
            && Some(r) != c.default_scope.as_deref()
        {
            return Err(DomainError::Conflict(format!(
                "The container's default encryption scope ({}) may not be overridden.",
                c.default_scope.as_deref().unwrap_or("")
            )));
        }
        let Some(name) = requested.map(str::to_string).or(default) else {
            return Ok(None);
        };
        let mut scope = self
            .mgmt
            .scope_key(&acct.name, &name, &acct.correlation)
            .await?;
        // The name as the request (or the container's default) spells it.
        scope.name = name;
        Ok(Some(scope))
    }

    pub async fn get_container(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        name: &str,
    ) -> Result<ContainerRecord> {
        self.authorize(
            auth,
            acct,
            actions::CONTAINER_READ,
            ActionKind::Control,
            Some(name),
        )
        .await?;
        self.store
            .get_container(&acct.name, name)
            .await?
            .ok_or(DomainError::ContainerNotFound)
    }

    /// Get Blob Service Properties: the stored sections (see `set_service_properties`).
    pub async fn service_properties(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        self.authorize(
            auth,
            acct,
            "Microsoft.Storage/storageAccounts/blobServices/read",
            ActionKind::Control,
            None,
        )
        .await?;
        self.mgmt.blob_service_properties(&acct.name).await
    }

    /// Set Blob Service Properties: sections are stored as sent and merged (a section not
    /// sent keeps its value). This server does not act on them (no logging, metrics, CORS
    /// or static website), which the documentation says.
    pub async fn set_service_properties(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        sections: Vec<(String, String)>,
    ) -> Result<()> {
        self.authorize(
            auth,
            acct,
            "Microsoft.Storage/storageAccounts/blobServices/write",
            ActionKind::Control,
            None,
        )
        .await?;
        self.mgmt
            .set_blob_service_properties(&acct.name, sections)
            .await
    }

    pub async fn list_containers(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
    ) -> Result<Vec<ContainerRecord>> {
        self.authorize(
            auth,
            acct,
            actions::CONTAINER_READ,
            ActionKind::Control,
            None,
        )
        .await?;
        self.store.list_containers(&acct.name).await
    }

    pub async fn delete_container(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        name: &str,
        cond: Option<ContainerCondition<'_>>,
    ) -> Result<()> {
        self.authorize(
            auth,
            acct,
            actions::CONTAINER_DELETE,
            ActionKind::Control,
            Some(name),
        )
        .await?;
        // (Checked before the deletion, not in its transaction: a container changes only by
        // Set Container Metadata and ACLs, rarely at the same moment.)
        if let Some(cond) = cond {
            let c = self
                .store
                .get_container(&acct.name, name)
                .await?
                .ok_or(DomainError::ContainerNotFound)?;
            cond(&c)?;
        }
        let blobs = self
            .store
            .delete_container(&acct.name, name)
            .await?
            .ok_or(DomainError::ContainerNotFound)?;
        for b in blobs {
            self.forget_parts(&b.region, b.parts, &[]).await;
        }
        Ok(())
    }

    // ---- blobs ----------------------------------------------------------------------------

    /// Put Blob: stream `len` bytes from `body` into a new encrypted object, then commit.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_blob(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        len: u64,
        body: &mut dyn ByteSource,
        headers: ContentHeaders,
        meta: &[(String, String)],
        cond: Option<WriteCondition<'_>>,
        expected: Checksums,
    ) -> Result<BlobRecord> {
        self.authorize(
            auth,
            acct,
            actions::BLOB_WRITE,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        validate_blob_name(name)?;
        if len > MAX_PUT_BLOB_BYTES {
            return Err(DomainError::BodyTooLarge(
                "The request body is too large: Put Blob takes at most 5000 MiB (stage larger \
                 blobs as blocks)."
                    .into(),
            ));
        }
        self.require_container(&acct.name, container).await?;
        // Conditions first: a refused write reads no body.
        let expect = self.evaluate(cond, &acct.name, container, name).await?;
        let (part, digest) = self
            .write_object(acct, container, name, len, body, None, expected)
            .await?;
        let now = self.clock.now();
        let rec = BlobRecord {
            account: acct.name.clone(),
            container: container.into(),
            name: name.into(),
            region: acct.region.clone(),
            parts: vec![part],
            size: len,
            etag: self.etag()?,
            created: now,
            last_modified: now,
            content_type: headers
                .content_type
                .or_else(|| Some("application/octet-stream".into())),
            content_encoding: headers.content_encoding,
            content_language: headers.content_language,
            content_disposition: headers.content_disposition,
            cache_control: headers.cache_control,
            // A single-request upload records its MD5 (the client's, or ours), as Azure does.
            content_md5: headers
                .content_md5
                .or_else(|| Some(coffer_crypto::b64::std_encode(&digest))),
            metadata: Self::seal_metadata(acct, container, name, meta)?,
            cpk: acct.cpk.clone(),
            scope: acct.scope_name(),
            copy: None,
        };
        self.commit_written(rec, expect, cond).await
    }

    /// Commit a record whose object this request wrote; if its conditions refuse it, the
    /// object is nobody's and is deleted.
    async fn commit_written(
        &self,
        rec: BlobRecord,
        expect: Expect,
        cond: Option<WriteCondition<'_>>,
    ) -> Result<BlobRecord> {
        let (region, written) = (rec.region.clone(), rec.parts.clone());
        match self.commit_replacing(rec, expect, cond).await {
            Err(
                e @ (DomainError::ConditionNotMet
                | DomainError::Conflict(_)
                | DomainError::ContainerNotFound),
            ) => {
                self.forget_parts(&region, written, &[]).await;
                Err(e)
            }
            other => other,
        }
    }

    /// ContainerNotFound unless the container exists.
    async fn require_container(&self, account: &str, container: &str) -> Result<()> {
        match self.store.get_container(account, container).await? {
            Some(_) => Ok(()),
            None => Err(DomainError::ContainerNotFound),
        }
    }

    /// Evaluate a write's conditions against the committed version (under the write
    /// permission, checked by the caller first, so a 412 reveals nothing it could not learn
    /// by writing); what the commit must then find.
    async fn evaluate(
        &self,
        cond: Option<WriteCondition<'_>>,
        account: &str,
        container: &str,
        name: &str,
    ) -> Result<Expect> {
        let Some(cond) = cond else {
            return Ok(Expect::Any);
        };
        let current = self.store.get_blob(account, container, name).await?;
        cond(current.as_ref())?;
        Ok(Expect::current(current.as_ref()))
    }

    pub async fn get_blob_record(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
    ) -> Result<BlobRecord> {
        self.authorize(
            auth,
            acct,
            actions::BLOB_READ,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        self.require_container(&acct.name, container).await?;
        let rec = self
            .store
            .get_blob(&acct.name, container, name)
            .await?
            .ok_or(DomainError::BlobNotFound)?;
        check_cpk(&rec, acct)?;
        if let Some(scope) = &rec.scope {
            // A disabled scope refuses every request on its blobs.
            self.mgmt
                .scope_key(&acct.name, scope, &acct.correlation)
                .await?;
        }
        Ok(rec)
    }

    /// A reader of plaintext bytes `[start, end)` of a blob (`end` ≤ size).
    pub async fn read(
        &self,
        acct: &BlobAccount,
        rec: &BlobRecord,
        start: u64,
        end: u64,
    ) -> Result<BlobReader> {
        let mut offset = 0;
        let mut parts = Vec::with_capacity(rec.parts.len());
        for p in &rec.parts {
            parts.push((p.clone(), offset));
            offset += p.size;
        }
        if offset != rec.size {
            return Err(DomainError::Internal("stored blob size mismatch".into()));
        }
        let aek = match &rec.scope {
            Some(scope) => {
                self.mgmt
                    .scope_key(&acct.name, scope, &acct.correlation)
                    .await?
                    .key
            }
            None => acct.aek()?.duplicate(),
        };
        Ok(BlobReader {
            infra: self.mgmt.infrastructure_key()?.0,
            bytes: self.bytes_for(&rec.region)?,
            aek,
            account: rec.account.clone(),
            container: rec.container.clone(),
            blob: rec.name.clone(),
            parts,
            next_part: 0,
            current: None,
            ready: Default::default(),
            start,
            end,
        })
    }

    /// Encrypt `len` bytes from `body` into a new object; returns it, and the MD5 of the
    /// plaintext, once durable. A mismatch with an `expected` checksum discards the object.
    #[allow(clippy::too_many_arguments)]
    async fn write_object(
        &self,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        len: u64,
        body: &mut dyn ByteSource,
        block_id: Option<String>,
        expected: Checksums,
    ) -> Result<(Part, [u8; 16])> {
        let mut sums = Checksummer::start(len, expected.crc64.is_some());
        let bytes = self.bytes_for(&acct.region)?;
        let object_id = bytes.allocate(len).await?;
        let identity = ObjectIdentity {
            account: acct.name.clone(),
            container: container.into(),
            blob: name.into(),
            object_id: object_id.clone(),
        };
        // An encryption scope's key, when the request writes in one; else the account's (or
        // the customer's) key.
        let (wrap_key, wrap_id) = match &acct.scope {
            Some(s) => (&s.key, &s.aek_id),
            None => (acct.aek()?, &acct.aek_id),
        };
        // Infrastructure encryption (the account's or the scope's): a second layer under the
        // infrastructure key (object format v2).
        let layered = acct.infra || acct.scope.as_ref().is_some_and(|s| s.infra);
        let (mut enc, header) = if layered {
            let (infra, infra_id) = self.mgmt.infrastructure_key()?;
            ObjectEncryptor::layered(
                wrap_key,
                wrap_id,
                InfraKey {
                    key: &infra,
                    id: infra_id,
                },
                &identity,
                len,
                DEFAULT_SEGMENT_LOG2,
            )?
        } else {
            ObjectEncryptor::new(wrap_key, wrap_id, &identity, len, DEFAULT_SEGMENT_LOG2)?
        };
        let mut writer = bytes.create(&object_id).await?;
        writer.write(&header).await?;
        let mut out = Vec::with_capacity((1 << DEFAULT_SEGMENT_LOG2) + 2 * TAG_LEN);
        let mut seen: u64 = 0;
        while let Some(chunk) = body.next_chunk().await? {
            seen += chunk.len() as u64;
            if seen > len {
                return Err(DomainError::InvalidProperty(
                    "the body is longer than Content-Length".into(),
                ));
            }
            let chunk = sums.update(chunk).await?;
            enc.update(&chunk, &mut out)?;
            if !out.is_empty() {
                writer.write(&out).await?;
                out.clear();
            }
        }
        if seen != len {
            return Err(DomainError::InvalidProperty(
                "the body is shorter than Content-Length".into(),
            ));
        }
        let (digest, crc) = sums.finish().await?;
        // Dropping the writer discards the object: nothing becomes visible.
        if expected.md5.is_some_and(|e| e != digest) {
            return Err(DomainError::Md5Mismatch);
        }
        if let (Some(want), Some(c)) = (expected.crc64, crc)
            && c != want
        {
            return Err(DomainError::Crc64Mismatch);
        }
        enc.finish(&mut out)?;
        writer.write(&out).await?;
        writer.commit().await?;
        Ok((
            Part {
                object_id,
                size: len,
                block_id,
                format: Some(if layered {
                    coffer_crypto::object::VERSION_LAYERED
                } else {
                    coffer_crypto::object::VERSION
                }),
            },
            digest,
        ))
    }

    /// Commit a new version of a blob; the objects of the version it replaced are deleted
    /// after the response, off the request's path (nothing references them any more; if the
    /// process stops first, the garbage collector finds them).
    async fn commit_replacing(
        &self,
        rec: BlobRecord,
        mut expect: Expect,
        cond: Option<WriteCondition<'_>>,
    ) -> Result<BlobRecord> {
        let mut retries = 0;
        let replaced = loop {
            match self.store.commit_blob(&rec, &expect).await {
                Err(DomainError::ConditionNotMet)
                    if cond.is_some() && retries < CONDITION_RETRIES =>
                {
                    retries += 1;
                    expect = self
                        .evaluate(cond, &rec.account, &rec.container, &rec.name)
                        .await?;
                }
                other => break other?,
            }
        };
        let doomed = unreferenced(replaced.unused(), &rec.parts);
        if !doomed.is_empty()
            && let Ok(bytes) = self.bytes_for(&rec.region)
        {
            tokio::spawn(async move { delete_objects(&*bytes, doomed).await });
        }
        Ok(rec)
    }

    /// Delete the objects of `old` parts that `keep` no longer references.
    async fn forget_parts(&self, region: &str, old: Vec<Part>, keep: &[Part]) {
        if let Ok(bytes) = self.bytes_for(region) {
            delete_objects(&*bytes, unreferenced(old, keep)).await;
        }
    }

    /// Put Block: stage one block (its own encrypted object).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_block(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        block_id: &str,
        len: u64,
        body: &mut dyn ByteSource,
        expected: Checksums,
    ) -> Result<()> {
        self.authorize(
            auth,
            acct,
            actions::BLOB_WRITE,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        validate_blob_name(name)?;
        validate_block_id(block_id)?;
        if len > MAX_BLOCK_BYTES {
            return Err(DomainError::BodyTooLarge(
                "The request body is too large: a block may hold at most 4000 MiB.".into(),
            ));
        }
        self.require_container(&acct.name, container).await?;
        // A blob's uncommitted block ids all have one length (as Azure): comparing with one
        // of them is enough (a blob may have 100,000 of them).
        let id_len = |id: &str| coffer_crypto::b64::std_decode(id).map(|b| b.len());
        if self
            .store
            .any_staged_block_id(&acct.name, container, name)
            .await?
            .is_some_and(|other| id_len(&other) != id_len(block_id))
        {
            return Err(DomainError::BadInput {
                code: "InvalidBlobOrBlock",
                message: "The specified blob or block content is invalid: the block ids of a \
                          blob must all have the same length."
                    .into(),
            });
        }
        let (part, _) = self
            .write_object(
                acct,
                container,
                name,
                len,
                body,
                Some(block_id.to_string()),
                expected,
            )
            .await?;
        let staged = StagedBlock {
            account: acct.name.clone(),
            container: container.into(),
            blob: name.into(),
            region: acct.region.clone(),
            part,
            created: self.clock.now(),
            cpk: acct.cpk.clone(),
            scope: acct.scope_name(),
        };
        match self.store.put_staged_block(&staged).await {
            Ok(Some(old)) => self.forget_parts(&old.region, vec![old.part], &[]).await,
            Ok(None) => {}
            Err(e) => {
                // (The container was deleted meanwhile.) The object is nobody's.
                self.forget_parts(&staged.region, vec![staged.part], &[])
                    .await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Put Block List: commit the listed blocks (from the staged and/or committed ones).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_block_list(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        list: &[(BlockListKind, String)],
        headers: ContentHeaders,
        meta: &[(String, String)],
        cond: Option<WriteCondition<'_>>,
    ) -> Result<BlobRecord> {
        self.authorize(
            auth,
            acct,
            actions::BLOB_WRITE,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        validate_blob_name(name)?;
        if list.len() > MAX_BLOCKS {
            return Err(DomainError::InvalidProperty(format!(
                "a blob may have at most {MAX_BLOCKS} blocks"
            )));
        }
        self.require_container(&acct.name, container).await?;
        // The list is resolved against the blocks and the version read here, and commits only
        // if that version is still the current one (else again, against the newer one): a
        // concurrent commit has dropped those staged blocks, or the objects of the committed
        // blocks it replaced.
        for _ in 0..=CONDITION_RETRIES {
            if let Some(rec) = self
                .commit_block_list(acct, container, name, list, headers.clone(), meta, cond)
                .await?
            {
                return Ok(rec);
            }
        }
        Err(DomainError::ConditionNotMet)
    }

    /// One attempt of Put Block List (see there): None if another write committed first.
    #[allow(clippy::too_many_arguments)]
    async fn commit_block_list(
        &self,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        list: &[(BlockListKind, String)],
        headers: ContentHeaders,
        meta: &[(String, String)],
        cond: Option<WriteCondition<'_>>,
    ) -> Result<Option<BlobRecord>> {
        let staged = self
            .store
            .list_staged_blocks(&acct.name, container, name)
            .await?;
        let current = self.store.get_blob(&acct.name, container, name).await?;
        if let Some(cond) = cond {
            cond(current.as_ref())?;
        }
        let committed: Vec<Part> = current
            .as_ref()
            .map(|c| c.parts.clone())
            .unwrap_or_default();
        let find_staged = |id: &str| {
            staged
                .iter()
                .find(|s| s.part.block_id.as_deref() == Some(id))
                .map(|s| (s.part.clone(), (s.cpk.clone(), s.scope.clone())))
        };
        let current_keys = current
            .as_ref()
            .map(|c| (c.cpk.clone(), c.scope.clone()))
            .unwrap_or_default();
        let find_committed = |id: &str| {
            committed
                .iter()
                .find(|p| p.block_id.as_deref() == Some(id))
                .map(|p| (p.clone(), current_keys.clone()))
        };
        let mut parts = Vec::with_capacity(list.len());
        for (kind, id) in list {
            let p = match kind {
                BlockListKind::Committed => find_committed(id),
                BlockListKind::Uncommitted => find_staged(id),
                BlockListKind::Latest => find_staged(id).or_else(|| find_committed(id)),
            };
            let (p, (block_cpk, block_scope)) = p.ok_or_else(|| {
                DomainError::InvalidBlockList(format!("block {id} is not available"))
            })?;
            // Scope names are case-insensitive (a block staged in "S" commits in "s").
            let lower = |s: Option<String>| s.map(|s| s.to_ascii_lowercase());
            if lower(block_scope) != lower(acct.scope_name()) {
                return Err(DomainError::InvalidBlockList(format!(
                    "block {id} was written in another encryption scope than this request's"
                )));
            }
            // Every block must be encrypted with the key (or lack of one) of this request.
            if block_cpk != acct.cpk {
                return Err(DomainError::Cpk {
                    code: "BlobUsesCustomerSpecifiedEncryption",
                    message: format!(
                        "Block {id} was written with {} than this request provides.",
                        if block_cpk.is_some() {
                            "another customer-provided key"
                        } else {
                            "the account's key, not the customer-provided key"
                        }
                    ),
                });
            }
            parts.push(p);
        }
        let size = parts.iter().map(|p| p.size).sum();
        let now = self.clock.now();
        let rec = BlobRecord {
            account: acct.name.clone(),
            container: container.into(),
            name: name.into(),
            region: acct.region.clone(),
            parts,
            size,
            etag: self.etag()?,
            created: current.as_ref().map(|c| c.created).unwrap_or(now),
            last_modified: now,
            content_type: headers
                .content_type
                .or_else(|| Some("application/octet-stream".into())),
            content_encoding: headers.content_encoding,
            content_language: headers.content_language,
            content_disposition: headers.content_disposition,
            cache_control: headers.cache_control,
            content_md5: headers.content_md5,
            metadata: Self::seal_metadata(acct, container, name, meta)?,
            cpk: acct.cpk.clone(),
            scope: acct.scope_name(),
            copy: None,
        };
        let replaced = match self
            .store
            .commit_blob(&rec, &Expect::current(current.as_ref()))
            .await
        {
            // Another write committed first, or a block was re-staged: resolve again.
            Err(DomainError::ConditionNotMet) => return Ok(None),
            other => other?,
        };
        // Everything staged or committed before and not part of the new blob goes (as the
        // commit found it: a block listed above may have been re-staged since, its old object
        // deleted by the Put Block that replaced it).
        self.forget_parts(&rec.region, replaced.unused(), &rec.parts)
            .await;
        Ok(Some(rec))
    }

    /// Change a committed blob's record (not its bytes) under the write permission; gives it a
    /// new ETag and modification time.
    #[allow(clippy::too_many_arguments)]
    async fn update_record(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        needs_key: bool,
        cond: Option<WriteCondition<'_>>,
        change: impl Fn(&mut BlobRecord) -> Result<()>,
    ) -> Result<BlobRecord> {
        self.authorize(
            auth,
            acct,
            actions::BLOB_WRITE,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        // Applied to the version current when it is written: if another write committed in
        // between (a Put Blob, whose replaced objects are then deleted), start again from it
        // rather than restore the older version's parts. The conditions are evaluated against
        // the version the update then applies to.
        for _ in 0..5 {
            let mut rec = self
                .store
                .get_blob(&acct.name, container, name)
                .await?
                .ok_or(DomainError::BlobNotFound)?;
            if let Some(cond) = cond {
                cond(Some(&rec))?;
            }
            if needs_key {
                check_cpk(&rec, acct)?;
            }
            if let Some(scope) = &rec.scope {
                self.mgmt
                    .scope_key(&acct.name, scope, &acct.correlation)
                    .await?;
            }
            let read = rec.etag.clone();
            change(&mut rec)?;
            rec.etag = self.etag()?;
            rec.last_modified = self.clock.now();
            if self.store.update_blob(&rec, &read).await? {
                return Ok(rec);
            }
        }
        // Five writes won the race in a row: not the caller's fault, and not a conflict the
        // client could resolve (Azure has no code for it); logged as an internal error.
        Err(DomainError::Internal(
            "the blob kept changing while its properties were being updated".into(),
        ))
    }

    /// Set Blob Metadata: replaces the user metadata.
    pub async fn set_blob_metadata(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        meta: &[(String, String)],
        cond: Option<WriteCondition<'_>>,
    ) -> Result<BlobRecord> {
        let sealed = Self::seal_metadata(acct, container, name, meta)?;
        self.update_record(auth, acct, container, name, true, cond, |rec| {
            rec.metadata = sealed.clone();
            Ok(())
        })
        .await
    }

    /// Set Blob Properties: replaces the content headers.
    pub async fn set_blob_properties(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        headers: ContentHeaders,
        cond: Option<WriteCondition<'_>>,
    ) -> Result<BlobRecord> {
        // Properties are not encrypted: no customer-provided key needed (as Azure).
        self.update_record(auth, acct, container, name, false, cond, |rec| {
            rec.content_type = headers.content_type.clone();
            rec.content_encoding = headers.content_encoding.clone();
            rec.content_language = headers.content_language.clone();
            rec.content_disposition = headers.content_disposition.clone();
            rec.cache_control = headers.cache_control.clone();
            rec.content_md5 = headers.content_md5.clone();
            rec.copy = None;
            Ok(())
        })
        .await
    }

    /// Set Container Metadata.
    pub async fn set_container_metadata(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        meta: &[(String, String)],
        cond: Option<ContainerCondition<'_>>,
    ) -> Result<ContainerRecord> {
        self.authorize(
            auth,
            acct,
            actions::CONTAINER_WRITE,
            ActionKind::Control,
            Some(container),
        )
        .await?;
        let mut c = self
            .store
            .get_container(&acct.name, container)
            .await?
            .ok_or(DomainError::ContainerNotFound)?;
        if let Some(cond) = cond {
            cond(&c)?;
        }
        c.metadata = Self::seal_metadata(acct, container, "", meta)?;
        c.etag = self.etag()?;
        c.last_modified = self.clock.now();
        self.store.put_container(&c).await?;
        Ok(c)
    }

    /// Copy Blob within the account, synchronously: the bytes are decrypted and re-encrypted
    /// (a blob's identity is bound into its ciphertext, so bytes cannot move as they are).
    /// The source is read as `src_acct` (the account, or with the source's customer-provided
    /// key), the destination written as `acct` (its key, scope or customer-provided key).
    /// Metadata: `meta` when given, else the source's.
    #[allow(clippy::too_many_arguments)]
    pub async fn copy_blob(
        &self,
        auth: &BlobAuth,
        src_acct: &BlobAccount,
        acct: &BlobAccount,
        (src_container, src_name): (&str, &str),
        (container, name): (&str, &str),
        source_url: &str,
        meta: Option<&[(String, String)]>,
        cond: Option<WriteCondition<'_>>,
        src_cond: Option<WriteCondition<'_>>,
    ) -> Result<BlobRecord> {
        let src = self
            .get_blob_record(auth, src_acct, src_container, src_name)
            .await?;
        // The source's conditions hold for the version that is read (its record, read once).
        if let Some(c) = src_cond {
            c(Some(&src))?;
        }
        self.authorize(
            auth,
            acct,
            actions::BLOB_WRITE,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        validate_blob_name(name)?;
        self.require_container(&acct.name, container).await?;
        let expect = self.evaluate(cond, &acct.name, container, name).await?;
        let meta_vec = match meta {
            Some(m) => m.to_vec(),
            None => {
                Self::open_metadata(src_acct, src_container, src_name, src.metadata.as_deref())?
            }
        };
        struct ReaderSource(BlobReader);
        #[async_trait]
        impl ByteSource for ReaderSource {
            async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
                self.0.next_chunk().await
            }
        }
        let mut source = ReaderSource(self.read(src_acct, &src, 0, src.size).await?);
        let (part, _) = self
            .write_object(
                acct,
                container,
                name,
                src.size,
                &mut source,
                None,
                Checksums::default(),
            )
            .await?;
        let now = self.clock.now();
        let rec = BlobRecord {
            account: acct.name.clone(),
            container: container.into(),
            name: name.into(),
            region: acct.region.clone(),
            parts: vec![part],
            size: src.size,
            etag: self.etag()?,
            created: now,
            last_modified: now,
            content_type: src.content_type.clone(),
            content_encoding: src.content_encoding.clone(),
            content_language: src.content_language.clone(),
            content_disposition: src.content_disposition.clone(),
            cache_control: src.cache_control.clone(),
            content_md5: src.content_md5.clone(),
            metadata: Self::seal_metadata(acct, container, name, &meta_vec)?,
            cpk: acct.cpk.clone(),
            scope: acct.scope_name(),
            copy: Some(CopyInfo {
                id: coffer_crypto::random::uuid()?,
                source: source_url.split('?').next().unwrap_or_default().to_string(),
                completed: now,
                size: src.size,
            }),
        };
        self.commit_written(rec, expect, cond).await
    }

    /// Garbage collection: expire uncommitted blocks older than [`STAGED_BLOCK_TTL`] (test
    /// clock), then delete objects no record references that are older than
    /// [`ORPHAN_GRACE`] (wall clock: an upload's object exists a moment before its record).
    /// Returns (expired blocks, collected objects).
    pub async fn collect_garbage(&self) -> Result<(usize, usize)> {
        let now = self.clock.now();
        let mut expired = 0;
        for b in self
            .store
            .staged_blocks_before(now - STAGED_BLOCK_TTL)
            .await?
        {
            // Unless it was re-staged or committed since it was listed.
            if self.store.delete_staged_block(&b).await? {
                self.forget_parts(&b.region, vec![b.part], &[]).await;
                expired += 1;
            }
        }
        // Candidates first, references second: an object committed in between is referenced.
        let mut candidates = Vec::new();
        for (region, bytes) in &self.regions {
            for id in bytes.list_older_than(ORPHAN_GRACE).await? {
                candidates.push((region.clone(), id));
            }
        }
        if candidates.is_empty() {
            return Ok((expired, 0));
        }
        let live = self.store.referenced_objects().await?;
        let mut collected = 0;
        for (region, id) in candidates {
            if !live.contains(&id)
                && self
                    .bytes_for(&region)?
                    .delete_orphan(&id, ORPHAN_GRACE)
                    .await?
            {
                collected += 1;
            }
        }
        Ok((expired, collected))
    }

    /// Get Block List: (committed, uncommitted) blocks as (id, size).
    pub async fn get_block_list(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
    ) -> Result<(Option<BlobRecord>, Vec<(String, u64)>, Vec<(String, u64)>)> {
        self.authorize(
            auth,
            acct,
            actions::BLOB_READ,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        self.require_container(&acct.name, container).await?;
        let current = self.store.get_blob(&acct.name, container, name).await?;
        let staged = self
            .store
            .list_staged_blocks(&acct.name, container, name)
            .await?;
        if current.is_none() && staged.is_empty() {
            return Err(DomainError::BlobNotFound);
        }
        let committed = current
            .as_ref()
            .map(|c| {
                c.parts
                    .iter()
                    .filter_map(|p| p.block_id.clone().map(|id| (id, p.size)))
                    .collect()
            })
            .unwrap_or_default();
        let uncommitted = staged
            .iter()
            .filter_map(|s| s.part.block_id.clone().map(|id| (id, s.part.size)))
            .collect();
        Ok((current, committed, uncommitted))
    }

    pub async fn delete_blob(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        name: &str,
        cond: Option<WriteCondition<'_>>,
    ) -> Result<()> {
        self.authorize(
            auth,
            acct,
            actions::BLOB_DELETE,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        self.require_container(&acct.name, container).await?;
        let mut retries = 0;
        let old = loop {
            let expect = self.evaluate(cond, &acct.name, container, name).await?;
            match self
                .store
                .delete_blob(&acct.name, container, name, &expect)
                .await
            {
                Err(DomainError::ConditionNotMet) if retries < CONDITION_RETRIES => retries += 1,
                other => break other?,
            }
        }
        .ok_or(DomainError::BlobNotFound)?;
        self.forget_parts(&old.region, old.parts, &[]).await;
        Ok(())
    }

    /// List blobs (flat, or hierarchical with a delimiter). Returns the items and the next
    /// marker when more remain.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_blobs(
        &self,
        auth: &BlobAuth,
        acct: &BlobAccount,
        container: &str,
        prefix: &str,
        delimiter: Option<&str>,
        marker: &str,
        max: usize,
    ) -> Result<(Vec<ListItem>, Option<String>)> {
        self.authorize(
            auth,
            acct,
            actions::BLOB_READ,
            ActionKind::Data,
            Some(container),
        )
        .await?;
        self.require_container(&acct.name, container).await?;
        // Markers are exclusive: the next page starts after the last item of this one. A
        // collapsed prefix's marker sorts after every name under it.
        let mut items = Vec::new();
        let mut cursor = marker.to_string();
        let mut last_marker = String::new();
        let mut last_prefix: Option<String> = None;
        loop {
            let batch = self
                .store
                .list_blobs(&acct.name, container, prefix, &cursor, 1000)
                .await?;
            let exhausted = batch.len() < 1000;
            for b in batch {
                cursor = b.name.clone();
                let rest = &b.name[prefix.len()..];
                let item_prefix = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                    rest.find(d)
                        .map(|i| format!("{prefix}{}", &rest[..i + d.len()]))
                });
                if let Some(p) = &item_prefix
                    && last_prefix.as_deref() == Some(p.as_str())
                {
                    continue;
                }
                if items.len() == max {
                    return Ok((items, Some(last_marker)));
                }
                match item_prefix {
                    Some(p) => {
                        last_marker = format!("{p}\u{10FFFF}");
                        last_prefix = Some(p.clone());
                        items.push(ListItem::Prefix(p));
                    }
                    None => {
                        last_marker = b.name.clone();
                        items.push(ListItem::Blob(Box::new(b)));
                    }
                }
            }
            if exhausted {
                return Ok((items, None));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(id: &str) -> Part {
        Part {
            object_id: id.into(),
            size: 1,
            block_id: Some("b".into()),
            format: None,
        }
    }

    /// What a replaced version leaves unreferenced: each object once (a block listed twice
    /// is one object), none the new version keeps.
    #[test]
    fn unreferenced_objects_are_listed_once() {
        let old = vec![part("x"), part("y"), part("x"), part("z"), part("y")];
        assert_eq!(unreferenced(old, &[part("z")]), ["x", "y"]);
    }
}
