//! Why traces are released, and the assembler's counters and gauges.

use crate::origin::Capped;

/// Why a trace (or part of one) was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// `decision_wait` passed after its root arrived.
    Root,
    /// `trace_timeout` passed and no root came.
    TimeoutWithoutRoot,
    /// It reached `max_spans_per_trace` (or `max_groups_per_trace`).
    Size,
    /// Held spans passed `max_buffered_spans` or the assembler's share of the memory
    /// budget, and no trace with its root was left to release: the oldest traces went
    /// first, without their root (unenriched, unless it is cached by then).
    MemoryPressure,
    Shutdown,
    /// Its span with a remote parent arrived (`assembler.remote_parent: release`): the root
    /// is in another process, so the local part goes on unenriched at once.
    RemoteParent,
    /// Held spans passed a limit (as [`ReleaseReason::MemoryPressure`]) while its root had
    /// arrived: it went enriched before `decision_wait` had passed. Pressure takes these
    /// first, in the order their roots came, since all they wait for is stragglers (which
    /// are still enriched, from the root cache).
    RootEarly,
}

impl ReleaseReason {
    pub const ALL: [ReleaseReason; 7] = [
        ReleaseReason::Root,
        ReleaseReason::TimeoutWithoutRoot,
        ReleaseReason::Size,
        ReleaseReason::MemoryPressure,
        ReleaseReason::Shutdown,
        ReleaseReason::RemoteParent,
        ReleaseReason::RootEarly,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReleaseReason::Root => "root",
            ReleaseReason::TimeoutWithoutRoot => "timeout_without_root",
            ReleaseReason::Size => "size",
            ReleaseReason::MemoryPressure => "memory_pressure",
            ReleaseReason::Shutdown => "shutdown",
            ReleaseReason::RemoteParent => "remote_parent",
            ReleaseReason::RootEarly => "root_early",
        }
    }
}

/// Counters and gauges of the assembler, read by the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    pub traces_buffered: u64,
    pub spans_buffered: u64,
    pub bytes_buffered: u64,
    /// Traces (or parts of traces) released, by [`ReleaseReason`] in `ALL` order.
    pub traces_released: [u64; ReleaseReason::ALL.len()],
    pub spans_released: u64,
    pub spans_enriched: u64,
    /// Spans written out as soon as their trace's root had arrived, their trace left open
    /// for its root to wait `decision_wait` ([`crate::Assembler`]'s streaming).
    pub spans_streamed: u64,
    /// Spans that arrived after their trace was released and were enriched from the cache.
    pub late_spans_enriched: u64,
    /// Spans that arrived after their trace was released, with no root known.
    pub late_spans_without_root: u64,
    /// Traces whose span links led to a known origin.
    pub linked_traces_joined: u64,
    /// Traces whose span links led nowhere known (origin expired, never seen, too many hops).
    pub linked_traces_unresolved: u64,
    pub root_cache_entries: u64,
    /// Root cache entries forgotten before their TTL to stay within its bytes or entries.
    pub root_cache_evicted: u64,
    /// Memory the assembler holds for held spans and their indexes (a gauge).
    pub memory_bytes: u64,
    /// Memory the root cache holds (a gauge).
    pub root_cache_bytes: u64,
    /// What the caps of `propagate:` cut from origins.
    pub capped: Capped,
    /// Trace parts released early because their spans came under more than
    /// `max_groups_per_trace` resource/scope pairs.
    pub group_cap_releases: u64,
    /// How late traces were released after they fell due, in milliseconds: counts per
    /// bucket of [`RELEASE_LAG_BUCKETS_MS`] (cumulative is computed when rendered), sum, count.
    pub release_lag_ms: [u64; RELEASE_LAG_BUCKETS_MS.len()],
    pub release_lag_sum_ms: u64,
    pub release_lag_count: u64,
}

impl AssemblerStats {
    /// Adds another shard's counters and gauges to these.
    pub fn merge(&mut self, other: &AssemblerStats) {
        self.traces_buffered += other.traces_buffered;
        self.spans_buffered += other.spans_buffered;
        self.bytes_buffered += other.bytes_buffered;
        for (a, b) in self.traces_released.iter_mut().zip(other.traces_released) {
            *a += b;
        }
        self.spans_released += other.spans_released;
        self.spans_enriched += other.spans_enriched;
        self.spans_streamed += other.spans_streamed;
        self.late_spans_enriched += other.late_spans_enriched;
        self.late_spans_without_root += other.late_spans_without_root;
        self.linked_traces_joined += other.linked_traces_joined;
        self.linked_traces_unresolved += other.linked_traces_unresolved;
        self.root_cache_entries += other.root_cache_entries;
        self.root_cache_evicted += other.root_cache_evicted;
        self.memory_bytes += other.memory_bytes;
        self.root_cache_bytes += other.root_cache_bytes;
        self.capped.add(other.capped);
        self.group_cap_releases += other.group_cap_releases;
        for (a, b) in self.release_lag_ms.iter_mut().zip(other.release_lag_ms) {
            *a += b;
        }
        self.release_lag_sum_ms += other.release_lag_sum_ms;
        self.release_lag_count += other.release_lag_count;
    }
}

/// Upper bounds of the release-lag buckets (the last bucket is everything above).
pub const RELEASE_LAG_BUCKETS_MS: [u64; 10] = [0, 1, 2, 5, 10, 25, 50, 100, 250, 1000];
