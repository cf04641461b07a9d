//! The admin listener: `/metrics` is valid Prometheus text (checked by the real `promtool`),
//! `/healthz` and `/readyz` answer (every stage up), and `cujo check` reports config errors by file and key.

mod support;

use std::process::Command;

use support::{Cujo, Downstream, RetryingClient, exporter_yaml, http_get, make_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_health_endpoints_answer() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&exporter_yaml(downstream.addr, "")).await;
    let mut client = RetryingClient::connect(cujo.grpc).await;
    client
        .send(&make_request("checkout", 1, 10))
        .await
        .expect("accepted");
    downstream.wait_for_spans(10).await;
    let metrics = cujo.metrics().await;
    for family in [
        "cujo_receiver_requests_total",
        "cujo_receiver_spans_total",
        "cujo_exporter_sent_spans_total",
        "cujo_dropped_spans_total",
        "cujo_exporter_queue_spans",
        "cujo_admission_in_flight_bytes",
        "cujo_in_flight_spans",
        "cujo_stage_up",
        "cujo_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{metrics}"
        );
    }
    support::promtool_check_metrics(&metrics);
    // Every stage of this pipeline (assembler off) runs under its name.
    for stage in ["otlp-grpc", "otlp-http", "exporter", "admin"] {
        assert!(
            metrics.contains(&format!("cujo_stage_up{{stage=\"{stage}\"}} 1")),
            "{stage} not up:\n{metrics}"
        );
    }
    assert_eq!(
        http_get(cujo.admin, "/healthz").await.map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        http_get(cujo.admin, "/readyz").await.map(|r| r.0),
        Some(200)
    );
}

#[test]
fn check_command_names_file_and_key() {
    let dir = support::Scratch::new("cujo-check");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "exporters:\n  otlp:\n    endpoint: \"https://api.honeycomb.io:443\"\n    batch: { max_spans: 100, timeout: later }\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_cujo"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .expect("run cujo check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml: exporters.otlp.batch.timeout: expected a duration"),
        "{err}"
    );
    for example in ["default.yaml", "sidecar.yaml", "gateway-honeycomb.yaml"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/").to_string() + example;
        let out = Command::new(env!("CARGO_BIN_EXE_cujo"))
            .args(["check", "--config", &path])
            .env("HONEYCOMB_API_KEY", "test")
            .output()
            .expect("run cujo check");
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
