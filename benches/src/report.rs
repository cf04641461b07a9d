//! One run's results: printed for people, written as one JSON line, and folded from many JSON
//! lines into the markdown table of BENCHMARKS.md (medians per target and mode).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One run. Field names are the JSON keys; `scripts/bench.sh` and the table rely on them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunReport {
    pub target: String,
    pub mode: String,
    pub offered_spans_per_s: Option<f64>,
    pub clients: usize,
    pub concurrency: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Workload shape (measured on the pool).
    pub request_bytes_per_span: f64,
    pub span_message_bytes: f64,
    pub mean_spans_per_request: f64,
    /// Acknowledged inside the measured window.
    pub spans_per_s: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Target CPU (user + system) inside the window.
    pub cpu_s: Option<f64>,
    pub cpu_pct: Option<f64>,
    pub cpu_us_per_span: Option<f64>,
    /// Target VmHWM after the run, and VmRSS at the same moment.
    pub peak_rss_mib: Option<f64>,
    pub rss_end_mib: Option<f64>,
    /// The benchmark process (clients + downstream) inside the window: the target shares the
    /// machine with it.
    pub bench_cpu_pct: Option<f64>,
    pub acked_spans: u64,
    pub acked_requests: u64,
    pub flush_requests: u64,
    pub refusals: u64,
    pub transport_errors: u64,
    pub gave_up: u64,
    pub failed_requests: u64,
    pub rejected_spans: u64,
    pub downstream_spans: u64,
    pub downstream_requests: u64,
    pub downstream_malformed: u64,
    /// Downstream spans == acknowledged spans, once the target has drained.
    pub counts_match: bool,
    /// Same multiset of (trace id, span id); `None` when partial rejections make it unknowable.
    pub checksum_match: Option<bool>,
    /// From the last acknowledgement until the downstream count matched (or the deadline).
    pub drain_ms: f64,
    pub target_exit: String,
    pub first_error: Option<String>,
}

impl RunReport {
    pub fn human(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"))
        };
        let _ = writeln!(s, "== {} / {} ==", self.target, self.mode);
        if let Some(rate) = self.offered_spans_per_s {
            let _ = writeln!(s, "offered rate        {rate:.0} spans/s");
        }
        let _ = writeln!(
            s,
            "workload            {:.0} spans/request, {:.1} request bytes/span ({:.1} B span message), {} clients x {} in flight",
            self.mean_spans_per_request,
            self.request_bytes_per_span,
            self.span_message_bytes,
            self.clients,
            self.concurrency
        );
        let _ = writeln!(
            s,
            "throughput          {:.0} spans/s acknowledged ({:.0} requests/s) over {:.1} s after {:.1} s warm-up",
            self.spans_per_s, self.requests_per_s, self.duration_s, self.warmup_s
        );
        let _ = writeln!(
            s,
            "latency             p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.max_ms
        );
        let _ = writeln!(
            s,
            "target CPU          {} s = {} % of one core, {} µs per span",
            opt(self.cpu_s, 2),
            opt(self.cpu_pct, 1),
            opt(self.cpu_us_per_span, 3)
        );
        let _ = writeln!(
            s,
            "target memory       peak RSS {} MiB (RSS at end {} MiB)",
            opt(self.peak_rss_mib, 1),
            opt(self.rss_end_mib, 1)
        );
        let _ = writeln!(
            s,
            "benchmark CPU       {} % (clients + downstream, same machine)",
            opt(self.bench_cpu_pct, 1)
        );
        let _ = writeln!(
            s,
            "refusals            {} (transport errors {}, gave up {}, failed {}, partial rejections {} spans)",
            self.refusals,
            self.transport_errors,
            self.gave_up,
            self.failed_requests,
            self.rejected_spans
        );
        let _ = writeln!(
            s,
            "accounting          acknowledged {} spans in {} requests ({} flush), downstream {} spans in {} requests ({:.0}/request); counts_match: {}, checksum_match: {}, drained in {:.0} ms",
            self.acked_spans,
            self.acked_requests,
            self.flush_requests,
            self.downstream_spans,
            self.downstream_requests,
            self.downstream_spans as f64 / self.downstream_requests.max(1) as f64,
            self.counts_match,
            self.checksum_match.map_or("n/a".into(), |b| b.to_string()),
            self.drain_ms
        );
        let _ = writeln!(s, "target exit         {}", self.target_exit);
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error         {e}");
        }
        s
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The markdown table for BENCHMARKS.md: one row per (mode, target), medians over its runs,
/// and ratios against rotel in the same mode.
pub fn markdown_table(runs: &[RunReport]) -> String {
    let mode_order = |m: &str| match m {
        "saturate" => 0,
        _ => 1,
    };
    let target_order = |t: &str| match t {
        "cujo" => 0,
        "rotel" => 1,
        _ => 2,
    };
    let mut groups: BTreeMap<(u8, String, u8, String), Vec<&RunReport>> = BTreeMap::new();
    for r in runs {
        let mode = match r.offered_spans_per_s {
            Some(rate) => format!("rate {}/s", thousands(rate)),
            None => r.mode.clone(),
        };
        let key = (
            mode_order(&r.mode),
            mode,
            target_order(&r.target),
            r.target.clone(),
        );
        groups.entry(key).or_default().push(r);
    }
    struct Row {
        mode: String,
        target: String,
        runs: usize,
        spans: Option<f64>,
        p50: Option<f64>,
        p99: Option<f64>,
        cpu_pct: Option<f64>,
        cpu_us: Option<f64>,
        rss: Option<f64>,
        matched: usize,
    }
    let rows: Vec<Row> = groups
        .into_iter()
        .map(|((_, mode, _, target), rs)| {
            let med = |f: &dyn Fn(&RunReport) -> Option<f64>| {
                median(rs.iter().filter_map(|r| f(r)).collect())
            };
            Row {
                mode,
                target,
                runs: rs.len(),
                spans: med(&|r| Some(r.spans_per_s)),
                p50: med(&|r| Some(r.p50_ms)),
                p99: med(&|r| Some(r.p99_ms)),
                cpu_pct: med(&|r| r.cpu_pct),
                cpu_us: med(&|r| r.cpu_us_per_span),
                rss: med(&|r| r.peak_rss_mib),
                matched: rs
                    .iter()
                    .filter(|r| r.counts_match && r.checksum_match != Some(false))
                    .count(),
            }
        })
        .collect();
    let rotel = |mode: &str| rows.iter().find(|r| r.mode == mode && r.target == "rotel");
    let plain = |mode: &str| rows.iter().find(|r| r.mode == mode && r.target == "cujo");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| mode | target | runs | spans/s | spans/s vs rotel | vs cujo plain | p50 ms | p99 ms | CPU % | CPU µs/span | CPU/span vs rotel | peak RSS MiB | counts match |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &rows {
        let base = rotel(&r.mode);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            r.mode,
            r.target,
            r.runs,
            r.spans.map_or("–".into(), thousands),
            ratio(r.spans, base.and_then(|b| b.spans)),
            ratio(r.spans, plain(&r.mode).and_then(|b| b.spans)),
            fmt_opt(r.p50, 2),
            fmt_opt(r.p99, 2),
            fmt_opt(r.cpu_pct, 0),
            fmt_opt(r.cpu_us, 2),
            ratio(r.cpu_us, base.and_then(|b| b.cpu_us)),
            fmt_opt(r.rss, 1),
            r.matched,
            r.runs
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, mode: &str, rate: Option<f64>, spans: f64, cpu_us: f64) -> RunReport {
        RunReport {
            target: target.into(),
            mode: mode.into(),
            offered_spans_per_s: rate,
            spans_per_s: spans,
            cpu_us_per_span: Some(cpu_us),
            counts_match: true,
            ..Default::default()
        }
    }

    #[test]
    fn table_takes_medians_and_ratios_against_rotel() {
        let runs = vec![
            run("rotel", "saturate", None, 100_000.0, 4.0),
            run("cujo", "saturate", None, 300_000.0, 1.0),
            run("rotel", "saturate", None, 120_000.0, 5.0),
            run("cujo", "saturate", None, 250_000.0, 1.0),
            run("rotel", "saturate", None, 110_000.0, 6.0),
            run("cujo", "saturate", None, 260_000.0, 2.0),
            run("rotel", "rate", Some(100_000.0), 100_000.0, 4.0),
            run("cujo", "rate", Some(100_000.0), 100_000.0, 1.0),
        ];
        let table = markdown_table(&runs);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert!(
            lines[2].starts_with("| saturate | cujo | 3 | 260,000 | 2.36× |"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].starts_with("| saturate | rotel | 3 | 110,000 | 1.00× |"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].starts_with("| rate 100,000/s | cujo | 1 |"),
            "{}",
            lines[4]
        );
        assert!(lines[4].contains("| 0.25× |"), "{}", lines[4]);
        assert!(lines[2].ends_with("| 3/3 |"));
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = run("cujo", "saturate", None, 1.0, 2.0);
        let line = serde_json::to_string(&r).unwrap();
        let back: RunReport = serde_json::from_str(&line).unwrap();
        assert_eq!(back.target, "cujo");
        assert_eq!(back.cpu_us_per_span, Some(2.0));
    }
}
