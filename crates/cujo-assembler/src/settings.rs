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
    /// A trace whose spans arrived under more distinct resource/scope pairs is released
    /// early, in parts (each pair held is a copy of its resource and scope).
    pub max_groups_per_trace: usize,
    /// Past this many held spans, traces are released early: those with their root first
    /// ([`crate::ReleaseReason::RootEarly`]), then the oldest.
    pub max_buffered_spans: usize,
    /// Past this much memory for held spans and their indexes (see
    /// [`crate::Assembler::memory_bytes`]), traces are released early as past
    /// `max_buffered_spans`: the
    /// assembler's share of the memory budget.
    pub max_memory_bytes: usize,
    /// How long a released trace's root stays known for late and linked spans.
    pub root_cache_ttl: Duration,
    pub root_cache_max_traces: usize,
    /// Memory the root cache may hold (entries and their origins), all shards together: the
    /// root cache's share of the memory budget.
    pub root_cache_max_bytes: usize,
    /// How many span links are followed to find an origin root.
    pub max_link_hops: u32,
    /// Release a trace's held spans as soon as its span with a remote parent arrives (a
    /// sidecar that does not own the trace's root), rather than at `trace_timeout`.
    pub release_on_remote_parent: bool,
    /// Once a trace's root has arrived, write its other spans out at once and hold only the
    /// root for `decision_wait` (`assembler.hold: root`), where nothing needs the trace
    /// whole.
    pub stream_after_root: bool,
    pub propagate: PropagateSettings,
}

impl Default for AssemblerSettings {
    fn default() -> Self {
        Self {
            decision_wait: Duration::from_secs(2),
            trace_timeout: Duration::from_secs(30),
            max_spans_per_trace: 10_000,
            max_groups_per_trace: 64,
            max_buffered_spans: 2_000_000,
            max_memory_bytes: usize::MAX,
            root_cache_ttl: Duration::from_secs(600),
            root_cache_max_traces: 1_000_000,
            root_cache_max_bytes: usize::MAX,
            max_link_hops: 3,
            release_on_remote_parent: false,
            stream_after_root: true,
            propagate: PropagateSettings::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PropagateSettings {
    /// Exact keys, or `prefix.*` globs.
    pub attributes: Vec<String>,
    /// Written before each propagated key (`root.` writes `root.user.tier`).
    pub prefix: String,
    /// Replace a span's own attribute of the same key.
    pub overwrite: bool,
    /// A propagated string value is cut to this many bytes (on a character boundary); a
    /// longer value of another type (array, map, bytes) is not propagated.
    pub max_value_bytes: usize,
    /// The propagated attributes of one trace, encoded, take at most this many bytes;
    /// attributes past it are not propagated. With `max_spans_per_trace`, this bounds what
    /// propagation can add to a trace, whatever the root carries.
    pub max_set_bytes: usize,
    /// `cujo.root.name` and `cujo.root.service.name` are cut to this many bytes.
    pub max_name_bytes: usize,
}

impl Default for PropagateSettings {
    fn default() -> Self {
        Self {
            attributes: Vec::new(),
            prefix: String::new(),
            overwrite: false,
            max_value_bytes: 256,
            max_set_bytes: 1024,
            max_name_bytes: 256,
        }
    }
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

    /// A quick filter for [`PropagateSettings::collides`], by a key's first byte and length
    /// (most attribute keys are rejected by one lookup).
    pub(crate) fn collide_filter(&self) -> crate::keys::KeyFilter {
        let mut filter = crate::keys::KeyFilter::empty();
        for p in &self.attributes {
            let written = format!("{}{}", self.prefix, p);
            match written.strip_suffix('*') {
                Some(prefix) => filter.add_prefix(prefix.as_bytes()),
                None => filter.add_exact(written.as_bytes()),
            }
        }
        filter
    }

    /// A quick filter for [`PropagateSettings::selects`], by a key's first byte and length.
    pub(crate) fn select_filter(&self) -> crate::keys::KeyFilter {
        let mut filter = crate::keys::KeyFilter::empty();
        for p in &self.attributes {
            match p.strip_suffix('*') {
                Some(prefix) => filter.add_prefix(prefix.as_bytes()),
                None => filter.add_exact(p.as_bytes()),
            }
        }
        filter
    }

    /// Whether a root attribute with `key` is propagated.
    pub fn selects(&self, key: &str) -> bool {
        self.attributes.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => p == key,
        })
    }
}
