//! Any sequence of records through the flow pipeline and the metrics
//! model: records are length-prefixed (u16, little endian) in the input,
//! seeded with the captures the kindling-flow tests replay. No panic, and
//! the memory caps hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "flow_harness.rs"]
mod flow_harness;

fuzz_target!(|data: &[u8]| flow_harness::run(data));
