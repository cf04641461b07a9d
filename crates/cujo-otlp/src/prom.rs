//! A small writer for the Prometheus text exposition format (version 0.0.4).
//!
//! Every metric family is written with its `# HELP` and `# TYPE` lines first; label values
//! are escaped as the format requires. Other crates render their metrics with this writer so
//! `/metrics` stays valid under `promtool check metrics`.

use std::fmt::Write as _;

/// Content type of the text format this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family being written.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl<'a> Family<'a> {
    pub fn counter(out: &'a mut String, name: &'a str, help: &str) -> Self {
        Self::start(out, name, help, "counter")
    }

    pub fn gauge(out: &'a mut String, name: &'a str, help: &str) -> Self {
        Self::start(out, name, help, "gauge")
    }

    pub fn histogram(out: &'a mut String, name: &'a str, help: &str) -> Self {
        Self::start(out, name, help, "histogram")
    }

    fn start(out: &'a mut String, name: &'a str, help: &str, kind: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out, name }
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
        let out = &mut *self.out;
        out.push_str(self.name);
        out.push_str(suffix);
        if !labels.is_empty() {
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
        out.push(' ');
        write_value(out, value);
        out.push('\n');
        self
    }
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
        let mut out = String::new();
        Family::counter(&mut out, "x_total", "Things.")
            .sample(&[("a", "q\"uote\\\n")], 3.0)
            .sample(&[], 0.5);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"q\\\"uote\\\\\\n\"} 3\nx_total 0.5\n"
        );
    }
}
