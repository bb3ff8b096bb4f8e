//! `kindling agent`: its settings (flags over environment over file), its
//! errors, and, as root, a real Prometheus server scraping it while real
//! HTTP traffic runs.

mod common;

use common::{
    free_port, get, get_with, http_server, kindling, privileged, temp_dir, wait_for, Stop,
};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "deploy.rs"]
#[allow(dead_code, reason = "its tests run from deploy.rs itself")]
mod deploy;

#[test]
fn settings_come_from_flags_then_environment_then_file() {
    let dir = temp_dir("settings");
    let file = dir.join("agent.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9611\"\ncluster = \"from-file\"\nnode = \"file-node\"\nports = [80, 443]\n",
    )
    .unwrap();
    let print = |envs: &[(&str, &str)], flags: &[&str]| {
        let out = kindling()
            .arg("agent")
            .args(["--config", file.to_str().unwrap(), "--print-config"])
            .args(flags)
            .envs(envs.iter().copied())
            .output()
            .expect("kindling runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let file_only = print(&[], &[]);
    assert!(
        file_only.contains("listen = \"127.0.0.1:9611\""),
        "{file_only}"
    );
    assert!(file_only.contains("cluster = \"from-file\""), "{file_only}");
    assert!(file_only.contains("ports = [80, 443]"), "{file_only}");
    let env = print(&[("KINDLING_CLUSTER", "from-env")], &[]);
    assert!(env.contains("cluster = \"from-env\""), "{env}");
    assert!(env.contains("node = \"file-node\""), "{env}");
    let flag = print(
        &[("KINDLING_CLUSTER", "from-env")],
        &["--cluster", "from-flag", "--port", "8080"],
    );
    assert!(flag.contains("cluster = \"from-flag\""), "{flag}");
    assert!(flag.contains("ports = [8080]"), "{flag}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_and_a_port_in_use_are_one_line_errors() {
    let dir = temp_dir("bad");
    let one_line = |file_text: &str, extra: &[&str], wanted: &str| {
        let file = dir.join("agent.toml");
        std::fs::write(&file, file_text).unwrap();
        let out = kindling()
            .arg("agent")
            .args(["--config", file.to_str().unwrap()])
            .args(extra)
            .output()
            .expect("kindling runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file_text}: must fail");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains(wanted), "{file_text}: {err}");
    };
    one_line("colour = \"blue\"\n", &[], "colour");
    one_line("snaplen = \"big\"\n", &[], "snaplen");
    one_line("otlp_protocol = \"thrift\"\n", &[], "otlp_protocol");
    one_line("metrics_tls_cert = \"/c.pem\"\n", &[], "metrics_tls_key");
    one_line(
        "",
        &["--otlp-endpoint", "https://collector:4317"],
        "http://",
    );
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    one_line("", &["--listen", &addr, "--port", "1"], &addr);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Prometheus scraping the agent on `target` with the bearer token in
/// `token_file`, over HTTPS trusting `ca` when given.
fn prometheus(dir: &Path, target: u16, token_file: &Path, ca: Option<&Path>) -> (Stop, u16) {
    let config = dir.join("prometheus.yml");
    let tls = ca
        .map(|ca| {
            format!(
                "scheme: https\n    tls_config:\n      ca_file: {}\n      server_name: localhost\n    ",
                ca.display()
            )
        })
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: kindling\n    {tls}\
             authorization:\n      credentials_file: {}\n    \
             static_configs:\n      - targets: ['127.0.0.1:{target}']\n",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/prometheus/kindling-rules.yml")
                .display(),
            token_file.display()
        ),
    )
    .unwrap();
    serve_prometheus(dir)
}

/// A Prometheus running `dir/prometheus.yml` with its data in `dir/data`,
/// on a free loopback port.
fn serve_prometheus(dir: &Path) -> (Stop, u16) {
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package `prometheus`) runs");
    (Stop(child), port)
}

/// The series a PromQL query returns, as Prometheus' JSON.
fn query(port: u16, promql: &str) -> String {
    let q: String = promql
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    get(port, &format!("/api/v1/query?query={q}"))
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[test]
fn prometheus_scrapes_the_agent_while_traffic_runs() {
    if !privileged("agent scraped by prometheus") {
        return;
    }
    let dir = temp_dir("scrape");
    let web = http_server();
    let other = OtherServers::start(&dir);
    let listen = free_port();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let bearer = "Authorization: Bearer s3cret-token\r\n";
    let agent = kindling()
        .arg("agent")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .arg("--metrics-token-file")
        .arg(&token_file)
        .arg("--json-out")
        .arg(dir.join("exchanges.jsonl"))
        .args(["--json-out-max-kb", "4", "--json-out-keep", "50"])
        .args(["--port", &web.to_string()])
        .args(["--port", &other.ports()])
        .args(["--cluster", "test-cluster", "--node", "test-node"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts");
    let agent = Stop(agent);
    wait_for("/healthz", Duration::from_secs(10), || {
        get(listen, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    wait_for("/readyz", Duration::from_secs(30), || {
        get(listen, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let (_prom, prom) = prometheus(&dir, listen, &token_file, None);
    let refused = get(listen, "/metrics").map(|(s, _)| s);
    assert_eq!(refused, Some(401), "/metrics without the token");
    let wrong = get_with(listen, "/metrics", "Authorization: Bearer nope\r\n").map(|(s, _)| s);
    assert_eq!(wrong, Some(401), "/metrics with a wrong token");
    for path in ["/ok"; 19]
        .iter()
        .chain(&["/ok?api_key=topsecret123&page=2"])
        .chain(&["/fail"; 5])
    {
        let status = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-H",
                "Authorization: Bearer hdr-secret-456",
            ])
            .arg(format!("http://127.0.0.1:{web}{path}"))
            .status()
            .expect("curl runs");
        assert!(status.success());
    }
    other.traffic();
    // the agent's own exposition
    let mut metrics = String::new();
    wait_for("the exchanges in /metrics", Duration::from_secs(20), || {
        metrics = get_with(listen, "/metrics", bearer)
            .map(|(_, b)| b)
            .unwrap_or_default();
        metrics.contains("kindling_entity_request_total{") && metrics.contains("\"503\"")
    });
    assert!(metrics.ends_with("# EOF\n"), "one exposition");
    for secret in ["topsecret123", "hdr-secret-456"] {
        assert!(!metrics.contains(secret), "{secret} leaked into /metrics");
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.contains("cluster=\"test-cluster\",node=\"test-node\""),
            "every sample carries the cluster and node: {line}"
        );
    }
    assert!(metrics.contains("kindling_agent_ready{cluster=\"test-cluster\",node=\"test-node\"} 1"));
    // and what Prometheus made of it
    let mut answer = String::new();
    wait_for(
        "Prometheus to have the series",
        Duration::from_secs(30),
        || {
            answer = query(
                prom,
                "sum by (cluster, node) (kindling_entity_request_total{protocol=\"http\"})",
            );
            answer.contains("\"cluster\":\"test-cluster\"") && answer.contains("\"25\"")
        },
    );
    let errors = query(
        prom,
        "sum(kindling_entity_request_total{protocol=\"http\",response_content=\"503\"})",
    );
    assert!(errors.contains("\"5\""), "the five 503s: {errors}");
    let up = query(prom, "up{job=\"kindling\"}");
    assert!(up.contains("\"1\""), "{up}");
    // the recording rules of deploy/prometheus over the live series: the
    // workload, and the service map's caller (curl) and callee
    wait_for("the recording rules", Duration::from_secs(30), || {
        let served = query(prom, "kindling:entity_requests:rate5m{protocol=\"http\"}");
        let map = query(prom, "kindling:topology_requests:rate5m{protocol=\"http\"}");
        answer = format!("{served}\n{map}");
        served.contains(&format!("\"port\":\"{web}\""))
            && map.contains("\"src_comm\":\"curl\"")
            && map.contains(&format!("\"dst_port\":\"{web}\""))
    });
    let ratio = query(
        prom,
        "kindling:entity_error_ratio:rate5m{protocol=\"http\"}",
    );
    assert!(
        ratio.contains("\"result\":[{"),
        "the error ratio has data: {ratio}"
    );
    // the other peers' series: Redis and MySQL served, DNS answers and
    // failures, a refused connect
    wait_for(
        "the other protocols' series",
        Duration::from_secs(30),
        || {
            let served = query(prom, "sum by (protocol) (kindling_entity_request_total)");
            let dns = query(prom, "sum by (rcode) (kindling_dns_request_total)");
            let refused = query(prom, "kindling_tcp_connect_failure_total");
            answer = format!("{served}\n{dns}\n{refused}");
            ["\"redis\"", "\"mysql\"", "\"dns\""]
                .iter()
                .all(|p| served.contains(p))
                && dns.contains("\"NXDOMAIN\"")
                && dns.contains("\"NOERROR\"")
                && refused.contains(&format!("\"dst_port\":\"{}\"", other.closed))
        },
    );

    // several clusters: deploy/prometheus/central.yml federates this
    // Prometheus' series, cluster and node labels kept
    let central_dir = dir.join("central");
    std::fs::create_dir_all(&central_dir).unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let central = std::fs::read_to_string(deploy.join("central.yml"))
        .unwrap()
        .replace("scrape_interval: 30s", "scrape_interval: 1s")
        .replace(
            "- kindling-rules.yml",
            &format!("- {}", deploy.join("kindling-rules.yml").display()),
        )
        .replace(
            "['prometheus.cluster-eu.example:9090', 'prometheus.cluster-us.example:9090']",
            &format!("['127.0.0.1:{prom}']"),
        );
    assert!(central.contains(&format!("127.0.0.1:{prom}")), "{central}");
    std::fs::write(central_dir.join("prometheus.yml"), central).unwrap();
    let (_central, central_port) = serve_prometheus(&central_dir);
    wait_for(
        "the central Prometheus to federate",
        Duration::from_secs(30),
        || {
            answer = query(
                central_port,
                "sum by (cluster, node) (kindling_entity_request_total{protocol=\"http\"})",
            );
            answer.contains("\"cluster\":\"test-cluster\"")
                && answer.contains("\"node\":\"test-node\"")
        },
    );

    // every query of the Grafana dashboards parses, and those over HTTP
    // traffic and the agent return data
    let mut checked = 0;
    for (name, d) in deploy::dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let mut promql = expr.replace("$__rate_interval", "1m");
                for v in ["$cluster", "$node", "$comm", "$port"] {
                    promql = promql.replace(v, ".*");
                }
                let answer = query(prom, &promql);
                assert!(
                    answer.contains("\"status\":\"success\""),
                    "{name}: {expr}: {answer}"
                );
                // loopback neither loses nor retransmits: those panels
                // stay empty here
                let needs_loss = ["kindling_tcp_retransmit", "kindling_tcp_packet_loss"]
                    .iter()
                    .any(|m| expr.contains(m));
                if !needs_loss {
                    assert!(
                        answer.contains("\"result\":[{"),
                        "{name}: no data for {expr}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "{checked} dashboard queries");

    // SIGTERM ends it promptly and cleanly
    let err = common::terminate(agent);
    assert!(err.contains("agent stopped"), "{err}");

    // --json-out: every exchange, flushed by the SIGTERM, across the
    // rotated files (4 KiB each), in the `replay -o json` schema
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("exchanges.jsonl") {
            let text = std::fs::read_to_string(&path).unwrap();
            for secret in ["topsecret123", "hdr-secret-456"] {
                assert!(!text.contains(secret), "{secret} leaked into {name}");
            }
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    let rotated = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("exchanges.jsonl.")
        })
        .count();
    assert!(rotated >= 2, "the 4 KiB files rotated: {rotated}");
    let http: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|v: &serde_json::Value| v["kind"] == "exchange" && v["protocol"] == "http")
        .collect();
    for role in ["server", "client"] {
        let n = http.iter().filter(|v| v["role"] == role).count();
        assert_eq!(n, 25, "{role} exchanges in --json-out");
    }
    assert!(
        http.iter()
            .any(|v| v["attributes"]["url.query"] == "api_key=?&page=?"),
        "the query kept its keys, not its values"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The other peers of the scrape test: redis-server, mariadbd, dnsmasq,
/// and a port nothing listens on.
struct OtherServers {
    _redis: Stop,
    _maria: common::servers::MariaDb,
    _dnsmasq: Stop,
    redis: u16,
    mysql: u16,
    dns: u16,
    closed: u16,
}

impl OtherServers {
    fn start(dir: &Path) -> Self {
        let redis = free_port();
        let _redis = common::servers::redis_server(redis, dir);
        let mysql = free_port();
        let _maria = common::servers::MariaDb::start(mysql, "scrape");
        assert!(common::servers::admin(
            &_maria.socket,
            "CREATE DATABASE shop; CREATE TABLE shop.t (id INT); INSERT INTO shop.t VALUES (1); \
             CREATE USER app@'127.0.0.1' IDENTIFIED BY 'pw'; GRANT ALL ON shop.* TO app@'127.0.0.1'"
        ));
        let dns = free_port();
        let _dnsmasq = Stop(
            Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--no-daemon",
                    "--no-resolv",
                    "--no-hosts",
                ])
                .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
                .arg(format!("--port={dns}"))
                .args(["--address=/shop.test/127.0.0.7", "--local=/test/"])
                .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq runs"),
        );
        Self {
            _redis,
            _maria,
            _dnsmasq,
            redis,
            mysql,
            dns,
            closed: free_port(),
        }
    }

    /// `--port` values for the agent.
    fn ports(&self) -> String {
        format!("{},{},{},{}", self.redis, self.mysql, self.dns, self.closed)
    }

    /// redis-benchmark, a mariadb client, dig (an answer and an NXDOMAIN)
    /// and a refused connect.
    fn traffic(&self) {
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("the client runs");
            assert!(out.status.success(), "{cmd:?}: {out:?}");
        };
        run(Command::new("redis-benchmark")
            .args(["-p", &self.redis.to_string(), "-n", "200", "-c", "2", "-q"])
            .args(["-t", "get,set"]));
        run(Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "-uapp", "-ppw", "-A"])
            .args([
                "-P",
                &self.mysql.to_string(),
                "shop",
                "-e",
                "SELECT id FROM t",
            ]));
        for name in ["www.shop.test", "nope.test", "www.shop.test"] {
            let out = Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &self.dns.to_string(),
                    "+tries=3",
                    "+time=1",
                ])
                .arg(name)
                .output()
                .expect("dig runs");
            assert!(out.status.success(), "dig {name}: {out:?}");
        }
        let refused = std::net::TcpStream::connect(("127.0.0.1", self.closed));
        assert!(refused.is_err(), "nothing listens on {}", self.closed);
    }
}

/// `/metrics` bound with a certificate: HTTPS only, the token still
/// required, and a real Prometheus scraping it with its CA.
#[test]
fn metrics_over_tls_with_a_token_are_scraped_by_prometheus() {
    if !privileged("/metrics over TLS") {
        return;
    }
    let dir = temp_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{made:?}");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "tls-token\n").unwrap();
    let listen = free_port();
    let agent = kindling()
        .arg("agent")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .arg("--metrics-token-file")
        .arg(&token_file)
        .arg("--metrics-tls-cert")
        .arg(&cert)
        .arg("--metrics-tls-key")
        .arg(&key)
        .args(["--port", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts");
    let _agent = Stop(agent);
    let https = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&cert)
            .args(["--resolve", &format!("localhost:{listen}:127.0.0.1")])
            .args(extra)
            .arg(format!("https://localhost:{listen}/metrics"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("/metrics over HTTPS", Duration::from_secs(30), || {
        https(&["-H", "Authorization: Bearer tls-token"]) == "200"
    });
    assert_eq!(https(&[]), "401", "the token is still required");
    // every thread of the agent runs SCHED_BATCH (3): its wake-ups do not
    // preempt the applications it watches
    let tasks = std::fs::read_dir(format!("/proc/{}/task", _agent.0.id())).unwrap();
    let mut threads = 0;
    for task in tasks {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // fields after the command name: policy is the 41st of the line
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after.split(' ').nth(38).unwrap();
        assert_eq!(policy, "3", "{stat}");
        threads += 1;
    }
    assert!(threads >= 2, "{threads} threads");
    assert_eq!(
        get(listen, "/metrics").map(|(s, _)| s),
        None,
        "no plain HTTP answer"
    );
    let (_prom, prom) = prometheus(&dir, listen, &token_file, Some(&cert));
    let mut up = String::new();
    wait_for(
        "Prometheus to scrape over TLS",
        Duration::from_secs(30),
        || {
            up = query(prom, "up{job=\"kindling\"}");
            up.contains("\"1\"]")
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One process holding `n` loopback connections to its own listener, each
/// with a request sent and never answered (the listener never reads), until
/// its stdin closes. Prints "ready PORT" once all are open.
const HOLDER: &str = r#"
import socket, sys
n = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(4096)
port = srv.getsockname()[1]
print("port", port, flush=True)
clients, accepted = [], []
for i in range(n):
    c = socket.socket()
    c.connect(("127.0.0.1", port))
    c.sendall(b"GET /never/%d HTTP/1.1\r\nHost: hold\r\n\r\n" % i)
    clients.append(c)
    accepted.append(srv.accept()[0])
print("ready", port, flush=True)
sys.stdin.read()
"#;

/// Connection churn and large bodies: `n` short connections, each one GET
/// answered with `size` bytes by a thread of this process. Prints "done".
const CHURN: &str = r#"
import socket, sys, threading
n, size = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[3])))
srv.listen(4096)
body = b"x" * size
def serve():
    while True:
        c, _ = srv.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = c.recv(4096)
            if not got:
                break
            buf += got
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        c.close()
threading.Thread(target=serve, daemon=True).start()
for i in range(n):
    c = socket.socket()
    c.connect(("127.0.0.1", srv.getsockname()[1]))
    c.sendall(b"GET /churn HTTP/1.1\r\nHost: churn\r\n\r\n")
    got = 0
    while True:
        chunk = c.recv(1 << 20)
        if not chunk:
            break
        got += len(chunk)
    c.close()
print("done", flush=True)
"#;

/// The agent's memory under pathological traffic: 36,000 connections each
/// holding an unanswered request (four processes: the open-file limit is
/// 20,000 each), then a churn of 3,000 short connections and twenty 5 MB
/// bodies. The agent keeps serving, tracks the connections, and its RSS
/// stays under the documented bound (README: 256 MiB with the defaults).
#[test]
fn memory_stays_bounded_under_many_unanswered_connections() {
    if !privileged("agent memory") {
        return;
    }
    let dir = temp_dir("memory");
    let script = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let holder = script("holder.py", HOLDER);
    let churn = script("churn.py", CHURN);
    let churn_port = free_port();
    let listen = free_port();
    // the holders' ports are not known before they start: follow every
    // port (the test's own and the agent's traffic aside, there is little)
    let agent = kindling()
        .arg("agent")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts");
    let agent = Stop(agent);
    wait_for("/readyz", Duration::from_secs(30), || {
        get(listen, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let mut holders = Vec::new();
    for _ in 0..4 {
        let child = Command::new("python3")
            .arg(&holder)
            .arg("9000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        holders.push(child);
    }
    for h in &mut holders {
        let mut out = BufReader::new(h.stdout.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("ready") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "a holder died");
        }
    }
    let churned = Command::new("python3")
        .arg(&churn)
        .args(["3000", "100", &churn_port.to_string()])
        .output()
        .expect("python3 runs");
    assert!(String::from_utf8_lossy(&churned.stdout).contains("done"));
    let big = Command::new("python3")
        .arg(&churn)
        .args(["20", &(5 << 20).to_string(), &free_port().to_string()])
        .output()
        .expect("python3 runs");
    assert!(String::from_utf8_lossy(&big.stdout).contains("done"));
    // let the agent catch up, then read what it says of itself
    std::thread::sleep(Duration::from_secs(3));
    let (status, metrics) = get(listen, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let connections = value("kindling_flow_connections");
    let rss_mib = value("kindling_agent_resident_memory_bytes") / 1048576.0;
    let lost = value("kindling_agent_events_lost_total");
    println!("connections {connections}, RSS {rss_mib:.1} MiB, lost {lost}");
    assert!(
        connections >= 36_000.0,
        "every held connection tracked: {connections}"
    );
    assert!(rss_mib < 256.0, "RSS {rss_mib:.1} MiB");
    for mut h in holders {
        drop(h.stdin.take());
        let _ = h.wait();
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
