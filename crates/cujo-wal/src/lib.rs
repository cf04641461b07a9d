//! cujo's write-ahead log (`wal:`, issue 14): a receiver appends a request and waits for
//! the fdatasync that covers it before acknowledging, so nothing acknowledged is lost even
//! on SIGKILL or power loss; after a restart, what was acknowledged and not yet exported
//! is replayed.
//!
//! # What it owns
//! One directory: its lock, its segment files, their format, the writer thread that
//! appends to them (group commit), replay, and deleting a segment once nothing references
//! it. It knows nothing of OTLP, spans, budgets or the pipeline: a record is opaque bytes.
//! It must not touch any file in the directory other than `LOCK`, `.probe` and
//! `<20 digits>.wal`, and nothing outside the directory.
//!
//! # Layout
//! - [`config`]: `wal:` as written ([`WalConfig`], its `validate`) and [`WalSettings`].
//! - [`wal`]: [`Wal`]: open (directory checks, lock, segments found), [`Wal::append`], close.
//! - `writer`: the writer thread: group commit, rotation, failures; its housekeeping
//!   thread deletes released segments and creates the next one ahead of time.
//! - [`replay`]: reading the segments found at open ([`Replay`]).
//! - [`segment`]: [`SegmentRef`], the files underneath, the lock.
//! - [`mod@format`]: the bytes on disk.
//! - [`stats`]: [`WalStats`], counters and gauges for `/metrics`.
//! - [`error`]: [`WalError`] (open, replay) and [`AppendError`] (refusals).
//!
//! # On disk
//! `<directory>/LOCK` (`flock`ed while open) and segment files `<seq:020>.wal`, appended
//! in `seq` order. A segment starts with a 16-byte header (`CUJOWAL`, version 1, `seq`
//! LE); each record is framed as `magic (C5 1E 9A F7) | len: u32 LE | crc32(len ++
//! payload): u32 LE | payload`. Segments are written in whole 4 KiB blocks with direct I/O
//! where the file system allows it (no page cache; see [`segment`]), so a file ends in
//! fewer than 4 KiB of zeros after its last record, which replay takes as the end. A segment grows until the next record would pass
//! `segment_size`, then it is sealed and the next one (created ahead of time, its header
//! synced) takes over. Each open starts a new segment; the ones found are only read and
//! deleted (a header-only segment left by a crash replays nothing). A clean close removes
//! the next segment if it was never used.
//!
//! # Lifecycle of a record
//! [`Wal::append`] queues it (refusing at once when `max_size`, `max_pending` or
//! `max_record_size` would be passed); the writer writes it and, within
//! `commit_interval` (sooner once 1 MiB is gathered), fdatasyncs it with every other
//! record written since the last sync, then resolves its future with an `Arc<SegmentRef>`. Whoever holds the data keeps that
//! reference until it is exported or dropped (with a count). A segment's file is deleted
//! when it is sealed and its last reference drops; that is also what lowers the live size
//! `max_size` bounds. The same holds for replayed records.
//!
//! # Failure modes
//! - **Crash mid-write (torn tail).** Replay stops at the last complete record of the
//!   segment and counts the rest as lost (`lost_records`, `lost_bytes`); those records
//!   were never acknowledged.
//! - **Damage (a bit flip).** A record whose magic, length or CRC is wrong is skipped to
//!   the next offset where a whole, valid record starts (`corrupt_skips`,
//!   `corrupt_bytes`); no length is trusted beyond what is left in the file or
//!   [`replay::FORMAT_MAX_RECORD`]. Damage in the last record of a segment cannot be told
//!   from a torn tail and is counted as one. A segment read with either is named in one
//!   warning when its reading ends.
//! - **Write or sync fails (ENOSPC, EIO).** Every record not yet synced is refused with
//!   [`AppendError::Io`]; the segment is truncated to its last synced length and sealed;
//!   the next append starts a new segment. If even the truncation fails, a refused
//!   record may be replayed later: a duplicate, never a loss. The first failure of a run
//!   is logged (an error naming the segment and the cause); the rest are counted
//!   (`refused_io`) but logged only at debug level, and the first sync that succeeds again
//!   logs how many were refused meanwhile.
//! - **Full, busy.** Retryable refusals ([`AppendError::is_retryable`]) for the client
//!   to send again later (`UNAVAILABLE` / HTTP 503), never an unbounded queue.
//! - **Duplicates.** Delivery is at least once: a record written but not acknowledged
//!   (the process died between write and sync, or its future was dropped) is replayed,
//!   as are records whose references were still held when the log was closed.
//! - **Directory.** Not a directory, not writable, or locked by another open log: [`Wal::open`]
//!   fails at once, naming the path.
//!
//! # Measured
//! See the crate's `README.md` (64 appenders of 16 KiB records, `commit_interval: 5ms`).
#![deny(unsafe_code)]

pub mod config;
pub mod error;
pub mod format;
pub mod replay;
pub mod segment;
pub mod stats;
pub mod wal;
mod writer;

#[cfg(test)]
mod tests;

pub use config::{WalConfig, WalSettings};
pub use error::{AppendError, WalError};
pub use replay::{Replay, ReplayCounts, ReplayRecord};
pub use segment::SegmentRef;
pub use stats::{WalStats, WalStatsSnapshot};
pub use wal::Wal;
