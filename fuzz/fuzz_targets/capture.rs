//! Any bytes as a capture file: the reader must end with a record list or a
//! clear error, never panic, and never allocate past its limits.
#![no_main]

use kindling_probe::capture::CaptureReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut reader) = CaptureReader::new(data) {
        while let Ok(Some(record)) = reader.next_record() {
            let _ = kindling_probe::abi::decode(record);
        }
    }
});
