//! Every S7 reply decoder on arbitrary bytes: no panic, no out-of-bounds range.
//!
//!     cd drivers/s7/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode_reply corpus/decode_reply -- -max_total_time=300
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edge_driver_s7::fuzzing::decode_reply(data);
});
