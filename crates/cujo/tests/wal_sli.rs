//! The write-ahead log and the SLIs, end to end with the real binary and the real
//! OpenTelemetry SDK: after a SIGKILL, the restored SLO state and the log's replay together
//! count every journey exactly once — the windows equal those of the uninterrupted run over
//! the same traffic, whether or not the last events made it into a save.

mod support;

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use support::{Cujo, Downstream, DownstreamMode, exporter_yaml, metric_value, wait_for};

const CUJS: &str = r#"assembler: { decision_wait: 200ms, trace_timeout: 5s }
cujs:
  - name: checkout
    match: { span.name: "POST /v1/checkout" }
    availability:
      bad: [ { status: error } ]
    objectives:
      - { sli: availability, target: 99%, window: 30d }
"#;

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cujo-wal-sli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Sends traces `from..to` (a root and a child each, the child first; every third root an
/// error) with the SDK.
async fn send(endpoint: String, from: u64, to: u64) {
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "shop");
        let tracer = provider.tracer("app");
        for i in from..to {
            let mut root = tracer
                .span_builder("POST /v1/checkout")
                .with_kind(SpanKind::Server)
                .with_attributes([KeyValue::new("order", i as i64)])
                .start(&tracer);
            let cx = Context::new().with_remote_span_context(root.span_context().clone());
            let mut child = tracer
                .span_builder("charge card")
                .with_kind(SpanKind::Client)
                .start_with_context(&tracer, &cx);
            child.end();
            if i % 3 == 0 {
                root.set_status(Status::error("declined"));
            }
            root.end();
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
}

/// The checkout CUJ's (good, valid) events over its 30-day window, from `/api/v1/slos`.
async fn window(cujo: &Cujo) -> (u64, u64) {
    let Some((200, body)) = support::http_get(cujo.admin, "/api/v1/slos").await else {
        panic!("GET /api/v1/slos failed");
    };
    let report: serde_json::Value = serde_json::from_str(&body).expect("report JSON");
    let cuj = report["cujs"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "checkout"))
        .expect("the checkout CUJ");
    let w = &cuj["objectives"][0]["windows"]
        .as_array()
        .and_then(|w| w.iter().max_by_key(|w| w["seconds"].as_u64()))
        .expect("windows")
        .clone();
    (
        w["good"].as_u64().unwrap_or(0),
        w["valid"].as_u64().unwrap_or(0),
    )
}

/// What the state file says: valid events in the CUJ's windows and replay keys listed.
fn saved(path: &std::path::Path) -> Option<(u64, usize)> {
    let bytes = std::fs::read(path).ok()?;
    let state = cujo_sli::state::decode(&bytes).ok()?;
    let cuj = state.cujs.iter().find(|c| c.name == "checkout")?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    let window = cuj
        .availability
        .counts(now_ms, std::time::Duration::from_secs(30 * 86_400))?;
    Some((window.valid, state.counted.len()))
}

/// (good, valid) of traces `0..n` shaped by [`send`].
fn expected(n: u64) -> (u64, u64) {
    let bad = (0..n).filter(|i| i % 3 == 0).count() as u64;
    (n - bad, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sli_windows_after_a_sigkill_and_replay_equal_the_uninterrupted_run() {
    let dir = scratch("exactly-once");
    let state = dir.join("slo.state");
    let downstream = Downstream::start().await;
    // Down: every span stays in the exporter's queue, so every request stays in the log.
    downstream.set_mode(DownstreamMode::Unavailable);
    let config = format!(
        "wal: {{ directory: \"{}\", commit_interval: 2ms }}\n{CUJS}slo: {{ state_file: \"{}\", save_interval: 1h }}\n{}",
        dir.join("wal").display(),
        state.display(),
        exporter_yaml(downstream.addr, "")
    );
    let cujo = Cujo::start(&config).await;
    let endpoint = format!("http://{}", cujo.grpc);

    // 30 journeys counted and saved: the file lists them. The save comes within
    // `MAX_UNSAVED` (5 s) whatever `save_interval` says: counted events hold their log
    // segments until a save lets them go.
    send(endpoint.clone(), 0, 30).await;
    wait_for("30 journeys counted", || async {
        (window(&cujo).await == expected(30)).then_some(())
    })
    .await;
    wait_for("a save that counts the 30 and lists them", || async {
        saved(&state)
            .filter(|&(valid, keys)| valid == 30 && keys == 30)
            .map(|_| ())
    })
    .await;
    // 15 more, counted; the kill comes right after, most likely before the next save (so
    // the replay must count them).
    send(endpoint, 30, 45).await;
    wait_for("45 journeys counted", || async {
        (window(&cujo).await == expected(45)).then_some(())
    })
    .await;
    assert_eq!(downstream.spans_named("POST /v1/checkout"), 0, "down");
    drop(cujo); // SIGKILL

    // The restart restores the saved windows and replays the whole log: the 30 (or 45)
    // saved journeys are replayed and not counted again; those not saved are counted now.
    downstream.set_mode(DownstreamMode::Accept);
    let restarted = Cujo::start(&config).await;
    wait_for("every span downstream", || async {
        (downstream.spans_named("POST /v1/checkout") >= 45
            && downstream.spans_named("charge card") >= 45)
            .then_some(())
    })
    .await;
    let m = wait_for("the replayed journeys released and measured", || async {
        let m = restarted.metrics().await;
        let skipped = metric_value(&m, "cujo_sli_replay_skipped_events_total");
        let applied = metric_value(&m, "cujo_sli_handoff_applied_total");
        // Every replayed journey was either skipped or handed over.
        (skipped + applied >= 45.0).then_some(m)
    })
    .await;
    assert_eq!(
        window(&restarted).await,
        expected(45),
        "the uninterrupted run's windows: nothing counted twice, nothing lost\n{}",
        restarted.log()
    );
    assert!(
        restarted.log().contains("counted_events="),
        "{}",
        restarted.log()
    );
    assert!(
        metric_value(&m, "cujo_sli_replay_skipped_events_total") >= 30.0,
        "the saved journeys were skipped: {m}"
    );
    assert_eq!(metric_value(&m, "cujo_sli_replay_keys_dropped_total"), 0.0);

    // Once the replayed segments are exported and gone, a clean restart keeps the windows
    // and replays nothing.
    wait_for("the replayed segments deleted", || async {
        (restarted.metric("cujo_wal_live_segments").await <= 1.0).then_some(())
    })
    .await;
    let status = restarted.stop().await.0;
    assert!(status.success());
    let again = Cujo::start(&config).await;
    assert_eq!(window(&again).await, expected(45));
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}
