//! `cujo-sink`: the counting OTLP/gRPC downstream as a process of its own.
//!
//! Prints `listening ADDR` on stdout, then answers `counts` lines on stdin with a JSON
//! snapshot until `quit` or EOF (see `cujo_bench::sink`). `cujo-load` and `cujo-hostile`
//! start it; by hand:
//!
//! ```text
//! $ cujo-sink
//! listening 127.0.0.1:40211
//! counts
//! {"spans":0,"requests":0,"bytes":0,"checksum":0,"malformed":0,"refused":0}
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;

use cujo_bench::downstream::Downstream;
use cujo_bench::sink::{LISTENING, serve_control};

#[derive(Debug, Parser)]
#[command(about = "Counting OTLP/gRPC trace downstream; control lines on stdin/stdout")]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Answer every N-th request UNAVAILABLE without counting it (0: never); for testing
    /// the clients' retries.
    #[arg(long, default_value_t = 0)]
    refuse_every: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cujo-sink: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let downstream = Downstream::start_at(args.listen, args.refuse_every)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    {
        use std::io::Write as _;
        writeln!(out, "{LISTENING}{}", downstream.addr)?;
        out.flush()?;
    }
    serve_control(&downstream.counts, std::io::stdin().lock(), out)
}
