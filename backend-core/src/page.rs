//! `report.html`: one self-contained page about a run — the summary, the timeline (a lane per
//! worker, a bar per process with a tooltip: id, parameters, duration, status, worker), the
//! histogram of durations, the utilisation of each worker, the crash groups and the slowest
//! processes. Inline CSS and SVG only: no script, no font, nothing fetched, so it opens from
//! a cluster's file system or an e-mail attachment alike. Written at consolidation from the
//! same bounded [`Timeline`] and [`Tally`](crate::report::Tally) as `timeline.svg` and
//! `taskfarm-worker report`, so its size does not grow past [`MAX_PAGE_BARS`] bars.
//!
//! One concept (about 530 lines with its tests), read top to bottom: the page and its helpers,
//! then each of its sections in the order it shows them.

use std::fmt::Write as _;
use std::path::Path;

use crate::report::{RunReport, WorkerLoad};
use crate::timeline::{tick_label, time_unit, Timeline};
use crate::Status;

/// Above this many processes the page's timeline draws no bars (the histogram and the tables
/// still show every process): a bar with its tooltip per process would make a page of tens
/// of megabytes.
pub(crate) const MAX_PAGE_BARS: usize = 20_000;

/// How many of the slowest processes the page lists.
pub(crate) const PAGE_SLOWEST: usize = 20;

/// Width of the drawings, in SVG units (the page scales them to the window).
const WIDTH: f64 = 1200.0;
/// Height of the timeline's lanes together, at most, in SVG units: lanes get thinner as
/// workers get more.
const LANES_HEIGHT: f64 = 1600.0;

/// What the page is about: the operation's name and the run's directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageHeading<'a> {
    /// The operation's name.
    pub name: &'a str,
    /// The run's result directory.
    pub dir: &'a Path,
}

/// The HTML text of the page.
pub(crate) fn render(heading: PageHeading<'_>, report: &RunReport, timeline: &Timeline) -> String {
    let mut html = String::with_capacity(64 * 1024 + timeline.bars().len().min(MAX_PAGE_BARS) * 160);
    let title = format!("taskfarm: {}", heading.name);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"dir\">{}</p>\n",
        escape(&title),
        escape(&title),
        escape(&heading.dir.display().to_string()),
    );
    summary(&mut html, report);
    timeline_section(&mut html, timeline);
    histogram_section(&mut html, timeline);
    workers_section(&mut html, report);
    crashes_section(&mut html, report);
    slowest_section(&mut html, report);
    html.push_str("</body>\n</html>\n");
    html
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.dir { color: #666; margin-top: 0.2em; font-family: monospace; }
.cards { display: flex; flex-wrap: wrap; gap: 0.6em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.4em 0.9em; min-width: 7em; }
.card b { display: block; font-size: 1.4em; }
.card.crashed b { color: #cd2626; } .card.timed_out b { color: #e69114; } .card.finished b { color: #2e8b57; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 11px sans-serif; fill: #333; }
.bar.finished { fill: #2e8b57; } .bar.crashed { fill: #cd2626; } .bar.timed_out { fill: #e69114; }
.bar:hover, .bin:hover { opacity: 0.6; }
.bin { fill: #4169e1; } .axis { stroke: #888; stroke-width: 1; } .grid { stroke: #eee; stroke-width: 1; }
.lane { fill: #f7f7f7; }
table { border-collapse: collapse; margin-top: 0.4em; }
th, td { text-align: left; padding: 0.25em 0.7em; border-bottom: 1px solid #eee; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.meter { background: #eee; width: 12em; height: 0.8em; border-radius: 3px; }
.meter div { background: #2e8b57; height: 100%; border-radius: 3px; }
code, .mono { font-family: monospace; } .note { color: #666; } .damage { color: #cd2626; }
.legend span { display: inline-block; width: 0.8em; height: 0.8em; margin: 0 0.3em 0 1em; vertical-align: middle; }
";

/// `text` with the characters HTML gives a meaning written as entities.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Finished => "finished",
        Status::Crashed => "crashed",
        Status::TimedOut => "timed out",
    }
}

fn status_class(status: Status) -> &'static str {
    match status {
        Status::Finished => "finished",
        Status::Crashed => "crashed",
        Status::TimedOut => "timed_out",
    }
}

/// Seconds as people read them: `0.012 s`, `3.40 s`, `2 min 05 s`, `1 h 02 min`.
pub(crate) fn duration_text(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return format!("{seconds} s");
    }
    if seconds < 1.0 {
        format!("{seconds:.3} s")
    } else if seconds < 120.0 {
        format!("{seconds:.2} s")
    } else if seconds < 7200.0 {
        let whole = seconds.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        let minutes = (seconds / 60.0).round() as u64;
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

fn summary(html: &mut String, report: &RunReport) {
    html.push_str("<h2>Summary</h2>\n<div class=\"cards\">\n");
    let crashed_only = report.crashed - report.timed_out;
    let cards: [(&str, String, &str); 7] = [
        ("", report.recorded.to_string(), "processes recorded"),
        ("finished", report.finished.to_string(), "finished"),
        ("crashed", crashed_only.to_string(), "crashed"),
        ("timed_out", report.timed_out.to_string(), "timed out"),
        ("", duration_text(report.wall_s), "wall time (first start to last end)"),
        ("", format!("{:.1}%", 100.0 * report.utilisation()), "utilisation"),
        ("", report.workers.len().to_string(), "workers"),
    ];
    for (class, value, what) in cards {
        let _ = writeln!(html, "<div class=\"card {class}\"><b>{}</b>{}</div>", escape(&value), escape(what));
    }
    html.push_str("</div>\n");
    for skipped in &report.damage.skipped {
        let _ = writeln!(
            html,
            "<p class=\"damage\">Journal damage: {} corrupt bytes at offset {} skipped ({}); the processes recorded \
             there run again on <code>--resume</code>.</p>",
            skipped.len,
            skipped.offset,
            escape(&skipped.why)
        );
    }
    if let Some(torn) = &report.damage.torn_tail {
        let _ = writeln!(
            html,
            "<p class=\"damage\">Journal damage: a torn end at offset {} ignored ({}).</p>",
            torn.offset,
            escape(&torn.why)
        );
    }
}

/// The step between ticks of an axis of `span` units: 1, 2 or 5 times a power of ten, for
/// about `ticks` ticks.
fn tick_step(span: f64, ticks: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / ticks;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|&s| s >= raw).unwrap_or(10.0 * power);
    step.max(f64::MIN_POSITIVE)
}

/// A horizontal axis at `y` from `left` to `left + width` for values 0..`span` (in `unit_s`
/// seconds per unit shown), with ticks, labels and faint grid lines up to `top`.
fn x_axis(html: &mut String, left: f64, width: f64, top: f64, y: f64, span: f64, unit_s: f64) {
    let shown = span / unit_s;
    let step = tick_step(shown, 10.0);
    let _ = writeln!(html, "<line class=\"axis\" x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>", left + width);
    let mut tick = 0.0;
    let mut n = 0u32;
    while tick <= shown * (1.0 + 1e-9) && n <= 100 {
        let x = left + tick / shown.max(f64::MIN_POSITIVE) * width;
        let _ = writeln!(
            html,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{y}\"/>\
             <line class=\"axis\" x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{}\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            y + 4.0,
            y + 16.0,
            tick_label(tick)
        );
        n += 1;
        tick = f64::from(n) * step;
    }
}

fn timeline_section(html: &mut String, timeline: &Timeline) {
    html.push_str("<h2>Timeline</h2>\n");
    let lanes = timeline.lanes_in_order();
    if lanes.is_empty() {
        html.push_str("<p class=\"note\">No process has a record.</p>\n");
        return;
    }
    let bars = timeline.bars();
    let drawn = !timeline.too_many_bars() && bars.len() <= MAX_PAGE_BARS;
    let _ = writeln!(
        html,
        "<p class=\"legend\">One lane per worker, one bar per process; point at a bar for its id, parameters, \
         duration, status and worker.<span style=\"background:#2e8b57\"></span>finished\
         <span style=\"background:#cd2626\"></span>crashed<span style=\"background:#e69114\"></span>timed out</p>"
    );
    if !drawn {
        let _ = writeln!(
            html,
            "<p class=\"note\">More than {MAX_PAGE_BARS} processes: the timeline draws no bars (the histogram and \
             tables below count every process).</p>"
        );
    }
    let mut row_of = vec![0usize; lanes.len()];
    for (row, lane) in lanes.iter().enumerate() {
        row_of[lane.lane as usize] = row;
    }
    let lane_h = (LANES_HEIGHT / lanes.len() as f64).clamp(2.0, 18.0);
    let labelled = lane_h >= 9.0;
    let label_w = if labelled {
        (lanes.iter().map(|l| l.label.chars().count()).max().unwrap_or(0) as f64 * 6.5 + 12.0).clamp(60.0, 360.0)
    } else {
        60.0
    };
    let (left, top) = (label_w, 6.0);
    let width = WIDTH - left - 20.0;
    let lanes_h = lane_h * lanes.len() as f64;
    let height = top + lanes_h + 44.0;
    let (t0, t1) = timeline.span();
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let (unit, unit_s) = time_unit(span);
    let _ = writeln!(
        html,
        "<svg id=\"timeline\" viewBox=\"0 0 {WIDTH} {height:.1}\" role=\"img\" aria-label=\"Processes over time\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (row, lane) in lanes.iter().enumerate() {
        let y = top + row as f64 * lane_h;
        if row % 2 == 0 {
            let _ = writeln!(
                html,
                "<rect class=\"lane\" x=\"{left}\" y=\"{y:.2}\" width=\"{width}\" height=\"{lane_h:.2}\"/>"
            );
        }
        if labelled {
            let _ = writeln!(
                html,
                "<text x=\"{:.1}\" y=\"{:.2}\" text-anchor=\"end\"><title>{}</title>{}</text>",
                left - 6.0,
                y + lane_h / 2.0 + 4.0,
                escape(&lane.full),
                escape(&lane.label)
            );
        }
    }
    if drawn {
        let mut full_of = vec![""; lanes.len()];
        for lane in &lanes {
            full_of[lane.lane as usize] = lane.full.as_str();
        }
        let scale = width / span;
        for bar in bars {
            let row = row_of[bar.lane as usize] as f64;
            let x = left + (bar.start - t0) * scale;
            // At least a unit wide, so instant processes still show.
            let w = (f64::from(bar.duration) * scale).max(1.0);
            let worker = full_of[bar.lane as usize];
            let params = if bar.params.is_empty() { String::new() } else { format!(" · {}", bar.params) };
            let _ = writeln!(
                html,
                "<rect class=\"bar {}\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{w:.2}\" height=\"{:.2}\">\
                 <title>#{}{} · {} · {} · {}</title></rect>",
                status_class(bar.status),
                top + row * lane_h + lane_h * 0.1,
                lane_h * 0.8,
                bar.id,
                escape(&params),
                duration_text(f64::from(bar.duration)),
                status_name(bar.status),
                escape(worker)
            );
        }
    }
    x_axis(html, left, width, top, top + lanes_h, span, unit_s);
    let axis_name = match unit {
        "s" => "seconds since the first process started",
        "min" => "minutes since the first process started",
        _ => "hours since the first process started",
    };
    let _ = writeln!(
        html,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{axis_name}</text>\n</svg>",
        left + width / 2.0,
        top + lanes_h + 36.0
    );
}

fn histogram_section(html: &mut String, timeline: &Timeline) {
    html.push_str("<h2>Durations</h2>\n");
    let (longest, counts) = timeline.histogram();
    if counts.is_empty() {
        html.push_str("<p class=\"note\">No process has a record.</p>\n");
        return;
    }
    let highest = f64::from(counts.iter().copied().max().unwrap_or(1).max(1));
    let (left, top, plot_h) = (60.0, 10.0, 200.0);
    let width = WIDTH - left - 20.0;
    let height = top + plot_h + 44.0;
    let bin_w = width / counts.len() as f64;
    let bin_s = longest.max(1e-9) / counts.len() as f64;
    let _ = writeln!(
        html,
        "<svg id=\"histogram\" viewBox=\"0 0 {WIDTH} {height:.1}\" role=\"img\" aria-label=\"Durations\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    // The count axis: 0, the highest count, and a tick between.
    let y_step = tick_step(highest, 4.0).max(1.0);
    let mut tick = 0.0;
    while tick <= highest {
        let y = top + plot_h - tick / highest * plot_h;
        let _ = writeln!(
            html,
            "<line class=\"grid\" x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + width,
            left - 6.0,
            y + 4.0,
            tick_label(tick)
        );
        tick += y_step;
    }
    let _ = writeln!(html, "<line class=\"axis\" x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\"/>", top + plot_h);
    for (i, &count) in counts.iter().enumerate().filter(|(_, &c)| c > 0) {
        let h = f64::from(count) / highest * plot_h;
        let _ = writeln!(
            html,
            "<rect class=\"bin\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{h:.2}\">\
             <title>{} to {}: {count} process{}</title></rect>",
            left + i as f64 * bin_w + 1.0,
            top + plot_h - h,
            (bin_w - 2.0).max(1.0),
            duration_text(i as f64 * bin_s),
            duration_text((i + 1) as f64 * bin_s),
            if count == 1 { "" } else { "es" }
        );
    }
    x_axis(html, left, width, top, top + plot_h, longest.max(1e-9), 1.0);
    let _ = writeln!(
        html,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">duration (seconds); bar height: processes</text>\n</svg>",
        left + width / 2.0,
        top + plot_h + 36.0
    );
}

fn workers_section(html: &mut String, report: &RunReport) {
    let _ = writeln!(
        html,
        "<h2>Utilisation per worker</h2>\n<p>{:.1}% over {} workers: the time each was busy running processes, of \
         the wall time.</p>",
        100.0 * report.utilisation(),
        report.workers.len()
    );
    if report.workers.is_empty() {
        return;
    }
    html.push_str(
        "<table id=\"workers\">\n<tr><th>worker</th><th class=\"num\">processes</th><th class=\"num\">busy</th>\
         <th class=\"num\">share</th><th></th></tr>\n",
    );
    for WorkerLoad { name, processes, busy_s } in &report.workers {
        let share = if report.wall_s > 0.0 { (100.0 * busy_s / report.wall_s).min(100.0) } else { 0.0 };
        let _ = writeln!(
            html,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{processes}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{share:.1}%</td><td><div class=\"meter\"><div style=\"width:{share:.1}%\"></div></div>\
             </td></tr>",
            escape(name),
            duration_text(*busy_s)
        );
    }
    html.push_str("</table>\n");
}

fn crashes_section(html: &mut String, report: &RunReport) {
    html.push_str("<h2>Crashes and timeouts</h2>\n");
    if report.crash_groups.is_empty() {
        html.push_str("<p class=\"note\">No process crashed or timed out.</p>\n");
        return;
    }
    html.push_str(
        "<table id=\"crashes\">\n<tr><th class=\"num\">processes</th><th>reason</th><th>stderr</th>\
         <th>first ids</th></tr>\n",
    );
    for group in &report.crash_groups {
        let ids: Vec<String> = group.ids.iter().map(|id| format!("#{id}")).collect();
        let more = if group.count > group.ids.len() as u64 { ", …" } else { "" };
        let _ = writeln!(
            html,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}{more}</td></tr>",
            group.count,
            escape(&group.reason),
            escape(group.stderr_line.as_deref().unwrap_or("")),
            ids.join(", ")
        );
    }
    html.push_str("</table>\n");
}

fn slowest_section(html: &mut String, report: &RunReport) {
    html.push_str("<h2>Slowest processes</h2>\n");
    if report.slowest.is_empty() {
        html.push_str("<p class=\"note\">No process has a record.</p>\n");
        return;
    }
    html.push_str("<table id=\"slowest\">\n<tr><th class=\"num\">id</th><th class=\"num\">duration</th><th>parameters</th></tr>\n");
    for (id, seconds, params) in &report.slowest {
        let _ = writeln!(
            html,
            "<tr><td class=\"num\">#{id}</td><td class=\"num\">{}</td><td class=\"mono\">{}</td></tr>",
            duration_text(*seconds),
            escape(params)
        );
    }
    html.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Tally;
    use crate::{Location, Params, ProcessRecord, Value};

    fn record(id: u64, worker: &str, status: Status, reason: Option<&str>) -> ProcessRecord {
        ProcessRecord {
            id,
            run: 0,
            params: Params::from_iter([("name".to_owned(), Value::Str(format!("<b>{id}</b>")))]),
            status,
            output: Value::Null,
            reason: reason.map(str::to_owned),
            stderr_tail: reason.map(|_| "line one\nTraceback: <oops> & more\n".to_owned()),
            attempts: 1,
            started_at: 1000.0 + id as f64,
            duration_s: 0.5 + id as f64,
            location: Location { host: "node".into(), worker: worker.into() },
        }
    }

    fn page(records: &[ProcessRecord]) -> String {
        let mut tally = Tally::new(PAGE_SLOWEST);
        let mut timeline = Timeline::default();
        for r in records {
            tally.add(r);
            timeline.add(r);
        }
        for r in records {
            timeline.count(r);
        }
        render(PageHeading { name: "op<&>", dir: Path::new("/r/op/1") }, &tally.finish(), &timeline)
    }

    #[test]
    fn every_process_is_a_bar_with_its_tooltip_and_text_is_escaped() {
        let records = [
            record(0, "thread-10", Status::Finished, None),
            record(1, "thread-2", Status::Crashed, Some("exit <1>")),
            record(2, "thread-2", Status::TimedOut, Some("timed out after 1 s")),
        ];
        let html = page(&records);
        assert_eq!(html.matches("<rect class=\"bar ").count(), 3, "{html}");
        assert!(
            html.contains("<title>#1 · name=&lt;b&gt;1&lt;/b&gt; · 1.50 s · crashed · node/thread-2</title>"),
            "{html}"
        );
        assert!(html.contains("class=\"bar timed_out\""), "{html}");
        assert!(html.contains("taskfarm: op&lt;&amp;&gt;"), "{html}");
        assert!(html.contains("exit &lt;1&gt;") && html.contains("Traceback: &lt;oops&gt; &amp; more"), "{html}");
        assert!(!html.contains("name=<b>") && !html.contains("<script"), "no markup from the data, no script");
        // Lanes in natural order: thread-2's label comes before thread-10's.
        let two = html.find(">thread-2</text>").expect("thread-2's label");
        let ten = html.find(">thread-10</text>").expect("thread-10's label");
        assert!(two < ten, "{html}");
        // The summary counts a timed-out process as timed out, not crashed.
        assert!(html.contains("<div class=\"card crashed\"><b>1</b>crashed</div>"), "{html}");
        assert!(html.contains("<div class=\"card timed_out\"><b>1</b>timed out</div>"), "{html}");
    }

    #[test]
    fn a_huge_run_draws_no_bars_but_counts_every_process() {
        let records: Vec<ProcessRecord> =
            (0..MAX_PAGE_BARS as u64 + 1).map(|id| record(id, "thread-0", Status::Finished, None)).collect();
        let html = page(&records);
        assert_eq!(html.matches("<rect class=\"bar ").count(), 0);
        assert!(html.contains(&format!("More than {MAX_PAGE_BARS} processes")));
        assert!(html.contains(&format!("<b>{}</b>processes recorded", MAX_PAGE_BARS + 1)), "the summary counts all");
        assert!(html.len() < 200_000, "{} bytes", html.len());
    }

    #[test]
    fn durations_and_ticks_read_well() {
        assert_eq!(duration_text(0.01234), "0.012 s");
        assert_eq!(duration_text(3.4), "3.40 s");
        assert_eq!(duration_text(125.0), "2 min 05 s");
        assert_eq!(duration_text(3.0 * 3600.0 + 120.0), "3 h 02 min");
        assert_eq!(tick_step(10.0, 10.0), 1.0);
        assert_eq!(tick_step(0.37, 10.0), 0.05);
        assert_eq!(tick_step(7300.0, 10.0), 1000.0);
        assert_eq!(tick_label(0.1 + 0.2), "0.3");
        assert_eq!(tick_label(150.0), "150");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(0.00001), "0.00001");
        assert_eq!(tick_label(-0.0), "0");
    }
}
