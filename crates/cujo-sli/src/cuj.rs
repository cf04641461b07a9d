//! A CUJ definition and the SLI event a released trace yields for it.

use std::time::Duration;

use crate::condition::{Condition, RootMatch, SpanFacts};
use crate::slo::{AlertGate, Objective};

/// Which spans availability looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The root span only.
    Root,
    /// Every span of the trace (linked async work included when it was released with it).
    Trace,
}

/// What latency measures.
#[derive(Debug, Clone)]
pub enum Measure {
    /// The root span's duration.
    Root,
    /// From the root's start to the end of the last span of the trace, late spans and
    /// linked continuations included (they are folded in while the event settles).
    EndToEnd,
    /// From the earliest span matching `from` to the latest span matching `to`, in the trace
    /// and its continuations.
    Between {
        from: Box<SpanSelector>,
        to: Box<SpanSelector>,
    },
}

impl Measure {
    /// The name used in reports.
    pub fn label(&self) -> &'static str {
        match self {
            Measure::Root => "root",
            Measure::EndToEnd => "end_to_end",
            Measure::Between { .. } => "span_to_span",
        }
    }
}

/// Which edge of a selected span a `{from, to}` measure takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanEdge {
    Start,
    End,
}

/// Selects spans by name, `service.name` and attributes (every part given must hold), and
/// says which edge of them counts.
#[derive(Debug, Clone)]
pub struct SpanSelector {
    pub matcher: RootMatch,
    pub at: SpanEdge,
}

impl SpanSelector {
    fn time(&self, (start, end): (u64, u64)) -> u64 {
        match self.at {
            SpanEdge::Start => start,
            SpanEdge::End => end,
        }
    }
}

/// Why a latency could not be measured for a valid event (it still counts for availability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmeasured {
    /// No span matched the measure's `from`.
    FromMissing,
    /// No span matched the measure's `to`.
    ToMissing,
    /// The latest `to` is before the earliest `from`.
    ToBeforeFrom,
}

impl Unmeasured {
    pub const ALL: [Unmeasured; 3] = [
        Unmeasured::FromMissing,
        Unmeasured::ToMissing,
        Unmeasured::ToBeforeFrom,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Unmeasured::FromMissing => "from_missing",
            Unmeasured::ToMissing => "to_missing",
            Unmeasured::ToBeforeFrom => "to_before_from",
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
    /// What a burn-rate alert's long window must hold before the alert may fire.
    pub alert_gate: AlertGate,
    /// Where on-call reads what to do when the CUJ burns (`cujs[].runbook`): carried by its
    /// reports, alert rules and notifications.
    pub runbook: Option<String>,
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
    /// When the spans were classified as they arrived
    /// ([`crate::condition::ConditionSet::classify`], OR-ed over the trace): the engine takes
    /// `scope: trace` availability from these bits, and `spans` need only hold what other
    /// CUJs read (`{from, to}` selectors), possibly nothing.
    pub span_bits: Option<u64>,
}

/// The values of a CUJ's dimensions for one event, in order (an empty string when the root
/// lacks one), encoded in a single allocation: each value's length (`u32`, little-endian)
/// then its UTF-8 bytes. The encoding is also the series key, so an event finds its series
/// with one hash of these bytes and no allocation.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DimensionValues(Box<[u8]>);

impl DimensionValues {
    /// Encodes `values` in order.
    pub fn new<S: AsRef<str>>(values: &[S]) -> Self {
        Self::new_capped(values, usize::MAX).0
    }

    /// Encodes `values` in order, each cut to at most `max_value_bytes` (see
    /// [`truncate_value`]); also says how many were cut.
    pub fn new_capped<S: AsRef<str>>(values: &[S], max_value_bytes: usize) -> (Self, u32) {
        let mut out = Vec::new();
        let mut cut = 0;
        for v in values {
            cut += u32::from(Self::push(&mut out, v.as_ref(), max_value_bytes));
        }
        (Self(out.into_boxed_slice()), cut)
    }

    /// Appends `value`, cut to `max` bytes; whether it was cut.
    fn push(out: &mut Vec<u8>, value: &str, max: usize) -> bool {
        let kept = truncate_value(value, max.min(u32::MAX as usize));
        out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
        out.extend_from_slice(kept.as_bytes());
        kept.len() < value.len()
    }

    /// The values of `dimensions` on `root`, rendered as text, each cut to at most
    /// `max_value_bytes`; also how many were cut.
    fn of_root<S: SpanFacts>(
        dimensions: &[String],
        root: &S,
        max_value_bytes: usize,
    ) -> (Self, u32) {
        use crate::condition::Scalar;
        use std::fmt::Write;
        let mut out = Vec::with_capacity(dimensions.len() * 24);
        let mut text = String::new();
        let mut cut = 0;
        for d in dimensions {
            let value = match root.attribute(d) {
                Some(Scalar::Str(s)) => s,
                Some(other) => {
                    text.clear();
                    let _ = match other {
                        Scalar::Int(i) => write!(text, "{i}"),
                        Scalar::Double(x) => write!(text, "{x}"),
                        Scalar::Bool(b) => write!(text, "{b}"),
                        Scalar::Str(_) => Ok(()),
                    };
                    text.as_str()
                }
                None => "",
            };
            cut += u32::from(Self::push(&mut out, value, max_value_bytes));
        }
        (Self(out.into_boxed_slice()), cut)
    }

    /// The encoded form: the series key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The values, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = (u32::from_le_bytes(*len) as usize).min(tail.len());
            let (value, tail) = tail.split_at(len);
            rest = tail;
            // Written from `&str` only, so always UTF-8.
            Some(std::str::from_utf8(value).unwrap_or(""))
        })
    }

    /// The values, owned.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }

    /// Bytes held on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

/// `value` cut to at most `max` bytes, on a character boundary (never inside a UTF-8
/// sequence): values differing only past the cut make the same series key.
pub fn truncate_value(value: &str, max: usize) -> &str {
    if value.len() <= max {
        return value;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

impl std::fmt::Debug for DimensionValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One valid event of a CUJ.
#[derive(Debug, Clone, PartialEq)]
pub struct SliEvent {
    /// Values of the CUJ's dimensions, in order (empty string when the root lacks one).
    pub dimensions: DimensionValues,
    pub available: bool,
    /// The measured latency and whether it met the threshold, when the CUJ has one and it
    /// could be measured.
    pub latency: Option<(Duration, bool)>,
    /// Why the CUJ's latency could not be measured for this event.
    pub unmeasured: Option<Unmeasured>,
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

/// A CUJ's event while its trace may still grow: what the spans seen so far decided.
/// Spans are folded in one at a time ([`Cuj::fold`]), so late spans and linked
/// continuations can join after the trace was released; [`Cuj::finish`] makes the event.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub trace_id: [u8; 16],
    /// Empty once the engine found the series of these values (see
    /// [`PendingEvent::set_series`]).
    dimensions: DimensionValues,
    /// The engine's series for the dimension values, when it already existed at the
    /// release: a settling event then neither holds the values nor looks them up again.
    series: Option<u32>,
    excluded: bool,
    bad: bool,
    root_start_ns: u64,
    root_end_ns: u64,
    last_end_ns: u64,
    /// Earliest time of a span matching the `{from, to}` measure's `from`.
    from_ns: Option<u64>,
    /// Latest time of a span matching its `to`.
    to_ns: Option<u64>,
}

/// What one span (or several, [`SpanMark::merge`]d) decides for an event of one CUJ:
/// conditions that held, the latest end, the `{from, to}` edges it matched. Applying marks
/// in any order and grouping gives the event that folding the spans one by one gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanMark {
    pub excluded: bool,
    pub bad: bool,
    /// The latest end time (0 when no span said).
    pub last_end_ns: u64,
    /// The earliest time of a span matching the measure's `from`.
    pub from_ns: Option<u64>,
    /// The latest time of a span matching its `to`.
    pub to_ns: Option<u64>,
}

impl SpanMark {
    /// The mark of `self`'s spans and `other`'s together.
    pub fn merge(&mut self, other: &SpanMark) {
        self.excluded |= other.excluded;
        self.bad |= other.bad;
        self.last_end_ns = self.last_end_ns.max(other.last_end_ns);
        self.from_ns = min_some(self.from_ns, other.from_ns);
        self.to_ns = self.to_ns.max(other.to_ns);
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl PendingEvent {
    /// Folds in the spans `mark` summarises.
    pub fn apply(&mut self, mark: &SpanMark) {
        self.excluded |= mark.excluded;
        self.bad |= mark.bad;
        self.last_end_ns = self.last_end_ns.max(mark.last_end_ns);
        self.from_ns = min_some(self.from_ns, mark.from_ns);
        self.to_ns = self.to_ns.max(mark.to_ns);
    }

    /// An event of `trace_id` with nothing decided yet, for tests of what holds events.
    #[cfg(test)]
    pub(crate) fn empty(trace_id: [u8; 16]) -> Self {
        PendingEvent {
            trace_id,
            dimensions: DimensionValues::new::<&str>(&[]),
            series: None,
            excluded: false,
            bad: false,
            root_start_ns: 0,
            root_end_ns: 0,
            last_end_ns: 0,
            from_ns: None,
            to_ns: None,
        }
    }

    /// Folds in what this CUJ's trace-scope conditions decided over spans that were not
    /// folded one by one (classified as they arrived, see [`TraceFacts::span_bits`]).
    pub fn fold_decided(&mut self, bad: bool, excluded: bool) {
        self.bad |= bad;
        self.excluded |= excluded;
    }

    /// The values of the CUJ's dimensions (empty once the series was set).
    pub fn dimensions(&self) -> &DimensionValues {
        &self.dimensions
    }

    /// Notes that the engine's series `index` holds this event's dimension values, and drops
    /// the values.
    pub(crate) fn set_series(&mut self, index: u32) {
        self.series = Some(index);
        self.dimensions = DimensionValues::new::<&str>(&[]);
    }

    pub(crate) fn series(&self) -> Option<u32> {
        self.series
    }

    /// Heap bytes this pending event holds beside itself (its dimension values, until its
    /// series is found), for bounding the events waiting to settle.
    pub fn heap_bytes(&self) -> usize {
        cujo_wire::alloc::allocation_size(self.dimensions.heap_bytes())
    }
}

impl Cuj {
    /// Whether this CUJ configures `sli`, so it is reported and exported (an SLI it does not
    /// configure is neither, even though every valid event is counted for both):
    /// - latency: the CUJ has a `latency:` threshold;
    /// - availability: it has an availability objective or `bad` conditions, or no latency
    ///   (a CUJ that configures nothing else measures availability).
    pub fn has_sli(&self, sli: Sli) -> bool {
        match sli {
            Sli::Latency => self.latency.is_some(),
            Sli::Availability => {
                self.latency.is_none()
                    || !self.bad.is_empty()
                    || self.objectives.iter().any(|(s, _)| *s == Sli::Availability)
            }
        }
    }

    /// Every attribute key this CUJ reads from spans: its match, dimensions, conditions and
    /// span selectors. Callers may read just these from each span, once.
    pub fn attribute_keys(&self) -> Vec<&str> {
        let mut matchers = vec![&self.matcher];
        if let Some((_, Measure::Between { from, to })) = &self.latency {
            matchers.push(&from.matcher);
            matchers.push(&to.matcher);
        }
        let mut keys: Vec<&str> = matchers
            .iter()
            .flat_map(|m| m.attributes.iter().map(|(k, _)| k.as_str()))
            .collect();
        keys.extend(self.dimensions.iter().map(String::as_str));
        for c in self.bad.iter().chain(&self.exclude) {
            if let Condition::Attribute { key, .. } = c {
                keys.push(key);
            }
        }
        keys
    }

    /// Whether late spans and linked continuations can change this CUJ's events (its
    /// latency is `end_to_end` or `{from, to}`), so they wait to settle.
    pub fn settles(&self) -> bool {
        matches!(
            self.latency,
            Some((_, Measure::EndToEnd | Measure::Between { .. }))
        )
    }

    /// Whether this CUJ looks at spans other than the root.
    pub fn needs_spans(&self) -> bool {
        self.scope == Scope::Trace || matches!(self.latency, Some((_, Measure::Between { .. })))
    }

    pub fn evaluate<S: SpanFacts>(&self, trace: &TraceFacts<'_, S>) -> Outcome {
        match self.begin(trace) {
            None => Outcome::NotMatched,
            Some(e) => self.finish(e),
        }
    }

    /// Starts this CUJ's event from a released trace (its root and every span given);
    /// `None` when the root does not match.
    pub fn begin<S: SpanFacts>(&self, trace: &TraceFacts<'_, S>) -> Option<PendingEvent> {
        self.begin_capped(trace, usize::MAX).map(|(e, _)| e)
    }

    /// [`Cuj::begin`] with each dimension value cut to at most `max_value_bytes`; also says
    /// how many values were cut.
    pub fn begin_capped<S: SpanFacts>(
        &self,
        trace: &TraceFacts<'_, S>,
        max_value_bytes: usize,
    ) -> Option<(PendingEvent, u32)> {
        if !self.matcher.matches(trace.root) {
            return None;
        }
        let root_only = |conds: &[Condition]| conds.iter().any(|c| c.holds(trace.root));
        let (dimensions, cut) =
            DimensionValues::of_root(&self.dimensions, trace.root, max_value_bytes);
        let mut e = PendingEvent {
            trace_id: trace.trace_id,
            dimensions,
            series: None,
            excluded: root_only(&self.exclude),
            bad: root_only(&self.bad),
            root_start_ns: trace.root_start_ns,
            root_end_ns: trace.root_end_ns,
            last_end_ns: trace.last_end_ns.max(trace.root_end_ns),
            from_ns: None,
            to_ns: None,
        };
        self.fold_timed(
            &mut e,
            trace.root,
            Some((trace.root_start_ns, trace.root_end_ns)),
        );
        for s in trace.spans {
            self.fold(&mut e, s);
        }
        Some((e, cut))
    }

    /// Folds one more span of the trace (or of a continuation) into a pending event.
    pub fn fold<S: SpanFacts>(&self, e: &mut PendingEvent, span: &S) {
        self.fold_timed(e, span, span.times_ns());
    }

    fn fold_timed<S: SpanFacts>(&self, e: &mut PendingEvent, span: &S, times: Option<(u64, u64)>) {
        e.apply(&self.mark_timed(span, times));
    }

    /// What `span` would change in any event of this CUJ, as plain data: late spans and
    /// linked continuations are read where they arrive and only their marks are handed to
    /// the engine ([`PendingEvent::apply`]; folding a span is applying its mark).
    pub fn mark<S: SpanFacts>(&self, span: &S) -> SpanMark {
        self.mark_timed(span, span.times_ns())
    }

    fn mark_timed<S: SpanFacts>(&self, span: &S, times: Option<(u64, u64)>) -> SpanMark {
        let mut m = SpanMark::default();
        if self.scope == Scope::Trace {
            m.excluded = self.exclude.iter().any(|c| c.holds(span));
            m.bad = self.bad.iter().any(|c| c.holds(span));
        }
        let Some(times) = times else { return m };
        m.last_end_ns = times.1;
        if let Some((_, Measure::Between { from, to })) = &self.latency {
            if from.matcher.matches(span) {
                m.from_ns = Some(from.time(times));
            }
            if to.matcher.matches(span) {
                m.to_ns = Some(to.time(times));
            }
        }
        m
    }

    /// What the event comes to with the spans folded so far.
    pub fn finish(&self, e: PendingEvent) -> Outcome {
        if e.excluded {
            return Outcome::Excluded;
        }
        let mut unmeasured = None;
        let latency = self.latency.as_ref().and_then(|(threshold, measure)| {
            let (from, to) = match measure {
                Measure::Root => (e.root_start_ns, e.root_end_ns),
                Measure::EndToEnd => (e.root_start_ns, e.last_end_ns),
                Measure::Between { .. } => match (e.from_ns, e.to_ns) {
                    (None, _) => {
                        unmeasured = Some(Unmeasured::FromMissing);
                        return None;
                    }
                    (_, None) => {
                        unmeasured = Some(Unmeasured::ToMissing);
                        return None;
                    }
                    (Some(f), Some(t)) if t < f => {
                        unmeasured = Some(Unmeasured::ToBeforeFrom);
                        return None;
                    }
                    (Some(f), Some(t)) => (f, t),
                },
            };
            let measured = Duration::from_nanos(to.saturating_sub(from));
            // Good/bad is decided on the exact value, not on a histogram bucket.
            Some((measured, measured <= *threshold))
        });
        Outcome::Event(SliEvent {
            dimensions: e.dimensions,
            available: !e.bad,
            latency,
            unmeasured,
            trace_id: e.trace_id,
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
        times: Option<(u64, u64)>,
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
        fn times_ns(&self) -> Option<(u64, u64)> {
            self.times
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
            alert_gate: crate::slo::AlertGate::OFF,
            runbook: None,
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
            span_bits: None,
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
            times: None,
        }
    }

    const MS: u64 = 1_000_000;

    fn timed(name: &'static str, start_ms: u64, end_ms: u64) -> Span {
        Span {
            times: Some((start_ms * MS, end_ms * MS)),
            ..span(name, 0, StatusCode::Unset)
        }
    }

    fn selector(name: &str, at: SpanEdge) -> SpanSelector {
        SpanSelector {
            matcher: RootMatch {
                span_name: Some(ValueMatch::Equals(Literal::Str(name.into()))),
                ..RootMatch::default()
            },
            at,
        }
    }

    fn between() -> Measure {
        Measure::Between {
            from: Box::new(selector("enqueue", SpanEdge::Start)),
            to: Box::new(selector("job completed", SpanEdge::End)),
        }
    }

    #[test]
    fn between_takes_the_earliest_from_and_the_latest_to() {
        let c = cuj(Scope::Root, between());
        let spans = [
            span("POST /v1/messages", 201, StatusCode::Unset),
            timed("enqueue", 40, 45),
            timed("enqueue", 20, 25),
            timed("job completed", 100, 250),
            timed("job completed", 90, 200),
        ];
        let Outcome::Event(e) = c.evaluate(&trace(&spans, 50, 250)) else {
            panic!("event expected")
        };
        assert_eq!(e.latency, Some((Duration::from_millis(230), true)));
        assert_eq!(e.unmeasured, None);
        assert!(c.settles() && c.needs_spans());
    }

    #[test]
    fn between_without_both_ends_is_unmeasured_but_still_available() {
        let c = cuj(Scope::Root, between());
        let only_from = [
            span("POST /v1/messages", 201, StatusCode::Unset),
            timed("enqueue", 40, 45),
        ];
        let Outcome::Event(e) = c.evaluate(&trace(&only_from, 50, 50)) else {
            panic!("event expected")
        };
        assert_eq!(
            (e.latency, e.unmeasured),
            (None, Some(Unmeasured::ToMissing))
        );
        assert!(e.available);
        let backwards = [
            span("POST /v1/messages", 201, StatusCode::Unset),
            timed("enqueue", 40, 45),
            timed("job completed", 10, 30),
        ];
        let Outcome::Event(e) = c.evaluate(&trace(&backwards, 50, 50)) else {
            panic!("event expected")
        };
        assert_eq!(e.unmeasured, Some(Unmeasured::ToBeforeFrom));
        let none = [span("POST /v1/messages", 201, StatusCode::Unset)];
        let Outcome::Event(e) = c.evaluate(&trace(&none, 50, 50)) else {
            panic!("event expected")
        };
        assert_eq!(e.unmeasured, Some(Unmeasured::FromMissing));
    }

    #[test]
    fn dimension_values_keep_every_value_and_render_non_strings_as_text() {
        let root = Span {
            name: "POST /v1/messages",
            status: StatusCode::Unset,
            attrs: vec![
                ("user.tier", Scalar::Str("gold")),
                ("shard", Scalar::Int(-7)),
                ("ratio", Scalar::Double(0.25)),
                ("beta", Scalar::Bool(true)),
                ("empty", Scalar::Str("")),
                ("accent", Scalar::Str("café ☕")),
            ],
            times: None,
        };
        let keys: Vec<String> = [
            "user.tier",
            "missing",
            "shard",
            "ratio",
            "beta",
            "empty",
            "accent",
        ]
        .iter()
        .map(|k| k.to_string())
        .collect();
        let (d, cut) = DimensionValues::of_root(&keys, &root, usize::MAX);
        assert_eq!(cut, 0);
        assert_eq!(
            d.to_vec(),
            ["gold", "", "-7", "0.25", "true", "", "café ☕"],
            "a missing attribute is an empty value"
        );
        assert_eq!(
            d,
            DimensionValues::new(&d.to_vec()),
            "same values, same key"
        );
        // Values are delimited by length, so moving a boundary makes another key.
        assert_ne!(
            DimensionValues::new(&["ab", "c"]),
            DimensionValues::new(&["a", "bc"])
        );
        assert_ne!(
            DimensionValues::new(&["a"]),
            DimensionValues::new(&["a", ""])
        );
        assert_eq!(DimensionValues::new::<&str>(&[]).iter().count(), 0);
        assert_eq!(
            format!("{d:?}"),
            r#"["gold", "", "-7", "0.25", "true", "", "café ☕"]"#
        );
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let (a, cut_a) = DimensionValues::new_capped(&["x".repeat(10_000), "gold".into()], 128);
        let (b, cut_b) = DimensionValues::new_capped(&["x".repeat(10_001), "gold".into()], 128);
        assert_eq!((a.clone(), cut_a, cut_b), (b, 1, 1), "one key past the cut");
        assert_eq!(a.to_vec(), ["x".repeat(128), "gold".into()]);
        // "é" is two bytes: a cut at an odd length keeps whole characters only.
        let accents = "é".repeat(100);
        assert_eq!(truncate_value(&accents, 127), "é".repeat(63));
        assert_eq!(truncate_value("☕☕", 5), "☕");
        assert_eq!(truncate_value("short", 128), "short");
        assert_eq!(DimensionValues::new_capped(&["exactly"], 7).1, 0);
    }

    #[test]
    fn late_spans_fold_into_a_pending_event() {
        let c = cuj(Scope::Trace, Measure::EndToEnd);
        let spans = [span("POST /v1/messages", 201, StatusCode::Unset)];
        let mut pending = c.begin(&trace(&spans, 100, 100)).expect("matched");
        assert_eq!(
            c.finish(pending.clone()),
            Outcome::Event(SliEvent {
                dimensions: DimensionValues::new(&["gold"]),
                available: true,
                latency: Some((Duration::from_millis(100), true)),
                unmeasured: None,
                trace_id: [1; 16],
            })
        );
        // The consumer ran later, and failed.
        let mut consumer = timed("process message", 500, 1500);
        consumer.status = StatusCode::Error;
        c.fold(&mut pending, &consumer);
        let Outcome::Event(e) = c.finish(pending) else {
            panic!("event expected")
        };
        assert!(!e.available, "scope: trace sees the failed consumer");
        assert_eq!(e.latency, Some((Duration::from_millis(1500), false)));
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
        assert_eq!(e.dimensions.to_vec(), vec!["gold".to_string()]);
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
