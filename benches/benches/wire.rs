//! Per-span cost of the two ways to add root attributes to a request (DESIGN.md, Performance
//! direction), on a realistic 200-span request from the load benchmark's workload:
//!
//! - `prost_decode_modify_encode`: decode `ExportTraceServiceRequest` into the generated
//!   types, push two string attributes onto every span, encode.
//! - `wire_scan_encode`: `cujo_wire::scan_request` + `cujo_wire::encode_request` (the floor:
//!   forwarding without modification).
//! - `wire_scan_append_encode`: the wire path with the modification: scan, copy each span's
//!   bytes into one arena followed by the two attributes pre-encoded as `Span.attributes`
//!   entries (protobuf lets a repeated field be appended to), encode from the slices.
//!
//! Throughput is per span: criterion's "elem/s" is spans per second.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cujo_bench::workload::{RequestPool, WorkloadConfig};
use cujo_wire::{ScopeGroup, SpanBatch, encode_request, scan_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;

const SPANS: usize = 200;
/// `Span.attributes` is field 9, length-delimited.
const SPAN_ATTRIBUTES_TAG: u8 = (9 << 3) | 2;

fn request_bytes() -> Bytes {
    let pool = RequestPool::generate(&WorkloadConfig {
        pool_spans: 5_000,
        ..WorkloadConfig::default()
    })
    .expect("workload");
    let req = pool.request_of(SPANS);
    let bytes = Bytes::from(req.encode_to_vec());
    eprintln!(
        "request: {SPANS} spans, {} bytes ({:.1} bytes/span)",
        bytes.len(),
        bytes.len() as f64 / SPANS as f64
    );
    bytes
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn propagated() -> [KeyValue; 2] {
    [
        string_attr("root.cuj.name", "checkout"),
        string_attr("root.user.tier", "enterprise"),
    ]
}

/// The two attributes as they appear inside an encoded `Span`: tag, length, `KeyValue`.
fn propagated_wire() -> Vec<u8> {
    let mut out = Vec::new();
    for kv in propagated() {
        out.push(SPAN_ATTRIBUTES_TAG);
        kv.encode_length_delimited(&mut out).expect("Vec grows");
    }
    out
}

fn prost_decode_modify_encode(bytes: &Bytes, out: &mut Vec<u8>) {
    let mut req = ExportTraceServiceRequest::decode(bytes.clone()).expect("valid");
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.attributes.extend(propagated());
            }
        }
    }
    out.clear();
    req.encode(out).expect("Vec grows");
}

fn wire_scan_encode(bytes: &Bytes, out: &mut Vec<u8>) {
    let scanned = scan_request(bytes).expect("valid");
    out.clear();
    encode_request(&scanned.batch, out);
}

fn wire_scan_append_encode(bytes: &Bytes, appended: &[u8], out: &mut Vec<u8>) {
    let scanned = scan_request(bytes).expect("valid");
    let batch = scanned.batch;
    let total: usize = batch
        .groups
        .iter()
        .map(|g| g.span_bytes() + g.spans.len() * appended.len())
        .sum();
    let mut arena = BytesMut::with_capacity(total);
    let mut modified = SpanBatch::default();
    for group in &batch.groups {
        let mut spans = Vec::with_capacity(group.spans.len());
        for span in &group.spans {
            arena.extend_from_slice(span);
            arena.extend_from_slice(appended);
            spans.push(arena.split_to(span.len() + appended.len()).freeze());
        }
        modified.groups.push(ScopeGroup {
            resource: group.resource.clone(),
            scope: group.scope.clone(),
            spans,
        });
    }
    out.clear();
    encode_request(&modified, out);
}

fn bench(c: &mut Criterion) {
    let bytes = request_bytes();
    let appended = propagated_wire();

    // Both modifying paths must produce the same request, attribute for attribute.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    prost_decode_modify_encode(&bytes, &mut a);
    wire_scan_append_encode(&bytes, &appended, &mut b);
    assert_eq!(
        ExportTraceServiceRequest::decode(&a[..]).unwrap(),
        ExportTraceServiceRequest::decode(&b[..]).unwrap()
    );

    let mut group = c.benchmark_group("wire_200_spans");
    group.throughput(Throughput::Elements(SPANS as u64));
    let mut out = Vec::with_capacity(bytes.len() * 2);
    group.bench_function("prost_decode_modify_encode", |bench| {
        bench.iter(|| prost_decode_modify_encode(black_box(&bytes), &mut out))
    });
    group.bench_function("wire_scan_encode", |bench| {
        bench.iter(|| wire_scan_encode(black_box(&bytes), &mut out))
    });
    group.bench_function("wire_scan_append_encode", |bench| {
        bench.iter(|| wire_scan_append_encode(black_box(&bytes), &appended, &mut out))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
