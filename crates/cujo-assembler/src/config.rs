//! `assembler:` and `propagate:`: the sections as written, their `validate`, and the
//! [`AssemblerSettings`] they resolve into.

use std::time::Duration;

use cujo_config::{ByteSize, HumanDuration, KeyError, fail};
use serde::Deserialize;

use crate::settings::{AssemblerSettings, PropagateSettings};

/// `assembler:`: how long traces are held, how much of them, and the root cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssemblerConfig {
    #[serde(default = "default_decision_wait")]
    pub decision_wait: HumanDuration,
    #[serde(default = "default_trace_timeout")]
    pub trace_timeout: HumanDuration,
    #[serde(default = "default_max_spans_per_trace")]
    pub max_spans_per_trace: usize,
    /// A trace whose spans arrive under more distinct resource/scope pairs is released early,
    /// in parts.
    #[serde(default = "default_max_groups_per_trace")]
    pub max_groups_per_trace: usize,
    #[serde(default = "default_max_buffered_spans")]
    pub max_buffered_spans: usize,
    #[serde(default)]
    pub root_cache: RootCacheConfig,
    #[serde(default = "default_max_link_hops")]
    pub max_link_hops: u32,
    /// Assembler shards (one task each, traces split by id); 0 = one per two CPU cores.
    #[serde(default)]
    pub shards: usize,
    /// What to do with a trace whose span with a remote parent (where the trace entered
    /// this process) arrives before any root: `hold` it for its root (a gateway, which
    /// sees every process's spans), or `release` it at once, unenriched (a sidecar, whose
    /// pod does not own the root: the gateway enriches it).
    #[serde(default)]
    pub remote_parent: RemoteParent,
    /// What waits `decision_wait` once a trace's root has arrived: only the `root` (the
    /// trace's other spans go on at once, enriched), or the whole `trace`.
    #[serde(default)]
    pub hold: Hold,
}

/// `assembler.hold`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Hold {
    /// The root waits for stragglers (its `cujo.trace.*` summary counts them); the trace's
    /// other spans go as soon as the root is there (in a trace with a consumer, as soon as
    /// their path to the root is), unless a span link or an SLI reading every span needs
    /// the trace whole.
    #[default]
    Root,
    /// Every span waits with the root.
    Trace,
}

/// `assembler.remote_parent`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RemoteParent {
    #[default]
    Hold,
    Release,
}

impl Default for AssemblerConfig {
    fn default() -> Self {
        Self {
            decision_wait: default_decision_wait(),
            trace_timeout: default_trace_timeout(),
            max_spans_per_trace: default_max_spans_per_trace(),
            max_groups_per_trace: default_max_groups_per_trace(),
            max_buffered_spans: default_max_buffered_spans(),
            root_cache: RootCacheConfig::default(),
            max_link_hops: default_max_link_hops(),
            shards: 0,
            remote_parent: RemoteParent::Hold,
            hold: Hold::Root,
        }
    }
}

impl AssemblerConfig {
    /// Caps of at least one, and a timeout no shorter than the wait after a root. `key` is
    /// where the section is (`assembler`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        let err = |k: &str, d: String| fail(format!("{key}.{k}"), d);
        if self.max_spans_per_trace == 0 {
            return err("max_spans_per_trace", "must be at least 1".into());
        }
        if self.max_buffered_spans == 0 {
            return err("max_buffered_spans", "must be at least 1".into());
        }
        if self.trace_timeout.0 < self.decision_wait.0 {
            return err(
                "trace_timeout",
                format!(
                    "must be at least {key}.decision_wait ({:?})",
                    self.decision_wait.0
                ),
            );
        }
        if self.max_groups_per_trace == 0 {
            return err("max_groups_per_trace", "must be at least 1".into());
        }
        Ok(())
    }

    /// The settings of all shards together: this section with `propagate`, the held spans
    /// within `max_memory_bytes` and the root cache within `root_cache_max_bytes` (their
    /// shares of the memory budget).
    pub fn settings(
        &self,
        propagate: PropagateSettings,
        max_memory_bytes: usize,
        root_cache_max_bytes: usize,
    ) -> AssemblerSettings {
        AssemblerSettings {
            decision_wait: self.decision_wait.0,
            trace_timeout: self.trace_timeout.0,
            max_spans_per_trace: self.max_spans_per_trace,
            max_groups_per_trace: self.max_groups_per_trace,
            max_buffered_spans: self.max_buffered_spans,
            max_memory_bytes,
            root_cache_ttl: self.root_cache.ttl.0,
            root_cache_max_traces: self.root_cache.max_traces,
            root_cache_max_bytes,
            max_link_hops: self.max_link_hops,
            release_on_remote_parent: self.remote_parent == RemoteParent::Release,
            stream_after_root: self.hold == Hold::Root,
            propagate,
        }
    }
}

fn default_decision_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

fn default_trace_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_max_spans_per_trace() -> usize {
    10_000
}

fn default_max_groups_per_trace() -> usize {
    64
}

fn default_max_buffered_spans() -> usize {
    2_000_000
}

fn default_max_link_hops() -> u32 {
    3
}

/// `assembler.root_cache`: how long, and how many, released traces' roots stay known.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootCacheConfig {
    #[serde(default = "default_root_cache_ttl")]
    pub ttl: HumanDuration,
    #[serde(default = "default_root_cache_max")]
    pub max_traces: usize,
}

impl Default for RootCacheConfig {
    fn default() -> Self {
        Self {
            ttl: default_root_cache_ttl(),
            max_traces: default_root_cache_max(),
        }
    }
}

fn default_root_cache_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_root_cache_max() -> usize {
    1_000_000
}

/// `propagate:`: which root attributes are written onto every span, how, and their caps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropagateConfig {
    /// Root attributes to write on every descendant: exact keys or `prefix.*` globs.
    #[serde(default = "default_propagated")]
    pub attributes: Vec<String>,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub overwrite: bool,
    /// A propagated string value is cut to this many bytes; a longer value of another type
    /// is not propagated.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: ByteSize,
    /// The propagated attributes of one trace take at most this many bytes, encoded.
    #[serde(default = "default_max_set_bytes")]
    pub max_set_bytes: ByteSize,
    /// `cujo.root.name` and `cujo.root.service.name` are cut to this many bytes.
    #[serde(default = "default_max_name_bytes")]
    pub max_name_bytes: ByteSize,
}

impl Default for PropagateConfig {
    fn default() -> Self {
        Self {
            attributes: default_propagated(),
            prefix: String::new(),
            overwrite: false,
            max_value_bytes: default_max_value_bytes(),
            max_set_bytes: default_max_set_bytes(),
            max_name_bytes: default_max_name_bytes(),
        }
    }
}

impl PropagateConfig {
    /// Each attribute is an exact key or a prefix glob (`*` only at the end). `key` is where
    /// the section is (`propagate`).
    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        for (i, pattern) in self.attributes.iter().enumerate() {
            let star = pattern.find('*');
            if pattern.is_empty() || star.is_some_and(|at| at != pattern.len() - 1) {
                return fail(
                    format!("{key}.attributes[{i}]"),
                    format!(
                        "{pattern:?}: expected an attribute key like \"user.tier\" or a prefix glob like \"cuj.*\""
                    ),
                );
            }
        }
        Ok(())
    }

    /// The section as the assembler takes it.
    pub fn settings(&self) -> PropagateSettings {
        PropagateSettings {
            attributes: self.attributes.clone(),
            prefix: self.prefix.clone(),
            overwrite: self.overwrite,
            max_value_bytes: self.max_value_bytes.0 as usize,
            max_set_bytes: self.max_set_bytes.0 as usize,
            max_name_bytes: self.max_name_bytes.0 as usize,
        }
    }
}

fn default_max_value_bytes() -> ByteSize {
    ByteSize(PropagateSettings::default().max_value_bytes as u64)
}

fn default_max_set_bytes() -> ByteSize {
    ByteSize(PropagateSettings::default().max_set_bytes as u64)
}

fn default_max_name_bytes() -> ByteSize {
    ByteSize(PropagateSettings::default().max_name_bytes as u64)
}

fn default_propagated() -> Vec<String> {
    ["cuj.*", "user.tier", "tenant.id", "graphql.operation.name"]
        .map(String::from)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assembler(yaml: &str) -> Result<AssemblerConfig, String> {
        let c: AssemblerConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("assembler").map_err(|e| e.to_string())?;
        Ok(c)
    }

    fn propagate(yaml: &str) -> Result<PropagateConfig, String> {
        let c: PropagateConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        c.validate("propagate").map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn the_documented_sections_parse_into_settings() {
        let a = assembler(
            "decision_wait: 2s\ntrace_timeout: 30s\nmax_spans_per_trace: 10000\nmax_buffered_spans: 2000000\nroot_cache: { ttl: 10m, max_traces: 1000000 }\nmax_link_hops: 3\n",
        )
        .expect("parses");
        assert_eq!(a.root_cache.ttl.0, Duration::from_secs(600));
        let p = propagate(
            "attributes: [\"cuj.*\", \"user.tier\", \"tenant.id\", \"graphql.operation.name\"]\nprefix: \"\"\noverwrite: false\n",
        )
        .expect("parses");
        let s = a.settings(p.settings(), 1 << 20, 1 << 10);
        assert_eq!(s.decision_wait, Duration::from_secs(2));
        assert_eq!(s.root_cache_ttl, Duration::from_secs(600));
        assert_eq!(
            (s.max_memory_bytes, s.root_cache_max_bytes),
            (1 << 20, 1 << 10)
        );
        assert!(s.propagate.selects("cuj.name") && !s.propagate.selects("user.id"));
        assert_eq!(s.propagate.max_value_bytes, 256);
    }

    #[test]
    fn defaults_are_the_assemblers() {
        let a = assembler("{}").expect("empty section");
        let p = propagate("{}").expect("empty section");
        let (s, d) = (a.settings(p.settings(), 0, 0), AssemblerSettings::default());
        assert_eq!(
            (s.decision_wait, s.trace_timeout, s.root_cache_ttl),
            (d.decision_wait, d.trace_timeout, d.root_cache_ttl)
        );
        assert_eq!(
            (
                s.max_spans_per_trace,
                s.max_groups_per_trace,
                s.max_buffered_spans,
                s.root_cache_max_traces,
                s.max_link_hops
            ),
            (
                d.max_spans_per_trace,
                d.max_groups_per_trace,
                d.max_buffered_spans,
                d.root_cache_max_traces,
                d.max_link_hops
            )
        );
        assert_eq!(
            (
                s.propagate.max_value_bytes,
                s.propagate.max_set_bytes,
                s.propagate.max_name_bytes
            ),
            (
                d.propagate.max_value_bytes,
                d.propagate.max_set_bytes,
                d.propagate.max_name_bytes
            )
        );
        assert_eq!(p.attributes.len(), 4);
    }

    #[test]
    fn errors_name_the_key() {
        let e = propagate("attributes: [\"a*b\"]").expect_err("bad glob");
        assert!(e.starts_with("propagate.attributes[0]: \"a*b\""), "{e}");
        let e = propagate("attributes: [\"\"]").expect_err("empty");
        assert!(e.starts_with("propagate.attributes[0]"), "{e}");
        let e = assembler("{ decision_wait: 5s, trace_timeout: 1s }").expect_err("order");
        assert!(
            e.starts_with("assembler.trace_timeout: must be at least assembler.decision_wait (5s)"),
            "{e}"
        );
        for field in [
            "max_spans_per_trace",
            "max_buffered_spans",
            "max_groups_per_trace",
        ] {
            let e = assembler(&format!("{{ {field}: 0 }}")).expect_err(field);
            assert_eq!(e, format!("assembler.{field}: must be at least 1"));
        }
    }
}
