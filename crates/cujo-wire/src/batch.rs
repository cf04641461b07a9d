//! Spans in wire form, grouped under the resource and scope they arrived with.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::WireError;
use crate::proto::{FieldReader, Value};
use crate::validate::{Kind, Msg, check_field, validate};

/// The fields of one `ResourceSpans` other than its `scope_spans` (the `resource`, the
/// `schema_url`, and any field a newer OTLP adds), already encoded. Shared by every span that
/// arrived under it, so forwarding never clones a resource per span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceHeader {
    pub bytes: Bytes,
}

/// Spans that share one resource and one instrumentation scope.
#[derive(Debug, Clone)]
pub struct ScopeGroup {
    /// The resource every span here belongs to; one allocation per resource per request.
    pub resource: Arc<ResourceHeader>,
    /// The fields of the `ScopeSpans` other than `spans`, encoded (scope, schema_url, …).
    pub scope: Bytes,
    /// Each span's encoded `Span` message, without tag or length prefix.
    pub spans: Vec<Bytes>,
}

impl ScopeGroup {
    /// Encoded size of the spans in this group.
    pub fn span_bytes(&self) -> usize {
        self.spans.iter().map(Bytes::len).sum()
    }
}

/// A set of spans moving between stages, each under its own resource and scope.
#[derive(Debug, Clone, Default)]
pub struct SpanBatch {
    pub groups: Vec<ScopeGroup>,
}

impl SpanBatch {
    pub fn span_count(&self) -> usize {
        self.groups.iter().map(|g| g.spans.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.iter().all(|g| g.spans.is_empty())
    }

    /// Bytes of the batch's own bookkeeping beside the bytes its spans point into: the group
    /// list, one handle per span, and each group's shared resource header. Counted against
    /// the memory budget with the request the spans came in.
    pub fn handle_bytes(&self) -> usize {
        const RESOURCE: usize = std::mem::size_of::<ResourceHeader>() + 16;
        self.groups.capacity() * std::mem::size_of::<ScopeGroup>()
            + self
                .groups
                .iter()
                .map(|g| g.spans.capacity() * std::mem::size_of::<Bytes>() + RESOURCE)
                .sum::<usize>()
    }

    /// Moves all groups of `other` to the end of this batch.
    pub fn append(&mut self, other: &mut SpanBatch) {
        self.groups.append(&mut other.groups);
    }

    /// Splits the batch into `shards` batches by `shard_of(trace id)`, each span keeping its
    /// resource and scope (shared, not copied). Batches for shards without spans are empty.
    pub fn split_by_trace(
        self,
        shards: usize,
        shard_of: impl Fn(&[u8; 16]) -> usize,
    ) -> Vec<SpanBatch> {
        let mut out: Vec<SpanBatch> = (0..shards.max(1)).map(|_| SpanBatch::default()).collect();
        if out.len() == 1 {
            out[0] = self;
            return out;
        }
        for group in self.groups {
            for span in group.spans {
                let shard = shard_of(&crate::span::span_trace_id(&span)).min(out.len() - 1);
                let groups = &mut out[shard].groups;
                match groups.last_mut() {
                    Some(g)
                        if Arc::ptr_eq(&g.resource, &group.resource)
                            && g.scope.as_ptr() == group.scope.as_ptr() =>
                    {
                        g.spans.push(span)
                    }
                    _ => groups.push(ScopeGroup {
                        resource: group.resource.clone(),
                        scope: group.scope.clone(),
                        spans: vec![span],
                    }),
                }
            }
        }
        out
    }

    /// Splits off the first `n` spans into a new batch, keeping each span's resource and scope.
    pub fn split_front(&mut self, n: usize) -> SpanBatch {
        // Whole groups that fit, then at most one group cut in two: one drain, not one shift
        // per group.
        let mut whole = 0;
        let mut taken = 0;
        for g in &self.groups {
            if taken + g.spans.len() > n {
                break;
            }
            taken += g.spans.len();
            whole += 1;
        }
        let mut front = SpanBatch {
            groups: self.groups.drain(..whole).collect(),
        };
        let need = n - taken;
        if need > 0
            && let Some(first) = self.groups.first_mut()
        {
            let rest = first.spans.split_off(need);
            let head = std::mem::replace(&mut first.spans, rest);
            front.groups.push(ScopeGroup {
                resource: first.resource.clone(),
                scope: first.scope.clone(),
                spans: head,
            });
        }
        front
    }

    /// Puts groups that share a resource and scope together (stable, by first appearance), so
    /// a batch assembled from many traces is written with one `ResourceSpans` per resource.
    pub fn compact(&mut self) {
        if self.groups.len() < 2 {
            return;
        }
        let key = |g: &ScopeGroup| {
            (
                Arc::as_ptr(&g.resource) as usize,
                g.scope.as_ptr() as usize,
                g.scope.len(),
            )
        };
        let mut first_seen: std::collections::HashMap<(usize, usize, usize), usize> =
            std::collections::HashMap::new();
        let mut merged: Vec<ScopeGroup> = Vec::new();
        for g in self.groups.drain(..) {
            match first_seen.get(&key(&g)) {
                Some(&i) => merged[i].spans.extend(g.spans),
                None => {
                    first_seen.insert(key(&g), merged.len());
                    merged.push(g);
                }
            }
        }
        // Groups of one resource next to each other, for one ResourceSpans each.
        merged.sort_by_key(|g| Arc::as_ptr(&g.resource) as usize);
        self.groups = merged;
    }
}

/// Spans of a request that were refused one by one (the rest of the request was accepted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RejectedSpans {
    pub count: u64,
    /// What was wrong with the first refused span, for `partial_success.error_message`.
    pub first_reason: Option<String>,
}

/// A request read into a batch.
#[derive(Debug, Default)]
pub struct ScannedRequest {
    pub batch: SpanBatch,
    pub rejected: RejectedSpans,
}

/// Validates `request` (an encoded `ExportTraceServiceRequest`) and groups its spans.
///
/// The request is refused whole only when it is not a valid message at all. A span whose
/// trace id, span id, parent span id or link ids have the wrong length (or are all zero) is left
/// out and counted in [`RejectedSpans`]. The returned spans are slices of `request`.
pub fn scan_request(request: &Bytes) -> Result<ScannedRequest, WireError> {
    let mut out = ScannedRequest::default();
    let mut reader = FieldReader::new(request, Msg::Request.name());
    let mut resource_index = 0usize;
    while let Some(field) = reader.next_field() {
        let field = field?;
        let kind = check_field(Msg::Request, field.number, &field.value)?;
        if let (Some(Kind::Message(Msg::ResourceSpans)), Value::Len(rs)) = (kind, field.value) {
            scan_resource_spans(request, rs, resource_index, &mut out)?;
            resource_index += 1;
        }
    }
    Ok(out)
}

fn scan_resource_spans(
    request: &Bytes,
    rs: &[u8],
    resource_index: usize,
    out: &mut ScannedRequest,
) -> Result<(), WireError> {
    let mut header = Pieces::default();
    let mut scopes: Vec<(&[u8], Vec<Bytes>, Pieces)> = Vec::new();
    let mut reader = FieldReader::new(rs, Msg::ResourceSpans.name());
    while let Some(field) = reader.next_field() {
        let field = field?;
        let kind = check_field(Msg::ResourceSpans, field.number, &field.value)?;
        match (kind, field.value) {
            (Some(Kind::Message(Msg::ScopeSpans)), Value::Len(ss)) => {
                let scope_index = scopes.len();
                let (spans, scope_pieces) =
                    scan_scope_spans(request, ss, resource_index, scope_index, out)?;
                scopes.push((ss, spans, scope_pieces));
            }
            (Some(Kind::Message(sub)), Value::Len(bytes)) => {
                validate(sub, bytes, 2)?;
                header.push(field.start, field.end);
            }
            _ => header.push(field.start, field.end),
        }
    }
    let resource = Arc::new(ResourceHeader {
        bytes: header.into_bytes(request, rs),
    });
    for (ss, spans, scope_pieces) in scopes {
        if spans.is_empty() {
            continue;
        }
        out.batch.groups.push(ScopeGroup {
            resource: resource.clone(),
            scope: scope_pieces.into_bytes(request, ss),
            spans,
        });
    }
    Ok(())
}

fn scan_scope_spans(
    request: &Bytes,
    ss: &[u8],
    resource_index: usize,
    scope_index: usize,
    out: &mut ScannedRequest,
) -> Result<(Vec<Bytes>, Pieces), WireError> {
    let mut pieces = Pieces::default();
    let mut spans = Vec::new();
    let mut span_index = 0usize;
    let mut reader = FieldReader::new(ss, Msg::ScopeSpans.name());
    while let Some(field) = reader.next_field() {
        let field = field?;
        let kind = check_field(Msg::ScopeSpans, field.number, &field.value)?;
        match (kind, field.value) {
            (Some(Kind::Message(Msg::Span)), Value::Len(span)) => {
                match check_span(span)? {
                    None => spans.push(request.slice_ref(span)),
                    Some(reason) => {
                        let rejected = &mut out.rejected;
                        rejected.count += 1;
                        if rejected.first_reason.is_none() {
                            let mut text = String::new();
                            let _ = write!(
                                text,
                                "resource_spans[{resource_index}].scope_spans[{scope_index}].spans[{span_index}]: {reason}"
                            );
                            rejected.first_reason = Some(text);
                        }
                    }
                }
                span_index += 1;
            }
            (Some(Kind::Message(sub)), Value::Len(bytes)) => {
                validate(sub, bytes, 3)?;
                pieces.push(field.start, field.end);
            }
            _ => pieces.push(field.start, field.end),
        }
    }
    Ok((spans, pieces))
}

/// Validates a span; `Ok(Some(reason))` if it is well-formed protobuf but has invalid ids.
fn check_span(span: &[u8]) -> Result<Option<String>, WireError> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut problem: Option<String> = None;
    let mut reader = FieldReader::new(span, Msg::Span.name());
    while let Some(field) = reader.next_field() {
        let field = field?;
        let kind = check_field(Msg::Span, field.number, &field.value)?;
        let Value::Len(bytes) = field.value else {
            continue;
        };
        match (field.number, kind) {
            (1, _) => trace_id = bytes,
            (2, _) => span_id = bytes,
            (4, _) if !bytes.is_empty() && bytes.len() != 8 && problem.is_none() => {
                problem = Some(format!(
                    "parent_span_id has {} bytes, expected 8 or none",
                    bytes.len()
                ));
            }
            (13, Some(Kind::Message(Msg::Link))) => {
                validate(Msg::Link, bytes, 5)?;
                if problem.is_none() {
                    problem = check_link(bytes);
                }
            }
            (_, Some(Kind::Message(sub))) => validate(sub, bytes, 5)?,
            _ => {}
        }
    }
    if let Some(p) = id_problem("trace_id", trace_id, 16) {
        return Ok(Some(p));
    }
    if let Some(p) = id_problem("span_id", span_id, 8) {
        return Ok(Some(p));
    }
    Ok(problem)
}

fn check_link(link: &[u8]) -> Option<String> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut reader = FieldReader::new(link, Msg::Link.name());
    while let Some(Ok(field)) = reader.next_field() {
        match (field.number, field.value) {
            (1, Value::Len(b)) => trace_id = b,
            (2, Value::Len(b)) => span_id = b,
            _ => {}
        }
    }
    id_problem("links[].trace_id", trace_id, 16)
        .or_else(|| id_problem("links[].span_id", span_id, 8))
}

fn id_problem(name: &str, id: &[u8], len: usize) -> Option<String> {
    if id.len() != len {
        Some(format!("{name} has {} bytes, expected {len}", id.len()))
    } else if id.iter().all(|&b| b == 0) {
        Some(format!("{name} is all zeros"))
    } else {
        None
    }
}

/// Encoded fields to keep, as ranges of one parent message; joined into one `Bytes` at the
/// end, without a copy when they are contiguous (the common case).
#[derive(Default)]
struct Pieces {
    ranges: Vec<(usize, usize)>,
}

impl Pieces {
    fn push(&mut self, start: usize, end: usize) {
        match self.ranges.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.ranges.push((start, end)),
        }
    }

    fn into_bytes(self, request: &Bytes, parent: &[u8]) -> Bytes {
        match self.ranges.as_slice() {
            [] => Bytes::new(),
            [(s, e)] => request.slice_ref(&parent[*s..*e]),
            many => {
                let mut buf = BytesMut::with_capacity(many.iter().map(|(s, e)| e - s).sum());
                for (s, e) in many {
                    buf.extend_from_slice(&parent[*s..*e]);
                }
                buf.freeze()
            }
        }
    }
}
