//! Faults: the downstream goes away, slows down or refuses; cujo is stopped under load.
//! In every case each accepted span is delivered exactly once or counted as dropped with a
//! reason: `accepted = exported + dropped{reason} + in_flight`.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{
    Cujo, Downstream, DownstreamMode, RetryingClient, assert_accounting, exporter_yaml,
    make_request, span_keys, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_down_then_back_delivers_every_span_once() {
    let mut downstream = Downstream::start().await;
    downstream.stop().await;
    let cujo = Cujo::start(&exporter_yaml(downstream.addr, "")).await;
    let mut client = RetryingClient::connect(cujo.grpc).await;
    let mut sent = Vec::new();
    for seed in 0..20 {
        let req = make_request("checkout", seed, 50);
        client
            .send(&req)
            .await
            .expect("accepted while downstream is down");
        sent.extend(span_keys(&req));
    }
    wait_for("failed export attempts", || async {
        (cujo.metric("cujo_exporter_failed_attempts_total").await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(downstream.span_count(), 0);
    assert_accounting(&cujo).await;
    downstream.restart().await;
    downstream.wait_for_spans(sent.len()).await;
    let got: Vec<_> = downstream.requests().iter().flat_map(span_keys).collect();
    let unique: HashSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), sent.len(), "exactly once");
    assert_eq!(unique, sent.iter().cloned().collect::<HashSet<_>>());
    wait_for("nothing in flight", || async {
        (cujo.metric("cujo_in_flight_spans").await == 0.0).then_some(())
    })
    .await;
    let (accepted, exported, dropped) = assert_accounting(&cujo).await;
    assert_eq!((accepted, exported, dropped), (1000.0, 1000.0, 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_downstream_makes_admission_refuse_and_clients_retry_without_loss() {
    let downstream = Downstream::start().await;
    downstream.set_mode(DownstreamMode::Slow(Duration::from_millis(200)));
    // A budget of a few requests for the exporter; the receivers' share holds the four
    // clients' connections (128 KiB each) and a request each.
    let cujo = Cujo::start_yaml(&format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\", max_recv_msg_size: 64KiB }}\n    \
         http: {{ endpoint: \"127.0.0.1:0\", max_request_body_size: 64KiB }}\n\
         admission: {{ max_in_flight: 1MiB, retry_after: 1s, shares: {{ receivers: 80% }} }}\n{}\n  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
        exporter_yaml(downstream.addr, "    concurrency: 1\n")
    ))
    .await;
    let rss_before = cujo.rss_bytes();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let sent = sent.clone();
        let addr = cujo.grpc;
        tasks.push(tokio::spawn(async move {
            let mut client = RetryingClient::connect(addr).await;
            for i in 0..10u64 {
                let req = make_request("checkout", c * 1000 + i, 200);
                client.send(&req).await.expect("eventually accepted");
                sent.lock().expect("lock").extend(span_keys(&req));
            }
            client.refusals
        }));
    }
    let mut refusals = 0;
    for t in tasks {
        refusals += t.await.expect("client task");
    }
    assert!(
        refusals > 0,
        "an exporter share of ~100 KiB against a slow downstream must refuse some requests"
    );
    let refused = cujo
        .metric("cujo_receiver_requests_total{transport=\"grpc\",outcome=\"refused\"}")
        .await;
    assert_eq!(refused, refusals as f64, "every refusal is counted");
    let sent = sent.lock().expect("lock").clone();
    downstream.set_mode(DownstreamMode::Accept);
    downstream.wait_for_spans(sent.len()).await;
    let got: HashSet<_> = downstream.requests().iter().flat_map(span_keys).collect();
    assert_eq!(
        got,
        sent.iter().cloned().collect::<HashSet<_>>(),
        "nothing lost"
    );
    assert_eq!(downstream.span_count(), sent.len(), "nothing duplicated");
    let grown = cujo.rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "memory stays bounded (grew {grown} bytes)"
    );
    assert_accounting(&cujo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_and_exhausted_retries_are_counted_as_dropped() {
    let downstream = Downstream::start().await;
    downstream.set_mode(DownstreamMode::Reject);
    let cujo = Cujo::start(&exporter_yaml(
        downstream.addr,
        "    retry: { initial_interval: 20ms, max_interval: 50ms, max_elapsed: 300ms }\n",
    ))
    .await;
    let mut client = RetryingClient::connect(cujo.grpc).await;
    client
        .send(&make_request("checkout", 1, 30))
        .await
        .expect("accepted");
    wait_for("rejected spans dropped", || async {
        (cujo
            .metric("cujo_dropped_spans_total{reason=\"rejected\"}")
            .await
            == 30.0)
            .then_some(())
    })
    .await;
    downstream.set_mode(DownstreamMode::Unavailable);
    client
        .send(&make_request("checkout", 2, 20))
        .await
        .expect("accepted");
    wait_for("retries exhausted", || async {
        (cujo
            .metric("cujo_dropped_spans_total{reason=\"retries_exhausted\"}")
            .await
            == 20.0)
            .then_some(())
    })
    .await;
    assert!(
        cujo.log().contains("reason=retries_exhausted"),
        "a log line says why"
    );
    let (accepted, exported, dropped) = assert_accounting(&cujo).await;
    assert_eq!((accepted, exported, dropped), (50.0, 0.0, 50.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_closed_loop_load_delivers_every_acknowledged_span() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&exporter_yaml(downstream.addr, "")).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let acked = acked.clone();
        let addr = cujo.grpc;
        tasks.push(tokio::spawn(async move {
            let mut client = RetryingClient::connect(addr).await;
            // Closed loop until cujo stops answering (bounded in count).
            for i in 0..100_000u64 {
                let req = make_request("checkout", c * 1_000_000 + i, 100);
                match client.send(&req).await {
                    Ok(()) => acked.lock().expect("lock").extend(span_keys(&req)),
                    Err(_) => break,
                }
            }
        }));
    }
    wait_for("load under way", || async {
        (acked.lock().expect("lock").len() >= 20_000).then_some(())
    })
    .await;
    let (status, cujo) = cujo.stop().await;
    assert!(
        status.success(),
        "exit 0 after SIGTERM: {status}\n{}",
        cujo.log()
    );
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    let got: HashSet<_> = downstream.requests().iter().flat_map(span_keys).collect();
    let missing = acked.iter().filter(|k| !got.contains(*k)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged spans lost",
        acked.len()
    );
    assert!(cujo.log().contains("cujo stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_bounds_exit_and_counts_what_was_not_sent() {
    let mut downstream = Downstream::start().await;
    downstream.stop().await;
    let cujo = Cujo::start(&format!(
        "shutdown: {{ timeout: 500ms }}\n{}",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    let mut client = RetryingClient::connect(cujo.grpc).await;
    client
        .send(&make_request("checkout", 7, 40))
        .await
        .expect("accepted");
    let (status, cujo) = cujo.stop().await;
    assert!(status.success(), "exit 0: {status}");
    let log = cujo.log();
    assert!(
        log.contains("reason=shutdown") && log.contains("spans=40"),
        "{log}"
    );
    assert!(log.contains("dropped_shutdown=40"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_downstreams_retry_info_sets_the_retry_delay() {
    let downstream = Downstream::start().await;
    downstream.set_mode(DownstreamMode::UnavailableOnceRetryAfter(
        Duration::from_millis(800),
    ));
    // cujo's own backoff would retry after ~10 ms; the server asks for 800 ms.
    let cujo = Cujo::start(&exporter_yaml(
        downstream.addr,
        "    retry: { initial_interval: 10ms, max_interval: 20ms, max_elapsed: 1m }\n",
    ))
    .await;
    let mut client = RetryingClient::connect(cujo.grpc).await;
    client
        .send(&make_request("checkout", 3, 20))
        .await
        .expect("accepted");
    downstream.wait_for_spans(20).await;
    let attempts = downstream.attempts();
    assert_eq!(attempts.len(), 2, "one refusal, one retry");
    let waited = attempts[1] - attempts[0];
    assert!(
        waited >= Duration::from_millis(750),
        "retried after {waited:?}, before the server's 800 ms"
    );
    assert_accounting(&cujo).await;
}

/// The exporter's share of the memory budget counts what its batches hold, no more: once a
/// full batch is sent, the bytes of the requests wholly in it go back, even while later
/// spans wait in the batch being built. (It once kept every request since the batch being
/// built was last empty, so under steady input its share filled with bytes already sent,
/// and the receivers refused well below saturation.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporters_account_gives_back_what_its_sent_batches_held() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!(
        "exporters:\n  otlp:\n    endpoint: \"http://{}\"\n    protocol: grpc\n    compression: none\n    concurrency: 1\n    batch: {{ max_spans: 10, timeout: 1h }}\n",
        downstream.addr
    ))
    .await;
    let used = "cujo_memory_used_bytes{component=\"exporter\"}";
    let mut client = RetryingClient::connect(cujo.grpc).await;
    // Less than a batch: the request waits in the exporter, its bytes in the account.
    client
        .send(&make_request("checkout", 1, 7))
        .await
        .expect("accepted");
    let one = wait_for("the first request in the exporter's account", || async {
        let v = cujo.metric(used).await;
        (v > 0.0).then_some(v)
    })
    .await;
    // Eight more of the same size: 63 spans, six batches of 10 sent, and the last request's
    // 3 other spans wait for a seventh.
    for seed in 2..=9 {
        client
            .send(&make_request("checkout", seed, 7))
            .await
            .expect("accepted");
    }
    downstream.wait_for_spans(60).await;
    // What stays: the last request (its 3 spans still wait) and the encode buffers kept for
    // reuse, at most two with one sender, each about a batch of 10 spans. About 2.7 requests'
    // worth; the nine requests together would be over 9.
    wait_for("the sent batches' bytes to go back", || async {
        let sent = cujo.metric("cujo_exporter_sent_spans_total").await;
        (sent >= 60.0 && cujo.metric(used).await <= 5.0 * one).then_some(())
    })
    .await;
    assert_eq!(downstream.span_count(), 60, "the seventh batch waits");
    let (status, cujo) = cujo.stop().await;
    assert!(status.success(), "{status:?}\n{}", cujo.log());
    assert_eq!(downstream.span_count(), 63, "the rest go at shutdown");
}
