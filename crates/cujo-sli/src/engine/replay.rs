//! Each event counted once when the write-ahead log replays (`wal:` with `slo.state_file`).
//!
//! After a crash, cujo restores the windows from the last saved state file and replays
//! every request the log still holds. A trace whose events were counted before that save
//! and whose requests are still in the log would be counted a second time. So:
//! - every event carries a key that survives a restart ([`event_key`]: a fixed hash of the
//!   trace id as sent, the root's span id and the CUJ's name);
//! - the engine holds the log segments of an event's spans ([`ReplayTag::pins`]) from the
//!   moment it sees the trace until a state file that counts the event is on disk, so an
//!   event is either in the restored windows or replayed whole, never neither;
//! - a save lists the keys of the events it counts whose root's segment still lives (the
//!   only segment a replay can make the event again from), and the keys it restored while
//!   the replayed segments live;
//! - at restore the keys fill a [`ReplayGuard`] that the span path asks before handing an
//!   event over ([`ReplayGuard::skips`]); once every replayed segment is gone, nothing can
//!   be replayed again and the guard is emptied.
//!
//! What this costs: with the guard off (no log, or no state file) nothing. With it on, 24
//! bytes and a segment held per event until the next save (saves come at least every
//! [`MAX_UNSAVED`]), 8 bytes per event whose root's segment lives after it, and one set
//! lookup per event while a replay's segments live. At most [`MAX_KEYS`] keys are kept;
//! past that the oldest are dropped (counted: [`ReplayGuard::dropped`]), and an event of
//! theirs replayed after a second crash would count twice.

use std::any::Any;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use cujo_wire::Pin;

use super::FastMap;
use crate::settle::TraceId;

/// How many event keys a state file carries at most (8 MiB of them).
pub const MAX_KEYS: usize = 1 << 20;

/// How long counted events may hold their log segments before a save must come, however
/// long `slo.save_interval` is.
pub const MAX_UNSAVED: Duration = Duration::from_secs(5);

type WeakPin = Weak<dyn Any + Send + Sync>;

/// The stable key of a trace: its id as sent and its root's span id, hashed with a fixed
/// function (the key must be the same after a restart and an upgrade).
pub fn trace_key(sent_trace_id: &[u8; 16], root_span_id: &[u8; 8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in sent_trace_id.iter().chain(root_span_id) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// The stable hash of a CUJ's name (its index may change with the config).
pub fn name_key(name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// The key of one event: a trace's key ([`trace_key`]) and its CUJ's ([`name_key`]).
pub fn event_key(trace: u64, cuj: u64) -> u64 {
    mix(trace ^ cuj.rotate_left(29))
}

/// A finaliser (splitmix64's): every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a trace handed to the engine carries when replays are guarded: its key and the
/// log segments its spans are in, the root's first.
#[derive(Clone)]
pub struct ReplayTag {
    pub trace: u64,
    pub pins: Arc<[Pin]>,
}

impl ReplayTag {
    fn merge(&mut self, other: &ReplayTag) {
        if other
            .pins
            .iter()
            .all(|p| self.pins.iter().any(|q| Arc::ptr_eq(p, q)))
        {
            return;
        }
        let mut pins: Vec<Pin> = self.pins.to_vec();
        for p in other.pins.iter() {
            if !pins.iter().any(|q| Arc::ptr_eq(p, q)) {
                pins.push(p.clone());
            }
        }
        self.pins = pins.into();
    }
}

impl std::fmt::Debug for ReplayTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayTag")
            .field("trace", &self.trace)
            .field("pins", &self.pins.len())
            .finish()
    }
}

impl PartialEq for ReplayTag {
    fn eq(&self, other: &Self) -> bool {
        self.trace == other.trace && Arc::ptr_eq(&self.pins, &other.pins)
    }
}

/// The keys of events a restored state file counted, asked by the span path while the
/// segments they could be replayed from live.
#[derive(Default)]
pub struct ReplayGuard {
    active: AtomicBool,
    keys: RwLock<HashSet<u64, foldhash::fast::RandomState>>,
    skipped: AtomicU64,
    dropped: AtomicU64,
}

impl ReplayGuard {
    /// Whether the event of key `key` was counted before the restart (and is skipped now).
    pub fn skips(&self, key: u64) -> bool {
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        let hit = self.keys.read().is_ok_and(|k| k.contains(&key));
        if hit {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Whether some restored key may still be asked for.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Replayed events not counted again since start.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Keys left out of a state file because [`MAX_KEYS`] were kept, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn fill(&self, keys: &[u64]) {
        if let Ok(mut set) = self.keys.write() {
            set.clear();
            set.extend(keys.iter().copied());
            self.active.store(!set.is_empty(), Ordering::Release);
        }
    }

    fn clear(&self) {
        self.active.store(false, Ordering::Release);
        if let Ok(mut set) = self.keys.write() {
            *set = HashSet::default();
        }
    }
}

/// Which events a save counts, as [`SliEngine::save_state_marked`] hands it back: handed to
/// [`SliEngine::state_saved`] once the file is on disk.
///
/// [`SliEngine::save_state_marked`]: super::SliEngine::save_state_marked
/// [`SliEngine::state_saved`]: super::SliEngine::state_saved
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaveMark(usize);

/// The engine's side: events counted and not yet saved (holding their segments), events
/// saved (their root's segment watched), and the restored keys.
pub(super) struct Ledger {
    guard: Arc<ReplayGuard>,
    /// Events finished since the last save began, with every segment of their trace.
    unsaved: Vec<(u64, Arc<[Pin]>)>,
    /// Saved events by their root's segment, oldest first: listed while it lives.
    saved: Vec<(WeakPin, Vec<u64>)>,
    /// Keys restored at start: listed while the replayed segments live.
    restored: Vec<u64>,
    /// The segments the replay read from; `None` until the replay told.
    replayed: Option<Vec<WeakPin>>,
    /// Tags of traces whose events wait to settle, by the settle key.
    settling: FastMap<TraceId, ReplayTag>,
}

impl Ledger {
    pub(super) fn new() -> Self {
        Self {
            guard: Arc::default(),
            unsaved: Vec::new(),
            saved: Vec::new(),
            restored: Vec::new(),
            replayed: None,
            settling: FastMap::default(),
        }
    }

    pub(super) fn guard(&self) -> Arc<ReplayGuard> {
        self.guard.clone()
    }

    /// An event of key `key` was counted in the windows.
    pub(super) fn counted(&mut self, key: u64, pins: &Arc<[Pin]>) {
        if !pins.is_empty() {
            self.unsaved.push((key, pins.clone()));
        }
    }

    /// Events of the trace `trace` wait to settle; its tag waits with them.
    pub(super) fn settling(&mut self, trace: TraceId, tag: ReplayTag) {
        match self.settling.get_mut(&trace) {
            Some(t) => t.merge(&tag),
            None => {
                self.settling.insert(trace, tag);
            }
        }
    }

    /// The tag of a trace whose settling events are being finished.
    pub(super) fn settled(&mut self, trace: &TraceId) -> Option<ReplayTag> {
        self.settling.remove(trace)
    }

    /// The keys a save lists now, and the mark of the events it counts.
    pub(super) fn keys_to_save(&mut self) -> (Vec<u64>, SaveMark) {
        self.saved.retain(|(w, _)| w.strong_count() > 0);
        let mut total = self.restored.len()
            + self.unsaved.len()
            + self.saved.iter().map(|(_, k)| k.len()).sum::<usize>();
        while total > MAX_KEYS && !self.saved.is_empty() {
            let (_, keys) = self.saved.remove(0);
            total -= keys.len();
            self.guard
                .dropped
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
        }
        if total > MAX_KEYS && !self.restored.is_empty() {
            let cut = (total - MAX_KEYS).min(self.restored.len());
            self.restored.drain(..cut);
            self.guard.dropped.fetch_add(cut as u64, Ordering::Relaxed);
        }
        let mut keys = Vec::with_capacity(total.min(MAX_KEYS));
        keys.extend_from_slice(&self.restored);
        for (_, k) in &self.saved {
            keys.extend_from_slice(k);
        }
        keys.extend(self.unsaved.iter().map(|(k, _)| *k));
        keys.truncate(MAX_KEYS);
        (keys, SaveMark(self.unsaved.len()))
    }

    /// The save of `mark` is on disk: its events' segments are let go, their roots' watched.
    pub(super) fn saved(&mut self, mark: SaveMark) {
        let n = mark.0.min(self.unsaved.len());
        for (key, pins) in self.unsaved.drain(..n) {
            let Some(root) = pins.first() else { continue };
            match self.saved.last_mut() {
                Some((w, keys)) if std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(root)) => {
                    keys.push(key)
                }
                _ => self.saved.push((Arc::downgrade(root), vec![key])),
            }
        }
    }

    /// Keys read from the state file at start.
    pub(super) fn restore(&mut self, keys: Vec<u64>) {
        self.guard.fill(&keys);
        self.restored = keys;
    }

    /// The segments the replay read: once they are all gone, no restored key can be
    /// replayed again.
    pub(super) fn replayed(&mut self, segments: Vec<WeakPin>) {
        self.replayed = Some(segments);
        self.check_replayed();
    }

    /// Empties the guard once the replayed segments are gone (called on each tick).
    pub(super) fn check_replayed(&mut self) {
        let Some(segments) = &mut self.replayed else {
            return;
        };
        segments.retain(|w| w.strong_count() > 0);
        if segments.is_empty() && (self.guard.is_active() || !self.restored.is_empty()) {
            self.guard.clear();
            self.restored = Vec::new();
        }
    }

    /// Whether events hold segments that only a save lets go.
    pub(super) fn has_unsaved(&self) -> bool {
        !self.unsaved.is_empty()
    }

    /// Bytes held (for the engine's memory count).
    pub(super) fn bytes(&self) -> usize {
        use cujo_wire::alloc::vec_bytes;
        vec_bytes::<(u64, Arc<[Pin]>)>(self.unsaved.capacity())
            + vec_bytes::<(WeakPin, Vec<u64>)>(self.saved.capacity())
            + self
                .saved
                .iter()
                .map(|(_, k)| vec_bytes::<u64>(k.capacity()))
                .sum::<usize>()
            + vec_bytes::<u64>(self.restored.capacity())
            + self.settling.capacity() * (std::mem::size_of::<(TraceId, ReplayTag)>() + 1)
            // The guard's set.
            + self.restored.len() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> Pin {
        Arc::new(0u8)
    }

    #[test]
    fn keys_are_fixed_functions_of_what_was_sent() {
        let a = trace_key(&[1; 16], &[2; 8]);
        assert_eq!(a, trace_key(&[1; 16], &[2; 8]));
        assert_ne!(a, trace_key(&[1; 16], &[3; 8]));
        // Written down: a change of the function would double count after an upgrade.
        assert_eq!(name_key("checkout"), name_key("checkout"));
        assert_ne!(
            event_key(a, name_key("checkout")),
            event_key(a, name_key("search"))
        );
        assert_eq!(trace_key(&[0; 16], &[0; 8]), 0x6d68_8654_e983_4407);
    }

    #[test]
    fn a_saved_event_is_listed_while_its_root_segment_lives() {
        let mut l = Ledger::new();
        let (seg1, seg2) = (pin(), pin());
        let both: Arc<[Pin]> = vec![seg1.clone(), seg2.clone()].into();
        l.counted(7, &both);
        let (keys, mark) = l.keys_to_save();
        assert_eq!(keys, vec![7]);
        // Until the save is on disk, the event holds both segments.
        assert_eq!(Arc::strong_count(&seg2), 2);
        l.saved(mark);
        drop(both);
        assert_eq!(Arc::strong_count(&seg2), 1, "the save let the segments go");
        assert_eq!(l.keys_to_save().0, vec![7]);
        drop(seg1);
        assert!(l.keys_to_save().0.is_empty(), "its root's segment is gone");
    }

    #[test]
    fn events_counted_after_a_save_began_stay_unsaved() {
        let mut l = Ledger::new();
        let seg: Arc<[Pin]> = vec![pin()].into();
        l.counted(1, &seg);
        let (_, mark) = l.keys_to_save();
        l.counted(2, &seg);
        l.saved(mark);
        assert!(l.has_unsaved());
        let (keys, _) = l.keys_to_save();
        assert_eq!(keys, vec![1, 2]);
    }

    #[test]
    fn restored_keys_guard_until_the_replayed_segments_are_gone() {
        let mut l = Ledger::new();
        l.restore(vec![5, 6]);
        let g = l.guard();
        assert!(g.skips(5) && !g.skips(9));
        assert_eq!(g.skipped(), 1);
        let seg = pin();
        l.replayed(vec![Arc::downgrade(&seg)]);
        assert!(g.is_active());
        assert_eq!(l.keys_to_save().0, vec![5, 6], "carried into the next save");
        drop(seg);
        l.check_replayed();
        assert!(!g.is_active() && !g.skips(5));
        assert!(l.keys_to_save().0.is_empty());
    }

    #[test]
    fn nothing_replayed_empties_the_guard_at_once() {
        let mut l = Ledger::new();
        l.restore(vec![5]);
        l.replayed(Vec::new());
        assert!(!l.guard().skips(5));
    }

    #[test]
    fn settling_tags_merge_their_segments() {
        let mut l = Ledger::new();
        let (a, b) = (pin(), pin());
        let id = [1u8; 16];
        l.settling(
            id,
            ReplayTag {
                trace: 3,
                pins: vec![a.clone()].into(),
            },
        );
        l.settling(
            id,
            ReplayTag {
                trace: 3,
                pins: vec![b.clone(), a.clone()].into(),
            },
        );
        let tag = l.settled(&id).expect("waiting");
        assert_eq!(tag.pins.len(), 2);
        assert!(
            Arc::ptr_eq(&tag.pins[0], &a),
            "the root's segment stays first"
        );
        assert!(l.settled(&id).is_none());
    }

    /// A trace of the test CUJ, tagged with `pins`, matched as the span path does.
    fn tagged(e: &super::super::SliEngine, id: u8, pins: &[Pin]) -> super::super::MatchedTrace {
        use super::super::testkit::Span;
        let spans = [Span {
            tier: "gold".into(),
            error: false,
        }];
        let facts = crate::cuj::TraceFacts {
            trace_id: [id; 16],
            root: &spans[0],
            root_start_ns: 0,
            root_end_ns: 1_000_000,
            spans: &spans,
            last_end_ns: 1_000_000,
            span_bits: None,
        };
        let mut m = e.matcher().match_trace(&facts);
        m.replay = Some(ReplayTag {
            trace: trace_key(&[id; 16], &[id; 8]),
            pins: pins.to_vec().into(),
        });
        m
    }

    #[test]
    fn an_engine_holds_segments_until_saved_and_a_restored_one_skips_what_it_saved() {
        use super::super::testkit::post_message;
        let now = 1_700_000_000_000;
        let mut e = super::super::SliEngine::new(vec![post_message(10)]);
        e.guard_replays();
        let seg = pin();
        e.record(tagged(&e, 1, std::slice::from_ref(&seg)), now);
        assert!(e.has_unsaved_events());
        assert_eq!(
            Arc::strong_count(&seg),
            2,
            "the counted event holds its segment"
        );
        let (bytes, mark) = e.save_state_marked(false, &[]);
        e.state_saved(mark);
        assert_eq!(Arc::strong_count(&seg), 1, "saved: let go");
        assert!(!e.has_unsaved_events());

        // After a crash: the saved event is skipped while its segment is replayed.
        let mut fresh = super::super::SliEngine::new(vec![post_message(10)]);
        let guard = fresh.guard_replays();
        let restored = fresh.restore(&bytes).expect("restores");
        assert_eq!(restored.counted, 1);
        let key = fresh.matcher().event_key(trace_key(&[1; 16], &[1; 8]), 0);
        assert!(guard.skips(key));
        let other = fresh.matcher().event_key(trace_key(&[2; 16], &[2; 8]), 0);
        assert!(
            !guard.skips(other),
            "an event not saved is counted on replay"
        );
        fresh.replayed_segments(vec![Arc::downgrade(&seg)]);
        drop(seg);
        fresh.tick(now + 1);
        assert!(!guard.skips(key), "the replayed segment is gone");
    }

    #[test]
    fn a_settling_event_holds_its_segments_until_it_settles_and_is_saved() {
        use super::super::testkit::post_message;
        use crate::cuj::Measure;
        let now = 1_700_000_000_000;
        let mut cuj = post_message(10);
        cuj.latency = Some((Duration::from_millis(300), Measure::EndToEnd));
        let mut e =
            super::super::SliEngine::new(vec![cuj]).with_settle(Duration::from_secs(30), 100);
        e.guard_replays();
        let (root_seg, child_seg) = (pin(), pin());
        e.record(tagged(&e, 1, &[root_seg.clone(), child_seg.clone()]), now);
        assert!(!e.has_unsaved_events(), "still settling: not counted yet");
        let (bytes, mark) = e.save_state_marked(false, &[]);
        e.state_saved(mark);
        assert_eq!(Arc::strong_count(&child_seg), 2, "held while it settles");
        let listed = crate::state::decode(&bytes).expect("decodes").counted;
        assert!(
            listed.is_empty(),
            "a settling event is not counted in a save"
        );
        e.tick(now + 31_000);
        assert!(e.has_unsaved_events(), "settled and counted");
        let (bytes, mark) = e.save_state_marked(false, &[]);
        assert_eq!(
            crate::state::decode(&bytes).expect("decodes").counted.len(),
            1
        );
        e.state_saved(mark);
        assert_eq!(Arc::strong_count(&child_seg), 1);
        assert_eq!(Arc::strong_count(&root_seg), 1);
    }

    #[test]
    fn past_the_cap_the_oldest_saved_keys_are_dropped_and_counted() {
        let mut l = Ledger::new();
        let seg = pin();
        let old: Arc<[Pin]> = vec![seg.clone()].into();
        for k in 0..(MAX_KEYS as u64) {
            l.counted(k, &old);
        }
        let (_, mark) = l.keys_to_save();
        l.saved(mark);
        let new_seg = pin();
        let new: Arc<[Pin]> = vec![new_seg.clone()].into();
        l.counted(u64::MAX, &new);
        let (keys, _) = l.keys_to_save();
        assert_eq!(keys, vec![u64::MAX]);
        assert_eq!(l.guard().dropped(), MAX_KEYS as u64);
    }
}
