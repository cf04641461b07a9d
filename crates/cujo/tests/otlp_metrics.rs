//! OTLP metrics push end to end: CUJ traffic with known outcomes and durations, made by the
//! real OpenTelemetry SDK, through the real binary, pushed to a real OTLP metrics server
//! (tonic's generated `MetricsService`, or an HTTP `/v1/metrics` endpoint). The pushed counts
//! equal the exact counts of the traffic, dimensions keep their OpenTelemetry names, the
//! exponential histograms hold every event, and cumulative and delta pushes behave as the
//! OTLP data model says.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer, TracerProvider as _};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, metric, number_data_point,
};
use support::{Cujo, metric_value, string_attr, wait_for};

const CUJS: &str = r#"assembler: { decision_wait: 100ms, trace_timeout: 2s }
cujs:
  - name: post_message
    match:
      service.name: frontend-api
      span.name: "POST /v1/messages"
    dimensions: [user.tier]
    availability:
      bad:
        - status: error
    latency: { threshold: 300ms, measure: root }
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
      - { sli: latency, target: 99%, window: 30d }
"#;

const TRACES: u64 = 80;

/// What trace `i` is: (tier, error, root duration).
fn shape(i: u64) -> (&'static str, bool, Duration) {
    let tier = if i.is_multiple_of(3) { "gold" } else { "free" };
    (tier, i % 7 == 3, Duration::from_micros(20_000 + i * i * 97))
}

/// Exact counts: (tier, sli, outcome) → events.
fn exact_counts() -> HashMap<(&'static str, &'static str, &'static str), i64> {
    let mut want = HashMap::new();
    for i in 0..TRACES {
        let (tier, error, took) = shape(i);
        let avail = if error { "bad" } else { "good" };
        let fast = if took <= Duration::from_millis(300) {
            "good"
        } else {
            "bad"
        };
        *want.entry((tier, "availability", avail)).or_default() += 1;
        *want.entry((tier, "latency", fast)).or_default() += 1;
    }
    want
}

/// Sends the traffic with the SDK (roots with a child each).
async fn send(endpoint: String) {
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "frontend-api");
        let t = provider.tracer("api");
        let start = SystemTime::now() - Duration::from_secs(60);
        for i in 0..TRACES {
            let (tier, error, took) = shape(i);
            let mut root = t
                .span_builder("POST /v1/messages")
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .with_attributes([KeyValue::new("user.tier", tier)])
                .start(&t);
            if error {
                root.set_status(Status::error("boom"));
            }
            root.end_with_timestamp(start + took);
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
}

/// A push and its gRPC metadata or HTTP headers.
type Push = (ExportMetricsServiceRequest, HashMap<String, String>);

/// Every push received.
#[derive(Clone, Default)]
struct Received {
    pushes: Arc<Mutex<Vec<Push>>>,
    /// Calls still to refuse with UNAVAILABLE (retryable) before accepting.
    refuse: Arc<std::sync::atomic::AtomicUsize>,
}

impl Received {
    fn requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.pushes
            .lock()
            .expect("lock")
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.pushes
            .lock()
            .expect("lock")
            .first()
            .and_then(|(_, h)| h.get(name).cloned())
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .refuse
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(tonic::Status::unavailable("backend busy (test)"));
        }
        let headers = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        self.pushes
            .lock()
            .expect("lock")
            .push((request.into_inner(), headers));
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// A real OTLP/gRPC metrics server.
async fn grpc_sink(refuse: usize) -> (SocketAddr, Received) {
    let received = Received::default();
    received
        .refuse
        .store(refuse, std::sync::atomic::Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = MetricsServiceServer::new(received.clone())
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (addr, received)
}

/// An OTLP/HTTP metrics endpoint: `POST /v1/metrics`, protobuf, gzip.
async fn http_sink() -> (SocketAddr, Received) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let received = Received::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let r = r.clone();
            async move {
                let gzip = headers
                    .get("content-encoding")
                    .is_some_and(|v| v.as_bytes() == b"gzip");
                let raw = if gzip {
                    use std::io::Read as _;
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_end(&mut out)
                        .expect("gzip");
                    out
                } else {
                    body.to_vec()
                };
                let req: ExportMetricsServiceRequest =
                    prost::Message::decode(&raw[..]).expect("protobuf");
                let headers = headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                    .collect();
                r.pushes.lock().expect("lock").push((req, headers));
                let resp = prost::Message::encode_to_vec(&ExportMetricsServiceResponse {
                    partial_success: None,
                });
                (
                    StatusCode::OK,
                    [("content-type", "application/x-protobuf")],
                    resp,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, received)
}

fn find<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    req.resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

/// One `cujo.sli.events` point: ((tier, sli, outcome), value, start, time, temporality).
type EventPoint = ((String, String, String), i64, u64, u64, i32);

fn event_points(req: &ExportMetricsServiceRequest) -> Vec<EventPoint> {
    let Some(Metric {
        data: Some(metric::Data::Sum(sum)),
        ..
    }) = find(req, "cujo.sli.events")
    else {
        return Vec::new();
    };
    sum.data_points
        .iter()
        .map(|p| {
            let a = |k: &str| string_attr(&p.attributes, k).unwrap_or_default();
            assert!(
                p.attributes.iter().all(|kv| kv.key != "user_tier"),
                "dimensions keep their OpenTelemetry names"
            );
            let value = match p.value {
                Some(number_data_point::Value::AsInt(v)) => v,
                other => panic!("events are integers, got {other:?}"),
            };
            (
                (a("user.tier"), a("sli"), a("outcome")),
                value,
                p.start_time_unix_nano,
                p.time_unix_nano,
                sum.aggregation_temporality,
            )
        })
        .collect()
}

/// (tier → (count, sum seconds, bucket total, start, time)) of `cujo.cuj.duration`.
fn durations(req: &ExportMetricsServiceRequest) -> HashMap<String, (u64, f64, u64, u64, u64)> {
    let Some(Metric {
        data: Some(metric::Data::ExponentialHistogram(h)),
        unit,
        ..
    }) = find(req, "cujo.cuj.duration")
    else {
        return HashMap::new();
    };
    assert_eq!(unit, "s");
    h.data_points
        .iter()
        .map(|p| {
            let buckets = p.positive.as_ref().map_or(0, |b| {
                assert!(b.bucket_counts.len() <= 160, "at most 160 buckets");
                b.bucket_counts.iter().sum::<u64>()
            });
            (
                string_attr(&p.attributes, "user.tier").unwrap_or_default(),
                (
                    p.count,
                    p.sum.unwrap_or(0.0),
                    buckets + p.zero_count,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                ),
            )
        })
        .collect()
}

fn exact_duration_sums() -> HashMap<&'static str, (u64, f64)> {
    let mut out: HashMap<&str, (u64, f64)> = HashMap::new();
    for i in 0..TRACES {
        let (tier, _, took) = shape(i);
        let e = out.entry(tier).or_default();
        e.0 += 1;
        e.1 += took.as_secs_f64();
    }
    out
}

/// Totals of the latest push (cumulative) keyed like [`exact_counts`].
fn latest_totals(req: &ExportMetricsServiceRequest) -> HashMap<(String, String, String), i64> {
    event_points(req)
        .into_iter()
        .map(|(k, v, ..)| (k, v))
        .collect()
}

fn matches_exact(got: &HashMap<(String, String, String), i64>) -> bool {
    exact_counts()
        .iter()
        .all(|((t, s, o), n)| got.get(&(t.to_string(), s.to_string(), o.to_string())) == Some(n))
}

fn otlp_metrics_yaml(addr: SocketAddr, extra: &str) -> String {
    format!(
        "{CUJS}exporters:\n  otlp_metrics:\n    endpoint: \"http://{addr}\"\n    headers: {{ x-honeycomb-team: test-key, x-honeycomb-dataset: slis }}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cumulative_grpc_pushes_carry_the_exact_counts_and_every_latency() {
    let (addr, received) = grpc_sink(0).await;
    let cujo = Cujo::start(&otlp_metrics_yaml(
        addr,
        "    protocol: grpc\n    interval: 200ms\n    temporality: cumulative\n",
    ))
    .await;
    send(format!("http://{}", cujo.grpc)).await;

    let last = wait_for("a push with every event", || async {
        let reqs = received.requests();
        let last = reqs.last()?.clone();
        matches_exact(&latest_totals(&last)).then_some(last)
    })
    .await;
    let resource = last.resource_metrics[0]
        .resource
        .as_ref()
        .expect("resource");
    assert_eq!(
        string_attr(&resource.attributes, "service.name").as_deref(),
        Some("cujo")
    );
    assert!(string_attr(&resource.attributes, "service.instance.id").is_some());
    assert_eq!(
        last.resource_metrics[0].scope_metrics[0]
            .scope
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("cujo")
    );
    assert_eq!(
        received.header("x-honeycomb-team").as_deref(),
        Some("test-key")
    );
    assert_eq!(
        received.header("x-honeycomb-dataset").as_deref(),
        Some("slis")
    );

    // Every point of every push starts when cujo started.
    let reqs = received.requests();
    let starts: Vec<u64> = reqs
        .iter()
        .flat_map(event_points)
        .map(|(_, _, start, time, temporality)| {
            assert_eq!(temporality, AggregationTemporality::Cumulative as i32);
            assert!(start < time);
            start
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "one start time");

    // The histograms hold every event; the sums are the exact sums of the durations.
    let hist = durations(&last);
    for (tier, (count, sum)) in exact_duration_sums() {
        let (c, s, buckets, ..) = hist[tier];
        assert_eq!((c, buckets), (count, count), "{tier}");
        assert!((s - sum).abs() < 1e-6, "{tier}: sum {s} vs exact {sum}");
    }
    let Some(Metric {
        data: Some(metric::Data::Gauge(g)),
        ..
    }) = find(&last, "cujo.slo.objective")
    else {
        panic!("objective gauge");
    };
    assert!(g.data_points.iter().any(|p| {
        string_attr(&p.attributes, "sli").as_deref() == Some("availability")
            && p.value == Some(number_data_point::Value::AsDouble(0.999))
    }));

    // The same events' quantile on /metrics is within 0.1% of the exact one.
    let mut all: Vec<Duration> = (0..TRACES).map(|i| shape(i).2).collect();
    all.sort();
    let exact_p99 = all[(0.99 * TRACES as f64).ceil() as usize - 1].as_secs_f64();
    let m = cujo.metrics().await;
    let p99 = metric_value(
        &m,
        "cujo_cuj_latency_quantile_seconds{cuj=\"post_message\",q=\"0.99\"}",
    );
    assert!(
        (p99 - exact_p99).abs() / exact_p99 <= 0.001,
        "p99 {p99} vs exact {exact_p99}"
    );
    // cujo counts a push once the answer is back (the server may have recorded it first).
    wait_for("the delivered push counted", || async {
        let m = cujo.metrics().await;
        (metric_value(&m, "cujo_otlp_metrics_exports_total{outcome=\"delivered\"}") >= 1.0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_grpc_pushes_add_up_to_the_exact_counts_and_do_not_overlap() {
    // The backend refuses the first attempts (retryable): cujo retries, nothing is lost.
    let (addr, received) = grpc_sink(3).await;
    let cujo = Cujo::start(&otlp_metrics_yaml(
        addr,
        "    protocol: grpc\n    interval: 200ms\n    temporality: delta\n    compression: none\n",
    ))
    .await;
    send(format!("http://{}", cujo.grpc)).await;

    // Summed over every push, the deltas are the exact counts.
    let sum_of = |reqs: &[ExportMetricsServiceRequest]| {
        let mut total: HashMap<(String, String, String), i64> = HashMap::new();
        for r in reqs {
            for (k, v, ..) in event_points(r) {
                *total.entry(k).or_default() += v;
            }
        }
        total
    };
    let reqs = wait_for("deltas adding up to every event", || async {
        let reqs = received.requests();
        matches_exact(&sum_of(&reqs)).then_some(reqs)
    })
    .await;
    // One more push after that carries nothing new.
    let n = reqs.len();
    let reqs = wait_for("a push after the traffic", || async {
        let reqs = received.requests();
        (reqs.len() > n).then_some(reqs)
    })
    .await;
    assert!(matches_exact(&sum_of(&reqs)), "no event counted twice");
    let quiet = reqs.last().expect("push");
    assert!(event_points(quiet).iter().all(|(_, v, ..)| *v == 0));
    assert!(durations(quiet).values().all(|d| d.0 == 0));

    // Each push starts where the previous one ended, series by series.
    let mut previous_end: HashMap<(String, String, String), u64> = HashMap::new();
    for r in &reqs {
        for (k, _, start, time, temporality) in event_points(r) {
            assert_eq!(temporality, AggregationTemporality::Delta as i32);
            if let Some(end) = previous_end.get(&k) {
                assert_eq!(start, *end, "{k:?} starts where the last push ended");
            }
            assert!(time > start);
            previous_end.insert(k, time);
        }
    }
    // The histogram deltas hold every event exactly once.
    let mut counted: HashMap<String, u64> = HashMap::new();
    for r in &reqs {
        for (tier, (count, _, buckets, ..)) in durations(r) {
            assert_eq!(count, buckets);
            *counted.entry(tier).or_default() += count;
        }
    }
    for (tier, (count, _)) in exact_duration_sums() {
        assert_eq!(counted.get(tier), Some(&count), "{tier}");
    }
    let m = cujo.metrics().await;
    assert!(metric_value(&m, "cujo_otlp_metrics_export_attempts_failed_total") >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_push_happens_once_more_at_shutdown() {
    let (addr, received) = http_sink().await;
    // An hour between pushes: only the final push at shutdown can deliver these counts.
    let mut cujo = Cujo::start(&otlp_metrics_yaml(
        addr,
        "    protocol: http/protobuf\n    interval: 1h\n",
    ))
    .await;
    send(format!("http://{}", cujo.grpc)).await;
    wait_for("every event counted", || async {
        let m = cujo.metrics().await;
        let total: f64 = ["gold", "free"]
            .iter()
            .flat_map(|t| ["good", "bad"].map(|o| (t, o)))
            .map(|(t, o)| {
                metric_value(
                    &m,
                    &format!(
                        "cujo_sli_events_total{{cuj=\"post_message\",user_tier=\"{t}\",sli=\"availability\",outcome=\"{o}\"}}"
                    ),
                )
            })
            .sum();
        (total == TRACES as f64).then_some(())
    })
    .await;
    assert!(
        received.requests().is_empty(),
        "no push before the interval"
    );
    assert!(cujo.terminate().success());
    let reqs = received.requests();
    assert_eq!(reqs.len(), 1, "one final push");
    assert!(matches_exact(&latest_totals(&reqs[0])));
    assert_eq!(
        received.header("x-honeycomb-team").as_deref(),
        Some("test-key")
    );
    assert_eq!(
        received.header("content-type").as_deref(),
        Some("application/x-protobuf")
    );
}
