//! Interface-address ioctl requests for the tunnel (S2): `ifaliasreq` for
//! `SIOCAIFADDR` (address + point-to-point peer + mask in one call), `ifreq`
//! for `SIOCSIFDSTADDR` (the peer alone) and `in6_aliasreq` for
//! `SIOCAIFADDR_IN6`, built as plain byte arrays, and the request numbers.
//!
//! Pure bytes: no ioctl, no libc, no `cfg(target_os)`; compiled and tested
//! everywhere. The macOS platform code passes these buffers to `ioctl`.
//! Multi-byte integers are in host order, little-endian on both Apple
//! targets (`x86_64`, arm64); addresses are in network order.
//!
//! Layouts are those of LP64 (both Apple targets), computed from the xnu
//! headers; the byte tests below spell every offset.

use std::net::{Ipv4Addr, Ipv6Addr};

/// xnu `bsd/net/if.h`: `IFNAMSIZ` (= `IF_NAMESIZE`), including the NUL.
pub const IFNAMSIZ: usize = 16;

use super::rtmsg::{AF_INET, AF_INET6};

// The sockaddr sizes are defined once, with the routing-message codec.
const SOCKADDR_IN_LEN: usize = super::rtmsg::SOCKADDR_IN_LEN as usize;
const SOCKADDR_IN6_LEN: usize = super::rtmsg::SOCKADDR_IN6_LEN as usize;

/// `sizeof(struct ifreq)` on LP64: name (16) + the `ifr_ifru` union, whose
/// largest members (`struct sockaddr`, `struct ifkpi`) are 16 bytes.
/// xnu `bsd/net/if.h` (and `SIOCSIFDSTADDR` = 0x8020690e encodes 0x20).
pub const IFREQ_LEN: usize = 32;
/// `sizeof(struct ifaliasreq)`: name (16) + `ifra_addr`, `ifra_broadaddr`
/// (the peer on a point-to-point link), `ifra_mask` (16 each); no padding.
/// xnu `bsd/net/if.h`
pub const IFALIASREQ_LEN: usize = 64;
/// `sizeof(struct in6_aliasreq)` on LP64: name (16) + three `sockaddr_in6`
/// (28 each, 4-aligned) to 100, `ifra_flags` (int) to 104, then
/// `struct in6_addrlifetime` { `time_t` ×2, `u_int32_t` ×2 } = 24 bytes, 8-aligned
/// (104 already is), to 128. xnu `bsd/netinet6/in6_var.h`
pub const IN6_ALIASREQ_LEN: usize = 128;

// ifaliasreq field offsets. xnu bsd/net/if.h
const IFRA_ADDR: usize = 16;
const IFRA_DSTADDR: usize = 32;
const IFRA_MASK: usize = 48;
// ifreq: the union follows the name. xnu bsd/net/if.h
const IFR_IFRU: usize = 16;
// in6_aliasreq field offsets (LP64). xnu bsd/netinet6/in6_var.h
const IFRA6_ADDR: usize = 16;
const IFRA6_DSTADDR: usize = 44;
const IFRA6_PREFIXMASK: usize = 72;
const IFRA6_FLAGS: usize = 100;
const IFRA6_LIFETIME: usize = 104;
/// `ia6t_vltime` and `ia6t_pltime` follow `ia6t_expire` and
/// `ia6t_preferred` (two 8-byte `time_t`). xnu `bsd/netinet6/in6_var.h`
const IA6T_VLTIME: usize = IFRA6_LIFETIME + 16;
const IA6T_PLTIME: usize = IFRA6_LIFETIME + 20;

/// xnu `bsd/netinet6/nd6.h`: `ND6_INFINITE_LIFETIME`.
pub const ND6_INFINITE_LIFETIME: u32 = 0xffff_ffff;
/// xnu `bsd/netinet6/in6_var.h`: `IN6_IFF_NODAD` (no duplicate address
/// detection: nothing else is on a utun link).
pub const IN6_IFF_NODAD: u32 = 0x0020;

// xnu bsd/sys/ioccom.h
const IOCPARM_MASK: u32 = 0x1fff;
const IOC_IN: u32 = 0x8000_0000;

/// xnu `bsd/sys/ioccom.h` `_IOW(group, num, type)` with `len` =
/// `sizeof(type)`: `IOC_IN | (len & IOCPARM_MASK) << 16 | group << 8 | num`.
pub const fn iow(group: u8, num: u8, len: usize) -> u32 {
    // The length is masked to 13 bits, as the C macro does.
    #[allow(clippy::cast_possible_truncation)]
    let len = (len as u32) & IOCPARM_MASK;
    IOC_IN | (len << 16) | ((group as u32) << 8) | num as u32
}

/// xnu `bsd/sys/sockio.h`: `_IOW('i', 14, struct ifreq)`, set the p-p peer.
pub const SIOCSIFDSTADDR: u32 = iow(b'i', 14, IFREQ_LEN);
/// xnu `bsd/sys/sockio.h`: `_IOW('i', 26, struct ifaliasreq)`.
pub const SIOCAIFADDR: u32 = iow(b'i', 26, IFALIASREQ_LEN);
/// xnu `bsd/netinet6/in6_var.h`: `_IOW('i', 26, struct in6_aliasreq)`.
pub const SIOCAIFADDR_IN6: u32 = iow(b'i', 26, IN6_ALIASREQ_LEN);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfreqError {
    #[error("interface name {name:?} is {len} bytes; at most 15 fit IFNAMSIZ (16, with the NUL)")]
    NameTooLong { name: String, len: usize },
    #[error("interface name {0:?} is empty or contains a NUL byte")]
    BadName(String),
    #[error("IPv6 prefix length {0} is longer than 128")]
    PrefixLen(u8),
}

/// The NUL-padded `char[IFNAMSIZ]` for `name`.
fn ifname(name: &str) -> Result<[u8; IFNAMSIZ], IfreqError> {
    if name.is_empty() || name.as_bytes().contains(&0) {
        return Err(IfreqError::BadName(name.to_owned()));
    }
    if name.len() >= IFNAMSIZ {
        return Err(IfreqError::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    let mut out = [0u8; IFNAMSIZ];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// `struct sockaddr_in` for `addr`: `sin_len` 16, `AF_INET`, port 0, zero pad.
fn sockaddr_in(addr: Ipv4Addr) -> [u8; SOCKADDR_IN_LEN] {
    let mut sa = [0u8; SOCKADDR_IN_LEN];
    sa[0] = 16; // sin_len
    sa[1] = AF_INET;
    sa[4..8].copy_from_slice(&addr.octets());
    sa
}

/// `struct sockaddr_in6` for `addr`: `sin6_len` 28, `AF_INET6`, the rest zero.
fn sockaddr_in6(addr: Ipv6Addr) -> [u8; SOCKADDR_IN6_LEN] {
    let mut sa = [0u8; SOCKADDR_IN6_LEN];
    sa[0] = 28; // sin6_len
    sa[1] = AF_INET6;
    sa[8..24].copy_from_slice(&addr.octets());
    sa
}

/// `struct ifaliasreq` for `SIOCAIFADDR`: `addr` on `name` with the
/// point-to-point `peer` (`ifra_broadaddr`, read as the destination on a
/// p-p interface) and `mask` (S2: `inet 198.18.0.1 --> 198.18.0.2`).
pub fn ifaliasreq(
    name: &str,
    addr: Ipv4Addr,
    peer: Ipv4Addr,
    mask: Ipv4Addr,
) -> Result<[u8; IFALIASREQ_LEN], IfreqError> {
    let mut req = [0u8; IFALIASREQ_LEN];
    req[..IFNAMSIZ].copy_from_slice(&ifname(name)?);
    req[IFRA_ADDR..IFRA_DSTADDR].copy_from_slice(&sockaddr_in(addr));
    req[IFRA_DSTADDR..IFRA_MASK].copy_from_slice(&sockaddr_in(peer));
    req[IFRA_MASK..].copy_from_slice(&sockaddr_in(mask));
    Ok(req)
}

/// `struct ifreq` with `ifr_dstaddr` = `peer`, for `SIOCSIFDSTADDR`.
pub fn ifreq_dstaddr(name: &str, peer: Ipv4Addr) -> Result<[u8; IFREQ_LEN], IfreqError> {
    let mut req = [0u8; IFREQ_LEN];
    req[..IFNAMSIZ].copy_from_slice(&ifname(name)?);
    req[IFR_IFRU..IFR_IFRU + SOCKADDR_IN_LEN].copy_from_slice(&sockaddr_in(peer));
    Ok(req)
}

/// `struct in6_aliasreq` for `SIOCAIFADDR_IN6`: `addr/prefix_len` on
/// `name`, optional point-to-point `peer` (else `ifra_dstaddr` stays all
/// zero), `flags` (`IN6_IFF_*`), infinite lifetimes.
pub fn in6_aliasreq(
    name: &str,
    addr: Ipv6Addr,
    prefix_len: u8,
    peer: Option<Ipv6Addr>,
    flags: u32,
) -> Result<[u8; IN6_ALIASREQ_LEN], IfreqError> {
    if prefix_len > 128 {
        return Err(IfreqError::PrefixLen(prefix_len));
    }
    let mut req = [0u8; IN6_ALIASREQ_LEN];
    req[..IFNAMSIZ].copy_from_slice(&ifname(name)?);
    req[IFRA6_ADDR..IFRA6_DSTADDR].copy_from_slice(&sockaddr_in6(addr));
    if let Some(peer) = peer {
        req[IFRA6_DSTADDR..IFRA6_PREFIXMASK].copy_from_slice(&sockaddr_in6(peer));
    }
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0);
    req[IFRA6_PREFIXMASK..IFRA6_FLAGS].copy_from_slice(&sockaddr_in6(Ipv6Addr::from(mask)));
    req[IFRA6_FLAGS..IFRA6_LIFETIME].copy_from_slice(&flags.to_le_bytes());
    // ia6t_expire and ia6t_preferred stay 0: the kernel computes them.
    req[IA6T_VLTIME..IA6T_PLTIME].copy_from_slice(&ND6_INFINITE_LIFETIME.to_le_bytes());
    req[IA6T_PLTIME..IA6T_PLTIME + 4].copy_from_slice(&ND6_INFINITE_LIFETIME.to_le_bytes());
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_headers() {
        assert_eq!(SIOCAIFADDR, 0x8040_691a);
        assert_eq!(SIOCSIFDSTADDR, 0x8020_690e);
        assert_eq!(SIOCAIFADDR_IN6, 0x8080_691a);
        // The length is masked to 13 bits like the C macro.
        assert_eq!(iow(b'i', 1, 0x2000), 0x8000_6901);
    }

    #[test]
    fn ifaliasreq_bytes() {
        let req = ifaliasreq(
            "utun4",
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            Ipv4Addr::BROADCAST,
        )
        .unwrap();
        let expected: [u8; 64] = [
            // @0 ifra_name: "utun4" NUL-padded to 16
            b'u', b't', b'u', b'n', b'4', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // @16 ifra_addr: sin_len 16, AF_INET, port 0, 198.18.0.1, zero
            0x10, 0x02, 0x00, 0x00, 198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
            // @32 ifra_broadaddr = the peer 198.18.0.2
            0x10, 0x02, 0x00, 0x00, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0,
            // @48 ifra_mask 255.255.255.255
            0x10, 0x02, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(req, expected);
        assert_eq!(req.len(), IFALIASREQ_LEN);
        for at in [16, 32, 48] {
            assert_eq!(req[at], 16, "sin_len at {at}");
            assert_eq!(req[at + 1], 2, "sin_family at {at}");
        }
    }

    #[test]
    fn ifreq_dstaddr_bytes() {
        let req = ifreq_dstaddr("utun4", Ipv4Addr::new(198, 18, 0, 2)).unwrap();
        let expected: [u8; 32] = [
            // @0 ifr_name
            b'u', b't', b'u', b'n', b'4', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            // @16 ifr_dstaddr: sin_len 16, AF_INET, port 0, 198.18.0.2, zero
            0x10, 0x02, 0x00, 0x00, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(req, expected);
    }

    #[test]
    fn in6_aliasreq_bytes() {
        let addr: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let req = in6_aliasreq("utun4", addr, 64, None, IN6_IFF_NODAD).unwrap();
        let mut expected = [0u8; 128];
        expected[..5].copy_from_slice(b"utun4"); // @0 ifra_name
                                                 // @16 ifra_addr: sin6_len 28, AF_INET6 (30), port 0, flowinfo 0,
                                                 // 2001:db8:1::1, scope 0
        expected[16..44].copy_from_slice(&[
            0x1c, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        ]);
        // @44 ifra_dstaddr: none, all zero
        // @72 ifra_prefixmask: ffff:ffff:ffff:ffff::
        expected[72..100].copy_from_slice(&[
            0x1c, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ]);
        expected[100..104].copy_from_slice(&[0x20, 0x00, 0x00, 0x00]); // @100 ifra_flags NODAD
                                                                       // @104 ia6t_expire, @112 ia6t_preferred: 0 (two 8-byte time_t)
        expected[120..124].copy_from_slice(&[0xff; 4]); // @120 ia6t_vltime infinite
        expected[124..128].copy_from_slice(&[0xff; 4]); // @124 ia6t_pltime infinite
        assert_eq!(req, expected);

        let peer: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let req = in6_aliasreq("utun4", addr, 128, Some(peer), 0).unwrap();
        assert_eq!(&req[44..46], &[0x1c, 0x1e]);
        assert_eq!(req[44 + 8 + 15], 2);
        assert_eq!(&req[80..96], &[0xff; 16]);
        let req = in6_aliasreq("utun4", addr, 0, None, 0).unwrap();
        assert_eq!(&req[80..96], &[0; 16]);
    }

    #[test]
    fn names_are_nul_padded_and_bounded() {
        let a = Ipv4Addr::new(192, 0, 2, 1);
        let req = ifaliasreq("utun1234567890a", a, a, a).unwrap(); // 15 bytes fits
        assert_eq!(&req[..16], b"utun1234567890a\0");
        assert_eq!(
            ifaliasreq("utun1234567890ab", a, a, a),
            Err(IfreqError::NameTooLong {
                name: "utun1234567890ab".into(),
                len: 16
            })
        );
        assert!(ifreq_dstaddr("", a).is_err());
        assert!(ifreq_dstaddr("ut\0n", a).is_err());
        assert!(in6_aliasreq("a-very-long-interface", Ipv6Addr::LOCALHOST, 64, None, 0).is_err());
        assert_eq!(
            in6_aliasreq("utun4", Ipv6Addr::LOCALHOST, 129, None, 0),
            Err(IfreqError::PrefixLen(129))
        );
    }
}
