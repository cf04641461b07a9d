//! Cost of the SLI engine per released trace, with the load benchmark's CUJ set: the
//! workload's five journeys, each as a root-latency CUJ and an end-to-end CUJ over the
//! whole trace, split by `user.tier` and `tenant.id` (10 CUJs × 2 dimensions; the
//! `cujo-sli` target of `scripts/bench.sh`). Each trace matches two CUJs.
//!
//! Roots cycle through 3 tiers × 800 tenants, so every CUJ reaches its 1,000 series and the
//! rest of the values fold into the overflow series, as in the load benchmark. The clock
//! advances 1 ms per 100 traces, and end-to-end events settle with the binary's defaults
//! (30 s, at most 100,000 traces waiting): at this clock the cap binds first, so in the
//! steady state each new trace makes the oldest waiting one record its event early.
//!
//! Throughput is per trace: criterion's "elem/s" is traces per second.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use cujo_sli::condition::{Scalar, SpanFacts, StatusCode};
use cujo_sli::cuj::TraceFacts;
use cujo_sli::engine::SliEngine;

// The binary's allocator: allocation is part of the cost measured.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const JOURNEYS: [&str; 5] = [
    "checkout",
    "add-to-cart",
    "view-product",
    "search",
    "view-cart",
];
const TIERS: [&str; 3] = ["free", "pro", "enterprise"];
/// Distinct roots fed in a cycle (trace ids stay distinct: a counter is mixed in).
const ROOTS: usize = 20_000;

fn config_yaml() -> String {
    let mut yaml = String::from("cujs:");
    for journey in JOURNEYS {
        for (variant, scope, measure) in [("api", "root", "root"), ("e2e", "trace", "end_to_end")] {
            yaml.push_str(&format!(
                "
  - name: {journey}-{variant}
    match: {{ attributes: {{ cuj.name: {journey} }} }}
    dimensions: [user.tier, tenant.id]
    availability:
      scope: {scope}
      bad: [ {{ status: error }}, {{ attribute: http.response.status_code, gte: 500 }} ]
      exclude: [ {{ attribute: http.response.status_code, gte: 400, lt: 500 }} ]
    latency: {{ threshold: 300ms, measure: {measure} }}
    objectives: [ {{ sli: availability, target: 99.9%, window: 30d }}, {{ sli: latency, target: 99%, window: 30d }} ]"
            ));
        }
    }
    yaml
}

/// A root span as the engine reads it.
struct Root {
    cuj: &'static str,
    tier: &'static str,
    tenant: String,
    code: i64,
    status: StatusCode,
    duration_ns: u64,
}

impl SpanFacts for Root {
    fn name(&self) -> &str {
        "POST /api/checkout"
    }
    fn service(&self) -> &str {
        "frontend"
    }
    fn status(&self) -> StatusCode {
        self.status
    }
    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        match key {
            "cuj.name" => Some(Scalar::Str(self.cuj)),
            "user.tier" => Some(Scalar::Str(self.tier)),
            "tenant.id" => Some(Scalar::Str(&self.tenant)),
            "http.response.status_code" => Some(Scalar::Int(self.code)),
            _ => None,
        }
    }
}

fn roots() -> Vec<Root> {
    // splitmix64: deterministic traffic.
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..ROOTS)
        .map(|_| {
            let error = next() % 50 == 0;
            Root {
                cuj: JOURNEYS[(next() % 5) as usize],
                tier: TIERS[(next() % 3) as usize],
                tenant: format!("tenant-{:04}", 1 + next() % 800),
                code: if error { 500 } else { 200 },
                status: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                },
                duration_ns: 30_000_000 + next() % 870_000_000,
            }
        })
        .collect()
}

/// The engine and the traffic fed to it, one trace per [`Feed::step`].
struct Feed {
    engine: SliEngine,
    roots: Vec<Root>,
    /// The trace-scope condition bits of each root, as the assembler hands them over.
    bits: Vec<u64>,
    n: u64,
}

const START_MS: u64 = 1_800_000_000_000;

impl Feed {
    fn new() -> Self {
        let config = cujo::config::Config::parse("<sli bench>", &config_yaml(), &|_| None)
            .expect("the bench's CUJs are a valid config");
        let engine = SliEngine::new(config.cujs())
            .with_settle(config.slo.settle.0, config.slo.max_settling_traces);
        let conditions = engine
            .span_conditions()
            .cloned()
            .expect("the trace-scope conditions fit the arrival classification");
        let roots = roots();
        let bits = roots.iter().map(|r| conditions.classify(r)).collect();
        Feed {
            engine,
            roots,
            bits,
            n: 0,
        }
    }

    /// Feeds the next trace: its root alone, with the trace's condition bits.
    fn step(&mut self) {
        let n = self.n;
        let i = (n % ROOTS as u64) as usize;
        let root = &self.roots[i];
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&n.to_le_bytes());
        let now_ms = START_MS + n / 100;
        let start_ns = now_ms * 1_000_000;
        let facts = TraceFacts {
            trace_id,
            root,
            root_start_ns: start_ns,
            root_end_ns: start_ns + root.duration_ns,
            spans: &[],
            last_end_ns: start_ns + root.duration_ns + 5_000_000,
            span_bits: Some(self.bits[i]),
        };
        self.engine.observe(black_box(&facts), now_ms);
        self.n += 1;
    }
}

fn bench(c: &mut Criterion) {
    let mut feed = Feed::new();
    let mut group = c.benchmark_group("sli_engine_10_cujs_2_dims");
    group.throughput(Throughput::Elements(1));
    group.bench_function("observe_root_only_trace", |b| b.iter(|| feed.step()));
    group.finish();
}

criterion_group!(benches, bench);

/// `SLI_BENCH_TRACES=N`: feeds a fixed number of traces and exits, without criterion, for
/// tools that count rather than time (`valgrind --tool=cachegrind`).
fn main() {
    if let Some(n) = std::env::var("SLI_BENCH_TRACES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let mut feed = Feed::new();
        for _ in 0..n {
            feed.step();
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
