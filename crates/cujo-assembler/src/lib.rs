//! The trace assembler: buffers each trace until its root has arrived, then writes the root's
//! chosen attributes onto every span of the trace — and of traces that continue it through a
//! queue or a span link — before the spans move on. Once the root is there, the trace's other
//! spans go at once; the root waits `decision_wait` for stragglers (its `cujo.trace.*`
//! summary counts them), and so do traces that release needs whole — a span link, an
//! observer reading every span ([`AssemblerSettings::stream_after_root`]). In a trace with a
//! consumer, a span goes once its path to the root is there (its async hops are known).
//!
//! Traces are sharded by trace id ([`directory::shard_of`]): each shard is one [`Assembler`],
//! run on its own task, owning its traces outright; span links that point into another shard
//! are resolved through the shared [`directory::Directory`].
//!
//! Each [`Assembler`] is a plain, single-threaded state machine driven by the caller with a
//! clock value in milliseconds ([`Assembler::ingest_step`], [`Assembler::release_due`],
//! [`Assembler::release_all`]): it owns its traces outright (no locks), and tests drive time
//! without sleeping. Spans stay in protobuf wire form; each held span's bytes are copied out
//! of its request into its trace's buffer, so a long-lived trace does not pin the request,
//! and resources and scopes are interned so thousands of traces share one copy.
//!
//! Memory is bounded and counted: [`Assembler::memory_bytes`] is what the held spans and
//! every index over them occupy (allocator size classes included), kept under
//! `max_memory_bytes` by releasing traces early (those whose root has arrived first, so
//! they go enriched; then the oldest); the root cache keeps itself under
//! its own bytes; what one step may write out is limited by [`Assembler::set_output_room`];
//! and `propagate:`'s caps bound what propagation adds to a span. Maps keyed by ids come
//! from the input, so they hash with a per-process random seed.
//!
//! It knows nothing of receivers, exporters or channels: spans in, spans out. A
//! [`TraceObserver`] (the SLI engine) hears of every trace released whole; it may also name
//! attribute keys whose values the assembler captures in its own pass over each arriving span
//! and classify the span into bits ([`TraceObserver::classify`]), OR-ed per trace, so the
//! observer need not read the trace's spans again.
//!
//! Its config sections (`assembler:`, `propagate:`) are its own types ([`config`]), which
//! check themselves and resolve into [`AssemblerSettings`]; it knows nothing of the config
//! file, which the binary loads and composes.
//!
//! # Layout
//! - [`config`]: the `assembler:` and `propagate:` sections, their `validate`, and their
//!   resolution into settings (given the memory budget's shares as byte limits).
//! - [`settings`]: `assembler:` and `propagate:` settings, resolved to plain values.
//! - [`origin`]: what a trace propagates ([`origin::Origin`], capped) and writing it onto a span.
//! - [`cache`]: the root cache of released traces' origins (TTL, entries, bytes).
//! - [`directory`]: what the shards share — each shard's root cache and held trace ids, each
//!   behind the shard's own lock — so span links resolve across shards.
//! - `held`: how a held trace is laid out (one buffer of span bytes, 16 bytes of facts per
//!   span) and the shard's table of interned resources and scopes.
//! - `emit`: writing a released trace (or a late span) out, enriched.
//! - [`stats`]: release reasons and the counters ([`AssemblerStats`]).
//! - this file: taking spans in, the release policy, links, memory.
#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod directory;
mod emit;
mod held;
mod keys;
pub mod origin;
pub mod settings;
pub mod stats;
mod table;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use std::sync::Arc;
use table::CountedMap;

use bytes::Bytes;
use cujo_wire::SpanBatch;
use cujo_wire::alloc::{allocation_size, vec_bytes};
use cujo_wire::span::{SpanFields, key_value, kind, read_span_with, span_key_values};

pub use directory::Directory;
use held::{GroupTable, HeldSpan, Pending, Trace, span_flags};
use origin::Origin;
pub use settings::{AssemblerSettings, PropagateSettings};
pub use stats::{AssemblerStats, RELEASE_LAG_BUCKETS_MS, ReleaseReason};

pub type TraceId = [u8; 16];

/// The hasher of every map keyed by what clients send (trace and span ids, resources):
/// fast, and seeded at random per process and per map, so crafted ids cannot be aimed at one
/// bucket.
pub(crate) type RandomState = foldhash::fast::RandomState;

pub(crate) fn random_state() -> RandomState {
    RandomState::default()
}

pub(crate) type IdMap<K, V> = HashMap<K, V, RandomState>;

/// Where taking in a request stands ([`Assembler::ingest_step`]): the next span to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    group: usize,
    span: usize,
}

impl Cursor {
    /// Spans of `batch` from `cursor` on.
    pub fn spans_after(batch: &SpanBatch, cursor: &Cursor) -> usize {
        batch
            .groups
            .iter()
            .enumerate()
            .skip(cursor.group)
            .map(|(i, g)| {
                if i == cursor.group {
                    g.spans.len().saturating_sub(cursor.span)
                } else {
                    g.spans.len()
                }
            })
            .sum()
    }
}

/// Buffers traces and releases them enriched. See the crate docs.
pub struct Assembler {
    settings: AssemblerSettings,
    /// Boxed: the table's slots stay small (a quarter of them or more are empty).
    traces: CountedMap<TraceId, Box<Trace>>,
    /// (due, trace) for every trace; stale pairs (the trace's due moved) are skipped.
    due: BinaryHeap<Reverse<(u64, TraceId)>>,
    /// Traces in first-seen order, for memory-pressure release; stale ids are skipped.
    arrival: VecDeque<TraceId>,
    /// Traces in the order their roots arrived: memory pressure releases these first (they
    /// wait only for stragglers); stale ids are skipped.
    rooted: VecDeque<TraceId>,
    /// The root caches and held ids of every shard; this shard's entry is `shard`.
    directory: Arc<Directory>,
    shard: usize,
    groups: GroupTable,
    held_spans: usize,
    /// Encoded bytes of the held spans.
    held_bytes: usize,
    /// What the traces hold on the heap, as last accounted ([`Trace::heap_bytes`]).
    trace_heap: usize,
    stats: AssemblerStats,
    /// [`PropagateSettings::collide_filter`], computed once.
    collide_filter: keys::KeyFilter,
    /// [`PropagateSettings::select_filter`], computed once.
    select_filter: keys::KeyFilter,
    /// Told about every trace released whole (the SLI engine listens here).
    observer: Option<Box<dyn TraceObserver>>,
    /// The observer's [`TraceObserver::classify_keys`], when it classifies spans.
    classify_keys: Option<Vec<Box<[u8]>>>,
    /// `classify_keys` by first byte and length, so most attributes are passed over at one
    /// lookup.
    classify_filter: keys::KeyFilter,
    /// The observer reads every span of a released trace ([`TraceObserver::needs_every_span`]):
    /// traces are then held whole, not streamed.
    observer_reads_spans: bool,
    /// How many bytes the current step may write out ([`Assembler::set_output_room`]).
    output_room: usize,
    /// Memory of what was written out since the room was last set.
    output_written: usize,
    /// Where the groups of the batch being written out are.
    output_groups: emit::OutputGroups,
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
    /// The key the trace was held under: its id, mixed with its tenant's salt for a tenant
    /// other than the default ([`cujo_wire::tenant::trace_key`]); [`ReleasedTrace::link`] and
    /// [`TraceObserver::late_span`] use the same keys.
    pub trace_id: TraceId,
    /// The trace id as its spans carry it (for exemplars and links a person follows).
    pub sent_trace_id: TraceId,
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
    /// The pins (write-ahead log segments) the trace's spans arrived under, each once, the
    /// root's first; empty without a log. An observer that must outlive the spans' stay
    /// in the log (the SLI engine, until its state is saved) keeps clones.
    pub pins: Vec<cujo_wire::Pin>,
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

    /// A span of `trace_id` (the key, as in [`ReleasedTrace::trace_id`]) that arrived after its trace was released with an origin (a
    /// queue consumer in the same trace), with the encoded `ResourceSpans` header it arrived
    /// under. Passed on at once, never held.
    fn late_span(&mut self, _trace_id: &TraceId, _span: &[u8], _resource: &[u8]) {}

    /// Whether [`TraceObserver::released`] reads every span of a trace. When it reads only
    /// the root (with [`ReleasedTrace::span_bits`] and [`ReleasedTrace::last_end_ns`]), the
    /// assembler writes a trace's other spans out as soon as its root has arrived and holds
    /// only the root for `decision_wait`: `released` then lists the root and the spans held
    /// since. The default is the safe answer.
    fn needs_every_span(&self) -> bool {
        true
    }

    /// The end of one step of the assembler ([`Assembler::ingest_step`],
    /// [`Assembler::release_due`], [`Assembler::release_all`]): an observer that batches what
    /// it heard hands it on now.
    fn flush(&mut self) {}
}

impl Assembler {
    /// An assembler that is the only shard.
    pub fn new(settings: AssemblerSettings) -> Self {
        let directory = Arc::new(Directory::new(
            1,
            settings.root_cache_ttl.as_millis() as u64,
            settings.root_cache_max_traces,
            settings.root_cache_max_bytes,
        ));
        Self::new_shard(settings, directory, 0)
    }

    /// Shard `shard` of `directory`: it must only be given spans of traces that
    /// [`Directory::shard_of`] assigns to it.
    pub fn new_shard(settings: AssemblerSettings, directory: Arc<Directory>, shard: usize) -> Self {
        let collide_filter = settings.propagate.collide_filter();
        let select_filter = settings.propagate.select_filter();
        Self {
            settings,
            traces: CountedMap::new(),
            due: BinaryHeap::new(),
            arrival: VecDeque::new(),
            rooted: VecDeque::new(),
            directory,
            shard,
            groups: GroupTable::new(),
            held_spans: 0,
            held_bytes: 0,
            trace_heap: 0,
            stats: AssemblerStats::default(),
            collide_filter,
            select_filter,
            observer: None,
            classify_keys: None,
            classify_filter: keys::KeyFilter::empty(),
            observer_reads_spans: false,
            output_room: usize::MAX,
            output_written: 0,
            output_groups: emit::OutputGroups::new(),
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
        self.classify_filter = keys::KeyFilter::empty();
        for k in self.classify_keys.iter().flatten() {
            self.classify_filter.add_exact(k);
        }
        self.observer_reads_spans = observer.needs_every_span();
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
        s.memory_bytes = self.memory_bytes() as u64;
        let index = self.directory.index(self.shard);
        s.root_cache_entries = index.cache.len() as u64;
        s.root_cache_evicted = index.cache.evicted;
        s.root_cache_bytes = index.cache.bytes() as u64;
        s
    }

    /// Encoded bytes of the spans held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    pub fn held_spans(&self) -> usize {
        self.held_spans
    }

    /// Memory the held spans and every index over them occupy, counted by allocation:
    /// each trace's buffer, span facts and group list, its root's origin, the trace table,
    /// the release queues and the interned resources and scopes. This shard's held ids in
    /// the directory are counted by [`Assembler::memory_bytes_shared`].
    pub fn memory_bytes(&self) -> usize {
        self.trace_heap
            + self.traces.bytes()
            + vec_bytes::<Reverse<(u64, TraceId)>>(self.due.capacity())
            + vec_bytes::<TraceId>(self.arrival.capacity())
            + vec_bytes::<TraceId>(self.rooted.capacity())
            + self.groups.memory_bytes()
    }

    /// [`Assembler::memory_bytes`] by part, walking every held trace (for benchmarks and
    /// tests, not the span path): (part, bytes) pairs adding up to it.
    pub fn memory_breakdown(&self) -> Vec<(&'static str, usize)> {
        let (mut data, mut facts, mut groups, mut origins) = (0, 0, 0, 0);
        for t in self.traces.values() {
            data += allocation_size(t.data.capacity());
            facts += vec_bytes::<HeldSpan>(t.spans.capacity());
            groups += vec_bytes::<Arc<held::Group>>(t.groups.capacity());
            origins += t.root.as_ref().map_or(0, |o| {
                allocation_size(std::mem::size_of::<Origin>()) + o.heap_bytes()
            });
        }
        vec![
            ("span bytes", data),
            ("span facts", facts),
            ("trace group lists", groups),
            ("origins", origins),
            ("trace table", self.traces.bytes()),
            (
                "release queue",
                vec_bytes::<Reverse<(u64, TraceId)>>(self.due.capacity()),
            ),
            (
                "arrival queue",
                vec_bytes::<TraceId>(self.arrival.capacity()),
            ),
            ("rooted queue", vec_bytes::<TraceId>(self.rooted.capacity())),
            ("interned resources", self.groups.memory_bytes()),
        ]
    }

    /// [`Assembler::memory_bytes`] plus this shard's part of what the shards share: its held
    /// ids (for links from other shards) and its root cache, as (assembler, root cache).
    pub fn memory_bytes_shared(&self) -> (usize, usize) {
        let index = self.directory.index(self.shard);
        let held_ids = index.held.bytes();
        (self.memory_bytes() + held_ids, index.cache.bytes())
    }

    /// The memory the assembler keeps itself under (`max_memory_bytes`): lowered while
    /// the process's resident set is too far over its budget, so traces go early at the
    /// next step.
    pub fn set_max_memory_bytes(&mut self, bytes: usize) {
        self.settings.max_memory_bytes = bytes;
    }

    pub fn max_memory_bytes(&self) -> usize {
        self.settings.max_memory_bytes
    }

    /// Limits what the next calls may write out, in bytes of memory, until it is set again:
    /// the room the stage after has. A release stops once it is used up (one trace always
    /// goes, so the assembler cannot stall), and [`Assembler::output_written`] says how much
    /// was written.
    pub fn set_output_room(&mut self, bytes: usize) {
        self.output_room = bytes;
        self.output_written = 0;
    }

    /// Memory of what was written out since [`Assembler::set_output_room`].
    pub fn output_written(&self) -> usize {
        self.output_written
    }

    fn output_full(&self) -> bool {
        self.output_written > 0 && self.output_written >= self.output_room
    }

    /// When the next trace is due, or groups holding a pin are next swept; `None` when
    /// neither.
    pub fn next_due_ms(&mut self) -> Option<u64> {
        let mut trace_due = None;
        while let Some(Reverse((due, id))) = self.due.peek() {
            if self.traces.get(id).is_some_and(|t| t.due_ms == *due) {
                trace_due = Some(*due);
                break;
            }
            self.due.pop();
        }
        // Groups holding a write-ahead log segment are swept on time even when no trace is
        // due, or the last segment of a quiet gateway would stay on disk until new traffic.
        match (trace_due, self.groups.next_pin_sweep_ms()) {
            (Some(t), Some(s)) => Some(t.min(s)),
            (t, s) => t.or(s),
        }
    }

    /// Takes all the spans of `batch` (see [`Assembler::ingest_step`]).
    pub fn ingest(&mut self, batch: &SpanBatch, now_ms: u64, out: &mut SpanBatch) {
        let mut cursor = Cursor::default();
        while !self.ingest_step(batch, &mut cursor, usize::MAX, now_ms, out) {}
    }

    /// Takes up to `max_spans` spans of `batch` from `cursor` on: spans of released traces
    /// whose root is cached are enriched into `out` at once, the rest are held. Returns
    /// whether the batch is done. Taking a large request in steps lets the caller bound
    /// what one step writes out (late spans, parts of traces over their caps).
    pub fn ingest_step(
        &mut self,
        batch: &SpanBatch,
        cursor: &mut Cursor,
        max_spans: usize,
        now_ms: u64,
        out: &mut SpanBatch,
    ) -> bool {
        // This step's spans, and room for them before they are copied in.
        let mut probe = *cursor;
        let mut incoming = 0usize;
        let mut n = 0usize;
        while n < max_spans.max(1) {
            let Some((_, span)) = next_span(batch, &mut probe) else {
                break;
            };
            incoming += span.len() + std::mem::size_of::<HeldSpan>();
            n += 1;
        }
        if self.held_spans + n > self.settings.max_buffered_spans
            || self.memory_bytes() + incoming > self.settings.max_memory_bytes
        {
            self.relieve_pressure(n, incoming, now_ms, out);
        }
        let mut pending: Vec<Pending<'_>> = Vec::with_capacity(n.min(4096));
        let mut touched: Vec<TraceId> = Vec::new();
        let mut interned: Option<(usize, Arc<held::Group>)> = None;
        for _ in 0..n {
            let Some((g, span)) = next_span(batch, cursor) else {
                break;
            };
            let group = match &interned {
                Some((at, group)) if *at == cursor.group => group.clone(),
                _ => {
                    let group = self.groups.intern(&batch.groups[cursor.group]);
                    interned = Some((cursor.group, group.clone()));
                    group
                }
            };
            debug_assert!(std::ptr::eq(g, &batch.groups[cursor.group]));
            self.ingest_span(span, &group, now_ms, out, &mut pending, &mut touched);
        }
        for id in touched {
            // A trace whose root is here sends its other spans on now, this step's straight
            // from the request.
            if self.traces.get(&id).is_some_and(|t| self.streams(t)) {
                self.stream_held(&id, &pending, out);
                continue;
            }
            self.copy_pending(&id, &pending);
            let Some(t) = self.traces.get(&id) else {
                continue;
            };
            if t.remote_entry && t.root.is_none() {
                // The trace entered this process from another one, which has its root: the
                // local part is here (its entry span ends last), nothing here can enrich it.
                self.release_trace(id, now_ms, ReleaseReason::RemoteParent, out);
            } else if t.spans.len() >= self.settings.max_spans_per_trace.max(1) {
                self.release_part(id, now_ms, ReleaseReason::Size, out);
            }
        }
        let done = next_span(batch, &mut cursor.clone()).is_none();
        if self.held_spans > self.settings.max_buffered_spans
            || self.memory_bytes() > self.settings.max_memory_bytes
        {
            self.relieve_pressure(0, 0, now_ms, out);
        }
        self.flush_observer();
        done
    }

    /// Whether the spans `trace` holds besides its root may go now, enriched from its root,
    /// rather than wait with the root for `decision_wait`: the root has arrived, and nothing
    /// else the release computes needs them — no span link to merge another origin from, no
    /// observer reading every span. (In a trace with a consumer, only the spans whose path
    /// to the root is known go: see [`Assembler::stream_held`].)
    fn streams(&self, trace: &Trace) -> bool {
        self.settings.stream_after_root
            && trace.root.is_some()
            && trace.link.is_none()
            && !self.observer_reads_spans
    }

    fn flush_observer(&mut self) {
        if let Some(observer) = self.observer.as_mut() {
            observer.flush();
        }
    }

    fn ingest_span<'a>(
        &mut self,
        span: &'a Bytes,
        group: &Arc<held::Group>,
        now_ms: u64,
        out: &mut SpanBatch,
        pending: &mut Vec<Pending<'a>>,
        touched: &mut Vec<TraceId>,
    ) {
        let mut flags = 0u8;
        let propagate = &self.settings.propagate;
        let collide_filter = &self.collide_filter;
        let classify_keys = self.classify_keys.as_deref().unwrap_or_default();
        let classify_filter = &self.classify_filter;
        let mut values: [Option<&[u8]>; CLASSIFY_KEYS] = [None; CLASSIFY_KEYS];
        let f = read_span_with(span, |key, kv| {
            // (A fixed-size compare: no call.)
            if key.first_chunk::<5>() == Some(b"cujo.") {
                flags |= span_flags::CUJO;
            }
            if collide_filter.may_match(key) && propagate.collides(key) {
                flags |= span_flags::COLLIDES;
            }
            if classify_filter.may_match(key)
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
        // Keyed per tenant: two tenants' traces never meet, whatever ids they send.
        let tenant = group.resource.tenant.as_deref();
        let trace_id = cujo_wire::tenant::trace_key(tenant, &f.trace_id);
        // The span must fit the held trace's list of groups and 32-bit offsets: what the trace
        // holds goes first when it would not.
        let max_groups = self.settings.max_groups_per_trace;
        let fit = self.traces.get_mut(&trace_id).map(|t| {
            let index = t.group_index(group, max_groups);
            let offsets_full =
                t.data.len() + span.len() + t.pending_bytes as usize > u32::MAX as usize;
            (index, offsets_full)
        });
        let placed = match fit {
            Some((Some(index), false)) => Some(index),
            Some((index, _)) => {
                self.copy_pending(&trace_id, pending);
                if index.is_none() {
                    self.stats.group_cap_releases += 1;
                }
                self.release_part(trace_id, now_ms, ReleaseReason::Size, out);
                None
            }
            None => {
                // One lock of this shard's index: released already (late span), or held
                // from now.
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
                    self.release_late(span, group, &trace_id, &f, cached.as_ref(), out);
                    return;
                }
                let due_ms = now_ms + self.settings.trace_timeout.as_millis() as u64;
                self.arrival.push_back(trace_id);
                self.due.push(Reverse((due_ms, trace_id)));
                self.traces
                    .insert(trace_id, Box::new(Trace::new(now_ms, due_ms)));
                None
            }
        };
        let Some(trace) = self.traces.get_mut(&trace_id) else {
            return;
        };
        let Some(group_index) = placed.or_else(|| trace.group_index(group, max_groups)) else {
            return;
        };
        trace.last_end_ns = trace.last_end_ns.max(f.end_time_unix_nano);
        if self.settings.release_on_remote_parent && f.parent_is_remote() {
            trace.remote_entry = true;
        }
        trace.span_count += 1;
        trace.span_bits |= span_bits;
        if trace.link.is_none() {
            trace.link = f
                .links
                .iter()
                .map(|(t, _)| cujo_wire::tenant::trace_key(tenant, t))
                .find(|t| *t != trace_id);
        }
        let is_root = f.parent_span_id.is_none() && trace.root.is_none();
        if is_root {
            // Only the attributes that may be selected are read whole.
            let select = &self.select_filter;
            let selected = span_key_values(span)
                .filter(|(key, _)| select.may_match(key))
                .map(|(key, kv)| cujo_wire::span::Attribute {
                    key: std::str::from_utf8(key).unwrap_or(""),
                    value: key_value(kv),
                });
            let origin = Origin::from_root(
                std::str::from_utf8(f.name).unwrap_or(""),
                &group.service,
                selected,
                f.start_time_unix_nano,
                &self.settings.propagate,
                &mut self.stats.capped,
            );
            trace.root = Some(Box::new(origin));
            self.rooted.push_back(trace_id);
            let due = now_ms + self.settings.decision_wait.as_millis() as u64;
            if due < trace.due_ms {
                trace.due_ms = due;
                self.due.push(Reverse((due, trace_id)));
            }
        }
        if is_root {
            flags |= span_flags::ROOT;
        }
        if f.kind == kind::CONSUMER && f.parent_span_id.is_some() {
            flags |= span_flags::CONSUMER_CHILD;
            trace.consumer = true;
        }
        if trace.pending_head == held::NONE {
            touched.push(trace_id);
        }
        let index = pending.len() as u32;
        pending.push(Pending {
            bytes: span,
            fact: HeldSpan {
                end: 0,
                group: group_index,
                flags,
            },
            next: held::NONE,
        });
        trace.add_pending(pending, index);
        self.held_bytes += span.len();
        self.held_spans += 1;
    }

    /// Copies the spans of `id` that wait in `pending` into it, and accounts for what the
    /// trace holds now.
    fn copy_pending(&mut self, id: &TraceId, pending: &[Pending<'_>]) {
        let Some(trace) = self.traces.get_mut(id) else {
            return;
        };
        trace.copy_pending(pending);
        let now = trace.heap_bytes();
        self.trace_heap = self.trace_heap + now - trace.accounted;
        trace.accounted = now;
    }

    /// Releases every trace whose time has come, while the output has room.
    pub fn release_due(&mut self, now_ms: u64, out: &mut SpanBatch) {
        self.directory.index(self.shard).cache.expire(now_ms);
        self.groups.sweep_pins(now_ms);
        let mut waiting = Vec::new();
        while let Some(&Reverse((due, id))) = self.due.peek() {
            if due > now_ms || self.output_full() {
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
        self.tidy();
        self.flush_observer();
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
        self.tidy();
        self.flush_observer();
    }

    /// Releases traces until `spans` more held spans and `bytes` more memory fit under the
    /// limits, with a tenth of each to spare: first those whose root has arrived, in the
    /// order their roots came (they go enriched, only sooner than `decision_wait`), then the
    /// oldest of the rest (without their root).
    fn relieve_pressure(&mut self, spans: usize, bytes: usize, now_ms: u64, out: &mut SpanBatch) {
        let max_spans = self.settings.max_buffered_spans - self.settings.max_buffered_spans / 10;
        let max_memory = self.settings.max_memory_bytes - self.settings.max_memory_bytes / 10;
        let mut swept = false;
        while self.held_spans + spans > max_spans || self.memory_bytes() + bytes > max_memory {
            if let Some(id) = self.rooted.pop_front() {
                if self.traces.get(&id).is_some_and(|t| t.root.is_some()) {
                    self.release_trace(id, now_ms, ReleaseReason::RootEarly, out);
                }
                continue;
            }
            let Some(id) = self.arrival.pop_front() else {
                // Nothing left to release: what is left are tables and interned groups.
                if !swept {
                    swept = true;
                    self.groups.sweep();
                    self.tidy();
                    continue;
                }
                break;
            };
            if self.traces.contains_key(&id) {
                self.release_trace(id, now_ms, ReleaseReason::MemoryPressure, out);
            }
        }
        self.groups.sweep();
    }

    /// Keeps the release queues near the number of held traces: stale entries of released
    /// traces go, and their memory with them.
    fn tidy(&mut self) {
        while let Some(id) = self.arrival.front() {
            if self.traces.contains_key(id) {
                break;
            }
            self.arrival.pop_front();
        }
        while let Some(id) = self.rooted.front() {
            if self.traces.get(id).is_some_and(|t| t.root.is_some()) {
                break;
            }
            self.rooted.pop_front();
        }
        let live = self.traces.len();
        if self.arrival.len() > 2 * live + 1024 {
            let traces = &self.traces;
            self.arrival.retain(|id| traces.contains_key(id));
        }
        if self.rooted.len() > 2 * live + 1024 {
            let traces = &self.traces;
            self.rooted
                .retain(|id| traces.get(id).is_some_and(|t| t.root.is_some()));
        }
        if self.due.len() > 2 * live + 1024 {
            self.due = self
                .traces
                .iter()
                .map(|(id, t)| Reverse((t.due_ms, *id)))
                .collect();
        }
        if self.arrival.capacity() > 4 * self.arrival.len() + 1024 {
            self.arrival.shrink_to(2 * self.arrival.len());
        }
        if self.rooted.capacity() > 4 * self.rooted.len() + 1024 {
            self.rooted.shrink_to(2 * self.rooted.len());
        }
        if self.due.capacity() > 4 * self.due.len() + 1024 {
            self.due.shrink_to(2 * self.due.len());
        }
        if self.traces.capacity() > 4 * live + 1024 {
            self.traces.shrink_to(2 * live);
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
                Some(Some(o)) if u32::from(o.link_hops) < self.settings.max_link_hops => {
                    self.stats.linked_traces_joined += 1;
                    Some(o)
                }
                _ => {
                    self.stats.linked_traces_unresolved += 1;
                    None
                }
            },
        };
        Origin::merge(own, linked.as_ref(), &self.settings.propagate)
    }

    /// Takes a trace out of the table, its memory off the count.
    fn remove_trace(&mut self, id: &TraceId) -> Option<Box<Trace>> {
        let trace = self.traces.remove(id)?;
        self.trace_heap -= trace.accounted;
        Some(trace)
    }

    fn release_trace(
        &mut self,
        id: TraceId,
        now_ms: u64,
        reason: ReleaseReason,
        out: &mut SpanBatch,
    ) {
        let Some(mut trace) = self.remove_trace(&id) else {
            return;
        };
        let origin = self.origin_of(trace.root.take().map(|b| *b), trace.link, now_ms);
        let data = Bytes::from(std::mem::take(&mut trace.data));
        self.emit(&trace, &data, origin.as_ref(), reason, out);
        if let Some(observer) = self.observer.as_mut() {
            let mut root = None;
            let mut root_pin = None;
            let spans = trace
                .spans_in(&data)
                .enumerate()
                .map(|(i, (range, s, g))| {
                    if s.flags & span_flags::ROOT != 0 {
                        root = Some(i);
                        root_pin = g.resource.pin.as_ref();
                    }
                    (&data[range], &g.resource.bytes[..])
                })
                .collect();
            let mut pins: Vec<cujo_wire::Pin> = root_pin.into_iter().cloned().collect();
            for g in &trace.groups {
                if let Some(p) = &g.resource.pin
                    && !pins.iter().any(|q| Arc::ptr_eq(p, q))
                {
                    pins.push(p.clone());
                }
            }
            let tenant = trace.groups.first().and_then(|g| g.resource.tenant.clone());
            observer.released(&ReleasedTrace {
                trace_id: id,
                sent_trace_id: cujo_wire::tenant::trace_id_of_key(tenant.as_deref(), &id),
                spans,
                last_end_ns: trace.last_end_ns,
                reason,
                link: trace.link,
                root,
                span_bits: self.classify_keys.is_some().then_some(trace.span_bits),
                pins,
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

    /// Releases what a trace holds now (it reached a cap); the trace stays open for later
    /// spans.
    fn release_part(
        &mut self,
        id: TraceId,
        now_ms: u64,
        reason: ReleaseReason,
        out: &mut SpanBatch,
    ) {
        let Some(mut trace) = self.remove_trace(&id) else {
            return;
        };
        let origin = if trace.root.is_some() || trace.link.is_some() {
            self.origin_of(trace.root.as_deref().cloned(), trace.link, now_ms)
        } else {
            None
        };
        let data = Bytes::from(std::mem::take(&mut trace.data));
        self.emit(&trace, &data, origin.as_ref(), reason, out);
        trace.clear_held();
        trace.accounted = trace.heap_bytes();
        self.trace_heap += trace.accounted;
        self.traces.insert(id, trace);
    }
}

/// The span at `cursor` and its group, moving the cursor past it; `None` at the end.
fn next_span<'a>(
    batch: &'a SpanBatch,
    cursor: &mut Cursor,
) -> Option<(&'a cujo_wire::ScopeGroup, &'a Bytes)> {
    loop {
        let g = batch.groups.get(cursor.group)?;
        if let Some(span) = g.spans.get(cursor.span) {
            cursor.span += 1;
            return Some((g, span));
        }
        cursor.group += 1;
        cursor.span = 0;
    }
}
