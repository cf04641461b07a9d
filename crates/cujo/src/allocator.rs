//! Keeps the resident set near the memory budget: the allocator governor.
//!
//! Every byte that grows with input is counted against the budget, but the allocator keeps
//! what is freed for reuse (cujo asks mimalloc to wait 10 s before returning it, see
//! `main.rs`: returning it at once cost 11–13% of throughput in page faults). Under churn,
//! that kept memory is what separates the resident set from the budget. The governor reads
//! the resident set every [`PERIOD`]. When it passes the budget plus [`SLACK`], the
//! allocator is put under pressure (the binary registers how, with [`set_pressure`]:
//! mimalloc returns what it holds now and every page as soon as it is freed), counted in
//! `cujo_memory_purges_total`; once the resident set is back under the budget, the
//! allocator keeps freed memory again. If the resident set still passes the budget plus
//! [`HARD`] (memory the counts cannot see: the allocator's fragmentation across threads'
//! pages), every component's limit is lowered step by step, down to half
//! (`cujo_memory_limit_scale_ratio`): receivers refuse sooner, the assembler releases
//! traces early (those with their root first), the exporter takes less; the limits come back once the resident set
//! is under the budget plus [`SLACK`]. A process with room never leaves the fast path.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use cujo_otlp::memory::MemoryBudget;

/// How often the resident set is read.
pub const PERIOD: Duration = Duration::from_millis(50);

/// How far past the budget the resident set may go before the allocator is put under
/// pressure: the code, the runtime and thread stacks take about 10–20 MiB of it.
pub const SLACK: usize = 32 << 20;

/// How far past the budget the resident set may go before every component's limit is
/// lowered (see [`MemoryBudget::set_scale_permille`]).
pub const HARD: usize = 56 << 20;

/// Per mille of the configured limits taken away per period above [`HARD`], and given
/// back per period under [`SLACK`]: down to half within a second, back within 5 s.
const SCALE_DOWN: usize = 25;
const SCALE_UP: usize = 5;

/// How the allocator is put under pressure (`true`: return freed memory now and at once)
/// and released from it (`false`: keep freed memory for reuse again), registered by the
/// binary, which owns the global allocator. Without it the governor does not run.
static PRESSURE: OnceLock<fn(bool)> = OnceLock::new();

/// Registers how to put the allocator under pressure; the first call wins.
pub fn set_pressure(pressure: fn(bool)) {
    let _ = PRESSURE.set(pressure);
}

/// Starts the governor on its own thread; it ends when the budget is dropped.
pub fn govern(budget: &Arc<MemoryBudget>) {
    let Some(&pressure) = PRESSURE.get() else {
        return;
    };
    let budget = Arc::downgrade(budget);
    let spawned = std::thread::Builder::new()
        .name("cujo-memory".into())
        .spawn(move || run(budget, pressure));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the allocator governor; freed memory returns to the OS only after mimalloc's purge delay");
    }
}

fn run(budget: Weak<MemoryBudget>, pressure: fn(bool)) {
    let mut pressed = false;
    loop {
        std::thread::sleep(PERIOD);
        let Some(budget) = budget.upgrade() else {
            if pressed {
                pressure(false);
            }
            return;
        };
        let Some(rss) = resident_bytes() else {
            continue;
        };
        let total = budget.total();
        if rss > total.saturating_add(SLACK) {
            // Again on every period above the line: pages freed before the pressure began
            // wait out the old delay otherwise.
            pressure(true);
            budget.note_purge();
            pressed = true;
        } else if pressed && rss < total {
            pressure(false);
            pressed = false;
        }
        // Still too far over with the allocator under pressure: memory the counts cannot
        // see (fragmentation across threads' pages). Hold less until the resident set is
        // back under the line: 2.5% of every limit per period, down to half.
        let scale = budget.scale_permille();
        if rss > total.saturating_add(HARD) {
            budget.set_scale_permille(scale.saturating_sub(SCALE_DOWN));
        } else if rss < total.saturating_add(SLACK) && scale < 1000 {
            budget.set_scale_permille(scale + SCALE_UP);
        }
    }
}

/// The process's resident set (`VmRSS`), in bytes.
pub fn resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_set_is_read_from_proc() {
        let rss = resident_bytes().expect("VmRSS in /proc/self/status");
        assert!(rss > 1 << 20, "{rss}");
    }
}
