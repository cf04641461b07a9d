//! Reading the segments found at open: every complete record in append order, skipping
//! (and counting) damage. Blocking file reads: run it on a blocking thread.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use crate::error::WalError;
use crate::format::{
    BLOCK, RECORD_HEADER_LEN, RECORD_MAGIC, SEGMENT_HEADER_LEN, decode_header, header_is_valid,
    record_crc,
};
use crate::segment::SegmentRef;
use crate::stats::WalStats;

/// The largest payload a reader believes: a length above it is damage, never an allocation.
pub const FORMAT_MAX_RECORD: u64 = 1 << 30;

/// Bytes read from a segment at a time.
const WINDOW: usize = 1 << 20;

/// One record written before the restart and not yet trimmed.
#[derive(Debug, Clone)]
pub struct ReplayRecord {
    /// Keep it while what the payload carried is in flight (see [`SegmentRef`]).
    pub segment: Arc<SegmentRef>,
    pub payload: Bytes,
}

/// What a replay has handed out and skipped so far (all of it once it returned `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayCounts {
    pub segments: u64,
    pub records: u64,
    /// Payload bytes of `records`.
    pub bytes: u64,
    /// Torn tails (a crash mid-write): at most one partly written record each.
    pub lost_records: u64,
    /// Bytes after the last complete record of a segment.
    pub lost_bytes: u64,
    /// Damaged stretches skipped to the next valid record (at least one record each).
    pub corrupt_skips: u64,
    pub corrupt_bytes: u64,
}

/// A segment found at open, not yet read.
pub(crate) struct FoundSegment {
    pub seq: u64,
    pub path: PathBuf,
    pub segment: Arc<SegmentRef>,
}

/// The records of the log as it was at open, in append order: an iterator of
/// `Result<ReplayRecord, WalError>`. An `Err` (a segment that cannot be read) is followed
/// by the next segment's records; the unreadable segment is kept for the next open.
///
/// Dropping a replay before its end keeps every segment it has not finished, so nothing
/// acknowledged is deleted unread (what it did hand out may then be replayed twice).
pub struct Replay {
    pending: VecDeque<FoundSegment>,
    current: Option<SegmentScan>,
    counts: ReplayCounts,
    stats: Arc<WalStats>,
}

impl Replay {
    pub(crate) fn new(found: Vec<FoundSegment>, stats: Arc<WalStats>) -> Self {
        Self {
            pending: found.into(),
            current: None,
            counts: ReplayCounts::default(),
            stats,
        }
    }

    pub fn counts(&self) -> ReplayCounts {
        self.counts
    }

    /// Segments not yet finished (the one being read included).
    pub fn segments_left(&self) -> usize {
        self.pending.len() + usize::from(self.current.is_some())
    }
}

impl Iterator for Replay {
    type Item = Result<ReplayRecord, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let found = self.pending.pop_front()?;
                self.counts.segments += 1;
                match SegmentScan::open(found) {
                    Ok(scan) => self.current = Some(scan),
                    Err((found, e)) => {
                        found.segment.keep();
                        return Some(Err(WalError::Segment {
                            path: found.path,
                            what: "cannot be read for replay",
                            source: e,
                        }));
                    }
                }
            }
            let scan = self.current.as_mut()?;
            let before = (scan.lost, scan.corrupt);
            let step = scan.next_record();
            let (lost, corrupt) = (scan.lost, scan.corrupt);
            count_damage(&mut self.counts, &self.stats, before, lost, corrupt);
            match step {
                Ok(Some(payload)) => {
                    let len = payload.len() as u64;
                    self.counts.records += 1;
                    self.counts.bytes += len;
                    self.stats.replayed_records.fetch_add(1, Relaxed);
                    self.stats.replayed_bytes.fetch_add(len, Relaxed);
                    return Some(Ok(ReplayRecord {
                        segment: scan.found.segment.clone(),
                        payload,
                    }));
                }
                Ok(None) => {
                    if let Some(scan) = self.current.take() {
                        scan.report_damage();
                    }
                }
                Err(e) => {
                    let scan = self.current.take()?;
                    scan.found.segment.keep();
                    return Some(Err(WalError::Segment {
                        path: scan.found.path,
                        what: "read failed during replay",
                        source: e,
                    }));
                }
            }
        }
    }
}

fn count_damage(
    counts: &mut ReplayCounts,
    stats: &WalStats,
    before: (Damage, Damage),
    lost: Damage,
    corrupt: Damage,
) {
    let (dl, dc) = (lost.minus(before.0), corrupt.minus(before.1));
    counts.lost_records += dl.stretches;
    counts.lost_bytes += dl.bytes;
    counts.corrupt_skips += dc.stretches;
    counts.corrupt_bytes += dc.bytes;
    stats.lost_records.fetch_add(dl.stretches, Relaxed);
    stats.lost_bytes.fetch_add(dl.bytes, Relaxed);
    stats.corrupt_skips.fetch_add(dc.stretches, Relaxed);
    stats.corrupt_bytes.fetch_add(dc.bytes, Relaxed);
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(scan) = &self.current {
            scan.found.segment.keep();
        }
        for found in &self.pending {
            found.segment.keep();
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Damage {
    stretches: u64,
    bytes: u64,
}

impl Damage {
    fn add(&mut self, bytes: u64) {
        self.stretches += 1;
        self.bytes += bytes;
    }
    fn minus(self, earlier: Damage) -> Damage {
        Damage {
            stretches: self.stretches - earlier.stretches,
            bytes: self.bytes - earlier.bytes,
        }
    }
}

/// Reading one segment: a window of it in memory, the position of the next record.
struct SegmentScan {
    found: FoundSegment,
    file: File,
    /// The file's length at open; nothing writes to a segment found at open.
    len: u64,
    pos: u64,
    window: Vec<u8>,
    window_start: u64,
    lost: Damage,
    corrupt: Damage,
}

impl SegmentScan {
    fn open(found: FoundSegment) -> Result<Self, (FoundSegment, io::Error)> {
        let file = match File::open(&found.path) {
            Ok(f) => f,
            Err(e) => return Err((found, e)),
        };
        let len = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return Err((found, e)),
        };
        Ok(Self {
            found,
            file,
            len,
            pos: 0,
            window: Vec::new(),
            window_start: 0,
            lost: Damage::default(),
            corrupt: Damage::default(),
        })
    }

    /// One log line for a segment read to its end with damage, naming the file.
    fn report_damage(&self) {
        let (lost, corrupt) = (self.lost, self.corrupt);
        if lost.stretches + corrupt.stretches == 0 {
            return;
        }
        tracing::warn!(
            segment = %self.found.path.display(),
            torn_tail_bytes = lost.bytes,
            damaged_stretches = corrupt.stretches,
            damaged_bytes = corrupt.bytes,
            "wal: replay skipped what it could not read in this segment"
        );
    }

    /// The next complete record's payload, or `None` at the end of the segment.
    fn next_record(&mut self) -> io::Result<Option<Bytes>> {
        if self.pos == 0 {
            self.read_header()?;
        }
        while self.pos < self.len {
            if let Some((payload, next)) = self.record_at(self.pos)? {
                self.pos = next;
                return Ok(Some(payload));
            }
            match self.find_valid_record(self.pos + 1)? {
                Some(at) => {
                    self.corrupt.add(at - self.pos);
                    self.pos = at;
                }
                None => {
                    // The writer pads its last block with zeros: not a record, not a loss.
                    if !self.is_padding(self.pos)? {
                        self.lost.add(self.len - self.pos);
                    }
                    self.pos = self.len;
                }
            }
        }
        Ok(None)
    }

    /// Whether the file from `pos` to its end is the zeros that end its last block.
    fn is_padding(&mut self, pos: u64) -> io::Result<bool> {
        let rest = self.len - pos;
        if rest >= BLOCK as u64 || !self.len.is_multiple_of(BLOCK as u64) {
            return Ok(false);
        }
        Ok(self.bytes_at(pos, rest as usize)?.iter().all(|b| *b == 0))
    }

    fn read_header(&mut self) -> io::Result<()> {
        if self.len < SEGMENT_HEADER_LEN {
            // Created, header not yet written: a crash while rotating.
            if self.len > 0 {
                self.lost.add(self.len);
            }
            self.pos = self.len;
            return Ok(());
        }
        let header = self.bytes_at(0, SEGMENT_HEADER_LEN as usize)?.to_vec();
        if header_is_valid(&header, self.found.seq) {
            self.pos = SEGMENT_HEADER_LEN;
            return Ok(());
        }
        match self.find_valid_record(0)? {
            Some(at) => {
                self.corrupt.add(at);
                self.pos = at;
            }
            None => {
                self.corrupt.add(self.len);
                self.pos = self.len;
            }
        }
        Ok(())
    }

    /// The record starting at `pos` and where the next one starts, if it is whole and its
    /// CRC matches.
    fn record_at(&mut self, pos: u64) -> io::Result<Option<(Bytes, u64)>> {
        let Some(body_at) = pos
            .checked_add(RECORD_HEADER_LEN)
            .filter(|&e| e <= self.len)
        else {
            return Ok(None);
        };
        let mut raw = [0u8; RECORD_HEADER_LEN as usize];
        raw.copy_from_slice(self.bytes_at(pos, RECORD_HEADER_LEN as usize)?);
        let Some(header) = decode_header(&raw) else {
            return Ok(None);
        };
        let len = u64::from(header.len);
        if len > FORMAT_MAX_RECORD || len > self.len - body_at {
            return Ok(None);
        }
        let payload = self.bytes_at(body_at, len as usize)?;
        if record_crc(header.len, payload) != header.crc {
            return Ok(None);
        }
        Ok(Some((Bytes::copy_from_slice(payload), body_at + len)))
    }

    /// The first offset at or after `from` where a valid record starts.
    fn find_valid_record(&mut self, from: u64) -> io::Result<Option<u64>> {
        let mut at = from;
        while at + RECORD_HEADER_LEN <= self.len {
            let take = (self.len - at).min(WINDOW as u64) as usize;
            let chunk = self.bytes_at(at, take)?;
            let hit = chunk
                .windows(RECORD_MAGIC.len())
                .position(|w| w == RECORD_MAGIC);
            match hit {
                Some(i) => {
                    let candidate = at + i as u64;
                    if self.record_at(candidate)?.is_some() {
                        return Ok(Some(candidate));
                    }
                    at = candidate + 1;
                }
                // The last three bytes may begin a magic that continues past the chunk.
                None if take > RECORD_MAGIC.len() => at += (take - RECORD_MAGIC.len() + 1) as u64,
                None => break,
            }
        }
        Ok(None)
    }

    /// `n` bytes at `pos` (within the file), from the window, refilled as needed.
    fn bytes_at(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        let end = pos + n as u64;
        let window_end = self.window_start + self.window.len() as u64;
        if pos < self.window_start || end > window_end {
            let take = (self.len - pos).min(WINDOW.max(n) as u64) as usize;
            self.window.resize(take, 0);
            self.file.read_exact_at(&mut self.window, pos)?;
            self.window_start = pos;
        }
        let start = (pos - self.window_start) as usize;
        Ok(&self.window[start..start + n])
    }
}
