//! `cujo rules`: Prometheus recording rules and multiwindow, multi-burn-rate alert rules for
//! the configured CUJs, over cujo's exported counters.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RulesArgs {}

pub fn run(config: &crate::config::Config, args: &RulesArgs) -> ExitCode {
    let _ = (config, args);
    eprintln!("cujo: not built yet");
    ExitCode::FAILURE
}
