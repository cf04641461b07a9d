//! Throughput, latency and replay speed of the log on this machine's disk.
//!
//! ```text
//! cargo run --release -p cujo-wal --example wal_bench -- [DIR] [SECONDS] [APPENDERS] [RECORD_BYTES] [COMMIT_MS] [SEGMENT_MIB]
//! ```
//! Defaults: a directory under the temp dir, 10 s, 64 appenders, 16 KiB records, 5 ms, the
//! default segment size. Then
//! writes a 256 MiB log and replays it twice: with its pages dropped from the page cache
//! (`posix_fadvise(DONTNEED)` after the data is synced) and warm.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cujo_wal::{Wal, WalSettings};

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base: PathBuf = arg(
        1,
        std::env::temp_dir().join(format!("cujo-wal-bench-{}", std::process::id())),
    );
    let seconds: u64 = arg(2, 10);
    let appenders: usize = arg(3, 64);
    let record: usize = arg(4, 16 << 10);
    let commit_ms: u64 = arg(5, 5);
    let segment_mib: u64 = arg(6, WalSettings::new(&base).segment_size >> 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        throughput(
            &base.join("append"),
            seconds,
            appenders,
            record,
            commit_ms,
            segment_mib << 20,
        )
        .await?;
        replay_speed(&base.join("replay"), 256 << 20, record).await
    });
    let _ = std::fs::remove_dir_all(&base);
    result
}

async fn throughput(
    dir: &Path,
    seconds: u64,
    appenders: usize,
    record: usize,
    commit_ms: u64,
    segment_size: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let settings = WalSettings {
        commit_interval: Duration::from_millis(commit_ms),
        segment_size,
        max_record_size: record.max(16 << 20),
        ..WalSettings::new(dir)
    };
    let (wal, _) = Wal::open(settings)?;
    let wal = Arc::new(wal);
    let payload = Bytes::from(vec![0x5au8; record]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let wal = wal.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let mut refused = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                // The reference drops at once: as if exported immediately, so sealed
                // segments are deleted and the disk use stays flat.
                match wal.append(payload.clone()).await {
                    Ok(_) => latencies_us.push(t.elapsed().as_micros() as u64),
                    Err(_) => refused += 1,
                }
            }
            (latencies_us, refused)
        }));
    }
    let mut latencies = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (l, r) = task.await?;
        latencies.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = wal.stats().snapshot();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "append: {appenders} appenders x {record} B, commit_interval {commit_ms}ms, {elapsed:.1}s"
    );
    println!(
        "  {:.0} appends/s, {:.1} MB/s, {:.0} fsyncs/s ({:.1} records per fsync), refused {refused}",
        stats.appended_records as f64 / elapsed,
        stats.appended_bytes as f64 / elapsed / 1e6,
        stats.fsyncs as f64 / elapsed,
        stats.appended_records as f64 / stats.fsyncs.max(1) as f64,
    );
    println!(
        "  append latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50) as f64 / 1e3,
        pct(0.99) as f64 / 1e3,
        pct(1.0) as f64 / 1e3
    );
    println!(
        "  fdatasync mean {:.2} ms, max {:.1} ms; {} segments deleted",
        stats.fsync_sum_us as f64 / stats.fsyncs.max(1) as f64 / 1e3,
        stats.fsync_max_us as f64 / 1e3,
        stats.segments_deleted
    );
    Ok(())
}

async fn replay_speed(
    dir: &Path,
    total: u64,
    record: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let settings = WalSettings {
        commit_interval: Duration::from_millis(5),
        ..WalSettings::new(dir)
    };
    let (wal, _) = Wal::open(settings.clone())?;
    let payload = Bytes::from(vec![0xa5u8; record]);
    let mut refs = Vec::new();
    let mut written = 0u64;
    while written < total {
        let batch: Vec<_> = (0..64).map(|_| wal.append(payload.clone())).collect();
        for f in batch {
            refs.push(f.await?);
            written += record as u64;
        }
    }
    drop(wal);
    // Kept (not exported) across the restart, so everything replays.
    let segments: Vec<PathBuf> = {
        let mut s: Vec<PathBuf> = refs.iter().map(|r| r.path().to_path_buf()).collect();
        s.dedup();
        s
    };
    drop(refs);
    for (label, cold) in [("cold", true), ("warm", false)] {
        if cold {
            for s in &segments {
                drop_cache(s);
            }
        }
        let (wal, replay) = Wal::open(settings.clone())?;
        let started = Instant::now();
        let mut records = 0u64;
        let mut bytes = 0u64;
        let mut keep = Vec::new();
        for r in replay {
            let r = r?;
            records += 1;
            bytes += r.payload.len() as u64;
            if keep
                .last()
                .is_none_or(|k: &Arc<cujo_wal::SegmentRef>| k.seq() != r.segment.seq())
            {
                keep.push(r.segment);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "replay ({label} cache): {records} records, {:.0} MiB in {secs:.2}s = {:.0} MB/s",
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / secs / 1e6
        );
        drop(wal);
        drop(keep);
    }
    Ok(())
}

/// Asks the kernel to drop the file's (clean, synced) pages from the page cache.
fn drop_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(path) {
        // SAFETY: the descriptor is open for the call; fadvise only reads its arguments.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}
