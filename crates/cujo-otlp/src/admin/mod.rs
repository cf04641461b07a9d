//! The admin listener (`exporters.prometheus.endpoint`): `GET /metrics` in the Prometheus
//! text format, or OpenMetrics (with exemplars) when the scraper's `Accept` asks for it, and
//! gzip when its `Accept-Encoding` does (Prometheus always asks); `GET /healthz` (every
//! pipeline stage still runs: 503 naming the ones that stopped or panicked, see [`health`])
//! and `GET /readyz` (receivers are listening and cujo is not shutting
//! down — take it out of a Service's endpoints otherwise).
//!
//! `/metrics` can be turned off (`routes.metrics`) or need a bearer token of its own
//! (`metrics_auth`, so a Prometheus scrapes with a token that opens nothing else); the status
//! views merged onto this router (`cujo-slo`) are guarded by `auth`. `/healthz` and `/readyz`
//! are always open: probes carry no token.
//!
//! - [`config`]: `exporters.prometheus`, where it listens and who may read what.
//! - [`health`]: the pipeline's stages and whether each still runs.
//! - [`process`]: the process's CPU, memory and file descriptors, and `cujo_build_info`.

pub mod config;
pub mod health;
pub mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use serde::Deserialize;

use crate::auth::{self, BearerAuth};
use crate::{gzip, prom};

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
    health: health::Health,
}

/// `exporters.prometheus.routes`: which routes the admin listener serves (all by default);
/// one turned off answers 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRoutes {
    /// The status page (`/`).
    #[serde(default = "on")]
    pub status_page: bool,
    /// The JSON API (`/api/v1/...`) and the gRPC `cujo.v1.SloService`.
    #[serde(default = "on")]
    pub api: bool,
    /// `/metrics`.
    #[serde(default = "on")]
    pub metrics: bool,
}

fn on() -> bool {
    true
}

impl Default for AdminRoutes {
    fn default() -> Self {
        Self {
            status_page: true,
            api: true,
            metrics: true,
        }
    }
}

/// Who may scrape `/metrics`, and whether it is served at all.
#[derive(Debug, Clone)]
pub struct MetricsAccess {
    /// `routes.metrics`: off answers 404.
    pub serve: bool,
    /// `metrics_auth`: a scrape must carry one of these tokens.
    pub auth: Option<BearerAuth>,
}

impl Default for MetricsAccess {
    fn default() -> Self {
        Self {
            serve: true,
            auth: None,
        }
    }
}

/// Routes of the admin listener; more routes (status pages) can be merged onto it. A scrape
/// writes `sources`, then each of `snapshots` once fetched.
pub fn router(
    sources: Vec<MetricsSource>,
    snapshots: Vec<SnapshotSource>,
    readiness: Readiness,
    health: health::Health,
    access: MetricsAccess,
) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(ready));
    if access.serve {
        let scrape = Router::new().route("/metrics", get(metrics));
        router = router.merge(match access.auth {
            Some(auth) => auth::require(scrape, auth),
            None => scrape,
        });
    }
    router.with_state(AdminState {
        sources: Arc::new(sources),
        snapshots: Arc::new(snapshots),
        readiness,
        health,
    })
}

/// `cujo_admin_unauthenticated_requests_total{routes}`: requests the admin listener refused
/// for their credentials, by the guard that refused them (`status`: the page and the APIs,
/// `metrics`: `/metrics`). A steady rise is someone guessing.
pub fn refusals_source(guards: Vec<(&'static str, BearerAuth)>) -> MetricsSource {
    Arc::new(move |out: &mut prom::Exposition| {
        let mut family = prom::Family::counter(
            out,
            "cujo_admin_unauthenticated_requests_total",
            "Admin listener requests refused for a missing or invalid bearer token, by the routes they asked for.",
        );
        for (routes, guard) in &guards {
            family.sample(&[("routes", routes)], guard.refused() as f64);
        }
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
    let vary = (header::VARY, "accept, accept-encoding");
    let content_type = (header::CONTENT_TYPE, format.content_type());
    let accept_encoding = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok());
    if gzip::accepts_gzip(accept_encoding) {
        let encoding = (header::CONTENT_ENCODING, gzip::GZIP);
        ([content_type, vary, encoding], out.finish_gzip()).into_response()
    } else {
        ([content_type, vary], out.finish()).into_response()
    }
}

async fn healthz(State(state): State<AdminState>) -> Response {
    match health::answer(&state.health) {
        Ok(text) => (StatusCode::OK, text).into_response(),
        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, text).into_response(),
    }
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}
