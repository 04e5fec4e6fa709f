//! The built-in process kinds: `command` (an external program per process), `monte_carlo_pi`
//! (a small example of a typed kind), and on Unix `jsonl` and `python` (one long-lived
//! program per worker slot, spoken to in JSON lines). Each implements [`Kind`](crate::Kind);
//! the registry lists them in [`Registry::with_builtins`](crate::Registry::with_builtins).

pub mod command;
#[cfg(unix)]
pub mod jsonl;
pub mod pi;
#[cfg(unix)]
pub mod python;
