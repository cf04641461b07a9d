//! The SLO state file: what a restart must not reset. Per CUJ its rolling windows (a 30-day
//! error budget), its cumulative totals (event counts, the latency histogram, the budget
//! chart's history) and each series' windows and totals; then the burn-rate alerts
//! notified as firing, so a restart neither pages again nor forgets to resolve. The format
//! is cujo's own: a magic header and version, the body, then a checksum. A file that is not
//! this format, is of a version this cujo does not read, or fails its checksum is refused
//! whole with a reason (the caller keeps it aside and starts empty).
//!
//! Version 3 (written now) is sparse: varints throughout, and a window's slots only where
//! they hold events, so a series costs what it holds (tens of bytes for a quiet one, about
//! 16 KiB for one busy in every slice of 31 days) instead of a fixed 25 KiB. Version 2 (the
//! windows only, every slot at fixed width) is still read, so an upgrade keeps the windows;
//! its totals start from zero.
//!
//! # Layout of version 3 (after `CUJOSLO\0` and the version, little-endian u32)
//! a clean-shutdown flag byte, `since` (when the cumulative totals began, ms), the CUJ count, then per CUJ: name,
//! availability and latency windows ([`SlicedCounter`], sparse), a totals flag and totals
//! ([`CujTotals`]), the series count, then per series: dimension values, windows
//! ([`SeriesWindows`], sparse), a totals flag and totals ([`SeriesTotals`]). Then the alerts
//! ([`SavedAlert`]) and the checksum (FNV-1a over everything before it, u64 LE).
//!
//! Version 4 (written now) is version 3 with one more list before the checksum: the keys
//! of events counted whose requests a write-ahead log may replay
//! ([`crate::engine::replay`]), a count then 8 bytes each. Version 3 files are read with
//! none.

pub(crate) mod codec;

use crate::histogram::ExpHistogram;
use crate::report::HistoryPoint;
use crate::window::{SeriesWindows, SlicedCounter};
use codec::{Reader, put_bytes, put_f64, put_len, put_opt_u64, put_u64};

const MAGIC: &[u8; 8] = b"CUJOSLO\0";
/// The version written.
const VERSION: u32 = 4;
/// The oldest version still read.
const OLDEST: u32 = 2;

/// Why a state file was not restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("not a cujo SLO state file (bad magic)")]
    Foreign,
    #[error("written by state format version {0}; this cujo reads versions {OLDEST} to {VERSION}")]
    Version(u32),
    #[error("checksum mismatch: the file is corrupt or truncated")]
    Corrupt,
    #[error("malformed at byte {0}")]
    Malformed(usize),
}

/// A whole state file, as read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SavedState {
    /// Saved at a clean shutdown: nothing was recorded after it, so its totals are exactly
    /// what was last exported (a periodic save's may be older).
    pub clean: bool,
    /// When the saved cumulative totals began (ms since the Unix epoch); 0 if unknown (a
    /// version 2 file, or an engine never told).
    pub since_ms: u64,
    pub cujs: Vec<CujWindows>,
    pub alerts: Vec<SavedAlert>,
    /// Keys of counted events a write-ahead log may still replay (version 4).
    pub counted: Vec<u64>,
}

/// One CUJ's state, as saved.
#[derive(Debug, Clone, PartialEq)]
pub struct CujWindows {
    pub name: String,
    pub availability: SlicedCounter,
    pub latency: SlicedCounter,
    /// `None` from a version 2 file.
    pub totals: Option<CujTotals>,
    pub series: Vec<SavedSeries>,
}

/// A CUJ's cumulative totals: what `/metrics` and the OTLP push count since `since_ms`,
/// and the burn-down chart's history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CujTotals {
    /// The latency bucket bounds the series' bucket counts are of (seconds): when the CUJ's
    /// threshold changed, its series' totals are not restored (their windows are).
    pub bounds: Vec<f64>,
    pub excluded: u64,
    pub overflowed: [u64; 2],
    pub unmeasured: [u64; 3],
    pub truncated: u64,
    pub expired: u64,
    pub latency: ExpHistogram,
    pub history: Vec<HistoryPoint>,
}

/// One series' state, as saved.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedSeries {
    pub dimensions: Vec<String>,
    pub windows: SeriesWindows,
    /// `None` from a version 2 file.
    pub totals: Option<SeriesTotals>,
}

/// A series' cumulative totals.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesTotals {
    pub counts: SeriesCounts,
    /// Per latency bucket of the CUJ's bounds, plus one for +Inf.
    pub buckets: Vec<u64>,
    pub latency: ExpHistogram,
}

/// A series' event counts since `since_ms`, and its latest bad trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeriesCounts {
    pub available_good: u64,
    pub available_bad: u64,
    pub latency_good: u64,
    pub latency_bad: u64,
    pub last_bad: Option<[u8; 16]>,
}

/// A burn-rate alert notified as firing (and not yet as resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedAlert {
    pub cuj: String,
    /// `availability` or `latency`.
    pub sli: String,
    /// The objective's window label (`30d`).
    pub window: String,
    /// `page` or `ticket`.
    pub severity: String,
    pub started_at_ms: u64,
    /// Set while it is clear but its resolution is held back.
    pub clear_since_ms: Option<u64>,
}

/// The checksum a state file ends with (little-endian), over everything before it. Public so
/// that tools and the fuzz targets can write a file whose body they made.
pub fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a: detects corruption, not tampering.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes a state file piece by piece, so the engine encodes its series where they are
/// instead of copying them first: [`Writer::new`], [`Writer::cuj`] then its
/// [`Writer::series`] for each CUJ, [`Writer::finish`] with the alerts.
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// `clean`: saved when nothing more will be recorded (at shutdown), so its totals are
    /// exactly what was last exported.
    pub fn new(since_ms: u64, clean: bool, cujs: usize) -> Self {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(u8::from(clean));
        put_u64(&mut out, since_ms);
        put_len(&mut out, cujs);
        Writer { out }
    }

    /// A CUJ's windows and totals; its `series` series follow.
    pub fn cuj(
        &mut self,
        name: &str,
        availability: &SlicedCounter,
        latency: &SlicedCounter,
        totals: &CujTotals,
        series: usize,
    ) {
        let out = &mut self.out;
        put_bytes(out, name.as_bytes());
        availability.write_sparse(out);
        latency.write_sparse(out);
        out.push(1);
        put_len(out, totals.bounds.len());
        for b in &totals.bounds {
            put_f64(out, *b);
        }
        for v in [totals.excluded, totals.truncated, totals.expired]
            .iter()
            .chain(&totals.overflowed)
            .chain(&totals.unmeasured)
        {
            put_u64(out, *v);
        }
        totals.latency.write_state(out);
        put_len(out, totals.history.len());
        for p in &totals.history {
            put_u64(out, p.at_ms);
            put_len(out, p.budget_remaining.len());
            for b in &p.budget_remaining {
                put_f64(out, *b);
            }
            for q in [p.p50, p.p90, p.p99] {
                match q {
                    None => out.push(0),
                    Some(v) => {
                        out.push(1);
                        put_f64(out, v);
                    }
                }
            }
        }
        put_len(out, series);
    }

    /// One series of the CUJ written last: its dimension values, windows and totals.
    pub fn series<'a>(
        &mut self,
        dimensions: impl Iterator<Item = &'a str> + Clone,
        windows: &SeriesWindows,
        counts: SeriesCounts,
        buckets: impl ExactSizeIterator<Item = u64>,
        latency: &ExpHistogram,
    ) {
        let out = &mut self.out;
        put_len(out, dimensions.clone().count());
        for d in dimensions {
            put_bytes(out, d.as_bytes());
        }
        windows.write_sparse(out);
        out.push(1);
        for v in [
            counts.available_good,
            counts.available_bad,
            counts.latency_good,
            counts.latency_bad,
        ] {
            put_u64(out, v);
        }
        put_len(out, buckets.len());
        for c in buckets {
            put_u64(out, c);
        }
        latency.write_state(out);
        match counts.last_bad {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id);
            }
        }
    }

    /// The alerts, then the checksum: the file.
    pub fn finish(self, alerts: &[SavedAlert]) -> Vec<u8> {
        self.finish_with(alerts, &[])
    }

    /// The alerts and the keys of counted events a replay must skip, then the checksum.
    pub fn finish_with(mut self, alerts: &[SavedAlert], counted: &[u64]) -> Vec<u8> {
        let out = &mut self.out;
        put_len(out, alerts.len());
        for a in alerts {
            for s in [&a.cuj, &a.sli, &a.window, &a.severity] {
                put_bytes(out, s.as_bytes());
            }
            put_u64(out, a.started_at_ms);
            put_opt_u64(out, a.clear_since_ms);
        }
        put_len(out, counted.len());
        out.reserve(counted.len() * 8);
        for k in counted {
            out.extend_from_slice(&k.to_le_bytes());
        }
        let sum = checksum(&self.out);
        self.out.extend_from_slice(&sum.to_le_bytes());
        self.out
    }
}

/// Writes `state` whole (what [`decode`] reads back).
pub fn encode(state: &SavedState) -> Vec<u8> {
    let mut w = Writer::new(state.since_ms, state.clean, state.cujs.len());
    let empty = CujTotals::default();
    let none = SeriesTotals::default();
    for c in &state.cujs {
        w.cuj(
            &c.name,
            &c.availability,
            &c.latency,
            c.totals.as_ref().unwrap_or(&empty),
            c.series.len(),
        );
        for s in &c.series {
            let t = s.totals.as_ref().unwrap_or(&none);
            w.series(
                s.dimensions.iter().map(String::as_str),
                &s.windows,
                t.counts,
                t.buckets.iter().copied(),
                &t.latency,
            );
        }
    }
    w.finish_with(&state.alerts, &state.counted)
}

pub fn decode(bytes: &[u8]) -> Result<SavedState, StateError> {
    if bytes.len() < MAGIC.len() + 12 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StateError::Foreign);
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let mut v = [0u8; 4];
    v.copy_from_slice(&body[MAGIC.len()..MAGIC.len() + 4]);
    let version = u32::from_le_bytes(v);
    if !(OLDEST..=VERSION).contains(&version) {
        return Err(StateError::Version(version));
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(sum);
    if u64::from_le_bytes(stored) != checksum(body) {
        return Err(StateError::Corrupt);
    }
    let start = MAGIC.len() + 4;
    if version == 2 {
        return v2::decode(body, start);
    }
    let mut r = Reader::new(body, start);
    let state = read_v3(&mut r, version).ok_or(StateError::Malformed(r.at()))?;
    if !r.is_done() {
        return Err(StateError::Malformed(r.at()));
    }
    Ok(state)
}

/// Versions 3 and 4 (4 adds the counted events' keys).
fn read_v3(r: &mut Reader<'_>, version: u32) -> Option<SavedState> {
    let clean = match r.u8()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let since_ms = r.u64()?;
    let count = r.len()?;
    let mut cujs = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let name = r.string()?;
        let availability = SlicedCounter::read_sparse(r)?;
        let latency = SlicedCounter::read_sparse(r)?;
        let totals = match r.u8()? {
            0 => None,
            1 => Some(read_cuj_totals(r)?),
            _ => return None,
        };
        let series_count = r.len()?;
        let mut series = Vec::with_capacity(series_count.min(1024));
        for _ in 0..series_count {
            let dimensions = (0..r.len()?)
                .map(|_| r.string())
                .collect::<Option<Vec<_>>>()?;
            let windows = SeriesWindows::read_sparse(r)?;
            let totals = match r.u8()? {
                0 => None,
                1 => Some(read_series_totals(r)?),
                _ => return None,
            };
            series.push(SavedSeries {
                dimensions,
                windows,
                totals,
            });
        }
        cujs.push(CujWindows {
            name,
            availability,
            latency,
            totals,
            series,
        });
    }
    let alerts = (0..r.len()?)
        .map(|_| {
            Some(SavedAlert {
                cuj: r.string()?,
                sli: r.string()?,
                window: r.string()?,
                severity: r.string()?,
                started_at_ms: r.u64()?,
                clear_since_ms: r.opt_u64()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let counted = if version >= 4 {
        let n = r.len()?;
        let mut keys = Vec::with_capacity(n.min(crate::engine::replay::MAX_KEYS));
        for _ in 0..n {
            keys.push(u64::from_le_bytes(r.array::<8>()?));
        }
        keys
    } else {
        Vec::new()
    };
    Some(SavedState {
        clean,
        since_ms,
        cujs,
        alerts,
        counted,
    })
}

fn read_cuj_totals(r: &mut Reader<'_>) -> Option<CujTotals> {
    let bounds = (0..r.len()?)
        .map(|_| r.f64().filter(|b| b.is_finite()))
        .collect::<Option<Vec<_>>>()?;
    let mut t = CujTotals {
        bounds,
        excluded: r.u64()?,
        truncated: r.u64()?,
        expired: r.u64()?,
        ..CujTotals::default()
    };
    for v in t.overflowed.iter_mut().chain(t.unmeasured.iter_mut()) {
        *v = r.u64()?;
    }
    t.latency = ExpHistogram::read_state(r)?;
    for _ in 0..r.len()? {
        let at_ms = r.u64()?;
        let mut budget_remaining = (0..r.len()?).map(|_| r.f64()).collect::<Option<Vec<_>>>()?;
        // As long as it holds, as the engine's own points are (it counts their capacity).
        budget_remaining.shrink_to_fit();
        let mut q = [None; 3];
        for v in &mut q {
            *v = match r.u8()? {
                0 => None,
                1 => Some(r.f64()?),
                _ => return None,
            };
        }
        t.history.push(HistoryPoint {
            at_ms,
            budget_remaining,
            p50: q[0],
            p90: q[1],
            p99: q[2],
        });
    }
    Some(t)
}

fn read_series_totals(r: &mut Reader<'_>) -> Option<SeriesTotals> {
    let mut counts = SeriesCounts {
        available_good: r.u64()?,
        available_bad: r.u64()?,
        latency_good: r.u64()?,
        latency_bad: r.u64()?,
        last_bad: None,
    };
    let buckets = (0..r.len()?).map(|_| r.u64()).collect::<Option<Vec<_>>>()?;
    let latency = ExpHistogram::read_state(r)?;
    counts.last_bad = match r.u8()? {
        0 => None,
        1 => Some(r.array::<16>()?),
        _ => return None,
    };
    Some(SeriesTotals {
        counts,
        buckets,
        latency,
    })
}

/// Version 2: windows only, every slot at fixed width.
mod v2 {
    use super::{CujWindows, SavedSeries, SavedState, StateError};
    use crate::window::{SeriesWindows, SlicedCounter};

    pub(super) fn decode(body: &[u8], start: usize) -> Result<SavedState, StateError> {
        let mut pos = start;
        let u32_at = |pos: &mut usize| -> Result<u32, StateError> {
            let b = body
                .get(*pos..*pos + 4)
                .ok_or(StateError::Malformed(*pos))?;
            *pos += 4;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let count = u32_at(&mut pos)? as usize;
        let string = |pos: &mut usize| -> Result<String, StateError> {
            let len = u32_at(pos)? as usize;
            let s = body
                .get(*pos..pos.saturating_add(len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or(StateError::Malformed(*pos))?
                .to_string();
            *pos += len;
            Ok(s)
        };
        let n = SlicedCounter::state_len();
        let counter = |pos: &mut usize| {
            let c = body
                .get(*pos..*pos + n)
                .and_then(SlicedCounter::read_state)
                .ok_or(StateError::Malformed(*pos));
            *pos += n;
            c
        };
        let sn = SeriesWindows::state_len();
        let mut out = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            let name = string(&mut pos)?;
            let availability = counter(&mut pos)?;
            let latency = counter(&mut pos)?;
            let series_count = u32_at(&mut pos)? as usize;
            let mut series = Vec::with_capacity(series_count.min(1024));
            for _ in 0..series_count {
                let dims_count = u32_at(&mut pos)? as usize;
                let dimensions = (0..dims_count)
                    .map(|_| string(&mut pos))
                    .collect::<Result<Vec<_>, _>>()?;
                let windows = body
                    .get(pos..pos + sn)
                    .and_then(SeriesWindows::read_state)
                    .ok_or(StateError::Malformed(pos))?;
                pos += sn;
                series.push(SavedSeries {
                    dimensions,
                    windows,
                    totals: None,
                });
            }
            out.push(CujWindows {
                name,
                availability,
                latency,
                totals: None,
                series,
            });
        }
        if pos != body.len() {
            return Err(StateError::Malformed(pos));
        }
        Ok(SavedState {
            clean: false,
            since_ms: 0,
            cujs: out,
            alerts: Vec::new(),
            counted: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: u64 = 1_700_000_000_000;

    fn sample() -> SavedState {
        let mut a = SlicedCounter::new();
        a.add(NOW, 90, 100);
        let mut gold = SeriesWindows::new();
        gold.record(NOW, false, Some(true));
        let mut latency = ExpHistogram::new();
        for ms in [3, 40, 41, 900, 5_000_000] {
            latency.record(Duration::from_millis(ms));
        }
        latency.record(Duration::from_nanos(10));
        vec![CujWindows {
            name: "post_message".into(),
            availability: a,
            latency: SlicedCounter::new(),
            totals: Some(CujTotals {
                bounds: vec![0.1, 0.3, 1.0],
                excluded: 3,
                overflowed: [1, 2],
                unmeasured: [0, 4, 0],
                truncated: 5,
                expired: 6,
                latency: latency.clone(),
                history: vec![HistoryPoint {
                    at_ms: NOW,
                    budget_remaining: vec![0.5, -1.75],
                    p50: Some(0.04),
                    p90: None,
                    p99: Some(900.0),
                }],
            }),
            series: vec![
                SavedSeries {
                    dimensions: vec!["gold".into()],
                    windows: gold,
                    totals: Some(SeriesTotals {
                        counts: SeriesCounts {
                            available_good: 7,
                            available_bad: 1,
                            latency_good: 6,
                            latency_bad: 2,
                            last_bad: Some([9; 16]),
                        },
                        buckets: vec![1, 2, 3, 2],
                        latency,
                    }),
                },
                SavedSeries {
                    dimensions: vec!["free".into()],
                    windows: SeriesWindows::new(),
                    totals: Some(SeriesTotals {
                        buckets: vec![0; 4],
                        ..SeriesTotals::default()
                    }),
                },
            ],
        }]
        .into_iter()
        .fold(SavedState::default(), |mut s, c| {
            s.since_ms = NOW - 86_400_000;
            s.clean = true;
            s.cujs.push(c);
            s.alerts.push(SavedAlert {
                cuj: "post_message".into(),
                sli: "availability".into(),
                window: "30d".into(),
                severity: "page".into(),
                started_at_ms: NOW - 60_000,
                clear_since_ms: Some(NOW),
            });
            s
        })
    }

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes), Ok(sample()));
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert_eq!(decode(&flipped), Err(StateError::Corrupt));
        assert_eq!(decode(b"{\"json\": true}"), Err(StateError::Foreign));
        assert_eq!(decode(&bytes[..bytes.len() - 3]), Err(StateError::Corrupt));
        let mut newer = bytes.clone();
        newer[8] = 9;
        assert_eq!(decode(&newer), Err(StateError::Version(9)));
        let mut v1 = bytes.clone();
        v1[8] = 1;
        assert_eq!(decode(&v1), Err(StateError::Version(1)));
        // A well-summed body that is not a state: refused with where it went wrong.
        let mut body = bytes[..bytes.len() - 8].to_vec();
        body.push(0);
        let sum = checksum(&body);
        body.extend_from_slice(&sum.to_le_bytes());
        assert!(matches!(decode(&body), Err(StateError::Malformed(_))));
    }

    #[test]
    fn a_series_costs_what_it_holds() {
        let series = |windows: &SeriesWindows| {
            let mut out = Vec::new();
            windows.write_sparse(&mut out);
            out.len()
        };
        let mut one = SeriesWindows::new();
        one.record(NOW, true, Some(true));
        // Four heads and one slot in each ring.
        assert!(series(&one) <= 60, "{}", series(&one));
        // An event every 10 s for 31 days fills every slot: 11 KiB, under half the fixed
        // form's 25 KiB.
        let mut busy = SeriesWindows::new();
        for t in (0..31 * 86_400_000u64).step_by(10_000) {
            busy.record(NOW + t, t % 7 == 0, Some(t % 5 == 0));
        }
        assert!(
            series(&busy) * 2 < SeriesWindows::state_len(),
            "{} of {}",
            series(&busy),
            SeriesWindows::state_len()
        );
        let mut r = Reader::new(&[], 0);
        assert!(SeriesWindows::read_sparse(&mut r).is_none());
    }

    #[test]
    fn a_version_3_file_reads_with_no_counted_events_and_saves_as_version_4() {
        // Written by cujo before version 4 (the fuzz seed engine's clean save: three
        // series, totals, one alert).
        let v3 = include_bytes!("../testdata/state-v3-three-series-clean");
        assert_eq!(v3[8], 3);
        let state = decode(v3).expect("a version 3 file decodes");
        assert!(state.clean);
        assert!(state.counted.is_empty());
        assert_eq!(state.cujs.len(), 1);
        assert_eq!(state.cujs[0].series.len(), 3);
        assert!(state.cujs[0].totals.is_some());
        let mut with_keys = state.clone();
        with_keys.counted = vec![1, u64::MAX, 42];
        let again = encode(&with_keys);
        assert_eq!(again[8], 4);
        assert_eq!(decode(&again), Ok(with_keys));
    }

    #[test]
    fn a_version_2_file_keeps_its_windows() {
        // Written by cujo before version 3: the fuzz seed engine's one CUJ, 60 events an
        // hour apart up to NOW (all available: its roots' errors carry no error status),
        // over three tiers.
        let v2 = include_bytes!("../testdata/state-v2-three-series");
        let state = decode(v2).expect("a version 2 file decodes");
        assert_eq!(state.since_ms, 0);
        assert!(state.alerts.is_empty());
        let [cuj] = &state.cujs[..] else {
            panic!("one CUJ: {:?}", state.cujs.len())
        };
        assert_eq!(cuj.name, "checkout");
        assert!(cuj.totals.is_none());
        let month = Duration::from_secs(30 * 86_400);
        let counts = cuj.availability.counts(NOW, month).expect("30d");
        assert_eq!((counts.good, counts.valid), (60, 60));
        let mut tiers: Vec<_> = cuj.series.iter().map(|s| s.dimensions.join(",")).collect();
        tiers.sort();
        assert_eq!(
            tiers,
            ["enterpri", "gold", "silver"],
            "values as cut when saved"
        );
        for s in &cuj.series {
            assert!(s.totals.is_none());
            let c = s.windows.counts(NOW, month).expect("30d");
            assert_eq!(c.valid, 20, "{:?}", s.dimensions);
        }
        // Saved again, it is version 3 and smaller, with the same windows.
        let again = encode(&state);
        assert!(
            again.len() * 10 < v2.len(),
            "{} vs {}",
            again.len(),
            v2.len()
        );
        let back = decode(&again).expect("version 3");
        for (a, b) in back.cujs[0].series.iter().zip(&cuj.series) {
            assert_eq!(a.windows, b.windows);
        }
        assert_eq!(back.cujs[0].availability, cuj.availability);
    }
}
