//! The process under test: its command line or config, its lifecycle (start, wait until its
//! gRPC port accepts, SIGTERM, wait), and what `/proc` says about its CPU and memory.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Where `pip install rotel` puts the agent on this machine.
pub const DEFAULT_ROTEL_BIN: &str =
    "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/rotel/rotel-agent";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// cujo, run as `BIN --config FILE`.
    Cujo,
    /// rotel, run as `BIN start --exporter otlp ...`.
    Rotel,
    /// No process: clients send straight to the downstream (the harness's own ceiling).
    Direct,
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetKind::Cujo => "cujo",
            TargetKind::Rotel => "rotel",
            TargetKind::Direct => "direct",
        })
    }
}

/// A port on 127.0.0.1 that was free a moment ago (the OS picks it; we release it for the
/// target to bind).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The config cujo is started with. Every key here is one cujo must accept.
pub fn cujo_config(
    grpc_port: u16,
    downstream: SocketAddr,
    metrics_port: u16,
    extra: &str,
) -> String {
    let base = format!(
        r#"receivers:
  otlp:
    grpc: {{ endpoint: "127.0.0.1:{grpc_port}" }}
exporters:
  otlp:
    endpoint: "http://{downstream}"
    protocol: grpc
    compression: none
    batch: {{ max_spans: 8192, timeout: 200ms }}
  prometheus: {{ endpoint: "127.0.0.1:{metrics_port}" }}
"#
    );
    format!("{base}{extra}\n")
}

/// rotel's arguments, chosen to match the cujo config above:
/// - `--otlp-grpc-endpoint` / `--otlp-http-endpoint`: receivers on free loopback ports (the
///   HTTP receiver can't be turned off, so it gets a port too and is never used);
/// - `--otlp-grpc-max-recv-msg-size-mib 64`: never the limit for our ≤500-span requests;
/// - `--exporter otlp --otlp-exporter-endpoint http://… --otlp-exporter-protocol grpc`:
///   plaintext OTLP/gRPC to the downstream;
/// - `--otlp-exporter-compression none` (rotel's default is gzip; cujo's config says none);
/// - `--batch-max-size 8192 --batch-timeout 200ms`: rotel's defaults, spelled out so a change
///   in rotel's defaults does not silently change the comparison;
/// - `--pid-file` / `--log-file` in our work dir so parallel runs don't collide.
pub fn rotel_args(
    grpc_port: u16,
    http_port: u16,
    downstream: SocketAddr,
    dir: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["start".into()];
    let mut flag = |k: &str, v: String| {
        args.push(k.into());
        args.push(v);
    };
    flag("--otlp-grpc-endpoint", format!("127.0.0.1:{grpc_port}"));
    flag("--otlp-http-endpoint", format!("127.0.0.1:{http_port}"));
    flag("--otlp-grpc-max-recv-msg-size-mib", "64".into());
    flag("--exporter", "otlp".into());
    flag("--otlp-exporter-endpoint", format!("http://{downstream}"));
    flag("--otlp-exporter-protocol", "grpc".into());
    flag("--otlp-exporter-compression", "none".into());
    flag("--batch-max-size", "8192".into());
    flag("--batch-timeout", "200ms".into());
    flag("--pid-file", dir.join("rotel.pid").display().to_string());
    flag(
        "--log-file",
        dir.join("rotel-internal.log").display().to_string(),
    );
    args
}

/// CPU and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM).
    pub hwm_kib: u64,
}

pub fn proc_sample(pid: u32) -> anyhow::Result<ProcSample> {
    proc_sample_at(&format!("/proc/{pid}"))
}

pub fn self_sample() -> anyhow::Result<ProcSample> {
    proc_sample_at("/proc/self")
}

/// The calling thread alone (its CPU; the memory figures are the process's).
pub fn thread_sample() -> anyhow::Result<ProcSample> {
    proc_sample_at("/proc/thread-self")
}

fn proc_sample_at(dir: &str) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("reading {dir}/stat"))?;
    // The command name is in parentheses and may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')').context("no ')' in stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), so utime (14) and stime (15) are at 11, 12.
    let utime: u64 = fields.get(11).context("short stat")?.parse()?;
    let stime: u64 = fields.get(12).context("short stat")?.parse()?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_ticks: utime + stime,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// Clock ticks per second for `/proc/*/stat` times.
pub fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// A started target.
pub struct Target {
    pub kind: TargetKind,
    /// Where clients send.
    pub grpc_addr: SocketAddr,
    /// `None` for [`TargetKind::Direct`].
    child: Option<Child>,
    /// Target's stdout+stderr.
    pub log_path: Option<PathBuf>,
    /// The command line, for the report.
    pub command: String,
    /// cujo's admin listener (`/metrics`), for scraping its own counters after a run.
    pub metrics_addr: Option<SocketAddr>,
}

impl Target {
    /// Starts the target (for `Direct`, nothing) sending to `downstream`; files go in `dir`.
    pub fn start(
        kind: TargetKind,
        bin: &Path,
        extra_args: &[String],
        cujo_yaml: &str,
        downstream: SocketAddr,
        dir: &Path,
    ) -> anyhow::Result<Target> {
        if kind == TargetKind::Direct {
            return Ok(Target {
                kind,
                grpc_addr: downstream,
                child: None,
                log_path: None,
                command: "(none: clients send to the downstream)".into(),
                metrics_addr: None,
            });
        }
        let grpc_port = free_port()?;
        let mut metrics_addr = None;
        let args = match kind {
            TargetKind::Cujo => {
                let config = dir.join("cujo.yaml");
                let metrics_port = free_port()?;
                metrics_addr = Some(SocketAddr::from(([127, 0, 0, 1], metrics_port)));
                std::fs::write(
                    &config,
                    cujo_config(grpc_port, downstream, metrics_port, cujo_yaml),
                )
                .with_context(|| format!("writing {}", config.display()))?;
                vec!["--config".to_string(), config.display().to_string()]
            }
            TargetKind::Rotel => rotel_args(grpc_port, free_port()?, downstream, dir),
            TargetKind::Direct => unreachable!(),
        };
        let args: Vec<String> = args.into_iter().chain(extra_args.iter().cloned()).collect();
        let log_path = dir.join(format!("{kind}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Target {
            kind,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            child: Some(child),
            log_path: Some(log_path),
            command: format!("{} {}", bin.display(), args.join(" ")),
            metrics_addr,
        })
    }

    /// cujo's `/metrics` text (plain HTTP/1.0 GET), or `None` for other targets.
    pub fn scrape_metrics(&self) -> Option<String> {
        scrape_metrics_at(self.metrics_addr?)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Polls until the gRPC port accepts a connection; fails if the process exits first or
    /// the deadline passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "{} exited during start-up ({status}){}",
                    self.kind,
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&self.grpc_addr, Duration::from_millis(200)).is_ok() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not accept connections on {} within {timeout:?}{}",
                    self.kind,
                    self.grpc_addr,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sample(&self) -> Option<ProcSample> {
        self.pid().and_then(|pid| proc_sample(pid).ok())
    }

    /// The last lines of the target's log, for error messages.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log_path else {
            return String::new();
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n  ");
        format!("\n  --- {} ---\n  {tail}", path.display())
    }

    /// SIGTERM, then wait up to `grace`; SIGKILL after that. Returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<String> {
        let Some(mut child) = self.child.take() else {
            return Ok("n/a".into());
        };
        if let Some(status) = child.try_wait()? {
            return Ok(format!("had already exited: {status}"));
        }
        // std has no signal API; `kill -TERM` keeps this crate free of unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(status) = child.try_wait()? {
                return Ok(describe_exit(status, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        let status = child.wait()?;
        Ok(format!(
            "did not exit within {grace:?} of SIGTERM; killed ({status})"
        ))
    }
}

/// The `/metrics` text served at `addr` (plain HTTP/1.0 GET), or `None` if it does not answer
/// within a few seconds.
pub fn scrape_metrics_at(addr: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// The name of a Prometheus text sample line (`name{labels} value` or `name value`); `None`
/// for comments and blank lines.
fn sample_name(line: &str) -> Option<&str> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split(['{', ' ']).next()
}

/// The value of the first sample of metric `name` (any labels).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| sample_name(l) == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

/// The sample lines whose metric name contains one of `words`.
pub fn metric_lines_matching<'a>(text: &'a str, words: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| sample_name(l).is_some_and(|n| words.iter().any(|w| n.contains(w))))
        .collect()
}

fn describe_exit(status: ExitStatus, after: Duration) -> String {
    format!("{status} {:.0} ms after SIGTERM", after.as_secs_f64() * 1e3)
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP cujo_admission_max_in_flight_bytes Admission budget.
# TYPE cujo_admission_max_in_flight_bytes gauge
cujo_admission_max_in_flight_bytes 268435456
cujo_dropped_spans_total{reason=\"queue_full\"} 3
cujo_receiver_spans_total 10
";

    #[test]
    fn reads_metric_values_and_picks_lines_by_name() {
        assert_eq!(
            metric_value(TEXT, "cujo_admission_max_in_flight_bytes"),
            Some(268_435_456.0)
        );
        assert_eq!(metric_value(TEXT, "cujo_dropped_spans_total"), Some(3.0));
        assert_eq!(metric_value(TEXT, "cujo_memory_budget_bytes"), None);
        assert_eq!(
            metric_lines_matching(TEXT, &["dropped", "budget"]),
            vec!["cujo_dropped_spans_total{reason=\"queue_full\"} 3"]
        );
    }
}
