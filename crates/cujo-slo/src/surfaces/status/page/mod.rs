//! The status page, `GET /`: the current [`Report`] as one self-contained HTML document.
//!
//! Built for an air-gapped cluster: no script, font or stylesheet is fetched from anywhere (the
//! response's Content-Security-Policy forbids it), the CSS is inline and the charts are SVG
//! drawn here on the server. Every text that comes from configuration or traffic (CUJ names,
//! dimension names and values, trace ids) is HTML-escaped. Key numbers carry stable element ids
//! (`cuj-0-obj-1-sli-5m`) and `data-*` attributes with the raw value, for tests and scrapers.
//!
//! `?refresh=N` reloads the page every N seconds (a `<meta>` refresh; default 60, 0 turns it
//! off).
//!
//! # Layout
//! - here: the route, the page's frame, each CUJ's objectives and charts, the formatting
//!   helpers and the style sheet.
//! - `breakdown`: the per-dimension tables (every series worst first; which dimension
//!   values' share of the bad events most exceeds their share of the traffic).

use std::fmt::{self, Display, Write};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cujo_sli::report::{CujReport, HistoryPoint, ObjectiveReport, Report};
use serde::Deserialize;

use super::ReportSource;

mod breakdown;
use breakdown::{write_burn_shares, write_series};

/// Seconds between reloads when the URL does not say.
const DEFAULT_REFRESH_SECONDS: u32 = 60;
/// What the page may load: nothing but its own inline styles.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";
/// Shown for a number the report does not have (yet).
const MISSING: &str = "—";
/// Shown for an SLI or a budget over a window without valid events (never a green 100%).
const NO_DATA: &str = "no data";

/// `GET /`.
pub fn router(source: ReportSource) -> Router {
    Router::new().route("/", get(page)).with_state(source)
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    /// Seconds between reloads; 0 turns the reload off.
    refresh: Option<u32>,
}

async fn page(State(source): State<ReportSource>, Query(query): Query<PageQuery>) -> Response {
    let Some(report) = source.report().await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "SLO report unavailable: the SLI engine failed (see cujo's log)\n",
        )
            .into_response();
    };
    let refresh = query.refresh.unwrap_or(DEFAULT_REFRESH_SECONDS);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        render_in_fleet(&report, refresh, source.fleet()),
    )
        .into_response()
}

/// The whole page for `report`; `refresh_seconds` 0 means no reload.
pub fn render(report: &Report, refresh_seconds: u32) -> String {
    render_in_fleet(report, refresh_seconds, None)
}

/// [`render`] for one instance of a fleet whose SLOs are computed by the Prometheus at
/// `fleet` (`slo.fleet.prometheus`): the page says it shows this instance's share.
pub fn render_in_fleet(report: &Report, refresh_seconds: u32, fleet: Option<&str>) -> String {
    let mut out = String::with_capacity(32 * 1024);
    // Writing into a String cannot fail.
    let _ = write_page(&mut out, report, refresh_seconds, fleet);
    out
}

fn write_page(
    out: &mut String,
    report: &Report,
    refresh_seconds: u32,
    fleet: Option<&str>,
) -> fmt::Result {
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    if refresh_seconds > 0 {
        writeln!(
            out,
            "<meta http-equiv=\"refresh\" content=\"{refresh_seconds}\">"
        )?;
    }
    out.push_str("<title>cujo — SLO status</title>\n<style>");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<header>\n<h1>SLO status</h1>\n");
    writeln!(
        out,
        "<p class=\"meta\">cujo · report of <time id=\"generated-at\" data-ms=\"{}\">{}</time>{}</p>",
        report.generated_at_ms,
        utc(report.generated_at_ms),
        if refresh_seconds > 0 {
            format!(" · reloads every {refresh_seconds}s")
        } else {
            String::new()
        }
    )?;
    if let Some(prometheus) = fleet {
        writeln!(
            out,
            "<p id=\"fleet\" class=\"fleet\">These numbers are <strong>this instance's share</strong> of the traffic: it is one of several. The SLOs of all of them together are computed by Prometheus at <a href=\"{url}\">{url}</a>; gate deploys with <code>cujo status --prometheus {url}</code>.</p>",
            url = Esc(prometheus)
        )?;
    }
    out.push_str("</header>\n<main>\n");
    if report.cujs.is_empty() {
        out.push_str("<p id=\"no-cujs\">No CUJ is configured: add a <code>cujs:</code> section to the configuration.</p>\n");
    } else {
        write_overview(out, report)?;
        for (i, cuj) in report.cujs.iter().enumerate() {
            write_cuj(out, i, cuj, report.generated_at_ms)?;
        }
    }
    out.push_str("</main>\n</body>\n</html>\n");
    Ok(())
}

/// The alert state of an objective, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AlertState {
    Page,
    Ticket,
    /// Would fire, but held: the rule's long window holds too little data.
    Held,
    /// No valid events over the objective's window: neither OK nor burning.
    NoData,
    Ok,
}

impl AlertState {
    fn of(o: &ObjectiveReport) -> Self {
        if o.page {
            AlertState::Page
        } else if o.ticket {
            AlertState::Ticket
        } else if !o.alerts_held.is_empty() {
            AlertState::Held
        } else if o.budget_remaining.is_none() {
            AlertState::NoData
        } else {
            AlertState::Ok
        }
    }

    fn class(self) -> &'static str {
        match self {
            AlertState::Page => "page",
            AlertState::Ticket => "ticket",
            AlertState::Held => "held",
            AlertState::NoData => "nodata",
            AlertState::Ok => "ok",
        }
    }

    fn text(self) -> &'static str {
        match self {
            AlertState::Page => "PAGE firing",
            AlertState::Ticket => "TICKET firing",
            AlertState::Held => "HELD (too little data)",
            AlertState::NoData => "NO DATA",
            AlertState::Ok => "OK",
        }
    }
}

/// One line per CUJ: its worst alert state and lowest budget, linking to its section.
fn write_overview(out: &mut String, report: &Report) -> fmt::Result {
    out.push_str("<nav id=\"overview\"><table>\n<thead><tr><th>CUJ</th><th>state</th><th>lowest budget left</th></tr></thead>\n<tbody>\n");
    for (i, cuj) in report.cujs.iter().enumerate() {
        let state = cuj
            .objectives
            .iter()
            .map(AlertState::of)
            .min()
            .unwrap_or(AlertState::Ok);
        let lowest = cuj
            .objectives
            .iter()
            .filter_map(|o| o.budget_remaining)
            .min_by(f64::total_cmp);
        let none = if cuj.objectives.is_empty() {
            MISSING
        } else {
            NO_DATA
        };
        writeln!(
            out,
            "<tr id=\"overview-{i}\"><td><a href=\"#cuj-{i}\">{}</a></td><td><span class=\"state {}\" data-state=\"{}\">{}</span></td><td>{}</td></tr>",
            Esc(&cuj.name),
            state.class(),
            state.class(),
            state.text(),
            lowest.map_or_else(|| none.to_string(), percent),
        )?;
    }
    out.push_str("</tbody></table></nav>\n");
    Ok(())
}

fn write_cuj(out: &mut String, i: usize, cuj: &CujReport, now_ms: u64) -> fmt::Result {
    writeln!(
        out,
        "<section class=\"cuj\" id=\"cuj-{i}\" data-cuj=\"{}\">\n<h2>{}</h2>",
        Esc(&cuj.name),
        Esc(&cuj.name)
    )?;
    out.push_str("<p class=\"meta\">");
    if cuj.dimensions.is_empty() {
        out.push_str("no dimensions");
    } else {
        out.push_str("split by ");
        for (k, d) in cuj.dimensions.iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            write!(out, "<code>{}</code>", Esc(d))?;
        }
    }
    if let Some(t) = cuj.latency_threshold_seconds {
        write!(
            out,
            " · latency threshold <span id=\"cuj-{i}-threshold\" data-seconds=\"{t}\">{}</span> ({})",
            latency(t),
            Esc(cuj.latency_measure.as_deref().unwrap_or("root"))
        )?;
    }
    writeln!(
        out,
        " · excluded <span id=\"cuj-{i}-excluded\">{}</span> · into the overflow series <span id=\"cuj-{i}-overflowed\">{}</span> (<span id=\"cuj-{i}-overflowed-memory\">{}</span> for memory)</p>",
        cuj.excluded, cuj.overflowed, cuj.overflowed_memory
    )?;
    write_latency_summary(out, i, cuj)?;
    if cuj.objectives.is_empty() {
        out.push_str("<p class=\"meta\">No objective is configured for this CUJ.</p>\n");
    }
    out.push_str("<div class=\"objectives\">\n");
    for (j, o) in cuj.objectives.iter().enumerate() {
        write_objective(out, i, j, o)?;
    }
    out.push_str("</div>\n<div class=\"charts\">\n");
    write_burndown(out, i, cuj, now_ms)?;
    write_latency_chart(out, i, cuj)?;
    out.push_str("</div>\n");
    write_burn_shares(out, i, cuj)?;
    write_series(out, i, cuj)?;
    out.push_str("</section>\n");
    Ok(())
}

fn write_latency_summary(out: &mut String, i: usize, cuj: &CujReport) -> fmt::Result {
    let l = cuj.latency.as_ref();
    out.push_str("<p class=\"latency\">Latency since start:");
    let quantiles: [(&str, &str, Option<f64>); 5] = [
        ("p50", "p50", l.and_then(|l| l.p50)),
        ("p90", "p90", l.and_then(|l| l.p90)),
        ("p99", "p99", l.and_then(|l| l.p99)),
        ("p999", "p99.9", l.and_then(|l| l.p999)),
        ("max", "max", l.and_then(|l| l.max)),
    ];
    for (key, label, value) in quantiles {
        write!(
            out,
            " <span class=\"q\">{label} <b id=\"cuj-{i}-{key}\"{}>{}</b></span>",
            DataValue(value),
            value.map_or_else(|| MISSING.to_string(), latency)
        )?;
    }
    out.push_str("</p>\n");
    Ok(())
}

fn write_objective(out: &mut String, i: usize, j: usize, o: &ObjectiveReport) -> fmt::Result {
    let id = format!("cuj-{i}-obj-{j}");
    let state = AlertState::of(o);
    writeln!(
        out,
        "<div class=\"objective {}\" id=\"{id}\" data-sli=\"{}\" data-target=\"{}\" data-window=\"{}\">",
        state.class(),
        Esc(&o.sli),
        o.target,
        Esc(&o.window)
    )?;
    writeln!(
        out,
        "<div class=\"head\"><h3>{} ≥ {} over {}</h3><span class=\"state {}\" id=\"{id}-alert\" data-state=\"{}\" data-page=\"{}\" data-ticket=\"{}\">{}</span></div>",
        Esc(&o.sli),
        target(o.target),
        Esc(&o.window),
        state.class(),
        state.class(),
        o.page,
        o.ticket,
        state.text()
    )?;
    for h in &o.alerts_held {
        writeln!(
            out,
            "<p class=\"held\" id=\"{id}-held-{}\" data-valid=\"{}\" data-coverage=\"{}\">{} {}</p>",
            Esc(&h.severity),
            h.valid,
            h.coverage,
            Esc(&h.severity.to_uppercase()),
            Esc(&h.reason)
        )?;
    }
    match o.budget_remaining {
        None => writeln!(
            out,
            "<div class=\"budget\"><div class=\"bar nodata\" title=\"no valid events over {}\"></div>\
             <span>error budget left: <b id=\"{id}-budget\">{NO_DATA}</b></span></div>",
            Esc(&o.window),
        )?,
        Some(b) => {
            let fill = if b.is_finite() {
                b.clamp(0.0, 1.0)
            } else {
                0.0
            };
            let level = if b >= 0.5 {
                "high"
            } else if b >= 0.2 {
                "mid"
            } else {
                "low"
            };
            writeln!(
                out,
                "<div class=\"budget\"><div class=\"bar {level}\" title=\"error budget left over {}\"><div class=\"fill\" style=\"width:{:.1}%\"></div></div>\
                 <span>error budget left: <b id=\"{id}-budget\" data-value=\"{b}\">{}</b>{}</span></div>",
                Esc(&o.window),
                fill * 100.0,
                percent(b),
                if b < 0.0 {
                    " <em class=\"over\">(overspent)</em>"
                } else {
                    ""
                }
            )?;
        }
    }
    let exhaustion = match o.exhaustion_seconds {
        None => "not burning".to_string(),
        Some(s) if s <= 0.0 => "exhausted".to_string(),
        Some(s) => format!("in {}", span(s)),
    };
    writeln!(
        out,
        "<p class=\"exhaustion\">projected exhaustion (at the last hour's burn rate): <b id=\"{id}-exhaustion\"{}>{exhaustion}</b></p>",
        DataSeconds(o.exhaustion_seconds)
    )?;
    out.push_str("<table class=\"windows\">\n<thead><tr><th></th>");
    for w in &o.windows {
        let own = if w.window == o.window {
            " class=\"own\""
        } else {
            ""
        };
        write!(out, "<th{own}>{}</th>", Esc(&w.window))?;
    }
    out.push_str("</tr></thead>\n<tbody>\n<tr><th>SLI</th>");
    for w in &o.windows {
        let good = w.sli.is_some_and(|s| s >= o.target);
        write!(
            out,
            "<td id=\"{id}-sli-{}\" class=\"{}\"{}>{}</td>",
            Esc(&w.window),
            if w.sli.is_none() {
                "none"
            } else if good {
                "met"
            } else {
                "missed"
            },
            DataValue(w.sli),
            w.sli.map_or_else(|| NO_DATA.to_string(), percent)
        )?;
    }
    out.push_str("</tr>\n<tr><th title=\"how much of the window has data: from its oldest event to now\">coverage</th>");
    for w in &o.windows {
        write!(
            out,
            "<td id=\"{id}-coverage-{}\" class=\"{}\"{}>{}</td>",
            Esc(&w.window),
            if w.coverage < 1.0 { "partial" } else { "full" },
            DataValue(Some(w.coverage)),
            coverage(w.coverage)
        )?;
    }
    out.push_str("</tr>\n<tr><th>good / valid</th>");
    for w in &o.windows {
        write!(
            out,
            "<td id=\"{id}-events-{}\" data-good=\"{}\" data-valid=\"{}\">{} / {}</td>",
            Esc(&w.window),
            w.good,
            w.valid,
            w.good,
            w.valid
        )?;
    }
    out.push_str("</tr>\n<tr><th>burn rate</th>");
    for w in &o.windows {
        write!(
            out,
            "<td id=\"{id}-burn-{}\"{}>{}</td>",
            Esc(&w.window),
            DataValue(Some(w.burn_rate)),
            burn_rate(w.burn_rate)
        )?;
    }
    out.push_str("</tr>\n</tbody></table>\n</div>\n");
    Ok(())
}

// Chart geometry (SVG user units).
const CHART_W: f64 = 640.0;
const CHART_H: f64 = 220.0;
const PAD_LEFT: f64 = 58.0;
const PAD_RIGHT: f64 = 14.0;
const PAD_TOP: f64 = 12.0;
const PAD_BOTTOM: f64 = 26.0;

/// The x scale of a chart: the samples' time span (ms, oldest first) across the plot area.
fn time_scale(times: &[u64]) -> Scale {
    let first = times.first().map_or(0.0, |t| *t as f64);
    let last = times.last().map_or(0.0, |t| *t as f64);
    Scale::new(first, last, PAD_LEFT, CHART_W - PAD_RIGHT)
}

fn write_svg_open(out: &mut String, id: &str, title: &str) -> fmt::Result {
    writeln!(
        out,
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"{title}\"><title>{title}</title>"
    )?;
    writeln!(
        out,
        "<rect class=\"plot\" x=\"{PAD_LEFT}\" y=\"{PAD_TOP}\" width=\"{}\" height=\"{}\"/>",
        CHART_W - PAD_LEFT - PAD_RIGHT,
        CHART_H - PAD_TOP - PAD_BOTTOM
    )
}

/// Horizontal grid lines with labels on the left.
fn write_y_ticks(
    out: &mut String,
    y: Scale,
    ticks: &[f64],
    label: impl Fn(f64) -> String,
) -> fmt::Result {
    for &t in ticks {
        let py = y.map(t);
        writeln!(
            out,
            "<line class=\"grid\" x1=\"{PAD_LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/><text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            CHART_W - PAD_RIGHT,
            PAD_LEFT - 6.0,
            py + 4.0,
            label(t)
        )?;
    }
    Ok(())
}

/// The first and last sample times under the plot.
fn write_x_ticks(out: &mut String, times: &[u64]) -> fmt::Result {
    let y = CHART_H - 8.0;
    match (times.first(), times.last()) {
        (Some(first), Some(last)) if first != last => writeln!(
            out,
            "<text class=\"tick\" x=\"{PAD_LEFT}\" y=\"{y}\">{}</text><text class=\"tick\" x=\"{}\" y=\"{y}\" text-anchor=\"end\">{} UTC</text>",
            hhmm(*first),
            CHART_W - PAD_RIGHT,
            hhmm(*last)
        ),
        (Some(only), _) => writeln!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{y}\" text-anchor=\"middle\">{} UTC</text>",
            (PAD_LEFT + CHART_W - PAD_RIGHT) / 2.0,
            hhmm(*only)
        ),
        _ => Ok(()),
    }
}

fn write_no_data(out: &mut String, text: &str) -> fmt::Result {
    writeln!(
        out,
        "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{text}</text>",
        (PAD_LEFT + CHART_W - PAD_RIGHT) / 2.0,
        (PAD_TOP + CHART_H - PAD_BOTTOM) / 2.0
    )
}

/// One line of a chart, and a dot on its newest point (so a single sample still shows).
fn write_line(
    out: &mut String,
    class: &str,
    attrs: &str,
    points: &[(f64, Option<f64>)],
    x: Scale,
    y: Scale,
) -> fmt::Result {
    writeln!(
        out,
        "<path class=\"line {class}\" {attrs} d=\"{}\"/>",
        line_path(points, x, y)
    )?;
    if let Some((px, Some(v))) = points
        .iter()
        .rev()
        .find(|(_, v)| v.is_some_and(f64::is_finite))
    {
        writeln!(
            out,
            "<circle class=\"dot {class}\" {attrs} cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" data-value=\"{v}\"/>",
            x.map(*px),
            y.map(*v)
        )?;
    }
    Ok(())
}

/// Error budget remaining per objective over the history, ending with the budgets now. The
/// scale reaches down to the lowest budget drawn, however far below −100% it is (an overspent
/// budget is shown as it is, not clamped), with −100% marked when the floor is further down.
fn write_burndown(out: &mut String, i: usize, cuj: &CujReport, now_ms: u64) -> fmt::Result {
    out.push_str("<figure class=\"chart\">\n<figcaption>Error budget remaining</figcaption>\n");
    write_svg_open(out, &format!("cuj-{i}-burndown"), "Error budget remaining")?;
    let mut samples: Vec<(u64, Vec<f64>)> = cuj
        .history
        .iter()
        .map(|p| (p.at_ms, p.budget_remaining.clone()))
        .collect();
    if samples.last().is_none_or(|(at, _)| *at < now_ms) && !cuj.objectives.is_empty() {
        // No data draws the full budget, as the history does (the objective says "no data").
        let now = cuj
            .objectives
            .iter()
            .map(|o| o.budget_remaining.unwrap_or(1.0))
            .collect();
        samples.push((now_ms, now));
    }
    let times: Vec<u64> = samples.iter().map(|(at, _)| *at).collect();
    let lowest = samples
        .iter()
        .flat_map(|(_, budgets)| budgets.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::min);
    let y = Scale::new(lowest, 1.0, CHART_H - PAD_BOTTOM, PAD_TOP);
    let mut ticks = vec![1.0, 0.5, 0.0];
    if lowest < -1.5 {
        ticks.push(-1.0);
    }
    if lowest < -0.05 {
        ticks.push(lowest);
    }
    write_y_ticks(out, y, &ticks, |t| format!("{:.0}%", t * 100.0))?;
    let zero = y.map(0.0);
    writeln!(
        out,
        "<line class=\"zero\" x1=\"{PAD_LEFT}\" x2=\"{}\" y1=\"{zero:.1}\" y2=\"{zero:.1}\"/>",
        CHART_W - PAD_RIGHT
    )?;
    write_x_ticks(out, &times)?;
    if cuj.objectives.is_empty() {
        write_no_data(out, "no objective")?;
    } else {
        let x = time_scale(&times);
        for j in 0..cuj.objectives.len() {
            let points: Vec<(f64, Option<f64>)> = samples
                .iter()
                .map(|(at, budgets)| (*at as f64, budgets.get(j).copied()))
                .collect();
            write_line(
                out,
                &format!("s{}", j % PALETTE),
                &format!("data-objective=\"{j}\""),
                &points,
                x,
                y,
            )?;
        }
    }
    out.push_str("</svg>\n<ul class=\"legend\">");
    for (j, o) in cuj.objectives.iter().enumerate() {
        write!(
            out,
            "<li><span class=\"swatch s{}\"></span>{} {} / {}</li>",
            j % PALETTE,
            Esc(&o.sli),
            target(o.target),
            Esc(&o.window)
        )?;
    }
    out.push_str("</ul>\n</figure>\n");
    Ok(())
}

/// p50 / p90 / p99 of each history interval, with the CUJ's latency threshold.
fn write_latency_chart(out: &mut String, i: usize, cuj: &CujReport) -> fmt::Result {
    out.push_str("<figure class=\"chart\">\n<figcaption>Latency percentiles</figcaption>\n");
    write_svg_open(out, &format!("cuj-{i}-latency"), "Latency percentiles")?;
    let history = &cuj.history;
    type Quantile = fn(&HistoryPoint) -> Option<f64>;
    let quantiles: [(&str, Quantile); 3] =
        [("p50", |p| p.p50), ("p90", |p| p.p90), ("p99", |p| p.p99)];
    let highest = history
        .iter()
        .flat_map(|p| [p.p50, p.p90, p.p99])
        .flatten()
        .filter(|v| v.is_finite())
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let top = nice_ceiling(
        highest
            .unwrap_or(0.0)
            .max(cuj.latency_threshold_seconds.unwrap_or(0.0))
            * 1.1,
    );
    let y = Scale::new(0.0, top, CHART_H - PAD_BOTTOM, PAD_TOP);
    write_y_ticks(out, y, &[0.0, top / 2.0, top], latency)?;
    let times: Vec<u64> = history.iter().map(|p| p.at_ms).collect();
    write_x_ticks(out, &times)?;
    if let Some(t) = cuj.latency_threshold_seconds {
        let py = y.map(t);
        writeln!(
            out,
            "<line class=\"threshold\" id=\"cuj-{i}-latency-threshold\" data-seconds=\"{t}\" x1=\"{PAD_LEFT}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\"/><text class=\"tick threshold-label\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">threshold {}</text>",
            CHART_W - PAD_RIGHT,
            CHART_W - PAD_RIGHT - 4.0,
            py - 4.0,
            latency(t)
        )?;
    }
    if highest.is_none() {
        write_no_data(
            out,
            if cuj.latency_threshold_seconds.is_some() {
                "no latency samples yet"
            } else {
                "this CUJ has no latency SLI"
            },
        )?;
    } else {
        let x = time_scale(&times);
        for (name, get) in quantiles {
            let points: Vec<(f64, Option<f64>)> =
                history.iter().map(|p| (p.at_ms as f64, get(p))).collect();
            write_line(
                out,
                &format!("q-{name}"),
                &format!("data-quantile=\"{name}\""),
                &points,
                x,
                y,
            )?;
        }
    }
    out.push_str("</svg>\n<ul class=\"legend\"><li><span class=\"swatch q-p50\"></span>p50</li><li><span class=\"swatch q-p90\"></span>p90</li><li><span class=\"swatch q-p99\"></span>p99</li><li><span class=\"swatch threshold\"></span>threshold</li></ul>\n</figure>\n");
    Ok(())
}

/// Coverage of a window: `100%`, `15%`, `0.2%`, `none`.
fn coverage(c: f64) -> String {
    if c <= 0.0 {
        "none".to_string()
    } else if c >= 0.1 {
        format!("{:.0}%", c * 100.0)
    } else {
        format!("{:.1}%", c * 100.0)
    }
}

fn ratio(good: u64, bad: u64) -> Option<f64> {
    let valid = good + bad;
    (valid > 0).then(|| good as f64 / valid as f64)
}

/// Text with `& < > " '` escaped, safe in element content and quoted attributes.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// ` data-value="…"` when there is a value.
struct DataValue(Option<f64>);

impl Display for DataValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, " data-value=\"{v}\""),
            None => Ok(()),
        }
    }
}

/// ` data-seconds="…"` when there is a value.
struct DataSeconds(Option<f64>);

impl Display for DataSeconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, " data-seconds=\"{v}\""),
            None => Ok(()),
        }
    }
}

/// A ratio as a percentage with two decimals, or more when two would round a value that is
/// not 1 to `100.00%` (or one that is not 0 to `0.00%`).
pub fn percent(ratio: f64) -> String {
    if !ratio.is_finite() {
        return MISSING.to_string();
    }
    let p = ratio * 100.0;
    let mut decimals = 2;
    while decimals < 4 {
        let shown: f64 = format!("{p:.decimals$}").parse().unwrap_or(p);
        let misleading = shown == 100.0 && ratio < 1.0 || shown == 0.0 && ratio > 0.0;
        if !misleading {
            break;
        }
        decimals += 1;
    }
    format!("{p:.decimals$}%")
}

/// An objective's target as written in configuration: `99.9%`, `99%`, `99.95%`.
pub fn target(ratio: f64) -> String {
    let s = format!("{:.4}", ratio * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// A burn rate: `0.50×`, `14.4×`, `100×`.
pub fn burn_rate(rate: f64) -> String {
    if rate.is_nan() {
        MISSING.to_string()
    } else if rate.is_infinite() {
        "∞×".to_string()
    } else if rate >= 99.95 {
        format!("{rate:.0}×")
    } else if rate >= 9.995 {
        format!("{rate:.1}×")
    } else {
        format!("{rate:.2}×")
    }
}

/// A span of time in its two largest units: `10d 12h`, `7d`, `5h 12m`, `45s`.
pub fn span(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return MISSING.to_string();
    }
    let s = seconds.round() as u64;
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let Some(first) = UNITS.iter().position(|(u, _)| s >= *u) else {
        return "0s".to_string();
    };
    let (u, name) = UNITS[first];
    let mut out = format!("{}{name}", s / u);
    if let Some((next, next_name)) = UNITS.get(first + 1) {
        let rest = (s % u) / next;
        if rest > 0 {
            let _ = write!(out, " {rest}{next_name}");
        }
    }
    out
}

/// A latency: `1.25 s`, `300 ms`, `4.5 ms`, `850 µs`.
pub fn latency(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        MISSING.to_string()
    } else if seconds == 0.0 {
        "0".to_string()
    } else if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 0.00995 {
        format!("{:.0} ms", seconds * 1e3)
    } else if seconds >= 0.001 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{:.0} µs", seconds * 1e6)
    }
}

/// The smallest of 1, 2, 5 × 10^k at or above `v` (a chart's top); 1 for nothing to show.
pub fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// A linear map from a data interval onto a pixel interval; values outside the data interval
/// land on its edge (a chart clips rather than drawing outside its frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    pub fn new(d0: f64, d1: f64, r0: f64, r1: f64) -> Self {
        Self { d0, d1, r0, r1 }
    }

    pub fn map(&self, v: f64) -> f64 {
        let width = self.d1 - self.d0;
        if width == 0.0 || !width.is_finite() {
            // One point (or none): the middle.
            return (self.r0 + self.r1) / 2.0;
        }
        let t = ((v - self.d0) / width).clamp(0.0, 1.0);
        self.r0 + t * (self.r1 - self.r0)
    }
}

/// An SVG path through `points` (x, y data values); a missing y lifts the pen, so a gap in
/// the data is a gap in the line.
pub fn line_path(points: &[(f64, Option<f64>)], x: Scale, y: Scale) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for (px, py) in points {
        match py.filter(|v| v.is_finite()) {
            Some(v) => {
                if !d.is_empty() {
                    d.push(' ');
                }
                let _ = write!(
                    d,
                    "{}{:.1},{:.1}",
                    if pen_down { 'L' } else { 'M' },
                    x.map(*px),
                    y.map(v)
                );
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d
}

/// `2023-11-14 22:13:20 UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_date((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// `22:13` (UTC).
fn hhmm(ms: u64) -> String {
    let t = ms / 1000 % 86_400;
    format!("{:02}:{:02}", t / 3600, t % 3600 / 60)
}

/// (year, month, day) of a day counted from 1970-01-01 (the proleptic Gregorian calendar).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Colours of objective lines (`s0`…) in the burn-down chart.
const PALETTE: usize = 4;

const STYLE: &str = r#"
:root { --fg:#1d232b; --muted:#5d6875; --line:#d9dee4; --bg:#f6f7f9; --card:#fff;
  --page:#c62828; --ticket:#e67700; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { padding:16px 24px 4px; }
h1 { margin:0; font-size:22px; }
h2 { margin:0 0 4px; font-size:19px; }
h3 { margin:12px 0 6px; font-size:15px; }
main { padding:0 24px 24px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px; }
.meta { color:var(--muted); margin:2px 0 8px; }
.fleet { background:#fff4d6; border:1px solid #e5c07b; border-radius:6px; padding:6px 10px; margin:4px 0 8px; max-width:70em; }
#overview table, .cuj { background:var(--card); border:1px solid var(--line); border-radius:8px; }
#overview { margin:12px 0 16px; }
#overview table { border-collapse:separate; min-width:420px; }
.cuj { padding:16px 20px; margin:0 0 20px; }
table { border-collapse:collapse; }
th, td { padding:4px 10px; text-align:right; border-bottom:1px solid var(--line); white-space:nowrap; }
th:first-child, td:first-child, td.dim, #overview td { text-align:left; }
thead th { color:var(--muted); font-weight:600; }
.state { display:inline-block; padding:2px 10px; border-radius:12px; font-weight:700; font-size:12px; color:#fff; letter-spacing:.03em; }
.state.page { background:var(--page); }
.state.ticket { background:var(--ticket); }
.state.ok { background:var(--ok); }
.state.held { background:var(--ticket); }
.state.nodata { background:var(--muted); }
p.held { margin:4px 0; color:var(--ticket); font-weight:600; }
.bar.nodata { background:repeating-linear-gradient(45deg,#eceff2,#eceff2 4px,#fff 4px,#fff 8px); }
.windows td.partial { color:var(--muted); }
.objectives { display:flex; flex-wrap:wrap; gap:12px; }
.objective { flex:1 1 100%; border:1px solid var(--line); border-left:5px solid var(--ok); border-radius:6px; padding:8px 12px; overflow-x:auto; }
.objective.page { border-left-color:var(--page); }
.objective.ticket { border-left-color:var(--ticket); }
.objective .head { display:flex; justify-content:space-between; align-items:center; gap:8px; }
.objective h3 { margin:4px 0; }
.budget { display:flex; align-items:center; gap:10px; margin:6px 0; }
.bar { width:220px; height:12px; background:#eceff2; border-radius:6px; overflow:hidden; border:1px solid var(--line); }
.bar .fill { height:100%; background:var(--ok); }
.bar.mid .fill { background:var(--ticket); }
.bar.low .fill { background:var(--page); }
.bar.low { border-color:var(--page); }
em.over { color:var(--page); font-style:normal; font-weight:600; }
.exhaustion { margin:4px 0 8px; }
.windows th.own { color:var(--fg); text-decoration:underline; }
.windows td.missed { color:var(--page); font-weight:600; }
.windows td.met { color:var(--ok); }
.latency .q { margin-left:10px; }
.charts { display:flex; flex-wrap:wrap; gap:16px; margin-top:12px; }
figure.chart { margin:0; flex:1 1 480px; max-width:720px; }
figcaption { font-weight:600; margin-bottom:4px; }
svg.chart { width:100%; height:auto; background:var(--card); }
svg .plot { fill:#fbfcfd; stroke:var(--line); }
svg .grid { stroke:#e6e9ed; }
svg .zero { stroke:var(--page); stroke-dasharray:4 3; }
svg .threshold { stroke:var(--page); stroke-dasharray:6 4; stroke-width:1.5; }
svg .tick { fill:var(--muted); font-size:11px; }
svg .threshold-label { fill:var(--page); }
svg .empty { fill:var(--muted); font-size:13px; }
svg .line { fill:none; stroke-width:2; }
.s0 { stroke:#1f6feb; background:#1f6feb; fill:#1f6feb; }
.s1 { stroke:#8250df; background:#8250df; fill:#8250df; }
.s2 { stroke:#bf8700; background:#bf8700; fill:#bf8700; }
.s3 { stroke:#1a7f37; background:#1a7f37; fill:#1a7f37; }
.q-p50 { stroke:#1a7f37; background:#1a7f37; fill:#1a7f37; }
.q-p90 { stroke:#bf8700; background:#bf8700; fill:#bf8700; }
.q-p99 { stroke:#8250df; background:#8250df; fill:#8250df; }
svg path.line { fill:none; }
.swatch.threshold { background:var(--page); }
.legend { list-style:none; padding:0; margin:4px 0 0; display:flex; flex-wrap:wrap; gap:14px; color:var(--muted); }
.swatch { display:inline-block; width:14px; height:4px; margin-right:6px; vertical-align:middle; border-radius:2px; }
table.series { margin-top:4px; }
td.overflow { font-style:italic; color:var(--muted); }
.share-bar { display:inline-block; height:8px; background:var(--page); opacity:.7; margin-right:6px; vertical-align:middle; border-radius:2px; }
td.trace code { color:var(--muted); }
a.trace-link code { color:inherit; }
table.burn caption { text-align:left; color:var(--muted); padding:4px 0; }
td.over.burning { color:var(--page); font-weight:600; }
"#;

#[cfg(test)]
mod tests;
