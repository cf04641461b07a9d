//! Bad input against the real cujo binary: every malformed, oversized, hostile or slow request
//! gets a clear, spec-correct, non-retryable answer whose message names what was wrong, and
//! cujo keeps serving — after each bad request a valid one succeeds on the same transport and
//! its spans reach the downstream. The counters on `/metrics` agree with what was sent.
//!
//! gRPC requests go through a raw HTTP/2 client with hand-built message frames, so the tests
//! control the compressed flag, the declared length and every header.

mod support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use cujo_otlp::rpc::RpcStatus;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyInner;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use support::{Cujo, DEADLINE, Downstream, exporter_yaml, metric_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const MIB: u64 = 1024 * 1024;
/// gRPC codes OTLP clients retry (RESOURCE_EXHAUSTED only with RetryInfo).
const RETRYABLE_GRPC: [i32; 6] = [1, 4, 10, 11, 14, 15];
/// HTTP statuses OTLP/HTTP clients retry.
const RETRYABLE_HTTP: [u16; 4] = [429, 502, 503, 504];

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Debug, Clone, Copy)]
enum Transport {
    Grpc,
    Http,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// One cujo, its recording downstream, clients for both transports, and what has been sent
/// that must (or must not) reach the downstream.
struct Rig {
    cujo: Cujo,
    downstream: Downstream,
    /// HTTP/2-only client for the gRPC port; one pooled connection across calls.
    h2: HttpClient,
    /// HTTP/1.1 client for `/v1/traces`.
    h1: HttpClient,
    /// Makes every span's ids unique within the test.
    next_id: u64,
    /// Trace ids of valid spans sent: exactly these must arrive downstream.
    expected: BTreeSet<Vec<u8>>,
    /// Accepted requests per transport (grpc, http), for the `/metrics` check.
    accepted_requests: [u64; 2],
    /// Spans accepted per transport.
    accepted_spans: [u64; 2],
}

/// The answer to a raw gRPC call, read from the trailers or (trailers-only) the headers.
#[derive(Debug)]
struct GrpcReply {
    headers: HeaderMap,
    code: i32,
    message: String,
    details: Option<RpcStatus>,
    response: Option<ExportTraceServiceResponse>,
}

impl GrpcReply {
    /// Asserts a non-retryable failure with `code` whose message contains every one of `names`.
    fn assert_refused(&self, code: i32, names: &[&str]) {
        assert_eq!(self.code, code, "grpc-status of {self:?}");
        assert!(
            !RETRYABLE_GRPC.contains(&self.code),
            "{} is retryable",
            self.code
        );
        let retry = self.details.as_ref().and_then(RpcStatus::retry_delay);
        assert_eq!(retry, None, "bad input must not carry RetryInfo: {self:?}");
        for name in names {
            assert!(
                self.message.contains(name),
                "grpc-message {:?} does not name {name:?}",
                self.message
            );
        }
    }

    fn partial_success(&self) -> (i64, String) {
        assert_eq!(self.code, 0, "expected OK, got {self:?}");
        let p = self
            .response
            .as_ref()
            .and_then(|r| r.partial_success.clone())
            .unwrap_or_else(|| panic!("no partial_success in {self:?}"));
        (p.rejected_spans, p.error_message)
    }
}

#[derive(Debug)]
struct HttpReply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpReply {
    /// Asserts a non-retryable failure with `status` whose `google.rpc.Status` body (protobuf)
    /// has a message containing every one of `names`.
    fn assert_refused(&self, status: StatusCode, names: &[&str]) -> RpcStatus {
        self.assert_status_not_retryable(status);
        assert_eq!(
            self.content_type(),
            "application/x-protobuf",
            "error body of {self:?}"
        );
        let rpc = RpcStatus::decode(self.body.clone())
            .unwrap_or_else(|e| panic!("error body is not a google.rpc.Status ({e}): {self:?}"));
        assert_ne!(rpc.code, 0, "google.rpc.Status.code of an error");
        assert_eq!(rpc.retry_delay(), None, "no RetryInfo for bad input");
        for name in names {
            assert!(
                rpc.message.contains(name),
                "Status.message {:?} does not name {name:?}",
                rpc.message
            );
        }
        rpc
    }

    /// Like [`HttpReply::assert_refused`] for a JSON request: the Status comes back as JSON.
    fn assert_refused_json(&self, status: StatusCode, names: &[&str]) {
        self.assert_status_not_retryable(status);
        assert_eq!(
            self.content_type(),
            "application/json",
            "error body of {self:?}"
        );
        let json: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {self:?}"));
        let message = json["message"].as_str().unwrap_or_default();
        assert!(json["code"].as_i64().is_some_and(|c| c != 0), "{json}");
        for name in names {
            assert!(
                message.contains(name),
                "Status.message {message:?} does not name {name:?}"
            );
        }
    }

    fn assert_status_not_retryable(&self, status: StatusCode) {
        assert_eq!(
            self.status,
            status,
            "HTTP status of a response with body {:?}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(!RETRYABLE_HTTP.contains(&self.status.as_u16()));
        assert!(self.headers.get("retry-after").is_none(), "{self:?}");
    }

    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Rig {
    /// cujo with both receivers at the given size limits, forwarding to a fresh downstream.
    async fn start(grpc_limit: &str, http_limit: &str) -> Rig {
        let downstream = Downstream::start().await;
        let yaml = format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\", max_recv_msg_size: {grpc_limit} }}\n    http: {{ endpoint: \"127.0.0.1:0\", max_request_body_size: {http_limit} }}\n{}  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
            exporter_yaml(downstream.addr, "")
        );
        let cujo = Cujo::start_yaml(&yaml).await;
        Rig {
            cujo,
            downstream,
            h2: h2_client(),
            h1: Client::builder(TokioExecutor::new()).build_http(),
            next_id: 0,
            expected: BTreeSet::new(),
            accepted_requests: [0; 2],
            accepted_spans: [0; 2],
        }
    }

    /// A fresh (trace id, span id) pair, unique within this rig.
    fn fresh_ids(&mut self) -> (Vec<u8>, Vec<u8>) {
        self.next_id += 1;
        let mut trace_id = vec![0x7e; 8];
        trace_id.extend_from_slice(&self.next_id.to_be_bytes());
        let span_id = (self.next_id | 1 << 63).to_be_bytes().to_vec();
        (trace_id, span_id)
    }

    /// A valid span that must reach the downstream.
    fn valid_span(&mut self) -> Span {
        let (trace_id, span_id) = self.fresh_ids();
        self.expected.insert(trace_id.clone());
        span(trace_id, span_id, "GET /checkout")
    }

    fn valid_spans(&mut self, n: usize) -> Vec<Span> {
        (0..n).map(|_| self.valid_span()).collect()
    }

    /// A well-formed span in a request that is refused whole: it must not arrive.
    fn refused_span(&mut self) -> Span {
        let (trace_id, span_id) = self.fresh_ids();
        span(trace_id, span_id, "in a refused request")
    }

    /// A span with a 15-byte trace id: refused on its own.
    fn short_trace_id_span(&mut self) -> Span {
        let (mut trace_id, span_id) = self.fresh_ids();
        trace_id.truncate(15);
        span(trace_id, span_id, "short trace id")
    }

    /// A span with a 7-byte span id: refused on its own.
    fn short_span_id_span(&mut self) -> Span {
        let (trace_id, mut span_id) = self.fresh_ids();
        span_id.truncate(7);
        span(trace_id, span_id, "short span id")
    }

    fn note_accepted(&mut self, transport: Transport, spans: u64) {
        self.accepted_requests[transport as usize] += 1;
        self.accepted_spans[transport as usize] += spans;
    }

    async fn grpc(&self, encoding: Option<&str>, body: Bytes) -> GrpcReply {
        grpc_call(&self.h2, self.cujo.grpc, encoding, body).await
    }

    async fn http(
        &self,
        method: Method,
        content_type: Option<&str>,
        encoding: Option<&str>,
        body: impl Into<Bytes>,
    ) -> HttpReply {
        http_call(
            &self.h1,
            self.cujo.http,
            method,
            content_type,
            encoding,
            body,
        )
        .await
    }

    /// A valid request on each transport succeeds in full and its spans reach the downstream.
    async fn assert_serving(&mut self, after: &str) {
        let spans = self.valid_spans(2);
        let reply = self
            .grpc(None, grpc_frame(&request(spans).encode_to_vec(), 0))
            .await;
        assert_eq!(
            reply.code, 0,
            "a valid gRPC request after {after} failed: {reply:?}"
        );
        let response = reply.response.expect("response message");
        assert_eq!(response.partial_success, None, "after {after}");
        self.note_accepted(Transport::Grpc, 2);

        let spans = self.valid_spans(2);
        let reply = self
            .http(
                Method::POST,
                Some("application/x-protobuf"),
                None,
                request(spans).encode_to_vec(),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "a valid HTTP request after {after} failed: {reply:?}"
        );
        let response = ExportTraceServiceResponse::decode(reply.body).expect("response");
        assert_eq!(response.partial_success, None, "after {after}");
        self.note_accepted(Transport::Http, 2);

        self.assert_delivered().await;
    }

    /// Every valid span sent so far has arrived downstream, and nothing else has.
    async fn assert_delivered(&self) {
        self.downstream.wait_for_spans(self.expected.len()).await;
        let got: Vec<Vec<u8>> = self
            .downstream
            .spans()
            .into_iter()
            .map(|s| s.span.trace_id)
            .collect();
        let unique: BTreeSet<Vec<u8>> = got.iter().cloned().collect();
        assert_eq!(got.len(), unique.len(), "no span forwarded twice");
        assert_eq!(
            unique, self.expected,
            "exactly the valid spans reach the downstream"
        );
    }

    /// The receiver counters for `transport` match what this test sent.
    async fn assert_counters(
        &self,
        transport: Transport,
        invalid: u64,
        too_large: u64,
        rejected_spans: u64,
    ) {
        let m = self.cujo.metrics().await;
        let t = transport.label();
        let requests = |outcome: &str| {
            metric_value(
                &m,
                &format!("cujo_receiver_requests_total{{transport=\"{t}\",outcome=\"{outcome}\"}}"),
            )
        };
        let spans = |outcome: &str| {
            metric_value(
                &m,
                &format!("cujo_receiver_spans_total{{transport=\"{t}\",outcome=\"{outcome}\"}}"),
            )
        };
        let i = transport as usize;
        assert_eq!(requests("invalid"), invalid as f64, "{t} invalid requests");
        assert_eq!(requests("too_large"), too_large as f64, "{t} too_large");
        assert_eq!(
            requests("refused"),
            0.0,
            "{t}: bad input is never 'refused'"
        );
        assert_eq!(
            requests("accepted"),
            self.accepted_requests[i] as f64,
            "{t} accepted requests"
        );
        assert_eq!(
            spans("accepted"),
            self.accepted_spans[i] as f64,
            "{t} accepted spans"
        );
        assert_eq!(
            spans("invalid"),
            rejected_spans as f64,
            "{t} invalid spans = partial_success.rejected_spans"
        );
    }
}

fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn span(trace_id: Vec<u8>, span_id: Vec<u8>, name: &str) -> Span {
    Span {
        trace_id,
        span_id,
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![KeyValue {
            key: "cuj.name".into(),
            value: Some(AnyValue {
                value: Some(AnyInner::StringValue("checkout".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "bad_input".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn resource() -> Resource {
    Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(AnyInner::StringValue("bad-input-test".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One gRPC message frame: compressed-flag byte, big-endian length, payload.
fn grpc_frame(payload: &[u8], compressed_flag: u8) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(compressed_flag);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

/// Decodes a percent-encoded `grpc-message`.
fn grpc_message(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn grpc_call(
    client: &HttpClient,
    addr: SocketAddr,
    encoding: Option<&str>,
    body: Bytes,
) -> GrpcReply {
    let mut req = Request::post(format!("http://{addr}{EXPORT_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let req = req.body(Full::new(body)).expect("request");
    let response = tokio::time::timeout(DEADLINE, client.request(req))
        .await
        .expect("gRPC response in time")
        .expect("gRPC response");
    let (parts, body) = response.into_parts();
    assert_eq!(parts.status, StatusCode::OK, "gRPC errors travel as 200");
    let collected = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .expect("gRPC body in time")
        .expect("gRPC body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let status = if parts.headers.contains_key("grpc-status") {
        assert!(data.is_empty(), "trailers-only response has no message");
        &parts.headers
    } else {
        &trailers
    };
    let code = status
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no grpc-status in {:?} / {trailers:?}", parts.headers));
    let message = status
        .get("grpc-message")
        .map(|v| grpc_message(v.as_bytes()))
        .unwrap_or_default();
    let details = status.get("grpc-status-details-bin").map(|v| {
        RpcStatus::from_details_header(v.as_bytes()).expect("grpc-status-details-bin decodes")
    });
    let response = (code == 0).then(|| {
        assert!(data.len() >= 5, "OK response carries one message frame");
        assert_eq!(data[0], 0, "response is not compressed");
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        assert_eq!(len, data.len() - 5, "frame length");
        ExportTraceServiceResponse::decode(&data[5..]).expect("ExportTraceServiceResponse")
    });
    GrpcReply {
        headers: parts.headers,
        code,
        message,
        details,
        response,
    }
}

async fn http_call(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: impl Into<Bytes>,
) -> HttpReply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}/v1/traces"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let response = tokio::time::timeout(DEADLINE, client.request(req))
        .await
        .expect("HTTP response in time")
        .expect("HTTP response");
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .expect("HTTP body in time")
        .expect("HTTP body")
        .to_bytes();
    HttpReply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Replaces the only occurrence of `from` in `buf` with `to` (same length).
fn patch(buf: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let positions: Vec<usize> = buf
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(positions.len(), 1, "placeholder occurs once");
    buf[positions[0]..positions[0] + to.len()].copy_from_slice(to);
}

/// A request whose one span is named with invalid UTF-8 (the rest of it is well-formed).
fn invalid_utf8_request(span_template: Span) -> Vec<u8> {
    let mut s = span_template;
    s.name = "name-PLACEHOLDER".into();
    let mut bytes = request(vec![s]).encode_to_vec();
    patch(&mut bytes, b"PLACEHOLDER", b"\xff\xfe\xfd\xc0\xc1 bad!!");
    bytes
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Tag and length of a length-delimited field.
fn len_prefix(field: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    put_varint(&mut out, u64::from(field << 3 | 2));
    put_varint(&mut out, len as u64);
    out
}

/// An `AnyValue` holding a `kvlist` nested `levels` deep. Built back to front in one buffer
/// (each wrapper's prefix appended reversed), so it is linear and never recurses.
fn nested_kvlist(levels: usize) -> Vec<u8> {
    let mut rev: Vec<u8> = vec![0x01, 0x18]; // AnyValue.int_value = 1
    for _ in 0..levels {
        let n = rev.len();
        rev.extend(len_prefix(2, n).iter().rev()); // KeyValue.value
        rev.extend([b'k', 0x01, 0x0a]); // KeyValue.key = "k"
        let n = rev.len();
        rev.extend(len_prefix(1, n).iter().rev()); // KeyValueList.values
        let n = rev.len();
        rev.extend(len_prefix(6, n).iter().rev()); // AnyValue.kvlist_value
    }
    rev.reverse();
    rev
}

/// A request whose one (otherwise valid) span has an attribute nested `levels` deep.
fn deeply_nested_request(span_template: Span, levels: usize) -> Vec<u8> {
    let any = nested_kvlist(levels);
    let mut kv = vec![0x0a, 0x04];
    kv.extend_from_slice(b"deep"); // KeyValue.key
    kv.extend(len_prefix(2, any.len()));
    kv.extend(any);
    let mut span = span_template.encode_to_vec();
    span.extend(len_prefix(9, kv.len())); // Span.attributes
    span.extend(kv);
    let mut scope_spans = len_prefix(2, span.len()); // ScopeSpans.spans
    scope_spans.extend(span);
    let resource = resource().encode_to_vec();
    let mut rs = len_prefix(1, resource.len()); // ResourceSpans.resource
    rs.extend(resource);
    rs.extend(len_prefix(2, scope_spans.len())); // ResourceSpans.scope_spans
    rs.extend(scope_spans);
    let mut req = len_prefix(1, rs.len()); // ExportTraceServiceRequest.resource_spans
    req.extend(rs);
    req
}

/// OTLP/JSON of a request whose one span has an attribute nested `levels` deep.
fn deeply_nested_json(span_template: Span, levels: usize) -> String {
    let mut s = span_template;
    s.attributes.clear();
    let mut json = serde_json::to_value(request(vec![s])).expect("json");
    let placeholder = "DEEP-PLACEHOLDER";
    json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] =
        serde_json::json!([{ "key": "deep", "value": placeholder }]);
    let mut deep = String::with_capacity(levels * 50);
    for _ in 0..levels {
        deep.push_str(r#"{"kvlistValue":{"values":[{"key":"k","value":"#);
    }
    deep.push_str(r#"{"intValue":"1"}"#);
    for _ in 0..levels {
        deep.push_str("}]}}");
    }
    json.to_string()
        .replacen(&format!("\"{placeholder}\""), &deep, 1)
}

/// `inflated` zero bytes, gzip-compressed, streamed through the encoder in 1 MiB chunks.
fn gzip_bomb(inflated: u64) -> Bytes {
    let zeros = vec![0u8; MIB as usize];
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..inflated / MIB {
        enc.write_all(&zeros).expect("gzip");
    }
    Bytes::from(enc.finish().expect("gzip"))
}

/// `inflated` zero bytes, zstd-compressed, streamed in 1 MiB chunks.
fn zstd_bomb(inflated: u64) -> Bytes {
    let zeros = vec![0u8; MIB as usize];
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).expect("zstd");
    for _ in 0..inflated / MIB {
        enc.write_all(&zeros).expect("zstd");
    }
    Bytes::from(enc.finish().expect("zstd"))
}

fn peak_rss_bytes(cujo: &Cujo) -> u64 {
    support::proc_status_kib(cujo.pid(), "VmHWM:") * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_input_gets_non_retryable_errors_and_cujo_keeps_serving() {
    let mut rig = Rig::start("64KiB", "16MiB").await;
    rig.assert_serving("start-up").await;
    let (mut invalid, mut too_large, mut rejected) = (0, 0, 0);

    // Undecodable protobuf.
    let reply = rig
        .grpc(None, grpc_frame(b"not a protobuf message \xff\xfe", 0))
        .await;
    reply.assert_refused(3, &["ExportTraceServiceRequest"]);
    invalid += 1;
    rig.assert_serving("garbage protobuf").await;

    // Invalid UTF-8 in a span name.
    let s = rig.refused_span();
    let reply = rig
        .grpc(None, grpc_frame(&invalid_utf8_request(s), 0))
        .await;
    reply.assert_refused(3, &["UTF-8", "Span"]);
    invalid += 1;
    rig.assert_serving("invalid UTF-8").await;

    // A message over receivers.otlp.grpc.max_recv_msg_size (64 KiB): not retryable, so no
    // RetryInfo.
    let mut spans = vec![rig.refused_span()];
    spans[0].name = "x".repeat(100 * 1024);
    let big = request(spans).encode_to_vec();
    let reply = rig.grpc(None, grpc_frame(&big, 0)).await;
    reply.assert_refused(8, &["max_recv_msg_size", "65536"]);
    too_large += 1;
    rig.assert_serving("an oversized message").await;

    // Small on the wire but over the limit once inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&big).expect("gzip");
    let small = gz.finish().expect("gzip");
    assert!(small.len() < 16 * 1024);
    let reply = rig.grpc(Some("gzip"), grpc_frame(&small, 1)).await;
    reply.assert_refused(8, &["max_recv_msg_size"]);
    too_large += 1;
    rig.assert_serving("an oversized compressed message").await;

    // Unsupported grpc-encoding: UNIMPLEMENTED, and the server says what it accepts.
    let spans = vec![rig.refused_span()];
    let reply = rig
        .grpc(
            Some("snappy"),
            grpc_frame(&request(spans).encode_to_vec(), 1),
        )
        .await;
    reply.assert_refused(12, &["snappy"]);
    let accepts = reply
        .headers
        .get("grpc-accept-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        accepts.contains("gzip"),
        "grpc-accept-encoding: {accepts:?}"
    );
    invalid += 1;
    rig.assert_serving("grpc-encoding snappy").await;

    // Compressed flag without a grpc-encoding: a protocol error (INTERNAL), not retryable.
    let spans = vec![rig.refused_span()];
    let reply = rig
        .grpc(None, grpc_frame(&request(spans).encode_to_vec(), 1))
        .await;
    reply.assert_refused(13, &["grpc-encoding"]);
    invalid += 1;
    rig.assert_serving("a compressed flag without grpc-encoding")
        .await;

    // Bad ids mixed with valid spans: OK with partial_success; the valid ones arrive.
    let spans = vec![
        rig.valid_span(),
        rig.short_trace_id_span(),
        rig.valid_span(),
        rig.short_span_id_span(),
        rig.valid_span(),
    ];
    let reply = rig
        .grpc(None, grpc_frame(&request(spans).encode_to_vec(), 0))
        .await;
    let (count, message) = reply.partial_success();
    assert_eq!(count, 2, "{message}");
    assert!(message.contains("trace_id"), "{message}");
    assert!(message.contains("spans[1]"), "{message}");
    rejected += 2;
    rig.note_accepted(Transport::Grpc, 3);
    rig.assert_delivered().await;

    // The same through a standard client (tonic, the generated TraceService client).
    let mut client = TraceServiceClient::connect(format!("http://{}", rig.cujo.grpc))
        .await
        .expect("tonic connect");
    let spans = vec![rig.short_span_id_span(), rig.valid_span()];
    let response = tokio::time::timeout(DEADLINE, client.export(request(spans)))
        .await
        .expect("in time")
        .expect("tonic export OK")
        .into_inner();
    let partial = response.partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("span_id has 7 bytes"),
        "{}",
        partial.error_message
    );
    rejected += 1;
    rig.note_accepted(Transport::Grpc, 1);
    rig.assert_serving("spans with bad ids").await;

    rig.assert_counters(Transport::Grpc, invalid, too_large, rejected)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bad_input_gets_non_retryable_errors_and_cujo_keeps_serving() {
    let mut rig = Rig::start("16MiB", "64KiB").await;
    rig.assert_serving("start-up").await;
    let (mut invalid, mut too_large, mut rejected) = (0, 0, 0);
    let protobuf = Some("application/x-protobuf");
    let json = Some("application/json");

    // Undecodable protobuf.
    let reply = rig
        .http(
            Method::POST,
            protobuf,
            None,
            &b"not a protobuf message \xff\xfe"[..],
        )
        .await;
    reply.assert_refused(StatusCode::BAD_REQUEST, &["ExportTraceServiceRequest"]);
    invalid += 1;
    rig.assert_serving("garbage protobuf").await;

    // Invalid UTF-8 in a span name.
    let s = rig.refused_span();
    let reply = rig
        .http(Method::POST, protobuf, None, invalid_utf8_request(s))
        .await;
    reply.assert_refused(StatusCode::BAD_REQUEST, &["UTF-8"]);
    invalid += 1;
    rig.assert_serving("invalid UTF-8").await;

    // Invalid JSON.
    let reply = rig
        .http(Method::POST, json, None, r#"{"resourceSpans": [ {"#)
        .await;
    reply.assert_refused_json(StatusCode::BAD_REQUEST, &["JSON"]);
    invalid += 1;
    rig.assert_serving("invalid JSON").await;

    // A JSON body labelled as protobuf.
    let spans = vec![rig.refused_span()];
    let body = serde_json::to_vec(&request(spans)).expect("json");
    let reply = rig.http(Method::POST, protobuf, None, body).await;
    reply.assert_refused(StatusCode::BAD_REQUEST, &["ExportTraceServiceRequest"]);
    invalid += 1;
    rig.assert_serving("JSON sent as protobuf").await;

    // A media type OTLP does not define.
    let reply = rig
        .http(Method::POST, Some("text/plain"), None, "hello")
        .await;
    reply.assert_refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, &["text/plain"]);
    invalid += 1;
    rig.assert_serving("text/plain").await;

    // An unknown Content-Encoding.
    let spans = vec![rig.refused_span()];
    let reply = rig
        .http(
            Method::POST,
            protobuf,
            Some("snappy"),
            request(spans).encode_to_vec(),
        )
        .await;
    reply.assert_refused(StatusCode::UNSUPPORTED_MEDIA_TYPE, &["snappy"]);
    invalid += 1;
    rig.assert_serving("content-encoding snappy").await;

    // Another method.
    let reply = rig.http(Method::GET, None, None, Bytes::new()).await;
    reply.assert_status_not_retryable(StatusCode::METHOD_NOT_ALLOWED);
    let allow = reply
        .headers
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(allow.contains("POST"), "Allow: {allow:?}");
    rig.assert_serving("GET /v1/traces").await;

    // A body over receivers.otlp.http.max_request_body_size (64 KiB).
    let mut spans = vec![rig.refused_span()];
    spans[0].name = "x".repeat(100 * 1024);
    let big = request(spans).encode_to_vec();
    let reply = rig.http(Method::POST, protobuf, None, big.clone()).await;
    reply.assert_refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        &["max_request_body_size", "65536"],
    );
    too_large += 1;
    rig.assert_serving("an oversized body").await;

    // Small on the wire, over the limit once inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&big).expect("gzip");
    let reply = rig
        .http(
            Method::POST,
            protobuf,
            Some("gzip"),
            gz.finish().expect("gzip"),
        )
        .await;
    reply.assert_refused(StatusCode::PAYLOAD_TOO_LARGE, &["max_request_body_size"]);
    too_large += 1;
    rig.assert_serving("an oversized compressed body").await;

    // Bad ids over protobuf: 200 with partial_success; the valid spans arrive.
    let spans = vec![
        rig.short_span_id_span(),
        rig.valid_span(),
        rig.short_trace_id_span(),
        rig.valid_span(),
    ];
    let reply = rig
        .http(Method::POST, protobuf, None, request(spans).encode_to_vec())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let partial = ExportTraceServiceResponse::decode(reply.body)
        .expect("response")
        .partial_success
        .expect("partial_success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("span_id has 7 bytes"),
        "{}",
        partial.error_message
    );
    rejected += 2;
    rig.note_accepted(Transport::Http, 2);
    rig.assert_delivered().await;

    // Bad ids over JSON.
    let spans = vec![rig.valid_span(), rig.short_trace_id_span()];
    let body = serde_json::to_vec(&request(spans)).expect("json");
    let reply = rig.http(Method::POST, json, None, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.content_type(), "application/json");
    let response: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON response");
    let partial = &response["partialSuccess"];
    let count = match &partial["rejectedSpans"] {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    assert_eq!(count, Some(1), "{response}");
    let message = partial["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("trace_id has 15 bytes"), "{response}");
    rejected += 1;
    rig.note_accepted(Transport::Http, 1);
    rig.assert_serving("spans with bad ids").await;

    rig.assert_counters(Transport::Http, invalid, too_large, rejected)
        .await;
}

/// 1 GiB of zeros in about 1 MB (gzip) or 32 KB (zstd), sent to both transports with a
/// 16 MiB limit. Each is refused as too large, and cujo's memory stays near the limit: the
/// decoder stops after `limit` bytes of output instead of inflating the bomb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_bombs_are_refused_without_inflating() {
    const INFLATED: u64 = 1024 * MIB;
    const LIMIT: u64 = 16 * MIB;
    let bombs = tokio::task::spawn_blocking(|| (gzip_bomb(INFLATED), zstd_bomb(INFLATED)));
    let mut rig = Rig::start("16MiB", "16MiB").await;
    rig.assert_serving("start-up").await;
    let baseline = rig.cujo.rss_bytes();
    let (gzip, zstd) = bombs.await.expect("bombs");
    assert!(
        gzip.len() < 2 * MIB as usize,
        "gzip bomb is {} bytes",
        gzip.len()
    );
    assert!(
        zstd.len() < 2 * MIB as usize,
        "zstd bomb is {} bytes",
        zstd.len()
    );

    // Peak RSS growth over the RSS just before one bomb, in MiB.
    let growth = |before: u64, rig: &Rig| (peak_rss_bytes(&rig.cujo).saturating_sub(before)) / MIB;
    let mut growths = Vec::new();
    for (coding, bomb) in [("gzip", &gzip), ("zstd", &zstd)] {
        let before = rig.cujo.rss_bytes();
        let reply = rig.grpc(Some(coding), grpc_frame(bomb, 1)).await;
        reply.assert_refused(8, &["max_recv_msg_size"]);
        growths.push((format!("gRPC {coding}"), growth(before, &rig)));
        rig.assert_serving(&format!("a gRPC {coding} bomb")).await;

        let before = rig.cujo.rss_bytes();
        let reply = rig
            .http(
                Method::POST,
                Some("application/x-protobuf"),
                Some(coding),
                bomb.clone(),
            )
            .await;
        reply.assert_refused(StatusCode::PAYLOAD_TOO_LARGE, &["max_request_body_size"]);
        growths.push((format!("HTTP {coding}"), growth(before, &rig)));
        rig.assert_serving(&format!("an HTTP {coding} bomb")).await;
    }
    rig.assert_counters(Transport::Grpc, 0, 2, 0).await;
    rig.assert_counters(Transport::Http, 0, 2, 0).await;

    // One bomb may cost the limit of output plus decoder state, not a multiple of it.
    let peak = peak_rss_bytes(&rig.cujo);
    for (what, grew) in &growths {
        assert!(
            *grew <= 2 * LIMIT / MIB,
            "a 1 GiB {what} bomb with a {} MiB limit raised cujo's peak RSS by {grew} MiB \
             (all bombs, MiB: {growths:?}; baseline {} MiB, peak {} MiB)",
            LIMIT / MIB,
            baseline / MIB,
            peak / MIB
        );
    }
    assert!(
        peak < baseline + 100 * MIB,
        "cujo's peak RSS grew from {} MiB to {} MiB on four 1 GiB bombs (per bomb: {growths:?})",
        baseline / MIB,
        peak / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_refused_without_crashing() {
    const LEVELS: usize = 10_000;
    let mut rig = Rig::start("16MiB", "16MiB").await;
    rig.assert_serving("start-up").await;

    // Sanity: the same shape, shallow, is a valid request.
    let s = rig.valid_span();
    let shallow = deeply_nested_request(s, 5);
    let reply = rig.grpc(None, grpc_frame(&shallow, 0)).await;
    assert_eq!(reply.code, 0, "{reply:?}");
    rig.note_accepted(Transport::Grpc, 1);

    let s = rig.refused_span();
    let deep = deeply_nested_request(s, LEVELS);
    let reply = rig.grpc(None, grpc_frame(&deep, 0)).await;
    reply.assert_refused(3, &["nesting"]);
    rig.assert_serving("a 10,000-level kvlist over gRPC").await;

    let reply = rig
        .http(Method::POST, Some("application/x-protobuf"), None, deep)
        .await;
    reply.assert_refused(StatusCode::BAD_REQUEST, &["nesting"]);
    rig.assert_serving("a 10,000-level kvlist over HTTP").await;

    let s = rig.refused_span();
    let json = deeply_nested_json(s, LEVELS);
    let reply = rig
        .http(Method::POST, Some("application/json"), None, json)
        .await;
    reply.assert_refused_json(StatusCode::BAD_REQUEST, &["JSON", "recursion limit"]);
    rig.assert_serving("a 10,000-level kvlist in JSON").await;

    rig.assert_counters(Transport::Grpc, 1, 0, 0).await;
    rig.assert_counters(Transport::Http, 2, 0, 0).await;
}

/// Opens `n` connections to `addr`; every other one sends a partial request head.
async fn slowloris(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: cujo\r\nContent-Type: appl")
                .await
                .expect("partial head");
        }
        conns.push(s);
    }
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_block_valid_clients() {
    let mut rig = Rig::start("16MiB", "16MiB").await;
    rig.assert_serving("start-up").await;
    let baseline = rig.cujo.rss_bytes();

    let conns = slowloris(rig.cujo.http, 300).await;

    // Valid requests on new connections still succeed promptly.
    let prompt = Duration::from_secs(5);
    let h1 = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let spans = rig.valid_spans(3);
    let reply = tokio::time::timeout(
        prompt,
        http_call(
            &h1,
            rig.cujo.http,
            Method::POST,
            Some("application/x-protobuf"),
            None,
            request(spans).encode_to_vec(),
        ),
    )
    .await
    .expect("a valid HTTP request is served promptly during slowloris");
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    rig.note_accepted(Transport::Http, 3);
    let spans = rig.valid_spans(3);
    let reply = tokio::time::timeout(
        prompt,
        grpc_call(
            &h2_client(),
            rig.cujo.grpc,
            None,
            grpc_frame(&request(spans).encode_to_vec(), 0),
        ),
    )
    .await
    .expect("a valid gRPC request is served promptly during slowloris");
    assert_eq!(reply.code, 0, "{reply:?}");
    rig.note_accepted(Transport::Grpc, 3);
    rig.assert_delivered().await;

    let rss = rig.cujo.rss_bytes();
    assert!(
        rss < baseline + 50 * MIB,
        "300 idle connections grew cujo's RSS from {} MiB to {} MiB",
        baseline / MIB,
        rss / MIB
    );

    drop(conns);
    rig.assert_serving("slowloris connections closed").await;
    rig.assert_counters(Transport::Http, 0, 0, 0).await;
    rig.assert_counters(Transport::Grpc, 0, 0, 0).await;
}

/// More silent connections than the listener's connection cap (4096): a connection that
/// never sends a byte must not hold its slot forever, or a handful of idle sockets lock every
/// client out. A valid client is served once the idle ones have had the header-read timeout
/// (10 s) to send a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_lock_out_valid_clients() {
    const CONNECTION_CAP: usize = 4096;
    let mut rig = Rig::start("16MiB", "16MiB").await;
    rig.assert_serving("start-up").await;

    let mut conns = Vec::with_capacity(CONNECTION_CAP + 8);
    for _ in 0..CONNECTION_CAP + 8 {
        conns.push(TcpStream::connect(rig.cujo.http).await.expect("connect"));
    }
    let h1 = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let spans = rig.valid_spans(1);
    let served = tokio::time::timeout(
        Duration::from_secs(20),
        http_call(
            &h1,
            rig.cujo.http,
            Method::POST,
            Some("application/x-protobuf"),
            None,
            request(spans).encode_to_vec(),
        ),
    )
    .await;
    // Which of the silent connections did cujo close?
    let mut closed = 0;
    for c in &mut conns {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), c.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    drop(conns);
    let reply = served.unwrap_or_else(|_| {
        panic!(
            "a valid HTTP request was not served within 20 s while {} silent connections were \
             open ({closed} of them closed by cujo)",
            CONNECTION_CAP + 8
        )
    });
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    rig.note_accepted(Transport::Http, 1);
    rig.assert_serving("silent connections closed").await;
}
