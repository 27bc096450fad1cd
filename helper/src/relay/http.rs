//! HTTP CONNECT client (RFC 9110 §9.3.6), with Basic proxy authentication
//! (RFC 7617) when the upstream URL has credentials.
//!
//! The request is built and the response head parsed by pure functions;
//! [`connect`] only moves the bytes. It reads exactly the response head and
//! not a byte more: the destination's first bytes (a server-first banner)
//! may follow in the same segment, and belong to the relay.

use std::fmt::Write as _;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ztun_proto::Credentials;

use super::socks5::Address;
use super::UpstreamError;

/// The longest response head accepted; proxies send a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// `CONNECT host:port HTTP/1.1` with its `Host` and, given credentials,
/// `Proxy-Authorization: Basic` header. The host is an address or a name
/// (fake DNS hands the proxy the name).
pub fn request(dst: &Address, auth: Option<&Credentials>) -> Vec<u8> {
    // An address displays as SocketAddr does, which brackets IPv6
    // (`[2001:db8::5]:443`): the authority form CONNECT takes (RFC 9110
    // §7.2, RFC 3986 §3.2.2). A name is `name:port`.
    let mut out = format!("CONNECT {dst} HTTP/1.1\r\nHost: {dst}\r\n");
    if let Some(c) = auth {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", c.username, c.password));
        let _ = write!(out, "Proxy-Authorization: Basic {token}\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Where the response head ends (just past its blank line), if it has.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads the status line of a complete response head: 2xx opens the
/// tunnel; 407 is a login problem, and so is 401, which tinyproxy 1.11
/// answers to wrong credentials (it sends 407 only when there are none);
/// anything else is refused.
pub fn parse_head(head: &[u8], auth: bool) -> Result<(), UpstreamError> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(UpstreamError::HttpProtocol("no status line"))?;
    let line = std::str::from_utf8(&head[..line_end])
        .map_err(|_| UpstreamError::HttpProtocol("status line is not text"))?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(UpstreamError::HttpProtocol("not an HTTP/1 response"));
    }
    let code = parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or(UpstreamError::HttpProtocol("bad status code"))?;
    let phrase: String = parts.next().unwrap_or_default().chars().take(80).collect();
    match code {
        200..=299 => Ok(()),
        401 | 407 if auth => Err(UpstreamError::HttpAuthRejected),
        401 | 407 => Err(UpstreamError::HttpPasswordRequired),
        _ => Err(UpstreamError::HttpStatus(code, phrase)),
    }
}

/// Sends CONNECT for `dst` on `stream` and reads the proxy's answer. The
/// caller bounds it in time.
pub async fn connect(
    stream: &mut TcpStream,
    auth: Option<&Credentials>,
    dst: &Address,
) -> Result<(), UpstreamError> {
    stream.write_all(&request(dst, auth)).await?;
    let mut head: Vec<u8> = Vec::with_capacity(512);
    let mut buf = vec![0_u8; 2048];
    loop {
        // Peek, and take only what belongs to the head: usually the whole
        // answer in one peek and one read.
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(UpstreamError::HttpProtocol(
                "the proxy closed the connection without answering",
            ));
        }
        let searched = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        let end = head_end(&head[searched..]).map(|e| searched + e);
        let take = match end {
            Some(end) => n - (head.len() - end),
            None => n,
        };
        stream.read_exact(&mut buf[..take]).await?;
        if let Some(end) = end {
            head.truncate(end);
            return parse_head(&head, auth.is_some());
        }
        if head.len() > MAX_HEAD {
            return Err(UpstreamError::HttpProtocol("response head over 16 KiB"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn creds() -> Credentials {
        Credentials {
            username: "alice".into(),
            password: "s3cret:x".into(),
        }
    }

    fn ip(s: &str) -> Address {
        Address::Ip(s.parse().unwrap())
    }

    #[test]
    fn request_names_the_destination_and_logs_in_with_basic() {
        assert_eq!(
            request(&ip("203.0.113.5:443"), None),
            b"CONNECT 203.0.113.5:443 HTTP/1.1\r\nHost: 203.0.113.5:443\r\n\r\n"
        );
        assert_eq!(
            request(&Address::Domain("www.example.com".into(), 443), None),
            b"CONNECT www.example.com:443 HTTP/1.1\r\nHost: www.example.com:443\r\n\r\n"
        );
        // base64("alice:s3cret:x"), as RFC 7617 §2 builds it.
        assert_eq!(
            String::from_utf8(request(&ip("[2001:db8::5]:8443"), Some(&creds()))).unwrap(),
            "CONNECT [2001:db8::5]:8443 HTTP/1.1\r\nHost: [2001:db8::5]:8443\r\n\
             Proxy-Authorization: Basic YWxpY2U6czNjcmV0Ong=\r\n\r\n"
        );
    }

    #[test]
    fn the_status_line_decides() {
        assert!(parse_head(b"HTTP/1.1 200 Connection established\r\n\r\n", false).is_ok());
        assert!(parse_head(b"HTTP/1.0 200 OK\r\nProxy-agent: tinyproxy\r\n\r\n", false).is_ok());
        let e = parse_head(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", false);
        assert_eq!(e.unwrap_err().reason(), "auth_method");
        let e = parse_head(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", true);
        assert_eq!(e.unwrap_err().reason(), "auth_rejected");
        // tinyproxy 1.11's answer to a wrong password.
        let e = parse_head(
            b"HTTP/1.0 401 Unauthorized\r\nServer: tinyproxy/1.11.1\r\n\r\n",
            true,
        );
        assert_eq!(e.unwrap_err().reason(), "auth_rejected");
        let e = parse_head(b"HTTP/1.1 502 Bad Gateway\r\n\r\n", false).unwrap_err();
        assert_eq!(e.to_string(), "the HTTP proxy answered 502 Bad Gateway");
        assert!(
            !e.is_upstream_fault(),
            "the destination's problem, not the proxy's"
        );
        let e = parse_head(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n", false).unwrap_err();
        assert!(e.is_upstream_fault(), "a proxy without CONNECT is no use");
        for garbage in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(garbage, false).unwrap_err().reason(),
                "protocol_error"
            );
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbanner"), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
    }

    /// A proxy that answers in pieces and sends the destination's banner
    /// in the same write as the end of its head.
    #[tokio::test]
    async fn connect_reads_the_head_and_leaves_the_banner_in_the_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0_u8; 1024];
            let n = s.read(&mut req).await.unwrap();
            s.write_all(b"HTTP/1.1 200 Conn").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            s.write_all(b"ection established\r\n\r\nSSH-2.0-banner\r\n")
                .await
                .unwrap();
            req.truncate(n);
            req
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let dst = ip("203.0.113.5:22");
        connect(&mut stream, None, &dst).await.unwrap();
        let mut banner = [0_u8; 16];
        stream.read_exact(&mut banner).await.unwrap();
        assert_eq!(&banner, b"SSH-2.0-banner\r\n");
        assert_eq!(proxy.await.unwrap(), request(&dst, None));
    }
}
