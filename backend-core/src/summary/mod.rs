//! Statistics over the runs of each parameter point: `summary.csv`, and the `until`
//! condition of adaptive runs, which reads the same statistics.
//!
//! For an operation whose points have more than one run, consolidation writes `summary.csv`:
//! one row per parameter point (in the order of its first id), its parameters, how many runs
//! it has, how many finished and crashed, and for each numeric output field the count, mean,
//! sample standard deviation, standard error, and the half width and bounds of the 95 %
//! confidence interval of the mean (Student t with count − 1 degrees of freedom). Statistics
//! a count cannot give (a standard deviation of one value) are empty cells. When the run's
//! `operation.toml` has adaptive runs (`runs = { min, max, until }`), the row also says
//! whether the point converged or stopped at `max`.
//!
//! `stats.rs` holds the statistics, `until.rs` the condition of adaptive runs, `file.rs`
//! the pass of consolidation that writes `summary.csv` and its reader.

mod file;
mod stats;
mod until;

pub use file::{read_summary, CsvText, SummaryPass};
pub(crate) use stats::numeric_fields;
pub use stats::{PointStats, Stats, STATISTICS};
pub use until::{AdaptiveRuns, Until};

/// The file name of the summary in a result directory.
pub const SUMMARY_CSV: &str = "summary.csv";
