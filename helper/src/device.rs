//! The tunnel device as the data plane sees it: packets move in batches.
//!
//! On Linux the device is opened with offloads (`IFF_VNET_HDR`,
//! `TUNSETOFFLOAD` with TSO and checksum offload): one read returns a TCP
//! super-segment of up to 64 KiB that tun-rs splits into MTU-sized packets,
//! and one write carries the consecutive segments of a flow that tun-rs
//! coalesced (the kernel segments them again). That turns tens of syscalls
//! per 64 KiB into one in each direction, which is where a userspace stack
//! spends its time (docs/benchmarks.md has the profile). Every packet still
//! reaches the engine as an ordinary, fully checksummed IP packet: tun-rs
//! completes partial checksums on read and fills them on write.
//!
//! macOS utun has no offloads: there a batch is one packet per syscall, as
//! it is for the test device.

use std::future::Future;
use std::io;

/// Packets read or written together, each in its own buffer behind
/// `headroom` bytes reserved for the device's per-packet header (a
/// virtio-net header on Linux). Buffers are allocated once and reused: no
/// allocation per packet.
#[derive(Debug)]
pub struct Batch {
    headroom: usize,
    mtu: usize,
    /// Each `headroom + packet`; received batches keep `headroom + mtu`.
    bufs: Vec<Vec<u8>>,
    /// Received packet lengths.
    sizes: Vec<usize>,
    /// Packets in the batch.
    len: usize,
}

impl Batch {
    /// A batch of `slots` packets of at most `mtu` bytes.
    pub fn new(slots: usize, headroom: usize, mtu: usize) -> Self {
        let slots = slots.max(1);
        Self {
            headroom,
            mtu,
            bufs: vec![vec![0; headroom + mtu]; slots],
            sizes: vec![0; slots],
            len: 0,
        }
    }

    /// Enough slots for one 64 KiB super-segment split at `mtu`, with room
    /// for IPv6 and TCP options in each segment's headers.
    pub fn for_receive(headroom: usize, mtu: usize) -> Self {
        Self::new(segments_per_64k(mtu), headroom, mtu)
    }

    /// As many slots as one 64 KiB coalesced write holds at `mtu`, each
    /// able to grow into that write: tun-rs appends a flow's following
    /// segments to the first one's buffer, and only within its capacity.
    /// The capacity is reserved, not touched: memory is used only as far as
    /// writes are coalesced.
    pub fn for_send(headroom: usize, mtu: usize) -> Self {
        let mut batch = Self::new(segments_per_64k(mtu), headroom, mtu);
        for buf in &mut batch.bufs {
            buf.reserve_exact(2 * headroom + usize::from(u16::MAX) - buf.len());
        }
        batch
    }

    /// The packets received, in order.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.len]
            .iter()
            .zip(&self.sizes)
            .map(|(b, &n)| &b[self.headroom..self.headroom + n])
    }

    /// Where the next outgoing packet is written, or `None` when the batch
    /// is full (send it first). [`Batch::push`] queues what was written.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        let buf = self.bufs.get_mut(self.len)?;
        // A buffer that carried a coalesced write keeps its larger capacity.
        buf.resize(self.headroom + self.mtu, 0);
        Some(&mut buf[self.headroom..])
    }

    /// Queues the first `n` bytes of the slot [`Batch::next_slot`] gave.
    pub fn push(&mut self, n: usize) {
        if let Some(buf) = self.bufs.get_mut(self.len) {
            buf.truncate(self.headroom + n.min(self.mtu));
            self.sizes[self.len] = n.min(self.mtu);
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The queued packets' buffers, headroom included, for a batched write.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn queued_mut(&mut self) -> &mut [Vec<u8>] {
        &mut self.bufs[..self.len]
    }

    /// Every slot at full size, for a batched read.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn slots_mut(&mut self) -> (&mut [Vec<u8>], &mut [usize]) {
        for buf in &mut self.bufs {
            buf.resize(self.headroom + self.mtu, 0);
        }
        (&mut self.bufs, &mut self.sizes)
    }

    /// The first slot, for a device that reads one packet per call.
    fn first_slot(&mut self) -> &mut [u8] {
        self.len = 0;
        let (headroom, mtu) = (self.headroom, self.mtu);
        let buf = &mut self.bufs[0];
        buf.resize(headroom + mtu, 0);
        &mut buf[headroom..]
    }

    /// Records that the first slot holds one packet of `n` bytes.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    fn received_one(&mut self, n: usize) {
        self.sizes[0] = n.min(self.mtu);
        self.len = 1;
    }

    /// The queued packets without their headroom.
    fn queued(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.len].iter().map(|b| &b[self.headroom..])
    }
}

/// Segments of at most `mtu` bytes that carry 64 KiB of TCP payload, with
/// room for IPv6 and TCP options in each segment's headers.
fn segments_per_64k(mtu: usize) -> usize {
    usize::from(u16::MAX) / mtu.saturating_sub(100).max(64) + 2
}

/// The packet device the data plane reads from and writes to.
pub trait PacketDevice: Send + Sync + 'static {
    /// What one data plane keeps for batched I/O (Linux: the raw read
    /// buffer and the coalescing table).
    type Scratch: Send;

    /// Bytes each [`Batch`] buffer keeps in front of its packet.
    fn headroom(&self) -> usize;

    fn scratch(&self) -> Self::Scratch;

    /// Waits for packets and reads one batch (at least one packet).
    fn recv_batch(
        &self,
        scratch: &mut Self::Scratch,
        rx: &mut Batch,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Reads one batch if packets are waiting now; `WouldBlock` otherwise.
    fn try_recv_batch(&self, scratch: &mut Self::Scratch, rx: &mut Batch) -> io::Result<()>;

    /// Writes every queued packet and empties the batch.
    fn send_batch(
        &self,
        scratch: &mut Self::Scratch,
        tx: &mut Batch,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// Whether a failed read lost only the packet (tun-rs could not split or
/// check it: the read itself happened) rather than the device.
pub fn lost_one_packet(e: &io::Error) -> bool {
    e.raw_os_error().is_none() && e.kind() != io::ErrorKind::WouldBlock
}

#[cfg(target_os = "linux")]
pub struct LinuxScratch {
    /// One raw read: the virtio-net header and a packet of up to 64 KiB.
    raw: Vec<u8>,
    gro: tun_rs::GROTable,
}

#[cfg(target_os = "linux")]
impl std::fmt::Debug for LinuxScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxScratch").finish_non_exhaustive()
    }
}

#[cfg(target_os = "linux")]
impl PacketDevice for tun_rs::AsyncDevice {
    type Scratch = LinuxScratch;

    fn headroom(&self) -> usize {
        tun_rs::VIRTIO_NET_HDR_LEN
    }

    fn scratch(&self) -> LinuxScratch {
        LinuxScratch {
            raw: vec![0; tun_rs::VIRTIO_NET_HDR_LEN + usize::from(u16::MAX)],
            gro: tun_rs::GROTable::new(),
        }
    }

    async fn recv_batch(&self, scratch: &mut LinuxScratch, rx: &mut Batch) -> io::Result<()> {
        rx.clear();
        let headroom = rx.headroom;
        let (bufs, sizes) = rx.slots_mut();
        let n = self
            .recv_multiple(&mut scratch.raw, bufs, sizes, headroom)
            .await?;
        rx.len = n;
        Ok(())
    }

    fn try_recv_batch(&self, scratch: &mut LinuxScratch, rx: &mut Batch) -> io::Result<()> {
        rx.clear();
        let headroom = rx.headroom;
        let (bufs, sizes) = rx.slots_mut();
        let n = self.try_recv_multiple(&mut scratch.raw, bufs, sizes, headroom)?;
        rx.len = n;
        Ok(())
    }

    async fn send_batch(&self, scratch: &mut LinuxScratch, tx: &mut Batch) -> io::Result<()> {
        if tx.is_empty() {
            return Ok(());
        }
        let headroom = tx.headroom;
        let sent = self
            .send_multiple(&mut scratch.gro, tx.queued_mut(), headroom)
            .await;
        tx.clear();
        sent.map(drop)
    }
}

#[cfg(not(target_os = "linux"))]
impl PacketDevice for tun_rs::AsyncDevice {
    type Scratch = ();

    fn headroom(&self) -> usize {
        0
    }

    fn scratch(&self) {}

    async fn recv_batch(&self, (): &mut (), rx: &mut Batch) -> io::Result<()> {
        let n = self.recv(rx.first_slot()).await?;
        rx.received_one(n);
        Ok(())
    }

    fn try_recv_batch(&self, (): &mut (), rx: &mut Batch) -> io::Result<()> {
        let n = self.try_recv(rx.first_slot())?;
        rx.received_one(n);
        Ok(())
    }

    async fn send_batch(&self, (): &mut (), tx: &mut Batch) -> io::Result<()> {
        for packet in tx.queued() {
            self.send(packet).await?;
        }
        tx.clear();
        Ok(())
    }
}

/// A device that never delivers a packet and swallows every one sent.
#[derive(Debug)]
pub struct NullDevice;

impl PacketDevice for NullDevice {
    type Scratch = ();

    fn headroom(&self) -> usize {
        0
    }

    fn scratch(&self) {}

    async fn recv_batch(&self, (): &mut (), rx: &mut Batch) -> io::Result<()> {
        let _ = rx.first_slot();
        std::future::pending().await
    }

    fn try_recv_batch(&self, (): &mut (), rx: &mut Batch) -> io::Result<()> {
        let _ = rx.first_slot();
        Err(io::ErrorKind::WouldBlock.into())
    }

    async fn send_batch(&self, (): &mut (), tx: &mut Batch) -> io::Result<()> {
        let _ = tx.queued().count();
        tx.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_packets_sit_behind_the_headroom_and_reuse_their_buffers() {
        let mut tx = Batch::new(2, 10, 1500);
        for packet in [&b"abc"[..], b"de"] {
            let Some(slot) = tx.next_slot() else {
                panic!("a free slot for {packet:?}")
            };
            slot[..packet.len()].copy_from_slice(packet);
            tx.push(packet.len());
        }
        assert!(
            tx.is_full() && tx.next_slot().is_none(),
            "two slots, both queued"
        );
        assert_eq!(tx.queued().collect::<Vec<_>>(), [&b"abc"[..], b"de"]);
        let bufs = tx.queued_mut();
        assert_eq!((bufs[0].len(), bufs[1].len()), (13, 12));
        // A coalescing write may grow a buffer; the next packet reuses it.
        let grown = bufs[0].capacity().max(64 * 1024);
        bufs[0].reserve(grown);
        let capacity = bufs[0].capacity();
        tx.clear();
        assert!(tx.is_empty());
        assert_eq!(tx.next_slot().map(|s| s.len()), Some(1500));
        assert_eq!(tx.bufs[0].capacity(), capacity, "no reallocation");
    }

    #[test]
    fn a_receive_batch_holds_a_whole_super_segment_at_any_mtu() {
        for mtu in [576, 1280, 1500, 9000, 65535] {
            let rx = Batch::for_receive(10, mtu);
            let segment = mtu - 100;
            assert!(
                rx.bufs.len() * segment >= usize::from(u16::MAX),
                "mtu {mtu}: {} slots",
                rx.bufs.len()
            );
            assert!(rx.bufs.iter().all(|b| b.len() == 10 + mtu));
        }
    }

    #[test]
    fn each_send_slot_can_grow_into_a_whole_coalesced_write_without_reallocating() {
        let mut tx = Batch::for_send(10, 1500);
        assert!(tx.bufs.len() * 1400 >= usize::from(u16::MAX));
        for buf in &tx.bufs {
            assert!(buf.capacity() >= 2 * 10 + usize::from(u16::MAX));
        }
        let slot = tx.next_slot().map(|s| s.len());
        assert_eq!(slot, Some(1500));
    }

    #[test]
    fn received_packets_are_read_back_without_headroom_in_order() {
        let mut rx = Batch::new(4, 10, 100);
        let (bufs, sizes) = rx.slots_mut();
        bufs[0][10..13].copy_from_slice(b"one");
        bufs[1][10..13].copy_from_slice(b"two");
        (sizes[0], sizes[1]) = (3, 3);
        rx.len = 2;
        assert_eq!(rx.packets().collect::<Vec<_>>(), [&b"one"[..], b"two"]);
        let slot = rx.first_slot();
        slot[..1].copy_from_slice(b"x");
        rx.received_one(1);
        assert_eq!(rx.packets().collect::<Vec<_>>(), [&b"x"[..]]);
    }

    #[test]
    fn only_errors_without_an_os_code_lose_just_the_packet() {
        assert!(lost_one_packet(&io::Error::other("too many segments")));
        assert!(!lost_one_packet(&io::Error::from_raw_os_error(5)));
        assert!(!lost_one_packet(&io::ErrorKind::WouldBlock.into()));
    }
}
