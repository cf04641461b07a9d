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

/// cujo's own body: every number a receiver needs to route, dedupe and display the alert.
pub fn generic_body(t: &Transition, instance: &str) -> Value {
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
        "cujo_instance": instance,
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
pub fn slack_body(t: &Transition, instance: &str) -> Value {
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
    json!({
        "text": text,
        "attachments": [{
            "color": color,
            "blocks": [
                { "type": "section", "text": { "type": "mrkdwn", "text": text } },
                { "type": "section", "fields": [
                    { "type": "mrkdwn", "text": format!("*Objective*\n{} {objective}", t.sli) },
                    { "type": "mrkdwn", "text": format!("*Budget left*\n{budget}") },
                    { "type": "mrkdwn", "text": format!("*Burn rate*\n{burns}") },
                    { "type": "mrkdwn", "text": format!("*Budget exhausted in*\n{exhaustion}") },
                ] },
                { "type": "context", "elements": [ { "type": "mrkdwn", "text": context } ] },
            ],
        }],
    })
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
        }
    }

    #[test]
    fn the_generic_body_carries_what_a_receiver_routes_and_dedupes_on() {
        let body = generic_body(&sample_transition(AlertStatus::Firing), "cujo-0");
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
        let resolved = generic_body(&sample_transition(AlertStatus::Resolved), "cujo-0");
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["resolved_at"], "2023-11-14T22:23:20.000Z");
    }

    #[test]
    fn a_spent_budget_reads_exhausted_not_in_zero_seconds() {
        let mut t = sample_transition(AlertStatus::Firing);
        t.exhaustion_seconds = Some(0.0);
        t.budget_remaining = -0.4;
        let body = slack_body(&t, "cujo-0");
        let text = body["text"].as_str().unwrap_or_default();
        assert!(
            text.ends_with("-40% of the budget left, exhausted)"),
            "{text}"
        );
        assert!(!text.contains("0s"), "{text}");
    }

    #[test]
    fn the_slack_body_reads_as_a_sentence() {
        let body = slack_body(&sample_transition(AlertStatus::Firing), "cujo-0");
        let text = body["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(":rotating_light: [FIRING:page] CUJ *post_message* is burning its availability error budget: 16.5x over 1h, 120.0x over 5m (objective 99.9% over 30d; 80% of the budget left, exhausted in 2h 13m)"),
            "{text}"
        );
        assert_eq!(body["attachments"][0]["color"], "#d62728");
        let resolved = slack_body(&sample_transition(AlertStatus::Resolved), "a<b>");
        let text = resolved["text"].as_str().unwrap_or_default();
        assert!(text.contains("[RESOLVED:page]"), "{text}");
        let context = resolved["attachments"][0]["blocks"][2]["elements"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert!(context.starts_with("cujo a&lt;b&gt; · "), "{context}");
    }
}
