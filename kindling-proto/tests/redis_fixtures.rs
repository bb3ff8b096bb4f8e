//! RESP on conversations recorded from redis-server with redis-cli (RESP2,
//! RESP3 via HELLO 3, errors, pub/sub), redis-benchmark (16 commands per
//! write) and a raw client sending inline commands (see
//! `fixtures/record-redis.sh`); snapshots plus re-splitting properties.

mod common;

use std::fmt::Write as _;

use common::{byte_by_byte, fixtures, read_conversation, Segment};
use kindling_proto::redis::{Message, Redis};
use proptest::prelude::*;

fn summarize(out: &mut String, m: &Message<'_>) {
    match m {
        Message::Command(c) => {
            let key = c
                .key
                .map(|k| format!(" key={}", String::from_utf8_lossy(k)))
                .unwrap_or_default();
            let inline = if c.inline { " inline" } else { "" };
            writeln!(
                out,
                "> {} args={}{key}{inline} | {}",
                c.operation(),
                c.args,
                c.query_text()
            )
            .unwrap();
        }
        Message::Reply(r) => {
            let err = r
                .error
                .map(|e| {
                    format!(
                        " error={:?} code={}",
                        String::from_utf8_lossy(e),
                        r.error_code().unwrap_or("-")
                    )
                })
                .unwrap_or_default();
            let push = if r.push { " push" } else { "" };
            writeln!(out, "< {:?} size={}{err}{push}", r.kind, r.size).unwrap();
        }
    }
}

fn walk(segments: &[Segment]) -> String {
    common::walk::<Redis>(segments, summarize)
}

/// Collapses runs of identical lines (pipelined benchmarks) for readable snapshots.
fn collapse(s: &str) -> String {
    let mut out = String::new();
    let mut lines = s.lines().peekable();
    while let Some(l) = lines.next() {
        let mut n = 1;
        while lines.peek() == Some(&l) {
            lines.next();
            n += 1;
        }
        if n > 1 {
            writeln!(out, "{l}  (x{n})").unwrap();
        } else {
            writeln!(out, "{l}").unwrap();
        }
    }
    out
}

#[test]
fn recorded_conversations_match_snapshots() {
    common::check_fixtures("redis", 7, walk, |name, summary| {
        assert!(!summary.contains("error: "), "{name}:\n{summary}");
        insta::assert_snapshot!(name, collapse(summary));
    });
}

#[test]
fn every_command_gets_exactly_one_non_push_reply() {
    for f in fixtures("redis") {
        let summary = walk(&read_conversation(&f));
        let commands = summary.lines().filter(|l| l.starts_with("> ")).count();
        let replies = summary
            .lines()
            .filter(|l| l.starts_with("< ") && !l.ends_with(" push"))
            .count();
        // A SUBSCRIBE's confirmation is its reply; later messages are pushes.
        assert_eq!(commands, replies, "{}:\n{summary}", f.display());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_segmentation_parses_the_same(mut cuts in proptest::collection::vec(0usize..40_000, 0..6)) {
        cuts.sort_unstable();
        common::same_after_resplit("redis", &cuts, walk)?;
    }

    #[test]
    fn byte_by_byte_is_the_same(idx in 2usize..8) {
        // the small conversations (the COMMAND DOCS ones are 200 KiB)
        let files = fixtures("redis");
        let segs = read_conversation(&files[idx % files.len()]);
        prop_assert_eq!(walk(&byte_by_byte(&segs)), walk(&segs));
    }
}
