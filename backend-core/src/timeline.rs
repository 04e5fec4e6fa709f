//! `timeline.svg`: which worker ran which process when (one lane per worker, one bar per
//! process, coloured by status) and a histogram of process durations. Written at
//! consolidation from the journal's records.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::{Error, ProcessRecord, Result, Status};

/// Above this many processes the timeline shows only the histogram: a bar per process would
/// make a file no browser can show.
pub const MAX_BARS: usize = 50_000;

/// The fill of a finished process's bar.
pub const FINISHED_COLOUR: RGBColor = RGBColor(46, 139, 87);
/// The fill of a crashed process's bar.
pub const CRASHED_COLOUR: RGBColor = RGBColor(205, 38, 38);
/// The fill of a timed-out process's bar.
pub const TIMED_OUT_COLOUR: RGBColor = RGBColor(230, 145, 20);

/// Draws `timeline.svg` for `records` into `path`.
pub fn write_timeline(path: &Path, records: &[ProcessRecord]) -> Result<()> {
    draw(path, records).map_err(|e| Error::io("draw", path, std::io::Error::other(e.to_string())))
}

fn draw(path: &Path, records: &[ProcessRecord]) -> std::result::Result<(), Box<dyn std::error::Error>> {
    // Lanes: one per (host, worker), in a stable order.
    let mut lanes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in records {
        lanes.entry((r.location.host.clone(), r.location.worker.clone())).or_insert(0);
    }
    for (i, lane) in lanes.values_mut().enumerate() {
        *lane = i;
    }
    let hosts: std::collections::BTreeSet<&str> = lanes.keys().map(|(h, _)| h.as_str()).collect();
    let label = |host: &str, worker: &str| if hosts.len() > 1 { format!("{host}/{worker}") } else { worker.to_owned() };
    let labels: Vec<String> = lanes.keys().map(|(h, w)| label(h, w)).collect();
    let t0 = records.iter().map(|r| r.started_at).fold(f64::INFINITY, f64::min);
    let t1 = records.iter().map(|r| r.started_at + r.duration_s).fold(f64::NEG_INFINITY, f64::max);
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };

    let lane_px = 22u32;
    let timeline_px = 120 + lane_px * labels.len().max(1) as u32;
    let root = SVGBackend::new(path, (1200, timeline_px + 320)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(timeline_px);

    let lanes_f = labels.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            "Processes over time, one lane per worker (green: finished, red: crashed, orange: timed out)",
            ("sans-serif", 18),
        )
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
    if records.len() <= MAX_BARS {
        chart.draw_series(records.iter().map(|r| {
            let lane = lanes[&(r.location.host.clone(), r.location.worker.clone())] as f64;
            let start = r.started_at - t0;
            // A bar at least a pixel wide, so instant processes still show.
            let end = (start + r.duration_s).max(start + span / 1200.0);
            let colour = match r.status {
                Status::Finished => FINISHED_COLOUR,
                Status::Crashed => CRASHED_COLOUR,
                Status::TimedOut => TIMED_OUT_COLOUR,
            };
            Rectangle::new([(start, lane - 0.35), (end, lane + 0.35)], colour.filled())
        }))?;
    }

    // Histogram of durations, 30 bins from 0 to the longest.
    let bins = 30usize;
    let longest = records.iter().map(|r| r.duration_s).fold(0.0f64, f64::max).max(1e-9);
    let mut counts = vec![0u32; bins];
    for r in records {
        let bin = ((r.duration_s / longest) * bins as f64) as usize;
        counts[bin.min(bins - 1)] += 1;
    }
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
