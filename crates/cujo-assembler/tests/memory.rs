//! The assembler's memory accounting checked against the allocator itself: for random
//! request shapes, what [`Assembler::memory_bytes`] (with the root cache's bytes) counts never
//! falls below the bytes the assembler really holds, and stays within its limit.
//!
//! This test binary counts every allocation made on the test's thread (a thread-local
//! counter behind the global allocator), so only what the assembler allocates between two
//! readings is measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use cujo_assembler::{Assembler, AssemblerSettings, Cursor, PropagateSettings};
use cujo_wire::{SpanBatch, scan_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as AnyInner};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;

struct Counting;

thread_local! {
    /// Bytes allocated and not yet freed by this thread (frees of blocks allocated
    /// elsewhere make it go down too; the test allocates and frees on one thread).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call forwards to the system allocator with the same arguments; the counter
// is a thread-local integer, touched without allocating.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + layout.size() as isize));
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LIVE.try_with(|l| l.set(l.get() + new_size as isize - layout.size() as isize));
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(AnyInner::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// One span of a generated request.
#[derive(Debug, Clone)]
struct Shape {
    trace: u16,
    span: u16,
    root: bool,
    /// Bytes of a propagated attribute (on roots) or of a plain one.
    value_len: usize,
    /// Which of a few resources it comes under; large numbers make each one unique.
    resource: u16,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        0u16..40,
        1u16..2000,
        prop::bool::weighted(0.15),
        prop_oneof![0usize..64, 64usize..2048],
        prop_oneof![0u16..3, 0u16..500],
    )
        .prop_map(|(trace, span, root, value_len, resource)| Shape {
            trace,
            span,
            root,
            value_len,
            resource,
        })
}

fn request(shapes: &[Shape], salt: u16) -> SpanBatch {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    for s in shapes {
        let mut trace_id = vec![0u8; 16];
        trace_id[..2].copy_from_slice(&s.trace.to_le_bytes());
        trace_id[15] = 1;
        let mut span_id = vec![0u8; 8];
        span_id[..2].copy_from_slice(&s.span.to_le_bytes());
        span_id[2..4].copy_from_slice(&salt.to_le_bytes());
        span_id[7] = 1;
        let attrs = if s.root {
            vec![
                kv("cuj.name", "x".repeat(s.value_len)),
                kv("user.tier", "gold".into()),
            ]
        } else {
            vec![kv("http.route", "r".repeat(s.value_len))]
        };
        let span = Span {
            trace_id,
            span_id,
            parent_span_id: if s.root { Vec::new() } else { vec![9; 8] },
            name: format!("span {}", s.span),
            kind: 2,
            start_time_unix_nano: 1_000_000,
            end_time_unix_nano: 2_000_000,
            attributes: attrs,
            ..Default::default()
        };
        let service = format!("svc-{}", s.resource);
        match resource_spans.iter_mut().find(|r| {
            r.resource
                .as_ref()
                .is_some_and(|res| res.attributes[0].value == kv("", service.clone()).value)
        }) {
            Some(r) => r.scope_spans[0].spans.push(span),
            None => resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }
    let req = ExportTraceServiceRequest { resource_spans };
    scan_request(&Bytes::from(req.encode_to_vec()))
        .expect("valid")
        .batch
}

fn settings(max_memory: usize) -> AssemblerSettings {
    AssemblerSettings {
        decision_wait: Duration::from_millis(100),
        trace_timeout: Duration::from_millis(1_000),
        max_spans_per_trace: 300,
        max_groups_per_trace: 8,
        max_memory_bytes: max_memory,
        root_cache_max_bytes: 64 << 10,
        propagate: PropagateSettings {
            attributes: vec!["cuj.*".into(), "user.tier".into()],
            max_value_bytes: 200,
            max_set_bytes: 300,
            ..PropagateSettings::default()
        },
        ..AssemblerSettings::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn counted_memory_never_falls_below_what_is_held(
        requests in prop::collection::vec(prop::collection::vec(shape(), 1..120), 1..12),
        max_memory in prop_oneof![Just(usize::MAX), 64usize << 10..1 << 20],
        step in 1usize..200,
    ) {
        let batches: Vec<SpanBatch> = requests
            .iter()
            .enumerate()
            .map(|(i, r)| request(r, i as u16))
            .collect();
        let before = live();
        let mut a = Assembler::new(settings(max_memory));
        for (i, batch) in batches.iter().enumerate() {
            let now = i as u64 * 40;
            let mut cursor = Cursor::default();
            loop {
                let mut out = SpanBatch::default();
                let done = a.ingest_step(batch, &mut cursor, step, now, &mut out);
                if i % 3 == 2 {
                    a.release_due(now, &mut out);
                }
                drop(out);
                let held = (live() - before).max(0) as usize;
                let (counted, cache) = a.memory_bytes_shared();
                // The assembler itself (its struct, settings, directory) is a fixed few KiB.
                prop_assert!(
                    held <= counted + cache + 16 * 1024,
                    "holds {held} B, counts {counted} + {cache} B (request {i})"
                );
                if max_memory != usize::MAX {
                    prop_assert!(
                        counted <= max_memory + batch_bytes(batch),
                        "counts {counted} B over the limit {max_memory}"
                    );
                }
                if done {
                    break;
                }
            }
        }
        let mut out = SpanBatch::default();
        a.release_all(1_000_000, &mut out);
        drop(out);
        let (counted, _) = a.memory_bytes_shared();
        prop_assert!(a.held_spans() == 0);
        // With nothing held, only tables sized for what was held remain.
        prop_assert!(counted <= 256 * 1024, "{counted} B counted with nothing held");
    }
}

/// Encoded bytes of a request's spans: one step may hold that much past the limit.
fn batch_bytes(batch: &SpanBatch) -> usize {
    batch.groups.iter().map(|g| g.span_bytes() * 2).sum()
}
