//! Sending a scenario's requests: N gRPC clients for a bounded time and count, backing off on
//! retryable refusals, and the one normal request that shows cujo still serves afterwards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use tonic::Code;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};

use super::scenario::{HostileRequest, RequestMaker};
use crate::codec::{RawCodec, TRACE_EXPORT_PATH};
use crate::otlp::read_partial_success;

/// Bounds of one scenario's load.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// How long requests keep being sent.
    pub duration: Duration,
    /// Requests sent at most (all clients together), however they end.
    pub max_requests: u64,
    /// Deadline of one request.
    pub request_timeout: Duration,
    /// Longest pause after refusals (the pause doubles from 50 ms up to this).
    pub max_backoff: Duration,
}

/// What the clients saw.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DriveStats {
    /// Requests acknowledged (fully or in part), their spans (minus partial rejections) and
    /// their bytes.
    pub accepted: u64,
    pub accepted_spans: u64,
    pub accepted_bytes: u64,
    /// Retryable refusals: UNAVAILABLE or RESOURCE_EXHAUSTED.
    pub refused: u64,
    /// Spans refused one by one through `partial_success`.
    pub rejected_spans: u64,
    /// Any other failure: connection, deadline, non-retryable status.
    pub failed: u64,
    pub first_refusal: Option<String>,
    pub first_failure: Option<String>,
    /// Time spent sending.
    pub elapsed_s: f64,
}

impl DriveStats {
    fn merge(&mut self, o: DriveStats) {
        self.accepted += o.accepted;
        self.accepted_spans += o.accepted_spans;
        self.accepted_bytes += o.accepted_bytes;
        self.refused += o.refused;
        self.rejected_spans += o.rejected_spans;
        self.failed += o.failed;
        self.first_refusal = self.first_refusal.take().or(o.first_refusal);
        self.first_failure = self.first_failure.take().or(o.first_failure);
    }
}

/// How one request ended.
enum Answer {
    Accepted { rejected_spans: u64 },
    Refused(String),
    Failed(String),
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Grpc<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(4u32 << 20)
        .initial_connection_window_size(16u32 << 20)
        .connect()
        .await?;
    Ok(Grpc::new(channel).max_decoding_message_size(16 << 20))
}

async fn send(grpc: &mut Grpc<Channel>, req: &HostileRequest, timeout: Duration) -> Answer {
    if let Err(e) = grpc.ready().await {
        return Answer::Failed(format!("connection: {e}"));
    }
    let mut request = tonic::Request::new(req.body.clone());
    request.set_timeout(timeout);
    let path = PathAndQuery::from_static(TRACE_EXPORT_PATH);
    match grpc.unary(request, path, RawCodec).await {
        Ok(response) => Answer::Accepted {
            rejected_spans: read_partial_success(response.get_ref())
                .map(|p| p.rejected_spans)
                .unwrap_or(0)
                .min(req.spans),
        },
        Err(s) if matches!(s.code(), Code::Unavailable | Code::ResourceExhausted) => {
            Answer::Refused(format!("{:?}: {}", s.code(), s.message()))
        }
        Err(s) => Answer::Failed(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// Sends requests from `makers` (one client each) to `addr` until the time or count runs out,
/// or `stop` turns true (the process under test was killed).
pub async fn drive(
    addr: SocketAddr,
    makers: Vec<RequestMaker>,
    cfg: DriveConfig,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<DriveStats> {
    anyhow::ensure!(!makers.is_empty(), "need at least one client");
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(makers.len());
    for mut maker in makers {
        let mut grpc = connect(addr).await?;
        let (cfg, stop, sent) = (cfg.clone(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = DriveStats::default();
            let mut backoff = Duration::ZERO;
            while Instant::now() < deadline
                && !stop.load(Ordering::Relaxed)
                && sent.fetch_add(1, Ordering::Relaxed) < cfg.max_requests
            {
                // Building a request can take milliseconds (amplify's is 15 MiB): tell the
                // runtime (multi-threaded) this worker blocks meanwhile.
                let req = tokio::task::block_in_place(|| maker.next_request());
                match send(&mut grpc, &req, cfg.request_timeout).await {
                    Answer::Accepted { rejected_spans } => {
                        stats.accepted += 1;
                        stats.accepted_spans += req.spans - rejected_spans;
                        stats.accepted_bytes += req.body.len() as u64;
                        stats.rejected_spans += rejected_spans;
                        backoff = Duration::ZERO;
                        continue;
                    }
                    Answer::Refused(e) => {
                        stats.refused += 1;
                        stats.first_refusal.get_or_insert(e);
                    }
                    Answer::Failed(e) => {
                        stats.failed += 1;
                        stats.first_failure.get_or_insert(e);
                    }
                }
                // Refused or failed: back off before the next request, longer each time.
                backoff = (backoff * 2)
                    .max(Duration::from_millis(50))
                    .min(cfg.max_backoff);
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(left)).await;
            }
            stats
        }));
    }
    let mut stats = DriveStats::default();
    for t in tasks {
        stats.merge(t.await?);
    }
    stats.elapsed_s = start.elapsed().as_secs_f64();
    Ok(stats)
}

/// How the closing normal request went.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProbeOutcome {
    pub accepted: bool,
    /// Attempts refused (retryable) or failed before the answer.
    pub refused: u64,
    pub failed: u64,
    /// From the first attempt to acceptance (or giving up).
    pub elapsed_s: f64,
    pub last_error: Option<String>,
}

/// Sends `req` until it is accepted or `timeout` passes, backing off on refusals and failures.
pub async fn probe(addr: SocketAddr, req: &HostileRequest, timeout: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let mut out = ProbeOutcome::default();
    let mut backoff = Duration::from_millis(50);
    let mut grpc = None;
    while start.elapsed() < timeout {
        if grpc.is_none() {
            match connect(addr).await {
                Ok(g) => grpc = Some(g),
                Err(e) => {
                    out.failed += 1;
                    out.last_error = Some(format!("connecting: {e:#}"));
                }
            }
        }
        if let Some(g) = grpc.as_mut() {
            match send(g, req, Duration::from_secs(10)).await {
                Answer::Accepted { .. } => {
                    out.accepted = true;
                    break;
                }
                Answer::Refused(e) => {
                    out.refused += 1;
                    out.last_error = Some(e);
                }
                Answer::Failed(e) => {
                    out.failed += 1;
                    out.last_error = Some(e);
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    out.elapsed_s = start.elapsed().as_secs_f64();
    out
}
