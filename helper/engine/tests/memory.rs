//! Memory budget: 10,000 concurrent idle TCP flows must fit in 256 MiB.
//! Ignored by default (it takes a few seconds in debug builds); run with
//! `cargo test -p ztun-engine --release --test memory -- --ignored --nocapture`.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ACK, CLIENT_V4, SERVER_V4, SYN};
use ztun_engine::{Engine, EngineConfig, Event, Instant};

/// Resident set size of this process in bytes (Linux `/proc`).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Open `flows` established, idle flows; return (engine, RSS growth in bytes).
fn open_idle_flows(config: EngineConfig, flows: u16) -> (Engine, Option<u64>) {
    let mut e = Engine::new(config, Instant::ZERO).unwrap();
    let mut buf = vec![0u8; 2048];
    let before = rss_bytes();
    for i in 0..flows {
        let port = 20_000 + i;
        let syn = common::tcp_packet(
            CLIENT_V4,
            SERVER_V4,
            port,
            443,
            1000,
            0,
            SYN,
            &[2, 4, 5, 0xb4],
            &[],
        );
        e.handle_packet(&syn, Instant::ZERO);
        let n = e.poll_transmit(&mut buf, Instant::ZERO).expect("SYN-ACK");
        let isn = u32::from_be_bytes(buf[24..28].try_into().unwrap());
        assert!(
            e.poll_transmit(&mut buf, Instant::ZERO).is_none(),
            "one SYN-ACK, {n} bytes"
        );
        let ack = common::tcp_packet(
            CLIENT_V4,
            SERVER_V4,
            port,
            443,
            1001,
            isn.wrapping_add(1),
            ACK,
            &[],
            &[],
        );
        e.handle_packet(&ack, Instant::ZERO);
        while e.poll_transmit(&mut buf, Instant::ZERO).is_some() {}
    }
    let events: Vec<_> = std::iter::from_fn(|| e.poll_event()).collect();
    let opened = events
        .iter()
        .filter(|ev| matches!(ev, Event::TcpOpened { .. }))
        .count();
    assert_eq!(opened, usize::from(flows));
    assert_eq!(e.tcp_flow_count(), usize::from(flows));
    let grown = before.zip(rss_bytes()).map(|(b, a)| a.saturating_sub(b));
    (e, grown)
}

/// Per-flow cost outside the two socket buffers (smoltcp socket, socket-set
/// slot, flow-table entries), measured with 64-byte buffers.
#[test]
#[ignore = "measures memory; run explicitly with --ignored --nocapture"]
fn per_flow_bookkeeping_is_under_2_kib() {
    let config = EngineConfig {
        random_seed: 3,
        tcp_rx_buffer: 64,
        tcp_tx_buffer: 64,
        ..EngineConfig::default()
    };
    let (_e, grown) = open_idle_flows(config, 10_000);
    if let Some(grown) = grown {
        let per_flow = grown / 10_000 - 128;
        println!("bookkeeping per flow: {per_flow} B");
        assert!(per_flow < 2048, "{per_flow} B per flow");
    }
}

#[test]
#[ignore = "measures memory; run explicitly with --ignored --nocapture"]
fn ten_thousand_idle_tcp_flows_fit_in_256_mib() {
    let flows = 10_000u64;
    let config = EngineConfig {
        random_seed: 3,
        ..EngineConfig::default()
    };
    let (e, grown) = open_idle_flows(config, 10_000);
    let buffers = e.tcp_buffer_bytes_per_flow() as u64 * flows;
    println!("flows: {flows}");
    println!(
        "socket buffers allocated: {} MiB ({} B per flow)",
        buffers >> 20,
        buffers / flows
    );
    if let Some(grown) = grown {
        println!(
            "RSS grown {} MiB ({} B per flow)",
            grown >> 20,
            grown / flows
        );
        assert!(
            grown < 256 << 20,
            "idle flows grew RSS by {} MiB",
            grown >> 20
        );
    }
    // The bound that holds even when every buffer has been filled once:
    // buffers plus the bookkeeping bound checked above.
    let worst = buffers + flows * 2048;
    println!("worst case (all buffers touched): {} MiB", worst >> 20);
    assert!(worst < 256 << 20, "worst case {} MiB", worst >> 20);
}
