//! The conditions a CUJ definition is made of: which root spans a CUJ matches, and which
//! events are bad or excluded. Value forms follow the config contract: an exact value, a
//! list (any of), `{regex}`, `{exists}`, and ranges `{gte, gt, lte, lt}`.
//!
//! Conditions read spans through [`SpanFacts`], so this crate does not depend on how spans
//! are stored (wire form in cujo, plain structs in tests).

/// A scalar attribute value as read from a span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl Scalar<'_> {
    /// The value as a number, for ranges: integers, doubles, and strings that parse
    /// (`"503"`); booleans are not numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Int(i) => Some(i as f64),
            Scalar::Double(d) => Some(d),
            Scalar::Str(s) => s.trim().parse().ok(),
            Scalar::Bool(_) => None,
        }
    }
}

/// A value written in a CUJ definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl Literal {
    /// Whether a span's value equals this literal. Numbers compare by value across integer
    /// and double; a number and a string compare by the number's text (`500` = `"500"`), as
    /// instrumentations disagree on the type of status codes.
    pub fn equals(&self, v: Scalar<'_>) -> bool {
        match (self, v) {
            (Literal::Str(a), Scalar::Str(b)) => a == b,
            (Literal::Bool(a), Scalar::Bool(b)) => *a == b,
            (Literal::Int(a), Scalar::Int(b)) => *a == b,
            (Literal::Int(a), Scalar::Double(b)) => (*a as f64) == b,
            (Literal::Double(a), Scalar::Int(b)) => *a == b as f64,
            (Literal::Double(a), Scalar::Double(b)) => *a == b,
            (Literal::Str(a), Scalar::Int(b)) => a.trim().parse::<i64>().is_ok_and(|a| a == b),
            (Literal::Int(a), Scalar::Str(b)) => b.trim().parse::<i64>().is_ok_and(|b| *a == b),
            _ => false,
        }
    }
}

/// How a value must look.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Equals(Literal),
    AnyOf(Vec<Literal>),
    /// The whole string value matches (anchored).
    Regex(regex::Regex),
    /// `true`: the attribute is present; `false`: it is absent.
    Exists(bool),
    /// Every bound given must hold; a value that is not a number matches no range.
    Range {
        gte: Option<f64>,
        gt: Option<f64>,
        lte: Option<f64>,
        lt: Option<f64>,
    },
}

impl ValueMatch {
    /// An anchored regex from a pattern, or the compile error naming the pattern.
    pub fn regex(pattern: &str) -> Result<ValueMatch, String> {
        regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(ValueMatch::Regex)
            .map_err(|e| format!("invalid regex {pattern:?}: {e}"))
    }

    pub fn matches(&self, value: Option<Scalar<'_>>) -> bool {
        match (self, value) {
            (ValueMatch::Exists(want), v) => *want == v.is_some(),
            (_, None) => false,
            (ValueMatch::Equals(l), Some(v)) => l.equals(v),
            (ValueMatch::AnyOf(ls), Some(v)) => ls.iter().any(|l| l.equals(v)),
            (ValueMatch::Regex(re), Some(Scalar::Str(s))) => re.is_match(s),
            (ValueMatch::Regex(re), Some(v)) => match v {
                Scalar::Int(i) => re.is_match(&i.to_string()),
                Scalar::Double(d) => re.is_match(&d.to_string()),
                Scalar::Bool(b) => re.is_match(if b { "true" } else { "false" }),
                Scalar::Str(_) => false,
            },
            (ValueMatch::Range { gte, gt, lte, lt }, Some(v)) => match v.as_f64() {
                None => false,
                Some(x) => {
                    gte.is_none_or(|b| x >= b)
                        && gt.is_none_or(|b| x > b)
                        && lte.is_none_or(|b| x <= b)
                        && lt.is_none_or(|b| x < b)
                }
            },
        }
    }
}

/// OTLP span status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    /// From the OTLP `Status.code` number.
    pub fn from_otlp(code: u64) -> StatusCode {
        match code {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

/// What conditions may ask of a span.
pub trait SpanFacts {
    fn name(&self) -> &str;
    /// The `service.name` of the span's resource.
    fn service(&self) -> &str;
    fn status(&self) -> StatusCode;
    fn attribute(&self, key: &str) -> Option<Scalar<'_>>;
    /// The span's start and end (nanoseconds since the Unix epoch), for latency measured
    /// between spans; `None` when the caller does not read them (such spans are never the
    /// edge of a `{from, to}` measure).
    fn times_ns(&self) -> Option<(u64, u64)> {
        None
    }
}

/// One `bad:` or `exclude:` entry.
#[derive(Debug, Clone)]
pub enum Condition {
    Status(StatusCode),
    Attribute { key: String, value: ValueMatch },
}

impl Condition {
    pub fn holds(&self, span: &impl SpanFacts) -> bool {
        match self {
            Condition::Status(s) => span.status() == *s,
            Condition::Attribute { key, value } => value.matches(span.attribute(key)),
        }
    }
}

/// The `bad:`/`exclude:` conditions that `scope: trace` CUJs evaluate on every span, each
/// distinct condition once, so a span can be classified as it arrives — while it is being
/// read anyway — into a bit set, and a trace's spans summarised by OR-ing their bits. The
/// engine then decides trace-scope availability from the bits, without reading the
/// trace's spans again at release.
#[derive(Debug, Clone, Default)]
pub struct ConditionSet {
    conditions: Vec<Condition>,
    /// Text of each condition, to find duplicates (conditions hold regexes, so they have no
    /// equality of their own).
    texts: Vec<String>,
}

impl ConditionSet {
    /// Most conditions a set can hold (one bit each).
    pub const MAX: usize = 64;

    /// The bit of `c`, added if new; `None` when the set is full.
    pub fn bit_of(&mut self, c: &Condition) -> Option<u64> {
        let text = format!("{c:?}");
        let i = match self.texts.iter().position(|t| *t == text) {
            Some(i) => i,
            None if self.conditions.len() < Self::MAX => {
                self.conditions.push(c.clone());
                self.texts.push(text);
                self.conditions.len() - 1
            }
            None => return None,
        };
        Some(1 << i)
    }

    /// The bits of every condition in `conds` together; `None` when one does not fit.
    pub fn mask_of(&mut self, conds: &[Condition]) -> Option<u64> {
        conds.iter().try_fold(0, |m, c| Some(m | self.bit_of(c)?))
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The attribute keys the conditions read, once each.
    pub fn attribute_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for c in &self.conditions {
            if let Condition::Attribute { key, .. } = c
                && !keys.contains(key)
            {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// Bit `i` set when condition `i` holds for `span`.
    pub fn classify(&self, span: &impl SpanFacts) -> u64 {
        self.conditions
            .iter()
            .enumerate()
            .filter(|(_, c)| c.holds(span))
            .fold(0, |bits, (i, _)| bits | 1 << i)
    }
}

/// A CUJ's `match:` block, checked on a trace's root span; every part must hold.
#[derive(Debug, Clone, Default)]
pub struct RootMatch {
    pub service: Option<ValueMatch>,
    pub span_name: Option<ValueMatch>,
    pub attributes: Vec<(String, ValueMatch)>,
}

impl RootMatch {
    pub fn matches(&self, root: &impl SpanFacts) -> bool {
        self.service
            .as_ref()
            .is_none_or(|m| m.matches(Some(Scalar::Str(root.service()))))
            && self
                .span_name
                .as_ref()
                .is_none_or(|m| m.matches(Some(Scalar::Str(root.name()))))
            && self
                .attributes
                .iter()
                .all(|(k, m)| m.matches(root.attribute(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Span {
        name: &'static str,
        service: &'static str,
        status: StatusCode,
        attrs: Vec<(&'static str, Scalar<'static>)>,
    }

    impl SpanFacts for Span {
        fn name(&self) -> &str {
            self.name
        }
        fn service(&self) -> &str {
            self.service
        }
        fn status(&self) -> StatusCode {
            self.status
        }
        fn attribute(&self, key: &str) -> Option<Scalar<'_>> {
            self.attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        }
    }

    fn root(code: Scalar<'static>) -> Span {
        Span {
            name: "POST /v1/messages",
            service: "frontend-api",
            status: StatusCode::Unset,
            attrs: vec![
                ("cuj.name", Scalar::Str("post_message")),
                ("http.response.status_code", code),
                ("user.tier", Scalar::Str("gold")),
            ],
        }
    }

    #[test]
    fn root_match_needs_every_part() {
        let m = RootMatch {
            service: Some(ValueMatch::Equals(Literal::Str("frontend-api".into()))),
            span_name: Some(ValueMatch::regex("POST /v1/.*").expect("regex")),
            attributes: vec![(
                "cuj.name".into(),
                ValueMatch::Equals(Literal::Str("post_message".into())),
            )],
        };
        assert!(m.matches(&root(Scalar::Int(201))));
        let mut other = root(Scalar::Int(201));
        other.service = "worker";
        assert!(!m.matches(&other));
        other = root(Scalar::Int(201));
        other.name = "GET /v1/messages";
        assert!(!m.matches(&other), "the regex is anchored");
    }

    #[test]
    fn value_forms() {
        let five_xx = ValueMatch::Range {
            gte: Some(500.0),
            gt: None,
            lte: None,
            lt: None,
        };
        assert!(five_xx.matches(Some(Scalar::Int(503))));
        assert!(
            five_xx.matches(Some(Scalar::Str("500"))),
            "string status codes count"
        );
        assert!(!five_xx.matches(Some(Scalar::Int(499))));
        assert!(!five_xx.matches(None));
        let four_xx = ValueMatch::Range {
            gte: Some(400.0),
            gt: None,
            lte: None,
            lt: Some(500.0),
        };
        assert!(four_xx.matches(Some(Scalar::Double(404.0))));
        assert!(!four_xx.matches(Some(Scalar::Int(500))));
        let any = ValueMatch::AnyOf(vec![
            Literal::Str("INTERNAL_SERVER_ERROR".into()),
            Literal::Str("UNAVAILABLE".into()),
        ]);
        assert!(any.matches(Some(Scalar::Str("UNAVAILABLE"))));
        assert!(!any.matches(Some(Scalar::Str("BAD_USER_INPUT"))));
        assert!(ValueMatch::Exists(true).matches(Some(Scalar::Bool(false))));
        assert!(ValueMatch::Exists(false).matches(None));
        assert!(ValueMatch::Equals(Literal::Int(200)).matches(Some(Scalar::Str("200"))));
        assert!(ValueMatch::Equals(Literal::Double(1.0)).matches(Some(Scalar::Int(1))));
        assert!(ValueMatch::regex("(").is_err());
    }

    #[test]
    fn bad_and_exclude_conditions() {
        let error = Condition::Status(StatusCode::Error);
        let server_error = Condition::Attribute {
            key: "http.response.status_code".into(),
            value: ValueMatch::Range {
                gte: Some(500.0),
                gt: None,
                lte: None,
                lt: None,
            },
        };
        let mut r = root(Scalar::Int(502));
        assert!(!error.holds(&r) && server_error.holds(&r));
        r.status = StatusCode::from_otlp(2);
        assert!(error.holds(&r));
    }
}
