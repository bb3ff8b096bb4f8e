//! `trace-packets --nft-trace NETNS`: nftables tracing in a network
//! namespace, to name the table, chain and rule that dropped or translated
//! a traced packet.
//!
//! It edits that namespace's ruleset, which is why it is asked for by
//! name: a table `inet kindling_trace` whose chains (hooked before every
//! other, at prerouting and output) set `meta nftrace` on the packets of
//! the trace's ports, and a listener on the `NFNLGRP_NFTRACE` netlink
//! group, made inside the namespace (the kernel builds trace messages only
//! for listeners of the packet's namespace). The table is deleted when the
//! trace ends, and before it starts in case a killed trace left it.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kindling_flow::packets::nftrace::{parse_messages, NftTrace};

const TABLE: &str = "kindling_trace";
const NFNLGRP_NFTRACE: u32 = 9;

/// A trace message and the namespace it came from.
pub type Traced = (String, NftTrace);

/// The listeners and marking tables of every namespace asked for.
pub struct NftTracer {
    namespaces: Vec<String>,
    traces: mpsc::Receiver<Traced>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Messages the kernel could not queue (ENOBUFS) or that failed.
    lost: Arc<AtomicU64>,
    rules: HashMap<(String, &'static str, String, String, u64), Option<String>>,
}

/// `nft` in namespace `ns` (`host`: this process' own).
fn nft(ns: &str) -> Command {
    if ns == "host" {
        Command::new("nft")
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, "nft"]);
        c
    }
}

fn run_nft(ns: &str, script: &str) -> Result<()> {
    let mut child = nft(ns)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (apt-get install nftables)")?;
    child
        .stdin
        .take()
        .context("nft's standard input")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The marking table for packets of `ports` (all TCP and UDP without).
fn marking_table(ports: &[u16]) -> String {
    let matches: Vec<String> = if ports.is_empty() {
        vec!["meta l4proto { tcp, udp }".to_owned()]
    } else {
        let set = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            format!("meta l4proto {{ tcp, udp }} th dport {{ {set} }}"),
            format!("meta l4proto {{ tcp, udp }} th sport {{ {set} }}"),
        ]
    };
    let rules: String = matches
        .iter()
        .map(|m| format!("    {m} meta nftrace set 1\n"))
        .collect();
    format!(
        "table inet {TABLE} {{\n  chain pre {{\n    type filter hook prerouting priority -301;\n{rules}  }}\n  \
         chain out {{\n    type filter hook output priority -301;\n{rules}  }}\n}}\n"
    )
}

fn remove_table(ns: &str) {
    let _ = nft(ns)
        .args(["delete", "table", "inet", TABLE])
        .stderr(Stdio::null())
        .status();
}

impl NftTracer {
    /// Installs the marking tables and starts a listener in each of
    /// `namespaces` (`ip netns` names, or `host`).
    pub fn start(namespaces: &[String], ports: &[u16]) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let lost = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for ns in namespaces {
            // the listener first: no trace is built without one
            let (ready_tx, ready_rx) = mpsc::channel();
            let (ns2, tx, stop2, lost2) = (ns.clone(), tx.clone(), stop.clone(), lost.clone());
            threads.push(std::thread::spawn(move || {
                listen(&ns2, &tx, &stop2, &lost2, &ready_tx);
            }));
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .context("the nftables trace listener did not start")?
                .with_context(|| format!("listening to nftables traces in {ns}"))?;
            remove_table(ns);
            run_nft(ns, &marking_table(ports))?;
        }
        Ok(Self {
            namespaces: namespaces.to_vec(),
            traces: rx,
            stop,
            threads,
            lost,
            rules: HashMap::new(),
        })
    }

    /// Trace messages received since the last call.
    pub fn drain(&self) -> Vec<Traced> {
        self.traces.try_iter().collect()
    }

    /// Messages lost (the socket's queue overflowed).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// `FAMILY TABLE CHAIN handle N: RULE` of a trace, the rule's text
    /// from `nft -a -s list chain` (looked up once).
    pub fn describe(&mut self, ns: &str, t: &NftTrace) -> String {
        let head = format!("{} {} {}", t.family, t.table, t.chain);
        let Some(handle) = t.rule_handle else {
            return format!("{head} policy {}", t.verdict.name());
        };
        let key = (
            ns.to_owned(),
            t.family,
            t.table.clone(),
            t.chain.clone(),
            handle,
        );
        let text = self
            .rules
            .entry(key)
            .or_insert_with(|| rule_text(ns, t, handle))
            .clone();
        match text {
            Some(rule) => format!("{head} handle {handle}: {rule}"),
            None => format!("{head} handle {handle}: {}", t.verdict.name()),
        }
    }
}

fn rule_text(ns: &str, t: &NftTrace, handle: u64) -> Option<String> {
    let out = nft(ns)
        // stateless: a counter's values would change the text each time
        .args(["-a", "-s", "list", "chain", t.family, &t.table, &t.chain])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let suffix = format!("# handle {handle}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with(&suffix))
        // (iptables-nft's rules print with double spaces)
        .map(|l| {
            let rule = l.trim_end_matches(&suffix);
            rule.split_whitespace().collect::<Vec<_>>().join(" ")
        })
}

impl Drop for NftTracer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for ns in &self.namespaces {
            remove_table(ns);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The listener of one namespace: enters it (this thread only), joins the
/// trace group and forwards every trace until `stop`.
fn listen(
    ns: &str,
    tx: &mpsc::Sender<Traced>,
    stop: &AtomicBool,
    lost: &AtomicU64,
    ready: &mpsc::Sender<std::io::Result<()>>,
) {
    let socket = (|| {
        if ns != "host" {
            let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
            // SAFETY: a valid namespace fd; only this thread changes
            // namespace
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        s.bind_auto()?;
        s.add_membership(NFNLGRP_NFTRACE)?;
        s.set_non_blocking(true)?;
        Ok(s)
    })();
    let socket = match socket {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => {
                for t in parse_messages(&buf[..n.min(buf.len())]) {
                    let _ = tx.send((ns.to_owned(), t));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                lost.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
