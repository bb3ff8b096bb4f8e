//! Inputs the `flow` fuzz target found crashing (`fuzz/fuzz_targets/flow.rs`),
//! replayed the way the target reads them: records with u16 length
//! prefixes through the pipeline and the metrics model.

use kindling_flow::{Config, Metrics, MetricsConfig, Pipeline};
use kindling_probe::abi::{self, RawLost};
use zerocopy::IntoBytes;

fn run(data: &[u8]) {
    let mut pipeline = Pipeline::new(Config {
        max_connections: 8,
        max_buffer: 4096,
        max_pending: 8,
        ..Config::default()
    });
    let mut metrics = Metrics::new(MetricsConfig {
        max_series: 16,
        max_request_contents: 4,
    });
    let mut out = Vec::new();
    let mut at = 0;
    while at + 2 <= data.len() {
        let len = usize::from(u16::from_le_bytes([data[at], data[at + 1]]));
        at += 2;
        let Some(record) = data.get(at..at + len) else {
            break;
        };
        at += len;
        if let Ok(event) = abi::decode(record) {
            pipeline.push(&event, &mut out);
        }
        for o in out.drain(..) {
            metrics.observe(&o);
        }
    }
    pipeline.finish(&mut out);
    metrics.update_stats(&pipeline.stats());
    let _ = metrics.encode();
}

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
