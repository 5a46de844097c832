//! Journal segments and records (recovery's scan, the envelope decoder) on
//! arbitrary bytes: no panic, records inside the buffer, sequences increasing.
//!
//!     cd agent/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run journal corpus/journal -- -max_total_time=300
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edge_agent::fuzzing::journal(data);
});
