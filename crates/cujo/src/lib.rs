//! The cujo binary's library half: configuration and wiring. The binary (`main.rs`) only
//! parses the command line, sets up logging and the runtime, and waits for a signal.
//!
//! # Layout
//! - [`config`]: the YAML configuration, `${env:NAME}` substitution, errors naming file and key.
//! - [`cuj_config`]: the `cujs:` section, resolved into SLI definitions.
//! - [`service`]: builds the stages from a config, runs them, shuts them down in order.
//! - [`assembly`]: runs the trace assembler as a stage (clock, budget, metrics).
#![forbid(unsafe_code)]

pub mod assembly;
pub mod config;
pub mod cuj_config;
pub mod service;
