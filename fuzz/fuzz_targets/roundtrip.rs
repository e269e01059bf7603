//! Fuzz target `roundtrip`: see `fuzz/src/lib.rs` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tpde_fuzz::roundtrip_bytes(data));
