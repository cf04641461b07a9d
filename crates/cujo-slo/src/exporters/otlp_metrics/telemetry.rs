//! The push's telemetry: what happened to each push, counted and logged in one place.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cujo_otlp::prom;

use crate::exporters::ExporterTelemetry;

/// Push outcomes, counted and logged in one place.
#[derive(Debug, Default)]
pub struct OtlpMetricsTelemetry {
    delivered: AtomicU64,
    failed: AtomicU64,
    failed_attempts: AtomicU64,
    data_points: AtomicU64,
    rejected_points: AtomicU64,
}

impl OtlpMetricsTelemetry {
    pub(super) fn delivered(&self, points: u64, rejected: i64, message: &str) {
        self.delivered.fetch_add(1, Relaxed);
        self.data_points.fetch_add(points, Relaxed);
        if rejected > 0 {
            self.rejected_points.fetch_add(rejected as u64, Relaxed);
            tracing::warn!(
                rejected,
                message,
                "OTLP metrics push: the backend rejected some data points"
            );
        }
    }

    pub(super) fn attempt_failed(&self, error: &str, will_retry: bool) {
        self.failed_attempts.fetch_add(1, Relaxed);
        tracing::debug!(error, will_retry, "OTLP metrics push attempt failed");
    }

    pub(super) fn failed(&self, error: &str) {
        self.failed.fetch_add(1, Relaxed);
        tracing::warn!(
            error,
            "OTLP metrics push failed; the next push carries these values"
        );
    }
}

impl ExporterTelemetry for OtlpMetricsTelemetry {
    /// `cujo_otlp_metrics_*`.
    fn render(&self, out: &mut prom::Exposition) {
        prom::Family::counter(
            out,
            "cujo_otlp_metrics_exports_total",
            "OTLP metrics pushes by outcome (delivered, or failed after retries).",
        )
        .sample(
            &[("outcome", "delivered")],
            self.delivered.load(Relaxed) as f64,
        )
        .sample(&[("outcome", "failed")], self.failed.load(Relaxed) as f64);
        prom::Family::counter(
            out,
            "cujo_otlp_metrics_export_attempts_failed_total",
            "Failed attempts of OTLP metrics pushes, retried ones included.",
        )
        .sample(&[], self.failed_attempts.load(Relaxed) as f64);
        prom::Family::counter(
            out,
            "cujo_otlp_metrics_data_points_total",
            "Data points in delivered OTLP metrics pushes.",
        )
        .sample(&[], self.data_points.load(Relaxed) as f64);
        prom::Family::counter(
            out,
            "cujo_otlp_metrics_rejected_data_points_total",
            "Data points the backend refused in delivered pushes (partial success).",
        )
        .sample(&[], self.rejected_points.load(Relaxed) as f64);
    }
}
