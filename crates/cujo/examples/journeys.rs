//! A small instrumented "application" for trying cujo: it serves a checkout journey with the
//! OpenTelemetry SDK — a SERVER root with the journey's dimensions, a database call, and a
//! payment job that runs later on a worker, continuing the trace through a queue — and
//! exports the spans over OTLP/gRPC.
//!
//! ```text
//! cargo run --release -p cujo -- --config config/quickstart.yaml
//! cargo run -p cujo --example journeys -- --endpoint http://127.0.0.1:4317 --error-rate 0.02
//! ```
//!
//! Raise `--error-rate` (e.g. 0.3) for a minute and watch the status page's budget burn and
//! the page alert fire.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use clap::Parser;
use opentelemetry::global::ObjectSafeSpan as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

#[derive(Parser)]
struct Args {
    /// cujo's OTLP/gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Journeys to send (0 = until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Journeys per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Fraction of checkouts that fail (HTTP 500).
    #[arg(long, default_value_t = 0.01)]
    error_rate: f64,
    /// Fraction of checkouts slower than the 300 ms threshold.
    #[arg(long, default_value_t = 0.02)]
    slow_rate: f64,
}

fn provider(endpoint: &str, service: &'static str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// A tiny deterministic generator, so runs are repeatable.
struct Dice(u64);

impl Dice {
    fn roll(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = provider(&args.endpoint, "checkout-api")?;
    let worker = provider(&args.endpoint, "payment-worker")?;
    let (api_tracer, worker_tracer) = (api.tracer("checkout"), worker.tracer("payments"));
    let propagator = TraceContextPropagator::new();
    let mut dice = Dice(0x5eed);
    let tiers = ["free", "pro", "enterprise"];
    let pause = Duration::from_secs_f64(1.0 / args.rate.max(0.01));
    let mut sent = 0u64;
    while args.count == 0 || sent < args.count {
        let now = SystemTime::now();
        let tier = tiers[(dice.roll() * tiers.len() as f64) as usize % tiers.len()];
        let failed = dice.roll() < args.error_rate;
        let took = if dice.roll() < args.slow_rate {
            Duration::from_millis(400 + (dice.roll() * 600.0) as u64)
        } else {
            Duration::from_millis(40 + (dice.roll() * 150.0) as u64)
        };
        let mut root = api_tracer
            .span_builder("POST /v1/checkout")
            .with_kind(SpanKind::Server)
            .with_start_time(now - took)
            .with_attributes([
                KeyValue::new("cuj.name", "checkout"),
                KeyValue::new("user.tier", tier),
                KeyValue::new("tenant.id", format!("tenant-{}", sent % 7)),
                KeyValue::new("http.response.status_code", if failed { 500 } else { 201 }),
            ])
            .start(&api_tracer);
        if failed {
            root.set_status(Status::error("payment provider unavailable"));
        }
        let cx = Context::new().with_remote_span_context(root.span_context().clone());
        let mut db = api_tracer
            .span_builder("INSERT orders")
            .with_kind(SpanKind::Client)
            .with_start_time(now - took + took / 4)
            .start_with_context(&api_tracer, &cx);
        db.end_with_timestamp(now - took / 2);
        // Enqueue the payment job: the trace context travels in the message headers.
        let mut carrier = HashMap::new();
        propagator.inject_context(&cx, &mut carrier);
        root.end_with_timestamp(now);
        // The worker picks the job up later and continues the same trace.
        let parent = propagator.extract(&carrier);
        let mut job = worker_tracer
            .span_builder("process payment")
            .with_kind(SpanKind::Consumer)
            .with_start_time(now)
            .start_with_context(&worker_tracer, &parent);
        job.end_with_timestamp(now + Duration::from_millis(80));
        sent += 1;
        tokio::time::sleep(pause).await;
    }
    api.shutdown()?;
    worker.shutdown()?;
    println!("sent {sent} checkout journeys");
    Ok(())
}
