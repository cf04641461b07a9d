//! cujo's one outbound transport: every exporter's requests leave through here, whatever
//! they carry (spans, OTLP metrics, webhook notifications), over one client setup — rustls
//! with the public roots plus an optional private CA ([`client_tls_config`]), pooled
//! HTTP/1.1 and HTTP/2 connections, the configured headers, a deadline per attempt — and
//! every answer is read into one [`Outcome`]: delivered, retryable (with the server's delay
//! if it gave one), or permanent. Retrying is the caller's, with [`super::retry::Backoff`].
//!
//! - [`Downstream`]: an OTLP destination (gRPC or HTTP/protobuf), answers read the way the
//!   OTLP specification defines them (partial success, `RetryInfo`, `Retry-After`);
//!   [`encode_message`] makes its body (compressed if configured, framed for gRPC).
//! - [`HttpPost`]: any other HTTP destination (a webhook): POST these bytes with these
//!   headers; 2xx is delivered, 429 and 5xx retryable, other answers permanent. Its errors
//!   never carry the URL (a webhook URL is a secret).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use crate::rpc::{RpcStatus, code, decode_grpc_message};

/// `protocol` and `compression` of an exporter's config: the transport takes the config's
/// own values, so every exporter spells and maps them the same way.
pub use cujo_config::outbound::{Compression, Protocol};

/// What is exported: spans (`exporters.otlp`) or metrics (`exporters.otlp_metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    /// The config section that configures this signal's exporter (named in errors).
    pub fn config_key(self) -> &'static str {
        match self {
            Signal::Traces => "exporters.otlp",
            Signal::Metrics => "exporters.otlp_metrics",
        }
    }

    fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => crate::receiver::grpc::EXPORT_PATH,
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        }
    }

    fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

/// The answer to one attempt.
#[derive(Debug)]
pub enum Outcome {
    /// Accepted; the downstream refused `rejected` spans of it (`partial_success`).
    Delivered {
        rejected: i64,
        message: String,
    },
    Retryable {
        after: Option<Duration>,
        error: String,
    },
    Permanent {
        error: String,
    },
}

/// A connection pool to the downstream plus what every request carries.
pub struct Downstream {
    client: HttpClient,
    uri: Uri,
    protocol: Protocol,
    compression: Compression,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    #[error("{key}.endpoint {endpoint:?}: {reason}")]
    Endpoint {
        key: &'static str,
        endpoint: String,
        reason: String,
    },
    #[error("{key} TLS setup failed: {detail}")]
    Tls { key: &'static str, detail: String },
    #[error("{key}.tls.ca_file {path:?}: {detail}")]
    CaFile {
        key: &'static str,
        path: String,
        detail: String,
    },
}

impl Downstream {
    /// A span downstream. `ca_file`: PEM certificates trusted in addition to the public
    /// roots (a private CA).
    pub fn new(
        endpoint: &str,
        protocol: Protocol,
        compression: Compression,
        headers: Vec<(HeaderName, HeaderValue)>,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, DownstreamError> {
        Self::for_signal(
            Signal::Traces,
            endpoint,
            protocol,
            compression,
            headers,
            timeout,
            ca_file,
        )
    }

    /// A downstream for `signal`: the same client, the signal's gRPC method or HTTP path.
    pub fn for_signal(
        signal: Signal,
        endpoint: &str,
        protocol: Protocol,
        compression: Compression,
        headers: Vec<(HeaderName, HeaderValue)>,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, DownstreamError> {
        let key = signal.config_key();
        // An endpoint can carry a secret (`user:password@`, `?api_key=`): errors show it
        // without them.
        let bad = |reason: &str| DownstreamError::Endpoint {
            key,
            endpoint: redact_endpoint(endpoint),
            reason: reason.to_string(),
        };
        let base: Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match base.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(bad("must start with http:// (plaintext) or https:// (TLS)")),
        }
        match base.authority() {
            None => return Err(bad("has no host")),
            Some(a) if a.as_str().contains('@') => {
                return Err(bad(
                    "holds credentials (user:password@): give them in headers instead",
                ));
            }
            Some(_) => {}
        }
        let uri = match protocol {
            Protocol::Grpc => join_path(&base, signal.grpc_path()),
            Protocol::HttpProtobuf => {
                if base.path().ends_with(signal.http_path()) {
                    Ok(base.clone())
                } else {
                    join_path(&base, signal.http_path())
                }
            }
        }
        .map_err(|e| bad(&e))?;
        let client = http_client(tls_config(key, ca_file)?, protocol == Protocol::Grpc);
        Ok(Self {
            client,
            uri,
            protocol,
            compression,
            headers,
            timeout,
        })
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The endpoint for logs: scheme, host and path, any query left out.
    pub fn display_uri(&self) -> String {
        redact_endpoint(&self.uri.to_string())
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Sends `body`, already encoded (and compressed if configured, and framed for gRPC).
    pub async fn send(&self, body: Bytes) -> Outcome {
        self.send_as(body, &[]).await
    }

    /// Sends `body` with a tenant's `headers` over the configured ones of the same name.
    /// Their values are secrets: an invalid one is named, never shown.
    pub async fn send_as(&self, body: Bytes, tenant_headers: &[(Box<str>, Bytes)]) -> Outcome {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone());
        match self.protocol {
            Protocol::Grpc => {
                req = req
                    .header(header::CONTENT_TYPE, "application/grpc")
                    .header("te", "trailers")
                    .header("grpc-accept-encoding", "identity,gzip");
                if self.compression == Compression::Gzip {
                    req = req.header("grpc-encoding", "gzip");
                }
                req = req.header("grpc-timeout", format!("{}m", self.timeout.as_millis()));
            }
            Protocol::HttpProtobuf => {
                req = req.header(header::CONTENT_TYPE, "application/x-protobuf");
                if self.compression == Compression::Gzip {
                    req = req.header(header::CONTENT_ENCODING, "gzip");
                }
            }
        }
        req = req.header(header::USER_AGENT, USER_AGENT);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let mut req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Permanent {
                    error: format!("cannot build request: {e}"),
                };
            }
        };
        for (name, value) in tenant_headers {
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_maybe_shared(value.clone()),
            ) else {
                return Outcome::Permanent {
                    error: format!("the tenant's header {name:?} cannot be sent"),
                };
            };
            req.headers_mut().insert(name, value);
        }
        let attempt = async {
            // Connection refused, reset, TLS failure: the downstream may come back.
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| error_chain(&e))?;
            let (parts, body) = resp.into_parts();
            // An OTLP answer is a few bytes (a partial success at most): a longer one is
            // not held, whatever the downstream sends.
            let collected = http_body_util::Limited::new(body, MAX_OTLP_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("answer unread (over {MAX_OTLP_ANSWER_BYTES} bytes?): {e}"))?;
            let trailers = collected.trailers().cloned();
            Ok::<_, String>((parts.status, parts.headers, trailers, collected.to_bytes()))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Err(_) => Outcome::Retryable {
                after: None,
                error: format!("no answer from {} within {:?}", self.uri, self.timeout),
            },
            Ok(Err(error)) => Outcome::Retryable {
                after: None,
                error: format!("sending to {} failed: {error}", self.uri),
            },
            Ok(Ok((status, headers, trailers, body))) => match self.protocol {
                Protocol::Grpc => grpc_outcome(status, &headers, trailers.as_ref(), body),
                Protocol::HttpProtobuf => http_outcome(status, &headers, body),
            },
        }
    }
}

/// The pooled client every destination uses: HTTP/1.1 or HTTP/2 as TLS negotiates (or
/// HTTP/2 only, for gRPC), idle connections kept 90 s, HTTP/2 pings every 30 s.
fn http_client(tls: rustls::ClientConfig, http2_only: bool) -> HttpClient {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = if http2_only {
        builder.enable_http2().build()
    } else {
        builder.enable_all_versions().build()
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_keep_alive_interval(Some(Duration::from_secs(30)))
        .http2_adaptive_window(true);
    if http2_only {
        client.http2_only(true);
    }
    client.build(connector)
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The `User-Agent` of every request cujo sends.
const USER_AGENT: &str = concat!("cujo/", env!("CARGO_PKG_VERSION"));

/// How much of a non-OTLP answer's body is read (for the error of a refusal).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The longest OTLP answer body read; past it the attempt fails (retryably) rather than
/// hold what a broken or hostile downstream sends.
const MAX_OTLP_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// An OTLP message as a request body for `protocol`: gzip-compressed if `compression` says
/// so, and framed for gRPC. (The span exporter writes its bodies in place, reusing buffers;
/// this is for small, occasional messages such as a metrics push.)
pub fn encode_message(
    raw: &[u8],
    protocol: Protocol,
    compression: Compression,
) -> std::io::Result<Bytes> {
    let gzip = compression == Compression::Gzip;
    let compressed;
    let payload = if gzip {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut enc, raw)?;
        compressed = enc.finish()?;
        &compressed[..]
    } else {
        raw
    };
    Ok(match protocol {
        Protocol::Grpc => crate::rpc::frame(payload, gzip),
        Protocol::HttpProtobuf => Bytes::copy_from_slice(payload),
    })
}

/// An HTTP destination that is not OTLP (a webhook): the same client, TLS and deadline
/// handling as [`Downstream`], with plain HTTP answers.
pub struct HttpPost {
    client: HttpClient,
    uri: Uri,
    /// Sent with every request, after `Content-Type` and `User-Agent`.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Bounds one attempt (connecting, sending, reading the answer).
    timeout: Duration,
}

/// Why an [`HttpPost`] could not be set up. Never carries the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpPostError {
    #[error("url: {0}")]
    Url(String),
    #[error("tls: {0}")]
    Tls(#[from] TlsSetupError),
}

impl HttpPost {
    /// A destination at `url` (`http://` plaintext or `https://` TLS, with a host).
    /// `ca_file`: PEM certificates trusted in addition to the public roots.
    pub fn new(
        url: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, HttpPostError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| HttpPostError::Url(e.to_string()))?;
        if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
            return Err(HttpPostError::Url(
                "must start with http:// (plaintext) or https:// (TLS)".into(),
            ));
        }
        if uri.authority().is_none() {
            return Err(HttpPostError::Url("has no host".into()));
        }
        Ok(Self {
            client: http_client(client_tls_config(ca_file)?, false),
            uri,
            headers,
            timeout,
        })
    }

    /// POSTs `body` as `content_type`. The errors of the outcome name neither the URL nor
    /// the headers.
    pub async fn post(&self, content_type: &'static str, body: Bytes) -> Outcome {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, content_type)
            .header(header::USER_AGENT, USER_AGENT);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Permanent {
                    error: format!("cannot build the request: {e}"),
                };
            }
        };
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| error_chain(&e))?;
            let (parts, body) = resp.into_parts();
            // The answer's body only feeds the error text; a huge one is cut.
            let body = http_body_util::Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, String>((parts.status, parts.headers, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Outcome::Retryable {
                after: None,
                error: format!("no answer within {:?}", self.timeout),
            },
            Ok(Err(error)) => Outcome::Retryable {
                after: None,
                error: format!("posting failed: {error}"),
            },
            Ok(Ok((status, headers, body))) => post_outcome(status, &headers, &body),
        }
    }
}

/// A plain HTTP answer: 2xx delivered; 429 and 5xx retryable (after `Retry-After` seconds if
/// given); anything else permanent.
fn post_outcome(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered {
            rejected: 0,
            message: String::new(),
        };
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    let error = format!("answered HTTP {status}: {}", text.trim());
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Outcome::Retryable {
            after: retry_after(headers),
            error,
        }
    } else {
        Outcome::Permanent { error }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not read).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// rustls with the public (webpki) roots, plus the certificates of `ca_file` if given.
fn tls_config(
    key: &'static str,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, DownstreamError> {
    client_tls_config(ca_file).map_err(|e| match e {
        TlsSetupError::CaFile { path, detail } => DownstreamError::CaFile { key, path, detail },
        TlsSetupError::Tls(detail) => DownstreamError::Tls { key, detail },
        e @ TlsSetupError::Identity { .. } => DownstreamError::Tls {
            key,
            detail: e.to_string(),
        },
    })
}

/// Why [`client_tls_config`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    #[error("ca_file {path}: {detail}")]
    CaFile { path: String, detail: String },
    /// The client certificate or key file.
    #[error("{path}: {detail}")]
    Identity { path: String, detail: String },
    #[error("{0}")]
    Tls(String),
}

/// The TLS client configuration every outgoing connection of cujo uses (span and metrics
/// exporters, webhooks): rustls with the public (webpki) roots, plus the PEM certificates of
/// `ca_file` if given.
pub fn client_tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsSetupError> {
    client_tls_config_with_identity(ca_file, None)
}

/// [`client_tls_config`], presenting the certificate chain and key of `identity` (PEM
/// files: certificate, key) to servers that ask for one (mTLS). Errors name the file,
/// never its content.
pub fn client_tls_config_with_identity(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad = |detail: String| TlsSetupError::CaFile {
            path: path.display().to_string(),
            detail,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificates found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let Some((cert_file, key_file)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let unusable = |path: &Path, detail: &str| TlsSetupError::Identity {
        path: path.display().to_string(),
        detail: detail.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|_| unusable(cert_file, "cannot read it"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| unusable(cert_file, "not valid PEM"))?;
    if chain.is_empty() {
        return Err(unusable(cert_file, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|_| unusable(key_file, "no usable PEM private key found"))?;
    builder.with_client_auth_cert(chain, key).map_err(|_| {
        unusable(
            key_file,
            "the key is not usable or does not match the client certificate",
        )
    })
}

/// An error and every error under it, `outer: inner: …` (hyper's own text hides the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `endpoint` as it may be shown: credentials before an `@` in the authority and the query
/// replaced by `<redacted>`, the rest (scheme, host, port, path) as written.
pub fn redact_endpoint(endpoint: &str) -> String {
    let (before_query, query) = match endpoint.split_once('?') {
        Some((b, _)) => (b, "?<redacted>"),
        None => (endpoint, ""),
    };
    let (scheme, rest) = match before_query.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, before_query),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<redacted>@{host}"),
        None => authority.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{path}{query}"),
        None => format!("{authority}{path}{query}"),
    }
}

fn join_path(base: &Uri, path: &str) -> Result<Uri, String> {
    let prefix = base.path().trim_end_matches('/');
    let full = format!("{prefix}{path}");
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(
        full.parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?,
    );
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// The partial-success answer. `ExportMetricsServiceResponse` has the same layout (field 1
/// rejected data points, field 2 message), so this reads both signals' answers.
fn partial(body: &[u8]) -> (i64, String) {
    match ExportTraceServiceResponse::decode(body) {
        Ok(ExportTraceServiceResponse {
            partial_success: Some(p),
        }) => (p.rejected_spans, p.error_message),
        _ => (0, String::new()),
    }
}

fn grpc_outcome(
    http_status: StatusCode,
    headers: &HeaderMap,
    trailers: Option<&HeaderMap>,
    mut body: Bytes,
) -> Outcome {
    if http_status != StatusCode::OK {
        let error = format!("downstream answered HTTP {http_status} to a gRPC call");
        return match http_status.as_u16() {
            429 | 502 | 503 | 504 => Outcome::Retryable { after: None, error },
            _ => Outcome::Permanent { error },
        };
    }
    let lookup = |name: &str| {
        trailers
            .and_then(|t| t.get(name))
            .or_else(|| headers.get(name))
    };
    let grpc_status = lookup("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(code::UNKNOWN);
    if grpc_status == code::OK {
        let (rejected, message) = if body.len() >= 5 {
            let compressed = body.get_u8();
            let _len = body.get_u32();
            if compressed == 0 {
                partial(&body)
            } else {
                (0, String::new())
            }
        } else {
            (0, String::new())
        };
        return Outcome::Delivered { rejected, message };
    }
    let message = lookup("grpc-message")
        .map(|v| decode_grpc_message(v.as_bytes()))
        .unwrap_or_default();
    let details = lookup("grpc-status-details-bin")
        .and_then(|v| RpcStatus::from_details_header(v.as_bytes()));
    let retry_delay = details.as_ref().and_then(RpcStatus::retry_delay);
    let error = format!("downstream answered gRPC status {grpc_status}: {message}");
    match grpc_status {
        code::CANCELLED
        | code::DEADLINE_EXCEEDED
        | code::ABORTED
        | code::OUT_OF_RANGE
        | code::UNAVAILABLE
        | code::DATA_LOSS => Outcome::Retryable {
            after: retry_delay,
            error,
        },
        // Retryable only when the server says when (OTLP spec).
        code::RESOURCE_EXHAUSTED if retry_delay.is_some() => Outcome::Retryable {
            after: retry_delay,
            error,
        },
        _ => Outcome::Permanent { error },
    }
}

fn http_outcome(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Outcome {
    if status.is_success() {
        let (rejected, message) = partial(&body);
        return Outcome::Delivered { rejected, message };
    }
    let detail = RpcStatus::decode(body.as_ref())
        .map(|s| s.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    let error = format!("downstream answered HTTP {status}: {detail}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Outcome::Retryable {
            after: retry_after(headers),
            error,
        },
        _ => Outcome::Permanent { error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::sync::Mutex;

    #[test]
    fn endpoints_with_credentials_are_refused_and_never_echoed() {
        assert_eq!(
            redact_endpoint("https://user:s3cret@api.example:443/v1/traces?key=k3y"),
            "https://<redacted>@api.example:443/v1/traces?<redacted>"
        );
        assert_eq!(
            redact_endpoint("http://127.0.0.1:4317"),
            "http://127.0.0.1:4317"
        );
        assert_eq!(redact_endpoint("a:b@host"), "<redacted>@host");
        let err = Downstream::new(
            "https://user:s3cret@api.example:443",
            Protocol::Grpc,
            Compression::None,
            Vec::new(),
            Duration::from_secs(1),
            None,
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("holds credentials"), "{err}");
        assert!(
            !err.contains("s3cret") && !err.contains("user:s3cret"),
            "{err}"
        );
        let err = Downstream::new(
            "ftp://h/?api_key=s3cret",
            Protocol::HttpProtobuf,
            Compression::None,
            Vec::new(),
            Duration::from_secs(1),
            None,
        )
        .err()
        .expect("refused")
        .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("ftp://h/?<redacted>"), "{err}");
    }

    #[test]
    fn messages_are_compressed_and_framed_as_configured() {
        let raw = b"an OTLP message, repeated, repeated, repeated".to_vec();
        let plain = encode_message(&raw, Protocol::HttpProtobuf, Compression::None).expect("plain");
        assert_eq!(&plain[..], &raw[..]);
        let framed = encode_message(&raw, Protocol::Grpc, Compression::None).expect("framed");
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(&framed[5..], &raw[..]);
        let gzip = encode_message(&raw, Protocol::Grpc, Compression::Gzip).expect("gzip");
        assert_eq!(gzip[0], 1, "compressed flag");
        let len = u32::from_be_bytes([gzip[1], gzip[2], gzip[3], gzip[4]]) as usize;
        assert_eq!(len, gzip.len() - 5);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gzip[5..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, raw);
    }

    #[test]
    fn plain_http_answers_are_read_like_a_webhook_receiver_means_them() {
        let mut retry = HeaderMap::new();
        retry.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert!(matches!(
            post_outcome(StatusCode::NO_CONTENT, &HeaderMap::new(), b""),
            Outcome::Delivered { rejected: 0, .. }
        ));
        match post_outcome(StatusCode::TOO_MANY_REQUESTS, &retry, b"slow down") {
            Outcome::Retryable { after, error } => {
                assert_eq!(after, Some(Duration::from_secs(7)));
                assert_eq!(error, "answered HTTP 429 Too Many Requests: slow down");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            post_outcome(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), b""),
            Outcome::Retryable { after: None, .. }
        ));
        assert!(matches!(
            post_outcome(StatusCode::NOT_FOUND, &retry, b"no such hook"),
            Outcome::Permanent { .. }
        ));
    }

    /// What the test receiver saw of each request: content type, one header, the body.
    type Seen = Arc<Mutex<Vec<(String, String, Bytes)>>>;

    /// A receiver answering each request with the next status of `answers` (503s carry
    /// `Retry-After: 2`).
    async fn receiver(answers: Vec<u16>) -> (std::net::SocketAddr, Seen) {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Seen = Arc::default();
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, answers) = (log.clone(), answers.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (log, answers) = (log.clone(), answers.clone());
                        async move {
                            let text = |name| {
                                req.headers()
                                    .get(name)
                                    .and_then(|v: &HeaderValue| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string()
                            };
                            let (ct, token) = (text("content-type"), text("x-token"));
                            let body = req.into_body().collect().await?.to_bytes();
                            log.lock().expect("log").push((ct, token, body));
                            let status = answers.lock().expect("answers").next().unwrap_or(200);
                            let mut resp = http::Response::builder().status(status);
                            if status == 503 {
                                resp = resp.header(header::RETRY_AFTER, "2");
                            }
                            Ok::<_, hyper::Error>(
                                resp.body(Full::new(Bytes::from_static(b"busy")))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn a_post_carries_its_headers_and_its_errors_never_name_the_url() {
        let (addr, seen) = receiver(vec![503, 200]).await;
        let url = format!("http://{addr}/services/T000/B000/secret-token");
        let headers = vec![(
            HeaderName::from_static("x-token"),
            HeaderValue::from_static("t0ken"),
        )];
        let post = HttpPost::new(&url, headers, Duration::from_secs(5), None).expect("post");
        let body = Bytes::from_static(b"{\"status\":\"firing\"}");
        match post.post("application/json", body.clone()).await {
            Outcome::Retryable { after, error } => {
                assert_eq!(after, Some(Duration::from_secs(2)));
                assert!(!error.contains("secret-token"), "{error}");
                assert!(error.starts_with("answered HTTP 503"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            post.post("application/json", body.clone()).await,
            Outcome::Delivered { .. }
        ));
        let seen = seen.lock().expect("seen").clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], ("application/json".into(), "t0ken".into(), body));

        // Nothing listens: retryable, and the error still does not name the URL.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let gone = format!(
            "http://{}/hooks/secret-token",
            closed.local_addr().expect("a")
        );
        drop(closed);
        let post = HttpPost::new(&gone, Vec::new(), Duration::from_secs(5), None).expect("post");
        match post.post("application/json", Bytes::new()).await {
            Outcome::Retryable { error, .. } => {
                assert!(error.starts_with("posting failed: "), "{error}");
                assert!(!error.contains("secret-token"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        let bad = HttpPost::new("hooks.example/x", Vec::new(), Duration::from_secs(1), None);
        assert!(matches!(bad, Err(HttpPostError::Url(_))), "{:?}", bad.err());
    }

    #[tokio::test]
    async fn an_otlp_answer_longer_than_the_cap_is_not_held() {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                        // Twice the cap, as a broken or hostile downstream might.
                        let huge = Bytes::from(vec![b'x'; 2 * MAX_OTLP_ANSWER_BYTES]);
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(huge)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let downstream = Downstream::new(
            &format!("http://{addr}"),
            Protocol::HttpProtobuf,
            Compression::None,
            Vec::new(),
            Duration::from_secs(30),
            None,
        )
        .expect("downstream");
        match downstream.send(Bytes::from_static(b"")).await {
            Outcome::Retryable { error, .. } => {
                assert!(error.contains("over 4194304 bytes"), "{error}");
            }
            other => panic!("a 8 MiB answer was taken: {other:?}"),
        }
    }
}
