//! Writing a [`SpanBatch`] as an encoded `ExportTraceServiceRequest`.
//!
//! Adjacent groups that share a resource (the same `Arc`) are written under one
//! `ResourceSpans`; adjacent groups that also share the scope bytes under one `ScopeSpans`.
//! Groups that are not adjacent are written as separate entries, which protobuf and every OTLP
//! receiver accept; nothing is hashed or compared byte by byte on the way out.

use std::sync::Arc;

use crate::batch::{ScopeGroup, SpanBatch};
use crate::proto::{len_field_size, put_len_prefix};

const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const SCOPE_SPANS_SPANS: u32 = 2;

fn same_resource(a: &ScopeGroup, b: &ScopeGroup) -> bool {
    Arc::ptr_eq(&a.resource, &b.resource)
}

fn same_scope(a: &ScopeGroup, b: &ScopeGroup) -> bool {
    same_resource(a, b) && a.scope.as_ptr() == b.scope.as_ptr() && a.scope.len() == b.scope.len()
}

fn has_spans(run: &&[ScopeGroup]) -> bool {
    run.iter().any(|g| !g.spans.is_empty())
}

/// Runs of adjacent groups sharing a resource, skipping runs without spans.
fn resource_runs(groups: &[ScopeGroup]) -> impl Iterator<Item = &[ScopeGroup]> {
    groups.chunk_by(same_resource).filter(has_spans)
}

fn scope_runs(run: &[ScopeGroup]) -> impl Iterator<Item = &[ScopeGroup]> {
    run.chunk_by(same_scope).filter(has_spans)
}

fn scope_payload_len(run: &[ScopeGroup]) -> usize {
    let scope = run[0].scope.len();
    let spans: usize = run
        .iter()
        .flat_map(|g| g.spans.iter())
        .map(|s| len_field_size(SCOPE_SPANS_SPANS, s.len()))
        .sum();
    scope + spans
}

fn resource_payload_len(run: &[ScopeGroup]) -> usize {
    let header = run[0].resource.bytes.len();
    let scopes: usize = scope_runs(run)
        .map(|s| len_field_size(RESOURCE_SPANS_SCOPE_SPANS, scope_payload_len(s)))
        .sum();
    header + scopes
}

/// Exact size of the request [`encode_request`] writes for `batch`.
pub fn encoded_request_len(batch: &SpanBatch) -> usize {
    resource_runs(&batch.groups)
        .map(|run| len_field_size(REQUEST_RESOURCE_SPANS, resource_payload_len(run)))
        .sum()
}

/// Appends `batch`, encoded as an `ExportTraceServiceRequest`, to `out`.
pub fn encode_request(batch: &SpanBatch, out: &mut Vec<u8>) {
    out.reserve(encoded_request_len(batch));
    for run in resource_runs(&batch.groups) {
        put_len_prefix(out, REQUEST_RESOURCE_SPANS, resource_payload_len(run));
        out.extend_from_slice(&run[0].resource.bytes);
        for scope_run in scope_runs(run) {
            put_len_prefix(
                out,
                RESOURCE_SPANS_SCOPE_SPANS,
                scope_payload_len(scope_run),
            );
            out.extend_from_slice(&scope_run[0].scope);
            for span in scope_run.iter().flat_map(|g| g.spans.iter()) {
                put_len_prefix(out, SCOPE_SPANS_SPANS, span.len());
                out.extend_from_slice(span);
            }
        }
    }
}
