//! Just enough protobuf reading for the harness: find every span of an encoded
//! `ExportTraceServiceRequest` (its trace id and span id, and where they sit in the buffer),
//! and read `partial_success` out of a response.
//!
//! This is deliberately independent of `cujo-wire`: the benchmark checks cujo's output, so
//! it must not share cujo's reader.

use std::ops::Range;

/// The request is not a protobuf message of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed OTLP message: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// A field: number, value, and for length-delimited fields the payload's range in its message.
type Field<'a> = (u64, Value<'a>, Range<usize>);

struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(Malformed("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed("varint longer than 10 bytes"))
    }

    fn skip(&mut self, n: usize) -> Result<Range<usize>, Malformed> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(Malformed("field runs past the end of its message"))?;
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    /// The next field: its number, its value, and for length-delimited fields the range of
    /// the payload within this message.
    fn next(&mut self) -> Option<Result<Field<'a>, Malformed>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        Some(self.read_field())
    }

    fn read_field(&mut self) -> Result<Field<'a>, Malformed> {
        let key = self.varint()?;
        let number = key >> 3;
        match key & 7 {
            0 => Ok((number, Value::Varint(self.varint()?), 0..0)),
            1 => self.skip(8).map(|_| (number, Value::Fixed, 0..0)),
            5 => self.skip(4).map(|_| (number, Value::Fixed, 0..0)),
            2 => {
                let len = self.varint()? as usize;
                let range = self.skip(len)?;
                Ok((number, Value::Bytes(&self.buf[range.clone()]), range))
            }
            _ => Err(Malformed("unsupported wire type")),
        }
    }
}

/// Where one span's ids sit, as byte ranges of the whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIdRanges {
    pub trace_id: Range<usize>,
    pub span_id: Range<usize>,
}

/// Calls `on_span(span_start, span_bytes)` for every span of the request, where `span_start`
/// is the offset of the span message within `request`.
fn walk_spans(
    request: &[u8],
    mut on_span: impl FnMut(usize, &[u8]) -> Result<(), Malformed>,
) -> Result<(), Malformed> {
    let mut req = Fields::new(request);
    while let Some(field) = req.next() {
        // ExportTraceServiceRequest.resource_spans = 1
        let (1, Value::Bytes(rs), rs_range) = field? else {
            continue;
        };
        let mut rs_fields = Fields::new(rs);
        while let Some(field) = rs_fields.next() {
            // ResourceSpans.scope_spans = 2
            let (2, Value::Bytes(ss), ss_range) = field? else {
                continue;
            };
            let mut ss_fields = Fields::new(ss);
            while let Some(field) = ss_fields.next() {
                // ScopeSpans.spans = 2
                let (2, Value::Bytes(span), span_range) = field? else {
                    continue;
                };
                on_span(rs_range.start + ss_range.start + span_range.start, span)?;
            }
        }
    }
    Ok(())
}

/// Calls `on_span(trace_id, span_id)` for every span; returns the number of spans.
pub fn for_each_span(
    request: &[u8],
    mut on_span: impl FnMut(&[u8], &[u8]),
) -> Result<u64, Malformed> {
    let mut count = 0u64;
    walk_spans(request, |_, span| {
        let mut trace_id: &[u8] = &[];
        let mut span_id: &[u8] = &[];
        let mut fields = Fields::new(span);
        while let Some(field) = fields.next() {
            match field? {
                (1, Value::Bytes(b), _) => trace_id = b,
                (2, Value::Bytes(b), _) => span_id = b,
                _ => {}
            }
        }
        on_span(trace_id, span_id);
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// Offsets of every trace id in a request: the span's own ids, and the trace ids of its links.
#[derive(Debug, Default, Clone)]
pub struct IdLocations {
    pub spans: Vec<SpanIdRanges>,
    pub link_trace_ids: Vec<Range<usize>>,
}

/// Finds the ids of every span (and the trace ids of links) in `request`.
pub fn locate_ids(request: &[u8]) -> Result<IdLocations, Malformed> {
    let mut out = IdLocations::default();
    walk_spans(request, |start, span| {
        let mut ids = SpanIdRanges {
            trace_id: 0..0,
            span_id: 0..0,
        };
        let mut fields = Fields::new(span);
        while let Some(field) = fields.next() {
            match field? {
                (1, Value::Bytes(_), r) => ids.trace_id = start + r.start..start + r.end,
                (2, Value::Bytes(_), r) => ids.span_id = start + r.start..start + r.end,
                // Span.links = 13; Link.trace_id = 1
                (13, Value::Bytes(link), r) => {
                    let mut link_fields = Fields::new(link);
                    while let Some(field) = link_fields.next() {
                        if let (1, Value::Bytes(_), lr) = field? {
                            let base = start + r.start;
                            out.link_trace_ids.push(base + lr.start..base + lr.end);
                        }
                    }
                }
                _ => {}
            }
        }
        out.spans.push(ids);
        Ok(())
    })?;
    Ok(out)
}

/// `partial_success` of an `ExportTraceServiceResponse`: spans the server refused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PartialSuccess {
    pub rejected_spans: u64,
    pub error_message: String,
}

pub fn read_partial_success(response: &[u8]) -> Result<PartialSuccess, Malformed> {
    let mut out = PartialSuccess::default();
    let mut fields = Fields::new(response);
    while let Some(field) = fields.next() {
        let (1, Value::Bytes(ps), _) = field? else {
            continue;
        };
        let mut ps_fields = Fields::new(ps);
        while let Some(field) = ps_fields.next() {
            match field? {
                (1, Value::Varint(n), _) => out.rejected_spans = n,
                (2, Value::Bytes(msg), _) => {
                    out.error_message = String::from_utf8_lossy(msg).into_owned()
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finalizer
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
    u64::from_le_bytes(w)
}

/// A 64-bit hash of a span's identity. Summed (wrapping) over a set of spans it gives an
/// order-independent checksum of that multiset: a lost span, a duplicate or a changed id all
/// change the sum.
pub fn span_key(trace_id: &[u8], span_id: &[u8]) -> u64 {
    let lens = ((trace_id.len() as u64) << 8) | span_id.len() as u64;
    let mut h = mix(lens ^ 0x9e37_79b9_7f4a_7c15);
    for chunk in trace_id.chunks(8).chain(span_id.chunks(8)) {
        h = mix(h ^ word(chunk));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Link};
    use prost::Message;

    fn span(t: u8, s: u8, link: Option<u8>) -> Span {
        Span {
            trace_id: vec![t; 16],
            span_id: vec![s; 8],
            name: "x".into(),
            links: link
                .map(|l| Link {
                    trace_id: vec![l; 16],
                    span_id: vec![1; 8],
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn finds_every_span_and_link() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(1, 2, None), span(1, 3, Some(9))],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(4, 5, None)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let bytes = req.encode_to_vec();
        let mut seen = Vec::new();
        let n = for_each_span(&bytes, |t, s| seen.push((t[0], s[0]))).unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen, vec![(1, 2), (1, 3), (4, 5)]);

        let loc = locate_ids(&bytes).unwrap();
        assert_eq!(loc.spans.len(), 3);
        for ids in &loc.spans {
            assert_eq!(ids.trace_id.len(), 16);
            assert_eq!(ids.span_id.len(), 8);
        }
        assert_eq!(bytes[loc.spans[2].trace_id.clone()], [4u8; 16]);
        assert_eq!(bytes[loc.spans[2].span_id.clone()], [5u8; 8]);
        assert_eq!(loc.link_trace_ids.len(), 1);
        assert_eq!(bytes[loc.link_trace_ids[0].clone()], [9u8; 16]);
    }

    #[test]
    fn reads_partial_success() {
        let resp = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 7,
                error_message: "bad ids".into(),
            }),
        };
        let ps = read_partial_success(&resp.encode_to_vec()).unwrap();
        assert_eq!(ps.rejected_spans, 7);
        assert_eq!(ps.error_message, "bad ids");
        assert_eq!(
            read_partial_success(&[]).unwrap(),
            PartialSuccess::default()
        );
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, 2, None)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        assert!(for_each_span(&bytes[..bytes.len() - 3], |_, _| {}).is_err());
    }

    #[test]
    fn span_key_depends_on_both_ids() {
        let a = span_key(&[1; 16], &[2; 8]);
        assert_ne!(a, span_key(&[1; 16], &[3; 8]));
        assert_ne!(a, span_key(&[2; 16], &[2; 8]));
        assert_eq!(a, span_key(&[1; 16], &[2; 8]));
    }
}
