//! `GET /api/v1/slos[?cuj=NAME]`: the SLO report as JSON, for scripts, dashboards and the
//! `cujo status` deploy gate.

use std::borrow::Cow;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cujo_sli::report::Report;
use http::{StatusCode, header};
use serde::Deserialize;

use super::ReportSource;

pub const PATH: &str = "/api/v1/slos";

/// A CUJ name that no configured CUJ has.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown CUJ \"{name}\" (configured: {})", configured_list(.configured))]
pub struct UnknownCuj {
    pub name: String,
    /// The configured names, to show what would have matched.
    pub configured: Vec<String>,
}

fn configured_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The report narrowed to one CUJ (a copy of that CUJ only); `None` or an empty name keeps
/// every CUJ (the report itself, not copied).
pub fn select<'a>(report: &'a Report, cuj: Option<&str>) -> Result<Cow<'a, Report>, UnknownCuj> {
    let Some(name) = cuj.filter(|n| !n.is_empty()) else {
        return Ok(Cow::Borrowed(report));
    };
    let Some(found) = report.cujs.iter().find(|c| c.name == name) else {
        return Err(UnknownCuj {
            name: name.to_string(),
            configured: report.cujs.iter().map(|c| c.name.clone()).collect(),
        });
    };
    Ok(Cow::Owned(Report {
        generated_at_ms: report.generated_at_ms,
        cujs: vec![found.clone()],
    }))
}

#[derive(Deserialize)]
struct SloQuery {
    cuj: Option<String>,
}

pub fn routes(source: ReportSource) -> Router {
    Router::new().route(PATH, get(slos)).with_state(source)
}

async fn slos(
    State(source): State<ReportSource>,
    query: Result<Query<SloQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("bad query string (expected ?cuj=NAME): {}", e.body_text()),
            );
        }
    };
    let Some(report) = source.report().await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the SLI engine is unavailable (its thread stopped); see cujo's log",
        );
    };
    match select(&report, query.cuj.as_deref()) {
        Ok(report) => match serde_json::to_vec(&report) {
            Ok(body) => json(StatusCode::OK, body),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the report: {e}"),
            ),
        },
        Err(unknown) => error(StatusCode::NOT_FOUND, &unknown.to_string()),
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"error": "..."}` with `status`.
fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    json(status, body.into_bytes())
}
