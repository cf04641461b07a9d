//! Backend presets: each backend's documented OTLP contract (endpoint, protocol, auth
//! headers, temporality, histogram form, request size), written once and used by both
//! exporters (`exporters.otlp` for spans, `exporters.otlp_metrics` for SLIs).
//!
//! A preset only fills defaults: what a section sets itself wins (an `endpoint:` replaces
//! the preset's host and port; the path is still the signal's OTLP path). Each fact names
//! the page it comes from; where the pages say nothing, the choice is the conservative one
//! and the comment says so.
//!
//! It must not know the exporters' other settings (batching, retries, intervals): those
//! stay in their sections.

use serde::Deserialize;

use crate::outbound::{Compression, Protocol, Secret};
use crate::{KeyError, fail};

/// `preset:` of an exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Honeycomb,
    /// Datadog's direct OTLP intake (`dd-api-key`).
    Datadog,
    /// The Datadog Agent's OTLP receiver (it holds the key; nothing to authenticate).
    DatadogAgent,
    Newrelic,
    Mackerel,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Honeycomb => "honeycomb",
            Backend::Datadog => "datadog",
            Backend::DatadogAgent => "datadog_agent",
            Backend::Newrelic => "newrelic",
            Backend::Mackerel => "mackerel",
        }
    }
}

/// `region:` of the backends with a US and an EU instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    #[default]
    Us,
    Eu,
}

/// What a preset reads from its section besides the name: the key and where it lives.
#[derive(Debug, Clone, Copy, Default)]
pub struct PresetKeys<'a> {
    pub api_key: Option<&'a Secret>,
    pub region: Option<Region>,
    /// Honeycomb: the dataset metrics land in.
    pub dataset: Option<&'a str>,
    /// Datadog: the site (`datadoghq.com`, `datadoghq.eu`, `us5.datadoghq.com`, …).
    pub site: Option<&'a str>,
}

impl PresetKeys<'_> {
    /// For a section without `preset:`: none of a preset's fields may be given (naming the
    /// first, and `presets`, the ones the section takes), and `endpoint` is required.
    pub fn endpoint_without_preset(
        &self,
        key: &str,
        endpoint: Option<&String>,
        presets: &str,
    ) -> Result<String, KeyError> {
        for (field, given) in [
            ("api_key", self.api_key.is_some()),
            ("region", self.region.is_some()),
            ("dataset", self.dataset.is_some()),
            ("site", self.site.is_some()),
        ] {
            if given {
                return fail(
                    format!("{key}.{field}"),
                    format!("needs a preset ({presets}); without one, give the key in headers"),
                );
            }
        }
        endpoint.cloned().map_or_else(
            || {
                fail(
                    format!("{key}.endpoint"),
                    "is required without a preset (e.g. \"https://api.honeycomb.io:443\")",
                )
            },
            Ok,
        )
    }
}

/// Which signal a destination carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

/// How a backend wants histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistogramShape {
    Exponential,
    /// Explicit buckets at the CUJ's latency bounds (its threshold among them).
    Explicit,
}

/// A backend's destination for one signal, as its docs describe it.
#[derive(Debug, Clone)]
pub struct Contract {
    /// Scheme, host and port (the transport adds the signal's OTLP path).
    pub endpoint: String,
    pub protocol: Protocol,
    pub compression: Compression,
    /// Authentication and routing headers (values may be secrets).
    pub headers: Vec<(String, String)>,
    /// Metrics only: whether the backend wants delta temporality.
    pub delta: bool,
    pub histogram: HistogramShape,
    /// Largest request body (uncompressed protobuf) the backend takes; pushes are split
    /// to stay under it.
    pub max_request_bytes: u64,
}

/// When the docs name no limit: 4 MiB, the default largest message of a gRPC server (and
/// of the OpenTelemetry Collector's OTLP receiver), so no request depends on a raised limit.
const UNDOCUMENTED_LIMIT: u64 = 4 << 20;

/// Datadog's sites with an OTLP intake host `otlp.<site>` (docs.datadoghq.com/getting_started/site/).
const DATADOG_SITES: [&str; 6] = [
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
];

impl Backend {
    /// The destination of `signal` at this backend. `key` is the section (named in errors:
    /// `exporters.otlp_metrics.preset: honeycomb needs dataset`).
    pub fn contract(
        self,
        signal: Signal,
        keys: PresetKeys<'_>,
        key: &str,
    ) -> Result<Contract, KeyError> {
        let at = |k: &str| format!("{key}.{k}");
        let needs =
            |what: &str| fail::<Contract>(at("preset"), format!("{} needs {what}", self.name()));
        let unused = |field: &str, present: bool| {
            if present {
                fail(at(field), format!("is not used by preset {}", self.name()))
            } else {
                Ok(())
            }
        };
        match self {
            // docs.honeycomb.io/send-data/opentelemetry/ : OTLP over gRPC, HTTP/protobuf or
            // HTTP/JSON at api.honeycomb.io:443 (US) or api.eu1.honeycomb.io:443 (EU), key in
            // `x-honeycomb-team`.
            // docs.honeycomb.io/send-data/metrics/application : metrics also need
            // `x-honeycomb-dataset` (without it they land in `unknown_metrics`).
            // docs.honeycomb.io/get-started/honeycomb/metrics-in-honeycomb : sums in either
            // temporality, histograms supported; exponential histograms are not named, so
            // explicit buckets (the OTLP default aggregation). No request limit found: 4 MiB.
            Backend::Honeycomb => {
                unused("site", keys.site.is_some())?;
                let Some(api_key) = keys.api_key else {
                    return needs("api_key (the team's ingest key)");
                };
                let mut headers = vec![("x-honeycomb-team".to_string(), api_key.0.clone())];
                match (signal, keys.dataset) {
                    (_, Some(d)) if d.trim().is_empty() => {
                        return fail(at("dataset"), "must not be empty");
                    }
                    (Signal::Metrics, None) => {
                        return needs("dataset (where the SLI metrics land)");
                    }
                    // Spans need it only in Honeycomb Classic; sent when given.
                    (_, Some(d)) => headers.push(("x-honeycomb-dataset".into(), d.to_string())),
                    (Signal::Traces, None) => {}
                }
                let host = match keys.region.unwrap_or_default() {
                    Region::Us => "api.honeycomb.io",
                    Region::Eu => "api.eu1.honeycomb.io",
                };
                Ok(Contract {
                    endpoint: format!("https://{host}:443"),
                    protocol: Protocol::Grpc,
                    compression: Compression::Gzip,
                    headers,
                    delta: false,
                    histogram: HistogramShape::Explicit,
                    max_request_bytes: UNDOCUMENTED_LIMIT,
                })
            }
            // docs.datadoghq.com/opentelemetry/setup/intake_endpoint/otlp_metrics : the OTLP
            // HTTP exporter (protobuf recommended) at `https://otlp.<site>/v1/metrics`, the
            // key in `dd-api-key`, "ensure only delta metrics are sent".
            // docs.datadoghq.com/opentelemetry/guide/otlp_delta_temporality/ : exponential
            // histograms are taken (as distributions). No request limit found: 4 MiB.
            // Traces: .../intake_endpoint/otlp_traces is a Preview that also needs an
            // organisation-specific `dd-otlp-source` from Datadog: not a preset; use
            // datadog_agent, or endpoint and headers of your own.
            Backend::Datadog => {
                unused("region", keys.region.is_some())?;
                unused("dataset", keys.dataset.is_some())?;
                if signal == Signal::Traces {
                    return fail(
                        at("preset"),
                        "datadog (the direct OTLP intake) takes metrics only here: its traces intake is a Preview that needs a dd-otlp-source issued to your organisation; use preset datadog_agent (the Agent's OTLP receiver), or set endpoint and headers yourself",
                    );
                }
                let Some(api_key) = keys.api_key else {
                    return needs("api_key (a Datadog API key)");
                };
                let site = keys.site.unwrap_or(DATADOG_SITES[0]);
                if !DATADOG_SITES.contains(&site) {
                    return fail(
                        at("site"),
                        format!(
                            "expected one of {} (the site in your Datadog URL)",
                            DATADOG_SITES.join(", ")
                        ),
                    );
                }
                Ok(Contract {
                    endpoint: format!("https://otlp.{site}"),
                    protocol: Protocol::HttpProtobuf,
                    compression: Compression::Gzip,
                    headers: vec![("dd-api-key".into(), api_key.0.clone())],
                    delta: true,
                    histogram: HistogramShape::Exponential,
                    max_request_bytes: UNDOCUMENTED_LIMIT,
                })
            }
            // docs.datadoghq.com/opentelemetry/otlp_ingest_in_the_agent/ : the Agent's OTLP
            // receiver on 4317 (gRPC) and 4318 (HTTP), spans and metrics; the Agent holds the
            // key. docs.datadoghq.com/opentelemetry/otlp_metric_types/ : set temporality to
            // delta (cumulative may lose points when the sender restarts); exponential
            // histograms become distributions. 4 MiB: the receiver's default gRPC limit.
            Backend::DatadogAgent => {
                unused("api_key", keys.api_key.is_some())?;
                unused("region", keys.region.is_some())?;
                unused("dataset", keys.dataset.is_some())?;
                unused("site", keys.site.is_some())?;
                Ok(Contract {
                    endpoint: "http://localhost:4317".into(),
                    protocol: Protocol::Grpc,
                    compression: Compression::Gzip,
                    headers: Vec::new(),
                    delta: true,
                    histogram: HistogramShape::Exponential,
                    max_request_bytes: UNDOCUMENTED_LIMIT,
                })
            }
            // docs.newrelic.com/docs/opentelemetry/best-practices/opentelemetry-otlp/ :
            // otlp.nr-data.net (US) or otlp.eu01.nr-data.net (EU), ports 443/4317/4318, the
            // license key in `api-key`, OTLP/HTTP protobuf recommended over gRPC, payloads at
            // most 1 MB (10^6 bytes), delta temporality recommended.
            // docs.newrelic.com/docs/opentelemetry/best-practices/opentelemetry-best-practices-metrics/ :
            // monotonic delta sums are counts; histograms may be exponential.
            Backend::Newrelic => {
                unused("site", keys.site.is_some())?;
                unused("dataset", keys.dataset.is_some())?;
                let Some(api_key) = keys.api_key else {
                    return needs("api_key (the account's license key)");
                };
                let host = match keys.region.unwrap_or_default() {
                    Region::Us => "otlp.nr-data.net",
                    Region::Eu => "otlp.eu01.nr-data.net",
                };
                Ok(Contract {
                    endpoint: format!("https://{host}:443"),
                    protocol: Protocol::HttpProtobuf,
                    compression: Compression::Gzip,
                    headers: vec![("api-key".into(), api_key.0.clone())],
                    delta: true,
                    histogram: HistogramShape::Exponential,
                    max_request_bytes: 1_000_000,
                })
            }
            // mackerel.io/docs/entry/howto/labeled-metrics/post-metrics : metrics only (no
            // traces, no logs); histograms partially supported: only count, sum, min, max and
            // the 90th/95th/99th percentiles are kept, so explicit buckets at the CUJ's
            // bounds (the OTLP default form, threshold exact). mackerel.io/blog/entry/2024/03/22/190000 :
            // OTLP/gRPC at otlp.mackerelio.com:4317. Key header `Mackerel-Api-Key` (as sent
            // over gRPC, lowercase). Temporality not stated: cumulative (the OTLP default; a
            // lost push loses nothing). No request limit found: 4 MiB.
            Backend::Mackerel => {
                unused("region", keys.region.is_some())?;
                unused("dataset", keys.dataset.is_some())?;
                unused("site", keys.site.is_some())?;
                if signal == Signal::Traces {
                    return fail(
                        at("preset"),
                        "mackerel takes metrics only, not traces: send spans elsewhere, and SLIs with exporters.otlp_metrics.preset: mackerel",
                    );
                }
                let Some(api_key) = keys.api_key else {
                    return needs("api_key (a Mackerel API key with write permission)");
                };
                Ok(Contract {
                    endpoint: "https://otlp.mackerelio.com:4317".into(),
                    protocol: Protocol::Grpc,
                    compression: Compression::Gzip,
                    headers: vec![("mackerel-api-key".into(), api_key.0.clone())],
                    delta: false,
                    histogram: HistogramShape::Explicit,
                    max_request_bytes: UNDOCUMENTED_LIMIT,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Secret {
        Secret(s.into())
    }

    #[test]
    fn each_backend_has_its_documented_endpoint_and_auth() {
        let k = key("k-1");
        let m = |b: Backend, keys| b.contract(Signal::Metrics, keys, "m").expect("contract");
        let hc = m(
            Backend::Honeycomb,
            PresetKeys {
                api_key: Some(&k),
                dataset: Some("slis"),
                ..PresetKeys::default()
            },
        );
        assert_eq!(hc.endpoint, "https://api.honeycomb.io:443");
        assert_eq!(
            hc.headers,
            [
                ("x-honeycomb-team".to_string(), "k-1".to_string()),
                ("x-honeycomb-dataset".into(), "slis".into())
            ]
        );
        let eu = Backend::Honeycomb
            .contract(
                Signal::Traces,
                PresetKeys {
                    api_key: Some(&k),
                    region: Some(Region::Eu),
                    ..PresetKeys::default()
                },
                "t",
            )
            .expect("traces");
        assert_eq!(eu.endpoint, "https://api.eu1.honeycomb.io:443");
        assert_eq!(eu.headers.len(), 1, "no dataset for spans unless given");

        let nr = m(
            Backend::Newrelic,
            PresetKeys {
                api_key: Some(&k),
                region: Some(Region::Eu),
                ..PresetKeys::default()
            },
        );
        assert_eq!(nr.endpoint, "https://otlp.eu01.nr-data.net:443");
        assert_eq!(nr.protocol, Protocol::HttpProtobuf);
        assert_eq!((nr.delta, nr.max_request_bytes), (true, 1_000_000));

        let dd = m(
            Backend::Datadog,
            PresetKeys {
                api_key: Some(&k),
                site: Some("datadoghq.eu"),
                ..PresetKeys::default()
            },
        );
        assert_eq!(dd.endpoint, "https://otlp.datadoghq.eu");
        assert_eq!(dd.headers, [("dd-api-key".to_string(), "k-1".to_string())]);
        assert!(dd.delta);

        let agent = m(Backend::DatadogAgent, PresetKeys::default());
        assert_eq!(agent.endpoint, "http://localhost:4317");
        assert!(agent.headers.is_empty());

        let mk = m(
            Backend::Mackerel,
            PresetKeys {
                api_key: Some(&k),
                ..PresetKeys::default()
            },
        );
        assert_eq!(mk.endpoint, "https://otlp.mackerelio.com:4317");
        assert_eq!(mk.histogram, HistogramShape::Explicit);
        assert_eq!(mk.headers[0].0, "mackerel-api-key");
    }

    #[test]
    fn errors_name_the_key_and_what_is_missing() {
        let k = key("k");
        let cases: [(Backend, Signal, PresetKeys<'_>, &str); 6] = [
            (
                Backend::Honeycomb,
                Signal::Metrics,
                PresetKeys {
                    api_key: Some(&k),
                    ..PresetKeys::default()
                },
                "x.preset: honeycomb needs dataset",
            ),
            (
                Backend::Newrelic,
                Signal::Metrics,
                PresetKeys::default(),
                "x.preset: newrelic needs api_key",
            ),
            (
                Backend::Mackerel,
                Signal::Traces,
                PresetKeys {
                    api_key: Some(&k),
                    ..PresetKeys::default()
                },
                "x.preset: mackerel takes metrics only",
            ),
            (
                Backend::Datadog,
                Signal::Traces,
                PresetKeys {
                    api_key: Some(&k),
                    ..PresetKeys::default()
                },
                "x.preset: datadog (the direct OTLP intake) takes metrics only",
            ),
            (
                Backend::Datadog,
                Signal::Metrics,
                PresetKeys {
                    api_key: Some(&k),
                    site: Some("datadog.example"),
                    ..PresetKeys::default()
                },
                "x.site: expected one of datadoghq.com",
            ),
            (
                Backend::DatadogAgent,
                Signal::Metrics,
                PresetKeys {
                    api_key: Some(&k),
                    ..PresetKeys::default()
                },
                "x.api_key: is not used by preset datadog_agent",
            ),
        ];
        for (backend, signal, keys, want) in cases {
            let e = backend.contract(signal, keys, "x").expect_err(want);
            assert!(e.to_string().starts_with(want), "{e}");
            assert!(!e.to_string().contains("k\""), "no key in {e}");
        }
    }
}
