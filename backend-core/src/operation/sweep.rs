//! Operations made from a parameter space: [`Operation::sweep`], [`Operation::try_sweep`]
//! and [`Operation::try_sweep_adaptive`], each process made only when a backend asks for it.

use std::time::Duration;

use super::{Operation, SourceFailure};
use crate::{Count, Error, Job, ParameterSpace, Params, Process, Result, Value};

/// How long [`Operation::sweep`] counts the combinations a space's constraints admit
/// before it leaves the length unknown.
pub const SWEEP_COUNT_BUDGET: Duration = Duration::from_millis(250);

impl<P: Process> Operation<P> {
    /// A sweep: one process per parameter combination of `space` and per run, made by
    /// `make(params, run)` only when a backend asks for it. Ids count from 0 in the order
    /// combinations are enumerated, runs of one combination next to each other. Its
    /// [`len`](Self::len) is unknown when the constraints could not be counted within
    /// [`SWEEP_COUNT_BUDGET`] (the run starts all the same and counts as it goes).
    ///
    /// `make` cannot fail: prefer [`try_sweep`](Self::try_sweep), whose `make` reads the
    /// parameters with [`ParamsExt`](crate::ParamsExt) and `?`, so a misspelt name or a wrong
    /// type is an error naming it rather than a panic (`params["xx"]`) or a silent default.
    pub fn sweep(
        name: impl Into<String>,
        space: ParameterSpace,
        runs: u32,
        make: impl Fn(&Params, u32) -> P + Send + 'static,
    ) -> Result<Self> {
        Self::try_sweep(name, space, runs, move |params, run| Ok(make(params, run)))
    }

    /// A sweep whose processes are made by a fallible `make(params, run)`, e.g. with the
    /// typed getters of [`ParamsExt`](crate::ParamsExt). The process of the first
    /// combination is made at once, so a misspelt parameter name or a wrong type is an
    /// error here, before anything is staged. If `make` fails for a later combination
    /// (a range of mixed types), no further process is made and the run fails with that
    /// error once the processes already started have ended (their records are kept, so
    /// the run can be resumed after the fix).
    ///
    /// ```
    /// # use backend_core::*;
    /// # use serde::{Serialize, Deserialize};
    /// # #[derive(Serialize, Deserialize)] struct Sim { alpha: f64, seed: u32 }
    /// # impl Process for Sim { type Output = f64;
    /// #   fn run(&self, _: &ProcessContext) -> Result<f64, ProcessError> { Ok(self.alpha) } }
    /// let space = ParameterSpace::ranges([("alpha", vec![0.1, 0.2])])?;
    /// let op = Operation::try_sweep("demo", space, 3, |p, run| Ok(Sim { alpha: p.f64("alpha")?, seed: run }))?;
    /// assert_eq!(op.len(), Some(6));
    ///
    /// let space = ParameterSpace::ranges([("alpha", vec![0.1, 0.2])])?;
    /// let misspelt = Operation::try_sweep("demo", space, 3, |p, run| Ok(Sim { alpha: p.f64("alhpa")?, seed: run }));
    /// assert!(misspelt.unwrap_err().to_string().contains("there is no parameter `alhpa` (the parameters are: `alpha`)"));
    /// # Ok::<(), backend_core::Error>(())
    /// ```
    pub fn try_sweep(
        name: impl Into<String>,
        space: ParameterSpace,
        runs: u32,
        make: impl Fn(&Params, u32) -> Result<P> + Send + 'static,
    ) -> Result<Self> {
        if runs == 0 {
            return Err(Error::ZeroRuns);
        }
        // Constraints are counted for a moment only: a large constrained space starts at
        // once, with its length unknown (the backend learns it when the source ends).
        let count = space.count_within(SWEEP_COUNT_BUDGET)?;
        let too_many = |combinations: u64| Error::TooManyProcesses {
            what: format!("{combinations} parameter combinations × {runs} runs"),
        };
        let len = match count {
            Count::Exact(0) => {
                return Err(Error::ConstraintsExcludeAll {
                    constraints: space.constraints().collect::<Vec<_>>().join(" && "),
                })
            }
            Count::Exact(n) => Some(n.checked_mul(u64::from(runs)).ok_or_else(|| too_many(n))?),
            Count::AtLeast { admitted, .. } => {
                admitted.checked_mul(u64::from(runs)).ok_or_else(|| too_many(admitted))?;
                None
            }
        };
        // The first process is made now, so a mistake common to all shows before staging
        // (when counting found a combination: looking for one could take as long as counting).
        let mut first_process = match count.at_least() {
            0 => None,
            _ => space.iter().next().map(|first| make(&first, 0)).transpose()?,
        };
        let spec = describe_space(&space, runs);
        let failure = SourceFailure::default();
        let failed = failure.clone();
        let jobs = space
            .into_iter_owned()
            .flat_map(move |params| (0..runs).map(move |run| (params.clone(), run)))
            .enumerate()
            .map_while(move |(id, (params, run))| {
                let made = match first_process.take() {
                    Some(process) => Ok(process),
                    None => make(&params, run),
                };
                match made {
                    Ok(process) => Some(Job { id: id as u64, run, params, process }),
                    Err(error) => {
                        failed.set(Error::MakingProcess { id: id as u64, reason: error.to_string() });
                        None
                    }
                }
            });
        let mut operation = Self::from_parts(name.into(), Box::new(jobs), len, spec)?;
        operation.failure = failure;
        Ok(operation)
    }

    /// A sweep with adaptive runs: each parameter point of `space` gets `runs.min` runs,
    /// then `runs.min` more at a time while `runs.until` does not hold for the statistics of
    /// its runs so far (see [`summary`](crate::summary)), up to `runs.max`; all points
    /// proceed at once. Run `r` of the `p`-th point has id `p × max + r` (run numbers are
    /// dense per point; ids are stable, so a resumed run decides as the first did). The
    /// number of processes is not known in advance. The backend must not pull jobs on the
    /// thread that collects records (the serial and local backends do not; the MPI
    /// backend's master does, so it cannot run one).
    ///
    /// ```
    /// # use backend_core::*;
    /// # use backend_core::summary::AdaptiveRuns;
    /// # use serde::{Serialize, Deserialize};
    /// # #[derive(Serialize, Deserialize)] struct Sim { alpha: f64, run: u32 }
    /// # impl Process for Sim { type Output = std::collections::BTreeMap<String, f64>;
    /// #   fn run(&self, _: &ProcessContext) -> Result<Self::Output, ProcessError> {
    /// #     Ok([("energy".to_owned(), self.alpha + f64::from(self.run % 3) * 0.01)].into()) } }
    /// let space = ParameterSpace::ranges([("alpha", vec![1.0, 2.0])])?;
    /// let runs = AdaptiveRuns::new(3, 30, "energy.ci95 < 0.05")?;
    /// let op = Operation::try_sweep_adaptive("adaptive", space, runs, |p, run| Ok(Sim { alpha: p.f64("alpha")?, run }))?;
    /// assert_eq!(op.len(), None);
    /// # Ok::<(), backend_core::Error>(())
    /// ```
    pub fn try_sweep_adaptive(
        name: impl Into<String>,
        space: ParameterSpace,
        runs: crate::summary::AdaptiveRuns,
        make: impl Fn(&Params, u32) -> Result<P> + Send + 'static,
    ) -> Result<Self> {
        if space.count_within(SWEEP_COUNT_BUDGET)? == Count::Exact(0) {
            return Err(Error::ConstraintsExcludeAll {
                constraints: space.constraints().collect::<Vec<_>>().join(" && "),
            });
        }
        if let Some(first) = space.iter().next() {
            make(&first, 0)?;
        }
        let mut spec = space.describe();
        spec.insert("runs".into(), runs.describe());
        let failure = SourceFailure::default();
        let (jobs, observer) = crate::adaptive::adaptive_source(space.into_iter_owned(), runs, make, failure.clone());
        let mut operation = Self::from_parts(name.into(), jobs, None, spec)?;
        operation.failure = failure;
        operation.observer = Some(observer);
        Ok(operation)
    }
}

fn describe_space(space: &ParameterSpace, runs: u32) -> Params {
    let mut spec = space.describe();
    spec.insert("runs".into(), Value::Int(i64::from(runs)));
    spec
}
