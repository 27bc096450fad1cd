//! SOCKS5 client: RFC 1928 CONNECT and UDP ASSOCIATE, RFC 1929
//! username/password.
//!
//! The bytes are built and parsed by pure functions, tested against the
//! RFCs' layouts; [`handshake`] only moves them over a stream the caller
//! opened (and bound to the physical interface: S6), which is why no SOCKS
//! crate is used — `tokio-socks` has no UDP ASSOCIATE, and `fast-socks5`'s
//! UDP client opens its own socket that cannot be bound first.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ztun_proto::Credentials;

use super::UpstreamError;

const VERSION: u8 = 5;
const METHOD_NONE: u8 = 0x00;
const METHOD_PASSWORD: u8 = 0x02;
const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
/// RFC 1929's sub-negotiation version.
const PASSWORD_VERSION: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;

/// The longest UDP request header this client writes: RSV, FRAG, then a
/// domain of 255 bytes with its length byte, ATYP and port.
pub const MAX_UDP_HEADER: usize = 3 + 1 + 1 + 255 + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect = 1,
    UdpAssociate = 3,
}

/// An address as SOCKS5 carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Ip(SocketAddr),
    /// A name the server resolves (at most 255 bytes).
    Domain(String, u16),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(a) => write!(f, "{a}"),
            Address::Domain(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

impl Address {
    /// Appends ATYP, the address and the port.
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Address::Ip(SocketAddr::V4(a)) => {
                out.push(ATYP_V4);
                out.extend_from_slice(&a.ip().octets());
            }
            Address::Ip(SocketAddr::V6(a)) => {
                out.push(ATYP_V6);
                out.extend_from_slice(&a.ip().octets());
            }
            Address::Domain(name, _) => {
                out.push(ATYP_DOMAIN);
                // Checked by `request`: at most 255 bytes.
                out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(name.as_bytes());
            }
        }
        let port = match self {
            Address::Ip(a) => a.port(),
            Address::Domain(_, p) => *p,
        };
        out.extend_from_slice(&port.to_be_bytes());
    }

    /// Parses ATYP, address and port from the front of `buf`: the address
    /// and the bytes it took, `None` when `buf` ends first.
    fn decode(buf: &[u8]) -> Result<Option<(Address, usize)>, UpstreamError> {
        let Some(&atyp) = buf.first() else {
            return Ok(None);
        };
        let (len, addr_at) = match atyp {
            ATYP_V4 => (4, 1),
            ATYP_V6 => (16, 1),
            ATYP_DOMAIN => match buf.get(1) {
                Some(&n) => (usize::from(n), 2),
                None => return Ok(None),
            },
            _ => return Err(UpstreamError::Protocol("unknown address type")),
        };
        let end = addr_at + len + 2;
        if buf.len() < end {
            return Ok(None);
        }
        let raw = &buf[addr_at..addr_at + len];
        let port = u16::from_be_bytes([buf[end - 2], buf[end - 1]]);
        let address = match atyp {
            ATYP_V4 => {
                let octets: [u8; 4] = raw
                    .try_into()
                    .map_err(|_| UpstreamError::Protocol("short IPv4 address"))?;
                Address::Ip(SocketAddr::new(Ipv4Addr::from(octets).into(), port))
            }
            ATYP_V6 => {
                let octets: [u8; 16] = raw
                    .try_into()
                    .map_err(|_| UpstreamError::Protocol("short IPv6 address"))?;
                Address::Ip(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
            }
            _ => {
                let name = std::str::from_utf8(raw)
                    .map_err(|_| UpstreamError::Protocol("domain name is not UTF-8"))?;
                Address::Domain(name.to_owned(), port)
            }
        };
        Ok(Some((address, end)))
    }
}

/// A server's answer other than success (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyCode {
    GeneralFailure,
    NotAllowed,
    NetworkUnreachable,
    HostUnreachable,
    ConnectionRefused,
    TtlExpired,
    CommandNotSupported,
    AddressTypeNotSupported,
    Unassigned(u8),
}

impl ReplyCode {
    fn from_u8(code: u8) -> Self {
        match code {
            1 => Self::GeneralFailure,
            2 => Self::NotAllowed,
            3 => Self::NetworkUnreachable,
            4 => Self::HostUnreachable,
            5 => Self::ConnectionRefused,
            6 => Self::TtlExpired,
            7 => Self::CommandNotSupported,
            8 => Self::AddressTypeNotSupported,
            n => Self::Unassigned(n),
        }
    }

    /// The counter key `status` shows refused flows under.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GeneralFailure => "general_failure",
            Self::NotAllowed => "not_allowed",
            Self::NetworkUnreachable => "network_unreachable",
            Self::HostUnreachable => "host_unreachable",
            Self::ConnectionRefused => "connection_refused",
            Self::TtlExpired => "ttl_expired",
            Self::CommandNotSupported => "command_not_supported",
            Self::AddressTypeNotSupported => "address_type_not_supported",
            Self::Unassigned(_) => "unassigned_reply",
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unassigned(n) => write!(f, "reply code {n}"),
            other => f.write_str(&other.as_str().replace('_', " ")),
        }
    }
}

/// The method-selection message: password authentication is offered only
/// when there are credentials to give.
pub fn greeting(auth: bool) -> &'static [u8] {
    if auth {
        &[VERSION, 2, METHOD_NONE, METHOD_PASSWORD]
    } else {
        &[VERSION, 1, METHOD_NONE]
    }
}

/// The RFC 1929 request. The upstream URL's parser keeps each part within
/// 1..=255 bytes.
pub fn password_request(creds: &Credentials, out: &mut Vec<u8>) {
    out.push(PASSWORD_VERSION);
    for part in [&creds.username, &creds.password] {
        out.push(u8::try_from(part.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&part.as_bytes()[..part.len().min(255)]);
    }
}

/// A CONNECT or UDP ASSOCIATE request.
pub fn request(command: Command, target: &Address, out: &mut Vec<u8>) -> Result<(), UpstreamError> {
    if let Address::Domain(name, _) = target {
        if name.is_empty() || name.len() > 255 {
            return Err(UpstreamError::Protocol(
                "a domain name must be 1 to 255 bytes",
            ));
        }
    }
    out.extend_from_slice(&[VERSION, command as u8, 0]);
    target.encode(out);
    Ok(())
}

/// Which method the server chose, from its two-byte answer.
fn chosen_method(answer: [u8; 2], auth: bool) -> Result<u8, UpstreamError> {
    match answer {
        [VERSION, METHOD_NONE] => Ok(METHOD_NONE),
        [VERSION, METHOD_PASSWORD] if auth => Ok(METHOD_PASSWORD),
        [VERSION, METHOD_PASSWORD] => Err(UpstreamError::PasswordRequired),
        [VERSION, METHOD_NONE_ACCEPTABLE] if !auth => Err(UpstreamError::PasswordRequired),
        [VERSION, METHOD_NONE_ACCEPTABLE] => Err(UpstreamError::NoAcceptableMethod),
        [VERSION, _] => Err(UpstreamError::Protocol(
            "server chose a method that was not offered",
        )),
        _ => Err(UpstreamError::Protocol(
            "not a SOCKS5 server (wrong version)",
        )),
    }
}

/// Parses a reply: the bound address and the reply's length, `None` when
/// `buf` ends first.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Address, usize)>, UpstreamError> {
    if buf.len() < 3 {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(UpstreamError::Protocol("reply has the wrong version"));
    }
    if buf[1] != 0 {
        return Err(UpstreamError::Refused(ReplyCode::from_u8(buf[1])));
    }
    Ok(Address::decode(&buf[3..])?.map(|(a, n)| (a, 3 + n)))
}

/// Writes the UDP request header for `dst` (RSV, FRAG 0, address, port) at
/// the front of `out`, which must hold [`MAX_UDP_HEADER`] bytes, and returns
/// its length. Written once per flow: the header is fixed for its life.
pub fn write_udp_header(dst: &Address, out: &mut [u8]) -> usize {
    let mut encoded = Vec::with_capacity(MAX_UDP_HEADER);
    encoded.extend_from_slice(&[0, 0, 0]);
    dst.encode(&mut encoded);
    out[..encoded.len()].copy_from_slice(&encoded);
    encoded.len()
}

/// Splits a datagram from the relay into its source address and payload.
/// Fragments (FRAG ≠ 0) are refused: RFC 1928 makes reassembly optional,
/// and no server in use sends them.
pub fn parse_udp(datagram: &[u8]) -> Result<(Address, &[u8]), UpstreamError> {
    if datagram.len() < 4 {
        return Err(UpstreamError::Protocol(
            "UDP datagram shorter than its header",
        ));
    }
    if datagram[2] != 0 {
        return Err(UpstreamError::Protocol("fragmented UDP datagram"));
    }
    match Address::decode(&datagram[3..])? {
        Some((address, n)) => Ok((address, &datagram[3 + n..])),
        None => Err(UpstreamError::Protocol(
            "UDP datagram shorter than its header",
        )),
    }
}

/// Runs method selection, authentication and one request on `stream`, and
/// returns the address the server bound (for UDP ASSOCIATE: where to send
/// datagrams). The caller bounds it in time.
pub async fn handshake<S>(
    stream: &mut S,
    auth: Option<&Credentials>,
    command: Command,
    target: &Address,
) -> Result<Address, UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    authenticate(stream, auth).await?;
    let mut out = Vec::with_capacity(22);
    request(command, target, &mut out)?;
    stream.write_all(&out).await?;
    // Read exactly the reply: after a CONNECT the destination's first
    // bytes (a server-first protocol's banner) may follow at once, and
    // belong to the relay. The shortest reply is 10 bytes, so the first 5
    // are always there and tell the length.
    let mut buf = [0_u8; 3 + 1 + 1 + 255 + 2];
    stream.read_exact(&mut buf[..5]).await?;
    let len = reply_len(&buf[..5])?;
    stream.read_exact(&mut buf[5..len]).await?;
    match parse_reply(&buf[..len])? {
        Some((bound, _)) => Ok(bound),
        None => Err(UpstreamError::Protocol("short reply")),
    }
}

/// A reply's full length from its first five bytes.
fn reply_len(head: &[u8]) -> Result<usize, UpstreamError> {
    // Version and reply code first: a refusal is reported as such.
    parse_reply(head)?;
    match head[3] {
        ATYP_V4 => Ok(3 + 1 + 4 + 2),
        ATYP_V6 => Ok(3 + 1 + 16 + 2),
        ATYP_DOMAIN => Ok(3 + 2 + usize::from(head[4]) + 2),
        _ => Err(UpstreamError::Protocol("unknown address type")),
    }
}

/// Method selection and, when the server asks for it, RFC 1929.
pub async fn authenticate<S>(
    stream: &mut S,
    auth: Option<&Credentials>,
) -> Result<(), UpstreamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(greeting(auth.is_some())).await?;
    let mut answer = [0_u8; 2];
    stream.read_exact(&mut answer).await?;
    if chosen_method(answer, auth.is_some())? == METHOD_PASSWORD {
        let mut out = Vec::with_capacity(3 + 2 * 255);
        if let Some(creds) = auth {
            password_request(creds, &mut out);
        }
        stream.write_all(&out).await?;
        stream.read_exact(&mut answer).await?;
        match answer {
            [PASSWORD_VERSION, 0] => {}
            [PASSWORD_VERSION, status] => return Err(UpstreamError::AuthRejected(status)),
            _ => return Err(UpstreamError::Protocol("bad authentication reply")),
        }
    }
    Ok(())
}

/// Where UDP datagrams go: the relay address the server bound, with an
/// unspecified address (as many servers send) meaning the server's own.
pub fn relay_address(bound: &Address, server: SocketAddr) -> Result<SocketAddr, UpstreamError> {
    match bound {
        Address::Ip(a) if a.ip().is_unspecified() => Ok(SocketAddr::new(server.ip(), a.port())),
        Address::Ip(a) => Ok(*a),
        Address::Domain(..) => Err(UpstreamError::Protocol(
            "UDP relay given as a domain name; only addresses are supported",
        )),
    }
}

/// The `DST.ADDR` of a UDP ASSOCIATE: the client does not know its own
/// public address and port, so all zeros of the server's family.
pub fn any_address(server: SocketAddr) -> Address {
    let ip: IpAddr = if server.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    Address::Ip(SocketAddr::new(ip, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }
    }

    fn encoded(command: Command, target: &Address) -> Vec<u8> {
        let mut out = Vec::new();
        request(command, target, &mut out).unwrap();
        out
    }

    #[test]
    fn greeting_offers_password_only_with_credentials() {
        assert_eq!(greeting(false), [5, 1, 0]);
        assert_eq!(greeting(true), [5, 2, 0, 2]);
    }

    #[test]
    fn password_request_is_rfc1929_layout() {
        let mut out = Vec::new();
        password_request(&creds("ann", "s3cr3t"), &mut out);
        assert_eq!(out, b"\x01\x03ann\x06s3cr3t");
    }

    #[test]
    fn connect_request_carries_each_address_type() {
        let v4 = Address::Ip("203.0.113.5:443".parse().unwrap());
        assert_eq!(
            encoded(Command::Connect, &v4),
            [5, 1, 0, 1, 203, 0, 113, 5, 0x01, 0xbb]
        );
        let v6 = Address::Ip("[2001:db8::5]:80".parse().unwrap());
        let mut want = vec![5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8];
        want.extend_from_slice(&[0; 11]);
        want.extend_from_slice(&[5, 0, 80]);
        assert_eq!(encoded(Command::Connect, &v6), want);
        let name = Address::Domain("ns.example.test".into(), 53);
        let mut want = vec![5, 1, 0, 3, 15];
        want.extend_from_slice(b"ns.example.test");
        want.extend_from_slice(&[0, 53]);
        assert_eq!(encoded(Command::Connect, &name), want);
    }

    #[test]
    fn udp_associate_asks_for_all_zeros_of_the_servers_family() {
        let server: SocketAddr = "198.51.100.2:1080".parse().unwrap();
        assert_eq!(
            encoded(Command::UdpAssociate, &any_address(server)),
            [5, 3, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        let server6: SocketAddr = "[2001:db8:c::2]:1080".parse().unwrap();
        assert_eq!(
            encoded(Command::UdpAssociate, &any_address(server6)).len(),
            3 + 1 + 16 + 2
        );
    }

    #[test]
    fn overlong_or_empty_domain_is_refused_before_sending() {
        let mut out = Vec::new();
        for name in [String::new(), "a".repeat(256)] {
            let err = request(Command::Connect, &Address::Domain(name, 80), &mut out).unwrap_err();
            assert!(matches!(err, UpstreamError::Protocol(_)), "{err}");
        }
        assert!(out.is_empty());
    }

    #[test]
    fn method_answers_map_to_outcomes() {
        assert_eq!(chosen_method([5, 0], false).unwrap(), METHOD_NONE);
        assert_eq!(chosen_method([5, 2], true).unwrap(), METHOD_PASSWORD);
        assert!(matches!(
            chosen_method([5, 2], false),
            Err(UpstreamError::PasswordRequired)
        ));
        assert!(matches!(
            chosen_method([5, 0xff], false),
            Err(UpstreamError::PasswordRequired)
        ));
        assert!(matches!(
            chosen_method([5, 0xff], true),
            Err(UpstreamError::NoAcceptableMethod)
        ));
        assert!(matches!(
            chosen_method([5, 1], true),
            Err(UpstreamError::Protocol(_))
        ));
        assert!(matches!(
            chosen_method([4, 0], true),
            Err(UpstreamError::Protocol(_))
        ));
    }

    #[test]
    fn reply_yields_the_bound_address_and_its_length() {
        let reply = [5, 0, 0, 1, 198, 51, 100, 2, 0x9c, 0x40, 0xaa];
        let (bound, len) = parse_reply(&reply).unwrap().unwrap();
        assert_eq!(bound, Address::Ip("198.51.100.2:40000".parse().unwrap()));
        assert_eq!(len, 10);
        let mut named = vec![5, 0, 0, 3, 4];
        named.extend_from_slice(b"relay\x00\x35");
        // Declared length 4 takes "rela"; then the port is "y\0".
        let (bound, len) = parse_reply(&named).unwrap().unwrap();
        assert_eq!(
            bound,
            Address::Domain("rela".into(), u16::from_be_bytes([b'y', 0]))
        );
        assert_eq!(len, 11);
    }

    #[test]
    fn reply_prefixes_are_incomplete_not_errors() {
        let reply = [
            5, 0, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 80,
        ];
        for cut in 0..reply.len() {
            assert!(
                parse_reply(&reply[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        assert!(parse_reply(&reply).unwrap().is_some());
    }

    #[test]
    fn every_failure_reply_code_is_refused_with_its_reason() {
        let expect = [
            (1, "general_failure"),
            (2, "not_allowed"),
            (3, "network_unreachable"),
            (4, "host_unreachable"),
            (5, "connection_refused"),
            (6, "ttl_expired"),
            (7, "command_not_supported"),
            (8, "address_type_not_supported"),
            (9, "unassigned_reply"),
        ];
        for (code, reason) in expect {
            let err = parse_reply(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap_err();
            assert_eq!(err.reason(), reason);
            assert!(
                !err.is_upstream_fault(),
                "code {code} is the destination's fault"
            );
        }
    }

    #[test]
    fn unknown_address_type_is_a_protocol_error() {
        assert!(matches!(
            parse_reply(&[5, 0, 0, 2, 1, 2]),
            Err(UpstreamError::Protocol(_))
        ));
    }

    #[test]
    fn udp_header_is_ten_bytes_for_ipv4_and_twenty_two_for_ipv6() {
        let mut buf = [0xee_u8; MAX_UDP_HEADER];
        let n = write_udp_header(&Address::Ip("203.0.113.5:53".parse().unwrap()), &mut buf);
        assert_eq!(&buf[..n], [0, 0, 0, 1, 203, 0, 113, 5, 0, 53]);
        let n = write_udp_header(&Address::Ip("[2001:db8:5::5]:7".parse().unwrap()), &mut buf);
        assert_eq!(n, 22);
        assert_eq!(&buf[..4], [0, 0, 0, 4]);
        assert_eq!(&buf[20..22], [0, 7]);
        let n = write_udp_header(&Address::Domain("www.example.com".into(), 443), &mut buf);
        assert_eq!(&buf[..n], b"\0\0\0\x03\x0fwww.example.com\x01\xbb");
    }

    #[test]
    fn udp_datagram_splits_into_source_and_payload() {
        let datagram = [0, 0, 0, 1, 203, 0, 113, 5, 0, 53, b'h', b'i'];
        let (from, payload) = parse_udp(&datagram).unwrap();
        assert_eq!(from, Address::Ip("203.0.113.5:53".parse().unwrap()));
        assert_eq!(payload, b"hi");
    }

    #[test]
    fn udp_fragments_and_short_datagrams_are_refused() {
        assert!(parse_udp(&[0, 0, 1, 1, 203, 0, 113, 5, 0, 53, 1]).is_err());
        assert!(parse_udp(&[0, 0, 0, 1, 203, 0]).is_err());
        assert!(parse_udp(&[0, 0]).is_err());
    }

    #[test]
    fn relay_address_replaces_an_unspecified_address_with_the_servers() {
        let server: SocketAddr = "198.51.100.2:1080".parse().unwrap();
        let zero = Address::Ip("0.0.0.0:40000".parse().unwrap());
        assert_eq!(
            relay_address(&zero, server).unwrap(),
            "198.51.100.2:40000".parse().unwrap()
        );
        let given = Address::Ip("198.51.100.3:40000".parse().unwrap());
        assert_eq!(
            relay_address(&given, server).unwrap(),
            "198.51.100.3:40000".parse().unwrap()
        );
    }

    #[tokio::test]
    async fn handshake_with_password_sends_the_exact_bytes_and_returns_the_bound_address() {
        let target = Address::Ip("203.0.113.5:80".parse().unwrap());
        let mut stream = tokio_test_stream(&[
            &[5, 2],
            &[1, 0],
            &[
                5, 0, 0, 1, 198, 51, 100, 2, 0x04, 0x38, b'b', b'a', b'n', b'n', b'e', b'r',
            ],
        ]);
        let bound = handshake(
            &mut stream,
            Some(&creds("u", "p")),
            Command::Connect,
            &target,
        )
        .await
        .unwrap();
        assert_eq!(bound, Address::Ip("198.51.100.2:1080".parse().unwrap()));
        assert_eq!(
            stream
                .replies
                .iter()
                .flatten()
                .copied()
                .collect::<Vec<u8>>(),
            b"banner",
            "the destination's bytes stay unread"
        );
        assert_eq!(
            stream.written,
            [
                &[5, 2, 0, 2][..],
                b"\x01\x01u\x01p",
                &[5, 1, 0, 1, 203, 0, 113, 5, 0, 80],
            ]
            .concat()
        );
    }

    #[tokio::test]
    async fn handshake_reports_rejected_credentials_and_refusals() {
        let target = Address::Ip("203.0.113.5:80".parse().unwrap());
        let mut s = tokio_test_stream(&[&[5, 2], &[1, 1]]);
        let err = handshake(&mut s, Some(&creds("u", "bad")), Command::Connect, &target)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::AuthRejected(1)));
        assert!(err.is_upstream_fault());
        let mut s = tokio_test_stream(&[&[5, 0], &[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]]);
        let err = handshake(&mut s, None, Command::Connect, &target)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "connection_refused");
        let mut s = tokio_test_stream(&[&[5, 0]]);
        let err = handshake(&mut s, None, Command::Connect, &target)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, UpstreamError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err}"
        );
    }

    /// A stream that answers with `replies` in order and records what is
    /// written to it.
    struct Scripted {
        replies: std::collections::VecDeque<Vec<u8>>,
        written: Vec<u8>,
    }

    fn tokio_test_stream(replies: &[&[u8]]) -> Scripted {
        Scripted {
            replies: replies.iter().map(|r| r.to_vec()).collect(),
            written: Vec::new(),
        }
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if let Some(mut next) = self.replies.pop_front() {
                let n = next.len().min(buf.remaining());
                buf.put_slice(&next[..n]);
                if n < next.len() {
                    next.drain(..n);
                    self.replies.push_front(next);
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Scripted {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    proptest! {
        #[test]
        fn any_address_survives_a_reply_round_trip(
            ip in any::<IpAddr>(), port in any::<u16>(), name in "[a-z0-9.-]{1,255}",
        ) {
            for address in [Address::Ip(SocketAddr::new(ip, port)), Address::Domain(name.clone(), port)] {
                let mut reply = vec![5, 0, 0];
                address.encode(&mut reply);
                let (back, len) = parse_reply(&reply).unwrap().unwrap();
                prop_assert_eq!(back, address);
                prop_assert_eq!(len, reply.len());
            }
        }

        #[test]
        fn udp_header_round_trips(ip in any::<IpAddr>(), port in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let dst = SocketAddr::new(ip, port);
            let mut buf = vec![0; MAX_UDP_HEADER + payload.len()];
            let n = write_udp_header(&Address::Ip(dst), &mut buf);
            buf.truncate(n);
            buf.extend_from_slice(&payload);
            let (from, body) = parse_udp(&buf).unwrap();
            prop_assert_eq!(from, Address::Ip(dst));
            prop_assert_eq!(body, &payload[..]);
        }

        #[test]
        fn arbitrary_replies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_reply(&bytes);
            let _ = parse_udp(&bytes);
        }
    }
}
