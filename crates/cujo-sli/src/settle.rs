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

/// The events of one waiting trace.
///
/// On their own allocation rather than inline in the queue: measured with cachegrind, an
/// inline event made every queue entry three cache lines, written and read a minute apart,
/// while the allocator hands the block freed by the entry that settled to the next one.
pub type Events = Vec<Waiting>;

struct Entry {
    trace: TraceId,
    due_ms: u64,
    events: Events,
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

    /// Makes `events` of `trace` wait until `now_ms + settle`. Events that must be recorded
    /// now, because the oldest waiting trace had to make room, go to `evicted`.
    pub fn add(
        &mut self,
        trace: TraceId,
        events: Events,
        now_ms: u64,
        mut evicted: impl FnMut(Waiting),
    ) {
        if let Some(e) = self.entry_mut(&trace) {
            e.events.extend(events);
            return;
        }
        while self.queue.len() >= self.max_traces {
            let Some(e) = self.pop_front() else { break };
            self.evicted += 1;
            e.into_iter().for_each(&mut evicted);
        }
        self.index
            .insert(trace, self.front + self.queue.len() as u64);
        self.queue.push_back(Entry {
            trace,
            due_ms: now_ms + self.settle_ms,
            events,
            continuations: Vec::new(),
        });
    }

    /// The waiting trace `trace` belongs to: itself, or the trace it continues.
    pub fn origin_of(&self, trace: &TraceId) -> Option<TraceId> {
        if self.index.contains_key(trace) {
            return Some(*trace);
        }
        self.aliases.get(trace).copied()
    }

    /// The events waiting for `origin`, to fold spans into.
    pub fn events_mut(&mut self, origin: &TraceId) -> Option<&mut Events> {
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

    /// Hands the events whose settle time has come to `settled`, oldest first.
    pub fn due(&mut self, now_ms: u64, mut settled: impl FnMut(Waiting)) {
        while self.queue.front().is_some_and(|e| e.due_ms <= now_ms) {
            if let Some(e) = self.pop_front() {
                e.into_iter().for_each(&mut settled);
            }
        }
    }

    /// Hands every waiting event to `settled`, oldest first (shutdown).
    pub fn drain(&mut self, settled: impl FnMut(Waiting)) {
        self.index.clear();
        self.aliases.clear();
        self.front += self.queue.len() as u64;
        self.queue
            .drain(..)
            .flat_map(|e| e.events)
            .for_each(settled);
    }

    /// Takes the oldest entry out, with its index and aliases.
    fn pop_front(&mut self) -> Option<Events> {
        let e = self.queue.pop_front()?;
        self.front += 1;
        for c in &e.continuations {
            self.aliases.remove(c);
        }
        self.index.remove(&e.trace);
        Some(e.events)
    }

    /// Entries in the trace map.
    #[cfg(test)]
    fn index_len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(id: u8, n: usize) -> Events {
        (0..n).map(|i| (i, PendingEvent::empty([id; 16]))).collect()
    }

    /// The first byte of the trace id of each event `f` hands out.
    fn ids(f: impl FnOnce(&mut dyn FnMut(Waiting))) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut |(_, e)| out.push(e.trace_id[0]));
        out
    }

    fn add(s: &mut Settling, id: u8, n: usize, now_ms: u64) -> Vec<u8> {
        ids(|f| s.add([id; 16], events(id, n), now_ms, f))
    }

    #[test]
    fn entries_settle_in_order_and_the_oldest_makes_room() {
        let mut s = Settling::new(1_000, 3);
        assert!(add(&mut s, 1, 1, 0).is_empty());
        assert!(add(&mut s, 2, 2, 10).is_empty());
        // More events of a waiting trace join its entry.
        assert!(add(&mut s, 1, 1, 20).is_empty());
        assert!(add(&mut s, 3, 1, 30).is_empty());
        assert_eq!(s.len(), 3);
        // Full: trace 1, the oldest, is recorded early with both its events.
        assert_eq!(add(&mut s, 4, 1, 40), vec![1, 1]);
        assert_eq!(s.evicted, 1);
        assert_eq!(s.origin_of(&[1; 16]), None);
        // Later entries are still found after the front moved.
        assert_eq!(s.events_mut(&[3; 16]).map(|e| e.len()), Some(1));
        assert!(ids(|f| s.due(1_009, f)).is_empty());
        assert_eq!(ids(|f| s.due(1_030, f)), vec![2, 2, 3]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.origin_of(&[4; 16]), Some([4; 16]));
        assert_eq!(ids(|f| s.drain(f)), vec![4]);
        assert!(s.is_empty() && s.origin_of(&[4; 16]).is_none());
        // Usable again after a drain.
        assert!(add(&mut s, 5, 1, 2_000).is_empty());
        assert_eq!(s.events_mut(&[5; 16]).map(|e| e.len()), Some(1));
    }

    #[test]
    fn continuations_find_their_origin_until_it_settles() {
        let mut s = Settling::new(1_000, 10);
        add(&mut s, 1, 1, 0);
        s.alias([7; 16], [1; 16]);
        s.alias([8; 16], [7; 16]); // not waiting itself: ignored
        assert_eq!(s.origin_of(&[7; 16]), Some([1; 16]));
        assert_eq!(s.origin_of(&[8; 16]), None);
        assert_eq!(ids(|f| s.due(1_000, f)), vec![1]);
        assert_eq!(s.origin_of(&[7; 16]), None, "alias removed with its origin");
    }

    #[test]
    fn settled_traces_are_forgotten_and_a_trace_can_wait_again() {
        let mut s = Settling::new(1_000, 100_000);
        let id = |n: u32| {
            let mut t = [0u8; 16];
            t[..4].copy_from_slice(&n.to_le_bytes());
            t
        };
        let one = |n: u32| -> Events { vec![(0, PendingEvent::empty(id(n)))] };
        let mut settled = 0;
        for n in 0..20_000u32 {
            let now = u64::from(n);
            s.add(id(n), one(n), now, |_| panic!("nothing is evicted"));
            s.due(now, |_| settled += 1);
            assert_eq!(s.index_len(), s.len(), "settled traces leave the map");
        }
        assert_eq!(settled, 20_000 - 1_000, "each waited 1,000 ms");
        assert_eq!(s.len(), 1_000);
        // Settled: not found, nothing to fold into.
        for n in [0, 18_000, 18_999] {
            assert_eq!(s.origin_of(&id(n)), None, "trace {n} settled");
            assert!(s.events_mut(&id(n)).is_none());
        }
        assert_eq!(s.origin_of(&id(19_000)), Some(id(19_000)));
        // A settled trace released again (another part of it) waits anew.
        s.add(id(18_999), one(18_999), 20_000, |_| {
            panic!("nothing is evicted")
        });
        assert_eq!(s.origin_of(&id(18_999)), Some(id(18_999)));
        assert_eq!(s.events_mut(&id(18_999)).map(|e| e.len()), Some(1));
        let mut order = Vec::new();
        s.drain(|(_, e)| {
            order.push(u32::from_le_bytes([
                e.trace_id[0],
                e.trace_id[1],
                e.trace_id[2],
                e.trace_id[3],
            ]))
        });
        assert_eq!(order.len(), 1_001);
        assert_eq!(order.last(), Some(&18_999), "the re-added trace waits last");
    }
}
