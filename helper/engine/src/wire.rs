//! Inbound packet validation and the packets the engine builds itself (echo
//! replies, UDP datagrams). Pure functions over bytes, on `smoltcp::wire`
//! views; nothing here keeps state. TCP segments are built by smoltcp.

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpAddress, IpCidr, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, UdpPacket,
};

use crate::types::{DropReason, Received, Unreachable};

/// Hop limit of every packet the engine originates (RFC 1700 default TTL).
pub(crate) const HOP_LIMIT: u8 = 64;
pub(crate) const IPV4_HEADER_LEN: usize = 20;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
pub(crate) const UDP_HEADER_LEN: usize = 8;
pub(crate) const ICMP_ECHO_HEADER_LEN: usize = 8;

/// A validated inbound packet, borrowing the caller's buffer.
#[derive(Debug)]
pub(crate) enum Inbound<'a> {
    /// A TCP segment with valid IP and TCP checksums (or vouched for by the
    /// device: see [`Received`]). `ip` is the packet cut
    /// to its IP length (trailing padding removed), ready for smoltcp.
    Tcp {
        ip: &'a [u8],
        src: SocketAddr,
        dst: SocketAddr,
        /// SYN without ACK: may open a flow.
        syn: bool,
    },
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    EchoRequest {
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
}

/// Validate a bare IP packet, but for what its device vouches for
/// (`received`). Every rejection names one [`DropReason`].
pub(crate) fn classify<'a>(
    pkt: &'a [u8],
    received: Received,
    mtu: usize,
    routed: &[IpCidr],
) -> Result<Inbound<'a>, DropReason> {
    let limit = match received {
        Received::TcpSuperSegment => usize::from(u16::MAX),
        Received::Unchecked | Received::ChecksumValid => mtu,
    };
    if pkt.len() > limit {
        return Err(DropReason::Oversized);
    }
    let verify = received == Received::Unchecked;
    let first = *pkt.first().ok_or(DropReason::Truncated)?;
    let (src, dst, proto, ip, payload) = match first >> 4 {
        4 => parse_ipv4(pkt)?,
        6 => parse_ipv6(pkt)?,
        _ => return Err(DropReason::BadVersion),
    };
    if !is_valid_source(src) {
        return Err(DropReason::BadSource);
    }
    if !is_valid_destination(dst) {
        return Err(DropReason::BadDestination);
    }
    if !routed.is_empty() && !routed.iter().any(|c| c.contains_addr(&dst)) {
        return Err(DropReason::NotRouted);
    }
    if proto != IpProtocol::Tcp && pkt.len() > mtu {
        return Err(DropReason::Oversized);
    }
    match proto {
        IpProtocol::Tcp => {
            let tcp =
                TcpPacket::new_checked(payload).map_err(|_| DropReason::MalformedTransport)?;
            if verify && !tcp.verify_checksum(&src, &dst) {
                return Err(DropReason::BadTransportChecksum);
            }
            if tcp.src_port() == 0 || tcp.dst_port() == 0 {
                return Err(DropReason::MalformedTransport);
            }
            Ok(Inbound::Tcp {
                ip,
                src: SocketAddr::new(src.into(), tcp.src_port()),
                dst: SocketAddr::new(dst.into(), tcp.dst_port()),
                syn: tcp.syn() && !tcp.ack() && !tcp.rst() && !tcp.fin(),
            })
        }
        IpProtocol::Udp => {
            let udp =
                UdpPacket::new_checked(payload).map_err(|_| DropReason::MalformedTransport)?;
            // RFC 768: zero means "no checksum" over IPv4; RFC 8200 §8.1 forbids it over IPv6.
            // smoltcp's `verify_checksum` accepts zero for both families, so
            // the IPv6 case is checked here.
            let valid = match (udp.checksum(), src) {
                (0, IpAddress::Ipv4(_)) => true,
                (0, IpAddress::Ipv6(_)) => false,
                _ => !verify || udp.verify_checksum(&src, &dst),
            };
            if !valid {
                return Err(DropReason::BadTransportChecksum);
            }
            if udp.src_port() == 0 || udp.dst_port() == 0 {
                return Err(DropReason::MalformedTransport);
            }
            let len = usize::from(udp.len());
            Ok(Inbound::Udp {
                src: SocketAddr::new(src.into(), udp.src_port()),
                dst: SocketAddr::new(dst.into(), udp.dst_port()),
                payload: &payload[UDP_HEADER_LEN..len],
            })
        }
        IpProtocol::Icmp => {
            let icmp =
                Icmpv4Packet::new_checked(payload).map_err(|_| DropReason::MalformedTransport)?;
            if verify && !icmp.verify_checksum() {
                return Err(DropReason::BadTransportChecksum);
            }
            if icmp.msg_type() != Icmpv4Message::EchoRequest || icmp.msg_code() != 0 {
                return Err(DropReason::IcmpNotEcho);
            }
            Ok(Inbound::EchoRequest {
                src: src.into(),
                dst: dst.into(),
                ident: icmp.echo_ident(),
                seq: icmp.echo_seq_no(),
                data: &payload[ICMP_ECHO_HEADER_LEN..],
            })
        }
        IpProtocol::Icmpv6 => {
            let (IpAddress::Ipv6(s), IpAddress::Ipv6(d)) = (src, dst) else {
                return Err(DropReason::UnsupportedProtocol);
            };
            let icmp =
                Icmpv6Packet::new_checked(payload).map_err(|_| DropReason::MalformedTransport)?;
            if verify && !icmp.verify_checksum(&s, &d) {
                return Err(DropReason::BadTransportChecksum);
            }
            if icmp.msg_type() != Icmpv6Message::EchoRequest || icmp.msg_code() != 0 {
                return Err(DropReason::IcmpNotEcho);
            }
            if payload.len() < ICMP_ECHO_HEADER_LEN {
                return Err(DropReason::MalformedTransport);
            }
            Ok(Inbound::EchoRequest {
                src: src.into(),
                dst: dst.into(),
                ident: icmp.echo_ident(),
                seq: icmp.echo_seq_no(),
                data: &payload[ICMP_ECHO_HEADER_LEN..],
            })
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

type IpParts<'a> = (IpAddress, IpAddress, IpProtocol, &'a [u8], &'a [u8]);

fn parse_ipv4(pkt: &[u8]) -> Result<IpParts<'_>, DropReason> {
    if pkt.len() < IPV4_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let view = Ipv4Packet::new_unchecked(pkt);
    let header_len = usize::from(view.header_len());
    let total_len = usize::from(view.total_len());
    if header_len < IPV4_HEADER_LEN || header_len > total_len {
        return Err(DropReason::BadHeaderLength);
    }
    if pkt.len() < total_len || pkt.len() < header_len {
        return Err(DropReason::Truncated);
    }
    // Lengths are checked above, so the view's accessors cannot panic.
    let view = Ipv4Packet::new_checked(&pkt[..total_len]).map_err(|_| DropReason::Truncated)?;
    if !view.verify_checksum() {
        return Err(DropReason::BadIpChecksum);
    }
    if header_len > IPV4_HEADER_LEN {
        return Err(DropReason::Ipv4Options);
    }
    if view.more_frags() || view.frag_offset() != 0 {
        return Err(DropReason::Fragment);
    }
    let ip = &pkt[..total_len];
    Ok((
        IpAddress::Ipv4(view.src_addr()),
        IpAddress::Ipv4(view.dst_addr()),
        view.next_header(),
        ip,
        &ip[header_len..],
    ))
}

fn parse_ipv6(pkt: &[u8]) -> Result<IpParts<'_>, DropReason> {
    if pkt.len() < IPV6_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let view = Ipv6Packet::new_unchecked(pkt);
    let total_len = IPV6_HEADER_LEN + usize::from(view.payload_len());
    if pkt.len() < total_len {
        return Err(DropReason::Truncated);
    }
    let view = Ipv6Packet::new_checked(&pkt[..total_len]).map_err(|_| DropReason::Truncated)?;
    let proto = view.next_header();
    match proto {
        IpProtocol::Ipv6Frag => return Err(DropReason::Fragment),
        IpProtocol::HopByHop
        | IpProtocol::Ipv6Route
        | IpProtocol::Ipv6Opts
        | IpProtocol::Unknown(51 | 135 | 139 | 140) => return Err(DropReason::Ipv6ExtensionHeader),
        _ => {}
    }
    let ip = &pkt[..total_len];
    Ok((
        IpAddress::Ipv6(view.src_addr()),
        IpAddress::Ipv6(view.dst_addr()),
        proto,
        ip,
        &ip[IPV6_HEADER_LEN..],
    ))
}

fn is_valid_source(addr: IpAddress) -> bool {
    match addr {
        IpAddress::Ipv4(a) => {
            !(a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback())
        }
        IpAddress::Ipv6(a) => !(a.is_multicast() || a.is_unspecified() || a.is_loopback()),
    }
}

fn is_valid_destination(addr: IpAddress) -> bool {
    // Same martians as for sources: the engine never answers to group addresses.
    is_valid_source(addr)
}

/// Length of an IP packet carrying `payload_len` bytes after the IP header.
pub(crate) fn ip_packet_len(src: IpAddr, payload_len: usize) -> usize {
    match src {
        IpAddr::V4(_) => IPV4_HEADER_LEN + payload_len,
        IpAddr::V6(_) => IPV6_HEADER_LEN + payload_len,
    }
}

/// Write an IP header for `payload_len` bytes of `proto` into `buf`; returns
/// the header length. `buf` must be exactly the packet length.
fn emit_ip_header(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    proto: IpProtocol,
    payload_len: usize,
) -> usize {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let repr = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len,
                hop_limit: HOP_LIMIT,
            };
            repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut *buf),
                &ChecksumCapabilities::default(),
            );
            IPV4_HEADER_LEN
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let repr = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len,
                hop_limit: HOP_LIMIT,
            };
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut *buf));
            IPV6_HEADER_LEN
        }
        _ => unreachable!("callers pair addresses of one family"),
    }
}

/// Build an echo reply from `src` (the pinged address) to `dst` (the client)
/// into `buf`, which must be exactly `ip_packet_len(src, 8 + data.len())` long.
pub(crate) fn emit_echo_reply(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    ident: u16,
    seq: u16,
    data: &[u8],
) {
    let icmp_len = ICMP_ECHO_HEADER_LEN + data.len();
    match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            let hl = emit_ip_header(buf, src, dst, IpProtocol::Icmp, icmp_len);
            let mut icmp = Icmpv4Packet::new_unchecked(&mut buf[hl..]);
            icmp.set_msg_type(Icmpv4Message::EchoReply);
            icmp.set_msg_code(0);
            icmp.set_echo_ident(ident);
            icmp.set_echo_seq_no(seq);
            icmp.data_mut().copy_from_slice(data);
            icmp.fill_checksum();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let hl = emit_ip_header(buf, src, dst, IpProtocol::Icmpv6, icmp_len);
            let mut icmp = Icmpv6Packet::new_unchecked(&mut buf[hl..]);
            icmp.set_msg_type(Icmpv6Message::EchoReply);
            icmp.set_msg_code(0);
            icmp.set_echo_ident(ident);
            icmp.set_echo_seq_no(seq);
            icmp.payload_mut().copy_from_slice(data);
            icmp.fill_checksum(&s, &d);
        }
        _ => unreachable!("callers pair addresses of one family"),
    }
}

/// Length of the destination-unreachable message [`emit_unreachable`]
/// builds for a flow from `client`: ICMP header, then the quoted IP and UDP
/// headers.
pub(crate) fn unreachable_len(client: SocketAddr) -> usize {
    let quote = ip_packet_len(client.ip(), UDP_HEADER_LEN);
    ip_packet_len(client.ip(), ICMP_ECHO_HEADER_LEN + quote)
}

/// Build an ICMP (`ICMPv6`) destination unreachable from `dst` to `client`
/// into `buf` (exactly [`unreachable_len`] long), quoting the IP and UDP
/// headers of a datagram from `client` to `dst` so the client's stack finds
/// the socket it belongs to (RFC 792, RFC 4443 §3.1).
pub(crate) fn emit_unreachable(
    buf: &mut [u8],
    why: Unreachable,
    client: SocketAddr,
    dst: SocketAddr,
) {
    let quote_len = ip_packet_len(client.ip(), UDP_HEADER_LEN);
    let (proto, kind, code) = match (client.ip(), why) {
        (IpAddr::V4(_), Unreachable::Port) => (IpProtocol::Icmp, 3, 3),
        (IpAddr::V4(_), Unreachable::Host) => (IpProtocol::Icmp, 3, 1),
        (IpAddr::V4(_), Unreachable::Prohibited) => (IpProtocol::Icmp, 3, 13),
        (IpAddr::V6(_), Unreachable::Port) => (IpProtocol::Icmpv6, 1, 4),
        (IpAddr::V6(_), Unreachable::Host) => (IpProtocol::Icmpv6, 1, 3),
        (IpAddr::V6(_), Unreachable::Prohibited) => (IpProtocol::Icmpv6, 1, 1),
    };
    let hl = emit_ip_header(
        buf,
        dst.ip(),
        client.ip(),
        proto,
        ICMP_ECHO_HEADER_LEN + quote_len,
    );
    let icmp = &mut buf[hl..];
    icmp[..ICMP_ECHO_HEADER_LEN].copy_from_slice(&[kind, code, 0, 0, 0, 0, 0, 0]);
    let quote = &mut icmp[ICMP_ECHO_HEADER_LEN..];
    let qhl = emit_ip_header(
        quote,
        client.ip(),
        dst.ip(),
        IpProtocol::Udp,
        UDP_HEADER_LEN,
    );
    let mut udp = UdpPacket::new_unchecked(&mut quote[qhl..]);
    udp.set_src_port(client.port());
    udp.set_dst_port(dst.port());
    udp.set_len(u16::try_from(UDP_HEADER_LEN).unwrap_or(u16::MAX));
    udp.set_checksum(0);
    match (dst.ip(), client.ip()) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Icmpv6Packet::new_unchecked(&mut buf[hl..]).fill_checksum(&s, &d);
        }
        _ => Icmpv4Packet::new_unchecked(&mut buf[hl..]).fill_checksum(),
    }
}

/// Build a UDP datagram into `buf`, which must be exactly
/// `ip_packet_len(src.ip(), 8 + payload.len())` long.
pub(crate) fn emit_udp(buf: &mut [u8], src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
    let udp_len = UDP_HEADER_LEN + payload.len();
    let hl = emit_ip_header(buf, src.ip(), dst.ip(), IpProtocol::Udp, udp_len);
    let mut udp = UdpPacket::new_unchecked(&mut buf[hl..]);
    udp.set_src_port(src.port());
    udp.set_dst_port(dst.port());
    udp.set_len(u16::try_from(udp_len).unwrap_or(u16::MAX));
    udp.payload_mut().copy_from_slice(payload);
    udp.fill_checksum(&src.ip().into(), &dst.ip().into());
}
