//! Segments as the rest of cujo sees them ([`SegmentRef`]), the files underneath
//! (`SegmentFile`, swappable in tests to fail like a full disk), and the directory lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::wal::Shared;

/// One segment file of the log. Every record handed out (acknowledged appends, replayed
/// records) carries an `Arc` of its segment; a sealed segment's file is deleted when the
/// last of them is dropped. Hold it until what the record carried has been exported or
/// dropped with a count.
#[derive(Debug)]
pub struct SegmentRef {
    seq: u64,
    path: PathBuf,
    /// Where to report the last drop; dangling once the log is closed (then nothing is
    /// deleted, and the segment is replayed at the next open).
    shared: Weak<Shared>,
    /// Set when a replay is dropped before handing out all of this segment's records:
    /// the file must survive so the rest is replayed at the next open.
    keep: AtomicBool,
}

impl SegmentRef {
    pub(crate) fn new(seq: u64, path: PathBuf, shared: Weak<Shared>) -> Self {
        Self {
            seq,
            path,
            shared,
            keep: AtomicBool::new(false),
        }
    }

    /// The segment's sequence number: segments are appended (and replayed) in its order.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }
}

impl Drop for SegmentRef {
    fn drop(&mut self) {
        if self.keep.load(Ordering::Relaxed) {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.unreferenced(self.seq);
        }
    }
}

/// A segment file as the writer uses it: positioned writes, a data sync, truncation.
pub(crate) trait SegmentFile: Send {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// Creates segment files; the real one is [`Disk`].
pub(crate) trait Storage: Send + Sync {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
}

/// Segment files on the file system.
pub(crate) struct Disk;

impl Storage for Disk {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(file))
    }
}

impl SegmentFile for File {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Makes the directory's entries (a created or removed segment) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes an exclusive, non-blocking `flock` on `file`: `Ok(false)` if another open file
/// description (another process, or another log in this one) holds it. Released when the
/// file is closed, including when the process is killed.
#[allow(unsafe_code)]
pub(crate) fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor number, which `file` keeps open for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}
