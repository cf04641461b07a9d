//! Which dimension values burn: from a CUJ's series as reported (their per-series windows),
//! each dimension value's share of the bad events beside its share of the valid events, per
//! SLI and window, the values whose bad share most exceeds their traffic share first.
//!
//! Reads only the report being built (no engine state), so it costs what the series'
//! windows already cost.

use std::collections::BTreeMap;

use crate::report::{BurnShares, CujReport, MAX_BURN_VALUES, SeriesReport, ValueShare};

/// The burn shares of `cuj` over the last hour and each objective's window, per SLI it
/// reports.
pub(super) fn burn_shares(cuj: &CujReport) -> Vec<BurnShares> {
    let mut out = Vec::new();
    for sli in &cuj.slis {
        let mut windows = vec!["1h".to_string()];
        for o in cuj.objectives.iter().filter(|o| &o.sli == sli) {
            if !windows.contains(&o.window) {
                windows.push(o.window.clone());
            }
        }
        for window in windows {
            out.push(shares(cuj, sli, &window));
        }
    }
    out
}

/// A series' (bad, valid) events of `sli` over `window`, if it reports that window.
fn counts(s: &SeriesReport, sli: &str, window: &str) -> Option<(u64, u64)> {
    let w = s.windows.iter().find(|w| w.window == window)?;
    match sli {
        "availability" => {
            let good = w.availability_good?;
            Some((w.valid.saturating_sub(good), w.valid))
        }
        _ => Some((
            w.latency_valid.saturating_sub(w.latency_good),
            w.latency_valid,
        )),
    }
}

fn shares(cuj: &CujReport, sli: &str, window: &str) -> BurnShares {
    let (mut bad, mut valid) = (0u64, 0u64);
    // (dimension index, value) → (bad, valid).
    let mut per_value: BTreeMap<(usize, &str), (u64, u64)> = BTreeMap::new();
    for s in &cuj.series {
        let Some((b, v)) = counts(s, sli, window) else {
            continue;
        };
        if v == 0 {
            continue;
        }
        bad += b;
        valid += v;
        for (i, (_, value)) in s.dimensions.iter().enumerate() {
            let e = per_value.entry((i, value.as_str())).or_default();
            e.0 += b;
            e.1 += v;
        }
    }
    let mut values: Vec<ValueShare> = if bad == 0 {
        Vec::new()
    } else {
        per_value
            .into_iter()
            .map(|((i, value), (b, v))| ValueShare {
                dimension: cuj.dimensions.get(i).cloned().unwrap_or_default(),
                value: value.to_string(),
                bad: b,
                valid: v,
                bad_share: b as f64 / bad as f64,
                traffic_share: v as f64 / valid as f64,
            })
            .collect()
    };
    // Most over its traffic share first; then most bad events; then by name, for a stable
    // order.
    values.sort_by(|a, b| {
        (b.bad_share - b.traffic_share)
            .total_cmp(&(a.bad_share - a.traffic_share))
            .then_with(|| b.bad.cmp(&a.bad))
            .then_with(|| (&a.dimension, &a.value).cmp(&(&b.dimension, &b.value)))
    });
    values.truncate(MAX_BURN_VALUES);
    BurnShares {
        sli: sli.to_string(),
        window: window.to_string(),
        bad,
        valid,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{engine, feed};

    /// `gold` is a tenth of the traffic and half the errors; `free` the rest. Gold burns
    /// (+38 points over its share), free does not (−36): gold first. Slow `team` events
    /// burn the latency SLI only.
    #[test]
    fn the_value_whose_bad_share_most_exceeds_its_traffic_share_comes_first() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        for i in 0..10 {
            feed(&mut e, "gold", i < 5, 10, now);
        }
        for i in 0..90 {
            feed(&mut e, "free", i < 5, 10, now);
        }
        for _ in 0..5 {
            feed(&mut e, "team", false, 900, now);
        }
        let r = e.report(now + 1000);
        let shares = &r.cujs[0].burn_shares;
        let labels: Vec<(&str, &str)> = shares
            .iter()
            .map(|s| (s.sli.as_str(), s.window.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("availability", "1h"),
                ("availability", "30d"),
                ("latency", "1h"),
                ("latency", "30d")
            ]
        );
        let hour = &shares[0];
        assert_eq!((hour.bad, hour.valid), (10, 105));
        let rows: Vec<(&str, u64, u64)> = hour
            .values
            .iter()
            .map(|v| (v.value.as_str(), v.bad, v.valid))
            .collect();
        // team: no bad events, 5% of the traffic (−5 pts); free: −36 pts.
        assert_eq!(rows, [("gold", 5, 10), ("team", 0, 5), ("free", 5, 90)]);
        let gold = &hour.values[0];
        assert_eq!(gold.dimension, "user.tier");
        assert_eq!(gold.bad_share, 0.5);
        assert!((gold.traffic_share - 10.0 / 105.0).abs() < 1e-12);
        let latency = &shares[2];
        assert_eq!((latency.bad, latency.valid), (5, 105));
        assert_eq!(latency.values[0].value, "team");
        assert_eq!(latency.values[0].bad_share, 1.0);
    }

    #[test]
    fn without_bad_events_no_value_is_listed() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        feed(&mut e, "gold", false, 10, now);
        let r = e.report(now);
        assert!(r.cujs[0].burn_shares.iter().all(|s| s.values.is_empty()));
        assert_eq!(r.cujs[0].burn_shares[0].valid, 1);
    }
}
