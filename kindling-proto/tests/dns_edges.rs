//! DNS edge cases: hostile names, bad record lengths, SOA, unknown types,
//! and the TCP framing of several messages per segment.

use kindling_proto::dns::{Dns, Error, Message, RData, Session};
use kindling_proto::{Detect, Direction, Protocol, Status};

/// Header: id, flags, counts.
fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

fn name(dotted: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in dotted.split('.').filter(|l| !l.is_empty()) {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

fn query(id: u16, q: &str, qtype: u16) -> Vec<u8> {
    let mut m = header(id, 0x0100, 1, 0, 0, 0);
    m.extend(name(q));
    m.extend(qtype.to_be_bytes());
    m.extend(1u16.to_be_bytes());
    m
}

#[test]
fn compression_loops_and_forward_pointers_are_rejected() {
    // question name is a pointer to itself
    let mut m = header(1, 0, 1, 0, 0, 0);
    m.extend([0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(Message::parse(&m).unwrap_err(), Error::BadName);
    // forward pointer
    let mut m = header(1, 0, 1, 0, 0, 0);
    m.extend([0xc0, 20, 0, 1, 0, 1, 0, 0, 0, 0]);
    assert_eq!(Message::parse(&m).unwrap_err(), Error::BadName);
    // two pointers that point at each other: the second must be earlier
    let mut m = header(1, 0x8000, 1, 1, 0, 0);
    m.extend(name("a.test"));
    m.extend([0, 1, 0, 1]);
    let rr_at = m.len();
    m.extend([0xc0, (rr_at + 2) as u8, 0xc0, rr_at as u8]);
    assert_eq!(Message::parse(&m).unwrap_err(), Error::BadName);
    // reserved label types 0x40/0x80
    let mut m = header(1, 0, 1, 0, 0, 0);
    m.extend([0x41, b'a', 0, 0, 1, 0, 1]);
    assert_eq!(Message::parse(&m).unwrap_err(), Error::BadName);
}

#[test]
fn names_longer_than_255_bytes_are_rejected() {
    let long = vec!["a".repeat(63); 5].join(".");
    let m = query(7, &long, 1);
    assert_eq!(Message::parse(&m).unwrap_err(), Error::BadName);
    let ok = vec!["a".repeat(63); 3].join(".");
    assert!(Message::parse(&query(7, &ok, 1)).is_ok());
}

#[test]
fn record_lengths_must_match_their_type() {
    let mut m = header(9, 0x8180, 1, 1, 0, 0);
    m.extend(name("x.test"));
    m.extend([0, 1, 0, 1]);
    m.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 5, 1, 2, 3, 4, 5]); // A with 5 bytes
    assert_eq!(Message::parse(&m).unwrap_err(), Error::BadRecord);
    let mut m = header(9, 0x8180, 1, 1, 0, 0);
    m.extend(name("x.test"));
    m.extend([0, 1, 0, 1]);
    m.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3]); // data past the end
    assert_eq!(Message::parse(&m).unwrap_err(), Error::Truncated);
}

#[test]
fn soa_and_unknown_types_decode() {
    let mut m = header(3, 0x8183, 1, 0, 1, 0); // NXDOMAIN with SOA in authority
    m.extend(name("nope.example.test"));
    m.extend([0, 1, 0, 1]);
    m.extend(name("example.test"));
    m.extend([0, 6, 0, 1, 0, 0, 0x0e, 0x10]);
    let mut rdata = name("ns1.example.test");
    rdata.extend(name("hostmaster.example.test"));
    for v in [2026112501u32, 7200, 3600, 1209600, 300] {
        rdata.extend(v.to_be_bytes());
    }
    m.extend((rdata.len() as u16).to_be_bytes());
    m.extend(&rdata);
    let msg = Message::parse(&m).unwrap();
    assert_eq!(msg.rcode(), 3);
    let soa = msg.authorities().next().unwrap();
    let RData::Soa {
        mname,
        rname,
        serial,
        minimum,
    } = soa.data
    else {
        panic!("{soa:?}")
    };
    assert_eq!(
        (mname.to_string(), rname.to_string(), serial, minimum),
        (
            "ns1.example.test".into(),
            "hostmaster.example.test".into(),
            2026112501,
            300
        )
    );
    assert!(msg
        .attributes()
        .contains(&("dns.response.code", "NXDOMAIN".into())));

    let mut m = header(4, 0x8180, 1, 1, 0, 0);
    m.extend(name("svc.test"));
    m.extend([0, 65, 0, 1]);
    m.extend([0xc0, 12, 0, 65, 0, 1, 0, 0, 0, 1, 0, 3, 0, 1, 0]);
    let msg = Message::parse(&m).unwrap();
    assert!(matches!(
        msg.answers().next().unwrap().data,
        RData::Unknown(&[0, 1, 0])
    ));
}

#[test]
fn tcp_carries_several_messages_per_segment() {
    let (a, b) = (query(1, "a.test", 1), query(2, "b.test", 28));
    let mut stream = Vec::new();
    for m in [&a, &b] {
        stream.extend((m.len() as u16).to_be_bytes());
        stream.extend(m.iter());
    }
    let mut s = Session::tcp();
    let Ok(Status::Complete((m1, used))) = Dns::parse(&mut s, Direction::Request, &stream) else {
        panic!()
    };
    assert_eq!((m1.header.id(), used), (1, a.len() + 2));
    let Ok(Status::Complete((m2, _))) = Dns::parse(&mut s, Direction::Request, &stream[used..])
    else {
        panic!()
    };
    assert!(m2.first_question().unwrap().name.eq_str("B.TEST."));
    for cut in 0..a.len() + 2 {
        assert!(matches!(
            Dns::parse(&mut s, Direction::Request, &stream[..cut]),
            Ok(Status::Partial)
        ));
    }
}

#[test]
fn detection_by_content() {
    let q = query(0x4242, "example.test", 1);
    assert_eq!(Dns::detect(&q, Direction::Request), Detect::Match);
    assert_eq!(
        Dns::detect(&q, Direction::Response),
        Detect::NoMatch,
        "QR says query"
    );
    let mut tcp = (q.len() as u16).to_be_bytes().to_vec();
    tcp.extend(&q);
    assert_eq!(Dns::detect(&tcp, Direction::Request), Detect::Match);
    assert_eq!(Dns::detect(&q[..5], Direction::Request), Detect::NeedMore);
    assert_eq!(
        Dns::detect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Direction::Request),
        Detect::NoMatch
    );
    assert_eq!(
        Dns::detect(b"*1\r\n$4\r\nPING\r\n", Direction::Request),
        Detect::NoMatch
    );
}
