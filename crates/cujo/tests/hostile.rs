//! Hostile input against the real binary: requests a client can craft on purpose to make
//! cujo's state grow (a huge propagated value on a root with thousands of children, a
//! resource per span, traces whose roots never come, unbounded dimension values). Each must
//! leave cujo serving, with its resident set within its memory budget plus a fixed overhead
//! (read from /proc), the cap that applied counted on `/metrics`, and every span accounted
//! for: received = forwarded + dropped + in flight.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyInner;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use support::*;

const MIB: u64 = 1 << 20;

/// The budget every case runs with (`admission.max_in_flight`).
const BUDGET: u64 = 64 * MIB;

/// What cujo's resident set may hold besides its budget and what it held idle at start
/// (code and runtime: ~10 MiB for a release build, ~20 MiB for the debug build the tests
/// run): thread stacks, what the allocator keeps of freed memory, bookkeeping counted
/// approximately. The README's figure for a release build (budget + 64 MiB) is measured
/// by `cujo-hostile` (BENCHMARKS.md).
const OVERHEAD: u64 = 48 * MIB;

fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(AnyInner::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn trace_id(case: u8, n: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[0] = case;
    id[8..].copy_from_slice(&(n + 1).to_be_bytes());
    id.to_vec()
}

fn span_id(n: u64) -> Vec<u8> {
    (n + 1).to_be_bytes().to_vec()
}

fn span(trace: &[u8], id: u64, parent: Option<u64>, name: &str, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: span_id(id),
        parent_span_id: parent.map(span_id).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000 + id,
        end_time_unix_nano: 1_700_000_000_050_000_000 + id,
        attributes: attrs,
        ..Default::default()
    }
}

/// One resource (`service.name` plus `extra`) and scope holding `spans`.
fn resource_spans(service: &str, extra: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    let mut attributes = vec![kv("service.name", service)];
    attributes.extend(extra);
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "hostile".into(),
                ..Default::default()
            }),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn spans_in(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

/// cujo's peak resident set so far (the kernel's high-water mark), in bytes.
fn peak_rss(cujo: &Cujo) -> u64 {
    proc_status_kib(cujo.pid(), "VmHWM:") * 1024
}

fn assert_within_budget(cujo: &Cujo, idle: u64, case: &str) {
    let peak = peak_rss(cujo);
    assert!(
        peak <= idle + BUDGET + OVERHEAD,
        "{case}: peak RSS {} MiB over {} MiB idle + the {} MiB budget + {} MiB overhead",
        peak / MIB,
        idle / MIB,
        BUDGET / MIB,
        OVERHEAD / MIB
    );
}

/// Waits until nothing is in flight, then checks received = forwarded + dropped and that
/// nothing was dropped; returns the spans received.
async fn assert_all_forwarded(cujo: &Cujo) -> f64 {
    wait_for("nothing in flight", || async {
        (cujo.metric("cujo_in_flight_spans").await == 0.0).then_some(())
    })
    .await;
    let (accepted, _, dropped) = assert_accounting(cujo).await;
    assert_eq!(dropped, 0.0, "nothing dropped");
    accepted
}

/// The config every case shares: the budget, the receivers' largest request at their
/// share (an eighth of it with the assembler on), propagation of the usual root
/// attributes, the downstream. `extra` is appended.
fn config(downstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\", max_recv_msg_size: 8MiB }}\n    \
         http: {{ endpoint: \"127.0.0.1:0\", max_request_body_size: 8MiB }}\n\
         admission: {{ max_in_flight: {}MiB, retry_after: 1s }}\n\
         propagate: {{ attributes: [\"cuj.*\", \"user.tier\", \"tenant.id\"] }}\n\
         {extra}\n{}\n  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
        BUDGET / MIB,
        exporter_yaml(downstream, "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_propagated_value_is_cut_before_it_is_written_on_every_child() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start_yaml(&config(downstream.addr, "assembler: { trace_timeout: 5s }")).await;
    let idle = cujo.rss_bytes();
    // Each request: a root with two 3 MiB propagated values and 3,000 children. Written on
    // every child, one request would ask for 18 GB.
    let huge = "x".repeat(3 << 20);
    let (requests, children) = (6u64, 3_000u64);
    let mut client = RetryingClient::connect(cujo.grpc).await;
    for r in 0..requests {
        let trace = trace_id(1, r);
        let mut spans = vec![span(
            &trace,
            0,
            None,
            "POST /checkout",
            vec![kv("cuj.name", huge.clone()), kv("tenant.id", huge.clone())],
        )];
        spans.extend((1..=children).map(|i| span(&trace, i, Some(0), "SELECT", vec![])));
        let req = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("shop", vec![], spans)],
        };
        client.send(&req).await.expect("accepted");
    }
    let total = (requests * (children + 1)) as usize;
    downstream.wait_for_spans(total).await;
    assert_eq!(assert_all_forwarded(&cujo).await, total as f64);
    let spans = downstream.spans();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.span.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), requests as usize);
    for root in roots {
        assert_eq!(
            root.attr("cuj.name").map(|v| v.len()),
            Some(huge.len()),
            "the root's own attributes are forwarded as sent"
        );
    }
    for child in spans.iter().filter(|s| !s.span.parent_span_id.is_empty()) {
        for key in ["cuj.name", "tenant.id"] {
            let value = child.attr(key).unwrap_or_default();
            assert!(
                !value.is_empty() && value.len() <= 256 && huge.starts_with(&value),
                "{key} on a child is the root's value cut to propagate.max_value_bytes (256): {} bytes",
                value.len()
            );
        }
    }
    let cut = cujo
        .metric("cujo_assembler_capped_total{cap=\"value_truncated\"}")
        .await;
    assert!(cut >= requests as f64, "each cut value is counted: {cut}");
    assert_within_budget(&cujo, idle, "huge propagated values");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_per_span_splits_the_trace_at_its_group_cap() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start_yaml(&config(
        downstream.addr,
        "assembler: { trace_timeout: 2s, max_groups_per_trace: 64 }",
    ))
    .await;
    let idle = cujo.rss_bytes();
    // Requests of one rootless trace each, every span under a resource of its own with
    // unique attributes: nothing is shared between spans.
    let (requests, per_request) = (40u64, 2_000u64);
    let mut client = RetryingClient::connect(cujo.grpc).await;
    for r in 0..requests {
        let trace = trace_id(2, r);
        let resource_spans = (0..per_request)
            .map(|i| {
                let id = r * per_request + i;
                resource_spans(
                    &format!("svc-{id}"),
                    vec![kv("host.name", format!("host-{id:0>64}"))],
                    vec![span(&trace, id, Some(u64::MAX - 1), "work", vec![])],
                )
            })
            .collect();
        client
            .send(&ExportTraceServiceRequest { resource_spans })
            .await
            .expect("accepted");
    }
    let total = (requests * per_request) as usize;
    downstream.wait_for_spans(total).await;
    assert_eq!(assert_all_forwarded(&cujo).await, total as f64);
    let split = cujo
        .metric("cujo_assembler_capped_total{cap=\"groups_per_trace\"}")
        .await;
    assert!(
        split >= (requests * (per_request / 64 - 1)) as f64,
        "a trace released in parts at each 64th group is counted: {split}"
    );
    // Every span arrives under the resource it was sent with.
    let spans = downstream.spans();
    assert!(spans.iter().all(|s| {
        let id = u64::from_be_bytes(s.span.span_id.as_slice().try_into().expect("8 bytes")) - 1;
        s.service == format!("svc-{id}")
    }));
    assert_within_budget(&cujo, idle, "a resource per span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_whose_roots_never_come_are_released_early_when_memory_is_short() {
    let downstream = Downstream::start().await;
    // Roots never come and the timeout is long: only memory can release what is held.
    let cujo = Cujo::start_yaml(&config(
        downstream.addr,
        "assembler: { trace_timeout: 10m }",
    ))
    .await;
    let idle = cujo.rss_bytes();
    // ~45 MB of rootless children with values nothing propagates: more than the
    // assembler's share (a little over 24 MiB).
    let (requests, per_request) = (80u64, 2_000u64);
    let value = "v".repeat(200);
    let mut client = RetryingClient::connect(cujo.grpc).await;
    let mut sent = 0;
    for r in 0..requests {
        let spans = (0..per_request)
            .map(|i| {
                let id = r * per_request + i;
                span(
                    &trace_id(3, id / 4),
                    id,
                    Some(u64::MAX - 1),
                    "consume",
                    vec![kv("payload", value.clone())],
                )
            })
            .collect();
        let req = ExportTraceServiceRequest {
            resource_spans: vec![resource_spans("worker", vec![], spans)],
        };
        sent += spans_in(&req);
        client
            .send(&req)
            .await
            .expect("accepted, perhaps after retries");
    }
    let early = wait_for("traces released under memory pressure", || async {
        let n = cujo
            .metric("cujo_assembler_traces_released_total{reason=\"memory_pressure\"}")
            .await;
        (n > 0.0).then_some(n)
    })
    .await;
    assert!(early > 0.0);
    let held = cujo
        .metric("cujo_memory_used_bytes{component=\"assembler\"}")
        .await;
    let limit = cujo
        .metric("cujo_memory_limit_bytes{component=\"assembler\"}")
        .await;
    assert!(held <= limit, "the assembler holds {held} of {limit} bytes");
    assert_within_budget(&cujo, idle, "rootless flood");
    // What is still held comes out at shutdown, every span accounted for.
    let mut cujo = cujo;
    assert!(cujo.terminate().success());
    downstream.wait_for_spans(sent).await;
    assert_eq!(downstream.span_count(), sent, "nothing lost, nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_dimension_values_are_cut_and_their_series_bounded() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start_yaml(&config(
        downstream.addr,
        "assembler: { trace_timeout: 5s }\n\
         cujs:\n  - name: checkout\n    match: { attributes: { cuj.name: checkout } }\n    \
         dimensions: [tenant.id]\n    max_series: 100\n    latency: { threshold: 300ms }",
    ))
    .await;
    let idle = cujo.rss_bytes();
    // Roots only, each with a distinct 16 KiB tenant id: 1,000 of them, 16 MB of keys if
    // they were kept whole (and as much on every scrape).
    let (requests, per_request) = (20u64, 50u64);
    let mut client = RetryingClient::connect(cujo.grpc).await;
    for r in 0..requests {
        let spans = (0..per_request)
            .map(|i| {
                let n = r * per_request + i;
                let tenant = format!("{n:0>8}{}", "t".repeat(16 << 10));
                span(
                    &trace_id(4, n),
                    n,
                    None,
                    "POST /checkout",
                    vec![kv("cuj.name", "checkout"), kv("tenant.id", tenant)],
                )
            })
            .collect();
        client
            .send(&ExportTraceServiceRequest {
                resource_spans: vec![resource_spans("shop", vec![], spans)],
            })
            .await
            .expect("accepted");
    }
    let total = (requests * per_request) as usize;
    downstream.wait_for_spans(total).await;
    assert_eq!(assert_all_forwarded(&cujo).await, total as f64);
    let events = wait_for("every root counted as an event", || async {
        let n = support::latency_events(&cujo.metrics().await);
        (n >= total as f64).then_some(n)
    })
    .await;
    assert_eq!(events, total as f64);
    let m = cujo.metrics().await;
    let truncated = metric_value(
        &m,
        "cujo_sli_dimension_values_truncated_total{cuj=\"checkout\"}",
    );
    assert!(
        truncated >= 100.0,
        "values cut to 128 bytes are counted: {truncated}"
    );
    let longest = m
        .lines()
        .filter(|l| l.starts_with("cujo_sli_events_total{"))
        .filter_map(|l| l.split("tenant_id=\"").nth(1)?.split('"').next())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        (1..=128).contains(&longest),
        "dimension values on /metrics are at most 128 bytes: {longest}"
    );
    assert!(m.len() < 4 << 20, "a scrape stays small: {} bytes", m.len());
    // The engine's memory shows in its account of the budget (written each second).
    let sli = wait_for("the SLI engine's memory in its account", || async {
        let used = cujo
            .metric("cujo_memory_used_bytes{component=\"sli\"}")
            .await;
        (used > 0.0).then_some(used)
    })
    .await;
    let limit = cujo
        .metric("cujo_memory_limit_bytes{component=\"sli\"}")
        .await;
    assert!(sli <= limit, "the SLI engine holds {sli} of {limit} bytes");
    assert_within_budget(&cujo, idle, "long dimension values");
}
