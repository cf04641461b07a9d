//! `wire`: the input is a protobuf request body, as the gRPC receiver (unframed) and the
//! HTTP receiver hand it to `Ingest::ingest`.
//!
//! Invariants: the receivers accept exactly what the scanner accepts, hand on every span it
//! kept and count the rest as rejected, and give back every byte they took once the spans
//! are dropped; an accepted batch encodes to the size it announces, that encoding is
//! accepted again with the same spans in the same order (and encodes to the same bytes);
//! and the span readers the assembler and the SLI engine use read each accepted span's ids
//! as the validator checked them.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use cujo_otlp::admission::{SpanSink, SpanSource};
use cujo_otlp::memory::{Component, MemoryBudget, Shares};
use cujo_otlp::receiver::{Ingest, IngestError, ReceiverLimits};
use cujo_otlp::telemetry::{PipelineTelemetry, Transport};
use cujo_wire::span::{
    any_value_str, read_span, service_name, span_attribute_value, span_attributes, span_head,
    span_trace_id,
};
use cujo_wire::{ScannedRequest, WireError, encode_request, encoded_request_len, scan_request};

/// The fuzz entry point.
pub fn run(data: &[u8]) {
    let _ = check_protobuf(Bytes::copy_from_slice(data));
}

/// The receivers' ingest path, kept across runs (it is what a long-lived receiver holds).
struct Receiver {
    ingest: Ingest,
    /// The next stage's end of the hand-off channel, drained after every request.
    next: RefCell<SpanSource>,
}

impl Receiver {
    fn new() -> Self {
        // Room for any input AFL++ makes (at most 1 MiB): "full" is not what this target tests.
        let budget = MemoryBudget::new(256 << 20, Shares::for_stages(false, false));
        let (sink, next) = SpanSink::channel(4);
        Self {
            ingest: Ingest {
                memory: budget.account(Component::Receivers),
                sink,
                telemetry: Arc::new(PipelineTelemetry::new()),
                limits: ReceiverLimits::default(),
                tenants: None,
                wal: None,
            },
            next: RefCell::new(next),
        }
    }
}

thread_local! {
    static RECEIVER: Receiver = Receiver::new();
}

/// Runs `body` through the receivers' ingest path and checks every invariant above; returns
/// what the scanner made of it.
pub(crate) fn check_protobuf(body: Bytes) -> Result<ScannedRequest, WireError> {
    let scanned = scan_request(&body);
    RECEIVER.with(|r| check_ingest(r, &body, scanned.as_ref()));
    if let Ok(s) = &scanned {
        check_accepted(s);
    }
    scanned
}

fn check_ingest(r: &Receiver, body: &Bytes, scanned: Result<&ScannedRequest, &WireError>) {
    let ingest = &r.ingest;
    let lease = ingest.memory.take(body.len());
    let result = crate::now(ingest.ingest(Transport::Http, body.clone(), lease, None));
    let mut handed = 0;
    while let Ok(admitted) = r.next.borrow_mut().try_recv() {
        assert!(
            admitted.lease.bytes() >= body.len(),
            "the lease pays for the body"
        );
        handed += admitted.span_count();
    }
    match (scanned, result) {
        (Ok(s), Ok(accepted)) => {
            assert_eq!(accepted.rejected_spans, s.rejected.count as i64);
            assert_eq!(handed, s.batch.span_count(), "every kept span is handed on");
        }
        (Err(_), Err(IngestError::Invalid(_))) => assert_eq!(handed, 0),
        (s, r) => panic!("scanner said {s:?}, receiver said {r:?}"),
    }
    assert_eq!(
        ingest.memory.used(),
        0,
        "every byte the request took is back"
    );
}

/// What must hold of a request the scanner accepted.
pub(crate) fn check_accepted(s: &ScannedRequest) {
    let mut out = Vec::new();
    encode_request(&s.batch, &mut out);
    assert_eq!(out.len(), encoded_request_len(&s.batch));
    let out = Bytes::from(out);
    let again = match scan_request(&out) {
        Ok(a) => a,
        Err(e) => panic!("an accepted batch re-encodes to a request the scanner refuses: {e}"),
    };
    assert_eq!(again.rejected.count, 0, "only valid spans were kept");
    let spans = |s: &ScannedRequest| -> Vec<Bytes> {
        s.batch
            .groups
            .iter()
            .flat_map(|g| g.spans.iter().cloned())
            .collect()
    };
    assert_eq!(spans(&again), spans(s), "the same spans, in the same order");
    let mut twice = Vec::new();
    encode_request(&again.batch, &mut twice);
    assert_eq!(twice, out, "encoding is a fixpoint after one pass");

    for group in &s.batch.groups {
        let _ = service_name(&group.resource.bytes);
        for span in &group.spans {
            check_span(span);
        }
    }
}

/// The readers of the later stages agree with the validator on an accepted span.
fn check_span(span: &[u8]) {
    let fields = read_span(span);
    assert_ne!(fields.trace_id, [0; 16], "an accepted span has a trace id");
    assert_ne!(fields.span_id, [0; 8], "an accepted span has a span id");
    assert_eq!(
        span_trace_id(span),
        fields.trace_id,
        "the shard router reads the trace id the assembler reads"
    );
    let head = span_head(span);
    assert_eq!(head.span_id, fields.span_id);
    assert_eq!(head.parent_span_id, fields.parent_span_id);
    assert_eq!(head.kind, fields.kind);
    assert_eq!(head.start_time_unix_nano, fields.start_time_unix_nano);
    for attribute in span_attributes(span) {
        let _ = any_value_str(attribute.value);
        let _ = span_attribute_value(span, attribute.key.as_bytes());
    }
}
