//! Tunnel framing: what the daemon strips from each frame it reads from the
//! tunnel device and prepends to each packet it writes.
//!
//! This module owns only bytes. It does not read or write devices; the engine
//! itself always sees bare IP packets.
//!
//! - macOS `utun` prefixes every packet with a 4-byte protocol family in network
//!   byte order (`AF_INET` = 2, `AF_INET6` = 30). A wrong value makes the kernel
//!   drop the packet without a word (requirement S1).
//! - Linux `tun` opened with `IFF_NO_PI` carries no header at all.

use core::fmt;

/// `AF_INET`, identical on every BSD and Linux. // xnu bsd/sys/socket.h
pub const AF_INET: u32 = 2;
/// `AF_INET6` as macOS numbers it (Linux uses 10, FreeBSD 28). // xnu bsd/sys/socket.h
pub const AF_INET6_DARWIN: u32 = 30;

/// Errors from parsing a tunnel frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is shorter than the header it must carry.
    #[error("tunnel frame of {len} bytes is shorter than its {need}-byte header")]
    Truncated {
        /// Length of the frame that was parsed.
        len: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// The utun header names a protocol family other than IPv4 or IPv6.
    #[error("utun header carries unknown address family {0}")]
    UnknownFamily(u32),
    /// The packet's IP version nibble is neither 4 nor 6, so no family can be
    /// chosen for its header.
    #[error("packet has IP version {0}, expected 4 or 6")]
    UnknownIpVersion(u8),
    /// The output buffer cannot hold the header.
    #[error("output buffer of {len} bytes cannot hold a {need}-byte header")]
    BufferTooSmall {
        /// Length of the buffer offered.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// The IP family a utun header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// IPv4, `AF_INET` = 2.
    Ipv4,
    /// IPv6, `AF_INET6` = 30 on macOS.
    Ipv6,
}

impl AddressFamily {
    /// The family of a bare IP packet, from its version nibble.
    pub fn of_packet(packet: &[u8]) -> Result<Self, FrameError> {
        let first = *packet
            .first()
            .ok_or(FrameError::Truncated { len: 0, need: 1 })?;
        match first >> 4 {
            4 => Ok(Self::Ipv4),
            6 => Ok(Self::Ipv6),
            v => Err(FrameError::UnknownIpVersion(v)),
        }
    }

    /// The on-the-wire value in a macOS utun header.
    pub const fn darwin_value(self) -> u32 {
        match self {
            Self::Ipv4 => AF_INET,
            Self::Ipv6 => AF_INET6_DARWIN,
        }
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "AF_INET",
            Self::Ipv6 => "AF_INET6",
        })
    }
}

/// A read/write view of a macOS utun frame: a 4-byte big-endian protocol family
/// followed by the IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtunHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UtunHeader<T> {
    /// Length of the header in bytes.
    pub const LEN: usize = 4;

    /// Wrap a buffer without checking its length; call [`check_len`](Self::check_len)
    /// before using the accessors.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wrap a buffer, checking that it can hold the header.
    pub fn new_checked(buffer: T) -> Result<Self, FrameError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Ensure the accessors cannot panic.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let len = self.buffer.as_ref().len();
        if len < Self::LEN {
            Err(FrameError::Truncated {
                len,
                need: Self::LEN,
            })
        } else {
            Ok(())
        }
    }

    /// The raw protocol family field.
    ///
    /// # Panics
    /// If the buffer is shorter than the header (see [`check_len`](Self::check_len)).
    pub fn family_raw(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The IP packet behind the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[Self::LEN..]
    }

    /// Consume the view and return the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UtunHeader<T> {
    /// Set the raw protocol family field.
    pub fn set_family_raw(&mut self, value: u32) {
        self.buffer.as_mut()[..Self::LEN].copy_from_slice(&value.to_be_bytes());
    }
}

/// The parsed meaning of a utun header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtunRepr {
    /// The family the header announces.
    pub family: AddressFamily,
}

impl UtunRepr {
    /// Parse a header view.
    pub fn parse<T: AsRef<[u8]>>(header: &UtunHeader<T>) -> Result<Self, FrameError> {
        header.check_len()?;
        let family = match header.family_raw() {
            AF_INET => AddressFamily::Ipv4,
            AF_INET6_DARWIN => AddressFamily::Ipv6,
            other => return Err(FrameError::UnknownFamily(other)),
        };
        Ok(Self { family })
    }

    /// Emit into a header view.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut UtunHeader<T>) {
        header.set_family_raw(self.family.darwin_value());
    }
}

/// How the tunnel device frames packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunFraming {
    /// macOS utun: 4-byte protocol family before each packet.
    Utun,
    /// Linux tun with `IFF_NO_PI`: bare IP packets.
    #[default]
    NoPacketInfo,
}

impl TunFraming {
    /// The framing of the tunnel device on the build target.
    pub const fn native() -> Self {
        if cfg!(any(target_os = "macos", target_os = "ios")) {
            Self::Utun
        } else {
            Self::NoPacketInfo
        }
    }

    /// Bytes before the IP packet in every frame.
    pub const fn header_len(self) -> usize {
        match self {
            Self::Utun => 4,
            Self::NoPacketInfo => 0,
        }
    }

    /// The IP packet inside a frame read from the device.
    pub fn decode(self, frame: &[u8]) -> Result<&[u8], FrameError> {
        match self {
            Self::NoPacketInfo => Ok(frame),
            Self::Utun => {
                let header = UtunHeader::new_checked(frame)?;
                UtunRepr::parse(&header)?;
                Ok(&frame[UtunHeader::<&[u8]>::LEN..])
            }
        }
    }

    /// Write the frame header for `packet` into `header` (which must be
    /// [`header_len`](Self::header_len) bytes or longer), choosing the family
    /// from the packet's IP version nibble. Returns the header length.
    pub fn encode_header(self, packet: &[u8], header: &mut [u8]) -> Result<usize, FrameError> {
        match self {
            Self::NoPacketInfo => Ok(0),
            Self::Utun => {
                let family = AddressFamily::of_packet(packet)?;
                let len = header.len();
                let mut view =
                    UtunHeader::new_checked(header).map_err(|_| FrameError::BufferTooSmall {
                        len,
                        need: UtunHeader::<&[u8]>::LEN,
                    })?;
                UtunRepr { family }.emit(&mut view);
                Ok(UtunHeader::<&[u8]>::LEN)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // First bytes of an IPv4 and an IPv6 header: only the version nibble matters here.
    const IPV4_START: [u8; 4] = [0x45, 0x00, 0x00, 0x54];
    const IPV6_START: [u8; 4] = [0x60, 0x00, 0x00, 0x00];

    #[test]
    fn utun_ipv4_header_is_00_00_00_02() {
        let frame = [0x00, 0x00, 0x00, 0x02, 0x45, 0x00, 0x00, 0x54];
        let header = UtunHeader::new_checked(&frame[..]).unwrap();
        assert_eq!(header.family_raw(), 2);
        assert_eq!(
            UtunRepr::parse(&header).unwrap().family,
            AddressFamily::Ipv4
        );
        assert_eq!(header.payload(), &IPV4_START);
    }

    #[test]
    fn utun_ipv6_header_is_00_00_00_1e() {
        let frame = [0x00, 0x00, 0x00, 0x1e, 0x60, 0x00, 0x00, 0x00];
        let header = UtunHeader::new_checked(&frame[..]).unwrap();
        assert_eq!(header.family_raw(), 30);
        assert_eq!(
            UtunRepr::parse(&header).unwrap().family,
            AddressFamily::Ipv6
        );
    }

    #[test]
    fn utun_header_emits_network_byte_order() {
        let mut buf = [0xffu8; 4];
        let mut view = UtunHeader::new_unchecked(&mut buf[..]);
        UtunRepr {
            family: AddressFamily::Ipv6,
        }
        .emit(&mut view);
        assert_eq!(buf, [0x00, 0x00, 0x00, 0x1e]);
        let mut view = UtunHeader::new_unchecked(&mut buf[..]);
        UtunRepr {
            family: AddressFamily::Ipv4,
        }
        .emit(&mut view);
        assert_eq!(buf, [0x00, 0x00, 0x00, 0x02]);
    }

    #[test]
    fn utun_header_shorter_than_four_bytes_is_truncated() {
        assert_eq!(
            UtunHeader::new_checked(&[0x00, 0x00, 0x00][..]).unwrap_err(),
            FrameError::Truncated { len: 3, need: 4 }
        );
    }

    #[test]
    fn utun_linux_af_inet6_value_is_rejected() {
        // 10 is AF_INET6 on Linux; a macOS utun never carries it.
        let frame = [0x00, 0x00, 0x00, 0x0a, 0x60];
        let header = UtunHeader::new_checked(&frame[..]).unwrap();
        assert_eq!(
            UtunRepr::parse(&header).unwrap_err(),
            FrameError::UnknownFamily(10)
        );
    }

    #[test]
    fn utun_little_endian_family_is_rejected() {
        let frame = [0x02, 0x00, 0x00, 0x00, 0x45];
        let header = UtunHeader::new_checked(&frame[..]).unwrap();
        assert_eq!(
            UtunRepr::parse(&header).unwrap_err(),
            FrameError::UnknownFamily(0x0200_0000)
        );
    }

    #[test]
    fn utun_framing_derives_family_from_version_nibble() {
        let mut header = [0u8; 4];
        assert_eq!(
            TunFraming::Utun.encode_header(&IPV4_START, &mut header),
            Ok(4)
        );
        assert_eq!(header, [0, 0, 0, 2]);
        assert_eq!(
            TunFraming::Utun.encode_header(&IPV6_START, &mut header),
            Ok(4)
        );
        assert_eq!(header, [0, 0, 0, 0x1e]);
        assert_eq!(
            TunFraming::Utun.encode_header(&[0x50], &mut header),
            Err(FrameError::UnknownIpVersion(5))
        );
        assert_eq!(
            TunFraming::Utun.encode_header(&IPV4_START, &mut header[..2]),
            Err(FrameError::BufferTooSmall { len: 2, need: 4 })
        );
    }

    #[test]
    fn utun_framing_decode_strips_four_bytes() {
        let frame = [0x00, 0x00, 0x00, 0x02, 0x45, 0x00, 0x00, 0x54];
        assert_eq!(TunFraming::Utun.decode(&frame), Ok(&IPV4_START[..]));
        assert_eq!(TunFraming::Utun.header_len(), 4);
    }

    #[test]
    fn no_packet_info_framing_has_no_header() {
        let mut header = [0xaau8; 4];
        assert_eq!(TunFraming::NoPacketInfo.header_len(), 0);
        assert_eq!(
            TunFraming::NoPacketInfo.encode_header(&IPV4_START, &mut header),
            Ok(0)
        );
        assert_eq!(header, [0xaa; 4]);
        assert_eq!(
            TunFraming::NoPacketInfo.decode(&IPV4_START),
            Ok(&IPV4_START[..])
        );
    }
}
