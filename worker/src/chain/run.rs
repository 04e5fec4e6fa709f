//! Running a chain: each stage in order as a resumable run of its own directory, a stage
//! that reads another made from that stage's finished rows, and `--resume` of a chain
//! directory refused when the chain differs.
//!
//! Under MPI every rank runs the chain (SPMD): rank 0 as here, every other rank serving
//! one operation per stage ([`serve_stages`]). So that the ranks stay in step, rank 0 runs
//! every stage under MPI, one without rows to read as an operation of no processes, and
//! when it fails between two stages it releases the waiting ranks before it returns.

use std::io::Write;
use std::path::Path;

use indexmap::IndexMap;
use taskfarm::{create_backend, BackendOptions, Operation, Params, ProgressMode, Summary, Value};

use super::load::{parse_stage, read_document, spec_message, with_settings};
use super::{Chain, ChainArgs, Source, Stage, CHAIN_TOML};
use crate::{Registry, Spec, SpecProcess, WorkerError};

/// The columns of `results.jsonl` that are not a row's parameters or outputs.
const FIXED_COLUMNS: [&str; 8] = ["status", "duration_s", "started_at", "host", "worker", "attempts", "reason", "id"];

/// A row of `results.jsonl`.
type Row = serde_json::Map<String, serde_json::Value>;

/// `run CHAIN [--resume CHAIN_DIR]`: runs every stage in order, each as a resumable run of
/// its own directory; returns the exit status (1 when a process of some stage crashed).
pub fn run(registry: &Registry, path: &Path, args: ChainArgs) -> Result<u8, WorkerError> {
    let chain = Chain::load(path, registry)?;
    run_chain(registry, &chain, args)
}

/// Runs a loaded or built chain (see [`run`]).
pub fn run_chain(registry: &Registry, chain: &Chain, args: ChainArgs) -> Result<u8, WorkerError> {
    // The kinds the stages' processes are run by (harmless if installed already).
    registry.install();
    let backend_name = args.backend.clone().or(chain.backend.clone()).unwrap_or_else(|| "local".into());
    let mpi = backend_name == "mpi";
    if mpi && crate::cli::is_mpi_worker_rank() {
        return serve_stages(chain, &args);
    }
    let ran = lead_chain(registry, chain, &backend_name, &args);
    if mpi {
        if let Err(Unreleased(_)) = &ran {
            release_workers(chain, &args);
        }
    }
    ran.map_err(|(Unreleased(e) | Released(e))| e)
}

/// An error of the coordinating rank, and whether the worker ranks still wait for it
/// (under MPI; elsewhere the two mean the same).
enum Failure {
    /// The workers wait for the next stage.
    Unreleased(WorkerError),
    /// The MPI backend already ended the workers (or nothing waits).
    Released(WorkerError),
}
use Failure::{Released, Unreleased};

impl<E: Into<WorkerError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Unreleased(error.into())
    }
}

/// Runs the chain on the coordinating program (rank 0 under MPI).
fn lead_chain(registry: &Registry, chain: &Chain, backend_name: &str, args: &ChainArgs) -> Result<u8, Failure> {
    let mpi = backend_name == "mpi";
    let as_run = chain.as_run();
    let dir = match &args.resume {
        Some(dir) => {
            check_same_chain(dir, &as_run)?;
            dir.clone()
        }
        None => {
            let dir = taskfarm::results::create_result_dir(&args.results, &chain.name)?;
            write_chain_toml(&dir, &as_run)?;
            dir
        }
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let mut out = std::io::stdout().lock();
    let mut crashed = false;
    for stage in &chain.stages {
        let stage_dir = dir.join(&stage.name);
        let operation = match stage_spec(chain, stage, &dir, registry)? {
            Some(spec) => spec.into_operation(),
            None if mpi => {
                let _ = writeln!(out, "stage `{}`: no finished row to read: no processes", stage.name);
                no_processes(&stage.name)?
            }
            None => {
                let _ = writeln!(out, "stage `{}`: no finished row to read: skipped", stage.name);
                continue;
            }
        };
        let in_stage =
            |e: WorkerError| WorkerError::Chain { path: dir.clone(), message: format!("stage `{}`: {e}", stage.name) };
        prepare_stage(&operation, &stage_dir, backend_name).map_err(in_stage)?;
        let summary = run_stage(operation, &stage_dir, backend_name, args).map_err(|e| Released(in_stage(e)))?;
        if !summary.is_report() {
            return Ok(crate::EXIT_OK);
        }
        let _ = writeln!(
            out,
            "stage `{}`: {} finished, {} crashed{} in {:.2} s on the {} backend",
            stage.name,
            summary.finished,
            summary.crashed,
            summary.total.map(|t| format!(" of {t}")).unwrap_or_default(),
            summary.wall.as_secs_f64(),
            summary.backend
        );
        crashed |= summary.crashed > 0;
        if summary.interrupted || summary.missing() > 0 {
            let _ = writeln!(out, "interrupted: what finished is in the chain's directory; to finish the chain:");
            let _ = writeln!(out, "  {}", resume_command(&dir));
            return Ok(match (summary.interrupted, taskfarm::run_control::stop_exit_status()) {
                (true, Some(code)) => code,
                (true, None) => crate::EXIT_SIGINT,
                (false, _) => crate::cli::EXIT_UNFINISHED,
            });
        }
    }
    let _ = writeln!(out, "chain directory: {}", dir.display());
    Ok(if crashed { crate::EXIT_CRASHED } else { crate::EXIT_OK })
}

/// The command that finishes the chain in `dir`.
pub(super) fn resume_command(dir: &Path) -> String {
    let program = std::env::args().next().unwrap_or_else(|| "taskfarm-worker".into());
    format!("{program} run {} --resume {}", dir.join(CHAIN_TOML).display(), dir.display())
}

/// The spec of a stage as it runs: its own, or one setting per row or group of its source's
/// finished rows (`None` when the source has none).
fn stage_spec(chain: &Chain, stage: &Stage, dir: &Path, registry: &Registry) -> Result<Option<Spec>, WorkerError> {
    let Some(from) = stage.source.from() else { return chain.sweep_spec(stage, registry).map(Some) };
    let bad = |message: String| WorkerError::Chain {
        path: dir.to_owned(),
        message: format!("stage `{}`: {message}", stage.name),
    };
    let from_dir = dir.join(from);
    let rows = taskfarm::results::read_results_jsonl(&from_dir).map_err(|e| bad(e.to_string()))?;
    let (finished, failed): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|row| row.get("status").and_then(|s| s.as_str()) == Some("finished"));
    if !failed.is_empty() {
        let ids: Vec<String> = failed.iter().take(5).filter_map(|r| r.get("id")).map(|id| id.to_string()).collect();
        if stage.require_all {
            return Err(bad(format!(
                "it requires every row of stage `{from}` to have finished, but {} crashed (ids {}): run them again \
                 with `--resume` after a fix, or leave out `require = \"all\"`",
                failed.len(),
                ids.join(", ")
            )));
        }
        println!(
            "stage `{}`: {} crashed rows of stage `{from}` skipped (ids {})",
            stage.name,
            failed.len(),
            ids.join(", ")
        );
    }
    if finished.is_empty() {
        return Ok(None);
    }
    let value = |v: &serde_json::Value| serde_json::from_value::<Value>(v.clone()).ok();
    let settings: Vec<Value> = match &stage.source {
        Source::Sweep => Vec::new(),
        Source::Rows(_) => finished
            .iter()
            .map(|row| {
                let mut setting = Params::new();
                for (key, cell) in row {
                    let key = match key.as_str() {
                        "id" => "from_id",
                        "run" => "from_run",
                        k if FIXED_COLUMNS.contains(&k) => continue,
                        k => k,
                    };
                    if let Some(v) = value(cell).filter(|v| !v.holds_null()) {
                        setting.insert(key.to_owned(), v);
                    }
                }
                Value::Map(setting)
            })
            .collect(),
        Source::Groups(_, by) => {
            let mut groups: IndexMap<String, (Params, Vec<&Row>)> = IndexMap::new();
            for row in &finished {
                let mut key = Params::new();
                for column in by {
                    let Some(cell) = row.get(column).and_then(value) else {
                        let columns: Vec<&str> =
                            row.keys().map(String::as_str).filter(|k| !FIXED_COLUMNS.contains(k)).collect();
                        return Err(bad(format!(
                            "`group_by` names `{column}`, which stage `{from}` does not produce: its rows have {}",
                            columns.join(", ")
                        )));
                    };
                    key.insert(column.clone(), cell);
                }
                let text = serde_json::to_string(&serde_json::Value::from(Value::Map(key.clone()))).unwrap_or_default();
                groups.entry(text).or_insert_with(|| (key, Vec::new())).1.push(row);
            }
            let mut settings = Vec::new();
            for (n, (_, (mut key, rows))) in groups.into_iter().enumerate() {
                let input = write_input(dir, stage, &format!("group-{n}.json"), &rows)?;
                key.insert("input".into(), Value::Str(input));
                key.insert("rows".into(), Value::Int(rows.len() as i64));
                settings.push(Value::Map(key));
            }
            settings
        }
        Source::All(_) => {
            let rows: Vec<_> = finished.iter().collect();
            let input = write_input(dir, stage, "all.json", &rows)?;
            let mut setting = Params::new();
            setting.insert("input".into(), Value::Str(input));
            setting.insert("rows".into(), Value::Int(rows.len() as i64));
            vec![Value::Map(setting)]
        }
    };
    let columns: Vec<String> = finished
        .first()
        .map(|row| row.keys().filter(|k| !FIXED_COLUMNS.contains(&k.as_str())).cloned().collect())
        .unwrap_or_default();
    let doc = with_settings(&stage.doc, settings);
    parse_stage(&chain.path, stage, &doc, registry)
        .map_err(|e| bad(format!("{}; stage `{from}` produces the fields {}", spec_message(e), columns.join(", "))))
        .map(Some)
}

/// Writes the rows of a group to `<chain dir>/<stage>/inputs/<file>` (beside, then renamed
/// into place) and returns its path.
fn write_input(dir: &Path, stage: &Stage, file: &str, rows: &[&Row]) -> Result<String, WorkerError> {
    let inputs = dir.join(&stage.name).join("inputs");
    let path = inputs.join(file);
    let tmp = inputs.join(format!(".{file}.tmp"));
    let io = |e: std::io::Error| taskfarm::CoreError::io("write", &path, e);
    std::fs::create_dir_all(&inputs).map_err(io)?;
    let text = serde_json::to_string_pretty(rows).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path.to_string_lossy().into_owned())
}

/// An operation of no processes named `name`: what a worker rank stages (the master's copy
/// is the one that runs), and a stage without rows to read under MPI.
fn no_processes(name: &str) -> Result<Operation<SpecProcess>, WorkerError> {
    Ok(Operation::from_jobs(name, Box::new(std::iter::empty()), Some(0))?)
}

/// The backend options of a chain's stages.
fn stage_options(args: &ChainArgs) -> BackendOptions {
    let mut options = BackendOptions::default();
    if let Some(n) = args.pool_size {
        options = options.pool_size(n);
    }
    options
}

/// A worker rank of a chain under MPI: serves one operation per stage, in order, until the
/// last (or until the master abandons one, which ends this rank with an error).
fn serve_stages(chain: &Chain, args: &ChainArgs) -> Result<u8, WorkerError> {
    for stage in &chain.stages {
        let mut backend = create_backend("mpi", &stage_options(args))?;
        backend.run(no_processes(&stage.name)?)?;
    }
    Ok(crate::EXIT_OK)
}

/// Under MPI, rank 0 failed while the worker ranks wait for a stage: staging an operation
/// and dropping the backend unexecuted abandons them, so every rank ends.
fn release_workers(chain: &Chain, args: &ChainArgs) {
    let name = chain.stages.first().map_or("chain", |stage| stage.name.as_str());
    if let (Ok(mut backend), Ok(operation)) = (create_backend("mpi", &stage_options(args)), no_processes(name)) {
        let base = std::env::temp_dir().join(format!("taskfarm-release-{}", std::process::id()));
        let _ = backend.stage_in(operation.with_results_base(&base).with_progress(ProgressMode::Quiet));
        drop(backend);
        let _ = std::fs::remove_dir_all(&base);
    }
}

/// Makes a stage's directory the first time: the directory, its `operation.toml` and an
/// empty journal, so that the stage is a resumable run.
fn prepare_stage(operation: &Operation<SpecProcess>, stage_dir: &Path, backend_name: &str) -> Result<(), WorkerError> {
    use taskfarm::results::files;
    if !stage_dir.join(files::JOURNAL).is_file() {
        std::fs::create_dir_all(stage_dir).map_err(|e| taskfarm::CoreError::io("create", stage_dir, e))?;
        let mut as_run = operation.spec().clone();
        as_run.insert("backend".into(), Value::Str(backend_name.to_owned()));
        taskfarm::results::write_operation_toml(stage_dir, &as_run)?;
        // The journal last: a stage directory with a journal is a run that can be resumed.
        let journal = stage_dir.join(files::JOURNAL);
        let tmp = stage_dir.join(".journal.tmp");
        taskfarm::results::journal::JournalWriter::create(&tmp)?.sync()?;
        std::fs::rename(&tmp, &journal).map_err(|e| taskfarm::CoreError::io("move into place", &tmp, e))?;
    }
    Ok(())
}

/// Runs one stage in its prepared `stage_dir` as a resumable run: only processes without a
/// record run.
fn run_stage(
    operation: Operation<SpecProcess>,
    stage_dir: &Path,
    backend_name: &str,
    args: &ChainArgs,
) -> Result<Summary, WorkerError> {
    let mut backend = create_backend(backend_name, &stage_options(args))?;
    let progress = if args.quiet { ProgressMode::Quiet } else { ProgressMode::Auto };
    let operation = operation.with_progress(progress).resume_from(stage_dir, false);
    backend.stage_in(operation)?;
    let ran = backend.execute().and_then(|()| backend.retrieve(None));
    let consolidated = backend.consolidate();
    let cleaned = backend.cleanup();
    let summary = ran.and(consolidated).and_then(|summary| cleaned.map(|()| summary))?;
    Ok(summary)
}

/// Writes `chain.toml`, the chain as run.
fn write_chain_toml(dir: &Path, as_run: &Params) -> Result<(), WorkerError> {
    let path = dir.join(CHAIN_TOML);
    let text = toml::to_string(as_run).map_err(|e| WorkerError::Chain {
        path: path.clone(),
        message: format!("the chain cannot be written as TOML: {e}"),
    })?;
    std::fs::write(&path, text).map_err(|e| taskfarm::CoreError::io("write", &path, e).into())
}

/// Refuses to resume a chain directory whose chain differs from `as_run`, naming the first
/// stage that differs.
fn check_same_chain(dir: &Path, as_run: &Params) -> Result<(), WorkerError> {
    let path = dir.join(CHAIN_TOML);
    if !path.is_file() {
        return Err(WorkerError::Chain {
            path: dir.to_owned(),
            message: "this is not a chain's directory (it has no chain.toml): give the directory that `run CHAIN` made"
                .into(),
        });
    }
    let was = read_document(&path)?;
    let stages = |doc: &Params| -> Vec<serde_json::Value> {
        match doc.get("stages") {
            Some(Value::List(list)) => list.iter().cloned().map(serde_json::Value::from).collect(),
            _ => Vec::new(),
        }
    };
    let (was_stages, now_stages) = (stages(&was), stages(as_run));
    let name_of = |v: &serde_json::Value| v.get("name").and_then(|n| n.as_str()).unwrap_or("?").to_owned();
    for (n, now) in now_stages.iter().enumerate() {
        match was_stages.get(n) {
            Some(was) if was == now => {}
            Some(was) if name_of(was) != name_of(now) => {
                return Err(WorkerError::Chain {
                    path: dir.to_owned(),
                    message: format!(
                    "stage {} was `{}` and is now `{}`: a chain resumes only as it was run; start a new run instead",
                    n + 1,
                    name_of(was),
                    name_of(now)
                ),
                })
            }
            Some(_) => {
                return Err(WorkerError::Chain {
                    path: dir.to_owned(),
                    message: format!(
                        "stage `{}` differs from the one this chain ran (see its chain.toml): a chain resumes only as \
                         it was run; start a new run instead",
                        name_of(now)
                    ),
                })
            }
            None => {
                return Err(WorkerError::Chain {
                    path: dir.to_owned(),
                    message: format!(
                        "stage `{}` is not in the chain that ran here: a chain resumes only as it was run; start a new \
                         run instead",
                        name_of(now)
                    ),
                })
            }
        }
    }
    if let Some(gone) = was_stages.get(now_stages.len()) {
        return Err(WorkerError::Chain {
            path: dir.to_owned(),
            message: format!(
                "stage `{}` of the chain that ran here is missing: a chain resumes only as it was run",
                name_of(gone)
            ),
        });
    }
    Ok(())
}
