//! OTLP/HTTP trace receiver: `POST /v1/traces` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip- or zstd-encoded. Answers follow the OTLP/HTTP
//! specification: the response uses the request's content type, failures carry a
//! `google.rpc.Status`, overload (including no room in the receivers' memory share while the
//! body arrives or inflates) is 503 with `Retry-After`, bad data is 400, too large 413, an
//! unknown media type or encoding 415, another method 405, a body slower than the body
//! timeout 408, and with `receivers.otlp.auth` a request without a valid bearer token 401
//! (`WWW-Authenticate: Bearer`), decided on its headers before its body is read.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use cujo_wire::Tenant;
use http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::time::Instant;

use super::body::{self, Framing, Overflow, ReadError};
use super::decode::{Coding, Compressed, DecodeError, decompress};
use super::{Ingest, IngestError, NotAdmitted};
use crate::auth::{self, Refusal};
use crate::rpc::RpcStatus;
use crate::telemetry::{RequestOutcome, Transport};

pub const TRACES_PATH: &str = "/v1/traces";

/// Routes of the HTTP receiver.
pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route(TRACES_PATH, post(export))
        .with_state(ingest)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// A failed request: HTTP status, the gRPC-style status for the body, optional Retry-After.
struct Failure {
    http: StatusCode,
    status: RpcStatus,
    retry_after_secs: Option<u64>,
    /// How to count the request; `None` when [`Ingest::ingest`] already counted it.
    outcome: Option<RequestOutcome>,
}

impl Failure {
    fn new(http: StatusCode, message: impl Into<String>, outcome: RequestOutcome) -> Self {
        let code = match http {
            StatusCode::BAD_REQUEST => crate::rpc::code::INVALID_ARGUMENT,
            StatusCode::PAYLOAD_TOO_LARGE => crate::rpc::code::RESOURCE_EXHAUSTED,
            StatusCode::SERVICE_UNAVAILABLE => crate::rpc::code::UNAVAILABLE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => crate::rpc::code::UNIMPLEMENTED,
            StatusCode::REQUEST_TIMEOUT => crate::rpc::code::DEADLINE_EXCEEDED,
            _ => crate::rpc::code::UNKNOWN,
        };
        Self {
            http,
            status: RpcStatus::new(code, message),
            retry_after_secs: None,
            outcome: Some(outcome),
        }
    }

    /// Marks a failure that was already counted.
    fn counted(self) -> Self {
        Self {
            outcome: None,
            ..self
        }
    }
}

async fn export(
    State(ingest): State<Ingest>,
    version: Version,
    headers: HeaderMap,
    mut body: Body,
) -> Response {
    let deadline = Instant::now() + ingest.limits.body_timeout;
    let tenant = match ingest.identify(Transport::Http, &headers) {
        Ok(tenant) => tenant,
        Err(NotAdmitted::Unauthenticated(refusal)) => {
            linger(&ingest, version, body, deadline);
            return unauthenticated(&headers, refusal);
        }
        Err(NotAdmitted::Refused(e)) => {
            linger(&ingest, version, body, deadline);
            let format = media_type(&headers).unwrap_or(Format::Protobuf);
            return respond_failure(&ingest, format, failure_of(e).counted());
        }
    };
    let (format, result) = match media_type(&headers) {
        Some(format) => (
            format,
            handle(&ingest, format, &headers, &mut body, deadline, tenant).await,
        ),
        None => {
            let found = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none");
            let failure = Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content-type {found:?} is not supported; use application/x-protobuf or application/json"
                ),
                RequestOutcome::Invalid,
            );
            (Format::Protobuf, Err(failure))
        }
    };
    match result {
        Ok(response) => respond_ok(format, &response),
        Err(failure) => {
            linger(&ingest, version, body, deadline);
            respond_failure(&ingest, format, failure)
        }
    }
}

/// An HTTP/1 client still sending reads the answer, not a reset, if the rest of its body is
/// read (and dropped, never kept or inflated): up to twice the limit, within the body
/// timeout.
fn linger(ingest: &Ingest, version: Version, body: Body, deadline: Instant) {
    if version < Version::HTTP_2 && !http_body::Body::is_end_stream(&body) {
        let max = ingest.limits.max_message_bytes.saturating_mul(2);
        body::linger(body, max, deadline);
    }
}

/// 401 with `WWW-Authenticate: Bearer`; the body says what was wrong: a `google.rpc.Status`
/// (`UNAUTHENTICATED`) in the request's content type as OTLP answers failures, or a line of
/// text when the content type is not OTLP's. Counted by [`Ingest::authenticate`].
fn unauthenticated(headers: &HeaderMap, refusal: Refusal) -> Response {
    let Some(format) = media_type(headers) else {
        return auth::unauthorized(refusal);
    };
    let status = auth::unauthenticated(refusal);
    let mut response = failure_body(format, &status, StatusCode::UNAUTHORIZED);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn handle(
    ingest: &Ingest,
    format: Format,
    headers: &HeaderMap,
    body: &mut Body,
    deadline: Instant,
    tenant: Option<Arc<Tenant>>,
) -> Result<ExportTraceServiceResponse, Failure> {
    let limit = ingest.limits.max_message_bytes;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let coding = Coding::parse(encoding).ok_or_else(|| {
        Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-encoding {:?} is not supported; use gzip, zstd or none",
                encoding.unwrap_or_default()
            ),
            RequestOutcome::Invalid,
        )
    })?;
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than the limit of {limit} bytes (receivers.otlp.http.max_request_body_size)"
            ),
            RequestOutcome::TooLarge,
        )
    };
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut lease = ingest.memory.empty_lease();
    let framing = Framing::Plain { content_length };
    let read = body::read(ingest, &mut lease, body, framing, limit, deadline)
        .await
        .map_err(|e| match e {
            ReadError::Overflow(Overflow::Full) => full(ingest),
            ReadError::Overflow(Overflow::TooLarge) => too_large(),
            ReadError::Timeout => Failure::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {:?} (receivers.otlp.http.body_timeout)",
                    ingest.limits.body_timeout
                ),
                RequestOutcome::Invalid,
            ),
            ReadError::Failed(e) => Failure::new(
                StatusCode::BAD_REQUEST,
                format!("reading request body failed: {e}"),
                RequestOutcome::Invalid,
            ),
        })?;
    let bytes = read.into_bytes(&mut lease);
    let input = Compressed {
        counted: lease.bytes(),
        bytes,
    };
    let (raw, mut lease) = decompress(ingest, coding, input, limit, lease)
        .await
        .map_err(|e| match e {
            DecodeError::TooLarge { .. } => too_large(),
            DecodeError::Full => full(ingest),
            DecodeError::Corrupt { .. } => Failure::new(
                StatusCode::BAD_REQUEST,
                e.to_string(),
                RequestOutcome::Invalid,
            ),
        })?;
    let protobuf = match format {
        Format::Protobuf => raw,
        Format::Json => {
            // JSON goes through the generated types; the protobuf it becomes is paid for
            // before the JSON is given back. Large bodies convert off the async workers.
            let json_counted = lease.bytes();
            let protobuf = if raw.len() > 64 * 1024 {
                tokio::task::spawn_blocking(move || json_body(&raw))
                    .await
                    .map_err(|e| {
                        Failure::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("OTLP/JSON conversion failed: {e}"),
                            RequestOutcome::Invalid,
                        )
                    })??
            } else {
                json_body(&raw)?
            };
            if !ingest.try_grow(&mut lease, protobuf.len()) {
                return Err(full(ingest));
            }
            lease.shrink(json_counted);
            protobuf
        }
    };
    let accepted = ingest
        .ingest(Transport::Http, protobuf, lease, tenant)
        .await
        .map_err(|e| failure_of(e).counted())?;
    Ok(ExportTraceServiceResponse {
        partial_success: accepted.partial_success(),
    })
}

/// The retryable refusal for a full memory share, counted.
fn full(ingest: &Ingest) -> Failure {
    failure_of(ingest.refuse_full(Transport::Http, 0)).counted()
}

/// The HTTP answer to each way [`Ingest`] refuses a request.
fn failure_of(e: IngestError) -> Failure {
    match e {
        IngestError::Invalid(m) => {
            Failure::new(StatusCode::BAD_REQUEST, m, RequestOutcome::Invalid)
        }
        IngestError::TooLarge(m) => {
            Failure::new(StatusCode::PAYLOAD_TOO_LARGE, m, RequestOutcome::TooLarge)
        }
        IngestError::UnsupportedEncoding(m) => Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            m,
            RequestOutcome::Invalid,
        ),
        IngestError::Refused {
            message,
            retry_after,
        } => Failure {
            retry_after_secs: Some(retry_after.as_secs().max(1)),
            ..Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                message,
                RequestOutcome::Refused,
            )
        },
    }
}

/// OTLP/JSON goes through the generated types (the slow path), then on as protobuf: the
/// bytes [`Ingest::ingest`] is handed for a JSON body. Public for the fuzz targets.
pub fn json_to_protobuf(raw: &[u8]) -> Result<Bytes, serde_json::Error> {
    let request: ExportTraceServiceRequest = serde_json::from_slice(raw)?;
    Ok(Bytes::from(request.encode_to_vec()))
}

/// [`json_to_protobuf`], its error as the receiver's answer.
fn json_body(raw: &[u8]) -> Result<Bytes, Failure> {
    json_to_protobuf(raw).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("cannot decode OTLP/JSON ExportTraceServiceRequest: {e}"),
            RequestOutcome::Invalid,
        )
    })
}

fn media_type(headers: &HeaderMap) -> Option<Format> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
        "application/json" => Some(Format::Json),
        _ => None,
    }
}

fn respond_ok(format: Format, response: &ExportTraceServiceResponse) -> Response {
    let body = match format {
        Format::Protobuf => Bytes::from(response.encode_to_vec()),
        Format::Json => match serde_json::to_vec(response) {
            Ok(v) => Bytes::from(v),
            Err(_) => Bytes::from_static(b"{}"),
        },
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response()
}

fn respond_failure(ingest: &Ingest, format: Format, failure: Failure) -> Response {
    if let Some(outcome) = failure.outcome {
        ingest.telemetry.request(Transport::Http, outcome, 0);
    }
    let mut response = failure_body(format, &failure.status, failure.http);
    if let Some(v) = failure
        .retry_after_secs
        .and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// A failure's answer: `status` in the request's format, with the HTTP status `http`.
fn failure_body(format: Format, status: &RpcStatus, http: StatusCode) -> Response {
    let body = match format {
        Format::Protobuf => Bytes::from(status.encode_to_vec()),
        Format::Json => Bytes::from(
            serde_json::json!({
                "code": status.code,
                "message": status.message,
            })
            .to_string(),
        ),
    };
    (
        http,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response()
}
