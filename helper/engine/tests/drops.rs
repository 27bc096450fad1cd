//! Every `DropReason` that inbound packets can trigger, one byte vector each.
//! Each test checks the packet is dropped, counted under exactly that reason,
//! and answered with nothing.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use ztun_engine::{DropReason, Engine, EngineConfig, Event, Instant, IpCidr, Received};

fn engine_with(config: EngineConfig) -> Engine {
    Engine::new(
        EngineConfig {
            random_seed: 1,
            ..config
        },
        Instant::ZERO,
    )
    .unwrap()
}

fn assert_dropped_as(e: &mut Engine, pkt: &[u8], reason: DropReason) {
    e.handle_packet(pkt, Instant::ZERO);
    let c = e.counters();
    assert_eq!(c.drops(reason), 1, "{reason:?}: {c:?}");
    assert_eq!(
        c.total_drops(),
        1,
        "counted once, under {reason:?} only: {c:?}"
    );
    assert!(drain_packets(e, Instant::ZERO).is_empty(), "no answer");
    assert!(drain_events(e).is_empty(), "no event");
}

fn assert_drop(pkt: &[u8], reason: DropReason) {
    assert_dropped_as(&mut engine_with(EngineConfig::default()), pkt, reason);
}

fn ping_v4() -> Vec<u8> {
    icmpv4_echo_request(CLIENT_V4, SERVER_V4, 1, 1, b"abcdefgh")
}

/// Recompute the IPv4 header checksum after editing the header.
fn refix_ipv4(p: &mut [u8]) {
    let hl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let c = checksum(&[&p[..hl]]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn empty_packet_is_truncated() {
    assert_drop(&[], DropReason::Truncated);
}

#[test]
fn ipv4_shorter_than_its_header_is_truncated() {
    assert_drop(&ping_v4()[..19], DropReason::Truncated);
}

#[test]
fn ipv4_shorter_than_its_total_length_is_truncated() {
    let p = ping_v4();
    assert_drop(&p[..p.len() - 1], DropReason::Truncated);
}

#[test]
fn ipv6_shorter_than_its_payload_length_is_truncated() {
    let p = icmpv6_echo_request(CLIENT_V6, SERVER_V6, 1, 1, b"abcd");
    assert_drop(&p[..p.len() - 2], DropReason::Truncated);
    assert_drop(&p[..39], DropReason::Truncated);
}

#[test]
fn packet_longer_than_mtu_is_oversized() {
    let mut e = engine_with(EngineConfig {
        mtu: 1280,
        ..EngineConfig::default()
    });
    let p = icmpv4_echo_request(CLIENT_V4, SERVER_V4, 1, 1, &[0u8; 1253]);
    assert_eq!(p.len(), 1281);
    assert_dropped_as(&mut e, &p, DropReason::Oversized);
}

#[test]
fn only_a_tcp_super_segment_is_exempt_from_the_mtu() {
    let mut e = engine_with(EngineConfig {
        mtu: 1280,
        ..EngineConfig::default()
    });
    let ping = icmpv4_echo_request(CLIENT_V4, SERVER_V4, 1, 1, &[0u8; 1253]);
    e.handle_received(&ping, Received::TcpSuperSegment, Instant::ZERO);
    assert_eq!(e.counters().drops(DropReason::Oversized), 1);
    let mut e = engine_with(EngineConfig::default());
    // Longer than any IP packet, whatever its own length field says.
    let mut huge = ping;
    huge.resize(65_536, 0);
    e.handle_received(&huge, Received::TcpSuperSegment, Instant::ZERO);
    assert_eq!(
        e.counters().drops(DropReason::Oversized),
        1,
        "64 KiB is the limit"
    );
}

#[test]
fn a_checksum_the_device_vouches_for_is_not_verified_again() {
    let mut u = udp_segment(CLIENT_V4.into(), SERVER_V4.into(), 1000, 53, b"q");
    u[6] ^= 0x5a;
    let wrong = ipv4(CLIENT_V4, SERVER_V4, 17, &u);
    let mut e = engine_with(EngineConfig::default());
    e.handle_received(&wrong, Received::ChecksumValid, Instant::ZERO);
    assert_eq!(e.counters().total_drops(), 0);
    assert!(matches!(drain_events(&mut e)[..], [Event::UdpDatagram(_)]));
    // The IPv4 header checksum is the engine's to check still.
    let mut bad_header = wrong;
    bad_header[10] ^= 1;
    assert_dropped_as(&mut e, &bad_header, DropReason::BadIpChecksum);
}

#[test]
fn version_5_is_bad_version() {
    let mut p = ping_v4();
    p[0] = 0x55;
    assert_drop(&p, DropReason::BadVersion);
}

#[test]
fn ihl_below_5_is_bad_header_length() {
    let mut p = ping_v4();
    p[0] = 0x44;
    assert_drop(&p, DropReason::BadHeaderLength);
}

#[test]
fn ihl_beyond_total_length_is_bad_header_length() {
    let mut p = ping_v4();
    p[0] = 0x4f; // 60-byte header in a 36-byte packet
    assert_drop(&p, DropReason::BadHeaderLength);
}

#[test]
fn wrong_ipv4_header_checksum_is_bad_ip_checksum() {
    let mut p = ping_v4();
    p[10] ^= 0x80;
    assert_drop(&p, DropReason::BadIpChecksum);
}

#[test]
fn ipv4_with_options_is_dropped() {
    let inner = ping_v4();
    // Same packet with a 4-byte NOP,NOP,NOP,EOL option block: IHL 6.
    let mut p = vec![0x46, 0x00];
    p.extend_from_slice(&u16::try_from(inner.len() + 4).unwrap().to_be_bytes());
    p.extend_from_slice(&inner[4..20]);
    p.extend_from_slice(&[1, 1, 1, 0]);
    p.extend_from_slice(&inner[20..]);
    refix_ipv4(&mut p);
    assert_drop(&p, DropReason::Ipv4Options);
}

#[test]
fn ipv4_first_fragment_is_dropped() {
    let mut p = ping_v4();
    p[6] = 0x20; // MF
    refix_ipv4(&mut p);
    assert_drop(&p, DropReason::Fragment);
}

#[test]
fn ipv4_later_fragment_is_dropped() {
    let mut p = ping_v4();
    p[7] = 0x10; // offset 128 bytes
    refix_ipv4(&mut p);
    assert_drop(&p, DropReason::Fragment);
}

#[test]
fn ipv6_fragment_header_is_dropped() {
    // Fragment header (44) carrying ICMPv6.
    let frag = [58, 0, 0x00, 0x01, 0, 0, 0, 1, 128, 0, 0, 0, 0, 0, 0, 0];
    assert_drop(&ipv6(CLIENT_V6, SERVER_V6, 44, &frag), DropReason::Fragment);
}

#[test]
fn ipv6_hop_by_hop_header_is_dropped() {
    let hbh = [58, 0, 1, 4, 0, 0, 0, 0];
    assert_drop(
        &ipv6(CLIENT_V6, SERVER_V6, 0, &hbh),
        DropReason::Ipv6ExtensionHeader,
    );
}

#[test]
fn multicast_source_is_bad_source() {
    let p = icmpv4_echo_request(Ipv4Addr::new(224, 0, 0, 1), SERVER_V4, 1, 1, b"x");
    assert_drop(&p, DropReason::BadSource);
}

#[test]
fn broadcast_source_is_bad_source() {
    let p = icmpv4_echo_request(Ipv4Addr::BROADCAST, SERVER_V4, 1, 1, b"x");
    assert_drop(&p, DropReason::BadSource);
}

#[test]
fn unspecified_and_loopback_sources_are_bad_source() {
    let p = icmpv4_echo_request(Ipv4Addr::UNSPECIFIED, SERVER_V4, 1, 1, b"x");
    assert_drop(&p, DropReason::BadSource);
    let p = icmpv4_echo_request(Ipv4Addr::LOCALHOST, SERVER_V4, 1, 1, b"x");
    assert_drop(&p, DropReason::BadSource);
}

#[test]
fn ipv6_multicast_source_is_bad_source() {
    let src = "ff02::1".parse().unwrap();
    let p = icmpv6_echo_request(src, SERVER_V6, 1, 1, b"x");
    assert_drop(&p, DropReason::BadSource);
}

#[test]
fn multicast_and_broadcast_destinations_are_bad_destination() {
    let p = icmpv4_echo_request(CLIENT_V4, Ipv4Addr::new(239, 1, 2, 3), 1, 1, b"x");
    assert_drop(&p, DropReason::BadDestination);
    let p = icmpv4_echo_request(CLIENT_V4, Ipv4Addr::BROADCAST, 1, 1, b"x");
    assert_drop(&p, DropReason::BadDestination);
    let p = icmpv6_echo_request(CLIENT_V6, "ff02::2".parse().unwrap(), 1, 1, b"x");
    assert_drop(&p, DropReason::BadDestination);
}

#[test]
fn destination_outside_routed_prefixes_is_not_routed() {
    let config = EngineConfig {
        routed: vec![
            "198.51.100.0/24".parse::<IpCidr>().unwrap(),
            "2001:db8:1::/48".parse::<IpCidr>().unwrap(),
        ],
        ..EngineConfig::default()
    };
    let mut e = engine_with(config.clone());
    assert_dropped_as(&mut e, &ping_v4(), DropReason::NotRouted);
    let mut e = engine_with(config);
    let inside = icmpv4_echo_request(CLIENT_V4, Ipv4Addr::new(198, 51, 100, 7), 1, 1, b"x");
    e.handle_packet(&inside, Instant::ZERO);
    assert_eq!(e.counters().total_drops(), 0);
    assert_eq!(
        drain_packets(&mut e, Instant::ZERO).len(),
        1,
        "routed destination answered"
    );
}

#[test]
fn empty_routed_list_means_every_destination() {
    let mut e = engine_with(EngineConfig::default());
    e.handle_packet(&ping_v4(), Instant::ZERO);
    assert_eq!(e.counters().total_drops(), 0);
}

#[test]
fn gre_is_unsupported_protocol() {
    assert_drop(
        &ipv4(CLIENT_V4, SERVER_V4, 47, &[0; 8]),
        DropReason::UnsupportedProtocol,
    );
}

#[test]
fn icmpv6_over_ipv4_is_unsupported_protocol() {
    assert_drop(
        &ipv4(CLIENT_V4, SERVER_V4, 58, &[128, 0, 0, 0, 0, 0, 0, 0]),
        DropReason::UnsupportedProtocol,
    );
}

#[test]
fn short_tcp_header_is_malformed_transport() {
    assert_drop(
        &ipv4(CLIENT_V4, SERVER_V4, 6, &[0; 10]),
        DropReason::MalformedTransport,
    );
}

#[test]
fn udp_length_beyond_packet_is_malformed_transport() {
    let mut u = udp_segment(CLIENT_V4.into(), SERVER_V4.into(), 1000, 2000, b"hello");
    u[4..6].copy_from_slice(&100u16.to_be_bytes());
    assert_drop(
        &ipv4(CLIENT_V4, SERVER_V4, 17, &u),
        DropReason::MalformedTransport,
    );
}

#[test]
fn short_icmp_is_malformed_transport() {
    assert_drop(
        &ipv4(CLIENT_V4, SERVER_V4, 1, &[8, 0, 0xf7]),
        DropReason::MalformedTransport,
    );
}

#[test]
fn wrong_udp_checksum_is_bad_transport_checksum() {
    let mut u = udp_segment(CLIENT_V4.into(), SERVER_V4.into(), 1000, 2000, b"hello");
    u[8] ^= 1;
    assert_drop(
        &ipv4(CLIENT_V4, SERVER_V4, 17, &u),
        DropReason::BadTransportChecksum,
    );
}

#[test]
fn zero_udp_checksum_over_ipv6_is_bad_transport_checksum() {
    let mut u = udp_segment(CLIENT_V6.into(), SERVER_V6.into(), 1000, 53, b"q");
    u[6] = 0;
    u[7] = 0;
    assert_drop(
        &ipv6(CLIENT_V6, SERVER_V6, 17, &u),
        DropReason::BadTransportChecksum,
    );
}

#[test]
fn wrong_tcp_checksum_is_bad_transport_checksum() {
    // A SYN 198.18.0.1:40000 -> 203.0.113.5:80 with a deliberately wrong checksum.
    let seg = [
        0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0xde, 0xad, 0, 0,
    ];
    assert_drop(
        &ipv4(CLIENT_V4, SERVER_V4, 6, &seg),
        DropReason::BadTransportChecksum,
    );
}

#[test]
fn udp_table_full_drops_new_mappings_only() {
    let mut e = engine_with(EngineConfig {
        max_udp_mappings: 1,
        ..EngineConfig::default()
    });
    let a = udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 1000, 2000, b"a");
    let b = udp_packet(CLIENT_V4.into(), SERVER_V4.into(), 1001, 2000, b"b");
    e.handle_packet(&a, Instant::ZERO);
    assert_eq!(drain_events(&mut e).len(), 1);
    assert_dropped_as(&mut e, &b, DropReason::UdpTableFull);
    e.handle_packet(&a, Instant::ZERO);
    assert_eq!(
        drain_events(&mut e).len(),
        1,
        "existing mapping still works"
    );
}

#[test]
fn drop_reason_names_are_unique_snake_case() {
    let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert!(names.iter().all(|n| n
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')));
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), DropReason::COUNT);
}

#[test]
fn trailing_bytes_after_ipv4_total_length_are_ignored() {
    let mut e = engine_with(EngineConfig::default());
    let mut p = ping_v4();
    p.extend_from_slice(&[0xee; 6]); // link padding
    e.handle_packet(&p, Instant::ZERO);
    let out = drain_packets(&mut e, Instant::ZERO);
    assert_eq!(out.len(), 1);
    assert_eq!(check_packet(&out[0]).dst, IpAddr::from(CLIENT_V4));
}

#[test]
fn replies_beyond_the_outbound_queue_are_tx_queue_full() {
    let mut e = engine_with(EngineConfig {
        tx_queue_len: 2,
        ..EngineConfig::default()
    });
    for _ in 0..5 {
        e.handle_packet(&ping_v4(), Instant::ZERO);
    }
    assert_eq!(e.counters().drops(DropReason::TxQueueFull), 3);
    assert_eq!(drain_packets(&mut e, Instant::ZERO).len(), 2);
}

#[test]
fn rejected_destinations_get_a_rst_or_an_unreachable_and_open_nothing() {
    let mut e = engine_with(EngineConfig {
        reject: vec!["203.0.113.0/24".parse().unwrap(), "::/0".parse().unwrap()],
        ..EngineConfig::default()
    });
    // TCP: a RST from the destination, and no flow.
    let syn = tcp_packet(CLIENT_V4, SERVER_V4, 40000, 443, 1000, 0, SYN, &[], &[]);
    e.handle_packet(&syn, Instant::ZERO);
    let out = drain_packets(&mut e, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let rst = check_packet(&out[0]);
    assert_eq!(
        (rst.src, rst.dst, rst.proto),
        (SERVER_V4.into(), CLIENT_V4.into(), 6)
    );
    assert_eq!(rst.payload[13] & 0x04, 0x04, "RST flag");
    assert_eq!(
        &rst.payload[8..12],
        &1001_u32.to_be_bytes(),
        "acknowledges the SYN"
    );
    // UDP over IPv6: ICMPv6 administratively prohibited (1/1), which a
    // socket reports at once (EACCES), quoting the datagram.
    let udp = udp_packet(CLIENT_V6.into(), SERVER_V6.into(), 5353, 53, b"q");
    e.handle_packet(&udp, Instant::ZERO);
    let out = drain_packets(&mut e, Instant::ZERO);
    let icmp = check_packet(&out[0]);
    assert_eq!(
        (icmp.src, icmp.dst, icmp.proto),
        (SERVER_V6.into(), CLIENT_V6.into(), 58)
    );
    assert_eq!(&icmp.payload[..2], [1, 1]);
    // An echo request is dropped without an answer.
    e.handle_packet(
        &icmpv4_echo_request(CLIENT_V4, SERVER_V4, 1, 1, b"p"),
        Instant::ZERO,
    );
    assert!(drain_packets(&mut e, Instant::ZERO).is_empty());
    assert!(
        drain_events(&mut e).is_empty(),
        "nothing reached the daemon"
    );
    assert_eq!(e.counters().drops(DropReason::Rejected), 3);
    assert_eq!((e.tcp_flow_count(), e.udp_mapping_count()), (0, 0));
    // Destinations outside the list are terminated as usual.
    let other = Ipv4Addr::new(198, 51, 100, 9);
    e.handle_packet(
        &tcp_packet(CLIENT_V4, other, 40001, 443, 1, 0, SYN, &[], &[]),
        Instant::ZERO,
    );
    assert_eq!(e.tcp_flow_count(), 1);
}

#[test]
fn every_drop_reason_has_a_test_in_this_file() {
    // Reasons covered elsewhere: TcpFlowLimit (tests/tcp.rs), EchoPolicyDrop
    // and IcmpNotEcho (tests/icmp.rs).
    let file = include_str!("drops.rs");
    // Only the tests above this one count.
    let tests = &file[..file
        .find("fn every_drop_reason_has_a_test_in_this_file")
        .unwrap()];
    let elsewhere = [
        DropReason::TcpFlowLimit,
        DropReason::EchoPolicyDrop,
        DropReason::IcmpNotEcho,
    ];
    for r in DropReason::ALL {
        let name = format!("DropReason::{r:?}");
        assert!(
            elsewhere.contains(&r) || tests.contains(&name),
            "no test for {name}"
        );
    }
}
