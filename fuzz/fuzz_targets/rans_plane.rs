//! Fuzz target `rans_plane`: see `fuzz/src/lib.rs` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tpde_fuzz::rans_plane(data));
