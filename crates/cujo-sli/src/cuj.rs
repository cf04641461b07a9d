//! A CUJ definition and the SLI event a released trace yields for it.

use std::time::Duration;

use crate::condition::{Condition, RootMatch, SpanFacts};
use crate::slo::Objective;

/// Which spans availability looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The root span only.
    Root,
    /// Every span of the trace (linked async work included when it was released with it).
    Trace,
}

/// What latency measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The root span's duration.
    Root,
    /// From the root's start to the end of the last span of the trace.
    EndToEnd,
}

impl Measure {
    /// The name used in reports.
    pub fn label(self) -> &'static str {
        match self {
            Measure::Root => "root",
            Measure::EndToEnd => "end_to_end",
        }
    }
}

/// Which SLI an objective is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sli {
    Availability,
    Latency,
}

impl Sli {
    pub fn label(self) -> &'static str {
        match self {
            Sli::Availability => "availability",
            Sli::Latency => "latency",
        }
    }
}

/// One Critical User Journey, resolved from the config.
#[derive(Debug, Clone)]
pub struct Cuj {
    pub name: String,
    pub matcher: RootMatch,
    /// Root attributes that split the series.
    pub dimensions: Vec<String>,
    /// Beyond this many series, new dimension values fold into one overflow series.
    pub max_series: usize,
    pub scope: Scope,
    /// Any of these makes the event bad.
    pub bad: Vec<Condition>,
    /// Any of these makes the event not valid (it counts for neither SLI).
    pub exclude: Vec<Condition>,
    /// The latency threshold (good when the measured latency is at most this) and measure.
    pub latency: Option<(Duration, Measure)>,
    pub objectives: Vec<(Sli, Objective)>,
}

/// What the SLI engine needs of a released trace.
pub struct TraceFacts<'a, S: SpanFacts> {
    pub trace_id: [u8; 16],
    pub root: &'a S,
    pub root_start_ns: u64,
    pub root_end_ns: u64,
    /// Every span released with the trace, the root included.
    pub spans: &'a [S],
    /// The latest end time of any span of the trace.
    pub last_end_ns: u64,
}

/// One valid event of a CUJ.
#[derive(Debug, Clone, PartialEq)]
pub struct SliEvent {
    /// Values of the CUJ's dimensions, in order (empty string when the root lacks one).
    pub dimensions: Vec<String>,
    pub available: bool,
    /// The measured latency and whether it met the threshold, when the CUJ has one.
    pub latency: Option<(Duration, bool)>,
    pub trace_id: [u8; 16],
}

/// What a CUJ makes of a trace.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The root does not match this CUJ.
    NotMatched,
    /// Matched, but an `exclude` condition holds.
    Excluded,
    Event(SliEvent),
}

impl Cuj {
    pub fn evaluate<S: SpanFacts>(&self, trace: &TraceFacts<'_, S>) -> Outcome {
        if !self.matcher.matches(trace.root) {
            return Outcome::NotMatched;
        }
        let any_span = |conds: &[Condition]| -> bool {
            match self.scope {
                Scope::Root => conds.iter().any(|c| c.holds(trace.root)),
                Scope::Trace => trace.spans.iter().any(|s| conds.iter().any(|c| c.holds(s))),
            }
        };
        if any_span(&self.exclude) {
            return Outcome::Excluded;
        }
        let available = !any_span(&self.bad);
        let latency = self.latency.map(|(threshold, measure)| {
            let end = match measure {
                Measure::Root => trace.root_end_ns,
                Measure::EndToEnd => trace.last_end_ns.max(trace.root_end_ns),
            };
            let measured = Duration::from_nanos(end.saturating_sub(trace.root_start_ns));
            // Good/bad is decided on the exact value, not on a histogram bucket.
            (measured, measured <= threshold)
        });
        let dimensions = self
            .dimensions
            .iter()
            .map(|d| {
                trace
                    .root
                    .attribute(d)
                    .map(|v| match v {
                        crate::condition::Scalar::Str(s) => s.to_string(),
                        crate::condition::Scalar::Int(i) => i.to_string(),
                        crate::condition::Scalar::Double(x) => x.to_string(),
                        crate::condition::Scalar::Bool(b) => b.to_string(),
                    })
                    .unwrap_or_default()
            })
            .collect();
        Outcome::Event(SliEvent {
            dimensions,
            available,
            latency,
            trace_id: trace.trace_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::{Literal, Scalar, StatusCode, ValueMatch};

    struct Span {
        name: &'static str,
        status: StatusCode,
        attrs: Vec<(&'static str, Scalar<'static>)>,
    }

    impl SpanFacts for Span {
        fn name(&self) -> &str {
            self.name
        }
        fn service(&self) -> &str {
            "frontend-api"
        }
        fn status(&self) -> StatusCode {
            self.status
        }
        fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
            self.attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
    }

    fn cuj(scope: Scope, measure: Measure) -> Cuj {
        Cuj {
            name: "post_message".into(),
            matcher: RootMatch {
                span_name: Some(ValueMatch::Equals(Literal::Str("POST /v1/messages".into()))),
                ..RootMatch::default()
            },
            dimensions: vec!["user.tier".into()],
            max_series: 1000,
            scope,
            bad: vec![
                Condition::Status(StatusCode::Error),
                Condition::Attribute {
                    key: "http.response.status_code".into(),
                    value: ValueMatch::Range {
                        gte: Some(500.0),
                        gt: None,
                        lte: None,
                        lt: None,
                    },
                },
            ],
            exclude: vec![Condition::Attribute {
                key: "http.response.status_code".into(),
                value: ValueMatch::Range {
                    gte: Some(400.0),
                    gt: None,
                    lte: None,
                    lt: Some(500.0),
                },
            }],
            latency: Some((Duration::from_millis(300), measure)),
            objectives: vec![],
        }
    }

    fn trace(spans: &[Span], root_ms: u64, last_ms: u64) -> TraceFacts<'_, Span> {
        TraceFacts {
            trace_id: [1; 16],
            root: &spans[0],
            root_start_ns: 0,
            root_end_ns: root_ms * 1_000_000,
            spans,
            last_end_ns: last_ms * 1_000_000,
        }
    }

    fn span(name: &'static str, code: i64, status: StatusCode) -> Span {
        Span {
            name,
            status,
            attrs: vec![
                ("http.response.status_code", Scalar::Int(code)),
                ("user.tier", Scalar::Str("gold")),
            ],
        }
    }

    #[test]
    fn good_bad_excluded_and_latency_on_the_exact_value() {
        let c = cuj(Scope::Root, Measure::Root);
        let ok = [span("POST /v1/messages", 201, StatusCode::Unset)];
        let Outcome::Event(e) = c.evaluate(&trace(&ok, 300, 900)) else {
            panic!("event expected")
        };
        assert!(e.available);
        assert_eq!(
            e.latency,
            Some((Duration::from_millis(300), true)),
            "300 ms <= 300 ms is good"
        );
        assert_eq!(e.dimensions, vec!["gold".to_string()]);
        let Outcome::Event(e) = c.evaluate(&trace(&ok, 301, 301)) else {
            panic!("event expected")
        };
        assert_eq!(e.latency, Some((Duration::from_millis(301), false)));
        let failed = [span("POST /v1/messages", 503, StatusCode::Unset)];
        let Outcome::Event(e) = c.evaluate(&trace(&failed, 50, 50)) else {
            panic!("event expected")
        };
        assert!(!e.available, "a 5xx is bad");
        assert_eq!(
            e.latency,
            Some((Duration::from_millis(50), true)),
            "and still counts for latency"
        );
        let user_error = [span("POST /v1/messages", 404, StatusCode::Unset)];
        assert_eq!(c.evaluate(&trace(&user_error, 50, 50)), Outcome::Excluded);
        let other = [span("GET /v1/messages", 200, StatusCode::Unset)];
        assert_eq!(c.evaluate(&trace(&other, 50, 50)), Outcome::NotMatched);
    }

    #[test]
    fn trace_scope_and_end_to_end_look_past_the_root() {
        let spans = [
            span("POST /v1/messages", 201, StatusCode::Unset),
            span("send push", 0, StatusCode::Error),
        ];
        let Outcome::Event(root_only) =
            cuj(Scope::Root, Measure::Root).evaluate(&trace(&spans, 100, 2000))
        else {
            panic!("event expected")
        };
        assert!(root_only.available);
        assert_eq!(root_only.latency, Some((Duration::from_millis(100), true)));
        let Outcome::Event(whole) =
            cuj(Scope::Trace, Measure::EndToEnd).evaluate(&trace(&spans, 100, 2000))
        else {
            panic!("event expected")
        };
        assert!(!whole.available, "the failed push makes the journey bad");
        assert_eq!(whole.latency, Some((Duration::from_millis(2000), false)));
    }
}
