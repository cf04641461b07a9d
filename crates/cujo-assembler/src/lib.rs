//! The trace assembler: buffers each trace until its root has arrived, then writes the root's
//! chosen attributes onto every span of the trace — and of traces that continue it through a
//! queue or a span link — before the spans move on.
//!
//! The [`Assembler`] is a plain, single-threaded state machine driven by the caller with a
//! clock value in milliseconds ([`Assembler::ingest`], [`Assembler::release_due`],
//! [`Assembler::release_all`]): it owns its traces outright (no locks), and tests drive time
//! without sleeping. Spans stay in protobuf wire form; each held span's bytes are copied out
//! of its request so a long-lived trace does not pin the request buffer, and resources and
//! scopes are interned so thousands of traces share one copy.
//!
//! It knows nothing of receivers, exporters or channels: spans in, spans out.
//!
//! # Layout
//! - [`settings`]: `assembler:` and `propagate:` settings.
//! - [`origin`]: what a trace propagates ([`origin::Origin`]) and writing it onto a span.
//! - [`cache`]: the root cache of released traces' origins (TTL, bounded).
//! - this file: buffering, release policy, links, and the counters ([`AssemblerStats`]).
#![forbid(unsafe_code)]

pub mod cache;
pub mod origin;
pub mod settings;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use cujo_wire::span::{any_value_str, kind, read_span, service_name, span_attributes};
use cujo_wire::{ResourceHeader, ScopeGroup, SpanBatch};

use cache::RootCache;
use origin::{Origin, SpanContext, duration_ms, enrich};
pub use settings::{AssemblerSettings, PropagateSettings};

pub type TraceId = [u8; 16];
type SpanId = [u8; 8];

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
}

/// A resource and scope, shared by every held span that arrived under them.
#[derive(Clone)]
struct Group {
    resource: Arc<ResourceHeader>,
    scope: Bytes,
}

struct HeldSpan {
    bytes: Bytes,
    group: Arc<Group>,
    span_id: SpanId,
    parent: Option<SpanId>,
    kind: u8,
    start_ns: u64,
}

struct Trace {
    first_seen_ms: u64,
    spans: Vec<HeldSpan>,
    /// The trace's own root, once it has arrived.
    root: Option<Origin>,
    root_span_id: Option<SpanId>,
    /// Another trace this one continues (the first span link to a different trace).
    link: Option<TraceId>,
    /// When the trace is next due for release.
    due_ms: u64,
    /// Latest end time of any span seen, for `cujo.trace.duration_ms`.
    last_end_ns: u64,
    span_count: u64,
    bytes: usize,
}

/// Buffers traces and releases them enriched. See the crate docs.
pub struct Assembler {
    settings: AssemblerSettings,
    traces: HashMap<TraceId, Trace>,
    /// (due, trace) for every trace; stale pairs (the trace's due moved) are skipped.
    due: BinaryHeap<Reverse<(u64, TraceId)>>,
    /// Traces in first-seen order, for memory-pressure release; stale ids are skipped.
    arrival: VecDeque<TraceId>,
    cache: RootCache,
    groups: HashMap<(Bytes, Bytes), Arc<Group>>,
    held_spans: usize,
    held_bytes: usize,
    stats: AssemblerStats,
}

impl Assembler {
    pub fn new(settings: AssemblerSettings) -> Self {
        let cache = RootCache::new(
            settings.root_cache_ttl.as_millis() as u64,
            settings.root_cache_max_traces,
        );
        Self {
            settings,
            traces: HashMap::new(),
            due: BinaryHeap::new(),
            arrival: VecDeque::new(),
            cache,
            groups: HashMap::new(),
            held_spans: 0,
            held_bytes: 0,
            stats: AssemblerStats::default(),
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        let mut s = self.stats.clone();
        s.traces_buffered = self.traces.len() as u64;
        s.spans_buffered = self.held_spans as u64;
        s.bytes_buffered = self.held_bytes as u64;
        s.root_cache_entries = self.cache.len() as u64;
        s
    }

    /// Bytes of span data held, for the admission budget.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
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
        if self.held_spans > self.settings.max_buffered_spans {
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
        let f = read_span(span);
        let trace_id = f.trace_id;
        if !self.traces.contains_key(&trace_id)
            && let Some(cached) = self.cache.get(&trace_id, now_ms).cloned()
        {
            // A late span: its trace was released; enrich it now, hold nothing.
            let Some(origin) = cached else {
                push_span(out, group, span.clone());
                self.stats.late_spans_without_root += 1;
                self.stats.spans_released += 1;
                return;
            };
            // It arrived after its trace was complete, so it sits across an async boundary
            // (a consumer, or work under one). Its parent may not have arrived yet, so the
            // path cannot be walked: count one hop.
            let hops = origin.link_hops + 1;
            let ctx = SpanContext {
                start_ns: f.start_time_unix_nano,
                async_hops: hops,
                root_summary: None,
            };
            let mut buf = Vec::new();
            enrich(span, &origin, &ctx, &self.settings.propagate, &mut buf);
            push_span(out, group, Bytes::from(buf));
            self.stats.late_spans_enriched += 1;
            self.stats.spans_enriched += 1;
            self.stats.spans_released += 1;
            return;
        }
        let decision_wait = self.settings.decision_wait.as_millis() as u64;
        let timeout = self.settings.trace_timeout.as_millis() as u64;
        let is_new = !self.traces.contains_key(&trace_id);
        let trace = self.traces.entry(trace_id).or_insert_with(|| Trace {
            first_seen_ms: now_ms,
            spans: Vec::new(),
            root: None,
            root_span_id: None,
            link: None,
            due_ms: now_ms + timeout,
            last_end_ns: 0,
            span_count: 0,
            bytes: 0,
        });
        if is_new {
            self.arrival.push_back(trace_id);
            self.due.push(Reverse((trace.due_ms, trace_id)));
        }
        trace.last_end_ns = trace.last_end_ns.max(f.end_time_unix_nano);
        trace.span_count += 1;
        if trace.link.is_none() {
            trace.link = f.links.iter().map(|(t, _)| *t).find(|t| *t != trace_id);
        }
        if f.parent_span_id.is_none() && trace.root.is_none() {
            let attributes = span_attributes(span)
                .filter(|a| self.settings.propagate.selects(a.key))
                .map(|a| (a.key.to_string(), Bytes::copy_from_slice(a.value)))
                .collect();
            trace.root = Some(Origin {
                attributes,
                root_name: f.name.to_string(),
                root_service: service_name(&group.resource.bytes)
                    .unwrap_or_default()
                    .to_string(),
                root_start_ns: f.start_time_unix_nano,
                link_hops: 0,
            });
            trace.root_span_id = Some(f.span_id);
            let due = now_ms + decision_wait;
            if due < trace.due_ms {
                trace.due_ms = due;
                self.due.push(Reverse((due, trace_id)));
            }
        }
        let held = HeldSpan {
            bytes: Bytes::copy_from_slice(span),
            group: group.clone(),
            span_id: f.span_id,
            parent: f.parent_span_id,
            kind: f.kind as u8,
            start_ns: f.start_time_unix_nano,
        };
        trace.bytes += held.bytes.len();
        self.held_bytes += held.bytes.len();
        self.held_spans += 1;
        trace.spans.push(held);
        if trace.spans.len() >= self.settings.max_spans_per_trace.max(1) {
            self.release_part(trace_id, now_ms, ReleaseReason::Size, out);
        }
    }

    /// Releases every trace whose time has come.
    pub fn release_due(&mut self, now_ms: u64, out: &mut SpanBatch) {
        self.cache.expire(now_ms);
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
            let link_pending = trace
                .link
                .is_some_and(|l| self.traces.contains_key(&l) && l != id);
            if link_pending && now_ms < deadline {
                waiting.push((id, (now_ms + 10).min(deadline)));
                continue;
            }
            let reason = if trace.root.is_some()
                || trace
                    .link
                    .is_some_and(|l| self.cache.get(&l, now_ms).is_some())
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
                .filter(|(id, t)| {
                    !t.link
                        .is_some_and(|l| l != **id && self.traces.contains_key(&l))
                })
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
        let target = self.settings.max_buffered_spans - self.settings.max_buffered_spans / 10;
        while self.held_spans > target {
            let Some(id) = self.arrival.pop_front() else {
                break;
            };
            if self.traces.contains_key(&id) {
                self.release_trace(id, now_ms, ReleaseReason::MemoryPressure, out);
            }
        }
    }

    /// The origin of a trace: its own root merged with the origin it links to.
    fn origin_of(&mut self, id: &TraceId, now_ms: u64) -> Option<Origin> {
        let trace = self.traces.get(id)?;
        let own = trace.root.clone();
        let linked = match trace.link {
            None => None,
            Some(l) => match self.cache.get(&l, now_ms) {
                Some(Some(o)) if o.link_hops < self.settings.max_link_hops => {
                    self.stats.linked_traces_joined += 1;
                    Some(o.clone())
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
        let origin = self.origin_of(&id, now_ms);
        let Some(trace) = self.traces.remove(&id) else {
            return;
        };
        self.stats.traces_released[reason as usize] += 1;
        let origin = origin.map(Arc::new);
        self.emit(&trace, trace.spans.iter(), origin.as_deref(), out);
        self.held_spans -= trace.spans.len();
        self.held_bytes -= trace.bytes;
        // A trace pushed out early by memory pressure may still get its root: remember it
        // only if it had an origin, so the root and later spans start a fresh buffer.
        if origin.is_some() || reason != ReleaseReason::MemoryPressure {
            self.cache.insert(id, origin, now_ms);
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
        let origin = match self.traces.get(&id) {
            Some(t) if t.root.is_some() || t.link.is_some() => self.origin_of(&id, now_ms),
            _ => None,
        };
        let Some(mut trace) = self.traces.remove(&id) else {
            return;
        };
        self.stats.traces_released[reason as usize] += 1;
        self.emit(&trace, trace.spans.iter(), origin.as_ref(), out);
        self.held_spans -= trace.spans.len();
        self.held_bytes -= trace.bytes;
        trace.spans.clear();
        trace.bytes = 0;
        self.traces.insert(id, trace);
    }

    fn emit<'a>(
        &mut self,
        trace: &Trace,
        spans: impl Iterator<Item = &'a HeldSpan>,
        origin: Option<&Origin>,
        out: &mut SpanBatch,
    ) {
        let spans: Vec<&HeldSpan> = spans.collect();
        self.stats.spans_released += spans.len() as u64;
        let Some(origin) = origin else {
            for s in spans {
                push_span(out, &s.group, s.bytes.clone());
            }
            return;
        };
        let hops = async_hops(&spans, origin.link_hops);
        let duration = origin_duration(trace, origin);
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(spans.len());
        for (s, h) in spans.iter().zip(hops) {
            let start = buf.len();
            let root_summary = (trace.root_span_id == Some(s.span_id) && s.parent.is_none())
                .then_some((trace.span_count, duration));
            let ctx = SpanContext {
                start_ns: s.start_ns,
                async_hops: h,
                root_summary,
            };
            enrich(&s.bytes, origin, &ctx, &self.settings.propagate, &mut buf);
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
/// on its path to the root within the trace.
fn async_hops(spans: &[&HeldSpan], base: u32) -> Vec<u32> {
    let index: HashMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    let mut memo: Vec<Option<u32>> = vec![None; spans.len()];
    for i in 0..spans.len() {
        // Walk up until a known value, then fill the path back down.
        let mut path = Vec::new();
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
            cur = spans[c].parent.and_then(|p| index.get(&p).copied());
        }
        for &c in path.iter().rev() {
            let s = spans[c];
            if s.kind == kind::CONSUMER as u8 && s.parent.is_some() {
                value += 1;
            }
            memo[c] = Some(value);
        }
    }
    memo.into_iter().map(|v| v.unwrap_or(base)).collect()
}

/// The string value of an attribute as propagated (for tests and diagnostics).
pub fn attribute_str(origin: &Origin, key: &str) -> Option<String> {
    origin
        .attributes
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| any_value_str(v).map(str::to_string))
}
