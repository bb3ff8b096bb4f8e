//! Reads a `.kcap` capture and prints one line per record, with no root,
//! clang or libbpf needed: the same decoding `kindling replay` uses.
//!
//! `cargo run -p kindling-probe --no-default-features --example replay -- FILE`
//! (defaults to the capture recorded for the tests)

use kindling_probe::abi;
use kindling_probe::capture::CaptureReader;
use kindling_probe::render;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/loopback.kcap").to_owned()
    });
    let mut reader = CaptureReader::new(std::io::BufReader::new(std::fs::File::open(&path)?))?;
    println!(
        "# {} on {}",
        reader.header().writer,
        reader.header().host.kernel
    );
    let mut t0 = None;
    while let Some(record) = reader.next_record()? {
        let event = abi::decode(record)?;
        let t0 = *t0.get_or_insert(event.header().ts_ns.get());
        println!("{}", render::to_table_row(&event, t0));
    }
    Ok(())
}
