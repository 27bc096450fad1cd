//! The UDP mapping table: one mapping per (client, destination) 4-tuple, with
//! an idle timeout. It owns no sockets; the daemon opens one per mapping when
//! it sees the first [`Event::UdpDatagram`](crate::Event::UdpDatagram) and
//! closes it on [`Event::UdpExpired`](crate::Event::UdpExpired).
//!
//! Memory per mapping: two hash-map entries of about 80 and 90 bytes plus
//! hash-table slack, about 200 bytes (estimated from the entry sizes).

use std::collections::HashMap;
use std::net::SocketAddr;

use smoltcp::time::{Duration, Instant};

use crate::types::FlowId;

/// The DNS port gets the shorter timeout: a lookup is one round trip.
const DNS_PORT: u16 = 53;

#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpMapping {
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    last_seen: Instant,
    timeout: Duration,
}

impl UdpMapping {
    fn expires_at(&self) -> Instant {
        self.last_seen + self.timeout
    }
}

#[derive(Debug)]
pub(crate) struct UdpTable {
    by_tuple: HashMap<(SocketAddr, SocketAddr), FlowId>,
    by_flow: HashMap<FlowId, UdpMapping>,
    max: usize,
    idle: Duration,
    dns_idle: Duration,
}

/// Outcome of looking up the mapping for an inbound datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Existing(FlowId),
    Created(FlowId),
    Full,
}

impl UdpTable {
    pub(crate) fn new(max: usize, idle: Duration, dns_idle: Duration) -> Self {
        Self {
            by_tuple: HashMap::new(),
            by_flow: HashMap::new(),
            max,
            idle,
            dns_idle,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_flow.len()
    }

    /// Find or create the mapping for a datagram and refresh its timer.
    /// `next_id` is called only when a mapping is created.
    pub(crate) fn lookup(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        now: Instant,
        next_id: impl FnOnce() -> FlowId,
    ) -> Lookup {
        if let Some(&flow) = self.by_tuple.get(&(src, dst)) {
            if let Some(m) = self.by_flow.get_mut(&flow) {
                m.last_seen = now;
            }
            return Lookup::Existing(flow);
        }
        if self.by_flow.len() >= self.max {
            return Lookup::Full;
        }
        let flow = next_id();
        let timeout = if dst.port() == DNS_PORT {
            self.dns_idle
        } else {
            self.idle
        };
        self.by_tuple.insert((src, dst), flow);
        self.by_flow.insert(
            flow,
            UdpMapping {
                src,
                dst,
                last_seen: now,
                timeout,
            },
        );
        Lookup::Created(flow)
    }

    /// The mapping of `flow`, refreshing its timer (a reply is activity too).
    /// The mapping of `flow`, without refreshing its timer.
    pub(crate) fn get(&self, flow: FlowId) -> Option<UdpMapping> {
        self.by_flow.get(&flow).copied()
    }

    pub(crate) fn touch(&mut self, flow: FlowId, now: Instant) -> Option<UdpMapping> {
        let m = self.by_flow.get_mut(&flow)?;
        m.last_seen = now;
        Some(*m)
    }

    /// Remove every mapping idle past its timeout, reporting each.
    pub(crate) fn expire(&mut self, now: Instant, mut on_expired: impl FnMut(FlowId)) {
        let by_tuple = &mut self.by_tuple;
        self.by_flow.retain(|&flow, m| {
            if m.expires_at() <= now {
                by_tuple.remove(&(m.src, m.dst));
                on_expired(flow);
                false
            } else {
                true
            }
        });
    }
}
