//! The quick start as a new user runs it: the shipped `config/quickstart.yaml` (on free
//! ports) and `cujo demo` from the same binary. The demo prints its progress, its journeys
//! are measured per tier, and `--fail-tier free` burns the budget until the page fires, in
//! seconds of traffic.

mod support;

use std::process::Command;

use support::{Cujo, http_get, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_burns_one_tier_and_the_page_fires() {
    let quickstart = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/quickstart.yaml"),
    )
    .expect("config/quickstart.yaml");
    let yaml = quickstart
        .replace("127.0.0.1:4317", "127.0.0.1:0")
        .replace("127.0.0.1:4318", "127.0.0.1:0")
        .replace("127.0.0.1:9464", "127.0.0.1:0");
    let cujo = Cujo::start_yaml(&yaml).await;

    let endpoint = format!("http://{}", cujo.grpc);
    let demo = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cujo"))
            .args([
                "demo",
                "--endpoint",
                &endpoint,
                "--rate",
                "300",
                "--count",
                "600",
            ])
            .args(["--fail-tier", "free", "--progress", "1"])
            .output()
            .expect("run cujo demo")
    })
    .await
    .expect("demo");
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    assert!(stdout.contains("every free checkout failing"), "{stdout}");
    assert!(stdout.contains("checkouts in"), "progress lines: {stdout}");
    assert!(stdout.contains("sent 600 checkout journeys"), "{stdout}");

    // Every free checkout bad, the other tiers good (the default error rate is 0.1%), and
    // the page firing on the availability objective.
    let report = wait_for("600 checkouts measured and the page firing", || async {
        let (_, body) = http_get(cujo.admin, "/api/v1/slos?cuj=checkout").await?;
        let report: serde_json::Value = serde_json::from_str(&body).ok()?;
        let cuj = &report["cujs"][0];
        let measured: u64 = cuj["series"]
            .as_array()?
            .iter()
            .map(|s| {
                s["availability_good"].as_u64().unwrap_or(0)
                    + s["availability_bad"].as_u64().unwrap_or(0)
            })
            .sum();
        let page = cuj["objectives"][0]["page"].as_bool()?;
        (measured == 600 && page).then_some(report)
    })
    .await;
    for series in report["cujs"][0]["series"].as_array().expect("series") {
        let tier = series["dimensions"][0][1].as_str().unwrap_or_default();
        let (good, bad) = (
            series["availability_good"].as_u64().unwrap_or(0),
            series["availability_bad"].as_u64().unwrap_or(0),
        );
        match tier {
            "free" => assert_eq!(good, 0, "every free checkout fails: {series}"),
            "pro" | "enterprise" => assert!(bad * 100 <= good + bad, "{tier}: {series}"),
            other => panic!("unexpected tier {other}: {series}"),
        }
    }
    // The payment job, a queue consumer a moment later in a request of its own, ends each
    // checkout_paid journey: all 600 measured end to end once they settle.
    wait_for("600 paid checkouts measured end to end", || async {
        let (_, body) = http_get(cujo.admin, "/api/v1/slos?cuj=checkout_paid").await?;
        let report: serde_json::Value = serde_json::from_str(&body).ok()?;
        let measured: u64 = report["cujs"][0]["series"]
            .as_array()?
            .iter()
            .map(|s| {
                s["latency_good"].as_u64().unwrap_or(0) + s["latency_bad"].as_u64().unwrap_or(0)
            })
            .sum();
        (measured == 600).then_some(())
    })
    .await;
}
