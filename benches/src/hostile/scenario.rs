//! The hostile scenarios: what each request looks like, and the cujo config it is aimed at.
//!
//! Every request is built with the generated OTLP types and encoded with prost; ids come from
//! a seeded [`Rng`] and large values from one random buffer, with a per-request prefix where
//! they must be distinct.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as AnyValueKind,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::workload::Rng;

/// cujo's default `receivers.otlp.grpc.max_recv_msg_size`: requests must stay below it.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The root attributes cujo propagates by default (`propagate.attributes`), spelled out so
/// the scenario configs say what they rely on.
const PROPAGATE_YAML: &str = r#"assembler: {}
propagate: { attributes: ["cuj.*", "user.tier", "tenant.id", "graphql.operation.name"] }"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One root whose propagated attribute is a multi-MiB string, and thousands of tiny
    /// children in its trace: propagation writes the value on every child.
    Amplify,
    /// Every span under a Resource of its own with unique attributes (many ResourceSpans per
    /// request): nothing to share between spans.
    UniqueResources,
    /// Tiny traces whose roots never come (children only, fresh trace ids): held until
    /// `trace_timeout`.
    RootlessFlood,
    /// Roots matching a CUJ with distinct dimension values of 10–100 KiB: series keys and
    /// settling events.
    LongDimensions,
    /// Spans with many large attribute values that nothing propagates: plain forwarding.
    BigValues,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Amplify,
        Scenario::UniqueResources,
        Scenario::RootlessFlood,
        Scenario::LongDimensions,
        Scenario::BigValues,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Amplify => "amplify",
            Scenario::UniqueResources => "unique-resources",
            Scenario::RootlessFlood => "rootless-flood",
            Scenario::LongDimensions => "long-dimensions",
            Scenario::BigValues => "big-values",
        }
    }

    /// The YAML appended to cujo's generated config (receiver, exporter, `/metrics`) when the
    /// command line gives none. No `admission:`: the default budget.
    pub fn default_yaml(self) -> String {
        match self {
            Scenario::Amplify | Scenario::UniqueResources | Scenario::RootlessFlood => {
                PROPAGATE_YAML.to_string()
            }
            Scenario::LongDimensions => format!(
                "{PROPAGATE_YAML}
cujs:
  - name: checkout-api
    match: {{ attributes: {{ cuj.name: checkout }} }}
    dimensions: [tenant.id]
    latency: {{ threshold: 300ms }}
  - name: checkout-e2e
    match: {{ attributes: {{ cuj.name: checkout }} }}
    dimensions: [tenant.id]
    availability: {{ scope: trace }}
    latency: {{ threshold: 300ms, measure: end_to_end }}"
            ),
            Scenario::BigValues => String::new(),
        }
    }

    /// The default config in a few words, for the results table.
    pub fn default_config_summary(self) -> &'static str {
        match self {
            Scenario::Amplify | Scenario::UniqueResources | Scenario::RootlessFlood => {
                "propagation, assembler defaults"
            }
            Scenario::LongDimensions => {
                "propagation + 2 CUJs (root, end-to-end) by tenant.id, defaults"
            }
            Scenario::BigValues => "plain forwarding",
        }
    }

    /// How big a request is by default.
    pub fn default_shape(self) -> Shape {
        match self {
            // 15 MiB value + 9,000 children of ~55 B: just under 16 MiB, and below the
            // assembler's default max_spans_per_trace (10,000).
            Scenario::Amplify => Shape {
                spans: 9_000,
                value_bytes: 15 << 20,
            },
            // ~450 B per span with its resource: ~4.5 MiB.
            Scenario::UniqueResources => Shape {
                spans: 10_000,
                value_bytes: 48,
            },
            Scenario::RootlessFlood => Shape {
                spans: 5_000,
                value_bytes: 0,
            },
            // 100 traces (root + child), values uniform in 10 KiB ..= 100 KiB: ~5.5 MiB.
            Scenario::LongDimensions => Shape {
                spans: 100,
                value_bytes: 100 << 10,
            },
            // 100 spans x 16 values of 8 KiB: ~12.8 MiB.
            Scenario::BigValues => Shape {
                spans: 100,
                value_bytes: 8 << 10,
            },
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The size knobs of a scenario's requests; what each means depends on the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Shape {
    /// amplify: children per trace; unique-resources and rootless-flood: spans per request;
    /// long-dimensions: traces per request; big-values: spans per request.
    pub spans: usize,
    /// amplify: the propagated value; unique-resources: each resource attribute value;
    /// long-dimensions: the longest dimension value; big-values: each attribute value.
    pub value_bytes: usize,
}

/// One encoded request.
#[derive(Debug, Clone)]
pub struct HostileRequest {
    pub body: Bytes,
    pub spans: u64,
}

/// Builds a scenario's requests one after another.
pub struct RequestMaker {
    scenario: Scenario,
    shape: Shape,
    /// amplify: the root attribute carrying the large value (one `propagate.attributes`
    /// matches).
    key: String,
    rng: Rng,
    /// Requests made; the prefix that keeps values of different requests distinct.
    seq: u64,
    /// Random printable bytes that large values are cut from.
    filler: Arc<Vec<u8>>,
}

/// Random printable ASCII, `len` bytes (values are strings, so they must be valid UTF-8).
pub fn filler(len: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        let mut r = rng.next_u64();
        for _ in 0..8 {
            out.push(ALPHABET[(r & 63) as usize]);
            r >>= 6;
        }
    }
    out.truncate(len);
    out
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(AnyValueKind::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn resource_spans(resource: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: resource,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "cujo-hostile".into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

impl RequestMaker {
    /// `filler` must be at least `shape.value_bytes` long (see [`filler`]).
    pub fn new(
        scenario: Scenario,
        shape: Shape,
        key: &str,
        seed: u64,
        filler: Arc<Vec<u8>>,
    ) -> anyhow::Result<RequestMaker> {
        anyhow::ensure!(shape.spans >= 1, "a request needs at least one span");
        anyhow::ensure!(
            filler.len() >= shape.value_bytes,
            "filler of {} bytes is shorter than the values ({} bytes)",
            filler.len(),
            shape.value_bytes
        );
        Ok(RequestMaker {
            scenario,
            shape,
            key: key.to_string(),
            rng: Rng::new(seed),
            seq: 0,
            filler,
        })
    }

    fn id(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out[0] |= 1; // never all zeros (an invalid id)
        out
    }

    /// A string of exactly `len` bytes (at least the prefix), distinct per (request, `tag`).
    fn value(&mut self, tag: usize, len: usize) -> String {
        let mut s = format!("{}-{tag}-", self.seq);
        let need = len.saturating_sub(s.len());
        let start = if self.filler.len() > need {
            self.rng.range(0, (self.filler.len() - need) as u64) as usize
        } else {
            0
        };
        let end = (start + need).min(self.filler.len());
        // The filler is ASCII, so any slice of it is valid UTF-8.
        s.push_str(&String::from_utf8_lossy(&self.filler[start..end]));
        s
    }

    fn span(&mut self, trace_id: &[u8], parent: Option<&[u8]>, name: &str, kind: SpanKind) -> Span {
        let end = now_ns();
        Span {
            trace_id: trace_id.to_vec(),
            span_id: self.id(8),
            parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
            name: name.into(),
            kind: kind as i32,
            start_time_unix_nano: end - 20_000_000,
            end_time_unix_nano: end,
            ..Default::default()
        }
    }

    /// The next request.
    pub fn next_request(&mut self) -> HostileRequest {
        let req = match self.scenario {
            Scenario::Amplify => self.amplify(),
            Scenario::UniqueResources => self.unique_resources(),
            Scenario::RootlessFlood => self.rootless_flood(),
            Scenario::LongDimensions => self.long_dimensions(),
            Scenario::BigValues => self.big_values(),
        };
        self.seq += 1;
        let spans = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len() as u64)
            .sum();
        HostileRequest {
            body: Bytes::from(req.encode_to_vec()),
            spans,
        }
    }

    fn amplify(&mut self) -> ExportTraceServiceRequest {
        let trace = self.id(16);
        let mut root = self.span(&trace, None, "GET /amplify", SpanKind::Server);
        let mut spans = Vec::with_capacity(self.shape.spans + 1);
        for _ in 0..self.shape.spans {
            let child = self.span(&trace, Some(&root.span_id), "c", SpanKind::Internal);
            spans.push(child);
        }
        let key = self.key.clone();
        root.attributes
            .push(kv(&key, self.value(0, self.shape.value_bytes)));
        // Children first, root last, as an SDK's batch would send them.
        spans.push(root);
        ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                vec![kv("service.name", "amplify".into())],
                spans,
            )],
        }
    }

    fn unique_resources(&mut self) -> ExportTraceServiceRequest {
        const PER_TRACE: usize = 10;
        let n = self.shape.spans;
        let len = self.shape.value_bytes;
        let mut out = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let trace = self.id(16);
            let root_id = self.id(8);
            let in_trace = PER_TRACE.min(n - i);
            for j in 0..in_trace {
                let last = j + 1 == in_trace;
                let mut span = if last {
                    let mut root = self.span(&trace, None, "GET /checkout", SpanKind::Server);
                    root.span_id = root_id.clone();
                    root.attributes = vec![
                        kv("cuj.name", "checkout".into()),
                        kv("user.tier", "pro".into()),
                        kv("tenant.id", format!("tenant-{:04}", self.rng.range(1, 800))),
                    ];
                    root
                } else {
                    self.span(&trace, Some(&root_id), "work", SpanKind::Internal)
                };
                span.attributes.push(kv("app.step", j.to_string()));
                let tag = i * 8;
                let resource = vec![
                    kv("service.name", self.value(tag, 24)),
                    kv("service.instance.id", self.value(tag + 1, len)),
                    kv("host.name", self.value(tag + 2, len)),
                    kv("k8s.pod.name", self.value(tag + 3, len)),
                    kv("k8s.pod.uid", self.value(tag + 4, len)),
                    kv("process.pid", self.rng.next_u64().to_string()),
                ];
                out.push(resource_spans(resource, vec![span]));
                i += 1;
            }
        }
        ExportTraceServiceRequest {
            resource_spans: out,
        }
    }

    fn rootless_flood(&mut self) -> ExportTraceServiceRequest {
        let mut spans = Vec::with_capacity(self.shape.spans);
        for _ in 0..self.shape.spans {
            let trace = self.id(16);
            let missing_root = self.id(8);
            spans.push(self.span(&trace, Some(&missing_root), "orphan", SpanKind::Internal));
        }
        ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                vec![kv("service.name", "rootless".into())],
                spans,
            )],
        }
    }

    fn long_dimensions(&mut self) -> ExportTraceServiceRequest {
        let longest = self.shape.value_bytes.max(10 << 10);
        let mut spans = Vec::with_capacity(2 * self.shape.spans);
        for t in 0..self.shape.spans {
            let trace = self.id(16);
            let mut root = self.span(&trace, None, "POST /checkout", SpanKind::Server);
            let child = self.span(&trace, Some(&root.span_id), "charge", SpanKind::Client);
            let len = self.rng.range(10 << 10, longest as u64) as usize;
            root.attributes = vec![
                kv("cuj.name", "checkout".into()),
                kv("user.tier", "pro".into()),
                kv("tenant.id", self.value(t, len)),
            ];
            spans.push(child);
            spans.push(root);
        }
        ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                vec![kv("service.name", "frontend".into())],
                spans,
            )],
        }
    }

    fn big_values(&mut self) -> ExportTraceServiceRequest {
        const VALUES_PER_SPAN: usize = 16;
        let mut spans = Vec::with_capacity(self.shape.spans);
        for s in 0..self.shape.spans {
            let trace = self.id(16);
            let mut span = self.span(&trace, None, "POST /upload", SpanKind::Server);
            for v in 0..VALUES_PER_SPAN {
                let value = self.value(s * VALUES_PER_SPAN + v, self.shape.value_bytes);
                span.attributes.push(kv(&format!("app.blob.{v}"), value));
            }
            spans.push(span);
        }
        ExportTraceServiceRequest {
            resource_spans: vec![resource_spans(
                vec![kv("service.name", "uploads".into())],
                spans,
            )],
        }
    }
}

/// A normal request: one small trace (root with the journey dimensions, two children) that a
/// healthy cujo accepts under any of the scenario configs.
pub fn normal_request(seed: u64) -> HostileRequest {
    let mut maker = RequestMaker {
        scenario: Scenario::RootlessFlood,
        shape: Shape {
            spans: 3,
            value_bytes: 0,
        },
        key: String::new(),
        rng: Rng::new(seed),
        seq: 0,
        filler: Arc::new(Vec::new()),
    };
    let trace = maker.id(16);
    let mut root = maker.span(&trace, None, "GET /cart", SpanKind::Server);
    root.attributes = vec![
        kv("cuj.name", "view-cart".into()),
        kv("user.tier", "free".into()),
        kv("tenant.id", "tenant-0001".into()),
    ];
    let a = maker.span(&trace, Some(&root.span_id), "load cart", SpanKind::Internal);
    let b = maker.span(&trace, Some(&root.span_id), "SELECT", SpanKind::Client);
    let req = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            vec![kv("service.name", "frontend".into())],
            vec![a, b, root],
        )],
    };
    HostileRequest {
        body: Bytes::from(req.encode_to_vec()),
        spans: 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::for_each_span;

    fn maker(scenario: Scenario) -> RequestMaker {
        let shape = scenario.default_shape();
        let filler = Arc::new(filler(shape.value_bytes + 1024, 3));
        RequestMaker::new(scenario, shape, "tenant.id", 7, filler).unwrap()
    }

    #[test]
    fn default_requests_fit_cujos_message_limit_and_count_their_spans() {
        for scenario in Scenario::ALL {
            let mut m = maker(scenario);
            let a = m.next_request();
            let b = m.next_request();
            assert!(
                a.body.len() < MAX_REQUEST_BYTES,
                "{scenario}: {} bytes",
                a.body.len()
            );
            assert_eq!(
                for_each_span(&a.body, |_, _| {}).unwrap(),
                a.spans,
                "{scenario}"
            );
            assert_ne!(a.body, b.body, "{scenario}: requests must differ");
        }
        let amplify = maker(Scenario::Amplify).next_request();
        assert!(amplify.body.len() > 15 << 20, "{}", amplify.body.len());
        assert_eq!(amplify.spans, 9_001);
    }

    #[test]
    fn unique_resources_puts_every_span_under_its_own_resource() {
        let req =
            ExportTraceServiceRequest::decode(maker(Scenario::UniqueResources).next_request().body)
                .unwrap();
        assert_eq!(req.resource_spans.len(), 10_000);
        let mut names = std::collections::HashSet::new();
        for rs in &req.resource_spans {
            let id = &rs.resource.as_ref().unwrap().attributes[1];
            assert!(
                names.insert(format!("{:?}", id.value)),
                "a resource repeats"
            );
        }
    }

    #[test]
    fn rootless_flood_sends_no_roots() {
        let req =
            ExportTraceServiceRequest::decode(maker(Scenario::RootlessFlood).next_request().body)
                .unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert!(spans.iter().all(|s| !s.parent_span_id.is_empty()));
        let traces: std::collections::HashSet<_> = spans.iter().map(|s| &s.trace_id).collect();
        assert_eq!(traces.len(), spans.len());
    }

    #[test]
    fn long_dimension_values_are_long_and_distinct() {
        let mut m = maker(Scenario::LongDimensions);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2 {
            let req = ExportTraceServiceRequest::decode(m.next_request().body).unwrap();
            for span in &req.resource_spans[0].scope_spans[0].spans {
                let Some(tenant) = span.attributes.iter().find(|a| a.key == "tenant.id") else {
                    continue;
                };
                let Some(AnyValueKind::StringValue(v)) =
                    tenant.value.as_ref().and_then(|v| v.value.clone())
                else {
                    panic!("tenant.id is not a string");
                };
                assert!((10 << 10..=100 << 10).contains(&v.len()), "{}", v.len());
                assert!(seen.insert(v), "a dimension value repeats");
            }
        }
        assert_eq!(seen.len(), 200);
    }

    #[test]
    fn the_normal_request_is_one_small_complete_trace() {
        let r = normal_request(1);
        assert_eq!(for_each_span(&r.body, |_, _| {}).unwrap(), 3);
        assert!(r.body.len() < 1024);
    }
}
