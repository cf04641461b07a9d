//! OTLP trace receivers. Both transports read and decode the body, then hand the protobuf
//! bytes to [`Ingest`], which validates, admits and passes spans on — so both answer the
//! same way to the same input.
//!
//! Memory: a request is paid for from the receivers' account ([`Ingest::memory`]) from its
//! first byte, in one [`Lease`]: the body's buffer as frames arrive, the inflated body as it
//! inflates (the compressed one is given back), then the batch's handles; the same lease
//! travels on with the accepted spans ([`Admitted::lease`]). When the account has no room
//! the request is refused with the OTLP spec's retryable answer; past the size limit, with
//! the non-retryable "too large". With `receivers.otlp.auth`, a request is checked on its
//! headers first ([`Ingest::authenticate`]): one without a valid bearer token is refused
//! (HTTP 401, gRPC `UNAUTHENTICATED`) before its body takes a byte. Connections, streams and idle peers are the server's
//! ([`crate::server`]).
//!
//! - [`config`]: `receivers:` — where each receiver listens, its limits and their
//!   `validate`, resolved into [`ReceiverLimits`] and [`crate::server::ServerLimits`].
//! - [`grpc`]: `opentelemetry.proto.collector.trace.v1.TraceService/Export` over HTTP/2.
//! - [`http`]: `POST /v1/traces`, protobuf or JSON.
//! - [`body`]: bodies read into one buffer, counted as they arrive.
//! - [`decode`]: decompression, counted as it inflates and bounded by the decompressed size.

pub(crate) mod body;
pub mod config;
pub mod decode;
pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cujo_wire::scan_request;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

use crate::admission::{Admitted, SpanSink};
use crate::auth::{BearerAuth, Refusal};
use crate::memory::{Account, Lease};
use crate::server::ConnectionMemory;
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
    /// What open connections hold in the receivers' account: a request may grow past the
    /// share when nothing else is held beside them (one request is never refused forever).
    pub connections: Option<ConnectionMemory>,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            retry_after: Duration::from_secs(1),
            connections: None,
        }
    }
}

/// What the receivers share: their memory account, the next stage and the counters.
#[derive(Clone)]
pub struct Ingest {
    /// The receivers' share of the memory budget: request bodies as they arrive and
    /// inflate, accepted requests waiting for the next stage, open connections.
    pub memory: Account,
    pub sink: SpanSink,
    pub telemetry: Arc<PipelineTelemetry>,
    pub limits: ReceiverLimits,
    /// Who may send (`receivers.otlp.auth`), checked on a request's headers before its body
    /// is read; `None` = anyone who can connect.
    pub auth: Option<BearerAuth>,
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
    /// Takes `more` bytes into `lease` if the receivers' share has room for them, or if
    /// nothing but this request and open connections' fixed costs is held.
    pub(crate) fn try_grow(&self, lease: &mut Lease, more: usize) -> bool {
        lease.try_grow(more)
            || self
                .limits
                .connections
                .as_ref()
                .is_some_and(|c| c.grow_beside_connections(lease, more))
    }

    /// Checks the request's credentials, before anything of its body is read: a refused
    /// request is counted (`outcome="unauthenticated"`) and its spans never become received
    /// ones.
    pub(crate) fn authenticate(
        &self,
        transport: Transport,
        headers: &::http::HeaderMap,
    ) -> Result<(), Refusal> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        auth.check(headers)
            .inspect_err(|refusal| self.telemetry.unauthenticated(transport, refusal.message()))
    }

    /// Counts a request refused because the receivers' share is full, and the answer.
    pub(crate) fn refuse_full(&self, transport: Transport, spans: u64) -> IngestError {
        self.memory.note_full();
        self.refuse(
            transport,
            spans,
            &format!(
                "cujo's receivers are over their share of the memory budget ({} bytes of admission.max_in_flight)",
                self.memory.limit()
            ),
        )
    }

    fn refuse(&self, transport: Transport, spans: u64, what: &str) -> IngestError {
        self.telemetry
            .request(transport, RequestOutcome::Refused, spans);
        IngestError::Refused {
            message: format!("{what}; retry later"),
            retry_after: self.limits.retry_after,
        }
    }

    /// Validates an encoded `ExportTraceServiceRequest`, admits it and hands its spans on.
    /// `lease` already pays for `body`; it grows by the batch's handles and goes on with
    /// the spans.
    pub fn ingest(
        &self,
        transport: Transport,
        body: Bytes,
        mut lease: Lease,
    ) -> Result<Accepted, IngestError> {
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
        if !self.try_grow(&mut lease, scanned.batch.handle_bytes()) {
            return Err(self.refuse_full(transport, spans));
        }
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
            return Err(self.refuse(transport, spans, "cujo's pipeline is full"));
        }
        Ok(accepted)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::{Component, MemoryBudget, Shares};

    /// An ingest path whose receivers get a quarter of `budget` bytes, and the channel it
    /// hands on to.
    pub(crate) fn ingest_with_budget(budget: usize) -> (Ingest, crate::admission::SpanSource) {
        let (sink, source) = SpanSink::channel(16);
        let ingest = Ingest {
            memory: MemoryBudget::new(budget, Shares::for_stages(false, false))
                .account(Component::Receivers),
            sink,
            telemetry: Arc::new(PipelineTelemetry::new()),
            limits: ReceiverLimits::default(),
            auth: None,
        };
        (ingest, source)
    }
}
