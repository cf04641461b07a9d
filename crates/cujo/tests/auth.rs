//! Bearer-token authentication end to end: the real binary, the real OpenTelemetry SDK
//! exporters (gRPC with `authorization` metadata, HTTP with the header), a real downstream.
//! Clients with a valid token get their spans forwarded; others are refused (HTTP 401 with
//! `WWW-Authenticate: Bearer`, gRPC `UNAUTHENTICATED`) and counted, and their spans are never
//! received. Token files rotate without a restart. The admin listener guards the status views
//! and `/metrics` with tokens of their own, keeps the probes open and turns routes off. No
//! token ever appears in cujo's output or in an answer.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use cujo_slo::surfaces::status::grpc::proto::GetStatusRequest;
use cujo_slo::surfaces::status::grpc::proto::slo_service_client::SloServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use support::{Cujo, Downstream, Sdk, exporter_yaml, metric_value, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN_A: &str = "cujo-test-token-A-6f1d2c";
const TOKEN_B: &str = "cujo-test-token-B-93ab7e";
const STATUS_TOKEN: &str = "cujo-test-status-4d0e21";
const METRICS_TOKEN: &str = "cujo-test-metrics-7a55c3";
/// Every token the tests use: none may appear in cujo's output or answers.
const ALL_TOKENS: [&str; 4] = [TOKEN_A, TOKEN_B, STATUS_TOKEN, METRICS_TOKEN];

fn unauthenticated(transport: &str) -> String {
    format!("cujo_receiver_requests_total{{transport=\"{transport}\",outcome=\"unauthenticated\"}}")
}

fn accepted_spans(transport: &str) -> String {
    format!("cujo_receiver_spans_total{{transport=\"{transport}\",outcome=\"accepted\"}}")
}

/// How the SDK exports: over gRPC or HTTP/protobuf, with this token or none.
#[derive(Clone, Copy)]
enum Client {
    Grpc(Option<&'static str>),
    Http(Option<&'static str>),
}

/// Ends `n` spans named `name` with the SDK (one export each), as service `checkout`.
async fn send_spans(cujo: &Cujo, client: Client, name: &'static str, n: usize) {
    let (sdk, headers) = match client {
        Client::Grpc(token) => (Sdk::Grpc, token.map(|t| format!("Bearer {t}"))),
        Client::Http(token) => (Sdk::Http, token.map(|t| format!("bearer {t}"))),
    };
    let headers = headers.map(|h| ("authorization", h)).into_iter().collect();
    support::sdk_send(cujo, sdk, headers, "checkout", name, n).await;
}

/// An answer over HTTP/1.0: status, head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A request over HTTP/1.0 with an optional bearer token.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(c) = content_type {
        head.push_str(&format!("Content-Type: {c}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(body).await.expect("write body");
    let mut buf = Vec::new();
    tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    request(addr, "GET", path, token, None, b"").await
}

/// A raw gRPC export with `token` (or none): the status code of the answer.
async fn grpc_export(addr: SocketAddr, token: Option<&str>) -> tonic::Code {
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("metadata"),
        );
    }
    match client.export(req).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// Fails if a token appears in `what`.
fn assert_no_token(place: &str, what: &str) {
    for t in ALL_TOKENS {
        assert!(!what.contains(t), "a token appears in {place}:\n{what}");
    }
}

/// Fails if a token appears in cujo's standard output or error.
fn assert_output_has_no_token(cujo: &Cujo) {
    assert_no_token("cujo's log (stderr)", &cujo.log());
    let stdout = std::fs::read_to_string(&cujo.stdout_path).unwrap_or_default();
    assert_no_token("cujo's stdout", &stdout);
}

const ENV: [(&str, &str); 3] = [
    ("CUJO_TOKEN_A", TOKEN_A),
    ("CUJO_TOKEN_B", TOKEN_B),
    // Everything cujo and its libraries log, so that a token in any log line is seen.
    ("RUST_LOG", "debug"),
];

fn receivers_yaml(auth: &str, downstream: SocketAddr) -> String {
    format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    http: {{ endpoint: \"127.0.0.1:0\" }}\n    auth: {auth}\n{}  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
        exporter_yaml(downstream, "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_with_a_token_are_forwarded_and_others_refused_and_counted() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start_yaml_with_env(
        &receivers_yaml(
            "{ bearer_tokens: [\"${env:CUJO_TOKEN_A}\", \"${env:CUJO_TOKEN_B}\"] }",
            downstream.addr,
        ),
        &ENV,
    )
    .await;

    // Either token, over either transport (the HTTP client writes the scheme in lower case).
    send_spans(&cujo, Client::Grpc(Some(TOKEN_A)), "grpc with A", 5).await;
    send_spans(&cujo, Client::Http(Some(TOKEN_B)), "http with B", 5).await;
    downstream.wait_for_spans(10).await;
    assert_eq!(downstream.spans_named("grpc with A"), 5);
    assert_eq!(downstream.spans_named("http with B"), 5);

    // Without a token, or with a wrong one: refused, counted, never received.
    send_spans(&cujo, Client::Grpc(None), "grpc without", 3).await;
    send_spans(&cujo, Client::Grpc(Some("wrong-token")), "grpc wrong", 2).await;
    send_spans(&cujo, Client::Http(None), "http without", 4).await;
    let m = cujo.metrics().await;
    assert_eq!(metric_value(&m, &unauthenticated("grpc")), 5.0, "{m}");
    assert_eq!(metric_value(&m, &unauthenticated("http")), 4.0, "{m}");
    assert_eq!(metric_value(&m, &accepted_spans("grpc")), 5.0, "{m}");
    assert_eq!(metric_value(&m, &accepted_spans("http")), 5.0, "{m}");
    assert!(
        !m.contains("cujo_receiver_spans_total{transport=\"grpc\",outcome=\"unauthenticated\"}")
    );
    // The accounting invariant stays exact: refused requests are not received spans.
    wait_for("everything forwarded", || async {
        let (accepted, exported, _) = support::assert_accounting(&cujo).await;
        (accepted == 10.0 && exported == 10.0).then_some(())
    })
    .await;
    assert_eq!(downstream.span_count(), 10, "no refused span was forwarded");

    // The answers themselves.
    let code = grpc_export(cujo.grpc, None).await;
    assert_eq!(code, tonic::Code::Unauthenticated);
    let mut client = TraceServiceClient::connect(format!("http://{}", cujo.grpc))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer nope".parse().expect("metadata"));
    let status = client.export(req).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "invalid bearer token");
    assert_eq!(grpc_export(cujo.grpc, Some(TOKEN_B)).await, tonic::Code::Ok);

    let empty = prost::Message::encode_to_vec(&ExportTraceServiceRequest::default());
    for (token, content_type, says) in [
        (None, Some("application/x-protobuf"), "missing bearer token"),
        (
            Some("nope"),
            Some("application/json"),
            "invalid bearer token",
        ),
        (None, None, "missing bearer token"),
    ] {
        let a = request(cujo.http, "POST", "/v1/traces", token, content_type, &empty).await;
        assert_eq!(a.status, 401, "{}{}", a.head, a.body);
        assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{}", a.head);
        assert!(a.body.contains(says), "{content_type:?}: {}", a.body);
        if content_type == Some("application/json") {
            let json: serde_json::Value = serde_json::from_str(&a.body).expect("json Status");
            assert_eq!(json["code"], 16);
        }
    }
    let a = request(
        cujo.http,
        "POST",
        "/v1/traces",
        Some(TOKEN_A),
        Some("application/x-protobuf"),
        &empty,
    )
    .await;
    assert_eq!(a.status, 200);

    assert_no_token("/metrics", &cujo.metrics().await);
    assert_output_has_no_token(&cujo);
}

/// Writes `text` to `path` the way a Secret volume or a deploy tool does: aside, then renamed.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).expect("write token file");
    std::fs::rename(&aside, path).expect("rename token file");
}

fn temp_dir(name: &str) -> support::Scratch {
    support::Scratch::new(&format!("cujo-auth-{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rotate_through_a_token_file_without_a_restart() {
    let downstream = Downstream::start().await;
    let dir = temp_dir("rotation");
    let file = dir.join("tokens");
    std::fs::write(&file, format!("# the current key\n{TOKEN_A}\n")).expect("write");
    let cujo = Cujo::start_yaml_with_env(
        &receivers_yaml(
            &format!("{{ token_files: [\"{}\"] }}", file.display()),
            downstream.addr,
        ),
        &ENV,
    )
    .await;
    let pid = cujo.pid();
    send_spans(&cujo, Client::Grpc(Some(TOKEN_A)), "A before", 3).await;
    downstream.wait_for_spans(3).await;
    assert_eq!(
        grpc_export(cujo.grpc, Some(TOKEN_B)).await,
        tonic::Code::Unauthenticated
    );

    // The rotation starts: both keys are valid at once.
    replace(&file, &format!("{TOKEN_A}\n\n{TOKEN_B}\n"));
    wait_for("the new key accepted", || async {
        (grpc_export(cujo.grpc, Some(TOKEN_B)).await == tonic::Code::Ok).then_some(())
    })
    .await;
    send_spans(&cujo, Client::Grpc(Some(TOKEN_A)), "A during", 3).await;
    send_spans(&cujo, Client::Http(Some(TOKEN_B)), "B during", 3).await;
    downstream.wait_for_spans(9).await;
    assert_eq!(downstream.spans_named("A during"), 3);
    assert_eq!(downstream.spans_named("B during"), 3);

    // It ends: the old key is removed and refused.
    replace(&file, &format!("{TOKEN_B}\n"));
    wait_for("the old key refused", || async {
        (grpc_export(cujo.grpc, Some(TOKEN_A)).await == tonic::Code::Unauthenticated).then_some(())
    })
    .await;
    let refused_before = metric_value(&cujo.metrics().await, &unauthenticated("http"));
    send_spans(&cujo, Client::Http(Some(TOKEN_A)), "A after", 2).await;
    send_spans(&cujo, Client::Grpc(Some(TOKEN_B)), "B after", 2).await;
    downstream.wait_for_spans(11).await;
    assert_eq!(downstream.spans_named("B after"), 2);
    assert_eq!(
        downstream.spans_named("A after"),
        0,
        "the old key no longer gets spans in"
    );
    assert_eq!(
        metric_value(&cujo.metrics().await, &unauthenticated("http")),
        refused_before + 2.0
    );

    // A file that cannot be read keeps the last good key (and says so, once). Files are
    // looked at when requests come, so each probe is one.
    std::fs::remove_file(&file).expect("remove");
    wait_for("the unreadable file logged", || async {
        assert_eq!(grpc_export(cujo.grpc, Some(TOKEN_B)).await, tonic::Code::Ok);
        cujo.log()
            .contains("token file cannot be used")
            .then_some(())
    })
    .await;
    assert_eq!(grpc_export(cujo.grpc, Some(TOKEN_B)).await, tonic::Code::Ok);
    assert_eq!(
        cujo.log().matches("token file cannot be used").count(),
        1,
        "logged once"
    );
    assert_eq!(cujo.pid(), pid, "no restart");
    assert_output_has_no_token(&cujo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_guards_the_views_and_metrics_with_their_own_tokens() {
    let cujo = Cujo::start_yaml_with_env(
        "receivers:\n  otlp:\n    grpc: { endpoint: \"127.0.0.1:0\" }\n    auth: { bearer_tokens: [\"${env:CUJO_TOKEN_A}\"] }\nexporters:\n  prometheus:\n    endpoint: \"127.0.0.1:0\"\n    auth: { bearer_tokens: [\"${env:CUJO_STATUS_TOKEN}\"] }\n    metrics_auth: { bearer_tokens: [\"${env:CUJO_METRICS_TOKEN}\"] }\n",
        &[
            ("CUJO_TOKEN_A", TOKEN_A),
            ("CUJO_STATUS_TOKEN", STATUS_TOKEN),
            ("CUJO_METRICS_TOKEN", METRICS_TOKEN),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let admin = cujo.admin;
    let mut answers = Vec::new();

    // The status page and the JSON API: only with the status token.
    for path in ["/", "/api/v1/slos"] {
        let a = get(admin, path, None).await;
        assert_eq!(a.status, 401, "{path}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{path}");
        assert_eq!(a.body, "missing bearer token\n");
        for wrong in [METRICS_TOKEN, TOKEN_A] {
            let a = get(admin, path, Some(wrong)).await;
            assert_eq!(
                (a.status, a.body.as_str()),
                (401, "invalid bearer token\n"),
                "{path}"
            );
        }
        let a = get(admin, path, Some(STATUS_TOKEN)).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        answers.push(a.body);
    }

    // The gRPC status API: the same token, as metadata.
    let mut client = SloServiceClient::connect(format!("http://{admin}"))
        .await
        .expect("connect");
    let status = client
        .get_status(GetStatusRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "missing bearer token");
    let mut req = tonic::Request::new(GetStatusRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {STATUS_TOKEN}").parse().expect("metadata"),
    );
    let report = client.get_status(req).await.expect("with the token");
    answers.push(format!("{:?}", report.into_inner()));

    // /metrics: only with its own token, which opens nothing else.
    assert_eq!(get(admin, "/metrics", None).await.status, 401);
    assert_eq!(get(admin, "/metrics", Some(STATUS_TOKEN)).await.status, 401);
    let scrape = get(admin, "/metrics", Some(METRICS_TOKEN)).await;
    assert_eq!(scrape.status, 200);
    assert_eq!(
        metric_value(
            &scrape.body,
            "cujo_admin_unauthenticated_requests_total{routes=\"status\"}"
        ),
        7.0,
        "{}",
        scrape.body
    );
    assert_eq!(
        metric_value(
            &scrape.body,
            "cujo_admin_unauthenticated_requests_total{routes=\"metrics\"}"
        ),
        2.0
    );
    support::promtool_check_metrics(&scrape.body);
    answers.push(scrape.body);

    // Probes carry no token and need none.
    for path in ["/healthz", "/readyz"] {
        let a = get(admin, path, None).await;
        assert_eq!(a.status, 200, "{path}");
        answers.push(a.body);
    }
    // The deploy gate sends the token from CUJO_STATUS_TOKEN (or --token-file). This cujo has
    // no CUJs: past the guard, the gate says there is nothing to gate on.
    let gate = |token: Option<&'static str>| {
        let endpoint = format!("http://{admin}");
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_cujo"));
            cmd.args(["status", "--endpoint", &endpoint])
                .env_remove("CUJO_STATUS_TOKEN");
            if let Some(t) = token {
                cmd.env("CUJO_STATUS_TOKEN", t);
            }
            cmd.output().expect("run cujo status")
        })
    };
    let out = gate(None).await.expect("gate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("answered HTTP 401"), "{stderr}");
    assert!(stderr.contains("CUJO_STATUS_TOKEN"), "{stderr}");
    let out = gate(Some(STATUS_TOKEN)).await.expect("gate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("reports no SLO objectives"), "{stderr}");
    assert_no_token("cujo status's output", &stderr);
    let gate_dir = temp_dir("gate");
    let token_file = gate_dir.join("token");
    std::fs::write(
        &token_file,
        format!(
            "# the status token
{STATUS_TOKEN}
"
        ),
    )
    .expect("write");
    let endpoint = format!("http://{admin}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cujo"))
            .args(["status", "--endpoint", &endpoint, "--token-file"])
            .arg(&token_file)
            .env_remove("CUJO_STATUS_TOKEN")
            .output()
            .expect("run cujo status")
    })
    .await
    .expect("gate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("reports no SLO objectives"), "{stderr}");

    // An unknown path is still 404, not 401.
    assert_eq!(get(admin, "/nowhere", None).await.status, 404);

    for answer in &answers {
        assert_no_token("an admin answer", answer);
    }
    assert_output_has_no_token(&cujo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_turned_off_answer_404() {
    let cujo = Cujo::start_yaml(
        "receivers:\n  otlp:\n    grpc: { endpoint: \"127.0.0.1:0\" }\nexporters:\n  prometheus:\n    endpoint: \"127.0.0.1:0\"\n    routes: { status_page: false, metrics: false }\n",
    )
    .await;
    assert_eq!(get(cujo.admin, "/", None).await.status, 404);
    assert_eq!(get(cujo.admin, "/metrics", None).await.status, 404);
    assert_eq!(
        get(cujo.admin, "/api/v1/slos", None).await.status,
        200,
        "api stays on"
    );
    assert_eq!(get(cujo.admin, "/healthz", None).await.status, 200);
    assert_eq!(get(cujo.admin, "/readyz", None).await.status, 200);
    let api_off = Cujo::start_yaml(
        "receivers:\n  otlp:\n    grpc: { endpoint: \"127.0.0.1:0\" }\nexporters:\n  prometheus:\n    endpoint: \"127.0.0.1:0\"\n    routes: { api: false }\n",
    )
    .await;
    assert_eq!(get(api_off.admin, "/api/v1/slos", None).await.status, 404);
    let mut client = SloServiceClient::connect(format!("http://{}", api_off.admin))
        .await
        .expect("connect");
    let status = client
        .get_status(GetStatusRequest::default())
        .await
        .expect_err("off");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert_eq!(get(api_off.admin, "/", None).await.status, 200);
    assert_eq!(get(api_off.admin, "/metrics", None).await.status, 200);
}

#[test]
fn cujo_check_never_prints_a_token() {
    let dir = temp_dir("check");
    let run = |yaml: &str| {
        let path = dir.join("cujo.yaml");
        std::fs::write(&path, yaml).expect("write");
        Command::new(env!("CARGO_BIN_EXE_cujo"))
            .args(["check", "--config"])
            .arg(&path)
            .env("CUJO_TOKEN_A", TOKEN_A)
            .env("CUJO_TOKEN_SPACED", format!("{TOKEN_B} x"))
            .env("CUJO_SLACK", format!("hooks.slack.com/services/{TOKEN_B}"))
            .output()
            .expect("run cujo check")
    };
    let good = run(
        "receivers:\n  otlp:\n    auth: { bearer_tokens: [\"${env:CUJO_TOKEN_A}\"] }\nexporters:\n  otlp:\n    endpoint: \"https://api.honeycomb.io:443\"\n    headers: { x-honeycomb-team: \"${env:CUJO_TOKEN_A}\" }\n  prometheus: { endpoint: \"127.0.0.1:9464\", auth: { bearer_tokens: [\"${env:CUJO_TOKEN_A}\"] } }\n",
    );
    assert!(good.status.success(), "{good:?}");
    for (yaml, key) in [
        (
            "receivers:\n  otlp:\n    auth: { bearer_tokens: [\"${env:CUJO_TOKEN_A}\", \"${env:CUJO_TOKEN_SPACED}\"] }\n",
            "cujo.yaml: receivers.otlp.auth.bearer_tokens[1]: contains whitespace",
        ),
        (
            "receivers:\n  otlp:\n    auth: \"${env:CUJO_TOKEN_A}\"\n",
            "cujo.yaml: receivers.otlp.auth: expected a mapping",
        ),
        (
            "exporters:\n  otlp: { endpoint: \"http://x:1\", headers: { x-key: \"${env:CUJO_TOKEN_A}\\n\" } }\n",
            "cujo.yaml: exporters.otlp.headers.x-key: is not a valid header value",
        ),
        (
            "cujs:\n  - name: a\n    objectives: [ { sli: availability, target: 99%, window: 30d } ]\nnotifications:\n  webhooks: [ { name: slack, url: \"${env:CUJO_SLACK}\" } ]\n",
            "cujo.yaml: notifications.webhooks[0].url: expected a URL",
        ),
    ] {
        let out = run(yaml);
        assert_eq!(out.status.code(), Some(2), "{yaml}");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(stderr.contains(key), "{yaml}: {stderr}");
        assert_no_token("cujo check's output", &format!("{stdout}{stderr}"));
    }
}
