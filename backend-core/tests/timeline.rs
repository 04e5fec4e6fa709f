//! `timeline.svg` is written at consolidation, parses as SVG, and has one bar per process.

use backend_core::results::files;
use backend_core::testing::{conformance_operation, Probe};
use backend_core::timeline::{CRASHED_COLOUR, FINISHED_COLOUR};
use backend_core::{Backend, SerialBackend};

fn fill_of(colour: plotters::style::RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", colour.0, colour.1, colour.2)
}

#[test]
fn one_bar_per_process_coloured_by_status() {
    let base = tempfile::tempdir().unwrap();
    let summary = SerialBackend::<Probe>::default().run(conformance_operation(base.path())).unwrap();
    let text = std::fs::read_to_string(summary.dir.join(files::TIMELINE_SVG)).unwrap();
    let svg = roxmltree::Document::parse(&text).expect("timeline.svg parses as XML");
    assert_eq!(svg.root_element().tag_name().name(), "svg");
    let bars = |colour| {
        let fill = fill_of(colour);
        svg.descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill").is_some_and(|f| f.eq_ignore_ascii_case(&fill)))
            .count() as u64
    };
    assert_eq!(bars(FINISHED_COLOUR), summary.finished, "one green bar per finished process");
    assert_eq!(bars(CRASHED_COLOUR), summary.crashed, "one red bar per crashed process");
}

#[test]
fn lanes_read_top_to_bottom_in_natural_order_with_short_tick_labels() {
    use backend_core::timeline::Timeline;
    use backend_core::{Location, Params, ProcessRecord, Status, Value};
    let mut timeline = Timeline::default();
    let records: Vec<ProcessRecord> = ["thread-10", "thread-2", "thread-1"]
        .iter()
        .enumerate()
        .map(|(id, worker)| ProcessRecord {
            id: id as u64,
            run: 0,
            params: Params::new(),
            status: Status::Finished,
            output: Value::Null,
            reason: None,
            stderr_tail: None,
            attempts: 1,
            started_at: 100.0 + id as f64 * 0.1,
            duration_s: 0.3,
            location: Location { host: "h".into(), worker: (*worker).into() },
        })
        .collect();
    records.iter().for_each(|r| timeline.add(r));
    records.iter().for_each(|r| timeline.count(r));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("timeline.svg");
    timeline.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let svg = roxmltree::Document::parse(&text).expect("timeline.svg parses as XML");
    let texts: Vec<(String, f64)> = svg
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| Some((n.text()?.trim().to_owned(), n.attribute("y")?.parse().ok()?)))
        .collect();
    let y_of = |label: &str| texts.iter().find(|(t, _)| t == label).map(|(_, y)| *y).expect(label);
    assert!(y_of("thread-1") < y_of("thread-2") && y_of("thread-2") < y_of("thread-10"), "{texts:?}");
    // Tick labels are short numbers, never float noise such as 0.30000000000000004.
    for (t, _) in &texts {
        if t.parse::<f64>().is_ok() {
            assert!(t.len() <= 6, "tick label {t} in {texts:?}");
        }
    }
}
