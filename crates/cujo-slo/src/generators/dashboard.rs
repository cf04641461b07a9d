//! `cujo dashboard`: a Grafana dashboard (JSON) for the configured CUJs.
//!
//! The SLO panels read the series of `cujo rules` (`slo:*`, `cuj:cujo_sli_events:rate5m`), so
//! the dashboard works as imported once those rules are loaded; latency reads the raw
//! `cujo_cuj_duration_seconds` histogram. Two variables: `datasource` (any Prometheus) and
//! `cuj` (from `label_values(cujo_sli_events_total, cuj)`, multi-valued, All by default).
//! The per-dimension panels are generated from the configured dimensions, one pair per
//! Prometheus label name, limited to the CUJs that have that dimension.
//!
//! Queries over cujo's raw series (`cujo_sli_events_total`, `cujo_cuj_duration_seconds_bucket`)
//! ask for exemplars: each bad count and latency bucket carries its latest trace id. Grafana
//! links an exemplar to its trace through the Prometheus data source's
//! `exemplarTraceIdDestinations`, not the dashboard; with `slo.trace_link` set the dashboard
//! says the URL to put there ([`exemplar_url`]) in its description and those panels'.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use cujo_sli::cuj::Cuj;
use cujo_sli::engine::label_name;
use cujo_sli::trace_link::TraceLink;
use serde_json::{Value, json};

use super::rules::{EVENT_RATE, EVENT_RATE_BY_DIMENSION, PAGE_ALERT, TICKET_ALERT, promql_string};

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Write the dashboard to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `cujo dashboard` for the configured `cujs`.
pub fn run(cujs: &[Cuj], trace_link: Option<&TraceLink>, args: &DashboardArgs) -> ExitCode {
    let mut text = match serde_json::to_string_pretty(&dashboard(cujs, trace_link)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cujo: cannot write the dashboard: {e}");
            return ExitCode::FAILURE;
        }
    };
    text.push('\n');
    super::rules::write_output("dashboard", args.output.as_deref(), &text)
}

/// The Grafana schema version the JSON is written for (Grafana 10).
pub const SCHEMA_VERSION: u64 = 39;
/// Stable, so re-importing replaces the dashboard instead of adding a copy.
pub const UID: &str = "cujo-cujs";

const GRID_WIDTH: u64 = 24;

/// Places panels left to right, rows of panels top to bottom, and numbers them.
struct Layout {
    panels: Vec<Value>,
    next_id: u64,
    x: u64,
    y: u64,
    /// Height of the tallest panel in the current line.
    line_height: u64,
}

impl Layout {
    fn new() -> Self {
        Layout {
            panels: Vec::new(),
            next_id: 1,
            x: 0,
            y: 0,
            line_height: 0,
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn new_line(&mut self) {
        self.y += self.line_height;
        self.x = 0;
        self.line_height = 0;
    }

    fn row(&mut self, title: &str) {
        self.new_line();
        let id = self.id();
        self.panels.push(json!({
            "id": id,
            "type": "row",
            "title": title,
            "collapsed": false,
            "panels": [],
            "gridPos": { "x": 0, "y": self.y, "w": GRID_WIDTH, "h": 1 },
        }));
        self.y += 1;
    }

    fn add(&mut self, mut panel: Value, w: u64, h: u64) {
        if self.x + w > GRID_WIDTH {
            self.new_line();
        }
        let id = self.id();
        panel["id"] = json!(id);
        panel["gridPos"] = json!({ "x": self.x, "y": self.y, "w": w, "h": h });
        panel["datasource"] = datasource();
        self.x += w;
        self.line_height = self.line_height.max(h);
        self.panels.push(panel);
    }
}

/// cujo's series that carry exemplars in OpenMetrics.
const RAW_SERIES: [&str; 2] = ["cujo_sli_events_total", "cujo_cuj_duration_seconds_bucket"];

/// `slo.trace_link` as a Grafana exemplar link (the data source's
/// `exemplarTraceIdDestinations[].url`): the trace id is `${__value.raw}`, the range the
/// dashboard's time range.
pub fn exemplar_url(link: &TraceLink) -> String {
    link.template()
        .replace("{trace_id}", "${__value.raw}")
        .replace("{start_ms}", "${__from}")
        .replace("{end_ms}", "${__to}")
        .replace("{start}", "${__from:date:seconds}")
        .replace("{end}", "${__to:date:seconds}")
}

fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": "${datasource}" })
}

/// A query of a panel: `refId` A, B, … in order.
fn targets(queries: &[(&str, &str)], instant: bool, format: &str) -> Value {
    let list: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (expr, legend))| {
            json!({
                "refId": ((b'A' + i as u8) as char).to_string(),
                "datasource": datasource(),
                "expr": expr,
                "legendFormat": legend,
                "instant": instant,
                "range": !instant,
                "format": format,
                // Only raw series carry them (recording rules drop exemplars).
                "exemplar": !instant && RAW_SERIES.iter().any(|m| expr.contains(m)),
            })
        })
        .collect();
    Value::Array(list)
}

fn panel(kind: &str, title: &str, description: &str, targets: Value, unit: &str) -> Value {
    json!({
        "type": kind,
        "title": title,
        "description": description,
        "targets": targets,
        "fieldConfig": { "defaults": { "unit": unit }, "overrides": [] },
        "options": {},
    })
}

/// Red below 0 (overspent), then orange, yellow, green as the budget left grows.
fn budget_thresholds() -> Value {
    json!({ "mode": "absolute", "steps": [
        { "color": "red", "value": null },
        { "color": "orange", "value": 0 },
        { "color": "yellow", "value": 0.25 },
        { "color": "green", "value": 0.5 },
    ]})
}

/// Burn rate: green below 1 (the budget lasts the period), red at the fastest page factor.
fn burn_thresholds() -> Value {
    json!({ "mode": "absolute", "steps": [
        { "color": "green", "value": null },
        { "color": "yellow", "value": 1 },
        { "color": "orange", "value": 6 },
        { "color": "red", "value": 14.4 },
    ]})
}

/// Every recorded error ratio (one per window; the `window` label tells which).
const ERROR_RATIOS: &str = r#"{__name__=~"slo:sli_error:ratio_rate.+", cuj=~"$cuj"}"#;

/// The dashboard for `cujs` as Grafana JSON.
pub fn dashboard(cujs: &[Cuj], trace_link: Option<&TraceLink>) -> Value {
    let exemplars = match trace_link {
        Some(link) => format!(
            " Exemplars (the diamonds) are the latest trace of a bad count or latency bucket: set the Prometheus data source's exemplarTraceIdDestinations to {{ name: trace_id, url: \"{}\" }} to open them.",
            exemplar_url(link)
        ),
        None => " Exemplars (the diamonds) are the latest trace of a bad count or latency bucket (Prometheus needs --enable-feature=exemplar-storage).".to_string(),
    };
    let mut l = Layout::new();
    let sel = r#"cuj=~"$cuj""#;

    l.row("Error budget");
    let budget = format!("slo:period_error_budget_remaining:ratio{{{sel}}}");
    let mut stat = panel(
        "stat",
        "Error budget remaining",
        "Fraction of each objective's error budget left over its window (negative: overspent). From `cujo rules`.",
        targets(&[(&budget, "{{slo}}")], true, "time_series"),
        "percentunit",
    );
    stat["fieldConfig"]["defaults"]["thresholds"] = budget_thresholds();
    stat["options"] = json!({ "colorMode": "background", "graphMode": "none",
        "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false } });
    l.add(stat, 8, 7);
    let mut over_time = panel(
        "timeseries",
        "Error budget remaining over time",
        "How the budget of each objective was spent.",
        targets(&[(&budget, "{{slo}}")], false, "time_series"),
        "percentunit",
    );
    over_time["fieldConfig"]["defaults"]["thresholds"] = budget_thresholds();
    over_time["fieldConfig"]["defaults"]["custom"] =
        json!({ "thresholdsStyle": { "mode": "line" } });
    l.add(over_time, 16, 7);

    l.row("Burn rate");
    let burn =
        format!("{ERROR_RATIOS}\n/ on (cuj, sli, slo) group_left\nslo:error_budget:ratio{{{sel}}}");
    let mut now = panel(
        "bargauge",
        "Burn rate per window",
        "Error ratio over the error budget for each window: 1 spends the budget exactly over the objective's window. Pages fire when both windows of a pair (1h & 5m, 6h & 30m) are above the factor.",
        targets(&[(&burn, "{{slo}} {{window}}")], true, "time_series"),
        "suffix:×",
    );
    now["fieldConfig"]["defaults"]["thresholds"] = burn_thresholds();
    now["fieldConfig"]["defaults"]["min"] = json!(0);
    now["options"] = json!({ "displayMode": "gradient", "orientation": "horizontal",
        "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false } });
    l.add(now, 10, 9);
    let alert_windows = format!(
        "slo:current_burn_rate:ratio{{{sel}}}\nor\n({burn_long}\n/ on (cuj, sli, slo) group_left\nslo:error_budget:ratio{{{sel}}})",
        burn_long = r#"{__name__=~"slo:sli_error:ratio_rate(1h|6h|1d|3d)", cuj=~"$cuj"}"#,
    );
    let mut burn_time = panel(
        "timeseries",
        "Burn rate over time",
        "Burn rate over the 5m window and the long windows of the alerts (1h, 6h, 1d, 3d).",
        targets(
            &[(&alert_windows, "{{slo}} {{window}}")],
            false,
            "time_series",
        ),
        "suffix:×",
    );
    burn_time["fieldConfig"]["defaults"]["thresholds"] = burn_thresholds();
    burn_time["fieldConfig"]["defaults"]["custom"] =
        json!({ "thresholdsStyle": { "mode": "dashed" } });
    l.add(burn_time, 14, 9);
    let alerts = format!(
        r#"ALERTS{{alertname=~"{PAGE_ALERT}|{TICKET_ALERT}", alertstate="firing", {sel}}}"#
    );
    let mut firing = panel(
        "table",
        "Burn-rate alerts firing",
        "The multiwindow burn-rate alerts of `cujo rules` that fire now.",
        targets(&[(&alerts, "")], true, "table"),
        "none",
    );
    firing["transformations"] = json!([{ "id": "organize", "options": {
        "excludeByName": { "Time": true, "Value": true, "__name__": true, "alertstate": true }
    }}]);
    l.add(firing, 24, 6);

    l.row("SLI");
    let sli = format!("1 - {ERROR_RATIOS}");
    let mut sli_now = panel(
        "bargauge",
        "SLI per window",
        "Good events over valid events, for every window of every objective.",
        targets(&[(&sli, "{{slo}} {{window}}")], true, "time_series"),
        "percentunit",
    );
    sli_now["fieldConfig"]["defaults"]["decimals"] = json!(3);
    sli_now["options"] = json!({ "displayMode": "basic", "orientation": "horizontal",
        "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false } });
    l.add(sli_now, 10, 9);
    let sli_1h = format!("1 - slo:sli_error:ratio_rate1h{{{sel}}}");
    let objective = format!("slo:objective:ratio{{{sel}}}");
    let mut sli_time = panel(
        "timeseries",
        "SLI over the last hour, against the objective",
        "The 1h SLI of each objective and its target.",
        targets(
            &[(&sli_1h, "{{slo}} 1h"), (&objective, "{{slo}} objective")],
            false,
            "time_series",
        ),
        "percentunit",
    );
    sli_time["fieldConfig"]["defaults"]["decimals"] = json!(3);
    l.add(sli_time, 14, 9);

    l.row("Events");
    let events = format!("sum by (cuj, sli, outcome) ({EVENT_RATE}{{{sel}}})");
    let mut traffic = panel(
        "timeseries",
        "Events per second, good and bad",
        "Valid SLI events over 5 minutes, summed over instances and dimensions.",
        targets(
            &[(&events, "{{cuj}} {{sli}} {{outcome}}")],
            false,
            "time_series",
        ),
        "reqps",
    );
    traffic["fieldConfig"]["overrides"] = json!([{
        "matcher": { "id": "byRegexp", "options": ".* bad$" },
        "properties": [{ "id": "color", "value": { "mode": "fixed", "fixedColor": "red" } }],
    }]);
    l.add(traffic, 12, 8);
    let bad = format!(
        "sum by (cuj, sli) (rate(cujo_sli_events_total{{{sel}, outcome=\"bad\"}}[$__rate_interval]))"
    );
    let mut bad_events = panel(
        "timeseries",
        "Bad events per second, with their traces",
        &format!(
            "Bad SLI events from cujo's own counter, summed over instances and dimensions.{exemplars}"
        ),
        targets(&[(&bad, "{{cuj}} {{sli}} bad")], false, "time_series"),
        "reqps",
    );
    bad_events["fieldConfig"]["defaults"]["color"] =
        json!({ "mode": "fixed", "fixedColor": "red" });
    l.add(bad_events, 12, 8);

    l.row("Latency");
    let buckets = format!(
        "sum by (cuj, le) (rate(cujo_cuj_duration_seconds_bucket{{{sel}}}[$__rate_interval]))"
    );
    let quantiles: Vec<(String, String)> = [("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")]
        .iter()
        .map(|(q, name)| {
            (
                format!("histogram_quantile({q}, {buckets})"),
                format!("{{{{cuj}}}} {name}"),
            )
        })
        .collect();
    let quantile_refs: Vec<(&str, &str)> = quantiles
        .iter()
        .map(|(e, n)| (e.as_str(), n.as_str()))
        .collect();
    l.add(
        panel(
            "timeseries",
            "Latency p50 / p90 / p99",
            &format!("Quantiles of each CUJ's measured latency, from the cujo_cuj_duration_seconds histogram (its buckets include the CUJ's threshold).{exemplars}"),
            targets(&quantile_refs, false, "time_series"),
            "s",
        ),
        12,
        9,
    );
    let heat = format!(
        "sum by (le) (increase(cujo_cuj_duration_seconds_bucket{{{sel}}}[$__rate_interval]))"
    );
    let mut heatmap = panel(
        "heatmap",
        "Latency distribution",
        "Events per latency bucket over time, for the selected CUJs.",
        targets(&[(&heat, "{{le}}")], false, "heatmap"),
        "short",
    );
    heatmap["options"] = json!({
        "calculate": false,
        "yAxis": { "unit": "s" },
        "cellGap": 1,
        "color": { "mode": "scheme", "scheme": "Oranges", "exponent": 0.5, "fill": "dark-orange", "scale": "exponential", "steps": 64 },
        "rowsFrame": { "layout": "auto" },
        "tooltip": { "show": true, "yHistogram": false },
    });
    l.add(heatmap, 12, 9);

    // Dimension label → the CUJs that have it, so a panel only shows those CUJs' series.
    let mut dimensions: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for c in cujs {
        for d in &c.dimensions {
            dimensions
                .entry(label_name(d))
                .or_default()
                .push(c.name.as_str());
        }
    }
    if !dimensions.is_empty() {
        l.row("Breakdown by dimension");
    }
    for (label, names) in &dimensions {
        let with_label = promql_string(
            &names
                .iter()
                .map(|n| regex_escape(n))
                .collect::<Vec<_>>()
                .join("|"),
        );
        let cujs_sel = format!("{sel}, cuj=~{with_label}");
        let bad_over_range = format!(
            r#"sort_desc(sum by (cuj, sli, {label}) (increase(cujo_sli_events_total{{{cujs_sel}, outcome="bad"}}[$__range])))"#
        );
        let mut table = panel(
            "bargauge",
            &format!("Bad events by {label} over the time range"),
            &format!("Which {label} values the bad events (and so the burned budget) come from."),
            targets(
                &[(
                    &bad_over_range,
                    &format!("{{{{cuj}}}} {{{{sli}}}} {label}={{{{{label}}}}}"),
                )],
                true,
                "time_series",
            ),
            "short",
        );
        table["options"] = json!({ "displayMode": "basic", "orientation": "horizontal",
            "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false } });
        l.add(table, 10, 8);
        let share = format!(
            "sum by (cuj, sli, {label}) ({EVENT_RATE_BY_DIMENSION}{{{cujs_sel}, outcome=\"bad\"}})\n\
             / on (cuj, sli) group_left\n\
             sum by (cuj, sli) ({EVENT_RATE}{{{cujs_sel}}})"
        );
        l.add(
            panel(
                "timeseries",
                &format!("Error ratio contributed by {label}"),
                &format!("Bad events of each {label} value over all valid events of the CUJ (5m): the lines add up to the CUJ's error ratio."),
                targets(&[(&share, &format!("{{{{cuj}}}} {{{{sli}}}} {label}={{{{{label}}}}}"))], false, "time_series"),
                "percentunit",
            ),
            14,
            8,
        );
    }

    json!({
        "id": null,
        "uid": UID,
        "title": "cujo: Critical User Journeys",
        "description": format!("SLOs, error budgets, burn rates, latency and per-dimension breakdown of the CUJs cujo measures. Generated by `cujo dashboard`; needs the rules of `cujo rules`.{exemplars}"),
        "tags": ["cujo", "slo"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": true,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": { "from": "now-24h", "to": "now" },
        "refresh": "1m",
        "annotations": { "list": [] },
        "links": [],
        "templating": { "list": [
            {
                "name": "datasource",
                "label": "Data source",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "includeAll": false,
                "multi": false,
                "options": [],
                "refresh": 1,
                "regex": "",
            },
            {
                "name": "cuj",
                "label": "CUJ",
                "type": "query",
                "datasource": datasource(),
                "definition": "label_values(cujo_sli_events_total, cuj)",
                "query": { "query": "label_values(cujo_sli_events_total, cuj)", "refId": "PrometheusVariableQueryEditor-VariableQuery" },
                "current": { "selected": true, "text": ["All"], "value": ["$__all"] },
                "hide": 0,
                "includeAll": true,
                "multi": true,
                "options": [],
                "refresh": 2,
                "regex": "",
                "sort": 1,
            },
        ]},
        "panels": l.panels,
    })
}

/// Escapes RE2 metacharacters so a CUJ name matches itself in `=~`.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_metacharacters_in_names_are_escaped() {
        assert_eq!(regex_escape("checkout.v2"), r"checkout\.v2");
        assert_eq!(regex_escape("a|b"), r"a\|b");
    }

    fn cujs() -> Vec<Cuj> {
        crate::cujs::from_yaml(
            "cujs:\n  - name: checkout\n    latency: { threshold: 300ms }\n    dimensions: [user.tier]\n",
        )
    }

    /// Every range query over cujo's raw series asks for exemplars, no other does; with
    /// `slo.trace_link` the dashboard says the data source's exemplar URL.
    #[test]
    fn raw_series_panels_show_exemplars_and_say_where_they_link() {
        let link = TraceLink::parse(
            "slo.trace_link",
            "https://grafana.example.com/explore?trace={trace_id}&from={start_ms}&to={end_ms}&s={start}",
        )
        .expect("valid");
        assert_eq!(
            exemplar_url(&link),
            "https://grafana.example.com/explore?trace=${__value.raw}&from=${__from}&to=${__to}&s=${__from:date:seconds}"
        );
        let d = dashboard(&cujs(), Some(&link));
        let targets: Vec<&Value> = d["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .filter_map(|p| p["targets"].as_array())
            .flatten()
            .collect();
        let mut with = 0;
        for t in &targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            let raw = RAW_SERIES.iter().any(|m| expr.contains(m)) && t["instant"] == false;
            assert_eq!(t["exemplar"], raw, "{expr}");
            with += usize::from(raw);
        }
        assert!(with >= 3, "bad events, latency quantiles, heatmap: {with}");
        let bad = d["panels"]
            .as_array()
            .and_then(|p| {
                p.iter()
                    .find(|p| p["title"] == "Bad events per second, with their traces")
            })
            .expect("the bad events panel");
        assert!(
            bad["description"]
                .as_str()
                .is_some_and(|t| t
                    .contains("url: \"https://grafana.example.com/explore?trace=${__value.raw}")),
            "{bad}"
        );
        let plain = dashboard(&cujs(), None);
        assert!(!plain.to_string().contains("__value.raw"));
    }
}
