//! OTLP in and out: the trace receivers (gRPC and HTTP), admission, the OTLP trace exporter,
//! and cujo's own metrics endpoint.
//!
//! Spans cross this crate in wire form ([`cujo_wire::SpanBatch`]); nothing here decodes a
//! span into owned structs except the OTLP/JSON receiver path. This crate knows nothing of
//! trace assembly or SLIs: it hands accepted spans to a [`admission::SpanSink`] and takes
//! spans to export from a [`admission::SpanSource`], whoever sits between.
//!
//! Each component here owns its config section in a `config.rs` beside it
//! ([`receiver::config`], [`admission::config`], [`exporter::config`], [`admin::config`]):
//! the type as written in YAML (in `cujo_config` values), its `validate(&self, key)`, and
//! methods resolving it into the settings the component takes. Nothing here reads the
//! config file; the binary loads it and composes the sections.
//!
//! # Layout
//! - [`auth`]: bearer tokens (`auth:` of the receivers and the admin listener), checked on
//!   a request's headers before its body is read; token files re-read as they change.
//! - [`tenants`]: who a request comes from (its token, or its pass-through headers), decided
//!   before its body is read; `tenants:` and the `cujo_tenant_*` metrics.
//! - [`memory`]: the memory budget (`admission.max_in_flight`), one account per component
//!   with its share, leases that give bytes back when dropped, and its `/metrics` families.
//! - [`admission`]: the bounded hand-off channel between stages (one channel per assembler
//!   shard; batches split by trace id, handed on all or nothing) with each batch's lease;
//!   `admission:` (the budget and its shares, [`admission::config`]).
//! - `receiver::body` (inside [`receiver`]): request bodies paid for from their first byte.
//! - [`receiver`]: gRPC and HTTP receivers over one [`receiver::Ingest`] path; bounded
//!   decompression; `receivers:` ([`receiver::config`]).
//! - [`exporter`]: batching, bounded queue, retrying senders over gRPC or HTTP/protobuf (the
//!   transport also carries the OTLP metrics push); `exporters.otlp` ([`exporter::config`]).
//! - [`server`]: the connection loop every listener uses: connections paid for from the
//!   receivers' share, HTTP/2 windows and streams bounded, idle and slow peers closed,
//!   graceful drain.
//! - [`tls`]: TLS and mTLS on the listeners (`tls:` of the receivers and the admin
//!   listener): the rustls config each handshake takes, reloaded as its files change, and
//!   the `cujo_tls_*` metrics.
//! - [`admin`]: `/metrics` (sources written in place, and snapshot sources fetched for each
//!   scrape from components on other threads), `/healthz`, `/readyz`;
//!   `exporters.prometheus` ([`admin::config`]).
//! - [`telemetry`]: counters of the receive → export path, in one place.
//! - [`prom`]: Prometheus text and OpenMetrics writer (content negotiation, exemplars).
//! - [`gzip`]: gzip answers for polled bodies: `Accept-Encoding`, bodies compressed once per
//!   snapshot and spliced into each answer.
//! - [`rpc`]: gRPC status, `RetryInfo`, framing.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod auth;
pub mod exporter;
pub mod gzip;
pub mod memory;
pub mod prom;
pub mod receiver;
pub mod rpc;
#[cfg(test)]
mod scratch;
pub mod server;
pub mod telemetry;
pub mod tenants;
pub mod tls;
