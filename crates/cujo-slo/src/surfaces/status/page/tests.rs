//! The page's formatting helpers and whole pages rendered from hand-made reports.

use super::*;
use cujo_sli::report::{LatencySummary, SeriesReport, SeriesWindow, WindowReport};

#[test]
fn escapes_markup_and_quotes() {
    assert_eq!(
        Esc("<script>alert(\"x\")</script>").to_string(),
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    );
    assert_eq!(Esc("a & b's").to_string(), "a &amp; b&#39;s");
    assert_eq!(Esc("plain ünïcode").to_string(), "plain ünïcode");
    assert_eq!(Esc("").to_string(), "");
}

#[test]
fn percentages_keep_two_decimals_unless_that_would_mislead() {
    assert_eq!(percent(0.9), "90.00%");
    assert_eq!(percent(1.0), "100.00%");
    assert_eq!(percent(0.0), "0.00%");
    assert_eq!(percent(0.5), "50.00%");
    assert_eq!(percent(-99.0), "-9900.00%");
    // Not quite all good: never shown as 100.00%.
    assert_eq!(percent(0.99996), "99.996%");
    assert_eq!(percent(0.999_999), "99.9999%");
    assert_eq!(percent(0.000_04), "0.004%");
    assert_eq!(percent(f64::NAN), "—");
}

#[test]
fn targets_read_as_configured() {
    assert_eq!(target(0.999), "99.9%");
    assert_eq!(target(0.99), "99%");
    assert_eq!(target(0.9995), "99.95%");
    assert_eq!(target(0.8), "80%");
}

#[test]
fn burn_rates_and_durations() {
    assert_eq!(burn_rate(0.5), "0.50×");
    assert_eq!(burn_rate(14.4), "14.4×");
    assert_eq!(burn_rate(100.0), "100×");
    assert_eq!(burn_rate(f64::INFINITY), "∞×");
    assert_eq!(span(7.0 * 86_400.0), "7d");
    assert_eq!(span(10.5 * 86_400.0), "10d 12h");
    assert_eq!(span(5.0 * 3600.0 + 12.0 * 60.0 + 9.0), "5h 12m");
    assert_eq!(span(45.4), "45s");
    assert_eq!(span(0.2), "0s");
    assert_eq!(span(-1.0), "—");
    assert_eq!(latency(0.3), "300 ms");
    assert_eq!(latency(1.25), "1.25 s");
    assert_eq!(latency(0.0045), "4.5 ms");
    assert_eq!(latency(0.000_85), "850 µs");
    assert_eq!(latency(0.0), "0");
}

#[test]
fn chart_tops_are_round_numbers() {
    assert_eq!(nice_ceiling(0.33), 0.5);
    assert_eq!(nice_ceiling(0.5), 0.5);
    assert_eq!(nice_ceiling(1.2), 2.0);
    assert_eq!(nice_ceiling(7.0), 10.0);
    assert_eq!(nice_ceiling(0.0), 1.0);
}

#[test]
fn scales_map_clamp_and_centre_a_single_point() {
    // Budget 1 at the top (y 10), 0 at the bottom (y 110).
    let y = Scale::new(0.0, 1.0, 110.0, 10.0);
    assert_eq!(y.map(1.0), 10.0);
    assert_eq!(y.map(0.0), 110.0);
    assert_eq!(y.map(0.25), 85.0);
    assert_eq!(
        y.map(-99.0),
        110.0,
        "overspent budgets sit on the bottom edge"
    );
    assert_eq!(y.map(7.0), 10.0);
    let one_point = Scale::new(5.0, 5.0, 0.0, 100.0);
    assert_eq!(one_point.map(5.0), 50.0);
}

#[test]
fn line_paths_move_draw_and_lift_the_pen_at_gaps() {
    let x = Scale::new(0.0, 4.0, 0.0, 400.0);
    let y = Scale::new(0.0, 1.0, 100.0, 0.0);
    let points = [
        (0.0, Some(1.0)),
        (1.0, Some(0.5)),
        (2.0, None),
        (3.0, Some(0.25)),
        (4.0, Some(0.0)),
    ];
    assert_eq!(
        line_path(&points, x, y),
        "M0.0,0.0 L100.0,50.0 M300.0,75.0 L400.0,100.0"
    );
    assert_eq!(line_path(&[], x, y), "");
    assert_eq!(line_path(&[(1.0, Some(f64::NAN))], x, y), "");
}

#[test]
fn utc_dates() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    assert_eq!(hhmm(1_700_000_000_000), "22:13");
}

fn report() -> Report {
    let window = |w: &str, seconds, good, valid, burn| WindowReport {
        window: w.to_string(),
        seconds,
        good,
        valid,
        sli: (valid > 0).then(|| good as f64 / valid as f64),
        burn_rate: burn,
        coverage: if valid > 0 { 1.0 } else { 0.0 },
    };
    Report {
        generated_at_ms: 1_700_000_000_000,
        cujs: vec![CujReport {
            name: "checkout <script>alert(1)</script>".to_string(),
            slis: vec!["availability".to_string(), "latency".to_string()],
            dimensions: vec!["user.tier".to_string()],
            runbook: None,
            latency_threshold_seconds: Some(0.3),
            latency_measure: Some("root".to_string()),
            excluded: 3,
            overflowed: 0,
            overflowed_memory: 0,
            dimension_values_truncated: 0,
            series_expired: 0,
            series_not_restored: 0,
            objectives: vec![
                ObjectiveReport {
                    sli: "availability".to_string(),
                    target: 0.999,
                    window: "30d".to_string(),
                    window_seconds: 30 * 86_400,
                    windows: vec![
                        window("5m", 300, 180, 200, 100.0),
                        window("30d", 30 * 86_400, 180, 200, 100.0),
                    ],
                    budget_remaining: Some(-99.0),
                    page: true,
                    ticket: true,
                    alerts_held: Vec::new(),
                    exhaustion_seconds: Some(0.0),
                },
                ObjectiveReport {
                    sli: "latency".to_string(),
                    target: 0.8,
                    window: "7d".to_string(),
                    window_seconds: 7 * 86_400,
                    windows: vec![window("5m", 300, 0, 0, 0.0)],
                    budget_remaining: Some(0.5),
                    page: false,
                    ticket: false,
                    alerts_held: Vec::new(),
                    exhaustion_seconds: Some(7.0 * 86_400.0),
                },
            ],
            latency: Some(LatencySummary {
                count: 200,
                sum_seconds: 30.0,
                p50: Some(0.1),
                p90: Some(0.25),
                p99: None,
                p999: None,
                max: Some(0.5),
            }),
            series: vec![
                SeriesReport {
                    dimensions: vec![(
                        "user.tier".to_string(),
                        "<img src=x onerror=alert(1)>".to_string(),
                    )],
                    availability_good: Some(84),
                    availability_bad: Some(16),
                    latency_good: 100,
                    latency_bad: 0,
                    windows: vec![SeriesWindow {
                        window: "1h".to_string(),
                        valid: 100,
                        availability_good: Some(84),
                        latency_good: 100,
                        latency_valid: 100,
                    }],
                    latency: None,
                    last_bad_trace_id: Some("0af7651916cd43dd8448eb211c80319c".to_string()),
                    last_bad_trace_url: None,
                    last_bad_at_ms: None,
                },
                SeriesReport {
                    dimensions: vec![("user.tier".to_string(), "gold".to_string())],
                    availability_good: Some(96),
                    availability_bad: Some(4),
                    latency_good: 100,
                    latency_bad: 0,
                    windows: Vec::new(),
                    latency: None,
                    last_bad_trace_id: None,
                    last_bad_trace_url: None,
                    last_bad_at_ms: None,
                },
            ],
            burn_shares: Vec::new(),
            history: vec![
                HistoryPoint {
                    at_ms: 1_700_000_000_000 - 120_000,
                    budget_remaining: vec![1.0, 1.0],
                    p50: Some(0.1),
                    p90: None,
                    p99: Some(0.4),
                },
                HistoryPoint {
                    at_ms: 1_700_000_000_000 - 60_000,
                    budget_remaining: vec![0.2, 0.9],
                    p50: Some(0.12),
                    p90: None,
                    p99: Some(0.45),
                },
            ],
        }],
    }
}

/// The text between `<tag … id="id" …>` and the next `<`.
fn text_of<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id}"));
    let rest = &html[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let end = rest[start..].find('<').expect("next tag");
    &rest[start..start + end]
}

#[test]
fn the_page_escapes_user_text_and_shows_the_numbers() {
    let html = render(&report(), 0);
    assert!(!html.contains("<script"), "no script element at all");
    assert!(!html.contains("<img"));
    assert!(html.contains("checkout &lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!html.contains("http-equiv=\"refresh\""), "refresh 0 is off");
    assert!(render(&report(), 30).contains("<meta http-equiv=\"refresh\" content=\"30\">"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing external"
    );

    assert_eq!(text_of(&html, "generated-at"), "2023-11-14 22:13:20 UTC");
    assert_eq!(text_of(&html, "cuj-0-obj-0-sli-5m"), "90.00%");
    assert_eq!(text_of(&html, "cuj-0-obj-0-burn-5m"), "100×");
    assert_eq!(text_of(&html, "cuj-0-obj-0-alert"), "PAGE firing");
    assert_eq!(text_of(&html, "cuj-0-obj-0-budget"), "-9900.00%");
    assert_eq!(text_of(&html, "cuj-0-obj-0-exhaustion"), "exhausted");
    assert_eq!(text_of(&html, "cuj-0-obj-1-alert"), "OK");
    assert_eq!(text_of(&html, "cuj-0-obj-1-budget"), "50.00%");
    assert_eq!(text_of(&html, "cuj-0-obj-1-exhaustion"), "in 7d");
    assert_eq!(text_of(&html, "cuj-0-obj-1-sli-5m"), "no data");
    assert_eq!(text_of(&html, "cuj-0-obj-1-coverage-5m"), "none");
    assert_eq!(text_of(&html, "cuj-0-obj-0-coverage-30d"), "100%");
    assert_eq!(text_of(&html, "cuj-0-p50"), "100 ms");
    assert_eq!(text_of(&html, "cuj-0-p99"), "—");
    assert!(html.contains("id=\"cuj-0-burndown\""));
    assert!(html.contains("id=\"cuj-0-latency-threshold\""));
    // Share of bad events: 16 of 20, then 4 of 20.
    assert!(html.contains("<td class=\"share\" data-value=\"0.8\">"));
    assert!(html.contains("<td class=\"share\" data-value=\"0.2\">"));
    assert!(html.contains("<td class=\"win-1h\" data-value=\"0.84\""));
    assert!(html.contains("<code>0af7651916cd43dd8448eb211c80319c</code>"));
}

/// With `slo.trace_link`, the last bad trace is a link, its URL escaped as an attribute.
#[test]
fn the_last_bad_trace_links_to_the_backend() {
    let mut r = report();
    r.cujs[0].series[0].last_bad_trace_url = Some(
        "https://ui.honeycomb.io/acme/environments/prod/trace?trace_id=0af7651916cd43dd8448eb211c80319c&trace_start_ts=1\"><script>".to_string(),
    );
    let html = render(&r, 0);
    assert!(
        html.contains("<td class=\"trace\"><a class=\"trace-link\" href=\"https://ui.honeycomb.io/acme/environments/prod/trace?trace_id=0af7651916cd43dd8448eb211c80319c&amp;trace_start_ts=1&quot;&gt;&lt;script&gt;\" rel=\"noopener noreferrer\" target=\"_blank\"><code>0af7651916cd43dd8448eb211c80319c</code></a></td>"),
        "{html}"
    );
    assert!(!html.contains("<script"));
}

/// Which dimension burns: a table per SLI and window with bad events, the values in the
/// report's order, their shares and how far the bad share is over the traffic share.
#[test]
fn the_burn_table_sets_the_bad_share_beside_the_traffic_share() {
    use cujo_sli::report::{BurnShares, ValueShare};
    let mut r = report();
    let share = |value: &str, bad, valid, bad_share, traffic_share| ValueShare {
        dimension: "user.tier".into(),
        value: value.into(),
        bad,
        valid,
        bad_share,
        traffic_share,
    };
    r.cujs[0].burn_shares = vec![
        BurnShares {
            sli: "availability".into(),
            window: "1h".into(),
            bad: 20,
            valid: 200,
            values: vec![
                share("<b>free</b>", 16, 100, 0.8, 0.5),
                share("gold", 4, 100, 0.2, 0.5),
            ],
        },
        BurnShares {
            sli: "latency".into(),
            window: "1h".into(),
            bad: 0,
            valid: 200,
            values: Vec::new(),
        },
    ];
    let html = render(&r, 0);
    assert!(html.contains("<h3>Which dimension burns</h3>"));
    assert!(html.contains("<caption>availability over 1h: 20 bad of 200 events</caption>"));
    assert!(
        !html.contains("id=\"cuj-0-burn-1\""),
        "no table without bad events"
    );
    assert!(html.contains("<td class=\"dim\">&lt;b&gt;free&lt;/b&gt;</td>"));
    let first = &html[html.find("id=\"cuj-0-burn-0-0\"").expect("first row")..];
    let first = &first[..first.find("</tr>").expect("row end")];
    assert!(
        first.contains("<td class=\"traffic\" data-value=\"0.5\">50.00%</td>"),
        "{first}"
    );
    assert!(
        first.contains("<td class=\"over burning\" data-value=\"0.3"),
        "{first}"
    );
    assert!(first.ends_with(">+30.0 pts</td>"), "{first}");
    let second = &html[html.find("id=\"cuj-0-burn-0-1\"").expect("second row")..];
    assert!(
        second.contains("<td class=\"over\" data-value=\"-0.3"),
        "{second}"
    );

    r.cujs[0].burn_shares[0].values.clear();
    let html = render(&r, 0);
    assert!(html.contains("id=\"cuj-0-burn-none\""));
}

/// An objective without events says "no data" (state, budget, SLIs), never a green
/// 100%; a held page says why; a latency-only CUJ shows no availability column.
#[test]
fn no_data_held_alerts_and_latency_only_cujs_read_as_they_are() {
    let mut r = report();
    let cuj = &mut r.cujs[0];
    cuj.slis = vec!["latency".to_string()];
    for s in &mut cuj.series {
        s.availability_good = None;
        s.availability_bad = None;
        for w in &mut s.windows {
            w.availability_good = None;
        }
    }
    let first = &mut cuj.objectives[0];
    first.page = false;
    first.ticket = false;
    first.alerts_held = vec![cujo_sli::report::HeldAlertReport {
        severity: "page".to_string(),
        window: "1h".to_string(),
        valid: 180,
        coverage: 0.15,
        min_events: 100,
        min_coverage: 0.5,
        reason: "held for lack of data: the 1h window has data over 15% of it (needs 50%)"
            .to_string(),
    }];
    let second = &mut cuj.objectives[1];
    second.budget_remaining = None;
    second.exhaustion_seconds = None;
    let html = render(&r, 0);
    assert_eq!(
        text_of(&html, "cuj-0-obj-0-alert"),
        "HELD (too little data)"
    );
    assert_eq!(
        text_of(&html, "cuj-0-obj-0-held-page"),
        "PAGE held for lack of data: the 1h window has data over 15% of it (needs 50%)"
    );
    assert_eq!(text_of(&html, "cuj-0-obj-1-alert"), "NO DATA");
    assert_eq!(text_of(&html, "cuj-0-obj-1-budget"), "no data");
    assert!(!html.contains("bad (availability)"));
    assert!(!html.contains("avail-sli"));
    // The series' window cell shows latency's SLI (100 of 100).
    assert!(
        html.contains("<td class=\"win-1h\" data-value=\"1\""),
        "{html}"
    );
    let overview = &html[html.find("id=\"overview-0\"").expect("overview")..];
    assert!(overview.contains("HELD"));
}

#[test]
fn charts_draw_one_line_per_objective_and_per_quantile() {
    let html = render(&report(), 0);
    let burndown = &html[html.find("id=\"cuj-0-burndown\"").expect("burndown")..];
    let burndown = &burndown[..burndown.find("</svg>").expect("end")];
    assert_eq!(burndown.matches("<path class=\"line").count(), 2);
    // Two samples a minute apart, then the budgets now (a minute later): the first
    // objective falls from the top (100%) to 20% and on to the bottom edge, -9900%: the
    // scale reaches it, with -100% marked on the way.
    let y = Scale::new(-99.0, 1.0, CHART_H - PAD_BOTTOM, PAD_TOP);
    let mid = (PAD_LEFT + CHART_W - PAD_RIGHT) / 2.0;
    let want = format!(
        "d=\"M{:.1},{:.1} L{mid:.1},{:.1} L{:.1},{:.1}\"",
        PAD_LEFT,
        PAD_TOP,
        y.map(0.2),
        CHART_W - PAD_RIGHT,
        CHART_H - PAD_BOTTOM
    );
    assert!(burndown.contains(&want), "{want} in {burndown}");
    assert!(burndown.contains(">-100%</text>"), "-100% is marked");
    assert!(
        burndown.contains(">-9900%</text>"),
        "the floor is labelled as it is"
    );
    let latency = &html[html.find("id=\"cuj-0-latency\"").expect("latency")..];
    let latency = &latency[..latency.find("</svg>").expect("end")];
    assert_eq!(latency.matches("<path class=\"line").count(), 3);
    // p90 has no samples: an empty path and no dot.
    assert!(latency.contains("data-quantile=\"p90\" d=\"\""));
    assert_eq!(latency.matches("<circle").count(), 2);
}

#[test]
fn an_empty_history_and_no_cujs_still_render() {
    let mut r = report();
    r.cujs[0].history.clear();
    r.cujs[0].series.clear();
    let html = render(&r, 0);
    assert!(html.contains("no latency samples yet"));
    let burndown = &html[html.find("id=\"cuj-0-burndown\"").expect("burndown")..];
    assert_eq!(
        burndown[..burndown.find("</svg>").expect("end")]
            .matches("<circle")
            .count(),
        2,
        "the budgets now, one dot per objective"
    );
    assert!(html.contains("id=\"cuj-0-series-empty\""));
    let none = render(
        &Report {
            generated_at_ms: 0,
            cujs: Vec::new(),
        },
        0,
    );
    assert!(none.contains("id=\"no-cujs\""));
}
