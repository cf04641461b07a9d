//! [`Wal`]: opening the directory (checks, lock, the segments found), appending, closing.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::config::WalSettings;
use crate::error::{AppendError, WalError};
use crate::format::{RECORD_HEADER_LEN, parse_segment_name, segment_path};
use crate::replay::{FoundSegment, Replay};
use crate::segment::{Disk, SegmentRef, Storage, try_lock};
use crate::stats::WalStats;
use crate::writer::Writer;

/// The lock file in the log's directory; `flock`ed for as long as a [`Wal`] is open.
pub const LOCK_FILE: &str = "LOCK";
const PROBE_FILE: &str = ".probe";

/// The write-ahead log. Cheap to share behind an `Arc`; appends from any task or thread.
/// Dropping it writes and syncs what is pending, deletes the sealed segments nothing
/// references any more, and releases the directory lock.
pub struct Wal {
    shared: Arc<Shared>,
    /// Joined on drop, so the log is closed (and unlocked) when `drop` returns.
    writer: Option<JoinHandle<()>>,
    /// Held open for the lock; closing it releases the `flock`.
    _lock: File,
}

/// What appenders, the writer thread and dropped [`SegmentRef`]s share.
pub(crate) struct Shared {
    pub(crate) settings: WalSettings,
    pub(crate) stats: Arc<WalStats>,
    /// Bytes of live segment files plus appends accepted but not yet written: what
    /// `max_size` bounds. Reserved by `append` before queueing, so refusals are immediate.
    pub(crate) used: AtomicU64,
    pub(crate) queue: Mutex<Queue>,
    /// Set by [`Wal::keep_remaining`]: segments released from now on stay on disk.
    pub(crate) keep: std::sync::atomic::AtomicBool,
    /// Wakes the writer: appends arrived, a segment lost its last reference, or closing.
    pub(crate) wake: Condvar,
}

pub(crate) struct Queue {
    pub(crate) appends: Vec<PendingAppend>,
    /// Framed bytes of `appends`, bounded by `max_pending`.
    pub(crate) pending_bytes: u64,
    /// Segments whose last [`SegmentRef`] was dropped, for the writer to delete.
    pub(crate) unreferenced: Vec<u64>,
    pub(crate) closing: bool,
}

pub(crate) struct PendingAppend {
    /// The record's payload is `head` then `body`.
    pub(crate) head: Bytes,
    pub(crate) body: Bytes,
    pub(crate) done: oneshot::Sender<Result<Arc<SegmentRef>, AppendError>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn unreferenced(&self, seq: u64) {
        if self.keep.load(Relaxed) {
            // Kept for the next start (see `Wal::keep_remaining`).
            return;
        }
        self.lock().unreferenced.push(seq);
        self.wake.notify_one();
    }

    pub(crate) fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Relaxed);
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `settings.directory`: checks the directory is
    /// writable, locks it, and starts a new segment for appends. The [`Replay`] holds every
    /// record found from before; read it (on a blocking thread) before trusting that the
    /// old segments are gone.
    pub fn open(settings: WalSettings) -> Result<(Wal, Replay), WalError> {
        Self::open_with(settings, Arc::new(Disk))
    }

    pub(crate) fn open_with(
        settings: WalSettings,
        storage: Arc<dyn Storage>,
    ) -> Result<(Wal, Replay), WalError> {
        let dir = settings.directory.clone();
        prepare_directory(&dir)?;
        let lock = lock_directory(&dir)?;
        probe_writable(&dir)?;
        let found = list_segments(&dir)?;

        let stats = Arc::new(WalStats::default());
        let shared = Arc::new(Shared {
            settings,
            stats: stats.clone(),
            used: AtomicU64::new(0),
            queue: Mutex::new(Queue {
                appends: Vec::new(),
                pending_bytes: 0,
                unreferenced: Vec::new(),
                closing: false,
            }),
            keep: std::sync::atomic::AtomicBool::new(false),
            wake: Condvar::new(),
        });
        let next_seq = found.last().map_or(1, |(seq, _, _)| seq + 1);
        let mut writer = Writer::new(shared.clone(), storage, dir, next_seq);
        let mut replay_segments = Vec::with_capacity(found.len());
        for (seq, path, len) in found {
            writer.adopt(seq, path.clone(), len);
            let segment = Arc::new(SegmentRef::new(seq, path.clone(), Arc::downgrade(&shared)));
            replay_segments.push(FoundSegment { seq, path, segment });
        }
        writer
            .start_segment()
            .map_err(|(path, e)| WalError::Segment {
                path,
                what: "cannot start a new segment",
                source: e,
            })?;
        let handle = std::thread::Builder::new()
            .name("cujo-wal-writer".into())
            .spawn(move || writer.run())
            .map_err(WalError::Thread)?;
        let wal = Wal {
            shared,
            writer: Some(handle),
            _lock: lock,
        };
        Ok((wal, Replay::new(replay_segments, stats)))
    }

    /// Appends `payload` as one record. The future resolves once an fdatasync covered it
    /// (then it survives SIGKILL and power loss) with the segment it is in, or with the
    /// reason it was refused (nothing of a refused record is replayed). Full, busy and
    /// too-large refusals resolve at once.
    ///
    /// The record is queued when `append` is called, not when the future is first polled,
    /// so records are in the order of the calls. Dropping the future does not withdraw
    /// the record: it may still be written and replayed.
    pub fn append(
        &self,
        payload: Bytes,
    ) -> impl Future<Output = Result<Arc<SegmentRef>, AppendError>> + Send + 'static {
        self.append_parts(Bytes::new(), payload)
    }

    /// Appends one record whose payload is `head` then `body`, as [`Wal::append`] does:
    /// a caller that prefixes what it logs need not copy both into one buffer (the writer
    /// frames them straight into what it writes).
    pub fn append_parts(
        &self,
        head: Bytes,
        body: Bytes,
    ) -> impl Future<Output = Result<Arc<SegmentRef>, AppendError>> + Send + 'static {
        let queued = self.enqueue(head, body);
        async move {
            match queued {
                Ok(done) => done.await.unwrap_or(Err(AppendError::Closed)),
                Err(e) => Err(e),
            }
        }
    }

    fn enqueue(
        &self,
        head: Bytes,
        body: Bytes,
    ) -> Result<oneshot::Receiver<Result<Arc<SegmentRef>, AppendError>>, AppendError> {
        let shared = &*self.shared;
        let stats = &shared.stats;
        let max_record = shared.settings.max_record_size;
        let len = head.len() + body.len();
        if len > max_record {
            stats.refused_too_large.fetch_add(1, Relaxed);
            return Err(AppendError::TooLarge {
                len,
                max: max_record,
            });
        }
        let need = RECORD_HEADER_LEN + len as u64;
        let max = shared.settings.max_size;
        let reserved = shared.used.fetch_update(Relaxed, Relaxed, |used| {
            (used + need <= max).then_some(used + need)
        });
        if let Err(live) = reserved {
            stats.refused_full.fetch_add(1, Relaxed);
            return Err(AppendError::Full { live, max, need });
        }
        let (done, wait) = oneshot::channel();
        let mut queue = shared.lock();
        if queue.closing {
            drop(queue);
            shared.release(need);
            return Err(AppendError::Closed);
        }
        let max_pending = shared.settings.max_pending;
        if queue.pending_bytes + need > max_pending {
            let pending = queue.pending_bytes;
            drop(queue);
            shared.release(need);
            stats.refused_busy.fetch_add(1, Relaxed);
            return Err(AppendError::Busy {
                pending,
                max: max_pending,
            });
        }
        let was_empty = queue.appends.is_empty();
        queue.appends.push(PendingAppend { head, body, done });
        queue.pending_bytes += need;
        drop(queue);
        // The writer takes every queued append at once, so only the first needs a wake-up.
        if was_empty {
            shared.wake.notify_one();
        }
        Ok(wait)
    }

    /// From now on no segment is deleted: what is still referenced when this is called is
    /// replayed at the next start, even if its spans are then dropped (a shutdown that
    /// abandons what it could not deliver in time calls this first, so the abandoned spans
    /// come back instead of being lost).
    pub fn keep_remaining(&self) {
        self.shared.keep.store(true, Relaxed);
    }

    pub fn stats(&self) -> &Arc<WalStats> {
        &self.shared.stats
    }

    pub fn settings(&self) -> &WalSettings {
        &self.shared.settings
    }

    pub fn directory(&self) -> &Path {
        &self.shared.settings.directory
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_all();
        if let Some(handle) = self.writer.take()
            && handle.join().is_err()
        {
            tracing::error!(directory = %self.directory().display(), "wal writer thread panicked");
        }
    }
}

fn dir_error(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Directory { path, what, source }
}

fn prepare_directory(dir: &Path) -> Result<(), WalError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(WalError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(dir_error(dir, "cannot create it"))
        }
        Err(e) => Err(dir_error(dir, "cannot read it")(e)),
    }
}

fn lock_directory(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(dir_error(dir, "not writable (creating the lock file LOCK)"))?;
    match try_lock(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(WalError::Locked { path }),
        Err(e) => Err(dir_error(dir, "cannot lock LOCK")(e)),
    }
}

/// Creates, syncs and removes a file, so a read-only or broken directory fails at open
/// rather than at the first acknowledgement.
fn probe_writable(dir: &Path) -> Result<(), WalError> {
    let path = dir.join(PROBE_FILE);
    let probe = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        f.write_all(b"cujo wal probe")?;
        f.sync_all()?;
        drop(f);
        fs::remove_file(&path)
    };
    probe().map_err(dir_error(
        dir,
        "not writable (creating, syncing and removing .probe)",
    ))
}

/// The segment files in the directory, in append order: `(seq, path, length)`.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>, WalError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(dir_error(dir, "cannot list it"))?;
    for entry in entries {
        let entry = entry.map_err(dir_error(dir, "cannot list it"))?;
        let name = entry.file_name();
        let Some(seq) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let path = segment_path(dir, seq);
        let meta = entry.metadata().map_err(|source| WalError::Segment {
            path: path.clone(),
            what: "cannot read its size",
            source,
        })?;
        if meta.is_file() {
            found.push((seq, path, meta.len()));
        }
    }
    found.sort_unstable_by_key(|(seq, _, _)| *seq);
    Ok(found)
}
