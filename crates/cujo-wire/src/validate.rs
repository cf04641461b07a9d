//! The OTLP trace schema as a table, and a walk that checks bytes against it.
//!
//! The walk accepts exactly what a protobuf decoder of the OTLP types accepts: known fields
//! must have their declared wire type, strings must be UTF-8, unknown fields are skipped.
//! Nesting is bounded by [`MAX_DEPTH`] (the same bound prost uses), so a 10,000-level
//! `kvlist` is an error, not a stack overflow. Nothing is allocated.

use crate::WireError;
use crate::proto::{FieldReader, Value, WT_I32, WT_I64, WT_LEN, WT_VARINT};

/// Deepest message nesting accepted, counted from the request.
pub const MAX_DEPTH: usize = 100;

/// The OTLP messages that can appear inside a trace request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Msg {
    pub fn name(self) -> &'static str {
        match self {
            Msg::Request => "ExportTraceServiceRequest",
            Msg::ResourceSpans => "ResourceSpans",
            Msg::Resource => "Resource",
            Msg::EntityRef => "EntityRef",
            Msg::ScopeSpans => "ScopeSpans",
            Msg::Scope => "InstrumentationScope",
            Msg::Span => "Span",
            Msg::Event => "Span.Event",
            Msg::Link => "Span.Link",
            Msg::Status => "Status",
            Msg::KeyValue => "KeyValue",
            Msg::AnyValue => "AnyValue",
            Msg::ArrayValue => "ArrayValue",
            Msg::KeyValueList => "KeyValueList",
        }
    }

    /// What field `number` of this message holds; `None` for fields OTLP does not define.
    pub fn field(self, number: u32) -> Option<Kind> {
        use Kind::*;
        Some(match (self, number) {
            (Msg::Request, 1) => Message(Msg::ResourceSpans),
            (Msg::ResourceSpans, 1) => Message(Msg::Resource),
            (Msg::ResourceSpans, 2) => Message(Msg::ScopeSpans),
            (Msg::ResourceSpans, 3) => Str,
            (Msg::Resource, 1) => Message(Msg::KeyValue),
            (Msg::Resource, 2) => Varint,
            (Msg::Resource, 3) => Message(Msg::EntityRef),
            (Msg::EntityRef, 1..=4) => Str,
            (Msg::ScopeSpans, 1) => Message(Msg::Scope),
            (Msg::ScopeSpans, 2) => Message(Msg::Span),
            (Msg::ScopeSpans, 3) => Str,
            (Msg::Scope, 1 | 2) => Str,
            (Msg::Scope, 3) => Message(Msg::KeyValue),
            (Msg::Scope, 4) => Varint,
            (Msg::Span, 1 | 2 | 4) => Bytes,
            (Msg::Span, 3 | 5) => Str,
            (Msg::Span, 6 | 10 | 12 | 14) => Varint,
            (Msg::Span, 7 | 8) => Fixed64,
            (Msg::Span, 9) => Message(Msg::KeyValue),
            (Msg::Span, 11) => Message(Msg::Event),
            (Msg::Span, 13) => Message(Msg::Link),
            (Msg::Span, 15) => Message(Msg::Status),
            (Msg::Span, 16) => Fixed32,
            (Msg::Event, 1) => Fixed64,
            (Msg::Event, 2) => Str,
            (Msg::Event, 3) => Message(Msg::KeyValue),
            (Msg::Event, 4) => Varint,
            (Msg::Link, 1 | 2) => Bytes,
            (Msg::Link, 3) => Str,
            (Msg::Link, 4) => Message(Msg::KeyValue),
            (Msg::Link, 5) => Varint,
            (Msg::Link, 6) => Fixed32,
            (Msg::Status, 2) => Str,
            (Msg::Status, 3) => Varint,
            (Msg::KeyValue, 1) => Str,
            (Msg::KeyValue, 2) => Message(Msg::AnyValue),
            (Msg::KeyValue, 3) => Varint,
            (Msg::AnyValue, 1) => Str,
            (Msg::AnyValue, 2 | 3) => Varint,
            (Msg::AnyValue, 4) => Fixed64,
            (Msg::AnyValue, 5) => Message(Msg::ArrayValue),
            (Msg::AnyValue, 6) => Message(Msg::KeyValueList),
            (Msg::AnyValue, 7) => Bytes,
            (Msg::AnyValue, 8) => Varint,
            (Msg::ArrayValue, 1) => Message(Msg::AnyValue),
            (Msg::KeyValueList, 1) => Message(Msg::KeyValue),
            _ => return None,
        })
    }
}

/// What a known field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    Str,
    Bytes,
    Message(Msg),
}

impl Kind {
    pub fn wire_type(self) -> u8 {
        match self {
            Kind::Varint => WT_VARINT,
            Kind::Fixed64 => WT_I64,
            Kind::Fixed32 => WT_I32,
            Kind::Str | Kind::Bytes | Kind::Message(_) => WT_LEN,
        }
    }
}

/// Checks one field of `msg` (not recursing into sub-messages) and returns its kind if known.
#[inline]
pub fn check_field(msg: Msg, number: u32, value: &Value<'_>) -> Result<Option<Kind>, WireError> {
    let Some(kind) = msg.field(number) else {
        return Ok(None);
    };
    if value.wire_type() != kind.wire_type() {
        return Err(WireError::WireType {
            message: msg.name(),
            field: number,
            found: value.wire_type(),
            expected: kind.wire_type(),
        });
    }
    if let (Kind::Str, Value::Len(bytes)) = (kind, value)
        && std::str::from_utf8(bytes).is_err()
    {
        return Err(WireError::InvalidUtf8 {
            message: msg.name(),
            field: number,
        });
    }
    Ok(Some(kind))
}

/// Validates `buf` as a whole `msg` at nesting `depth`.
pub fn validate(msg: Msg, buf: &[u8], depth: usize) -> Result<(), WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep(MAX_DEPTH));
    }
    let mut reader = FieldReader::new(buf, msg.name());
    while let Some(field) = reader.next_field() {
        let field = field?;
        if let (Some(Kind::Message(sub)), Value::Len(bytes)) =
            (check_field(msg, field.number, &field.value)?, field.value)
        {
            validate(sub, bytes, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_kvlist(levels: usize) -> Vec<u8> {
        // AnyValue { kvlist_value: KeyValueList { values: [KeyValue { key: "k", value: <inner> }] } }
        let mut inner: Vec<u8> = vec![0x18, 0x01]; // AnyValue.int_value = 1
        for _ in 0..levels {
            let mut kv = vec![0x0a, 0x01, b'k'];
            crate::proto::put_len_prefix(&mut kv, 2, inner.len());
            kv.extend_from_slice(&inner);
            let mut list = Vec::new();
            crate::proto::put_len_prefix(&mut list, 1, kv.len());
            list.extend_from_slice(&kv);
            let mut any = Vec::new();
            crate::proto::put_len_prefix(&mut any, 6, list.len());
            any.extend_from_slice(&list);
            inner = any;
        }
        inner
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = nested_kvlist(10_000);
        assert_eq!(
            validate(Msg::AnyValue, &deep, 0),
            Err(WireError::TooDeep(MAX_DEPTH))
        );
        let shallow = nested_kvlist(10);
        assert_eq!(validate(Msg::AnyValue, &shallow, 0), Ok(()));
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        // KeyValue.key = [0xff]
        let kv = [0x0a, 0x01, 0xff];
        assert_eq!(
            validate(Msg::KeyValue, &kv, 0),
            Err(WireError::InvalidUtf8 {
                message: "KeyValue",
                field: 1
            })
        );
    }

    #[test]
    fn wrong_wire_type_is_rejected() {
        // Span.start_time_unix_nano (7) sent as varint
        let span = [0x38, 0x01];
        assert!(matches!(
            validate(Msg::Span, &span, 0),
            Err(WireError::WireType { field: 7, .. })
        ));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // field 99 varint on a Span
        let span = [0x98, 0x06, 0x05];
        assert_eq!(validate(Msg::Span, &span, 0), Ok(()));
    }
}
