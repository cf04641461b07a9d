//! A small writer for the text exposition formats: Prometheus 0.0.4 and OpenMetrics 1.0.
//!
//! Every metric family is written with its `# HELP` and `# TYPE` lines first; label values
//! are escaped as the format requires. Other crates render their metrics with this writer
//! into an [`Exposition`], so `/metrics` stays valid under `promtool check metrics` and
//! OpenMetrics parsers whichever format the scraper asked for ([`Format::negotiate`]).
//!
//! In OpenMetrics, a counter family is named without its `_total` suffix (its samples keep
//! it), samples may carry an exemplar (`# {trace_id="…"} value timestamp`), and the output
//! ends with `# EOF`. Exemplars are left out of the Prometheus format, which has none.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use crate::gzip::{GzipBody, Prepared};

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which text format a scrape is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4, the default.
    Prometheus,
    /// OpenMetrics 1.0, when the scraper's `Accept` prefers it (Prometheus does).
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it accepts
    /// `application/openmetrics-text` at least as much as plain text (`text/plain`, `*/*`);
    /// otherwise (no header, `*/*`, `text/plain`) the Prometheus format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let (mut open_metrics, mut text) = (0.0f64, 0.0f64);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => open_metrics = open_metrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if open_metrics > 0.0 && open_metrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// A scrape's output being written, in one [`Format`]: text written in place, with bodies
/// rendered earlier ([`Prepared`]) spliced in where they were appended.
pub struct Exposition {
    text: String,
    /// Prepared bodies and the length `text` had when each was appended.
    spliced: Vec<(usize, Arc<Prepared>)>,
    format: Format,
}

impl Exposition {
    pub fn new(format: Format) -> Self {
        Self {
            text: String::with_capacity(8 * 1024),
            spliced: Vec::new(),
            format,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The text written in place so far (without spliced bodies).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The families written so far, without an end marker, to be appended to later scrapes
    /// of the same [`Format`] ([`Exposition::append_prepared`]).
    pub fn into_prepared(self) -> Prepared {
        Prepared::new(self.into_string())
    }

    /// Appends families rendered earlier in this exposition's format
    /// ([`Exposition::into_prepared`] of an exposition of the same [`Format`]), shared, not
    /// copied: a gzip answer splices in their compressed form, made once.
    pub fn append_prepared(&mut self, body: &Arc<Prepared>) {
        self.spliced.push((self.text.len(), body.clone()));
    }

    fn end(&mut self) {
        if self.format == Format::OpenMetrics {
            self.text.push_str("# EOF\n");
        }
    }

    /// Everything written and appended, as one string, without an end marker.
    fn into_string(self) -> String {
        if self.spliced.is_empty() {
            return self.text;
        }
        let extra: usize = self.spliced.iter().map(|(_, p)| p.text().len()).sum();
        let mut out = Vec::with_capacity(self.text.len() + extra);
        let mut at = 0;
        for (pos, part) in &self.spliced {
            out.extend_from_slice(&self.text.as_bytes()[at..*pos]);
            out.extend_from_slice(part.text());
            at = *pos;
        }
        out.extend_from_slice(&self.text.as_bytes()[at..]);
        // Every piece is valid UTF-8 and splits fall between writes, so on char boundaries.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Ends the output (`# EOF` in OpenMetrics) and returns it.
    pub fn finish(mut self) -> String {
        self.end();
        self.into_string()
    }

    /// Ends the output and returns it as one gzip member: the text written in place is
    /// compressed now, prepared bodies are spliced in compressed once.
    pub fn finish_gzip(mut self) -> Bytes {
        self.end();
        let mut body = GzipBody::new();
        let mut at = 0;
        for (pos, part) in &self.spliced {
            body.push_fresh(&self.text.as_bytes()[at..*pos]);
            body.push_prepared(part);
            at = *pos;
        }
        body.push_fresh(&self.text.as_bytes()[at..]);
        body.finish()
    }
}

/// The trace (or other labels) behind a sample, written in OpenMetrics only.
#[derive(Debug, Clone, Copy)]
pub struct Exemplar<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub value: f64,
    /// When it was observed, in milliseconds since the Unix epoch.
    pub timestamp_ms: Option<u64>,
}

/// One metric family being written.
pub struct Family<'a> {
    out: &'a mut Exposition,
    /// What every sample's name starts with: the family name, or in OpenMetrics a counter
    /// family's name with `_total`.
    sample_name: String,
}

impl<'a> Family<'a> {
    pub fn counter(out: &'a mut Exposition, name: &'a str, help: &str) -> Self {
        Self::start(out, name, help, "counter")
    }

    pub fn gauge(out: &'a mut Exposition, name: &'a str, help: &str) -> Self {
        Self::start(out, name, help, "gauge")
    }

    pub fn histogram(out: &'a mut Exposition, name: &'a str, help: &str) -> Self {
        Self::start(out, name, help, "histogram")
    }

    fn start(out: &'a mut Exposition, name: &'a str, help: &str, kind: &str) -> Self {
        let (family, sample_name) = match (out.format, kind) {
            (Format::OpenMetrics, "counter") => {
                let family = name.strip_suffix("_total").unwrap_or(name);
                (family, format!("{family}_total"))
            }
            _ => (name, name.to_string()),
        };
        let help = match out.format {
            Format::Prometheus => escape_help(help),
            Format::OpenMetrics => escape_help(help).replace('"', "\\\""),
        };
        let _ = writeln!(out.text, "# HELP {family} {help}");
        let _ = writeln!(out.text, "# TYPE {family} {kind}");
        Self { out, sample_name }
    }

    /// Writes `name{labels} value`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.sample_suffixed("", labels, value)
    }

    /// Writes `name<suffix>{labels} value` (for `_bucket`, `_sum`, `_count`).
    pub fn sample_suffixed(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) -> &mut Self {
        self.sample_with_exemplar(suffix, labels, value, None)
    }

    /// Writes `name<suffix>{labels} value`, with ` # {exemplar labels} value timestamp` in
    /// OpenMetrics when an exemplar is given.
    pub fn sample_with_exemplar(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: f64,
        exemplar: Option<Exemplar<'_>>,
    ) -> &mut Self {
        let open_metrics = self.out.format == Format::OpenMetrics;
        let out = &mut self.out.text;
        out.push_str(&self.sample_name);
        out.push_str(suffix);
        if !labels.is_empty() {
            write_labels(out, labels);
        }
        out.push(' ');
        write_value(out, value);
        if let Some(x) = exemplar.filter(|_| open_metrics) {
            out.push_str(" # ");
            write_labels(out, x.labels);
            out.push(' ');
            write_value(out, x.value);
            if let Some(ms) = x.timestamp_ms {
                let _ = write!(out, " {}.{:03}", ms / 1000, ms % 1000);
            }
        }
        out.push('\n');
        self
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_into(out, v);
        out.push('"');
    }
    out.push('}');
}

fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

fn escape_label_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_with_escaped_labels() {
        let mut out = Exposition::new(Format::Prometheus);
        Family::counter(&mut out, "x_total", "Things.")
            .sample(&[("a", "q\"uote\\\n")], 3.0)
            .sample(&[], 0.5);
        assert_eq!(
            out.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"q\\\"uote\\\\\\n\"} 3\nx_total 0.5\n"
        );
    }

    #[test]
    fn open_metrics_names_counter_families_and_carries_exemplars() {
        let exemplar = Exemplar {
            labels: &[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")],
            value: 0.42,
            timestamp_ms: Some(1_700_000_000_123),
        };
        let mut om = Exposition::new(Format::OpenMetrics);
        Family::counter(&mut om, "x_total", "Say \"x\".").sample_with_exemplar(
            "",
            &[("outcome", "bad")],
            3.0,
            Some(exemplar),
        );
        Family::histogram(&mut om, "d_seconds", "D.").sample_with_exemplar(
            "_bucket",
            &[("le", "+Inf")],
            1.0,
            Some(exemplar),
        );
        assert_eq!(
            om.finish(),
            "# HELP x Say \\\"x\\\".\n# TYPE x counter\n\
             x_total{outcome=\"bad\"} 3 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.42 1700000000.123\n\
             # HELP d_seconds D.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{le=\"+Inf\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.42 1700000000.123\n\
             # EOF\n"
        );
        let mut prom = Exposition::new(Format::Prometheus);
        Family::counter(&mut prom, "x_total", "X.").sample_with_exemplar(
            "",
            &[],
            3.0,
            Some(exemplar),
        );
        assert_eq!(
            prom.finish(),
            "# HELP x_total X.\n# TYPE x_total counter\nx_total 3\n"
        );
    }

    #[test]
    fn families_rendered_once_read_as_if_written_into_each_scrape() {
        let write = |out: &mut Exposition| {
            Family::counter(out, "cujo_x_total", "X.").sample(&[("k", "v")], 3.0);
        };
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let mut direct = Exposition::new(format);
            Family::gauge(&mut direct, "cujo_before", "Before.").sample(&[], 1.0);
            write(&mut direct);
            let mut once = Exposition::new(format);
            write(&mut once);
            let body = Arc::new(once.into_prepared());
            let scrape = || {
                let mut scrape = Exposition::new(format);
                Family::gauge(&mut scrape, "cujo_before", "Before.").sample(&[], 1.0);
                scrape.append_prepared(&body);
                Family::gauge(&mut scrape, "cujo_after", "After.").sample(&[], 2.0);
                scrape
            };
            Family::gauge(&mut direct, "cujo_after", "After.").sample(&[], 2.0);
            let direct = direct.finish();
            assert_eq!(scrape().finish(), direct, "{format:?}");
            let mut gunzipped = String::new();
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(scrape().finish_gzip().as_ref()),
                &mut gunzipped,
            )
            .expect("valid gzip");
            assert_eq!(gunzipped, direct, "{format:?} gzip");
        }
    }

    #[test]
    fn accept_header_negotiation() {
        let prometheus_scraper = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(
            Format::negotiate(Some(prometheus_scraper)),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("text/plain;q=1,application/openmetrics-text;q=0.5")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
    }
}
