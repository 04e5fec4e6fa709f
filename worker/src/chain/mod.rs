//! Chains of operations on the command line: `run CHAIN`, `validate CHAIN`,
//! `report CHAIN_DIR`, and the first rows of `summary.csv` in `report`.
//!
//! A chain file (TOML or YAML, `kind = "chain"`) lists stages, each an operation given inline
//! or by the path of its spec (`spec = "simulate.toml"`, relative to the chain file):
//!
//! ```toml
//! kind = "chain"
//! name = "campaign"                  # optional: the file's stem by default
//!
//! [[stages]]
//! name = "simulate"
//! spec = "simulate.toml"
//! outputs = ["energy"]               # optional: the output fields later stages may name,
//!                                    # checked before anything runs
//! [[stages]]
//! name = "analyse"
//! from = "simulate"                  # its processes come from simulate's finished rows
//! group_by = ["alpha"]               # one process per alpha (or `all = true`: one process)
//! require = "all"                    # optional: a crashed row of simulate fails the chain
//! kind = "command"
//! command = ["python3", "fit.py", "{input}", "{alpha}"]
//! ```
//!
//! With `from` alone a stage has one process per finished row of that stage, whose
//! parameters are the row's parameters and output fields (and `from_id`, `from_run`); with
//! `group_by` one per group of rows, with the group's values, `input` (a JSON file holding
//! the group's rows, in the stage's `inputs/`) and `rows` (how many); with `all = true` one
//! process with `input` and `rows`. Crashed rows are skipped and counted, unless
//! `require = "all"`.
//!
//! A chain runs into `<results>/<name>/<UTC timestamp>/`: `chain.toml` (the chain as run,
//! every stage inline) and one usual result directory per stage, named after it. Every
//! stage is run as a resumable run of its own directory, so `--resume CHAIN_DIR` finishes
//! each stage with each process exactly once; a stage whose processes all have a record
//! runs nothing again.
//!
//! This module holds what a chain is ([`Chain`], [`Stage`], [`Source`]) and what running one
//! takes ([`ChainArgs`]); `load` reads and checks a chain file and writes the chain as run,
//! `builder` makes a chain in code, `run` runs its stages, and `inspect` is `validate`,
//! `report` and the summary rows.

mod builder;
mod inspect;
mod load;
mod run;

use std::path::PathBuf;

use taskfarm::Params;

pub use builder::ChainBuilder;
pub use inspect::{adaptive_points_left, chain_dir, print_summary, report, validate};
pub use load::is_chain_file;
pub use run::{run, run_chain};

/// The file of a chain's result directory that holds the chain as run.
pub const CHAIN_TOML: &str = "chain.toml";

/// Where a stage's processes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Its own parameter space.
    Sweep,
    /// One process per finished row of the stage named.
    Rows(String),
    /// One process per group of finished rows of the stage, by the values of the columns.
    Groups(String, Vec<String>),
    /// One process over every finished row of the stage.
    All(String),
}

impl Source {
    /// The stage it reads, if any.
    pub fn from(&self) -> Option<&str> {
        match self {
            Source::Sweep => None,
            Source::Rows(from) | Source::Groups(from, _) | Source::All(from) => Some(from),
        }
    }
}

/// One stage of a chain.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its name: the operation's name and its directory's.
    pub name: String,
    /// Where its processes come from.
    pub source: Source,
    /// Whether a crashed row of its source fails the chain (else it is skipped and counted).
    pub require_all: bool,
    /// The output fields it declares (for later stages to be checked before anything runs).
    pub outputs: Option<Vec<String>>,
    /// Its spec document, `name` set.
    pub doc: Params,
    /// The file its relative paths are read from (its spec file, or the chain file).
    pub file: PathBuf,
}

/// A loaded and checked chain, its stages in an order in which each comes after its source.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The chain file.
    pub path: PathBuf,
    /// The chain's name (its directory under the results).
    pub name: String,
    /// The backend the chain asks for, if any.
    pub backend: Option<String>,
    /// The stages.
    pub stages: Vec<Stage>,
}

/// What `run CHAIN` takes from the command line.
#[derive(Debug, Clone)]
pub struct ChainArgs {
    /// The backend, if given.
    pub backend: Option<String>,
    /// Threads of the local backend.
    pub pool_size: Option<usize>,
    /// Where the chain's directory goes.
    pub results: PathBuf,
    /// The chain directory to finish.
    pub resume: Option<PathBuf>,
    /// No progress display.
    pub quiet: bool,
}
