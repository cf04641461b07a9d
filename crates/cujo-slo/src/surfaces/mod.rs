//! SLO surfaces: where people and pipelines read the SLOs of a running cujo.
//!
//! They read [`cujo_sli::report::Report`] snapshots (at most `SliReader::snapshot_max_age`
//! old) and never build a view under the engine; they own no counters of the span path and
//! send nothing on their own.
//!
//! # Layout
//! - [`status`]: the status page (`/`), the JSON API (`/api/v1/slos`) and the gRPC
//!   `cujo.v1.SloService`, merged onto the admin listener.
//! - [`gate`]: `cujo status`, the deploy gate: a client of the JSON API.

pub mod gate;
pub mod status;
