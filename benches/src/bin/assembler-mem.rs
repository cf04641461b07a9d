//! Memory and CPU of the trace assembler holding spans: feeds N spans of the realistic
//! workload into an [`Assembler`] that releases nothing (long `decision_wait`), then reports
//! the resident memory they cost against their encoded size, and the time to ingest and to
//! release them enriched.
//!
//! ```text
//! cargo run --release -p cujo-bench --bin assembler-mem -- --spans 1000000
//! ```
//!
//! With `--config FILE` (a cujo config) the assembler takes that file's `assembler:` and
//! `propagate:` settings, and its `cujs:` get the SLI engine as observer, as in the
//! binary: the per-span times then include deriving the SLIs, on one core, with no network
//! or load generator sharing the machine.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use cujo_assembler::{Assembler, AssemblerSettings, PropagateSettings};
use cujo_bench::workload::{RequestPool, WorkloadConfig};
use cujo_wire::{SpanBatch, scan_request};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Spans to hold.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// A cujo config whose assembler, propagation and CUJs to use.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

fn rss_bytes() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = RequestPool::generate(&WorkloadConfig::default())?;
    let config = match &args.config {
        Some(path) => Some(cujo::config::Config::load(Some(path))?),
        None => None,
    };
    let base = match &config {
        Some(c) => cujo::assembly::settings(
            c,
            &cujo_otlp::memory::MemoryBudget::new(
                c.admission.max_in_flight.0 as usize,
                c.memory_shares(),
            ),
        ),
        None => AssemblerSettings {
            propagate: PropagateSettings {
                attributes: vec!["cuj.*".into(), "user.tier".into(), "tenant.id".into()],
                ..PropagateSettings::default()
            },
            ..AssemblerSettings::default()
        },
    };
    // Nothing falls due or is pushed out while the spans are held.
    let settings = AssemblerSettings {
        decision_wait: Duration::from_secs(3600),
        trace_timeout: Duration::from_secs(7200),
        max_buffered_spans: usize::MAX,
        max_memory_bytes: usize::MAX,
        ..base
    };
    let cujs = config.as_ref().map(|c| c.cujs()).unwrap_or_default();
    let observer = |assembler: &mut Assembler| {
        if let Some(c) = config.as_ref().filter(|_| !cujs.is_empty()) {
            let engine = cujo_sli::engine::SliEngine::new(cujs.clone())
                .with_settle(c.slo.settle.0, c.slo.max_settling_traces);
            assembler.set_observer(Box::new(cujo::assembly::SliObserver::new(
                std::sync::Arc::new(std::sync::Mutex::new(engine)),
            )));
        }
    };
    println!("CUJs observing:        {}", cujs.len());
    let mut assembler = Assembler::new(settings);
    // Pre-build the requests so their memory is not counted as the assembler's.
    let mut requests = Vec::new();
    let mut spans = 0u64;
    let mut seq = 0;
    while spans < args.spans {
        let inst = pool.instance(seq);
        spans += u64::from(inst.spans);
        requests.push(inst.body);
        seq += 1;
    }
    let scanned: Vec<SpanBatch> = requests
        .iter()
        .map(|r| scan_request(r).map(|s| s.batch))
        .collect::<Result<_, _>>()?;
    let span_bytes: u64 = scanned
        .iter()
        .flat_map(|b| &b.groups)
        .map(|g| g.span_bytes() as u64)
        .sum();
    let settings = assembler.settings_clone();
    // Pass 1, on fresh memory: what holding the spans costs in resident memory.
    let before = rss_bytes()?;
    let mut out = SpanBatch::default();
    for batch in &scanned {
        assembler.ingest(batch, 0, &mut out);
    }
    let held = assembler.held_spans() as u64;
    let held_bytes = assembler.held_bytes() as u64;
    let counted = assembler.memory_bytes() as u64;
    let grown = rss_bytes()?.saturating_sub(before);
    let mut released = SpanBatch::default();
    assembler.release_all(1, &mut released);
    drop(released);
    drop(assembler);
    // Pass 2, on memory the allocator already has (as in a running server): CPU per span.
    // Requests go in in chunks; after each chunk everything held is released enriched and
    // the output dropped, as the exporter would.
    let mut assembler = Assembler::new(settings);
    observer(&mut assembler);
    let (mut ingest, mut release) = (Duration::ZERO, Duration::ZERO);
    let mut out_spans = 0u64;
    let mut out_bytes = 0u64;
    for chunk in scanned.chunks(200) {
        let t = Instant::now();
        for batch in chunk {
            assembler.ingest(batch, 0, &mut out);
        }
        ingest += t.elapsed();
        let t = Instant::now();
        let mut released = SpanBatch::default();
        assembler.release_all(1, &mut released);
        out_spans += released.span_count() as u64 + out.span_count() as u64;
        out_bytes += released
            .groups
            .iter()
            .chain(&out.groups)
            .map(|g| g.span_bytes() as u64)
            .sum::<u64>();
        drop(released);
        out = SpanBatch::default();
        release += t.elapsed();
    }
    println!(
        "spans held:            {held} (released {} early)",
        out.span_count()
    );
    println!(
        "encoded span bytes:    {:.1} MiB ({:.0} B/span); assembler counts {:.1} MiB",
        span_bytes as f64 / 1048576.0,
        span_bytes as f64 / spans as f64,
        held_bytes as f64 / 1048576.0
    );
    println!(
        "RSS growth holding:    {:.1} MiB = {:.2}x encoded size",
        grown as f64 / 1048576.0,
        grown as f64 / span_bytes as f64
    );
    println!(
        "memory counted:        {:.1} MiB = {:.2}x encoded size ({:.2}x the RSS growth)",
        counted as f64 / 1048576.0,
        counted as f64 / span_bytes as f64,
        counted as f64 / grown.max(1) as f64
    );
    println!(
        "ingest:                {:.3} us/span ({:.2} M spans/s, one core)",
        ingest.as_secs_f64() * 1e6 / spans as f64,
        spans as f64 / ingest.as_secs_f64() / 1e6
    );
    println!(
        "release enriched:      {:.3} us/span ({out_spans} spans)",
        release.as_secs_f64() * 1e6 / out_spans.max(1) as f64
    );
    println!(
        "enriched span bytes:   {:.0} B/span (in: {:.0} B/span)",
        out_bytes as f64 / out_spans.max(1) as f64,
        span_bytes as f64 / spans as f64
    );
    println!(
        "{{\"spans\":{held},\"encoded_bytes\":{span_bytes},\"rss_growth\":{grown},\"ratio\":{:.3},\"ingest_us_per_span\":{:.4},\"release_us_per_span\":{:.4}}}",
        grown as f64 / span_bytes as f64,
        ingest.as_secs_f64() * 1e6 / spans as f64,
        release.as_secs_f64() * 1e6 / out_spans.max(1) as f64
    );
    Ok(())
}
