//! `cujo status`: the deploy gate. Asks a running cujo for its SLO status, prints a table and
//! exits non-zero when an error budget is below the bound.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {}

pub fn run(args: &StatusArgs) -> ExitCode {
    let _ = args;
    eprintln!("cujo: not built yet");
    ExitCode::FAILURE
}
