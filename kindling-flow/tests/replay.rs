//! Captures of real servers and clients, recorded with the real probe
//! (`tests/data/record.sh`), replayed through the pipeline. The expected
//! exchanges are what the clients in the recording scripts did; both ends
//! of each loopback connection must report them.

mod common;

use common::{assert_phases_add_up, attr, exchanges, render, replay, summary, tcp_records};
use kindling_flow::{ErrorKind, Role, TcpEventKind};

/// Both ends saw the same exchanges (one end may have had to report a
/// response it could not read as `partial`), and the phases add up.
fn check_both_ends(name: &str) -> Vec<String> {
    let (out, stats) = replay(name);
    let client = summary(&out, Role::Client);
    let server = summary(&out, Role::Server);
    let whole = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|l| l.trim_end_matches(" partial").to_owned())
            .collect()
    };
    assert_eq!(
        whole(&client),
        whole(&server),
        "{name}: client and server ends disagree"
    );
    for x in exchanges(&out) {
        assert_phases_add_up(name, x);
        assert!(
            x.phases.connect.is_none() || x.role == Role::Client,
            "only the connecting side has a connect phase"
        );
    }
    assert_eq!(stats.unpaired_responses, 0, "{name}: {stats:?}");
    assert_eq!(stats.requests_dropped, 0, "{name}: {stats:?}");
    insta::assert_snapshot!(format!("{name}_outputs"), render(&out));
    client
}

#[test]
fn http1_nginx_and_curl() {
    let client = check_both_ends("http1");
    assert_eq!(
        client,
        [
            "http GET /big.txt → 200",
            "http GET /index.html → 200",
            "http GET /index.html → 200",
            "http GET /missing → 404 ClientError",
            "http GET /nothing → 204",
            "http GET /redirect → 302",
            "http HEAD /index.html → 200",
            "http HEAD /index.html → 200",
            "http PATCH /api/echo → 201",
            "http POST /api/echo → 201",
        ]
    );
    let (out, stats) = replay("http1");
    // the kernel's RTT samples reach the exchanges of their connections
    let measured = exchanges(&out)
        .into_iter()
        .filter(|x| x.network.is_some_and(|n| n.srtt_us > 0))
        .count();
    assert!(measured >= 5, "{measured} exchanges with an RTT");
    // PATCH with `Expect: 100-continue`: the interim 100 is not an
    // exchange, and the request is paired with the final 201
    let patch = exchanges(&out)
        .into_iter()
        .find(|x| attr(x, "http.request.method") == "PATCH" && x.role == Role::Client)
        .unwrap();
    assert!(
        (8800 + 100..=8800 + 400).contains(&patch.request_bytes),
        "{patch:?}"
    );
    assert_eq!(stats.parse_errors, 0);
}

#[test]
fn redis_server_cli_and_benchmark() {
    let client = check_both_ends("redis");
    let count = |op: &str| {
        client
            .iter()
            .filter(|l| l.starts_with(&format!("redis {op}")))
            .count()
    };
    // redis-benchmark -n 64 -P 16 -t set,get, plus the scripted SET / GETs
    assert_eq!(count("SET "), 65);
    assert_eq!(count("GET "), 66);
    // inline commands from the raw client
    assert_eq!(count("PING"), 1);
    assert_eq!(count("ECHO"), 1);
    // the subscriber's `message` push is not an exchange
    assert_eq!(count("SUBSCRIBE"), 1);
    assert_eq!(count("PUBLISH"), 1);
    // INCR on a string, an unknown command, AUTH without a password
    let errors: Vec<_> = client.iter().filter(|l| l.contains("DbError")).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    // COMMAND DOCS answers are 172 kB: redis-cli reads them in 16 kB
    // syscalls, followed value by value past the buffer, whole; redis-server
    // writes them in three syscalls beyond the 16 kB snaplen, cut inside the
    // RESP structure: reported from the bytes seen, flagged partial
    let docs = |v: &[String]| -> Vec<String> {
        v.iter()
            .filter(|l| l.starts_with("redis COMMAND DOCS"))
            .cloned()
            .collect()
    };
    assert_eq!(
        docs(&client),
        ["redis COMMAND DOCS → ", "redis COMMAND DOCS → "]
    );
    let (out, _) = replay("redis");
    assert_eq!(
        docs(&summary(&out, Role::Server)),
        [
            "redis COMMAND DOCS →  partial",
            "redis COMMAND DOCS →  partial"
        ]
    );
}

#[test]
fn mysql_mariadb_client_and_prepared_statements() {
    let client = check_both_ends("mysql");
    // 15 commands and the two connections' logins
    assert_eq!(client.len(), 17, "{client:#?}");
    assert_eq!(client.iter().filter(|l| *l == "mysql LOGIN → ").count(), 2);
    assert!(client.contains(&"mysql SELECT * FROM no_such_table → 1146 DbError".to_owned()));
    assert!(client.contains(&"mysql SELEC broken syntax → 1064 DbError".to_owned()));
    // the prepared statement's EXECUTE reports its SQL
    let selects = client
        .iter()
        .filter(|l| l.starts_with("mysql SELECT name, email FROM users WHERE id = ? OR name = ?"))
        .count();
    assert_eq!(selects, 2, "PREPARE and EXECUTE");
    let (out, _) = replay("mysql");
    let big = exchanges(&out)
        .into_iter()
        .find(|x| attr(x, "db.query.text").contains("seq_1_to_2000"))
        .unwrap();
    assert_eq!(attr(big, "db.response.returned_rows"), "2000");
}

#[test]
fn dns_dnsmasq_and_dig() {
    let client = check_both_ends("dns");
    assert_eq!(client.len(), 12, "{client:#?}");
    assert!(client.contains(&"dns A nope.example.test → NXDOMAIN DnsError".to_owned()));
    assert!(client.contains(&"dns A outside.invalid → REFUSED DnsError".to_owned()));
    let (out, _) = replay("dns");
    let tcp = exchanges(&out)
        .into_iter()
        .filter(|x| x.transport == "tcp")
        .count();
    assert_eq!(tcp, 6, "3 queries over TCP, both ends");
}

#[test]
fn failures_refused_silent_reset_slow() {
    let (out, stats) = replay("failures");
    insta::assert_snapshot!("failures_outputs", render(&out));
    let tcp = tcp_records(&out);
    let refused: Vec<_> = tcp
        .iter()
        .filter(|t| t.event == TcpEventKind::ConnectFailed)
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].dst.port(), refused[0].errno),
        (18301, Some(111))
    );
    // and, for the service map, a failed exchange of the client
    let failed: Vec<_> = exchanges(&out)
        .into_iter()
        .filter(|x| x.error == Some(ErrorKind::ConnectFailed))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(
        (
            failed[0].protocol.as_str(),
            failed[0].role,
            failed[0].dst.port()
        ),
        ("tcp", Role::Client, 18301)
    );
    assert_eq!(attr(failed[0], "error.type"), "ECONNREFUSED");
    assert!(failed[0].phases.connect.is_some());
    let by = |path: &str, role: Role| {
        exchanges(&out)
            .into_iter()
            .find(|x| attr(x, "url.path") == path && x.role == role)
            .unwrap_or_else(|| panic!("{path} {role:?}"))
    };
    // the client gave up after 500 ms; the server closed after 1.5 s
    let silent = by("/silent", Role::Client);
    assert_eq!(silent.error, Some(ErrorKind::NoResponse));
    assert!(
        (450_000_000..1_000_000_000).contains(&silent.phases.wait),
        "{silent:?}"
    );
    assert_eq!(
        by("/silent", Role::Server).error,
        Some(ErrorKind::NoResponse)
    );
    // 1000 of 100 000 promised bytes, then a reset
    let reset = by("/reset", Role::Client);
    assert_eq!((reset.error, reset.partial), (Some(ErrorKind::Reset), true));
    assert!(reset.response_bytes >= 1000, "{reset:?}");
    let server = by("/reset", Role::Server);
    assert!(server.partial && server.error.is_some(), "{server:?}");
    for role in [Role::Client, Role::Server] {
        let slow = by("/slow", role);
        assert!(slow.slow && slow.error.is_none(), "{slow:?}");
        assert!(slow.phases.wait >= 600_000_000, "{slow:?}");
    }
    assert_eq!(stats.parse_errors, 0);
}

#[test]
fn nginx_under_wrk_with_pipelining() {
    let (out, stats) = replay("wrk");
    let expected = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wrk.expected"),
    )
    .unwrap();
    let wrk = |key: &str| -> usize {
        expected
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap()
    };
    let answered = |role: Role| {
        exchanges(&out)
            .into_iter()
            // (requests wrk gave up on when it stopped are not answers)
            .filter(|x| x.role == role && x.error != Some(ErrorKind::NoResponse) && !x.cancelled)
            .collect::<Vec<_>>()
    };
    // wrk's own count of responses, and of the 404s among them
    let client = answered(Role::Client);
    assert_eq!(client.len(), wrk("responses"));
    let not_found = client
        .iter()
        .filter(|x| attr(x, "http.response.status_code") == "404")
        .count();
    assert_eq!(not_found, wrk("non_2xx"));
    assert!(client
        .iter()
        .all(|x| x.protocol == "http" && x.comm == "wrk"));
    // wrk stops in the middle of a pipelined round: nginx answered a few
    // requests whose answers wrk never read; those are unanswered on the
    // client side, answered on the server side, and nothing else is lost
    let server = answered(Role::Server);
    let unread = exchanges(&out)
        .into_iter()
        .filter(|x| x.role == Role::Client && x.error == Some(ErrorKind::NoResponse))
        .count();
    assert_eq!(server.len(), client.len() + unread, "{stats:?}");
    assert!(unread <= 6, "at most one round per connection in flight");
    assert_eq!(
        stats.parse_errors + stats.unpaired_responses + stats.requests_dropped,
        0
    );
    insta::assert_snapshot!("wrk_outputs", render(&out));
}

/// Records lost at any point (the probe's ring buffer was full) never make
/// the pipeline pair a request with an answer that is not its own: what
/// was in flight is dropped and counted instead.
#[test]
fn losses_drop_what_was_in_flight_and_never_mispair() {
    use kindling_flow::{Config, Driver, Output};
    let (records, _) = common::records("http1");
    let status_of = |path: &str| match path {
        "/missing" => "404",
        "/redirect" => "302",
        "/nothing" => "204",
        "/api/echo" => "201",
        _ => "200",
    };
    for lost_at in 0..records.len() {
        let mut p = Driver::replay(Config::default());
        let mut out = Vec::new();
        for (i, r) in records.iter().enumerate() {
            if i == lost_at {
                // the record at `lost_at` never arrives; the recorder's
                // marker says so, as it does in a capture
                let marker = kindling_probe::abi::RawLost::new(1, 0);
                p.push_record(zerocopy::IntoBytes::as_bytes(&marker), &mut out)
                    .unwrap();
                continue;
            }
            p.push_record(r, &mut out).unwrap();
        }
        p.finish(&mut out);
        for o in &out {
            let Output::Exchange(x) = o else { continue };
            if x.error.is_none() && !x.partial {
                let path = attr(x, "url.path");
                assert_eq!(
                    attr(x, "http.response.status_code"),
                    status_of(path),
                    "record {lost_at} lost: {path} paired with the wrong answer"
                );
            }
        }
        assert_eq!(p.stats().events_lost, 1);
    }
}

/// DNS answers pair by id and question, in any order; an answer whose id
/// matches but whose question does not is not paired (counted instead).
/// The records are the dig capture's, with hand-made DNS messages.
#[test]
fn dns_pairs_by_id_and_question_in_any_order() {
    use kindling_flow::{Config, Output, Pipeline};
    use kindling_probe::abi::{self, RawData};
    use zerocopy::FromBytes;

    fn message(id: u16, name: &str, response: bool) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(if response {
            &[0x81, 0x80]
        } else {
            &[0x01, 0x00]
        });
        m.extend_from_slice(&[0, 1, 0, u8::from(response), 0, 0, 0, 0]);
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]); // A, IN
        if response {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        }
        m
    }
    let (records, _) = common::records("dns");
    // the first query dig sent and the answer it read, as templates
    let template = |egress: bool| {
        records
            .iter()
            .find_map(|r| match abi::decode(r) {
                Ok(abi::Event::Data(d))
                    if (d.raw.direction == 0) == egress
                        && d.raw.sk.protocol == 17
                        && d.raw.hdr.comm.starts_with(b"isc") =>
                {
                    RawData::read_from_prefix(r).ok().map(|(raw, _)| raw)
                }
                _ => None,
            })
            .unwrap()
    };
    let (query, answer) = (template(true), template(false));
    let stream = [
        common::data_record(&query, &message(7, "a.example.test", false)),
        common::data_record(&query, &message(8, "b.example.test", false)),
        common::data_record(&answer, &message(8, "b.example.test", true)),
        common::data_record(&answer, &message(7, "c.example.test", true)), // wrong question
        common::data_record(&answer, &message(7, "a.example.test", true)),
    ];
    let mut p = Pipeline::new(Config::default());
    let mut out = Vec::new();
    for r in &stream {
        p.push(&abi::decode(r).unwrap(), &mut out);
    }
    let names: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Exchange(x) => Some(attr(x, "dns.question.name").to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["b.example.test", "a.example.test"]);
    assert_eq!(p.stats().unpaired_responses, 1);
}

/// A connection open before tracing began has no connect or accept: when
/// the first bytes seen could be either end's (a RESP array is a command or
/// a reply), the ports this host listens on say which end it is.
#[test]
fn listening_ports_tell_a_joined_connection_s_role() {
    use kindling_flow::{Config, Output, Pipeline, Role};
    use kindling_probe::abi::{self, RawData};
    use zerocopy::byteorder::native_endian::U64;
    use zerocopy::FromBytes;

    let (records, _) = common::records("redis");
    let server_write = records
        .iter()
        .find_map(|r| match abi::decode(r) {
            Ok(abi::Event::Data(d))
                if d.raw.direction == 0 && d.raw.hdr.comm.starts_with(b"redis-server") =>
            {
                RawData::read_from_prefix(r).ok().map(|(raw, _)| raw)
            }
            _ => None,
        })
        .unwrap();
    let accept = records
        .iter()
        .find(|r| matches!(abi::decode(r), Ok(abi::Event::Conn(c)) if c.raw.hdr.kind.get() == abi::kind::ACCEPT))
        .unwrap();
    // the same server, another connection (a socket never accepted here)
    let mut sent = server_write;
    sent.sk.sock = U64::new(0xffff_0000_dead_0000);
    let mut received = sent;
    received.direction = 1;
    let stream = [
        accept.clone(),
        common::data_record(&sent, b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"), // the end of a reply
        common::data_record(&received, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        common::data_record(&sent, b"$1\r\nv\r\n"),
    ];
    let mut p = Pipeline::new(Config::default());
    let mut out = Vec::new();
    for r in &stream {
        p.push(&abi::decode(r).unwrap(), &mut out);
    }
    let x: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Exchange(x) => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(x.len(), 1, "{x:#?}");
    assert_eq!(
        (x[0].role, attr(x[0], "db.query.text")),
        (Role::Server, "GET k")
    );
}

/// Addresses a DNS answer gave name the peers of later client exchanges
/// that no protocol header names (`server.address`).
#[test]
fn dns_answers_name_later_peers() {
    use kindling_flow::{Config, Output, Pipeline};
    use kindling_probe::abi::{self, RawData};
    use zerocopy::FromBytes;

    let (dns, _) = common::records("dns");
    let (redis, _) = common::records("redis");
    let template = |egress: bool| {
        redis
            .iter()
            .find_map(|r| match abi::decode(r) {
                Ok(abi::Event::Data(d))
                    if (d.raw.direction == 0) == egress
                        && d.raw.hdr.comm.starts_with(b"redis-cli") =>
                {
                    RawData::read_from_prefix(r).ok().map(|(raw, _)| raw)
                }
                _ => None,
            })
            .unwrap()
    };
    // redis-cli talking to the address dnsmasq gave www.example.test
    let (mut ask, mut answer) = (template(true), template(false));
    for raw in [&mut ask, &mut answer] {
        raw.sk.daddr = [0; 16];
        raw.sk.daddr[..4].copy_from_slice(&[192, 0, 2, 11]);
        raw.sk.sock = zerocopy::byteorder::native_endian::U64::new(0xffff_0000_beef_0000);
    }
    let mut p = Pipeline::new(Config::default());
    let mut out = Vec::new();
    for r in &dns {
        p.push(&abi::decode(r).unwrap(), &mut out);
    }
    out.clear();
    for r in [
        common::data_record(&ask, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        common::data_record(&answer, b"$1\r\nv\r\n"),
    ] {
        p.push(&abi::decode(&r).unwrap(), &mut out);
    }
    let Some(Output::Exchange(x)) = out.iter().find(|o| matches!(o, Output::Exchange(_))) else {
        panic!("an exchange: {out:?}")
    };
    assert_eq!(x.dst.ip().to_string(), "192.0.2.11");
    assert_eq!(attr(x, "server.address"), "www.example.test");
}

/// Kindling started at any point of the MySQL capture (connections opened
/// before it, joined mid-way, even mid-result-set): never a false alarm
/// (the only errors are the recording's two failing queries, each with its
/// code), and connections joined after their handshake are still read
/// from their next command on.
#[test]
fn mysql_joined_at_any_record_raises_no_false_alarm() {
    let (records, header) = common::records_and_header("mysql");
    let config = || kindling_flow::Config {
        boottime_to_unix_ns: header.host.boottime_to_unix_ns,
        ..kindling_flow::Config::default()
    };
    let mut joined_with_exchanges = 0;
    for start in 1..records.len() {
        let (out, _) = common::run(&records[start..], config());
        let mysql: Vec<_> = exchanges(&out)
            .into_iter()
            .filter(|x| x.protocol == "mysql")
            .collect();
        for x in &mysql {
            if x.error.is_some() {
                assert_eq!(x.error, Some(ErrorKind::DbError), "start {start}: {x:#?}");
                let code = attr(x, "db.response.status_code");
                assert!(matches!(code, "1146" | "1064"), "start {start}: {x:#?}");
            }
        }
        // a start after both logins: every exchange comes from joining
        if !mysql.is_empty()
            && !mysql
                .iter()
                .any(|x| attr(x, "db.operation.name") == "LOGIN")
        {
            joined_with_exchanges += 1;
        }
    }
    assert!(joined_with_exchanges > 0);
    eprintln!(
        "{} starts, {joined_with_exchanges} joined after the logins with exchanges",
        records.len() - 1
    );
}

/// The same for the HTTP capture: joined at any record, the only errors
/// are ones the whole capture reports too (same protocol, operation,
/// status and kind).
#[test]
fn http_joined_at_any_record_raises_no_false_alarm() {
    joined_at_any_record("http1");
}

/// The same for the Redis capture. A connection first seen in the middle
/// of a large reply (COMMAND DOCS), its role unknown, reads the reply's
/// nested arrays of bulk strings as a command: the roles it guesses from
/// such bytes are unsure, and a "command" left unanswered at the close is
/// then dropped (counted), not reported as `no_response`.
#[test]
fn redis_joined_at_any_record_raises_no_false_alarm() {
    joined_at_any_record("redis");
}

fn joined_at_any_record(name: &str) {
    {
        let (records, header) = common::records_and_header(name);
        let config = || kindling_flow::Config {
            boottime_to_unix_ns: header.host.boottime_to_unix_ns,
            ..kindling_flow::Config::default()
        };
        let key = |x: &kindling_flow::Exchange| {
            format!(
                "{:?} {} {} {} {:?}",
                x.protocol,
                attr(x, "db.operation.name"),
                attr(x, "db.response.status_code"),
                attr(x, "http.response.status_code"),
                x.error
            )
        };
        let (whole, _) = common::run(&records, config());
        let known: std::collections::BTreeSet<String> = exchanges(&whole)
            .into_iter()
            .filter(|x| x.error.is_some())
            .map(key)
            .collect();
        for start in 1..records.len() {
            let (out, _) = common::run(&records[start..], config());
            for x in exchanges(&out) {
                if x.error.is_some() {
                    assert!(
                        known.contains(&key(x)),
                        "{name} from record {start}: {x:#?}"
                    );
                }
            }
        }
    }
}
