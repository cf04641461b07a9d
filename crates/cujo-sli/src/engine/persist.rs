//! Persistence: the engine's state saved to and restored from the SLO state file, so
//! objectives keep their history across restarts (the file format is [`crate::state`]).
//!
//! The windows are always restored. The cumulative totals (event counts, latency buckets and
//! histograms, exported as counters) only from a file saved at a clean shutdown: then they
//! continue exactly where `/metrics` and the OTLP push left them. A periodic save may be
//! older than what was last scraped, and a counter that goes back reads as a reset counting
//! everything again, so after a crash the totals start from zero, as a restarted exporter's
//! do. The budget chart's history is restored either way.
//!
//! What one CUJ's saved series may take back, within `max_series` and the byte limit, is
//! weighed in `memory` (`SliEngine::restore_cuj`); this file only encodes, decodes and
//! finds each saved CUJ by name. It must not record events or touch the settling traces.

use super::SliEngine;
use super::replay::SaveMark;
use crate::state::{CujTotals, SavedAlert, SeriesCounts, StateError, Writer};

/// What a state file gave back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Restored {
    /// CUJs found in the file and in the config.
    pub cujs: usize,
    /// Whether the cumulative totals were restored (a file saved at a clean shutdown).
    pub totals: bool,
    /// The alerts notified as firing when it was saved.
    pub alerts: Vec<SavedAlert>,
    /// Keys of counted events the file listed (a write-ahead log's replay skips them).
    pub counted: usize,
}

impl SliEngine {
    /// When the cumulative totals began (ms since the Unix epoch): as set by
    /// [`SliEngine::set_counting_since`], or the saved start when a file's totals were
    /// restored; 0 if never told.
    pub fn counting_since_ms(&self) -> u64 {
        self.counting_since_ms
    }

    /// Sets when the cumulative totals begin: the process start.
    pub fn set_counting_since(&mut self, ms: u64) {
        self.counting_since_ms = ms;
    }

    /// Every CUJ's state, encoded for the state file, as a periodic save writes it (not
    /// clean, no alerts).
    pub fn save_state(&mut self) -> Vec<u8> {
        self.save_state_with(false, &[])
    }

    /// Every CUJ's state and `alerts`, encoded for the state file; `clean` when nothing
    /// will be recorded after it (the save at shutdown).
    pub fn save_state_with(&mut self, clean: bool, alerts: &[SavedAlert]) -> Vec<u8> {
        self.save_state_marked(clean, alerts).0
    }

    /// [`SliEngine::save_state_with`], and the mark to hand to [`SliEngine::state_saved`]
    /// once the file is on disk (what lets counted events' log segments go).
    pub fn save_state_marked(&mut self, clean: bool, alerts: &[SavedAlert]) -> (Vec<u8>, SaveMark) {
        let (counted, mark) = self
            .replay
            .as_mut()
            .map(|l| l.keys_to_save())
            .unwrap_or_default();
        let mut w = Writer::new(self.counting_since_ms, clean, self.cujs.len());
        for s in &self.cujs {
            let totals = CujTotals {
                bounds: s.bounds.clone(),
                excluded: s.excluded,
                overflowed: s.overflowed,
                unmeasured: s.unmeasured,
                truncated: s.truncated,
                expired: s.expired,
                latency: s.latency_all.clone(),
                history: s.history.iter().cloned().collect(),
            };
            w.cuj(
                &s.cuj.name,
                &s.availability,
                &s.latency,
                &totals,
                s.series.len(),
            );
            for (dims, v) in s.series.iter() {
                w.series(
                    dims.iter(),
                    &v.windows,
                    SeriesCounts {
                        available_good: v.available_good,
                        available_bad: v.available_bad,
                        latency_good: v.latency_good,
                        latency_bad: v.latency_bad,
                        last_bad: v.last_bad,
                    },
                    v.buckets.iter().map(|b| b.count),
                    &v.latency_hist,
                );
            }
        }
        (w.finish_with(alerts, &counted), mark)
    }

    /// The save that handed back `mark` is on disk.
    pub fn state_saved(&mut self, mark: SaveMark) {
        if let Some(l) = &mut self.replay {
            l.saved(mark);
        }
    }

    /// Restores state saved by [`SliEngine::save_state`] for the CUJs that still exist;
    /// returns how many were restored. See [`SliEngine::restore`].
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<usize, StateError> {
        self.restore(bytes).map(|r| r.cujs)
    }

    /// Restores state saved by [`SliEngine::save_state_with`] for the CUJs that still
    /// exist. Series are restored most recently active first, within the CUJ's
    /// `max_series` and the engine's limits; the others are counted
    /// (`cujo_sli_restore_skipped_series_total`), never fatal.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<Restored, StateError> {
        let mut saved = crate::state::decode(bytes)?;
        let counted = saved.counted.len();
        if let Some(l) = &mut self.replay {
            l.restore(std::mem::take(&mut saved.counted));
        }
        let totals = saved.clean;
        if totals && saved.since_ms > 0 {
            self.counting_since_ms = saved.since_ms;
        }
        let mut restored = 0;
        for w in saved.cujs {
            if let Some(i) = self.cujs.iter().position(|s| s.cuj.name == w.name) {
                self.restore_cuj(i, w, totals);
                restored += 1;
            }
        }
        Ok(Restored {
            cujs: restored,
            totals,
            alerts: saved.alerts,
            counted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::SliEngine;
    use super::super::testkit::{engine, engine_with_threshold, feed};
    use crate::state::SavedAlert;

    #[test]
    fn windows_survive_a_save_and_restore() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        for i in 0..100 {
            feed(&mut e, "gold", i % 4 == 0, 10, now);
        }
        let saved = e.save_state();
        let mut fresh = engine(10);
        assert_eq!(fresh.restore_state(&saved), Ok(1));
        let sli = |e: &SliEngine| e.objectives(now)[0].3.sli[0].1;
        assert_eq!(sli(&fresh), Some(0.75));
        assert_eq!(sli(&fresh), sli(&e));
        assert!(fresh.restore_state(b"garbage").is_err());
    }

    #[test]
    fn series_windows_survive_a_save_and_restore() {
        let mut e = engine(10);
        let now = 1_700_000_000_000;
        for i in 0..10 {
            feed(&mut e, if i < 4 { "gold" } else { "free" }, i == 0, 10, now);
        }
        let mut fresh = engine(10);
        assert_eq!(fresh.restore_state(&e.save_state()), Ok(1));
        let windows = |e: &SliEngine| {
            let mut s: Vec<_> = e.report(now).cujs[0]
                .series
                .iter()
                .map(|s| (s.dimensions.clone(), s.windows.clone()))
                .collect();
            s.sort_by(|a, b| a.0.cmp(&b.0));
            s
        };
        assert_eq!(windows(&fresh), windows(&e));
        assert_eq!(windows(&fresh)[1].1[0].valid, 4);
    }

    /// An engine with three tiers' events over two hours (some bad, latencies spread), a
    /// history point a minute.
    fn busy(now: u64) -> SliEngine {
        let mut e = engine(10);
        for i in 0..600u64 {
            let at = now - 7_200_000 + i * 12_000;
            let tier = ["gold", "silver", "free"][i as usize % 3];
            feed(&mut e, tier, i % 17 == 0, 20 + (i * 37) % 900, at);
            e.tick(at);
        }
        e
    }

    fn series(e: &SliEngine, now: u64) -> Vec<crate::report::SeriesReport> {
        let mut s = e.report(now).cujs[0].series.clone();
        s.sort_by(|a, b| a.dimensions.cmp(&b.dimensions));
        s
    }

    #[test]
    fn a_clean_save_restores_totals_histograms_history_and_alerts() {
        let now = 1_700_000_000_000;
        let mut e = busy(now);
        e.set_counting_since(now - 7_200_000);
        let alert = SavedAlert {
            cuj: "post_message".into(),
            sli: "latency".into(),
            window: "30d".into(),
            severity: "page".into(),
            started_at_ms: now - 60_000,
            clear_since_ms: None,
        };
        let saved = e.save_state_with(true, std::slice::from_ref(&alert));
        let mut fresh = engine(10);
        fresh.set_counting_since(now);
        let restored = fresh.restore(&saved).expect("restores");
        assert_eq!((restored.cujs, restored.totals), (1, true));
        assert_eq!(restored.alerts, [alert]);
        assert_eq!(fresh.counting_since_ms(), now - 7_200_000);
        // Counts, latency summaries (quantiles from the histograms), last bad traces (not
        // when they were recorded: that is the exemplars', which are not saved).
        let mut before = series(&e, now);
        for s in &mut before {
            assert!(s.last_bad_at_ms.is_some());
            s.last_bad_at_ms = None;
        }
        assert_eq!(series(&fresh, now), before);
        let (a, b) = (fresh.report(now), e.report(now));
        assert_eq!(a.cujs[0].latency, b.cujs[0].latency);
        assert!(a.cujs[0].latency.as_ref().is_some_and(|l| l.count == 600));
        assert_eq!(a.cujs[0].history, b.cujs[0].history);
        assert_eq!(a.cujs[0].history.len(), 121, "one a minute, both ends");
        // The same samples for /metrics (exemplars aside): counters go on where they were.
        for name in ["cujo_sli_events_total", "cujo_cuj_duration_seconds"] {
            let fam = |e: &SliEngine| {
                let mut samples: Vec<_> = e
                    .families(now)
                    .into_iter()
                    .find(|f| f.name == name)
                    .map(|f| f.samples)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| (s.suffix, s.labels, s.value))
                    .collect();
                samples.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
                samples
            };
            assert!(!fam(&e).is_empty(), "{name} exported");
            assert_eq!(fam(&fresh), fam(&e), "{name}");
        }
        // A series restored costs what the engine counts.
        assert_eq!(fresh.memory_bytes(), fresh.recount());
    }

    #[test]
    fn a_periodic_save_restores_the_windows_and_history_not_the_totals() {
        let now = 1_700_000_000_000;
        let mut e = busy(now);
        let mut fresh = engine(10);
        fresh.set_counting_since(now);
        let restored = fresh.restore(&e.save_state()).expect("restores");
        assert_eq!((restored.cujs, restored.totals), (1, false));
        assert_eq!(fresh.counting_since_ms(), now);
        let (a, b) = (series(&fresh, now), series(&e, now));
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.windows, b.windows);
            assert_eq!(
                (a.availability_good, a.latency_good, &a.latency),
                (Some(0), 0, &None)
            );
        }
        assert_eq!(
            fresh.report(now).cujs[0].history,
            e.report(now).cujs[0].history
        );
    }

    #[test]
    fn a_changed_threshold_keeps_availability_totals_not_latency_ones() {
        let now = 1_700_000_000_000;
        let mut e = busy(now);
        let mut fresh = engine_with_threshold(10, 500);
        assert_eq!(fresh.restore_state(&e.save_state_with(true, &[])), Ok(1));
        let (a, b) = (series(&fresh, now), series(&e, now));
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(a.windows, b.windows);
            assert_eq!(a.availability_good, b.availability_good);
            assert_eq!((a.latency_good, a.latency_bad, &a.latency), (0, 0, &None));
        }
    }
}
