//! Backend presets end to end: the real binary with `preset:` sections (endpoint overridden
//! to an in-test server on 127.0.0.1, everything else the preset's), CUJ traffic from the
//! real OpenTelemetry SDK, and an in-test OTLP server that records each request's path,
//! headers, encoding and size. Each test asserts what that backend documents (see
//! `cujo_config::presets` for the pages): the OTLP path of its protocol, its auth header
//! names and values, temporality, histogram form (exponential, or explicit with the CUJ's
//! threshold among the bounds), gzip, and requests under its size limit; and for the span
//! presets, the auth metadata on forwarded spans.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Tracer, TracerProvider as _};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, metric, number_data_point,
};
use support::{Cujo, Downstream, string_attr, wait_for};

const GRPC_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

const CUJS: &str = r#"assembler: { decision_wait: 100ms, trace_timeout: 2s }
cujs:
  - name: checkout
    match: { service.name: checkout-api, span.name: "POST /v1/checkout" }
    dimensions: [user.tier]
    latency: { threshold: 300ms, measure: root }
    objectives:
      - { sli: latency, target: 99%, window: 30d }
"#;

/// One request as the backend saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    /// The protobuf message's size before compression.
    message_bytes: usize,
    /// gzip on the wire (`content-encoding`, or the gRPC message's compressed flag).
    gzip: bool,
    request: ExportMetricsServiceRequest,
}

/// An OTLP metrics backend on both protocols: gRPC (h2c, `MetricsService/Export`) and
/// HTTP/protobuf (`POST /v1/metrics`), recording every request.
#[derive(Clone, Default)]
struct Backend {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Backend {
    async fn start() -> (SocketAddr, Backend) {
        let backend = Backend::default();
        let b = backend.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let b = b.clone();
            async move { b.answer(uri, headers, body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, backend)
    }

    fn answer(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, [(&'static str, &'static str); 2], Vec<u8>) {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let grpc = header("content-type") == Some("application/grpc");
        let (gzip, raw) = if grpc {
            assert!(body.len() >= 5, "a gRPC message has a 5-byte prefix");
            let gzip = body[0] == 1;
            if gzip {
                assert_eq!(header("grpc-encoding"), Some("gzip"));
            }
            (gzip, body.slice(5..))
        } else {
            (header("content-encoding") == Some("gzip"), body)
        };
        let message = if gzip {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .expect("gzip");
            out
        } else {
            raw.to_vec()
        };
        let request: ExportMetricsServiceRequest =
            prost::Message::decode(&message[..]).expect("protobuf");
        self.seen.lock().expect("lock").push(Seen {
            path: uri.path().to_string(),
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            message_bytes: message.len(),
            gzip,
            request,
        });
        let answer = prost::Message::encode_to_vec(&ExportMetricsServiceResponse::default());
        if grpc {
            let mut framed = vec![0u8; 5];
            framed[1..5].copy_from_slice(&(answer.len() as u32).to_be_bytes());
            framed.extend(answer);
            (
                StatusCode::OK,
                [("content-type", "application/grpc"), ("grpc-status", "0")],
                framed,
            )
        } else {
            (
                StatusCode::OK,
                [
                    ("content-type", "application/x-protobuf"),
                    ("x-backend", "test"),
                ],
                answer,
            )
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// (tier, duration) of trace `i`: `tiers` tiers, durations across the 300 ms threshold.
fn shape(i: u64, tiers: u64) -> (String, Duration) {
    (
        format!("tier-{}", i % tiers),
        Duration::from_millis(20 + (i * 37) % 700),
    )
}

/// Sends `n` checkout roots over `tiers` tiers with the SDK.
async fn send(endpoint: String, n: u64, tiers: u64) {
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "checkout-api");
        let t = provider.tracer("api");
        let start = SystemTime::now() - Duration::from_secs(60);
        for i in 0..n {
            let (tier, took) = shape(i, tiers);
            let root = t
                .span_builder("POST /v1/checkout")
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .with_attributes([KeyValue::new("user.tier", tier)])
                .start(&t);
            opentelemetry::trace::Span::end_with_timestamp(&mut { root }, start + took);
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
}

fn find<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

/// Latency events (good + bad) in `req`, and the temporality of `cujo.sli.events`.
fn latency_events(req: &ExportMetricsServiceRequest) -> Option<(i64, i32)> {
    let Some(metric::Data::Sum(sum)) = &find(req, "cujo.sli.events")?.data else {
        panic!("events is a sum");
    };
    let n = sum
        .data_points
        .iter()
        .filter(|p| string_attr(&p.attributes, "sli").as_deref() == Some("latency"))
        .map(|p| match p.value {
            Some(number_data_point::Value::AsInt(v)) => v,
            _ => panic!("integer"),
        })
        .sum();
    Some((n, sum.aggregation_temporality))
}

/// How `cujo.cuj.duration` came: (form, temporality, events in it, every bounds list).
fn durations(req: &ExportMetricsServiceRequest) -> Option<(&'static str, i32, u64, Vec<Vec<f64>>)> {
    match &find(req, "cujo.cuj.duration")?.data {
        Some(metric::Data::Histogram(h)) => Some((
            "explicit",
            h.aggregation_temporality,
            h.data_points
                .iter()
                .map(|p| {
                    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
                    p.count
                })
                .sum(),
            h.data_points
                .iter()
                .map(|p| p.explicit_bounds.clone())
                .collect(),
        )),
        Some(metric::Data::ExponentialHistogram(h)) => Some((
            "exponential",
            h.aggregation_temporality,
            h.data_points.iter().map(|p| p.count).sum(),
            Vec::new(),
        )),
        other => panic!("duration is a histogram, got {other:?}"),
    }
}

/// Waits until the pushes (summed when delta, the latest when cumulative) hold all `n`
/// latency events; returns every request seen.
async fn until_all_counted(backend: &Backend, n: i64, delta: bool) -> Vec<Seen> {
    wait_for("pushes holding every event", || async {
        let seen = backend.seen();
        let counts: Vec<i64> = seen
            .iter()
            .filter_map(|s| latency_events(&s.request).map(|(v, _)| v))
            .collect();
        let total = if delta {
            counts.iter().sum()
        } else {
            counts.last().copied().unwrap_or(0)
        };
        (total == n).then_some(seen)
    })
    .await
}

fn metrics_yaml(section: &str) -> String {
    format!("{CUJS}exporters:\n  otlp_metrics:\n{section}    interval: 200ms\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honeycomb_preset_sends_team_and_dataset_over_grpc_with_explicit_buckets() {
    let (addr, backend) = Backend::start().await;
    let spans = Downstream::start().await;
    let yaml = format!(
        "{}  otlp:\n    preset: honeycomb\n    api_key: \"${{env:HC_KEY}}\"\n    endpoint: \"http://{}\"\n",
        metrics_yaml(&format!(
            "    preset: honeycomb\n    api_key: \"${{env:HC_KEY}}\"\n    dataset: cujo-slis\n    endpoint: \"http://{addr}\"\n"
        )),
        spans.addr
    );
    let cujo = Cujo::start_yaml_with_env(&with_listeners(&yaml), &[("HC_KEY", "hc-key-1")]).await;
    send(format!("http://{}", cujo.grpc), 40, 2).await;
    let seen = until_all_counted(&backend, 40, false).await;
    for s in &seen {
        assert_eq!(s.path, GRPC_PATH, "OTLP/gRPC");
        assert_eq!(s.headers["x-honeycomb-team"], "hc-key-1");
        assert_eq!(s.headers["x-honeycomb-dataset"], "cujo-slis");
        assert!(s.gzip, "gzip");
        assert!(s.message_bytes <= 4 << 20);
    }
    let last = &seen.last().expect("push").request;
    assert_eq!(
        latency_events(last).map(|(_, t)| t),
        Some(AggregationTemporality::Cumulative as i32)
    );
    let (form, temporality, count, bounds) = durations(last).expect("durations");
    assert_eq!(
        (form, temporality, count),
        ("explicit", AggregationTemporality::Cumulative as i32, 40)
    );
    assert!(bounds.iter().all(|b| b.contains(&0.3)), "{bounds:?}");
    // The spans carry the team's key too (and no dataset: Environments route by service).
    spans.wait_for_spans(40).await;
    let md = spans.metadata();
    assert!(
        md.iter()
            .all(|m| m.get("x-honeycomb-team").and_then(|v| v.to_str().ok()) == Some("hc-key-1"))
    );
    assert!(md.iter().all(|m| m.get("x-honeycomb-dataset").is_none()));
    assert!(!cujo.log().contains("hc-key-1"), "the key is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newrelic_preset_posts_delta_exponential_under_1mb_with_api_key() {
    let (addr, backend) = Backend::start().await;
    let spans = Downstream::start().await;
    // The span preset is OTLP/HTTP; the in-test span server speaks gRPC, so the section's
    // protocol wins there (as any value the section sets does).
    let yaml = format!(
        "{}  otlp:\n    preset: newrelic\n    api_key: nr-key-2\n    endpoint: \"http://{}\"\n    protocol: grpc\n",
        metrics_yaml(&format!(
            "    preset: newrelic\n    api_key: nr-key-2\n    endpoint: \"http://{addr}\"\n"
        )),
        spans.addr
    );
    let cujo = Cujo::start_yaml(&with_listeners(&yaml)).await;
    send(format!("http://{}", cujo.grpc), 40, 2).await;
    let seen = until_all_counted(&backend, 40, true).await;
    let mut histogram_events = 0;
    for s in &seen {
        assert_eq!(s.path, "/v1/metrics", "OTLP/HTTP");
        assert_eq!(s.headers["content-type"], "application/x-protobuf");
        assert_eq!(s.headers["api-key"], "nr-key-2");
        assert!(s.gzip, "gzip");
        assert!(s.message_bytes <= 1_000_000, "New Relic's 1 MB limit");
        if let Some((_, t)) = latency_events(&s.request) {
            assert_eq!(t, AggregationTemporality::Delta as i32);
        }
        if let Some((form, t, n, _)) = durations(&s.request) {
            assert_eq!(
                (form, t),
                ("exponential", AggregationTemporality::Delta as i32)
            );
            histogram_events += n;
        }
    }
    assert_eq!(histogram_events, 40, "the deltas add up to every event");
    spans.wait_for_spans(40).await;
    assert!(
        spans
            .metadata()
            .iter()
            .all(|m| m.get("api-key").and_then(|v| v.to_str().ok()) == Some("nr-key-2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datadog_intake_preset_posts_delta_with_dd_api_key_split_under_the_limit() {
    let (addr, backend) = Backend::start().await;
    let spans = Downstream::start().await;
    // 60 series and a 16 KiB limit: the push must go in parts, each under it, and the
    // deltas of all parts still add up to every event exactly once.
    let yaml = format!(
        "{}  otlp:\n    preset: datadog_agent\n    endpoint: \"http://{}\"\n",
        metrics_yaml(&format!(
            "    preset: datadog\n    api_key: dd-key-3\n    site: datadoghq.eu\n    endpoint: \"http://{addr}\"\n    max_request_size: 16KiB\n"
        )),
        spans.addr
    )
    .replace("dimensions: [user.tier]", "dimensions: [user.tier]\n    max_series: 100")
    // One push holds every series: none on a timer, the final one at shutdown after all
    // the events are counted (on a timer the events may spread over pushes small enough
    // not to split).
    .replace("interval: 200ms", "interval: 1h");
    let cujo = Cujo::start_yaml(&with_listeners(&yaml)).await;
    send(format!("http://{}", cujo.grpc), 240, 60).await;
    wait_for("240 latency events counted", || async {
        let n = support::latency_events(&cujo.metrics().await);
        (n == 240.0).then_some(())
    })
    .await;
    let (status, _cujo) = cujo.stop().await;
    assert!(status.success());
    let seen = until_all_counted(&backend, 240, true).await;
    assert!(
        seen.iter().any(|s| latency_events(&s.request).is_none()),
        "some parts hold other metrics only: the push was split"
    );
    let mut histogram_events = 0;
    for s in &seen {
        assert_eq!(s.path, "/v1/metrics");
        assert_eq!(s.headers["dd-api-key"], "dd-key-3");
        assert!(s.gzip);
        assert!(s.message_bytes <= 16 << 10, "{} bytes", s.message_bytes);
        if let Some((_, t)) = latency_events(&s.request) {
            assert_eq!(
                t,
                AggregationTemporality::Delta as i32,
                "the intake takes delta only"
            );
        }
        if let Some((form, t, n, _)) = durations(&s.request) {
            assert_eq!(
                (form, t),
                ("exponential", AggregationTemporality::Delta as i32)
            );
            histogram_events += n;
        }
    }
    assert_eq!(histogram_events, 240);
    // Spans go to the Agent's OTLP receiver, which holds the key: nothing to authenticate.
    spans.wait_for_spans(240).await;
    assert!(
        spans
            .metadata()
            .iter()
            .all(|m| m.get("dd-api-key").is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mackerel_preset_sends_cumulative_explicit_buckets_over_grpc_with_its_key() {
    let (addr, backend) = Backend::start().await;
    let yaml = metrics_yaml(&format!(
        "    preset: mackerel\n    api_key: mk-key-4\n    endpoint: \"http://{addr}\"\n"
    ));
    let cujo = Cujo::start_yaml(&with_listeners(&yaml)).await;
    send(format!("http://{}", cujo.grpc), 30, 3).await;
    let seen = until_all_counted(&backend, 30, false).await;
    for s in &seen {
        assert_eq!(s.path, GRPC_PATH);
        assert_eq!(s.headers["mackerel-api-key"], "mk-key-4");
        assert!(s.gzip);
    }
    let last = &seen.last().expect("push").request;
    let (form, temporality, count, bounds) = durations(last).expect("durations");
    assert_eq!(
        (form, temporality, count),
        ("explicit", AggregationTemporality::Cumulative as i32, 30)
    );
    assert!(bounds.iter().all(|b| b.contains(&0.3)));
    // Mackerel keeps min and max of a histogram: cumulative points carry them.
    let Some(metric::Data::Histogram(h)) =
        &find(last, "cujo.cuj.duration").and_then(|m| m.data.clone())
    else {
        panic!("explicit");
    };
    assert!(
        h.data_points
            .iter()
            .all(|p| p.min.is_some() && p.max.is_some())
    );
    drop(cujo);
}

#[test]
fn a_span_preset_for_a_metrics_only_backend_is_refused_naming_the_key() {
    let dir = support::Scratch::new("cujo-presets");
    let path = dir.join("cujo.yaml");
    std::fs::write(
        &path,
        "receivers: { otlp: { grpc: { endpoint: \"127.0.0.1:0\" } } }\nexporters:\n  otlp: { preset: mackerel, api_key: k }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cujo"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("cujo check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("exporters.otlp.preset: mackerel takes metrics only, not traces"),
        "{text}"
    );
}

/// The receivers and admin listener on ports the OS picks, before `yaml`.
fn with_listeners(yaml: &str) -> String {
    let yaml = yaml.replacen(
        "exporters:\n",
        "exporters:\n  prometheus: { endpoint: \"127.0.0.1:0\" }\n",
        1,
    );
    format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    http: {{ endpoint: \"127.0.0.1:0\" }}\n{yaml}"
    )
}
