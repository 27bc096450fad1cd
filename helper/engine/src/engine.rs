//! The engine: bare IP packets in, bare IP packets out, events and flow data
//! through methods, time always passed in. It performs no I/O, reads no
//! clock and knows no OS; the daemon moves bytes and timers.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::IpAddress;

use crate::queue::TxQueue;
use crate::tcp::TcpStack;
use crate::types::{
    ConfigError, Counters, DropReason, EchoPolicy, EchoRequest, EngineConfig, Event, FlowError,
    FlowId, Received, UdpDatagram, Unreachable,
};
use crate::udp::{Lookup, UdpTable};
use crate::wire::{self, Inbound};

/// How often flow tables are swept for timeouts, in engine time.
const SWEEP_INTERVAL: Duration = Duration::from_millis(1000);

/// The sans-IO packet engine. See the crate documentation for the loop that
/// drives it.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    tx: TxQueue,
    events: VecDeque<Event>,
    counters: Counters,
    tcp: TcpStack,
    udp: UdpTable,
    next_flow: u64,
    now: Instant,
    next_sweep: Instant,
}

impl Engine {
    /// Create an engine. `now` is the engine's time origin; any monotonic
    /// clock works as long as every later call uses the same one.
    pub fn new(config: EngineConfig, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut tx = TxQueue::new(config.tx_queue_len);
        let tcp = TcpStack::new(&config, &mut tx, now);
        let udp = UdpTable::new(
            config.max_udp_mappings,
            config.udp_idle_timeout,
            config.udp_dns_idle_timeout,
        );
        Ok(Self {
            config,
            tx,
            events: VecDeque::new(),
            counters: Counters::default(),
            tcp,
            udp,
            next_flow: 1,
            now,
            next_sweep: now + SWEEP_INTERVAL,
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Counters so far, drops by reason included.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.add_drops(DropReason::TxQueueFull, self.tx.overflowed);
        c
    }

    /// TCP flows currently holding a socket (TIME-WAIT included).
    pub fn tcp_flow_count(&self) -> usize {
        self.tcp.len()
    }

    /// UDP mappings currently alive.
    pub fn udp_mapping_count(&self) -> usize {
        self.udp.len()
    }

    /// Bytes of socket buffer allocated per TCP flow (receive + transmit).
    pub fn tcp_buffer_bytes_per_flow(&self) -> usize {
        self.tcp.buffer_bytes_per_flow()
    }

    fn next_id(next_flow: &mut u64) -> FlowId {
        let id = FlowId(*next_flow);
        *next_flow += 1;
        id
    }

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
        if self.now >= self.next_sweep {
            self.next_sweep = self.now + SWEEP_INTERVAL;
            let events = &mut self.events;
            self.udp.expire(self.now, |flow| {
                events.push_back(Event::UdpExpired { flow });
            });
            self.tcp.sweep(self.now, &mut self.events);
        }
    }

    /// Handle one packet read from the tunnel: a bare IP packet, without the
    /// utun header (strip it with [`TunFraming::decode`](crate::frame::TunFraming::decode)).
    /// Invalid packets are counted by [`DropReason`] and dropped.
    pub fn handle_packet(&mut self, pkt: &[u8], now: Instant) {
        self.handle_received(pkt, Received::Unchecked, now);
    }

    /// [`Engine::handle_packet`] for a packet whose device vouches for what
    /// `received` says: those checks are skipped.
    pub fn handle_received(&mut self, pkt: &[u8], received: Received, now: Instant) {
        self.advance(now);
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += pkt.len() as u64;
        let inbound = match wire::classify(pkt, received, self.config.mtu, &self.config.routed) {
            Ok(inbound) => inbound,
            Err(reason) => {
                self.counters.drop_packet(reason);
                return;
            }
        };
        if self.rejects(&inbound) {
            self.counters.drop_packet(DropReason::Rejected);
            match inbound {
                Inbound::Tcp { ip, .. } => self.tcp.refuse(ip, self.now, &mut self.tx),
                Inbound::Udp { src, dst, .. } => {
                    let _ = self.queue_unreachable(src, dst, Unreachable::Prohibited);
                }
                Inbound::EchoRequest { .. } => {}
            }
            return;
        }
        match inbound {
            Inbound::Tcp { ip, src, dst, syn } => {
                let next_flow = &mut self.next_flow;
                self.tcp.handle_segment(
                    ip,
                    src,
                    dst,
                    syn,
                    self.now,
                    &mut self.tx,
                    &mut self.events,
                    &mut self.counters,
                    || Self::next_id(next_flow),
                );
            }
            Inbound::Udp { src, dst, payload } => {
                let next_flow = &mut self.next_flow;
                let flow = match self
                    .udp
                    .lookup(src, dst, self.now, || Self::next_id(next_flow))
                {
                    Lookup::Existing(flow) => flow,
                    Lookup::Created(flow) => {
                        self.counters.udp_mappings_created += 1;
                        flow
                    }
                    Lookup::Full => {
                        self.counters.drop_packet(DropReason::UdpTableFull);
                        return;
                    }
                };
                self.events.push_back(Event::UdpDatagram(UdpDatagram {
                    flow,
                    src,
                    dst,
                    payload: payload.to_vec(),
                }));
            }
            Inbound::EchoRequest {
                src,
                dst,
                ident,
                seq,
                data,
            } => match self.config.echo {
                EchoPolicy::Reply => {
                    // Cannot be too large: the reply is exactly as long as the request.
                    let _ = self.queue_echo_reply(dst, src, ident, seq, data);
                }
                EchoPolicy::Forward => {
                    self.events.push_back(Event::EchoRequest(EchoRequest {
                        src,
                        dst,
                        ident,
                        seq,
                        payload: data.to_vec(),
                    }));
                }
                EchoPolicy::Drop => self.counters.drop_packet(DropReason::EchoPolicyDrop),
            },
        }
    }

    fn queue_echo_reply(
        &mut self,
        from: IpAddr,
        to: IpAddr,
        ident: u16,
        seq: u16,
        data: &[u8],
    ) -> Result<(), FlowError> {
        let len = wire::ip_packet_len(from, wire::ICMP_ECHO_HEADER_LEN + data.len());
        if len > self.config.mtu {
            return Err(FlowError::TooLarge {
                len: data.len(),
                max: self.config.mtu - wire::ip_packet_len(from, wire::ICMP_ECHO_HEADER_LEN),
            });
        }
        if self.tx.is_full() {
            self.tx.overflowed += 1;
            return Err(FlowError::QueueFull);
        }
        self.tx.push_with(len, |buf| {
            wire::emit_echo_reply(buf, from, to, ident, seq, data);
        });
        self.counters.echo_replies += 1;
        Ok(())
    }

    /// Answer a forwarded echo request (policy [`EchoPolicy::Forward`]) with
    /// the data of the real reply. The reply goes from `request.dst` to
    /// `request.src` with the request's identifier and sequence number.
    pub fn echo_reply(&mut self, request: &EchoRequest, payload: &[u8]) -> Result<(), FlowError> {
        if request.src.is_ipv4() != request.dst.is_ipv4() {
            return Err(FlowError::FamilyMismatch);
        }
        self.queue_echo_reply(
            request.dst,
            request.src,
            request.ident,
            request.seq,
            payload,
        )
    }

    fn rejects(&self, inbound: &Inbound<'_>) -> bool {
        if self.config.reject.is_empty() {
            return false;
        }
        let dst: IpAddr = match inbound {
            Inbound::Tcp { dst, .. } | Inbound::Udp { dst, .. } => dst.ip(),
            Inbound::EchoRequest { dst, .. } => *dst,
        };
        let dst = IpAddress::from(dst);
        self.config.reject.iter().any(|c| c.contains_addr(&dst))
    }

    fn queue_unreachable(
        &mut self,
        client: SocketAddr,
        dst: SocketAddr,
        why: Unreachable,
    ) -> Result<(), FlowError> {
        if self.tx.is_full() {
            self.tx.overflowed += 1;
            return Err(FlowError::QueueFull);
        }
        let len = wire::unreachable_len(client);
        self.tx.push_with(len, |buf| {
            wire::emit_unreachable(buf, why, client, dst);
        });
        Ok(())
    }

    /// Tell the client of UDP mapping `flow` that its destination cannot be
    /// reached, with an ICMP (`ICMPv6`) destination unreachable from the
    /// destination quoting the mapping's addresses and ports, so the
    /// client's `recv` fails at once (`ECONNREFUSED`, `EHOSTUNREACH`)
    /// instead of waiting for a timeout.
    pub fn udp_unreachable(&mut self, flow: FlowId, why: Unreachable) -> Result<(), FlowError> {
        let mapping = self.udp.get(flow).ok_or(FlowError::UnknownFlow(flow))?;
        self.queue_unreachable(mapping.src, mapping.dst, why)
    }

    /// Send a datagram to the client of UDP mapping `flow`, from the
    /// destination it originally addressed. Refreshes the mapping's timer.
    pub fn udp_send(&mut self, flow: FlowId, payload: &[u8]) -> Result<(), FlowError> {
        let mapping = self
            .udp
            .touch(flow, self.now)
            .ok_or(FlowError::UnknownFlow(flow))?;
        let (from, to) = (mapping.dst, mapping.src);
        let len = wire::ip_packet_len(from.ip(), wire::UDP_HEADER_LEN + payload.len());
        if len > self.config.mtu {
            return Err(FlowError::TooLarge {
                len: payload.len(),
                max: self.config.mtu - wire::ip_packet_len(from.ip(), wire::UDP_HEADER_LEN),
            });
        }
        if self.tx.is_full() {
            self.tx.overflowed += 1;
            return Err(FlowError::QueueFull);
        }
        self.tx
            .push_with(len, |buf| wire::emit_udp(buf, from, to, payload));
        Ok(())
    }

    /// Queue as much of `data` as fits in the flow's transmit buffer; returns
    /// how much did. When it is less than `data.len()`, wait for
    /// [`Event::TcpWritable`].
    pub fn tcp_send(&mut self, flow: FlowId, data: &[u8]) -> Result<usize, FlowError> {
        self.tcp.send(flow, data, self.now, &mut self.events)
    }

    /// Read received bytes; 0 means nothing is buffered now (after
    /// [`Event::TcpReadClosed`]: nothing ever will be).
    pub fn tcp_recv(&mut self, flow: FlowId, buf: &mut [u8]) -> Result<usize, FlowError> {
        self.tcp.recv(flow, self.now, &mut self.events, |data| {
            // One contiguous run a call: up to the ring's wrap; what lies
            // past it comes with the next call.
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            n
        })
    }

    /// Read received bytes in place: `take` is given the longest contiguous
    /// run buffered (empty when there is none) and returns how many of them
    /// it consumed. Returns that count. For a caller that would otherwise
    /// copy out of [`Engine::tcp_recv`]'s buffer again.
    pub fn tcp_recv_with(
        &mut self,
        flow: FlowId,
        take: impl FnOnce(&[u8]) -> usize,
    ) -> Result<usize, FlowError> {
        self.tcp.recv(flow, self.now, &mut self.events, take)
    }

    /// Half-close: send FIN after the queued bytes. Reading continues.
    pub fn tcp_shutdown_write(&mut self, flow: FlowId) -> Result<(), FlowError> {
        self.tcp.shutdown_write(flow, self.now, &mut self.events)
    }

    /// Reset the flow (RST to the client), e.g. when the upstream refused.
    /// The id is dead afterwards; no further events are emitted for it.
    pub fn tcp_abort(&mut self, flow: FlowId) -> Result<(), FlowError> {
        self.tcp.abort(flow, self.now)
    }

    /// Write the next outbound IP packet into `buf` (which should be at least
    /// `mtu` bytes) and return its length. Call until `None` after every
    /// `handle_packet`, flow call, or when [`poll_at`](Self::poll_at) is due.
    /// A packet larger than `buf` is discarded and counted as
    /// [`DropReason::TxQueueFull`].
    pub fn poll_transmit(&mut self, buf: &mut [u8], now: Instant) -> Option<usize> {
        self.advance(now);
        if self.tx.is_empty() {
            self.tcp
                .poll_egress(self.now, &mut self.tx, &mut self.events);
        }
        loop {
            let pkt = self.tx.pop()?;
            let len = pkt.len();
            if len <= buf.len() {
                buf[..len].copy_from_slice(&pkt);
                self.tx.recycle(pkt);
                self.counters.tx_packets += 1;
                self.counters.tx_bytes += len as u64;
                return Some(len);
            }
            self.tx.overflowed += 1;
            self.tx.recycle(pkt);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the engine next needs `poll_transmit` called even without new
    /// packets (retransmissions, delayed ACKs, timeouts). `None`: only on input.
    pub fn poll_at(&self) -> Option<Instant> {
        let tcp = self.tcp.poll_at();
        let sweep = (self.tcp.len() > 0 || self.udp.len() > 0).then_some(self.next_sweep);
        let queued = (!self.tx.is_empty()).then_some(self.now);
        [tcp, sweep, queued].into_iter().flatten().min()
    }
}
