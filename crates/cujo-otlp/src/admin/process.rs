//! The process's own families, as Prometheus client libraries name them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, …), and
//! `cujo_build_info{version}`, so dashboards and alerts written for any exporter work on
//! cujo too. Read from `/proc/self` on each scrape; on a system without it only
//! `cujo_build_info` is written.

use std::sync::Arc;

use super::MetricsSource;
use crate::prom;

/// Clock ticks per second of `/proc/<pid>/stat` times: Linux reports them in USER_HZ,
/// which is 100 on every architecture it exposes to user space.
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says of this process.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    start_time_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
}

/// A source writing the process families and `cujo_build_info{version}`.
pub fn source(version: &'static str) -> MetricsSource {
    Arc::new(move |out: &mut prom::Exposition| {
        prom::Family::gauge(
            out,
            "cujo_build_info",
            "Always 1; its version label is the cujo release that runs.",
        )
        .sample(&[("version", version)], 1.0);
        if let Some(stats) = read() {
            render(&stats, out);
        }
    })
}

fn render(s: &ProcessStats, out: &mut prom::Exposition) {
    prom::Family::counter(
        out,
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
    )
    .sample(&[], s.cpu_seconds);
    prom::Family::gauge(
        out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
    )
    .sample(&[], s.resident_bytes as f64);
    prom::Family::gauge(
        out,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
    )
    .sample(&[], s.virtual_bytes as f64);
    prom::Family::gauge(
        out,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds.",
    )
    .sample(&[], s.start_time_seconds);
    prom::Family::gauge(out, "process_open_fds", "Number of open file descriptors.")
        .sample(&[], s.open_fds as f64);
    if let Some(max) = s.max_fds {
        prom::Family::gauge(
            out,
            "process_max_fds",
            "Maximum number of open file descriptors.",
        )
        .sample(&[], max as f64);
    }
}

fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    parse(&stat, &status, &boot, &limits, open_fds)
}

fn parse(
    stat: &str,
    status: &str,
    boot: &str,
    limits: &str,
    open_fds: u64,
) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted
    // from after its closing parenthesis, where field 3 (state) starts.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    let boot_time: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
    Some(ProcessStats {
        cpu_seconds: (utime + stime) / USER_HZ,
        start_time_seconds: boot_time + start_ticks / USER_HZ,
        resident_bytes: kib("VmRSS:").unwrap_or(0) * 1024,
        virtual_bytes: kib("VmSize:").unwrap_or(0) * 1024,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse_into_the_standard_families() {
        let stat = "4242 (cujo (odd) name) S 1 4242 4242 0 -1 4194560 5000 0 0 0 \
                    250 50 0 0 20 0 6 0 123400 1000000 2500 18446744073709551615";
        let status = "Name:\tcujo\nVmSize:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        let boot = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            65536                1048576              files\n";
        let s = parse(stat, status, boot, limits, 12).expect("parsed");
        assert_eq!(
            s,
            ProcessStats {
                cpu_seconds: 3.0,
                start_time_seconds: 1_700_001_234.0,
                resident_bytes: 10 << 20,
                virtual_bytes: 20 << 20,
                open_fds: 12,
                max_fds: Some(65536),
            }
        );
        assert_eq!(parse("garbage", status, boot, limits, 0), None);
    }

    #[test]
    fn this_process_reports_itself() {
        let mut out = prom::Exposition::new(prom::Format::Prometheus);
        source("9.9.9")(&mut out);
        let text = out.finish();
        assert!(
            text.contains("cujo_build_info{version=\"9.9.9\"} 1"),
            "{text}"
        );
        if std::path::Path::new("/proc/self/stat").exists() {
            let rss = text
                .lines()
                .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
                .and_then(|v| v.parse::<f64>().ok())
                .expect("rss");
            assert!(rss > 1e6, "{text}");
            assert!(
                text.contains("# TYPE process_cpu_seconds_total counter"),
                "{text}"
            );
        }
    }
}
