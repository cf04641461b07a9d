//! The per-dimension tables of a CUJ: which dimension values burn ([`write_burn_shares`]:
//! their share of the bad events beside their share of the traffic) and every series worst
//! first ([`write_series`]), with each last bad trace linked through `slo.trace_link`.

use std::fmt::{self, Write};

use cujo_sli::report::{BurnShares, CujReport, SeriesReport};

use super::{DataValue, Esc, MISSING, NO_DATA, latency, percent, ratio};

/// Which dimension values burn the budget: one row per series, in the report's order
/// (worst first).
pub(super) fn write_series(out: &mut String, i: usize, cuj: &CujReport) -> fmt::Result {
    out.push_str("<h3>By dimension</h3>\n");
    if cuj.series.is_empty() {
        writeln!(
            out,
            "<p class=\"meta\" id=\"cuj-{i}-series-empty\">No events yet.</p>"
        )?;
        return Ok(());
    }
    let has_latency = cuj.latency_threshold_seconds.is_some();
    let has_availability = cuj.slis.iter().any(|s| s == "availability");
    let total_bad: u64 = cuj.series.iter().map(bad_events).sum();
    // Per-series windows, in the order the series report them.
    let mut windows: Vec<&str> = Vec::new();
    for s in &cuj.series {
        for w in &s.windows {
            if !windows.contains(&w.window.as_str()) {
                windows.push(&w.window);
            }
        }
    }
    writeln!(
        out,
        "<table class=\"series\" id=\"cuj-{i}-series\">\n<thead><tr>"
    )?;
    for d in &cuj.dimensions {
        write!(out, "<th>{}</th>", Esc(d))?;
    }
    out.push_str("<th>events</th>");
    if has_availability {
        out.push_str("<th>bad (availability)</th><th>availability</th>");
    }
    if has_latency {
        out.push_str("<th>bad (latency)</th><th>latency SLI</th>");
    }
    out.push_str("<th title=\"this series' bad events over all bad events of the CUJ\">share of bad events</th>");
    // Per-window SLIs of the series: availability's, or latency's when the CUJ has only it.
    let window_sli = if has_availability {
        "SLI"
    } else {
        "latency SLI"
    };
    for w in &windows {
        write!(out, "<th>{window_sli} {}</th>", Esc(w))?;
    }
    out.push_str("<th>p99</th><th>last bad trace</th></tr></thead>\n<tbody>\n");
    for (k, s) in cuj.series.iter().enumerate() {
        write!(out, "<tr id=\"cuj-{i}-series-{k}\">")?;
        for (_, value) in &s.dimensions {
            if value == "__overflow__" {
                out.push_str(
                    "<td class=\"dim overflow\" title=\"series past max_series\">(overflow)</td>",
                );
            } else {
                write!(out, "<td class=\"dim\">{}</td>", Esc(value))?;
            }
        }
        let events = events_since_start(s);
        write!(out, "<td class=\"events\">{events}</td>")?;
        if let (Some(good), Some(bad)) = (s.availability_good, s.availability_bad) {
            let availability = ratio(good, bad);
            write!(
                out,
                "<td class=\"avail-bad\">{bad}</td><td class=\"avail-sli\"{}>{}</td>",
                DataValue(availability),
                availability.map_or_else(|| NO_DATA.to_string(), percent)
            )?;
        } else if has_availability {
            out.push_str("<td class=\"avail-bad\"></td><td class=\"avail-sli\"></td>");
        }
        if has_latency {
            let l = ratio(s.latency_good, s.latency_bad);
            write!(
                out,
                "<td class=\"lat-bad\">{}</td><td class=\"lat-sli\"{}>{}</td>",
                s.latency_bad,
                DataValue(l),
                l.map_or_else(|| MISSING.to_string(), percent)
            )?;
        }
        let share = (total_bad > 0).then(|| bad_events(s) as f64 / total_bad as f64);
        write!(
            out,
            "<td class=\"share\"{}><span class=\"share-bar\" style=\"width:{:.0}px\"></span>{}</td>",
            DataValue(share),
            share.unwrap_or(0.0) * 60.0,
            share.map_or_else(|| MISSING.to_string(), percent)
        )?;
        for label in &windows {
            let w = s.windows.iter().find(|w| w.window == *label);
            let sli = w.and_then(|w| match w.availability_good {
                Some(good) => (w.valid > 0).then(|| good as f64 / w.valid as f64),
                None => {
                    (w.latency_valid > 0).then(|| w.latency_good as f64 / w.latency_valid as f64)
                }
            });
            write!(
                out,
                "<td class=\"win-{}\"{}{}>{}</td>",
                Esc(label),
                DataValue(sli),
                match w {
                    Some(w) if has_latency && w.latency_valid > 0 => format!(
                        " title=\"{} valid; latency {}\"",
                        w.valid,
                        percent(w.latency_good as f64 / w.latency_valid as f64)
                    ),
                    Some(w) => format!(" title=\"{} valid\"", w.valid),
                    None => String::new(),
                },
                sli.map_or_else(|| NO_DATA.to_string(), percent)
            )?;
        }
        let p99 = s.latency.as_ref().and_then(|l| l.p99);
        write!(
            out,
            "<td class=\"p99\"{}>{}</td>",
            DataValue(p99),
            p99.map_or_else(|| MISSING.to_string(), latency)
        )?;
        out.push_str("<td class=\"trace\">");
        write_trace(
            out,
            s.last_bad_trace_id.as_deref(),
            s.last_bad_trace_url.as_deref(),
        )?;
        out.push_str("</td></tr>\n");
    }
    out.push_str("</tbody></table>\n");
    Ok(())
}

fn bad_events(s: &SeriesReport) -> u64 {
    s.availability_bad.unwrap_or(0) + s.latency_bad
}

/// Valid events of a series since start (without availability: those with a latency).
fn events_since_start(s: &SeriesReport) -> u64 {
    match (s.availability_good, s.availability_bad) {
        (Some(good), Some(bad)) => good + bad,
        _ => s.latency_good + s.latency_bad,
    }
}

/// A trace id, a link to the trace when `slo.trace_link` gave one (the id and the URL are
/// escaped: both come from traffic or configuration).
pub(super) fn write_trace(out: &mut String, id: Option<&str>, url: Option<&str>) -> fmt::Result {
    match (id, url) {
        (Some(id), Some(url)) => write!(
            out,
            "<a class=\"trace-link\" href=\"{}\" rel=\"noopener noreferrer\" target=\"_blank\"><code>{}</code></a>",
            Esc(url),
            Esc(id)
        ),
        (Some(id), None) => write!(out, "<code>{}</code>", Esc(id)),
        (None, _) => out.write_str(MISSING),
    }
}

/// Which dimension values burn: per SLI and window with bad events, the values whose share
/// of the bad events most exceeds their share of the traffic first.
pub(super) fn write_burn_shares(out: &mut String, i: usize, cuj: &CujReport) -> fmt::Result {
    let burning: Vec<(usize, &BurnShares)> = cuj
        .burn_shares
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.values.is_empty())
        .collect();
    if cuj.dimensions.is_empty() || cuj.burn_shares.is_empty() {
        return Ok(());
    }
    out.push_str("<h3>Which dimension burns</h3>\n");
    if burning.is_empty() {
        writeln!(
            out,
            "<p class=\"meta\" id=\"cuj-{i}-burn-none\">No bad events in the last hour or over the objectives' windows.</p>"
        )?;
        return Ok(());
    }
    for (k, b) in burning {
        writeln!(
            out,
            "<table class=\"burn\" id=\"cuj-{i}-burn-{k}\" data-sli=\"{}\" data-window=\"{}\">\n<caption>{} over {}: {} bad of {} events</caption>",
            Esc(&b.sli),
            Esc(&b.window),
            Esc(&b.sli),
            Esc(&b.window),
            b.bad,
            b.valid
        )?;
        out.push_str("<thead><tr><th>dimension</th><th>value</th><th>bad events</th><th>share of bad events</th><th>share of traffic</th><th title=\"share of bad events minus share of traffic\">over its share</th></tr></thead>\n<tbody>\n");
        for (n, v) in b.values.iter().enumerate() {
            let over = v.bad_share - v.traffic_share;
            writeln!(
                out,
                "<tr id=\"cuj-{i}-burn-{k}-{n}\"><td class=\"dim\">{}</td><td class=\"dim\">{}</td><td class=\"bad\">{}</td><td class=\"share\"{}><span class=\"share-bar\" style=\"width:{:.0}px\"></span>{}</td><td class=\"traffic\"{}>{}</td><td class=\"over{}\"{}>{:+.1} pts</td></tr>",
                Esc(&v.dimension),
                Esc(&v.value),
                v.bad,
                DataValue(Some(v.bad_share)),
                v.bad_share * 60.0,
                percent(v.bad_share),
                DataValue(Some(v.traffic_share)),
                percent(v.traffic_share),
                if over > 0.0 { " burning" } else { "" },
                DataValue(Some(over)),
                over * 100.0
            )?;
        }
        out.push_str("</tbody></table>\n");
    }
    Ok(())
}
