//! The trace assembler: buffers each trace until its root has arrived, then writes the root's
//! chosen attributes onto every span of the trace — and of traces that continue it through a
//! queue or a span link — before the spans move on.
//!
//! Traces are sharded by trace id ([`directory::shard_of`]): each shard is one [`Assembler`],
//! run on its own task, owning its traces outright; span links that point into another shard
//! are resolved through the shared [`directory::Directory`].
//!
//! Each [`Assembler`] is a plain, single-threaded state machine driven by the caller with a
//! clock value in milliseconds ([`Assembler::ingest`], [`Assembler::release_due`],
//! [`Assembler::release_all`]): it owns its traces outright (no locks), and tests drive time
//! without sleeping. Spans stay in protobuf wire form; each held span's bytes are copied out
//! of its request so a long-lived trace does not pin the request buffer, and resources and
//! scopes are interned so thousands of traces share one copy.
//!
//! It knows nothing of receivers, exporters or channels: spans in, spans out. A
//! [`TraceObserver`] (the SLI engine) hears of every trace released whole; it may also name
//! attribute keys whose values the assembler captures in its own pass over each arriving span
//! and classify the span into bits ([`TraceObserver::classify`]), OR-ed per trace, so the
//! observer need not read the trace's spans again.
//!
//! # Layout
//! - [`settings`]: `assembler:` and `propagate:` settings.
//! - [`origin`]: what a trace propagates ([`origin::Origin`]) and writing it onto a span.
//! - [`cache`]: the root cache of released traces' origins (TTL, bounded).
//! - [`directory`]: what the shards share — each shard's root cache and held trace ids, each
//!   behind the shard's own lock — so span links resolve across shards.
//! - this file: buffering, release policy, links, and the counters ([`AssemblerStats`]).
#![forbid(unsafe_code)]

pub mod cache;
pub mod directory;
pub mod origin;
pub mod settings;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use cujo_wire::span::{
    SpanFields, key_value, kind, read_span_with, service_name, span_attributes, span_head,
};
use cujo_wire::{ResourceHeader, ScopeGroup, SpanBatch};

pub use directory::Directory;
use origin::{Origin, SpanContext, duration_ms, enrich, enrich_fast, shared_block};
pub use settings::{AssemblerSettings, PropagateSettings};

pub type TraceId = [u8; 16];
/// A span id as a number; zero (an invalid id) stands for "no parent".
type SpanId = u64;

/// Trace and span ids are random already: hashing them again is wasted work on the hot path.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Fold 8 bytes at a time; ids are 8 or 16 bytes.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

fn span_id(id: [u8; 8]) -> SpanId {
    u64::from_le_bytes(id)
}

/// Why a trace (or part of one) was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// `decision_wait` passed after its root arrived.
    Root,
    /// `trace_timeout` passed and no root came.
    TimeoutWithoutRoot,
    /// It reached `max_spans_per_trace`.
    Size,
    /// Held spans passed `max_buffered_spans`; the oldest traces went first.
    MemoryPressure,
    Shutdown,
}

impl ReleaseReason {
    pub const ALL: [ReleaseReason; 5] = [
        ReleaseReason::Root,
        ReleaseReason::TimeoutWithoutRoot,
        ReleaseReason::Size,
        ReleaseReason::MemoryPressure,
        ReleaseReason::Shutdown,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReleaseReason::Root => "root",
            ReleaseReason::TimeoutWithoutRoot => "timeout_without_root",
            ReleaseReason::Size => "size",
            ReleaseReason::MemoryPressure => "memory_pressure",
            ReleaseReason::Shutdown => "shutdown",
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
    pub traces_released: [u64; 5],
    pub spans_released: u64,
    pub spans_enriched: u64,
    /// Spans that arrived after their trace was released and were enriched from the cache.
    pub late_spans_enriched: u64,
    /// Spans that arrived after their trace was released, with no root known.
    pub late_spans_without_root: u64,
    /// Traces whose span links led to a known origin.
    pub linked_traces_joined: u64,
    /// Traces whose span links led nowhere known (origin expired, never seen, too many hops).
    pub linked_traces_unresolved: u64,
    pub root_cache_entries: u64,
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
        self.late_spans_enriched += other.late_spans_enriched;
        self.late_spans_without_root += other.late_spans_without_root;
        self.linked_traces_joined += other.linked_traces_joined;
        self.linked_traces_unresolved += other.linked_traces_unresolved;
        self.root_cache_entries += other.root_cache_entries;
        for (a, b) in self.release_lag_ms.iter_mut().zip(other.release_lag_ms) {
            *a += b;
        }
        self.release_lag_sum_ms += other.release_lag_sum_ms;
        self.release_lag_count += other.release_lag_count;
    }
}

/// Upper bounds of the release-lag buckets (the last bucket is everything above).
pub const RELEASE_LAG_BUCKETS_MS: [u64; 10] = [0, 1, 2, 5, 10, 25, 50, 100, 250, 1000];

/// A resource and scope, shared by every held span that arrived under them.
#[derive(Clone)]
struct Group {
    resource: Arc<ResourceHeader>,
    scope: Bytes,
}

/// A span waiting for its trace's release: its own copy of the bytes (exactly sized, so a
/// long-lived trace pins nothing else), with what release needs of it that fits the struct's
/// 40 bytes, so release reads the span only to copy it. Ids are read again at release
/// ([`span_head`]) only for traces with consumer spans (async hops).
struct HeldSpan {
    bytes: Box<[u8]>,
    group: Arc<Group>,
    /// For `cujo.root.offset_ms`.
    start_ns: u64,
    /// [`origin::flags`]: whether release must look at the span's own attributes.
    flags: u8,
    /// A CONSUMER span with a parent: its trace's async hops need the span ids.
    consumer_child: bool,
    /// The span that became its trace's root (gets `cujo.trace.*`).
    root: bool,
}

/// What release reads of a held span.
struct Head {
    span_id: SpanId,
    /// Zero for a root.
    parent: SpanId,
    kind: u8,
}

fn head(span: &HeldSpan) -> Head {
    let h = span_head(&span.bytes);
    Head {
        span_id: span_id(h.span_id),
        parent: h.parent_span_id.map(span_id).unwrap_or(0),
        kind: h.kind as u8,
    }
}

struct Trace {
    first_seen_ms: u64,
    spans: Vec<HeldSpan>,
    /// The trace's own root, once it has arrived (boxed: most held traces have none yet).
    root: Option<Box<Origin>>,
    /// Another trace this one continues (the first span link to a different trace).
    link: Option<TraceId>,
    /// When the trace is next due for release.
    due_ms: u64,
    /// Latest end time of any span seen, for `cujo.trace.duration_ms`.
    last_end_ns: u64,
    span_count: u64,
    bytes: usize,
    /// The observer's [`TraceObserver::classify`] bits of every span seen, OR-ed.
    span_bits: u64,
}

/// Buffers traces and releases them enriched. See the crate docs.
pub struct Assembler {
    settings: AssemblerSettings,
    traces: IdMap<TraceId, Trace>,
    /// (due, trace) for every trace; stale pairs (the trace's due moved) are skipped.
    due: BinaryHeap<Reverse<(u64, TraceId)>>,
    /// Traces in first-seen order, for memory-pressure release; stale ids are skipped.
    arrival: VecDeque<TraceId>,
    /// The root caches and held ids of every shard; this shard's entry is `shard`.
    directory: Arc<Directory>,
    shard: usize,
    groups: HashMap<(Bytes, Bytes), Arc<Group>>,
    held_spans: usize,
    held_bytes: usize,
    stats: AssemblerStats,
    /// [`PropagateSettings::first_bytes`], computed once.
    collide_first_bytes: [bool; 256],
    /// Told about every trace released whole (the SLI engine listens here).
    observer: Option<Box<dyn TraceObserver>>,
    /// The observer's [`TraceObserver::classify_keys`], when it classifies spans.
    classify_keys: Option<Vec<Box<[u8]>>>,
    /// First bytes of `classify_keys`, so most attributes are passed over at one lookup.
    classify_first_bytes: [bool; 256],
}

/// Most attribute values an arriving span can be classified on ([`TraceObserver::classify_keys`]).
pub const CLASSIFY_KEYS: usize = 8;

/// A span as it arrives, for [`TraceObserver::classify`]: read once, for the assembler and the
/// observer together.
pub struct ArrivingSpan<'a> {
    pub fields: &'a SpanFields<'a>,
    /// The encoded `AnyValue` of each of [`TraceObserver::classify_keys`] the span has, in
    /// the same order.
    pub values: &'a [Option<&'a [u8]>],
}

/// A trace released whole, as its spans arrived (before enrichment).
pub struct ReleasedTrace<'a> {
    pub trace_id: TraceId,
    /// Each span's encoded bytes and the encoded `ResourceSpans` header it arrived under.
    pub spans: Vec<(&'a [u8], &'a [u8])>,
    /// Latest end time of any span seen for the trace.
    pub last_end_ns: u64,
    pub reason: ReleaseReason,
    /// The trace this one continues through a span link (its first link to another trace).
    pub link: Option<TraceId>,
    /// Index in `spans` of the trace's root, when it arrived.
    pub root: Option<usize>,
    /// [`TraceObserver::classify`] of every span of the trace (parts released earlier
    /// included), OR-ed; `None` when the observer does not classify spans.
    pub span_bits: Option<u64>,
}

/// Receives every trace the assembler releases whole.
pub trait TraceObserver: Send {
    fn released(&mut self, trace: &ReleasedTrace<'_>);

    /// Attribute keys [`TraceObserver::classify`] reads (at most [`CLASSIFY_KEYS`]); `None`
    /// (the default) when the observer does not classify arriving spans.
    fn classify_keys(&self) -> Option<Vec<String>> {
        None
    }

    /// Bits summarising one arriving span, read in the assembler's own pass over it; the
    /// bits of a trace's spans are OR-ed into [`ReleasedTrace::span_bits`], so the observer
    /// need not read every span again at release.
    fn classify(&self, _span: &ArrivingSpan<'_>) -> u64 {
        0
    }

    /// A span of `trace_id` that arrived after its trace was released with an origin (a
    /// queue consumer in the same trace), with the encoded `ResourceSpans` header it arrived
    /// under. Passed on at once, never held.
    fn late_span(&mut self, _trace_id: &TraceId, _span: &[u8], _resource: &[u8]) {}
}

impl Assembler {
    /// An assembler that is the only shard.
    pub fn new(settings: AssemblerSettings) -> Self {
        let directory = Arc::new(Directory::new(
            1,
            settings.root_cache_ttl.as_millis() as u64,
            settings.root_cache_max_traces,
        ));
        Self::new_shard(settings, directory, 0)
    }

    /// Shard `shard` of `directory`: it must only be given spans of traces that
    /// [`Directory::shard_of`] assigns to it.
    pub fn new_shard(settings: AssemblerSettings, directory: Arc<Directory>, shard: usize) -> Self {
        let collide_first_bytes = settings.propagate.first_bytes();
        Self {
            settings,
            traces: IdMap::default(),
            due: BinaryHeap::new(),
            arrival: VecDeque::new(),
            directory,
            shard,
            groups: HashMap::new(),
            held_spans: 0,
            held_bytes: 0,
            stats: AssemblerStats::default(),
            collide_first_bytes,
            observer: None,
            classify_keys: None,
            classify_first_bytes: [false; 256],
        }
    }

    /// Tells `observer` about every trace released whole from now on.
    pub fn set_observer(&mut self, observer: Box<dyn TraceObserver>) {
        self.classify_keys = observer
            .classify_keys()
            .filter(|keys| keys.len() <= CLASSIFY_KEYS)
            .map(|keys| {
                keys.into_iter()
                    .map(|k| k.into_bytes().into_boxed_slice())
                    .collect()
            });
        self.classify_first_bytes = [false; 256];
        for k in self.classify_keys.iter().flatten() {
            if let Some(&b) = k.first() {
                self.classify_first_bytes[b as usize] = true;
            }
        }
        self.observer = Some(observer);
    }

    /// The settings this assembler runs with.
    pub fn settings_clone(&self) -> AssemblerSettings {
        self.settings.clone()
    }

    pub fn stats(&self) -> AssemblerStats {
        let mut s = self.stats.clone();
        s.traces_buffered = self.traces.len() as u64;
        s.spans_buffered = self.held_spans as u64;
        s.bytes_buffered = self.held_bytes as u64;
        s.root_cache_entries = self.directory.index(self.shard).cache.len() as u64;
        s
    }

    /// Encoded bytes of the spans held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// What the held spans cost in memory, for the admission budget: their bytes plus the
    /// bookkeeping around them (measured at about 1.45x by `assembler-mem`).
    pub fn held_memory(&self) -> usize {
        self.held_bytes + self.held_bytes / 2
    }

    pub fn held_spans(&self) -> usize {
        self.held_spans
    }

    /// When the next trace is due, if any.
    pub fn next_due_ms(&mut self) -> Option<u64> {
        while let Some(Reverse((due, id))) = self.due.peek() {
            if self.traces.get(id).is_some_and(|t| t.due_ms == *due) {
                return Some(*due);
            }
            self.due.pop();
        }
        None
    }

    /// Takes the spans of `batch`: spans of released traces whose root is cached are enriched
    /// into `out` at once; the rest are held.
    pub fn ingest(&mut self, batch: &SpanBatch, now_ms: u64, out: &mut SpanBatch) {
        for group in &batch.groups {
            let shared = self.intern(group);
            for span in &group.spans {
                self.ingest_span(span, &shared, now_ms, out);
            }
        }
        if self.held_spans > self.settings.max_buffered_spans
            || self.held_bytes > self.settings.max_buffered_bytes
        {
            self.relieve_pressure(now_ms, out);
        }
    }

    fn intern(&mut self, group: &ScopeGroup) -> Arc<Group> {
        let key = (group.resource.bytes.clone(), group.scope.clone());
        if let Some(g) = self.groups.get(&key) {
            return g.clone();
        }
        // Own copies, so held spans do not pin the request buffer.
        let resource = Bytes::copy_from_slice(&group.resource.bytes);
        let scope = Bytes::copy_from_slice(&group.scope);
        let g = Arc::new(Group {
            resource: Arc::new(ResourceHeader {
                bytes: resource.clone(),
            }),
            scope: scope.clone(),
        });
        if self.groups.len() > 65_536 {
            self.groups.retain(|_, g| Arc::strong_count(g) > 1);
        }
        self.groups.insert((resource, scope), g.clone());
        g
    }

    fn ingest_span(&mut self, span: &Bytes, group: &Arc<Group>, now_ms: u64, out: &mut SpanBatch) {
        let mut span_flags = 0u8;
        let propagate = &self.settings.propagate;
        let first_bytes = &self.collide_first_bytes;
        let classify_keys = self.classify_keys.as_deref().unwrap_or_default();
        let classify_first = &self.classify_first_bytes;
        let mut values: [Option<&[u8]>; CLASSIFY_KEYS] = [None; CLASSIFY_KEYS];
        let f = read_span_with(span, |key, kv| {
            let Some(&first) = key.first() else { return };
            if first == b'c' && key.starts_with(b"cujo.") {
                span_flags |= origin::flags::CUJO;
            }
            if first_bytes[first as usize] && propagate.collides(key) {
                span_flags |= origin::flags::COLLIDES;
            }
            if classify_first[first as usize]
                && let Some(i) = classify_keys.iter().position(|k| **k == *key)
            {
                values[i] = Some(key_value(kv));
            }
        });
        let span_bits = match (&self.observer, &self.classify_keys) {
            (Some(observer), Some(keys)) => observer.classify(&ArrivingSpan {
                fields: &f,
                values: &values[..keys.len()],
            }),
            _ => 0,
        };
        let trace_id = f.trace_id;
        let trace = match self.traces.get_mut(&trace_id) {
            Some(t) => t,
            None => {
                // One lock of this shard's index: released already (late span), or held from now.
                let cached = {
                    let sharded = self.directory.shards() > 1;
                    let mut index = self.directory.index(self.shard);
                    let cached = index.cache.get(&trace_id, now_ms).cloned();
                    // Held ids matter only to other shards' links.
                    if cached.is_none() && sharded {
                        index.held.insert(trace_id, ());
                    }
                    cached
                };
                if let Some(cached) = cached {
                    self.release_late(span, group, &f, cached.as_deref(), out);
                    return;
                }
                let due_ms = now_ms + self.settings.trace_timeout.as_millis() as u64;
                self.arrival.push_back(trace_id);
                self.due.push(Reverse((due_ms, trace_id)));
                self.traces.entry(trace_id).or_insert(Trace {
                    first_seen_ms: now_ms,
                    spans: Vec::new(),
                    root: None,
                    link: None,
                    due_ms,
                    last_end_ns: 0,
                    span_count: 0,
                    bytes: 0,
                    span_bits: 0,
                })
            }
        };
        trace.last_end_ns = trace.last_end_ns.max(f.end_time_unix_nano);
        trace.span_count += 1;
        trace.span_bits |= span_bits;
        if trace.link.is_none() {
            trace.link = f.links.iter().map(|(t, _)| *t).find(|t| *t != trace_id);
        }
        let is_root = f.parent_span_id.is_none() && trace.root.is_none();
        if is_root {
            let propagate = &self.settings.propagate;
            let attributes = Origin::encode_attributes(
                span_attributes(span).filter(|a| propagate.selects(a.key)),
                &propagate.prefix,
            );
            trace.root = Some(Box::new(Origin {
                attributes,
                root_name: String::from_utf8_lossy(f.name).into(),
                root_service: service_name(&group.resource.bytes)
                    .unwrap_or_default()
                    .into(),
                root_start_ns: f.start_time_unix_nano,
                link_hops: 0,
            }));
            let due = now_ms + self.settings.decision_wait.as_millis() as u64;
            if due < trace.due_ms {
                trace.due_ms = due;
                self.due.push(Reverse((due, trace_id)));
            }
        }
        if trace.spans.len() == trace.spans.capacity() {
            // Grow by half, not double: held spans are most of cujo's memory.
            let extra = (trace.spans.len() / 2).max(4);
            trace.spans.reserve_exact(extra);
        }
        trace.spans.push(HeldSpan {
            bytes: Box::from(&span[..]),
            group: group.clone(),
            start_ns: f.start_time_unix_nano,
            flags: span_flags,
            consumer_child: f.kind == kind::CONSUMER && f.parent_span_id.is_some(),
            root: is_root,
        });
        trace.bytes += span.len();
        self.held_bytes += span.len();
        self.held_spans += 1;
        if trace.spans.len() >= self.settings.max_spans_per_trace.max(1) {
            self.release_part(trace_id, now_ms, ReleaseReason::Size, out);
        }
    }

    /// A span whose trace was already released: enriched from the cache now, held nothing.
    fn release_late(
        &mut self,
        span: &Bytes,
        group: &Arc<Group>,
        f: &cujo_wire::span::SpanFields<'_>,
        origin: Option<&Origin>,
        out: &mut SpanBatch,
    ) {
        self.stats.spans_released += 1;
        let Some(origin) = origin else {
            push_span(out, group, span.clone());
            self.stats.late_spans_without_root += 1;
            return;
        };
        if let Some(observer) = self.observer.as_mut() {
            observer.late_span(&f.trace_id, span, &group.resource.bytes);
        }
        // It arrived after its trace was complete, so it sits across an async boundary (a
        // consumer, or work under one). Its parent may not have arrived yet, so the path
        // cannot be walked: count one hop.
        let ctx = SpanContext {
            start_ns: f.start_time_unix_nano,
            async_hops: origin.link_hops + 1,
            root_summary: None,
        };
        let mut buf = Vec::new();
        enrich(span, origin, &ctx, &self.settings.propagate, &mut buf);
        push_span(out, group, Bytes::from(buf));
        self.stats.late_spans_enriched += 1;
        self.stats.spans_enriched += 1;
    }

    /// Releases every trace whose time has come.
    pub fn release_due(&mut self, now_ms: u64, out: &mut SpanBatch) {
        self.directory.index(self.shard).cache.expire(now_ms);
        let mut waiting = Vec::new();
        while let Some(&Reverse((due, id))) = self.due.peek() {
            if due > now_ms {
                break;
            }
            self.due.pop();
            let Some(trace) = self.traces.get(&id) else {
                continue;
            };
            if trace.due_ms != due {
                continue;
            }
            let deadline = trace.first_seen_ms + self.settings.trace_timeout.as_millis() as u64;
            // A trace continuing one that is still buffered waits for it, up to its own timeout.
            let link_pending = trace.link.is_some_and(|l| l != id && self.link_held(&l));
            if link_pending && now_ms < deadline {
                waiting.push((id, (now_ms + 10).min(deadline)));
                continue;
            }
            let lag = now_ms - due;
            let bucket = RELEASE_LAG_BUCKETS_MS
                .iter()
                .position(|b| lag <= *b)
                .unwrap_or(RELEASE_LAG_BUCKETS_MS.len() - 1);
            self.stats.release_lag_ms[bucket] += 1;
            self.stats.release_lag_sum_ms += lag;
            self.stats.release_lag_count += 1;
            let reason = if trace.root.is_some()
                || trace
                    .link
                    .is_some_and(|l| self.directory.cached(&l, now_ms).is_some())
            {
                ReleaseReason::Root
            } else {
                ReleaseReason::TimeoutWithoutRoot
            };
            self.release_trace(id, now_ms, reason, out);
        }
        for (id, due) in waiting {
            if let Some(t) = self.traces.get_mut(&id) {
                t.due_ms = due;
                self.due.push(Reverse((due, id)));
            }
        }
    }

    /// Releases everything held (shutdown). Traces continuing other held traces go last, so
    /// they find their origin in the cache.
    pub fn release_all(&mut self, now_ms: u64, out: &mut SpanBatch) {
        for _ in 0..=self.settings.max_link_hops {
            let ready: Vec<TraceId> = self
                .traces
                .iter()
                .filter(|(id, t)| !t.link.is_some_and(|l| l != **id && self.link_held(&l)))
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() {
                break;
            }
            for id in ready {
                self.release_trace(id, now_ms, ReleaseReason::Shutdown, out);
            }
        }
        let rest: Vec<TraceId> = self.traces.keys().copied().collect();
        for id in rest {
            self.release_trace(id, now_ms, ReleaseReason::Shutdown, out);
        }
    }

    fn relieve_pressure(&mut self, now_ms: u64, out: &mut SpanBatch) {
        let spans = self.settings.max_buffered_spans - self.settings.max_buffered_spans / 10;
        let bytes = self.settings.max_buffered_bytes - self.settings.max_buffered_bytes / 10;
        while self.held_spans > spans || self.held_bytes > bytes {
            let Some(id) = self.arrival.pop_front() else {
                break;
            };
            if self.traces.contains_key(&id) {
                self.release_trace(id, now_ms, ReleaseReason::MemoryPressure, out);
            }
        }
    }

    /// The origin of a trace: its own root merged with the origin it links to.
    fn origin_of(
        &mut self,
        own: Option<Origin>,
        link: Option<TraceId>,
        now_ms: u64,
    ) -> Option<Origin> {
        let linked = match link {
            None => None,
            Some(l) => match self.directory.cached(&l, now_ms) {
                Some(Some(o)) if o.link_hops < self.settings.max_link_hops => {
                    self.stats.linked_traces_joined += 1;
                    Some(o)
                }
                _ => {
                    self.stats.linked_traces_unresolved += 1;
                    None
                }
            },
        };
        Origin::merge(own, linked.as_deref())
    }

    fn release_trace(
        &mut self,
        id: TraceId,
        now_ms: u64,
        reason: ReleaseReason,
        out: &mut SpanBatch,
    ) {
        let Some(mut trace) = self.traces.remove(&id) else {
            return;
        };
        let origin = self
            .origin_of(trace.root.take().map(|b| *b), trace.link, now_ms)
            .map(Arc::new);
        self.emit(&trace, origin.as_deref(), reason, out);
        if let Some(observer) = self.observer.as_mut() {
            observer.released(&ReleasedTrace {
                trace_id: id,
                spans: trace
                    .spans
                    .iter()
                    .map(|s| (&s.bytes[..], &s.group.resource.bytes[..]))
                    .collect(),
                last_end_ns: trace.last_end_ns,
                reason,
                link: trace.link,
                root: trace.spans.iter().position(|s| s.root),
                span_bits: self.classify_keys.is_some().then_some(trace.span_bits),
            });
        }
        // A trace pushed out early by memory pressure may still get its root: remember it
        // only if it had an origin, so the root and later spans start a fresh buffer.
        let sharded = self.directory.shards() > 1;
        let mut index = self.directory.index(self.shard);
        if sharded {
            index.held.remove(&id);
        }
        if origin.is_some() || reason != ReleaseReason::MemoryPressure {
            index.cache.insert(id, origin, now_ms);
        }
    }

    /// Whether the trace `link` points to is held now, here or in another shard.
    fn link_held(&self, link: &TraceId) -> bool {
        if self.directory.shard_of(link) == self.shard {
            self.traces.contains_key(link)
        } else {
            self.directory.is_held(link)
        }
    }

    /// Releases what a trace holds now (it reached `max_spans_per_trace`); the trace stays
    /// open for later spans.
    fn release_part(
        &mut self,
        id: TraceId,
        now_ms: u64,
        reason: ReleaseReason,
        out: &mut SpanBatch,
    ) {
        let Some(mut trace) = self.traces.remove(&id) else {
            return;
        };
        let origin = if trace.root.is_some() || trace.link.is_some() {
            self.origin_of(trace.root.as_deref().cloned(), trace.link, now_ms)
        } else {
            None
        };
        self.emit(&trace, origin.as_ref(), reason, out);
        trace.spans = Vec::new();
        trace.bytes = 0;
        self.traces.insert(id, trace);
    }

    /// Writes what `trace` holds to `out` (enriched when there is an origin) and takes it off
    /// the held counts.
    fn emit(
        &mut self,
        trace: &Trace,
        origin: Option<&Origin>,
        reason: ReleaseReason,
        out: &mut SpanBatch,
    ) {
        let spans = &trace.spans;
        self.stats.traces_released[reason as usize] += 1;
        self.stats.spans_released += spans.len() as u64;
        self.held_spans -= spans.len();
        self.held_bytes -= trace.bytes;
        let Some(origin) = origin else {
            for s in spans {
                push_span(out, &s.group, Bytes::copy_from_slice(&s.bytes));
            }
            return;
        };
        // Hop counts need the span tree only when the trace has a consumer under a parent.
        let hops = if spans.iter().any(|s| s.consumer_child) {
            let heads: Vec<Head> = spans.iter().map(head).collect();
            async_hops(&heads, origin.link_hops)
        } else {
            vec![origin.link_hops; spans.len()]
        };
        let duration = origin_duration(trace, origin);
        let shared = shared_block(origin);
        let mut buf = Vec::with_capacity(trace.bytes + spans.len() * (shared.len() + 64));
        let mut offsets = Vec::with_capacity(spans.len());
        for (s, h) in spans.iter().zip(hops) {
            let start = buf.len();
            let root_summary = s.root.then_some((trace.span_count, duration));
            let ctx = SpanContext {
                start_ns: s.start_ns,
                async_hops: h,
                root_summary,
            };
            if s.flags == 0 {
                enrich_fast(&s.bytes, &shared, &ctx, origin, &mut buf);
            } else {
                enrich(&s.bytes, origin, &ctx, &self.settings.propagate, &mut buf);
            }
            offsets.push((start, buf.len()));
        }
        self.stats.spans_enriched += spans.len() as u64;
        // One allocation for the whole trace; each span is a slice of it.
        let buf = Bytes::from(buf);
        for (s, (a, b)) in spans.iter().zip(offsets) {
            push_span(out, &s.group, buf.slice(a..b));
        }
    }
}

fn origin_duration(trace: &Trace, origin: &Origin) -> i64 {
    duration_ms(origin.root_start_ns, trace.last_end_ns)
}

fn push_span(out: &mut SpanBatch, group: &Arc<Group>, bytes: Bytes) {
    if let Some(last) = out.groups.last_mut()
        && Arc::ptr_eq(&last.resource, &group.resource)
        && last.scope.as_ptr() == group.scope.as_ptr()
    {
        last.spans.push(bytes);
        return;
    }
    out.groups.push(ScopeGroup {
        resource: group.resource.clone(),
        scope: group.scope.clone(),
        spans: vec![bytes],
    });
}

/// Async hops of each span: the trace's base (`link_hops`) plus one for every CONSUMER span
/// with a parent on its path to the root within the trace.
fn async_hops(spans: &[Head], base: u32) -> Vec<u32> {
    let consumer = kind::CONSUMER as u8;
    if !spans.iter().any(|s| s.kind == consumer && s.parent != 0) {
        return vec![base; spans.len()];
    }
    let index: IdMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut memo: Vec<Option<u32>> = vec![None; spans.len()];
    let mut path = Vec::new();
    for i in 0..spans.len() {
        // Walk up until a known value, then fill the path back down.
        path.clear();
        let mut cur = Some(i);
        let mut value = base;
        while let Some(c) = cur {
            if let Some(v) = memo[c] {
                value = v;
                break;
            }
            if path.len() > spans.len() {
                break; // a parent cycle in bad data
            }
            path.push(c);
            let parent = spans[c].parent;
            cur = (parent != 0).then(|| index.get(&parent).copied()).flatten();
        }
        for &c in path.iter().rev() {
            let s = &spans[c];
            if s.kind == consumer && s.parent != 0 {
                value += 1;
            }
            memo[c] = Some(value);
        }
    }
    memo.into_iter().map(|v| v.unwrap_or(base)).collect()
}
