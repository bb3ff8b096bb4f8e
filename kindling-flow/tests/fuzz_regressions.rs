//! Inputs the `flow` fuzz target found crashing (`fuzz/fuzz_targets/flow.rs`),
//! replayed the way the target reads them: records with u16 length
//! prefixes through the pipeline and the metrics model.

use kindling_probe::abi::RawLost;
use zerocopy::IntoBytes;

#[path = "../../fuzz/fuzz_targets/flow_harness.rs"]
mod flow_harness;
use flow_harness::run;

#[test]
fn every_saved_crash_runs_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions/flow");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        run(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 1);
}

/// Timestamps that make phases overflow when added (the first crash), and
/// loss markers whose counts overflow when summed.
#[test]
fn extreme_times_and_counts_saturate() {
    let mut data = Vec::new();
    for records in [u64::MAX, u64::MAX] {
        let marker = RawLost::new(records, u64::MAX);
        data.extend_from_slice(&(marker.as_bytes().len() as u16).to_le_bytes());
        data.extend_from_slice(marker.as_bytes());
    }
    run(&data);
}
