//! Alert transitions: successive [`Report`]s in, the alerts that started or ended between
//! them out. Pure (no clock of its own, no I/O): the report's `generated_at_ms` is the time.
//!
//! Only transitions are returned, never a state already notified. A resolution is held back
//! until the alert has stayed clear for `resolve_delay`; if it fires again within that time
//! it is the same alert still (same `started_at`, same `dedup_key`) and nothing is returned,
//! so a flapping alert makes one firing and one resolved notification.
//!
//! A ticket does not start while the page of the same objective is firing (the page says
//! it already, more loudly); one that still fires when the page resolves starts then. A
//! ticket already firing when the page starts goes on as it was.

use std::collections::HashMap;
use std::time::Duration;

use cujo_sli::report::{CujReport, ObjectiveReport, Report};
use cujo_sli::slo::Severity;
use cujo_sli::state::SavedAlert;

/// Whether an alert started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn label(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert changing state, with the objective's numbers at that evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: AlertStatus,
    pub severity: Severity,
    pub cuj: String,
    /// `availability` or `latency`.
    pub sli: String,
    pub target: f64,
    /// The objective's window as a label (`30d`).
    pub window: String,
    /// (window label, burn rate), shortest window first.
    pub burn_rates: Vec<(String, f64)>,
    pub budget_remaining: f64,
    pub exhaustion_seconds: Option<f64>,
    /// When the alert was first seen firing (ms since the Unix epoch); stable for its life.
    pub started_at_ms: u64,
    /// When it was first seen clear, for a resolution.
    pub resolved_at_ms: Option<u64>,
    /// What burns, when firing: the dimension values of the worst series with bad events of
    /// this SLI (the report ranks series by budget burned over the last hour), and its
    /// last bad trace; empty or absent on a resolution.
    pub worst: Vec<(String, String)>,
    pub last_bad_trace_id: Option<String>,
    /// That trace in the tracing backend (`slo.trace_link`).
    pub last_bad_trace_url: Option<String>,
    /// The CUJ's runbook (`cujs[].runbook`).
    pub runbook: Option<String>,
    /// The CUJ's place in the report, which is its section of the status page (`#cuj-N`).
    pub cuj_index: usize,
}

impl Transition {
    /// Identifies the alert (not the attempt): the same for every retry of this transition
    /// and for the firing and resolved notifications of one alert.
    pub fn dedup_key(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.cuj,
            self.sli,
            self.window,
            self.severity.label(),
            self.started_at_ms
        )
    }

    pub(super) fn burn(&self, window: &str) -> Option<f64> {
        self.burn_rates
            .iter()
            .find(|(w, _)| w == window)
            .map(|(_, b)| *b)
    }
}

/// (cuj, sli, objective window, severity).
type AlertKey = (String, String, String, &'static str);

#[derive(Debug, Clone, Copy)]
struct Active {
    started_at_ms: u64,
    /// Set while the alert is clear but its resolution is held back.
    clear_since_ms: Option<u64>,
}

/// Turns successive reports into alert transitions.
#[derive(Debug, Default)]
pub struct AlertTracker {
    resolve_delay_ms: u64,
    /// Alerts notified as firing and not yet as resolved.
    active: HashMap<AlertKey, Active>,
    /// Alerts taken from a state file not yet checked against a report: those of an
    /// objective no longer configured are forgotten at the first one.
    unchecked: bool,
}

impl AlertTracker {
    pub fn new(resolve_delay: Duration) -> Self {
        Self {
            resolve_delay_ms: resolve_delay.as_millis() as u64,
            active: HashMap::new(),
            unchecked: false,
        }
    }

    /// The alerts notified as firing (and not yet as resolved), for the state file.
    pub fn saved(&self) -> Vec<SavedAlert> {
        let mut out: Vec<SavedAlert> = self
            .active
            .iter()
            .map(|((cuj, sli, window, severity), a)| SavedAlert {
                cuj: cuj.clone(),
                sli: sli.clone(),
                window: window.clone(),
                severity: (*severity).to_string(),
                started_at_ms: a.started_at_ms,
                clear_since_ms: a.clear_since_ms,
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.cuj, &a.sli, &a.window, &a.severity).cmp(&(&b.cuj, &b.sli, &b.window, &b.severity))
        });
        out
    }

    /// Takes back alerts notified as firing before a restart ([`AlertTracker::saved`]): one
    /// still firing is not notified again, one that cleared meanwhile is resolved under its
    /// first `started_at` (the same `dedup_key`). Entries of an unknown severity are skipped.
    pub fn restore(&mut self, alerts: Vec<SavedAlert>) {
        for a in alerts {
            let Some(severity) = [Severity::Page, Severity::Ticket]
                .into_iter()
                .map(Severity::label)
                .find(|l| *l == a.severity)
            else {
                continue;
            };
            self.active.insert(
                (a.cuj, a.sli, a.window, severity),
                Active {
                    started_at_ms: a.started_at_ms,
                    clear_since_ms: a.clear_since_ms,
                },
            );
            self.unchecked = true;
        }
    }

    /// Alerts currently notified as firing.
    pub fn firing(&self) -> usize {
        self.active.len()
    }

    /// The transitions since the previous report, in report order (CUJ, objective, page
    /// before ticket). `report.generated_at_ms` is the clock.
    pub fn update(&mut self, report: &Report) -> Vec<Transition> {
        if std::mem::take(&mut self.unchecked) {
            self.forget_unknown(report);
        }
        let now = report.generated_at_ms;
        let mut out = Vec::new();
        for (index, cuj) in report.cujs.iter().enumerate() {
            for obj in &cuj.objectives {
                // Whether this objective's page is notified as firing (clear but not yet
                // resolved included): a ticket does not start while it is.
                let mut paging = false;
                for (severity, firing) in
                    [(Severity::Page, obj.page), (Severity::Ticket, obj.ticket)]
                {
                    let key: AlertKey = (
                        cuj.name.clone(),
                        obj.sli.clone(),
                        obj.window.clone(),
                        severity.label(),
                    );
                    let transition = |status, started_at_ms, resolved_at_ms| {
                        transition(
                            (index, cuj),
                            obj,
                            severity,
                            status,
                            started_at_ms,
                            resolved_at_ms,
                        )
                    };
                    match (self.active.get_mut(&key), firing) {
                        (None, false) => {}
                        // Suppressed: the page of the same objective says it already. If
                        // the ticket still fires once the page resolves, it starts then.
                        (None, true) if severity == Severity::Ticket && paging => {}
                        (None, true) => {
                            self.active.insert(
                                key.clone(),
                                Active {
                                    started_at_ms: now,
                                    clear_since_ms: None,
                                },
                            );
                            out.push(transition(AlertStatus::Firing, now, None));
                        }
                        (Some(active), true) => active.clear_since_ms = None,
                        (Some(active), false) => {
                            let since = *active.clear_since_ms.get_or_insert(now);
                            if now.saturating_sub(since) >= self.resolve_delay_ms {
                                let started = active.started_at_ms;
                                self.active.remove(&key);
                                out.push(transition(AlertStatus::Resolved, started, Some(since)));
                            }
                        }
                    }
                    if severity == Severity::Page {
                        paging = self.active.contains_key(&key);
                    }
                }
            }
        }
        out
    }
}

impl AlertTracker {
    /// Forgets restored alerts whose objective `report` does not have (its CUJ or
    /// objective was removed from the config): nothing will ever resolve them.
    fn forget_unknown(&mut self, report: &Report) {
        self.active.retain(|(cuj, sli, window, severity), _| {
            let known = report.cujs.iter().any(|c| {
                &c.name == cuj
                    && c.objectives
                        .iter()
                        .any(|o| &o.sli == sli && &o.window == window)
            });
            if !known {
                tracing::info!(
                    %cuj, %sli, %window, severity,
                    "an alert restored from the SLO state file has no objective any more: forgotten"
                );
            }
            known
        });
    }
}

fn transition(
    (cuj_index, cuj): (usize, &CujReport),
    obj: &ObjectiveReport,
    severity: Severity,
    status: AlertStatus,
    started_at_ms: u64,
    resolved_at_ms: Option<u64>,
) -> Transition {
    // The worst series burning this objective's SLI, on a firing only.
    let worst = (status == AlertStatus::Firing)
        .then(|| {
            cuj.series.iter().find(|s| match obj.sli.as_str() {
                "availability" => s.availability_bad.unwrap_or(0) > 0,
                _ => s.latency_bad > 0,
            })
        })
        .flatten();
    Transition {
        worst: worst.map(|s| s.dimensions.clone()).unwrap_or_default(),
        last_bad_trace_id: worst.and_then(|s| s.last_bad_trace_id.clone()),
        last_bad_trace_url: worst.and_then(|s| s.last_bad_trace_url.clone()),
        runbook: cuj.runbook.clone(),
        cuj_index,
        status,
        severity,
        cuj: cuj.name.clone(),
        sli: obj.sli.clone(),
        target: obj.target,
        window: obj.window.clone(),
        burn_rates: obj
            .windows
            .iter()
            .map(|w| (w.window.clone(), w.burn_rate))
            .collect(),
        budget_remaining: obj.budget_remaining.unwrap_or(1.0),
        exhaustion_seconds: obj.exhaustion_seconds,
        started_at_ms,
        resolved_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cujo_sli::condition::{Scalar, SpanFacts, StatusCode};
    use cujo_sli::cuj::TraceFacts;
    use cujo_sli::engine::SliEngine;

    const MIN: u64 = 60_000;

    struct Root {
        error: bool,
    }

    impl SpanFacts for Root {
        fn name(&self) -> &str {
            "POST /v1/messages"
        }
        fn service(&self) -> &str {
            "frontend-api"
        }
        fn status(&self) -> StatusCode {
            if self.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            }
        }
        fn attribute(&self, _key: &str) -> Option<Scalar<'_>> {
            None
        }
    }

    /// The CUJ as a user writes it: 99.9% available over 30 days.
    fn engine() -> SliEngine {
        SliEngine::new(crate::cujs::from_yaml(
            r#"
cujs:
  - name: post_message
    match: { span.name: "POST /v1/messages" }
    availability: { bad: [ { status: error } ] }
    objectives: [ { sli: availability, target: 99.9%, window: 30d } ]
"#,
        ))
    }

    /// One minute of traffic: 100 traces, `bad` of them errors, observed at `now`.
    fn minute(e: &mut SliEngine, now: u64, bad: u32) {
        for i in 0..100 {
            let root = Root { error: i < bad };
            let trace = TraceFacts {
                trace_id: [7; 16],
                root: &root,
                root_start_ns: 0,
                root_end_ns: 1_000_000,
                spans: std::slice::from_ref(&root),
                last_end_ns: 1_000_000,
                span_bits: None,
            };
            e.observe(&trace, now);
        }
    }

    fn page(ts: &[(u64, Transition)]) -> Vec<(u64, &Transition)> {
        ts.iter()
            .filter(|(_, t)| t.severity == Severity::Page)
            .map(|(at, t)| (*at, t))
            .collect()
    }

    /// Two calm hours, a 10-minute burst of 50% errors, then calm again, evaluated every
    /// minute on an injected clock: the page fires once in the burst and resolves once when
    /// the windows have rolled past it (later by `resolve_delay`), the ticket keeps firing.
    #[test]
    fn an_error_burst_fires_the_page_once_and_resolves_it_as_the_windows_roll() {
        let mut e = engine();
        let mut prompt = AlertTracker::new(Duration::ZERO);
        let mut delayed = AlertTracker::new(Duration::from_secs(300));
        let (mut seen_prompt, mut seen_delayed) = (Vec::new(), Vec::new());
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % (3600 * 1000);
        let mut page_clear_from = None;
        for m in 0..240u64 {
            let now = t0 + m * MIN;
            let burst = (120..130).contains(&m);
            minute(&mut e, now, if burst { 50 } else { 0 });
            let report = e.report(now);
            let firing = report.cujs[0].objectives[0].page;
            if m > 130 && !firing && page_clear_from.is_none() {
                page_clear_from = Some(now);
            }
            seen_prompt.extend(prompt.update(&report).into_iter().map(|t| (now, t)));
            seen_delayed.extend(delayed.update(&report).into_iter().map(|t| (now, t)));
            // Evaluating again at the same instant changes nothing: a state is notified once.
            assert!(prompt.update(&report).is_empty());
        }
        let cleared = page_clear_from.expect("the page clears after the burst");

        let pages = page(&seen_prompt);
        assert_eq!(pages.len(), 2, "one firing, one resolved: {pages:#?}");
        let (fired_at, firing) = pages[0];
        assert_eq!(firing.status, AlertStatus::Firing);
        // 1h burn after two bad minutes: 100 / 6000 / 0.001 = 16.7 > 14.4 (and 5m far above).
        assert_eq!(fired_at, t0 + 121 * MIN);
        assert_eq!(firing.started_at_ms, fired_at);
        assert!(firing.burn("1h").is_some_and(|b| b > 14.4), "{firing:?}");
        assert!(firing.budget_remaining < 1.0);
        let (resolved_at, resolved) = pages[1];
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved_at, cleared);
        assert_eq!(resolved.resolved_at_ms, Some(cleared));
        assert_eq!(resolved.dedup_key(), firing.dedup_key());
        assert_eq!(
            firing.dedup_key(),
            format!("post_message/availability/30d/page/{fired_at}")
        );
        // The (6h, 30m) rule holds the page until the 30-minute window is past the burst.
        assert!(
            cleared >= t0 + 150 * MIN && cleared <= t0 + 161 * MIN,
            "{cleared}"
        );

        let delayed_pages = page(&seen_delayed);
        assert_eq!(delayed_pages.len(), 2, "{delayed_pages:#?}");
        assert_eq!(delayed_pages[0].1, firing);
        assert_eq!(delayed_pages[1].0, cleared + 5 * MIN);
        assert_eq!(delayed_pages[1].1.resolved_at_ms, Some(cleared));

        // A day's 1% error ratio opens a ticket that outlives the page.
        let tickets: Vec<_> = seen_prompt
            .iter()
            .filter(|(_, t)| t.severity == Severity::Ticket)
            .collect();
        assert_eq!(tickets.len(), 1, "{tickets:#?}");
        assert_eq!(tickets[0].1.status, AlertStatus::Firing);
        // In the burst's first minute, before the page: an open ticket goes on when the page
        // starts (it is not resolved nor notified again).
        assert_eq!(tickets[0].0, t0 + 120 * MIN, "{tickets:#?}");
        assert_eq!(prompt.firing(), 1);
    }

    /// Reports whose page and ticket alerts are set by hand.
    fn both(e: &SliEngine, now: u64, page: bool, ticket: bool) -> Report {
        let mut r = e.report(now);
        r.cujs[0].objectives[0].page = page;
        r.cujs[0].objectives[0].ticket = ticket;
        r
    }

    #[test]
    fn a_ticket_waits_while_the_page_of_its_objective_fires() {
        let e = engine();
        let mut tracker = AlertTracker::new(Duration::ZERO);
        let t = 1_700_000_000_000;
        let fired = tracker.update(&both(&e, t, true, true));
        let severities: Vec<_> = fired.iter().map(|t| (t.severity, t.status)).collect();
        assert_eq!(severities, [(Severity::Page, AlertStatus::Firing)]);
        assert!(tracker.update(&both(&e, t + MIN, true, true)).is_empty());
        // The page resolves, the ticket still fires: it starts now.
        let next = tracker.update(&both(&e, t + 2 * MIN, false, true));
        let severities: Vec<_> = next.iter().map(|t| (t.severity, t.status)).collect();
        assert_eq!(
            severities,
            [
                (Severity::Page, AlertStatus::Resolved),
                (Severity::Ticket, AlertStatus::Firing)
            ]
        );
        assert_eq!(next[1].started_at_ms, t + 2 * MIN);
        // A ticket already firing goes on when a page starts, and resolves on its own.
        let paged = tracker.update(&both(&e, t + 3 * MIN, true, true));
        assert_eq!(paged.len(), 1);
        assert_eq!(paged[0].severity, Severity::Page);
        let out = tracker.update(&both(&e, t + 4 * MIN, true, false));
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].severity, out[0].status),
            (Severity::Ticket, AlertStatus::Resolved)
        );
    }

    /// A firing names the worst series burning its SLI (the report's order), that series'
    /// last bad trace and link, the CUJ's runbook and its place on the page.
    #[test]
    fn a_firing_carries_the_worst_series_its_trace_and_the_runbook() {
        let mut e = SliEngine::new(crate::cujs::from_yaml(
            r#"
cujs:
  - name: other
  - name: post_message
    match: { span.name: "POST /v1/messages" }
    dimensions: [user.tier]
    availability: { bad: [ { status: error } ] }
    objectives: [ { sli: availability, target: 99.9%, window: 30d } ]
    runbook: https://wiki.example.com/runbooks/post_message
"#,
        ))
        .with_trace_link(
            cujo_sli::trace_link::TraceLink::parse("k", "https://jaeger.example/trace/{trace_id}")
                .ok(),
        );
        let now = 1_700_000_000_000;
        minute(&mut e, now, 0);
        let mut r = e.report(now);
        let cuj = &mut r.cujs[1];
        // Two series as the report would rank them: one with bad events second.
        let mut free = cuj.series[0].clone();
        free.dimensions = vec![("user.tier".into(), "free".into())];
        free.availability_bad = Some(7);
        free.last_bad_trace_id = Some("ab".repeat(16));
        free.last_bad_trace_url = Some(format!("https://jaeger.example/trace/{}", "ab".repeat(16)));
        cuj.series.push(free);
        cuj.objectives[0].page = true;
        let mut tracker = AlertTracker::new(Duration::ZERO);
        let fired = tracker.update(&r);
        assert_eq!(fired.len(), 1);
        let t = &fired[0];
        assert_eq!(t.cuj_index, 1);
        assert_eq!(t.worst, [("user.tier".to_string(), "free".to_string())]);
        assert_eq!(t.last_bad_trace_id, Some("ab".repeat(16)));
        assert_eq!(
            t.last_bad_trace_url.as_deref(),
            Some(format!("https://jaeger.example/trace/{}", "ab".repeat(16)).as_str())
        );
        assert_eq!(
            t.runbook.as_deref(),
            Some("https://wiki.example.com/runbooks/post_message")
        );
        r.cujs[1].objectives[0].page = false;
        let resolved = tracker.update(&r);
        assert!(resolved[0].worst.is_empty() && resolved[0].last_bad_trace_id.is_none());
        assert!(resolved[0].runbook.is_some());
    }

    /// Reports whose page alert is set by hand.
    fn flagged(e: &SliEngine, now: u64, page: bool) -> Report {
        let mut r = e.report(now);
        r.cujs[0].objectives[0].page = page;
        r.cujs[0].objectives[0].ticket = false;
        r
    }

    #[test]
    fn a_flap_within_resolve_delay_is_the_same_alert() {
        let e = engine();
        let mut tracker = AlertTracker::new(Duration::from_secs(300));
        let t = 1_700_000_000_000;
        let fired = tracker.update(&flagged(&e, t, true));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, AlertStatus::Firing);
        // Clear for two minutes, firing again, clear again: nothing to say yet.
        for (at, page) in [(1, false), (3, false), (4, true), (5, false), (9, false)] {
            let out = tracker.update(&flagged(&e, t + at * MIN, page));
            assert!(out.is_empty(), "minute {at}: {out:?}");
        }
        // Clear since minute 5: resolved at minute 10, once, under the first alert's key.
        let resolved = tracker.update(&flagged(&e, t + 10 * MIN, false));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].resolved_at_ms, Some(t + 5 * MIN));
        assert_eq!(resolved[0].dedup_key(), fired[0].dedup_key());
        assert!(tracker.update(&flagged(&e, t + 11 * MIN, false)).is_empty());
        // Firing after the resolution is a new alert with a new key.
        let again = tracker.update(&flagged(&e, t + 20 * MIN, true));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].started_at_ms, t + 20 * MIN);
        assert_ne!(again[0].dedup_key(), fired[0].dedup_key());
    }

    /// A restart in the middle of an alert: the tracker saved before it and restored after
    /// it neither notifies the firing again nor forgets to resolve it, under its first key;
    /// an alert of an objective gone from the config is forgotten.
    #[test]
    fn a_restored_alert_is_not_notified_again_and_resolves_under_its_key() {
        let e = engine();
        let t = 1_700_000_000_000;
        let mut before = AlertTracker::new(Duration::ZERO);
        let fired = before.update(&flagged(&e, t, true));
        assert_eq!(fired.len(), 1);
        let mut saved = before.saved();
        assert_eq!(saved.len(), 1);
        assert_eq!(
            (saved[0].severity.as_str(), saved[0].started_at_ms),
            ("page", t)
        );
        saved.push(SavedAlert {
            cuj: "removed_journey".into(),
            ..saved[0].clone()
        });
        saved.push(SavedAlert {
            severity: "sev0".into(),
            ..saved[0].clone()
        });
        let mut after = AlertTracker::new(Duration::ZERO);
        after.restore(saved);
        assert!(after.update(&flagged(&e, t + MIN, true)).is_empty());
        assert_eq!(after.firing(), 1, "the unknown objective is forgotten");
        let resolved = after.update(&flagged(&e, t + 2 * MIN, false));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(resolved[0].dedup_key(), fired[0].dedup_key());
        assert!(after.saved().is_empty());
    }
}
