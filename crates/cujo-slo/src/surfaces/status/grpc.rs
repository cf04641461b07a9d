//! gRPC `cujo.v1.SloService` (`proto/cujo/v1/slo.proto`): the SLO report for programs that
//! speak gRPC, served over h2c on the admin listener. The messages mirror
//! [`cujo_sli::report::Report`] field for field.

use axum::Router;
use cujo_sli::report::{
    CujReport, HistoryPoint, LatencySummary, ObjectiveReport, Report, SeriesReport, SeriesWindow,
    WindowReport,
};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::ReportSource;
use super::api::select;

/// Code generated from `proto/cujo/v1/slo.proto` by `build.rs`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("cujo.v1");
}

use proto::slo_service_server::{SloService, SloServiceServer};

/// The service, answering from the engine's current report.
pub struct SloStatus {
    source: ReportSource,
}

#[tonic::async_trait]
impl SloService for SloStatus {
    async fn get_status(
        &self,
        request: Request<proto::GetStatusRequest>,
    ) -> Result<Response<proto::GetStatusResponse>, Status> {
        let report = self.source.report().await.ok_or_else(|| {
            Status::unavailable(
                "the SLI engine is unavailable (its thread stopped); see cujo's log",
            )
        })?;
        let report = select(&report, Some(&request.get_ref().cuj))
            .map_err(|unknown| Status::not_found(unknown.to_string()))?;
        Ok(Response::new(report.into_owned().into()))
    }
}

/// The service's route (`/cujo.v1.SloService/*`), merged onto the admin router. Not
/// `tonic::service::Routes`: its gRPC fallback would answer every unknown admin path.
pub fn routes(source: ReportSource) -> Router {
    let server = SloServiceServer::new(SloStatus { source });
    let path = format!("/{}/{{*method}}", SloServiceServer::<SloStatus>::NAME);
    Router::new().route_service(&path, server)
}

impl From<Report> for proto::GetStatusResponse {
    fn from(r: Report) -> Self {
        Self {
            generated_at_ms: r.generated_at_ms,
            cujs: r.cujs.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<CujReport> for proto::CujStatus {
    fn from(c: CujReport) -> Self {
        Self {
            name: c.name,
            dimensions: c.dimensions,
            latency_threshold_seconds: c.latency_threshold_seconds,
            latency_measure: c.latency_measure,
            excluded: c.excluded,
            overflowed: c.overflowed,
            objectives: c.objectives.into_iter().map(Into::into).collect(),
            latency: c.latency.map(Into::into),
            series: c.series.into_iter().map(Into::into).collect(),
            history: c.history.into_iter().map(Into::into).collect(),
            slis: c.slis,
            runbook: c.runbook,
            burn_shares: c
                .burn_shares
                .into_iter()
                .map(|b| proto::BurnShares {
                    sli: b.sli,
                    window: b.window,
                    bad: b.bad,
                    valid: b.valid,
                    values: b
                        .values
                        .into_iter()
                        .map(|v| proto::ValueShare {
                            dimension: v.dimension,
                            value: v.value,
                            bad: v.bad,
                            valid: v.valid,
                            bad_share: v.bad_share,
                            traffic_share: v.traffic_share,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<ObjectiveReport> for proto::Objective {
    fn from(o: ObjectiveReport) -> Self {
        Self {
            sli: o.sli,
            target: o.target,
            window: o.window,
            window_seconds: o.window_seconds,
            windows: o.windows.into_iter().map(Into::into).collect(),
            budget_remaining: o.budget_remaining,
            page: o.page,
            ticket: o.ticket,
            exhaustion_seconds: o.exhaustion_seconds,
            alerts_held: o
                .alerts_held
                .into_iter()
                .map(|h| proto::HeldAlert {
                    severity: h.severity,
                    window: h.window,
                    valid: h.valid,
                    coverage: h.coverage,
                    min_events: h.min_events,
                    min_coverage: h.min_coverage,
                    reason: h.reason,
                })
                .collect(),
        }
    }
}

impl From<WindowReport> for proto::Window {
    fn from(w: WindowReport) -> Self {
        Self {
            window: w.window,
            seconds: w.seconds,
            good: w.good,
            valid: w.valid,
            sli: w.sli,
            burn_rate: w.burn_rate,
            coverage: w.coverage,
        }
    }
}

impl From<LatencySummary> for proto::LatencySummary {
    fn from(l: LatencySummary) -> Self {
        Self {
            count: l.count,
            sum_seconds: l.sum_seconds,
            p50: l.p50,
            p90: l.p90,
            p99: l.p99,
            p999: l.p999,
            max: l.max,
        }
    }
}

impl From<SeriesReport> for proto::Series {
    fn from(s: SeriesReport) -> Self {
        Self {
            dimensions: s
                .dimensions
                .into_iter()
                .map(|(name, value)| proto::Dimension { name, value })
                .collect(),
            availability_good: s.availability_good,
            availability_bad: s.availability_bad,
            latency_good: s.latency_good,
            latency_bad: s.latency_bad,
            windows: s.windows.into_iter().map(Into::into).collect(),
            latency: s.latency.map(Into::into),
            last_bad_trace_id: s.last_bad_trace_id,
            last_bad_trace_url: s.last_bad_trace_url,
            last_bad_at_ms: s.last_bad_at_ms,
        }
    }
}

impl From<SeriesWindow> for proto::SeriesWindow {
    fn from(w: SeriesWindow) -> Self {
        Self {
            window: w.window,
            valid: w.valid,
            availability_good: w.availability_good,
            latency_good: w.latency_good,
            latency_valid: w.latency_valid,
        }
    }
}

impl From<HistoryPoint> for proto::HistoryPoint {
    fn from(h: HistoryPoint) -> Self {
        Self {
            at_ms: h.at_ms,
            budget_remaining: h.budget_remaining,
            p50: h.p50,
            p90: h.p90,
            p99: h.p99,
        }
    }
}
