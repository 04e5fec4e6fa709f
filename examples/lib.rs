//! Runnable examples of taskfarm; see `examples/`.
