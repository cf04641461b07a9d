//! OTLP trace data in protobuf wire form.
//!
//! cujo never decodes a span into owned structs on the hot path. A request is walked once:
//! every field is checked the way a protobuf decoder would check it (wire types, lengths,
//! UTF-8 of strings, nesting depth), each span's bytes are kept as a slice of the request,
//! and the resource and scope around them are kept once per request and shared. On the way
//! out, spans are written back into a valid `ExportTraceServiceRequest` from those slices.
//!
//! This crate is shared by every stage and depends on none of them.
//!
//! # Layout
//! - [`proto`]: protobuf primitives — varints, tags, a field reader over a byte slice.
//! - [`validate`]: the OTLP trace schema as a table, and the depth-bounded walk that checks a
//!   message against it without allocating.
//! - [`batch`]: [`SpanBatch`] and [`ScopeGroup`], the unit passed between stages, and
//!   [`scan_request`], which turns request bytes into a batch, rejecting spans with invalid ids
//!   one by one.
//! - [`write`]: [`encode_request`], which writes a batch as an `ExportTraceServiceRequest`.
//! - [`span`]: reading one span's ids, times, links and attributes; appending attributes.
//! - [`tenant`]: [`Tenant`], who sent a span: the key its traces are held under, the
//!   headers it is sent with, its share of the memory budget.
//! - [`alloc`]: what an allocation of n bytes really costs, for every component's memory
//!   accounting.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod batch;
pub mod proto;
pub mod span;
pub mod tenant;
pub mod validate;
pub mod write;

pub use batch::{
    Pin, RejectedSpans, ResourceHeader, ScannedRequest, ScopeGroup, SpanBatch, scan_request,
};
pub use tenant::Tenant;
pub use write::{encode_request, encoded_request_len};

/// Why a request could not be read. Each variant names the place in the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated message: {0}")]
    Truncated(&'static str),
    #[error("invalid varint in {0}")]
    BadVarint(&'static str),
    #[error("{message}: field {field} has wire type {found}, expected {expected}")]
    WireType {
        message: &'static str,
        field: u32,
        found: u8,
        expected: u8,
    },
    #[error("{message}: unsupported wire type {wire_type} (groups are not used by OTLP)")]
    UnsupportedWireType {
        message: &'static str,
        wire_type: u8,
    },
    #[error("{message}: field {field} is not valid UTF-8")]
    InvalidUtf8 { message: &'static str, field: u32 },
    #[error("message nesting deeper than {0} levels")]
    TooDeep(usize),
    #[error("{0}: field number 0 is not allowed")]
    FieldZero(&'static str),
}
