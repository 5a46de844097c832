//! CoAP messages (parsing, acknowledgement, Observe ordering, response codes,
//! Block2 assembly, then the payload decoders) on arbitrary datagrams: no panic.
//!
//!     cd drivers/coap/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run datagrams corpus/datagrams -- -max_total_time=300
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edge_driver_coap::fuzzing::datagrams(data);
});
