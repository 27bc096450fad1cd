//! Upstreams: where terminated flows leave the machine, directly or through
//! a SOCKS5 server, and `echo` for ICMP (S5 `forward` mode). Every socket
//! opened outward is bound to the physical interface first, so nothing can
//! loop back into the tunnel (S6).

pub mod datagram;
pub mod echo;
pub mod socks5;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::sync::Notify;
use ztun_proto::{Credentials, UpstreamHealth};

use socks5::{Address, Command, Socks5Error};

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
    socks: Option<Arc<Socks>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("socks", &self.socks)
            .finish_non_exhaustive()
    }
}

/// A SOCKS5 upstream and what the relay has learnt about it.
#[derive(Debug)]
pub struct Socks {
    pub server: SocketAddr,
    auth: Option<Credentials>,
    pub dns_over_tcp: bool,
    pub health: Health,
}

/// A UDP association: datagrams go through `socket` (connected to the
/// server's relay address) for as long as `control` stays open.
#[derive(Debug)]
pub struct Association {
    pub control: TcpStream,
    pub socket: UdpSocket,
}

impl Relay {
    pub fn direct(bind: Binder) -> Self {
        Self { bind, socks: None }
    }

    pub fn socks5(
        bind: Binder,
        server: SocketAddr,
        auth: Option<Credentials>,
        dns_over_tcp: bool,
    ) -> Self {
        Self {
            bind,
            socks: Some(Arc::new(Socks {
                server,
                auth,
                dns_over_tcp,
                health: Health::default(),
            })),
        }
    }

    pub fn socks(&self) -> Option<&Socks> {
        self.socks.as_deref()
    }

    /// A TCP connection to `dst`: direct, or a SOCKS5 CONNECT. Failures
    /// reaching the server mark it unreachable; refusals are counted.
    pub async fn tcp(&self, dst: SocketAddr) -> Result<TcpStream, Socks5Error> {
        let Some(socks) = &self.socks else {
            return match tokio::time::timeout(CONNECT_TIMEOUT, connect(dst, &self.bind)).await {
                Ok(r) => Ok(r?),
                Err(_) => Err(timed_out().into()),
            };
        };
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            let mut stream = connect(socks.server, &self.bind).await?;
            socks5::handshake(
                &mut stream,
                socks.auth.as_ref(),
                Command::Connect,
                &Address::Ip(dst),
            )
            .await?;
            Ok(stream)
        })
        .await
        .unwrap_or_else(|_| Err(timed_out().into()));
        socks
            .health
            .record(socks.server, result.as_ref().err(), true);
        result
    }

    /// A new UDP association with the SOCKS5 server.
    pub async fn associate(&self) -> Result<Association, Socks5Error> {
        let Some(socks) = &self.socks else {
            return Err(Socks5Error::Protocol("no SOCKS5 upstream"));
        };
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            let mut control = connect(socks.server, &self.bind).await?;
            let bound = socks5::handshake(
                &mut control,
                socks.auth.as_ref(),
                Command::UdpAssociate,
                &socks5::any_address(socks.server),
            )
            .await?;
            let relay = socks5::relay_address(&bound, socks.server)?;
            Ok(Association {
                control,
                socket: self.udp(relay)?,
            })
        })
        .await
        .unwrap_or_else(|_| Err(timed_out().into()));
        socks
            .health
            .record(socks.server, result.as_ref().err(), true);
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

    /// Reaches the SOCKS5 server and authenticates, without a request: is
    /// the server there and does it take our credentials?
    pub async fn probe(&self) -> Result<(), Socks5Error> {
        let Some(socks) = &self.socks else {
            return Ok(());
        };
        let result = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            let mut stream = connect(socks.server, &self.bind).await?;
            socks5::authenticate(&mut stream, socks.auth.as_ref()).await
        })
        .await
        .unwrap_or_else(|_| Err(timed_out().into()));
        socks
            .health
            .record(socks.server, result.as_ref().err(), false);
        result
    }

    /// While the server is unreachable, probes it with backoff until it
    /// answers again, so recovery does not wait for a user's flow. Runs
    /// until dropped.
    pub async fn keep_watch(self) {
        let Some(socks) = self.socks.clone() else {
            return;
        };
        loop {
            socks.health.wake.notified().await;
            let mut wait = PROBE_FIRST;
            while socks.health.is_down() {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PROBE_MAX);
                let _ = self.probe().await;
            }
        }
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
    pub fn record(&self, server: SocketAddr, error: Option<&Socks5Error>, flow: bool) {
        let mut s = self.lock();
        if let (Some(e), true) = (error, flow) {
            *s.refused.entry(e.reason()).or_default() += 1;
        }
        match error {
            None => {
                if s.down {
                    s.down = false;
                    s.reconnects += 1;
                    tracing::info!("SOCKS5 upstream {server} is reachable again");
                }
            }
            Some(e) if e.is_upstream_fault() => {
                let message = format!("{server}: {e}");
                if !s.down {
                    s.down = true;
                    tracing::warn!("SOCKS5 upstream unreachable: {message}");
                    self.wake.notify_one();
                }
                s.last_error = Some(message);
            }
            Some(_) => {}
        }
    }

    /// Counts a flow refused without trying, because the server is down.
    pub fn refused_while_down(&self) {
        *self.lock().refused.entry("upstream_down").or_default() += 1;
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

    fn relay_to(server: SocketAddr) -> Relay {
        Relay::socks5(Arc::new(|_: &Socket| Ok(())), server, None, false)
    }

    fn dst() -> SocketAddr {
        "203.0.113.5:80".parse().unwrap()
    }

    #[tokio::test]
    async fn a_server_answering_garbage_is_unreachable_with_the_reason() {
        let relay = relay_to(fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n").await);
        let err = relay.tcp(dst()).await.unwrap_err();
        assert_eq!(err.reason(), "protocol_error");
        let health = relay.socks().unwrap().health.snapshot();
        assert!(!health.reachable);
        assert!(health.last_error.unwrap().ends_with(
            "the SOCKS5 server broke the protocol: not a SOCKS5 server (wrong version)"
        ));
        // Refused at once from now on, until a probe gets through.
        assert!(relay.socks().unwrap().health.is_down());
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_times_out_and_is_marked_down() {
        let relay = relay_to(fake_server(b"").await);
        let started = tokio::time::Instant::now();
        let err = relay.tcp(dst()).await.unwrap_err();
        assert_eq!(started.elapsed(), UPSTREAM_TIMEOUT);
        assert_eq!(err.reason(), "upstream_timeout");
        assert!(!relay.socks().unwrap().health.snapshot().reachable);
    }

    #[tokio::test]
    async fn the_prober_notices_the_server_is_back_without_any_flow() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let relay = relay_to(addr);
        assert!(relay.probe().await.is_err(), "nothing listens yet");
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
            if relay.socks().unwrap().health.snapshot().reachable {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let health = relay.socks().unwrap().health.snapshot();
        assert!(health.reachable, "{health:?}");
        assert_eq!(health.reconnects, 1);
        watch.abort();
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
            Some(&Socks5Error::Refused(socks5::ReplyCode::HostUnreachable)),
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
        h.record(server(), Some(&Socks5Error::AuthRejected(1)), true);
        let s = h.snapshot();
        assert!(!s.reachable);
        assert!(s
            .last_error
            .unwrap()
            .contains("check them in the upstream URL"));
        assert_eq!(s.refused["auth_rejected"], 1);
    }
}
