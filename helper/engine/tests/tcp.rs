//! TCP termination, driven by a real smoltcp client over an in-memory link
//! with a simulated clock (see `harness`), plus byte-level handshake checks.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use harness::{DaemonScript, Faults, Fnv, Harness, CLIENT_SEED, SERVER_SEED};
use smoltcp::socket::tcp::State;
use ztun_engine::{DropReason, Duration, Engine, EngineConfig, Event, FlowError, Instant};

const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const MIB: u64 = 1024 * 1024;

fn config() -> EngineConfig {
    EngineConfig {
        random_seed: 42,
        ..EngineConfig::default()
    }
}

fn checked(config: EngineConfig) -> Harness {
    let mut h = Harness::new(config);
    h.checker = Some(|p| {
        common::check_packet(p);
    });
    h
}

fn server(port: u16) -> SocketAddr {
    SocketAddr::new(SERVER.into(), port)
}

/// A SYN from 198.18.0.1:40000 to 203.0.113.5:80 with MSS 1460, window scale
/// 7 and SACK-permitted, checksummed by the test's own code.
fn syn_with_options(seq: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&80u16.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x80, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // 32-byte header, SYN, window 65535
    t.extend_from_slice(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0]); // MSS, NOP, WS 7, SACK-perm, EOL pad
    let ph = common::pseudo_header(common::CLIENT_V4.into(), SERVER.into(), 6, t.len());
    let c = common::checksum(&[&ph, &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    common::ipv4(common::CLIENT_V4, SERVER, 6, &t)
}

/// TCP options of a segment as (kind, data) pairs.
fn tcp_options(tcp: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let hl = usize::from(tcp[12] >> 4) * 4;
    let mut opts = Vec::new();
    let mut i = 20;
    while i < hl {
        match tcp[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(tcp[i + 1]);
                opts.push((kind, tcp[i + 2..i + len].to_vec()));
                i += len;
            }
        }
    }
    opts
}

#[test]
fn syn_ack_carries_mss_from_tunnel_mtu_and_window_scale() {
    let mut e = Engine::new(
        EngineConfig {
            mtu: 9000,
            tcp_rx_buffer: 256 * 1024,
            ..config()
        },
        Instant::ZERO,
    )
    .unwrap();
    e.handle_packet(&syn_with_options(1000), Instant::ZERO);
    let out = common::drain_packets(&mut e, Instant::ZERO);
    assert_eq!(out.len(), 1, "exactly one SYN-ACK");
    let p = common::check_packet(&out[0]);
    assert_eq!(
        (p.src, p.dst),
        (IpAddr::from(SERVER), IpAddr::from(common::CLIENT_V4))
    );
    let tcp = &p.payload;
    assert_eq!(&tcp[0..2], &80u16.to_be_bytes());
    assert_eq!(&tcp[2..4], &40000u16.to_be_bytes());
    assert_eq!(tcp[13] & 0x3f, 0x12, "SYN|ACK");
    assert_eq!(&tcp[8..12], &1001u32.to_be_bytes(), "acknowledges the SYN");
    let opts = tcp_options(tcp);
    assert!(
        opts.contains(&(2, (9000u16 - 40).to_be_bytes().to_vec())),
        "MSS = MTU - 40: {opts:?}"
    );
    // 256 KiB needs a shift of 3 to be advertised in 16 bits.
    assert!(opts.contains(&(3, vec![3])), "window scale: {opts:?}");
    let events = common::drain_events(&mut e);
    assert!(matches!(
        events[..],
        [Event::TcpOpened { src, dst, .. }] if src == SocketAddr::new(common::CLIENT_V4.into(), 40000) && dst == server(80)
    ));
    assert_eq!(e.tcp_flow_count(), 1);
}

#[test]
fn retransmitted_syn_does_not_open_a_second_flow() {
    let mut e = Engine::new(config(), Instant::ZERO).unwrap();
    e.handle_packet(&syn_with_options(1000), Instant::ZERO);
    e.handle_packet(&syn_with_options(1000), Instant::ZERO);
    assert_eq!(common::drain_events(&mut e).len(), 1);
    assert_eq!(e.tcp_flow_count(), 1);
}

#[test]
fn segment_for_unknown_flow_is_answered_with_rst() {
    let mut e = Engine::new(config(), Instant::ZERO).unwrap();
    let mut t = Vec::new();
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&80u16.to_be_bytes());
    t.extend_from_slice(&5u32.to_be_bytes());
    t.extend_from_slice(&9u32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x10, 0x10, 0x00, 0, 0, 0, 0]); // ACK
    let ph = common::pseudo_header(common::CLIENT_V4.into(), SERVER.into(), 6, t.len());
    let c = common::checksum(&[&ph, &t]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    e.handle_packet(
        &common::ipv4(common::CLIENT_V4, SERVER, 6, &t),
        Instant::ZERO,
    );
    let out = common::drain_packets(&mut e, Instant::ZERO);
    assert_eq!(out.len(), 1);
    let p = common::check_packet(&out[0]);
    assert_eq!(p.payload[13] & 0x04, 0x04, "RST");
    assert_eq!(&p.payload[4..8], &9u32.to_be_bytes(), "RST seq = their ACK");
    assert!(common::drain_events(&mut e).is_empty());
    assert_eq!(e.tcp_flow_count(), 0);
}

#[test]
fn handshake_opens_flow_with_client_and_destination() {
    let mut h = checked(config());
    let c = h.connect(server(443), 40001, 0, 8192);
    h.conns[c].shutdown_after_send = false;
    h.daemon.script.shutdown_after_send = false;
    assert!(h.run_until(Duration::from_secs(5), |h| h.daemon.log.len() >= 2));
    assert_eq!(h.client_socket(c).state(), State::Established);
    let log = &h.daemon.log;
    assert!(
        matches!(
            log[0],
            Event::TcpOpened { src, dst, .. } if src == SocketAddr::new(harness::CLIENT_V4.into(), 40001) && dst == server(443)
        ),
        "{log:?}"
    );
    assert!(matches!(log[1], Event::TcpWritable { .. }), "{log:?}");
    assert_eq!(h.engine.counters().tcp_flows_opened, 1);
}

#[test]
fn bulk_transfer_10_mib_both_ways_with_content_checksums() {
    let mut h = checked(EngineConfig {
        mtu: 9000,
        tcp_rx_buffer: 256 * 1024,
        tcp_tx_buffer: 256 * 1024,
        ..config()
    });
    h.daemon.script = DaemonScript {
        send: 10 * MIB,
        ..DaemonScript::default()
    };
    let c = h.connect(server(5201), 40002, 10 * MIB, 256 * 1024);
    let done = h.run_until(Duration::from_secs(600), |h| {
        h.daemon.flows.values().any(|f| f.closed)
            && matches!(h.client_socket(c).state(), State::TimeWait | State::Closed)
    });
    let f = h.daemon.flows.values().next().unwrap();
    assert!(
        done,
        "transfer finished: daemon got {} B, client got {} B",
        f.received.bytes, h.conns[c].received.bytes
    );
    assert_eq!(f.received.mismatch_at, None);
    assert_eq!(f.received.bytes, 10 * MIB);
    assert_eq!(f.received.hash, Fnv::of_pattern(CLIENT_SEED, 10 * MIB));
    let r = &h.conns[c].received;
    assert_eq!(r.mismatch_at, None);
    assert_eq!(r.bytes, 10 * MIB);
    assert_eq!(r.hash, Fnv::of_pattern(SERVER_SEED, 10 * MIB));
    assert!(f.read_closed && f.closed && !f.reset);
}

#[test]
fn a_stream_sent_as_tcp_super_segments_arrives_whole() {
    let mut h = checked(EngineConfig {
        mtu: 1500,
        tcp_rx_buffer: 64 * 1024,
        ..config()
    });
    h.faults.super_segments = true;
    h.daemon.script = DaemonScript {
        send: MIB,
        ..DaemonScript::default()
    };
    let c = h.connect(server(5201), 40003, 4 * MIB, 256 * 1024);
    let done = h.run_until(Duration::from_secs(600), |h| {
        h.daemon.flows.values().any(|f| f.closed)
            && matches!(h.client_socket(c).state(), State::TimeWait | State::Closed)
    });
    let f = h.daemon.flows.values().next().unwrap();
    assert!(done, "daemon got {} B", f.received.bytes);
    assert_eq!(f.received.mismatch_at, None);
    assert_eq!(f.received.bytes, 4 * MIB);
    assert_eq!(f.received.hash, Fnv::of_pattern(CLIENT_SEED, 4 * MIB));
    assert_eq!(h.conns[c].received.hash, Fnv::of_pattern(SERVER_SEED, MIB));
    assert!(
        h.super_segments > 20,
        "the stream went mostly as super-segments: {}",
        h.super_segments
    );
    assert_eq!(h.engine.counters().total_drops(), 0);
}

#[test]
fn client_half_close_then_daemon_keeps_sending() {
    let mut h = checked(config());
    h.daemon.script = DaemonScript {
        send: 300_000,
        send_after_read_closed: true,
        ..DaemonScript::default()
    };
    let c = h.connect(server(80), 40003, 1000, 16384);
    assert!(h.run_until(Duration::from_secs(60), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.closed)));
    let f = h.daemon.flows.values().next().unwrap();
    assert_eq!(f.received.bytes, 1000);
    assert!(f.read_closed);
    assert_eq!(
        h.conns[c].received.bytes, 300_000,
        "data flowed after the client's FIN"
    );
    assert_eq!(h.conns[c].received.mismatch_at, None);
    let kinds: Vec<_> = h.daemon.log.iter().map(std::mem::discriminant).collect();
    let read_closed = kinds.iter().position(|k| {
        *k == std::mem::discriminant(&Event::TcpReadClosed {
            flow: h.daemon.opened[0],
        })
    });
    let last_readable = kinds.iter().rposition(|k| {
        *k == std::mem::discriminant(&Event::TcpReadable {
            flow: h.daemon.opened[0],
        })
    });
    assert!(
        last_readable < read_closed,
        "data before EOF: {:?}",
        h.daemon.log
    );
}

#[test]
fn daemon_half_close_then_client_keeps_sending() {
    let mut h = checked(config());
    h.daemon.script = DaemonScript {
        send: 10,
        ..DaemonScript::default()
    };
    let c = h.connect(server(80), 40004, 0, 16384);
    h.conns[c].shutdown_after_send = false;
    // Wait for the daemon's FIN to reach the client.
    assert!(
        h.run_until(Duration::from_secs(10), |h| h.client_socket(c).state()
            == State::CloseWait)
    );
    assert_eq!(h.conns[c].received.bytes, 10);
    // The client now sends 500 kB on its still-open half, then closes.
    h.conns[c].send = 500_000;
    h.conns[c].shutdown_after_send = true;
    assert!(h.run_until(Duration::from_secs(60), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.closed)));
    let f = h.daemon.flows.values().next().unwrap();
    assert_eq!(f.received.bytes, 500_000);
    assert_eq!(f.received.mismatch_at, None);
    assert!(f.read_closed && !f.reset);
}

#[test]
fn client_rst_surfaces_as_tcp_reset() {
    let mut h = checked(config());
    let c = h.connect(server(80), 40005, 0, 8192);
    h.conns[c].shutdown_after_send = false;
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.client_socket(c).state()
            == State::Established)
    );
    let handle = h.conns[c].handle;
    h.sockets
        .get_mut::<smoltcp::socket::tcp::Socket<'static>>(handle)
        .abort();
    assert!(h.run_until(Duration::from_secs(5), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.reset)));
    let flow = h.daemon.opened[0];
    assert_eq!(
        h.engine.tcp_send(flow, b"x"),
        Err(FlowError::UnknownFlow(flow))
    );
    assert!(h.run_until(Duration::from_secs(5), |h| h.engine.tcp_flow_count() == 0));
}

#[test]
fn daemon_abort_sends_rst_to_client() {
    let mut h = checked(config());
    h.daemon.script.abort_on_open = true;
    let c = h.connect(server(81), 40006, 100, 8192);
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.client_socket(c).state()
            == State::Closed)
    );
    assert_eq!(h.conns[c].received.bytes, 0);
    // Aborted flows emit nothing further.
    assert_eq!(h.daemon.log.len(), 1, "{:?}", h.daemon.log);
    assert!(h.run_until(Duration::from_secs(5), |h| h.engine.tcp_flow_count() == 0));
}

#[test]
fn many_parallel_flows_to_one_destination_each_get_their_own_socket() {
    let mut h = checked(config());
    h.daemon.script = DaemonScript {
        send: 20_000,
        ..DaemonScript::default()
    };
    let n = 200u16;
    for i in 0..n {
        // Every client sends a different amount, so crossed flows would show.
        h.connect(server(443), 41000 + i, 1000 + u64::from(i) * 37, 4096);
    }
    assert!(h.run_until(Duration::from_secs(120), |h| h
        .daemon
        .flows
        .values()
        .filter(|f| f.closed)
        .count()
        == usize::from(n)));
    for (i, c) in h.conns.iter().enumerate() {
        assert_eq!(c.received.bytes, 20_000, "conn {i}");
        assert_eq!(c.received.mismatch_at, None);
    }
    for f in h.daemon.flows.values() {
        let port = f.src.unwrap().port();
        assert_eq!(
            f.received.bytes,
            1000 + u64::from(port - 41000) * 37,
            "flow from port {port}"
        );
        assert_eq!(f.received.mismatch_at, None);
    }
    assert_eq!(h.engine.counters().tcp_flows_opened, u64::from(n));
}

#[test]
fn loss_and_reordering_preserve_content() {
    let mut h = checked(config());
    h.faults = Faults {
        loss_permille: 20,
        reorder_permille: 50,
        ..Faults::default()
    };
    h.daemon.script = DaemonScript {
        send: MIB,
        ..DaemonScript::default()
    };
    let mut conns = Vec::new();
    for i in 0..4 {
        conns.push(h.connect(server(8080), 42000 + i, MIB / 2, 16384));
    }
    let done = h.run_until(Duration::from_secs(900), |h| {
        h.daemon.flows.len() == 4
            && h.daemon
                .flows
                .values()
                .all(|f| f.closed && f.received.bytes == MIB / 2)
            && h.conns.iter().all(|c| c.received.bytes == MIB)
    });
    assert!(
        done,
        "{:?}",
        h.daemon
            .flows
            .values()
            .map(|f| f.received.bytes)
            .collect::<Vec<_>>()
    );
    for c in &h.conns {
        assert_eq!(c.received.hash, Fnv::of_pattern(SERVER_SEED, MIB));
    }
    for f in h.daemon.flows.values() {
        assert_eq!(f.received.hash, Fnv::of_pattern(CLIENT_SEED, MIB / 2));
    }
}

#[test]
fn ipv6_flow_transfers_data() {
    let mut h = checked(config());
    h.daemon.script = DaemonScript {
        send: 100_000,
        ..DaemonScript::default()
    };
    let dst = SocketAddr::new("2001:db8:ffff::5".parse().unwrap(), 443);
    let c = h.connect(dst, 40007, 100_000, 16384);
    assert!(h.run_until(Duration::from_secs(60), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.closed)));
    let f = h.daemon.flows.values().next().unwrap();
    assert_eq!(f.dst, Some(dst));
    assert_eq!(f.received.bytes, 100_000);
    assert_eq!(h.conns[c].received.bytes, 100_000);
}

#[test]
fn syn_beyond_flow_cap_is_reset_and_counted() {
    let mut h = checked(EngineConfig {
        max_tcp_flows: 2,
        ..config()
    });
    for i in 0..3 {
        let c = h.connect(server(80), 43000 + i, 0, 4096);
        h.conns[c].shutdown_after_send = false;
    }
    h.run_until(Duration::from_secs(5), |h| {
        h.client_socket(2).state() == State::Closed
    });
    assert_eq!(h.client_socket(0).state(), State::Established);
    assert_eq!(h.client_socket(1).state(), State::Established);
    assert_eq!(
        h.client_socket(2).state(),
        State::Closed,
        "third refused with RST"
    );
    assert_eq!(h.engine.counters().drops(DropReason::TcpFlowLimit), 1);
    assert_eq!(h.daemon.opened.len(), 2);
}

#[test]
fn idle_flow_is_reset_after_idle_timeout() {
    let mut h = checked(EngineConfig {
        tcp_idle_timeout: Duration::from_secs(30),
        ..config()
    });
    let c = h.connect(server(80), 40008, 0, 4096);
    h.conns[c].shutdown_after_send = false;
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.client_socket(c).state()
            == State::Established)
    );
    assert!(!h.run_until(Duration::from_secs(20), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.reset)));
    assert!(h.run_until(Duration::from_secs(15), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.reset)));
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.client_socket(c).state()
            == State::Closed),
        "client got RST"
    );
}

#[test]
fn vanished_client_with_unacked_data_is_reset() {
    let mut h = checked(config());
    h.daemon.script = DaemonScript {
        send: 1_000_000,
        shutdown_after_send: false,
        ..DaemonScript::default()
    };
    let c = h.connect(server(80), 40010, 0, 4096);
    h.conns[c].shutdown_after_send = false;
    assert!(h.run_until(Duration::from_secs(5), |h| h.conns[0].received.bytes > 0));
    // The client disappears: nothing crosses the link any more.
    h.faults.loss_permille = 1000;
    assert!(!h.run_until(Duration::from_secs(100), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.reset)));
    assert!(h.run_until(Duration::from_secs(60), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.reset)));
}

#[test]
fn handshake_never_completed_is_dropped_after_timeout() {
    let mut e = Engine::new(config(), Instant::ZERO).unwrap();
    e.handle_packet(&syn_with_options(1), Instant::ZERO);
    let flow = match common::drain_events(&mut e)[..] {
        [Event::TcpOpened { flow, .. }] => flow,
        ref other => panic!("{other:?}"),
    };
    let mut t = Instant::ZERO;
    while t < Instant::from_secs(25) {
        common::drain_packets(&mut e, t);
        t += Duration::from_millis(500);
    }
    assert_eq!(common::drain_events(&mut e), vec![Event::TcpReset { flow }]);
    common::drain_packets(&mut e, t + Duration::from_secs(2));
    assert_eq!(e.tcp_flow_count(), 0);
}

#[test]
fn backpressure_send_returns_what_fit() {
    let mut h = checked(EngineConfig {
        tcp_tx_buffer: 4096,
        ..config()
    });
    h.daemon.script.shutdown_after_send = false;
    let c = h.connect(server(80), 40009, 0, 4096);
    h.conns[c].shutdown_after_send = false;
    assert!(h.run_until(Duration::from_secs(5), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.writable)));
    let flow = h.daemon.opened[0];
    assert_eq!(h.engine.tcp_send(flow, &[0u8; 10_000]), Ok(4096));
    assert_eq!(h.engine.tcp_send(flow, &[0u8; 10]), Ok(0));
}

#[test]
fn new_syn_on_a_tuple_in_time_wait_opens_a_fresh_flow() {
    let mut h = checked(config());
    h.daemon.script = DaemonScript {
        send: 10,
        ..DaemonScript::default()
    };
    // First connection: the daemon closes first, so the engine's socket ends
    // in TIME-WAIT once the client closes too.
    let first = h.connect(server(80), 45000, 0, 4096);
    h.conns[first].shutdown_after_send = false;
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.client_socket(first).state()
            == State::CloseWait)
    );
    h.conns[first].shutdown_after_send = true;
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.client_socket(first).state()
            == State::Closed)
    );
    assert!(
        h.daemon.flows.values().all(|f| f.closed),
        "{:?}",
        h.daemon.log
    );
    assert_eq!(h.engine.tcp_flow_count(), 1, "lingering in TIME-WAIT");
    // The client reuses the port at once.
    let second = h.connect(server(80), 45000, 0, 4096);
    h.conns[second].shutdown_after_send = false;
    assert!(
        h.run_until(Duration::from_secs(5), |h| h.conns[second].received.bytes
            == 10)
    );
    assert_eq!(h.daemon.opened.len(), 2);
    assert_ne!(h.daemon.opened[0], h.daemon.opened[1]);
}

#[test]
fn readable_is_edge_triggered_and_backpressures_the_client() {
    let mut h = checked(config());
    h.daemon.script = DaemonScript {
        ignore_readable: true,
        shutdown_after_send: false,
        ..DaemonScript::default()
    };
    let c = h.connect(server(80), 40011, 100_000, 4096);
    h.conns[c].shutdown_after_send = false;
    let readable = |h: &Harness| {
        h.daemon
            .log
            .iter()
            .filter(|e| matches!(e, Event::TcpReadable { .. }))
            .count()
    };
    // The daemon does not read: the receive buffer (8 KiB) fills, the client
    // stalls on a zero window, and the event is not repeated.
    h.run_until(Duration::from_secs(5), |_| false);
    assert_eq!(readable(&h), 1);
    assert!(h.conns[c].sent < 100_000, "client held back by the window");
    // Draining re-arms the event, and the transfer resumes to the end.
    let flow = h.daemon.opened[0];
    h.daemon.read_all(&mut h.engine, flow);
    assert!(h.run_until(Duration::from_secs(5), |h| readable(h) == 2));
    for _ in 0..200 {
        h.daemon.read_all(&mut h.engine, flow);
        h.run_until(Duration::from_millis(20), |_| false);
    }
    let f = &h.daemon.flows[&flow];
    assert_eq!(f.received.bytes, 100_000);
    assert_eq!(f.received.mismatch_at, None);
}

#[test]
fn a_flow_closed_on_both_sides_is_freed_at_once_not_at_the_next_sweep() {
    let mut h = checked(config());
    // The client closes first; the daemon answers after the client's FIN
    // and closes too, so the engine's socket ends in LAST-ACK, then CLOSED.
    h.daemon.script = DaemonScript {
        send: 10,
        send_after_read_closed: true,
        ..DaemonScript::default()
    };
    let c = h.connect(server(80), 45100, 100, 4096);
    assert!(h.run_until(Duration::from_secs(5), |h| h
        .daemon
        .flows
        .values()
        .any(|f| f.closed)));
    assert_eq!(h.conns[c].received.bytes, 10);
    assert_eq!(
        h.engine.tcp_flow_count(),
        0,
        "its buffers are freed when smoltcp is done, not up to a second later"
    );
}
