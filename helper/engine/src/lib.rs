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
//!     ip = framing.decode(device.read())?;          // frame::TunFraming
//!     engine.handle_packet(ip, now);
//!     // relay: tcp_recv/tcp_send/udp_send/echo_reply as events ask
//!     while let Some(n) = engine.poll_transmit(&mut buf, now) { device.write(..) }
//!     while let Some(ev) = engine.poll_event() { .. }  // also after poll_transmit:
//!                                                      // timeouts surface there
//!     sleep until engine.poll_at(), the next frame, or upstream readiness
//! }
//! ```
//!
//! - IPv4 and IPv6. Invalid packets are counted per [`DropReason`] and dropped;
//!   IP fragments are dropped ([`DropReason::Fragment`]), not reassembled: the
//!   tunnel MTU is ztun's choice, so clients have no reason to fragment.
//! - TCP: one smoltcp socket, in its own `SocketSet`, per 4-tuple (see the
//!   `tcp` module for why); bounded buffers with backpressure, half-close both
//!   ways, RST both ways, idle / handshake / unacknowledged-data timeouts, and
//!   a flow cap answered with RST. MSS follows the MTU.
//! - UDP: a mapping per 4-tuple with idle timeouts (60 s, 10 s for port 53),
//!   bounded in number; payloads pass through untouched.
//! - ICMP/`ICMPv6` echo per [`EchoPolicy`]; other ICMP counted and dropped.
//! - Hot path: packet buffers of the outbound queue are recycled; a TCP
//!   segment allocates nothing. UDP datagrams and forwarded echo requests
//!   carry their payload in a `Vec` inside the event.
//!
//! Memory per TCP flow: its two buffers (`tcp_rx_buffer + tcp_tx_buffer`,
//! 8 + 16 KiB by default) plus about 1.4 KiB of socket and table state
//! (measured), so the default cap of 10,000 flows stays under 256 MiB even with
//! every buffer full; idle flows measured 18 KiB resident each. A UDP mapping
//! costs about 200 bytes (two hash-map entries; estimated from their sizes,
//! not measured). Figures: `docs/benchmarks.md`.
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
    FlowId, Received, UdpDatagram, Unreachable,
};
