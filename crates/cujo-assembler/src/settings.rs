//! `assembler:` and `propagate:` settings, resolved to plain values.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AssemblerSettings {
    /// How long after its root arrives a trace waits for stragglers.
    pub decision_wait: Duration,
    /// How long after its first span a trace without a root is held.
    pub trace_timeout: Duration,
    /// A trace holding more spans is released early, in parts.
    pub max_spans_per_trace: usize,
    /// Past this many held spans, the oldest traces are released early.
    pub max_buffered_spans: usize,
    /// Past this many held bytes (encoded spans), the oldest traces are released early; set
    /// from the admission budget so held traces cannot starve the receivers.
    pub max_buffered_bytes: usize,
    /// How long a released trace's root stays known for late and linked spans.
    pub root_cache_ttl: Duration,
    pub root_cache_max_traces: usize,
    /// How many span links are followed to find an origin root.
    pub max_link_hops: u32,
    pub propagate: PropagateSettings,
}

impl Default for AssemblerSettings {
    fn default() -> Self {
        Self {
            decision_wait: Duration::from_secs(2),
            trace_timeout: Duration::from_secs(30),
            max_spans_per_trace: 10_000,
            max_buffered_spans: 2_000_000,
            max_buffered_bytes: usize::MAX,
            root_cache_ttl: Duration::from_secs(600),
            root_cache_max_traces: 1_000_000,
            max_link_hops: 3,
            propagate: PropagateSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PropagateSettings {
    /// Exact keys, or `prefix.*` globs.
    pub attributes: Vec<String>,
    /// Written before each propagated key (`root.` writes `root.user.tier`).
    pub prefix: String,
    /// Replace a span's own attribute of the same key.
    pub overwrite: bool,
}

impl PropagateSettings {
    /// Whether a span attribute `key` would collide with a propagated attribute as written
    /// (`prefix` + a selected key).
    pub fn collides(&self, key: &[u8]) -> bool {
        let Some(k) = key.strip_prefix(self.prefix.as_bytes()) else {
            return false;
        };
        self.attributes
            .iter()
            .any(|p| match p.as_bytes().strip_suffix(b"*") {
                Some(prefix) => k.starts_with(prefix),
                None => p.as_bytes() == k,
            })
    }

    /// A quick filter for [`PropagateSettings::collides`]: the first byte of every key that
    /// could collide (most attribute keys are rejected by one lookup).
    pub fn first_bytes(&self) -> [bool; 256] {
        let mut table = [false; 256];
        for p in &self.attributes {
            let written = format!("{}{}", self.prefix, p);
            match written.as_bytes().first() {
                Some(&b) if b != b'*' => table[b as usize] = true,
                // An empty prefix with a bare "*" glob selects everything.
                _ => return [true; 256],
            }
        }
        table
    }

    /// Whether a root attribute with `key` is propagated.
    pub fn selects(&self, key: &str) -> bool {
        self.attributes.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => p == key,
        })
    }
}
