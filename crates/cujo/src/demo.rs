//! `cujo demo`: the quick start's traffic, from the binary you already built. It plays a
//! small checkout application — a SERVER root `POST /v1/checkout` of `checkout-api` with
//! the journey's dimensions (`cuj.name`, `user.tier`, `tenant.id`), a database call, and a
//! payment job on `payment-worker` that continues the trace a moment later, as a queue
//! consumer does — and sends it over OTLP to a running cujo, printing its progress.
//!
//! By default almost every checkout is good and fast, so the budgets of
//! `config/quickstart.yaml` stay green; `--fail-tier free` makes every checkout of one tier
//! fail, and the page alert fires within minutes. It owns nothing of the pipeline: it is a
//! client of the receivers, like any instrumented application.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cujo_config::outbound::{Compression, Protocol};
use cujo_otlp::exporter::transport::{Downstream, Outcome, encode_message};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message as _;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The OTLP/gRPC endpoint of the cujo to send to.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    pub endpoint: String,
    /// Checkouts per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Checkouts to send (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Fraction of checkouts that fail (HTTP 500) in every tier: the default stays well
    /// within a 99.5% objective.
    #[arg(long, default_value_t = 0.001)]
    pub error_rate: f64,
    /// Fraction of checkouts slower than a 300 ms threshold.
    #[arg(long, default_value_t = 0.002)]
    pub slow_rate: f64,
    /// Every checkout of this `user.tier` (free, pro or enterprise) fails: the budget burns
    /// and, in a few minutes, the page alert fires.
    #[arg(long, value_parser = ["free", "pro", "enterprise"])]
    pub fail_tier: Option<String>,
    /// Seconds between progress lines (0: none).
    #[arg(long, default_value_t = 5)]
    pub progress: u64,
}

const TIERS: [&str; 3] = ["free", "pro", "enterprise"];

/// A small deterministic generator, so runs are repeatable.
struct Dice(u64);

impl Dice {
    fn roll(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn id<const N: usize>(&mut self) -> Vec<u8> {
        (0..N).map(|_| (self.roll() * 256.0) as u8).collect()
    }
}

/// What was sent, for the progress lines and the summary.
#[derive(Default)]
struct Sent {
    checkouts: u64,
    failed: u64,
    slow: u64,
    refused: u64,
}

pub fn run(args: &DemoArgs) -> ExitCode {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        eprintln!("cujo demo: --rate must be a positive number of checkouts per second");
        return ExitCode::from(2);
    }
    for (name, v) in [
        ("--error-rate", args.error_rate),
        ("--slow-rate", args.slow_rate),
    ] {
        if !(0.0..=1.0).contains(&v) {
            eprintln!("cujo demo: {name} must be a fraction between 0 and 1, got {v}");
            return ExitCode::from(2);
        }
    }
    let downstream = match Downstream::new(
        &args.endpoint,
        Protocol::Grpc,
        Compression::None,
        Vec::new(),
        Duration::from_secs(10),
        None,
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cujo demo: --endpoint {:?}: {e}", args.endpoint);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cujo demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(send_all(args, downstream))
}

async fn send_all(args: &DemoArgs, downstream: Downstream) -> ExitCode {
    println!(
        "cujo demo: sending checkout journeys to {} at {}/s{}; open the status page of that cujo (e.g. http://127.0.0.1:9464/)",
        args.endpoint,
        args.rate,
        args.fail_tier
            .as_deref()
            .map(|t| format!(", every {t} checkout failing"))
            .unwrap_or_default()
    );
    let mut dice = Dice(0x5eed);
    let mut sent = Sent::default();
    // Requests go out every 100 ms: the checkouts of the tick, and the payment jobs of the
    // previous tick's checkouts (a queue consumer a moment later, in a request of its own).
    let tick = Duration::from_millis(100);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut jobs: Vec<Span> = Vec::new();
    let mut owed = 0.0f64;
    loop {
        interval.tick().await;
        let done = args.count > 0 && sent.checkouts >= args.count;
        owed += args.rate * tick.as_secs_f64();
        let mut n = owed.floor() as u64;
        owed -= n as f64;
        if args.count > 0 {
            n = n.min(args.count - sent.checkouts);
        }
        let mut api = Vec::new();
        let mut next_jobs = Vec::new();
        for _ in 0..n {
            let (spans, job) = checkout(args, &mut dice, &mut sent);
            api.extend(spans);
            next_jobs.push(job);
        }
        let workers = std::mem::replace(&mut jobs, next_jobs);
        for (service, spans) in [("checkout-api", api), ("payment-worker", workers)] {
            if !spans.is_empty() && !send(&downstream, service, spans, &mut sent).await {
                return ExitCode::FAILURE;
            }
        }
        if args.progress > 0 && last_progress.elapsed() >= Duration::from_secs(args.progress) {
            last_progress = Instant::now();
            println!(
                "cujo demo: {} checkouts in {:.0}s ({} failed, {} slow{})",
                sent.checkouts,
                started.elapsed().as_secs_f64(),
                sent.failed,
                sent.slow,
                if sent.refused > 0 {
                    format!(", {} requests refused and retried", sent.refused)
                } else {
                    String::new()
                }
            );
        }
        if done && jobs.is_empty() {
            break;
        }
    }
    println!(
        "cujo demo: sent {} checkout journeys ({} failed, {} slow)",
        sent.checkouts, sent.failed, sent.slow
    );
    ExitCode::SUCCESS
}

/// Sends `spans` of `service`, retrying what cujo refuses retryably; false when it cannot
/// be reached or refuses for good.
async fn send(downstream: &Downstream, service: &str, spans: Vec<Span>, sent: &mut Sent) -> bool {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "cujo-demo".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = match encode_message(&request.encode_to_vec(), Protocol::Grpc, Compression::None) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cujo demo: cannot encode a request: {e}");
            return false;
        }
    };
    for attempt in 1..=10u32 {
        match downstream.send(body.clone()).await {
            Outcome::Delivered { .. } => return true,
            Outcome::Retryable { after, error } => {
                sent.refused += 1;
                if attempt == 10 {
                    eprintln!("cujo demo: {}: {error}", downstream.display_uri());
                    return false;
                }
                tokio::time::sleep(
                    after.unwrap_or(Duration::from_millis(200 * u64::from(attempt))),
                )
                .await;
            }
            Outcome::Permanent { error } => {
                eprintln!(
                    "cujo demo: {} refused the spans: {error}",
                    downstream.display_uri()
                );
                return false;
            }
        }
    }
    false
}

/// One checkout: the API's root and database call now, and the payment job to send later.
fn checkout(args: &DemoArgs, dice: &mut Dice, sent: &mut Sent) -> (Vec<Span>, Span) {
    let tier = TIERS[(dice.roll() * TIERS.len() as f64) as usize % TIERS.len()];
    let failed = dice.roll() < args.error_rate || args.fail_tier.as_deref() == Some(tier);
    let slow = dice.roll() < args.slow_rate;
    let took_ms = if slow {
        400 + (dice.roll() * 600.0) as u64
    } else {
        40 + (dice.roll() * 150.0) as u64
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let ms = 1_000_000;
    let start = now - took_ms * ms;
    let trace_id = dice.id::<16>();
    let root_id = dice.id::<8>();
    let root = Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: "POST /v1/checkout".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: now,
        attributes: vec![
            string("cuj.name", "checkout"),
            string("user.tier", tier),
            string("tenant.id", &format!("tenant-{}", sent.checkouts % 7)),
            int("http.response.status_code", if failed { 500 } else { 201 }),
        ],
        status: Some(Status {
            code: if failed {
                status::StatusCode::Error
            } else {
                status::StatusCode::Unset
            } as i32,
            message: if failed {
                "payment provider unavailable".into()
            } else {
                String::new()
            },
        }),
        ..Default::default()
    };
    let db = Span {
        trace_id: trace_id.clone(),
        span_id: dice.id::<8>(),
        parent_span_id: root_id.clone(),
        name: "INSERT orders".into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: start + took_ms * ms / 4,
        end_time_unix_nano: now - took_ms * ms / 2,
        ..Default::default()
    };
    let job = Span {
        trace_id,
        span_id: dice.id::<8>(),
        parent_span_id: root_id,
        name: "process payment".into(),
        kind: span::SpanKind::Consumer as i32,
        start_time_unix_nano: now + 20 * ms,
        end_time_unix_nano: now + 100 * ms,
        ..Default::default()
    };
    sent.checkouts += 1;
    sent.failed += u64::from(failed);
    sent.slow += u64::from(slow);
    (vec![root, db], job)
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}
