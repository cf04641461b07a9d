//! TLS on cujo's listeners (the OTLP receivers and the admin listener): the server side
//! only. Outgoing connections (exporters, webhooks) are `exporter::transport`'s.
//!
//! A listener with `tls:` serves TLS 1.2/1.3 (rustls with the `ring` provider) with ALPN
//! `h2` and `http/1.1`, so gRPC and HTTP/1 clients alike negotiate what they speak. With
//! `client_ca_file` every client must present a certificate signed by one of its CAs
//! (mTLS); one without is refused during the handshake.
//!
//! **Reload.** Every `reload_interval` the files are read and fingerprinted; a new version
//! is built into a new rustls config and swapped in whole. New handshakes take the new
//! config; established connections keep the one they were made with and are not dropped.
//! A version that cannot be used (bad PEM, a key not matching the certificate, a file
//! missing) is looked at once more after a short pause, since a writer may be between
//! renaming the certificate and the key; if it is still unusable the previous config stays,
//! the failure is logged (field and file, never content) and counted, and it is not tried
//! again until the files change.
//!
//! **Handshakes** run on the connection's own task, bounded by the listener's
//! `header_read_timeout` (see [`crate::server`]); failures are counted by reason and logged
//! at debug level only: port scanners, plaintext clients and probes cause them all day.
//!
//! # Layout
//! - [`config`]: `tls:` as written ([`TlsConfig`]) and its `validate`.
//! - `material` (private): reading the files, their fingerprint, building the rustls
//!   config, the certificate's expiry.
//! - this module: [`ServerTls`], the current config of one listener, its reload loop, the
//!   handshake and the `cujo_tls_*` metric families ([`render`]).

pub mod config;
mod material;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use cujo_config::KeyError;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

pub use config::{MinVersion, TlsConfig};
pub use material::FileError;
use material::{Fingerprint, Material, Snapshot};

use crate::prom;

/// A changed version that cannot be used is looked at again after this pause before it is
/// refused: the files may be between two renames.
const SETTLE: Duration = Duration::from_millis(500);
/// At most this many looks per refresh while the files keep changing.
const SETTLE_LOOKS: usize = 4;

/// Why a handshake failed: the `reason` label of `cujo_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not finished within the listener's `header_read_timeout`.
    Timeout,
    /// The peer closed the connection during the handshake (TCP probes, port scanners).
    Closed,
    /// The peer did not speak TLS (a plaintext client on a TLS listener).
    NotTls,
    /// No client certificate, or one not signed by `client_ca_file` (mTLS).
    ClientCertificate,
    /// The peer refused the handshake with an alert (it does not trust cujo's certificate,
    /// or shares no protocol version or cipher suite with it).
    PeerAlert,
    /// Any other protocol or I/O error.
    Other,
}

impl HandshakeFailure {
    const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::NotTls,
        HandshakeFailure::ClientCertificate,
        HandshakeFailure::PeerAlert,
        HandshakeFailure::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::PeerAlert => "peer_alert",
            HandshakeFailure::Other => "other",
        }
    }

    fn of(e: &std::io::Error) -> HandshakeFailure {
        use rustls::Error as E;
        if e.kind() == std::io::ErrorKind::UnexpectedEof
            || e.kind() == std::io::ErrorKind::ConnectionReset
        {
            return HandshakeFailure::Closed;
        }
        match e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
            Some(E::InvalidMessage(_)) => HandshakeFailure::NotTls,
            Some(E::NoCertificatesPresented | E::InvalidCertificate(_)) => {
                HandshakeFailure::ClientCertificate
            }
            Some(E::AlertReceived(_) | E::PeerIncompatible(_)) => HandshakeFailure::PeerAlert,
            _ => HandshakeFailure::Other,
        }
    }
}

/// One listener's TLS: the config new handshakes use, reloaded as its files change, and
/// what it counts. Cloning shares it.
#[derive(Clone)]
pub struct ServerTls(Arc<Shared>);

struct Shared {
    /// The listener's name (`otlp-grpc`, `otlp-http`, `admin`): the `listener` label.
    listener: &'static str,
    /// Where the section is in the config (`receivers.otlp.grpc.tls`), for log lines.
    key: String,
    config: TlsConfig,
    /// The config new handshakes take; a reload replaces it whole.
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// The version of the files last used or refused: the files are built again only when
    /// they hold something else.
    seen: Mutex<Fingerprint>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// By [`HandshakeFailure::ALL`]'s order.
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    /// The serving certificate's `notAfter` (seconds since the epoch); `i64::MIN` unknown.
    not_after: AtomicI64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("listener", &self.0.listener)
            .field("key", &self.0.key)
            .finish_non_exhaustive()
    }
}

/// What one refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what they held last time.
    Unchanged,
    /// A new version is in use.
    Applied,
    /// A new version could not be used; the previous one stays.
    Refused(FileError),
}

/// One look at the files.
enum Look {
    Unchanged,
    Usable(Fingerprint, Material),
    Unusable(Fingerprint, FileError),
}

impl ServerTls {
    /// Reads the files of `config` (at `key`, for errors and logs) for the listener
    /// `listener`. Errors name the field and the file.
    pub fn load(
        config: &TlsConfig,
        key: &str,
        listener: &'static str,
    ) -> Result<ServerTls, KeyError> {
        let files = Snapshot::read(config);
        let material = Material::build(config, &files).map_err(|e| e.at(key))?;
        let tls = ServerTls(Arc::new(Shared {
            listener,
            key: key.to_string(),
            config: config.clone(),
            current: RwLock::new(material.server.clone()),
            seen: Mutex::new(files.fingerprint()),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            handshake_failures: Default::default(),
            not_after: AtomicI64::new(material.not_after.unwrap_or(i64::MIN)),
        }));
        tracing::info!(
            listener = %listener,
            key = %key,
            min_version = %config.min_version,
            client_certificates = if config.client_ca_file.is_some() { "required" } else { "not asked for" },
            reload_interval = ?config.reload_interval.0,
            "TLS on"
        );
        tls.warn_if_expired(material.not_after);
        Ok(tls)
    }

    pub fn listener(&self) -> &'static str {
        self.0.listener
    }

    /// The TLS handshake on a new connection, bounded by `timeout`; `None` (counted and
    /// logged at debug level) when it fails.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        timeout: Duration,
    ) -> Option<TlsStream<TcpStream>> {
        let config = self
            .0
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let failure = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => {
                let failure = HandshakeFailure::of(&e);
                tracing::debug!(listener = %self.0.listener, %peer, reason = failure.label(), error = %e, "TLS handshake failed");
                failure
            }
            Err(_) => {
                tracing::debug!(listener = %self.0.listener, %peer, ?timeout, "TLS handshake timed out");
                HandshakeFailure::Timeout
            }
        };
        self.note_failure(failure);
        None
    }

    fn note_failure(&self, failure: HandshakeFailure) {
        if let Some(i) = HandshakeFailure::ALL.iter().position(|f| *f == failure) {
            self.0.handshake_failures[i].fetch_add(1, Relaxed);
        }
    }

    /// Handshakes failed for `reason` so far.
    pub fn handshake_failures(&self, reason: HandshakeFailure) -> u64 {
        HandshakeFailure::ALL
            .iter()
            .position(|f| *f == reason)
            .map_or(0, |i| self.0.handshake_failures[i].load(Relaxed))
    }

    /// Reloads used and refused so far.
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.0.reloads_ok.load(Relaxed),
            self.0.reloads_failed.load(Relaxed),
        )
    }

    /// Looks at the files every `reload_interval` until `stop`.
    pub async fn watch(self, stop: CancellationToken) {
        let every = self.0.config.reload_interval.0;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.refresh().await;
        }
    }

    /// Looks at the files now: a new usable version is swapped in; a new unusable one is
    /// looked at again after [`SETTLE`] and refused if it is still there (or if the files
    /// are still changing after [`SETTLE_LOOKS`] looks).
    pub async fn refresh(&self) -> Reload {
        let mut suspect: Option<Fingerprint> = None;
        for looked in 1..=SETTLE_LOOKS {
            let shared = self.0.clone();
            let Ok(look) = tokio::task::spawn_blocking(move || shared.look()).await else {
                return Reload::Unchanged;
            };
            match look {
                Look::Unchanged => return Reload::Unchanged,
                Look::Usable(fingerprint, material) => {
                    self.apply(fingerprint, material);
                    return Reload::Applied;
                }
                Look::Unusable(fingerprint, problem) => {
                    if suspect == Some(fingerprint) || looked == SETTLE_LOOKS {
                        self.refuse(fingerprint, &problem);
                        return Reload::Refused(problem);
                    }
                    suspect = Some(fingerprint);
                    tokio::time::sleep(SETTLE).await;
                }
            }
        }
        Reload::Unchanged
    }

    fn apply(&self, fingerprint: Fingerprint, material: Material) {
        *self
            .0
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = material.server;
        *self.0.seen.lock().unwrap_or_else(PoisonError::into_inner) = fingerprint;
        self.0
            .not_after
            .store(material.not_after.unwrap_or(i64::MIN), Relaxed);
        self.0.reloads_ok.fetch_add(1, Relaxed);
        tracing::info!(
            listener = %self.0.listener,
            key = %self.0.key,
            cert_file = %self.0.config.cert_file.display(),
            not_after = material.not_after.unwrap_or_default(),
            "TLS files changed: new handshakes use the new certificate"
        );
        self.warn_if_expired(material.not_after);
    }

    fn refuse(&self, fingerprint: Fingerprint, problem: &FileError) {
        *self.0.seen.lock().unwrap_or_else(PoisonError::into_inner) = fingerprint;
        self.0.reloads_failed.fetch_add(1, Relaxed);
        let at = problem.at(&self.0.key);
        tracing::error!(
            listener = %self.0.listener,
            key = %at.key,
            file = %problem.path.display(),
            problem = %problem.detail,
            "TLS files changed but cannot be used: the previous certificate stays in use"
        );
    }

    fn warn_if_expired(&self, not_after: Option<i64>) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if let Some(at) = not_after.filter(|at| *at < now) {
            tracing::warn!(
                listener = %self.0.listener,
                cert_file = %self.0.config.cert_file.display(),
                not_after = at,
                "the TLS certificate has expired: clients that check it will refuse it"
            );
        }
    }
}

impl Shared {
    /// Reads the files; builds them when they changed since last used or refused.
    fn look(&self) -> Look {
        let files = Snapshot::read(&self.config);
        let fingerprint = files.fingerprint();
        if *self.seen.lock().unwrap_or_else(PoisonError::into_inner) == fingerprint {
            return Look::Unchanged;
        }
        match Material::build(&self.config, &files) {
            Ok(material) => Look::Usable(fingerprint, material),
            Err(problem) => Look::Unusable(fingerprint, problem),
        }
    }
}

/// The `cujo_tls_*` families of `listeners` (written even when empty of samples, so a
/// dashboard finds the names).
pub fn render(listeners: &[ServerTls], out: &mut prom::Exposition) {
    let mut family = prom::Family::counter(
        out,
        "cujo_tls_handshake_failures_total",
        "TLS handshakes that failed on a listener, by reason (timeout, closed, not_tls, client_certificate, peer_alert, other).",
    );
    for tls in listeners {
        for reason in HandshakeFailure::ALL {
            family.sample(
                &[("listener", tls.0.listener), ("reason", reason.label())],
                tls.handshake_failures(reason) as f64,
            );
        }
    }
    let mut family = prom::Family::counter(
        out,
        "cujo_tls_reloads_total",
        "Changed TLS certificate/key files taken into use (ok) or refused, the previous ones kept (failed).",
    );
    for tls in listeners {
        let (ok, failed) = tls.reloads();
        family.sample(
            &[("listener", tls.0.listener), ("outcome", "ok")],
            ok as f64,
        );
        family.sample(
            &[("listener", tls.0.listener), ("outcome", "failed")],
            failed as f64,
        );
    }
    let mut family = prom::Family::gauge(
        out,
        "cujo_tls_certificate_expiry_timestamp_seconds",
        "When the certificate a listener serves expires (its notAfter), in seconds since the Unix epoch.",
    );
    for tls in listeners {
        let at = tls.0.not_after.load(Relaxed);
        if at != i64::MIN {
            family.sample(&[("listener", tls.0.listener)], at as f64);
        }
    }
}
