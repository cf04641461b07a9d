//! The clients: N gRPC connections sending pool requests, closed loop (`saturate`) or on a
//! fixed schedule (`rate`), then a flush that completes every trace they started.
//!
//! Requests are numbered by one shared counter; a client that takes a number always sends
//! that request, so after the timed phase "requests `0..next` were sent" holds exactly and
//! the flush knows which traces are open (see [`RequestPool::completion_seq`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::uri::PathAndQuery;
use tonic::Code;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};

use crate::codec::{RawCodec, TRACE_EXPORT_PATH};
use crate::otlp::read_partial_success;
use crate::poll::{EndpointPolls, PollConfig, Poller};
use crate::target::{ProcSample, proc_sample, self_sample};
use crate::workload::{Instance, RequestPool};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Closed loop: each client sends its next request when the previous one is answered.
    Saturate,
    /// Open loop: request `seq` is due at `spans_before(seq) / spans_per_s` seconds.
    Rate { spans_per_s: f64 },
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub mode: Mode,
    /// gRPC connections.
    pub clients: usize,
    /// Requests in flight per connection.
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Per attempt; a request that times out is counted failed, not retried (it may have
    /// been accepted).
    pub request_timeout: Duration,
    /// How long one request keeps being retried after refusals.
    pub retry_timeout: Duration,
    /// Admin endpoints GET at a fixed rate from the start of the warm-up to the end of the
    /// window, on threads of their own ([`crate::poll`]); `None`: no polling.
    pub poll: Option<PollConfig>,
}

/// What the clients saw.
#[derive(Debug, Clone)]
pub struct LoadStats {
    /// Spans and requests acknowledged inside the measured window.
    pub window_spans: u64,
    pub window_requests: u64,
    /// Request latency in µs (from first attempt, or from the due time in rate mode),
    /// acknowledgements inside the window only.
    pub latency_us: Histogram<u64>,
    /// All acknowledged spans (warm-up, window, flush), minus partial-success rejections.
    pub acked_spans: u64,
    pub acked_requests: u64,
    /// Sum of span keys over acknowledged requests that had no partial rejection.
    pub acked_checksum: u64,
    /// Spans refused one by one through `partial_success`.
    pub rejected_spans: u64,
    /// UNAVAILABLE / RESOURCE_EXHAUSTED answers (each followed by a retry unless the retry
    /// budget ran out).
    pub refusals: u64,
    /// Connection-level failures before a request went out (retried like refusals).
    pub transport_errors: u64,
    /// Requests abandoned after `retry_timeout` of refusals.
    pub gave_up: u64,
    /// Requests that failed for another reason (not retried).
    pub failed_requests: u64,
    pub failed_spans: u64,
    pub first_error: Option<String>,
    /// Requests sent after the window to complete open traces.
    pub flush_requests: u64,
}

impl LoadStats {
    fn new() -> Self {
        LoadStats {
            window_spans: 0,
            window_requests: 0,
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            acked_spans: 0,
            acked_requests: 0,
            acked_checksum: 0,
            rejected_spans: 0,
            refusals: 0,
            transport_errors: 0,
            gave_up: 0,
            failed_requests: 0,
            failed_spans: 0,
            first_error: None,
            flush_requests: 0,
        }
    }

    fn merge(&mut self, o: LoadStats) {
        self.window_spans += o.window_spans;
        self.window_requests += o.window_requests;
        let _ = self.latency_us.add(&o.latency_us);
        self.acked_spans += o.acked_spans;
        self.acked_requests += o.acked_requests;
        self.acked_checksum = self.acked_checksum.wrapping_add(o.acked_checksum);
        self.rejected_spans += o.rejected_spans;
        self.refusals += o.refusals;
        self.transport_errors += o.transport_errors;
        self.gave_up += o.gave_up;
        self.failed_requests += o.failed_requests;
        self.failed_spans += o.failed_spans;
        self.first_error = self.first_error.take().or(o.first_error);
        self.flush_requests += o.flush_requests;
    }

    fn error(&mut self, e: String) {
        self.first_error.get_or_insert(e);
    }
}

/// Everything a run measured on the client side.
#[derive(Debug)]
pub struct LoadOutcome {
    pub stats: LoadStats,
    /// Length of the measured window.
    pub window: Duration,
    /// Target process at the start and end of the window.
    pub target_window: Option<(ProcSample, ProcSample)>,
    /// The downstream's own process (`cujo-sink`), when it has one.
    pub sink_window: Option<(ProcSample, ProcSample)>,
    /// This process (the clients, and the downstream when it runs in process) at the start
    /// and end of the window.
    pub self_window: Option<(ProcSample, ProcSample)>,
    /// When the last flush request was acknowledged.
    pub finished: Instant,
    /// Requests sent in total, however they ended.
    pub sent: u64,
    /// Per polled endpoint, what its poller saw inside the window (empty without polling).
    pub polls: Vec<EndpointPolls>,
}

struct Shared {
    pool: Arc<RequestPool>,
    cfg: LoadConfig,
    next_seq: AtomicU64,
    stop: AtomicBool,
    t0: Instant,
    window_start: Instant,
    window_end: Instant,
    path: PathAndQuery,
}

#[derive(Clone, Copy)]
enum Phase {
    Timed,
    /// Closed loop, unmeasured: complete the traces begun by requests `..next` by sending
    /// the completing parts of requests `next..end`.
    Flush {
        next: u64,
        end: u64,
    },
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(4u32 << 20)
        .initial_connection_window_size(16u32 << 20);
    Ok(endpoint.connect().await?)
}

/// Processes whose CPU and memory are sampled at the edges of the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watched {
    pub target: Option<u32>,
    pub sink: Option<u32>,
}

/// Runs warm-up, the measured window and the flush against `addr`.
pub async fn run(
    pool: Arc<RequestPool>,
    addr: std::net::SocketAddr,
    cfg: LoadConfig,
    watched: Watched,
) -> anyhow::Result<LoadOutcome> {
    anyhow::ensure!(
        cfg.clients >= 1 && cfg.concurrency >= 1,
        "need at least one client"
    );
    let mut channels = Vec::with_capacity(cfg.clients);
    for _ in 0..cfg.clients {
        channels.push(connect(addr).await?);
    }
    let t0 = Instant::now();
    let window_start = t0 + cfg.warmup;
    let window_end = window_start + cfg.duration;
    let shared = Arc::new(Shared {
        pool,
        cfg: cfg.clone(),
        next_seq: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        t0,
        window_start,
        window_end,
        path: PathAndQuery::from_static(TRACE_EXPORT_PATH),
    });
    let spawn_all = |phase: Phase| {
        (0..cfg.clients * cfg.concurrency)
            .map(|w| {
                let grpc = Grpc::new(channels[w % cfg.clients].clone())
                    .max_decoding_message_size(16 << 20);
                tokio::spawn(client(shared.clone(), grpc, phase))
            })
            .collect::<Vec<_>>()
    };

    let workers = spawn_all(Phase::Timed);
    let poller = match &cfg.poll {
        Some(p) => Some(Poller::start(p, t0, window_start, window_end)?),
        None => None,
    };
    tokio::time::sleep_until(window_start.into()).await;
    let sample = |pid: Option<u32>| pid.and_then(|p| proc_sample(p).ok());
    let target_start = sample(watched.target);
    let sink_start = sample(watched.sink);
    let self_start = self_sample().ok();
    tokio::time::sleep_until(window_end.into()).await;
    let target_end = sample(watched.target);
    let sink_end = sample(watched.sink);
    let self_end = self_sample().ok();
    shared.stop.store(true, Ordering::SeqCst);

    let mut stats = LoadStats::new();
    for w in workers {
        stats.merge(w.await?);
    }
    let next = shared.next_seq.load(Ordering::SeqCst);
    let end = shared.pool.completion_seq(next);
    for w in spawn_all(Phase::Flush { next, end }) {
        stats.merge(w.await?);
    }
    let sent = stats.acked_requests + stats.gave_up + stats.failed_requests;
    // The pollers stopped at the window's end.
    let polls = poller.map(Poller::join).unwrap_or_default();
    Ok(LoadOutcome {
        stats,
        window: cfg.duration,
        target_window: target_start.zip(target_end),
        sink_window: sink_start.zip(sink_end),
        self_window: self_start.zip(self_end),
        finished: Instant::now(),
        sent,
        polls,
    })
}

async fn client(shared: Arc<Shared>, mut grpc: Grpc<Channel>, phase: Phase) -> LoadStats {
    let mut stats = LoadStats::new();
    loop {
        if matches!(phase, Phase::Timed) && shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let seq = shared.next_seq.fetch_add(1, Ordering::SeqCst);
        let inst = match phase {
            Phase::Timed => shared.pool.instance(seq),
            Phase::Flush { end, .. } if seq >= end => break,
            Phase::Flush { next, .. } => match shared.pool.completing_instance(seq, next) {
                Some(inst) => inst,
                None => continue,
            },
        };
        let due = match shared.cfg.mode {
            Mode::Rate { spans_per_s } if matches!(phase, Phase::Timed) => {
                let at = shared.t0
                    + Duration::from_secs_f64(shared.pool.spans_before(seq) as f64 / spans_per_s);
                tokio::time::sleep_until(at.into()).await;
                Some(at)
            }
            _ => None,
        };
        if matches!(phase, Phase::Flush { .. }) {
            stats.flush_requests += 1;
        }
        send_one(&shared, &mut grpc, inst, due, &mut stats).await;
    }
    stats
}

/// Sends one request, retrying refusals with backoff, and records the outcome.
async fn send_one(
    shared: &Shared,
    grpc: &mut Grpc<Channel>,
    inst: Instance,
    due: Option<Instant>,
    stats: &mut LoadStats,
) {
    let first_attempt = Instant::now();
    let started = due.unwrap_or(first_attempt);
    let mut backoff = Duration::from_millis(5);
    loop {
        match grpc.ready().await {
            Err(e) => {
                stats.transport_errors += 1;
                stats.error(format!("connection: {e}"));
            }
            Ok(()) => {
                let mut request = tonic::Request::new(inst.body.clone());
                request.set_timeout(shared.cfg.request_timeout);
                match grpc.unary(request, shared.path.clone(), RawCodec).await {
                    Ok(response) => {
                        let now = Instant::now();
                        let rejected = read_partial_success(response.get_ref())
                            .map(|p| p.rejected_spans)
                            .unwrap_or(0)
                            .min(u64::from(inst.spans));
                        let acked = u64::from(inst.spans) - rejected;
                        stats.acked_spans += acked;
                        stats.acked_requests += 1;
                        stats.rejected_spans += rejected;
                        if rejected == 0 {
                            stats.acked_checksum = stats.acked_checksum.wrapping_add(inst.checksum);
                        }
                        if now >= shared.window_start && now < shared.window_end {
                            stats.window_spans += acked;
                            stats.window_requests += 1;
                            let us = now.duration_since(started).as_micros() as u64;
                            let _ = stats.latency_us.record(us.max(1));
                        }
                        return;
                    }
                    Err(status)
                        if matches!(status.code(), Code::Unavailable | Code::ResourceExhausted) =>
                    {
                        stats.refusals += 1;
                        stats.error(format!("refused: {:?} {}", status.code(), status.message()));
                    }
                    Err(status) => {
                        stats.failed_requests += 1;
                        stats.failed_spans += u64::from(inst.spans);
                        stats.error(format!("failed: {:?} {}", status.code(), status.message()));
                        return;
                    }
                }
            }
        }
        // Refused or not connected: nothing was accepted, so retrying cannot duplicate.
        if first_attempt.elapsed() + backoff > shared.cfg.retry_timeout {
            stats.gave_up += 1;
            stats.failed_spans += u64::from(inst.spans);
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
}
