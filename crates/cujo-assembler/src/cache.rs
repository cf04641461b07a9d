//! The root cache: what a released trace propagates, kept after its spans are gone, so late
//! spans (a queue consumer minutes later) and linked traces are enriched on arrival.
//!
//! Bounded three ways: a TTL, a number of traces, and bytes (the root cache's share of the
//! memory budget, counted by what the entries really occupy: the table's slots, the
//! expiry queue, each origin's one allocation). The oldest entries go first. An entry costs
//! about 90 bytes plus its origin's names and propagated attributes (themselves capped by
//! `propagate:`).

use std::collections::VecDeque;

use cujo_wire::alloc::vec_bytes;

use crate::TraceId;
use crate::origin::Origin;
use crate::table::CountedMap;

/// A released trace's origin; `None` when it was released without one (no root, no link), so
/// its late spans pass straight through instead of being held again.
pub type Cached = Option<Origin>;

struct Entry {
    origin: Cached,
    /// When it was inserted, in milliseconds since the cache was made (wrapping): with
    /// `order`, tells a live queue slot from one whose trace was inserted again later.
    inserted: u32,
}

pub struct RootCache {
    entries: CountedMap<TraceId, Entry>,
    /// Insertion order (the TTL is the same for all, so also expiry order); stale slots are
    /// skipped when popped.
    order: VecDeque<(TraceId, u32)>,
    /// The clock value at which `inserted` counts from.
    epoch_ms: u64,
    ttl_ms: u64,
    max_entries: usize,
    max_bytes: usize,
    /// Heap bytes of the origins held.
    origin_bytes: usize,
    /// Entries removed to stay within `max_bytes` or `max_entries` before their TTL.
    pub evicted: u64,
}

impl RootCache {
    /// A cache keeping entries for `ttl_ms`, at most `max_entries` of them in at most
    /// `max_bytes`. TTLs are capped at 24 days (entry times are kept in 32 bits).
    pub fn new(ttl_ms: u64, max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: CountedMap::new(),
            order: VecDeque::new(),
            epoch_ms: 0,
            ttl_ms: ttl_ms.min(24 * 86_400_000),
            max_entries,
            max_bytes,
            origin_bytes: 0,
            evicted: 0,
        }
    }

    fn stamp(&self, now_ms: u64) -> u32 {
        now_ms.wrapping_sub(self.epoch_ms) as u32
    }

    fn expired(&self, inserted: u32, now_ms: u64) -> bool {
        u64::from(self.stamp(now_ms).wrapping_sub(inserted)) >= self.ttl_ms
    }

    pub fn insert(&mut self, trace: TraceId, origin: Cached, now_ms: u64) {
        if self.max_entries == 0 || self.max_bytes == 0 {
            return;
        }
        if self.entries.is_empty() && self.order.is_empty() {
            self.epoch_ms = now_ms;
        }
        let added = origin.as_ref().map_or(0, Origin::heap_bytes);
        // Growing the table or the queue doubles it: when that would not fit, forget the
        // oldest instead — an eighth of the table at once, so that the table, rebuilt
        // without the tombstones they leave, has room again without growing.
        loop {
            let table = if self.entries.would_grow(&trace) {
                self.entries.growth_bytes()
            } else {
                0
            };
            let queue = if self.order.len() == self.order.capacity() {
                vec_bytes::<(TraceId, u32)>(self.order.capacity().max(4))
            } else {
                0
            };
            if self.entries.is_empty() || self.bytes() + table + queue + added <= self.max_bytes {
                break;
            }
            let keep = if table > 0 {
                self.entries.len() / 8 * 7
            } else {
                self.entries.len() - 1
            };
            while self.entries.len() > keep && self.pop_oldest() {
                self.evicted += 1;
            }
        }
        let inserted = self.stamp(now_ms);
        self.origin_bytes += added;
        if let Some(old) = self.entries.insert(trace, Entry { origin, inserted }) {
            self.origin_bytes -= old.origin.as_ref().map_or(0, Origin::heap_bytes);
        }
        self.order.push_back((trace, inserted));
        while self.entries.len() > self.max_entries
            || (self.bytes() > self.max_bytes && self.entries.len() > 1)
        {
            if !self.pop_oldest() {
                break;
            }
            self.evicted += 1;
        }
    }

    pub fn get(&self, trace: &TraceId, now_ms: u64) -> Option<&Cached> {
        self.entries
            .get(trace)
            .filter(|e| !self.expired(e.inserted, now_ms))
            .map(|e| &e.origin)
    }

    /// Drops expired entries.
    pub fn expire(&mut self, now_ms: u64) {
        while let Some(&(trace, inserted)) = self.order.front() {
            if !self.expired(inserted, now_ms) {
                break;
            }
            self.order.pop_front();
            self.remove_if_current(&trace, inserted);
        }
        // Keep the order queue from growing past the live entries by much.
        if self.order.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.order
                .retain(|(t, at)| entries.get(t).is_some_and(|e| e.inserted == *at));
            self.order.shrink_to(self.order.len() * 2);
            if self.entries.capacity() > 4 * self.entries.len() + 1024 {
                let n = self.entries.len();
                self.entries.shrink_to(2 * n);
            }
        }
    }

    fn remove_if_current(&mut self, trace: &TraceId, inserted: u32) -> bool {
        if self
            .entries
            .get(trace)
            .is_some_and(|e| e.inserted == inserted)
            && let Some(e) = self.entries.remove(trace)
        {
            self.origin_bytes -= e.origin.as_ref().map_or(0, Origin::heap_bytes);
            return true;
        }
        false
    }

    /// Removes the oldest live entry; `false` when there is none.
    fn pop_oldest(&mut self) -> bool {
        while let Some((trace, inserted)) = self.order.pop_front() {
            if self.remove_if_current(&trace, inserted) {
                return true;
            }
        }
        false
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Memory the cache holds: table, queue and origins.
    pub fn bytes(&self) -> usize {
        self.entries.bytes()
            + vec_bytes::<(TraceId, u32)>(self.order.capacity())
            + self.origin_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::Capped;
    use crate::settings::PropagateSettings;

    fn origin(tier: &str) -> Origin {
        let settings = PropagateSettings {
            attributes: vec!["user.tier".into()],
            ..Default::default()
        };
        let mut kv = Vec::new();
        cujo_wire::span::append_attribute(
            &mut kv,
            "",
            "user.tier",
            &cujo_wire::span::NewValue::Str(tier),
        );
        Origin::from_root(
            "GET /checkout",
            "frontend",
            cujo_wire::span::attributes(&kv, 9),
            1,
            &settings,
            &mut Capped::default(),
        )
    }

    fn id(n: u32) -> TraceId {
        let mut t = [0u8; 16];
        t[..4].copy_from_slice(&n.to_le_bytes());
        t[15] = 1;
        t
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let mut c = RootCache::new(1000, 100, usize::MAX);
        c.insert(id(1), Some(origin("gold")), 5_000);
        assert!(c.get(&id(1), 5_999).is_some());
        assert!(c.get(&id(1), 6_000).is_none());
        c.expire(6_000);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_oldest_go_first_past_the_entry_cap() {
        let mut c = RootCache::new(60_000, 3, usize::MAX);
        for n in 0..5 {
            c.insert(id(n), None, u64::from(n));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&id(0), 10).is_none() && c.get(&id(1), 10).is_none());
        assert!(c.get(&id(4), 10).is_some());
        assert_eq!(c.evicted, 2);
    }

    #[test]
    fn memory_stays_within_max_bytes_and_an_entry_costs_96_bytes_plus_its_origin() {
        let max = 1 << 20;
        let mut c = RootCache::new(600_000, usize::MAX, max);
        let o = origin("platinum");
        let per_origin = o.heap_bytes();
        let mut per_entry = Vec::new();
        for n in 0..200_000 {
            c.insert(id(n), Some(o.clone()), 10);
            assert!(c.bytes() <= max, "{} > {max} at {n}", c.bytes());
            if n >= 100_000 && n % 100 == 0 {
                per_entry.push((c.bytes() - c.len() * per_origin) as f64 / c.len() as f64);
            }
        }
        assert!(c.evicted > 0);
        // Over the cycle of filling the table and making room in it.
        let mean = per_entry.iter().sum::<f64>() / per_entry.len() as f64;
        let worst = per_entry.iter().copied().fold(0.0, f64::max);
        assert!(
            mean <= 96.0 && worst <= 110.0,
            "{mean:.1} B per entry on average, {worst:.1} at worst"
        );
        // The newest are kept.
        assert!(c.get(&id(199_999), 10).is_some());
    }

    #[test]
    fn a_trace_inserted_again_keeps_its_newer_entry_when_the_older_slot_expires() {
        let mut c = RootCache::new(1000, 100, usize::MAX);
        c.insert(id(7), None, 0);
        c.insert(id(7), Some(origin("gold")), 500);
        c.expire(1_200);
        assert!(matches!(c.get(&id(7), 1_200), Some(Some(_))));
        c.expire(1_500);
        assert!(c.get(&id(7), 1_500).is_none());
    }
}
