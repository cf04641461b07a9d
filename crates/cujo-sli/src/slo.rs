//! SLO evaluation: compliance per window, error budget, burn rates, and the SRE Workbook's
//! multiwindow, multi-burn-rate alerts.
//!
//! The alert rules are the workbook's for a 30-day objective — page when 2% of the budget
//! burns in 1 hour (checked with a 5 minute short window) or 5% in 6 hours (30 minutes);
//! ticket when 10% burns in 1 day (2 hours) or 10% in 3 days (6 hours) — expressed as budget
//! fractions, so the burn-rate factors scale with the objective's period (14.4, 6, 3, 1 for
//! 30 days; 13.44, 5.6, 2.8, 0.93 for 28 days).
//!
//! Cold start: a rule may fire only when its long window holds enough data to judge
//! ([`AlertGate`]: at least `min_events` valid events and `min_coverage` of the window with
//! data, see [`SlicedCounter::coverage`]); one that would fire without is reported held
//! ([`HeldAlert`]). Without valid events over a window there is no SLI for it, and without
//! any over the objective's window no budget: "no data", never a full 100%.

use std::time::Duration;

use crate::window::{Counts, SlicedCounter};

/// The windows every objective reports its SLI and burn rate over.
pub const REPORTED_WINDOWS: [Duration; 7] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(24 * 3600),
    Duration::from_secs(3 * 24 * 3600),
];

/// What a burn-rate rule's long window must hold before the rule may fire, so a new CUJ (or
/// a start without the state file) does not page on minutes of data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertGate {
    /// Valid events the long window must hold: a handful of events cannot tell a burn rate.
    pub min_events: u64,
    /// Fraction (0..=1) of the long window that must have data: a 1h burn rate read from 9
    /// minutes is the 9 minutes' error ratio, not the hour's.
    pub min_coverage: f64,
}

/// Valid events a rule's long window needs by default.
pub const DEFAULT_ALERT_MIN_EVENTS: u64 = 100;
/// Coverage a rule's long window needs by default: half of it.
pub const DEFAULT_ALERT_MIN_COVERAGE: f64 = 0.5;

impl Default for AlertGate {
    fn default() -> Self {
        Self {
            min_events: DEFAULT_ALERT_MIN_EVENTS,
            min_coverage: DEFAULT_ALERT_MIN_COVERAGE,
        }
    }
}

impl AlertGate {
    /// No gate: a rule fires on its burn rates alone.
    pub const OFF: AlertGate = AlertGate {
        min_events: 0,
        min_coverage: 0.0,
    };

    /// Whether a window of `valid` events and `coverage` holds enough data.
    pub fn admits(&self, valid: u64, coverage: f64) -> bool {
        valid >= self.min_events && coverage >= self.min_coverage
    }
}

/// A severity whose burn rates are over a rule's factor, held because the rule's long window
/// holds too little data ([`AlertGate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldAlert {
    pub severity: Severity,
    /// The rule's long window, and what it holds.
    pub long: Duration,
    pub valid: u64,
    pub coverage: f64,
}

/// An objective: `target` of valid events good over a rolling `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// e.g. 0.999 for 99.9%.
    pub target: f64,
    pub window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Page,
    Ticket,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        }
    }
}

/// One multiwindow burn-rate condition: both windows burn faster than `factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnRateRule {
    pub severity: Severity,
    pub long: Duration,
    pub short: Duration,
    pub factor: f64,
}

const HOUR: u64 = 3600;

/// The workbook's rules, scaled to `period` (the objective's window).
pub fn burn_rate_rules(period: Duration) -> [BurnRateRule; 4] {
    let rule = |severity, long_h: u64, short_min: u64, budget_fraction: f64| {
        let long = Duration::from_secs(long_h * HOUR);
        BurnRateRule {
            severity,
            long,
            short: Duration::from_secs(short_min * 60),
            factor: budget_fraction * period.as_secs_f64() / long.as_secs_f64(),
        }
    };
    [
        rule(Severity::Page, 1, 5, 0.02),
        rule(Severity::Page, 6, 30, 0.05),
        rule(Severity::Ticket, 24, 120, 0.10),
        rule(Severity::Ticket, 72, 360, 0.10),
    ]
}

/// An objective's state at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveStatus {
    /// (window, good/valid or `None` without valid events) for [`REPORTED_WINDOWS`] and the
    /// objective's own window, in that order.
    pub sli: Vec<(Duration, Option<f64>)>,
    /// (window, burn rate) for the same windows: the error ratio over the error budget
    /// (1 − target); 1.0 spends the budget exactly over the objective's window.
    pub burn_rate: Vec<(Duration, f64)>,
    /// (window, fraction of it with data: [`SlicedCounter::coverage`]) for the same windows.
    pub coverage: Vec<(Duration, f64)>,
    /// Fraction of the error budget left over the objective's window (negative when
    /// overspent); `None` without valid events over it (no data, not a full budget).
    pub budget_remaining: Option<f64>,
    pub page: bool,
    pub ticket: bool,
    /// Severities that would fire on their burn rates but are held for lack of data (at
    /// most one per severity, and never one that fires).
    pub held: Vec<HeldAlert>,
    /// At the last hour's burn rate, how long until the budget is gone; `None` when nothing
    /// burns or there is no data (or it is already gone: then zero).
    pub exhaustion: Option<Duration>,
}

impl Objective {
    fn burn(&self, c: Counts) -> f64 {
        let budget = 1.0 - self.target;
        if budget <= 0.0 {
            return if c.bad() > 0 { f64::INFINITY } else { 0.0 };
        }
        c.error_ratio() / budget
    }

    /// Evaluates the objective over `counter` at `now_ms`; a burn-rate rule fires only when
    /// its long window passes `gate`.
    pub fn evaluate(
        &self,
        counter: &SlicedCounter,
        now_ms: u64,
        gate: AlertGate,
    ) -> ObjectiveStatus {
        let counts = |w: Duration| counter.counts(now_ms, w).unwrap_or_default();
        let coverage_of = |w: Duration| counter.coverage(now_ms, w).unwrap_or_default();
        let mut windows: Vec<Duration> = REPORTED_WINDOWS.to_vec();
        if !windows.contains(&self.window) {
            windows.push(self.window);
        }
        let sli = windows.iter().map(|w| (*w, counts(*w).ratio())).collect();
        let burn_rate: Vec<(Duration, f64)> = windows
            .iter()
            .map(|w| (*w, self.burn(counts(*w))))
            .collect();
        let coverage = windows.iter().map(|w| (*w, coverage_of(*w))).collect();
        let burn_over = |w: Duration| self.burn(counts(w));
        let mut held = Vec::new();
        let mut firing = |severity| {
            let mut first_held = None;
            for r in burn_rate_rules(self.window)
                .iter()
                .filter(|r| r.severity == severity)
            {
                if !(burn_over(r.long) > r.factor && burn_over(r.short) > r.factor) {
                    continue;
                }
                let (valid, cov) = (counts(r.long).valid, coverage_of(r.long));
                if gate.admits(valid, cov) {
                    return true;
                }
                first_held.get_or_insert(HeldAlert {
                    severity,
                    long: r.long,
                    valid,
                    coverage: cov,
                });
            }
            held.extend(first_held);
            false
        };
        let page = firing(Severity::Page);
        let ticket = firing(Severity::Ticket);
        let own = counts(self.window);
        let budget_remaining = (own.valid > 0).then(|| 1.0 - self.burn(own));
        let hourly = burn_over(Duration::from_secs(HOUR));
        let exhaustion = match budget_remaining {
            None => None,
            Some(left) if left <= 0.0 => Some(Duration::ZERO),
            Some(left) if hourly > 0.0 => Some(self.window.mul_f64(left / hourly)),
            Some(_) => None,
        };
        ObjectiveStatus {
            sli,
            burn_rate,
            coverage,
            budget_remaining,
            page,
            ticket,
            held,
            exhaustion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn workbook_factors_for_30_and_28_days() {
        let f = |d: u64| {
            burn_rate_rules(Duration::from_secs(d * 86400))
                .map(|r| (r.factor * 100.0).round() / 100.0)
        };
        assert_eq!(f(30), [14.4, 6.0, 3.0, 1.0]);
        assert_eq!(f(28), [13.44, 5.6, 2.8, 0.93]);
    }

    /// 100 events a minute at 99.95% good for a day, then a 10-minute burst of 50% errors:
    /// the page fires within the burst and clears after it, as the windows say.
    #[test]
    fn page_fires_during_an_error_burst_and_clears_after() {
        let obj = Objective {
            target: 0.999,
            window: Duration::from_secs(30 * 86400),
        };
        let mut c = SlicedCounter::new();
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % (3600 * 1000);
        let mut minute = 0u64;
        let mut step = |c: &mut SlicedCounter, bad_per_100: u32| {
            let now = t0 + minute * MIN;
            c.add(now, 100 - bad_per_100, 100);
            minute += 1;
            now
        };
        let mut now = 0;
        for i in 0..(24 * 60) {
            // One bad event every 20 minutes: 0.05% errors, burn rate 0.5.
            now = step(&mut c, u32::from(i % 20 == 0));
        }
        let calm = obj.evaluate(&c, now, AlertGate::OFF);
        assert!(!calm.page && !calm.ticket);
        // A day at burn rate 0.5 has spent half of the budget of the events seen so far.
        assert!(
            calm.budget_remaining
                .is_some_and(|b| (b - 0.5).abs() < 0.01),
            "{calm:?}"
        );
        let mut fired_at = None;
        for m in 0..10 {
            now = step(&mut c, 50);
            let s = obj.evaluate(&c, now, AlertGate::OFF);
            if s.page && fired_at.is_none() {
                fired_at = Some(m);
            }
        }
        // 1h burn after m+1 bad minutes: (m+1)*50 / 6000 / 0.001 > 14.4 from the second minute.
        assert_eq!(fired_at, Some(1));
        let during = obj.evaluate(&c, now, AlertGate::OFF);
        assert!(
            during
                .exhaustion
                .is_some_and(|e| e < Duration::from_secs(30 * 86400))
        );
        let mut cleared_after = None;
        for m in 0..60 {
            now = step(&mut c, 0);
            if !obj.evaluate(&c, now, AlertGate::OFF).page {
                cleared_after = Some(m);
                break;
            }
        }
        // The (1h, 5m) rule stops 5 minutes after the burst, but the burst (500 bad in the
        // last 6 h: burn 13.9 > 6) keeps the (6h, 30m) rule firing until the 30-minute
        // window has no burst minute left: 30 minutes after the burst.
        assert_eq!(cleared_after, Some(29));
        // 572 bad of 148,000 valid (a day, the burst, 30 calm minutes) against a 0.1%
        // budget: spent almost four times over. The day's burn still opens a ticket.
        let after = obj.evaluate(&c, now, AlertGate::OFF);
        let spent = 572.0 / 148_000.0 / 0.001;
        assert!(
            after
                .budget_remaining
                .is_some_and(|b| (b - (1.0 - spent)).abs() < 0.01),
            "{after:?}"
        );
        assert!(after.ticket && !after.page);
        assert_eq!(after.exhaustion, Some(Duration::ZERO));
    }

    #[test]
    fn no_traffic_means_no_data_not_a_full_budget() {
        let obj = Objective {
            target: 0.99,
            window: Duration::from_secs(28 * 86400),
        };
        let s = obj.evaluate(&SlicedCounter::new(), 1_000_000, AlertGate::default());
        assert_eq!(s.budget_remaining, None);
        assert!(!s.page && !s.ticket && s.held.is_empty());
        assert_eq!(s.exhaustion, None);
        assert!(s.sli.iter().all(|(_, v)| v.is_none()));
        assert!(s.coverage.iter().all(|(_, c)| *c == 0.0));
        assert_eq!(
            s.sli.last().map(|(w, _)| *w),
            Some(Duration::from_secs(28 * 86400))
        );
    }

    /// A new CUJ fails every request for 9 minutes: without a gate that pages at once; with
    /// the default one the page is held (and says why) until half the hour has data.
    #[test]
    fn a_cold_start_holds_the_page_until_the_long_window_has_data() {
        let obj = Objective {
            target: 0.999,
            window: Duration::from_secs(30 * 86400),
        };
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % (3600 * 1000);
        let mut c = SlicedCounter::new();
        for m in 0..9 {
            c.add(t0 + m * MIN, 0, 20);
        }
        let now = t0 + 8 * MIN + 30_000;
        assert!(obj.evaluate(&c, now, AlertGate::OFF).page, "ungated");
        let s = obj.evaluate(&c, now, AlertGate::default());
        assert!(!s.page && !s.ticket, "{s:?}");
        assert_eq!(
            s.held.first(),
            Some(&HeldAlert {
                severity: Severity::Page,
                long: Duration::from_secs(3600),
                valid: 180,
                coverage: 9.0 / 60.0,
            })
        );
        // The budget is honest about being overspent, and the 1h window says how little of
        // it holds data.
        assert!(s.budget_remaining.is_some_and(|b| b < 0.0));
        let hour = s.coverage.iter().find(|(w, _)| w.as_secs() == 3600);
        assert_eq!(hour, Some(&(Duration::from_secs(3600), 9.0 / 60.0)));
        // Still failing at minute 30: half the hour has data and 600 events; it pages.
        for m in 9..30 {
            c.add(t0 + m * MIN, 0, 20);
        }
        let s = obj.evaluate(&c, t0 + 29 * MIN, AlertGate::default());
        assert!(s.page, "{s:?}");
        assert!(!s.held.iter().any(|h| h.severity == Severity::Page));
        // Enough coverage but too few events holds it too.
        let few = AlertGate {
            min_events: 1000,
            min_coverage: 0.0,
        };
        let s = obj.evaluate(&c, t0 + 29 * MIN, few);
        assert!(!s.page);
        assert_eq!(s.held.first().map(|h| h.valid), Some(600));
    }
}
