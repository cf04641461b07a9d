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

/// mimalloc (as in cujo), counting the bytes asked of it: the requested bytes, the
/// assembler's own count and the resident growth side by side tell rounding to size classes
/// from what the allocator's pages add.
struct Counting;

static REQUESTED: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

/// Calls of `alloc` and `realloc`, for allocations per span.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: every call forwards to mimalloc with the same arguments; the counter is an atomic.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        REQUESTED.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        REQUESTED.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        REQUESTED.fetch_add(
            new_size as isize - layout.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn requested() -> i64 {
    REQUESTED.load(std::sync::atomic::Ordering::Relaxed) as i64
}

#[derive(Parser)]
struct Args {
    /// Spans to hold.
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// A cujo config whose assembler, propagation and CUJs to use.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Instead of holding N spans once: run a steady flow at this many spans/s of
    /// simulated time (traces released `decision_wait` after their root, 2 s unless the
    /// config says otherwise) for `--seconds`, and report resident memory against what the
    /// assembler holds and counts at the end, as a long-running process sees it, and the
    /// assembler's CPU per span (ingest and release, with the config's CUJs observing).
    #[arg(long)]
    steady_rate: Option<u64>,
    /// Simulated seconds of the steady flow.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
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

/// The steady flow of `--steady-rate`: requests in on a simulated clock, due traces out,
/// the output dropped as an exporter would; resident memory against held and counted bytes.
fn steady(
    pool: &RequestPool,
    settings: AssemblerSettings,
    observer: impl Fn(&mut Assembler),
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    let mut assembler = Assembler::new(settings);
    observer(&mut assembler);
    let before = rss_bytes()?;
    let requested_before = requested();
    let mut now_ms = 0.0f64;
    let mut seq = 0u64;
    let mut spans_in = 0u64;
    let started = Instant::now();
    let mut peak = 0u64;
    // The assembler's own time: ingest and release, not decoding requests nor dropping the
    // output (the receivers' and the exporter's work).
    let mut assembling = Duration::ZERO;
    // Allocations (and reallocations) made while assembling: this thread's, and the SLI
    // engine's thread's in the same time.
    let mut allocations = 0u64;
    while now_ms < (seconds * 1000) as f64 {
        let inst = pool.instance(seq);
        seq += 1;
        spans_in += u64::from(inst.spans);
        let batch = scan_request(&inst.body)?.batch;
        let mut out = SpanBatch::default();
        let calls = CALLS.load(std::sync::atomic::Ordering::Relaxed);
        let t = Instant::now();
        assembler.ingest(&batch, now_ms as u64, &mut out);
        assembler.release_due(now_ms as u64, &mut out);
        assembling += t.elapsed();
        allocations += CALLS.load(std::sync::atomic::Ordering::Relaxed) - calls;
        drop(out);
        now_ms += f64::from(inst.spans) * 1000.0 / rate as f64;
        if seq.is_multiple_of(1000) {
            peak = peak.max(rss_bytes()?.saturating_sub(before));
        }
    }
    let held = assembler.held_bytes() as u64;
    let (counted, cache) = assembler.memory_bytes_shared();
    let (counted, cache) = (counted as u64, cache as u64);
    let asked = (requested() - requested_before).max(0) as u64;
    let grown = rss_bytes()?.saturating_sub(before);
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "steady flow:           {rate} spans/s for {seconds} s simulated ({spans_in} spans, {:.1} s of CPU)",
        started.elapsed().as_secs_f64()
    );
    println!(
        "ingest and release:    {:.3} us/span (SLIs included when the config has CUJs)",
        assembling.as_secs_f64() * 1e6 / spans_in.max(1) as f64
    );
    println!(
        "allocations:           {:.3} per span (alloc and realloc calls while assembling)",
        allocations as f64 / spans_in.max(1) as f64
    );
    println!(
        "held at the end:       {} spans, {:.1} MiB encoded",
        assembler.held_spans(),
        mib(held)
    );
    println!(
        "memory counted:        {:.1} MiB = {:.2}x held encoded size",
        mib(counted),
        counted as f64 / held.max(1) as f64
    );
    println!(
        "root cache counted:    {:.1} MiB ({} entries)",
        mib(cache),
        assembler.stats().root_cache_entries
    );
    println!(
        "bytes asked of malloc: {:.1} MiB = {:.2}x counted (assembler and root cache)",
        mib(asked),
        asked as f64 / (counted + cache).max(1) as f64
    );
    println!(
        "RSS growth:            {:.1} MiB = {:.2}x counted (assembler and root cache); peak {:.1} MiB",
        mib(grown),
        grown as f64 / (counted + cache).max(1) as f64,
        mib(peak)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = RequestPool::generate(&WorkloadConfig::default())?;
    let config = match &args.config {
        Some(path) => Some(cujo::config::Config::load(Some(path))?),
        None => None,
    };
    let base: AssemblerSettings = match &config {
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
    let cujs = config.as_ref().map(|c| c.cujs()).unwrap_or_default();
    let observer = |assembler: &mut Assembler| {
        if let Some(c) = config.as_ref().filter(|_| !cujs.is_empty()) {
            let engine = cujo_sli::engine::SliEngine::new(cujs.clone())
                .with_settle(c.slo.settle.0, c.slo.max_settling_traces);
            let matcher = engine.matcher();
            let (feed, _reader) = cujo_sli::processor::spawn(
                engine,
                cujo::assembly::wall_clock_ms,
                Duration::from_secs(1),
            )
            .expect("the SLI engine's thread starts");
            assembler.set_observer(Box::new(cujo_sli::observer::SliObserver::new(
                matcher,
                feed,
                cujo::assembly::wall_clock_ms,
            )));
        }
    };
    if let Some(rate) = args.steady_rate {
        // The root cache gets the default budget's share unless the config sets one.
        let root_cache_max_bytes = if base.root_cache_max_bytes == usize::MAX {
            32 << 20
        } else {
            base.root_cache_max_bytes
        };
        let steady_settings = AssemblerSettings {
            max_buffered_spans: usize::MAX,
            max_memory_bytes: usize::MAX,
            root_cache_max_bytes,
            ..base
        };
        return steady(&pool, steady_settings, observer, rate, args.seconds);
    }
    // Nothing falls due or is pushed out while the spans are held.
    let settings = AssemblerSettings {
        decision_wait: Duration::from_secs(3600),
        trace_timeout: Duration::from_secs(7200),
        max_buffered_spans: usize::MAX,
        max_memory_bytes: usize::MAX,
        ..base
    };
    // Pass 2 runs as configured; pass 1 holds every span (none streamed once its root is
    // there), since what a held span costs is what it measures.
    let timed_settings = settings.clone();
    let settings = AssemblerSettings {
        stream_after_root: false,
        ..settings
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
    let settings = timed_settings;
    // Pass 1, on fresh memory: what holding the spans costs in resident memory.
    let before = rss_bytes()?;
    let requested_before = requested();
    let mut out = SpanBatch::default();
    for batch in &scanned {
        assembler.ingest(batch, 0, &mut out);
    }
    let held = assembler.held_spans() as u64;
    let held_bytes = assembler.held_bytes() as u64;
    let counted = assembler.memory_bytes() as u64;
    let breakdown = assembler.memory_breakdown();
    let asked = (requested() - requested_before).max(0) as u64;
    let grown = rss_bytes()?.saturating_sub(before);
    // What went out during pass 1: traces released early, and (`assembler.hold: root`)
    // spans written out once their root had arrived.
    let early = out.span_count();
    drop(out);
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
    let mut out = SpanBatch::default();
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
    println!("spans held:            {held} ({early} written out before the end)");
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
        "bytes asked of malloc: {:.1} MiB = {:.2}x encoded size",
        asked as f64 / 1048576.0,
        asked as f64 / span_bytes as f64
    );
    println!(
        "memory counted:        {:.1} MiB = {:.2}x encoded size ({:.2}x the RSS growth)",
        counted as f64 / 1048576.0,
        counted as f64 / span_bytes as f64,
        counted as f64 / grown.max(1) as f64
    );
    for (part, bytes) in &breakdown {
        println!(
            "  {part:<20} {:>8.1} MiB = {:.3}x encoded size",
            *bytes as f64 / 1048576.0,
            *bytes as f64 / span_bytes as f64
        );
    }
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
