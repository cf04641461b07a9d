//! Events that wait to settle: a CUJ measured `end_to_end` or `{from, to}` does not know its
//! latency when the assembler releases the trace — a queue consumer may still run, in the
//! same trace (its spans arrive late) or in a new trace that links back. Such events wait
//! here for `settle` after the release; late spans and linked continuations are folded in
//! ([`crate::cuj::Cuj::fold`]) and the event is recorded when the time is up.
//!
//! Bounded: at most `max_traces` traces wait, and the engine keeps their memory
//! ([`Settling::bytes`]) within its byte limit; past either, the oldest is recorded early
//! with what it has (counted as evicted, by reason), never dropped.

use std::collections::VecDeque;

use cujo_wire::alloc::vec_bytes;

use crate::cuj::PendingEvent;
use crate::series::GONE;
use crate::table::CountedMap;

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

impl Entry {
    /// Heap bytes of the entry: its events with their dimension values, its continuations.
    fn heap_bytes(&self) -> usize {
        events_heap(&self.events) + vec_bytes::<TraceId>(self.continuations.capacity())
    }
}

fn events_heap(events: &Events) -> usize {
    vec_bytes::<Waiting>(events.capacity())
        + events.iter().map(|(_, e)| e.heap_bytes()).sum::<usize>()
}

/// What a vector of `T` at capacity `cap` adds by growing to hold `len` elements.
fn vec_growth<T>(cap: usize, len: usize) -> usize {
    if len <= cap {
        return 0;
    }
    vec_bytes::<T>(len.max(cap * 2).max(4)) - vec_bytes::<T>(cap)
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
    index: CountedMap<TraceId, u64>,
    /// A continuation (a trace linking to a waiting trace, or to one of its continuations)
    /// → the waiting trace, so its own late spans and further links find the event.
    aliases: CountedMap<TraceId, TraceId>,
    /// Heap bytes of the waiting entries ([`Entry::heap_bytes`]), kept as they change so
    /// [`Settling::bytes`] need not walk the queue.
    entry_heap: usize,
    /// Traces recorded before their settle time, by [`crate::limits::EvictReason`].
    pub evicted: [u64; 2],
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
            index: CountedMap::default(),
            aliases: CountedMap::default(),
            entry_heap: 0,
            evicted: [0; 2],
            late_spans: 0,
            linked_spans: 0,
        }
    }

    /// How long events wait after their trace's release.
    pub fn settle_ms(&self) -> u64 {
        self.settle_ms
    }

    /// How many traces may wait.
    pub fn max_traces(&self) -> usize {
        self.max_traces
    }

    /// Traces waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether `max_traces` traces wait: a new one must make the oldest settle first.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.max_traces
    }

    fn entry(&self, trace: &TraceId) -> Option<&Entry> {
        let seq = *self.index.get(trace)?;
        let i = usize::try_from(seq.checked_sub(self.front)?).ok()?;
        self.queue.get(i)
    }

    fn entry_mut(&mut self, trace: &TraceId) -> Option<&mut Entry> {
        let seq = *self.index.get(trace)?;
        let i = usize::try_from(seq.checked_sub(self.front)?).ok()?;
        self.queue.get_mut(i)
    }

    /// What [`Settling::join`] of `events` would add to [`Settling::bytes`]; `None` when
    /// `trace` does not wait.
    pub fn cost_of_join(&self, trace: &TraceId, events: &Events) -> Option<usize> {
        let e = self.entry(trace)?;
        let (cap, len) = (e.events.capacity(), e.events.len() + events.len());
        let dims: usize = events.iter().map(|(_, e)| e.heap_bytes()).sum();
        Some(vec_growth::<Waiting>(cap, len) + dims)
    }

    /// Adds `events` to those of `trace` if it waits (another part of the trace was
    /// released); else hands them back.
    pub fn join(&mut self, trace: &TraceId, events: Events) -> Option<Events> {
        let Some(e) = self.entry_mut(trace) else {
            return Some(events);
        };
        let before = events_heap(&e.events);
        e.events.extend(events);
        let after = events_heap(&e.events);
        self.entry_heap = self.entry_heap + after - before;
        None
    }

    /// What [`Settling::push`] of `events` would add to [`Settling::bytes`].
    pub fn cost_of_push(&mut self, events: &Events) -> usize {
        let queue = vec_growth::<Entry>(self.queue.capacity(), self.queue.len() + 1);
        queue + self.index.growth_for_new() + events_heap(events)
    }

    /// Makes `events` of `trace`, which does not wait yet ([`Settling::join`]), wait until
    /// `now_ms + settle`. The caller makes room first ([`Settling::is_full`],
    /// [`Settling::cost_of_push`]).
    pub fn push(&mut self, trace: TraceId, events: Events, now_ms: u64) {
        self.index
            .insert(trace, self.front + self.queue.len() as u64);
        let entry = Entry {
            trace,
            due_ms: now_ms + self.settle_ms,
            events,
            continuations: Vec::new(),
        };
        self.entry_heap += entry.heap_bytes();
        self.queue.push_back(entry);
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

    /// What [`Settling::alias`] would add to [`Settling::bytes`].
    pub fn cost_of_alias(&mut self, continuation: &TraceId, origin: &TraceId) -> usize {
        if continuation == origin {
            return 0;
        }
        let Some(e) = self.entry_mut(origin) else {
            return 0;
        };
        let list = vec_growth::<TraceId>(e.continuations.capacity(), e.continuations.len() + 1);
        list + self.aliases.growth_for_new()
    }

    /// Records that `continuation` continues the waiting trace `origin`.
    pub fn alias(&mut self, continuation: TraceId, origin: TraceId) {
        if continuation == origin {
            return;
        }
        if let Some(e) = self.entry_mut(&origin) {
            let before = vec_bytes::<TraceId>(e.continuations.capacity());
            e.continuations.push(continuation);
            let after = vec_bytes::<TraceId>(e.continuations.capacity());
            self.entry_heap = self.entry_heap + after - before;
            self.aliases.insert(continuation, origin);
        }
    }

    /// The events of the oldest waiting trace, if its settle time has come.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Events> {
        self.pop_due_trace(now_ms).map(|(_, events)| events)
    }

    /// [`Settling::pop_due`] with the trace the events are of.
    pub fn pop_due_trace(&mut self, now_ms: u64) -> Option<(TraceId, Events)> {
        if self.queue.front()?.due_ms > now_ms {
            return None;
        }
        self.pop_oldest_trace()
    }

    /// Takes the oldest waiting trace out, with its index and aliases; its events.
    pub fn pop_oldest(&mut self) -> Option<Events> {
        self.pop_oldest_trace().map(|(_, events)| events)
    }

    /// [`Settling::pop_oldest`] with the trace the events are of.
    pub fn pop_oldest_trace(&mut self) -> Option<(TraceId, Events)> {
        let e = self.queue.pop_front()?;
        self.front += 1;
        for c in &e.continuations {
            self.aliases.remove(c);
        }
        self.index.remove(&e.trace);
        self.entry_heap -= e.heap_bytes();
        Some((e.trace, e.events))
    }

    /// Points the waiting events of CUJ `cuj` at their series' new places, after the CUJ's
    /// idle series were removed (`places[old]` is the new place).
    pub(crate) fn move_series(&mut self, cuj: usize, places: &[usize]) {
        for entry in &mut self.queue {
            for (i, event) in &mut entry.events {
                if *i != cuj {
                    continue;
                }
                let Some(at) = event.series() else { continue };
                // A series with waiting events is never removed.
                if let Some(&to) = places.get(at as usize)
                    && to != GONE
                    && let Ok(to) = u32::try_from(to)
                {
                    event.set_series(to);
                }
            }
        }
    }

    /// Memory the waiting traces hold: the queue, the two maps, and each entry's events.
    pub fn bytes(&self) -> usize {
        vec_bytes::<Entry>(self.queue.capacity())
            + self.index.bytes()
            + self.aliases.bytes()
            + self.entry_heap
    }

    /// About what one waiting trace of one event costs, its share of the queue and the
    /// index included.
    pub fn trace_bytes() -> usize {
        2 * std::mem::size_of::<Entry>()
            + vec_bytes::<Waiting>(1)
            + 2 * (std::mem::size_of::<(TraceId, u64)>() + 1)
    }

    /// Gives back the queue's and the maps' memory once they are mostly empty (after a
    /// burst).
    pub fn shrink_if_sparse(&mut self) {
        let len = self.queue.len();
        if self.queue.capacity() > 64 && len <= self.queue.capacity() / 4 {
            self.queue.shrink_to(len * 2);
        }
        if self.index.slots_capacity() > 64 && len <= self.index.slots_capacity() / 4 {
            self.index.shrink_to(len * 2);
        }
        let aliases = self.aliases.len();
        if self.aliases.slots_capacity() > 64 && aliases <= self.aliases.slots_capacity() / 4 {
            self.aliases.shrink_to(aliases * 2);
        }
    }

    /// [`Settling::bytes`] counted again, entry by entry.
    #[cfg(test)]
    pub fn recount(&self) -> usize {
        vec_bytes::<Entry>(self.queue.capacity())
            + crate::table::table_bytes::<(TraceId, u64)>(self.index.slots_capacity())
            + crate::table::table_bytes::<(TraceId, TraceId)>(self.aliases.slots_capacity())
            + self.queue.iter().map(Entry::heap_bytes).sum::<usize>()
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

    /// The first byte of the trace id of each event.
    fn ids(events: impl IntoIterator<Item = Waiting>) -> Vec<u8> {
        events.into_iter().map(|(_, e)| e.trace_id[0]).collect()
    }

    /// Every event due at `now_ms`, oldest first.
    fn due(s: &mut Settling, now_ms: u64) -> Vec<u8> {
        std::iter::from_fn(|| s.pop_due(now_ms))
            .flat_map(ids)
            .collect()
    }

    /// Adds `n` events of trace `id`, to its entry if it waits; checks what it costs.
    fn add(s: &mut Settling, id: u8, n: usize, now_ms: u64) {
        let before = s.bytes();
        let cost = match s.cost_of_join(&[id; 16], &events(id, n)) {
            Some(cost) => {
                assert!(s.join(&[id; 16], events(id, n)).is_none(), "joined");
                cost
            }
            None => {
                let events = s.join(&[id; 16], events(id, n)).expect("not waiting");
                let cost = s.cost_of_push(&events);
                s.push([id; 16], events, now_ms);
                cost
            }
        };
        assert_eq!(
            s.bytes(),
            before + cost,
            "the cost of an add is what it adds"
        );
        assert_eq!(s.bytes(), s.recount());
    }

    #[test]
    fn entries_settle_in_order_and_the_oldest_makes_room() {
        let mut s = Settling::new(1_000, 3);
        add(&mut s, 1, 1, 0);
        add(&mut s, 2, 2, 10);
        // More events of a waiting trace join its entry.
        add(&mut s, 1, 1, 20);
        add(&mut s, 3, 1, 30);
        assert_eq!(s.len(), 3);
        // Full: trace 1, the oldest, makes room with both its events.
        assert!(s.is_full());
        assert_eq!(s.pop_oldest().map(ids), Some(vec![1, 1]));
        add(&mut s, 4, 1, 40);
        assert_eq!(s.origin_of(&[1; 16]), None);
        // Later entries are still found after the front moved.
        assert_eq!(s.events_mut(&[3; 16]).map(|e| e.len()), Some(1));
        assert!(due(&mut s, 1_009).is_empty());
        assert_eq!(due(&mut s, 1_030), vec![2, 2, 3]);
        assert_eq!(s.len(), 1);
        assert_eq!(s.origin_of(&[4; 16]), Some([4; 16]));
        assert_eq!(
            ids(std::iter::from_fn(|| s.pop_oldest()).flatten()),
            vec![4]
        );
        assert!(s.is_empty() && s.origin_of(&[4; 16]).is_none());
        assert_eq!(s.bytes(), s.recount());
        // Usable again once empty.
        add(&mut s, 5, 1, 2_000);
        assert_eq!(s.events_mut(&[5; 16]).map(|e| e.len()), Some(1));
    }

    #[test]
    fn continuations_find_their_origin_until_it_settles() {
        let mut s = Settling::new(1_000, 10);
        add(&mut s, 1, 1, 0);
        let before = s.bytes();
        let cost = s.cost_of_alias(&[7; 16], &[1; 16]);
        s.alias([7; 16], [1; 16]);
        assert_eq!(s.bytes(), before + cost);
        assert_eq!(s.cost_of_alias(&[8; 16], &[7; 16]), 0);
        s.alias([8; 16], [7; 16]); // not waiting itself: ignored
        assert_eq!(s.origin_of(&[7; 16]), Some([1; 16]));
        assert_eq!(s.origin_of(&[8; 16]), None);
        assert_eq!(s.bytes(), s.recount());
        assert_eq!(due(&mut s, 1_000), vec![1]);
        assert_eq!(s.origin_of(&[7; 16]), None, "alias removed with its origin");
        assert_eq!(s.bytes(), s.recount());
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
            assert!(!s.is_full());
            s.push(id(n), one(n), now);
            while s.pop_due(now).is_some() {
                settled += 1;
            }
            assert_eq!(s.index_len(), s.len(), "settled traces leave the map");
        }
        assert_eq!(settled, 20_000 - 1_000, "each waited 1,000 ms");
        assert_eq!(s.len(), 1_000);
        assert_eq!(s.bytes(), s.recount());
        // Settled: not found, nothing to fold into.
        for n in [0, 18_000, 18_999] {
            assert_eq!(s.origin_of(&id(n)), None, "trace {n} settled");
            assert!(s.events_mut(&id(n)).is_none());
        }
        assert_eq!(s.origin_of(&id(19_000)), Some(id(19_000)));
        // A settled trace released again (another part of it) waits anew.
        assert!(
            s.join(&id(18_999), one(18_999)).is_some(),
            "not waiting any more"
        );
        s.push(id(18_999), one(18_999), 20_000);
        assert_eq!(s.origin_of(&id(18_999)), Some(id(18_999)));
        assert_eq!(s.events_mut(&id(18_999)).map(|e| e.len()), Some(1));
        let mut order = Vec::new();
        while let Some(events) = s.pop_oldest() {
            for (_, e) in events {
                order.push(u32::from_le_bytes([
                    e.trace_id[0],
                    e.trace_id[1],
                    e.trace_id[2],
                    e.trace_id[3],
                ]));
            }
        }
        assert_eq!(order.len(), 1_001);
        assert_eq!(order.last(), Some(&18_999), "the re-added trace waits last");
        // Emptied after a burst: the queue and the map give their memory back.
        let held = s.bytes();
        s.shrink_if_sparse();
        assert!(s.bytes() < held / 10, "{} of {held}", s.bytes());
        assert_eq!(s.bytes(), s.recount());
    }
}
