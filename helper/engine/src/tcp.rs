//! TCP termination on one smoltcp `Interface` (medium IP, `any_ip`) and one
//! `SocketSet`, plus the flow table that gives every 4-tuple its own socket.
//!
//! smoltcp has no accept hook: a socket in LISTEN takes the first SYN whose
//! destination matches its listen endpoint, whatever the source, and
//! `Interface::poll*` walks every socket of the `SocketSet` it is given, for
//! every segment and every egress pass. So each flow owns a one-socket
//! `SocketSet`, created with a listener for exactly its destination when its
//! SYN arrives, and the engine hands smoltcp only the set of the flow a segment
//! belongs to (looked up by 4-tuple). Two clients connecting to the same
//! destination can never share a socket, and per-segment work does not grow
//! with the number of flows. Segments no flow owns go to an empty set, and
//! smoltcp answers them with RST. Egress runs only for flows whose smoltcp
//! timer is due or that just saw activity, kept in an ordered timer set.
//!
//! This module must not parse or validate packets (`wire` does that first).

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpListenEndpoint};

use crate::queue::{TunPort, TxQueue};
use crate::types::{Counters, DropReason, EngineConfig, Event, FlowError, FlowId};

/// Gateways of the interface's default routes. smoltcp needs *a* route before
/// it transmits; on medium IP the gateway address itself is never used.
/// 192.0.0.8 is the IPv4 dummy address (RFC 7600).
const ROUTE_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);
const ROUTE_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

// Independent edge-trigger flags, not a state machine in disguise.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug)]
struct TcpFlow {
    /// This flow's own socket set, holding exactly one socket.
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    /// This flow's entry in `TcpStack::timers`, if any.
    deadline: Option<Instant>,
    src: SocketAddr,
    dst: SocketAddr,
    created: Instant,
    last_activity: Instant,
    readable_sent: bool,
    writable_sent: bool,
    read_closed_sent: bool,
    fin_received: bool,
    write_shut: bool,
    /// The final event was emitted (or the daemon aborted): the id is dead and
    /// the socket lingers only to send its RST or sit out TIME-WAIT.
    finished: bool,
}

pub(crate) struct TcpStack {
    iface: Interface,
    /// Given to smoltcp for segments no flow owns, so that it answers RST.
    empty: SocketSet<'static>,
    /// When each flow next needs an egress pass.
    timers: BTreeSet<(Instant, FlowId)>,
    by_tuple: HashMap<(SocketAddr, SocketAddr), FlowId>,
    flows: HashMap<FlowId, TcpFlow>,
    scratch: Vec<FlowId>,
    mtu: usize,
    rx_buffer: usize,
    tx_buffer: usize,
    max_flows: usize,
    idle_timeout: Duration,
    unacked_timeout: Duration,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TcpStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStack")
            .field("flows", &self.flows.len())
            .field("max_flows", &self.max_flows)
            .finish_non_exhaustive()
    }
}

impl TcpStack {
    pub(crate) fn new(config: &EngineConfig, tx: &mut TxQueue, now: Instant) -> Self {
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = config.random_seed;
        let mut port = TunPort {
            rx: None,
            tx,
            mtu: config.mtu,
        };
        let mut iface = Interface::new(iface_config, &mut port, now);
        // `any_ip`: accept segments for every destination. In smoltcp 0.14
        // `has_ip_addr` is always true with `any_ip`, so no address is needed;
        // the routes only satisfy the egress neighbour check.
        iface.set_any_ip(true);
        // Two routes fit IFACE_MAX_ROUTE_COUNT (2); failure would be a smoltcp change.
        let _ = iface.routes_mut().add_default_ipv4_route(ROUTE_GATEWAY_V4);
        let _ = iface.routes_mut().add_default_ipv6_route(ROUTE_GATEWAY_V6);
        Self {
            iface,
            empty: SocketSet::new(Vec::new()),
            timers: BTreeSet::new(),
            by_tuple: HashMap::new(),
            flows: HashMap::new(),
            scratch: Vec::new(),
            mtu: config.mtu,
            rx_buffer: config.tcp_rx_buffer,
            tx_buffer: config.tcp_tx_buffer,
            max_flows: config.max_tcp_flows,
            idle_timeout: config.tcp_idle_timeout,
            unacked_timeout: config.tcp_unacked_timeout,
            handshake_timeout: config.tcp_handshake_timeout,
        }
    }

    /// Flows holding a socket (TIME-WAIT and unsent-RST flows included).
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// Feed one validated segment.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_segment(
        &mut self,
        ip: &[u8],
        src: SocketAddr,
        dst: SocketAddr,
        syn: bool,
        now: Instant,
        tx: &mut TxQueue,
        events: &mut VecDeque<Event>,
        counters: &mut Counters,
        next_id: impl FnOnce() -> FlowId,
    ) {
        let mut flow = self.by_tuple.get(&(src, dst)).copied();
        let mut opened = None;
        if syn {
            if let Some(id) = flow {
                // A new SYN on a tuple whose previous connection is over
                // (TIME-WAIT or aborted) starts a fresh flow.
                if self.is_over(id) {
                    if self.flows.get(&id).is_some_and(|f| !f.finished) {
                        // TIME-WAIT with unread data: its id dies now.
                        events.push_back(Event::TcpReset { flow: id });
                    }
                    self.remove(id);
                    flow = None;
                }
            }
            if flow.is_none() {
                if self.flows.len() >= self.max_flows {
                    // Fed to the empty set below, so smoltcp answers RST.
                    counters.drop_packet(DropReason::TcpFlowLimit);
                } else {
                    let id = next_id();
                    self.open(id, src, dst, now);
                    opened = Some(id);
                    flow = Some(id);
                }
            }
        }

        let mut port = TunPort {
            rx: Some(ip),
            tx,
            mtu: self.mtu,
        };
        let sockets = match flow.and_then(|id| self.flows.get_mut(&id)) {
            Some(f) => &mut f.sockets,
            None => &mut self.empty,
        };
        self.iface.poll_ingress_single(now, &mut port, sockets);

        let Some(id) = flow else {
            return;
        };
        if opened.is_some() {
            if self.socket(id).is_none_or(|s| s.state() == State::Listen) {
                // smoltcp refused the SYN; never leave a listener behind.
                self.remove(id);
                return;
            }
            counters.tcp_flows_opened += 1;
            events.push_back(Event::TcpOpened { flow: id, src, dst });
        }
        if let Some(f) = self.flows.get_mut(&id) {
            f.last_activity = now;
        }
        self.update(id, events);
        self.refresh_timer(id, now);
    }

    /// Answers a segment that must not open or reach a flow: fed to the
    /// empty socket set, smoltcp replies with a RST (none to a RST).
    pub(crate) fn refuse(&mut self, ip: &[u8], now: Instant, tx: &mut TxQueue) {
        let mut port = TunPort {
            rx: Some(ip),
            tx,
            mtu: self.mtu,
        };
        self.iface
            .poll_ingress_single(now, &mut port, &mut self.empty);
    }

    fn open(&mut self, id: FlowId, src: SocketAddr, dst: SocketAddr, now: Instant) {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; self.rx_buffer]),
            tcp::SocketBuffer::new(vec![0; self.tx_buffer]),
        );
        // The daemon already coalesces upstream reads; Nagle would only add
        // latency between it and the client.
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(self.unacked_timeout));
        let endpoint = IpListenEndpoint {
            addr: Some(dst.ip().into()),
            port: dst.port(),
        };
        // Cannot fail: the port is non-zero (checked by `wire`) and the socket is fresh.
        let _ = socket.listen(endpoint);
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(socket);
        self.by_tuple.insert((src, dst), id);
        self.flows.insert(
            id,
            TcpFlow {
                sockets,
                handle,
                deadline: None,
                src,
                dst,
                created: now,
                last_activity: now,
                readable_sent: false,
                writable_sent: false,
                read_closed_sent: false,
                fin_received: false,
                write_shut: false,
                finished: false,
            },
        );
    }

    fn socket(&self, id: FlowId) -> Option<&tcp::Socket<'static>> {
        let f = self.flows.get(&id)?;
        Some(f.sockets.get::<tcp::Socket<'static>>(f.handle))
    }

    fn socket_mut(&mut self, id: FlowId) -> Option<&mut tcp::Socket<'static>> {
        let f = self.flows.get_mut(&id)?;
        Some(f.sockets.get_mut::<tcp::Socket<'static>>(f.handle))
    }

    fn is_over(&self, id: FlowId) -> bool {
        self.flows.get(&id).is_none_or(|f| {
            f.finished
                || matches!(
                    f.sockets.get::<tcp::Socket<'_>>(f.handle).state(),
                    State::TimeWait | State::Closed
                )
        })
    }

    fn remove(&mut self, id: FlowId) {
        if let Some(f) = self.flows.remove(&id) {
            if let Some(at) = f.deadline {
                self.timers.remove(&(at, id));
            }
            if let Entry::Occupied(e) = self.by_tuple.entry((f.src, f.dst)) {
                if *e.get() == id {
                    e.remove();
                }
            }
        }
    }

    /// Re-file the flow in the timer set at smoltcp's next deadline for it.
    fn refresh_timer(&mut self, id: FlowId, now: Instant) {
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        let at = self.iface.poll_at(now, &f.sockets);
        if at == f.deadline {
            return;
        }
        if let Some(old) = f.deadline {
            self.timers.remove(&(old, id));
        }
        if let Some(new) = at {
            self.timers.insert((new, id));
        }
        f.deadline = at;
    }

    /// Emit the events the socket's state now calls for.
    /// Emits the flow's events for its state now, and frees a flow smoltcp
    /// is done with at once rather than at the next sweep: at thousands of
    /// connections a second, a second of closed flows holding their buffers
    /// is most of the helper's memory.
    fn update(&mut self, id: FlowId, events: &mut VecDeque<Event>) {
        self.notify(id, events);
        self.reap_if_done(id);
    }

    /// Removes a finished flow once smoltcp is done with its socket (RST
    /// sent, LAST-ACK answered, TIME-WAIT over). Until then `recv` on it
    /// returns 0.
    fn reap_if_done(&mut self, id: FlowId) {
        let Some(f) = self.flows.get(&id) else {
            return;
        };
        let socket = f.sockets.get::<tcp::Socket<'_>>(f.handle);
        if f.finished && socket.state() == State::Closed && socket.remote_endpoint().is_none() {
            self.remove(id);
        }
    }

    fn notify(&mut self, id: FlowId, events: &mut VecDeque<Event>) {
        let Some(f) = self.flows.get_mut(&id) else {
            return;
        };
        if f.finished {
            return;
        }
        let socket = f.sockets.get::<tcp::Socket<'_>>(f.handle);
        let state = socket.state();
        if matches!(
            state,
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        ) {
            f.fin_received = true;
        }
        let graceful =
            state == State::TimeWait || (state == State::Closed && f.fin_received && f.write_shut);
        if state == State::Closed && !graceful {
            // RST from the client, or smoltcp's retransmission timeout.
            f.finished = true;
            events.push_back(Event::TcpReset { flow: id });
            return;
        }
        if socket.can_recv() && !f.readable_sent {
            f.readable_sent = true;
            events.push_back(Event::TcpReadable { flow: id });
        }
        if f.fin_received && !socket.can_recv() && !f.read_closed_sent {
            f.read_closed_sent = true;
            events.push_back(Event::TcpReadClosed { flow: id });
        }
        if socket.may_send() && socket.send_queue() < socket.send_capacity() && !f.writable_sent {
            f.writable_sent = true;
            events.push_back(Event::TcpWritable { flow: id });
        }
        if graceful && !socket.can_recv() {
            f.finished = true;
            events.push_back(Event::TcpClosed { flow: id });
        }
    }

    /// Run an egress pass for every flow whose timer is due (activity marks a
    /// flow due at once), while the outbound queue has room.
    pub(crate) fn poll_egress(
        &mut self,
        now: Instant,
        tx: &mut TxQueue,
        events: &mut VecDeque<Event>,
    ) {
        let mut due = std::mem::take(&mut self.scratch);
        due.clear();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(f) = self.flows.get_mut(&id) {
                f.deadline = None;
            }
            due.push(id);
        }
        for &id in &due {
            if tx.is_full() {
                // Still due: re-filed below at smoltcp's (past) deadline.
                continue;
            }
            if let Some(f) = self.flows.get_mut(&id) {
                let mut port = TunPort {
                    rx: None,
                    tx: &mut *tx,
                    mtu: self.mtu,
                };
                self.iface.poll_egress(now, &mut port, &mut f.sockets);
            }
            self.update(id, events);
        }
        for &id in &due {
            self.refresh_timer(id, now);
        }
        self.scratch = due;
    }

    /// Visit every flow: idle and handshake timeouts, and removal of finished
    /// sockets. Runs about once a second, so its O(flows) cost is amortised.
    pub(crate) fn sweep(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend(self.flows.keys().copied());
        for &id in &ids {
            let Some(f) = self.flows.get(&id) else {
                continue;
            };
            let state = f.sockets.get::<tcp::Socket<'_>>(f.handle).state();
            let idle = now - f.last_activity >= self.idle_timeout;
            let stuck = state == State::SynReceived && now - f.created >= self.handshake_timeout;
            if !f.finished && (idle || stuck) {
                if let Some(socket) = self.socket_mut(id) {
                    socket.abort();
                }
                if let Some(f) = self.flows.get_mut(&id) {
                    f.finished = true;
                }
                events.push_back(Event::TcpReset { flow: id });
                self.refresh_timer(id, now);
            } else {
                self.update(id, events);
            }
            self.reap_if_done(id);
        }
        self.scratch = ids;
    }

    /// The earliest flow deadline.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    fn live(&mut self, id: FlowId) -> Result<&mut TcpFlow, FlowError> {
        match self.flows.get_mut(&id) {
            Some(f) if !f.finished => Ok(f),
            _ => Err(FlowError::UnknownFlow(id)),
        }
    }

    pub(crate) fn send(
        &mut self,
        id: FlowId,
        data: &[u8],
        now: Instant,
        events: &mut VecDeque<Event>,
    ) -> Result<usize, FlowError> {
        let f = self.live(id)?;
        f.last_activity = now;
        let socket = f.sockets.get_mut::<tcp::Socket<'_>>(f.handle);
        let n = socket
            .send_slice(data)
            .map_err(|_| FlowError::WriteClosed(id))?;
        if n < data.len() {
            f.writable_sent = false;
        }
        self.update(id, events);
        self.refresh_timer(id, now);
        Ok(n)
    }

    /// Reads in place: `take` gets the longest contiguous run buffered and
    /// returns how much of it it consumed.
    pub(crate) fn recv(
        &mut self,
        id: FlowId,
        now: Instant,
        events: &mut VecDeque<Event>,
        take: impl FnOnce(&[u8]) -> usize,
    ) -> Result<usize, FlowError> {
        let f = self.flows.get_mut(&id).ok_or(FlowError::UnknownFlow(id))?;
        if f.finished {
            return Ok(0);
        }
        f.last_activity = now;
        let socket = f.sockets.get_mut::<tcp::Socket<'_>>(f.handle);
        // Finished (FIN read) and not-yet-established both mean "nothing to
        // read"; so does an empty run.
        let n = socket
            .recv(|data| {
                let n = if data.is_empty() {
                    0
                } else {
                    take(data).min(data.len())
                };
                (n, n)
            })
            .unwrap_or(0);
        if !socket.can_recv() {
            f.readable_sent = false;
        }
        self.update(id, events);
        // Reading may open the window enough for smoltcp to announce it.
        self.refresh_timer(id, now);
        Ok(n)
    }

    pub(crate) fn shutdown_write(
        &mut self,
        id: FlowId,
        now: Instant,
        events: &mut VecDeque<Event>,
    ) -> Result<(), FlowError> {
        let f = self.live(id)?;
        f.last_activity = now;
        f.write_shut = true;
        f.sockets.get_mut::<tcp::Socket<'_>>(f.handle).close();
        self.update(id, events);
        self.refresh_timer(id, now);
        Ok(())
    }

    pub(crate) fn abort(&mut self, id: FlowId, now: Instant) -> Result<(), FlowError> {
        let f = self.live(id)?;
        f.finished = true;
        // smoltcp sends one RST from CLOSED while the socket still has its
        // 4-tuple; the sweep removes it once that is done.
        f.sockets.get_mut::<tcp::Socket<'_>>(f.handle).abort();
        self.refresh_timer(id, now);
        Ok(())
    }

    /// Bytes allocated for one flow's socket buffers.
    pub(crate) fn buffer_bytes_per_flow(&self) -> usize {
        self.rx_buffer + self.tx_buffer
    }
}
