//! In-kernel filters, checked with real `curl` processes against a tiny HTTP
//! server in this test: a pid filter sees only that pid, and a probe never
//! sees the process that loaded it.
#![cfg(feature = "loader")]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use common::{decode_all, drain, privileged, with_port};
use kindling_probe::abi::Event;

/// Loads are heavy (verifier); run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Serves `n` HTTP requests with a fixed response, on its own thread.
fn http_server(n: usize) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        for _ in 0..n {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut s = stream;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
        }
    });
    (port, handle)
}

fn curl(port: u16, path: &str) -> Command {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}{path}"),
    ]);
    c
}

/// `sh` that runs `setup`, waits for a line on stdin, then becomes curl
/// (same pid), so a probe can be loaded for it before it sends anything.
fn gated_curl(setup: &str, port: u16, path: &str) -> std::process::Child {
    Command::new("sh")
        .args([
            "-c",
            &format!("{setup} read go; exec curl -s -o /dev/null http://127.0.0.1:{port}{path}"),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh and curl must be installed")
}

/// Lets a [`gated_curl`] go and waits for it.
fn release(mut child: std::process::Child) {
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    assert!(child.wait().unwrap().success());
}

fn collect(probe: &mut kindling_probe::Probe) -> Vec<Vec<u8>> {
    drain(probe, Duration::from_millis(200), Duration::from_secs(5))
}

fn payload_contains(e: &Event<'_>, needle: &[u8]) -> bool {
    matches!(e, Event::Data(d) if d.payload.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn pid_filter_sees_only_that_process() {
    if !privileged("pid filter") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (port, server) = http_server(2);
    // The shell waits for a line, then becomes curl (same pid).
    let wanted = gated_curl("", port, "/wanted");
    let pid = wanted.id();
    let mut probe = common::builder().pid(pid).load().expect("load probe");
    assert!(curl(port, "/other")
        .status()
        .expect("curl must be installed")
        .success());
    release(wanted);
    server.join().unwrap();

    let records = collect(&mut probe);
    let events = decode_all(&records);
    assert!(!events.is_empty(), "the filtered process was seen");
    for e in &events {
        // TCP/drop events fire in softirq context under any pid; the kernel
        // side keeps only those of sockets the wanted process used.
        if matches!(e, Event::Data(_) | Event::Conn(_)) {
            assert_eq!(e.header().pid.get(), pid, "only pid {pid}: {e:?}");
        }
    }
    assert!(events.iter().any(|e| payload_contains(e, b"GET /wanted")));
    assert!(
        !events.iter().any(|e| payload_contains(e, b"GET /other")),
        "unfiltered curl leaked"
    );
    assert!(
        !events
            .iter()
            .any(|e| payload_contains(e, b"HTTP/1.1 200 OK") && e.header().pid.get() != pid),
        "the server (this process) leaked"
    );
}

#[test]
fn the_loading_process_never_sees_itself() {
    if !privileged("self exclusion") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (port, server) = http_server(1);
    let mut probe = common::builder().port(port).load().expect("load probe");
    let status = curl(port, "/seen")
        .status()
        .expect("curl must be installed");
    assert!(status.success());
    server.join().unwrap();

    let records = collect(&mut probe);
    let events = decode_all(&records);
    let mine = with_port(&events, port);
    let me = std::process::id();
    assert!(
        mine.iter()
            .any(|e| payload_contains(e, b"GET /seen") && e.header().pid.get() != me),
        "curl's request is seen: {mine:?}"
    );
    for e in &mine {
        if matches!(e, Event::Data(_) | Event::Conn(_)) {
            assert_ne!(e.header().pid.get(), me, "the agent saw itself: {e:?}");
        }
    }
    // The server's response was written by this process: invisible. curl
    // reading it is visible.
    assert!(mine.iter().any(|e| payload_contains(e, b"HTTP/1.1 200 OK")));
    assert!(mine
        .iter()
        .filter(|e| payload_contains(e, b"HTTP/1.1 200 OK"))
        .all(|e| e.header().pid.get() != me));
}

#[test]
fn port_filter_drops_other_ports() {
    if !privileged("port filter") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (port, server) = http_server(1);
    let (other, other_server) = http_server(1);
    let mut probe = common::builder().port(port).load().expect("load probe");
    assert!(curl(other, "/other-port").status().unwrap().success());
    assert!(curl(port, "/this-port").status().unwrap().success());
    server.join().unwrap();
    other_server.join().unwrap();
    let records = collect(&mut probe);
    let events = decode_all(&records);
    assert!(events
        .iter()
        .any(|e| payload_contains(e, b"GET /this-port")));
    assert!(!events
        .iter()
        .any(|e| payload_contains(e, b"GET /other-port")));
    for e in &events {
        if let Event::Data(d) = e {
            let (s, p) = (d.raw.sk.sport.get(), d.raw.sk.dport.get());
            assert!(s == port || p == port, "record for ports {s}/{p}");
        }
    }
}

/// A cgroup v2 directory of our own: the existing cgroup2 mount, or one we
/// mount (hybrid v1 hosts have the v2 hierarchy unmounted).
struct TestCgroup {
    dir: std::path::PathBuf,
    mounted: Option<std::path::PathBuf>,
}

impl TestCgroup {
    fn new() -> Self {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let existing = mountinfo.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split(' ').next()? == "cgroup2")
                .then(|| pre.split(' ').nth(4).map(String::from))?
        });
        let (root, mounted) = match existing {
            Some(m) => (std::path::PathBuf::from(m), None),
            None => {
                let m = std::env::temp_dir().join(format!("kindling-cg2-{}", std::process::id()));
                std::fs::create_dir_all(&m).unwrap();
                let status = Command::new("mount")
                    .args(["-t", "cgroup2", "none"])
                    .arg(&m)
                    .status()
                    .unwrap();
                assert!(status.success(), "mounting cgroup2 failed");
                (m.clone(), Some(m))
            }
        };
        let dir = root.join(format!("kindling-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, mounted }
    }

    /// The cgroup v2 id (the directory's inode), as bpf_get_current_cgroup_id reports it.
    fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.dir).unwrap().ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(m) = &self.mounted {
            let _ = Command::new("umount").arg(m).status();
            let _ = std::fs::remove_dir(m);
        }
    }
}

#[test]
fn cgroup_filter_sees_only_that_cgroup() {
    if !privileged("cgroup filter") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cg = TestCgroup::new();
    let (port, server) = http_server(2);
    let procs = cg.dir.join("cgroup.procs");
    // The shell moves itself into the cgroup, waits, then becomes curl.
    let inside = gated_curl(
        &format!("echo $$ > {};", procs.display()),
        port,
        "/in-cgroup",
    );
    let mut probe = common::builder()
        .cgroup(cg.id())
        .load()
        .expect("load probe");
    assert!(curl(port, "/outside").status().unwrap().success());
    release(inside);
    server.join().unwrap();

    let records = collect(&mut probe);
    let events = decode_all(&records);
    assert!(
        events
            .iter()
            .any(|e| payload_contains(e, b"GET /in-cgroup")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| payload_contains(e, b"GET /outside")));
    for e in &events {
        if matches!(e, Event::Data(_) | Event::Conn(_)) {
            assert_eq!(e.header().cgroup_id.get(), cg.id());
        }
    }
}

fn loaded_program_ids() -> Vec<u32> {
    libbpf_rs::query::ProgInfoIter::default()
        .map(|p| p.id)
        .collect()
}

#[test]
fn dropping_the_probe_detaches_everything() {
    if !privileged("detach on drop") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let probe = common::builder().port(1).load().expect("load probe");
    let ours = probe.program_ids();
    assert!(
        ours.len() >= 7,
        "the connect and close entries, sys_exit and the TCP/skb hooks: {ours:?}"
    );
    let loaded = loaded_program_ids();
    assert!(ours.iter().all(|id| loaded.contains(id)));
    drop(probe);
    // Programs are freed once their last link and fd are gone, after an RCU
    // grace period: allow a moment.
    let start = std::time::Instant::now();
    let mut left: Vec<u32> = ours.clone();
    while !left.is_empty() && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
        let loaded = loaded_program_ids();
        left.retain(|id| loaded.contains(id));
    }
    assert!(left.is_empty(), "programs {left:?} still loaded after drop");
}

/// With a BTF file (as on a kernel built without BTF), every tracepoint
/// program is the raw_tp twin and kernel types come from the file; the
/// probe's live tests run that way too (`KINDLING_TEST_BTF` in CI).
#[test]
fn an_external_btf_file_runs_the_raw_tracepoint_programs() {
    if !privileged("external BTF") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("kindling-btf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vmlinux.btf");
    std::fs::copy("/sys/kernel/btf/vmlinux", &file).expect("the kernel's BTF");
    let probe = common::builder()
        .btf_path(&file)
        .port(1)
        .load()
        .unwrap_or_else(|e| panic!("load with a BTF file: {e}\n{}", e.log().unwrap_or("")));
    assert!(probe.reads_with_helpers(), "a BTF file means helper reads");
    let ours = probe.program_ids();
    let types: Vec<String> = libbpf_rs::query::ProgInfoIter::default()
        .filter(|p| ours.contains(&p.id))
        .map(|p| format!("{}={:?}", p.name.to_string_lossy(), p.ty))
        .collect();
    assert_eq!(types.len(), ours.len(), "{types:?}");
    assert!(
        types
            .iter()
            .all(|t| t.ends_with("=RawTracepoint") || t.ends_with("=Tracepoint")),
        "no BTF-typed program: {types:?}"
    );
    drop(probe);
    let _ = std::fs::remove_dir_all(&dir);
    let err = match common::builder().btf_path(dir.join("absent.btf")).load() {
        Ok(_) => panic!("a missing BTF file is refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("absent.btf"), "{err}");
}
