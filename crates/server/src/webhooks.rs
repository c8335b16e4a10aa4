//! Sends event webhooks over HTTPS (system roots, plus `--webhook-ca-file` for receivers
//! signed by a private CA). No redirects, a short timeout, no proxy.
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use coffer_domain::events::WebhookSender;

pub struct HttpsWebhooks {
    http: reqwest::Client,
}

impl HttpsWebhooks {
    pub fn new(extra_ca: Option<&Path>) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true);
        if let Some(p) = extra_ca {
            let pem =
                std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
            b = b.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        Ok(Self { http: b.build()? })
    }
}

#[async_trait]
impl WebhookSender for HttpsWebhooks {
    async fn post(
        &self,
        url: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> Result<u16, String> {
        let mut req = self.http.post(url).body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(format!("the webhook could not be reached: {e}")),
        }
    }
}
