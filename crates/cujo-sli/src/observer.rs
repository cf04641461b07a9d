//! The SLI processor's input from the assembler: an [`SliObserver`] is the assembler's
//! [`TraceObserver`] on each shard. It reads released traces in wire form (only the fields
//! and attribute keys the CUJs use), begins their events with the shared
//! [`SliMatcher`], and hands plain data to the engine's thread through an [`SliFeed`]
//! ([`crate::processor`]). It never waits for a reader; the only lock it takes is the
//! replay guard's read lock, and only while a write-ahead log's replayed segments live
//! ([`crate::engine::replay`]).

use std::sync::Arc;

use cujo_assembler::{ArrivingSpan, CLASSIFY_KEYS, ReleasedTrace, TraceObserver};

use crate::condition::{ConditionSet, Scalar, SpanFacts, StatusCode};
use crate::cuj::TraceFacts;
use crate::engine::SliMatcher;
use crate::engine::replay::{self, ReplayGuard, ReplayTag};
use crate::processor::SliFeed;

/// A span in wire form, as the SLI conditions read it: fields and attributes read once.
pub struct WireSpan<'a> {
    bytes: &'a [u8],
    fields: cujo_wire::span::SpanFields<'a>,
    service: &'a str,
    /// The keys the CUJs read ([`SliMatcher::attribute_keys`]) and, in the same order, the
    /// encoded values this span has for the first [`HELD_KEYS`] of them: read in the same
    /// pass as the fields (no allocation per span), so conditions never walk the span again.
    keys: &'a [String],
    values: [Option<&'a [u8]>; HELD_KEYS],
    /// `values` decoded, on first use: ten CUJs matching the same root ask for the same key.
    scalars: [std::cell::OnceCell<Option<Scalar<'a>>>; HELD_KEYS],
}

/// How many attribute values a [`WireSpan`] keeps; keys past these are looked up in the span.
const HELD_KEYS: usize = 8;

impl<'a> WireSpan<'a> {
    pub fn new(bytes: &'a [u8], service: &'a str, keys: &'a [String]) -> Self {
        let mut values = [None; HELD_KEYS];
        let held = &keys[..keys.len().min(HELD_KEYS)];
        let fields = cujo_wire::span::read_span_with(bytes, |key, kv| {
            if let Some(i) = held.iter().position(|k| k.as_bytes() == key) {
                values[i] = Some(cujo_wire::span::key_value(kv));
            }
        });
        Self {
            bytes,
            fields,
            service,
            keys,
            values,
            scalars: Default::default(),
        }
    }
}

impl SpanFacts for WireSpan<'_> {
    fn name(&self) -> &str {
        std::str::from_utf8(self.fields.name).unwrap_or("")
    }

    fn service(&self) -> &str {
        self.service
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_otlp(self.fields.status_code)
    }

    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        match self.keys.iter().position(|k| k == key) {
            Some(i) if i < HELD_KEYS => {
                *self.scalars[i].get_or_init(|| self.values[i].and_then(scalar))
            }
            // A key past the held ones, or one no CUJ declared: look it up in the span.
            _ => scalar(cujo_wire::span::span_attribute_value(
                self.bytes,
                key.as_bytes(),
            )?),
        }
    }

    fn times_ns(&self) -> Option<(u64, u64)> {
        Some((
            self.fields.start_time_unix_nano,
            self.fields.end_time_unix_nano,
        ))
    }
}

/// The scalar inside an encoded `AnyValue` (string, bool, int or double).
fn scalar(any_value: &[u8]) -> Option<Scalar<'_>> {
    use cujo_wire::proto::{FieldReader, Value};
    let mut r = FieldReader::new(any_value, "AnyValue");
    // The first field that is a scalar; arrays, maps and bytes have none.
    std::iter::from_fn(|| r.next_field()?.ok()).find_map(|f| match (f.number, f.value) {
        (1, Value::Len(s)) => std::str::from_utf8(s).ok().map(Scalar::Str),
        (2, Value::Varint(b)) => Some(Scalar::Bool(b != 0)),
        (3, Value::Varint(i)) => Some(Scalar::Int(i as i64)),
        (4, Value::I64(bits)) => Some(Scalar::Double(f64::from_bits(bits))),
        _ => None,
    })
}

/// An arriving span as the assembler read it, for the trace-scope conditions
/// ([`ConditionSet::classify`]): they read status and attributes only (no times).
struct Arriving<'a> {
    span: &'a ArrivingSpan<'a>,
    keys: &'a [String],
}

impl SpanFacts for Arriving<'_> {
    fn name(&self) -> &str {
        std::str::from_utf8(self.span.fields.name).unwrap_or("")
    }

    fn service(&self) -> &str {
        // Conditions never ask (only root matchers do).
        ""
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_otlp(self.span.fields.status_code)
    }

    fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
        let i = self.keys.iter().position(|k| k == key)?;
        scalar((*self.span.values.get(i)?)?)
    }
}

/// Feeds every trace the assembler releases whole to the SLI engine, and — when some CUJ
/// measures `end_to_end` or `{from, to}` — the late spans and linked traces that continue
/// traces whose events are still settling. One per shard.
pub struct SliObserver {
    matcher: Arc<SliMatcher>,
    feed: SliFeed,
    /// The clock events are recorded at (milliseconds since the Unix epoch).
    clock: fn() -> u64,
    /// Whether some CUJ settles (fixed by the config): otherwise late spans and links are
    /// not looked at.
    settles: bool,
    /// Whether some CUJ looks past the root (fixed by the config).
    needs_all_spans: bool,
    /// The attribute keys the CUJs read, so each span is read once.
    keys: Vec<String>,
    /// The trace-scope CUJs' conditions, evaluated on each span as the assembler reads it
    /// on arrival, so released traces need not be read again span by span.
    conditions: Option<ConditionSet>,
    /// The attribute keys `conditions` read, in the order the assembler captures them.
    condition_keys: Vec<String>,
    /// Whether spans besides the root must be read at release even with the trace's
    /// condition bits (a `{from, to}` CUJ).
    spans_besides_bits: bool,
    /// Set when the write-ahead log's replays are guarded ([`crate::engine::replay`]):
    /// events carry their keys and log segments, and events counted before a crash are
    /// not handed over again.
    replay: Option<Arc<ReplayGuard>>,
}

impl SliObserver {
    pub fn new(matcher: Arc<SliMatcher>, feed: SliFeed, clock: fn() -> u64) -> Self {
        let conditions = matcher.span_conditions().cloned();
        let condition_keys = conditions
            .as_ref()
            .map(ConditionSet::attribute_keys)
            .unwrap_or_default();
        // Too many keys to capture on arrival: read the spans at release instead.
        let conditions = conditions.filter(|_| condition_keys.len() <= CLASSIFY_KEYS);
        Self {
            settles: matcher.settles(),
            needs_all_spans: matcher.needs_all_spans(),
            keys: matcher.attribute_keys(),
            spans_besides_bits: matcher.needs_spans_besides_bits() || conditions.is_none(),
            conditions,
            condition_keys,
            matcher,
            feed,
            clock,
            replay: None,
        }
    }

    /// Guards the write-ahead log's replays with the engine's `guard`
    /// ([`crate::engine::SliEngine::guard_replays`]).
    pub fn with_replay_guard(mut self, guard: Arc<ReplayGuard>) -> Self {
        self.replay = Some(guard);
        self
    }
}

/// Every span of a released trace as [`WireSpan`]s, reading each resource's `service.name`
/// once (resources repeat across a trace's spans).
fn wire_spans<'a>(spans: &[(&'a [u8], &'a [u8])], keys: &'a [String]) -> Vec<WireSpan<'a>> {
    let mut services: Vec<(*const u8, &str)> = Vec::new();
    spans
        .iter()
        .map(|(s, r)| {
            let key = r.as_ptr();
            let service = match services.iter().find(|(k, _)| *k == key) {
                Some((_, svc)) => *svc,
                None => {
                    let svc = cujo_wire::span::service_name(r).unwrap_or("");
                    services.push((key, svc));
                    svc
                }
            };
            WireSpan::new(s, service, keys)
        })
        .collect()
}

impl TraceObserver for SliObserver {
    fn classify_keys(&self) -> Option<Vec<String>> {
        self.conditions
            .as_ref()
            .map(|_| self.condition_keys.clone())
    }

    fn classify(&self, span: &ArrivingSpan<'_>) -> u64 {
        self.conditions.as_ref().map_or(0, |c| {
            c.classify(&Arriving {
                span,
                keys: &self.condition_keys,
            })
        })
    }

    /// Every span is read when some CUJ looks past the root in a way the arrival bits do not
    /// cover (`spans_besides_bits` includes the bits being off). Traces with a span link
    /// are held whole by the assembler anyway.
    fn needs_every_span(&self) -> bool {
        self.needs_all_spans && self.spans_besides_bits
    }

    fn released(&mut self, trace: &ReleasedTrace<'_>) {
        // A trace continuing another through a link may extend a settling event.
        let linked = trace.link.filter(|_| self.settles);
        // Non-root spans are read only when some CUJ looks past the root in a way the
        // arrival bits do not cover, or to fold them into the event of the trace they
        // continue.
        let keys = &self.keys;
        let bits_cover = trace.span_bits.is_some() && !self.spans_besides_bits;
        // The root is either among every span read, or read alone (most traces).
        let (spans, among, alone) = if (self.needs_all_spans && !bits_cover) || linked.is_some() {
            (wire_spans(&trace.spans, keys), trace.root, None)
        } else {
            let alone = trace
                .root
                .and_then(|i| trace.spans.get(i))
                .map(|&(bytes, resource)| {
                    WireSpan::new(
                        bytes,
                        cujo_wire::span::service_name(resource).unwrap_or(""),
                        keys,
                    )
                });
            (Vec::new(), None, alone)
        };
        if let Some(to) = linked {
            self.feed
                .linked(trace.trace_id, to, self.matcher.mark_spans(&spans));
        }
        // Only a trace released with its own root is an event of a journey.
        let Some(root) = among.and_then(|i| spans.get(i)).or(alone.as_ref()) else {
            return;
        };
        let facts = TraceFacts {
            // Events show the id as sent; settling goes by the assembler's key, which a
            // linked trace's `link` and a late span use.
            trace_id: trace.sent_trace_id,
            root,
            root_start_ns: root.fields.start_time_unix_nano,
            root_end_ns: root.fields.end_time_unix_nano,
            spans: &spans,
            last_end_ns: trace.last_end_ns,
            span_bits: trace.span_bits,
        };
        let mut matched = self.matcher.match_trace(&facts);
        matched.trace_id = trace.trace_id;
        if let Some(guard) = &self.replay
            && !matched.events.is_empty()
        {
            let key = replay::trace_key(&trace.sent_trace_id, &root.fields.span_id);
            if guard.is_active() {
                matched
                    .events
                    .retain(|m| !guard.skips(self.matcher.event_key(key, m.cuj)));
            }
            matched.replay = Some(ReplayTag {
                trace: key,
                pins: trace.pins.as_slice().into(),
            });
        }
        if !matched.events.is_empty() {
            self.feed.trace(matched, (self.clock)());
        }
    }

    fn flush(&mut self) {
        self.feed.flush();
    }

    fn late_span(&mut self, trace_id: &[u8; 16], span: &[u8], resource: &[u8]) {
        if !self.settles {
            return;
        }
        let span = WireSpan::new(
            span,
            cujo_wire::span::service_name(resource).unwrap_or(""),
            &self.keys,
        );
        self.feed.late(
            *trace_id,
            self.matcher.mark_spans(std::slice::from_ref(&span)),
        );
    }
}
