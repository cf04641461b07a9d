//! Reports: the engine's state read as plain data — [`crate::report::Report`] for the
//! status page, the status API and the deploy gate, and the objectives' states at a time
//! ([`SliEngine::objectives`], which `/metrics` reads too) — with the per-series windows,
//! the ranking by budget burned and the latency summaries they carry.
//!
//! It only reads (every method takes `&self`): it must not record, expire or settle
//! anything, nor format output (metric families are `export`'s).

use std::time::Duration;

use super::SliEngine;
use super::export::window_label;
use super::record::CujState;
use crate::cuj::Sli;
use crate::histogram::ExpHistogram;
use crate::limits::OverflowReason;
use crate::series::Series;
use crate::slo::{AlertGate, HeldAlert, ObjectiveStatus, REPORTED_WINDOWS};

impl SliEngine {
    /// The whole state as plain data, for the status page, API and deploy gate.
    pub fn report(&self, now_ms: u64) -> crate::report::Report {
        use crate::report::{CujReport, ObjectiveReport, SeriesReport, WindowReport};
        let cujs = self
            .cujs
            .iter()
            .map(|s| {
                let objectives = s
                    .cuj
                    .objectives
                    .iter()
                    .map(|(sli, obj)| {
                        let counter = match sli {
                            Sli::Availability => &s.availability,
                            Sli::Latency => &s.latency,
                        };
                        let status = obj.evaluate(counter, now_ms, s.cuj.alert_gate);
                        let windows = status
                            .sli
                            .iter()
                            .zip(&status.burn_rate)
                            .zip(&status.coverage)
                            .map(|(((w, ratio), (_, burn)), (_, coverage))| {
                                let c = counter.counts(now_ms, *w).unwrap_or_default();
                                WindowReport {
                                    window: window_label(*w),
                                    seconds: w.as_secs(),
                                    good: c.good,
                                    valid: c.valid,
                                    sli: *ratio,
                                    burn_rate: *burn,
                                    // To a hundredth of a percent, which JSON
                                    // carries exactly.
                                    coverage: (coverage * 1e4).round() / 1e4,
                                }
                            })
                            .collect();
                        let alerts_held = status
                            .held
                            .iter()
                            .map(|h| held_report(h, s.cuj.alert_gate))
                            .collect();
                        ObjectiveReport {
                            sli: sli.label().to_string(),
                            target: obj.target,
                            window: window_label(obj.window),
                            window_seconds: obj.window.as_secs(),
                            windows,
                            budget_remaining: status.budget_remaining,
                            page: status.page,
                            ticket: status.ticket,
                            alerts_held,
                            exhaustion_seconds: status.exhaustion.map(|d| d.as_secs_f64()),
                        }
                    })
                    .collect();
                let availability = s.cuj.has_sli(Sli::Availability);
                let mut ranked: Vec<(f64, SeriesReport)> = s
                    .series
                    .iter()
                    .map(|(dims, v)| {
                        let last_bad = last_bad(v);
                        (
                            s.budget_burned_1h(v, now_ms),
                            SeriesReport {
                                dimensions: s
                                    .cuj
                                    .dimensions
                                    .iter()
                                    .cloned()
                                    .zip(dims.iter().map(str::to_string))
                                    .collect(),
                                availability_good: availability.then_some(v.available_good),
                                availability_bad: availability.then_some(v.available_bad),
                                latency_good: v.latency_good,
                                latency_bad: v.latency_bad,
                                windows: s.series_windows(v, now_ms),
                                latency: latency_summary(&v.latency_hist),
                                last_bad_trace_id: last_bad.as_ref().map(|(id, _)| id.clone()),
                                last_bad_trace_url: last_bad
                                    .as_ref()
                                    .zip(self.trace_link.as_ref())
                                    .map(|((id, at), link)| link.render(id, at.unwrap_or(now_ms))),
                                last_bad_at_ms: last_bad.and_then(|(_, at)| at),
                            },
                        )
                    })
                    .collect();
                // Worst first: most budget burned over the last hour, then most bad events
                // since start, then by dimension values for a stable order.
                ranked.sort_by(|(sa, a), (sb, b)| {
                    sb.total_cmp(sa)
                        .then_with(|| {
                            (b.availability_bad.unwrap_or(0) + b.latency_bad)
                                .cmp(&(a.availability_bad.unwrap_or(0) + a.latency_bad))
                        })
                        .then_with(|| a.dimensions.cmp(&b.dimensions))
                });
                let series: Vec<SeriesReport> = ranked.into_iter().map(|(_, r)| r).collect();
                let mut report = CujReport {
                    name: s.cuj.name.clone(),
                    slis: [Sli::Availability, Sli::Latency]
                        .into_iter()
                        .filter(|sli| s.cuj.has_sli(*sli))
                        .map(|sli| sli.label().to_string())
                        .collect(),
                    dimensions: s.cuj.dimensions.clone(),
                    runbook: s.cuj.runbook.clone(),
                    latency_threshold_seconds: s.cuj.latency.as_ref().map(|(t, _)| t.as_secs_f64()),
                    latency_measure: s.cuj.latency.as_ref().map(|(_, m)| m.label().to_string()),
                    excluded: s.excluded,
                    overflowed: s.overflowed.iter().sum(),
                    overflowed_memory: s.overflowed[OverflowReason::Memory as usize],
                    dimension_values_truncated: s.truncated,
                    series_expired: s.expired,
                    series_not_restored: s.restore_skipped.iter().sum(),
                    objectives,
                    latency: latency_summary(&s.latency_all),
                    series,
                    burn_shares: Vec::new(),
                    history: s.history.iter().cloned().collect(),
                };
                report.burn_shares = super::shares::burn_shares(&report);
                report
            })
            .collect();
        crate::report::Report {
            generated_at_ms: now_ms,
            cujs,
        }
    }

    /// Objective states of every CUJ at `now_ms`: (cuj, sli, target, status).
    pub fn objectives(&self, now_ms: u64) -> Vec<(&str, Sli, f64, ObjectiveStatus)> {
        let mut out = Vec::new();
        for s in &self.cujs {
            for (sli, obj) in &s.cuj.objectives {
                let counter = match sli {
                    Sli::Availability => &s.availability,
                    Sli::Latency => &s.latency,
                };
                out.push((
                    s.cuj.name.as_str(),
                    *sli,
                    obj.target,
                    obj.evaluate(counter, now_ms, s.cuj.alert_gate),
                ));
            }
        }
        out
    }
}

impl CujState {
    /// A series' windows for the report: the reported windows and the objectives' own.
    fn series_windows(&self, series: &Series, now_ms: u64) -> Vec<crate::report::SeriesWindow> {
        let mut windows = REPORTED_WINDOWS.to_vec();
        for (_, o) in &self.cuj.objectives {
            if !windows.contains(&o.window) {
                windows.push(o.window);
            }
        }
        windows.sort();
        windows
            .into_iter()
            .filter_map(|w| {
                let c = series.windows.counts(now_ms, w)?;
                Some(crate::report::SeriesWindow {
                    window: window_label(w),
                    valid: c.valid,
                    availability_good: self
                        .cuj
                        .has_sli(Sli::Availability)
                        .then_some(c.availability_good),
                    latency_valid: c.latency_valid,
                    latency_good: c.latency_good,
                })
            })
            .collect()
    }

    /// How much of the CUJ's error budgets a series burned over the last hour, for ranking:
    /// its bad events per objective over the objective's budget fraction (the CUJ's valid
    /// count is the same for every series, so it is left out). Without objectives, its bad
    /// events.
    fn budget_burned_1h(&self, series: &Series, now_ms: u64) -> f64 {
        let c = series
            .windows
            .counts(now_ms, Duration::from_secs(3600))
            .unwrap_or_default();
        let bad = |sli: Sli| match sli {
            Sli::Availability => c.availability().bad() as f64,
            Sli::Latency => c.latency().bad() as f64,
        };
        if self.cuj.objectives.is_empty() {
            return bad(Sli::Availability) + bad(Sli::Latency);
        }
        self.cuj
            .objectives
            .iter()
            .map(|(sli, o)| bad(*sli) / (1.0 - o.target).max(f64::MIN_POSITIVE))
            .sum()
    }
}

/// The series' last bad trace (hex) and when it was recorded, known while the exemplar of
/// that event is (not after a restart).
fn last_bad(series: &Series) -> Option<(String, Option<u64>)> {
    let id = series.last_bad?;
    let at = [&series.availability_bad, &series.latency_bad_exemplar]
        .into_iter()
        .flatten()
        .filter(|e| e.trace_id == id)
        .map(|e| e.timestamp_ms)
        .max();
    Some((crate::report::trace_id_hex(&id), at))
}

/// A held alert as the report says it, with what its long window lacks in words.
fn held_report(h: &HeldAlert, gate: AlertGate) -> crate::report::HeldAlertReport {
    let window = window_label(h.long);
    let mut lacks = Vec::new();
    if h.valid < gate.min_events {
        lacks.push(format!("{} events (needs {})", h.valid, gate.min_events));
    }
    if h.coverage < gate.min_coverage {
        lacks.push(format!(
            "data over {} of it (needs {})",
            percent(h.coverage),
            percent(gate.min_coverage)
        ));
    }
    crate::report::HeldAlertReport {
        severity: h.severity.label().to_string(),
        reason: format!(
            "held for lack of data: the {window} window has {}",
            lacks.join(" and ")
        ),
        window,
        valid: h.valid,
        coverage: h.coverage,
        min_events: gate.min_events,
        min_coverage: gate.min_coverage,
    }
}

/// `15%`, `0.5%`: a fraction as people read it.
fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p >= 10.0 || p == p.round() {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Count, sum and quantiles of a histogram; absent when it holds nothing.
fn latency_summary(h: &ExpHistogram) -> Option<crate::report::LatencySummary> {
    (h.count() > 0).then(|| crate::report::LatencySummary {
        count: h.count(),
        sum_seconds: h.sum_seconds(),
        p50: h.quantile_seconds(0.5),
        p90: h.quantile_seconds(0.9),
        p99: h.quantile_seconds(0.99),
        p999: h.quantile_seconds(0.999),
        max: h.max().map(|d| d.as_secs_f64()),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::super::testkit::{Span, engine, feed, post_message, value};
    use super::super::{HISTORY_INTERVAL_MS, SliEngine};
    use crate::cuj::{Cuj, Sli, TraceFacts};
    use crate::limits::SliLimits;
    use crate::slo::AlertGate;

    #[test]
    fn the_report_carries_objectives_series_and_history() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        for i in 0..100 {
            feed(
                &mut e,
                if i < 50 { "gold" } else { "free" },
                i % 10 == 0,
                10,
                now,
            );
        }
        e.tick(now + HISTORY_INTERVAL_MS);
        let r = e.report(now + HISTORY_INTERVAL_MS);
        let cuj = &r.cujs[0];
        assert_eq!(cuj.name, "post_message");
        assert_eq!(cuj.objectives.len(), 2);
        let avail = &cuj.objectives[0];
        assert_eq!(avail.sli, "availability");
        assert_eq!(avail.window, "30d");
        let w5m = &avail.windows[0];
        assert_eq!((w5m.window.as_str(), w5m.good, w5m.valid), ("5m", 90, 100));
        assert_eq!(w5m.sli, Some(0.9));
        assert_eq!(cuj.series.len(), 2);
        assert_eq!(cuj.series[0].availability_bad, Some(5));
        assert_eq!(
            cuj.history.len(),
            2,
            "one point at the first event, one a minute later"
        );
        let json = serde_json::to_string(&r).unwrap_or_default();
        let back: crate::report::Report = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back.cujs[0].series, cuj.series);
        assert_eq!(back.cujs[0].objectives[0].windows[0], *w5m);
    }

    fn feed_ns(e: &mut SliEngine, tier: &str, error: bool, latency_ns: u64, now_ms: u64) {
        let spans = [Span {
            tier: tier.into(),
            error,
        }];
        let t = TraceFacts {
            trace_id: [2; 16],
            root: &spans[0],
            root_start_ns: 1_000,
            root_end_ns: 1_000 + latency_ns,
            spans: &spans,
            last_end_ns: 1_000 + latency_ns,
            span_bits: None,
        };
        e.observe(&t, now_ms);
    }

    /// The `q` quantile of `values` by nearest rank, the definition the histogram reports.
    fn exact_quantile(values: &[u64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let r = crate::histogram::rank(q, sorted.len() as u64) as usize;
        sorted[r - 1] as f64 / 1e9
    }

    fn assert_close(got: Option<f64>, want: f64, what: &str) {
        let got = got.unwrap_or_else(|| panic!("{what}: no value"));
        let err = (got - want).abs() / want;
        assert!(
            err <= 0.001,
            "{what}: got {got}, exact {want} (error {err})"
        );
    }

    #[test]
    fn latency_counts_are_exact_and_quantiles_within_a_tenth_of_a_percent() {
        let mut e = engine(100);
        let now = 1_700_000_000_000;
        // Durations log-uniform from 1 ms to 5 s (deterministic), every 13th an error.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut all = Vec::new();
        let mut per_tier: HashMap<&str, Vec<u64>> = HashMap::new();
        let (mut good, mut bad) = (0u64, 0u64);
        for i in 0..5000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
            let ns = (1e6f64.ln() + u * (5e9f64.ln() - 1e6f64.ln())).exp() as u64;
            let tier = ["gold", "free", "team"][(i % 3) as usize];
            feed_ns(&mut e, tier, i % 13 == 0, ns, now);
            all.push(ns);
            per_tier.entry(tier).or_default().push(ns);
            if ns <= 300_000_000 {
                good += 1;
            } else {
                bad += 1;
            }
        }
        let r = e.report(now);
        let cuj = &r.cujs[0];
        let total = cuj.latency.as_ref().expect("latency summary");
        assert_eq!(total.count, 5000);
        let exact_sum = all.iter().sum::<u64>() as f64 / 1e9;
        assert!((total.sum_seconds - exact_sum).abs() < 1e-6);
        assert_close(total.p50, exact_quantile(&all, 0.5), "p50");
        assert_close(total.p90, exact_quantile(&all, 0.9), "p90");
        assert_close(total.p99, exact_quantile(&all, 0.99), "p99");
        assert_close(total.p999, exact_quantile(&all, 0.999), "p99.9");
        assert_eq!(
            total.max,
            Some(*all.iter().max().expect("values") as f64 / 1e9)
        );
        let (series_good, series_bad) = cuj
            .series
            .iter()
            .fold((0, 0), |(g, b), s| (g + s.latency_good, b + s.latency_bad));
        assert_eq!(
            (series_good, series_bad),
            (good, bad),
            "good/bad on exact values"
        );
        for s in &cuj.series {
            let values = &per_tier[s.dimensions[0].1.as_str()];
            let l = s.latency.as_ref().expect("series latency");
            assert_eq!(l.count, values.len() as u64);
            for (q, got) in [(0.5, l.p50), (0.9, l.p90), (0.99, l.p99)] {
                assert_close(got, exact_quantile(values, q), &s.dimensions[0].1);
            }
        }
        // The OTLP view: counts exact, buckets within 160, nothing lost in the merge.
        let view = e.export_view(160);
        for s in &view[0].series {
            let n = per_tier[s.values[0].as_str()].len() as u64;
            assert_eq!(s.latency.count, n);
            assert!(s.latency.counts.len() <= 160);
            assert_eq!(
                s.latency.counts.iter().sum::<u64>() + s.latency.zero_count,
                n
            );
            assert_eq!(s.latency_good + s.latency_bad, n);
        }
        let f = e.families(now);
        let p99 = value(
            &f,
            "cujo_cuj_latency_quantile_seconds",
            "",
            &[("cuj", "post_message"), ("q", "0.99")],
        );
        assert_close(p99, exact_quantile(&all, 0.99), "/metrics p99");

        // History points carry the quantiles of their own interval only: the first point was
        // taken at the first event, the next one covers the rest.
        e.tick(now + HISTORY_INTERVAL_MS);
        let point = e.report(now).cujs[0]
            .history
            .last()
            .cloned()
            .expect("point");
        assert_close(point.p90, exact_quantile(&all[1..], 0.9), "interval p90");
        for _ in 0..100 {
            feed_ns(
                &mut e,
                "gold",
                false,
                7_000_000,
                now + HISTORY_INTERVAL_MS + 1,
            );
        }
        e.tick(now + 2 * HISTORY_INTERVAL_MS);
        let point = e.report(now).cujs[0]
            .history
            .last()
            .cloned()
            .expect("point");
        assert_close(point.p99, 0.007, "a quiet interval of 7 ms events");
        e.tick(now + 3 * HISTORY_INTERVAL_MS);
        let point = e.report(now).cujs[0]
            .history
            .last()
            .cloned()
            .expect("point");
        assert_eq!(point.p50, None, "no events, no quantile");
    }

    #[test]
    fn series_keep_their_own_windows_and_rank_by_budget_burned_in_the_last_hour() {
        // Idle series are kept, to compare a day ago with now.
        let mut e = engine(10).with_limits(SliLimits {
            series_idle_ttl: Duration::ZERO,
            ..SliLimits::default()
        });
        let day_ago = 1_700_000_000_000;
        let now = day_ago + 86_400_000;
        // "free" failed a lot a day ago; "gold" fails a little now.
        for _ in 0..50 {
            feed(&mut e, "free", true, 10, day_ago);
        }
        for i in 0..20 {
            feed(&mut e, "gold", i < 2, 10, now);
        }
        let r = e.report(now);
        let cuj = &r.cujs[0];
        let names: Vec<&str> = cuj
            .series
            .iter()
            .map(|s| s.dimensions[0].1.as_str())
            .collect();
        assert_eq!(
            names,
            ["gold", "free"],
            "the last hour decides, not the totals"
        );
        let gold = &cuj.series[0];
        let w = |label: &str| {
            gold.windows
                .iter()
                .find(|w| w.window == label)
                .cloned()
                .expect("window")
        };
        assert_eq!((w("5m").valid, w("5m").availability_good), (20, Some(18)));
        assert_eq!((w("5m").latency_valid, w("5m").latency_good), (20, 20));
        assert_eq!(w("30d").valid, 20, "the objective's window is reported too");
        let free = &cuj.series[1];
        let fw = |label: &str| {
            free.windows
                .iter()
                .find(|w| w.window == label)
                .map(|w| w.valid)
        };
        assert_eq!((fw("1h"), fw("2d"), fw("3d")), (Some(0), None, Some(50)));
    }

    const MIN: u64 = 60_000;

    /// With `slo.trace_link`, each series' last bad trace comes with its link, its range
    /// around the moment the event was recorded; without it, the id alone.
    #[test]
    fn the_last_bad_trace_comes_with_its_link() {
        let link = crate::trace_link::TraceLink::parse(
            "slo.trace_link",
            "https://ui.honeycomb.io/acme/environments/prod/trace?trace_id={trace_id}&trace_start_ts={start}&trace_end_ts={end}",
        )
        .expect("valid");
        let mut e = engine(10).with_trace_link(Some(link));
        let at = 1_700_000_000_000;
        feed(&mut e, "gold", true, 10, at);
        feed(&mut e, "free", false, 10, at);
        let r = e.report(at + MIN);
        let gold = &r.cujs[0].series[0];
        let id = "01".repeat(16);
        assert_eq!(gold.last_bad_trace_id.as_deref(), Some(id.as_str()));
        assert_eq!(gold.last_bad_at_ms, Some(at));
        assert_eq!(
            gold.last_bad_trace_url.as_deref(),
            Some(
                format!(
                    "https://ui.honeycomb.io/acme/environments/prod/trace?trace_id={id}&trace_start_ts=1699996400&trace_end_ts=1700000060"
                )
                .as_str()
            )
        );
        let free = &r.cujs[0].series[1];
        assert_eq!(
            (&free.last_bad_trace_id, &free.last_bad_trace_url),
            (&None, &None)
        );
        let plain = engine(10);
        let mut plain = plain;
        feed(&mut plain, "gold", true, 10, at);
        let r = plain.report(at);
        assert!(r.cujs[0].series[0].last_bad_trace_id.is_some());
        assert_eq!(r.cujs[0].series[0].last_bad_trace_url, None);
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(!json.contains("last_bad_trace_url"), "{json}");
    }

    /// A CUJ seen for the first time (no state file) fails every request for 9 minutes:
    /// no page, and the report says the page is held and how little of the hour has data.
    /// Failing on to minute 30 (half the hour), it pages.
    #[test]
    fn a_new_cuj_does_not_page_on_minutes_of_data() {
        let mut e = SliEngine::new(vec![Cuj {
            alert_gate: AlertGate::default(),
            ..post_message(10)
        }]);
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % (3600 * 1000);
        let fail_minute = |e: &mut SliEngine, m: u64| {
            for i in 0..20 {
                feed(e, "gold", true, 10, t0 + m * MIN + i * 1000);
            }
        };
        for m in 0..9 {
            fail_minute(&mut e, m);
        }
        let now = t0 + 8 * MIN + 30_000;
        let r = e.report(now);
        let avail = &r.cujs[0].objectives[0];
        assert_eq!(avail.sli, "availability");
        assert!(!avail.page && !avail.ticket, "{avail:?}");
        let held = &avail.alerts_held[0];
        assert_eq!(
            (held.severity.as_str(), held.window.as_str()),
            ("page", "1h")
        );
        assert_eq!(
            held.reason,
            "held for lack of data: the 1h window has data over 15% of it (needs 50%)"
        );
        let hour = avail.windows.iter().find(|w| w.window == "1h").expect("1h");
        assert_eq!((hour.valid, hour.coverage), (180, 0.15));
        let month = avail.windows.last().expect("30d");
        assert_eq!(month.window, "30d");
        assert_eq!(month.coverage, 0.0014, "{month:?}");
        let f = e.families(now);
        let alert = |f: &[super::super::Family], name: &str| {
            value(
                f,
                name,
                "",
                &[("sli", "availability"), ("severity", "page")],
            )
        };
        assert_eq!(alert(&f, "cujo_slo_alert"), Some(0.0));
        assert_eq!(alert(&f, "cujo_slo_alert_held"), Some(1.0));
        assert_eq!(
            value(
                &f,
                "cujo_slo_window_coverage_ratio",
                "",
                &[("sli", "availability"), ("window", "1h")]
            ),
            Some(0.15)
        );
        for m in 9..30 {
            fail_minute(&mut e, m);
        }
        let now = t0 + 29 * MIN + 30_000;
        let avail = &e.report(now).cujs[0].objectives[0];
        assert!(avail.page, "{avail:?}");
        assert!(avail.alerts_held.iter().all(|h| h.severity != "page"));
        assert_eq!(alert(&e.families(now), "cujo_slo_alert"), Some(1.0));
    }

    /// Without events there is no SLI, no budget and no alert: "no data", not 100%.
    #[test]
    fn no_events_report_no_data() {
        let e = engine(10);
        let now = 1_700_000_000_000;
        let r = e.report(now);
        for o in &r.cujs[0].objectives {
            assert!(
                o.windows
                    .iter()
                    .all(|w| w.sli.is_none() && w.coverage == 0.0)
            );
            assert_eq!(o.budget_remaining, None);
            assert!(!o.page && !o.ticket && o.alerts_held.is_empty());
        }
        let f = e.families(now);
        for name in [
            "cujo_slo_sli_ratio",
            "cujo_slo_error_budget_remaining_ratio",
        ] {
            let family = f.iter().find(|f| f.name == name).expect(name);
            assert!(family.samples.is_empty(), "{name}: {:?}", family.samples);
        }
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert!(json["cujs"][0]["objectives"][0]["budget_remaining"].is_null());
    }

    /// A CUJ configuring only latency reports and exports no availability.
    #[test]
    fn a_latency_only_cuj_reports_and_exports_no_availability() {
        let base = post_message(10);
        let latency_only = Cuj {
            bad: vec![],
            objectives: vec![base.objectives[1]],
            ..base
        };
        assert!(!latency_only.has_sli(Sli::Availability));
        assert!(latency_only.has_sli(Sli::Latency));
        let mut e = SliEngine::new(vec![latency_only]);
        let now = 1_700_000_000_000;
        feed(&mut e, "gold", true, 10, now);
        feed(&mut e, "gold", false, 900, now);
        let r = e.report(now);
        let cuj = &r.cujs[0];
        assert_eq!(cuj.slis, ["latency"]);
        assert_eq!(cuj.objectives.len(), 1);
        let s = &cuj.series[0];
        assert_eq!((s.availability_good, s.availability_bad), (None, None));
        assert_eq!((s.latency_good, s.latency_bad), (1, 1));
        assert!(s.windows.iter().all(|w| w.availability_good.is_none()));
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(!json.contains("availability"), "{json}");
        let f = e.families(now);
        let samples: Vec<_> = f
            .iter()
            .flat_map(|f| f.samples.iter())
            .filter(|s| s.labels.iter().any(|(_, v)| v == "availability"))
            .collect();
        assert!(samples.is_empty(), "{samples:?}");
        assert_eq!(
            value(
                &f,
                "cujo_sli_events_total",
                "",
                &[("sli", "latency"), ("outcome", "bad")]
            ),
            Some(1.0)
        );
        let view = e.export_view(160);
        assert!(!view[0].has_availability && view[0].has_latency);
    }
}
