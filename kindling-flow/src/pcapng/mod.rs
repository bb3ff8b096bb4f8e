//! Capture records as packets Wireshark and tshark decode as the real
//! conversations: `kindling dump CAPTURE -o OUT.pcapng`.
//!
//! The probe sees syscalls, not packets. [`Synthesizer`] turns them back
//! into the TCP and UDP packets that carried them:
//!
//! - a connection gets its handshake at `connect`/`accept` (or none, when
//!   the capture joined it mid-way: Wireshark follows it anyway), a FIN per
//!   side at `close`, an RST where the kernel reports one, and a SYN
//!   answered by an RST for a refused `connect`;
//! - every read and write becomes one segment, with sequence and
//!   acknowledgement numbers kept across the connection, at the syscall's
//!   time; a UDP message becomes one datagram;
//! - bytes past the capture's snaplen are never invented: the sequence
//!   numbers step over them, and Wireshark reports the gap ("previous
//!   segment not captured"), counted in [`DumpStats::gap_bytes`];
//! - when both ends of a connection are traced (loopback, two pods on one
//!   node) each direction is taken from one socket only, the first seen
//!   sending or receiving it, so no byte appears twice;
//! - each packet's comment names the process (pid, comm, thread, syscall,
//!   cgroup);
//! - each network namespace is a connection space of its own (127.0.0.1
//!   in two containers are two hosts), and its packets carry its inode.
//!
//! [`PcapngWriter`] writes the packets as pcapng (raw IP link type,
//! nanosecond timestamps), one interface per network namespace: `host`
//! for the host's, `netns-INODE` for another (a container's, a pod's).
//!
//! # Examples
//!
//! ```
//! use kindling_flow::pcapng::{PcapngWriter, Synthesizer};
//!
//! let mut synth = Synthesizer::new(0);
//! let mut file = PcapngWriter::new(Vec::new())?.with_host_netns(Some(4026531840));
//! let mut packets = Vec::new();
//! // for each record of a capture: synth.push(&kindling_probe::abi::decode(rec)?, &mut packets);
//! synth.finish(&mut packets);
//! for p in &packets {
//!     file.write(p)?;
//! }
//! assert_eq!(synth.stats().packets, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod packet;
mod write;

use std::net::{IpAddr, SocketAddr};

use kindling_probe::abi::{ConnEvent, ConnKind, DataEvent, Direction, Event, TcpEvent, TcpKind};
use rustc_hash::FxHashMap;

pub use packet::{Packet, Segment};
pub use write::PcapngWriter;

/// What the synthesizer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Packets made.
    pub packets: u64,
    /// Payload bytes the capture did not hold (snaplen): gaps in the
    /// sequence numbers.
    pub gap_bytes: u64,
    /// Reads and writes left out because the other end's socket already
    /// gave that direction's bytes.
    pub duplicate_records: u64,
    /// Records that were not socket traffic of TCP or UDP over IP (or a
    /// loss marker): nothing to draw.
    pub skipped_records: u64,
    /// Loss markers in the capture: records the kernel could not deliver.
    pub lost_records: u64,
}

/// A connection: its network namespace, its ends in canonical order (the
/// lower address first).
type Key = (u32, SocketAddr, SocketAddr);

/// One TCP connection as drawn so far.
#[derive(Debug)]
struct Conn {
    /// The end that opened it (connected), as far as the capture tells.
    client: SocketAddr,
    /// The other end.
    server: SocketAddr,
    /// Next sequence number of each direction: `[client → server,
    /// server → client]`.
    next: [u32; 2],
    /// The socket whose records give each direction's bytes.
    owner: [Option<u64>; 2],
    /// A FIN or RST was drawn in that direction.
    ended: [bool; 2],
}

impl Conn {
    fn new(client: SocketAddr, server: SocketAddr) -> Self {
        // initial sequence numbers: any will do (Wireshark shows relative
        // ones); distinct per connection, like a kernel's
        let isn = |a: SocketAddr, b: SocketAddr| -> u32 {
            let h = rustc_hash::FxBuildHasher;
            let v = std::hash::BuildHasher::hash_one(&h, (a, b));
            (v >> 32) as u32 ^ v as u32
        };
        Self {
            client,
            server,
            next: [isn(client, server), isn(server, client)],
            owner: [None, None],
            ended: [false, false],
        }
    }

    /// The direction index of bytes from `from`.
    fn dir(&self, from: SocketAddr) -> usize {
        usize::from(from != self.client)
    }

    /// (source, destination) of direction `dir`.
    fn ends(&self, dir: usize) -> (SocketAddr, SocketAddr) {
        if dir == 0 {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        }
    }
}

/// Turns capture records into packets; see the [module](self) docs.
#[derive(Debug)]
pub struct Synthesizer {
    /// Added to a record's `CLOCK_BOOTTIME` time for Unix time.
    boottime_to_unix_ns: i64,
    conns: FxHashMap<Key, Conn>,
    /// UDP: the socket giving each (namespace, source, destination) flow.
    datagrams: FxHashMap<Key, u64>,
    stats: DumpStats,
}

/// Most connections remembered; the oldest are forgotten beyond (a later
/// segment of a forgotten one starts it afresh, mid-stream).
const MAX_CONNS: usize = 100_000;

/// `-ECONNREFUSED` and friends: a connect the peer refused.
const ECONNREFUSED: i64 = 111;

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn key(netns: u32, a: SocketAddr, b: SocketAddr) -> Key {
    if a <= b {
        (netns, a, b)
    } else {
        (netns, b, a)
    }
}

fn comment(pid: u32, tid: u32, comm: &[u8], what: &str, cgroup: u64) -> String {
    let comm = String::from_utf8_lossy(comm.split(|b| *b == 0).next().unwrap_or_default());
    format!("pid {pid} ({comm}) tid {tid} {what} cgroup {cgroup}")
}

impl Synthesizer {
    /// A synthesizer for records whose times add `boottime_to_unix_ns` to
    /// become Unix times (the capture header's).
    pub fn new(boottime_to_unix_ns: i64) -> Self {
        Self {
            boottime_to_unix_ns,
            conns: FxHashMap::default(),
            datagrams: FxHashMap::default(),
            stats: DumpStats::default(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> DumpStats {
        self.stats
    }

    fn unix(&self, boottime_ns: u64) -> u64 {
        boottime_ns.saturating_add_signed(self.boottime_to_unix_ns)
    }

    /// Draws the packets of one record into `out`, in time order.
    pub fn push(&mut self, event: &Event<'_>, out: &mut Vec<Packet>) {
        let before = out.len();
        match event {
            Event::Data(d) => self.data(d, out),
            Event::Conn(c) => self.conn(c, out),
            Event::Tcp(t) if t.kind == TcpKind::Reset => self.reset(t, out),
            Event::Lost(l) => self.stats.lost_records += l.raw.records.get(),
            _ => self.stats.skipped_records += 1,
        }
        let netns = event.sock().netns.get();
        for p in &mut out[before..] {
            p.netns = netns;
        }
        self.stats.packets += (out.len() - before) as u64;
    }

    /// Ends the dump (nothing is held back: every record drew its packets
    /// when pushed).
    pub fn finish(&mut self, _out: &mut [Packet]) {}

    fn conn_entry(
        &mut self,
        k: Key,
        local: SocketAddr,
        peer: SocketAddr,
        local_is_client: bool,
    ) -> &mut Conn {
        if self.conns.len() >= MAX_CONNS && !self.conns.contains_key(&k) {
            self.conns.clear();
        }
        self.conns.entry(k).or_insert_with(|| {
            if local_is_client {
                Conn::new(local, peer)
            } else {
                Conn::new(peer, local)
            }
        })
    }

    /// The three packets of a handshake, the client's SYN at `syn_ns` and
    /// the rest at `done_ns`.
    fn handshake(conn: &Conn, syn_ns: u64, done_ns: u64, note: &str, out: &mut Vec<Packet>) {
        let [c, s] = conn.next;
        let (client, server) = (conn.client, conn.server);
        let syn = |s: &mut Segment<'_>| s.syn = true;
        let isn = c.wrapping_sub(1);
        let seg = Segment::control;
        out.push(
            seg(client, server, isn, None, syn_ns, note.to_owned())
                .with(syn)
                .packet(),
        );
        let answer = seg(
            server,
            client,
            s.wrapping_sub(1),
            Some(c),
            done_ns,
            note.to_owned(),
        );
        out.push(answer.with(syn).packet());
        out.push(seg(client, server, c, Some(s), done_ns, note.to_owned()).packet());
    }

    fn conn(&mut self, c: &ConnEvent<'_>, out: &mut Vec<Packet>) {
        let sk = &c.raw.sk;
        if sk.protocol != 6 {
            self.stats.skipped_records += 1;
            return;
        }
        let (local, peer) = (canonical(sk.local()), canonical(sk.peer()));
        let k = key(sk.netns.get(), local, peer);
        let h = &c.raw.hdr;
        let ts = self.unix(h.ts_ns.get());
        let enter = self.unix(c.raw.ts_enter_ns.get());
        let note = |what: &str| comment(h.pid.get(), h.tid.get(), &h.comm, what, h.cgroup_id.get());
        match c.kind {
            ConnKind::Connect => {
                let ret = c.raw.ret.get();
                let fresh = !self.conns.contains_key(&k);
                let conn = self.conn_entry(k, local, peer, true);
                if !fresh {
                    return;
                }
                if ret == -ECONNREFUSED {
                    // SYN, answered by RST
                    let (client, server, isn) = (conn.client, conn.server, conn.next[0]);
                    out.push(
                        Segment::control(
                            client,
                            server,
                            isn.wrapping_sub(1),
                            None,
                            enter,
                            note("connect"),
                        )
                        .with(|s| s.syn = true)
                        .packet(),
                    );
                    out.push(
                        Segment::control(server, client, 0, Some(isn), ts, note("connect refused"))
                            .with(|s| s.rst = true)
                            .packet(),
                    );
                    self.conns.remove(&k);
                } else if ret == 0 || ret == -115 {
                    // done, or in progress (EINPROGRESS): drawn as done
                    Self::handshake(conn, enter, ts.max(enter), &note("connect"), out);
                }
            }
            ConnKind::Accept => {
                let fresh = !self.conns.contains_key(&k);
                let conn = self.conn_entry(k, local, peer, false);
                if fresh {
                    // the handshake completed before accept returned
                    Self::handshake(conn, ts, ts, &note("accept"), out);
                }
            }
            ConnKind::Close => {
                let Some(conn) = self.conns.get_mut(&k) else {
                    return;
                };
                let dir = conn.dir(local);
                if !conn.ended[dir] {
                    conn.ended[dir] = true;
                    let (from, to) = conn.ends(dir);
                    let (seq, ack) = (conn.next[dir], conn.next[1 - dir]);
                    conn.next[dir] = seq.wrapping_add(1);
                    out.push(
                        Segment::control(from, to, seq, Some(ack), enter, note("close"))
                            .with(|s| s.fin = true)
                            .packet(),
                    );
                }
                if conn.ended == [true, true] {
                    self.conns.remove(&k);
                }
            }
        }
    }

    fn reset(&mut self, t: &TcpEvent<'_>, out: &mut Vec<Packet>) {
        let sk = &t.raw.sk;
        let (local, peer) = (canonical(sk.local()), canonical(sk.peer()));
        let h = &t.raw.hdr;
        let ts = self.unix(h.ts_ns.get());
        let Some(conn) = self.conns.get_mut(&key(sk.netns.get(), local, peer)) else {
            return;
        };
        let from = match t.reset() {
            Some(kindling_probe::abi::ResetDirection::Sent) => local,
            Some(kindling_probe::abi::ResetDirection::Received) => peer,
            None => return,
        };
        let dir = conn.dir(from);
        if conn.ended[dir] {
            return;
        }
        conn.ended[dir] = true;
        let (src, dst) = conn.ends(dir);
        let note = comment(
            h.pid.get(),
            h.tid.get(),
            &h.comm,
            "reset",
            h.cgroup_id.get(),
        );
        out.push(
            Segment::control(src, dst, conn.next[dir], Some(conn.next[1 - dir]), ts, note)
                .with(|s| s.rst = true)
                .packet(),
        );
    }

    fn data(&mut self, d: &DataEvent<'_>, out: &mut Vec<Packet>) {
        let sk = &d.raw.sk;
        let (local, peer) = (canonical(sk.local()), canonical(sk.peer()));
        let len = d.raw.len.get();
        let h = &d.raw.hdr;
        if d.raw.ret.get() <= 0
            || len == 0
            || matches!(peer.ip(), IpAddr::V4(a) if a.is_unspecified())
        {
            return;
        }
        let (from, to) = match d.direction() {
            Direction::Egress => (local, peer),
            Direction::Ingress => (peer, local),
        };
        let ts = self.unix(h.ts_ns.get());
        let note = comment(
            h.pid.get(),
            h.tid.get(),
            &h.comm,
            d.syscall().name(),
            h.cgroup_id.get(),
        );
        let payload = d.payload;
        let missing = u64::from(len).saturating_sub(payload.len() as u64);
        match sk.protocol {
            17 => {
                let flow = (sk.netns.get(), from, to);
                let owner = *self.datagrams.entry(flow).or_insert(sk.sock.get());
                if owner != sk.sock.get() {
                    self.stats.duplicate_records += 1;
                    return;
                }
                if self.datagrams.len() > MAX_CONNS {
                    self.datagrams.clear();
                }
                self.stats.gap_bytes += missing;
                out.push(Packet::udp(from, to, payload, len, ts, note));
            }
            6 => {
                // a connection the capture joined mid-way: the side that
                // sends first is taken for the client
                let k = key(sk.netns.get(), local, peer);
                let conn = self.conn_entry(k, local, peer, d.direction() == Direction::Egress);
                let dir = conn.dir(from);
                let sock = sk.sock.get();
                match conn.owner[dir] {
                    None => conn.owner[dir] = Some(sock),
                    Some(o) if o != sock => {
                        self.stats.duplicate_records += 1;
                        return;
                    }
                    Some(_) => {}
                }
                let seq = conn.next[dir];
                let ack = conn.next[1 - dir];
                conn.next[dir] = seq.wrapping_add(len);
                self.stats.gap_bytes += missing;
                let s = Segment {
                    payload,
                    ..Segment::control(from, to, seq, Some(ack), ts, note)
                };
                out.push(s.packet());
            }
            _ => self.stats.skipped_records += 1,
        }
    }
}
