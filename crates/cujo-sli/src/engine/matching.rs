//! Dispatch and matching: which CUJs a released trace feeds, and the events it begins.
//!
//! [`SliMatcher`] holds only the CUJs' definitions, never the engine's state, so it is
//! shared (`Arc`) with the span path: each assembler shard matches its released traces
//! itself and hands the engine plain data ([`MatchedTrace`], [`SpanMarks`]) to record.
//! The engine ([`super::SliEngine::record`]) finds series, waits to settle and counts;
//! nothing here takes a lock or touches a series.

use std::sync::Arc;

use crate::condition::{ConditionSet, Literal, Scalar, SpanFacts, ValueMatch};
use crate::cuj::{Cuj, Measure, PendingEvent, Scope, SpanMark, TraceFacts};

use super::FastMap;
use super::replay::ReplayTag;

/// What one CUJ began from a released trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// The CUJ's index in the engine.
    pub cuj: usize,
    pub event: PendingEvent,
    /// How many dimension values were cut to `max_dimension_value_bytes`.
    pub cut: u32,
}

/// The events a released trace began, one per CUJ its root matched.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchedTrace {
    pub trace_id: [u8; 16],
    pub events: Vec<Matched>,
    /// Set when replays of the write-ahead log are guarded ([`super::replay`]).
    pub replay: Option<ReplayTag>,
}

impl MatchedTrace {
    /// Heap bytes held beside the value itself (events and their dimension values), for
    /// counting what waits between the span path and the engine.
    pub fn heap_bytes(&self) -> usize {
        cujo_wire::alloc::vec_bytes::<Matched>(self.events.capacity())
            + self
                .events
                .iter()
                .map(|m| m.event.heap_bytes())
                .sum::<usize>()
            + self.replay.as_ref().map_or(0, |r| {
                // The tag's pins: one allocation per trace, shared by its events.
                16 + r.pins.len() * std::mem::size_of::<cujo_wire::Pin>()
            })
    }
}

/// What late spans or a linked continuation decide for each settling CUJ, by CUJ index
/// (only CUJs whose events wait to settle; see [`SliMatcher::mark_spans`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanMarks {
    pub marks: Vec<(usize, SpanMark)>,
    /// How many spans were read into the marks.
    pub spans: u64,
}

impl SpanMarks {
    /// The mark for CUJ `cuj`, if it settles.
    pub fn of(&self, cuj: usize) -> Option<&SpanMark> {
        self.marks.iter().find(|(i, _)| *i == cuj).map(|(_, m)| m)
    }
}

/// The CUJs' definitions, as the span path needs them to begin events: root matching with
/// `Dispatch` (one attribute read to narrow the candidates), dimension values capped,
/// arrival bits folded in.
#[derive(Debug)]
pub struct SliMatcher {
    cujs: Vec<Cuj>,
    /// Per CUJ, its `bad` and `exclude` conditions as bits of `span_conditions`
    /// (`scope: trace` CUJs only).
    trace_masks: Vec<(u64, u64)>,
    span_conditions: Option<ConditionSet>,
    dispatch: Dispatch,
    /// The CUJs whose events wait to settle (empty when the settle time is zero).
    settling: Vec<usize>,
    max_value_bytes: usize,
    /// Per CUJ, the stable key of its name ([`super::replay::name_key`]).
    name_keys: Vec<u64>,
}

impl SliMatcher {
    /// Matching for `cujs` (in engine order); `settles` says whether events of settling
    /// CUJs wait at all (a non-zero settle time).
    pub(super) fn new(cujs: Vec<Cuj>, settles: bool, max_value_bytes: usize) -> Self {
        let dispatch = Dispatch::new(&cujs);
        let mut set = ConditionSet::default();
        let mut fits = true;
        let trace_masks: Vec<(u64, u64)> = cujs
            .iter()
            .map(|cuj| {
                if cuj.scope != Scope::Trace {
                    return (0, 0);
                }
                match (set.mask_of(&cuj.bad), set.mask_of(&cuj.exclude)) {
                    (Some(bad), Some(exclude)) => (bad, exclude),
                    _ => {
                        fits = false;
                        (0, 0)
                    }
                }
            })
            .collect();
        let span_conditions = (fits && !set.is_empty()).then_some(set);
        let settling = if settles {
            (0..cujs.len()).filter(|&i| cujs[i].settles()).collect()
        } else {
            Vec::new()
        };
        Self {
            name_keys: cujs
                .iter()
                .map(|c| super::replay::name_key(&c.name))
                .collect(),
            cujs,
            trace_masks,
            span_conditions,
            dispatch,
            settling,
            max_value_bytes,
        }
    }

    /// The same matching with another cap on dimension values or settle switch.
    pub(super) fn rebuilt(&self, settles: bool, max_value_bytes: usize) -> Arc<Self> {
        Arc::new(Self::new(self.cujs.clone(), settles, max_value_bytes))
    }

    pub fn cujs(&self) -> &[Cuj] {
        &self.cujs
    }

    /// Whether CUJ `i`'s events wait to settle.
    pub fn settles_cuj(&self, i: usize) -> bool {
        self.settling.contains(&i)
    }

    /// Whether some CUJ's events wait for late spans and linked continuations; when none
    /// does, callers need not report them.
    pub fn settles(&self) -> bool {
        !self.settling.is_empty()
    }

    /// Whether some CUJ looks at spans other than the root (`scope: trace`); when none does,
    /// callers may pass only the root in [`TraceFacts::spans`].
    pub fn needs_all_spans(&self) -> bool {
        self.cujs.iter().any(Cuj::needs_spans)
    }

    /// The conditions `scope: trace` CUJs evaluate on every span, when callers may classify
    /// spans as they arrive and pass the OR of their bits as [`TraceFacts::span_bits`]
    /// instead of every span. `None` when no CUJ has `scope: trace`, or their distinct
    /// conditions exceed [`ConditionSet::MAX`] (then pass every span).
    pub fn span_conditions(&self) -> Option<&ConditionSet> {
        self.span_conditions.as_ref()
    }

    /// Whether spans other than the root must be passed even with
    /// [`TraceFacts::span_bits`]: some CUJ measures `{from, to}`, or trace-scope conditions
    /// could not be classified.
    pub fn needs_spans_besides_bits(&self) -> bool {
        self.cujs.iter().any(|c| {
            matches!(c.latency, Some((_, Measure::Between { .. })))
                || (c.scope == Scope::Trace && self.span_conditions.is_none())
        })
    }

    /// Every attribute key some CUJ reads from spans, once each (see [`Cuj::attribute_keys`]).
    pub fn attribute_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for c in &self.cujs {
            for k in c.attribute_keys() {
                if !keys.iter().any(|have| have == k) {
                    keys.push(k.to_string());
                }
            }
        }
        keys
    }

    /// The events `trace` begins: one per CUJ its root matches (a trace may feed several).
    pub fn match_trace<S: SpanFacts>(&self, trace: &TraceFacts<'_, S>) -> MatchedTrace {
        let mut events = Vec::new();
        for &i in self.dispatch.candidates(trace.root) {
            let Some(cuj) = self.cujs.get(i) else {
                continue;
            };
            let Some((mut event, cut)) = cuj.begin_capped(trace, self.max_value_bytes) else {
                continue;
            };
            if let Some(bits) = trace.span_bits
                && cuj.scope == Scope::Trace
            {
                let (bad, exclude) = self.trace_masks[i];
                event.fold_decided(bits & bad != 0, bits & exclude != 0);
            }
            // Most traces feed one CUJ: an allocation of one event, not four.
            if events.capacity() == 0 {
                events.reserve_exact(1);
            }
            events.push(Matched { cuj: i, event, cut });
        }
        MatchedTrace {
            trace_id: trace.trace_id,
            events,
            replay: None,
        }
    }

    /// The stable key of the event of CUJ `cuj` in the trace of key `trace`
    /// ([`super::replay::event_key`]).
    pub fn event_key(&self, trace: u64, cuj: usize) -> u64 {
        super::replay::event_key(trace, self.name_keys.get(cuj).copied().unwrap_or(0))
    }

    /// What `spans` (late spans of a released trace, or a linked continuation) decide for
    /// each settling CUJ's event, merged over the spans.
    pub fn mark_spans<S: SpanFacts>(&self, spans: &[S]) -> SpanMarks {
        let marks = self
            .settling
            .iter()
            .map(|&i| {
                let cuj = &self.cujs[i];
                let mut m = SpanMark::default();
                for s in spans {
                    m.merge(&cuj.mark(s));
                }
                (i, m)
            })
            .collect();
        SpanMarks {
            marks,
            spans: spans.len() as u64,
        }
    }
}

/// The CUJs worth matching against a root, found by one attribute's value.
///
/// CUJs are usually told apart by one attribute with a string value (`cuj.name: checkout`).
/// The key most CUJs require to equal a string is read from the root once, and only the CUJs
/// requiring that value, plus those that do not constrain the key that way, are matched:
/// with ten CUJs over five journeys, two matchers run per trace instead of ten. Every CUJ
/// listed is still matched in full, so the result is the same as matching all of them.
#[derive(Debug, Default)]
pub(super) struct Dispatch {
    /// The attribute; `None` when fewer than two CUJs require a string value of one key.
    key: Option<String>,
    /// For each string value: the CUJs requiring it, merged with `others`, in CUJ order.
    by_value: FastMap<String, Vec<usize>>,
    /// The CUJs that do not require the key to equal a string (in CUJ order).
    others: Vec<usize>,
    /// Every CUJ, for roots whose value of the key is not a string (a literal `"500"`
    /// matches the integer 500).
    all: Vec<usize>,
}

impl Dispatch {
    pub(super) fn new(cujs: &[Cuj]) -> Self {
        let required = |cuj: &Cuj, key: &str| {
            cuj.matcher.attributes.iter().find_map(|(k, m)| match m {
                ValueMatch::Equals(Literal::Str(v)) if k == key => Some(v.clone()),
                _ => None,
            })
        };
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for cuj in cujs {
            for (k, m) in &cuj.matcher.attributes {
                if matches!(m, ValueMatch::Equals(Literal::Str(_))) {
                    match counts.iter_mut().find(|(key, _)| key == k) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((k, 1)),
                    }
                }
            }
        }
        let all: Vec<usize> = (0..cujs.len()).collect();
        // The key most CUJs require (the first such, on a tie).
        let best = counts
            .iter()
            .fold(None::<(&str, usize)>, |best, &(k, n)| match best {
                Some((_, b)) if b >= n => best,
                _ => Some((k, n)),
            });
        let Some((key, _)) = best.filter(|(_, n)| *n >= 2) else {
            return Dispatch {
                all,
                ..Dispatch::default()
            };
        };
        let values: Vec<Option<String>> = cujs.iter().map(|c| required(c, key)).collect();
        let others: Vec<usize> = all
            .iter()
            .copied()
            .filter(|i| values[*i].is_none())
            .collect();
        let mut by_value: FastMap<String, Vec<usize>> = FastMap::default();
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                by_value.entry(v.clone()).or_default().push(i);
            }
        }
        for list in by_value.values_mut() {
            list.extend(&others);
            list.sort_unstable();
        }
        Dispatch {
            key: Some(key.to_string()),
            by_value,
            others,
            all,
        }
    }

    /// The CUJs `root` may match, in CUJ order.
    pub(super) fn candidates<S: SpanFacts>(&self, root: &S) -> &[usize] {
        let Some(key) = &self.key else {
            return &self.all;
        };
        match root.attribute(key) {
            Some(Scalar::Str(v)) => self.by_value.get(v).unwrap_or(&self.others),
            // Absent: no CUJ requiring a value of it can match.
            None => &self.others,
            Some(_) => &self.all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::SliEngine;
    use super::super::testkit::value;
    use super::*;
    use crate::condition::{Condition, RootMatch, StatusCode};

    #[test]
    fn dispatch_lists_every_cuj_a_root_matches() {
        /// A root with one `cuj.name` value (or none).
        struct Root(Option<Scalar<'static>>);
        impl SpanFacts for Root {
            fn name(&self) -> &str {
                "GET /"
            }
            fn service(&self) -> &str {
                "frontend"
            }
            fn status(&self) -> StatusCode {
                StatusCode::Unset
            }
            fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
                (key == "cuj.name").then_some(self.0).flatten()
            }
        }
        let s = |v: &str| Literal::Str(v.into());
        let on_name = |m: ValueMatch| RootMatch {
            attributes: vec![("cuj.name".into(), m)],
            ..RootMatch::default()
        };
        let matchers = [
            on_name(ValueMatch::Equals(s("checkout"))),
            on_name(ValueMatch::Equals(s("search"))),
            on_name(ValueMatch::Equals(s("checkout"))),
            on_name(ValueMatch::AnyOf(vec![s("search"), s("cart")])),
            on_name(ValueMatch::regex("check.*").expect("regex")),
            on_name(ValueMatch::Exists(false)),
            on_name(ValueMatch::Equals(s("500"))),
            RootMatch::default(),
            RootMatch {
                span_name: Some(ValueMatch::Equals(s("GET /"))),
                ..RootMatch::default()
            },
        ];
        let cujs: Vec<Cuj> = matchers
            .into_iter()
            .enumerate()
            .map(|(i, matcher)| Cuj {
                name: format!("cuj-{i}"),
                matcher,
                dimensions: Vec::new(),
                max_series: 10,
                scope: Scope::Root,
                bad: Vec::new(),
                exclude: Vec::new(),
                latency: None,
                objectives: Vec::new(),
                alert_gate: crate::slo::AlertGate::OFF,
                runbook: None,
            })
            .collect();
        let d = Dispatch::new(&cujs);
        assert_eq!(d.key.as_deref(), Some("cuj.name"));
        let roots = [
            Root(Some(Scalar::Str("checkout"))),
            Root(Some(Scalar::Str("search"))),
            Root(Some(Scalar::Str("cart"))),
            Root(Some(Scalar::Str("other"))),
            Root(Some(Scalar::Str("500"))),
            Root(Some(Scalar::Int(500))),
            Root(Some(Scalar::Bool(true))),
            Root(None),
        ];
        for root in &roots {
            let listed = d.candidates(root);
            assert!(listed.windows(2).all(|w| w[0] < w[1]), "in CUJ order");
            let matching: Vec<usize> = (0..cujs.len())
                .filter(|i| cujs[*i].matcher.matches(root))
                .collect();
            for i in &matching {
                assert!(
                    listed.contains(i),
                    "{:?}: CUJ {i} matches but is not listed",
                    root.0
                );
            }
        }
        // Two of the nine CUJs are skipped for a checkout root, more for a search root.
        assert_eq!(d.candidates(&roots[0]).len(), 7);
        assert_eq!(d.candidates(&roots[1]).len(), 6);
        // Fewer than two CUJs require a string of one key: every CUJ is matched.
        let d = Dispatch::new(&cujs[3..]);
        assert_eq!(d.key, None);
        assert_eq!(d.candidates(&roots[0]), &[0, 1, 2, 3, 4, 5]);
    }

    /// A span with an HTTP status code, for trace-scope conditions.
    struct Coded {
        error: bool,
        code: Option<i64>,
    }

    impl SpanFacts for Coded {
        fn name(&self) -> &str {
            "POST /v1/messages"
        }
        fn service(&self) -> &str {
            "api"
        }
        fn status(&self) -> StatusCode {
            if self.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            }
        }
        fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
            match key {
                "http.response.status_code" => self.code.map(Scalar::Int),
                "user.tier" => Some(Scalar::Str("gold")),
                _ => None,
            }
        }
    }

    fn range(gte: f64, lt: Option<f64>) -> ValueMatch {
        ValueMatch::Range {
            gte: Some(gte),
            gt: None,
            lte: None,
            lt,
        }
    }

    /// Two trace-scope CUJs sharing a condition, and a root-scope one.
    fn trace_scope_engine() -> SliEngine {
        let code = |value| Condition::Attribute {
            key: "http.response.status_code".into(),
            value,
        };
        let cuj = |name: &str, scope, bad: Vec<Condition>, exclude: Vec<Condition>| Cuj {
            name: name.into(),
            matcher: RootMatch::default(),
            dimensions: vec!["user.tier".into()],
            max_series: 10,
            scope,
            bad,
            exclude,
            latency: None,
            objectives: vec![],
            alert_gate: crate::slo::AlertGate::OFF,
            runbook: None,
        };
        SliEngine::new(vec![
            cuj(
                "errors",
                Scope::Trace,
                vec![Condition::Status(StatusCode::Error)],
                vec![],
            ),
            cuj(
                "http",
                Scope::Trace,
                vec![
                    Condition::Status(StatusCode::Error),
                    code(range(500.0, None)),
                ],
                vec![code(range(400.0, Some(500.0)))],
            ),
            cuj(
                "root_only",
                Scope::Root,
                vec![code(range(500.0, None))],
                vec![],
            ),
        ])
    }

    fn coded_trace<'a>(
        trace_id: [u8; 16],
        spans: &'a [Coded],
        span_bits: Option<u64>,
    ) -> TraceFacts<'a, Coded> {
        TraceFacts {
            trace_id,
            root: &spans[0],
            root_start_ns: 0,
            root_end_ns: 1_000_000,
            spans,
            last_end_ns: 1_000_000,
            span_bits,
        }
    }

    #[test]
    fn condition_bits_of_arriving_spans_decide_as_reading_every_span_would() {
        let mut by_spans = trace_scope_engine();
        let mut by_bits = trace_scope_engine();
        let set = by_bits
            .span_conditions()
            .cloned()
            .expect("trace-scope conditions");
        assert_eq!(
            set.attribute_keys(),
            vec!["http.response.status_code".to_string()]
        );
        assert!(!by_bits.needs_spans_besides_bits());
        // Every mix of three spans drawn from these shapes, the first being the root.
        let shapes = [
            (false, None),
            (true, None),
            (false, Some(200)),
            (false, Some(503)),
            (false, Some(404)),
            (true, Some(429)),
        ];
        let mut traces = 0u64;
        for a in shapes {
            for b in shapes {
                for c in shapes {
                    let spans: Vec<Coded> = [a, b, c]
                        .into_iter()
                        .map(|(error, code)| Coded { error, code })
                        .collect();
                    let id: [u8; 16] = [traces.to_le_bytes(), [0; 8]]
                        .concat()
                        .try_into()
                        .expect("16 bytes");
                    by_spans.observe(&coded_trace(id, &spans, None), 1_000);
                    let bits = spans.iter().fold(0, |b, s| b | set.classify(s));
                    by_bits.observe(&coded_trace(id, &spans[..1], Some(bits)), 1_000);
                    traces += 1;
                }
            }
        }
        let (a, b) = (by_spans.families(1_000), by_bits.families(1_000));
        for cuj in ["errors", "http", "root_only"] {
            for outcome in ["good", "bad"] {
                let labels = [("cuj", cuj), ("sli", "availability"), ("outcome", outcome)];
                let want = value(&a, "cujo_sli_events_total", "", &labels);
                assert_eq!(
                    want,
                    value(&b, "cujo_sli_events_total", "", &labels),
                    "{cuj} {outcome}"
                );
            }
            let labels = [("cuj", cuj)];
            assert_eq!(
                value(&a, "cujo_sli_excluded_total", "", &labels),
                value(&b, "cujo_sli_excluded_total", "", &labels),
                "{cuj} excluded"
            );
        }
        // The spans did decide: some traces are bad only through a non-root span.
        let errors_bad = value(
            &a,
            "cujo_sli_events_total",
            "",
            &[
                ("cuj", "errors"),
                ("sli", "availability"),
                ("outcome", "bad"),
            ],
        );
        // Four of the six shapes have no error status: 4^3 traces are error-free.
        assert_eq!(errors_bad, Some((traces - 4 * 4 * 4) as f64));
    }
}
