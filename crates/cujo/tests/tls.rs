//! TLS end to end, with certificates from a private CA made here (rcgen).
//!
//! Outgoing: the OTLP exporter trusts a downstream's private CA through
//! `exporters.otlp.tls.ca_file`, and is refused (retryably, nothing dropped) without it.
//!
//! Listening: the receivers and the admin listener serve TLS (`tls:`) to the real
//! OpenTelemetry SDK exporters (gRPC through tonic, HTTP through a hyper client), require
//! client certificates with `client_ca_file` (mTLS), refuse plaintext clients cleanly and
//! keep serving, take a new certificate from their files without a restart while open
//! connections go on, keep the last good one when the files turn bad (counted, logged
//! without their content), and fail `cujo check` with the key and the file.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{
    Cujo, Downstream, RetryingClient, exporter_yaml, make_request, metric_value, wait_for,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_tls_to_a_downstream_signed_by_a_private_ca() {
    let (ca_pem, cert_pem, key_pem) = support::private_ca();
    let downstream = Downstream::start_tls(cert_pem, key_pem).await;
    let dir = support::Scratch::new("cujo-tls");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write ca");
    let endpoint = format!("https://localhost:{}", downstream.addr.port());

    let trusted = Cujo::start(&format!(
        "exporters:\n  otlp:\n    endpoint: \"{endpoint}\"\n    tls: {{ ca_file: \"{}\" }}\n    batch: {{ max_spans: 100, timeout: 20ms }}\n",
        ca_file.display()
    ))
    .await;
    let mut client = RetryingClient::connect(trusted.grpc).await;
    client
        .send(&make_request("checkout", 1, 25))
        .await
        .expect("accepted");
    downstream.wait_for_spans(25).await;

    // Without the CA the handshake fails: retried, counted as failed attempts, not dropped.
    let untrusted = Cujo::start(&format!(
        "exporters:\n  otlp:\n    endpoint: \"{endpoint}\"\n    batch: {{ max_spans: 100, timeout: 20ms }}\n    retry: {{ initial_interval: 20ms, max_interval: 50ms, max_elapsed: 1m }}\n"
    ))
    .await;
    let mut client = RetryingClient::connect(untrusted.grpc).await;
    client
        .send(&make_request("checkout", 2, 10))
        .await
        .expect("accepted");
    wait_for("failed TLS attempts", || async {
        (untrusted
            .metric("cujo_exporter_failed_attempts_total")
            .await
            >= 2.0)
            .then_some(())
    })
    .await;
    assert_eq!(untrusted.metric("cujo_in_flight_spans").await, 10.0);
    assert!(
        untrusted.log().contains("certificate"),
        "the log names the TLS problem"
    );
    assert_eq!(downstream.span_count(), 25);
}

#[test]
fn a_missing_ca_file_is_a_clear_start_up_error() {
    let dir = support::Scratch::new("cujo-tls-bad");
    let config = dir.join("cujo.yaml");
    std::fs::write(
        &config,
        "receivers:\n  otlp:\n    grpc: { endpoint: \"127.0.0.1:0\" }\nexporters:\n  otlp:\n    endpoint: \"https://localhost:4317\"\n    tls: { ca_file: \"/nonexistent/ca.pem\" }\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cujo"))
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run cujo");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exporters.otlp.tls.ca_file \"/nonexistent/ca.pem\""),
        "{err}"
    );
}

/// A private CA in a directory of its own, and the certificates it signs, written there.
struct Pki {
    dir: support::Scratch,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

/// A certificate and its key, as PEM, and the certificate as DER (what a client sees).
#[derive(Clone)]
struct Identity {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = support::Scratch::new(&format!("cujo-tls-{name}"));
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("cujo test CA {name}"));
        let ca_pem = params.self_signed(&key).expect("ca cert").pem();
        let pki = Pki {
            dir,
            ca: rcgen::Issuer::new(params, key),
            ca_pem,
        };
        pki.write("ca.pem", &pki.ca_pem);
        pki
    }

    /// A server certificate for 127.0.0.1 and localhost, with this serial number.
    fn server(&self, serial: u64) -> Identity {
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.serial_number = Some(serial.into());
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("cujo server {serial}"));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    fn client(&self, name: &str) -> Identity {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: rcgen::CertificateParams) -> Identity {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        Identity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Writes `name` at once: to a temporary file, then renamed over it.
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.join(name);
        let aside = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&aside, content).expect("write aside");
        std::fs::rename(&aside, &path).expect("rename");
        path
    }

    /// `server.pem` and `server.key` holding `id`.
    fn install_server(&self, id: &Identity) -> (PathBuf, PathBuf) {
        (
            self.write("server.pem", &id.cert_pem),
            self.write("server.key", &id.key_pem),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A `tls:` block for a listener serving `server.pem`; with `mtls`, requiring client
    /// certificates of this CA.
    fn tls_yaml(&self, mtls: bool, extra: &str) -> String {
        let ca = if mtls {
            format!(", client_ca_file: \"{}\"", self.path("ca.pem").display())
        } else {
            String::new()
        };
        format!(
            "tls: {{ cert_file: \"{}\", key_file: \"{}\"{ca}{extra} }}",
            self.path("server.pem").display(),
            self.path("server.key").display()
        )
    }

    /// A rustls client trusting this CA, presenting `identity` if given.
    fn client_config(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("ca der"))
            .expect("add ca");
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).expect("der")],
                    PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key"),
                )
                .expect("client auth"),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

use rustls::pki_types::pem::PemObject as _;

/// A TLS connection to `addr`, verified as 127.0.0.1.
async fn tls_connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The certificate the server presented on `stream` (DER).
fn served_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a server certificate")
}

/// An HTTP/1.1 connection over `stream`, for several requests in a row.
async fn http1(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("http/1.1 handshake");
    tokio::spawn(conn);
    send
}

/// One request on `send`: its status and body, or the error that ended it.
async fn request(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, String), String> {
    send.ready().await.map_err(|e| e.to_string())?;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(support::DEADLINE, send.send_request(req))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A GET over a new TLS connection.
async fn https_get(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, String), String> {
    let stream = tls_connect(addr, config).await.map_err(|e| e.to_string())?;
    request(&mut http1(stream).await, "GET", path, Vec::new()).await
}

/// An OTLP/HTTP protobuf body of `n` spans.
fn otlp_body(seed: u64, n: usize) -> Vec<u8> {
    prost::Message::encode_to_vec(&make_request("raw", seed, n))
}

/// The sum of every sample of `family` whose labels contain all of `labels`.
fn sum_of(metrics: &str, family: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// How the SDK exports: over gRPC or HTTP/protobuf.
#[derive(Clone, Copy)]
enum Sdk {
    Grpc,
    Http,
}

/// Ends `n` spans named `name` with the OpenTelemetry SDK exporting over TLS to `addr`
/// (trusting `pki`'s CA, presenting `identity` if given), on a blocking thread as the SDK's
/// simple exporter needs.
async fn sdk_send(
    sdk: Sdk,
    addr: std::net::SocketAddr,
    pki: &Pki,
    identity: Option<Identity>,
    name: &'static str,
    n: usize,
) {
    let ca_pem = pki.ca_pem.clone();
    let http_tls = pki.client_config(identity.as_ref());
    tokio::task::spawn_blocking(move || {
        let exporter = match sdk {
            Sdk::Grpc => {
                let mut tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem));
                if let Some(id) = &identity {
                    tls = tls.identity(tonic::transport::Identity::from_pem(
                        &id.cert_pem,
                        &id.key_pem,
                    ));
                }
                SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(format!("https://{addr}"))
                    .with_tls_config(tls)
                    .build()
                    .expect("grpc exporter")
            }
            Sdk::Http => {
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.enforce_http(false);
                // hyper-rustls sets ALPN itself.
                let mut http_tls = (*http_tls).clone();
                http_tls.alpn_protocols.clear();
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(http_tls)
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector);
                let client = opentelemetry_http::hyper::HyperClient::new(
                    connector,
                    Duration::from_secs(10),
                    None,
                );
                SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(format!("https://{addr}/v1/traces"))
                    .with_http_client(client)
                    .build()
                    .expect("http exporter")
            }
        };
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("checkout").build())
            .build();
        let tracer = provider.tracer("tls-test");
        for _ in 0..n {
            tracer.in_span(name, |_| {});
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk thread");
}

/// `received = forwarded + dropped + in flight`, read from an admin listener over TLS.
fn assert_accounting(metrics: &str) -> f64 {
    let accepted = sum_of(
        metrics,
        "cujo_receiver_spans_total",
        &["outcome=\"accepted\""],
    );
    let exported = metric_value(metrics, "cujo_exporter_sent_spans_total");
    let dropped = sum_of(metrics, "cujo_dropped_spans_total", &[]);
    let in_flight = metric_value(metrics, "cujo_in_flight_spans");
    assert_eq!(
        accepted,
        exported + dropped + in_flight,
        "accounting:\n{metrics}"
    );
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_exporters_send_over_tls_and_plaintext_clients_are_refused_cleanly() {
    let pki = Pki::new("listeners");
    pki.install_server(&pki.server(1));
    let downstream = Downstream::start().await;
    let tls = pki.tls_yaml(false, "");
    let cujo = Cujo::start_yaml(&format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\", {tls} }}\n    http: {{ endpoint: \"127.0.0.1:0\", {tls} }}\n{}\n  prometheus: {{ endpoint: \"127.0.0.1:0\", {tls} }}\n",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    let trust = pki.client_config(None);

    // Plaintext clients on every TLS listener: no answer, the connection closed.
    let plain_grpc = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://{}", cujo.grpc),
    )
    .await;
    if let Ok(mut client) = plain_grpc {
        assert!(
            client.export(make_request("plain", 1, 3)).await.is_err(),
            "a plaintext gRPC export is not answered"
        );
    }
    assert_eq!(support::http_get(cujo.http, "/v1/traces").await, None);
    assert_eq!(support::http_get(cujo.admin, "/metrics").await, None);

    // The process keeps serving: the admin listener over https.
    let (status, body) = https_get(cujo.admin, trust.clone(), "/healthz")
        .await
        .expect("healthz over https");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = https_get(cujo.admin, trust.clone(), "/readyz")
        .await
        .expect("readyz over https");
    assert_eq!(status, 200);

    // The real SDK exporters over TLS, to both receivers.
    sdk_send(Sdk::Grpc, cujo.grpc, &pki, None, "over grpc+tls", 5).await;
    sdk_send(Sdk::Http, cujo.http, &pki, None, "over http+tls", 4).await;
    wait_for("spans from both SDK exporters downstream", || async {
        (downstream.spans_named("over grpc+tls") == 5
            && downstream.spans_named("over http+tls") == 4)
            .then_some(())
    })
    .await;

    let metrics = wait_for("the plaintext attempts counted", || async {
        let (_, m) = https_get(cujo.admin, trust.clone(), "/metrics")
            .await
            .ok()?;
        let refused = ["otlp-grpc", "otlp-http", "admin"].iter().all(|l| {
            sum_of(
                &m,
                "cujo_tls_handshake_failures_total",
                &[&format!("listener=\"{l}\""), "reason=\"not_tls\""],
            ) >= 1.0
        });
        refused.then_some(m)
    })
    .await;
    assert_eq!(assert_accounting(&metrics), 9.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let expiry = metric_value(
        &metrics,
        "cujo_tls_certificate_expiry_timestamp_seconds{listener=\"otlp-grpc\"}",
    );
    assert!(
        expiry > now,
        "the certificate's notAfter is on /metrics: {expiry}"
    );
    support::promtool_check_metrics(&metrics);

    // The deploy gate reaches an https admin listener trusting the CA with --ca-file; this
    // cujo has no CUJs, so past TLS it says there is nothing to gate on.
    let endpoint = format!("https://{}", cujo.admin);
    let gate = |ca: Option<PathBuf>| {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_cujo"));
            cmd.args(["status", "--endpoint", &endpoint, "--timeout", "20s"]);
            if let Some(ca) = ca {
                cmd.arg("--ca-file").arg(ca);
            }
            cmd.output().expect("run cujo status")
        })
    };
    let out = gate(Some(pki.path("ca.pem"))).await.expect("gate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("reports no SLO objectives"), "{stderr}");
    let out = gate(None).await.expect("gate");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.contains("certificate"),
        "without the CA the server is not trusted: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate_of_the_ca_and_accepts_those_with_one() {
    let pki = Pki::new("mtls");
    pki.install_server(&pki.server(1));
    let stranger_ca = Pki::new("stranger");
    let downstream = Downstream::start().await;
    let tls = pki.tls_yaml(true, ", min_version: \"1.3\"");
    let cujo = Cujo::start_yaml(&format!(
        "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\", {tls} }}\n    http: {{ endpoint: \"127.0.0.1:0\", {tls} }}\n{}\n  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    let client = pki.client("checkout-service");

    // No client certificate, or one from another CA: refused in the handshake (TLS 1.3
    // clients learn it on their first read).
    for (who, config) in [
        ("no certificate", pki.client_config(None)),
        (
            "a certificate of another CA",
            stranger_ca.client_config_trusting(&pki, &stranger_ca.client("intruder")),
        ),
    ] {
        let outcome = match tls_connect(cujo.http, config).await {
            Err(e) => Err(e.to_string()),
            Ok(stream) => {
                request(
                    &mut http1(stream).await,
                    "POST",
                    "/v1/traces",
                    otlp_body(1, 2),
                )
                .await
            }
        };
        assert!(outcome.is_err(), "{who}: {outcome:?}");
    }
    sdk_send(Sdk::Grpc, cujo.grpc, &pki, None, "no client certificate", 2).await;
    let refused = wait_for("refused handshakes counted", || async {
        let m = cujo.metrics().await;
        let http = sum_of(
            &m,
            "cujo_tls_handshake_failures_total",
            &["listener=\"otlp-http\"", "reason=\"client_certificate\""],
        );
        let grpc = sum_of(
            &m,
            "cujo_tls_handshake_failures_total",
            &["listener=\"otlp-grpc\"", "reason=\"client_certificate\""],
        );
        (http >= 2.0 && grpc >= 1.0).then_some(m)
    })
    .await;
    assert_eq!(
        sum_of(
            &refused,
            "cujo_receiver_spans_total",
            &["outcome=\"accepted\""]
        ),
        0.0,
        "nothing from refused clients was received"
    );

    // With a certificate of the CA: accepted, by the SDK exporters and a raw client alike.
    sdk_send(
        Sdk::Grpc,
        cujo.grpc,
        &pki,
        Some(client.clone()),
        "mtls grpc",
        3,
    )
    .await;
    sdk_send(
        Sdk::Http,
        cujo.http,
        &pki,
        Some(client.clone()),
        "mtls http",
        2,
    )
    .await;
    let stream = tls_connect(cujo.http, pki.client_config(Some(&client)))
        .await
        .expect("handshake with a client certificate");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (status, _) = request(
        &mut http1(stream).await,
        "POST",
        "/v1/traces",
        otlp_body(7, 4),
    )
    .await
    .expect("answered");
    assert_eq!(status, 200);
    wait_for("spans of clients with certificates downstream", || async {
        (downstream.spans_named("mtls grpc") == 3
            && downstream.spans_named("mtls http") == 2
            && downstream.span_count() == 9)
            .then_some(())
    })
    .await;
    assert_eq!(downstream.spans_named("no client certificate"), 0);
    support::assert_accounting(&cujo).await;
}

impl Pki {
    /// A client presenting `identity` (of this CA) and trusting `server`'s CA.
    fn client_config_trusting(
        &self,
        server: &Pki,
        identity: &Identity,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(server.ca_pem.as_bytes()).expect("ca der"))
            .expect("add ca");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(identity.cert_pem.as_bytes()).expect("der")],
            PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("key"),
        )
        .expect("client auth");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_served_without_a_restart_and_bad_files_keep_the_last_good_one() {
    let pki = Pki::new("reload");
    let first = pki.server(1);
    let (_, key_file) = pki.install_server(&first);
    let downstream = Downstream::start().await;
    let tls = pki.tls_yaml(false, ", reload_interval: 100ms");
    let cujo = Cujo::start_yaml(&format!(
        "receivers:\n  otlp:\n    http: {{ endpoint: \"127.0.0.1:0\", {tls} }}\n{}\n  prometheus: {{ endpoint: \"127.0.0.1:0\" }}\n",
        exporter_yaml(downstream.addr, "")
    ))
    .await;
    let trust = pki.client_config(None);

    // A connection made before the swap.
    let before = tls_connect(cujo.http, trust.clone())
        .await
        .expect("handshake");
    assert_eq!(served_certificate(&before), first.der);
    let mut kept = http1(before).await;
    let (status, _) = request(&mut kept, "POST", "/v1/traces", otlp_body(1, 5))
        .await
        .expect("answered");
    assert_eq!(status, 200);

    // The certificate, then its key, each renamed into place.
    let second = pki.server(2);
    pki.install_server(&second);
    wait_for("a new handshake served the new certificate", || async {
        let stream = tls_connect(cujo.http, trust.clone()).await.ok()?;
        (served_certificate(&stream) == second.der).then_some(())
    })
    .await;
    let reloads = |outcome: &str| {
        format!("cujo_tls_reloads_total{{listener=\"otlp-http\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(cujo.metric(&reloads("ok")).await, 1.0);
    assert_eq!(
        cujo.metric(&reloads("failed")).await,
        0.0,
        "a certificate renamed before its key is not a failure"
    );
    // The connection made before the swap goes on.
    let (status, _) = request(&mut kept, "POST", "/v1/traces", otlp_body(2, 5))
        .await
        .expect("the old connection still answers");
    assert_eq!(status, 200);

    // A key file that turns to garbage: refused, counted, logged, the last good one kept.
    const GARBAGE: &str = "garbage-in-the-key-file-5e1f";
    pki.write("server.key", &format!("{GARBAGE}\n"));
    wait_for("the failed reload counted", || async {
        (cujo.metric(&reloads("failed")).await == 1.0).then_some(())
    })
    .await;
    let stream = tls_connect(cujo.http, trust.clone())
        .await
        .expect("still serving");
    assert_eq!(served_certificate(&stream), second.der);
    let (status, _) = request(
        &mut http1(stream).await,
        "POST",
        "/v1/traces",
        otlp_body(3, 5),
    )
    .await
    .expect("answered");
    assert_eq!(status, 200);
    let log = cujo.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot be used"))
        .unwrap_or_else(|| panic!("a log line for the failed reload:\n{log}"));
    assert!(
        line.contains("receivers.otlp.http.tls.key_file")
            && line.contains(&key_file.display().to_string()),
        "{line}"
    );
    for secret in [GARBAGE, "PRIVATE KEY"]
        .into_iter()
        .chain(second.key_pem.lines().filter(|l| !l.starts_with("-----")))
        .chain(first.key_pem.lines().filter(|l| !l.starts_with("-----")))
    {
        assert!(!log.contains(secret), "key material in the log: {secret}");
    }
    assert_eq!(cujo.metric(&reloads("ok")).await, 1.0);

    downstream.wait_for_spans(15).await;
    support::assert_accounting(&cujo).await;
}

/// `cujo check` on `yaml`: its exit code and standard error.
fn check(dir: &Path, yaml: &str) -> (Option<i32>, String) {
    let config = dir.join("cujo.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_cujo"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run cujo check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unusable_tls_settings_fail_the_check_naming_the_key_and_the_file() {
    let pki = Pki::new("check");
    let server = pki.server(1);
    let (cert, key) = pki.install_server(&server);
    let other = pki.write("other.key", &pki.server(2).key_pem);
    let missing = pki.path("missing.pem");
    let file = pki.path("cujo.yaml").display().to_string();
    let listener = |at: &str, tls: String| match at {
        "admin" => {
            format!("exporters:\n  prometheus: {{ endpoint: \"127.0.0.1:0\", tls: {{ {tls} }} }}\n")
        }
        _ => format!(
            "receivers:\n  otlp:\n    {at}: {{ endpoint: \"127.0.0.1:0\", tls: {{ {tls} }} }}\n"
        ),
    };
    let files = |c: &Path, k: &Path| {
        format!(
            "cert_file: \"{}\", key_file: \"{}\"",
            c.display(),
            k.display()
        )
    };

    let (code, err) = check(&pki.dir, &listener("grpc", files(&cert, &key)));
    assert_eq!(code, Some(0), "{err}");

    for (at, tls, expected) in [
        (
            "grpc",
            files(&missing, &key),
            format!(
                "{file}: receivers.otlp.grpc.tls.cert_file: {}: cannot read",
                missing.display()
            ),
        ),
        (
            "http",
            files(&cert, &other),
            format!(
                "{file}: receivers.otlp.http.tls.key_file: {}: the private key does not match the certificate of cert_file ({})",
                other.display(),
                cert.display()
            ),
        ),
        (
            "http",
            format!("{}, min_version: \"1.1\"", files(&cert, &key)),
            format!(
                "{file}: receivers.otlp.http.tls.min_version: expected \"1.2\" or \"1.3\", found \"1.1\""
            ),
        ),
        (
            "admin",
            format!(
                "{}, client_ca_file: \"{}\"",
                files(&cert, &key),
                missing.display()
            ),
            format!(
                "{file}: exporters.prometheus.tls.client_ca_file: {}: cannot read",
                missing.display()
            ),
        ),
        (
            "grpc",
            files(&key, &key),
            format!(
                "{file}: receivers.otlp.grpc.tls.cert_file: {}: no certificate found",
                key.display()
            ),
        ),
    ] {
        let (code, err) = check(&pki.dir, &listener(at, tls));
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
        for line in server.key_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!err.contains(line), "key material in the error: {err}");
        }
    }
}
