//! What the engine holds, and how it keeps within its limits ([`crate::limits`]).
//!
//! Counted ([`SliEngine::memory_bytes`]), by allocation size: every series (its slot in the
//! CUJ's series table, its index slot, its dimension values, windows, latency buckets and
//! histogram), the settling traces (queue, index and alias maps, each trace's events), and
//! each CUJ's history and latency histograms. Not counted: what does not grow with input
//! (the CUJ definitions, their aggregate windows, the dispatch table). Each part keeps its
//! own total as it changes, so the sum is O(number of CUJs).
//!
//! Kept within the byte limit: what the engine holds plus what it may still grow into
//! without asking (histograms to their cap, history to a day, an overflow series per CUJ
//! that has none) — "committed" bytes. That sum moves only when a series comes or goes,
//! so each CUJ keeps it as one number, and weighing a new series or a settling trace
//! reads one number per CUJ.
//!
//! It weighs, refuses and trims; it must not decide how an event is counted (`record`) or
//! which CUJs a trace feeds (`matching`). Its metric families ([`SliEngine::memory_families`])
//! are gathered into `/metrics` by `export`.

use cujo_wire::alloc::{allocation_size, vec_bytes};

use super::SliEngine;
use super::export::{Family, Kind, family, sample};
use super::record::CujState;
use crate::cuj::{Cuj, DimensionValues};
use crate::histogram::ExpHistogram;
use crate::limits::{EvictReason, OverflowReason, RestoreSkip, SliLimits};
use crate::report::HistoryPoint;
use crate::settle::{Events, Settling, TraceId};
use crate::state::CujWindows;

/// What a new series must fit in beside the CUJs: the limit, and the settling traces (the
/// queue does not change while events are recorded) or the reserve kept for them.
#[derive(Clone, Copy)]
pub(super) struct Room<'a> {
    max_bytes: usize,
    settling: &'a Settling,
    settle_reserve: usize,
}

impl<'a> Room<'a> {
    pub(super) fn new(limits: &SliLimits, settling: &'a Settling, settle_reserve: usize) -> Self {
        Room {
            max_bytes: limits.max_bytes,
            settling,
            settle_reserve,
        }
    }
}

/// Whether a new series of `key` in CUJ `i` fits in the byte limit, with room for what
/// the engine holds to grow as it may.
pub(super) fn admits_series(
    cujs: &mut [CujState],
    room: Room<'_>,
    i: usize,
    key: &DimensionValues,
) -> bool {
    if room.max_bytes == usize::MAX {
        return true;
    }
    let need = cujs[i].series.cost_of_new(key);
    let settling = room.settling.bytes().max(room.settle_reserve);
    committed(cujs)
        .saturating_add(settling)
        .saturating_add(need)
        <= room.max_bytes
}

/// What the CUJs hold and may still grow into without asking.
fn committed(cujs: &[CujState]) -> usize {
    cujs.iter()
        .map(|c| c.series.committed() + c.aggregates_max)
        .sum()
}

/// The most a CUJ's history and latency histograms come to: histograms at their cap, a
/// day of history points (what they hold now and may still grow into).
pub(super) fn aggregates_max(cuj: &Cuj) -> usize {
    let point = allocation_size(cuj.objectives.len() * std::mem::size_of::<f64>());
    2 * ExpHistogram::max_heap_bytes()
        + vec_bytes::<HistoryPoint>(super::HISTORY_POINTS.next_power_of_two())
        + super::HISTORY_POINTS * point
}

impl CujState {
    /// Bytes the CUJ holds: its series with their tables, its history, its latency
    /// histograms.
    fn held_bytes(&self) -> usize {
        self.series.bytes()
            + self.history_bytes()
            + self.latency_all.heap_bytes()
            + self.latency_interval.heap_bytes()
    }

    /// Bytes the CUJ's history holds: the points and each one's budgets.
    fn history_bytes(&self) -> usize {
        vec_bytes::<HistoryPoint>(self.history.capacity())
            + self.history.len()
                * allocation_size(self.cuj.objectives.len() * std::mem::size_of::<f64>())
    }
}

/// Counts of the SLI engine's caps being hit, since start (see [`SliEngine::caps`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SliCaps {
    pub dimension_values_truncated: u64,
    pub series_expired: u64,
    /// Events folded into a CUJ's overflow series because it had `max_series` series.
    pub overflowed_max_series: u64,
    /// Events folded into the overflow series because a new series would not fit in memory.
    pub overflowed_memory: u64,
    /// Settling traces recorded before their settle time (queue full or memory).
    pub settled_early: u64,
}

impl SliEngine {
    /// Heap bytes the engine holds that grow with input: every series, the settling
    /// traces, each CUJ's history and latency histograms (see the module doc). Counted as
    /// the allocator hands memory out (size classes, hash tables by their slots), kept as
    /// running totals: O(number of CUJs).
    pub fn memory_bytes(&self) -> usize {
        self.cujs.iter().map(CujState::held_bytes).sum::<usize>()
            + self.settling.bytes()
            + self.replay.as_ref().map_or(0, |l| l.bytes())
    }

    /// How often the engine's caps were hit since start, summed over the CUJs: for a log
    /// line once per interval beside the counters on `/metrics`.
    pub fn caps(&self) -> SliCaps {
        let mut caps = SliCaps {
            settled_early: self.settling.evicted.iter().sum(),
            ..SliCaps::default()
        };
        for s in &self.cujs {
            caps.dimension_values_truncated += s.truncated;
            caps.series_expired += s.expired;
            caps.overflowed_max_series += s.overflowed[OverflowReason::MaxSeries as usize];
            caps.overflowed_memory += s.overflowed[OverflowReason::Memory as usize];
        }
        caps
    }

    /// Bytes of the limit kept for settling traces: none when no CUJ settles.
    pub(super) fn reserve_for_settling(&self) -> usize {
        if self.settles() {
            self.limits.settle_reserve(self.settling.max_traces())
        } else {
            0
        }
    }

    /// Whether `more` bytes of settling traces fit in the byte limit.
    fn settling_fits(&self, more: usize) -> bool {
        more == 0
            || committed(&self.cujs)
                .saturating_add(self.settling.bytes())
                .saturating_add(more)
                <= self.limits.max_bytes
    }

    /// Records the oldest settling trace's events now, counted under `reason`; `false`
    /// when no trace waits.
    fn settle_oldest_early(&mut self, reason: EvictReason, now_ms: u64) -> bool {
        let Some((trace, events)) = self.settling.pop_oldest_trace() else {
            return false;
        };
        self.settling.evicted[reason as usize] += 1;
        self.finish_all(Some(&trace), events, now_ms);
        true
    }

    /// Makes `waiting` (events of `trace`) wait to settle, recording the oldest waiting
    /// traces early while `max_settling_traces` wait or the byte limit would be passed.
    /// When even an empty queue has no room, `waiting` is recorded now.
    pub(super) fn wait_to_settle(&mut self, trace: TraceId, waiting: Events, now_ms: u64) {
        let Some(waiting) = self.join_settling(&trace, waiting, now_ms) else {
            return;
        };
        while self.settling.is_full() && self.settle_oldest_early(EvictReason::MaxTraces, now_ms) {}
        if self.limits.max_bytes != usize::MAX {
            loop {
                let need = self.settling.cost_of_push(&waiting);
                if self.settling_fits(need) {
                    break;
                }
                if !self.settle_oldest_early(EvictReason::Memory, now_ms) {
                    self.settling.evicted[EvictReason::Memory as usize] += 1;
                    self.finish_all(Some(&trace), waiting, now_ms);
                    return;
                }
            }
        }
        self.settling.push(trace, waiting, now_ms);
    }

    /// Adds `waiting` to the events of `trace` if it waits already (another part of the
    /// trace was released), within the byte limit; else hands the events back.
    fn join_settling(&mut self, trace: &TraceId, waiting: Events, now_ms: u64) -> Option<Events> {
        if self.limits.max_bytes != usize::MAX {
            loop {
                let Some(need) = self.settling.cost_of_join(trace, &waiting) else {
                    return Some(waiting);
                };
                if self.settling_fits(need) {
                    break;
                }
                // Making room may record this very trace early: it then waits anew.
                if !self.settle_oldest_early(EvictReason::Memory, now_ms) {
                    return Some(waiting);
                }
            }
        }
        self.settling.join(trace, waiting)
    }

    /// Notes that `continuation` continues the waiting trace `origin`, within the byte
    /// limit (recording the oldest waiting traces early to make room).
    pub(super) fn alias_settling(&mut self, continuation: TraceId, origin: TraceId) {
        if self.limits.max_bytes != usize::MAX {
            loop {
                let need = self.settling.cost_of_alias(&continuation, &origin);
                if self.settling_fits(need) {
                    break;
                }
                if !self.settle_oldest_early(EvictReason::Memory, self.now_ms) {
                    return;
                }
            }
        }
        self.settling.alias(continuation, origin);
    }

    /// Removes series idle for `series_idle_ttl` (one comparison until one may be).
    pub(super) fn expire_idle_series(&mut self, now_ms: u64) {
        let ttl = self.limits.series_idle_ttl_ms();
        if ttl == 0 || now_ms < self.next_expiry_ms {
            return;
        }
        // A series added from now on is due a TTL from now at the earliest (later than
        // that by as much as the clock may step back).
        let mut next = now_ms.saturating_add(ttl);
        for (i, s) in self.cujs.iter_mut().enumerate() {
            let out = s.series.expire(now_ms);
            s.expired += out.removed;
            if let Some(places) = out.moved {
                self.settling.move_series(i, &places);
            }
            next = next.min(s.series.next_expiry_ms());
        }
        self.next_expiry_ms = next;
    }

    /// Restores CUJ `i` from its saved state: windows, the history, and with `totals`
    /// the cumulative counts and histograms (latency ones only if the CUJ's bucket bounds
    /// are those they were counted in).
    pub(super) fn restore_cuj(&mut self, i: usize, saved: CujWindows, totals: bool) {
        let CujWindows {
            availability,
            latency,
            totals: cuj_totals,
            mut series,
            ..
        } = saved;
        let state = &mut self.cujs[i];
        state.availability = availability;
        state.latency = latency;
        let mut latency_totals = false;
        if let Some(t) = cuj_totals {
            latency_totals = totals && same_bounds(&t.bounds, &state.bounds);
            state.restore_totals(t, totals, latency_totals);
        }
        // Restored series may be idle already: look at them at the next tick.
        self.next_expiry_ms = 0;
        series.sort_by_key(|s| std::cmp::Reverse(s.windows.latest_event_bound_ms()));
        let room = Room::new(&self.limits, &self.settling, self.settle_reserve);
        let max_value = self.limits.max_dimension_value_bytes;
        // Which places hold a series restored by this call (a later one with the same
        // values, once cut, is a duplicate).
        let mut restored = vec![false; self.cujs[i].series.len()];
        for saved in series {
            let state = &mut self.cujs[i];
            let dims = &saved.dimensions;
            let skip = if dims.len() != state.cuj.dimensions.len() {
                Some(RestoreSkip::Dimensions)
            } else {
                None
            };
            let (key, cut) = DimensionValues::new_capped(dims, max_value);
            let latest = saved.windows.latest_event_bound_ms();
            let found = state.series.find(&key);
            let skip = skip.or(match found {
                Some(at) if restored.get(at).copied().unwrap_or(false) => {
                    Some(RestoreSkip::Duplicate)
                }
                Some(_) => None,
                None if state.series.len() >= state.cuj.max_series => Some(RestoreSkip::MaxSeries),
                None if !admits_series(&mut self.cujs, room, i, &key) => Some(RestoreSkip::Memory),
                None => None,
            });
            let state = &mut self.cujs[i];
            if let Some(reason) = skip {
                state.restore_skipped[reason as usize] += 1;
                continue;
            }
            state.truncated += u64::from(cut);
            let at = match found {
                Some(at) => at,
                None => {
                    let at = state.series.insert(key, state.series.new_series(latest));
                    restored.resize(at + 1, false);
                    at
                }
            };
            restored[at] = true;
            let series = state.series.at_mut(at);
            series.windows = saved.windows;
            series.last_event_ms = series.last_event_ms.max(latest);
            let Some(t) = saved.totals.filter(|_| totals) else {
                continue;
            };
            let c = t.counts;
            series.available_good = c.available_good;
            series.available_bad = c.available_bad;
            series.last_bad = c.last_bad;
            if latency_totals && t.buckets.len() == series.buckets.len() {
                series.latency_good = c.latency_good;
                series.latency_bad = c.latency_bad;
                for (b, n) in series.buckets.iter_mut().zip(t.buckets) {
                    b.count = n;
                }
                let before = series.latency_hist.heap_bytes();
                series.latency_hist = t.latency;
                let after = series.latency_hist.heap_bytes();
                state.series.histogram_changed(before, after);
            }
        }
    }

    /// The families of the engine's limits and memory, for `/metrics`.
    pub(super) fn memory_families(&self) -> Vec<Family> {
        let mut truncated = family(
            "cujo_sli_dimension_values_truncated_total",
            "Dimension values cut to slo.max_dimension_value_bytes before making a series key.",
            Kind::Counter,
        );
        let mut expired = family(
            "cujo_sli_series_expired_total",
            "Series removed after slo.series_idle_ttl without events (their memory given back; the CUJ's windows keep their events).",
            Kind::Counter,
        );
        let mut series = family(
            "cujo_sli_series",
            "Series each CUJ holds, the overflow series included.",
            Kind::Gauge,
        );
        let mut skipped = family(
            "cujo_sli_restore_skipped_series_total",
            "Series of the SLO state file not restored at start, by reason: the CUJ's dimensions changed, a duplicate once values are cut, past max_series, or past the memory limit.",
            Kind::Counter,
        );
        for s in &self.cujs {
            let cuj = || vec![("cuj".to_string(), s.cuj.name.clone())];
            truncated
                .samples
                .push(sample("", cuj(), s.truncated as f64));
            expired.samples.push(sample("", cuj(), s.expired as f64));
            series
                .samples
                .push(sample("", cuj(), s.series.len() as f64));
            for (reason, n) in RestoreSkip::ALL.iter().zip(s.restore_skipped) {
                let mut labels = cuj();
                labels.push(("reason".into(), reason.label().into()));
                skipped.samples.push(sample("", labels, n as f64));
            }
        }
        let mut memory = family(
            "cujo_sli_memory_bytes",
            "Bytes the SLI engine holds, by part: series, settling traces, each CUJ's history and latency histograms (aggregates).",
            Kind::Gauge,
        );
        let parts = [
            ("series", self.cujs.iter().map(|s| s.series.bytes()).sum()),
            ("settling", self.settling.bytes()),
            (
                "aggregates",
                self.cujs
                    .iter()
                    .map(|s| s.held_bytes() - s.series.bytes())
                    .sum::<usize>(),
            ),
        ];
        for (part, bytes) in parts {
            memory
                .samples
                .push(sample("", vec![("part".into(), part.into())], bytes as f64));
        }
        let mut out = vec![truncated, expired, series, skipped, memory];
        if self.limits.max_bytes != usize::MAX {
            let mut limit = family(
                "cujo_sli_memory_limit_bytes",
                "The SLI engine's byte limit: its share of the memory budget.",
                Kind::Gauge,
            );
            limit
                .samples
                .push(sample("", vec![], self.limits.max_bytes as f64));
            out.push(limit);
        }
        out
    }

    /// [`SliEngine::memory_bytes`] counted again, series by series and trace by trace.
    #[cfg(test)]
    pub(super) fn recount(&self) -> usize {
        let cujs: usize = self
            .cujs
            .iter()
            .map(|s| {
                let points: usize = s
                    .history
                    .iter()
                    .map(|p| vec_bytes::<f64>(p.budget_remaining.capacity()))
                    .sum();
                s.series.recount().0
                    + vec_bytes::<HistoryPoint>(s.history.capacity())
                    + points
                    + s.latency_all.heap_bytes()
                    + s.latency_interval.heap_bytes()
            })
            .sum();
        cujs + self.settling.recount()
    }
}

#[cfg(test)]
mod tests;

/// Whether two lists of bucket bounds are the same, bit for bit.
fn same_bounds(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
