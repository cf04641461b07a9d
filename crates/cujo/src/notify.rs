//! Burn-rate alert notifications: when a CUJ objective's page or ticket alert fires or
//! resolves, POST it to the configured webhooks (Slack incoming-webhook JSON or cujo's own
//! JSON body).
//!
//! Two halves:
//! - [`AlertTracker`] is pure: fed successive [`Report`]s, it returns the [`Transition`]s
//!   between them. Only transitions are sent, never a state already notified. A resolution is
//!   held back until the alert has stayed clear for `resolve_delay`; if it fires again within
//!   that time it is the same alert still (same `started_at`, same `dedup_key`) and nothing is
//!   sent, so a flapping alert makes one firing and one resolved notification.
//! - [`Notifier`] evaluates the engine every `evaluation_interval` and hands each transition
//!   to one delivery task per webhook (bounded queue, in order), which retries 5xx, 429,
//!   timeouts and connection errors with exponential backoff (honouring `Retry-After`), and
//!   gives up on other 4xx at once. Every attempt of one transition carries the same
//!   `dedup_key` (`cuj/sli/window/severity/started_at_ms`) so receivers can drop a retry whose
//!   first attempt did arrive.
//!
//! The tracker's state lives in memory: after a restart an alert still firing is notified
//! again, with a new `started_at`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use cujo_otlp::admin::MetricsSource;
use cujo_otlp::prom::Family;
use cujo_sli::processor::SliReader;
use cujo_sli::report::{ObjectiveReport, Report};
use cujo_sli::slo::Severity;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{AlertSeverity, NotificationsConfig, WebhookConfig, WebhookFormat};

/// First delay between attempts; doubled after each retry.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between attempts, `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Transitions waiting for one webhook; beyond, new ones are counted as failed.
const QUEUE_CAPACITY: usize = 1024;
/// How much of an answer's body is read (for the log line of a failure).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Whether an alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn label(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert changing state, with the objective's numbers at that evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: AlertStatus,
    pub severity: Severity,
    pub cuj: String,
    /// `availability` or `latency`.
    pub sli: String,
    pub target: f64,
    /// The objective's window as a label (`30d`).
    pub window: String,
    /// (window label, burn rate), shortest window first.
    pub burn_rates: Vec<(String, f64)>,
    pub budget_remaining: f64,
    pub exhaustion_seconds: Option<f64>,
    /// When the alert was first seen firing (ms since the Unix epoch); stable for its life.
    pub started_at_ms: u64,
    /// When it was first seen clear, for a resolution.
    pub resolved_at_ms: Option<u64>,
}

impl Transition {
    /// Identifies the alert (not the attempt): the same for every retry of this transition
    /// and for the firing and resolved notifications of one alert.
    pub fn dedup_key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.cuj,
            self.sli,
            self.window,
            self.severity.label(),
            self.started_at_ms
        )
    }

    fn burn(&self, window: &str) -> Option<f64> {
        self.burn_rates
            .iter()
            .find(|(w, _)| w == window)
            .map(|(_, b)| *b)
    }
}

/// (cuj, sli, objective window, severity).
type AlertKey = (String, String, String, &'static str);

#[derive(Debug, Clone, Copy)]
struct Active {
    started_at_ms: u64,
    /// Set while the alert is clear but its resolution is held back.
    clear_since_ms: Option<u64>,
}

/// Turns successive reports into alert transitions.
#[derive(Debug, Default)]
pub struct AlertTracker {
    resolve_delay_ms: u64,
    /// Alerts notified as firing and not yet as resolved.
    active: HashMap<AlertKey, Active>,
}

impl AlertTracker {
    pub fn new(resolve_delay: Duration) -> Self {
        Self {
            resolve_delay_ms: resolve_delay.as_millis() as u64,
            active: HashMap::new(),
        }
    }

    /// Alerts currently notified as firing.
    pub fn firing(&self) -> usize {
        self.active.len()
    }

    /// The transitions since the previous report, in report order (CUJ, objective, page
    /// before ticket). `report.generated_at_ms` is the clock.
    pub fn update(&mut self, report: &Report) -> Vec<Transition> {
        let now = report.generated_at_ms;
        let mut out = Vec::new();
        for cuj in &report.cujs {
            for obj in &cuj.objectives {
                for (severity, firing) in
                    [(Severity::Page, obj.page), (Severity::Ticket, obj.ticket)]
                {
                    let key: AlertKey = (
                        cuj.name.clone(),
                        obj.sli.clone(),
                        obj.window.clone(),
                        severity.label(),
                    );
                    let transition = |status, started_at_ms, resolved_at_ms| {
                        transition(
                            &cuj.name,
                            obj,
                            severity,
                            status,
                            started_at_ms,
                            resolved_at_ms,
                        )
                    };
                    match (self.active.get_mut(&key), firing) {
                        (None, false) => {}
                        (None, true) => {
                            self.active.insert(
                                key,
                                Active {
                                    started_at_ms: now,
                                    clear_since_ms: None,
                                },
                            );
                            out.push(transition(AlertStatus::Firing, now, None));
                        }
                        (Some(active), true) => active.clear_since_ms = None,
                        (Some(active), false) => {
                            let since = *active.clear_since_ms.get_or_insert(now);
                            if now.saturating_sub(since) >= self.resolve_delay_ms {
                                let started = active.started_at_ms;
                                self.active.remove(&key);
                                out.push(transition(AlertStatus::Resolved, started, Some(since)));
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

fn transition(
    cuj: &str,
    obj: &ObjectiveReport,
    severity: Severity,
    status: AlertStatus,
    started_at_ms: u64,
    resolved_at_ms: Option<u64>,
) -> Transition {
    Transition {
        status,
        severity,
        cuj: cuj.to_string(),
        sli: obj.sli.clone(),
        target: obj.target,
        window: obj.window.clone(),
        burn_rates: obj
            .windows
            .iter()
            .map(|w| (w.window.clone(), w.burn_rate))
            .collect(),
        budget_remaining: obj.budget_remaining,
        exhaustion_seconds: obj.exhaustion_seconds,
        started_at_ms,
        resolved_at_ms,
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A JSON number, or null for what JSON cannot hold (an infinite burn rate).
fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// cujo's own body: every number a receiver needs to route, dedupe and display the alert.
pub fn generic_body(t: &Transition, instance: &str) -> Value {
    let burn_rates: serde_json::Map<String, Value> = t
        .burn_rates
        .iter()
        .map(|(w, b)| (w.clone(), number(*b)))
        .collect();
    json!({
        "status": t.status.label(),
        "severity": t.severity.label(),
        "cuj": t.cuj,
        "sli": t.sli,
        "objective": { "target": number(t.target), "window": t.window },
        "burn_rates": burn_rates,
        "budget_remaining": number(t.budget_remaining),
        "exhaustion_seconds": t.exhaustion_seconds.map(number),
        "started_at": rfc3339(t.started_at_ms),
        "resolved_at": t.resolved_at_ms.map(rfc3339),
        "dedup_key": t.dedup_key(),
        "cujo_instance": instance,
    })
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn percent(ratio: f64) -> String {
    let p = format!("{:.3}", ratio * 100.0);
    let p = p.trim_end_matches('0').trim_end_matches('.');
    format!("{p}%")
}

fn times(burn: Option<f64>) -> String {
    match burn {
        Some(b) if b.is_finite() => format!("{b:.1}x"),
        Some(_) => "∞x".into(),
        None => "–".into(),
    }
}

fn human_seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "–".into();
    }
    // Whole minutes are precise enough for a human and keep the text short.
    let rounded = if s >= 60.0 {
        (s / 60.0).round() as u64 * 60
    } else {
        s.round() as u64
    };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

/// Slack incoming-webhook JSON: `text` (the notification and fallback) plus a coloured
/// attachment with the numbers.
pub fn slack_body(t: &Transition, instance: &str) -> Value {
    let severity = t.severity.label();
    let (emoji, color) = match (t.status, t.severity) {
        (AlertStatus::Firing, Severity::Page) => (":rotating_light:", "#d62728"),
        (AlertStatus::Firing, Severity::Ticket) => (":warning:", "#ff7f0e"),
        (AlertStatus::Resolved, _) => (":white_check_mark:", "#2ca02c"),
    };
    let cuj = slack_escape(&t.cuj);
    let objective = format!("{} over {}", percent(t.target), t.window);
    let budget = percent(t.budget_remaining);
    let text = match t.status {
        AlertStatus::Firing => {
            let exhaustion = t
                .exhaustion_seconds
                .map(|s| format!(", exhausted in {}", human_seconds(s)))
                .unwrap_or_default();
            format!(
                "{emoji} [FIRING:{severity}] CUJ *{cuj}* is burning its {} error budget: {} over 1h, {} over 5m (objective {objective}; {budget} of the budget left{exhaustion})",
                t.sli,
                times(t.burn("1h")),
                times(t.burn("5m")),
            )
        }
        AlertStatus::Resolved => format!(
            "{emoji} [RESOLVED:{severity}] CUJ *{cuj}* {}: the burn rate is back under the {severity} threshold ({} over 1h; objective {objective}; {budget} of the budget left)",
            t.sli,
            times(t.burn("1h")),
        ),
    };
    let burns = ["5m", "1h", "6h", "3d"]
        .iter()
        .map(|w| format!("{w} {}", times(t.burn(w))))
        .collect::<Vec<_>>()
        .join(" · ");
    let exhaustion = t
        .exhaustion_seconds
        .map(human_seconds)
        .unwrap_or_else(|| "not burning".into());
    let mut context = format!(
        "cujo {} · firing since {}",
        slack_escape(instance),
        rfc3339(t.started_at_ms)
    );
    if let Some(at) = t.resolved_at_ms {
        context.push_str(&format!(" · clear since {}", rfc3339(at)));
    }
    context.push_str(&format!(" · `{}`", slack_escape(&t.dedup_key())));
    json!({
        "text": text,
        "attachments": [{
            "color": color,
            "blocks": [
                { "type": "section", "text": { "type": "mrkdwn", "text": text } },
                { "type": "section", "fields": [
                    { "type": "mrkdwn", "text": format!("*Objective*\n{} {objective}", t.sli) },
                    { "type": "mrkdwn", "text": format!("*Budget left*\n{budget}") },
                    { "type": "mrkdwn", "text": format!("*Burn rate*\n{burns}") },
                    { "type": "mrkdwn", "text": format!("*Budget exhausted in*\n{exhaustion}") },
                ] },
                { "type": "context", "elements": [ { "type": "mrkdwn", "text": context } ] },
            ],
        }],
    })
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifications.webhooks[{index}] ({name}): {detail}")]
    Webhook {
        index: usize,
        name: String,
        detail: String,
    },
}

/// `cujo_notifications_total{webhook, outcome}` for one webhook.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

/// The notifier's self-metrics.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Evaluations done (each after its transitions were queued).
    evaluations: AtomicU64,
    /// Alerts notified as firing and not yet resolved.
    firing: AtomicU64,
    webhooks: Vec<(String, Arc<Counters>)>,
}

impl NotifyStats {
    /// Appends the notifier's families in the Prometheus text format.
    pub fn render(&self, out: &mut cujo_otlp::prom::Exposition) {
        let mut f = Family::counter(
            out,
            "cujo_notifications_total",
            "Alert notifications per webhook: sent (delivered), failed (given up: 4xx, retries exhausted, queue full, shutdown), retried (attempts repeated).",
        );
        for (name, c) in &self.webhooks {
            for (outcome, v) in [
                ("sent", &c.sent),
                ("failed", &c.failed),
                ("retried", &c.retried),
            ] {
                f.sample(
                    &[("webhook", name), ("outcome", outcome)],
                    v.load(Ordering::Relaxed) as f64,
                );
            }
        }
        Family::counter(
            out,
            "cujo_notifications_evaluations_total",
            "Burn-rate alert evaluations done by the notifier.",
        )
        .sample(&[], self.evaluations.load(Ordering::Relaxed) as f64);
        Family::gauge(
            out,
            "cujo_notifications_alerts_firing",
            "Burn-rate alerts notified as firing and not yet resolved.",
        )
        .sample(&[], self.firing.load(Ordering::Relaxed) as f64);
    }
}

/// The answer to one attempt.
#[derive(Debug)]
enum Attempt {
    Delivered,
    Retryable {
        after: Option<Duration>,
        error: String,
    },
    Permanent {
        error: String,
    },
}

/// One configured webhook, ready to post.
struct Webhook {
    /// Names it in logs and in the `webhook` label.
    name: String,
    uri: Uri,
    format: WebhookFormat,
    /// Sent with every attempt (tokens for the receiver).
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Bounds one attempt, so a hung receiver is retried rather than waited on forever.
    timeout: Duration,
    max_retries: u32,
    /// Pooled connections (HTTP/1.1, or HTTP/2 when TLS negotiates it).
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Shared with [`NotifyStats`] for `/metrics`.
    counters: Arc<Counters>,
}

impl Webhook {
    fn new(index: usize, c: &WebhookConfig) -> Result<Self, NotifyError> {
        let bad = |detail: String| NotifyError::Webhook {
            index,
            name: c.name.clone(),
            detail,
        };
        let uri: Uri = c
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(format!("url: {e}")))?;
        let headers = c
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| bad(format!("headers: {k:?}: {e}")))?,
                    HeaderValue::from_str(v).map_err(|e| bad(format!("headers.{k}: {e}")))?,
                ))
            })
            .collect::<Result<Vec<_>, NotifyError>>()?;
        let tls = cujo_otlp::exporter::transport::client_tls_config(c.tls.ca_file.as_deref())
            .map_err(|d| bad(format!("tls: {d}")))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            name: c.name.clone(),
            uri,
            format: c.format,
            headers,
            timeout: c.timeout.0,
            max_retries: c.max_retries,
            client,
            counters: Arc::new(Counters::default()),
        })
    }

    fn body(&self, t: &Transition, instance: &str) -> Result<Bytes, String> {
        let value = match self.format {
            WebhookFormat::Slack => slack_body(t, instance),
            WebhookFormat::Generic => generic_body(t, instance),
        };
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|e| e.to_string())
    }

    /// Delivers one transition: retries what may succeed later, until `max_retries`; on
    /// `stop` (shutdown) no further retry is scheduled.
    async fn deliver(&self, t: &Transition, instance: &str, stop: &CancellationToken) {
        let dedup_key = t.dedup_key();
        let body = match self.body(t, instance) {
            Ok(b) => b,
            Err(error) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(webhook = %self.name, %dedup_key, %error, "cannot encode the notification");
                return;
            }
        };
        let mut backoff = INITIAL_BACKOFF;
        let mut attempt = 0u32;
        loop {
            let (wait, error) = match self.attempt(body.clone()).await {
                Attempt::Delivered => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(webhook = %self.name, %dedup_key, status = t.status.label(), attempts = attempt + 1, "alert notification delivered");
                    return;
                }
                Attempt::Permanent { error } => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(webhook = %self.name, %dedup_key, %error, "alert notification refused; not retried");
                    return;
                }
                Attempt::Retryable { after, error } => {
                    if attempt >= self.max_retries || stop.is_cancelled() {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(webhook = %self.name, %dedup_key, %error, attempts = attempt + 1, "alert notification failed; giving up");
                        return;
                    }
                    let wait = after.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::warn!(webhook = %self.name, %dedup_key, %error, retry_in = ?wait, "alert notification failed; retrying");
                    (wait, error)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(webhook = %self.name, %dedup_key, %error, "shutting down: alert notification not retried");
                    return;
                }
            }
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn attempt(&self, body: Bytes) -> Attempt {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("cujo/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Permanent {
                    error: format!("cannot build the request: {e}"),
                };
            }
        };
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| cujo_otlp::exporter::transport::error_chain(&e))?;
            let (parts, body) = resp.into_parts();
            // The answer's body only feeds the log line; a huge one is cut.
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((parts.status, parts.headers, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Attempt::Retryable {
                after: None,
                error: format!("no answer from {} within {:?}", self.uri, self.timeout),
            },
            Ok(Err(error)) => Attempt::Retryable {
                after: None,
                error: format!("posting to {} failed: {error}", self.uri),
            },
            Ok(Ok((status, headers, body))) => {
                if status.is_success() {
                    return Attempt::Delivered;
                }
                let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
                let error = format!("{} answered HTTP {status}: {}", self.uri, text.trim());
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    Attempt::Retryable {
                        after: headers
                            .get(header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs),
                        error,
                    }
                } else {
                    Attempt::Permanent { error }
                }
            }
        }
    }
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
    stats: Arc<NotifyStats>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Notifier {
    /// Starts evaluating the engine behind `engine` every `config.evaluation_interval` at
    /// `clock()` (ms since the Unix epoch). Must be called within a Tokio runtime.
    pub fn start(
        config: &NotificationsConfig,
        engine: SliReader,
        clock: fn() -> u64,
    ) -> Result<Notifier, NotifyError> {
        let hooks = config
            .webhooks
            .iter()
            .enumerate()
            .map(|(i, c)| Ok((Webhook::new(i, c)?, c.severities.clone())))
            .collect::<Result<Vec<_>, NotifyError>>()?;
        let stats = Arc::new(NotifyStats {
            evaluations: AtomicU64::new(0),
            firing: AtomicU64::new(0),
            webhooks: hooks
                .iter()
                .map(|(h, _)| (h.name.clone(), h.counters.clone()))
                .collect(),
        });
        let instance: Arc<str> = instance_name(config.instance.as_deref()).into();
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut queues = Vec::new();
        for (hook, severities) in hooks {
            let (tx, mut rx) = mpsc::channel::<Arc<Transition>>(QUEUE_CAPACITY);
            queues.push(Queue {
                name: hook.name.clone(),
                severities,
                tx,
                counters: hook.counters.clone(),
            });
            let (instance, stop) = (instance.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(t) = rx.recv().await {
                    hook.deliver(&t, &instance, &stop).await;
                }
            }));
        }
        tracing::info!(
            webhooks = queues.len(),
            every = ?config.evaluation_interval.0,
            %instance,
            "notifying burn-rate alert transitions"
        );
        tasks.push(tokio::spawn(evaluate(
            engine,
            clock,
            config.evaluation_interval.0,
            AlertTracker::new(config.resolve_delay.0),
            queues,
            stats.clone(),
            stop.clone(),
        )));
        Ok(Notifier { stats, stop, tasks })
    }

    /// `cujo_notifications_total` and friends, for `/metrics`.
    pub fn metrics_source(&self) -> MetricsSource {
        let stats = self.stats.clone();
        Arc::new(move |out: &mut cujo_otlp::prom::Exposition| stats.render(out))
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

/// One webhook's queue, as the evaluation task sees it.
struct Queue {
    name: String,
    severities: Vec<AlertSeverity>,
    tx: mpsc::Sender<Arc<Transition>>,
    counters: Arc<Counters>,
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
    mut tracker: AlertTracker,
    queues: Vec<Queue>,
    stats: Arc<NotifyStats>,
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
                    budget_remaining = t.budget_remaining, %dedup_key,
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
                    q.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(webhook = %q.name, %dedup_key, "the webhook's queue is full; notification dropped");
                }
            }
        }
        stats
            .firing
            .store(tracker.firing() as u64, Ordering::Relaxed);
        stats.evaluations.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cujo_sli::condition::{Scalar, SpanFacts, StatusCode};
    use cujo_sli::cuj::TraceFacts;
    use cujo_sli::engine::SliEngine;

    const MIN: u64 = 60_000;

    struct Root {
        error: bool,
    }

    impl SpanFacts for Root {
        fn name(&self) -> &str {
            "POST /v1/messages"
        }
        fn service(&self) -> &str {
            "frontend-api"
        }
        fn status(&self) -> StatusCode {
            if self.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            }
        }
        fn attribute(&self, _key: &str) -> Option<Scalar<'_>> {
            None
        }
    }

    /// The CUJ as a user writes it: 99.9% available over 30 days.
    fn engine() -> SliEngine {
        let config = crate::config::Config::parse(
            "cujo.yaml",
            r#"
cujs:
  - name: post_message
    match: { span.name: "POST /v1/messages" }
    availability: { bad: [ { status: error } ] }
    objectives: [ { sli: availability, target: 99.9%, window: 30d } ]
"#,
            &|_| None,
        )
        .expect("config");
        SliEngine::new(config.cujs())
    }

    /// One minute of traffic: 100 traces, `bad` of them errors, observed at `now`.
    fn minute(e: &mut SliEngine, now: u64, bad: u32) {
        for i in 0..100 {
            let root = Root { error: i < bad };
            let trace = TraceFacts {
                trace_id: [7; 16],
                root: &root,
                root_start_ns: 0,
                root_end_ns: 1_000_000,
                spans: std::slice::from_ref(&root),
                last_end_ns: 1_000_000,
                span_bits: None,
            };
            e.observe(&trace, now);
        }
    }

    fn page(ts: &[(u64, Transition)]) -> Vec<(u64, &Transition)> {
        ts.iter()
            .filter(|(_, t)| t.severity == Severity::Page)
            .map(|(at, t)| (*at, t))
            .collect()
    }

    /// Two calm hours, a 10-minute burst of 50% errors, then calm again, evaluated every
    /// minute on an injected clock: the page fires once in the burst and resolves once when
    /// the windows have rolled past it (later by `resolve_delay`), the ticket keeps firing.
    #[test]
    fn an_error_burst_fires_the_page_once_and_resolves_it_as_the_windows_roll() {
        let mut e = engine();
        let mut prompt = AlertTracker::new(Duration::ZERO);
        let mut delayed = AlertTracker::new(Duration::from_secs(300));
        let (mut seen_prompt, mut seen_delayed) = (Vec::new(), Vec::new());
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % (3600 * 1000);
        let mut page_clear_from = None;
        for m in 0..240u64 {
            let now = t0 + m * MIN;
            let burst = (120..130).contains(&m);
            minute(&mut e, now, if burst { 50 } else { 0 });
            let report = e.report(now);
            let firing = report.cujs[0].objectives[0].page;
            if m > 130 && !firing && page_clear_from.is_none() {
                page_clear_from = Some(now);
            }
            seen_prompt.extend(prompt.update(&report).into_iter().map(|t| (now, t)));
            seen_delayed.extend(delayed.update(&report).into_iter().map(|t| (now, t)));
            // Evaluating again at the same instant changes nothing: a state is notified once.
            assert!(prompt.update(&report).is_empty());
        }
        let cleared = page_clear_from.expect("the page clears after the burst");

        let pages = page(&seen_prompt);
        assert_eq!(pages.len(), 2, "one firing, one resolved: {pages:#?}");
        let (fired_at, firing) = pages[0];
        assert_eq!(firing.status, AlertStatus::Firing);
        // 1h burn after two bad minutes: 100 / 6000 / 0.001 = 16.7 > 14.4 (and 5m far above).
        assert_eq!(fired_at, t0 + 121 * MIN);
        assert_eq!(firing.started_at_ms, fired_at);
        assert!(firing.burn("1h").is_some_and(|b| b > 14.4), "{firing:?}");
        assert!(firing.budget_remaining < 1.0);
        let (resolved_at, resolved) = pages[1];
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved_at, cleared);
        assert_eq!(resolved.resolved_at_ms, Some(cleared));
        assert_eq!(resolved.dedup_key(), firing.dedup_key());
        assert_eq!(
            firing.dedup_key(),
            format!("post_message/availability/30d/page/{fired_at}")
        );
        // The (6h, 30m) rule holds the page until the 30-minute window is past the burst.
        assert!(
            cleared >= t0 + 150 * MIN && cleared <= t0 + 161 * MIN,
            "{cleared}"
        );

        let delayed_pages = page(&seen_delayed);
        assert_eq!(delayed_pages.len(), 2, "{delayed_pages:#?}");
        assert_eq!(delayed_pages[0].1, firing);
        assert_eq!(delayed_pages[1].0, cleared + 5 * MIN);
        assert_eq!(delayed_pages[1].1.resolved_at_ms, Some(cleared));

        // A day's 1% error ratio opens a ticket that outlives the page.
        let tickets: Vec<_> = seen_prompt
            .iter()
            .filter(|(_, t)| t.severity == Severity::Ticket)
            .collect();
        assert_eq!(tickets.len(), 1, "{tickets:#?}");
        assert_eq!(tickets[0].1.status, AlertStatus::Firing);
        assert_eq!(prompt.firing(), 1);
    }

    /// Reports whose page alert is set by hand.
    fn flagged(e: &SliEngine, now: u64, page: bool) -> Report {
        let mut r = e.report(now);
        r.cujs[0].objectives[0].page = page;
        r.cujs[0].objectives[0].ticket = false;
        r
    }

    #[test]
    fn a_flap_within_resolve_delay_is_the_same_alert() {
        let e = engine();
        let mut tracker = AlertTracker::new(Duration::from_secs(300));
        let t = 1_700_000_000_000;
        let fired = tracker.update(&flagged(&e, t, true));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, AlertStatus::Firing);
        // Clear for two minutes, firing again, clear again: nothing to say yet.
        for (at, page) in [(1, false), (3, false), (4, true), (5, false), (9, false)] {
            let out = tracker.update(&flagged(&e, t + at * MIN, page));
            assert!(out.is_empty(), "minute {at}: {out:?}");
        }
        // Clear since minute 5: resolved at minute 10, once, under the first alert's key.
        let resolved = tracker.update(&flagged(&e, t + 10 * MIN, false));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].resolved_at_ms, Some(t + 5 * MIN));
        assert_eq!(resolved[0].dedup_key(), fired[0].dedup_key());
        assert!(tracker.update(&flagged(&e, t + 11 * MIN, false)).is_empty());
        // Firing after the resolution is a new alert with a new key.
        let again = tracker.update(&flagged(&e, t + 20 * MIN, true));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].started_at_ms, t + 20 * MIN);
        assert_ne!(again[0].dedup_key(), fired[0].dedup_key());
    }

    fn sample_transition(status: AlertStatus) -> Transition {
        Transition {
            status,
            severity: Severity::Page,
            cuj: "post_message".into(),
            sli: "availability".into(),
            target: 0.999,
            window: "30d".into(),
            burn_rates: vec![
                ("5m".into(), 120.0),
                ("1h".into(), 16.5),
                ("30d".into(), f64::INFINITY),
            ],
            budget_remaining: 0.8,
            exhaustion_seconds: Some(7980.0),
            started_at_ms: 1_700_000_000_000,
            resolved_at_ms: (status == AlertStatus::Resolved).then_some(1_700_000_600_000),
        }
    }

    #[test]
    fn the_generic_body_carries_what_a_receiver_routes_and_dedupes_on() {
        let body = generic_body(&sample_transition(AlertStatus::Firing), "cujo-0");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["severity"], "page");
        assert_eq!(body["cuj"], "post_message");
        assert_eq!(body["sli"], "availability");
        assert_eq!(body["objective"]["target"], 0.999);
        assert_eq!(body["objective"]["window"], "30d");
        assert_eq!(body["burn_rates"]["5m"], 120.0);
        assert_eq!(
            body["burn_rates"]["30d"],
            Value::Null,
            "JSON has no infinity"
        );
        assert_eq!(body["budget_remaining"], 0.8);
        assert_eq!(body["exhaustion_seconds"], 7980.0);
        assert_eq!(body["started_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["resolved_at"], Value::Null);
        assert_eq!(
            body["dedup_key"],
            "post_message/availability/30d/page/1700000000000"
        );
        assert_eq!(body["cujo_instance"], "cujo-0");
        let resolved = generic_body(&sample_transition(AlertStatus::Resolved), "cujo-0");
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["resolved_at"], "2023-11-14T22:23:20.000Z");
    }

    #[test]
    fn the_slack_body_reads_as_a_sentence() {
        let body = slack_body(&sample_transition(AlertStatus::Firing), "cujo-0");
        let text = body["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(":rotating_light: [FIRING:page] CUJ *post_message* is burning its availability error budget: 16.5x over 1h, 120.0x over 5m (objective 99.9% over 30d; 80% of the budget left, exhausted in 2h 13m)"),
            "{text}"
        );
        assert_eq!(body["attachments"][0]["color"], "#d62728");
        let resolved = slack_body(&sample_transition(AlertStatus::Resolved), "a<b>");
        let text = resolved["text"].as_str().unwrap_or_default();
        assert!(text.contains("[RESOLVED:page]"), "{text}");
        let context = resolved["attachments"][0]["blocks"][2]["elements"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(context.starts_with("cujo a&lt;b&gt; · "), "{context}");
    }
}
