//! `report DIR` (counts, statuses, what is left, the summary rows; or JSON, or the HTML
//! page) and `validate SPEC` (what would run, nothing run).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use taskfarm::Count;

use super::{resume_command, EXIT_OK};
use crate::spec::Spec;
use crate::{Registry, WorkerError};

/// How many processes `validate` lists.
const SHOWN: usize = 5;

pub(super) fn report_run(
    registry: &Registry,
    dir: &std::path::Path,
    json: bool,
    html: bool,
) -> Result<u8, WorkerError> {
    let spec_path = dir.join(taskfarm::results::files::OPERATION);
    if !spec_path.is_file() || !dir.join(taskfarm::results::files::JOURNAL).is_file() {
        return Err(taskfarm::CoreError::NotARun { path: dir.to_owned(), missing: "operation.toml or journal" }.into());
    }
    taskfarm::results::check_format(dir)?;
    if html {
        let page = taskfarm::results::write_report_page(dir)?;
        let _ = writeln!(std::io::stdout().lock(), "{}", page.display());
        return Ok(EXIT_OK);
    }
    let spec = Spec::load(&spec_path, registry)?;
    let report = taskfarm::results::report::RunReport::from_dir(dir)?;
    let mut out = std::io::stdout().lock();
    if json {
        let holder = live_holder(dir)?;
        let count = spec.count_within(COUNT_BUDGET)?;
        let object = serde_json::json!({
            "run": dir,
            "operation": spec.name(),
            "kind": spec.kind(),
            "total": count.exact(),
            "total_at_least": count.at_least(),
            "missing_at_least": count.at_least().saturating_sub(report.recorded),
            "running": holder,
            "allocations": crate::allocation::allocations(dir),
            "report": report,
        });
        let _ = writeln!(out, "{object}");
        return Ok(EXIT_OK);
    }
    let _ = writeln!(out, "run: {} (operation `{}`, kind `{}`)", dir.display(), spec.name(), spec.kind());
    let _ = write!(out, "{report}");
    crate::chain::print_summary(dir, &mut out);
    if let Some(allocations) = crate::allocation::describe(dir) {
        let _ = writeln!(out, "{allocations}");
    }
    let count = spec.count_within(COUNT_BUDGET)?;
    let missing = count.at_least().saturating_sub(report.recorded);
    let resume = resume_command(dir, false);
    let total = describe_count(count);
    let adaptive_left = crate::chain::adaptive_points_left(&spec, dir).filter(|&n| n > 0);
    if let Some(holder) = live_holder(dir)? {
        let _ = writeln!(
            out,
            "running: the run is still going ({holder}); {missing} of {total} processes have no record yet"
        );
    } else if let Some(left) = adaptive_left {
        let _ = writeln!(out, "missing: {left} parameter points need more runs; to run them:\n  {resume}");
    } else if missing > 0 {
        let _ = writeln!(out, "missing: {missing} of {total} processes have no record; to run them:\n  {resume}");
    } else if count.exact().is_none() {
        let _ = writeln!(
            out,
            "{} processes recorded of {total}: whether any is missing is not known; to run those that are:\n  {resume}",
            report.recorded
        );
    } else if report.crashed > 0 {
        let _ = writeln!(out, "to run the crashed processes again:\n  {}", resume_command(dir, true));
    } else {
        let _ = writeln!(out, "complete: every process has a record");
    }
    Ok(EXIT_OK)
}

pub(super) fn validate(registry: &Registry, path: PathBuf, show: Option<usize>) -> Result<(), WorkerError> {
    let spec = crate::quick::load(Some(&path), &Default::default(), registry)?;
    let mut out = std::io::stdout().lock();
    let parameters =
        if spec.parameter_names().is_empty() { "none".to_owned() } else { spec.parameter_names().join(", ") };
    let _ = writeln!(out, "{}: operation `{}` of kind `{}`", path.display(), spec.name(), spec.kind());
    let _ = writeln!(out, "parameters: {parameters}");
    let count = spec.count_within(COUNT_BUDGET)?;
    let _ = writeln!(out, "processes: {} ({}){}", describe_count(count), spec.describe_runs(), removed(&spec, count));
    // Only processes counting met: finding more could take as long as counting did.
    let shown = count.at_least().min(show.unwrap_or(SHOWN) as u64);
    let kind = registry.get(spec.kind());
    for job in spec.into_operation().into_jobs().take(shown as usize) {
        let params: Vec<String> = job.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  #{} run {}: {}", job.id, job.run, params.join(" "));
        if show.is_some() {
            for line in
                kind.as_ref().map(|k| k.preview(&job.process.config, job.id, job.run, &job.params)).unwrap_or_default()
            {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    match count {
        Count::Exact(total) if total > shown => {
            let _ = writeln!(out, "  ... and {} more", total - shown);
        }
        Count::AtLeast { .. } => {
            let _ = writeln!(out, "  ... and more");
        }
        Count::Exact(_) => {}
    }
    let _ = writeln!(out, "ok: the spec is valid (nothing was run)");
    Ok(())
}

/// `; 20 combinations, 5 removed by the constraints` when constraints removed any.
fn removed(spec: &Spec, count: Count) -> String {
    match count {
        Count::Exact(n) => {
            let all = spec.unconstrained_len();
            let kept = n / u64::from(spec.runs().max(1));
            if all > kept {
                format!("; {all} combinations, {} removed by the constraints", all - kept)
            } else {
                String::new()
            }
        }
        Count::AtLeast { .. } => String::new(),
    }
}

/// How long `validate` and `report` count the processes of a constrained space.
const COUNT_BUDGET: Duration = Duration::from_secs(2);

/// `12`, or `at least 12 (counting stopped after 2 s: 10000 of 10^20 combinations examined)`.
fn describe_count(count: Count) -> String {
    match count {
        Count::Exact(n) => n.to_string(),
        Count::AtLeast { admitted, examined, of } => format!(
            "at least {admitted} (counting stopped after {} s: {examined} of {of} parameter combinations examined)",
            COUNT_BUDGET.as_secs()
        ),
    }
}

/// Which program writes the run in `dir` now, if any: the lock's say, or, for a writer on
/// another host, its status file's (see [`taskfarm::run_control::status::live_holder`]).
fn live_holder(dir: &std::path::Path) -> Result<Option<String>, WorkerError> {
    let status = taskfarm::run_control::status::RunStatus::read(dir)?;
    Ok(taskfarm::run_control::status::live_holder(dir, status.as_ref())?)
}
