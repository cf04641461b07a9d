//! SLO status for people and pipelines, served on the admin listener next to `/metrics`:
//! the status page (`/`), the JSON API (`/api/v1/slos`) and the gRPC `cujo.v1.SloService`.
//! Every view reads one [`cujo_sli::report::Report`], made under the engine's lock.

pub mod api;
pub mod grpc;

use std::sync::{Arc, Mutex};

use axum::Router;
use cujo_sli::engine::SliEngine;
use cujo_sli::report::Report;

pub mod page;

/// Makes the current report; shared by every view.
#[derive(Clone)]
pub struct ReportSource {
    engine: Arc<Mutex<SliEngine>>,
    clock: fn() -> u64,
}

impl ReportSource {
    pub fn new(engine: Arc<Mutex<SliEngine>>, clock: fn() -> u64) -> Self {
        Self { engine, clock }
    }

    /// The report now; `None` only if the engine's lock is poisoned (a panic elsewhere).
    pub fn report(&self) -> Option<Report> {
        let now = (self.clock)();
        self.engine.lock().ok().map(|e| e.report(now))
    }
}

/// Routes of the status views, merged onto the admin router.
pub fn router(source: ReportSource) -> Router {
    Router::new()
        .merge(page::router(source.clone()))
        .merge(api::routes(source.clone()))
        .merge(grpc::routes(source))
}
