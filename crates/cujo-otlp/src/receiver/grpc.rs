//! OTLP/gRPC trace receiver: the unary `TraceService/Export` method, implemented on HTTP/2
//! directly so that every limit is ours — the compressed and the decompressed size, the
//! time to send a body, the memory it takes as it arrives — and every answer is the one the
//! OTLP specification gives. With `receivers.otlp.auth`, a call without a valid bearer token
//! in its `authorization` metadata is answered `UNAUTHENTICATED` before its message is read.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::Frame;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tokio::time::Instant;

use super::body::{self, Framing, Overflow, ReadError};
use super::decode::{Coding, Compressed, DecodeError, decompress};
use super::{Ingest, IngestError, NotAdmitted};
use crate::memory::Lease;
use crate::rpc::{RpcStatus, code, encode_grpc_message, frame};
use crate::telemetry::{RequestOutcome, Transport};

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const ACCEPT_ENCODING: &str = "gzip,zstd,identity";

/// Routes of the gRPC receiver.
pub fn router(ingest: Ingest) -> Router {
    Router::new()
        .route(EXPORT_PATH, post(export))
        .fallback(unimplemented)
        .with_state(ingest)
}

async fn unimplemented(uri: http::Uri) -> Response {
    grpc_error(RpcStatus::new(
        code::UNIMPLEMENTED,
        format!("unknown method {}; cujo serves {EXPORT_PATH}", uri.path()),
    ))
}

async fn export(State(ingest): State<Ingest>, headers: HeaderMap, body: Body) -> Response {
    // Before the body: an unauthenticated stream is answered and reset, nothing read.
    let tenant = match ingest.identify(Transport::Grpc, &headers) {
        Ok(tenant) => tenant,
        Err(NotAdmitted::Unauthenticated(refusal)) => {
            return grpc_error(crate::auth::unauthenticated(refusal));
        }
        Err(NotAdmitted::Refused(e)) => return grpc_error(status_of(&e)),
    };
    let deadline = Instant::now() + ingest.limits.body_timeout;
    let lease = ingest.memory.empty_lease();
    match read_request(&ingest, &headers, body, lease, deadline).await {
        Ok((message, lease)) => {
            match ingest.ingest(Transport::Grpc, message, lease, tenant).await {
                Ok(accepted) => grpc_ok(&ExportTraceServiceResponse {
                    partial_success: accepted.partial_success(),
                }),
                Err(e) => grpc_error(status_of(&e)),
            }
        }
        Err(ReadFailure::Full) => grpc_error(status_of(&ingest.refuse_full(Transport::Grpc, 0))),
        Err(ReadFailure::Status(status)) => {
            let outcome = if status.code == code::RESOURCE_EXHAUSTED {
                RequestOutcome::TooLarge
            } else {
                RequestOutcome::Invalid
            };
            ingest.telemetry.request(Transport::Grpc, outcome, 0);
            grpc_error(status)
        }
    }
}

/// The gRPC status for each way a request can fail. Only overload carries `RetryInfo`:
/// `RESOURCE_EXHAUSTED` without it tells OTLP clients not to retry.
fn status_of(e: &IngestError) -> RpcStatus {
    match e {
        IngestError::Invalid(m) => RpcStatus::new(code::INVALID_ARGUMENT, m.clone()),
        IngestError::TooLarge(m) => RpcStatus::new(code::RESOURCE_EXHAUSTED, m.clone()),
        IngestError::UnsupportedEncoding(m) => RpcStatus::new(code::UNIMPLEMENTED, m.clone()),
        IngestError::Refused {
            message,
            retry_after,
        } => RpcStatus::new(code::UNAVAILABLE, message.clone()).with_retry_delay(*retry_after),
    }
}

/// Why a request could not be read.
enum ReadFailure {
    /// The receivers' memory share has no room: the retryable refusal.
    Full,
    /// Anything else, answered with this status.
    Status(RpcStatus),
}

impl From<RpcStatus> for ReadFailure {
    fn from(s: RpcStatus) -> Self {
        ReadFailure::Status(s)
    }
}

/// Reads and decodes the single request message into memory paid for by `lease`, or says
/// why not.
async fn read_request(
    ingest: &Ingest,
    headers: &HeaderMap,
    mut body: Body,
    mut lease: Lease,
    deadline: Instant,
) -> Result<(Bytes, Lease), ReadFailure> {
    let limit = ingest.limits.max_message_bytes;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return Err(RpcStatus::new(
            code::INVALID_ARGUMENT,
            format!("content-type {content_type:?} is not application/grpc"),
        )
        .into());
    }
    let encoding = headers.get("grpc-encoding").and_then(|v| v.to_str().ok());
    let coding = Coding::parse(encoding).ok_or_else(|| {
        RpcStatus::new(
            code::UNIMPLEMENTED,
            format!(
                "grpc-encoding {:?} is not supported; use one of {ACCEPT_ENCODING}",
                encoding.unwrap_or_default()
            ),
        )
    })?;
    // Refused before its end, the rest of the stream is reset (HTTP/2 needs no draining).
    let buf = body::read(
        ingest,
        &mut lease,
        &mut body,
        Framing::Grpc,
        limit,
        deadline,
    )
    .await
    .map_err(|e| match e {
        ReadError::Overflow(Overflow::Full) => ReadFailure::Full,
        ReadError::Overflow(Overflow::TooLarge) => too_large(limit).into(),
        ReadError::Timeout => RpcStatus::new(
            code::DEADLINE_EXCEEDED,
            format!(
                "request body not received within {:?} (receivers.otlp.grpc.body_timeout)",
                ingest.limits.body_timeout
            ),
        )
        .into(),
        ReadError::Failed(e) => {
            RpcStatus::new(code::CANCELLED, format!("reading request body failed: {e}")).into()
        }
    })?;
    let mut buf = buf.into_bytes(&mut lease);
    let counted = lease.bytes();
    if buf.len() < 5 {
        return Err(RpcStatus::new(
            code::INVALID_ARGUMENT,
            "request has no complete gRPC message frame",
        )
        .into());
    }
    let compressed = buf.get_u8();
    let len = buf.get_u32() as usize;
    if len > limit {
        return Err(too_large(limit).into());
    }
    if buf.len() != len {
        return Err(RpcStatus::new(
            code::INVALID_ARGUMENT,
            format!(
                "gRPC frame declares {len} bytes but {} follow (unary calls carry one message)",
                buf.len()
            ),
        )
        .into());
    }
    match (compressed, coding) {
        (0, _) => Ok((buf, lease)),
        (1, Coding::Identity) => Err(RpcStatus::new(
            code::INTERNAL,
            "message is flagged compressed but no grpc-encoding was sent",
        )
        .into()),
        (1, coding) => {
            let input = Compressed {
                bytes: buf,
                counted,
            };
            decompress(ingest, coding, input, limit, lease)
                .await
                .map_err(|e| match e {
                    DecodeError::TooLarge { .. } => too_large(limit).into(),
                    DecodeError::Full => ReadFailure::Full,
                    DecodeError::Corrupt { .. } => {
                        RpcStatus::new(code::INVALID_ARGUMENT, e.to_string()).into()
                    }
                })
        }
        (flag, _) => Err(RpcStatus::new(
            code::INVALID_ARGUMENT,
            format!("invalid gRPC compressed-flag byte {flag}"),
        )
        .into()),
    }
}

fn too_large(limit: usize) -> RpcStatus {
    RpcStatus::new(
        code::RESOURCE_EXHAUSTED,
        format!(
            "request message is larger than the limit of {limit} bytes (receivers.otlp.grpc.max_recv_msg_size)"
        ),
    )
}

fn grpc_headers(builder: http::response::Builder) -> http::response::Builder {
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("grpc-accept-encoding", ACCEPT_ENCODING)
}

/// A successful unary response: one message frame, then `grpc-status: 0` in trailers.
pub fn grpc_ok(message: &impl prost::Message) -> Response {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = UnaryBody {
        data: Some(frame(&message.encode_to_vec(), false)),
        trailers: Some(trailers),
    };
    grpc_headers(Response::builder())
        .body(Body::new(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A trailers-only error response: the status travels in the headers, the body is empty.
pub fn grpc_error(status: RpcStatus) -> Response {
    let mut builder = grpc_headers(Response::builder())
        .header("grpc-status", status.code.to_string())
        .header("grpc-message", encode_grpc_message(&status.message));
    if !status.details.is_empty() {
        builder = builder.header("grpc-status-details-bin", status.details_header());
    }
    builder
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Body of a unary gRPC response: one data frame followed by trailers.
struct UnaryBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}
