//! The Modbus RTU response path (tokio-modbus's CRC framing, our decoding into
//! typed values) on arbitrary reply bytes: no panic, no stall.
//!
//!     cd drivers/modbus/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run rtu_reply corpus/rtu_reply -- -max_total_time=300
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edge_driver_modbus::fuzzing::rtu_reply(data);
});
