//! Hash tables that know what they occupy, for memory accounting.
//!
//! A hash table's memory is its slots, not its entries: it doubles when full and keeps its
//! slots when entries leave. The standard map reports a capacity that shrinks as removed
//! entries leave tombstones behind, so [`CountedMap`] remembers the most entries the table
//! has had room for since it last shrank (the slots it really holds) and counts those.

use std::borrow::Borrow;
use std::hash::Hash;
use std::ops::Deref;

use cujo_wire::alloc::allocation_size;

use crate::engine::FastMap;

pub(crate) struct CountedMap<K, V> {
    map: FastMap<K, V>,
    /// The most entries the table has had room for since it last shrank.
    capacity: usize,
}

impl<K, V> Default for CountedMap<K, V> {
    fn default() -> Self {
        Self {
            map: FastMap::default(),
            capacity: 0,
        }
    }
}

impl<K: Hash + Eq, V> CountedMap<K, V> {
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.map.insert(key, value);
        self.capacity = self.capacity.max(self.map.capacity());
        old
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key)
    }

    pub fn retain(&mut self, keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(keep);
    }

    /// Whether inserting a key the table does not hold would make it take more memory.
    /// When only the tombstones of removed entries stand in the way and the live entries
    /// fill less than seven eighths of the slots, the table is rebuilt at its size first
    /// (the standard map would double it), and the answer is no.
    pub fn would_grow_new(&mut self) -> bool {
        if self.map.len() < self.map.capacity() {
            return false;
        }
        if self.map.len() < self.capacity / 8 * 7 {
            let mut rebuilt = FastMap::with_capacity_and_hasher(self.capacity, Default::default());
            rebuilt.extend(self.map.drain());
            self.map = rebuilt;
            self.capacity = self.capacity.max(self.map.capacity());
            return false;
        }
        true
    }

    /// What inserting a key the table does not hold may add to [`CountedMap::bytes`] (zero
    /// when it fits as is). Rebuilds the table when tombstones alone fill it (see
    /// [`CountedMap::would_grow_new`]).
    pub fn growth_for_new(&mut self) -> usize {
        if !self.would_grow_new() {
            return 0;
        }
        let doubled = slot_bytes::<(K, V)>((slots(self.slots_capacity()) * 2).max(4));
        doubled.saturating_sub(self.bytes())
    }

    /// At most what inserting a key the table does not hold adds to [`CountedMap::bytes`],
    /// without rebuilding it: counts doubling whenever the standard map says it is full.
    pub fn growth_bound_new(&self) -> usize {
        if self.map.len() < self.map.capacity() {
            return 0;
        }
        let doubled = slot_bytes::<(K, V)>((slots(self.slots_capacity()) * 2).max(4));
        doubled.saturating_sub(self.bytes())
    }

    /// Gives back slots down to room for `min_capacity` entries (or the entries held).
    pub fn shrink_to(&mut self, min_capacity: usize) {
        self.map.shrink_to(min_capacity);
        self.capacity = self.map.capacity();
    }

    /// The most entries the table holds room for (slots it occupies).
    pub fn slots_capacity(&self) -> usize {
        self.capacity.max(self.map.capacity())
    }

    /// Memory the table occupies: its slots and their control bytes.
    pub fn bytes(&self) -> usize {
        table_bytes::<(K, V)>(self.slots_capacity())
    }
}

impl<K, V> Deref for CountedMap<K, V> {
    type Target = FastMap<K, V>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

/// Bytes of a hash table (the standard map's layout) with room for `capacity` entries of
/// `T`: a power of two of slots, at most seven eighths full, each with one control byte,
/// and one group of control bytes more.
pub(crate) fn table_bytes<T>(capacity: usize) -> usize {
    slot_bytes::<T>(slots(capacity))
}

/// Slots of a table with room for `capacity` entries.
fn slots(capacity: usize) -> usize {
    match capacity {
        0 => 0,
        1..8 => (capacity + 1).next_power_of_two(),
        _ => (capacity * 8 / 7).next_power_of_two(),
    }
}

fn slot_bytes<T>(slots: usize) -> usize {
    if slots == 0 {
        return 0;
    }
    allocation_size(slots * (std::mem::size_of::<T>() + 1) + 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_slots_do_not_shrink_with_tombstones_and_growth_is_predicted() {
        let mut m: CountedMap<u64, u64> = CountedMap::default();
        let mut predicted = 0;
        for k in 0..1000u64 {
            let before = m.bytes();
            let growth = m.growth_for_new();
            m.insert(k, k);
            assert!(
                m.bytes() <= before + growth,
                "insert {k}: {} > {before} + {growth}",
                m.bytes()
            );
            predicted += growth;
        }
        assert_eq!(
            predicted,
            m.bytes(),
            "growth adds up to what the table holds"
        );
        let full = m.bytes();
        for k in 0..900u64 {
            m.remove(&k);
        }
        assert_eq!(m.bytes(), full, "removed entries leave their slots");
        // Filling again within the slots held does not grow the table.
        for k in 5000..5800u64 {
            assert_eq!(m.growth_for_new(), 0, "{k}");
            m.insert(k, k);
        }
        assert_eq!(m.bytes(), full);
        for k in 5000..5800u64 {
            m.remove(&k);
        }
        m.shrink_to(0);
        assert!(m.bytes() < full / 4, "{} of {full}", m.bytes());
        assert_eq!(m.len(), 100);
    }
}
