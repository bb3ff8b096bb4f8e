//! The flow bench's pipeline (+ metrics) loop for a fixed number of passes
//! over the mixed capture, for instruction counts that a noisy machine
//! cannot blur: `valgrind --tool=callgrind` at 10 and at 40 passes, and
//! (I₄₀ − I₁₀) / 30 is the cost of one pass (BENCHMARKS.md, issue 10).
//!
//! ```sh
//! cargo build --release -p kindling-benches --example ab_flow
//! valgrind --tool=callgrind target/release/examples/ab_flow 40 plain   # or `metrics`
//! ```
use std::hint::black_box;
use std::time::Instant;

use kindling_flow::{Config, Metrics, MetricsConfig, Pipeline};

use kindling_probe::abi;

#[path = "../benches/common/mod.rs"]
#[allow(
    dead_code,
    reason = "the benches' decode-only baseline is not used here"
)]
mod common;
use common::records;

fn main() {
    let mixed = records(&["http1", "redis", "mysql", "dns", "failures", "wrk"]);
    let passes: usize = std::env::args().nth(1).map_or(300, |a| a.parse().unwrap());
    let with_metrics = std::env::args().nth(2).as_deref() == Some("metrics");
    let mut m = Metrics::new(MetricsConfig::default());
    let mut best = f64::MAX;
    for _ in 0..passes {
        let t = Instant::now();
        let mut p = Pipeline::new(Config::default());
        let mut out = Vec::with_capacity(1024);
        for r in &mixed {
            p.push(&abi::decode(black_box(r)).unwrap(), &mut out);
            if with_metrics {
                out.iter().for_each(|o| m.observe(o));
            }
            p.reuse(&mut out);
        }
        p.finish(&mut out);
        if with_metrics {
            out.iter().for_each(|o| m.observe(o));
        }
        black_box(out.len());
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{} records, best pass {:.1} us = {:.2} M records/s",
        mixed.len(),
        best * 1e6,
        mixed.len() as f64 / best / 1e6
    );
}
