//! Capture files and decoding, on a capture the real probe recorded
//! (`tests/data/loopback.kcap`, see `record-fixture.sh`). No root needed.

use std::collections::BTreeMap;

use kindling_probe::abi::{self, Event, Syscall};
use kindling_probe::capture::{CaptureError, CaptureHeader, CaptureReader, CaptureWriter};
use proptest::prelude::*;

const FIXTURE: &[u8] = include_bytes!("data/loopback.kcap");
/// The same traffic recorded by the probe of event ABI 1, before records
/// named their network namespace: read through the upgrade.
const FIXTURE_ABI1: &[u8] = include_bytes!("data/loopback-abi1.kcap");

fn read_all(bytes: &[u8]) -> (Vec<Vec<u8>>, Result<(), CaptureError>) {
    let mut r = match CaptureReader::new(bytes) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some(rec)) => out.push(rec.to_vec()),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

fn fixture_records() -> Vec<Vec<u8>> {
    records_of(FIXTURE)
}

fn records_of(file: &[u8]) -> Vec<Vec<u8>> {
    let (recs, end) = read_all(file);
    end.expect("fixture reads cleanly");
    recs
}

/// Byte offset where each record's frame ends, from the header's end on.
fn frame_ends(bytes: &[u8], records: &[Vec<u8>]) -> Vec<usize> {
    let total: usize = records.iter().map(|r| r.len() + 8).sum();
    let mut at = bytes.len() - total;
    let mut ends = vec![at];
    for r in records {
        at += r.len() + 8;
        ends.push(at);
    }
    ends
}

#[test]
fn fixture_header_describes_the_recording() {
    let r = CaptureReader::new(FIXTURE).unwrap();
    let h = r.header();
    assert_eq!(h.abi_version, abi::ABI_VERSION);
    assert_eq!(h.probe.snaplen, 512);
    assert_eq!(h.probe.ports, vec![18080, 18081, 18082]);
    assert!(!h.host.kernel.is_empty());
    assert!(
        h.host.boottime_to_unix_ns > 1_600_000_000_000_000_000,
        "a plausible epoch offset"
    );
}

#[test]
fn fixture_decodes_completely_and_matches_what_the_clients_did() {
    clients_did_what_the_script_says(&fixture_records());
}

#[test]
fn an_abi1_capture_reads_through_the_upgrade() {
    let r = CaptureReader::new(FIXTURE_ABI1).unwrap();
    assert_eq!(r.header().abi_version, 1);
    assert_eq!(r.header().struct_sizes["ke_sock"], 48);
    let recs = records_of(FIXTURE_ABI1);
    clients_did_what_the_script_says(&recs);
    for r in &recs {
        let e = abi::decode(r).unwrap();
        assert_eq!(e.sock().netns(), None, "ABI 1 did not record namespaces");
    }
    // a record too short for a tuple stays too short (the decoder refuses
    // it) rather than being padded into something that decodes
    let mut header = r.header().clone();
    header.host.hostname = "upgrade".into();
    let mut file = Vec::new();
    let mut w = CaptureWriter::new(&mut file, &header).unwrap();
    w.write_record(&recs[0][..60]).unwrap();
    w.finish().unwrap();
    let (short, end) = read_all(&file);
    end.unwrap();
    assert_eq!(short[0].len(), 60);
    assert!(abi::decode(&short[0]).is_err());
}

#[test]
fn socket_records_name_the_host_network_namespace() {
    let r = CaptureReader::new(FIXTURE).unwrap();
    let host = r
        .header()
        .host
        .host_netns
        .expect("the recorder names the host's namespace");
    let recs = fixture_records();
    let mut named = 0;
    for rec in &recs {
        let e = abi::decode(rec).unwrap();
        if matches!(e, Event::Lost(_)) {
            continue;
        }
        // every socket of the script lived in the host's namespace
        assert_eq!(e.sock().netns(), Some(host), "{e:?}");
        named += 1;
    }
    assert!(named > 20, "{named} records");
}

fn clients_did_what_the_script_says(recs: &[Vec<u8>]) {
    let events: Vec<Event<'_>> = recs.iter().map(|r| abi::decode(r).unwrap()).collect();
    let mut kinds = BTreeMap::new();
    for e in &events {
        *kinds.entry(e.kind_name()).or_insert(0) += 1;
    }
    // The script ran three curls against http.server, two refused connects,
    // one UDP datagram to a closed port.
    let requests: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) if d.payload.starts_with(b"GET / HTTP/1.1\r\n") => Some(d),
            _ => None,
        })
        .collect();
    // each request is seen twice: curl's send and the server's receive
    assert_eq!(requests.len(), 6, "{kinds:?}");
    assert_eq!(
        requests
            .iter()
            .filter(|d| d.syscall() == Syscall::Sendto)
            .count(),
        3
    );
    let refused: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Tcp(t) if t.raw.reset_dir == 2))
        .collect();
    assert_eq!(refused.len(), 2, "two refused connects, each reset");
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Data(d) if d.payload == b"hello udp")));
    // 899-byte directory listings were cut at snaplen 512
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Data(d) if d.is_truncated() && d.raw.cap_len.get() == 512)));
    for e in &events {
        if let Event::Data(d) = e {
            assert!(d.raw.cap_len.get() <= d.raw.len.get().max(d.raw.cap_len.get()));
            assert!(d.raw.ts_enter_ns.get() <= d.raw.hdr.ts_ns.get());
        }
    }
}

#[test]
fn rewriting_the_fixture_is_byte_identical_in_records() {
    let recs = fixture_records();
    let header = CaptureReader::new(FIXTURE).unwrap().header().clone();
    let mut out = Vec::new();
    let mut w = CaptureWriter::new(&mut out, &header).unwrap();
    for r in &recs {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(out, FIXTURE, "same header and records give the same file");
}

#[test]
fn bad_headers_are_rejected_with_clear_errors() {
    assert!(matches!(
        CaptureReader::new(&b"PCAPNG.."[..]),
        Err(CaptureError::BadMagic)
    ));
    assert!(matches!(
        CaptureReader::new(&b""[..]),
        Err(CaptureError::Truncated { .. })
    ));
    let mut v = FIXTURE.to_vec();
    v[8] = 99; // format version
    assert!(matches!(
        CaptureReader::new(&v[..]),
        Err(CaptureError::UnsupportedFormat(99))
    ));
    let mut v = FIXTURE.to_vec();
    v[10] = 77; // ABI version
    assert!(matches!(
        CaptureReader::new(&v[..]),
        Err(CaptureError::AbiMismatch { found: 77, .. })
    ));
    let mut v = FIXTURE.to_vec();
    v[12] = if cfg!(target_endian = "little") { 2 } else { 1 };
    assert!(matches!(
        CaptureReader::new(&v[..]),
        Err(CaptureError::ByteOrder)
    ));
    let mut v = FIXTURE.to_vec();
    v[30] ^= 0x20; // inside the JSON header
    assert!(matches!(
        CaptureReader::new(&v[..]),
        Err(CaptureError::BadHeader(_))
    ));
    let msg = CaptureError::AbiMismatch {
        found: 2,
        expected: 1,
    }
    .to_string();
    assert_eq!(
        msg,
        "capture holds event ABI version 2; this build decodes version 1"
    );
}

#[test]
fn a_killed_recorder_leaves_a_readable_file() {
    // Simulate: header and some records flushed, then the process dies in
    // the middle of a record.
    let recs = fixture_records();
    let ends = frame_ends(FIXTURE, &recs);
    let cut = ends[10] + 5;
    let (got, end) = read_all(&FIXTURE[..cut]);
    assert_eq!(got, recs[..10].to_vec());
    match end {
        Err(CaptureError::Truncated { offset, records }) => {
            assert_eq!(records, 10);
            assert_eq!(offset as usize, ends[10]);
        }
        other => panic!("expected truncation, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Cut anywhere: every complete record before the cut comes back, then
    /// a clean end (cut on a boundary) or a Truncated error.
    #[test]
    fn any_cut_point_yields_every_complete_record(cut in 0usize..=FIXTURE.len()) {
        let recs = fixture_records();
        let ends = frame_ends(FIXTURE, &recs);
        let (got, end) = read_all(&FIXTURE[..cut]);
        if cut < ends[0] {
            prop_assert!(got.is_empty());
            prop_assert!(end.is_err());
        } else {
            let complete = ends.iter().filter(|&&e| e <= cut).count() - 1;
            prop_assert_eq!(&got[..], &recs[..complete]);
            if ends.contains(&cut) {
                prop_assert!(end.is_ok());
            } else {
                let is_truncated = matches!(end, Err(CaptureError::Truncated { .. }));
                prop_assert!(is_truncated);
            }
        }
    }

    /// Damage any byte: the reader never panics, what it yields is a prefix
    /// of the true records, and damage inside the records is reported.
    #[test]
    fn any_corrupted_byte_is_detected(pos in 0usize..FIXTURE.len(), flip in 1u8..=255) {
        let recs = fixture_records();
        let ends = frame_ends(FIXTURE, &recs);
        let mut v = FIXTURE.to_vec();
        v[pos] ^= flip;
        let (got, end) = read_all(&v);
        prop_assert!(got.len() <= recs.len());
        prop_assert_eq!(&got[..], &recs[..got.len()]);
        if pos >= ends[0] {
            // the damaged frame and everything after it are not returned
            let damaged = ends.iter().filter(|&&e| e <= pos).count() - 1;
            prop_assert_eq!(got.len(), damaged);
            prop_assert!(end.is_err());
        }
    }

    /// Decoding arbitrary bytes never panics.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = abi::decode(&bytes);
    }

    /// Nor does decoding real records with random damage, and a record that
    /// still decodes stays within its bytes.
    #[test]
    fn damaged_real_records_never_panic(idx in 0usize..80, pos in 0usize..700, val in any::<u8>()) {
        let recs = fixture_records();
        let mut r = recs[idx % recs.len()].clone();
        let p = pos % r.len();
        r[p] = val;
        if let Ok(Event::Data(d)) = abi::decode(&r) {
            prop_assert!(d.payload.len() + size_of::<abi::RawData>() <= r.len());
        }
    }
}

#[test]
fn decode_rejects_inconsistent_sizes() {
    let recs = fixture_records();
    let data = recs
        .iter()
        .find(|r| matches!(abi::decode(r), Ok(Event::Data(_))))
        .unwrap();
    // shorter than the header claims
    assert!(matches!(
        abi::decode(&data[..data.len() - 1]),
        Err(abi::DecodeError::BadSize { .. })
    ));
    // cap_len disagreeing with size
    let mut bad = data.clone();
    let cap_off = std::mem::offset_of!(abi::RawData, cap_len);
    bad[cap_off] = bad[cap_off].wrapping_add(1);
    assert!(abi::decode(&bad).is_err());
    // unknown kind
    let mut bad = data.clone();
    bad[0] = 0xee;
    assert_eq!(
        abi::decode(&bad).unwrap_err(),
        abi::DecodeError::UnknownKind(u16::from_ne_bytes([0xee, data[1]]))
    );
    let _ = CaptureHeader::for_this_host(Default::default());
}

/// The recorder's loss markers travel through a capture like any record,
/// and captures written before `ke_lost` existed (the ABI 1 fixture)
/// still read.
#[test]
fn loss_markers_round_trip_and_older_captures_still_read() {
    let header = CaptureReader::new(FIXTURE_ABI1).unwrap().header().clone();
    assert!(
        !header.struct_sizes.contains_key("ke_lost"),
        "an older capture"
    );
    let mut bytes = Vec::new();
    let mut w =
        CaptureWriter::new(&mut bytes, &CaptureHeader::for_this_host(header.probe)).unwrap();
    let marker = abi::RawLost::new(7, 42);
    w.write_record(zerocopy::IntoBytes::as_bytes(&marker))
        .unwrap();
    w.finish().unwrap();
    let (recs, end) = read_all(&bytes);
    end.unwrap();
    let Ok(Event::Lost(l)) = abi::decode(&recs[0]) else {
        panic!("a loss marker")
    };
    assert_eq!((l.raw.records.get(), l.raw.hdr.ts_ns.get()), (7, 42));
    assert_eq!(abi::decode(&recs[0]).unwrap().kind_name(), "lost");
    // a capture naming a layout this build does not have is refused
    let mut h = CaptureHeader::for_this_host(Default::default());
    h.struct_sizes.insert("ke_data".into(), 999);
    let mut odd = Vec::new();
    CaptureWriter::new(&mut odd, &h).unwrap().finish().unwrap();
    assert!(matches!(
        CaptureReader::new(&odd[..]),
        Err(CaptureError::BadHeader(_))
    ));
}
