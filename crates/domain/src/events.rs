//! Events: Event Grid-style subscriptions on vaults and storage accounts
//! (`{scope}/providers/Microsoft.EventGrid/eventSubscriptions/{name}`), delivered as CloudEvents
//! 1.0 (structured JSON) to HTTPS webhooks, signed as Standard Webhooks do
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).
//!
//! Delivery goes through an outbox in the metadata store: an event becomes one delivery per
//! matching subscription, tried at once, then retried with exponential backoff on the server
//! clock (so tests move time instead of waiting) until it succeeds or runs out of attempts and
//! is dead-lettered. Near-expiry and expiry are found by the same due-work pass.
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use coffer_crypto::aead::SealingKey;
use coffer_crypto::{b64, random};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::audit::{AuditIdentity, AuditRecord, AuditSink};
use crate::clock::{Clock, rfc3339};
use crate::store::MetaStore;
use crate::{DomainError, Result};

pub const SUBSCRIPTION_TYPE: &str = "Microsoft.EventGrid/eventSubscriptions";

pub const KEY_NEW_VERSION: &str = "Microsoft.KeyVault.KeyNewVersionCreated";
pub const KEY_NEAR_EXPIRY: &str = "Microsoft.KeyVault.KeyNearExpiry";
pub const KEY_EXPIRED: &str = "Microsoft.KeyVault.KeyExpired";
/// Coffer's own (Azure reports neither): an account's CMK status changed.
pub const CMK_STATUS_CHANGED: &str = "Coffer.Storage.CustomerManagedKeyStatusChanged";
/// Coffer's own: an account's AEK is now wrapped by another key version.
pub const CMK_VERSION_CHANGED: &str = "Coffer.Storage.CustomerManagedKeyVersionChanged";

pub const VAULT_EVENTS: [&str; 3] = [KEY_NEW_VERSION, KEY_NEAR_EXPIRY, KEY_EXPIRED];
pub const STORAGE_EVENTS: [&str; 2] = [CMK_STATUS_CHANGED, CMK_VERSION_CHANGED];

/// Something that happened to a resource.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_type: &'static str,
    /// The resource id (vault or storage account) the event is about.
    pub source: String,
    pub subject: String,
    pub data: Value,
}

/// One event on its way to one subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    /// Resource id of the event subscription (its endpoint is read, sealed, from there).
    pub subscription: String,
    /// The CloudEvent, as sent.
    pub event: Value,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Next attempt (server clock).
    pub due: i64,
    /// `pending`, `delivered` or `deadLettered`.
    pub state: String,
    pub last_error: String,
    pub created: i64,
    pub updated: i64,
}

/// Sends one webhook request; returns the HTTP status or why it could not be sent.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    async fn post(
        &self,
        url: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> std::result::Result<u16, String>;
}

#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Seconds before the first retry; each retry doubles it (capped at an hour).
    pub retry_base: i64,
    /// Days before `exp` that KeyNearExpiry is sent.
    pub near_expiry_days: i64,
    /// `vault.{suffix}[:port]`, for the key ids in vault events.
    pub vault_dns_suffix: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retry_base: 10,
            near_expiry_days: 30,
            vault_dns_suffix: "vault.coffer.internal".into(),
        }
    }
}

pub struct EventService {
    store: Arc<dyn MetaStore>,
    clock: Arc<Clock>,
    root: Arc<SealingKey>,
    config: EventsConfig,
    tx: mpsc::UnboundedSender<Event>,
    sender: OnceLock<Arc<dyn WebhookSender>>,
    audit: OnceLock<Arc<dyn AuditSink>>,
    /// Webhook attempts that succeeded, failed, and deliveries dead-lettered (metrics).
    pub delivered: std::sync::atomic::AtomicU64,
    pub failed: std::sync::atomic::AtomicU64,
    pub dead_lettered: std::sync::atomic::AtomicU64,
}

fn secret_aad(subscription: &str) -> Vec<u8> {
    format!(
        "event-subscription-secret:{}",
        subscription.to_ascii_lowercase()
    )
    .into_bytes()
}

/// Whether `source` is `scope` or a resource below it.
fn in_scope(scope: &str, source: &str) -> bool {
    let (scope, source) = (scope.to_ascii_lowercase(), source.to_ascii_lowercase());
    let scope = scope.trim_end_matches('/');
    source == scope || source.starts_with(&format!("{scope}/"))
}

impl EventService {
    pub fn new(
        store: Arc<dyn MetaStore>,
        clock: Arc<Clock>,
        root: Arc<SealingKey>,
        config: EventsConfig,
    ) -> Arc<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let svc = Arc::new(Self {
            store,
            clock,
            root,
            config,
            tx,
            sender: OnceLock::new(),
            audit: OnceLock::new(),
            delivered: Default::default(),
            failed: Default::default(),
            dead_lettered: Default::default(),
        });
        let weak = Arc::downgrade(&svc);
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let Some(svc) = weak.upgrade() else { break };
                if let Err(e) = svc.fan_out(ev).await {
                    tracing::error!(error = %e, "event fan-out failed");
                }
            }
        });
        svc
    }

    /// Set once at start-up: how webhooks are sent, and where CMK status changes are audited.
    pub fn connect(&self, sender: Arc<dyn WebhookSender>, audit: Arc<dyn AuditSink>) {
        let _ = self.sender.set(sender);
        let _ = self.audit.set(audit);
    }

    /// Publish an event (never blocks; delivery is asynchronous).
    pub fn emit(&self, event: Event) {
        let _ = self.tx.send(event);
    }

    pub fn vault_uri(&self, vault: &str) -> String {
        format!("https://{vault}.{}", self.config.vault_dns_suffix)
    }

    /// A new subscription's signing secret, sealed for storage, and as shown once to its owner.
    pub fn new_secret(&self, subscription: &str) -> Result<(String, String)> {
        let raw = random::bytes(32)?;
        let sealed = self.seal_field(subscription, "_secret", &raw)?;
        Ok((sealed, format!("whsec_{}", b64::std_encode(&raw))))
    }

    fn cloud_event(&self, ev: &Event, id: &str) -> Value {
        json!({
            "specversion": "1.0",
            "id": id,
            "source": ev.source,
            "type": ev.event_type,
            "subject": ev.subject,
            "time": rfc3339(self.clock.now()),
            "datacontenttype": "application/json",
            "data": ev.data,
        })
    }

    async fn fan_out(&self, ev: Event) -> Result<()> {
        if ev.event_type == CMK_STATUS_CHANGED
            && let Some(a) = self.audit.get()
        {
            let rec = AuditRecord {
                time: self.clock.now(),
                resource_id: ev.source.clone(),
                operation_name: "StorageAccountCmkStatusChange".into(),
                result_type: ev.data["newStatus"].as_str().unwrap_or_default().into(),
                caller_ip_address: "in-process (storage encryption)".into(),
                identity: AuditIdentity::default(),
                request_id: random::uuid()?,
                properties: ev.data.clone(),
                ..Default::default()
            };
            if let Err(e) = a.record(&rec).await {
                tracing::error!(error = %e, "auditing a CMK status change failed");
            }
        }
        let Some(sub) = crate::mgmt::scope_subscription(&ev.source).map(str::to_string) else {
            return Ok(());
        };
        let event_id = random::uuid()?;
        let now = self.clock.now();
        for r in self
            .store
            .list_resources(&sub, None, Some(SUBSCRIPTION_TYPE))
            .await?
        {
            let p = &r.body["properties"];
            let topic = p["topic"].as_str().unwrap_or_default();
            let wanted = p["filter"]["includedEventTypes"]
                .as_array()
                .is_none_or(|ts| ts.iter().any(|t| t.as_str() == Some(ev.event_type)));
            if !in_scope(topic, &ev.source) || !wanted {
                continue;
            }
            let d = Delivery {
                id: random::uuid()?,
                subscription: r.id.clone(),
                event: self.cloud_event(&ev, &event_id),
                attempts: 0,
                max_attempts: p["retryPolicy"]["maxDeliveryAttempts"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(30),
                due: now,
                state: "pending".into(),
                last_error: String::new(),
                created: now,
                updated: now,
            };
            self.store.put_delivery(&d).await?;
            self.attempt(d).await?;
        }
        Ok(())
    }

    /// Try one delivery now; record the outcome (retry later, delivered, dead-lettered).
    async fn attempt(&self, mut d: Delivery) -> Result<()> {
        let Some(sender) = self.sender.get() else {
            return Ok(());
        };
        let (endpoint, secret) = match self.subscription_target(&d.subscription).await {
            Ok(t) => t,
            Err(_) => {
                // The subscription is gone: nothing to deliver to.
                d.state = "deadLettered".into();
                d.last_error = "the event subscription no longer exists".into();
                d.updated = self.clock.now();
                return self.store.put_delivery(&d).await;
            }
        };
        let body = d.event.to_string();
        let ts = self.clock.now();
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
            format!("{}.{ts}.{body}", d.id).as_bytes(),
        );
        let headers = [
            (
                "content-type",
                "application/cloudevents+json; charset=utf-8".to_string(),
            ),
            ("webhook-id", d.id.clone()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                format!("v1,{}", b64::std_encode(mac.as_ref())),
            ),
        ];
        d.attempts += 1;
        d.updated = self.clock.now();
        match sender.post(&endpoint, body.as_bytes(), &headers).await {
            Ok(s) if (200..300).contains(&s) => {
                d.state = "delivered".into();
                d.last_error.clear();
                self.delivered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            outcome => {
                self.failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                d.last_error = match outcome {
                    Ok(s) => format!("the endpoint answered {s}"),
                    Err(e) => e.chars().take(300).collect(),
                };
                if d.attempts >= d.max_attempts {
                    d.state = "deadLettered".into();
                    self.dead_lettered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(subscription = %d.subscription, delivery = %d.id, "event dead-lettered");
                } else {
                    let backoff = self
                        .config
                        .retry_base
                        .saturating_mul(1 << (d.attempts - 1).min(20))
                        .min(3600);
                    d.due = self.clock.now() + backoff;
                }
            }
        }
        self.store.put_delivery(&d).await
    }

    /// The endpoint URL and signing secret of a subscription (both stored sealed: a webhook
    /// URL often carries a token).
    async fn subscription_target(&self, id: &str) -> Result<(String, Vec<u8>)> {
        let r = self
            .store
            .get_resource(id)
            .await?
            .ok_or_else(|| DomainError::Internal("event subscription".into()))?;
        let open = |field: &str| -> Result<Vec<u8>> {
            let sealed = b64::std_decode(r.body[field].as_str().unwrap_or_default())
                .ok_or_else(|| DomainError::Internal("event subscription secret".into()))?;
            Ok(self
                .root
                .open(&secret_aad(&format!("{id}{field}")), &sealed)?
                .expose()
                .to_vec())
        };
        let url = String::from_utf8(open("_endpoint")?)
            .map_err(|_| DomainError::Internal("event subscription endpoint".into()))?;
        Ok((url, open("_secret")?))
    }

    /// Seal a subscription's field (`_endpoint`, `_secret`) for storage.
    pub fn seal_field(&self, id: &str, field: &str, value: &[u8]) -> Result<String> {
        Ok(b64::std_encode(
            &self
                .root
                .seal(&secret_aad(&format!("{id}{field}")), value)?,
        ))
    }

    /// Retry the deliveries that are due. Returns how many were tried.
    pub async fn deliver_due(&self) -> Result<usize> {
        let due = self.store.due_deliveries(self.clock.now(), 1000).await?;
        let n = due.len();
        for d in due {
            self.attempt(d).await?;
        }
        Ok(n)
    }

    /// Dead-lettered deliveries of one subscription, newest first.
    pub async fn dead_letters(&self, subscription: &str) -> Result<Vec<Delivery>> {
        self.store.dead_letters(subscription).await
    }

    /// KeyNearExpiry / KeyExpired for the current version of every key, once per version.
    pub async fn scan_key_expiry(&self, kv: &crate::keyvault::KeyVaultService) -> Result<usize> {
        let now = self.clock.now();
        let near = self.config.near_expiry_days * 86_400;
        let mut n = 0;
        for (vault, key, version, exp, vault_id) in kv.current_versions_with_expiry().await? {
            let vault_uri = self.vault_uri(&vault);
            for (kind, from) in [(KEY_NEAR_EXPIRY, exp - near), (KEY_EXPIRED, exp)] {
                if now < from {
                    continue;
                }
                let marker = format!("events.sent:{kind}:{vault}/{key}/{version}");
                if self.store.get_setting(&marker).await?.is_some() {
                    continue;
                }
                self.store.put_setting(&marker, b"1").await?;
                self.emit(Event {
                    event_type: kind,
                    source: vault_id.clone(),
                    subject: key.clone(),
                    data: json!({
                        "Id": format!("{vault_uri}/keys/{key}/{version}"),
                        "VaultName": vault, "ObjectType": "Key", "ObjectName": key,
                        "Version": version, "NBF": Value::Null, "EXP": exp,
                    }),
                });
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scopes() {
        let v = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1";
        assert!(super::in_scope(v, v));
        assert!(super::in_scope(&v.to_uppercase(), v));
        assert!(super::in_scope("/subscriptions/s/resourceGroups/rg", v));
        assert!(!super::in_scope(&format!("{v}2"), v));
        assert!(!super::in_scope(v, "/subscriptions/s/resourceGroups/rg"));
    }
}
