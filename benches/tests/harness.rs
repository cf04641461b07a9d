//! The harness against its own downstream (no target process): every acknowledged span must
//! arrive exactly once, refusals must be retried, and the rate mode must hold its rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cujo_bench::downstream::Downstream;
use cujo_bench::load::{self, LoadConfig, LoadOutcome, Mode};
use cujo_bench::workload::{RequestPool, WorkloadConfig};

fn pool() -> Arc<RequestPool> {
    Arc::new(
        RequestPool::generate(&WorkloadConfig {
            min_request_spans: 50,
            max_request_spans: 150,
            pool_spans: 20_000,
            seed: 11,
            ..WorkloadConfig::default()
        })
        .unwrap(),
    )
}

fn config(mode: Mode, duration: Duration) -> LoadConfig {
    LoadConfig {
        mode,
        clients: 2,
        concurrency: 2,
        warmup: Duration::from_millis(200),
        duration,
        request_timeout: Duration::from_secs(5),
        retry_timeout: Duration::from_secs(10),
        poll: None,
    }
}

fn run(pool: Arc<RequestPool>, downstream: &Downstream, cfg: LoadConfig) -> LoadOutcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(load::run(
        pool,
        downstream.addr,
        cfg,
        load::Watched::default(),
    ))
    .unwrap()
}

/// The downstream counts a request before its answer leaves, so by the time the client has
/// an acknowledgement the count is there; wait briefly anyway, on the condition.
fn wait_for_count(downstream: &Downstream, spans: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while downstream.counts.snapshot().spans < spans && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn refused_requests_are_retried_and_every_span_arrives_once() {
    let pool = pool();
    let downstream = Downstream::start_refusing(7).unwrap();
    let outcome = run(
        pool.clone(),
        &downstream,
        config(Mode::Saturate, Duration::from_millis(800)),
    );
    let stats = &outcome.stats;
    wait_for_count(&downstream, stats.acked_spans);
    let down = downstream.counts.snapshot();

    assert!(
        stats.refusals > 0,
        "the downstream refused, the clients must have seen it"
    );
    assert_eq!(
        stats.refusals,
        downstream
            .counts
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(
        (stats.gave_up, stats.failed_requests),
        (0, 0),
        "{:?}",
        stats.first_error
    );
    assert!(stats.window_spans > 0);
    assert_eq!(down.spans, stats.acked_spans);
    assert_eq!(down.checksum, stats.acked_checksum);

    assert_eq!(down.requests, stats.acked_requests);
    assert_eq!(outcome.sent, stats.acked_requests);
}

#[test]
fn rate_mode_holds_the_offered_rate() {
    let downstream = Downstream::start().unwrap();
    let rate = 40_000.0;
    let outcome = run(
        pool(),
        &downstream,
        config(Mode::Rate { spans_per_s: rate }, Duration::from_secs(1)),
    );
    let achieved = outcome.stats.window_spans as f64 / outcome.window.as_secs_f64();
    // One request is ~100 spans of the 40,000: window edges cost a few requests at most.
    assert!(
        (achieved - rate).abs() < rate * 0.05,
        "achieved {achieved:.0} spans/s of {rate}"
    );
    wait_for_count(&downstream, outcome.stats.acked_spans);
    assert_eq!(
        downstream.counts.snapshot().spans,
        outcome.stats.acked_spans
    );
}

/// `cujo-sink`, the downstream in a process of its own: the load generator reads exact counts
/// and the checksum over its control channel, and samples its CPU apart from its own.
#[test]
fn own_process_sink_accounts_for_every_span() {
    use cujo_bench::sink::SinkProcess;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_cujo-sink"));
    let mut sink = SinkProcess::start(bin, Duration::from_secs(10)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let watched = load::Watched {
        target: None,
        sink: Some(sink.pid()),
    };
    let outcome = rt
        .block_on(load::run(
            pool(),
            sink.addr,
            config(Mode::Saturate, Duration::from_millis(500)),
            watched,
        ))
        .unwrap();
    let stats = &outcome.stats;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut down = sink.snapshot().unwrap();
    while down.spans < stats.acked_spans && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        down = sink.snapshot().unwrap();
    }
    assert!(stats.acked_spans > 0);
    assert_eq!(down.spans, stats.acked_spans);
    assert_eq!(down.checksum, stats.acked_checksum);
    assert_eq!(down.malformed, 0);
    let (a, b) = outcome.sink_window.expect("the sink's /proc samples");
    assert!(b.cpu_ticks >= a.cpu_ticks && b.hwm_kib > 0);

    let exit = sink.stop();
    assert!(exit.contains("exit status: 0"), "{exit}");
}

/// A load generator that dies without stopping its sink closes the sink's stdin: EOF ends it.
#[test]
fn sink_exits_when_its_control_channel_closes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_cujo-sink"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("listening 127.0.0.1:"), "{first}");
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the sink outlived its stdin");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status}");
}

/// The hostile clients keep going through refusals (backing off), stay within their bounds,
/// and the closing normal request is accepted.
#[test]
fn hostile_clients_back_off_on_refusals_and_stay_bounded() {
    use cujo_bench::hostile::drive::{self, DriveConfig};
    use cujo_bench::hostile::scenario::{RequestMaker, Scenario, Shape, filler, normal_request};
    use std::sync::atomic::AtomicBool;

    let downstream = Downstream::start_refusing(3).unwrap();
    let shape = Shape {
        spans: 200,
        value_bytes: 0,
    };
    let makers = (0..2)
        .map(|i| {
            RequestMaker::new(
                Scenario::RootlessFlood,
                shape,
                "tenant.id",
                i,
                Arc::new(filler(64, 1)),
            )
            .unwrap()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cfg = DriveConfig {
        duration: Duration::from_secs(5),
        max_requests: 40,
        request_timeout: Duration::from_secs(5),
        max_backoff: Duration::from_millis(100),
    };
    let stats = rt
        .block_on(drive::drive(
            downstream.addr,
            makers,
            cfg,
            Arc::new(AtomicBool::new(false)),
        ))
        .unwrap();
    assert_eq!(
        stats.accepted + stats.refused + stats.failed,
        40,
        "{stats:?}"
    );
    assert!(stats.refused > 0 && stats.failed == 0, "{stats:?}");
    wait_for_count(&downstream, stats.accepted_spans);
    assert_eq!(downstream.counts.snapshot().spans, stats.accepted_spans);

    let probe = rt.block_on(drive::probe(
        downstream.addr,
        &normal_request(5),
        Duration::from_secs(10),
    ));
    assert!(probe.accepted, "{probe:?}");
}
