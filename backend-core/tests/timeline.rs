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
    let summary = SerialBackend::<Probe>::new().run(conformance_operation(base.path())).unwrap();
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
