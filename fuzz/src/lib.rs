//! Fuzz targets for cujo's input surfaces: each is a plain function of a byte slice that drives
//! the crate's real entry point and asserts what must hold of its answer. AFL++ runs them
//! (`src/bin/*`, persistent mode, built with `cargo afl build --features afl`); the tests in
//! `tests/corpus.rs` replay the saved corpus through the same functions and run a short,
//! deterministic mutation smoke on stable Rust without AFL++. See `docs/fuzzing.md`.
//!
//! A target panics when an invariant breaks; returning is success.
//!
//! # Layout
//! - [`wire`]: an encoded `ExportTraceServiceRequest` through the receivers' ingest path
//!   (`cujo_wire::scan_request` inside `Ingest::ingest`), then re-encoded, re-scanned and read
//!   the way the later stages read spans.
//! - [`otlp_json`]: an OTLP/JSON body through the HTTP receiver's conversion, then on as
//!   [`wire`] checks a protobuf body.
//! - [`body`]: gzip and zstd request bodies inflated with the receivers' size limit and
//!   memory accounting (the first byte picks coding, limit and room).
//! - [`config`]: YAML through `cujo::config::Config::parse` with a fixed `${env:}` resolver,
//!   then what the binary builds from a config.
//! - [`state`]: an SLO state file restored into an engine built from a small fixed config,
//!   then saved and restored again.
//! - [`mutate`]: the deterministic mutator of the CI smoke.
#![forbid(unsafe_code)]

pub mod body;
pub mod config;
pub mod mutate;
pub mod otlp_json;
pub mod state;
pub mod wire;

/// A target: panics on a finding.
pub type Target = fn(&[u8]);

/// Every target by name: the name is its binary's and its corpus folder's (`corpus/<name>/`).
pub const TARGETS: [(&str, Target); 5] = [
    ("wire", wire::run),
    ("otlp_json", otlp_json::run),
    ("body", body::run),
    ("config", config::run),
    ("state", state::run),
];

/// The output of `f`, which must not wait: the receivers' ingest path without a
/// write-ahead log never does, and the harnesses run without a runtime.
pub fn now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("ingest without a write-ahead log waited"),
    }
}
