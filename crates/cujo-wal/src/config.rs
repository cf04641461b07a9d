//! `wal:`: the section as written, its `validate`, and the [`WalSettings`] it resolves into.

use std::path::PathBuf;
use std::time::Duration;

use cujo_config::{ByteSize, HumanDuration, KeyError, fail};
use serde::Deserialize;

use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::replay::FORMAT_MAX_RECORD;

/// `wal:` — where the log lives and how much of the disk it may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// Created if missing; must be a writable directory no other process is using.
    pub directory: PathBuf,
    /// Appends are refused (retryably) once the live segment files would pass this (a new
    /// segment's 16-byte header may pass it). Segments found at open count too.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// A segment is sealed and a new one started when the next record would pass this;
    /// a sealed segment is deleted once every record in it has been exported.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// How long the writer gathers appends before one fdatasync covers them all; `0ms`
    /// syncs as soon as anything is pending. Every append waits up to this long.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: HumanDuration,
    /// The largest payload one append may carry (at least the receivers' largest body).
    #[serde(default = "default_max_record_size")]
    pub max_record_size: ByteSize,
    /// Appends waiting for the writer, in bytes; past this, appends are refused as busy
    /// rather than queued in memory.
    #[serde(default = "default_max_pending")]
    pub max_pending: ByteSize,
}

fn default_max_size() -> ByteSize {
    ByteSize(4 << 30)
}
fn default_segment_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_commit_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(5))
}
fn default_max_record_size() -> ByteSize {
    // The receivers' default largest request (16 MiB, decoded) and who sent it.
    ByteSize(17 << 20)
}
fn default_max_pending() -> ByteSize {
    ByteSize(64 << 20)
}

/// The longest `commit_interval` accepted: every acknowledgement waits for it.
pub const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

impl WalConfig {
    /// A section with the defaults and this directory.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
            max_size: default_max_size(),
            segment_size: default_segment_size(),
            commit_interval: default_commit_interval(),
            max_record_size: default_max_record_size(),
            max_pending: default_max_pending(),
        }
    }

    pub fn validate(&self, key: &str) -> Result<(), KeyError> {
        let err = |k: &str, d: String| fail(format!("{key}.{k}"), d);
        if self.directory.as_os_str().is_empty() {
            return err("directory", "must name a directory".into());
        }
        for (name, value) in [
            ("max_size", self.max_size),
            ("segment_size", self.segment_size),
            ("max_record_size", self.max_record_size),
            ("max_pending", self.max_pending),
        ] {
            if value.0 == 0 {
                return err(name, "must be more than 0 bytes".into());
            }
        }
        let overhead = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN;
        if self.segment_size.0 > self.max_size.0 {
            return err(
                "segment_size",
                format!(
                    "must be at most {key}.max_size ({} bytes), found {} bytes",
                    self.max_size.0, self.segment_size.0
                ),
            );
        }
        if self.max_record_size.0 > FORMAT_MAX_RECORD {
            return err(
                "max_record_size",
                format!(
                    "must be at most 1GiB, found {} bytes",
                    self.max_record_size.0
                ),
            );
        }
        if self.max_record_size.0 + overhead > self.segment_size.0 {
            return err(
                "max_record_size",
                format!(
                    "a record must fit in one segment: at most {key}.segment_size less {overhead} bytes ({} bytes), found {} bytes",
                    self.segment_size.0.saturating_sub(overhead),
                    self.max_record_size.0
                ),
            );
        }
        if self.max_pending.0 < self.max_record_size.0 {
            return err(
                "max_pending",
                format!(
                    "must hold at least one record of {key}.max_record_size ({} bytes), found {} bytes",
                    self.max_record_size.0, self.max_pending.0
                ),
            );
        }
        if self.commit_interval.0 > MAX_COMMIT_INTERVAL {
            return err(
                "commit_interval",
                format!(
                    "every acknowledgement waits for it: at most 1s, found {:?}",
                    self.commit_interval.0
                ),
            );
        }
        Ok(())
    }

    /// The section as [`crate::Wal::open`] takes it (call [`validate`](Self::validate) first).
    pub fn settings(&self) -> WalSettings {
        WalSettings {
            directory: self.directory.clone(),
            max_size: self.max_size.0,
            segment_size: self.segment_size.0,
            commit_interval: self.commit_interval.0,
            max_record_size: self.max_record_size.0 as usize,
            max_pending: self.max_pending.0,
        }
    }
}

/// What the log runs with: the validated `wal:` section in plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalSettings {
    pub directory: PathBuf,
    /// Bytes of live segment files (headers included) past which appends are refused.
    pub max_size: u64,
    /// Bytes a segment file grows to before the next one is started.
    pub segment_size: u64,
    pub commit_interval: Duration,
    /// Largest payload in bytes.
    pub max_record_size: usize,
    /// Bytes of appends waiting for the writer before appends are refused as busy.
    pub max_pending: u64,
}

impl WalSettings {
    /// The defaults of `wal:` with this directory.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        WalConfig::new(directory).settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<WalConfig, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(yaml)
    }

    #[test]
    fn defaults_follow_the_issue() {
        let c = parse("directory: /var/lib/cujo/wal\n").expect("parses");
        assert!(c.validate("wal").is_ok());
        let s = c.settings();
        assert_eq!(s.max_size, 4 << 30);
        assert_eq!(s.segment_size, 64 << 20);
        assert_eq!(s.commit_interval, Duration::from_millis(5));
    }

    #[test]
    fn written_values_are_taken() {
        let c = parse(
            "directory: /d\nmax_size: 1GiB\nsegment_size: 8MiB\ncommit_interval: 0ms\nmax_record_size: 1MiB\nmax_pending: 2MiB\n",
        )
        .expect("parses");
        assert!(c.validate("wal").is_ok());
        let s = c.settings();
        assert_eq!(s.max_size, 1 << 30);
        assert_eq!(s.segment_size, 8 << 20);
        assert_eq!(s.commit_interval, Duration::ZERO);
        assert_eq!(s.max_record_size, 1 << 20);
        assert_eq!(s.max_pending, 2 << 20);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("directory: /d\nmax_sise: 1GiB\n").expect_err("unknown key");
        assert!(e.to_string().contains("max_sise"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("max_size: 0", "wal.max_size"),
            ("segment_size: 0", "wal.segment_size"),
            ("max_size: 1MiB\nsegment_size: 2MiB", "wal.segment_size"),
            (
                "segment_size: 1MiB\nmax_record_size: 1MiB",
                "wal.max_record_size",
            ),
            ("max_pending: 1MiB", "wal.max_pending"),
            ("commit_interval: 2s", "wal.commit_interval"),
        ];
        for (yaml, key) in cases {
            let c = parse(&format!("directory: /d\n{yaml}\n")).expect("parses");
            let e = c.validate("wal").expect_err(yaml);
            assert_eq!(e.key, key, "{yaml}: {e}");
        }
    }
}
