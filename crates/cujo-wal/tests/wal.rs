//! The log on real files in a temporary directory: restarts, group commit, rotation and
//! deletion, damage, limits, directory checks.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cujo_wal::format::BLOCK;
use cujo_wal::{AppendError, Replay, SegmentRef, Wal, WalError, WalSettings};

/// A directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("cujo-wal-test-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn settings(dir: &Path) -> WalSettings {
    WalSettings {
        commit_interval: Duration::ZERO,
        ..WalSettings::new(dir)
    }
}

/// Small segments: 4 KiB, records up to 1 KiB.
fn small(dir: &Path) -> WalSettings {
    WalSettings {
        segment_size: 4096,
        max_record_size: 1024,
        max_pending: 1 << 20,
        ..settings(dir)
    }
}

fn payload(i: usize, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|j| (i * 31 + j * 7) as u8)
            .collect::<Vec<u8>>(),
    )
}

fn replay_all(replay: Replay) -> (Vec<Bytes>, cujo_wal::ReplayCounts) {
    let mut replay = replay;
    let mut out = Vec::new();
    for record in replay.by_ref() {
        out.push(record.expect("replay reads").payload);
    }
    (out, replay.counts())
}

/// Replays and keeps the references, so the old segments stay.
fn replay_keeping(replay: Replay) -> (Vec<Bytes>, Vec<Arc<SegmentRef>>) {
    let mut payloads = Vec::new();
    let mut refs = Vec::new();
    for record in replay {
        let record = record.expect("replay reads");
        payloads.push(record.payload);
        refs.push(record.segment);
    }
    (payloads, refs)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

async fn append_all(wal: &Wal, payloads: &[Bytes]) -> Vec<Arc<SegmentRef>> {
    let mut refs = Vec::new();
    for p in payloads {
        refs.push(wal.append(p.clone()).await.expect("append"));
    }
    refs
}

#[tokio::test]
async fn acknowledged_records_are_replayed_in_order_after_a_restart() {
    let dir = TempDir::new("round-trip");
    let payloads: Vec<Bytes> = (0..200).map(|i| payload(i, i * 13 % 900)).collect();
    let (wal, replay) = Wal::open(small(dir.path())).expect("open");
    assert_eq!(replay_all(replay).0.len(), 0);
    let refs = append_all(&wal, &payloads).await;
    assert!(refs.windows(2).all(|w| w[0].seq() <= w[1].seq()));
    drop(wal);
    // Held across the restart (not yet exported): nothing may be deleted.
    drop(refs);

    let (wal, replay) = Wal::open(small(dir.path())).expect("reopen");
    let (replayed, counts) = replay_all(replay);
    assert_eq!(replayed, payloads);
    assert_eq!(counts.lost_bytes + counts.corrupt_bytes, 0);
    let stats = wal.stats().snapshot();
    assert_eq!(stats.replayed_records, 200);
    assert_eq!(
        stats.replayed_bytes,
        payloads.iter().map(|p| p.len() as u64).sum::<u64>()
    );
}

#[tokio::test]
async fn released_records_are_not_replayed_and_their_segments_are_deleted() {
    let dir = TempDir::new("released");
    let (wal, _) = Wal::open(small(dir.path())).expect("open");
    let refs = append_all(&wal, &(0..20).map(|i| payload(i, 500)).collect::<Vec<_>>()).await;
    drop(refs);
    // Closing seals the last segment; with nothing referencing any segment, all go.
    drop(wal);
    assert!(segment_files(dir.path()).is_empty());

    let (wal, replay) = Wal::open(small(dir.path())).expect("reopen");
    assert!(replay_all(replay).0.is_empty());
    assert_eq!(wal.stats().snapshot().live_segments, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs() {
    let dir = TempDir::new("group-commit");
    let settings = WalSettings {
        commit_interval: Duration::from_millis(10),
        ..WalSettings::new(dir.path())
    };
    let (wal, _) = Wal::open(settings).expect("open");
    let wal = Arc::new(wal);
    let mut tasks = Vec::new();
    for t in 0..64 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut refs = Vec::new();
            for i in 0..10 {
                refs.push(wal.append(payload(t * 10 + i, 1024)).await.expect("append"));
            }
            refs
        }));
    }
    let mut refs = Vec::new();
    for task in tasks {
        refs.extend(task.await.expect("task"));
    }
    let stats = wal.stats().snapshot();
    assert_eq!(stats.appended_records, 640);
    assert!(
        stats.fsyncs * 4 <= stats.appended_records,
        "group commit: {} fsyncs for {} appends",
        stats.fsyncs,
        stats.appended_records
    );
    // Appends queued together before the writer wakes share one sync.
    let before = wal.stats().snapshot().fsyncs;
    let futures: Vec<_> = (0..100).map(|i| wal.append(payload(i, 100))).collect();
    for f in futures {
        refs.push(f.await.expect("append"));
    }
    let used = wal.stats().snapshot().fsyncs - before;
    assert!(used <= 10, "{used} fsyncs for 100 queued appends");
}

#[tokio::test]
async fn segments_rotate_and_are_deleted_only_when_sealed_and_released() {
    let dir = TempDir::new("rotation");
    let settings = WalSettings {
        segment_size: 3100,
        ..small(dir.path())
    };
    let (wal, _) = Wal::open(settings).expect("open");
    // 16 + 3 * (12 + 1000) = 3052 bytes: three records per segment.
    let refs = append_all(&wal, &(0..9).map(|i| payload(i, 1000)).collect::<Vec<_>>()).await;
    let seqs: Vec<u64> = refs.iter().map(|r| r.seq()).collect();
    assert_eq!(seqs[0], seqs[2]);
    assert_eq!(seqs[3], seqs[0] + 1);
    assert_eq!(seqs[6], seqs[0] + 2);
    // Three full segments, and the next one created ahead of time (its header only).
    wait_until("the next segment prepared", || {
        segment_files(dir.path()).len() == 4
    });
    // Files are written in whole blocks: each ends in zeros to the next block boundary.
    let files = segment_files(dir.path());
    for f in &files {
        assert_eq!(fs::metadata(f).expect("segment").len(), BLOCK as u64);
    }
    let stats = wal.stats().snapshot();
    assert_eq!(stats.live_segments, 3);
    assert_eq!(stats.live_bytes, 3 * 3052);

    let mut first = refs;
    let rest = first.split_off(3);
    let first_path = first[0].path().to_path_buf();
    let third = first.pop();
    // Two of the sealed segment's three references gone: it stays. (The append is a
    // round trip through the writer, which would have deleted it by then.)
    drop(first);
    let probe = wal.append(payload(0, 10)).await.expect("append");
    assert!(first_path.exists());
    assert_eq!(wal.stats().snapshot().segments_deleted, 0);

    drop(third);
    wait_until("the first segment's deletion", || {
        wal.stats().snapshot().segments_deleted == 1
    });
    assert!(!first_path.exists());
    let stats = wal.stats().snapshot();
    assert_eq!(stats.live_segments, 2);
    assert_eq!(stats.live_bytes, 3052 + 3052 + 22);

    // The segment appended to is never deleted, even with no references left.
    let second = rest[0].path().to_path_buf();
    let active = probe.path().to_path_buf();
    drop(rest);
    drop(probe);
    wait_until("the second segment's deletion", || {
        wal.stats().snapshot().segments_deleted == 2
    });
    assert!(!second.exists());
    wal.append(payload(0, 10)).await.expect("append");
    assert!(active.exists());
    assert_eq!(wal.stats().snapshot().live_segments, 1);
}

#[tokio::test]
async fn a_torn_tail_replays_every_complete_record_and_counts_the_rest() {
    let dir = TempDir::new("torn");
    let payloads: Vec<Bytes> = (0..10).map(|i| payload(i, 100)).collect();
    let (wal, _) = Wal::open(settings(dir.path())).expect("open");
    let refs = append_all(&wal, &payloads).await;
    let segment = refs[0].path().to_path_buf();
    drop(wal);
    drop(refs);
    // A crash mid-write: the last record is cut 40 bytes into its payload.
    // The records end at 16 + 10 * 112, the file at the end of that block.
    assert_eq!(fs::metadata(&segment).expect("segment").len(), BLOCK as u64);
    let full = 16 + 10 * 112;
    let cut = full - 112 + 12 + 40;
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(cut))
        .expect("truncate");

    let (wal, replay) = Wal::open(settings(dir.path())).expect("reopen");
    let (replayed, counts) = replay_all(replay);
    assert_eq!(replayed, payloads[..9]);
    assert_eq!(counts.lost_records, 1);
    assert_eq!(counts.lost_bytes, 52);
    assert_eq!(counts.corrupt_skips, 0);
    let stats = wal.stats().snapshot();
    assert_eq!((stats.lost_records, stats.lost_bytes), (1, 52));
}

fn flip(path: &Path, offset: u64, mask: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment");
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).expect("read byte");
    b[0] ^= mask;
    f.write_all_at(&b, offset).expect("write byte");
}

/// Ten records of 100 bytes (112 framed) in one segment, then the segment path.
async fn ten_records(dir: &Path) -> (Vec<Bytes>, PathBuf) {
    let payloads: Vec<Bytes> = (0..10).map(|i| payload(i, 100)).collect();
    let (wal, _) = Wal::open(settings(dir)).expect("open");
    let refs = append_all(&wal, &payloads).await;
    let segment = refs[0].path().to_path_buf();
    drop(wal);
    drop(refs);
    (payloads, segment)
}

#[tokio::test]
async fn a_bit_flip_skips_only_the_damaged_record() {
    let dir = TempDir::new("flip");
    let (payloads, segment) = ten_records(dir.path()).await;
    // Record 4's payload, 50 bytes in.
    flip(&segment, 16 + 4 * 112 + 12 + 50, 0x10);

    let (_wal, replay) = Wal::open(settings(dir.path())).expect("reopen");
    let (replayed, counts) = replay_all(replay);
    let expected: Vec<Bytes> = payloads
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(replayed, expected);
    assert_eq!((counts.corrupt_skips, counts.corrupt_bytes), (1, 112));
    assert_eq!(counts.lost_bytes, 0);
}

#[tokio::test]
async fn the_zeros_that_end_the_last_block_are_padding_but_anything_else_there_is_counted() {
    let dir = TempDir::new("padding");
    let (payloads, _) = ten_records(dir.path()).await;
    // As written: every record back, nothing lost, though the file runs to its block's end.
    let (wal, replay) = Wal::open(settings(dir.path())).expect("reopen");
    let (replayed, counts) = replay_all(replay);
    assert_eq!(replayed, payloads);
    assert_eq!((counts.lost_records, counts.lost_bytes), (0, 0));
    drop(wal);
    // A non-zero byte after the last record is not padding: the rest of the block counts
    // as a torn tail.
    let dir = TempDir::new("not-padding");
    let (_, segment) = ten_records(dir.path()).await;
    flip(&segment, 16 + 10 * 112 + 100, 0x01);
    let (_wal, replay) = Wal::open(settings(dir.path())).expect("reopen");
    let (replayed, counts) = replay_all(replay);
    assert_eq!(replayed, payloads);
    assert_eq!(
        (counts.lost_records, counts.lost_bytes),
        (1, BLOCK as u64 - (16 + 10 * 112))
    );
}

#[tokio::test]
async fn a_damaged_length_is_never_trusted() {
    let dir = TempDir::new("length");
    let (payloads, segment) = ten_records(dir.path()).await;
    // Record 2's length gains bit 30 (1 GiB more than the file holds), record 6's bit 8
    // (a length that fits in the file but fails the CRC).
    flip(&segment, 16 + 2 * 112 + 4 + 3, 0x40);
    flip(&segment, 16 + 6 * 112 + 4 + 1, 0x01);

    let (_wal, replay) = Wal::open(settings(dir.path())).expect("reopen");
    let (replayed, counts) = replay_all(replay);
    let expected: Vec<Bytes> = payloads
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2 && *i != 6)
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(replayed, expected);
    assert_eq!((counts.corrupt_skips, counts.corrupt_bytes), (2, 224));
}

#[tokio::test]
async fn max_size_refuses_with_full_and_accepts_again_after_trimming() {
    let dir = TempDir::new("full");
    let settings = WalSettings {
        max_size: 8192,
        ..small(dir.path())
    };
    let (wal, _) = Wal::open(settings).expect("open");
    let mut refs = Vec::new();
    let refused = loop {
        match wal.append(payload(refs.len(), 1000)).await {
            Ok(r) => refs.push(r),
            Err(e) => break e,
        }
        assert!(refs.len() < 100, "never full");
    };
    assert!(
        matches!(refused, AppendError::Full { max: 8192, .. }),
        "{refused}"
    );
    assert!(refused.is_retryable());
    let stats = wal.stats().snapshot();
    assert_eq!(stats.refused_full, 1);
    assert!(stats.live_bytes <= 8192 + 16, "{}", stats.live_bytes);
    // Still full while everything is referenced.
    assert!(matches!(
        wal.append(payload(0, 1000)).await,
        Err(AppendError::Full { .. })
    ));

    // Exporting the first segment's records frees its file and its share of max_size.
    let first = refs[0].seq();
    let path = refs[0].path().to_path_buf();
    refs.retain(|r| r.seq() != first);
    wait_until("the first segment's deletion", || {
        wal.stats().snapshot().segments_deleted == 1
    });
    assert!(!path.exists());
    wal.append(payload(0, 1000)).await.expect("room again");
}

#[tokio::test]
async fn a_record_above_max_record_size_is_refused() {
    let dir = TempDir::new("too-large");
    let (wal, _) = Wal::open(small(dir.path())).expect("open");
    let e = wal.append(payload(0, 1025)).await.expect_err("too large");
    assert!(
        matches!(
            e,
            AppendError::TooLarge {
                len: 1025,
                max: 1024
            }
        ),
        "{e}"
    );
    assert!(!e.is_retryable());
    let at_max = wal.append(payload(0, 1024)).await.expect("at the limit");
    let stats = wal.stats().snapshot();
    assert_eq!((stats.refused_too_large, stats.appended_records), (1, 1));
    drop(wal);
    drop(at_max);
    let (_wal, replay) = Wal::open(small(dir.path())).expect("reopen");
    assert_eq!(replay_all(replay).0, vec![payload(0, 1024)]);
}

#[test]
fn a_path_that_is_not_a_writable_directory_fails_at_open_naming_it() {
    let dir = TempDir::new("not-dir");
    let file = dir.path().join("a-file");
    fs::write(&file, b"x").expect("write file");
    let err = |r: Result<(Wal, Replay), WalError>| match r {
        Ok(_) => panic!("opened"),
        Err(e) => e,
    };

    let e = err(Wal::open(settings(&file)));
    assert!(matches!(e, WalError::NotADirectory { .. }), "{e}");
    assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");

    let below = file.join("wal");
    let e = err(Wal::open(settings(&below)));
    assert!(e.to_string().contains(&*below.to_string_lossy()), "{e}");

    // A directory nobody may create files in (even root: procfs).
    let e = err(Wal::open(settings(Path::new("/proc/self"))));
    let text = e.to_string();
    assert!(
        text.contains("/proc/self") && text.contains("not writable"),
        "{text}"
    );

    // A read-only directory, where permissions apply (not to root).
    let ro = dir.path().join("read-only");
    fs::create_dir(&ro).expect("mkdir");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).expect("chmod");
    if fs::write(ro.join("try"), b"").is_err() {
        let e = err(Wal::open(settings(&ro)));
        assert!(e.to_string().contains(&*ro.to_string_lossy()), "{e}");
    }
    let _ = fs::set_permissions(&ro, fs::Permissions::from_mode(0o755));
}

#[test]
fn a_second_open_of_one_directory_fails_naming_the_lock() {
    let dir = TempDir::new("lock");
    let (wal, _) = Wal::open(settings(dir.path())).expect("open");
    let e = match Wal::open(settings(dir.path())) {
        Ok(_) => panic!("two logs share one directory"),
        Err(e) => e,
    };
    assert!(matches!(e, WalError::Locked { .. }), "{e}");
    let lock = dir.path().join("LOCK");
    assert!(e.to_string().contains(&*lock.to_string_lossy()), "{e}");
    drop(wal);
    Wal::open(settings(dir.path())).expect("open after the first closed");
}

#[tokio::test]
async fn a_replay_dropped_early_keeps_what_it_did_not_finish() {
    let dir = TempDir::new("replay-early");
    let payloads: Vec<Bytes> = (0..5).map(|i| payload(i, 100)).collect();
    let (wal, _) = Wal::open(settings(dir.path())).expect("open");
    let refs = append_all(&wal, &payloads).await;
    drop(wal);
    drop(refs);

    let (wal, mut replay) = Wal::open(settings(dir.path())).expect("reopen");
    let first = replay.next().expect("a record").expect("reads");
    assert_eq!(first.payload, payloads[0]);
    drop(replay);
    drop(first);
    drop(wal);

    let (wal, replay) = Wal::open(settings(dir.path())).expect("reopen again");
    let (replayed, refs) = replay_keeping(replay);
    assert_eq!(replayed, payloads);
    // Replayed in full and released: the old segments go.
    let mut old: Vec<PathBuf> = refs.iter().map(|r| r.path().to_path_buf()).collect();
    old.dedup();
    assert_eq!(old.len(), 1);
    drop(refs);
    wait_until("the replayed segments' deletion", || {
        wal.stats().snapshot().segments_deleted == old.len() as u64
    });
    assert!(old.iter().all(|p| !p.exists()));
    assert_eq!(wal.stats().snapshot().live_segments, 1);
}

#[test]
fn the_log_and_its_replay_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Wal>();
    send_sync::<SegmentRef>();
    send::<Replay>();
}

#[tokio::test]
async fn closing_removes_the_segment_created_ahead_and_a_crash_leaves_it_harmless() {
    let dir = TempDir::new("ahead");
    let (wal, _) = Wal::open(small(dir.path())).expect("open");
    let kept = wal.append(payload(1, 100)).await.expect("append");
    wait_until("the next segment prepared", || {
        segment_files(dir.path()).len() == 2
    });
    // A crash now leaves the next segment (a header only) beside the one appended to.
    let ahead = segment_files(dir.path())[1].clone();
    let header_only = fs::read(&ahead).expect("read");
    drop(kept);
    drop(wal);
    // A clean close removes it.
    assert!(!ahead.exists(), "the unused segment is removed at close");
    fs::write(&ahead, &header_only).expect("put back as a crash would leave it");
    let (wal, replay) = Wal::open(small(dir.path())).expect("reopen");
    let got: Vec<Bytes> = replay.map(|r| r.expect("reads").payload).collect();
    assert!(
        got.iter().all(|p| p == &payload(1, 100)),
        "the header-only segment replays nothing"
    );
    wait_until("the old segments deleted once replayed", || !ahead.exists());
    drop(wal);
}
