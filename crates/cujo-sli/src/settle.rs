//! Events that wait to settle: a CUJ measured `end_to_end` or `{from, to}` does not know its
//! latency when the assembler releases the trace — a queue consumer may still run, in the
//! same trace (its spans arrive late) or in a new trace that links back. Such events wait
//! here for `settle` after the release; late spans and linked continuations are folded in
//! ([`crate::cuj::Cuj::fold`]) and the event is recorded when the time is up.
//!
//! Bounded: at most `max_traces` traces wait; past that the oldest is recorded early with
//! what it has (counted as evicted), never dropped.

use std::collections::VecDeque;

use crate::cuj::PendingEvent;
use crate::engine::FastMap;

pub type TraceId = [u8; 16];

/// A CUJ's pending event: the CUJ's index in the engine and the event so far.
pub type Waiting = (usize, PendingEvent);

struct Entry {
    due_ms: u64,
    events: Vec<Waiting>,
    /// Continuation traces folded into this one, removed from the alias map when it settles.
    continuations: Vec<TraceId>,
}

/// The traces whose events wait to settle.
pub struct Settling {
    settle_ms: u64,
    max_traces: usize,
    entries: FastMap<TraceId, Entry>,
    /// A continuation (a trace linking to a waiting trace, or to one of its continuations)
    /// → the waiting trace, so its own late spans and further links find the event.
    aliases: FastMap<TraceId, TraceId>,
    /// (due, trace) for every entry, in the order they were added. Every entry waits the
    /// same `settle_ms`, so this is due order too (a clock stepping back only delays the
    /// entries added after the step, by at most the step).
    due: VecDeque<(u64, TraceId)>,
    /// Traces recorded before their settle time because `max_traces` were waiting.
    pub evicted: u64,
    /// Spans folded in after their trace's release: late spans of the same trace, and spans
    /// of linked continuations.
    pub late_spans: u64,
    pub linked_spans: u64,
}

impl Settling {
    pub fn new(settle_ms: u64, max_traces: usize) -> Self {
        Self {
            settle_ms,
            max_traces: max_traces.max(1),
            entries: FastMap::default(),
            aliases: FastMap::default(),
            due: VecDeque::new(),
            evicted: 0,
            late_spans: 0,
            linked_spans: 0,
        }
    }

    /// How long events wait after their trace's release.
    pub fn settle_ms(&self) -> u64 {
        self.settle_ms
    }

    /// Traces waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes `events` of `trace` wait until `now_ms + settle`. Returns the events that must
    /// be recorded now because the oldest waiting trace had to make room.
    pub fn add(&mut self, trace: TraceId, events: Vec<Waiting>, now_ms: u64) -> Vec<Waiting> {
        if let Some(e) = self.entries.get_mut(&trace) {
            e.events.extend(events);
            return Vec::new();
        }
        let mut evicted = Vec::new();
        while self.entries.len() >= self.max_traces {
            let Some((_, oldest)) = self.due.pop_front() else {
                break;
            };
            if let Some(e) = self.remove(&oldest) {
                self.evicted += 1;
                evicted.extend(e);
            }
        }
        let due_ms = now_ms + self.settle_ms;
        self.entries.insert(
            trace,
            Entry {
                due_ms,
                events,
                continuations: Vec::new(),
            },
        );
        self.due.push_back((due_ms, trace));
        evicted
    }

    /// The waiting trace `trace` belongs to: itself, or the trace it continues.
    pub fn origin_of(&self, trace: &TraceId) -> Option<TraceId> {
        if self.entries.contains_key(trace) {
            return Some(*trace);
        }
        self.aliases.get(trace).copied()
    }

    /// The events waiting for `origin`, to fold spans into.
    pub fn events_mut(&mut self, origin: &TraceId) -> Option<&mut Vec<Waiting>> {
        self.entries.get_mut(origin).map(|e| &mut e.events)
    }

    /// Records that `continuation` continues the waiting trace `origin`.
    pub fn alias(&mut self, continuation: TraceId, origin: TraceId) {
        if continuation == origin {
            return;
        }
        if let Some(e) = self.entries.get_mut(&origin) {
            e.continuations.push(continuation);
            self.aliases.insert(continuation, origin);
        }
    }

    /// The events whose settle time has come.
    pub fn due(&mut self, now_ms: u64) -> Vec<Waiting> {
        let mut out = Vec::new();
        while let Some(&(due, trace)) = self.due.front() {
            if due > now_ms {
                break;
            }
            self.due.pop_front();
            if self.entries.get(&trace).is_some_and(|e| e.due_ms == due)
                && let Some(e) = self.remove(&trace)
            {
                out.extend(e);
            }
        }
        out
    }

    /// Every waiting event (shutdown).
    pub fn drain(&mut self) -> Vec<Waiting> {
        self.due.clear();
        self.aliases.clear();
        self.entries.drain().flat_map(|(_, e)| e.events).collect()
    }

    fn remove(&mut self, trace: &TraceId) -> Option<Vec<Waiting>> {
        let e = self.entries.remove(trace)?;
        for c in &e.continuations {
            self.aliases.remove(c);
        }
        Some(e.events)
    }
}
