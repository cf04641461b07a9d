//! `exporters.otlp_metrics`: where the SLI metrics are pushed, how often, and how; with a
//! `preset:`, a backend's documented contract fills what the section leaves out
//! ([`cujo_config::presets`]), and [`OtlpMetricsExporter::settings`] resolves both.

use std::collections::BTreeMap;
use std::time::Duration;

use cujo_config::outbound::{
    self, Compression, DEFAULT_EXPORT_TIMEOUT, Headers, Protocol, Secret, TlsConfig,
};
use cujo_config::presets::{Backend, HistogramShape, PresetKeys, Region, Signal};
use cujo_config::{ByteSize, HumanDuration, KeyError, fail};
use serde::Deserialize;

/// `exporters.otlp_metrics`: the SLI metrics pushed to an OTLP backend every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpMetricsExporter {
    /// A backend whose documented OTLP contract supplies the defaults below.
    #[serde(default)]
    pub preset: Option<Backend>,
    /// Required without a preset; with one, replaces its scheme, host and port.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub protocol: Option<Protocol>,
    /// Sent with every push, over the preset's headers of the same name.
    #[serde(default)]
    pub headers: Headers,
    /// The preset's key, sent in its header (`x-honeycomb-team`, `api-key`, …).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Honeycomb and New Relic: `us` (default) or `eu`.
    #[serde(default)]
    pub region: Option<Region>,
    /// Honeycomb: the dataset the metrics land in.
    #[serde(default)]
    pub dataset: Option<String>,
    /// Datadog: the site of the intake (`datadoghq.com` by default).
    #[serde(default)]
    pub site: Option<String>,
    /// Time between pushes.
    #[serde(default = "default_push_interval")]
    pub interval: HumanDuration,
    /// `cumulative` (totals since start) or `delta` (change since the last push).
    #[serde(default)]
    pub temporality: Option<Temporality>,
    /// `exponential` or `explicit` (buckets at each CUJ's latency bounds).
    #[serde(default)]
    pub histogram: Option<HistogramForm>,
    /// Largest request (protobuf, before compression); larger pushes are split.
    #[serde(default)]
    pub max_request_size: Option<ByteSize>,
    /// Deadline of one push attempt.
    #[serde(default = "default_export_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub compression: Option<Compression>,
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

/// How `cujo.cuj.duration` is sent.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HistogramForm {
    /// `ExponentialHistogram` from the engine's scale-9 histogram (≤ 160 buckets).
    #[default]
    Exponential,
    /// `Histogram` with the CUJ's latency bounds (its threshold among them).
    Explicit,
}

/// The push as it runs: the section over its preset.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub endpoint: String,
    pub protocol: Protocol,
    pub compression: Compression,
    /// The preset's headers, then the section's (which win); values are secrets.
    pub headers: Headers,
    pub temporality: Temporality,
    pub histogram: HistogramForm,
    /// Split pushes larger than this (protobuf bytes); `None`: never split.
    pub max_request_bytes: Option<u64>,
}

fn default_push_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_export_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_EXPORT_TIMEOUT)
}

/// The smallest request a split can aim for: one data point with its resource and scope.
const MIN_REQUEST_BYTES: u64 = 4096;

impl OtlpMetricsExporter {
    /// A usable URL and headers, positive durations, a preset with what it needs. `key` is
    /// where the section is (`exporters.otlp_metrics`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        let at = |k: &str| format!("{key}.{k}");
        let settings = self.settings(key)?;
        outbound::check_url(
            &at("endpoint"),
            &settings.endpoint,
            "https://api.honeycomb.io:443",
        )?;
        outbound::check_headers(&at("headers"), &self.headers)?;
        outbound::check_headers(&at("api_key"), &settings.headers)?;
        if self.interval.0 < Duration::from_millis(10) {
            return fail(
                at("interval"),
                format!("must be at least 10ms, found {:?}", self.interval.0),
            );
        }
        if self.timeout.0.is_zero() {
            return fail(at("timeout"), "must be greater than zero");
        }
        if let Some(size) = self.max_request_size
            && size.0 < MIN_REQUEST_BYTES
        {
            return fail(
                at("max_request_size"),
                format!("must be at least {MIN_REQUEST_BYTES} bytes"),
            );
        }
        Ok(())
    }

    /// What the push uses: each value the section sets, else its preset's, else the
    /// default. Fails (naming the key) when the preset lacks what it needs, or a preset's
    /// field is given without one.
    pub fn settings(&self, key: &str) -> Result<MetricsSettings, KeyError> {
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
                "honeycomb, datadog, datadog_agent, newrelic or mackerel",
            )?;
            return Ok(MetricsSettings {
                endpoint,
                protocol: self.protocol.unwrap_or_default(),
                compression: self.compression.unwrap_or_default(),
                headers: self.headers.clone(),
                temporality: self.temporality.unwrap_or_default(),
                histogram: self.histogram.unwrap_or_default(),
                max_request_bytes: self.max_request_size.map(|s| s.0),
            });
        };
        let contract = backend.contract(Signal::Metrics, keys, key)?;
        let mut headers: BTreeMap<String, String> = contract.headers.into_iter().collect();
        headers.extend(self.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(MetricsSettings {
            endpoint: self.endpoint.clone().unwrap_or(contract.endpoint),
            protocol: self.protocol.unwrap_or(contract.protocol),
            compression: self.compression.unwrap_or(contract.compression),
            headers: Headers(headers),
            temporality: self.temporality.unwrap_or(if contract.delta {
                Temporality::Delta
            } else {
                Temporality::Cumulative
            }),
            histogram: self.histogram.unwrap_or(match contract.histogram {
                HistogramShape::Exponential => HistogramForm::Exponential,
                HistogramShape::Explicit => HistogramForm::Explicit,
            }),
            max_request_bytes: Some(
                self.max_request_size
                    .map_or(contract.max_request_bytes, |s| s.0),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<OtlpMetricsExporter, String> {
        let c: OtlpMetricsExporter = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("exporters.otlp_metrics")
            .map_err(|e| e.to_string())?;
        Ok(c)
    }

    fn settings(yaml: &str) -> MetricsSettings {
        parse(yaml)
            .expect(yaml)
            .settings("exporters.otlp_metrics")
            .expect("settings")
    }

    #[test]
    fn without_a_preset_the_section_is_taken_as_written() {
        let s = settings("endpoint: http://127.0.0.1:4317\n");
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.temporality, Temporality::Cumulative);
        assert_eq!(s.histogram, HistogramForm::Exponential);
        assert_eq!(s.compression, Compression::Gzip);
        assert_eq!(s.max_request_bytes, None);
    }

    #[test]
    fn a_preset_fills_what_the_section_leaves_out() {
        let s = settings("preset: newrelic\napi_key: nr-key-1\n");
        assert_eq!(s.endpoint, "https://otlp.nr-data.net:443");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.temporality, Temporality::Delta);
        assert_eq!(s.histogram, HistogramForm::Exponential);
        assert_eq!(s.max_request_bytes, Some(1_000_000));
        assert_eq!(s.headers["api-key"], "nr-key-1");

        let s = settings("preset: mackerel\napi_key: mk\n");
        assert_eq!(
            (s.endpoint.as_str(), s.protocol, s.histogram, s.temporality),
            (
                "https://otlp.mackerelio.com:4317",
                Protocol::Grpc,
                HistogramForm::Explicit,
                Temporality::Cumulative
            )
        );
    }

    #[test]
    fn what_the_section_sets_wins_over_the_preset() {
        let s = settings(
            "preset: honeycomb\napi_key: hc\ndataset: slis\nregion: eu\nendpoint: http://127.0.0.1:9\nprotocol: http/protobuf\ntemporality: delta\nhistogram: exponential\ncompression: none\nmax_request_size: 64KiB\nheaders: { x-honeycomb-dataset: other }\n",
        );
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.temporality, Temporality::Delta);
        assert_eq!(s.histogram, HistogramForm::Exponential);
        assert_eq!(s.compression, Compression::None);
        assert_eq!(s.max_request_bytes, Some(64 << 10));
        assert_eq!(s.headers["x-honeycomb-team"], "hc");
        assert_eq!(s.headers["x-honeycomb-dataset"], "other");
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let c =
            parse("preset: newrelic\napi_key: nr-secret-9\nheaders: { x-extra: hdr-secret-8 }\n")
                .expect("parses");
        let shown = format!("{c:?} {:?}", c.settings("k").expect("settings"));
        assert!(
            !shown.contains("nr-secret-9") && !shown.contains("hdr-secret-8"),
            "{shown}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (yaml, want) in [
            (
                "preset: honeycomb\napi_key: k\n",
                "exporters.otlp_metrics.preset: honeycomb needs dataset",
            ),
            (
                "preset: newrelic\n",
                "exporters.otlp_metrics.preset: newrelic needs api_key",
            ),
            (
                "interval: 1s\n",
                "exporters.otlp_metrics.endpoint: is required without a preset",
            ),
            (
                "endpoint: http://x:1\napi_key: k\n",
                "exporters.otlp_metrics.api_key: needs a preset",
            ),
            (
                "preset: datadog\napi_key: k\nregion: eu\n",
                "exporters.otlp_metrics.region: is not used by preset datadog",
            ),
            (
                "preset: newrelic\napi_key: k\nmax_request_size: 100\n",
                "exporters.otlp_metrics.max_request_size: must be at least 4096 bytes",
            ),
            (
                "preset: newrelic\napi_key: \"a\\nb\"\n",
                "exporters.otlp_metrics.api_key.api-key: is not a valid header value",
            ),
            (
                "preset: newrelic\napi_key: k\nendpoint: otlp.nr-data.net\n",
                "exporters.otlp_metrics.endpoint: expected a URL",
            ),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.starts_with(want), "{yaml}: {e}");
        }
        let e = parse("preset: sumo\n").expect_err("unknown preset");
        assert!(e.contains("unknown variant `sumo`"), "{e}");
    }
}
