//! Public vocabulary of the engine: configuration, events, flow identifiers,
//! drop reasons and counters. No behaviour lives here.

use std::net::{IpAddr, SocketAddr};

use smoltcp::time::Duration;
use smoltcp::wire::IpCidr;

/// Why a UDP destination cannot be reached, as the client is told with an
/// ICMP (`ICMPv6`) destination-unreachable message: what a router or the
/// destination host would have said without the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
///
/// Linux reports only some codes to a UDP socket without `IP_RECVERR` (the
/// "fatal" ones: port unreachable, administratively prohibited); the host
/// unreachable codes reach the application only if it asked for errors.
pub enum Unreachable {
    /// Nothing listens on the port (ICMP 3/3, `ICMPv6` 1/4).
    Port,
    /// The host or its network cannot be reached (ICMP 3/1, `ICMPv6` 1/3).
    Host,
    /// Policy forbids it, e.g. the SOCKS5 server refuses UDP (ICMP 3/13,
    /// `ICMPv6` 1/1).
    Prohibited,
}

/// What the engine does with an ICMP/`ICMPv6` echo request (requirement S5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EchoPolicy {
    /// Answer locally: the reply is queued for [`Engine::poll_transmit`](crate::Engine::poll_transmit).
    #[default]
    Reply,
    /// Surface an [`Event::EchoRequest`]; the daemon pings the real host and
    /// calls [`Engine::echo_reply`](crate::Engine::echo_reply) with the real reply.
    Forward,
    /// Count and drop.
    Drop,
}

/// Engine configuration. [`Default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tunnel MTU: larger inbound packets are dropped, TCP MSS derives from it,
    /// and [`Engine::poll_transmit`](crate::Engine::poll_transmit) never emits more.
    /// Default 1500; 1280..=65535.
    pub mtu: usize,
    /// Destinations the engine terminates. Empty means every destination.
    pub routed: Vec<IpCidr>,
    /// Destinations refused at once instead: a TCP segment gets a RST, a
    /// UDP datagram an ICMP administratively prohibited, an echo request is
    /// dropped; each is counted as [`DropReason::Rejected`]. Full-tunnel
    /// mode without IPv6 routes IPv6 here so it neither leaks nor hangs:
    /// applications fall back to IPv4 at once. Default empty.
    pub reject: Vec<IpCidr>,
    /// ICMP echo handling.
    pub echo: EchoPolicy,
    /// Maximum concurrent TCP flows (sockets in any state, TIME-WAIT included).
    /// A SYN beyond it is answered with RST and counted. Default 10,000.
    pub max_tcp_flows: usize,
    /// Per-flow receive buffer (client → daemon), bytes; the advertised
    /// window, scaled (RFC 7323) above 64 KiB. Allocated per flow. Default 8 KiB.
    pub tcp_rx_buffer: usize,
    /// Per-flow transmit buffer (daemon → client), bytes. Allocated per flow.
    /// Default 16 KiB.
    pub tcp_tx_buffer: usize,
    /// A flow with no segment in either direction and no API activity for this
    /// long is reset. Default 7440 s (RFC 5382 REQ-5).
    pub tcp_idle_timeout: Duration,
    /// A flow with unacknowledged data whose client sends nothing for this
    /// long is reset (the client vanished). smoltcp's `set_timeout`. Default 120 s.
    pub tcp_unacked_timeout: Duration,
    /// A flow still in SYN-RECEIVED after this long is dropped. Default 20 s.
    pub tcp_handshake_timeout: Duration,
    /// Maximum UDP mappings. A datagram needing a new one beyond it is dropped.
    /// Default 4096.
    pub max_udp_mappings: usize,
    /// Idle timeout of a UDP mapping. Default 60 s.
    pub udp_idle_timeout: Duration,
    /// Idle timeout of a UDP mapping whose destination port is 53 (DNS). Default 10 s.
    pub udp_dns_idle_timeout: Duration,
    /// Maximum packets waiting in the outbound queue. Default 1024.
    pub tx_queue_len: usize,
    /// Seed for TCP initial sequence numbers and ports. Must differ per run;
    /// the default draws it from the standard library's per-process random keys.
    pub random_seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let random_seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            mtu: 1500,
            routed: Vec::new(),
            reject: Vec::new(),
            echo: EchoPolicy::Reply,
            max_tcp_flows: 10_000,
            tcp_rx_buffer: 8 * 1024,
            tcp_tx_buffer: 16 * 1024,
            // RFC 5382 REQ-5: an established TCP mapping lives at least 2 h 4 min.
            tcp_idle_timeout: Duration::from_secs(7440),
            tcp_unacked_timeout: Duration::from_secs(120),
            tcp_handshake_timeout: Duration::from_secs(20),
            max_udp_mappings: 4096,
            udp_idle_timeout: Duration::from_secs(60),
            udp_dns_idle_timeout: Duration::from_secs(10),
            tx_queue_len: 1024,
            random_seed,
        }
    }
}

/// A configuration value the engine cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The MTU is outside 1280 (the IPv6 minimum) ..= 65535.
    #[error("tunnel MTU {0} is outside 1280..=65535; set the tunnel MTU to at least 1280")]
    Mtu(usize),
    /// A TCP buffer is empty or larger than smoltcp's 1 GiB limit.
    #[error("TCP {which} buffer of {size} bytes is outside 1..=1 GiB")]
    TcpBuffer {
        /// `"receive"` or `"transmit"`.
        which: &'static str,
        /// The configured size.
        size: usize,
    },
}

impl EngineConfig {
    /// Check the values the engine depends on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1280..=65535).contains(&self.mtu) {
            return Err(ConfigError::Mtu(self.mtu));
        }
        for (which, size) in [
            ("receive", self.tcp_rx_buffer),
            ("transmit", self.tcp_tx_buffer),
        ] {
            if size == 0 || size > 1 << 30 {
                return Err(ConfigError::TcpBuffer { which, size });
            }
        }
        Ok(())
    }
}

/// Identifies one TCP flow or one UDP mapping for its whole life. Never reused
/// within one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub(crate) u64);

impl FlowId {
    /// The raw number, for logs.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A UDP datagram from the tunnel client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram {
    /// The mapping it belongs to; answer with [`Engine::udp_send`](crate::Engine::udp_send).
    pub flow: FlowId,
    /// The client's address and port.
    pub src: SocketAddr,
    /// The destination the client addressed.
    pub dst: SocketAddr,
    /// The UDP payload, untouched.
    pub payload: Vec<u8>,
}

/// An ICMP or `ICMPv6` echo request to forward (policy [`EchoPolicy::Forward`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoRequest {
    /// The pinging client.
    pub src: IpAddr,
    /// The pinged destination.
    pub dst: IpAddr,
    /// ICMP identifier.
    pub ident: u16,
    /// ICMP sequence number.
    pub seq: u16,
    /// Echo data.
    pub payload: Vec<u8>,
}

/// Something the daemon must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client sent a SYN for a new 4-tuple and the engine answered SYN-ACK.
    /// Connect upstream now; call [`Engine::tcp_abort`](crate::Engine::tcp_abort)
    /// if that fails.
    TcpOpened {
        /// The flow.
        flow: FlowId,
        /// Client address.
        src: SocketAddr,
        /// Destination the client asked for.
        dst: SocketAddr,
    },
    /// Data is waiting: call [`Engine::tcp_recv`](crate::Engine::tcp_recv)
    /// until it returns 0. Edge-triggered: not repeated until then.
    TcpReadable {
        /// The flow.
        flow: FlowId,
    },
    /// Space is free: call [`Engine::tcp_send`](crate::Engine::tcp_send).
    /// Edge-triggered: repeated only after a send that did not fit entirely.
    TcpWritable {
        /// The flow.
        flow: FlowId,
    },
    /// The client half-closed (FIN) and every byte before it has been read.
    TcpReadClosed {
        /// The flow.
        flow: FlowId,
    },
    /// Both directions finished in order. The flow id is dead.
    TcpClosed {
        /// The flow.
        flow: FlowId,
    },
    /// The flow ended abnormally (client RST, retransmission or idle timeout).
    /// The flow id is dead; reset the upstream side too.
    TcpReset {
        /// The flow.
        flow: FlowId,
    },
    /// A UDP datagram from the client.
    UdpDatagram(UdpDatagram),
    /// A UDP mapping timed out; close its upstream socket.
    UdpExpired {
        /// The mapping.
        flow: FlowId,
    },
    /// An echo request to forward.
    EchoRequest(EchoRequest),
}

/// What the device that read a packet vouches for, so that the engine need
/// not check it again. A kernel hands a tunnel reader its own outgoing
/// packets with their transport checksums left for the device to fill
/// (Linux: virtio-net `NEEDS_CSUM`), or already verified (`DATA_VALID`,
/// a forwarded packet whose NIC checked it); and with segmentation offload,
/// a TCP stream before it is cut into MTU-sized segments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Received {
    /// Nothing: every checksum is verified and the MTU holds.
    #[default]
    Unchecked,
    /// The transport checksum is known good (the reader completed it, or the
    /// kernel verified it); the IPv4 header checksum is still verified.
    ChecksumValid,
    /// A TCP super-segment: consecutive segments of one flow in one packet
    /// of up to 64 KiB, as the local stack handed it to a device that
    /// segments (TSO). Exempt from the MTU; its TCP checksum field holds
    /// only the pseudo-header sum, so it is not verified.
    TcpSuperSegment,
}

/// Why an inbound packet was dropped. Every drop is counted under exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than its headers or its own length fields.
    Truncated,
    /// Longer than the configured MTU (a TCP super-segment: than 64 KiB).
    Oversized,
    /// IP version nibble is neither 4 nor 6.
    BadVersion,
    /// IPv4 IHL below 5 or beyond the total length.
    BadHeaderLength,
    /// IPv4 header checksum wrong.
    BadIpChecksum,
    /// IPv4 header carries options (IHL > 5); never needed by a tunnel client.
    Ipv4Options,
    /// IPv4 fragment or IPv6 fragment header. Fragments are not reassembled.
    Fragment,
    /// IPv6 extension header other than a fragment header.
    Ipv6ExtensionHeader,
    /// Source is multicast, broadcast, unspecified or loopback.
    BadSource,
    /// Destination is multicast, broadcast, unspecified or loopback.
    BadDestination,
    /// Destination outside the routed prefixes.
    NotRouted,
    /// Transport protocol other than TCP, UDP, ICMP, `ICMPv6`.
    UnsupportedProtocol,
    /// TCP, UDP or ICMP header malformed or truncated.
    MalformedTransport,
    /// TCP, UDP or ICMP checksum wrong (UDP over IPv6 without checksum included).
    BadTransportChecksum,
    /// ICMP other than an echo request (errors, echo replies, neighbour discovery...).
    IcmpNotEcho,
    /// Echo request dropped by [`EchoPolicy::Drop`].
    EchoPolicyDrop,
    /// A new UDP mapping was needed and the table is full.
    UdpTableFull,
    /// A SYN arrived while `max_tcp_flows` flows exist; answered with RST.
    TcpFlowLimit,
    /// The outbound queue was full; the generated packet was discarded.
    TxQueueFull,
    /// The destination is in [`EngineConfig::reject`]; refused with a RST
    /// or an ICMP unreachable.
    Rejected,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 20;
    /// Every reason, in counter order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Truncated,
        Self::Oversized,
        Self::BadVersion,
        Self::BadHeaderLength,
        Self::BadIpChecksum,
        Self::Ipv4Options,
        Self::Fragment,
        Self::Ipv6ExtensionHeader,
        Self::BadSource,
        Self::BadDestination,
        Self::NotRouted,
        Self::UnsupportedProtocol,
        Self::MalformedTransport,
        Self::BadTransportChecksum,
        Self::IcmpNotEcho,
        Self::EchoPolicyDrop,
        Self::UdpTableFull,
        Self::TcpFlowLimit,
        Self::TxQueueFull,
        Self::Rejected,
    ];

    /// Stable snake-case name, for status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Oversized => "oversized",
            Self::BadVersion => "bad_version",
            Self::BadHeaderLength => "bad_header_length",
            Self::BadIpChecksum => "bad_ip_checksum",
            Self::Ipv4Options => "ipv4_options",
            Self::Fragment => "fragment",
            Self::Ipv6ExtensionHeader => "ipv6_extension_header",
            Self::BadSource => "bad_source",
            Self::BadDestination => "bad_destination",
            Self::NotRouted => "not_routed",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::MalformedTransport => "malformed_transport",
            Self::BadTransportChecksum => "bad_transport_checksum",
            Self::IcmpNotEcho => "icmp_not_echo",
            Self::EchoPolicyDrop => "echo_policy_drop",
            Self::UdpTableFull => "udp_table_full",
            Self::TcpFlowLimit => "tcp_flow_limit",
            Self::TxQueueFull => "tx_queue_full",
            Self::Rejected => "rejected",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Running totals, readable at any time through [`Engine::counters`](crate::Engine::counters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets passed to `handle_packet`.
    pub rx_packets: u64,
    /// Bytes passed to `handle_packet`.
    pub rx_bytes: u64,
    /// Packets returned by `poll_transmit`.
    pub tx_packets: u64,
    /// Bytes returned by `poll_transmit`.
    pub tx_bytes: u64,
    /// Echo replies generated (local or forwarded).
    pub echo_replies: u64,
    /// TCP flows accepted.
    pub tcp_flows_opened: u64,
    /// UDP mappings created.
    pub udp_mappings_created: u64,
    drops: [u64; DropReason::COUNT],
}

impl Counters {
    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Packets dropped for any reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn drop_packet(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    pub(crate) fn add_drops(&mut self, reason: DropReason, n: u64) {
        self.drops[reason.index()] += n;
    }
}

/// Errors from the flow I/O methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The flow never existed, has closed, or was aborted.
    #[error("flow {0:?} is not open")]
    UnknownFlow(FlowId),
    /// The sending half is closed (after `tcp_shutdown_write`, or the flow is
    /// not yet established).
    #[error("flow {0:?} cannot send: its write half is closed or not yet open")]
    WriteClosed(FlowId),
    /// The datagram would not fit in one tunnel packet.
    #[error("{len}-byte payload does not fit the tunnel MTU (at most {max} bytes)")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload that fits.
        max: usize,
    },
    /// An echo request whose source and destination families differ.
    #[error("echo request mixes IPv4 and IPv6 addresses")]
    FamilyMismatch,
    /// The outbound queue is full; retry after draining `poll_transmit`.
    #[error("the outbound packet queue is full")]
    QueueFull,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_mtu_below_ipv6_minimum_and_empty_buffers() {
        let ok = EngineConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let small = EngineConfig {
            mtu: 576,
            ..ok.clone()
        };
        assert_eq!(small.validate(), Err(ConfigError::Mtu(576)));
        let empty = EngineConfig {
            tcp_tx_buffer: 0,
            ..ok
        };
        assert_eq!(
            empty.validate(),
            Err(ConfigError::TcpBuffer {
                which: "transmit",
                size: 0
            })
        );
    }

    #[test]
    fn drop_reason_all_matches_discriminants() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }
}
