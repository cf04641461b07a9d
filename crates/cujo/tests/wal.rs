//! The write-ahead log, end to end with the real binary and the real OpenTelemetry SDK:
//! spans acknowledged while the downstream is down survive a SIGKILL and arrive once cujo
//! restarts; a full log refuses retryably and says why; a directory cujo cannot use stops
//! it at start, naming the path.

mod support;

use std::process::Command;

use support::{Cujo, Downstream, DownstreamMode, Sdk, exporter_yaml, metric_value, wait_for};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cujo-wal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Spans accepted on `/metrics`, by every transport (the replayed ones are `wal`).
fn accepted(metrics: &str, transport: &str) -> f64 {
    metric_value(
        metrics,
        &format!("cujo_receiver_spans_total{{transport=\"{transport}\",outcome=\"accepted\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_span_arrives_after_a_sigkill() {
    let dir = scratch("sigkill");
    let downstream = Downstream::start().await;
    downstream.set_mode(DownstreamMode::Unavailable);
    let config = format!(
        "wal: {{ directory: \"{}\", commit_interval: 2ms }}\n{}",
        dir.join("wal").display(),
        exporter_yaml(downstream.addr, "")
    );
    let cujo = Cujo::start(&config).await;
    // The SDK's exporter is answered only once the spans are on disk.
    support::sdk_send(&cujo, Sdk::Grpc, Vec::new(), "shop", "durable", 120).await;
    support::sdk_send(&cujo, Sdk::Http, Vec::new(), "shop", "durable", 80).await;
    let m = wait_for("200 spans acknowledged", || async {
        let m = cujo.metrics().await;
        (accepted(&m, "grpc") + accepted(&m, "http") == 200.0).then_some(m)
    })
    .await;
    assert!(
        metric_value(&m, "cujo_wal_appended_records_total") >= 2.0,
        "{m}"
    );
    assert!(metric_value(&m, "cujo_wal_fsyncs_total") >= 1.0);
    assert_eq!(
        downstream.spans_named("durable"),
        0,
        "the downstream is down"
    );
    // SIGKILL: nothing is drained, nothing is saved.
    drop(cujo);

    downstream.set_mode(DownstreamMode::Accept);
    let restarted = Cujo::start(&config).await;
    wait_for("every acknowledged span downstream", || async {
        (downstream.spans_named("durable") >= 200).then_some(())
    })
    .await;
    let m = restarted.metrics().await;
    assert_eq!(accepted(&m, "wal"), 200.0, "replayed as received: {m}");
    assert!(metric_value(&m, "cujo_wal_replayed_records_total") >= 2.0);
    assert!(
        restarted.log().contains("write-ahead log replayed"),
        "{}",
        restarted.log()
    );
    // Exported, so the replayed segments go: only the one appended to now stays.
    wait_for("the replayed segments deleted", || async {
        let m = restarted.metrics().await;
        (metric_value(&m, "cujo_wal_segments_deleted_total") >= 1.0
            && metric_value(&m, "cujo_wal_live_segments") <= 1.0)
            .then_some(())
    })
    .await;
    // A clean stop after that leaves nothing to replay: the next start sends nothing again.
    let status = restarted.stop().await.0;
    assert!(status.success());
    let before = downstream.spans_named("durable");
    let again = Cujo::start(&config).await;
    let m = again.metrics().await;
    assert_eq!(accepted(&m, "wal"), 0.0, "nothing left to replay: {m}");
    assert_eq!(downstream.spans_named("durable"), before);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_refuses_retryably_and_counts_why() {
    let dir = scratch("full");
    let downstream = Downstream::start().await;
    downstream.set_mode(DownstreamMode::Unavailable);
    // Receivers that take 8 KiB requests, a log of 256 KiB: it fills in a few dozen.
    let config = format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\", max_recv_msg_size: 8KiB }}\n    http: {{ endpoint: \"127.0.0.1:0\", max_request_body_size: 8KiB }}\nwal: {{ directory: \"{}\", max_size: 256KiB, segment_size: 128KiB, max_record_size: 72KiB, max_pending: 80KiB }}\n{}  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
        dir.join("wal").display(),
        exporter_yaml(downstream.addr, "")
    );
    let cujo = Cujo::start_yaml(&config).await;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let mut client = TraceServiceClient::connect(format!("http://{}", cujo.grpc))
        .await
        .expect("connect");
    let mut refused = None;
    for seed in 0..400u64 {
        let request = support::make_request("shop", seed, 20);
        if let Err(status) = client.export(request).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("a 256KiB log fills up while the downstream is down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("write-ahead log"), "{status:?}");
    let m = cujo.metrics().await;
    assert!(
        metric_value(&m, "cujo_wal_refused_total{reason=\"full\"}") >= 1.0,
        "{m}"
    );
    drop(cujo);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_directory_cujo_cannot_use_stops_it_at_start_naming_the_path() {
    let dir = scratch("unusable");
    let file = dir.join("not-a-directory");
    std::fs::write(&file, b"x").expect("file");
    let config = dir.join("cujo.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers: {{ otlp: {{ grpc: {{ endpoint: \"127.0.0.1:0\" }} }} }}\nwal: {{ directory: \"{}\" }}\n",
            file.display()
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_cujo"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run cujo");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Held traces come back whole: children sent before their roots, released and propagated,
/// then stuck behind a downstream that is down when cujo is killed, are replayed through
/// the assembler after the restart and arrive with their root's journey attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_traces_are_reassembled_and_propagated() {
    use opentelemetry::trace::{SpanKind, TraceContextExt as _, Tracer as _, TracerProvider as _};
    use opentelemetry::{Context, KeyValue};
    let dir = scratch("propagate");
    let downstream = Downstream::start().await;
    downstream.set_mode(DownstreamMode::Unavailable);
    let config = format!(
        "wal: {{ directory: \"{}\" }}\nassembler: {{ decision_wait: 200ms, trace_timeout: 5s }}\npropagate: {{ attributes: [\"cuj.*\", \"user.tier\"] }}\n{}",
        dir.join("wal").display(),
        exporter_yaml(downstream.addr, "")
    );
    let cujo = Cujo::start(&config).await;
    let endpoint = format!("http://{}", cujo.grpc);
    tokio::task::spawn_blocking(move || {
        // Each span is exported as it ends: the children reach cujo before their root.
        let provider = support::sdk_provider(endpoint, "checkout");
        let tracer = provider.tracer("app");
        for i in 0..20 {
            let root = tracer
                .span_builder("POST /v1/checkout")
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("cuj.name", "checkout"),
                    KeyValue::new("user.tier", if i % 2 == 0 { "gold" } else { "free" }),
                ])
                .start(&tracer);
            let cx = Context::new()
                .with_remote_span_context(opentelemetry::trace::Span::span_context(&root).clone());
            for name in ["INSERT orders", "charge card"] {
                let mut child = tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Client)
                    .start_with_context(&tracer, &cx);
                opentelemetry::trace::Span::end(&mut child);
            }
            let mut root = root;
            opentelemetry::trace::Span::end(&mut root);
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
    wait_for("60 spans acknowledged", || async {
        let m = cujo.metrics().await;
        (accepted(&m, "grpc") == 60.0).then_some(())
    })
    .await;
    drop(cujo);

    downstream.set_mode(DownstreamMode::Accept);
    let _restarted = Cujo::start(&config).await;
    wait_for("the 40 children downstream", || async {
        (downstream.spans_named("INSERT orders") >= 20
            && downstream.spans_named("charge card") >= 20)
            .then_some(())
    })
    .await;
    let children: Vec<_> = downstream
        .spans()
        .into_iter()
        .filter(|s| s.span.name != "POST /v1/checkout")
        .collect();
    assert!(children.len() >= 40);
    for child in &children {
        assert_eq!(
            child.attr("cuj.name").as_deref(),
            Some("checkout"),
            "{:?}",
            child.span.name
        );
        assert!(child.attr("user.tier").is_some(), "{:?}", child.span.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
