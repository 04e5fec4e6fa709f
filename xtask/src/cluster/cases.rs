//! The cluster tests, each on the running [`Cluster`]: sweeps equal to serial, a crash on a
//! remote host, throughput across hosts, the conformance scenarios, and a host unplugged
//! mid-run.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{
    describe_hosts, hosts_sh, idle, indent, run, run_mpi, unix_now, worker_command, Cluster, Table, NODES, RUN_TIMEOUT,
};
use crate::runner::tail;

/// A sweep on 3 hosts × 2 slots equals the serial run; every host ran some of it.
pub(super) fn sweep(cluster: &Cluster, spec: &Path) -> Result<()> {
    let stem = spec.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let (serial_dir, cluster_dir) =
        (cluster.results(&format!("{stem}-serial")), cluster.results(&format!("{stem}-cluster")));
    let hostfile = cluster.hostfile_3x2()?;
    let spec_arg = spec.to_string_lossy();
    let results_arg = cluster_dir.to_string_lossy();
    let args = ["run", &spec_arg, "--backend", "mpi", "--results", &results_arg, "--quiet"];
    run_mpi(cluster, || cluster.mpirun(&hostfile, 6, &args), Some(&cluster_dir))?.expect_code("the cluster run", 0)?;
    run(&cluster.state, cluster.serial(spec, &serial_dir), idle)?.expect_code("the serial run", 0)?;
    crate::results::compare_results(&serial_dir, &cluster_dir)?;
    let hosts = Table::read(&cluster_dir)?.ranks_by_host()?;
    eprintln!("xtask:   ranks that ran processes, by host: {}", describe_hosts(&hosts));
    let missing: Vec<&str> = NODES.iter().copied().filter(|n| !hosts.contains_key(*n)).collect();
    if !missing.is_empty() || hosts.len() != NODES.len() {
        bail!("expected processes on every host {NODES:?}, got {}", describe_hosts(&hosts));
    }
    Ok(())
}

/// x = 3 fails; the master is alone on tf-node1, so the crash is on tf-node2 or tf-node3.
pub(super) fn remote_crash(cluster: &Cluster) -> Result<()> {
    let spec = cluster.scripts.join("remote_crash.toml");
    let dir = cluster.results("remote_crash");
    let hostfile = cluster.hostfile("hosts-master-apart", &[(NODES[0], 1), (NODES[1], 2), (NODES[2], 2)])?;
    let (spec_arg, results_arg) = (spec.to_string_lossy(), dir.to_string_lossy());
    let args = ["run", &spec_arg, "--backend", "mpi", "--results", &results_arg, "--quiet"];
    // Exit code 1: some processes crashed.
    run_mpi(cluster, || cluster.mpirun(&hostfile, 5, &args), Some(&dir))?.expect_code("the cluster run", 1)?;
    let table = Table::read(&dir)?;
    let (xs, statuses, hosts) = (table.values("x")?, table.values("status")?, table.values("host")?);
    let crashed: Vec<usize> = (0..statuses.len()).filter(|&i| statuses[i] != "finished").collect();
    let [i] = crashed.as_slice() else {
        bail!("expected exactly one crashed process (x = 3), got {}", crashed.len());
    };
    let (x, host) = (xs[*i], hosts[*i]);
    if x != "3" || statuses[*i] != "crashed" {
        bail!("process x = {x} has status {}, expected only x = 3 crashed", statuses[*i]);
    }
    if !NODES[1..].contains(&host) {
        bail!("the crash record names host `{host}`, expected a remote host (tf-node2 or tf-node3)");
    }
    let crashed_jsonl =
        std::fs::read_to_string(crate::results::find_results_csv(&dir)?.with_file_name("crashed.jsonl"))
            .context("could not read crashed.jsonl")?;
    let said = format!("x=3 fails on {host}");
    if !crashed_jsonl.contains(host) || !crashed_jsonl.contains(&said) {
        bail!("crashed.jsonl should name {host} and keep the stderr line `{said}`: {crashed_jsonl}");
    }
    let reason = table.values("reason")?[*i];
    eprintln!("xtask:   x = 3 crashed on {host}: {reason}");
    Ok(())
}

/// Processes/s of `processes` no-op processes (monte_carlo_pi with 1 sample), 6 ranks on
/// 3 hosts and 6 ranks on one host, both over TCP; returns the figures as a line.
pub(super) fn throughput(cluster: &Cluster, processes: u32) -> Result<String> {
    let spec = cluster.state.join("noop.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"noop\"\nkind = \"monte_carlo_pi\"\nruns = {processes}\n\n[parameter_ranges]\nsamples = [1]\n"
        ),
    )?;
    let spec_arg = spec.to_string_lossy();
    let layouts = [
        ("3 hosts x 2 ranks", cluster.hostfile_3x2()?),
        ("1 host x 6 ranks", cluster.hostfile("hosts-1x6", &[(NODES[0], 6)])?),
    ];
    let mut figures = Vec::new();
    for (label, hostfile) in layouts {
        let dir = cluster.results(&format!("noop-{}", label.replace(' ', "")));
        let results_arg = dir.to_string_lossy();
        let args = ["run", &spec_arg, "--backend", "mpi", "--results", &results_arg, "--quiet"];
        let outcome = run_mpi(cluster, || cluster.mpirun(&hostfile, 6, &args), Some(&dir))?;
        outcome.expect_code(label, 0)?;
        let table = Table::read(&dir)?;
        if table.rows.len() != processes as usize {
            bail!("{label}: {} rows in results.csv, expected {processes}", table.rows.len());
        }
        let rate = table.rate()?;
        let wall = f64::from(processes) / outcome.elapsed.as_secs_f64();
        eprintln!(
            "xtask:   {label}: {rate:.0} processes/s (first start to last end), {wall:.0}/s with mpirun's start-up"
        );
        figures.push(format!("{label}: {rate:.0}/s ({wall:.0}/s incl. start-up)"));
    }
    Ok(format!("dispatch throughput, {processes} no-op processes, 5 workers over TCP: {}", figures.join("; ")))
}

/// backend-mpi's conformance scenario (the same operations on MPI and on `SerialBackend`,
/// every process exactly once, the workers' counts adding up), with its 6 ranks spread over
/// the 3 hosts.
pub(super) fn conformance(cluster: &Cluster, scenarios: &Path) -> Result<()> {
    // A copy, so a build running meanwhile cannot swap the program under the ranks.
    let program = cluster.state.join("mpi_scenarios");
    std::fs::copy(scenarios, &program)
        .with_context(|| format!("could not copy {} into the cluster", scenarios.display()))?;
    let hostfile = cluster.hostfile_3x2()?;
    let outcome = run_mpi(cluster, || cluster.mpirun_program(&hostfile, 6, &program, &["conformance"]), None)?;
    outcome.expect_code("the conformance scenario across hosts", 0)?;
    if !outcome.stdout.contains("same as serial") {
        bail!("the conformance scenario did not report its comparison\n{}", tail(&outcome.stdout));
    }
    Ok(())
}

/// The host unplugged mid-run: tf-node3.
const LOST: &str = "tf-node3";

/// Unplugs tf-node3 mid-run; the job must end by itself with a non-zero exit, the journal
/// must be readable, and `--resume` on tf-node1 and tf-node2 must finish every process once.
pub(super) fn link_loss(cluster: &Cluster) -> Result<()> {
    let spec = cluster.scripts.join("link_loss.toml");
    let total = 400;
    let base = cluster.results("link_loss");
    let hostfile = cluster.hostfile_3x2()?;
    let (spec_arg, results_arg) = (spec.to_string_lossy(), base.to_string_lossy());
    let args = ["run", &spec_arg, "--backend", "mpi", "--results", &results_arg, "--quiet"];
    let mut unplugged: Option<Duration> = None;
    let outcome = run(&cluster.state, cluster.mpirun(&hostfile, 6, &args), |elapsed| {
        // Unplug once the run is well under way: 1.5 s in and a journal with records.
        if unplugged.is_none() && elapsed >= Duration::from_millis(1500) && crate::results::journal_len(&base) > 0 {
            eprintln!("xtask:   unplugging {LOST} at {:.1} s", elapsed.as_secs_f64());
            hosts_sh(&cluster.scripts, &["link", LOST, "down"])?;
            unplugged = Some(elapsed);
        }
        Ok(())
    })?;
    let Some(at) = unplugged else {
        bail!("the run ended ({:?}) before {LOST} could be unplugged\n{}", outcome.code, tail(&outcome.stderr));
    };
    if outcome.timed_out {
        bail!(
            "the job did not end by itself within {}s of losing {LOST}\n{}",
            RUN_TIMEOUT.as_secs(),
            tail(&outcome.stderr)
        );
    }
    if outcome.code == Some(0) {
        bail!("the job exited 0 after losing {LOST}\n{}", tail(&outcome.stderr));
    }
    eprintln!(
        "xtask:   the job ended {:.1} s after the unplug, exit code {:?}; Open MPI said:\n{}",
        (outcome.elapsed - at).as_secs_f64(),
        outcome.code,
        indent(&outcome.stderr)
    );
    if !outcome.stderr.contains(LOST) {
        bail!("Open MPI's message does not name the lost host {LOST}");
    }
    // The master's own report: the lost host's ranks, silent longest, come first.
    let report = outcome
        .stderr
        .split("taskfarm: stopped by a signal")
        .nth(1)
        .with_context(|| format!("the master did not report what was unfinished\n{}", tail(&outcome.stderr)))?;
    let first_host = report.split(" on ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or("");
    if first_host != LOST {
        bail!(
            "the master's report names {first_host:?} first, not the lost host {LOST}: {}",
            report.lines().next().unwrap_or("")
        );
    }
    eprintln!("xtask:   the master said: stopped by a signal{}", report.lines().next().unwrap_or(""));
    let dir = crate::results::run_dir(&base)?;
    let journal = std::fs::read(dir.join("journal")).context("the journal of the interrupted run is missing")?;
    // The journal is readable: `report` reads it and counts its records.
    let report = run(&cluster.state, worker_command(cluster, &["report", &dir.to_string_lossy()]), idle)?;
    let journaled = report
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("processes: ")?.split_whitespace().next()?.parse::<usize>().ok())
        .with_context(|| format!("`taskfarm-worker report` did not count the journal\n{}", tail(&report.stderr)))?;
    eprintln!("xtask:   the journal holds {journaled} of {total} records");
    if journaled == 0 || journaled >= total {
        bail!("expected an interrupted run, the journal holds {journaled} of {total} records");
    }
    // --resume on the remaining hosts.
    let resume_start = unix_now();
    let remaining = cluster.hostfile("hosts-remaining", &[(NODES[0], 2), (NODES[1], 2)])?;
    let dir_arg = dir.to_string_lossy();
    let args = ["run", &spec_arg, "--backend", "mpi", "--resume", &dir_arg, "--quiet"];
    run_mpi(cluster, || cluster.mpirun(&remaining, 4, &args), None)?
        .expect_code("--resume on tf-node1 and tf-node2", 0)?;
    let resumed = std::fs::read(dir.join("journal"))?;
    if !resumed.starts_with(&journal) {
        bail!("--resume changed the records journaled before the failure (the journal must only grow)");
    }
    let table = Table::read(&base)?;
    let ids: BTreeSet<&str> = table.values("id")?.into_iter().collect();
    let all_finished = table.values("status")?.iter().all(|s| *s == "finished");
    if table.rows.len() != total || ids.len() != total || !all_finished {
        bail!(
            "after --resume: {} rows, {} distinct ids, all finished: {all_finished}; expected {total}",
            table.rows.len(),
            ids.len()
        );
    }
    let starts = table.times("started_at")?;
    let rerun = starts.iter().filter(|s| **s >= resume_start).count();
    if journaled + rerun != total {
        bail!("{journaled} journaled + {rerun} run by --resume != {total}: some process ran twice or not at all");
    }
    let hosts = table.ranks_by_host()?;
    if !hosts.contains_key(LOST) {
        bail!("no record of {LOST} survived: {}", describe_hosts(&hosts));
    }
    let products = table.values("x")?.into_iter().zip(table.values("y")?).zip(table.values("stdout")?);
    for ((x, y), out) in products {
        let (x, y): (u32, u32) = (x.parse()?, y.parse()?);
        if out != (x * y).to_string() {
            bail!("process x={x} y={y} has output {out}, expected {}", x * y);
        }
    }
    eprintln!(
        "xtask:   --resume ran the {rerun} missing processes; every one of {total} exactly once ({})",
        describe_hosts(&hosts)
    );
    Ok(())
}
