//! The SLO state file: each CUJ's rolling windows, so a restart does not reset a 30-day
//! error budget. The format is cujo's own: a magic header and version, then per CUJ its
//! name, both aggregate window counters and each series' windows (dimension values and
//! [`SeriesWindows`]), then a checksum. A file that is not this format, not this version,
//! or fails its checksum is refused whole with a reason (the caller reports it and starts
//! with empty windows).
//!
//! Version 2 added the per-series windows; a version 1 file is refused like any other.

use crate::window::{SeriesWindows, SlicedCounter};

const MAGIC: &[u8; 8] = b"CUJOSLO\0";
const VERSION: u32 = 2;

/// Why a state file was not restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("not a cujo SLO state file (bad magic)")]
    Foreign,
    #[error("written by state format version {0}; this cujo reads version {VERSION}")]
    Version(u32),
    #[error("checksum mismatch: the file is corrupt or truncated")]
    Corrupt,
    #[error("malformed at byte {0}")]
    Malformed(usize),
}

/// One CUJ's windows, as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CujWindows {
    pub name: String,
    pub availability: SlicedCounter,
    pub latency: SlicedCounter,
    /// Each series' dimension values and windows.
    pub series: Vec<(Vec<String>, SeriesWindows)>,
}

/// The checksum a state file ends with (little-endian), over everything before it. Public so
/// that tools and the fuzz targets can write a file whose body they made.
pub fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a: detects corruption, not tampering.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub fn encode(cujs: &[CujWindows]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(cujs.len() as u32).to_le_bytes());
    for c in cujs {
        out.extend_from_slice(&(c.name.len() as u32).to_le_bytes());
        out.extend_from_slice(c.name.as_bytes());
        c.availability.write_state(&mut out);
        c.latency.write_state(&mut out);
        out.extend_from_slice(&(c.series.len() as u32).to_le_bytes());
        for (dims, windows) in &c.series {
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&(d.len() as u32).to_le_bytes());
                out.extend_from_slice(d.as_bytes());
            }
            windows.write_state(&mut out);
        }
    }
    let sum = checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<CujWindows>, StateError> {
    if bytes.len() < MAGIC.len() + 16 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(StateError::Foreign);
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let mut pos = MAGIC.len();
    let u32_at = |pos: &mut usize| -> Result<u32, StateError> {
        let b = body
            .get(*pos..*pos + 4)
            .ok_or(StateError::Malformed(*pos))?;
        *pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let version = u32_at(&mut pos)?;
    if version != VERSION {
        return Err(StateError::Version(version));
    }
    let mut stored = [0u8; 8];
    stored.copy_from_slice(sum);
    if u64::from_le_bytes(stored) != checksum(body) {
        return Err(StateError::Corrupt);
    }
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
            let dims = (0..dims_count)
                .map(|_| string(&mut pos))
                .collect::<Result<Vec<_>, _>>()?;
            let windows = body
                .get(pos..pos + sn)
                .and_then(SeriesWindows::read_state)
                .ok_or(StateError::Malformed(pos))?;
            pos += sn;
            series.push((dims, windows));
        }
        out.push(CujWindows {
            name,
            availability,
            latency,
            series,
        });
    }
    if pos != body.len() {
        return Err(StateError::Malformed(pos));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<CujWindows> {
        let mut a = SlicedCounter::new();
        a.add(1_700_000_000_000, 90, 100);
        let mut gold = SeriesWindows::new();
        gold.record(1_700_000_000_000, false, Some(true));
        vec![CujWindows {
            name: "post_message".into(),
            availability: a,
            latency: SlicedCounter::new(),
            series: vec![
                (vec!["gold".into()], gold),
                (vec!["free".into()], SeriesWindows::new()),
            ],
        }]
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
        // A file of the previous version (no per-series windows) is refused by its version.
        let mut v1 = bytes.clone();
        v1[8] = 1;
        assert_eq!(decode(&v1), Err(StateError::Version(1)));
    }
}
