//! Bearer-token authentication, for the receivers (`receivers.otlp.auth`) and the admin
//! listener (`exporters.prometheus.auth`, `exporters.prometheus.metrics_auth`).
//!
//! A request is checked on its headers alone, before anything reads its body: a client
//! without a valid token is answered (HTTP 401 with `WWW-Authenticate: Bearer`, gRPC
//! `UNAUTHENTICATED`) without taking memory from the budget or inflating anything.
//!
//! Tokens are kept as SHA-256 digests. The presented token's digest is compared with every
//! valid one in constant time, with no early exit, so how long a check takes does not depend
//! on how much of a token was right. Tokens never reach a log line, an error or an answer.
//!
//! # Layout
//! - [`config`]: `auth:` as written ([`AuthConfig`]) and [`Token`], whose `Debug` is
//!   `<redacted>`.
//! - [`files`]: token files, re-read when they change; the last good tokens stay valid
//!   while a file cannot be used.
//! - this module: [`BearerAuth`], the check, and [`require`], the guard the admin
//!   listener puts in front of its routes.

pub mod config;
pub mod files;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cujo_config::KeyError;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq as _;

pub use config::{AuthConfig, Token};
use files::TokenFile;

use crate::receiver::grpc::grpc_error;
use crate::rpc::{RpcStatus, code};

/// SHA-256 of a token.
pub(crate) type Digest = [u8; 32];

fn digest(token: &Token) -> Digest {
    digest_bytes(token.as_bytes())
}

fn digest_bytes(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Why a request was refused. The messages are the answer's body: they say what was wrong,
/// never what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization: Bearer <token>` header.
    Missing,
    /// A bearer token that is not one of the valid ones.
    Invalid,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "missing bearer token",
            Refusal::Invalid => "invalid bearer token",
        }
    }
}

/// The tokens a listener accepts, shared by its connections (cloning shares them).
#[derive(Clone)]
pub struct BearerAuth(Arc<Guard>);

struct Guard {
    /// Where the section is (`receivers.otlp.auth`), for log lines.
    key: String,
    /// Digests of the tokens written in the config.
    inline: Vec<Digest>,
    /// Token files with the digests each held last time it was good.
    files: Mutex<Vec<TokenFile>>,
    /// Every valid digest (inline and from files), rebuilt when a file changes; a check
    /// clones the `Arc` and compares without holding the lock.
    valid: RwLock<Arc<Vec<Digest>>>,
    /// Whether there are files to look at.
    watching: bool,
    /// When the files are next looked at, in milliseconds since `started`.
    next_look_ms: AtomicU64,
    started: Instant,
    /// Requests refused, for the admin listener's metrics.
    refused: AtomicU64,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("key", &self.0.key)
            .field("tokens", &"<redacted>")
            .finish()
    }
}

impl BearerAuth {
    /// The tokens of `config` at `key`, token files read now. Errors name the key, and the
    /// file and line for a file, never a token.
    pub fn load(config: &AuthConfig, key: &str) -> Result<BearerAuth, KeyError> {
        if config.bearer_tokens.is_empty() && config.token_files.is_empty() {
            return cujo_config::fail(
                key,
                "expected bearer_tokens or token_files (an auth: without tokens would refuse every request)",
            );
        }
        for (i, token) in config.bearer_tokens.iter().enumerate() {
            if let Some(problem) = token.problem() {
                return cujo_config::fail(format!("{key}.bearer_tokens[{i}]"), problem);
            }
        }
        let files = config
            .token_files
            .iter()
            .enumerate()
            .map(|(i, path)| {
                TokenFile::open(path)
                    .map_err(|detail| KeyError::new(format!("{key}.token_files[{i}]"), detail))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inline: Vec<Digest> = config.bearer_tokens.iter().map(digest).collect();
        let valid = all_digests(&inline, &files);
        Ok(BearerAuth(Arc::new(Guard {
            key: key.to_string(),
            inline,
            watching: !files.is_empty(),
            files: Mutex::new(files),
            valid: RwLock::new(Arc::new(valid)),
            next_look_ms: AtomicU64::new(files::CHECK_EVERY.as_millis() as u64),
            started: Instant::now(),
            refused: AtomicU64::new(0),
        })))
    }

    /// Whether `headers` carry `authorization: Bearer <token>` (the scheme in any case) with
    /// a valid token. Counts a refusal.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let result = self.verify(headers);
        if result.is_err() {
            self.0.refused.fetch_add(1, Relaxed);
        }
        result
    }

    /// Whether `headers` carry a valid token, without counting a refusal.
    pub(crate) fn accepts(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        self.verify(headers)
    }

    /// The digests of every valid token now.
    pub(crate) fn digests(&self) -> Vec<Digest> {
        self.0
            .valid
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .to_vec()
    }

    fn verify(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        self.look_at_files();
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .ok_or(Refusal::Missing)?;
        if self.is_valid(presented) {
            Ok(())
        } else {
            Err(Refusal::Invalid)
        }
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Relaxed)
    }

    /// Compares the digest of `presented` with every valid digest in constant time: each is
    /// compared whatever the earlier ones gave.
    fn is_valid(&self, presented: &[u8]) -> bool {
        let presented = digest_bytes(presented);
        let valid = self
            .0
            .valid
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut found = subtle::Choice::from(0);
        for d in valid.iter() {
            found |= d.ct_eq(&presented);
        }
        found.into()
    }

    /// Looks at the token files if [`files::CHECK_EVERY`] has passed since the last look;
    /// one request looks while the others go on with the tokens they have.
    fn look_at_files(&self) {
        let g = &self.0;
        if !g.watching {
            return;
        }
        let now = g.started.elapsed().as_millis() as u64;
        let due = g.next_look_ms.load(Relaxed);
        if now < due
            || g.next_look_ms
                .compare_exchange(
                    due,
                    now + files::CHECK_EVERY.as_millis() as u64,
                    Relaxed,
                    Relaxed,
                )
                .is_err()
        {
            return;
        }
        self.reload();
    }

    /// Looks at every token file now and takes what changed.
    pub fn reload(&self) {
        let g = &self.0;
        let Ok(mut files) = g.files.try_lock() else {
            return;
        };
        let mut changed = false;
        for file in files.iter_mut() {
            changed |= file.refresh(&g.key);
        }
        if changed {
            let valid = all_digests(&g.inline, &files);
            *g.valid.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(valid);
        }
    }
}

fn all_digests(inline: &[Digest], files: &[TokenFile]) -> Vec<Digest> {
    let mut all = inline.to_vec();
    for f in files {
        all.extend_from_slice(&f.digests);
    }
    all
}

/// The token of an `authorization` value `Bearer <token>` (scheme in any case, RFC 6750);
/// `None` for another scheme or no token.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let split = value.iter().position(|b| *b == b' ' || *b == b'\t')?;
    let (scheme, token) = value.split_at(split);
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// HTTP's answer to a refused request: 401, `WWW-Authenticate: Bearer`, and the refusal as
/// a line of text.
pub fn unauthorized(refusal: Refusal) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        format!("{}\n", refusal.message()),
    )
        .into_response()
}

/// gRPC's answer to a refused request: `UNAUTHENTICATED` with the refusal as its message.
pub fn unauthenticated(refusal: Refusal) -> RpcStatus {
    RpcStatus::new(code::UNAUTHENTICATED, refusal.message())
}

/// `router`'s routes answer only requests carrying one of `auth`'s tokens; others get the
/// refusal, as gRPC for a gRPC request. Paths `router` does not serve stay 404.
pub fn require<S: Clone + Send + Sync + 'static>(router: Router<S>, auth: BearerAuth) -> Router<S> {
    router.route_layer(axum::middleware::from_fn_with_state(auth, guard))
}

async fn guard(State(auth): State<BearerAuth>, request: Request, next: Next) -> Response {
    match auth.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(key = %auth.0.key, reason = refusal.message(), path = request.uri().path(), "request refused");
            let grpc = request
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if grpc {
                grpc_error(unauthenticated(refusal))
            } else {
                unauthorized(refusal)
            }
        }
    }
}

#[cfg(test)]
mod tests;
