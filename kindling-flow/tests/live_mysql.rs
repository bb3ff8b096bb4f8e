//! MySQL on the real kernel against a real MariaDB server (a throwaway
//! `mariadbd` in a temporary data directory): no false alarms, no missed
//! errors (issue 11).
//!
//! - A connection opened and used before the probe loads (a pooled
//!   connection, the common case in production) is recognised from its next
//!   command and every later command is paired: a query (whose rows tell
//!   that CLIENT_DEPRECATE_EOF was negotiated), COM_FIELD_LIST (column
//!   definitions, not a result set), COM_PING, a failing query (its code
//!   and message), a query returning two rows.
//! - A login refused with ERR 1045 (wrong password) is a `LOGIN` exchange
//!   with a database error and code 1045.
//! - A connection refused with ERR 1040 (too many connections, sent instead
//!   of the greeting) is a `CONNECT` exchange with a database error.
//!
//! Needs root, mariadb-server, mariadb-client and python3; without them the
//! test skips with a reason, except under `CI=true`, where it fails.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

mod common;

use common::live::{self, Drain};
use common::servers::Killed;
use common::servers::{admin, MariaDb};
use kindling_flow::{Config, Exchange, Role};
use kindling_probe::ProbeBuilder;

/// `mariadb` over TCP as `app` with `password`; whether it succeeded.
fn client(port: u16, password: &str, sql: &str) -> bool {
    Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-uapp", "-A"])
        .args(["-P", &port.to_string(), &format!("-p{password}"), "shop"])
        .args(["-e", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The raw client (tests/data/mysql_raw_client.py), driven line by line.
struct Raw {
    _child: Killed,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Raw {
    fn start(port: u16) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mysql_raw_client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["127.0.0.1", &port.to_string(), "app", "secret", "shop"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut raw = Self {
            _child: Killed(child),
            stdin,
            stdout,
        };
        raw.expect("ready");
        raw
    }

    fn expect(&mut self, what: &str) {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), what, "the raw client stopped");
    }

    fn run(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        if command != "quit" {
            self.expect("done");
        }
    }
}

#[test]
fn joined_connections_failed_logins_and_refusals_are_exchanges() {
    if !live::ready(
        "joined_connections_failed_logins_and_refusals_are_exchanges",
        &["mariadbd", "mariadb-install-db", "mariadb", "python3"],
    ) {
        return;
    }
    let port = live::free_port();
    let maria = MariaDb::start(port, "pool");
    let socket = maria.socket.clone();
    assert!(admin(
        &socket,
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT, name VARCHAR(20)); \
         INSERT INTO shop.t VALUES (1, 'a'), (2, 'b'); \
         CREATE USER app@'127.0.0.1' IDENTIFIED BY 'secret'; \
         GRANT ALL ON shop.* TO app@'127.0.0.1'"
    ));

    // a connection opened and used before the probe
    let mut pooled = Raw::start(port);
    pooled.run("query SELECT 1");

    let mut probe = live::load(ProbeBuilder::new().port(port));
    // joined at an empty result set: with DEPRECATE_EOF its end looks
    // like the EOF after the column definitions
    pooled.run("query SELECT id FROM t WHERE id = 0");
    pooled.run("query SELECT 1");
    pooled.run("fields t");
    pooled.run("ping");
    pooled.run("query SELECT * FROM no_such_table");
    pooled.run("query SELECT id, name FROM t");
    pooled.run("ping");
    // a wrong password: ERR 1045 answers the login
    assert!(!client(port, "wrong", "SELECT 1"));
    // max_connections is 10 (its least): with it and the one more that
    // mariadbd lets in for an administrator taken (the pooled connection
    // and 10 sleeping over the socket), a new connection is refused with
    // ERR 1040 instead of a greeting
    let holders: Vec<Killed> = (0..10)
        .map(|_| {
            Killed(
                Command::new("mariadb")
                    .args(["--no-defaults", "-uroot", "--socket"])
                    .arg(&socket)
                    .args(["-e", "SELECT SLEEP(60)"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("mariadb starts"),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!client(port, "secret", "SELECT 1"));
    drop(holders);
    pooled.run("quit");

    let mut pipeline = live::pipeline(Config::default());
    let out = live::drain(&mut probe, &mut pipeline, Drain::default(), || true, |_| {});
    drop(maria);
    drop(pooled);

    let exchanges = live::exchanges(&out, |x| x.protocol == "mysql");
    let line = |x: &Exchange| {
        let a = |k| x.attributes.get(k).unwrap_or("-").to_owned();
        format!(
            "{} {} rows={} code={} error={:?} pending={}",
            a("db.operation.name"),
            a("db.collection.name"),
            a("db.response.returned_rows"),
            a("db.response.status_code"),
            x.error,
            x.pending,
        )
    };
    for role in [Role::Client, Role::Server] {
        let seen: Vec<String> = exchanges
            .iter()
            .filter(|x| x.role == role)
            .map(|x| line(x))
            .collect();
        eprintln!("{role:?}: {seen:#?}");
        let has = |want: &str| seen.iter().any(|l| l == want);
        // the pooled connection, joined at its second SELECT 1
        for want in [
            "SELECT t rows=0 code=- error=None pending=false",
            "SELECT - rows=1 code=- error=None pending=false",
            "FIELD_LIST t rows=- code=- error=None pending=false",
            "PING - rows=- code=- error=None pending=false",
            "SELECT no_such_table rows=- code=1146 error=Some(DbError) pending=false",
            "SELECT t rows=2 code=- error=None pending=false",
            "LOGIN - rows=- code=1045 error=Some(DbError) pending=false",
            "CONNECT - rows=- code=1040 error=Some(DbError) pending=false",
        ] {
            assert!(has(want), "{role:?}: no `{want}` in {seen:#?}");
        }
        let pings = seen.iter().filter(|l| l.starts_with("PING ")).count();
        assert_eq!(pings, 2, "{role:?}: {seen:#?}");
        // the only errors are the three asked for
        let errors = seen.iter().filter(|l| l.contains("DbError")).count();
        assert_eq!(errors, 3, "{role:?}: {seen:#?}");
    }
    let messages: Vec<_> = exchanges
        .iter()
        .filter_map(|x| x.attributes.get("db.response.error_message"))
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("Access denied")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("Too many connections")),
        "{messages:?}"
    );
    let stats = pipeline.stats();
    assert_eq!(stats.unpaired_responses, 0, "{stats:?}");
}

/// Result sets of 10, 5,000 (~370 kB), 14,000 (~1 MB) and 200,000 rows
/// (~15 MB) read by the `mariadb` client at the default settings, then a
/// failing query on the same connection: from both ends, the rows are exact
/// within the framing budget, the largest is no error (exact or partial,
/// never a wrong count), and the error belongs to the query that failed.
#[test]
fn large_result_sets_count_their_rows() {
    if !live::ready(
        "large_result_sets_count_their_rows",
        &["mariadbd", "mariadb-install-db", "mariadb"],
    ) {
        return;
    }
    let port = live::free_port();
    let maria = MariaDb::start(port, "large");
    assert!(admin(
        &maria.socket,
        "CREATE DATABASE shop; USE shop; \
         CREATE TABLE big (id INT, name VARCHAR(80)); \
         INSERT INTO big SELECT seq, REPEAT('x', 64) FROM seq_1_to_200000; \
         CREATE USER app@'127.0.0.1' IDENTIFIED BY 'secret'; \
         GRANT ALL ON shop.* TO app@'127.0.0.1'"
    ));
    let mut probe = live::load(ProbeBuilder::new().port(port));
    // fails at its last statement, as meant
    client(
        port,
        "secret",
        "SELECT * FROM big LIMIT 10; SELECT * FROM big LIMIT 5000; \
         SELECT * FROM big LIMIT 14000; SELECT * FROM big; SELECT * FROM no_such_table",
    );
    let mut pipeline = live::pipeline(Config::default());
    let out = live::drain(&mut probe, &mut pipeline, Drain::default(), || true, |_| {});
    drop(maria);

    let exchanges = live::exchanges(&out, |x| x.protocol == "mysql");
    for role in [Role::Client, Role::Server] {
        let mut mine: Vec<&Exchange> = exchanges
            .iter()
            .copied()
            .filter(|x| x.role == role)
            .filter(|x| {
                matches!(
                    x.attributes.get("db.collection.name"),
                    Some("big" | "no_such_table")
                )
            })
            .collect();
        mine.sort_by_key(|x| x.ts);
        let seen: Vec<String> = mine
            .iter()
            .map(|x| {
                let a = |k| x.attributes.get(k).unwrap_or("-").to_owned();
                format!(
                    "{} rows={} code={} error={:?}",
                    a("db.collection.name"),
                    a("db.response.returned_rows"),
                    a("db.response.status_code"),
                    x.error,
                )
            })
            .collect();
        assert_eq!(seen.len(), 5, "{role:?}: {seen:#?}");
        assert_eq!(seen[0], "big rows=10 code=- error=None", "{role:?}");
        assert_eq!(seen[1], "big rows=5000 code=- error=None", "{role:?}");
        // ~1.05 MB on the wire: the bar's size
        assert_eq!(seen[2], "big rows=14000 code=- error=None", "{role:?}");
        assert!(mine[2].response_bytes > 1_000_000, "{:?}", mine[2]);
        let largest = [
            "big rows=200000 code=- error=None",
            "big rows=- code=- error=None",
        ];
        assert!(largest.contains(&seen[3].as_str()), "{role:?}: {seen:#?}");
        assert_eq!(mine[3].partial, seen[3].contains("rows=-"), "{role:?}");
        assert_eq!(
            seen[4], "no_such_table rows=- code=1146 error=Some(DbError)",
            "{role:?}"
        );
        eprintln!("{role:?}: {seen:#?}");
    }
    let errors = exchanges.iter().filter(|x| x.error.is_some()).count();
    assert_eq!(errors, 2, "one failed query, seen from each end");
}
