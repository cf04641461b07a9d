//! `cujo-load`: end-to-end OTLP load benchmark for a trace-forwarding process.
//!
//! Starts a counting downstream (`cujo-sink`, a process of its own, unless `--downstream
//! in-process`), starts the target (cujo or rotel) pointed at it, drives it with pre-encoded
//! realistic traces from N gRPC clients, then checks that the downstream received exactly the
//! spans that were acknowledged. See `cujo_bench` for the parts.
//!
//! ```text
//! cujo-load --target rotel --mode saturate --duration 20s
//! cujo-load --target cujo --bin target/release/cujo --mode rate --rate 100000
//! cujo-load --target cujo --mode fraction --rate-fraction 0.8   # saturate, then 80% of it
//! cujo-load --target cujo --cujo-yaml "$SLI_YAML" --poll-rate 50   # admin API read meanwhile
//! cujo-load --report results.jsonl      # markdown table from earlier runs
//! ```

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;

use cujo_bench::load::{self, LoadConfig, Mode, Watched};
use cujo_bench::poll::{ENDPOINTS, PollConfig};
use cujo_bench::report::{PollReport, RunReport, markdown_table};
use cujo_bench::sink::{DownstreamHandle, DownstreamPlace, default_sink_bin};
use cujo_bench::target::{
    DEFAULT_ROTEL_BIN, ProcSample, Target, TargetKind, clock_ticks_per_second,
};
use cujo_bench::workload::{RequestPool, WorkloadConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    /// Closed loop: as fast as the target answers.
    Saturate,
    /// Open loop at `--rate` spans/s.
    Rate,
    /// Measure saturation (or take `--saturation`), then a fresh target at `--rate-fraction`
    /// of it in rate mode: are there refusals below saturation?
    Fraction,
}

#[derive(Debug, Parser)]
#[command(about = "End-to-end OTLP/gRPC load benchmark: cujo vs rotel, with exact span accounting")]
struct Args {
    /// Process under test (`direct` sends straight to the downstream: the harness's ceiling).
    #[arg(long, value_enum, default_value = "rotel")]
    target: TargetKind,
    /// Target binary. Default: target/release/cujo for cujo, the pip-installed rotel-agent for rotel.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// YAML appended to cujo's generated config, e.g. an `assembler:`/`propagate:` section.
    #[arg(long)]
    cujo_yaml: Option<String>,
    /// Name of this target in the report [default: the target kind].
    #[arg(long)]
    label: Option<String>,
    /// Extra argument for the target (repeatable).
    #[arg(long = "target-arg", allow_hyphen_values = true)]
    target_args: Vec<String>,
    #[arg(long, value_enum, default_value = "saturate")]
    mode: ModeArg,
    /// Spans per second offered in `rate` mode (all clients together).
    #[arg(long, default_value_t = 100_000.0)]
    rate: f64,
    /// `fraction` mode: the share of saturation offered.
    #[arg(long, default_value_t = 0.8)]
    rate_fraction: f64,
    /// `fraction` mode: the saturation throughput (spans/s) to take a fraction of, e.g. from a
    /// saturate run of the same round, instead of measuring it first.
    #[arg(long)]
    saturation: Option<f64>,
    /// Round number, recorded in the report (runs of one round are compared round by round).
    #[arg(long)]
    round: Option<u32>,
    /// Where the counting downstream runs.
    #[arg(long, value_enum, default_value = "process")]
    downstream: DownstreamPlace,
    /// The `cujo-sink` binary [default: beside this binary].
    #[arg(long)]
    sink_bin: Option<PathBuf>,
    /// Measured window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    duration: Duration,
    /// Load before the window, not measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    warmup: Duration,
    /// gRPC connections.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests in flight per connection [default: 1 for saturate, 4 for rate].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Spans per request, `MIN-MAX` or `N`.
    #[arg(long, default_value = "100-500", value_parser = parse_range)]
    request_spans: (usize, usize),
    /// Bytes of an extra string attribute on every span (0: none). About 180 makes the spans
    /// as large as propagation's enriched ones, to price those bytes on their own.
    #[arg(long, default_value_t = 0)]
    padding_bytes: usize,
    /// Spans in the pool of distinct pre-encoded requests.
    #[arg(long, default_value_t = 200_000)]
    pool_spans: usize,
    #[arg(long, default_value_t = 0x00c0_ffee)]
    seed: u64,
    /// Tokio worker threads for the clients (an in-process downstream has its own thread).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    ready_timeout: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    request_timeout: Duration,
    /// How long one request is retried while refused.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    retry_timeout: Duration,
    /// How long to wait after the last acknowledgement for the downstream to catch up.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    drain_timeout: Duration,
    /// How long the target gets to exit after SIGTERM before SIGKILL.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    stop_timeout: Duration,
    /// GETs per second of each of cujo's admin `/api/v1/slos` and `/metrics` while the load
    /// runs (warm-up and window; polls counted in the window), on threads of this process
    /// outside the clients' runtime, over keep-alive HTTP/1.1. 0: no polling.
    #[arg(long, default_value_t = 0.0)]
    poll_rate: f64,
    /// Keep-alive connections per polled endpoint, each its own thread taking every Nth slot
    /// (with one, a poll slower than 1/rate delays the next and the rate is not reached).
    #[arg(long, default_value_t = 1)]
    poll_connections: usize,
    /// Poll without `Accept-Encoding: gzip` (scrapers and browsers ask for gzip; this
    /// measures the plain bodies instead).
    #[arg(long)]
    poll_plain: bool,
    /// Timeout of one poll (connect, and each read or write).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    poll_timeout: Duration,
    /// The label of the same run without polling, recorded so the table can give the ratio
    /// polled/unpolled round by round.
    #[arg(long)]
    unpolled_label: Option<String>,
    /// Write cujo's `/metrics` (scraped after the run, before SIGTERM) to this file.
    #[arg(long)]
    metrics_out: Option<PathBuf>,
    /// Append the JSON line to this file too.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Keep the work dir (config, target log) even when the run succeeds.
    #[arg(long)]
    keep_dir: bool,
    /// Print the BENCHMARKS.md table from a file of JSON lines and exit.
    #[arg(long, value_name = "JSONL")]
    report: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"));
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (parse(lo)?, parse(hi)?),
        None => (parse(s)?, parse(s)?),
    };
    if lo == 0 || lo > hi {
        return Err(format!("expected 1 <= MIN <= MAX, got {s}"));
    }
    Ok((lo, hi))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        // The run finished but the accounting check failed.
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("cujo-load: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    if let Some(path) = &args.report {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let runs: Vec<RunReport> = text
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", path.display()))?;
        print!("{}", markdown_table(&runs));
        return Ok(true);
    }

    let generated = Instant::now();
    let pool = Arc::new(RequestPool::generate(&WorkloadConfig {
        min_request_spans: args.request_spans.0,
        max_request_spans: args.request_spans.1,
        pool_spans: args.pool_spans,
        seed: args.seed,
        padding_bytes: args.padding_bytes,
    })?);
    let st = &pool.stats;
    println!(
        "pool: {} requests, {} spans in {} traces ({:.1} spans/trace over {:.1} requests each), {:.1} spans/request, {:.1} request bytes/span, {:.1} B/span message; built in {:.2} s",
        st.requests,
        st.spans,
        st.traces,
        st.mean_spans_per_trace,
        st.mean_requests_per_trace,
        st.mean_spans_per_request,
        st.request_bytes_per_span,
        st.span_message_bytes,
        generated.elapsed().as_secs_f64()
    );

    anyhow::ensure!(
        args.poll_rate >= 0.0 && args.poll_rate.is_finite(),
        "--poll-rate must be 0 or positive"
    );
    let report = match args.mode {
        ModeArg::Saturate => one_run(&args, &pool, Mode::Saturate)?,
        ModeArg::Rate => {
            anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
            one_run(
                &args,
                &pool,
                Mode::Rate {
                    spans_per_s: args.rate,
                },
            )?
        }
        ModeArg::Fraction => {
            anyhow::ensure!(
                args.rate_fraction > 0.0 && args.rate_fraction <= 1.0,
                "--rate-fraction must be in (0, 1], got {}",
                args.rate_fraction
            );
            let saturation = match args.saturation {
                Some(s) => {
                    anyhow::ensure!(s > 0.0, "--saturation must be positive");
                    println!("saturation {s:.0} spans/s (given)");
                    s
                }
                None => {
                    println!("-- measuring saturation first --");
                    let sat = one_run(&args, &pool, Mode::Saturate)?;
                    print!("{}", sat.human());
                    anyhow::ensure!(
                        sat.counts_match && sat.checksum_match != Some(false),
                        "the saturation run did not account for every span"
                    );
                    sat.spans_per_s
                }
            };
            let spans_per_s = saturation * args.rate_fraction;
            println!(
                "-- a fresh target at {:.0}% of saturation: {spans_per_s:.0} spans/s --",
                args.rate_fraction * 100.0
            );
            let mut r = one_run(&args, &pool, Mode::Rate { spans_per_s })?;
            r.mode = "fraction".into();
            r.rate_fraction = Some(args.rate_fraction);
            r.saturation_spans_per_s = Some(saturation);
            r
        }
    };

    print!("{}", report.human());
    let line = serde_json::to_string(&report)?;
    println!("{line}");
    if let Some(path) = &args.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{line}")?;
    }
    Ok(report.counts_match && report.checksum_match != Some(false))
}

/// One target process, one downstream, one load phase: start them, drive, drain, check.
fn one_run(args: &Args, pool: &Arc<RequestPool>, mode: Mode) -> anyhow::Result<RunReport> {
    let concurrency = args.concurrency.unwrap_or(match mode {
        Mode::Saturate => 1,
        Mode::Rate { .. } => 4,
    });
    let bin = args.bin.clone().unwrap_or_else(|| match args.target {
        TargetKind::Rotel => PathBuf::from(DEFAULT_ROTEL_BIN),
        _ => PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("release/cujo"),
    });
    let st = &pool.stats;

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("cujo-load-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    // Dropped in reverse order on any early return: the target first, then the sink (both
    // are killed if still running).
    let sink_bin = args.sink_bin.clone().unwrap_or_else(default_sink_bin);
    let mut downstream = DownstreamHandle::start(args.downstream, &sink_bin)?;
    let mut target = Target::start(
        args.target,
        &bin,
        &args.target_args,
        args.cujo_yaml.as_deref().unwrap_or(""),
        downstream.addr(),
        &dir,
    )?;
    println!(
        "downstream: {} ({})",
        downstream.addr(),
        match downstream.pid() {
            Some(pid) => format!("cujo-sink, pid {pid}"),
            None => "in process".into(),
        }
    );
    println!("target: {}", target.command);
    let ready_in = target.wait_ready(args.ready_timeout)?;
    println!(
        "target ready on {} after {:.0} ms",
        target.grpc_addr,
        ready_in.as_secs_f64() * 1e3
    );

    let cfg = LoadConfig {
        mode,
        clients: args.clients,
        concurrency,
        warmup: args.warmup,
        duration: args.duration,
        request_timeout: args.request_timeout,
        retry_timeout: args.retry_timeout,
        poll: None,
    };
    let cfg = if args.poll_rate > 0.0 {
        let addr = target
            .metrics_addr
            .context("--poll-rate needs a target with an admin listener (cujo)")?;
        LoadConfig {
            poll: Some(PollConfig {
                addr,
                per_s: args.poll_rate,
                paths: ENDPOINTS.iter().map(|p| p.to_string()).collect(),
                connections: args.poll_connections,
                timeout: args.poll_timeout,
                gzip: !args.poll_plain,
            }),
            ..cfg
        }
    } else {
        cfg
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let watched = Watched {
        target: target.pid(),
        sink: downstream.pid(),
    };
    let outcome = rt.block_on(load::run(pool.clone(), target.grpc_addr, cfg, watched));
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            return Err(e.context(format!("load failed{}", target.log_tail())));
        }
    };
    let stats = &outcome.stats;

    // Wait (bounded) for the target to hand on everything it acknowledged.
    let drain_deadline = outcome.finished + args.drain_timeout;
    let mut down = downstream.snapshot()?;
    while down.spans < stats.acked_spans && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(10));
        down = downstream.snapshot()?;
    }
    let drain_ms = outcome.finished.elapsed().as_secs_f64() * 1e3;
    // A short settle so late duplicates (more spans than acknowledged) show up too.
    std::thread::sleep(Duration::from_millis(100));
    down = downstream.snapshot()?;

    let end_sample = target.sample();
    let sink_end = downstream
        .pid()
        .and_then(|pid| cujo_bench::target::proc_sample(pid).ok());
    if let (Some(path), Some(text)) = (&args.metrics_out, target.scrape_metrics()) {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let exit = target.stop(args.stop_timeout)?;
    let sink_exit = downstream.stop();
    rt.shutdown_timeout(Duration::from_secs(2));

    let ticks = clock_ticks_per_second();
    let window_s = outcome.window.as_secs_f64();
    let cpu_of = |w: Option<(ProcSample, ProcSample)>| {
        w.map(|(a, b)| b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks)
    };
    let cpu_s = cpu_of(outcome.target_window);
    let bench_cpu_s = cpu_of(outcome.self_window);
    let sink_cpu_s = cpu_of(outcome.sink_window);
    let q = |p: f64| stats.latency_us.value_at_quantile(p) as f64 / 1e3;
    let counts_match = down.spans == stats.acked_spans && down.malformed == 0;
    let checksum_match =
        (stats.rejected_spans == 0).then_some(down.checksum == stats.acked_checksum);
    let report = RunReport {
        target: args
            .label
            .clone()
            .unwrap_or_else(|| args.target.to_string()),
        mode: match mode {
            Mode::Saturate => "saturate".into(),
            Mode::Rate { .. } => "rate".into(),
        },
        offered_spans_per_s: match mode {
            Mode::Rate { spans_per_s } => Some(spans_per_s),
            Mode::Saturate => None,
        },
        round: args.round,
        saturation_spans_per_s: None,
        rate_fraction: None,
        downstream: downstream.place().into(),
        clients: args.clients,
        concurrency,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: window_s,
        request_bytes_per_span: st.request_bytes_per_span,
        span_message_bytes: st.span_message_bytes,
        mean_spans_per_request: st.mean_spans_per_request,
        spans_per_s: stats.window_spans as f64 / window_s,
        requests_per_s: stats.window_requests as f64 / window_s,
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        max_ms: stats.latency_us.max() as f64 / 1e3,
        cpu_s,
        cpu_pct: cpu_s.map(|c| 100.0 * c / window_s),
        cpu_us_per_span: cpu_s
            .filter(|_| stats.window_spans > 0)
            .map(|c| c * 1e6 / stats.window_spans as f64),
        peak_rss_mib: end_sample.map(|s| s.hwm_kib as f64 / 1024.0),
        rss_end_mib: end_sample.map(|s| s.rss_kib as f64 / 1024.0),
        bench_cpu_pct: bench_cpu_s.map(|c| 100.0 * c / window_s),
        sink_cpu_pct: sink_cpu_s.map(|c| 100.0 * c / window_s),
        sink_peak_rss_mib: sink_end.map(|s| s.hwm_kib as f64 / 1024.0),
        acked_spans: stats.acked_spans,
        acked_requests: stats.acked_requests,
        flush_requests: stats.flush_requests,
        refusals: stats.refusals,
        transport_errors: stats.transport_errors,
        gave_up: stats.gave_up,
        failed_requests: stats.failed_requests,
        rejected_spans: stats.rejected_spans,
        downstream_spans: down.spans,
        downstream_requests: down.requests,
        downstream_malformed: down.malformed,
        counts_match,
        checksum_match,
        drain_ms,
        target_exit: exit,
        first_error: stats.first_error.clone(),
        poll_rate: (args.poll_rate > 0.0).then_some(args.poll_rate),
        unpolled_target: args.unpolled_label.clone(),
        polls: outcome
            .polls
            .iter()
            .map(|p| {
                let q = |x: f64| p.latency_us.value_at_quantile(x) as f64 / 1e3;
                PollReport {
                    path: p.path.clone(),
                    polls: p.polls,
                    polls_per_s: p.polls as f64 / window_s,
                    failed: p.failed,
                    missed: p.missed,
                    p50_ms: q(0.50),
                    p99_ms: q(0.99),
                    max_ms: p.latency_us.max() as f64 / 1e3,
                    mean_body_bytes: p.bytes as f64 / p.polls.max(1) as f64,
                    mean_plain_bytes: Some(p.plain_bytes as f64 / p.polls.max(1) as f64),
                    poller_cpu_pct: p.cpu_s.map(|c| 100.0 * c / window_s),
                    connections: p.connections,
                    first_error: p.first_error.clone(),
                }
            })
            .collect(),
    };
    if downstream.pid().is_some() {
        println!("sink exit: {sink_exit}");
    }
    drop(downstream);

    let ok = counts_match && checksum_match != Some(false);
    if ok && !args.keep_dir {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("work dir (config, target log): {}", dir.display());
    }
    Ok(report)
}
