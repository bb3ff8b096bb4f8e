//! DNS on conversations recorded from dnsmasq answering dig over UDP and
//! TCP (see `fixtures/record-dns.sh`): snapshots of every decoded section,
//! and, for TCP, re-splitting at arbitrary boundaries.

mod common;

use std::fmt::Write as _;

use common::{byte_by_byte, fixtures, read_conversation, resplit, walk_with, Segment};
use kindling_proto::dns::{rcode_name, type_name, Dns, Message, RData, Session};
use proptest::prelude::*;

fn data(d: &RData<'_>) -> String {
    match d {
        RData::A(a) => a.to_string(),
        RData::Aaaa(a) => a.to_string(),
        RData::Cname(n) | RData::Ns(n) | RData::Ptr(n) => n.to_string(),
        RData::Mx {
            preference,
            exchange,
        } => format!("{preference} {exchange}"),
        RData::Txt(t) => format!("{:?}", String::from_utf8_lossy(t)),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => format!("{priority} {weight} {port} {target}"),
        RData::Soa {
            mname,
            rname,
            serial,
            minimum,
        } => format!("{mname} {rname} {serial} {minimum}"),
        RData::Opt { options } => format!("opt {} B", options.len()),
        RData::Unknown(b) => format!("{} B", b.len()),
        _ => "other".into(),
    }
}

fn summarize(out: &mut String, m: &Message<'_>) {
    let h = &m.header;
    let q = m
        .first_question()
        .map(|q| format!("{} {}", q.name, type_name(q.qtype)))
        .unwrap_or_default();
    if h.is_response() {
        writeln!(
            out,
            "< id={} {} {q} an={} ns={} ar={}",
            h.id(),
            rcode_name(m.rcode()),
            h.answer_count(),
            h.authority_count(),
            h.additional_count()
        )
        .unwrap();
        for r in m.answers().chain(m.authorities()).chain(m.additionals()) {
            writeln!(
                out,
                "<   {} {} ttl={} {}",
                r.name,
                type_name(r.rtype),
                r.ttl,
                data(&r.data)
            )
            .unwrap();
        }
    } else {
        writeln!(
            out,
            "> id={} opcode={} rd={} {q}",
            h.id(),
            h.opcode(),
            h.recursion_desired()
        )
        .unwrap();
    }
}

fn is_tcp(f: &std::path::Path) -> bool {
    f.to_string_lossy().ends_with("-tcp.conv")
}

fn walk(tcp: bool, segments: &[Segment]) -> String {
    let session = if tcp {
        Session::tcp()
    } else {
        Session::default()
    };
    // ids are random per run: mask them so snapshots compare content
    let s = walk_with::<Dns>(session, segments, summarize);
    s.lines()
        .map(|l| match l.find("id=") {
            Some(i) => {
                let end = l[i..].find(' ').map_or(l.len(), |e| i + e);
                format!("{}id=*{}\n", &l[..i], &l[end..])
            }
            None => format!("{l}\n"),
        })
        .collect()
}

#[test]
fn recorded_conversations_match_snapshots() {
    let files = fixtures("dns");
    assert!(files.len() >= 11, "fixtures missing: {files:?}");
    for f in &files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let summary = walk(is_tcp(f), &read_conversation(f));
        assert!(
            summary.ends_with("unparsed: request 0 B, response 0 B\n"),
            "{name}:\n{summary}"
        );
        assert!(!summary.contains("error"), "{name}:\n{summary}");
        insta::assert_snapshot!(name, summary);
    }
}

#[test]
fn responses_pair_with_queries_by_id_and_question() {
    for f in fixtures("dns") {
        let segs = read_conversation(&f);
        let mut session = if is_tcp(&f) {
            Session::tcp()
        } else {
            Session::default()
        };
        let mut queries = Vec::new();
        let mut answered = 0;
        for seg in &segs {
            let mut at = 0;
            while at < seg.bytes.len() {
                let Ok(kindling_proto::Status::Complete((m, used))) =
                    <Dns as kindling_proto::Protocol>::parse(
                        &mut session,
                        seg.dir,
                        &seg.bytes[at..],
                    )
                else {
                    panic!("{}: a whole message per segment here", f.display())
                };
                let q = m.first_question().unwrap();
                let key = (m.header.id(), q.name.to_string(), q.qtype);
                if m.header.is_response() {
                    assert!(
                        queries.contains(&key),
                        "{}: unmatched response {key:?}",
                        f.display()
                    );
                    answered += 1;
                } else {
                    queries.push(key);
                }
                at += used;
            }
        }
        assert_eq!(answered, queries.len(), "{}", f.display());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn tcp_any_segmentation_parses_the_same(mut cuts in proptest::collection::vec(0usize..400, 0..6)) {
        cuts.sort_unstable();
        for f in fixtures("dns").into_iter().filter(|f| is_tcp(f)) {
            let segs = read_conversation(&f);
            prop_assert_eq!(walk(true, &resplit(&segs, &cuts)), walk(true, &segs));
            prop_assert_eq!(walk(true, &byte_by_byte(&segs)), walk(true, &segs));
        }
    }
}
