//! SLO status for people and pipelines, served on the admin listener next to `/metrics`:
//! the status page (`/`), the JSON API (`/api/v1/slos`) and the gRPC `cujo.v1.SloService`.
//! Every view reads one [`cujo_sli::report::Report`], a snapshot the SLI engine's thread
//! makes (at most `SliReader::snapshot_max_age` old): a view never holds up the span path.

pub mod api;
pub mod grpc;

use std::sync::Arc;

use axum::Router;
use cujo_sli::processor::SliReader;
use cujo_sli::report::Report;

pub mod page;

/// Gives the current report; shared by every view.
#[derive(Clone)]
pub struct ReportSource {
    reader: Option<SliReader>,
    clock: fn() -> u64,
}

impl ReportSource {
    /// Reports from the SLI engine behind `reader`; without one (no CUJ configured), an
    /// empty report at `clock`.
    pub fn new(reader: Option<SliReader>, clock: fn() -> u64) -> Self {
        Self { reader, clock }
    }

    /// The report; `None` only if the engine's thread stopped (a panic, in the log).
    pub async fn report(&self) -> Option<Arc<Report>> {
        match &self.reader {
            Some(reader) => reader.report().await,
            None => Some(Arc::new(Report {
                generated_at_ms: (self.clock)(),
                cujs: Vec::new(),
            })),
        }
    }
}

/// Routes of the status views, merged onto the admin router.
pub fn router(source: ReportSource) -> Router {
    Router::new()
        .merge(page::router(source.clone()))
        .merge(api::routes(source.clone()))
        .merge(grpc::routes(source))
}
