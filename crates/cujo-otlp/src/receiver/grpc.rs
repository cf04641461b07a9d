//! OTLP/gRPC trace receiver: the unary `TraceService/Export` method, served by tonic's
//! `Grpc` handler inside our own listener (TLS, connection limits and auth stay in
//! [`crate::server`]). tonic frames the message and writes the answer; what is ours stays
//! ours: the request body is metered as it arrives ([`MeteredBody`]: the admission lease,
//! the size limit, `body_timeout`, one message per call), the message is handed on as its
//! raw bytes ([`ExportCodec`]: no prost decode, the wire scanner validates it), and every
//! answer is the one the OTLP specification gives. With `receivers.otlp.auth`, a call
//! without a valid bearer token in its `authorization` metadata is answered
//! `UNAUTHENTICATED` before its message is read.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use bytes::{Buf, Bytes};
use http::header;
use http_body::Frame;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tokio::time::Instant;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use super::decode::{Coding, Compressed, DecodeError, decompress};
use super::{Ingest, IngestError, NotAdmitted};
use crate::memory::Lease;
use crate::rpc::{FRAME_HEADER_LEN, RpcStatus, code};
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

async fn export(State(ingest): State<Ingest>, request: http::Request<Body>) -> Response {
    // Before the body: an unauthenticated stream is answered and reset, nothing read.
    let tenant = match ingest.identify(Transport::Grpc, request.headers()) {
        Ok(tenant) => tenant,
        Err(NotAdmitted::Unauthenticated(refusal)) => {
            return grpc_error(crate::auth::unauthenticated(refusal));
        }
        Err(NotAdmitted::Refused(e)) => return grpc_error(status_of(&e)),
    };
    let coding = match check_headers(request.headers()) {
        Ok(coding) => coding,
        Err(status) => {
            ingest
                .telemetry
                .request(Transport::Grpc, RequestOutcome::Invalid, 0);
            return grpc_error(status);
        }
    };
    let limit = ingest.limits.max_message_bytes;
    let inflate_here = inflate_here();
    let call = Arc::new(Call {
        lease: Mutex::new(ingest.memory.empty_lease()),
        ingest: ingest.clone(),
        counted: AtomicBool::new(false),
        compressed: AtomicUsize::new(0),
        coding,
        inflate_here,
    });
    let (mut parts, body) = request.into_parts();
    if inflate_here {
        // The message reaches tonic as it came, compressed bytes flagged plain: inflating
        // is ours, counted as it inflates (tonic's own inflates first and counts nothing).
        parts.headers.remove("grpc-encoding");
    }
    let deadline = Instant::now() + ingest.limits.body_timeout;
    let body = MeteredBody::new(body, call.clone(), coding, deadline);
    let mut grpc = tonic::server::Grpc::new(ExportCodec { call: call.clone() })
        .max_decoding_message_size(limit);
    if !inflate_here {
        grpc = grpc
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd);
    }
    let service = ExportService {
        call: call.clone(),
        tenant,
    };
    let response = grpc
        .unary(service, http::Request::from_parts(parts, body))
        .await;
    // A failure tonic found before the service ran (a message that does not inflate, ...)
    // is counted here; ours were counted where they were found.
    if !call.counted.load(Ordering::Relaxed)
        && let Some(status) = response.extensions().get::<Status>()
    {
        let outcome = if status.code() == Code::ResourceExhausted {
            RequestOutcome::TooLarge
        } else {
            RequestOutcome::Invalid
        };
        ingest.telemetry.request(Transport::Grpc, outcome, 0);
    }
    response.map(Body::new)
}

/// The content type and the message coding, checked before anything is read.
fn check_headers(headers: &http::HeaderMap) -> Result<Coding, RpcStatus> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/grpc") {
        return Err(RpcStatus::new(
            code::INVALID_ARGUMENT,
            format!("content-type {content_type:?} is not application/grpc"),
        ));
    }
    let encoding = headers.get("grpc-encoding").and_then(|v| v.to_str().ok());
    Coding::parse(encoding).ok_or_else(|| {
        RpcStatus::new(
            code::UNIMPLEMENTED,
            format!(
                "grpc-encoding {:?} is not supported; use one of {ACCEPT_ENCODING}",
                encoding.unwrap_or_default()
            ),
        )
    })
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

/// `status` as tonic's, its details (`RetryInfo`) carried in `grpc-status-details-bin`.
pub fn to_tonic(status: RpcStatus) -> Status {
    let code = Code::from_i32(status.code);
    if status.details.is_empty() {
        Status::new(code, status.message)
    } else {
        let details = Bytes::from(prost::Message::encode_to_vec(&status));
        Status::with_details(code, status.message, details)
    }
}

/// A trailers-only error answer: the status travels in the headers, the body is empty.
pub fn grpc_error(status: RpcStatus) -> Response {
    let mut response: Response = to_tonic(status).into_http();
    response.headers_mut().insert(
        "grpc-accept-encoding",
        http::HeaderValue::from_static(ACCEPT_ENCODING),
    );
    response
}

fn too_large(limit: usize) -> RpcStatus {
    RpcStatus::new(
        code::RESOURCE_EXHAUSTED,
        format!(
            "request message is larger than the limit of {limit} bytes (receivers.otlp.grpc.max_recv_msg_size)"
        ),
    )
}

/// Prototype switch: `CUJO_TONIC_INFLATE=tonic` lets tonic inflate (counted once inflated);
/// otherwise cujo inflates, counted as it inflates.
fn inflate_here() -> bool {
    static HERE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HERE.get_or_init(|| std::env::var("CUJO_TONIC_INFLATE").as_deref() != Ok("tonic"))
}

/// What one call's body, codec and service share.
struct Call {
    ingest: Ingest,
    /// Pays for the request from its first byte: the message as it arrives, then as it
    /// inflates; goes on with the spans.
    lease: Mutex<Lease>,
    /// Whether the request's outcome is already counted (by whoever refused it).
    counted: AtomicBool,
    /// Bytes of the lease that pay for a compressed message, given back once inflated.
    compressed: AtomicUsize,
    /// The message's coding (`grpc-encoding`).
    coding: Coding,
    /// Whether cujo inflates (else tonic does).
    inflate_here: bool,
}

impl Call {
    /// Counts a refusal of the request as `outcome` and makes it tonic's error.
    fn refuse(&self, status: RpcStatus, outcome: RequestOutcome) -> Status {
        self.counted.store(true, Ordering::Relaxed);
        self.ingest.telemetry.request(Transport::Grpc, outcome, 0);
        to_tonic(status)
    }

    /// The retryable refusal of a request the receivers' share has no room for.
    fn full(&self) -> Status {
        self.counted.store(true, Ordering::Relaxed);
        to_tonic(status_of(&self.ingest.refuse_full(Transport::Grpc, 0)))
    }

    /// Pays for `bytes` more of the request, or says the receivers are full.
    fn charge(&self, bytes: usize) -> Result<(), Status> {
        let mut lease = match self.lease.lock() {
            Ok(lease) => lease,
            Err(poisoned) => poisoned.into_inner(),
        };
        if self.ingest.try_grow(&mut lease, bytes) {
            Ok(())
        } else {
            Err(self.full())
        }
    }

    fn take_lease(&self) -> Lease {
        let mut lease = match self.lease.lock() {
            Ok(lease) => lease,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *lease, self.ingest.memory.empty_lease())
    }
}

/// The request body as tonic reads it, metered: each data frame is paid for from the call's
/// lease before tonic sees it, the message prefix is checked against the limit and the
/// coding, a second message or a short one is refused, and the whole body must arrive by
/// `deadline` (`body_timeout`). A refusal fails the stream with its [`Status`], which tonic
/// answers with; the rest of the stream is reset.
struct MeteredBody {
    inner: Body,
    call: Arc<Call>,
    coding: Coding,
    /// The 5-byte message prefix, as far as it arrived.
    prefix: [u8; FRAME_HEADER_LEN],
    /// Body bytes seen so far.
    received: usize,
    /// The body's whole length (prefix and message) once the prefix is in.
    expected: Option<usize>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Failed or ended: nothing more is read.
    done: bool,
}

impl MeteredBody {
    fn new(inner: Body, call: Arc<Call>, coding: Coding, deadline: Instant) -> Self {
        Self {
            inner,
            call,
            coding,
            prefix: [0; FRAME_HEADER_LEN],
            received: 0,
            expected: None,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            done: false,
        }
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        Poll::Ready(Some(Err(status)))
    }

    /// Checks a data frame of `data` against the prefix, the limit and the one message.
    fn admit(&mut self, data: &[u8]) -> Result<(), Status> {
        let limit = self.call.ingest.limits.max_message_bytes;
        if self.received < FRAME_HEADER_LEN {
            let take = (FRAME_HEADER_LEN - self.received).min(data.len());
            self.prefix[self.received..self.received + take].copy_from_slice(&data[..take]);
            if self.received + take == FRAME_HEADER_LEN {
                let [flag, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > limit {
                    return Err(self.call.refuse(too_large(limit), RequestOutcome::TooLarge));
                }
                match (flag, self.coding) {
                    (0, _) => {}
                    (1, Coding::Identity) => {
                        return Err(self.call.refuse(
                            RpcStatus::new(
                                code::INTERNAL,
                                "message is flagged compressed but no grpc-encoding was sent",
                            ),
                            RequestOutcome::Invalid,
                        ));
                    }
                    (1, _) => {
                        self.call
                            .compressed
                            .store(FRAME_HEADER_LEN + len, Ordering::Relaxed);
                    }
                    (flag, _) => {
                        return Err(self.call.refuse(
                            RpcStatus::new(
                                code::INVALID_ARGUMENT,
                                format!("invalid gRPC compressed-flag byte {flag}"),
                            ),
                            RequestOutcome::Invalid,
                        ));
                    }
                }
                self.expected = Some(FRAME_HEADER_LEN + len);
            }
        }
        self.received += data.len();
        if let Some(expected) = self.expected
            && self.received > expected
        {
            return Err(self.call.refuse(
                RpcStatus::new(
                    code::INVALID_ARGUMENT,
                    format!(
                        "gRPC frame declares {} bytes but more follow (unary calls carry one message)",
                        expected - FRAME_HEADER_LEN
                    ),
                ),
                RequestOutcome::Invalid,
            ));
        }
        self.call.charge(data.len())
    }

    /// At the end of the body: the one message must be complete.
    fn finish(&mut self) -> Result<(), Status> {
        match self.expected {
            None => Err(self.call.refuse(
                RpcStatus::new(
                    code::INVALID_ARGUMENT,
                    "request has no complete gRPC message frame",
                ),
                RequestOutcome::Invalid,
            )),
            Some(expected) if self.received < expected => Err(self.call.refuse(
                RpcStatus::new(
                    code::INVALID_ARGUMENT,
                    format!(
                        "gRPC frame declares {} bytes but {} follow",
                        expected - FRAME_HEADER_LEN,
                        self.received - FRAME_HEADER_LEN
                    ),
                ),
                RequestOutcome::Invalid,
            )),
            Some(_) => Ok(()),
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    let status = RpcStatus::new(
                        code::DEADLINE_EXCEEDED,
                        format!(
                            "request body not received within {:?} (receivers.otlp.grpc.body_timeout)",
                            this.call.ingest.limits.body_timeout
                        ),
                    );
                    let status = this.call.refuse(status, RequestOutcome::Invalid);
                    return this.fail(status);
                }
                return Poll::Pending;
            }
            Poll::Ready(None) => {
                return match this.finish() {
                    Ok(()) => {
                        this.done = true;
                        Poll::Ready(None)
                    }
                    Err(status) => this.fail(status),
                };
            }
            Poll::Ready(Some(Err(e))) => {
                let status =
                    RpcStatus::new(code::CANCELLED, format!("reading request body failed: {e}"));
                let status = this.call.refuse(status, RequestOutcome::Invalid);
                return this.fail(status);
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let starts = this.received == 0;
        if let Some(data) = frame.data_ref()
            && let Err(status) = this.admit(data)
        {
            return this.fail(status);
        }
        // A compressed message is handed to tonic flagged plain; cujo inflates it.
        if starts && this.call.inflate_here && this.call.compressed.load(Ordering::Relaxed) > 0 {
            return Poll::Ready(Some(Ok(match frame.into_data() {
                Ok(data) => {
                    let mut data = bytes::BytesMut::from(data);
                    data[0] = 0;
                    Frame::data(data.freeze())
                }
                Err(frame) => frame,
            })));
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

/// The message as its raw bytes (the wire scanner validates it later); the answer as an
/// `ExportTraceServiceResponse`.
struct ExportCodec {
    call: Arc<Call>,
}

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder {
            call: self.call.clone(),
        }
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(
        &mut self,
        item: ExportTraceServiceResponse,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), Status> {
        prost::Message::encode(&item, dst)
            .map_err(|e| Status::internal(format!("encoding the answer failed: {e}")))
    }
}

struct RawDecoder {
    call: Arc<Call>,
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        // tonic inflated a compressed message into a buffer of its own: paid for now.
        if !self.call.inflate_here && self.call.compressed.load(Ordering::Relaxed) > 0 {
            self.call.charge(len)?;
        }
        Ok(Some(src.copy_to_bytes(len)))
    }
}

/// Hands the message to the pipeline and answers with its partial success.
struct ExportService {
    call: Arc<Call>,
    tenant: Option<Arc<cujo_wire::Tenant>>,
}

impl tonic::server::UnaryService<Bytes> for ExportService {
    type Response = ExportTraceServiceResponse;
    type Future = Pin<
        Box<
            dyn Future<Output = Result<tonic::Response<ExportTraceServiceResponse>, Status>> + Send,
        >,
    >;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let call = self.call.clone();
        let tenant = self.tenant.take();
        Box::pin(async move {
            call.counted.store(true, Ordering::Relaxed);
            let mut lease = call.take_lease();
            let mut message = request.into_inner();
            let compressed = call.compressed.load(Ordering::Relaxed);
            if compressed > 0 && call.inflate_here {
                let limit = call.ingest.limits.max_message_bytes;
                let input = Compressed {
                    bytes: message,
                    counted: compressed,
                };
                match decompress(&call.ingest, call.coding, input, limit, lease).await {
                    Ok((inflated, l)) => {
                        message = inflated;
                        lease = l;
                    }
                    Err(DecodeError::Full) => return Err(call.full()),
                    Err(DecodeError::TooLarge { .. }) => {
                        return Err(call.refuse(too_large(limit), RequestOutcome::TooLarge));
                    }
                    Err(e @ DecodeError::Corrupt { .. }) => {
                        return Err(call.refuse(
                            RpcStatus::new(code::INVALID_ARGUMENT, e.to_string()),
                            RequestOutcome::Invalid,
                        ));
                    }
                }
            } else {
                // The compressed message went with tonic's read buffer.
                lease.shrink(compressed);
            }
            match call
                .ingest
                .ingest(Transport::Grpc, message, lease, tenant)
                .await
            {
                Ok(accepted) => Ok(tonic::Response::new(ExportTraceServiceResponse {
                    partial_success: accepted.partial_success(),
                })),
                Err(e) => Err(to_tonic(status_of(&e))),
            }
        })
    }
}
