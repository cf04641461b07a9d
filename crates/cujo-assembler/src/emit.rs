//! Writing released spans out: a released trace (or a part of one) enriched from its origin,
//! or as it came when it has none; a late span enriched from the root cache at once. Every
//! byte written out is added to [`Assembler::output_written`], the memory the next stage
//! takes over.

use std::sync::Arc;

use bytes::Bytes;
use cujo_wire::alloc::allocation_size;
use cujo_wire::span::{SpanFields, span_head, span_start_time};
use cujo_wire::{ScopeGroup, SpanBatch};

use crate::held::{Group, HeldSpan, Pending, Trace, span_flags};
use crate::origin::{Origin, SpanContext, duration_ms, enrich, enrich_fast, shared_block};
use crate::{Assembler, IdMap, ReleaseReason, TraceId};

/// A span id as a number; zero (an invalid id) stands for "no parent".
type SpanId = u64;

fn span_id(id: [u8; 8]) -> SpanId {
    u64::from_le_bytes(id)
}

/// What release reads of a held span's leading fields: its start (for
/// `cujo.root.offset_ms`) and, for async hops, its ids and kind.
struct Head {
    start_ns: u64,
    span_id: SpanId,
    /// Zero for a root.
    parent: SpanId,
    kind: u8,
}

fn head(span: &[u8]) -> Head {
    let h = span_head(span);
    Head {
        start_ns: h.start_time_unix_nano,
        span_id: span_id(h.span_id),
        parent: h.parent_span_id.map(span_id).unwrap_or(0),
        kind: h.kind as u8,
    }
}

/// Memory of one span's place in an output batch (its handle), beside its bytes.
const HANDLE: usize = std::mem::size_of::<Bytes>();

impl Assembler {
    /// A span whose trace was already released: enriched from the cache now, held nothing.
    pub(crate) fn release_late(
        &mut self,
        span: &Bytes,
        group: &Arc<Group>,
        key: &TraceId,
        f: &SpanFields<'_>,
        origin: Option<&Origin>,
        out: &mut SpanBatch,
    ) {
        self.stats.spans_released += 1;
        let Some(origin) = origin else {
            // Passed on as it came: a slice of the request, which the receivers counted.
            self.output_groups.push(out, group, span.clone(), || 1);
            self.output_written += HANDLE;
            self.stats.late_spans_without_root += 1;
            return;
        };
        if let Some(observer) = self.observer.as_mut() {
            observer.late_span(key, span, &group.resource.bytes);
        }
        // It arrived after its trace was complete, so it sits across an async boundary (a
        // consumer, or work under one). Its parent may not have arrived yet, so the path
        // cannot be walked: count one hop.
        let ctx = SpanContext {
            start_ns: f.start_time_unix_nano,
            async_hops: u32::from(origin.link_hops) + 1,
            root_summary: None,
        };
        let mut buf = Vec::with_capacity(span.len() + origin.growth_per_span());
        enrich(span, origin, &ctx, &self.settings.propagate, &mut buf);
        if let Some(tenant) = &group.resource.tenant {
            tenant.take(buf.len().saturating_sub(span.len()));
        }
        self.output_written += allocation_size(buf.capacity()) + HANDLE;
        self.output_groups.push(out, group, Bytes::from(buf), || 1);
        self.stats.late_spans_enriched += 1;
        self.stats.spans_enriched += 1;
    }

    /// Writes the spans `trace` holds (their bytes are `data`) to `out`, enriched when there
    /// is an origin, and takes them off the held counts.
    pub(crate) fn emit(
        &mut self,
        trace: &Trace,
        data: &Bytes,
        origin: Option<&Origin>,
        reason: ReleaseReason,
        out: &mut SpanBatch,
    ) {
        let n = trace.spans.len();
        self.stats.traces_released[reason as usize] += 1;
        self.stats.spans_released += n as u64;
        self.held_spans -= n;
        self.held_bytes -= data.len();
        let Some(origin) = origin else {
            // As they came: slices of the trace's own buffer, which moves out with them.
            for (range, _, group) in trace.spans_in(data) {
                self.output_groups.push(out, group, data.slice(range), || 1);
            }
            self.output_written += allocation_size(data.len()) + n * HANDLE;
            return;
        };
        // Hop counts need the span tree only when the trace has a consumer under a parent;
        // otherwise each span's start time is all release reads of it.
        let base_hops = u32::from(origin.link_hops);
        let streamed = trace.streamed_hops.as_deref();
        let heads: Option<Vec<Head>> = (streamed.is_some()
            || trace
                .spans
                .iter()
                .any(|s| s.flags & span_flags::CONSUMER_CHILD != 0))
        .then(|| {
            trace
                .spans_in(data)
                .map(|(r, _, _)| head(&data[r]))
                .collect()
        });
        let hops = heads.as_ref().map(|h| {
            hops_in(h, base_hops, streamed, Some(base_hops))
                .into_iter()
                .map(|v| v.unwrap_or(base_hops))
                .collect::<Vec<_>>()
        });
        let duration = duration_ms(origin.root_start_ns(), trace.last_end_ns);
        let spans = trace.spans_in(data).enumerate().map(|(i, (range, s, _))| {
            let start_ns = match heads.as_ref().and_then(|v| v.get(i)) {
                Some(head) => head.start_ns,
                None => span_start_time(&data[range.clone()]),
            };
            let ctx = SpanContext {
                start_ns,
                async_hops: hops
                    .as_ref()
                    .and_then(|v| v.get(i).copied())
                    .unwrap_or(base_hops),
                root_summary: (s.flags & span_flags::ROOT != 0)
                    .then_some((trace.span_count, duration)),
            };
            (&data[range], s, ctx)
        });
        let written = write_enriched(
            spans,
            &trace.groups,
            origin,
            &self.settings.propagate,
            n,
            data.len(),
            out,
            &mut self.output_groups,
        );
        self.stats.spans_enriched += n as u64;
        self.output_written += written.memory;
        take_growth(trace, written.growth);
    }
}

impl Assembler {
    /// Writes out, enriched from the trace's own root, every span `id` holds or has waiting
    /// in this step's `pending` except its root, and keeps the trace open: the root waits
    /// for `decision_wait` (its `cujo.trace.*` summary counts the stragglers), the other
    /// spans need nothing more. Spans waiting in `pending` go out from the request's bytes,
    /// never copied in. Only for traces [`Assembler::streams`] allows (no link, no consumer,
    /// an observer that reads only the root). Returns how many spans went.
    pub(crate) fn stream_held(
        &mut self,
        id: &TraceId,
        pending: &[Pending<'_>],
        out: &mut SpanBatch,
    ) -> usize {
        let Some(trace) = self.traces.get_mut(id) else {
            return 0;
        };
        let trace = &mut **trace;
        let Some(origin) = trace.root.as_deref() else {
            return 0;
        };
        let is_root = |s: &HeldSpan| s.flags & span_flags::ROOT != 0;
        let waiting = trace.pending_in(pending);
        let data = std::mem::take(&mut trace.data);
        let spans = std::mem::take(&mut trace.spans);
        // Where each held span's bytes are in `data`: they start where the previous span's
        // end.
        let ranges = spans.iter().scan(0usize, |start, s| {
            let end = (s.end as usize).min(data.len());
            let range = (*start).min(end)..end;
            *start = end;
            Some((&data[range], s))
        });
        let all = ranges.chain(waiting.map(|p| (p.bytes, &p.fact)));
        let base_hops = u32::from(origin.link_hops);
        // In a trace with a consumer, a span's async hops need its path to the root: it goes
        // once that path is here (through held spans, or spans that went before), and waits
        // otherwise. Elsewhere every span has the trace's base count.
        let heads: Option<Vec<Head>> = trace
            .consumer
            .then(|| all.clone().map(|(bytes, _)| head(bytes)).collect());
        let hops: Option<Vec<Option<u32>>> = heads
            .as_ref()
            .map(|h| hops_in(h, base_hops, trace.streamed_hops.as_deref(), None));
        let goes = |i: usize, s: &HeldSpan| {
            !is_root(s)
                && hops
                    .as_ref()
                    .is_none_or(|h| h.get(i).copied().flatten().is_some())
        };
        let (mut kept, mut kept_bytes) = (0usize, 0usize);
        let (mut n, mut streamed_bytes) = (0usize, 0usize);
        for (i, (bytes, s)) in all.clone().enumerate() {
            if goes(i, s) {
                n += 1;
                streamed_bytes += bytes.len();
            } else {
                kept += 1;
                kept_bytes += bytes.len();
            }
        }
        // What stays (the root, spans waiting for their path), in a buffer of its own size.
        trace.data = Vec::with_capacity(kept_bytes);
        trace.spans = Vec::with_capacity(kept);
        for (i, (bytes, s)) in all.clone().enumerate() {
            if !goes(i, s) {
                trace.data.extend_from_slice(bytes);
                trace.spans.push(HeldSpan {
                    end: trace.data.len() as u32,
                    ..*s
                });
            }
        }
        // (Field by field: `origin` borrows the trace's root.)
        trace.pending_head = crate::held::NONE;
        trace.pending_tail = crate::held::NONE;
        trace.pending_bytes = 0;
        if n > 0 {
            if let (Some(heads), Some(hops)) = (&heads, &hops) {
                let known = trace.streamed_hops.get_or_insert_with(Default::default);
                // Capped like a trace's held spans: past it, a later span under one of these
                // counts the hops of the path it has (as when its parent never came).
                let room = self
                    .settings
                    .max_spans_per_trace
                    .saturating_sub(known.len());
                known.reserve(n.min(room));
                for (i, (_, s)) in all.clone().enumerate() {
                    if let (true, Some(h)) = (goes(i, s), hops[i])
                        && known.len() < self.settings.max_spans_per_trace
                    {
                        known.insert(heads[i].span_id, h);
                    }
                }
            }
            let groups = &trace.groups;
            let streamed =
                all.enumerate()
                    .filter(|(i, (_, s))| goes(*i, s))
                    .map(|(i, (bytes, s))| {
                        let ctx = SpanContext {
                            start_ns: match &heads {
                                Some(h) => h[i].start_ns,
                                None => span_start_time(bytes),
                            },
                            async_hops: hops.as_ref().and_then(|h| h[i]).unwrap_or(base_hops),
                            root_summary: None,
                        };
                        (bytes, s, ctx)
                    });
            let written = write_enriched(
                streamed,
                groups,
                origin,
                &self.settings.propagate,
                n,
                streamed_bytes,
                out,
                &mut self.output_groups,
            );
            self.output_written += written.memory;
            take_growth(trace, written.growth);
            self.stats.spans_released += n as u64;
            self.stats.spans_enriched += n as u64;
            self.stats.spans_streamed += n as u64;
            self.held_spans -= n;
            self.held_bytes -= streamed_bytes;
        }
        let now = trace.heap_bytes();
        self.trace_heap = self.trace_heap + now - trace.accounted;
        trace.accounted = now;
        n
    }
}

/// The most spans, and bytes of a shared block, [`OutputGroups`] keeps lists for between
/// calls of [`write_enriched`]; larger ones are freed after use.
const SCRATCH_SPANS: usize = 4096;
const SCRATCH_SHARED_BYTES: usize = 16 << 10;

/// What [`write_enriched`] wrote out.
struct Written {
    /// Memory of the output: its one allocation and the spans' handles.
    memory: usize,
    /// Bytes propagation added to the spans.
    growth: usize,
}

/// Writes `spans` (bytes, [`span_flags`], context) of a trace whose groups are `trace_groups`
/// to `out`, enriched from `origin`, into one allocation of which each span is a slice. `n`
/// and `bytes` are how many spans come and their bytes together (for the allocation's size).
#[allow(clippy::too_many_arguments)]
fn write_enriched<'a>(
    spans: impl Iterator<Item = (&'a [u8], &'a HeldSpan, SpanContext)>,
    trace_groups: &[Arc<Group>],
    origin: &Origin,
    propagate: &crate::PropagateSettings,
    n: usize,
    bytes: usize,
    out: &mut SpanBatch,
    groups: &mut OutputGroups,
) -> Written {
    let mut shared = std::mem::take(&mut groups.shared);
    shared_block(origin, &mut shared);
    let mut offsets = std::mem::take(&mut groups.offsets);
    offsets.clear();
    let mut buf = Vec::with_capacity(bytes + n * (shared.len() + 64) + 32);
    let mut read = 0usize;
    for (span, s, ctx) in spans {
        let at = buf.len();
        if s.flags & span_flags::READ_ATTRIBUTES == 0 {
            enrich_fast(span, &shared, &ctx, origin, &mut buf);
        } else {
            enrich(span, origin, &ctx, propagate, &mut buf);
        }
        read += span.len();
        offsets.push((at, buf.len(), s.group));
    }
    let written = Written {
        memory: allocation_size(buf.capacity()) + offsets.len() * HANDLE,
        growth: buf.len().saturating_sub(read),
    };
    let buf = Bytes::from(buf);
    for (i, &(a, b, index)) in offsets.iter().enumerate() {
        // A group new to `out` is made the size of this trace's spans in it. (A held span's
        // group index is always one of its trace's: the assembler gave it.)
        let more = || offsets[i..].iter().filter(|o| o.2 == index).count();
        groups.push(
            out,
            &trace_groups[usize::from(index)],
            buf.slice(a..b),
            more,
        );
    }
    // Kept for the next trace unless a large one left them large (they are not counted).
    if offsets.capacity() <= SCRATCH_SPANS {
        groups.offsets = offsets;
    }
    if shared.capacity() <= SCRATCH_SHARED_BYTES {
        groups.shared = shared;
    }
    written
}

/// Charges what propagation added to a trace's spans to its tenant's share until it is sent
/// (a trace's spans all have one tenant: it is part of the trace's key).
fn take_growth(trace: &Trace, growth: usize) {
    if let Some(tenant) = trace
        .groups
        .first()
        .and_then(|g| g.resource.tenant.as_ref())
    {
        tenant.take(growth);
    }
}

/// Where the output batch's groups are, by the interned resource and scope each holds, so a
/// span finds its group at one lookup and the batch gets one group per resource and scope:
/// few allocations, and little for `compact` to merge. Direct-mapped and fixed in size; an
/// entry is checked against the batch before it is used, so a new batch or two groups in
/// one slot only cost a new group.
pub(crate) struct OutputGroups {
    /// (resource, scope) addresses and the group's index in the batch.
    slots: Box<[(usize, usize, usize); OUTPUT_SLOTS]>,
    /// [`write_enriched`]'s own lists, kept between calls: the trace's shared block, and
    /// where each span went in the output buffer (start, end, group in the trace).
    shared: Vec<u8>,
    offsets: Vec<(usize, usize, u8)>,
}

const OUTPUT_SLOTS: usize = 128;

/// How many of the batch's last groups a span whose slot holds another group looks through.
const LOOKBACK: usize = 8;

impl OutputGroups {
    pub fn new() -> Self {
        Self {
            slots: Box::new([(0, 0, 0); OUTPUT_SLOTS]),
            shared: Vec::new(),
            offsets: Vec::new(),
        }
    }

    /// Adds `bytes` to `group`'s group in `out`; a new group has room for `more()` spans.
    fn push(
        &mut self,
        out: &mut SpanBatch,
        group: &Arc<Group>,
        bytes: Bytes,
        more: impl FnOnce() -> usize,
    ) {
        let resource = Arc::as_ptr(&group.resource) as usize;
        let scope = group.scope.as_ptr() as usize;
        let hash = ((resource ^ scope.rotate_left(17)) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The top seven bits: one of 128 slots.
        let slot = &mut self.slots[(hash >> 57) as usize % OUTPUT_SLOTS];
        if slot.0 == resource
            && slot.1 == scope
            && let Some(g) = out.groups.get_mut(slot.2)
            && Arc::ptr_eq(&g.resource, &group.resource)
            && g.scope.as_ptr() == group.scope.as_ptr()
            && g.scope.len() == group.scope.len()
        {
            g.spans.push(bytes);
            return;
        }
        // Another group took the slot: look through the last few before making a new one.
        let start = out.groups.len().saturating_sub(LOOKBACK);
        if let Some((i, g)) = out.groups[start..]
            .iter_mut()
            .enumerate()
            .rev()
            .find(|(_, g)| {
                Arc::ptr_eq(&g.resource, &group.resource)
                    && g.scope.as_ptr() == group.scope.as_ptr()
                    && g.scope.len() == group.scope.len()
            })
        {
            g.spans.push(bytes);
            *slot = (resource, scope, start + i);
            return;
        }
        let mut spans = Vec::with_capacity(more().max(1));
        spans.push(bytes);
        *slot = (resource, scope, out.groups.len());
        out.groups.push(ScopeGroup {
            resource: group.resource.clone(),
            scope: group.scope.clone(),
            spans,
        });
    }
}

/// Async hops of each span: the trace's base (`link_hops`) plus one for every CONSUMER span
/// with a parent on its path to the root within the trace. The path runs through `spans`,
/// and ends at the root (a span without a parent) or at a span that went out earlier, whose
/// count `streamed` has (by span id). A path that breaks at a span not here counts from
/// `broken`; `None` there leaves the span's count unknown.
fn hops_in(
    spans: &[Head],
    base: u32,
    streamed: Option<&IdMap<SpanId, u32>>,
    broken: Option<u32>,
) -> Vec<Option<u32>> {
    let consumer = cujo_wire::span::kind::CONSUMER as u8;
    let counts = |s: &Head| u32::from(s.kind == consumer && s.parent != 0);
    if streamed.is_none_or(|m| m.is_empty()) && !spans.iter().any(|s| counts(s) == 1) {
        return vec![Some(base); spans.len()];
    }
    let index: IdMap<SpanId, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id, i))
        .collect();
    // `None`: not worked out yet; `Some(None)`: unknown.
    let mut memo: Vec<Option<Option<u32>>> = vec![None; spans.len()];
    let mut path = Vec::new();
    for i in 0..spans.len() {
        // Walk up until a known value, then fill the path back down.
        path.clear();
        let mut cur = i;
        let top = loop {
            if let Some(v) = memo[cur] {
                break v;
            }
            if path.len() > spans.len() {
                break broken; // a parent cycle in bad data
            }
            path.push(cur);
            let parent = spans[cur].parent;
            if parent == 0 {
                break Some(base);
            }
            match index.get(&parent) {
                Some(&p) => cur = p,
                None => break streamed.and_then(|m| m.get(&parent).copied()).or(broken),
            }
        };
        let mut value = top;
        for &c in path.iter().rev() {
            value = value.map(|v| v + counts(&spans[c]));
            memo[c] = Some(value);
        }
    }
    memo.into_iter().map(Option::flatten).collect()
}
