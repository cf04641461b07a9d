//! The notifier's telemetry: what happened to each notification, counted and logged in one
//! place, so a log line and its counter never drift apart. Log lines name the webhook by its
//! `name`, never by its URL (a secret).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use cujo_otlp::prom::{Exposition, Family};

use crate::exporters::ExporterTelemetry;

/// One webhook's outcomes: `cujo_notifications_total{webhook, outcome}`.
#[derive(Debug)]
pub struct WebhookOutcomes {
    /// The webhook's `name`: the `webhook` label and the `webhook` field of its log lines.
    name: String,
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

impl WebhookOutcomes {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn delivered(&self, dedup_key: &str, status: &str, attempts: u32) {
        self.sent.fetch_add(1, Relaxed);
        tracing::info!(webhook = %self.name, %dedup_key, status, attempts, "alert notification delivered");
    }

    pub(super) fn refused(&self, dedup_key: &str, error: &str) {
        self.failed.fetch_add(1, Relaxed);
        tracing::error!(webhook = %self.name, %dedup_key, %error, "alert notification refused; not retried");
    }

    pub(super) fn gave_up(&self, dedup_key: &str, error: &str, attempts: u32) {
        self.failed.fetch_add(1, Relaxed);
        tracing::error!(webhook = %self.name, %dedup_key, %error, attempts, "alert notification failed; giving up");
    }

    /// An attempt failed and another follows after `wait` (counted as `retried` when it is
    /// made: see [`WebhookOutcomes::retrying`]).
    pub(super) fn will_retry(&self, dedup_key: &str, error: &str, wait: Duration) {
        tracing::warn!(webhook = %self.name, %dedup_key, %error, retry_in = ?wait, "alert notification failed; retrying");
    }

    pub(super) fn retrying(&self) {
        self.retried.fetch_add(1, Relaxed);
    }

    pub(super) fn shut_down(&self, dedup_key: &str, error: &str) {
        self.failed.fetch_add(1, Relaxed);
        tracing::error!(webhook = %self.name, %dedup_key, %error, "shutting down: alert notification not retried");
    }

    pub(super) fn unencodable(&self, dedup_key: &str, error: &str) {
        self.failed.fetch_add(1, Relaxed);
        tracing::error!(webhook = %self.name, %dedup_key, %error, "cannot encode the notification");
    }

    pub(super) fn queue_full(&self, dedup_key: &str) {
        self.failed.fetch_add(1, Relaxed);
        tracing::error!(webhook = %self.name, %dedup_key, "the webhook's queue is full; notification dropped");
    }
}

/// The notifier's self-metrics.
#[derive(Debug, Default)]
pub struct WebhookTelemetry {
    /// Evaluations done (each after its transitions were queued).
    evaluations: AtomicU64,
    /// Alerts notified as firing and not yet resolved.
    firing: AtomicU64,
    webhooks: Vec<Arc<WebhookOutcomes>>,
}

impl WebhookTelemetry {
    pub fn new(webhooks: Vec<Arc<WebhookOutcomes>>) -> Self {
        Self {
            webhooks,
            ..Self::default()
        }
    }

    /// One evaluation done, with `firing` alerts notified as firing after it.
    pub(super) fn evaluated(&self, firing: usize) {
        self.firing.store(firing as u64, Relaxed);
        self.evaluations.fetch_add(1, Relaxed);
    }
}

impl ExporterTelemetry for WebhookTelemetry {
    /// `cujo_notifications_total`, `cujo_notifications_evaluations_total`,
    /// `cujo_notifications_alerts_firing`.
    fn render(&self, out: &mut Exposition) {
        let mut f = Family::counter(
            out,
            "cujo_notifications_total",
            "Alert notifications per webhook: sent (delivered), failed (given up: 4xx, retries exhausted, queue full, shutdown), retried (attempts repeated).",
        );
        for c in &self.webhooks {
            for (outcome, v) in [
                ("sent", &c.sent),
                ("failed", &c.failed),
                ("retried", &c.retried),
            ] {
                f.sample(
                    &[("webhook", &c.name), ("outcome", outcome)],
                    v.load(Relaxed) as f64,
                );
            }
        }
        Family::counter(
            out,
            "cujo_notifications_evaluations_total",
            "Burn-rate alert evaluations done by the notifier.",
        )
        .sample(&[], self.evaluations.load(Relaxed) as f64);
        Family::gauge(
            out,
            "cujo_notifications_alerts_firing",
            "Burn-rate alerts notified as firing and not yet resolved.",
        )
        .sample(&[], self.firing.load(Relaxed) as f64);
    }
}
