//! Exporters of SLI data: what leaves cujo about its CUJs, as opposed to the spans
//! themselves (those go out through `cujo_otlp::exporter`).
//!
//! Each exporter reads the engine through [`cujo_sli::processor::SliReader`] (a snapshot or
//! a job on the engine's thread returning plain data), sends through
//! `cujo_otlp::exporter::transport` and retries with `cujo_otlp::exporter::retry::Backoff`.
//! It must not hold the engine, keep a client or a retry loop of its own, or read another
//! exporter's config.
//!
//! # Layout
//! - [`otlp_metrics`]: `exporters.otlp_metrics`, the SLIs pushed as OTLP metrics.
//! - [`webhooks`]: `notifications:`, burn-rate alert transitions posted to webhooks.

use std::sync::Arc;

use cujo_otlp::admin::MetricsSource;
use cujo_otlp::prom::Exposition;

pub mod otlp_metrics;
pub mod webhooks;

/// The one telemetry shape of an exporter: the counters it keeps, written for `/metrics`.
pub trait ExporterTelemetry: Send + Sync + 'static {
    /// Appends this exporter's families (Prometheus text or OpenMetrics).
    fn render(&self, out: &mut Exposition);
}

/// `telemetry` as a `/metrics` source of the admin listener.
pub fn metrics_source<T: ExporterTelemetry>(telemetry: Arc<T>) -> MetricsSource {
    Arc::new(move |out: &mut Exposition| telemetry.render(out))
}
