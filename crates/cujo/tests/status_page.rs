//! The status page in a real browser: known CUJ traffic from the real OpenTelemetry SDK goes
//! through the real binary, then headless Chromium (driven over WebDriver by `chromedriver`)
//! loads `/` from the admin listener and the test reads what a person would see: the SLI per
//! window, budgets, alert states, the worst tier first, the charts, and user text escaped.
//! A screenshot of the page is saved under the target directory.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`scripts/test.sh` installs
//! them); without them the test fails and says so.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use fantoccini::{Client, ClientBuilder, Locator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use support::{Cujo, free_addr, http_get, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"assembler: { decision_wait: 200ms, trace_timeout: 2s }
cujs:
  - name: post_message
    match:
      service.name: frontend-api
      span.name: "POST /v1/messages"
    dimensions: [user.tier]
    availability:
      bad: [ { status: error } ]
    latency: { threshold: 300ms, measure: root }
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
      - { sli: latency, target: 97.5%, window: 30d }
      - { sli: availability, target: 50%, window: 7d }
    # Seconds of traffic: alerts are judged without the cold-start gate.
    alerts: { min_events: 0, min_coverage: 0% }
  - name: "search <i>beta</i>"
    match:
      service.name: frontend-api
      span.name: "GET /search"
    dimensions: [user.tier]
    availability:
      bad: [ { status: error } ]
    objectives:
      - { sli: availability, target: 99%, window: 30d }
    # Seconds of traffic: alerts are judged without the cold-start gate.
    alerts: { min_events: 0, min_coverage: 0% }
"#;

/// A tier value that would run script if the page did not escape it.
const HOSTILE_TIER: &str = "<script>window.__cujoPwned=1</script>";

/// How long the browser may take for anything (a loaded 2-core machine starts Chromium slowly).
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

/// Trace `i` of 200: (tier, error, slow). `free` fails 16 of its 100, `gold` 4 of its 100;
/// every tenth trace takes 500 ms (over the 300 ms threshold).
fn shape(i: u64) -> (&'static str, bool, bool) {
    let (tier, k) = if i < 100 {
        ("free", i)
    } else {
        ("gold", i - 100)
    };
    let errors = if tier == "free" { 16 } else { 4 };
    (tier, k < errors, i % 10 == 5)
}

/// Sends the traffic with the SDK; returns the trace ids (hex) of the free tier's bad events
/// (errors and slow ones).
async fn send(endpoint: String) -> HashSet<String> {
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "frontend-api");
        let t = provider.tracer("web");
        let start = SystemTime::now() - Duration::from_secs(5);
        let mut free_bad = HashSet::new();
        for i in 0..200 {
            let (tier, error, slow) = shape(i);
            let mut root = t
                .span_builder("POST /v1/messages")
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .with_attributes([KeyValue::new("user.tier", tier)])
                .start(&t);
            if error {
                root.set_status(Status::error("boom"));
            }
            if tier == "free" && (error || slow) {
                free_bad.insert(root.span_context().trace_id().to_string());
            }
            let cx = Context::new().with_remote_span_context(root.span_context().clone());
            let took = Duration::from_millis(if slow { 500 } else { 100 });
            let mut child = t
                .span_builder("db")
                .with_start_time(start)
                .start_with_context(&t, &cx);
            child.end_with_timestamp(start + took / 2);
            root.end_with_timestamp(start + took);
        }
        for i in 0..3 {
            let mut root = t
                .span_builder("GET /search")
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .with_attributes([KeyValue::new("user.tier", HOSTILE_TIER)])
                .start(&t);
            if i == 0 {
                root.set_status(Status::error("boom"));
            }
            root.end_with_timestamp(start + Duration::from_millis(20));
        }
        let _ = provider.shutdown();
        free_bad
    })
    .await
    .expect("sdk")
}

/// Sum of the `cujo_sli_events_total` samples of one CUJ and SLI.
fn events(metrics: &str, cuj: &str, sli: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with(&format!("cujo_sli_events_total{{cuj=\"{cuj}\""))
                && l.contains(&format!("sli=\"{sli}\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// An executable on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn missing_browser(what: &str) -> ! {
    panic!(
        "the status page test drives headless Chromium over WebDriver, but {what}: install the \
         Debian packages `chromium` and `chromium-driver` (apt-get install chromium \
         chromium-driver; scripts/test.sh does this when run as root)"
    )
}

/// `chromedriver` on a free port, stopped when dropped.
struct ChromeDriver {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl ChromeDriver {
    async fn start(dir: &Path) -> ChromeDriver {
        let Some(driver) = on_path("chromedriver") else {
            missing_browser("`chromedriver` is not on PATH")
        };
        let addr = free_addr();
        let log = dir.join("chromedriver.log");
        let child = Command::new(driver)
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| missing_browser(&format!("`chromedriver` did not start: {e}")));
        let mut driver = ChromeDriver { child, addr, log };
        wait_for("chromedriver to be ready", || {
            let exited = driver.child.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    panic!("chromedriver exited ({status}) during start-up");
                }
                let status = tokio::time::timeout(Duration::from_secs(5), get(addr, "/status"));
                match status.await {
                    Ok(Some(answer)) if answer.contains("\"ready\":true") => Some(()),
                    _ => None,
                }
            }
        })
        .await;
        driver
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Chromium binary on PATH.
fn chromium() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(on_path)
        .unwrap_or_else(|| missing_browser("no `chromium` binary is on PATH"))
}

/// A headless Chromium session of `chromium` through `driver`.
async fn browser(driver: &ChromeDriver, chromium: &Path, profile: &Path) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "timeouts": { "pageLoad": 120_000, "script": 60_000, "implicit": 0 },
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--no-first-run",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("an object literal")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut builder = ClientBuilder::new(connector);
    builder.capabilities(caps);
    let url = format!("http://{}", driver.addr);
    match tokio::time::timeout(BROWSER_DEADLINE, builder.connect(&url)).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => panic!(
            "could not start headless Chromium through chromedriver: {e}\n{}",
            driver.log()
        ),
        Err(_) => panic!("Chromium did not start within {BROWSER_DEADLINE:?}"),
    }
}

/// The visible text of the element with this id, once it exists.
async fn text(client: &Client, id: &str) -> String {
    let el = client
        .wait()
        .at_most(BROWSER_DEADLINE)
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("element #{id} never appeared: {e}"));
    el.text().await.expect("text")
}

async fn attr(client: &Client, id: &str, name: &str) -> Option<String> {
    let el = client.find(Locator::Id(id)).await.expect("element");
    el.attr(name).await.expect("attribute")
}

async fn css_text(client: &Client, selector: &str) -> String {
    client
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no element matches {selector}: {e}"))
        .text()
        .await
        .expect("text")
}

/// The whole answer to `GET path` (status line, headers, body): read up to its
/// Content-Length, since chromedriver keeps the connection open whatever the request asks.
async fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(support::DEADLINE, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .is_some_and(|len| body.len() >= len)
        });
        if n == 0 || complete {
            return Some(text.into_owned());
        }
    }
}

/// Status line and headers of `GET path`, lowercased.
async fn head(addr: SocketAddr, path: &str) -> String {
    let answer = get(addr, path).await.expect("an answer");
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_slos_in_a_real_browser() {
    let dir = std::env::temp_dir().join(format!("cujo-status-page-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Fail early, before any traffic, when the browser is missing.
    let chromium = chromium();
    let driver = ChromeDriver::start(&dir).await;

    let cujo = Cujo::start(CONFIG).await;
    let free_bad = send(format!("http://{}", cujo.grpc)).await;
    assert_eq!(
        free_bad.len(),
        16 + 10 - 2,
        "traces 5 and 15 are errors and slow"
    );
    wait_for("all SLI events on /metrics", || async {
        let m = cujo.metrics().await;
        (events(&m, "post_message", "availability") == 200.0
            && events(&m, "post_message", "latency") == 200.0
            && events(&m, "search <i>beta</i>", "availability") == 3.0)
            .then_some(())
    })
    .await;

    // Served as a self-contained page that may load nothing from anywhere.
    let headers = head(cujo.admin, "/").await;
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert!(
        headers.contains("content-type: text/html; charset=utf-8"),
        "{headers}"
    );
    assert!(
        headers.contains("content-security-policy: default-src 'none'"),
        "{headers}"
    );
    let (status, body) = http_get(cujo.admin, "/?refresh=soon")
        .await
        .expect("answer");
    assert_eq!(status, 400, "a bad refresh is refused: {body}");
    assert!(
        body.contains("refresh"),
        "the error names the parameter: {body}"
    );

    let client = browser(&driver, &chromium, &dir.join("profile")).await;
    let url = format!("http://{}/?refresh=0", cujo.admin);
    tokio::time::timeout(BROWSER_DEADLINE, client.goto(&url))
        .await
        .expect("page loads in time")
        .expect("goto");
    assert_eq!(client.title().await.expect("title"), "cujo — SLO status");

    // post_message: 200 events, 20 bad, 20 slow, all in the last 5 minutes.
    assert_eq!(css_text(&client, "#cuj-0 h2").await, "post_message");
    assert_eq!(text(&client, "cuj-0-obj-0-sli-5m").await, "90.00%");
    assert_eq!(text(&client, "cuj-0-obj-0-events-5m").await, "180 / 200");
    assert_eq!(text(&client, "cuj-0-obj-0-sli-30d").await, "90.00%");
    assert_eq!(text(&client, "cuj-0-obj-0-burn-1h").await, "100×");
    // 99.9%: 20 bad against an allowance of 0.2 — spent 100 times.
    assert_eq!(text(&client, "cuj-0-obj-0-budget").await, "-9900.00%");
    assert_eq!(text(&client, "cuj-0-obj-0-alert").await, "PAGE firing");
    assert_eq!(text(&client, "cuj-0-obj-0-exhaustion").await, "exhausted");
    let page_colour = client
        .find(Locator::Id("cuj-0-obj-0-alert"))
        .await
        .expect("alert")
        .css_value("background-color")
        .await
        .expect("colour");
    assert_eq!(page_colour, "rgba(198, 40, 40, 1)", "a firing page is red");
    // Latency at 97.5%: 10% slow burns 4× — over the ticket factors, under the page ones.
    assert_eq!(text(&client, "cuj-0-obj-1-sli-5m").await, "90.00%");
    assert_eq!(text(&client, "cuj-0-obj-1-burn-5m").await, "4.00×");
    assert_eq!(text(&client, "cuj-0-obj-1-budget").await, "-300.00%");
    assert_eq!(text(&client, "cuj-0-obj-1-alert").await, "TICKET firing");
    // Availability at 50% over 7d: burn 0.2, four fifths of the budget left, gone in 28 days.
    assert_eq!(text(&client, "cuj-0-obj-2-budget").await, "80.00%");
    assert_eq!(text(&client, "cuj-0-obj-2-alert").await, "OK");
    assert_eq!(
        attr(&client, "cuj-0-obj-2-alert", "data-state")
            .await
            .as_deref(),
        Some("ok")
    );
    assert_eq!(text(&client, "cuj-0-obj-2-exhaustion").await, "in 28d");
    assert_eq!(text(&client, "cuj-0-threshold").await, "300 ms");
    // Quantiles are shown when the engine reports them, "—" until then.
    let p99 = text(&client, "cuj-0-p99").await;
    assert!(
        p99 == "—" || p99.ends_with(" ms") || p99.ends_with(" s"),
        "{p99}"
    );

    // The worse tier first: free burns 16 of the 20 bad events (and all 10 of its slow ones
    // count for latency too).
    let free = "#cuj-0-series-0";
    assert_eq!(css_text(&client, &format!("{free} td.dim")).await, "free");
    assert_eq!(
        css_text(&client, &format!("{free} td.avail-bad")).await,
        "16"
    );
    assert_eq!(
        css_text(&client, &format!("{free} td.avail-sli")).await,
        "84.00%"
    );
    assert_eq!(css_text(&client, &format!("{free} td.lat-bad")).await, "10");
    assert_eq!(
        css_text(&client, &format!("{free} td.share")).await,
        "65.00%"
    );
    let last_bad = css_text(&client, &format!("{free} td.trace")).await;
    assert!(
        free_bad.contains(&last_bad),
        "last bad trace {last_bad:?} is one of the free tier's bad ones"
    );
    let gold = "#cuj-0-series-1";
    assert_eq!(css_text(&client, &format!("{gold} td.dim")).await, "gold");
    assert_eq!(
        css_text(&client, &format!("{gold} td.avail-bad")).await,
        "4"
    );
    assert_eq!(
        css_text(&client, &format!("{gold} td.avail-sli")).await,
        "96.00%"
    );
    assert_eq!(
        css_text(&client, &format!("{gold} td.share")).await,
        "35.00%"
    );

    // The charts are drawn: one budget line per objective, three quantile lines, the threshold.
    let burndown = client
        .find(Locator::Id("cuj-0-burndown"))
        .await
        .expect("burn-down chart");
    assert_eq!(burndown.tag_name().await.expect("tag"), "svg");
    let (_, _, width, height) = burndown.rectangle().await.expect("rect");
    assert!(
        width > 200.0 && height > 60.0,
        "chart laid out: {width}x{height}"
    );
    let lines = burndown
        .find_all(Locator::Css("path.line"))
        .await
        .expect("lines");
    assert_eq!(lines.len(), 3);
    let dots = burndown
        .find_all(Locator::Css("circle.dot"))
        .await
        .expect("dots");
    assert_eq!(dots.len(), 3, "every objective has a sample");
    let now = burndown
        .find(Locator::Css("circle.dot[data-objective=\"0\"]"))
        .await
        .expect("the 99.9% objective's newest point")
        .attr("data-value")
        .await
        .expect("attribute")
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        now.is_some_and(|v| (v + 99.0).abs() < 1e-6),
        "the burn-down ends at the budget now: {now:?}"
    );
    let latency = client
        .find(Locator::Id("cuj-0-latency"))
        .await
        .expect("latency chart");
    assert_eq!(latency.tag_name().await.expect("tag"), "svg");
    assert_eq!(
        latency
            .find_all(Locator::Css("line.threshold"))
            .await
            .expect("threshold")
            .len(),
        1
    );

    // Names and values from config and traffic are text, never markup.
    assert_eq!(css_text(&client, "#cuj-1 h2").await, "search <i>beta</i>");
    assert!(
        client
            .find_all(Locator::Css("#cuj-1 h2 i"))
            .await
            .expect("query")
            .is_empty()
    );
    assert_eq!(
        css_text(&client, "#cuj-1-series-0 td.dim").await,
        HOSTILE_TIER
    );
    let scripts = client
        .execute(
            "return [document.scripts.length, typeof window.__cujoPwned];",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(scripts, serde_json::json!([0, "undefined"]));

    // A screenshot of the whole page, for people.
    let height = client
        .execute("return document.documentElement.scrollHeight;", vec![])
        .await
        .expect("height")
        .as_u64()
        .unwrap_or(1000);
    client
        .set_window_size(1400, (height + 200).clamp(600, 8000) as u32)
        .await
        .expect("resize");
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status_page.png");
    std::fs::write(&shot, &png).expect("save screenshot");
    eprintln!("status page screenshot: {}", shot.display());

    client.close().await.expect("close browser");
    drop(driver);
    let _ = std::fs::remove_dir_all(&dir);
}
