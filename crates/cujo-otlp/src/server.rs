//! The HTTP/1.1 + HTTP/2 (h2c) server loop every listener of cujo runs on. It owns what a
//! peer can hold *before* a request is admitted; request bodies are the receivers' (size,
//! time and memory, see [`crate::receiver`]).
//!
//! - **Connections**: at most `max_connections`; on the receivers' listeners each one also
//!   takes a fixed cost ([`CONNECTION_BYTES`]) from their memory account
//!   ([`ConnectionMemory`]). One that does not fit takes the place of the connection idle the
//!   longest, or is closed at once when none is idle.
//! - **Time**: a connection that sends nothing within `header_read_timeout` is closed, as is
//!   an HTTP/1 connection whose next request head takes longer; a connection with no request
//!   in flight for `idle_timeout` is closed gracefully (GOAWAY on HTTP/2), and HTTP/2 peers
//!   that stop answering pings are dropped.
//! - **HTTP/2 state**: at most `http2_max_concurrent_streams` streams per connection, and
//!   fixed flow-control windows (not adaptive ones, which grow to 16 MiB), so the bytes a
//!   peer can push before cujo reads them are bounded: 256 KiB per stream, 1 MiB per
//!   connection.
//!
//! - **TLS** (with a [`ServerTls`]): the handshake runs on the connection's own task, so a
//!   slow one never holds up accepting, and must finish within `header_read_timeout`; the
//!   time for the first request byte starts after it.
//!
//! On shutdown the listener closes at once and open connections finish the requests they
//! carry (up to the drain deadline).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::memory::{Account, Lease};
use crate::tls::ServerTls;

/// What one open connection costs in memory besides the request bodies it carries: hyper's
/// and h2's per-connection state and the buffers it keeps, the task, the socket. Measured as
/// the RSS growth per idle connection after one request (`measure_the_cost_of_an_idle_
/// http2_connection` in the `receiver_limits` tests): about 85 KiB after a 130 KB request,
/// 110 KiB after a 1.1 MB one, over HTTP/2 and HTTP/1.1 alike.
pub const CONNECTION_BYTES: usize = 128 * 1024;

/// Connection-level limits of a listener.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// Time for a new connection's first byte and for each HTTP/1 request head.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed gracefully.
    pub idle_timeout: Duration,
    pub http2_keepalive: Duration,
    pub http2_max_concurrent_streams: u32,
    /// Bytes a peer may send on one HTTP/2 stream before cujo has read them (256 KiB: a
    /// typical OTLP request arrives without waiting for a window update).
    pub http2_stream_window: u32,
    /// Bytes a peer may send on one HTTP/2 connection, all streams together, before cujo
    /// has read them (1 MiB, Envoy's recommendation at the edge). Over a long round trip
    /// this bounds one connection's throughput: 1 MiB per RTT.
    pub http2_connection_window: u32,
    /// The memory account each connection pays [`CONNECTION_BYTES`] to (the receivers');
    /// `None` for listeners whose connections are not bounded by the budget (admin).
    pub memory: Option<ConnectionMemory>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_keepalive: Duration::from_secs(30),
            http2_max_concurrent_streams: 100,
            http2_stream_window: 256 * 1024,
            http2_connection_window: 1024 * 1024,
            memory: None,
        }
    }
}

/// How long a connection asked to close (idle, or at shutdown) may stay open once it has no
/// request in flight: a peer that never lets a GOAWAY finish cannot keep it.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The most an HTTP/1 connection buffers of what it reads (hyper's default, ~400 KiB, would
/// be kept by every connection that once read a large body).
const HTTP1_MAX_BUF: usize = 64 * 1024;

/// Connections closed for memory are logged at most once per this interval.
const PRESSURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The fixed cost open connections hold in a memory account (the receivers' share).
///
/// Shared by the receivers' listeners, which take [`CONNECTION_BYTES`] per connection, and
/// the receivers, whose request bodies may grow past the share when nothing but connection
/// costs and themselves is held (so one request is never refused forever, see
/// [`crate::memory::Lease::try_grow`]). When a new connection does not fit, the connection
/// idle the longest gives it its place (closed at once: idle, it carries no request); with
/// none idle, the new one is closed at once.
#[derive(Clone)]
pub struct ConnectionMemory {
    account: Account,
    shared: Arc<Connections>,
}

struct Connections {
    /// Bytes all open connections hold in the account.
    held: AtomicUsize,
    /// Open connections in the order they came, to find the one idle the longest.
    open: Mutex<BTreeMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    log: Mutex<PressureLog>,
}

impl std::fmt::Debug for ConnectionMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionMemory")
            .field("account", &self.account)
            .field("held", &self.held())
            .finish()
    }
}

impl ConnectionMemory {
    pub fn new(account: Account) -> Self {
        Self {
            account,
            shared: Arc::new(Connections {
                held: AtomicUsize::new(0),
                open: Mutex::default(),
                next_id: AtomicU64::new(0),
                log: Mutex::default(),
            }),
        }
    }

    /// Bytes open connections hold now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// Grows `lease` by `more` whatever the limit when the account holds nothing but it and
    /// open connections' costs; `false` otherwise.
    pub fn grow_beside_connections(&self, lease: &mut Lease, more: usize) -> bool {
        let others = self.account.used().saturating_sub(lease.bytes());
        if others > self.held() {
            return false;
        }
        lease.grow(more);
        true
    }

    /// Pays one connection's cost, from the account or from the connection idle the
    /// longest (which is told to close); `None` when neither has room.
    fn admit(&self, name: &str, activity: &Arc<Activity>) -> Option<Admission> {
        let lease = match self.account.try_take(CONNECTION_BYTES) {
            Some(lease) => {
                self.shared
                    .held
                    .fetch_add(CONNECTION_BYTES, Ordering::Relaxed);
                lease
            }
            None => {
                self.account.note_full();
                let taken = self.take_from_longest_idle();
                if let Ok(mut log) = self.shared.log.lock() {
                    log.note(name, &self.account, taken.is_some());
                }
                taken?
            }
        };
        *lock(&activity.charge) = Some(lease);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.open).insert(id, activity.clone());
        Some(Admission {
            id,
            memory: self.clone(),
            activity: activity.clone(),
        })
    }

    /// Takes the cost of the connection idle the longest and tells it to close.
    fn take_from_longest_idle(&self) -> Option<Lease> {
        let mut open = lock(&self.shared.open);
        let (id, _) = open
            .iter()
            .filter(|(_, a)| a.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, a)| a.idle_since())?;
        let id = *id;
        let victim = open.remove(&id)?;
        drop(open);
        let lease = lock(&victim.charge).take();
        victim.evict.cancel();
        lease
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One open connection's place among the paid-for ones; its cost goes back when it closes.
struct Admission {
    id: u64,
    memory: ConnectionMemory,
    activity: Arc<Activity>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        lock(&self.memory.shared.open).remove(&self.id);
        if lock(&self.activity.charge).take().is_some() {
            self.memory
                .shared
                .held
                .fetch_sub(CONNECTION_BYTES, Ordering::Relaxed);
        }
    }
}

/// Binds `addr`, reporting the address in the error so a port clash names the key.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits (up to `drain`) for
/// open connections to finish their requests. With `tls`, connections speak TLS only, and
/// its files are watched for a new version while the listener serves.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(HTTP1_MAX_BUF)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keepalive))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .adaptive_window(false)
        .initial_stream_window_size(limits.http2_stream_window)
        .initial_connection_window_size(limits.http2_connection_window);
    let builder = Arc::new(builder);
    let limits = Arc::new(limits);
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(shutdown.clone()));
    }
    tracing::info!(listener = %name, address = %local, tls = tls.is_some(), "listening");
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    continue;
                }
            },
        };
        let activity = Arc::new(Activity::new());
        let admission = match &limits.memory {
            None => None,
            Some(memory) => match memory.admit(name, &activity) {
                Some(admission) => Some(admission),
                // Closed before a byte is read: the peer sees the connection close and
                // retries, as OTLP clients do on transport errors.
                None => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let (builder, router, limits) = (builder.clone(), router.clone(), limits.clone());
        let (tls, shutdown) = (tls.clone(), shutdown.clone());
        connections.spawn(async move {
            // The handshake holds the connection's slot and memory like a request head does.
            let transport = match &tls {
                None => Transport::Plain(stream),
                Some(tls) => {
                    let handshake = tls.accept(stream, peer, limits.header_read_timeout);
                    let done = tokio::select! {
                        done = handshake => done,
                        _ = shutdown.cancelled() => None,
                    };
                    match done {
                        Some(stream) => Transport::Tls(Box::new(stream)),
                        None => return,
                    }
                }
            };
            let stream = FirstByteWatch::new(transport);
            let heard = stream.heard.clone();
            let service = TrackedService {
                inner: TowerToHyperService::new(router),
                activity: activity.clone(),
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            drive(name, peer, conn, &limits, &shutdown, &heard, &activity).await;
            drop(admission);
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    tracing::info!(listener = %name, "stopped accepting; draining connections");
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = %name,
            ?drain,
            "connections still open after the drain deadline"
        );
    }
}

/// One connection as hyper serves it.
type Connection = hyper_util::server::conn::auto::UpgradeableConnection<
    'static,
    TokioIo<FirstByteWatch>,
    TrackedService,
    TokioExecutor,
>;

/// Runs one connection to its end, closing it when it sent nothing in time, stayed idle too
/// long, or the listener shuts down.
async fn drive(
    name: &str,
    peer: std::net::SocketAddr,
    conn: Connection,
    limits: &ServerLimits,
    shutdown: &CancellationToken,
    heard: &AtomicBool,
    activity: &Activity,
) {
    tokio::pin!(conn);
    // hyper's header timeout starts only once a request begins; a client that never sends
    // a byte would hold its slot (and its memory) forever.
    let first_byte = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first_byte);
    let mut first_byte_checked = false;
    // Once asked to close (when), a connection gets `CLOSE_GRACE` after that or after its
    // last request, whichever is later.
    let mut closing: Option<Instant> = None;
    loop {
        let (since, timeout) = match closing {
            Some(at) => (at, CLOSE_GRACE),
            None => (activity.start, limits.idle_timeout),
        };
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(listener = %name, %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = activity.evict.cancelled() => {
                tracing::debug!(listener = %name, %peer, "closing an idle connection to make room for a new one");
                return;
            }
            _ = &mut first_byte, if !first_byte_checked => {
                first_byte_checked = true;
                if !heard.load(Ordering::Acquire) {
                    tracing::debug!(listener = %name, %peer, "closing a connection that sent nothing");
                    return;
                }
            }
            _ = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            _ = tokio::time::sleep_until(activity.idle_deadline(since, timeout)) => {
                if !activity.idle_for(since, timeout) {
                    continue;
                }
                if closing.is_some() {
                    tracing::debug!(listener = %name, %peer, "dropping a connection that did not close after GOAWAY");
                    return;
                }
                tracing::debug!(listener = %name, %peer, idle = ?limits.idle_timeout, "closing an idle connection");
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
        }
    }
}

/// Logs what a full memory share did to connections, at most once per
/// [`PRESSURE_LOG_INTERVAL`].
#[derive(Default)]
struct PressureLog {
    last: Option<Instant>,
    /// New connections closed at once since the last line.
    refused: u64,
    /// Idle connections closed to make room since the last line.
    evicted: u64,
}

impl PressureLog {
    fn note(&mut self, name: &str, account: &Account, evicted: bool) {
        if evicted {
            self.evicted += 1;
        } else {
            self.refused += 1;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < PRESSURE_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            listener = %name,
            idle_closed = self.evicted,
            new_refused = self.refused,
            used = account.used(),
            limit = account.limit(),
            "the receivers' share of the memory budget (admission.max_in_flight) is full: closing idle connections to make room, or new ones when none is idle"
        );
        self.last = Some(now);
        self.evicted = 0;
        self.refused = 0;
    }
}

/// Requests in flight on one connection, since when it has had none, and what it pays.
struct Activity {
    /// When the connection was accepted.
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` when the last request finished.
    idle_since_ms: AtomicU64,
    /// Cancelled when the connection gave its place to a new one: it closes at once.
    evict: CancellationToken,
    /// The connection's cost in the receivers' account, while it has one.
    charge: Mutex<Option<Lease>>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            evict: CancellationToken::new(),
            charge: Mutex::new(None),
        }
    }

    fn idle_since(&self) -> Instant {
        self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// When the connection will have been idle for `timeout`, counting from `since` at the
    /// earliest, if nothing starts before. While requests are in flight, the earliest that
    /// can be is `timeout` from now.
    fn idle_deadline(&self, since: Instant, timeout: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            Instant::now() + timeout
        } else {
            self.idle_since().max(since) + timeout
        }
    }

    /// Whether no request has been in flight for `timeout`, counting from `since` at the
    /// earliest.
    fn idle_for(&self, since: Instant, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && Instant::now() >= self.idle_since().max(since) + timeout
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight, from its head until its response has been sent.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.start.elapsed().as_millis() as u64;
        a.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, with each request counted in flight on its connection until its response
/// body is done.
#[derive(Clone)]
struct TrackedService {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for TrackedService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let future = self.inner.call(req);
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|body| TrackedBody {
                inner: body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's byte stream: plain TCP, or TLS over it once the handshake is done.
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A connection's stream that records whether the client has sent anything yet (over TLS:
/// anything after the handshake).
struct FirstByteWatch {
    inner: Transport,
    heard: Arc<AtomicBool>,
}

impl FirstByteWatch {
    fn new(inner: Transport) -> Self {
        Self {
            inner,
            heard: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl AsyncRead for FirstByteWatch {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.store(true, Ordering::Release);
        }
        result
    }
}

impl AsyncWrite for FirstByteWatch {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Component, MemoryBudget, Shares};

    /// Connection memory whose receivers' share holds exactly `n` connections, and the
    /// budget it is part of.
    fn memory_for(n: usize) -> (ConnectionMemory, Arc<MemoryBudget>) {
        let budget = MemoryBudget::new(4 * n * CONNECTION_BYTES, Shares::for_stages(false, false));
        (
            ConnectionMemory::new(budget.account(Component::Receivers)),
            budget,
        )
    }

    fn admit(m: &ConnectionMemory) -> Option<(Arc<Activity>, Admission)> {
        let a = Arc::new(Activity::new());
        let admission = m.admit("test", &a)?;
        Some((a, admission))
    }

    #[test]
    fn a_connection_that_does_not_fit_takes_the_place_of_the_one_idle_the_longest() {
        let (m, budget) = memory_for(3);
        let (busy, _b) = admit(&m).expect("fits");
        let _in_flight = busy.begin();
        let (oldest_idle, _o) = admit(&m).expect("fits");
        let (newer_idle, _n) = admit(&m).expect("fits");
        assert_eq!(m.held(), 3 * CONNECTION_BYTES);
        let (_new, _a) = admit(&m).expect("takes an idle one's place");
        assert!(oldest_idle.evict.is_cancelled(), "idle the longest");
        assert!(!newer_idle.evict.is_cancelled() && !busy.evict.is_cancelled());
        assert_eq!(
            m.held(),
            3 * CONNECTION_BYTES,
            "the cost moved, not doubled"
        );
        assert_eq!(m.account.used(), 3 * CONNECTION_BYTES);
        assert_eq!(budget.full_count(Component::Receivers), 1);
    }

    #[test]
    fn with_no_connection_idle_a_new_one_is_refused_and_costs_come_back() {
        let (m, _budget) = memory_for(2);
        let (a, first) = admit(&m).expect("fits");
        let (b, second) = admit(&m).expect("fits");
        let (_x, _y) = (a.begin(), b.begin());
        assert!(admit(&m).is_none(), "nothing idle to make room");
        drop((first, second));
        assert_eq!((m.held(), m.account.used()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn idleness_counts_from_the_last_request_or_from_when_closing_began() {
        let a = Arc::new(Activity::new());
        let minute = Duration::from_secs(60);
        tokio::time::advance(Duration::from_secs(10)).await;
        let request = a.begin();
        assert!(
            !a.idle_for(a.start, Duration::ZERO),
            "a request is in flight"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(request);
        assert_eq!(
            a.idle_deadline(a.start, minute),
            a.start + Duration::from_secs(75)
        );
        tokio::time::advance(minute).await;
        assert!(a.idle_for(a.start, minute));
        // Asked to close now: the grace counts from now, not from the last request.
        let closing = Instant::now();
        assert!(!a.idle_for(closing, CLOSE_GRACE));
        assert_eq!(a.idle_deadline(closing, CLOSE_GRACE), closing + CLOSE_GRACE);
    }

    #[test]
    fn a_request_may_grow_past_the_share_beside_connections_alone() {
        let (m, _budget) = memory_for(2);
        let (_c, _admission) = admit(&m).expect("fits");
        let mut body = m.account.empty_lease();
        let share = m.account.limit();
        assert!(!body.try_grow(share), "over the share beside a connection");
        assert!(
            m.grow_beside_connections(&mut body, share),
            "but nothing else is held"
        );
        let mut other = m.account.empty_lease();
        assert!(!other.try_grow(1));
        assert!(
            !m.grow_beside_connections(&mut other, 1),
            "another request is held"
        );
    }
}
