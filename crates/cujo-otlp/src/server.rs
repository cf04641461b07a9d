//! The HTTP/1.1 + HTTP/2 (h2c) server loop every listener of cujo runs on.
//!
//! Connections are capped, HTTP/1 headers must arrive within a deadline and HTTP/2
//! connections are kept alive with pings, so idle or trickling (slowloris) clients cannot
//! exhaust the process or block valid ones. On shutdown the listener closes at once and open
//! connections finish the requests they carry.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Connection-level limits of a listener.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub http2_keepalive: Duration,
    pub http2_max_concurrent_streams: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            http2_keepalive: Duration::from_secs(30),
            http2_max_concurrent_streams: 256,
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
/// open connections to finish their requests.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
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
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keepalive))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .adaptive_window(true);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tracing::info!(listener = %name, address = %local, "listening");
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
        let _ = stream.set_nodelay(true);
        let stream = FirstByteWatch::new(stream);
        let heard = stream.heard.clone();
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        let first_byte_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            tokio::pin!(conn);
            // hyper's header timeout starts only once a request begins; a client that never
            // sends a byte would hold its slot forever. Close it after the same timeout.
            let finished = tokio::select! {
                result = &mut conn => {
                    log_connection_end(name, peer, result);
                    true
                }
                _ = tokio::time::sleep(first_byte_timeout) => false,
            };
            if !finished {
                if heard.load(Ordering::Acquire) {
                    log_connection_end(name, peer, conn.await);
                } else {
                    tracing::debug!(listener = %name, %peer, "closing a connection that sent nothing");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(listener = %name, "stopped accepting; draining connections");
    if tokio::time::timeout(drain, graceful.shutdown())
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

fn log_connection_end<E: std::fmt::Display>(
    name: &str,
    peer: std::net::SocketAddr,
    result: Result<(), E>,
) {
    if let Err(e) = result {
        tracing::debug!(listener = %name, %peer, error = %e, "connection ended with an error");
    }
}

/// A TCP stream that records whether the client has sent anything yet.
struct FirstByteWatch {
    inner: TcpStream,
    heard: Arc<AtomicBool>,
}

impl FirstByteWatch {
    fn new(inner: TcpStream) -> Self {
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
