//! What the shards of one assembler share: each shard's root cache and the ids of the traces
//! it holds, so a trace whose span link points into another shard still finds its origin
//! (or learns that it is still buffered and waits for it).
//!
//! Traces are sharded by trace id, so each shard owns its traces outright. Each shard's index
//! sits behind its own lock: the owning shard takes it once per new trace and once per
//! release (uncontended), another shard only to resolve a span link. There is no lock shared
//! by all shards.

use std::sync::{Mutex, MutexGuard};

use crate::TraceId;
use crate::cache::{Cached, RootCache};
use crate::table::CountedMap;

/// One shard's part of the directory.
pub(crate) struct ShardIndex {
    pub(crate) cache: RootCache,
    /// Traces the shard holds now (value unused): linked traces in other shards wait for them.
    pub(crate) held: CountedMap<TraceId, ()>,
}

pub struct Directory {
    shards: Box<[Mutex<ShardIndex>]>,
}

impl Directory {
    /// A directory for `shards` shards, each with a root cache of `max_traces / shards`
    /// entries in `max_bytes / shards` bytes.
    pub fn new(
        shards: usize,
        root_cache_ttl_ms: u64,
        root_cache_max_traces: usize,
        root_cache_max_bytes: usize,
    ) -> Self {
        let shards = shards.max(1);
        let per_shard = root_cache_max_traces.div_ceil(shards);
        let bytes_per_shard = root_cache_max_bytes / shards;
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(ShardIndex {
                        cache: RootCache::new(root_cache_ttl_ms, per_shard, bytes_per_shard),
                        held: CountedMap::new(),
                    })
                })
                .collect(),
        }
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard that owns `trace`.
    pub fn shard_of(&self, trace: &TraceId) -> usize {
        shard_of(trace, self.shards.len())
    }

    pub(crate) fn index(&self, shard: usize) -> MutexGuard<'_, ShardIndex> {
        // A poisoned lock means a shard panicked mid-update; its maps are still usable.
        match self.shards[shard].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// What the root cache knows of `trace` (in whichever shard owns it).
    pub(crate) fn cached(&self, trace: &TraceId, now_ms: u64) -> Option<Cached> {
        self.index(self.shard_of(trace))
            .cache
            .get(trace, now_ms)
            .cloned()
    }

    /// Whether the shard owning `trace` holds it now.
    pub(crate) fn is_held(&self, trace: &TraceId) -> bool {
        self.index(self.shard_of(trace)).held.contains_key(trace)
    }
}

/// The shard of `trace` among `shards`: trace ids are random, so their low bytes spread evenly.
pub fn shard_of(trace: &TraceId, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace[8..16]);
    (u64::from_le_bytes(low) % shards as u64) as usize
}
