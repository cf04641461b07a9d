//! `GET /api/v1/slos[?cuj=NAME]`: the SLO report as JSON, for scripts, dashboards and the
//! `cujo status` deploy gate; gzip when the client's `Accept-Encoding` takes it.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use cujo_otlp::gzip::{self, Prepared};
use cujo_sli::report::Report;
use http::{HeaderMap, StatusCode, header};
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

/// The whole report's JSON, kept while the engine hands out the same snapshot: scripts
/// polling many times a second encode it (hundreds of KiB over thousands of series) once
/// per snapshot, not once each, and compress it once for those that take gzip.
#[derive(Clone, Default)]
struct Encoded(Arc<Mutex<Option<EncodedReport>>>);

/// A report snapshot and its JSON.
type EncodedReport = (Arc<Report>, Arc<Prepared>);

/// The API's answer: the report, and where the fleet's SLOs are when this instance is one
/// of several (`"fleet": {"prometheus": URL}`; absent otherwise).
#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(flatten)]
    report: &'a Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<Fleet<'a>>,
}

#[derive(serde::Serialize)]
struct Fleet<'a> {
    prometheus: &'a str,
}

fn answer<'a>(report: &'a Report, fleet: Option<&'a str>) -> Answer<'a> {
    Answer {
        report,
        fleet: fleet.map(|prometheus| Fleet { prometheus }),
    }
}

impl Encoded {
    fn of(
        &self,
        report: &Arc<Report>,
        fleet: Option<&str>,
    ) -> Result<Arc<Prepared>, serde_json::Error> {
        if let Ok(kept) = self.0.lock()
            && let Some((snapshot, body)) = kept.as_ref()
            && Arc::ptr_eq(snapshot, report)
        {
            return Ok(body.clone());
        }
        let body = Arc::new(Prepared::new(serde_json::to_vec(&answer(report, fleet))?));
        if let Ok(mut kept) = self.0.lock() {
            *kept = Some((report.clone(), body.clone()));
        }
        Ok(body)
    }
}

pub fn routes(source: ReportSource) -> Router {
    Router::new()
        .route(PATH, get(slos))
        .with_state((source, Encoded::default()))
}

async fn slos(
    State((source, encoded)): State<(ReportSource, Encoded)>,
    headers: HeaderMap,
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
    let body = match select(&report, query.cuj.as_deref()) {
        Ok(Cow::Borrowed(_)) => encoded.of(&report, source.fleet()).map(|whole| {
            let accept = headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok());
            if gzip::accepts_gzip(accept) {
                Body::Gzip(whole.gzip())
            } else {
                Body::Plain(whole.text().clone())
            }
        }),
        // One CUJ's report is small: sent as it is.
        Ok(Cow::Owned(one)) => {
            serde_json::to_vec(&answer(&one, source.fleet())).map(|b| Body::Plain(Bytes::from(b)))
        }
        Err(unknown) => return error(StatusCode::NOT_FOUND, &unknown.to_string()),
    };
    let vary = (header::VARY, "accept-encoding");
    match body {
        Ok(Body::Plain(body)) => ([vary], json(StatusCode::OK, body)).into_response(),
        Ok(Body::Gzip(body)) => (
            [vary, (header::CONTENT_ENCODING, gzip::GZIP)],
            json(StatusCode::OK, body),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the report: {e}"),
        ),
    }
}

/// A report's JSON as sent.
enum Body {
    Plain(Bytes),
    Gzip(Bytes),
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let body: Bytes = body.into();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `{"error": "..."}` with `status`.
fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    json(status, body.into_bytes())
}
