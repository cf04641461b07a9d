//! Failures a real disk produces only sometimes, on demand: it fills up mid-record, a sync
//! fails, a write stalls. The segment files are real; [`Faults`] decides what fails.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::format::BLOCK;
use crate::segment::{SegmentFile, Storage};
use crate::{AppendError, Replay, Wal, WalSettings};

#[derive(Default)]
struct Faults {
    /// Bytes the disk still takes; `None`: as many as it likes.
    space: Mutex<Option<u64>>,
    /// Syncs still to fail with EIO.
    failing_syncs: AtomicU64,
    /// While set, writes wait (and `write_waiting` says one does).
    stalled: Mutex<bool>,
    unstalled: Condvar,
    write_waiting: AtomicBool,
}

struct FaultyDisk(Arc<Faults>);

struct FaultyFile {
    file: File,
    faults: Arc<Faults>,
}

impl Storage for FaultyDisk {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(FaultyFile {
            file,
            faults: self.0.clone(),
        }))
    }
}

impl SegmentFile for FaultyFile {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut stalled = self.faults.stalled.lock().expect("faults");
        while *stalled {
            self.faults.write_waiting.store(true, Ordering::SeqCst);
            stalled = self.faults.unstalled.wait(stalled).expect("faults");
        }
        drop(stalled);
        let mut space = self.faults.space.lock().expect("faults");
        // Space is taken by what a write adds past the file's end, as on a real disk.
        let end = self.file.metadata()?.len();
        let grows = (offset + buf.len() as u64).saturating_sub(end);
        match *space {
            Some(left) if grows > left => {
                // Like a real full disk: what fits is written, then ENOSPC.
                let fits = (end + left).saturating_sub(offset) as usize;
                self.file
                    .write_all_at(&buf[..fits.min(buf.len())], offset)?;
                *space = Some(0);
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            Some(left) => {
                *space = Some(left - grows);
                self.file.write_all_at(buf, offset)
            }
            None => self.file.write_all_at(buf, offset),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let failing = &self.faults.failing_syncs;
        if failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        File::sync_data(&self.file)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("cujo-wal-unit-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn settings(dir: &Path) -> WalSettings {
    WalSettings {
        commit_interval: Duration::ZERO,
        segment_size: 64 << 10,
        max_record_size: 1024,
        max_pending: 2048,
        ..WalSettings::new(dir)
    }
}

fn record(i: u8) -> Bytes {
    Bytes::from(vec![i; 100])
}

fn replayed(replay: Replay) -> Vec<Bytes> {
    replay.map(|r| r.expect("replay reads").payload).collect()
}

/// Waits until the housekeeper created segment `seq` ahead of time (its header synced), so
/// a test's faults fall on the writer's own writes and syncs.
fn wait_prepared(dir: &Path, seq: u64) {
    let path = crate::format::segment_path(dir, seq);
    wait_until("the next segment prepared", || {
        // The header is written as a whole block.
        std::fs::metadata(&path).is_ok_and(|m| m.len() == BLOCK as u64)
    });
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test]
async fn a_full_disk_refuses_the_record_and_leaves_nothing_of_it_to_replay() {
    let dir = TempDir::new("enospc");
    let faults = Arc::new(Faults::default());
    let (wal, _) =
        Wal::open_with(settings(&dir.0), Arc::new(FaultyDisk(faults.clone()))).expect("open");
    wait_prepared(&dir.0, 2);
    // No space left: the records that fit in the block the segment's header took are
    // written, the one that needs the next block is refused.
    *faults.space.lock().expect("faults") = Some(0);
    let fit = (BLOCK - 16) / 112;
    let mut refs = Vec::new();
    for i in 0..fit {
        refs.push(wal.append(record(i as u8)).await.expect("fits"));
    }
    let segment = refs[0].path().to_path_buf();

    let e = wal.append(record(fit as u8)).await.expect_err("disk full");
    match &e {
        AppendError::Io {
            segment: s, kind, ..
        } => {
            assert_eq!(s, &segment);
            assert_eq!(*kind, io::ErrorKind::StorageFull);
        }
        other => panic!("expected an I/O refusal, got {other}"),
    }
    assert!(e.is_retryable());
    // The part of the refused record that was written is gone: the segment ends at its
    // last synced record.
    assert_eq!(
        std::fs::metadata(&segment).expect("segment").len(),
        16 + fit as u64 * 112
    );

    *faults.space.lock().expect("faults") = None;
    refs.push(wal.append(record(100)).await.expect("space again"));
    assert_ne!(refs[fit].seq(), refs[0].seq());
    let stats = wal.stats().snapshot();
    assert_eq!(
        (stats.appended_records, stats.refused_io),
        (fit as u64 + 1, 1)
    );
    drop(wal);
    drop(refs);

    let (_wal, replay) = Wal::open(settings(&dir.0)).expect("reopen");
    let counts_before = replay.counts();
    let mut replay = replay;
    let got: Vec<Bytes> = replay
        .by_ref()
        .map(|r| r.expect("replay reads").payload)
        .collect();
    let mut expected: Vec<Bytes> = (0..fit).map(|i| record(i as u8)).collect();
    expected.push(record(100));
    assert_eq!(got, expected);
    let counts = replay.counts();
    assert_eq!(counts_before.records, 0);
    assert_eq!((counts.lost_bytes, counts.corrupt_bytes), (0, 0));
}

#[tokio::test]
async fn a_failed_fsync_refuses_its_whole_group() {
    let dir = TempDir::new("eio");
    let faults = Arc::new(Faults::default());
    let (wal, _) =
        Wal::open_with(settings(&dir.0), Arc::new(FaultyDisk(faults.clone()))).expect("open");
    wait_prepared(&dir.0, 2);
    let kept = wal.append(record(0)).await.expect("append");
    faults.failing_syncs.store(1, Ordering::SeqCst);
    // Stalling the first write makes the second join its group: the writer takes what
    // is queued before it syncs.
    *faults.stalled.lock().expect("faults") = true;
    let a = wal.append(record(1));
    wait_until("the writer to stall", || {
        faults.write_waiting.load(Ordering::SeqCst)
    });
    let b = wal.append(record(2));
    *faults.stalled.lock().expect("faults") = false;
    faults.unstalled.notify_all();
    let (a, b) = (a.await, b.await);
    for r in [&a, &b] {
        let e = r.as_ref().expect_err("sync failed");
        assert!(e.to_string().contains("fdatasync failed"), "{e}");
    }
    assert_eq!(wal.stats().snapshot().refused_io, 2);
    // The next append goes to a new segment; the failed one keeps what was synced.
    let after = wal
        .append(record(3))
        .await
        .expect("append after the failure");
    assert_ne!(after.seq(), kept.seq());
    drop(wal);
    drop((kept, after));

    let (_wal, replay) = Wal::open(settings(&dir.0)).expect("reopen");
    assert_eq!(replayed(replay), vec![record(0), record(3)]);
}

#[tokio::test]
async fn a_stalled_writer_refuses_appends_past_max_pending_as_busy() {
    let dir = TempDir::new("busy");
    let faults = Arc::new(Faults::default());
    let (wal, _) =
        Wal::open_with(settings(&dir.0), Arc::new(FaultyDisk(faults.clone()))).expect("open");
    wait_prepared(&dir.0, 2);
    *faults.stalled.lock().expect("faults") = true;
    let first = wal.append(record(0));
    wait_until("the writer to stall", || {
        faults.write_waiting.load(Ordering::SeqCst)
    });

    // 2048 bytes of max_pending hold 18 records of 112 bytes.
    let queued: Vec<_> = (1..=30).map(|i| wal.append(record(i))).collect();
    *faults.stalled.lock().expect("faults") = false;
    faults.unstalled.notify_all();
    first.await.expect("the stalled append completes");
    let mut busy = 0;
    let mut refs = Vec::new();
    for (i, f) in queued.into_iter().enumerate() {
        match f.await {
            Ok(r) => refs.push(r),
            Err(AppendError::Busy { max: 2048, .. }) => {
                assert!(i >= 18, "refused at {i} with room left");
                busy += 1;
            }
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    assert_eq!((refs.len(), busy), (18, 12));
    assert_eq!(wal.stats().snapshot().refused_busy, 12);
}

#[test]
fn a_segment_that_cannot_be_created_fails_open_naming_it() {
    struct NoSpace;
    impl Storage for NoSpace {
        fn create(&self, _: &Path) -> io::Result<Box<dyn SegmentFile>> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
    }
    let dir = TempDir::new("no-segment");
    let e = match Wal::open_with(settings(&dir.0), Arc::new(NoSpace)) {
        Ok(_) => panic!("opened"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("00000000000000000001.wal"), "{e}");
    assert!(e.contains("cannot start a new segment"), "{e}");
}
