//! The `cujs:` section of the config, resolved into [`cujo_sli::cuj::Cuj`] definitions.
//!
//! Owns the YAML form of a CUJ and its errors; the definitions themselves, matching and
//! evaluation are `cujo_sli`'s. The binary composes `cujs:` into its config and hands the
//! resolved list to the SLI engine and the generators.
//!
//! Value forms are free-form YAML (a scalar, a list, or a map of `regex` / `exists` /
//! `gte` / `gt` / `lte` / `lt`), so they are read as YAML values and converted here, with
//! errors that name the key path (`cujs[0].availability.bad[1].gte: expected a number`).

use std::time::Duration;

use cujo_sli::condition::{Condition, Literal, RootMatch, StatusCode, ValueMatch};
use cujo_sli::config::AlertGateConfig;
use cujo_sli::cuj::{Cuj, Measure, Scope, Sli, SpanEdge, SpanSelector};
use cujo_sli::slo::{AlertGate, Objective};
use cujo_sli::window::MAX_WINDOW;
use serde::Deserialize;
use serde_yaml_ng::Value;

use cujo_config::{HumanDuration, KeyError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CujConfig {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    #[serde(default)]
    pub dimensions: Vec<String>,
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    #[serde(default)]
    pub availability: AvailabilityConfig,
    pub latency: Option<LatencyConfig>,
    #[serde(default)]
    pub objectives: Vec<ObjectiveConfig>,
    /// What a burn-rate alert's long window must hold before it may fire; each key unset
    /// takes `slo.alerts`' value.
    #[serde(default)]
    pub alerts: AlertGateConfig,
    /// Where on-call reads what to do when this CUJ burns: an `http(s)://` URL carried by
    /// its alert rules (`runbook_url`), notifications and reports.
    pub runbook: Option<String>,
}

fn default_max_series() -> usize {
    1000
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    #[serde(rename = "service.name")]
    pub service_name: Option<Value>,
    #[serde(rename = "span.name")]
    pub span_name: Option<Value>,
    #[serde(default)]
    pub attributes: serde_yaml_ng::Mapping,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityConfig {
    #[serde(default)]
    pub scope: ScopeConfig,
    #[serde(default)]
    pub bad: Vec<serde_yaml_ng::Mapping>,
    #[serde(default)]
    pub exclude: Vec<serde_yaml_ng::Mapping>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScopeConfig {
    #[default]
    Root,
    Trace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    pub threshold: HumanDuration,
    #[serde(default = "default_measure")]
    pub measure: Value,
}

fn default_measure() -> Value {
    Value::String("root".into())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    pub sli: SliConfig,
    pub target: Value,
    pub window: HumanDuration,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SliConfig {
    Availability,
    Latency,
}

fn err<T>(path: &str, detail: impl Into<String>) -> Result<T, KeyError> {
    cujo_config::fail(path, detail)
}

/// The CUJs of a YAML document with a `cujs:` list (tests of the components that read
/// CUJs write them as a user would), with alerts ungated unless a CUJ sets `alerts:` (the
/// tests feed minutes or hours of traffic, not the half of each window the default needs).
#[cfg(test)]
pub(crate) fn from_yaml(yaml: &str) -> Vec<Cuj> {
    #[derive(Deserialize)]
    struct Doc {
        cujs: Vec<CujConfig>,
    }
    let doc: Doc = serde_yaml_ng::from_str(yaml).expect("a cujs: document");
    resolve(&doc.cujs, AlertGate::OFF).expect("valid cujs")
}

/// Resolves every CUJ, or the first error with its key path; `alerts` is the alert gate of
/// CUJs that do not set theirs (`slo.alerts`).
pub fn resolve(cujs: &[CujConfig], alerts: AlertGate) -> Result<Vec<Cuj>, KeyError> {
    let mut names = std::collections::HashSet::new();
    cujs.iter()
        .enumerate()
        .map(|(i, c)| {
            let path = format!("cujs[{i}]");
            if c.name.trim().is_empty() {
                return err(&format!("{path}.name"), "must not be empty");
            }
            if !names.insert(c.name.clone()) {
                return err(
                    &format!("{path}.name"),
                    format!("{:?} is defined twice", c.name),
                );
            }
            resolve_one(c, &path, alerts)
        })
        .collect()
}

fn resolve_one(c: &CujConfig, path: &str, alerts: AlertGate) -> Result<Cuj, KeyError> {
    let matcher = RootMatch {
        service: c
            .matcher
            .service_name
            .as_ref()
            .map(|v| value_match(v, &format!("{path}.match.service.name")))
            .transpose()?,
        span_name: c
            .matcher
            .span_name
            .as_ref()
            .map(|v| value_match(v, &format!("{path}.match.span.name")))
            .transpose()?,
        attributes: c
            .matcher
            .attributes
            .iter()
            .map(|(k, v)| {
                let key = k.as_str().unwrap_or_default().to_string();
                let m = value_match(v, &format!("{path}.match.attributes.{key}"))?;
                Ok((key, m))
            })
            .collect::<Result<_, KeyError>>()?,
    };
    if c.max_series == 0 {
        return err(&format!("{path}.max_series"), "must be at least 1");
    }
    let conditions = |list: &[serde_yaml_ng::Mapping], what: &str| {
        list.iter()
            .enumerate()
            .map(|(j, m)| condition(m, &format!("{path}.availability.{what}[{j}]")))
            .collect::<Result<Vec<_>, KeyError>>()
    };
    let latency = match &c.latency {
        None => None,
        Some(l) => {
            let p = format!("{path}.latency.measure");
            let measure = match &l.measure {
                Value::String(s) if s == "root" => Measure::Root,
                Value::String(s) if s == "end_to_end" => Measure::EndToEnd,
                Value::Mapping(m) => between(m, &p)?,
                other => {
                    return err(
                        &p,
                        format!(
                            "expected root, end_to_end or {{from: {{span: ...}}, to: {{span: ...}}}}, found {}",
                            show(other)
                        ),
                    );
                }
            };
            Some((l.threshold.0, measure))
        }
    };
    let objectives = c
        .objectives
        .iter()
        .enumerate()
        .map(|(j, o)| {
            let p = format!("{path}.objectives[{j}]");
            let sli = match o.sli {
                SliConfig::Availability => Sli::Availability,
                SliConfig::Latency if latency.is_none() => {
                    return err(
                        &format!("{p}.sli"),
                        "a latency objective needs the CUJ's latency: section",
                    );
                }
                SliConfig::Latency => Sli::Latency,
            };
            let target = target_ratio(&o.target).ok_or_else(|| {
                KeyError::new(
                    format!("{p}.target"),
                    format!(
                        "expected a target like \"99.9%\" or 0.999, found {}",
                        show(&o.target)
                    ),
                )
            })?;
            if o.window.0 < Duration::from_secs(3600) || o.window.0 > MAX_WINDOW {
                return err(&format!("{p}.window"), "must be between 1h and 31d");
            }
            Ok((
                sli,
                Objective {
                    target,
                    window: o.window.0,
                },
            ))
        })
        .collect::<Result<_, KeyError>>()?;
    Ok(Cuj {
        name: c.name.clone(),
        matcher,
        dimensions: c.dimensions.clone(),
        max_series: c.max_series,
        scope: match c.availability.scope {
            ScopeConfig::Root => Scope::Root,
            ScopeConfig::Trace => Scope::Trace,
        },
        bad: conditions(&c.availability.bad, "bad")?,
        exclude: conditions(&c.availability.exclude, "exclude")?,
        latency,
        objectives,
        alert_gate: c.alerts.over(alerts),
        runbook: match &c.runbook {
            Some(url) => {
                cujo_config::outbound::check_url(
                    &format!("{path}.runbook"),
                    url,
                    "https://runbooks.example.com/checkout",
                )?;
                Some(url.clone())
            }
            None => None,
        },
    })
}

/// `{from: SELECTOR, to: SELECTOR}`.
fn between(m: &serde_yaml_ng::Mapping, path: &str) -> Result<Measure, KeyError> {
    for k in m.keys() {
        let key = k.as_str().unwrap_or_default();
        if key != "from" && key != "to" {
            return err(
                &format!("{path}.{key}"),
                "unknown key; a {from, to} measure takes from and to",
            );
        }
    }
    let side = |name: &str, default_at: SpanEdge| -> Result<Box<SpanSelector>, KeyError> {
        let p = format!("{path}.{name}");
        match m.get(name) {
            Some(Value::Mapping(sel)) => selector(sel, &p, default_at).map(Box::new),
            Some(other) => err(
                &p,
                format!(
                    "expected a span selector like {{span: \"enqueue\", at: start}}, found {}",
                    show(other)
                ),
            ),
            None => err(&p, "missing; a {from, to} measure needs both ends"),
        }
    };
    Ok(Measure::Between {
        from: side("from", SpanEdge::Start)?,
        to: side("to", SpanEdge::End)?,
    })
}

/// `{span: NAME-FORM, service: NAME-FORM, attributes: {KEY: FORM}, at: start|end}`.
fn selector(
    m: &serde_yaml_ng::Mapping,
    path: &str,
    default_at: SpanEdge,
) -> Result<SpanSelector, KeyError> {
    let mut sel = SpanSelector {
        matcher: RootMatch::default(),
        at: default_at,
    };
    for (k, v) in m {
        let key = k.as_str().unwrap_or_default();
        let p = format!("{path}.{key}");
        match key {
            "span" => sel.matcher.span_name = Some(value_match(v, &p)?),
            "service" => sel.matcher.service = Some(value_match(v, &p)?),
            "attributes" => {
                let Value::Mapping(attrs) = v else {
                    return err(&p, "expected a map of attribute keys to value forms");
                };
                for (ak, av) in attrs {
                    let ak = ak.as_str().unwrap_or_default().to_string();
                    let m = value_match(av, &format!("{p}.{ak}"))?;
                    sel.matcher.attributes.push((ak, m));
                }
            }
            "at" => {
                sel.at = match v.as_str() {
                    Some("start") => SpanEdge::Start,
                    Some("end") => SpanEdge::End,
                    _ => return err(&p, format!("expected start or end, found {}", show(v))),
                }
            }
            other => {
                return err(
                    &p,
                    format!("unknown key {other:?}; expected span, service, attributes or at"),
                );
            }
        }
    }
    let m = &sel.matcher;
    if m.span_name.is_none() && m.service.is_none() && m.attributes.is_empty() {
        return err(path, "selects every span; give span, service or attributes");
    }
    Ok(sel)
}

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `"99.9%"` or `0.999` → 0.999, strictly between 0 and 1.
fn target_ratio(v: &Value) -> Option<f64> {
    let ratio = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => match s.trim().strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
            None => s.trim().parse().ok()?,
        },
        _ => return None,
    };
    // "99.9%" / 100 is 0.9990000000000001 in binary; round to the precision users write.
    let ratio = (ratio * 1e12).round() / 1e12;
    (ratio > 0.0 && ratio < 1.0).then_some(ratio)
}

fn literal(v: &Value, path: &str) -> Result<Literal, KeyError> {
    Ok(match v {
        Value::String(s) => Literal::Str(s.clone()),
        Value::Bool(b) => Literal::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Literal::Int(i),
            None => Literal::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => {
            return err(
                path,
                format!(
                    "expected a string, number or boolean, found {}",
                    show(other)
                ),
            );
        }
    })
}

fn number(v: &Value, path: &str) -> Result<f64, KeyError> {
    v.as_f64()
        .ok_or_else(|| KeyError::new(path, format!("expected a number, found {}", show(v))))
}

/// A value form: scalar (exact), list (any of), or a map of regex / exists / ranges.
fn value_match(v: &Value, path: &str) -> Result<ValueMatch, KeyError> {
    match v {
        Value::Sequence(items) => Ok(ValueMatch::AnyOf(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| literal(x, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        )),
        Value::Mapping(m) => form_from_map(m, path, &[]),
        other => Ok(ValueMatch::Equals(literal(other, path)?)),
    }
}

/// The value form inside a map, skipping the keys in `skip` (a condition's `attribute`).
fn form_from_map(
    m: &serde_yaml_ng::Mapping,
    path: &str,
    skip: &[&str],
) -> Result<ValueMatch, KeyError> {
    let (mut gte, mut gt, mut lte, mut lt) = (None, None, None, None);
    let mut form = None;
    for (k, v) in m {
        let key = k.as_str().unwrap_or_default();
        let p = format!("{path}.{key}");
        match key {
            k if skip.contains(&k) => {}
            "gte" => gte = Some(number(v, &p)?),
            "gt" => gt = Some(number(v, &p)?),
            "lte" => lte = Some(number(v, &p)?),
            "lt" => lt = Some(number(v, &p)?),
            "regex" => {
                let pattern = v
                    .as_str()
                    .ok_or_else(|| KeyError::new(p.clone(), "expected a regex string"))?;
                form = Some(ValueMatch::regex(pattern).map_err(|e| KeyError::new(p.clone(), e))?);
            }
            "exists" => {
                let b = v
                    .as_bool()
                    .ok_or_else(|| KeyError::new(p.clone(), "expected true or false"))?;
                form = Some(ValueMatch::Exists(b));
            }
            "in" => match v {
                Value::Sequence(_) => form = Some(value_match(v, &p)?),
                _ => return err(&p, "expected a list of values"),
            },
            "equals" => form = Some(ValueMatch::Equals(literal(v, &p)?)),
            other => {
                return err(
                    &p,
                    format!(
                        "unknown key {other:?}; expected one of equals, in, regex, exists, gte, gt, lte, lt"
                    ),
                );
            }
        }
    }
    let range = [gte, gt, lte, lt].iter().any(Option::is_some);
    match (form, range) {
        (Some(_), true) => err(
            path,
            "a range (gte/gt/lte/lt) cannot be combined with another form",
        ),
        (Some(f), false) => Ok(f),
        (None, true) => Ok(ValueMatch::Range { gte, gt, lte, lt }),
        (None, false) => err(
            path,
            "expected a value form: equals, in, regex, exists, or gte/gt/lte/lt",
        ),
    }
}

/// `{status: error}` or `{attribute: KEY, <form>}`.
fn condition(m: &serde_yaml_ng::Mapping, path: &str) -> Result<Condition, KeyError> {
    if let Some(status) = m.get("status") {
        if m.len() != 1 {
            return err(path, "a status condition takes no other keys");
        }
        return match status.as_str() {
            Some("error") => Ok(Condition::Status(StatusCode::Error)),
            Some("ok") => Ok(Condition::Status(StatusCode::Ok)),
            Some("unset") => Ok(Condition::Status(StatusCode::Unset)),
            _ => err(
                &format!("{path}.status"),
                format!("expected error, ok or unset, found {}", show(status)),
            ),
        };
    }
    let Some(key) = m.get("attribute").and_then(Value::as_str) else {
        return err(path, "expected {status: error} or {attribute: KEY, ...}");
    };
    Ok(Condition::Attribute {
        key: key.to_string(),
        value: form_from_map(m, path, &["attribute"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<Cuj>, String> {
        let cujs: Vec<CujConfig> = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        resolve(&cujs, AlertGate::default()).map_err(|e| e.to_string())
    }

    #[test]
    fn the_documented_contract_resolves() {
        let cujs = parse(
            r#"
- name: post_message
  match:
    service.name: frontend-api
    span.name: "POST /v1/messages"
    attributes: { cuj.name: post_message }
  dimensions: [user.tier]
  max_series: 1000
  availability:
    scope: root
    bad:
      - status: error
      - { attribute: http.response.status_code, gte: 500 }
      - { attribute: graphql.error.code, in: [INTERNAL_SERVER_ERROR] }
    exclude:
      - { attribute: http.response.status_code, gte: 400, lt: 500 }
  latency:
    threshold: 300ms
    measure: root
  objectives:
    - { sli: availability, target: 99.9%, window: 30d }
    - { sli: latency, target: 99%, window: 30d }
"#,
        )
        .expect("resolves");
        let c = &cujs[0];
        assert_eq!(c.bad.len(), 3);
        assert_eq!(c.objectives[0].1.target, 0.999);
        assert!(matches!(
            c.latency,
            Some((t, Measure::Root)) if t == Duration::from_millis(300)
        ));
    }

    #[test]
    fn the_from_to_measure_resolves() {
        let cujs = parse(
            r#"
- name: deliver_message
  latency:
    threshold: 2s
    measure:
      from: { span: enqueue, service: frontend-api }
      to: { span: { regex: "job (completed|done)" }, attributes: { job.kind: push }, at: start }
"#,
        )
        .expect("resolves");
        let Some((_, Measure::Between { from, to })) = &cujs[0].latency else {
            panic!("a {{from, to}} measure expected")
        };
        assert_eq!((from.at, to.at), (SpanEdge::Start, SpanEdge::Start));
        assert!(from.matcher.service.is_some() && to.matcher.attributes.len() == 1);
        assert!(cujs[0].settles() && cujs[0].needs_spans());
    }

    #[test]
    fn from_to_errors_name_the_key_path() {
        let measure = |m: &str| {
            parse(&format!(
                "- name: a\n  latency: {{ threshold: 1s, measure: {m} }}\n"
            ))
            .expect_err(m)
        };
        assert_eq!(
            measure("{ from: { span: enqueue, at: middle }, to: { span: done } }"),
            "cujs[0].latency.measure.from.at: expected start or end, found middle"
        );
        assert_eq!(
            measure("{ from: { span: enqueue } }"),
            "cujs[0].latency.measure.to: missing; a {from, to} measure needs both ends"
        );
        assert_eq!(
            measure("{ from: { span: enqueue }, to: { at: end } }"),
            "cujs[0].latency.measure.to: selects every span; give span, service or attributes"
        );
        assert!(
            measure("{ from: { span: { regex: \"(\" } }, to: { span: done } }")
                .starts_with("cujs[0].latency.measure.from.span.regex: invalid regex"),
        );
        assert!(
            measure("{ from: { name: x }, to: { span: done } }")
                .starts_with("cujs[0].latency.measure.from.name: unknown key"),
        );
        assert!(measure("wall_clock").starts_with("cujs[0].latency.measure: expected root"));
    }

    #[test]
    fn errors_name_the_key_path() {
        let e = parse("- name: a\n  availability: { bad: [ { attribute: x, gte: high } ] }\n")
            .expect_err("bad number");
        assert_eq!(
            e,
            "cujs[0].availability.bad[0].gte: expected a number, found high"
        );
        let e = parse(
            "- name: a\n  objectives: [ { sli: availability, target: 120%, window: 30d } ]\n",
        )
        .expect_err("bad target");
        assert!(
            e.starts_with("cujs[0].objectives[0].target: expected a target"),
            "{e}"
        );
        let e =
            parse("- name: a\n  match: { span.name: { regex: \"(\" } }\n").expect_err("bad regex");
        assert!(
            e.starts_with("cujs[0].match.span.name.regex: invalid regex"),
            "{e}"
        );
        let e = parse("- name: a\n  objectives: [ { sli: latency, target: 0.99, window: 30d } ]\n")
            .expect_err("no latency");
        assert!(e.contains("needs the CUJ's latency"), "{e}");
        let e = parse("- name: a\n- name: a\n").expect_err("duplicate");
        assert!(e.starts_with("cujs[1].name"), "{e}");
        let e = parse("- name: a\n  runbook: wiki/checkout\n").expect_err("no scheme");
        assert!(
            e.starts_with(
                "cujs[0].runbook: expected a URL like \"https://runbooks.example.com/checkout\""
            ),
            "{e}"
        );
        let cujs = parse("- name: a\n  runbook: https://wiki.example.com/runbooks/a\n")
            .expect("a runbook");
        assert_eq!(
            cujs[0].runbook.as_deref(),
            Some("https://wiki.example.com/runbooks/a")
        );
    }

    #[test]
    fn a_cuj_reports_the_slis_it_configures() {
        let cujs = parse(
            r#"
- name: bare
- name: latency_only
  latency: { threshold: 1s }
  objectives: [ { sli: latency, target: 99%, window: 30d } ]
- name: latency_and_exclusions
  availability: { exclude: [ { status: unset } ] }
  latency: { threshold: 1s }
- name: both_by_conditions
  availability: { bad: [ { status: error } ] }
  latency: { threshold: 1s }
- name: both_by_objective
  latency: { threshold: 1s }
  objectives: [ { sli: availability, target: 99%, window: 30d } ]
"#,
        )
        .expect("resolves");
        let slis: Vec<(bool, bool)> = cujs
            .iter()
            .map(|c| (c.has_sli(Sli::Availability), c.has_sli(Sli::Latency)))
            .collect();
        assert_eq!(
            slis,
            [
                (true, false),
                (false, true),
                (false, true),
                (true, true),
                (true, true)
            ]
        );
    }

    #[test]
    fn a_cuj_sets_its_alert_gate_over_the_global_one() {
        let cujs: Vec<CujConfig> = serde_yaml_ng::from_str(
            "- { name: a }\n- { name: b, alerts: { min_events: 5 } }\n- { name: c, alerts: { min_coverage: 0% } }\n",
        )
        .expect("parses");
        let global = AlertGate {
            min_events: 20,
            min_coverage: 0.25,
        };
        let gates: Vec<AlertGate> = resolve(&cujs, global)
            .expect("resolves")
            .iter()
            .map(|c| c.alert_gate)
            .collect();
        assert_eq!(
            gates,
            [
                global,
                AlertGate {
                    min_events: 5,
                    min_coverage: 0.25
                },
                AlertGate {
                    min_events: 20,
                    min_coverage: 0.0
                }
            ]
        );
        let e = serde_yaml_ng::from_str::<Vec<CujConfig>>(
            "- { name: a, alerts: { min_coverage: 2 } }\n",
        )
        .expect_err("over 100%");
        assert!(e.to_string().contains("between 0 and 1"), "{e}");
    }
}
