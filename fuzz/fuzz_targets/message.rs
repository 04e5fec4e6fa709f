//! Fuzz target: decoding arbitrary bytes as an MPI message returns (Ok or Err), never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = backend_mpi::decode_for_fuzzing(bytes);
});
