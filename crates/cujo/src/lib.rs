//! The cujo binary's library half: configuration and wiring. The binary (`main.rs`) only
//! parses the command line, sets up logging and the runtime, and waits for a signal.
//!
//! # Layout
//! - [`config`]: the YAML configuration, `${env:NAME}` substitution, errors naming file and key.
//! - [`service`]: builds the stages from a config, runs them, shuts them down in order.
#![forbid(unsafe_code)]

pub mod config;
pub mod service;
