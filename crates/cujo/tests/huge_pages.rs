//! `admission.huge_pages`: a small budget (a sidecar's) runs without transparent huge pages,
//! whose 2 MiB regions tripled a sidecar's resident set (BENCHMARKS.md, "The sidecar"); a
//! gateway-sized budget keeps them; the setting overrides either way. Read from the real
//! process's `/proc/<pid>/status` (`THP_enabled`, Linux 6.x).

mod support;

use support::{Cujo, proc_status_kib};

fn thp_enabled(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_runs_without_transparent_huge_pages() {
    if thp_enabled(std::process::id()).is_none() {
        eprintln!("this kernel does not report THP_enabled: nothing to check");
        return;
    }
    for (admission, want) in [
        ("admission: { max_in_flight: 64MiB }", 0),
        ("admission: { max_in_flight: 256MiB }", 1),
        ("admission: { max_in_flight: 512MiB, huge_pages: off }", 0),
        ("admission: { max_in_flight: 64MiB, huge_pages: on }", 1),
    ] {
        let cujo = Cujo::start(admission).await;
        assert_eq!(thp_enabled(cujo.pid()), Some(want), "{admission}");
        assert!(proc_status_kib(cujo.pid(), "VmRSS") > 0);
    }
}
