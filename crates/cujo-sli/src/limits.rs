//! What bounds the SLI engine's memory, whatever the traffic: a byte limit (its share of the
//! process's memory budget), a cap on the length of dimension values, and a time after which
//! idle series are removed. Each limit that binds is counted, by reason.
//!
//! How the byte limit is kept (see [`crate::engine::SliEngine::memory_bytes`] for what is
//! counted): before a new series is made or a trace starts to wait, the engine adds what
//! it would take to what it holds and to what the state already admitted may still grow
//! into (each latency histogram up to its cap, each CUJ's history up to a day of points, an
//! overflow series per CUJ that has none yet). What does not fit is not refused: a new
//! series' events fold into the CUJ's overflow series, and the oldest waiting traces are
//! recorded early. Settling traces are kept a reserve (a quarter of the limit at most) that
//! new series cannot take, so a flood of dimension values cannot stop end-to-end events
//! from waiting for their late spans.

use std::time::Duration;

/// The engine's limits ([`crate::engine::SliEngine::with_limits`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliLimits {
    /// The most bytes the engine holds (series, settling traces, each CUJ's history):
    /// its share of the process's memory budget, so input cannot grow it without bound.
    pub max_bytes: usize,
    /// Dimension values longer than this are cut (on a character boundary) before they
    /// make a series key: a request id or a URL used as a dimension by mistake then costs
    /// one series per prefix, not one per request.
    pub max_dimension_value_bytes: usize,
    /// Series with no event for this long are removed (their memory given back), so values
    /// that stopped coming (a tenant gone, a deploy's version) do not hold memory forever.
    /// Zero: never.
    pub series_idle_ttl: Duration,
}

/// Longest dimension value kept by default.
pub const DEFAULT_MAX_DIMENSION_VALUE_BYTES: usize = 128;
/// How long a series may go without events by default before it is removed.
pub const DEFAULT_SERIES_IDLE_TTL: Duration = Duration::from_secs(3600);

impl Default for SliLimits {
    /// No byte limit (the binary passes its share of the budget), the documented defaults
    /// for the rest.
    fn default() -> Self {
        Self {
            max_bytes: usize::MAX,
            max_dimension_value_bytes: DEFAULT_MAX_DIMENSION_VALUE_BYTES,
            series_idle_ttl: DEFAULT_SERIES_IDLE_TTL,
        }
    }
}

impl SliLimits {
    pub(crate) fn series_idle_ttl_ms(&self) -> u64 {
        u64::try_from(self.series_idle_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes kept for settling traces that new series cannot take: a quarter of the limit,
    /// at most what `max_traces` waiting traces of one event take.
    pub(crate) fn settle_reserve(&self, max_traces: usize) -> usize {
        let per_trace = crate::settle::Settling::trace_bytes();
        (self.max_bytes / 4).min(max_traces.saturating_mul(per_trace))
    }
}

/// Why an event went to its CUJ's overflow series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowReason {
    /// The CUJ has `max_series` series.
    MaxSeries,
    /// A new series would not fit in the engine's byte limit.
    Memory,
}

impl OverflowReason {
    pub const ALL: [OverflowReason; 2] = [OverflowReason::MaxSeries, OverflowReason::Memory];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            OverflowReason::MaxSeries => "max_series",
            OverflowReason::Memory => "memory",
        }
    }
}

/// Why a settling trace was recorded before its settle time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// `max_settling_traces` traces were waiting.
    MaxTraces,
    /// Another waiting trace would not fit in the engine's byte limit.
    Memory,
}

impl EvictReason {
    pub const ALL: [EvictReason; 2] = [EvictReason::MaxTraces, EvictReason::Memory];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            EvictReason::MaxTraces => "max_traces",
            EvictReason::Memory => "memory",
        }
    }
}

/// Why a series of a state file was not restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreSkip {
    /// The CUJ's dimensions changed since the file was written.
    Dimensions,
    /// Its values, cut to `max_dimension_value_bytes`, are those of a series restored
    /// before it (the most recently active one is kept).
    Duplicate,
    /// The CUJ has `max_series` series.
    MaxSeries,
    /// It would not fit in the engine's byte limit.
    Memory,
}

impl RestoreSkip {
    pub const ALL: [RestoreSkip; 4] = [
        RestoreSkip::Dimensions,
        RestoreSkip::Duplicate,
        RestoreSkip::MaxSeries,
        RestoreSkip::Memory,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            RestoreSkip::Dimensions => "dimensions",
            RestoreSkip::Duplicate => "duplicate",
            RestoreSkip::MaxSeries => "max_series",
            RestoreSkip::Memory => "memory",
        }
    }
}
