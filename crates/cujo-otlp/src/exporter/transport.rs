//! Sending one encoded request downstream over OTLP/gRPC or OTLP/HTTP, and reading the
//! answer the way the OTLP specification defines it: success (maybe partial), retryable
//! (with the server's delay if it gave one), or permanent.

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

/// `exporters.otlp.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

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

/// `exporters.otlp.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
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
        let bad = |reason: &str| DownstreamError::Endpoint {
            key,
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        };
        let base: Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match base.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(bad("must start with http:// (plaintext) or https:// (TLS)")),
        }
        if base.authority().is_none() {
            return Err(bad("has no host"));
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
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(key, ca_file)?)
            .https_or_http();
        let connector = match protocol {
            Protocol::Grpc => builder.enable_http2().build(),
            Protocol::HttpProtobuf => builder.enable_all_versions().build(),
        };
        let mut client = Client::builder(TokioExecutor::new());
        client
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_adaptive_window(true);
        if protocol == Protocol::Grpc {
            client.http2_only(true);
        }
        Ok(Self {
            client: client.build(connector),
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

    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Sends `body`, already encoded (and compressed if configured, and framed for gRPC).
    pub async fn send(&self, body: Bytes) -> Outcome {
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
        req = req.header(
            header::USER_AGENT,
            concat!("cujo/", env!("CARGO_PKG_VERSION")),
        );
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = match req.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Permanent {
                    error: format!("cannot build request: {e}"),
                };
            }
        };
        let attempt = async {
            // Connection refused, reset, TLS failure: the downstream may come back.
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| error_chain(&e))?;
            let (parts, body) = resp.into_parts();
            let collected = body.collect().await.map_err(|e| e.to_string())?;
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

/// rustls with the public (webpki) roots, plus the certificates of `ca_file` if given.
fn tls_config(
    key: &'static str,
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, DownstreamError> {
    client_tls_config(ca_file).map_err(|e| match e {
        TlsSetupError::CaFile { path, detail } => DownstreamError::CaFile { key, path, detail },
        TlsSetupError::Tls(detail) => DownstreamError::Tls { key, detail },
    })
}

/// Why [`client_tls_config`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSetupError {
    #[error("ca_file {path}: {detail}")]
    CaFile { path: String, detail: String },
    #[error("{0}")]
    Tls(String),
}

/// The TLS client configuration every outgoing connection of cujo uses (span and metrics
/// exporters, webhooks): rustls with the public (webpki) roots, plus the PEM certificates of
/// `ca_file` if given.
pub fn client_tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsSetupError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
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
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
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
            after: headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            error,
        },
        _ => Outcome::Permanent { error },
    }
}
