//! `kindling dump` of captures recorded live from real servers (nginx +
//! curl, redis-server + redis-cli, mariadbd + mariadb, dnsmasq + dig; see
//! `kindling-flow/tests/data/record.sh`), read back by tshark: what tshark
//! dissects from the synthetic packets matches what `replay -o json`
//! prints for the same capture, and tshark finds nothing malformed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kindling, temp_dir};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../kindling-flow/tests/data")
        .join(format!("{name}.kcap"))
}

/// `kindling dump` of a fixture into `dir`: the pcapng and what it said.
fn dump(name: &str, dir: &Path, args: &[&str]) -> (PathBuf, String) {
    let out = dir.join(format!("{name}.pcapng"));
    let run = kindling()
        .arg("dump")
        .arg(fixture(name))
        .arg("-o")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "dump {name}: {err}");
    (out, err)
}

/// tshark's values of `fields` for the packets `filter` keeps, one row a
/// value: all of them (several in one packet are split), or with `first`
/// the first of each packet.
fn tshark_values(
    file: &Path,
    decode_as: &[&str],
    filter: &str,
    fields: &[&str],
    first: bool,
) -> Option<Vec<Vec<String>>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    let occurrence = if first {
        "occurrence=f"
    } else {
        "occurrence=a"
    };
    cmd.args([
        "-Y",
        filter,
        "-T",
        "fields",
        "-E",
        occurrence,
        "-E",
        "separator=\t",
    ]);
    // values of one field in a packet are joined by a byte none holds
    // (queries hold commas)
    cmd.args(["-E", "aggregator=\u{1e}"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "tshark: {e} (install tshark)"
            );
            eprintln!("skipped: tshark cannot run ({e})");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let columns: Vec<Vec<&str>> = line
            .split('\t')
            .map(|c| c.split('\u{1e}').collect())
            .collect();
        let n = columns.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..n {
            rows.push(
                columns
                    .iter()
                    .map(|c| c.get(i).unwrap_or(&"").to_string())
                    .collect(),
            );
        }
    }
    Some(rows)
}

/// Every value of `fields` (see [`tshark_values`]).
fn tshark(
    file: &Path,
    decode_as: &[&str],
    filter: &str,
    fields: &[&str],
) -> Option<Vec<Vec<String>>> {
    tshark_values(file, decode_as, filter, fields, false)
}

/// tshark's expert summary: nothing malformed, no errors; the number of
/// "previous segment not captured" warnings.
fn expert(file: &Path, decode_as: &[&str]) -> usize {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args(["-q", "-z", "expert"]);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    let out = cmd.output().expect("tshark runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Malformed"), "malformed packets:\n{text}");
    assert!(!text.contains("Errors ("), "errors:\n{text}");
    text.lines()
        .filter(|l| l.contains("Previous segment(s) not captured"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

/// The client exchanges `replay -o json` prints for a fixture.
fn replayed(name: &str) -> Vec<serde_json::Value> {
    let out = kindling()
        .args(["replay", "-o", "json"])
        .arg(fixture(name))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|x| x["kind"] == "exchange" && x["role"] == "client")
        .collect()
}

fn attr(x: &serde_json::Value, key: &str) -> String {
    x["attributes"][key].as_str().unwrap_or_default().to_owned()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn http_requests_and_statuses_match_replay() {
    let dir = temp_dir("dump-http");
    let (file, said) = dump("http1", &dir, &[]);
    assert!(said.contains("0 payload bytes not captured"), "{said}");
    let Some(requests) = tshark(
        &file,
        &[],
        "http.request",
        &["http.request.method", "http.request.uri"],
    ) else {
        return;
    };
    let replay = replayed("http1");
    let tshark_requests = sorted(
        requests
            .iter()
            .map(|r| format!("{} {}", r[0], r[1]))
            .collect(),
    );
    let replay_requests = sorted(
        replay
            .iter()
            .map(|x| format!("{} {}", attr(x, "http.request.method"), attr(x, "url.path")))
            .collect(),
    );
    assert_eq!(tshark_requests, replay_requests);
    assert_eq!(tshark_requests.len(), 10);
    // final statuses (an interim 100 Continue is no exchange's answer)
    let statuses = tshark(&file, &[], "http.response", &["http.response.code"]).unwrap();
    let tshark_statuses = sorted(
        statuses
            .into_iter()
            .map(|r| r[0].clone())
            .filter(|s| !s.starts_with('1'))
            .collect(),
    );
    let replay_statuses = sorted(
        replay
            .iter()
            .map(|x| attr(x, "http.response.status_code"))
            .collect(),
    );
    assert_eq!(tshark_statuses, replay_statuses);
    assert_eq!(expert(&file, &[]), 0);
    // each packet names its process: the clients replay names
    let comments = tshark(&file, &[], "http.request", &["frame.comment"]).unwrap();
    let comm = |c: &str| c.split(['(', ')']).nth(1).unwrap_or_default().to_owned();
    let mut tshark_comms: Vec<String> = comments.iter().map(|c| comm(&c[0])).collect();
    tshark_comms.sort();
    tshark_comms.dedup();
    let mut replay_comms: Vec<String> = replay
        .iter()
        .map(|x| x["comm"].as_str().unwrap().to_owned())
        .collect();
    replay_comms.sort();
    replay_comms.dedup();
    assert_eq!(tshark_comms, replay_comms);
}

#[test]
fn redis_commands_match_replay_and_uncaptured_bytes_are_gaps() {
    let dir = temp_dir("dump-redis");
    let (file, said) = dump("redis", &dir, &[]);
    let decode = ["tcp.port==16379,resp"];
    // tshark 4.0's RESP dissector reads one command a segment: the
    // pipelining benchmark is left to replay's own tests; redis-cli sends
    // one at a time. The first bulk string of a request is its command.
    let Some(first) = tshark_values(
        &file,
        &decode,
        "tcp.dstport==16379 && resp.array && frame.comment contains \"(redis-cli)\"",
        &["resp.bulk_string.value"],
        true,
    ) else {
        return;
    };
    let text = |h: &str| -> String {
        let h = h.replace(':', "");
        (0..h.len() / 2)
            .filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
            .map(char::from)
            .collect()
    };
    let tshark_commands: Vec<String> = first
        .iter()
        .map(|row| text(&row[0]).to_uppercase())
        .collect();
    let replay_commands: Vec<String> = replayed("redis")
        .iter()
        .filter(|x| x["comm"] == "redis-cli")
        .map(|x| {
            attr(x, "db.operation.name")
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_uppercase()
        })
        .collect();
    assert_eq!(tshark_commands.len(), 25);
    assert_eq!(sorted(tshark_commands), sorted(replay_commands));
    // values past the snaplen: counted, and shown by Wireshark as gaps
    let gaps: u64 = said
        .split(';')
        .nth(1)
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(gaps > 0, "{said}");
    assert!(expert(&file, &decode) > 0);
}

#[test]
fn mysql_queries_match_replay() {
    let dir = temp_dir("dump-mysql");
    let (file, _) = dump("mysql", &dir, &[]);
    let decode = ["tcp.port==13306,mysql"];
    let Some(queries) = tshark(&file, &decode, "mysql.query", &["mysql.query"]) else {
        return;
    };
    let first_word = |q: &str| {
        q.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_uppercase()
    };
    // replay names a prepared statement's EXECUTE by the statement's
    // text; tshark shows the text with the PREPARE only: each EXECUTE
    // (command 23) repeats the text of the statement prepared before it
    let commands = tshark(
        &file,
        &decode,
        "mysql.command",
        &["mysql.command", "mysql.query"],
    )
    .unwrap();
    let mut tshark_queries = Vec::new();
    let mut prepared = String::new();
    for row in &commands {
        match row[0].as_str() {
            "3" => tshark_queries.push(first_word(&row[1])),
            "22" => {
                prepared = first_word(&row[1]);
                tshark_queries.push(prepared.clone());
            }
            "23" => tshark_queries.push(prepared.clone()),
            _ => {}
        }
    }
    let tshark_queries = sorted(tshark_queries);
    let replay_queries = sorted(
        replayed("mysql")
            .iter()
            .map(|x| attr(x, "db.query.text"))
            .filter(|q| !q.is_empty())
            .map(|q| first_word(&q))
            .collect(),
    );
    assert_eq!(tshark_queries, replay_queries);
    assert!(queries.len() >= 10);
    assert_eq!(expert(&file, &decode), 0);
}

#[test]
fn dns_names_and_answer_codes_match_replay() {
    let dir = temp_dir("dump-dns");
    let (file, _) = dump("dns", &dir, &[]);
    let decode = ["udp.port==15353,dns", "tcp.port==15353,dns"];
    let Some(answers) = tshark(
        &file,
        &decode,
        "dns.flags.response==1",
        &["dns.qry.name", "dns.flags.rcode"],
    ) else {
        return;
    };
    let code = |name: &str| match name {
        "NOERROR" => "0",
        "SERVFAIL" => "2",
        "NXDOMAIN" => "3",
        "REFUSED" => "5",
        other => panic!("unexpected rcode {other}"),
    };
    let tshark_answers = sorted(
        answers
            .iter()
            .map(|a| format!("{} {}", a[0], a[1]))
            .collect(),
    );
    let replay_answers = sorted(
        replayed("dns")
            .iter()
            .filter(|x| !attr(x, "dns.response.code").is_empty())
            .map(|x| {
                format!(
                    "{} {}",
                    attr(x, "dns.question.name"),
                    code(&attr(x, "dns.response.code"))
                )
            })
            .collect(),
    );
    assert_eq!(tshark_answers, replay_answers);
    assert_eq!(expert(&file, &decode), 0);
}

#[test]
fn filters_keep_one_process_and_port() {
    let dir = temp_dir("dump-filter");
    let (all, _) = dump("http1", &dir, &[]);
    let everything = tshark(&all, &[], "tcp", &["frame.comment"]);
    let Some(everything) = everything else { return };
    // the server's pid, from a comment
    let nginx = everything
        .iter()
        .find(|c| c[0].contains("(nginx)"))
        .and_then(|c| c[0].split_whitespace().nth(1).map(str::to_owned))
        .expect("nginx wrote");
    let filtered_dir = dir.join("filtered");
    std::fs::create_dir_all(&filtered_dir).unwrap();
    let (one, _) = dump("http1", &filtered_dir, &["--pid", &nginx]);
    let comments = tshark(&one, &[], "tcp", &["frame.comment"]).unwrap();
    assert!(!comments.is_empty());
    assert!(
        comments
            .iter()
            .all(|c| c[0].contains(&format!("pid {nginx} "))),
        "{comments:?}"
    );
    // nginx's side alone still carries both directions: every request
    let requests = tshark(&one, &[], "http.request", &["http.request.method"]).unwrap();
    assert_eq!(requests.len(), 10);
    // a port nothing used: an empty (but valid) file
    let (none, said) = dump("http1", &filtered_dir, &["--port", "1"]);
    assert!(said.contains("wrote 0 packets"), "{said}");
    assert_eq!(tshark(&none, &[], "", &["frame.number"]).unwrap().len(), 0);
}

/// `record --pcapng` writes the same packets live: curl's requests to a
/// server of the test's, read back by tshark with the process named.
#[test]
fn record_writes_pcapng_live() {
    if !common::privileged("record --pcapng") {
        return;
    }
    let dir = temp_dir("dump-live");
    let port = common::http_server();
    let capture = dir.join("live.kcap");
    let pcapng = dir.join("live.pcapng");
    let record = kindling()
        .arg("record")
        .arg("-o")
        .arg(&capture)
        .arg("--pcapng")
        .arg(&pcapng)
        .args([
            "--quiet",
            "--kubernetes",
            "off",
            "--port",
            &port.to_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("record starts");
    let record = common::Stop(record);
    let mut sent = 0;
    common::wait_for(
        "the recording to capture",
        std::time::Duration::from_secs(40),
        || {
            for path in ["/live/1", "/live/2"] {
                let ok = Command::new("curl")
                    .args(["-s", "-o", "/dev/null"])
                    .arg(format!("http://127.0.0.1:{port}{path}"))
                    .status()
                    .is_ok_and(|s| s.success());
                sent += usize::from(ok);
            }
            std::fs::metadata(&capture).is_ok_and(|m| m.len() > 2048)
        },
    );
    let err = common::terminate(record);
    assert!(err.contains("packets to"), "{err}");
    let Some(requests) = tshark(
        &pcapng,
        &[],
        "http.request",
        &["http.request.uri", "frame.comment"],
    ) else {
        return;
    };
    assert!(!requests.is_empty(), "no request in the live pcapng");
    for r in &requests {
        assert!(r[0].starts_with("/live/"), "{r:?}");
        assert!(r[1].contains("(curl)"), "{r:?}");
    }
    assert!(
        requests.len() <= sent,
        "{} requests drawn, {sent} sent",
        requests.len()
    );
    // the same as dump of the capture recorded alongside
    let again = dir.join("again.pcapng");
    let out = kindling()
        .arg("dump")
        .arg(&capture)
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success());
    let dumped = tshark(
        &again,
        &[],
        "http.request",
        &["http.request.uri", "frame.comment"],
    )
    .unwrap();
    assert_eq!(dumped, requests);
    expert(&pcapng, &[]);
}

/// A network namespace the test creates (with its loopback up), deleted
/// when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let up = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        Self(name)
    }

    /// Its inode, as `/proc/PID/ns/net` and the probe name it.
    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.0))
            .unwrap()
            .ino()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One interface per network namespace: the same address and port serve
/// HTTP on the host and inside a namespace of the test's; each
/// namespace's conversation is drawn on its own interface (`host`,
/// `netns-INODE`), and neither leaks into the other.
#[test]
fn each_network_namespace_is_an_interface() {
    if !common::privileged("dump of two namespaces") {
        return;
    }
    let dir = temp_dir("dump-netns");
    let ns = Netns::new(format!("kdump{}", std::process::id()));
    let port = common::http_server();
    common::http_server_in_netns(&ns.0, "127.0.0.1", port);
    let capture = dir.join("netns.kcap");
    let record = kindling()
        .arg("record")
        .arg("-o")
        .arg(&capture)
        .args([
            "--quiet",
            "--kubernetes",
            "off",
            "--port",
            &port.to_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("record starts");
    let record = common::Stop(record);
    let curl = |inside: bool, path: &str| {
        let mut c = if inside {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.0, "curl"]);
            c
        } else {
            Command::new("curl")
        };
        c.args(["-s", "-o", "/dev/null"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut rounds = 0;
    common::wait_for(
        "the recording to capture both namespaces",
        std::time::Duration::from_secs(40),
        || {
            assert!(curl(false, "/on-host"), "curl on the host");
            assert!(curl(true, "/in-netns"), "curl in the namespace");
            rounds += 1;
            rounds >= 3 && std::fs::metadata(&capture).is_ok_and(|m| m.len() > 8192)
        },
    );
    common::terminate(record);
    let pcapng = dir.join("netns.pcapng");
    let out = kindling()
        .arg("dump")
        .arg(&capture)
        .arg("-o")
        .arg(&pcapng)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let Some(rows) = tshark(
        &pcapng,
        &[],
        "http.request",
        &["frame.interface_name", "http.request.uri"],
    ) else {
        return;
    };
    let netns = format!("netns-{}", ns.inode());
    let on = |iface: &str, uri: &str| rows.iter().filter(|r| r[0] == iface && r[1] == uri).count();
    assert!(on("host", "/on-host") >= 1, "{rows:?}");
    assert!(on(&netns, "/in-netns") >= 1, "{rows:?}");
    assert_eq!(
        on("host", "/on-host") + on(&netns, "/in-netns"),
        rows.len(),
        "a request drawn on the other namespace's interface: {rows:?}"
    );
    // both sides of each connection are traced in the same namespace:
    // every request is drawn once (from one socket), not twice
    assert!(on("host", "/on-host") <= rounds && on(&netns, "/in-netns") <= rounds);
    let descriptions = tshark(&pcapng, &[], "frame", &["frame.interface_description"]).unwrap();
    // (the first may be curl's send or the server's receive: whichever
    // record the ring gave first)
    let inside = format!("network namespace net:[{}]; first packet: pid ", ns.inode());
    assert!(
        descriptions.iter().any(|d| d[0].starts_with(&inside)),
        "the namespace's interface names its first process: {descriptions:?}"
    );
    expert(&pcapng, &[]);
}

/// `--protocol` keeps the connections Kindling's parsers name so: all of
/// a MySQL capture for `mysql`, nothing of it for `http`; an unknown name
/// is an error naming the known ones.
#[test]
fn protocol_filter_keeps_the_connections_of_a_protocol() {
    let dir = temp_dir("dump-protocol");
    let (_, all) = dump("mysql", &dir, &[]);
    let mysql_dir = dir.join("mysql");
    std::fs::create_dir_all(&mysql_dir).unwrap();
    let (_, mysql) = dump("mysql", &mysql_dir, &["--protocol", "mysql"]);
    let packets = |said: &str| {
        said.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(packets(&mysql), packets(&all), "{mysql} / {all}");
    let (_, http) = dump("mysql", &mysql_dir, &["--protocol", "http"]);
    assert!(http.contains("wrote 0 packets"), "{http}");
    let bad = kindling()
        .arg("dump")
        .arg(fixture("mysql"))
        .args(["-o"])
        .arg(dir.join("x.pcapng"))
        .args(["--protocol", "gopher"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("gopher") && err.contains("mysql"), "{err}");
}
