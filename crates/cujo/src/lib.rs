//! The cujo binary's library half: configuration and wiring. The binary (`main.rs`) only
//! parses the command line, sets up logging and the runtime, and waits for a signal.
//!
//! # Layout
//! - [`config`]: the YAML configuration, `${env:NAME}` substitution, errors naming file and key.
//! - [`cuj_config`]: the `cujs:` section, resolved into SLI definitions.
//! - [`service`]: builds the stages from a config, runs them, shuts them down in order.
//! - [`metrics_push`]: `exporters.otlp_metrics`, the CUJ SLIs pushed as OTLP metrics.
//! - [`assembly`]: runs the trace assembler as a stage (clock, budget, metrics).
//! - [`allocator`]: returns freed memory to the OS when the resident set passes the budget.
//! - [`gate`]: `cujo status`, the deploy gate over a running cujo's SLO status.
//! - [`rules`], [`dashboard`]: Prometheus rules and a Grafana dashboard for the configured CUJs.
//! - [`notify`]: burn-rate alert transitions posted to webhooks (Slack or generic JSON).
//! - [`status`]: the SLO status views on the admin listener (page, JSON API, gRPC).
#![forbid(unsafe_code)]

pub mod allocator;
pub mod assembly;
pub mod config;
pub mod cuj_config;
pub mod dashboard;
pub mod gate;
pub mod metrics_push;
pub mod notify;
pub mod rules;
pub mod service;
pub mod status;
