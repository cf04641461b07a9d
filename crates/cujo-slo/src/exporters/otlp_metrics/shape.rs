//! The push's requests: engine snapshots shaped into `ExportMetricsServiceRequest`s, with
//! no network involved (the tests call it directly).
//!
//! Dimension attributes keep their OpenTelemetry names (`user.tier`); latency is an
//! `ExponentialHistogram` taken from the engine's scale-9 histogram, merged down to at most
//! [`MAX_BUCKETS`] buckets, or (`histogram: explicit`) a `Histogram` with the CUJ's latency
//! bounds, its threshold among them. `cumulative` points start when cujo started; `delta`
//! points carry the change since the last **delivered** push of their series (a failed
//! push leaves the baseline, so the next one carries both intervals and nothing is lost or
//! counted twice). [`split`] cuts a request too large for the backend into parts; the
//! baseline advances only for the series of the parts delivered
//! ([`MetricsShaper::commit_delivered`]).

use std::collections::{HashMap, HashSet};

use cujo_sli::cuj::Sli;
use cujo_sli::engine::{CujExport, SliEngine, window_label};
use cujo_sli::histogram::{ExpBuckets, MIN_VALUE};
use cujo_sli::limits::OverflowReason;
use cujo_sli::slo::ObjectiveStatus;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyInner;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    exponential_histogram_data_point, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use super::config::{HistogramForm, Temporality};

/// Most buckets of a pushed exponential histogram (the OTel SDKs' default).
pub const MAX_BUCKETS: usize = 160;

/// What the engine holds at one instant, copied out under its lock.
#[derive(Debug, Clone)]
pub struct EngineSnapshot {
    pub cujs: Vec<CujExport>,
    /// (cuj, sli, target, status) of every objective.
    pub objectives: Vec<(String, Sli, f64, ObjectiveStatus)>,
}

impl EngineSnapshot {
    pub fn take(engine: &SliEngine, now_ms: u64) -> Self {
        Self {
            cujs: engine.export_view(MAX_BUCKETS),
            objectives: engine
                .objectives(now_ms)
                .into_iter()
                .map(|(cuj, sli, target, status)| (cuj.to_string(), sli, target, status))
                .collect(),
        }
    }
}

type Attributes = Vec<(String, String)>;

/// The latency histogram's metric name.
const DURATION: &str = "cujo.cuj.duration";

/// Cumulative values at the last delivered push of each series, with when that was: the
/// base of the next delta.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Start of the next delta of a series not in the maps (the last full delivery).
    at_ns: u64,
    counters: HashMap<(&'static str, Attributes), (u64, u64)>,
    histograms: HashMap<Attributes, (Explicit, ExpBuckets, u64)>,
}

/// A series' explicit-bucket totals.
#[derive(Debug, Clone, Default, PartialEq)]
struct Explicit {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// Shapes engine snapshots into OTLP metrics requests; keeps the delta baseline.
pub struct MetricsShaper {
    temporality: Temporality,
    histogram: HistogramForm,
    /// When cujo started: the start of every cumulative point.
    start_ns: u64,
    resource: Resource,
    baseline: Baseline,
}

impl MetricsShaper {
    pub fn new(
        temporality: Temporality,
        histogram: HistogramForm,
        start_ns: u64,
        instance_id: &str,
    ) -> Self {
        Self {
            temporality,
            histogram,
            start_ns,
            resource: Resource {
                attributes: vec![
                    kv("service.name", "cujo"),
                    kv("service.instance.id", instance_id),
                    kv("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            },
            baseline: Baseline {
                at_ns: start_ns,
                ..Baseline::default()
            },
        }
    }

    /// The request for `now_ns`, and the baseline to [`MetricsShaper::commit`] once it is
    /// delivered.
    pub fn build(
        &self,
        snap: &EngineSnapshot,
        now_ns: u64,
    ) -> (ExportMetricsServiceRequest, Baseline) {
        let delta = self.temporality == Temporality::Delta;
        let temporality = if delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let mut next = Baseline {
            at_ns: now_ns,
            ..Baseline::default()
        };
        let counter = |next: &mut Baseline, name: &'static str, attrs: Attributes, total: u64| {
            let prev = self.baseline.counters.get(&(name, attrs.clone())).copied();
            let (value, start) = if delta {
                let (before, since) = prev.unwrap_or((0, self.baseline.at_ns));
                (total.saturating_sub(before), since)
            } else {
                (total, self.start_ns)
            };
            let point = number_point(&attrs, start, now_ns, Value::Int(value));
            next.counters.insert((name, attrs), (total, now_ns));
            point
        };
        let (mut events, mut excluded, mut overflow) = (Vec::new(), Vec::new(), Vec::new());
        let (mut exponential, mut explicit) = (Vec::new(), Vec::new());
        for cuj in &snap.cujs {
            let base: Attributes = vec![("cuj".into(), cuj.name.clone())];
            excluded.push(counter(
                &mut next,
                "cujo.sli.excluded",
                base.clone(),
                cuj.excluded,
            ));
            for (reason, n) in OverflowReason::ALL.iter().zip(cuj.overflowed) {
                let mut attrs = base.clone();
                attrs.push(("reason".into(), reason.label().into()));
                overflow.push(counter(&mut next, "cujo.sli.series_overflow", attrs, n));
            }
            for s in &cuj.series {
                let mut attrs = base.clone();
                attrs.extend(cuj.dimensions.iter().cloned().zip(s.values.iter().cloned()));
                let mut slis = Vec::new();
                if cuj.has_availability {
                    slis.push(("availability", s.availability_good, s.availability_bad));
                }
                if cuj.has_latency {
                    slis.push(("latency", s.latency_good, s.latency_bad));
                }
                for (sli, good, bad) in slis {
                    for (outcome, n) in [("good", good), ("bad", bad)] {
                        let mut a = attrs.clone();
                        a.push(("sli".into(), sli.into()));
                        a.push(("outcome".into(), outcome.into()));
                        events.push(counter(&mut next, "cujo.sli.events", a, n));
                    }
                }
                if cuj.has_latency {
                    let totals = Explicit {
                        counts: s.buckets.clone(),
                        count: s.latency.count,
                        sum: s.latency.sum_seconds,
                    };
                    let prev = self.baseline.histograms.get(&attrs);
                    let start = match (delta, prev) {
                        (false, _) => self.start_ns,
                        (true, Some((_, _, at))) => *at,
                        (true, None) => self.baseline.at_ns,
                    };
                    match self.histogram {
                        HistogramForm::Exponential => {
                            let buckets = match (delta, prev) {
                                (true, Some((_, before, _))) => s.latency.since(before),
                                _ => s.latency.clone(),
                            };
                            exponential.push(histogram_point(&attrs, start, now_ns, &buckets));
                        }
                        HistogramForm::Explicit => {
                            let point = match (delta, prev) {
                                (true, Some((before, _, _))) => ExplicitPoint {
                                    totals: totals.since(before),
                                    min: None,
                                    max: None,
                                },
                                _ => ExplicitPoint {
                                    totals: totals.clone(),
                                    min: s.latency.min_seconds,
                                    max: s.latency.max_seconds,
                                },
                            };
                            explicit.push(explicit_point(
                                &attrs,
                                start,
                                now_ns,
                                &cuj.bounds,
                                point,
                            ));
                        }
                    }
                    next.histograms
                        .insert(attrs, (totals, s.latency.clone(), now_ns));
                }
            }
        }
        let mut metrics = vec![
            sum(
                "cujo.sli.events",
                "Valid SLI events per CUJ, series, SLI and outcome (good/bad).",
                "{event}",
                events,
                temporality,
            ),
            sum(
                "cujo.sli.excluded",
                "Events of a CUJ excluded by its exclude conditions.",
                "{event}",
                excluded,
                temporality,
            ),
            sum(
                "cujo.sli.series_overflow",
                "Events folded into a CUJ's overflow series, by reason: max_series reached, or the SLI engine's memory limit.",
                "{event}",
                overflow,
                temporality,
            ),
        ];
        let durations = if !exponential.is_empty() {
            Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: exponential,
                aggregation_temporality: temporality,
            }))
        } else if !explicit.is_empty() {
            Some(metric::Data::Histogram(Histogram {
                data_points: explicit,
                aggregation_temporality: temporality,
            }))
        } else {
            None
        };
        if let Some(data) = durations {
            metrics.push(Metric {
                name: DURATION.into(),
                description: "Measured latency of each CUJ series' valid events.".into(),
                unit: "s".into(),
                data: Some(data),
                ..Default::default()
            });
        }
        metrics.extend(self.gauges(snap, now_ns));
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "cujo".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        (request, next)
    }

    /// Starts from what the engine already holds at `now_ns`: cumulative points begin at
    /// `since_ns` (when its totals began, restored from a state file) unless zero, and the
    /// first delta counts from this snapshot, not from zero (restored totals were pushed by
    /// the previous process).
    pub fn begin(&mut self, snap: &EngineSnapshot, since_ns: u64, now_ns: u64) {
        if since_ns > 0 {
            self.start_ns = since_ns;
        }
        let (_, baseline) = self.build(snap, now_ns);
        self.baseline = baseline;
    }

    /// The request was delivered: later deltas count from it.
    pub fn commit(&mut self, baseline: Baseline) {
        self.baseline = baseline;
    }

    /// Only `delivered` (parts of the request `next` came with) reached the backend: the
    /// series in them count from `next`, the others still from their last delivery.
    pub fn commit_delivered(
        &mut self,
        mut next: Baseline,
        delivered: &[ExportMetricsServiceRequest],
    ) {
        let sent: HashSet<(String, Attributes)> = delivered.iter().flat_map(series_of).collect();
        for ((name, attrs), v) in next.counters.drain() {
            if sent.contains(&(name.to_string(), attrs.clone())) {
                self.baseline.counters.insert((name, attrs), v);
            }
        }
        for (attrs, v) in next.histograms.drain() {
            if sent.contains(&(DURATION.to_string(), attrs.clone())) {
                self.baseline.histograms.insert(attrs, v);
            }
        }
    }

    /// Objective, SLI per window, budget, burn rate per window, alerts: same in both
    /// temporalities (a gauge is a value now).
    fn gauges(&self, snap: &EngineSnapshot, now_ns: u64) -> Vec<Metric> {
        let (mut target, mut sli, mut budget, mut burn, mut alert) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut coverage = Vec::new();
        for (cuj, which, goal, status) in &snap.objectives {
            let base: Attributes = vec![
                ("cuj".into(), cuj.clone()),
                ("sli".into(), which.label().into()),
            ];
            let with = |k: &str, v: String| {
                let mut a = base.clone();
                a.push((k.into(), v));
                a
            };
            let point = |attrs: &Attributes, v: Value| number_point(attrs, 0, now_ns, v);
            target.push(point(&base, Value::Double(*goal)));
            for (w, v) in &status.sli {
                if let Some(v) = v {
                    sli.push(point(&with("window", window_label(*w)), Value::Double(*v)));
                }
            }
            for (w, v) in &status.burn_rate {
                if v.is_finite() {
                    burn.push(point(&with("window", window_label(*w)), Value::Double(*v)));
                }
            }
            if let Some(b) = status.budget_remaining.filter(|b| b.is_finite()) {
                budget.push(point(&base, Value::Double(b)));
            }
            for (w, v) in &status.coverage {
                coverage.push(point(&with("window", window_label(*w)), Value::Double(*v)));
            }
            for (severity, firing) in [("page", status.page), ("ticket", status.ticket)] {
                alert.push(point(
                    &with("severity", severity.into()),
                    Value::Int(u64::from(firing)),
                ));
            }
        }
        [
            (
                "cujo.slo.objective",
                "Each objective's target, e.g. 0.999.",
                target,
            ),
            ("cujo.slo.sli", "Good/valid over each window.", sli),
            (
                "cujo.slo.error_budget.remaining",
                "Fraction of the error budget left over the objective's window (absent without valid events over it).",
                budget,
            ),
            (
                "cujo.slo.window.coverage",
                "Fraction of each window with data: from its oldest slice holding an event to now, over the window.",
                coverage,
            ),
            (
                "cujo.slo.burn_rate",
                "Error ratio over the error budget, per window.",
                burn,
            ),
            (
                "cujo.slo.alert",
                "1 when the multiwindow burn-rate alert of this severity fires.",
                alert,
            ),
        ]
        .into_iter()
        .map(|(name, description, data_points)| Metric {
            name: name.into(),
            description: description.into(),
            unit: "1".into(),
            data: Some(metric::Data::Gauge(Gauge { data_points })),
            ..Default::default()
        })
        .collect()
    }
}

enum Value {
    Int(u64),
    Double(f64),
}

impl Explicit {
    /// What was added since `earlier` (the same CUJ's bounds; a restart's totals that went
    /// down count from zero).
    fn since(&self, earlier: &Explicit) -> Explicit {
        if earlier.counts.len() != self.counts.len() || earlier.count > self.count {
            return self.clone();
        }
        Explicit {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, before)| now.saturating_sub(*before))
                .collect(),
            count: self.count - earlier.count,
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }
}

/// An explicit-bucket point's values.
struct ExplicitPoint {
    totals: Explicit,
    /// Known for cumulative points only (an interval's extremes are not kept).
    min: Option<f64>,
    max: Option<f64>,
}

fn explicit_point(
    attrs: &Attributes,
    start_ns: u64,
    now_ns: u64,
    bounds: &[f64],
    p: ExplicitPoint,
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: attributes(attrs),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        count: p.totals.count,
        sum: Some(p.totals.sum),
        bucket_counts: p.totals.counts,
        explicit_bounds: bounds.to_vec(),
        min: p.min,
        max: p.max,
        ..Default::default()
    }
}

/// (metric name, attributes) of every series with a point in `req` (all values are strings).
fn series_of(req: &ExportMetricsServiceRequest) -> Vec<(String, Attributes)> {
    let attrs = |kvs: &[KeyValue]| -> Attributes {
        kvs.iter()
            .map(|kv| {
                let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(AnyInner::StringValue(s)) => s.clone(),
                    _ => String::new(),
                };
                (kv.key.clone(), v)
            })
            .collect()
    };
    let mut out = Vec::new();
    for m in req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        match &m.data {
            Some(metric::Data::Sum(s)) => out.extend(
                s.data_points
                    .iter()
                    .map(|p| (m.name.clone(), attrs(&p.attributes))),
            ),
            Some(metric::Data::Histogram(h)) => out.extend(
                h.data_points
                    .iter()
                    .map(|p| (m.name.clone(), attrs(&p.attributes))),
            ),
            Some(metric::Data::ExponentialHistogram(h)) => out.extend(
                h.data_points
                    .iter()
                    .map(|p| (m.name.clone(), attrs(&p.attributes))),
            ),
            _ => {}
        }
    }
    out
}

/// `req` cut into requests of at most `max_bytes` (encoded, uncompressed), each with the
/// same resource and scope: metrics are halved first, then one metric's points. A single
/// point larger than `max_bytes` goes alone (the backend decides).
pub fn split(req: ExportMetricsServiceRequest, max_bytes: u64) -> Vec<ExportMetricsServiceRequest> {
    let mut out = Vec::new();
    let mut todo = vec![req];
    while let Some(r) = todo.pop() {
        if r.encoded_len() as u64 <= max_bytes {
            out.push(r);
            continue;
        }
        match halve(&r) {
            Some((a, b)) => {
                todo.push(b);
                todo.push(a);
            }
            None => out.push(r),
        }
    }
    out
}

/// Two requests holding `r`'s points between them, or `None` when it holds one point.
fn halve(
    r: &ExportMetricsServiceRequest,
) -> Option<(ExportMetricsServiceRequest, ExportMetricsServiceRequest)> {
    let rm = r.resource_metrics.first()?;
    let sm = rm.scope_metrics.first()?;
    let with = |metrics: Vec<Metric>| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..sm.clone()
            }],
            ..rm.clone()
        }],
    };
    if sm.metrics.len() > 1 {
        let (a, b) = sm.metrics.split_at(sm.metrics.len() / 2);
        return Some((with(a.to_vec()), with(b.to_vec())));
    }
    let m = sm.metrics.first()?;
    let part = |data: metric::Data| Metric {
        data: Some(data),
        ..m.clone()
    };
    let (a, b) = match m.data.as_ref()? {
        metric::Data::Sum(s) if s.data_points.len() > 1 => {
            let (a, b) = s.data_points.split_at(s.data_points.len() / 2);
            let with = |p: &[NumberDataPoint]| {
                part(metric::Data::Sum(Sum {
                    data_points: p.to_vec(),
                    ..s.clone()
                }))
            };
            (with(a), with(b))
        }
        metric::Data::Gauge(g) if g.data_points.len() > 1 => {
            let (a, b) = g.data_points.split_at(g.data_points.len() / 2);
            let with = |p: &[NumberDataPoint]| {
                part(metric::Data::Gauge(Gauge {
                    data_points: p.to_vec(),
                }))
            };
            (with(a), with(b))
        }
        metric::Data::Histogram(h) if h.data_points.len() > 1 => {
            let (a, b) = h.data_points.split_at(h.data_points.len() / 2);
            let with = |p: &[HistogramDataPoint]| {
                part(metric::Data::Histogram(Histogram {
                    data_points: p.to_vec(),
                    ..h.clone()
                }))
            };
            (with(a), with(b))
        }
        metric::Data::ExponentialHistogram(h) if h.data_points.len() > 1 => {
            let (a, b) = h.data_points.split_at(h.data_points.len() / 2);
            let with = |p: &[ExponentialHistogramDataPoint]| {
                part(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: p.to_vec(),
                    ..h.clone()
                }))
            };
            (with(a), with(b))
        }
        _ => return None,
    };
    Some((with(vec![a]), with(vec![b])))
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(AnyInner::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn attributes(attrs: &Attributes) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| kv(k, v)).collect()
}

fn number_point(attrs: &Attributes, start_ns: u64, now_ns: u64, v: Value) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(attrs),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(match v {
            Value::Int(i) => number_data_point::Value::AsInt(i64::try_from(i).unwrap_or(i64::MAX)),
            Value::Double(d) => number_data_point::Value::AsDouble(d),
        }),
        ..Default::default()
    }
}

fn histogram_point(
    attrs: &Attributes,
    start_ns: u64,
    now_ns: u64,
    b: &ExpBuckets,
) -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        attributes: attributes(attrs),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        count: b.count,
        sum: Some(b.sum_seconds),
        scale: b.scale,
        zero_count: b.zero_count,
        positive: Some(exponential_histogram_data_point::Buckets {
            offset: b.offset,
            bucket_counts: b.counts.clone(),
        }),
        min: b.min_seconds,
        max: b.max_seconds,
        zero_threshold: MIN_VALUE.as_secs_f64(),
        ..Default::default()
    }
}

fn sum(
    name: &str,
    description: &str,
    unit: &str,
    data_points: Vec<NumberDataPoint>,
    temporality: i32,
) -> Metric {
    Metric {
        name: name.into(),
        description: description.into(),
        unit: unit.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality: temporality,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// Data points in `req`, for the push's telemetry.
pub(super) fn data_points(req: &ExportMetricsServiceRequest) -> u64 {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s.data_points.len(),
            Some(metric::Data::Gauge(g)) => g.data_points.len(),
            Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(metric::Data::Histogram(h)) => h.data_points.len(),
            _ => 0,
        } as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cujo_sli::condition::{Scalar, SpanFacts, StatusCode};
    use cujo_sli::cuj::TraceFacts;
    use cujo_sli::limits::SliLimits;

    const YAML: &str = r#"
cujs:
  - name: checkout
    match: { span.name: "POST /checkout" }
    dimensions: [user.tier]
    availability: { bad: [ { status: error } ] }
    latency: { threshold: 300ms, measure: root }
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
      - { sli: latency, target: 99%, window: 30d }
"#;

    struct Root {
        tier: &'static str,
        error: bool,
    }

    impl SpanFacts for Root {
        fn name(&self) -> &str {
            "POST /checkout"
        }
        fn service(&self) -> &str {
            "shop"
        }
        fn status(&self) -> StatusCode {
            if self.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            }
        }
        fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
            (key == "user.tier").then_some(Scalar::Str(self.tier))
        }
    }

    const NOW_MS: u64 = 1_700_000_000_000;

    fn engine() -> SliEngine {
        SliEngine::new(crate::cujs::from_yaml(YAML))
    }

    fn feed(e: &mut SliEngine, tier: &'static str, error: bool, ms: u64) {
        let spans = [Root { tier, error }];
        e.observe(
            &TraceFacts {
                trace_id: [7; 16],
                root: &spans[0],
                root_start_ns: 0,
                root_end_ns: ms * 1_000_000,
                spans: &spans,
                last_end_ns: ms * 1_000_000,
                span_bits: None,
            },
            NOW_MS,
        );
    }

    fn metric<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
        req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    fn has(attrs: &[KeyValue], want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| {
            attrs.iter().any(|a| {
                a.key == *k
                    && matches!(&a.value, Some(AnyValue { value: Some(AnyInner::StringValue(s)) }) if s == v)
            })
        })
    }

    /// (value, start) of the `cujo.sli.events` point with these attributes.
    fn events(req: &ExportMetricsServiceRequest, want: &[(&str, &str)]) -> (i64, u64) {
        let Some(metric::Data::Sum(sum)) = &metric(req, "cujo.sli.events").data else {
            panic!("events is not a sum");
        };
        let p = sum
            .data_points
            .iter()
            .find(|p| has(&p.attributes, want))
            .unwrap_or_else(|| panic!("no point {want:?}"));
        match p.value {
            Some(number_data_point::Value::AsInt(v)) => (v, p.start_time_unix_nano),
            _ => panic!("not an int"),
        }
    }

    fn duration<'a>(
        req: &'a ExportMetricsServiceRequest,
        tier: &str,
    ) -> &'a ExponentialHistogramDataPoint {
        let Some(metric::Data::ExponentialHistogram(h)) = &metric(req, "cujo.cuj.duration").data
        else {
            panic!("duration is not an exponential histogram");
        };
        h.data_points
            .iter()
            .find(|p| has(&p.attributes, &[("user.tier", tier)]))
            .unwrap_or_else(|| panic!("no duration point for {tier}"))
    }

    const GOLD_LATENCY_GOOD: &[(&str, &str)] = &[
        ("cuj", "checkout"),
        ("user.tier", "gold"),
        ("sli", "latency"),
        ("outcome", "good"),
    ];

    #[test]
    fn cumulative_points_carry_totals_since_start_with_original_attribute_names() {
        let mut e = engine();
        for i in 0..10 {
            feed(&mut e, "gold", i == 0, if i < 3 { 900 } else { 100 + i });
        }
        feed(&mut e, "free", false, 50);
        let start = 1_000;
        let mut shaper = MetricsShaper::new(
            Temporality::Cumulative,
            HistogramForm::Exponential,
            start,
            "test-1",
        );
        let t1 = NOW_MS * 1_000_000;
        let (req, baseline) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), t1);
        let resource = req.resource_metrics[0].resource.as_ref().expect("resource");
        assert!(has(
            &resource.attributes,
            &[("service.name", "cujo"), ("service.instance.id", "test-1")]
        ));
        assert_eq!(events(&req, GOLD_LATENCY_GOOD), (7, start));
        assert_eq!(
            events(
                &req,
                &[
                    ("user.tier", "gold"),
                    ("sli", "availability"),
                    ("outcome", "bad")
                ]
            )
            .0,
            1
        );
        let Some(metric::Data::Sum(s)) = &metric(&req, "cujo.sli.events").data else {
            panic!("sum");
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let gold = duration(&req, "gold");
        assert_eq!(gold.count, 10);
        let buckets = gold.positive.as_ref().expect("buckets");
        assert_eq!(buckets.bucket_counts.iter().sum::<u64>(), 10);
        assert!(buckets.bucket_counts.len() <= MAX_BUCKETS);
        let exact_sum = (3 * 900 + (3..10).map(|i| 100 + i).sum::<u64>()) as f64 / 1e3;
        assert!((gold.sum.expect("sum") - exact_sum).abs() < 1e-9);
        assert_eq!(gold.max, Some(0.9));
        assert_eq!(metric(&req, "cujo.cuj.duration").unit, "s");
        let Some(metric::Data::Gauge(g)) = &metric(&req, "cujo.slo.objective").data else {
            panic!("gauge");
        };
        assert_eq!(g.data_points.len(), 2);
        shaper.commit(baseline);

        for _ in 0..4 {
            feed(&mut e, "gold", false, 20);
        }
        let t2 = t1 + 60_000_000_000;
        let (req, _) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), t2);
        assert_eq!(events(&req, GOLD_LATENCY_GOOD), (11, start));
        assert_eq!(duration(&req, "gold").count, 14);
    }

    #[test]
    fn overflow_is_pushed_by_reason() {
        // No memory for series: every new one overflows, for memory.
        let mut e = SliEngine::new(crate::cujs::from_yaml(YAML)).with_limits(SliLimits {
            max_bytes: 0,
            ..SliLimits::default()
        });
        feed(&mut e, "gold", false, 10);
        feed(&mut e, "free", false, 10);
        let shaper = MetricsShaper::new(
            Temporality::Cumulative,
            HistogramForm::Exponential,
            1_000,
            "test-3",
        );
        let (req, _) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), NOW_MS * 1_000_000);
        let Some(metric::Data::Sum(sum)) = &metric(&req, "cujo.sli.series_overflow").data else {
            panic!("overflow is not a sum");
        };
        let by = |reason: &str| {
            sum.data_points
                .iter()
                .find(|p| has(&p.attributes, &[("cuj", "checkout"), ("reason", reason)]))
                .and_then(|p| match p.value {
                    Some(number_data_point::Value::AsInt(v)) => Some(v),
                    _ => None,
                })
        };
        assert_eq!((by("max_series"), by("memory")), (Some(0), Some(2)));
    }

    #[test]
    fn delta_points_carry_the_change_since_the_last_delivered_push() {
        let mut e = engine();
        for _ in 0..5 {
            feed(&mut e, "gold", false, 100);
        }
        let start = 1_000;
        let mut shaper = MetricsShaper::new(
            Temporality::Delta,
            HistogramForm::Exponential,
            start,
            "test-2",
        );
        let t1 = NOW_MS * 1_000_000;
        let (req, baseline) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), t1);
        assert_eq!(events(&req, GOLD_LATENCY_GOOD), (5, start));
        let Some(metric::Data::Sum(s)) = &metric(&req, "cujo.sli.events").data else {
            panic!("sum");
        };
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        shaper.commit(baseline);

        for _ in 0..3 {
            feed(&mut e, "gold", false, 2_000);
        }
        let t2 = t1 + 1_000_000_000;
        let (req, _lost) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), t2);
        assert_eq!(events(&req, GOLD_LATENCY_GOOD), (0, t1));
        let d = duration(&req, "gold");
        assert_eq!((d.count, d.start_time_unix_nano), (3, t1));
        assert!((d.sum.expect("sum") - 6.0).abs() < 1e-9);
        assert_eq!(
            d.min, None,
            "an interval's min is not known from two totals"
        );

        // That push failed: the next one still counts from t1.
        feed(&mut e, "gold", false, 10);
        let t3 = t2 + 1_000_000_000;
        let (req, baseline) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), t3);
        assert_eq!(events(&req, GOLD_LATENCY_GOOD), (1, t1));
        assert_eq!(duration(&req, "gold").count, 4);
        shaper.commit(baseline);
        let (req, _) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), t3 + 1);
        assert_eq!(events(&req, GOLD_LATENCY_GOOD), (0, t3));
        assert_eq!(duration(&req, "gold").count, 0);
    }

    fn explicit<'a>(req: &'a ExportMetricsServiceRequest, tier: &str) -> &'a HistogramDataPoint {
        let Some(metric::Data::Histogram(h)) = &metric(req, DURATION).data else {
            panic!("duration is not an explicit histogram");
        };
        h.data_points
            .iter()
            .find(|p| has(&p.attributes, &[("user.tier", tier)]))
            .unwrap_or_else(|| panic!("no duration point for {tier}"))
    }

    #[test]
    fn explicit_histograms_have_the_cujs_bounds_with_its_threshold() {
        let mut e = engine();
        for ms in [3, 300, 301, 900, 400_000] {
            feed(&mut e, "gold", false, ms);
        }
        let shaper =
            MetricsShaper::new(Temporality::Cumulative, HistogramForm::Explicit, 1_000, "t");
        let (req, _) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), NOW_MS * 1_000_000);
        let p = explicit(&req, "gold");
        assert!(p.explicit_bounds.contains(&0.3), "{:?}", p.explicit_bounds);
        assert!(p.explicit_bounds.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        let at = |bound: f64| {
            let i = p
                .explicit_bounds
                .iter()
                .position(|b| *b == bound)
                .expect("bound");
            p.bucket_counts[i]
        };
        // Upper-inclusive: 300 ms is in the threshold's bucket, 301 ms above it.
        assert_eq!((at(0.005), at(0.3), at(0.5), at(1.0)), (1, 1, 1, 1));
        assert_eq!(
            p.bucket_counts.last(),
            Some(&1),
            "400 s is above every bound"
        );
        assert_eq!(p.count, 5);
        assert_eq!((p.min, p.max), (Some(0.003), Some(400.0)));
    }

    #[test]
    fn explicit_deltas_subtract_bucket_by_bucket() {
        let mut e = engine();
        feed(&mut e, "gold", false, 100);
        feed(&mut e, "gold", false, 2_000);
        let mut shaper =
            MetricsShaper::new(Temporality::Delta, HistogramForm::Explicit, 1_000, "t");
        let t1 = NOW_MS * 1_000_000;
        let (req, baseline) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), t1);
        assert_eq!(explicit(&req, "gold").count, 2);
        shaper.commit(baseline);
        for _ in 0..3 {
            feed(&mut e, "gold", false, 250);
        }
        let (req, _) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), t1 + 5);
        let p = explicit(&req, "gold");
        assert_eq!((p.count, p.start_time_unix_nano), (3, t1));
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 3);
        let i = p
            .explicit_bounds
            .iter()
            .position(|b| *b == 0.25)
            .expect("0.25");
        assert_eq!(
            p.bucket_counts[i], 3,
            "only the new events, in their bucket"
        );
        assert!((p.sum.expect("sum") - 0.75).abs() < 1e-9);
        assert_eq!((p.min, p.max), (None, None));
    }

    #[test]
    fn a_large_push_is_split_under_the_limit_and_keeps_every_point() {
        let mut e = SliEngine::new(crate::cujs::from_yaml(&YAML.replace(
            "dimensions: [user.tier]",
            "dimensions: [user.tier]\n    max_series: 500",
        )));
        let tiers: Vec<&'static str> = (0..300)
            .map(|i| &*Box::leak(format!("tier-{i}").into_boxed_str()))
            .collect();
        for t in &tiers {
            feed(&mut e, t, false, 10);
        }
        let mut shaper =
            MetricsShaper::new(Temporality::Delta, HistogramForm::Explicit, 1_000, "t");
        let (req, baseline) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), NOW_MS * 1_000_000);
        let (whole, points) = (req.encoded_len(), data_points(&req));
        assert!(whole > 64 << 10, "{whole}");
        let parts = split(req, 64 << 10);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.encoded_len() <= 64 << 10));
        assert_eq!(parts.iter().map(data_points).sum::<u64>(), points);
        assert!(
            parts
                .iter()
                .all(|p| p.resource_metrics[0].resource.is_some())
        );

        // Only the first part got through: its series count from now, the others still
        // from the start, so the next push carries them again.
        shaper.commit_delivered(baseline, &parts[..1]);
        let (next, _) = shaper.build(&EngineSnapshot::take(&e, NOW_MS), NOW_MS * 1_000_000 + 9);
        let Some(metric::Data::Sum(sum)) = &metric(&next, "cujo.sli.events").data else {
            panic!("sum");
        };
        let resent: i64 = sum
            .data_points
            .iter()
            .filter_map(|p| match p.value {
                Some(number_data_point::Value::AsInt(v)) => Some(v),
                _ => None,
            })
            .sum();
        let sent_first: HashSet<_> = series_of(&parts[0]).into_iter().collect();
        let first_events: usize = sent_first
            .iter()
            .filter(|(n, a)| {
                n == "cujo.sli.events" && a.iter().any(|(k, v)| k == "outcome" && v == "good")
            })
            .count();
        // Each series holds one good availability and one good latency event.
        assert_eq!(resent as usize, 2 * tiers.len() - first_events);
    }
}
