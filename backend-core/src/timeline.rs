//! `timeline.svg`: which worker ran which process when (one lane per worker, one bar per
//! process, coloured by status) and a histogram of process durations. Written at
//! consolidation from the journal's records, in two passes (see [`Timeline`]), so its memory
//! does not grow with the number of processes.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::report::natural_cmp;
use crate::{Error, Location, ProcessRecord, Result, Status};

/// Above this many processes the timeline shows only the histogram: a bar per process would
/// make a file no browser can show.
pub const MAX_BARS: usize = 50_000;

/// The fill of a finished process's bar.
pub const FINISHED_COLOUR: RGBColor = RGBColor(46, 139, 87);
/// The fill of a crashed process's bar.
pub const CRASHED_COLOUR: RGBColor = RGBColor(205, 38, 38);
/// The fill of a timed-out process's bar.
pub const TIMED_OUT_COLOUR: RGBColor = RGBColor(230, 145, 20);

/// Bars of the histogram of durations, from 0 to the longest.
const BINS: usize = 30;

/// One process's bar: which lane, when, how long, how it ended, and what the page's tooltip
/// says of it (its id and parameters).
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub(crate) lane: u32,
    pub(crate) start: f64,
    pub(crate) duration: f32,
    pub(crate) status: Status,
    pub(crate) id: u64,
    pub(crate) params: Box<str>,
}

/// What the picture needs of a run, gathered one record at a time in two passes over the
/// records: [`add`](Self::add) each (the lanes, the time span, the longest duration and a bar
/// per process while there are at most [`MAX_BARS`]), then [`count`](Self::count) each (the
/// histogram's bins, which need the longest duration). Its size is bounded whatever the
/// number of processes, so a million are drawn without holding their records.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Lane numbers (in order of appearance) by host, then worker.
    lanes: BTreeMap<String, BTreeMap<String, u32>>,
    /// How many lanes there are.
    lane_count: u32,
    bars: Vec<Bar>,
    too_many_bars: bool,
    longest: f64,
    counts: Vec<u32>,
    first_start: Option<f64>,
    last_end: Option<f64>,
}

impl Timeline {
    /// First pass: adds one process's record.
    pub fn add(&mut self, r: &ProcessRecord) {
        let Location { host, worker } = &r.location;
        let lane = match self.lanes.get(host.as_str()).and_then(|workers| workers.get(worker.as_str())) {
            Some(&lane) => lane,
            None => {
                let lane = self.lane_count;
                self.lane_count += 1;
                self.lanes.entry(host.clone()).or_default().insert(worker.clone(), lane);
                lane
            }
        };
        self.longest = self.longest.max(r.duration_s);
        self.first_start = Some(self.first_start.map_or(r.started_at, |t| t.min(r.started_at)));
        let end = r.started_at + r.duration_s;
        self.last_end = Some(self.last_end.map_or(end, |t| t.max(end)));
        if self.too_many_bars {
            return;
        }
        if self.bars.len() == MAX_BARS {
            self.too_many_bars = true;
            self.bars = Vec::new();
            return;
        }
        self.bars.push(Bar {
            lane,
            start: r.started_at,
            duration: r.duration_s as f32,
            status: r.status,
            id: r.id,
            params: crate::report::params_text(&r.params).into_boxed_str(),
        });
    }

    /// Second pass, after every record was added: counts one process's duration in the
    /// histogram.
    pub fn count(&mut self, r: &ProcessRecord) {
        if self.counts.is_empty() {
            self.counts = vec![0; BINS];
        }
        let bin = (r.duration_s / self.longest.max(1e-9) * BINS as f64) as usize;
        self.counts[bin.min(BINS - 1)] += 1;
    }

    /// Draws `timeline.svg` into `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        draw(path, self).map_err(|e| Error::io("draw", path, std::io::Error::other(e.to_string())))
    }

    /// The lanes in the order they are drawn — by host, then worker, in natural order
    /// (`thread-2` before `thread-10`) — each with its label (the worker, or `host/worker`
    /// when there are several hosts), its full name `host/worker` and its lane number.
    pub(crate) fn lanes_in_order(&self) -> Vec<LaneLabel> {
        let mut hosts: Vec<&String> = self.lanes.keys().collect();
        hosts.sort_by(|a, b| natural_cmp(a, b));
        let several_hosts = hosts.len() > 1;
        let mut lanes = Vec::with_capacity(self.lane_count as usize);
        for host in hosts {
            let mut workers: Vec<(&String, &u32)> = self.lanes[host].iter().collect();
            workers.sort_by(|a, b| natural_cmp(a.0, b.0));
            for (worker, &lane) in workers {
                let full = format!("{host}/{worker}");
                let label = if several_hosts { full.clone() } else { worker.clone() };
                lanes.push(LaneLabel { label, full, lane });
            }
        }
        lanes
    }

    /// The bars kept (none when there were more than [`MAX_BARS`] processes).
    pub(crate) fn bars(&self) -> &[Bar] {
        &self.bars
    }

    /// Whether there were more than [`MAX_BARS`] processes, so no bar was kept.
    pub(crate) fn too_many_bars(&self) -> bool {
        self.too_many_bars
    }

    /// The first start and the last end, in seconds since the epoch (0, 0 without records).
    pub(crate) fn span(&self) -> (f64, f64) {
        (self.first_start.unwrap_or(0.0), self.last_end.unwrap_or(0.0))
    }

    /// The histogram: the longest duration and the count of each of its equal bins from 0
    /// to the longest (empty before the second pass).
    pub(crate) fn histogram(&self) -> (f64, &[u32]) {
        (self.longest, &self.counts)
    }
}

/// One lane of the timeline: what it is called, and which lane number its bars carry.
#[derive(Debug, Clone)]
pub(crate) struct LaneLabel {
    /// Shown beside the lane.
    pub(crate) label: String,
    /// `host/worker`.
    pub(crate) full: String,
    /// The number bars of this lane carry.
    pub(crate) lane: u32,
}

/// The unit of a time axis spanning `span` seconds — seconds up to 5 minutes, then minutes
/// up to 3 hours, then hours — as its name and its length in seconds.
pub(crate) fn time_unit(span: f64) -> (&'static str, f64) {
    if span <= 300.0 {
        ("s", 1.0)
    } else if span <= 3.0 * 3600.0 {
        ("min", 60.0)
    } else {
        ("h", 3600.0)
    }
}

/// A tick label: the value with at most 4 significant decimals and no trailing zeros
/// (`0.3`, not `0.30000000000000004`; `12`, not `12.000`).
pub(crate) fn tick_label(value: f64) -> String {
    let magnitude = value.abs();
    let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
        0
    } else {
        (3 - magnitude.log10().floor() as i32).clamp(1, 6) as usize
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

fn draw(path: &Path, timeline: &Timeline) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let lanes = timeline.lanes_in_order();
    let labels: Vec<String> = lanes.iter().map(|l| l.label.clone()).collect();
    // The y axis grows upwards: the first lane in order gets the highest value, so lanes
    // read top to bottom in natural order.
    let top_row = lanes.len().saturating_sub(1);
    let mut row_of = vec![0usize; lanes.len()];
    for (row, lane) in lanes.iter().enumerate() {
        row_of[lane.lane as usize] = top_row - row;
    }
    let (t0, t1) = timeline.span();
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let (unit, unit_s) = time_unit(span);
    // Room for the longest label at about 7 pixels a character.
    let label_px = (labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32 * 7 + 20).clamp(80, 400);

    let lane_px = 22u32;
    let timeline_px = 120 + lane_px * labels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1200, timeline_px + 320)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(timeline_px);

    let lanes_f = labels.len().max(1) as f64;
    let caption = if timeline.too_many_bars {
        format!("More than {MAX_BARS} processes: only the histogram of durations is drawn")
    } else {
        "Processes over time, one lane per worker (green: finished, red: crashed, orange: timed out)".to_owned()
    };
    let mut chart = ChartBuilder::on(&top)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(label_px)
        .build_cartesian_2d(0f64..span * 1.02, -0.5f64..lanes_f - 0.5)?;
    let x_desc = match unit {
        "s" => "seconds since the first process started".to_owned(),
        "min" => "minutes since the first process started".to_owned(),
        _ => "hours since the first process started".to_owned(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .x_labels(10)
        .x_label_formatter(&|x| tick_label(x / unit_s))
        .y_labels(labels.len().max(1) * 2 + 1)
        .y_label_formatter(&|y| {
            // One label per lane, at the lane's centre (whole numbers).
            let i = y.round();
            if (y - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            top_row.checked_sub(i as usize).and_then(|row| labels.get(row)).cloned().unwrap_or_default()
        })
        .draw()?;
    chart.draw_series(timeline.bars.iter().map(|bar| {
        let lane = row_of[bar.lane as usize] as f64;
        let start = bar.start - t0;
        // A bar at least a pixel wide, so instant processes still show.
        let end = (start + f64::from(bar.duration)).max(start + span / 1200.0);
        let colour = match bar.status {
            Status::Finished => FINISHED_COLOUR,
            Status::Crashed => CRASHED_COLOUR,
            Status::TimedOut => TIMED_OUT_COLOUR,
        };
        Rectangle::new([(start, lane - 0.35), (end, lane + 0.35)], colour.filled())
    }))?;

    // Histogram of durations, BINS bins from 0 to the longest.
    let bins = BINS;
    let longest = timeline.longest.max(1e-9);
    let counts = &timeline.counts;
    let highest = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut hist = ChartBuilder::on(&bottom)
        .caption("Process durations", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(label_px)
        .build_cartesian_2d(0f64..longest, 0u32..highest + highest / 10 + 1)?;
    hist.configure_mesh()
        .disable_x_mesh()
        .x_desc("duration (s)")
        .y_desc("processes")
        .x_labels(10)
        .x_label_formatter(&|x| tick_label(*x))
        .draw()?;
    let width = longest / bins as f64;
    hist.draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width * 0.9, c)], BLUE.mix(0.6).filled())
    }))?;
    root.present()?;
    Ok(())
}
