//! Scan → write round trips checked against the generated OTLP types (prost).

use bytes::Bytes;
use cujo_wire::{SpanBatch, WireError, encode_request, encoded_request_len, scan_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as AnyInner,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Link};
use proptest::prelude::*;
use prost::Message;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(AnyInner::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn span(trace: u8, id: u8, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: vec![],
        name: name.into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        attributes: vec![kv("k", name)],
        ..Default::default()
    }
}

fn resource_spans(service: &str, scopes: Vec<(&str, Vec<Span>)>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: scopes
            .into_iter()
            .map(|(scope, spans)| ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            })
            .collect(),
        schema_url: "https://example.com/resource".into(),
    }
}

fn encode(req: &ExportTraceServiceRequest) -> Bytes {
    Bytes::from(req.encode_to_vec())
}

fn write(batch: &SpanBatch) -> ExportTraceServiceRequest {
    let mut out = Vec::new();
    encode_request(batch, &mut out);
    assert_eq!(out.len(), encoded_request_len(batch), "length prediction");
    ExportTraceServiceRequest::decode(out.as_slice()).expect("written request decodes")
}

/// Every (service.name, scope name, span) triple, in order.
fn flatten(req: &ExportTraceServiceRequest) -> Vec<(String, String, Span)> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(AnyInner::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope = ss
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for s in &ss.spans {
                out.push((service.clone(), scope.clone(), s.clone()));
            }
        }
    }
    out
}

#[test]
fn round_trip_keeps_resources_scopes_and_spans() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                "frontend",
                vec![
                    ("http", vec![span(1, 1, "a"), span(1, 2, "b")]),
                    ("db", vec![span(1, 3, "c")]),
                ],
            ),
            resource_spans("worker", vec![("queue", vec![span(2, 4, "d")])]),
        ],
    };
    let scanned = scan_request(&encode(&req)).expect("valid");
    assert_eq!(scanned.rejected.count, 0);
    assert_eq!(scanned.batch.span_count(), 4);
    let out = write(&scanned.batch);
    assert_eq!(out, req, "byte-for-byte equivalent request");
}

#[test]
fn spans_with_bad_ids_are_rejected_one_by_one() {
    let mut bad_trace = span(3, 1, "short-trace");
    bad_trace.trace_id.truncate(15);
    let mut bad_span = span(3, 2, "long-span");
    bad_span.span_id.push(9);
    let mut zero = span(0, 3, "zero-trace");
    zero.trace_id = vec![0; 16];
    let mut bad_parent = span(3, 4, "bad-parent");
    bad_parent.parent_span_id = vec![1; 3];
    let mut bad_link = span(3, 5, "bad-link");
    bad_link.links.push(Link {
        trace_id: vec![1; 4],
        span_id: vec![1; 8],
        ..Default::default()
    });
    let good = span(3, 6, "good");
    let req = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            "svc",
            vec![(
                "s",
                vec![
                    bad_trace,
                    bad_span,
                    zero,
                    bad_parent,
                    bad_link,
                    good.clone(),
                ],
            )],
        )],
    };
    let scanned = scan_request(&encode(&req)).expect("valid protobuf");
    assert_eq!(scanned.rejected.count, 5);
    let reason = scanned.rejected.first_reason.expect("reason");
    assert!(
        reason.contains("spans[0]") && reason.contains("trace_id has 15 bytes"),
        "{reason}"
    );
    let out = flatten(&write(&scanned.batch));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].2, good);
}

#[test]
fn garbage_and_invalid_utf8_are_errors() {
    assert!(scan_request(&Bytes::from_static(b"\xff\xff\xff\xff")).is_err());
    let mut s = span(1, 1, "x");
    s.name = "ok".into();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans("svc", vec![("s", vec![s])])],
    };
    let mut bytes = req.encode_to_vec();
    // Corrupt the span name "ok" into invalid UTF-8.
    let at = bytes
        .windows(2)
        .position(|w| w == b"ok")
        .expect("name present");
    bytes[at] = 0xff;
    let err = scan_request(&Bytes::from(bytes)).expect_err("invalid utf-8");
    assert!(
        matches!(
            err,
            WireError::InvalidUtf8 {
                message: "Span",
                field: 5
            }
        ),
        "{err}"
    );
}

#[test]
fn split_front_keeps_each_span_under_its_resource() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                "a",
                vec![("s1", (0..5).map(|i| span(1, i + 1, "a")).collect())],
            ),
            resource_spans(
                "b",
                vec![("s2", (0..5).map(|i| span(2, i + 1, "b")).collect())],
            ),
        ],
    };
    let mut batch = scan_request(&encode(&req)).expect("valid").batch;
    let front = batch.split_front(7);
    assert_eq!(front.span_count(), 7);
    assert_eq!(batch.span_count(), 3);
    let mut all = flatten(&write(&front));
    all.extend(flatten(&write(&batch)));
    assert_eq!(all, flatten(&req));
}

#[test]
fn split_by_trace_sends_each_trace_to_one_shard_under_its_resource() {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                "a",
                vec![("s1", (0..6).map(|i| span(1 + i % 3, i + 1, "a")).collect())],
            ),
            resource_spans(
                "b",
                vec![("s2", (0..4).map(|i| span(2 + i % 2, i + 1, "b")).collect())],
            ),
        ],
    };
    let batch = scan_request(&encode(&req)).expect("valid").batch;
    let shard_of = |t: &[u8; 16]| usize::from(t[0]) % 2;
    let parts = batch.split_by_trace(2, shard_of);
    assert_eq!(parts.len(), 2);
    let mut all = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        for group in &part.groups {
            for sp in &group.spans {
                assert_eq!(shard_of(&cujo_wire::span::span_trace_id(sp)), i);
            }
        }
        all.extend(flatten(&write(part)));
    }
    all.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    let mut want = flatten(&req);
    want.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(
        all, want,
        "every span once, under its own resource and scope"
    );
}

fn arb_span() -> impl Strategy<Value = (Span, bool)> {
    (
        any::<u8>(),
        1u8..=255,
        prop::bool::weighted(0.15),
        "[a-z]{0,12}",
    )
        .prop_map(|(t, id, bad, name)| {
            let mut s = span(t | 1, id, &name);
            if bad {
                s.span_id.truncate(7);
            }
            (s, !bad)
        })
}

proptest! {
    #[test]
    fn random_requests_round_trip(
        shape in prop::collection::vec(
            prop::collection::vec(prop::collection::vec(arb_span(), 0..6), 0..4), 0..4),
        merge_with_copy in any::<bool>(),
    ) {
        let mut expected = Vec::new();
        let mut rejected = 0u64;
        let req = ExportTraceServiceRequest {
            resource_spans: shape.iter().enumerate().map(|(r, scopes)| {
                let svc = format!("svc{r}");
                ResourceSpans {
                    resource: Some(Resource { attributes: vec![kv("service.name", &svc)], ..Default::default() }),
                    scope_spans: scopes.iter().enumerate().map(|(s, spans)| {
                        let scope = format!("scope{s}");
                        for (span, ok) in spans {
                            if *ok { expected.push((svc.clone(), scope.clone(), span.clone())); } else { rejected += 1; }
                        }
                        ScopeSpans {
                            scope: Some(InstrumentationScope { name: scope, ..Default::default() }),
                            spans: spans.iter().map(|(s, _)| s.clone()).collect(),
                            schema_url: String::new(),
                        }
                    }).collect(),
                    schema_url: String::new(),
                }
            }).collect(),
        };
        let scanned = scan_request(&encode(&req)).expect("valid");
        prop_assert_eq!(scanned.rejected.count, rejected);
        let mut batch = scanned.batch;
        if merge_with_copy {
            // Appending a second copy and splitting must keep both halves intact.
            let mut copy = batch.clone();
            batch.append(&mut copy);
            let n = batch.span_count() / 2;
            let front = batch.split_front(n);
            let mut got = flatten(&write(&front));
            got.extend(flatten(&write(&batch)));
            let mut twice = expected.clone();
            twice.extend(expected.iter().cloned());
            prop_assert_eq!(got, twice);
        } else {
            prop_assert_eq!(flatten(&write(&batch)), expected);
        }
    }
}

#[test]
fn span_fields_and_appended_attributes_decode_with_prost() {
    use cujo_wire::span::{
        NewValue, append_attribute, copy_without_attributes, read_span, span_attributes,
    };
    let mut s = span(7, 3, "consume");
    s.parent_span_id = vec![9; 8];
    s.kind = 5;
    s.links.push(Link {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    });
    s.attributes.push(kv("user.tier", "own"));
    let bytes = s.encode_to_vec();
    let f = read_span(&bytes);
    assert_eq!(f.trace_id, [7; 16]);
    assert_eq!(f.parent_span_id, Some([9; 8]));
    assert_eq!(
        (f.name, f.kind, f.start_time_unix_nano, f.end_time_unix_nano),
        (&b"consume"[..], 5, 1, 2)
    );
    assert_eq!(f.links, vec![([1; 16], [2; 8])]);
    let keys: Vec<_> = span_attributes(&bytes).map(|a| a.key).collect();
    assert_eq!(keys, vec!["k", "user.tier"]);

    let tier = kv("user.tier", "gold")
        .value
        .expect("value")
        .encode_to_vec();
    let mut out = Vec::new();
    copy_without_attributes(&bytes, &mut out, |k| k == "user.tier");
    append_attribute(&mut out, "", "user.tier", &NewValue::Encoded(&tier));
    append_attribute(
        &mut out,
        "root.",
        "cuj.name",
        &NewValue::Str("post_message"),
    );
    append_attribute(&mut out, "", "cujo.async.hops", &NewValue::Int(2));
    let decoded = Span::decode(out.as_slice()).expect("decodes");
    let got: Vec<(String, Option<AnyInner>)> = decoded
        .attributes
        .iter()
        .map(|a| (a.key.clone(), a.value.clone().and_then(|v| v.value)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("k".into(), Some(AnyInner::StringValue("consume".into()))),
            (
                "user.tier".into(),
                Some(AnyInner::StringValue("gold".into()))
            ),
            (
                "root.cuj.name".into(),
                Some(AnyInner::StringValue("post_message".into()))
            ),
            ("cujo.async.hops".into(), Some(AnyInner::IntValue(2))),
        ]
    );
    assert_eq!(decoded.links.len(), 1);
    assert_eq!(decoded.name, "consume");
}

/// A request with three groups: resource a with scopes s1 and s2, resource b with s1.
fn three_groups() -> SpanBatch {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans(
                "a",
                vec![
                    ("s1", vec![span(1, 1, "a1")]),
                    ("s2", vec![span(1, 2, "a2")]),
                ],
            ),
            resource_spans("b", vec![("s1", vec![span(2, 1, "b1")])]),
        ],
    };
    scan_request(&encode(&req)).expect("valid").batch
}

#[test]
fn compact_merges_groups_of_one_resource_and_scope() {
    let scanned = three_groups();
    // Interleave: a/s1, b/s1, a/s2, a/s1 again (as traces released together would).
    let g = &scanned.groups;
    let mut batch = SpanBatch {
        groups: vec![g[0].clone(), g[2].clone(), g[1].clone(), g[0].clone()],
    };
    batch.compact();
    assert_eq!(batch.groups.len(), 3);
    let out = write(&batch);
    assert_eq!(
        out.resource_spans.len(),
        2,
        "one ResourceSpans per resource"
    );
    let names: Vec<_> = flatten(&out)
        .into_iter()
        .map(|(svc, scope, s)| (svc, scope, s.name))
        .collect();
    assert_eq!(names.len(), 4);
    assert_eq!(
        names
            .iter()
            .filter(|(svc, scope, _)| svc == "a" && scope == "s1")
            .count(),
        2
    );
}

#[test]
fn compact_merges_many_groups_as_it_merges_few() {
    let scanned = three_groups();
    let g = &scanned.groups;
    // Past the groups compact looks through one by one: 40 groups, 3 distinct.
    let mut batch = SpanBatch {
        groups: (0..40).map(|i| g[i % 3].clone()).collect(),
    };
    batch.compact();
    assert_eq!(batch.groups.len(), 3);
    assert_eq!(batch.span_count(), 40);
    let out = write(&batch);
    assert_eq!(
        out.resource_spans.len(),
        2,
        "one ResourceSpans per resource"
    );
    let per_group: Vec<usize> = batch.groups.iter().map(|g| g.spans.len()).collect();
    assert_eq!(per_group.iter().sum::<usize>(), 40);
    assert!(
        per_group.iter().all(|n| (13..=14).contains(n)),
        "{per_group:?}"
    );
}
