//! The SLO status API end to end: traces with known outcomes, made by the real OpenTelemetry
//! SDK, through the real binary; `GET /api/v1/slos`, the gRPC `cujo.v1.SloService` (the
//! generated tonic client) and the real `cujo status` deploy gate all report the exact counts
//! and budgets of that traffic.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Output};

use cujo_slo::surfaces::status::grpc::proto::GetStatusRequest;
use cujo_slo::surfaces::status::grpc::proto::slo_service_client::SloServiceClient;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer, TracerProvider as _};
use serde_json::Value;
use support::{Cujo, Downstream, exporter_yaml, free_addr, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CUJS: &str = r#"assembler: { decision_wait: 200ms, trace_timeout: 2s }
slo: { trace_link: "http://jaeger.example.com:16686/trace/{trace_id}?start={start}" }
cujs:
  - name: post_message
    runbook: https://wiki.example.com/runbooks/post_message
    match:
      service.name: frontend-api
      span.name: "POST /v1/messages"
      attributes: { cuj.name: post_message }
    dimensions: [user.tier]
    availability:
      bad: [ { status: error } ]
    latency: { threshold: 10s, measure: root }
    objectives:
      - { sli: availability, target: 80%, window: 30d }
      - { sli: latency, target: 99%, window: 7d }
  - name: checkout
    match:
      service.name: frontend-api
      span.name: "POST /v1/checkout"
      attributes: { cuj.name: checkout }
    availability:
      bad: [ { status: error } ]
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
"#;

const POSTS: u64 = 100;
/// Every tenth post fails; all of them are even, so all are `gold`.
const FAILED_POSTS: u64 = 10;
const CHECKOUTS: u64 = 20;

/// Sends the posts (tier `gold` for even `i`, `free` for odd; error when `i % 10 == 0`) and the
/// checkouts (all good) as root spans with the SDK.
async fn send(endpoint: String) {
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "frontend-api");
        let t = provider.tracer("api");
        for i in 0..POSTS {
            let tier = if i % 2 == 0 { "gold" } else { "free" };
            let mut root = t
                .span_builder("POST /v1/messages")
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("cuj.name", "post_message"),
                    KeyValue::new("user.tier", tier),
                ])
                .start(&t);
            if i % 10 == 0 {
                root.set_status(Status::error("boom"));
            }
            root.end();
        }
        for _ in 0..CHECKOUTS {
            let mut root = t
                .span_builder("POST /v1/checkout")
                .with_kind(SpanKind::Server)
                .with_attributes([KeyValue::new("cuj.name", "checkout")])
                .start(&t);
            root.end();
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
}

/// GET over HTTP/1.0: (status, content-type, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8(buf).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

async fn slos(addr: SocketAddr, query: &str) -> Value {
    let (status, content_type, body) = get(addr, &format!("/api/v1/slos{query}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json");
    serde_json::from_str(&body).expect("JSON")
}

fn cuj<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["cujs"]
        .as_array()
        .expect("cujs")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no CUJ {name} in {report}"))
}

fn window<'a>(objective: &'a Value, label: &str) -> &'a Value {
    objective["windows"]
        .as_array()
        .expect("windows")
        .iter()
        .find(|w| w["window"] == label)
        .unwrap_or_else(|| panic!("no window {label} in {objective}"))
}

/// The budget left when `bad` of `valid` events failed against `target`.
fn budget_left(bad: u64, valid: u64, target: f64) -> f64 {
    1.0 - (bad as f64 / valid as f64) / (1.0 - target)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Runs the real `cujo status` with `args`.
async fn gate(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cujo"))
            .arg("status")
            .args(&args)
            .env_remove("CUJO_STATUS_ENDPOINT")
            .output()
            .expect("run cujo status")
    })
    .await
    .expect("join")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_grpc_and_the_deploy_gate_report_the_exact_traffic() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!("{CUJS}{}", exporter_yaml(downstream.addr, ""))).await;
    send(format!("http://{}", cujo.grpc)).await;

    let report = wait_for("every trace counted in the 5m windows", || async {
        let r = slos(cujo.admin, "").await;
        let posts = &window(&cuj(&r, "post_message")["objectives"][0], "5m")["valid"];
        let checkouts = &window(&cuj(&r, "checkout")["objectives"][0], "5m")["valid"];
        (*posts == POSTS && *checkouts == CHECKOUTS).then_some(r)
    })
    .await;

    // JSON: the exact counts, and the budget the target leaves.
    let names: Vec<&str> = report["cujs"]
        .as_array()
        .expect("cujs")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["post_message", "checkout"], "configuration order");
    let post = cuj(&report, "post_message");
    let availability = &post["objectives"][0];
    assert_eq!(availability["sli"], "availability");
    assert_eq!(availability["target"], 0.8);
    assert_eq!(availability["window"], "30d");
    assert_eq!(availability["window_seconds"], 30 * 86400);
    let five = window(availability, "5m");
    assert_eq!(five["seconds"], 300);
    assert_eq!(five["good"], POSTS - FAILED_POSTS);
    assert_eq!(five["valid"], POSTS);
    assert_eq!(five["sli"], 0.9);
    let own = window(availability, "30d");
    assert_eq!(
        (own["good"].clone(), own["valid"].clone()),
        (90.into(), 100.into())
    );
    let budget = availability["budget_remaining"].as_f64().expect("budget");
    assert!(
        close(budget, budget_left(FAILED_POSTS, POSTS, 0.8)),
        "{budget}"
    );
    // Burning at half the sustainable rate: the rest of the budget lasts one more window.
    let burn = window(availability, "1h")["burn_rate"]
        .as_f64()
        .expect("burn");
    assert!(close(burn, 0.5), "{burn}");
    let exhaustion = availability["exhaustion_seconds"]
        .as_f64()
        .expect("exhaustion");
    assert!((exhaustion - 30.0 * 86400.0).abs() < 1.0, "{exhaustion}");
    assert_eq!(availability["page"], false);
    assert_eq!(availability["ticket"], false);
    let latency = &post["objectives"][1];
    assert_eq!(latency["sli"], "latency");
    assert_eq!(latency["budget_remaining"], 1.0, "every post was fast");
    // Series, worst first: every failure was gold.
    let series = post["series"].as_array().expect("series");
    assert_eq!(series.len(), 2, "{series:?}");
    assert_eq!(
        series[0]["dimensions"],
        serde_json::json!([["user.tier", "gold"]])
    );
    assert_eq!(series[0]["availability_good"], 40);
    assert_eq!(series[0]["availability_bad"], FAILED_POSTS);
    assert_eq!(
        series[1]["dimensions"],
        serde_json::json!([["user.tier", "free"]])
    );
    assert_eq!(series[1]["availability_good"], 50);
    assert_eq!(series[1]["availability_bad"], 0);
    // The last bad trace and its link through slo.trace_link, in the API and on the page.
    let trace_id = series[0]["last_bad_trace_id"]
        .as_str()
        .expect("a bad trace");
    let recorded_s = series[0]["last_bad_at_ms"].as_u64().expect("recorded at") / 1000;
    let trace_url = format!(
        "http://jaeger.example.com:16686/trace/{trace_id}?start={}",
        recorded_s - 3600
    );
    assert_eq!(series[0]["last_bad_trace_url"], trace_url.as_str());
    assert!(series[1]["last_bad_trace_url"].is_null());
    assert_eq!(
        post["runbook"],
        "https://wiki.example.com/runbooks/post_message"
    );
    // Without notifications: alert transitions are still evaluated, to be logged.
    assert!(
        cujo.log().contains("logging burn-rate alert transitions"),
        "{}",
        cujo.log()
    );
    let (status, _, page) = get(cujo.admin, "/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&format!(
            "<a class=\"trace-link\" href=\"{trace_url}\" rel=\"noopener noreferrer\" target=\"_blank\"><code>{trace_id}</code></a>"
        )),
        "{page}"
    );
    let checkout = &cuj(&report, "checkout")["objectives"][0];
    assert_eq!(checkout["budget_remaining"], 1.0);
    assert_eq!(window(checkout, "5m")["good"], CHECKOUTS);

    // The filter, and an unknown CUJ named in a JSON 404.
    let only = slos(cujo.admin, "?cuj=checkout").await;
    assert_eq!(only["cujs"].as_array().expect("cujs").len(), 1);
    assert_eq!(only["cujs"][0]["name"], "checkout");
    let (status, content_type, body) = get(cujo.admin, "/api/v1/slos?cuj=nope").await;
    assert_eq!((status, content_type.as_str()), (404, "application/json"));
    let error: Value = serde_json::from_str(&body).expect("JSON error");
    let message = error["error"].as_str().expect("error message");
    assert!(
        message.contains("\"nope\"") && message.contains("post_message, checkout"),
        "{message}"
    );

    // gRPC on the same listener, same numbers.
    let mut client = SloServiceClient::connect(format!("http://{}", cujo.admin))
        .await
        .expect("gRPC connect");
    let all = client
        .get_status(GetStatusRequest { cuj: String::new() })
        .await
        .expect("GetStatus")
        .into_inner();
    assert_eq!(all.cujs.len(), 2);
    let post = &all.cujs[0];
    assert_eq!(post.name, "post_message");
    assert_eq!(post.dimensions, ["user.tier"]);
    assert_eq!(post.latency_threshold_seconds, Some(10.0));
    let availability = &post.objectives[0];
    assert_eq!(
        (availability.sli.as_str(), availability.target),
        ("availability", 0.8)
    );
    let five = availability
        .windows
        .iter()
        .find(|w| w.window == "5m")
        .expect("5m");
    assert_eq!((five.good, five.valid, five.sli), (90, 100, Some(0.9)));
    assert!(
        availability
            .budget_remaining
            .is_some_and(|b| close(b, budget_left(FAILED_POSTS, POSTS, 0.8)))
    );
    assert!(!availability.page && !availability.ticket);
    assert_eq!(post.series[0].dimensions[0].value, "gold");
    assert_eq!(
        (
            post.series[0].availability_good,
            post.series[0].availability_bad
        ),
        (Some(40), Some(FAILED_POSTS))
    );
    assert!(
        post.series[0]
            .last_bad_trace_id
            .as_ref()
            .is_some_and(|t| t.len() == 32)
    );
    assert_eq!(
        post.series[0].last_bad_trace_url.as_deref(),
        series[0]["last_bad_trace_url"].as_str(),
        "the same link as the JSON answer"
    );
    assert_eq!(
        post.runbook.as_deref(),
        Some("https://wiki.example.com/runbooks/post_message")
    );
    let one = client
        .get_status(GetStatusRequest {
            cuj: "checkout".into(),
        })
        .await
        .expect("GetStatus checkout")
        .into_inner();
    assert_eq!(one.cujs.len(), 1);
    assert_eq!(one.cujs[0].objectives[0].windows[0].valid, CHECKOUTS);
    let unknown = client
        .get_status(GetStatusRequest { cuj: "nope".into() })
        .await
        .expect_err("unknown CUJ");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("\"nope\""), "{unknown:?}");
    // The gRPC route did not swallow the admin listener's other paths.
    assert_eq!(get(cujo.admin, "/no-such-page").await.0, 404);

    // The deploy gate: half the budget left passes the default bound (25%)…
    let endpoint = format!("http://{}", cujo.admin);
    let out = gate(&["--endpoint", &endpoint]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let header = stdout.lines().next().expect("table header");
    for column in [
        "CUJ",
        "SLI",
        "TARGET",
        "WINDOW",
        "SLI NOW",
        "BUDGET LEFT",
        "BURN 1H",
        "ALERT",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = stdout
        .lines()
        .find(|l| l.starts_with("post_message") && l.contains("availability"))
        .expect("post_message row");
    for cell in ["80%", "30d", "90%", "50%", "0.50", "none", "pass"] {
        assert!(
            row.split_whitespace().any(|c| c == cell),
            "{cell} in {row:?}"
        );
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("checkout")),
        "{stdout}"
    );

    // …but not a bound of 60%: exit 1, naming the objective that is short.
    let out = gate(&["--endpoint", &endpoint, "--min-budget", "60%"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("post_message availability (30d"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("checkout"),
        "checkout has its whole budget: {stderr}"
    );
    assert!(stdout.contains("FAIL"), "{stdout}");

    // One CUJ as JSON: stdout is the API's answer; the gate still decides.
    let out = gate(&[
        "--endpoint",
        &cujo.admin.to_string(),
        "--cuj",
        "checkout",
        "--min-budget",
        "0.99",
        "--format",
        "json",
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let json: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(json["cujs"][0]["name"], "checkout");
    assert_eq!(json["cujs"].as_array().expect("cujs").len(), 1);

    // An unknown CUJ is a usage error, not a failed gate.
    let out = gate(&["--endpoint", &endpoint, "--cuj", "unknown"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("unknown CUJ \"unknown\"") && stderr.contains("post_message"),
        "{stderr}"
    );
}

/// A latency-only CUJ with traffic and a CUJ without any: neither shows what it does not
/// have. No availability anywhere for the first (its errors are not an SLI of it), and
/// "no data" — no SLI, no budget, no coverage, never 100% — for the second, which the gate
/// passes by default and fails with `--on-no-data fail`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_slis_and_windows_without_data_are_not_reported() {
    const SEARCHES: u64 = 12;
    let config = r#"assembler: { decision_wait: 200ms, trace_timeout: 2s }
cujs:
  - name: search
    match: { service.name: frontend-api, span.name: "GET /v1/search" }
    latency: { threshold: 10s }
    objectives:
      - { sli: latency, target: 99%, window: 30d }
  - name: refund
    match: { service.name: frontend-api, span.name: "POST /v1/refund" }
    availability: { bad: [ { status: error } ] }
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
"#;
    let downstream = Downstream::start().await;
    let cujo = Cujo::start(&format!("{config}{}", exporter_yaml(downstream.addr, ""))).await;
    let endpoint = format!("http://{}", cujo.grpc);
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "frontend-api");
        let t = provider.tracer("api");
        for i in 0..SEARCHES {
            let mut root = t
                .span_builder("GET /v1/search")
                .with_kind(SpanKind::Server)
                .start(&t);
            if i % 3 == 0 {
                root.set_status(Status::error("boom"));
            }
            root.end();
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
    let report = wait_for("every search counted", || async {
        let r = slos(cujo.admin, "").await;
        let valid = &window(&cuj(&r, "search")["objectives"][0], "5m")["valid"];
        (*valid == SEARCHES).then_some(r)
    })
    .await;

    let search = cuj(&report, "search");
    assert_eq!(search["slis"], serde_json::json!(["latency"]));
    let json = search.to_string();
    assert!(!json.contains("availability"), "{json}");
    let latency = &search["objectives"][0];
    assert_eq!(latency["budget_remaining"], 1.0, "every search was fast");
    let five = window(latency, "5m");
    assert_eq!(five["sli"], 1.0);
    let coverage = five["coverage"].as_f64().expect("coverage");
    assert!(coverage > 0.0 && coverage <= 1.0, "{five}");
    let month = window(latency, "30d")["coverage"].as_f64().expect("30d");
    assert!(month > 0.0 && month < 0.01, "seconds of a month: {month}");

    let refund = &cuj(&report, "refund")["objectives"][0];
    assert!(refund["budget_remaining"].is_null(), "{refund}");
    assert!(refund["exhaustion_seconds"].is_null(), "{refund}");
    assert_eq!(refund["page"], false);
    for w in refund["windows"].as_array().expect("windows") {
        assert!(w["sli"].is_null() && w["coverage"] == 0.0, "{w}");
    }

    let metrics = cujo.metrics().await;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !(line.contains("cuj=\"search\"") && line.contains("sli=\"availability\"")),
            "{line}"
        );
        assert!(
            !(line.starts_with("cujo_slo_error_budget_remaining_ratio")
                || line.starts_with("cujo_slo_sli_ratio"))
                || !line.contains("cuj=\"refund\""),
            "no data is not a number: {line}"
        );
    }
    assert!(metrics.contains(
        "cujo_slo_window_coverage_ratio{cuj=\"refund\",sli=\"availability\",window=\"1h\"} 0"
    ));
    assert!(
        metrics.contains("cujo_slo_alert_held{cuj=\"search\",sli=\"latency\",severity=\"page\"} 0")
    );
    support::promtool_check_metrics(&metrics);

    let mut client = SloServiceClient::connect(format!("http://{}", cujo.admin))
        .await
        .expect("gRPC connect");
    let all = client
        .get_status(GetStatusRequest { cuj: String::new() })
        .await
        .expect("GetStatus")
        .into_inner();
    assert_eq!(all.cujs[0].slis, ["latency"]);
    assert!(
        all.cujs[0]
            .series
            .iter()
            .all(|s| s.availability_good.is_none())
    );
    assert_eq!(all.cujs[1].objectives[0].budget_remaining, None);

    let admin = format!("http://{}", cujo.admin);
    let out = gate(&["--endpoint", &admin]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("refund"))
        .expect("refund row");
    assert!(row.contains("no data") && row.ends_with("pass"), "{row}");
    assert!(stdout.contains("1 with no data pass"), "{stdout}");
    let out = gate(&["--endpoint", &admin, "--on-no-data", "fail"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("refund availability (30d"), "{stderr}");
    assert!(stderr.contains("no data"), "{stderr}");
    assert!(!stderr.contains("search"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_exits_2_when_it_cannot_judge() {
    // Nobody listens.
    let dead = free_addr();
    let out = gate(&["--endpoint", &format!("http://{dead}")]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("http://{dead}/api/v1/slos"))
            && stderr.to_lowercase().contains("connection refused"),
        "{stderr}"
    );

    // Something that is not cujo answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let web = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 15\r\nconnection: close\r\n\r\n<html>hi</html>",
                )
                .await;
        }
    });
    let out = gate(&["--endpoint", &web.to_string()]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains(&web.to_string())
            && stderr.contains("did not answer with a cujo SLO report"),
        "{stderr}"
    );
    server.abort();

    // Bad arguments.
    let out = gate(&["--endpoint", "ftp://cujo:9464"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("unsupported scheme"),
        "{}",
        text(&out).1
    );
    let out = gate(&[
        "--endpoint",
        "https://127.0.0.1:1",
        "--ca-file",
        "/nonexistent/ca.pem",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("--ca-file /nonexistent/ca.pem"),
        "{}",
        text(&out).1
    );
    let out = gate(&["--endpoint", "127.0.0.1:1", "--min-budget", "plenty"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("--min-budget"), "{}", text(&out).1);

    // A cujo without CUJs: the API answers (an empty list), the gate has nothing to judge.
    let cujo = Cujo::start("").await;
    let report = slos(cujo.admin, "").await;
    assert_eq!(report["cujs"], serde_json::json!([]));
    assert!(report["generated_at_ms"].as_u64().expect("generated_at_ms") > 0);
    let mut client = SloServiceClient::connect(format!("http://{}", cujo.admin))
        .await
        .expect("gRPC connect");
    let empty = client
        .get_status(GetStatusRequest { cuj: String::new() })
        .await
        .expect("GetStatus")
        .into_inner();
    assert!(empty.cujs.is_empty());
    let out = gate(&["--endpoint", &format!("http://{}", cujo.admin)]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("no SLO objectives"), "{stderr}");
}
