//! The OTLP exporter over TLS: a downstream with a certificate from a private CA is trusted
//! through `exporters.otlp.tls.ca_file`, and refused (retryably, nothing dropped) without it.

mod support;

use support::{Cujo, Downstream, RetryingClient, make_request, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_tls_to_a_downstream_signed_by_a_private_ca() {
    let (ca_pem, cert_pem, key_pem) = support::private_ca();
    let downstream = Downstream::start_tls(cert_pem, key_pem).await;
    let dir = std::env::temp_dir().join(format!("cujo-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write ca");
    let endpoint = format!("https://localhost:{}", downstream.addr.port());

    let trusted = Cujo::start(&format!(
        "exporters:\n  otlp:\n    endpoint: \"{endpoint}\"\n    tls: {{ ca_file: \"{}\" }}\n    batch: {{ max_spans: 100, timeout: 20ms }}\n",
        ca_file.display()
    ))
    .await;
    let mut client = RetryingClient::connect(trusted.grpc).await;
    client
        .send(&make_request("checkout", 1, 25))
        .await
        .expect("accepted");
    downstream.wait_for_spans(25).await;

    // Without the CA the handshake fails: retried, counted as failed attempts, not dropped.
    let untrusted = Cujo::start(&format!(
        "exporters:\n  otlp:\n    endpoint: \"{endpoint}\"\n    batch: {{ max_spans: 100, timeout: 20ms }}\n    retry: {{ initial_interval: 20ms, max_interval: 50ms, max_elapsed: 1m }}\n"
    ))
    .await;
    let mut client = RetryingClient::connect(untrusted.grpc).await;
    client
        .send(&make_request("checkout", 2, 10))
        .await
        .expect("accepted");
    wait_for("failed TLS attempts", || async {
        (untrusted
            .metric("cujo_exporter_failed_attempts_total")
            .await
            >= 2.0)
            .then_some(())
    })
    .await;
    assert_eq!(untrusted.metric("cujo_in_flight_spans").await, 10.0);
    assert!(
        untrusted.log().contains("certificate"),
        "the log names the TLS problem"
    );
    assert_eq!(downstream.span_count(), 25);
}

#[test]
fn a_missing_ca_file_is_a_clear_start_up_error() {
    let dir = std::env::temp_dir().join(format!("cujo-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("cujo.yaml");
    std::fs::write(
        &config,
        "receivers:\n  otlp:\n    grpc: { endpoint: \"127.0.0.1:0\" }\nexporters:\n  otlp:\n    endpoint: \"https://localhost:4317\"\n    tls: { ca_file: \"/nonexistent/ca.pem\" }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cujo"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run cujo");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exporters.otlp.tls.ca_file \"/nonexistent/ca.pem\""),
        "{err}"
    );
}
