//! Fuzz target: reading arbitrary bytes as a journal returns the intact records and what it
//! skipped (or "not a journal"), never panics.
#![no_main]

use std::path::Path;

use backend_core::journal::{read_journal_from, JOURNAL_HEADER};

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    // Most inputs should get past the header, so the record framing is what gets explored.
    let mut input = JOURNAL_HEADER.to_vec();
    input.extend_from_slice(bytes);
    let mut offsets = Vec::new();
    if let Ok(damage) = read_journal_from(&input[..], Path::new("fuzz"), |offset, _| offsets.push(offset)) {
        // Offsets grow, and a torn tail starts after every intact record.
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        if let (Some(torn), Some(last)) = (damage.torn_tail, offsets.last()) {
            assert!(torn.offset > *last);
        }
    }
    let _ = read_journal_from(bytes, Path::new("fuzz"), |_, _| {});
});
