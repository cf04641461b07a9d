//! Tenants end to end: the real binary, the real OpenTelemetry SDK exporters sending with
//! their tenant's bearer token, a real downstream recording each request's headers.
//!
//! Two teams share one gateway: each team's spans arrive downstream under its own Honeycomb
//! key, never in a request with the other's; a trace id both teams use stays two traces
//! (one team's root attributes never land on the other's spans); a team flooding past its
//! share is refused retryably while the other is still served; pass-through callers' own
//! keys go downstream with their own spans. No token or key reaches cujo's output.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use support::{
    Cujo, Downstream, DownstreamMode, Sdk, exporter_yaml, sdk_send, string_attr, wait_for,
};

const TOKEN_A: &str = "tenant-token-a-5e81c0";
const TOKEN_B: &str = "tenant-token-b-0b7d44";
const KEY_A: &str = "honeycomb-key-team-a-c19f";
const KEY_B: &str = "honeycomb-key-team-b-77e2";
const KEY_DEFAULT: &str = "honeycomb-key-gateway-3a0b";
const CALLER_1: &str = "honeycomb-key-caller-1-aa01";
const CALLER_2: &str = "honeycomb-key-caller-2-bb02";
const SECRETS: [&str; 7] = [
    TOKEN_A,
    TOKEN_B,
    KEY_A,
    KEY_B,
    KEY_DEFAULT,
    CALLER_1,
    CALLER_2,
];

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TEAM_A_TOKEN", TOKEN_A),
        ("TEAM_B_TOKEN", TOKEN_B),
        ("TEAM_A_KEY", KEY_A),
        ("TEAM_B_KEY", KEY_B),
        ("GATEWAY_KEY", KEY_DEFAULT),
    ]
}

/// Two tenants; `a_share` sets team-a's `max_in_flight`.
fn tenants_yaml(a_share: &str) -> String {
    format!(
        "tenants:\n  - {{ name: team-a, bearer_tokens: [\"${{env:TEAM_A_TOKEN}}\"], headers: {{ x-honeycomb-team: \"${{env:TEAM_A_KEY}}\" }}{a_share} }}\n  - {{ name: team-b, bearer_tokens: [\"${{env:TEAM_B_TOKEN}}\"], headers: {{ x-honeycomb-team: \"${{env:TEAM_B_KEY}}\" }} }}\n"
    )
}

/// Exporter headers every request carries, beside a tenant's.
fn shared_headers() -> &'static str {
    "    headers: { x-honeycomb-team: \"${env:GATEWAY_KEY}\", x-honeycomb-dataset: traces }\n"
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

/// Every downstream request as (its `x-honeycomb-team` values, the services of its spans).
fn requests_by_key(downstream: &Downstream) -> Vec<(Vec<String>, Vec<String>)> {
    downstream
        .metadata()
        .iter()
        .zip(downstream.requests())
        .map(|(meta, req)| {
            let keys = meta
                .get_all("x-honeycomb-team")
                .iter()
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .collect();
            let mut services: Vec<String> = req
                .resource_spans
                .iter()
                .filter_map(|rs| string_attr(&rs.resource.as_ref()?.attributes, "service.name"))
                .collect();
            services.sort();
            services.dedup();
            (keys, services)
        })
        .collect()
}

fn assert_no_secret(cujo: &Cujo, also: &str) {
    let out = format!(
        "{}{}{also}",
        cujo.log(),
        std::fs::read_to_string(&cujo.stdout_path).unwrap_or_default()
    );
    for s in SECRETS {
        assert!(!out.contains(s), "secret {s} in cujo's output:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_arrive_under_their_own_keys_and_never_share_a_request() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start_yaml_with_env(
        &format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    http: {{ endpoint: \"127.0.0.1:0\" }}\n{}{}{}  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
            tenants_yaml(""),
            exporter_yaml(downstream.addr, "").replace("    batch: { max_spans: 512, timeout: 50ms }\n", "    batch: { max_spans: 512, timeout: 300ms }\n"),
            shared_headers(),
        ),
        &env(),
    )
    .await;
    // Both teams at once, over both transports: the exporter's batches would mix them if
    // it did not keep them apart.
    tokio::join!(
        sdk_send(&cujo, Sdk::Grpc, bearer(TOKEN_A), "svc-a", "GET /a", 30),
        sdk_send(&cujo, Sdk::Http, bearer(TOKEN_B), "svc-b", "GET /b", 30),
    );
    downstream.wait_for_spans(60).await;
    let requests = requests_by_key(&downstream);
    for (keys, services) in &requests {
        let want = match services.as_slice() {
            [s] if s == "svc-a" => KEY_A,
            [s] if s == "svc-b" => KEY_B,
            other => panic!("a request held spans of {other:?}: {requests:?}"),
        };
        assert_eq!(keys, &vec![want.to_string()], "{requests:?}");
    }
    let metadata = downstream.metadata();
    assert!(
        metadata
            .iter()
            .all(|m| m.get("x-honeycomb-dataset").and_then(|v| v.to_str().ok()) == Some("traces")),
        "the exporter's own headers go with every tenant's requests"
    );
    for (tenant, n) in [("team-a", 30.0), ("team-b", 30.0)] {
        let sample = |family: &str| format!("{family}{{tenant=\"{tenant}\"}}");
        wait_for("the tenant's counters", || async {
            (cujo
                .metric(&sample("cujo_tenant_exported_spans_total"))
                .await
                == n)
                .then_some(())
        })
        .await;
        assert_eq!(
            cujo.metric(&sample("cujo_tenant_accepted_spans_total"))
                .await,
            n
        );
        assert_eq!(
            cujo.metric(&sample("cujo_tenant_in_flight_bytes")).await,
            0.0
        );
    }
    support::assert_accounting(&cujo).await;
    assert_no_secret(&cujo, &cujo.metrics().await);
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn span(trace: [u8; 16], id: u8, parent: Option<u8>, name: &str, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_010_000_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

async fn send_as(cujo: &Cujo, token: &str, req: ExportTraceServiceRequest) {
    let mut client = TraceServiceClient::connect(format!("http://{}", cujo.grpc))
        .await
        .expect("connect");
    let mut r = tonic::Request::new(req);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata"),
    );
    client.export(r).await.expect("accepted");
}

/// A trace id both teams send (by chance, or by a team that read the other's ids): team-a's
/// root attributes reach team-a's child and never team-b's spans; team-b's spans go out under
/// team-b's key, unenriched, when their own trace times out without a root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_id_two_tenants_share_stays_two_traces() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start_yaml_with_env(
        &format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    http: {{ endpoint: \"127.0.0.1:0\" }}\nassembler:\n  decision_wait: 200ms\n  trace_timeout: 1s\n  shards: 2\npropagate:\n  attributes: [\"cuj.*\", \"user.tier\"]\n{}{}  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
            tenants_yaml(""),
            exporter_yaml(downstream.addr, ""),
        ),
        &env(),
    )
    .await;
    let shared = [0x5a; 16];
    // team-b's child first, then team-a's child and root, then (after team-a's trace is
    // released and in the root cache) a late team-b span: none may take team-a's values.
    send_as(
        &cujo,
        TOKEN_B,
        request("svc-b", vec![span(shared, 2, Some(1), "b child", vec![])]),
    )
    .await;
    send_as(
        &cujo,
        TOKEN_A,
        request(
            "svc-a",
            vec![
                span(shared, 2, Some(1), "a child", vec![]),
                span(
                    shared,
                    1,
                    None,
                    "a root",
                    vec![kv("cuj.name", "checkout"), kv("user.tier", "gold")],
                ),
            ],
        ),
    )
    .await;
    wait_for("team-a's trace", || async {
        (downstream
            .spans()
            .iter()
            .filter(|s| s.service == "svc-a")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    send_as(
        &cujo,
        TOKEN_B,
        request("svc-b", vec![span(shared, 3, Some(1), "b late", vec![])]),
    )
    .await;
    downstream.wait_for_spans(4).await;
    for s in downstream.spans() {
        match s.service.as_str() {
            "svc-a" => assert_eq!(
                s.attr("cuj.name").as_deref(),
                Some("checkout"),
                "{}",
                s.span.name
            ),
            _ => {
                assert_eq!(
                    s.attr("cuj.name"),
                    None,
                    "{} took team-a's root values",
                    s.span.name
                );
                assert_eq!(s.attr("user.tier"), None, "{}", s.span.name);
            }
        }
    }
    for (keys, services) in requests_by_key(&downstream) {
        let want = if services == ["svc-a"] { KEY_A } else { KEY_B };
        assert_eq!(services.len(), 1);
        assert_eq!(keys, vec![want.to_string()]);
    }
    assert_no_secret(&cujo, "");
}

/// team-a may hold 64 KiB of spans; the downstream refuses (retryably) for a while, so its
/// spans stay in flight: team-a is refused, retryably and counted, while team-b is still
/// served. Once the downstream is back, everything both sent arrives, and team-a's share is
/// whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_share_is_refused_while_the_other_is_served() {
    let downstream = Downstream::start().await;
    downstream.set_mode(DownstreamMode::Unavailable);
    let cujo = Cujo::start_yaml_with_env(
        &format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    http: {{ endpoint: \"127.0.0.1:0\" }}\n{}{}  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
            tenants_yaml(", max_in_flight: 64KiB"),
            exporter_yaml(downstream.addr, ""),
        ),
        &env(),
    )
    .await;
    let mut client = TraceServiceClient::connect(format!("http://{}", cujo.grpc))
        .await
        .expect("connect");
    let send = |token: &str, seed: u64| {
        let mut r = tonic::Request::new(support::make_request(
            if token == TOKEN_A { "svc-a" } else { "svc-b" },
            seed,
            100,
        ));
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
        r
    };
    let mut a_sent = 0;
    let mut refused = None;
    for seed in 1..=200u64 {
        match client.export(send(TOKEN_A, seed)).await {
            Ok(_) => a_sent += 100,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("team-a refused once over its share");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("team-a"), "{}", status.message());
    assert!(a_sent > 0);
    let in_flight = cujo
        .metric("cujo_tenant_in_flight_bytes{tenant=\"team-a\"}")
        .await;
    assert!(in_flight > 0.0, "team-a's spans are held");
    // team-b is not refused for team-a's flood.
    for seed in 1000..1010u64 {
        client
            .export(send(TOKEN_B, seed))
            .await
            .expect("team-b is served");
    }
    assert!(
        cujo.metric("cujo_tenant_refused_requests_total{tenant=\"team-a\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        cujo.metric("cujo_tenant_refused_requests_total{tenant=\"team-b\"}")
            .await,
        0.0
    );
    downstream.set_mode(DownstreamMode::Accept);
    downstream.wait_for_spans(a_sent + 1000).await;
    wait_for("team-a's share to be given back", || async {
        (cujo
            .metric("cujo_tenant_in_flight_bytes{tenant=\"team-a\"}")
            .await
            == 0.0)
            .then_some(())
    })
    .await;
    client
        .export(send(TOKEN_A, 500))
        .await
        .expect("team-a served again");
    downstream.wait_for_spans(a_sent + 1100).await;
    support::assert_accounting(&cujo).await;
    assert_no_secret(&cujo, "");
}

/// Pass-through: callers send their own `x-honeycomb-team`; each caller's spans go
/// downstream with its own key and only its own spans; a caller without one gets the
/// exporter's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_callers_are_sent_with_their_own_keys() {
    let downstream = Downstream::start().await;
    let cujo = Cujo::start_yaml_with_env(
        &format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    http: {{ endpoint: \"127.0.0.1:0\" }}\n{}{}    pass_headers: [x-honeycomb-team]\n  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
            exporter_yaml(downstream.addr, "").replace("    batch: { max_spans: 512, timeout: 50ms }\n", "    batch: { max_spans: 512, timeout: 300ms }\n"),
            shared_headers(),
        ),
        &env(),
    )
    .await;
    let team = |key: &str| vec![("x-honeycomb-team", key.to_string())];
    tokio::join!(
        sdk_send(&cujo, Sdk::Http, team(CALLER_1), "svc-1", "GET /1", 20),
        sdk_send(&cujo, Sdk::Grpc, team(CALLER_2), "svc-2", "GET /2", 20),
        sdk_send(&cujo, Sdk::Http, Vec::new(), "svc-0", "GET /0", 20),
    );
    downstream.wait_for_spans(60).await;
    let requests = requests_by_key(&downstream);
    for (keys, services) in &requests {
        let want = match services.as_slice() {
            [s] if s == "svc-1" => CALLER_1,
            [s] if s == "svc-2" => CALLER_2,
            [s] if s == "svc-0" => KEY_DEFAULT,
            other => panic!("a request held spans of {other:?}: {requests:?}"),
        };
        assert_eq!(keys, &vec![want.to_string()], "{requests:?}");
    }
    assert_eq!(cujo.metric("cujo_tenant_pass_through_callers").await, 2.0);
    wait_for("the pass-through counters", || async {
        (cujo
            .metric("cujo_tenant_exported_spans_total{tenant=\"pass-through\"}")
            .await
            == 40.0)
            .then_some(())
    })
    .await;
    assert_no_secret(&cujo, &cujo.metrics().await);
}

#[tokio::test]
async fn tenant_config_errors_name_the_key_and_no_secret() {
    let yaml = format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\ntenants:\n  - {{ name: team-a, bearer_tokens: [\"${{env:TEAM_A_TOKEN}}\"] }}\n  - {{ name: team-b, bearer_tokens: [\"${{env:TEAM_A_TOKEN}}\"] }}\n{}",
        exporter_yaml("127.0.0.1:9".parse().expect("addr"), "")
    );
    let dir = support::Scratch::new("cujo-tenants");
    let path = dir.join("cujo.yaml");
    std::fs::write(&path, yaml).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cujo"))
        .args(["check", "--config"])
        .arg(&path)
        .envs(env())
        .output()
        .expect("cujo check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            "tenants[1]: a token of tenant \"team-b\" is also a token of tenant \"team-a\""
        ),
        "{text}"
    );
    assert!(!text.contains(TOKEN_A), "{text}");
}
