//! End to end on the real kernel with a real web server: nginx with
//! `sendfile on` (its usual configuration) writes each response head with
//! writev and the body with sendfile(2), which never passes through a user
//! buffer. The probe reports the sendfile calls by length only; the pipeline
//! must skip those bodies by their Content-Length and report every exchange
//! complete and exact, from both ends (curl and nginx).
//!
//! Needs root and nginx (`nginx-light`, which `.ci/setup.sh` installs) and
//! curl; without them the test skips with a reason, except under `CI=true`,
//! where it fails.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kindling_flow::{Config, Exchange, Output, Pipeline, Role};
use kindling_probe::abi::{self, Event, Syscall};
use kindling_probe::{capture, ProbeBuilder};

/// The files served, by name and size: small, a few socket buffers, and
/// large enough that nginx splits it over many sendfile calls (at most
/// `sendfile_max_chunk`, 2 MiB by default, each).
const FILES: [(&str, usize); 3] = [
    ("small.bin", 1024),
    ("medium.bin", 400 * 1024),
    ("large.bin", 20 * 1024 * 1024),
];

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (returns false) with a printed reason, or fails under `CI=true`.
fn skip(reason: &str) -> bool {
    assert!(!in_ci(), "CI=true but {reason}: this test must run in CI");
    eprintln!("skipping: {reason}");
    false
}

fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root || skip("not root: loading the probe needs root")
}

/// An executable by name on PATH or in the sbin directories (root's PATH
/// is not always the same).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A throwaway nginx: its configuration, document root and logs live in a
/// temporary directory. Dropping it kills the server and removes the
/// directory (printing the error log first when the test failed).
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(program: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("kindling-nginx-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let root = dir.join("root");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(dir.join("temp")).unwrap();
        for (name, size) in FILES {
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            fs::write(root.join(name), body).unwrap();
        }
        // A free loopback port: bound, read, released for nginx to take.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let conf = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 64;
}}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    types {{
        application/octet-stream bin;
    }}
    default_type application/octet-stream;
    sendfile on;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        root {d}/root;
    }}
}}
"
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new(program)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let mut nginx = Nginx { child, dir, port };
        nginx.wait_listening();
        nginx
    }

    fn wait_listening(&mut self) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", self.error_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nginx does not listen on port {}:\n{}",
                self.port,
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("nginx error log:\n{}", self.error_log());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What curl said about one transfer.
#[derive(Debug)]
struct Transfer {
    status: u16,
    head_bytes: u64,
    body_bytes: u64,
    connects: u32,
}

fn parse_transfers(stdout: &str) -> Vec<Transfer> {
    stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 4, "curl -w line: {l:?}");
            Transfer {
                status: f[0].parse().unwrap(),
                head_bytes: f[1].parse().unwrap(),
                body_bytes: f[2].parse().unwrap(),
                connects: f[3].parse().unwrap(),
            }
        })
        .collect()
}

#[test]
fn nginx_sendfile_bodies_complete_exactly_from_both_ends() {
    if !privileged() {
        return;
    }
    let (Some(nginx_bin), Some(curl_bin)) = (find_program("nginx"), find_program("curl")) else {
        skip("nginx or curl is not installed (.ci/setup.sh installs nginx-light and curl)");
        return;
    };
    let nginx = Nginx::start(&nginx_bin);
    let port = nginx.port;

    // Loaded once nginx listens: the readiness probe's connection is not
    // seen. Only this port; the test itself is excluded (not trace_self).
    let mut probe = ProbeBuilder::new()
        .port(port)
        .wakeup_bytes(0)
        .load()
        .unwrap_or_else(|e| panic!("loading the probe failed: {e}\n{}", e.log().unwrap_or("")));
    let mut pipeline = Pipeline::new(Config {
        boottime_to_unix_ns: capture::boottime_to_unix_ns(),
        ..Config::default()
    });
    let mut out = Vec::new();
    // (calls, bytes) of nginx's sendfile records
    let mut sendfile = (0u32, 0u64);
    let mut feed = |probe: &mut kindling_probe::Probe, timeout: Duration| {
        probe
            .poll_raw(timeout, |rec| {
                let ev = abi::decode(rec).expect("the kernel's records decode");
                if let Event::Data(d) = &ev {
                    if d.syscall() == Syscall::Sendfile && d.raw.hdr.pid.get() == nginx.pid() {
                        assert_eq!(d.raw.cap_len.get(), 0, "sendfile captures nothing");
                        if d.raw.ret.get() > 0 {
                            sendfile.0 += 1;
                            sendfile.1 += u64::from(d.raw.len.get());
                        }
                    }
                }
                pipeline.push(&ev, &mut out);
                true
            })
            .expect("polling the probe")
    };

    // One curl, three URLs: one keep-alive connection, three exchanges.
    let base = format!("http://127.0.0.1:{port}");
    let mut curl = Command::new(&curl_bin);
    curl.args(["-sS", "--http1.1", "--noproxy", "*", "--max-time", "60"])
        .args([
            "-w",
            "%{http_code} %{size_header} %{size_download} %{num_connects}\\n",
        ]);
    for (name, _) in FILES {
        curl.arg("-o")
            .arg("/dev/null")
            .arg(format!("{base}/{name}"));
    }
    let mut curl = curl
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting curl");
    let curl_pid = curl.id();
    // Read while curl runs: 20 MB of client reads is a lot of records.
    let start = Instant::now();
    while curl.try_wait().expect("waiting for curl").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "curl did not finish"
        );
        feed(&mut probe, Duration::from_millis(20));
    }
    let curl = curl.wait_with_output().expect("curl's output");
    assert!(
        curl.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let transfers = parse_transfers(&String::from_utf8_lossy(&curl.stdout));
    assert_eq!(transfers.len(), FILES.len(), "{transfers:?}");
    for ((name, size), t) in FILES.iter().zip(&transfers) {
        assert_eq!(t.status, 200, "{name}: {t:?}");
        assert_eq!(t.body_bytes, *size as u64, "{name}: {t:?}");
    }
    assert_eq!(
        transfers.iter().map(|t| t.connects).collect::<Vec<_>>(),
        [1, 0, 0],
        "curl reused one connection: {transfers:?}"
    );
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(300) && start.elapsed() < Duration::from_secs(120)
    {
        if feed(&mut probe, Duration::from_millis(50)) > 0 {
            quiet = Instant::now();
        }
    }
    pipeline.finish(&mut out);
    let losses = probe.losses().expect("loss counters");
    assert_eq!(losses.lost_records(), 0, "{losses:?}");

    let mine: Vec<&Exchange> = out
        .iter()
        .filter_map(|o| match o {
            Output::Exchange(x) if x.dst.port() == port => Some(x),
            _ => None,
        })
        .collect();
    for (role, pid, comm) in [
        (Role::Client, curl_pid, "curl"),
        (Role::Server, nginx.pid(), "nginx"),
    ] {
        let seen: Vec<&&Exchange> = mine.iter().filter(|x| x.role == role).collect();
        assert_eq!(seen.len(), FILES.len(), "{role:?}: {mine:#?}");
        for (((name, size), t), x) in FILES.iter().zip(&transfers).zip(&seen) {
            let a = |k: &str| x.attributes.get(k).unwrap_or("");
            let what = format!("{role:?} {name}: {x:#?}");
            assert_eq!(x.protocol.as_str(), "http", "{what}");
            assert_eq!(x.pid, pid, "{what}");
            assert_eq!(x.comm.as_str(), comm, "{what}");
            assert_eq!(a("http.request.method"), "GET", "{what}");
            assert_eq!(a("url.path"), format!("/{name}"), "{what}");
            assert_eq!(a("http.response.status_code"), "200", "{what}");
            assert_eq!(x.error, None, "{what}");
            assert!(!x.partial, "{what}");
            assert_eq!(a("http.response.body.size"), size.to_string(), "{what}");
            assert_eq!(
                x.response_bytes,
                t.head_bytes + *size as u64,
                "{what}: the head curl received and the file"
            );
        }
    }
    // The probe's side of it: every body byte went through sendfile.
    let total: usize = FILES.iter().map(|(_, s)| s).sum();
    eprintln!(
        "nginx: {} sendfile calls moved {} bytes",
        sendfile.0, sendfile.1
    );
    assert_eq!(
        sendfile.1, total as u64,
        "nginx sent every body with sendfile, and the probe saw each call"
    );
    assert!(
        sendfile.0 > FILES.len() as u32,
        "the 20 MB body took several sendfile calls: {sendfile:?}"
    );
    drop(nginx);
}
