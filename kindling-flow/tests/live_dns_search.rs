//! DNS search-list expansions on the real kernel: `dig +search` with a
//! Kubernetes-like resolv.conf (`ndots:5`, three cluster search domains)
//! against a real dnsmasq. The NXDOMAIN answers to the expansions are not
//! errors; the final answer is what it is (an address, or NXDOMAIN for a
//! name that does not exist). Needs root (the probe, and a mount namespace
//! for the resolv.conf), dnsmasq and dig; without them the test skips with
//! a reason, except under `CI=true`, where it fails.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::live::{self, Drain};
use common::servers::Killed;
use kindling_flow::{Config, ErrorKind, Exchange, Role};
use kindling_probe::ProbeBuilder;

/// dnsmasq on `port`: names under cluster.local and example.test are its
/// own (unknown ones NXDOMAIN), api.example.test is 127.0.0.9.
fn dnsmasq(port: u16, dir: &std::path::Path) -> Killed {
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            &format!("--port={port}"),
            "--local=/cluster.local/",
            "--local=/example.test/",
            "--host-record=api.example.test,127.0.0.9",
            &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq starts");
    Killed(child)
}

/// `dig +search name`, in a mount namespace where /etc/resolv.conf is
/// `resolv`.
fn dig(port: u16, resolv: &std::path::Path, name: &str) -> String {
    let script = format!(
        "mount --bind {} /etc/resolv.conf && exec dig -p {port} +search +tries=1 +time=2 {name}",
        resolv.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn search_list_expansions_are_not_errors() {
    if !live::ready(
        "search_list_expansions_are_not_errors",
        &["dnsmasq", "dig", "unshare"],
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kindling-dns-search-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
    )
    .unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut probe = live::load(ProbeBuilder::new().port(port));
    let server = dnsmasq(port, &dir);
    // dnsmasq answers once it listens
    let start = Instant::now();
    while !dig(port, &resolv, "api.example.test").contains("127.0.0.9") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "dnsmasq never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dig(port, &resolv, "missing.example.test").contains("NXDOMAIN"));

    let mut pipeline = live::pipeline(Config::default());
    let out = live::drain(&mut probe, &mut pipeline, Drain::default(), || true, |_| {});
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let exchanges = live::exchanges(&out, |x| x.protocol == "dns");
    for role in [Role::Client, Role::Server] {
        let named = |name: &str| -> Vec<&Exchange> {
            exchanges
                .iter()
                .copied()
                .filter(|x| x.role == role && x.attributes.get("dns.question.name") == Some(name))
                .collect()
        };
        for base in ["api.example.test", "missing.example.test"] {
            for suffix in [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
            ] {
                let expansion = named(&format!("{base}.{suffix}"));
                assert!(
                    !expansion.is_empty(),
                    "{role:?} {base}.{suffix}: {exchanges:#?}"
                );
                for x in expansion {
                    assert_eq!(x.error, None, "{x:?}");
                    assert_eq!(x.attributes.get("dns.response.code"), Some("NXDOMAIN"));
                    assert_eq!(
                        x.attributes.get("kindling.dns.search_expansion"),
                        Some("true")
                    );
                }
            }
        }
        let found = named("api.example.test");
        assert!(
            !found.is_empty() && found.iter().all(|x| x.error.is_none()),
            "{found:#?}"
        );
        let missing = named("missing.example.test");
        assert!(
            !missing.is_empty()
                && missing.iter().all(|x| x.error == Some(ErrorKind::DnsError)
                    && x.attributes.get("kindling.dns.search_expansion").is_none()),
            "the final NXDOMAIN is an error: {missing:#?}"
        );
    }
}
