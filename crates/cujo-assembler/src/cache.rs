//! The root cache: what a released trace propagates, kept after its spans are gone, so late
//! spans (a queue consumer minutes later) and linked traces are enriched on arrival.
//! Bounded by a TTL and a maximum number of traces; the oldest entries go first.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::origin::Origin;
use crate::{IdMap, TraceId};

/// A released trace's origin; `None` when it was released without one (no root, no link), so
/// its late spans pass straight through instead of being held again.
pub type Cached = Option<Arc<Origin>>;

pub struct RootCache {
    entries: IdMap<TraceId, (Cached, u64)>,
    /// Insertion order with each entry's expiry; stale pairs are skipped when popped.
    order: VecDeque<(u64, TraceId)>,
    ttl_ms: u64,
    max: usize,
}

impl RootCache {
    pub fn new(ttl_ms: u64, max: usize) -> Self {
        Self {
            entries: IdMap::default(),
            order: VecDeque::new(),
            ttl_ms,
            max,
        }
    }

    pub fn insert(&mut self, trace: TraceId, origin: Cached, now_ms: u64) {
        if self.max == 0 {
            return;
        }
        let expiry = now_ms + self.ttl_ms;
        self.entries.insert(trace, (origin, expiry));
        self.order.push_back((expiry, trace));
        while self.entries.len() > self.max {
            self.pop_oldest();
        }
    }

    pub fn get(&self, trace: &TraceId, now_ms: u64) -> Option<&Cached> {
        self.entries
            .get(trace)
            .filter(|(_, expiry)| *expiry > now_ms)
            .map(|(o, _)| o)
    }

    /// Drops expired entries.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(expiry, _)) = self.order.front() {
            if expiry > now_ms {
                break;
            }
            self.pop_oldest();
        }
        // Keep the order queue from growing past the live entries by much.
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(expiry, t)| entries.get(t).is_some_and(|(_, e)| e == expiry));
        }
    }

    fn pop_oldest(&mut self) {
        while let Some((expiry, trace)) = self.order.pop_front() {
            if self.entries.get(&trace).is_some_and(|(_, e)| *e == expiry) {
                self.entries.remove(&trace);
                return;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
