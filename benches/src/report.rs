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
    /// `saturate`, `rate`, or `fraction` (rate mode at a fraction of a measured saturation).
    pub mode: String,
    pub offered_spans_per_s: Option<f64>,
    /// Round of a `scripts/bench.sh` run: runs of one round are compared with each other
    /// (the "over plain" column).
    pub round: Option<u32>,
    /// `fraction` mode: the saturation throughput measured first, and the fraction of it
    /// offered.
    pub saturation_spans_per_s: Option<f64>,
    pub rate_fraction: Option<f64>,
    /// Where the counting downstream ran: `process` (`cujo-sink`) or `in-process`.
    pub downstream: String,
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
    /// The load generator (clients, and the downstream when in process) inside the window:
    /// the target shares the machine with it.
    pub bench_cpu_pct: Option<f64>,
    /// The downstream's own process (`cujo-sink`) inside the window, and its VmHWM after the
    /// run; `None` in process.
    pub sink_cpu_pct: Option<f64>,
    pub sink_peak_rss_mib: Option<f64>,
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
    /// `--poll-rate`: GETs per second asked of each admin endpoint while the load ran; `None`
    /// when nothing polled.
    pub poll_rate: Option<f64>,
    /// The label of the same run without polling: the table's per-round polled/unpolled
    /// ratio is taken against that target's run of the same round and mode.
    pub unpolled_target: Option<String>,
    /// Per polled endpoint, inside the measured window.
    pub polls: Vec<PollReport>,
}

/// One admin endpoint's polling inside the measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PollReport {
    pub path: String,
    /// Polls answered 200 with the whole body read.
    pub polls: u64,
    pub polls_per_s: f64,
    pub failed: u64,
    /// Slots skipped because the previous polls took longer than the interval.
    pub missed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Mean body size as sent (compressed when the poller asked for gzip).
    pub mean_body_bytes: f64,
    /// Mean body size inflated (equal to `mean_body_bytes` for plain answers); absent from
    /// runs recorded before the poller asked for gzip.
    pub mean_plain_bytes: Option<f64>,
    /// The poller thread's own CPU (part of `bench_cpu_pct`), % of one core.
    pub poller_cpu_pct: Option<f64>,
    pub connections: u64,
    pub first_error: Option<String>,
}

impl RunReport {
    pub fn human(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or("n/a".to_string(), |v| format!("{v:.digits$}"))
        };
        let _ = writeln!(s, "== {} / {} ==", self.target, self.mode);
        if let (Some(sat), Some(frac)) = (self.saturation_spans_per_s, self.rate_fraction) {
            let _ = writeln!(
                s,
                "saturation          {sat:.0} spans/s measured first; offering {:.0}% of it",
                frac * 100.0
            );
        }
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
        if self.downstream == "in-process" {
            let _ = writeln!(
                s,
                "benchmark CPU       {} % (clients + downstream in one process, same machine)",
                opt(self.bench_cpu_pct, 1)
            );
        } else {
            let _ = writeln!(
                s,
                "benchmark CPU       {} % (clients, same machine)",
                opt(self.bench_cpu_pct, 1)
            );
            let _ = writeln!(
                s,
                "sink                {} % CPU, peak RSS {} MiB (own process)",
                opt(self.sink_cpu_pct, 1),
                opt(self.sink_peak_rss_mib, 1)
            );
        }
        for p in &self.polls {
            let _ = writeln!(
                s,
                "polls {:<14} {} in window ({:.1}/s of {}/s asked), p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms, failed {}, missed {}, {:.0} KiB/body ({:.0} KiB inflated), poller CPU {} %, {} connection(s){}",
                p.path,
                p.polls,
                p.polls_per_s,
                self.poll_rate.unwrap_or(0.0),
                p.p50_ms,
                p.p99_ms,
                p.max_ms,
                p.failed,
                p.missed,
                p.mean_body_bytes / 1024.0,
                p.mean_plain_bytes.unwrap_or(p.mean_body_bytes) / 1024.0,
                opt(p.poller_cpu_pct, 1),
                p.connections,
                p.first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; first error: {e}"))
            );
        }
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

/// The row label of a run's mode: `saturate`, `rate 100,000/s`, `80% of saturation`.
pub fn mode_label(r: &RunReport) -> String {
    match (r.mode.as_str(), r.rate_fraction, r.offered_spans_per_s) {
        ("fraction", Some(f), _) => format!("{:.0}% of saturation", f * 100.0),
        (_, _, Some(rate)) => format!("rate {}/s", thousands(rate)),
        _ => r.mode.clone(),
    }
}

/// The markdown table for BENCHMARKS.md: one row per (mode, target), medians over its runs,
/// ratios against rotel in the same mode, and cujo's CPU per span over plain forwarding
/// (`cujo`), taken round by round when the runs say their round.
pub fn markdown_table(runs: &[RunReport]) -> String {
    let mode_order = |m: &str| match m {
        "saturate" => 0,
        "rate" => 1,
        _ => 2,
    };
    let target_order = |t: &str| match t {
        "cujo" => 0,
        "rotel" => 1,
        _ => 2,
    };
    let mut groups: BTreeMap<(u8, String, u8, String), Vec<&RunReport>> = BTreeMap::new();
    // Plain forwarding's CPU per span, by (mode label, round).
    let mut plain_cpu: BTreeMap<(String, u32), f64> = BTreeMap::new();
    for r in runs {
        let mode = mode_label(r);
        if r.target == "cujo"
            && let (Some(round), Some(cpu)) = (r.round, r.cpu_us_per_span)
        {
            plain_cpu.insert((mode.clone(), round), cpu);
        }
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
        /// Fraction mode: the rate offered (it differs per target).
        offered: Option<f64>,
        p50: Option<f64>,
        p99: Option<f64>,
        cpu_pct: Option<f64>,
        cpu_us: Option<f64>,
        /// Median over rounds of (this run's − the same round's plain run's) CPU µs/span.
        cpu_us_over_plain: Option<f64>,
        rss: Option<f64>,
        refusals: Option<f64>,
        sink_cpu_pct: Option<f64>,
        sink_rss: Option<f64>,
        matched: usize,
    }
    let rows: Vec<Row> = groups
        .into_iter()
        .map(|((_, mode, _, target), rs)| {
            let med = |f: &dyn Fn(&RunReport) -> Option<f64>| {
                median(rs.iter().filter_map(|r| f(r)).collect())
            };
            let over_plain = median(
                rs.iter()
                    .filter_map(|r| {
                        let plain = plain_cpu.get(&(mode.clone(), r.round?))?;
                        Some(r.cpu_us_per_span? - plain)
                    })
                    .collect(),
            );
            Row {
                runs: rs.len(),
                spans: med(&|r| Some(r.spans_per_s)),
                offered: med(&|r| r.rate_fraction.and(r.offered_spans_per_s)),
                p50: med(&|r| Some(r.p50_ms)),
                p99: med(&|r| Some(r.p99_ms)),
                cpu_pct: med(&|r| r.cpu_pct),
                cpu_us: med(&|r| r.cpu_us_per_span),
                cpu_us_over_plain: over_plain,
                rss: med(&|r| r.peak_rss_mib),
                refusals: med(&|r| Some(r.refusals as f64)),
                sink_cpu_pct: med(&|r| r.sink_cpu_pct),
                sink_rss: med(&|r| r.sink_peak_rss_mib),
                matched: rs
                    .iter()
                    .filter(|r| r.counts_match && r.checksum_match != Some(false))
                    .count(),
                mode,
                target,
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
        "| mode | target | runs | spans/s | spans/s vs rotel | vs cujo plain | p50 ms | p99 ms | CPU % | CPU µs/span | CPU µs/span over plain | CPU/span vs rotel | peak RSS MiB | refusals | sink CPU % | sink peak RSS MiB | counts match |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &rows {
        let base = rotel(&r.mode);
        let over_plain = match (r.target.as_str(), r.cpu_us_over_plain) {
            ("cujo" | "rotel", _) | (_, None) => "–".to_string(),
            (_, Some(d)) => format!("{d:+.2}"),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
            r.mode,
            r.target,
            r.runs,
            match (r.spans, r.offered) {
                (Some(a), Some(o)) => format!("{} of {}", thousands(a), thousands(o)),
                (a, _) => a.map_or("–".into(), thousands),
            },
            ratio(r.spans, base.and_then(|b| b.spans)),
            ratio(r.spans, plain(&r.mode).and_then(|b| b.spans)),
            fmt_opt(r.p50, 2),
            fmt_opt(r.p99, 2),
            fmt_opt(r.cpu_pct, 0),
            fmt_opt(r.cpu_us, 2),
            over_plain,
            ratio(r.cpu_us, base.and_then(|b| b.cpu_us)),
            fmt_opt(r.rss, 1),
            r.refusals.map_or("–".into(), thousands),
            fmt_opt(r.sink_cpu_pct, 0),
            fmt_opt(r.sink_rss, 1),
            r.matched,
            r.runs
        );
    }
    s.push_str(&polled_tables(runs));
    s
}

/// For runs that polled the admin endpoints while loaded (`unpolled_target` set): the ratio
/// of their throughput to the unpolled target's run of the same round and mode, round by round,
/// and what each endpoint's polls took. Empty when no run polled.
pub fn polled_tables(runs: &[RunReport]) -> String {
    let mut groups: BTreeMap<(String, String, String), Vec<&RunReport>> = BTreeMap::new();
    for r in runs {
        if let Some(base) = &r.unpolled_target {
            groups
                .entry((mode_label(r), r.target.clone(), base.clone()))
                .or_default()
                .push(r);
        }
    }
    if groups.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nPolled against unpolled: each polled run's spans/s over the unpolled target's run of the same round and mode, in round order.\n"
    );
    let _ = writeln!(
        s,
        "| mode | target | against | rounds | per-round ratios | median ratio | CPU µs/span over unpolled |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---|---:|---:|");
    for ((mode, target, base), rs) in &groups {
        let mut pairs: Vec<(u32, f64, Option<f64>)> = rs
            .iter()
            .filter_map(|r| {
                let round = r.round?;
                let b = runs.iter().find(|b| {
                    &b.target == base && b.round == Some(round) && &mode_label(b) == mode
                })?;
                (b.spans_per_s > 0.0).then(|| {
                    (
                        round,
                        r.spans_per_s / b.spans_per_s,
                        r.cpu_us_per_span.zip(b.cpu_us_per_span).map(|(p, u)| p - u),
                    )
                })
            })
            .collect();
        pairs.sort_by_key(|p| p.0);
        let ratios: Vec<String> = pairs.iter().map(|p| format!("{:.3}", p.1)).collect();
        let _ = writeln!(
            s,
            "| {mode} | {target} | {base} | {} | {} | {} | {} |",
            pairs.len(),
            if ratios.is_empty() {
                "–".to_string()
            } else {
                ratios.join(", ")
            },
            median(pairs.iter().map(|p| p.1).collect())
                .map_or("–".into(), |m| format!("{m:.3}×")),
            median(pairs.iter().filter_map(|p| p.2).collect())
                .map_or("–".into(), |d| format!("{d:+.2}")),
        );
    }
    let _ = writeln!(
        s,
        "\nPolls inside the measured window (medians over runs; max over runs; failed and missed summed):\n"
    );
    let _ = writeln!(
        s,
        "| mode | target | endpoint | runs | polls/s (asked) | p50 ms | p99 ms | max ms | failed | missed | KiB/body | KiB inflated | poller CPU % |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ((mode, target, _), rs) in &groups {
        let mut paths: Vec<&str> = Vec::new();
        for r in rs {
            for p in &r.polls {
                if !paths.contains(&p.path.as_str()) {
                    paths.push(&p.path);
                }
            }
        }
        for path in paths {
            let ps: Vec<&PollReport> = rs
                .iter()
                .flat_map(|r| r.polls.iter().filter(|p| p.path == path))
                .collect();
            let med = |f: &dyn Fn(&PollReport) -> Option<f64>| {
                median(ps.iter().filter_map(|p| f(p)).collect())
            };
            let asked = median(rs.iter().filter_map(|r| r.poll_rate).collect());
            let _ = writeln!(
                s,
                "| {mode} | {target} | {path} | {} | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
                ps.len(),
                fmt_opt(med(&|p| Some(p.polls_per_s)), 1),
                fmt_opt(asked, 0),
                fmt_opt(med(&|p| Some(p.p50_ms)), 2),
                fmt_opt(med(&|p| Some(p.p99_ms)), 2),
                fmt_opt(ps.iter().map(|p| p.max_ms).reduce(f64::max), 2),
                ps.iter().map(|p| p.failed).sum::<u64>(),
                ps.iter().map(|p| p.missed).sum::<u64>(),
                fmt_opt(med(&|p| Some(p.mean_body_bytes / 1024.0)), 0),
                fmt_opt(med(&|p| p.mean_plain_bytes.map(|b| b / 1024.0)), 0),
                fmt_opt(med(&|p| p.poller_cpu_pct), 1),
            );
        }
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
    fn cpu_over_plain_is_taken_round_by_round() {
        let in_round = |target: &str, round: u32, cpu_us: f64| RunReport {
            round: Some(round),
            ..run(target, "rate", Some(100_000.0), 100_000.0, cpu_us)
        };
        // Round 2 is slow for both targets: the per-round differences are 0.5, 0.5, 1.6,
        // while the medians alone would say 2.5 - 1.0 = 1.5.
        let runs = vec![
            in_round("cujo", 1, 1.0),
            in_round("cujo-pipeline", 1, 1.5),
            in_round("cujo", 2, 3.0),
            in_round("cujo-pipeline", 2, 3.5),
            in_round("cujo", 3, 0.9),
            in_round("cujo-pipeline", 3, 2.5),
        ];
        let table = markdown_table(&runs);
        let row = table
            .lines()
            .find(|l| l.contains("| cujo-pipeline |"))
            .unwrap();
        assert!(row.contains("| 2.50 | +0.50 |"), "{row}");
        let plain = table.lines().find(|l| l.contains("| cujo |")).unwrap();
        assert!(plain.contains("| 1.00 | – |"), "{plain}");
    }

    #[test]
    fn fraction_runs_are_labelled_by_their_fraction_and_show_refusals() {
        let r = RunReport {
            rate_fraction: Some(0.8),
            saturation_spans_per_s: Some(1_000_000.0),
            refusals: 12,
            ..run("cujo-pipeline", "fraction", Some(800_000.0), 800_000.0, 1.0)
        };
        assert_eq!(mode_label(&r), "80% of saturation");
        let table = markdown_table(&[r]);
        let row = table.lines().nth(2).unwrap();
        assert!(
            row.starts_with("| 80% of saturation | cujo-pipeline | 1 | 800,000 of 800,000 |"),
            "{row}"
        );
        assert!(row.contains("| 12 |"), "{row}");
    }

    #[test]
    fn polled_runs_are_compared_with_the_unpolled_run_of_their_round() {
        let at = |target: &str, round: u32, spans: f64| RunReport {
            round: Some(round),
            ..run(target, "saturate", None, spans, 2.0)
        };
        let polled = |round: u32, spans: f64, p99: f64| RunReport {
            poll_rate: Some(50.0),
            unpolled_target: Some("cujo-sli".into()),
            polls: vec![PollReport {
                path: "/api/v1/slos".into(),
                polls: 500,
                polls_per_s: 50.0,
                p50_ms: 10.0,
                p99_ms: p99,
                max_ms: p99 + 1.0,
                missed: 1,
                mean_body_bytes: 2048.0,
                mean_plain_bytes: Some(20480.0),
                ..Default::default()
            }],
            ..at("cujo-sli-polled", round, spans)
        };
        let runs = vec![
            at("cujo-sli", 1, 100.0),
            polled(1, 90.0, 20.0),
            at("cujo-sli", 2, 200.0),
            polled(2, 190.0, 30.0),
            at("cujo-sli", 3, 100.0),
            polled(3, 100.0, 40.0),
            // No unpolled run in round 4: left out of the ratios.
            polled(4, 50.0, 50.0),
        ];
        let table = markdown_table(&runs);
        let row = table
            .lines()
            .find(|l| l.starts_with("| saturate | cujo-sli-polled | cujo-sli |"))
            .unwrap_or_else(|| panic!("{table}"));
        assert_eq!(
            row,
            "| saturate | cujo-sli-polled | cujo-sli | 3 | 0.900, 0.950, 1.000 | 0.950× | +0.00 |"
        );
        let polls = table
            .lines()
            .find(|l| l.contains("| /api/v1/slos |"))
            .unwrap();
        assert_eq!(
            polls,
            "| saturate | cujo-sli-polled | /api/v1/slos | 4 | 50.0 (50) | 10.00 | 35.00 | 51.00 | 0 | 4 | 2 | 20 | – |"
        );
        // Without polled runs the table has no such section.
        assert!(polled_tables(&runs[..1]).is_empty());
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
