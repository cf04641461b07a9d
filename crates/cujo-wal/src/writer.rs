//! The writer thread: group commit, rotation, refusing what could not be written, and
//! deleting segments nothing references.
//!
//! One thread owns every segment file. It takes all queued appends at once, frames them
//! into one buffer, writes it, and keeps taking what arrives until `commit_interval` after
//! the first; then one fdatasync covers them all and their futures resolve. A failed write
//! or sync refuses every record not yet synced, truncates the segment back to its last
//! synced length and seals it, so nothing refused is replayed.
//!
//! Writes are whole blocks at block offsets from block-aligned memory ([`BlockBuf`]), so a
//! segment can be written with direct I/O ([`crate::segment::Disk`]): the block holding the
//! end of the last write is written again, with what follows it, by the next write.
//!
//! What need not hold up a group stays off this thread ([`Housekeeper`]): deleting released
//! segments (an unlink of a whole segment and a directory sync) and creating the next
//! segment ahead of time (create, header, data and directory syncs), so a rotation is a
//! swap. Measured with `wal_bench` (8 appenders of 80 KiB, `commit_interval: 0ms`), both on
//! this thread put the append p99 at 12-19 ms with 64 MiB segments against 3-8 ms with
//! segments too large to rotate.

use std::collections::BTreeMap;
use std::io;
use std::mem;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::error::AppendError;
use crate::format::{
    BLOCK, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, record_header, segment_header, segment_path,
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
    /// From the active segment's last block boundary: what of its last block is written,
    /// then framed records not yet written; `in_buf` are their appends.
    buf: BlockBuf,
    in_buf: Vec<Written>,
    /// Appends written to the active segment, waiting for its sync.
    unsynced: Vec<Written>,
    /// Deletes and prepares segments off the commit path; `None` if its thread could not
    /// start (then this thread does both itself).
    housekeeper: Option<Housekeeper>,
    /// `refused_io` when the current run of failures began; `None` while writes succeed.
    /// A full disk fails every group until space is freed: one line says so, not one each.
    failing_since: Option<u64>,
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
        let housekeeper = Housekeeper::start(shared.clone(), storage.clone(), dir.clone());
        Self {
            shared,
            storage,
            dir,
            next_seq,
            active: None,
            live: BTreeMap::new(),
            buf: BlockBuf::default(),
            in_buf: Vec::new(),
            unsynced: Vec::new(),
            housekeeper,
            failing_since: None,
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

    /// Starts the next segment: the one the housekeeper prepared, or one created here
    /// ([`create_segment`]); then asks for the one after.
    pub(crate) fn start_segment(&mut self) -> Result<(), (PathBuf, io::Error)> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = segment_path(&self.dir, seq);
        let prepared = self.housekeeper.as_ref().and_then(|h| h.take(seq));
        let file = match prepared {
            Some(file) => file,
            None => create_segment(self.storage.as_ref(), &self.dir, &path, seq)?,
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
        // Nothing is left unwritten when a segment ends (rotation syncs, failures refuse).
        debug_assert_eq!(self.buf.unwritten(), 0);
        self.buf.restart(&segment_header(seq));
        self.active = Some(Active {
            seq,
            path,
            file,
            len: SEGMENT_HEADER_LEN,
            synced_len: SEGMENT_HEADER_LEN,
            segment,
        });
        if let Some(h) = &self.housekeeper {
            h.prepare(self.next_seq);
        }
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
        // Its deletes done and the unused next segment removed before the log is closed.
        self.housekeeper = None;
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
        for PendingAppend { head, body, done } in appends {
            let framed = RECORD_HEADER_LEN + (head.len() + body.len()) as u64;
            if let Some(e) = &refused {
                self.refuse(done, framed, e.clone());
                continue;
            }
            let unwritten = self.buf.unwritten() as u64;
            let full = self.active.as_ref().is_some_and(|a| {
                a.len + unwritten + framed > self.shared.settings.segment_size
                    && a.len + unwritten > SEGMENT_HEADER_LEN
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
                self.log_failure(&path, "cannot start a segment", &e);
                let error = AppendError::io(path, "cannot start the segment", &e);
                self.refuse(done, framed, error.clone());
                refused = Some(error);
                continue;
            }
            self.buf.push(&record_header(&[&head, &body]));
            self.buf.push(&head);
            self.buf.push(&body);
            self.in_buf.push(Written { done, framed });
            if self.buf.unwritten() >= WRITE_CHUNK {
                refused = self.flush();
            }
        }
        self.flush();
    }

    /// Writes the buffer to the active segment; on failure refuses everything not synced.
    fn flush(&mut self) -> Option<AppendError> {
        let n = self.buf.unwritten() as u64;
        if n == 0 {
            return None;
        }
        let active = self.active.as_mut()?;
        // The block holding the segment's end so far, from its start.
        let at = active.len - self.buf.written() as u64;
        match active.file.write_at(self.buf.blocks(), at) {
            Ok(()) => {
                active.len += n;
                if let Some(live) = self.live.get_mut(&active.seq) {
                    live.len += n;
                }
                // The reservations of these appends are file bytes now.
                self.shared.stats.live_bytes.fetch_add(n, Relaxed);
                self.buf.written_through();
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
        if let Some(since) = self.failing_since.take() {
            let refused = stats.refused_io.load(Relaxed).saturating_sub(since);
            tracing::info!(
                refused,
                "wal: appends are written again after a failure; the appends refused meanwhile were refused retryably"
            );
        }
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
        self.log_failure(&active.path, what, e);
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

    /// Logs the first failure of a run (the next successful sync ends it); the rest only
    /// at debug level: each refusal is counted in `refused_io` either way.
    fn log_failure(&mut self, segment: &std::path::Path, what: &str, e: &io::Error) {
        if self.failing_since.is_some() {
            tracing::debug!(segment = %segment.display(), error = %e, "wal: {what}; refusing appends");
            return;
        }
        self.failing_since = Some(self.shared.stats.refused_io.load(Relaxed));
        tracing::error!(segment = %segment.display(), error = %e, "wal: {what}; appends are refused (retryably) until a write and its sync succeed again");
    }

    /// Refuses an append whose bytes never reached the file.
    fn refuse(&self, done: Done, framed: u64, error: AppendError) {
        self.shared.release(framed);
        self.shared.stats.refused_io.fetch_add(1, Relaxed);
        let _ = done.send(Err(error));
    }

    /// Deletes segments whose last reference was dropped (on the housekeeper's thread when
    /// it runs).
    fn delete(&mut self, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        for seq in seqs {
            if self.active.as_ref().is_some_and(|a| a.seq == seq) {
                continue;
            }
            if let Some(segment) = self.live.remove(&seq) {
                gone.push(segment);
            }
        }
        match &self.housekeeper {
            Some(h) => h.delete(gone),
            None => delete_segments(&self.shared, &self.dir, gone),
        }
    }
}

/// Creates segment `seq` at `path`, writes and syncs its header, and syncs the directory so
/// the file itself survives a crash. A failure removes what it made.
fn create_segment(
    storage: &dyn Storage,
    dir: &std::path::Path,
    path: &std::path::Path,
    seq: u64,
) -> Result<Box<dyn SegmentFile>, (PathBuf, io::Error)> {
    let create = || -> io::Result<Box<dyn SegmentFile>> {
        let mut file = storage.create(path)?;
        let mut header = BlockBuf::default();
        header.push(&segment_header(seq));
        file.write_at(header.blocks(), 0)?;
        file.sync_data()?;
        sync_dir(dir)?;
        Ok(file)
    };
    create().map_err(|e| {
        // Best effort: a leftover is at most a header, replayed as nothing.
        let _ = std::fs::remove_file(path);
        (path.to_path_buf(), e)
    })
}

/// Removes released segments' files, accounts for them, and syncs the directory once.
fn delete_segments(shared: &Shared, dir: &std::path::Path, segments: Vec<LiveSegment>) {
    let mut deleted = false;
    for segment in segments {
        match std::fs::remove_file(&segment.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Still on disk, still counted: replayed (as released records) at the next
                // open, which deletes it then.
                tracing::warn!(segment = %segment.path.display(), error = %e, "wal: cannot delete a released segment; it stays and is replayed at the next open");
                continue;
            }
        }
        shared.used.fetch_sub(segment.len, Relaxed);
        let stats = &shared.stats;
        stats.live_bytes.fetch_sub(segment.len, Relaxed);
        stats.live_segments.fetch_sub(1, Relaxed);
        stats.segments_deleted.fetch_add(1, Relaxed);
        deleted = true;
    }
    if deleted && let Err(e) = sync_dir(dir) {
        tracing::warn!(directory = %dir.display(), error = %e, "wal: cannot sync the directory after deleting segments");
    }
}

/// The writer's second thread: deletes released segments and creates the next segment
/// before it is needed, so neither waits in a group's path.
struct Housekeeper {
    chores: Arc<(Mutex<Chores>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Chores {
    delete: Vec<LiveSegment>,
    /// The segment to create next.
    prepare: Option<u64>,
    /// A segment is being created now.
    preparing: bool,
    prepared: Option<(u64, Box<dyn SegmentFile>)>,
    stop: bool,
}

impl Housekeeper {
    fn start(shared: Arc<Shared>, storage: Arc<dyn Storage>, dir: PathBuf) -> Option<Self> {
        let chores: Arc<(Mutex<Chores>, Condvar)> = Arc::default();
        let theirs = chores.clone();
        let thread = std::thread::Builder::new()
            .name("cujo-wal-housekeeper".into())
            .spawn(move || housekeep(&theirs, &shared, storage.as_ref(), &dir));
        match thread {
            Ok(t) => Some(Self {
                chores,
                thread: Some(t),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "wal: cannot start the housekeeping thread; the writer deletes and creates segments itself");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Chores> {
        self.chores
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn delete(&self, segments: Vec<LiveSegment>) {
        if segments.is_empty() {
            return;
        }
        self.lock().delete.extend(segments);
        self.chores.1.notify_all();
    }

    fn prepare(&self, seq: u64) {
        self.lock().prepare = Some(seq);
        self.chores.1.notify_all();
    }

    /// Segment `seq` if it was prepared (waiting while it is being prepared); `None` if it
    /// was not (a request not yet begun is called off: the writer creates it at once).
    fn take(&self, seq: u64) -> Option<Box<dyn SegmentFile>> {
        let mut chores = self.lock();
        while chores.preparing {
            chores = self
                .chores
                .1
                .wait(chores)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if chores.prepare == Some(seq) {
            chores.prepare = None;
        }
        match chores.prepared.take() {
            Some((s, file)) if s == seq => Some(file),
            Some((s, file)) => {
                // Not the one asked for (cannot happen while one writer asks in order):
                // put back, so stopping removes it.
                chores.prepared = Some((s, file));
                None
            }
            None => None,
        }
    }
}

impl Drop for Housekeeper {
    /// Finishes the deletes asked for, removes a prepared segment never used, and ends.
    fn drop(&mut self) {
        self.lock().stop = true;
        self.chores.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn housekeep(
    chores: &(Mutex<Chores>, Condvar),
    shared: &Shared,
    storage: &dyn Storage,
    dir: &std::path::Path,
) {
    let (lock, wake) = chores;
    let mut c = lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        while c.delete.is_empty() && c.prepare.is_none() && !c.stop {
            c = wake
                .wait(c)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let gone = mem::take(&mut c.delete);
        if !gone.is_empty() {
            drop(c);
            delete_segments(shared, dir, gone);
            c = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            continue;
        }
        if c.stop {
            if let Some((seq, file)) = c.prepared.take() {
                drop(file);
                let path = segment_path(dir, seq);
                if std::fs::remove_file(&path).is_ok() {
                    let _ = sync_dir(dir);
                }
            }
            return;
        }
        if let Some(seq) = c.prepare.take() {
            c.preparing = true;
            drop(c);
            let path = segment_path(dir, seq);
            let made = create_segment(storage, dir, &path, seq);
            c = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            c.preparing = false;
            match made {
                Ok(file) => c.prepared = Some((seq, file)),
                // The writer creates it itself and reports what goes wrong.
                Err((path, e)) => {
                    tracing::debug!(segment = %path.display(), error = %e, "wal: cannot prepare the next segment ahead")
                }
            }
            wake.notify_all();
        }
    }
}

/// Bytes to write from the start of a block of a segment, in memory aligned to [`BLOCK`],
/// written as whole blocks (the last one padded with zeros). The first `written` bytes are
/// already in the file: the part of its last block that was written before.
#[derive(Default)]
pub(crate) struct BlockBuf {
    /// `start` is where the aligned part of `raw` begins; `raw` is never resized in place,
    /// so the alignment holds until it is replaced by a larger one.
    raw: Vec<u8>,
    start: usize,
    len: usize,
    written: usize,
}

impl BlockBuf {
    /// Bytes not yet written.
    pub(crate) fn unwritten(&self) -> usize {
        self.len - self.written
    }

    /// Bytes at the start already in the file (fewer than [`BLOCK`]).
    pub(crate) fn written(&self) -> usize {
        self.written
    }

    /// Starts over at a block boundary whose block already holds `tail`.
    pub(crate) fn restart(&mut self, tail: &[u8]) {
        self.len = 0;
        self.written = 0;
        self.push(tail);
        self.written = tail.len();
    }

    /// Drops everything, written or not (a failed segment is sealed).
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.written = 0;
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if self.start + end.next_multiple_of(BLOCK) > self.raw.len() {
            self.grow(end);
        }
        self.raw[self.start + self.len..self.start + end].copy_from_slice(bytes);
        self.len = end;
    }

    /// Whole blocks from the start: the bytes, then zeros to the next block boundary.
    pub(crate) fn blocks(&mut self) -> &[u8] {
        let padded = self.len.next_multiple_of(BLOCK);
        let data = &mut self.raw[self.start..self.start + padded];
        data[self.len..].fill(0);
        data
    }

    /// After [`Self::blocks`] was written: keeps the part of the last block that is not
    /// whole, for the next write to write again with what follows.
    pub(crate) fn written_through(&mut self) {
        let whole = self.len - self.len % BLOCK;
        let from = self.start + whole;
        self.raw
            .copy_within(from..self.start + self.len, self.start);
        self.len -= whole;
        self.written = self.len;
    }

    /// A larger allocation (at least doubling), aligned afresh, with the bytes moved over.
    fn grow(&mut self, need: usize) {
        let capacity = need
            .next_multiple_of(BLOCK)
            .max(2 * self.capacity())
            .max(BLOCK);
        // Zeroed pages come from the allocator without being touched; the slack lets an
        // aligned start be found wherever the allocation lands.
        let mut raw = vec![0u8; capacity + BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        raw[start..start + self.len].copy_from_slice(&self.raw[self.start..self.start + self.len]);
        self.raw = raw;
        self.start = start;
    }

    fn capacity(&self) -> usize {
        (self.raw.len() - self.start) / BLOCK * BLOCK
    }
}

#[cfg(test)]
mod block_buf_tests {
    use super::*;

    #[test]
    fn writes_whole_aligned_blocks_and_keeps_the_last_partial_one() {
        let mut b = BlockBuf::default();
        b.restart(&[7; 16]);
        assert_eq!((b.written(), b.unwritten()), (16, 0));
        b.push(&[1; 5000]);
        assert_eq!(b.unwritten(), 5000);
        let blocks = b.blocks();
        assert_eq!(blocks.len(), 2 * BLOCK);
        assert_eq!(blocks.as_ptr().align_offset(BLOCK), 0);
        assert_eq!(&blocks[..16], &[7; 16]);
        assert!(blocks[16 + 5000..].iter().all(|b| *b == 0));
        b.written_through();
        // 5016 bytes from a block start: the second block's 920 are kept to write again.
        assert_eq!((b.written(), b.unwritten()), (5016 - BLOCK, 0));
        // Growing far past the first allocation keeps the start aligned and the bytes.
        b.push(&[2; 3 * BLOCK]);
        let blocks = b.blocks();
        assert_eq!(blocks.as_ptr().align_offset(BLOCK), 0);
        assert_eq!(blocks.len(), 4 * BLOCK);
        assert!(blocks[..5016 - BLOCK].iter().all(|b| *b == 1));
        assert!(
            blocks[5016 - BLOCK..5016 - BLOCK + 3 * BLOCK]
                .iter()
                .all(|b| *b == 2)
        );
        b.clear();
        assert_eq!((b.written(), b.unwritten()), (0, 0));
    }
}
