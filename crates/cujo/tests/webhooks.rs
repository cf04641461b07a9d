//! Burn-rate alert notifications end to end: the real binary with a 99.9% CUJ, an error burst
//! made by the real OpenTelemetry SDK, and webhook receivers (a real HTTP server, and one
//! over TLS with a private CA) that answer 503 to the first attempt. The page arrives once
//! per webhook and transition despite the retry, in Slack and generic JSON, with the worst
//! dimension values, the last bad trace's link, the status page and the runbook; the ticket
//! waits while the page fires; the notifier's counters and log say what happened.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer, TracerProvider as _};
use serde_json::Value;
use support::{Cujo, metric_value, wait_for};

const CUJ: &str = r#"assembler: { decision_wait: 200ms, trace_timeout: 2s }
cujs:
  - name: post_message
    match:
      service.name: frontend-api
      span.name: "POST /v1/messages"
    dimensions: [user.tier]
    availability:
      bad: [ { status: error } ]
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
    # Seconds of traffic: alerts are judged without the cold-start gate.
    alerts: { min_events: 0, min_coverage: 0% }
    runbook: https://wiki.example.com/runbooks/post_message
"#;

/// One POST a webhook receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Post {
    hook: String,
    headers: HeaderMap,
    body: Value,
    answered: u16,
}

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Post>>>);

impl Recorded {
    fn posts(&self, hook: &str) -> Vec<Post> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| p.hook == hook)
            .cloned()
            .collect()
    }

    /// Bodies answered 200, i.e. delivered.
    fn delivered(&self, hook: &str) -> Vec<Value> {
        self.posts(hook)
            .into_iter()
            .filter(|p| p.answered == 200)
            .map(|p| p.body)
            .collect()
    }
}

/// `POST /{hook}`: `broken` always answers 400; any other hook answers its first attempt with
/// 503 and `Retry-After: 1`, then 200.
async fn receive(
    State(recorded): State<Recorded>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut posts = recorded.0.lock().expect("lock");
    let first = !posts.iter().any(|p| p.hook == hook);
    let answered = match (hook.as_str(), first) {
        ("broken", _) => 400,
        (_, true) => 503,
        _ => 200,
    };
    posts.push(Post {
        hook,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered,
    });
    let mut resp = (
        StatusCode::from_u16(answered).expect("status"),
        "recorded\n",
    )
        .into_response();
    if answered == 503 {
        resp.headers_mut()
            .insert("retry-after", "1".parse().expect("header"));
    }
    resp
}

/// A webhook receiver on a free localhost port, plain HTTP or TLS with `identity`
/// (certificate PEM, key PEM).
async fn webhook_receiver(identity: Option<(String, String)>) -> (SocketAddr, Recorded) {
    let recorded = Recorded::default();
    let app = Router::new()
        .route("/{hook}", post(receive))
        .with_state(recorded.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = identity.map(|(cert, key)| {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (app, tls) = (app.clone(), tls.clone());
            tokio::spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(app);
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(s), service)
                                .await
                        }
                        Err(_) => return,
                    },
                    None => {
                        builder
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                };
            });
        }
    });
    (addr, recorded)
}

/// `n` failing `POST /v1/messages` traces, sent with the SDK: a burst far over a 0.1% budget.
async fn error_burst(endpoint: String, n: usize) {
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "frontend-api");
        let tracer = provider.tracer("api");
        for _ in 0..n {
            let start = SystemTime::now() - Duration::from_millis(50);
            let mut root = tracer
                .span_builder("POST /v1/messages")
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .with_attributes([
                    KeyValue::new("http.response.status_code", 500),
                    KeyValue::new("user.tier", "free"),
                ])
                .start(&tracer);
            root.set_status(Status::error("database down"));
            root.end();
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
}

fn counter(metrics: &str, webhook: &str, outcome: &str) -> f64 {
    metric_value(
        metrics,
        &format!("cujo_notifications_total{{webhook=\"{webhook}\",outcome=\"{outcome}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_burst_pages_each_webhook_once_despite_a_retry() {
    let (addr, recorded) = webhook_receiver(None).await;
    let cujo = Cujo::start(&format!(
        r#"{CUJ}slo: {{ trace_link: "https://ui.honeycomb.io/acme/environments/test/trace?trace_id={{trace_id}}" }}
notifications:
  evaluation_interval: 200ms
  instance: cujo-test
  page_url: "https://cujo.example.com/status/"
  webhooks:
    - name: slack-oncall
      url: "http://{addr}/slack"
      format: slack
      severities: [page]
    - name: generic
      url: "http://{addr}/generic"
      format: generic
      headers: {{ Authorization: "Bearer ${{env:CUJO_TEST_UNSET_TOKEN:-t0ken}}" }}
      max_retries: 3
    - name: broken
      url: "http://{addr}/broken"
      severities: [page]
"#
    ))
    .await;
    error_burst(format!("http://{}", cujo.grpc), 20).await;

    // The page reaches Slack and the generic receiver (after one 503 each); the ticket,
    // firing too, is held back while the page of its objective fires.
    wait_for("the page notifications", || async {
        let generic = recorded.delivered("generic");
        (recorded.delivered("slack").len() == 1 && generic.len() == 1).then_some(())
    })
    .await;
    // Many more evaluations see the same alerts firing: nothing more is sent.
    let evaluations = "cujo_notifications_evaluations_total";
    let seen = cujo.metric(evaluations).await;
    let metrics = wait_for("10 more evaluations", || async {
        let m = cujo.metrics().await;
        (metric_value(&m, evaluations) >= seen + 10.0).then_some(m)
    })
    .await;

    let slack = recorded.posts("slack");
    assert_eq!(
        slack.iter().map(|p| p.answered).collect::<Vec<_>>(),
        [503, 200],
        "one retry, then one delivery: {slack:#?}"
    );
    assert_eq!(slack[0].body, slack[1].body, "a retry sends the same body");
    let text = slack[1].body["text"].as_str().unwrap_or_default();
    assert!(text.contains("[FIRING:page]"), "{text}");
    assert!(text.contains("post_message"), "{text}");
    assert!(text.contains("99.9% over 30d"), "{text}");
    let blocks = slack[1].body["attachments"][0]["blocks"].to_string();
    for what in [
        "*Worst*\\n`user.tier=free`",
        "*Last bad trace*\\n<https://ui.honeycomb.io/acme/environments/test/trace?trace_id=",
        "<https://cujo.example.com/status/#cuj-0|Status page>",
        "<https://wiki.example.com/runbooks/post_message|Runbook>",
    ] {
        assert!(blocks.contains(what), "{what} missing in {blocks}");
    }

    let generic = recorded.posts("generic");
    assert_eq!(
        generic.iter().map(|p| p.answered).collect::<Vec<_>>(),
        [503, 200],
        "{generic:#?}"
    );
    let page = &generic[1];
    assert_eq!(
        page.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer t0ken")
    );
    assert_eq!(
        page.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = &page.body;
    assert_eq!(body["status"], "firing");
    assert_eq!(body["severity"], "page");
    assert_eq!(body["cuj"], "post_message");
    assert_eq!(body["sli"], "availability");
    assert_eq!(body["objective"]["target"], 0.999);
    assert_eq!(body["objective"]["window"], "30d");
    assert_eq!(body["cujo_instance"], "cujo-test");
    assert!(
        body["burn_rates"]["5m"].as_f64().is_some_and(|b| b > 14.4),
        "{body}"
    );
    assert!(body["budget_remaining"].as_f64().is_some());
    let started = body["started_at"].as_str().unwrap_or_default();
    assert!(started.ends_with('Z') && started.len() == 24, "{started}");
    let key = body["dedup_key"].as_str().unwrap_or_default();
    assert!(
        key.starts_with("post_message/availability/30d/page/"),
        "{key}"
    );
    // Where to look: the worst tier, its last bad trace in the backend, the CUJ on the
    // status page, the runbook.
    assert_eq!(
        body["worst"]["dimensions"],
        serde_json::json!({ "user.tier": "free" })
    );
    let trace_id = body["last_bad_trace"]["trace_id"]
        .as_str()
        .unwrap_or_default();
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{body}"
    );
    assert_eq!(
        body["last_bad_trace"]["url"],
        format!("https://ui.honeycomb.io/acme/environments/test/trace?trace_id={trace_id}")
    );
    assert_eq!(body["page_url"], "https://cujo.example.com/status/#cuj-0");
    assert_eq!(
        body["runbook_url"],
        "https://wiki.example.com/runbooks/post_message"
    );
    // The ticket fires in the report too, but is not notified while the page fires.
    let report = support::http_get(cujo.admin, "/api/v1/slos")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default();
    let report: Value = serde_json::from_str(&report).expect("report");
    assert_eq!(report["cujs"][0]["objectives"][0]["ticket"], true);
    // The log says it too, with what burns.
    let log = cujo.log();
    let fired = log
        .lines()
        .find(|l| l.contains("burn-rate alert firing") && l.contains("severity=\"page\""))
        .or_else(|| log.lines().find(|l| l.contains("burn-rate alert firing")))
        .unwrap_or_else(|| panic!("no firing log line in {log}"));
    assert!(
        fired.contains("user.tier=free") && fired.contains(trace_id),
        "{fired}"
    );

    // A 4xx is not retried: one attempt, counted as failed.
    assert_eq!(recorded.posts("broken").len(), 1);
    assert_eq!(counter(&metrics, "slack-oncall", "sent"), 1.0);
    assert_eq!(counter(&metrics, "slack-oncall", "retried"), 1.0);
    assert_eq!(counter(&metrics, "slack-oncall", "failed"), 0.0);
    assert_eq!(counter(&metrics, "generic", "sent"), 1.0);
    assert_eq!(counter(&metrics, "generic", "retried"), 1.0);
    assert_eq!(counter(&metrics, "broken", "failed"), 1.0);
    assert_eq!(counter(&metrics, "broken", "retried"), 0.0);
    assert_eq!(
        metric_value(&metrics, "cujo_notifications_alerts_firing"),
        1.0
    );
    support::promtool_check_metrics(&metrics);

    let status = cujo.stop().await.0;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_go_over_https_to_a_receiver_signed_by_a_private_ca() {
    let (ca_pem, cert_pem, key_pem) = support::private_ca();
    let (addr, recorded) = webhook_receiver(Some((cert_pem, key_pem))).await;
    let dir = support::Scratch::new("cujo-webhook-tls");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write ca");
    let url = format!("https://localhost:{}", addr.port());
    let cujo = Cujo::start(&format!(
        r#"{CUJ}notifications:
  evaluation_interval: 200ms
  webhooks:
    - name: trusted
      url: "{url}/trusted"
      severities: [page]
      tls: {{ ca_file: "{}" }}
    - name: untrusted
      url: "{url}/untrusted"
      severities: [page]
      max_retries: 0
"#,
        ca_file.display()
    ))
    .await;
    error_burst(format!("http://{}", cujo.grpc), 20).await;
    let delivered = wait_for("the page over TLS", || async {
        let d = recorded.delivered("trusted");
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(delivered[0]["severity"], "page");
    // Without the CA the handshake fails: a connection error, never seen by the receiver.
    wait_for("the untrusted webhook to give up", || async {
        (counter(&cujo.metrics().await, "untrusted", "failed") == 1.0).then_some(())
    })
    .await;
    assert!(recorded.posts("untrusted").is_empty());
    assert!(
        cujo.log().contains("alert notification failed; giving up"),
        "{}",
        cujo.log()
    );
}

/// A restart in the middle of an alert: the alerts notified as firing are kept in the SLO
/// state file with the windows, so the restarted cujo, seeing them still firing, does not
/// page again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_page_again_for_an_alert_already_firing() {
    let (addr, recorded) = webhook_receiver(None).await;
    let dir = std::env::temp_dir().join(format!("cujo-webhook-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = format!(
        r#"{CUJ}slo: {{ state_file: "{}", save_interval: 1h }}
notifications:
  evaluation_interval: 200ms
  webhooks:
    - {{ name: generic, url: "http://{addr}/generic", format: generic }}
"#,
        dir.join("slo-state").display()
    );
    let cujo = Cujo::start(&config).await;
    error_burst(format!("http://{}", cujo.grpc), 20).await;
    wait_for("the page", || async {
        (recorded.delivered("generic").len() == 1).then_some(())
    })
    .await;
    let status = cujo.stop().await.0;
    assert!(status.success(), "{status}");
    // The receiver answers 503 to the first attempt: two posts for one notification.
    let before = recorded.posts("generic").len();

    let restarted = Cujo::start(&config).await;
    let evaluations = "cujo_notifications_evaluations_total";
    let metrics = wait_for("10 evaluations after the restart", || async {
        let m = restarted.metrics().await;
        (metric_value(&m, evaluations) >= 10.0).then_some(m)
    })
    .await;
    assert_eq!(
        metric_value(&metrics, "cujo_notifications_alerts_firing"),
        1.0,
        "the page still firing (the ticket held back behind it)"
    );
    let posts = recorded.posts("generic");
    assert_eq!(posts.len(), before, "nothing sent again: {posts:#?}");
    assert!(restarted.log().contains("alerts=1"), "{}", restarted.log());
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
