//! What cujo makes of its SLIs for people and other systems: the SLI exporters (OTLP metrics
//! push, burn-rate webhooks) and the SLO surfaces (status page, JSON and gRPC APIs, the
//! deploy gate, the Prometheus rules and Grafana dashboard generators), plus the `cujs:`
//! config section they and the SLI engine are defined by.
//!
//! Everything here reads the SLI engine (`cujo_sli`) from the outside: through
//! [`cujo_sli::processor::SliReader`] snapshots and jobs, or through its resolved CUJ
//! definitions. Nothing here holds the engine, touches the span path, or knows the binary's
//! config file: each component takes its own config type, which checks itself
//! (`validate(&self, key)` → [`cujo_config::KeyError`] naming the key), and the binary
//! composes them. Outbound traffic goes through `cujo_otlp::exporter::transport` (one TLS,
//! header and timeout setup) and retries with `cujo_otlp::exporter::retry::Backoff`.
//!
//! # Layout
//! - [`cujs`]: the `cujs:` section, resolved into [`cujo_sli::cuj::Cuj`] definitions.
//! - [`exporters`]: SLI data sent out — [`exporters::otlp_metrics`] (the push) and
//!   [`exporters::webhooks`] (burn-rate alert transitions). Each is a module tree with the
//!   same files: `config.rs` (its config type and `validate`), `telemetry.rs` (its
//!   counters), `mod.rs` (start, run, stop).
//! - [`surfaces`]: what answers on the admin listener ([`surfaces::status`]: page, JSON API,
//!   gRPC `cujo.v1.SloService`) and its client ([`surfaces::gate`], `cujo status`).
//! - [`generators`]: files written from the CUJ definitions alone ([`generators::rules`],
//!   [`generators::dashboard`]).
//!
//! # Telemetry
//! Each exporter counts and logs what happens to what it sends in one struct of its own
//! (`telemetry.rs`): a method per event that bumps the counter and writes the log line
//! together, and one `render(&self, out: &mut Exposition)` that writes its families for
//! `/metrics` (see [`exporters::ExporterTelemetry`]). Family names and labels are part of
//! the contract (dashboards and tests read them).
#![forbid(unsafe_code)]

pub mod cujs;
pub mod exporters;
pub mod generators;
pub mod surfaces;
