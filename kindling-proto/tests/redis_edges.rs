//! RESP3 types and hostile inputs the recorded peers do not produce.

use kindling_proto::redis::{Error, Kind, Message, Redis, Reply, Session, MAX_INLINE};
use kindling_proto::{Direction, Protocol, Status};

fn reply(b: &[u8]) -> (Reply<'_>, usize) {
    match Redis::parse(&mut Session::default(), Direction::Response, b) {
        Ok(Status::Complete((Message::Reply(r), used))) => (r, used),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(b)),
    }
}

#[test]
fn every_resp3_type() {
    let cases: &[(&[u8], Kind, i64)] = &[
        (b"_\r\n", Kind::Null, 0),
        (b"#t\r\n", Kind::Boolean, 1),
        (b",3.14\r\n", Kind::Double, 4),
        (b",inf\r\n", Kind::Double, 3),
        (
            b"(3492890328409238509324850943850943825024385\r\n",
            Kind::BigNumber,
            43,
        ),
        (b"!21\r\nSYNTAX invalid syntax\r\n", Kind::BulkError, 21),
        (b"=15\r\ntxt:Some string\r\n", Kind::Verbatim, 15),
        (b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", Kind::Map, 2),
        (b"~3\r\n+a\r\n+b\r\n+c\r\n", Kind::Set, 3),
        (b">3\r\n+message\r\n+chan\r\n+hi\r\n", Kind::Push, 3),
        (b"*-1\r\n", Kind::Null, 0),
        (b"$-1\r\n", Kind::Null, 0),
        (b"*2\r\n*1\r\n:1\r\n%1\r\n+k\r\n~0\r\n", Kind::Array, 2),
    ];
    for (raw, kind, size) in cases {
        let (r, used) = reply(raw);
        assert_eq!(
            (r.kind, r.size, used),
            (*kind, *size, raw.len()),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
    let (r, _) = reply(b">3\r\n+message\r\n+chan\r\n+hi\r\n");
    assert!(r.push);
    let (r, _) = reply(b"!21\r\nSYNTAX invalid syntax\r\n");
    assert_eq!((r.is_error(), r.error_code()), (true, Some("SYNTAX")));
}

#[test]
fn attributes_annotate_the_reply_that_follows() {
    let raw = b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n";
    let (r, used) = reply(raw);
    assert_eq!(
        (r.kind, r.size, r.attributed, used),
        (Kind::Array, 2, true, raw.len())
    );
}

#[test]
fn partial_is_not_an_error_at_any_cut() {
    let raw = b"%2\r\n+first\r\n$5\r\nhello\r\n+second\r\n*2\r\n:1\r\n_\r\n";
    for cut in 0..raw.len() {
        let r = Redis::parse(&mut Session::default(), Direction::Response, &raw[..cut]);
        assert!(matches!(r, Ok(Status::Partial)), "cut {cut}: {r:?}");
    }
}

#[test]
fn hostile_inputs_are_bounded_errors() {
    let s = &mut Session::default();
    let p = |s: &mut Session, b: &[u8]| Redis::parse(s, Direction::Response, b).map(|_| ());
    assert_eq!(p(s, b"$99999999999\r\n"), Err(Error::BadLength));
    assert_eq!(p(s, b"*-5\r\n"), Err(Error::BadLength));
    assert_eq!(p(s, b"*99999999999\r\n"), Err(Error::BadLength));
    assert_eq!(p(s, b"$3\r\nabcXY"), Err(Error::BadTerminator));
    assert_eq!(p(s, b"@oops\r\n"), Err(Error::BadType));
    let deep = "*1\r\n".repeat(40);
    assert_eq!(p(s, deep.as_bytes()), Err(Error::TooDeep));
    // A huge declared array with few elements present waits, it does not allocate.
    assert!(matches!(
        Redis::parse(s, Direction::Response, b"*16000000\r\n:1\r\n"),
        Ok(Status::Partial)
    ));
    let c = |b: &[u8]| Redis::parse(&mut Session::default(), Direction::Request, b).map(|_| ());
    assert_eq!(c(b"*1\r\n:5\r\n"), Err(Error::BadCommand));
    assert_eq!(c(b"*99999999999\r\n"), Err(Error::BadLength));
    assert_eq!(c(&[b'x'; MAX_INLINE + 1]), Err(Error::BadCommand));
}

/// Commands are read the way redis-server reads them (networking.c):
/// blank lines and multibulk counts ≤ 0 are skipped without an answer, and
/// any other line is an inline command, known to the server or not.
#[test]
fn commands_are_read_as_redis_server_reads_them() {
    let walk = |b: &[u8]| {
        let (mut at, mut names) = (0, Vec::new());
        let mut s = Session::default();
        while let Ok(Status::Complete((Message::Command(c), used))) =
            Redis::parse(&mut s, Direction::Request, &b[at..])
        {
            names.push(String::from_utf8_lossy(c.name).into_owned());
            at += used;
        }
        (names, at)
    };
    let raw = b"\r\n*0\r\n*-1\r\nFAKE2 COMMAND2\r\n\n*1\r\n$4\r\nPING\r\n+\r\n";
    assert_eq!(
        walk(raw),
        (vec!["FAKE2".into(), "PING".into(), "+".into()], raw.len())
    );
    // only blank lines and empty multibulks: nothing to report yet
    assert!(matches!(
        Redis::parse(&mut Session::default(), Direction::Request, b"\r\n*0\r\n"),
        Ok(Status::Partial)
    ));
}

#[test]
fn two_word_commands_keys_and_credentials() {
    let cmd = |b: &'static [u8]| match Redis::parse(&mut Session::default(), Direction::Request, b)
    {
        Ok(Status::Complete((Message::Command(c), _))) => c,
        other => panic!("{other:?}"),
    };
    let c = cmd(b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$3\r\napp\r\n");
    assert_eq!((c.operation(), c.key), ("CLIENT SETNAME".to_owned(), None));
    let c = cmd(b"*3\r\n$6\r\nmemory\r\n$5\r\nusage\r\n$4\r\nuser\r\n");
    assert_eq!(
        (c.operation(), c.key),
        ("MEMORY USAGE".to_owned(), Some(&b"user"[..]))
    );
    let c = cmd(b"*3\r\n$4\r\nAUTH\r\n$5\r\nadmin\r\n$6\r\nsecret\r\n");
    assert_eq!(c.query_text(), "AUTH ? ?");
    let c = cmd(b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\nadmin\r\n$6\r\nsecret\r\n");
    assert!(!c.query_text().contains("secret"));
    let attrs = cmd(b"*3\r\n$3\r\nSET\r\n$6\r\nuser:7\r\n$5\r\nvalue\r\n").attributes();
    assert!(attrs.contains(&("db.system.name", "redis".into())));
    assert!(attrs.contains(&("db.query.text", "SET user:7 ?".into())));
    assert!(attrs.contains(&("db.collection.name", "user:7".into())));
}

proptest::proptest! {
    /// The operation and query text are written without allocating; they
    /// must read exactly as the plain definition does for any name, key and
    /// subcommand bytes: lossy UTF-8, ASCII letters upper-cased, long names
    /// and multi-byte characters included.
    #[test]
    fn operation_and_query_text_match_their_definition(
        name in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..48),
        sub in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40),
        key in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40),
        ascii in "[a-z][a-zA-Z0-9_.:-]{0,70}",
        extra in 0usize..20,
    ) {
        let lossy_upper = |b: &[u8]| String::from_utf8_lossy(b).to_ascii_uppercase();
        for name in [&name[..], ascii.as_bytes(), b"client", b"Object"] {
            let mut wire = format!("*{}\r\n${}\r\n", 3 + extra, name.len()).into_bytes();
            wire.extend_from_slice(name);
            for arg in [&sub[..], &key[..]] {
                wire.extend_from_slice(format!("\r\n${}\r\n", arg.len()).as_bytes());
                wire.extend_from_slice(arg);
            }
            for _ in 0..extra {
                wire.extend_from_slice(b"\r\n$1\r\nx");
            }
            wire.extend_from_slice(b"\r\n");
            let Ok(Status::Complete((Message::Command(c), used))) =
                Redis::parse(&mut Session::default(), Direction::Request, &wire)
            else {
                panic!("a well-formed command did not parse");
            };
            proptest::prop_assert_eq!(used, wire.len());
            let mut operation = lossy_upper(c.name);
            if let Some(s) = c.subcommand {
                operation.push(' ');
                operation.push_str(&lossy_upper(s));
            }
            proptest::prop_assert_eq!(c.operation(), operation.clone());
            let mut text = operation.clone();
            let mut rest = c.args;
            if let Some(k) = c.key {
                text.push(' ');
                text.push_str(&String::from_utf8_lossy(k));
                rest = rest.saturating_sub(1);
            }
            for _ in 0..rest.min(16) {
                text.push_str(" ?");
            }
            if rest > 16 {
                text.push_str(" …");
            }
            proptest::prop_assert_eq!(c.query_text(), text.clone());
            // the attributes take the short path when they can: same text
            let attrs = c.attributes();
            let get = |k: &str| attrs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
            proptest::prop_assert_eq!(get("db.query.text"), Some(text));
            proptest::prop_assert_eq!(get("db.operation.name"), Some(operation));
        }
    }
}
