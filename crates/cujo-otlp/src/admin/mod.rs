//! The admin listener (`exporters.prometheus.endpoint`): `GET /metrics` in the Prometheus
//! text format, or OpenMetrics (with exemplars) when the scraper's `Accept` asks for it, `GET /healthz` (the process serves) and `GET /readyz` (receivers are
//! listening and cujo is not shutting down — take it out of a Service's endpoints otherwise).
//!
//! - [`config`]: `exporters.prometheus`, where it listens.

pub mod config;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};

use crate::prom;

/// Something that appends its metric families to the scrape output.
pub type MetricsSource = Arc<dyn Fn(&mut prom::Exposition) + Send + Sync>;

/// A source whose families are fetched for each scrape before it is written (a snapshot
/// from a component on another thread); `None` when it has nothing to give.
pub type SnapshotSource =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Option<MetricsSource>> + Send + Sync>;

/// Shared readiness flag: set once receivers listen, cleared when shutdown starts.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AdminState {
    sources: Arc<Vec<MetricsSource>>,
    snapshots: Arc<Vec<SnapshotSource>>,
    readiness: Readiness,
}

/// Routes of the admin listener; more routes (status pages) can be merged onto it. A scrape
/// writes `sources`, then each of `snapshots` once fetched.
pub fn router(
    sources: Vec<MetricsSource>,
    snapshots: Vec<SnapshotSource>,
    readiness: Readiness,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(AdminState {
            sources: Arc::new(sources),
            snapshots: Arc::new(snapshots),
            readiness,
        })
}

async fn metrics(State(state): State<AdminState>, headers: http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = prom::Format::negotiate(accept);
    let mut out = prom::Exposition::new(format);
    for source in state.sources.iter() {
        source(&mut out);
    }
    for snapshot in state.snapshots.iter() {
        if let Some(source) = snapshot().await {
            source(&mut out);
        }
    }
    (
        [
            (header::CONTENT_TYPE, format.content_type()),
            (header::VARY, "accept"),
        ],
        out.finish(),
    )
        .into_response()
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
