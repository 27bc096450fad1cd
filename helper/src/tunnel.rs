//! One tunnel's data plane: packets from the device go through the engine,
//! and the flows the engine terminates are relayed from the helper's own
//! sockets, each bound to the physical interface (S5, S6).
//!
//! One task owns the engine (it is a plain state machine, not shared). Relay
//! tasks talk to it through a bounded inbox. Memory per flow is bounded in
//! both directions: client→upstream data waits in a channel of
//! [`CHUNKS_PER_FLOW`] chunks and, when that is full, in smoltcp's receive
//! window (the client is slowed, not buffered); upstream→client data is read
//! only against credits the engine returns as smoltcp accepts the bytes.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use ztun_engine::{DropReason, Engine, EngineConfig, Event, FlowId};
use ztun_proto::Counters;

use crate::relay::echo::{EchoForwarder, EchoKey};

/// Bytes read per relay step in either direction.
pub const CHUNK: usize = 16 * 1024;
/// Chunks in flight per flow and direction.
pub const CHUNKS_PER_FLOW: usize = 8;
/// How long an upstream connect may take before the client gets a RST.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds an outbound socket to the physical interface.
pub type Binder = Arc<dyn Fn(&Socket) -> io::Result<()> + Send + Sync>;

/// Packets taken from the device per wakeup before the engine's events and
/// output are processed: one pass of that work serves the whole batch.
pub const READ_BATCH: usize = 64;

/// The packet device the data plane reads from and writes to.
pub trait PacketDevice: Send + Sync + 'static {
    fn recv(&self, buf: &mut [u8]) -> impl std::future::Future<Output = io::Result<usize>> + Send;
    /// A packet if one is waiting now; `WouldBlock` otherwise.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn send(&self, buf: &[u8]) -> impl std::future::Future<Output = io::Result<usize>> + Send;
}

impl PacketDevice for tun_rs::AsyncDevice {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        tun_rs::AsyncDevice::recv(self, buf).await
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        tun_rs::AsyncDevice::try_recv(self, buf)
    }

    async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        tun_rs::AsyncDevice::send(self, buf).await
    }
}

/// What relay tasks tell the engine task.
enum Upstream {
    TcpFailed(FlowId),
    TcpData(FlowId, Vec<u8>),
    TcpEof(FlowId),
    /// The upstream writer took a chunk: the flow may read from the client again.
    TcpDrained(FlowId),
    UdpData(FlowId, Vec<u8>),
}

struct TcpFlow {
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
    socket: Arc<UdpSocket>,
    task: tokio::task::AbortHandle,
}

/// Counters the daemon reads for `status`, refreshed by the engine task
/// every 100 ms.
pub type SharedCounters = Arc<Mutex<Counters>>;

/// Runs the data plane until the future is dropped (which aborts every relay
/// task with it) or the device fails.
pub async fn run<D: PacketDevice>(
    device: Arc<D>,
    config: EngineConfig,
    echo: Option<EchoForwarder>,
    bind: Binder,
    counters: SharedCounters,
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
        bind,
        echo,
        chunk: vec![0; CHUNK],
    };
    let mut rx = vec![0_u8; mtu.max(1500)];
    let mut tx = vec![0_u8; mtu.max(1500)];
    let mut refresh = tokio::time::interval(Duration::from_millis(100));
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
            n = device.recv(&mut rx) => {
                engine.handle_packet(&rx[..n?], now());
                for _ in 1..READ_BATCH {
                    match device.try_recv(&mut rx) {
                        Ok(n) => engine.handle_packet(&rx[..n], now()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(msg) = dp.inbox.1.recv() => dp.upstream(&mut engine, msg),
            reply = echo_reply => {
                if let Ok(r) = reply {
                    let k = r.key;
                    let request = ztun_engine::EchoRequest { src: k.src, dst: k.dst, ident: k.ident, seq: k.seq, payload: Vec::new() };
                    let _ = engine.echo_reply(&request, &r.payload);
                }
            }
            () = sleep_until(deadline) => {}
            _ = refresh.tick() => publish(&engine, &counters, &mut rates),
            Some(_) = dp.tasks.join_next(), if !dp.tasks.is_empty() => {}
        }
        // Events arise from input and from timers that poll_transmit runs,
        // so drain both until neither has anything left.
        loop {
            dp.events(&mut engine);
            let mut sent = false;
            while let Some(n) = engine.poll_transmit(&mut tx, now()) {
                device.send(&tx[..n]).await?;
                sent = true;
            }
            if !sent {
                break;
            }
        }
        dp.events(&mut engine);
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

fn publish(engine: &Engine, counters: &SharedCounters, rates: &mut RateMeter) {
    let c = engine.counters();
    let drops = DropReason::ALL
        .iter()
        .filter(|r| c.drops(**r) > 0)
        .map(|r| (r.as_str().to_owned(), c.drops(*r)))
        .collect();
    let (rate_in, rate_out) = rates.sample(std::time::Instant::now(), c.rx_bytes, c.tx_bytes);
    let snapshot = Counters {
        packets_in: c.rx_packets,
        packets_out: c.tx_packets,
        bytes_in: c.rx_bytes,
        bytes_out: c.tx_bytes,
        flows_open: (engine.tcp_flow_count() + engine.udp_mapping_count()) as u64,
        flows_total: c.tcp_flows_opened + c.udp_mappings_created,
        rate_in,
        rate_out,
        drops,
    };
    *counters.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
}

struct DataPlane {
    tcp: HashMap<FlowId, TcpFlow>,
    udp: HashMap<FlowId, UdpFlow>,
    tasks: JoinSet<()>,
    inbox: (mpsc::Sender<Upstream>, mpsc::Receiver<Upstream>),
    bind: Binder,
    echo: Option<EchoForwarder>,
    chunk: Vec<u8>,
}

impl DataPlane {
    fn events(&mut self, engine: &mut Engine) {
        while let Some(event) = engine.poll_event() {
            match event {
                Event::TcpOpened { flow, dst, .. } => self.open_tcp(flow, dst),
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
                }
                Event::UdpDatagram(d) => self.udp_out(d.flow, d.dst, &d.payload),
                Event::UdpExpired { flow } => {
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
    }

    fn open_tcp(&mut self, flow: FlowId, dst: SocketAddr) {
        let (to_upstream, from_engine) = mpsc::channel(CHUNKS_PER_FLOW);
        let credits = Arc::new(Semaphore::new(CHUNKS_PER_FLOW));
        let task = self.tasks.spawn(tcp_upstream(
            flow,
            dst,
            Arc::clone(&self.bind),
            self.inbox.0.clone(),
            from_engine,
            Arc::clone(&credits),
        ));
        self.tcp.insert(
            flow,
            TcpFlow {
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
            let n = match engine.tcp_recv(flow, &mut self.chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Err(mpsc::error::TrySendError::Full(chunk)) =
                tx.try_send(self.chunk[..n].to_vec())
            {
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
                    f.from_upstream.pop_front();
                    f.credits.add_permits(1);
                }
                Ok(n) => {
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
            Upstream::UdpData(flow, data) => {
                let _ = engine.udp_send(flow, &data);
            }
        }
    }

    fn udp_out(&mut self, flow: FlowId, dst: SocketAddr, payload: &[u8]) {
        if !self.udp.contains_key(&flow) {
            let socket = match udp_socket(dst, &self.bind) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("UDP to {dst}: cannot open a socket: {e}");
                    return;
                }
            };
            let socket = Arc::new(socket);
            let task = self.tasks.spawn(udp_upstream(
                flow,
                Arc::clone(&socket),
                self.inbox.0.clone(),
            ));
            self.udp.insert(flow, UdpFlow { socket, task });
        }
        if let Some(f) = self.udp.get(&flow) {
            // A direct non-blocking send: tokio's try_send consults cached
            // readiness, which a socket registered a moment ago does not
            // have yet, and would drop the first datagram of every mapping.
            // A full socket buffer loses the datagram, as a busy link would.
            if let Err(e) = socket2::SockRef::from(&*f.socket).send(payload) {
                tracing::debug!("UDP to {dst}: datagram lost: {e}");
            }
        }
    }
}

fn udp_socket(dst: SocketAddr, bind: &Binder) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(dst), Type::DGRAM, None)?;
    bind(&socket)?;
    socket.set_nonblocking(true)?;
    socket.connect(&dst.into())?;
    UdpSocket::from_std(socket.into())
}

async fn udp_upstream(flow: FlowId, socket: Arc<UdpSocket>, inbox: mpsc::Sender<Upstream>) {
    let mut buf = vec![0_u8; 65_536];
    while let Ok(n) = socket.recv(&mut buf).await {
        if inbox
            .send(Upstream::UdpData(flow, buf[..n].to_vec()))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn tcp_upstream(
    flow: FlowId,
    dst: SocketAddr,
    bind: Binder,
    inbox: mpsc::Sender<Upstream>,
    mut from_engine: mpsc::Receiver<Vec<u8>>,
    credits: Arc<Semaphore>,
) {
    let Ok(Ok(stream)) = tokio::time::timeout(CONNECT_TIMEOUT, connect(dst, &bind)).await else {
        let _ = inbox.send(Upstream::TcpFailed(flow)).await;
        return;
    };
    let _ = stream.set_nodelay(true);
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
        let mut buf = vec![0_u8; CHUNK];
        loop {
            let Ok(permit) = credits.acquire().await else {
                return Ok(());
            };
            permit.forget();
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                let _ = inbox.send(Upstream::TcpEof(flow)).await;
                return Ok::<(), io::Error>(());
            }
            if inbox
                .send(Upstream::TcpData(flow, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    };
    if let Err(_e) = tokio::try_join!(write, read) {
        let _ = inbox.send(Upstream::TcpFailed(flow)).await;
    }
}

async fn connect(dst: SocketAddr, bind: &Binder) -> io::Result<tokio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
    bind(&socket)?;
    socket.set_nonblocking(true)?;
    let std_socket: std::net::TcpStream = socket.into();
    TcpSocket::from_std_stream(std_socket).connect(dst).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
