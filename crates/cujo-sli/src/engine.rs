//! The SLI engine: turns released traces into per-series event counts, latency histograms
//! and rolling windows, and reports them as metric families (plain data; the binary writes
//! the exposition format).
//!
//! Series are (CUJ, dimension values). Each CUJ keeps at most `max_series`; later values
//! fold into one overflow series (dimension values `__overflow__`), counted. Objectives are
//! evaluated over the CUJ's aggregate windows.

use std::collections::HashMap;
use std::time::Duration;

use crate::condition::SpanFacts;
use crate::cuj::{Cuj, Outcome, Sli, SliEvent, TraceFacts};
use crate::histogram::{ExpBuckets, ExpHistogram};
use crate::slo::ObjectiveStatus;
use crate::window::SlicedCounter;

/// The dimension value of the overflow series.
pub const OVERFLOW: &str = "__overflow__";

/// Latency bucket bounds (seconds) used for every CUJ, to which its threshold is added.
const DEFAULT_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Default)]
struct Series {
    available_good: u64,
    available_bad: u64,
    latency_good: u64,
    latency_bad: u64,
    /// Per bucket of the CUJ's bounds (not cumulative), plus one for +Inf.
    buckets: Vec<u64>,
    latency_sum_s: f64,
    /// Trace id of the most recent bad event (availability or latency).
    last_bad: Option<[u8; 16]>,
    /// Every latency since start, for quantiles and the OTLP exponential histogram.
    latency_hist: ExpHistogram,
}

struct CujState {
    cuj: Cuj,
    bounds: Vec<f64>,
    series: HashMap<Vec<String>, Series>,
    excluded: u64,
    /// Events folded into the overflow series because `max_series` was reached.
    overflowed: u64,
    availability: SlicedCounter,
    latency: SlicedCounter,
    /// Sampled budgets, oldest first, at most [`HISTORY_POINTS`].
    history: std::collections::VecDeque<crate::report::HistoryPoint>,
    /// Latency of every series together, since start.
    latency_all: ExpHistogram,
    /// Latency since the previous history point (its quantiles go into the next one).
    latency_interval: ExpHistogram,
}

/// How often [`SliEngine::tick`] samples the history for the charts.
pub const HISTORY_INTERVAL_MS: u64 = 60_000;
/// How many history points each CUJ keeps (a day at one a minute).
pub const HISTORY_POINTS: usize = 1440;

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

pub struct SliEngine {
    cujs: Vec<CujState>,
    /// When the next history point is due.
    next_sample_ms: u64,
}

impl SliEngine {
    pub fn new(cujs: Vec<Cuj>) -> Self {
        let cujs = cujs
            .into_iter()
            .map(|cuj| {
                let mut bounds = DEFAULT_BOUNDS.to_vec();
                if let Some((threshold, _)) = cuj.latency {
                    let t = threshold.as_secs_f64();
                    if !bounds.iter().any(|b| (b - t).abs() < 1e-12) {
                        bounds.push(t);
                        bounds.sort_by(f64::total_cmp);
                    }
                }
                CujState {
                    cuj,
                    bounds,
                    series: HashMap::new(),
                    excluded: 0,
                    overflowed: 0,
                    availability: SlicedCounter::new(),
                    latency: SlicedCounter::new(),
                    history: std::collections::VecDeque::new(),
                    latency_all: ExpHistogram::new(),
                    latency_interval: ExpHistogram::new(),
                }
            })
            .collect();
        Self {
            cujs,
            next_sample_ms: 0,
        }
    }

    /// Whether some CUJ looks at spans other than the root (`scope: trace`); when none does,
    /// callers may pass only the root in [`TraceFacts::spans`].
    pub fn needs_all_spans(&self) -> bool {
        self.cujs
            .iter()
            .any(|s| s.cuj.scope == crate::cuj::Scope::Trace)
    }

    /// Feeds one released trace to every CUJ (a trace may feed several).
    pub fn observe<S: SpanFacts>(&mut self, trace: &TraceFacts<'_, S>, now_ms: u64) {
        for state in &mut self.cujs {
            match state.cuj.evaluate(trace) {
                Outcome::NotMatched => {}
                Outcome::Excluded => state.excluded += 1,
                Outcome::Event(event) => state.record(event, now_ms),
            }
        }
        self.tick(now_ms);
    }

    /// Samples the history when a point is due (cheap otherwise). Called on every observed
    /// trace and by a timer, so the charts move while no traffic comes.
    pub fn tick(&mut self, now_ms: u64) {
        if now_ms < self.next_sample_ms {
            return;
        }
        self.next_sample_ms = (now_ms / HISTORY_INTERVAL_MS + 1) * HISTORY_INTERVAL_MS;
        for s in &mut self.cujs {
            let budget_remaining = s
                .cuj
                .objectives
                .iter()
                .map(|(sli, obj)| {
                    let counter = match sli {
                        Sli::Availability => &s.availability,
                        Sli::Latency => &s.latency,
                    };
                    obj.evaluate(counter, now_ms).budget_remaining
                })
                .collect();
            if s.history.len() == HISTORY_POINTS {
                s.history.pop_front();
            }
            let interval = &s.latency_interval;
            s.history.push_back(crate::report::HistoryPoint {
                at_ms: now_ms,
                budget_remaining,
                p50: interval.quantile_seconds(0.5),
                p90: interval.quantile_seconds(0.9),
                p99: interval.quantile_seconds(0.99),
            });
            s.latency_interval.clear();
        }
    }

    /// The whole state as plain data, for the status page, API and deploy gate.
    pub fn report(&self, now_ms: u64) -> crate::report::Report {
        use crate::report::{CujReport, ObjectiveReport, SeriesReport, WindowReport};
        let cujs = self
            .cujs
            .iter()
            .map(|s| {
                let objectives = s
                    .cuj
                    .objectives
                    .iter()
                    .map(|(sli, obj)| {
                        let counter = match sli {
                            Sli::Availability => &s.availability,
                            Sli::Latency => &s.latency,
                        };
                        let status = obj.evaluate(counter, now_ms);
                        let windows = status
                            .sli
                            .iter()
                            .zip(&status.burn_rate)
                            .map(|((w, ratio), (_, burn))| {
                                let c = counter.counts(now_ms, *w).unwrap_or_default();
                                WindowReport {
                                    window: window_label(*w),
                                    seconds: w.as_secs(),
                                    good: c.good,
                                    valid: c.valid,
                                    sli: *ratio,
                                    burn_rate: *burn,
                                }
                            })
                            .collect();
                        ObjectiveReport {
                            sli: sli.label().to_string(),
                            target: obj.target,
                            window: window_label(obj.window),
                            window_seconds: obj.window.as_secs(),
                            windows,
                            budget_remaining: status.budget_remaining,
                            page: status.page,
                            ticket: status.ticket,
                            exhaustion_seconds: status.exhaustion.map(|d| d.as_secs_f64()),
                        }
                    })
                    .collect();
                let mut series: Vec<SeriesReport> = s
                    .series
                    .iter()
                    .map(|(dims, v)| SeriesReport {
                        dimensions: s
                            .cuj
                            .dimensions
                            .iter()
                            .cloned()
                            .zip(dims.iter().cloned())
                            .collect(),
                        availability_good: v.available_good,
                        availability_bad: v.available_bad,
                        latency_good: v.latency_good,
                        latency_bad: v.latency_bad,
                        windows: Vec::new(),
                        latency: latency_summary(&v.latency_hist),
                        last_bad_trace_id: v.last_bad.as_ref().map(crate::report::trace_id_hex),
                    })
                    .collect();
                // Worst first: most bad events, then by dimension values for a stable order.
                series.sort_by(|a, b| {
                    (b.availability_bad + b.latency_bad)
                        .cmp(&(a.availability_bad + a.latency_bad))
                        .then_with(|| a.dimensions.cmp(&b.dimensions))
                });
                CujReport {
                    name: s.cuj.name.clone(),
                    dimensions: s.cuj.dimensions.clone(),
                    latency_threshold_seconds: s.cuj.latency.map(|(t, _)| t.as_secs_f64()),
                    latency_measure: s.cuj.latency.map(|(_, m)| m.label().to_string()),
                    excluded: s.excluded,
                    overflowed: s.overflowed,
                    objectives,
                    latency: latency_summary(&s.latency_all),
                    series,
                    history: s.history.iter().cloned().collect(),
                }
            })
            .collect();
        crate::report::Report {
            generated_at_ms: now_ms,
            cujs,
        }
    }

    /// Every CUJ's windows, encoded for the state file.
    pub fn save_state(&self) -> Vec<u8> {
        let cujs: Vec<crate::state::CujWindows> = self
            .cujs
            .iter()
            .map(|s| crate::state::CujWindows {
                name: s.cuj.name.clone(),
                availability: s.availability.clone(),
                latency: s.latency.clone(),
            })
            .collect();
        crate::state::encode(&cujs)
    }

    /// Restores windows saved by [`SliEngine::save_state`] for the CUJs that still exist;
    /// returns how many were restored.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<usize, crate::state::StateError> {
        let saved = crate::state::decode(bytes)?;
        let mut restored = 0;
        for w in saved {
            if let Some(s) = self.cujs.iter_mut().find(|s| s.cuj.name == w.name) {
                s.availability = w.availability;
                s.latency = w.latency;
                restored += 1;
            }
        }
        Ok(restored)
    }

    /// Objective states of every CUJ at `now_ms`: (cuj, sli, target, status).
    pub fn objectives(&self, now_ms: u64) -> Vec<(&str, Sli, f64, ObjectiveStatus)> {
        let mut out = Vec::new();
        for s in &self.cujs {
            for (sli, obj) in &s.cuj.objectives {
                let counter = match sli {
                    Sli::Availability => &s.availability,
                    Sli::Latency => &s.latency,
                };
                out.push((
                    s.cuj.name.as_str(),
                    *sli,
                    obj.target,
                    obj.evaluate(counter, now_ms),
                ));
            }
        }
        out
    }

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
            "Events folded into a CUJ's overflow series because it reached max_series.",
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
            overflow.samples.push(sample(
                "",
                vec![("cuj".into(), name.clone())],
                s.overflowed as f64,
            ));
            let mut keys: Vec<&Vec<String>> = s.series.keys().collect();
            keys.sort();
            for dims in keys {
                let series = &s.series[dims];
                let mut labels = vec![("cuj".to_string(), name.clone())];
                for (d, v) in s.cuj.dimensions.iter().zip(dims) {
                    labels.push((label_name(d), v.clone()));
                }
                let with = |extra: &[(&str, &str)]| {
                    let mut l = labels.clone();
                    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                    l
                };
                events.samples.push(sample(
                    "",
                    with(&[("sli", "availability"), ("outcome", "good")]),
                    series.available_good as f64,
                ));
                events.samples.push(sample(
                    "",
                    with(&[("sli", "availability"), ("outcome", "bad")]),
                    series.available_bad as f64,
                ));
                if s.cuj.latency.is_some() {
                    events.samples.push(sample(
                        "",
                        with(&[("sli", "latency"), ("outcome", "good")]),
                        series.latency_good as f64,
                    ));
                    events.samples.push(sample(
                        "",
                        with(&[("sli", "latency"), ("outcome", "bad")]),
                        series.latency_bad as f64,
                    ));
                    let mut cumulative = 0u64;
                    for (i, bound) in s.bounds.iter().enumerate() {
                        cumulative += series.buckets.get(i).copied().unwrap_or(0);
                        duration.samples.push(sample(
                            "_bucket",
                            with(&[("le", &bound.to_string())]),
                            cumulative as f64,
                        ));
                    }
                    let count = series.latency_good + series.latency_bad;
                    duration
                        .samples
                        .push(sample("_bucket", with(&[("le", "+Inf")]), count as f64));
                    duration
                        .samples
                        .push(sample("_sum", labels.clone(), series.latency_sum_s));
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
            "Fraction of the error budget left over the objective's window.",
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
            budget
                .samples
                .push(sample("", base.clone(), status.budget_remaining));
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
        vec![
            events,
            excluded,
            overflow,
            duration,
            self.latency_quantiles(),
            target,
            sli,
            budget,
            burn,
            alert,
            exhaustion,
        ]
    }
}

impl CujState {
    fn record(&mut self, event: SliEvent, now_ms: u64) {
        let key = if self.series.contains_key(&event.dimensions)
            || self.series.len() < self.cuj.max_series
        {
            event.dimensions
        } else {
            self.overflowed += 1;
            vec![OVERFLOW.to_string(); self.cuj.dimensions.len()]
        };
        let buckets = self.bounds.len() + 1;
        let series = self.series.entry(key).or_insert_with(|| Series {
            buckets: vec![0; buckets],
            ..Series::default()
        });
        if event.available {
            series.available_good += 1;
        } else {
            series.available_bad += 1;
            series.last_bad = Some(event.trace_id);
        }
        self.availability.record(now_ms, event.available);
        if let Some((measured, good)) = event.latency {
            if good {
                series.latency_good += 1;
            } else {
                series.latency_bad += 1;
                series.last_bad = Some(event.trace_id);
            }
            let secs = measured.as_secs_f64();
            series.latency_sum_s += secs;
            let bucket = self
                .bounds
                .iter()
                .position(|b| secs <= *b)
                .unwrap_or(self.bounds.len());
            series.buckets[bucket] += 1;
            series.latency_hist.record(measured);
            self.latency_all.record(measured);
            self.latency_interval.record(measured);
            self.latency.record(now_ms, good);
        }
    }
}

/// Quantiles reported for a CUJ's latency (report, `/metrics`).
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Count, sum and quantiles of a histogram; absent when it holds nothing.
fn latency_summary(h: &ExpHistogram) -> Option<crate::report::LatencySummary> {
    (h.count() > 0).then(|| crate::report::LatencySummary {
        count: h.count(),
        sum_seconds: h.sum_seconds(),
        p50: h.quantile_seconds(0.5),
        p90: h.quantile_seconds(0.9),
        p99: h.quantile_seconds(0.99),
        p999: h.quantile_seconds(0.999),
        max: h.max().map(|d| d.as_secs_f64()),
    })
}

/// One CUJ's counters and latency buckets as plain data, for the OTLP metrics push.
#[derive(Debug, Clone, PartialEq)]
pub struct CujExport {
    pub name: String,
    /// Dimension keys with their OpenTelemetry names (`user.tier`).
    pub dimensions: Vec<String>,
    /// Whether the CUJ has a latency SLI (latency counts and buckets are meaningful).
    pub has_latency: bool,
    pub excluded: u64,
    pub overflowed: u64,
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
}

impl SliEngine {
    /// Every CUJ's series (sorted by dimension values) with latency buckets fitted into
    /// `max_buckets` (the OTLP exponential histogram's size).
    pub fn export_view(&self, max_buckets: usize) -> Vec<CujExport> {
        self.cujs
            .iter()
            .map(|s| {
                let mut keys: Vec<&Vec<String>> = s.series.keys().collect();
                keys.sort();
                CujExport {
                    name: s.cuj.name.clone(),
                    dimensions: s.cuj.dimensions.clone(),
                    has_latency: s.cuj.latency.is_some(),
                    excluded: s.excluded,
                    overflowed: s.overflowed,
                    series: keys
                        .into_iter()
                        .map(|k| {
                            let v = &s.series[k];
                            SeriesExport {
                                values: k.clone(),
                                availability_good: v.available_good,
                                availability_bad: v.available_bad,
                                latency_good: v.latency_good,
                                latency_bad: v.latency_bad,
                                latency: v.latency_hist.export(max_buckets),
                            }
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

fn family(name: &'static str, help: &'static str, kind: Kind) -> Family {
    Family {
        name,
        help,
        kind,
        samples: Vec::new(),
    }
}

fn sample(suffix: &'static str, labels: Vec<(String, String)>, value: f64) -> Sample {
    Sample {
        suffix,
        labels,
        value,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{Condition, Literal, RootMatch, Scalar, StatusCode, ValueMatch};
    use crate::cuj::{Measure, Scope};
    use crate::slo::Objective;

    struct Span {
        tier: String,
        error: bool,
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

    fn engine(max_series: usize) -> SliEngine {
        SliEngine::new(vec![Cuj {
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
            latency: Some((Duration::from_millis(300), Measure::Root)),
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
        }])
    }

    fn feed(e: &mut SliEngine, tier: &str, error: bool, latency_ms: u64, now_ms: u64) {
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
        };
        e.observe(&t, now_ms);
    }

    fn value(fams: &[Family], name: &str, suffix: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

    #[test]
    fn counts_are_exact_and_buckets_include_the_threshold() {
        let mut e = engine(100);
        let now = 1_700_000_000_000;
        for i in 0..1000u64 {
            feed(
                &mut e,
                if i % 2 == 0 { "gold" } else { "free" },
                i % 100 == 0,
                100 + i,
                now,
            );
        }
        let f = e.families(now);
        let gold = |sli, outcome| {
            value(
                &f,
                "cujo_sli_events_total",
                "",
                &[("user_tier", "gold"), ("sli", sli), ("outcome", outcome)],
            )
        };
        assert_eq!(gold("availability", "bad"), Some(10.0));
        assert_eq!(gold("availability", "good"), Some(490.0));
        // Latency 100..=1099 ms: good when <= 300 ms, i.e. i <= 200: 201 events, the 101 even ones gold.
        assert_eq!(gold("latency", "good"), Some(101.0));
        assert_eq!(
            value(
                &f,
                "cujo_cuj_duration_seconds",
                "_bucket",
                &[("user_tier", "gold"), ("le", "0.3")]
            ),
            Some(101.0)
        );
        assert_eq!(
            value(
                &f,
                "cujo_cuj_duration_seconds",
                "_count",
                &[("user_tier", "free")]
            ),
            Some(500.0)
        );
        assert_eq!(
            value(
                &f,
                "cujo_slo_objective_ratio",
                "",
                &[("sli", "availability")]
            ),
            Some(0.999)
        );
        let page = value(
            &f,
            "cujo_slo_alert",
            "",
            &[("sli", "availability"), ("severity", "page")],
        );
        assert_eq!(
            page,
            Some(1.0),
            "1% errors burn a 0.1% budget 10x in every window"
        );
    }

    #[test]
    fn cardinality_is_capped_and_overflow_counted() {
        let mut e = engine(10);
        for i in 0..100_000u64 {
            feed(&mut e, &format!("tenant-{i}"), false, 10, 1_000);
        }
        let f = e.families(1_000);
        let series = f
            .iter()
            .find(|f| f.name == "cujo_sli_events_total")
            .map(|f| f.samples.len() / 4)
            .unwrap_or(0);
        assert_eq!(series, 11, "10 series and the overflow series");
        assert_eq!(
            value(&f, "cujo_sli_series_overflow_total", "", &[]),
            Some(99_990.0)
        );
        assert_eq!(
            value(
                &f,
                "cujo_sli_events_total",
                "",
                &[
                    ("user_tier", OVERFLOW),
                    ("sli", "availability"),
                    ("outcome", "good")
                ]
            ),
            Some(99_990.0)
        );
    }

    #[test]
    fn windows_survive_a_save_and_restore() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        for i in 0..100 {
            feed(&mut e, "gold", i % 4 == 0, 10, now);
        }
        let saved = e.save_state();
        let mut fresh = engine(10);
        assert_eq!(fresh.restore_state(&saved), Ok(1));
        let sli = |e: &SliEngine| e.objectives(now)[0].3.sli[0].1;
        assert_eq!(sli(&fresh), Some(0.75));
        assert_eq!(sli(&fresh), sli(&e));
        assert!(fresh.restore_state(b"garbage").is_err());
    }

    #[test]
    fn the_report_carries_objectives_series_and_history() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        for i in 0..100 {
            feed(
                &mut e,
                if i < 50 { "gold" } else { "free" },
                i % 10 == 0,
                10,
                now,
            );
        }
        e.tick(now + HISTORY_INTERVAL_MS);
        let r = e.report(now + HISTORY_INTERVAL_MS);
        let cuj = &r.cujs[0];
        assert_eq!(cuj.name, "post_message");
        assert_eq!(cuj.objectives.len(), 2);
        let avail = &cuj.objectives[0];
        assert_eq!(avail.sli, "availability");
        assert_eq!(avail.window, "30d");
        let w5m = &avail.windows[0];
        assert_eq!((w5m.window.as_str(), w5m.good, w5m.valid), ("5m", 90, 100));
        assert_eq!(w5m.sli, Some(0.9));
        assert_eq!(cuj.series.len(), 2);
        assert_eq!(cuj.series[0].availability_bad, 5);
        assert_eq!(
            cuj.history.len(),
            2,
            "one point at the first event, one a minute later"
        );
        let json = serde_json::to_string(&r).unwrap_or_default();
        let back: crate::report::Report = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back.cujs[0].series, cuj.series);
        assert_eq!(back.cujs[0].objectives[0].windows[0], *w5m);
    }

    fn feed_ns(e: &mut SliEngine, tier: &str, error: bool, latency_ns: u64, now_ms: u64) {
        let spans = [Span {
            tier: tier.into(),
            error,
        }];
        let t = TraceFacts {
            trace_id: [2; 16],
            root: &spans[0],
            root_start_ns: 1_000,
            root_end_ns: 1_000 + latency_ns,
            spans: &spans,
            last_end_ns: 1_000 + latency_ns,
        };
        e.observe(&t, now_ms);
    }

    /// The `q` quantile of `values` by nearest rank, the definition the histogram reports.
    fn exact_quantile(values: &[u64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let r = crate::histogram::rank(q, sorted.len() as u64) as usize;
        sorted[r - 1] as f64 / 1e9
    }

    fn assert_close(got: Option<f64>, want: f64, what: &str) {
        let got = got.unwrap_or_else(|| panic!("{what}: no value"));
        let err = (got - want).abs() / want;
        assert!(
            err <= 0.001,
            "{what}: got {got}, exact {want} (error {err})"
        );
    }

    #[test]
    fn latency_counts_are_exact_and_quantiles_within_a_tenth_of_a_percent() {
        let mut e = engine(100);
        let now = 1_700_000_000_000;
        // Durations log-uniform from 1 ms to 5 s (deterministic), every 13th an error.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut all = Vec::new();
        let mut per_tier: HashMap<&str, Vec<u64>> = HashMap::new();
        let (mut good, mut bad) = (0u64, 0u64);
        for i in 0..5000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
            let ns = (1e6f64.ln() + u * (5e9f64.ln() - 1e6f64.ln())).exp() as u64;
            let tier = ["gold", "free", "team"][(i % 3) as usize];
            feed_ns(&mut e, tier, i % 13 == 0, ns, now);
            all.push(ns);
            per_tier.entry(tier).or_default().push(ns);
            if ns <= 300_000_000 {
                good += 1;
            } else {
                bad += 1;
            }
        }
        let r = e.report(now);
        let cuj = &r.cujs[0];
        let total = cuj.latency.as_ref().expect("latency summary");
        assert_eq!(total.count, 5000);
        let exact_sum = all.iter().sum::<u64>() as f64 / 1e9;
        assert!((total.sum_seconds - exact_sum).abs() < 1e-6);
        assert_close(total.p50, exact_quantile(&all, 0.5), "p50");
        assert_close(total.p90, exact_quantile(&all, 0.9), "p90");
        assert_close(total.p99, exact_quantile(&all, 0.99), "p99");
        assert_close(total.p999, exact_quantile(&all, 0.999), "p99.9");
        assert_eq!(
            total.max,
            Some(*all.iter().max().expect("values") as f64 / 1e9)
        );
        let (series_good, series_bad) = cuj
            .series
            .iter()
            .fold((0, 0), |(g, b), s| (g + s.latency_good, b + s.latency_bad));
        assert_eq!(
            (series_good, series_bad),
            (good, bad),
            "good/bad on exact values"
        );
        for s in &cuj.series {
            let values = &per_tier[s.dimensions[0].1.as_str()];
            let l = s.latency.as_ref().expect("series latency");
            assert_eq!(l.count, values.len() as u64);
            for (q, got) in [(0.5, l.p50), (0.9, l.p90), (0.99, l.p99)] {
                assert_close(got, exact_quantile(values, q), &s.dimensions[0].1);
            }
        }
        // The OTLP view: counts exact, buckets within 160, nothing lost in the merge.
        let view = e.export_view(160);
        for s in &view[0].series {
            let n = per_tier[s.values[0].as_str()].len() as u64;
            assert_eq!(s.latency.count, n);
            assert!(s.latency.counts.len() <= 160);
            assert_eq!(
                s.latency.counts.iter().sum::<u64>() + s.latency.zero_count,
                n
            );
            assert_eq!(s.latency_good + s.latency_bad, n);
        }
        let f = e.families(now);
        let p99 = value(
            &f,
            "cujo_cuj_latency_quantile_seconds",
            "",
            &[("cuj", "post_message"), ("q", "0.99")],
        );
        assert_close(p99, exact_quantile(&all, 0.99), "/metrics p99");

        // History points carry the quantiles of their own interval only: the first point was
        // taken at the first event, the next one covers the rest.
        e.tick(now + HISTORY_INTERVAL_MS);
        let point = e.report(now).cujs[0]
            .history
            .last()
            .cloned()
            .expect("point");
        assert_close(point.p90, exact_quantile(&all[1..], 0.9), "interval p90");
        for _ in 0..100 {
            feed_ns(
                &mut e,
                "gold",
                false,
                7_000_000,
                now + HISTORY_INTERVAL_MS + 1,
            );
        }
        e.tick(now + 2 * HISTORY_INTERVAL_MS);
        let point = e.report(now).cujs[0]
            .history
            .last()
            .cloned()
            .expect("point");
        assert_close(point.p99, 0.007, "a quiet interval of 7 ms events");
        e.tick(now + 3 * HISTORY_INTERVAL_MS);
        let point = e.report(now).cujs[0]
            .history
            .last()
            .cloned()
            .expect("point");
        assert_eq!(point.p50, None, "no events, no quantile");
    }

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
