//! Property tests: arbitrary input never panics the engine, and every packet
//! it emits parses with valid lengths and checksums (checked by the test's own
//! RFC 1071 code, not smoltcp's).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;

use common::*;
use proptest::prelude::*;
use ztun_engine::{EchoPolicy, Engine, EngineConfig, Event, Instant};

fn engine(echo: EchoPolicy) -> Engine {
    Engine::new(
        EngineConfig {
            echo,
            random_seed: 5,
            ..EngineConfig::default()
        },
        Instant::ZERO,
    )
    .unwrap()
}

/// Feed, drain, answer every event the way a daemon might, drain again;
/// every emitted packet must be well-formed.
fn exercise(e: &mut Engine, pkts: &[Vec<u8>]) {
    let mut t = Instant::ZERO;
    for p in pkts {
        e.handle_packet(p, t);
        for out in drain_packets(e, t) {
            check_packet(&out);
        }
        for ev in drain_events(e) {
            match ev {
                Event::UdpDatagram(d) => e.udp_send(d.flow, &d.payload).unwrap(),
                Event::EchoRequest(r) => e.echo_reply(&r, &r.payload).unwrap(),
                Event::TcpOpened { flow, .. } | Event::TcpWritable { flow } => {
                    let _ = e.tcp_send(flow, b"hello");
                }
                Event::TcpReadable { flow } => {
                    let mut buf = [0u8; 2048];
                    while e.tcp_recv(flow, &mut buf).unwrap() > 0 {}
                }
                _ => {}
            }
        }
        t += ztun_engine::Duration::from_millis(300);
        for out in drain_packets(e, t) {
            check_packet(&out);
        }
    }
}

/// Valid packets of every kind the engine answers, as mutation seeds.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        icmpv4_echo_request(CLIENT_V4, SERVER_V4, 7, 1, b"0123456789abcdef"),
        icmpv6_echo_request(CLIENT_V6, SERVER_V6, 7, 1, b"0123456789abcdef"),
        udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 5000, 53, b"query"),
        udp_packet(CLIENT_V6.into(), SERVER_V6.into(), 5000, 443, b"quic"),
        tcp_packet(
            CLIENT_V4,
            SERVER_V4,
            40000,
            80,
            1,
            0,
            SYN,
            &[2, 4, 5, 0xb4],
            &[],
        ),
        tcp_packet(CLIENT_V4, SERVER_V4, 40000, 80, 2, 1, ACK, &[], b"data"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(pkts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1600), 1..8)) {
        exercise(&mut engine(EchoPolicy::Reply), &pkts);
    }

    #[test]
    fn random_bytes_with_ip_version_nibble_never_panic(
        pkts in prop::collection::vec((prop::bool::ANY, prop::collection::vec(any::<u8>(), 0..200)), 1..8)
    ) {
        let pkts: Vec<Vec<u8>> = pkts.into_iter().map(|(v6, mut p)| {
            if let Some(b) = p.first_mut() {
                *b = if v6 { 0x60 | (*b & 0x0f) } else { 0x45 };
            }
            p
        }).collect();
        exercise(&mut engine(EchoPolicy::Forward), &pkts);
    }

    #[test]
    fn mutated_valid_packets_never_panic(
        edits in prop::collection::vec((0usize..6, 0usize..128, any::<u8>(), 0usize..128), 1..12)
    ) {
        let seeds = seeds();
        let pkts: Vec<Vec<u8>> = edits.into_iter().map(|(which, at, byte, cut)| {
            let mut p = seeds[which].clone();
            let len = p.len();
            p[at % len] = byte;
            if cut % 4 == 0 {
                p.truncate(cut % (len + 1));
            }
            p
        }).collect();
        exercise(&mut engine(EchoPolicy::Reply), &pkts);
    }

    #[test]
    fn echo_reply_mirrors_any_request(ident in any::<u16>(), seq in any::<u16>(), data in prop::collection::vec(any::<u8>(), 0..1400), v6 in prop::bool::ANY) {
        let mut e = engine(EchoPolicy::Reply);
        let (req, client, server): (Vec<u8>, IpAddr, IpAddr) = if v6 {
            (icmpv6_echo_request(CLIENT_V6, SERVER_V6, ident, seq, &data), CLIENT_V6.into(), SERVER_V6.into())
        } else {
            (icmpv4_echo_request(CLIENT_V4, SERVER_V4, ident, seq, &data), CLIENT_V4.into(), SERVER_V4.into())
        };
        e.handle_packet(&req, Instant::ZERO);
        let out = drain_packets(&mut e, Instant::ZERO);
        prop_assert_eq!(out.len(), 1);
        let p = check_packet(&out[0]);
        prop_assert_eq!((p.src, p.dst, p.hop_limit), (server, client, 64));
        prop_assert_eq!(p.payload[0], if v6 { 129 } else { 0 });
        prop_assert_eq!(&p.payload[4..6], &ident.to_be_bytes());
        prop_assert_eq!(&p.payload[6..8], &seq.to_be_bytes());
        prop_assert_eq!(&p.payload[8..], &data[..]);
    }

    #[test]
    fn udp_reply_is_valid_for_any_payload(payload in prop::collection::vec(any::<u8>(), 0..1400), sport in 1u16.., dport in 1u16.., v6 in prop::bool::ANY) {
        let mut e = engine(EchoPolicy::Reply);
        let (client, server): (IpAddr, IpAddr) = if v6 { (CLIENT_V6.into(), SERVER_V6.into()) } else { (CLIENT_V4.into(), SERVER_V4.into()) };
        e.handle_packet(&udp_packet(client, server, sport, dport, b"x"), Instant::ZERO);
        let Some(Event::UdpDatagram(d)) = e.poll_event() else { panic!("no datagram") };
        e.udp_send(d.flow, &payload).unwrap();
        let out = drain_packets(&mut e, Instant::ZERO);
        let p = check_packet(&out[0]);
        prop_assert_eq!((p.src, p.dst), (server, client));
        prop_assert_eq!(&p.payload[8..], &payload[..]);
    }
}
