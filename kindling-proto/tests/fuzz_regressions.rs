//! Inputs the fuzzers once crashed on (`tests/regressions/<target>/`),
//! replayed the way the fuzz targets feed them.

use std::path::Path;

use kindling_proto::mysql::{Message, MySql, Session};
use kindling_proto::{Direction, Protocol, Status};

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Same walk as `fuzz/fuzz_targets/mysql.rs`.
fn mysql_walk(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut s = if first & 1 == 0 {
        Session::default()
    } else {
        Session::in_command_phase()
    };
    let _ = MySql::detect(rest, Direction::Request);
    let _ = MySql::detect(rest, Direction::Response);
    let mut at = 0;
    let mut dir = if first & 2 == 0 {
        Direction::Response
    } else {
        Direction::Request
    };
    let mut stalls = 0;
    while at < rest.len() && stalls < 2 {
        match MySql::parse(&mut s, dir, &rest[at..]) {
            Ok(Status::Complete((m, used))) => {
                assert!(used > 0 && at + used <= rest.len());
                if let Message::Command(c) = m {
                    let _ = c.attributes(&s);
                }
                at += used;
                stalls = 0;
            }
            _ => stalls += 1,
        }
        dir = if dir == Direction::Request {
            Direction::Response
        } else {
            Direction::Request
        };
    }
}

#[test]
fn mysql_regressions_do_not_panic() {
    let all = inputs("mysql");
    assert!(!all.is_empty());
    for input in all {
        mysql_walk(&input);
    }
}
