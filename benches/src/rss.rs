//! RSS of a process over time: `VmRSS` sampled on a thread of its own at a fixed interval,
//! with a cap past which the process is killed (a hostile run must not take the machine).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::target::proc_sample;

/// What the sampler saw.
#[derive(Debug, Clone, Default)]
pub struct RssTrace {
    /// (time since start, VmRSS KiB), one per interval while the process lived.
    pub samples: Vec<(Duration, u64)>,
    /// Highest VmRSS sampled.
    pub peak_kib: u64,
    /// When the cap was passed and the process killed, and the RSS that passed it.
    pub killed_at: Option<(Duration, u64)>,
}

impl RssTrace {
    /// The highest sample in each `step`, e.g. one figure per second for a report line.
    pub fn per_step_max_mib(&self, step: Duration) -> Vec<f64> {
        let mut out: Vec<f64> = Vec::new();
        for &(t, kib) in &self.samples {
            let i = (t.as_secs_f64() / step.as_secs_f64()) as usize;
            if out.len() <= i {
                out.resize(i + 1, 0.0);
            }
            out[i] = out[i].max(kib as f64 / 1024.0);
        }
        out
    }
}

/// A running sampler.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    killed: Arc<AtomicBool>,
    /// Highest VmRSS so far, readable while the watch runs.
    peak_kib: Arc<AtomicU64>,
    thread: Option<JoinHandle<RssTrace>>,
}

impl RssWatch {
    /// Samples `pid` every `interval`; sends it SIGKILL the first time VmRSS exceeds `cap_kib`.
    pub fn start(pid: u32, interval: Duration, cap_kib: Option<u64>) -> anyhow::Result<RssWatch> {
        let stop = Arc::new(AtomicBool::new(false));
        let killed = Arc::new(AtomicBool::new(false));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let (s, k, p) = (stop.clone(), killed.clone(), peak_kib.clone());
        let thread = std::thread::Builder::new()
            .name("rss-watch".into())
            .spawn(move || {
                let start = Instant::now();
                let mut trace = RssTrace::default();
                let mut next = start;
                while !s.load(Ordering::Relaxed) {
                    // A process that has exited (or been killed) has no more samples.
                    let Ok(sample) = proc_sample(pid) else { break };
                    let kib = sample.rss_kib;
                    let t = start.elapsed();
                    trace.samples.push((t, kib));
                    trace.peak_kib = trace.peak_kib.max(kib);
                    p.store(trace.peak_kib, Ordering::Relaxed);
                    if let Some(cap) = cap_kib
                        && kib > cap
                        && trace.killed_at.is_none()
                    {
                        // std has no signal API; `kill` keeps the crate free of unsafe code.
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                        trace.killed_at = Some((t, kib));
                        k.store(true, Ordering::SeqCst);
                        break;
                    }
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
                trace
            })?;
        Ok(RssWatch {
            stop,
            killed,
            peak_kib,
            thread: Some(thread),
        })
    }

    /// Whether the cap was passed and the process killed.
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// A flag that turns true when the process is killed (for load loops to stop on).
    pub fn killed_flag(&self) -> Arc<AtomicBool> {
        self.killed.clone()
    }

    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(mut self) -> RssTrace {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process_and_summarises_per_step() {
        let watch = RssWatch::start(std::process::id(), Duration::from_millis(10), None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while watch.peak_kib() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let trace = watch.finish();
        assert!(trace.peak_kib > 0);
        assert!(!trace.samples.is_empty());
        assert!(trace.killed_at.is_none());
        let steps = trace.per_step_max_mib(Duration::from_secs(1));
        assert!(!steps.is_empty());
        assert!(steps.iter().all(|&m| m <= trace.peak_kib as f64 / 1024.0));
    }
}
