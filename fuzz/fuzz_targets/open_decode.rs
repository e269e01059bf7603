//! Fuzz target `open_decode`: see `fuzz/src/lib.rs` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tpde_fuzz::open_decode(data));
