//! Control-socket command lines (and `tags` filters) on arbitrary bytes: no panic.
//!
//!     cd agent/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run control_request corpus/control_request -- -max_total_time=300
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edge_agent::fuzzing::control_request(data);
});
