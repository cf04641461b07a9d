//! Benchmarks for cujo.
//!
//! Three kinds live here: criterion micro-benchmarks (`benches/`, e.g. `wire`: decode-modify-
//! encode with the generated types against cujo's wire-form scan); `cujo-load`, an end-to-end
//! load benchmark that drives a trace-forwarding OTLP process (cujo, or rotel as the peer) with
//! realistic traffic and checks that every acknowledged span came out the other side; and
//! `cujo-hostile`, which sends cujo input built to blow up its memory and watches its RSS.
//!
//! # Layout
//! - [`workload`]: realistic traces (CUJ root attributes, 2–4 services, children before their
//!   root, each trace spread over several requests), pre-encoded into a [`workload::RequestPool`]
//!   whose ids change cheaply per request.
//! - [`otlp`]: the harness's own minimal protobuf reader: span ids and their offsets, the
//!   span-identity checksum, `partial_success` of responses. Independent of `cujo-wire` on
//!   purpose.
//! - [`codec`]: a pass-through tonic codec, so neither clients nor downstream decode spans.
//! - [`downstream`]: the counting OTLP/gRPC server the target exports to.
//! - [`sink`]: that server as a process of its own (`cujo-sink`), its stdin/stdout control
//!   channel (counts and checksum), and the handle the load generators hold on it.
//! - [`target`]: starting the process under test from a generated config, readiness, SIGTERM,
//!   `/proc` CPU and memory samples, and reading its `/metrics`.
//! - [`load`]: the clients — closed loop (`saturate`) or open loop (`rate`), retries of
//!   refusals, latency histogram, and the flush that completes every trace begun.
//! - [`poll`]: GETs of cujo's admin endpoints at a fixed rate while the load runs (the
//!   readers' cost to ingestion).
//! - [`report`]: one run's report (human text, one JSON line) and the BENCHMARKS.md table.
//! - [`rss`]: VmRSS sampled over time on a thread, with a cap past which the process is killed.
//! - [`hostile`]: `cujo-hostile`'s scenarios, clients and report.
//!
//! Binaries (`src/bin/`): `cujo-load` (the load benchmark), `cujo-sink` (the downstream it
//! starts), `cujo-hostile` (memory under hostile input), `assembler-mem` (the assembler alone,
//! in process).
#![forbid(unsafe_code)]

pub mod codec;
pub mod downstream;
pub mod hostile;
pub mod load;
pub mod otlp;
pub mod poll;
pub mod report;
pub mod rss;
pub mod sink;
pub mod target;
pub mod workload;
