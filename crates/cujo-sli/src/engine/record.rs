//! Series and windows: what one CUJ holds ([`CujState`]: its series, aggregate windows,
//! latency buckets and histograms, history) and how a finished event is recorded in it
//! (its series found or added, else the overflow series; counts, windows, exemplars; the
//! history sampled on the engine's tick).
//!
//! It records what it is handed: which CUJs a trace feeds is `matching`'s, when a settling
//! event is finished is the engine's dispatch, whether a new series fits is `memory`'s.
//! It must not read the settling queue or produce output (that is `reports` and `export`).

use super::memory::{self, Room};
use super::{Exemplar, HISTORY_POINTS, OVERFLOW};
use crate::cuj::{Cuj, DimensionValues, Outcome, PendingEvent, Sli, SliEvent};
use crate::histogram::ExpHistogram;
use crate::limits::{OverflowReason, SliLimits};
use crate::series::SeriesMap;
use crate::window::SlicedCounter;

/// Latency bucket bounds (seconds) used for every CUJ, to which its threshold is added.
const DEFAULT_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// One CUJ: its definition and everything recorded for it.
pub(super) struct CujState {
    pub(super) cuj: Cuj,
    pub(super) bounds: Vec<f64>,
    pub(super) series: SeriesMap,
    /// The most the CUJ's history and latency histograms come to (see the `memory`
    /// submodule).
    pub(super) aggregates_max: usize,
    pub(super) excluded: u64,
    /// Events folded into the overflow series, by [`OverflowReason`] in `ALL` order.
    pub(super) overflowed: [u64; 2],
    /// Dimension values cut to `max_dimension_value_bytes`.
    pub(super) truncated: u64,
    /// Series removed after `series_idle_ttl` without events.
    pub(super) expired: u64,
    /// Series of a state file not restored, by [`crate::limits::RestoreSkip`] in `ALL`
    /// order.
    pub(super) restore_skipped: [u64; 4],
    pub(super) availability: SlicedCounter,
    pub(super) latency: SlicedCounter,
    /// Valid events whose latency could not be measured, by [`crate::cuj::Unmeasured`] in `ALL` order.
    pub(super) unmeasured: [u64; 3],
    /// Sampled budgets, oldest first, at most [`HISTORY_POINTS`].
    pub(super) history: std::collections::VecDeque<crate::report::HistoryPoint>,
    /// Latency of every series together, since start.
    pub(super) latency_all: ExpHistogram,
    /// Latency since the previous history point (its quantiles go into the next one).
    pub(super) latency_interval: ExpHistogram,
}

impl CujState {
    /// A CUJ with nothing recorded: its latency buckets are the default bounds and its
    /// threshold.
    pub(super) fn new(cuj: Cuj) -> Self {
        let mut bounds = DEFAULT_BOUNDS.to_vec();
        if let Some((threshold, _)) = &cuj.latency {
            let t = threshold.as_secs_f64();
            if !bounds.iter().any(|b| (b - t).abs() < 1e-12) {
                bounds.push(t);
                bounds.sort_by(f64::total_cmp);
            }
        }
        let overflow_key = DimensionValues::new(&vec![OVERFLOW; cuj.dimensions.len()]);
        let ttl_ms = SliLimits::default().series_idle_ttl_ms();
        CujState {
            series: SeriesMap::new(ttl_ms, overflow_key, bounds.len() + 1),
            aggregates_max: memory::aggregates_max(&cuj),
            cuj,
            bounds,
            excluded: 0,
            overflowed: [0; 2],
            truncated: 0,
            expired: 0,
            restore_skipped: [0; 4],
            availability: SlicedCounter::new(),
            latency: SlicedCounter::new(),
            unmeasured: [0; 3],
            history: std::collections::VecDeque::new(),
            latency_all: ExpHistogram::new(),
            latency_interval: ExpHistogram::new(),
        }
    }

    /// Records `event` in the series at `at`.
    fn record(&mut self, at: usize, event: SliEvent, now_ms: u64) {
        let series = self.series.at_mut(at);
        series.last_event_ms = series.last_event_ms.max(now_ms);
        let exemplar = |value: f64| {
            Some(Exemplar {
                trace_id: event.trace_id,
                value,
                timestamp_ms: now_ms,
            })
        };
        if event.available {
            series.available_good += 1;
        } else {
            series.available_bad += 1;
            series.last_bad = Some(event.trace_id);
            series.availability_bad = exemplar(1.0);
        }
        self.availability.record(now_ms, event.available);
        series
            .windows
            .record(now_ms, event.available, event.latency.map(|(_, good)| good));
        if let Some(reason) = event.unmeasured {
            self.unmeasured[reason as usize] += 1;
        }
        if let Some((measured, good)) = event.latency {
            if good {
                series.latency_good += 1;
            } else {
                series.latency_bad += 1;
                series.last_bad = Some(event.trace_id);
                series.latency_bad_exemplar = exemplar(1.0);
            }
            let secs = measured.as_secs_f64();
            let bucket = self
                .bounds
                .iter()
                .position(|b| secs <= *b)
                .unwrap_or(self.bounds.len());

            let m = crate::histogram::Measured::new(measured);
            let before = series.latency_hist.allocated();
            series.latency_hist.record_measured(m);
            let after = series.latency_hist.allocated();
            if let Some(slot) = series.buckets.get_mut(bucket) {
                slot.count += 1;
                slot.exemplar = exemplar(secs);
            }
            if after != before {
                self.series.histogram_changed(
                    ExpHistogram::heap_bytes_for(before),
                    ExpHistogram::heap_bytes_for(after),
                );
            }
            self.latency_all.record_measured(m);
            self.latency_interval.record_measured(m);
            self.latency.record(now_ms, good);
        }
    }

    /// Takes back a state file's totals: the history always (points of as many objectives
    /// as the CUJ has, the latest day), the cumulative counts with `counts`, the latency
    /// histogram with `latency` (see the `persist` submodule).
    pub(super) fn restore_totals(
        &mut self,
        t: crate::state::CujTotals,
        counts: bool,
        latency: bool,
    ) {
        let objectives = self.cuj.objectives.len();
        let mut kept: Vec<_> = t
            .history
            .into_iter()
            .filter(|p| p.budget_remaining.len() == objectives)
            .collect();
        let start = kept.len().saturating_sub(HISTORY_POINTS);
        self.history = kept.drain(start..).collect();
        if counts {
            self.excluded = t.excluded;
            self.overflowed = t.overflowed;
            self.unmeasured = t.unmeasured;
            self.truncated = t.truncated;
            self.expired = t.expired;
        }
        if latency {
            self.latency_all = t.latency;
        }
    }

    /// Samples the history for the charts: each objective's budget remaining, and the
    /// latency quantiles of the interval since the previous point.
    pub(super) fn sample_history(&mut self, now_ms: u64) {
        let budget_remaining = self
            .cuj
            .objectives
            .iter()
            .map(|(sli, obj)| {
                let counter = match sli {
                    Sli::Availability => &self.availability,
                    Sli::Latency => &self.latency,
                };
                // A chart point without data draws the full budget (nothing spent yet): the
                // page says "no data" beside the chart while the objective has none.
                obj.evaluate(counter, now_ms, self.cuj.alert_gate)
                    .budget_remaining
                    .unwrap_or(1.0)
            })
            .collect();
        if self.history.len() == HISTORY_POINTS {
            self.history.pop_front();
        }
        let interval = &self.latency_interval;
        self.history.push_back(crate::report::HistoryPoint {
            at_ms: now_ms,
            budget_remaining,
            p50: interval.quantile_seconds(0.5),
            p90: interval.quantile_seconds(0.9),
            p99: interval.quantile_seconds(0.99),
        });
        self.latency_interval.clear();
    }
}

/// Records a finished event of CUJ `i`: in the series found when its trace was released,
/// else in the series of its dimension values — added if missing, or the overflow series
/// past `max_series` or the byte limit.
pub(super) fn finish_event(
    cujs: &mut [CujState],
    room: Room<'_>,
    i: usize,
    event: PendingEvent,
    now_ms: u64,
) {
    let Some(state) = cujs.get_mut(i) else {
        return;
    };
    let known = event
        .series()
        .map(|at| at as usize)
        .filter(|at| *at < state.series.len());
    if let Some(at) = known {
        let series = state.series.at_mut(at);
        series.settling = series.settling.saturating_sub(1);
    }
    let mut event = match state.cuj.finish(event) {
        Outcome::NotMatched => return,
        Outcome::Excluded => {
            state.excluded += 1;
            return;
        }
        Outcome::Event(event) => event,
    };
    let at = match known.or_else(|| state.series.find(&event.dimensions)) {
        Some(at) => at,
        None => add_series(cujs, room, i, std::mem::take(&mut event.dimensions), now_ms),
    };
    cujs[i].record(at, event, now_ms);
}

/// Adds the series of `key` to CUJ `i` if the CUJ's cap and the byte limit allow, else
/// counts why not and finds (or adds) the overflow series; returns the series' place.
fn add_series(
    cujs: &mut [CujState],
    room: Room<'_>,
    i: usize,
    key: DimensionValues,
    now_ms: u64,
) -> usize {
    let refused = if cujs[i].series.len() >= cujs[i].cuj.max_series {
        Some(OverflowReason::MaxSeries)
    } else if !memory::admits_series(cujs, room, i, &key) {
        Some(OverflowReason::Memory)
    } else {
        None
    };
    let state = &mut cujs[i];
    let Some(reason) = refused else {
        let series = state.series.new_series(now_ms);
        return state.series.insert(key, series);
    };
    state.overflowed[reason as usize] += 1;
    state.series.overflow(now_ms)
}

#[cfg(test)]
mod tests {
    use super::super::OVERFLOW;
    use super::super::testkit::{Span, engine, feed, value};
    use crate::cuj::TraceFacts;

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
    fn bad_events_and_buckets_carry_exemplars() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        let mut feed_id = |id: u8, error: bool, ms: u64| {
            let spans = [Span {
                tier: "gold".into(),
                error,
            }];
            e.observe(
                &TraceFacts {
                    trace_id: [id; 16],
                    root: &spans[0],
                    root_start_ns: 0,
                    root_end_ns: ms * 1_000_000,
                    spans: &spans,
                    last_end_ns: ms * 1_000_000,
                    span_bits: None,
                },
                now + u64::from(id),
            );
        };
        feed_id(1, true, 20);
        feed_id(2, false, 900);
        feed_id(3, true, 2000);
        feed_id(4, false, 30);
        let f = e.families(now);
        let ex = |suffix: &str, labels: &[(&str, &str)]| {
            f.iter()
                .flat_map(|f| &f.samples)
                .find(|s| {
                    s.suffix == suffix
                        && labels
                            .iter()
                            .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
                })
                .and_then(|s| s.exemplar)
        };
        let bad_avail = ex("", &[("sli", "availability"), ("outcome", "bad")]).expect("exemplar");
        assert_eq!(
            (bad_avail.trace_id, bad_avail.timestamp_ms),
            ([3; 16], now + 3)
        );
        let bad_latency = ex("", &[("sli", "latency"), ("outcome", "bad")]).expect("exemplar");
        assert_eq!(bad_latency.trace_id, [3; 16]);
        assert_eq!(ex("", &[("sli", "latency"), ("outcome", "good")]), None);
        let bucket = ex("_bucket", &[("le", "1")]).expect("bucket exemplar");
        assert_eq!((bucket.trace_id, bucket.value), ([2; 16], 0.9));
        assert_eq!(
            ex("_bucket", &[("le", "0.05")]).map(|x| x.trace_id),
            Some([4; 16])
        );
        assert_eq!(
            ex("_bucket", &[("le", "0.3")]),
            None,
            "no event fell in (0.25, 0.3]"
        );
    }
}
