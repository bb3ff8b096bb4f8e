//! Large Redis replies on the real kernel, pipelined with small ones, at
//! the default capture length: GETs of 1 MB and 20 MB values and an LRANGE
//! of 100,000 elements between small GETs, all sent in one write, read by
//! a client with a 1 MiB buffer. Most replies' framing then lies in bytes
//! the probe did not capture: what is reported is exact and paired with
//! its own command, nothing is an error, and the commands whose replies
//! could not be told apart are dropped and counted. (Reporting all seven
//! needs the probe to capture framing while a large message is in flight:
//! not done yet.) Needs root, redis-server and python3; without them the
//! test skips with a reason, except under `CI=true`, where it fails.

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::live::{self, Drain};
use kindling_flow::{Config, Role};
use kindling_probe::ProbeBuilder;

/// Sends every command in one write, then reads every reply whole.
const CLIENT: &str = r#"
import socket, sys
port = int(sys.argv[1])
def cmd(*words):
    out = b"*%d\r\n" % len(words)
    for w in words:
        w = w.encode() if isinstance(w, str) else w
        out += b"$%d\r\n%s\r\n" % (len(w), w)
    return out
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb", buffering=1 << 20)
def reply():
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"$":
        n = int(rest)
        if n >= 0:
            f.read(n + 2)
    elif kind == b"*":
        for _ in range(int(rest)):
            reply()
batch = [cmd("GET", "small"), cmd("GET", "big1m"), cmd("GET", "small"), cmd("GET", "big20m"),
         cmd("GET", "small"), cmd("LRANGE", "list", "0", "-1"), cmd("GET", "small")]
s.sendall(b"".join(batch))
for _ in batch:
    reply()
s.close()
"#;

#[test]
fn large_replies_pipelined_with_small_ones() {
    if !live::ready(
        "large_replies_pipelined_with_small_ones",
        &["redis-server", "redis-cli", "python3"],
    ) {
        return;
    }
    let port = live::free_port();
    let dir = live::temp_dir("redis-large");
    let _server = common::servers::redis_server(port, &dir);
    let cli = |script: &str| {
        let mut c = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success());
    };
    // the values, set before the probe watches
    cli("SET small tiny\nEVAL \"redis.call('SET', 'big1m', string.rep('a', 1048576)) redis.call('SET', 'big20m', string.rep('b', 20971520)) for i = 1, 100000, 1000 do local t = {} for j = i, i + 999 do t[#t + 1] = 'item' .. j end redis.call('RPUSH', 'list', unpack(t)) end return 1\" 0\n");

    let mut probe = live::load(ProbeBuilder::new().port(port));
    let mut pipeline = live::pipeline(Config::default());
    let mut client = Command::new("python3")
        .args(["-c", CLIENT, &port.to_string()])
        .spawn()
        .unwrap();
    let how = Drain {
        limit: Duration::from_secs(20),
        ..Drain::default()
    };
    let out = live::drain(
        &mut probe,
        &mut pipeline,
        how,
        || client.try_wait().unwrap().is_some(),
        |_| {},
    );
    assert!(
        client.wait().unwrap().success(),
        "the client read every reply"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let lost = probe.losses().unwrap();
    let mine = live::exchanges(&out, |x| x.protocol == "redis" && x.comm != "redis-cli");
    eprintln!("{lost:?} {:?}", pipeline.stats());
    for x in &mine {
        eprintln!(
            "{:?} {:?} req={} resp={} partial={} error={:?}",
            x.role,
            x.attributes.get("db.query.text"),
            x.request_bytes,
            x.response_bytes,
            x.partial,
            x.error
        );
    }
    // a bulk string of n bytes: "$n\r\n" + n + "\r\n"
    let bulk = |n: u64| n.to_string().len() as u64 + 3 + n + 2;
    let list: u64 = 6
        + (1..=100_000u64)
            .map(|i| bulk(4 + i.to_string().len() as u64))
            .sum::<u64>();
    let want = [
        ("GET small", bulk(4)),
        ("GET big1m", bulk(1 << 20)),
        ("GET small", bulk(4)),
        ("GET big20m", bulk(20 << 20)),
        ("GET small", bulk(4)),
        ("LRANGE list ? ?", list),
        ("GET small", bulk(4)),
    ];
    assert!(mine.iter().all(|x| x.error.is_none() && !x.pending));
    let mut reported = 0;
    for role in [Role::Client, Role::Server] {
        let got: Vec<(&str, u64)> = mine
            .iter()
            .filter(|x| x.role == role)
            .map(|x| {
                (
                    x.attributes.get("db.query.text").unwrap_or(""),
                    x.response_bytes,
                )
            })
            .collect();
        // at least the first two, each with its own exact reply
        assert!(
            got.len() >= 2 && want.starts_with(&got),
            "{role:?}: {got:?}"
        );
        reported += got.len();
    }
    let stats = pipeline.stats();
    assert_eq!(
        reported as u64 + stats.requests_dropped,
        2 * want.len() as u64,
        "every command reported or counted: {stats:?}"
    );
}
