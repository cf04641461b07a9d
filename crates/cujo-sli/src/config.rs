//! `slo:`: the SLI engine's section — where its state is saved, how long events wait to
//! settle, the limits on what it holds ([`SloConfig::limits`]), and what a burn-rate
//! alert needs before it may fire ([`AlertGateConfig`], also each CUJ's `alerts:`).

use std::path::PathBuf;
use std::time::Duration;

use cujo_config::{ByteSize, Fraction, HumanDuration, KeyError, fail};
use serde::Deserialize;

use crate::engine::{DEFAULT_MAX_SETTLING_TRACES, DEFAULT_SETTLE};
use crate::limits::{DEFAULT_MAX_DIMENSION_VALUE_BYTES, DEFAULT_SERIES_IDLE_TTL, SliLimits};
use crate::slo::AlertGate;
use crate::trace_link::TraceLink;

/// `slo:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Where the CUJs' rolling windows are saved, so a restart keeps the error budgets.
    pub state_file: Option<PathBuf>,
    /// How often the state file is written (and once more at shutdown).
    #[serde(default = "default_save_interval")]
    pub save_interval: HumanDuration,
    /// How long events of `end_to_end` and `{from, to}` CUJs wait after their trace's release
    /// for late spans and linked continuations (0s: recorded at release).
    #[serde(default = "default_settle")]
    pub settle: HumanDuration,
    /// At most this many traces wait to settle; past it the oldest is recorded early.
    #[serde(default = "default_max_settling_traces")]
    pub max_settling_traces: usize,
    /// Dimension values longer than this are cut before they make a series, so a value
    /// unique per request (an id, a URL) cannot make a series per request.
    #[serde(default = "default_max_dimension_value_bytes")]
    pub max_dimension_value_bytes: ByteSize,
    /// Series with no event for this long are removed, their memory given back (0s: never),
    /// so dimension values that stopped coming do not hold memory for good.
    #[serde(default = "default_series_idle_ttl")]
    pub series_idle_ttl: HumanDuration,
    /// Set when this instance is one of several sharing the traffic (a gateway's
    /// replicas): where the fleet's SLOs are. Its own windows then hold its share only; the
    /// page and the JSON API say so and point there.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
    /// What a burn-rate alert's long window must hold before it may fire, for every CUJ
    /// (a CUJ's own `alerts:` overrides it key by key).
    #[serde(default)]
    pub alerts: AlertGateConfig,
    /// A URL template opening a trace in the tracing backend (`{trace_id}`, and `{start}`,
    /// `{end}`, `{start_ms}`, `{end_ms}` for a range), so every trace id a surface shows
    /// is a link ([`TraceLink`]).
    #[serde(default)]
    pub trace_link: Option<String>,
}

/// `slo.fleet`: where the SLOs of all the instances together are computed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// A Prometheus that scrapes every instance and evaluates the rules of `cujo rules`
    /// (`cujo status --prometheus` gates on it).
    pub prometheus: String,
}

/// `slo.alerts` and `cujs[].alerts`: the data a burn-rate alert's long window must hold
/// before the alert may fire ([`AlertGate`]); each key unset takes the default (for a CUJ,
/// `slo.alerts`' value).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertGateConfig {
    /// Valid events, e.g. `100` (0: any number).
    pub min_events: Option<u64>,
    /// Fraction of the window with data, e.g. `50%` or `0.5` (0: any).
    pub min_coverage: Option<Fraction>,
}

impl AlertGateConfig {
    /// The gate: the keys set here, `defaults` for the rest.
    pub fn over(&self, defaults: AlertGate) -> AlertGate {
        AlertGate {
            min_events: self.min_events.unwrap_or(defaults.min_events),
            min_coverage: self.min_coverage.map_or(defaults.min_coverage, |f| f.0),
        }
    }
}

impl Default for SloConfig {
    fn default() -> Self {
        Self {
            state_file: None,
            save_interval: default_save_interval(),
            settle: default_settle(),
            max_settling_traces: default_max_settling_traces(),
            max_dimension_value_bytes: default_max_dimension_value_bytes(),
            series_idle_ttl: default_series_idle_ttl(),
            fleet: None,
            alerts: AlertGateConfig::default(),
            trace_link: None,
        }
    }
}

fn default_save_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_settle() -> HumanDuration {
    HumanDuration(DEFAULT_SETTLE)
}

fn default_max_settling_traces() -> usize {
    DEFAULT_MAX_SETTLING_TRACES
}

fn default_max_dimension_value_bytes() -> ByteSize {
    ByteSize(DEFAULT_MAX_DIMENSION_VALUE_BYTES as u64)
}

fn default_series_idle_ttl() -> HumanDuration {
    HumanDuration(DEFAULT_SERIES_IDLE_TTL)
}

impl SloConfig {
    /// The SLI engine's limits: these settings, within `max_bytes` (its share of the
    /// memory budget).
    pub fn limits(&self, max_bytes: usize) -> SliLimits {
        SliLimits {
            max_bytes,
            max_dimension_value_bytes: usize::try_from(self.max_dimension_value_bytes.0)
                .unwrap_or(usize::MAX),
            series_idle_ttl: self.series_idle_ttl.0,
        }
    }

    /// The trace link template, if one is set and valid (`validate` says why not).
    pub fn trace_link(&self) -> Option<TraceLink> {
        TraceLink::parse("slo.trace_link", self.trace_link.as_deref()?).ok()
    }

    /// The alert gate of every CUJ that does not set its own (`slo.alerts` over the
    /// defaults).
    pub fn alert_gate(&self) -> AlertGate {
        self.alerts.over(AlertGate::default())
    }

    /// Limits the engine can keep: room to settle, dimension values that are not cut to
    /// nothing nor held at any length, an idle TTL that is off or not below a second. `key`
    /// is where the section is (`slo`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        let err = |p: &str, d: &str| fail(format!("{key}.{p}"), d);
        if self.max_settling_traces == 0 {
            return err("max_settling_traces", "must be at least 1");
        }
        if self.max_dimension_value_bytes.0 == 0 {
            return err(
                "max_dimension_value_bytes",
                "must be at least 1 byte (every value would be cut to nothing)",
            );
        }
        if self.max_dimension_value_bytes.0 > 64 << 10 {
            return err(
                "max_dimension_value_bytes",
                "must be at most 64KiB (a series key is held in memory for every series)",
            );
        }
        let ttl = self.series_idle_ttl.0;
        if !ttl.is_zero() && ttl < Duration::from_secs(1) {
            return err("series_idle_ttl", "must be 0s (never) or at least 1s");
        }
        if let Some(fleet) = &self.fleet {
            let url = fleet.prometheus.trim();
            let host = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .unwrap_or_default();
            if host.is_empty() || host.starts_with('/') {
                return err(
                    "fleet.prometheus",
                    "expected the URL of Prometheus, e.g. http://prometheus.monitoring:9090",
                );
            }
        }
        if let Some(template) = &self.trace_link {
            TraceLink::parse(&format!("{key}.trace_link"), template)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section as the binary reads it: parsed, then checked under `slo`.
    fn parse(yaml: &str) -> Result<SloConfig, String> {
        let c: SloConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("slo").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn limits_default_parse_and_are_checked() {
        let c = parse("{}").expect("empty section");
        assert_eq!(c.max_dimension_value_bytes, ByteSize(128));
        assert_eq!(c.series_idle_ttl.0, Duration::from_secs(3600));
        assert_eq!(c.settle.0, Duration::from_secs(30));
        assert_eq!(c.max_settling_traces, 100_000);
        assert_eq!(c.save_interval.0, Duration::from_secs(60));
        let limits = c.limits(1 << 20);
        assert_eq!(
            (limits.max_bytes, limits.max_dimension_value_bytes),
            (1 << 20, 128)
        );
        let c = parse("{ max_dimension_value_bytes: 1KiB, series_idle_ttl: 0s }").expect("parses");
        assert_eq!(c.max_dimension_value_bytes, ByteSize(1024));
        assert!(c.limits(0).series_idle_ttl.is_zero(), "0s: never");
        assert_eq!(c.alert_gate(), AlertGate::default());
        let c = parse("{ series_idle_ttl: 6h }").expect("parses");
        assert_eq!(c.series_idle_ttl.0, Duration::from_secs(6 * 3600));
        for (yaml, want) in [
            (
                "{ max_dimension_value_bytes: 0 }",
                "slo.max_dimension_value_bytes: must be at least 1 byte",
            ),
            (
                "{ max_dimension_value_bytes: 1MiB }",
                "slo.max_dimension_value_bytes: must be at most 64KiB",
            ),
            (
                "{ series_idle_ttl: 10ms }",
                "slo.series_idle_ttl: must be 0s (never) or at least 1s",
            ),
            (
                "{ max_settling_traces: 0 }",
                "slo.max_settling_traces: must be at least 1",
            ),
            ("{ max_dimension_value_bytes: lots }", "expected a size"),
            (
                "{ alerts: { min_coverage: 150% } }",
                "expected a fraction between 0 and 1",
            ),
            ("{ alerts: { min_events: -1 } }", "min_events"),
            ("{ alerts: { min_event: 10 } }", "unknown field `min_event`"),
            (
                "{ series_idle_ttl: 3600 }",
                "expected a duration with a unit",
            ),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn the_alert_gate_defaults_and_is_overridden_key_by_key() {
        let c = parse("{}").expect("empty section");
        assert_eq!(
            c.alert_gate(),
            AlertGate {
                min_events: 100,
                min_coverage: 0.5
            }
        );
        let c = parse("{ alerts: { min_coverage: 25% } }").expect("parses");
        let global = c.alert_gate();
        assert_eq!((global.min_events, global.min_coverage), (100, 0.25));
        let cuj: AlertGateConfig = serde_yaml_ng::from_str("{ min_events: 0 }").expect("parses");
        assert_eq!(
            cuj.over(global),
            AlertGate {
                min_events: 0,
                min_coverage: 0.25
            }
        );
        let off = parse("{ alerts: { min_events: 0, min_coverage: 0 } }").expect("parses");
        assert_eq!(off.alert_gate(), AlertGate::OFF);
    }
}
