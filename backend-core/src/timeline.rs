//! `timeline.svg`: which worker ran which process when (one lane per worker, one bar per
//! process, coloured by status) and a histogram of process durations. Written at
//! consolidation from the journal's records, in two passes (see [`Timeline`]), so its memory
//! does not grow with the number of processes.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

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

/// One process's bar: which lane, when, how long, how it ended.
#[derive(Debug, Clone, Copy)]
struct Bar {
    lane: u32,
    start: f64,
    duration: f32,
    status: Status,
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
        self.bars.push(Bar { lane, start: r.started_at, duration: r.duration_s as f32, status: r.status });
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
    pub fn write(self, path: &Path) -> Result<()> {
        draw(path, self).map_err(|e| Error::io("draw", path, std::io::Error::other(e.to_string())))
    }
}

fn draw(path: &Path, timeline: Timeline) -> std::result::Result<(), Box<dyn std::error::Error>> {
    // Lanes in a stable order (by host, then worker), whatever order they appeared in.
    let lanes: Vec<(&str, &str, u32)> = timeline
        .lanes
        .iter()
        .flat_map(|(host, workers)| workers.iter().map(move |(worker, &lane)| (host.as_str(), worker.as_str(), lane)))
        .collect();
    let several_hosts = timeline.lanes.len() > 1;
    let labels: Vec<String> = lanes
        .iter()
        .map(|&(host, worker, _)| if several_hosts { format!("{host}/{worker}") } else { worker.to_owned() })
        .collect();
    let mut row_of = vec![0usize; lanes.len()];
    for (row, &(_, _, lane)) in lanes.iter().enumerate() {
        row_of[lane as usize] = row;
    }
    let t0 = timeline.first_start.unwrap_or(0.0);
    let t1 = timeline.last_end.unwrap_or(0.0);
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };

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
        .y_label_area_size(140)
        .build_cartesian_2d(0f64..span * 1.02, -0.5f64..lanes_f - 0.5)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("seconds since the first process started")
        .y_labels(labels.len().max(1) * 2 + 1)
        .y_label_formatter(&|y| {
            // One label per lane, at the lane's centre (whole numbers).
            let i = y.round();
            if (y - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            labels.get(i as usize).cloned().unwrap_or_default()
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
    let counts = timeline.counts;
    let highest = counts.iter().copied().max().unwrap_or(1).max(1);
    let mut hist = ChartBuilder::on(&bottom)
        .caption("Process durations", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(140)
        .build_cartesian_2d(0f64..longest, 0u32..highest + highest / 10 + 1)?;
    hist.configure_mesh().disable_x_mesh().x_desc("duration (s)").y_desc("processes").draw()?;
    let width = longest / bins as f64;
    hist.draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width * 0.9, c)], BLUE.mix(0.6).filled())
    }))?;
    root.present()?;
    Ok(())
}
