//! `config`: the input is a configuration file's text, parsed as `cujo --config` parses it
//! (`Config::parse`), with an `${env:NAME}` resolver that knows a few fixed names.
//!
//! Invariants: an error names the file; a config that parses keeps what its checks promise
//! (the memory shares add up to at most 1, the receivers' share holds a connection, every
//! CUJ resolves), and what the binary builds from it before serving — the memory budget,
//! the assembler's settings, the SLI engine, the `rules` and `dashboard` outputs — builds.

use cujo::config::Config;
use cujo_otlp::memory::{Component, MemoryBudget};
use cujo_sli::engine::SliEngine;

const FILE: &str = "fuzz.yaml";

/// What `${env:NAME}` resolves to: a few names are set, the rest are not.
pub fn env(name: &str) -> Option<String> {
    match name {
        "CUJO_ENDPOINT" => Some("127.0.0.1:4317".into()),
        "HONEYCOMB_API_KEY" => Some("secret".into()),
        "CUJO_WEBHOOK_URL" => Some("http://127.0.0.1:8080/hook".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

/// The fuzz entry point.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(FILE, text, &env) {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(FILE),
                "the error names the file: {message}"
            );
            return;
        }
    };
    let shares = config.memory_shares();
    let sum: f64 = shares.0.iter().sum();
    assert!(
        shares.0.iter().all(|s| (0.0..=1.0).contains(s)) && sum <= 1.0 + 1e-9,
        "shares {shares:?}"
    );
    let budget = MemoryBudget::new(config.admission.max_in_flight.0 as usize, shares);
    assert!(
        budget.limit(Component::Receivers) >= cujo_otlp::server::CONNECTION_BYTES,
        "the receivers' share holds a connection"
    );
    let cujs = config.cujs();
    assert_eq!(cujs.len(), config.cujs.len(), "every CUJ resolves");
    if config.assembler_enabled() {
        let _ = cujo::assembly::settings(&config, &budget);
        let _ = cujo::assembly::shard_count(&config);
    }
    if !cujs.is_empty() {
        let _ = cujo_slo::generators::rules::render(&cujs);
        let _ = cujo_slo::generators::dashboard::dashboard(&cujs, config.slo.trace_link().as_ref());
        let _ = SliEngine::new(cujs)
            .with_settle(config.slo.settle.0, config.slo.max_settling_traces)
            .with_limits(config.slo.limits(budget.limit(Component::Sli)));
    }
}
