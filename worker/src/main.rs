//! The taskfarm-worker binary (being written).
fn main() {}
