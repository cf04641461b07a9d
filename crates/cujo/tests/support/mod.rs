//! Black-box test support: the real `cujo` binary on free localhost ports, a real OTLP/gRPC
//! downstream (tonic, the generated `TraceService` server) that records what it receives, and
//! helpers that wait on conditions with deadlines instead of sleeping.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyInner;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A directory of one test's own under the system's temporary directory (config files,
/// certificates, token files), removed with everything in it when dropped, unless the test
/// is failing: then it stays for a look, as [`Cujo`]'s directory does. Derefs to its path.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory named after `name`, the process and a sequence number.
    pub fn new(name: &str) -> Scratch {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{name}-{}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What an instrumented application runs: an OpenTelemetry SDK tracer provider that exports
/// each span as it ends, over OTLP/gRPC to `endpoint`, as service `service`. The SDK's
/// exporter blocks: build and use it on a blocking thread.
pub fn sdk_provider(
    endpoint: String,
    service: &'static str,
) -> opentelemetry_sdk::trace::SdkTracerProvider {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .expect("exporter");
    opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build()
}

/// How an instrumented application exports to cujo: the SDK's gRPC or HTTP/protobuf exporter.
#[derive(Clone, Copy, Debug)]
pub enum Sdk {
    Grpc,
    Http,
}

/// Ends `n` spans named `name` as service `service` with the SDK, exported over `sdk` with
/// `headers` (gRPC metadata or HTTP headers), one export per span, on a blocking thread.
pub async fn sdk_send(
    cujo: &Cujo,
    sdk: Sdk,
    headers: Vec<(&'static str, String)>,
    service: &'static str,
    name: &'static str,
    n: usize,
) {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
    let (grpc, http) = (
        format!("http://{}", cujo.grpc),
        format!("http://{}/v1/traces", cujo.http),
    );
    tokio::task::spawn_blocking(move || {
        let exporter = match sdk {
            Sdk::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &headers {
                    metadata.insert(*k, v.parse().expect("metadata value"));
                }
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(grpc)
                    .with_metadata(metadata)
                    .build()
                    .expect("grpc exporter")
            }
            Sdk::Http => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(http)
                .with_headers(
                    headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<std::collections::HashMap<_, _>>(),
                )
                .build()
                .expect("http exporter"),
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("cujo-test");
        for _ in 0..n {
            tracer.in_span(name, |_| {});
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk thread");
}

/// `promtool` from Prometheus. `scripts/test.sh` installs it; elsewhere a missing promtool
/// skips the promtool checks, but never under CI.
pub fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required under CI"
        );
        eprintln!("promtool not installed: skipping the promtool checks");
        return None;
    }
    Some("promtool")
}

/// `promtool check metrics` on a scrape: fails the test with promtool's complaint.
pub fn promtool_check_metrics(metrics: &str) {
    let Some(promtool) = promtool() else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a certificate it signed for `localhost`: (CA PEM, certificate PEM, key PEM).
pub fn private_ca() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cujo test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A free localhost port (bound and released; good enough on a test machine).
pub fn free_addr() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr")
}

/// Polls `cond` until it returns `Some`, failing the test after `DEADLINE`.
pub async fn wait_for<T, F, Fut>(what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running cujo process.
pub struct Cujo {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// What cujo wrote to its standard output.
    pub stdout_path: PathBuf,
}

impl Cujo {
    /// Starts cujo with gRPC, HTTP and admin listeners on ports the OS picks; `extra` is
    /// appended to the YAML (exporters.otlp, admission, …).
    pub async fn start(extra: &str) -> Cujo {
        let yaml = format!(
            "receivers:\n  otlp:\n    grpc: {{ endpoint: \"127.0.0.1:0\" }}\n    http: {{ endpoint: \"127.0.0.1:0\" }}\n{extra}\n"
        );
        let admin = "exporters:\n  prometheus: { endpoint: \"127.0.0.1:0\" }\n";
        let yaml = if yaml.contains("exporters:\n") {
            yaml.replacen("exporters:\n", admin, 1)
        } else {
            format!("{yaml}{admin}")
        };
        Self::start_yaml(&yaml).await
    }

    /// Starts cujo with exactly this YAML (listeners should use port 0).
    pub async fn start_yaml(yaml: &str) -> Cujo {
        Self::start_yaml_with_env(yaml, &[]).await
    }

    /// Starts cujo with exactly this YAML and these environment variables (for `${env:}`,
    /// or `RUST_LOG` to change the log level).
    pub async fn start_yaml_with_env(yaml: &str, env: &[(&str, &str)]) -> Cujo {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_yaml_via(yaml, move |binary, config| {
            let mut command = Command::new(binary);
            command.arg("--config").arg(config).envs(env);
            command
        })
        .await
    }

    /// Starts cujo with exactly this YAML through `launch`, which is given the binary and
    /// the config file and returns the command that runs it (e.g. inside `unshare`). The
    /// command must `exec` cujo, so that the child is cujo (SIGKILL on drop reaches it).
    pub async fn start_yaml_via(
        yaml: &str,
        launch: impl FnOnce(&std::path::Path, &std::path::Path) -> Command,
    ) -> Cujo {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cujo-test-{}-{seq}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config_path = dir.join("cujo.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let log_path = dir.join("cujo.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let stdout_path = dir.join("cujo.stdout");
        let stdout = std::fs::File::create(&stdout_path).expect("stdout file");
        let mut command = launch(
            std::path::Path::new(env!("CARGO_BIN_EXE_cujo")),
            &config_path,
        );
        if !command.get_envs().any(|(k, _)| k == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let child = command
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("spawn cujo");
        let unbound: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        let mut cujo = Cujo {
            child: Some(child),
            grpc: unbound,
            http: unbound,
            admin: unbound,
            config_path,
            log_path,
            stdout_path,
        };
        let want = ["otlp-grpc", "otlp-http", "admin"]
            .into_iter()
            .filter(|l| match *l {
                "otlp-grpc" => yaml.contains("grpc:"),
                "otlp-http" => yaml.contains("http:"),
                _ => yaml.contains("prometheus:"),
            })
            .collect::<Vec<_>>();
        let start = Instant::now();
        loop {
            let log = cujo.log();
            if let Some(status) = cujo
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("cujo exited ({status}) during start-up:\n{log}");
            }
            let found: Vec<(String, SocketAddr)> = log
                .lines()
                .filter_map(|l| {
                    let listener = l.split("listener=").nth(1)?.split_whitespace().next()?;
                    let addr = l.split("address=").nth(1)?.split_whitespace().next()?;
                    Some((listener.to_string(), addr.parse().ok()?))
                })
                .collect();
            if want.iter().all(|w| found.iter().any(|(l, _)| l == w))
                && log.contains("cujo is ready")
            {
                for (l, a) in found {
                    match l.as_str() {
                        "otlp-grpc" => cujo.grpc = a,
                        "otlp-http" => cujo.http = a,
                        "admin" => cujo.admin = a,
                        _ => {}
                    }
                }
                return cujo;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "cujo not ready within {DEADLINE:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        match http_get(self.admin, "/metrics").await {
            Some((200, body)) => body,
            other => panic!("GET /metrics failed: {other:?}"),
        }
    }

    /// Value of one sample, e.g. `cujo_receiver_spans_total{transport="grpc",outcome="accepted"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// Sends SIGTERM and waits (with a deadline) for the exit status.
    /// [`Cujo::terminate`] from async code (the wait blocks, so it runs on a blocking
    /// thread): the exit status, and the stopped cujo, whose log stays readable.
    pub async fn stop(self) -> (ExitStatus, Cujo) {
        tokio::task::spawn_blocking(move || {
            let mut cujo = self;
            (cujo.terminate(), cujo)
        })
        .await
        .expect("stop")
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                panic!("cujo did not exit within {DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cujo {
    /// SIGKILLs cujo and removes its directory (config, log, stdout), unless the test is
    /// failing: then the log is kept for whoever looks into it.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking()
            && let Some(dir) = self.config_path.parent()
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("cujo-test-"))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Reads one sample's value from Prometheus text; 0 if absent.
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Latency SLI events counted in Prometheus text: `cujo_sli_events_total{sli="latency"}`
/// summed over every CUJ, series and outcome.
pub fn latency_events(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("cujo_sli_events_total{") && l.contains("sli=\"latency\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Minimal HTTP/1.0 GET, enough for the admin endpoints.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// How the downstream answers.
#[derive(Debug, Clone)]
pub enum DownstreamMode {
    Accept,
    /// UNAVAILABLE (retryable).
    Unavailable,
    /// Accept, but only after this delay.
    Slow(Duration),
    /// INVALID_ARGUMENT (permanent).
    Reject,
    /// Once UNAVAILABLE with a RetryInfo asking for this delay, then accept.
    UnavailableOnceRetryAfter(Duration),
}

#[derive(Clone)]
struct Recorder {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    mode: Arc<Mutex<DownstreamMode>>,
    headers: Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>,
    /// When each export call arrived, accepted or not.
    attempts: Arc<Mutex<Vec<Instant>>>,
}

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.attempts.lock().expect("lock").push(Instant::now());
        let mode = self.mode.lock().expect("lock").clone();
        match mode {
            DownstreamMode::UnavailableOnceRetryAfter(delay) => {
                *self.mode.lock().expect("lock") = DownstreamMode::Accept;
                let details =
                    cujo_otlp::rpc::RpcStatus::new(14, "busy (test)").with_retry_delay(delay);
                return Err(tonic::Status::with_details(
                    tonic::Code::Unavailable,
                    "busy (test)",
                    prost::Message::encode_to_vec(&details).into(),
                ));
            }
            DownstreamMode::Unavailable => {
                return Err(tonic::Status::unavailable("downstream is down (test)"));
            }
            DownstreamMode::Slow(d) => tokio::time::sleep(d).await,
            DownstreamMode::Reject => {
                return Err(tonic::Status::invalid_argument(
                    "downstream rejects this (test)",
                ));
            }
            DownstreamMode::Accept => {}
        }
        self.headers
            .lock()
            .expect("lock")
            .push(request.metadata().clone());
        self.requests
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A real OTLP/gRPC server standing in for Honeycomb or a collector.
pub struct Downstream {
    pub addr: SocketAddr,
    recorder: Recorder,
    /// Serve TLS with this identity (certificate chain PEM, key PEM).
    tls: Option<(String, String)>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Downstream {
    pub async fn start() -> Downstream {
        Self::start_on(free_addr()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Downstream {
        Self::start_with(addr, None).await
    }

    /// A downstream serving OTLP/gRPC over TLS with `cert_pem` / `key_pem`.
    pub async fn start_tls(cert_pem: String, key_pem: String) -> Downstream {
        Self::start_with(free_addr(), Some((cert_pem, key_pem))).await
    }

    async fn start_with(addr: SocketAddr, tls: Option<(String, String)>) -> Downstream {
        let recorder = Recorder {
            requests: Arc::default(),
            mode: Arc::new(Mutex::new(DownstreamMode::Accept)),
            headers: Arc::default(),
            attempts: Arc::default(),
        };
        let mut d = Downstream {
            addr,
            recorder,
            tls,
            stop: None,
            task: None,
        };
        d.serve().await;
        d
    }

    async fn serve(&mut self) {
        let listener = wait_for("downstream port", || async {
            tokio::net::TcpListener::bind(self.addr).await.ok()
        })
        .await;
        let (tx, rx) = oneshot::channel();
        let svc = TraceServiceServer::new(self.recorder.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .max_decoding_message_size(64 * 1024 * 1024);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let mut server = tonic::transport::Server::builder();
        if let Some((cert, key)) = &self.tls {
            let identity = tonic::transport::Identity::from_pem(cert, key);
            server = server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .expect("tls config");
        }
        self.task = Some(tokio::spawn(async move {
            let _ = server
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
        }));
        self.stop = Some(tx);
    }

    /// Stops listening (connections are refused) until [`Downstream::restart`].
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn restart(&mut self) {
        self.serve().await;
    }

    pub fn set_mode(&self, mode: DownstreamMode) {
        *self.recorder.mode.lock().expect("lock") = mode;
    }

    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.recorder.requests.lock().expect("lock").clone()
    }

    pub fn attempts(&self) -> Vec<Instant> {
        self.recorder.attempts.lock().expect("lock").clone()
    }

    pub fn metadata(&self) -> Vec<tonic::metadata::MetadataMap> {
        self.recorder.headers.lock().expect("lock").clone()
    }

    pub fn span_count(&self) -> usize {
        self.recorder
            .requests
            .lock()
            .expect("lock")
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }

    /// How many received spans are named `name`.
    pub fn spans_named(&self, name: &str) -> usize {
        self.spans().iter().filter(|s| s.span.name == name).count()
    }

    /// Every received span with its resource's `service.name` and its scope's name.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let mut out = Vec::new();
        for req in self.requests() {
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    let scope = ss
                        .scope
                        .as_ref()
                        .map(|s| s.name.clone())
                        .unwrap_or_default();
                    for span in ss.spans {
                        out.push(ReceivedSpan {
                            service: service.clone(),
                            scope: scope.clone(),
                            span,
                        });
                    }
                }
            }
        }
        out
    }

    /// Waits until at least `n` spans have arrived.
    pub async fn wait_for_spans(&self, n: usize) {
        wait_for(&format!("{n} spans downstream"), || async {
            (self.span_count() >= n).then_some(())
        })
        .await;
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub scope: String,
    pub span: Span,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<String> {
        string_attr(&self.span.attributes, key)
    }
}

pub fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyInner::StringValue(s)) => Some(s.clone()),
            Some(AnyInner::IntValue(i)) => Some(i.to_string()),
            Some(AnyInner::BoolValue(b)) => Some(b.to_string()),
            _ => None,
        })
}

/// YAML for an OTLP exporter pointed at `downstream`.
pub fn exporter_yaml(downstream: SocketAddr, extra: &str) -> String {
    let retry = if extra.contains("retry:") {
        ""
    } else {
        "    retry: { initial_interval: 50ms, max_interval: 200ms, max_elapsed: 2m }\n"
    };
    format!(
        "exporters:\n  otlp:\n    endpoint: \"http://{downstream}\"\n    protocol: grpc\n    compression: gzip\n    batch: {{ max_spans: 512, timeout: 50ms }}\n{retry}{extra}"
    )
}

/// A request of `n` spans under one resource, with ids unique to `(seed, i)`.
pub fn make_request(service: &str, seed: u64, n: usize) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(AnyInner::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let spans = (0..n)
        .map(|i| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&seed.to_be_bytes());
            trace_id[8..].copy_from_slice(&((i / 4) as u64 + 1).to_be_bytes());
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&(seed as u32).to_be_bytes());
            span_id[4..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: format!("GET /items/{i}"),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                end_time_unix_nano: 1_700_000_000_050_000_000 + i as u64,
                attributes: vec![kv("http.request.method", "GET"), kv("user.tier", "gold")],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "load".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// (trace id, span id) of every span in `req`.
pub fn span_keys(req: &ExportTraceServiceRequest) -> Vec<(Vec<u8>, Vec<u8>)> {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect()
}

/// Checks the accounting invariant on cujo's `/metrics`, `accepted = exported +
/// dropped{reason} + in_flight` over both receivers; returns (accepted, exported, dropped).
pub async fn assert_accounting(cujo: &Cujo) -> (f64, f64, f64) {
    let m = cujo.metrics().await;
    let accepted = metric_value(
        &m,
        "cujo_receiver_spans_total{transport=\"grpc\",outcome=\"accepted\"}",
    ) + metric_value(
        &m,
        "cujo_receiver_spans_total{transport=\"http\",outcome=\"accepted\"}",
    );
    let exported = metric_value(&m, "cujo_exporter_sent_spans_total");
    let dropped: f64 = m
        .lines()
        .filter(|l| l.starts_with("cujo_dropped_spans_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    let in_flight = metric_value(&m, "cujo_in_flight_spans");
    assert_eq!(
        accepted,
        exported + dropped + in_flight,
        "accounting invariant:\n{m}"
    );
    (accepted, exported, dropped)
}

/// A gRPC client that retries what OTLP says is retryable, honouring RetryInfo.
pub struct RetryingClient {
    client:
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient<
            tonic::transport::Channel,
        >,
    /// Refusals seen (UNAVAILABLE / RESOURCE_EXHAUSTED with RetryInfo).
    pub refusals: u64,
}

impl RetryingClient {
    pub async fn connect(addr: SocketAddr) -> RetryingClient {
        let client = wait_for("grpc connect", || async {
            opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
                format!("http://{addr}"),
            )
            .await
            .ok()
        })
        .await;
        RetryingClient {
            client,
            refusals: 0,
        }
    }

    /// Sends until accepted; `Err` with the status if refused for good or the deadline passes.
    pub async fn send(&mut self, req: &ExportTraceServiceRequest) -> Result<(), tonic::Status> {
        let start = Instant::now();
        loop {
            match self.client.export(req.clone()).await {
                Ok(_) => return Ok(()),
                // cujo's overload answer: UNAVAILABLE with RetryInfo. A transport error (cujo
                // gone) has no RetryInfo and ends the loop.
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && cujo_otlp::rpc::RpcStatus::from_details_bytes(status.details())
                            .and_then(|s| s.retry_delay())
                            .is_some() =>
                {
                    self.refusals += 1;
                    let delay = Duration::from_millis(50);
                    if start.elapsed() > DEADLINE {
                        return Err(status);
                    }
                    tokio::time::sleep(delay).await;
                }
                Err(status) => return Err(status),
            }
        }
    }
}
