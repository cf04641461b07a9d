//! The SLI engine: turns released traces into per-series event counts, latency histograms
//! and rolling windows, and reports them as metric families (plain data; the binary writes
//! the exposition format).
//!
//! Series are (CUJ, dimension values). Each CUJ keeps at most `max_series`, within the
//! engine's byte limit ([`crate::limits`]); later values fold into one overflow series
//! (dimension values `__overflow__`), counted by reason. Objectives are evaluated over the
//! CUJ's aggregate windows.
//!
//! # Layout
//! This file holds [`SliEngine`], its construction and settings, and the dispatch of its
//! inputs: matched traces recorded now or made to wait ([`SliEngine::record`]), late and
//! linked spans folded into waiting events, [`SliEngine::tick`] and
//! [`SliEngine::settle_all`]. It decides when an event is finished, not how it is counted
//! or read. Each submodule's public items are re-exported here, so `cujo_sli::engine` stays
//! the one public path:
//! - `matching`: [`SliMatcher`] — which CUJs a released trace feeds and the events it
//!   begins, late and linked spans read into marks; the CUJs' definitions only (shared with
//!   the span path), never the engine's state.
//! - `record`: series and windows — each CUJ's state, a finished event counted in its
//!   series (found, added, or the overflow series), the history sampled on a tick.
//! - `memory`: what the engine holds ([`SliEngine::memory_bytes`]) and keeping it within
//!   [`crate::limits::SliLimits`]: admitting new series, settling traces early, expiring
//!   idle series, restoring a large state file in part.
//! - `reports`: [`SliEngine::report`] and [`SliEngine::objectives`]; read-only.
//! - `shares`: which dimension values burn (each value's share of the bad events beside its
//!   share of the traffic), computed from the series of a report being built.
//! - `export`: the metric families ([`Family`], [`Kind`], [`Sample`], [`label_name`],
//!   [`window_label`]) of [`SliEngine::families`] for `/metrics`, and
//!   [`SliEngine::export_view`] for the OTLP push; read-only.
//! - `persist`: [`SliEngine::save_state_with`] and [`SliEngine::restore`], the windows,
//!   totals and history through the SLO state file ([`crate::state`]).
//! - `replay`: each event counted once when the write-ahead log replays what a crash left
//!   ([`SliEngine::guard_replays`]): event keys, the segments events hold until saved.
//! - `testkit` (tests only): the spans, the engine and the helpers the unit tests share.

mod export;
mod matching;
mod memory;
mod persist;
mod record;
pub mod replay;
mod reports;
mod shares;
#[cfg(test)]
mod testkit;
pub use export::{
    CujExport, Family, Kind, QUANTILES, Sample, SeriesExport, label_name, window_label,
};
pub use matching::{Matched, MatchedTrace, SliMatcher, SpanMarks};
pub use memory::SliCaps;
pub use persist::Restored;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::condition::{ConditionSet, SpanFacts};
use crate::cuj::{Cuj, TraceFacts};
use crate::limits::SliLimits;
use crate::settle::{Events, Settling};
use memory::Room;
use record::{CujState, finish_event};
use replay::{Ledger, ReplayGuard};

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
    /// When the cumulative totals began (see [`SliEngine::counting_since_ms`]).
    counting_since_ms: u64,
    /// `slo.trace_link`: reports carry a link beside each trace id when set.
    trace_link: Option<crate::trace_link::TraceLink>,
    /// Set when replays of the write-ahead log are guarded ([`SliEngine::guard_replays`]).
    replay: Option<Ledger>,
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
            counting_since_ms: 0,
            trace_link: None,
            replay: None,
        }
        .with_limits(SliLimits::default())
    }

    /// Counts each event once across a crash and the write-ahead log's replay (see
    /// [`replay`]): from now on recorded traces' tags are kept until saved, a state file
    /// restored after this fills the guard, and saves list the keys. Call it before
    /// [`SliEngine::restore`]; the span path asks the guard it returns.
    pub fn guard_replays(&mut self) -> Arc<ReplayGuard> {
        self.replay.get_or_insert_with(Ledger::new).guard()
    }

    /// The segments the write-ahead log's replay read from (weakly): once all are gone,
    /// the guard is emptied.
    pub fn replayed_segments(
        &mut self,
        segments: Vec<std::sync::Weak<dyn std::any::Any + Send + Sync>>,
    ) {
        if let Some(l) = &mut self.replay {
            l.replayed(segments);
        }
    }

    /// Whether counted events hold log segments until the next save
    /// ([`replay::MAX_UNSAVED`]).
    pub fn has_unsaved_events(&self) -> bool {
        self.replay.as_ref().is_some_and(Ledger::has_unsaved)
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

    /// Renders a link beside every trace id of the reports (`slo.trace_link`).
    pub fn with_trace_link(mut self, link: Option<crate::trace_link::TraceLink>) -> Self {
        self.trace_link = link;
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
                if let (Some(l), Some(tag)) = (&mut self.replay, &trace.replay) {
                    l.counted(self.matcher.event_key(tag.trace, i), &tag.pins);
                }
            }
        }
        if !waiting.is_empty() {
            let tag = self.replay.as_ref().and(trace.replay);
            if let (Some(l), Some(tag)) = (&mut self.replay, &tag) {
                l.settling(trace.trace_id, tag.clone());
            }
            self.wait_to_settle(trace.trace_id, waiting, now_ms);
            // Making room may have recorded this trace's earlier events (and taken the tag)
            // while the new ones wait.
            if let (Some(l), Some(tag)) = (&mut self.replay, tag)
                && self.settling.origin_of(&trace.trace_id).is_some()
            {
                l.settling(trace.trace_id, tag);
            }
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
        while let Some((trace, events)) = self.settling.pop_oldest_trace() {
            self.finish_all(Some(&trace), events, now_ms);
        }
    }

    /// Records settled events, expires idle series, and samples the history when a point
    /// is due (cheap otherwise). Called on every observed trace and by a timer, so the
    /// charts move while no traffic comes.
    pub fn tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        while let Some((trace, events)) = self.settling.pop_due_trace(now_ms) {
            self.finish_all(Some(&trace), events, now_ms);
        }
        if let Some(l) = &mut self.replay {
            l.check_replayed();
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

    /// Records `events` (of `trace`, settled or made to settle early) in their CUJs.
    fn finish_all(&mut self, trace: Option<&[u8; 16]>, events: Events, now_ms: u64) {
        let tag = match (&mut self.replay, trace) {
            (Some(l), Some(t)) => l.settled(t),
            _ => None,
        };
        let room = Room::new(&self.limits, &self.settling, self.settle_reserve);
        for (i, event) in events {
            finish_event(&mut self.cujs, room, i, event, now_ms);
            if let (Some(l), Some(tag)) = (&mut self.replay, &tag) {
                l.counted(self.matcher.event_key(tag.trace, i), &tag.pins);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{Span, Timed, engine, value};
    use super::*;
    use crate::cuj::Measure;

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
}
