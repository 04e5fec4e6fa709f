//! The master's scheduling under a real `mpirun`, checked by where and when processes ran
//! (never by how long the run took): breadth-first dealing, long processes side by side,
//! windows counted in threads, units larger than MPI's eager limit.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::launch;
use super::suite::{expect_success, oversubscribed, path_arg, run_with_timeout};
use crate::results::{parse_utc, read_results};
use crate::Tally;

/// One row of a scheduling case: the process's `s` parameter (how long it sleeps), the rank
/// that ran it (`rank-2` of `rank-2/thread-1`) and when it started.
struct Ran {
    s: f64,
    rank: String,
    started_at: f64,
}

/// Runs `sh -c "sleep {s}; echo {s}"` for each of `sleeps` through the worker under
/// `mpirun -n ranks` with `extra` arguments (and `threads` per process), and returns its rows.
fn run_sleeps(
    scratch: &Path,
    name: &str,
    ranks: u32,
    sleeps: &[f64],
    threads: u32,
    extra: &[&str],
) -> Result<Vec<Ran>> {
    run_padded_sleeps(scratch, name, ranks, sleeps, threads, extra, 0)
}

/// [`run_sleeps`] with a shell comment of `padding` characters after the command, which
/// makes every unit of work a message that large.
fn run_padded_sleeps(
    scratch: &Path,
    name: &str,
    ranks: u32,
    sleeps: &[f64],
    threads: u32,
    extra: &[&str],
    padding: usize,
) -> Result<Vec<Ran>> {
    let comment = if padding == 0 { String::new() } else { format!(" # {}", "x".repeat(padding)) };
    let spec = scratch.join(format!("{name}.toml"));
    let settings: Vec<String> = sleeps.iter().map(|s| format!("{{s = {s:?}}}")).collect();
    std::fs::write(
        &spec,
        format!(
            "name = \"{name}\"\nkind = \"command\"\nthreads = {threads}\n\
             command = [\"sh\", \"-c\", \"sleep {{s}}; echo {{s}}{comment}\"]\nparameter_settings = [{}]\n",
            settings.join(", ")
        ),
    )?;
    let results = scratch.join(format!("{name}-results"));
    let mut args = vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let outcome = run_with_timeout(scratch, launch(&oversubscribed(ranks, args))?)?;
    expect_success(&outcome)?;
    let (header, rows) = read_results(&results)?;
    let column = |name: &str| header.iter().position(|h| h == name).with_context(|| format!("no {name} column"));
    let (s, worker, started) = (column("s")?, column("worker")?, column("started_at")?);
    let field = |row: &Vec<String>, i: usize| row.get(i).cloned().unwrap_or_default();
    let ran: Vec<Ran> = rows
        .iter()
        .map(|row| -> Result<Ran> {
            Ok(Ran {
                s: field(row, s).parse().context("s is not a number")?,
                rank: field(row, worker).split('/').next().unwrap_or_default().to_owned(),
                started_at: parse_utc(&field(row, started)).context("started_at is not an RFC 3339 UTC time")?,
            })
        })
        .collect::<Result<_>>()?;
    if ran.len() != sleeps.len() {
        bail!("{} rows for {} processes", ran.len(), sleeps.len());
    }
    Ok(ran)
}

/// The ranks that ran the processes sleeping `s` seconds.
fn ranks_of(ran: &[Ran], s: f64) -> Vec<&str> {
    ran.iter().filter(|r| r.s == s).map(|r| r.rank.as_str()).collect()
}

/// The master's scheduling, checked by where processes ran (never by how long the run took):
/// breadth-first dealing, long processes side by side, windows counted in threads.
pub(super) fn scheduling(scratch: &Path, tally: &mut Tally) {
    let distinct = |ranks: &[&str]| ranks.iter().collect::<std::collections::BTreeSet<_>>().len();
    for prefetch in ["1", "2"] {
        let name = format!("two 2 s processes among tiny ones ran on different ranks, -n 3 --prefetch {prefetch}");
        let outcome = run_sleeps(
            scratch,
            &format!("long-among-tiny-{prefetch}"),
            3,
            &[0.0, 0.0, 2.0, 2.0, 0.0, 0.0],
            1,
            &["--prefetch", prefetch],
        )
        .and_then(|ran| match ranks_of(&ran, 2.0).as_slice() {
            [a, b] if a != b => Ok(()),
            ranks => bail!("the 2 s processes ran on {ranks:?}"),
        });
        tally.record(&name, outcome);
    }
    let name = "3 × sleep 1 on 3 worker ranks: one on each, -n 4";
    let outcome = run_sleeps(scratch, "breadth-first", 4, &[1.0, 1.0, 1.0], 1, &[]).and_then(|ran| {
        let ranks = ranks_of(&ran, 1.0);
        if distinct(&ranks) != 3 {
            bail!("the three ran on {ranks:?}");
        }
        Ok(())
    });
    tally.record(name, outcome);
    let name = "4 × sleep 1 on 2 worker ranks with --prefetch 4: two on each";
    let outcome =
        run_sleeps(scratch, "breadth-first-prefetch", 3, &[1.0; 4], 1, &["--prefetch", "4"]).and_then(|ran| {
            let ranks = ranks_of(&ran, 1.0);
            if ranks.first().is_none_or(|first| ranks.iter().filter(|r| *r == first).count() != 2) {
                bail!("the four ran on {ranks:?}");
            }
            Ok(())
        });
    tally.record(name, outcome);
    let name = "units larger than MPI's eager limit: no rank waits while another runs a 1 s process, -n 4";
    let mut sleeps = vec![0.0; 12];
    sleeps.extend([1.0; 12]);
    let outcome = run_padded_sleeps(scratch, "large-units", 4, &sleeps, 1, &[], 5000).and_then(|ran| {
        // On each rank, every 1 s process after its first started as the one before ended:
        // the master's send to a busy rank (which MPI completes only once that rank takes the
        // message) must not keep the other ranks waiting.
        let mut long: Vec<&Ran> = ran.iter().filter(|r| r.s == 1.0).collect();
        long.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
        for (i, r) in long.iter().enumerate() {
            let before = long[..i].iter().rev().find(|p| p.rank == r.rank);
            if let Some(p) = before {
                let idle = r.started_at - (p.started_at + p.s);
                if idle >= 0.5 {
                    bail!("{} was idle {idle:.1} s between two 1 s processes", r.rank);
                }
            }
        }
        Ok(())
    });
    tally.record(name, outcome);
    let name = "2-thread processes on 2-thread ranks: none waits on the rank of a 3 s process, -n 3";
    let outcome =
        run_sleeps(scratch, "thread-window", 3, &[0.1, 3.0, 0.5, 0.5, 0.5, 0.5], 2, &["--threads-per-rank", "2"])
            .and_then(|ran| {
                let long = ran.iter().find(|r| r.s == 3.0).context("no 3 s process")?;
                let behind: Vec<f64> =
                    ran.iter().filter(|r| r.rank == long.rank && r.started_at > long.started_at).map(|r| r.s).collect();
                if !behind.is_empty() {
                    bail!("processes of {behind:?} s ran on {} after its 3 s process", long.rank);
                }
                Ok(())
            });
    tally.record(name, outcome);
}
