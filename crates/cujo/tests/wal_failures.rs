//! The write-ahead log when things go wrong (issue 14), end to end with the real binary and
//! real OTLP clients: a full disk refuses retryably and recovers once the downstream drains
//! it; a torn or damaged segment is replayed around the damage, which is logged and counted;
//! a SIGKILL under sustained load loses nothing that was acknowledged.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message as _;
use support::{Cujo, Downstream, DownstreamMode, exporter_yaml, metric_value, wait_for};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cujo-walfail-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A request of `n` spans (ids unique to `seed`) whose spans are named `{prefix}-{i}`, and
/// those names.
fn named_request(prefix: &str, seed: u64, n: usize) -> (ExportTraceServiceRequest, Vec<String>) {
    let mut req = support::make_request("shop", seed, n);
    let mut names = Vec::with_capacity(n);
    for (i, span) in req.resource_spans[0].scope_spans[0]
        .spans
        .iter_mut()
        .enumerate()
    {
        span.name = format!("{prefix}-{i}");
        names.push(span.name.clone());
    }
    (req, names)
}

/// cujo's whole config: receivers taking requests up to `limit` (so that a small
/// `max_record_size`, and segments of a few records, are valid), the `wal:` section, the
/// downstream, the admin listener.
fn cujo_yaml(limit: &str, wal: &str, downstream: &Downstream) -> String {
    format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\", max_recv_msg_size: {limit} }}\n    http: {{ endpoint: \"127.0.0.1:0\", max_request_body_size: {limit} }}\nwal: {{ {wal} }}\n{}  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
        exporter_yaml(downstream.addr, "")
    )
}

/// How many times each span name arrived downstream.
fn arrived(downstream: &Downstream) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for s in downstream.spans() {
        *seen.entry(s.span.name).or_insert(0) += 1;
    }
    seen
}

/// Waits until every span named in `acknowledged` has reached the downstream.
async fn all_arrived(downstream: &Downstream, acknowledged: &[String]) {
    wait_for("every acknowledged span downstream", || async {
        let seen = arrived(downstream);
        acknowledged
            .iter()
            .all(|n| seen.contains_key(n))
            .then_some(())
    })
    .await;
}

/// Whether a gRPC status is cujo's retryable refusal (UNAVAILABLE with RetryInfo), not a
/// transport error.
fn is_retryable_refusal(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && cujo_otlp::rpc::RpcStatus::from_details_bytes(status.details())
            .and_then(|s| s.retry_delay())
            .is_some()
}

/// One OTLP/HTTP request on its own connection: `(status, lower-cased head, body)`, or
/// `None` if the connection failed before an answer (cujo gone).
async fn http_post(addr: SocketAddr, body: &[u8]) -> Option<(u16, String, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: cujo\r\nContent-Type: application/x-protobuf\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(body).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_string()))
}

// ---------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------

/// How the test gets a private tmpfs: `unshare -m` as root, `unshare -rm` (a user namespace
/// mapping us to root) otherwise. Fails the test, saying why, when neither can mount one:
/// a disk-full test that cannot fill a disk must not pass.
fn unshare_args() -> Vec<&'static str> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false);
    let args = if root { vec!["-m"] } else { vec!["-rm"] };
    let probe = scratch("unshare-probe");
    let out = Command::new("unshare")
        .args(&args)
        .args(["sh", "-c", "mount -t tmpfs -o size=1m tmpfs \"$1\"", "sh"])
        .arg(&probe)
        .output();
    let _ = std::fs::remove_dir_all(&probe);
    match out {
        Ok(out) if out.status.success() => args,
        Ok(out) => panic!(
            "this test needs a private tmpfs: `unshare {} sh -c 'mount -t tmpfs …'` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("this test needs unshare(1) (util-linux) to mount a private tmpfs: {e}"),
    }
}

/// Bytes available on the file system holding `dir` as cujo (process `pid`) sees it: its
/// tmpfs is mounted in cujo's own mount namespace, reached through `/proc/PID/root`.
fn available_bytes(pid: u32, dir: &Path) -> u64 {
    let path = format!("/proc/{pid}/root{}", dir.display());
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S %T"])
        .arg(&path)
        .output()
        .expect("run stat");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert!(
        out.status.success() && fields.len() == 3,
        "stat -f {path}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fields[2], "tmpfs", "{path} is not cujo's private tmpfs");
    let blocks: u64 = fields[0].parse().expect("available blocks");
    let size: u64 = fields[1].parse().expect("block size");
    blocks * size
}

/// The WAL's directory is a 6 MiB tmpfs (its `max_size` is 64 MiB, so the refusals come
/// from ENOSPC) and the downstream is down, so nothing is trimmed. Requests are acknowledged
/// until the disk is full, then refused retryably (gRPC UNAVAILABLE with RetryInfo, HTTP 503
/// with Retry-After), counted as `cujo_wal_refused_total{reason="io"}`, with one log line
/// naming the problem per run of failures (not one per refusal); cujo keeps serving. Once the downstream is up, every acknowledged
/// span arrives, the segments are trimmed, the space comes back and requests are accepted
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_retryably_and_recovers_once_the_downstream_drains_it() {
    const TMPFS: u64 = 6 << 20;
    let unshare = unshare_args();
    let root = scratch("enospc");
    let dir = root.join("wal");
    std::fs::create_dir_all(&dir).expect("mount point");
    let downstream = Downstream::start().await;
    downstream.set_mode(DownstreamMode::Unavailable);
    let config = cujo_yaml(
        "64KiB",
        &format!(
            "directory: \"{}\", max_size: 64MiB, segment_size: 1MiB, max_record_size: 128KiB, max_pending: 1MiB, commit_interval: 1ms",
            dir.display()
        ),
        &downstream,
    );
    let mount = dir.clone();
    let cujo = Cujo::start_yaml_via(&config, move |binary, config| {
        let mut c = Command::new("unshare");
        c.args(&unshare)
            .args([
                "sh",
                "-c",
                "mount -t tmpfs -o size=6m tmpfs \"$1\" && exec \"$2\" --config \"$3\"",
                "sh",
            ])
            .arg(&mount)
            .arg(binary)
            .arg(config);
        c
    })
    .await;
    let free_at_start = available_bytes(cujo.pid(), &dir);
    assert!(
        free_at_start <= TMPFS && free_at_start > TMPFS - (64 << 10),
        "cujo's WAL is on its 6 MiB tmpfs: {free_at_start} bytes free"
    );

    // ~33 KB requests: the tmpfs holds fewer than 200 of them.
    let mut client = TraceServiceClient::connect(format!("http://{}", cujo.grpc))
        .await
        .expect("connect");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut refusal = None;
    let mut seed = 0;
    while refusal.is_none() && seed < 400 {
        seed += 1;
        let (request, names) = named_request(&format!("full-{seed}"), seed, 300);
        match client.export(request).await {
            Ok(_) => acknowledged.extend(names),
            Err(status) => refusal = Some(status),
        }
    }
    let status = refusal.expect("a 6 MiB disk fills up while the downstream is down");
    assert!(is_retryable_refusal(&status), "{status:?}");
    assert!(status.message().contains("write-ahead log"), "{status:?}");
    assert!(
        status.message().contains("No space left on device"),
        "{status:?}"
    );
    assert!(
        acknowledged.len() >= 100 * 300,
        "refused after only {} spans",
        acknowledged.len()
    );
    // While the disk is full, requests are refused. A page's slack (a segment created
    // ahead of time starts a fresh page) may still take one in between: it is acknowledged
    // like any other and ends that run of failures. Over gRPC until 3 refusals in a row,
    // then over HTTP until one is refused.
    let (mut grpc_refused, mut http_refused, mut in_a_row, mut runs) = (1u64, 0u64, 1, 1u64);
    let mut acknowledged_grpc = acknowledged.len();
    while http_refused == 0 {
        seed += 1;
        assert!(seed < 440, "the disk stays full: refused 3 times in a row");
        let (request, names) = named_request(&format!("full-{seed}"), seed, 300);
        let refused = if in_a_row < 3 {
            match client.export(request).await {
                Ok(_) => {
                    acknowledged_grpc += names.len();
                    acknowledged.extend(names);
                    false
                }
                Err(status) => {
                    assert!(is_retryable_refusal(&status), "{status:?}");
                    grpc_refused += 1;
                    true
                }
            }
        } else {
            let (code, head, body) = http_post(cujo.http, &request.encode_to_vec())
                .await
                .expect("an HTTP answer");
            match code {
                200 => {
                    acknowledged.extend(names);
                    false
                }
                503 => {
                    assert!(head.contains("\r\nretry-after: "), "{head}");
                    assert!(body.contains("write-ahead log"), "{body}");
                    http_refused += 1;
                    true
                }
                _ => panic!("HTTP {code}: {head}\n{body}"),
            }
        };
        if refused {
            runs += u64::from(in_a_row == 0);
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
    }
    let free_when_full = available_bytes(cujo.pid(), &dir);
    assert!(
        free_when_full < 64 << 10,
        "the tmpfs is full: {free_when_full} bytes free"
    );
    println!(
        "disk full: {} spans acknowledged, {grpc_refused} gRPC and {http_refused} HTTP requests refused in {runs} run(s) of failures, {free_when_full} bytes free",
        acknowledged.len()
    );
    // Still serving: health, metrics, and the accounting of what was refused.
    let (health, _) = support::http_get(cujo.admin, "/healthz")
        .await
        .expect("healthz");
    assert_eq!(health, 200);
    let m = cujo.metrics().await;
    assert_eq!(
        metric_value(&m, "cujo_wal_refused_total{reason=\"io\"}"),
        (grpc_refused + http_refused) as f64,
        "one refused append per refused request: {m}"
    );
    assert_eq!(
        metric_value(&m, "cujo_wal_refused_total{reason=\"full\"}"),
        0.0,
        "refused by the disk, not by max_size"
    );
    assert_eq!(
        metric_value(
            &m,
            "cujo_receiver_requests_total{transport=\"grpc\",outcome=\"refused\"}"
        ),
        grpc_refused as f64
    );
    assert_eq!(
        metric_value(
            &m,
            "cujo_receiver_requests_total{transport=\"http\",outcome=\"refused\"}"
        ),
        http_refused as f64
    );
    assert_eq!(
        metric_value(
            &m,
            "cujo_receiver_spans_total{transport=\"grpc\",outcome=\"accepted\"}"
        ),
        acknowledged_grpc as f64
    );
    // One log line per run of failures, however many requests each refused.
    let log = cujo.log();
    let named = log
        .lines()
        .filter(|l| l.contains("No space left on device"))
        .count() as u64;
    assert_eq!(
        named, runs,
        "one log line names the problem per run of failures ({runs}):\n{log}"
    );
    assert!(
        grpc_refused + 1 >= runs + 3,
        "{grpc_refused} refusals in {runs} runs"
    );

    // The downstream comes back: everything acknowledged arrives, the log is trimmed.
    downstream.set_mode(DownstreamMode::Accept);
    all_arrived(&downstream, &acknowledged).await;
    let m = wait_for("the delivered segments deleted", || async {
        let m = cujo.metrics().await;
        (metric_value(&m, "cujo_wal_live_segments") == 0.0).then_some(m)
    })
    .await;
    assert!(
        metric_value(&m, "cujo_wal_segments_deleted_total") >= 5.0,
        "{m}"
    );
    assert!(
        metric_value(&m, "cujo_wal_live_bytes") == 0.0,
        "nothing live once delivered: {m}"
    );
    let free_after = available_bytes(cujo.pid(), &dir);
    assert!(
        free_after > TMPFS - (64 << 10),
        "the space is back: {free_after} bytes free"
    );
    // And requests are accepted again, over both transports, and delivered.
    let (request, again) = named_request("again-grpc", 2001, 300);
    client.export(request).await.expect("accepted again");
    let (request, again_http) = named_request("again-http", 2002, 300);
    let (code, head, _) = http_post(cujo.http, &request.encode_to_vec())
        .await
        .expect("an HTTP answer");
    assert_eq!(code, 200, "{head}");
    wait_for("the new spans downstream", || async {
        let seen = arrived(&downstream);
        again
            .iter()
            .chain(&again_http)
            .all(|n| seen.contains_key(n))
            .then_some(())
    })
    .await;
    assert!(
        cujo.log()
            .contains("appends are written again after a failure"),
        "{}",
        cujo.log()
    );
    drop(cujo);
    let _ = std::fs::remove_dir_all(&root);
}

// ---------------------------------------------------------------------------------------
// Torn and damaged segments
// ---------------------------------------------------------------------------------------

/// A record as found in a segment file, read with the format `cujo_wal::format` documents.
#[derive(Debug, Clone)]
struct OnDisk {
    segment: PathBuf,
    /// Where its 12-byte header starts.
    offset: u64,
    /// Payload bytes.
    len: u64,
    /// The names of its spans.
    names: Vec<String>,
}

/// Every record of every segment in `dir`, in append order.
fn records_on_disk(dir: &Path) -> Vec<OnDisk> {
    use cujo_wal::format::{BLOCK, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, decode_header};
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    let mut out = Vec::new();
    for segment in segments {
        let bytes = std::fs::read(&segment).expect("segment");
        let mut at = SEGMENT_HEADER_LEN as usize;
        // Records, then the zeros that pad the last block (a segment is written in blocks).
        let padding = |at: usize| bytes[at..].iter().all(|b| *b == 0);
        while at + RECORD_HEADER_LEN as usize <= bytes.len() && !padding(at) {
            let head: [u8; 12] = bytes[at..at + 12].try_into().expect("12 bytes");
            let header = decode_header(&head).expect("a record starts here");
            let start = at + RECORD_HEADER_LEN as usize;
            let end = start + header.len as usize;
            let payload = Bytes::copy_from_slice(&bytes[start..end]);
            let (_, body) =
                cujo_otlp::receiver::durable::decode_record(&payload).expect("a record cujo wrote");
            let request = ExportTraceServiceRequest::decode(body).expect("a request");
            let names = request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(|s| s.name.clone())
                .collect();
            out.push(OnDisk {
                segment: segment.clone(),
                offset: at as u64,
                len: u64::from(header.len),
                names,
            });
            at = end;
        }
        assert!(
            bytes.len() - at < BLOCK && bytes.len() % BLOCK == 0,
            "{} ends on a record, then pads its block",
            segment.display()
        );
    }
    out
}

const REQUESTS: u64 = 60;
const SPANS: usize = 20;

/// cujo with a log of 80 KiB segments: 60 requests of 20 spans (~2.3 KB each) take two.
fn damage_config(dir: &Path, downstream: &Downstream) -> String {
    cujo_yaml(
        "8KiB",
        &format!(
            "directory: \"{}\", segment_size: 80KiB, max_record_size: 72KiB, commit_interval: 1ms",
            dir.display()
        ),
        downstream,
    )
}

/// Sends 60 requests while the downstream is down, SIGKILLs cujo, and returns what is on
/// disk (every request acknowledged, one record each).
async fn acknowledged_then_killed(
    name: &str,
    config: &str,
    wal: &Path,
    downstream: &Downstream,
) -> Vec<OnDisk> {
    downstream.set_mode(DownstreamMode::Unavailable);
    let cujo = Cujo::start_yaml(config).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", cujo.grpc))
        .await
        .expect("connect");
    let mut acknowledged = Vec::new();
    for seed in 1..=REQUESTS {
        let (request, names) = named_request(&format!("{name}-{seed}"), seed, SPANS);
        client.export(request).await.expect("acknowledged");
        acknowledged.extend(names);
    }
    // SIGKILL: nothing drained, nothing saved.
    drop(cujo);
    let records = records_on_disk(wal);
    assert_eq!(records.len() as u64, REQUESTS, "one record per request");
    let on_disk: Vec<String> = records.iter().flat_map(|r| r.names.clone()).collect();
    assert_eq!(on_disk, acknowledged, "in the order acknowledged");
    let segments: HashSet<_> = records.iter().map(|r| &r.segment).collect();
    assert!(segments.len() >= 2, "{segments:?}");
    records
}

/// Restarts cujo on the damaged log with the downstream up and waits until `expected` has
/// arrived; returns the restarted cujo and its `/metrics`.
async fn replay_expecting(
    config: &str,
    downstream: &Downstream,
    expected: &[String],
) -> (Cujo, String) {
    downstream.set_mode(DownstreamMode::Accept);
    let cujo = Cujo::start_yaml(config).await;
    wait_for("every intact record's spans downstream", || async {
        let seen = arrived(downstream);
        expected.iter().all(|n| seen.contains_key(n)).then_some(())
    })
    .await;
    let m = wait_for("the replayed spans exported", || async {
        let m = cujo.metrics().await;
        (metric_value(&m, "cujo_exporter_sent_spans_total") >= expected.len() as f64).then_some(m)
    })
    .await;
    let seen = arrived(downstream);
    assert_eq!(
        seen.values().sum::<usize>(),
        expected.len(),
        "exactly the intact records' spans, once each"
    );
    (cujo, m)
}

/// The last segment is cut in the middle of its last record (a torn tail, as a crash while
/// writing leaves one). cujo starts, replays every record before the cut, logs what it
/// skipped, and counts it: one torn tail of exactly the bytes left of that record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_segment_replays_every_record_before_the_cut() {
    let root = scratch("truncated");
    let wal = root.join("wal");
    let downstream = Downstream::start().await;
    let config = damage_config(&wal, &downstream);
    let records = acknowledged_then_killed("torn", &config, &wal, &downstream).await;

    let last = records.last().expect("records").clone();
    let cut_at = last.offset + 12 + last.len / 2;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.segment)
        .expect("open the last segment");
    file.set_len(cut_at).expect("truncate");
    drop(file);
    let expected: Vec<String> = records[..records.len() - 1]
        .iter()
        .flat_map(|r| r.names.clone())
        .collect();

    let (cujo, m) = replay_expecting(&config, &downstream, &expected).await;
    assert_eq!(
        metric_value(&m, "cujo_wal_replayed_records_total"),
        (REQUESTS - 1) as f64,
        "{m}"
    );
    assert_eq!(metric_value(&m, "cujo_wal_lost_records_total"), 1.0);
    assert_eq!(
        metric_value(&m, "cujo_wal_lost_bytes_total"),
        (12 + last.len / 2) as f64
    );
    assert_eq!(metric_value(&m, "cujo_wal_corrupt_skips_total"), 0.0);
    assert_eq!(metric_value(&m, "cujo_wal_corrupt_bytes_total"), 0.0);
    assert_eq!(
        metric_value(
            &m,
            "cujo_receiver_spans_total{transport=\"wal\",outcome=\"accepted\"}"
        ),
        expected.len() as f64
    );
    let log = cujo.log();
    let replayed = log
        .lines()
        .find(|l| l.contains("write-ahead log replayed"))
        .unwrap_or_else(|| panic!("no replay line:\n{log}"));
    assert!(
        replayed.contains("WARN")
            && replayed.contains(&format!("records={}", REQUESTS - 1))
            && replayed.contains("torn_tails=1")
            && replayed.contains(&format!("torn_tail_bytes={}", 12 + last.len / 2))
            && replayed.contains("damaged_stretches=0"),
        "{replayed}"
    );
    let name = last
        .segment
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    assert!(
        log.lines()
            .any(|l| l.contains("replay skipped") && l.contains(name)),
        "the segment is named:\n{log}"
    );
    drop(cujo);
    let _ = std::fs::remove_dir_all(&root);
}

/// One byte flipped in the payload of an early record (damage, as a bad disk leaves), and a
/// well-framed record cujo cannot read back added at the end. cujo starts, skips the damaged
/// record to the next valid one, skips the unreadable one, replays every other record, and
/// counts both: one damaged stretch of exactly that record's bytes, one invalid request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_skips_only_its_record_and_unreadable_records_are_counted() {
    let root = scratch("flipped");
    let wal = root.join("wal");
    let downstream = Downstream::start().await;
    let config = damage_config(&wal, &downstream);
    let records = acknowledged_then_killed("flip", &config, &wal, &downstream).await;

    let damaged = records[1].clone();
    assert_eq!(damaged.segment, records[0].segment, "an early record");
    let mut bytes = std::fs::read(&damaged.segment).expect("segment");
    let at = (damaged.offset + 12 + damaged.len / 2) as usize;
    bytes[at] ^= 0x10;
    std::fs::write(&damaged.segment, &bytes).expect("flip a byte");
    // A record with a valid frame and CRC that is no request cujo writes (unknown sender tag).
    // It goes where the writer would have put the next record: over the block's padding.
    let last_record = records.last().expect("records");
    let last = last_record.segment.clone();
    let mut frame = Vec::new();
    cujo_wal::format::encode_record(&mut frame, b"\x09not a record of this version");
    let mut tail = std::fs::read(&last).expect("last segment");
    tail.truncate((last_record.offset + 12 + last_record.len) as usize);
    tail.extend_from_slice(&frame);
    std::fs::write(&last, &tail).expect("append a record");
    let expected: Vec<String> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .flat_map(|(_, r)| r.names.clone())
        .collect();

    let (cujo, m) = replay_expecting(&config, &downstream, &expected).await;
    // The 59 intact records and the unreadable one were read; the damaged one was skipped.
    assert_eq!(
        metric_value(&m, "cujo_wal_replayed_records_total"),
        REQUESTS as f64,
        "{m}"
    );
    assert_eq!(metric_value(&m, "cujo_wal_corrupt_skips_total"), 1.0);
    assert_eq!(
        metric_value(&m, "cujo_wal_corrupt_bytes_total"),
        (12 + damaged.len) as f64
    );
    assert_eq!(metric_value(&m, "cujo_wal_lost_records_total"), 0.0);
    assert_eq!(
        metric_value(
            &m,
            "cujo_receiver_requests_total{transport=\"wal\",outcome=\"invalid\"}"
        ),
        1.0,
        "the unreadable record is counted: {m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "cujo_receiver_requests_total{transport=\"wal\",outcome=\"accepted\"}"
        ),
        (REQUESTS - 1) as f64
    );
    let log = cujo.log();
    let replayed = log
        .lines()
        .find(|l| l.contains("write-ahead log replayed"))
        .unwrap_or_else(|| panic!("no replay line:\n{log}"));
    assert!(
        replayed.contains(&format!("records={REQUESTS}"))
            && replayed.contains("unreadable=1")
            && replayed.contains("torn_tails=0")
            && replayed.contains("damaged_stretches=1")
            && replayed.contains(&format!("damaged_bytes={}", 12 + damaged.len)),
        "{replayed}"
    );
    assert!(
        log.contains("a replayed record was skipped"),
        "the unreadable record is logged:\n{log}"
    );
    drop(cujo);
    let _ = std::fs::remove_dir_all(&root);
}

// ---------------------------------------------------------------------------------------
// SIGKILL under sustained load
// ---------------------------------------------------------------------------------------

/// What the load's clients were told: the span names of each acknowledged request.
#[derive(Default)]
struct Acknowledged {
    names: Mutex<Vec<String>>,
    requests: AtomicU64,
    refused: AtomicU64,
}

impl Acknowledged {
    fn add(&self, names: Vec<String>) {
        self.names.lock().expect("lock").extend(names);
        self.requests.fetch_add(1, Relaxed);
    }
}

const CLIENT_MAX_REQUESTS: u64 = 3_000;

/// A gRPC client sending requests of 10 uniquely named spans until cujo is gone.
async fn grpc_load(id: usize, addr: SocketAddr, acked: Arc<Acknowledged>, stop: Arc<AtomicBool>) {
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    for r in 0..CLIENT_MAX_REQUESTS {
        if stop.load(Relaxed) {
            return;
        }
        let (request, names) = named_request(&format!("grpc{id}-{r}"), (id as u64) << 32 | r, 10);
        match client.export(request).await {
            Ok(_) => acked.add(names),
            Err(status) if is_retryable_refusal(&status) => {
                acked.refused.fetch_add(1, Relaxed);
            }
            // cujo is gone: a request in flight was not acknowledged.
            Err(_) => return,
        }
    }
}

/// An HTTP client sending requests of 10 uniquely named spans until cujo is gone.
async fn http_load(id: usize, addr: SocketAddr, acked: Arc<Acknowledged>, stop: Arc<AtomicBool>) {
    for r in 0..CLIENT_MAX_REQUESTS {
        if stop.load(Relaxed) {
            return;
        }
        let (request, names) = named_request(&format!("http{id}-{r}"), (id as u64) << 32 | r, 10);
        match http_post(addr, &request.encode_to_vec()).await {
            Some((200, _, _)) => acked.add(names),
            Some((503, _, _)) => {
                acked.refused.fetch_add(1, Relaxed);
            }
            Some((code, head, body)) => panic!("HTTP {code}: {head}\n{body}"),
            None => return,
        }
    }
}

/// Six clients (four gRPC, two HTTP) send continuously, each span uniquely named, to cujo
/// forwarding to a live downstream; cujo is SIGKILLed in the middle of it and restarted on
/// the same log. Every span of every acknowledged request arrives at least once; duplicates
/// (spans exported before the kill whose segment was not yet trimmed) are counted and
/// printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_under_sustained_load_loses_nothing_acknowledged() {
    const KILL_AFTER: u64 = 1_500;
    let root = scratch("load");
    let downstream = Downstream::start().await;
    // Segments of ~200 requests: several are sealed and trimmed before the kill.
    let config = cujo_yaml(
        "64KiB",
        &format!(
            "directory: \"{}\", segment_size: 256KiB, max_record_size: 128KiB, commit_interval: 2ms",
            root.join("wal").display()
        ),
        &downstream,
    );
    let cujo = Cujo::start_yaml(&config).await;
    let acked = Arc::new(Acknowledged::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..4 {
        clients.spawn(grpc_load(id, cujo.grpc, acked.clone(), stop.clone()));
    }
    for id in 4..6 {
        clients.spawn(http_load(id, cujo.http, acked.clone(), stop.clone()));
    }
    // Killed once segments have been delivered and trimmed under load, so that the log
    // holds a mix of exported and not yet exported records.
    wait_for("load acknowledged, delivered and trimmed", || async {
        if acked.requests.load(Relaxed) < KILL_AFTER || downstream.span_count() == 0 {
            return None;
        }
        let m = cujo.metrics().await;
        (metric_value(&m, "cujo_wal_segments_deleted_total") >= 1.0).then_some(())
    })
    .await;
    // SIGKILL while the clients are still sending.
    drop(cujo);
    let at_kill = acked.requests.load(Relaxed);
    assert!(
        at_kill < 6 * CLIENT_MAX_REQUESTS,
        "the clients were still sending at the kill"
    );
    stop.store(true, Relaxed);
    let deadline = tokio::time::Instant::now() + support::DEADLINE;
    while let Some(done) = tokio::time::timeout_at(deadline, clients.join_next())
        .await
        .expect("the clients stop once cujo is gone")
    {
        done.expect("client task");
    }
    let acknowledged = acked.names.lock().expect("lock").clone();
    let requests = acked.requests.load(Relaxed);
    let before_restart = downstream.span_count();

    let restarted = Cujo::start_yaml(&config).await;
    all_arrived(&downstream, &acknowledged).await;
    let m = restarted.metrics().await;
    let seen = arrived(&downstream);
    let missing = acknowledged
        .iter()
        .filter(|n| !seen.contains_key(*n))
        .count();
    assert_eq!(missing, 0);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let unacknowledged = seen.len() - acknowledged.len();
    let replayed = metric_value(&m, "cujo_wal_replayed_records_total");
    println!(
        "SIGKILL under load: {requests} requests acknowledged ({} spans), {} refused; {before_restart} spans downstream at the kill; after the restart {replayed} records replayed, {} spans downstream: {duplicates} duplicates, {unacknowledged} spans of requests not acknowledged, 0 missing",
        acknowledged.len(),
        acked.refused.load(Relaxed),
        seen.values().sum::<usize>(),
    );
    assert!(requests >= KILL_AFTER);
    assert!(
        replayed >= 1.0,
        "the segment being appended to at the kill is replayed: {m}"
    );
    drop(restarted);
    let _ = std::fs::remove_dir_all(&root);
}
