//! Throughput of the engine on one core: echo replies per second, and TCP bulk
//! transfer through the engine with a smoltcp client on the other side of an
//! in-memory link (both stacks, and pattern generation/verification on both
//! ends, run on the same core, so the figure is a lower bound for the engine).
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/harness/mod.rs"]
mod harness;

use std::net::{Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use harness::{DaemonScript, Harness};
use ztun_engine::{Duration, EchoPolicy, Engine, EngineConfig, Instant};

/// The 84-byte echo request of the regression test (198.18.0.1 -> 203.0.113.5).
const REQUEST: [u8; 84] = [
    0x45, 0x00, 0x00, 0x54, 0x3c, 0x2a, 0x00, 0x00, 0x40, 0x01, 0x3c, 0x66, 0xc6, 0x12, 0x00, 0x01,
    0xcb, 0x00, 0x71, 0x05, 0x08, 0x00, 0x5c, 0xd2, 0x7d, 0x41, 0x00, 0x00, 0x69, 0x2c, 0x5a, 0x8e,
    0x00, 0x0d, 0x6f, 0x21, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13,
    0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23,
    0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33,
    0x34, 0x35, 0x36, 0x37,
];

fn echo(c: &mut Criterion) {
    let mut g = c.benchmark_group("icmp");
    g.throughput(Throughput::Elements(1));
    let mut e = Engine::new(
        EngineConfig {
            echo: EchoPolicy::Reply,
            random_seed: 1,
            ..EngineConfig::default()
        },
        Instant::ZERO,
    )
    .unwrap();
    let mut buf = [0u8; 1500];
    g.bench_function("echo_reply", |b| {
        b.iter(|| {
            e.handle_packet(std::hint::black_box(&REQUEST), Instant::ZERO);
            e.poll_transmit(&mut buf, Instant::ZERO).unwrap()
        });
    });
    g.finish();
}

const BULK: u64 = 16 * 1024 * 1024;

fn setup(upload: bool, mtu: usize, buffers: usize, idle_flows: u16) -> Harness {
    let mut h = Harness::new(EngineConfig {
        mtu,
        tcp_rx_buffer: buffers,
        tcp_tx_buffer: buffers,
        random_seed: 1,
        ..EngineConfig::default()
    });
    // Idle established flows from another client address: they sit in the
    // socket set that smoltcp scans for every segment and every egress poll.
    let idle_client = Ipv4Addr::new(198, 18, 0, 9);
    let server = Ipv4Addr::new(203, 0, 113, 5);
    let mut buf = vec![0u8; 65536];
    for i in 0..idle_flows {
        let port = 10_000 + i;
        let syn = common::tcp_packet(
            idle_client,
            server,
            port,
            443,
            1,
            0,
            common::SYN,
            &[2, 4, 5, 0xb4],
            &[],
        );
        h.engine.handle_packet(&syn, h.now);
        h.engine.poll_transmit(&mut buf, h.now).unwrap();
        let isn = u32::from_be_bytes(buf[24..28].try_into().unwrap());
        let ack = common::tcp_packet(
            idle_client,
            server,
            port,
            443,
            2,
            isn.wrapping_add(1),
            common::ACK,
            &[],
            &[],
        );
        h.engine.handle_packet(&ack, h.now);
        while h.engine.poll_transmit(&mut buf, h.now).is_some() {}
    }
    while h.engine.poll_event().is_some() {}
    h.daemon.script = DaemonScript {
        send: if upload { 0 } else { BULK },
        ..DaemonScript::default()
    };
    let dst = SocketAddr::new(server.into(), 5201);
    h.connect(dst, 40000, if upload { BULK } else { 0 }, buffers);
    h
}

fn run(mut h: Harness) -> Harness {
    let done = h.run_until(Duration::from_secs(3600), |h| {
        h.daemon.flows.values().any(|f| f.closed)
    });
    assert!(done);
    h
}

fn tcp(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp_bulk");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(BULK));
    for (name, mtu, buffers, idle) in [
        ("mtu1500_buf16k", 1500, 16 * 1024, 0),
        ("mtu9000_buf256k", 9000, 256 * 1024, 0),
        ("mtu1500_buf16k_2000_idle_flows", 1500, 16 * 1024, 2000),
    ] {
        for upload in [true, false] {
            let dir = if upload { "upload" } else { "download" };
            g.bench_function(format!("{dir}_{name}"), |b| {
                b.iter_batched(
                    || setup(upload, mtu, buffers, idle),
                    run,
                    BatchSize::PerIteration,
                );
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(5));
    targets = echo, tcp
}
criterion_main!(benches);
