//! The origin of a trace — the root span whose request caused it, possibly in an earlier
//! trace reached through span links — and writing what it propagates onto a span.

use bytes::Bytes;
use cujo_wire::span::{NewValue, append_attribute, copy_without_attributes, span_attributes};

use crate::settings::PropagateSettings;

/// What a trace propagates to its spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Selected root attributes: key and encoded `AnyValue`.
    pub attributes: Vec<(String, Bytes)>,
    pub root_name: String,
    pub root_service: String,
    pub root_start_ns: u64,
    /// Span links followed from this trace to the origin root.
    pub link_hops: u32,
}

impl Origin {
    /// The origin of a trace whose own root is `root`, with `linked` (the origin of the trace
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
                let mut attributes = l.attributes.clone();
                for (k, v) in own.attributes {
                    match attributes.iter_mut().find(|(lk, _)| *lk == k) {
                        Some(slot) => slot.1 = v,
                        None => attributes.push((k, v)),
                    }
                }
                Some(Origin {
                    attributes,
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

/// The part of the enrichment every span of a trace shares, encoded once per trace: the
/// propagated attributes and the root's name and service.
pub fn shared_block(origin: &Origin, settings: &PropagateSettings) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    for (k, v) in &origin.attributes {
        append_attribute(&mut out, &settings.prefix, k, &NewValue::Encoded(v));
    }
    append_attribute(&mut out, "", ROOT_NAME, &NewValue::Str(&origin.root_name));
    if !origin.root_service.is_empty() {
        append_attribute(
            &mut out,
            "",
            ROOT_SERVICE,
            &NewValue::Str(&origin.root_service),
        );
    }
    out
}

/// What the ingest pass saw of a span's own attributes.
pub mod flags {
    /// The span has an attribute a propagated one would collide with.
    pub const COLLIDES: u8 = 1;
    /// The span carries an attribute named `cujo.*` (maybe derived by an earlier pass).
    pub const CUJO: u8 = 2;
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

/// Writes `span` with the origin's attributes (under `settings.prefix`, never replacing the
/// span's own attribute unless `overwrite`) and the derived attributes appended, into `out`.
pub fn enrich(
    span: &[u8],
    origin: &Origin,
    ctx: &SpanContext,
    settings: &PropagateSettings,
    out: &mut Vec<u8>,
) {
    let prefix = settings.prefix.as_str();
    let written = |k: &str, key: &str| {
        key.len() == prefix.len() + k.len() && key.starts_with(prefix) && key.ends_with(k)
    };
    // One pass over the span's own attributes: which propagated keys it already has (a bit
    // per origin attribute; origins with more than 64 keys are checked key by key), and
    // whether it carries derived attributes from an earlier pass through cujo.
    let mut own: u64 = 0;
    let mut has_derived = false;
    for a in span_attributes(span) {
        if a.key.starts_with("cujo.") && DERIVED.contains(&a.key) {
            has_derived = true;
        }
        for (i, (k, _)) in origin.attributes.iter().enumerate().take(64) {
            if written(k, a.key) {
                own |= 1 << i;
            }
        }
    }
    let owns = |i: usize, k: &str| {
        if i < 64 {
            own & (1 << i) != 0
        } else {
            span_attributes(span).any(|a| written(k, a.key))
        }
    };
    let replace = has_derived || (settings.overwrite && own != 0);
    if replace {
        copy_without_attributes(span, out, |key| {
            DERIVED.contains(&key)
                || (settings.overwrite && origin.attributes.iter().any(|(k, _)| written(k, key)))
        });
    } else {
        out.extend_from_slice(span);
    }
    for (i, (k, v)) in origin.attributes.iter().enumerate() {
        // The span keeps its own value unless `overwrite`.
        if settings.overwrite || !owns(i, k) {
            append_attribute(out, prefix, k, &NewValue::Encoded(v));
        }
    }
    append_attribute(out, "", ROOT_NAME, &NewValue::Str(&origin.root_name));
    if !origin.root_service.is_empty() {
        append_attribute(out, "", ROOT_SERVICE, &NewValue::Str(&origin.root_service));
    }
    append_per_span(origin, ctx, out);
}

/// The attributes cujo derives; replaced, never duplicated, when a span passes twice.
const DERIVED: [&str; 6] = [
    ROOT_NAME,
    ROOT_SERVICE,
    ROOT_OFFSET_MS,
    ASYNC_HOPS,
    TRACE_SPAN_COUNT,
    TRACE_DURATION_MS,
];

pub(crate) fn duration_ms(start_ns: u64, end_ns: u64) -> i64 {
    millis_between(start_ns, end_ns).max(0)
}
