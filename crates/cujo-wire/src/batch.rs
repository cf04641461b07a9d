//! Spans in wire form, grouped under the resource and scope they arrived with.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::WireError;
use crate::proto::{FieldReader, Value};
use crate::span::{head_ends_at, is_head_field};
use crate::tenant::Tenant;
use crate::validate::{Kind, Msg, check_field, validate};

/// The fields of one `ResourceSpans` other than its `scope_spans` (the `resource`, the
/// `schema_url`, and any field a newer OTLP adds), already encoded. Shared by every span that
/// arrived under it, so forwarding never clones a resource per span.
#[derive(Debug, Clone)]
pub struct ResourceHeader {
    pub bytes: Bytes,
    /// The tenant the spans under it came from (`None`: the default tenant).
    pub tenant: Option<Arc<Tenant>>,
    /// What must live as long as any span under this header: the write-ahead log segment
    /// the spans were appended to, deleted only once the last of them was exported or
    /// dropped. Every stage that copies spans keeps the header (and so the pin) with them.
    pub pin: Option<Pin>,
}

/// A keep-alive token carried by spans (see [`ResourceHeader::pin`]); its identity, not
/// its content, tells two headers apart.
pub type Pin = Arc<dyn std::any::Any + Send + Sync>;

impl ResourceHeader {
    /// A resource of the default tenant.
    pub fn new(bytes: Bytes) -> Self {
        Self {
            bytes,
            tenant: None,
            pin: None,
        }
    }

    /// The id of its tenant, 0 for the default tenant.
    pub fn tenant_id(&self) -> u64 {
        self.tenant.as_ref().map_or(0, |t| t.id())
    }

    /// The identity of its pin (0 without one): spans of two pins are never merged under
    /// one header, or the first pin's release would leave the other's spans unpinned.
    pub fn pin_id(&self) -> usize {
        self.pin
            .as_ref()
            .map_or(0, |p| Arc::as_ptr(p) as *const () as usize)
    }
}

impl PartialEq for ResourceHeader {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
            && self.tenant_id() == other.tenant_id()
            && self.pin_id() == other.pin_id()
    }
}

impl Eq for ResourceHeader {}

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

    /// Marks every span of the batch as sent by `tenant` (each resource shared as before).
    pub fn set_tenant(&mut self, tenant: &Arc<Tenant>) {
        self.rewrite_resources(|r| ResourceHeader {
            bytes: r.bytes.clone(),
            tenant: Some(tenant.clone()),
            pin: r.pin.clone(),
        });
    }

    /// Pins every span of the batch to `pin` (see [`ResourceHeader::pin`]; each resource
    /// shared as before).
    pub fn set_pin(&mut self, pin: &Pin) {
        self.rewrite_resources(|r| ResourceHeader {
            bytes: r.bytes.clone(),
            tenant: r.tenant.clone(),
            pin: Some(pin.clone()),
        });
    }

    /// Replaces each group's resource header with `rewrite` of it, once per distinct header:
    /// groups that shared a header share the rewritten one.
    fn rewrite_resources(&mut self, rewrite: impl Fn(&ResourceHeader) -> ResourceHeader) {
        let mut last: Option<(*const ResourceHeader, Arc<ResourceHeader>)> = None;
        for g in &mut self.groups {
            let now = match &last {
                Some((old, new)) if std::ptr::eq(*old, Arc::as_ptr(&g.resource)) => new.clone(),
                _ => {
                    let new = Arc::new(rewrite(&g.resource));
                    last = Some((Arc::as_ptr(&g.resource), new.clone()));
                    new
                }
            };
            g.resource = now;
        }
    }

    /// The distinct pins of the batch's spans (see [`ResourceHeader::pin`]). Whoever turns
    /// the spans into something that no longer carries their headers (an encoded request
    /// being sent and retried) holds these until it is done with that.
    pub fn pins(&self) -> Vec<Pin> {
        let mut pins: Vec<Pin> = Vec::new();
        for g in &self.groups {
            let id = g.resource.pin_id();
            if let Some(pin) = &g.resource.pin
                && !pins
                    .iter()
                    .any(|p| Arc::as_ptr(p) as *const () as usize == id)
            {
                pins.push(pin.clone());
            }
        }
        pins
    }

    /// Whether any span of the batch has a tenant other than the default.
    pub fn has_tenants(&self) -> bool {
        self.groups.iter().any(|g| g.resource.tenant.is_some())
    }

    /// Splits the batch by tenant, in order of first appearance; the default tenant's part
    /// has `None`. One part, without a copy, when the batch has one tenant.
    pub fn split_by_tenant(mut self) -> Vec<(Option<Arc<Tenant>>, SpanBatch)> {
        let first = self.groups.first().map_or(0, |g| g.resource.tenant_id());
        if self.groups.iter().all(|g| g.resource.tenant_id() == first) {
            let tenant = self.groups.first().and_then(|g| g.resource.tenant.clone());
            return vec![(tenant, self)];
        }
        let mut out: Vec<(Option<Arc<Tenant>>, SpanBatch)> = Vec::new();
        for g in self.groups.drain(..) {
            let id = g.resource.tenant_id();
            match out
                .iter_mut()
                .find(|(t, _)| t.as_ref().map_or(0, |t| t.id()) == id)
            {
                Some((_, part)) => part.groups.push(g),
                None => out.push((g.resource.tenant.clone(), SpanBatch { groups: vec![g] })),
            }
        }
        out
    }

    /// Encoded bytes of the batch's spans (what a tenant's share counts).
    pub fn span_bytes(&self) -> usize {
        self.groups.iter().map(ScopeGroup::span_bytes).sum()
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
        let mut merged: Vec<ScopeGroup> = Vec::with_capacity(self.groups.len());
        if self.groups.len() <= COMPACT_LINEAR_GROUPS {
            // Few groups (the assembler already writes a span into its group when it is
            // among the last few): a look through them costs less than a map.
            for g in self.groups.drain(..) {
                match merged.iter_mut().find(|m| key(m) == key(&g)) {
                    Some(m) => m.spans.extend(g.spans),
                    None => merged.push(g),
                }
            }
        } else {
            let mut first_seen: HashMap<(usize, usize, usize), usize> =
                HashMap::with_capacity(self.groups.len());
            for g in self.groups.drain(..) {
                match first_seen.get(&key(&g)) {
                    Some(&i) => merged[i].spans.extend(g.spans),
                    None => {
                        first_seen.insert(key(&g), merged.len());
                        merged.push(g);
                    }
                }
            }
        }
        // Groups of one resource next to each other, for one ResourceSpans each.
        merged.sort_unstable_by_key(|g| Arc::as_ptr(&g.resource) as usize);
        self.groups = merged;
    }
}

/// Up to this many groups, [`SpanBatch::compact`] finds duplicates by looking through the
/// groups merged so far.
const COMPACT_LINEAR_GROUPS: usize = 32;

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
    let resource = Arc::new(ResourceHeader::new(header.into_bytes(request, rs)));
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

/// Validates a span; `Ok(Some(reason))` if it is well-formed protobuf but has invalid ids,
/// or ids and times where cujo's fast readers would not read them as protobuf does: an id
/// field given twice (protobuf keeps the last, [`crate::span::span_trace_id`] reads the
/// first), or a field [`crate::span::span_head`] reads after the point where it stops.
/// Encoders write each field once and in number order; such a span is made by hand.
fn check_span(span: &[u8]) -> Result<Option<String>, WireError> {
    let mut trace_id: &[u8] = &[];
    let mut span_id: &[u8] = &[];
    let mut problem: Option<String> = None;
    // Times trace_id, span_id and parent_span_id were seen.
    let mut id_fields = [0u8; 3];
    let (mut seen_start, mut head_ended) = (false, false);
    let mut reader = FieldReader::new(span, Msg::Span.name());
    while let Some(field) = reader.next_field() {
        let field = field?;
        let kind = check_field(Msg::Span, field.number, &field.value)?;
        if problem.is_none() {
            problem = order_problem(field.number, head_ended, &mut id_fields);
        }
        head_ended |= head_ends_at(field.number, seen_start);
        seen_start |= field.number == 7;
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

/// A span field `number` that cujo's readers would read differently from protobuf, given
/// whether [`crate::span::span_head`] stopped before it; counts the id fields in `seen`.
fn order_problem(number: u32, head_ended: bool, seen: &mut [u8; 3]) -> Option<String> {
    let name = match number {
        1 => "trace_id",
        2 => "span_id",
        4 => "parent_span_id",
        6 => "kind",
        7 => "start_time_unix_nano",
        _ => return None,
    };
    if head_ended && is_head_field(number) {
        return Some(format!(
            "{name} comes after the span's attributes, events, links or status (encoders write fields in number order)"
        ));
    }
    let count = match number {
        1 => &mut seen[0],
        2 => &mut seen[1],
        4 => &mut seen[2],
        _ => return None,
    };
    *count += 1;
    (*count > 1).then(|| format!("{name} is given more than once"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{put_len_prefix, put_varint};
    use crate::span::{read_span, span_head, span_trace_id};

    fn len_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
        put_len_prefix(out, number, bytes.len());
        out.extend_from_slice(bytes);
    }

    /// A request of one resource, one scope and `span`.
    fn request(span: &[u8]) -> Bytes {
        let mut scope_spans = Vec::new();
        len_field(&mut scope_spans, 2, span);
        let mut resource_spans = Vec::new();
        len_field(&mut resource_spans, 2, &scope_spans);
        let mut request = Vec::new();
        len_field(&mut request, 1, &resource_spans);
        Bytes::from(request)
    }

    fn start(out: &mut Vec<u8>, nanos: u64) {
        put_varint(out, (7 << 3) | 1);
        out.extend_from_slice(&nanos.to_le_bytes());
    }

    fn attribute(out: &mut Vec<u8>) {
        let mut kv = Vec::new();
        len_field(&mut kv, 1, b"user.tier");
        len_field(&mut kv, 2, &[0x0a, 4, b'g', b'o', b'l', b'd']);
        len_field(out, 9, &kv);
    }

    fn rejection(span: &[u8]) -> Option<String> {
        let scanned = scan_request(&request(span)).expect("valid protobuf");
        assert_eq!(
            scanned.batch.span_count() + scanned.rejected.count as usize,
            1
        );
        scanned.rejected.first_reason
    }

    // Found by the `wire` fuzz target: the shard router read the first of two trace ids,
    // the assembler the last.
    #[test]
    fn a_span_with_its_trace_id_twice_is_rejected() {
        let mut span = Vec::new();
        len_field(&mut span, 1, &[1; 16]);
        len_field(&mut span, 2, &[2; 8]);
        len_field(&mut span, 1, &[3; 16]);
        let reason = rejection(&span).expect("rejected");
        assert!(
            reason.contains("trace_id is given more than once"),
            "{reason}"
        );

        let mut once = Vec::new();
        len_field(&mut once, 1, &[3; 16]);
        len_field(&mut once, 2, &[2; 8]);
        assert_eq!(rejection(&once), None);
        assert_eq!(span_trace_id(&once), read_span(&once).trace_id);
    }

    #[test]
    fn pins_lists_each_pin_of_the_batch_once() {
        let mut span = Vec::new();
        len_field(&mut span, 1, &[1; 16]);
        len_field(&mut span, 2, &[2; 8]);
        let scanned = || scan_request(&request(&span)).expect("valid").batch;
        let (a, b): (Pin, Pin) = (Arc::new(1u64), Arc::new(2u64));
        let mut batch = scanned();
        assert!(batch.pins().is_empty());
        batch.set_pin(&a);
        for pin in [&b, &a] {
            let mut more = scanned();
            more.set_pin(pin);
            batch.append(&mut more);
        }
        let pins = batch.pins();
        assert_eq!(pins.len(), 2);
        assert!(Arc::ptr_eq(&pins[0], &a) && Arc::ptr_eq(&pins[1], &b));
        // Held apart from the batch, they outlive it.
        drop(batch);
        assert_eq!(Arc::strong_count(&a), 2);
    }

    #[test]
    fn a_head_field_after_the_attributes_is_rejected_and_other_orders_are_not() {
        let mut late_id = Vec::new();
        len_field(&mut late_id, 1, &[1; 16]);
        start(&mut late_id, 5);
        attribute(&mut late_id);
        len_field(&mut late_id, 2, &[2; 8]);
        let reason = rejection(&late_id).expect("rejected");
        assert!(reason.contains("span_id comes after"), "{reason}");

        // The name after the attributes, or the span id after them with no start time
        // before: span_head reads all it needs either way.
        let mut late_name = Vec::new();
        len_field(&mut late_name, 1, &[1; 16]);
        len_field(&mut late_name, 2, &[2; 8]);
        start(&mut late_name, 5);
        attribute(&mut late_name);
        len_field(&mut late_name, 5, b"GET /");
        let mut no_start = Vec::new();
        len_field(&mut no_start, 1, &[1; 16]);
        attribute(&mut no_start);
        len_field(&mut no_start, 2, &[2; 8]);
        start(&mut no_start, 5);
        for span in [late_name, no_start] {
            assert_eq!(rejection(&span), None);
            let (head, full) = (span_head(&span), read_span(&span));
            assert_eq!(head.span_id, full.span_id);
            assert_eq!(head.start_time_unix_nano, full.start_time_unix_nano);
        }
    }
}
