//! Writes the seed inputs of every target into `<dir>/<target>/seed-*` (default
//! `fuzz/corpus`): real OTLP requests as protobuf and as OTLP/JSON, their gzip and zstd
//! bodies, the repository's config files, and SLO state files written by `save_state`.
//!
//!     cargo run -p cujo-fuzz --example seeds -- fuzz/corpus

use std::io::Write;
use std::path::{Path, PathBuf};

use cujo_sli::condition::{Scalar, SpanFacts, StatusCode};
use cujo_sli::cuj::TraceFacts;
use cujo_sli::engine::SliEngine;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::Event, span::Link,
};
use prost::Message;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let requests = requests();
    for (name, r) in &requests {
        let protobuf = r.encode_to_vec();
        write(&dir, "wire", name, &protobuf);
        write(
            &dir,
            "otlp_json",
            name,
            &serde_json::to_vec(r).expect("OTLP/JSON"),
        );
    }
    write(&dir, "otlp_json", "spec-example", SPEC_JSON.as_bytes());

    let body = requests[1].1.encode_to_vec();
    // Selector: bit 0 coding, bits 1-4 the limit (64 << n), bit 5 a tight memory share.
    let (gzip, zstd, big_limit, small_limit) = (0u8, 1u8, 14u8 << 1, 4u8 << 1);
    write(
        &dir,
        "body",
        "gzip",
        &[&[gzip | big_limit][..], &gz(&body)].concat(),
    );
    write(
        &dir,
        "body",
        "zstd",
        &[&[zstd | big_limit][..], &zst(&body)].concat(),
    );
    let two_members = [gz(&body), gz(b"\n")].concat();
    write(
        &dir,
        "body",
        "gzip-two-members",
        &[&[gzip | big_limit][..], &two_members].concat(),
    );
    let mut streamed = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
    streamed.write_all(&body).expect("zstd");
    let streamed = streamed.finish().expect("zstd");
    write(
        &dir,
        "body",
        "zstd-no-size",
        &[&[zstd | big_limit][..], &streamed].concat(),
    );
    let zeros = vec![0u8; 64 << 10];
    write(
        &dir,
        "body",
        "gzip-over-limit",
        &[&[gzip | small_limit][..], &gz(&zeros)].concat(),
    );
    write(
        &dir,
        "body",
        "zstd-tight-share",
        &[&[zstd | big_limit | 0x20][..], &zst(&zeros)].concat(),
    );

    for entry in std::fs::read_dir("config").expect("run from the repository root") {
        let path = entry.expect("config entry").path();
        let name = path.file_stem().expect("a file name").to_string_lossy();
        write(
            &dir,
            "config",
            &name,
            &std::fs::read(&path).expect("config file"),
        );
    }
    write(&dir, "config", "env", ENV_YAML.as_bytes());

    for (name, mode, file) in states() {
        // Mode 0: the file as saved. Mode 1: its body alone, the harness appends the checksum.
        let file = if mode == 0 {
            &file[..]
        } else {
            &file[..file.len() - 8]
        };
        write(&dir, "state", name, &[&[mode][..], file].concat());
    }
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zst(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).expect("zstd")
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", s(service)), kv("host.name", s("node-1"))],
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        version: "1.2.3".into(),
        ..Default::default()
    })
}

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: if parent.is_none() { 2 } else { 3 },
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![kv("user.tier", s("gold"))],
        ..Default::default()
    }
}

/// Real requests, from the smallest to one that uses every kind of field.
fn requests() -> Vec<(&'static str, ExportTraceServiceRequest)> {
    let mut rich = span(1, 2, None, "POST /v1/checkout");
    rich.trace_state = "vendor=1".into();
    rich.attributes.extend([
        kv("http.response.status_code", Value::IntValue(503)),
        kv("sampled", Value::BoolValue(true)),
        kv("ratio", Value::DoubleValue(0.25)),
        kv("raw", Value::BytesValue(vec![0, 1, 2])),
        kv(
            "list",
            Value::ArrayValue(ArrayValue {
                values: vec![AnyValue {
                    value: Some(s("a")),
                }],
            }),
        ),
        kv(
            "map",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", Value::IntValue(-1))],
            }),
        ),
    ]);
    rich.events = vec![Event {
        time_unix_nano: 1_700_000_000_100_000_000,
        name: "retry".into(),
        attributes: vec![kv("attempt", Value::IntValue(2))],
        dropped_attributes_count: 0,
    }];
    rich.links = vec![Link {
        trace_id: vec![9; 16],
        span_id: vec![8; 8],
        trace_state: String::new(),
        attributes: vec![],
        dropped_attributes_count: 0,
        flags: 1,
    }];
    rich.status = Some(Status {
        message: "upstream failed".into(),
        code: 2,
    });
    let mut bad_trace = span(3, 4, None, "bad trace id");
    bad_trace.trace_id = vec![3; 15];
    let mut zero_span = span(3, 0, None, "zero span id");
    zero_span.span_id = vec![0; 8];
    vec![
        ("empty", ExportTraceServiceRequest::default()),
        (
            "one-span",
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: resource("api"),
                    scope_spans: vec![ScopeSpans {
                        scope: scope("http"),
                        spans: vec![span(1, 1, None, "GET /")],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            },
        ),
        (
            "trace",
            ExportTraceServiceRequest {
                resource_spans: vec![
                    ResourceSpans {
                        resource: resource("checkout-api"),
                        scope_spans: vec![
                            ScopeSpans {
                                scope: scope("http"),
                                spans: vec![rich, span(1, 3, Some(2), "SELECT orders")],
                                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                            },
                            ScopeSpans {
                                scope: None,
                                spans: vec![bad_trace, zero_span],
                                schema_url: String::new(),
                            },
                        ],
                        schema_url: String::new(),
                    },
                    ResourceSpans {
                        resource: resource("worker"),
                        scope_spans: vec![ScopeSpans {
                            scope: scope("jobs"),
                            spans: vec![span(1, 5, Some(3), "process payment")],
                            schema_url: String::new(),
                        }],
                        schema_url: String::new(),
                    },
                ],
            },
        ),
    ]
}

/// The OTLP/JSON example of the OpenTelemetry specification, shortened.
const SPEC_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},"scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","kind":2,"attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}},{"key":"count","value":{"intValue":"42"}},{"key":"ok","value":{"boolValue":true}},{"key":"list","value":{"arrayValue":{"values":[{"doubleValue":1.5}]}}}],"status":{"code":1}}]}]}]}"#;

/// Every kind of `${env:}` substitution the loader knows.
const ENV_YAML: &str = r#"receivers:
  otlp:
    grpc: { endpoint: "${env:CUJO_ENDPOINT}" }
    http: { endpoint: "${env:UNSET:-127.0.0.1:4318}" }
exporters:
  otlp:
    endpoint: "http://127.0.0.1:4317"
    headers: { x-honeycomb-team: "${env:HONEYCOMB_API_KEY}" }
"#;

/// A root span of the state target's CUJ.
struct Root {
    error: bool,
    tier: &'static str,
}

impl SpanFacts for Root {
    fn name(&self) -> &str {
        "POST /v1/checkout"
    }
    fn service(&self) -> &str {
        "api"
    }
    fn status(&self) -> StatusCode {
        if self.error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        }
    }
    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        (key == "user.tier").then_some(Scalar::Str(self.tier))
    }
}

/// State files written by `save_state`: an engine of no CUJ, the state target's engine as it
/// starts, and one of
/// the same CUJ with more room, holding more series than the target's limits keep (one
/// value longer than its cap).
fn states() -> Vec<(&'static str, u8, Vec<u8>)> {
    let now = cujo_fuzz::state::NOW_MS;
    let mut fresh = cujo_fuzz::state::engine();
    let config =
        cujo::config::Config::parse("seeds.yaml", cujo_fuzz::state::STATE_CONFIG, &|_| None)
            .expect("the state target's config");
    let mut roomy = SliEngine::new(config.cujs()).with_limits(config.slo.limits(4 << 20));
    for i in 0..60u64 {
        let tier = ["gold", "silver", "enterprise-plus"][i as usize % 3];
        let spans = [Root {
            error: i % 7 == 0,
            tier,
        }];
        let latency_ns = (50 + i * 10) * 1_000_000;
        roomy.observe(
            &TraceFacts {
                trace_id: [7; 16],
                root: &spans[0],
                root_start_ns: 0,
                root_end_ns: latency_ns,
                spans: &spans,
                last_end_ns: latency_ns,
                span_bits: None,
            },
            now - i * 3_600_000,
        );
    }
    // A file of no CUJ at all is the smallest a real cujo writes: a cheap start for mode 0.
    let empty = SliEngine::new(vec![]).save_state();
    // Saved at a clean shutdown, with totals restored and an alert notified as firing.
    let alert = cujo_sli::state::SavedAlert {
        cuj: "checkout".into(),
        sli: "availability".into(),
        window: "30d".into(),
        severity: "page".into(),
        started_at_ms: now - 60_000,
        clear_since_ms: None,
    };
    vec![
        ("no-cujs", 0, empty),
        ("fresh", 1, fresh.save_state()),
        ("three-series", 1, roomy.save_state()),
        (
            "three-series-clean",
            1,
            roomy.save_state_with(true, std::slice::from_ref(&alert)),
        ),
    ]
}
