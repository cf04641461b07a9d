//! Token files: one token a line, blank lines and `#` comments ignored, re-read when they
//! change. A file is looked at (one `stat`) at most once a [`CHECK_EVERY`]; it is read again
//! only when its modification time, size or inode changed — a Kubernetes Secret volume swaps
//! a symlink, an editor renames over the file, `echo > file` rewrites it in place.
//!
//! What a file held last time it was good stays valid while it is unreadable, invalid or
//! empty (a writer that truncates before writing must not lock every client out), and that
//! is logged once per episode, naming the file and never a token.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::Digest;
use super::config::{Token, problem};

/// How often token files are looked at (on the first request after this has passed).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A token file holds tokens, not a database: larger ones are refused unread.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    /// Device and inode on Unix: a file renamed over the old one is another file even when
    /// its time and size match.
    identity: (u64, u64),
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let identity = {
        use std::os::unix::fs::MetadataExt as _;
        (meta.dev(), meta.ino())
    };
    #[cfg(not(unix))]
    let identity = (0, 0);
    Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        identity,
    }
}

/// One token file and the digests of its tokens as last read well.
pub(super) struct TokenFile {
    path: PathBuf,
    /// The version the digests were read from; `None` forces a read at the next look.
    seen: Option<Stamp>,
    pub(super) digests: Vec<Digest>,
    /// Set while the file cannot be used, so the problem is logged once, not every second.
    failing: bool,
}

impl TokenFile {
    /// Reads `path` for the first time: any problem is an error (a config error at start).
    pub(super) fn open(path: &Path) -> Result<Self, String> {
        let (stamp, tokens) = read(path)?;
        Ok(TokenFile {
            path: path.to_path_buf(),
            seen: Some(stamp),
            digests: tokens.iter().map(super::digest).collect(),
            failing: false,
        })
    }

    /// Looks at the file again; re-reads it if it changed. `true` when its tokens changed.
    /// `key` names the section in log lines.
    pub(super) fn refresh(&mut self, key: &str) -> bool {
        let current = std::fs::metadata(&self.path).map(|m| stamp(&m));
        if let (Ok(now), Some(seen)) = (&current, &self.seen)
            && now == seen
        {
            return false;
        }
        match read(&self.path) {
            Ok((stamp, tokens)) => {
                let digests: Vec<Digest> = tokens.iter().map(super::digest).collect();
                let changed = digests != self.digests;
                if self.failing {
                    tracing::info!(
                        key,
                        file = %self.path.display(),
                        tokens = digests.len(),
                        "token file is usable again"
                    );
                } else if changed {
                    tracing::info!(
                        key,
                        file = %self.path.display(),
                        tokens = digests.len(),
                        "token file changed: its tokens are now the valid ones"
                    );
                }
                self.seen = Some(stamp);
                self.digests = digests;
                self.failing = false;
                changed
            }
            Err(problem) => {
                if !self.failing {
                    tracing::warn!(
                        key,
                        problem = %problem,
                        kept = self.digests.len(),
                        "token file cannot be used: its last good tokens stay valid"
                    );
                    self.failing = true;
                }
                // Looked at again next time, whatever its stamp.
                self.seen = None;
                false
            }
        }
    }
}

/// The tokens of the file at `path` and the version they were read from, or why the file
/// cannot be used: the path, and the line for a bad token (never the token).
fn read(path: &Path) -> Result<(Stamp, Vec<Token>), String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read {shown}: {e}");
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "{shown} is not a regular file (a token file holds tokens, one a line)"
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{shown} is larger than {} KiB (a token file holds tokens, one a line)",
            MAX_FILE_BYTES / 1024
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut text))
        .map_err(cannot)?;
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(p) = problem(line) {
            return Err(format!("{shown} line {}: the token {p}", n + 1));
        }
        tokens.push(Token::new(line));
    }
    if tokens.is_empty() {
        return Err(format!(
            "{shown} holds no token (one a line; blank lines and # comments are ignored)"
        ));
    }
    Ok((stamp(&meta), tokens))
}
