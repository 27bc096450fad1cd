//! `zbench`: the connection and UDP benchmark behind `bench/run.sh`.
//!
//! iperf3 measures bulk throughput; zbench measures what a relay does per
//! connection, which is where transparent proxies differ most: how many
//! short connections per second it carries (`rate`), how long a connection
//! takes to set up and answer (`latency`), and whether a close travels
//! through it promptly in both directions (`close`), and how much of a paced
//! UDP flood arrives (`udp`, which unlike iperf3 can also speak SOCKS5
//! itself, for the SOCKS-only row). The same client runs
//! against every configuration (ztun, tun2proxy, redsocks, plain kernel
//! routing, plain SOCKS5 with `--socks`) and a `zbench serve` in the server
//! namespace, so the numbers compare like with like.
//!
//! Each client subcommand prints exactly one line of JSON on standard
//! output, for the script to record; reasons for failures go to standard
//! error. Failed connections are data, not errors: the exit status is 0
//! whenever the run completed, unless `--strict` asks otherwise.

mod client;
mod serve;
mod stats;
mod udp;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::client::Endpoint;

#[derive(Debug, Parser)]
#[command(
    name = "zbench",
    version,
    about = "Relay benchmark: connection rate, latency, close propagation and UDP loss",
    long_about = "Relay benchmark for bench/run.sh: connection rate, latency, close propagation \
                  and UDP delivery through a relay (a TUN proxy, a SOCKS5 server or plain \
                  routing).\n\n\
                  Run `zbench serve` on the server side, then `rate`, `latency` or `close` on the \
                  client side. Each client subcommand prints one line of JSON on standard output \
                  and the reasons for any failures on standard error. Failures are counted, not \
                  fatal: the exit status is 0 when the run completed (1 with --strict if anything \
                  failed), non-zero for bad arguments (2 from argument parsing)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the zbench protocol until killed.
    ///
    /// One task per connection. The first byte from the client selects the
    /// behaviour:
    ///
    ///   e  echo: read 64 bytes, write them back, read until EOF, close.
    ///
    ///   c  server closes first: write the byte `x`, then shut down and close.
    ///
    ///   h  client half-closes: read until EOF, then write the byte `E` and close.
    ///
    /// Anything else, or an EOF first, closes the connection. A connection
    /// is dropped after 60 s whatever its state. Sockets are bound with
    /// `SO_REUSEADDR` and a listen backlog of 4096.
    ///
    /// The same address and port in UDP count `zbench udp` floods and
    /// answer its queries.
    Serve(ServeArgs),
    /// UDP delivery: a flood paced at --gbps for --secs, then the count the
    /// server's sink saw.
    ///
    /// Datagrams of --len bytes (UDP payload, header included) go to the
    /// target, or through a SOCKS5 UDP ASSOCIATE of the flood's own with
    /// --socks. The sender tops up to the offered rate every millisecond;
    /// a full socket buffer slows it, which shows as `sent_gbps` below
    /// `offered_gbps`.
    ///
    /// Prints `{"test":"udp","offered_gbps":F,"sent_gbps":F,"sent":N,"received":N,"received_gbps":F,"loss_pct":F,"secs":F}`.
    Udp(UdpArgs),
    /// Connection rate: COUNT echo exchanges, at most CONCURRENCY at once.
    ///
    /// Each connection: connect (through SOCKS5 with --socks), send `e` and
    /// 64 bytes of a per-connection pattern, read the 64 bytes back and
    /// compare, close. An error, a mismatch or going over --timeout-ms
    /// counts as failed.
    ///
    /// Prints `{"test":"rate","ok":N,"failed":N,"secs":F,"per_sec":F}`
    /// where `secs` is the wall time of the whole run and `per_sec` is
    /// `ok / secs`.
    Rate(RateArgs),
    /// Connection latency: COUNT echo exchanges, one after another.
    ///
    /// Each sample is the time from the start of the connect (the SOCKS5
    /// handshake included) until the 64-byte echo is back.
    ///
    /// Prints `{"test":"latency","ok":N,"failed":N,"p50_us":N,"p99_us":N}`:
    /// nearest-rank percentiles over the successful samples, in
    /// microseconds (null if none succeeded).
    Latency(LatencyArgs),
    /// Close propagation: COUNT trials in each direction, alternating.
    ///
    /// server-first: send `c`, read the byte `x`, then the EOF. Fails if the
    /// EOF has not arrived within 2 s of the trial's start or comes more than
    /// --within-ms after the `x`.
    ///
    /// client-half-close: send `h` and shut down the write side; the server
    /// answers `E` once it has seen the EOF, then closes. Fails if the `E`
    /// and then the EOF have not arrived within 2 s of the trial's start.
    ///
    /// Prints
    /// `{"test":"close","server_first_failed":N,"client_half_close_failed":N,"count":N,"server_first_max_us":N,"client_half_close_max_us":N}`:
    /// the maxima are of x-to-EOF and shutdown-to-E, in microseconds, over
    /// the trials that got that far (null if none did).
    Close(CloseArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address and port to listen on, e.g. 203.0.113.10:7000; repeat to
    /// listen on several.
    #[arg(long, value_name = "ADDR:PORT", required = true)]
    listen: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// The `zbench serve` to test against (an IP address and port).
    #[arg(long, value_name = "ADDR:PORT")]
    target: SocketAddr,
    /// Connect through this SOCKS5 server (no authentication; CONNECT to
    /// the target's IP). A host name is resolved once, at start.
    #[arg(long, value_name = "HOST:PORT")]
    socks: Option<String>,
    /// Exit with status 1 (after printing the JSON line) if anything
    /// failed, e.g. to wait until a server is up.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Args)]
struct RateArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Connections to make in all.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Connections open at once, at most.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Time allowed for one connection's whole exchange, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct LatencyArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Samples to take.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Time allowed for one sample, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct UdpArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Offered rate in Gbit/s of UDP payload.
    #[arg(long, default_value_t = 1.0)]
    gbps: f64,
    /// Bytes of UDP payload per datagram (at least 21: the zbench header).
    #[arg(long, default_value_t = 1400, value_parser = clap::value_parser!(u16).range(21..=65_507))]
    len: u16,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
}

#[derive(Debug, Args)]
struct CloseArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Trials of each direction.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Longest allowed delay from the server's `x` to its EOF, in
    /// milliseconds (server-first only).
    #[arg(long, default_value_t = 10)]
    within_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zbench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(all_ok) => {
            if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("zbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand. `Ok(false)` only under `--strict` with failures.
async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Serve(args) => serve::run(&args.listen).await.map(|()| true),
        Command::Udp(args) => {
            let endpoint = endpoint(&args.client).await?;
            let report = udp::flood(
                endpoint.target,
                endpoint.socks,
                args.gbps,
                args.len,
                args.secs,
            )
            .await?;
            print_json(&report)?;
            Ok(true)
        }
        Command::Rate(args) => {
            let endpoint = endpoint(&args.client).await?;
            let limit = Duration::from_millis(args.timeout_ms);
            let report = client::rate(endpoint, args.count, args.concurrency, limit).await;
            print_json(&report)?;
            Ok(!args.client.strict || report.failed == 0)
        }
        Command::Latency(args) => {
            let endpoint = endpoint(&args.client).await?;
            let limit = Duration::from_millis(args.timeout_ms);
            let report = client::latency(endpoint, args.count, limit).await;
            print_json(&report)?;
            Ok(!args.client.strict || report.failed == 0)
        }
        Command::Close(args) => {
            let endpoint = endpoint(&args.client).await?;
            let within = Duration::from_millis(args.within_ms);
            let report = client::close(endpoint, args.count, within).await;
            print_json(&report)?;
            Ok(!args.client.strict
                || (report.server_first_failed == 0 && report.client_half_close_failed == 0))
        }
    }
}

/// The target, and the SOCKS5 server's address resolved once up front so
/// that name lookups stay out of the measurements.
async fn endpoint(args: &ClientArgs) -> anyhow::Result<Endpoint> {
    let socks = match &args.socks {
        None => None,
        Some(hostport) => Some(
            tokio::net::lookup_host(hostport.as_str())
                .await
                .with_context(|| format!("--socks {hostport}"))?
                .next()
                .with_context(|| format!("--socks {hostport}: no address"))?,
        ),
    };
    Ok(Endpoint {
        target: args.target,
        socks,
    })
}

fn print_json<T: serde::Serialize>(report: &T) -> anyhow::Result<()> {
    let line = serde_json::to_string(report).context("JSON")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("standard output")
}
