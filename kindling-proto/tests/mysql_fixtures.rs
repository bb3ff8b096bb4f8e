//! MySQL on conversations recorded from mariadbd with the mariadb client and
//! a raw binary-protocol client (see `fixtures/record-mysql.sh`): snapshots
//! and re-splitting.

mod common;

use std::fmt::Write as _;

use common::{fixtures, read_conversation, Segment};
use kindling_proto::mysql::{Command, Handshake, Message, MySql, Response};
use proptest::prelude::*;

fn summarize(out: &mut String, m: &Message<'_>) {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match m {
        Message::Handshake(Handshake::Greeting {
            version,
            capabilities,
            auth_plugin,
            ..
        }) => writeln!(
            out,
            "< greeting {} caps={capabilities:#x} plugin={}",
            s(version),
            auth_plugin.map(s).unwrap_or_default()
        ),
        Message::Handshake(Handshake::Login {
            user,
            database,
            auth_plugin,
            ..
        }) => writeln!(
            out,
            "> login user={} db={} plugin={}",
            s(user),
            database.map(s).unwrap_or_default(),
            auth_plugin.map(s).unwrap_or_default()
        ),
        Message::Handshake(Handshake::SslRequest) => writeln!(out, "> ssl request"),
        Message::Command(c) => match c {
            Command::Query(q) => {
                let sum = kindling_proto::sql::summarize(q);
                writeln!(
                    out,
                    "> query {} {} | {}",
                    sum.operation,
                    sum.table.unwrap_or_default(),
                    sum.normalized
                )
            }
            Command::Prepare(q) => writeln!(
                out,
                "> prepare {}",
                kindling_proto::sql::summarize(q).normalized
            ),
            other => writeln!(out, "> {other:?}"),
        },
        Message::Response(r) => match r {
            Response::Err {
                code,
                sql_state,
                message,
            } => {
                writeln!(
                    out,
                    "< error {code} {} {}",
                    sql_state.map(s).unwrap_or_default(),
                    s(message)
                )
            }
            other => writeln!(out, "< {other:?}"),
        },
    }
    .unwrap();
}

fn walk(segments: &[Segment]) -> String {
    common::walk::<MySql>(segments, summarize)
}

#[test]
fn recorded_conversations_match_snapshots() {
    common::check_fixtures("mysql", 2, walk, |name, summary| {
        assert!(!summary.contains("\nerror: "), "{name}:\n{summary}");
        insta::assert_snapshot!(name, summary);
    });
}

#[test]
fn execute_reports_the_prepared_sql() {
    let f = fixtures("mysql")
        .into_iter()
        .find(|f| f.to_string_lossy().contains("python3"))
        .unwrap();
    let mut session = Default::default();
    let mut attrs = Vec::new();
    let mut bufs: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for seg in read_conversation(&f) {
        let i = usize::from(seg.dir == kindling_proto::Direction::Response);
        bufs[i].extend_from_slice(&seg.bytes);
        while let Ok(kindling_proto::Status::Complete((m, used))) =
            <MySql as kindling_proto::Protocol>::parse(&mut session, seg.dir, &bufs[i])
        {
            let execute = matches!(m, Message::Command(Command::Execute(_)));
            let cmd = if let Message::Command(c) = m {
                Some(c)
            } else {
                None
            };
            let attributes = cmd.filter(|_| execute).map(|c| c.attributes(&session));
            if let Some(a) = attributes {
                attrs = a;
            }
            bufs[i].drain(..used);
        }
    }
    assert!(
        attrs.contains(&(
            "db.query.text",
            "SELECT name, email FROM users WHERE id = ? OR name = ?".into()
        )),
        "{attrs:?}"
    );
    assert!(attrs.contains(&("db.collection.name", "users".into())));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn any_segmentation_parses_the_same(mut cuts in proptest::collection::vec(0usize..80_000, 0..6)) {
        cuts.sort_unstable();
        common::same_after_resplit("mysql", &cuts, walk)?;
    }
}
