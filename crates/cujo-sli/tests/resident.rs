//! What the SLI engine counts against what the process holds: in a child process of its own
//! (a fresh heap, no other test allocating beside it), on the binary's allocator, the
//! resident set grows by about what `SliEngine::memory_bytes` says once the engine holds
//! thousands of series and tens of thousands of settling traces.
#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::Duration;

use cujo_sli::condition::{
    Condition, Literal, RootMatch, Scalar, SpanFacts, StatusCode, ValueMatch,
};
use cujo_sli::cuj::{Cuj, Measure, Scope, TraceFacts};
use cujo_sli::engine::SliEngine;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the child process, which builds the engine and prints what it measured.
const CHILD: &str = "CUJO_SLI_RESIDENT_CHILD";
const TEST: &str = "resident_memory_grows_by_what_the_engine_counts";

#[test]
fn resident_memory_grows_by_what_the_engine_counts() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("the child process runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> f64 {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stdout:?}"))
    };
    let (counted, resident) = (field("counted="), field("resident="));
    eprintln!(
        "counted {:.1} MiB, resident set grew {:.1} MiB ({:+.1}%)",
        counted / 1048576.0,
        resident / 1048576.0,
        (resident / counted - 1.0) * 100.0
    );
    // The count is by the allocator's size classes and tables' slots. The allocator holds
    // more for a while: what a table or queue left behind when it doubled stays resident
    // until the allocator purges it (measured: 6-13% here, the most early on).
    assert!(
        resident <= counted * 1.2 && resident >= counted * 0.9,
        "counted {counted} bytes, the resident set grew {resident}"
    );
}

/// A root with a tier, for the CUJs below.
struct Root {
    tier: String,
}

impl SpanFacts for Root {
    fn name(&self) -> &str {
        "POST /v1/messages"
    }
    fn service(&self) -> &str {
        "api"
    }
    fn status(&self) -> StatusCode {
        StatusCode::Unset
    }
    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        (key == "user.tier").then_some(Scalar::Str(&self.tier))
    }
}

fn cuj(name: &str, measure: Measure) -> Cuj {
    Cuj {
        name: name.into(),
        matcher: RootMatch {
            span_name: Some(ValueMatch::Equals(Literal::Str("POST /v1/messages".into()))),
            ..RootMatch::default()
        },
        dimensions: vec!["user.tier".into()],
        max_series: 100_000,
        scope: Scope::Root,
        bad: vec![Condition::Status(StatusCode::Error)],
        exclude: vec![],
        latency: Some((Duration::from_millis(300), measure)),
        objectives: vec![],
        alert_gate: cujo_sli::slo::AlertGate::OFF,
        runbook: None,
    }
}

fn child() {
    let before = resident_bytes();
    // Series with histograms spread over the whole range (near their cap), then traces
    // waiting to settle (the clock does not move, so none settles).
    let mut engine = SliEngine::new(vec![
        cuj("post_message", Measure::Root),
        cuj("deliver", Measure::EndToEnd),
    ])
    .with_settle(Duration::from_secs(30), 100_000);
    let now = 1_700_000_000_000;
    let mut seed = 0x5eed_u64;
    for n in 0..150_000u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let roots = [Root {
            tier: format!("tenant-{:05}", n % 3_000),
        }];
        let latency_ns = 1_000 + seed % 3_000_000_000_000;
        let mut trace_id = [1u8; 16];
        trace_id[..8].copy_from_slice(&n.to_le_bytes());
        engine.observe(
            &TraceFacts {
                trace_id,
                root: &roots[0],
                root_start_ns: 0,
                root_end_ns: latency_ns,
                spans: &roots,
                last_end_ns: latency_ns,
                span_bits: None,
            },
            now,
        );
    }
    let counted = engine.memory_bytes();
    let resident = resident_bytes().saturating_sub(before);
    println!("counted={counted} resident={resident}");
    std::hint::black_box(&engine);
}

/// The process's resident set, from `/proc/self/status`.
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/self/status")
}
