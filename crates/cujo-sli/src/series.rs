//! The series of one CUJ: for each set of dimension values, exact event counts, rolling
//! windows, the latency histogram and buckets with their exemplars — and what they occupy.
//!
//! Memory is counted where it changes (a series added or removed, a histogram growing), so
//! [`SeriesMap::bytes`] is a sum of a few numbers, not a walk over the series: counted by
//! allocation (the allocator's size class), the series table by its capacity and the index
//! by its slots. Each series is also owed room for its latency histogram to grow to its cap
//! ([`SeriesMap::growth`]), so a byte limit checked when a series is added still holds
//! once the series has seen every latency.
//!
//! Series idle for the TTL are removed by [`SeriesMap::expire`], unless settling events
//! will still be recorded in them ([`Series::settling`]).

use cujo_wire::alloc::{allocation_size, vec_bytes};

use crate::cuj::DimensionValues;
use crate::histogram::ExpHistogram;
use crate::table::CountedMap;
use crate::window::SeriesWindows;

/// A trace behind a sample: OpenMetrics exemplars carry its id, so a dashboard can jump
/// from a bad count or a slow bucket to the trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    /// 1 for an event counter; the measured seconds for a latency bucket.
    pub value: f64,
    /// When the event was recorded (milliseconds since the Unix epoch).
    pub timestamp_ms: u64,
}

/// One series' state. Laid out for the per-event path: the counters an event always
/// writes share the first cache line with the windows' pending slice, the time of the last
/// event shares the second with the windows' heads, then comes the histogram's header;
/// each latency bucket keeps its count beside its exemplar, so recording an event touches
/// a few lines of the series instead of one per field.
#[derive(Debug, Clone, Default)]
#[repr(C, align(64))]
pub(crate) struct Series {
    pub available_good: u64,
    pub available_bad: u64,
    pub latency_good: u64,
    pub latency_bad: u64,
    /// Rolling windows of this series (both SLIs), for its share of the budget burned.
    pub windows: SeriesWindows,
    /// When the latest event was recorded (milliseconds since the Unix epoch): a series
    /// idle for the TTL is removed.
    pub last_event_ms: u64,
    /// Every latency since start, for quantiles, the exact sum, and the OTLP exponential
    /// histogram.
    pub latency_hist: ExpHistogram,
    /// Per bucket of the CUJ's bounds (not cumulative), plus one for +Inf.
    pub buckets: Vec<Bucket>,
    /// Trace id of the most recent bad event (availability or latency).
    pub last_bad: Option<[u8; 16]>,
    /// Settling events that will be recorded here, found by this series' place when their
    /// trace was released: the series is not removed (nor its place given to another)
    /// while they wait.
    pub settling: u32,
    /// The latest bad event of each SLI, to jump to from a dashboard.
    pub availability_bad: Option<Exemplar>,
    pub latency_bad_exemplar: Option<Exemplar>,
}

/// A latency bucket's count and its latest event.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    pub count: u64,
    pub exemplar: Option<Exemplar>,
}

impl Series {
    /// A series with `buckets` latency buckets, its first event due at `now_ms`.
    pub fn new(buckets: usize, now_ms: u64) -> Self {
        Series {
            buckets: vec![Bucket::default(); buckets],
            last_event_ms: now_ms,
            ..Series::default()
        }
    }

    /// Heap bytes the series holds outside its table slot (its key aside).
    fn heap_bytes(&self) -> usize {
        self.windows.heap_bytes()
            + vec_bytes::<Bucket>(self.buckets.capacity())
            + self.latency_hist.heap_bytes()
    }

    /// The most heap bytes a new series with `buckets` latency buckets comes to.
    fn max_heap_bytes(buckets: usize) -> usize {
        SeriesWindows::new_heap_bytes()
            + vec_bytes::<Bucket>(buckets)
            + ExpHistogram::max_heap_bytes()
    }
}

/// Room a histogram holding `heap` bytes may still grow into.
fn histogram_room(heap: usize) -> usize {
    ExpHistogram::max_heap_bytes().saturating_sub(heap)
}

/// Longest encoded dimension values kept inside the index's table.
const INLINE_KEY: usize = 38;

/// A series' key in [`SeriesMap`]: the encoded dimension values, inside the table when they
/// are short (a tier and a tenant id take about 25 bytes), so a lookup compares them in the
/// table's own memory rather than following a pointer to an allocation made long ago.
#[derive(Clone)]
enum SeriesKey {
    Inline(u8, [u8; INLINE_KEY]),
    Spilled(Box<[u8]>),
}

impl SeriesKey {
    fn new(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_KEY => {
                let mut inline = [0; INLINE_KEY];
                inline[..bytes.len()].copy_from_slice(bytes);
                SeriesKey::Inline(len, inline)
            }
            _ => SeriesKey::Spilled(bytes.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            SeriesKey::Inline(len, inline) => &inline[..usize::from(*len)],
            SeriesKey::Spilled(b) => b,
        }
    }
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for SeriesKey {}

/// Hashes as the bytes do, so the map is searched with a plain `&[u8]`.
impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for SeriesKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Heap bytes of a series' dimension values: the values kept beside the series, and the
/// index's copy when it does not fit in the table.
fn key_heap(len: usize) -> usize {
    let spilled = if len > INLINE_KEY {
        allocation_size(len)
    } else {
        0
    };
    allocation_size(len) + spilled
}

/// How often, at most, a CUJ's series are looked over for idle ones when some are idle but
/// cannot go yet (settling events still point at them), or were touched since.
const SWEEP_INTERVAL_MS: u64 = 1_000;

/// Where a removed series was, in the places [`SeriesMap::expire`] hands back.
pub(crate) const GONE: usize = usize::MAX;

/// What [`SeriesMap::expire`] removed.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    pub removed: u64,
    /// The new place of each series by its old one ([`GONE`] when removed), when series
    /// that settling events point at moved (their events must follow).
    pub moved: Option<Vec<usize>>,
}

/// A CUJ's series by dimension values, found by the values' encoding
/// ([`DimensionValues`], which the event already carries): one hashed slice and one
/// compare, and no allocation for an existing series. Includes the CUJ's overflow series
/// once events were folded into it.
pub(crate) struct SeriesMap {
    index: CountedMap<SeriesKey, usize>,
    series: Vec<(DimensionValues, Series)>,
    /// The overflow series' values ([`crate::engine::OVERFLOW`] for every dimension).
    overflow_key: DimensionValues,
    /// Latency buckets of a new series (the CUJ's bounds and +Inf).
    buckets: usize,
    /// Heap bytes the series hold beside the two tables: their values and spilled keys,
    /// windows, buckets and histograms.
    heap: usize,
    /// Room the series' histograms may still grow into, up to their cap.
    growth: usize,
    /// Series with no event for this long are removed (0: never).
    ttl_ms: u64,
    /// No series can have been idle for the TTL before this time.
    next_expiry_ms: u64,
    /// [`SeriesMap::committed`], kept as series come and go (it does not move as
    /// histograms grow: what they hold comes out of the room kept for them).
    committed: usize,
}

impl SeriesMap {
    /// No series yet; series of `buckets` latency buckets, the overflow series' values
    /// `overflow_key`, removed after `ttl_ms` without events (0: never).
    pub fn new(ttl_ms: u64, overflow_key: DimensionValues, buckets: usize) -> Self {
        let mut map = Self {
            index: CountedMap::default(),
            series: Vec::new(),
            overflow_key,
            buckets,
            heap: 0,
            growth: 0,
            ttl_ms,
            next_expiry_ms: u64::MAX,
            committed: 0,
        };
        map.recommit();
        map
    }

    /// Series with no event for `ttl_ms` are removed from now on (0: never).
    pub fn set_ttl(&mut self, ttl_ms: u64) {
        self.ttl_ms = ttl_ms;
        self.next_expiry_ms = 0;
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// No series can have been idle for the TTL before this time (`u64::MAX`: none may).
    pub fn next_expiry_ms(&self) -> u64 {
        self.next_expiry_ms
    }

    /// Where the series of `key` is, if it exists.
    pub fn find(&self, key: &DimensionValues) -> Option<usize> {
        self.index.get(key.as_bytes()).copied()
    }

    pub fn at_mut(&mut self, i: usize) -> &mut Series {
        &mut self.series[i].1
    }

    /// A new series for an event at `now_ms`.
    pub fn new_series(&self, now_ms: u64) -> Series {
        Series::new(self.buckets, now_ms)
    }

    /// The overflow series' place, added for an event at `now_ms` if missing.
    pub fn overflow(&mut self, now_ms: u64) -> usize {
        match self.find(&self.overflow_key) {
            Some(at) => at,
            None => self.insert(self.overflow_key.clone(), self.new_series(now_ms)),
        }
    }

    /// Adds the series of `key` (which must not exist yet); returns its place.
    pub fn insert(&mut self, key: DimensionValues, series: Series) -> usize {
        let i = self.series.len();
        self.heap += key_heap(key.as_bytes().len()) + series.heap_bytes();
        self.growth += histogram_room(series.latency_hist.heap_bytes());
        if self.ttl_ms > 0 {
            let due = series.last_event_ms.saturating_add(self.ttl_ms);
            self.next_expiry_ms = self.next_expiry_ms.min(due);
        }
        self.index.insert(SeriesKey::new(key.as_bytes()), i);
        self.series.push((key, series));
        self.recommit();
        i
    }

    /// The most a new series of `key` adds to [`SeriesMap::bytes`] over its life: itself
    /// with a full histogram, and the tables' growth if they are full.
    pub fn cost_of_new(&mut self, key: &DimensionValues) -> usize {
        self.table_growth() + key_heap(key.as_bytes().len()) + Series::max_heap_bytes(self.buckets)
    }

    /// [`SeriesMap::cost_of_new`] without tidying the index first: never less.
    fn cost_bound_of_new(&self, key: &DimensionValues) -> usize {
        self.list_growth()
            + self.index.growth_bound_new()
            + key_heap(key.as_bytes().len())
            + Series::max_heap_bytes(self.buckets)
    }

    /// What the series hold and may still grow into without asking: [`SeriesMap::bytes`],
    /// the room kept for their histograms, and the overflow series while there is none
    /// (events fold into it when nothing else fits, so its room is kept).
    pub fn committed(&self) -> usize {
        self.committed
    }

    fn recommit(&mut self) {
        let overflow = if self.find(&self.overflow_key).is_some() {
            0
        } else {
            self.cost_bound_of_new(&self.overflow_key)
        };
        self.committed = self.bytes() + self.growth + overflow;
    }

    /// What the series table and the index would add by taking one more series.
    fn table_growth(&mut self) -> usize {
        self.list_growth() + self.index.growth_for_new()
    }

    /// What the series table would add by taking one more series.
    fn list_growth(&self) -> usize {
        let cap = self.series.capacity();
        if self.series.len() < cap {
            return 0;
        }
        vec_bytes::<(DimensionValues, Series)>((cap * 2).max(4))
            - vec_bytes::<(DimensionValues, Series)>(cap)
    }

    /// Notes that a series' histogram went from `before` to `after` heap bytes.
    pub fn histogram_changed(&mut self, before: usize, after: usize) {
        self.heap = self.heap + after - before;
        self.growth = self.growth + histogram_room(after) - histogram_room(before);
        self.recommit();
    }

    /// Heap bytes of every series with the tables holding them.
    pub fn bytes(&self) -> usize {
        self.heap
            + vec_bytes::<(DimensionValues, Series)>(self.series.capacity())
            + self.index.bytes()
    }

    /// Room the series' histograms may still grow into.
    #[cfg(test)]
    pub fn growth(&self) -> usize {
        self.growth
    }

    /// [`SeriesMap::bytes`] and [`SeriesMap::growth`] counted again, series by series.
    #[cfg(test)]
    pub fn recount(&self) -> (usize, usize) {
        let heap: usize = self
            .series
            .iter()
            .map(|(k, s)| key_heap(k.as_bytes().len()) + s.heap_bytes())
            .sum();
        let growth = self
            .series
            .iter()
            .map(|(_, s)| histogram_room(s.latency_hist.heap_bytes()))
            .sum();
        let tables = vec_bytes::<(DimensionValues, Series)>(self.series.capacity())
            + crate::table::table_bytes::<(SeriesKey, usize)>(self.index.slots_capacity());
        (heap + tables, growth)
    }

    /// Removes the series idle for the TTL at `now_ms` (no event for that long, and no
    /// settling event pointing at them), keeping the others in order; gives back the
    /// tables' memory once they are mostly empty. Cheap unless some series may be idle.
    pub fn expire(&mut self, now_ms: u64) -> Expired {
        let mut out = Expired::default();
        let ttl = self.ttl_ms;
        if ttl == 0 || now_ms < self.next_expiry_ms {
            return out;
        }
        let idle = |s: &Series| s.settling == 0 && now_ms.saturating_sub(s.last_event_ms) >= ttl;
        let recheck = now_ms.saturating_add(SWEEP_INTERVAL_MS);
        let mut next = u64::MAX;
        let mut any = false;
        for (_, s) in &self.series {
            if idle(s) {
                any = true;
                continue;
            }
            let due = s.last_event_ms.saturating_add(ttl);
            // Held by settling events past its time: looked at again a little later.
            next = next.min(if due <= now_ms { recheck } else { due });
        }
        // A sweep that found nothing (the oldest series had events since) waits a little
        // before the next, so series touched just before their time cost one sweep a
        // second at most, not one per call.
        self.next_expiry_ms = if any { next } else { next.max(recheck) };
        if !any {
            return out;
        }
        let mut places = Vec::with_capacity(self.series.len());
        let (mut heap, mut growth, mut kept, mut moved) = (self.heap, self.growth, 0, false);
        self.series.retain(|(key, s)| {
            if idle(s) {
                heap -= key_heap(key.as_bytes().len()) + s.heap_bytes();
                growth -= histogram_room(s.latency_hist.heap_bytes());
                places.push(GONE);
                return false;
            }
            moved |= s.settling > 0 && kept != places.len();
            places.push(kept);
            kept += 1;
            true
        });
        out.removed = (places.len() - kept) as u64;
        (self.heap, self.growth) = (heap, growth);
        self.index.retain(|_, at| match places.get(*at) {
            Some(&to) if to != GONE => {
                *at = to;
                true
            }
            _ => false,
        });
        let len = self.series.len();
        if len <= self.series.capacity() / 4 {
            self.series.shrink_to(len * 2);
        }
        if len <= self.index.slots_capacity() / 4 {
            self.index.shrink_to(len * 2);
        }
        self.recommit();
        if moved {
            out.moved = Some(places);
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&DimensionValues, &Series)> {
        self.series.iter().map(|(k, v)| (k, v))
    }

    /// Every series, by dimension values.
    pub fn sorted(&self) -> Vec<(&DimensionValues, &Series)> {
        let mut all: Vec<_> = self.iter().collect();
        all.sort_by(|a, b| a.0.iter().cmp(b.0.iter()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keys_short_and_long_find_their_series() {
        let mut map = SeriesMap::new(0, DimensionValues::new(&["__overflow__"]), 1);
        let short = DimensionValues::new(&["gold", "tenant-0042"]);
        let at_limit = DimensionValues::new(&["x".repeat(INLINE_KEY - 4)]);
        let long = DimensionValues::new(&["gold", &"t".repeat(300)]);
        assert!(at_limit.as_bytes().len() == INLINE_KEY && long.as_bytes().len() > INLINE_KEY);
        for (n, key) in [&short, &at_limit, &long].into_iter().enumerate() {
            assert_eq!(map.find(key), None);
            let i = map.insert(key.clone(), Series::new(1, 0));
            map.at_mut(i).available_good = n as u64 + 1;
        }
        for (n, key) in [&short, &at_limit, &long].into_iter().enumerate() {
            let i = map.find(key).expect("added");
            assert_eq!(map.at_mut(i).available_good, n as u64 + 1);
        }
        // Keys differing only past the inline part, or by a prefix, are different series.
        assert_eq!(
            map.find(&DimensionValues::new(&["gold", &"t".repeat(299)])),
            None
        );
        assert_eq!(
            map.find(&DimensionValues::new(&["gold", "tenant-004"])),
            None
        );
        assert_eq!(map.len(), 3);
        assert_eq!((map.bytes(), map.growth()), map.recount());
    }

    #[test]
    fn idle_series_go_in_order_and_their_memory_comes_back() {
        let mut map = SeriesMap::new(1_000, DimensionValues::new(&["__overflow__"]), 16);
        let key = |n: usize| DimensionValues::new(&[format!("tenant-{n}")]);
        for n in 0..100 {
            map.insert(key(n), Series::new(16, n as u64 * 10));
        }
        let full = map.bytes();
        // One held by a settling event stays, however idle.
        let held = map.find(&key(3)).expect("series");
        map.at_mut(held).settling = 1;
        assert_eq!(map.expire(999).removed, 0, "not idle for the TTL yet");
        let out = map.expire(1_500);
        assert_eq!(out.removed, 50, "the first fifty, but the held one");
        let places = out.moved.expect("the held series moved");
        assert_eq!(places[3], 0, "kept first, in order");
        assert_eq!(places[51], 1);
        assert_eq!(places[0], GONE);
        assert_eq!(map.len(), 50);
        assert_eq!(map.find(&key(51)), Some(1));
        assert_eq!(map.find(&key(0)), None);
        assert_eq!((map.bytes(), map.growth()), map.recount());
        assert!(map.bytes() < full * 2 / 3);
        map.at_mut(0).settling = 0;
        let out = map.expire(10_000);
        assert_eq!((out.removed, out.moved.is_none()), (50, true));
        assert_eq!(map.len(), 0);
        assert_eq!(map.bytes(), 0, "an empty map holds nothing");
    }
}
