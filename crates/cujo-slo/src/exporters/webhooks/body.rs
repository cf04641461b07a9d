//! The two bodies a webhook can receive: Slack incoming-webhook JSON and cujo's own JSON
//! (README, "Notifications").

use std::time::{Duration, UNIX_EPOCH};

use cujo_sli::slo::Severity;
use serde_json::{Value, json};

use super::alerts::{AlertStatus, Transition};

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A JSON number, or null for what JSON cannot hold (an infinite burn rate).
fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Who sends the notifications and where its status page is: the same for every one.
#[derive(Debug, Clone, Default)]
pub struct Sender {
    /// `cujo_instance`: `notifications.instance`, else the host name.
    pub instance: String,
    /// `notifications.page_url`: the status page as the on-call reaches it.
    pub page_url: Option<String>,
}

impl Sender {
    /// The CUJ's section of the status page (`#cuj-N`), unless the URL has a fragment.
    pub fn page_link(&self, t: &Transition) -> Option<String> {
        let url = self.page_url.as_deref()?;
        Some(if url.contains('#') {
            url.to_string()
        } else {
            format!("{url}#cuj-{}", t.cuj_index)
        })
    }
}

/// `user.tier=free, region=eu`.
pub fn dimensions_text(dims: &[(String, String)]) -> String {
    dims.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// cujo's own body: every number a receiver needs to route, dedupe and display the alert,
/// and on a firing where to look: the worst dimension values, the last bad trace, the
/// status page and the runbook.
pub fn generic_body(t: &Transition, sender: &Sender) -> Value {
    let worst = (!t.worst.is_empty()).then(|| {
        let dimensions: serde_json::Map<String, Value> = t
            .worst
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({ "dimensions": dimensions })
    });
    let trace = t
        .last_bad_trace_id
        .as_ref()
        .map(|id| json!({ "trace_id": id, "url": t.last_bad_trace_url }));
    let burn_rates: serde_json::Map<String, Value> = t
        .burn_rates
        .iter()
        .map(|(w, b)| (w.clone(), number(*b)))
        .collect();
    json!({
        "status": t.status.label(),
        "severity": t.severity.label(),
        "cuj": t.cuj,
        "sli": t.sli,
        "objective": { "target": number(t.target), "window": t.window },
        "burn_rates": burn_rates,
        "budget_remaining": number(t.budget_remaining),
        "exhaustion_seconds": t.exhaustion_seconds.map(number),
        "started_at": rfc3339(t.started_at_ms),
        "resolved_at": t.resolved_at_ms.map(rfc3339),
        "dedup_key": t.dedup_key(),
        "cujo_instance": sender.instance,
        "worst": worst,
        "last_bad_trace": trace,
        "page_url": sender.page_link(t),
        "runbook_url": t.runbook,
    })
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn percent(ratio: f64) -> String {
    let p = format!("{:.3}", ratio * 100.0);
    let p = p.trim_end_matches('0').trim_end_matches('.');
    format!("{p}%")
}

fn times(burn: Option<f64>) -> String {
    match burn {
        Some(b) if b.is_finite() => format!("{b:.1}x"),
        Some(_) => "∞x".into(),
        None => "–".into(),
    }
}

fn human_seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "–".into();
    }
    // Whole minutes are precise enough for a human and keep the text short.
    let rounded = if s >= 60.0 {
        (s / 60.0).round() as u64 * 60
    } else {
        s.round() as u64
    };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

/// Slack incoming-webhook JSON: `text` (the notification and fallback) plus a coloured
/// attachment with the numbers.
pub fn slack_body(t: &Transition, sender: &Sender) -> Value {
    let instance = sender.instance.as_str();
    let severity = t.severity.label();
    let (emoji, color) = match (t.status, t.severity) {
        (AlertStatus::Firing, Severity::Page) => (":rotating_light:", "#d62728"),
        (AlertStatus::Firing, Severity::Ticket) => (":warning:", "#ff7f0e"),
        (AlertStatus::Resolved, _) => (":white_check_mark:", "#2ca02c"),
    };
    let cuj = slack_escape(&t.cuj);
    let objective = format!("{} over {}", percent(t.target), t.window);
    let budget = percent(t.budget_remaining);
    let text = match t.status {
        AlertStatus::Firing => {
            let exhaustion = t
                .exhaustion_seconds
                .map(|s| match s {
                    s if s <= 0.0 => ", exhausted".to_string(),
                    s => format!(", exhausted in {}", human_seconds(s)),
                })
                .unwrap_or_default();
            format!(
                "{emoji} [FIRING:{severity}] CUJ *{cuj}* is burning its {} error budget: {} over 1h, {} over 5m (objective {objective}; {budget} of the budget left{exhaustion})",
                t.sli,
                times(t.burn("1h")),
                times(t.burn("5m")),
            )
        }
        AlertStatus::Resolved => format!(
            "{emoji} [RESOLVED:{severity}] CUJ *{cuj}* {}: the burn rate is back under the {severity} threshold ({} over 1h; objective {objective}; {budget} of the budget left)",
            t.sli,
            times(t.burn("1h")),
        ),
    };
    let burns = ["5m", "1h", "6h", "3d"]
        .iter()
        .map(|w| format!("{w} {}", times(t.burn(w))))
        .collect::<Vec<_>>()
        .join(" · ");
    let exhaustion = match t.exhaustion_seconds {
        Some(s) if s <= 0.0 => "already".into(),
        Some(s) => human_seconds(s),
        None => "not burning".into(),
    };
    let mut context = format!(
        "cujo {} · firing since {}",
        slack_escape(instance),
        rfc3339(t.started_at_ms)
    );
    if let Some(at) = t.resolved_at_ms {
        context.push_str(&format!(" · clear since {}", rfc3339(at)));
    }
    context.push_str(&format!(" · `{}`", slack_escape(&t.dedup_key())));
    let mut fields = vec![
        mrkdwn(format!("*Objective*\n{} {objective}", t.sli)),
        mrkdwn(format!("*Budget left*\n{budget}")),
        mrkdwn(format!("*Burn rate*\n{burns}")),
        mrkdwn(format!("*Budget exhausted in*\n{exhaustion}")),
    ];
    if !t.worst.is_empty() {
        fields.push(mrkdwn(format!(
            "*Worst*\n`{}`",
            slack_escape(&dimensions_text(&t.worst))
        )));
    }
    if let Some(id) = &t.last_bad_trace_id {
        let id = slack_escape(id);
        fields.push(mrkdwn(match &t.last_bad_trace_url {
            Some(url) => format!("*Last bad trace*\n<{}|{id}>", slack_link(url)),
            None => format!("*Last bad trace*\n`{id}`"),
        }));
    }
    let links: Vec<String> = [
        sender
            .page_link(t)
            .map(|u| format!("<{}|Status page>", slack_link(&u))),
        t.runbook
            .as_deref()
            .map(|u| format!("<{}|Runbook>", slack_link(u))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut blocks = vec![
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } }),
        json!({ "type": "section", "fields": fields }),
    ];
    if !links.is_empty() {
        blocks.push(json!({ "type": "section", "text": mrkdwn(links.join(" · ")) }));
    }
    blocks.push(json!({ "type": "context", "elements": [ mrkdwn(context) ] }));
    json!({
        "text": text,
        "attachments": [{ "color": color, "blocks": blocks }],
    })
}

fn mrkdwn(text: String) -> Value {
    json!({ "type": "mrkdwn", "text": text })
}

/// A URL inside Slack's `<url|text>`: `&`, `<`, `>` escaped and `|` (which would end it)
/// percent-encoded.
fn slack_link(url: &str) -> String {
    slack_escape(url).replace('|', "%7C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_transition(status: AlertStatus) -> Transition {
        Transition {
            status,
            severity: Severity::Page,
            cuj: "post_message".into(),
            sli: "availability".into(),
            target: 0.999,
            window: "30d".into(),
            burn_rates: vec![
                ("5m".into(), 120.0),
                ("1h".into(), 16.5),
                ("30d".into(), f64::INFINITY),
            ],
            budget_remaining: 0.8,
            exhaustion_seconds: Some(7980.0),
            started_at_ms: 1_700_000_000_000,
            resolved_at_ms: (status == AlertStatus::Resolved).then_some(1_700_000_600_000),
            worst: Vec::new(),
            last_bad_trace_id: None,
            last_bad_trace_url: None,
            runbook: None,
            cuj_index: 0,
        }
    }

    fn sender(instance: &str) -> Sender {
        Sender {
            instance: instance.into(),
            page_url: None,
        }
    }

    /// A firing with what burns: the worst values, the trace (a link with slo.trace_link),
    /// the CUJ's section of the page and its runbook, in both formats.
    fn burning() -> (Transition, Sender) {
        let mut t = sample_transition(AlertStatus::Firing);
        t.worst = vec![
            ("user.tier".into(), "free".into()),
            ("region".into(), "eu<1>".into()),
        ];
        t.last_bad_trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        t.last_bad_trace_url =
            Some("https://t.example/trace/4bf92f3577b34da6a3ce929d0e0e4736?a=1&b=x|y".into());
        t.runbook = Some("https://wiki.example/runbooks/post_message".into());
        t.cuj_index = 2;
        let sender = Sender {
            instance: "cujo-0".into(),
            page_url: Some("https://cujo.example/".into()),
        };
        (t, sender)
    }

    #[test]
    fn a_firing_says_what_burns_and_where_to_look() {
        let (t, from) = burning();
        let body = generic_body(&t, &from);
        assert_eq!(
            body["worst"]["dimensions"],
            json!({ "user.tier": "free", "region": "eu<1>" })
        );
        assert_eq!(
            body["last_bad_trace"],
            json!({
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "url": "https://t.example/trace/4bf92f3577b34da6a3ce929d0e0e4736?a=1&b=x|y",
            })
        );
        assert_eq!(body["page_url"], "https://cujo.example/#cuj-2");
        assert_eq!(
            body["runbook_url"],
            "https://wiki.example/runbooks/post_message"
        );

        let slack = slack_body(&t, &from);
        let blocks = &slack["attachments"][0]["blocks"];
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(|f| f["text"].as_str())
            .collect();
        assert!(
            fields.contains(&"*Worst*\n`user.tier=free, region=eu&lt;1&gt;`"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"*Last bad trace*\n<https://t.example/trace/4bf92f3577b34da6a3ce929d0e0e4736?a=1&amp;b=x%7Cy|4bf92f3577b34da6a3ce929d0e0e4736>"),
            "{fields:?}"
        );
        assert_eq!(
            blocks[2]["text"]["text"],
            "<https://cujo.example/#cuj-2|Status page> · <https://wiki.example/runbooks/post_message|Runbook>"
        );
        assert_eq!(blocks[3]["type"], "context");

        // Without any of it, the keys are null and the Slack message has no links block.
        let plain = generic_body(&sample_transition(AlertStatus::Firing), &sender("cujo-0"));
        for key in ["worst", "last_bad_trace", "page_url", "runbook_url"] {
            assert_eq!(plain[key], Value::Null, "{key}");
        }
        let slack = slack_body(&sample_transition(AlertStatus::Firing), &sender("cujo-0"));
        assert_eq!(slack["attachments"][0]["blocks"][2]["type"], "context");
    }

    #[test]
    fn the_generic_body_carries_what_a_receiver_routes_and_dedupes_on() {
        let body = generic_body(&sample_transition(AlertStatus::Firing), &sender("cujo-0"));
        assert_eq!(body["status"], "firing");
        assert_eq!(body["severity"], "page");
        assert_eq!(body["cuj"], "post_message");
        assert_eq!(body["sli"], "availability");
        assert_eq!(body["objective"]["target"], 0.999);
        assert_eq!(body["objective"]["window"], "30d");
        assert_eq!(body["burn_rates"]["5m"], 120.0);
        assert_eq!(
            body["burn_rates"]["30d"],
            Value::Null,
            "JSON has no infinity"
        );
        assert_eq!(body["budget_remaining"], 0.8);
        assert_eq!(body["exhaustion_seconds"], 7980.0);
        assert_eq!(body["started_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(body["resolved_at"], Value::Null);
        assert_eq!(
            body["dedup_key"],
            "post_message/availability/30d/page/1700000000000"
        );
        assert_eq!(body["cujo_instance"], "cujo-0");
        let resolved = generic_body(&sample_transition(AlertStatus::Resolved), &sender("cujo-0"));
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["resolved_at"], "2023-11-14T22:23:20.000Z");
    }

    #[test]
    fn a_spent_budget_reads_exhausted_not_in_zero_seconds() {
        let mut t = sample_transition(AlertStatus::Firing);
        t.exhaustion_seconds = Some(0.0);
        t.budget_remaining = -0.4;
        let body = slack_body(&t, &sender("cujo-0"));
        let text = body["text"].as_str().unwrap_or_default();
        assert!(
            text.ends_with("-40% of the budget left, exhausted)"),
            "{text}"
        );
        assert!(!text.contains("0s"), "{text}");
    }

    #[test]
    fn the_slack_body_reads_as_a_sentence() {
        let body = slack_body(&sample_transition(AlertStatus::Firing), &sender("cujo-0"));
        let text = body["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(":rotating_light: [FIRING:page] CUJ *post_message* is burning its availability error budget: 16.5x over 1h, 120.0x over 5m (objective 99.9% over 30d; 80% of the budget left, exhausted in 2h 13m)"),
            "{text}"
        );
        assert_eq!(body["attachments"][0]["color"], "#d62728");
        let resolved = slack_body(&sample_transition(AlertStatus::Resolved), &sender("a<b>"));
        let text = resolved["text"].as_str().unwrap_or_default();
        assert!(text.contains("[RESOLVED:page]"), "{text}");
        let context = resolved["attachments"][0]["blocks"][2]["elements"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(context.starts_with("cujo a&lt;b&gt; · "), "{context}");
    }
}
