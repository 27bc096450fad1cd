//! An in-memory network: a smoltcp `Interface` playing the tunnel client,
//! wired to the engine through two packet queues with optional loss and
//! reordering, a simulated clock, and a scripted "daemon" that reacts only to
//! engine events (so the edge-triggered contract is what gets exercised).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::struct_excessive_bools
)]

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use ztun_engine::{Engine, EngineConfig, Event, FlowId, Received as Vouched};

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// Byte `i` of the stream tagged `seed`: position-dependent, so a receiver
/// detects loss, duplication and reordering, not just corruption.
pub fn pattern(seed: u8, i: u64) -> u8 {
    ((i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8) ^ seed
}

pub fn fill_pattern(seed: u8, start: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, start + k as u64);
    }
}

/// FNV-1a, streaming: the content checksum compared end to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn of_pattern(seed: u8, len: u64) -> Self {
        let mut h = Self::default();
        let mut buf = [0u8; 4096];
        let mut pos = 0;
        while pos < len {
            let n = usize::try_from((len - pos).min(4096)).unwrap();
            fill_pattern(seed, pos, &mut buf[..n]);
            h.update(&buf[..n]);
            pos += n as u64;
        }
        h
    }
}

/// One direction of a byte stream being checked.
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub bytes: u64,
    pub hash: Fnv,
    pub mismatch_at: Option<u64>,
}

impl Received {
    pub fn absorb(&mut self, seed: u8, data: &[u8]) {
        for (k, &b) in data.iter().enumerate() {
            let pos = self.bytes + k as u64;
            if self.mismatch_at.is_none() && b != pattern(seed, pos) {
                self.mismatch_at = Some(pos);
            }
        }
        self.hash.update(data);
        self.bytes += data.len() as u64;
    }
}

/// What the daemon does with every accepted flow.
#[derive(Debug, Clone, Copy)]
pub struct DaemonScript {
    /// Bytes to send to the client (pattern seeded with `SERVER_SEED`).
    pub send: u64,
    /// Half-close after sending everything.
    pub shutdown_after_send: bool,
    /// Wait for the client's FIN before sending anything.
    pub send_after_read_closed: bool,
    /// Abort every flow as soon as it opens (upstream refused).
    pub abort_on_open: bool,
    /// Ignore `TcpReadable` (an upstream that does not drain); see `Daemon::read_all`.
    pub ignore_readable: bool,
}

impl Default for DaemonScript {
    fn default() -> Self {
        Self {
            send: 0,
            shutdown_after_send: true,
            send_after_read_closed: false,
            abort_on_open: false,
            ignore_readable: false,
        }
    }
}

pub const CLIENT_SEED: u8 = 0x5a;
pub const SERVER_SEED: u8 = 0xa5;

#[derive(Debug, Default)]
pub struct DaemonFlow {
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    pub received: Received,
    pub sent: u64,
    pub writable: bool,
    pub write_shut: bool,
    pub read_closed: bool,
    pub closed: bool,
    pub reset: bool,
}

/// The engine-side application, driven by events only.
#[derive(Debug, Default)]
pub struct Daemon {
    pub script: DaemonScript,
    pub flows: HashMap<FlowId, DaemonFlow>,
    pub opened: Vec<FlowId>,
    pub log: Vec<Event>,
    scratch: Vec<u8>,
}

impl Daemon {
    fn handle(&mut self, engine: &mut Engine, ev: Event) {
        self.log.push(ev.clone());
        match ev {
            Event::TcpOpened { flow, src, dst } => {
                self.opened.push(flow);
                let f = self.flows.entry(flow).or_default();
                f.src = Some(src);
                f.dst = Some(dst);
                if self.script.abort_on_open {
                    engine.tcp_abort(flow).unwrap();
                    f.reset = true;
                }
            }
            Event::TcpReadable { flow } => {
                let f = self.flows.get(&flow).expect("readable before opened");
                assert!(!f.read_closed, "readable after read-closed");
                if !self.script.ignore_readable {
                    self.read_all(engine, flow);
                }
            }
            Event::TcpWritable { flow } => {
                self.flows
                    .get_mut(&flow)
                    .expect("writable before opened")
                    .writable = true;
            }
            Event::TcpReadClosed { flow } => {
                let f = self
                    .flows
                    .get_mut(&flow)
                    .expect("read-closed before opened");
                assert!(!f.read_closed, "read-closed twice");
                f.read_closed = true;
            }
            Event::TcpClosed { flow } => {
                let f = self.flows.get_mut(&flow).expect("closed before opened");
                assert!(!f.closed && !f.reset, "second final event");
                f.closed = true;
            }
            Event::TcpReset { flow } => {
                let f = self.flows.get_mut(&flow).expect("reset before opened");
                assert!(!f.closed && !f.reset, "second final event");
                f.reset = true;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    /// Read `flow` until `tcp_recv` returns 0.
    pub fn read_all(&mut self, engine: &mut Engine, flow: FlowId) {
        if self.scratch.len() < 65536 {
            self.scratch.resize(65536, 0);
        }
        let f = self.flows.get_mut(&flow).expect("read before opened");
        // Both ways of reading, in turn; the in-place one takes only part of
        // what it is shown, so what it leaves must come next.
        for turn in 0_u64.. {
            let n = if turn % 2 == 0 {
                let n = engine.tcp_recv(flow, &mut self.scratch).unwrap();
                f.received.absorb(CLIENT_SEED, &self.scratch[..n]);
                n
            } else {
                let received = &mut f.received;
                engine
                    .tcp_recv_with(flow, |data| {
                        let n = data.len().min(3000);
                        received.absorb(CLIENT_SEED, &data[..n]);
                        n
                    })
                    .unwrap()
            };
            if n == 0 {
                break;
            }
        }
    }

    fn pump_writes(&mut self, engine: &mut Engine) {
        let mut chunk = [0u8; 16384];
        for (&flow, f) in &mut self.flows {
            if !f.writable || f.closed || f.reset || f.write_shut {
                continue;
            }
            if self.script.send_after_read_closed && !f.read_closed {
                continue;
            }
            while f.sent < self.script.send {
                let n =
                    usize::try_from((self.script.send - f.sent).min(chunk.len() as u64)).unwrap();
                fill_pattern(SERVER_SEED, f.sent, &mut chunk[..n]);
                let put = engine.tcp_send(flow, &chunk[..n]).unwrap();
                f.sent += put as u64;
                if put < n {
                    f.writable = false;
                    break;
                }
            }
            if f.sent == self.script.send && self.script.shutdown_after_send {
                engine.tcp_shutdown_write(flow).unwrap();
                f.write_shut = true;
            }
        }
    }
}

/// One client connection and its scripted traffic.
#[derive(Debug)]
pub struct ClientConn {
    pub handle: SocketHandle,
    pub send: u64,
    pub sent: u64,
    pub shutdown_after_send: bool,
    pub shut: bool,
    pub received: Received,
}

#[derive(Debug, Default)]
struct Pipe {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

pub struct PipeRx(Vec<u8>);
pub struct PipeTx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for PipeRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for PipeTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl phy::Device for Pipe {
    type RxToken<'a> = PipeRx;
    type TxToken<'a> = PipeTx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(PipeRx, PipeTx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((PipeRx(p), PipeTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<PipeTx<'_>> {
        Some(PipeTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}

/// Fault injection on both directions of the link.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability of dropping a packet, per mille.
    pub loss_permille: u32,
    /// Probability of delaying a packet behind the next one, per mille.
    pub reorder_permille: u32,
    /// Hand the engine each run of a flow's consecutive data segments as
    /// one TCP super-segment of up to 64 KiB, as Linux TSO hands a tun
    /// reader: the first segment's headers, the lengths of the whole, and a
    /// TCP checksum field that is not a checksum.
    pub super_segments: bool,
}

/// The parts of a TCP packet that decide whether the next one continues it.
struct Segment {
    ip_len: usize,
    /// Addresses and ports.
    flow: Vec<u8>,
    seq: u32,
    payload: usize,
    /// SYN, RST, FIN or URG: a segment that ends a run.
    special: bool,
}

fn segment(p: &[u8]) -> Option<Segment> {
    let (ip_len, proto, addrs) = match p.first()? >> 4 {
        4 => (20, p[9], &p[12..20]),
        6 => (40, p[6], &p[8..40]),
        _ => return None,
    };
    if proto != 6 {
        return None;
    }
    let tcp = &p[ip_len..];
    let header = usize::from(tcp[12] >> 4) * 4;
    Some(Segment {
        ip_len,
        flow: [addrs, &tcp[..4]].concat(),
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        payload: tcp.len() - header,
        special: tcp[13] & 0x27 != 0,
    })
}

/// Merges each run of a flow's consecutive data segments into one packet
/// of at most 64 KiB, as TSO would have handed it over unsegmented: the
/// first segment's headers with the last one's ACK, window and PSH, the
/// IP length of the whole (the IPv4 header checksum refilled), and the TCP
/// checksum field left holding junk.
fn super_segments(packets: Vec<Vec<u8>>) -> Vec<(Vec<u8>, Vouched)> {
    let mut out: Vec<(Vec<u8>, Vouched)> = Vec::new();
    for p in packets {
        if let (Some((last, received)), Some(next)) = (out.last_mut(), segment(&p)) {
            if let Some(prev) = segment(last) {
                let continues = prev.flow == next.flow
                    && prev.seq.wrapping_add(u32::try_from(prev.payload).unwrap()) == next.seq
                    && prev.payload > 0
                    && next.payload > 0
                    && !prev.special
                    && !next.special
                    && u16::try_from(last.len() + next.payload).is_ok();
                if continues {
                    let (ip, t) = (next.ip_len, next.ip_len);
                    let header = usize::from(p[t + 12] >> 4) * 4;
                    last.extend_from_slice(&p[t + header..]);
                    // ACK number and window (and PSH) as of the last segment.
                    last[t + 8..t + 12].copy_from_slice(&p[t + 8..t + 12]);
                    last[t + 14..t + 16].copy_from_slice(&p[t + 14..t + 16]);
                    last[t + 13] |= p[t + 13] & 0x08;
                    last[t + 16..t + 18].copy_from_slice(&[0xde, 0xad]);
                    if ip == 20 {
                        let total = u16::try_from(last.len()).unwrap();
                        last[2..4].copy_from_slice(&total.to_be_bytes());
                        smoltcp::wire::Ipv4Packet::new_unchecked(&mut last[..]).fill_checksum();
                    } else {
                        let payload = u16::try_from(last.len() - 40).unwrap();
                        last[4..6].copy_from_slice(&payload.to_be_bytes());
                    }
                    *received = Vouched::TcpSuperSegment;
                    continue;
                }
            }
        }
        out.push((p, Vouched::Unchecked));
    }
    out
}

pub struct Harness {
    pub engine: Engine,
    pub client: Interface,
    pub sockets: SocketSet<'static>,
    dev: Pipe,
    pub now: Instant,
    pub faults: Faults,
    rng: u64,
    pub daemon: Daemon,
    pub conns: Vec<ClientConn>,
    /// Every packet the engine emitted parses with valid checksums (the
    /// callback given to `new` checks them).
    pub checker: Option<fn(&[u8])>,
    buf: Vec<u8>,
    held: Option<(Option<Vouched>, Vec<u8>)>,
    pub engine_packets: u64,
    /// Super-segments handed to the engine (see [`Faults::super_segments`]).
    pub super_segments: u64,
}

impl Harness {
    pub fn new(config: EngineConfig) -> Self {
        let mtu = config.mtu;
        let mut dev = Pipe {
            mtu,
            ..Pipe::default()
        };
        let mut c = Config::new(HardwareAddress::Ip);
        c.random_seed = 7;
        let now = Instant::from_secs(1);
        let mut client = Interface::new(c, &mut dev, now);
        client.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(CLIENT_V4), 15)).unwrap();
            a.push(IpCidr::new(IpAddress::Ipv6(CLIENT_V6), 64)).unwrap();
        });
        client
            .routes_mut()
            .add_default_ipv4_route(Ipv4Addr::new(198, 18, 0, 2))
            .unwrap();
        client
            .routes_mut()
            .add_default_ipv6_route(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2))
            .unwrap();
        Self {
            engine: Engine::new(config, now).unwrap(),
            client,
            sockets: SocketSet::new(Vec::new()),
            dev,
            now,
            faults: Faults::default(),
            rng: 0x1234_5678_9abc_def1,
            daemon: Daemon::default(),
            conns: Vec::new(),
            checker: None,
            buf: vec![0; 65536],
            held: None,
            engine_packets: 0,
            super_segments: 0,
        }
    }

    fn rand_permille(&mut self) -> u32 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        u32::try_from(self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 54).unwrap() % 1000
    }

    /// Open a client connection to `dst` that will send `send` bytes.
    pub fn connect(
        &mut self,
        dst: SocketAddr,
        local_port: u16,
        send: u64,
        buffers: usize,
    ) -> usize {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffers]),
            tcp::SocketBuffer::new(vec![0; buffers]),
        );
        s.connect(self.client.context(), dst, local_port).unwrap();
        let handle = self.sockets.add(s);
        self.conns.push(ClientConn {
            handle,
            send,
            sent: 0,
            shutdown_after_send: true,
            shut: false,
            received: Received::default(),
        });
        self.conns.len() - 1
    }

    pub fn client_socket(&self, conn: usize) -> &tcp::Socket<'static> {
        self.sockets
            .get::<tcp::Socket<'static>>(self.conns[conn].handle)
    }

    /// Deliver `pkt` over a lossy, reordering wire. Returns whether it was
    /// handed on (possibly with a held-back packet after it).
    /// `to_engine` says what the engine is told of a packet sent to it;
    /// `None` sends it to the client.
    fn wire(
        &mut self,
        to_engine: Option<Vouched>,
        pkt: Vec<u8>,
        out: &mut Vec<(Option<Vouched>, Vec<u8>)>,
    ) {
        if self.faults.loss_permille > 0 && self.rand_permille() < self.faults.loss_permille {
            return;
        }
        if self.held.is_none()
            && self.faults.reorder_permille > 0
            && self.rand_permille() < self.faults.reorder_permille
        {
            self.held = Some((to_engine, pkt));
            return;
        }
        out.push((to_engine, pkt));
        if let Some(h) = self.held.take() {
            out.push(h);
        }
    }

    fn pump_client_apps(&mut self) {
        let mut buf = [0u8; 16384];
        for c in &mut self.conns {
            let s = self.sockets.get_mut::<tcp::Socket<'static>>(c.handle);
            while s.can_recv() {
                let n = s.recv_slice(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                c.received.absorb(SERVER_SEED, &buf[..n]);
            }
            while c.sent < c.send && s.can_send() {
                let n = usize::try_from((c.send - c.sent).min(buf.len() as u64)).unwrap();
                fill_pattern(CLIENT_SEED, c.sent, &mut buf[..n]);
                let put = s.send_slice(&buf[..n]).unwrap();
                c.sent += put as u64;
                if put == 0 {
                    break;
                }
            }
            if c.sent == c.send && c.shutdown_after_send && !c.shut && s.may_send() {
                s.close();
                c.shut = true;
            }
        }
    }

    /// One round: client app, client stack, wire, engine, daemon, back.
    /// Returns whether any packet moved.
    pub fn step(&mut self) -> bool {
        self.pump_client_apps();
        self.client.poll(self.now, &mut self.dev, &mut self.sockets);
        let mut moved = false;
        let mut out = Vec::new();
        let sent = std::mem::take(&mut self.dev.tx);
        let sent = if self.faults.super_segments {
            let merged = super_segments(sent);
            self.super_segments += merged
                .iter()
                .filter(|(_, r)| *r == Vouched::TcpSuperSegment)
                .count() as u64;
            merged
        } else {
            sent.into_iter().map(|p| (p, Vouched::Unchecked)).collect()
        };
        for (pkt, received) in sent {
            self.wire(Some(received), pkt, &mut out);
        }
        loop {
            let mut handled = false;
            while let Some(ev) = self.engine.poll_event() {
                self.daemon.handle(&mut self.engine, ev);
                handled = true;
            }
            self.daemon.pump_writes(&mut self.engine);
            let mut produced = false;
            while let Some(n) = self.engine.poll_transmit(&mut self.buf, self.now) {
                let pkt = self.buf[..n].to_vec();
                if let Some(check) = self.checker {
                    check(&pkt);
                }
                self.engine_packets += 1;
                produced = true;
                self.wire(None, pkt, &mut out);
            }
            let mut fed = false;
            for (to_engine, pkt) in out.drain(..) {
                moved = true;
                if let Some(received) = to_engine {
                    self.engine.handle_received(&pkt, received, self.now);
                    fed = true;
                } else {
                    self.dev.rx.push_back(pkt);
                }
            }
            if !fed && !produced && !handled {
                // A final look: the last `poll_transmit` may have raised
                // events (timeouts found by its sweep).
                let mut late = false;
                while let Some(ev) = self.engine.poll_event() {
                    self.daemon.handle(&mut self.engine, ev);
                    late = true;
                }
                if !late {
                    break;
                }
            }
        }
        self.client.poll(self.now, &mut self.dev, &mut self.sockets);
        self.pump_client_apps();
        moved || !self.dev.tx.is_empty()
    }

    /// Step, advancing the simulated clock, until `done` or `limit` of
    /// simulated time passes. Returns whether `done` became true.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            let moved = self.step();
            if done(self) {
                return true;
            }
            if moved {
                self.now += Duration::from_micros(50);
            } else {
                // Idle: jump to the earliest timer of either side.
                let next = [
                    self.engine.poll_at(),
                    self.client.poll_at(self.now, &self.sockets),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(deadline);
                self.now = next.max(self.now + Duration::from_millis(1)).min(deadline);
            }
        }
        done(self)
    }

    pub fn client_addr(&self, conn: usize) -> SocketAddr {
        let ep = self.client_socket(conn).local_endpoint().unwrap();
        SocketAddr::new(IpAddr::from(ep.addr), ep.port)
    }
}
