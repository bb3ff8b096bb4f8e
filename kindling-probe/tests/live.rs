//! The real probe on the real kernel, watching this test's own sockets.
//!
//! One probe (pid filter = this process, snaplen 300) is shared by the tests
//! in this file; each test holds it for its whole run and looks only at the
//! records of the ports it opened.
#![cfg(feature = "loader")]

mod common;

use std::io::{Read, Write};
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{decode_all, drain, gettid, privileged, with_port};
use kindling_probe::abi::{self, kind, DataEvent, Direction, Event, Syscall};
use kindling_probe::capture::{CaptureHeader, CaptureReader, CaptureWriter};
use kindling_probe::Probe;

const SNAPLEN: u32 = 300;

static PROBE: Mutex<Option<Probe>> = Mutex::new(None);

/// The shared probe, loaded on first use; `None` when unprivileged (skip).
fn probe(test: &str) -> Option<MutexGuard<'static, Option<Probe>>> {
    if !privileged(test) {
        return None;
    }
    let mut guard = PROBE.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        // these tests pin the snaplen cut: the framing budget, which
        // captures past it, has its own test (framing_budget_...)
        let p = common::builder()
            .snaplen(SNAPLEN)
            .framing_budget(0)
            .trace_self(true)
            .pid(std::process::id())
            .wakeup_bytes(0)
            .load()
            .unwrap_or_else(|e| panic!("loading the probe failed: {e}\n{}", e.log().unwrap_or("")));
        *guard = Some(p);
    }
    // Forget whatever earlier tests left behind.
    let _ = drain(
        guard.as_mut().unwrap(),
        Duration::from_millis(30),
        Duration::from_secs(1),
    );
    Some(guard)
}

fn collect(guard: &mut MutexGuard<'static, Option<Probe>>) -> Vec<Vec<u8>> {
    drain(
        guard.as_mut().unwrap(),
        Duration::from_millis(200),
        Duration::from_secs(5),
    )
}

struct TcpPair {
    listener: TcpListener,
    client: TcpStream,
    server: TcpStream,
}

fn tcp_pair(v6: bool) -> TcpPair {
    let any: SocketAddr = if v6 {
        (Ipv6Addr::LOCALHOST, 0).into()
    } else {
        (Ipv4Addr::LOCALHOST, 0).into()
    };
    let listener = TcpListener::bind(any).unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    TcpPair {
        listener,
        client,
        server,
    }
}

/// The syscall families a test exercises; each sends through one and
/// receives through its mate.
#[derive(Clone, Copy, Debug)]
enum Family {
    ReadWrite,
    SendRecv,
    Vectored,
    Msg,
}

fn check(rc: isize, what: &str) -> usize {
    assert!(
        rc >= 0,
        "{what} failed: {}",
        std::io::Error::last_os_error()
    );
    rc as usize
}

fn send_with(family: Family, fd: RawFd, parts: &[&[u8]]) -> usize {
    let iov: Vec<libc::iovec> = parts
        .iter()
        .map(|p| libc::iovec {
            iov_base: p.as_ptr() as *mut _,
            iov_len: p.len(),
        })
        .collect();
    let flat: Vec<u8> = parts.concat();
    // SAFETY: every pointer refers to live buffers of the stated lengths.
    let rc = unsafe {
        match family {
            Family::ReadWrite => libc::write(fd, flat.as_ptr().cast(), flat.len()),
            Family::SendRecv => {
                libc::sendto(fd, flat.as_ptr().cast(), flat.len(), 0, std::ptr::null(), 0)
            }
            Family::Vectored => libc::writev(fd, iov.as_ptr(), iov.len() as i32),
            Family::Msg => {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_ptr() as *mut _;
                msg.msg_iovlen = iov.len();
                libc::sendmsg(fd, &msg, 0)
            }
        }
    };
    check(rc, "send")
}

/// One receive call into two buffers of `split` and the rest (vectored
/// families), or one buffer.
fn recv_with(family: Family, fd: RawFd, len: usize, split: usize) -> Vec<u8> {
    let mut a = vec![0u8; split];
    let mut b = vec![0u8; len - split];
    let mut flat = vec![0u8; len];
    let iov = [
        libc::iovec {
            iov_base: a.as_mut_ptr().cast(),
            iov_len: a.len(),
        },
        libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        },
    ];
    // SAFETY: every pointer refers to live, writable buffers of the stated lengths.
    let rc = unsafe {
        match family {
            Family::ReadWrite => libc::read(fd, flat.as_mut_ptr().cast(), len),
            Family::SendRecv => libc::recvfrom(
                fd,
                flat.as_mut_ptr().cast(),
                len,
                libc::MSG_WAITALL,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ),
            Family::Vectored => libc::readv(fd, iov.as_ptr(), 2),
            Family::Msg => {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = iov.as_ptr() as *mut _;
                msg.msg_iovlen = 2;
                libc::recvmsg(fd, &mut msg, libc::MSG_WAITALL)
            }
        }
    };
    let n = check(rc, "recv");
    match family {
        Family::Vectored | Family::Msg => {
            let mut v = a;
            v.extend_from_slice(&b);
            v.truncate(n);
            v
        }
        _ => {
            flat.truncate(n);
            flat
        }
    }
}

fn expected_syscall(family: Family, dir: Direction) -> Syscall {
    match (family, dir) {
        (Family::ReadWrite, Direction::Egress) => Syscall::Write,
        (Family::ReadWrite, Direction::Ingress) => Syscall::Read,
        (Family::SendRecv, Direction::Egress) => Syscall::Sendto,
        (Family::SendRecv, Direction::Ingress) => Syscall::Recvfrom,
        (Family::Vectored, Direction::Egress) => Syscall::Writev,
        (Family::Vectored, Direction::Ingress) => Syscall::Readv,
        (Family::Msg, Direction::Egress) => Syscall::Sendmsg,
        (Family::Msg, Direction::Ingress) => Syscall::Recvmsg,
    }
}

fn data_events<'a>(events: &[Event<'a>]) -> Vec<DataEvent<'a>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Data(d) => Some(*d),
            _ => None,
        })
        .collect()
}

/// Exactly one record for (fd, direction); returns it.
fn the_one<'a>(data: &[DataEvent<'a>], fd: RawFd, dir: Direction) -> DataEvent<'a> {
    let found: Vec<_> = data
        .iter()
        .filter(|d| d.raw.fd.get() == fd && d.direction() == dir)
        .copied()
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {dir:?} record on fd {fd}, got {found:?}"
    );
    found[0]
}

fn assert_data(
    d: &DataEvent<'_>,
    family: Family,
    dir: Direction,
    tid: u32,
    local: SocketAddr,
    peer: SocketAddr,
    bytes: &[u8],
) {
    let h = &d.raw.hdr;
    assert_eq!(
        d.syscall(),
        expected_syscall(family, dir),
        "{family:?} {dir:?}"
    );
    assert_eq!(h.pid.get(), std::process::id());
    assert_eq!(h.tid.get(), tid);
    assert_eq!(d.raw.sk.local(), local, "local end");
    assert_eq!(d.raw.sk.peer(), peer, "peer end");
    assert_eq!(d.raw.ret.get(), bytes.len() as i64);
    assert_eq!(d.raw.len.get() as usize, bytes.len(), "true length");
    let cap = bytes.len().min(SNAPLEN as usize);
    assert_eq!(d.raw.cap_len.get() as usize, cap, "captured length");
    assert_eq!(d.payload, &bytes[..cap], "payload bytes");
    assert_eq!(d.is_truncated(), bytes.len() > SNAPLEN as usize);
    assert!(
        d.raw.ts_enter_ns.get() <= h.ts_ns.get(),
        "entry before exit"
    );
    assert_eq!(d.raw.sk.transport(), abi::Transport::Tcp);
    assert!(d.raw.ino.get() > 0, "socket inode");
    assert_ne!(d.raw.sk.sock.get(), 0, "socket identity");
    assert_eq!(d.raw.sk.netns(), Some(own_netns()), "network namespace");
}

/// The inode of this process' network namespace.
fn own_netns() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32
}

fn exchange(family: Family, v6: bool, request: &[&[u8]], response: &[&[u8]]) {
    let test = format!("exchange {family:?} v6={v6}");
    let Some(mut guard) = probe(&test) else {
        return;
    };
    let pair = tcp_pair(v6);
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let (caddr, saddr) = (
        pair.client.local_addr().unwrap(),
        pair.server.local_addr().unwrap(),
    );
    let req: Vec<u8> = request.concat();
    let resp: Vec<u8> = response.concat();

    assert_eq!(send_with(family, c, request), req.len());
    let got = recv_with(family, s, req.len(), req.len().min(7));
    assert_eq!(got, req);
    assert_eq!(send_with(family, s, response), resp.len());
    let got = recv_with(family, c, resp.len(), resp.len().min(5));
    assert_eq!(got, resp);

    let records = collect(&mut guard);
    let events = decode_all(&records);
    let mine = with_port(&events, saddr.port());
    let data = data_events(&mine);
    assert_eq!(data.len(), 4, "{test}: every call seen once: {data:?}");
    let tid = gettid();
    let c_out = the_one(&data, c, Direction::Egress);
    let s_in = the_one(&data, s, Direction::Ingress);
    let s_out = the_one(&data, s, Direction::Egress);
    let c_in = the_one(&data, c, Direction::Ingress);
    assert_data(&c_out, family, Direction::Egress, tid, caddr, saddr, &req);
    assert_data(&s_in, family, Direction::Ingress, tid, saddr, caddr, &req);
    assert_data(&s_out, family, Direction::Egress, tid, saddr, caddr, &resp);
    assert_data(&c_in, family, Direction::Ingress, tid, caddr, saddr, &resp);
    // One thread made the calls in this order; the records agree.
    let ts: Vec<u64> = [c_out, s_in, s_out, c_in]
        .iter()
        .map(|d| d.raw.hdr.ts_ns.get())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "timestamps ordered: {ts:?}"
    );
    // Captured at exit alone: one timestamp, the exit's.
    for d in [c_out, s_in, s_out, c_in] {
        assert_eq!(d.raw.ts_enter_ns.get(), d.raw.hdr.ts_ns.get(), "exit-only");
    }
    assert_eq!(
        c_out.raw.sk.sock.get(),
        c_in.raw.sk.sock.get(),
        "same socket identity"
    );
    assert_eq!(c_out.raw.ino.get(), inode_of(c), "inode as in /proc/PID/fd");
    assert_eq!(s_in.raw.ino.get(), inode_of(s));
    assert_ne!(c_out.raw.sk.sock.get(), s_in.raw.sk.sock.get());
    drop(pair);
}

#[test]
fn tcp_v4_read_write() {
    exchange(
        Family::ReadWrite,
        false,
        &[b"GET / HTTP/1.1\r\n\r\n"],
        &[b"HTTP/1.1 200 OK\r\n\r\n"],
    );
}

#[test]
fn tcp_v6_read_write() {
    exchange(Family::ReadWrite, true, &[b"PING\r\n"], &[b"+PONG\r\n"]);
}

#[test]
fn tcp_v4_send_recv() {
    exchange(
        Family::SendRecv,
        false,
        &[b"*1\r\n$4\r\nPING\r\n"],
        &[b"+PONG\r\n"],
    );
}

#[test]
fn tcp_v6_send_recv() {
    exchange(Family::SendRecv, true, &[b"hello"], &[b"world!"]);
}

#[test]
fn tcp_v4_writev_readv() {
    exchange(
        Family::Vectored,
        false,
        &[b"head ", b"middle ", b"tail"],
        &[b"one", b"two"],
    );
}

#[test]
fn tcp_v6_sendmsg_recvmsg() {
    exchange(
        Family::Msg,
        true,
        &[b"part one, ", b"part two"],
        &[b"ok ", b"done"],
    );
}

#[test]
fn payload_at_and_beyond_snaplen() {
    let truncated = || {
        let guard = probe("snaplen")?;
        Some(guard.as_ref()?.losses().expect("loss counters").truncated)
    };
    let Some(before) = truncated() else { return };
    let at = vec![b'a'; SNAPLEN as usize];
    let beyond: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    exchange(Family::ReadWrite, false, &[&at], &[&beyond]);
    // iovecs that cross the snaplen boundary mid-buffer
    let (x, y, z) = (vec![1u8; 200], vec![2u8; 200], vec![3u8; 200]);
    exchange(Family::Vectored, true, &[&x, &y, &z], &[b"short"]);
    exchange(Family::Msg, false, &[b"tiny"], &[&x, &y, &z]);
    // six records were cut (both ends of the three long messages); other
    // tests running meanwhile can only add to the count
    let after = truncated().expect("probe still loaded");
    assert!(
        after - before >= 6,
        "truncated counter: {before} -> {after}"
    );
}

#[test]
fn udp_sendto_recvfrom_and_mmsg() {
    let Some(mut guard) = probe("udp") else {
        return;
    };
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (saddr, caddr) = (server.local_addr().unwrap(), client.local_addr().unwrap());
    client.send_to(b"dns-ish query", saddr).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"dns-ish query"[..], caddr));

    // sendmmsg of two datagrams to an explicit address, recvmmsg of both
    let msgs: [&[u8]; 2] = [b"first datagram", b"second"];
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|m| libc::iovec {
            iov_base: m.as_ptr() as *mut _,
            iov_len: m.len(),
        })
        .collect();
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut dest: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    dest.sin_family = libc::AF_INET as u16;
    dest.sin_port = saddr.port().to_be();
    dest.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
    // SAFETY: zeroed mmsghdr is valid; pointers below refer to live buffers.
    let mut out: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
    for (i, m) in out.iter_mut().enumerate() {
        m.msg_hdr.msg_iov = &mut iovs[i];
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_name = (&mut dest as *mut libc::sockaddr_in).cast();
        m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
    }
    // SAFETY: `out` holds two initialised headers.
    let sent = unsafe { libc::sendmmsg(client.as_raw_fd(), out.as_mut_ptr(), 2, 0) };
    assert_eq!(sent, 2);
    let mut bufs = [[0u8; 64]; 2];
    let mut riov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: all-zero is valid for these plain C structs.
    let mut names: [libc::sockaddr_in; 2] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut inb: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
    for (i, m) in inb.iter_mut().enumerate() {
        m.msg_hdr.msg_iov = &mut riov[i];
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
        m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
    }
    // SAFETY: `inb` holds two initialised headers with writable buffers.
    let got = unsafe {
        libc::recvmmsg(
            server.as_raw_fd(),
            inb.as_mut_ptr(),
            2,
            0,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(got, 2);

    let records = collect(&mut guard);
    let events = decode_all(&records);
    let data = data_events(&with_port(&events, saddr.port()));
    let by = |sc: Syscall| {
        data.iter()
            .filter(|d| d.syscall() == sc)
            .copied()
            .collect::<Vec<_>>()
    };

    let st = by(Syscall::Sendto);
    assert_eq!(st.len(), 1, "{data:?}");
    assert_eq!(st[0].payload, b"dns-ish query");
    assert_eq!(st[0].raw.sk.local(), caddr);
    assert_eq!(st[0].raw.sk.peer(), saddr, "peer from sendto's address");
    assert!(st[0].raw.hdr.has_flag(abi::flags::PEER_FROM_ADDR));
    assert_eq!(st[0].raw.sk.transport(), abi::Transport::Udp);
    let rf = by(Syscall::Recvfrom);
    assert_eq!(rf.len(), 1);
    assert_eq!(rf[0].payload, b"dns-ish query");
    assert_eq!(rf[0].raw.sk.peer(), caddr, "peer from recvfrom's address");

    for sc in [Syscall::Sendmmsg, Syscall::Recvmmsg] {
        let mut v = by(sc);
        v.sort_by_key(|d| d.raw.msg_index.get());
        assert_eq!(v.len(), 2, "{sc:?}: one record per message");
        for (i, d) in v.iter().enumerate() {
            assert_eq!(d.raw.msg_index.get() as usize, i);
            assert_eq!(d.payload, msgs[i]);
            assert_eq!(d.raw.len.get() as usize, msgs[i].len());
            assert_eq!(d.raw.ret.get(), 2);
        }
        let (local, peer) = if sc == Syscall::Sendmmsg {
            (caddr, saddr)
        } else {
            (saddr, caddr)
        };
        assert_eq!(v[0].raw.sk.local(), local);
        assert_eq!(v[0].raw.sk.peer(), peer);
    }
}

#[test]
fn connect_accept_close_and_states() {
    let Some(mut guard) = probe("lifecycle") else {
        return;
    };
    let pair = tcp_pair(false);
    let (lfd, cfd, sfd) = (
        pair.listener.as_raw_fd(),
        pair.client.as_raw_fd(),
        pair.server.as_raw_fd(),
    );
    let (caddr, saddr) = (
        pair.client.local_addr().unwrap(),
        pair.server.local_addr().unwrap(),
    );
    let client = pair.client.into_raw_fd();
    // SAFETY: closing an fd we own.
    assert_eq!(unsafe { libc::close(client) }, 0);
    drop(pair.server);

    let records = collect(&mut guard);
    let events = decode_all(&records);
    let mine = with_port(&events, saddr.port());
    let conns: Vec<_> = mine
        .iter()
        .filter_map(|e| match e {
            Event::Conn(c) => Some(*c),
            _ => None,
        })
        .collect();
    let connect: Vec<_> = conns
        .iter()
        .filter(|c| c.syscall() == Syscall::Connect)
        .collect();
    assert_eq!(connect.len(), 1, "{conns:?}");
    // connect, accept, close and TCP records name the socket's namespace
    for e in &mine {
        assert_eq!(e.sock().netns(), Some(own_netns()), "{e:?}");
    }
    assert_eq!(connect[0].raw.ret.get(), 0);
    assert_eq!(connect[0].raw.fd.get(), cfd);
    assert_eq!(connect[0].raw.sk.local(), caddr);
    assert_eq!(connect[0].raw.sk.peer(), saddr);
    // connect keeps its entry (its duration is the time to connect)
    assert!(connect[0].raw.ts_enter_ns.get() < connect[0].raw.hdr.ts_ns.get());
    let accept: Vec<_> = conns
        .iter()
        .filter(|c| matches!(c.syscall(), Syscall::Accept | Syscall::Accept4))
        .collect();
    assert_eq!(accept.len(), 1);
    assert_eq!(
        accept[0].raw.fd.get(),
        lfd,
        "accept reports the listening fd"
    );
    assert_eq!(
        accept[0].raw.ret.get(),
        i64::from(sfd),
        "and returns the new one"
    );
    assert_eq!(accept[0].raw.sk.local(), saddr);
    assert_eq!(accept[0].raw.sk.peer(), caddr);
    let closes: Vec<_> = conns
        .iter()
        .filter(|c| c.syscall() == Syscall::Close)
        .collect();
    assert!(closes
        .iter()
        .any(|c| c.raw.fd.get() == cfd && c.raw.sk.local() == caddr));
    assert!(closes
        .iter()
        .any(|c| c.raw.fd.get() == sfd && c.raw.sk.local() == saddr));

    // TCP states of the client socket, in order.
    let client_sock = connect[0].raw.sk.sock.get();
    let states: Vec<(String, String)> = mine
        .iter()
        .filter_map(|e| match e {
            Event::Tcp(t)
                if t.raw.hdr.kind.get() == kind::TCP_STATE
                    && t.raw.sk.sock.get() == client_sock =>
            {
                Some((
                    abi::tcp_state_name(t.raw.old_state).into(),
                    abi::tcp_state_name(t.raw.new_state).into(),
                ))
            }
            _ => None,
        })
        .collect();
    let want = [
        ("CLOSE", "SYN_SENT"),
        ("SYN_SENT", "ESTABLISHED"),
        ("ESTABLISHED", "FIN_WAIT1"),
    ];
    for w in want {
        assert!(
            states.iter().any(|(a, b)| a == w.0 && b == w.1),
            "state change {w:?} missing from {states:?}"
        );
    }
    let pos = |w: (&str, &str)| {
        states
            .iter()
            .position(|(a, b)| a == w.0 && b == w.1)
            .unwrap()
    };
    assert!(
        pos(want[0]) < pos(want[1]) && pos(want[1]) < pos(want[2]),
        "{states:?}"
    );
}

#[test]
fn reset_on_refused_connect_and_linger_zero_close() {
    let Some(mut guard) = probe("resets") else {
        return;
    };
    // A port nobody listens on.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = TcpStream::connect(closed).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    // An established pair whose client closes with SO_LINGER {1, 0}: RST.
    let pair = tcp_pair(false);
    let saddr = pair.server.local_addr().unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid option pointer and length for SO_LINGER.
    let rc = unsafe {
        libc::setsockopt(
            pair.client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0);
    drop(pair.client);
    let mut server = pair.server;
    let server_ino = inode_of(server.as_raw_fd());
    let mut buf = [0u8; 8];
    let e = server.read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);

    let records = collect(&mut guard);
    let events = decode_all(&records);

    let refused = with_port(&events, closed.port());
    let connect: Vec<_> = refused
        .iter()
        .filter_map(|e| match e {
            Event::Conn(c) if c.syscall() == Syscall::Connect => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(connect.len(), 1, "{refused:?}");
    assert_eq!(connect[0].raw.ret.get(), -i64::from(libc::ECONNREFUSED));
    assert_eq!(connect[0].raw.sk.peer(), closed);
    let sock = connect[0].raw.sk.sock.get();
    assert!(
        refused.iter().any(
            |e| matches!(e, Event::Tcp(t) if t.raw.hdr.kind.get() == kind::TCP_RESET
            && t.raw.reset_dir == 2 && t.raw.sk.sock.get() == sock)
        ),
        "reset received by the refused client: {refused:?}"
    );

    let lingered = with_port(&events, saddr.port());
    let resets: Vec<u8> = lingered
        .iter()
        .filter_map(|e| match e {
            Event::Tcp(t) if t.raw.hdr.kind.get() == kind::TCP_RESET => Some(t.raw.reset_dir),
            _ => None,
        })
        .collect();
    assert!(
        resets.contains(&1),
        "RST sent by the lingering close: {resets:?}"
    );
    assert!(
        resets.contains(&2),
        "RST received by the server: {resets:?}"
    );
    // After a reset the kernel has released the local port (it reads 0), so
    // find the read by the socket's inode, which stays.
    let failed_read = data_events(&events)
        .into_iter()
        .filter(|d| d.raw.ino.get() == server_ino && d.direction() == Direction::Ingress)
        .collect::<Vec<_>>();
    assert_eq!(failed_read.len(), 1);
    assert_eq!(failed_read[0].raw.ret.get(), -i64::from(libc::ECONNRESET));
    assert_eq!(failed_read[0].raw.len.get(), 0);
}

fn inode_of(fd: RawFd) -> u64 {
    // SAFETY: `st` is writable; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_ino
}

#[test]
fn record_then_replay_gives_identical_events() {
    let Some(mut guard) = probe("record/replay") else {
        return;
    };
    let pair = tcp_pair(true);
    let (mut c, mut s) = (pair.client, pair.server);
    for i in 0..50u32 {
        let msg = format!("request {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).unwrap();
    }
    drop((c, s));
    let records = collect(&mut guard);
    assert!(records.len() >= 100, "only {} records", records.len());

    let probe = guard.as_ref().unwrap();
    let mut file = Vec::new();
    let mut w = CaptureWriter::new(
        &mut file,
        &CaptureHeader::for_this_host(probe.config().clone()),
    )
    .unwrap();
    for r in &records {
        w.write_record(r).unwrap();
    }
    w.finish().unwrap();

    let mut reader = CaptureReader::new(&file[..]).unwrap();
    assert_eq!(reader.header().probe.snaplen, SNAPLEN);
    let mut replayed = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        replayed.push(r.to_vec());
    }
    assert_eq!(replayed, records, "byte-identical records");
    let a: Vec<String> = decode_all(&records)
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    let b: Vec<String> = decode_all(&replayed)
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    assert_eq!(a, b);
}

#[test]
fn losses_are_readable_and_zero_for_a_light_load() {
    let Some(guard) = probe("losses") else { return };
    let l = guard.as_ref().unwrap().losses().expect("loss counters");
    assert_eq!(l.ring_full, 0);
    assert_eq!(l.pending_full, 0);
    assert_eq!(l.undecodable, 0);
}

/// A pipe, both ends owned.
fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe { libc::pipe(fds.as_mut_ptr()) } as isize, "pipe");
    // SAFETY: pipe() just opened both and nothing else owns them.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// The data records of `fd` made by `syscall`.
fn by_call<'a>(data: &[DataEvent<'a>], fd: RawFd, syscall: Syscall) -> Vec<DataEvent<'a>> {
    data.iter()
        .filter(|d| d.raw.fd.get() == fd && d.syscall() == syscall)
        .copied()
        .collect()
}

/// Checks records of bytes moved without a user buffer: length and timing,
/// no payload, and returns the bytes they add up to.
fn moved(records: &[DataEvent<'_>], dir: Direction, local: SocketAddr, peer: SocketAddr) -> usize {
    let mut total = 0;
    for d in records {
        let what = format!("{:?} {d:?}", d.syscall());
        assert_eq!(d.direction(), dir, "{what}");
        assert_eq!(d.raw.sk.local(), local, "{what}");
        assert_eq!(d.raw.sk.peer(), peer, "{what}");
        assert!(d.raw.ret.get() > 0, "{what}: ret {}", d.raw.ret.get());
        assert_eq!(d.raw.len.get() as i64, d.raw.ret.get(), "{what}: len = ret");
        assert_eq!(d.raw.cap_len.get(), 0, "{what}: nothing captured");
        assert!(d.payload.is_empty(), "{what}");
        assert!(d.is_truncated(), "{what}: bytes moved, none captured");
        assert!(d.raw.ts_enter_ns.get() <= d.raw.hdr.ts_ns.get(), "{what}");
        assert_eq!(d.raw.hdr.pid.get(), std::process::id());
        total += d.raw.len.get() as usize;
    }
    total
}

#[test]
fn sendfile_splice_and_copy_file_range_are_followed_by_length() {
    let Some(mut guard) = probe("zero-copy") else {
        return;
    };
    let pair = tcp_pair(false);
    let (c, s) = (pair.client.as_raw_fd(), pair.server.as_raw_fd());
    let (caddr, saddr) = (
        pair.client.local_addr().unwrap(),
        pair.server.local_addr().unwrap(),
    );
    let path = std::env::temp_dir().join(format!("kindling-zero-copy-{}", std::process::id()));
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    // client -> server: sendfile from the file, spliced out of the socket
    // into a pipe on the other end (more than a socket buffer: the two
    // sides run at once, and each call moves what it can)
    let receiver = std::thread::spawn(move || {
        let (rd, wr) = pipe();
        let mut got = 0;
        let mut buf = vec![0u8; 65536];
        while got < 300_000 {
            // SAFETY: valid fds, no offsets (a socket and a pipe have none).
            let n = unsafe {
                libc::splice(
                    s,
                    std::ptr::null_mut(),
                    wr.as_raw_fd(),
                    std::ptr::null_mut(),
                    65536,
                    0,
                )
            };
            let n = check(n, "splice from the socket");
            assert!(n > 0, "early end of stream after {got} bytes");
            let mut drained = 0;
            while drained < n {
                // SAFETY: `buf` is writable for its length.
                let r = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), n - drained) };
                drained += check(r, "pipe read");
            }
            got += n;
        }
        (gettid(), got)
    });
    let mut sent = 0;
    while sent < body.len() {
        // SAFETY: valid fds; a null offset uses and moves the file position.
        let n =
            unsafe { libc::sendfile(c, file.as_raw_fd(), std::ptr::null_mut(), body.len() - sent) };
        sent += check(n, "sendfile");
    }
    let (receiver_tid, received) = receiver.join().unwrap();
    assert_eq!(received, body.len());

    // server -> client: written into a pipe, spliced into the socket
    let (rd, wr) = pipe();
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    // SAFETY: `answer` is readable for its length.
    let w = unsafe { libc::write(wr.as_raw_fd(), answer.as_ptr().cast(), answer.len()) };
    assert_eq!(check(w, "pipe write"), answer.len());
    // SAFETY: valid fds, no offsets.
    let n = unsafe {
        libc::splice(
            rd.as_raw_fd(),
            std::ptr::null_mut(),
            s,
            std::ptr::null_mut(),
            answer.len(),
            0,
        )
    };
    assert_eq!(check(n, "splice into the socket"), answer.len());
    let mut back = vec![0u8; answer.len()];
    (&pair.client).read_exact(&mut back).unwrap();
    assert_eq!(back, answer);

    // copy_file_range wants regular files at both ends: refused on a socket
    // SAFETY: valid fds, null offsets.
    let rc = unsafe {
        libc::copy_file_range(
            file.as_raw_fd(),
            std::ptr::null_mut(),
            c,
            std::ptr::null_mut(),
            100,
            0,
        )
    };
    let refused = rc < 0;
    let errno = std::io::Error::last_os_error().raw_os_error();

    let records = collect(&mut guard);
    let events = decode_all(&records);
    let data = data_events(&with_port(&events, saddr.port()));

    let sendfile = by_call(&data, c, Syscall::Sendfile);
    assert!(!sendfile.is_empty(), "no sendfile record: {data:?}");
    assert_eq!(
        moved(&sendfile, Direction::Egress, caddr, saddr),
        body.len(),
        "sendfile: every byte counted"
    );
    assert_eq!(sendfile[0].raw.hdr.tid.get(), gettid());
    assert_eq!(sendfile[0].raw.ino.get(), inode_of(c));

    let spliced_in: Vec<_> = by_call(&data, s, Syscall::Splice)
        .into_iter()
        .filter(|d| d.direction() == Direction::Ingress)
        .collect();
    assert_eq!(
        moved(&spliced_in, Direction::Ingress, saddr, caddr),
        body.len(),
        "splice out of the socket: every byte counted"
    );
    assert_eq!(spliced_in[0].raw.hdr.tid.get(), receiver_tid);
    let spliced_out: Vec<_> = by_call(&data, s, Syscall::Splice)
        .into_iter()
        .filter(|d| d.direction() == Direction::Egress)
        .collect();
    assert_eq!(spliced_out.len(), 1, "{spliced_out:?}");
    assert_eq!(
        moved(&spliced_out, Direction::Egress, saddr, caddr),
        answer.len()
    );
    // the client read the answer with an ordinary recv
    assert!(data.iter().any(|d| d.raw.fd.get() == c
        && d.direction() == Direction::Ingress
        && d.payload == answer));

    let cfr = by_call(&data, c, Syscall::CopyFileRange);
    eprintln!(
        "zero-copy: {} sendfile, {} splice in, {} splice out records; copy_file_range: {rc} {errno:?}",
        sendfile.len(),
        spliced_in.len(),
        spliced_out.len()
    );
    assert_eq!(cfr.len(), 1, "{cfr:?}");
    if refused {
        assert_eq!(cfr[0].raw.ret.get(), -i64::from(errno.unwrap()));
        assert_eq!(cfr[0].raw.len.get(), 0);
        assert!(!cfr[0].is_truncated());
    } else {
        assert_eq!(moved(&cfr, Direction::Egress, caddr, saddr), rc as usize);
    }
    // the pipes and the file are not sockets: no records of their own
    assert!(data_events(&events).iter().all(|d| d.raw.fd.get() == c
        || d.raw.fd.get() == s
        || d.raw.sk.sport.get() != saddr.port()),);
    drop(pair);
}

/// The framing budget: a TCP write longer than the snaplen is captured in
/// full, in parts of at most `MAX_SNAPLEN` flagged `CONTINUED`, while its
/// turn's budget lasts (the part that crosses it included; the rest is one
/// uncaptured record); the next write of the same turn gets only the
/// snaplen; once the writer has read again, a new turn has the whole
/// budget again.
#[test]
fn framing_budget_captures_large_writes_per_turn() {
    if !privileged("framing budget") {
        return;
    }
    const BUDGET: u32 = 40_000;
    let mut probe = common::builder()
        .snaplen(SNAPLEN)
        .framing_budget(BUDGET)
        .trace_self(true)
        .pid(std::process::id())
        .wakeup_bytes(0)
        .load()
        .unwrap_or_else(|e| panic!("loading the probe failed: {e}\n{}", e.log().unwrap_or("")));
    let mut pair = tcp_pair(false);
    let port = pair.listener.local_addr().unwrap().port();
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let reader = {
        let mut server = pair.server.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = vec![0u8; 100_000];
            server.read_exact(&mut got).unwrap();
            server.write_all(b"ok").unwrap();
            server.read_exact(&mut got[..20_000]).unwrap();
        })
    };
    let client_fd = pair.client.as_raw_fd();
    let write_once = |bytes: &[u8]| {
        // one write(2) of all of it (a blocking socket takes 50 kB at once
        // on loopback, whose buffers are larger)
        // SAFETY: the fd is open and the buffer lives for the call.
        let n = check(
            unsafe { libc::write(client_fd, bytes.as_ptr().cast(), bytes.len()) },
            "write",
        );
        assert_eq!(n, bytes.len(), "one write took it all");
    };
    write_once(&big); // a new turn: captured in full up to the budget
    write_once(&big); // the same turn: budget spent
    let mut ok = [0u8; 2];
    pair.client.read_exact(&mut ok).unwrap(); // the writer reads: a new turn
    write_once(&big[..20_000]);
    reader.join().unwrap();

    let records = drain(
        &mut probe,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    let events = decode_all(&records);
    let mine = with_port(&events, port);
    let writes: Vec<&DataEvent<'_>> = mine
        .iter()
        .filter_map(|e| match e {
            Event::Data(d)
                if d.direction() == Direction::Egress && d.syscall() == Syscall::Write =>
            {
                Some(d)
            }
            _ => None,
        })
        .collect();
    let shape: Vec<(u32, u32, bool, bool)> = writes
        .iter()
        .map(|d| {
            (
                d.raw.len.get(),
                d.raw.cap_len.get(),
                d.continues(),
                d.is_truncated(),
            )
        })
        .collect();
    let max = abi::MAX_SNAPLEN;
    assert_eq!(
        shape,
        [
            // first write: three whole parts (the third crosses the budget)
            (max, max, true, false),
            (max, max, true, false),
            (max, max, true, false),
            // and the rest, uncaptured
            (50_000 - 3 * max, 0, false, true),
            // second write, same turn: the snaplen only
            (50_000, SNAPLEN, false, true),
            // after the writer read: a new turn, 20 kB in two whole parts
            (max, max, true, false),
            (20_000 - max, 20_000 - max, false, false),
        ]
    );
    // the parts are the bytes at their offsets, and the syscall's return
    // value is on each
    let mut at = 0usize;
    for d in &writes[..4] {
        assert_eq!(d.payload, &big[at..at + d.payload.len()]);
        assert_eq!(d.raw.ret.get(), 50_000);
        at += d.raw.len.get() as usize;
    }
    assert_eq!(at, 50_000);
}
