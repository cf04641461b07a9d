//! OTLP metrics push (`exporters.otlp_metrics`): the CUJ SLIs sent to an OTLP backend
//! (Honeycomb, New Relic, Datadog, Mackerel, a collector) every `interval`.
//!
//! Owns the push's timer, its requests and its counters. It reads the engine only through
//! [`SliReader::with`] (a snapshot taken on the engine's thread) and sends only through
//! `cujo_otlp::exporter::transport` (the span exporter's client: gRPC or HTTP/protobuf,
//! gzip, TLS, headers), retrying with `cujo_otlp::exporter::retry::Backoff`; it must not
//! touch the span path, another exporter, or the engine's state.
//!
//! # Layout
//! - [`config`]: `exporters.otlp_metrics`, its `validate`, and the settings it resolves
//!   into over its `preset:` (a backend's contract, `cujo_config::presets`).
//! - [`shape`]: [`MetricsShaper`] turns an [`EngineSnapshot`] into a request; temporality,
//!   histogram form, and [`shape::split`] for backends with a request size limit.
//! - [`telemetry`]: [`OtlpMetricsTelemetry`], `cujo_otlp_metrics_*`, and the push's log lines.
//! - here: [`spawn`] runs the timer: one push per interval (in parts when it is larger
//!   than the backend takes), retrying what OTLP says is retryable within the interval,
//!   and one final push at shutdown.

pub mod config;
pub mod shape;
pub mod telemetry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cujo_config::KeyError;
use cujo_config::outbound::header_pairs;
use cujo_otlp::exporter::retry::{Backoff, RetrySettings};
use cujo_otlp::exporter::transport::{self, Downstream, DownstreamError, Outcome, Signal};
use cujo_sli::processor::SliReader;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{HistogramForm, MetricsSettings, OtlpMetricsExporter, Temporality};
pub use shape::{Baseline, EngineSnapshot, MAX_BUCKETS, MetricsShaper};
pub use telemetry::OtlpMetricsTelemetry;

/// Most attempts of one push (the first included), all within the interval.
const MAX_ATTEMPTS: u32 = 5;

/// Why the push could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] KeyError),
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
}

/// The running push task.
pub struct MetricsPush {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl MetricsPush {
    /// Stops the timer after one final push (bounded by the push timeout).
    pub async fn finish(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "OTLP metrics push task failed");
        }
    }
}

/// Starts pushing the metrics of the engine behind `engine` as `exporters.otlp_metrics` says.
pub fn spawn(
    cfg: &OtlpMetricsExporter,
    engine: SliReader,
    stats: Arc<OtlpMetricsTelemetry>,
    clock_ms: fn() -> u64,
) -> Result<MetricsPush, StartError> {
    let key = Signal::Metrics.config_key();
    let settings = cfg.settings(key)?;
    let headers = header_pairs(&format!("{key}.headers"), &settings.headers)?;
    let downstream = Downstream::for_signal(
        Signal::Metrics,
        &settings.endpoint,
        settings.protocol,
        settings.compression,
        headers,
        cfg.timeout.0,
        cfg.tls.ca_file.as_deref(),
    )?;
    tracing::info!(
        endpoint = %downstream.display_uri(),
        preset = cfg.preset.map_or("none", |p| p.name()),
        interval = ?cfg.interval.0,
        temporality = ?settings.temporality,
        histogram = ?settings.histogram,
        max_request_bytes = ?settings.max_request_bytes,
        "pushing SLI metrics over OTLP"
    );
    let instance = format!("{}-{}", hostname(), std::process::id());
    let shaper = MetricsShaper::new(
        settings.temporality,
        settings.histogram,
        clock_ms() * 1_000_000,
        &instance,
    );
    let stop = CancellationToken::new();
    let pusher = Pusher {
        engine,
        downstream,
        shaper,
        max_request_bytes: settings.max_request_bytes,
        stats,
        clock_ms,
    };
    let task = tokio::spawn(pusher.run(cfg.interval.0, cfg.timeout.0, stop.clone()));
    Ok(MetricsPush { stop, task })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cujo".into())
}

struct Pusher {
    engine: SliReader,
    downstream: Downstream,
    shaper: MetricsShaper,
    /// The backend's request size limit: larger pushes go in parts.
    max_request_bytes: Option<u64>,
    stats: Arc<OtlpMetricsTelemetry>,
    clock_ms: fn() -> u64,
}

impl Pusher {
    async fn run(mut self, interval: Duration, timeout: Duration, stop: CancellationToken) {
        let now_ms = (self.clock_ms)();
        let begun = self
            .engine
            .with(move |e| (e.counting_since_ms(), EngineSnapshot::take(e, now_ms)))
            .await;
        if let Some((since_ms, snapshot)) = begun {
            self.shaper
                .begin(&snapshot, since_ms * 1_000_000, now_ms * 1_000_000);
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.push(interval, &stop).await,
            }
        }
        // The last values (everything released before shutdown) go out once more.
        self.push(timeout, &CancellationToken::new()).await;
    }

    /// One push, retried while retryable within `budget`; gives up early on `stop`.
    async fn push(&mut self, budget: Duration, stop: &CancellationToken) {
        let now_ms = (self.clock_ms)();
        let Some(snapshot) = self
            .engine
            .with(move |engine| EngineSnapshot::take(engine, now_ms))
            .await
        else {
            return self
                .stats
                .failed("the SLI engine's thread stopped; nothing to push");
        };
        let (request, baseline) = self.shaper.build(&snapshot, now_ms * 1_000_000);
        let parts = match self.max_request_bytes {
            Some(max) => shape::split(request, max),
            None => vec![request],
        };
        let started = Instant::now();
        let mut backoff = Backoff::new(
            RetrySettings {
                initial_interval: (budget / 8)
                    .clamp(Duration::from_millis(10), Duration::from_secs(1)),
                max_interval: budget / 2,
                max_elapsed: budget,
            },
            started,
        );
        let count = parts.len();
        let mut delivered = Vec::with_capacity(count);
        for part in parts {
            if !self.send(part.clone(), &mut backoff, started, stop).await {
                if !delivered.is_empty() {
                    self.stats.failed(&format!(
                        "{} of {count} parts of the push delivered; the rest goes with the next push",
                        delivered.len()
                    ));
                }
                return self.shaper.commit_delivered(baseline, &delivered);
            }
            delivered.push(part);
        }
        self.shaper.commit(baseline);
    }

    /// Sends one request, retried while retryable within the push's backoff; whether it
    /// was delivered (failures are counted and logged here).
    async fn send(
        &mut self,
        request: ExportMetricsServiceRequest,
        backoff: &mut Backoff,
        started: Instant,
        stop: &CancellationToken,
    ) -> bool {
        let points = shape::data_points(&request);
        let (protocol, compression) = (self.downstream.protocol(), self.downstream.compression());
        let body = match tokio::task::spawn_blocking(move || {
            encode(&request, protocol, compression)
        })
        .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                self.stats.failed(&format!("compressing failed: {e}"));
                return false;
            }
            Err(e) => {
                self.stats.failed(&format!("encoding task failed: {e}"));
                return false;
            }
        };
        for attempt in 1..=MAX_ATTEMPTS {
            match self.downstream.send(body.clone()).await {
                Outcome::Delivered { rejected, message } => {
                    self.stats.delivered(points, rejected, &message);
                    return true;
                }
                Outcome::Permanent { error } => {
                    self.stats.attempt_failed(&error, false);
                    self.stats.failed(&error);
                    return false;
                }
                Outcome::Retryable { after, error } => {
                    let delay = backoff.next_delay(after, Instant::now());
                    let Some(delay) = delay.filter(|_| attempt < MAX_ATTEMPTS) else {
                        self.stats.attempt_failed(&error, false);
                        self.stats.failed(&format!(
                            "gave up after {attempt} attempts in {:?}: {error}",
                            started.elapsed()
                        ));
                        return false;
                    };
                    self.stats.attempt_failed(&error, true);
                    tokio::select! {
                        _ = stop.cancelled() => {
                            self.stats.failed(&format!("shutting down while waiting to retry: {error}"));
                            return false;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        false
    }
}

/// Protobuf, compressed if configured, framed for gRPC.
fn encode(
    request: &ExportMetricsServiceRequest,
    protocol: transport::Protocol,
    compression: transport::Compression,
) -> std::io::Result<Bytes> {
    transport::encode_message(&request.encode_to_vec(), protocol, compression)
}
