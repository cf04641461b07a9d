//! `cujo rules` and `cujo dashboard`, run as a user runs them, checked with the real
//! `promtool`: the rules pass `promtool check rules`, and `promtool test rules` feeds them an
//! error burst and checks when the page and ticket alerts fire (the in-process windows and
//! factors, 30 and 28 day objectives) and what the recording rules record. Every PromQL
//! expression of the dashboard passes `promtool check rules` and returns data once the
//! generated rules are loaded.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = r#"
cujs:
  - name: checkout
    match: { span.name: "POST /checkout" }
    dimensions: [user.tier]
    runbook: https://wiki.example.com/runbooks/checkout
    objectives:
      - { sli: availability, target: 99.9%, window: 30d }
  - name: search
    match: { span.name: "GET /search" }
    dimensions: [user.tier, cloud.region]
    latency: { threshold: 300ms }
    objectives:
      - { sli: latency, target: 99%, window: 28d }
"#;

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cujo-rules-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs the real binary: `cujo <subcommand> --config <dir>/cujo.yaml --output <dir>/<out>`.
fn generate(dir: &Path, subcommand: &str, out: &str) -> String {
    let config = dir.join("cujo.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let output = dir.join(out);
    let run = Command::new(env!("CARGO_BIN_EXE_cujo"))
        .arg(subcommand)
        .arg("--config")
        .arg(&config)
        .arg("--output")
        .arg(&output)
        .output()
        .expect("run cujo");
    assert!(
        run.status.success(),
        "cujo {subcommand} failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read_to_string(&output).expect("read output")
}

fn run_promtool(promtool: &str, args: &[&str], dir: &Path) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Eight hours of traffic at one sample a minute, 100 events a minute per CUJ, spread over
/// two instances and the dimension values:
/// - checkout: no errors, then from minute 360 to 380 instance b's free tier fails 10 of its
///   25 events a minute (10% of the CUJ's traffic), then no errors again;
/// - search: every event fast until minute 60, then 5% slow (all of them free tier, eu-west).
///
/// Counters start high, as counters of a long-running process do.
const INPUT_SERIES: &str = r#"
      - series: 'cujo_sli_events_total{cuj="checkout",sli="availability",outcome="good",user_tier="gold",instance="a"}'
        values: '50000+25x480'
      - series: 'cujo_sli_events_total{cuj="checkout",sli="availability",outcome="bad",user_tier="gold",instance="a"}'
        values: '1000+0x480'
      - series: 'cujo_sli_events_total{cuj="checkout",sli="availability",outcome="good",user_tier="free",instance="a"}'
        values: '50000+25x480'
      - series: 'cujo_sli_events_total{cuj="checkout",sli="availability",outcome="bad",user_tier="free",instance="a"}'
        values: '1000+0x480'
      - series: 'cujo_sli_events_total{cuj="checkout",sli="availability",outcome="good",user_tier="gold",instance="b"}'
        values: '50000+25x480'
      - series: 'cujo_sli_events_total{cuj="checkout",sli="availability",outcome="bad",user_tier="gold",instance="b"}'
        values: '1000+0x480'
      - series: 'cujo_sli_events_total{cuj="checkout",sli="availability",outcome="good",user_tier="free",instance="b"}'
        values: '50000+25x360 59015+15x19 59325+25x99'
      - series: 'cujo_sli_events_total{cuj="checkout",sli="availability",outcome="bad",user_tier="free",instance="b"}'
        values: '1000+0x360 1010+10x19 1200+0x99'
      - series: 'cujo_sli_events_total{cuj="search",sli="availability",outcome="good",user_tier="gold",cloud_region="eu-west",instance="a"}'
        values: '50000+50x480'
      - series: 'cujo_sli_events_total{cuj="search",sli="availability",outcome="bad",user_tier="gold",cloud_region="eu-west",instance="a"}'
        values: '1000+0x480'
      - series: 'cujo_sli_events_total{cuj="search",sli="availability",outcome="good",user_tier="free",cloud_region="eu-west",instance="a"}'
        values: '50000+50x480'
      - series: 'cujo_sli_events_total{cuj="search",sli="availability",outcome="bad",user_tier="free",cloud_region="eu-west",instance="a"}'
        values: '1000+0x480'
      - series: 'cujo_sli_events_total{cuj="search",sli="latency",outcome="good",user_tier="gold",cloud_region="eu-west",instance="a"}'
        values: '50000+50x480'
      - series: 'cujo_sli_events_total{cuj="search",sli="latency",outcome="bad",user_tier="gold",cloud_region="eu-west",instance="a"}'
        values: '1000+0x480'
      - series: 'cujo_sli_events_total{cuj="search",sli="latency",outcome="good",user_tier="free",cloud_region="eu-west",instance="a"}'
        values: '50000+50x60 53045+45x419'
      - series: 'cujo_sli_events_total{cuj="search",sli="latency",outcome="bad",user_tier="free",cloud_region="eu-west",instance="a"}'
        values: '1000+0x60 1005+5x419'
      - series: 'cujo_cuj_duration_seconds_bucket{cuj="search",user_tier="free",cloud_region="eu-west",instance="a",le="0.1"}'
        values: '40000+30x480'
      - series: 'cujo_cuj_duration_seconds_bucket{cuj="search",user_tier="free",cloud_region="eu-west",instance="a",le="0.3"}'
        values: '50000+50x60 53045+45x419'
      - series: 'cujo_cuj_duration_seconds_bucket{cuj="search",user_tier="free",cloud_region="eu-west",instance="a",le="1"}'
        values: '51000+50x480'
      - series: 'cujo_cuj_duration_seconds_bucket{cuj="search",user_tier="free",cloud_region="eu-west",instance="a",le="+Inf"}'
        values: '51000+50x480'
"#;

const CHECKOUT_PAGE: &str = r#"
          - exp_labels: { severity: page, cuj: checkout, sli: availability, slo: checkout-availability }
            exp_annotations:
              summary: "CUJ checkout is burning its availability error budget (99.9% over 30d) too fast: page"
              runbook_url: "https://wiki.example.com/runbooks/checkout"
              description: "The availability SLO checkout-availability of CUJ checkout (objective 99.9% over 30d) burns its error budget faster than 14.4x over both 1h and 5m, or 6x over both 6h and 30m. Burn rate 1 spends the budget exactly over 30d.""#;

const CHECKOUT_TICKET: &str = r#"
          - exp_labels: { severity: ticket, cuj: checkout, sli: availability, slo: checkout-availability }
            exp_annotations:
              summary: "CUJ checkout is burning its availability error budget (99.9% over 30d) too fast: ticket"
              runbook_url: "https://wiki.example.com/runbooks/checkout"
              description: "The availability SLO checkout-availability of CUJ checkout (objective 99.9% over 30d) burns its error budget faster than 3x over both 1d and 2h, or 1x over both 3d and 6h. Burn rate 1 spends the budget exactly over 30d.""#;

const SEARCH_TICKET: &str = r#"
          - exp_labels: { severity: ticket, cuj: search, sli: latency, slo: search-latency }
            exp_annotations:
              summary: "CUJ search is burning its latency error budget (99% over 28d) too fast: ticket"
              description: "The latency SLO search-latency of CUJ search (objective 99% over 28d) burns its error budget faster than 2.8x over both 1d and 2h, or 0.93x over both 3d and 6h. Burn rate 1 spends the budget exactly over 28d.""#;

/// An `alert_rule_test` entry: `alertname` at `minute` fires exactly `alerts` (none if empty).
fn expect(minute: u32, alertname: &str, alerts: &[&str]) -> String {
    let body = if alerts.is_empty() {
        " []".to_string()
    } else {
        alerts.concat()
    };
    format!(
        "      - eval_time: {minute}m\n        alertname: {alertname}\n        exp_alerts:{body}\n"
    )
}

#[test]
fn rules_pass_promtool_and_alert_when_the_in_process_rules_would() {
    let dir = scratch("alerts");
    let rules = generate(&dir, "rules", "cujo-rules.yaml");
    // Sloth's names, for the reported windows and each objective's own.
    for name in [
        "slo:sli_error:ratio_rate5m",
        "slo:sli_error:ratio_rate30m",
        "slo:sli_error:ratio_rate1h",
        "slo:sli_error:ratio_rate2h",
        "slo:sli_error:ratio_rate6h",
        "slo:sli_error:ratio_rate1d",
        "slo:sli_error:ratio_rate3d",
        "slo:sli_error:ratio_rate30d",
        "slo:sli_error:ratio_rate28d",
        "slo:objective:ratio",
        "slo:error_budget:ratio",
        "slo:time_period:days",
        "slo:current_burn_rate:ratio",
        "slo:period_burn_rate:ratio",
        "slo:period_error_budget_remaining:ratio",
    ] {
        assert!(
            rules.contains(&format!("record: {name}\n")),
            "{name} missing"
        );
    }
    let stdout = Command::new(env!("CARGO_BIN_EXE_cujo"))
        .args(["rules", "--config"])
        .arg(dir.join("cujo.yaml"))
        .output()
        .expect("run cujo rules");
    assert_eq!(
        String::from_utf8_lossy(&stdout.stdout),
        rules,
        "without --output the rules go to standard output"
    );
    let Some(promtool) = support::promtool() else {
        return;
    };
    run_promtool(promtool, &["check", "rules", "cujo-rules.yaml"], &dir);

    let mut alerts = String::new();
    // checkout (30d): the burst starts at minute 360. The 1h error ratio passes 14.4 x 0.1%
    // at its ninth bad minute (90 bad of 6000), with the 5m window far above: page at 369,
    // not at 368. It clears 5 minutes after the burst (the 6h window stays below 6x).
    alerts += &expect(368, "CujErrorBudgetBurnPage", &[]);
    alerts += &expect(369, "CujErrorBudgetBurnPage", &[CHECKOUT_PAGE]);
    alerts += &expect(383, "CujErrorBudgetBurnPage", &[CHECKOUT_PAGE]);
    alerts += &expect(390, "CujErrorBudgetBurnPage", &[]);
    // The ticket opens when 6h and 3d both burn faster than 1x (40 bad of 36,000 at 364)
    // and stays open after the page clears.
    alerts += &expect(363, "CujErrorBudgetBurnTicket", &[SEARCH_TICKET]);
    alerts += &expect(
        364,
        "CujErrorBudgetBurnTicket",
        &[SEARCH_TICKET, CHECKOUT_TICKET],
    );
    alerts += &expect(
        390,
        "CujErrorBudgetBurnTicket",
        &[SEARCH_TICKET, CHECKOUT_TICKET],
    );
    // search (28d): 5% slow from minute 60 burns at 5x, never a page (5.6x, 13.44x), but a
    // ticket once 3d and 6h burn faster than the 28-day factor 0.93x: 70 of 7400 at minute
    // 74, not 65 of 7300 at 73 (the 30-day factor 1x would wait until 76).
    alerts += &expect(73, "CujErrorBudgetBurnTicket", &[]);
    alerts += &expect(74, "CujErrorBudgetBurnTicket", &[SEARCH_TICKET]);
    alerts += &expect(120, "CujErrorBudgetBurnPage", &[]);

    let tests = format!(
        r#"rule_files:
  - cujo-rules.yaml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:{INPUT_SERIES}
    alert_rule_test:
{alerts}
    promql_expr_test:
      # 10% of checkout's events fail in the burst: summed over instances and tiers.
      - expr: round(slo:sli_error:ratio_rate5m{{cuj="checkout"}} * 1000)
        eval_time: 370m
        exp_samples:
          - labels: '{{cuj="checkout",sli="availability",slo="checkout-availability",window="5m"}}'
            value: 100
      # Over the 30d window: 200 bad of ~40,000 events, from the recorded 5m rates.
      - expr: round(slo:sli_error:ratio_rate30d{{cuj="checkout"}} * 1000)
        eval_time: 400m
        exp_samples:
          - labels: '{{cuj="checkout",sli="availability",slo="checkout-availability",window="30d"}}'
            value: 5
      # 0.5% errors against a 0.1% budget: spent five times, -4 left.
      - expr: round(slo:period_error_budget_remaining:ratio{{cuj="checkout"}})
        eval_time: 400m
        exp_samples:
          - labels: '{{cuj="checkout",sli="availability",slo="checkout-availability",window="30d"}}'
            value: -4
      - expr: slo:objective:ratio
        eval_time: 10m
        exp_samples:
          - labels: 'slo:objective:ratio{{cuj="checkout",sli="availability",slo="checkout-availability"}}'
            value: 0.999
          - labels: 'slo:objective:ratio{{cuj="search",sli="latency",slo="search-latency"}}'
            value: 0.99
      # The per-dimension rule shows which tier fails (bad events a minute).
      - expr: round(60 * sum by (user_tier) (cuj_dimensions:cujo_sli_events:rate5m{{cuj="checkout",outcome="bad"}}))
        eval_time: 370m
        exp_samples:
          - labels: '{{user_tier="free"}}'
            value: 10
          - labels: '{{user_tier="gold"}}'
            value: 0
"#
    );
    std::fs::write(dir.join("cujo-rules-test.yaml"), tests).expect("write promtool test");
    run_promtool(promtool, &["test", "rules", "cujo-rules-test.yaml"], &dir);
    // Kept on failure, for a look at what promtool was given.
    let _ = std::fs::remove_dir_all(&dir);
}

/// What Grafana puts in place of the template variables when the dashboard loads with every
/// CUJ selected.
fn substitute(expr: &str) -> String {
    expr.replace("$cuj", "(checkout|search)")
        .replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
}

/// (x, y, w, h) of a panel.
fn grid(panel: &serde_json::Value) -> (u64, u64, u64, u64) {
    let g = &panel["gridPos"];
    let n = |k: &str| {
        g[k].as_u64()
            .unwrap_or_else(|| panic!("gridPos.{k} missing in {panel}"))
    };
    (n("x"), n("y"), n("w"), n("h"))
}

#[test]
fn dashboard_is_well_formed_and_every_query_returns_data_once_the_rules_are_loaded() {
    let dir = scratch("dashboard");
    generate(&dir, "rules", "cujo-rules.yaml");
    let text = generate(&dir, "dashboard", "dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");

    assert!(
        d["schemaVersion"].as_u64().unwrap() >= 36,
        "{}",
        d["schemaVersion"]
    );
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("cuj")["type"], "query");
    assert_eq!(
        var("cuj")["query"]["query"],
        "label_values(cujo_sli_events_total, cuj)"
    );
    assert_eq!(var("cuj")["datasource"]["uid"], "${datasource}");

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = std::collections::HashSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id in {p}"
        );
        let (x, _, w, h) = grid(p);
        assert!(
            w >= 1 && h >= 1 && x + w <= 24,
            "gridPos out of the 24-column grid: {p}"
        );
    }
    for (i, a) in panels.iter().enumerate() {
        for b in &panels[i + 1..] {
            let ((ax, ay, aw, ah), (bx, by, bw, bh)) = (grid(a), grid(b));
            let overlap = ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah;
            assert!(!overlap, "panels overlap:\n{a}\n{b}");
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Error budget remaining",
        "Burn rate per window",
        "SLI per window",
        "Latency p50 / p90 / p99",
        "Latency distribution",
        "Events per second, good and bad",
        "Bad events by user_tier over the time range",
        "Error ratio contributed by user_tier",
        "Bad events by cloud_region over the time range",
        "Error ratio contributed by cloud_region",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    let heatmap = panels
        .iter()
        .find(|p| p["type"] == "heatmap")
        .expect("heatmap");
    assert!(
        heatmap["targets"][0]["expr"]
            .as_str()
            .unwrap()
            .contains("cujo_cuj_duration_seconds_bucket")
    );

    // Every query, as a recording rule, with an alert when it records nothing.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut queries = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "a panel without queries: {p}");
        for t in targets {
            let expr = substitute(t["expr"].as_str().expect("expr"));
            assert!(!expr.contains('$'), "unsubstituted variable in {expr}");
            let ref_id = t["refId"].as_str().expect("refId");
            let name = format!("dashboard:panel_{}_{ref_id}", p["id"]);
            let query = format!("{} / {ref_id}", p["title"].as_str().expect("title"));
            rules += &format!(
                "      - record: {name}\n        expr: {expr}\n      - alert: DashboardQueryEmpty\n        expr: absent({name})\n        labels: {{ query: {query} }}\n",
                expr = serde_json::to_string(&expr).unwrap(),
                query = serde_json::to_string(&query).unwrap(),
            );
            queries += 1;
        }
    }
    assert!(queries >= 15, "{queries} queries");
    std::fs::write(dir.join("dashboard-rules.yaml"), rules).expect("write dashboard rules");
    let Some(promtool) = support::promtool() else {
        return;
    };
    run_promtool(promtool, &["check", "rules", "dashboard-rules.yaml"], &dir);
    let tests = format!(
        r#"rule_files:
  - cujo-rules.yaml
  - dashboard-rules.yaml
evaluation_interval: 1m
group_eval_order: [cujo-slo-checkout, cujo-slo-search, dashboard]
tests:
  - interval: 1m
    input_series:{INPUT_SERIES}
    alert_rule_test:
{}"#,
        expect(400, "DashboardQueryEmpty", &[])
    );
    std::fs::write(dir.join("dashboard-test.yaml"), tests).expect("write promtool test");
    run_promtool(promtool, &["test", "rules", "dashboard-test.yaml"], &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
