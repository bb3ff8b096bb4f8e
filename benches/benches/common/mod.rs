//! What several benches share: the records of the captures the
//! kindling-flow tests replay, and the decode-only baseline.

use std::hint::black_box;
use std::path::Path;

use kindling_probe::abi;
use kindling_probe::capture::CaptureReader;

/// The records of these captures (`kindling-flow/tests/data/NAME.kcap`),
/// one after the other.
pub fn records(names: &[&str]) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kindling-flow/tests/data");
    let mut out = Vec::new();
    for name in names {
        let bytes = std::fs::read(dir.join(format!("{name}.kcap"))).expect("capture");
        let mut r = CaptureReader::new(&bytes[..]).expect("header");
        while let Some(rec) = r.next_record().expect("records") {
            out.push(rec.to_vec());
        }
    }
    out
}

/// The baseline: decoding every record and touching its header.
pub fn decode_only(records: &[Vec<u8>]) -> u64 {
    let mut n = 0u64;
    for r in records {
        n += u64::from(abi::decode(black_box(r)).unwrap().header().pid.get());
    }
    n
}
