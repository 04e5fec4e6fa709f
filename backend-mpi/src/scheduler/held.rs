//! What the master says of the work its workers hold: the processes they run now, for the
//! status file, and, after a stop, which ranks held what was unfinished.

use backend_core::Process;

use std::time::Instant;

use super::{worker_rank, Scheduler, Unit, WorkerState};

impl<P: Process> Scheduler<P> {
    /// Says which processes the workers run now, as far as the master knows, for the status
    /// file (see [`backend_core::status::set_running_elsewhere`]): on each worker, the first
    /// unfinished jobs of its units, oldest unit first, as many as it runs at once (the rest
    /// wait in its queue). A unit's next job started about when its latest records came
    /// back, or when it was sent: exact for units of one process (long processes are never
    /// queued nor batched), close for batches of short ones.
    pub(super) fn publish_running(&mut self) {
        backend_core::status::set_running_elsewhere(self.held_now());
        self.unpublished = false;
        self.published_at = Instant::now();
    }

    /// What [`publish_running`](Self::publish_running) says.
    pub(super) fn held_now(&self) -> Vec<backend_core::status::RunningElsewhere> {
        let at_once = self.policy.processes_at_once();
        let mut running = Vec::new();
        for (w, slot) in self.slots.iter().enumerate() {
            let worker = match &slot.host {
                Some(host) => format!("{host}/rank-{}", worker_rank(w)),
                None => format!("rank-{}", worker_rank(w)),
            };
            let held = slot.units.iter().flat_map(|unit| {
                let since = unit.last_back.unwrap_or(unit.sent);
                unit.unfinished().into_iter().map(move |id| (id, since))
            });
            for (id, since) in held.take(at_once) {
                running.push(backend_core::status::RunningElsewhere { id, worker: worker.clone(), since });
            }
        }
        running
    }

    /// Says which workers still hold unfinished processes, the ones silent longest first (a
    /// lost host's ranks fall silent before the job is torn down), and how many processes
    /// were never handed out: on stderr and in operation.log.
    pub(super) fn report_unfinished(&self) {
        let mut holding: Vec<(usize, &WorkerState)> =
            self.slots.iter().enumerate().filter(|(_, s)| s.units.iter().any(|u| !u.unfinished().is_empty())).collect();
        holding.sort_by_key(|(_, s)| s.last_heard);
        let unfinished: usize =
            holding.iter().map(|(_, s)| s.units.iter().map(|unit| unit.unfinished().len()).sum::<usize>()).sum();
        let how = if backend_core::stop_drains() { "cancelled" } else { "stopped by a signal" };
        let mut report = format!("{how} with {unfinished} processes unfinished");
        for (i, slot) in &holding {
            let mut ids: Vec<u64> = slot.units.iter().flat_map(Unit::unfinished).collect();
            ids.sort_unstable();
            let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
            let more = if ids.len() > 20 { format!(" and {} more", ids.len() - 20) } else { String::new() };
            report.push_str(&format!(
                "; rank-{} on {} (silent for {:.1} s) held processes {}{more}",
                i + 1,
                slot.host.as_deref().unwrap_or("an unknown host"),
                slot.last_heard.elapsed().as_secs_f64(),
                shown.join(", ")
            ));
        }
        if let Some(retries) = self.retries.as_ref().filter(|r| !r.waiting.is_empty()) {
            report.push_str(&format!("; {} failed processes were waiting to run again", retries.waiting.len()));
        }
        match self.policy.remaining() {
            Some(n) => report.push_str(&format!("; {n} processes were not handed out")),
            None if !self.exhausted => report.push_str("; more processes were not handed out"),
            None => {}
        }
        eprintln!("taskfarm: {report}");
        // Also in operation.log (the console has it already).
        tracing::info!(target: "taskfarm", "{report}");
    }
}
