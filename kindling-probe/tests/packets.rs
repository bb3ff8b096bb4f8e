//! The packet tracer in the real kernel (root): loopback TCP and UDP of the
//! test's own sockets, hop by hop. Runs in the kernel matrix too
//! (`.ci/kernels.sh`), so every supported kernel loads and attaches it.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use kindling_probe::abi::{Point, RawPacket};
use kindling_probe::{PacketFilter, PacketTracer, PacketTracerBuilder};

fn tracer(ports: Vec<u16>) -> Option<PacketTracer> {
    if !common::privileged("packet tracer") {
        return None;
    }
    let mut b = PacketTracerBuilder::new().filter(PacketFilter {
        ports,
        ..PacketFilter::default()
    });
    if let Some(file) = std::env::var_os("KINDLING_TEST_BTF").filter(|f| !f.is_empty()) {
        b = b.btf_path(file);
    }
    Some(
        b.load()
            .unwrap_or_else(|e| panic!("loading the packet tracer failed: {e}")),
    )
}

/// Every hop until none came for 200 ms (at most 5 s).
fn hops(t: &mut PacketTracer) -> Vec<RawPacket> {
    let (start, mut last) = (Instant::now(), Instant::now());
    let mut out = Vec::new();
    while start.elapsed() < Duration::from_secs(5) && last.elapsed() < Duration::from_millis(200) {
        if t.poll(Duration::from_millis(20), |h| out.push(*h)).unwrap() > 0 {
            last = Instant::now();
        }
    }
    out
}

fn own_netns() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32
}

#[test]
fn loopback_tcp_is_queued_received_and_delivered() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let Some(mut t) = tracer(vec![port]) else {
        return;
    };
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"ping over loopback").unwrap();
    let mut buf = [0u8; 18];
    server.read_exact(&mut buf).unwrap();
    let hops = hops(&mut t);
    assert_eq!(t.losses().unwrap().total(), 0);
    // the SYN: queued on lo, received on lo, same packet
    let syn: Vec<&RawPacket> = hops
        .iter()
        .filter(|h| h.tcp_flags == 0x02 && h.sk.peer().port() == port)
        .collect();
    let points: Vec<Point> = syn.iter().map(|h| h.point()).collect();
    assert!(
        points.starts_with(&[Point::Queue, Point::Receive]),
        "{points:?}"
    );
    assert!(syn.iter().all(|h| h.trace_id == syn[0].trace_id));
    assert_eq!(syn[0].device(), Some("lo"));
    assert_eq!(syn[0].sk.netns(), Some(own_netns()));
    assert_eq!(
        syn[0].sk.local().port(),
        client.local_addr().unwrap().port()
    );
    // the data segment reached this process
    let deliver = hops
        .iter()
        .find(|h| h.point() == Point::Deliver && h.sk.peer().port() == port)
        .expect("the data was delivered");
    assert_eq!(deliver.hdr.pid.get(), std::process::id());
    let data_trace = deliver.trace_id;
    let data: Vec<Point> = hops
        .iter()
        .filter(|h| h.trace_id == data_trace)
        .map(|h| h.point())
        .collect();
    assert_eq!(&data[..2], &[Point::Queue, Point::Receive], "{data:?}");
    assert!(hops.iter().all(|h| !h.translated()), "no NAT on loopback");
}

#[test]
fn a_datagram_to_a_closed_port_is_dropped_with_its_reason() {
    // a port nobody listens on
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let Some(mut t) = tracer(vec![port]) else {
        return;
    };
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"anyone?", ("127.0.0.1", port)).unwrap();
    let hops = hops(&mut t);
    let drop = hops
        .iter()
        .find(|h| h.point() == Point::Drop)
        .unwrap_or_else(|| panic!("no drop in {hops:?}"));
    assert_eq!(drop.sk.peer().port(), port);
    assert_ne!(drop.location.get(), 0);
    // named by this kernel's reasons (none before 5.17: reason 0)
    let names = kindling_probe::drop_reason_names();
    if !names.is_empty() {
        assert_eq!(
            names.get(&drop.reason.get()).map(String::as_str),
            Some("NO_SOCKET")
        );
    }
    assert!(hops
        .iter()
        .any(|h| h.trace_id == drop.trace_id && h.point() == Point::Queue));
}
