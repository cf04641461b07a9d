//! `state`: the input is an SLO state file after a mode byte. Mode bit 0 clear: the rest is
//! the file as read from disk. Set: the rest is a file's body and the harness appends its
//! checksum, so mutations reach the decoder past the checksum that would refuse them.
//!
//! The engine is built as the binary builds it ([`STATE_CONFIG`] through `Config::parse`,
//! `with_settle`, `with_limits`), with a byte limit that holds only a few series.
//!
//! Invariants: a file that restores saves to a file that restores again, to the same
//! windows, totals and history; the restored engine answers its readers (a tick, the report with every
//! objective evaluated, `/metrics` families, the OTLP push view).

use std::sync::OnceLock;

use cujo::config::Config;
use cujo_sli::cuj::Cuj;
use cujo_sli::engine::SliEngine;
use cujo_sli::limits::SliLimits;
use cujo_sli::state::{SavedState, checksum, decode};

/// The small fixed config of the engine that restores the file.
pub const STATE_CONFIG: &str = r#"
cujs:
  - name: checkout
    match: { service.name: api, span.name: "POST /v1/checkout" }
    dimensions: [user.tier]
    max_series: 4
    latency: { threshold: 300ms, measure: root }
    objectives:
      - { sli: availability, target: 99.5%, window: 30d }
      - { sli: latency, target: 99%, window: 7d }
slo:
  max_dimension_value_bytes: 8
"#;

/// The engine's byte limit: room for fewer series than `max_series`, so that a file with
/// more is restored in part by both limits.
pub const STATE_MAX_BYTES: usize = 448 << 10;

/// The clock the restored engine is read at (windows in the file may be anywhere).
pub const NOW_MS: u64 = 1_700_000_000_000;

/// A fresh engine of [`STATE_CONFIG`].
pub fn engine() -> SliEngine {
    static PARTS: OnceLock<(Vec<Cuj>, std::time::Duration, usize, SliLimits)> = OnceLock::new();
    let (cujs, settle, max_settling, limits) = PARTS.get_or_init(|| {
        let config = Config::parse("state.yaml", STATE_CONFIG, &|_| None)
            .expect("the state target's config parses");
        (
            config.cujs(),
            config.slo.settle.0,
            config.slo.max_settling_traces,
            config.slo.limits(STATE_MAX_BYTES),
        )
    });
    SliEngine::new(cujs.clone())
        .with_settle(*settle, *max_settling)
        .with_limits(limits.clone())
}

/// The fuzz entry point.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut file = rest.to_vec();
    if mode & 1 == 1 {
        file.extend_from_slice(&checksum(rest).to_le_bytes());
    }
    let mut engine = engine();
    let Ok(restored) = engine.restore(&file) else {
        return;
    };
    assert!(
        restored.cujs <= 1,
        "at most the engine's one CUJ: {}",
        restored.cujs
    );

    // Saved as at a clean shutdown, so that the second round restores the totals too.
    let saved = engine.save_state_with(true, &restored.alerts);
    // A file saved as it was read restores as it did (restoring is deterministic): only a
    // file the engine changed needs the second round.
    if saved != file {
        let mut again = self::engine();
        let back = again.restore(&saved);
        assert!(
            back.as_ref().is_ok_and(|r| r.cujs == 1 && r.totals),
            "a saved file restores: {back:?}"
        );
        let alerts = back.map(|r| r.alerts).unwrap_or_default();
        let resaved = again.save_state_with(true, &alerts);
        // Both engines hash alike, so the same series come back in the same order;
        // decoding to compare windows (series sorted) is only needed when they do not.
        if resaved != saved {
            assert_eq!(windows(&resaved), windows(&saved), "to the same windows");
        }
    }

    engine.tick(NOW_MS);
    let _ = engine.report(NOW_MS);
    let _ = engine.families(NOW_MS);
    let _ = engine.export_view(160);
}

/// A saved file's state, series in a fixed order (the engine's table order is its own).
fn windows(file: &[u8]) -> SavedState {
    let mut state = match decode(file) {
        Ok(s) => s,
        Err(e) => panic!("a file the engine saved does not decode: {e}"),
    };
    for c in &mut state.cujs {
        c.series.sort_by(|a, b| a.dimensions.cmp(&b.dimensions));
    }
    state
}
