//! cujo's configuration file: YAML, `${env:NAME}` substitution, every key checked.
//!
//! Errors name the file and the key path (`cujo.yaml: exporters.otlp.batch.timeout: ...`).
//! Unknown keys are errors, so a typo never silently falls back to a default.
//!
//! This is the composition. Each component's section is its own type, in the component's
//! crate, which checks itself with `validate(&self, key)` and resolves itself into the
//! settings its component takes:
//! - `receivers:` — `cujo_otlp::receiver::config`; `admission:` —
//!   `cujo_otlp::admission::config`; `exporters.otlp` — `cujo_otlp::exporter::config`;
//!   `exporters.prometheus` (the admin listener) — `cujo_otlp::admin::config`;
//! - `assembler:`, `propagate:` — `cujo_assembler::config`; `slo:` — `cujo_sli::config`;
//! - `cujs:`, `exporters.otlp_metrics`, `notifications:` — `cujo-slo`, beside what they
//!   configure; the value types (`30s`, `256MiB`, URLs, headers, TLS) — `cujo-config`.
//!
//! They are re-exported here. What is defined here: the top-level [`Config`] and its
//! [`Exporters`] section, `shutdown:` and `log:`, loading and `${env:}` substitution,
//! [`ConfigError`] (the file name added to a [`KeyError`]), and the checks that need two
//! sections at once (notifications need CUJs; the receivers' share of the budget, which
//! depends on the stages that run, holds one connection and their largest request).

use std::path::Path;
use std::time::Duration;

pub use cujo_assembler::config::{AssemblerConfig, PropagateConfig, RootCacheConfig};
use cujo_config::KeyError;
pub use cujo_config::outbound::{Compression, Protocol, TlsConfig};
pub use cujo_config::{ByteSize, Endpoint, HumanDuration};
pub use cujo_otlp::admin::AdminRoutes;
pub use cujo_otlp::admin::config::PrometheusExporter;
pub use cujo_otlp::admission::config::{AdmissionConfig, Fraction, SharesConfig};
pub use cujo_otlp::auth::AuthConfig;
pub use cujo_otlp::exporter::config::{BatchConfig, OtlpExporter, QueueConfig, RetryConfig};
pub use cujo_otlp::receiver::config::{GrpcReceiver, HttpReceiver, OtlpReceivers, Receivers};
pub use cujo_otlp::tenants::TenantConfig;
pub use cujo_sli::config::SloConfig;
pub use cujo_slo::cujs::CujConfig;
pub use cujo_slo::exporters::otlp_metrics::{OtlpMetricsExporter, Temporality};
pub use cujo_slo::exporters::webhooks::{
    AlertSeverity, NotificationsConfig, WebhookConfig, WebhookFormat,
};
use serde::Deserialize;

/// The embedded default configuration (`config/default.yaml`).
pub const DEFAULT_YAML: &str = include_str!("../../../config/default.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: not valid YAML: {detail}")]
    Yaml { file: String, detail: String },
    #[error("{file}: {path}: {detail}")]
    Key {
        file: String,
        path: String,
        detail: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub receivers: Receivers,
    #[serde(default)]
    pub admission: AdmissionConfig,
    #[serde(default)]
    pub exporters: Exporters,
    /// Tenants of a shared gateway: each identified by its bearer tokens, sent downstream
    /// with its own headers, with its own share of the budget.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Present (or `propagate` present) = the trace assembler runs between receivers and
    /// exporters.
    pub assembler: Option<AssemblerConfig>,
    pub propagate: Option<PropagateConfig>,
    /// Critical User Journeys: SLIs derived from released traces (needs the assembler).
    #[serde(default)]
    pub cujs: Vec<CujConfig>,
    #[serde(default)]
    pub slo: SloConfig,
    /// Burn-rate alert notifications (webhooks); needs CUJs.
    pub notifications: Option<NotificationsConfig>,
    /// The write-ahead log: requests on disk before they are acknowledged, replayed at
    /// start (`cujo-wal`).
    pub wal: Option<cujo_wal::WalConfig>,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// `exporters:`: one section per exporter, each its component's type.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exporters {
    pub otlp: Option<OtlpExporter>,
    pub prometheus: Option<PrometheusExporter>,
    /// The CUJ SLIs pushed as OTLP metrics.
    pub otlp_metrics: Option<OtlpMetricsExporter>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long shutdown may take to drain and forward what was accepted.
    #[serde(default = "default_shutdown_timeout")]
    pub timeout: HumanDuration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: default_shutdown_timeout(),
        }
    }
}

fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `cujo_otlp=debug,info`; `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

/// Where in `text` the key at `path` failed, when reading the text itself fails at the same
/// key (the settings are read from the text with `${env:…}` resolved, which has no
/// positions; the text without them usually fails in the same place).
fn location_of(text: &str, path: &str) -> Option<(usize, usize)> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Config>(de) {
        Err(e) if e.path().to_string() == path => {
            e.inner().location().map(|l| (l.line(), l.column()))
        }
        _ => None,
    }
}

/// A deserializer's message in the config's words: the name of a Rust type it expected
/// (`expected struct GrpcReceiver`) says nothing to whoever writes the YAML.
fn plain_words(detail: &str) -> String {
    let mut out = detail.to_string();
    for (rust, plain) in [
        ("expected struct ", "expected a mapping of settings"),
        ("expected enum ", "expected one of the documented values"),
        ("expected tuple struct ", "expected a value"),
        ("expected unit struct ", "expected a value"),
    ] {
        while let Some(at) = out.find(rust) {
            // The type name runs to the next character that cannot be in one.
            let name_start = at + rust.len();
            let name_end = out[name_start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(out.len(), |n| name_start + n);
            out.replace_range(at..name_end, plain);
        }
    }
    for (rust, plain) in [
        ("usize", "a whole number"),
        ("u64", "a whole number"),
        ("u32", "a whole number"),
        ("u16", "a whole number"),
        ("u8", "a whole number"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
    ] {
        let word = format!("expected {rust}");
        let mut from = 0;
        while let Some(found) = out[from..].find(&word) {
            let at = from + found;
            let end = at + word.len();
            let whole = out[end..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if whole {
                out.replace_range(at..end, &format!("expected {plain}"));
                from = at + "expected ".len() + plain.len();
            } else {
                from = end;
            }
        }
    }
    out
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Loads `path`, or the embedded default when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::parse("<embedded default>", DEFAULT_YAML, &|_| None),
            Some(p) => {
                let file = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: file.clone(),
                    source,
                })?;
                Config::parse(&file, &text, &|name| std::env::var(name).ok())
            }
        }
    }

    /// Loads only the sections the generators read (`cujs:` and `slo:`) from `path`, or
    /// from the embedded default: `cujo rules` and `cujo dashboard` neither need nor
    /// resolve the `${env:…}` secrets of the other sections (API keys, webhook URLs).
    pub fn load_slo_sections(path: Option<&Path>) -> Result<Config, ConfigError> {
        const SECTIONS: &[&str] = &["cujs", "slo"];
        match path {
            None => Config::parse_sections("<embedded default>", DEFAULT_YAML, &|_| None, SECTIONS),
            Some(p) => {
                let file = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: file.clone(),
                    source,
                })?;
                Config::parse_sections(&file, &text, &|name| std::env::var(name).ok(), SECTIONS)
            }
        }
    }

    /// Parses YAML `text`; `file` names it in errors and `env` resolves `${env:NAME}`.
    pub fn parse(
        file: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::parse_sections(file, text, env, &[])
    }

    /// [`Config::parse`] of the top-level sections named in `keep` only (all when empty);
    /// the others are neither read nor checked.
    fn parse_sections(
        file: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        keep: &[&str],
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Yaml {
                file: file.into(),
                detail: e.to_string(),
            })?;
        if value.is_null() {
            value = serde_yaml_ng::Value::Mapping(Default::default());
        }
        if let (false, serde_yaml_ng::Value::Mapping(sections)) = (keep.is_empty(), &mut value) {
            sections.retain(|k, _| k.as_str().is_some_and(|k| keep.contains(&k)));
        }
        substitute_env(&mut value, &mut Vec::new(), env).map_err(|(path, detail)| {
            ConfigError::Key {
                file: file.into(),
                path,
                detail,
            }
        })?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let mut detail = plain_words(&e.into_inner().to_string());
            if let Some((line, column)) = location_of(text, &path) {
                detail.push_str(&format!(" (line {line}, column {column})"));
            }
            ConfigError::Key {
                file: file.into(),
                path: if path == "." {
                    "(top level)".into()
                } else {
                    path
                },
                detail,
            }
        })?;
        config.check().map_err(|e| ConfigError::Key {
            file: file.into(),
            path: e.key,
            detail: e.detail,
        })?;
        Ok(config)
    }

    /// Whether the trace assembler runs (CUJs need it: it hands them whole traces).
    pub fn assembler_enabled(&self) -> bool {
        self.assembler.is_some() || self.propagate.is_some() || !self.cujs.is_empty()
    }

    /// The CUJ definitions, resolved (checked when the config was loaded).
    pub fn cujs(&self) -> Vec<cujo_sli::cuj::Cuj> {
        cujo_slo::cujs::resolve(&self.cujs, self.slo.alert_gate()).unwrap_or_default()
    }

    /// Checks that values which parsed are also usable: each section by its own
    /// `validate`, under its key, and what needs two sections at once. The order is the
    /// order errors are found in when there are several.
    fn check(&self) -> Result<(), KeyError> {
        let err = |p: &str, d: String| cujo_config::fail(p, d);
        cujo_slo::cujs::resolve(&self.cujs, self.slo.alert_gate())?;
        if let Some(a) = &self.assembler {
            a.validate("assembler")?;
        }
        if let Some(p) = &self.propagate {
            p.validate("propagate")?;
        }
        if let Some(n) = &self.notifications {
            if self.cujs.is_empty() {
                return err(
                    "notifications",
                    "alerts come from CUJ objectives, and no cujs: are configured".into(),
                );
            }
            if self.slo.fleet.is_some() {
                // Leader election would need coordination between replicas, and each one's
                // windows hold its share only: the fleet's alerts come from Prometheus.
                return err(
                    "notifications",
                    "with slo.fleet every replica would alert on its own share of the traffic: \
                     alert from Prometheus instead (the alerting rules of `cujo rules`, as a \
                     PrometheusRule with `cujo rules --kubernetes NAME`)"
                        .into(),
                );
            }
            n.validate("notifications")?;
        }
        self.slo.validate("slo")?;
        if let Some(w) = &self.wal {
            w.validate("wal")?;
            // A record is a whole request as decoded, plus who sent it (a tenant's name or a
            // pass-through caller's header values, at most a few KiB).
            let otlp = self.receivers.otlp.clone().unwrap_or_default();
            let largest = [
                otlp.grpc.as_ref().map(|g| g.max_recv_msg_size.0),
                otlp.http.as_ref().map(|h| h.max_request_body_size.0),
            ]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
            let need = largest + (64 << 10);
            if w.max_record_size.0 < need {
                return err(
                    "wal.max_record_size",
                    format!(
                        "must hold the receivers' largest request ({largest} bytes) and who sent it: at least {need} bytes, found {}",
                        w.max_record_size.0
                    ),
                );
            }
        }
        self.admission.validate("admission")?;
        self.check_memory()?;
        self.receivers.validate("receivers")?;
        if let Some(prometheus) = &self.exporters.prometheus {
            prometheus.validate("exporters.prometheus")?;
        }
        if let Some(otlp) = &self.exporters.otlp {
            otlp.validate("exporters.otlp")?;
        }
        cujo_otlp::tenants::config::validate(&self.tenants, "tenants")?;
        if !self.tenants.is_empty() && self.exporters.otlp.is_none() {
            return err(
                "tenants",
                "tenants are sent downstream with their own headers, and no exporters.otlp is configured".into(),
            );
        }
        if let Some(m) = &self.exporters.otlp_metrics {
            m.validate("exporters.otlp_metrics")?;
        }
        Ok(())
    }

    /// The receivers' share of the budget holds one connection and the largest request they
    /// accept (else no connection, or no such request, could ever be admitted).
    fn check_memory(&self) -> Result<(), KeyError> {
        let budget = self.memory_shares();
        let receivers = (self.admission.max_in_flight.0 as f64
            * budget.of(cujo_otlp::memory::Component::Receivers)) as u64;
        let otlp = self.receivers.otlp.clone().unwrap_or_default();
        let largest = [
            otlp.grpc.as_ref().map(|g| {
                (
                    "receivers.otlp.grpc.max_recv_msg_size",
                    g.max_recv_msg_size.0,
                )
            }),
            otlp.http.as_ref().map(|h| {
                (
                    "receivers.otlp.http.max_request_body_size",
                    h.max_request_body_size.0,
                )
            }),
        ]
        .into_iter()
        .flatten()
        .max_by_key(|(_, size)| *size);
        // A request may grow past the share while it is alone in it beside connections'
        // costs (so the largest one fits whatever connections hold), but a connection is
        // only opened while its cost fits.
        let connection = cujo_otlp::server::CONNECTION_BYTES as u64;
        if receivers < connection {
            return cujo_config::fail(
                "admission.max_in_flight",
                format!(
                    "{} leaves the receivers {receivers} bytes, less than one connection costs ({connection} bytes): no connection could be accepted; raise the budget or admission.shares.receivers",
                    self.admission.max_in_flight.0,
                ),
            );
        }
        if let Some((key, size)) = largest
            && size > receivers
        {
            return cujo_config::fail(
                "admission.max_in_flight",
                format!(
                    "{} leaves the receivers {receivers} bytes ({:.1}% of it), less than {key} ({size} bytes): such a request could never be accepted; raise the budget or admission.shares.receivers, or lower {key}",
                    self.admission.max_in_flight.0,
                    budget.of(cujo_otlp::memory::Component::Receivers) * 100.0,
                ),
            );
        }
        Ok(())
    }

    /// How the memory budget is split, from `admission.shares` and the stages that run.
    pub fn memory_shares(&self) -> cujo_otlp::memory::Shares {
        let assembler = self.assembler_enabled();
        let defaults =
            cujo_otlp::memory::Shares::for_stages(assembler, assembler && !self.cujs.is_empty());
        self.admission.shares.resolve(defaults)
    }
}

/// Replaces `${env:NAME}` (and `${env:NAME:-default}`) in every string value.
fn substitute_env(
    value: &mut serde_yaml_ng::Value,
    path: &mut Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), (String, String)> {
    use serde_yaml_ng::Value;
    match value {
        Value::String(s) if s.contains("${") => {
            *s = expand(s, env).map_err(|d| (path.join("."), d))?;
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                path.push(k.as_str().unwrap_or("?").to_string());
                substitute_env(v, path, env)?;
                path.pop();
            }
        }
        Value::Sequence(seq) => {
            for (i, v) in seq.iter_mut().enumerate() {
                let last = path.pop().unwrap_or_default();
                path.push(format!("{last}[{i}]"));
                substitute_env(v, path, env)?;
                path.pop();
                path.push(last);
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| {
            "unterminated \"${\" (the value is not shown: it may hold a secret)".to_string()
        })?;
        let inner = &after[..end];
        let Some(spec) = inner.strip_prefix("env:") else {
            return Err(format!(
                "\"${{{inner}}}\" is not a substitution cujo knows; use \"${{env:NAME}}\""
            ));
        };
        let (name, default) = match spec.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (spec, None),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("{name:?} is not a valid environment variable name"));
        }
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write ${{env:{name}:-default}} for a fallback)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, String> {
        Config::parse("cujo.yaml", yaml, &|name| {
            (name == "HONEYCOMB_API_KEY").then(|| "secret".to_string())
        })
        .map_err(|e| e.to_string())
    }

    /// A whole config printed with `{:?}` (a panic message, a debug log) shows no secret:
    /// header values, tokens, webhook URLs.
    #[test]
    fn debug_of_a_config_shows_no_secret() {
        let secrets = [
            "hc-key-d41e",
            "tenant-key-77aa",
            "tenant-token-0c3f",
            "metrics-key-9b10",
            "https://hooks.slack.com/services/T0/B0/secret-ff21",
            "webhook-header-5e5e",
            "receiver-token-1a2b",
        ];
        let yaml = format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    auth: {{ bearer_tokens: [\"{6}\"] }}\n\
             tenants:\n  - {{ name: a, bearer_tokens: [\"{2}\"], headers: {{ x-honeycomb-team: \"{1}\" }} }}\n\
             exporters:\n  otlp: {{ endpoint: \"https://api.honeycomb.io:443\", headers: {{ x-honeycomb-team: \"{0}\" }} }}\n\
             \x20 otlp_metrics: {{ endpoint: \"https://api.honeycomb.io:443\", headers: {{ x-honeycomb-team: \"{3}\" }} }}\n\
             cujs:\n  - {{ name: checkout, match: {{ span.name: \"POST /checkout\" }}, availability: {{ scope: root }}, objectives: [{{ sli: availability, target: 99%, window: 30d }}] }}\n\
             notifications:\n  webhooks:\n    - {{ name: slack, url: \"{4}\", headers: {{ x-token: \"{5}\" }} }}\n",
            secrets[0], secrets[1], secrets[2], secrets[3], secrets[4], secrets[5], secrets[6],
        );
        let config = parse(&yaml).expect("parses");
        let shown = format!("{config:?}");
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("x-honeycomb-team"), "{shown}");
    }

    /// Each section checks itself (beside its type, in its crate); the loader must call
    /// every section's check under that section's key, and name the file.
    #[test]
    fn each_section_is_checked_under_its_key() {
        for (yaml, want) in [
            (
                "slo: { max_dimension_value_bytes: 0 }\n",
                "cujo.yaml: slo.max_dimension_value_bytes: must be at least 1 byte",
            ),
            (
                "assembler: { decision_wait: 5s, trace_timeout: 1s }\n",
                "cujo.yaml: assembler.trace_timeout: must be at least assembler.decision_wait",
            ),
            (
                "assembler: { max_groups_per_trace: 0 }\n",
                "cujo.yaml: assembler.max_groups_per_trace: must be at least 1",
            ),
            (
                "propagate: { attributes: [\"a*b\"] }\n",
                "cujo.yaml: propagate.attributes[0]: \"a*b\": expected an attribute key",
            ),
            (
                "admission: { max_in_flight: 0 }\n",
                "cujo.yaml: admission.max_in_flight: must be greater than zero",
            ),
            (
                "admission: { shares: { receivers: 0.6, exporter: 60% } }\n",
                "cujo.yaml: admission.shares: the shares add up to 1.200",
            ),
            (
                "receivers:\n  otlp:\n    grpc: { endpoint: \"127.0.0.1:0\", idle_timeout: 0 }\n",
                "cujo.yaml: receivers.otlp.grpc.idle_timeout: must be greater than zero",
            ),
            (
                "receivers:\n  otlp:\n    http: { endpoint: \"127.0.0.1:0\", max_connections: 0 }\n",
                "cujo.yaml: receivers.otlp.http.max_connections: must be at least 1",
            ),
            (
                "exporters:\n  otlp: { endpoint: \"http://x:1\", concurrency: 0 }\n",
                "cujo.yaml: exporters.otlp.concurrency: must be at least 1",
            ),
            (
                "slo: { series_idle_ttl: 3600 }\n",
                "cujo.yaml: slo.series_idle_ttl: expected a duration with a unit",
            ),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.starts_with(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn embedded_default_parses() {
        let c = Config::load(None).expect("default parses");
        let otlp = c.receivers.otlp.expect("otlp receivers");
        assert_eq!(otlp.grpc.expect("grpc").endpoint.0, "127.0.0.1:4317");
        assert_eq!(otlp.http.expect("http").endpoint.0, "127.0.0.1:4318");
        assert!(c.exporters.otlp.is_none());
    }

    #[test]
    fn the_documented_contract_parses() {
        let c = parse(
            r#"
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:4317" }
    http: { endpoint: "127.0.0.1:4318" }
admission: { max_in_flight: 256MiB }
exporters:
  otlp:
    endpoint: "https://api.honeycomb.io:443"
    protocol: grpc
    headers: { x-honeycomb-team: "${env:HONEYCOMB_API_KEY}" }
    compression: gzip
    batch: { max_spans: 8192, timeout: 200ms }
    retry: { initial_interval: 1s, max_interval: 30s, max_elapsed: 5m }
    queue: { max_spans: 1000000 }
  prometheus: { endpoint: "127.0.0.1:9464" }
"#,
        )
        .expect("parses");
        assert_eq!(c.admission.max_in_flight, ByteSize(256 << 20));
        let otlp = c.exporters.otlp.expect("exporter");
        assert_eq!(otlp.headers["x-honeycomb-team"], "secret");
        assert_eq!(otlp.batch.timeout.0, Duration::from_millis(200));
        assert_eq!(otlp.retry.max_elapsed.0, Duration::from_secs(300));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = parse("receivers:\n  otlp:\n    grpc: { endpont: \"x\" }\n").expect_err("typo");
        assert!(
            e.starts_with("cujo.yaml: receivers.otlp.grpc.endpont: unknown field `endpont`"),
            "{e}"
        );
        let e =
            parse("exporters:\n  otlp:\n    endpoint: http://x:1\n    batch: { timeout: soon }\n")
                .expect_err("bad duration");
        assert!(
            e.starts_with("cujo.yaml: exporters.otlp.batch.timeout: expected a duration"),
            "{e}"
        );
        let e = parse("admission: { max_in_flight: lots }").expect_err("bad size");
        assert!(
            e.contains("admission.max_in_flight: expected a size"),
            "{e}"
        );
        let e =
            parse("exporters:\n  otlp:\n    endpoint: http://x:1\n    protocol: carrier-pigeon\n")
                .expect_err("bad enum");
        assert!(
            e.contains("exporters.otlp.protocol: unknown variant `carrier-pigeon`"),
            "{e}"
        );
        let e = parse("exporters:\n  otlp:\n    endpoint: api.honeycomb.io:443\n")
            .expect_err("no scheme");
        assert!(e.contains("exporters.otlp.endpoint: expected a URL"), "{e}");
        let e = parse("receivers:\n  otlp:\n    http: { endpoint: \"nowhere\" }\n")
            .expect_err("bad addr");
        assert!(
            e.contains("receivers.otlp.http.endpoint: expected a listen address"),
            "{e}"
        );
    }

    #[test]
    fn env_substitution_reports_missing_variables() {
        let e = parse(
            "exporters:\n  otlp:\n    endpoint: http://x:1\n    headers: { k: \"${env:NOPE}\" }\n",
        )
        .expect_err("unset");
        assert!(
            e.contains("exporters.otlp.headers.k: environment variable NOPE is not set"),
            "{e}"
        );
        let c = parse("exporters:\n  otlp:\n    endpoint: \"${env:NOPE:-http://fallback:4317}\"\n")
            .expect("default used");
        assert_eq!(
            c.exporters.otlp.expect("otlp").endpoint.as_deref(),
            Some("http://fallback:4317")
        );
    }

    #[test]
    fn the_assembler_runs_for_assembler_propagate_or_cujs() {
        assert!(!parse("{}").expect("empty").assembler_enabled());
        for yaml in [
            "assembler: { decision_wait: 2s }\n",
            "propagate: { attributes: [\"cuj.*\"] }\n",
            CUJ,
        ] {
            assert!(parse(yaml).expect(yaml).assembler_enabled(), "{yaml}");
        }
    }

    const CUJ: &str = "cujs:\n  - name: a\n    objectives: [ { sli: availability, target: 99.9%, window: 30d } ]\n";

    #[test]
    fn the_log_holds_the_largest_request_the_receivers_take() {
        let receivers = "receivers: { otlp: { grpc: { endpoint: \"127.0.0.1:0\" } } }\n";
        let ok =
            parse(&format!("{receivers}wal: {{ directory: /tmp/w }}\n")).expect("defaults fit");
        assert!(ok.wal.is_some());
        let e = parse(&format!(
            "{receivers}wal: {{ directory: /tmp/w, max_record_size: 1MiB, max_pending: 2MiB }}\n"
        ))
        .expect_err("a 16MiB request does not fit a 1MiB record");
        assert!(
            e.contains("wal.max_record_size: must hold the receivers' largest request"),
            "{e}"
        );
    }

    #[test]
    fn key_errors_say_where_and_never_name_a_rust_type() {
        let e = parse("receivers:\n  otlp:\n    grpc: 7\n").expect_err("grpc: 7");
        assert!(
            e.contains(
                "receivers.otlp.grpc: invalid type: integer `7`, expected a mapping of settings"
            ),
            "{e}"
        );
        assert!(e.contains("(line 3, column"), "{e}");
        assert!(!e.contains("GrpcReceiver"), "{e}");
        let e = parse("\nadmission: { max_in_flight: lots }\n").expect_err("lots");
        assert!(
            e.contains("admission.max_in_flight: expected a size"),
            "{e}"
        );
        assert!(e.contains("(line 2, column"), "{e}");
        assert_eq!(
            plain_words("invalid type: string \"many\", expected usize"),
            "invalid type: string \"many\", expected a whole number"
        );
        assert_eq!(plain_words("expected u64s"), "expected u64s");
        assert_eq!(
            plain_words("invalid type: map, expected enum Sli or expected struct A_b"),
            "invalid type: map, expected one of the documented values or expected a mapping of settings"
        );
    }

    #[test]
    fn a_fleet_alerts_from_prometheus_not_from_each_replica() {
        let fleet = "slo: { fleet: { prometheus: \"http://prometheus.monitoring:9090\" } }\n";
        let c = parse(&format!("{CUJ}{fleet}")).expect("fleet");
        assert_eq!(
            c.slo.fleet.map(|f| f.prometheus).as_deref(),
            Some("http://prometheus.monitoring:9090")
        );
        let e = parse(&format!(
            "{CUJ}{fleet}notifications:\n  webhooks:\n    - {{ name: ok, url: \"http://x:1\" }}\n"
        ))
        .expect_err("notifications in a fleet");
        assert!(e.contains("notifications: with slo.fleet"), "{e}");
        let e = parse(&format!(
            "{CUJ}slo: {{ fleet: {{ prometheus: \"prom:9090\" }} }}\n"
        ))
        .expect_err("not a URL");
        assert!(e.contains("slo.fleet.prometheus: expected the URL"), "{e}");
    }

    #[test]
    fn notifications_contract_parses() {
        let c = parse(&format!(
            r#"{CUJ}notifications:
  evaluation_interval: 30s
  webhooks:
    - name: slack-oncall
      url: "https://hooks.slack.com/services/${{env:HONEYCOMB_API_KEY}}"
      format: slack
      severities: [page]
      headers: {{ Authorization: "Bearer ${{env:HONEYCOMB_API_KEY}}" }}
      timeout: 5s
      max_retries: 5
    - name: pager
      url: http://127.0.0.1:9/alerts
"#
        ))
        .expect("parses");
        let n = c.notifications.expect("notifications");
        assert_eq!(n.evaluation_interval.0, Duration::from_secs(30));
        assert_eq!(n.resolve_delay.0, Duration::from_secs(300));
        let slack = &n.webhooks[0];
        assert_eq!(slack.url, "https://hooks.slack.com/services/secret");
        assert_eq!(slack.format, WebhookFormat::Slack);
        assert_eq!(slack.severities, vec![AlertSeverity::Page]);
        assert_eq!(slack.headers["Authorization"], "Bearer secret");
        let generic = &n.webhooks[1];
        assert_eq!(generic.format, WebhookFormat::Generic);
        assert_eq!(
            generic.severities,
            vec![AlertSeverity::Page, AlertSeverity::Ticket]
        );
        assert_eq!(
            (generic.timeout.0, generic.max_retries),
            (Duration::from_secs(5), 5)
        );
    }

    #[test]
    fn notification_errors_name_the_webhook_key() {
        let hook = |body: &str| {
            parse(&format!(
                "{CUJ}notifications:\n  webhooks:\n    - {{ name: ok, url: \"http://x:1\" }}\n    - {{ {body} }}\n"
            ))
            .expect_err(body)
        };
        let e = hook("name: b, url: \"hooks.slack.com/x\"");
        assert!(
            e.starts_with("cujo.yaml: notifications.webhooks[1].url: expected a URL"),
            "{e}"
        );
        let e = hook("name: b, url: \"http://x:1\", format: teams");
        assert!(
            e.contains("notifications.webhooks[1].format: unknown variant `teams`"),
            "{e}"
        );
        let e = hook("name: b, url: \"http://x:1\", severities: [sev1]");
        assert!(
            e.contains("notifications.webhooks[1].severities[0]: unknown variant"),
            "{e}"
        );
        let e = hook("name: b, url: \"http://x:1\", severities: []");
        assert!(
            e.contains("notifications.webhooks[1].severities: expected page"),
            "{e}"
        );
        let e = hook("name: ok, url: \"http://x:1\"");
        assert!(
            e.contains("notifications.webhooks[1].name: \"ok\" is used"),
            "{e}"
        );
        let e = hook("name: \"on call\", url: \"http://x:1\"");
        assert!(
            e.contains("notifications.webhooks[1].name: \"on call\""),
            "{e}"
        );
        let e = hook("name: b, url: \"http://x:1\", timeout: 0");
        assert!(
            e.contains("notifications.webhooks[1].timeout: must be greater"),
            "{e}"
        );
        let e = hook("name: b, url: \"http://x:1\", headers: { k: \"${env:NOPE}\" }");
        assert!(
            e.contains("notifications.webhooks[1].headers.k: environment variable NOPE"),
            "{e}"
        );
        let e = parse("notifications:\n  webhooks: [ { name: a, url: \"http://x:1\" } ]\n")
            .expect_err("no cujs");
        assert!(
            e.contains("notifications: alerts come from CUJ objectives"),
            "{e}"
        );
        let e = parse(&format!("{CUJ}notifications: {{ webhooks: [] }}\n")).expect_err("empty");
        assert!(
            e.contains("notifications.webhooks: expected at least one"),
            "{e}"
        );
    }

    #[test]
    fn otlp_metrics_contract_parses_and_errors_name_the_key() {
        let c = parse(
            r#"
exporters:
  otlp_metrics:
    endpoint: "https://api.honeycomb.io:443"
    protocol: http/protobuf
    headers: { x-honeycomb-team: "${env:HONEYCOMB_API_KEY}", x-honeycomb-dataset: cujo-slis }
    interval: 30s
    temporality: delta
    timeout: 5s
    compression: none
    tls: { ca_file: /etc/ssl/private-ca.pem }
"#,
        )
        .expect("parses");
        let m = c.exporters.otlp_metrics.expect("otlp_metrics");
        assert_eq!(m.headers["x-honeycomb-team"], "secret");
        assert_eq!(m.interval.0, Duration::from_secs(30));
        assert_eq!(m.temporality, Some(Temporality::Delta));
        assert_eq!(m.protocol, Some(Protocol::HttpProtobuf));
        let d = parse("exporters:\n  otlp_metrics: { endpoint: \"http://x:4317\" }\n")
            .expect("defaults");
        let d = d.exporters.otlp_metrics.expect("otlp_metrics");
        assert_eq!(d.interval.0, Duration::from_secs(60));
        let d = d.settings("exporters.otlp_metrics").expect("settings");
        assert_eq!(d.temporality, Temporality::Cumulative);
        assert_eq!(d.compression, Compression::Gzip);
        let e = parse(
            "exporters:\n  otlp_metrics: { endpoint: \"http://x:1\", temporality: sometimes }\n",
        )
        .expect_err("bad temporality");
        assert!(
            e.contains("exporters.otlp_metrics.temporality: unknown variant `sometimes`"),
            "{e}"
        );
        let e = parse("exporters:\n  otlp_metrics: { endpoint: \"x:1\" }\n").expect_err("url");
        assert!(
            e.contains("exporters.otlp_metrics.endpoint: expected a URL"),
            "{e}"
        );
        let e = parse("exporters:\n  otlp_metrics: { endpoint: \"http://x:1\", interval: 0 }\n")
            .expect_err("zero interval");
        assert!(
            e.contains("exporters.otlp_metrics.interval: must be at least 10ms"),
            "{e}"
        );
        let e = parse(
            "exporters:\n  otlp_metrics: { endpoint: \"http://x:1\", headers: { \"a b\": c } }\n",
        )
        .expect_err("header");
        assert!(
            e.contains("exporters.otlp_metrics.headers: \"a b\" is not a valid header name"),
            "{e}"
        );
    }

    #[test]
    fn auth_sections_parse_and_errors_name_the_key_never_the_token() {
        let env = |name: &str| match name {
            "CUJO_TOKEN_A" => Some("tok-a-1f2e3d".to_string()),
            "CUJO_TOKEN_B" => Some("tok-b-4c5b6a".to_string()),
            "CUJO_TOKEN_EMPTY" => Some(String::new()),
            "CUJO_TOKEN_SPACED" => Some("tok c-7d8e9f".to_string()),
            _ => None,
        };
        let parse = |yaml: &str| Config::parse("cujo.yaml", yaml, &env).map_err(|e| e.to_string());
        let c = parse(
            r#"
receivers:
  otlp:
    grpc: { endpoint: "127.0.0.1:4317" }
    auth: { bearer_tokens: ["${env:CUJO_TOKEN_A}", "${env:CUJO_TOKEN_B}"] }
exporters:
  prometheus:
    endpoint: "127.0.0.1:9464"
    auth: { bearer_tokens: ["${env:CUJO_TOKEN_A}"] }
    metrics_auth: { bearer_tokens: ["${env:CUJO_TOKEN_B}"] }
    routes: { status_page: false }
"#,
        )
        .expect("parses");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("tok-a-1f2e3d") && !shown.contains("tok-b-4c5b6a"),
            "{shown}"
        );
        let prom = c.exporters.prometheus.expect("prometheus");
        assert_eq!(
            prom.routes,
            AdminRoutes {
                status_page: false,
                api: true,
                metrics: true
            }
        );
        assert_eq!(
            prom.metrics_auth.expect("metrics_auth").bearer_tokens.len(),
            1
        );
        let open = parse("exporters:\n  prometheus: { endpoint: \"127.0.0.1:9464\" }\n")
            .expect("parses")
            .exporters
            .prometheus
            .expect("prometheus");
        assert!(open.auth.is_none() && open.metrics_auth.is_none());
        assert_eq!(open.routes, AdminRoutes::default());
        for (yaml, want) in [
            (
                "receivers:\n  otlp:\n    auth: { bearer_tokens: [\"${env:CUJO_TOKEN_A}\", \"${env:CUJO_TOKEN_EMPTY}\"] }\n",
                "cujo.yaml: receivers.otlp.auth.bearer_tokens[1]: is empty",
            ),
            (
                "receivers:\n  otlp:\n    auth: { bearer_tokens: [\"${env:CUJO_TOKEN_SPACED}\"] }\n",
                "cujo.yaml: receivers.otlp.auth.bearer_tokens[0]: contains whitespace",
            ),
            (
                "receivers:\n  otlp:\n    auth: \"${env:CUJO_TOKEN_A}\"\n",
                "cujo.yaml: receivers.otlp.auth: expected a mapping",
            ),
            (
                "receivers:\n  otlp:\n    auth: { bearer_tokens: \"${env:CUJO_TOKEN_A}\" }\n",
                "cujo.yaml: receivers.otlp.auth.bearer_tokens: expected a list of tokens",
            ),
            (
                "receivers:\n  otlp:\n    auth: { bearer_tokens: [\"${env:CUJO_TOKEN_A}\", 12345678] }\n",
                "cujo.yaml: receivers.otlp.auth.bearer_tokens[1]: expected a token as a string",
            ),
            (
                "receivers:\n  otlp:\n    auth: { bearer_tokens: [\"${env:CUJO_TOKEN_UNSET}\"] }\n",
                "cujo.yaml: receivers.otlp.auth.bearer_tokens[0]: environment variable CUJO_TOKEN_UNSET is not set",
            ),
            (
                "exporters:\n  prometheus: { endpoint: \"127.0.0.1:0\", auth: {} }\n",
                "cujo.yaml: exporters.prometheus.auth: expected bearer_tokens or token_files",
            ),
            (
                "exporters:\n  prometheus: { endpoint: \"127.0.0.1:0\", metrics_auth: { token_files: [/nonexistent/cujo-tokens] } }\n",
                "cujo.yaml: exporters.prometheus.metrics_auth.token_files[0]: cannot read /nonexistent/cujo-tokens",
            ),
            (
                "exporters:\n  prometheus: { endpoint: \"127.0.0.1:0\", routes: { page: false } }\n",
                "cujo.yaml: exporters.prometheus.routes.page: unknown field `page`",
            ),
            (
                "exporters:\n  otlp: { endpoint: \"${env:CUJO_TOKEN_A}\" }\n",
                "cujo.yaml: exporters.otlp.endpoint: expected a URL",
            ),
            (
                "exporters:\n  otlp: { endpoint: \"http://x:1\", headers: { x-key: \"${env:CUJO_TOKEN_A\" } }\n",
                "cujo.yaml: exporters.otlp.headers.x-key: unterminated",
            ),
        ] {
            let e = parse(yaml).expect_err(yaml);
            assert!(e.starts_with(want), "{yaml}: {e}");
            for secret in ["tok-a-1f2e3d", "1f2e3d", "7d8e9f", "12345678"] {
                assert!(!e.contains(secret), "{yaml}: {e}");
            }
        }
    }
}
