//! The origin of a trace — the root span whose request caused it, possibly in an earlier
//! trace reached through span links — and writing what it propagates onto a span.
//!
//! An origin is kept compact because the root cache holds one per released trace: the
//! propagated attributes are one buffer of encoded `attributes` entries, keys already under
//! the configured prefix, ready to be appended to a span as they are.

use cujo_wire::span::{
    Attribute, NewValue, any_value_str, append_attribute, append_int_attribute, attribute_entries,
    attributes, copy_without_attributes, span_attribute_keys, span_attributes,
};

use crate::settings::PropagateSettings;

/// Field number of `Span.attributes`, which the encoded attribute buffer repeats.
const ATTRIBUTES_FIELD: u32 = 9;

/// What a trace propagates to its spans: 24 bytes and one allocation, because the root
/// cache keeps one per released trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The root's start time (8 bytes, little-endian), its name, its service's name, then the
    /// selected root attributes as encoded `Span.attributes` entries (key under the prefix),
    /// ready to append to a span.
    data: Box<[u8]>,
    /// Span links followed from this trace to the origin root.
    pub link_hops: u16,
    name_len: u16,
    service_len: u16,
}

/// Bytes of the start time at the head of [`Origin::data`].
const START: usize = 8;

/// What the caps of `propagate:` cut from an origin, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capped {
    /// String values cut to `max_value_bytes`.
    pub values_truncated: u64,
    /// Attributes left out: a non-string value over `max_value_bytes`, or past
    /// `max_set_bytes` for the trace.
    pub attributes_dropped: u64,
    /// Root or service names cut to `max_name_bytes`.
    pub names_truncated: u64,
}

impl Capped {
    pub fn add(&mut self, other: Capped) {
        self.values_truncated += other.values_truncated;
        self.attributes_dropped += other.attributes_dropped;
        self.names_truncated += other.names_truncated;
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Origin {
    /// An origin with `name` and `service` (cut to the settings' `max_name_bytes`) and the
    /// root attributes the settings select, each value cut to `max_value_bytes` and the set
    /// to `max_set_bytes`; what was cut is added to `capped`.
    pub fn from_root<'a>(
        name: &str,
        service: &str,
        root_attributes: impl Iterator<Item = Attribute<'a>>,
        root_start_ns: u64,
        settings: &PropagateSettings,
        capped: &mut Capped,
    ) -> Origin {
        let cut = |s: &str, capped: &mut Capped| {
            let t = truncate_str(s, settings.max_name_bytes.min(u16::MAX as usize));
            if t.len() < s.len() {
                capped.names_truncated += 1;
            }
            t.len()
        };
        let (name_len, service_len) = (cut(name, capped), cut(service, capped));
        let mut data = Vec::with_capacity(START + name_len + service_len + 64);
        data.extend_from_slice(&root_start_ns.to_le_bytes());
        data.extend_from_slice(&name.as_bytes()[..name_len]);
        data.extend_from_slice(&service.as_bytes()[..service_len]);
        let start = data.len();
        for a in root_attributes.filter(|a| settings.selects(a.key)) {
            let mut value = a.value;
            let truncated;
            if value.len() > settings.max_value_bytes {
                match any_value_str(value) {
                    Some(s) => {
                        let t = truncate_str(s, settings.max_value_bytes);
                        truncated = encode_string_value(t);
                        value = &truncated;
                        capped.values_truncated += 1;
                    }
                    None => {
                        capped.attributes_dropped += 1;
                        continue;
                    }
                }
            }
            let before = data.len();
            append_attribute(
                &mut data,
                &settings.prefix,
                a.key,
                &NewValue::Encoded(value),
            );
            if data.len() - start > settings.max_set_bytes {
                data.truncate(before);
                capped.attributes_dropped += 1;
            }
        }
        Origin {
            link_hops: 0,
            name_len: name_len as u16,
            service_len: service_len as u16,
            data: data.into_boxed_slice(),
        }
    }

    pub fn root_start_ns(&self) -> u64 {
        let mut b = [0u8; START];
        b.copy_from_slice(&self.data[..START]);
        u64::from_le_bytes(b)
    }

    pub fn root_name(&self) -> &str {
        std::str::from_utf8(&self.data[START..self.head_len() - self.service_len as usize])
            .unwrap_or("")
    }

    pub fn root_service(&self) -> &str {
        let end = self.head_len();
        std::str::from_utf8(&self.data[end - self.service_len as usize..end]).unwrap_or("")
    }

    /// Bytes before the attributes: start time and names.
    fn head_len(&self) -> usize {
        START + self.name_len as usize + self.service_len as usize
    }

    /// The propagated attributes as encoded `Span.attributes` entries.
    pub fn attribute_bytes(&self) -> &[u8] {
        &self.data[self.head_len()..]
    }

    /// The propagated attributes, key as written (prefix included) and encoded value.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        attributes(self.attribute_bytes(), ATTRIBUTES_FIELD)
    }

    /// Bytes this origin holds on the heap (its one allocation).
    pub fn heap_bytes(&self) -> usize {
        cujo_wire::alloc::allocation_size(self.data.len())
    }

    /// The origin of a trace whose own root is `own`, with `linked` (the origin of the trace
    /// its spans link to) when that was resolved. The linked origin gives the root identity
    /// and offsets; the trace's own root keeps its values for keys it has itself. The merged
    /// set is held to `max_set_bytes` like any other.
    pub fn merge(
        own: Option<Origin>,
        linked: Option<&Origin>,
        settings: &PropagateSettings,
    ) -> Option<Origin> {
        match (own, linked) {
            (own, None) => own,
            (None, Some(l)) => Some(Origin {
                link_hops: l.link_hops.saturating_add(1),
                ..l.clone()
            }),
            (Some(own), Some(l)) => {
                let mut data = Vec::with_capacity(l.data.len() + own.attribute_bytes().len());
                let head = l.head_len();
                data.extend_from_slice(&l.data[..head]);
                for a in l.attributes() {
                    if !own.attributes().any(|o| o.key == a.key) {
                        append_attribute(&mut data, "", a.key, &NewValue::Encoded(a.value));
                    }
                }
                data.extend_from_slice(own.attribute_bytes());
                if data.len() - head > settings.max_set_bytes {
                    // Keep whole entries up to the cap: the linked root's first.
                    let mut kept = head;
                    for a in attributes(&data[head..], ATTRIBUTES_FIELD) {
                        let mut one = Vec::new();
                        append_attribute(&mut one, "", a.key, &NewValue::Encoded(a.value));
                        if kept - head + one.len() > settings.max_set_bytes {
                            break;
                        }
                        kept += one.len();
                    }
                    data.truncate(kept);
                }
                Some(Origin {
                    link_hops: l.link_hops.saturating_add(1),
                    name_len: l.name_len,
                    service_len: l.service_len,
                    data: data.into_boxed_slice(),
                })
            }
        }
    }

    /// The most a span grows when this origin is written onto it (propagated attributes,
    /// root identity, per-span and root-summary attributes).
    pub fn growth_per_span(&self) -> usize {
        self.data.len() + MAX_DERIVED_ENCODED
    }
}

/// Encoded bytes of the derived attributes besides the root identity, at most: four integer
/// attributes with keys of up to 22 bytes, each `KeyValue` under its tags and lengths.
const MAX_DERIVED_ENCODED: usize = 4 * (2 + 2 + 22 + 2 + 11) + 2 * 6;

/// An encoded `AnyValue` holding the string `s`.
fn encode_string_value(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 6);
    cujo_wire::proto::put_len_prefix(&mut out, 1, s.len());
    out.extend_from_slice(s.as_bytes());
    out
}

/// Derived attributes written on every span.
pub const ROOT_NAME: &str = "cujo.root.name";
pub const ROOT_SERVICE: &str = "cujo.root.service.name";
pub const ROOT_OFFSET_MS: &str = "cujo.root.offset_ms";
pub const ASYNC_HOPS: &str = "cujo.async.hops";
/// Derived attributes written on the root span.
pub const TRACE_SPAN_COUNT: &str = "cujo.trace.span_count";
pub const TRACE_DURATION_MS: &str = "cujo.trace.duration_ms";

/// The attributes cujo derives; replaced, never duplicated, when a span passes twice.
const DERIVED: [&str; 6] = [
    ROOT_NAME,
    ROOT_SERVICE,
    ROOT_OFFSET_MS,
    ASYNC_HOPS,
    TRACE_SPAN_COUNT,
    TRACE_DURATION_MS,
];

/// What the ingest pass saw of a span's own attributes.
pub mod flags {
    /// The span has an attribute a propagated one would collide with.
    pub const COLLIDES: u8 = 1;
    /// The span carries an attribute named `cujo.*` (maybe derived by an earlier pass).
    pub const CUJO: u8 = 2;
}

/// Per-span facts for [`enrich`].
pub struct SpanContext {
    pub start_ns: u64,
    pub async_hops: u32,
    /// `Some((span_count, duration_ms))` for the trace's own root.
    pub root_summary: Option<(u64, i64)>,
}

fn millis_between(from_ns: u64, to_ns: u64) -> i64 {
    let d = to_ns as i128 - from_ns as i128;
    // 64-bit division when the difference fits (always, for real clocks): the 128-bit one
    // is a library call.
    match i64::try_from(d) {
        Ok(d) => d.div_euclid(1_000_000),
        Err(_) => d.div_euclid(1_000_000) as i64,
    }
}

pub(crate) fn duration_ms(start_ns: u64, end_ns: u64) -> i64 {
    millis_between(start_ns, end_ns).max(0)
}

/// The part of the enrichment every span of a trace shares, encoded once per trace: the
/// propagated attributes and the root's name and service.
/// Written into `out`, which is cleared first (a buffer kept between traces).
pub fn shared_block(origin: &Origin, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(origin.attribute_bytes());
    append_root_identity(origin, out);
}

fn append_root_identity(origin: &Origin, out: &mut Vec<u8>) {
    append_attribute(out, "", ROOT_NAME, &NewValue::Str(origin.root_name()));
    let service = origin.root_service();
    if !service.is_empty() {
        append_attribute(out, "", ROOT_SERVICE, &NewValue::Str(service));
    }
}

fn append_per_span(origin: &Origin, ctx: &SpanContext, out: &mut Vec<u8>) {
    append_int_attribute(
        out,
        ROOT_OFFSET_MS,
        millis_between(origin.root_start_ns(), ctx.start_ns),
    );
    append_int_attribute(out, ASYNC_HOPS, i64::from(ctx.async_hops));
    if let Some((count, duration_ms)) = ctx.root_summary {
        append_int_attribute(out, TRACE_SPAN_COUNT, count as i64);
        append_int_attribute(out, TRACE_DURATION_MS, duration_ms);
    }
}

/// Writes a span whose own attributes collide with nothing cujo writes: its bytes, the
/// trace's [`shared_block`], then the per-span attributes.
pub fn enrich_fast(
    span: &[u8],
    shared: &[u8],
    ctx: &SpanContext,
    origin: &Origin,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(span);
    out.extend_from_slice(shared);
    append_per_span(origin, ctx, out);
}

/// Writes `span` with the origin's attributes (never replacing the span's own attribute
/// unless `overwrite`) and the derived attributes appended, into `out`.
pub fn enrich(
    span: &[u8],
    origin: &Origin,
    ctx: &SpanContext,
    settings: &PropagateSettings,
    out: &mut Vec<u8>,
) {
    // The origin's attributes, keys and encoded entries, to find which of them the span has
    // itself: on the stack for the usual handful, else the general path.
    let mut entries: [(&[u8], &[u8]); OWN_KEYS] = [(&[], &[]); OWN_KEYS];
    let mut n = 0;
    for entry in attribute_entries(origin.attribute_bytes(), ATTRIBUTES_FIELD) {
        if n == OWN_KEYS {
            return enrich_general(span, origin, ctx, settings, out);
        }
        entries[n] = entry;
        n += 1;
    }
    let entries = &entries[..n];
    // One pass over the span's keys: which propagated ones it has (bit i: `entries[i]`), and
    // whether it carries a derived attribute (written by an earlier pass).
    let mut own = 0u32;
    let mut derived = false;
    for key in span_attribute_keys(span) {
        if key.starts_with(b"cujo.") && DERIVED.iter().any(|d| d.as_bytes() == key) {
            derived = true;
        }
        for (i, (k, _)) in entries.iter().enumerate() {
            if *k == key {
                own |= 1 << i;
            }
        }
    }
    if settings.overwrite || derived {
        return enrich_general(span, origin, ctx, settings, out);
    }
    out.extend_from_slice(span);
    // The entries are encoded as a span's attributes already.
    for (i, (_, entry)) in entries.iter().enumerate() {
        if own & (1 << i) == 0 {
            out.extend_from_slice(entry);
        }
    }
    append_root_identity(origin, out);
    append_per_span(origin, ctx, out);
}

/// How many propagated keys [`enrich`] matches against a span's own on the stack.
const OWN_KEYS: usize = 16;

/// [`enrich`] for any span: one whose derived attributes are replaced, or with `overwrite`,
/// or under an origin with many attributes.
fn enrich_general(
    span: &[u8],
    origin: &Origin,
    ctx: &SpanContext,
    settings: &PropagateSettings,
    out: &mut Vec<u8>,
) {
    // The span's own keys, read once (this path is for spans whose keys collide).
    let own: Vec<&str> = span_attributes(span).map(|a| a.key).collect();
    let own_has = |key: &str| own.contains(&key);
    if settings.overwrite || own.iter().any(|k| DERIVED.contains(k)) {
        copy_without_attributes(span, out, |key| {
            DERIVED.contains(&key)
                || (settings.overwrite && origin.attributes().any(|a| a.key == key))
        });
        for a in origin.attributes() {
            if settings.overwrite || !own_has(a.key) {
                append_attribute(out, "", a.key, &NewValue::Encoded(a.value));
            }
        }
    } else {
        out.extend_from_slice(span);
        for a in origin.attributes() {
            if !own_has(a.key) {
                append_attribute(out, "", a.key, &NewValue::Encoded(a.value));
            }
        }
    }
    append_root_identity(origin, out);
    append_per_span(origin, ctx, out);
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::Span;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    /// Keys a span may carry: propagated ones, a derived one, and others.
    const KEYS: [&str; 7] = [
        "cuj.name",
        "user.tier",
        "tenant.id",
        "cuj.step",
        "http.route",
        "url.path",
        ROOT_NAME,
    ];

    fn span(keys: &[usize]) -> Vec<u8> {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "op".into(),
            start_time_unix_nano: 5_000_000,
            attributes: keys
                .iter()
                .map(|&k| KeyValue {
                    key: KEYS[k % KEYS.len()].into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(format!("own-{k}"))),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// The one-pass path of `enrich` writes what the general path writes, whatever keys
        /// the span and the root share, with or without `overwrite` and a prefix.
        #[test]
        fn enrich_writes_what_the_general_path_writes(
            root_keys in prop::collection::vec(0usize..KEYS.len(), 0..6),
            own_keys in prop::collection::vec(0usize..KEYS.len(), 0..8),
            overwrite in any::<bool>(),
            prefixed in any::<bool>(),
        ) {
            let settings = PropagateSettings {
                attributes: vec!["cuj.*".into(), "user.tier".into(), "tenant.id".into()],
                prefix: if prefixed { "root.".into() } else { String::new() },
                overwrite,
                ..PropagateSettings::default()
            };
            let root = span(&root_keys);
            let origin = Origin::from_root(
                "GET /",
                "api",
                span_attributes(&root),
                1_000_000,
                &settings,
                &mut Capped::default(),
            );
            let ctx = SpanContext { start_ns: 5_000_000, async_hops: 1, root_summary: Some((3, 7)) };
            let child = span(&own_keys);
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            enrich(&child, &origin, &ctx, &settings, &mut fast);
            enrich_general(&child, &origin, &ctx, &settings, &mut general);
            prop_assert_eq!(fast, general);
        }
    }
}
