//! `cujo rules`: Prometheus recording rules and multiwindow, multi-burn-rate alert rules for
//! the configured CUJs, over cujo's exported counters.
//!
//! When several cujo instances share the traffic, each one's in-process SLOs only see its
//! share; Prometheus sums `cujo_sli_events_total` over instances and these rules compute the
//! SLOs there. The rule names are Sloth's (`slo:sli_error:ratio_rate5m`, `slo:objective:ratio`,
//! …), so Sloth's dashboards and tooling read them; the identity labels are `cuj`, `sli` and
//! `slo` (`<cuj>-<sli>`), where Sloth has `sloth_service`, `sloth_slo` and `sloth_id`.
//!
//! The alerts take their windows and factors from [`cujo_sli::slo::burn_rate_rules`], the
//! function the in-process evaluation uses, so the two can never drift apart, and hold, as
//! in process, until the rule's long window has the CUJ's `alerts.min_events` valid events
//! (its `min_coverage` is not applied: Prometheus keeps its own history across restarts).
//!
//! One rule group per CUJ holds its event rates, every objective's error ratios, metadata
//! and alerts, in that order: rules of a group run in order at one evaluation time, so an
//! alert always reads the error ratios recorded in the same evaluation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cujo_sli::cuj::{Cuj, Sli};
use cujo_sli::engine::{label_name, window_label};
use cujo_sli::slo::{BurnRateRule, Objective, REPORTED_WINDOWS, Severity, burn_rate_rules};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    /// Write the rules to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Write a Prometheus Operator `PrometheusRule` object of this name (the rule groups
    /// in its `spec`) instead of a rules file: for a fleet of replicas, whose alerts come
    /// from Prometheus and Alertmanager rather than from each replica.
    #[arg(long, value_name = "NAME")]
    pub kubernetes: Option<String>,
    /// The `PrometheusRule`'s namespace (with `--kubernetes`).
    #[arg(long, requires = "kubernetes")]
    pub namespace: Option<String>,
}

/// `cujo rules` for the configured `cujs`.
pub fn run(cujs: &[Cuj], args: &RulesArgs) -> ExitCode {
    if !cujs.iter().any(|c| !c.objectives.is_empty()) {
        eprintln!("cujo: warning: no CUJ has objectives; the rules file has no SLO rules");
    }
    let text = match &args.kubernetes {
        Some(name) => render_kubernetes(cujs, name, args.namespace.as_deref()),
        None => render(cujs),
    };
    write_output("rules", args.output.as_deref(), &text)
}

/// Writes `text` to `path`, or to standard output without one; the exit code says how it went.
pub(crate) fn write_output(what: &str, path: Option<&std::path::Path>, text: &str) -> ExitCode {
    use std::io::Write as _;
    let result = match path {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write the {what} to standard output: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cujo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The metric cujo exports per CUJ, SLI, outcome and dimension values.
const EVENTS: &str = "cujo_sli_events_total";
/// Good and bad events per second over 5 minutes, summed over instances and dimensions.
pub const EVENT_RATE: &str = "cuj:cujo_sli_events:rate5m";
/// The same, kept per dimension values: which `user_tier` burns the budget.
pub const EVENT_RATE_BY_DIMENSION: &str = "cuj_dimensions:cujo_sli_events:rate5m";
/// Alert names, one per severity.
pub const PAGE_ALERT: &str = "CujErrorBudgetBurnPage";
pub const TICKET_ALERT: &str = "CujErrorBudgetBurnTicket";

/// Sloth's name for the error ratio over `window`.
pub fn error_ratio_name(window: Duration) -> String {
    format!("slo:sli_error:ratio_rate{}", window_label(window))
}

/// The value of the `slo` label of each objective of `cuj`, in order: `<cuj>-<sli>`, with
/// the window (and then the target) added when one CUJ has several objectives on one SLI.
pub fn slo_ids(cuj: &Cuj) -> Vec<String> {
    let count =
        |f: &dyn Fn(&(Sli, Objective)) -> bool| cuj.objectives.iter().filter(|o| f(o)).count();
    cuj.objectives
        .iter()
        .map(|(sli, obj)| {
            let mut id = format!("{}-{}", cuj.name, sli.label());
            if count(&|(s, _)| s == sli) > 1 {
                id.push('-');
                id.push_str(&window_label(obj.window));
                if count(&|(s, o)| s == sli && o.window == obj.window) > 1 {
                    id.push('-');
                    id.push_str(&number(obj.target * 100.0));
                }
            }
            id
        })
        .collect()
}

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Serialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    expr: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl Rule {
    fn record(name: impl Into<String>, expr: String, labels: BTreeMap<String, String>) -> Rule {
        Rule {
            record: Some(name.into()),
            alert: None,
            expr,
            labels,
            annotations: BTreeMap::new(),
        }
    }
}

/// The rules file for `cujs`, as YAML.
pub fn render(cujs: &[Cuj]) -> String {
    let file = RuleFile {
        groups: cujs.iter().map(group).collect(),
    };
    let yaml = serde_yaml_ng::to_string(&file)
        .unwrap_or_else(|e| format!("# cujo could not write the rules: {e}\ngroups: []\n"));
    format!(
        "# Prometheus rules for cujo's CUJs, written by `cujo rules` (cujo {}).\n\
         # Regenerate instead of editing. Names follow Sloth (slo:sli_error:ratio_rate5m, ...);\n\
         # identity labels: cuj, sli, slo; windows: window. See docs/prometheus.md.\n{yaml}",
        env!("CARGO_PKG_VERSION")
    )
}

/// A Prometheus Operator `PrometheusRule` holding the rule groups of `cujs`.
#[derive(Serialize)]
struct PrometheusRule {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: RuleFile,
}

#[derive(Serialize)]
struct ObjectMeta {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

/// The rules of `cujs` as a `PrometheusRule` object named `name`, as YAML.
pub fn render_kubernetes(cujs: &[Cuj], name: &str, namespace: Option<&str>) -> String {
    let object = PrometheusRule {
        api_version: "monitoring.coreos.com/v1",
        kind: "PrometheusRule",
        metadata: ObjectMeta {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            labels: BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "cujo".to_string()),
                (
                    "app.kubernetes.io/component".to_string(),
                    "slo-rules".to_string(),
                ),
            ]),
        },
        spec: RuleFile {
            groups: cujs.iter().map(group).collect(),
        },
    };
    let yaml = serde_yaml_ng::to_string(&object)
        .unwrap_or_else(|e| format!("# cujo could not write the PrometheusRule: {e}\n"));
    format!(
        "# The SLO recording and alerting rules of cujo's CUJs as a PrometheusRule, written by\n\
         # `cujo rules --kubernetes` (cujo {}). Regenerate instead of editing; add the labels\n\
         # your Prometheus' ruleSelector asks for. Alerts carry severity=page|ticket.\n{yaml}",
        env!("CARGO_PKG_VERSION")
    )
}

fn group(cuj: &Cuj) -> Group {
    let name = promql_string(&cuj.name);
    // The static `cuj` label keeps each CUJ's rules distinct (promtool lints duplicates).
    let cuj_label = BTreeMap::from([("cuj".to_string(), cuj.name.clone())]);
    let mut rules = vec![Rule::record(
        EVENT_RATE,
        format!("sum by (cuj, sli, outcome) (rate({EVENTS}{{cuj={name}}}[5m]))"),
        cuj_label.clone(),
    )];
    if !cuj.dimensions.is_empty() {
        let dims: Vec<String> = cuj.dimensions.iter().map(|d| label_name(d)).collect();
        rules.push(Rule::record(
            EVENT_RATE_BY_DIMENSION,
            format!(
                "sum by (cuj, sli, outcome, {}) (rate({EVENTS}{{cuj={name}}}[5m]))",
                dims.join(", ")
            ),
            cuj_label,
        ));
    }
    for ((sli, objective), slo) in cuj.objectives.iter().zip(slo_ids(cuj)) {
        rules.extend(objective_rules(cuj, *sli, objective, &slo));
    }
    Group {
        name: format!("cujo-slo-{}", cuj.name),
        rules,
    }
}

/// Error ratios, Sloth's metadata series and the two alerts of one objective.
fn objective_rules(cuj: &Cuj, sli: Sli, objective: &Objective, slo: &str) -> Vec<Rule> {
    let burn_rules = burn_rate_rules(objective.window);
    let mut windows: Vec<Duration> = REPORTED_WINDOWS.to_vec();
    for r in &burn_rules {
        windows.extend([r.long, r.short]);
    }
    windows.sort();
    windows.dedup();

    let identity: BTreeMap<String, String> = [
        ("cuj", cuj.name.as_str()),
        ("sli", sli.label()),
        ("slo", slo),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let with_window = |w: Duration| {
        let mut l = identity.clone();
        l.insert("window".into(), window_label(w));
        l
    };
    let events = |outcome: &str| {
        let mut m = format!(
            "cuj={},sli={}",
            promql_string(&cuj.name),
            promql_string(sli.label())
        );
        if !outcome.is_empty() {
            m.push_str(&format!(",outcome={}", promql_string(outcome)));
        }
        m
    };
    let this_slo = format!(
        "cuj={},sli={},slo={}",
        promql_string(&cuj.name),
        promql_string(sli.label()),
        promql_string(slo)
    );

    let mut rules = Vec::new();
    for w in &windows {
        let range = window_label(*w);
        rules.push(Rule::record(
            error_ratio_name(*w),
            format!(
                "sum by (cuj, sli) (rate({EVENTS}{{{bad}}}[{range}]))\n/\n\
                 sum by (cuj, sli) (rate({EVENTS}{{{all}}}[{range}]))",
                bad = events("bad"),
                all = events(""),
            ),
            with_window(*w),
        ));
    }
    // The objective's own window (30d) from the recorded 5m event rates: a rate over 30 days
    // of raw samples is too heavy. Both sides are weighted by events, as in process.
    let period_label = window_label(objective.window);
    if !windows.iter().any(|w| window_label(*w) == period_label) {
        let range = window_label(objective.window);
        rules.push(Rule::record(
            error_ratio_name(objective.window),
            format!(
                "sum by (cuj, sli) (sum_over_time({EVENT_RATE}{{{bad}}}[{range}]))\n/\n\
                 sum by (cuj, sli) (sum_over_time({EVENT_RATE}{{{all}}}[{range}]))",
                bad = events("bad"),
                all = events(""),
            ),
            with_window(objective.window),
        ));
    }

    let budget = 1.0 - objective.target;
    let days = objective.window.as_secs_f64() / 86400.0;
    rules.push(Rule::record(
        "slo:objective:ratio",
        format!("vector({})", number(objective.target)),
        identity.clone(),
    ));
    rules.push(Rule::record(
        "slo:error_budget:ratio",
        format!("vector({})", number(budget)),
        identity.clone(),
    ));
    rules.push(Rule::record(
        "slo:time_period:days",
        format!("vector({})", number(days)),
        identity.clone(),
    ));
    let over_budget = |ratio: String| {
        format!(
            "{ratio}{{{this_slo}}}\n/ on (cuj, sli, slo) group_left\n\
             slo:error_budget:ratio{{{this_slo}}}"
        )
    };
    rules.push(Rule::record(
        "slo:current_burn_rate:ratio",
        over_budget(error_ratio_name(Duration::from_secs(300))),
        identity.clone(),
    ));
    rules.push(Rule::record(
        "slo:period_burn_rate:ratio",
        over_budget(error_ratio_name(objective.window)),
        identity.clone(),
    ));
    rules.push(Rule::record(
        "slo:period_error_budget_remaining:ratio",
        format!("1 - slo:period_burn_rate:ratio{{{this_slo}}}"),
        identity.clone(),
    ));

    for (severity, alert) in [
        (Severity::Page, PAGE_ALERT),
        (Severity::Ticket, TICKET_ALERT),
    ] {
        let chosen: Vec<&BurnRateRule> = burn_rules
            .iter()
            .filter(|r| r.severity == severity)
            .collect();
        if chosen.is_empty() {
            continue;
        }
        let condition = |r: &BurnRateRule| {
            let over = |w: Duration| {
                format!(
                    "max without (window) ({}{{{this_slo}}} > ({} * {}))",
                    error_ratio_name(w),
                    number(r.factor),
                    number(budget)
                )
            };
            // The alert gate's minimum of events over the long window, as in process
            // (`increase` extrapolates, so near the bound the two may differ by an event or
            // two). Coverage is not gated here: Prometheus keeps its own history, so a
            // restart of cujo does not empty its windows.
            let gate = if cuj.alert_gate.min_events > 0 {
                format!(
                    "\n  and on ()\n  sum(increase({EVENTS}{{{all}}}[{range}])) >= {min}",
                    all = events(""),
                    range = window_label(r.long),
                    min = cuj.alert_gate.min_events
                )
            } else {
                String::new()
            };
            format!("(\n  {}\n  and\n  {}{gate}\n)", over(r.long), over(r.short))
        };
        let expr = chosen
            .iter()
            .map(|r| condition(r))
            .collect::<Vec<_>>()
            .join("\nor\n");
        let mut labels = identity.clone();
        labels.insert("severity".into(), severity.label().into());
        let pace = chosen
            .iter()
            .map(|r| {
                format!(
                    "{}x over both {} and {}",
                    (r.factor * 100.0).round() / 100.0,
                    window_label(r.long),
                    window_label(r.short)
                )
            })
            .collect::<Vec<_>>()
            .join(", or ");
        let objective_text = format!(
            "{}% over {}",
            number(objective.target * 100.0),
            window_label(objective.window)
        );
        // The CUJ's name reaches the text through $labels, never as template source.
        let mut annotations = BTreeMap::from([
            (
                "summary".to_string(),
                format!(
                    "CUJ {{{{ $labels.cuj }}}} is burning its {} error budget ({}) too fast: {}",
                    sli.label(),
                    objective_text,
                    severity.label()
                ),
            ),
            (
                "description".to_string(),
                format!(
                    "The {} SLO {{{{ $labels.slo }}}} of CUJ {{{{ $labels.cuj }}}} (objective {}) \
                     burns its error budget faster than {}. \
                     Burn rate 1 spends the budget exactly over {}.",
                    sli.label(),
                    objective_text,
                    pace,
                    window_label(objective.window)
                ),
            ),
        ]);
        // A URL (validated, so without `{{`): no template source either.
        if let Some(url) = &cuj.runbook {
            annotations.insert("runbook_url".to_string(), url.clone());
        }
        rules.push(Rule {
            record: None,
            alert: Some(alert.into()),
            expr,
            labels,
            annotations,
        });
    }
    rules
}

/// A PromQL string literal.
pub fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number as users write it: 14.4, 0.001, 0.933333333333 (not 14.400000000000002).
pub fn number(x: f64) -> String {
    let r = (x * 1e12).round() / 1e12;
    format!("{r}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cujo_sli::condition::RootMatch;
    use cujo_sli::cuj::Scope;

    fn cuj(name: &str, objectives: Vec<(Sli, Objective)>) -> Cuj {
        Cuj {
            name: name.into(),
            matcher: RootMatch::default(),
            dimensions: vec!["user.tier".into()],
            max_series: 10,
            scope: Scope::Root,
            bad: vec![],
            exclude: vec![],
            latency: None,
            objectives,
            alert_gate: cujo_sli::slo::AlertGate::OFF,
            runbook: None,
        }
    }

    fn obj(target: f64, days: u64) -> Objective {
        Objective {
            target,
            window: Duration::from_secs(days * 86400),
        }
    }

    #[test]
    fn alert_thresholds_come_from_the_in_process_burn_rate_rules() {
        let yaml = render(&[cuj("checkout", vec![(Sli::Availability, obj(0.999, 28))])]);
        for r in burn_rate_rules(Duration::from_secs(28 * 86400)) {
            let threshold = format!("> ({} * 0.001))", number(r.factor));
            assert!(yaml.contains(&threshold), "{threshold} missing:\n{yaml}");
        }
        assert!(yaml.contains("13.44 * 0.001"), "{yaml}");
        assert!(yaml.contains("slo:sli_error:ratio_rate28d"));
        assert!(yaml.contains("sum by (cuj, sli, outcome, user_tier)"));
    }

    #[test]
    fn alerts_wait_for_the_gates_events_over_the_long_window() {
        let ungated = render(&[cuj("checkout", vec![(Sli::Availability, obj(0.999, 30))])]);
        assert!(!ungated.contains("increase("), "{ungated}");
        let gated = render(&[Cuj {
            alert_gate: cujo_sli::slo::AlertGate::default(),
            ..cuj("checkout", vec![(Sli::Availability, obj(0.999, 30))])
        }]);
        for long in ["1h", "6h", "1d", "3d"] {
            let clause = format!(
                "sum(increase(cujo_sli_events_total{{cuj=\"checkout\",sli=\"availability\"}}[{long}])) >= 100"
            );
            assert!(gated.contains(&clause), "{clause} missing:\n{gated}");
        }
    }

    #[test]
    fn alerts_carry_the_cujs_runbook() {
        let plain = render(&[cuj("checkout", vec![(Sli::Availability, obj(0.999, 30))])]);
        assert!(!plain.contains("runbook_url"), "{plain}");
        let with = render(&[Cuj {
            runbook: Some("https://wiki.example.com/runbooks/checkout".into()),
            ..cuj("checkout", vec![(Sli::Availability, obj(0.999, 30))])
        }]);
        assert_eq!(
            with.matches("runbook_url: https://wiki.example.com/runbooks/checkout")
                .count(),
            2,
            "page and ticket:\n{with}"
        );
    }

    #[test]
    fn slo_ids_stay_unique_with_several_objectives_on_one_sli() {
        let c = cuj(
            "pay",
            vec![
                (Sli::Availability, obj(0.999, 30)),
                (Sli::Availability, obj(0.99, 7)),
                (Sli::Availability, obj(0.9, 7)),
                (Sli::Latency, obj(0.99, 30)),
            ],
        );
        assert_eq!(
            slo_ids(&c),
            [
                "pay-availability-30d",
                "pay-availability-7d-99",
                "pay-availability-7d-90",
                "pay-latency"
            ]
        );
    }

    #[test]
    fn names_are_quoted_for_promql() {
        assert_eq!(promql_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(number(1.0 - 0.999), "0.001");
        assert_eq!(number(0.02 * 28.0 * 24.0), "13.44");
    }
}
