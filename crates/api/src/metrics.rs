//! Prometheus metrics (`GET /metrics`, text exposition format), through `prometheus-client`.
//! Every metric is documented in docs/metrics.md; request metrics are recorded by the
//! listeners' dispatch, the rest is read from the services when scraped.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

/// The operation a handler served, attached to its response for the request metrics.
#[derive(Debug, Clone)]
pub struct OpName(pub String);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    plane: &'static str,
    operation: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaneLabels {
    plane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultOpLabels {
    vault: String,
    key: String,
    operation: String,
    algorithm: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    account: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyVersionLabels {
    vault: String,
    key: String,
    version: String,
}

type HistogramFamily = Family<PlaneLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    vault_ops: Family<VaultOpLabels, Counter>,
    cmk_cache: Family<CacheLabels, Counter>,
    cmk_vault_calls: Counter,
    cmk_status: Family<AccountLabels, Gauge>,
    key_expiry: Family<KeyVersionLabels, Gauge>,
    webhooks: Family<CacheLabels, Counter>,
    /// Audit records handed to the log, and records the log refused.
    pub audit_records: Counter,
    pub audit_failures: Counter,
    scrapes: AtomicU64,
}

const CMK_STATUSES: [&str; 7] = [
    "Healthy",
    "KeyDisabled",
    "KeyNotFound",
    "AccessDenied",
    "IdentityNotFound",
    "VaultNotFound",
    "VaultUnreachable",
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("coffer");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let vault_ops = Family::<VaultOpLabels, Counter>::default();
        let cmk_cache = Family::<CacheLabels, Counter>::default();
        let cmk_vault_calls = Counter::default();
        let cmk_status = Family::<AccountLabels, Gauge>::default();
        let key_expiry = Family::<KeyVersionLabels, Gauge>::default();
        let audit_records = Counter::default();
        let audit_failures = Counter::default();
        let webhooks = Family::<CacheLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Event webhook attempts by result (delivered, failed) and deliveries dead-lettered (deadLettered)",
            webhooks.clone(),
        );
        registry.register(
            "requests",
            "Requests served, by plane (identity, management, vault, blob, ops), operation and HTTP status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by plane",
            latency.clone(),
        );
        registry.register(
            "vault_operations",
            "Key Vault data-plane operations by vault, key, operation, algorithm and result",
            vault_ops.clone(),
        );
        registry.register(
            "cmk_cache_lookups",
            "Lookups of unwrapped account keys of customer-managed-key accounts, by result (hit, miss)",
            cmk_cache.clone(),
        );
        registry.register(
            "cmk_vault_calls",
            "Vault calls made for customer-managed keys (get key, wrap, unwrap)",
            cmk_vault_calls.clone(),
        );
        registry.register(
            "cmk_status",
            "1 for the current customer-managed-key status of each storage account",
            cmk_status.clone(),
        );
        registry.register(
            "key_expiry_seconds",
            "Seconds until each enabled key version with an expiry date expires (negative: expired)",
            key_expiry.clone(),
        );
        registry.register(
            "audit_records",
            "Audit records written",
            audit_records.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records the log could not take (the operations failed)",
            audit_failures.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            vault_ops,
            cmk_cache,
            cmk_vault_calls,
            cmk_status,
            key_expiry,
            webhooks,
            audit_records,
            audit_failures,
            scrapes: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn request(&self, plane: &'static str, operation: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                plane,
                operation: operation.chars().take(120).collect(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&PlaneLabels { plane })
            .observe(took.as_secs_f64());
    }

    pub fn vault_op(&self, vault: &str, key: &str, operation: &str, algorithm: &str, ok: bool) {
        self.vault_ops
            .get_or_create(&VaultOpLabels {
                vault: vault.to_string(),
                key: key.chars().take(127).collect(),
                operation: operation.to_string(),
                algorithm: algorithm.chars().take(32).collect(),
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    /// The exposition text, with the values read from the services now.
    pub async fn render(&self, state: &AppState) -> String {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
        let cmk = state.mgmt.cmk_stats();
        set_counter(
            &self.cmk_cache.get_or_create(&CacheLabels { result: "hit" }),
            cmk.hits,
        );
        set_counter(
            &self
                .cmk_cache
                .get_or_create(&CacheLabels { result: "miss" }),
            cmk.misses,
        );
        set_counter(&self.cmk_vault_calls, cmk.vault_calls);
        for (result, n) in [
            ("delivered", &state.events.delivered),
            ("failed", &state.events.failed),
            ("deadLettered", &state.events.dead_lettered),
        ] {
            set_counter(
                &self.webhooks.get_or_create(&CacheLabels { result }),
                n.load(Ordering::Relaxed),
            );
        }
        self.cmk_status.clear();
        for (account, status) in cmk.status {
            for s in CMK_STATUSES {
                self.cmk_status
                    .get_or_create(&AccountLabels {
                        account: account.clone(),
                        status: s,
                    })
                    .set(i64::from(s == status));
            }
        }
        self.key_expiry.clear();
        let now = state.clock.now();
        if let Ok(versions) = state.keyvault.expiring_versions().await {
            for (vault, key, version, exp) in versions {
                self.key_expiry
                    .get_or_create(&KeyVersionLabels {
                        vault,
                        key,
                        version,
                    })
                    .set(exp - now);
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

fn set_counter(c: &Counter, v: u64) {
    c.inner().store(v, Ordering::Relaxed);
}
