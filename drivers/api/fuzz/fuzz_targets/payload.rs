//! Every device payload format (number, text, JSON, CBOR, SenML JSON/CBOR) on
//! arbitrary bytes: no panic.
//!
//!     cd drivers/api/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run payload corpus/payload -- -max_total_time=300
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edge_driver_api::fuzzing::payload(data);
});
