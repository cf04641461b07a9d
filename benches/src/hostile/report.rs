//! One hostile run's results: for people, as a JSON line, and as a row of the table in
//! BENCHMARKS.md ("Memory under hostile input").

use std::fmt::Write as _;

use super::drive::{DriveStats, ProbeOutcome};
use super::scenario::{Scenario, Shape};

/// Metric names (substrings) whose lines a report quotes: what was held, capped or dropped.
pub const METRIC_WORDS: &[&str] = &[
    "memory",
    "dropped",
    "truncated",
    "cap",
    "evicted",
    "overflow",
    "refused",
    "admission",
    "buffered",
    "settling",
    "released",
    "sent_spans",
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct HostileReport {
    pub scenario: Scenario,
    pub shape: Shape,
    /// The config in a few words, and the YAML appended to the generated base.
    pub config: String,
    pub cujo_yaml: String,
    /// The memory budget cujo reports, and where the figure came from.
    pub budget_bytes: Option<u64>,
    pub budget_source: String,
    /// Highest VmRSS sampled (every `sample_interval_ms`), and VmRSS when the run ended.
    pub peak_rss_mib: f64,
    pub rss_end_mib: Option<f64>,
    /// cujo's own VmHWM at the end, when it was still running.
    pub hwm_mib: Option<f64>,
    /// cujo's CPU (user + system) while the clients were sending, in % of one core.
    pub cpu_pct: Option<f64>,
    pub sample_interval_ms: u64,
    /// Highest VmRSS in each second of the run.
    pub rss_per_second_mib: Vec<f64>,
    /// Set when RSS passed the cap and cujo was killed: (seconds in, RSS MiB).
    pub killed_at: Option<(f64, f64)>,
    pub rss_cap_mib: f64,
    pub drive: DriveStats,
    /// The normal request sent after the load.
    pub probe: Option<ProbeOutcome>,
    /// What the sink received, and its own peak RSS.
    pub sink_spans: u64,
    pub sink_bytes: u64,
    pub sink_peak_rss_mib: Option<f64>,
    /// cujo's `/metrics` lines naming one of [`METRIC_WORDS`], from the last scrape that
    /// answered, and when that was (seconds since the load began).
    pub metrics: Vec<String>,
    pub metrics_at_s: Option<f64>,
    /// The largest `/metrics` text served during the run, in bytes.
    pub metrics_max_bytes: usize,
    pub target_exit: String,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl HostileReport {
    /// Whether cujo still accepted a normal request at the end.
    pub fn serves_at_end(&self) -> bool {
        self.probe.as_ref().is_some_and(|p| p.accepted)
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "== {} ({}) ==", self.scenario, self.config);
        let _ = writeln!(
            s,
            "request shape       spans {} / value bytes {}",
            self.shape.spans, self.shape.value_bytes
        );
        let _ = writeln!(
            s,
            "budget              {} ({})",
            self.budget_bytes
                .map_or("unknown".into(), |b| format!("{:.0} MiB", mib(b))),
            self.budget_source
        );
        let _ = writeln!(
            s,
            "cujo RSS            peak {:.0} MiB (VmRSS every {} ms, or VmHWM), at end {}, VmHWM {}",
            self.peak_rss_mib,
            self.sample_interval_ms,
            self.rss_end_mib
                .map_or("n/a".into(), |m| format!("{m:.0} MiB")),
            self.hwm_mib.map_or("n/a".into(), |m| format!("{m:.0} MiB"))
        );
        let _ = writeln!(
            s,
            "cujo CPU            {} % of one core while the clients sent",
            self.cpu_pct.map_or("n/a".into(), |c| format!("{c:.0}"))
        );
        if let Some((t, m)) = self.killed_at {
            let _ = writeln!(
                s,
                "KILLED              RSS {m:.0} MiB passed the {:.0} MiB cap {t:.1} s in",
                self.rss_cap_mib
            );
        }
        let per_s: Vec<String> = self
            .rss_per_second_mib
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect();
        let _ = writeln!(s, "RSS MiB per second  {}", per_s.join(" "));
        let d = &self.drive;
        let _ = writeln!(
            s,
            "requests            {} accepted ({} spans, {:.0} MiB), {} refused (retryable), {} failed, {} spans rejected in part; {:.1} s",
            d.accepted,
            d.accepted_spans,
            mib(d.accepted_bytes),
            d.refused,
            d.failed,
            d.rejected_spans,
            d.elapsed_s
        );
        if let Some(e) = &d.first_refusal {
            let _ = writeln!(s, "first refusal       {e}");
        }
        if let Some(e) = &d.first_failure {
            let _ = writeln!(s, "first failure       {e}");
        }
        let _ = writeln!(
            s,
            "sink                {} spans, {:.0} MiB received ({:.2}x the bytes accepted); peak RSS {}",
            self.sink_spans,
            mib(self.sink_bytes),
            self.sink_bytes as f64 / d.accepted_bytes.max(1) as f64,
            self.sink_peak_rss_mib
                .map_or("n/a".into(), |m| format!("{m:.0} MiB"))
        );
        let _ = writeln!(s, "serves at end       {}", self.probe_summary());
        let _ = writeln!(
            s,
            "metrics             {}",
            self.metrics_at_s
                .map_or("(no scrape answered)".into(), |t| format!(
                    "last scrape {t:.1} s after the load began; largest text {:.1} MiB",
                    mib(self.metrics_max_bytes as u64)
                ))
        );
        for line in &self.metrics {
            let _ = writeln!(s, "  {line}");
        }
        let _ = writeln!(s, "cujo exit           {}", self.target_exit);
        s
    }

    fn probe_summary(&self) -> String {
        match &self.probe {
            None => "not tried (cujo was killed)".into(),
            Some(p) if p.accepted => format!(
                "yes (accepted after {:.1} s, {} refusals, {} failures)",
                p.elapsed_s, p.refused, p.failed
            ),
            Some(p) => format!(
                "NO: not accepted within {:.0} s ({} refusals, {} failures; last: {})",
                p.elapsed_s,
                p.refused,
                p.failed,
                p.last_error.as_deref().unwrap_or("none")
            ),
        }
    }

    /// A row of the BENCHMARKS.md table: scenario, config, budget, peak RSS, RSS at end,
    /// accepted/refused, notes.
    pub fn table_row(&self) -> String {
        let budget = self
            .budget_bytes
            .map_or("?".into(), |b| format!("{:.0} MiB", mib(b)));
        let peak = match self.killed_at {
            Some(_) => format!("killed at {:.0} GiB", self.rss_cap_mib / 1024.0),
            None => format!("{:.0} MiB", self.peak_rss_mib),
        };
        let end = self
            .rss_end_mib
            .map_or("–".into(), |m| format!("{m:.0} MiB"));
        let mut notes = Vec::new();
        if let Some((t, _)) = self.killed_at {
            notes.push(format!("killed {t:.1} s in"));
        }
        if let Some(b) = self.budget_bytes
            && self.killed_at.is_none()
        {
            notes.push(format!("peak {:.1}x budget", self.peak_rss_mib / mib(b)));
        }
        notes.push(match &self.probe {
            Some(p) if p.accepted => "serves at end".to_string(),
            Some(_) => "does NOT serve at end".to_string(),
            None => "no end check".to_string(),
        });
        if self.drive.failed > 0 {
            notes.push(format!("{} requests failed", self.drive.failed));
        }
        format!(
            "| {} | {} | {} | {} | {} | {} / {} | {} |",
            self.scenario,
            self.config,
            budget,
            peak,
            end,
            self.drive.accepted,
            self.drive.refused,
            notes.join("; ")
        )
    }
}

/// The table of several runs.
pub fn hostile_table(reports: &[HostileReport]) -> String {
    let mut s = String::from(
        "| scenario | config | budget | peak RSS | RSS at end | accepted / refused | notes |\n|---|---|---:|---:|---:|---:|---|\n",
    );
    for r in reports {
        s.push_str(&r.table_row());
        s.push('\n');
    }
    s
}
