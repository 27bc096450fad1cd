//! The bounded outbound packet queue, and the smoltcp `Device` that connects
//! the TCP interface to it. Packet buffers are recycled, so steady-state
//! traffic allocates nothing.

use std::collections::VecDeque;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

#[derive(Debug)]
pub(crate) struct TxQueue {
    packets: VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    limit: usize,
    /// Packets discarded because the queue was full.
    pub(crate) overflowed: u64,
}

impl TxQueue {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            packets: VecDeque::with_capacity(limit),
            pool: Vec::new(),
            limit: limit.max(1),
            overflowed: 0,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.packets.len() >= self.limit
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Queue a packet of `len` bytes written by `fill`. Returns `None` (and
    /// counts an overflow) when the queue is full; `fill` then runs on a
    /// scratch buffer so that callers who must produce a value still can.
    pub(crate) fn push_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = fill(&mut buf);
        if self.is_full() {
            self.overflowed += 1;
            self.pool.push(buf);
        } else {
            self.packets.push_back(buf);
        }
        r
    }

    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.packets.pop_front()
    }

    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < self.limit {
            self.pool.push(buf);
        }
    }
}

/// The device smoltcp's `Interface` polls: at most one inbound packet (the one
/// being handled) and the shared outbound queue.
#[derive(Debug)]
pub(crate) struct TunPort<'a> {
    pub(crate) rx: Option<&'a [u8]>,
    pub(crate) tx: &'a mut TxQueue,
    pub(crate) mtu: usize,
}

pub(crate) fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    // Inbound checksums are verified by `wire::classify` (or vouched for by
    // the device: `Received`) before smoltcp sees a packet; smoltcp only
    // computes them on output.
    let mut checksum = ChecksumCapabilities::default();
    checksum.ipv4 = Checksum::Tx;
    checksum.tcp = Checksum::Tx;
    checksum.udp = Checksum::Tx;
    checksum.icmpv4 = Checksum::Tx;
    checksum.icmpv6 = Checksum::Tx;
    caps.checksum = checksum;
    caps
}

#[derive(Debug)]
pub(crate) struct PortRx<'a>(&'a [u8]);

#[derive(Debug)]
pub(crate) struct PortTx<'a>(&'a mut TxQueue);

impl phy::RxToken for PortRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for PortTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.push_with(len, f)
    }
}

impl phy::Device for TunPort<'_> {
    type RxToken<'b>
        = PortRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = PortTx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(PortRx<'_>, PortTx<'_>)> {
        let pkt = self.rx.take()?;
        Some((PortRx(pkt), PortTx(self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<PortTx<'_>> {
        // Refusing a token makes smoltcp keep the segment and retry later:
        // backpressure instead of loss.
        if self.tx.is_full() {
            None
        } else {
            Some(PortTx(self.tx))
        }
    }

    fn capabilities(&self) -> DeviceCapabilities {
        capabilities(self.mtu)
    }
}
