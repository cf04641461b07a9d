//! `cujo status`: the deploy gate. Asks a running cujo for its SLO status, prints a table and
//! exits non-zero when an error budget is below the bound.
//!
//! Exit status: 0 when every selected objective has at least `--min-budget` of its error budget
//! left, 1 when one has less (each is named on stderr), 2 when the status cannot be had (bad
//! arguments, cujo unreachable, an answer that is not a cujo report, an unknown CUJ).
//!
//! With `--prometheus URL` it judges the whole fleet instead: the objectives as the recording
//! rules of `cujo rules` compute them over every instance's counters ([`prometheus`]). Several
//! replicas sharing the traffic each see only their share, so a fleet gates on Prometheus.
//!
//! An objective without valid events over its window has no budget to judge ("no data"):
//! it passes by default (nothing is spent, and a new or quiet CUJ must not block every
//! deploy) and is shown as `no data` in the table and counted in the summary;
//! `--on-no-data fail` fails it instead.
//!
//! A client only: it reads the JSON API of [`super::status`] (or Prometheus' query API) over
//! HTTP or HTTPS and needs no configuration file. It must not link to a running engine or read the config. An admin
//! listener with `exporters.prometheus.auth` needs a bearer token: `CUJO_STATUS_TOKEN` or
//! `--token-file`, never an argument (the process list would show it). One with
//! `exporters.prometheus.tls` is reached at `https://`: `--ca-file` trusts a private CA
//! besides the public roots, and `--cert-file`/`--key-file` present a client certificate
//! when it asks for one (`client_ca_file`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

mod prometheus;

/// The JSON API path on the admin listener.
const API_PATH: &str = "/api/v1/slos";

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A running cujo's admin listener (`exporters.prometheus.endpoint`), e.g.
    /// `http://cujo.observability:9464` or `127.0.0.1:9464`: that instance's SLOs.
    #[arg(
        long,
        env = "CUJO_STATUS_ENDPOINT",
        required_unless_present = "prometheus",
        conflicts_with = "prometheus"
    )]
    pub endpoint: Option<String>,
    /// A Prometheus that scrapes every cujo instance and evaluates `cujo rules`, e.g.
    /// `http://prometheus.monitoring:9090`: the fleet's SLOs (use this with several
    /// replicas; each instance alone sees only its share of the traffic).
    #[arg(long, env = "CUJO_STATUS_PROMETHEUS")]
    pub prometheus: Option<String>,
    /// Check only this CUJ (default: every configured CUJ).
    #[arg(long)]
    pub cuj: Option<String>,
    /// The least error budget an objective may have left and pass: a fraction (`0.25`) or a
    /// percentage (`25%`). Budgets go negative when overspent.
    #[arg(long, default_value = "0.25", value_parser = parse_budget, allow_hyphen_values = true)]
    pub min_budget: f64,
    /// What an objective without valid events over its window (no budget to judge) gets:
    /// `pass` (nothing is spent) or `fail` (require evidence before a deploy).
    #[arg(long, value_enum, default_value_t = OnNoData::Pass)]
    pub on_no_data: OnNoData,
    /// `table` for people, `json` for programs (the API's answer as received).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Give up on cujo after this long (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// A file holding the bearer token for an admin listener with `exporters.prometheus.auth`
    /// (its first line that is not blank or a `#` comment). Without it, the token in the
    /// environment variable CUJO_STATUS_TOKEN, if set. Never taken on the command line, where
    /// the process list would show it.
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// PEM CA certificates to trust for an `https://` endpoint, besides the public roots
    /// (an admin listener with a certificate from a private CA).
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate to present to an admin listener that requires one
    /// (`exporters.prometheus.tls.client_ca_file`); needs `--key-file`.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key of `--cert-file`.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,
}

/// The TLS client `cujo status` uses for `https://`: the public roots, `--ca-file`, and the
/// client certificate of `--cert-file`/`--key-file`. Errors name the option and the file.
fn tls_config(args: &StatusArgs) -> Result<rustls::ClientConfig, GateError> {
    use cujo_otlp::exporter::transport::{TlsSetupError, client_tls_config_with_identity};
    let identity = args.cert_file.as_deref().zip(args.key_file.as_deref());
    client_tls_config_with_identity(args.ca_file.as_deref(), identity).map_err(|e| {
        GateError::Usage(match e {
            TlsSetupError::CaFile { path, detail } => format!("--ca-file {path}: {detail}"),
            TlsSetupError::Identity { path, detail } => {
                let option = if args.key_file.as_deref() == Some(std::path::Path::new(&path)) {
                    "--key-file"
                } else {
                    "--cert-file"
                };
                format!("{option} {path}: {detail}")
            }
            TlsSetupError::Tls(detail) => format!("TLS setup failed: {detail}"),
        })
    })
}

/// The environment variable `cujo status` reads a bearer token from.
pub const TOKEN_ENV: &str = "CUJO_STATUS_TOKEN";

/// The bearer token to send, from `--token-file` or [`TOKEN_ENV`]; errors name where it was
/// looked for, never the token.
fn bearer_token(args: &StatusArgs) -> Result<Option<String>, GateError> {
    let (token, from) = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                GateError::Usage(format!("--token-file {}: cannot read: {e}", path.display()))
            })?;
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or_default()
                .to_string();
            (line, format!("--token-file {}", path.display()))
        }
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t.trim().to_string(), TOKEN_ENV.to_string()),
            Err(_) => return Ok(None),
        },
    };
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(GateError::Usage(format!(
            "{from}: expected a bearer token (visible ASCII, no spaces)"
        )));
    }
    Ok(Some(token))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnNoData {
    Pass,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn parse_budget(s: &str) -> Result<f64, String> {
    let bad = || format!("expected a fraction like 0.25 or a percentage like 25%, got {s:?}");
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if !v.is_finite() || v > 1.0 {
        return Err(format!(
            "{s:?} is not a budget: at most 1 (100%) of it can be left"
        ));
    }
    Ok(v)
}

/// Why the status could not be had (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{0}")]
    Usage(String),
    #[error("--endpoint {endpoint:?}: {detail}")]
    Endpoint { endpoint: String, detail: String },
    #[error("cannot reach {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("no answer from {url} within {timeout:?} (--timeout)")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}: {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{url} did not answer with a cujo SLO report ({cause}); is it cujo's admin listener (exporters.prometheus.endpoint)?"
    )]
    NotAReport { url: String, cause: String },
    #[error("{url} reports no SLO objectives{scope}: nothing to gate on")]
    NoObjectives { url: String, scope: String },
    #[error("--prometheus {url:?}: {detail}")]
    PrometheusUrl { url: String, detail: String },
    #[error("{url} did not answer as Prometheus' query API ({cause})")]
    NotPrometheus { url: String, cause: String },
    #[error(
        "Prometheus at {url} has no slo:objective:ratio series{scope}: are the rules of `cujo rules` loaded there?"
    )]
    NoRules { url: String, scope: String },
}

/// The parts of the report the gate reads. Its own shape, not `cujo_sli::report::Report`, so
/// that a gate of one version can judge a cujo of another: unknown fields are ignored.
#[derive(Debug, Deserialize, Serialize)]
struct StatusView {
    cujs: Vec<CujView>,
    /// Set by an instance that is one of a fleet (`slo.fleet`): its numbers are its share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet: Option<FleetView>,
}

#[derive(Debug, Deserialize, Serialize)]
struct FleetView {
    prometheus: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct CujView {
    name: String,
    #[serde(default)]
    objectives: Vec<ObjectiveView>,
}

#[derive(Debug, Deserialize, Serialize)]
struct ObjectiveView {
    sli: String,
    target: f64,
    window: String,
    window_seconds: u64,
    #[serde(default)]
    windows: Vec<WindowView>,
    /// Absent (`null`) without valid events over the objective's window.
    #[serde(default)]
    budget_remaining: Option<f64>,
    #[serde(default)]
    page: bool,
    #[serde(default)]
    ticket: bool,
    /// Alerts held for lack of data (only their severity is read).
    #[serde(default)]
    alerts_held: Vec<HeldView>,
    #[serde(default)]
    exhaustion_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
struct HeldView {
    severity: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct WindowView {
    seconds: u64,
    #[serde(default)]
    sli: Option<f64>,
    #[serde(default)]
    burn_rate: f64,
}

pub fn run(args: &StatusArgs) -> ExitCode {
    let token = match bearer_token(args) {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    let tls = match tls_config(args) {
        Ok(t) => t,
        Err(e) => return usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cujo status: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let (source, view, body) = match (&args.prometheus, &args.endpoint) {
        (Some(given), _) => {
            let prometheus = prometheus::Prometheus {
                given,
                timeout: args.timeout,
                token: token.as_deref(),
                tls,
            };
            match runtime.block_on(prometheus.view(args.cuj.as_deref())) {
                Ok(view) => {
                    let body = serde_json::to_vec(&view).unwrap_or_default();
                    (given.clone(), view, body)
                }
                Err(e) => return usage_error(&e),
            }
        }
        (None, endpoint) => {
            let url = match status_url(endpoint.as_deref().unwrap_or_default(), args.cuj.as_deref())
            {
                Ok(u) => u,
                Err(e) => return usage_error(&e),
            };
            let body = match runtime.block_on(fetch(&url, args.timeout, token.as_deref(), tls)) {
                Ok(b) => b.to_vec(),
                Err(e) => return usage_error(&e),
            };
            match serde_json::from_slice::<StatusView>(&body) {
                Ok(view) => (url.to_string(), view, body),
                Err(e) => {
                    return usage_error(&GateError::NotAReport {
                        url: url.to_string(),
                        cause: e.to_string(),
                    });
                }
            }
        }
    };
    if let Some(fleet) = &view.fleet {
        eprintln!(
            "cujo status: warning: {source} is one of a fleet and reports its share of the traffic only; gate on the fleet with --prometheus {}",
            fleet.prometheus
        );
    }
    let verdicts = judge(&view, args.min_budget, args.on_no_data);
    if verdicts.is_empty() {
        return usage_error(&GateError::NoObjectives {
            url: source,
            scope: args
                .cuj
                .as_deref()
                .map(|c| format!(" for CUJ \"{c}\""))
                .unwrap_or_default(),
        });
    }
    match args.format {
        Format::Table => print!("{}", table(&verdicts)),
        Format::Json => println!("{}", String::from_utf8_lossy(&body).trim_end()),
    }
    let failing: Vec<&Verdict> = verdicts.iter().filter(|v| !v.passes).collect();
    let no_data = verdicts
        .iter()
        .filter(|v| v.objective.budget_remaining.is_none())
        .count();
    let bound = percent(args.min_budget, 1);
    if failing.is_empty() {
        if args.format == Format::Table {
            let judged = verdicts.len() - no_data;
            let mut line = format!(
                "ok: all {judged} objectives with data have at least {bound} of their error budget left"
            );
            if no_data > 0 {
                let _ = write!(line, "; {no_data} with no data pass (--on-no-data pass)");
            }
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "cujo status: {} of {} objectives have less than {bound} of their error budget left{}:",
        failing.len(),
        verdicts.len(),
        if args.on_no_data == OnNoData::Fail && no_data > 0 {
            " or no data (--on-no-data fail)"
        } else {
            ""
        }
    );
    for v in failing {
        eprintln!(
            "  {} {} ({} target {}): {}",
            v.cuj,
            v.objective.sli,
            v.objective.window,
            percent(v.objective.target, 3),
            v.objective.budget_remaining.map_or_else(
                || "no data".to_string(),
                |b| format!("{} left", percent(b, 1))
            )
        );
    }
    ExitCode::FAILURE
}

fn usage_error(e: &GateError) -> ExitCode {
    eprintln!("cujo status: {e}");
    ExitCode::from(2)
}

/// `endpoint` + `/api/v1/slos[?cuj=NAME]`. A bare `host:port` means `http://host:port`; a path
/// on the endpoint (cujo behind a proxy prefix) is kept.
fn status_url(endpoint: &str, cuj: Option<&str>) -> Result<Uri, GateError> {
    let bad = |detail: String| GateError::Endpoint {
        endpoint: endpoint.to_string(),
        detail,
    };
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(bad(
            "empty; expected a URL like http://127.0.0.1:9464".into()
        ));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let base: Uri = with_scheme.parse().map_err(|e| {
        bad(format!(
            "not a URL ({e}); expected e.g. http://127.0.0.1:9464"
        ))
    })?;
    let scheme = match base.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_string(),
        other => {
            return Err(bad(format!(
                "unsupported scheme {:?}; expected http:// or https://",
                other.unwrap_or("")
            )));
        }
    };
    let authority = base
        .authority()
        .ok_or_else(|| bad("no host; expected e.g. http://127.0.0.1:9464".into()))?;
    if base.query().is_some() {
        return Err(bad(
            "has a query string; give the base URL (cujo adds /api/v1/slos)".into(),
        ));
    }
    let mut path = format!("{}{API_PATH}", base.path().trim_end_matches('/'));
    if let Some(cuj) = cuj {
        if cuj.is_empty() {
            return Err(GateError::Usage(
                "--cuj is empty; name a CUJ or leave --cuj out".into(),
            ));
        }
        let _ = write!(path, "?cuj={}", percent_encode(cuj));
    }
    Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| bad(e.to_string()))
}

/// Query-string encoding: unreserved characters stay, every other byte is `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// GETs `url`; the body of a 200 answer, an error naming the URL otherwise.
/// `tls` is used for an `https://` URL.
async fn fetch(
    url: &Uri,
    timeout: Duration,
    token: Option<&str>,
    tls: rustls::ClientConfig,
) -> Result<Bytes, GateError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = http::Request::get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("cujo-status/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| GateError::Endpoint {
            endpoint: url.to_string(),
            detail: e.to_string(),
        })?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| GateError::Unreachable {
                url: url.to_string(),
                cause: error_chain(&e),
            })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| GateError::Unreachable {
                url: url.to_string(),
                cause: format!("reading the answer: {}", error_chain(&e)),
            })?
            .to_bytes();
        Ok::<_, GateError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| GateError::Timeout {
            url: url.to_string(),
            timeout,
        })??;
    if status.is_success() {
        return Ok(body);
    }
    Err(GateError::Refused {
        url: url.to_string(),
        status: status.as_u16(),
        detail: refusal_detail(status, &body),
    })
}

/// The API's `{"error": …}` message, or a hint when the answer is not from the API.
fn refusal_detail(status: http::StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        error: String,
    }
    if let Ok(e) = serde_json::from_slice::<ApiError>(body) {
        return e.error;
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(200).collect();
    let hint = if status == http::StatusCode::NOT_FOUND {
        "; is it cujo's admin listener (exporters.prometheus.endpoint) with CUJs configured?"
    } else if status == http::StatusCode::UNAUTHORIZED {
        "; the admin listener needs a bearer token (exporters.prometheus.auth): give it in CUJO_STATUS_TOKEN or --token-file"
    } else {
        ""
    };
    if text.is_empty() {
        format!("empty answer{hint}")
    } else {
        format!("{text:?}{hint}")
    }
}

/// An error and its causes, outermost first: hyper's own message ("client error (Connect)")
/// says little without the I/O error under it ("Connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// One objective judged against the bound.
struct Verdict<'a> {
    cuj: &'a str,
    objective: &'a ObjectiveView,
    passes: bool,
}

fn judge(view: &StatusView, min_budget: f64, on_no_data: OnNoData) -> Vec<Verdict<'_>> {
    view.cujs
        .iter()
        .flat_map(|c| {
            c.objectives.iter().map(move |o| Verdict {
                cuj: &c.name,
                objective: o,
                passes: match o.budget_remaining {
                    Some(b) => b >= min_budget,
                    None => on_no_data == OnNoData::Pass,
                },
            })
        })
        .collect()
}

fn table(verdicts: &[Verdict<'_>]) -> String {
    let header = [
        "CUJ",
        "SLI",
        "TARGET",
        "WINDOW",
        "SLI NOW",
        "BUDGET LEFT",
        "BURN 1H",
        "ALERT",
        "GATE",
    ];
    let rows: Vec<[String; 9]> = verdicts
        .iter()
        .map(|v| {
            let o = v.objective;
            let own = o.windows.iter().find(|w| w.seconds == o.window_seconds);
            let hour = o.windows.iter().find(|w| w.seconds == 3600);
            let alert = match (o.page, o.ticket) {
                (true, _) => "page".to_string(),
                (false, true) => "ticket".to_string(),
                (false, false) => match o.alerts_held.first() {
                    Some(h) => format!("{} held (too little data)", h.severity),
                    None => "none".to_string(),
                },
            };
            let alert = match o.exhaustion_seconds {
                // Zero: the budget is already spent (or overspent), not about to be.
                Some(s) if (o.page || o.ticket) && s <= 0.0 => format!("{alert} (exhausted)"),
                Some(s) if o.page || o.ticket => {
                    format!("{alert} (empty in {})", short_duration(s))
                }
                _ => alert,
            };
            [
                v.cuj.to_string(),
                o.sli.clone(),
                percent(o.target, 3),
                o.window.clone(),
                own.and_then(|w| w.sli)
                    .map(|s| percent(s, 3))
                    .unwrap_or_else(|| "-".into()),
                o.budget_remaining
                    .map_or_else(|| "no data".to_string(), |b| percent(b, 1)),
                hour.map(|w| format!("{:.2}", w.burn_rate))
                    .unwrap_or_else(|| "-".into()),
                alert,
                if v.passes { "pass" } else { "FAIL" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

/// `x` as a percentage with at most `decimals` decimals, trailing zeros dropped: 0.999 → `99.9%`.
fn percent(x: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, x * 100.0);
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    let s = if s == "-0" { "0".to_string() } else { s };
    format!("{s}%")
}

/// `5400` → `1h30m`, rounded to the minute (seconds below one).
fn short_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    let s = seconds.round() as u64;
    if s < 60 {
        return format!("{s}s");
    }
    let m = (s + 30) / 60;
    let (d, h, m) = (m / 1440, (m / 60) % 24, m % 60);
    match (d, h, m) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_as_fractions_or_percentages() {
        assert_eq!(parse_budget("0.25"), Ok(0.25));
        assert_eq!(parse_budget("25%"), Ok(0.25));
        assert_eq!(parse_budget("-0.5"), Ok(-0.5));
        assert!(parse_budget("1.5").unwrap_err().contains("at most 1"));
        assert!(parse_budget("lots").unwrap_err().contains("\"lots\""));
        assert!(parse_budget("NaN").is_err());
    }

    #[test]
    fn negative_budgets_are_taken_as_written_on_the_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            status: StatusArgs,
        }
        for (given, want) in [("-0.5", -0.5), ("-10%", -0.1), ("25%", 0.25)] {
            let cli = Cli::try_parse_from(["cujo", "--endpoint", "x:1", "--min-budget", given])
                .unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(cli.status.min_budget, want, "{given}");
        }
        let cli = Cli::try_parse_from(["cujo", "--min-budget=-0.25", "--endpoint", "x:1"])
            .expect("= form");
        assert_eq!(cli.status.min_budget, -0.25);
    }

    #[test]
    fn the_table_says_exhausted_for_a_spent_budget() {
        let view: StatusView = serde_json::from_str(
            r#"{"cujs":[{"name":"checkout","objectives":[
                {"sli":"availability","target":0.999,"window":"30d","window_seconds":2592000,
                 "budget_remaining":-0.4,"page":true,"exhaustion_seconds":0},
                {"sli":"latency","target":0.99,"window":"30d","window_seconds":2592000,
                 "budget_remaining":0.5,"ticket":true,"exhaustion_seconds":5400}]}]}"#,
        )
        .expect("view");
        let text = table(&judge(&view, 0.25, OnNoData::Pass));
        assert!(text.contains("page (exhausted)"), "{text}");
        assert!(text.contains("ticket (empty in 1h30m)"), "{text}");
        assert!(!text.contains("empty in 0s"), "{text}");
    }

    #[test]
    fn no_data_passes_by_default_and_fails_when_asked() {
        let view: StatusView = serde_json::from_str(
            r#"{"cujs":[{"name":"new","objectives":[
                {"sli":"availability","target":0.999,"window":"30d","window_seconds":2592000,
                 "windows":[{"seconds":2592000,"sli":null,"burn_rate":0}],
                 "budget_remaining":null},
                {"sli":"latency","target":0.99,"window":"30d","window_seconds":2592000,
                 "budget_remaining":0.9,
                 "alerts_held":[{"severity":"page","window":"1h"}]}]}]}"#,
        )
        .expect("view");
        let pass = judge(&view, 0.25, OnNoData::Pass);
        assert!(pass.iter().all(|v| v.passes));
        let text = table(&pass);
        let row = text.lines().nth(1).expect("row");
        assert!(row.contains("no data") && row.ends_with("pass"), "{text}");
        assert!(text.contains("page held (too little data)"), "{text}");
        let fail = judge(&view, 0.25, OnNoData::Fail);
        assert_eq!(
            fail.iter().map(|v| v.passes).collect::<Vec<_>>(),
            [false, true]
        );
    }

    #[test]
    fn endpoints_become_the_api_url() {
        let url = |e: &str, c: Option<&str>| {
            status_url(e, c)
                .map(|u| u.to_string())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            url("127.0.0.1:9464", None).unwrap(),
            "http://127.0.0.1:9464/api/v1/slos"
        );
        assert_eq!(
            url("http://cujo:9464/prefix/", Some("post message/x")).unwrap(),
            "http://cujo:9464/prefix/api/v1/slos?cuj=post%20message%2Fx"
        );
        assert_eq!(
            url("https://cujo:9464", None).unwrap(),
            "https://cujo:9464/api/v1/slos"
        );
        assert!(url("", None).unwrap_err().contains("empty"));
        assert!(url("ftp://x", None).unwrap_err().contains("\"ftp\""));
        assert!(
            url("http://x", Some(""))
                .unwrap_err()
                .contains("--cuj is empty")
        );
    }

    #[test]
    fn percentages_and_durations_read_naturally() {
        assert_eq!(percent(0.999, 3), "99.9%");
        assert_eq!(percent(0.25, 1), "25%");
        assert_eq!(percent(-99.0, 1), "-9900%");
        assert_eq!(percent(-0.00001, 1), "0%");
        assert_eq!(short_duration(5400.0), "1h30m");
        assert_eq!(short_duration(42.0), "42s");
        assert_eq!(short_duration(3.0 * 86400.0 + 7200.0), "3d2h");
    }
}
