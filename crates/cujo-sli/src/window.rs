//! Good/valid event counts over rolling windows, from time-sliced counters.
//!
//! One [`SlicedCounter`] answers every window from 5 minutes to 31 days in fixed memory
//! (about 25 KiB): four rings of slices, each finer than the next is long. A window is summed
//! from the finest ring that covers it, so its edge is exact to one slice of that ring
//! (10 s for windows up to 6 min, 1 min up to 6 h, 10 min up to 3 days, 1 h beyond).

use std::time::Duration;

use cujo_wire::alloc::vec_bytes;

use crate::state::codec::{Reader, put_len, put_u64};

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

    /// Adds to `slice` (in this ring's slices); `n` is the ring's slot count.
    fn add_slice(&mut self, slice: u32, n: usize, good: u32, valid: u32) {
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

    /// The oldest of the `k` most recent slices (as in [`Ring::sum`]) that holds an event.
    fn oldest_with_events(&self, now_ms: u64, k: u64) -> Option<u64> {
        let now = now_ms / self.slice_ms;
        let oldest = now.saturating_sub(k.saturating_sub(1));
        self.slots
            .iter()
            .filter(|s| (s.valid > 0) && u64::from(s.slice) >= oldest && u64::from(s.slice) <= now)
            .map(|s| u64::from(s.slice))
            .min()
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
        // The rings' shapes as constants (the same as [`SERIES_RINGS`], checked by a test),
        // so the slice divisions compile to multiplications.
        for (ring, &(slice_ms, n)) in self.rings.iter_mut().zip(SERIES_RINGS.iter()) {
            ring.add_slice((now_ms / slice_ms) as u32, n, good, valid);
        }
    }

    /// Appends the counter's state in the state file's version 2 form (every slot,
    /// little-endian) to `out`.
    #[cfg(test)]
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
            let n = ring.slots.len();
            for (i, slot) in ring.slots.iter_mut().enumerate() {
                *slot = Slot {
                    slice: words.next()?,
                    good: words.next()?,
                    valid: words.next()?,
                };
                // A slot holds the slices that map to its place (version 3 checks the same).
                if slot.good > slot.valid || (slot.valid > 0 && slot.slice as usize % n != i) {
                    return None;
                }
            }
        }
        Some(c)
    }

    /// Appends the slots holding events (ring by ring: how many, then each one's place,
    /// slice, good and valid counts as varints) to `out`: a quiet counter costs a few bytes.
    pub(crate) fn write_sparse(&self, out: &mut Vec<u8>) {
        for ring in &self.rings {
            put_len(out, ring.slots.iter().filter(|s| s.valid > 0).count());
            for (i, s) in ring.slots.iter().enumerate().filter(|(_, s)| s.valid > 0) {
                put_len(out, i);
                for w in [s.slice, s.good, s.valid] {
                    put_u64(out, u64::from(w));
                }
            }
        }
    }

    /// Reads what [`SlicedCounter::write_sparse`] wrote; `None` on a slot out of its ring,
    /// in a place its slice does not map to, or with more good than valid events.
    pub(crate) fn read_sparse(r: &mut Reader<'_>) -> Option<SlicedCounter> {
        let mut c = SlicedCounter::new();
        for ring in &mut c.rings {
            let n = ring.slots.len();
            for _ in 0..r.len()? {
                let i = r.index()?;
                let (slice, good, valid) = (r.u32()?, r.u32()?, r.u32()?);
                if i >= n || slice as usize % n != i || good > valid || valid == 0 {
                    return None;
                }
                ring.slots[i] = Slot { slice, good, valid };
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

    /// How much of the `window` ending at `now_ms` has data: the slices from the oldest one
    /// holding an event in the window up to the current one, over the window's slices (at
    /// most 1; 0 without events). Exact to one slice of the ring that answers the window,
    /// as [`SlicedCounter::counts`]; gaps after the oldest event count as covered (quiet
    /// traffic is not missing data). `None` if the window is longer than [`MAX_WINDOW`].
    ///
    /// Read from the slices themselves, so it survives a restart with the state file.
    pub fn coverage(&self, now_ms: u64, window: Duration) -> Option<f64> {
        let window_ms = window.as_millis() as u64;
        let ring = self.rings.iter().find(|r| r.span_ms() >= window_ms)?;
        let k = window_ms.div_ceil(ring.slice_ms).max(1);
        let Some(oldest) = ring.oldest_with_events(now_ms, k) else {
            return Some(0.0);
        };
        let covered = now_ms / ring.slice_ms - oldest + 1;
        Some((covered as f64 / k as f64).min(1.0))
    }
}

/// Slice length (ms) and slot count of each ring of a [`SeriesWindows`]: the same rings as a
/// [`SlicedCounter`], so a series' windows line up with its CUJ's.
const SERIES_RINGS: [(u64, usize); 4] = [
    (10_000, 36),
    (60_000, 360),
    (600_000, 432),
    (3_600_000, 744),
];
/// Where each ring starts in [`SeriesWindows::slots`].
const SERIES_RING_OFFSETS: [usize; 4] = [0, 36, 396, 828];
const SERIES_SLOTS: usize = 36 + 360 + 432 + 744;

/// The events of one slice of one series, for both SLIs at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EventSlot {
    /// Valid events (availability counts every one).
    valid: u32,
    availability_good: u32,
    /// Valid events whose latency was measured (all of them, unless a `{from, to}` measure
    /// found no span to measure between).
    latency_valid: u32,
    latency_good: u32,
}

impl EventSlot {
    /// Whether the counts can be: no more good than valid events, for either SLI.
    fn possible(&self) -> bool {
        self.availability_good <= self.valid
            && self.latency_valid <= self.valid
            && self.latency_good <= self.latency_valid
    }

    fn add(&mut self, d: EventSlot) {
        self.valid = self.valid.saturating_add(d.valid);
        self.availability_good = self.availability_good.saturating_add(d.availability_good);
        self.latency_valid = self.latency_valid.saturating_add(d.latency_valid);
        self.latency_good = self.latency_good.saturating_add(d.latency_good);
    }
}

/// Both SLIs' counts of one series over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounts {
    pub valid: u64,
    pub availability_good: u64,
    pub latency_valid: u64,
    pub latency_good: u64,
}

impl WindowCounts {
    pub fn availability(&self) -> Counts {
        Counts {
            good: self.availability_good,
            valid: self.valid,
        }
    }

    pub fn latency(&self) -> Counts {
        Counts {
            good: self.latency_good,
            valid: self.latency_valid,
        }
    }
}

/// Rolling windows of one series: availability and latency counts in one slot per slice
/// (16 bytes), about 24.6 KiB whatever the series has seen.
///
/// Unlike [`SlicedCounter`], a slot does not say which slice it holds: each ring remembers
/// the newest slice written (its head) and clears the slots it moves past, so a slot is
/// current exactly when it lies within one ring length behind the head.
///
/// Events of the current finest slice (10 s) are summed in `pending`, beside the struct,
/// and written to the four rings when a later slice begins: recording an event touches one
/// cache line and divides once, instead of once per ring. Reads count `pending` as if it
/// had been written.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct SeriesWindows {
    /// The finest ring's slice being summed, and its events, not yet in the rings: first,
    /// as the only field most events touch.
    pending: Option<(u64, EventSlot)>,
    /// The newest slice each ring has written; zero before the first event.
    heads: [u64; 4],
    /// Every ring's slots, one after another (see [`SERIES_RING_OFFSETS`]).
    slots: Box<[EventSlot]>,
}

impl PartialEq for SeriesWindows {
    /// Equal when they count the same (whether or not the pending slice was written).
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.flushed(), other.flushed());
        a.heads == b.heads && a.slots == b.slots
    }
}

impl Eq for SeriesWindows {}

impl Default for SeriesWindows {
    fn default() -> Self {
        Self::new()
    }
}

impl SeriesWindows {
    pub fn new() -> Self {
        Self {
            slots: vec![EventSlot::default(); SERIES_SLOTS].into_boxed_slice(),
            heads: [0; 4],
            pending: None,
        }
    }

    /// A copy with the pending slice written to the rings.
    fn flushed(&self) -> std::borrow::Cow<'_, SeriesWindows> {
        if self.pending.is_none() {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut w = self.clone();
        w.flush();
        std::borrow::Cow::Owned(w)
    }

    /// Writes the pending slice's events to every ring.
    fn flush(&mut self) {
        if let Some((slice, events)) = self.pending.take() {
            self.add(slice * SERIES_RINGS[0].0, events);
        }
    }

    /// Bytes one series' windows take, whatever they have seen.
    pub fn memory_bytes() -> usize {
        SERIES_SLOTS * std::mem::size_of::<EventSlot>() + std::mem::size_of::<Self>()
    }

    /// Heap bytes the windows take, as the allocator hands them out.
    pub fn heap_bytes(&self) -> usize {
        vec_bytes::<EventSlot>(self.slots.len())
    }

    /// Heap bytes new windows take ([`SeriesWindows::heap_bytes`] of every one).
    pub fn new_heap_bytes() -> usize {
        vec_bytes::<EventSlot>(SERIES_SLOTS)
    }

    /// A time no earlier than the latest event recorded (the end of its 10 s slice); zero
    /// when nothing was recorded. For windows restored from a state file, whose events
    /// carry no time of their own.
    pub fn latest_event_bound_ms(&self) -> u64 {
        let pending = self.pending.map_or(0, |(slice, _)| slice);
        let newest = pending.max(self.heads[0]);
        if newest == 0 && self.pending.is_none() && self.slots[0].valid == 0 {
            return 0;
        }
        (newest + 1).saturating_mul(SERIES_RINGS[0].0)
    }

    /// Records one valid event at `now_ms`: available or not, and its latency outcome when
    /// latency was measured.
    pub fn record(&mut self, now_ms: u64, available: bool, latency_good: Option<bool>) {
        let event = EventSlot {
            valid: 1,
            availability_good: u32::from(available),
            latency_valid: u32::from(latency_good.is_some()),
            latency_good: u32::from(latency_good == Some(true)),
        };
        let slice = now_ms / SERIES_RINGS[0].0;
        match &mut self.pending {
            Some((pending, events)) if *pending == slice => events.add(event),
            _ => {
                self.flush();
                self.pending = Some((slice, event));
            }
        }
    }

    fn add(&mut self, now_ms: u64, d: EventSlot) {
        for (r, &(slice_ms, n)) in SERIES_RINGS.iter().enumerate() {
            let ring = &mut self.slots[SERIES_RING_OFFSETS[r]..SERIES_RING_OFFSETS[r] + n];
            let n = n as u64;
            let slice = now_ms / slice_ms;
            let head = self.heads[r];
            if slice > head {
                // Slices between the old head and this one had no events: clear their slots.
                let clear = (slice - head).min(n);
                for t in (slice + 1 - clear)..=slice {
                    ring[(t % n) as usize] = EventSlot::default();
                }
                self.heads[r] = slice;
            } else if head - slice >= n {
                // Older than this ring remembers (the clock went back that far).
                continue;
            }
            ring[(slice % n) as usize].add(d);
        }
    }

    /// Counts over the `window` ending at `now_ms`, or `None` if the window is longer than
    /// [`MAX_WINDOW`]. The window's edge is exact to one slice of the finest ring covering it.
    pub fn counts(&self, now_ms: u64, window: Duration) -> Option<WindowCounts> {
        let window_ms = window.as_millis() as u64;
        let r = SERIES_RINGS
            .iter()
            .position(|&(slice_ms, n)| slice_ms * n as u64 >= window_ms)?;
        let (slice_ms, n) = SERIES_RINGS[r];
        let ring = &self.slots[SERIES_RING_OFFSETS[r]..SERIES_RING_OFFSETS[r] + n];
        let n = n as u64;
        let k = window_ms.div_ceil(slice_ms).max(1);
        let now = now_ms / slice_ms;
        let written = self.heads[r];
        // The pending slice, in this ring's slices; writing it would move the head up to it
        // and clear the slots it passes (they read as zero here).
        let pending = self
            .pending
            .map(|(slice, events)| (slice * SERIES_RINGS[0].0 / slice_ms, events));
        let head = pending.map_or(written, |(p, _)| written.max(p));
        let newest = now.min(head);
        let oldest = (now + 1)
            .saturating_sub(k)
            .max((head + 1).saturating_sub(n));
        let mut c = WindowCounts::default();
        let mut count = |s: EventSlot| {
            c.valid += u64::from(s.valid);
            c.availability_good += u64::from(s.availability_good);
            c.latency_valid += u64::from(s.latency_valid);
            c.latency_good += u64::from(s.latency_good);
        };
        if oldest <= newest {
            for t in oldest..=newest.min(written) {
                count(ring[(t % n) as usize]);
            }
            if let Some((p, events)) = pending
                && (oldest..=newest).contains(&p)
            {
                count(events);
            }
        }
        Some(c)
    }

    /// Appends the windows' state in the state file's version 2 form (heads, then every
    /// slot, little-endian) to `out`.
    #[cfg(test)]
    pub fn write_state(&self, out: &mut Vec<u8>) {
        let flushed = self.flushed();
        for h in flushed.heads {
            out.extend_from_slice(&h.to_le_bytes());
        }
        for s in flushed.slots.iter() {
            for w in [
                s.valid,
                s.availability_good,
                s.latency_valid,
                s.latency_good,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
    }

    /// Appends the windows' heads and the slots holding events (ring by ring: how many,
    /// then each one's place and four counts, as varints) to `out`.
    pub(crate) fn write_sparse(&self, out: &mut Vec<u8>) {
        let flushed = self.flushed();
        for h in flushed.heads {
            put_u64(out, h);
        }
        for (r, &(_, n)) in SERIES_RINGS.iter().enumerate() {
            let ring = &flushed.slots[SERIES_RING_OFFSETS[r]..SERIES_RING_OFFSETS[r] + n];
            put_len(out, ring.iter().filter(|s| s.valid > 0).count());
            for (i, s) in ring.iter().enumerate().filter(|(_, s)| s.valid > 0) {
                put_len(out, i);
                for w in [
                    s.valid,
                    s.availability_good,
                    s.latency_valid,
                    s.latency_good,
                ] {
                    put_u64(out, u64::from(w));
                }
            }
        }
    }

    /// Reads what [`SeriesWindows::write_sparse`] wrote; `None` on a slot out of its ring or
    /// with counts that cannot be (more good than valid).
    pub(crate) fn read_sparse(r: &mut Reader<'_>) -> Option<SeriesWindows> {
        let mut w = SeriesWindows::new();
        for (h, &(slice_ms, _)) in w.heads.iter_mut().zip(SERIES_RINGS.iter()) {
            // A head is a slice number: its time must be a time.
            *h = r.u64().filter(|h| h.checked_mul(slice_ms).is_some())?;
        }
        for (ring, &(_, n)) in SERIES_RINGS.iter().enumerate() {
            for _ in 0..r.len()? {
                let i = r.index()?;
                let slot = EventSlot {
                    valid: r.u32()?,
                    availability_good: r.u32()?,
                    latency_valid: r.u32()?,
                    latency_good: r.u32()?,
                };
                if i >= n || slot.valid == 0 || !slot.possible() {
                    return None;
                }
                w.slots[SERIES_RING_OFFSETS[ring] + i] = slot;
            }
        }
        Some(w)
    }

    /// Bytes [`SeriesWindows::write_state`] writes.
    pub fn state_len() -> usize {
        4 * 8 + SERIES_SLOTS * 16
    }

    /// Restores a state written by [`SeriesWindows::write_state`]; `None` if `bytes` is not
    /// exactly one (or holds counts that cannot be: more good than valid).
    pub fn read_state(bytes: &[u8]) -> Option<SeriesWindows> {
        if bytes.len() != Self::state_len() {
            return None;
        }
        let (heads, slots) = bytes.split_at(32);
        let mut w = SeriesWindows::new();
        for ((h, b), &(slice_ms, _)) in w
            .heads
            .iter_mut()
            .zip(heads.chunks_exact(8))
            .zip(SERIES_RINGS.iter())
        {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            // A head is a slice number: its time must be a time (version 3 checks the same).
            *h = Some(u64::from_le_bytes(a)).filter(|h| h.checked_mul(slice_ms).is_some())?;
        }
        let mut words = slots
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for slot in w.slots.iter_mut() {
            *slot = EventSlot {
                valid: words.next()?,
                availability_good: words.next()?,
                latency_valid: words.next()?,
                latency_good: words.next()?,
            };
            if !slot.possible() {
                return None;
            }
        }
        Some(w)
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
    fn coverage_is_the_stretch_of_the_window_holding_data() {
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % (3600 * 1000);
        let mut c = SlicedCounter::new();
        let hour = Duration::from_secs(3600);
        let month = Duration::from_secs(30 * 86400);
        assert_eq!(c.coverage(t0, hour), Some(0.0), "no events, no coverage");
        // Nine minutes of data, one event a minute (minutes 0..=8).
        for m in 0..9 {
            c.record(t0 + m * MIN, false);
        }
        let now = t0 + 8 * MIN + 30_000;
        assert_eq!(c.coverage(now, hour), Some(9.0 / 60.0));
        // One event a minute: the 5 minutes are covered from their first minute's event
        // (10 s slices: 28 of 30).
        assert_eq!(c.coverage(now, Duration::from_secs(300)), Some(28.0 / 30.0));
        let m = c.coverage(now, month).expect("30d");
        assert_eq!(m, 1.0 / 720.0, "one hour slice of 720");
        // A quiet stretch after the first event still counts as covered.
        let later = t0 + 45 * MIN;
        assert_eq!(c.coverage(later, hour), Some(46.0 / 60.0));
        // Once the window has moved past the first events, it is full whatever follows.
        c.record(t0 + 61 * MIN, true);
        assert_eq!(c.coverage(t0 + 61 * MIN, hour), Some(1.0));
        // Two hours with no event at all: the hour holds no data.
        assert_eq!(c.coverage(t0 + 181 * MIN, hour), Some(0.0));
        assert_eq!(c.coverage(now, Duration::from_secs(32 * 86400)), None);
        // The state file keeps it.
        let mut bytes = Vec::new();
        c.write_state(&mut bytes);
        let back = SlicedCounter::read_state(&bytes).expect("state");
        assert_eq!(back.coverage(later, hour), c.coverage(later, hour));
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

    #[test]
    fn series_windows_match_the_per_sli_counters() {
        let mut series = SeriesWindows::new();
        let mut avail = SlicedCounter::new();
        let mut lat = SlicedCounter::new();
        let start = 1_700_000_000_000 - 1_700_000_000_000 % (3600 * 1000);
        // Irregular traffic over four days, with gaps longer than every ring but the last.
        let mut t = start;
        let mut i = 0u64;
        while t < start + 4 * 86_400_000 {
            let available = !i.is_multiple_of(7);
            let latency = match i % 5 {
                0 => None,
                1 | 2 => Some(false),
                _ => Some(true),
            };
            series.record(t, available, latency);
            avail.record(t, available);
            if let Some(good) = latency {
                lat.record(t, good);
            }
            i += 1;
            t += if i.is_multiple_of(50) {
                7 * 3_600_000
            } else {
                4_321 + (i % 13) * 1_000
            };
        }
        for w in [
            300u64,
            1800,
            3600,
            7200,
            6 * 3600,
            86400,
            3 * 86400,
            30 * 86400,
        ] {
            for now in [t, t + 45_000, t + 2 * 3_600_000] {
                let w = Duration::from_secs(w);
                let c = series.counts(now, w).expect("window");
                assert_eq!(
                    Some(c.availability()),
                    avail.counts(now, w),
                    "{w:?} at {now}"
                );
                assert_eq!(Some(c.latency()), lat.counts(now, w), "{w:?} at {now}");
            }
        }
        assert_eq!(series.counts(t, Duration::from_secs(32 * 86400)), None);
    }

    #[test]
    fn series_windows_forget_and_round_trip() {
        let mut w = SeriesWindows::new();
        let t0 = 1_000_000_000_000;
        w.record(t0, false, Some(true));
        w.record(t0 + 1, true, None);
        let five = Duration::from_secs(300);
        assert_eq!(
            w.counts(t0, five),
            Some(WindowCounts {
                valid: 2,
                availability_good: 1,
                latency_valid: 1,
                latency_good: 1
            })
        );
        // An event long after clears what the short rings held, not what the long ones hold.
        w.record(t0 + 3_600_000, true, Some(false));
        assert_eq!(w.counts(t0 + 3_600_000, five).map(|c| c.valid), Some(1));
        assert_eq!(
            w.counts(t0 + 3_600_000, Duration::from_secs(7200))
                .map(|c| c.valid),
            Some(3)
        );
        // A clock that steps back lands in the slot of its slice while the ring remembers it.
        w.record(t0 + 3_600_000 - 20_000, true, None);
        assert_eq!(w.counts(t0 + 3_600_000, five).map(|c| c.valid), Some(2));
        let mut bytes = Vec::new();
        w.write_state(&mut bytes);
        assert_eq!(bytes.len(), SeriesWindows::state_len());
        assert_eq!(SeriesWindows::read_state(&bytes), Some(w));
        assert_eq!(SeriesWindows::read_state(&bytes[1..]), None);
    }

    #[test]
    fn series_windows_from_clock_zero_match_the_counters() {
        // A ring's head reads zero both before its first write and after writing slice 0
        // (an injected clock starting at zero): either way slice 0 is forgotten in time (by
        // 400 s the five-minute window has moved past its two events).
        let mut w = SeriesWindows::new();
        let mut c = SlicedCounter::new();
        for (t, ok) in [
            (0, false),
            (5_000, true),
            (400_000, true),
            (720_000, true),
            (7_300_000, false),
        ] {
            w.record(t, ok, Some(ok));
            c.record(t, ok);
            for secs in [300, 7200] {
                let window = Duration::from_secs(secs);
                let got = w.counts(t, window).expect("window");
                assert_eq!(
                    Some(got.availability()),
                    c.counts(t, window),
                    "{secs}s at {t}"
                );
            }
        }
    }

    #[test]
    fn series_windows_fit_the_per_series_budget() {
        // 64 KiB per series: these windows, a 32 KiB latency histogram, and the exemplars.
        assert!(
            SeriesWindows::memory_bytes() <= 28 * 1024,
            "{}",
            SeriesWindows::memory_bytes()
        );
    }

    #[test]
    fn summing_the_current_slice_apart_counts_as_writing_every_event_at_once() {
        // Times mostly moving forward by up to 30 s, sometimes stepping back two minutes or
        // jumping hours; after every event both must count the same over every window.
        let windows = [
            10, 60, 300, 1800, 3600, 7200, 21_600, 86_400, 259_200, 2_592_000,
        ]
        .map(Duration::from_secs);
        let mut pending = SeriesWindows::new();
        let mut reference = SeriesWindows::new();
        let mut now: u64 = 1_700_000_000_000;
        let mut rng: u64 = 0x5eed;
        let mut next = |m: u64| {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (rng >> 33) % m
        };
        for i in 0..20_000 {
            now = match next(100) {
                0 => now - 120_000,
                1 => now + 3_600_000 * (1 + next(30)),
                _ => now + next(30_000),
            };
            let available = next(10) != 0;
            let latency = [None, Some(true), Some(false)][next(3) as usize];
            pending.record(now, available, latency);
            reference.record(now, available, latency);
            reference.flush();
            let at = now + next(20_000);
            for w in windows {
                assert_eq!(
                    pending.counts(at, w),
                    reference.counts(at, w),
                    "event {i}, window {w:?}"
                );
            }
        }
        assert_eq!(pending, reference);
        // And the state file holds what was summed apart.
        let mut saved = Vec::new();
        pending.write_state(&mut saved);
        assert_eq!(SeriesWindows::read_state(&saved), Some(reference));
    }

    #[test]
    fn counters_and_series_share_the_ring_shapes() {
        let c = SlicedCounter::new();
        let shapes: Vec<(u64, usize)> = c
            .rings
            .iter()
            .map(|r| (r.slice_ms, r.slots.len()))
            .collect();
        assert_eq!(shapes, SERIES_RINGS.to_vec());
    }
}
