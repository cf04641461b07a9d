//! CUJ SLIs end to end: traces with known outcomes and durations, made by the real
//! OpenTelemetry SDK, through the real binary; the counts on `/metrics` equal the exact
//! counts of the same traces, and the output passes `promtool check metrics`.

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use support::{Cujo, Downstream, exporter_yaml, metric_value, wait_for};

const CUJS: &str = r#"assembler: { decision_wait: 200ms, trace_timeout: 2s }
cujs:
  - name: post_message
    match:
      service.name: frontend-api
      span.name: "POST /v1/messages"
      attributes: { cuj.name: post_message }
    dimensions: [user.tier]
    availability:
      bad:
        - status: error
        - { attribute: http.response.status_code, gte: 500 }
      exclude:
        - { attribute: http.response.status_code, gte: 400, lt: 500 }
    latency: { threshold: 300ms, measure: root }
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
      - { sli: latency, target: 99%, window: 30d }
    # Seconds of traffic: alerts are judged without the cold-start gate.
    alerts: { min_events: 0, min_coverage: 0% }
  - name: post_message_trace
    match: { attributes: { cuj.name: post_message } }
    dimensions: [user.tier]
    availability:
      scope: trace
      bad:
        - status: error
        - { attribute: http.response.status_code, gte: 500 }
      exclude:
        - { attribute: http.response.status_code, gte: 400, lt: 500 }
    latency: { threshold: 300ms, measure: root }
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
"#;

/// What trace `i` is: (tier, HTTP status, error status, root duration).
fn shape(i: u64) -> (&'static str, i64, bool, Duration) {
    let tier = if i.is_multiple_of(2) { "gold" } else { "free" };
    let code = match i % 10 {
        0 => 503,
        1 => 404,
        _ => 201,
    };
    (tier, code, i % 7 == 3, Duration::from_millis(40 + i * 13))
}

/// What the child span of trace `i` is: (error status, HTTP status it records, if any).
/// Only `scope: trace` looks at it.
fn child_shape(i: u64) -> (bool, Option<i64>) {
    let code = match i % 13 {
        4 => Some(502),
        9 => Some(429),
        _ => None,
    };
    (i % 11 == 5, code)
}

/// Sends `traces` traces shaped by [`shape`] and [`child_shape`] (plus one unmatched root)
/// with the SDK.
async fn send(endpoint: String, traces: u64) {
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "frontend-api");
        let t = provider.tracer("api");
        let start = SystemTime::now() - Duration::from_secs(60);
        for i in 0..traces {
            let (tier, code, error, took) = shape(i);
            let mut root = t
                .span_builder("POST /v1/messages")
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .with_attributes([
                    KeyValue::new("cuj.name", "post_message"),
                    KeyValue::new("user.tier", tier),
                    KeyValue::new("http.response.status_code", code),
                ])
                .start(&t);
            if error {
                root.set_status(Status::error("boom"));
            }
            let cx = Context::new().with_remote_span_context(root.span_context().clone());
            let (child_error, child_code) = child_shape(i);
            let mut child = t
                .span_builder("db")
                .with_start_time(start)
                .with_attributes(child_code.map(|c| KeyValue::new("http.response.status_code", c)))
                .start_with_context(&t, &cx);
            if child_error {
                child.set_status(Status::error("child failed"));
            }
            child.end_with_timestamp(start + took / 2);
            root.end_with_timestamp(start + took);
        }
        // A root of another journey: matched by no CUJ.
        let mut other = t.span_builder("GET /health").start(&t);
        other.end();
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_counts_equal_the_exact_counts_of_the_traffic() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!("{CUJS}{}", exporter_yaml(downstream.addr, ""))).await;
    const TRACES: u64 = 60;
    send(format!("http://{}", cujo.grpc), TRACES).await;
    downstream.wait_for_spans((TRACES * 2 + 1) as usize).await;

    // The exact counts, by the CUJ's own rules.
    let mut want: HashMap<(&str, &str, &str), f64> = HashMap::new();
    let mut excluded = 0.0;
    // `post_message_trace` (scope: trace): every span's status and code count.
    let mut want_trace: HashMap<(&str, &str), f64> = HashMap::new();
    let mut excluded_trace = 0.0;
    for i in 0..TRACES {
        let (tier, code, error, took) = shape(i);
        let (child_error, child_code) = child_shape(i);
        let codes = [Some(code), child_code];
        if codes.iter().flatten().any(|c| (400..500).contains(c)) {
            excluded_trace += 1.0;
        } else {
            let bad = error || child_error || codes.iter().flatten().any(|c| *c >= 500);
            *want_trace
                .entry((tier, if bad { "bad" } else { "good" }))
                .or_default() += 1.0;
        }
        if (400..500).contains(&code) {
            excluded += 1.0;
            continue;
        }
        let available = !error && code < 500;
        let fast = took <= Duration::from_millis(300);
        *want
            .entry((tier, "availability", if available { "good" } else { "bad" }))
            .or_default() += 1.0;
        *want
            .entry((tier, "latency", if fast { "good" } else { "bad" }))
            .or_default() += 1.0;
    }
    let metrics = wait_for("SLI events", || async {
        let m = cujo.metrics().await;
        let seen = metric_value(&m, "cujo_sli_excluded_total{cuj=\"post_message\"}");
        let seen_trace = metric_value(&m, "cujo_sli_excluded_total{cuj=\"post_message_trace\"}");
        (seen == excluded && seen_trace == excluded_trace).then_some(m)
    })
    .await;
    for tier in ["gold", "free"] {
        for sli in ["availability", "latency"] {
            for outcome in ["good", "bad"] {
                let sample = format!(
                    "cujo_sli_events_total{{cuj=\"post_message\",user_tier=\"{tier}\",sli=\"{sli}\",outcome=\"{outcome}\"}}"
                );
                let expected = want.get(&(tier, sli, outcome)).copied().unwrap_or(0.0);
                assert_eq!(
                    metric_value(&metrics, &sample),
                    expected,
                    "{sample}\n{metrics}"
                );
            }
        }
    }
    for tier in ["gold", "free"] {
        for outcome in ["good", "bad"] {
            let sample = format!(
                "cujo_sli_events_total{{cuj=\"post_message_trace\",user_tier=\"{tier}\",sli=\"availability\",outcome=\"{outcome}\"}}"
            );
            let expected = want_trace.get(&(tier, outcome)).copied().unwrap_or(0.0);
            assert_eq!(
                metric_value(&metrics, &sample),
                expected,
                "{sample}\n{metrics}"
            );
        }
    }
    assert!(
        want_trace.values().sum::<f64>() + excluded_trace == TRACES as f64
            && excluded_trace > excluded,
        "the children change which traces are excluded"
    );
    assert!(metrics.contains(
        "cujo_cuj_duration_seconds_bucket{cuj=\"post_message\",user_tier=\"gold\",le=\"0.3\"}"
    ));
    assert!(
        metrics
            .contains("cujo_slo_objective_ratio{cuj=\"post_message\",sli=\"availability\"} 0.999")
    );
    assert!(
        metrics.contains(
            "cujo_slo_alert{cuj=\"post_message\",sli=\"availability\",severity=\"page\"} 1"
        ),
        "errors well over budget page"
    );

    support::promtool_check_metrics(&metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_state_survives_a_restart_and_a_corrupt_state_file_is_kept_aside() {
    let dir = std::env::temp_dir().join(format!("cujo-slo-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("slo-state");
    let _ = std::fs::remove_file(&state);
    let downstream = Downstream::start().await;
    let config = format!(
        "{CUJS}slo: {{ state_file: \"{}\", save_interval: 1h }}\n{}",
        state.display(),
        exporter_yaml(downstream.addr, "")
    );
    let ratio = "cujo_slo_sli_ratio{cuj=\"post_message\",sli=\"availability\",window=\"1h\"}";
    let cujo = Cujo::start(&config).await;
    send(format!("http://{}", cujo.grpc), 20).await;
    let before = wait_for("SLI over the last hour", || async {
        let m = cujo.metrics().await;
        (availability_events(&m) == 18.0).then(|| metric_value(&m, ratio))
    })
    .await;
    let latency_count = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("cujo_cuj_duration_seconds_count{cuj=\"post_message\","))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let measured = latency_count(&cujo.metrics().await);
    assert!(measured > 0.0, "latencies measured");
    assert!(before > 0.0 && before < 1.0, "{before}");
    let (status, _) = cujo.stop().await;
    assert!(status.success());
    assert!(state.exists(), "saved at shutdown");

    // After a clean shutdown the windows come back, and the counters and histograms go on
    // where they were (a scrape sees no reset).
    let restarted = Cujo::start(&config).await;
    assert_eq!(
        restarted.metric(ratio).await,
        before,
        "the window came back"
    );
    let m = restarted.metrics().await;
    assert_eq!(availability_events(&m), 18.0, "the counters went on");
    assert_eq!(latency_count(&m), measured, "the histograms went on");
    assert!(
        restarted.log().contains("SLO state restored") && restarted.log().contains("totals=true"),
        "{}",
        restarted.log()
    );
    // SIGKILL: the windows come back from the file, the totals start from zero (the file may
    // be older than what was scraped, and a counter going back reads as a reset).
    drop(restarted);
    let after_kill = Cujo::start(&config).await;
    assert_eq!(
        after_kill.metric(ratio).await,
        before,
        "the window came back"
    );
    let m = after_kill.metrics().await;
    assert_eq!(
        availability_events(&m),
        0.0,
        "counters restart after a crash"
    );
    assert!(
        after_kill.log().contains("totals=false"),
        "{}",
        after_kill.log()
    );
    drop(after_kill);

    std::fs::write(&state, b"not a state file at all").expect("corrupt");
    let after_corruption = Cujo::start(&config).await;
    assert!(
        after_corruption
            .log()
            .contains("SLO state file not restored and kept aside"),
        "{}",
        after_corruption.log()
    );
    assert_eq!(
        after_corruption.metric(ratio).await,
        0.0,
        "empty windows: no ratio yet"
    );
    // The unreadable file is kept beside the path, whole; the next save does not touch it.
    let kept: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("slo-state.rejected-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "one file kept aside");
    assert_eq!(
        std::fs::read(kept[0].path()).expect("kept"),
        b"not a state file at all"
    );
    let (status, _) = after_corruption.stop().await;
    assert!(status.success());
    assert!(state.exists(), "a new state file saved at shutdown");
    assert_eq!(
        std::fs::read(kept[0].path()).expect("kept"),
        b"not a state file at all",
        "the kept file is never overwritten"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `post_message` availability events counted on `/metrics`.
fn availability_events(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("cujo_sli_events_total{cuj=\"post_message\",")
                && l.contains("sli=\"availability\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Valid `post_message` availability events in a `/api/v1/slos` answer.
fn events_in_report(body: &str) -> Option<u64> {
    let report: serde_json::Value = serde_json::from_str(body).ok()?;
    let cuj = report["cujs"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "post_message")?;
    Some(
        cuj["series"]
            .as_array()?
            .iter()
            .map(|s| {
                s["availability_good"].as_u64().unwrap_or(0)
                    + s["availability_bad"].as_u64().unwrap_or(0)
            })
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_polling_without_pause_hold_up_neither_spans_nor_events() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!("{CUJS}{}", exporter_yaml(downstream.addr, ""))).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Four readers, each asking again as soon as it has its answer: two on the JSON API,
    // two on /metrics.
    let pollers: Vec<_> = ["/api/v1/slos", "/metrics", "/api/v1/slos", "/metrics"]
        .into_iter()
        .map(|path| {
            let (stop, admin) = (stop.clone(), cujo.admin);
            tokio::spawn(async move {
                let (mut answered, mut failed) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match support::http_get(admin, path).await {
                        Some((200, _)) => answered += 1,
                        _ => failed += 1,
                    }
                }
                (path, answered, failed)
            })
        })
        .collect();
    const TRACES: u64 = 300;
    send(format!("http://{}", cujo.grpc), TRACES).await;
    downstream.wait_for_spans((TRACES * 2 + 1) as usize).await;
    // Every trace whose root code is not 4xx is a valid event (shape: i % 10 == 1 is 404).
    let valid = (0..TRACES).filter(|i| shape(*i).1 != 404).count() as u64;
    wait_for("every event in the report", || async {
        let (status, body) = support::http_get(cujo.admin, "/api/v1/slos").await?;
        (status == 200 && events_in_report(&body) == Some(valid)).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for poller in pollers {
        let (path, answered, failed) = poller.await.expect("poller");
        assert!(answered > 0, "{path} answered while spans flowed");
        assert_eq!(failed, 0, "{path} failed {failed} times");
    }
    let metrics = cujo.metrics().await;
    assert!(
        metrics.contains("cujo_sli_handoff_applied_total "),
        "the hand-off to the engine is on /metrics"
    );
    // The engine's thread and the assembler's shards are stages /healthz watches.
    for stage in ["sli-engine", "assembler-0", "exporter"] {
        assert!(
            metrics.contains(&format!("cujo_stage_up{{stage=\"{stage}\"}} 1")),
            "{stage} not up:\n{metrics}"
        );
    }
    support::assert_accounting(&cujo).await;
}

/// Percent-encodes a PromQL query for a URL's query string.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The SLI families' sample lines of a scrape (the part rendered once per snapshot).
fn sli_lines(scrape: &str) -> Vec<&str> {
    scrape
        .lines()
        .filter(|l| {
            [
                "cujo_sli_events_total",
                "cujo_sli_excluded_total",
                "cujo_cuj_duration",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect()
}

/// Readers that ask for gzip (Prometheus always does, browsers and `curl --compressed` too)
/// get the same bodies compressed: a real Prometheus server scrapes cujo and stores the exact
/// SLI counts, and curl's own inflater reads `/metrics` and `/api/v1/slos` back to what a
/// plain reader gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_readers_get_the_same_bodies_prometheus_stores_the_counts() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!("{CUJS}{}", exporter_yaml(downstream.addr, ""))).await;
    const TRACES: u64 = 40;
    send(format!("http://{}", cujo.grpc), TRACES).await;
    downstream.wait_for_spans((TRACES * 2 + 1) as usize).await;
    let valid = (0..TRACES).filter(|i| shape(*i).1 != 404).count() as u64;
    wait_for("every event in the report", || async {
        let (status, body) = support::http_get(cujo.admin, "/api/v1/slos").await?;
        (status == 200 && events_in_report(&body) == Some(valid)).then_some(())
    })
    .await;
    let plain = cujo.metrics().await;
    let gold_good = "cujo_sli_events_total{cuj=\"post_message\",user_tier=\"gold\",sli=\"availability\",outcome=\"good\"}";
    let want = metric_value(&plain, gold_good);
    assert!(want > 0.0, "{plain}");

    // curl, whose inflater is zlib's: the same SLI lines and the same report.
    let curl = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--compressed", "-D", "-"])
            .arg(format!("http://{}{path}", cujo.admin))
            .output();
        match out {
            Ok(out) if out.status.success() => String::from_utf8(out.stdout).expect("utf-8"),
            other => panic!("curl --compressed {path}: {other:?}"),
        }
    };
    let answer = curl("/metrics");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers");
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    assert_eq!(sli_lines(body), sli_lines(&plain));
    assert!(!sli_lines(body).is_empty());
    let answer = curl("/api/v1/slos");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers");
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let (_, plain_report) = support::http_get(cujo.admin, "/api/v1/slos")
        .await
        .expect("report");
    let cujs =
        |json: &str| serde_json::from_str::<serde_json::Value>(json).expect("JSON")["cujs"].clone();
    assert_eq!(cujs(body), cujs(&plain_report));

    // A real Prometheus server (Go's gzip reader, OpenMetrics negotiation) scrapes cujo.
    let dir = std::env::temp_dir().join(format!("cujo-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, scrape_timeout: 1s }}\n\
             scrape_configs:\n  - job_name: cujo\n    static_configs: [ {{ targets: ['{}'] }} ]\n",
            cujo.admin
        ),
    )
    .expect("write prometheus.yml");
    let web = support::free_addr();
    let prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut prometheus = match prometheus {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "prometheus (Debian package prometheus) is required under CI: {e}"
            );
            eprintln!("prometheus not installed: skipping the scrape by a real Prometheus");
            return;
        }
    };
    let query = |q: String| async move {
        let path = format!("/api/v1/query?query={}", url_encode(&q));
        let (status, body) = support::http_get(web, &path).await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let value = v["data"]["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        (status == 200).then_some(value)
    };
    let stored = wait_for("Prometheus to store a scrape of cujo", || async {
        query(gold_good.to_string()).await
    })
    .await;
    let up = query("up{job=\"cujo\"}".to_string()).await;
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(stored, want, "the count Prometheus stored");
    assert_eq!(up, Some(1.0), "the scrape succeeded");
}
