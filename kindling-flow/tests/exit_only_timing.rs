//! The probe captures data syscalls and accept at their exit alone (issue
//! 12): such a record's entry time is its exit time. The captures in
//! `tests/data/` were recorded when both times were known. Replayed with
//! each entry time set to its exit time, they must give the same exchanges,
//! each timestamp and phase moved by at most the longest send syscall of
//! the capture (a send now starts when its syscall returned, not when it
//! was entered; nothing else moves).

mod common;

use common::{assert_phases_add_up, exchanges, records_and_header, run, summary};
use kindling_flow::{Config, Role};
use kindling_probe::abi::{kind, RawConn, RawData, RecordHeader};
use zerocopy::FromBytes;

/// `records` as the exit-only probe would have written them, and the
/// longest send among them (exit minus entry), ns.
fn exit_only(records: &[Vec<u8>]) -> (Vec<Vec<u8>>, u64) {
    let mut longest = 0;
    let out = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let kind = RecordHeader::ref_from_prefix(&r).map_or(0, |(h, _)| h.kind.get());
            if kind == kind::DATA {
                let (d, _) = RawData::mut_from_prefix(&mut r).expect("a data record");
                // only a send's start came from its entry
                if d.direction == 0 {
                    let took = d.hdr.ts_ns.get().saturating_sub(d.ts_enter_ns.get());
                    longest = longest.max(took);
                }
                d.ts_enter_ns = d.hdr.ts_ns;
            } else if kind == kind::ACCEPT {
                let (c, _) = RawConn::mut_from_prefix(&mut r).expect("an accept record");
                c.ts_enter_ns = c.hdr.ts_ns;
            }
            r
        })
        .collect();
    (out, longest)
}

#[test]
fn exit_only_timestamps_agree_with_entry_and_exit_ones() {
    for name in ["http1", "mysql", "redis", "dns", "failures", "wrk"] {
        let (records, header) = records_and_header(name);
        let config = || Config {
            boottime_to_unix_ns: header.host.boottime_to_unix_ns,
            drop_reasons: header.host.drop_reasons.clone(),
            ..Config::default()
        };
        let (before, _) = run(&records, config());
        let (changed, longest) = exit_only(&records);
        let (after, _) = run(&changed, config());
        for role in [Role::Client, Role::Server] {
            assert_eq!(
                summary(&before, role),
                summary(&after, role),
                "{name}: the same exchanges"
            );
        }
        let (old, new) = (exchanges(&before), exchanges(&after));
        assert_eq!(old.len(), new.len(), "{name}");
        assert!(!old.is_empty(), "{name}: exchanges to compare");
        let mut moved = 0u64;
        for (o, n) in old.iter().zip(&new) {
            let mut within = |what: &str, a: u64, b: u64| {
                let d = a.abs_diff(b);
                assert!(
                    d <= longest,
                    "{name}: {what} moved {d} ns, more than the longest send \
                     ({longest} ns): {o:?} vs {n:?}"
                );
                moved = moved.max(d);
            };
            within("start", o.ts.unsigned_abs(), n.ts.unsigned_abs());
            within("duration", o.duration_ns, n.duration_ns);
            within("send", o.phases.send, n.phases.send);
            within("wait", o.phases.wait, n.phases.wait);
            within("download", o.phases.download, n.phases.download);
            assert_eq!(
                o.phases.connect, n.phases.connect,
                "{name}: connect is timed at entry"
            );
            assert_phases_add_up(name, n);
        }
        println!(
            "{name}: {} exchanges, largest move {moved} ns, longest send {longest} ns",
            old.len()
        );
    }
}
