//! One webhook's deliveries: the transition's body in the webhook's format, POSTed through
//! the shared transport (`cujo_otlp::exporter::transport::HttpPost`) and retried with the
//! shared backoff (`cujo_otlp::exporter::retry::Backoff`): 5xx, 429, timeouts and
//! connection errors up to `max_retries` times, `Retry-After` honoured; other 4xx never.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cujo_config::outbound::header_pairs;
use cujo_otlp::exporter::retry::{Backoff, RetrySettings};
use cujo_otlp::exporter::transport::{HttpPost, Outcome};
use tokio_util::sync::CancellationToken;

use super::NotifyError;
use super::alerts::Transition;
use super::body::{Sender, generic_body, slack_body};
use super::config::{WebhookConfig, WebhookFormat};
use super::telemetry::WebhookOutcomes;

/// First delay between attempts; doubled after each retry (±25% jitter).
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between attempts, `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One configured webhook, ready to post.
pub(super) struct Webhook {
    format: WebhookFormat,
    max_retries: u32,
    /// The URL (a secret), its headers (tokens for the receiver), TLS and the deadline of
    /// one attempt, so a hung receiver is retried rather than waited on forever.
    destination: HttpPost,
    /// Counts and logs outcomes under the webhook's name; shared with the telemetry.
    pub(super) outcomes: Arc<WebhookOutcomes>,
}

impl Webhook {
    pub(super) fn new(index: usize, c: &WebhookConfig) -> Result<Self, NotifyError> {
        let bad = |detail: String| NotifyError::Webhook {
            index,
            name: c.name.clone(),
            detail,
        };
        let headers = header_pairs("headers", &c.headers).map_err(|e| bad(e.to_string()))?;
        let destination = HttpPost::new(&c.url, headers, c.timeout.0, c.tls.ca_file.as_deref())
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            format: c.format,
            max_retries: c.max_retries,
            destination,
            outcomes: Arc::new(WebhookOutcomes::new(&c.name)),
        })
    }

    fn body(&self, t: &Transition, sender: &Sender) -> Result<Bytes, String> {
        let value = match self.format {
            WebhookFormat::Slack => slack_body(t, sender),
            WebhookFormat::Generic => generic_body(t, sender),
        };
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }

    /// Delivers one transition: retries what may succeed later, until `max_retries`; on
    /// `stop` (shutdown) no further retry is scheduled.
    pub(super) async fn deliver(&self, t: &Transition, sender: &Sender, stop: &CancellationToken) {
        let dedup_key = t.dedup_key();
        let out = &self.outcomes;
        let body = match self.body(t, sender) {
            Ok(b) => b,
            Err(error) => return out.unencodable(&dedup_key, &error),
        };
        // Bounded by `max_retries`, not by time.
        let mut backoff = Backoff::new(
            RetrySettings {
                initial_interval: INITIAL_BACKOFF,
                max_interval: MAX_BACKOFF,
                max_elapsed: Duration::ZERO,
            },
            Instant::now(),
        );
        let mut attempt = 0u32;
        loop {
            let (wait, error) = match self
                .destination
                .post("application/json", body.clone())
                .await
            {
                Outcome::Delivered { .. } => {
                    return out.delivered(&dedup_key, t.status.label(), attempt + 1);
                }
                Outcome::Permanent { error } => return out.refused(&dedup_key, &error),
                Outcome::Retryable { after, error } => {
                    if attempt >= self.max_retries || stop.is_cancelled() {
                        return out.gave_up(&dedup_key, &error, attempt + 1);
                    }
                    let wait = backoff
                        .next_delay(after, Instant::now())
                        .unwrap_or(MAX_BACKOFF)
                        .min(MAX_BACKOFF);
                    out.will_retry(&dedup_key, &error, wait);
                    (wait, error)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return out.shut_down(&dedup_key, &error),
            }
            out.retrying();
            attempt += 1;
        }
    }
}
