//! How the `flow` target reads its input, shared with the regression test
//! that replays what it found (`kindling-flow/tests/fuzz_regressions.rs`):
//! records with u16 little-endian length prefixes, through the driver
//! `kindling replay` uses (a tick per second of event time) plus ticks at
//! arbitrary times, and the metrics model, with small caps that must hold.

use kindling_flow::{Config, Driver, Metrics, MetricsConfig};

/// Runs one input; panics if a cap does not hold.
pub fn run(data: &[u8]) {
    let config = Config {
        max_connections: 8,
        max_buffer: 4096,
        max_pending: 8,
        ..Config::default()
    };
    let mut driver = Driver::replay(config);
    let mut metrics = Metrics::new(MetricsConfig {
        max_series: 16,
        max_request_contents: 4,
        ..MetricsConfig::default()
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
        if driver.push_record(record, &mut out).is_ok() {
            assert!(driver.stats().connections <= 8);
            assert!(driver.pipeline().buffered_bytes() <= 8 * 2 * 4096);
        }
        if at % 7 == 0 {
            driver.tick(
                u64::from(u32::from_le_bytes([data[0], data[1], 0, 0])) << 20,
                &mut out,
            );
        }
        for o in out.drain(..) {
            metrics.observe(&o);
            let _ = serde_json::to_string(&o);
        }
    }
    driver.finish(&mut out);
    metrics.update_stats(&driver.stats());
    let _ = metrics.encode();
}
