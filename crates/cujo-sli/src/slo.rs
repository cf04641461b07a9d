//! SLO evaluation: compliance per window, error budget, burn rates, and the SRE Workbook's
//! multiwindow, multi-burn-rate alerts.
//!
//! The alert rules are the workbook's for a 30-day objective — page when 2% of the budget
//! burns in 1 hour (checked with a 5 minute short window) or 5% in 6 hours (30 minutes);
//! ticket when 10% burns in 1 day (2 hours) or 10% in 3 days (6 hours) — expressed as budget
//! fractions, so the burn-rate factors scale with the objective's period (14.4, 6, 3, 1 for
//! 30 days; 13.44, 5.6, 2.8, 0.93 for 28 days).

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
    /// Fraction of the error budget left over the objective's window (negative when overspent).
    pub budget_remaining: f64,
    pub page: bool,
    pub ticket: bool,
    /// At the last hour's burn rate, how long until the budget is gone; `None` when nothing
    /// burns (or it is already gone: then zero).
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

    /// Evaluates the objective over `counter` at `now_ms`.
    pub fn evaluate(&self, counter: &SlicedCounter, now_ms: u64) -> ObjectiveStatus {
        let counts = |w: Duration| counter.counts(now_ms, w).unwrap_or_default();
        let mut windows: Vec<Duration> = REPORTED_WINDOWS.to_vec();
        if !windows.contains(&self.window) {
            windows.push(self.window);
        }
        let sli = windows.iter().map(|w| (*w, counts(*w).ratio())).collect();
        let burn_rate: Vec<(Duration, f64)> = windows
            .iter()
            .map(|w| (*w, self.burn(counts(*w))))
            .collect();
        let burn_over = |w: Duration| self.burn(counts(w));
        let firing = |severity| {
            burn_rate_rules(self.window)
                .iter()
                .filter(|r| r.severity == severity)
                .any(|r| burn_over(r.long) > r.factor && burn_over(r.short) > r.factor)
        };
        let spent = burn_over(self.window);
        let budget_remaining = 1.0 - spent;
        let hourly = burn_over(Duration::from_secs(HOUR));
        let exhaustion = if budget_remaining <= 0.0 {
            Some(Duration::ZERO)
        } else if hourly > 0.0 {
            Some(self.window.mul_f64(budget_remaining / hourly))
        } else {
            None
        };
        ObjectiveStatus {
            sli,
            burn_rate,
            budget_remaining,
            page: firing(Severity::Page),
            ticket: firing(Severity::Ticket),
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
        let calm = obj.evaluate(&c, now);
        assert!(!calm.page && !calm.ticket);
        // A day at burn rate 0.5 has spent half of the budget of the events seen so far.
        assert!((calm.budget_remaining - 0.5).abs() < 0.01, "{calm:?}");
        let mut fired_at = None;
        for m in 0..10 {
            now = step(&mut c, 50);
            let s = obj.evaluate(&c, now);
            if s.page && fired_at.is_none() {
                fired_at = Some(m);
            }
        }
        // 1h burn after m+1 bad minutes: (m+1)*50 / 6000 / 0.001 > 14.4 from the second minute.
        assert_eq!(fired_at, Some(1));
        let during = obj.evaluate(&c, now);
        assert!(
            during
                .exhaustion
                .is_some_and(|e| e < Duration::from_secs(30 * 86400))
        );
        let mut cleared_after = None;
        for m in 0..60 {
            now = step(&mut c, 0);
            if !obj.evaluate(&c, now).page {
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
        let after = obj.evaluate(&c, now);
        let spent = 572.0 / 148_000.0 / 0.001;
        assert!(
            (after.budget_remaining - (1.0 - spent)).abs() < 0.01,
            "{after:?}"
        );
        assert!(after.ticket && !after.page);
        assert_eq!(after.exhaustion, Some(Duration::ZERO));
    }

    #[test]
    fn no_traffic_means_no_burn_and_full_budget() {
        let obj = Objective {
            target: 0.99,
            window: Duration::from_secs(28 * 86400),
        };
        let s = obj.evaluate(&SlicedCounter::new(), 1_000_000);
        assert_eq!(s.budget_remaining, 1.0);
        assert!(!s.page && !s.ticket);
        assert_eq!(s.exhaustion, None);
        assert!(s.sli.iter().all(|(_, v)| v.is_none()));
        assert_eq!(
            s.sli.last().map(|(w, _)| *w),
            Some(Duration::from_secs(28 * 86400))
        );
    }
}
