//! The third-party captures in `shared/corpus/pcap/` (written by other
//! projects), parsed by Kindling and compared with tshark's counts in
//! `MANIFEST.tsv`, an independent oracle.
//!
//! Packets are read with pcap-file and etherparse; TCP streams are put back
//! in sequence order per direction (retransmitted bytes dropped); the client
//! is the side that sent the SYN, or else the side with the higher port.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use kindling_proto::dns::Message as DnsMessage;
use kindling_proto::http1::{Http1, Message as HttpMessage};
use kindling_proto::redis::{Message as RespMessage, Redis};
use kindling_proto::{Direction, Protocol, Status};
use pcap_file::DataLink;

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/pcap");
    if dir.join("MANIFEST.tsv").exists() {
        return Some(dir);
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI must have ../shared/corpus/pcap"
    );
    eprintln!("skipping: {} is not there", dir.display());
    None
}

/// `(file, tshark counts)` for one protocol.
fn manifest(dir: &Path, protocol: &str) -> Vec<(String, BTreeMap<String, u64>)> {
    std::fs::read_to_string(dir.join("MANIFEST.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.get(1) == Some(&protocol)).then(|| {
                let counts = cols[6]
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
                    .collect();
                (cols[0].to_owned(), counts)
            })
        })
        .collect()
}

struct Packet {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    tcp: Option<(u32, bool, bool)>, // seq, SYN, ACK
    payload: Vec<u8>,
}

fn decode(link: DataLink, data: &[u8]) -> Option<Packet> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        // 16-byte cooked header, protocol in the last two bytes (any ARPHRD,
        // loopback included, which etherparse's SLL reader does not take)
        DataLink::LINUX_SLL => match data.get(14..16)? {
            [0x08, 0x00] | [0x86, 0xdd] => SlicedPacket::from_ip(data.get(16..)?).ok()?,
            _ => return None,
        },
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        // 4-byte address family in host (NULL) or network (LOOP) order
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let (s, d) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            IpAddr::from(ip.header().source_addr()),
            IpAddr::from(ip.header().destination_addr()),
        ),
        NetSlice::Ipv6(ip) => (
            IpAddr::from(ip.header().source_addr()),
            IpAddr::from(ip.header().destination_addr()),
        ),
    };
    match sliced.transport? {
        TransportSlice::Tcp(t) => Some(Packet {
            src: (s, t.source_port()),
            dst: (d, t.destination_port()),
            tcp: Some((t.sequence_number(), t.syn(), t.ack())),
            payload: t.payload().to_vec(),
        }),
        TransportSlice::Udp(u) => Some(Packet {
            src: (s, u.source_port()),
            dst: (d, u.destination_port()),
            tcp: None,
            payload: u.payload().to_vec(),
        }),
        _ => None,
    }
}

/// Every TCP/UDP packet of a capture; `None` if its link type is not read here.
fn packets(path: &Path) -> Option<Vec<Packet>> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).ok()?;
        let mut links = Vec::new();
        while let Some(Ok(block)) = r.next_block() {
            match block {
                pcap_file::pcapng::Block::InterfaceDescription(i) => links.push(i.linktype),
                pcap_file::pcapng::Block::EnhancedPacket(p) => {
                    let link = *links.get(p.interface_id as usize)?;
                    out.extend(decode(link, &p.data));
                }
                _ => {}
            }
        }
        if links.iter().any(|l| {
            !matches!(
                l,
                DataLink::ETHERNET
                    | DataLink::LINUX_SLL
                    | DataLink::RAW
                    | DataLink::NULL
                    | DataLink::LOOP
                    | DataLink::IPV4
                    | DataLink::IPV6
            )
        }) {
            return None;
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).ok()?;
        let link = r.header().datalink;
        if !matches!(
            link,
            DataLink::ETHERNET
                | DataLink::LINUX_SLL
                | DataLink::RAW
                | DataLink::NULL
                | DataLink::LOOP
                | DataLink::IPV4
                | DataLink::IPV6
        ) {
            return None;
        }
        while let Some(Ok(p)) = r.next_packet() {
            out.extend(decode(link, &p.data));
        }
    }
    Some(out)
}

/// A TCP connection: client and server byte streams, in order.
struct Stream {
    client: Vec<u8>,
    server: Vec<u8>,
}

/// Puts each direction's segments in sequence order, dropping bytes seen
/// before; returns streams in order of first appearance.
fn tcp_streams(pkts: &[Packet]) -> Vec<Stream> {
    type Key = ((IpAddr, u16), (IpAddr, u16));
    let mut order: Vec<Key> = Vec::new();
    /// Initial sequence number (if the SYN was seen) and the segments.
    type Half = (Option<u32>, Vec<(u32, Vec<u8>)>);
    let mut dirs: HashMap<Key, Half> = HashMap::new();
    let mut client_of: HashMap<Key, (IpAddr, u16)> = HashMap::new();
    for p in pkts {
        let Some((seq, syn, ack)) = p.tcp else {
            continue;
        };
        let conn = if p.src < p.dst {
            (p.src, p.dst)
        } else {
            (p.dst, p.src)
        };
        if !client_of.contains_key(&conn) {
            order.push(conn);
        }
        if syn && !ack {
            client_of.insert(conn, p.src);
        } else {
            // no SYN seen yet: the higher port is the client, for now
            let client = if p.src.1 > p.dst.1 { p.src } else { p.dst };
            client_of.entry(conn).or_insert(client);
        }
        let d = dirs.entry((p.src, p.dst)).or_default();
        if syn {
            d.0 = Some(seq.wrapping_add(1));
        }
        if !p.payload.is_empty() {
            d.1.push((seq, p.payload.clone()));
        }
    }
    let assemble = |key: Key| -> Vec<u8> {
        let Some((isn, mut segs)) = dirs.get(&key).cloned() else {
            return Vec::new();
        };
        let Some(base) = isn.or_else(|| segs.first().map(|s| s.0)) else {
            return Vec::new();
        };
        segs.sort_by_key(|(seq, _)| seq.wrapping_sub(base));
        let mut out = Vec::new();
        let mut next = 0u32; // relative
        for (seq, data) in segs {
            let rel = seq.wrapping_sub(base);
            let end = rel.wrapping_add(data.len() as u32);
            if end <= next {
                continue; // retransmission
            }
            let skip = next.saturating_sub(rel) as usize;
            out.extend_from_slice(&data[skip.min(data.len())..]);
            next = end;
        }
        out
    };
    order
        .into_iter()
        .map(|conn| {
            let client = client_of[&conn];
            let server = if conn.0 == client { conn.1 } else { conn.0 };
            Stream {
                client: assemble((client, server)),
                server: assemble((server, client)),
            }
        })
        .collect()
}

/// Walks one direction of a stream, counting messages until the end, an
/// error or a message that does not complete.
fn walk<P: Protocol>(
    session: &mut P::Session,
    dir: Direction,
    buf: &[u8],
    mut each: impl FnMut(&P::Message<'_>),
) {
    let mut at = 0;
    while at < buf.len() {
        match P::parse(session, dir, &buf[at..]) {
            Ok(Status::Complete((m, used))) if used > 0 => {
                each(&m);
                at += used;
            }
            _ => break,
        }
    }
}

fn compare(
    protocol: &str,
    count: impl Fn(&[Packet]) -> BTreeMap<String, u64>,
) -> (usize, Vec<String>) {
    compare_fields(protocol, None, count)
}

/// [`compare`] limited to some of tshark's counters.
fn compare_fields(
    protocol: &str,
    fields: Option<&[&str]>,
    count: impl Fn(&[Packet]) -> BTreeMap<String, u64>,
) -> (usize, Vec<String>) {
    let Some(dir) = corpus_dir() else {
        return (0, Vec::new());
    };
    let mut agree = 0;
    let mut differ = Vec::new();
    for (file, tshark) in manifest(&dir, protocol) {
        let Some(pkts) = packets(&dir.join(&file)) else {
            differ.push(format!("{file}: link type not read here"));
            continue;
        };
        let ours = count(&pkts);
        let mismatch: Vec<String> = tshark
            .iter()
            .filter(|(k, _)| fields.is_none_or(|f| f.contains(&k.as_str())))
            .filter(|(k, v)| ours.get(*k).copied().unwrap_or(0) != **v)
            .map(|(k, v)| {
                format!(
                    "{k}: tshark {v}, kindling {}",
                    ours.get(k).copied().unwrap_or(0)
                )
            })
            .collect();
        if mismatch.is_empty() {
            agree += 1;
        } else {
            differ.push(format!("{file}: {}", mismatch.join(", ")));
        }
    }
    (agree, differ)
}

#[test]
fn dns_counts_agree_with_tshark() {
    let (agree, differ) = compare("dns", |pkts| {
        let mut c = BTreeMap::new();
        let mut add = |m: &DnsMessage<'_>| {
            let k = if m.header.is_response() {
                "dns.response"
            } else {
                "dns.query"
            };
            *c.entry(k.to_owned()).or_insert(0) += 1;
            if m.header.is_response() && m.header.rcode() == 3 {
                *c.entry("dns.nxdomain".to_owned()).or_insert(0) += 1;
            }
        };
        for p in pkts.iter().filter(|p| p.tcp.is_none()) {
            if let Ok(m) = DnsMessage::parse(&p.payload) {
                add(&m);
            }
        }
        for s in tcp_streams(pkts) {
            for (dir, buf) in [
                (Direction::Request, &s.client),
                (Direction::Response, &s.server),
            ] {
                walk::<kindling_proto::dns::Dns>(
                    &mut kindling_proto::dns::Session::tcp(),
                    dir,
                    buf,
                    |m| add(m),
                );
            }
        }
        c
    });
    report("dns", agree, &differ);
}

/// Counts messages over every TCP stream of a capture, client side first,
/// one session per connection; `keys` names the counters a message adds to.
fn count_tcp<P: Protocol>(
    pkts: &[Packet],
    keys: impl Fn(&P::Message<'_>, &mut Vec<&'static str>),
) -> BTreeMap<String, u64> {
    let mut c = BTreeMap::new();
    let mut add = |m: &P::Message<'_>| {
        let mut k = Vec::new();
        keys(m, &mut k);
        for key in k {
            *c.entry(key.to_owned()).or_insert(0) += 1;
        }
    };
    for s in tcp_streams(pkts) {
        let mut session = P::Session::default();
        walk::<P>(&mut session, Direction::Request, &s.client, &mut add);
        walk::<P>(&mut session, Direction::Response, &s.server, &mut add);
    }
    c
}

#[test]
fn http1_counts_agree_with_tshark() {
    let (agree, differ) = compare("http1", |pkts| {
        count_tcp::<Http1>(pkts, |m, k| match m {
            HttpMessage::Request(_) => k.push("http.request"),
            HttpMessage::Response(_) => k.push("http.response"),
        })
    });
    report("http1", agree, &differ);
}

#[test]
fn redis_counts_agree_with_tshark() {
    let (agree, differ) = compare("redis", |pkts| {
        count_tcp::<Redis>(pkts, |m, k| match m {
            RespMessage::Command(_) => k.push("resp.client_toplevel"),
            RespMessage::Reply(r) => {
                k.push("resp.server_toplevel");
                if r.is_error() {
                    k.push("resp.error");
                }
            }
        })
    });
    report("redis", agree, &differ);
}

/// Captures whose counts differ from tshark's today. Not yet analysed (who
/// is right, and why): each needs a look with tshark side by side. The test
/// fails when this list changes in either direction, so an improvement or a
/// regression is noticed and the list stays true.
const KNOWN_DIFFERENCES: &[&str] = &[
    // dns: UPDATE/TSIG messages (no question section), IP fragments (not
    // reassembled here), junk datagrams counted by tshark, a name with a
    // forward compression pointer (rejected here on purpose), EDNS client
    // subnet responses, an unread link type.
    "dns/arkime-dns-update.pcap",
    "dns/ndpi-dns-fragmented.pcap",
    "dns/ndpi-dns.pcap",
    "dns/suricata-dns-udp-junk-request-first.pcap",
    "dns/suricata-dns-udp-many.pcap",
    "dns/tcpdump-dns-forward-pointer.pcap",
    "dns/zeek-dns-dynamic-update-tsig.pcap",
    "dns/zeek-dns-edns-client-subnet.pcap",
    "dns/zeek-dns-ipv6-fragmented.pcap",
    "dns/zeek-dns-tcp-inverse-query.pcap",
    // http1: invalid and odd requests tshark still counts, a dropped
    // response that stops our walk of a 1000-request stream, NFLOG.
    "http1/deepflow-http-truncated-body-port8080.pcap",
    "http1/suricata-http-head-odd-transfer-encoding.pcap",
    "http1/suricata-http-multiple-content-length.pcap",
    "http1/suricata-http-request-invalid.pcap",
    "http1/suricata-http-uri-spaces.pcap",
    "http1/zeek-http-1000-requests-one-dropped-response.pcap",
    "http1/zeek-http-bro-org-browsing.pcap",
    "http1/zeek-http-methods.pcap",
    "http1/zeek-http-nflog-linktype.pcap",
    // redis: RESP3 attributes and pushes (tshark counts nested elements as
    // top level?), hostile and almost-RESP input, very large values.
    "redis/ndpi-redis.pcap",
    "redis/tcpdump-redis-infinite-loop.pcapng",
    "redis/tcpdump-redis-malicious.pcap",
    "redis/zeek-redis-RESP3-attribute.pcap",
    "redis/zeek-redis-RESP3-pubsub.pcap",
    "redis/zeek-redis-almost-resp.pcap",
    "redis/zeek-redis-large-requests-responses.pcap",
    "redis/zeek-redis-mass-insert-1000-sets.pcap",
    // mysql (commands and errors only): compressed sessions are reported as
    // compressed and not decoded (by design, for now); query attributes and
    // caching_sha2 / auth-switch / COM_CHANGE_USER flows are off by one or
    // two commands, probably auth packets after the handshake.
    "mysql/deepflow-mysql-COMPRESSED-partial-packet-port30130.pcap",
    "mysql/deepflow-mysql-COMPRESSED-response-port30130.pcap",
    "mysql/deepflow-mysql-COMPRESSED-use.pcap",
    "mysql/zeek-mysql-9-query-attributes.pcap",
    "mysql/zeek-mysql-caching-sha2-auth-switch.pcapng",
    "mysql/zeek-mysql-caching-sha2.pcap",
    "mysql/zeek-mysql-change-user-error.pcap",
    "mysql/zeek-mysql-change-user-success.pcap",
    "mysql/zeek-mysql-many-query-attrs.pcap",
    "mysql/zeek-mysql-query-attr.pcap",
    "mysql/zeek-mysql8-login-failed.pcap",
];

#[test]
fn mysql_commands_and_errors_agree_with_tshark() {
    use kindling_proto::mysql::{Command, Message as MyMessage, MySql, Response, Session};
    // tshark's mysql.packets and mysql.response_code count packets inside
    // result sets and handshakes; commands and errors are comparable.
    let (agree, differ) =
        compare_fields("mysql", Some(&["mysql.command", "mysql.error"]), |pkts| {
            let mut c = BTreeMap::new();
            for s in tcp_streams(pkts) {
                let greeting =
                    MySql::detect(&s.server, Direction::Response) == kindling_proto::Detect::Match;
                let mut session = if greeting {
                    Session::default()
                } else {
                    Session::in_command_phase()
                };
                // Interleave as the conversation went: the server's greeting,
                // then each client message followed by the server's answer.
                let (mut ci, mut si) = (0usize, 0usize);
                let count = |m: &MyMessage<'_>, c: &mut BTreeMap<String, u64>| match m {
                    MyMessage::Command(Command::Other(0)) => {} // auth data
                    MyMessage::Command(_) => *c.entry("mysql.command".to_owned()).or_insert(0) += 1,
                    MyMessage::Response(Response::Err { .. }) => {
                        *c.entry("mysql.error".to_owned()).or_insert(0) += 1
                    }
                    _ => {}
                };
                let server =
                    |session: &mut Session, si: &mut usize, c: &mut BTreeMap<String, u64>| {
                        match MySql::parse(session, Direction::Response, &s.server[*si..]) {
                            Ok(Status::Complete((m, used))) if used > 0 && *si < s.server.len() => {
                                count(&m, c);
                                *si += used;
                                true
                            }
                            _ => false,
                        }
                    };
                if greeting {
                    server(&mut session, &mut si, &mut c);
                }
                loop {
                    let client =
                        match MySql::parse(&mut session, Direction::Request, &s.client[ci..]) {
                            Ok(Status::Complete((m, used))) if used > 0 && ci < s.client.len() => {
                                count(&m, &mut c);
                                ci += used;
                                true
                            }
                            _ => false,
                        };
                    let answered = server(&mut session, &mut si, &mut c);
                    if !client && !answered {
                        break;
                    }
                }
            }
            c
        });
    report("mysql", agree, &differ);
}

fn report(protocol: &str, agree: usize, differ: &[String]) {
    eprintln!(
        "{protocol}: {agree} captures agree with tshark, {} differ",
        differ.len()
    );
    for d in differ {
        eprintln!("  {d}");
    }
    if differ.is_empty() && agree == 0 {
        return; // corpus absent (skipped above)
    }
    let mut now: Vec<&str> = differ
        .iter()
        .map(|d| d.split(':').next().unwrap())
        .collect();
    now.sort_unstable();
    let mut known: Vec<&str> = KNOWN_DIFFERENCES
        .iter()
        .copied()
        .filter(|f| f.starts_with(&format!("{protocol}/")))
        .collect();
    known.sort_unstable();
    assert_eq!(
        now, known,
        "{protocol}: the captures that differ from tshark changed"
    );
}

#[test]
#[ignore = "debugging aid: cargo test --test corpus peek -- --ignored --nocapture"]
fn peek() {
    let Some(dir) = corpus_dir() else { return };
    let f = std::env::var("PEEK").unwrap_or_else(|_| "redis/tcpdump-redis-inline.pcap".into());
    let pkts = packets(&dir.join(f)).expect("readable");
    eprintln!("{} packets", pkts.len());
    for s in tcp_streams(&pkts).iter().take(3) {
        eprintln!(
            "client {:?}",
            String::from_utf8_lossy(&s.client[..s.client.len().min(120)])
        );
        eprintln!(
            "server {:?}",
            String::from_utf8_lossy(&s.server[..s.server.len().min(120)])
        );
    }
}
