//! What opening, appending and replaying can fail with. Each error names the path or
//! segment and what was wrong with it.

use std::io;
use std::path::PathBuf;

/// Opening or replaying the log failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal directory {path}: {what}: {source}")]
    Directory {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("wal directory {path}: is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "wal directory {path}: locked by another process (or another open log in this one); two cujo processes cannot share a write-ahead log"
    )]
    Locked { path: PathBuf },
    #[error("wal segment {path}: {what}: {source}")]
    Segment {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("wal: could not start the writer thread: {0}")]
    Thread(#[source] io::Error),
}

/// An append was refused; nothing of it will be replayed. Every variant but `TooLarge`
/// is retryable (`UNAVAILABLE` / HTTP 503): the log is full, busy or failing now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error("wal full: {live} bytes live of max_size {max}, the record needs {need} more")]
    Full { live: u64, max: u64, need: u64 },
    #[error("wal busy: {pending} bytes already wait for the writer (max_pending {max})")]
    Busy { pending: u64, max: u64 },
    #[error("wal record of {len} bytes is larger than max_record_size ({max} bytes)")]
    TooLarge { len: usize, max: usize },
    #[error("wal segment {segment}: {what}: {kind}: {message}")]
    Io {
        segment: PathBuf,
        what: &'static str,
        kind: io::ErrorKind,
        message: String,
    },
    #[error("wal closed: the writer has stopped")]
    Closed,
}

impl AppendError {
    /// Whether a client should send the same data again later (`UNAVAILABLE`, 503).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, AppendError::TooLarge { .. })
    }

    pub(crate) fn io(segment: PathBuf, what: &'static str, e: &io::Error) -> Self {
        AppendError::Io {
            segment,
            what,
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}
