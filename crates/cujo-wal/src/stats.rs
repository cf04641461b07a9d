//! The log's counters and gauges, read by whoever exports them (`/metrics`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (µs) of the fsync latency buckets; the last bucket is everything above.
pub const FSYNC_BUCKETS_US: [u64; 11] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Counters (`_total`) only grow; gauges (`live_*`) go both ways. Shared with the writer
/// thread; read with [`WalStats::snapshot`].
#[derive(Debug, Default)]
pub struct WalStats {
    pub(crate) appended_records: AtomicU64,
    pub(crate) appended_bytes: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) refused_full: AtomicU64,
    pub(crate) refused_busy: AtomicU64,
    pub(crate) refused_too_large: AtomicU64,
    pub(crate) refused_io: AtomicU64,
    pub(crate) live_bytes: AtomicU64,
    pub(crate) live_segments: AtomicU64,
    pub(crate) segments_deleted: AtomicU64,
    pub(crate) replayed_records: AtomicU64,
    pub(crate) replayed_bytes: AtomicU64,
    pub(crate) lost_records: AtomicU64,
    pub(crate) lost_bytes: AtomicU64,
    pub(crate) corrupt_skips: AtomicU64,
    pub(crate) corrupt_bytes: AtomicU64,
    pub(crate) fsync_last_us: AtomicU64,
    pub(crate) fsync_max_us: AtomicU64,
    pub(crate) fsync_sum_us: AtomicU64,
    pub(crate) fsync_buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
}

/// A copy of [`WalStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalStatsSnapshot {
    /// Records acknowledged (written and synced) and their payload bytes.
    pub appended_records: u64,
    pub appended_bytes: u64,
    /// fdatasync calls that covered appended records (group commits).
    pub fsyncs: u64,
    /// Appends refused because `max_size` would be passed.
    pub refused_full: u64,
    /// Appends refused because `max_pending` bytes already waited for the writer.
    pub refused_busy: u64,
    pub refused_too_large: u64,
    /// Appends refused because writing or syncing failed.
    pub refused_io: u64,
    /// Bytes of segment files on disk (headers included), what `max_size` bounds.
    pub live_bytes: u64,
    pub live_segments: u64,
    /// Sealed segments deleted once nothing referenced them.
    pub segments_deleted: u64,
    /// Records (payload bytes) handed out by replay.
    pub replayed_records: u64,
    pub replayed_bytes: u64,
    /// Torn tails: a crash mid-write; the bytes after a segment's last complete record.
    pub lost_records: u64,
    pub lost_bytes: u64,
    /// Damaged stretches inside a segment skipped to the next valid record, and their bytes.
    pub corrupt_skips: u64,
    pub corrupt_bytes: u64,
    pub fsync_last_us: u64,
    pub fsync_max_us: u64,
    pub fsync_sum_us: u64,
    /// Counts per bucket of [`FSYNC_BUCKETS_US`] (not cumulative), the last one above them.
    pub fsync_buckets: [u64; FSYNC_BUCKETS_US.len() + 1],
}

impl WalStats {
    pub fn snapshot(&self) -> WalStatsSnapshot {
        let r = |a: &AtomicU64| a.load(Relaxed);
        WalStatsSnapshot {
            appended_records: r(&self.appended_records),
            appended_bytes: r(&self.appended_bytes),
            fsyncs: r(&self.fsyncs),
            refused_full: r(&self.refused_full),
            refused_busy: r(&self.refused_busy),
            refused_too_large: r(&self.refused_too_large),
            refused_io: r(&self.refused_io),
            live_bytes: r(&self.live_bytes),
            live_segments: r(&self.live_segments),
            segments_deleted: r(&self.segments_deleted),
            replayed_records: r(&self.replayed_records),
            replayed_bytes: r(&self.replayed_bytes),
            lost_records: r(&self.lost_records),
            lost_bytes: r(&self.lost_bytes),
            corrupt_skips: r(&self.corrupt_skips),
            corrupt_bytes: r(&self.corrupt_bytes),
            fsync_last_us: r(&self.fsync_last_us),
            fsync_max_us: r(&self.fsync_max_us),
            fsync_sum_us: r(&self.fsync_sum_us),
            fsync_buckets: std::array::from_fn(|i| r(&self.fsync_buckets[i])),
        }
    }

    pub(crate) fn record_fsync(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_last_us.store(us, Relaxed);
        self.fsync_max_us.fetch_max(us, Relaxed);
        self.fsync_sum_us.fetch_add(us, Relaxed);
        let bucket = FSYNC_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(FSYNC_BUCKETS_US.len());
        self.fsync_buckets[bucket].fetch_add(1, Relaxed);
    }
}
