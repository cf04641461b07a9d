//! The counting downstream in a process of its own (`cujo-sink`), and the handle the load
//! generators hold on it.
//!
//! A downstream inside the load generator shares its CPU, allocator and scheduler with the
//! clients; in its own process it is measured apart (its CPU and peak RSS come from `/proc`)
//! and the load generator's own work cannot delay its answers.
//!
//! Control channel: the sink's stdin and stdout, one line each way.
//!
//! ```text
//! sink → "listening 127.0.0.1:PORT"                 once, when the gRPC port accepts
//! load → "counts"      sink → {"spans":…,"requests":…,"bytes":…,"checksum":…,"malformed":…,"refused":…}
//! load → "quit" or EOF sink exits
//! ```
//!
//! EOF ends the sink too, so it cannot outlive a load generator that dies without cleaning up
//! (its end of the pipe closes with it).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::downstream::{Downstream, DownstreamCounts, DownstreamSnapshot};
use crate::target::{ProcSample, proc_sample};

/// First line the sink prints, followed by its gRPC address.
pub const LISTENING: &str = "listening ";

/// Answers control lines from `input` on `output` until `quit` or EOF (the sink's side).
pub fn serve_control(
    counts: &DownstreamCounts,
    input: impl BufRead,
    mut output: impl Write,
) -> anyhow::Result<()> {
    for line in input.lines() {
        let line = line.context("reading the control channel")?;
        match line.trim() {
            "counts" => {
                let json = serde_json::to_string(&counts.snapshot())?;
                writeln!(output, "{json}")?;
            }
            "quit" => break,
            "" => continue,
            other => writeln!(output, "error unknown command {other:?}")?,
        }
        output.flush().context("writing the control channel")?;
    }
    Ok(())
}

/// Where `cujo-sink` is expected: beside the running binary (both are built by `cujo-bench`).
pub fn default_sink_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("cujo-sink")))
        .unwrap_or_else(|| PathBuf::from("cujo-sink"))
}

/// A running `cujo-sink`; killed when dropped.
pub struct SinkProcess {
    pub addr: SocketAddr,
    child: Child,
    /// Our end of its control channel; `None` once we said `quit`.
    stdin: Option<ChildStdin>,
    /// Its stdout, line by line, from a reader thread (so a hung sink cannot hang us).
    lines: mpsc::Receiver<String>,
    /// How long one answer may take.
    timeout: Duration,
}

impl SinkProcess {
    /// Starts `bin` and waits (up to `timeout`) for the address it listens on.
    pub fn start(bin: &Path, timeout: Duration) -> anyhow::Result<SinkProcess> {
        let mut child = Command::new(bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the sink {}", bin.display()))?;
        let (stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the sink {} has no stdin/stdout pipe", bin.display());
            }
        };
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("sink-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .context("spawning the sink's reader thread")?;
        let mut sink = SinkProcess {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            stdin: Some(stdin),
            lines,
            timeout,
        };
        let first = sink.next_line().context("waiting for the sink's address")?;
        sink.addr = first
            .strip_prefix(LISTENING)
            .and_then(|a| a.trim().parse().ok())
            .with_context(|| {
                format!("the sink's first line is not `{LISTENING}ADDR`: {first:?}")
            })?;
        Ok(sink)
    }

    fn next_line(&mut self) -> anyhow::Result<String> {
        match self.lines.recv_timeout(self.timeout) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("the sink did not answer within {:?}", self.timeout)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                bail!(
                    "the sink closed its stdout ({})",
                    status.map_or("still running".into(), |s| s.to_string())
                )
            }
        }
    }

    /// What the sink has received so far.
    pub fn snapshot(&mut self) -> anyhow::Result<DownstreamSnapshot> {
        let stdin = self.stdin.as_mut().context("the sink was told to quit")?;
        stdin
            .write_all(b"counts\n")
            .and_then(|()| stdin.flush())
            .context("writing to the sink's stdin")?;
        let line = self.next_line()?;
        serde_json::from_str(&line).with_context(|| format!("the sink answered {line:?}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sample(&self) -> Option<ProcSample> {
        proc_sample(self.pid()).ok()
    }

    /// Asks the sink to quit, waits up to a second, then kills it. Returns how it ended.
    pub fn stop(&mut self) -> String {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"quit\n");
            // Dropping stdin closes the pipe: EOF ends the sink even if it missed `quit`.
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!("{status}"),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return format!("unknown ({e})"),
            }
        }
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(status) => format!("killed after 1 s ({status})"),
            Err(e) => format!("killed after 1 s (wait failed: {e})"),
        }
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Where the counting downstream runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DownstreamPlace {
    /// A thread of the load generator (the harness as it was first written).
    InProcess,
    /// `cujo-sink`, a process of its own.
    Process,
}

/// The downstream a run uses, wherever it runs.
pub enum DownstreamHandle {
    InProcess(Downstream),
    Process(SinkProcess),
}

impl DownstreamHandle {
    /// Starts the downstream; `sink_bin` is used for [`DownstreamPlace::Process`].
    pub fn start(place: DownstreamPlace, sink_bin: &Path) -> anyhow::Result<DownstreamHandle> {
        Ok(match place {
            DownstreamPlace::InProcess => DownstreamHandle::InProcess(Downstream::start()?),
            DownstreamPlace::Process => {
                DownstreamHandle::Process(SinkProcess::start(sink_bin, Duration::from_secs(10))?)
            }
        })
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            DownstreamHandle::InProcess(d) => d.addr,
            DownstreamHandle::Process(s) => s.addr,
        }
    }

    pub fn snapshot(&mut self) -> anyhow::Result<DownstreamSnapshot> {
        match self {
            DownstreamHandle::InProcess(d) => Ok(d.counts.snapshot()),
            DownstreamHandle::Process(s) => s.snapshot(),
        }
    }

    /// The sink's pid; `None` in process (its CPU is then part of the load generator's).
    pub fn pid(&self) -> Option<u32> {
        match self {
            DownstreamHandle::InProcess(_) => None,
            DownstreamHandle::Process(s) => Some(s.pid()),
        }
    }

    pub fn place(&self) -> &'static str {
        match self {
            DownstreamHandle::InProcess(_) => "in-process",
            DownstreamHandle::Process(_) => "process",
        }
    }

    /// Stops the sink (a no-op in process, where dropping stops it).
    pub fn stop(&mut self) -> String {
        match self {
            DownstreamHandle::InProcess(_) => "n/a".into(),
            DownstreamHandle::Process(s) => s.stop(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_channel_answers_counts_until_quit() {
        let counts = DownstreamCounts::default();
        counts
            .refused
            .store(2, std::sync::atomic::Ordering::Relaxed);
        let input = b"counts\n\nnope\nquit\ncounts\n";
        let mut out = Vec::new();
        serve_control(&counts, &input[..], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let snap: DownstreamSnapshot = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(snap.refused, 2);
        assert!(lines[1].starts_with("error unknown command"), "{text}");
    }
}
