//! Persistence: the engine's windows saved to and restored from the SLO state file, so
//! objectives keep their history across restarts (the file format is [`crate::state`]).
//!
//! What one CUJ's saved series may take back, within `max_series` and the byte limit, is
//! weighed in `memory` (`SliEngine::restore_cuj`); this file only encodes, decodes and
//! finds each saved CUJ by name. It must not record events or touch the settling traces.

use super::SliEngine;

impl SliEngine {
    /// Every CUJ's windows, encoded for the state file.
    pub fn save_state(&self) -> Vec<u8> {
        let cujs: Vec<crate::state::CujWindows> = self
            .cujs
            .iter()
            .map(|s| crate::state::CujWindows {
                name: s.cuj.name.clone(),
                availability: s.availability.clone(),
                latency: s.latency.clone(),
                series: s
                    .series
                    .iter()
                    .map(|(dims, v)| (dims.to_vec(), v.windows.clone()))
                    .collect(),
            })
            .collect();
        crate::state::encode(&cujs)
    }

    /// Restores windows saved by [`SliEngine::save_state`] for the CUJs that still exist;
    /// returns how many were restored. Series are restored most recently active first,
    /// within the CUJ's `max_series` and the engine's limits; the others are counted
    /// (`cujo_sli_restore_skipped_series_total`), never fatal.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<usize, crate::state::StateError> {
        let saved = crate::state::decode(bytes)?;
        let mut restored = 0;
        for w in saved {
            if let Some(i) = self.cujs.iter().position(|s| s.cuj.name == w.name) {
                self.restore_cuj(i, w);
                restored += 1;
            }
        }
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SliEngine;
    use super::super::testkit::{engine, feed};

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
}
