//! The assembler's behaviour, driven with an explicit clock: buffering, release policy, root
//! cache, span links and what is written on each span. Spans are built with the generated
//! OTLP types and read back the same way.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use cujo_assembler::{Assembler, AssemblerSettings, PropagateSettings, ReleaseReason};
use cujo_wire::{SpanBatch, encode_request, scan_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as AnyInner};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::Link};
use proptest::prelude::*;
use prost::Message;

const SERVER: i32 = 2;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(AnyInner::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn settings() -> AssemblerSettings {
    AssemblerSettings {
        decision_wait: Duration::from_millis(2000),
        trace_timeout: Duration::from_millis(30_000),
        propagate: PropagateSettings {
            attributes: vec!["cuj.*".into(), "user.tier".into(), "tenant.id".into()],
            ..PropagateSettings::default()
        },
        ..AssemblerSettings::default()
    }
}

#[derive(Clone)]
struct S {
    trace: u8,
    id: u8,
    parent: Option<u8>,
    kind: i32,
    name: &'static str,
    attrs: Vec<KeyValue>,
    links: Vec<(u8, u8)>,
    start_ms: u64,
    /// `Span.flags` (0x300: the parent is remote).
    flags: u32,
}

fn s(trace: u8, id: u8, parent: Option<u8>, name: &'static str) -> S {
    S {
        trace,
        id,
        parent,
        kind: 1,
        name,
        attrs: vec![],
        links: vec![],
        start_ms: 1_000 + u64::from(id),
        flags: 0,
    }
}

fn root(trace: u8, id: u8, tier: &str) -> S {
    S {
        kind: SERVER,
        attrs: vec![
            kv("cuj.name", "post_message"),
            kv("user.tier", tier),
            kv("http.route", "/v1/messages"),
        ],
        start_ms: 1_000,
        ..s(trace, id, None, "POST /v1/messages")
    }
}

fn to_span(x: &S) -> Span {
    Span {
        trace_id: vec![x.trace; 16],
        span_id: vec![x.id; 8],
        parent_span_id: x.parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: x.name.into(),
        kind: x.kind,
        start_time_unix_nano: x.start_ms * 1_000_000,
        end_time_unix_nano: (x.start_ms + 50) * 1_000_000,
        attributes: x.attrs.clone(),
        links: x
            .links
            .iter()
            .map(|(t, i)| Link {
                trace_id: vec![*t; 16],
                span_id: vec![*i; 8],
                ..Default::default()
            })
            .collect(),
        flags: x.flags,
        ..Default::default()
    }
}

/// A batch of spans, each service's spans under its own resource.
fn batch(spans: &[(&str, S)]) -> SpanBatch {
    let mut by_service: Vec<(String, Vec<Span>)> = Vec::new();
    for (svc, x) in spans {
        match by_service.iter_mut().find(|(s, _)| s == svc) {
            Some((_, v)) => v.push(to_span(x)),
            None => by_service.push((svc.to_string(), vec![to_span(x)])),
        }
    }
    let req = ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", &svc)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    };
    scan_request(&Bytes::from(req.encode_to_vec()))
        .expect("valid")
        .batch
}

/// Output spans as (service, span).
fn spans_of(out: &SpanBatch) -> Vec<(String, Span)> {
    let mut buf = Vec::new();
    encode_request(out, &mut buf);
    let req = ExportTraceServiceRequest::decode(buf.as_slice()).expect("output decodes");
    let mut v = Vec::new();
    for rs in req.resource_spans {
        let svc = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.clone())
            .and_then(|v| match v.value {
                Some(AnyInner::StringValue(s)) => Some(s),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for sp in ss.spans {
                v.push((svc.clone(), sp));
            }
        }
    }
    v
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let all: Vec<_> = span.attributes.iter().filter(|a| a.key == key).collect();
    assert!(all.len() <= 1, "key {key} appears {} times", all.len());
    all.first()
        .and_then(|a| a.value.clone())
        .and_then(|v| match v.value {
            Some(AnyInner::StringValue(s)) => Some(s),
            Some(AnyInner::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

fn by_name<'a>(spans: &'a [(String, Span)], name: &str) -> &'a Span {
    &spans
        .iter()
        .find(|(_, s)| s.name == name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .1
}

/// A sidecar's pod does not own the trace's root: its entry span (the parent is in another
/// process) arrives after its children, and the local part goes on at once, unenriched; a
/// later span of the trace passes straight through. A gateway (the default) holds it.
#[test]
fn a_span_with_a_remote_parent_releases_the_local_part_at_once_when_asked() {
    let entry = S {
        kind: SERVER,
        flags: 0x300,
        ..s(7, 2, Some(1), "GET /inventory")
    };
    let local = [
        ("inventory", s(7, 3, Some(2), "SELECT stock")),
        ("inventory", entry.clone()),
    ];
    let mut sidecar = Assembler::new(AssemblerSettings {
        release_on_remote_parent: true,
        ..settings()
    });
    let mut out = SpanBatch::default();
    sidecar.ingest(&batch(&local[..1]), 0, &mut out);
    assert!(out.is_empty(), "a child alone is held");
    sidecar.ingest(&batch(&local[1..]), 5, &mut out);
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 2, "released when the entry span arrived");
    assert!(spans.iter().all(|(_, sp)| attr(sp, "cuj.name").is_none()));
    assert_eq!(
        sidecar.stats().traces_released[ReleaseReason::RemoteParent as usize],
        1
    );
    let mut late = SpanBatch::default();
    sidecar.ingest(
        &batch(&[("inventory", s(7, 4, Some(2), "cache.get"))]),
        10,
        &mut late,
    );
    assert_eq!(spans_of(&late).len(), 1, "a later span passes through");
    assert_eq!(sidecar.stats().traces_buffered, 0);
    // A span without the flag's "known" bit, or with a local parent, changes nothing; and a
    // gateway holds the trace for its root.
    for (settings, flags) in [
        (
            AssemblerSettings {
                release_on_remote_parent: true,
                ..settings()
            },
            0x200,
        ),
        (settings(), 0x300),
    ] {
        let mut a = Assembler::new(settings);
        let mut out = SpanBatch::default();
        let entry = S {
            flags,
            ..entry.clone()
        };
        a.ingest(&batch(&[("inventory", entry)]), 0, &mut out);
        assert!(out.is_empty(), "flags {flags:#x}: held");
    }
}

#[test]
fn children_before_root_across_requests_are_enriched_after_decision_wait() {
    // `assembler.hold: trace`: every span waits with the root.
    let mut a = Assembler::new(AssemblerSettings {
        stream_after_root: false,
        ..settings()
    });
    let mut out = SpanBatch::default();
    a.ingest(
        &batch(&[("ledger", s(1, 3, Some(2), "append row"))]),
        0,
        &mut out,
    );
    a.ingest(
        &batch(&[("frontend", s(1, 2, Some(1), "ledger.Append"))]),
        10,
        &mut out,
    );
    a.ingest(&batch(&[("frontend", root(1, 1, "gold"))]), 20, &mut out);
    assert!(out.is_empty(), "held until decision_wait after the root");
    a.release_due(2019, &mut out);
    assert!(out.is_empty());
    assert_eq!(a.next_due_ms(), Some(2020));
    a.release_due(2020, &mut out);
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 3);
    for (svc, sp) in &spans {
        assert_eq!(
            attr(sp, "cuj.name").as_deref(),
            Some("post_message"),
            "{}",
            sp.name
        );
        assert_eq!(attr(sp, "user.tier").as_deref(), Some("gold"));
        assert_eq!(
            attr(sp, "http.route").is_some(),
            sp.name == "POST /v1/messages",
            "only selected keys"
        );
        assert_eq!(
            attr(sp, "cujo.root.name").as_deref(),
            Some("POST /v1/messages")
        );
        assert_eq!(
            attr(sp, "cujo.root.service.name").as_deref(),
            Some("frontend")
        );
        assert_eq!(attr(sp, "cujo.async.hops").as_deref(), Some("0"));
        assert_eq!(sp.name == "append row", svc == "ledger", "resource kept");
    }
    let row = by_name(&spans, "append row");
    assert_eq!(attr(row, "cujo.root.offset_ms").as_deref(), Some("3"));
    let r = by_name(&spans, "POST /v1/messages");
    assert_eq!(attr(r, "cujo.trace.span_count").as_deref(), Some("3"));
    assert_eq!(attr(r, "cujo.trace.duration_ms").as_deref(), Some("53"));
    assert_eq!(attr(row, "cujo.trace.span_count"), None, "only on the root");
    let st = a.stats();
    assert_eq!(st.traces_released[ReleaseReason::Root as usize], 1);
    assert_eq!(
        (st.spans_enriched, st.spans_buffered, st.traces_buffered),
        (3, 0, 0)
    );
}

#[test]
fn a_consumer_after_release_is_enriched_from_the_root_cache() {
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    let mut producer = s(1, 2, Some(1), "enqueue push");
    producer.kind = PRODUCER;
    a.ingest(
        &batch(&[("api", root(1, 1, "free")), ("api", producer)]),
        0,
        &mut out,
    );
    a.release_due(2000, &mut out);
    assert_eq!(spans_of(&out).len(), 2);
    let mut late = SpanBatch::default();
    let mut consumer = s(1, 3, Some(2), "send push");
    consumer.kind = CONSUMER;
    consumer.start_ms = 1_000 + 120_000;
    // Two minutes later: enriched on arrival, nothing held.
    a.ingest(&batch(&[("worker", consumer)]), 120_000, &mut late);
    let spans = spans_of(&late);
    assert_eq!(spans.len(), 1);
    let c = &spans[0].1;
    assert_eq!(attr(c, "user.tier").as_deref(), Some("free"));
    assert_eq!(attr(c, "cujo.async.hops").as_deref(), Some("1"));
    assert_eq!(attr(c, "cujo.root.offset_ms").as_deref(), Some("120000"));
    assert_eq!(a.held_spans(), 0);
    assert_eq!(a.stats().late_spans_enriched, 1);
}

/// What an observer is told: (trace, link, spans) per released trace; late span trace ids.
#[derive(Default)]
struct Told {
    released: Vec<([u8; 16], Option<[u8; 16]>, usize)>,
    late: Vec<([u8; 16], String)>,
}

struct Recorder(std::sync::Arc<std::sync::Mutex<Told>>);

impl cujo_assembler::TraceObserver for Recorder {
    fn released(&mut self, trace: &cujo_assembler::ReleasedTrace<'_>) {
        if let Ok(mut t) = self.0.lock() {
            t.released
                .push((trace.trace_id, trace.link, trace.spans.len()));
        }
    }

    fn late_span(&mut self, trace_id: &[u8; 16], span: &[u8], resource: &[u8]) {
        let service = cujo_wire::span::service_name(resource).unwrap_or("?");
        let name = String::from_utf8_lossy(cujo_wire::span::read_span(span).name);
        if let Ok(mut t) = self.0.lock() {
            t.late.push((*trace_id, format!("{service}/{name}")));
        }
    }
}

#[test]
fn the_observer_hears_of_links_and_late_spans() {
    let told = std::sync::Arc::new(std::sync::Mutex::new(Told::default()));
    let mut a = Assembler::new(settings());
    a.set_observer(Box::new(Recorder(told.clone())));
    let mut out = SpanBatch::default();
    a.ingest(&batch(&[("api", root(1, 1, "gold"))]), 0, &mut out);
    a.release_due(2000, &mut out);
    // A consumer in trace 1 after its release, and a trace linking to it.
    let mut late = s(1, 3, Some(1), "send push");
    late.kind = CONSUMER;
    let mut linked = s(2, 20, None, "process message");
    linked.kind = CONSUMER;
    linked.links = vec![(1, 1)];
    a.ingest(
        &batch(&[("worker", late), ("worker", linked)]),
        3000,
        &mut out,
    );
    a.release_due(6000, &mut out);
    let told = told.lock().expect("lock");
    assert_eq!(
        told.released,
        vec![([1; 16], None, 1), ([2; 16], Some([1; 16]), 1)]
    );
    assert_eq!(told.late, vec![([1; 16], "worker/send push".to_string())]);
}

/// Classifies arriving spans: bit 0 for a `db.*` name, bit 1 when `http.code` is "500";
/// records each released trace's (root name, bits).
type Classified = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<u64>)>>>;

struct Classifier(Classified);

impl cujo_assembler::TraceObserver for Classifier {
    fn classify_keys(&self) -> Option<Vec<String>> {
        Some(vec!["http.code".into()])
    }

    fn classify(&self, span: &cujo_assembler::ArrivingSpan<'_>) -> u64 {
        let db = span.fields.name.starts_with(b"db") as u64;
        let code = span.values[0].map(|v| cujo_wire::span::any_value_str(v) == Some("500"));
        let failed = u64::from(code == Some(true));
        db | (failed << 1)
    }

    fn released(&mut self, trace: &cujo_assembler::ReleasedTrace<'_>) {
        let root = trace.root.map(|i| {
            String::from_utf8_lossy(cujo_wire::span::read_span(trace.spans[i].0).name).into()
        });
        if let Ok(mut t) = self.0.lock() {
            t.push((root.unwrap_or_default(), trace.span_bits));
        }
    }
}

#[test]
fn arriving_spans_are_classified_for_the_observer_in_the_same_read() {
    let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut a = Assembler::new(settings());
    a.set_observer(Box::new(Classifier(told.clone())));
    let mut out = SpanBatch::default();
    // Trace 1: children first (one a db call failing with 500), root last, in two batches.
    let mut failing = s(1, 3, Some(1), "db query");
    failing.attrs = vec![kv("http.code", "500")];
    a.ingest(
        &batch(&[("api", s(1, 2, Some(1), "render")), ("db", failing)]),
        0,
        &mut out,
    );
    a.ingest(&batch(&[("api", root(1, 1, "gold"))]), 10, &mut out);
    // Trace 2: a root and one plain child.
    a.ingest(
        &batch(&[
            ("api", root(2, 1, "free")),
            ("api", s(2, 2, Some(1), "render")),
        ]),
        10,
        &mut out,
    );
    a.release_due(5_000, &mut out);
    let mut told = told.lock().expect("lock").clone();
    told.sort();
    assert_eq!(
        told,
        vec![
            ("POST /v1/messages".to_string(), Some(0)),
            ("POST /v1/messages".to_string(), Some(0b11)),
        ]
    );
}

#[test]
fn linked_traces_inherit_the_origin_transitively() {
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    a.ingest(&batch(&[("api", root(1, 1, "gold"))]), 0, &mut out);
    a.release_due(2000, &mut out);
    // Trace 2: a consumer starting a new trace, linked to trace 1's root.
    let mut c2 = s(2, 20, None, "process message");
    c2.kind = CONSUMER;
    c2.links = vec![(1, 1)];
    let child2 = s(2, 21, Some(20), "db write");
    a.ingest(
        &batch(&[("worker", child2), ("worker", c2)]),
        3000,
        &mut out,
    );
    a.release_due(5000, &mut out);
    // Trace 3 links to trace 2: two hops from the origin.
    let mut c3 = s(3, 30, None, "send email");
    c3.kind = CONSUMER;
    c3.links = vec![(2, 20)];
    a.ingest(&batch(&[("mailer", c3)]), 6000, &mut out);
    a.release_due(8000, &mut out);
    let spans = spans_of(&out);
    for (name, hops) in [
        ("process message", "1"),
        ("db write", "1"),
        ("send email", "2"),
    ] {
        let sp = by_name(&spans, name);
        assert_eq!(
            attr(sp, "cuj.name").as_deref(),
            Some("post_message"),
            "{name}"
        );
        assert_eq!(attr(sp, "user.tier").as_deref(), Some("gold"), "{name}");
        assert_eq!(
            attr(sp, "cujo.root.name").as_deref(),
            Some("POST /v1/messages"),
            "{name}"
        );
        assert_eq!(
            attr(sp, "cujo.root.service.name").as_deref(),
            Some("api"),
            "{name}"
        );
        assert_eq!(attr(sp, "cujo.async.hops").as_deref(), Some(hops), "{name}");
    }
    assert_eq!(a.stats().linked_traces_joined, 2);
}

#[test]
fn a_linked_trace_waits_for_its_origin_still_buffered() {
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    // Origin trace 1: a child arrives, the root much later.
    a.ingest(
        &batch(&[("api", s(1, 2, Some(1), "validate"))]),
        0,
        &mut out,
    );
    let mut c2 = s(2, 20, None, "process message");
    c2.kind = CONSUMER;
    c2.links = vec![(1, 2)];
    a.ingest(&batch(&[("worker", c2)]), 100, &mut out);
    a.release_due(2100, &mut out);
    assert!(
        out.is_empty(),
        "trace 2 waits for trace 1, which has no root yet"
    );
    a.ingest(&batch(&[("api", root(1, 1, "platinum"))]), 5000, &mut out);
    a.release_due(7000, &mut out);
    a.release_due(7010, &mut out);
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 3);
    let pm = by_name(&spans, "process message");
    assert_eq!(attr(pm, "user.tier").as_deref(), Some("platinum"));
    assert_eq!(attr(pm, "cujo.async.hops").as_deref(), Some("1"));
}

#[test]
fn a_trace_without_root_is_released_unenriched_after_the_timeout() {
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    a.ingest(&batch(&[("api", s(9, 2, Some(1), "orphan"))]), 0, &mut out);
    a.release_due(29_999, &mut out);
    assert!(out.is_empty());
    a.release_due(30_000, &mut out);
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 1);
    assert_eq!(attr(&spans[0].1, "cujo.root.name"), None);
    assert_eq!(
        a.stats().traces_released[ReleaseReason::TimeoutWithoutRoot as usize],
        1
    );
}

#[test]
fn the_other_spans_go_when_the_root_arrives_and_the_root_waits_for_stragglers() {
    // `assembler.hold: root`, the default.
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    a.ingest(
        &batch(&[("ledger", s(1, 3, Some(2), "append row"))]),
        0,
        &mut out,
    );
    assert!(out.is_empty(), "held until the root arrives");
    a.ingest(
        &batch(&[
            ("frontend", s(1, 2, Some(1), "ledger.Append")),
            ("frontend", root(1, 1, "gold")),
        ]),
        10,
        &mut out,
    );
    let first = spans_of(&out);
    let mut names: Vec<&str> = first.iter().map(|(_, sp)| sp.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["append row", "ledger.Append"], "all but the root");
    for (svc, sp) in &first {
        assert_eq!(attr(sp, "user.tier").as_deref(), Some("gold"));
        assert_eq!(
            attr(sp, "cujo.root.name").as_deref(),
            Some("POST /v1/messages")
        );
        assert_eq!(attr(sp, "cujo.async.hops").as_deref(), Some("0"));
        assert_eq!(attr(sp, "cujo.trace.span_count"), None, "only on the root");
        assert_eq!(sp.name == "append row", svc == "ledger", "resource kept");
    }
    assert_eq!(
        attr(by_name(&first, "append row"), "cujo.root.offset_ms").as_deref(),
        Some("3")
    );
    assert_eq!(a.held_spans(), 1, "the root waits");
    // A straggler before decision_wait goes at once, enriched, and is counted on the root.
    let mut straggler = SpanBatch::default();
    a.ingest(
        &batch(&[("ledger", s(1, 4, Some(2), "flush"))]),
        500,
        &mut straggler,
    );
    let straggler = spans_of(&straggler);
    assert_eq!(straggler.len(), 1);
    assert_eq!(attr(&straggler[0].1, "user.tier").as_deref(), Some("gold"));
    assert_eq!(a.held_spans(), 1);
    let mut last = SpanBatch::default();
    a.release_due(2009, &mut last);
    assert!(last.is_empty(), "the root waits decision_wait");
    a.release_due(2010, &mut last);
    let last = spans_of(&last);
    assert_eq!(last.len(), 1);
    let r = &last[0].1;
    assert_eq!(r.name, "POST /v1/messages");
    assert_eq!(attr(r, "user.tier").as_deref(), Some("gold"));
    assert_eq!(attr(r, "cujo.trace.span_count").as_deref(), Some("4"));
    let st = a.stats();
    assert_eq!(st.traces_released[ReleaseReason::Root as usize], 1);
    assert_eq!(st.spans_streamed, 3);
    assert_eq!(st.spans_released, 4);
    assert_eq!(st.spans_enriched, 4);
    assert_eq!(a.held_spans(), 0);
}

#[test]
fn traces_with_a_link_are_held_whole_until_decision_wait() {
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    // Trace 2 continues trace 9 through a span link: release merges 9's origin in.
    let linked = S {
        links: vec![(9, 1)],
        ..root(2, 1, "free")
    };
    a.ingest(
        &batch(&[("api", s(2, 2, Some(1), "child")), ("api", linked)]),
        0,
        &mut out,
    );
    assert!(out.is_empty(), "nothing streamed");
    assert_eq!(a.held_spans(), 2);
    a.release_due(2000, &mut out);
    assert_eq!(spans_of(&out).len(), 2);
    assert_eq!(a.stats().spans_streamed, 0);
}

#[test]
fn spans_of_a_trace_with_a_consumer_go_once_their_path_to_the_root_is_here() {
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    let consumer = S {
        kind: CONSUMER,
        ..s(1, 3, Some(2), "consume")
    };
    let producer = S {
        kind: PRODUCER,
        ..s(1, 2, Some(1), "publish")
    };
    // The root is here, the producer is not: the consumer and the span under it cannot
    // know their hops yet, so they wait.
    a.ingest(
        &batch(&[
            ("worker", consumer),
            ("worker", s(1, 4, Some(3), "store")),
            ("frontend", root(1, 1, "gold")),
        ]),
        0,
        &mut out,
    );
    assert!(out.is_empty(), "nothing streamed");
    assert_eq!(a.held_spans(), 3);
    // The producer closes the path: it and the two waiting spans go, the root stays.
    a.ingest(&batch(&[("frontend", producer)]), 10, &mut out);
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 3);
    let hops = |spans: &[(String, Span)], name| attr(by_name(spans, name), "cujo.async.hops");
    assert_eq!(hops(&spans, "publish").as_deref(), Some("0"));
    assert_eq!(hops(&spans, "consume").as_deref(), Some("1"));
    assert_eq!(hops(&spans, "store").as_deref(), Some("1"));
    assert_eq!(a.held_spans(), 1);
    // A straggler under the consumer, which went out already, goes at once.
    let mut more = SpanBatch::default();
    a.ingest(
        &batch(&[("worker", s(1, 5, Some(3), "ack"))]),
        20,
        &mut more,
    );
    let spans = spans_of(&more);
    assert_eq!(hops(&spans, "ack").as_deref(), Some("1"));
    // One whose parent never comes waits for the release, and counts the path it has.
    let mut rest = SpanBatch::default();
    a.ingest(
        &batch(&[("worker", s(1, 6, Some(77), "lost"))]),
        30,
        &mut rest,
    );
    assert!(rest.is_empty());
    a.release_due(2000, &mut rest);
    let spans = spans_of(&rest);
    assert_eq!(spans.len(), 2, "the root and the span without a path");
    assert_eq!(hops(&spans, "lost").as_deref(), Some("0"));
    assert_eq!(
        attr(
            by_name(&spans, "POST /v1/messages"),
            "cujo.trace.span_count"
        )
        .as_deref(),
        Some("6")
    );
    assert_eq!(a.stats().spans_streamed, 4);
    assert_eq!(a.held_spans(), 0);
}

#[test]
fn memory_pressure_releases_the_oldest_traces_early_and_loses_nothing() {
    let mut a = Assembler::new(AssemblerSettings {
        max_buffered_spans: 10,
        ..settings()
    });
    let mut out = SpanBatch::default();
    for t in 1..=6u8 {
        a.ingest(
            &batch(&[
                ("api", s(t, 2, Some(1), "a")),
                ("api", s(t, 3, Some(1), "b")),
            ]),
            u64::from(t),
            &mut out,
        );
    }
    assert!(a.held_spans() <= 10);
    let early = spans_of(&out);
    assert!(!early.is_empty());
    assert!(
        early.iter().all(|(_, s)| s.trace_id[0] <= 2),
        "oldest first"
    );
    a.release_all(100, &mut out);
    assert_eq!(spans_of(&out).len(), 12);
    assert!(a.stats().traces_released[ReleaseReason::MemoryPressure as usize] >= 1);
}

#[test]
fn memory_pressure_releases_traces_with_their_root_first_enriched() {
    // Whole traces held (`assembler.hold: trace`), so rooted traces hold their children.
    let mut a = Assembler::new(AssemblerSettings {
        max_buffered_spans: 10,
        stream_after_root: false,
        ..settings()
    });
    let mut out = SpanBatch::default();
    // Traces 1-3 wait for their roots (the oldest); traces 4-6 have theirs and wait only for
    // stragglers, their roots arriving in the order 6, 4, 5.
    for t in 1..=3u8 {
        a.ingest(
            &batch(&[("api", s(t, 2, Some(1), "a"))]),
            u64::from(t),
            &mut out,
        );
    }
    for (at, t) in [(4u64, 6u8), (5, 4), (6, 5)] {
        a.ingest(
            &batch(&[("api", s(t, 2, Some(1), "a")), ("web", root(t, 1, "gold"))]),
            at,
            &mut out,
        );
    }
    assert_eq!(a.held_spans(), 9);
    assert!(spans_of(&out).is_empty(), "nothing over the limit yet");
    // Two more spans pass the limit (10, with a tenth to spare): the rooted traces go, in
    // the order their roots came, before any trace still waiting for its root.
    a.ingest(
        &batch(&[
            ("api", s(7, 2, Some(1), "a")),
            ("api", s(7, 3, Some(1), "b")),
        ]),
        7,
        &mut out,
    );
    let early = spans_of(&out);
    let traces: Vec<u8> = early.iter().map(|(_, s)| s.trace_id[0]).collect();
    assert!(!traces.is_empty());
    assert!(
        traces.iter().all(|t| (4..=6).contains(t)),
        "only rooted traces went: {traces:?}"
    );
    assert_eq!(
        traces[0], 6,
        "the first root to arrive goes first: {traces:?}"
    );
    for (_, span) in &early {
        assert_eq!(attr(span, "user.tier").as_deref(), Some("gold"), "enriched");
    }
    let stats = a.stats();
    assert!(stats.traces_released[ReleaseReason::RootEarly as usize] >= 1);
    assert_eq!(
        stats.traces_released[ReleaseReason::MemoryPressure as usize],
        0
    );
    // A straggler of a trace that went early is still enriched, from the root cache.
    let mut late = SpanBatch::default();
    a.ingest(&batch(&[("api", s(6, 9, Some(2), "late"))]), 8, &mut late);
    let late = spans_of(&late);
    assert_eq!(late.len(), 1);
    assert_eq!(attr(&late[0].1, "user.tier").as_deref(), Some("gold"));
    // With no rooted trace left, the oldest rootless ones go.
    for t in 10..=20u8 {
        a.ingest(
            &batch(&[("api", s(t, 2, Some(1), "a"))]),
            u64::from(t),
            &mut out,
        );
    }
    assert!(a.stats().traces_released[ReleaseReason::MemoryPressure as usize] >= 1);
    a.release_all(100, &mut out);
    assert_eq!(spans_of(&out).len(), 3 + 6 + 2 + 11, "nothing lost");
}

#[test]
fn own_attributes_are_kept_unless_overwrite_and_prefix_is_applied() {
    let mut own = s(1, 2, Some(1), "child");
    own.attrs = vec![kv("user.tier", "child-own")];
    for (overwrite, prefix, want) in [
        (false, "", "child-own"),
        (true, "", "gold"),
        (false, "root.", "child-own"),
    ] {
        let mut a = Assembler::new(AssemblerSettings {
            propagate: PropagateSettings {
                overwrite,
                prefix: prefix.into(),
                ..settings().propagate
            },
            ..settings()
        });
        let mut out = SpanBatch::default();
        a.ingest(
            &batch(&[("api", own.clone()), ("api", root(1, 1, "gold"))]),
            0,
            &mut out,
        );
        a.release_all(1, &mut out);
        let spans = spans_of(&out);
        let child = by_name(&spans, "child");
        assert_eq!(
            attr(child, "user.tier").as_deref(),
            Some(want),
            "overwrite={overwrite} prefix={prefix:?}"
        );
        if !prefix.is_empty() {
            assert_eq!(attr(child, "root.user.tier").as_deref(), Some("gold"));
            assert_eq!(
                attr(child, "root.cuj.name").as_deref(),
                Some("post_message")
            );
        }
    }
}

#[test]
fn a_trace_over_max_spans_is_released_in_enriched_parts() {
    let mut a = Assembler::new(AssemblerSettings {
        max_spans_per_trace: 4,
        ..settings()
    });
    let mut out = SpanBatch::default();
    let mut spans = vec![("api", root(1, 1, "gold"))];
    for i in 2..=9u8 {
        spans.push(("api", s(1, i, Some(1), "part")));
    }
    a.ingest(&batch(&spans), 0, &mut out);
    assert!(a.held_spans() < 4);
    a.release_all(1, &mut out);
    let got = spans_of(&out);
    assert_eq!(got.len(), 9);
    assert!(
        got.iter()
            .all(|(_, s)| attr(s, "user.tier").as_deref() == Some("gold"))
    );
}

#[test]
fn spans_forwarded_twice_do_not_carry_derived_attributes_twice() {
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    a.ingest(
        &batch(&[("api", root(1, 1, "gold")), ("api", s(1, 2, Some(1), "c"))]),
        0,
        &mut out,
    );
    a.release_all(1, &mut out);
    let mut b = Assembler::new(settings());
    let mut again = SpanBatch::default();
    b.ingest(&out, 0, &mut again);
    b.release_all(1, &mut again);
    for (_, sp) in spans_of(&again) {
        attr(&sp, "cujo.root.name"); // asserts the key appears at most once
        attr(&sp, "cuj.name");
    }
}

/// A random trace: `n` spans, span i > 0 has a parent among 0..i; some are consumers.
fn arb_trace() -> impl Strategy<Value = Vec<(u8, bool)>> {
    prop::collection::vec((any::<u8>(), any::<bool>()), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn every_span_is_released_once_with_its_own_roots_values(
        traces in prop::collection::vec(arb_trace(), 1..12),
        order_seed in any::<u64>(),
        batch_size in 1usize..8,
    ) {
        // Build spans; trace t has root id 1 and tier "tier-t".
        let mut all: Vec<(u64, S)> = Vec::new();
        for (t, shape) in traces.iter().enumerate() {
            let t = t as u8 + 1;
            let tier: &'static str = Box::leak(format!("tier-{t}").into_boxed_str());
            all.push((0, root(t, 1, tier)));
            for (i, (p, consumer)) in shape.iter().enumerate().skip(1) {
                let id = i as u8 + 1;
                let parent = (*p as usize % i) as u8 + 1;
                let mut x = s(t, id, Some(parent), "child");
                if *consumer { x.kind = CONSUMER; }
                all.push((0, x));
            }
        }
        // Shuffle arrival order deterministically and assign arrival times.
        let mut seed = order_seed | 1;
        for i in (1..all.len()).rev() {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            all.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let mut a = Assembler::new(AssemblerSettings {
            decision_wait: Duration::from_millis(100),
            ..settings()
        });
        let mut out = SpanBatch::default();
        let mut now = 0;
        for chunk in all.chunks(batch_size) {
            now += 7;
            let b: Vec<(&str, S)> = chunk.iter().map(|(_, x)| ("svc", x.clone())).collect();
            a.ingest(&batch(&b), now, &mut out);
            a.release_due(now, &mut out);
        }
        a.release_due(now + 100, &mut out);
        a.release_all(now + 200, &mut out);
        let got = spans_of(&out);
        prop_assert_eq!(got.len(), all.len());
        let mut seen = HashMap::new();
        for (_, sp) in &got {
            *seen.entry((sp.trace_id.clone(), sp.span_id.clone())).or_insert(0) += 1;
            let want = format!("tier-{}", sp.trace_id[0]);
            prop_assert_eq!(attr(sp, "user.tier"), Some(want));
            prop_assert_eq!(attr(sp, "cuj.name"), Some("post_message".to_string()));
        }
        prop_assert!(seen.values().all(|&n| n == 1), "exactly once");
        prop_assert_eq!(a.held_spans(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    /// Holding only the root writes what holding whole traces writes: every span's async hops
    /// and each root's summary, for random span trees with consumers in any arrival order
    /// (consumers no later than their root: see `assembler.hold` for the one case that
    /// differs), taken in random batches.
    #[test]
    fn holding_the_root_writes_what_holding_the_trace_writes(
        traces in prop::collection::vec(arb_trace(), 1..10),
        order_seed in any::<u64>(),
        batch_size in 1usize..8,
    ) {
        let mut all: Vec<S> = Vec::new();
        for (t, shape) in traces.iter().enumerate() {
            let t = t as u8 + 1;
            all.push(root(t, 1, "gold"));
            for (i, (p, consumer)) in shape.iter().enumerate().skip(1) {
                let mut x = s(t, i as u8 + 1, Some((*p as usize % i) as u8 + 1), "child");
                if *consumer { x.kind = CONSUMER; }
                all.push(x);
            }
        }
        let mut seed = order_seed | 1;
        let mut next = || { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; seed };
        for i in (1..all.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            all.swap(i, j);
        }
        // Each root goes after its trace's consumers.
        for t in 1..=traces.len() as u8 {
            let last_consumer = all.iter().rposition(|x| x.trace == t && x.kind == CONSUMER);
            let at = all.iter().position(|x| x.trace == t && x.parent.is_none());
            if let (Some(c), Some(r)) = (last_consumer, at) && r < c {
                let x = all.remove(r);
                all.insert(c, x);
            }
        }
        let run = |stream: bool| {
            let mut a = Assembler::new(AssemblerSettings {
                decision_wait: Duration::from_millis(100),
                stream_after_root: stream,
                ..settings()
            });
            let mut out = SpanBatch::default();
            let mut now = 0;
            for chunk in all.chunks(batch_size) {
                now += 7;
                let b: Vec<(&str, S)> = chunk.iter().map(|x| ("svc", x.clone())).collect();
                a.ingest(&batch(&b), now, &mut out);
                a.release_due(now, &mut out);
            }
            a.release_all(now + 200, &mut out);
            let mut got: Vec<_> = spans_of(&out)
                .into_iter()
                .map(|(_, sp)| {
                    let facts = (
                        attr(&sp, "cujo.async.hops"),
                        attr(&sp, "cujo.trace.span_count"),
                    );
                    ((sp.trace_id, sp.span_id), facts)
                })
                .collect();
            got.sort();
            got
        };
        let (root_only, whole) = (run(true), run(false));
        prop_assert_eq!(root_only.len(), all.len());
        prop_assert_eq!(root_only, whole);
    }
}

#[test]
fn late_spans_of_a_trace_released_without_root_pass_straight_through() {
    let mut a = Assembler::new(settings());
    let mut out = SpanBatch::default();
    a.ingest(&batch(&[("api", s(9, 2, Some(1), "orphan"))]), 0, &mut out);
    a.release_due(30_000, &mut out);
    let mut late = SpanBatch::default();
    a.ingest(
        &batch(&[("api", s(9, 3, Some(1), "late orphan"))]),
        31_000,
        &mut late,
    );
    assert_eq!(spans_of(&late).len(), 1, "not held again");
    assert_eq!(a.held_spans(), 0);
    assert_eq!(a.stats().late_spans_without_root, 1);
}

/// Two shards sharing a directory, fed as the pipeline feeds them: each batch split by trace id.
struct Sharded {
    directory: std::sync::Arc<cujo_assembler::Directory>,
    shards: Vec<Assembler>,
}

impl Sharded {
    fn new(n: usize) -> Self {
        let s = settings();
        let directory = std::sync::Arc::new(cujo_assembler::Directory::new(
            n,
            s.root_cache_ttl.as_millis() as u64,
            s.root_cache_max_traces,
            s.root_cache_max_bytes,
        ));
        let shards = (0..n)
            .map(|i| Assembler::new_shard(settings(), directory.clone(), i))
            .collect();
        Self { directory, shards }
    }

    fn ingest(&mut self, b: SpanBatch, now: u64, out: &mut SpanBatch) {
        let d = self.directory.clone();
        for (i, part) in b
            .split_by_trace(self.shards.len(), |t| d.shard_of(t))
            .into_iter()
            .enumerate()
        {
            self.shards[i].ingest(&part, now, out);
        }
    }

    fn release_due(&mut self, now: u64, out: &mut SpanBatch) {
        for s in &mut self.shards {
            s.release_due(now, out);
        }
    }
}

#[test]
fn links_resolve_across_shards_released_or_still_buffered() {
    let mut a = Sharded::new(2);
    // Traces 1 and 2 land in different shards (their ids differ in the low bit).
    assert_ne!(
        a.directory.shard_of(&[1; 16]),
        a.directory.shard_of(&[2; 16])
    );
    let mut out = SpanBatch::default();
    // Trace 1's child arrives; its root comes later. Trace 2 links to it meanwhile.
    a.ingest(batch(&[("api", s(1, 2, Some(1), "validate"))]), 0, &mut out);
    let mut c2 = s(2, 20, None, "process message");
    c2.kind = CONSUMER;
    c2.links = vec![(1, 2)];
    a.ingest(batch(&[("worker", c2)]), 100, &mut out);
    a.release_due(2100, &mut out);
    assert!(
        out.is_empty(),
        "trace 2 waits for trace 1 in the other shard"
    );
    a.ingest(batch(&[("api", root(1, 1, "platinum"))]), 5000, &mut out);
    a.release_due(7000, &mut out);
    a.release_due(7010, &mut out);
    // Trace 3 arrives after both were released, linked to trace 2: resolved from the cache
    // of trace 2's shard.
    let mut c3 = s(3, 30, None, "send email");
    c3.kind = CONSUMER;
    c3.links = vec![(2, 20)];
    a.ingest(batch(&[("mailer", c3)]), 8000, &mut out);
    a.release_due(10_000, &mut out);
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 4);
    for (name, hops) in [
        ("validate", "0"),
        ("process message", "1"),
        ("send email", "2"),
    ] {
        let sp = by_name(&spans, name);
        assert_eq!(attr(sp, "user.tier").as_deref(), Some("platinum"), "{name}");
        assert_eq!(attr(sp, "cujo.async.hops").as_deref(), Some(hops), "{name}");
    }
    let joined: u64 = a
        .shards
        .iter()
        .map(|s| s.stats().linked_traces_joined)
        .sum();
    assert_eq!(joined, 2);
}
