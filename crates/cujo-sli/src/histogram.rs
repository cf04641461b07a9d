//! Latency histograms with quantiles within 0.1%, in bounded memory.
//!
//! # Design
//! A base-2 **exponential histogram at scale 9**: bucket `i` holds the values `v` (in seconds)
//! with `2^(i/512) < v <= 2^((i+1)/512)`. A bucket is 0.135% wide relative to its bounds, so
//! its geometric midpoint is within 0.068% of every value in it; a quantile read from the
//! bucket that holds the rank-th value is therefore within 0.1% of the exact quantile of the
//! recorded values. The index is over **seconds** (not nanoseconds) so that the buckets are
//! exactly those of an OTLP `ExponentialHistogram` (unit `s`) or a Prometheus native
//! histogram at the same scale: exporting needs no re-bucketing, only a lossless merge of
//! neighbouring buckets to lower scales ([`ExpHistogram::export`]).
//!
//! - Range: 1 µs to 1 h. Values below 1 µs are counted in [`ExpHistogram::zero_count`];
//!   values above 1 h go into the top bucket and are counted in [`ExpHistogram::clamped`].
//!   `count`, `sum`, `min` and `max` are always of the exact measured values.
//! - Storage: `u32` counts over a contiguous index range that grows as values arrive (like
//!   OTLP's offset + counts). A count that would pass `u32::MAX` carries its multiples of
//!   2^32 into a side list, so no count ever wraps and `count()` stays exact.
//! - Memory cap: at most [`MAX_BUCKETS`] (8192 buckets = 32 KiB of counts, 16 octaves).
//!   1 µs … 1 h spans ~32 octaves; when a series' values spread wider than 16 octaves, the
//!   **lowest** buckets are collapsed into the lowest kept one (DDSketch's "collapse lowest").
//!   Counts stay exact; only quantiles that fall in the collapsed bottom bucket lose accuracy
//!   (they are reported at that bucket's midpoint, clamped to `min`). Latency SLOs care about
//!   the high quantiles, which keep their 0.1%.

use std::time::Duration;

use cujo_wire::alloc::vec_bytes;

use crate::state::codec::{Reader, put_i64, put_len, put_u64};

/// Buckets per power of two: 2^9 = 512.
pub const SCALE: i32 = 9;
/// Most buckets one histogram keeps (32 KiB of `u32` counts).
pub const MAX_BUCKETS: usize = 8192;
/// The smallest value given a bucket; below it values count as zero.
pub const MIN_VALUE: Duration = Duration::from_micros(1);
/// The largest value given its own bucket; above it values are clamped into the top bucket.
pub const MAX_VALUE: Duration = Duration::from_secs(3600);

const BUCKETS_PER_OCTAVE: f64 = (1u32 << SCALE) as f64;
const MIN_NS: u64 = 1_000;
const MAX_NS: u64 = 3_600_000_000_000;

/// A latency and its bucket, found once (a logarithm) for every histogram it goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    ns: u64,
    index: i32,
}

impl Measured {
    pub fn new(value: Duration) -> Self {
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        let index = if ns < MIN_NS {
            min_index()
        } else if ns > MAX_NS {
            max_index()
        } else {
            index_of(ns as f64 / 1e9).clamp(min_index(), max_index())
        };
        Self { ns, index }
    }
}

/// The bucket index (at [`SCALE`]) holding `seconds` (> 0).
pub fn index_of(seconds: f64) -> i32 {
    // Upper-inclusive buckets: an exact power of two (log2 exact) belongs below its bound.
    (seconds.log2() * BUCKETS_PER_OCTAVE).ceil() as i32 - 1
}

/// Lower bound (exclusive) of bucket `index` at `scale`, in seconds.
pub fn lower_bound(index: i32, scale: i32) -> f64 {
    (f64::from(index) / f64::from(1u32 << scale.clamp(0, 20)) * scale_factor(scale)).exp2()
}

/// For negative scales a bucket spans 2^(-scale) octaves.
fn scale_factor(scale: i32) -> f64 {
    if scale < 0 {
        f64::from(1u32 << (-scale).min(20))
    } else {
        1.0
    }
}

/// The 1-based rank of the `q` quantile among `count` values (nearest rank): the value a
/// quantile reports is the `rank`-th smallest.
pub fn rank(q: f64, count: u64) -> u64 {
    let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
    ((q * count as f64).ceil() as u64).clamp(1, count.max(1))
}

fn min_index() -> i32 {
    index_of(MIN_NS as f64 / 1e9)
}

fn max_index() -> i32 {
    index_of(MAX_NS as f64 / 1e9)
}

/// Geometric midpoint of bucket `index` at [`SCALE`], in nanoseconds.
fn midpoint_ns(index: i32) -> f64 {
    ((f64::from(index) + 0.5) / BUCKETS_PER_OCTAVE).exp2() * 1e9
}

/// One latency distribution. See the module doc for the design.
///
/// Fields in declared order: what every recorded value reads or writes comes first, so it
/// spans as few cache lines as possible.
#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct ExpHistogram {
    /// Exact sum of the measured values.
    sum_ns: u128,
    count: u64,
    min_ns: u64,
    max_ns: u64,
    /// Bucket index of `counts[0]`.
    offset: i32,
    /// Indexes below this were collapsed into it to keep within [`MAX_BUCKETS`].
    floor: i32,
    /// Low 32 bits of each bucket's count; `carries` holds the rest.
    counts: Vec<u32>,
    /// Values below [`MIN_VALUE`].
    zero_count: u64,
    /// Values above [`MAX_VALUE`], counted in the top bucket.
    clamped: u64,
    /// (bucket index, multiple of 2^32) for the rare buckets past `u32::MAX`.
    carries: Vec<(i32, u64)>,
}

impl Default for ExpHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Buckets ready for export: `counts[i]` is the count of bucket `offset + i` at `scale`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExpBuckets {
    pub scale: i32,
    pub offset: i32,
    pub counts: Vec<u64>,
    pub zero_count: u64,
    pub count: u64,
    pub sum_seconds: f64,
    /// Absent when unknown (an interval's difference of two snapshots).
    pub min_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
}

impl ExpHistogram {
    pub const fn new() -> Self {
        Self {
            offset: 0,
            counts: Vec::new(),
            carries: Vec::new(),
            floor: i32::MIN,
            zero_count: 0,
            clamped: 0,
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    pub fn record(&mut self, value: Duration) {
        self.record_measured(Measured::new(value));
    }

    /// Records a value whose bucket was found once for several histograms.
    pub fn record_measured(&mut self, m: Measured) {
        self.count += 1;
        self.sum_ns += u128::from(m.ns);
        self.min_ns = self.min_ns.min(m.ns);
        self.max_ns = self.max_ns.max(m.ns);
        if m.ns < MIN_NS {
            self.zero_count += 1;
            return;
        }
        if m.ns > MAX_NS {
            self.clamped += 1;
        }
        self.add(m.index, 1);
    }

    pub fn scale(&self) -> i32 {
        SCALE
    }

    /// Every recorded value, exactly.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact sum of the recorded values.
    pub fn sum(&self) -> Duration {
        let secs = self.sum_ns / 1_000_000_000;
        let nanos = (self.sum_ns % 1_000_000_000) as u32;
        Duration::new(u64::try_from(secs).unwrap_or(u64::MAX), nanos)
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    pub fn min(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.min_ns))
    }

    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max_ns))
    }

    /// Values below [`MIN_VALUE`].
    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// Values above [`MAX_VALUE`] (counted in the top bucket).
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// The `q` quantile (nearest rank, see [`rank`]): within 0.1% of the exact value unless it
    /// falls below 1 µs, above 1 h, or in a bucket collapsed by the memory cap.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.quantile_seconds(q)
            .map(|s| Duration::from_nanos((s * 1e9).round() as u64))
    }

    /// [`ExpHistogram::quantile`] in seconds, unrounded.
    pub fn quantile_seconds(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let (min, max) = (self.min_ns as f64 / 1e9, self.max_ns as f64 / 1e9);
        let rank = rank(q, self.count);
        if rank == self.count {
            return Some(max);
        }
        if rank == 1 || rank <= self.zero_count {
            return Some(min);
        }
        let mut seen = self.zero_count;
        let (offset, counts) = self.positive();
        for (i, c) in counts.enumerate() {
            seen += c;
            if seen >= rank {
                let mid = midpoint_ns(offset + i as i32) / 1e9;
                return Some(mid.clamp(min, max));
            }
        }
        Some(max)
    }

    /// The buckets at [`SCALE`]: the index of the first and every count (carries included).
    pub fn positive(&self) -> (i32, impl Iterator<Item = u64> + '_) {
        let offset = self.offset;
        let iter = self
            .counts
            .iter()
            .enumerate()
            .map(move |(i, c)| u64::from(*c) + self.carry(offset + i as i32));
        (offset, iter)
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &ExpHistogram) {
        if other.count == 0 {
            return;
        }
        let (offset, counts) = other.positive();
        for (i, c) in counts.enumerate() {
            if c > 0 {
                self.add(offset + i as i32, c);
            }
        }
        self.zero_count += other.zero_count;
        self.clamped += other.clamped;
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Appends the histogram to `out`: count, then (when there is one) the exact sum, min,
    /// max, the values below and above the range, the collapsed floor, and each non-empty
    /// bucket as (gap from the previous one, count), as varints.
    pub(crate) fn write_state(&self, out: &mut Vec<u8>) {
        put_u64(out, self.count);
        if self.count == 0 {
            return;
        }
        put_u64(out, (self.sum_ns >> 64) as u64);
        put_u64(out, self.sum_ns as u64);
        for v in [self.min_ns, self.max_ns, self.zero_count, self.clamped] {
            put_u64(out, v);
        }
        put_i64(out, i64::from(self.floor));
        let (offset, counts) = self.positive();
        let held: Vec<(i32, u64)> = counts
            .enumerate()
            .filter(|(_, c)| *c > 0)
            .map(|(i, c)| (offset + i as i32, c))
            .collect();
        put_len(out, held.len());
        let mut previous = i64::from(min_index()) - 1;
        for (index, c) in held {
            put_u64(out, (i64::from(index) - previous) as u64);
            put_u64(out, c);
            previous = i64::from(index);
        }
    }

    /// Reads what [`ExpHistogram::write_state`] wrote; `None` unless the buckets lie in the
    /// range, in order, and add up with the values below it to the count.
    pub(crate) fn read_state(r: &mut Reader<'_>) -> Option<ExpHistogram> {
        let mut h = ExpHistogram::new();
        let count = r.u64()?;
        if count == 0 {
            return Some(h);
        }
        let sum_ns = (u128::from(r.u64()?) << 64) | u128::from(r.u64()?);
        let (min_ns, max_ns, zero_count, clamped) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let floor = r.i64()?;
        let floor = if floor == i64::from(i32::MIN) {
            i32::MIN
        } else {
            i32::try_from(floor)
                .ok()
                .filter(|f| (min_index()..=max_index()).contains(f))?
        };
        if min_ns > max_ns || clamped > count {
            return None;
        }
        h.floor = floor;
        let mut index = i64::from(min_index()) - 1;
        let mut total = zero_count;
        for _ in 0..r.len()? {
            let gap = r.u64().filter(|g| *g > 0 && *g <= 1 << 32)?;
            index += gap as i64;
            let c = r.u64().filter(|c| *c > 0)?;
            if index > i64::from(max_index()) {
                return None;
            }
            total = total.checked_add(c)?;
            h.add(index as i32, c);
        }
        if total != count {
            return None;
        }
        h.count = count;
        h.sum_ns = sum_ns;
        h.min_ns = min_ns;
        h.max_ns = max_ns;
        h.zero_count = zero_count;
        h.clamped = clamped;
        Some(h)
    }

    /// Forgets everything and gives the buckets' memory back.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// Bytes this histogram holds, itself included.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.counts.capacity() * std::mem::size_of::<u32>()
            + self.carries.capacity() * std::mem::size_of::<(i32, u64)>()
    }

    /// Heap bytes the buckets take, as the allocator hands them out (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        Self::heap_bytes_for(self.allocated())
    }

    /// The bucket slots allocated (counts, carries): [`ExpHistogram::heap_bytes`] changes
    /// exactly when these do, and they are cheaper to compare.
    pub fn allocated(&self) -> (usize, usize) {
        (self.counts.capacity(), self.carries.capacity())
    }

    /// Heap bytes of a histogram with `allocated` bucket slots ([`ExpHistogram::allocated`]).
    pub fn heap_bytes_for((counts, carries): (usize, usize)) -> usize {
        vec_bytes::<u32>(counts) + vec_bytes::<(i32, u64)>(carries)
    }

    /// The most heap bytes bucket counts take ([`MAX_BUCKETS`] of them): what a histogram
    /// may grow into. Carries (a bucket past 2^32 events) come on top.
    pub fn max_heap_bytes() -> usize {
        vec_bytes::<u32>(MAX_BUCKETS)
    }

    /// The buckets merged to the highest scale at which they fit in `max_buckets` (OTel SDKs
    /// default to 160). Lossless: every count lands in the lower-scale bucket that contains
    /// its bucket. Leading and trailing empty buckets are left out.
    pub fn export(&self, max_buckets: usize) -> ExpBuckets {
        let (offset, counts) = self.positive();
        let counts: Vec<u64> = counts.collect();
        let first = counts.iter().position(|c| *c > 0);
        let last = counts.iter().rposition(|c| *c > 0);
        let mut out = ExpBuckets {
            scale: SCALE,
            offset: 0,
            counts: Vec::new(),
            zero_count: self.zero_count,
            count: self.count,
            sum_seconds: self.sum_seconds(),
            min_seconds: self.min().map(|d| d.as_secs_f64()),
            max_seconds: self.max().map(|d| d.as_secs_f64()),
        };
        let (Some(first), Some(last)) = (first, last) else {
            return out;
        };
        let (lo, hi) = (offset + first as i32, offset + last as i32);
        let shift = downscale_shift(lo, hi, max_buckets);
        out.scale = SCALE - shift as i32;
        out.offset = lo >> shift;
        out.counts = vec![0; ((hi >> shift) - (lo >> shift) + 1) as usize];
        for (i, c) in counts[first..=last].iter().enumerate() {
            let index = (lo + i as i32) >> shift;
            out.counts[(index - out.offset) as usize] += c;
        }
        out
    }

    fn carry(&self, index: i32) -> u64 {
        if self.carries.is_empty() {
            return 0;
        }
        self.carries
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |(_, c)| *c)
    }

    /// Adds `n` to bucket `index`, growing the range (or collapsing its bottom) as needed.
    fn add(&mut self, index: i32, n: u64) {
        let index = self.make_room(index.max(self.floor));
        let slot = (index - self.offset) as usize;
        let total = u64::from(self.counts[slot]) + n;
        self.counts[slot] = (total & u64::from(u32::MAX)) as u32;
        let carry = total & !u64::from(u32::MAX);
        if carry > 0 {
            match self.carries.iter_mut().find(|(i, _)| *i == index) {
                Some((_, c)) => *c += carry,
                None => self.carries.push((index, carry)),
            }
        }
    }

    /// Makes `index` addressable; returns the index to use (raised to the floor if the bottom
    /// had to be collapsed).
    fn make_room(&mut self, index: i32) -> i32 {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.reserve_exact(64);
            self.counts.push(0);
            return index;
        }
        let high = self.offset + self.counts.len() as i32 - 1;
        if index >= self.offset && index <= high {
            return index;
        }
        if index > high {
            let needed = (index - self.offset + 1) as usize;
            if needed > MAX_BUCKETS {
                self.trim_leading_zeros();
                if (index - self.offset + 1) as usize > MAX_BUCKETS {
                    self.collapse_below(index - MAX_BUCKETS as i32 + 1);
                }
            }
            let needed = (index - self.offset + 1) as usize;
            if needed > self.counts.capacity() {
                let target = needed.max(self.counts.len() * 2).min(MAX_BUCKETS);
                self.counts.reserve_exact(target - self.counts.len());
            }
            self.counts.resize(needed, 0);
            return index;
        }
        // Below the range: extend down, by at least half the range again to amortise the
        // copy, never past the cap (the floor then takes what does not fit).
        let room = MAX_BUCKETS - self.counts.len();
        if room == 0 {
            self.trim_leading_zeros();
            if self.counts.len() == MAX_BUCKETS {
                self.floor = self.offset;
                return self.offset;
            }
            return self.make_room(index);
        }
        let wanted = (self.offset - index) as usize;
        let grow = wanted.max(self.counts.len() / 2).min(room);
        let lowest = (self.offset - grow as i32).max(self.floor);
        let grow = (self.offset - lowest) as usize;
        let mut counts = Vec::with_capacity((self.counts.len() + grow).min(MAX_BUCKETS));
        counts.resize(grow, 0);
        counts.extend_from_slice(&self.counts);
        self.counts = counts;
        self.offset = lowest;
        if index < self.offset {
            // Only past the cap: this value belongs to the collapsed bottom.
            self.floor = self.offset;
            return self.offset;
        }
        index
    }

    /// Drops empty buckets at the bottom of the range (left by downward growth).
    fn trim_leading_zeros(&mut self) {
        let zeros = self.counts.iter().take_while(|c| **c == 0).count();
        if zeros > 0 && zeros < self.counts.len() {
            self.counts.drain(..zeros);
            self.offset += zeros as i32;
        }
    }

    /// Folds every bucket below `new_low` into `new_low`, which becomes the floor.
    fn collapse_below(&mut self, new_low: i32) {
        let fold = ((new_low - self.offset) as usize).min(self.counts.len());
        let mut total: u64 = 0;
        for (i, c) in self.counts[..fold].iter().enumerate() {
            total += u64::from(*c);
            let index = self.offset + i as i32;
            if let Some(pos) = self.carries.iter().position(|(ci, _)| *ci == index) {
                total += self.carries.swap_remove(pos).1;
            }
        }
        self.counts.drain(..fold);
        self.offset = new_low;
        if self.counts.is_empty() {
            self.counts.push(0);
        }
        self.floor = new_low;
        if total > 0 {
            self.add(new_low, total);
        }
    }
}

/// The smallest right shift of the bucket indexes that fits `lo..=hi` in `max_buckets`.
fn downscale_shift(lo: i32, hi: i32, max_buckets: usize) -> u32 {
    let max = max_buckets.max(1) as i64;
    let mut shift = 0u32;
    while shift < 31 && i64::from((hi >> shift) - (lo >> shift)) + 1 > max {
        shift += 1;
    }
    shift
}

impl ExpBuckets {
    /// The same buckets at a lower `scale` (no-op if already at or below it).
    pub fn downscaled(&self, scale: i32) -> ExpBuckets {
        if scale >= self.scale || self.counts.is_empty() {
            return self.clone();
        }
        let shift = (self.scale - scale).min(31) as u32;
        let lo = self.offset >> shift;
        let hi = (self.offset + self.counts.len() as i32 - 1) >> shift;
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            counts[(((self.offset + i as i32) >> shift) - lo) as usize] += c;
        }
        ExpBuckets {
            scale,
            offset: lo,
            counts,
            ..self.clone()
        }
    }

    /// What was added since `earlier`, a previous export of the same (cumulative) histogram:
    /// both taken to the lower of their scales, bucket by bucket. Min and max are unknown.
    /// A bucket that shrank (the bottom was collapsed upwards in between) is moved along:
    /// counts below `self`'s lowest bucket are taken from it.
    pub fn since(&self, earlier: &ExpBuckets) -> ExpBuckets {
        let scale = self.scale.min(earlier.scale);
        let now = self.downscaled(scale);
        let before = earlier.downscaled(scale);
        let mut counts = now.counts.clone();
        let mut below = 0u64;
        for (i, c) in before.counts.iter().enumerate() {
            let index = before.offset + i as i32;
            if index < now.offset {
                below += c;
                continue;
            }
            let slot = (index - now.offset) as usize;
            if let Some(n) = counts.get_mut(slot) {
                *n = n.saturating_sub(*c);
            }
        }
        if let Some(first) = counts.first_mut() {
            *first = first.saturating_sub(below);
        }
        let first = counts.iter().position(|c| *c > 0);
        let (offset, counts) = match first {
            Some(f) => {
                let last = counts.iter().rposition(|c| *c > 0).unwrap_or(f);
                (now.offset + f as i32, counts[f..=last].to_vec())
            }
            None => (now.offset, Vec::new()),
        };
        ExpBuckets {
            scale,
            offset,
            counts,
            zero_count: now.zero_count.saturating_sub(before.zero_count),
            count: now.count.saturating_sub(before.count),
            sum_seconds: (now.sum_seconds - before.sum_seconds).max(0.0),
            min_seconds: None,
            max_seconds: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(sorted: &[u64], q: f64) -> u64 {
        sorted[rank(q, sorted.len() as u64) as usize - 1]
    }

    fn check_quantiles(values: &[u64]) -> Result<(), TestCaseError> {
        let mut h = ExpHistogram::new();
        for v in values {
            h.record(Duration::from_nanos(*v));
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        prop_assert_eq!(h.count(), values.len() as u64);
        prop_assert_eq!(
            h.sum().as_nanos(),
            values.iter().map(|v| *v as u128).sum::<u128>()
        );
        for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&sorted, q) as f64;
            let got = h.quantile_seconds(q).map(|s| s * 1e9).unwrap_or(-1.0);
            let err = (got - want).abs() / want;
            prop_assert!(err <= 0.001, "q={q}: got {got} want {want} (error {err})");
        }
        Ok(())
    }

    /// `n` values log-uniform in [lo, hi] ns from `seed` (xorshift, deterministic).
    fn log_uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<u64> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                (lo.ln() + u * (hi.ln() - lo.ln())).exp().round() as u64
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn quantiles_of_log_uniform_samples_are_within_a_tenth_of_a_percent(
            seed in any::<u64>(),
            n in 1usize..3000,
            lo_exp in 3.0f64..9.0,
            octaves in 0.1f64..15.0,
        ) {
            let lo = 10f64.powf(lo_exp);
            let hi = (lo * octaves.exp2()).min(3.6e12);
            check_quantiles(&log_uniform(seed, n, lo, hi))?;
        }

        #[test]
        fn quantiles_of_bimodal_samples_are_within_a_tenth_of_a_percent(
            seed in any::<u64>(),
            fast in 1usize..2000,
            slow in 1usize..200,
        ) {
            // Cache hits around 2 ms, misses around 900 ms.
            let mut values = log_uniform(seed, fast, 1.5e6, 2.5e6);
            values.extend(log_uniform(seed.rotate_left(7), slow, 7e8, 1.2e9));
            check_quantiles(&values)?;
        }

        #[test]
        fn memory_stays_bounded_for_any_input(values in prop::collection::vec(0u64..8_000_000_000_000, 1..2000)) {
            let mut h = ExpHistogram::new();
            for v in &values {
                h.record(Duration::from_nanos(*v));
            }
            prop_assert!(h.memory_bytes() <= 32 * 1024 + 256, "{} bytes", h.memory_bytes());
            prop_assert_eq!(h.count(), values.len() as u64);
            let (_, counts) = h.positive();
            prop_assert_eq!(counts.sum::<u64>() + h.zero_count(), values.len() as u64);
        }
    }

    #[test]
    fn adversarial_spread_over_the_whole_range_keeps_the_cap_and_the_top_quantiles() {
        let mut h = ExpHistogram::new();
        // Every bucket from 1 µs to 1 h, alternating ends (worst case for growth), twice.
        let (lo, hi) = (min_index(), max_index());
        let mut values = Vec::new();
        for _ in 0..2 {
            for k in 0..=(hi - lo) {
                let i = if k % 2 == 0 { lo + k / 2 } else { hi - k / 2 };
                values.push(midpoint_ns(i).round() as u64);
            }
        }
        for v in &values {
            h.record(Duration::from_nanos(*v));
        }
        assert!(h.memory_bytes() <= 32 * 1024 + 256, "{}", h.memory_bytes());
        assert!(h.counts.len() <= MAX_BUCKETS);
        assert_eq!(h.count(), values.len() as u64);
        let (_, counts) = h.positive();
        assert_eq!(counts.sum::<u64>(), values.len() as u64);
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let want = exact(&values, q) as f64;
            let got = h.quantile_seconds(q).expect("values") * 1e9;
            assert!((got - want).abs() / want <= 0.001, "q={q} {got} {want}");
        }
    }

    #[test]
    fn out_of_range_values_are_counted_not_lost() {
        let mut h = ExpHistogram::new();
        h.record(Duration::from_nanos(10));
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(7200));
        h.record(Duration::from_millis(5));
        assert_eq!((h.count(), h.zero_count(), h.clamped()), (4, 2, 1));
        assert_eq!(h.max(), Some(Duration::from_secs(7200)));
        assert_eq!(h.quantile(1.0), Some(Duration::from_secs(7200)));
        assert_eq!(h.quantile(0.0), Some(Duration::ZERO));
        assert_eq!(h.sum(), Duration::from_nanos(7_200_005_000_010));
    }

    #[test]
    fn counts_never_wrap() {
        let mut h = ExpHistogram::new();
        h.record(Duration::from_millis(10));
        let (offset, _) = h.positive();
        // Four billion more in the same bucket, without recording them one by one.
        h.add(offset, u64::from(u32::MAX) + 10);
        let mut other = ExpHistogram::new();
        other.record(Duration::from_millis(10));
        other.add(offset, u64::from(u32::MAX));
        h.merge(&other);
        let (_, mut counts) = h.positive();
        assert_eq!(counts.next(), Some(2 * u64::from(u32::MAX) + 12));
        let e = h.export(160);
        assert_eq!(e.counts, vec![2 * u64::from(u32::MAX) + 12]);
    }

    #[test]
    fn export_fits_in_the_bucket_limit_without_losing_counts() {
        let mut h = ExpHistogram::new();
        let values = log_uniform(7, 10_000, 1e6, 1e10);
        for v in &values {
            h.record(Duration::from_nanos(*v));
        }
        let e = h.export(160);
        assert!(e.counts.len() <= 160, "{}", e.counts.len());
        assert!(e.scale < SCALE);
        assert_eq!(e.counts.iter().sum::<u64>(), 10_000);
        // Every value lies within the bucket it was counted in at the exported scale.
        let min = *values.iter().min().expect("values") as f64 / 1e9;
        let max = *values.iter().max().expect("values") as f64 / 1e9;
        assert!(lower_bound(e.offset, e.scale) < min);
        assert!(lower_bound(e.offset + e.counts.len() as i32, e.scale) >= max);
        let same = h.export(100_000);
        assert_eq!(same.scale, SCALE);
        assert_eq!(same.downscaled(e.scale), e);
    }

    #[test]
    fn buckets_are_upper_inclusive_at_powers_of_two() {
        assert_eq!(index_of(1.0), -1);
        assert_eq!(index_of(2.0), 511);
        assert_eq!(index_of(2.0001), 512);
        assert!((lower_bound(512, SCALE) - 2.0).abs() < 1e-12);
        assert!((lower_bound(1, -1) - 4.0).abs() < 1e-12);
    }

    #[test]
    fn since_gives_what_was_added_between_two_exports() {
        let mut h = ExpHistogram::new();
        for v in log_uniform(3, 500, 1e6, 1e8) {
            h.record(Duration::from_nanos(v));
        }
        let first = h.export(160);
        let mut added = ExpHistogram::new();
        for v in log_uniform(4, 300, 1e6, 1e10) {
            h.record(Duration::from_nanos(v));
            added.record(Duration::from_nanos(v));
        }
        let second = h.export(160);
        let delta = second.since(&first);
        assert_eq!(delta.count, 300);
        assert_eq!(delta.counts.iter().sum::<u64>(), 300);
        let want = added.export(100_000).downscaled(delta.scale);
        assert_eq!(delta.offset, want.offset);
        assert_eq!(delta.counts, want.counts);
        assert!((delta.sum_seconds - added.sum_seconds()).abs() < 1e-6);
    }
}
