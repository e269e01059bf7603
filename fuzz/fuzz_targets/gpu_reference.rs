//! Fuzz target `gpu_reference`: see `fuzz/src/lib.rs` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tpde_fuzz::gpu_reference(data));
