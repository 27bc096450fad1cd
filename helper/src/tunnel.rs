//! One tunnel's data plane: packets from the device go through the engine,
//! and the flows the engine terminates are relayed from the helper's own
//! sockets, each bound to the physical interface (S5, S6): directly, or
//! through a proxy chosen per flow from the upstream and its failovers: a
//! SOCKS5 server (CONNECT for TCP, one UDP ASSOCIATE per UDP flow, or DNS
//! over TCP through CONNECT for port 53 when asked) or an HTTP proxy
//! (CONNECT for TCP and for DNS over TCP; other UDP is refused at once).
//!
//! One task owns the engine (it is a plain state machine, not shared). Relay
//! tasks talk to it through a bounded inbox. Memory per flow is bounded in
//! both directions: client→upstream data waits in a channel of
//! [`CHUNKS_PER_FLOW`] chunks and, when that is full, in smoltcp's receive
//! window (the client is slowed, not buffered); upstream→client data is read
//! only against credits the engine returns as smoltcp accepts the bytes.
//!
//! UDP takes no task hop on the way out: the engine task sends a flow's
//! datagrams itself, on the flow's socket (direct, or the SOCKS5
//! association's behind the flow's fixed header), a run of them in one
//! segmented send ([`Datagrams`]). A relay task only receives, a coalesced
//! run per message. While an association is being set up, datagrams wait in
//! a queue of [`DATAGRAMS_PER_FLOW`] that loses its oldest (counted as
//! `udp_queue_full`), so a slow upstream never stalls the engine.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use ztun_engine::{DropReason, Engine, EngineConfig, Event, FlowId, Unreachable};
use ztun_proto::{Counters, FlowProtocol, MAX_FLOWS_PER_REPLY};

use crate::device::{lost_one_packet, Batch, PacketDevice};
use crate::fakedns::{unix_now, FakeDns, Handled, Lookup};
use crate::relay::datagram::{self, Datagrams};
use crate::relay::echo::{EchoForwarder, EchoKey};
use crate::relay::socks5::{self, Address};
use crate::relay::{Proxy, ProxyKind, Relay, UpstreamError, Via};

/// Bytes moved per relay step in either direction: a smoltcp read or an
/// upstream socket read, and one message between the engine and the
/// flow's relay task. Large, because the engine thread is the bottleneck
/// and every chunk costs it a message and the relay a syscall (measured in
/// direct mode: 16 KiB chunks upload at 5.3 Gbit/s, 64 KiB at 6.5).
pub const CHUNK: usize = 64 * 1024;
/// Chunks in flight per flow and direction.
pub const CHUNKS_PER_FLOW: usize = 4;
/// Datagrams waiting per UDP flow while its SOCKS5 association is set up,
/// or for its DNS-over-TCP relay; beyond that the oldest are lost, as on a
/// busy link.
pub const DATAGRAMS_PER_FLOW: usize = 64;
/// Relay messages taken per wakeup: at most this many runs of datagrams
/// (each at most 64) reach the engine's transmit queue (1,024 packets)
/// before it is drained to the device.
const MESSAGES_PER_WAKEUP: usize = 16;
/// The DNS port: with `dns_over_tcp`, UDP flows to it are relayed as DNS
/// over TCP (RFC 7766).
const DNS_PORT: u16 = 53;

/// Device reads taken per wakeup before the engine's events and output are
/// processed: one pass of that work serves them all.
pub const READS_PER_WAKEUP: usize = 64;

/// What relay tasks tell the engine task.
enum Upstream {
    TcpFailed(FlowId),
    /// The flow's proxy was down and a failover carries it instead.
    TcpFailedOver(FlowId, Via),
    TcpData(FlowId, Vec<u8>),
    TcpEof(FlowId),
    /// The upstream writer took a chunk: the flow may read from the client again.
    TcpDrained(FlowId),
    UdpData(FlowId, Datagrams),
    /// The flow's SOCKS5 association is up: its datagrams go out on this
    /// socket from now on.
    UdpAssociated(FlowId, Arc<UdpSocket>),
    /// The flow's destination cannot be reached: the client gets an ICMP
    /// destination unreachable.
    UdpUnreachable(FlowId, Unreachable),
    /// The flow's socket, association or DNS connection ended; the next
    /// datagram opens a new one.
    UdpClosed(FlowId),
}

/// What `flows` shows of a flow, kept beside it.
#[derive(Debug, Clone)]
struct FlowMeta {
    src: SocketAddr,
    dst: SocketAddr,
    /// The name a fake address stands for.
    host: Option<Arc<str>>,
    via: Via,
    opened: Instant,
    /// Payload bytes from the application, and back to it.
    up: u64,
    down: u64,
}

impl FlowMeta {
    fn new(src: SocketAddr, target: &Address, dst: SocketAddr, via: Via) -> Self {
        Self {
            src,
            dst,
            host: match target {
                Address::Domain(name, _) => Some(Arc::from(name.as_str())),
                Address::Ip(_) => None,
            },
            via,
            opened: Instant::now(),
            up: 0,
            down: 0,
        }
    }

    fn open(&self, protocol: FlowProtocol, now: Instant) -> OpenFlow {
        OpenFlow {
            protocol,
            src: self.src,
            dst: self.dst,
            host: self.host.as_deref().map(str::to_owned),
            upstream: match &self.via {
                Via::Direct => "direct".to_owned(),
                Via::Proxy(p) => p.url.clone(),
            },
            bytes_up: self.up,
            bytes_down: self.down,
            age: now.saturating_duration_since(self.opened),
        }
    }
}

/// One open flow as the data plane reports it to `flows`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFlow {
    pub protocol: FlowProtocol,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The name `dst` stands for (a fake DNS address).
    pub host: Option<String>,
    /// Where it leaves: `direct`, or the proxy's URL (password as `***`).
    pub upstream: String,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub age: Duration,
}

/// The open flows, the busiest [`MAX_FLOWS_PER_REPLY`] of them, and how
/// many more there were.
#[derive(Debug, Default)]
pub struct FlowList {
    pub flows: Vec<OpenFlow>,
    pub omitted: u64,
}

impl FlowList {
    /// At most `limit` of `flows`: the ones that moved the most bytes.
    fn busiest(mut flows: Vec<OpenFlow>, limit: usize) -> Self {
        let mut omitted = 0;
        if flows.len() > limit {
            let bytes = |f: &OpenFlow| std::cmp::Reverse(f.bytes_up.saturating_add(f.bytes_down));
            flows.select_nth_unstable_by_key(limit.saturating_sub(1), bytes);
            omitted = (flows.len() - limit) as u64;
            flows.truncate(limit);
        }
        Self { flows, omitted }
    }
}

/// A `flows` request to a running data plane: it answers on the channel.
pub type FlowsQuery = oneshot::Sender<FlowList>;

struct TcpFlow {
    meta: FlowMeta,
    /// Client→upstream chunks; dropped on the client's FIN, which the
    /// writer turns into a shutdown of the upstream socket.
    to_upstream: Option<mpsc::Sender<Vec<u8>>>,
    /// A chunk read from the client that did not fit the channel yet.
    parked: Option<Vec<u8>>,
    client_fin: bool,
    /// Upstream→client bytes not yet accepted by smoltcp.
    from_upstream: VecDeque<(Vec<u8>, usize)>,
    credits: Arc<Semaphore>,
    upstream_eof: bool,
    upstream_shut: bool,
    task: tokio::task::AbortHandle,
}

struct UdpFlow {
    meta: FlowMeta,
    out: UdpOut,
    task: tokio::task::AbortHandle,
}

enum UdpOut {
    /// Straight out of a socket of the helper's, each datagram behind
    /// `header`: nothing for a direct flow, the SOCKS5 UDP header (RFC 1928
    /// section 7) naming the flow's destination for an association.
    Socket {
        socket: Arc<UdpSocket>,
        header: UdpHeader,
    },
    /// A SOCKS5 association is being set up; datagrams wait, oldest lost
    /// first, to go out behind `header` once it is.
    Associating {
        waiting: VecDeque<Vec<u8>>,
        header: UdpHeader,
    },
    /// Through a relay task (DNS over TCP).
    Relayed(mpsc::Sender<Vec<u8>>),
}

/// A SOCKS5 UDP request header, fixed for the life of a flow.
#[derive(Debug, Clone, Copy)]
struct UdpHeader {
    bytes: [u8; socks5::MAX_UDP_HEADER],
    len: usize,
}

impl UdpHeader {
    const NONE: Self = Self {
        bytes: [0; socks5::MAX_UDP_HEADER],
        len: 0,
    };

    fn socks5(dst: &Address) -> Self {
        let mut bytes = [0; socks5::MAX_UDP_HEADER];
        let len = socks5::write_udp_header(dst, &mut bytes);
        Self { bytes, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Datagrams the relay lost on its side of the engine, by reason; shown
/// among the engine's drops.
#[derive(Debug, Clone, Copy, Default)]
struct RelayLosses {
    /// Waiting for an association or a DNS relay, the queue was full.
    udp_queue_full: u64,
    /// The socket refused them (its buffer was full).
    udp_send_failed: u64,
    /// DNS queries answered SERVFAIL: every fake address was in use.
    fake_pool_full: u64,
    /// Flows to a fake address no name holds (a map lost, or expired):
    /// refused so the application resolves again.
    fake_address_unknown: u64,
}

/// A running data plane's counters as `status` reads them: the engine's as
/// of the end of its latest pass over a batch, so a query sees every byte
/// moved up to that pass (not up to a publish interval ago); the rates are
/// over the last second.
#[derive(Debug, Default)]
pub struct LiveCounters(Mutex<Live>);

#[derive(Debug, Default)]
struct Live {
    engine: ztun_engine::Counters,
    flows_open: u64,
    relay: RelayLosses,
    rate_in: u64,
    rate_out: u64,
}

impl LiveCounters {
    fn update(&self, engine: &Engine, relay: RelayLosses) {
        let mut live = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        live.engine = engine.counters();
        live.flows_open = (engine.tcp_flow_count() + engine.udp_mapping_count()) as u64;
        live.relay = relay;
    }

    fn set_rates(&self, rates: &mut RateMeter) {
        let mut live = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes_in, bytes_out) = (live.engine.rx_bytes, live.engine.tx_bytes);
        (live.rate_in, live.rate_out) =
            rates.sample(std::time::Instant::now(), bytes_in, bytes_out);
    }

    /// The counters now.
    pub fn snapshot(&self) -> Counters {
        let live = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let c = &live.engine;
        let relay = [
            ("udp_queue_full", live.relay.udp_queue_full),
            ("udp_send_failed", live.relay.udp_send_failed),
            ("fake_pool_full", live.relay.fake_pool_full),
            ("fake_address_unknown", live.relay.fake_address_unknown),
        ];
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), c.drops(*r)))
            .chain(relay)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.to_owned(), n))
            .collect();
        Counters {
            packets_in: c.rx_packets,
            packets_out: c.tx_packets,
            bytes_in: c.rx_bytes,
            bytes_out: c.tx_bytes,
            flows_open: live.flows_open,
            flows_total: c.tcp_flows_opened + c.udp_mappings_created,
            rate_in: live.rate_in,
            rate_out: live.rate_out,
            drops,
        }
    }
}

/// Counters the daemon reads for `status`.
pub type SharedCounters = Arc<LiveCounters>;

/// Runs the data plane until the future is dropped (which aborts every relay
/// task with it) or the device fails.
pub async fn run<D: PacketDevice>(
    device: Arc<D>,
    config: EngineConfig,
    echo: Option<EchoForwarder>,
    relay: Relay,
    dns: Option<FakeDns>,
    counters: SharedCounters,
    mut queries: mpsc::Receiver<FlowsQuery>,
) -> io::Result<()> {
    let started = std::time::Instant::now();
    let now = move || {
        ztun_engine::Instant::from_micros(
            i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX),
        )
    };
    let mtu = config.mtu;
    let mut engine = Engine::new(config, now())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut dp = DataPlane {
        tcp: HashMap::new(),
        udp: HashMap::new(),
        tasks: JoinSet::new(),
        inbox: mpsc::channel(1024),
        relay: relay.clone(),
        echo,
        staged: Datagrams::default(),
        staged_flow: None,
        gso: true,
        losses: RelayLosses::default(),
        dns,
        dns_tcp: HashMap::new(),
        reply: Vec::with_capacity(512),
        saving: None,
    };
    let mut messages = Vec::with_capacity(MESSAGES_PER_WAKEUP);
    dp.tasks.spawn(relay.keep_watch());
    let mtu = mtu.max(1280);
    let mut scratch = device.scratch();
    let mut rx = Batch::for_receive(device.headroom(), mtu);
    let mut tx = Batch::for_send(device.headroom(), mtu);
    let mut refresh = tokio::time::interval(Duration::from_millis(250));
    let mut rates = RateMeter::default();
    loop {
        let deadline = engine.poll_at().map(|at| {
            let micros = u64::try_from(at.total_micros()).unwrap_or(0);
            tokio::time::Instant::from_std(started + Duration::from_micros(micros))
        });
        let echo_reply = async {
            match dp.echo.as_mut() {
                Some(f) => f.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = device.recv_batch(&mut scratch, &mut rx) => {
                received(&mut engine, &rx, read, &now)?;
                for _ in 1..READS_PER_WAKEUP {
                    let read = device.try_recv_batch(&mut scratch, &mut rx);
                    if matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                        break;
                    }
                    received(&mut engine, &rx, read, &now)?;
                }
            }
            n = dp.inbox.1.recv_many(&mut messages, MESSAGES_PER_WAKEUP) => {
                if n > 0 {
                    for msg in messages.drain(..) {
                        dp.upstream(&mut engine, msg);
                    }
                }
            }
            reply = echo_reply => {
                if let Ok(r) = reply {
                    let k = r.key;
                    let request = ztun_engine::EchoRequest { src: k.src, dst: k.dst, ident: k.ident, seq: k.seq, payload: Vec::new() };
                    let _ = engine.echo_reply(&request, &r.payload);
                }
            }
            () = sleep_until(deadline) => {}
            _ = refresh.tick() => {
                counters.set_rates(&mut rates);
                dp.save_fake_dns();
                device.trim(&mut scratch);
            }
            Some(reply) = queries.recv() => {
                let _ = reply.send(dp.flows(Instant::now()));
            }
            Some(_) = dp.tasks.join_next(), if !dp.tasks.is_empty() => {}
        }
        // Events arise from input and from timers that poll_transmit runs,
        // so drain both until neither has anything left.
        loop {
            dp.events(&mut engine);
            let mut sent = false;
            while let Some(slot) = tx.next_slot() {
                let Some(n) = engine.poll_transmit(slot, now()) else {
                    break;
                };
                tx.push(n);
                if tx.is_full() {
                    device.send_batch(&mut scratch, &mut tx).await?;
                }
                sent = true;
            }
            device.send_batch(&mut scratch, &mut tx).await?;
            if !sent {
                break;
            }
        }
        dp.events(&mut engine);
        counters.update(&engine, dp.losses());
    }
}

/// Feeds a batch read from the device to the engine. A read that lost only
/// its packet (one tun-rs could not split) is logged and the tunnel goes on;
/// a failed device ends the data plane.
fn received(
    engine: &mut Engine,
    rx: &Batch,
    read: io::Result<()>,
    now: &impl Fn() -> ztun_engine::Instant,
) -> io::Result<()> {
    match read {
        Ok(()) => {
            let at = now();
            let received = rx.received();
            for packet in rx.packets() {
                engine.handle_received(packet, received, at);
            }
            Ok(())
        }
        Err(e) if lost_one_packet(&e) => {
            tracing::debug!("a packet from the device was dropped: {e}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Byte rates over a sliding window of the counter samples.
#[derive(Debug, Default)]
struct RateMeter {
    /// (when, bytes in, bytes out), oldest first, spanning about a second.
    samples: VecDeque<(std::time::Instant, u64, u64)>,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(1);

    /// Adds a sample and returns (in, out) bytes per second over the window.
    fn sample(&mut self, at: std::time::Instant, bytes_in: u64, bytes_out: u64) -> (u64, u64) {
        self.samples.push_back((at, bytes_in, bytes_out));
        while self.samples.len() > 2 && at.duration_since(self.samples[1].0) >= Self::WINDOW {
            self.samples.pop_front();
        }
        let (t0, in0, out0) = self.samples[0];
        let secs = at.duration_since(t0).as_secs_f64();
        if secs <= 0.0 {
            return (0, 0);
        }
        // Display figures: precision beyond 2^52 bytes/s does not matter.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let per_sec = |from: u64, to: u64| ((to - from) as f64 / secs) as u64;
        (per_sec(in0, bytes_in), per_sec(out0, bytes_out))
    }
}

struct DataPlane {
    tcp: HashMap<FlowId, TcpFlow>,
    udp: HashMap<FlowId, UdpFlow>,
    tasks: JoinSet<()>,
    inbox: (mpsc::Sender<Upstream>, mpsc::Receiver<Upstream>),
    relay: Relay,
    echo: Option<EchoForwarder>,
    /// Datagrams of `staged_flow` on their way out together; sent when
    /// another flow's datagram comes, or the engine has no more events.
    staged: Datagrams,
    staged_flow: Option<FlowId>,
    /// Segmented sends work on this path (until the kernel says otherwise).
    gso: bool,
    losses: RelayLosses,
    dns: Option<FakeDns>,
    /// DNS-over-TCP connections the fake DNS answers: bytes read, not yet
    /// a whole message.
    dns_tcp: HashMap<FlowId, Vec<u8>>,
    /// A DNS answer being written.
    reply: Vec<u8>,
    /// The fake DNS map being written to its file.
    saving: Option<tokio::task::JoinHandle<()>>,
}

/// A DNS-over-TCP connection holds at most this much of a query: one is a
/// few dozen bytes.
const DNS_TCP_BUFFER: usize = 4096;

impl DataPlane {
    fn events(&mut self, engine: &mut Engine) {
        while let Some(event) = engine.poll_event() {
            match event {
                Event::TcpOpened { flow, src, dst } => self.open_tcp(engine, flow, src, dst),
                Event::TcpReadable { flow } | Event::TcpReadClosed { flow }
                    if self.dns_tcp.contains_key(&flow) =>
                {
                    self.fake_dns_tcp(engine, flow, matches!(event, Event::TcpReadClosed { .. }));
                }
                Event::TcpReadable { flow } | Event::TcpReadClosed { flow } => {
                    if let Event::TcpReadClosed { .. } = event {
                        if let Some(f) = self.tcp.get_mut(&flow) {
                            f.client_fin = true;
                        }
                    }
                    self.client_to_upstream(engine, flow);
                }
                Event::TcpWritable { flow } => self.upstream_to_client(engine, flow),
                Event::TcpClosed { flow } | Event::TcpReset { flow } => {
                    if let Some(f) = self.tcp.remove(&flow) {
                        f.task.abort();
                    }
                    self.dns_tcp.remove(&flow);
                }
                Event::UdpDatagram(d) => self.udp_out(engine, d.flow, d.src, d.dst, d.payload),
                Event::UdpExpired { flow } => {
                    self.send_staged();
                    if let Some(f) = self.udp.remove(&flow) {
                        f.task.abort();
                    }
                }
                Event::EchoRequest(r) => {
                    if let Some(f) = self.echo.as_mut() {
                        f.send(
                            EchoKey {
                                src: r.src,
                                dst: r.dst,
                                ident: r.ident,
                                seq: r.seq,
                            },
                            &r.payload,
                        );
                    }
                }
            }
        }
        self.send_staged();
    }

    /// What the relay lost, the fake DNS's refusals (counted where they
    /// happen) included.
    fn losses(&self) -> RelayLosses {
        RelayLosses {
            fake_pool_full: self.dns.as_ref().map_or(0, |d| d.exhausted),
            ..self.losses
        }
    }

    /// The open flows, the busiest first when there are too many to list.
    fn flows(&self, now: Instant) -> FlowList {
        let tcp = self
            .tcp
            .values()
            .map(|f| f.meta.open(FlowProtocol::Tcp, now));
        let udp = self
            .udp
            .values()
            .map(|f| f.meta.open(FlowProtocol::Udp, now));
        FlowList::busiest(tcp.chain(udp).collect(), MAX_FLOWS_PER_REPLY)
    }

    fn open_tcp(&mut self, engine: &mut Engine, flow: FlowId, src: SocketAddr, dst: SocketAddr) {
        if dst.port() == DNS_PORT
            && self
                .dns
                .as_ref()
                .is_some_and(|d| d.answers_tcp_at(dst.ip()))
        {
            self.dns_tcp.insert(flow, Vec::new());
            return;
        }
        let Some(target) = self.target(dst) else {
            let _ = engine.tcp_abort(flow);
            return;
        };
        let Some(via) = self.relay.choose(dst) else {
            // Every proxy is down: the client sees a RST now rather than
            // a hang (S5).
            let _ = engine.tcp_abort(flow);
            return;
        };
        let (to_upstream, from_engine) = mpsc::channel(CHUNKS_PER_FLOW);
        let credits = Arc::new(Semaphore::new(CHUNKS_PER_FLOW));
        let meta = FlowMeta::new(src, &target, dst, via.clone());
        let task = self.tasks.spawn(tcp_upstream(
            flow,
            target,
            self.relay.clone(),
            via.clone(),
            self.inbox.0.clone(),
            from_engine,
            Arc::clone(&credits),
        ));
        self.tcp.insert(
            flow,
            TcpFlow {
                meta,
                to_upstream: Some(to_upstream),
                parked: None,
                client_fin: false,
                from_upstream: VecDeque::new(),
                credits,
                upstream_eof: false,
                upstream_shut: false,
                task,
            },
        );
    }

    /// Where a flow to `dst` goes: the address itself, or for a fake DNS
    /// address the name it stands for. `None` for a fake address no name
    /// holds: the flow is refused (counted), so the application resolves
    /// the name again.
    fn target(&mut self, dst: SocketAddr) -> Option<Address> {
        let Some(dns) = self.dns.as_mut() else {
            return Some(Address::Ip(dst));
        };
        match dns.lookup(dst.ip(), unix_now()) {
            Lookup::NotFake => Some(Address::Ip(dst)),
            Lookup::Name(name) => Some(Address::Domain(name.to_owned(), dst.port())),
            Lookup::Unknown => {
                self.losses.fake_address_unknown += 1;
                None
            }
        }
    }

    /// Answers what a DNS-over-TCP client sent: each whole message (two-byte
    /// length, then the message; RFC 7766) in order; the rest waits.
    fn fake_dns_tcp(&mut self, engine: &mut Engine, flow: FlowId, closed: bool) {
        let (Some(dns), Some(buf)) = (self.dns.as_mut(), self.dns_tcp.get_mut(&flow)) else {
            return;
        };
        loop {
            let room = DNS_TCP_BUFFER - buf.len();
            if room == 0 {
                // No query is this long: not a DNS client.
                let _ = engine.tcp_abort(flow);
                self.dns_tcp.remove(&flow);
                return;
            }
            let taken = engine.tcp_recv_with(flow, |data| {
                let n = data.len().min(room);
                buf.extend_from_slice(&data[..n]);
                n
            });
            if !matches!(taken, Ok(1..)) {
                break;
            }
        }
        let now = unix_now();
        let mut at = 0;
        while buf.len() - at >= 2 {
            let len = usize::from(u16::from_be_bytes([buf[at], buf[at + 1]]));
            if buf.len() - at - 2 < len {
                break;
            }
            let msg = &buf[at + 2..at + 2 + len];
            if dns.handle(msg, now, &mut self.reply) == Handled::Answered {
                let framed_len = u16::try_from(self.reply.len()).unwrap_or(u16::MAX);
                // An answer is a few hundred bytes and the send buffer
                // holds hundreds of kilobytes: it goes whole, unless the
                // client sends queries without ever reading the answers.
                let whole = engine.tcp_send(flow, &framed_len.to_be_bytes()) == Ok(2)
                    && engine.tcp_send(flow, &self.reply) == Ok(self.reply.len());
                if !whole {
                    let _ = engine.tcp_abort(flow);
                    self.dns_tcp.remove(&flow);
                    return;
                }
            }
            at += 2 + len;
        }
        buf.drain(..at);
        if closed {
            let _ = engine.tcp_shutdown_write(flow);
        }
    }

    /// Answers a UDP DNS query the fake DNS takes; `false` when it is not
    /// one (the datagram then goes out as any other).
    fn fake_dns_udp(
        &mut self,
        engine: &mut Engine,
        flow: FlowId,
        dst: SocketAddr,
        payload: &[u8],
    ) -> bool {
        let Some(dns) = self.dns.as_mut() else {
            return false;
        };
        if dst.port() != DNS_PORT || !dns.answers_at(dst.ip()) {
            return false;
        }
        match dns.handle(payload, unix_now(), &mut self.reply) {
            Handled::Answered => {
                let _ = engine.udp_send(flow, &self.reply);
                true
            }
            Handled::Dropped => true,
            Handled::PassOn => false,
        }
    }

    /// Writes the fake DNS map to its file when it changed, off the engine
    /// thread and one write at a time (called every 250 ms).
    fn save_fake_dns(&mut self) {
        let Some(dns) = self.dns.as_mut() else {
            return;
        };
        if self.saving.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let to_save = dns.to_save(unix_now());
        if to_save.is_empty() {
            return;
        }
        self.saving = Some(tokio::task::spawn_blocking(move || {
            for (file, saved) in to_save {
                if let Err(e) = file.save(&saved) {
                    tracing::warn!(
                        "the fake DNS map was not saved to {}: {e}",
                        file.path().display()
                    );
                }
            }
        }));
    }

    /// Moves client bytes towards the upstream writer until the channel is
    /// full (the rest waits in smoltcp's window) or the client has no more.
    fn client_to_upstream(&mut self, engine: &mut Engine, flow: FlowId) {
        let Some(f) = self.tcp.get_mut(&flow) else {
            return;
        };
        let Some(tx) = f.to_upstream.as_ref() else {
            return;
        };
        if let Some(chunk) = f.parked.take() {
            if let Err(mpsc::error::TrySendError::Full(chunk)) = tx.try_send(chunk) {
                f.parked = Some(chunk);
                return;
            }
        }
        loop {
            // Copied once, out of smoltcp's buffer into the chunk that
            // travels to the writer.
            let mut chunk = Vec::new();
            let taken = engine.tcp_recv_with(flow, |data| {
                let n = data.len().min(CHUNK);
                chunk.extend_from_slice(&data[..n]);
                n
            });
            let n = match taken {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            f.meta.up += n as u64;
            if let Err(mpsc::error::TrySendError::Full(chunk)) = tx.try_send(chunk) {
                f.parked = Some(chunk);
                return;
            }
        }
        if f.client_fin {
            // Every byte is handed over: closing the channel makes the
            // writer shut the upstream socket's write side.
            f.to_upstream = None;
        }
    }

    /// Feeds queued upstream bytes to the client as far as smoltcp takes
    /// them, returning a credit for each chunk fully accepted.
    fn upstream_to_client(&mut self, engine: &mut Engine, flow: FlowId) {
        let Some(f) = self.tcp.get_mut(&flow) else {
            return;
        };
        while let Some((chunk, at)) = f.from_upstream.front_mut() {
            match engine.tcp_send(flow, &chunk[*at..]) {
                Ok(n) if *at + n == chunk.len() => {
                    f.meta.down += n as u64;
                    f.from_upstream.pop_front();
                    f.credits.add_permits(1);
                }
                Ok(n) => {
                    f.meta.down += n as u64;
                    *at += n;
                    return;
                }
                Err(_) => return,
            }
        }
        if f.upstream_eof && !f.upstream_shut {
            f.upstream_shut = true;
            let _ = engine.tcp_shutdown_write(flow);
        }
    }

    fn upstream(&mut self, engine: &mut Engine, msg: Upstream) {
        match msg {
            Upstream::TcpFailed(flow) => {
                // Refused or unreachable upstream: the client sees a RST.
                let _ = engine.tcp_abort(flow);
                if let Some(f) = self.tcp.remove(&flow) {
                    f.task.abort();
                }
            }
            Upstream::TcpFailedOver(flow, via) => {
                if let Some(f) = self.tcp.get_mut(&flow) {
                    f.meta.via = via;
                }
            }
            Upstream::TcpData(flow, data) => {
                if let Some(f) = self.tcp.get_mut(&flow) {
                    f.from_upstream.push_back((data, 0));
                    self.upstream_to_client(engine, flow);
                }
            }
            Upstream::TcpEof(flow) => {
                if let Some(f) = self.tcp.get_mut(&flow) {
                    f.upstream_eof = true;
                    self.upstream_to_client(engine, flow);
                }
            }
            Upstream::TcpDrained(flow) => self.client_to_upstream(engine, flow),
            Upstream::UdpData(flow, datagrams) => {
                let mut bytes = 0;
                for d in datagrams.iter() {
                    bytes += d.len() as u64;
                    let _ = engine.udp_send(flow, d);
                }
                if let Some(f) = self.udp.get_mut(&flow) {
                    f.meta.down += bytes;
                }
            }
            Upstream::UdpAssociated(flow, socket) => {
                let Some(f) = self.udp.get_mut(&flow) else {
                    return;
                };
                let UdpOut::Associating { waiting, header } = &mut f.out else {
                    return;
                };
                let (waiting, header) = (std::mem::take(waiting), *header);
                f.out = UdpOut::Socket { socket, header };
                for payload in waiting {
                    self.stage(flow, &payload);
                }
                self.send_staged();
            }
            Upstream::UdpUnreachable(flow, why) => {
                let _ = engine.udp_unreachable(flow, why);
            }
            Upstream::UdpClosed(flow) => {
                self.udp.remove(&flow);
            }
        }
    }

    fn udp_out(
        &mut self,
        engine: &mut Engine,
        flow: FlowId,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    ) {
        if self.fake_dns_udp(engine, flow, dst, &payload) {
            return;
        }
        if !self.udp.contains_key(&flow) {
            let Some(target) = self.target(dst) else {
                let _ = engine.udp_unreachable(flow, Unreachable::Host);
                return;
            };
            let Some(via) = self.relay.choose(dst) else {
                return;
            };
            if let Via::Proxy(p) = &via {
                if p.kind == ProxyKind::Http && dst.port() != DNS_PORT {
                    // An HTTP proxy carries no UDP: refused at once, so a
                    // QUIC client falls back to TCP instead of waiting.
                    p.health.refused("udp_not_supported");
                    let _ = engine.udp_unreachable(flow, Unreachable::Prohibited);
                    return;
                }
            }
            let Some(f) = self.open_udp(flow, src, &target, dst, via) else {
                return;
            };
            self.udp.insert(flow, f);
        }
        let Some(f) = self.udp.get_mut(&flow) else {
            return;
        };
        f.meta.up += payload.len() as u64;
        match &mut f.out {
            UdpOut::Socket { .. } => self.stage(flow, &payload),
            UdpOut::Associating { waiting, .. } => {
                if waiting.len() == DATAGRAMS_PER_FLOW {
                    waiting.pop_front();
                    self.losses.udp_queue_full += 1;
                }
                waiting.push_back(payload);
            }
            UdpOut::Relayed(tx) => {
                if tx.try_send(payload).is_err() {
                    tracing::debug!("UDP to {dst}: relay busy, datagram lost");
                    self.losses.udp_queue_full += 1;
                }
            }
        }
    }

    fn open_udp(
        &mut self,
        flow: FlowId,
        src: SocketAddr,
        target: &Address,
        dst: SocketAddr,
        via: Via,
    ) -> Option<UdpFlow> {
        let (relay, inbox) = (self.relay.clone(), self.inbox.0.clone());
        let as_dns = self.relay.dns_over_tcp(&via) && dst.port() == DNS_PORT;
        let (out, task) = match &via {
            Via::Direct => {
                let socket = match self.relay.udp(dst) {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        tracing::warn!("UDP to {dst}: cannot open a socket: {e}");
                        return None;
                    }
                };
                let task = self
                    .tasks
                    .spawn(udp_upstream(flow, Arc::clone(&socket), inbox));
                let header = UdpHeader::NONE;
                (UdpOut::Socket { socket, header }, task)
            }
            Via::Proxy(_) if as_dns => {
                let (tx, rx) = mpsc::channel(DATAGRAMS_PER_FLOW);
                let via = via.clone();
                let task =
                    self.tasks
                        .spawn(dns_over_tcp(flow, target.clone(), relay, via, rx, inbox));
                (UdpOut::Relayed(tx), task)
            }
            Via::Proxy(proxy) => {
                let proxy = Arc::clone(proxy);
                let header = UdpHeader::socks5(target);
                let task = self
                    .tasks
                    .spawn(socks_udp(flow, target.clone(), relay, proxy, inbox));
                (
                    UdpOut::Associating {
                        waiting: VecDeque::new(),
                        header,
                    },
                    task,
                )
            }
        };
        Some(UdpFlow {
            meta: FlowMeta::new(src, target, dst, via),
            out,
            task,
        })
    }

    /// Adds a datagram of `flow`, whose socket is open, to the batch on its
    /// way out; a batch of another flow, or one it does not fit, goes first.
    fn stage(&mut self, flow: FlowId, payload: &[u8]) {
        if self.staged_flow != Some(flow) {
            self.send_staged();
        }
        // Twice at most: a full batch goes, and the datagram starts the
        // next (an empty batch takes any datagram). The header is read in
        // place, not copied: it may be a 262-byte SOCKS5 domain header.
        for _ in 0..2 {
            let Some(UdpFlow {
                out: UdpOut::Socket { header, .. },
                ..
            }) = self.udp.get(&flow)
            else {
                return;
            };
            if self.staged.push(header.as_slice(), payload) {
                self.staged_flow = Some(flow);
                return;
            }
            self.send_staged();
        }
    }

    fn send_staged(&mut self) {
        let Some(flow) = self.staged_flow.take() else {
            return;
        };
        match self.udp.get(&flow).map(|f| &f.out) {
            Some(UdpOut::Socket { socket, .. }) => {
                let lost = self.staged.send(socket, &mut self.gso);
                if lost > 0 {
                    tracing::debug!("UDP flow {flow:?}: {lost} datagrams lost: the socket is full");
                    self.losses.udp_send_failed += lost as u64;
                }
            }
            _ => self.staged.clear(),
        }
    }
}

fn same_way(a: &Via, b: &Via) -> bool {
    match (a, b) {
        (Via::Direct, Via::Direct) => true,
        (Via::Proxy(a), Via::Proxy(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// Relays a direct UDP flow's replies, a coalesced run per message. The
/// destination's ICMP errors, which the kernel reports on the connected
/// socket, reach the client as the same ICMP errors; the socket stays open
/// for the next datagram.
async fn udp_upstream(flow: FlowId, socket: Arc<UdpSocket>, inbox: mpsc::Sender<Upstream>) {
    datagram::coalesce_received(&socket);
    let mut buf = vec![0_u8; 65_536];
    loop {
        let msg = match datagram::recv(&socket, &mut buf).await {
            Ok((n, segment)) => {
                Upstream::UdpData(flow, Datagrams::received(buf[..n].to_vec(), segment))
            }
            Err(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused => {
                    Upstream::UdpUnreachable(flow, Unreachable::Port)
                }
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    Upstream::UdpUnreachable(flow, Unreachable::Host)
                }
                _ => {
                    tracing::debug!("UDP flow {flow:?}: {e}");
                    let _ = inbox.send(Upstream::UdpClosed(flow)).await;
                    return;
                }
            },
        };
        if inbox.send(msg).await.is_err() {
            return;
        }
    }
}

async fn tcp_upstream(
    flow: FlowId,
    target: Address,
    relay: Relay,
    via: Via,
    inbox: mpsc::Sender<Upstream>,
    mut from_engine: mpsc::Receiver<Vec<u8>>,
    credits: Arc<Semaphore>,
) {
    let stream = match relay.tcp_with_failover(via.clone(), &target).await {
        Ok((s, used)) => {
            if !same_way(&used, &via) {
                let _ = inbox.send(Upstream::TcpFailedOver(flow, used)).await;
            }
            s
        }
        Err(e) => {
            // Refused, unreachable or upstream trouble: the client sees a RST.
            tracing::debug!("TCP to {target}: {e}");
            let _ = inbox.send(Upstream::TcpFailed(flow)).await;
            return;
        }
    };
    let (mut reader, mut writer) = stream.into_split();
    let inbox_w = inbox.clone();
    let write = async move {
        while let Some(chunk) = from_engine.recv().await {
            writer.write_all(&chunk).await?;
            let _ = inbox_w.send(Upstream::TcpDrained(flow)).await;
        }
        writer.shutdown().await
    };
    let read = async {
        loop {
            let Ok(permit) = credits.acquire().await else {
                return Ok(());
            };
            permit.forget();
            // Read straight into the chunk that travels to the engine: no
            // buffer held per idle flow, no copy, no zeroing.
            let mut chunk = Vec::with_capacity(CHUNK);
            let n = reader.read_buf(&mut chunk).await?;
            if n == 0 {
                let _ = inbox.send(Upstream::TcpEof(flow)).await;
                return Ok::<(), io::Error>(());
            }
            if CHUNK - n >= 4096 {
                // A short read must not pin a whole chunk while it waits
                // (malloc gives the tail back in place, without a copy).
                chunk.shrink_to_fit();
            }
            if inbox.send(Upstream::TcpData(flow, chunk)).await.is_err() {
                return Ok(());
            }
        }
    };
    if let Err(_e) = tokio::try_join!(write, read) {
        let _ = inbox.send(Upstream::TcpFailed(flow)).await;
    }
}

/// One UDP flow through a SOCKS5 UDP ASSOCIATE of its own, which lives as
/// long as the flow and its control connection (RFC 1928 section 7). Once
/// the association is up the engine task sends on its socket; this task
/// receives, and ends the flow when the server closes the control
/// connection.
async fn socks_udp(
    flow: FlowId,
    dst: Address,
    relay: Relay,
    proxy: Arc<Proxy>,
    inbox: mpsc::Sender<Upstream>,
) {
    match relay.associate(&proxy).await {
        Ok(association) => {
            if let Err(e) = associated(flow, &dst, association, &inbox).await {
                tracing::debug!("UDP to {dst} through SOCKS5: {e}");
            }
        }
        Err(e) => {
            tracing::debug!("UDP to {dst}: no SOCKS5 association: {e}");
            let _ = inbox
                .send(Upstream::UdpUnreachable(flow, e.unreachable()))
                .await;
        }
    }
    let _ = inbox.send(Upstream::UdpClosed(flow)).await;
}

async fn associated(
    flow: FlowId,
    dst: &Address,
    association: crate::relay::Association,
    inbox: &mpsc::Sender<Upstream>,
) -> io::Result<()> {
    let crate::relay::Association {
        mut control,
        socket,
    } = association;
    let socket = Arc::new(socket);
    datagram::coalesce_received(&socket);
    if inbox
        .send(Upstream::UdpAssociated(flow, Arc::clone(&socket)))
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut buf = vec![0_u8; 65_536];
    let mut ignored = [0_u8; 64];
    loop {
        tokio::select! {
            received = datagram::recv(&socket, &mut buf) => {
                let (n, segment) = received?;
                let run = Datagrams::received(buf[..n].to_vec(), segment);
                for payloads in socks_payloads(&run, dst) {
                    if inbox.send(Upstream::UdpData(flow, payloads)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            // The server ends the association by closing its control
            // connection; anything it says there is ignored.
            n = control.read(&mut ignored) => if n? == 0 { return Ok(()) },
        }
    }
}

/// The payloads of a run of SOCKS5 UDP datagrams from the association's
/// relay, as runs again; datagrams from anyone but `dst` and malformed ones
/// are dropped (logged). A flow to a name takes what comes from its port:
/// the server reports the address it resolved the name to.
fn socks_payloads(run: &Datagrams, dst: &Address) -> Vec<Datagrams> {
    let mut runs = vec![Datagrams::default()];
    for datagram in run.iter() {
        match socks5::parse_udp(datagram) {
            Ok((from, payload)) if from_destination(&from, dst) => {
                let pushed = runs.last_mut().is_some_and(|r| r.push(&[], payload));
                if !pushed {
                    let mut next = Datagrams::default();
                    next.push(&[], payload);
                    runs.push(next);
                }
            }
            Ok((from, _)) => {
                tracing::debug!("UDP through SOCKS5: datagram from {from}, not {dst}: dropped");
            }
            Err(e) => tracing::debug!("UDP through SOCKS5: {e}"),
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// Whether a SOCKS5 UDP reply from `from` answers a flow to `dst`: the
/// same address, or for a flow to a name, any address on its port (the
/// server resolved the name) or the name itself.
fn from_destination(from: &Address, dst: &Address) -> bool {
    match (from, dst) {
        (from, Address::Ip(_)) => from == dst,
        (Address::Ip(a), Address::Domain(_, port)) => a.port() == *port,
        (Address::Domain(name, p), Address::Domain(want, port)) => name == want && p == port,
    }
}

/// One UDP flow to port 53 relayed as DNS over TCP through the proxy's
/// CONNECT: each query goes out on a connection of its own with its
/// two-byte length (RFC 7766), and its answer comes back as a datagram.
/// A connection per query, because servers may close a connection after
/// one answer, which would lose the queries sent behind it; DNS clients
/// send few queries, and concurrent ones are answered concurrently.
async fn dns_over_tcp(
    flow: FlowId,
    dst: Address,
    relay: Relay,
    via: Via,
    mut from_engine: mpsc::Receiver<Vec<u8>>,
    inbox: mpsc::Sender<Upstream>,
) {
    let mut queries = JoinSet::new();
    loop {
        tokio::select! {
            query = from_engine.recv() => match query {
                Some(q) if queries.len() < DATAGRAMS_PER_FLOW => {
                    queries.spawn(dns_query(relay.clone(), via.clone(), dst.clone(), q));
                }
                Some(_) => tracing::debug!("DNS over TCP to {dst}: too many queries in flight, one lost"),
                None => return,
            },
            Some(answered) = queries.join_next(), if !queries.is_empty() => match answered {
                Ok(Ok(answer)) => {
                    if inbox.send(Upstream::UdpData(flow, Datagrams::received(answer, 0))).await.is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!("DNS over TCP to {dst}: {e}");
                    if inbox.send(Upstream::UdpUnreachable(flow, e.unreachable())).await.is_err() {
                        return;
                    }
                }
                Err(_) => {}
            },
        }
    }
}

async fn dns_query(
    relay: Relay,
    via: Via,
    dst: Address,
    query: Vec<u8>,
) -> Result<Vec<u8>, UpstreamError> {
    let len = u16::try_from(query.len())
        .map_err(|_| UpstreamError::Protocol("DNS query over 65535 bytes"))?;
    let mut stream = relay.tcp(&via, &dst).await?;
    let exchange = async {
        let mut framed = Vec::with_capacity(2 + query.len());
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&query);
        stream.write_all(&framed).await?;
        let mut len = [0_u8; 2];
        stream.read_exact(&mut len).await?;
        let mut answer = vec![0_u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await?;
        Ok::<_, io::Error>(answer)
    };
    match tokio::time::timeout(crate::relay::UPSTREAM_TIMEOUT, exchange).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socks_datagram(from: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut d = UdpHeader::socks5(&Address::Ip(from)).as_slice().to_vec();
        d.extend_from_slice(payload);
        d
    }

    #[test]
    fn socks_payloads_keep_the_destinations_datagrams_as_runs() {
        let dst: SocketAddr = "203.0.113.5:4433".parse().unwrap();
        let other: SocketAddr = "203.0.113.6:4433".parse().unwrap();
        let mut run = Datagrams::default();
        for (from, p) in [(dst, &b"aa"[..]), (other, b"xx"), (dst, b"bb"), (dst, b"c")] {
            assert!(run.push(&[], &socks_datagram(from, p)) || from == dst);
        }
        let runs = socks_payloads(&run, &Address::Ip(dst));
        let got: Vec<Vec<&[u8]>> = runs.iter().map(|r| r.iter().collect()).collect();
        assert_eq!(got, [vec![&b"aa"[..], b"bb", b"c"]]);
        // A flow to a name takes what the server resolved it to, on its port.
        let named = Address::Domain("quic.example".into(), 4433);
        let named_runs = socks_payloads(&run, &named);
        let got: Vec<Vec<&[u8]>> = named_runs.iter().map(|r| r.iter().collect()).collect();
        assert_eq!(got, [vec![&b"aa"[..], b"xx", b"bb", b"c"]]);
    }

    #[test]
    fn socks_payloads_drop_malformed_datagrams_and_hand_on_nothing_empty() {
        let dst: SocketAddr = "[2001:db8::5]:53".parse().unwrap();
        // RSV, FRAG 0, then an address type that does not exist.
        let garbage = Datagrams::received(vec![0, 0, 0, 9, 1, 2], 0);
        let dst_a = Address::Ip(dst);
        assert_eq!(socks_payloads(&garbage, &dst_a), Vec::<Datagrams>::new());
        let one = Datagrams::received(socks_datagram(dst, b""), 0);
        let runs = socks_payloads(&one, &dst_a);
        assert_eq!(runs.len(), 1, "an empty datagram is still a datagram");
        assert_eq!(runs[0].iter().collect::<Vec<_>>(), [&b""[..]]);
    }

    #[test]
    fn a_long_flow_list_keeps_the_busiest_and_counts_the_rest() {
        let flow = |port, bytes_up, bytes_down| OpenFlow {
            protocol: FlowProtocol::Tcp,
            src: SocketAddr::from(([198, 18, 0, 1], port)),
            dst: "203.0.113.5:443".parse().unwrap(),
            host: None,
            upstream: "direct".into(),
            bytes_up,
            bytes_down,
            age: Duration::ZERO,
        };
        let all = vec![
            flow(1, 10, 0),
            flow(2, 0, 500),
            flow(3, 7, 7),
            flow(4, 300, 300),
        ];
        let list = FlowList::busiest(all.clone(), 2);
        let mut kept: Vec<u16> = list.flows.iter().map(|f| f.src.port()).collect();
        kept.sort_unstable();
        assert_eq!((kept, list.omitted), (vec![2, 4], 2));
        let list = FlowList::busiest(all, 4);
        assert_eq!((list.flows.len(), list.omitted), (4, 0));
    }

    #[test]
    fn rates_are_bytes_per_second_over_the_last_second() {
        let mut m = RateMeter::default();
        let t0 = std::time::Instant::now();
        assert_eq!(m.sample(t0, 0, 0), (0, 0));
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(m.sample(ms(500), 1_000, 4_000), (2_000, 8_000));
        assert_eq!(m.sample(ms(1000), 2_000, 8_000), (2_000, 8_000));
        // Traffic stops: the window slides past the busy second.
        m.sample(ms(2000), 2_000, 8_000);
        assert_eq!(m.sample(ms(3000), 2_000, 8_000), (0, 0));
    }
}
