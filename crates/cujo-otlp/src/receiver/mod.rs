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
pub mod durable;
pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use cujo_wire::{Tenant, scan_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

use crate::admission::{Admitted, SpanSink};
use crate::auth::Refusal;
use crate::memory::{Account, Lease};
use crate::server::ConnectionMemory;
use crate::telemetry::{PipelineTelemetry, RequestOutcome, Transport};
use crate::tenants::{Tenants, Unidentified};

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
    /// Who may send and as which tenant (`receivers.otlp.auth`, `tenants:`, pass-through
    /// headers), decided on a request's headers before its body is read; `None` = anyone
    /// who can connect, as the default tenant.
    pub tenants: Option<Arc<Tenants>>,
    /// The write-ahead log (`wal:`): a request is on disk before it is acknowledged.
    pub wal: Option<Arc<cujo_wal::Wal>>,
}

/// Why a request was not let in on its headers.
pub(crate) enum NotAdmitted {
    /// Missing or wrong credentials: not retryable.
    Unauthenticated(Refusal),
    /// Its tenant is over its share, or it would be a pass-through caller too many
    /// (retryable), or a pass-through value is too long (not retryable); counted.
    Refused(IngestError),
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

    /// Checks the request's credentials and finds its tenant, before anything of its body
    /// is read. A request refused for its credentials is counted
    /// (`outcome="unauthenticated"`); one whose tenant is already over its share is refused
    /// retryably (`outcome="refused"`, and the tenant's own counter). Its spans never become
    /// received ones.
    pub(crate) fn identify(
        &self,
        transport: Transport,
        headers: &::http::HeaderMap,
    ) -> Result<Option<Arc<Tenant>>, NotAdmitted> {
        let Some(tenants) = &self.tenants else {
            return Ok(None);
        };
        let tenant = tenants.identify(headers).map_err(|e| match e {
            Unidentified::Refused(refusal) => {
                self.telemetry.unauthenticated(transport, refusal.message());
                NotAdmitted::Unauthenticated(refusal)
            }
            Unidentified::PassValueTooLong(name) => {
                self.telemetry
                    .request(transport, RequestOutcome::Invalid, 0);
                NotAdmitted::Refused(IngestError::Invalid(format!(
                    "header {name} is longer than {} bytes",
                    crate::tenants::MAX_PASS_VALUE_BYTES
                )))
            }
            Unidentified::TooManyCallers => NotAdmitted::Refused(self.refuse(
                transport,
                0,
                "cujo knows as many pass-through callers as exporters.otlp.pass_max_tenants allows, all with spans in flight",
            )),
        })?;
        if let Some(t) = &tenant
            && !t.has_room(1)
        {
            return Err(NotAdmitted::Refused(self.refuse_tenant(transport, t, 0)));
        }
        Ok(tenant)
    }

    /// Counts a request refused because its tenant is over its share, and the answer.
    fn refuse_tenant(&self, transport: Transport, tenant: &Tenant, spans: u64) -> IngestError {
        tenant.counts.refused_requests.fetch_add(1, Relaxed);
        self.refuse(
            transport,
            spans,
            &format!(
                "tenant {:?} is over its share of the memory budget ({} bytes of tenants[].max_in_flight)",
                tenant.name(),
                tenant.limit().unwrap_or_default()
            ),
        )
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
    pub async fn ingest(
        &self,
        transport: Transport,
        body: Bytes,
        mut lease: Lease,
        tenant: Option<Arc<Tenant>>,
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
        let mut batch = scanned.batch;
        // A tenant's spans count against its share from here until they are exported or
        // dropped; a request alone is let in whatever its size, so none is refused forever.
        let charged = match &tenant {
            Some(t) => {
                let bytes = batch.span_bytes();
                if t.in_flight() > 0 && !t.has_room(bytes as u64) {
                    return Err(self.refuse_tenant(transport, t, spans));
                }
                batch.set_tenant(t);
                t.take(bytes);
                Some((t, bytes))
            }
            None => None,
        };
        // With the write-ahead log, the spans are on disk before anything acknowledges them,
        // and pinned to their segment until they are exported or dropped.
        match self.log(tenant.as_ref(), &body).await {
            None => {}
            Some(Ok(pin)) => batch.set_pin(&pin),
            Some(Err(e)) => {
                if let Some((t, bytes)) = charged {
                    t.give_back(bytes);
                }
                if !e.is_retryable() {
                    self.telemetry
                        .request(transport, RequestOutcome::TooLarge, spans);
                    return Err(IngestError::TooLarge(format!("write-ahead log: {e}")));
                }
                return Err(self.refuse(transport, spans, &format!("write-ahead log: {e}")));
            }
        }
        let admitted = Admitted {
            batch,
            lease: Arc::new(lease),
        };
        // Count before handing on, so the next stage never sees spans that are not yet
        // counted as received (the accounting invariant holds at every instant).
        self.telemetry
            .request(transport, RequestOutcome::Accepted, spans);
        if let Some((t, _)) = charged {
            t.counts.accepted_spans.fetch_add(spans, Relaxed);
        }
        if self.sink.try_send(admitted).is_err() {
            self.telemetry.undo_accepted(transport, spans);
            if let Some((t, bytes)) = charged {
                t.counts.accepted_spans.fetch_sub(spans, Relaxed);
                t.give_back(bytes);
            }
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
            tenants: None,
            wal: None,
        };
        (ingest, source)
    }
}
