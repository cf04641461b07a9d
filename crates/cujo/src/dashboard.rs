//! `cujo dashboard`: a Grafana dashboard (JSON) for the configured CUJs.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {}

pub fn run(config: &crate::config::Config, args: &DashboardArgs) -> ExitCode {
    let _ = (config, args);
    eprintln!("cujo: not built yet");
    ExitCode::FAILURE
}
