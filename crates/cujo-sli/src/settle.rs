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
    trace: TraceId,
    due_ms: u64,
    events: Vec<Waiting>,
    /// Continuation traces folded into this one, removed from the alias map when it settles.
    continuations: Vec<TraceId>,
}

/// The traces whose events wait to settle.
///
/// Every entry waits the same `settle_ms`, so entries settle in the order they were added:
/// they sit in a queue, oldest first (settling and eviction take from the front, reading
/// memory in order), and a map finds a trace's entry by its sequence number. A clock
/// stepping back only delays the entries added after the step, by at most the step.
pub struct Settling {
    settle_ms: u64,
    max_traces: usize,
    queue: VecDeque<Entry>,
    /// Sequence number of `queue[0]`; entry `i` has number `front + i`.
    front: u64,
    /// Trace → sequence number of its entry.
    index: FastMap<TraceId, u64>,
    /// A continuation (a trace linking to a waiting trace, or to one of its continuations)
    /// → the waiting trace, so its own late spans and further links find the event.
    aliases: FastMap<TraceId, TraceId>,
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
            queue: VecDeque::new(),
            front: 0,
            index: FastMap::default(),
            aliases: FastMap::default(),
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
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn entry_mut(&mut self, trace: &TraceId) -> Option<&mut Entry> {
        let seq = *self.index.get(trace)?;
        let i = usize::try_from(seq.checked_sub(self.front)?).ok()?;
        self.queue.get_mut(i)
    }

    /// Makes `events` of `trace` wait until `now_ms + settle`. Returns the events that must
    /// be recorded now because the oldest waiting trace had to make room.
    pub fn add(&mut self, trace: TraceId, events: Vec<Waiting>, now_ms: u64) -> Vec<Waiting> {
        if let Some(e) = self.entry_mut(&trace) {
            e.events.extend(events);
            return Vec::new();
        }
        let mut evicted = Vec::new();
        while self.queue.len() >= self.max_traces {
            let Some(e) = self.pop_front() else { break };
            self.evicted += 1;
            // Usually one trace makes room: take its events as they are.
            if evicted.is_empty() {
                evicted = e;
            } else {
                evicted.extend(e);
            }
        }
        self.index
            .insert(trace, self.front + self.queue.len() as u64);
        self.queue.push_back(Entry {
            trace,
            due_ms: now_ms + self.settle_ms,
            events,
            continuations: Vec::new(),
        });
        evicted
    }

    /// The waiting trace `trace` belongs to: itself, or the trace it continues.
    pub fn origin_of(&self, trace: &TraceId) -> Option<TraceId> {
        if self.index.contains_key(trace) {
            return Some(*trace);
        }
        self.aliases.get(trace).copied()
    }

    /// The events waiting for `origin`, to fold spans into.
    pub fn events_mut(&mut self, origin: &TraceId) -> Option<&mut Vec<Waiting>> {
        self.entry_mut(origin).map(|e| &mut e.events)
    }

    /// Records that `continuation` continues the waiting trace `origin`.
    pub fn alias(&mut self, continuation: TraceId, origin: TraceId) {
        if continuation == origin {
            return;
        }
        if let Some(e) = self.entry_mut(&origin) {
            e.continuations.push(continuation);
            self.aliases.insert(continuation, origin);
        }
    }

    /// The events whose settle time has come.
    pub fn due(&mut self, now_ms: u64) -> Vec<Waiting> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|e| e.due_ms <= now_ms) {
            if let Some(e) = self.pop_front() {
                out.extend(e);
            }
        }
        out
    }

    /// Every waiting event (shutdown).
    pub fn drain(&mut self) -> Vec<Waiting> {
        self.index.clear();
        self.aliases.clear();
        self.front += self.queue.len() as u64;
        self.queue.drain(..).flat_map(|e| e.events).collect()
    }

    /// Takes the oldest entry out, with its index and aliases.
    fn pop_front(&mut self) -> Option<Vec<Waiting>> {
        let e = self.queue.pop_front()?;
        self.front += 1;
        self.index.remove(&e.trace);
        for c in &e.continuations {
            self.aliases.remove(c);
        }
        Some(e.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(id: u8, n: usize) -> Vec<Waiting> {
        (0..n).map(|i| (i, PendingEvent::empty([id; 16]))).collect()
    }

    fn ids(events: &[Waiting]) -> Vec<u8> {
        events.iter().map(|(_, e)| e.trace_id[0]).collect()
    }

    #[test]
    fn entries_settle_in_order_and_the_oldest_makes_room() {
        let mut s = Settling::new(1_000, 3);
        assert!(s.add([1; 16], events(1, 1), 0).is_empty());
        assert!(s.add([2; 16], events(2, 2), 10).is_empty());
        // More events of a waiting trace join its entry.
        assert!(s.add([1; 16], events(1, 1), 20).is_empty());
        assert!(s.add([3; 16], events(3, 1), 30).is_empty());
        assert_eq!(s.len(), 3);
        // Full: trace 1, the oldest, is recorded early with both its events.
        assert_eq!(ids(&s.add([4; 16], events(4, 1), 40)), vec![1, 1]);
        assert_eq!(s.evicted, 1);
        assert_eq!(s.origin_of(&[1; 16]), None);
        // Later entries are still found after the front moved.
        assert_eq!(s.events_mut(&[3; 16]).map(|e| e.len()), Some(1));
        assert!(s.due(1_009).is_empty());
        assert_eq!(ids(&s.due(1_030)), vec![2, 2, 3]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.origin_of(&[4; 16]), Some([4; 16]));
        assert_eq!(ids(&s.drain()), vec![4]);
        assert!(s.is_empty() && s.origin_of(&[4; 16]).is_none());
        // Usable again after a drain.
        assert!(s.add([5; 16], events(5, 1), 2_000).is_empty());
        assert_eq!(s.events_mut(&[5; 16]).map(|e| e.len()), Some(1));
    }

    #[test]
    fn continuations_find_their_origin_until_it_settles() {
        let mut s = Settling::new(1_000, 10);
        s.add([1; 16], events(1, 1), 0);
        s.alias([7; 16], [1; 16]);
        s.alias([8; 16], [7; 16]); // not waiting itself: ignored
        assert_eq!(s.origin_of(&[7; 16]), Some([1; 16]));
        assert_eq!(s.origin_of(&[8; 16]), None);
        assert_eq!(ids(&s.due(1_000)), vec![1]);
        assert_eq!(s.origin_of(&[7; 16]), None, "alias removed with its origin");
    }
}
