//! The client subcommands: `rate`, `latency` and `close`.
//!
//! Every connection's failure is counted, never fatal: a relay that drops
//! connections is exactly what the numbers are meant to show.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context as _};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;
use ztun_helper::relay::socks5::{self, Address, Command};

use crate::serve::ECHO_LEN;
use crate::stats::{micros, percentile, Failures};

/// How each trial of `close` must finish.
const CLOSE_TRIAL_DEADLINE: Duration = Duration::from_secs(2);

/// Where the client connects: the target, directly or through SOCKS5.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    pub(crate) target: SocketAddr,
    pub(crate) socks: Option<SocketAddr>,
}

impl Endpoint {
    /// A connected stream to the target, the SOCKS5 handshake (if any) done.
    async fn connect(&self) -> anyhow::Result<TcpStream> {
        let Some(proxy) = self.socks else {
            let stream = TcpStream::connect(self.target).await.context("connect")?;
            stream.set_nodelay(true).context("TCP_NODELAY")?;
            return Ok(stream);
        };
        let mut stream = TcpStream::connect(proxy)
            .await
            .context("connect to the SOCKS5 server")?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        socks5::handshake(
            &mut stream,
            None,
            Command::Connect,
            &Address::Ip(self.target),
        )
        .await
        .context("SOCKS5 CONNECT")?;
        Ok(stream)
    }
}

/// 64 bytes that differ from one connection to the next, so that a relay
/// crossing two connections' data shows as a mismatch.
fn pattern(seed: u32) -> [u8; ECHO_LEN] {
    let mix = seed.wrapping_mul(0x9e37_79b9).to_le_bytes();
    let mut out = [0u8; ECHO_LEN];
    for (i, b) in (0u8..).zip(out.iter_mut()) {
        *b = mix[usize::from(i % 4)] ^ i.wrapping_mul(37);
    }
    out
}

/// One `e` exchange: connect, send `e` and the pattern, get it back.
async fn echo_once(endpoint: &Endpoint, seed: u32) -> anyhow::Result<()> {
    let mut stream = endpoint.connect().await?;
    let mut request = [0u8; 1 + ECHO_LEN];
    request[0] = b'e';
    request[1..].copy_from_slice(&pattern(seed));
    stream.write_all(&request).await.context("send")?;
    let mut reply = [0u8; ECHO_LEN];
    stream
        .read_exact(&mut reply)
        .await
        .context("read the echo")?;
    ensure!(reply[..] == request[1..], "echo mismatch");
    Ok(())
}

async fn echo_within(endpoint: &Endpoint, seed: u32, limit: Duration) -> anyhow::Result<()> {
    timeout(limit, echo_once(endpoint, seed))
        .await
        .map_err(|_| anyhow!("timed out after {} ms", limit.as_millis()))?
}

#[derive(Debug, Serialize)]
pub(crate) struct RateReport {
    test: &'static str,
    pub(crate) ok: u32,
    pub(crate) failed: u32,
    secs: f64,
    per_sec: f64,
}

/// `count` echo exchanges, at most `concurrency` at a time.
pub(crate) async fn rate(
    endpoint: Endpoint,
    count: u32,
    concurrency: u32,
    limit: Duration,
) -> RateReport {
    let next = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let (mut ok, mut failures) = (0u32, Failures::default());
            loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= count {
                    break;
                }
                match echo_within(&endpoint, seed, limit).await {
                    Ok(()) => ok += 1,
                    Err(e) => failures.add(&e),
                }
            }
            (ok, failures)
        });
    }
    let (mut ok, mut failures) = (0u32, Failures::default());
    while let Some(done) = workers.join_next().await {
        match done {
            Ok((n, f)) => {
                ok += n;
                failures.merge(f);
            }
            // Not expected (workers do not panic), but never fatal either:
            // that worker's unfinished connections count as failed below.
            Err(e) => failures.add(&anyhow!("worker: {e}")),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    failures.report("rate");
    RateReport {
        test: "rate",
        ok,
        failed: count - ok,
        secs: round(secs, 1e6),
        per_sec: if secs > 0.0 {
            round(f64::from(ok) / secs, 1e1)
        } else {
            0.0
        },
    }
}

fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

#[derive(Debug, Serialize)]
pub(crate) struct LatencyReport {
    test: &'static str,
    ok: u32,
    pub(crate) failed: u32,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
}

/// `count` echo exchanges one after another, each timed from the start of
/// the connect (SOCKS5 handshake included) to the echo's last byte.
pub(crate) async fn latency(endpoint: Endpoint, count: u32, limit: Duration) -> LatencyReport {
    let mut samples = Vec::new();
    let mut failures = Failures::default();
    for seed in 0..count {
        let start = Instant::now();
        match echo_within(&endpoint, seed, limit).await {
            Ok(()) => samples.push(micros(start.elapsed())),
            Err(e) => failures.add(&e),
        }
    }
    samples.sort_unstable();
    failures.report("latency");
    let ok = u32::try_from(samples.len()).unwrap_or(u32::MAX);
    LatencyReport {
        test: "latency",
        ok,
        failed: count - ok,
        p50_us: percentile(&samples, 50),
        p99_us: percentile(&samples, 99),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct CloseReport {
    test: &'static str,
    pub(crate) server_first_failed: u32,
    pub(crate) client_half_close_failed: u32,
    count: u32,
    server_first_max_us: Option<u64>,
    client_half_close_max_us: Option<u64>,
}

/// `count` trials of each close direction, alternating.
pub(crate) async fn close(endpoint: Endpoint, count: u32, within: Duration) -> CloseReport {
    let (mut server_first, mut half_close) = (Trials::default(), Trials::default());
    for _ in 0..count {
        let r = timeout(CLOSE_TRIAL_DEADLINE, server_first_trial(&endpoint)).await;
        server_first.record(r, Some(within));
        let r = timeout(CLOSE_TRIAL_DEADLINE, half_close_trial(&endpoint)).await;
        half_close.record(r, None);
    }
    server_first.failures.report("close (server-first)");
    half_close.failures.report("close (client-half-close)");
    CloseReport {
        test: "close",
        server_first_failed: server_first.failed,
        client_half_close_failed: half_close.failed,
        count,
        server_first_max_us: server_first.max_us,
        client_half_close_max_us: half_close.max_us,
    }
}

#[derive(Debug, Default)]
struct Trials {
    failed: u32,
    max_us: Option<u64>,
    failures: Failures,
}

impl Trials {
    /// Counts one trial's outcome; its delay counts towards the maximum
    /// even when it was over `within`.
    fn record(
        &mut self,
        outcome: Result<anyhow::Result<Duration>, tokio::time::error::Elapsed>,
        within: Option<Duration>,
    ) {
        let result = match outcome {
            Err(_) => Err(anyhow!(
                "not done within {} ms",
                CLOSE_TRIAL_DEADLINE.as_millis()
            )),
            Ok(Err(e)) => Err(e),
            Ok(Ok(delay)) => {
                self.max_us = self.max_us.max(Some(micros(delay)));
                match within {
                    Some(w) if delay > w => Err(anyhow!(
                        "EOF came more than {} ms after the data",
                        w.as_millis()
                    )),
                    _ => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            self.failed += 1;
            self.failures.add(&e);
        }
    }
}

/// `c`: the server sends `x` and closes. Returns the time from the `x` to
/// the EOF.
async fn server_first_trial(endpoint: &Endpoint) -> anyhow::Result<Duration> {
    let mut stream = endpoint.connect().await?;
    stream.write_all(b"c").await.context("send")?;
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf).await.context("read x")?;
    ensure!(n > 0, "EOF before the byte x");
    let t0 = Instant::now();
    ensure!(buf[0] == b'x', "expected the byte x, got {:#04x}", buf[0]);
    ensure!(n == 1, "more data after the byte x");
    let n = stream.read(&mut buf).await.context("wait for EOF")?;
    ensure!(n == 0, "data instead of EOF");
    Ok(t0.elapsed())
}

/// `h`: the client shuts down its write side; the server answers `E` once
/// it sees the EOF, then closes. Returns the time from the shutdown to the
/// `E`; the server's EOF after it must come too.
async fn half_close_trial(endpoint: &Endpoint) -> anyhow::Result<Duration> {
    let mut stream = endpoint.connect().await?;
    stream.write_all(b"h").await.context("send")?;
    stream.shutdown().await.context("shutdown(Write)")?;
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf).await.context("read E")?;
    ensure!(n > 0, "EOF before the byte E");
    let delay = t0.elapsed();
    ensure!(buf[0] == b'E', "expected the byte E, got {:#04x}", buf[0]);
    ensure!(n == 1, "more data after the byte E");
    let n = stream
        .read(&mut buf)
        .await
        .context("wait for EOF after E")?;
    ensure!(n == 0, "data instead of EOF after E");
    Ok(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_differ_between_connections() {
        assert_ne!(pattern(0), pattern(1));
        assert_ne!(pattern(1), pattern(2));
        assert_eq!(pattern(5), pattern(5));
    }
}
