//! Reading the fields of one encoded span, and appending attributes to it.
//!
//! The span was validated when its request was scanned, so reading here does not re-check
//! UTF-8 or nesting; it only walks the top-level fields the flow needs. Attributes are
//! appended as extra encoded `attributes` entries (protobuf allows a repeated field to grow
//! anywhere in the message); an attribute that must be replaced is removed by rewriting the
//! span without that entry.

use crate::proto::{FieldReader, Value, put_len_prefix, put_varint};

const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_LINKS: u32 = 13;
const SPAN_STATUS: u32 = 15;

/// OTLP span kinds.
pub mod kind {
    pub const INTERNAL: u64 = 1;
    pub const SERVER: u64 = 2;
    pub const CLIENT: u64 = 3;
    pub const PRODUCER: u64 = 4;
    pub const CONSUMER: u64 = 5;
}

/// The top-level fields of a span the assembler needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanFields<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    /// The span name's bytes (UTF-8, checked when the request was scanned).
    pub name: &'a [u8],
    pub kind: u64,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    /// `Status.code`: 0 unset, 1 ok, 2 error.
    pub status_code: u64,
    /// (trace id, span id) of every link with well-formed ids.
    pub links: Vec<([u8; 16], [u8; 8])>,
    /// `Span.flags`: W3C trace flags in the low byte; bit 8 says whether bit 9 (the parent
    /// is remote) is known.
    pub flags: u32,
}

/// `Span.flags` bit: whether the parent's remoteness is known.
pub const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// `Span.flags` bit: the parent span is in another process.
pub const FLAG_IS_REMOTE: u32 = 0x200;

impl SpanFields<'_> {
    /// Whether the span's parent is known to be in another process: the span is where the
    /// trace entered this process (OTLP 1.1 span flags, set by the OpenTelemetry SDKs).
    pub fn parent_is_remote(&self) -> bool {
        self.parent_span_id.is_some()
            && self.flags & (FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE)
                == FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
    }
}

/// Reads the fields of `span`; ids of the wrong length read as zero (the receiver already
/// refused such spans).
pub fn read_span(span: &[u8]) -> SpanFields<'_> {
    read_span_with(span, |_, _| {})
}

/// [`read_span`], also calling `on_attribute` with the key and the encoded `KeyValue` of
/// every attribute, in the same pass over the span ([`key_value`] reads the value).
pub fn read_span_with<'a>(
    span: &'a [u8],
    mut on_attribute: impl FnMut(&'a [u8], &'a [u8]),
) -> SpanFields<'a> {
    let mut out = SpanFields::default();
    let mut pos = 0usize;
    while let Some(&tag) = span.get(pos) {
        // The fields every span has, by their one-byte tag (and one-byte length): read
        // straight, in the order encoders write them, so the branches predict well. Anything
        // else goes through the general reader, one field at a time.
        match tag {
            TAG_TRACE_ID | TAG_SPAN_ID | TAG_PARENT | TAG_NAME | TAG_ATTRIBUTE => {
                if let Some(&len) = span.get(pos + 1)
                    && len < 0x80
                {
                    let start = pos + 2;
                    let Some(b) = span.get(start..start + usize::from(len)) else {
                        break; // truncated: the general reader stops here too
                    };
                    pos = start + usize::from(len);
                    match tag {
                        TAG_ATTRIBUTE => {
                            if let Some(key) = leading_key(b) {
                                on_attribute(key, b);
                            }
                        }
                        TAG_TRACE_ID => copy_id(&mut out.trace_id, b),
                        TAG_SPAN_ID => copy_id(&mut out.span_id, b),
                        TAG_PARENT => set_parent(&mut out, b),
                        _ => out.name = b,
                    }
                    continue;
                }
            }
            TAG_START | TAG_END => {
                let Some(b) = span.get(pos + 1..pos + 9) else {
                    break;
                };
                let mut t = [0u8; 8];
                t.copy_from_slice(b);
                let t = u64::from_le_bytes(t);
                if tag == TAG_START {
                    out.start_time_unix_nano = t;
                } else {
                    out.end_time_unix_nano = t;
                }
                pos += 9;
                continue;
            }
            TAG_KIND => {
                if let Some(&k) = span.get(pos + 1)
                    && k < 0x80
                {
                    out.kind = u64::from(k);
                    pos += 2;
                    continue;
                }
            }
            _ => {}
        }
        let mut reader = FieldReader::starting_at(span, pos, "Span");
        let Some(Ok(field)) = reader.next_field() else {
            break;
        };
        pos = reader.position();
        read_span_field(&mut out, field, &mut on_attribute);
    }
    out
}

/// Tags (field number and wire type in one byte) of the span fields [`read_span_with`]
/// reads straight.
const TAG_TRACE_ID: u8 = 1 << 3 | 2;
const TAG_SPAN_ID: u8 = 2 << 3 | 2;
const TAG_PARENT: u8 = 4 << 3 | 2;
const TAG_NAME: u8 = 5 << 3 | 2;
const TAG_KIND: u8 = 6 << 3;
const TAG_START: u8 = 7 << 3 | 1;
const TAG_END: u8 = 8 << 3 | 1;
const TAG_ATTRIBUTE: u8 = (SPAN_ATTRIBUTES as u8) << 3 | 2;

fn set_parent(out: &mut SpanFields<'_>, b: &[u8]) {
    if let Ok(id) = <[u8; 8]>::try_from(b) {
        out.parent_span_id = Some(id);
    }
}

/// One field of a span, into `out` ([`read_span_with`]'s general case).
fn read_span_field<'a>(
    out: &mut SpanFields<'a>,
    field: crate::proto::Field<'a>,
    on_attribute: &mut impl FnMut(&'a [u8], &'a [u8]),
) {
    match (field.number, field.value) {
        (1, Value::Len(b)) => copy_id(&mut out.trace_id, b),
        (2, Value::Len(b)) => copy_id(&mut out.span_id, b),
        (4, Value::Len(b)) => set_parent(out, b),
        (5, Value::Len(b)) => out.name = b,
        (6, Value::Varint(k)) => out.kind = k,
        (SPAN_ATTRIBUTES, Value::Len(kv)) => {
            if let Some(key) = leading_key(kv) {
                on_attribute(key, kv);
            }
        }
        (7, Value::I64(t)) => out.start_time_unix_nano = t,
        (16, Value::I32(f)) => out.flags = f,
        (8, Value::I64(t)) => out.end_time_unix_nano = t,
        (SPAN_LINKS, Value::Len(link)) => {
            let (mut t, mut s) = ([0u8; 16], [0u8; 8]);
            let mut r = FieldReader::new(link, "Span.Link");
            while let Some(Ok(f)) = r.next_field() {
                match (f.number, f.value) {
                    (1, Value::Len(b)) => copy_id(&mut t, b),
                    (2, Value::Len(b)) => copy_id(&mut s, b),
                    _ => {}
                }
            }
            if t != [0; 16] && s != [0; 8] {
                out.links.push((t, s));
            }
        }
        (SPAN_STATUS, Value::Len(status)) => {
            let mut r = FieldReader::new(status, "Status");
            while let Some(Ok(f)) = r.next_field() {
                if let (3, Value::Varint(code)) = (f.number, f.value) {
                    out.status_code = code;
                }
            }
        }
        _ => {}
    }
}

/// The leading fields of a span: what release needs, read without walking its attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanHead {
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub kind: u64,
    pub start_time_unix_nano: u64,
}

/// Reads [`SpanHead`]. Encoders write fields in number order, so the walk stops at the first
/// field past `end_time_unix_nano` once the start time was seen; otherwise it reads to the end.
/// The receivers refuse a span with a head field past that point (`scan_request`), so what
/// this reads is what a full walk of the span reads.
pub fn span_head(span: &[u8]) -> SpanHead {
    head_in_field_order(span).unwrap_or_else(|| walk_head(span))
}

/// [`span_head`] by the general field walk.
fn walk_head(span: &[u8]) -> SpanHead {
    let mut out = SpanHead::default();
    let mut seen_start = false;
    let mut reader = FieldReader::new(span, "Span");
    while let Some(Ok(field)) = reader.next_field() {
        if head_ends_at(field.number, seen_start) {
            break;
        }
        match (field.number, field.value) {
            (2, Value::Len(b)) => copy_id(&mut out.span_id, b),
            (4, Value::Len(b)) if b.len() == 8 => {
                let mut id = [0u8; 8];
                id.copy_from_slice(b);
                out.parent_span_id = Some(id);
            }
            (6, Value::Varint(k)) => out.kind = k,
            (7, Value::I64(t)) => {
                out.start_time_unix_nano = t;
                seen_start = true;
            }
            _ => {}
        }
    }
    out
}

/// A span's `start_time_unix_nano` ([`span_head`]).
pub fn span_start_time(span: &[u8]) -> u64 {
    span_head(span).start_time_unix_nano
}

/// [`span_head`] for a span whose head fields come in number order, as encoders write them:
/// steps over the fields by their tags up to the start time, without the general field
/// walk. `None` for a span laid out any other way, or with a head field again after the
/// start (and end) time: a later one would win, so the walk reads it.
fn head_in_field_order(span: &[u8]) -> Option<SpanHead> {
    const TRACE_ID: u8 = 0x0a;
    const SPAN_ID: u8 = 0x12;
    const TRACE_STATE: u8 = 0x1a;
    const PARENT_SPAN_ID: u8 = 0x22;
    const NAME: u8 = 0x2a;
    const KIND: u8 = 0x30;
    const START: u8 = 0x39;
    const END: u8 = 0x41;
    let mut out = SpanHead::default();
    let mut at = 0usize;
    loop {
        let tag = *span.get(at)?;
        at += 1;
        match tag {
            TRACE_ID | SPAN_ID | TRACE_STATE | PARENT_SPAN_ID | NAME => {
                let len = usize::try_from(crate::proto::read_varint(span, &mut at)?).ok()?;
                let value = span.get(at..at.checked_add(len)?)?;
                at += len;
                match tag {
                    SPAN_ID => copy_id(&mut out.span_id, value),
                    PARENT_SPAN_ID if len == 8 => {
                        let mut id = [0u8; 8];
                        id.copy_from_slice(value);
                        out.parent_span_id = Some(id);
                    }
                    _ => {}
                }
            }
            KIND => out.kind = crate::proto::read_varint(span, &mut at)?,
            START => {
                out.start_time_unix_nano =
                    u64::from_le_bytes(span.get(at..at + 8)?.try_into().ok()?);
                at += 8;
                if span.get(at) == Some(&END) {
                    at += 9;
                }
                return match span.get(at) {
                    Some(&next) if next >> 3 <= 8 => None,
                    _ => Some(out),
                };
            }
            _ => return None,
        }
    }
}

/// Whether [`span_head`] stops at field `number`, the start time seen or not.
pub(crate) fn head_ends_at(number: u32, seen_start: bool) -> bool {
    seen_start && number > 8
}

/// The fields [`span_head`] reads.
pub(crate) fn is_head_field(number: u32) -> bool {
    matches!(number, 2 | 4 | 6 | 7)
}

/// A span's trace id (zeros when absent). Encoders write `trace_id` (field 1) first, so this
/// usually reads 18 bytes; otherwise it walks the fields.
pub fn span_trace_id(span: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    if span.len() >= 18 && span[0] == 0x0a && span[1] == 16 {
        id.copy_from_slice(&span[2..18]);
        return id;
    }
    let mut reader = FieldReader::new(span, "Span");
    while let Some(Ok(field)) = reader.next_field() {
        if let (1, Value::Len(b)) = (field.number, field.value) {
            copy_id(&mut id, b);
            break;
        }
    }
    id
}

fn copy_id<const N: usize>(dst: &mut [u8; N], src: &[u8]) {
    if src.len() == N {
        dst.copy_from_slice(src);
    }
}

/// The key of an encoded `KeyValue` when it is the first field, as encoders write it; a
/// short key (under 128 bytes) is read without a field reader.
#[inline]
fn leading_key(kv: &[u8]) -> Option<&[u8]> {
    if let [0x0a, len, rest @ ..] = kv
        && *len < 0x80
    {
        return rest.get(..usize::from(*len));
    }
    let mut r = FieldReader::new(kv, "KeyValue");
    match r.next_field() {
        Some(Ok(f)) => match (f.number, f.value) {
            (1, Value::Len(key)) => Some(key),
            _ => None,
        },
        _ => None,
    }
}

/// One attribute of a span or resource: its key and its encoded `AnyValue` (may be empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
}

/// The `KeyValue` entries of field `field` of an encoded message, each as (its `KeyValue`
/// bytes, the whole encoded entry: tag, length and `KeyValue`).
fn key_value_fields(message: &[u8], field: u32) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut reader = FieldReader::new(message, "attributes");
    std::iter::from_fn(move || {
        loop {
            let f = reader.next_field()?.ok()?;
            if let (n, Value::Len(kv)) = (f.number, f.value)
                && n == field
            {
                return Some((kv, &message[f.start..f.end]));
            }
        }
    })
}

/// Iterates the attributes (`KeyValue` entries of field `field`) of an encoded message:
/// field 9 of a `Span`, field 1 of a `Resource`.
pub fn attributes(message: &[u8], field: u32) -> impl Iterator<Item = Attribute<'_>> {
    key_value_fields(message, field).map(|(kv, _)| read_key_value(kv))
}

/// The attributes (`KeyValue` entries of field `field`) of an encoded message as (key, the
/// whole encoded entry: tag, length and `KeyValue`), keys as bytes (no UTF-8 check).
pub fn attribute_entries(message: &[u8], field: u32) -> impl Iterator<Item = (&[u8], &[u8])> {
    key_value_fields(message, field).filter_map(|(kv, entry)| Some((leading_key(kv)?, entry)))
}

/// The keys of a span's attributes, as bytes (no UTF-8 check: the receiver checked the
/// span), in order.
pub fn span_attribute_keys(span: &[u8]) -> impl Iterator<Item = &[u8]> {
    span_key_values(span).map(|(key, _)| key)
}

/// A span's attributes as (key, encoded `KeyValue`), keys as bytes (no UTF-8 check), in
/// order.
pub fn span_key_values(span: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    key_value_fields(span, SPAN_ATTRIBUTES).filter_map(|(kv, _)| Some((leading_key(kv)?, kv)))
}

/// The encoded `AnyValue` of the span's attribute `key`, found by comparing key bytes (no
/// UTF-8 check: the receiver checked the span) without collecting the attributes.
pub fn span_attribute_value<'a>(span: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut reader = FieldReader::new(span, "Span");
    while let Some(Ok(f)) = reader.next_field() {
        if let (SPAN_ATTRIBUTES, Value::Len(kv)) = (f.number, f.value)
            && leading_key(kv) == Some(key)
        {
            return Some(read_key_value_raw(kv).1);
        }
    }
    None
}

/// The encoded `AnyValue` of an encoded `KeyValue` (empty when absent).
pub fn key_value(kv: &[u8]) -> &[u8] {
    read_key_value_raw(kv).1
}

fn read_key_value_raw(kv: &[u8]) -> (&[u8], &[u8]) {
    let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
    let mut r = FieldReader::new(kv, "KeyValue");
    while let Some(Ok(f)) = r.next_field() {
        match (f.number, f.value) {
            (1, Value::Len(k)) => key = k,
            (2, Value::Len(v)) => value = v,
            _ => {}
        }
    }
    (key, value)
}

/// Attributes of a span.
pub fn span_attributes(span: &[u8]) -> impl Iterator<Item = Attribute<'_>> {
    attributes(span, SPAN_ATTRIBUTES)
}

fn read_key_value(kv: &[u8]) -> Attribute<'_> {
    let mut out = Attribute {
        key: "",
        value: &[],
    };
    let mut r = FieldReader::new(kv, "KeyValue");
    while let Some(Ok(f)) = r.next_field() {
        match (f.number, f.value) {
            (1, Value::Len(k)) => out.key = std::str::from_utf8(k).unwrap_or(""),
            (2, Value::Len(v)) => out.value = v,
            _ => {}
        }
    }
    out
}

/// The string inside an encoded `AnyValue`, if it holds one.
pub fn any_value_str(value: &[u8]) -> Option<&str> {
    let mut r = FieldReader::new(value, "AnyValue");
    while let Some(Ok(f)) = r.next_field() {
        if let (1, Value::Len(s)) = (f.number, f.value) {
            return std::str::from_utf8(s).ok();
        }
    }
    None
}

/// The `service.name` of an encoded `ResourceSpans` header (see [`crate::ResourceHeader`]).
pub fn service_name(resource_spans_header: &[u8]) -> Option<&str> {
    let mut r = FieldReader::new(resource_spans_header, "ResourceSpans");
    while let Some(Ok(f)) = r.next_field() {
        if let (1, Value::Len(resource)) = (f.number, f.value)
            && let Some(a) = attributes(resource, 1).find(|a| a.key == "service.name")
        {
            return any_value_str(a.value);
        }
    }
    None
}

/// Encoded attribute values that cujo derives.
pub enum NewValue<'a> {
    /// An already-encoded `AnyValue`, copied from another span.
    Encoded(&'a [u8]),
    Str(&'a str),
    Int(i64),
}

impl NewValue<'_> {
    fn encoded_len(&self) -> usize {
        match self {
            NewValue::Encoded(b) => b.len(),
            NewValue::Str(s) => crate::proto::len_field_size(1, s.len()),
            NewValue::Int(i) => 1 + crate::proto::varint_len(*i as u64),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            NewValue::Encoded(b) => out.extend_from_slice(b),
            NewValue::Str(s) => {
                put_len_prefix(out, 1, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            NewValue::Int(i) => {
                put_varint(out, 3 << 3);
                put_varint(out, *i as u64);
            }
        }
    }
}

/// Appends `KeyValue { key: prefix + key, value }` as a span attribute.
pub fn append_attribute(out: &mut Vec<u8>, prefix: &str, key: &str, value: &NewValue<'_>) {
    let key_len = prefix.len() + key.len();
    let value_len = value.encoded_len();
    let kv_len =
        crate::proto::len_field_size(1, key_len) + crate::proto::len_field_size(2, value_len);
    put_len_prefix(out, SPAN_ATTRIBUTES, kv_len);
    put_len_prefix(out, 1, key_len);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(key.as_bytes());
    put_len_prefix(out, 2, value_len);
    value.write(out);
}

/// [`append_attribute`] of an integer under a short key, assembled on the stack and copied
/// once: the attributes written on every span (`cujo.root.offset_ms`, `cujo.async.hops`).
/// The bytes are the same as [`append_attribute`]'s with [`NewValue::Int`].
pub fn append_int_attribute(out: &mut Vec<u8>, key: &str, value: i64) {
    // Key and value fit one-byte lengths: the attribute is at most 2 + 115 bytes.
    const MAX_KEY: usize = 100;
    if key.len() > MAX_KEY {
        return append_attribute(out, "", key, &NewValue::Int(value));
    }
    let mut buf = [0u8; 2 + 2 + MAX_KEY + 3 + 10];
    let value_len = 1 + crate::proto::varint_len(value as u64);
    buf[0] = (SPAN_ATTRIBUTES as u8) << 3 | crate::proto::WT_LEN;
    buf[1] = (2 + key.len() + 2 + value_len) as u8;
    buf[2] = 1 << 3 | crate::proto::WT_LEN;
    buf[3] = key.len() as u8;
    let mut at = 4 + key.len();
    buf[4..at].copy_from_slice(key.as_bytes());
    buf[at] = 2 << 3 | crate::proto::WT_LEN;
    buf[at + 1] = value_len as u8;
    buf[at + 2] = 3 << 3;
    at += 3;
    let mut v = value as u64;
    while v >= 0x80 {
        buf[at] = (v as u8) | 0x80;
        v >>= 7;
        at += 1;
    }
    buf[at] = v as u8;
    out.extend_from_slice(&buf[..at + 1]);
}

/// Copies `span` to `out` leaving out the attributes whose key `drop` selects.
pub fn copy_without_attributes(span: &[u8], out: &mut Vec<u8>, drop: impl Fn(&str) -> bool) {
    let mut reader = FieldReader::new(span, "Span");
    while let Some(Ok(f)) = reader.next_field() {
        if let (SPAN_ATTRIBUTES, Value::Len(kv)) = (f.number, f.value)
            && drop(read_key_value(kv).key)
        {
            continue;
        }
        out.extend_from_slice(&span[f.start..f.end]);
    }
}

#[cfg(test)]
/// [`read_span_with`] without its straight path: every field through the general reader,
/// for the property test.
fn read_span_walk<'a>(
    span: &'a [u8],
    mut on_attribute: impl FnMut(&'a [u8], &'a [u8]),
) -> SpanFields<'a> {
    let mut out = SpanFields::default();
    let mut reader = FieldReader::new(span, "Span");
    while let Some(Ok(field)) = reader.next_field() {
        read_span_field(&mut out, field, &mut on_attribute);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{
        NewValue, append_attribute, append_int_attribute, read_span_walk, read_span_with,
        span_head, span_start_time, walk_head,
    };
    use crate::proto::{put_len_prefix, put_varint};

    /// One field of a span as an encoder might write it: `(number, wire type)` with a value.
    fn field() -> impl Strategy<Value = Vec<u8>> {
        (
            1u32..=20,
            0u8..3,
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..24),
        )
            .prop_map(|(number, wire, value, bytes)| {
                let mut out = Vec::new();
                match wire {
                    0 => {
                        put_varint(&mut out, u64::from(number) << 3);
                        put_varint(&mut out, value);
                    }
                    1 => {
                        put_varint(&mut out, (u64::from(number) << 3) | 1);
                        out.extend_from_slice(&value.to_le_bytes());
                    }
                    _ => {
                        put_len_prefix(&mut out, number, bytes.len());
                        out.extend_from_slice(&bytes);
                    }
                }
                out
            })
    }

    fn span_in_field_order(name: &[u8], start: u64, end: u64, rest: &[u8]) -> Vec<u8> {
        let mut span = Vec::new();
        put_len_prefix(&mut span, 1, 16);
        span.extend_from_slice(&[1; 16]);
        put_len_prefix(&mut span, 2, 8);
        span.extend_from_slice(&[2; 8]);
        put_len_prefix(&mut span, 4, 8);
        span.extend_from_slice(&[3; 8]);
        put_len_prefix(&mut span, 5, name.len());
        span.extend_from_slice(name);
        span.extend_from_slice(&[0x30, 2, 0x39]);
        span.extend_from_slice(&start.to_le_bytes());
        span.push(0x41);
        span.extend_from_slice(&end.to_le_bytes());
        span.extend_from_slice(rest);
        span
    }

    #[test]
    fn a_span_in_field_order_gives_its_start_and_a_repeated_start_the_last() {
        let span = span_in_field_order(&[b'x'; 300], 7, 9, &[]);
        assert_eq!(span_start_time(&span), 7);
        // A second start time after the end time wins, as in a full walk.
        let mut repeated = span_in_field_order(b"GET", 7, 9, &[0x39]);
        repeated.extend_from_slice(&11u64.to_le_bytes());
        assert_eq!(span_start_time(&repeated), 11);
        assert_eq!(walk_head(&repeated).start_time_unix_nano, 11);
        let h = span_head(&span);
        assert_eq!(
            (h.span_id, h.parent_span_id, h.kind),
            ([2; 8], Some([3; 8]), 2)
        );
    }

    proptest! {
        /// Whatever the bytes, the head is the one the full field walk reads.
        #[test]
        fn the_start_time_is_what_span_head_reads(
            fields in prop::collection::vec(field(), 0..12),
            head_first in any::<bool>(),
            start in any::<u64>(),
            end in any::<u64>(),
        ) {
            let rest: Vec<u8> = fields.concat();
            let span = if head_first {
                span_in_field_order(b"op", start, end, &rest)
            } else {
                rest
            };
            prop_assert_eq!(span_head(&span), walk_head(&span));
        }

        #[test]
        fn arbitrary_bytes_read_as_span_head_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
            prop_assert_eq!(span_head(&bytes), walk_head(&bytes));
        }

        /// The straight path of `read_span_with` reads what the general walk reads, and
        /// hands over the same attributes in the same order, whatever the fields (cut short
        /// anywhere, too).
        #[test]
        fn read_span_with_reads_what_the_walk_reads(
            fields in prop::collection::vec(field(), 0..12),
            head_first in any::<bool>(),
            start in any::<u64>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let rest: Vec<u8> = fields.concat();
            let mut span = if head_first {
                span_in_field_order(b"op", start, start + 5, &rest)
            } else {
                rest
            };
            for bytes in [span.clone(), { span.truncate(cut.index(span.len() + 1)); span }] {
                let (mut fast, mut walk) = (Vec::new(), Vec::new());
                let a = read_span_with(&bytes, |k, kv| fast.push((k, kv)));
                let b = read_span_walk(&bytes, |k, kv| walk.push((k, kv)));
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
                prop_assert_eq!(fast, walk);
            }
        }

        #[test]
        fn arbitrary_bytes_read_as_the_walk_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..160)) {
            let (mut fast, mut walk) = (Vec::new(), Vec::new());
            let a = read_span_with(&bytes, |k, kv| fast.push((k, kv)));
            let b = read_span_walk(&bytes, |k, kv| walk.push((k, kv)));
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
            prop_assert_eq!(fast, walk);
        }
    }

    proptest! {
        #[test]
        fn an_integer_attribute_written_at_once_is_the_general_encoding(
            key in "[a-z._]{0,120}",
            value in any::<i64>(),
        ) {
            let mut general = vec![7u8];
            append_attribute(&mut general, "", &key, &NewValue::Int(value));
            let mut fast = vec![7u8];
            append_int_attribute(&mut fast, &key, value);
            prop_assert_eq!(fast, general);
        }
    }
}
