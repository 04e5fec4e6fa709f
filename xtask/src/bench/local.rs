//! The local backend's rows of the benchmark, from `local_bench`: learnt scheduling, and
//! efficiency against raw rayon and throughput.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::{figure, figures, learn_rows, output_of, Row, Target};

pub(super) fn learn_rows_local(program: &Path) -> Result<Vec<Row>> {
    let learning = figures(&output_of(Command::new(program).arg("learn"), "local_bench learn")?);
    let in_order = figures(&output_of(Command::new(program).arg("in-order"), "local_bench in-order")?);
    learn_rows("local (4 threads)", &learning, &in_order)
}

/// The straggler rows of the local backend (see [`straggler_rows`]).
pub(super) fn straggler_rows_local(program: &Path) -> Result<Vec<Row>> {
    let on = figures(&output_of(Command::new(program).arg("straggler"), "local_bench straggler")?);
    let off = figures(&output_of(Command::new(program).arg("straggler-off"), "local_bench straggler-off")?);
    super::straggler_rows("Local (4 threads)", &on, &off)
}

/// The efficiency row and the throughput row.
pub(super) fn local_rows(program: &Path) -> Result<Vec<Row>> {
    let f = figures(&output_of(&mut Command::new(program), "local_bench")?);
    let (raw, taskfarm, whole) =
        (figure(&f, "raw_rayon_s")?, figure(&f, "taskfarm_s")?, figure(&f, "taskfarm_whole_s")?);
    let tiny = figure(&f, "tiny_per_s")?;
    let row = Row::new(
        "Local, 100 us CPU-bound processes: efficiency vs raw rayon",
        format!("{taskfarm:.3}s ({whole:.3}s with stage-in + consolidation)"),
        format!("{raw:.3}s raw rayon par_iter"),
        raw / taskfarm,
        Target::AtLeast(0.95),
    );
    let throughput =
        Row::new("Local, 1 us processes: throughput", format!("{tiny:.0} proc/s"), "-".into(), tiny, Target::None);
    Ok(vec![row, throughput])
}
