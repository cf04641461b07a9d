//! The cujo binary's library half: what only the binary owns — configuration loading and
//! composition, wiring the stages, and their order at shutdown. The binary (`main.rs`) only
//! parses the command line, sets up logging and the runtime, and waits for a signal.
//!
//! The components it wires live in library crates: receivers, admission and the span
//! exporter in `cujo-otlp`, the assembler in `cujo-assembler`, the SLI engine in `cujo-sli`,
//! the SLI exporters and SLO surfaces (OTLP metrics push, webhooks, status page and APIs,
//! deploy gate, rules and dashboard generators) in `cujo-slo`. Nothing here renders a view,
//! sends a request or evaluates an SLO.
//!
//! # Layout
//! - [`config`]: the YAML configuration, `${env:NAME}` substitution, errors naming file and
//!   key; composes each component's own config type (defined in the component's crate) and
//!   checks what needs two sections at once.
//! - [`service`]: builds the stages from a config, runs them, shuts them down in order.
//! - [`assembly`]: runs the trace assembler as a stage (clock, budget, metrics).
//! - [`allocator`]: returns freed memory to the OS when the resident set passes the budget.
//! - [`demo`]: `cujo demo`, the quick start's checkout traffic sent over OTLP (a client of
//!   the receivers, like any application).
#![forbid(unsafe_code)]

pub mod allocator;
pub mod assembly;
pub mod config;
pub mod demo;
pub mod service;
