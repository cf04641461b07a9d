//! Good/valid event counts over rolling windows, from time-sliced counters.
//!
//! One [`SlicedCounter`] answers every window from 5 minutes to 31 days in fixed memory
//! (about 25 KiB): four rings of slices, each finer than the next is long. A window is summed
//! from the finest ring that covers it, so its edge is exact to one slice of that ring
//! (10 s for windows up to 6 min, 1 min up to 6 h, 10 min up to 3 days, 1 h beyond).

use std::time::Duration;

/// Counts of one SLI over a stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub good: u64,
    pub valid: u64,
}

impl Counts {
    pub fn bad(&self) -> u64 {
        self.valid - self.good
    }

    /// good / valid; `None` when there were no valid events.
    pub fn ratio(&self) -> Option<f64> {
        (self.valid > 0).then(|| self.good as f64 / self.valid as f64)
    }

    /// bad / valid; 0 when there were no valid events.
    pub fn error_ratio(&self) -> f64 {
        if self.valid == 0 {
            0.0
        } else {
            self.bad() as f64 / self.valid as f64
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    /// Which slice (time / slice length) this slot holds; a slot from an older lap is stale.
    slice: u32,
    good: u32,
    valid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ring {
    slice_ms: u64,
    slots: Box<[Slot]>,
}

impl Ring {
    fn new(slice: Duration, count: usize) -> Self {
        Self {
            slice_ms: slice.as_millis() as u64,
            slots: vec![Slot::default(); count].into_boxed_slice(),
        }
    }

    fn span_ms(&self) -> u64 {
        self.slice_ms * self.slots.len() as u64
    }

    fn add(&mut self, now_ms: u64, good: u32, valid: u32) {
        let slice = (now_ms / self.slice_ms) as u32;
        let n = self.slots.len();
        let slot = &mut self.slots[slice as usize % n];
        if slot.slice != slice {
            *slot = Slot {
                slice,
                good: 0,
                valid: 0,
            };
        }
        slot.good = slot.good.saturating_add(good);
        slot.valid = slot.valid.saturating_add(valid);
    }

    /// Sum of the `k` most recent slices up to and including the one holding `now_ms`.
    fn sum(&self, now_ms: u64, k: u64) -> Counts {
        let now = now_ms / self.slice_ms;
        let oldest = now.saturating_sub(k.saturating_sub(1));
        self.slots
            .iter()
            .filter(|s| (s.valid > 0) && u64::from(s.slice) >= oldest && u64::from(s.slice) <= now)
            .fold(Counts::default(), |acc, s| Counts {
                good: acc.good + u64::from(s.good),
                valid: acc.valid + u64::from(s.valid),
            })
    }
}

/// Rolling good/valid counts for one SLI of one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicedCounter {
    rings: [Ring; 4],
}

/// The longest window a [`SlicedCounter`] answers.
pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

impl Default for SlicedCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl SlicedCounter {
    pub fn new() -> Self {
        Self {
            rings: [
                Ring::new(Duration::from_secs(10), 36),
                Ring::new(Duration::from_secs(60), 360),
                Ring::new(Duration::from_secs(600), 432),
                Ring::new(Duration::from_secs(3600), 744),
            ],
        }
    }

    /// Bytes this counter takes, whatever it has seen.
    pub fn memory_bytes() -> usize {
        (36 + 360 + 432 + 744) * std::mem::size_of::<Slot>() + std::mem::size_of::<Self>()
    }

    /// Records one valid event at `now_ms` (milliseconds since the Unix epoch).
    pub fn record(&mut self, now_ms: u64, good: bool) {
        self.add(now_ms, u32::from(good), 1);
    }

    pub fn add(&mut self, now_ms: u64, good: u32, valid: u32) {
        for ring in &mut self.rings {
            ring.add(now_ms, good, valid);
        }
    }

    /// Appends the counter's state (every slot, little-endian) to `out`.
    pub fn write_state(&self, out: &mut Vec<u8>) {
        for ring in &self.rings {
            for slot in ring.slots.iter() {
                out.extend_from_slice(&slot.slice.to_le_bytes());
                out.extend_from_slice(&slot.good.to_le_bytes());
                out.extend_from_slice(&slot.valid.to_le_bytes());
            }
        }
    }

    /// Bytes [`SlicedCounter::write_state`] writes.
    pub fn state_len() -> usize {
        (36 + 360 + 432 + 744) * 12
    }

    /// Restores a state written by [`SlicedCounter::write_state`]; `None` if `bytes` is not
    /// exactly one.
    pub fn read_state(bytes: &[u8]) -> Option<SlicedCounter> {
        if bytes.len() != Self::state_len() {
            return None;
        }
        let mut c = SlicedCounter::new();
        let mut words = bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        for ring in &mut c.rings {
            for slot in ring.slots.iter_mut() {
                *slot = Slot {
                    slice: words.next()?,
                    good: words.next()?,
                    valid: words.next()?,
                };
                if slot.good > slot.valid {
                    return None;
                }
            }
        }
        Some(c)
    }

    /// Counts over the `window` ending at `now_ms`, or `None` if the window is longer than
    /// [`MAX_WINDOW`].
    pub fn counts(&self, now_ms: u64, window: Duration) -> Option<Counts> {
        let window_ms = window.as_millis() as u64;
        let ring = self.rings.iter().find(|r| r.span_ms() >= window_ms)?;
        let k = window_ms.div_ceil(ring.slice_ms).max(1);
        Some(ring.sum(now_ms, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn windows_count_exactly_on_slice_boundaries() {
        let mut c = SlicedCounter::new();
        let start = 1_700_000_000_000 - 1_700_000_000_000 % (3600 * 1000);
        // One event per minute for 3 days, every tenth one bad.
        for m in 0..(3 * 24 * 60) {
            c.record(start + m * MIN, m % 10 != 0);
        }
        let now = start + (3 * 24 * 60 - 1) * MIN;
        let w = |mins: u64| {
            c.counts(now, Duration::from_secs(mins * 60))
                .expect("window")
        };
        assert_eq!(
            w(60),
            Counts {
                good: 54,
                valid: 60
            }
        );
        assert_eq!(w(6 * 60).valid, 360);
        assert_eq!(w(24 * 60).valid, 1440);
        assert_eq!(
            w(3 * 24 * 60),
            Counts {
                good: 3888,
                valid: 4320
            }
        );
        assert_eq!(w(30 * 24 * 60).valid, 4320, "30d sees everything recorded");
        assert_eq!(c.counts(now, Duration::from_secs(32 * 24 * 3600)), None);
    }

    #[test]
    fn old_slices_are_forgotten_and_short_windows_are_fine_grained() {
        let mut c = SlicedCounter::new();
        let t0 = 1_000_000_000_000;
        c.add(t0, 0, 100);
        assert_eq!(
            c.counts(t0, Duration::from_secs(300)).expect("5m").valid,
            100
        );
        let later = t0 + 10 * MIN;
        c.record(later, true);
        assert_eq!(
            c.counts(later, Duration::from_secs(300)),
            Some(Counts { good: 1, valid: 1 })
        );
        assert_eq!(
            c.counts(later, Duration::from_secs(3600))
                .expect("1h")
                .valid,
            101
        );
        // Two months on, even the 30 day window has forgotten both.
        let much_later = t0 + 60 * 24 * 60 * MIN;
        assert_eq!(
            c.counts(much_later, Duration::from_secs(30 * 86400))
                .expect("30d")
                .valid,
            0
        );
    }

    #[test]
    fn state_round_trips() {
        let mut c = SlicedCounter::new();
        for m in 0..500u64 {
            c.record(1_700_000_000_000 + m * 7_000, m % 3 != 0);
        }
        let mut bytes = Vec::new();
        c.write_state(&mut bytes);
        assert_eq!(bytes.len(), SlicedCounter::state_len());
        assert_eq!(SlicedCounter::read_state(&bytes), Some(c));
        assert_eq!(SlicedCounter::read_state(&bytes[1..]), None);
    }

    #[test]
    fn memory_is_bounded() {
        assert!(SlicedCounter::memory_bytes() < 32 * 1024);
    }
}
