//! ztun-engine: the sans-IO packet engine behind a ztun tunnel.
//!
//! It terminates the TCP, UDP and ICMP echo flows a tunnel client sends and
//! hands their contents to the daemon, which relays them from its own sockets
//! (NAT by construction, requirement S5). It does no I/O, reads no clock and
//! knows no OS: the daemon feeds bare IP packets and the current time, and
//! drains packets, events and flow data.
//!
//! ```text
//! loop {
//!     frame = device.read();                       // strip with TunFraming::decode
//!     engine.handle_packet(ip, now);
//!     while let Some(ev) = engine.poll_event() { /* open/relay/close upstream */ }
//!     while let Some(n) = engine.poll_transmit(&mut buf, now) { device.write(..) }
//!     sleep until engine.poll_at() or the next frame or upstream readiness
//! }
//! ```
//!
//! - IPv4 and IPv6. Invalid packets are counted per [`DropReason`] and dropped;
//!   IP fragments are dropped, not reassembled (a tunnel MTU chosen by ztun
//!   makes them rare; DESIGN §5 suggests a large utun MTU).
//! - TCP: one smoltcp socket per 4-tuple (see `tcp.rs` for why), bounded
//!   buffers with backpressure, half-close both ways, RST both ways.
//! - UDP: a mapping per 4-tuple with idle timeouts (60 s, 10 s for port 53).
//! - ICMP/`ICMPv6` echo per [`EchoPolicy`]; other ICMP counted and dropped.
//!
//! Memory: a TCP flow costs its two buffers (`tcp_rx_buffer + tcp_tx_buffer`,
//! 32 KiB by default) plus about 1 KiB of socket and table state, so the default
//! 10,000-flow cap is bounded by about 330 MiB even with every buffer full;
//! idle flows touch only a few pages of their buffers (see
//! `docs/benchmarks.md`). A UDP mapping costs about 150 bytes.
#![forbid(unsafe_code)]

mod engine;
pub mod frame;
mod queue;
mod tcp;
mod types;
mod udp;
mod wire;

pub use engine::Engine;
pub use smoltcp::time::{Duration, Instant};
pub use smoltcp::wire::IpCidr;
pub use types::{
    ConfigError, Counters, DropReason, EchoPolicy, EchoRequest, EngineConfig, Event, FlowError,
    FlowId, UdpDatagram,
};
