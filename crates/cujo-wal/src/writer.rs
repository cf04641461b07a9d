//! The writer thread: group commit, rotation, refusing what could not be written, and
//! deleting segments nothing references.
//!
//! One thread owns every segment file. It takes all queued appends at once, frames them
//! into one buffer, writes it, and keeps taking what arrives until `commit_interval` after
//! the first; then one fdatasync covers them all and their futures resolve. A failed write
//! or sync refuses every record not yet synced, truncates the segment back to its last
//! synced length and seals it, so nothing refused is replayed.

use std::collections::BTreeMap;
use std::io;
use std::mem;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::error::AppendError;
use crate::format::{
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, encode_record, segment_header, segment_path,
};
use crate::segment::{SegmentFile, SegmentRef, Storage, sync_dir};
use crate::wal::{PendingAppend, Shared};

/// Framed bytes gathered before they are written (one write per this much, or per drain).
const WRITE_CHUNK: usize = 1 << 20;

/// A group this large is synced without waiting out `commit_interval`: one sync already
/// covers many records, and waiting longer would only add latency.
const GROUP_BYTES: u64 = 1 << 20;

type Done = oneshot::Sender<Result<Arc<SegmentRef>, AppendError>>;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    next_seq: u64,
    /// The segment appended to; `None` after a failure until the next append starts one.
    active: Option<Active>,
    /// Every segment file on disk and its length, for deleting and for `max_size`.
    live: BTreeMap<u64, LiveSegment>,
    /// Framed records not yet written, and their appends.
    buf: Vec<u8>,
    in_buf: Vec<Written>,
    /// Appends written to the active segment, waiting for its sync.
    unsynced: Vec<Written>,
}

struct Active {
    seq: u64,
    path: PathBuf,
    file: Box<dyn SegmentFile>,
    /// Bytes written (header included).
    len: u64,
    /// Bytes covered by the last successful sync; a failure truncates back to it.
    synced_len: u64,
    /// The writer's reference keeps the segment from being deleted while it is appended to.
    segment: Arc<SegmentRef>,
}

struct LiveSegment {
    path: PathBuf,
    len: u64,
}

struct Written {
    done: Done,
    /// Framed bytes (header and payload).
    framed: u64,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        next_seq: u64,
    ) -> Self {
        Self {
            shared,
            storage,
            dir,
            next_seq,
            active: None,
            live: BTreeMap::new(),
            buf: Vec::new(),
            in_buf: Vec::new(),
            unsynced: Vec::new(),
        }
    }

    /// Counts a segment found at open as live (it is deleted once replayed and released).
    pub(crate) fn adopt(&mut self, seq: u64, path: PathBuf, len: u64) {
        self.live.insert(seq, LiveSegment { path, len });
        self.grow(len);
        self.shared.stats.live_segments.fetch_add(1, Relaxed);
    }

    fn grow(&self, bytes: u64) {
        self.shared.used.fetch_add(bytes, Relaxed);
        self.shared.stats.live_bytes.fetch_add(bytes, Relaxed);
    }

    fn shrink(&self, bytes: u64) {
        self.shared.used.fetch_sub(bytes, Relaxed);
        self.shared.stats.live_bytes.fetch_sub(bytes, Relaxed);
    }

    /// Creates the next segment, writes and syncs its header, and syncs the directory so
    /// the file itself survives a crash.
    pub(crate) fn start_segment(&mut self) -> Result<(), (PathBuf, io::Error)> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = segment_path(&self.dir, seq);
        let create = || -> io::Result<Box<dyn SegmentFile>> {
            let mut file = self.storage.create(&path)?;
            file.write_at(&segment_header(seq), 0)?;
            file.sync_data()?;
            sync_dir(&self.dir)?;
            Ok(file)
        };
        let file = match create() {
            Ok(file) => file,
            Err(e) => {
                // Best effort: a leftover is at most a header, replayed as nothing.
                let _ = std::fs::remove_file(&path);
                return Err((path, e));
            }
        };
        self.live.insert(
            seq,
            LiveSegment {
                path: path.clone(),
                len: SEGMENT_HEADER_LEN,
            },
        );
        self.grow(SEGMENT_HEADER_LEN);
        self.shared.stats.live_segments.fetch_add(1, Relaxed);
        let segment = Arc::new(SegmentRef::new(
            seq,
            path.clone(),
            Arc::downgrade(&self.shared),
        ));
        self.active = Some(Active {
            seq,
            path,
            file,
            len: SEGMENT_HEADER_LEN,
            synced_len: SEGMENT_HEADER_LEN,
            segment,
        });
        Ok(())
    }

    pub(crate) fn run(mut self) {
        loop {
            let mut queue = self.shared.lock();
            while queue.appends.is_empty() && queue.unreferenced.is_empty() && !queue.closing {
                queue = self
                    .shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            let trims = mem::take(&mut queue.unreferenced);
            let has_appends = !queue.appends.is_empty();
            let closing = queue.closing;
            drop(queue);
            self.delete(trims);
            if has_appends {
                self.commit_group();
            } else if closing {
                break;
            }
        }
        // Sealing the last segment deletes it too if everything in it was released.
        self.active = None;
        let trims = mem::take(&mut self.shared.lock().unreferenced);
        self.delete(trims);
    }

    /// Writes what is queued and what arrives within `commit_interval` (or until the group
    /// reaches [`GROUP_BYTES`]), then syncs once.
    fn commit_group(&mut self) {
        let deadline = Instant::now() + self.shared.settings.commit_interval;
        loop {
            let (appends, closing) = {
                let mut queue = self.shared.lock();
                queue.pending_bytes = 0;
                (mem::take(&mut queue.appends), queue.closing)
            };
            self.write(appends);
            let group: u64 = self.unsynced.iter().map(|w| w.framed).sum();
            if closing || group >= GROUP_BYTES {
                break;
            }
            let queue = self.shared.lock();
            let wait = deadline.saturating_duration_since(Instant::now());
            let (queue, _) = self
                .shared
                .wake
                .wait_timeout_while(queue, wait, |q| q.appends.is_empty() && !q.closing)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if queue.appends.is_empty() {
                break;
            }
        }
        self.sync();
    }

    fn write(&mut self, appends: Vec<PendingAppend>) {
        let mut refused: Option<AppendError> = None;
        for PendingAppend { payload, done } in appends {
            let framed = RECORD_HEADER_LEN + payload.len() as u64;
            if let Some(e) = &refused {
                self.refuse(done, framed, e.clone());
                continue;
            }
            let full = self.active.as_ref().is_some_and(|a| {
                a.len + self.buf.len() as u64 + framed > self.shared.settings.segment_size
                    && a.len + self.buf.len() as u64 > SEGMENT_HEADER_LEN
            });
            if full {
                // Rotate: what is in the sealed segment is synced before the next begins.
                if let Some(e) = self.sync() {
                    self.refuse(done, framed, e.clone());
                    refused = Some(e);
                    continue;
                }
                self.active = None;
            }
            if self.active.is_none()
                && let Err((path, e)) = self.start_segment()
            {
                tracing::error!(segment = %path.display(), error = %e, "wal: cannot start a segment; refusing appends");
                let error = AppendError::io(path, "cannot start the segment", &e);
                self.refuse(done, framed, error.clone());
                refused = Some(error);
                continue;
            }
            encode_record(&mut self.buf, &payload);
            self.in_buf.push(Written { done, framed });
            if self.buf.len() >= WRITE_CHUNK {
                refused = self.flush();
            }
        }
        self.flush();
    }

    /// Writes the buffer to the active segment; on failure refuses everything not synced.
    fn flush(&mut self) -> Option<AppendError> {
        if self.buf.is_empty() {
            return None;
        }
        let active = self.active.as_mut()?;
        match active.file.write_at(&self.buf, active.len) {
            Ok(()) => {
                let n = self.buf.len() as u64;
                active.len += n;
                if let Some(live) = self.live.get_mut(&active.seq) {
                    live.len += n;
                }
                // The reservations of these appends are file bytes now.
                self.shared.stats.live_bytes.fetch_add(n, Relaxed);
                self.buf.clear();
                self.unsynced.append(&mut self.in_buf);
                None
            }
            Err(e) => Some(self.fail_segment("write failed", &e)),
        }
    }

    /// Writes what is buffered, syncs the active segment and completes every append
    /// written to it; or refuses them all and returns why.
    fn sync(&mut self) -> Option<AppendError> {
        if let Some(e) = self.flush() {
            return Some(e);
        }
        if self.unsynced.is_empty() {
            return None;
        }
        let active = self.active.as_mut()?;
        let started = Instant::now();
        let synced = active.file.sync_data();
        self.shared.stats.record_fsync(started.elapsed());
        if let Err(e) = synced {
            return Some(self.fail_segment("fdatasync failed", &e));
        }
        active.synced_len = active.len;
        let stats = &self.shared.stats;
        for w in self.unsynced.drain(..) {
            stats.appended_records.fetch_add(1, Relaxed);
            stats
                .appended_bytes
                .fetch_add(w.framed - RECORD_HEADER_LEN, Relaxed);
            // An append whose future was dropped still happened; its reference drops here.
            let _ = w.done.send(Ok(active.segment.clone()));
        }
        None
    }

    /// Refuses every append not yet synced, truncates the segment to its last sync and
    /// seals it, so a refused record is never replayed.
    fn fail_segment(&mut self, what: &'static str, e: &io::Error) -> AppendError {
        let Some(mut active) = self.active.take() else {
            return AppendError::Closed;
        };
        tracing::error!(segment = %active.path.display(), error = %e, "wal: {what}; refusing the records not yet synced and sealing the segment");
        let error = AppendError::io(active.path.clone(), what, e);
        // Cut first, refuse after: a client told "no" must not find its record replayed.
        let truncated = active
            .file
            .set_len(active.synced_len)
            .and_then(|()| active.file.sync_data());
        match truncated {
            Ok(()) => {
                let cut = active.len - active.synced_len;
                self.shrink(cut);
                if let Some(live) = self.live.get_mut(&active.seq) {
                    live.len = active.synced_len;
                }
            }
            Err(t) => {
                // The refused records may be replayed (duplicates, never loss).
                tracing::error!(segment = %active.path.display(), error = %t, "wal: cannot truncate the segment after a failure; records refused may be replayed");
            }
        }
        for w in mem::take(&mut self.in_buf) {
            self.refuse(w.done, w.framed, error.clone());
        }
        self.buf.clear();
        let stats = &self.shared.stats;
        for w in self.unsynced.drain(..) {
            stats.refused_io.fetch_add(1, Relaxed);
            let _ = w.done.send(Err(error.clone()));
        }
        error
    }

    /// Refuses an append whose bytes never reached the file.
    fn refuse(&self, done: Done, framed: u64, error: AppendError) {
        self.shared.release(framed);
        self.shared.stats.refused_io.fetch_add(1, Relaxed);
        let _ = done.send(Err(error));
    }

    /// Deletes segments whose last reference was dropped.
    fn delete(&mut self, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        let mut deleted = false;
        for seq in seqs {
            if self.active.as_ref().is_some_and(|a| a.seq == seq) {
                continue;
            }
            let Some(segment) = self.live.remove(&seq) else {
                continue;
            };
            match std::fs::remove_file(&segment.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = %segment.path.display(), error = %e, "wal: cannot delete a released segment; it stays and is replayed at the next open");
                    self.live.insert(seq, segment);
                    continue;
                }
            }
            self.shrink(segment.len);
            let stats = &self.shared.stats;
            stats.live_segments.fetch_sub(1, Relaxed);
            stats.segments_deleted.fetch_add(1, Relaxed);
            deleted = true;
        }
        if deleted && let Err(e) = sync_dir(&self.dir) {
            tracing::warn!(directory = %self.dir.display(), error = %e, "wal: cannot sync the directory after deleting segments");
        }
    }
}
