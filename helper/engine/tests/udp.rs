//! UDP mappings: one per 4-tuple, payload untouched, replies from the
//! original destination with valid checksums, idle timeouts.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use ztun_engine::{Duration, Engine, EngineConfig, Event, FlowError, Instant, UdpDatagram};

fn engine() -> Engine {
    Engine::new(
        EngineConfig {
            random_seed: 1,
            ..EngineConfig::default()
        },
        Instant::ZERO,
    )
    .unwrap()
}

fn datagrams(e: &mut Engine) -> Vec<UdpDatagram> {
    drain_events(e)
        .into_iter()
        .map(|ev| match ev {
            Event::UdpDatagram(d) => d,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[test]
fn datagram_surfaces_with_tuple_and_untouched_payload() {
    let mut e = engine();
    let payload: Vec<u8> = (0..=255).collect();
    e.handle_packet(
        &udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40000, 443, &payload),
        Instant::ZERO,
    );
    let d = datagrams(&mut e);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].src, sa(CLIENT_V4, 40000));
    assert_eq!(d[0].dst, sa(SERVER_V4, 443));
    assert_eq!(d[0].payload, payload);
    assert!(drain_packets(&mut e, Instant::ZERO).is_empty());
}

#[test]
fn same_tuple_reuses_mapping_other_tuples_get_their_own() {
    let mut e = engine();
    let first = udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40000, 443, b"1");
    let second = udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40001, 443, b"2");
    let third = udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40000, 444, b"3");
    for p in [&first, &first, &second, &third] {
        e.handle_packet(p, Instant::ZERO);
    }
    let d = datagrams(&mut e);
    assert_eq!(d[0].flow, d[1].flow);
    assert_ne!(d[0].flow, d[2].flow);
    assert_ne!(d[0].flow, d[3].flow);
    assert_ne!(d[2].flow, d[3].flow);
    assert_eq!(e.udp_mapping_count(), 3);
    assert_eq!(e.counters().udp_mappings_created, 3);
}

#[test]
fn reply_comes_from_original_destination_with_valid_checksums_v4() {
    let mut e = engine();
    e.handle_packet(
        &udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40000, 53, b"query"),
        Instant::ZERO,
    );
    let flow = datagrams(&mut e)[0].flow;
    e.udp_send(flow, b"answer").unwrap();
    let out = drain_packets(&mut e, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let p = check_packet(&out[0]);
    assert_eq!(
        (p.src, p.dst, p.proto, p.hop_limit),
        (SERVER_V4.into(), CLIENT_V4.into(), 17, 64)
    );
    assert_eq!(&p.payload[0..2], &53u16.to_be_bytes(), "source port");
    assert_eq!(
        &p.payload[2..4],
        &40000u16.to_be_bytes(),
        "destination port"
    );
    assert_eq!(&p.payload[4..6], &14u16.to_be_bytes(), "UDP length");
    assert_eq!(&p.payload[8..], b"answer");
    // The engine's reply is byte-identical to one built by the test's own code.
    assert_eq!(
        out[0][20..],
        udp_segment(SERVER_V4.into(), CLIENT_V4.into(), 53, 40000, b"answer")[..]
    );
}

#[test]
fn reply_comes_from_original_destination_with_valid_checksums_v6() {
    let mut e = engine();
    e.handle_packet(
        &udp_packet(CLIENT_V6.into(), SERVER_V6.into(), 5353, 4433, b"hi"),
        Instant::ZERO,
    );
    let flow = datagrams(&mut e)[0].flow;
    e.udp_send(flow, b"hello back").unwrap();
    let out = drain_packets(&mut e, Instant::ZERO);
    let p = check_packet(&out[0]);
    assert_eq!(
        (p.src, p.dst, p.proto),
        (SERVER_V6.into(), CLIENT_V6.into(), 17)
    );
    assert_eq!(
        out[0][40..],
        udp_segment(
            SERVER_V6.into(),
            CLIENT_V6.into(),
            4433,
            5353,
            b"hello back"
        )[..]
    );
}

#[test]
fn zero_checksum_over_ipv4_is_accepted() {
    let mut e = engine();
    let mut p = udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 1, 2, b"x");
    p[26] = 0;
    p[27] = 0;
    e.handle_packet(&p, Instant::ZERO);
    assert_eq!(datagrams(&mut e).len(), 1);
}

#[test]
fn mapping_expires_after_idle_timeout_and_dns_sooner() {
    let mut e = engine();
    e.handle_packet(
        &udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40000, 53, b"dns"),
        Instant::ZERO,
    );
    e.handle_packet(
        &udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40001, 443, b"quic"),
        Instant::ZERO,
    );
    let d = datagrams(&mut e);
    let (dns, quic) = (d[0].flow, d[1].flow);
    let at = |s: u64| Instant::ZERO + Duration::from_secs(s);
    assert!(
        e.poll_at().is_some(),
        "a timer is pending while mappings live"
    );
    drain_packets(&mut e, at(9));
    assert!(drain_events(&mut e).is_empty());
    drain_packets(&mut e, at(11));
    assert_eq!(drain_events(&mut e), vec![Event::UdpExpired { flow: dns }]);
    assert_eq!(e.udp_send(dns, b"late"), Err(FlowError::UnknownFlow(dns)));
    drain_packets(&mut e, at(59));
    assert!(drain_events(&mut e).is_empty());
    drain_packets(&mut e, at(61));
    assert_eq!(drain_events(&mut e), vec![Event::UdpExpired { flow: quic }]);
    assert_eq!(e.udp_mapping_count(), 0);
    assert_eq!(e.poll_at(), None, "no timers without flows");
}

#[test]
fn traffic_in_either_direction_keeps_mapping_alive() {
    let mut e = engine();
    let p = udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40000, 443, b"a");
    e.handle_packet(&p, Instant::ZERO);
    let flow = datagrams(&mut e)[0].flow;
    let at = |s: u64| Instant::ZERO + Duration::from_secs(s);
    drain_packets(&mut e, at(50));
    e.udp_send(flow, b"reply").unwrap();
    drain_packets(&mut e, at(100));
    e.handle_packet(&p, at(100));
    drain_packets(&mut e, at(150));
    assert_eq!(datagrams(&mut e).len(), 1, "only the datagram, no expiry");
    drain_packets(&mut e, at(161));
    assert_eq!(drain_events(&mut e), vec![Event::UdpExpired { flow }]);
}

#[test]
fn new_datagram_after_expiry_gets_new_mapping() {
    let mut e = engine();
    let p = udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 40000, 443, b"a");
    e.handle_packet(&p, Instant::ZERO);
    let first = datagrams(&mut e)[0].flow;
    let later = Instant::ZERO + Duration::from_secs(120);
    drain_packets(&mut e, later);
    drain_events(&mut e);
    e.handle_packet(&p, later);
    assert_ne!(datagrams(&mut e)[0].flow, first);
}

#[test]
fn reply_larger_than_mtu_is_refused() {
    let mut e = engine();
    e.handle_packet(
        &udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 1, 2, b"x"),
        Instant::ZERO,
    );
    let flow = datagrams(&mut e)[0].flow;
    assert_eq!(
        e.udp_send(flow, &[0; 1473]),
        Err(FlowError::TooLarge {
            len: 1473,
            max: 1472
        })
    );
    e.udp_send(flow, &[0; 1472]).unwrap();
    assert_eq!(drain_packets(&mut e, Instant::ZERO)[0].len(), 1500);
}

#[test]
fn many_mappings_each_answered_on_its_own_tuple() {
    let mut e = engine();
    for port in 1000..3000u16 {
        e.handle_packet(
            &udp_packet(
                CLIENT_V4.into(),
                SERVER_V4.into(),
                port,
                9,
                &port.to_be_bytes(),
            ),
            Instant::ZERO,
        );
    }
    let d = datagrams(&mut e);
    assert_eq!(d.len(), 2000);
    assert_eq!(e.udp_mapping_count(), 2000);
    for (i, dg) in d.iter().enumerate() {
        e.udp_send(dg.flow, &dg.payload).unwrap();
        if i % 500 == 499 {
            for pkt in drain_packets(&mut e, Instant::ZERO) {
                let p = check_packet(&pkt);
                let dport = u16::from_be_bytes([p.payload[2], p.payload[3]]);
                assert_eq!(
                    &p.payload[8..],
                    &dport.to_be_bytes(),
                    "reply reached its own client port"
                );
            }
        }
    }
}

/// The ICMP type and code the client receives for each reason, and the
/// quoted headers that let its stack find the socket: the original
/// datagram's IP header (client → destination, UDP) and its UDP ports.
#[test]
fn unreachable_quotes_the_flow_with_the_right_type_and_code_for_each_reason() {
    use ztun_engine::Unreachable::{Host, Port, Prohibited};
    let cases: [(IpAddr, IpAddr, ztun_engine::Unreachable, [u8; 3]); 6] = [
        (CLIENT_V4.into(), SERVER_V4.into(), Port, [1, 3, 3]),
        (CLIENT_V4.into(), SERVER_V4.into(), Host, [1, 3, 1]),
        (CLIENT_V4.into(), SERVER_V4.into(), Prohibited, [1, 3, 13]),
        (CLIENT_V6.into(), SERVER_V6.into(), Port, [58, 1, 4]),
        (CLIENT_V6.into(), SERVER_V6.into(), Host, [58, 1, 3]),
        (CLIENT_V6.into(), SERVER_V6.into(), Prohibited, [58, 1, 1]),
    ];
    for (client, server, why, [proto, kind, code]) in cases {
        let mut e = engine();
        e.handle_packet(
            &udp_packet(client, server, 40000, 53, b"query"),
            Instant::ZERO,
        );
        let flow = datagrams(&mut e)[0].flow;
        e.udp_unreachable(flow, why).unwrap();
        let out = drain_packets(&mut e, Instant::ZERO);
        assert_eq!(out.len(), 1, "{why:?}");
        // Addresses, and the ICMP checksum verified by the test's own code.
        let p = check_packet(&out[0]);
        assert_eq!((p.src, p.dst, p.proto), (server, client, proto), "{why:?}");
        assert_eq!(&p.payload[..2], [kind, code], "{why:?} type and code");
        assert_eq!(&p.payload[4..8], [0; 4], "{why:?} unused field");
        let quote = &p.payload[8..];
        let ip_len = if client.is_ipv4() { 20 } else { 40 };
        assert_eq!(quote.len(), ip_len + 8, "{why:?} quote length");
        // The quoted IP header is a valid header of the original datagram.
        let quoted = check_ip_header(&quote[..ip_len], 8);
        assert_eq!(
            (quoted.0, quoted.1, quoted.2),
            (client, server, 17),
            "{why:?}"
        );
        assert_eq!(
            &quote[ip_len..ip_len + 4],
            [0x9c, 0x40, 0, 53],
            "{why:?} quoted ports"
        );
        assert_eq!(
            &quote[ip_len + 4..ip_len + 6],
            [0, 8],
            "{why:?} quoted UDP length"
        );
    }
}

/// (source, destination, protocol) of an IP header followed by
/// `payload_len` bytes, checking its length field (and IPv4 checksum).
fn check_ip_header(h: &[u8], payload_len: usize) -> (IpAddr, IpAddr, u8) {
    if h[0] >> 4 == 4 {
        assert_eq!(
            usize::from(u16::from_be_bytes([h[2], h[3]])),
            20 + payload_len
        );
        assert_eq!(ones_sum(&[h]), 0xffff, "quoted IPv4 header checksum");
        let a = |i: usize| IpAddr::from(<[u8; 4]>::try_from(&h[i..i + 4]).unwrap());
        (a(12), a(16), h[9])
    } else {
        assert_eq!(usize::from(u16::from_be_bytes([h[4], h[5]])), payload_len);
        let a = |i: usize| IpAddr::from(<[u8; 16]>::try_from(&h[i..i + 16]).unwrap());
        (a(8), a(24), h[6])
    }
}

#[test]
fn unreachable_for_an_unknown_flow_is_an_error_not_a_packet() {
    let mut e = engine();
    e.handle_packet(
        &udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 1, 2, b"x"),
        Instant::ZERO,
    );
    let flow = datagrams(&mut e)[0].flow;
    e.handle_packet(
        &udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 1, 2, b"x"),
        Instant::ZERO,
    );
    drop(datagrams(&mut e));
    let later = Instant::ZERO + Duration::from_secs(3600);
    e.poll_transmit(&mut [0; 2048], later);
    drop(drain_events(&mut e));
    assert_eq!(
        e.udp_unreachable(flow, ztun_engine::Unreachable::Port),
        Err(FlowError::UnknownFlow(flow))
    );
    assert!(drain_packets(&mut e, later).is_empty());
}
