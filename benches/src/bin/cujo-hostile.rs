//! `cujo-hostile`: cujo's memory under hostile input.
//!
//! For each scenario: starts `cujo-sink` and cujo (the scenario's config, or `--cujo-yaml`),
//! sends the scenario's requests to 127.0.0.1 for a bounded time and count while sampling
//! cujo's VmRSS every 100 ms (SIGKILL past `--rss-cap`), then checks that cujo still accepts
//! one normal request and prints peak and final RSS, the budget, accepted/refused requests
//! and cujo's memory-related `/metrics` lines. See `cujo_bench::hostile`.
//!
//! ```text
//! cujo-hostile --scenario amplify --duration 25s
//! cujo-hostile --scenario all --duration 25s --json-out hostile.jsonl
//! cujo-hostile --scenario long-dimensions --cujo-yaml "$(cat my-cujs.yaml)"
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;

use cujo_bench::hostile::drive::{self, DriveConfig};
use cujo_bench::hostile::report::{HostileReport, METRIC_WORDS, hostile_table};
use cujo_bench::hostile::scenario::{RequestMaker, Scenario, Shape, filler, normal_request};
use cujo_bench::rss::RssWatch;
use cujo_bench::sink::{SinkProcess, default_sink_bin};
use cujo_bench::target::{
    Target, TargetKind, clock_ticks_per_second, metric_lines_matching, metric_value, proc_sample,
    scrape_metrics_at,
};

#[derive(Debug, Parser)]
#[command(about = "cujo's RSS under hostile OTLP input, one scenario at a time")]
struct Args {
    /// Scenarios to run, comma-separated, or `all`.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scenario)]
    scenario: Vec<ScenarioChoice>,
    /// cujo binary [default: $CARGO_TARGET_DIR/release/cujo].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// The `cujo-sink` binary [default: beside this binary].
    #[arg(long)]
    sink_bin: Option<PathBuf>,
    /// YAML appended to cujo's generated config instead of the scenario's own.
    #[arg(long)]
    cujo_yaml: Option<String>,
    /// How long each scenario sends.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "25s")]
    duration: Duration,
    /// Requests per scenario at most.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// gRPC connections, one request in flight each.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Override the scenario's spans (or traces) per request.
    #[arg(long)]
    spans: Option<usize>,
    /// Override the scenario's large-value size in bytes.
    #[arg(long)]
    value_bytes: Option<usize>,
    /// amplify: the root attribute that carries the large value; one of the config's
    /// `propagate.attributes` must match it.
    #[arg(long, default_value = "tenant.id")]
    attribute: String,
    /// cujo is killed when its VmRSS passes this many MiB.
    #[arg(long, default_value_t = 4096)]
    rss_cap_mib: u64,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    sample_interval: Duration,
    /// How long the closing normal request keeps being retried.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    probe_timeout: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    request_timeout: Duration,
    /// Longest pause after a refusal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    max_backoff: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    ready_timeout: Duration,
    /// How long cujo gets to exit after SIGTERM before SIGKILL (its own shutdown deadline is
    /// 30 s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "35s")]
    stop_timeout: Duration,
    /// How often cujo's `/metrics` is scraped during the run (0s: only at start and end). A
    /// scrape is a reader like Prometheus; with large dimension values its text is large.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    scrape_interval: Duration,
    #[arg(long, default_value_t = 0x00c0_ffee)]
    seed: u64,
    /// Append each scenario's JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Write the last full `/metrics` text of each scenario to DIR/SCENARIO.metrics.
    #[arg(long, value_name = "DIR")]
    metrics_out: Option<PathBuf>,
    /// Keep the work dir (config, cujo's log).
    #[arg(long)]
    keep_dir: bool,
}

#[derive(Debug, Clone, Copy)]
enum ScenarioChoice {
    All,
    One(Scenario),
}

fn parse_scenario(s: &str) -> Result<ScenarioChoice, String> {
    if s == "all" {
        return Ok(ScenarioChoice::All);
    }
    <Scenario as clap::ValueEnum>::from_str(s, false)
        .map(ScenarioChoice::One)
        .map_err(|_| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            format!("expected all or one of {}, got {s:?}", names.join(", "))
        })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        // Every scenario ran, but cujo was killed or did not serve at the end of one.
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("cujo-hostile: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for choice in &args.scenario {
        match choice {
            ScenarioChoice::All => scenarios.extend(Scenario::ALL),
            ScenarioChoice::One(s) => scenarios.push(*s),
        }
    }
    scenarios.dedup();
    let mut reports = Vec::new();
    for scenario in scenarios {
        let report =
            run_scenario(args, scenario).with_context(|| format!("scenario {scenario}"))?;
        print!("{}", report.human());
        let line = serde_json::to_string(&report)?;
        if let Some(path) = &args.json_out {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
        }
        println!();
        reports.push(report);
    }
    print!("{}", hostile_table(&reports));
    Ok(reports
        .iter()
        .all(|r| r.killed_at.is_none() && r.serves_at_end()))
}

/// The memory budget cujo states: `cujo_memory_budget_bytes` when it exports one, else its
/// admission budget (`admission.max_in_flight`, as `cujo_admission_max_in_flight_bytes`).
fn budget(metrics: Option<&str>) -> (Option<u64>, String) {
    let Some(text) = metrics else {
        return (None, "no /metrics answer at start".into());
    };
    if let Some(v) = metric_value(text, "cujo_memory_budget_bytes") {
        return (Some(v as u64), "cujo_memory_budget_bytes".into());
    }
    match metric_value(text, "cujo_admission_max_in_flight_bytes") {
        Some(v) => (
            Some(v as u64),
            "admission.max_in_flight (cujo_admission_max_in_flight_bytes)".into(),
        ),
        None => (None, "not in /metrics".into()),
    }
}

fn run_scenario(args: &Args, scenario: Scenario) -> anyhow::Result<HostileReport> {
    let bin = args.bin.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("release/cujo")
    });
    let (yaml, config) = match &args.cujo_yaml {
        Some(y) => (y.clone(), "custom (--cujo-yaml)".to_string()),
        None => (
            scenario.default_yaml(),
            scenario.default_config_summary().to_string(),
        ),
    };
    let default_shape = scenario.default_shape();
    let shape = Shape {
        spans: args.spans.unwrap_or(default_shape.spans),
        value_bytes: args.value_bytes.unwrap_or(default_shape.value_bytes),
    };
    println!(
        "-- {scenario}: {config}; spans {} / value bytes {} --",
        shape.spans, shape.value_bytes
    );

    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "cujo-hostile-{scenario}-{}-{stamp}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    // Both are killed when dropped, on every path out of this function.
    let sink_bin = args.sink_bin.clone().unwrap_or_else(default_sink_bin);
    let mut sink = SinkProcess::start(&sink_bin, Duration::from_secs(10))?;
    let mut target = Target::start(TargetKind::Cujo, &bin, &[], &yaml, sink.addr, &dir)?;
    println!("target: {}", target.command);
    target.wait_ready(args.ready_timeout)?;
    let pid = target.pid().context("cujo has no pid")?;
    let metrics_addr = target
        .metrics_addr
        .context("cujo has no /metrics address")?;
    let (budget_bytes, budget_source) = budget(target.scrape_metrics().as_deref());

    // Requests are built from one random buffer, long enough for the largest value.
    let filler = Arc::new(filler(shape.value_bytes + (64 << 10), args.seed));
    let makers = (0..args.clients.max(1))
        .map(|i| {
            RequestMaker::new(
                scenario,
                shape,
                &args.attribute,
                args.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9),
                filler.clone(),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let watch = RssWatch::start(
        pid,
        args.sample_interval,
        Some(args.rss_cap_mib.saturating_mul(1024)),
    )?;
    let scraper = MetricsScraper::start(metrics_addr, args.scrape_interval);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cfg = DriveConfig {
        duration: args.duration,
        max_requests: args.max_requests,
        request_timeout: args.request_timeout,
        max_backoff: args.max_backoff,
    };
    let cpu_start = proc_sample(pid).ok();
    let drive_start = Instant::now();
    let stats = rt.block_on(drive::drive(
        target.grpc_addr,
        makers,
        cfg,
        watch.killed_flag(),
    ))?;
    // cujo's CPU while the clients sent (none if it was killed: its /proc entry is gone).
    let cpu_pct = cpu_start.zip(proc_sample(pid).ok()).map(|(a, b)| {
        let ticks = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64;
        100.0 * ticks / clock_ticks_per_second() / drive_start.elapsed().as_secs_f64()
    });
    let probe = if watch.killed() {
        None
    } else {
        let req = normal_request(args.seed);
        Some(rt.block_on(drive::probe(target.grpc_addr, &req, args.probe_timeout)))
    };
    let (metrics_text, metrics_at, metrics_max_bytes) = scraper.finish();
    let end = proc_sample(pid).ok().filter(|_| !watch.killed());
    let trace = watch.finish();
    let target_exit = target.stop(args.stop_timeout)?;
    rt.shutdown_timeout(Duration::from_secs(2));
    // After cujo stopped: what it forwarded before (and while) shutting down.
    let down = sink.snapshot().context("reading the sink's counts")?;
    let sink_hwm = sink.sample().map(|s| s.hwm_kib as f64 / 1024.0);
    sink.stop();

    if let (Some(dir), Some(text)) = (&args.metrics_out, &metrics_text) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{scenario}.metrics"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    // The sampled peak, or cujo's own high-water mark when it outlived the run (it sees
    // between samples).
    let hwm_kib = end.map_or(0, |s| s.hwm_kib);
    let report = HostileReport {
        scenario,
        shape,
        config,
        cujo_yaml: yaml,
        budget_bytes,
        budget_source,
        peak_rss_mib: trace.peak_kib.max(hwm_kib) as f64 / 1024.0,
        rss_end_mib: end.map(|s| s.rss_kib as f64 / 1024.0),
        hwm_mib: end.map(|s| s.hwm_kib as f64 / 1024.0),
        cpu_pct,
        sample_interval_ms: args.sample_interval.as_millis() as u64,
        rss_per_second_mib: trace.per_step_max_mib(Duration::from_secs(1)),
        killed_at: trace
            .killed_at
            .map(|(t, kib)| (t.as_secs_f64(), kib as f64 / 1024.0)),
        rss_cap_mib: args.rss_cap_mib as f64,
        drive: stats,
        probe,
        sink_spans: down.spans,
        sink_bytes: down.bytes,
        sink_peak_rss_mib: sink_hwm,
        metrics: metrics_text
            .as_deref()
            .map(|t| {
                metric_lines_matching(t, METRIC_WORDS)
                    .into_iter()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        metrics_at_s: metrics_at,
        metrics_max_bytes,
        target_exit,
    };
    if args.keep_dir || report.killed_at.is_some() || !report.serves_at_end() {
        println!("work dir (config, cujo log): {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

/// Scrapes `/metrics` every `interval` (zero: only at the end) on a thread of its own and
/// keeps the last answer, so a cujo killed at the RSS cap still leaves its last counters.
struct MetricsScraper {
    stop: Arc<AtomicBool>,
    scraped: Arc<Mutex<Scraped>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Scraped {
    /// The last text served, and when (seconds after the scraper started).
    last: Option<(String, f64)>,
    /// The largest text's length.
    max_bytes: usize,
}

impl MetricsScraper {
    fn start(addr: SocketAddr, interval: Duration) -> MetricsScraper {
        let stop = Arc::new(AtomicBool::new(false));
        let scraped = Arc::new(Mutex::new(Scraped::default()));
        let (s, l) = (stop.clone(), scraped.clone());
        let thread = std::thread::Builder::new()
            .name("metrics-scrape".into())
            .spawn(move || {
                let start = Instant::now();
                let keep = |text: String| {
                    if let Ok(mut slot) = l.lock() {
                        slot.max_bytes = slot.max_bytes.max(text.len());
                        slot.last = Some((text, start.elapsed().as_secs_f64()));
                    }
                };
                let mut next = start + interval;
                while !s.load(Ordering::Relaxed) {
                    if !interval.is_zero() && Instant::now() >= next {
                        if let Some(text) = scrape_metrics_at(addr) {
                            keep(text);
                        }
                        next = Instant::now() + interval;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // One last scrape as the run ends.
                if let Some(text) = scrape_metrics_at(addr) {
                    keep(text);
                }
            })
            .ok();
        MetricsScraper {
            stop,
            scraped,
            thread,
        }
    }

    /// Stops scraping; the last text that was served, when, and the largest text's length.
    fn finish(mut self) -> (Option<String>, Option<f64>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let Ok(mut slot) = self.scraped.lock() else {
            return (None, None, 0);
        };
        let max = slot.max_bytes;
        match slot.last.take() {
            Some((text, at)) => (Some(text), Some(at), max),
            None => (None, None, max),
        }
    }
}

impl Drop for MetricsScraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
