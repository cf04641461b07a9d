//! What the engine's unit tests share: a root span with a tier (and one with times, for
//! end-to-end folding), a one-CUJ engine, feeding it, and reading a sample back.

use std::time::Duration;

use super::{Family, SliEngine};
use crate::condition::{Condition, Literal, RootMatch, Scalar, SpanFacts, StatusCode, ValueMatch};
use crate::cuj::{Cuj, Measure, Scope, Sli, TraceFacts};
use crate::slo::Objective;

pub(super) struct Span {
    pub(super) tier: String,
    pub(super) error: bool,
}

impl SpanFacts for Span {
    fn name(&self) -> &str {
        "POST /v1/messages"
    }
    fn service(&self) -> &str {
        "api"
    }
    fn status(&self) -> StatusCode {
        if self.error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        }
    }
    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        (key == "user.tier").then_some(Scalar::Str(&self.tier))
    }
}

/// A span with times, for end-to-end folding.
pub(super) struct Timed(pub(super) Span, pub(super) (u64, u64));

impl SpanFacts for Timed {
    fn name(&self) -> &str {
        "process message"
    }
    fn service(&self) -> &str {
        "worker"
    }
    fn status(&self) -> StatusCode {
        self.0.status()
    }
    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        self.0.attribute(key)
    }
    fn times_ns(&self) -> Option<(u64, u64)> {
        Some(self.1)
    }
}

pub(super) fn engine(max_series: usize) -> SliEngine {
    engine_with_threshold(max_series, 300)
}

/// [`engine`] with its latency threshold at `threshold_ms`.
pub(super) fn engine_with_threshold(max_series: usize, threshold_ms: u64) -> SliEngine {
    SliEngine::new(vec![post_message_with_threshold(max_series, threshold_ms)])
}

/// The CUJ of [`engine`]: availability (errors are bad) and latency (300 ms) objectives
/// over 30 days, split by `user.tier`, alerts ungated.
pub(super) fn post_message(max_series: usize) -> Cuj {
    post_message_with_threshold(max_series, 300)
}

/// [`post_message`] with its latency threshold at `threshold_ms`.
pub(super) fn post_message_with_threshold(max_series: usize, threshold_ms: u64) -> Cuj {
    Cuj {
        name: "post_message".into(),
        matcher: RootMatch {
            span_name: Some(ValueMatch::Equals(Literal::Str("POST /v1/messages".into()))),
            ..RootMatch::default()
        },
        dimensions: vec!["user.tier".into()],
        max_series,
        scope: Scope::Root,
        bad: vec![Condition::Status(StatusCode::Error)],
        exclude: vec![],
        latency: Some((Duration::from_millis(threshold_ms), Measure::Root)),
        objectives: vec![
            (
                Sli::Availability,
                Objective {
                    target: 0.999,
                    window: Duration::from_secs(30 * 86400),
                },
            ),
            (
                Sli::Latency,
                Objective {
                    target: 0.99,
                    window: Duration::from_secs(30 * 86400),
                },
            ),
        ],
        alert_gate: crate::slo::AlertGate::OFF,
        runbook: None,
    }
}

pub(super) fn feed(e: &mut SliEngine, tier: &str, error: bool, latency_ms: u64, now_ms: u64) {
    let spans = [Span {
        tier: tier.into(),
        error,
    }];
    let t = TraceFacts {
        trace_id: [1; 16],
        root: &spans[0],
        root_start_ns: 0,
        root_end_ns: latency_ms * 1_000_000,
        spans: &spans,
        last_end_ns: latency_ms * 1_000_000,
        span_bits: None,
    };
    e.observe(&t, now_ms);
}

pub(super) fn value(
    fams: &[Family],
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    fams.iter()
        .find(|f| f.name == name)?
        .samples
        .iter()
        .find_map(|s| {
            (s.suffix == suffix
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
            .then_some(s.value)
        })
}
