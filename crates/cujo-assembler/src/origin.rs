//! The origin of a trace — the root span whose request caused it, possibly in an earlier
//! trace reached through span links — and writing what it propagates onto a span.
//!
//! An origin is kept compact because the root cache holds one per released trace: the
//! propagated attributes are one buffer of encoded `attributes` entries, keys already under
//! the configured prefix, ready to be appended to a span as they are.

use cujo_wire::span::{
    Attribute, NewValue, append_attribute, attributes, copy_without_attributes, span_attributes,
};

use crate::settings::PropagateSettings;

/// Field number of `Span.attributes`, which the encoded attribute buffer repeats.
const ATTRIBUTES_FIELD: u32 = 9;

/// What a trace propagates to its spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Selected root attributes as encoded `Span.attributes` entries (key under the prefix).
    pub attributes: Box<[u8]>,
    pub root_name: Box<str>,
    pub root_service: Box<str>,
    pub root_start_ns: u64,
    /// Span links followed from this trace to the origin root.
    pub link_hops: u32,
}

impl Origin {
    /// The propagated attributes, key as written (prefix included) and encoded value.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        attributes(&self.attributes, ATTRIBUTES_FIELD)
    }

    /// Encodes the selected root attributes (`key`, encoded `AnyValue`) under `prefix`.
    pub fn encode_attributes<'a>(
        selected: impl Iterator<Item = Attribute<'a>>,
        prefix: &str,
    ) -> Box<[u8]> {
        let mut out = Vec::new();
        for a in selected {
            append_attribute(&mut out, prefix, a.key, &NewValue::Encoded(a.value));
        }
        out.into_boxed_slice()
    }

    /// The origin of a trace whose own root is `own`, with `linked` (the origin of the trace
    /// its spans link to) when that was resolved. The linked origin gives the root identity
    /// and offsets; the trace's own root keeps its values for keys it has itself.
    pub fn merge(own: Option<Origin>, linked: Option<&Origin>) -> Option<Origin> {
        match (own, linked) {
            (own, None) => own,
            (None, Some(l)) => Some(Origin {
                link_hops: l.link_hops + 1,
                ..l.clone()
            }),
            (Some(own), Some(l)) => {
                let mut merged = Vec::with_capacity(own.attributes.len() + l.attributes.len());
                for a in l.attributes() {
                    if !own.attributes().any(|o| o.key == a.key) {
                        append_attribute(&mut merged, "", a.key, &NewValue::Encoded(a.value));
                    }
                }
                merged.extend_from_slice(&own.attributes);
                Some(Origin {
                    attributes: merged.into_boxed_slice(),
                    link_hops: l.link_hops + 1,
                    ..l.clone()
                })
            }
        }
    }
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
    (to_ns as i128 - from_ns as i128).div_euclid(1_000_000) as i64
}

pub(crate) fn duration_ms(start_ns: u64, end_ns: u64) -> i64 {
    millis_between(start_ns, end_ns).max(0)
}

/// The part of the enrichment every span of a trace shares, encoded once per trace: the
/// propagated attributes and the root's name and service.
pub fn shared_block(origin: &Origin) -> Vec<u8> {
    let mut out = Vec::with_capacity(origin.attributes.len() + 96);
    out.extend_from_slice(&origin.attributes);
    append_root_identity(origin, &mut out);
    out
}

fn append_root_identity(origin: &Origin, out: &mut Vec<u8>) {
    append_attribute(out, "", ROOT_NAME, &NewValue::Str(&origin.root_name));
    if !origin.root_service.is_empty() {
        append_attribute(out, "", ROOT_SERVICE, &NewValue::Str(&origin.root_service));
    }
}

fn append_per_span(origin: &Origin, ctx: &SpanContext, out: &mut Vec<u8>) {
    append_attribute(
        out,
        "",
        ROOT_OFFSET_MS,
        &NewValue::Int(millis_between(origin.root_start_ns, ctx.start_ns)),
    );
    append_attribute(
        out,
        "",
        ASYNC_HOPS,
        &NewValue::Int(i64::from(ctx.async_hops)),
    );
    if let Some((count, duration_ms)) = ctx.root_summary {
        append_attribute(out, "", TRACE_SPAN_COUNT, &NewValue::Int(count as i64));
        append_attribute(out, "", TRACE_DURATION_MS, &NewValue::Int(duration_ms));
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
