//! The `taskfarm-worker` binary: the worker's command line with the built-in kinds.
//! See the `taskfarm_worker` library for the command line, the kinds and the spec format;
//! to serve your own process kinds, write a binary like this one with your own registry.

use std::process::ExitCode;

fn main() -> ExitCode {
    taskfarm_worker::main_with(taskfarm_worker::Registry::with_builtins())
}
