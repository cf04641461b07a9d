//! Burn-rate alert notifications (`notifications:`): when a CUJ objective's page or ticket
//! alert fires or resolves, POST it to the configured webhooks (Slack incoming-webhook JSON
//! or cujo's own JSON body).
//!
//! Owns the evaluation timer, the alert state between evaluations, one bounded queue and
//! delivery task per webhook, and the `cujo_notifications_*` counters. It reads the engine
//! only through [`SliReader::with`] (a report made on the engine's thread), sends only
//! through `cujo_otlp::exporter::transport`, and never logs a webhook's URL or headers.
//!
//! Every transition is logged (`burn-rate alert firing` with the worst dimension values and
//! the last bad trace id, `burn-rate alert resolved`) whether or not webhooks are
//! configured: without `notifications:` the binary runs a notifier with no webhooks
//! ([`NotificationsConfig::log_only`]).
//!
//! The [`Notifier`] evaluates the engine every `evaluation_interval` and hands each
//! transition to one delivery task per webhook (bounded queue, in order), which retries 5xx,
//! 429, timeouts and connection errors with exponential backoff (honouring `Retry-After`),
//! and gives up on other 4xx at once. Every attempt of one transition carries the same
//! `dedup_key` (`cuj/sli/window/severity/started_at_ms`) so receivers can drop a retry whose
//! first attempt did arrive. The alert state lives in memory: after a restart an alert
//! still firing is notified again, with a new `started_at`.
//!
//! # Layout
//! - [`config`]: `notifications:` and its `validate`.
//! - [`alerts`]: [`AlertTracker`], reports in, [`Transition`]s out (pure).
//! - [`body`]: the Slack and generic JSON bodies.
//! - `delivery`: one webhook's POSTs and retries.
//! - [`telemetry`]: [`WebhookTelemetry`], counters and log lines of every outcome.
//! - here: [`Notifier`], the evaluation task and the queues.

pub mod alerts;
pub mod body;
pub mod config;
mod delivery;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use cujo_sli::processor::SliReader;
use cujo_sli::slo::Severity;
use cujo_sli::state::SavedAlert;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use alerts::{AlertStatus, AlertTracker, Transition};
pub use body::{Sender, generic_body, slack_body};
pub use config::{AlertSeverity, NotificationsConfig, WebhookConfig, WebhookFormat};
pub use telemetry::{WebhookOutcomes, WebhookTelemetry};

use delivery::Webhook;

/// Transitions waiting for one webhook; beyond, new ones are counted as failed.
const QUEUE_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifications.webhooks[{index}] ({name}): {detail}")]
    Webhook {
        index: usize,
        name: String,
        detail: String,
    },
}

/// The name notifications carry in `cujo_instance`.
fn instance_name(configured: Option<&str>) -> String {
    if let Some(name) = configured {
        return name.to_string();
    }
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "cujo".into())
}

/// The running notifier: an evaluation task and one delivery task per webhook.
pub struct Notifier {
    telemetry: Arc<WebhookTelemetry>,
    /// The alerts notified as firing, as of the latest evaluation.
    alerts: Arc<std::sync::Mutex<Vec<SavedAlert>>>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Notifier {
    /// Starts evaluating the engine behind `engine` every `config.evaluation_interval` at
    /// `clock()` (ms since the Unix epoch), with the alerts a state file says were notified
    /// as firing. Must be called within a Tokio runtime.
    pub fn start(
        config: &NotificationsConfig,
        engine: SliReader,
        clock: fn() -> u64,
        restored: Vec<SavedAlert>,
    ) -> Result<Notifier, NotifyError> {
        let hooks = config
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, c)| Ok((Webhook::new(i, c)?, c.severities.clone())))
            .collect::<Result<Vec<_>, NotifyError>>()?;
        let telemetry = Arc::new(WebhookTelemetry::new(
            hooks.iter().map(|(h, _)| h.outcomes.clone()).collect(),
        ));
        let sender = Arc::new(Sender {
            instance: instance_name(config.instance.as_deref()),
            page_url: config.page_url.clone(),
        });
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut queues = Vec::new();
        for (hook, severities) in hooks {
            let (tx, mut rx) = mpsc::channel::<Arc<Transition>>(QUEUE_CAPACITY);
            queues.push(Queue {
                severities,
                tx,
                outcomes: hook.outcomes.clone(),
            });
            let (sender, stop) = (sender.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(t) = rx.recv().await {
                    hook.deliver(&t, &sender, &stop).await;
                }
            }));
        }
        if queues.is_empty() {
            tracing::info!(
                every = ?config.evaluation_interval.0,
                "logging burn-rate alert transitions (no webhooks: notifications: is not configured)"
            );
        } else {
            tracing::info!(
                webhooks = queues.len(),
                every = ?config.evaluation_interval.0,
                instance = %sender.instance,
                "notifying burn-rate alert transitions"
            );
        }
        let mut tracker = AlertTracker::new(config.resolve_delay.0);
        tracker.restore(restored);
        let alerts = Arc::new(std::sync::Mutex::new(tracker.saved()));
        tasks.push(tokio::spawn(evaluate(
            engine,
            clock,
            config.evaluation_interval.0,
            (tracker, alerts.clone()),
            queues,
            telemetry.clone(),
            stop.clone(),
        )));
        Ok(Notifier {
            telemetry,
            alerts,
            stop,
            tasks,
        })
    }

    /// The alerts notified as firing as of the latest evaluation, for the SLO state file.
    pub fn alerts(&self) -> AlertsNotified {
        AlertsNotified(self.alerts.clone())
    }

    /// `cujo_notifications_total` and friends, for `/metrics`.
    pub fn telemetry(&self) -> Arc<WebhookTelemetry> {
        self.telemetry.clone()
    }

    /// Stops evaluating; queued notifications get one more attempt each (no retry) within
    /// `deadline`, then whatever is left is abandoned.
    pub async fn stop(self, deadline: Duration) {
        self.stop.cancel();
        let mut tasks = self.tasks;
        let drained = tokio::time::timeout(deadline, async {
            for task in &mut tasks {
                let _ = task.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                ?deadline,
                "alert notifications still in flight at shutdown were abandoned"
            );
            for task in &tasks {
                task.abort();
            }
        }
    }
}

/// The alerts a [`Notifier`] has notified as firing, readable from any task.
#[derive(Clone)]
pub struct AlertsNotified(Arc<std::sync::Mutex<Vec<SavedAlert>>>);

impl AlertsNotified {
    pub fn get(&self) -> Vec<SavedAlert> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One webhook's queue, as the evaluation task sees it.
struct Queue {
    severities: Vec<AlertSeverity>,
    tx: mpsc::Sender<Arc<Transition>>,
    /// The webhook's outcomes: a full queue is a failed notification.
    outcomes: Arc<WebhookOutcomes>,
}

fn wants(severities: &[AlertSeverity], s: Severity) -> bool {
    severities.iter().any(|x| {
        matches!(
            (x, s),
            (AlertSeverity::Page, Severity::Page) | (AlertSeverity::Ticket, Severity::Ticket)
        )
    })
}

async fn evaluate(
    engine: SliReader,
    clock: fn() -> u64,
    every: Duration,
    (mut tracker, saved): (AlertTracker, Arc<std::sync::Mutex<Vec<SavedAlert>>>),
    queues: Vec<Queue>,
    telemetry: Arc<WebhookTelemetry>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A report of this moment (not a snapshot): transitions are timed by it.
        let now = clock();
        let Some(report) = engine.with(move |e| e.report(now)).await else {
            tracing::error!("the SLI engine's thread stopped; alert notifications stop");
            return;
        };
        for t in tracker.update(&report) {
            let dedup_key = t.dedup_key();
            match t.status {
                AlertStatus::Firing => tracing::warn!(
                    cuj = %t.cuj, sli = %t.sli, severity = t.severity.label(),
                    budget_remaining = t.budget_remaining,
                    burn_rate_1h = t.burn("1h").unwrap_or(0.0),
                    worst = %body::dimensions_text(&t.worst),
                    last_bad_trace_id = t.last_bad_trace_id.as_deref().unwrap_or(""),
                    %dedup_key,
                    "burn-rate alert firing"
                ),
                AlertStatus::Resolved => tracing::info!(
                    cuj = %t.cuj, sli = %t.sli, severity = t.severity.label(), %dedup_key,
                    "burn-rate alert resolved"
                ),
            }
            let t = Arc::new(t);
            for q in queues.iter().filter(|q| wants(&q.severities, t.severity)) {
                if q.tx.try_send(t.clone()).is_err() {
                    q.outcomes.queue_full(&dedup_key);
                }
            }
        }
        telemetry.evaluated(tracker.firing());
        *saved.lock().unwrap_or_else(|e| e.into_inner()) = tracker.saved();
    }
}
