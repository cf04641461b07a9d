//! Root-attribute propagation end to end: spans made by instrumented code with the real
//! OpenTelemetry SDK, context carried through an in-test queue with `inject`/`extract`, a
//! consumer that starts a new trace with a `Link`; the real cujo binary; a real downstream.

mod support;

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use support::{Cujo, Downstream, ReceivedSpan, exporter_yaml, wait_for};

/// Three shards, so links and late spans cross shards.
const ASSEMBLER: &str = "assembler:\n  decision_wait: 300ms\n  trace_timeout: 3s\n  root_cache: { ttl: 10m, max_traces: 100000 }\n  max_link_hops: 3\n  shards: 3\npropagate:\n  attributes: [\"cuj.*\", \"user.tier\", \"tenant.id\", \"graphql.operation.name\"]\n";

/// A downstream and a cujo forwarding to it with propagation on ([`ASSEMBLER`]).
async fn start_propagating() -> (Downstream, Cujo) {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!(
        "{ASSEMBLER}{}",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    (downstream, cujo)
}

/// A service instrumented with the SDK, exporting each span as it ends (so every span is its
/// own request and children reach cujo before their root).
struct Service {
    provider: SdkTracerProvider,
}

impl Service {
    fn new(cujo: &Cujo, name: &str) -> Service {
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{}", cujo.grpc))
            .build()
            .expect("exporter");
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(name.to_string())
                    .build(),
            )
            .build();
        Service { provider }
    }

    fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer("app")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

fn root_span(svc: &Service, tier: &str, tenant: &str) -> opentelemetry_sdk::trace::Span {
    let t = svc.tracer();
    t.span_builder("POST /v1/messages")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("cuj.name", "post_message"),
            KeyValue::new("user.tier", tier.to_string()),
            KeyValue::new("tenant.id", tenant.to_string()),
            KeyValue::new("http.route", "/v1/messages"),
        ])
        .start(&t)
}

fn child_of(
    svc: &Service,
    parent: &SpanContext,
    name: &str,
    kind: SpanKind,
) -> opentelemetry_sdk::trace::Span {
    let t = svc.tracer();
    let cx = Context::new().with_remote_span_context(parent.clone());
    t.span_builder(name.to_string())
        .with_kind(kind)
        .start_with_context(&t, &cx)
}

/// The in-test queue: messages carry the producer's context as W3C headers.
fn inject(cx: &SpanContext) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let ctx = Context::new().with_remote_span_context(cx.clone());
    TraceContextPropagator::new().inject_context(&ctx, &mut carrier);
    carrier
}

fn extract(carrier: &HashMap<String, String>) -> SpanContext {
    TraceContextPropagator::new()
        .extract(carrier)
        .span()
        .span_context()
        .clone()
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.span.name == name)
        .unwrap_or_else(|| panic!("span {name:?} not received"))
}

fn assert_root_values(s: &ReceivedSpan, tier: &str, tenant: &str, hops: &str) {
    let name = &s.span.name;
    assert_eq!(
        s.attr("cuj.name").as_deref(),
        Some("post_message"),
        "{name}"
    );
    assert_eq!(s.attr("user.tier").as_deref(), Some(tier), "{name}");
    assert_eq!(s.attr("tenant.id").as_deref(), Some(tenant), "{name}");
    assert_eq!(
        s.attr("cujo.root.name").as_deref(),
        Some("POST /v1/messages"),
        "{name}"
    );
    assert_eq!(
        s.attr("cujo.root.service.name").as_deref(),
        Some("frontend"),
        "{name}"
    );
    assert_eq!(s.attr("cujo.async.hops").as_deref(), Some(hops), "{name}");
    assert!(s.attr("cujo.root.offset_ms").is_some(), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_before_root_across_requests_and_services_are_enriched() {
    let (downstream, cujo) = start_propagating().await;
    let c = &cujo;
    tokio::task::spawn_blocking({
        let (front, ledger) = (Service::new(c, "frontend"), Service::new(c, "ledger"));
        move || {
            for (tier, tenant) in [("gold", "acme"), ("free", "globex")] {
                let mut root = root_span(&front, tier, tenant);
                let mut call = child_of(
                    &front,
                    root.span_context(),
                    "ledger.Append",
                    SpanKind::Client,
                );
                let mut db = child_of(
                    &ledger,
                    call.span_context(),
                    "INSERT ledger",
                    SpanKind::Internal,
                );
                db.end();
                call.end();
                root.end();
            }
        }
    })
    .await
    .expect("sdk");
    downstream.wait_for_spans(6).await;
    let spans = downstream.spans();
    for s in &spans {
        let root = spans
            .iter()
            .find(|r| r.span.trace_id == s.span.trace_id && r.span.parent_span_id.is_empty())
            .expect("root of the same trace");
        let tier = root.attr("user.tier").expect("tier");
        let tenant = root.attr("tenant.id").expect("tenant");
        assert_root_values(s, &tier, &tenant, "0");
        assert_eq!(
            s.attr("http.route").is_some(),
            s.span.parent_span_id.is_empty(),
            "unselected keys stay on the root"
        );
    }
    let db = spans
        .iter()
        .find(|s| s.span.name == "INSERT ledger")
        .expect("db");
    assert_eq!(db.service, "ledger", "resource untouched");
    let root = spans
        .iter()
        .find(|s| s.span.parent_span_id.is_empty())
        .expect("root");
    assert_eq!(root.attr("cujo.trace.span_count").as_deref(), Some("3"));
    assert_eq!(
        cujo.metric("cujo_assembler_traces_released_total{reason=\"root\"}")
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_first_then_children_are_enriched() {
    let (downstream, cujo) = start_propagating().await;
    let front = Service::new(&cujo, "frontend");
    tokio::task::spawn_blocking(move || {
        let mut root = root_span(&front, "gold", "acme");
        let mut child = child_of(&front, root.span_context(), "render", SpanKind::Internal);
        root.end();
        child.end();
        drop(front);
    })
    .await
    .expect("sdk");
    downstream.wait_for_spans(2).await;
    let spans = downstream.spans();
    assert_root_values(named(&spans, "render"), "gold", "acme", "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_consumer_after_release_and_linked_traces_inherit_the_root() {
    let (downstream, cujo) = start_propagating().await;
    let front = Service::new(&cujo, "frontend");
    let worker = Service::new(&cujo, "push-worker");
    let mailer = Service::new(&cujo, "mailer");
    // The request: root + a PRODUCER span that enqueues a message carrying its context.
    let (message, producer_cx) = tokio::task::spawn_blocking({
        let front_t = front.tracer();
        let mut root = root_span(&front, "platinum", "initech");
        move || {
            let cx = Context::new().with_remote_span_context(root.span_context().clone());
            let mut producer = front_t
                .span_builder("publish push")
                .with_kind(SpanKind::Producer)
                .start_with_context(&front_t, &cx);
            let message = inject(producer.span_context());
            let producer_cx = producer.span_context().clone();
            producer.end();
            root.end();
            (message, producer_cx)
        }
    })
    .await
    .expect("sdk");
    // Wait until the request's trace has been released downstream.
    downstream.wait_for_spans(2).await;
    // (a) Same trace continued through the queue, after release: the consumer is a child of
    // the producer; it arrives after the trace left the buffer.
    // (b) A new trace linked to the producer; (c) a second hop linked to (b).
    tokio::task::spawn_blocking(move || {
        let parent = extract(&message);
        let mut consumer = child_of(&worker, &parent, "deliver push", SpanKind::Consumer);
        let mut send = child_of(
            &worker,
            consumer.span_context(),
            "APNs send",
            SpanKind::Client,
        );
        send.end();
        consumer.end();
        let wt = worker.tracer();
        let mut linked = wt
            .span_builder("digest job")
            .with_kind(SpanKind::Consumer)
            .with_links(vec![Link::with_context(producer_cx.clone())])
            .start_with_context(&wt, &Context::new());
        let mut step = child_of(
            &worker,
            linked.span_context(),
            "digest step",
            SpanKind::Internal,
        );
        let hop1 = linked.span_context().clone();
        step.end();
        linked.end();
        let mt = mailer.tracer();
        let mut hop2 = mt
            .span_builder("send digest email")
            .with_kind(SpanKind::Consumer)
            .with_links(vec![Link::with_context(hop1)])
            .start_with_context(&mt, &Context::new());
        hop2.end();
        drop((worker, mailer, front));
    })
    .await
    .expect("sdk");
    downstream.wait_for_spans(7).await;
    let spans = downstream.spans();
    assert_root_values(named(&spans, "publish push"), "platinum", "initech", "0");
    assert_root_values(named(&spans, "deliver push"), "platinum", "initech", "1");
    assert_root_values(named(&spans, "APNs send"), "platinum", "initech", "1");
    assert_root_values(named(&spans, "digest job"), "platinum", "initech", "1");
    assert_root_values(named(&spans, "digest step"), "platinum", "initech", "1");
    assert_root_values(
        named(&spans, "send digest email"),
        "platinum",
        "initech",
        "2",
    );
    let m = cujo.metrics().await;
    assert_eq!(
        support::metric_value(&m, "cujo_assembler_late_spans_total{outcome=\"enriched\"}"),
        2.0
    );
    assert_eq!(
        support::metric_value(&m, "cujo_assembler_linked_traces_total{outcome=\"joined\"}"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_whose_root_never_comes_is_released_unenriched_after_the_timeout() {
    let (downstream, cujo) = start_propagating().await;
    let svc = Service::new(&cujo, "frontend");
    tokio::task::spawn_blocking(move || {
        // A child of a parent that never reports (its service is not instrumented).
        let ghost = SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes([7; 16]),
            opentelemetry::trace::SpanId::from_bytes([7; 8]),
            opentelemetry::trace::TraceFlags::SAMPLED,
            true,
            Default::default(),
        );
        let mut orphan = child_of(&svc, &ghost, "orphan work", SpanKind::Internal);
        orphan.end();
        drop(svc);
    })
    .await
    .expect("sdk");
    downstream.wait_for_spans(1).await;
    let spans = downstream.spans();
    assert_eq!(named(&spans, "orphan work").attr("cujo.root.name"), None);
    assert_eq!(
        cujo.metric("cujo_assembler_traces_released_total{reason=\"timeout_without_root\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_releases_early_without_losing_spans() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!(
        "assembler:\n  decision_wait: 60s\n  trace_timeout: 120s\n  max_buffered_spans: 50\n  hold: trace\npropagate: {{ attributes: [\"user.tier\"] }}\n{}",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    let svc = Service::new(&cujo, "frontend");
    tokio::task::spawn_blocking(move || {
        for i in 0..40 {
            let mut root = root_span(&svc, if i % 2 == 0 { "gold" } else { "free" }, "acme");
            let mut a = child_of(&svc, root.span_context(), "a", SpanKind::Internal);
            let mut b = child_of(&svc, root.span_context(), "b", SpanKind::Internal);
            a.end();
            b.end();
            root.end();
        }
        drop(svc);
    })
    .await
    .expect("sdk");
    // 120 spans against a 50-span buffer and a 60 s decision wait: most leave early, and
    // since their roots have arrived, they leave enriched (`root_early`, not `memory_pressure`).
    wait_for("early releases", || async {
        (cujo
            .metric("cujo_assembler_traces_released_total{reason=\"root_early\"}")
            .await
            >= 20.0)
            .then_some(())
    })
    .await;
    assert!(cujo.metric("cujo_assembler_spans_buffered").await <= 50.0);
    let (status, cujo) = cujo.stop().await;
    assert!(status.success(), "{}", cujo.log());
    assert_eq!(downstream.span_count(), 120, "nothing lost");
    for s in downstream.spans() {
        assert!(s.attr("user.tier").is_some(), "{} enriched", s.span.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_and_forwards_buffered_traces_enriched() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!(
        "assembler:\n  decision_wait: 60s\n  trace_timeout: 120s\n  hold: trace\npropagate: {{}}\n{}",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    let svc = Service::new(&cujo, "frontend");
    tokio::task::spawn_blocking(move || {
        let mut root = root_span(&svc, "gold", "acme");
        let mut a = child_of(&svc, root.span_context(), "held", SpanKind::Internal);
        a.end();
        root.end();
        drop(svc);
    })
    .await
    .expect("sdk");
    wait_for("spans buffered", || async {
        (cujo.metric("cujo_assembler_spans_buffered").await == 2.0).then_some(())
    })
    .await;
    assert_eq!(downstream.span_count(), 0);
    let (status, _cujo) = cujo.stop().await;
    assert!(status.success());
    let spans = downstream.spans();
    assert_eq!(spans.len(), 2);
    assert_root_values(named(&spans, "held"), "gold", "acme", "0");
}

/// `assembler.hold: root` (the default): once the root is there, the trace's other spans go
/// on enriched at once; only the root waits `decision_wait` (a minute here), so that its
/// `cujo.trace.*` summary counts stragglers. At shutdown it goes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_go_on_when_the_root_arrives_and_the_root_waits() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!(
        "assembler:\n  decision_wait: 60s\n  trace_timeout: 120s\npropagate: {{}}\n{}",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    let svc = Service::new(&cujo, "frontend");
    tokio::task::spawn_blocking(move || {
        let mut root = root_span(&svc, "gold", "acme");
        let mut a = child_of(&svc, root.span_context(), "streamed", SpanKind::Internal);
        a.end();
        root.end();
        drop(svc);
    })
    .await
    .expect("sdk");
    let d = &downstream;
    wait_for("the child forwarded", || async {
        (d.span_count() == 1).then_some(())
    })
    .await;
    assert_eq!(cujo.metric("cujo_assembler_spans_buffered").await, 1.0);
    assert_eq!(
        cujo.metric("cujo_assembler_spans_streamed_total").await,
        1.0
    );
    assert_root_values(named(&downstream.spans(), "streamed"), "gold", "acme", "0");
    let (status, _cujo) = cujo.stop().await;
    assert!(status.success());
    let spans = downstream.spans();
    assert_eq!(spans.len(), 2, "the root at shutdown");
    let root = named(&spans, "POST /v1/messages");
    assert_eq!(root.attr("cujo.trace.span_count").as_deref(), Some("2"));
    assert_eq!(root.attr("user.tier").as_deref(), Some("gold"));
}

/// A sidecar in a pod that does not own the trace's root (`assembler.remote_parent:
/// release`): a request from another pod enters with a remote parent (its context from the
/// caller's headers), its local child ends and is exported first, then the entry span; both
/// go on at once, unenriched (trace_timeout is ten minutes: the deadline here is 30 s). A
/// journey rooted in this pod is still held for its root, enriched and measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_passes_on_at_once_what_it_cannot_enrich_and_measures_local_roots() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!(
        "assembler:\n  decision_wait: 200ms\n  trace_timeout: 10m\n  remote_parent: release\npropagate:\n  attributes: [\"cuj.*\", \"user.tier\"]\ncujs:\n  - {{ name: post_message, match: {{ span.name: \"POST /v1/messages\" }}, dimensions: [user.tier], availability: {{ scope: root }}, objectives: [{{ sli: availability, target: 99%, window: 30d }}] }}\n{}",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    let c = &cujo;
    tokio::task::spawn_blocking({
        let svc = Service::new(c, "inventory");
        move || {
            let t = svc.tracer();
            // The caller's context, as the W3C propagator extracts it from the request.
            let mut headers = HashMap::new();
            headers.insert(
                "traceparent".to_string(),
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
            );
            let remote = TraceContextPropagator::new().extract(&headers);
            let entry = t
                .span_builder("GET /v1/stock")
                .with_kind(SpanKind::Server)
                .start_with_context(&t, &remote);
            let cx = Context::new().with_span(entry);
            t.span_builder("SELECT stock")
                .start_with_context(&t, &cx)
                .end();
            cx.span().end();
            // A journey whose root is here: its child is a local child.
            let root = root_span(&svc, "gold", "acme");
            let cx = Context::new().with_span(root);
            t.span_builder("INSERT message")
                .start_with_context(&t, &cx)
                .end();
            cx.span().end();
        }
    })
    .await
    .expect("sdk");
    downstream.wait_for_spans(4).await;
    let spans = downstream.spans();
    for name in ["GET /v1/stock", "SELECT stock"] {
        let s = named(&spans, name);
        assert_eq!(
            s.attr("cuj.name"),
            None,
            "{name}: nothing here to enrich it with"
        );
    }
    for name in ["POST /v1/messages", "INSERT message"] {
        assert_eq!(
            named(&spans, name).attr("cuj.name").as_deref(),
            Some("post_message"),
            "{name}"
        );
    }
    assert_eq!(
        cujo.metric("cujo_assembler_traces_released_total{reason=\"remote_parent\"}")
            .await,
        1.0
    );
    wait_for("the local journey's event", || async {
        (cujo
            .metric("cujo_sli_events_total{cuj=\"post_message\",user_tier=\"gold\",sli=\"availability\",outcome=\"good\"}")
            .await
            == 1.0)
            .then_some(())
    })
    .await;
}
