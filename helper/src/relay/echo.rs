//! ICMP echo `forward` mode (S5): a ping that enters the tunnel is sent again
//! from a host socket, and the real reply is translated back, so `ping`
//! through the tunnel shows the true round trip.
//!
//! Raw sockets, because datagram "ping" sockets are closed to every group by
//! default on Linux (`net.ipv4.ping_group_range = 1 0`), root included; the
//! helper has `CAP_NET_RAW`. A raw socket sees every echo reply on the host,
//! so the forwarder sends with its own identifier and its own sequence
//! numbers and keeps a bounded table from those back to the client's, which
//! also keeps two clients pinging the same host with the same sequence
//! numbers apart.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvfrom, SockaddrIn, SockaddrIn6};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Icmpv6Message, Icmpv6Packet, Ipv4Packet};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

/// How long a request waits for its reply before its table slot is reused.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests in flight at once; beyond this new pings are dropped (counted).
pub const MAX_IN_FLIGHT: usize = 4096;

/// The tunnel-side identity of one echo request: who pinged whom, with
/// which identifier and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EchoKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ident: u16,
    pub seq: u16,
}

/// A real reply, translated back to the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply {
    pub key: EchoKey,
    pub payload: Vec<u8>,
    pub rtt: Duration,
}

/// An echo request as the host sends it (bytes of the ICMP message). For
/// ICMPv6 the checksum is left zero: the kernel computes it for raw ICMPv6
/// sockets (RFC 3542 §3.1), it needs the source address the kernel picks.
pub fn encode_request(v6: bool, ident: u16, seq: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if v6 {
        out.resize(8 + payload.len(), 0);
        let mut p = Icmpv6Packet::new_unchecked(&mut out[..]);
        p.set_msg_type(Icmpv6Message::EchoRequest);
        p.set_msg_code(0);
        p.set_echo_ident(ident);
        p.set_echo_seq_no(seq);
        p.payload_mut().copy_from_slice(payload);
    } else {
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq_no: seq,
            data: payload,
        };
        out.resize(repr.buffer_len(), 0);
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(&mut out[..]),
            &ChecksumCapabilities::default(),
        );
    }
}

/// Parses what a raw socket delivered: IPv4 raw sockets include the IP
/// header, IPv6 ones do not. Returns `(ident, seq, payload)` of an echo
/// reply, or `None` for anything else (other ICMP, bad checksum, truncated).
pub fn parse_reply(v6: bool, datagram: &[u8]) -> Option<(u16, u16, &[u8])> {
    if v6 {
        let p = Icmpv6Packet::new_checked(datagram).ok()?;
        (p.msg_type() == Icmpv6Message::EchoReply && p.msg_code() == 0)
            .then(|| (p.echo_ident(), p.echo_seq_no(), p.payload()))
    } else {
        let ip = Ipv4Packet::new_checked(datagram).ok()?;
        let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
        match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).ok()? {
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => Some((ident, seq_no, data)),
            _ => None,
        }
    }
}

struct InFlight {
    key: EchoKey,
    sent: Instant,
}

/// One raw socket per address family, bound to the physical interface.
pub struct EchoForwarder {
    v4: AsyncFd<Socket>,
    v6: Option<AsyncFd<Socket>>,
    ident: u16,
    next_seq: u16,
    in_flight: HashMap<(IpAddr, u16), InFlight>,
    /// Outgoing request bytes, reused.
    scratch: Vec<u8>,
    /// One received datagram (the largest an IP packet can be), reused.
    rx: Box<[u8]>,
    dropped: u64,
}

impl std::fmt::Debug for EchoForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoForwarder")
            .field("ident", &self.ident)
            .field("in_flight", &self.in_flight.len())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

fn raw_socket(
    domain: Domain,
    protocol: Protocol,
    bind: &dyn Fn(&Socket) -> io::Result<()>,
) -> io::Result<AsyncFd<Socket>> {
    let socket = Socket::new(domain, Type::RAW, Some(protocol))?;
    socket.set_nonblocking(true)?;
    bind(&socket)?;
    crate::platform::register(socket)
}

impl EchoForwarder {
    /// Opens the sockets; `bind` pins each to the physical interface
    /// (`Platform::bind_to_interface`). `ident` should differ between
    /// forwarders on one host (tunnels), e.g. derived from the tunnel index.
    pub fn new(
        ipv6: bool,
        ident: u16,
        bind: &dyn Fn(&Socket) -> io::Result<()>,
    ) -> io::Result<Self> {
        Ok(Self {
            v4: raw_socket(Domain::IPV4, Protocol::ICMPV4, bind)?,
            v6: if ipv6 {
                Some(raw_socket(Domain::IPV6, Protocol::ICMPV6, bind)?)
            } else {
                None
            },
            ident,
            next_seq: 0,
            in_flight: HashMap::new(),
            scratch: Vec::with_capacity(1500),
            rx: vec![0; 65_536].into_boxed_slice(),
            dropped: 0,
        })
    }

    /// Requests dropped because the table was full or the socket refused.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Sends a real echo to `key.dst`. Never waits: when the socket cannot
    /// take it now, the ping is lost, exactly as on a congested link.
    pub fn send(&mut self, key: EchoKey, payload: &[u8]) {
        let now = Instant::now();
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.in_flight
                .retain(|_, f| now.duration_since(f.sent) < REPLY_TIMEOUT);
        }
        let socket = match (key.dst, &self.v6) {
            (IpAddr::V4(_), _) => &self.v4,
            (IpAddr::V6(_), Some(v6)) => v6,
            (IpAddr::V6(_), None) => {
                self.dropped += 1;
                return;
            }
        };
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.dropped += 1;
            return;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        encode_request(
            key.dst.is_ipv6(),
            self.ident,
            seq,
            payload,
            &mut self.scratch,
        );
        let to = SockAddr::from(SocketAddr::new(key.dst, 0));
        match socket.get_ref().send_to(&self.scratch, &to) {
            Ok(_) => {
                self.in_flight
                    .insert((key.dst, seq), InFlight { key, sent: now });
            }
            Err(_) => self.dropped += 1,
        }
    }

    /// Waits for the next reply to one of our requests.
    pub async fn recv(&mut self) -> io::Result<EchoReply> {
        loop {
            let v6_ready = async {
                match &self.v6 {
                    Some(s) => s.readable().await,
                    None => std::future::pending().await,
                }
            };
            let (v6, mut guard) = tokio::select! {
                g = self.v4.readable() => (false, g?),
                g = v6_ready => (true, g?),
            };
            let buf = &mut self.rx;
            let (len, src) = match guard.try_io(|s| receive(s.get_ref().as_raw_fd(), v6, buf)) {
                Ok(Ok((len, Some(src)))) => (len, src),
                Ok(Ok((_, None))) | Err(_) => continue,
                Ok(Err(e)) => return Err(e),
            };
            let Some((ident, seq, payload)) = parse_reply(v6, &self.rx[..len]) else {
                continue;
            };
            if ident != self.ident {
                continue;
            }
            if let Some(f) = self.in_flight.remove(&(src, seq)) {
                return Ok(EchoReply {
                    key: f.key,
                    payload: payload.to_vec(),
                    rtt: f.sent.elapsed(),
                });
            }
        }
    }
}

/// One datagram and its sender, from a socket of a known family.
pub(crate) fn receive(fd: RawFd, v6: bool, buf: &mut [u8]) -> io::Result<(usize, Option<IpAddr>)> {
    if v6 {
        let (len, from) = recvfrom::<SockaddrIn6>(fd, buf)?;
        Ok((len, from.map(|a| IpAddr::V6(a.ip()))))
    } else {
        let (len, from) = recvfrom::<SockaddrIn>(fd, buf)?;
        Ok((len, from.map(|a| IpAddr::V4(a.ip()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 one's-complement sum, written here so the test does not
    /// trust the encoder's own checksum code.
    fn internet_checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !u16::try_from(sum).unwrap()
    }

    #[test]
    fn v4_request_carries_our_ident_and_seq_and_a_valid_checksum() {
        let payload: Vec<u8> = (0..56).collect();
        let mut out = Vec::new();
        encode_request(false, 0x7d41, 3, &payload, &mut out);
        assert_eq!(out[..8], [8, 0, out[2], out[3], 0x7d, 0x41, 0, 3]);
        assert_eq!(out[8..], payload[..]);
        assert_eq!(
            internet_checksum(&out),
            0,
            "checksum over the message verifies"
        );
    }

    #[test]
    fn v6_request_leaves_the_checksum_to_the_kernel() {
        let mut out = Vec::new();
        encode_request(true, 0x7d41, 0xfffe, b"ztun", &mut out);
        assert_eq!(
            out,
            [128, 0, 0, 0, 0x7d, 0x41, 0xff, 0xfe, b'z', b't', b'u', b'n']
        );
    }

    /// An IPv4 echo reply as a raw socket delivers it: header then ICMP.
    fn v4_reply_datagram(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut icmp = vec![0, 0, 0, 0];
        icmp.extend_from_slice(&ident.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend_from_slice(payload);
        let c = internet_checksum(&icmp).to_be_bytes();
        icmp[2..4].copy_from_slice(&c);
        let total = u16::try_from(20 + icmp.len()).unwrap().to_be_bytes();
        let mut ip = vec![
            0x45, 0, total[0], total[1], 0, 0, 0x40, 0, 64, 1, 0, 0, 203, 0, 113, 5, 198, 51, 100,
            1,
        ];
        let c = internet_checksum(&ip).to_be_bytes();
        ip[10..12].copy_from_slice(&c);
        ip.extend(icmp);
        ip
    }

    #[test]
    fn v4_reply_is_found_behind_the_ip_header() {
        let d = v4_reply_datagram(0x7d41, 9, b"abc");
        assert_eq!(parse_reply(false, &d), Some((0x7d41, 9, &b"abc"[..])));
    }

    #[test]
    fn replies_with_a_bad_checksum_or_of_another_kind_are_ignored() {
        let mut bad = v4_reply_datagram(1, 2, b"abc");
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(parse_reply(false, &bad), None);
        let mut request = v4_reply_datagram(1, 2, b"abc");
        request[20] = 8; // an echo request someone else sent
        assert_eq!(parse_reply(false, &request), None);
        assert_eq!(parse_reply(false, &[0x45, 0, 0]), None);
        assert_eq!(parse_reply(true, &[129, 0, 0]), None);
    }

    #[test]
    fn v6_reply_is_read_without_an_ip_header() {
        let d = [129, 0, 0x12, 0x34, 0, 7, 0, 1, b'h', b'i'];
        assert_eq!(parse_reply(true, &d), Some((7, 1, &b"hi"[..])));
    }
}
