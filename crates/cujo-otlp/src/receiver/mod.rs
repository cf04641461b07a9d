//! OTLP trace receivers. Both transports decode the body (bounded), then hand the protobuf
//! bytes to [`Ingest`], which validates, admits and passes spans on — so both answer the
//! same way to the same input.
//!
//! - [`grpc`]: `opentelemetry.proto.collector.trace.v1.TraceService/Export` over HTTP/2.
//! - [`http`]: `POST /v1/traces`, protobuf or JSON.
//! - [`decode`]: decompression with a limit on the *decompressed* size.

pub mod decode;
pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cujo_wire::scan_request;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

use crate::admission::{Admitted, SpanSink};
use crate::memory::Account;
use crate::telemetry::{PipelineTelemetry, RequestOutcome, Transport};

/// Limits shared by the receivers.
#[derive(Debug, Clone)]
pub struct ReceiverLimits {
    /// Largest request accepted, compressed or decompressed.
    pub max_message_bytes: usize,
    /// How long a client may take to send a whole request body.
    pub body_timeout: Duration,
    /// The delay suggested to clients refused for overload.
    pub retry_after: Duration,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// What the receivers share: their memory account, the next stage and the counters.
#[derive(Clone)]
pub struct Ingest {
    /// The receivers' share of the memory budget: request bodies and accepted requests
    /// waiting for the next stage.
    pub memory: Account,
    pub sink: SpanSink,
    pub telemetry: Arc<PipelineTelemetry>,
    pub limits: ReceiverLimits,
}

/// A successful ingest: how many spans were refused one by one, and why the first was.
#[derive(Debug, Default)]
pub struct Accepted {
    pub rejected_spans: i64,
    pub error_message: String,
}

impl Accepted {
    /// The response's `partial_success`, present only when spans were rejected.
    pub fn partial_success(self) -> Option<ExportTracePartialSuccess> {
        (self.rejected_spans > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: self.rejected_spans,
            error_message: self.error_message,
        })
    }
}

/// Why a request was not accepted. Each maps to one gRPC status and one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Permanently bad data: never retryable.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// Overload: the client should retry after the given delay.
    #[error("{message}")]
    Refused {
        message: String,
        retry_after: Duration,
    },
}

impl Ingest {
    /// Validates an encoded `ExportTraceServiceRequest`, admits it and hands its spans on.
    pub fn ingest(&self, transport: Transport, body: Bytes) -> Result<Accepted, IngestError> {
        let scanned = match scan_request(&body) {
            Ok(s) => s,
            Err(e) => {
                self.telemetry
                    .request(transport, RequestOutcome::Invalid, 0);
                return Err(IngestError::Invalid(format!(
                    "cannot decode ExportTraceServiceRequest: {e}"
                )));
            }
        };
        let spans = scanned.batch.span_count() as u64;
        let rejected = scanned.rejected;
        let accepted = Accepted {
            rejected_spans: rejected.count as i64,
            error_message: match &rejected.first_reason {
                Some(reason) if rejected.count > 1 => {
                    format!("{} spans rejected; first: {reason}", rejected.count)
                }
                Some(reason) => format!("1 span rejected: {reason}"),
                None => String::new(),
            },
        };
        if rejected.count > 0 {
            self.telemetry
                .spans_rejected(transport, rejected.count, &accepted.error_message);
        }
        if spans == 0 {
            self.telemetry
                .request(transport, RequestOutcome::Accepted, 0);
            return Ok(accepted);
        }
        let refused = |this: &Self, what: &str| {
            this.telemetry
                .request(transport, RequestOutcome::Refused, spans);
            IngestError::Refused {
                message: format!("{what}; retry later"),
                retry_after: this.limits.retry_after,
            }
        };
        let bytes = body.len() + scanned.batch.handle_bytes();
        let Some(lease) = self.memory.try_take(bytes) else {
            self.memory.note_full();
            return Err(refused(
                self,
                &format!(
                    "cujo's receivers are over their share of the memory budget ({} of admission.max_in_flight)",
                    self.memory.limit()
                ),
            ));
        };
        let admitted = Admitted {
            batch: scanned.batch,
            lease: Arc::new(lease),
        };
        // Count before handing on, so the next stage never sees spans that are not yet
        // counted as received (the accounting invariant holds at every instant).
        self.telemetry
            .request(transport, RequestOutcome::Accepted, spans);
        if self.sink.try_send(admitted).is_err() {
            self.telemetry.undo_accepted(transport, spans);
            return Err(refused(self, "cujo's pipeline is full"));
        }
        Ok(accepted)
    }
}
