use std::time::Duration;

use super::super::{Family, HISTORY_INTERVAL_MS, OVERFLOW, SliEngine};
use crate::condition::{Condition, Literal, RootMatch, Scalar, SpanFacts, StatusCode, ValueMatch};
use crate::cuj::{Cuj, Measure, Scope, Sli, TraceFacts};
use crate::limits::SliLimits;
use crate::slo::Objective;

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

/// A root (or a late span) with a tier.
struct Span {
    tier: String,
    error: bool,
    times: Option<(u64, u64)>,
}

impl SpanFacts for Span {
    fn name(&self) -> &str {
        "POST /v1/messages"
    }
    fn service(&self) -> &str {
        "api"
    }
    fn status(&self) -> StatusCode {
        if self.error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        }
    }
    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        (key == "user.tier").then_some(Scalar::Str(&self.tier))
    }
    fn times_ns(&self) -> Option<(u64, u64)> {
        self.times
    }
}

fn cuj(name: &str, measure: Measure, max_series: usize) -> Cuj {
    Cuj {
        name: name.into(),
        matcher: RootMatch {
            span_name: Some(ValueMatch::Equals(Literal::Str("POST /v1/messages".into()))),
            ..RootMatch::default()
        },
        dimensions: vec!["user.tier".into()],
        max_series,
        scope: Scope::Root,
        bad: vec![Condition::Status(StatusCode::Error)],
        exclude: vec![],
        latency: Some((Duration::from_millis(300), measure)),
        objectives: vec![(
            Sli::Availability,
            Objective {
                target: 0.999,
                window: Duration::from_secs(30 * 86400),
            },
        )],
        alert_gate: crate::slo::AlertGate::OFF,
        runbook: None,
    }
}

/// One root-latency CUJ.
fn root_engine(max_series: usize, limits: SliLimits) -> SliEngine {
    SliEngine::new(vec![cuj("post_message", Measure::Root, max_series)]).with_limits(limits)
}

/// One end-to-end CUJ whose events settle for 30 s.
fn settling_engine(max_series: usize, limits: SliLimits) -> SliEngine {
    SliEngine::new(vec![cuj("deliver", Measure::EndToEnd, max_series)])
        .with_settle(Duration::from_secs(30), 100_000)
        .with_limits(limits)
}

fn trace_id(n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[15] = 1;
    id
}

fn feed(e: &mut SliEngine, n: u64, tier: &str, latency_us: u64, now_ms: u64) {
    let spans = [Span {
        tier: tier.into(),
        error: n.is_multiple_of(17),
        times: None,
    }];
    e.observe(
        &TraceFacts {
            trace_id: trace_id(n),
            root: &spans[0],
            root_start_ns: 0,
            root_end_ns: latency_us * 1_000,
            spans: &spans,
            last_end_ns: latency_us * 1_000,
            span_bits: None,
        },
        now_ms,
    );
}

fn late(e: &mut SliEngine, n: u64, end_ms: u64) {
    let span = Span {
        tier: String::new(),
        error: false,
        times: Some((0, end_ms * 1_000_000)),
    };
    e.observe_late(trace_id(n), &span);
}

/// The sum of every sample of `name` whose labels include `labels`.
fn total(fams: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    fams.iter()
        .filter(|f| f.name == name)
        .flat_map(|f| &f.samples)
        .filter(|s| {
            s.suffix.is_empty()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

fn series_count(e: &SliEngine) -> usize {
    e.cujs.iter().map(|s| s.series.len()).sum()
}

/// A latency spread over many octaves, so histograms grow (deterministic).
fn latency_us(n: u64) -> u64 {
    1 + (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 5_000_000
}

#[test]
fn memory_bytes_is_what_a_recount_finds() {
    let mut e = SliEngine::new(vec![
        cuj("post_message", Measure::Root, 5_000),
        cuj("deliver", Measure::EndToEnd, 5_000),
    ])
    .with_settle(Duration::from_secs(30), 100_000)
    .with_limits(SliLimits {
        series_idle_ttl: Duration::from_secs(600),
        ..SliLimits::default()
    });
    assert_eq!(e.memory_bytes(), 0, "nothing held before the first event");
    let mut now = T0;
    for n in 0..6_000u64 {
        let tier = format!("tenant-{:04}-{}", n % 2_500, "x".repeat((n % 50) as usize));
        feed(&mut e, n, &tier, latency_us(n), now);
        if n.is_multiple_of(3) {
            late(&mut e, n, 900);
        }
        if n.is_multiple_of(5) {
            let linked = [Span {
                tier: String::new(),
                error: false,
                times: Some((0, 1_000_000)),
            }];
            e.observe_linked(trace_id(1_000_000 + n), trace_id(n), &linked);
        }
        now += 97;
        if n.is_multiple_of(250) {
            assert_eq!(e.memory_bytes(), e.recount(), "after trace {n}");
        }
    }
    assert!(e.settling.len() > 100 && series_count(&e) > 4_000);
    assert_eq!(e.memory_bytes(), e.recount());
    // Idle series go, settled traces go: what is left is counted the same way.
    now += 700_000;
    e.tick(now);
    assert_eq!(e.settling.len(), 0);
    assert_eq!(e.memory_bytes(), e.recount());
    // The events that settled just now keep their series for another TTL.
    e.tick(now + 600_000);
    assert_eq!(series_count(&e), 0, "every series idle for the TTL");
    assert_eq!(e.memory_bytes(), e.recount());
    let left = e.memory_bytes();
    assert!(
        left < 600 << 10,
        "{left} bytes left: the CUJs' histories and histograms only"
    );
}

#[test]
fn one_series_and_one_settling_trace_cost_what_is_documented() {
    // A series with one event, then the same with a latency histogram at its cap.
    let mut e = root_engine(10, SliLimits::default());
    feed(&mut e, 1, "gold", 10, T0);
    let one = e.cujs[0].series.bytes();
    for n in 0..10_000 {
        feed(&mut e, n, "gold", 1 + n * 1_000, T0);
    }
    let aggregates = e.memory_bytes() - e.cujs[0].series.bytes();
    let full = e.cujs[0].series.bytes();
    eprintln!(
        "one series: {one} bytes new, {full} bytes with a full histogram; aggregates {aggregates}"
    );
    assert!((28 << 10..32 << 10).contains(&one), "{one}");
    assert!((60 << 10..66 << 10).contains(&full), "{full}");
    // Settling traces of one event each, a long queue of them.
    let mut e = settling_engine(10, SliLimits::default());
    feed(&mut e, 0, "gold", 10, T0);
    let before = e.settling.bytes();
    for n in 1..=50_000 {
        feed(&mut e, n, "gold", 10, T0);
    }
    let per_trace = (e.settling.bytes() - before) as f64 / 50_000.0;
    eprintln!("one settling trace: {per_trace:.0} bytes");
    assert!((150.0..400.0).contains(&per_trace), "{per_trace}");
}

#[test]
fn the_byte_limit_holds_under_a_flood_of_dimension_values() {
    let max_bytes = 3 << 20;
    let mut e = root_engine(
        1_000_000,
        SliLimits {
            max_bytes,
            ..SliLimits::default()
        },
    );
    let mut now = T0;
    for n in 0..20_000u64 {
        feed(&mut e, n, &format!("request-{n}"), latency_us(n), now);
        let held = e.memory_bytes();
        assert!(held <= max_bytes, "{held} > {max_bytes} after event {n}");
        now += 3;
        if n.is_multiple_of(5_000) {
            e.tick(now + HISTORY_INTERVAL_MS);
        }
    }
    let f = e.families(now);
    let labels = [("cuj", "post_message"), ("sli", "availability")];
    assert_eq!(
        total(&f, "cujo_sli_events_total", &labels),
        20_000.0,
        "every event counted"
    );
    let overflowed = total(
        &f,
        "cujo_sli_series_overflow_total",
        &[("reason", "memory")],
    );
    assert_eq!(
        total(
            &f,
            "cujo_sli_events_total",
            &[("user_tier", OVERFLOW), ("sli", "availability")]
        ),
        overflowed,
        "the refused ones are in the overflow series"
    );
    assert_eq!(
        total(
            &f,
            "cujo_sli_series_overflow_total",
            &[("reason", "max_series")]
        ),
        0.0
    );
    let series = series_count(&e);
    assert!(
        overflowed > 19_000.0 && series > 10,
        "{overflowed} {series}"
    );
    assert_eq!(
        total(&f, "cujo_sli_series", &[("cuj", "post_message")]),
        series as f64
    );
    assert_eq!(e.report(now).cujs[0].overflowed_memory, overflowed as u64);
}

#[test]
fn long_dimension_values_share_a_series() {
    let mut e = root_engine(10, SliLimits::default());
    feed(&mut e, 1, &"x".repeat(10_000), 10, T0);
    feed(&mut e, 2, &"x".repeat(10_001), 10, T0);
    feed(&mut e, 3, &"é".repeat(100), 10, T0);
    assert_eq!(series_count(&e), 2);
    let f = e.families(T0);
    let x = "x".repeat(128);
    assert_eq!(
        total(
            &f,
            "cujo_sli_events_total",
            &[("user_tier", &x), ("sli", "availability")]
        ),
        2.0
    );
    assert_eq!(
        total(
            &f,
            "cujo_sli_dimension_values_truncated_total",
            &[("cuj", "post_message")]
        ),
        3.0
    );
    let r = e.report(T0);
    assert_eq!(r.cujs[0].dimension_values_truncated, 3);
    // Two-byte characters are kept whole: 64 of them in 128 bytes.
    assert!(
        r.cujs[0]
            .series
            .iter()
            .any(|s| s.dimensions[0].1 == "é".repeat(64))
    );
}

#[test]
fn idle_series_expire_at_the_ttl_and_not_before() {
    let limits = SliLimits {
        series_idle_ttl: Duration::from_secs(3600),
        ..SliLimits::default()
    };
    let mut e = root_engine(2, limits);
    feed(&mut e, 1, "gold", 10, T0);
    feed(&mut e, 2, "free", 10, T0 + HOUR / 2);
    let sli = |e: &SliEngine, now: u64| e.objectives(now)[0].3.sli.clone();
    let windows_before = sli(&e, T0 + HOUR);
    let with_both = e.memory_bytes();
    e.tick(T0 + HOUR - 1);
    assert_eq!(series_count(&e), 2, "not before the TTL");
    e.tick(T0 + HOUR);
    assert_eq!(series_count(&e), 1, "gold idle for an hour");
    assert_eq!(
        e.report(T0 + HOUR).cujs[0].series[0].dimensions[0].1,
        "free"
    );
    assert!(
        e.memory_bytes() < with_both - (28 << 10),
        "its memory came back"
    );
    assert_eq!(
        sli(&e, T0 + HOUR),
        windows_before,
        "the CUJ's windows keep the events"
    );
    // An event keeps a series; the overflow series expires like any other.
    feed(&mut e, 3, "free", 10, T0 + HOUR + HOUR / 4);
    feed(&mut e, 4, "team", 10, T0 + HOUR + HOUR / 4);
    feed(&mut e, 5, "other", 10, T0 + HOUR + HOUR / 4);
    assert_eq!(series_count(&e), 3, "free, team, and the overflow series");
    e.tick(T0 + 2 * HOUR);
    assert_eq!(series_count(&e), 3, "free had an event at 1h15");
    e.tick(T0 + 2 * HOUR + HOUR / 4);
    assert_eq!(series_count(&e), 0);
    let f = e.families(T0 + 3 * HOUR);
    assert_eq!(
        total(
            &f,
            "cujo_sli_series_expired_total",
            &[("cuj", "post_message")]
        ),
        4.0
    );
    assert_eq!(e.report(T0).cujs[0].series_expired, 4);
    // Zero: never.
    let mut e = root_engine(
        10,
        SliLimits {
            series_idle_ttl: Duration::ZERO,
            ..SliLimits::default()
        },
    );
    feed(&mut e, 1, "gold", 10, T0);
    e.tick(T0 + 1_000 * HOUR);
    assert_eq!(series_count(&e), 1);
}

#[test]
fn a_series_waited_on_by_settling_events_stays_and_they_follow_it() {
    let mut e = settling_engine(
        10,
        SliLimits {
            series_idle_ttl: Duration::from_secs(10),
            ..SliLimits::default()
        },
    );
    // Both series exist, then only free gets an event, which waits 30 s.
    feed(&mut e, 1, "gold", 10, T0);
    feed(&mut e, 2, "free", 10, T0);
    e.settle_all(T0);
    feed(&mut e, 3, "free", 10, T0 + 5_000);
    // At 20 s gold is idle and goes; free is idle too, but its event still waits.
    e.tick(T0 + 20_000);
    assert_eq!(series_count(&e), 1);
    e.tick(T0 + 35_000);
    let f = e.families(T0 + 35_000);
    assert_eq!(
        total(
            &f,
            "cujo_sli_events_total",
            &[("user_tier", "free"), ("sli", "availability")]
        ),
        2.0,
        "the waiting event landed in its series, at its new place"
    );
    e.tick(T0 + 45_000);
    assert_eq!(series_count(&e), 0, "idle once its event was recorded");
}

#[test]
fn settling_events_past_the_byte_limit_are_recorded_early_not_lost() {
    let max_bytes = 600 << 10;
    let mut limited = settling_engine(
        10,
        SliLimits {
            max_bytes,
            ..SliLimits::default()
        },
    );
    let mut unlimited = settling_engine(10, SliLimits::default());
    for n in 0..10_000u64 {
        let now = T0 + n;
        let tier = ["gold", "free", "team"][(n % 3) as usize];
        for e in [&mut limited, &mut unlimited] {
            feed(e, n, tier, latency_us(n) % 900_000, now);
            if n.is_multiple_of(10) {
                // Another part of the trace released: its event joins the waiting one.
                feed(e, n, tier, 1_000, now);
            }
        }
        let held = limited.memory_bytes();
        assert!(held <= max_bytes, "{held} > {max_bytes} after trace {n}");
    }
    assert!(limited.settling.len() < unlimited.settling.len() / 4);
    for e in [&mut limited, &mut unlimited] {
        e.settle_all(T0 + 20_000);
    }
    let counts = |e: &SliEngine| {
        let f = e.families(T0 + 20_000);
        [
            ("availability", "good"),
            ("availability", "bad"),
            ("latency", "good"),
            ("latency", "bad"),
        ]
        .map(|(sli, outcome)| {
            total(
                &f,
                "cujo_sli_events_total",
                &[("sli", sli), ("outcome", outcome)],
            )
        })
    };
    assert_eq!(counts(&limited), counts(&unlimited));
    assert_eq!(counts(&limited).iter().take(2).sum::<f64>(), 11_000.0);
    let f = limited.families(T0);
    assert!(total(&f, "cujo_sli_settle_evicted_total", &[("reason", "memory")]) > 5_000.0);
    assert_eq!(
        total(
            &f,
            "cujo_sli_settle_evicted_total",
            &[("reason", "max_traces")]
        ),
        0.0
    );
}

#[test]
fn a_state_larger_than_the_limits_is_restored_as_far_as_they_allow() {
    let never = SliLimits {
        series_idle_ttl: Duration::ZERO,
        ..SliLimits::default()
    };
    let mut big = root_engine(10_000, never.clone());
    for n in 0..300u64 {
        feed(&mut big, n, &format!("tenant-{n:03}"), 10, T0 + n * 60_000);
    }
    let saved = big.save_state();
    let max_bytes = 4 << 20;
    let mut small = root_engine(
        10_000,
        SliLimits {
            max_bytes,
            ..never.clone()
        },
    );
    assert_eq!(small.restore_state(&saved), Ok(1));
    let restored = series_count(&small);
    assert!(restored > 10 && restored < 100, "{restored}");
    assert!(small.memory_bytes() <= max_bytes);
    let f = small.families(T0);
    assert_eq!(
        total(
            &f,
            "cujo_sli_restore_skipped_series_total",
            &[("reason", "memory")]
        ),
        (300 - restored) as f64
    );
    // The most recently active are kept.
    let report = small.report(T0 + 300 * 60_000);
    assert!(
        report.cujs[0]
            .series
            .iter()
            .any(|s| s.dimensions[0].1 == "tenant-299")
    );
    assert!(
        !report.cujs[0]
            .series
            .iter()
            .any(|s| s.dimensions[0].1 == "tenant-000")
    );
    assert_eq!(report.cujs[0].series_not_restored, (300 - restored) as u64);
    // Past max_series, and with the CUJ's dimensions changed.
    let mut capped = root_engine(50, never);
    assert_eq!(capped.restore_state(&saved), Ok(1));
    assert_eq!(series_count(&capped), 50);
    let f = capped.families(T0);
    assert_eq!(
        total(
            &f,
            "cujo_sli_restore_skipped_series_total",
            &[("reason", "max_series")]
        ),
        250.0
    );
    let mut regrouped = SliEngine::new(vec![Cuj {
        dimensions: vec!["user.tier".into(), "region".into()],
        ..cuj("post_message", Measure::Root, 10)
    }]);
    assert_eq!(regrouped.restore_state(&saved), Ok(1));
    assert_eq!(series_count(&regrouped), 0);
    let f = regrouped.families(T0);
    assert_eq!(
        total(
            &f,
            "cujo_sli_restore_skipped_series_total",
            &[("reason", "dimensions")]
        ),
        300.0
    );
    // Values cut to the same key: the most recent is kept, the other counted.
    let mut wide = root_engine(
        10,
        SliLimits {
            max_dimension_value_bytes: 1_000,
            ..SliLimits::default()
        },
    );
    feed(&mut wide, 1, &format!("{}a", "x".repeat(200)), 10, T0);
    feed(
        &mut wide,
        2,
        &format!("{}b", "x".repeat(200)),
        10,
        T0 + 20_000,
    );
    assert_eq!(series_count(&wide), 2);
    let mut cut = root_engine(10, SliLimits::default());
    assert_eq!(cut.restore_state(&wide.save_state()), Ok(1));
    assert_eq!(series_count(&cut), 1);
    let f = cut.families(T0);
    assert_eq!(
        total(
            &f,
            "cujo_sli_restore_skipped_series_total",
            &[("reason", "duplicate")]
        ),
        1.0
    );
}
