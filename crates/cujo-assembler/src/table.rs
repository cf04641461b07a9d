//! Hash tables that know what they occupy.
//!
//! A table's memory is its slots, not its entries: it doubles when full and keeps its slots
//! when entries leave. The standard map reports a capacity that shrinks as removed entries
//! leave tombstones behind, so [`CountedMap`] remembers the largest capacity it has had
//! (the slots it really holds) and counts those.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::{Deref, DerefMut};

use cujo_wire::alloc::allocation_size;

use crate::{RandomState, random_state};

pub(crate) struct CountedMap<K, V> {
    map: HashMap<K, V, RandomState>,
    /// The most entries the table has had room for since it last shrank.
    capacity: usize,
}

impl<K: Hash + Eq, V> CountedMap<K, V> {
    pub fn new() -> Self {
        Self {
            map: HashMap::with_hasher(random_state()),
            capacity: 0,
        }
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.map.insert(key, value);
        self.capacity = self.capacity.max(self.map.capacity());
        old
    }

    /// Whether inserting `key` would make the table double its slots. When only the
    /// tombstones of removed entries stand in the way (the table is at most seven eighths
    /// full), the table is rebuilt at its size instead, and the answer is no.
    pub fn would_grow(&mut self, key: &K) -> bool {
        if self.map.len() < self.map.capacity() || self.map.contains_key(key) {
            return false;
        }
        if self.map.len() <= self.capacity / 8 * 7 {
            let old = std::mem::replace(
                &mut self.map,
                HashMap::with_capacity_and_hasher(self.capacity, random_state()),
            );
            self.map.extend(old);
            return false;
        }
        true
    }

    pub fn shrink_to(&mut self, min_capacity: usize) {
        self.map.shrink_to(min_capacity);
        self.capacity = self.map.capacity();
    }

    /// Memory the table occupies: its slots and their control bytes.
    pub fn bytes(&self) -> usize {
        table_bytes::<(K, V)>(self.capacity.max(self.map.capacity()))
    }

    /// What the table would add by growing.
    pub fn growth_bytes(&self) -> usize {
        self.bytes().max(table_bytes::<(K, V)>(4))
    }
}

impl<K, V> Deref for CountedMap<K, V> {
    type Target = HashMap<K, V, RandomState>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<K, V> DerefMut for CountedMap<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

/// Bytes of a hash table (hashbrown's layout) able to hold `capacity` entries of `T`: a
/// power of two of slots, at most 7/8 full, each with one control byte.
pub(crate) fn table_bytes<T>(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity * 8 / 7).next_power_of_two()
    };
    allocation_size(buckets * (std::mem::size_of::<T>() + 1) + 16)
}
