//! Any bytes through the record decoder: no panic, and a decoded record
//! never reaches past its input.
#![no_main]

use kindling_probe::abi::{self, Event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = abi::decode(data) {
        let size = event.header().size.get() as usize;
        assert!(size <= data.len());
        if let Event::Data(d) = event {
            assert_eq!(d.payload.len(), d.raw.cap_len.get() as usize);
        }
        // Rendering must cope with whatever fields the bytes hold.
        let _ = kindling_probe::render::to_json(&event, 0);
        let _ = kindling_probe::render::to_table_row(&event, 0);
    }
});
