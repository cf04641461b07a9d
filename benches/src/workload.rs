//! Realistic OTLP trace traffic, encoded before the timed phase.
//!
//! A trace is a shop request: a SERVER root on `frontend` carrying the dimensions cujo
//! propagates (`cuj.name`, `user.tier`, `tenant.id`, HTTP method/route/status), with INTERNAL
//! and CLIENT children, a `checkout` service below it with database calls, and then either a
//! `payments` call or a Kafka hop to `order-worker` (a CONSUMER span with a link back to its
//! PRODUCER). Each service/pod is its own Resource.
//!
//! Spans are sent children first, root last, and each trace is cut into 2–4 chunks that go out
//! in different requests, interleaved with other traces — what an SDK's batch processor in
//! front of a gateway produces.
//!
//! The requests of one *cycle* are encoded once into a [`RequestPool`]. Request `seq` is
//! template `seq % len` with the first 8 bytes of every trace id (in spans and in links)
//! XOR-ed with a mask derived from the *epoch* `seq / len`. Every (trace id, span id) is
//! therefore distinct across the whole run, the traces of one epoch stay consistent across
//! its requests, and making a request costs one memcpy plus a few hundred 8-byte XORs.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value as AnyValueKind,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use crate::otlp::{for_each_span, locate_ids, span_key};

/// Small, fast, deterministic PRNG (splitmix64); the workload must be reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }

    fn id<const N: usize>(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(N);
        while out.len() < N {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(N);
        if out.iter().all(|&b| b == 0) {
            out[0] = 1;
        }
        out
    }
}

/// How the pool is shaped.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Spans per request are drawn uniformly from this range.
    pub min_request_spans: usize,
    pub max_request_spans: usize,
    /// Spans in one cycle of distinct requests (the pool); more means more memory, not more
    /// realism, since ids change every cycle anyway.
    pub pool_spans: usize,
    pub seed: u64,
    /// Bytes of an extra string attribute (`bench.padding`) on every span: with about 200,
    /// plain forwarding moves spans as large as enriched ones, which prices the bytes that
    /// propagation adds apart from the assembler's own work.
    pub padding_bytes: usize,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            min_request_spans: 100,
            max_request_spans: 500,
            pool_spans: 200_000,
            seed: 0x00c0_ffee,
            padding_bytes: 0,
        }
    }
}

/// One pre-encoded request and where its ids are.
#[derive(Debug)]
struct Template {
    bytes: Vec<u8>,
    /// Offsets of each span's 16-byte trace id and 8-byte span id.
    span_ids: Vec<(u32, u32)>,
    /// Offsets of link trace ids, patched with the same mask as span trace ids.
    link_trace_ids: Vec<u32>,
    /// For each span (request order), the template index where its trace begins.
    trace_first: Vec<u32>,
}

/// What the pool looks like, printed before a run so results can be compared.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PoolStats {
    pub requests: usize,
    pub spans: u64,
    pub traces: u64,
    /// Encoded request bytes / spans: what a span costs on the wire, resources included.
    pub request_bytes_per_span: f64,
    /// Encoded `Span` message bytes / spans.
    pub span_message_bytes: f64,
    pub mean_spans_per_request: f64,
    pub mean_spans_per_trace: f64,
    /// Mean number of requests a trace is spread over.
    pub mean_requests_per_trace: f64,
}

/// One request ready to send.
#[derive(Debug, Clone)]
pub struct Instance {
    pub body: Bytes,
    pub spans: u32,
    /// Sum of [`span_key`] over the request's spans.
    pub checksum: u64,
}

/// A cycle of pre-encoded requests; see the module doc.
#[derive(Debug)]
pub struct RequestPool {
    templates: Vec<Template>,
    /// `prefix[i]`: spans in templates `0..i`; `prefix[len]` is the cycle's span count.
    prefix: Vec<u64>,
    /// `complete_upto[i]`: every trace with a span in templates `..=i` is complete within
    /// templates `..=complete_upto[i]`.
    complete_upto: Vec<usize>,
    pub stats: PoolStats,
}

fn epoch_mask(epoch: u64) -> [u8; 8] {
    let mut r = Rng::new(epoch ^ 0x5eed_0fe9_0c0f);
    r.next_u64().to_le_bytes()
}

impl RequestPool {
    pub fn generate(cfg: &WorkloadConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cfg.min_request_spans >= 1 && cfg.min_request_spans <= cfg.max_request_spans,
            "request spans range must be 1 <= min <= max"
        );
        let requests = build_requests(cfg);
        let mut templates = Vec::with_capacity(requests.requests.len());
        let mut prefix = vec![0u64];
        let mut request_bytes = 0u64;
        for (req, trace_first) in requests.requests {
            let bytes = req.encode_to_vec();
            let ids = locate_ids(&bytes)?;
            let span_ids = ids
                .spans
                .iter()
                .map(|s| {
                    anyhow::ensure!(s.trace_id.len() == 16 && s.span_id.len() == 8);
                    Ok((s.trace_id.start as u32, s.span_id.start as u32))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let link_trace_ids = ids.link_trace_ids.iter().map(|r| r.start as u32).collect();
            request_bytes += bytes.len() as u64;
            prefix.push(prefix.last().unwrap() + span_ids.len() as u64);
            anyhow::ensure!(trace_first.len() == span_ids.len());
            templates.push(Template {
                bytes,
                span_ids,
                link_trace_ids,
                trace_first,
            });
        }
        let spans = *prefix.last().unwrap();
        anyhow::ensure!(spans > 0, "empty pool");
        let stats = PoolStats {
            requests: templates.len(),
            spans,
            traces: requests.traces,
            request_bytes_per_span: request_bytes as f64 / spans as f64,
            span_message_bytes: requests.span_message_bytes as f64 / spans as f64,
            mean_spans_per_request: spans as f64 / templates.len() as f64,
            mean_spans_per_trace: spans as f64 / requests.traces as f64,
            mean_requests_per_trace: requests.trace_request_pairs as f64 / requests.traces as f64,
        };
        Ok(RequestPool {
            templates,
            prefix,
            complete_upto: requests.complete_upto,
            stats,
        })
    }

    /// Number of distinct requests in one cycle.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    fn cycle_spans(&self) -> u64 {
        *self.prefix.last().unwrap()
    }

    /// Spans in requests `0..seq`; the open-loop schedule sends request `seq` at
    /// `spans_before(seq) / rate` seconds.
    pub fn spans_before(&self, seq: u64) -> u64 {
        let k = self.len() as u64;
        (seq / k) * self.cycle_spans() + self.prefix[(seq % k) as usize]
    }

    /// Once requests `0..next` are sent, the traces they began end in requests before
    /// `completion_seq(next)`. Sending [`RequestPool::completing_instance`] for each of
    /// `next..completion_seq(next)` completes exactly those traces, so no trace waits on a root
    /// that never comes and none is begun that won't end.
    pub fn completion_seq(&self, next: u64) -> u64 {
        if next == 0 {
            return 0;
        }
        let k = self.len() as u64;
        let last = next - 1;
        (last / k) * k + self.complete_upto[(last % k) as usize] as u64 + 1
    }

    /// Request `seq` cut down to the spans of traces begun before request `next`, or `None` if
    /// none are left; for `next <= seq < completion_seq(next)`.
    pub fn completing_instance(&self, seq: u64, next: u64) -> Option<Instance> {
        let k = self.len() as u64;
        assert!(
            next > 0 && seq >= next && seq / k == (next - 1) / k,
            "seq {seq} is not completing {next}"
        );
        let cutoff = ((next - 1) % k) as u32;
        let inst = self.instance(seq);
        let trace_first = &self.templates[(seq % k) as usize].trace_first;
        if trace_first.iter().all(|&f| f <= cutoff) {
            return Some(inst);
        }
        let mut req = ExportTraceServiceRequest::decode(inst.body).expect("own encoding");
        let mut index = 0;
        for rs in &mut req.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|_| {
                    index += 1;
                    trace_first[index - 1] <= cutoff
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        let body = Bytes::from(req.encode_to_vec());
        let mut checksum = 0u64;
        let spans = for_each_span(&body, |t, s| {
            checksum = checksum.wrapping_add(span_key(t, s))
        })
        .expect("own encoding");
        (spans > 0).then_some(Instance {
            body,
            spans: spans as u32,
            checksum,
        })
    }

    /// Request `seq`, with this epoch's trace ids.
    pub fn instance(&self, seq: u64) -> Instance {
        let k = self.len() as u64;
        let template = &self.templates[(seq % k) as usize];
        let mask = epoch_mask(seq / k);
        let mut buf = BytesMut::from(&template.bytes[..]);
        let patch = |buf: &mut BytesMut, off: u32| {
            let off = off as usize;
            for (b, m) in buf[off..off + 8].iter_mut().zip(mask) {
                *b ^= m;
            }
        };
        let mut checksum = 0u64;
        for &(trace_off, span_off) in &template.span_ids {
            patch(&mut buf, trace_off);
            let (t, s) = (trace_off as usize, span_off as usize);
            checksum = checksum.wrapping_add(span_key(&buf[t..t + 16], &buf[s..s + 8]));
        }
        for &off in &template.link_trace_ids {
            patch(&mut buf, off);
        }
        Instance {
            body: buf.freeze(),
            spans: template.span_ids.len() as u32,
            checksum,
        }
    }

    /// A request of exactly `spans` spans cut from the pool's first requests (for
    /// micro-benchmarks that want a fixed size).
    pub fn request_of(&self, spans: usize) -> ExportTraceServiceRequest {
        let mut out = ExportTraceServiceRequest::default();
        let mut need = spans;
        let mut seq = 0u64;
        while need > 0 {
            let inst = self.instance(seq);
            let mut req = ExportTraceServiceRequest::decode(inst.body).expect("own encoding");
            for rs in &mut req.resource_spans {
                for ss in &mut rs.scope_spans {
                    ss.spans.truncate(need);
                    need -= ss.spans.len();
                }
            }
            req.resource_spans
                .iter_mut()
                .for_each(|rs| rs.scope_spans.retain(|ss| !ss.spans.is_empty()));
            req.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
            out.resource_spans.append(&mut req.resource_spans);
            seq += 1;
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Trace shapes

const SCOPE_HTTP: usize = 0;
const SCOPE_DB: usize = 1;
const SCOPE_APP: usize = 2;
const SCOPE_MESSAGING: usize = 3;

const FRONTEND: usize = 0;
const CHECKOUT: usize = 1;
const PAYMENTS: usize = 2;
const ORDER_WORKER: usize = 3;
const PODS_PER_SERVICE: usize = 3;

struct ServiceInfo {
    name: &'static str,
    version: &'static str,
    language: &'static str,
    scopes: [&'static str; 4],
}

const SERVICES: [ServiceInfo; 4] = [
    ServiceInfo {
        name: "frontend",
        version: "2.14.1",
        language: "nodejs",
        scopes: [
            "@opentelemetry/instrumentation-http",
            "@opentelemetry/instrumentation-pg",
            "frontend",
            "@opentelemetry/instrumentation-kafkajs",
        ],
    },
    ServiceInfo {
        name: "checkout",
        version: "1.9.0",
        language: "go",
        scopes: [
            "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
            "github.com/XSAM/otelsql",
            "checkout",
            "github.com/IBM/sarama/otelsarama",
        ],
    },
    ServiceInfo {
        name: "payments",
        version: "3.2.7",
        language: "java",
        scopes: [
            "io.opentelemetry.grpc-1.6",
            "io.opentelemetry.lettuce-5.1",
            "payments",
            "io.opentelemetry.kafka-clients-0.11",
        ],
    },
    ServiceInfo {
        name: "order-worker",
        version: "1.9.0",
        language: "go",
        scopes: [
            "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
            "github.com/XSAM/otelsql",
            "order-worker",
            "github.com/IBM/sarama/otelsarama",
        ],
    },
];

struct Journey {
    cuj: &'static str,
    method: &'static str,
    route: &'static str,
    checkout_route: &'static str,
}

const JOURNEYS: [Journey; 5] = [
    Journey {
        cuj: "checkout",
        method: "POST",
        route: "/api/checkout",
        checkout_route: "/v1/orders",
    },
    Journey {
        cuj: "add-to-cart",
        method: "POST",
        route: "/api/cart/items",
        checkout_route: "/v1/carts/{id}/items",
    },
    Journey {
        cuj: "view-product",
        method: "GET",
        route: "/api/products/{id}",
        checkout_route: "/v1/prices/{sku}",
    },
    Journey {
        cuj: "search",
        method: "GET",
        route: "/api/search",
        checkout_route: "/v1/availability",
    },
    Journey {
        cuj: "view-cart",
        method: "GET",
        route: "/api/cart",
        checkout_route: "/v1/carts/{id}",
    },
];

const TIERS: [&str; 3] = ["free", "pro", "enterprise"];
const DB_TABLES: [&str; 5] = ["carts", "orders", "products", "prices", "inventory"];
const DB_OPS: [&str; 3] = ["SELECT", "SELECT", "UPDATE"];
const INTERNAL_FRONTEND: [&str; 3] = ["auth.verify_session", "flags.evaluate", "render.response"];
const INTERNAL_CHECKOUT: [&str; 3] = ["pricing.compute", "inventory.reserve", "cart.validate"];

fn kv(key: &str, value: AnyValueKind) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, AnyValueKind::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    kv(key, AnyValueKind::IntValue(value))
}

fn resource(service: usize, pod: usize) -> Resource {
    let info = &SERVICES[service];
    let pod_name = format!(
        "{}-7d9f8b6c4-{}",
        info.name,
        ["x2kqp", "m8zrt", "c4hwn"][pod]
    );
    Resource {
        attributes: vec![
            s("service.name", info.name),
            s("service.namespace", "shop"),
            s("service.version", info.version),
            s("deployment.environment.name", "production"),
            s("k8s.namespace.name", "shop"),
            s("k8s.deployment.name", info.name),
            s("k8s.pod.name", pod_name),
            s(
                "k8s.node.name",
                format!("ip-10-0-{}-{}.ec2.internal", 10 + pod, 20 + service),
            ),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.language", info.language),
            s("telemetry.sdk.version", "1.31.0"),
        ],
        ..Default::default()
    }
}

/// A span on its way into a request, with the resource (service, pod) and scope it belongs to.
struct PendingSpan {
    service: usize,
    pod: usize,
    scope: usize,
    span: Span,
    /// Index of the request carrying the trace's first chunk (set when the trace is opened).
    trace_first: u32,
}

struct TraceBuilder<'a> {
    rng: &'a mut Rng,
    trace_id: Vec<u8>,
    pods: [usize; 4],
    spans: Vec<PendingSpan>,
}

impl TraceBuilder<'_> {
    /// Adds a span inside `[start, end]` of its parent and returns (span id, start, end).
    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        service: usize,
        scope: usize,
        parent: Option<&[u8]>,
        name: String,
        kind: SpanKind,
        window: (u64, u64),
        attributes: Vec<KeyValue>,
        error: bool,
    ) -> (Vec<u8>, u64, u64) {
        let (lo, hi) = window;
        let span_len = hi - lo;
        let start = lo + self.rng.range(0, span_len / 4);
        let end = (start + self.rng.range(span_len / 8, span_len / 2).max(1000)).min(hi);
        let span_id = self.rng.id::<8>();
        let status = error.then(|| Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
        self.spans.push(PendingSpan {
            trace_first: 0,
            service,
            pod: self.pods[service],
            scope,
            span: Span {
                trace_id: self.trace_id.clone(),
                span_id: span_id.clone(),
                parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
                flags: 0x101,
                name,
                kind: kind as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                status,
                ..Default::default()
            },
        });
        (span_id, start, end)
    }

    fn db_call(&mut self, service: usize, parent: &[u8], window: (u64, u64)) {
        let table = *self.rng.pick(&DB_TABLES);
        let op = *self.rng.pick(&DB_OPS);
        let attrs = vec![
            s("db.system.name", "postgresql"),
            s("db.operation.name", op),
            s("db.collection.name", table),
            s("db.query.summary", format!("{op} {table}")),
            s(
                "db.query.text",
                format!("{op} * FROM {table} WHERE id = $1"),
            ),
            s("server.address", "pg-main.shop.svc"),
        ];
        self.span(
            service,
            SCOPE_DB,
            Some(parent),
            format!("{op} {table}"),
            SpanKind::Client,
            window,
            attrs,
            false,
        );
    }
}

/// One shop request; spans in creation order (parents before children, root first).
fn build_trace(rng: &mut Rng, base_ns: u64) -> Vec<PendingSpan> {
    let journey = rng.pick(&JOURNEYS);
    let error = rng.chance(0.02);
    let status = if error { 500 } else { 200 };
    let tenant = format!("tenant-{:04}", rng.range(1, 800));
    let tier = *rng.pick(&TIERS);
    let pods = [0; 4].map(|_| rng.range(0, PODS_PER_SERVICE as u64 - 1) as usize);
    let start = base_ns + rng.range(0, 1_000_000_000);
    let root_window = (start, start + rng.range(30_000_000, 900_000_000));
    let trace_id = rng.id::<16>();
    let path = journey
        .route
        .replace("{id}", &rng.range(1000, 99_999).to_string());
    let mut t = TraceBuilder {
        rng,
        trace_id,
        pods,
        spans: Vec::new(),
    };

    // frontend: the root, carrying the CUJ dimensions
    let root_attrs = vec![
        s("http.request.method", journey.method),
        s("url.path", path),
        s("http.route", journey.route),
        i("http.response.status_code", status),
        s("user.tier", tier),
        s("tenant.id", tenant),
        s("cuj.name", journey.cuj),
        s(
            "user_agent.original",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Safari/605.1.15",
        ),
    ];
    let name = format!("{} {}", journey.method, journey.route);
    let (root, rs, re) = t.span(
        FRONTEND,
        SCOPE_HTTP,
        None,
        name,
        SpanKind::Server,
        root_window,
        root_attrs,
        error,
    );
    // Widen the root to the full window so children fit.
    let root_window = (rs, re);
    for _ in 0..t.rng.range(1, 3) {
        let name = (*t.rng.pick(&INTERNAL_FRONTEND)).to_string();
        let attrs = vec![
            s("code.function.name", format!("shop.frontend.{name}")),
            s("code.file.path", "src/server/handlers.ts"),
        ];
        t.span(
            FRONTEND,
            SCOPE_APP,
            Some(&root),
            name,
            SpanKind::Internal,
            root_window,
            attrs,
            false,
        );
    }

    // frontend -> checkout over HTTP
    let client_attrs = vec![
        s("http.request.method", journey.method),
        s("server.address", "checkout.shop.svc"),
        i("server.port", 8080),
        s(
            "url.full",
            format!("http://checkout.shop.svc:8080{}", journey.checkout_route),
        ),
        i("http.response.status_code", status),
    ];
    let name = journey.method.to_string();
    let (client, cs, ce) = t.span(
        FRONTEND,
        SCOPE_HTTP,
        Some(&root),
        name,
        SpanKind::Client,
        root_window,
        client_attrs,
        error,
    );
    let server_attrs = vec![
        s("http.request.method", journey.method),
        s("http.route", journey.checkout_route),
        i("http.response.status_code", status),
    ];
    let name = format!("{} {}", journey.method, journey.checkout_route);
    let (checkout, ks, ke) = t.span(
        CHECKOUT,
        SCOPE_HTTP,
        Some(&client),
        name,
        SpanKind::Server,
        (cs, ce),
        server_attrs,
        error,
    );
    let checkout_window = (ks, ke);
    for _ in 0..t.rng.range(1, 3) {
        let name = (*t.rng.pick(&INTERNAL_CHECKOUT)).to_string();
        let attrs = vec![
            s("code.function.name", format!("checkout.{name}")),
            s("code.file.path", "internal/checkout/service.go"),
            i("app.items.count", t.rng.range(1, 12) as i64),
        ];
        let (internal, is, ie) = t.span(
            CHECKOUT,
            SCOPE_APP,
            Some(&checkout),
            name,
            SpanKind::Internal,
            checkout_window,
            attrs,
            false,
        );
        for _ in 0..t.rng.range(0, 3) {
            t.db_call(CHECKOUT, &internal, (is, ie));
        }
    }
    for _ in 0..t.rng.range(1, 4) {
        t.db_call(CHECKOUT, &checkout, checkout_window);
    }

    if t.rng.chance(0.6) {
        // checkout -> payments over gRPC
        let rpc = |t: &mut TraceBuilder| {
            vec![
                s("rpc.system", "grpc"),
                s("rpc.method", "shop.payments.v1.Payments/Authorize"),
                i("rpc.grpc.status_code", if error { 13 } else { 0 }),
                s("server.address", "payments.shop.svc"),
            ]
            .into_iter()
            .take(if t.rng.chance(0.5) { 4 } else { 3 })
            .collect::<Vec<_>>()
        };
        let name = "shop.payments.v1.Payments/Authorize".to_string();
        let attrs = rpc(&mut t);
        let (pc, ps, pe) = t.span(
            CHECKOUT,
            SCOPE_HTTP,
            Some(&checkout),
            name.clone(),
            SpanKind::Client,
            checkout_window,
            attrs,
            error,
        );
        let attrs = rpc(&mut t);
        let (pay, ps2, pe2) = t.span(
            PAYMENTS,
            SCOPE_HTTP,
            Some(&pc),
            name,
            SpanKind::Server,
            (ps, pe),
            attrs,
            error,
        );
        let attrs = vec![
            s("code.function.name", "payments.FraudScorer.score"),
            i("app.fraud.rules", 42),
        ];
        t.span(
            PAYMENTS,
            SCOPE_APP,
            Some(&pay),
            "fraud.score".into(),
            SpanKind::Internal,
            (ps2, pe2),
            attrs,
            false,
        );
        for _ in 0..t.rng.range(1, 4) {
            let key = format!("card:{}", t.rng.range(100_000, 999_999));
            let attrs = vec![
                s("db.system.name", "redis"),
                s("db.operation.name", "GET"),
                s("db.query.summary", "GET card"),
                s("app.cache.key", key),
            ];
            t.span(
                PAYMENTS,
                SCOPE_DB,
                Some(&pay),
                "GET".into(),
                SpanKind::Client,
                (ps2, pe2),
                attrs,
                false,
            );
        }
    } else if t.rng.chance(0.5) {
        // checkout -> Kafka -> order-worker, an async hop in the same trace with a link back
        let attrs = vec![
            s("messaging.system", "kafka"),
            s("messaging.destination.name", "orders"),
            s("messaging.operation.type", "send"),
        ];
        let (producer, _, pe) = t.span(
            CHECKOUT,
            SCOPE_MESSAGING,
            Some(&checkout),
            "send orders".into(),
            SpanKind::Producer,
            checkout_window,
            attrs,
            false,
        );
        let later = (pe + 5_000_000, pe + 400_000_000);
        let attrs = vec![
            s("messaging.system", "kafka"),
            s("messaging.destination.name", "orders"),
            s("messaging.operation.type", "process"),
            s("messaging.consumer.group.name", "order-worker"),
        ];
        let (consumer, cs2, ce2) = t.span(
            ORDER_WORKER,
            SCOPE_MESSAGING,
            Some(&producer),
            "process orders".into(),
            SpanKind::Consumer,
            later,
            attrs,
            false,
        );
        let link = Link {
            trace_id: t.trace_id.clone(),
            span_id: producer.clone(),
            flags: 0x101,
            ..Default::default()
        };
        t.spans.last_mut().unwrap().span.links.push(link);
        for _ in 0..t.rng.range(1, 3) {
            t.db_call(ORDER_WORKER, &consumer, (cs2, ce2));
        }
    }
    t.spans
}

struct BuiltRequests {
    /// Each request with its spans' `trace_first`.
    requests: Vec<(ExportTraceServiceRequest, Vec<u32>)>,
    complete_upto: Vec<usize>,
    traces: u64,
    trace_request_pairs: u64,
    span_message_bytes: u64,
}

struct ActiveTrace {
    /// Spans still to send, in creation order: popped from the end, so the root goes last.
    spans: Vec<PendingSpan>,
    chunk: usize,
    first_request: usize,
    last_request: usize,
}

fn build_requests(cfg: &WorkloadConfig) -> BuiltRequests {
    let mut rng = Rng::new(cfg.seed);
    let base_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut out = BuiltRequests {
        requests: Vec::new(),
        complete_upto: Vec::new(),
        traces: 0,
        trace_request_pairs: 0,
        span_message_bytes: 0,
    };
    let mut active: Vec<ActiveTrace> = Vec::new();
    let mut generated = 0usize;
    // Running max over requests of the last request of any trace they contain.
    let mut completes_at = 0usize;
    let mut trace_ends: Vec<(usize, usize)> = Vec::new(); // (first_request, last_request)
    loop {
        let index = out.requests.len();
        let target = rng.range(cfg.min_request_spans as u64, cfg.max_request_spans as u64) as usize;
        let mut picked: Vec<PendingSpan> = Vec::with_capacity(target);
        // One chunk from each open trace, oldest first, so a trace spreads over requests.
        for trace in active.iter_mut() {
            if picked.len() >= target {
                break;
            }
            let take = trace
                .chunk
                .min(trace.spans.len())
                .min(target - picked.len());
            let at = trace.spans.len() - take;
            picked.extend(trace.spans.drain(at..).rev());
            trace.last_request = index;
        }
        // Then open new traces to fill the request.
        while picked.len() < target && generated < cfg.pool_spans {
            let mut spans = build_trace(&mut rng, base_ns);
            spans.iter_mut().for_each(|p| p.trace_first = index as u32);
            if cfg.padding_bytes > 0 {
                let padding = "p".repeat(cfg.padding_bytes);
                for p in &mut spans {
                    p.span.attributes.push(s("bench.padding", padding.as_str()));
                }
            }
            generated += spans.len();
            out.traces += 1;
            let parts = rng.range(2, 4) as usize;
            let chunk = spans.len().div_ceil(parts);
            let mut trace = ActiveTrace {
                spans,
                chunk,
                first_request: index,
                last_request: index,
            };
            let take = trace.chunk.min(target - picked.len());
            let at = trace.spans.len() - take;
            picked.extend(trace.spans.drain(at..).rev());
            active.push(trace);
        }
        if picked.is_empty() {
            break;
        }
        for trace in active.iter().filter(|t| t.spans.is_empty()) {
            trace_ends.push((trace.first_request, trace.last_request));
        }
        active.retain(|t| !t.spans.is_empty());
        out.span_message_bytes += picked
            .iter()
            .map(|p| p.span.encoded_len() as u64)
            .sum::<u64>();
        out.requests.push(encode_group(picked));
    }
    // complete_upto[i] = max(i, last request of every trace starting at or before i)
    let n = out.requests.len();
    let mut last_of_first = vec![0usize; n];
    for &(first, last) in &trace_ends {
        last_of_first[first] = last_of_first[first].max(last);
        out.trace_request_pairs += (last - first + 1) as u64;
    }
    for (i, &last) in last_of_first.iter().enumerate() {
        completes_at = completes_at.max(last).max(i);
        out.complete_upto.push(completes_at);
    }
    out
}

/// Groups spans into one request: one `ResourceSpans` per (service, pod), one `ScopeSpans`
/// per instrumentation scope, in first-seen order. Also returns each span's `trace_first`, in
/// the order the spans appear in the request.
fn encode_group(spans: Vec<PendingSpan>) -> (ExportTraceServiceRequest, Vec<u32>) {
    // ((service, pod), [(scope, [(trace_first, span)])])
    type Scopes = Vec<(usize, Vec<(u32, Span)>)>;
    let mut groups: Vec<((usize, usize), Scopes)> = Vec::new();
    for p in spans {
        let key = (p.service, p.pod);
        let gi = match groups.iter().position(|(k, _)| *k == key) {
            Some(gi) => gi,
            None => {
                groups.push((key, Vec::new()));
                groups.len() - 1
            }
        };
        let scopes = &mut groups[gi].1;
        match scopes.iter_mut().find(|(sc, _)| *sc == p.scope) {
            Some((_, list)) => list.push((p.trace_first, p.span)),
            None => scopes.push((p.scope, vec![(p.trace_first, p.span)])),
        }
    }
    let mut trace_first = Vec::new();
    let resource_spans = groups
        .into_iter()
        .map(|((service, pod), scopes)| ResourceSpans {
            resource: Some(resource(service, pod)),
            scope_spans: scopes
                .into_iter()
                .map(|(scope, spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: SERVICES[service].scopes[scope].to_string(),
                        version: "0.57.0".to_string(),
                        ..Default::default()
                    }),
                    spans: spans
                        .into_iter()
                        .map(|(first, span)| {
                            trace_first.push(first);
                            span
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: "https://opentelemetry.io/schemas/1.30.0".to_string(),
        })
        .collect();
    (ExportTraceServiceRequest { resource_spans }, trace_first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::for_each_span;
    use std::collections::{HashMap, HashSet};

    fn small() -> RequestPool {
        RequestPool::generate(&WorkloadConfig {
            min_request_spans: 50,
            max_request_spans: 120,
            pool_spans: 5_000,
            seed: 7,
            ..WorkloadConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn ids_are_distinct_across_epochs_and_checksums_match() {
        let pool = small();
        let k = pool.len() as u64;
        let mut seen = HashSet::new();
        for seq in 0..3 * k {
            let inst = pool.instance(seq);
            let mut sum = 0u64;
            let n = for_each_span(&inst.body, |t, s| {
                assert!(
                    seen.insert((t.to_vec(), s.to_vec())),
                    "duplicate span id at seq {seq}"
                );
                sum = sum.wrapping_add(span_key(t, s));
            })
            .unwrap();
            assert_eq!(n, u64::from(inst.spans));
            assert_eq!(sum, inst.checksum);
        }
        assert_eq!(seen.len() as u64, 3 * pool.stats.spans);
    }

    #[test]
    fn every_trace_has_one_root_sent_last_and_completion_covers_open_traces() {
        let pool = small();
        let k = pool.len() as u64;
        assert!(
            pool.stats.mean_requests_per_trace >= 1.8,
            "{:?}",
            pool.stats
        );
        let bytes = pool.stats.request_bytes_per_span;
        assert!((200.0..340.0).contains(&bytes), "{bytes} bytes per span");
        // Per trace (epoch 1): the index of the request holding its root, and the last
        // request holding any of its spans.
        let mut roots: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
        for seq in k..2 * k {
            let inst = pool.instance(seq);
            let req = ExportTraceServiceRequest::decode(inst.body).unwrap();
            for span in req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                if span.parent_span_id.is_empty() {
                    assert!(roots.insert(span.trace_id.clone(), seq).is_none());
                }
                last.insert(span.trace_id.clone(), seq);
            }
        }
        assert_eq!(roots.len() as u64, pool.stats.traces);
        for (trace, root_seq) in &roots {
            assert_eq!(
                last[trace], *root_seq,
                "root is not in the last request of its trace"
            );
        }
        // Stopping anywhere, then sending the completing requests, leaves only whole traces.
        let trace_sizes = |bodies: Vec<Bytes>| {
            let mut sizes: HashMap<Vec<u8>, usize> = HashMap::new();
            for body in bodies {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                for span in req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .flat_map(|s| &s.spans)
                {
                    *sizes.entry(span.trace_id.clone()).or_default() += 1;
                }
            }
            sizes
        };
        let full = trace_sizes((k..2 * k).map(|seq| pool.instance(seq).body).collect());
        for stop in (k + 1..2 * k).step_by(7) {
            let done = pool.completion_seq(stop);
            assert!(done >= stop && done <= 2 * k);
            let mut bodies: Vec<Bytes> = (k..stop).map(|seq| pool.instance(seq).body).collect();
            bodies.extend(
                (stop..done)
                    .filter_map(|seq| pool.completing_instance(seq, stop))
                    .map(|i| i.body),
            );
            for (trace, n) in trace_sizes(bodies) {
                assert_eq!(
                    n, full[&trace],
                    "a trace is incomplete after stopping at {stop}"
                );
            }
        }
        assert_eq!(pool.completion_seq(2 * k), 2 * k);
    }

    #[test]
    fn spans_are_realistic_size() {
        let pool = RequestPool::generate(&WorkloadConfig::default()).unwrap();
        eprintln!("{:?}", pool.stats);
        let bytes = pool.stats.request_bytes_per_span;
        assert!(
            (255.0..290.0).contains(&bytes),
            "{bytes} request bytes per span"
        );
    }

    #[test]
    fn request_of_has_exact_size() {
        let pool = small();
        let req = pool.request_of(200);
        let n: usize = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(n, 200);
    }
}
