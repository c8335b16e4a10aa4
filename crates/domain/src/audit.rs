//! Audit records, shaped like Azure's AuditEvent. Written through [`AuditSink`] before the
//! response is sent. Records never carry secrets (tokens, client secrets, key material).
use async_trait::async_trait;
use serde::Serialize;

use crate::Result;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub time: i64,
    pub resource_id: String,
    pub operation_name: String,
    /// "Success" or "Failure".
    pub result_type: String,
    /// The HTTP status the caller saw.
    pub result_signature: u16,
    pub caller_ip_address: String,
    pub identity: AuditIdentity,
    pub request_id: String,
    pub correlation_id: String,
    pub message: String,
    /// Time the operation took, in milliseconds.
    pub duration_ms: u64,
    /// Operation details: the key or blob acted on, the request path, the client's user agent.
    /// Never secrets.
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub properties: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditIdentity {
    pub tid: String,
    pub oid: String,
    pub appid: String,
    /// Sign-in name of a user; for requests without a token, how they authenticated
    /// ("account key", "SAS").
    #[serde(skip_serializing_if = "String::is_empty")]
    pub upn: String,
}

#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Write a record durably (returns once it is committed).
    async fn record(&self, rec: &AuditRecord) -> Result<()>;
    /// Queue a record for the next commit without waiting for it (blob data requests, whose
    /// latency must not include an fsync). Fails only when the log cannot take records.
    async fn record_queued(&self, rec: &AuditRecord) -> Result<()> {
        self.record(rec).await
    }
    /// Records matching `f`, oldest first, each with its `seq`.
    async fn query(&self, f: &AuditFilter) -> Result<Vec<serde_json::Value>>;
    /// Delete records older than `before` (whole checkpointed batches only, so the rest still
    /// verifies). Returns how many were deleted.
    async fn prune(&self, before: i64) -> Result<u64>;
}

/// A query over the audit log. Text filters match case-insensitively; `resource` matches a
/// resource id or any id below it.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub resource: Option<String>,
    /// A key name: records whose key id (`properties.id`) names it.
    pub key: Option<String>,
    pub operation: Option<String>,
    /// Object id, application id or sign-in name of the caller.
    pub caller: Option<String>,
    /// `Success`, `Failure` or `Started`.
    pub result: Option<String>,
    pub correlation: Option<String>,
    /// Records after this sequence number (paging).
    pub after: Option<i64>,
    pub limit: usize,
}

/// The tamper-evident audit log. Every record is chained to the one before it by
/// HMAC-SHA256 under a key derived from the root key, so nobody without that key can edit,
/// remove, reorder or add a record without breaking the chain; the store keeps the chain head
/// beside the log (a trigger updates it with every insert), so records cut off the end are
/// noticed too; and periodic checkpoints sign the head with an Ed25519 key, also derived from
/// the root key, which anyone with the public key can check. A consistent rewrite of the head
/// and the log's end is only detectable against a copy of the head kept elsewhere
/// (`coffer audit verify` prints it).
pub mod chain {
    use aws_lc_rs::hmac;
    use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

    pub type Hash = [u8; 32];
    pub const GENESIS: Hash = [0u8; 32];

    /// The chain key (HMAC-SHA256).
    pub struct ChainKey(hmac::Key);

    impl ChainKey {
        pub fn new(secret: &[u8]) -> Self {
            Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
        }
    }

    /// `HMAC(prev ‖ seq ‖ time ‖ data)`, unambiguous by construction (fixed widths, data last).
    pub fn link(key: &ChainKey, prev: &Hash, seq: i64, time: i64, data: &str) -> Hash {
        let mut ctx = hmac::Context::with_key(&key.0);
        ctx.update(b"coffer-audit-v2");
        ctx.update(prev);
        ctx.update(&seq.to_be_bytes());
        ctx.update(&time.to_be_bytes());
        ctx.update(data.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn checkpoint_message(seq: i64, head: &Hash, time: i64) -> Vec<u8> {
        let mut m = b"coffer-audit-checkpoint-v1".to_vec();
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(head);
        m.extend_from_slice(&time.to_be_bytes());
        m
    }

    /// Signs checkpoints (the key is derived from the root key, never stored).
    pub struct Signer(Ed25519KeyPair);

    impl Signer {
        pub fn from_seed(seed: &[u8]) -> Option<Self> {
            Ed25519KeyPair::from_seed_unchecked(seed).ok().map(Self)
        }
        pub fn public_key(&self) -> Vec<u8> {
            self.0.public_key().as_ref().to_vec()
        }
        pub fn sign(&self, seq: i64, head: &Hash, time: i64) -> Vec<u8> {
            self.0
                .sign(&checkpoint_message(seq, head, time))
                .as_ref()
                .to_vec()
        }
    }

    /// A stored record, as the verifier reads it.
    pub struct Row {
        pub seq: i64,
        pub time: i64,
        pub data: String,
        /// Hex chain hash; `None` for records written before chaining existed.
        pub hash: Option<String>,
    }

    /// A stored checkpoint.
    pub struct Checkpoint {
        pub seq: i64,
        pub hash: String,
        pub time: i64,
        pub sig: Vec<u8>,
    }

    #[derive(Debug, PartialEq, Eq)]
    pub enum Verdict {
        Intact {
            records: u64,
            checkpoints: u64,
            head_seq: i64,
            head: String,
        },
        /// The first record that is not what the log says it is.
        Broken { seq: i64, reason: String },
    }

    /// Check the whole log: the chain (`key`), the stored head, and every checkpoint
    /// (`public_key`).
    pub fn verify(
        rows: impl IntoIterator<Item = Row>,
        checkpoints: &[Checkpoint],
        head: Option<(i64, String)>,
        key: &ChainKey,
        public_key: &[u8],
    ) -> Verdict {
        let verifier = UnparsedPublicKey::new(&signature::ED25519, public_key);
        for c in checkpoints {
            let ok = hex::decode(&c.hash)
                .ok()
                .and_then(|h| <Hash>::try_from(h).ok())
                .is_some_and(|h| {
                    verifier
                        .verify(&checkpoint_message(c.seq, &h, c.time), &c.sig)
                        .is_ok()
                });
            if !ok {
                return Verdict::Broken {
                    seq: c.seq,
                    reason: format!("checkpoint at record {} has a bad signature", c.seq),
                };
            }
        }
        let mut cps = checkpoints.iter().peekable();
        let mut prev = GENESIS;
        let mut expected: Option<i64> = None;
        let mut last_good_checkpoint = 0i64;
        let (mut records, mut head_seq) = (0u64, 0i64);
        let mut legacy = false;
        for r in rows {
            let Some(stored) = &r.hash else {
                if expected.is_some() {
                    return Verdict::Broken {
                        seq: r.seq,
                        reason: format!("record {} has lost its chain hash", r.seq),
                    };
                }
                legacy = true;
                continue; // written before the log was chained
            };
            if expected.is_none() && !legacy && r.seq > 1 {
                // Older records were pruned: the signed checkpoint just before anchors the rest.
                match checkpoints.iter().find(|c| c.seq == r.seq - 1) {
                    Some(anchor) => {
                        prev = hex::decode(&anchor.hash)
                            .ok()
                            .and_then(|h| <Hash>::try_from(h).ok())
                            .unwrap_or(GENESIS);
                        last_good_checkpoint = anchor.seq;
                        while cps.peek().is_some_and(|c| c.seq <= anchor.seq) {
                            cps.next();
                        }
                    }
                    None => {
                        return Verdict::Broken {
                            seq: r.seq - 1,
                            reason: format!(
                                "records before {} are missing (no signed checkpoint anchors the log)",
                                r.seq
                            ),
                        };
                    }
                }
            }
            if let Some(e) = expected
                && r.seq != e
            {
                let reason = if r.seq > e {
                    format!("record {e} is missing (deleted)")
                } else {
                    format!("record {} is out of order", r.seq)
                };
                return Verdict::Broken { seq: e, reason };
            }
            let h = link(key, &prev, r.seq, r.time, &r.data);
            if hex::encode(h) != *stored {
                return Verdict::Broken {
                    seq: r.seq,
                    reason: format!(
                        "record {} was altered, or moved (its content does not match the chain)",
                        r.seq
                    ),
                };
            }
            // Checkpoints below this record must have matched an earlier one.
            while let Some(c) = cps.peek() {
                if c.seq < r.seq {
                    return Verdict::Broken {
                        seq: c.seq,
                        reason: format!("record {} is missing (a checkpoint covers it)", c.seq),
                    };
                }
                if c.seq == r.seq {
                    if c.hash != *stored {
                        return Verdict::Broken {
                            seq: last_good_checkpoint + 1,
                            reason: format!(
                                "records {}..={} were rewritten (checkpoint {} signed another chain)",
                                last_good_checkpoint + 1,
                                r.seq,
                                c.seq
                            ),
                        };
                    }
                    last_good_checkpoint = c.seq;
                    cps.next();
                    continue;
                }
                break;
            }
            prev = h;
            expected = Some(r.seq + 1);
            records += 1;
            head_seq = r.seq;
        }
        if let Some(c) = cps.next() {
            return Verdict::Broken {
                seq: head_seq + 1,
                reason: format!(
                    "records {}..={} are missing (truncated; checkpoint {} covers them)",
                    head_seq + 1,
                    c.seq,
                    c.seq
                ),
            };
        }
        let _ = last_good_checkpoint;
        if let Some((hs, hh)) = &head {
            if *hs > head_seq {
                return Verdict::Broken {
                    seq: head_seq + 1,
                    reason: format!(
                        "records {}..={hs} are missing (truncated; the log's head is record {hs})",
                        head_seq + 1
                    ),
                };
            }
            if *hs == head_seq && *hh != hex::encode(prev) {
                return Verdict::Broken {
                    seq: head_seq,
                    reason: format!("record {head_seq} does not match the log's head"),
                };
            }
        }
        Verdict::Intact {
            records,
            checkpoints: checkpoints.len() as u64,
            head_seq,
            head: hex::encode(prev),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn key() -> ChainKey {
            ChainKey::new(&[3u8; 32])
        }

        fn log(n: i64, signer: &Signer) -> (Vec<Row>, Vec<Checkpoint>) {
            let mut prev = GENESIS;
            let mut rows = Vec::new();
            let mut cps = Vec::new();
            for seq in 1..=n {
                let data = format!("{{\"n\":{seq}}}");
                prev = link(&key(), &prev, seq, 100 + seq, &data);
                rows.push(Row {
                    seq,
                    time: 100 + seq,
                    data,
                    hash: Some(hex::encode(prev)),
                });
                if seq % 3 == 0 || seq == n {
                    cps.push(Checkpoint {
                        seq,
                        hash: hex::encode(prev),
                        time: 100 + seq,
                        sig: signer.sign(seq, &prev, 100 + seq),
                    });
                }
            }
            (rows, cps)
        }

        fn broken_at(v: Verdict) -> i64 {
            match v {
                Verdict::Broken { seq, .. } => seq,
                Verdict::Intact { .. } => 0,
            }
        }

        #[test]
        fn intact_and_tampered_logs() {
            let Some(signer) = Signer::from_seed(&[7u8; 32]) else {
                return;
            };
            let pk = signer.public_key();
            let (rows, cps) = log(10, &signer);
            assert!(matches!(
                verify(rows, &cps, None, &key(), &pk),
                Verdict::Intact { records: 10, .. }
            ));
            // Edited.
            let (mut rows, cps) = log(10, &signer);
            rows[4].data = "{\"n\":999}".into();
            assert_eq!(broken_at(verify(rows, &cps, None, &key(), &pk)), 5);
            // Edited with the hashes of the rest recomputed: the checkpoint catches it.
            let (mut rows, cps) = log(10, &signer);
            let mut prev = link(&key(), &GENESIS, 1, 101, &rows[0].data);
            for (i, r) in rows.iter_mut().enumerate().skip(1) {
                if i == 4 {
                    r.data = "{\"n\":999}".into();
                }
                prev = link(&key(), &prev, r.seq, r.time, &r.data);
                r.hash = Some(hex::encode(prev));
            }
            assert_eq!(broken_at(verify(rows, &cps, None, &key(), &pk)), 4);
            // Deleted.
            let (mut rows, cps) = log(10, &signer);
            rows.remove(6);
            assert_eq!(broken_at(verify(rows, &cps, None, &key(), &pk)), 7);
            // Reordered.
            let (mut rows, cps) = log(10, &signer);
            rows.swap(2, 3);
            assert_eq!(broken_at(verify(rows, &cps, None, &key(), &pk)), 3);
            // Truncated (the last checkpoint remains).
            let (mut rows, cps) = log(10, &signer);
            rows.truncate(8);
            assert_eq!(broken_at(verify(rows, &cps, None, &key(), &pk)), 9);
            // Truncated after the last checkpoint: the stored head notices.
            let (mut rows, cps) = log(11, &signer);
            let head = rows.last().and_then(|r| r.hash.clone()).map(|h| (11, h));
            rows.truncate(10);
            let cps: Vec<_> = cps.into_iter().filter(|c| c.seq <= 10).collect();
            assert_eq!(broken_at(verify(rows, &cps, head, &key(), &pk)), 11);
            // Appended by someone without the chain key.
            let (mut rows, cps) = log(10, &signer);
            let h = link(&ChainKey::new(&[4u8; 32]), &GENESIS, 11, 111, "{}");
            rows.push(Row {
                seq: 11,
                time: 111,
                data: "{}".into(),
                hash: Some(hex::encode(h)),
            });
            assert_eq!(broken_at(verify(rows, &cps, None, &key(), &pk)), 11);
            // A forged checkpoint.
            let (rows, mut cps) = log(10, &signer);
            cps[0].sig[0] ^= 1;
            assert_eq!(broken_at(verify(rows, &cps, None, &key(), &pk)), 3);
            // Pruned through a checkpoint (retention): the rest verifies.
            let (mut rows, mut cps) = log(10, &signer);
            rows.drain(..6);
            cps.retain(|c| c.seq >= 6);
            assert!(matches!(
                verify(rows, &cps, None, &key(), &pk),
                Verdict::Intact { records: 4, .. }
            ));
            // Pruned without an anchor: refused.
            let (mut rows, mut cps) = log(10, &signer);
            rows.drain(..4);
            cps.retain(|c| c.seq >= 6);
            assert_eq!(broken_at(verify(rows, &cps, None, &key(), &pk)), 4);
        }
    }
}
