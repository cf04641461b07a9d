//! Export views: the engine's state as metric families for `/metrics` ([`Family`], with
//! the label helpers [`label_name`] and [`window_label`]) and as plain per-series data for
//! the OTLP metrics push ([`CujExport`]).
//!
//! It reads the CUJs, their series and the objectives' states and copies them out; it must
//! not change the engine (every method takes `&self`), match traces, or decide what is
//! recorded. Formats (text exposition, OTLP) are the binary's.

use std::time::Duration;

use super::{Exemplar, SliEngine};
use crate::cuj::Unmeasured;
use crate::histogram::ExpBuckets;
use crate::limits::{EvictReason, OverflowReason};
use crate::slo::Severity;

/// Kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One sample: `name<suffix>{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// The trace behind the sample, for formats that carry exemplars (OpenMetrics).
    pub exemplar: Option<Exemplar>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// Prometheus label name for an OpenTelemetry attribute key (`user.tier` → `user_tier`).
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `5m`, `1h`, `30d`: the window as Prometheus label value.
pub fn window_label(w: Duration) -> String {
    let s = w.as_secs();
    if s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Quantiles reported for a CUJ's latency (report, `/metrics`).
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// One CUJ's counters and latency buckets as plain data, for the OTLP metrics push.
#[derive(Debug, Clone, PartialEq)]
pub struct CujExport {
    pub name: String,
    /// Dimension keys with their OpenTelemetry names (`user.tier`).
    pub dimensions: Vec<String>,
    /// Whether the CUJ configures availability (its counts are exported).
    pub has_availability: bool,
    /// Whether the CUJ has a latency SLI (latency counts and buckets are meaningful).
    pub has_latency: bool,
    /// Upper bounds (seconds) of the CUJ's latency buckets, its threshold among them.
    pub bounds: Vec<f64>,
    pub excluded: u64,
    /// Events folded into the overflow series, by [`OverflowReason`] in `ALL` order.
    pub overflowed: [u64; 2],
    pub series: Vec<SeriesExport>,
}

/// One series of a [`CujExport`]; counters are cumulative since start.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesExport {
    /// Values in the order of [`CujExport::dimensions`].
    pub values: Vec<String>,
    pub availability_good: u64,
    pub availability_bad: u64,
    pub latency_good: u64,
    pub latency_bad: u64,
    /// Latency buckets merged down to at most the requested number of buckets.
    pub latency: ExpBuckets,
    /// Events per bucket of [`CujExport::bounds`] (upper-inclusive, not cumulative), then
    /// the events above the last bound: `bounds.len() + 1` counts.
    pub buckets: Vec<u64>,
}

impl SliEngine {
    /// Everything as metric families, for `/metrics`.
    pub fn families(&self, now_ms: u64) -> Vec<Family> {
        let mut events = family(
            "cujo_sli_events_total",
            "Valid SLI events per CUJ, SLI and outcome (good/bad).",
            Kind::Counter,
        );
        let mut excluded = family(
            "cujo_sli_excluded_total",
            "Events of a CUJ excluded by its exclude conditions (valid for neither SLI).",
            Kind::Counter,
        );
        let mut overflow = family(
            "cujo_sli_series_overflow_total",
            "Events folded into a CUJ's overflow series, by reason: the CUJ reached max_series, or a new series would not fit in the SLI engine's memory limit.",
            Kind::Counter,
        );
        let mut unmeasured = family(
            "cujo_sli_latency_unmeasured_total",
            "Valid events whose latency could not be measured (a {from, to} measure missing a span, or to before from); they still count for availability.",
            Kind::Counter,
        );
        let mut duration = family(
            "cujo_cuj_duration_seconds",
            "Measured latency of each CUJ's valid events; the buckets include the CUJ's threshold.",
            Kind::Histogram,
        );
        for s in &self.cujs {
            let name = s.cuj.name.clone();
            excluded.samples.push(sample(
                "",
                vec![("cuj".into(), name.clone())],
                s.excluded as f64,
            ));
            for (reason, n) in OverflowReason::ALL.iter().zip(s.overflowed) {
                overflow.samples.push(sample(
                    "",
                    vec![
                        ("cuj".into(), name.clone()),
                        ("reason".into(), reason.label().into()),
                    ],
                    n as f64,
                ));
            }
            if matches!(
                s.cuj.latency,
                Some((_, crate::cuj::Measure::Between { .. }))
            ) {
                for (r, n) in Unmeasured::ALL.iter().zip(s.unmeasured) {
                    unmeasured.samples.push(sample(
                        "",
                        vec![
                            ("cuj".into(), name.clone()),
                            ("reason".into(), r.label().into()),
                        ],
                        n as f64,
                    ));
                }
            }
            for (dims, series) in s.series.sorted() {
                let mut labels = vec![("cuj".to_string(), name.clone())];
                for (d, v) in s.cuj.dimensions.iter().zip(dims.iter()) {
                    labels.push((label_name(d), v.to_string()));
                }
                let with = |extra: &[(&str, &str)]| {
                    let mut l = labels.clone();
                    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                    l
                };
                if s.cuj.has_sli(crate::cuj::Sli::Availability) {
                    events.samples.push(sample(
                        "",
                        with(&[("sli", "availability"), ("outcome", "good")]),
                        series.available_good as f64,
                    ));
                    events.samples.push(Sample {
                        exemplar: series.availability_bad,
                        ..sample(
                            "",
                            with(&[("sli", "availability"), ("outcome", "bad")]),
                            series.available_bad as f64,
                        )
                    });
                }
                if s.cuj.latency.is_some() {
                    events.samples.push(sample(
                        "",
                        with(&[("sli", "latency"), ("outcome", "good")]),
                        series.latency_good as f64,
                    ));
                    events.samples.push(Sample {
                        exemplar: series.latency_bad_exemplar,
                        ..sample(
                            "",
                            with(&[("sli", "latency"), ("outcome", "bad")]),
                            series.latency_bad as f64,
                        )
                    });
                    let mut cumulative = 0u64;
                    for (i, bound) in s.bounds.iter().enumerate() {
                        let bucket = series.buckets.get(i).copied().unwrap_or_default();
                        cumulative += bucket.count;
                        duration.samples.push(Sample {
                            exemplar: bucket.exemplar,
                            ..sample(
                                "_bucket",
                                with(&[("le", &bound.to_string())]),
                                cumulative as f64,
                            )
                        });
                    }
                    let count = series.latency_good + series.latency_bad;
                    duration.samples.push(Sample {
                        exemplar: series.buckets.get(s.bounds.len()).and_then(|b| b.exemplar),
                        ..sample("_bucket", with(&[("le", "+Inf")]), count as f64)
                    });
                    duration.samples.push(sample(
                        "_sum",
                        labels.clone(),
                        series.latency_hist.sum_seconds(),
                    ));
                    duration
                        .samples
                        .push(sample("_count", labels.clone(), count as f64));
                }
            }
        }
        let mut target = family(
            "cujo_slo_objective_ratio",
            "Each objective's target, e.g. 0.999.",
            Kind::Gauge,
        );
        let mut sli = family(
            "cujo_slo_sli_ratio",
            "Good/valid over each window (absent without valid events).",
            Kind::Gauge,
        );
        let mut budget = family(
            "cujo_slo_error_budget_remaining_ratio",
            "Fraction of the error budget left over the objective's window (absent without valid events over it).",
            Kind::Gauge,
        );
        let mut coverage = family(
            "cujo_slo_window_coverage_ratio",
            "Fraction of each window with data: from its oldest slice holding an event to now, over the window (at most 1).",
            Kind::Gauge,
        );
        let mut burn = family(
            "cujo_slo_burn_rate",
            "Error ratio over the error budget, per window; 1 spends the budget exactly over the objective's window.",
            Kind::Gauge,
        );
        let mut alert = family(
            "cujo_slo_alert",
            "1 when the multiwindow burn-rate alert of this severity fires.",
            Kind::Gauge,
        );
        let mut held = family(
            "cujo_slo_alert_held",
            "1 when the burn-rate alert of this severity would fire but is held: its long window holds fewer events or less coverage than the CUJ's alert gate.",
            Kind::Gauge,
        );
        let mut exhaustion = family(
            "cujo_slo_budget_exhaustion_seconds",
            "At the last hour's burn rate, seconds until the budget is gone (absent when nothing burns).",
            Kind::Gauge,
        );
        for (cuj, which, goal, status) in self.objectives(now_ms) {
            let base = vec![
                ("cuj".to_string(), cuj.to_string()),
                ("sli".to_string(), which.label().to_string()),
            ];
            let with = |k: &str, v: String| {
                let mut l = base.clone();
                l.push((k.to_string(), v));
                l
            };
            target.samples.push(sample("", base.clone(), goal));
            for (w, v) in &status.sli {
                if let Some(v) = v {
                    sli.samples
                        .push(sample("", with("window", window_label(*w)), *v));
                }
            }
            for (w, v) in &status.burn_rate {
                burn.samples
                    .push(sample("", with("window", window_label(*w)), *v));
            }
            for (w, v) in &status.coverage {
                coverage
                    .samples
                    .push(sample("", with("window", window_label(*w)), *v));
            }
            if let Some(b) = status.budget_remaining {
                budget.samples.push(sample("", base.clone(), b));
            }
            for severity in [Severity::Page, Severity::Ticket] {
                let is_held = status.held.iter().any(|h| h.severity == severity);
                held.samples.push(sample(
                    "",
                    with("severity", severity.label().into()),
                    f64::from(u8::from(is_held)),
                ));
            }
            alert.samples.push(sample(
                "",
                with("severity", "page".into()),
                f64::from(u8::from(status.page)),
            ));
            alert.samples.push(sample(
                "",
                with("severity", "ticket".into()),
                f64::from(u8::from(status.ticket)),
            ));
            if let Some(e) = status.exhaustion {
                exhaustion
                    .samples
                    .push(sample("", base.clone(), e.as_secs_f64()));
            }
        }
        let mut settling = family(
            "cujo_sli_settling_traces",
            "Traces whose end_to_end or {from, to} events wait for late spans and linked continuations.",
            Kind::Gauge,
        );
        settling
            .samples
            .push(sample("", vec![], self.settling.len() as f64));
        let mut settle_spans = family(
            "cujo_sli_settle_spans_total",
            "Spans folded into a settling event after their trace's release: late spans of the same trace, spans of linked traces.",
            Kind::Counter,
        );
        settle_spans.samples.push(sample(
            "",
            vec![("source".into(), "late".into())],
            self.settling.late_spans as f64,
        ));
        settle_spans.samples.push(sample(
            "",
            vec![("source".into(), "linked".into())],
            self.settling.linked_spans as f64,
        ));
        let mut evicted = family(
            "cujo_sli_settle_evicted_total",
            "Settling traces recorded before their settle time, by reason: slo.max_settling_traces traces were waiting, or another would not fit in the SLI engine's memory limit.",
            Kind::Counter,
        );
        for (reason, n) in EvictReason::ALL.iter().zip(self.settling.evicted) {
            evicted.samples.push(sample(
                "",
                vec![("reason".into(), reason.label().into())],
                n as f64,
            ));
        }
        let mut all = vec![
            events,
            excluded,
            overflow,
            unmeasured,
            duration,
            self.latency_quantiles(),
            target,
            sli,
            budget,
            coverage,
            burn,
            alert,
            held,
            exhaustion,
            settling,
            settle_spans,
            evicted,
        ];
        all.extend(self.memory_families());
        all
    }

    /// Every CUJ's series (sorted by dimension values) with latency buckets fitted into
    /// `max_buckets` (the OTLP exponential histogram's size).
    pub fn export_view(&self, max_buckets: usize) -> Vec<CujExport> {
        self.cujs
            .iter()
            .map(|s| {
                let sorted = s.series.sorted();
                CujExport {
                    name: s.cuj.name.clone(),
                    dimensions: s.cuj.dimensions.clone(),
                    has_availability: s.cuj.has_sli(crate::cuj::Sli::Availability),
                    has_latency: s.cuj.latency.is_some(),
                    bounds: s.bounds.clone(),
                    excluded: s.excluded,
                    overflowed: s.overflowed,
                    series: sorted
                        .into_iter()
                        .map(|(k, v)| SeriesExport {
                            values: k.to_vec(),
                            availability_good: v.available_good,
                            availability_bad: v.available_bad,
                            latency_good: v.latency_good,
                            latency_bad: v.latency_bad,
                            latency: v.latency_hist.export(max_buckets),
                            buckets: (0..=s.bounds.len())
                                .map(|i| v.buckets.get(i).map_or(0, |b| b.count))
                                .collect(),
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// `cujo_cuj_latency_quantile_seconds`: quantiles of each CUJ's latency since start.
    fn latency_quantiles(&self) -> Family {
        let mut f = family(
            "cujo_cuj_latency_quantile_seconds",
            "Quantiles (label q) of each CUJ's latency since start, all series together; within 0.1% of the exact value.",
            Kind::Gauge,
        );
        for s in &self.cujs {
            for q in QUANTILES {
                if let Some(v) = s.latency_all.quantile_seconds(q) {
                    f.samples.push(sample(
                        "",
                        vec![
                            ("cuj".into(), s.cuj.name.clone()),
                            ("q".into(), q.to_string()),
                        ],
                        v,
                    ));
                }
            }
        }
        f
    }
}

pub(super) fn family(name: &'static str, help: &'static str, kind: Kind) -> Family {
    Family {
        name,
        help,
        kind,
        samples: Vec::new(),
    }
}

pub(super) fn sample(suffix: &'static str, labels: Vec<(String, String)>, value: f64) -> Sample {
    Sample {
        suffix,
        labels,
        value,
        exemplar: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_follow_the_prometheus_rules() {
        assert_eq!(label_name("user.tier"), "user_tier");
        assert_eq!(
            label_name("graphql.operation.name"),
            "graphql_operation_name"
        );
        assert_eq!(label_name("1st-key"), "_1st_key");
        assert_eq!(window_label(Duration::from_secs(300)), "5m");
        assert_eq!(window_label(Duration::from_secs(30 * 86400)), "30d");
    }
}
