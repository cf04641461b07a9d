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
use tokio::net::TcpListener;
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
        let service = TowerToHyperService::new(router.clone());
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = %name, %peer, error = %e, "connection ended with an error");
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
