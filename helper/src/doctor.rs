//! `doctor`: the live self-test behind `ztunctl doctor --live` and a
//! menu-bar app's `doctor` request. For each tunnel it asks the kernel where
//! the tunnel's routes, a probe and the DNS resolvers lead; connects to the
//! probe and pings through the tunnel from unbound sockets of the helper's
//! own, which follow the routing table as any application's do; and shakes
//! hands with the SOCKS5 upstream afresh.
//!
//! It changes nothing: no route, tunnel or setting, and every socket it
//! opens it closes. It never sees the daemon's state: the daemon hands it a
//! copy of each tunnel ([`TunnelView`]), so no lock is held while it waits
//! on the network. Every check has its own time limit, and the whole run
//! has [`DOCTOR_LIMIT`].

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;
use ztun_proto::{check, DoctorCheck, EchoPolicy, TunnelName, TunnelSpec};

use crate::platform::{KernelRoute, Platform, PlatformError};
use crate::relay::{echo, Proxy, ProxyKind, Relay, UpstreamError};
use crate::routes::{RouteEntry, RouteTarget};

/// The whole run; checks still going then are reported as not finished.
pub const DOCTOR_LIMIT: Duration = Duration::from_secs(10);
/// One routing-table question.
pub const ROUTE_LIMIT: Duration = Duration::from_secs(2);
/// Connecting to the probe and hearing from it.
pub const TCP_LIMIT: Duration = Duration::from_secs(3);
/// One echo's round trip.
pub const ECHO_LIMIT: Duration = Duration::from_secs(1);
/// The system resolver's answer.
pub const DNS_LIMIT: Duration = Duration::from_secs(3);
/// Reaching the SOCKS5 server and its handshake.
pub const UPSTREAM_LIMIT: Duration = Duration::from_secs(3);

use crate::resolvers::{parse_resolv_conf, RESOLV_CONF};

/// What doctor needs of one tunnel, copied out of the daemon's state.
#[derive(Debug, Clone)]
pub struct TunnelView {
    pub name: TunnelName,
    pub interface: String,
    pub full: bool,
    pub exclude: Vec<IpNet>,
    pub icmp: EchoPolicy,
    pub peer: Ipv4Addr,
    /// The upstream as status shows it (password as `***`).
    pub upstream: String,
    /// Every route the tunnel installed, exclusions included.
    pub routes: Vec<RouteEntry>,
    pub relay: Relay,
}

impl TunnelView {
    pub fn new(spec: &TunnelSpec, interface: &str, routes: &[RouteEntry], relay: &Relay) -> Self {
        Self {
            name: spec.name.clone(),
            interface: interface.to_owned(),
            full: spec.full,
            exclude: spec.exclude.clone(),
            icmp: spec.icmp,
            peer: spec.peer,
            upstream: spec.upstream.redacted().to_string(),
            routes: routes.to_vec(),
            relay: relay.clone(),
        }
    }
}

/// What a run tries besides routes, upstreams and ICMP policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// A TCP destination to connect to (and, with `icmp forward`, to ping).
    pub probe: Option<SocketAddr>,
    /// A name for the system resolver.
    pub dns_name: Option<String>,
}

/// Where a check goes in the reply: the machine first (0), then each
/// tunnel (its position + 1); within each, by kind, then as produced.
type Order = (usize, u8, usize);

/// Ranks of the checks of one tunnel, in reading order.
const RANK_ROUTE: u8 = 0;
const RANK_UPSTREAM: u8 = 1;
const RANK_TCP: u8 = 2;
const RANK_ICMP: u8 = 3;
const RANK_DNS: u8 = 4;

/// Runs every check for `tunnels` and returns them in reading order.
pub async fn run<P: Platform>(
    platform: &P,
    tunnels: Vec<TunnelView>,
    ask: Ask,
) -> Vec<DoctorCheck> {
    let mut checks = Checks::new(Instant::now() + DOCTOR_LIMIT);

    // Which tunnel the probe enters is the kernel's answer for its address.
    let mut owner = None;
    if let Some(probe) = ask.probe {
        let (route, took) = ask_kernel(platform.route_to(probe.ip())).await;
        owner = tunnels
            .iter()
            .position(|t| matches!(&route, Ok(Some(k)) if k.interface == t.interface));
        if owner.is_none() {
            // With one tunnel in question, the line is about that tunnel.
            let (at, tunnel) = match tunnels.as_slice() {
                [only] => (1, Some(only)),
                _ => (0, None),
            };
            checks.now(
                (at, RANK_TCP, 0),
                unrouted_probe(tunnel, probe, &route, took),
            );
        }
    }

    if let Some(name) = ask.dns_name.clone() {
        let slot = (0, RANK_DNS, 0);
        checks.later(None, &[(slot, check::DNS)], async move {
            vec![(slot, resolve(name).await)]
        });
    }
    let resolvers = match ask.dns_name.as_ref().map(|_| system_resolvers()) {
        None => Vec::new(),
        Some(Ok(list)) if !list.is_empty() => list,
        Some(Ok(_)) => {
            checks.now(
                (0, RANK_DNS, 1),
                passed(
                    None,
                    check::DNS,
                    format!("{RESOLV_CONF} names no nameserver; the resolver asks 127.0.0.1"),
                    Duration::ZERO,
                ),
            );
            Vec::new()
        }
        Some(Err(why)) => {
            checks.now((0, RANK_DNS, 1), resolvers_unknown(why));
            Vec::new()
        }
    };

    for (i, t) in tunnels.iter().enumerate() {
        let at = i + 1;
        let name = Some(&t.name);
        for (n, entry) in t.routes.iter().enumerate() {
            let (route, took) = ask_kernel(platform.lookup_route(entry.dst)).await;
            checks.now((at, RANK_ROUTE, n), route_check(t, entry, &route, took));
        }
        let probe = ask.probe.filter(|_| owner == Some(i));
        let tcp_slot = (at, RANK_TCP, 0);
        let upstream_slots: Vec<Order> = (0..t.relay.proxies().len().max(1))
            .map(|n| (at, RANK_UPSTREAM, n))
            .collect();
        let mut slots: Vec<_> = upstream_slots
            .iter()
            .map(|s| (*s, check::UPSTREAM))
            .collect();
        if probe.is_some() {
            slots.push((tcp_slot, check::TCP));
        }
        let (tunnel, interface, relay) = (t.name.clone(), t.interface.clone(), t.relay.clone());
        checks.later(name, &slots, async move {
            // The upstream first: a server that has just come back is known
            // to be back (this handshake says so) before the probe's flow
            // asks for it, so the two lines never contradict each other.
            let upstream_lines = upstreams(&tunnel, &relay).await;
            let mut lines = Vec::new();
            if let Some(probe) = probe {
                let mut tcp_line = tcp(tunnel, interface, probe).await;
                blame_the_upstream(&mut tcp_line, &upstream_lines);
                lines.push((tcp_slot, tcp_line));
            }
            lines.extend(upstream_slots.into_iter().zip(upstream_lines));
            lines
        });
        match icmp_plan(t, probe.map(|p| p.ip())) {
            Ok(target) => {
                let slot = (at, RANK_ICMP, 0);
                let (tunnel, interface, policy) = (t.name.clone(), t.interface.clone(), t.icmp);
                checks.later(name, &[(slot, check::ICMP)], async move {
                    vec![(slot, icmp(tunnel, interface, policy, target).await)]
                });
            }
            Err(line) => checks.now((at, RANK_ICMP, 0), line),
        }
        for (n, ns) in resolvers.iter().enumerate() {
            let (route, took) = ask_kernel(platform.route_to(*ns)).await;
            checks.now((at, RANK_DNS, n), resolver_check(t, *ns, &route, took));
        }
    }
    checks.finish().await
}

/// The checks of one run: those done, and those running with a stand-in
/// that says they did not finish, should the run's time run out first.
struct Checks {
    deadline: Instant,
    done: Vec<(Order, DoctorCheck)>,
    running: JoinSet<Vec<(Order, DoctorCheck)>>,
    unfinished: Vec<(Order, DoctorCheck)>,
}

impl Checks {
    fn new(deadline: Instant) -> Self {
        Self {
            deadline,
            done: Vec::new(),
            running: JoinSet::new(),
            unfinished: Vec::new(),
        }
    }

    fn now(&mut self, order: Order, line: DoctorCheck) {
        self.done.push((order, line));
    }

    /// Starts checks that wait on the network, one after the other, to
    /// fill `slots` (each an order and a check id). Such tasks run side by
    /// side, so the run takes as long as its slowest task, not their sum.
    fn later(
        &mut self,
        tunnel: Option<&TunnelName>,
        slots: &[(Order, &str)],
        task: impl Future<Output = Vec<(Order, DoctorCheck)>> + Send + 'static,
    ) {
        for (order, id) in slots {
            self.unfinished.push((
                *order,
                failed(
                    tunnel,
                    id,
                    format!(
                        "did not finish within {} s, the limit of one doctor run",
                        DOCTOR_LIMIT.as_secs()
                    ),
                    DOCTOR_LIMIT,
                    "run it again; if it keeps happening, see the helper's log".to_owned(),
                ),
            ));
        }
        self.running.spawn(task);
    }

    async fn finish(mut self) -> Vec<DoctorCheck> {
        loop {
            match tokio::time::timeout_at(self.deadline, self.running.join_next()).await {
                Ok(Some(Ok(lines))) => {
                    for (order, line) in lines {
                        self.unfinished.retain(|(o, _)| *o != order);
                        self.done.push((order, line));
                    }
                }
                // A check that panicked keeps its stand-in.
                Ok(Some(Err(e))) => tracing::warn!("a doctor check failed to run: {e}"),
                Ok(None) => break,
                Err(_) => {
                    self.running.abort_all();
                    break;
                }
            }
        }
        self.done.append(&mut self.unfinished);
        self.done.sort_by_key(|(order, _)| *order);
        self.done.into_iter().map(|(_, line)| line).collect()
    }
}

fn passed(tunnel: Option<&TunnelName>, id: &str, detail: String, took: Duration) -> DoctorCheck {
    DoctorCheck {
        tunnel: tunnel.cloned(),
        check: id.to_owned(),
        ok: true,
        detail,
        millis: millis(took),
        fix: None,
    }
}

fn failed(
    tunnel: Option<&TunnelName>,
    id: &str,
    detail: String,
    took: Duration,
    fix: String,
) -> DoctorCheck {
    DoctorCheck {
        tunnel: tunnel.cloned(),
        check: id.to_owned(),
        ok: false,
        detail,
        millis: millis(took),
        fix: Some(fix),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A time as a person reads it: sub-millisecond times keep their digits,
/// since an echo the helper answers itself takes a fraction of one.
fn shown(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `203.0.113.0/25 -> ztun0`, `192.0.2.0/24 -> eth0 via 198.51.100.2`.
fn route_text(dst: impl std::fmt::Display, interface: &str, gateway: Option<IpAddr>) -> String {
    match gateway {
        Some(gw) => format!("{dst} -> {interface} via {gw}"),
        None => format!("{dst} -> {interface}"),
    }
}

/// `via eth0`, `via eth0 (gateway 198.51.100.2)`: where the kernel sends a
/// packet.
fn via(k: &KernelRoute) -> String {
    match k.gateway {
        Some(gw) => format!("via {} (gateway {gw})", k.interface),
        None => format!("via {}", k.interface),
    }
}

/// Asks the kernel one routing question within [`ROUTE_LIMIT`].
async fn ask_kernel(
    question: impl Future<Output = Result<Option<KernelRoute>, PlatformError>>,
) -> (Result<Option<KernelRoute>, String>, Duration) {
    let started = Instant::now();
    let answer = match tokio::time::timeout(ROUTE_LIMIT, question).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the routing table did not answer within {} s",
            ROUTE_LIMIT.as_secs()
        )),
    };
    (answer, started.elapsed())
}

const SEE_LOG: &str = "see the helper's log";

/// A tunnel route as the kernel resolves it now: into the tunnel, or for an
/// exclusion through the physical gateway.
fn route_check(
    t: &TunnelView,
    entry: &RouteEntry,
    route: &Result<Option<KernelRoute>, String>,
    took: Duration,
) -> DoctorCheck {
    let (name, dst) = (Some(&t.name), entry.dst);
    let exclusion = matches!(entry.target, RouteTarget::Gateway { .. });
    let repair = if exclusion {
        format!(
            "ztunctl down {}, then up again, which pins exclusions anew",
            t.name
        )
    } else {
        format!("ztunctl route add {} {dst}", t.name)
    };
    let planned = route_text(dst, entry.target.interface(), entry.target.gateway());
    match route {
        Ok(Some(k)) if entry.matches(k) => {
            let outside = if exclusion {
                ", outside the tunnel"
            } else {
                ""
            };
            passed(name, check::ROUTE, format!("{planned}{outside}"), took)
        }
        Ok(Some(k)) => failed(
            name,
            check::ROUTE,
            format!(
                "{}, expected {}",
                route_text(dst, &k.interface, k.gateway),
                planned
            ),
            took,
            format!("another route holds {dst}: remove it, then {repair}"),
        ),
        Ok(None) => failed(
            name,
            check::ROUTE,
            format!("{dst} is gone from the routing table (expected {planned})"),
            took,
            repair,
        ),
        Err(why) => failed(
            name,
            check::ROUTE,
            format!("cannot read {dst} back: {why}"),
            took,
            SEE_LOG.to_owned(),
        ),
    }
}

/// The probe goes into none of the tunnels in question: connecting to it
/// would test the physical network, not a tunnel, so it is not tried.
fn unrouted_probe(
    tunnel: Option<&TunnelView>,
    probe: SocketAddr,
    route: &Result<Option<KernelRoute>, String>,
    took: Duration,
) -> DoctorCheck {
    let into = tunnel.map_or_else(|| "any tunnel".to_owned(), |t| t.interface.clone());
    let seen = match route {
        Ok(Some(k)) => format!("the kernel sends it {}", via(k)),
        Ok(None) => "the kernel has no route to it".to_owned(),
        Err(why) => format!("its route cannot be read: {why}"),
    };
    let name = tunnel.map_or_else(|| "NAME".to_owned(), |t| t.name.to_string());
    failed(
        tunnel.map(|t| &t.name),
        check::TCP,
        format!("{probe} does not enter {into}: {seen}; not connected"),
        took,
        format!(
            "probe an address inside the tunnel's routes, or steer this one in (ztunctl route add {name} {})",
            probe.ip()
        ),
    )
}

/// How a TCP connection to the probe through the tunnel went.
#[derive(Debug)]
enum TcpOutcome {
    /// No connection: the tunnel did not take the SYN.
    NotConnected { error: io::Error, after: Duration },
    /// The SYN went unanswered for the whole time allowed.
    NoAnswer,
    /// Connected, then the far end sent data or closed its side.
    Answered {
        accepted: Duration,
        after: Duration,
        data: bool,
    },
    /// Reset: the destination, or the upstream on its way, refused. The
    /// engine resets a connection it has accepted once the upstream fails;
    /// when that is quick the reset can beat `connect` returning, so
    /// `accepted` is not always known.
    Refused {
        accepted: Option<Duration>,
        after: Duration,
        error: io::Error,
    },
    /// Connected, then nothing for the rest of the time allowed.
    Silent { accepted: Duration },
}

/// Connects to `probe` from an unbound socket, so the connection follows
/// the routing table into the tunnel like any application's.
async fn tcp_attempt(probe: SocketAddr) -> TcpOutcome {
    let started = Instant::now();
    let deadline = started + TCP_LIMIT;
    let socket = match probe {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    let connected = match socket {
        Ok(s) => tokio::time::timeout_at(deadline, s.connect(probe)).await,
        Err(error) => Ok(Err(error)),
    };
    let mut stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(error))
            if matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return TcpOutcome::Refused {
                accepted: None,
                after: started.elapsed(),
                error,
            }
        }
        Ok(Err(error)) => {
            return TcpOutcome::NotConnected {
                error,
                after: started.elapsed(),
            }
        }
        Err(_) => return TcpOutcome::NoAnswer,
    };
    let accepted = started.elapsed();
    // The engine answers the SYN itself and only then connects upstream, so
    // a connection proves the tunnel, not the destination. Half-closing
    // asks the far end for a verdict: it closes too (or speaks first) once
    // the upstream connection stands, and a failed one comes back as a RST.
    let mut buf = [0_u8; 512];
    let heard = async {
        stream.shutdown().await?;
        stream.read(&mut buf).await
    };
    match tokio::time::timeout_at(deadline, heard).await {
        Ok(Ok(n)) => TcpOutcome::Answered {
            accepted,
            after: started.elapsed(),
            data: n > 0,
        },
        Ok(Err(error)) => TcpOutcome::Refused {
            accepted: Some(accepted),
            after: started.elapsed(),
            error,
        },
        Err(_) => TcpOutcome::Silent { accepted },
    }
}

async fn tcp(name: TunnelName, interface: String, probe: SocketAddr) -> DoctorCheck {
    tcp_check(&name, &interface, probe, tcp_attempt(probe).await)
}

fn tcp_check(
    name: &TunnelName,
    interface: &str,
    probe: SocketAddr,
    outcome: TcpOutcome,
) -> DoctorCheck {
    let tunnel = Some(name);
    let limit = TCP_LIMIT.as_secs();
    let data_plane = format!(
        "the tunnel's data plane did not take the connection: {SEE_LOG}, then ztunctl down {name} and up again"
    );
    match outcome {
        TcpOutcome::Answered {
            accepted,
            after,
            data,
        } => {
            let how = if data {
                "it spoke first"
            } else {
                "it closed when we did"
            };
            passed(
                tunnel,
                check::TCP,
                format!(
                    "{probe} answered through {interface} ({how}; the tunnel accepted in {})",
                    shown(accepted)
                ),
                after,
            )
        }
        TcpOutcome::Refused {
            accepted,
            after,
            error,
        } => failed(
            tunnel,
            check::TCP,
            match accepted {
                Some(accepted) => format!(
                    "{probe}: refused after the tunnel accepted the connection in {}: {error}",
                    shown(accepted)
                ),
                None => format!("{probe}: refused while connecting through {interface}: {error}"),
            },
            after,
            format!(
                "nothing listens on {probe}, or the upstream cannot reach it: check the server, and the refused counts in ztunctl status {name}"
            ),
        ),
        TcpOutcome::Silent { accepted } => failed(
            tunnel,
            check::TCP,
            format!(
                "{probe}: the tunnel accepted in {}, then neither an answer nor a refusal within {limit} s",
                shown(accepted)
            ),
            TCP_LIMIT,
            "the destination or the upstream is slow or drops the connection; check it from the upstream's side, or probe a port that answers".to_owned(),
        ),
        TcpOutcome::NotConnected { error, after } => failed(
            tunnel,
            check::TCP,
            format!("{probe}: connecting through {interface} failed: {error}"),
            after,
            data_plane,
        ),
        TcpOutcome::NoAnswer => failed(
            tunnel,
            check::TCP,
            format!("{probe}: no answer to connecting through {interface} within {limit} s"),
            TCP_LIMIT,
            data_plane,
        ),
    }
}

/// While every upstream is down the helper refuses every flow at once, so
/// a refused probe says nothing about the destination: the fix is the
/// upstream's.
fn blame_the_upstream(tcp: &mut DoctorCheck, upstreams: &[DoctorCheck]) {
    if !tcp.ok && upstreams.iter().all(|u| !u.ok) {
        tcp.fix = Some(
            "fix the upstream first (its line above): while it is down, every flow through it is refused"
                .to_owned(),
        );
    }
}

/// A fresh handshake (with the credentials) with each proxy, side by side,
/// a line each in the order flows try them; one line for `direct`.
async fn upstreams(name: &TunnelName, relay: &Relay) -> Vec<DoctorCheck> {
    if relay.proxies().is_empty() {
        return vec![passed(
            Some(name),
            check::UPSTREAM,
            "direct: flows leave from the helper's own sockets on the physical interface"
                .to_owned(),
            Duration::ZERO,
        )];
    }
    let lines = relay.proxies().iter().map(|proxy| async move {
        let started = Instant::now();
        let result = tokio::time::timeout(UPSTREAM_LIMIT, relay.probe(proxy))
            .await
            .ok();
        upstream_check(name, proxy, result, started.elapsed())
    });
    futures::future::join_all(lines).await
}

/// `result` is `None` when the handshake did not finish in time.
fn upstream_check(
    name: &TunnelName,
    proxy: &Proxy,
    result: Option<Result<(), UpstreamError>>,
    took: Duration,
) -> DoctorCheck {
    let (url, tunnel) = (&proxy.url, Some(name));
    let (handshake, scheme, server) = match proxy.kind {
        ProxyKind::Socks5 => ("SOCKS5 handshake", "socks5", "SOCKS5 server"),
        ProxyKind::Http => ("HTTP CONNECT", "http", "HTTP proxy"),
    };
    let restart =
        format!("ztunctl down {name}, then up with --upstream {scheme}://user:pass@host:port");
    match result {
        Some(Ok(())) => passed(
            tunnel,
            check::UPSTREAM,
            format!("{url} completed the {handshake}"),
            took,
        ),
        Some(Err(
            e @ (UpstreamError::AuthRejected(_)
            | UpstreamError::PasswordRequired
            | UpstreamError::NoAcceptableMethod
            | UpstreamError::HttpAuthRejected
            | UpstreamError::HttpPasswordRequired),
        )) => failed(
            tunnel,
            check::UPSTREAM,
            format!("{url} refused the tunnel: {e}"),
            took,
            format!("fix the user name and password in the URL: {restart}"),
        ),
        Some(Err(e)) => failed(
            tunnel,
            check::UPSTREAM,
            format!("{url} unreachable: {e}"),
            took,
            format!("start the {server}, or fix the URL ({restart}); the helper retries by itself"),
        ),
        None => failed(
            tunnel,
            check::UPSTREAM,
            format!(
                "{url} did not finish the {handshake} within {} s",
                UPSTREAM_LIMIT.as_secs()
            ),
            took,
            format!("the server is slow or drops packets: check it, or fix the URL ({restart})"),
        ),
    }
}

/// Whom to ping for a tunnel's ICMP policy, or the line to show at once:
/// `reply` is answered by the helper, so the probe host or else the
/// tunnel's peer will do; `forward` sends a real ping out, so only a
/// probe the user named is pinged; `drop` has nothing to test.
fn icmp_plan(t: &TunnelView, probe: Option<IpAddr>) -> Result<IpAddr, DoctorCheck> {
    let name = Some(&t.name);
    match (t.icmp, probe) {
        (EchoPolicy::Drop, _) => Err(passed(
            name,
            check::ICMP,
            "pings are dropped by policy (icmp drop)".to_owned(),
            Duration::ZERO,
        )),
        (EchoPolicy::Reply, target) => Ok(target.unwrap_or(IpAddr::V4(t.peer))),
        (EchoPolicy::Forward, Some(target)) => Ok(target),
        (EchoPolicy::Forward, None) => Err(passed(
            name,
            check::ICMP,
            "forward policy: nothing pinged; --probe HOST:PORT also pings HOST through the tunnel"
                .to_owned(),
            Duration::ZERO,
        )),
    }
}

async fn icmp(
    name: TunnelName,
    interface: String,
    policy: EchoPolicy,
    target: IpAddr,
) -> DoctorCheck {
    let tunnel = Some(&name);
    let restart = format!("{SEE_LOG}, then ztunctl down {name} and up again");
    match echo_rtt(target).await {
        Ok(Some(rtt)) if policy == EchoPolicy::Reply => passed(
            tunnel,
            check::ICMP,
            format!("echo to {target} answered by the helper in {} (icmp reply)", shown(rtt)),
            rtt,
        ),
        Ok(Some(rtt)) => passed(
            tunnel,
            check::ICMP,
            format!(
                "echo from {target} through {interface} in {} (icmp {policy}: a real ping from the physical interface)",
                shown(rtt)
            ),
            rtt,
        ),
        Ok(None) if policy == EchoPolicy::Reply => failed(
            tunnel,
            check::ICMP,
            format!(
                "no echo reply from the helper within {} s (icmp reply, to {target})",
                ECHO_LIMIT.as_secs()
            ),
            ECHO_LIMIT,
            format!("the tunnel's data plane is not answering: {restart}"),
        ),
        Ok(None) => failed(
            tunnel,
            check::ICMP,
            format!(
                "no echo reply from {target} within {} s (icmp {policy})",
                ECHO_LIMIT.as_secs()
            ),
            ECHO_LIMIT,
            format!(
                "{target} may not answer pings, or ICMP is filtered on the way; the tcp line says whether the path works, and --icmp reply answers pings in the helper"
            ),
        ),
        Err(e) => failed(
            tunnel,
            check::ICMP,
            format!("cannot send an echo to {target}: {e}"),
            Duration::ZERO,
            "raw ICMP sockets need root (CAP_NET_RAW): run the helper as root".to_owned(),
        ),
    }
}

/// ICMP identifiers of doctor's echoes: `0xd000..=0xdfff`. A tunnel's
/// forwarder sends with identifiers `0x7xxx` (`daemon::echo_ident`), and
/// every raw socket sees every reply, so neither claims the other's.
fn next_echo_ident() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    0xd000 | (NEXT.fetch_add(1, Ordering::Relaxed) & 0x0fff)
}

/// Sends one echo request to `target` from an unbound raw socket (it
/// follows the routing table, into the tunnel) and waits [`ECHO_LIMIT`]
/// for the reply; `None` when none came.
async fn echo_rtt(target: IpAddr) -> io::Result<Option<Duration>> {
    let v6 = target.is_ipv6();
    let (domain, protocol) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let socket = Socket::new(domain, Type::RAW, Some(protocol))?;
    socket.set_nonblocking(true)?;
    let socket = crate::platform::register(socket)?;
    let (ident, seq) = (next_echo_ident(), 1);
    let mut request = Vec::new();
    echo::encode_request(v6, ident, seq, b"ztun doctor", &mut request);
    let started = Instant::now();
    socket
        .get_ref()
        .send_to(&request, &SockAddr::from(SocketAddr::new(target, 0)))?;
    let mut buf = vec![0_u8; 2048];
    let reply = async {
        loop {
            let mut guard = socket.readable().await?;
            let received = guard.try_io(|s| echo::receive(s.get_ref().as_raw_fd(), v6, &mut buf));
            match received {
                Ok(Ok((len, Some(from))))
                    if from == target
                        && echo::parse_reply(v6, &buf[..len])
                            .is_some_and(|(i, s, _)| i == ident && s == seq) =>
                {
                    return Ok(started.elapsed());
                }
                Ok(Err(e)) => return Err(e),
                _ => {}
            }
        }
    };
    match tokio::time::timeout(ECHO_LIMIT, reply).await {
        Ok(rtt) => rtt.map(Some),
        Err(_) => Ok(None),
    }
}

/// Resolves `name` the way applications do (getaddrinfo).
async fn resolve(name: String) -> DoctorCheck {
    let started = Instant::now();
    let answer = tokio::time::timeout(DNS_LIMIT, tokio::net::lookup_host((name.as_str(), 0))).await;
    let took = started.elapsed();
    let resolvers =
        "check that the resolvers answer (each tunnel's dns lines say where they are reached)";
    match answer {
        Ok(Ok(addrs)) => {
            let ips: BTreeSet<IpAddr> = addrs.map(|a| a.ip()).collect();
            let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
            if list.is_empty() {
                failed(
                    None,
                    check::DNS,
                    format!("{name} resolved to no address"),
                    took,
                    resolvers.to_owned(),
                )
            } else {
                passed(
                    None,
                    check::DNS,
                    format!(
                        "{name} resolved to {} by the system resolver",
                        list.join(", ")
                    ),
                    took,
                )
            }
        }
        Ok(Err(e)) => failed(
            None,
            check::DNS,
            format!("{name} did not resolve: {e}"),
            took,
            format!("check the name, and {resolvers}"),
        ),
        Err(_) => failed(
            None,
            check::DNS,
            format!(
                "no answer for {name} from the system resolver within {} s",
                DNS_LIMIT.as_secs()
            ),
            took,
            format!("a resolver does not answer: {resolvers}; in full mode they are reached through the tunnel"),
        ),
    }
}

/// The system resolver's servers; `Err` says why they are not known.
fn system_resolvers() -> Result<Vec<IpAddr>, String> {
    if cfg!(target_os = "macos") {
        // The resolver configuration lives in configd (scutil --dns), not
        // in a file; reading it is not written yet.
        return Err(
            "the resolvers' routes are not checked on macOS yet; scutil --dns lists them"
                .to_owned(),
        );
    }
    std::fs::read_to_string(RESOLV_CONF)
        .map(|text| parse_resolv_conf(&text))
        .map_err(|e| format!("cannot read {RESOLV_CONF}: {e}"))
}

/// The machine-wide line when the resolvers cannot be listed: on macOS a
/// known gap (not a failure), on Linux an unreadable resolv.conf.
fn resolvers_unknown(why: String) -> DoctorCheck {
    if cfg!(target_os = "macos") {
        passed(None, check::DNS, why, Duration::ZERO)
    } else {
        failed(
            None,
            check::DNS,
            why,
            Duration::ZERO,
            format!("make {RESOLV_CONF} readable; the system resolver needs it too"),
        )
    }
}

/// Where one DNS resolver is reached, for one tunnel. In full mode a
/// resolver outside the tunnel is a leak: every name the machine looks up
/// goes past the tunnel (an on-link resolver, e.g. 192.0.2.1 on a /24, is
/// more specific than the tunnel's /1 halves).
fn resolver_check(
    t: &TunnelView,
    ns: IpAddr,
    route: &Result<Option<KernelRoute>, String>,
    took: Duration,
) -> DoctorCheck {
    let name = Some(&t.name);
    match route {
        Ok(Some(k)) if k.interface == t.interface => passed(
            name,
            check::DNS,
            format!("resolver {ns} is routed through {}", t.interface),
            took,
        ),
        Ok(Some(k)) if ns.is_loopback() => passed(
            name,
            check::DNS,
            format!(
                "resolver {ns} is local ({}); where it forwards queries is not checked",
                via(k)
            ),
            took,
        ),
        Ok(Some(k)) => match t.exclude.iter().find(|e| e.contains(&ns)) {
            Some(net) => passed(
                name,
                check::DNS,
                format!(
                    "resolver {ns} is excluded from the tunnel ({net}) and reached {}",
                    via(k)
                ),
                took,
            ),
            None if t.full => failed(
                name,
                check::DNS,
                format!(
                    "resolver {ns} is reached {}, outside the tunnel: every lookup leaks past it",
                    via(k)
                ),
                took,
                format!(
                    "exclude it or fix the route (DNS leak): ztunctl route add {} {ns} sends it through the tunnel; --exclude {} at up keeps it outside on purpose",
                    t.name,
                    IpNet::from(ns)
                ),
            ),
            None => passed(
                name,
                check::DNS,
                format!(
                    "resolver {ns} is reached {}, outside the tunnel (target-only: only the tunnel's routes enter it)",
                    via(k)
                ),
                took,
            ),
        },
        Ok(None) => failed(
            name,
            check::DNS,
            format!("no route to resolver {ns}"),
            took,
            format!("the resolver cannot be reached at all: check the network and {RESOLV_CONF}"),
        ),
        Err(why) => failed(
            name,
            check::DNS,
            format!("cannot read the route to resolver {ns}: {why}"),
            took,
            SEE_LOG.to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::platform::fake::FakePlatform;
    use crate::routes::PhysicalGateway;

    fn name() -> TunnelName {
        "work".parse().unwrap()
    }

    fn no_binding() -> crate::relay::Binder {
        Arc::new(|_: &Socket| Ok(()))
    }

    fn into_tunnel(dst: &str) -> RouteEntry {
        RouteEntry {
            tunnel: name(),
            dst: dst.parse().unwrap(),
            target: RouteTarget::Tunnel {
                interface: "ztun0".into(),
            },
        }
    }

    fn around(dst: &str) -> RouteEntry {
        RouteEntry {
            tunnel: name(),
            dst: dst.parse().unwrap(),
            target: RouteTarget::Gateway {
                via: "198.51.100.2".parse().unwrap(),
                interface: "eth0".into(),
            },
        }
    }

    fn kernel(interface: &str, gateway: Option<&str>) -> KernelRoute {
        KernelRoute {
            interface: interface.into(),
            gateway: gateway.map(|g| g.parse().unwrap()),
        }
    }

    /// A target-only tunnel (`203.0.113.0/25`) or a full one (excluding
    /// `192.0.2.0/24`), direct, with the given ICMP policy.
    fn view(full: bool, icmp: EchoPolicy) -> TunnelView {
        let mut spec = TunnelSpec::new(name());
        spec.full = full;
        spec.icmp = icmp;
        let routes = if full {
            spec.exclude = vec!["192.0.2.0/24".parse().unwrap()];
            vec![
                around("192.0.2.0/24"),
                into_tunnel("0.0.0.0/1"),
                into_tunnel("128.0.0.0/1"),
            ]
        } else {
            spec.routes = vec!["203.0.113.0/25".parse().unwrap()];
            vec![into_tunnel("203.0.113.0/25")]
        };
        TunnelView::new(&spec, "ztun0", &routes, &Relay::direct(no_binding()))
    }

    /// `(ok, detail, fix)` of a line, for comparing.
    fn said(c: &DoctorCheck) -> (bool, &str, Option<&str>) {
        (c.ok, c.detail.as_str(), c.fix.as_deref())
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn times_keep_their_digits_below_ten_milliseconds() {
        assert_eq!(shown(Duration::from_micros(83)), "0.08 ms");
        assert_eq!(shown(Duration::from_micros(2_345)), "2.3 ms");
        assert_eq!(shown(Duration::from_micros(12_900)), "12 ms");
        assert_eq!(millis(Duration::from_micros(999)), 0);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn route_lines_say_where_the_kernel_sends_each_route() {
        let t = view(true, EchoPolicy::Reply);
        let tunnel = into_tunnel("0.0.0.0/1");
        let exclusion = around("192.0.2.0/24");
        let ok = route_check(&t, &tunnel, &Ok(Some(kernel("ztun0", None))), 2 * MS);
        assert_eq!(said(&ok), (true, "0.0.0.0/1 -> ztun0", None));
        assert_eq!((ok.check.as_str(), ok.millis), ("route", 2));
        assert_eq!(ok.tunnel, Some(name()));
        let pinned = route_check(
            &t,
            &exclusion,
            &Ok(Some(kernel("eth0", Some("198.51.100.2")))),
            MS,
        );
        assert_eq!(
            said(&pinned),
            (
                true,
                "192.0.2.0/24 -> eth0 via 198.51.100.2, outside the tunnel",
                None
            )
        );
        let stolen = route_check(&t, &tunnel, &Ok(Some(kernel("wg0", None))), MS);
        assert_eq!(
            said(&stolen),
            (
                false,
                "0.0.0.0/1 -> wg0, expected 0.0.0.0/1 -> ztun0",
                Some("another route holds 0.0.0.0/1: remove it, then ztunctl route add work 0.0.0.0/1")
            )
        );
        let gone = route_check(&t, &tunnel, &Ok(None), MS);
        assert_eq!(
            said(&gone),
            (
                false,
                "0.0.0.0/1 is gone from the routing table (expected 0.0.0.0/1 -> ztun0)",
                Some("ztunctl route add work 0.0.0.0/1")
            )
        );
        // An exclusion cannot be re-added as a tunnel route: up again.
        let gone = route_check(&t, &exclusion, &Ok(None), MS);
        assert_eq!(
            gone.fix.as_deref(),
            Some("ztunctl down work, then up again, which pins exclusions anew")
        );
        let unreadable = route_check(&t, &tunnel, &Err("netlink: busy".into()), MS);
        assert_eq!(
            said(&unreadable),
            (
                false,
                "cannot read 0.0.0.0/1 back: netlink: busy",
                Some(SEE_LOG)
            )
        );
    }

    #[test]
    fn a_resolver_outside_the_tunnel_is_a_leak_only_in_full_mode() {
        let full = view(true, EchoPolicy::Reply);
        let target_only = view(false, EchoPolicy::Reply);
        let ns: IpAddr = "198.51.100.53".parse().unwrap();
        let onlink = Ok(Some(kernel("eth0", None)));
        let leak = resolver_check(&full, ns, &onlink, MS);
        assert_eq!(
            said(&leak),
            (
                false,
                "resolver 198.51.100.53 is reached via eth0, outside the tunnel: every lookup leaks past it",
                Some("exclude it or fix the route (DNS leak): ztunctl route add work 198.51.100.53 sends it through the tunnel; --exclude 198.51.100.53/32 at up keeps it outside on purpose")
            )
        );
        assert_eq!(leak.check, "dns");
        assert_eq!(
            said(&resolver_check(&target_only, ns, &onlink, MS)),
            (
                true,
                "resolver 198.51.100.53 is reached via eth0, outside the tunnel (target-only: only the tunnel's routes enter it)",
                None
            )
        );
        let inside = Ok(Some(kernel("ztun0", None)));
        assert_eq!(
            said(&resolver_check(&full, ns, &inside, MS)),
            (true, "resolver 198.51.100.53 is routed through ztun0", None)
        );
        let excluded: IpAddr = "192.0.2.53".parse().unwrap();
        let via_gw = Ok(Some(kernel("eth0", Some("198.51.100.2"))));
        assert_eq!(
            said(&resolver_check(&full, excluded, &via_gw, MS)),
            (
                true,
                "resolver 192.0.2.53 is excluded from the tunnel (192.0.2.0/24) and reached via eth0 (gateway 198.51.100.2)",
                None
            )
        );
        let stub: IpAddr = "127.0.0.53".parse().unwrap();
        assert!(resolver_check(&full, stub, &Ok(Some(kernel("lo", None))), MS).ok);
        assert!(!resolver_check(&full, ns, &Ok(None), MS).ok);
    }

    #[test]
    fn tcp_lines_tell_a_refusal_from_silence_from_an_answer() {
        let probe: SocketAddr = "203.0.113.5:8080".parse().unwrap();
        let line = |outcome| tcp_check(&name(), "ztun0", probe, outcome);
        let answered = line(TcpOutcome::Answered {
            accepted: Duration::from_micros(120),
            after: 3 * MS,
            data: false,
        });
        assert_eq!(
            said(&answered),
            (
                true,
                "203.0.113.5:8080 answered through ztun0 (it closed when we did; the tunnel accepted in 0.12 ms)",
                None
            )
        );
        assert_eq!(answered.millis, 3);
        let refused = line(TcpOutcome::Refused {
            accepted: Some(Duration::from_micros(90)),
            after: 2 * MS,
            error: io::ErrorKind::ConnectionReset.into(),
        });
        assert!(!refused.ok);
        assert_eq!(
            refused.detail,
            "203.0.113.5:8080: refused after the tunnel accepted the connection in 0.09 ms: connection reset"
        );
        let at_once = line(TcpOutcome::Refused {
            accepted: None,
            after: MS,
            error: io::ErrorKind::ConnectionReset.into(),
        });
        assert_eq!(
            (at_once.detail.as_str(), at_once.fix.is_some()),
            (
                "203.0.113.5:8080: refused while connecting through ztun0: connection reset",
                true
            )
        );
        assert_eq!(
            refused.fix.as_deref(),
            Some("nothing listens on 203.0.113.5:8080, or the upstream cannot reach it: check the server, and the refused counts in ztunctl status work")
        );
        let silent = line(TcpOutcome::Silent { accepted: MS });
        assert_eq!(
            (silent.ok, silent.millis, silent.detail.as_str()),
            (
                false,
                3000,
                "203.0.113.5:8080: the tunnel accepted in 1.0 ms, then neither an answer nor a refusal within 3 s"
            )
        );
        let no_syn_ack = line(TcpOutcome::NoAnswer);
        assert!(no_syn_ack
            .fix
            .unwrap()
            .starts_with("the tunnel's data plane did not take the connection"));
    }

    fn proxy(kind: ProxyKind, url: &str) -> Proxy {
        let server = "198.51.100.2:1080".parse().unwrap();
        Proxy::new(kind, server, None, url.to_owned())
    }

    #[test]
    fn a_probe_refused_while_the_upstream_is_down_blames_the_upstream() {
        let url = "socks5://198.51.100.2:1080";
        let proxy = proxy(ProxyKind::Socks5, url);
        let refused: UpstreamError = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        let down = upstream_check(&name(), &proxy, Some(Err(refused)), MS);
        let up = upstream_check(&name(), &proxy, Some(Ok(())), MS);
        let probe: SocketAddr = "203.0.113.5:8080".parse().unwrap();
        let refused_probe = || {
            tcp_check(
                &name(),
                "ztun0",
                probe,
                TcpOutcome::Refused {
                    accepted: None,
                    after: MS,
                    error: io::ErrorKind::ConnectionRefused.into(),
                },
            )
        };
        let mut line = refused_probe();
        blame_the_upstream(&mut line, &[down.clone(), down.clone()]);
        assert_eq!(
            line.fix.as_deref(),
            Some("fix the upstream first (its line above): while it is down, every flow through it is refused")
        );
        let mut line = refused_probe();
        blame_the_upstream(&mut line, &[down, up]);
        assert!(
            line.fix.unwrap().starts_with("nothing listens on"),
            "a failover was up: the destination refused"
        );
    }

    #[test]
    fn upstream_lines_say_whether_to_fix_the_server_or_the_credentials() {
        let url = "socks5://ann:***@198.51.100.2:1080";
        let socks = proxy(ProxyKind::Socks5, url);
        let ok = upstream_check(&name(), &socks, Some(Ok(())), 2 * MS);
        assert_eq!(
            said(&ok),
            (
                true,
                "socks5://ann:***@198.51.100.2:1080 completed the SOCKS5 handshake",
                None
            )
        );
        let refused: UpstreamError = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        let down = upstream_check(&name(), &socks, Some(Err(refused)), MS);
        assert_eq!(
            said(&down),
            (
                false,
                "socks5://ann:***@198.51.100.2:1080 unreachable: connection refused",
                Some("start the SOCKS5 server, or fix the URL (ztunctl down work, then up with --upstream socks5://user:pass@host:port); the helper retries by itself")
            )
        );
        let rejected = upstream_check(
            &name(),
            &socks,
            Some(Err(UpstreamError::AuthRejected(1))),
            MS,
        );
        assert!(rejected
            .fix
            .unwrap()
            .starts_with("fix the user name and password in the URL"));
        let slow = upstream_check(&name(), &socks, None, UPSTREAM_LIMIT);
        assert_eq!(
            slow.detail,
            "socks5://ann:***@198.51.100.2:1080 did not finish the SOCKS5 handshake within 3 s"
        );
        let http = proxy(ProxyKind::Http, "http://198.51.100.3:3128");
        let rejected = upstream_check(
            &name(),
            &http,
            Some(Err(UpstreamError::HttpAuthRejected)),
            MS,
        );
        assert_eq!(
            said(&rejected),
            (
                false,
                "http://198.51.100.3:3128 refused the tunnel: the HTTP proxy rejected the user name and password; check them in the upstream URL",
                Some("fix the user name and password in the URL: ztunctl down work, then up with --upstream http://user:pass@host:port")
            )
        );
        let ok = upstream_check(&name(), &http, Some(Ok(())), MS);
        assert_eq!(
            ok.detail,
            "http://198.51.100.3:3128 completed the HTTP CONNECT"
        );
    }

    #[test]
    fn the_echo_target_follows_the_icmp_policy() {
        let probe: IpAddr = "203.0.113.5".parse().unwrap();
        let peer: IpAddr = "198.18.0.2".parse().unwrap();
        let plan = |icmp, probe| icmp_plan(&view(false, icmp), probe);
        assert_eq!(plan(EchoPolicy::Reply, None).unwrap(), peer);
        assert_eq!(plan(EchoPolicy::Reply, Some(probe)).unwrap(), probe);
        assert_eq!(plan(EchoPolicy::Forward, Some(probe)).unwrap(), probe);
        // A real ping leaves the machine: only to a host the user named.
        let nothing = plan(EchoPolicy::Forward, None).unwrap_err();
        assert!(nothing.ok && nothing.detail.starts_with("forward policy: nothing pinged"));
        let dropped = plan(EchoPolicy::Drop, Some(probe)).unwrap_err();
        assert_eq!(
            said(&dropped),
            (true, "pings are dropped by policy (icmp drop)", None)
        );
    }

    fn eth0() -> PhysicalGateway {
        PhysicalGateway {
            interface: "eth0".into(),
            v4: Some("198.51.100.2".parse().unwrap()),
            v6: None,
        }
    }

    #[tokio::test]
    async fn the_daemon_answers_doctor_for_its_tunnels_and_not_found_for_others() {
        use crate::control::Handler;
        use ztun_proto::{ErrorCode, Reply, Request};

        let dir = tempfile::tempdir().unwrap();
        let fake = FakePlatform::new(Some(eth0()));
        let d = crate::daemon::Daemon::start(fake.clone(), dir.path())
            .await
            .unwrap();
        let mut spec = TunnelSpec::new(name());
        spec.routes = vec!["203.0.113.0/25".parse().unwrap()];
        spec.icmp = EchoPolicy::Drop;
        d.handle(Request::Up(spec)).await.unwrap();
        let doctor = |name: Option<&str>| Request::Doctor {
            name: name.map(|n| n.parse().unwrap()),
            probe: None,
            dns_name: None,
        };
        let Reply::Doctor(checks) = d.handle(doctor(None)).await.unwrap() else {
            panic!("doctor replies with checks")
        };
        let lines: Vec<(&str, bool, &str)> = checks
            .iter()
            .map(|c| (c.check.as_str(), c.ok, c.detail.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                ("route", true, "203.0.113.0/25 -> ztun0"),
                (
                    "upstream",
                    true,
                    "direct: flows leave from the helper's own sockets on the physical interface"
                ),
                ("icmp", true, "pings are dropped by policy (icmp drop)"),
            ]
        );
        // A route lost behind the helper's back shows at once.
        fake.vanish("203.0.113.0/25".parse().unwrap());
        let Reply::Doctor(checks) = d.handle(doctor(Some("work"))).await.unwrap() else {
            panic!("doctor replies with checks")
        };
        assert!(!checks[0].ok, "{:?}", checks[0]);
        let err = d.handle(doctor(Some("home"))).await.unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                ErrorCode::NotFound,
                "no tunnel named home; see ztunctl status"
            )
        );
    }

    #[tokio::test]
    async fn a_probe_outside_every_tunnel_is_reported_and_not_connected_to() {
        let fake = FakePlatform::new(Some(eth0()));
        fake.preinstall("203.0.113.0/25".parse().unwrap(), kernel("ztun0", None));
        let ask = Ask {
            probe: Some("203.0.113.200:443".parse().unwrap()),
            dns_name: None,
        };
        let checks = run(&fake, vec![view(false, EchoPolicy::Drop)], ask).await;
        let lines: Vec<(&str, bool)> = checks.iter().map(|c| (c.check.as_str(), c.ok)).collect();
        assert_eq!(
            lines,
            [
                ("route", true),
                ("upstream", true),
                ("tcp", false),
                ("icmp", true)
            ]
        );
        assert_eq!(
            checks[2].detail,
            "203.0.113.200:443 does not enter ztun0: the kernel sends it via eth0 (gateway 198.51.100.2); not connected"
        );
        assert_eq!(
            checks[2].fix.as_deref(),
            Some("probe an address inside the tunnel's routes, or steer this one in (ztunctl route add work 203.0.113.200)")
        );
        assert!(checks.iter().all(|c| c.tunnel == Some(name())));
    }

    /// A loopback listener that treats each connection with `answer`.
    fn listener(answer: fn(std::net::TcpStream)) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                answer(s);
            }
        });
        addr
    }

    /// Runs doctor with a probe the fake kernel routes into the tunnel; the
    /// connection itself goes to loopback, where `probe` listens (or not).
    async fn tcp_line(probe: SocketAddr) -> DoctorCheck {
        let fake = FakePlatform::new(Some(eth0()));
        fake.preinstall("127.0.0.1/32".parse().unwrap(), kernel("ztun0", None));
        let ask = Ask {
            probe: Some(probe),
            dns_name: None,
        };
        let checks = run(&fake, vec![view(false, EchoPolicy::Drop)], ask).await;
        checks.into_iter().find(|c| c.check == "tcp").unwrap()
    }

    #[tokio::test]
    async fn a_probe_that_closes_when_we_do_passes() {
        let addr = listener(|mut s| {
            let _ = std::io::Read::read(&mut s, &mut [0; 16]);
        });
        let line = tcp_line(addr).await;
        assert!(line.ok, "{line:?}");
        assert!(
            line.detail.starts_with(&format!(
                "{addr} answered through ztun0 (it closed when we did;"
            )),
            "{line:?}"
        );
    }

    #[tokio::test]
    async fn a_probe_that_resets_fails_with_a_fix() {
        let addr = listener(|s| {
            // SO_LINGER 0: close sends a RST, as the engine does when the
            // upstream refuses.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        });
        let line = tcp_line(addr).await;
        assert!(!line.ok, "{line:?}");
        assert!(line.detail.contains(": refused "), "{line:?}");
        assert!(line.fix.unwrap().starts_with("nothing listens on"));
    }

    #[tokio::test]
    async fn an_upstream_that_refuses_is_named_with_its_reason() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let url = format!("socks5://{closed}");
        let socks = Proxy::new(ProxyKind::Socks5, closed, None, url.clone());
        let relay = Relay::proxied(no_binding(), vec![socks], false);
        let lines = upstreams(&name(), &relay).await;
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].ok);
        assert_eq!(
            lines[0].detail,
            format!("{url} unreachable: Connection refused (os error 111)")
        );
        assert!(
            !relay.proxies()[0].health.snapshot().reachable,
            "status learns of it too"
        );
    }
}
