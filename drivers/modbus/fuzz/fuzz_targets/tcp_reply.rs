//! The Modbus TCP response path (tokio-modbus's MBAP framing, our decoding into
//! typed values) on arbitrary reply bytes: no panic, no stall.
//!
//!     cd drivers/modbus/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run tcp_reply corpus/tcp_reply -- -max_total_time=300
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edge_driver_modbus::fuzzing::tcp_reply(data);
});
