//! Several replicas, one truth: two cujo instances share the traffic of one CUJ, a real
//! Prometheus scrapes both and evaluates the rules `cujo rules` generates, and
//! `cujo status --prometheus` gates on the fleet. One instance sees only good events and
//! would pass its own gate; the other only bad ones; the fleet's answer is the sum of both.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::SystemTime;

use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use support::{Cujo, Downstream, exporter_yaml, free_addr, http_get, wait_for};

const CUJ: &str = r#"cujs:
  - name: checkout
    match: { service.name: shop, span.name: "POST /checkout" }
    availability: { bad: [ { status: error } ] }
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
    # The test's traffic is seconds old: alerts fire on it (the rules' event gate off).
    alerts: { min_events: 0, min_coverage: 0 }
assembler: { decision_wait: 100ms, trace_timeout: 2s }
"#;

/// The real Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scraping `targets` every second and evaluating `rules` every second, or
/// `None` when it is not installed (never under CI: `scripts/test.sh` installs it).
async fn prometheus(
    dir: &Path,
    addr: SocketAddr,
    targets: &[SocketAddr],
    rules: &Path,
) -> Option<Prometheus> {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is required under CI"
        );
        eprintln!("prometheus not installed: skipping");
        return None;
    }
    let targets = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: cujo\n    static_configs: [ {{ targets: [{targets}] }} ]\n",
            rules.display()
        ),
    )
    .expect("prometheus config");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("prometheus.log")).expect("log"),
        ))
        .spawn()
        .expect("start prometheus");
    let p = Prometheus { child, addr };
    wait_for("Prometheus ready", || async {
        http_get(addr, "/-/ready")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    Some(p)
}

/// `n` `POST /checkout` roots of service `shop`, failed or not, sent with the SDK.
async fn checkouts(cujo: &Cujo, n: usize, failed: bool) {
    let endpoint = format!("http://{}", cujo.grpc);
    tokio::task::spawn_blocking(move || {
        let provider = support::sdk_provider(endpoint, "shop");
        let tracer = provider.tracer("shop");
        for _ in 0..n {
            let mut root = tracer
                .span_builder("POST /checkout")
                .with_kind(SpanKind::Server)
                .with_start_time(SystemTime::now())
                .start(&tracer);
            if failed {
                root.set_status(Status::error("payment service down"));
            }
            root.end();
        }
        let _ = provider.shutdown();
    })
    .await
    .expect("sdk");
}

/// `cujo status` with `args`, run as a CI job runs it.
fn gate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cujo"))
        .arg("status")
        .args(args)
        .output()
        .expect("run cujo status")
}

/// How many `checkout` events Prometheus has from each instance, if any.
async fn scraped(prometheus: SocketAddr) -> usize {
    let query = "/api/v1/query?query=cujo_sli_events_total%7Bcuj%3D%22checkout%22%7D";
    let Some((200, body)) = http_get(prometheus, query).await else {
        return 0;
    };
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    answer["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| s["metric"]["instance"].as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_gate_judges_every_replica_together() {
    let dir = std::env::temp_dir().join(format!("cujo-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("cujo.yaml");
    std::fs::write(&config, CUJ).expect("config");
    let rules = dir.join("rules.yml");
    let out = Command::new(env!("CARGO_BIN_EXE_cujo"))
        .args(["rules", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(&rules)
        .output()
        .expect("cujo rules");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Each replica knows it is one of a fleet, and where the fleet's SLOs are.
    let prom_addr = free_addr();
    let prom_url = format!("http://{prom_addr}");
    let downstream = Downstream::start().await;
    let with_exporter = format!(
        "{CUJ}slo: {{ fleet: {{ prometheus: \"{prom_url}\" }} }}\n{}",
        exporter_yaml(downstream.addr, "")
    );
    let good = Cujo::start(&with_exporter).await;
    let bad = Cujo::start(&with_exporter).await;
    let Some(prom) = prometheus(&dir, prom_addr, &[good.admin, bad.admin], &rules).await else {
        return;
    };

    // No events yet: the rules are loaded, the objective has no data, nothing to hold.
    let fresh = wait_for("the rules loaded", || async {
        let out = gate(&["--prometheus", &prom_url]);
        (out.status.code() == Some(0)).then_some(out)
    })
    .await;
    let text = String::from_utf8_lossy(&fresh.stdout);
    assert!(
        text.contains("checkout") && text.contains("no data"),
        "{text}"
    );

    // Counters appear at their first value, which a rate does not count: a first round
    // makes the series, a second one (after both are scraped) is what the rates see.
    checkouts(&good, 5, false).await;
    checkouts(&bad, 5, true).await;
    wait_for("both instances scraped", || async {
        (scraped(prom.addr).await == 2).then_some(())
    })
    .await;
    checkouts(&good, 20, false).await;
    checkouts(&bad, 20, true).await;

    // The fleet: half the events bad, far past a 0.1% budget, the page firing.
    let fleet = wait_for("the fleet's budget spent and the page firing", || async {
        let out = gate(&["--prometheus", &prom_url, "--cuj", "checkout"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.code() == Some(1) && text.contains("page")).then_some(out)
    })
    .await;
    let text = String::from_utf8_lossy(&fleet.stdout);
    assert!(text.contains("FAIL"), "{text}");
    assert!(text.contains("99.9%") && text.contains("30d"), "{text}");
    let err = String::from_utf8_lossy(&fleet.stderr);
    assert!(err.contains("checkout availability (30d"), "{err}");

    // Each instance alone tells half the story: the one that saw only good events passes.
    let alone = |cujo: &Cujo| gate(&["--endpoint", &cujo.admin.to_string()]);
    let good_alone = alone(&good);
    assert_eq!(good_alone.status.code(), Some(0));
    assert_eq!(alone(&bad).status.code(), Some(1));
    // ... and says so: the gate points at the fleet, as do the page and the API.
    let warning = String::from_utf8_lossy(&good_alone.stderr);
    assert!(
        warning.contains("one of a fleet") && warning.contains(&format!("--prometheus {prom_url}")),
        "{warning}"
    );
    let (_, page) = http_get(good.admin, "/").await.expect("page");
    assert!(
        page.contains("id=\"fleet\"") && page.contains("this instance's share"),
        "{page}"
    );
    let (_, api) = http_get(good.admin, "/api/v1/slos").await.expect("api");
    let api: serde_json::Value = serde_json::from_str(&api).expect("api json");
    assert_eq!(api["fleet"]["prometheus"], prom_url.as_str());

    // JSON for programs: the objective as the fleet's rules computed it.
    let json = gate(&["--prometheus", &prom_url, "--format", "json"]);
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let objective = &view["cujs"][0]["objectives"][0];
    assert_eq!(view["cujs"][0]["name"], "checkout");
    assert_eq!(objective["target"], 0.999);
    assert_eq!(objective["window"], "30d");
    assert_eq!(objective["page"], true);
    assert!(
        objective["budget_remaining"]
            .as_f64()
            .is_some_and(|b| b < -100.0),
        "{objective}"
    );

    // A Prometheus without the rules is named as such.
    let empty = gate(&["--prometheus", &prom_url, "--cuj", "nope"]);
    assert_eq!(empty.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("cujo rules"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}
