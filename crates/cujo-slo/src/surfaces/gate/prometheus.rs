//! `cujo status --prometheus URL`: the gate over the whole fleet. Several cujo instances that
//! share the traffic each see their share only; Prometheus sums their counters, and the rules
//! `cujo rules` generates compute the SLOs there. This reads those rules' series through the
//! Prometheus HTTP API (`/api/v1/query`) and builds the same view the gate judges from one
//! instance's JSON API:
//!
//! - `slo:objective:ratio` and `slo:time_period:days`: every objective (present as soon as
//!   the rules are loaded, events or not);
//! - `slo:period_error_budget_remaining:ratio`: its budget left over the whole period (absent
//!   or NaN without events: "no data");
//! - `slo:sli_error:ratio_rate<window>` and `slo:error_budget:ratio`: the SLI now and the
//!   1-hour burn rate, for the table;
//! - `ALERTS{alertname=~"CujErrorBudgetBurn(Page|Ticket)", alertstate="firing"}`: the page
//!   and ticket alerts as Prometheus evaluates them.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use super::{CujView, GateError, ObjectiveView, StatusView, WindowView, fetch, percent_encode};
use crate::generators::rules::{PAGE_ALERT, TICKET_ALERT, error_ratio_name, promql_string};

/// What the gate needs to reach Prometheus.
pub(super) struct Prometheus<'a> {
    /// The base URL as given (`--prometheus`).
    pub given: &'a str,
    pub timeout: Duration,
    pub token: Option<&'a str>,
    pub tls: rustls::ClientConfig,
}

/// One sample of an instant vector.
#[derive(Debug, Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    /// `[unix seconds, "value"]`.
    value: (f64, String),
}

impl Sample {
    fn value(&self) -> f64 {
        // Prometheus writes NaN and ±Inf as "NaN", "+Inf", "-Inf", which f64 parses.
        self.value.1.parse().unwrap_or(f64::NAN)
    }

    fn label(&self, name: &str) -> &str {
        self.metric.get(name).map_or("", String::as_str)
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnswerData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Sample>,
}

impl Prometheus<'_> {
    /// The objectives of `cuj` (or of every CUJ) as the fleet's rules compute them.
    pub(super) async fn view(&self, cuj: Option<&str>) -> Result<StatusView, GateError> {
        let only = cuj
            .map(|c| format!("{{cuj={}}}", promql_string(c)))
            .unwrap_or_default();
        let objectives = self.query(&format!("slo:objective:ratio{only}")).await?;
        if objectives.is_empty() {
            return Err(GateError::NoRules {
                url: self.given.to_string(),
                scope: cuj.map(|c| format!(" for CUJ \"{c}\"")).unwrap_or_default(),
            });
        }
        let by_slo = |samples: Vec<Sample>| -> BTreeMap<String, f64> {
            samples
                .into_iter()
                .map(|s| (s.label("slo").to_string(), s.value()))
                .collect()
        };
        let days = by_slo(self.query(&format!("slo:time_period:days{only}")).await?);
        let budgets = by_slo(self.query(&format!("slo:error_budget:ratio{only}")).await?);
        let remaining = by_slo(
            self.query(&format!("slo:period_error_budget_remaining:ratio{only}"))
                .await?,
        );
        let hour = by_slo(
            self.query(&format!(
                "{}{only}",
                error_ratio_name(Duration::from_secs(3600))
            ))
            .await?,
        );
        let alerts = self
            .query(&format!(
                "ALERTS{{alertname=~\"{PAGE_ALERT}|{TICKET_ALERT}\",alertstate=\"firing\"{}}}",
                cuj.map(|c| format!(",cuj={}", promql_string(c)))
                    .unwrap_or_default()
            ))
            .await?;
        let firing = |slo: &str, alert: &str| {
            alerts
                .iter()
                .any(|a| a.label("slo") == slo && a.label("alertname") == alert)
        };
        let mut cujs: BTreeMap<String, Vec<ObjectiveView>> = BTreeMap::new();
        for o in &objectives {
            let slo = o.label("slo");
            let window_seconds = days
                .get(slo)
                .filter(|d| d.is_finite() && **d > 0.0)
                .map_or(0, |d| (d * 86400.0).round() as u64);
            let window = cujo_sli::engine::window_label(Duration::from_secs(window_seconds));
            let period_ratio = if window_seconds > 0 {
                by_slo(
                    self.query(&format!(
                        "{}{{slo={}}}",
                        error_ratio_name(Duration::from_secs(window_seconds)),
                        promql_string(slo)
                    ))
                    .await?,
                )
                .into_values()
                .next()
            } else {
                None
            };
            let budget = budgets.get(slo).copied().unwrap_or(f64::NAN);
            let mut windows = vec![WindowView {
                seconds: window_seconds,
                sli: period_ratio.filter(|r| r.is_finite()).map(|r| 1.0 - r),
                burn_rate: 0.0,
            }];
            if let Some(r) = hour.get(slo).filter(|r| r.is_finite()) {
                windows.push(WindowView {
                    seconds: 3600,
                    sli: Some(1.0 - r),
                    burn_rate: if budget > 0.0 { r / budget } else { 0.0 },
                });
            }
            cujs.entry(o.label("cuj").to_string())
                .or_default()
                .push(ObjectiveView {
                    sli: o.label("sli").to_string(),
                    target: o.value(),
                    window,
                    window_seconds,
                    windows,
                    // Absent (no events yet) or NaN (0/0): no data.
                    budget_remaining: remaining.get(slo).copied().filter(|b| b.is_finite()),
                    // The fleet's rules hold alerts on events alone (`cujo rules`): no
                    // per-window reason to show here.
                    alerts_held: Vec::new(),
                    page: firing(slo, PAGE_ALERT),
                    ticket: firing(slo, TICKET_ALERT),
                    exhaustion_seconds: None,
                });
        }
        Ok(StatusView {
            fleet: None,
            cujs: cujs
                .into_iter()
                .map(|(name, objectives)| CujView { name, objectives })
                .collect(),
        })
    }

    /// The instant vector `expr` evaluates to now.
    async fn query(&self, expr: &str) -> Result<Vec<Sample>, GateError> {
        let url = query_url(self.given, expr)?;
        let body = fetch(&url, self.timeout, self.token, self.tls.clone()).await?;
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| GateError::NotPrometheus {
                url: url.to_string(),
                cause: e.to_string(),
            })?;
        match answer.data {
            Some(d) if answer.status == "success" && d.result_type == "vector" => Ok(d.result),
            _ => Err(GateError::NotPrometheus {
                url: url.to_string(),
                cause: answer.error.unwrap_or_else(|| {
                    format!("status {:?}, not an instant vector", answer.status)
                }),
            }),
        }
    }
}

/// `base` + `/api/v1/query?query=<expr>`. A bare `host:port` means `http://host:port`; a path
/// on the base (Prometheus behind a proxy prefix) is kept.
fn query_url(base: &str, expr: &str) -> Result<Uri, GateError> {
    let bad = |detail: String| GateError::PrometheusUrl {
        url: base.to_string(),
        detail,
    };
    let trimmed = base.trim();
    if trimmed.is_empty() {
        return Err(bad(
            "empty; expected a URL like http://prometheus:9090".into()
        ));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let parsed: Uri = with_scheme.parse().map_err(|e| {
        bad(format!(
            "not a URL ({e}); expected e.g. http://prometheus:9090"
        ))
    })?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) {
        return Err(bad(format!(
            "unsupported scheme {:?}; expected http:// or https://",
            parsed.scheme_str().unwrap_or("")
        )));
    }
    let authority = parsed
        .authority()
        .ok_or_else(|| bad("no host; expected e.g. http://prometheus:9090".into()))?;
    if authority.as_str().contains('@') {
        // Credentials in the URL would be printed with every error naming it.
        return Err(GateError::PrometheusUrl {
            url: "(not shown: it holds credentials)".into(),
            detail: "holds credentials (user:password@): give a bearer token in CUJO_STATUS_TOKEN or --token-file instead".into(),
        });
    }
    if parsed.query().is_some() {
        return Err(bad(
            "has a query string; give the base URL (cujo adds /api/v1/query)".into(),
        ));
    }
    let path = format!(
        "{}/api/v1/query?query={}",
        parsed.path().trim_end_matches('/'),
        percent_encode(expr)
    );
    Uri::builder()
        .scheme(parsed.scheme_str().unwrap_or("http"))
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_go_to_the_query_api_encoded() {
        let url = |b: &str| query_url(b, "slo:objective:ratio{cuj=\"a b\"}").map(|u| u.to_string());
        assert_eq!(
            url("prometheus:9090").expect("bare host"),
            "http://prometheus:9090/api/v1/query?query=slo%3Aobjective%3Aratio%7Bcuj%3D%22a%20b%22%7D"
        );
        assert!(
            url("https://p.example/prom/")
                .expect("prefix")
                .starts_with("https://p.example/prom/api/v1/query?query=")
        );
        assert!(url("").unwrap_err().to_string().contains("--prometheus"));
        assert!(url("ftp://x").unwrap_err().to_string().contains("\"ftp\""));
        let e = url("http://admin:s3cret@prometheus:9090")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds credentials") && !e.contains("s3cret"),
            "{e}"
        );
    }

    #[test]
    fn samples_read_prometheus_numbers() {
        let answer: Answer = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"slo":"a-availability"},"value":[1700000000.1,"0.25"]},
                {"metric":{"slo":"b-latency"},"value":[1700000000.1,"NaN"]}]}}"#,
        )
        .expect("answer");
        let r = answer.data.expect("data").result;
        assert_eq!(r[0].value(), 0.25);
        assert_eq!(r[0].label("slo"), "a-availability");
        assert!(r[1].value().is_nan());
    }
}
