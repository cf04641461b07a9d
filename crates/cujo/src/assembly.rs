//! Runs the trace assembler as a pipeline stage: accepted spans in from the receivers,
//! enriched spans out to the exporter, with the clock, the admission budget and the metrics
//! around the plain [`Assembler`] state machine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cujo_assembler::Cursor;
use cujo_assembler::config::PropagateConfig;
use cujo_assembler::{
    Assembler, AssemblerSettings, AssemblerStats, RELEASE_LAG_BUCKETS_MS, ReleaseReason,
};
use cujo_otlp::admission::{Admitted, SpanSink, SpanSource};
use cujo_otlp::gzip::Prepared;
use cujo_otlp::memory::{Account, Component, MemoryBudget};
use cujo_otlp::prom::{Exemplar, Exposition, Family, Format};
use cujo_otlp::telemetry::{DropReason, PipelineTelemetry};
use cujo_sli::engine::{Family as SliFamily, Kind, SliEngine};
use cujo_sli::processor::SliReader;
use cujo_sli::state::SavedAlert;
use cujo_slo::exporters::webhooks::AlertsNotified;
use cujo_wire::SpanBatch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The assembler's settings from the config (defaults for whichever section is absent), its
/// memory and its root cache's bounded by their shares of `budget`.
pub fn settings(config: &Config, budget: &MemoryBudget) -> AssemblerSettings {
    let propagate = match &config.propagate {
        Some(p) => p.settings(),
        None => PropagateConfig::default().settings(),
    };
    config.assembler.clone().unwrap_or_default().settings(
        propagate,
        budget.limit(Component::Assembler),
        budget.limit(Component::RootCache),
    )
}

/// The latest counters of each shard, shared with the metrics endpoint.
pub type SharedStats = Arc<Mutex<Vec<AssemblerStats>>>;

/// How many assembler shards to run: `assembler.shards`, or one per two CPU cores (the
/// other half receive and export; on 2 cores one shard measured faster than two, see
/// BENCHMARKS.md).
pub fn shard_count(config: &Config) -> usize {
    let configured = config.assembler.as_ref().map_or(0, |a| a.shards);
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// What the assembler stage shares with the rest of the pipeline.
pub struct StageContext {
    /// Held spans and their indexes (this shard's share of them).
    pub memory: Account,
    /// This shard's root cache.
    pub root_cache_memory: Account,
    /// Where released spans go: the stage waits while it is full.
    pub exporter_memory: Account,
    pub telemetry: Arc<PipelineTelemetry>,
    pub stats: SharedStats,
    /// This shard's slot in `stats`.
    pub shard: usize,
    /// Cancelled when the receivers are done: drain the input, release everything, end.
    pub input_closed: CancellationToken,
    /// Cancelled at the shutdown deadline: what is still held is dropped (and counted).
    pub abandon: CancellationToken,
}

/// Spans taken in from one request per step: what one step can write out (late spans
/// enriched at once, parts of traces over their caps) stays bounded however large the
/// request, so the exporter's account is checked often enough.
const STEP_SPANS: usize = 2048;

/// While input is quiet, traces falling due are released together at most this often: a
/// root waits up to this long past `decision_wait`, and the stage (and the exporter after
/// it) wakes once per tick rather than once per trace.
const RELEASE_TICK_MS: u64 = 10;

/// How often the caps of `propagate:` and `assembler:` are reported in the log when hit.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Runs until `input` is closed (receivers gone, or `input_closed` cancelled), then
/// releases everything held and returns; or until `abandon`, counting what it still holds
/// as dropped.
///
/// Memory: the held spans and the root cache are kept in their accounts (the assembler keeps
/// itself within their limits); what is released is counted in the exporter's account
/// before it is handed on, and the stage takes no step while that account is full.
pub async fn run(
    mut assembler: Assembler,
    mut input: SpanSource,
    output: SpanSink,
    ctx: StageContext,
) {
    let epoch = Instant::now();
    let now_ms = move || epoch.elapsed().as_millis() as u64;
    let mut held = ctx.memory.empty_lease();
    let mut cached = ctx.root_cache_memory.empty_lease();
    // The request being taken in, and how far.
    let mut current: Option<(Admitted, Cursor)> = None;
    let mut closing = false;
    let mut caps = CapReport::default();
    // This shard's memory limit as configured; scaled with the budget's limits in force.
    let configured_limit = assembler.max_memory_bytes();
    // When traces were last released.
    let mut released_ms = 0u64;
    loop {
        let mut out = SpanBatch::default();
        assembler.set_max_memory_bytes(cujo_otlp::memory::scaled(
            configured_limit,
            ctx.memory.scale_permille(),
        ));
        let mut done = false;
        if ctx.abandon.is_cancelled() {
            let rest = current
                .take()
                .map_or(0, |(a, c)| Cursor::spans_after(&a.batch, &c));
            abandon(&mut assembler, &mut input, rest, &ctx.telemetry).await;
            break;
        }
        // Released spans need room where they go: wait for it before any step.
        if ctx.exporter_memory.is_full() {
            ctx.exporter_memory.note_full();
            tokio::select! {
                biased;
                _ = ctx.abandon.cancelled() => {}
                _ = ctx.exporter_memory.wait_for_room() => {}
            }
            continue;
        }
        assembler.set_output_room(ctx.exporter_memory.available());
        if let Some((admitted, cursor)) = current.as_mut() {
            let now = now_ms();
            let finished =
                assembler.ingest_step(&admitted.batch, cursor, STEP_SPANS, now, &mut out);
            // Under steady input the timer branch may never win: release here too.
            if assembler.next_due_ms().is_some_and(|d| d <= now) {
                assembler.release_due(now, &mut out);
                released_ms = now;
            }
            if finished {
                // The spans were copied out; the request's bytes go back to the budget.
                current = None;
            }
        } else {
            let next_due = assembler
                .next_due_ms()
                .map(|d| d.max(released_ms + RELEASE_TICK_MS));
            tokio::select! {
                biased;
                _ = ctx.abandon.cancelled() => continue,
                _ = ctx.input_closed.cancelled(), if !closing => {
                    closing = true;
                    input.close();
                }
                received = input.recv() => match received {
                    Some(admitted) => current = Some((admitted, Cursor::default())),
                    None => {
                        assembler.release_all(now_ms(), &mut out);
                        done = true;
                    }
                },
                _ = sleep_until_ms(epoch, next_due) => {
                    released_ms = now_ms();
                    assembler.release_due(released_ms, &mut out);
                }
            }
        }
        let (memory, cache) = assembler.memory_bytes_shared();
        held.set(memory);
        cached.set(cache);
        let stats = assembler.stats();
        caps.report(&stats, ctx.shard);
        if let Ok(mut s) = ctx.stats.lock()
            && let Some(slot) = s.get_mut(ctx.shard)
        {
            *slot = stats;
        }
        if !out.is_empty() {
            out.compact();
            let spans = out.span_count() as u64;
            let lease = ctx
                .exporter_memory
                .take(assembler.output_written() + out.handle_bytes());
            let sent = tokio::select! {
                sent = output.send(Admitted { batch: out, lease: Arc::new(lease) }) => sent.map_err(|e| e.batch),
                _ = ctx.abandon.cancelled() => Err(SpanBatch::default()),
            };
            if let Err(unsent) = sent {
                cujo_wire::tenant::settle(&unsent, false);
                ctx.telemetry.spans_dropped(
                    DropReason::Shutdown,
                    spans,
                    "the span exporter stopped before the assembler released them",
                );
            }
        }
        if done {
            break;
        }
    }
}

/// The shutdown deadline passed: counts what the stage still holds, and what waits in its
/// input, as dropped.
async fn abandon(
    assembler: &mut Assembler,
    input: &mut SpanSource,
    taking_in: usize,
    telemetry: &PipelineTelemetry,
) {
    telemetry.spans_dropped(
        DropReason::Shutdown,
        (assembler.held_spans() + taking_in) as u64,
        "shutdown deadline passed while the assembler held them",
    );
    input.close();
    while let Some(admitted) = input.recv().await {
        cujo_wire::tenant::settle(&admitted.batch, false);
        telemetry.spans_dropped(
            DropReason::Shutdown,
            admitted.span_count() as u64,
            "shutdown deadline passed before the assembler took them",
        );
    }
}

/// Logs the SLI engine's caps being hit, at most once per [`CAP_LOG_INTERVAL`] and only
/// when some count moved; the counters on `/metrics` have every hit.
#[derive(Default)]
pub struct SliCapReport {
    last: Option<Instant>,
    seen: cujo_sli::engine::SliCaps,
}

impl SliCapReport {
    pub fn report(&mut self, now: cujo_sli::engine::SliCaps) {
        // Idle series expiring is routine: reported along, but not a reason to log.
        let moved = cujo_sli::engine::SliCaps {
            series_expired: self.seen.series_expired,
            ..now
        } != self.seen;
        if !moved || self.last.is_some_and(|t| t.elapsed() < CAP_LOG_INTERVAL) {
            return;
        }
        let (was, d) = (self.seen, |a: u64, b: u64| a.saturating_sub(b));
        tracing::warn!(
            dimension_values_truncated = d(
                now.dimension_values_truncated,
                was.dimension_values_truncated
            ),
            series_expired = d(now.series_expired, was.series_expired),
            events_overflowed_max_series = d(now.overflowed_max_series, was.overflowed_max_series),
            events_overflowed_memory = d(now.overflowed_memory, was.overflowed_memory),
            traces_settled_early = d(now.settled_early, was.settled_early),
            "SLI engine caps hit since the last report (slo.max_dimension_value_bytes, slo.series_idle_ttl, max_series, its memory share, slo.max_settling_traces); see cujo_sli_* counters"
        );
        self.seen = now;
        self.last = Some(Instant::now());
    }
}

/// Logs, at most once per [`CAP_LOG_INTERVAL`], that caps on what input creates were hit
/// (the counters on `/metrics` say how often).
#[derive(Default)]
struct CapReport {
    last: Option<Instant>,
    seen: (u64, u64, u64, u64, u64),
}

impl CapReport {
    fn report(&mut self, stats: &AssemblerStats, shard: usize) {
        if self.last.is_some_and(|t| t.elapsed() < CAP_LOG_INTERVAL) {
            return;
        }
        let now = (
            stats.capped.values_truncated,
            stats.capped.attributes_dropped,
            stats.capped.names_truncated,
            stats.group_cap_releases,
            stats.root_cache_evicted,
        );
        if now == self.seen {
            return;
        }
        let d = |a: u64, b: u64| a.saturating_sub(b);
        tracing::warn!(
            shard,
            propagated_values_truncated = d(now.0, self.seen.0),
            propagated_attributes_dropped = d(now.1, self.seen.1),
            root_names_truncated = d(now.2, self.seen.2),
            traces_split_for_groups = d(now.3, self.seen.3),
            root_cache_evicted = d(now.4, self.seen.4),
            "input hit the assembler's caps (propagate.max_value_bytes, max_set_bytes, max_name_bytes, assembler.max_groups_per_trace, the root cache's memory); see cujo_assembler_capped_total"
        );
        self.seen = now;
        self.last = Some(Instant::now());
    }
}

async fn sleep_until_ms(epoch: Instant, due: Option<u64>) {
    match due {
        Some(ms) => tokio::time::sleep_until(epoch + Duration::from_millis(ms)).await,
        None => std::future::pending().await,
    }
}

/// Appends the assembler's metrics (all shards together) in the Prometheus text format.
pub fn render(shards: &[AssemblerStats], out: &mut Exposition) {
    let mut stats = AssemblerStats::default();
    for s in shards {
        stats.merge(s);
    }
    Family::gauge(
        out,
        "cujo_assembler_traces_buffered",
        "Traces held by the assembler.",
    )
    .sample(&[], stats.traces_buffered as f64);
    Family::gauge(
        out,
        "cujo_assembler_spans_buffered",
        "Spans held by the assembler.",
    )
    .sample(&[], stats.spans_buffered as f64);
    Family::gauge(
        out,
        "cujo_assembler_bytes_buffered",
        "Encoded bytes of the spans held by the assembler.",
    )
    .sample(&[], stats.bytes_buffered as f64);
    let mut f = Family::counter(
        out,
        "cujo_assembler_traces_released_total",
        "Traces (or parts of traces) released, by reason.",
    );
    for r in ReleaseReason::ALL {
        f.sample(
            &[("reason", r.label())],
            stats.traces_released[r as usize] as f64,
        );
    }
    Family::counter(
        out,
        "cujo_assembler_spans_released_total",
        "Spans released by the assembler.",
    )
    .sample(&[], stats.spans_released as f64);
    Family::counter(
        out,
        "cujo_assembler_spans_enriched_total",
        "Spans released with their origin root's attributes.",
    )
    .sample(&[], stats.spans_enriched as f64);
    Family::counter(
        out,
        "cujo_assembler_spans_streamed_total",
        "Spans written out as soon as their trace's root arrived, while the root waits decision_wait (assembler.hold: root).",
    )
    .sample(&[], stats.spans_streamed as f64);
    Family::counter(
        out,
        "cujo_assembler_late_spans_total",
        "Spans that arrived after their trace was released: enriched from the root cache, or with no root known.",
    )
    .sample(&[("outcome", "enriched")], stats.late_spans_enriched as f64)
    .sample(&[("outcome", "no_root")], stats.late_spans_without_root as f64);
    Family::counter(
        out,
        "cujo_assembler_linked_traces_total",
        "Traces continuing another through a span link: joined to its origin, or unresolved.",
    )
    .sample(&[("outcome", "joined")], stats.linked_traces_joined as f64)
    .sample(
        &[("outcome", "unresolved")],
        stats.linked_traces_unresolved as f64,
    );
    let mut h = Family::histogram(
        out,
        "cujo_assembler_release_delay_seconds",
        "How long after falling due (decision_wait after the root, or trace_timeout) traces were released.",
    );
    let mut cumulative = 0;
    for (i, bound) in RELEASE_LAG_BUCKETS_MS.iter().enumerate() {
        cumulative += stats.release_lag_ms[i];
        let le = format!("{}", *bound as f64 / 1000.0);
        h.sample_suffixed("_bucket", &[("le", &le)], cumulative as f64);
    }
    h.sample_suffixed("_bucket", &[("le", "+Inf")], stats.release_lag_count as f64);
    h.sample_suffixed("_sum", &[], stats.release_lag_sum_ms as f64 / 1000.0);
    h.sample_suffixed("_count", &[], stats.release_lag_count as f64);
    Family::gauge(
        out,
        "cujo_assembler_root_cache_entries",
        "Released traces whose origin is remembered for late and linked spans.",
    )
    .sample(&[], stats.root_cache_entries as f64);
    Family::counter(
        out,
        "cujo_assembler_root_cache_evicted_total",
        "Root cache entries forgotten before their TTL to stay within the root cache's memory (or assembler.root_cache.max_traces).",
    )
    .sample(&[], stats.root_cache_evicted as f64);
    Family::counter(
        out,
        "cujo_assembler_capped_total",
        "Times input hit a cap on what it creates: propagated string values cut to propagate.max_value_bytes (value_truncated), propagated attributes left out past propagate.max_set_bytes or as oversized non-strings (attribute_dropped), root and service names cut to propagate.max_name_bytes (name_truncated), traces released in parts past assembler.max_groups_per_trace (groups_per_trace).",
    )
    .sample(
        &[("cap", "value_truncated")],
        stats.capped.values_truncated as f64,
    )
    .sample(
        &[("cap", "attribute_dropped")],
        stats.capped.attributes_dropped as f64,
    )
    .sample(&[("cap", "name_truncated")], stats.capped.names_truncated as f64)
    .sample(&[("cap", "groups_per_trace")], stats.group_cap_releases as f64);
}

/// Milliseconds since the Unix epoch: SLO windows are wall-clock windows.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The SLI engine's families rendered for scrapes, per format, kept while the engine hands
/// out the same snapshot: scrapes many times a second render the text (megabytes over
/// thousands of series) once per snapshot, not once each.
#[derive(Default)]
pub struct RenderedSli {
    /// Per [`Format`]: the snapshot rendered, and its text.
    kept: Mutex<[Option<Rendered>; 2]>,
}

/// A snapshot of the families and its text in one format (compressed on first gzip scrape).
type Rendered = (Arc<Vec<SliFamily>>, Arc<Prepared>);

impl RenderedSli {
    /// Appends `families` to `out` in its format, rendered once per snapshot.
    pub fn append(&self, families: &Arc<Vec<SliFamily>>, out: &mut Exposition) {
        let format = out.format();
        let slot = match format {
            Format::Prometheus => 0,
            Format::OpenMetrics => 1,
        };
        let text = match self.kept.lock() {
            Ok(mut kept) => match &kept[slot] {
                Some((snapshot, text)) if Arc::ptr_eq(snapshot, families) => text.clone(),
                _ => {
                    let mut fresh = Exposition::new(format);
                    render_sli(families, &mut fresh);
                    let text = Arc::new(fresh.into_prepared());
                    kept[slot] = Some((families.clone(), text.clone()));
                    text
                }
            },
            // A reader panicked while rendering: render for this scrape alone.
            Err(_) => {
                render_sli(families, out);
                return;
            }
        };
        out.append_prepared(&text);
    }
}

/// Appends the SLI engine's metric families in the scrape's format; in OpenMetrics, bad
/// event counts and latency buckets carry the trace id of their latest event as exemplar.
pub fn render_sli(families: &[SliFamily], out: &mut Exposition) {
    for fam in families {
        let mut f = match fam.kind {
            Kind::Counter => Family::counter(out, fam.name, fam.help),
            Kind::Gauge => Family::gauge(out, fam.name, fam.help),
            Kind::Histogram => Family::histogram(out, fam.name, fam.help),
        };
        for s in &fam.samples {
            let labels: Vec<(&str, &str)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let trace_id = s
                .exemplar
                .map(|x| cujo_sli::report::trace_id_hex(&x.trace_id));
            let exemplar_labels = trace_id.as_deref().map(|id| [("trace_id", id)]);
            let exemplar = s
                .exemplar
                .zip(exemplar_labels.as_ref())
                .map(|(x, l)| Exemplar {
                    labels: l,
                    value: x.value,
                    timestamp_ms: Some(x.timestamp_ms),
                });
            f.sample_with_exemplar(s.suffix, &labels, s.value, exemplar);
        }
    }
}

/// The hand-off between the span path and the SLI engine's thread: how often a shard had
/// to wait for room (the engine was behind), and how many inputs the engine applied.
pub fn render_sli_handoff(reader: &SliReader, out: &mut Exposition) {
    Family::counter(
        out,
        "cujo_sli_handoff_waits_total",
        "Times an assembler shard found the hand-off to the SLI engine's thread full and waited for room (the engine was behind the span path; readers never cause this).",
    )
    .sample(&[], reader.handoff_waits() as f64);
    Family::counter(
        out,
        "cujo_sli_handoff_applied_total",
        "Released traces' events, late spans and linked continuations the SLI engine's thread applied.",
    )
    .sample(&[], reader.applied() as f64);
    Family::counter(
        out,
        "cujo_sli_handoff_lost_total",
        "Released traces' events, late spans and linked continuations not recorded because the SLI engine's thread had stopped (see the log); the spans themselves flow on.",
    )
    .sample(&[], reader.lost() as f64);
}

/// The write-ahead log's replays against the SLIs (`wal:` with `slo.state_file`): events
/// a restored state file had counted and a replay brought again, not counted twice; and
/// keys left out of the state file past its cap.
pub fn render_replay_guard(guard: &cujo_sli::engine::replay::ReplayGuard, out: &mut Exposition) {
    Family::counter(
        out,
        "cujo_sli_replay_skipped_events_total",
        "Events of traces replayed from the write-ahead log that the restored SLO state had already counted, so not counted again.",
    )
    .sample(&[], guard.skipped() as f64);
    Family::counter(
        out,
        "cujo_sli_replay_keys_dropped_total",
        "Counted events left out of the SLO state file's replay keys because it holds at most 1,048,576 (such an event replayed after a second crash would count twice).",
    )
    .sample(&[], guard.dropped() as f64);
}

/// Restores the SLO state from `path` if it exists, and returns the alerts it says were
/// notified as firing. A missing file is a first start; a file that cannot be read or is
/// not a valid state is reported and kept aside, never fatal.
pub fn load_sli_state(engine: &mut SliEngine, path: &std::path::Path) -> Vec<SavedAlert> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(file = %path.display(), "no SLO state file yet: windows start empty");
            return Vec::new();
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the SLO state file: ignored, windows start empty");
            return Vec::new();
        }
    };
    match engine.restore(&bytes) {
        Ok(r) => {
            tracing::info!(
                file = %path.display(),
                cujs = r.cujs,
                totals = r.totals,
                alerts = r.alerts.len(),
                counted_events = r.counted,
                "SLO state restored (totals only from a save at a clean shutdown)"
            );
            if r.totals {
                // From now on this process counts past the clean save: if it dies before its
                // first save, the next start must not take those totals back (they would go
                // below what was exported, which reads as a counter reset).
                if let Err(e) = write_durably(path, &engine.save_state_with(false, &r.alerts)) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot write the SLO state file");
                }
            }
            r.alerts
        }
        Err(e) => {
            // A file this version cannot read (corrupt, or written by a newer one) is kept
            // for whoever wants to look at it or go back: the next save must not replace it.
            let aside = set_aside_name(path, wall_clock_ms() / 1000);
            match std::fs::rename(path, &aside) {
                Ok(()) => tracing::error!(
                    file = %path.display(),
                    kept_as = %aside.display(),
                    error = %e,
                    "SLO state file not restored and kept aside; windows start empty"
                ),
                Err(rename) => tracing::error!(
                    file = %path.display(),
                    error = %e,
                    rename_error = %rename,
                    "SLO state file not restored and could not be kept aside; windows start empty"
                ),
            }
            Vec::new()
        }
    }
}

/// Where a state file that could not be restored is kept: beside it, named with the time.
fn set_aside_name(path: &std::path::Path, unix_seconds: u64) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".rejected-{unix_seconds}"));
    path.with_file_name(name)
}

/// Writes the SLO state and the alerts notified as firing to `path` durably: a temporary
/// file beside it, written and fsynced, renamed over the old one, then the directory
/// fsynced, so a crash or a power cut leaves either the old file or the new one, never half
/// of one. `clean` for the save at shutdown, after the last event was recorded.
pub async fn save_sli_state(
    engine: &SliReader,
    path: &std::path::Path,
    alerts: Option<&AlertsNotified>,
    clean: bool,
) {
    let alerts = alerts.map(AlertsNotified::get).unwrap_or_default();
    let Some((bytes, mark)) = engine
        .with(move |e| e.save_state_marked(clean, &alerts))
        .await
    else {
        tracing::warn!(file = %path.display(), "the SLI engine's thread stopped: SLO state not saved");
        return;
    };
    let path = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let written = write_durably(&path, &bytes);
        (path, written)
    })
    .await;
    match result {
        Ok((path, Ok(()))) => {
            // On disk: the events it counts let go of their log segments.
            engine.with(move |e| e.state_saved(mark)).await;
            tracing::debug!(file = %path.display(), clean, "SLO state saved")
        }
        Ok((path, Err(e))) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the SLO state file")
        }
        Err(e) => tracing::warn!(error = %e, "SLO state save task failed"),
    }
}

fn write_durably(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod state_file_tests {
    use super::*;

    #[test]
    fn a_saved_file_replaces_the_old_one_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("cujo-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("slo.state");
        write_durably(&path, b"first").expect("write");
        write_durably(&path, b"second").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        assert!(!dir.join("slo.state.tmp").exists());
        assert_eq!(
            set_aside_name(&path, 1_700_000_000),
            dir.join("slo.state.rejected-1700000000")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
