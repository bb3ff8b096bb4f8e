//! Shared inputs for the Kindling benchmarks.
//!
//! The benches run on records the real probe recorded
//! (`kindling-probe/tests/data/loopback.kcap`), so their mix of kinds and
//! payload sizes is what the kernel emits for HTTP traffic on loopback.

use kindling_probe::capture::CaptureReader;

/// The recorded fixture.
pub const LOOPBACK_KCAP: &[u8] = include_bytes!("../../kindling-probe/tests/data/loopback.kcap");

/// Every raw record of the fixture, in order.
///
/// # Examples
///
/// ```
/// assert!(kindling_benches::fixture_records().len() > 50);
/// ```
pub fn fixture_records() -> Vec<Vec<u8>> {
    let mut reader = CaptureReader::new(LOOPBACK_KCAP).expect("fixture header");
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().expect("fixture records") {
        out.push(r.to_vec());
    }
    out
}

/// The records laid out back to back, 8-byte aligned, as in the ring buffer,
/// repeated `times`; returns the buffer and each record's (offset, len).
pub fn ring_like(records: &[Vec<u8>], times: usize) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    for _ in 0..times {
        for r in records {
            spans.push((buf.len(), r.len()));
            buf.extend_from_slice(r);
            buf.resize(buf.len().next_multiple_of(8), 0);
        }
    }
    (buf, spans)
}
