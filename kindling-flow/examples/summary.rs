//! Runs a capture through the pipeline and the metrics model, without root:
//!
//! ```sh
//! cargo run -p kindling-flow --example summary [FILE.kcap]
//! ```
//!
//! With no file it reads the nginx + curl capture the tests replay.

use kindling_flow::{Config, Metrics, MetricsConfig, Output, Replay};
use kindling_probe::capture::CaptureReader;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/http1.kcap").to_owned()
    });
    let file = std::fs::File::open(&path)?;
    let reader = CaptureReader::new(std::io::BufReader::new(file))?;
    let config = Config::from_capture(reader.header());
    let mut replay = Replay::new(reader, config);
    let mut metrics = Metrics::new(MetricsConfig::default());
    let mut out = Vec::new();
    while replay.step(&mut out)?.is_some() {}
    replay.finish(&mut out);
    for o in &out {
        if let Output::Exchange(x) = o {
            println!(
                "{:?} {} {} → {} in {} µs",
                x.role,
                x.protocol,
                x.attributes
                    .get("url.path")
                    .or(x.attributes.get("db.query.text"))
                    .unwrap_or(""),
                x.attributes.get("http.response.status_code").unwrap_or(""),
                x.duration_ns / 1000
            );
        }
        metrics.observe(o);
    }
    metrics.update_stats(&replay.stats());
    let text = metrics.encode();
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    println!("{series} metric series; {:?}", replay.stats());
    if replay.undecodable() > 0 {
        println!("{} records did not decode", replay.undecodable());
    }
    Ok(())
}
