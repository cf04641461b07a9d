//! `exporters.otlp_metrics`: where the SLI metrics are pushed, how often, and how.

use std::time::Duration;

use cujo_config::outbound::{self, Compression, DEFAULT_EXPORT_TIMEOUT, Protocol, TlsConfig};
use cujo_config::{HumanDuration, KeyError, fail};
use serde::Deserialize;

/// `exporters.otlp_metrics`: the SLI metrics pushed to an OTLP backend every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpMetricsExporter {
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Protocol,
    /// Sent with every push (`x-honeycomb-team`, `api-key`, `DD-API-KEY`, …).
    #[serde(default)]
    pub headers: cujo_config::outbound::Headers,
    /// Time between pushes.
    #[serde(default = "default_push_interval")]
    pub interval: HumanDuration,
    /// `cumulative` (totals since start) or `delta` (change since the last push).
    #[serde(default)]
    pub temporality: Temporality,
    /// Deadline of one push attempt.
    #[serde(default = "default_export_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub tls: TlsConfig,
}

/// How pushed counters and histograms accumulate.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    #[default]
    Cumulative,
    Delta,
}

fn default_push_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_export_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_EXPORT_TIMEOUT)
}

impl OtlpMetricsExporter {
    /// A usable URL and headers, positive durations. `key` is where the section is
    /// (`exporters.otlp_metrics`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        let at = |k: &str| format!("{key}.{k}");
        outbound::check_url(
            &at("endpoint"),
            &self.endpoint,
            "https://api.honeycomb.io:443",
        )?;
        outbound::check_headers(&at("headers"), &self.headers)?;
        if self.interval.0 < Duration::from_millis(10) {
            return fail(
                at("interval"),
                format!("must be at least 10ms, found {:?}", self.interval.0),
            );
        }
        if self.timeout.0.is_zero() {
            return fail(at("timeout"), "must be greater than zero");
        }
        Ok(())
    }
}
