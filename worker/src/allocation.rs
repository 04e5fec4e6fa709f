//! Runs that fit their allocation: the deadline a run stops starting processes at (given
//! with `--deadline`, or read from the Slurm allocation the run is in), the record of the
//! allocations a run went through (`allocations.jsonl` in its result directory), and the
//! follow-up job `--continue` submits when an allocation ends with processes left.
//!
//! Not for submitting a first job (that is `submit`'s) nor for the batch system's signals:
//! its early warning (SIGUSR1) is taken in `cli/signals.rs`, and a run stopped by SIGTERM is
//! resumed by hand, or by the follow-up.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use taskfarm::{Deadline, Summary};

use crate::error::WorkerError;

/// The variable that says how many seconds before its time limit a job asked Slurm for its
/// early warning (SIGUSR1 to the batch script), so that `--continue` asks the same of the
/// follow-up job; `submit --warning` sets it.
pub const SIGNAL_BEFORE: &str = "TASKFARM_SIGNAL_BEFORE";

/// The record of a run's allocations, in its result directory.
pub const ALLOCATIONS: &str = "allocations.jsonl";
/// The margin kept before a deadline, at most and at least (10 % of the time left otherwise).
const MARGIN_MAX: Duration = Duration::from_secs(60);
const MARGIN_MIN: Duration = Duration::from_secs(10);

/// How long a Slurm command (`squeue`) may take: a controller that does not answer must not
/// hold up the run (nor its end, where `--continue` asks for the time limit).
const SLURM_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The deadline of this run: `--deadline` (a duration from now such as `1h30m` or `90m`, or
/// an RFC 3339 time such as `2026-12-02T18:00:00Z`), else the end of the Slurm allocation
/// the program runs in (`SLURM_JOB_END_TIME` where Slurm sets it, else `squeue`), else none.
/// The margin is `--deadline-margin`, else 10 % of the time left, between 10 s and 60 s.
pub fn deadline(asked: Option<&str>, margin: Option<Duration>) -> Result<Option<Deadline>, WorkerError> {
    let now = SystemTime::now();
    let at = match asked {
        Some(text) => Some(parse_deadline(text, now)?),
        None => slurm_job_end(std::env::var("SLURM_JOB_END_TIME").ok().as_deref())
            .or_else(|| slurm_time_left().and_then(|left| now.checked_add(left))),
    };
    Ok(at.map(|at| {
        let left = at.duration_since(now).unwrap_or_default();
        let margin = margin.unwrap_or_else(|| (left / 10).clamp(MARGIN_MIN, MARGIN_MAX));
        Deadline { at, margin }
    }))
}

fn parse_deadline(text: &str, now: SystemTime) -> Result<SystemTime, WorkerError> {
    let bad = || {
        WorkerError::Usage(format!(
            "--deadline `{text}` is neither a duration from now (e.g. 90m, 1h30m, 3600) nor a time such as \
             2026-12-02T18:00:00Z"
        ))
    };
    if let Ok(after) = taskfarm::run_control::parse_duration(text) {
        return now.checked_add(after).ok_or_else(bad);
    }
    let at =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339).map_err(|_| bad())?;
    let seconds = u64::try_from(at.unix_timestamp()).map_err(|_| bad())?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds)).ok_or_else(bad)
}

/// The end of the allocation as `SLURM_JOB_END_TIME` gives it (seconds since the Unix
/// epoch; newer Slurm sets it in the job's environment); `None` when unset or not a time.
fn slurm_job_end(value: Option<&str>) -> Option<SystemTime> {
    let seconds = value?.trim().parse::<u64>().ok().filter(|&s| s > 0)?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// The time left in the Slurm allocation this program runs in (`squeue`'s `%L`), if any.
fn slurm_time_left() -> Option<Duration> {
    let job = std::env::var("SLURM_JOB_ID").ok()?;
    let out = stdout_within(Command::new("squeue").args(["-h", "-j", &job, "-o", "%L"]), SLURM_COMMAND_TIMEOUT)?;
    parse_slurm_duration(out.trim())
}

/// The stdout of `command` if it exits 0 within `timeout`; `None` if it cannot start, fails
/// or takes longer (then it is killed). For short queries whose output fits a pipe's buffer.
pub(crate) fn stdout_within(command: &mut Command, timeout: Duration) -> Option<String> {
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads Slurm's `[days-]hours:minutes:seconds`, `minutes:seconds` or `seconds`; `None` for
/// `UNLIMITED`, `NOT_SET` and anything else.
pub fn parse_slurm_duration(text: &str) -> Option<Duration> {
    let (days, clock) = match text.split_once('-') {
        Some((days, clock)) => (days.parse::<u64>().ok()?, clock),
        None => (0, text),
    };
    let parts: Vec<u64> = clock.split(':').map(|p| p.parse::<u64>().ok()).collect::<Option<_>>()?;
    let (h, m, s) = match parts.as_slice() {
        [s] => (0, 0, *s),
        [m, s] => (0, *m, *s),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    Some(Duration::from_secs(((days * 24 + h) * 60 + m) * 60 + s))
}

/// One line of `allocations.jsonl`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    /// The Slurm job id.
    pub job: String,
    /// When the run in it ended, in seconds since the Unix epoch.
    pub ended_at: f64,
    /// Processes with a record when it ended.
    pub recorded: u64,
    /// Whether the deadline stopped it from starting processes.
    pub deadline_reached: bool,
}

/// The allocations the run in `dir` went through, oldest first.
pub fn allocations(dir: &Path) -> Vec<Allocation> {
    let text = std::fs::read_to_string(dir.join(ALLOCATIONS)).unwrap_or_default();
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

/// Inside a Slurm job, appends this allocation to the run's record.
pub fn note(summary: &Summary) {
    let Ok(job) = std::env::var("SLURM_JOB_ID") else { return };
    let ended_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let line = Allocation {
        job,
        ended_at,
        recorded: summary.finished + summary.crashed,
        deadline_reached: summary.deadline_reached,
    };
    let path = summary.dir.join(ALLOCATIONS);
    let written = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut file| {
        let json = serde_json::to_string(&line).map_err(std::io::Error::other)?;
        writeln!(file, "{json}")
    });
    if let Err(e) = written {
        eprintln!("taskfarm: warning: could not note the allocation in {}: {e}", path.display());
    }
}

/// What `report` says of the allocations, if the run went through any.
pub fn describe(dir: &Path) -> Option<String> {
    let all = allocations(dir);
    if all.is_empty() {
        return None;
    }
    let mut before = 0;
    let parts: Vec<String> = all
        .iter()
        .map(|a| {
            let here = a.recorded.saturating_sub(before);
            before = a.recorded;
            format!("job {} ({here} processes{})", a.job, if a.deadline_reached { ", until its deadline" } else { "" })
        })
        .collect();
    Some(format!("allocations: {}", parts.join(", ")))
}

/// After a run that its deadline stopped with processes left, inside a Slurm job started by
/// the batch script: submits the job that resumes it once this one has ended, unless the run
/// went through `cap` allocations already. Says what it did.
pub fn continue_run(summary: &Summary, cap: u32) -> Result<Option<String>, WorkerError> {
    let (Ok(job), Ok(script)) = (std::env::var("SLURM_JOB_ID"), std::env::var("TASKFARM_BATCH_SCRIPT")) else {
        return Err(WorkerError::Usage(
            "--continue needs a run started in a Slurm job by the batch script (examples/slurm/sweep.sbatch or \
             taskfarm-worker submit)"
                .into(),
        ));
    };
    let done = allocations(&summary.dir).len();
    if done >= cap as usize {
        return Ok(Some(format!("not continued: the run went through {done} allocations, the cap (--continue {cap})")));
    }
    let worker = std::env::current_exe().map_err(|e| WorkerError::Submit(format!("this program's path: {e}")))?;
    let folder: PathBuf = summary.dir.parent().map(Path::to_owned).unwrap_or_else(|| summary.dir.clone());
    let mut sbatch = Command::new("sbatch");
    sbatch.arg("--parsable").arg(format!("--dependency=afterany:{job}"));
    sbatch.arg(format!("--output={}/taskfarm-%j.out", folder.display()));
    if let Ok(name) = std::env::var("SLURM_JOB_NAME") {
        sbatch.arg(format!("--job-name={name}"));
    }
    if let Ok(nodes) = std::env::var("SLURM_JOB_NUM_NODES") {
        sbatch.arg(format!("--nodes={nodes}"));
    }
    if let Ok(partition) = std::env::var("SLURM_JOB_PARTITION") {
        sbatch.arg(format!("--partition={partition}"));
    }
    if let Some(limit) = slurm_time_limit(&job) {
        sbatch.arg(format!("--time={limit}"));
    }
    // The early warning this job was submitted with (`submit --warning`), asked again: the
    // batch script's own (#SBATCH --signal) would apply otherwise.
    if let Some(seconds) = std::env::var(SIGNAL_BEFORE).ok().and_then(|s| s.trim().parse::<u16>().ok()) {
        sbatch.arg(format!("--signal=B:USR1@{seconds}"));
    }
    sbatch.env("TASKFARM_WORKER", &worker);
    // This program is rank 0 of an MPI job inside a Slurm job: the follow-up job must not
    // inherit their variables (its own mpirun would take them for its own).
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if ["OMPI_", "PMIX_", "PMI_", "OPAL_", "ORTE_"].iter().any(|p| name_text.starts_with(p)) {
            sbatch.env_remove(&name);
        }
    }
    sbatch
        .arg(&script)
        .arg(summary.dir.join(taskfarm::results::files::OPERATION))
        .arg("--resume")
        .arg(&summary.dir)
        .arg("--continue")
        .arg(cap.to_string());
    let out = sbatch.output().map_err(|e| WorkerError::Submit(format!("sbatch could not be started: {e}")))?;
    if !out.status.success() {
        return Err(WorkerError::Submit(format!(
            "sbatch refused the follow-up job: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let next = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Some(format!("continued: job {next} resumes the run once job {job} has ended")))
}

/// The time limit of Slurm job `job` as sbatch takes it (`squeue`'s `%l`).
fn slurm_time_limit(job: &str) -> Option<String> {
    let out = stdout_within(Command::new("squeue").args(["-h", "-j", job, "-o", "%l"]), SLURM_COMMAND_TIMEOUT)?;
    let limit = out.trim().to_owned();
    parse_slurm_duration(&limit).map(|_| limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_durations_read_as_squeue_writes_them() {
        assert_eq!(parse_slurm_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_slurm_duration("1:05"), Some(Duration::from_secs(65)));
        assert_eq!(parse_slurm_duration("2:00:01"), Some(Duration::from_secs(7201)));
        assert_eq!(parse_slurm_duration("1-00:00:00"), Some(Duration::from_secs(86400)));
        for none in ["UNLIMITED", "NOT_SET", "INVALID", "", "1:2:3:4", "a:b"] {
            assert_eq!(parse_slurm_duration(none), None, "{none}");
        }
    }

    #[test]
    fn the_job_end_time_is_read_from_slurms_variable() {
        let at = slurm_job_end(Some("1796234400")).unwrap();
        assert_eq!(at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_796_234_400);
        for none in [None, Some(""), Some("0"), Some("soon"), Some("-5")] {
            assert_eq!(slurm_job_end(none), None, "{none:?}");
        }
    }

    #[test]
    fn a_command_that_hangs_is_given_up_on() {
        let start = std::time::Instant::now();
        let out = stdout_within(Command::new("sleep").arg("30"), Duration::from_millis(300));
        assert_eq!(out, None);
        assert!(start.elapsed() < Duration::from_secs(10), "given up after {:?}", start.elapsed());
        let out = stdout_within(Command::new("echo").arg("12:00"), Duration::from_secs(10));
        assert_eq!(out.as_deref(), Some("12:00\n"));
        assert_eq!(stdout_within(&mut Command::new("false"), Duration::from_secs(10)), None);
    }

    #[test]
    fn deadlines_are_durations_or_times() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_deadline("90m", now).unwrap(), now + Duration::from_secs(5400));
        let at = parse_deadline("2026-12-02T18:00:00Z", now).unwrap();
        assert_eq!(at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_796_234_400);
        assert!(parse_deadline("soon", now).unwrap_err().to_string().contains("neither a duration"));
        let margin = deadline(Some("20m"), None).unwrap().unwrap().margin;
        assert_eq!(margin, Duration::from_secs(60), "10% of 20 min is 2 min, more than the most");
        let margin = deadline(Some("60s"), None).unwrap().unwrap().margin;
        assert_eq!(margin, Duration::from_secs(10), "10% of a minute is 6 s, less than the least");
    }
}
