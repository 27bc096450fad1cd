//! Test helpers: packet builders and an RFC 1071 checksum written here, on
//! purpose independent of smoltcp, so the engine's output is checked by code
//! that does not share its bugs.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ztun_engine::{Engine, Event, Instant};

/// RFC 1071 one's-complement sum folded to 16 bits, not inverted.
pub fn ones_sum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut carry: Option<u8> = None;
    for chunk in chunks {
        for &b in *chunk {
            match carry.take() {
                None => carry = Some(b),
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
            }
        }
    }
    if let Some(hi) = carry {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).unwrap()
}

/// Internet checksum of `chunks` (the value to store in a zeroed field).
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    !ones_sum(chunks)
}

pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut v = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            v.extend_from_slice(&s.octets());
            v.extend_from_slice(&d.octets());
            v.extend_from_slice(&[0, proto]);
            v.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            v.extend_from_slice(&s.octets());
            v.extend_from_slice(&d.octets());
            v.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
            v.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    v
}

pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap();
    let mut p = vec![0x45, 0x00];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x00, 0x00, 64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&[&p]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(payload);
    p
}

pub fn icmp_echo(kind: u8, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    m
}

pub fn icmpv4_echo_request(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut m = icmp_echo(8, ident, seq, data);
    let c = checksum(&[&m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, &m)
}

pub fn icmpv6_echo_request(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut m = icmp_echo(128, ident, seq, data);
    let ph = pseudo_header(src.into(), dst.into(), 58, m.len());
    let c = checksum(&[&ph, &m]);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6(src, dst, 58, &m)
}

pub fn udp_segment(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let ph = pseudo_header(src, dst, 17, len);
    let mut c = checksum(&[&ph, &u]);
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

pub fn udp_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let u = udp_segment(src, dst, sport, dport, payload);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4(s, d, 17, &u),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(s, d, 17, &u),
        _ => panic!("mixed families"),
    }
}

/// What `check_packet` found in a well-formed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub hop_limit: u8,
    pub payload: Vec<u8>,
}

/// Parse an emitted packet with this file's own code and assert every length
/// and checksum (IPv4 header; TCP, UDP, ICMP, `ICMPv6` with pseudo-header).
pub fn check_packet(p: &[u8]) -> Parsed {
    let (src, dst, proto, hop_limit, payload): (IpAddr, IpAddr, u8, u8, &[u8]) = match p[0] >> 4 {
        4 => {
            assert_eq!(p[0], 0x45, "IHL");
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            assert_eq!(total, p.len(), "IPv4 total length");
            assert_eq!(ones_sum(&[&p[..20]]), 0xffff, "IPv4 header checksum");
            let s = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let d = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            (s.into(), d.into(), p[9], p[8], &p[20..])
        }
        6 => {
            let plen = usize::from(u16::from_be_bytes([p[4], p[5]]));
            assert_eq!(plen + 40, p.len(), "IPv6 payload length");
            let s = Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap());
            let d = Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap());
            (s.into(), d.into(), p[6], p[7], &p[40..])
        }
        v => panic!("IP version {v}"),
    };
    match proto {
        1 => assert_eq!(ones_sum(&[payload]), 0xffff, "ICMP checksum"),
        6 | 17 | 58 => {
            let ph = pseudo_header(src, dst, proto, payload.len());
            assert_eq!(
                ones_sum(&[&ph, payload]),
                0xffff,
                "checksum of protocol {proto}"
            );
        }
        other => panic!("unexpected protocol {other}"),
    }
    Parsed {
        src,
        dst,
        proto,
        hop_limit,
        payload: payload.to_vec(),
    }
}

pub fn drain_packets(engine: &mut Engine, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Some(n) = engine.poll_transmit(&mut buf, now) {
        out.push(buf[..n].to_vec());
    }
    out
}

pub fn drain_events(engine: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| engine.poll_event()).collect()
}

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 5);

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// An IPv4 TCP segment with a 20-byte header plus `options` (padded by the
/// caller to a multiple of 4), checksummed by this file's code.
#[allow(clippy::too_many_arguments)]
pub fn tcp_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hl = u8::try_from(20 + options.len()).unwrap();
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[(hl / 4) << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(options);
    t.extend_from_slice(payload);
    let ph = pseudo_header(src.into(), dst.into(), 6, t.len());
    let c = checksum(&[&ph, &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 6, &t)
}
