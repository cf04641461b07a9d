//! Spans sent by the real OpenTelemetry SDK (gRPC, HTTP/protobuf, HTTP/JSON) go through the
//! real cujo binary and arrive at a real OTLP downstream unchanged: ids, names, attributes,
//! and each span under its own resource and scope.

mod support;

use std::collections::HashMap;

use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use support::{Cujo, Downstream, exporter_yaml, wait_for};

/// Ids of what the SDK sent: (trace id hex, span id hex) → (span name, service).
type Sent = HashMap<(String, String), (String, String)>;

fn provider(exporter: SpanExporter, service: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .with_attribute(KeyValue::new("k8s.pod.name", format!("{service}-7d9f")))
                .build(),
        )
        .build()
}

/// One trace across two services: a SERVER root in `frontend`, a CLIENT child in
/// `frontend`, and an INTERNAL grandchild in `ledger`. Returns what was sent.
fn emit_trace(front: &SdkTracerProvider, ledger: &SdkTracerProvider, n: usize, sent: &mut Sent) {
    let ft = front.tracer("checkout-http");
    let lt = ledger.tracer("ledger-db");
    let mut root = ft
        .span_builder("POST /v1/messages")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("cuj.name", "post_message"),
            KeyValue::new("user.tier", "gold"),
            KeyValue::new("http.response.status_code", 201),
            KeyValue::new("trace.n", n as i64),
        ])
        .start(&ft);
    let cx = Context::current().with_remote_span_context(root.span_context().clone());
    let mut client = ft
        .span_builder("ledger.Append")
        .with_kind(SpanKind::Client)
        .start_with_context(&ft, &cx);
    let cx2 = Context::current().with_remote_span_context(client.span_context().clone());
    let mut internal = lt
        .span_builder("append row")
        .with_kind(SpanKind::Internal)
        .with_attributes([KeyValue::new("db.system.name", "postgresql")])
        .start_with_context(&lt, &cx2);
    for (span, name, service) in [
        (&mut internal, "append row", "ledger"),
        (&mut client, "ledger.Append", "frontend"),
        (&mut root, "POST /v1/messages", "frontend"),
    ] {
        let sc = span.span_context().clone();
        sent.insert(
            (sc.trace_id().to_string(), sc.span_id().to_string()),
            (name.to_string(), service.to_string()),
        );
        span.end();
    }
}

async fn check_arrived(downstream: &Downstream, sent: &Sent) {
    downstream.wait_for_spans(sent.len()).await;
    let spans = downstream.spans();
    assert_eq!(spans.len(), sent.len(), "no duplicates, nothing missing");
    for s in &spans {
        let key = (hex(&s.span.trace_id), hex(&s.span.span_id));
        let (name, service) = sent
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected span {key:?}"));
        assert_eq!(&s.span.name, name);
        assert_eq!(&s.service, service, "span {name} kept its own resource");
        let scope = if service == "ledger" {
            "ledger-db"
        } else {
            "checkout-http"
        };
        assert_eq!(s.scope, scope, "span {name} kept its own scope");
        if name == "POST /v1/messages" {
            assert_eq!(s.attr("cuj.name").as_deref(), Some("post_message"));
            assert_eq!(s.attr("user.tier").as_deref(), Some("gold"));
            assert_eq!(s.attr("http.response.status_code").as_deref(), Some("201"));
            assert!(s.span.parent_span_id.is_empty());
        } else {
            assert_eq!(s.span.parent_span_id.len(), 8);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_spans_arrive_downstream_unchanged() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&exporter_yaml(
        downstream.addr,
        "    headers: { x-honeycomb-team: \"${env:CUJO_TEST_KEY:-test-key}\" }\n",
    ))
    .await;
    let endpoint = format!("http://{}", cujo.grpc);
    let sent = tokio::task::spawn_blocking(move || {
        let exporter = || {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_compression(opentelemetry_otlp::Compression::Gzip)
                .build()
                .expect("grpc exporter")
        };
        let (front, ledger) = (
            provider(exporter(), "frontend"),
            provider(exporter(), "ledger"),
        );
        let mut sent = Sent::new();
        for n in 0..20 {
            emit_trace(&front, &ledger, n, &mut sent);
        }
        front.shutdown().expect("flush frontend");
        ledger.shutdown().expect("flush ledger");
        sent
    });
    // The SDK's tonic exporter needs this runtime running while it exports.
    let sent = sent.await.expect("sdk thread");
    check_arrived(&downstream, &sent).await;
    let md = downstream.metadata();
    assert!(
        md.iter()
            .all(|m| m.get("x-honeycomb-team").is_some_and(|v| v == "test-key"))
    );
    let accepted = cujo
        .metric("cujo_receiver_spans_total{transport=\"grpc\",outcome=\"accepted\"}")
        .await;
    assert_eq!(accepted, sent.len() as f64);
    wait_for("exported counter", || async {
        let m = cujo.metrics().await;
        (support::metric_value(&m, "cujo_exporter_sent_spans_total") == sent.len() as f64
            && support::metric_value(&m, "cujo_in_flight_spans") == 0.0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_protobuf_and_json_spans_arrive_downstream_unchanged() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&exporter_yaml(downstream.addr, "")).await;
    let endpoint = format!("http://{}/v1/traces", cujo.http);
    let sent = tokio::task::spawn_blocking(move || {
        let exporter = |protocol| {
            SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(endpoint.clone())
                .with_compression(opentelemetry_otlp::Compression::Gzip)
                .build()
                .expect("http exporter")
        };
        let front = provider(exporter(Protocol::HttpBinary), "frontend");
        let ledger = provider(exporter(Protocol::HttpJson), "ledger");
        let mut sent = Sent::new();
        for n in 0..10 {
            emit_trace(&front, &ledger, n, &mut sent);
        }
        front.shutdown().expect("flush frontend");
        ledger.shutdown().expect("flush ledger");
        sent
    })
    .await
    .expect("sdk thread");
    check_arrived(&downstream, &sent).await;
    let accepted = cujo
        .metric("cujo_receiver_spans_total{transport=\"http\",outcome=\"accepted\"}")
        .await;
    assert_eq!(accepted, sent.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_exporter_forwards_to_an_otlp_http_receiver() {
    // SDK → cujo A (exports OTLP/HTTP) → cujo B's HTTP receiver → (gRPC) → downstream.
    let downstream = Downstream::start().await;
    let b = Cujo::start(&exporter_yaml(downstream.addr, "")).await;
    let a = Cujo::start(&format!(
        "exporters:\n  otlp:\n    endpoint: \"http://{}\"\n    protocol: http/protobuf\n    compression: gzip\n    batch: {{ max_spans: 100, timeout: 20ms }}\n",
        b.http
    ))
    .await;
    let endpoint = format!("http://{}", a.grpc);
    let sent = tokio::task::spawn_blocking(move || {
        let exporter = || {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .expect("grpc exporter")
        };
        let (front, ledger) = (
            provider(exporter(), "frontend"),
            provider(exporter(), "ledger"),
        );
        let mut sent = Sent::new();
        for n in 0..50 {
            emit_trace(&front, &ledger, n, &mut sent);
        }
        front.shutdown().expect("flush");
        ledger.shutdown().expect("flush");
        sent
    })
    .await
    .expect("sdk thread");
    check_arrived(&downstream, &sent).await;
    assert_eq!(
        b.metric("cujo_receiver_spans_total{transport=\"http\",outcome=\"accepted\"}")
            .await,
        sent.len() as f64
    );
}
