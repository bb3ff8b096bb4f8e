//! MySQL connections joined mid-way, failed logins and refusals, and
//! COM_FIELD_LIST: what the recorded fixtures (which start at the greeting)
//! do not show.

use kindling_proto::mysql::{Command, Handshake, Message, MySql, Response, Session};
use kindling_proto::{Detect, Direction, Protocol, Status, Summarize, Summary, SummaryOptions};

/// A packet: header and payload.
fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = n.to_le_bytes()[..3].to_vec();
    v.push(seq);
    v.extend_from_slice(payload);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn parse<'a>(s: &mut Session, dir: Direction, b: &'a [u8]) -> (Message<'a>, usize) {
    match MySql::parse(s, dir, b) {
        Ok(Status::Complete(m)) => m,
        other => panic!("{other:?}"),
    }
}

/// A column definition packet's payload (catalog `def` first).
fn coldef(name: &str) -> Vec<u8> {
    let mut p = vec![3, b'd', b'e', b'f', 0, 0, 0];
    p.push(name.len() as u8);
    p.extend_from_slice(name.as_bytes());
    p.extend([0, 0x0c, 0x21, 0, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    p
}

const EOF: [u8; 5] = [0xfe, 0, 0, 2, 0];
const OK: [u8; 7] = [0, 0, 0, 2, 0, 0, 0];

fn login() -> Vec<u8> {
    // PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH, max packet, charset,
    // 23 reserved zero bytes, user, auth (20 bytes), plugin
    let mut p = (0x200u32 | 0x8000 | 0x80000).to_le_bytes().to_vec();
    p.extend((1u32 << 24).to_le_bytes());
    p.push(33);
    p.extend([0; 23]);
    p.extend(b"app\0");
    p.push(20);
    p.extend([7; 20]);
    p.extend(b"mysql_native_password\0");
    pkt(1, &p)
}

#[test]
fn first_commands_of_joined_connections_are_recognised() {
    let yes: Vec<Vec<u8>> = vec![
        pkt(0, &[0x0e]),                                              // PING
        pkt(0, &[0x01]),                                              // QUIT
        pkt(0, &[0x09]),                                              // STATISTICS
        pkt(0, &[0x1f]),                                              // RESET_CONNECTION
        pkt(0, b"\x03SELECT 1"),                                      // QUERY
        pkt(0, b"\x03\x00\x01SELECT 1"),                              // QUERY with query attributes
        pkt(0, b"\x16SELECT ? FROM t"),                               // STMT_PREPARE
        pkt(0, &[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0]),                   // STMT_EXECUTE
        pkt(0, &[0x19, 1, 0, 0, 0]),                                  // STMT_CLOSE
        cat(&[pkt(0, &[0x19, 1, 0, 0, 0]), pkt(0, b"\x03SELECT 1")]), // CLOSE then a query
        pkt(0, &[0x1a, 1, 0, 0, 0]),                                  // STMT_RESET
        pkt(0, &[0x1b, 1, 0]),                                        // SET_OPTION
        pkt(0, b"\x02shop"),                                          // INIT_DB
        pkt(0, b"\x04users\0"),                                       // FIELD_LIST
        pkt(0, b"\x11app\0\x14"),                                     // CHANGE_USER
        login(),
    ];
    for b in &yes {
        assert_eq!(MySql::detect(b, Direction::Request), Detect::Match, "{b:?}");
        let s = Session::for_first(b, Direction::Request);
        assert_eq!(s.is_command_phase(), b[3] == 0, "{b:?}");
    }
    let no: Vec<Vec<u8>> = vec![
        cat(&[pkt(0, &[0x0e]), vec![1, 2, 3]]), // PING with more in the syscall
        pkt(0, &[0x0e, 0]),                     // PING of 2 bytes
        pkt(1, &[0x0e]),                        // not sequence 0
        pkt(0, b"\x03\x01\x02\x03binary"),      // not text
        pkt(0, b"\x02sh\0p"),                   // a NUL in a schema name
        pkt(0, &[0x17, 1, 0, 0, 0, 0, 2, 0, 0, 0]), // EXECUTE iterations 2
        pkt(0, &[0x19, 1, 0, 0]),               // CLOSE too short
        pkt(0, &[0x1b, 5, 0]),                  // SET_OPTION 5
        pkt(0, &[0x20]),                        // not a command
        {
            let mut l = login();
            l[4 + 20] = 1; // a reserved byte set
            l
        },
        {
            let mut l = login();
            l[4 + 1] = 0; // no PROTOCOL_41
            l
        },
    ];
    for b in &no {
        assert_eq!(
            MySql::detect(b, Direction::Request),
            Detect::NoMatch,
            "{b:?}"
        );
    }
}

#[test]
fn a_refusal_instead_of_the_greeting_is_recognised_and_reported() {
    let err = pkt(0, b"\xff\x10\x04Too many connections");
    assert_eq!(MySql::detect(&err, Direction::Response), Detect::Match);
    // an ERR answering a command has sequence 1, and is no beginning
    let answer = pkt(1, b"\xff\x10\x04Too many connections");
    assert_eq!(MySql::detect(&answer, Direction::Response), Detect::NoMatch);
    let mut s = Session::for_first(&err, Direction::Response);
    let (m, used) = parse(&mut s, Direction::Response, &err);
    assert_eq!(used, err.len());
    let mut a = Vec::new();
    let summary = MySql::summarize(&mut s, &m, &SummaryOptions::default(), &mut a);
    assert!(matches!(
        summary,
        Summary::Response {
            failure: Some(_),
            ..
        }
    ));
    let get = |k| a.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("db.operation.name"), Some("CONNECT"));
    assert_eq!(get("db.response.status_code"), Some("1040"));
    assert_eq!(
        get("db.response.error_message"),
        Some("Too many connections")
    );
}

#[test]
fn a_login_is_a_request_answered_by_its_verdict() {
    let b = login();
    let mut s = Session::for_first(&b, Direction::Request);
    let (m, _) = parse(&mut s, Direction::Request, &b);
    assert!(matches!(
        m,
        Message::Handshake(Handshake::Login { user: b"app", .. })
    ));
    let mut a = Vec::new();
    let o = SummaryOptions::default();
    assert!(matches!(
        MySql::summarize(&mut s, &m, &o, &mut a),
        Summary::Request { answered: true, .. }
    ));
    assert!(a.contains(&("db.operation.name", "LOGIN".to_owned())));
    // an authentication switch is a step, the ERR the verdict
    let switch = pkt(2, b"\xfemysql_native_password\0abcdefghij0123456789\0");
    let (m, _) = parse(&mut s, Direction::Response, &switch);
    assert_eq!(
        MySql::summarize(&mut s, &m, &o, &mut Vec::new()),
        Summary::Ignore
    );
    let data = pkt(3, &[9; 20]);
    let (m, _) = parse(&mut s, Direction::Request, &data);
    assert_eq!(
        MySql::summarize(&mut s, &m, &o, &mut Vec::new()),
        Summary::Ignore
    );
    let denied = pkt(
        4,
        b"\xff\x15\x04#28000Access denied for user 'app'@'localhost'",
    );
    let (m, _) = parse(&mut s, Direction::Response, &denied);
    let mut a = Vec::new();
    assert!(matches!(
        MySql::summarize(&mut s, &m, &o, &mut a),
        Summary::Response {
            failure: Some(_),
            ..
        }
    ));
    assert!(a.contains(&("db.response.status_code", "1045".to_owned())));
    assert!(a.contains(&(
        "db.response.error_message",
        "Access denied for user 'app'@'localhost'".to_owned()
    )));
}

#[test]
fn a_joined_session_infers_query_attributes_and_deprecate_eof() {
    let mut s = Session::in_command_phase();
    let q = pkt(0, b"\x03\x00\x01SELECT id FROM t");
    let (m, _) = parse(&mut s, Direction::Request, &q);
    assert_eq!(m, Message::Command(Command::Query(b"SELECT id FROM t")));
    // column count, one definition, then a row: no EOF, so DEPRECATE_EOF;
    // the terminator is an OK headed 0xfe
    let rs = cat(&[
        pkt(1, &[1]),
        pkt(2, &coldef("id")),
        pkt(3, b"\x011"),
        pkt(4, b"\x012"),
        pkt(5, &[0xfe, 0, 0, 2, 0, 0, 0]),
    ]);
    let (m, used) = parse(&mut s, Direction::Response, &rs);
    assert_eq!(used, rs.len());
    assert!(matches!(
        m,
        Message::Response(Response::ResultSet { rows: 2, .. })
    ));
    assert!(s.deprecate_eof());
    // the next query's answer is read with it
    let (m, _) = parse(&mut s, Direction::Request, &q);
    assert!(matches!(m, Message::Command(Command::Query(_))));
    let (m, used) = parse(&mut s, Direction::Response, &rs);
    assert_eq!(used, rs.len());
    assert!(matches!(
        m,
        Message::Response(Response::ResultSet { rows: 2, .. })
    ));
}

#[test]
fn field_list_answers_are_column_definitions() {
    for deprecate_eof in [false, true] {
        let mut s = Session::in_command_phase();
        let terminator: &[u8] = if deprecate_eof {
            &[0xfe, 0, 0, 2, 0, 0, 0]
        } else {
            &EOF
        };
        let ask = pkt(0, b"\x04users\0");
        let (m, _) = parse(&mut s, Direction::Request, &ask);
        assert_eq!(m, Message::Command(Command::FieldList(b"users")));
        let answer = cat(&[
            pkt(1, &coldef("id")),
            pkt(2, &coldef("name")),
            pkt(3, terminator),
        ]);
        let (m, used) = parse(&mut s, Direction::Response, &answer);
        assert_eq!(used, answer.len());
        assert_eq!(m, Message::Response(Response::Columns { columns: 2 }));
        // the next command's OK is its own answer
        let init = pkt(0, b"\x02shop");
        let (m, _) = parse(&mut s, Direction::Request, &init);
        assert_eq!(m, Message::Command(Command::InitDb(b"shop")));
        let ok = pkt(1, &OK);
        let (m, _) = parse(&mut s, Direction::Response, &ok);
        assert!(matches!(m, Message::Response(Response::Ok { .. })));
    }
    // an unknown table: ERR
    let mut s = Session::in_command_phase();
    parse(&mut s, Direction::Request, &pkt(0, b"\x04nope\0"));
    let err = pkt(1, b"\xff\x7a\x04#42S02Table 'shop.nope' doesn't exist");
    let (m, _) = parse(&mut s, Direction::Response, &err);
    assert!(matches!(
        m,
        Message::Response(Response::Err { code: 1146, .. })
    ));
}

#[test]
fn statistics_answer_is_text() {
    let mut s = Session::in_command_phase();
    parse(&mut s, Direction::Request, &pkt(0, &[0x09]));
    let text = b"Uptime: 10  Threads: 1  Questions: 3";
    let answer = pkt(1, text);
    let (m, _) = parse(&mut s, Direction::Response, &answer);
    assert_eq!(m, Message::Response(Response::Text(text)));
}

#[test]
fn requests_resynchronise_at_the_next_command() {
    let mut lost = vec![b'x'; 7];
    lost.extend(pkt(0, b"\x03SELECT 1"));
    assert_eq!(MySql::resync(&lost, Direction::Request), Some(7));
    assert_eq!(MySql::resync(&[1, 2, 3, 4, 5, 6], Direction::Request), None);
    assert_eq!(MySql::resync(&lost, Direction::Response), None);
}

#[test]
fn a_followed_result_set_tells_deprecate_eof_by_a_row_after_the_definitions() {
    use kindling_proto::mysql::ResultSetReader;
    use kindling_proto::Follower;
    let rs = cat(&[
        pkt(1, &[1]),
        pkt(2, &coldef("id")),
        pkt(3, b"\x011"),
        pkt(4, b"\x012"),
        pkt(5, &[0xfe, 0, 0, 2, 0, 0, 0]),
    ]);
    let mut r = ResultSetReader::new(false);
    assert_eq!(r.feed(&rs).unwrap(), Some(rs.len()));
    assert_eq!(r.rows(), 2);
}

#[test]
fn joined_at_a_binary_result_set() {
    let mut s = Session::in_command_phase();
    let ex = pkt(0, &[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 8, 0]);
    parse(&mut s, Direction::Request, &ex);
    let rs = cat(&[
        pkt(1, &[2]),
        pkt(2, &coldef("name")),
        pkt(3, &coldef("email")),
        pkt(4, &[0xfe, 0, 0, 0x22, 0]),
        pkt(5, b"\x00\x00\x03ann\x0ea@example.test"),
        pkt(6, &[0xfe, 0, 0, 0x22, 0]),
    ]);
    let (m, used) = parse(&mut s, Direction::Response, &rs);
    assert_eq!(used, rs.len(), "{m:?}");
}

#[test]
fn a_joined_session_tells_an_empty_result_set_with_deprecate_eof_by_the_next_answer() {
    let mut s = Session::in_command_phase();
    let q = pkt(0, b"\x03SELECT id FROM t WHERE id = 0");
    parse(&mut s, Direction::Request, &q);
    // column count, one definition, the OK (0xfe, 7 bytes) ending it: the
    // same bytes as an EOF after the definitions
    let empty = cat(&[
        pkt(1, &[1]),
        pkt(2, &coldef("id")),
        pkt(3, &[0xfe, 0, 0, 2, 0, 0, 0]),
    ]);
    // the next command's answer, sequence 1
    let next = pkt(1, b"\xff\x7a\x04#42S02Table 'shop.nope' doesn't exist");
    let both = cat(&[empty.clone(), next.clone()]);
    let (m, used) = parse(&mut s, Direction::Response, &both);
    assert_eq!(used, empty.len());
    assert!(matches!(
        m,
        Message::Response(Response::ResultSet { rows: 0, .. })
    ));
    assert!(s.deprecate_eof());
    let (m, used) = parse(&mut s, Direction::Response, &next);
    assert_eq!(used, next.len());
    assert!(matches!(
        m,
        Message::Response(Response::Err { code: 1146, .. })
    ));
}
