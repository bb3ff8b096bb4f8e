//! The tokio face of the probe: records arrive through the reactor.
#![cfg(feature = "tokio")]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kindling_probe::abi::Event;
use kindling_probe::{AsyncProbe, ProbeBuilder};

#[tokio::test(flavor = "current_thread")]
async fn async_probe_delivers_records() {
    if !common::privileged("async probe") {
        return;
    }
    let probe = ProbeBuilder::new()
        .trace_self(true)
        .pid(std::process::id())
        .load()
        .expect("load probe");
    let mut probe = AsyncProbe::new(probe)
        .unwrap()
        .flush_interval(Duration::from_millis(50));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    c.write_all(b"async hello").unwrap();
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).unwrap();

    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.len() < 2 && start.elapsed() < Duration::from_secs(5) {
        probe
            .next_batch(|e| {
                if let Event::Data(d) = e {
                    if d.payload == b"async hello" {
                        seen.push(d.raw.fd.get());
                    }
                }
            })
            .await
            .unwrap();
    }
    seen.sort();
    use std::os::fd::AsRawFd;
    let mut want = vec![c.as_raw_fd(), s.as_raw_fd()];
    want.sort();
    assert_eq!(seen, want, "the send and the receive, once each");
    assert_eq!(probe.probe().losses().unwrap().lost_records(), 0);
}
