//! The counting downstream: an OTLP/gRPC trace server on 127.0.0.1 that counts every span it
//! receives (and sums [`span_key`] over them) and answers success at once.
//!
//! It runs on its own thread and runtime so the load generator's tasks never delay its
//! answers, and reads spans with the harness's own reader ([`crate::otlp`]) instead of decoding
//! them into structs.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{BoxFuture, StdError, http};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::codec::{RawCodec, TRACE_EXPORT_PATH};
use crate::otlp::{for_each_span, span_key};

/// What the downstream has received so far.
#[derive(Debug, Default)]
pub struct DownstreamCounts {
    pub spans: AtomicU64,
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// Wrapping sum of `span_key(trace_id, span_id)` over every span received.
    pub checksum: AtomicU64,
    /// Requests that were not valid OTLP (answered INVALID_ARGUMENT, not counted as spans).
    pub malformed: AtomicU64,
    /// Requests answered UNAVAILABLE on purpose (see [`Downstream::start_refusing`]).
    pub refused: AtomicU64,
}

/// A snapshot of [`DownstreamCounts`]; also the line `cujo-sink` answers on its control
/// channel (JSON), so the field names are a protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownstreamSnapshot {
    pub spans: u64,
    pub requests: u64,
    pub bytes: u64,
    pub checksum: u64,
    pub malformed: u64,
    pub refused: u64,
}

impl DownstreamCounts {
    pub fn snapshot(&self) -> DownstreamSnapshot {
        DownstreamSnapshot {
            spans: self.spans.load(Ordering::Acquire),
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            checksum: self.checksum.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Counts one request; `Err` if it is not a valid trace export request.
    pub fn record(&self, body: &[u8]) -> Result<(), crate::otlp::Malformed> {
        let mut sum = 0u64;
        let n = for_each_span(body, |t, s| sum = sum.wrapping_add(span_key(t, s)))?;
        self.checksum.fetch_add(sum, Ordering::Relaxed);
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.spans.fetch_add(n, Ordering::Release);
        Ok(())
    }
}

/// The `TraceService` as a raw tower service: routes `Export` to [`ExportCounter`].
#[derive(Clone)]
struct CountingTraceService {
    counts: Arc<DownstreamCounts>,
    refuse_every: u64,
    seen: Arc<AtomicU64>,
}

struct ExportCounter {
    counts: Arc<DownstreamCounts>,
    /// Refuse every n-th request (0: never); exercises the clients' retry path.
    refuse_every: u64,
    seen: Arc<AtomicU64>,
}

impl tonic::server::UnaryService<Bytes> for ExportCounter {
    type Response = Bytes;
    type Future = Ready<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if self.refuse_every > 0 && n.is_multiple_of(self.refuse_every) {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return ready(Err(Status::unavailable("refused on purpose")));
        }
        let result = match self.counts.record(request.get_ref()) {
            // An empty ExportTraceServiceResponse: full success.
            Ok(()) => Ok(Response::new(Bytes::new())),
            Err(e) => {
                self.counts.malformed.fetch_add(1, Ordering::Relaxed);
                Err(Status::invalid_argument(e.to_string()))
            }
        };
        ready(result)
    }
}

impl<B> tower::Service<http::Request<B>> for CountingTraceService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != TRACE_EXPORT_PATH {
            let status = Status::unimplemented(format!("no method {}", req.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let counter = ExportCounter {
            counts: self.counts.clone(),
            refuse_every: self.refuse_every,
            seen: self.seen.clone(),
        };
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(256 << 20);
            Ok(grpc.unary(counter, req).await)
        })
    }
}

/// A running downstream; stops when dropped.
pub struct Downstream {
    pub addr: SocketAddr,
    pub counts: Arc<DownstreamCounts>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Downstream {
    /// Binds 127.0.0.1:0 and serves on a dedicated thread.
    ///
    /// In the load generator's process this shares its CPU and allocator; `cujo-sink` runs
    /// the same server in a process of its own (see [`crate::sink`]).
    pub fn start() -> anyhow::Result<Downstream> {
        Self::start_refusing(0)
    }

    /// Like [`Downstream::start`], but answers every `every`-th request UNAVAILABLE without
    /// counting it (0: never). For testing the harness's retry path.
    pub fn start_refusing(every: u64) -> anyhow::Result<Downstream> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), every)
    }

    /// Binds `listen` (port 0: any free port) and serves on a dedicated thread, refusing every
    /// `refuse_every`-th request (0: never).
    pub fn start_at(listen: SocketAddr, every: u64) -> anyhow::Result<Downstream> {
        let counts = Arc::new(DownstreamCounts::default());
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<SocketAddr>>();
        let svc = CountingTraceService {
            counts: counts.clone(),
            refuse_every: every,
            seen: Arc::new(AtomicU64::new(0)),
        };
        let thread = std::thread::Builder::new()
            .name("downstream".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind(listen).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(
                                anyhow::Error::from(e).context(format!("binding {listen}"))
                            ));
                            return;
                        }
                    };
                    let addr = listener.local_addr().map_err(anyhow::Error::from);
                    let _ = ready_tx.send(addr);
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    // Served without tonic's router (a feature the workspace leaves off):
                    // the service routes its one path itself.
                    let served = tonic::transport::Server::builder()
                        .initial_stream_window_size(8 << 20)
                        .initial_connection_window_size(32 << 20)
                        .max_frame_size(1 << 20)
                        .serve_with_incoming_shutdown(svc, incoming, async {
                            let _ = on_shutdown.await;
                        })
                        .await;
                    if let Err(e) = served {
                        eprintln!("downstream: server error: {e}");
                    }
                });
            })?;
        let addr = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("downstream thread ended before it was listening"))??;
        Ok(Downstream {
            addr,
            counts,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
