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
/// The writer only writes whole [`BLOCK`](crate::format::BLOCK)s at block offsets from
/// block-aligned memory.
pub(crate) trait SegmentFile: Send {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
}

/// Creates segment files; the real one is [`Disk`].
pub(crate) trait Storage: Send + Sync {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
}

/// Segment files on the file system, written with direct I/O (`O_DIRECT`) where the file
/// system takes it: a record goes from the writer's buffer to the device without a copy
/// into the page cache, so the log costs neither that copy and its writeback nor page
/// cache charged to the process's memory cgroup. Where direct I/O is refused (`EINVAL`:
/// tmpfs before Linux 6.6, some FUSE and network file systems) the file is written
/// through the page cache as before; durability is the same, both wait for an fdatasync.
pub(crate) struct Disk;

/// Logged once per process when a file system refuses direct I/O.
static BUFFERED_NOTED: AtomicBool = AtomicBool::new(false);

impl Storage for Disk {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        use std::os::unix::fs::OpenOptionsExt;
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        let file = match direct {
            Ok(file) => {
                return Ok(Box::new(DiskFile {
                    file,
                    direct: true,
                    path: path.to_path_buf(),
                }));
            }
            // Refused at open; the file may already have been created by the attempt.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                note_buffered(path, &e);
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)?
            }
            Err(e) => return Err(e),
        };
        Ok(Box::new(DiskFile {
            file,
            direct: false,
            path: path.to_path_buf(),
        }))
    }
}

fn note_buffered(path: &Path, e: &io::Error) {
    if !BUFFERED_NOTED.swap(true, Ordering::Relaxed) {
        tracing::info!(segment = %path.display(), error = %e, "wal: the file system refuses direct I/O; segments are written through the page cache");
    }
}

struct DiskFile {
    file: File,
    /// Opened with `O_DIRECT`, until a write is refused with it.
    direct: bool,
    path: PathBuf,
}

impl SegmentFile for DiskFile {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.file.write_all_at(buf, offset) {
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                // Open took the flag but the file system will not do it: write through the
                // page cache from now on (an aligned write is never otherwise invalid).
                note_buffered(&self.path, &e);
                clear_direct(&self.file)?;
                self.direct = false;
                self.file.write_all_at(buf, offset)
            }
            done => done,
        }
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

/// Turns `O_DIRECT` off on an open file.
#[allow(unsafe_code)]
fn clear_direct(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL only reads and sets the status flags of the
    // descriptor, which `file` keeps open for the calls.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
