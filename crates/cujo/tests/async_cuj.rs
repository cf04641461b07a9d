//! Async CUJs end to end: a producer request enqueues a job (trace context injected into
//! the message with the real OpenTelemetry SDK propagator); a consumer extracts it after the
//! assembler has already released the producer's trace, and either continues the same trace
//! or starts a new trace with a span link. The `end_to_end` latency runs from the request's
//! start to the consumer's end, and a `{from, to}` CUJ measures enqueue → job completed —
//! both read from `/metrics`. The OpenMetrics scrape passes the real `prometheus_client`
//! parser and its exemplars point at the trace of the bad event.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Link, Span as _, SpanKind, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use support::{Cujo, Downstream, exporter_yaml, metric_value, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"assembler: { decision_wait: 100ms, trace_timeout: 2s }
slo: { settle: 10s }
cujs:
  - name: send_message
    match:
      span.name: "POST /v1/messages"
      attributes: { cuj.name: send_message }
    dimensions: [mode]
    latency: { threshold: 1s, measure: end_to_end }
  - name: deliver_message
    match:
      span.name: "POST /v1/messages"
      attributes: { cuj.name: send_message }
    dimensions: [mode]
    latency:
      threshold: 1s
      measure:
        from: { span: enqueue, at: start }
        to: { span: job completed, service: worker, at: end }
"#;

/// A queue message: the job and the trace context it was enqueued under.
type Message = HashMap<String, String>;

fn provider(endpoint: &str, service: &'static str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .expect("exporter");
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build()
}

/// The producer: `POST /v1/messages` from `t0` to `t0 + 100ms`, with an `enqueue` span at
/// `t0 + 50ms` whose context goes into the message. Returns the message and the trace id.
fn produce(endpoint: &str, mode: &'static str, t0: SystemTime) -> (Message, String) {
    let provider = provider(endpoint, "frontend-api");
    let t = provider.tracer("api");
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut root = t
        .span_builder("POST /v1/messages")
        .with_kind(SpanKind::Server)
        .with_start_time(t0)
        .with_attributes([
            KeyValue::new("cuj.name", "send_message"),
            KeyValue::new("mode", mode),
        ])
        .start(&t);
    let trace_id = root.span_context().trace_id().to_string();
    let cx = Context::new().with_remote_span_context(root.span_context().clone());
    let mut enqueue = t
        .span_builder("enqueue")
        .with_kind(SpanKind::Producer)
        .with_start_time(ms(50))
        .start_with_context(&t, &cx);
    let mut message = Message::new();
    TraceContextPropagator::new().inject_context(
        &Context::new().with_remote_span_context(enqueue.span_context().clone()),
        &mut message,
    );
    enqueue.end_with_timestamp(ms(60));
    root.end_with_timestamp(ms(100));
    provider.shutdown().expect("producer flushed");
    (message, trace_id)
}

/// The consumer: `job completed` in service `worker` from `start` to `end` after `t0`,
/// continuing the message's trace (child of `enqueue`) or, `linked`, starting a new trace
/// that links to it.
fn consume(
    endpoint: &str,
    message: &Message,
    linked: bool,
    t0: SystemTime,
    (start, end): (u64, u64),
) {
    let provider = provider(endpoint, "worker");
    let t = provider.tracer("worker");
    let extracted = TraceContextPropagator::new().extract(message);
    let enqueued = extracted.span().span_context().clone();
    assert!(enqueued.is_valid(), "the message carries a trace context");
    let builder = t
        .span_builder("job completed")
        .with_kind(SpanKind::Consumer)
        .with_start_time(t0 + Duration::from_millis(start));
    let mut span = if linked {
        builder
            .with_links(vec![Link::with_context(enqueued)])
            .start_with_context(&t, &Context::new())
    } else {
        builder.start_with_context(&t, &extracted)
    };
    span.end_with_timestamp(t0 + Duration::from_millis(end));
    provider.shutdown().expect("consumer flushed");
}

/// `GET /metrics` with an `Accept` header, as a scraper sends it: (content type, body).
async fn scrape(admin: SocketAddr, accept: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    s.write_all(
        format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\nAccept: {accept}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("response");
    let text = String::from_utf8(buf).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// (sample name, sample labels, exemplar trace_id, exemplar value).
type ParsedExemplar = (String, HashMap<String, String>, String, f64);

/// Parses OpenMetrics text with the reference Python parser (`prometheus_client`), which
/// refuses anything not valid OpenMetrics; returns every exemplar. `None` when the parser
/// is not installed (required under CI; `scripts/test.sh` installs it).
fn parse_open_metrics(text: &str) -> Option<Vec<ParsedExemplar>> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        if s.exemplar is not None:
            out.append([s.name, s.labels, s.exemplar.labels.get("trace_id", ""), s.exemplar.value])
print(json.dumps(out))
"#;
    let available = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with prometheus_client is required under CI"
        );
        eprintln!("prometheus_client not installed: skipping the OpenMetrics parser check");
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("parser output"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_and_from_to_latency_cover_consumers_that_finish_after_release() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!("{CONFIG}{}", exporter_yaml(downstream.addr, ""))).await;
    let endpoint = format!("http://{}", cujo.grpc);
    let t0 = SystemTime::now() - Duration::from_secs(60);

    // Both producers' traces are released (decision_wait after their roots) and their
    // events wait to settle before any consumer span is sent.
    let (same_msg, same_trace, linked_msg) = {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || {
            let (same_msg, same_trace) = produce(&endpoint, "same_trace", t0);
            let (linked_msg, _) = produce(&endpoint, "linked", t0);
            (same_msg, same_trace, linked_msg)
        })
        .await
        .expect("producers")
    };
    wait_for("both producer traces released and settling", || async {
        let m = cujo.metrics().await;
        let released = metric_value(&m, "cujo_assembler_traces_released_total{reason=\"root\"}");
        (released >= 2.0 && metric_value(&m, "cujo_sli_settling_traces") == 2.0).then_some(())
    })
    .await;
    let before = cujo.metrics().await;
    assert!(
        !before.contains("cujo_cuj_duration_seconds_count{cuj=\"send_message\""),
        "no event is recorded while consumers may still come:\n{before}"
    );

    // (a) The consumer continues the same trace: its span arrives late, after the release.
    // (b) The consumer starts a new trace that links to the enqueue span.
    tokio::task::spawn_blocking(move || {
        consume(&endpoint, &same_msg, false, t0, (500, 1500));
        consume(&endpoint, &linked_msg, true, t0, (300, 700));
    })
    .await
    .expect("consumers");

    let sample =
        |name: &str, cuj: &str, mode: &str| format!("{name}{{cuj=\"{cuj}\",mode=\"{mode}\"}}");
    let metrics = wait_for("both events settled", || async {
        let m = cujo.metrics().await;
        let settled = ["same_trace", "linked"].iter().all(|mode| {
            metric_value(
                &m,
                &sample("cujo_cuj_duration_seconds_count", "deliver_message", mode),
            ) == 1.0
        });
        settled.then_some(m)
    })
    .await;
    assert_eq!(
        metric_value(
            &metrics,
            "cujo_assembler_late_spans_total{outcome=\"enriched\"}"
        ),
        1.0,
        "the same-trace consumer arrived after its trace was released\n{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "cujo_assembler_linked_traces_total{outcome=\"joined\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, "cujo_sli_settle_spans_total{source=\"late\"}"),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, "cujo_sli_settle_spans_total{source=\"linked\"}"),
        1.0
    );

    // end_to_end: the request's start to the consumer's end.
    for (mode, seconds) in [("same_trace", 1.5), ("linked", 0.7)] {
        let count = metric_value(
            &metrics,
            &sample("cujo_cuj_duration_seconds_count", "send_message", mode),
        );
        let sum = metric_value(
            &metrics,
            &sample("cujo_cuj_duration_seconds_sum", "send_message", mode),
        );
        assert_eq!(count, 1.0, "{mode}\n{metrics}");
        assert!(
            close(sum, seconds),
            "{mode}: end_to_end {sum}, want {seconds}\n{metrics}"
        );
    }
    // {from, to}: the enqueue span's start to the job's end.
    for (mode, seconds) in [("same_trace", 1.45), ("linked", 0.65)] {
        let sum = metric_value(
            &metrics,
            &sample("cujo_cuj_duration_seconds_sum", "deliver_message", mode),
        );
        assert!(
            close(sum, seconds),
            "{mode}: enqueue → job completed {sum}, want {seconds}\n{metrics}"
        );
    }
    let events = |cuj: &str, mode: &str, outcome: &str| {
        metric_value(
            &metrics,
            &format!(
                "cujo_sli_events_total{{cuj=\"{cuj}\",mode=\"{mode}\",sli=\"latency\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(
        events("send_message", "same_trace", "bad"),
        1.0,
        "1.5 s > 1 s"
    );
    assert_eq!(
        events("send_message", "linked", "good"),
        1.0,
        "0.7 s <= 1 s"
    );
    assert_eq!(events("deliver_message", "same_trace", "bad"), 1.0);
    assert_eq!(
        metric_value(
            &metrics,
            "cujo_sli_latency_unmeasured_total{cuj=\"deliver_message\",reason=\"to_missing\"}"
        ),
        0.0
    );

    // The Prometheus format is unchanged for plain scrapers; a scraper asking for
    // OpenMetrics gets it, valid, with the slow trace as exemplar of the bad count.
    let (plain_type, plain) = scrape(cujo.admin, "*/*").await;
    assert!(
        plain_type.starts_with("text/plain; version=0.0.4"),
        "{plain_type}"
    );
    assert!(!plain.contains("# EOF") && !plain.contains("trace_id="));
    let (om_type, om) = scrape(
        cujo.admin,
        "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    )
    .await;
    assert!(
        om_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{om_type}"
    );
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE cujo_sli_events counter\n"), "{om}");
    if let Some(exemplars) = parse_open_metrics(&om) {
        let bad = exemplars
            .iter()
            .find(|(name, labels, _, _)| {
                name == "cujo_sli_events_total"
                    && labels.get("cuj").map(String::as_str) == Some("send_message")
                    && labels.get("outcome").map(String::as_str) == Some("bad")
            })
            .unwrap_or_else(|| panic!("no exemplar on the bad latency count: {exemplars:?}"));
        assert_eq!(
            bad.2, same_trace,
            "the exemplar is the slow request's trace"
        );
        let bucket = exemplars
            .iter()
            .find(|(name, labels, _, _)| {
                name == "cujo_cuj_duration_seconds_bucket"
                    && labels.get("cuj").map(String::as_str) == Some("send_message")
                    && labels.get("le").map(String::as_str) == Some("2.5")
            })
            .unwrap_or_else(|| panic!("no exemplar on the 2.5 s bucket: {exemplars:?}"));
        assert_eq!((bucket.2.as_str(), bucket.3), (same_trace.as_str(), 1.5));
    }
}
