//! The TOML configuration reader (document, typed getters, diagnostics with
//! file:line:col) on arbitrary text: no panic.
//!
//!     cd drivers/api/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run config_document corpus/config_document -- -max_total_time=300
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    edge_driver_api::fuzzing::config_document(data);
});
