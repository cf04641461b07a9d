//! The admin poller: while the load runs, GETs of cujo's admin endpoints (`/api/v1/slos`,
//! `/metrics`) at a fixed rate each, the way dashboards and `cujo status` read it, so the cost
//! of those readers to ingestion shows in the throughput.
//!
//! Per endpoint, `connections` std threads (1 by default), outside the clients' tokio runtime,
//! each with one keep-alive HTTP/1.1 connection (reopened after an error) taking every
//! `connections`-th slot. Every body is read to its end. Slot `k` is due at
//! `start + k / rate`; a poll that comes back late is followed at once by the connection's
//! next, and slots more than one of its intervals in the past are skipped and counted as
//! missed, so a slow endpoint shows as fewer polls done rather than as a queue. Latency is one
//! poll's service time: request written until the last body byte read.
//!
//! Each request carries `Accept-Encoding: gzip` as Prometheus, browsers and `curl
//! --compressed` send it (`--poll-plain` leaves it out). A gzip body is read to its end but not
//! inflated: a scraper inflates on its own machine, and here that CPU would be taken from the
//! target on the same cores. Its inflated size is read from the gzip trailer and reported
//! beside the bytes on the wire.
//!
//! The threads run in the load generator's process: their CPU is part of its `bench_cpu_pct`,
//! and each also reports its own (from `/proc/thread-self`), so it can be told apart.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;

use crate::target::{ProcSample, thread_sample};

/// The admin endpoints polled, in report order.
pub const ENDPOINTS: [&str; 2] = ["/api/v1/slos", "/metrics"];

#[derive(Debug, Clone)]
pub struct PollConfig {
    /// cujo's admin listener.
    pub addr: SocketAddr,
    /// GETs per second, per endpoint.
    pub per_s: f64,
    pub paths: Vec<String>,
    /// Connections (and threads) per endpoint, sharing its rate.
    pub connections: usize,
    /// Connect, read and write timeout of one poll.
    pub timeout: Duration,
    /// Ask for gzip (`Accept-Encoding: gzip`), as scrapers and browsers do.
    pub gzip: bool,
}

/// What one endpoint's poller saw inside the measured window.
#[derive(Debug, Clone)]
pub struct EndpointPolls {
    pub path: String,
    /// Polls answered 200 with a complete body, finished inside the window.
    pub polls: u64,
    /// Polls that ended in an error, a non-200 status or a timeout.
    pub failed: u64,
    /// Slots due inside the window that were skipped because the poller was behind.
    pub missed: u64,
    /// Body bytes of the successful polls, as sent.
    pub bytes: u64,
    /// The same bodies' size once inflated (equal to `bytes` when sent plain).
    pub plain_bytes: u64,
    /// Service time of the successful polls, µs.
    pub latency_us: Histogram<u64>,
    /// Connections opened (the first one included).
    pub connections: u64,
    /// The poller threads' CPU over the window, seconds.
    pub cpu_s: Option<f64>,
    pub first_error: Option<String>,
}

/// The running poller threads.
pub struct Poller {
    threads: Vec<JoinHandle<EndpointPolls>>,
}

impl Poller {
    /// Starts one thread per path, polling from `start` until `window_end`; counts only polls
    /// that end inside `[window_start, window_end)`.
    pub fn start(
        cfg: &PollConfig,
        start: Instant,
        window_start: Instant,
        window_end: Instant,
    ) -> anyhow::Result<Poller> {
        anyhow::ensure!(
            cfg.per_s > 0.0 && cfg.per_s.is_finite(),
            "poll rate must be positive"
        );
        anyhow::ensure!(cfg.connections >= 1, "need at least one poll connection");
        let n = cfg.connections;
        let mut threads = Vec::with_capacity(cfg.paths.len() * n);
        for path in &cfg.paths {
            for i in 0..n {
                let (addr, timeout, gzip, path) = (cfg.addr, cfg.timeout, cfg.gzip, path.clone());
                // Connection i takes slots i, i + n, i + 2n, ...
                let per_s = cfg.per_s / n as f64;
                let first = start + Duration::from_secs_f64(i as f64 / cfg.per_s);
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("poll {path} {i}"))
                        .spawn(move || {
                            poll_loop(
                                addr,
                                timeout,
                                gzip,
                                per_s,
                                path,
                                first,
                                window_start,
                                window_end,
                            )
                        })
                        .context("spawning a poller thread")?,
                );
            }
        }
        Ok(Poller { threads })
    }

    /// Waits for the threads (they stop by themselves at the window's end); one result per
    /// endpoint, its connections' together.
    pub fn join(self) -> Vec<EndpointPolls> {
        let mut out: Vec<EndpointPolls> = Vec::new();
        for p in self.threads.into_iter().filter_map(|t| t.join().ok()) {
            match out.iter_mut().find(|o| o.path == p.path) {
                Some(o) => o.merge(p),
                None => out.push(p),
            }
        }
        out
    }
}

impl EndpointPolls {
    fn merge(&mut self, o: EndpointPolls) {
        self.polls += o.polls;
        self.failed += o.failed;
        self.missed += o.missed;
        self.bytes += o.bytes;
        self.plain_bytes += o.plain_bytes;
        let _ = self.latency_us.add(&o.latency_us);
        self.connections += o.connections;
        self.cpu_s = match (self.cpu_s, o.cpu_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.first_error = self.first_error.take().or(o.first_error);
    }
}

#[allow(clippy::too_many_arguments)]
fn poll_loop(
    addr: SocketAddr,
    timeout: Duration,
    gzip: bool,
    per_s: f64,
    path: String,
    start: Instant,
    window_start: Instant,
    window_end: Instant,
) -> EndpointPolls {
    let interval = Duration::from_secs_f64(1.0 / per_s);
    let mut out = EndpointPolls {
        path: path.clone(),
        polls: 0,
        failed: 0,
        missed: 0,
        bytes: 0,
        plain_bytes: 0,
        latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
        connections: 0,
        cpu_s: None,
        first_error: None,
    };
    let mut conn = Connection::new(addr, timeout, gzip);
    let mut body = Vec::new();
    let mut cpu_start: Option<ProcSample> = None;
    let due_at = |k: u64| start + interval.mul_f64(k as f64);
    let mut k = 0u64;
    loop {
        let mut due = due_at(k);
        if due >= window_end {
            break;
        }
        let now = Instant::now();
        if now > due + interval {
            // Behind by more than a slot: skip to the latest slot due, counting the ones
            // skipped that fell in the window.
            let latest = ((now - start).as_secs_f64() * per_s).floor() as u64;
            for skipped in k..latest {
                let at = due_at(skipped);
                if at >= window_start && at < window_end {
                    out.missed += 1;
                }
            }
            k = latest;
            due = due_at(k);
            if due >= window_end {
                break;
            }
        } else if now < due {
            std::thread::sleep(due - now);
        }
        if cpu_start.is_none() && Instant::now() >= window_start {
            cpu_start = thread_sample().ok();
        }
        let sent = Instant::now();
        let result = conn.get(&path, &mut body);
        let done = Instant::now();
        let in_window = done >= window_start && done < window_end;
        match result {
            Ok(plain) if in_window => {
                out.polls += 1;
                out.bytes += body.len() as u64;
                out.plain_bytes += plain;
                let us = done.duration_since(sent).as_micros() as u64;
                let _ = out.latency_us.record(us.max(1));
            }
            Ok(_) => {}
            Err(e) => {
                if in_window {
                    out.failed += 1;
                }
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        k += 1;
    }
    if let (Some(a), Ok(b)) = (cpu_start, thread_sample()) {
        let ticks = crate::target::clock_ticks_per_second();
        out.cpu_s = Some(b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / ticks);
    }
    out.connections = conn.opened;
    out
}

/// One keep-alive HTTP/1.1 connection, opened on first use and after any error.
struct Connection {
    addr: SocketAddr,
    timeout: Duration,
    gzip: bool,
    stream: Option<BufReader<TcpStream>>,
    opened: u64,
    line: String,
}

impl Connection {
    fn new(addr: SocketAddr, timeout: Duration, gzip: bool) -> Connection {
        Connection {
            addr,
            timeout,
            gzip,
            stream: None,
            opened: 0,
            line: String::new(),
        }
    }

    /// GETs `path` into `body` (cleared first, left as sent); returns the body's inflated
    /// size. Fails on any I/O error, a malformed answer or a status other than 200; the
    /// connection is then dropped.
    fn get(&mut self, path: &str, body: &mut Vec<u8>) -> anyhow::Result<u64> {
        let result = self.exchange(path, body);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self, path: &str, body: &mut Vec<u8>) -> anyhow::Result<u64> {
        body.clear();
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)
                .with_context(|| format!("connecting to {}", self.addr))?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.opened += 1;
            // Large enough that a /metrics or report body comes in few reads.
            self.stream = Some(BufReader::with_capacity(256 << 10, s));
        }
        let addr = self.addr;
        let accept_encoding = if self.gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        let reader = self.stream.as_mut().expect("connected above");
        write!(
            reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n{accept_encoding}\r\n"
        )
        .context("writing the request")?;

        let line = &mut self.line;
        read_line(reader, line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {:?}", line.trim_end()))?;
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        let mut gzipped = false;
        loop {
            read_line(reader, line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                bail!("bad header line {header:?}");
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.parse().context("bad content-length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-encoding") {
                gzipped = value.eq_ignore_ascii_case("gzip");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }

        if chunked {
            loop {
                read_line(reader, line)?;
                let size = line.trim_end().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size.trim(), 16)
                    .with_context(|| format!("bad chunk size {:?}", line.trim_end()))?;
                if size == 0 {
                    // Trailers, up to the empty line.
                    loop {
                        read_line(reader, line)?;
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let at = body.len();
                body.resize(at + size, 0);
                reader
                    .read_exact(&mut body[at..])
                    .context("reading a chunk")?;
                read_line(reader, line)?;
            }
        } else if let Some(n) = content_length {
            body.resize(n, 0);
            reader.read_exact(body).context("reading the body")?;
        } else {
            reader.read_to_end(body).context("reading the body")?;
            close = true;
        }
        if close {
            self.stream = None;
        }
        if status != 200 {
            bail!(
                "{path}: status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
        }
        if !gzipped {
            return Ok(body.len() as u64);
        }
        if !self.gzip {
            bail!("{path}: gzip body sent to a poller that did not ask for it");
        }
        // A gzip member starts 1f 8b and ends with ISIZE, the inflated length mod 2^32.
        match body.as_slice() {
            [0x1f, 0x8b, .., a, b, c, d] if body.len() >= 18 => {
                Ok(u32::from_le_bytes([*a, *b, *c, *d]) as u64)
            }
            _ => bail!("{path}: content-encoding gzip, but the body is not a gzip member"),
        }
    }
}

fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String) -> anyhow::Result<()> {
    line.clear();
    let n = reader.read_line(line).context("reading the answer")?;
    if n == 0 {
        bail!("connection closed by the server");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers every request on one connection with the next canned response.
    fn serve(responses: Vec<&'static str>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s);
            for resp in responses {
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap() == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                r.get_mut().write_all(resp.as_bytes()).unwrap();
            }
        });
        addr
    }

    #[test]
    fn reads_length_and_chunked_bodies_on_one_connection() {
        let addr = serve(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
            "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops",
        ]);
        let mut c = Connection::new(addr, Duration::from_secs(2), true);
        let mut body = Vec::new();
        assert_eq!(c.get("/a", &mut body).unwrap(), 5);
        assert_eq!(body, b"hello");
        c.get("/b", &mut body).unwrap();
        assert_eq!(body, b"abcde");
        let err = c.get("/c", &mut body).unwrap_err();
        assert!(format!("{err}").contains("status 500"), "{err}");
        assert_eq!(c.opened, 1);
    }
}
