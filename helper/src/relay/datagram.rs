//! Relayed UDP in batches: fewer, larger kernel crossings.
//!
//! Outbound, consecutive datagrams of one flow are staged back to back in
//! one buffer ([`Staged`]) and leave in one `sendmsg` carrying
//! `UDP_SEGMENT` (UDP GSO, Linux 4.18): the kernel cuts them apart again
//! after one pass through routing and the socket layer, so a run of N
//! datagrams costs one syscall instead of N. Inbound, `UDP_GRO` lets the
//! kernel hand over a run of same-sized datagrams from one source as one
//! buffer with their size ([`Datagrams`]). Where the kernel has neither
//! (macOS), every datagram is its own `send` and `recv`, as before.
//!
//! Not quinn-udp, which does the same for QUIC: it always names the
//! destination in `sendmsg`, which macOS refuses on a connected socket
//! (`EISCONN`), and relay sockets are connected so that the kernel reports
//! the destination's ICMP errors on them.

use std::io;

use tokio::net::UdpSocket;

/// Most datagrams one GSO send may carry: `UDP_MAX_SEGMENTS` in the
/// kernel's include/linux/udp.h (64 before Linux 6.9, 128 since).
const MAX_SEGMENTS: usize = 64;
/// Most bytes one GSO send may carry: a UDP length is 16 bits
/// (`udp_sendmsg` refuses more than 0xFFFF), less the IPv4 and UDP headers.
const MAX_BYTES: usize = 65_535 - 20 - 8;

/// Datagrams of one flow, back to back in one buffer: every one but the
/// last has the size of the first, and the last may be shorter. That is the
/// shape one `UDP_SEGMENT` send takes (`udp_send_skb` cuts `datalen` at
/// `gso_size`) and one `UDP_GRO` receive gives (the `UDP_GRO` control
/// message carries the size), so a batch crosses the kernel, and the
/// channel between a relay task and the engine, as one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Datagrams {
    buf: Vec<u8>,
    segment: usize,
    count: usize,
}

impl Datagrams {
    /// What one receive gave: `buf` cut at `segment` bytes (0 or at least
    /// `buf.len()`: a single datagram, which may be empty).
    pub fn received(buf: Vec<u8>, segment: usize) -> Self {
        let count = if segment == 0 || buf.is_empty() {
            1
        } else {
            buf.len().div_ceil(segment)
        };
        let segment = if count == 1 { buf.len() } else { segment };
        Self {
            buf,
            segment,
            count,
        }
    }

    /// Appends one datagram, `header` then `payload` (a SOCKS5 UDP header,
    /// or nothing). `false`: it would break the shape or the kernel's
    /// limits; hand this batch on first.
    pub fn push(&mut self, header: &[u8], payload: &[u8]) -> bool {
        let len = header.len() + payload.len();
        if self.count == 0 {
            self.segment = len;
        } else if self.buf.len() != self.count * self.segment
            || len > self.segment
            || self.count == MAX_SEGMENTS
            || self.buf.len() + len > MAX_BYTES
        {
            // A shorter datagram ended the batch, or this one is larger,
            // or the batch is full.
            return false;
        }
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(payload);
        self.count += 1;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// The datagrams, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let (buf, segment) = (&self.buf, self.segment);
        (0..self.count).map(move |i| {
            let end = ((i + 1) * segment).min(buf.len());
            &buf[(i * segment).min(end)..end]
        })
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }

    /// Sends the batch on `socket` and empties it; returns how many
    /// datagrams were lost (a full socket buffer, as on a busy link, or an
    /// error the socket reports again on the next receive). `gso` is cleared
    /// for good when the kernel says the path cannot segment (`EIO`: the
    /// route's device has no checksum offload, `udp_send_skb`).
    pub fn send(&mut self, socket: &UdpSocket, gso: &mut bool) -> usize {
        let lost = self.send_inner(socket, gso);
        self.clear();
        lost
    }

    fn send_inner(&self, socket: &UdpSocket, gso: &mut bool) -> usize {
        if self.count > 1 && *gso {
            match send_segmented(socket, &self.buf, self.segment) {
                Ok(()) => return 0,
                Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => *gso = false,
                // A segment over the path MTU (EINVAL), or no GSO in this
                // kernel: these go one by one.
                Err(e) if is_segmenting_refused(&e) => {}
                Err(_) => return self.count,
            }
        }
        // A direct non-blocking send: tokio's try_send consults cached
        // readiness, which a socket registered a moment ago does not have
        // yet, and would drop the first datagrams of every flow.
        let socket = socket2::SockRef::from(socket);
        self.iter().filter(|d| socket.send(d).is_err()).count()
    }
}

fn is_segmenting_refused(e: &io::Error) -> bool {
    [
        nix::libc::EINVAL,
        nix::libc::EMSGSIZE,
        nix::libc::ENOPROTOOPT,
    ]
    .iter()
    .any(|&code| e.raw_os_error() == Some(code))
}

#[cfg(target_os = "linux")]
fn send_segmented(socket: &UdpSocket, buf: &[u8], segment: usize) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let segment =
        u16::try_from(segment).map_err(|_| io::Error::from_raw_os_error(nix::libc::EMSGSIZE))?;
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[io::IoSlice::new(buf)],
        &[ControlMessage::UdpGsoSegments(&segment)],
        MsgFlags::empty(),
        None,
    )
    .map(drop)
    .map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn send_segmented(_socket: &UdpSocket, _buf: &[u8], _segment: usize) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(nix::libc::ENOPROTOOPT))
}

/// Asks the kernel to coalesce received runs (`UDP_GRO`, Linux 5.0).
/// Without it, or where there is none, every receive is one datagram.
pub fn coalesce_received(socket: &UdpSocket) {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{setsockopt, sockopt::UdpGroSegment};
        if let Err(e) = setsockopt(socket, UdpGroSegment, &true) {
            tracing::debug!("UDP_GRO not available: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Waits for the next receive into `buf`; returns its length and the size
/// of the datagrams in it (the length itself when the kernel did not
/// coalesce). Errors are the socket's: a connected socket reports the
/// destination's ICMP errors here (`ECONNREFUSED`, `EHOSTUNREACH`).
pub async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, usize)> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::AsRawFd;
        // ERROR too, as tokio's own `recv` waits: an ICMP error sets only
        // EPOLLERR, and the next receive is what reports it.
        let interest = tokio::io::Interest::READABLE | tokio::io::Interest::ERROR;
        socket
            .async_io(interest, || {
                let mut cmsg = nix::cmsg_space!(i32);
                let mut iov = [io::IoSliceMut::new(buf)];
                let msg = recvmsg::<()>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT,
                )
                .map_err(io::Error::from)?;
                let n = msg.bytes;
                let segment = msg
                    .cmsgs()
                    .map_err(io::Error::from)?
                    .find_map(|c| match c {
                        ControlMessageOwned::UdpGroSegments(s) => usize::try_from(s).ok(),
                        _ => None,
                    })
                    .unwrap_or(n);
                Ok((n, segment))
            })
            .await
    }
    #[cfg(not(target_os = "linux"))]
    {
        let n = socket.recv(buf).await?;
        Ok((n, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &Datagrams) -> Vec<&[u8]> {
        d.iter().collect()
    }

    #[test]
    fn a_run_takes_equal_datagrams_and_one_shorter_last() {
        let mut d = Datagrams::default();
        assert!(d.push(&[9], b"abc"));
        assert!(d.push(&[9], b"def"));
        assert!(d.push(&[9], b"g"));
        // After the shorter one, nothing more: the kernel cuts at the first
        // datagram's size, so a fourth would be glued to the third.
        assert!(!d.push(&[9], b"h"));
        assert_eq!(
            run(&d),
            [
                &[9, b'a', b'b', b'c'][..],
                &[9, b'd', b'e', b'f'],
                &[9, b'g']
            ]
        );
    }

    #[test]
    fn a_larger_datagram_starts_a_new_run() {
        let mut d = Datagrams::default();
        assert!(d.push(&[], b"ab"));
        assert!(!d.push(&[], b"abc"));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_run_stops_at_the_kernels_segment_and_byte_limits() {
        let mut d = Datagrams::default();
        for _ in 0..MAX_SEGMENTS {
            assert!(d.push(&[], &[0; 10]));
        }
        assert!(!d.push(&[], &[0; 10]), "UDP_MAX_SEGMENTS");
        let mut d = Datagrams::default();
        let big = vec![0; 9_000];
        let fit = MAX_BYTES / big.len();
        for _ in 0..fit {
            assert!(d.push(&[], &big));
        }
        assert!(!d.push(&[], &big), "65,507 bytes at most");
        assert_eq!(d.len(), 7);
    }

    #[test]
    fn an_empty_run_takes_any_datagram_even_an_empty_one() {
        let mut d = Datagrams::default();
        assert!(d.push(&[], b""));
        assert_eq!(run(&d), [&b""[..]]);
        assert!(!d.push(&[], b"x"), "nothing is larger than nothing");
        d.clear();
        assert!(d.is_empty());
        assert!(
            d.push(&[], &vec![1; 70_000]),
            "the first datagram always fits"
        );
    }

    #[test]
    fn a_coalesced_receive_is_cut_at_its_segment_size() {
        let d = Datagrams::received(b"aaabbbc".to_vec(), 3);
        assert_eq!(run(&d), [&b"aaa"[..], b"bbb", b"c"]);
        let d = Datagrams::received(b"aaabbb".to_vec(), 3);
        assert_eq!(run(&d), [&b"aaa"[..], b"bbb"]);
    }

    #[test]
    fn a_plain_receive_is_one_datagram_even_an_empty_one() {
        assert_eq!(run(&Datagrams::received(b"abc".to_vec(), 3)), [&b"abc"[..]]);
        assert_eq!(run(&Datagrams::received(b"abc".to_vec(), 0)), [&b"abc"[..]]);
        assert_eq!(run(&Datagrams::received(Vec::new(), 0)), [&b""[..]]);
    }

    #[tokio::test]
    async fn a_run_leaves_as_its_datagrams_and_arrives_as_them() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        tx.connect(rx.local_addr().unwrap()).await.unwrap();
        let mut d = Datagrams::default();
        for p in [&b"one1"[..], b"two2", b"3"] {
            assert!(d.push(&[7], p));
        }
        let mut gso = true;
        assert_eq!(d.send(&tx, &mut gso), 0);
        assert!(d.is_empty());
        assert!(gso, "loopback segments");
        // Loopback does not coalesce (no GRO there): one datagram a receive.
        let mut buf = [0; 64];
        let mut got = Vec::new();
        for _ in 0..3 {
            let (n, segment) = recv(&rx, &mut buf).await.unwrap();
            got.extend(
                Datagrams::received(buf[..n].to_vec(), segment)
                    .iter()
                    .map(<[u8]>::to_vec),
            );
        }
        assert_eq!(
            got,
            [
                b"\x07one1".to_vec(),
                b"\x07two2".to_vec(),
                b"\x073".to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_by_the_next_receive() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = closed.local_addr().unwrap();
        drop(closed);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(to).await.unwrap();
        coalesce_received(&socket);
        let mut d = Datagrams::default();
        d.push(&[], b"anyone?");
        assert_eq!(d.send(&socket, &mut true), 0);
        let mut buf = [0; 64];
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), recv(&socket, &mut buf))
            .await
            .expect("the error arrives at once");
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::ConnectionRefused);
    }
}
