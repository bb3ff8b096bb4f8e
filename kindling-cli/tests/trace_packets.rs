//! `kindling trace-packets` on a small pod network the test builds (root):
//! hosts A and B on a bridge in namespace R, host C behind a routed veth
//! with a small MTU; an nftables table in R that drops one port, drops the
//! first data segment of each connection to another, and plays a ClusterIP
//! with DNAT; an iptables rule that drops a third port; a blackhole route. Real HTTP and UDP between the
//! namespaces; the traced paths must name the devices and namespaces in
//! order, the translation, and each drop's own reason and place.

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::kindling;
use serde_json::Value;

/// The namespaces and links of one test, removed when dropped.
struct PodNet {
    a: String,
    b: String,
    c: String,
    r: String,
}

fn sh(script: &str) {
    let out = Command::new("sh").args(["-ec", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PodNet {
    fn new(tag: &str) -> Self {
        let id = format!("{tag}{}", std::process::id() % 100_000);
        let net = PodNet {
            a: format!("kp{id}a"),
            b: format!("kp{id}b"),
            c: format!("kp{id}c"),
            r: format!("kp{id}r"),
        };
        net.remove();
        let (a, b, c, r) = (&net.a, &net.b, &net.c, &net.r);
        sh(&format!(
            "for n in {a} {b} {c} {r}; do ip netns add $n; ip -n $n link set lo up; done
             ip -n {r} link add br0 type bridge; ip -n {r} link set br0 up
             ip -n {r} addr add 10.10.0.1/24 dev br0
             ip -n {r} link add pa type veth peer name eth0 netns {a}
             ip -n {r} link add pb type veth peer name eth0 netns {b}
             ip -n {r} link add pc type veth peer name eth0 netns {c}
             for p in pa pb; do ip -n {r} link set $p master br0 up; done
             for h in {a} {b} {c}; do ip -n $h link set eth0 up; done
             ip -n {a} addr add 10.10.0.10/24 dev eth0
             ip -n {b} addr add 10.10.0.20/24 dev eth0
             ip -n {r} addr add 10.20.0.1/24 dev pc
             ip -n {c} addr add 10.20.0.2/24 dev eth0
             ip -n {r} link set pc up mtu 1280; ip -n {c} link set eth0 mtu 1280
             ip -n {a} route add default via 10.10.0.1
             ip -n {b} route add default via 10.10.0.1
             ip -n {c} route add default via 10.20.0.1
             ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1
             for h in {a} {b} {c}; do ip netns exec $h sysctl -qw net.ipv4.ip_forward=0; done
             ip netns exec {r} sysctl -qw net.bridge.bridge-nf-call-iptables=0 2>/dev/null || true
             ip netns exec {r} sysctl -qw net.ipv4.neigh.pc.retrans_time_ms=100
             ip netns exec {r} sysctl -qw net.ipv4.neigh.pc.mcast_solicit=2
             ip netns exec {r} sysctl -qw net.ipv4.icmp_ratelimit=0
             ip -n {r} route add blackhole 10.30.0.0/24
             ip netns exec {r} nft -f - <<'EOF'
table inet kindling_test {{
  chain pre {{ type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.96.0.10 tcp dport 80 dnat ip to 10.20.0.2:8080; }}
  set once {{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout 1m; }}
  chain fw {{ type filter hook forward priority filter; policy accept;
    udp dport 9999 drop;
    tcp dport 8081 tcp flags & psh == psh ip saddr . tcp sport != @once add @once {{ ip saddr . tcp sport }} drop; }}
}}
EOF
             ip netns exec {r} iptables -A FORWARD -p udp --dport 9998 -j DROP"
        ));
        net
    }

    fn remove(&self) {
        for n in [&self.a, &self.b, &self.c, &self.r] {
            let _ = Command::new("ip")
                .args(["netns", "pids", n])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").arg(pid).status();
                    }
                });
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }

    fn inode(&self, name: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{name}"))
            .unwrap()
            .ino()
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `kindling trace-packets ARGS -o json` running until [`Trace::stop`].
struct Trace {
    child: Option<std::process::Child>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Trace {
    fn start(args: &[&str]) -> Self {
        let mut child = kindling()
            .arg("trace-packets")
            .args(args)
            .args(["-o", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trace-packets starts");
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("attached") => break,
                Ok(_) => {}
                Err(_) => panic!("the tracer did not attach"),
            }
        }
        Trace {
            child: Some(child),
            stderr: rx,
        }
    }

    /// SIGINT, then every JSON object it printed and its last stderr line.
    fn stop(mut self) -> (Vec<Value>, String) {
        let child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "trace-packets failed");
        let mut last = String::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(2)) {
            last = line;
        }
        let values = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        (values, last)
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn packets(values: &[Value]) -> Vec<&Value> {
    values.iter().filter(|v| v["kind"] == "packet").collect()
}

/// (device, netns inode) of each hop that has a device.
fn devices(p: &Value) -> Vec<(String, u64)> {
    p["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| Some((h["device"].as_str()?.to_owned(), h["netns"].as_u64()?)))
        .collect()
}

/// Sends `len` bytes of UDP from inside namespace `ns` to `to`, with the
/// don't-fragment bit set (path MTU discovery "do").
fn udp_from(ns: &str, to: &str, len: usize) {
    let to = to.to_owned();
    common::in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        let v: libc::c_int = libc::IP_PMTUDISC_DO;
        // SAFETY: a valid socket and option value of the right size
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        // errors (EMSGSIZE once the path MTU is known, EHOSTUNREACH after
        // a failed neighbour) are part of what some cases provoke
        let _ = s.send_to(&vec![b'x'; len], to.as_str());
    });
}

fn curl_from(ns: &str, url: &str) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "5",
            url,
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_bridged_request_names_each_device_and_namespace_in_order() {
    if !common::privileged("trace-packets across a bridge") {
        return;
    }
    let net = PodNet::new("br");
    let port = 18_000 + (std::process::id() % 1000) as u16;
    common::http_server_in_netns(&net.b, "10.10.0.20", port);
    let trace = Trace::start(&["--port", &port.to_string(), "--protocol", "tcp"]);
    assert!(curl_from(
        &net.a,
        &format!("http://10.10.0.20:{port}/bridged")
    ));
    let (values, last) = trace.stop();
    let all = packets(&values);
    let (na, nr, nb) = (net.inode(&net.a), net.inode(&net.r), net.inode(&net.b));
    // A's SYN to B: out of A's eth0, into the bridge port pa, out of pb,
    // into B's eth0
    let syn = all
        .iter()
        .find(|p| p["tcp_flags"] == "SYN" && p["dst"] == format!("10.10.0.20:{port}"))
        .unwrap_or_else(|| panic!("no SYN traced: {values:?}"));
    let want = [
        ("eth0".to_owned(), na),
        ("pa".to_owned(), nr),
        ("pb".to_owned(), nr),
        ("eth0".to_owned(), nb),
    ];
    let seen = devices(syn);
    let mut at = 0;
    for hop in &seen {
        if at < want.len() && *hop == want[at] {
            at += 1;
        }
    }
    assert_eq!(at, want.len(), "hops {seen:?}, want {want:?} in order");
    let offsets: Vec<u64> = syn["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["offset_ns"].as_u64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert_eq!(syn["hops"][0]["netns_name"], net.a.as_str());
    // B's answers come back the same way, reversed
    assert!(
        all.iter().any(|p| p["src"] == format!("10.10.0.20:{port}")
            && devices(p).first() == Some(&("eth0".to_owned(), nb))),
        "no answer from B traced"
    );
    // nothing lost on the way (a socket freeing what it still held at
    // close is a drop that is no loss)
    assert!(all.iter().all(|p| p["end"]["loss"] != true), "{all:?}");
    assert!(all.iter().any(|p| p["end"]["kind"] == "delivered"));
    let flows: Vec<_> = values.iter().filter(|v| v["kind"] == "flow").collect();
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert!(flows[0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["count"].as_u64() > Some(0)));
    assert!(last.contains("lost: ring_full=0 over_budget=0"), "{last}");
}

/// The drop of each broken path: its own reason, device and namespace.
#[test]
fn each_broken_path_reports_its_own_drop_reason_and_place() {
    if !common::privileged("trace-packets drop reasons") {
        return;
    }
    let net = PodNet::new("dr");
    let nr = net.inode(&net.r);
    let trace = Trace::start(&[
        "--protocol",
        "udp",
        "--netns",
        &net.a,
        "--nft-trace",
        &net.r,
    ]);
    // an nftables rule drops the port
    udp_from(&net.a, "10.20.0.2:9999", 100);
    // an iptables rule (Debian's iptables: the nftables backend) another
    udp_from(&net.a, "10.20.0.2:9998", 100);
    // no route in the router
    udp_from(&net.a, "10.40.0.5:7000", 100);
    // a blackhole route in the router
    udp_from(&net.a, "10.30.0.5:7000", 100);
    // 1400 bytes with DF set over the 1280-byte link to C
    udp_from(&net.a, "10.20.0.2:7001", 1400);
    // an on-link address nobody answers ARP for
    udp_from(&net.a, "10.20.0.99:7002", 100);
    std::thread::sleep(Duration::from_millis(1500));
    let (values, _) = trace.stop();
    let drops: Vec<(String, String, Option<u64>, String, String)> = packets(&values)
        .iter()
        .filter(|p| p["end"]["kind"] == "dropped")
        .map(|p| {
            (
                p["dst"].as_str().unwrap_or_default().to_owned(),
                p["end"]["reason"].as_str().unwrap_or_default().to_owned(),
                p["end"]["netns"].as_u64(),
                p["end"]["device"].as_str().unwrap_or_default().to_owned(),
                p["end"]["symbol"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let find = |dst: &str| {
        drops
            .iter()
            .find(|d| d.0 == dst)
            .unwrap_or_else(|| panic!("no drop traced for {dst}: {drops:?}"))
    };
    let nft = find("10.20.0.2:9999");
    assert_eq!(
        (nft.1.as_str(), nft.2),
        ("NETFILTER_DROP", Some(nr)),
        "{nft:?}"
    );
    assert_eq!(nft.3, "br0", "dropped in the forward hook, come in on br0");
    // nftables tracing names the rule
    let rule_of = |dst: &str| {
        packets(&values)
            .iter()
            .find(|p| p["dst"] == dst)
            .and_then(|p| p["drop_rule"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let rule = rule_of("10.20.0.2:9999");
    assert!(
        rule.starts_with("inet kindling_test fw handle ") && rule.ends_with("udp dport 9999 drop"),
        "{rule:?}"
    );
    let iptables = rule_of("10.20.0.2:9998");
    assert!(
        iptables.starts_with("ip filter FORWARD handle ")
            && iptables.ends_with("udp dport 9998 counter drop"),
        "{iptables:?}"
    );
    // and the marking table is gone with the trace
    let left = Command::new("ip")
        .args(["netns", "exec", &net.r, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&left.stdout).contains("kindling_trace"));
    let no_route = find("10.40.0.5:7000");
    assert_eq!(
        (no_route.1.as_str(), no_route.2),
        ("IP_INNOROUTES", Some(nr))
    );
    let blackhole = find("10.30.0.5:7000");
    assert_eq!(blackhole.2, Some(nr));
    assert!(blackhole.4.starts_with("ip_error"), "{blackhole:?}");
    let too_big = find("10.20.0.2:7001");
    assert_eq!((too_big.1.as_str(), too_big.2), ("PKT_TOO_BIG", Some(nr)));
    let neigh = find("10.20.0.99:7002");
    assert_eq!((neigh.1.as_str(), neigh.2), ("NEIGH_FAILED", Some(nr)));
    // five different places or reasons
    let distinct: std::collections::BTreeSet<_> = [nft, no_route, blackhole, too_big, neigh]
        .iter()
        .map(|d| (&d.1, &d.4))
        .collect();
    assert_eq!(distinct.len(), 5, "{drops:?}");
}

/// A DNAT rule playing a ClusterIP: the path shows the translation where it
/// happened and follows the packet to the backend's namespace; the answers
/// (new packets with the backend's port) are followed too.
#[test]
fn dnat_is_shown_and_the_packet_followed_to_the_backend() {
    if !common::privileged("trace-packets through DNAT") {
        return;
    }
    let net = PodNet::new("nat");
    let (nr, nc) = (net.inode(&net.r), net.inode(&net.c));
    common::http_server_in_netns(&net.c, "10.20.0.2", 8080);
    let trace = Trace::start(&["--port", "80", "--protocol", "tcp", "--nft-trace", &net.r]);
    assert!(curl_from(&net.a, "http://10.96.0.10/clusterip"));
    let (values, _) = trace.stop();
    let all = packets(&values);
    let syn = all
        .iter()
        .find(|p| p["tcp_flags"] == "SYN" && p["dst"] == "10.96.0.10:80")
        .unwrap_or_else(|| panic!("no SYN to the ClusterIP: {values:?}"));
    let hops = syn["hops"].as_array().unwrap();
    let nat = hops
        .iter()
        .position(|h| h["translated"] == true)
        .unwrap_or_else(|| panic!("no translation in {hops:?}"));
    assert_eq!(hops[nat]["dst"], "10.20.0.2:8080");
    assert_eq!(hops[nat - 1]["dst"], "10.96.0.10:80");
    assert_eq!(
        hops[nat]["netns"].as_u64(),
        Some(nr),
        "translated in the router"
    );
    let rule = syn["nat_rule"].as_str().unwrap_or_default();
    assert!(
        rule.starts_with("inet kindling_test pre handle ")
            && rule.contains("dnat ip to 10.20.0.2:8080"),
        "the DNAT rule is named: {syn}"
    );
    assert!(
        hops[nat..]
            .iter()
            .any(|h| h["netns"].as_u64() == Some(nc) && h["device"] == "eth0"),
        "followed into the backend: {hops:?}"
    );
    // the backend's answer, from port 8080 (learned from the translation)
    assert!(
        all.iter().any(|p| p["src"] == "10.20.0.2:8080"),
        "the answers were not followed"
    );
    let flows: Vec<_> = values.iter().filter(|v| v["kind"] == "flow").collect();
    assert!(
        flows.iter().any(|f| f["translated"].as_u64() > Some(0)),
        "{flows:?}"
    );
}

/// A flood far over the budget: the tracer keeps to it, counts the rest as
/// lost, and its memory stays bounded.
#[test]
fn a_flood_stays_bounded_and_its_loss_is_counted() {
    if !common::privileged("trace-packets under a flood") {
        return;
    }
    let net = PodNet::new("fl");
    let trace = Trace::start(&["--port", "7777", "--budget", "2000"]);
    let pid = trace.child.as_ref().unwrap().id();
    let sent = common::in_netns(&net.a, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            if s.send_to(b"flood", "10.10.0.20:7777").is_ok() {
                n += 1;
            }
        }
        n
    });
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap();
    let (values, last) = trace.stop();
    let traced = packets(&values).len() as u64;
    assert!(sent > 50_000, "only {sent} packets sent");
    assert!(traced > 0 && traced < sent, "{traced} of {sent}");
    let over: u64 = last
        .split_whitespace()
        .find_map(|w| w.strip_prefix("over_budget=")?.parse().ok())
        .unwrap_or_else(|| panic!("{last}"));
    assert!(over > 0, "the loss is counted: {last}");
    assert!(rss_kib < 128 * 1024, "{rss_kib} KiB");
}

/// `kindling agent --trace-packets 1`: the drops of the pod network and
/// the hops of its traffic are series on `/metrics`.
#[test]
fn the_agent_counts_drops_by_device_namespace_and_reason() {
    if !common::privileged("agent --trace-packets") {
        return;
    }
    let net = PodNet::new("ag");
    let nr = net.inode(&net.r);
    let port = common::free_port();
    let agent = kindling()
        .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--kubernetes", "off", "--trace-packets", "1", "--port", "9"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent starts");
    let agent = common::Stop(agent);
    common::wait_for("the agent to be ready", Duration::from_secs(30), || {
        common::get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    // (the agent puts its node label first)
    let has = |text: &str, name: &str, labels: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
    };
    let drop = format!("device=\"br0\",netns=\"{nr}\",reason=\"NETFILTER_DROP\"}}");
    let mut text = String::new();
    common::wait_for("the drop on /metrics", Duration::from_secs(20), || {
        udp_from(&net.a, "10.20.0.2:9999", 64);
        text = common::get(port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        has(&text, "kindling_net_drop_total", &drop)
    });
    // the hops on the way to the drop: A's eth0, then the bridge port
    assert!(
        has(
            &text,
            "kindling_net_hop_latency_seconds_bucket",
            "from=\"queue eth0\",to=\"receive pa\""
        ),
        "{text}"
    );
    assert!(text.contains("kindling_net_packets_traced_total"));
    assert!(has(
        &text,
        "kindling_net_trace_hops_lost_total",
        "reason=\"over_budget\"}"
    ));
    let err = common::terminate(agent);
    assert!(err.contains("packet tracer attached"), "{err}");
}

/// `kindling agent --trace-packets 1`: the nftables rule drops the first
/// data segment of a request once, TCP retransmits it, and the retransmit
/// record, the client's exchange and a counter name that drop.
#[test]
fn a_retransmit_names_the_drop_that_caused_it() {
    if !common::privileged("agent --trace-packets") {
        return;
    }
    let net = PodNet::new("rt");
    let nr = net.inode(&net.r);
    common::http_server_in_netns(&net.c, "10.20.0.2", 8081);
    let port = common::free_port();
    let json = common::temp_dir("retransmit-cause").join("out.jsonl");
    let agent = kindling()
        .args(["agent", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--kubernetes",
            "off",
            "--trace-packets",
            "1",
            "--port",
            "8081",
        ])
        .arg("--json-out")
        .arg(&json)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent starts");
    let agent = common::Stop(agent);
    common::wait_for("the agent to be ready", Duration::from_secs(30), || {
        common::get(port, "/readyz").is_some_and(|(status, _)| status == 200)
    });
    // answered, after one retransmit
    assert!(curl_from(&net.a, "http://10.20.0.2:8081/"));
    // (the agent puts its node label first)
    let caused = format!("device=\"br0\",netns=\"{nr}\",reason=\"NETFILTER_DROP\"}} ");
    let mut text = String::new();
    common::wait_for(
        "the linked retransmit on /metrics",
        Duration::from_secs(10),
        || {
            text = common::get(port, "/metrics")
                .map(|(_, body)| body)
                .unwrap_or_default();
            text.lines().any(|l| {
                l.starts_with("kindling_net_retransmits_caused_total{") && l.contains(&caused)
            })
        },
    );
    let err = common::terminate(agent);
    let lines: Vec<Value> = std::fs::read_to_string(&json)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let is_the_drop =
        |c: &Value| c["reason"] == "NETFILTER_DROP" && c["device"] == "br0" && c["netns"] == nr;
    let retransmit = lines
        .iter()
        .find(|v| v["kind"] == "tcp" && v["event"] == "retransmit" && v["dst"] == "10.20.0.2:8081")
        .unwrap_or_else(|| panic!("no retransmit record in {lines:?}\n{err}"));
    assert!(is_the_drop(&retransmit["drop_cause"]), "{retransmit}");
    let exchange = lines
        .iter()
        .find(|v| v["kind"] == "exchange" && v["role"] == "client" && v["dst"] == "10.20.0.2:8081")
        .unwrap_or_else(|| panic!("no client exchange in {lines:?}"));
    assert!(exchange["error"].is_null(), "{exchange}");
    assert!(
        exchange["network"]["retransmits"].as_u64() >= Some(1),
        "{exchange}"
    );
    assert!(is_the_drop(&exchange["drop_cause"]), "{exchange}");
    // the drop came before the retransmit it caused
    let (dropped, resent) = (
        retransmit["drop_cause"]["ts"].as_i64().unwrap(),
        retransmit["ts"].as_i64().unwrap(),
    );
    assert!(dropped <= resent, "{dropped} > {resent}");
    // the server's side saw no retransmit and claims no drop
    assert!(lines
        .iter()
        .filter(|v| v["kind"] == "exchange" && v["role"] == "server")
        .all(|v| v.get("drop_cause").is_none()));
}

/// A process in a cgroup named as Docker names its containers
/// (`docker-<id>.scope`), removed (process and cgroup) when dropped.
struct FakeContainer {
    id: String,
    child: std::process::Child,
    cgroup: std::path::PathBuf,
    mounted: Option<std::path::PathBuf>,
}

impl FakeContainer {
    /// `sleep` in namespace `netns`, in a container cgroup of the cgroup2
    /// hierarchy (mounted for the test where the host has none).
    fn start(netns: &str) -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let existing = mountinfo.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.starts_with("cgroup2 ")).then(|| pre.split(' ').nth(4).map(String::from))?
        });
        let (root, mounted) = match existing {
            Some(m) => (std::path::PathBuf::from(m), None),
            None => {
                let m = common::temp_dir("cgroup2");
                sh(&format!("mount -t cgroup2 none {}", m.display()));
                (m.clone(), Some(m))
            }
        };
        let id = format!("c0ffee{:08x}{}", std::process::id(), "ab".repeat(25));
        let cgroup = root.join(format!("docker-{id}.scope"));
        std::fs::create_dir_all(&cgroup).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "sleep", "60"])
            .spawn()
            .unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), child.id().to_string()).unwrap();
        FakeContainer {
            id,
            child,
            cgroup,
            mounted,
        }
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir(&self.cgroup);
        if let Some(m) = &self.mounted {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

/// `--container ID`: packets start being followed in that container's
/// network namespace (found by its cgroup), not in its neighbour's.
#[test]
fn a_container_is_traced_from_its_network_namespace() {
    if !common::privileged("trace-packets --container") {
        return;
    }
    let net = PodNet::new("ct");
    let container = FakeContainer::start(&net.a);
    common::http_server_in_netns(&net.c, "10.20.0.2", 8080);
    // a short id, as `docker ps` shows it
    let trace = Trace::start(&["--container", &container.id[..12], "--port", "8080"]);
    assert!(curl_from(
        &net.a,
        "http://10.20.0.2:8080/from-the-container"
    ));
    assert!(curl_from(
        &net.b,
        "http://10.20.0.2:8080/from-its-neighbour"
    ));
    let (values, _) = trace.stop();
    let all = packets(&values);
    let na = net.inode(&net.a);
    assert!(
        all.iter()
            .any(|p| p["src"].as_str().unwrap().starts_with("10.10.0.10:")
                && devices(p).first() == Some(&("eth0".to_owned(), na))),
        "the container's packets are followed from its namespace: {all:?}"
    );
    let neighbour = |p: &&&Value| {
        [&p["src"], &p["dst"]]
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("10.10.0.20:"))
    };
    assert!(!all.iter().any(|p| neighbour(&p)), "{all:?}");
    // an id no container has is one clear error
    let out = kindling()
        .args(["trace-packets", "--container", "0123456789abcdef"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no process of such a container"), "{err}");
}
