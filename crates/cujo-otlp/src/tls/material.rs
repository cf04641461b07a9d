//! One version of a listener's TLS files: read whole ([`Snapshot`]), fingerprinted so that a
//! reload can tell a new version from the one it has, and made into a rustls
//! `ServerConfig` ([`Material`]). Errors name the field and the file and say what is wrong
//! in words of their own: never a line, a byte or a base64 fragment of a file (a key file's
//! content must not reach a log).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cujo_config::KeyError;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::config::{MinVersion, TlsConfig};

/// Certificates and keys are small; anything larger is refused unread.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// What ALPN offers: gRPC needs `h2`; browsers, curl and HTTP/1 SDKs take `http/1.1`.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// SHA-256 over what the files held (or why each could not be read).
pub(super) type Fingerprint = [u8; 32];

/// A file that cannot be used: which field names it, where it is, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// `cert_file`, `key_file` or `client_ca_file`.
    pub field: &'static str,
    pub path: PathBuf,
    pub detail: String,
}

impl FileError {
    fn new(field: &'static str, path: &Path, detail: impl Into<String>) -> Self {
        Self {
            field,
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// As a config error under `key` (the `tls:` section):
    /// `receivers.otlp.grpc.tls.cert_file: /etc/cujo/tls.crt: no certificate found`.
    pub fn at(&self, key: &str) -> KeyError {
        KeyError::new(
            format!("{key}.{}", self.field),
            format!("{}: {}", self.path.display(), self.detail),
        )
    }
}

/// What the files of a `tls:` section held at one look.
pub(super) struct Snapshot {
    cert: Result<Vec<u8>, String>,
    key: Result<Vec<u8>, String>,
    client_ca: Option<Result<Vec<u8>, String>>,
}

impl Snapshot {
    pub(super) fn read(config: &TlsConfig) -> Snapshot {
        Snapshot {
            cert: read(&config.cert_file),
            key: read(&config.key_file),
            client_ca: config.client_ca_file.as_deref().map(read),
        }
    }

    /// Equal for equal contents (and equal read errors): a reload compares these.
    pub(super) fn fingerprint(&self) -> Fingerprint {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let parts = [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()];
        for part in parts {
            let (tag, bytes): (&[u8], &[u8]) = match part {
                None => (b"-", b""),
                Some(Ok(bytes)) => (b"+", bytes),
                Some(Err(problem)) => (b"!", problem.as_bytes()),
            };
            ctx.update(tag);
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// A file's bytes, or why it cannot be read (its path is added by the caller).
fn read(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_FILE_BYTES) as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "larger than {} KiB: not a certificate or key file",
            MAX_FILE_BYTES / 1024
        ));
    }
    Ok(bytes)
}

/// A usable version of the files: the config new handshakes take.
pub(super) struct Material {
    pub(super) server: Arc<ServerConfig>,
    /// When the serving certificate expires, in seconds since the Unix epoch (`None` when
    /// its validity cannot be read).
    pub(super) not_after: Option<i64>,
}

impl Material {
    /// Reads the files of `config` now and builds from them.
    pub(super) fn load(config: &TlsConfig) -> Result<Material, FileError> {
        Material::build(config, &Snapshot::read(config))
    }

    /// The server config of what `files` held, or the first file that is not usable.
    pub(super) fn build(config: &TlsConfig, files: &Snapshot) -> Result<Material, FileError> {
        let cert_path = &config.cert_file;
        let key_path = &config.key_file;
        let cert_err = |detail: String| FileError::new("cert_file", cert_path, detail);
        let key_err = |detail: String| FileError::new("key_file", key_path, detail);

        let cert_pem = files.cert.as_ref().map_err(|e| cert_err(e.clone()))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(pem_problem(&e, "certificate")))?;
        let Some(leaf) = chain.first() else {
            return Err(cert_err(
                "no certificate found (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
            ));
        };
        let not_after = not_after(leaf.as_ref());

        let key_pem = files.key.as_ref().map_err(|e| key_err(e.clone()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| key_err(pem_problem(&e, "private key")))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        check_pair(&provider, &chain, &key, cert_path).map_err(|f| match f {
            PairProblem::Key(detail) => key_err(detail),
            PairProblem::Cert(detail) => cert_err(detail),
        })?;

        let versions: &[&'static rustls::SupportedProtocolVersion] = match config.min_version {
            MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            MinVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| cert_err(format!("TLS setup failed: {e}")))?;
        let builder = match (&config.client_ca_file, &files.client_ca) {
            (Some(path), Some(ca)) => {
                let ca_err = |detail: String| FileError::new("client_ca_file", path, detail);
                let ca_pem = ca.as_ref().map_err(|e| ca_err(e.clone()))?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca_pem) {
                    let cert = cert.map_err(|e| ca_err(pem_problem(&e, "certificate")))?;
                    roots.add(cert).map_err(|e| {
                        ca_err(format!("a certificate cannot be used as a CA: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(ca_err(
                        "no certificate found (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
                    ));
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| ca_err(format!("cannot verify clients with it: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut server = builder
            .with_single_cert(chain, key)
            .map_err(|e| cert_err(format!("not usable with key_file: {e}")))?;
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Material {
            server: Arc::new(server),
            not_after,
        })
    }
}

enum PairProblem {
    Key(String),
    Cert(String),
}

/// The key loads with the provider and belongs to the chain's first certificate.
fn check_pair(
    provider: &CryptoProvider,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    cert_path: &Path,
) -> Result<(), PairProblem> {
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|_| {
            PairProblem::Key(
                "not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519 expected)".into(),
            )
        })?;
    match CertifiedKey::new(chain.to_vec(), signing).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(PairProblem::Key(format!(
            "the private key does not match the certificate of cert_file ({})",
            cert_path.display()
        ))),
        Err(e) => Err(PairProblem::Cert(format!(
            "the first certificate is not a valid X.509 certificate ({e})"
        ))),
    }
}

/// What is wrong with a PEM file, without quoting it.
fn pem_problem(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("no {what} found"),
        pem::Error::MissingSectionEnd { .. } => {
            "not valid PEM: a section has no -----END line (a file still being written?)".into()
        }
        pem::Error::IllegalSectionStart { .. } => {
            "not valid PEM: a malformed -----BEGIN line".into()
        }
        pem::Error::Base64Decode(_) => "not valid PEM: a section is not valid base64".into(),
        pem::Error::Io(e) => format!("cannot read: {e}"),
        _ => "not valid PEM".into(),
    }
}

/// The `notAfter` of a DER X.509 certificate, in seconds since the Unix epoch: the fields
/// before it walked by their lengths, nothing else parsed.
pub(super) fn not_after(cert: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (certificate, _) = der(cert, SEQUENCE)?;
    let (tbs, _) = der(certificate, SEQUENCE)?;
    let mut rest = tbs;
    // version: [0] EXPLICIT, absent for v1 certificates
    if rest.first() == Some(&0xa0) {
        rest = der(rest, 0xa0)?.1;
    }
    rest = der(rest, 0x02)?.1; // serialNumber
    rest = der(rest, SEQUENCE)?.1; // signature
    rest = der(rest, SEQUENCE)?.1; // issuer
    let (validity, _) = der(rest, SEQUENCE)?;
    let (_, rest) = time(validity)?; // notBefore
    time(rest).map(|(at, _)| at)
}

/// The content of the DER element of `tag` at the start of `input`, and what follows it.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(n)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    rest.split_at_checked(len)
}

/// A UTCTime or GeneralizedTime (`YYMMDDHHMMSSZ`, `YYYYMMDDHHMMSSZ`) as seconds since the
/// Unix epoch, and what follows it.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (year_digits, tag) = match input.first()? {
        0x17 => (2, 0x17),
        0x18 => (4, 0x18),
        _ => return None,
    };
    let (text, rest) = der(input, tag)?;
    let text = text.strip_suffix(b"Z")?;
    if text.len() != year_digits + 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |from: usize, len: usize| {
        text[from..from + len]
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
    };
    let mut year = number(0, year_digits);
    if year_digits == 2 {
        // RFC 5280: 50-99 are 1950-1999, 00-49 are 2000-2049.
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let at = year_digits;
    let (month, day) = (number(at, 2), number(at + 2, 2));
    let (hour, minute, second) = (number(at + 4, 2), number(at + 6, 2), number(at + 8, 2));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((seconds, rest))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
