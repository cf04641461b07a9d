//! `exporters.otlp`: where spans are forwarded and how (batches, queue, retries, timeout,
//! concurrency), its `validate`, and the [`ExporterSettings`] and [`Downstream`] it
//! resolves into. With `preset:`, a backend's documented contract
//! (`cujo_config::presets`) fills the destination the section leaves out.

use std::time::Duration;

use std::collections::BTreeMap;

use cujo_config::outbound::{
    self, Compression, DEFAULT_EXPORT_TIMEOUT, Headers, Protocol, Secret, TlsConfig, header_pairs,
};
use cujo_config::presets::{Backend, PresetKeys, Region};
use cujo_config::{ByteSize, HumanDuration, KeyError, fail};
use serde::Deserialize;

use super::ExporterSettings;
use super::retry::RetrySettings;
use super::transport::{Downstream, DownstreamError, Signal};
use crate::memory::Account;

/// `exporters.otlp`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporter {
    /// A backend whose documented OTLP contract supplies the destination's defaults.
    #[serde(default)]
    pub preset: Option<Backend>,
    /// Required without a preset; with one, replaces its scheme, host and port.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Sent with every request, over the preset's headers of the same name.
    #[serde(default)]
    pub headers: Headers,
    /// The preset's key, sent in its header (`x-honeycomb-team`, `api-key`).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Honeycomb and New Relic: `us` (default) or `eu`.
    #[serde(default)]
    pub region: Option<Region>,
    /// Honeycomb Classic only: the dataset spans land in.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Not used by any span preset (Datadog's is the Agent); refused with a reason.
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub compression: Option<Compression>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    /// Deadline of one export attempt.
    #[serde(default = "default_export_timeout")]
    pub timeout: HumanDuration,
    /// Export requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Pass-through: a request of no configured tenant that carries one of these headers
    /// is sent downstream with its own values of them (`x-honeycomb-team`), batched apart
    /// from every other caller's spans.
    #[serde(default)]
    pub pass_headers: Vec<String>,
    /// Most pass-through callers (distinct header values) known at once.
    #[serde(default = "default_pass_max_tenants")]
    pub pass_max_tenants: usize,
}

fn default_pass_max_tenants() -> usize {
    crate::tenants::DEFAULT_PASS_MAX_TENANTS
}

fn default_export_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_EXPORT_TIMEOUT)
}

fn default_concurrency() -> usize {
    4
}

/// Where spans go: the section over its preset.
#[derive(Debug, Clone)]
pub struct Destination {
    pub endpoint: String,
    pub protocol: Protocol,
    pub compression: Compression,
    /// The preset's headers, then the section's (which win); values are secrets.
    pub headers: Headers,
}

/// Why the span exporter's destination could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Config(#[from] KeyError),
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
}

impl OtlpExporter {
    /// A usable URL and headers; batch, queue, concurrency and durations that can work.
    /// `key` is where the section is (`exporters.otlp`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        let at = |k: &str| format!("{key}.{k}");
        let err = |k: &str, d: &str| fail(at(k), d);
        let destination = self.destination(key)?;
        outbound::check_url(
            &at("endpoint"),
            &destination.endpoint,
            "https://api.honeycomb.io:443",
        )?;
        outbound::check_headers(&at("headers"), &self.headers)?;
        outbound::check_headers(&at("api_key"), &destination.headers)?;
        if self.batch.max_spans == 0 {
            return err("batch.max_spans", "must be at least 1");
        }
        if self.queue.max_spans < self.batch.max_spans {
            return fail(
                at("queue.max_spans"),
                format!(
                    "must be at least {} ({})",
                    at("batch.max_spans"),
                    self.batch.max_spans
                ),
            );
        }
        if self.concurrency == 0 {
            return err("concurrency", "must be at least 1");
        }
        if self.retry.initial_interval.0.is_zero() {
            return err("retry.initial_interval", "must be greater than zero");
        }
        if self.timeout.0.is_zero() {
            return err("timeout", "must be greater than zero");
        }
        for (i, h) in self.pass_headers.iter().enumerate() {
            let Ok(name) = http::HeaderName::from_bytes(h.as_bytes()) else {
                return fail(
                    format!("{key}.pass_headers[{i}]"),
                    format!("{h:?} is not a valid header name"),
                );
            };
            if matches!(
                name.as_str(),
                "authorization"
                    | "content-type"
                    | "content-length"
                    | "content-encoding"
                    | "host"
                    | "te"
            ) || name.as_str().starts_with("grpc-")
            {
                return fail(
                    format!("{key}.pass_headers[{i}]"),
                    format!("{h:?} is set by cujo for each request and cannot be passed through"),
                );
            }
        }
        if self.pass_max_tenants == 0 {
            return err("pass_max_tenants", "must be at least 1");
        }
        Ok(())
    }

    /// The destination: each value the section sets, else its preset's, else the default.
    /// Fails (naming the key) when the preset lacks what it needs or takes no spans
    /// (`mackerel`), or a preset's field is given without one.
    pub fn destination(&self, key: &str) -> Result<Destination, KeyError> {
        let keys = PresetKeys {
            api_key: self.api_key.as_ref(),
            region: self.region,
            dataset: self.dataset.as_deref(),
            site: self.site.as_deref(),
        };
        let Some(backend) = self.preset else {
            let endpoint = keys.endpoint_without_preset(
                key,
                self.endpoint.as_ref(),
                "honeycomb, datadog_agent or newrelic",
            )?;
            return Ok(Destination {
                endpoint,
                protocol: self.protocol.unwrap_or_default(),
                compression: self.compression.unwrap_or_default(),
                headers: self.headers.clone(),
            });
        };
        let contract = backend.contract(cujo_config::presets::Signal::Traces, keys, key)?;
        let mut headers: BTreeMap<String, String> = contract.headers.into_iter().collect();
        headers.extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Destination {
            endpoint: self.endpoint.clone().unwrap_or(contract.endpoint),
            protocol: self.protocol.unwrap_or(contract.protocol),
            compression: self.compression.unwrap_or(contract.compression),
            headers: Headers(headers),
        })
    }

    /// How the exporter batches, queues and retries, its memory counted in `memory` (the
    /// exporter's share of the budget).
    pub fn settings(&self, memory: Account) -> ExporterSettings {
        ExporterSettings {
            batch_max_spans: self.batch.max_spans,
            batch_max_bytes: self.batch.max_bytes.0 as usize,
            batch_timeout: self.batch.timeout.0,
            queue_max_spans: self.queue.max_spans,
            concurrency: self.concurrency,
            retry: self.retry.settings(),
            memory,
            input_paid: false,
        }
    }

    /// The client of the destination: endpoint, protocol, compression, headers, the
    /// attempt's deadline, TLS.
    pub fn downstream(&self) -> Result<Downstream, DestinationError> {
        let key = Signal::Traces.config_key();
        let d = self.destination(key)?;
        let headers = header_pairs(&format!("{key}.headers"), &d.headers)?;
        Ok(Downstream::new(
            &d.endpoint,
            d.protocol,
            d.compression,
            headers,
            self.timeout.0,
            self.tls.ca_file.as_deref(),
        )?)
    }
}

/// `exporters.otlp.batch`: when a batch is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_batch_spans")]
    pub max_spans: usize,
    /// A batch is sent once its encoded size reaches this (a request is never split for
    /// it): bounds the body the exporter encodes, and so its memory beyond its share.
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: ByteSize,
    /// A batch is sent at the latest this long after its oldest span arrived.
    #[serde(default = "default_batch_timeout")]
    pub timeout: HumanDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_spans: default_batch_spans(),
            max_bytes: default_batch_bytes(),
            timeout: default_batch_timeout(),
        }
    }
}

fn default_batch_bytes() -> ByteSize {
    ByteSize(8 << 20)
}

fn default_batch_spans() -> usize {
    8192
}

fn default_batch_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

/// `exporters.otlp.retry`: the backoff between attempts of one batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_initial")]
    pub initial_interval: HumanDuration,
    #[serde(default = "default_max_interval")]
    pub max_interval: HumanDuration,
    /// Zero retries forever.
    #[serde(default = "default_max_elapsed")]
    pub max_elapsed: HumanDuration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_interval: default_initial(),
            max_interval: default_max_interval(),
            max_elapsed: default_max_elapsed(),
        }
    }
}

impl RetryConfig {
    /// The section as [`super::retry::Backoff`] takes it.
    pub fn settings(&self) -> RetrySettings {
        RetrySettings {
            initial_interval: self.initial_interval.0,
            max_interval: self.max_interval.0,
            max_elapsed: self.max_elapsed.0,
        }
    }
}

fn default_initial() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

fn default_max_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_max_elapsed() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

/// `exporters.otlp.queue`: spans waiting to be sent, at most.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default = "default_queue_spans")]
    pub max_spans: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_spans: default_queue_spans(),
        }
    }
}

fn default_queue_spans() -> usize {
    1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Component, MemoryBudget, Shares};

    fn parse(yaml: &str) -> Result<OtlpExporter, String> {
        let c: OtlpExporter = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("exporters.otlp").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults_resolve_into_the_exporters_settings() {
        let c = parse("endpoint: http://127.0.0.1:4317").expect("parses");
        let d = c.destination("exporters.otlp").expect("destination");
        assert_eq!(d.protocol, Protocol::Grpc);
        assert_eq!(d.compression, Compression::Gzip);
        assert_eq!(c.timeout.0, DEFAULT_EXPORT_TIMEOUT);
        let budget = MemoryBudget::new(1 << 20, Shares::for_stages(false, false));
        let s = c.settings(budget.account(Component::Exporter));
        assert_eq!(
            (
                s.batch_max_spans,
                s.batch_max_bytes,
                s.batch_timeout,
                s.queue_max_spans,
                s.concurrency
            ),
            (8192, 8 << 20, Duration::from_millis(200), 1_000_000, 4)
        );
        let d = RetrySettings::default();
        assert_eq!(
            (
                s.retry.initial_interval,
                s.retry.max_interval,
                s.retry.max_elapsed
            ),
            (d.initial_interval, d.max_interval, d.max_elapsed)
        );
        let downstream = c.downstream().expect("downstream");
        assert!(
            downstream
                .uri()
                .to_string()
                .starts_with("http://127.0.0.1:4317"),
            "{}",
            downstream.uri()
        );
    }

    #[test]
    fn the_documented_section_parses() {
        let c = parse(
            r#"
endpoint: "https://api.honeycomb.io:443"
protocol: grpc
headers: { x-honeycomb-team: "secret" }
compression: gzip
batch: { max_spans: 8192, timeout: 200ms }
retry: { initial_interval: 1s, max_interval: 30s, max_elapsed: 5m }
queue: { max_spans: 1000000 }
"#,
        )
        .expect("parses");
        assert_eq!(c.headers["x-honeycomb-team"], "secret");
        assert_eq!(c.batch.timeout.0, Duration::from_millis(200));
        assert_eq!(c.retry.settings().max_elapsed, Duration::from_secs(300));
    }

    #[test]
    fn a_preset_fills_the_destination_and_the_section_wins() {
        let d = |yaml: &str| {
            parse(yaml)
                .expect(yaml)
                .destination("exporters.otlp")
                .expect("destination")
        };
        let nr = d("preset: newrelic\napi_key: nr-1\nregion: eu\n");
        assert_eq!(nr.endpoint, "https://otlp.eu01.nr-data.net:443");
        assert_eq!(nr.protocol, Protocol::HttpProtobuf);
        assert_eq!(nr.headers["api-key"], "nr-1");
        let hc = d(
            "preset: honeycomb\napi_key: hc-1\nendpoint: http://127.0.0.1:9\nprotocol: http/protobuf\n",
        );
        assert_eq!(hc.endpoint, "http://127.0.0.1:9");
        assert_eq!(hc.protocol, Protocol::HttpProtobuf);
        assert_eq!(hc.headers["x-honeycomb-team"], "hc-1");
        assert!(!hc.headers.contains_key("x-honeycomb-dataset"));
        let agent = d("preset: datadog_agent\n");
        assert_eq!(agent.endpoint, "http://localhost:4317");
        assert!(agent.headers.is_empty());
        let c = parse("preset: newrelic\napi_key: nr-secret-7\n").expect("parses");
        assert!(!format!("{c:?}").contains("nr-secret-7"));
    }

    #[test]
    fn errors_name_the_key() {
        let base = "endpoint: http://x:1\n";
        for (yaml, want) in [
            (
                "endpoint: api.honeycomb.io:443\n".to_string(),
                "exporters.otlp.endpoint: expected a URL",
            ),
            (
                format!("{base}batch: {{ max_spans: 0 }}\n"),
                "exporters.otlp.batch.max_spans: must be at least 1",
            ),
            (
                format!("{base}batch: {{ max_spans: 10 }}\nqueue: {{ max_spans: 9 }}\n"),
                "exporters.otlp.queue.max_spans: must be at least exporters.otlp.batch.max_spans (10)",
            ),
            (
                format!("{base}concurrency: 0\n"),
                "exporters.otlp.concurrency: must be at least 1",
            ),
            (
                format!("{base}retry: {{ initial_interval: 0s }}\n"),
                "exporters.otlp.retry.initial_interval: must be greater than zero",
            ),
            (
                format!("{base}timeout: 0s\n"),
                "exporters.otlp.timeout: must be greater than zero",
            ),
            (
                format!("{base}headers: {{ \"a b\": c }}\n"),
                "exporters.otlp.headers: \"a b\" is not a valid header name",
            ),
            (
                "preset: mackerel\napi_key: k\n".to_string(),
                "exporters.otlp.preset: mackerel takes metrics only, not traces",
            ),
            (
                "preset: datadog\napi_key: k\n".to_string(),
                "exporters.otlp.preset: datadog (the direct OTLP intake) takes metrics only",
            ),
            (
                "preset: honeycomb\n".to_string(),
                "exporters.otlp.preset: honeycomb needs api_key",
            ),
            (
                "batch: { max_spans: 1 }\n".to_string(),
                "exporters.otlp.endpoint: is required without a preset",
            ),
        ] {
            let e = parse(&yaml).expect_err(&yaml);
            assert!(e.starts_with(want), "{yaml}: {e}");
        }
    }
}
