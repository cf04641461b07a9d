//! Runs the trace assembler as a pipeline stage: accepted spans in from the receivers,
//! enriched spans out to the exporter, with the clock, the admission budget and the metrics
//! around the plain [`Assembler`] state machine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cujo_assembler::{ArrivingSpan, CLASSIFY_KEYS, Cursor, ReleasedTrace, TraceObserver};
use cujo_assembler::{
    Assembler, AssemblerSettings, AssemblerStats, PropagateSettings, RELEASE_LAG_BUCKETS_MS,
    ReleaseReason,
};
use cujo_otlp::admission::{Admitted, SpanSink, SpanSource};
use cujo_otlp::memory::{Account, Component, MemoryBudget};
use cujo_otlp::prom::{Exemplar, Exposition, Family};
use cujo_otlp::telemetry::{DropReason, PipelineTelemetry};
use cujo_sli::condition::{ConditionSet, Scalar, SpanFacts, StatusCode};
use cujo_sli::cuj::TraceFacts;
use cujo_sli::engine::{Kind, SliEngine};
use cujo_wire::SpanBatch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The assembler's settings from the config (defaults for whichever section is absent), its
/// memory and its root cache's bounded by their shares of `budget`.
pub fn settings(config: &Config, budget: &MemoryBudget) -> AssemblerSettings {
    let a = config.assembler.clone().unwrap_or_default();
    let p = config.propagate.clone().unwrap_or_default();
    AssemblerSettings {
        decision_wait: a.decision_wait.0,
        trace_timeout: a.trace_timeout.0,
        max_spans_per_trace: a.max_spans_per_trace,
        max_groups_per_trace: a.max_groups_per_trace,
        max_buffered_spans: a.max_buffered_spans,
        max_memory_bytes: budget.limit(Component::Assembler),
        root_cache_ttl: a.root_cache.ttl.0,
        root_cache_max_traces: a.root_cache.max_traces,
        root_cache_max_bytes: budget.limit(Component::RootCache),
        max_link_hops: a.max_link_hops,
        propagate: PropagateSettings {
            attributes: p.attributes,
            prefix: p.prefix,
            overwrite: p.overwrite,
            max_value_bytes: p.max_value_bytes.0 as usize,
            max_set_bytes: p.max_set_bytes.0 as usize,
            max_name_bytes: p.max_name_bytes.0 as usize,
        },
    }
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
            }
            if finished {
                // The spans were copied out; the request's bytes go back to the budget.
                current = None;
            }
        } else {
            let next_due = assembler.next_due_ms();
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
                _ = sleep_until_ms(epoch, next_due) => assembler.release_due(now_ms(), &mut out),
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
                sent = output.send(Admitted { batch: out, lease: Arc::new(lease) }) => sent.is_ok(),
                _ = ctx.abandon.cancelled() => false,
            };
            if !sent {
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

/// A span in wire form, as the SLI conditions read it: fields and attributes read once.
struct WireSpan<'a> {
    bytes: &'a [u8],
    fields: cujo_wire::span::SpanFields<'a>,
    service: &'a str,
    /// The keys the CUJs read ([`SliEngine::attribute_keys`]) and, in the same order, the
    /// encoded values this span has for the first [`HELD_KEYS`] of them: read in the same
    /// pass as the fields (no allocation per span), so conditions never walk the span again.
    keys: &'a [String],
    values: [Option<&'a [u8]>; HELD_KEYS],
    /// `values` decoded, on first use: ten CUJs matching the same root ask for the same key.
    scalars: [std::cell::OnceCell<Option<Scalar<'a>>>; HELD_KEYS],
}

/// How many attribute values a [`WireSpan`] keeps; keys past these are looked up in the span.
const HELD_KEYS: usize = 8;

impl<'a> WireSpan<'a> {
    fn new(bytes: &'a [u8], service: &'a str, keys: &'a [String]) -> Self {
        let mut values = [None; HELD_KEYS];
        let held = &keys[..keys.len().min(HELD_KEYS)];
        let fields = cujo_wire::span::read_span_with(bytes, |key, kv| {
            if let Some(i) = held.iter().position(|k| k.as_bytes() == key) {
                values[i] = Some(cujo_wire::span::key_value(kv));
            }
        });
        Self {
            bytes,
            fields,
            service,
            keys,
            values,
            scalars: Default::default(),
        }
    }
}

impl SpanFacts for WireSpan<'_> {
    fn name(&self) -> &str {
        std::str::from_utf8(self.fields.name).unwrap_or("")
    }

    fn service(&self) -> &str {
        self.service
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_otlp(self.fields.status_code)
    }

    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        match self.keys.iter().position(|k| k == key) {
            Some(i) if i < HELD_KEYS => {
                *self.scalars[i].get_or_init(|| self.values[i].and_then(scalar))
            }
            // A key past the held ones, or one no CUJ declared: look it up in the span.
            _ => scalar(cujo_wire::span::span_attribute_value(
                self.bytes,
                key.as_bytes(),
            )?),
        }
    }

    fn times_ns(&self) -> Option<(u64, u64)> {
        Some((
            self.fields.start_time_unix_nano,
            self.fields.end_time_unix_nano,
        ))
    }
}

/// The scalar inside an encoded `AnyValue` (string, bool, int or double).
fn scalar(any_value: &[u8]) -> Option<Scalar<'_>> {
    use cujo_wire::proto::{FieldReader, Value};
    let mut r = FieldReader::new(any_value, "AnyValue");
    // The first field that is a scalar; arrays, maps and bytes have none.
    std::iter::from_fn(|| r.next_field()?.ok()).find_map(|f| match (f.number, f.value) {
        (1, Value::Len(s)) => std::str::from_utf8(s).ok().map(Scalar::Str),
        (2, Value::Varint(b)) => Some(Scalar::Bool(b != 0)),
        (3, Value::Varint(i)) => Some(Scalar::Int(i as i64)),
        (4, Value::I64(bits)) => Some(Scalar::Double(f64::from_bits(bits))),
        _ => None,
    })
}

/// An arriving span as the assembler read it, for the trace-scope conditions
/// ([`ConditionSet::classify`]): they read status and attributes only (no times).
struct Arriving<'a> {
    span: &'a ArrivingSpan<'a>,
    keys: &'a [String],
}

impl SpanFacts for Arriving<'_> {
    fn name(&self) -> &str {
        std::str::from_utf8(self.span.fields.name).unwrap_or("")
    }

    fn service(&self) -> &str {
        // Conditions never ask (only root matchers do).
        ""
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_otlp(self.span.fields.status_code)
    }

    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        let i = self.keys.iter().position(|k| k == key)?;
        scalar((*self.span.values.get(i)?)?)
    }
}

/// Feeds every trace the assembler releases whole to the SLI engine, and — when some CUJ
/// measures `end_to_end` or `{from, to}` — the late spans and linked traces that continue
/// traces whose events are still settling.
pub struct SliObserver {
    engine: Arc<Mutex<SliEngine>>,
    /// Whether some CUJ settles (fixed by the config): otherwise late spans and links are
    /// not looked at, and the hot path takes no lock for them.
    settles: bool,
    /// Whether some CUJ looks past the root (fixed by the config).
    needs_all_spans: bool,
    /// The attribute keys the CUJs read, so each span is read once, before the lock.
    keys: Vec<String>,
    /// The trace-scope CUJs' conditions, evaluated on each span as the assembler reads it
    /// on arrival, so released traces need not be read again span by span.
    conditions: Option<ConditionSet>,
    /// The attribute keys `conditions` read, in the order the assembler captures them.
    condition_keys: Vec<String>,
    /// Whether spans besides the root must be read at release even with the trace's
    /// condition bits (a `{from, to}` CUJ).
    spans_besides_bits: bool,
}

impl SliObserver {
    pub fn new(engine: Arc<Mutex<SliEngine>>) -> Self {
        let (settles, needs_all_spans, keys, conditions, spans_besides_bits) = engine
            .lock()
            .map(|e| {
                (
                    e.settles(),
                    e.needs_all_spans(),
                    e.attribute_keys(),
                    e.span_conditions().cloned(),
                    e.needs_spans_besides_bits(),
                )
            })
            .unwrap_or_default();
        let condition_keys = conditions
            .as_ref()
            .map(ConditionSet::attribute_keys)
            .unwrap_or_default();
        // Too many keys to capture on arrival: read the spans at release instead.
        let conditions = conditions.filter(|_| condition_keys.len() <= CLASSIFY_KEYS);
        Self {
            engine,
            settles,
            needs_all_spans,
            keys,
            spans_besides_bits: spans_besides_bits || conditions.is_none(),
            conditions,
            condition_keys,
        }
    }
}

/// Milliseconds since the Unix epoch: SLO windows are wall-clock windows.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Every span of a released trace as [`WireSpan`]s, reading each resource's `service.name`
/// once (resources repeat across a trace's spans).
fn wire_spans<'a>(spans: &[(&'a [u8], &'a [u8])], keys: &'a [String]) -> Vec<WireSpan<'a>> {
    let mut services: Vec<(*const u8, &str)> = Vec::new();
    spans
        .iter()
        .map(|(s, r)| {
            let key = r.as_ptr();
            let service = match services.iter().find(|(k, _)| *k == key) {
                Some((_, svc)) => *svc,
                None => {
                    let svc = cujo_wire::span::service_name(r).unwrap_or("");
                    services.push((key, svc));
                    svc
                }
            };
            WireSpan::new(s, service, keys)
        })
        .collect()
}

impl TraceObserver for SliObserver {
    fn classify_keys(&self) -> Option<Vec<String>> {
        self.conditions
            .as_ref()
            .map(|_| self.condition_keys.clone())
    }

    fn classify(&self, span: &ArrivingSpan<'_>) -> u64 {
        self.conditions.as_ref().map_or(0, |c| {
            c.classify(&Arriving {
                span,
                keys: &self.condition_keys,
            })
        })
    }

    fn released(&mut self, trace: &ReleasedTrace<'_>) {
        // A trace continuing another through a link may extend a settling event.
        let linked = trace.link.filter(|_| self.settles);
        // Spans are read before the engine's lock is taken; non-root spans only when some
        // CUJ looks past the root in a way the arrival bits do not cover, or to fold them
        // into the event of the trace they continue.
        let keys = &self.keys;
        let bits_cover = trace.span_bits.is_some() && !self.spans_besides_bits;
        // The root is either among every span read, or read alone (most traces).
        let (spans, among, alone) = if (self.needs_all_spans && !bits_cover) || linked.is_some() {
            (wire_spans(&trace.spans, keys), trace.root, None)
        } else {
            let alone = trace
                .root
                .and_then(|i| trace.spans.get(i))
                .map(|&(bytes, resource)| {
                    WireSpan::new(
                        bytes,
                        cujo_wire::span::service_name(resource).unwrap_or(""),
                        keys,
                    )
                });
            (Vec::new(), None, alone)
        };
        let root = among.and_then(|i| spans.get(i)).or(alone.as_ref());
        if root.is_none() && linked.is_none() {
            return;
        }
        let Ok(mut engine) = self.engine.lock() else {
            return;
        };
        if let Some(to) = linked {
            engine.observe_linked(trace.trace_id, to, &spans);
        }
        // Only a trace released with its own root is an event of a journey.
        let Some(root) = root else {
            return;
        };
        let facts = TraceFacts {
            trace_id: trace.trace_id,
            root,
            root_start_ns: root.fields.start_time_unix_nano,
            root_end_ns: root.fields.end_time_unix_nano,
            spans: &spans,
            last_end_ns: trace.last_end_ns,
            span_bits: trace.span_bits,
        };
        engine.observe(&facts, wall_clock_ms());
    }

    fn late_span(&mut self, trace_id: &[u8; 16], span: &[u8], resource: &[u8]) {
        if !self.settles {
            return;
        }
        let Ok(mut engine) = self.engine.lock() else {
            return;
        };
        let span = WireSpan::new(
            span,
            cujo_wire::span::service_name(resource).unwrap_or(""),
            &self.keys,
        );
        engine.observe_late(*trace_id, &span);
    }
}

/// Appends the SLI engine's metric families in the scrape's format; in OpenMetrics, bad
/// event counts and latency buckets carry the trace id of their latest event as exemplar.
pub fn render_sli(engine: &SliEngine, out: &mut Exposition) {
    for fam in engine.families(wall_clock_ms()) {
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

/// Restores the CUJs' windows from `path` if it exists. A missing file is a first start; a
/// file that cannot be read or is not a valid state is reported and ignored, never fatal.
pub fn load_sli_state(engine: &Mutex<SliEngine>, path: &std::path::Path) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(file = %path.display(), "no SLO state file yet: windows start empty");
            return;
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the SLO state file: ignored, windows start empty");
            return;
        }
    };
    let result = match engine.lock() {
        Ok(mut e) => e.restore_state(&bytes),
        Err(_) => return,
    };
    match result {
        Ok(n) => tracing::info!(file = %path.display(), cujs = n, "SLO windows restored"),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "SLO state file ignored, windows start empty")
        }
    }
}

/// Writes the CUJs' windows to `path` (via a temporary file and a rename, so a crash never
/// leaves half a file).
pub async fn save_sli_state(engine: &Mutex<SliEngine>, path: &std::path::Path) {
    let bytes = match engine.lock() {
        Ok(e) => e.save_state(),
        Err(_) => return,
    };
    let path = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)?;
        Ok::<_, std::io::Error>(path)
    })
    .await;
    match result {
        Ok(Ok(path)) => tracing::debug!(file = %path.display(), "SLO state saved"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the SLO state file"),
        Err(e) => tracing::warn!(error = %e, "SLO state save task failed"),
    }
}
