//! The receivers cannot be exhausted before admission: against the real binary with a small
//! memory budget, slow uploads, idle HTTP/2 connections, bursts of large bodies and
//! compression bombs are each bounded by the receivers' share of `admission.max_in_flight`
//! and by the configured times, get the OTLP spec's answer (retryable when cujo is full,
//! not when the input is bad), and a normal client keeps being served.
//!
//! Memory is read from `/metrics` (`cujo_memory_used_bytes{component="receivers"}`) and from
//! `/proc` (RSS); every wait is on a condition with a deadline.

mod support;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use cujo_otlp::rpc::RpcStatus;
use http::Request;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use support::{Cujo, Downstream, exporter_yaml, make_request, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const MIB: u64 = 1024 * 1024;
/// The budget the tests run with: the receivers get a quarter of it (16 MiB).
const BUDGET: &str = "admission: { max_in_flight: 64MiB, retry_after: 1s }";
const RECEIVERS_SHARE: u64 = 16 * MIB;
const RECEIVERS_USED: &str = "cujo_memory_used_bytes{component=\"receivers\"}";
/// What a connection costs in the receivers' account (`cujo_otlp::server::CONNECTION_BYTES`).
const CONNECTION_BYTES: u64 = cujo_otlp::server::CONNECTION_BYTES as u64;

type ReqBody = BoxBody<Bytes, Infallible>;

/// cujo with [`BUDGET`] and both receivers configured by `receiver` (extra keys for each),
/// forwarding to a fresh downstream.
async fn start(receiver: &str) -> (Cujo, Downstream) {
    start_with(receiver, receiver, BUDGET).await
}

async fn start_with(grpc: &str, http: &str, admission: &str) -> (Cujo, Downstream) {
    let downstream = Downstream::start().await;
    let yaml = format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\"{grpc} }}\n    http: {{ endpoint: \"127.0.0.1:0\"{http} }}\n{admission}\n{}  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
        exporter_yaml(downstream.addr, "")
    );
    (Cujo::start_yaml(&yaml).await, downstream)
}

/// One gRPC message frame.
fn grpc_frame(payload: &[u8], compressed: bool) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + payload.len());
    buf.put_u8(u8::from(compressed));
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

/// One HTTP/2 connection of our own, and how it ended once it has.
struct H2 {
    sender: SendRequest<ReqBody>,
    opened: Instant,
    /// Once the connection ended: whether cleanly (after a GOAWAY), and when.
    ended: Arc<Mutex<Option<(bool, Instant)>>>,
}

impl H2 {
    async fn connect(addr: SocketAddr) -> H2 {
        let opened = Instant::now();
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2 handshake");
        let ended = Arc::new(Mutex::new(None));
        let e = ended.clone();
        tokio::spawn(async move {
            let result = conn.await;
            *e.lock().expect("lock") = Some((result.is_ok(), Instant::now()));
        });
        H2 {
            sender,
            opened,
            ended,
        }
    }

    fn ended(&self) -> Option<(bool, Instant)> {
        *self.ended.lock().expect("lock")
    }
}

/// The answer to a gRPC call.
#[derive(Debug)]
struct GrpcAnswer {
    code: i32,
    message: String,
    retry_delay: Option<Duration>,
}

impl GrpcAnswer {
    /// The OTLP spec's retryable refusal: UNAVAILABLE with RetryInfo.
    fn is_retryable_refusal(&self) -> bool {
        self.code == 14 && self.retry_delay.is_some()
    }
}

/// Sends one unary Export call with `body` on a connection.
async fn grpc_call(
    sender: &mut SendRequest<ReqBody>,
    addr: SocketAddr,
    encoding: Option<&str>,
    body: ReqBody,
) -> GrpcAnswer {
    let mut req = Request::post(format!("http://{addr}{EXPORT_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let req = req.body(body).expect("request");
    sender.ready().await.expect("connection ready");
    let response = tokio::time::timeout(support::DEADLINE, sender.send_request(req))
        .await
        .expect("response in time")
        .expect("response");
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(support::DEADLINE, body.collect())
        .await
        .expect("body in time")
        .expect("body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = if parts.headers.contains_key("grpc-status") {
        &parts.headers
    } else {
        &trailers
    };
    let text = |k: &str| {
        status
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let details = status
        .get("grpc-status-details-bin")
        .and_then(|v| RpcStatus::from_details_header(v.as_bytes()));
    GrpcAnswer {
        code: text("grpc-status").parse().expect("grpc-status"),
        message: text("grpc-message"),
        retry_delay: details.and_then(|d| d.retry_delay()),
    }
}

fn full(bytes: Bytes) -> ReqBody {
    Full::new(bytes).boxed()
}

/// A request body fed through a channel: send frames when you like, drop to end it.
fn streamed() -> (mpsc::Sender<Bytes>, ReqBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

/// The receivers' memory account, from `/metrics`.
async fn receivers_used(cujo: &Cujo) -> u64 {
    cujo.metric(RECEIVERS_USED).await as u64
}

/// Reads one HTTP/1.1 response from `s`: status, head, body (by Content-Length).
async fn http1_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + support::DEADLINE;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let body_start = end + 4;
            while buf.len() < body_start + length {
                let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk))
                    .await
                    .expect("body in time")
                    .expect("read");
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[body_start..body_start + length].to_vec();
            return (status, head.to_ascii_lowercase(), body);
        }
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap_or(0); // reset before an answer: none
        if n == 0 {
            return (0, String::new(), Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// HTTP/1.1 head of a protobuf POST declaring `length` bytes of body.
fn http1_head(length: usize, encoding: Option<&str>) -> String {
    let encoding = encoding
        .map(|e| format!("Content-Encoding: {e}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /v1/traces HTTP/1.1\r\nHost: cujo\r\nContent-Type: application/x-protobuf\r\n{encoding}Content-Length: {length}\r\n\r\n"
    )
}

/// A peer that declares a large body, sends part of it at once, then one byte a second.
struct SlowUpload {
    started: Instant,
    /// Resolves with how the peer was answered: HTTP status, or gRPC code.
    answer: tokio::task::JoinHandle<(i32, Duration)>,
}

impl SlowUpload {
    /// Over HTTP/1.1: `sent` bytes of a `declared`-byte body, then a byte a second.
    async fn http(addr: SocketAddr, declared: usize, sent: usize) -> SlowUpload {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(http1_head(declared, None).as_bytes())
            .await
            .expect("head");
        s.write_all(&vec![0x0a; sent]).await.expect("first part");
        let (mut read, mut write) = s.into_split();
        let trickle = tokio::spawn(async move {
            while write.write_all(b"\x0a").await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let answer = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            trickle.abort();
            let status = String::from_utf8_lossy(&buf)
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (status, started.elapsed())
        });
        SlowUpload { started, answer }
    }

    /// Over gRPC, on a connection of its own: a message frame declaring `declared` bytes,
    /// `sent` of them at once, then a byte a second.
    async fn grpc(addr: SocketAddr, declared: usize, sent: usize) -> SlowUpload {
        let started = Instant::now();
        let mut h2 = H2::connect(addr).await;
        let (tx, body) = streamed();
        let mut first = BytesMut::with_capacity(5 + sent);
        first.put_u8(0);
        first.put_u32(declared as u32);
        first.put_bytes(0x0a, sent);
        tx.send(first.freeze()).await.expect("first part");
        tokio::spawn(async move {
            while tx.send(Bytes::from_static(b"\x0a")).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let answer = tokio::spawn(async move {
            let a = grpc_call(&mut h2.sender, addr, None, body).await;
            (a.code, started.elapsed())
        });
        SlowUpload { started, answer }
    }
}

impl SlowUpload {
    /// Over gRPC, a stream on `h2` that sends its headers and never a byte of its body.
    fn grpc_silent(h2: &H2, addr: SocketAddr) -> SlowUpload {
        let started = Instant::now();
        let mut sender = h2.sender.clone();
        let (tx, body) = streamed();
        let answer = tokio::spawn(async move {
            let a = grpc_call(&mut sender, addr, None, body).await;
            drop(tx);
            (a.code, started.elapsed())
        });
        SlowUpload { started, answer }
    }
}

/// What a normal client's requests cost: the spans that were accepted and the connections
/// it opened to get them accepted.
struct Served {
    spans: usize,
    connections: usize,
}

/// A valid request on each transport is accepted, on new connections, by a client that
/// behaves as the OTLP exporters do: a retryable refusal (gRPC UNAVAILABLE, HTTP 503, which
/// a share full of requests still being handed on can answer) is retried until the deadline.
/// gRPC retries on its connection; HTTP/1 opens a new one when the refusal closed it.
async fn assert_served(cujo: &Cujo, seed: u64) -> Served {
    let spans = 20;
    let deadline = Instant::now() + support::DEADLINE;
    let mut h2 = H2::connect(cujo.grpc).await;
    let mut connections = 1;
    let req = make_request("normal-client", seed, spans).encode_to_vec();
    loop {
        let a = grpc_call(
            &mut h2.sender,
            cujo.grpc,
            None,
            full(grpc_frame(&req, false)),
        )
        .await;
        if a.code == 14 && Instant::now() < deadline {
            continue;
        }
        assert_eq!(a.code, 0, "a normal gRPC client is served: {a:?}");
        break;
    }
    let body = make_request("normal-client", seed + 1, spans).encode_to_vec();
    let mut s = TcpStream::connect(cujo.http).await.expect("connect");
    connections += 1;
    loop {
        let sent = async {
            s.write_all(http1_head(body.len(), None).as_bytes()).await?;
            s.write_all(&body).await
        }
        .await;
        let status = match sent {
            Ok(()) => http1_response(&mut s).await.0,
            Err(_) => 0, // closed after the last refusal
        };
        if (status == 503 || status == 0) && Instant::now() < deadline {
            if status == 0 || !http1_still_open(&mut s).await {
                s = TcpStream::connect(cujo.http).await.expect("connect");
                connections += 1;
            }
            continue;
        }
        assert_eq!(status, 200, "a normal HTTP client is served");
        break;
    }
    Served {
        spans: 2 * spans,
        connections,
    }
}

/// Whether the server kept `s` open after answering (a refusal before the body was read
/// closes it).
async fn http1_still_open(s: &mut TcpStream) -> bool {
    let mut probe = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(50), s.peek(&mut probe)).await {
        Ok(Ok(0)) | Ok(Err(_)) => false,
        Ok(Ok(_)) => true,
        Err(_) => true, // nothing to read and not closed
    }
}

/// Sixteen peers each declare an 8 MiB body, send 256 KiB of it and then trickle a byte a
/// second; eight more streams send their headers and nothing else. Their bytes are counted as they arrive, a normal client is served meanwhile,
/// RSS stays within the receivers' share plus a fixed overhead, and each slow peer is cut
/// off at the body timeout (3 s) with what it held given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_are_cut_off_and_their_memory_given_back() {
    const PEERS: usize = 16;
    const SILENT: usize = 8;
    const DECLARED: usize = 8 * MIB as usize;
    const SENT: usize = 256 * 1024;
    /// What RSS may grow by beyond the receivers' share: the allocator's granularity (its
    /// memory comes in 2 MiB huge pages, per thread), what it keeps after it is freed
    /// (mimalloc's purge delay, 10 s) and the runtime's slack. Measured: about 30 MiB.
    const OVERHEAD: u64 = 32 * MIB;
    let body_timeout = Duration::from_secs(3);
    let (cujo, downstream) = start(", body_timeout: 3s").await;
    let mut delivered = assert_served(&cujo, 1).await.spans;
    let baseline = cujo.rss_bytes();

    let mut peers = Vec::new();
    for i in 0..PEERS {
        peers.push(if i % 2 == 0 {
            SlowUpload::http(cujo.http, DECLARED, SENT).await
        } else {
            SlowUpload::grpc(cujo.grpc, DECLARED, SENT).await
        });
    }
    // And streams that are opened and never sent a byte, several on one connection.
    let silent = H2::connect(cujo.grpc).await;
    for _ in 0..SILENT {
        peers.push(SlowUpload::grpc_silent(&silent, cujo.grpc));
    }
    // Counted from their first byte: each body's buffer holds at least what arrived.
    let held = wait_for("the slow bodies to be counted", || async {
        let used = receivers_used(&cujo).await;
        (used >= (PEERS * SENT) as u64).then_some(used)
    })
    .await;
    assert!(held <= RECEIVERS_SHARE, "{held} bytes held");
    delivered += assert_served(&cujo, 100).await.spans;
    let rss = cujo.rss_bytes();
    assert!(
        rss <= baseline + RECEIVERS_SHARE + OVERHEAD,
        "RSS grew from {} to {} MiB with {PEERS} slow uploads holding {} MiB",
        baseline / MIB,
        rss / MIB,
        held / MIB
    );

    for (i, peer) in peers.into_iter().enumerate() {
        let (answer, took) = tokio::time::timeout(support::DEADLINE, peer.answer)
            .await
            .expect("the slow peer is answered")
            .expect("peer task");
        let expected = if i < PEERS && i % 2 == 0 { 408 } else { 4 }; // DEADLINE_EXCEEDED
        assert_eq!(answer, expected, "slow peer {i} after {took:?}");
        assert!(
            took >= body_timeout && took < body_timeout + Duration::from_secs(3),
            "slow peer {i} was cut off after {took:?} (body_timeout {body_timeout:?}, started {:?} ago)",
            peer.started.elapsed()
        );
    }
    drop(silent);
    // Their bodies and connections are given back.
    wait_for("the receivers' memory to come back", || async {
        (receivers_used(&cujo).await == 0).then_some(())
    })
    .await;
    downstream.wait_for_spans(delivered).await;
    assert_eq!(
        downstream.span_count(),
        delivered,
        "only the normal clients' spans"
    );
    let peak = support::proc_status_kib(cujo.pid(), "VmHWM:") * 1024;
    assert!(
        peak <= baseline + RECEIVERS_SHARE + OVERHEAD,
        "peak RSS {} MiB, baseline {} MiB",
        peak / MIB,
        baseline / MIB
    );
}

/// Twice as many idle HTTP/2 connections as the receivers' share can pay for: the ones
/// idle the longest give their place to new ones, so the share is never exceeded and a
/// normal client is still served; after `idle_timeout` (6 s: longer than the 5 s grace a
/// closing connection gets) the rest are closed with a GOAWAY and everything they held is
/// given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_bounded_by_the_budget_and_closed_when_idle() {
    let fit = (RECEIVERS_SHARE / CONNECTION_BYTES) as usize;
    let idle_timeout = Duration::from_secs(6);
    let (cujo, downstream) = start(", idle_timeout: 6s").await;
    let mut conns = Vec::with_capacity(2 * fit);
    for _ in 0..2 * fit {
        conns.push(H2::connect(cujo.grpc).await);
    }
    let closed = |conns: &[H2]| conns.iter().filter(|c| c.ended().is_some()).count();
    wait_for("the connections beyond the budget to be closed", || async {
        (closed(&conns) >= fit).then_some(())
    })
    .await;
    let used = receivers_used(&cujo).await;
    assert!(
        used <= RECEIVERS_SHARE,
        "{} idle connections hold {used} bytes, more than the receivers' share",
        2 * fit - closed(&conns)
    );
    // The normal client's connections (two, or more when a refusal made it reconnect) take
    // the places of as many idle ones.
    let served = assert_served(&cujo, 1).await;
    let delivered = served.spans;
    let taken = served.connections;
    wait_for("idle connections to give their places", || async {
        (closed(&conns) >= fit + taken).then_some(())
    })
    .await;
    // The ones that gave their places were the oldest.
    let open: Vec<usize> = (0..conns.len())
        .filter(|i| conns[*i].ended().is_none())
        .collect();
    assert!(
        open.len() == fit - taken && open.first() == Some(&(fit + taken)),
        "still open after the normal client's {taken} connections: {open:?}"
    );

    // Idle for idle_timeout: closed gracefully (a GOAWAY, then the connection ends cleanly).
    wait_for("the idle connections to be closed", || async {
        (closed(&conns) == conns.len()).then_some(())
    })
    .await;
    for i in open {
        let (clean, at) = conns[i].ended().expect("ended");
        let idle = at.duration_since(conns[i].opened);
        assert!(clean, "connection {i} closed without a GOAWAY");
        assert!(
            idle >= idle_timeout && idle < idle_timeout + Duration::from_secs(3),
            "connection {i} closed after {idle:?} idle (idle_timeout {idle_timeout:?})"
        );
    }
    wait_for("the receivers' memory to come back", || async {
        (receivers_used(&cujo).await == 0).then_some(())
    })
    .await;
    downstream.wait_for_spans(delivered).await;
    assert!(
        cujo.metric("cujo_memory_full_total{component=\"receivers\"}")
            .await
            >= fit as f64,
        "each connection that did not fit counts as the share being full"
    );
}

/// A span-heavy request of about `bytes` bytes (each span carries a 10 KiB attribute).
fn large_request(
    seed: u64,
    bytes: usize,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    let spans = bytes / (10 * 1024 + 100);
    let mut req = make_request("burst", seed, spans);
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.attributes.push(KeyValue {
                    key: "payload".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("x".repeat(10 * 1024))),
                    }),
                    ..Default::default()
                });
            }
        }
    }
    req
}

/// 24 concurrent 2 MiB requests (16 over gRPC, 8 over HTTP) against a 16 MiB receivers'
/// share: some are refused with the retryable answer (UNAVAILABLE + RetryInfo, 503 +
/// Retry-After), none as too large or invalid, and exactly the spans of the accepted ones
/// reach the downstream — received = forwarded + refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_share_is_refused_retryably_and_nothing_accepted_is_lost() {
    const GRPC: u64 = 16;
    const HTTP: u64 = 8;
    const SIZE: usize = 2 * MIB as usize;
    let (cujo, downstream) = start_with(
        ", max_recv_msg_size: 4MiB",
        ", max_request_body_size: 4MiB",
        BUDGET,
    )
    .await;
    let requests: Vec<_> = (0..GRPC + HTTP)
        .map(|i| {
            let req = large_request(i + 1, SIZE);
            let spans = support::span_keys(&req);
            (Bytes::from(req.encode_to_vec()), spans)
        })
        .collect();
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(H2::connect(cujo.grpc).await);
    }
    let mut tasks = Vec::new();
    for (i, (body, spans)) in requests.into_iter().enumerate() {
        let addr = if (i as u64) < GRPC {
            cujo.grpc
        } else {
            cujo.http
        };
        let mut sender = ((i as u64) < GRPC).then(|| conns[i % 4].sender.clone());
        tasks.push(tokio::spawn(async move {
            let accepted = if let Some(sender) = sender.as_mut() {
                let a = grpc_call(sender, addr, None, full(grpc_frame(&body, false))).await;
                assert!(a.code == 0 || a.is_retryable_refusal(), "{a:?}");
                if a.code != 0 {
                    assert!(a.message.contains("admission.max_in_flight"), "{a:?}");
                }
                a.code == 0
            } else {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                s.write_all(http1_head(body.len(), None).as_bytes())
                    .await
                    .expect("head");
                // Refused early, cujo may close before all of the body is written.
                let _ = s.write_all(&body).await;
                let (status, head, response) = http1_response(&mut s).await;
                assert!(
                    status == 200 || (status == 503 && head.contains("\r\nretry-after: ")),
                    "HTTP {status}: {head} {}",
                    String::from_utf8_lossy(&response)
                );
                status == 200
            };
            (accepted, spans)
        }));
    }
    let mut accepted_spans = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for t in tasks {
        let (ok, spans) = t.await.expect("client task");
        if ok {
            accepted += 1;
            accepted_spans.extend(spans);
        } else {
            refused += 1;
        }
    }
    assert!(refused > 0, "a 48 MiB burst fits a 16 MiB share?");
    assert!(accepted > 0, "nothing of the burst was accepted");
    downstream.wait_for_spans(accepted_spans.len()).await;
    let got: Vec<_> = downstream
        .requests()
        .iter()
        .flat_map(support::span_keys)
        .collect();
    assert_eq!(got.len(), accepted_spans.len(), "each accepted span once");
    let got: std::collections::HashSet<_> = got.into_iter().collect();
    assert_eq!(
        got,
        accepted_spans.into_iter().collect(),
        "exactly the accepted spans"
    );
    let m = cujo.metrics().await;
    let count = |outcome: &str| -> f64 {
        ["grpc", "http"]
            .iter()
            .map(|t| {
                support::metric_value(
                    &m,
                    &format!(
                        "cujo_receiver_requests_total{{transport=\"{t}\",outcome=\"{outcome}\"}}"
                    ),
                )
            })
            .sum()
    };
    assert_eq!(count("accepted"), accepted as f64);
    assert_eq!(count("refused"), refused as f64);
    assert_eq!(count("too_large") + count("invalid"), 0.0);
    // cujo counts a batch as sent once the downstream has answered.
    wait_for("forwarded = accepted on /metrics", || async {
        let sent = cujo.metric("cujo_exporter_sent_spans_total").await;
        (sent == got.len() as f64).then_some(())
    })
    .await;
    drop(conns);
    wait_for("the receivers' memory to come back", || async {
        (receivers_used(&cujo).await == 0).then_some(())
    })
    .await;
}

/// `inflated` zero bytes, gzip-compressed.
fn gzip_bomb(inflated: usize) -> Bytes {
    let zeros = vec![0u8; MIB as usize];
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..inflated / MIB as usize {
        enc.write_all(&zeros).expect("gzip");
    }
    Bytes::from(enc.finish().expect("gzip"))
}

/// A gzip bomb is counted as it inflates. While a slow upload holds half the receivers'
/// share, a bomb that would inflate past the rest is refused retryably (the share is full,
/// not the request bad); once the share is free, the same bomb is refused as too large at
/// the size limit (8 MiB), without inflating further. Either way all it took is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_counted_as_it_inflates() {
    const LIMIT: u64 = 8 * MIB;
    let bomb = tokio::task::spawn_blocking(|| gzip_bomb(1024 * MIB as usize));
    let (cujo, downstream) = start_with(
        ", max_recv_msg_size: 8MiB, body_timeout: 10s",
        ", max_request_body_size: 8MiB, body_timeout: 10s",
        BUDGET,
    )
    .await;
    let bomb = bomb.await.expect("bomb");
    let baseline = cujo.rss_bytes();

    // Half the share held by a body still arriving.
    let mut slow = TcpStream::connect(cujo.http).await.expect("connect");
    slow.write_all(http1_head(LIMIT as usize, None).as_bytes())
        .await
        .expect("head");
    slow.write_all(&vec![0x0a; 5 * MIB as usize])
        .await
        .expect("body");
    wait_for("the slow body to be counted", || async {
        (receivers_used(&cujo).await >= 5 * MIB).then_some(())
    })
    .await;
    let held = receivers_used(&cujo).await;

    let mut h2 = H2::connect(cujo.grpc).await;
    let a = grpc_call(
        &mut h2.sender,
        cujo.grpc,
        Some("gzip"),
        full(grpc_frame(&bomb, true)),
    )
    .await;
    assert!(a.is_retryable_refusal(), "{a:?}");
    assert!(a.message.contains("admission.max_in_flight"), "{a:?}");
    let mut s = TcpStream::connect(cujo.http).await.expect("connect");
    s.write_all(http1_head(bomb.len(), Some("gzip")).as_bytes())
        .await
        .expect("head");
    s.write_all(&bomb).await.expect("bomb");
    let (status, head, _) = http1_response(&mut s).await;
    assert_eq!(status, 503, "retryable while the share is full");
    assert!(head.contains("\r\nretry-after: "), "{head}");
    drop(s);
    wait_for("the bombs' bytes to be given back", || async {
        (receivers_used(&cujo).await <= held + CONNECTION_BYTES).then_some(())
    })
    .await;

    drop(slow);
    wait_for("the slow body to be given back", || async {
        (receivers_used(&cujo).await <= CONNECTION_BYTES).then_some(())
    })
    .await;
    let before = cujo.rss_bytes();
    let a = grpc_call(
        &mut h2.sender,
        cujo.grpc,
        Some("gzip"),
        full(grpc_frame(&bomb, true)),
    )
    .await;
    assert_eq!(a.code, 8, "RESOURCE_EXHAUSTED: {a:?}");
    assert_eq!(a.retry_delay, None, "too large is not retryable");
    assert!(a.message.contains("max_recv_msg_size"), "{a:?}");
    let mut s = TcpStream::connect(cujo.http).await.expect("connect");
    s.write_all(http1_head(bomb.len(), Some("gzip")).as_bytes())
        .await
        .expect("head");
    s.write_all(&bomb).await.expect("bomb");
    let (status, _, _) = http1_response(&mut s).await;
    assert_eq!(status, 413, "too large over HTTP");
    drop((s, h2));
    let peak = support::proc_status_kib(cujo.pid(), "VmHWM:") * 1024;
    assert!(
        peak <= before.max(baseline) + 2 * LIMIT + 8 * MIB,
        "a 1 GiB bomb with an 8 MiB limit: peak RSS {} MiB (before {} MiB)",
        peak / MIB,
        before / MIB
    );
    let delivered = assert_served(&cujo, 1).await.spans;
    downstream.wait_for_spans(delivered).await;
    wait_for("the receivers' memory to come back", || async {
        (receivers_used(&cujo).await == 0).then_some(())
    })
    .await;
}

/// RSS per idle HTTP/2 connection that carried one request: how `CONNECTION_BYTES` in
/// `cujo_otlp::server` was measured. Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_the_cost_of_an_idle_http2_connection() {
    const N: usize = 1000;
    let many = ", max_connections: 5000";
    // Spans per request (500 by default: about 130 KB, a typical SDK batch).
    let spans = std::env::var("MEASURE_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let payload = make_request("measure", 1, spans).encode_to_vec();
    let report = |what: &str, before: u64, after: u64| {
        println!(
            "{N} idle {what} connections: RSS {} -> {} KiB, {} bytes per connection",
            before / 1024,
            after / 1024,
            after.saturating_sub(before) / N as u64
        );
    };

    // HTTP/2: a connection that carried one gRPC request, then stays open.
    let (cujo, downstream) = start_with(many, many, "admission: { max_in_flight: 2GiB }").await;
    let grpc_once = || async {
        let mut h2 = H2::connect(cujo.grpc).await;
        let frame = full(grpc_frame(&payload, false));
        let a = grpc_call(&mut h2.sender, cujo.grpc, None, frame).await;
        assert_eq!(a.code, 0, "{a:?}");
        h2
    };
    // Warm up: one connection and request, so the allocator has its pools.
    let warm = grpc_once().await;
    let before = cujo.rss_bytes();
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push(grpc_once().await);
    }
    report("HTTP/2", before, cujo.rss_bytes());
    drop((warm, conns, cujo, downstream));

    // HTTP/1.1: the same over a keep-alive connection.
    let (cujo, downstream) = start_with(many, many, "admission: { max_in_flight: 2GiB }").await;
    let http1_once = || async {
        let mut s = TcpStream::connect(cujo.http).await.expect("connect");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: cujo\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(&payload).await.expect("body");
        assert_eq!(http1_response(&mut s).await.0, 200);
        s
    };
    let warm = http1_once().await;
    let before = cujo.rss_bytes();
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        conns.push(http1_once().await);
    }
    report("HTTP/1.1", before, cujo.rss_bytes());
    drop((warm, conns, cujo, downstream));
}
