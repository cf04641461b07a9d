//! cujo's own accounting for the receive → export path, kept in one place (Vector's
//! `internal_events` habit): every method here both counts and, where a span leaves the
//! pipeline without being delivered, logs why — so a log line and its counter never drift.
//!
//! The invariant these counters keep, checked by tests:
//! `accepted = exported + dropped{reason} + in_flight`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::prom;

/// How spans reached cujo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
    /// Requests replayed from the write-ahead log at start (`wal:`): acknowledged before a
    /// restart, not yet exported or dropped then.
    Wal,
}

impl Transport {
    const ALL: [Transport; 3] = [Transport::Grpc, Transport::Http, Transport::Wal];
    pub fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
            Transport::Wal => "wal",
        }
    }
}

/// What became of a request at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Accepted (possibly with some spans rejected, see `partial_success`).
    Accepted,
    /// Refused with a retryable answer: admission budget or pipeline full.
    Refused,
    /// Not a valid OTLP request: undecodable, wrong encoding, wrong content type.
    Invalid,
    /// Over the message size limit, compressed or decompressed.
    TooLarge,
    /// Without a valid bearer token (`receivers.otlp.auth`): refused on its headers, its
    /// body never read.
    Unauthenticated,
}

impl RequestOutcome {
    const ALL: [RequestOutcome; 5] = [
        RequestOutcome::Accepted,
        RequestOutcome::Refused,
        RequestOutcome::Invalid,
        RequestOutcome::TooLarge,
        RequestOutcome::Unauthenticated,
    ];
    fn label(self) -> &'static str {
        match self {
            RequestOutcome::Accepted => "accepted",
            RequestOutcome::Refused => "refused",
            RequestOutcome::Invalid => "invalid",
            RequestOutcome::TooLarge => "too_large",
            RequestOutcome::Unauthenticated => "unauthenticated",
        }
    }
}

/// Why accepted spans left cujo without reaching the downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No span exporter is configured.
    NoExporter,
    /// The downstream answered with a non-retryable error.
    Rejected,
    /// The downstream accepted the request but refused some spans (`partial_success`).
    PartiallyRejected,
    /// Retries ran past `retry.max_elapsed`.
    RetriesExhausted,
    /// The shutdown deadline passed before they could be sent.
    Shutdown,
    /// cujo could not encode them (a bug: reported, never silent).
    Internal,
}

impl DropReason {
    const ALL: [DropReason; 6] = [
        DropReason::NoExporter,
        DropReason::Rejected,
        DropReason::PartiallyRejected,
        DropReason::RetriesExhausted,
        DropReason::Shutdown,
        DropReason::Internal,
    ];
    pub fn label(self) -> &'static str {
        match self {
            DropReason::NoExporter => "no_exporter",
            DropReason::Rejected => "rejected",
            DropReason::PartiallyRejected => "partially_rejected",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Shutdown => "shutdown",
            DropReason::Internal => "internal_error",
        }
    }
}

const T: usize = Transport::ALL.len();
const O: usize = RequestOutcome::ALL.len();
const D: usize = DropReason::ALL.len();

/// Upper bounds of `cujo_exporter_send_duration_seconds`' buckets, in microseconds: from a
/// loopback downstream's few milliseconds to a slow one's export timeout.
const SEND_BUCKETS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];
const S: usize = SEND_BUCKETS_US.len() + 1;

/// Counters of the receive → export path. One instance per process, shared by reference.
#[derive(Default)]
pub struct PipelineTelemetry {
    requests: [[AtomicU64; O]; T],
    /// Spans by transport and outcome. `invalid` counts spans refused one by one
    /// (`partial_success`); spans inside undecodable requests cannot be counted.
    spans: [[AtomicU64; O]; T],
    exported_spans: AtomicU64,
    export_requests_ok: AtomicU64,
    export_attempts_failed: AtomicU64,
    /// Export attempts by how long the downstream took to answer (or to fail), the last
    /// bucket past every bound; and their sum in microseconds.
    send_durations: [AtomicU64; S],
    send_duration_sum_us: AtomicU64,
    dropped: [AtomicU64; D],
    /// Spans waiting in the exporter (batching, queued, or being sent).
    queue_spans: AtomicI64,
    /// Configured capacity of the exporter queue, for saturation alerts.
    queue_capacity: AtomicU64,
}

impl PipelineTelemetry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn request(&self, transport: Transport, outcome: RequestOutcome, spans: u64) {
        self.requests[transport as usize][outcome as usize].fetch_add(1, Relaxed);
        if spans > 0 {
            self.spans[transport as usize][outcome as usize].fetch_add(spans, Relaxed);
        }
    }

    /// A request refused for its credentials (`reason` says what was wrong, never what was
    /// sent).
    pub fn unauthenticated(&self, transport: Transport, reason: &str) {
        self.request(transport, RequestOutcome::Unauthenticated, 0);
        tracing::debug!(transport = transport.label(), reason, "request refused");
    }

    /// Takes back a count made by `request(.., Accepted, ..)` whose hand-off then failed.
    pub fn undo_accepted(&self, transport: Transport, spans: u64) {
        self.requests[transport as usize][RequestOutcome::Accepted as usize].fetch_sub(1, Relaxed);
        self.spans[transport as usize][RequestOutcome::Accepted as usize].fetch_sub(spans, Relaxed);
    }

    /// Spans of an accepted request that were refused individually.
    pub fn spans_rejected(&self, transport: Transport, spans: u64, reason: &str) {
        self.spans[transport as usize][RequestOutcome::Invalid as usize].fetch_add(spans, Relaxed);
        tracing::debug!(
            transport = transport.label(),
            spans,
            reason,
            "spans rejected"
        );
    }

    pub fn spans_exported(&self, spans: u64) {
        self.exported_spans.fetch_add(spans, Relaxed);
        self.export_requests_ok.fetch_add(1, Relaxed);
    }

    /// One export attempt took `took`, from sending the request to the answer or the failure.
    pub fn export_attempt_took(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = SEND_BUCKETS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(SEND_BUCKETS_US.len());
        self.send_durations[bucket].fetch_add(1, Relaxed);
        self.send_duration_sum_us.fetch_add(us, Relaxed);
    }

    pub fn export_attempt_failed(&self, error: &str, retrying: bool) {
        self.export_attempts_failed.fetch_add(1, Relaxed);
        tracing::warn!(error, retrying, "span export attempt failed");
    }

    pub fn spans_dropped(&self, reason: DropReason, spans: u64, detail: &str) {
        if spans == 0 {
            return;
        }
        self.dropped[reason as usize].fetch_add(spans, Relaxed);
        match reason {
            DropReason::NoExporter => {
                tracing::trace!(spans, "spans not forwarded: no span exporter configured")
            }
            _ => tracing::error!(reason = %reason.label(), spans, detail, "spans dropped"),
        }
    }

    pub fn queue_add(&self, spans: i64) {
        self.queue_spans.fetch_add(spans, Relaxed);
    }

    pub fn set_queue_capacity(&self, spans: u64) {
        self.queue_capacity.store(spans, Relaxed);
    }

    /// Spans accepted by every receiver.
    pub fn accepted_spans(&self) -> u64 {
        Transport::ALL
            .iter()
            .map(|t| self.spans[*t as usize][RequestOutcome::Accepted as usize].load(Relaxed))
            .sum()
    }

    pub fn exported_spans(&self) -> u64 {
        self.exported_spans.load(Relaxed)
    }

    pub fn dropped_spans(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    pub fn dropped_spans_total(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(Relaxed)).sum()
    }

    /// Accepted spans not yet exported or dropped.
    pub fn in_flight_spans(&self) -> u64 {
        self.accepted_spans()
            .saturating_sub(self.exported_spans())
            .saturating_sub(self.dropped_spans_total())
    }

    /// Appends these metrics in the Prometheus text format.
    pub fn render(&self, out: &mut prom::Exposition) {
        let mut m = prom::Family::counter(
            out,
            "cujo_receiver_requests_total",
            "OTLP export requests received, by transport and outcome.",
        );
        for t in Transport::ALL {
            for o in RequestOutcome::ALL {
                m.sample(
                    &[("transport", t.label()), ("outcome", o.label())],
                    self.requests[t as usize][o as usize].load(Relaxed) as f64,
                );
            }
        }
        let mut m = prom::Family::counter(
            out,
            "cujo_receiver_spans_total",
            "Spans received, by transport and outcome (accepted, refused with a retryable answer, invalid).",
        );
        for t in Transport::ALL {
            for o in RequestOutcome::ALL {
                // Their bodies were not read, or not whole: their spans are not known.
                if matches!(
                    o,
                    RequestOutcome::TooLarge | RequestOutcome::Unauthenticated
                ) {
                    continue;
                }
                m.sample(
                    &[("transport", t.label()), ("outcome", o.label())],
                    self.spans[t as usize][o as usize].load(Relaxed) as f64,
                );
            }
        }
        prom::Family::counter(
            out,
            "cujo_exporter_sent_spans_total",
            "Spans delivered to the downstream.",
        )
        .sample(&[], self.exported_spans() as f64);
        prom::Family::counter(
            out,
            "cujo_exporter_sent_requests_total",
            "Export requests the downstream accepted.",
        )
        .sample(&[], self.export_requests_ok.load(Relaxed) as f64);
        prom::Family::counter(
            out,
            "cujo_exporter_failed_attempts_total",
            "Export attempts that failed (each retry counts once).",
        )
        .sample(&[], self.export_attempts_failed.load(Relaxed) as f64);
        let mut h = prom::Family::histogram(
            out,
            "cujo_exporter_send_duration_seconds",
            "Time from sending an export request to the downstream's answer (or the attempt's failure), per attempt.",
        );
        let mut cumulative = 0;
        for (i, bound) in SEND_BUCKETS_US.iter().enumerate() {
            cumulative += self.send_durations[i].load(Relaxed);
            let le = format!("{}", *bound as f64 / 1e6);
            h.sample_suffixed("_bucket", &[("le", &le)], cumulative as f64);
        }
        cumulative += self.send_durations[S - 1].load(Relaxed);
        h.sample_suffixed("_bucket", &[("le", "+Inf")], cumulative as f64);
        h.sample_suffixed(
            "_sum",
            &[],
            self.send_duration_sum_us.load(Relaxed) as f64 / 1e6,
        );
        h.sample_suffixed("_count", &[], cumulative as f64);
        let mut m = prom::Family::counter(
            out,
            "cujo_dropped_spans_total",
            "Accepted spans that left cujo without being delivered, by reason.",
        );
        for r in DropReason::ALL {
            m.sample(
                &[("reason", r.label())],
                self.dropped[r as usize].load(Relaxed) as f64,
            );
        }
        prom::Family::gauge(
            out,
            "cujo_in_flight_spans",
            "Accepted spans not yet delivered or dropped.",
        )
        .sample(&[], self.in_flight_spans() as f64);
        prom::Family::gauge(
            out,
            "cujo_exporter_queue_spans",
            "Spans waiting in the span exporter (batching, queued or being sent).",
        )
        .sample(&[], self.queue_spans.load(Relaxed).max(0) as f64);
        prom::Family::gauge(
            out,
            "cujo_exporter_queue_capacity_spans",
            "Capacity of the span exporter queue.",
        )
        .sample(&[], self.queue_capacity.load(Relaxed) as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::PipelineTelemetry;
    use crate::prom::{Exposition, Format};

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn send_durations_fall_into_cumulative_buckets() {
        let t = PipelineTelemetry::new();
        t.export_attempt_took(Duration::from_micros(800));
        t.export_attempt_took(Duration::from_millis(7));
        t.export_attempt_took(Duration::from_millis(7));
        t.export_attempt_took(Duration::from_secs(60));
        let mut out = Exposition::new(Format::Prometheus);
        t.render(&mut out);
        let text = out.finish();
        let bucket = |le: &str| {
            sample(
                &text,
                &format!("cujo_exporter_send_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.001"), Some("1"), "{text}");
        assert_eq!(bucket("0.005"), Some("1"));
        assert_eq!(bucket("0.01"), Some("3"));
        assert_eq!(bucket("30"), Some("3"));
        assert_eq!(bucket("+Inf"), Some("4"));
        assert_eq!(
            sample(&text, "cujo_exporter_send_duration_seconds_count"),
            Some("4")
        );
        assert_eq!(
            sample(&text, "cujo_exporter_send_duration_seconds_sum"),
            Some("60.0148")
        );
    }
}
