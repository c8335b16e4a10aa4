//! Event subscriptions (`{scope}/providers/Microsoft.EventGrid/eventSubscriptions/{name}`) on
//! a vault or a storage account: WebHook destinations over HTTPS, CloudEvents 1.0 schema.
use serde_json::{Value, json};

use super::storage::STORAGE_TYPE;
use super::{Body, MgmtService, Put, VAULT_TYPE, bad, public};
use crate::clock::rfc3339;
use crate::events::{STORAGE_EVENTS, SUBSCRIPTION_TYPE, VAULT_EVENTS};
use crate::identity::Caller;
use crate::model::Resource;
use crate::{DomainError, Result};

const WRITE: &str = "Microsoft.EventGrid/eventSubscriptions/write";
const READ: &str = "Microsoft.EventGrid/eventSubscriptions/read";
const DELETE: &str = "Microsoft.EventGrid/eventSubscriptions/delete";

fn subscription_id(scope: &str, name: &str) -> String {
    format!(
        "{}/providers/{SUBSCRIPTION_TYPE}/{name}",
        scope.trim_end_matches('/')
    )
}

/// `https://host[:port]/path` of a URL (what Azure shows as `endpointBaseUrl`).
fn base_url(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or_default().to_string()
}

impl MgmtService {
    /// The vault or storage account an event subscription is attached to.
    async fn event_scope(&self, scope: &str) -> Result<(Resource, &'static [&'static str])> {
        let r =
            self.store
                .get_resource(scope)
                .await?
                .ok_or_else(|| DomainError::ResourceNotFound {
                    resource_type: "Microsoft.KeyVault/vaults or Microsoft.Storage/storageAccounts"
                        .into(),
                    name: scope.chars().take(300).collect(),
                })?;
        if r.resource_type.eq_ignore_ascii_case(VAULT_TYPE) {
            Ok((r, &VAULT_EVENTS))
        } else if r.resource_type.eq_ignore_ascii_case(STORAGE_TYPE) {
            Ok((r, &STORAGE_EVENTS))
        } else {
            Err(bad(
                "event subscriptions can be created on key vaults and storage accounts",
            ))
        }
    }

    pub async fn put_event_subscription(
        &self,
        caller: &Caller,
        scope: &str,
        name: &str,
        body: &Value,
    ) -> Result<Put> {
        let id = subscription_id(scope, name);
        self.authorize(caller, WRITE, &id).await?;
        if name.is_empty()
            || name.len() > 64
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(DomainError::InvalidName {
                kind: "event subscription",
                name: name.chars().take(64).collect(),
                rule: "3-64 characters of letters, digits and dashes",
            });
        }
        let events = self
            .events
            .get()
            .ok_or_else(|| DomainError::Internal("events are not running".into()))?
            .clone();
        let (target, allowed) = self.event_scope(scope).await?;
        let req = Body::obj(body)?;
        let props = req
            .object("properties")?
            .ok_or_else(|| bad("the property 'properties' is required"))?;
        let dest = props
            .object("destination")?
            .ok_or_else(|| bad("properties.destination is required"))?;
        if !dest
            .str("endpointType")?
            .is_some_and(|t| t.eq_ignore_ascii_case("WebHook"))
        {
            return Err(bad("destination.endpointType must be WebHook"));
        }
        let url = dest
            .object("properties")?
            .and_then(|p| p.0.get("endpointUrl").and_then(Value::as_str))
            .ok_or_else(|| bad("destination.properties.endpointUrl is required"))?;
        let host_ok = url
            .strip_prefix("https://")
            .and_then(|r| r.split(['/', '?', '#']).next())
            .is_some_and(|h| !h.is_empty() && !h.contains('@'));
        if !host_ok || url.len() > 2048 || url.chars().any(char::is_whitespace) {
            return Err(bad(
                "destination.properties.endpointUrl must be an https:// URL (webhooks are delivered over TLS only)",
            ));
        }
        let types: Vec<String> = match props.object("filter")? {
            Some(f) => match f.0.get("includedEventTypes") {
                None | Some(Value::Null) => allowed.iter().map(|s| s.to_string()).collect(),
                Some(Value::Array(a)) => {
                    let mut out = Vec::new();
                    for t in a {
                        let t = t.as_str().unwrap_or_default();
                        let known = allowed
                            .iter()
                            .find(|k| k.eq_ignore_ascii_case(t))
                            .ok_or_else(|| {
                                bad(format!(
                                    "unknown event type '{}' for this resource; known: {}",
                                    t.chars().take(100).collect::<String>(),
                                    allowed.join(", ")
                                ))
                            })?;
                        out.push(known.to_string());
                    }
                    out
                }
                Some(_) => return Err(bad("filter.includedEventTypes must be an array")),
            },
            None => allowed.iter().map(|s| s.to_string()).collect(),
        };
        if props
            .str("eventDeliverySchema")?
            .is_some_and(|s| !s.eq_ignore_ascii_case("CloudEventSchemaV1_0"))
        {
            return Err(bad(
                "eventDeliverySchema must be CloudEventSchemaV1_0 (CloudEvents 1.0, structured JSON)",
            ));
        }
        let attempts = match props.object("retryPolicy")? {
            Some(p) => p.int("maxDeliveryAttempts")?.unwrap_or(30),
            None => 30,
        };
        if !(1..=30).contains(&attempts) {
            return Err(bad(
                "retryPolicy.maxDeliveryAttempts must be between 1 and 30",
            ));
        }
        let existing = self.store.get_resource(&id).await?;
        let created = existing.is_none();
        let (sealed_secret, shown) = match &existing {
            Some(r) => (r.body["_secret"].clone(), None),
            None => {
                let (sealed, shown) = events.new_secret(&id)?;
                (json!(sealed), Some(shown))
            }
        };
        let b = json!({
            "id": id, "name": name, "type": SUBSCRIPTION_TYPE,
            "properties": {
                "topic": target.id,
                "provisioningState": "Succeeded",
                "destination": {"endpointType": "WebHook", "properties": {"endpointBaseUrl": base_url(url)}},
                "filter": {"includedEventTypes": types},
                "eventDeliverySchema": "CloudEventSchemaV1_0",
                "retryPolicy": {"maxDeliveryAttempts": attempts, "eventTimeToLiveInMinutes": 1440},
            },
            "systemData": {"lastModifiedAt": rfc3339(self.clock.now())},
            "_endpoint": events.seal_field(&id, "_endpoint", url.as_bytes())?,
            "_secret": sealed_secret,
        });
        self.store
            .put_resource(&Resource {
                id: id.clone(),
                resource_type: SUBSCRIPTION_TYPE.into(),
                subscription_id: target.subscription_id.clone(),
                resource_group: target.resource_group.clone(),
                name: name.into(),
                location: None,
                body: b.clone(),
            })
            .await?;
        let mut out = public(b);
        if let Some(s) = shown {
            // Shown once: receivers verify `webhook-signature` with it.
            out["properties"]["signingSecret"] = json!(s);
        }
        Ok(Put { body: out, created })
    }

    pub async fn get_event_subscription(
        &self,
        caller: &Caller,
        scope: &str,
        name: &str,
    ) -> Result<Value> {
        let id = subscription_id(scope, name);
        self.authorize(caller, READ, &id).await?;
        self.store
            .get_resource(&id)
            .await?
            .map(|r| public(r.body))
            .ok_or_else(|| DomainError::ResourceNotFound {
                resource_type: SUBSCRIPTION_TYPE.into(),
                name: name.chars().take(64).collect(),
            })
    }

    pub async fn list_event_subscriptions(
        &self,
        caller: &Caller,
        scope: &str,
    ) -> Result<Vec<Value>> {
        self.authorize(caller, READ, scope).await?;
        let (target, _) = self.event_scope(scope).await?;
        Ok(self
            .store
            .list_resources(&target.subscription_id, None, Some(SUBSCRIPTION_TYPE))
            .await?
            .into_iter()
            .filter(|r| {
                r.body["properties"]["topic"]
                    .as_str()
                    .is_some_and(|t| t.eq_ignore_ascii_case(&target.id))
            })
            .map(|r| public(r.body))
            .collect())
    }

    pub async fn delete_event_subscription(
        &self,
        caller: &Caller,
        scope: &str,
        name: &str,
    ) -> Result<bool> {
        let id = subscription_id(scope, name);
        self.authorize(caller, DELETE, &id).await?;
        self.store.delete_resource(&id).await
    }

    /// Dead-lettered deliveries of a subscription (a Coffer extension).
    pub async fn event_dead_letters(
        &self,
        caller: &Caller,
        scope: &str,
        name: &str,
    ) -> Result<Vec<Value>> {
        let id = subscription_id(scope, name);
        self.authorize(caller, READ, &id).await?;
        if self.store.get_resource(&id).await?.is_none() {
            return Err(DomainError::ResourceNotFound {
                resource_type: SUBSCRIPTION_TYPE.into(),
                name: name.chars().take(64).collect(),
            });
        }
        let events = self
            .events
            .get()
            .ok_or_else(|| DomainError::Internal("events are not running".into()))?;
        Ok(events
            .dead_letters(&id)
            .await?
            .into_iter()
            .map(|d| {
                json!({
                    "id": d.id, "event": d.event, "attempts": d.attempts,
                    "lastError": d.last_error, "deadLetteredAt": rfc3339(d.updated),
                })
            })
            .collect())
    }
}
