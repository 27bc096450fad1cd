//! Upstreams: where terminated flows leave the machine, directly or through
//! a proxy (SOCKS5 or HTTP CONNECT, with failover to the next one in
//! order), and `echo` for ICMP (S5 `forward` mode). Every socket
//! opened outward is bound to the physical interface first, so nothing can
//! loop back into the tunnel (S6).

pub mod datagram;
pub mod echo;
mod error;
pub mod http;
pub mod socks5;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use ztun_proto::{Credentials, UpstreamHealth};

pub use error::UpstreamError;
use socks5::{Address, Command};

/// Binds an outbound socket to the physical interface.
pub type Binder = Arc<dyn Fn(&Socket) -> io::Result<()> + Send + Sync>;

/// How long a direct connect may take before the client gets a RST.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reaching the SOCKS5 server and its handshake may take. Shorter
/// than a direct connect: the server is one known, nearby host, and while
/// it is silent every new flow waits on it.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// The unreachable server is tried again after this long, doubling up to
/// [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(250);
const PROBE_MAX: Duration = Duration::from_secs(2);

/// Where a tunnel's flows leave. Cheap to clone: one per relay task.
#[derive(Clone)]
pub struct Relay {
    bind: Binder,
    /// The upstream, then its failovers, in the order new flows try them;
    /// empty when flows go direct.
    proxies: Arc<[Arc<Proxy>]>,
    dns_over_tcp: bool,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

/// How a proxy carries flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// CONNECT for TCP, UDP ASSOCIATE for UDP (RFC 1928).
    Socks5,
    /// CONNECT for TCP (RFC 9110 §9.3.6); no UDP.
    Http,
}

/// A proxy upstream and what the relay has learnt about it.
#[derive(Debug)]
pub struct Proxy {
    pub kind: ProxyKind,
    pub server: SocketAddr,
    auth: Option<Credentials>,
    /// The URL as status shows it (password as `***`).
    pub url: String,
    pub health: Health,
}

impl Proxy {
    pub fn new(
        kind: ProxyKind,
        server: SocketAddr,
        auth: Option<Credentials>,
        url: String,
    ) -> Self {
        Self {
            kind,
            server,
            auth,
            url,
            health: Health::default(),
        }
    }

    /// A connection to the proxy with its handshake done: through it to
    /// `dst` (CONNECT), or only logged in when `dst` is `None` (a probe;
    /// an HTTP proxy has no login without a request, so it is sent a
    /// CONNECT to itself, which any answer but a failure to reach it or
    /// a refused password passes). The caller bounds it in time.
    async fn handshake(
        &self,
        bind: &Binder,
        dst: Option<&Address>,
    ) -> Result<TcpStream, UpstreamError> {
        let mut stream = connect(self.server, bind).await?;
        match (self.kind, dst) {
            (ProxyKind::Socks5, Some(dst)) => {
                socks5::handshake(&mut stream, self.auth.as_ref(), Command::Connect, dst).await?;
            }
            (ProxyKind::Socks5, None) => {
                socks5::authenticate(&mut stream, self.auth.as_ref()).await?;
            }
            (ProxyKind::Http, Some(dst)) => {
                http::connect(&mut stream, self.auth.as_ref(), dst).await?;
            }
            (ProxyKind::Http, None) => {
                let itself = Address::Ip(self.server);
                match http::connect(&mut stream, self.auth.as_ref(), &itself).await {
                    Err(e) if e.is_upstream_fault() => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(stream)
    }
}

/// A UDP association: datagrams go through `socket` (connected to the
/// server's relay address) for as long as `control` stays open.
#[derive(Debug)]
pub struct Association {
    pub control: TcpStream,
    pub socket: UdpSocket,
}

/// Where a new flow goes.
#[derive(Debug, Clone)]
pub enum Via {
    Direct,
    Proxy(Arc<Proxy>),
}

impl Relay {
    pub fn direct(bind: Binder) -> Self {
        Self {
            bind,
            proxies: Arc::new([]),
            dns_over_tcp: false,
        }
    }

    /// Flows through `proxies`, the first reachable one taking new flows.
    pub fn proxied(bind: Binder, proxies: Vec<Proxy>, dns_over_tcp: bool) -> Self {
        Self {
            bind,
            proxies: proxies.into_iter().map(Arc::new).collect(),
            dns_over_tcp,
        }
    }

    /// The upstream and its failovers, in order; empty for direct.
    pub fn proxies(&self) -> &[Arc<Proxy>] {
        &self.proxies
    }

    /// Where a new flow to `dst` goes now: direct, or the first proxy not
    /// known to be down. `None` refuses it at once: every proxy is down
    /// (counted on the first, `upstream_down`), so waiting on one helps no
    /// one. Flows to a proxy itself are counted (a loop, if routes let the
    /// helper's own connections into the tunnel).
    pub fn choose(&self, dst: SocketAddr) -> Option<Via> {
        let Some(first) = self.proxies.first() else {
            return Some(Via::Direct);
        };
        for p in self.proxies.iter().filter(|p| p.server.ip() == dst.ip()) {
            p.health.flow_to_upstream();
        }
        let live = self.live();
        if live.is_none() {
            first.health.refused_while_down();
        }
        live.map(|p| Via::Proxy(Arc::clone(p)))
    }

    /// The proxy new flows take now, if any (status's `active_upstream`).
    pub fn active(&self) -> Option<&Proxy> {
        self.live().map(AsRef::as_ref)
    }

    /// The first proxy not known to be down.
    fn live(&self) -> Option<&Arc<Proxy>> {
        self.proxies.iter().find(|p| !p.health.is_down())
    }

    /// Whether UDP to port 53 goes as DNS over TCP through `via`: when
    /// asked, and always through an HTTP proxy, which carries no UDP.
    pub fn dns_over_tcp(&self, via: &Via) -> bool {
        match via {
            Via::Direct => false,
            Via::Proxy(p) => self.dns_over_tcp || p.kind == ProxyKind::Http,
        }
    }

    /// A TCP connection to `dst`: direct, or through the proxy's CONNECT
    /// (by address, or by name: fake DNS hands the proxy the name).
    /// Failures reaching the proxy mark it unreachable; refusals are
    /// counted.
    pub async fn tcp(&self, via: &Via, dst: &Address) -> Result<TcpStream, UpstreamError> {
        let proxy = match (via, dst) {
            (Via::Direct, Address::Ip(dst)) => {
                return match tokio::time::timeout(CONNECT_TIMEOUT, connect(*dst, &self.bind)).await
                {
                    Ok(r) => Ok(r?),
                    Err(_) => Err(timed_out().into()),
                };
            }
            (Via::Direct, Address::Domain(..)) => {
                return Err(UpstreamError::Protocol("a name goes only to a proxy"));
            }
            (Via::Proxy(p), _) => p,
        };
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, proxy.handshake(&self.bind, Some(dst)))
            .await
            .unwrap_or_else(|_| Err(timed_out().into()));
        proxy
            .health
            .record(proxy.server, result.as_ref().err(), true);
        result
    }

    /// [`Relay::tcp`] through `via`, and should its proxy turn out to be
    /// unreachable, through the next live one, and so on: the flow that
    /// finds a proxy gone is carried by the failover rather than reset.
    /// Returns the stream and the way it went.
    pub async fn tcp_with_failover(
        &self,
        mut via: Via,
        dst: &Address,
    ) -> Result<(TcpStream, Via), UpstreamError> {
        // Each try marks its proxy down, so each picks another; a probe
        // that brings one back meanwhile could repeat one, hence the bound.
        for _ in 1..self.proxies.len() {
            match self.tcp(&via, dst).await {
                Ok(stream) => return Ok((stream, via)),
                // The flow was counted when it chose its first proxy.
                Err(e) if e.is_upstream_fault() => match self.live() {
                    Some(next) => via = Via::Proxy(Arc::clone(next)),
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        let stream = self.tcp(&via, dst).await?;
        Ok((stream, via))
    }

    /// A new UDP association with a SOCKS5 proxy.
    pub async fn associate(&self, proxy: &Proxy) -> Result<Association, UpstreamError> {
        if proxy.kind != ProxyKind::Socks5 {
            return Err(UpstreamError::Protocol("only SOCKS5 carries UDP"));
        }
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            let mut control = connect(proxy.server, &self.bind).await?;
            let bound = socks5::handshake(
                &mut control,
                proxy.auth.as_ref(),
                Command::UdpAssociate,
                &socks5::any_address(proxy.server),
            )
            .await?;
            let relay = socks5::relay_address(&bound, proxy.server)?;
            Ok(Association {
                control,
                socket: self.udp(relay)?,
            })
        })
        .await
        .unwrap_or_else(|_| Err(timed_out().into()));
        proxy
            .health
            .record(proxy.server, result.as_ref().err(), true);
        result
    }

    /// A UDP socket bound to the physical interface and connected to `dst`.
    pub fn udp(&self, dst: SocketAddr) -> io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(dst), Type::DGRAM, None)?;
        (self.bind)(&socket)?;
        socket.set_nonblocking(true)?;
        socket.connect(&dst.into())?;
        UdpSocket::from_std(socket.into())
    }

    /// Reaches the proxy and logs in, without a flow: is it there, and
    /// does it take our credentials?
    pub async fn probe(&self, proxy: &Proxy) -> Result<(), UpstreamError> {
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, proxy.handshake(&self.bind, None))
            .await
            .unwrap_or_else(|_| Err(timed_out().into()))
            .map(drop);
        proxy
            .health
            .record(proxy.server, result.as_ref().err(), false);
        result
    }

    /// Probes every proxy once, side by side (a silent one must not hold
    /// up the others for its timeout); the first error in order, if any.
    pub async fn probe_all(&self) -> Result<(), UpstreamError> {
        let probes = self.proxies.iter().map(|p| self.probe(p));
        futures::future::join_all(probes)
            .await
            .into_iter()
            .collect()
    }

    /// While a proxy is unreachable, probes it with backoff until it
    /// answers again, so recovery (and the move back from a failover)
    /// does not wait for a user's flow. One loop per proxy; runs until
    /// dropped.
    pub async fn keep_watch(self) {
        let watches = self.proxies.iter().map(|p| {
            let (relay, proxy) = (self.clone(), Arc::clone(p));
            async move {
                loop {
                    proxy.health.wake.notified().await;
                    let mut wait = PROBE_FIRST;
                    while proxy.health.is_down() {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(PROBE_MAX);
                        let _ = relay.probe(&proxy).await;
                    }
                }
            }
        });
        let mut all: JoinSet<()> = JoinSet::new();
        for w in watches {
            all.spawn(w);
        }
        while all.join_next().await.is_some() {}
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

async fn connect(dst: SocketAddr, bind: &Binder) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    bind(&socket)?;
    socket.set_nonblocking(true)?;
    let std_socket: std::net::TcpStream = socket.into();
    let stream = TcpSocket::from_std_stream(std_socket).connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The upstream's health: reachable or not, why not, and what was refused.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<HealthState>,
    /// Told when the server becomes unreachable: the prober starts.
    wake: Notify,
}

#[derive(Debug, Default)]
struct HealthState {
    down: bool,
    last_error: Option<String>,
    reconnects: u64,
    flows_to_upstream: u64,
    refused: BTreeMap<&'static str, u64>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether new flows should be refused at once rather than wait on a
    /// server that is not there.
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// Records the outcome of one attempt to use the server; `flow` says
    /// whether a flow depended on it (and is refused if it failed), rather
    /// than the helper's own probe.
    pub fn record(&self, server: SocketAddr, error: Option<&UpstreamError>, flow: bool) {
        let mut s = self.lock();
        if let (Some(e), true) = (error, flow) {
            *s.refused.entry(e.reason()).or_default() += 1;
        }
        match error {
            None => {
                if s.down {
                    s.down = false;
                    s.reconnects += 1;
                    tracing::info!("upstream {server} is reachable again");
                }
            }
            Some(e) if e.is_upstream_fault() => {
                let message = format!("{server}: {e}");
                if !s.down {
                    s.down = true;
                    tracing::warn!("upstream unreachable: {message}");
                    self.wake.notify_one();
                }
                s.last_error = Some(message);
            }
            Some(_) => {}
        }
    }

    /// Counts a flow refused without trying, because the server is down.
    pub fn refused_while_down(&self) {
        self.refused("upstream_down");
    }

    /// Counts a flow the helper refused for `reason` without asking the
    /// server (`udp_not_supported`: UDP through an HTTP proxy).
    pub fn refused(&self, reason: &'static str) {
        *self.lock().refused.entry(reason).or_default() += 1;
    }

    /// Counts a flow whose destination is the server itself.
    pub fn flow_to_upstream(&self) {
        self.lock().flows_to_upstream += 1;
    }

    pub fn snapshot(&self) -> UpstreamHealth {
        let s = self.lock();
        UpstreamHealth {
            reachable: !s.down,
            last_error: s.last_error.clone(),
            reconnects: s.reconnects,
            flows_to_upstream: s.flows_to_upstream,
            refused: s
                .refused
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A "SOCKS5 server" on loopback that answers every connection with
    /// `answer` and then holds it open (or says nothing when empty).
    async fn fake_server(answer: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(answer).await;
                held.push(s);
            }
        });
        addr
    }

    fn relay_via(proxies: &[(ProxyKind, SocketAddr)]) -> Relay {
        let proxies = proxies
            .iter()
            .map(|(kind, server)| Proxy::new(*kind, *server, None, format!("{kind:?}://{server}")))
            .collect();
        Relay::proxied(Arc::new(|_: &Socket| Ok(())), proxies, false)
    }

    fn relay_to(server: SocketAddr) -> Relay {
        relay_via(&[(ProxyKind::Socks5, server)])
    }

    fn first(relay: &Relay) -> &Proxy {
        &relay.proxies()[0]
    }

    fn via(relay: &Relay) -> Via {
        relay.choose(dst()).unwrap()
    }

    fn dst() -> SocketAddr {
        "203.0.113.5:80".parse().unwrap()
    }

    #[tokio::test]
    async fn a_server_answering_garbage_is_unreachable_with_the_reason() {
        let relay = relay_to(fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n").await);
        let err = relay
            .tcp(&via(&relay), &Address::Ip(dst()))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "protocol_error");
        let health = first(&relay).health.snapshot();
        assert!(!health.reachable);
        assert!(health.last_error.unwrap().ends_with(
            "the SOCKS5 server broke the protocol: not a SOCKS5 server (wrong version)"
        ));
        // Refused at once from now on, until a probe gets through.
        assert!(first(&relay).health.is_down());
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_times_out_and_is_marked_down() {
        let relay = relay_to(fake_server(b"").await);
        let started = tokio::time::Instant::now();
        let err = relay
            .tcp(&via(&relay), &Address::Ip(dst()))
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), UPSTREAM_TIMEOUT);
        assert_eq!(err.reason(), "upstream_timeout");
        assert!(!first(&relay).health.snapshot().reachable);
    }

    #[tokio::test]
    async fn the_prober_notices_the_server_is_back_without_any_flow() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let relay = relay_to(addr);
        assert!(
            relay.probe(first(&relay)).await.is_err(),
            "nothing listens yet"
        );
        let watch = tokio::spawn(relay.clone().keep_watch());
        // The server comes back (a real SOCKS5 greeting answer: no auth).
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut greeting = [0_u8; 3];
                let _ = tokio::io::AsyncReadExt::read_exact(&mut s, &mut greeting).await;
                let _ = s.write_all(&[5, 0]).await;
            }
        });
        for _ in 0..100 {
            if first(&relay).health.snapshot().reachable {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let health = first(&relay).health.snapshot();
        assert!(health.reachable, "{health:?}");
        assert_eq!(health.reconnects, 1);
        watch.abort();
    }

    fn url(v: &Via) -> &str {
        match v {
            Via::Direct => "direct",
            Via::Proxy(p) => &p.url,
        }
    }

    #[tokio::test]
    async fn new_flows_fail_over_in_order_and_come_back_when_the_first_recovers() {
        let (a, b) = (server(), "198.51.100.3:3128".parse().unwrap());
        let relay = relay_via(&[(ProxyKind::Socks5, a), (ProxyKind::Http, b)]);
        assert_eq!(url(&via(&relay)), format!("Socks5://{a}"));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        first(&relay).health.record(a, Some(&refused), true);
        assert_eq!(
            url(&via(&relay)),
            format!("Http://{b}"),
            "the failover takes new flows"
        );
        assert_eq!(relay.active().map(|p| p.server), Some(b));
        relay.proxies()[1].health.record(b, Some(&refused), true);
        assert!(relay.choose(dst()).is_none(), "both down: refused at once");
        assert_eq!(first(&relay).health.snapshot().refused["upstream_down"], 1);
        first(&relay).health.record(a, None, false);
        assert_eq!(
            url(&via(&relay)),
            format!("Socks5://{a}"),
            "back to the first"
        );
        let direct = Relay::direct(Arc::new(|_: &Socket| Ok(())));
        assert_eq!(url(&direct.choose(dst()).unwrap()), "direct");
        assert!(direct.active().is_none());
    }

    #[tokio::test]
    async fn dns_goes_over_tcp_through_an_http_proxy_and_when_asked() {
        let http = relay_via(&[(ProxyKind::Http, server())]);
        assert!(http.dns_over_tcp(&via(&http)));
        let socks = relay_to(server());
        assert!(!socks.dns_over_tcp(&via(&socks)));
        assert!(!socks.dns_over_tcp(&Via::Direct));
    }

    fn server() -> SocketAddr {
        "198.51.100.2:1080".parse().unwrap()
    }

    #[test]
    fn an_upstream_fault_marks_it_down_and_success_brings_it_back() {
        let h = Health::default();
        assert!(!h.is_down());
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused).into();
        h.record(server(), Some(&refused), true);
        h.record(server(), Some(&refused), false);
        assert!(h.is_down());
        h.refused_while_down();
        h.record(server(), None, false);
        let s = h.snapshot();
        assert!(s.reachable);
        assert_eq!(s.reconnects, 1);
        assert_eq!(
            s.last_error.as_deref(),
            Some("198.51.100.2:1080: connection refused")
        );
        assert_eq!(
            s.refused["upstream_unreachable"], 1,
            "probes refuse no flow"
        );
        assert_eq!(s.refused["upstream_down"], 1);
    }

    #[test]
    fn a_refused_destination_is_counted_but_the_server_stays_up() {
        let h = Health::default();
        h.record(
            server(),
            Some(&UpstreamError::Refused(socks5::ReplyCode::HostUnreachable)),
            true,
        );
        let s = h.snapshot();
        assert!(s.reachable);
        assert_eq!(s.last_error, None);
        assert_eq!(s.refused["host_unreachable"], 1);
    }

    #[test]
    fn rejected_credentials_are_the_servers_fault_and_say_what_to_fix() {
        let h = Health::default();
        h.record(server(), Some(&UpstreamError::AuthRejected(1)), true);
        let s = h.snapshot();
        assert!(!s.reachable);
        assert!(s
            .last_error
            .unwrap()
            .contains("check them in the upstream URL"));
        assert_eq!(s.refused["auth_rejected"], 1);
    }
}
