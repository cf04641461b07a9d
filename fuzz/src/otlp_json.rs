//! `otlp_json`: the input is an OTLP/JSON body, as `POST /v1/traces` with
//! `application/json` hands it to the receiver's conversion.
//!
//! Invariants: what converts is protobuf that the scanner accepts unless its values nest
//! deeper than the scanner allows, and then all [`crate::wire`] invariants hold of it; every
//! span of the request is either kept or counted as rejected.

use bytes::Bytes;
use cujo_otlp::receiver::http::json_to_protobuf;
use cujo_wire::WireError;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// The fuzz entry point.
pub fn run(data: &[u8]) {
    let Ok(protobuf) = json_to_protobuf(data) else {
        return;
    };
    let spans = span_count(&protobuf);
    match crate::wire::check_protobuf(protobuf) {
        Ok(s) => {
            if let Some(n) = spans {
                assert_eq!(
                    n,
                    s.batch.span_count() + s.rejected.count as usize,
                    "each span is kept or counted as rejected"
                );
            }
        }
        // JSON nests values as deep as serde_json allows; the scanner stops sooner.
        Err(WireError::TooDeep(_)) => {}
        Err(e) => panic!("converted OTLP/JSON is protobuf the scanner refuses: {e}"),
    }
}

/// The request's spans, counted by the generated types (`None` past prost's own nesting
/// limit, which is not the receiver's to enforce).
fn span_count(protobuf: &Bytes) -> Option<usize> {
    let request = ExportTraceServiceRequest::decode(&protobuf[..]).ok()?;
    Some(
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum(),
    )
}
