//! Everything a tunnel client can send reaches `Engine::handle_packet`. The
//! input is a stream of packets, each prefixed by a 2-byte length; the
//! engine answers as a daemon would (echo, UDP replies, TCP data) while time
//! moves on, so flows open, time out and close. Nothing may panic, and what
//! the engine emits must fit the MTU.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztun_engine::{Duration, EchoPolicy, Engine, EngineConfig, Event, Instant};

const MTU: usize = 1500;

fuzz_target!(|data: &[u8]| {
    let config = EngineConfig {
        echo: if data.first().is_some_and(|b| b & 1 == 1) {
            EchoPolicy::Forward
        } else {
            EchoPolicy::Reply
        },
        random_seed: 1,
        max_tcp_flows: 64,
        max_udp_mappings: 64,
        ..EngineConfig::default()
    };
    let Ok(mut engine) = Engine::new(config, Instant::ZERO) else {
        return;
    };
    let mut now = Instant::ZERO;
    let mut out = vec![0_u8; 65_536];
    let mut rest = data.get(1..).unwrap_or_default();
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (packet, tail) = tail.split_at(len);
        rest = tail;
        engine.handle_packet(packet, now);
        while let Some(event) = engine.poll_event() {
            match event {
                Event::UdpDatagram(d) => {
                    let _ = engine.udp_send(d.flow, &d.payload);
                }
                Event::EchoRequest(r) => {
                    let _ = engine.echo_reply(&r, &r.payload);
                }
                Event::TcpOpened { flow, .. } | Event::TcpWritable { flow } => {
                    let _ = engine.tcp_send(flow, b"ztun");
                }
                Event::TcpReadable { flow } => {
                    let mut buf = [0_u8; 2048];
                    while engine.tcp_recv(flow, &mut buf).is_ok_and(|n| n > 0) {}
                }
                Event::TcpReadClosed { flow } => {
                    let _ = engine.tcp_shutdown_write(flow);
                }
                _ => {}
            }
        }
        while let Some(n) = engine.poll_transmit(&mut out, now) {
            assert!(n <= MTU, "emitted {n} bytes over an MTU of {MTU}");
        }
        now += Duration::from_millis(700);
    }
});
