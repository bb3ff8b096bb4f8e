//! The process name in records after an exec: the probe caches each
//! thread's comm, and an exec must refresh it at once.
//!
//! A forked child closes a socket before exec'ing curl (as shells and
//! `subprocess` do with inherited descriptors), so the probe has already
//! seen the thread under its parent's name; curl's request must still carry
//! `curl`.
#![cfg(feature = "loader")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{decode_all, drain, privileged};
use kindling_probe::abi::{Direction, Event};

#[test]
fn records_after_exec_carry_the_new_name() {
    if !privileged("records_after_exec_carry_the_new_name") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut probe = common::builder()
        .trace_self(true)
        .port(port)
        .wakeup_bytes(0)
        .load()
        .unwrap_or_else(|e| panic!("loading the probe failed: {e}\n{}", e.log().unwrap_or("")));

    // A socket on the traced port for the child to close before its exec.
    let inherited = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_inherited_peer, _) = listener.accept().unwrap();
    let fd = inherited.as_raw_fd();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .unwrap();
        n
    });
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/after-exec"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: close(2) is async-signal-safe; the descriptor is this
    // process' socket, inherited by the child, which only closes it.
    unsafe {
        cmd.pre_exec(move || {
            libc::close(fd);
            Ok(())
        });
    }
    let status = cmd.status().expect("curl (the CI setup installs it)");
    assert!(status.success(), "curl failed: {status}");
    assert!(server.join().unwrap() > 0, "the server got curl's request");

    let records = drain(
        &mut probe,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    let events = decode_all(&records);
    let me = std::process::id();
    let child_close = events.iter().find_map(|e| match e {
        Event::Conn(c) if c.raw.hdr.pid.get() != me && c.raw.fd.get() == fd => Some(c),
        _ => None,
    });
    let close = child_close.expect("the child's close of the inherited socket was seen");
    assert_ne!(
        close.raw.hdr.comm(),
        b"curl",
        "the close came before the exec"
    );
    let request = events
        .iter()
        .find_map(|e| match e {
            Event::Data(d)
                if d.raw.hdr.pid.get() == close.raw.hdr.pid.get()
                    && d.direction() == Direction::Egress =>
            {
                Some(d)
            }
            _ => None,
        })
        .expect("curl's request was seen");
    assert!(request.payload.starts_with(b"GET /after-exec "));
    assert_eq!(
        String::from_utf8_lossy(request.raw.hdr.comm()),
        "curl",
        "the name after exec"
    );
}
