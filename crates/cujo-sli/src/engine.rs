//! The SLI engine: turns released traces into per-series event counts, latency histograms
//! and rolling windows, and reports them as metric families (plain data; the binary writes
//! the exposition format).
//!
//! Series are (CUJ, dimension values). Each CUJ keeps at most `max_series`, within the
//! engine's byte limit ([`crate::limits`]); later values fold into one overflow series
//! (dimension values `__overflow__`), counted by reason. Objectives are evaluated over the
//! CUJ's aggregate windows.
//!
//! What the engine holds, and how it keeps within its limits, is in the `memory`
//! submodule.

mod export;
mod matching;
mod memory;
mod record;
#[cfg(test)]
mod testkit;
pub use export::{
    CujExport, Family, Kind, QUANTILES, Sample, SeriesExport, label_name, window_label,
};
pub use matching::{Matched, MatchedTrace, SliMatcher, SpanMarks};
pub use memory::SliCaps;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::condition::{ConditionSet, SpanFacts};
use crate::cuj::{Cuj, Sli, TraceFacts};
use crate::histogram::ExpHistogram;
use crate::limits::{OverflowReason, SliLimits};
use crate::series::Series;
use crate::settle::{Events, Settling};
use crate::slo::{ObjectiveStatus, REPORTED_WINDOWS};
use memory::Room;
use record::{CujState, finish_event};

pub use crate::series::Exemplar;

/// The dimension value of the overflow series.
pub const OVERFLOW: &str = "__overflow__";

/// Maps keyed by what traffic decides (dimension values, trace ids): a fast hash, seeded per
/// process so crafted values cannot aim at one bucket.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How often [`SliEngine::tick`] samples the history for the charts.
pub const HISTORY_INTERVAL_MS: u64 = 60_000;
/// How many history points each CUJ keeps (a day at one a minute).
pub const HISTORY_POINTS: usize = 1440;

pub struct SliEngine {
    cujs: Vec<CujState>,
    /// The CUJs' definitions as the span path matches them (shared with it, see
    /// [`SliEngine::matcher`]).
    matcher: Arc<SliMatcher>,
    /// When the next history point is due.
    next_sample_ms: u64,
    /// Events of settling CUJs (`end_to_end`, `{from, to}`) waiting for late and linked spans.
    settling: Settling,
    /// The byte limit, the cap on dimension values and the idle series' TTL.
    limits: SliLimits,
    /// Bytes of the limit kept for settling traces (see [`crate::limits`]).
    settle_reserve: usize,
    /// No series can have been idle for the TTL before this time: until then, a tick
    /// does not look at the CUJs' series.
    next_expiry_ms: u64,
    /// The latest clock value seen, for events recorded early by calls that carry no
    /// clock ([`SliEngine::observe_linked`] making room).
    now_ms: u64,
}

/// How long settling events wait for late spans and linked continuations by default.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(30);
/// How many traces may wait to settle by default.
pub const DEFAULT_MAX_SETTLING_TRACES: usize = 100_000;

impl SliEngine {
    pub fn new(cujs: Vec<Cuj>) -> Self {
        let matcher = Arc::new(SliMatcher::new(cujs.clone(), true, usize::MAX));
        let cujs = cujs.into_iter().map(CujState::new).collect();
        Self {
            cujs,
            matcher,
            next_sample_ms: 0,
            settling: Settling::new(
                DEFAULT_SETTLE.as_millis() as u64,
                DEFAULT_MAX_SETTLING_TRACES,
            ),
            limits: SliLimits::default(),
            settle_reserve: 0,
            next_expiry_ms: 0,
            now_ms: 0,
        }
        .with_limits(SliLimits::default())
    }

    /// The byte limit, the cap on dimension values and the idle series' TTL (see
    /// [`crate::limits`]); [`SliLimits::default`] until set.
    pub fn with_limits(mut self, limits: SliLimits) -> Self {
        for s in &mut self.cujs {
            s.series.set_ttl(limits.series_idle_ttl_ms());
        }
        self.limits = limits;
        self.settle_reserve = self.reserve_for_settling();
        self.next_expiry_ms = 0;
        self.rebuild_matcher();
        self
    }

    /// The matcher again, after a change to what it reads from the engine's settings.
    fn rebuild_matcher(&mut self) {
        self.matcher = self.matcher.rebuilt(
            self.settling.settle_ms() > 0,
            self.limits.max_dimension_value_bytes,
        );
    }

    /// The CUJs' definitions as the span path matches released traces against them,
    /// without the engine: [`SliMatcher::match_trace`] there, [`SliEngine::record`] here.
    /// Take it after the `with_*` settings, which change it.
    pub fn matcher(&self) -> Arc<SliMatcher> {
        self.matcher.clone()
    }

    /// The limits in force.
    pub fn limits(&self) -> &SliLimits {
        &self.limits
    }

    /// How long events of settling CUJs wait for late spans and linked continuations after
    /// their trace's release (zero: recorded at release), and how many traces may wait.
    pub fn with_settle(mut self, settle: Duration, max_traces: usize) -> Self {
        self.settling = Settling::new(settle.as_millis() as u64, max_traces);
        self.settle_reserve = self.reserve_for_settling();
        self.rebuild_matcher();
        self
    }

    /// Whether some CUJ's events wait for late spans and linked continuations; when none
    /// does, callers need not report them ([`SliEngine::observe_late`],
    /// [`SliEngine::observe_linked`]).
    pub fn settles(&self) -> bool {
        self.matcher.settles()
    }

    /// How often [`SliEngine::tick`] should run: every 10 s, or often enough that settled
    /// events are recorded within a quarter of the settle time.
    pub fn tick_interval(&self) -> Duration {
        let ten = Duration::from_secs(10);
        if !self.settles() {
            return ten;
        }
        Duration::from_millis(self.settling.settle_ms() / 4).clamp(Duration::from_millis(100), ten)
    }

    /// See [`SliMatcher::needs_all_spans`].
    pub fn needs_all_spans(&self) -> bool {
        self.matcher.needs_all_spans()
    }

    /// See [`SliMatcher::span_conditions`].
    pub fn span_conditions(&self) -> Option<&ConditionSet> {
        self.matcher.span_conditions()
    }

    /// See [`SliMatcher::needs_spans_besides_bits`].
    pub fn needs_spans_besides_bits(&self) -> bool {
        self.matcher.needs_spans_besides_bits()
    }

    /// See [`SliMatcher::attribute_keys`].
    pub fn attribute_keys(&self) -> Vec<String> {
        self.matcher.attribute_keys()
    }

    /// Feeds one released trace to every CUJ (a trace may feed several): matching and
    /// recording in one call, for callers that own the engine.
    pub fn observe<S: SpanFacts>(&mut self, trace: &TraceFacts<'_, S>, now_ms: u64) {
        let matched = self.matcher.match_trace(trace);
        self.record(matched, now_ms);
    }

    /// Records the events a released trace began ([`SliMatcher::match_trace`]). Events of
    /// settling CUJs wait (see [`crate::settle`]); the others are recorded now.
    pub fn record(&mut self, trace: MatchedTrace, now_ms: u64) {
        self.now_ms = now_ms;
        let room = Room::new(&self.limits, &self.settling, self.settle_reserve);
        let mut waiting = Events::new();
        for Matched { cuj: i, event, cut } in trace.events {
            let settles = self.matcher.settles_cuj(i);
            let Some(state) = self.cujs.get_mut(i) else {
                continue;
            };
            state.truncated += u64::from(cut);
            let mut event = event;
            if settles {
                // Found now, while the values are at hand, rather than when the event
                // settles a minute later; the series stays while the event waits.
                if let Some(at) = state.series.find(event.dimensions())
                    && let Ok(place) = u32::try_from(at)
                {
                    event.set_series(place);
                    state.series.at_mut(at).settling += 1;
                }
                if waiting.capacity() == 0 {
                    waiting.reserve_exact(1);
                }
                waiting.push((i, event));
            } else {
                finish_event(&mut self.cujs, room, i, event, now_ms);
            }
        }
        if !waiting.is_empty() {
            self.wait_to_settle(trace.trace_id, waiting, now_ms);
        }
        self.tick(now_ms);
    }

    /// A span of `trace` that arrived after the trace was released (a queue consumer in the
    /// same trace): folded into the trace's settling events, if any wait.
    pub fn observe_late<S: SpanFacts>(&mut self, trace: [u8; 16], span: &S) {
        let marks = self.matcher.mark_spans(std::slice::from_ref(span));
        self.record_late(trace, &marks);
    }

    /// [`SliEngine::observe_late`] with the span read where it arrived
    /// ([`SliMatcher::mark_spans`]).
    pub fn record_late(&mut self, trace: [u8; 16], marks: &SpanMarks) {
        let Some(origin) = self.settling.origin_of(&trace) else {
            return;
        };
        if let Some(events) = self.settling.events_mut(&origin) {
            for (i, e) in events.iter_mut() {
                if let Some(m) = marks.of(*i) {
                    e.apply(m);
                }
            }
            self.settling.late_spans += marks.spans;
        }
    }

    /// A released trace `trace` that continues `linked_to` through a span link (a consumer
    /// starting a new trace): its spans are folded into the settling events of the trace
    /// it continues, and its own late spans and links will be too.
    pub fn observe_linked<S: SpanFacts>(
        &mut self,
        trace: [u8; 16],
        linked_to: [u8; 16],
        spans: &[S],
    ) {
        let marks = self.matcher.mark_spans(spans);
        self.record_linked(trace, linked_to, &marks);
    }

    /// [`SliEngine::observe_linked`] with the continuation's spans read where they were
    /// released ([`SliMatcher::mark_spans`]).
    pub fn record_linked(&mut self, trace: [u8; 16], linked_to: [u8; 16], marks: &SpanMarks) {
        let Some(origin) = self.settling.origin_of(&linked_to) else {
            return;
        };
        if let Some(events) = self.settling.events_mut(&origin) {
            for (i, e) in events.iter_mut() {
                if let Some(m) = marks.of(*i) {
                    e.apply(m);
                }
            }
            self.settling.linked_spans += marks.spans;
        }
        self.alias_settling(trace, origin);
    }

    /// Records every settling event now (shutdown: nothing more will come).
    pub fn settle_all(&mut self, now_ms: u64) {
        while let Some(events) = self.settling.pop_oldest() {
            self.finish_all(events, now_ms);
        }
    }

    /// Records settled events, expires idle series, and samples the history when a point
    /// is due (cheap otherwise). Called on every observed trace and by a timer, so the
    /// charts move while no traffic comes.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        while let Some(events) = self.settling.pop_due(now_ms) {
            self.finish_all(events, now_ms);
        }
        self.expire_idle_series(now_ms);
        if now_ms < self.next_sample_ms {
            return;
        }
        self.next_sample_ms = (now_ms / HISTORY_INTERVAL_MS + 1) * HISTORY_INTERVAL_MS;
        self.settling.shrink_if_sparse();
        for s in &mut self.cujs {
            s.sample_history(now_ms);
        }
    }

    /// Records `events` (settled, or made to settle early) in their CUJs.
    fn finish_all(&mut self, events: Events, now_ms: u64) {
        let room = Room::new(&self.limits, &self.settling, self.settle_reserve);
        for (i, event) in events {
            finish_event(&mut self.cujs, room, i, event, now_ms);
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
                let mut ranked: Vec<(f64, SeriesReport)> = s
                    .series
                    .iter()
                    .map(|(dims, v)| {
                        (
                            s.budget_burned_1h(v, now_ms),
                            SeriesReport {
                                dimensions: s
                                    .cuj
                                    .dimensions
                                    .iter()
                                    .cloned()
                                    .zip(dims.iter().map(str::to_string))
                                    .collect(),
                                availability_good: v.available_good,
                                availability_bad: v.available_bad,
                                latency_good: v.latency_good,
                                latency_bad: v.latency_bad,
                                windows: s.series_windows(v, now_ms),
                                latency: latency_summary(&v.latency_hist),
                                last_bad_trace_id: v
                                    .last_bad
                                    .as_ref()
                                    .map(crate::report::trace_id_hex),
                            },
                        )
                    })
                    .collect();
                // Worst first: most budget burned over the last hour, then most bad events
                // since start, then by dimension values for a stable order.
                ranked.sort_by(|(sa, a), (sb, b)| {
                    sb.total_cmp(sa)
                        .then_with(|| {
                            (b.availability_bad + b.latency_bad)
                                .cmp(&(a.availability_bad + a.latency_bad))
                        })
                        .then_with(|| a.dimensions.cmp(&b.dimensions))
                });
                let series: Vec<SeriesReport> = ranked.into_iter().map(|(_, r)| r).collect();
                CujReport {
                    name: s.cuj.name.clone(),
                    dimensions: s.cuj.dimensions.clone(),
                    latency_threshold_seconds: s.cuj.latency.as_ref().map(|(t, _)| t.as_secs_f64()),
                    latency_measure: s.cuj.latency.as_ref().map(|(_, m)| m.label().to_string()),
                    excluded: s.excluded,
                    overflowed: s.overflowed.iter().sum(),
                    overflowed_memory: s.overflowed[OverflowReason::Memory as usize],
                    dimension_values_truncated: s.truncated,
                    series_expired: s.expired,
                    series_not_restored: s.restore_skipped.iter().sum(),
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
                series: s
                    .series
                    .iter()
                    .map(|(dims, v)| (dims.to_vec(), v.windows.clone()))
                    .collect(),
            })
            .collect();
        crate::state::encode(&cujs)
    }

    /// Restores windows saved by [`SliEngine::save_state`] for the CUJs that still exist;
    /// returns how many were restored. Series are restored most recently active first,
    /// within the CUJ's `max_series` and the engine's limits; the others are counted
    /// (`cujo_sli_restore_skipped_series_total`), never fatal.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<usize, crate::state::StateError> {
        let saved = crate::state::decode(bytes)?;
        let mut restored = 0;
        for w in saved {
            if let Some(i) = self.cujs.iter().position(|s| s.cuj.name == w.name) {
                self.restore_cuj(i, w);
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
}

impl CujState {
    /// A series' windows for the report: the reported windows and the objectives' own.
    fn series_windows(&self, series: &Series, now_ms: u64) -> Vec<crate::report::SeriesWindow> {
        let mut windows = REPORTED_WINDOWS.to_vec();
        for (_, o) in &self.cuj.objectives {
            if !windows.contains(&o.window) {
                windows.push(o.window);
            }
        }
        windows.sort();
        windows
            .into_iter()
            .filter_map(|w| {
                let c = series.windows.counts(now_ms, w)?;
                Some(crate::report::SeriesWindow {
                    window: window_label(w),
                    valid: c.valid,
                    availability_good: c.availability_good,
                    latency_valid: c.latency_valid,
                    latency_good: c.latency_good,
                })
            })
            .collect()
    }

    /// How much of the CUJ's error budgets a series burned over the last hour, for ranking:
    /// its bad events per objective over the objective's budget fraction (the CUJ's valid
    /// count is the same for every series, so it is left out). Without objectives, its bad
    /// events.
    fn budget_burned_1h(&self, series: &Series, now_ms: u64) -> f64 {
        let c = series
            .windows
            .counts(now_ms, Duration::from_secs(3600))
            .unwrap_or_default();
        let bad = |sli: Sli| match sli {
            Sli::Availability => c.availability().bad() as f64,
            Sli::Latency => c.latency().bad() as f64,
        };
        if self.cuj.objectives.is_empty() {
            return bad(Sli::Availability) + bad(Sli::Latency);
        }
        self.cuj
            .objectives
            .iter()
            .map(|(sli, o)| bad(*sli) / (1.0 - o.target).max(f64::MIN_POSITIVE))
            .sum()
    }
}

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

#[cfg(test)]
mod tests {
    use super::testkit::{Span, Timed, engine, feed, value};
    use super::*;
    use crate::condition::{Condition, RootMatch, Scalar, StatusCode, ValueMatch};
    use crate::cuj::{Measure, Scope};

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
            span_bits: None,
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
    fn series_keep_their_own_windows_and_rank_by_budget_burned_in_the_last_hour() {
        // Idle series are kept, to compare a day ago with now.
        let mut e = engine(10).with_limits(SliLimits {
            series_idle_ttl: Duration::ZERO,
            ..SliLimits::default()
        });
        let day_ago = 1_700_000_000_000;
        let now = day_ago + 86_400_000;
        // "free" failed a lot a day ago; "gold" fails a little now.
        for _ in 0..50 {
            feed(&mut e, "free", true, 10, day_ago);
        }
        for i in 0..20 {
            feed(&mut e, "gold", i < 2, 10, now);
        }
        let r = e.report(now);
        let cuj = &r.cujs[0];
        let names: Vec<&str> = cuj
            .series
            .iter()
            .map(|s| s.dimensions[0].1.as_str())
            .collect();
        assert_eq!(
            names,
            ["gold", "free"],
            "the last hour decides, not the totals"
        );
        let gold = &cuj.series[0];
        let w = |label: &str| {
            gold.windows
                .iter()
                .find(|w| w.window == label)
                .cloned()
                .expect("window")
        };
        assert_eq!((w("5m").valid, w("5m").availability_good), (20, 18));
        assert_eq!((w("5m").latency_valid, w("5m").latency_good), (20, 20));
        assert_eq!(w("30d").valid, 20, "the objective's window is reported too");
        let free = &cuj.series[1];
        let fw = |label: &str| {
            free.windows
                .iter()
                .find(|w| w.window == label)
                .map(|w| w.valid)
        };
        assert_eq!((fw("1h"), fw("2d"), fw("3d")), (Some(0), None, Some(50)));
    }

    #[test]
    fn end_to_end_events_settle_with_late_and_linked_spans() {
        let mut cuj = engine(10).cujs.remove(0).cuj;
        cuj.latency = Some((Duration::from_millis(300), Measure::EndToEnd));
        let mut e = SliEngine::new(vec![cuj]).with_settle(Duration::from_secs(30), 2);
        assert!(e.settles());
        let t0 = 1_700_000_000_000;
        let root = [Span {
            tier: "gold".into(),
            error: false,
        }];
        let trace = |id: u8| TraceFacts {
            trace_id: [id; 16],
            root: &root[0],
            root_start_ns: 0,
            root_end_ns: 100_000_000,
            spans: &root,
            last_end_ns: 100_000_000,
            span_bits: None,
        };
        let count = |e: &SliEngine| {
            value(
                &e.families(t0),
                "cujo_cuj_duration_seconds",
                "_count",
                &[("user_tier", "gold")],
            )
        };
        let sum = |e: &SliEngine| {
            value(
                &e.families(t0),
                "cujo_cuj_duration_seconds",
                "_sum",
                &[("user_tier", "gold")],
            )
        };
        e.observe(&trace(1), t0);
        assert_eq!(count(&e), None, "waiting to settle");
        // A consumer in the same trace, after the release; one in a trace linking back, and
        // a late span of that linked trace.
        let late = Timed(
            Span {
                tier: "".into(),
                error: false,
            },
            (0, 200_000_000),
        );
        e.observe_late([1; 16], &late);
        let linked = [Timed(
            Span {
                tier: "".into(),
                error: false,
            },
            (300_000_000, 400_000_000),
        )];
        e.observe_linked([7; 16], [1; 16], &linked);
        e.observe_late(
            [7; 16],
            &Timed(
                Span {
                    tier: "".into(),
                    error: false,
                },
                (0, 450_000_000),
            ),
        );
        e.tick(t0 + 29_999);
        assert_eq!(count(&e), None);
        e.tick(t0 + 30_000);
        assert_eq!(count(&e), Some(1.0));
        assert_eq!(
            sum(&e),
            Some(0.45),
            "root start to the linked trace's late span"
        );
        // Late spans after the event settled change nothing.
        e.observe_late(
            [1; 16],
            &Timed(
                Span {
                    tier: "".into(),
                    error: false,
                },
                (0, 9_000_000_000),
            ),
        );
        assert_eq!(sum(&e), Some(0.45));
        // Past max_settling_traces the oldest is recorded early, counted.
        e.observe(&trace(2), t0 + 40_000);
        e.observe(&trace(3), t0 + 40_001);
        e.observe(&trace(4), t0 + 40_002);
        assert_eq!(count(&e), Some(2.0));
        assert_eq!(
            value(&e.families(t0), "cujo_sli_settle_evicted_total", "", &[]),
            Some(1.0)
        );
        // Events whose series exists when they begin to wait keep to it: two tiers, each
        // series made before its second event.
        let free = [Span {
            tier: "free".into(),
            error: false,
        }];
        let free_trace = |id: u8| TraceFacts {
            root: &free[0],
            spans: &free,
            ..trace(id)
        };
        e.observe(&free_trace(5), t0 + 40_003);
        e.settle_all(t0 + 40_004);
        e.observe(&free_trace(6), t0 + 40_005);
        e.observe(&trace(8), t0 + 40_006);
        e.settle_all(t0 + 40_007);
        assert_eq!(count(&e), Some(5.0), "traces 1 to 4 and 8");
        let free_count = value(
            &e.families(t0),
            "cujo_cuj_duration_seconds",
            "_count",
            &[("user_tier", "free")],
        );
        assert_eq!(free_count, Some(2.0));
        assert_eq!(
            value(
                &e.families(t0),
                "cujo_sli_settle_spans_total",
                "",
                &[("source", "linked")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn series_windows_survive_a_save_and_restore() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        for i in 0..10 {
            feed(&mut e, if i < 4 { "gold" } else { "free" }, i == 0, 10, now);
        }
        let mut fresh = engine(10);
        assert_eq!(fresh.restore_state(&e.save_state()), Ok(1));
        let windows = |e: &SliEngine| {
            let mut s: Vec<_> = e.report(now).cujs[0]
                .series
                .iter()
                .map(|s| (s.dimensions.clone(), s.windows.clone()))
                .collect();
            s.sort_by(|a, b| a.0.cmp(&b.0));
            s
        };
        assert_eq!(windows(&fresh), windows(&e));
        assert_eq!(windows(&fresh)[1].1[0].valid, 4);
    }

    /// A span with an HTTP status code, for trace-scope conditions.
    struct Coded {
        error: bool,
        code: Option<i64>,
    }

    impl SpanFacts for Coded {
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
            match key {
                "http.response.status_code" => self.code.map(Scalar::Int),
                "user.tier" => Some(Scalar::Str("gold")),
                _ => None,
            }
        }
    }

    fn range(gte: f64, lt: Option<f64>) -> ValueMatch {
        ValueMatch::Range {
            gte: Some(gte),
            gt: None,
            lte: None,
            lt,
        }
    }

    /// Two trace-scope CUJs sharing a condition, and a root-scope one.
    fn trace_scope_engine() -> SliEngine {
        let code = |value| Condition::Attribute {
            key: "http.response.status_code".into(),
            value,
        };
        let cuj = |name: &str, scope, bad: Vec<Condition>, exclude: Vec<Condition>| Cuj {
            name: name.into(),
            matcher: RootMatch::default(),
            dimensions: vec!["user.tier".into()],
            max_series: 10,
            scope,
            bad,
            exclude,
            latency: None,
            objectives: vec![],
        };
        SliEngine::new(vec![
            cuj(
                "errors",
                Scope::Trace,
                vec![Condition::Status(StatusCode::Error)],
                vec![],
            ),
            cuj(
                "http",
                Scope::Trace,
                vec![
                    Condition::Status(StatusCode::Error),
                    code(range(500.0, None)),
                ],
                vec![code(range(400.0, Some(500.0)))],
            ),
            cuj(
                "root_only",
                Scope::Root,
                vec![code(range(500.0, None))],
                vec![],
            ),
        ])
    }

    fn coded_trace<'a>(
        trace_id: [u8; 16],
        spans: &'a [Coded],
        span_bits: Option<u64>,
    ) -> TraceFacts<'a, Coded> {
        TraceFacts {
            trace_id,
            root: &spans[0],
            root_start_ns: 0,
            root_end_ns: 1_000_000,
            spans,
            last_end_ns: 1_000_000,
            span_bits,
        }
    }

    #[test]
    fn condition_bits_of_arriving_spans_decide_as_reading_every_span_would() {
        let mut by_spans = trace_scope_engine();
        let mut by_bits = trace_scope_engine();
        let set = by_bits
            .span_conditions()
            .cloned()
            .expect("trace-scope conditions");
        assert_eq!(
            set.attribute_keys(),
            vec!["http.response.status_code".to_string()]
        );
        assert!(!by_bits.needs_spans_besides_bits());
        // Every mix of three spans drawn from these shapes, the first being the root.
        let shapes = [
            (false, None),
            (true, None),
            (false, Some(200)),
            (false, Some(503)),
            (false, Some(404)),
            (true, Some(429)),
        ];
        let mut traces = 0u64;
        for a in shapes {
            for b in shapes {
                for c in shapes {
                    let spans: Vec<Coded> = [a, b, c]
                        .into_iter()
                        .map(|(error, code)| Coded { error, code })
                        .collect();
                    let id: [u8; 16] = [traces.to_le_bytes(), [0; 8]]
                        .concat()
                        .try_into()
                        .expect("16 bytes");
                    by_spans.observe(&coded_trace(id, &spans, None), 1_000);
                    let bits = spans.iter().fold(0, |b, s| b | set.classify(s));
                    by_bits.observe(&coded_trace(id, &spans[..1], Some(bits)), 1_000);
                    traces += 1;
                }
            }
        }
        let (a, b) = (by_spans.families(1_000), by_bits.families(1_000));
        for cuj in ["errors", "http", "root_only"] {
            for outcome in ["good", "bad"] {
                let labels = [("cuj", cuj), ("sli", "availability"), ("outcome", outcome)];
                let want = value(&a, "cujo_sli_events_total", "", &labels);
                assert_eq!(
                    want,
                    value(&b, "cujo_sli_events_total", "", &labels),
                    "{cuj} {outcome}"
                );
            }
            let labels = [("cuj", cuj)];
            assert_eq!(
                value(&a, "cujo_sli_excluded_total", "", &labels),
                value(&b, "cujo_sli_excluded_total", "", &labels),
                "{cuj} excluded"
            );
        }
        // The spans did decide: some traces are bad only through a non-root span.
        let errors_bad = value(
            &a,
            "cujo_sli_events_total",
            "",
            &[
                ("cuj", "errors"),
                ("sli", "availability"),
                ("outcome", "bad"),
            ],
        );
        // Four of the six shapes have no error status: 4^3 traces are error-free.
        assert_eq!(errors_bad, Some((traces - 4 * 4 * 4) as f64));
    }
}
