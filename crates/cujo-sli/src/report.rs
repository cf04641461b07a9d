//! The SLO report: every CUJ's objectives, windows, budgets, alerts, per-series breakdown and
//! recent history as plain, serializable data.
//!
//! This is the one shape the status page, `GET /api/v1/slos`, the gRPC `SloService` and
//! `cujo status` all read, so they never disagree. It is built by
//! [`crate::engine::SliEngine::report`] under the engine's lock and carries no references.

use serde::{Deserialize, Serialize};

/// Everything the engine knows at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When the report was made (milliseconds since the Unix epoch).
    pub generated_at_ms: u64,
    pub cujs: Vec<CujReport>,
}

/// One Critical User Journey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CujReport {
    pub name: String,
    /// The SLIs the CUJ configures (`availability`, `latency`), the only ones reported
    /// (see `cujo_sli::cuj::Cuj::has_sli`).
    #[serde(default)]
    pub slis: Vec<String>,
    /// The root attributes splitting its series, with their OpenTelemetry names.
    pub dimensions: Vec<String>,
    /// The CUJ's runbook URL (`cujs[].runbook`), for whoever its alerts reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// The latency threshold in seconds, when the CUJ has a latency SLI.
    pub latency_threshold_seconds: Option<f64>,
    /// `root`, `end_to_end` or `span_to_span`, when the CUJ has a latency SLI.
    pub latency_measure: Option<String>,
    /// Events excluded by the CUJ's `exclude` conditions (valid for neither SLI).
    pub excluded: u64,
    /// Events folded into the overflow series: the CUJ reached `max_series`, or a new series
    /// would not fit in the SLI engine's memory limit.
    pub overflowed: u64,
    /// Of `overflowed`, the events folded because of the memory limit.
    #[serde(default)]
    pub overflowed_memory: u64,
    /// Dimension values cut to `slo.max_dimension_value_bytes` before making a series key.
    #[serde(default)]
    pub dimension_values_truncated: u64,
    /// Series removed after `slo.series_idle_ttl` without events.
    #[serde(default)]
    pub series_expired: u64,
    /// Series of the state file not restored at start (dimensions changed, or past
    /// `max_series` or the memory limit).
    #[serde(default)]
    pub series_not_restored: u64,
    pub objectives: Vec<ObjectiveReport>,
    /// Latency over every event since start (all series together).
    pub latency: Option<LatencySummary>,
    /// Per dimension values, sorted by budget burned over the last hour, worst first.
    pub series: Vec<SeriesReport>,
    /// Which dimension values burn: per SLI and window (the last hour, each objective's
    /// window), each value's share of the bad events beside its share of the traffic.
    #[serde(default)]
    pub burn_shares: Vec<BurnShares>,
    /// Points sampled at a fixed interval (oldest first), for the charts.
    pub history: Vec<HistoryPoint>,
}

/// One objective of a CUJ, evaluated now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveReport {
    /// `availability` or `latency`.
    pub sli: String,
    /// e.g. 0.999.
    pub target: f64,
    /// The objective's window as a label (`30d`) and in seconds.
    pub window: String,
    pub window_seconds: u64,
    /// The reported windows (5m … 3d) and the objective's own, shortest first.
    pub windows: Vec<WindowReport>,
    /// Fraction of the error budget left over the objective's window (negative when
    /// overspent); absent (`null`) without valid events over it: no data, not a full budget.
    pub budget_remaining: Option<f64>,
    pub page: bool,
    pub ticket: bool,
    /// Alerts that would fire on their burn rates but are held because the rule's long
    /// window holds too little data (at most one per severity).
    #[serde(default)]
    pub alerts_held: Vec<HeldAlertReport>,
    /// At the last hour's burn rate, seconds until the budget is gone.
    pub exhaustion_seconds: Option<f64>,
}

/// One rolling window of an objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowReport {
    /// `5m`, `1h`, `30d`.
    pub window: String,
    pub seconds: u64,
    pub good: u64,
    pub valid: u64,
    /// good / valid; absent without valid events.
    pub sli: Option<f64>,
    /// Error ratio over the error budget; 1 spends the budget exactly over the objective's window.
    pub burn_rate: f64,
    /// Fraction of the window with data: from the oldest slice holding an event in it to
    /// now, over the window (at most 1; 0 without events).
    #[serde(default)]
    pub coverage: f64,
}

/// A burn-rate alert held for lack of data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldAlertReport {
    /// `page` or `ticket`.
    pub severity: String,
    /// The rule's long window (`1h`), what it holds and what it needs.
    pub window: String,
    pub valid: u64,
    pub coverage: f64,
    pub min_events: u64,
    pub min_coverage: f64,
    /// For people: `held: the 1h window has 9 minutes of data (15%, needs 50%)`.
    pub reason: String,
}

/// Latency quantiles of a set of events, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub sum_seconds: f64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
}

/// One series: the events whose root had these dimension values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesReport {
    /// (dimension, value) in the CUJ's dimension order; the overflow series has `__overflow__`.
    pub dimensions: Vec<(String, String)>,
    /// Events since start; availability's absent when the CUJ does not configure it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_good: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_bad: Option<u64>,
    pub latency_good: u64,
    pub latency_bad: u64,
    /// Per-series windows (same labels as the objectives'), when the engine keeps them.
    pub windows: Vec<SeriesWindow>,
    pub latency: Option<LatencySummary>,
    /// Trace id (hex) of the most recent bad event, to jump to the trace.
    pub last_bad_trace_id: Option<String>,
    /// That trace in the tracing backend, through `slo.trace_link` (absent without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bad_trace_url: Option<String>,
    /// When that event was recorded (ms since the Unix epoch); unknown after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bad_at_ms: Option<u64>,
}

/// Which dimension values burn one SLI over one window. A value with a tenth of the
/// traffic and half the bad events burns five times its share: values are ranked by how
/// much their share of the bad events exceeds their share of the valid events, most first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnShares {
    /// `availability` or `latency`.
    pub sli: String,
    /// `1h`, or an objective's window (`30d`).
    pub window: String,
    /// Bad and valid events of every series together over the window.
    pub bad: u64,
    pub valid: u64,
    /// At most [`MAX_BURN_VALUES`], most over their traffic share first; empty without bad
    /// events.
    pub values: Vec<ValueShare>,
}

/// How many values [`BurnShares`] lists.
pub const MAX_BURN_VALUES: usize = 10;

/// One dimension value's events over a window, all series with that value together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueShare {
    pub dimension: String,
    pub value: String,
    pub bad: u64,
    pub valid: u64,
    /// Of the window's bad events, and of its valid events.
    pub bad_share: f64,
    pub traffic_share: f64,
}

/// One rolling window of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesWindow {
    pub window: String,
    /// Valid events (all count for availability).
    pub valid: u64,
    /// Absent when the CUJ does not configure availability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_good: Option<u64>,
    /// Valid events whose latency was measured (fewer than `valid` only when a `{from, to}`
    /// measure found no spans to measure between).
    pub latency_valid: u64,
    pub latency_good: u64,
}

/// A sample of a CUJ's state, for the burn-down and latency charts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub at_ms: u64,
    /// Budget remaining per objective, in the order of [`CujReport::objectives`].
    pub budget_remaining: Vec<f64>,
    /// Latency quantiles of the events recorded since the previous point.
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// Trace id as 32 lowercase hex digits.
pub fn trace_id_hex(id: &[u8; 16]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(32);
    for b in id {
        let _ = write!(s, "{b:02x}");
    }
    s
}
