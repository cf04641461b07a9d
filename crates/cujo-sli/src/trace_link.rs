//! `slo.trace_link`: a URL template that turns a trace id into a link to the trace in the
//! tracing backend (Honeycomb, Jaeger, Grafana Tempo, Datadog, …), so every surface that
//! shows a trace id (the status page, the JSON and gRPC APIs, webhooks, the dashboard) can
//! open it in one click.
//!
//! Placeholders: `{trace_id}` (32 lowercase hex digits; required), `{start}` and `{end}`
//! (unix seconds) and `{start_ms}` and `{end_ms}` (unix milliseconds): a range around the
//! event, from an hour before it was recorded to a minute after, for backends that look a
//! trace up within a time range. Literal braces must be written `%7B` and `%7D` (as a URL
//! holds them anyway). What is substituted is digits and hex only, so a rendered link needs
//! no escaping beyond what the template itself has.

use cujo_config::{KeyError, fail};

/// How far before the event's recording the `{start}` of its range is: a root span of up
/// to an hour began within it.
const RANGE_BEFORE_MS: u64 = 3_600_000;
/// How far after it the `{end}` is: late spans and clock skew.
const RANGE_AFTER_MS: u64 = 60_000;

/// A validated trace link template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLink {
    /// As written, for the generators that translate it (the dashboard's data links).
    template: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    TraceId,
    Start,
    End,
    StartMs,
    EndMs,
}

const PLACEHOLDERS: [(&str, Part); 5] = [
    ("trace_id", Part::TraceId),
    ("start", Part::Start),
    ("end", Part::End),
    ("start_ms", Part::StartMs),
    ("end_ms", Part::EndMs),
];

impl TraceLink {
    /// The template at `key`: an `http(s)://` URL with a host, `{trace_id}` in it, no
    /// other placeholder than those above and no unmatched brace.
    pub fn parse(key: &str, template: &str) -> Result<Self, KeyError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return unmatched(key);
            }
            let Some(len) = rest[open + 1..].find(['{', '}']) else {
                return unmatched(key);
            };
            let close = open + 1 + len;
            if rest.as_bytes()[close] == b'{' {
                return unmatched(key);
            }
            let name = &rest[open + 1..close];
            let Some((_, part)) = PLACEHOLDERS.iter().find(|(n, _)| *n == name) else {
                return fail(
                    key,
                    format!(
                        "unknown placeholder {{{name}}} (expected {{trace_id}}, {{start}}, {{end}}, {{start_ms}} or {{end_ms}})"
                    ),
                );
            };
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            parts.push(part.clone());
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if !parts.contains(&Part::TraceId) {
            return fail(
                key,
                "expected {trace_id} in the template, e.g. \"https://jaeger.example.com/trace/{trace_id}\"",
            );
        }
        let link = Self {
            template: template.to_string(),
            parts,
        };
        // The URL it makes, with the placeholders filled, must be one a browser can open.
        cujo_config::outbound::check_url(
            key,
            &link.render(&"0".repeat(32), 1_700_000_000_000),
            "https://ui.honeycomb.io/TEAM/environments/ENV/trace?trace_id={trace_id}",
        )?;
        Ok(link)
    }

    /// The template as written.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Whether the template asks for a time range.
    pub fn has_range(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Start | Part::End | Part::StartMs | Part::EndMs))
    }

    /// The link to the trace `trace_id` (hex) of an event recorded at `at_ms`.
    pub fn render(&self, trace_id: &str, at_ms: u64) -> String {
        let start = at_ms.saturating_sub(RANGE_BEFORE_MS);
        let end = at_ms.saturating_add(RANGE_AFTER_MS);
        let mut out = String::with_capacity(self.template.len() + 32);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::TraceId => out.push_str(trace_id),
                Part::Start => out.push_str(&(start / 1000).to_string()),
                Part::End => out.push_str(&end.div_ceil(1000).to_string()),
                Part::StartMs => out.push_str(&start.to_string()),
                Part::EndMs => out.push_str(&end.to_string()),
            }
        }
        out
    }
}

fn unmatched<T>(key: &str) -> Result<T, KeyError> {
    fail(
        key,
        "has an unmatched { or }: placeholders are {trace_id}, {start}, {end}, {start_ms} and {end_ms}; write a literal brace as %7B or %7D",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn the_documented_backends_render() {
        let at = 1_700_000_000_000;
        for (template, want) in [
            (
                "https://ui.honeycomb.io/acme/environments/prod/trace?trace_id={trace_id}&trace_start_ts={start}&trace_end_ts={end}",
                format!(
                    "https://ui.honeycomb.io/acme/environments/prod/trace?trace_id={ID}&trace_start_ts=1699996400&trace_end_ts=1700000060"
                ),
            ),
            (
                "http://jaeger.example.com:16686/trace/{trace_id}",
                format!("http://jaeger.example.com:16686/trace/{ID}"),
            ),
            (
                "https://app.datadoghq.com/apm/trace/{trace_id}",
                format!("https://app.datadoghq.com/apm/trace/{ID}"),
            ),
            (
                "https://grafana.example.com/explore?left=%7B%22datasource%22:%22tempo%22,%22queries%22:%5B%7B%22query%22:%22{trace_id}%22%7D%5D,%22range%22:%7B%22from%22:%22{start_ms}%22,%22to%22:%22{end_ms}%22%7D%7D",
                format!(
                    "https://grafana.example.com/explore?left=%7B%22datasource%22:%22tempo%22,%22queries%22:%5B%7B%22query%22:%22{ID}%22%7D%5D,%22range%22:%7B%22from%22:%221699996400000%22,%22to%22:%221700000060000%22%7D%7D"
                ),
            ),
        ] {
            let link = TraceLink::parse("slo.trace_link", template).expect(template);
            assert_eq!(link.render(ID, at), want);
            assert_eq!(link.template(), template);
        }
    }

    #[test]
    fn bad_templates_are_refused_naming_the_key_and_the_fault() {
        for (template, fault) in [
            (
                "https://jaeger/trace/",
                "expected {trace_id} in the template",
            ),
            (
                "https://jaeger/trace/{traceId}",
                "unknown placeholder {traceId}",
            ),
            ("https://jaeger/trace/{trace_id", "unmatched { or }"),
            ("https://jaeger/trace/trace_id}", "unmatched { or }"),
            ("https://jaeger/{{trace_id}}", "unmatched { or }"),
            ("jaeger/trace/{trace_id}", "has no scheme"),
            ("javascript:alert(1)//{trace_id}", "expected a URL like"),
            (
                "ftp://files/{trace_id}",
                "has a scheme other than http:// or https://",
            ),
            ("https:///trace/{trace_id}", "is not a URL"),
        ] {
            let e = TraceLink::parse("slo.trace_link", template).expect_err(template);
            assert_eq!(e.key, "slo.trace_link");
            assert!(e.detail.contains(fault), "{template}: {e}");
        }
    }

    #[test]
    fn a_range_near_the_epoch_does_not_underflow() {
        let link =
            TraceLink::parse("k", "https://t/{trace_id}?from={start}&to={end}").expect("valid");
        assert!(link.has_range());
        assert_eq!(
            link.render(ID, 1_000),
            format!("https://t/{ID}?from=0&to=61")
        );
    }
}
