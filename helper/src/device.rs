//! The tunnel device as the data plane sees it: packets move in batches.
//!
//! On Linux the device is opened with offloads (`IFF_VNET_HDR`,
//! `TUNSETOFFLOAD` with TSO, USO and checksum offload). One read returns a
//! TCP super-segment of up to 64 KiB, which goes to the engine whole, as
//! the local stack built it ([`Received::TcpSuperSegment`]); a UDP one is
//! split into its datagrams (tun-rs's `gso_split`). One write carries the
//! consecutive segments of a flow that tun-rs coalesced (the kernel segments
//! them again). That turns tens of syscalls, checksum passes and engine
//! rounds per 64 KiB into one in each direction, which is where a userspace
//! stack spends its time (docs/benchmarks.md has the profile). A checksum
//! the kernel left for the device to fill is filled here, and the engine
//! told so, not made to verify it again.
//!
//! macOS utun has no offloads: there a batch is one packet per syscall, as
//! it is for the test device.

use std::future::Future;
use std::io;

use ztun_engine::Received;

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
    /// What the device vouches for about every packet received in it.
    received: Received,
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
            received: Received::Unchecked,
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

    /// What the device vouches for about the packets received.
    pub fn received(&self) -> Received {
        self.received
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

    /// The first slot, for a device that reads one packet per call.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    fn first_slot(&mut self) -> &mut [u8] {
        self.len = 0;
        self.received = Received::Unchecked;
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

    /// Called by the data plane every quarter second: frees the scratch
    /// only traffic needs if no traffic needed it since the last call.
    fn trim(&self, _scratch: &mut Self::Scratch) {}
}

/// Whether a failed read lost only the packet (tun-rs could not split or
/// check it: the read itself happened) rather than the device.
pub fn lost_one_packet(e: &io::Error) -> bool {
    e.raw_os_error().is_none() && e.kind() != io::ErrorKind::WouldBlock
}

#[cfg(target_os = "linux")]
#[derive(Default)]
pub struct LinuxScratch {
    /// Where a UDP super-segment is split from: a raw read's buffer, taken
    /// on first use (in exchange for the batch's first slot).
    spare: Vec<u8>,
    /// tun-rs's coalescing table, for writes of more than one packet. It
    /// preallocates item pools for 128 flows, 1 MiB resident, more than
    /// the rest of an idle helper's heap; so it is built when a write
    /// needs it and freed at the first [`PacketDevice::trim`] after a
    /// quarter second in which none did. Building it again costs 0.4 ms
    /// (measured), so at worst 0.2 % of a core.
    gro: Option<Box<tun_rs::GROTable>>,
    /// Whether `spare` or `gro` was used since the last trim.
    used: bool,
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
        LinuxScratch::default()
    }

    async fn recv_batch(&self, scratch: &mut LinuxScratch, rx: &mut Batch) -> io::Result<()> {
        let n = self.recv(virtio::read_slot(rx)).await?;
        virtio::unpack(rx, scratch, n)
    }

    fn try_recv_batch(&self, scratch: &mut LinuxScratch, rx: &mut Batch) -> io::Result<()> {
        let n = self.try_recv(virtio::read_slot(rx))?;
        virtio::unpack(rx, scratch, n)
    }

    async fn send_batch(&self, scratch: &mut LinuxScratch, tx: &mut Batch) -> io::Result<()> {
        let sent = match tx.len() {
            0 => return Ok(()),
            // Nothing to coalesce: the packet goes behind a header that
            // asks nothing of the kernel, as tun-rs writes one it did not
            // coalesce.
            1 => self.send(virtio::behind_plain_header(tx)).await.map(drop),
            _ => {
                scratch.used = true;
                let gro = scratch.gro.get_or_insert_with(Box::default);
                let headroom = tx.headroom;
                self.send_multiple(gro, tx.queued_mut(), headroom)
                    .await
                    .map(drop)
            }
        };
        tx.clear();
        sent
    }

    fn trim(&self, scratch: &mut LinuxScratch) {
        if scratch.trim() {
            crate::memory::return_freed();
        }
    }
}

#[cfg(target_os = "linux")]
impl LinuxScratch {
    /// Frees the split buffer and the coalescing table unless they were
    /// used since the last call; whether anything was freed.
    fn trim(&mut self) -> bool {
        if std::mem::take(&mut self.used) {
            return false;
        }
        let held = self.spare.capacity() > 0 || self.gro.is_some();
        self.spare = Vec::new();
        self.gro = None;
        held
    }
}

/// A Linux tun read as it comes: a virtio-net header (linux
/// `include/uapi/linux/virtio_net.h`), then one packet or super-segment.
#[cfg(target_os = "linux")]
mod virtio {
    use std::io;

    use tun_rs::{VirtioNetHdr, VIRTIO_NET_HDR_LEN as HDR};
    use ztun_engine::Received;

    use super::{Batch, LinuxScratch};

    /// The longest read: the header and a 64 KiB packet.
    const READ_LEN: usize = HDR + u16::MAX as usize;
    const F_NEEDS_CSUM: u8 = 1;
    const F_DATA_VALID: u8 = 2;
    const GSO_NONE: u8 = 0;
    const GSO_ECN: u8 = 0x80;
    /// The checksum's offset in a UDP header (in a TCP one it is 16).
    const UDP_CHECKSUM_OFFSET: u16 = 6;

    /// The batch's first slot at the length of the longest read, header
    /// first (the batch's headroom is the header's length).
    pub(super) fn read_slot(rx: &mut Batch) -> &mut [u8] {
        rx.clear();
        let first = &mut rx.bufs[0];
        if first.len() < READ_LEN {
            first.resize(READ_LEN, 0);
        }
        first
    }

    /// The one packet queued in `tx` behind a virtio-net header that asks
    /// nothing of the kernel (no GSO, no checksum to fill), ready to write.
    pub(super) fn behind_plain_header(tx: &mut Batch) -> &[u8] {
        debug_assert_eq!((tx.len, tx.headroom), (1, HDR));
        let packet = &mut tx.bufs[0];
        packet[..HDR].fill(0);
        packet
    }

    /// Makes the batch of a read of `n` bytes into [`read_slot`]. Errors
    /// carry no OS code: they lose this read's packet, not the device.
    pub(super) fn unpack(rx: &mut Batch, scratch: &mut LinuxScratch, n: usize) -> io::Result<()> {
        debug_assert_eq!(rx.headroom, HDR);
        if n <= HDR {
            return Err(io::Error::other(format!(
                "a read of {n} bytes holds no packet"
            )));
        }
        let hdr = VirtioNetHdr::decode(&rx.bufs[0][..HDR])?;
        let (received, count) = match hdr.gso_type & !GSO_ECN {
            GSO_NONE if hdr.flags & F_NEEDS_CSUM != 0 => {
                fill_checksum(&mut rx.bufs[0][HDR..n], hdr.csum_start, hdr.csum_offset)?;
                (Received::ChecksumValid, 1)
            }
            GSO_NONE if hdr.flags & F_DATA_VALID != 0 => (Received::ChecksumValid, 1),
            GSO_NONE => (Received::Unchecked, 1),
            tun_rs::VIRTIO_NET_HDR_GSO_TCPV4 | tun_rs::VIRTIO_NET_HDR_GSO_TCPV6 => {
                (Received::TcpSuperSegment, 1)
            }
            tun_rs::VIRTIO_NET_HDR_GSO_UDP_L4 => {
                // Split from the spare buffer into every slot, the first
                // included: the two trade places, both a whole read long.
                scratch.used = true;
                let spare = &mut scratch.spare;
                spare.resize(READ_LEN, 0);
                std::mem::swap(spare, &mut rx.bufs[0]);
                let is_v6 = spare[HDR] >> 4 == 6;
                let count = tun_rs::gso_split(
                    &mut spare[HDR..n],
                    hdr,
                    &mut rx.bufs,
                    &mut rx.sizes,
                    HDR,
                    is_v6,
                )?;
                (Received::ChecksumValid, count)
            }
            other => {
                return Err(io::Error::other(format!(
                    "a read with virtio-net GSO type {other}, which was not offered"
                )));
            }
        };
        if count == 1 {
            rx.sizes[0] = n - HDR;
        }
        rx.len = count;
        rx.received = received;
        Ok(())
    }

    /// Fills a checksum the kernel left partial (`NEEDS_CSUM`): the field
    /// at `start + offset` holds the pseudo-header sum, and the sum runs
    /// from `start` to the end of the packet.
    fn fill_checksum(packet: &mut [u8], start: u16, offset: u16) -> io::Result<()> {
        let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
        let Some(field) = packet.get_mut(at..at + 2) else {
            return Err(io::Error::other(format!(
                "a partial checksum at byte {at} of a {}-byte packet",
                packet.len()
            )));
        };
        let seed = u16::from_be_bytes([field[0], field[1]]);
        field.fill(0);
        let mut sum = !tun_rs::checksum(&packet[start..], u64::from(seed));
        if sum == 0 && offset == UDP_CHECKSUM_OFFSET {
            // RFC 768: a UDP checksum that computes to zero is sent as ones.
            sum = 0xffff;
        }
        packet[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use smoltcp::wire::{IpAddress, Ipv4Packet, UdpPacket};

        use super::*;
        use crate::device::lost_one_packet;

        const TCPV4: u8 = tun_rs::VIRTIO_NET_HDR_GSO_TCPV4;
        const UDP_L4: u8 = tun_rs::VIRTIO_NET_HDR_GSO_UDP_L4;

        /// A virtio-net header, little-endian as on every host we build for.
        fn header(
            flags: u8,
            gso_type: u8,
            gso_size: u16,
            csum_start: u16,
            csum_offset: u16,
        ) -> [u8; HDR] {
            let mut h = [0; HDR];
            h[0] = flags;
            h[1] = gso_type;
            h[2..4].copy_from_slice(&28_u16.to_le_bytes());
            h[4..6].copy_from_slice(&gso_size.to_le_bytes());
            h[6..8].copy_from_slice(&csum_start.to_le_bytes());
            h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
            h
        }

        /// 192.0.2.1:5000 -> 203.0.113.10:53 over UDP, `payload` long, with
        /// a valid IPv4 header checksum and a zero UDP checksum.
        fn udp_v4(payload: &[u8]) -> Vec<u8> {
            let total = 28 + payload.len();
            let mut p = vec![
                0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 203, 0, 113, 10,
            ];
            p[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(0).to_be_bytes());
            p.extend_from_slice(&5000_u16.to_be_bytes());
            p.extend_from_slice(&53_u16.to_be_bytes());
            p.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap_or(0).to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(payload);
            Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
            p
        }

        /// The folded pseudo-header sum that Linux leaves in the checksum
        /// field of a `CHECKSUM_PARTIAL` packet (not complemented).
        fn pseudo_header_sum(packet: &[u8]) -> u16 {
            let udp_len = u16::try_from(packet.len() - 20).unwrap_or(0);
            let mut pseudo = packet[12..20].to_vec();
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&udp_len.to_be_bytes());
            tun_rs::checksum(&pseudo, 0)
        }

        fn read(hdr: [u8; HDR], packet: &[u8], mtu: usize) -> io::Result<Batch> {
            let mut rx = Batch::for_receive(HDR, mtu);
            let slot = read_slot(&mut rx);
            slot[..HDR].copy_from_slice(&hdr);
            slot[HDR..HDR + packet.len()].copy_from_slice(packet);
            unpack(&mut rx, &mut LinuxScratch::default(), HDR + packet.len())?;
            Ok(rx)
        }

        fn udp_checksum_valid(packet: &[u8]) -> bool {
            let ip = Ipv4Packet::new_unchecked(packet);
            let (src, dst) = (
                IpAddress::Ipv4(ip.src_addr()),
                IpAddress::Ipv4(ip.dst_addr()),
            );
            ip.verify_checksum()
                && UdpPacket::new_unchecked(&packet[20..]).verify_checksum(&src, &dst)
        }

        #[test]
        fn a_tcp_super_segment_reaches_the_engine_whole_beyond_the_mtu() {
            // Only the length matters here: the engine parses the rest.
            let mut packet = vec![0x45; 30_000];
            packet[9] = 6;
            let rx = read(header(F_NEEDS_CSUM, TCPV4, 1448, 20, 16), &packet, 1500).unwrap();
            assert_eq!(rx.received(), Received::TcpSuperSegment);
            assert_eq!(rx.packets().collect::<Vec<_>>(), [&packet[..]]);
            let ecn = read(
                header(F_NEEDS_CSUM, TCPV4 | GSO_ECN, 1448, 20, 16),
                &packet,
                1500,
            );
            assert_eq!(ecn.unwrap().received(), Received::TcpSuperSegment);
        }

        #[test]
        fn a_partial_checksum_is_filled_and_vouched_for() {
            let mut want = udp_v4(b"a query of some length");
            let (src, dst) = (IpAddress::v4(192, 0, 2, 1), IpAddress::v4(203, 0, 113, 10));
            UdpPacket::new_unchecked(&mut want[20..]).fill_checksum(&src, &dst);
            let mut partial = want.clone();
            partial[26..28].copy_from_slice(&pseudo_header_sum(&want).to_be_bytes());
            let rx = read(header(F_NEEDS_CSUM, GSO_NONE, 0, 20, 6), &partial, 1500).unwrap();
            assert_eq!(rx.received(), Received::ChecksumValid);
            assert_eq!(rx.packets().collect::<Vec<_>>(), [&want[..]]);
        }

        #[test]
        fn a_udp_checksum_that_sums_to_zero_is_sent_as_ones() {
            // Two payload bytes chosen so that the checksum comes out zero:
            // the checksum computed with them zero, put in their place.
            let mut want = udp_v4(&[7, 7, 0, 0, 9]);
            let (src, dst) = (IpAddress::v4(192, 0, 2, 1), IpAddress::v4(203, 0, 113, 10));
            UdpPacket::new_unchecked(&mut want[20..]).fill_checksum(&src, &dst);
            let zeroing = [want[26], want[27]];
            want[30..32].copy_from_slice(&zeroing);
            let mut partial = want.clone();
            partial[26..28].copy_from_slice(&pseudo_header_sum(&want).to_be_bytes());
            let rx = read(header(F_NEEDS_CSUM, GSO_NONE, 0, 20, 6), &partial, 1500).unwrap();
            let got = rx.packets().next().unwrap_or_default();
            assert_eq!(got[26..28], [0xff, 0xff]);
            assert!(udp_checksum_valid(got));
        }

        #[test]
        fn a_packet_is_vouched_for_only_as_the_kernel_says() {
            let packet = udp_v4(b"x");
            let plain = read(header(0, GSO_NONE, 0, 0, 0), &packet, 1500).unwrap();
            assert_eq!(plain.received(), Received::Unchecked);
            assert_eq!(plain.packets().collect::<Vec<_>>(), [&packet[..]]);
            let valid = read(header(F_DATA_VALID, GSO_NONE, 0, 0, 0), &packet, 1500).unwrap();
            assert_eq!(valid.received(), Received::ChecksumValid);
            assert_eq!(valid.packets().collect::<Vec<_>>(), [&packet[..]]);
        }

        #[test]
        fn a_udp_super_segment_is_split_into_checksummed_datagrams() {
            let payload: Vec<u8> = (0..=255).cycle().take(250).collect();
            let mut packet = udp_v4(&payload);
            let partial = pseudo_header_sum(&packet);
            packet[26..28].copy_from_slice(&partial.to_be_bytes());
            // Three datagrams of 100, 100 and 50 bytes, twice in a row: the
            // second read splits into the buffer the first traded away.
            let mut rx = Batch::for_receive(HDR, 1500);
            let mut scratch = LinuxScratch::default();
            for _ in 0..2 {
                let slot = read_slot(&mut rx);
                slot[..HDR].copy_from_slice(&header(F_NEEDS_CSUM, UDP_L4, 100, 20, 6));
                slot[HDR..HDR + packet.len()].copy_from_slice(&packet);
                unpack(&mut rx, &mut scratch, HDR + packet.len()).unwrap();
                assert_eq!(rx.received(), Received::ChecksumValid);
                let got: Vec<&[u8]> = rx.packets().collect();
                assert_eq!(
                    got.iter().map(|p| p.len()).collect::<Vec<_>>(),
                    [128, 128, 78]
                );
                for (datagram, chunk) in got.iter().zip(payload.chunks(100)) {
                    assert_eq!(&datagram[28..], chunk);
                    assert!(udp_checksum_valid(datagram), "{datagram:02x?}");
                }
            }
        }

        #[test]
        fn one_packet_is_written_behind_a_header_that_asks_nothing() {
            let mut tx = Batch::for_send(HDR, 1500);
            let Some(slot) = tx.next_slot() else {
                panic!("an empty batch has a slot")
            };
            slot[..4].copy_from_slice(&[0x45, 0, 0, 20]);
            tx.push(4);
            // Whatever a reused buffer held in front is overwritten.
            tx.bufs[0][..HDR].fill(0xee);
            assert_eq!(
                behind_plain_header(&mut tx),
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x45, 0, 0, 20]
            );
        }

        #[test]
        fn scratch_is_freed_at_the_first_trim_after_a_period_without_use() {
            let mut scratch = LinuxScratch::default();
            assert!(!scratch.trim(), "nothing held, nothing freed");

            let packet = udp_v4(&[7; 250]);
            let mut rx = Batch::for_receive(HDR, 1500);
            let slot = read_slot(&mut rx);
            slot[..HDR].copy_from_slice(&header(0, UDP_L4, 100, 20, 6));
            slot[HDR..HDR + packet.len()].copy_from_slice(&packet);
            unpack(&mut rx, &mut scratch, HDR + packet.len()).unwrap();
            scratch.gro = Some(Box::default());

            assert!(!scratch.trim(), "used in this period: kept");
            assert_eq!(scratch.spare.len(), READ_LEN);
            assert!(scratch.gro.is_some());
            assert!(scratch.trim(), "a period without use: freed");
            assert_eq!(scratch.spare.capacity(), 0);
            assert!(scratch.gro.is_none());
            assert!(!scratch.trim());
        }

        #[test]
        fn a_read_without_a_packet_loses_only_that_read() {
            let mut rx = Batch::for_receive(HDR, 1500);
            let _ = read_slot(&mut rx);
            let e = unpack(&mut rx, &mut LinuxScratch::default(), HDR).unwrap_err();
            assert!(lost_one_packet(&e), "{e}");
            let packet = udp_v4(b"x");
            let beyond = read(header(F_NEEDS_CSUM, GSO_NONE, 0, 20, 60), &packet, 1500);
            assert!(lost_one_packet(&beyond.unwrap_err()));
            let unknown = read(header(0, 3, 100, 20, 6), &packet, 1500);
            assert!(lost_one_packet(&unknown.unwrap_err()));
        }
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
        rx.bufs[0][10..13].copy_from_slice(b"one");
        rx.bufs[1][10..13].copy_from_slice(b"two");
        (rx.sizes[0], rx.sizes[1]) = (3, 3);
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
