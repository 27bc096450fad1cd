//! ICMP and `ICMPv6` echo (requirements S4, S5): byte-level tests.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use common::*;
use ztun_engine::{DropReason, EchoPolicy, Engine, EngineConfig, Event, Instant};

fn engine(echo: EchoPolicy) -> Engine {
    Engine::new(
        EngineConfig {
            echo,
            random_seed: 1,
            ..EngineConfig::default()
        },
        Instant::ZERO,
    )
    .unwrap()
}

/// The predecessor's capture: `ping 203.0.113.5` from utun peer 198.18.0.1,
/// identifier 32065 (0x7d41), sequence 0, 56 data bytes (macOS ping: an
/// 8-byte timestamp, then 0x08..=0x37).
const CAPTURED_REQUEST: [u8; 84] = [
    0x45, 0x00, 0x00, 0x54, 0x3c, 0x2a, 0x00, 0x00, // v4 IHL 5, total 84, id 0x3c2a
    0x40, 0x01, 0x3c, 0x66, 0xc6, 0x12, 0x00, 0x01, // TTL 64, ICMP, csum, src 198.18.0.1
    0xcb, 0x00, 0x71, 0x05, 0x08, 0x00, 0x5c, 0xd2, // dst 203.0.113.5, type 8 code 0, csum
    0x7d, 0x41, 0x00, 0x00, 0x69, 0x2c, 0x5a, 0x8e, // id 32065, seq 0, timestamp
    0x00, 0x0d, 0x6f, 0x21, 0x08, 0x09, 0x0a, 0x0b, //
    0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, //
    0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, //
    0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, //
    0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, //
    0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, //
    0x34, 0x35, 0x36, 0x37,
];

#[test]
fn captured_request_is_itself_valid() {
    assert_eq!(ones_sum(&[&CAPTURED_REQUEST[..20]]), 0xffff);
    assert_eq!(ones_sum(&[&CAPTURED_REQUEST[20..]]), 0xffff);
}

#[test]
fn reply_swaps_addresses_and_fixes_checksums() {
    let mut e = engine(EchoPolicy::Reply);
    e.handle_packet(&CAPTURED_REQUEST, Instant::ZERO);
    let out = drain_packets(&mut e, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r.len(), 84, "same length as the request");
    // IPv4 header
    assert_eq!(r[0], 0x45, "version 4, IHL 5");
    assert_eq!(&r[2..4], &[0x00, 0x54], "total length 84");
    assert_eq!(r[6] & 0x1f, 0, "not a fragment");
    assert_eq!(r[8], 64, "fresh TTL 64");
    assert_eq!(r[9], 1, "protocol ICMP");
    assert_eq!(&r[12..16], &[203, 0, 113, 5], "source is the pinged host");
    assert_eq!(&r[16..20], &[198, 18, 0, 1], "destination is the client");
    let ip_csum = u16::from_be_bytes([r[10], r[11]]);
    let mut hdr = r[..20].to_vec();
    hdr[10] = 0;
    hdr[11] = 0;
    assert_eq!(ip_csum, checksum(&[&hdr]), "IPv4 header checksum");
    // ICMP
    assert_eq!(r[20], 0, "type 0 echo reply");
    assert_eq!(r[21], 0, "code 0");
    assert_eq!(u16::from_be_bytes([r[24], r[25]]), 32065, "identifier kept");
    assert_eq!(u16::from_be_bytes([r[26], r[27]]), 0, "sequence kept");
    assert_eq!(&r[28..], &CAPTURED_REQUEST[28..], "56 data bytes kept");
    let icmp_csum = u16::from_be_bytes([r[22], r[23]]);
    let mut icmp = r[20..].to_vec();
    icmp[2] = 0;
    icmp[3] = 0;
    assert_eq!(icmp_csum, checksum(&[&icmp]), "ICMP checksum");
    // Type 8 -> 0 changes the checksum by exactly 0x0800 (RFC 1624).
    assert_eq!(icmp_csum, 0x5cd2 + 0x0800);
    assert_eq!(e.counters().echo_replies, 1);
}

#[test]
fn icmpv6_reply_swaps_addresses_and_uses_pseudo_header_checksum() {
    let mut e = engine(EchoPolicy::Reply);
    let data: Vec<u8> = (0u8..56).collect();
    let req = icmpv6_echo_request(CLIENT_V6, SERVER_V6, 0x1234, 7, &data);
    e.handle_packet(&req, Instant::ZERO);
    let out = drain_packets(&mut e, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(r[0] >> 4, 6);
    assert_eq!(r[6], 58, "next header ICMPv6");
    assert_eq!(r[7], 64, "fresh hop limit 64");
    assert_eq!(&r[8..24], &SERVER_V6.octets(), "source is the pinged host");
    assert_eq!(&r[24..40], &CLIENT_V6.octets(), "destination is the client");
    assert_eq!(r[40], 129, "type 129 echo reply");
    assert_eq!(r[41], 0);
    assert_eq!(&r[44..46], &0x1234u16.to_be_bytes());
    assert_eq!(&r[46..48], &7u16.to_be_bytes());
    assert_eq!(&r[48..], &data[..]);
    let ph = pseudo_header(SERVER_V6.into(), CLIENT_V6.into(), 58, r.len() - 40);
    assert_eq!(ones_sum(&[&ph, &r[40..]]), 0xffff, "ICMPv6 checksum");
}

#[test]
fn reply_to_empty_echo_has_header_only() {
    let mut e = engine(EchoPolicy::Reply);
    e.handle_packet(
        &icmpv4_echo_request(CLIENT_V4, SERVER_V4, 1, 65535, &[]),
        Instant::ZERO,
    );
    let out = drain_packets(&mut e, Instant::ZERO);
    let p = check_packet(&out[0]);
    assert_eq!(
        p.payload,
        vec![0, 0, p.payload[2], p.payload[3], 0, 1, 0xff, 0xff]
    );
}

#[test]
fn forward_policy_emits_event_and_translates_real_reply() {
    let mut e = engine(EchoPolicy::Forward);
    e.handle_packet(&CAPTURED_REQUEST, Instant::ZERO);
    assert!(
        drain_packets(&mut e, Instant::ZERO).is_empty(),
        "nothing answered locally"
    );
    let events = drain_events(&mut e);
    let [Event::EchoRequest(req)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(req.src, IpAddr::from(CLIENT_V4));
    assert_eq!(req.dst, IpAddr::from(SERVER_V4));
    assert_eq!((req.ident, req.seq), (32065, 0));
    assert_eq!(&req.payload[..], &CAPTURED_REQUEST[28..]);
    // The real host answered with the same data.
    e.echo_reply(req, &req.payload).unwrap();
    let out = drain_packets(&mut e, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let p = check_packet(&out[0]);
    assert_eq!(
        (p.src, p.dst),
        (IpAddr::from(SERVER_V4), IpAddr::from(CLIENT_V4))
    );
    assert_eq!(p.payload[0], 0, "echo reply");
    assert_eq!(&p.payload[4..6], &32065u16.to_be_bytes());
    assert_eq!(&p.payload[8..], &CAPTURED_REQUEST[28..]);
}

#[test]
fn forward_policy_works_for_icmpv6() {
    let mut e = engine(EchoPolicy::Forward);
    e.handle_packet(
        &icmpv6_echo_request(CLIENT_V6, SERVER_V6, 9, 3, b"ping"),
        Instant::ZERO,
    );
    let events = drain_events(&mut e);
    let [Event::EchoRequest(req)] = &events[..] else {
        panic!("{events:?}")
    };
    e.echo_reply(req, b"ping").unwrap();
    let out = drain_packets(&mut e, Instant::ZERO);
    let p = check_packet(&out[0]);
    assert_eq!(
        (p.src, p.dst),
        (IpAddr::from(SERVER_V6), IpAddr::from(CLIENT_V6))
    );
    assert_eq!(p.payload[0], 129);
}

#[test]
fn drop_policy_counts_and_sends_nothing() {
    let mut e = engine(EchoPolicy::Drop);
    e.handle_packet(&CAPTURED_REQUEST, Instant::ZERO);
    assert!(drain_packets(&mut e, Instant::ZERO).is_empty());
    assert!(drain_events(&mut e).is_empty());
    assert_eq!(e.counters().drops(DropReason::EchoPolicyDrop), 1);
}

#[test]
fn other_icmp_types_are_counted_and_dropped() {
    let mut e = engine(EchoPolicy::Reply);
    // Echo reply (type 0), destination unreachable (type 3 code 1), timestamp (13).
    for (kind, code) in [(0u8, 0u8), (3, 1), (13, 0)] {
        let mut m = vec![kind, code, 0, 0, 0, 0, 0, 0];
        let c = checksum(&[&m]);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        e.handle_packet(&ipv4(CLIENT_V4, SERVER_V4, 1, &m), Instant::ZERO);
    }
    // ICMPv6 neighbour solicitation (135) and echo reply (129).
    for kind in [135u8, 129] {
        let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
        if kind == 135 {
            m.extend_from_slice(&SERVER_V6.octets()); // target address
        }
        let ph = pseudo_header(CLIENT_V6.into(), SERVER_V6.into(), 58, m.len());
        let c = checksum(&[&ph, &m]);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        e.handle_packet(&ipv6(CLIENT_V6, SERVER_V6, 58, &m), Instant::ZERO);
    }
    assert!(drain_packets(&mut e, Instant::ZERO).is_empty());
    assert_eq!(e.counters().drops(DropReason::IcmpNotEcho), 5);
}

#[test]
fn echo_request_with_bad_icmp_checksum_is_dropped() {
    let mut e = engine(EchoPolicy::Reply);
    let mut req = CAPTURED_REQUEST;
    req[23] ^= 0x01;
    e.handle_packet(&req, Instant::ZERO);
    assert!(drain_packets(&mut e, Instant::ZERO).is_empty());
    assert_eq!(e.counters().drops(DropReason::BadTransportChecksum), 1);
}

#[test]
fn icmpv6_echo_with_bad_checksum_is_dropped() {
    let mut e = engine(EchoPolicy::Reply);
    let mut req = icmpv6_echo_request(CLIENT_V6, SERVER_V6, 1, 1, b"x");
    let last = req.len() - 1;
    req[last] ^= 0xff;
    e.handle_packet(&req, Instant::ZERO);
    assert!(drain_packets(&mut e, Instant::ZERO).is_empty());
    assert_eq!(e.counters().drops(DropReason::BadTransportChecksum), 1);
}
