//! `zbench udp`: a paced UDP flood and the sink that counts it.
//!
//! The same sender runs for every configuration, SOCKS5 alone included
//! (`--socks`: a UDP ASSOCIATE of its own, RFC 1928 section 7), which iperf3
//! cannot do; so the UDP figures of every row compare like with like.
//!
//! Each datagram starts with [`MAGIC`], a kind byte, the run's id and a
//! sequence number. The sink counts the data datagrams of each run and
//! answers a query datagram with the count in the sequence number's place,
//! back to whoever asked (through SOCKS5 that is the server's relay, which
//! forwards it).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::net::{TcpStream, UdpSocket};
use ztun_helper::relay::socks5::{self, Address, Command};

const MAGIC: &[u8; 4] = b"ZBU1";
const DATA: u8 = b'd';
const QUERY: u8 = b'q';
const ANSWER: u8 = b'a';
/// Magic, kind, run id, sequence number.
const HEADER: usize = 4 + 1 + 8 + 8;
/// Runs the sink remembers; older ones are forgotten.
const RUNS: usize = 64;
/// How often the sender tops up to the offered rate.
const TICK: Duration = Duration::from_millis(1);
/// After the last datagram: how long the queues get to drain, and how long
/// the sink gets to answer.
const DRAIN: Duration = Duration::from_millis(300);
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Counts the datagrams of each run until killed.
pub(crate) async fn sink(addr: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(addr)
        .await
        .with_context(|| format!("UDP on {addr}"))?;
    eprintln!("zbench serve: counting UDP on {addr}");
    // A receive buffer large enough for a burst while the sink is scheduled out.
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20);
    // (run, datagrams counted)
    let mut runs: VecDeque<(u64, u64)> = VecDeque::with_capacity(RUNS);
    let mut buf = vec![0_u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some((kind, run, _seq)) = parse(&buf[..n]) else {
            continue;
        };
        let at = runs.iter().position(|r| r.0 == run);
        match kind {
            DATA => {
                let i = at.unwrap_or_else(|| {
                    if runs.len() == RUNS {
                        runs.pop_front();
                    }
                    runs.push_back((run, 0));
                    runs.len() - 1
                });
                runs[i].1 += 1;
            }
            QUERY => {
                let count = at.map_or(0, |i| runs[i].1);
                let _ = socket.send_to(&header(ANSWER, run, count), from).await;
            }
            _ => {}
        }
    }
}

fn header(kind: u8, run: u64, seq: u64) -> [u8; HEADER] {
    let mut h = [0; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind;
    h[5..13].copy_from_slice(&run.to_be_bytes());
    h[13..21].copy_from_slice(&seq.to_be_bytes());
    h
}

fn parse(d: &[u8]) -> Option<(u8, u64, u64)> {
    if d.len() < HEADER || &d[..4] != MAGIC {
        return None;
    }
    let word = |at: usize| d.get(at..at + 8)?.try_into().ok().map(u64::from_be_bytes);
    Some((d[4], word(5)?, word(13)?))
}

#[derive(Debug, Serialize)]
pub(crate) struct UdpReport {
    test: &'static str,
    /// What was asked for, and what the sender managed, in Gbit/s of UDP payload.
    offered_gbps: f64,
    sent_gbps: f64,
    sent: u64,
    received: u64,
    /// Gbit/s of UDP payload the sink counted, over the sending time.
    received_gbps: f64,
    loss_pct: f64,
    secs: f64,
}

/// Where datagrams go: straight to the sink, or through a SOCKS5 association
/// whose control connection must stay open while it is used.
struct Path {
    socket: UdpSocket,
    prefix: Vec<u8>,
    _control: Option<TcpStream>,
}

async fn path(target: SocketAddr, socks: Option<SocketAddr>) -> anyhow::Result<Path> {
    let any: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await.context("UDP socket")?;
    let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 << 20);
    let Some(proxy) = socks else {
        socket.connect(target).await.context("connect")?;
        return Ok(Path {
            socket,
            prefix: Vec::new(),
            _control: None,
        });
    };
    let mut control = TcpStream::connect(proxy)
        .await
        .context("connect to the SOCKS5 server")?;
    let bound = socks5::handshake(
        &mut control,
        None,
        Command::UdpAssociate,
        &socks5::any_address(proxy),
    )
    .await
    .context("SOCKS5 UDP ASSOCIATE")?;
    let relay = socks5::relay_address(&bound, proxy).context("the association's relay address")?;
    socket
        .connect(relay)
        .await
        .context("connect to the relay")?;
    let mut prefix = vec![0; socks5::MAX_UDP_HEADER];
    let n = socks5::write_udp_header(&Address::Ip(target), &mut prefix);
    prefix.truncate(n);
    Ok(Path {
        socket,
        prefix,
        _control: Some(control),
    })
}

/// Offers `gbps` of `len`-byte datagrams (UDP payload) for `secs`, then
/// asks the sink how many arrived.
pub(crate) async fn flood(
    target: SocketAddr,
    socks: Option<SocketAddr>,
    gbps: f64,
    len: u16,
    secs: f64,
) -> anyhow::Result<UdpReport> {
    let (bytes, len) = (usize::from(len), f64::from(len));
    if bytes < HEADER {
        bail!("--len must be at least {HEADER} bytes");
    }
    let path = path(target, socks).await?;
    let run = u64::from(std::process::id()) << 32 | u64::from(rand_u32());
    let mut datagram = path.prefix.clone();
    datagram.resize(path.prefix.len() + bytes, 0);
    let at = path.prefix.len();
    let per_sec = gbps * 1e9 / 8.0 / len;
    let started = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let mut sent = 0_u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed() < limit {
        tick.tick().await;
        // Datagram counts are far below 2^52: the float is exact enough.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let due = (started.elapsed().as_secs_f64() * per_sec) as u64;
        while sent < due {
            datagram[at..at + HEADER].copy_from_slice(&header(DATA, run, sent));
            // A full socket buffer paces the sender; an error is a lost datagram.
            match path.socket.send(&datagram).await {
                Ok(_) | Err(_) => sent += 1,
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(DRAIN).await;
    let received = ask(&path, run).await?;
    #[allow(clippy::cast_precision_loss)]
    let (sent_f, received_f) = (sent as f64, received as f64);
    let gbit = |datagrams: f64| round(datagrams * len * 8.0 / elapsed / 1e9);
    Ok(UdpReport {
        test: "udp",
        offered_gbps: gbps,
        sent_gbps: gbit(sent_f),
        sent,
        received,
        received_gbps: gbit(received_f),
        loss_pct: if sent == 0 {
            0.0
        } else {
            round(100.0 * (1.0 - (received_f / sent_f).min(1.0)))
        },
        secs: round(elapsed),
    })
}

/// The sink's count for `run`, asking again a few times (the question or
/// its answer may be lost on a flooded path).
async fn ask(path: &Path, run: u64) -> anyhow::Result<u64> {
    let mut query = path.prefix.clone();
    query.extend_from_slice(&header(QUERY, run, 0));
    let mut buf = vec![0_u8; 1024];
    let deadline = Instant::now() + ANSWER_WAIT;
    while Instant::now() < deadline {
        path.socket.send(&query).await.context("query")?;
        let wait = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                let n = path.socket.recv(&mut buf).await?;
                let d = if path.prefix.is_empty() {
                    &buf[..n]
                } else {
                    match socks5::parse_udp(&buf[..n]) {
                        Ok((Address::Ip(_), d)) => d,
                        _ => continue,
                    }
                };
                if let Some((ANSWER, r, count)) = parse(d) {
                    if r == run {
                        return Ok::<_, std::io::Error>(count);
                    }
                }
            }
        });
        if let Ok(answer) = wait.await {
            return answer.context("answer");
        }
    }
    bail!("the sink did not answer within {ANSWER_WAIT:?}")
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ 0x5bd1_e995
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_as_written() {
        let h = header(DATA, 0x0102_0304_0506_0708, 42);
        assert_eq!(&h[..5], b"ZBU1d");
        assert_eq!(parse(&h), Some((DATA, 0x0102_0304_0506_0708, 42)));
        assert_eq!(parse(&h[..HEADER - 1]), None, "short");
        let mut wrong = h;
        wrong[0] = b'X';
        assert_eq!(parse(&wrong), None, "not ours");
    }

    #[tokio::test]
    async fn the_sink_counts_a_flood_and_reports_no_loss_on_loopback() {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        tokio::spawn(sink(addr));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = flood(addr, None, 0.01, 1000, 0.2).await.unwrap();
        assert!(r.sent > 0);
        assert_eq!(r.received, r.sent, "{r:?}");
        assert!(r.loss_pct.abs() < f64::EPSILON);
    }
}
