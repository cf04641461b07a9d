//! Compressed-body pressure on a running cujo's gRPC receiver: `--clients` HTTP/2
//! connections, each keeping `--concurrency` calls in flight, every call one gzip message
//! (compressed once, sent many times) that inflates to `--inflated` bytes. `--kind valid`
//! is one span with a long attribute (accepted and forwarded); `--kind bomb` inflates past
//! the receiver's limit (refused `RESOURCE_EXHAUSTED` once inflated that far). cujo's VmRSS
//! is sampled every 20 ms; the report gives the peak (or VmHWM if higher) and the answers by
//! gRPC status. Measures whether inflated bytes are counted against the admission budget as
//! they inflate (issue 12's memory contract) when the receiver's gRPC layer changes.
//!
//! ```sh
//! cujo-inflate --addr 127.0.0.1:4317 --pid $(pidof cujo) --kind bomb --duration 10s
//! ```

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    /// A valid request of one span whose attribute makes it `--inflated` bytes.
    Valid,
    /// Zeros: inflates to `--inflated` bytes of no valid message (set it past the limit).
    Bomb,
}

#[derive(Debug, Parser)]
#[command(about = "Concurrent gzip gRPC calls against cujo; peak RSS and answers")]
struct Args {
    #[arg(long)]
    addr: SocketAddr,
    /// cujo's process id, for VmRSS.
    #[arg(long)]
    pid: u32,
    #[arg(long, value_enum, default_value = "valid")]
    kind: Kind,
    /// Inflated size of each message in bytes.
    #[arg(long, default_value_t = (16 << 20) - 4096)]
    inflated: usize,
    #[arg(long, default_value_t = 8)]
    clients: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

fn message(kind: Kind, inflated: usize) -> Vec<u8> {
    match kind {
        Kind::Bomb => vec![0u8; inflated],
        Kind::Valid => {
            let mut request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id: vec![7; 16],
                            span_id: vec![9; 8],
                            name: "inflate".into(),
                            start_time_unix_nano: 1,
                            end_time_unix_nano: 2,
                            attributes: vec![KeyValue {
                                key: "blob".into(),
                                value: Some(AnyValue {
                                    value: Some(Value::StringValue(String::new())),
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let overhead = request.encoded_len() + 8;
            let fill = inflated.saturating_sub(overhead);
            if let Some(Value::StringValue(s)) = request.resource_spans[0].scope_spans[0].spans[0]
                .attributes[0]
                .value
                .as_mut()
                .and_then(|v| v.value.as_mut())
            {
                *s = "a".repeat(fill);
            }
            request.encode_to_vec()
        }
    }
}

fn framed_gzip(raw: &[u8]) -> anyhow::Result<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(raw)?;
    let gz = enc.finish()?;
    let mut out = Vec::with_capacity(gz.len() + 5);
    out.push(1);
    out.extend_from_slice(&u32::try_from(gz.len())?.to_be_bytes());
    out.extend_from_slice(&gz);
    Ok(Bytes::from(out))
}

fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

type Answers = Arc<Mutex<BTreeMap<String, u64>>>;

async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    body: Bytes,
) -> String {
    let request = http::Request::post(format!(
        "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("grpc-encoding", "gzip")
    .body(Full::new(body));
    let Ok(request) = request else {
        return "request not built".into();
    };
    let response = match client.request(request).await {
        Ok(r) => r,
        Err(e) => return format!("error: {e}"),
    };
    let (parts, body) = response.into_parts();
    if let Some(s) = parts.headers.get("grpc-status") {
        return format!("grpc-status {}", s.to_str().unwrap_or("?"));
    }
    match body.collect().await {
        Ok(c) => match c.trailers().and_then(|t| t.get("grpc-status")) {
            Some(s) => format!("grpc-status {}", s.to_str().unwrap_or("?")),
            None => "no grpc-status".into(),
        },
        Err(e) => format!("body error: {e}"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let raw = message(args.kind, args.inflated);
    let body = framed_gzip(&raw).context("compressing")?;
    drop(raw);
    eprintln!(
        "cujo-inflate: {:?}, {} bytes inflating to {}, {} clients x {} in flight, {:?}",
        args.kind,
        body.len(),
        args.inflated,
        args.clients,
        args.concurrency,
        args.duration
    );
    let rss_before = vm_kib(args.pid, "VmRSS:").unwrap_or(0);
    let answers: Answers = Arc::default();
    let end = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        for _ in 0..args.concurrency {
            let (client, body, answers) = (client.clone(), body.clone(), answers.clone());
            let addr = args.addr;
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let answer = call(&client, addr, body.clone()).await;
                    if let Ok(mut a) = answers.lock() {
                        *a.entry(answer).or_default() += 1;
                    }
                }
            }));
        }
    }
    let mut peak = 0u64;
    let mut samples = Vec::new();
    let start = Instant::now();
    while Instant::now() < end {
        if let Some(kib) = vm_kib(args.pid, "VmRSS:") {
            peak = peak.max(kib);
            samples.push(kib);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let hwm = vm_kib(args.pid, "VmHWM:").unwrap_or(0);
    samples.sort_unstable();
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    let p95 = samples.get(samples.len() * 95 / 100).copied().unwrap_or(0);
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "rss_before_mib={:.0} rss_median_mib={:.0} rss_p95_mib={:.0} rss_peak_mib={:.0} vmhwm_mib={:.0} seconds={:.1}",
        mib(rss_before),
        mib(median),
        mib(p95),
        mib(peak),
        mib(hwm),
        start.elapsed().as_secs_f64()
    );
    if let Ok(a) = answers.lock() {
        for (answer, n) in a.iter() {
            println!("  {answer}: {n}");
        }
    }
    Ok(())
}
