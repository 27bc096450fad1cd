//! The `PF_ROUTE` routing-socket message codec: `rt_msghdr` requests the
//! helper writes (add, delete, read back a route) and the messages the
//! kernel sends back or broadcasts (`RTM_GET` replies, route changes,
//! `RTM_IFINFO`, `RTM_NEWADDR`/`RTM_DELADDR`), as typed values.
//!
//! Pure bytes: no socket, no libc, no `cfg(target_os)`. It runs and is
//! tested on every OS; only `platform::macos` hands its bytes to the kernel.
//! Decoding never panics: every read is length-checked and a malformed
//! message is an [`RtMsgError`] naming what was wrong.
//!
//! Layout (xnu `bsd/net/route.h`, `bsd/net/if.h`, `bsd/net/rtsock.c`):
//! - Header fields are in HOST byte order. Both Apple targets (`x86_64` and
//!   arm64) are little-endian, so this codec reads and writes them as
//!   little-endian explicitly, whatever the host it runs on. Addresses inside
//!   sockaddrs (`sin_addr`, `sin6_addr`) stay in network order.
//! - The header is followed by one sockaddr per bit set in `rtm_addrs`, in
//!   bit order (`RTA_DST` first). Each occupies `ROUNDUP32(sa_len)` bytes
//!   (xnu `bsd/net/rtsock.c`: rounded up to `sizeof(uint32_t)`; a zero-length
//!   sockaddr still occupies 4 bytes).
//! - Netmasks in kernel messages are trimmed: `sa_len` stops after the last
//!   non-zero mask byte (0 for an all-zero mask) and the family/port bytes
//!   may be `0xff` (filled by `rn_addmask`). As the kernel does (`rtm_scrub`),
//!   a mask is read in the family of `RTA_DST` (else `RTA_IFA`), never its
//!   own `sa_family`; missing trailing bytes are zero.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// xnu `bsd/net/route.h`: `RTM_VERSION`; every message carries it.
pub const RTM_VERSION: u8 = 5;

// Message types. xnu bsd/net/route.h
pub const RTM_ADD: u8 = 0x1;
pub const RTM_DELETE: u8 = 0x2;
pub const RTM_CHANGE: u8 = 0x3;
pub const RTM_GET: u8 = 0x4;
pub const RTM_LOSING: u8 = 0x5;
pub const RTM_REDIRECT: u8 = 0x6;
pub const RTM_MISS: u8 = 0x7;
pub const RTM_LOCK: u8 = 0x8;
pub const RTM_OLDADD: u8 = 0x9;
pub const RTM_OLDDEL: u8 = 0xa;
pub const RTM_RESOLVE: u8 = 0xb;
pub const RTM_NEWADDR: u8 = 0xc;
pub const RTM_DELADDR: u8 = 0xd;
pub const RTM_IFINFO: u8 = 0xe;
pub const RTM_NEWMADDR: u8 = 0xf;
pub const RTM_DELMADDR: u8 = 0x10;
pub const RTM_IFINFO2: u8 = 0x12;
pub const RTM_NEWMADDR2: u8 = 0x13;
pub const RTM_GET2: u8 = 0x14;

// Route flags (`rtm_flags`, an `int` in C). xnu bsd/net/route.h
pub const RTF_UP: u32 = 0x1;
pub const RTF_GATEWAY: u32 = 0x2;
pub const RTF_HOST: u32 = 0x4;
pub const RTF_REJECT: u32 = 0x8;
pub const RTF_DYNAMIC: u32 = 0x10;
pub const RTF_MODIFIED: u32 = 0x20;
pub const RTF_DONE: u32 = 0x40;
pub const RTF_CLONING: u32 = 0x100;
pub const RTF_LLINFO: u32 = 0x400;
pub const RTF_STATIC: u32 = 0x800;
pub const RTF_BLACKHOLE: u32 = 0x1000;
pub const RTF_PRCLONING: u32 = 0x10000;
pub const RTF_WASCLONED: u32 = 0x20000;
pub const RTF_LOCAL: u32 = 0x20_0000;
pub const RTF_BROADCAST: u32 = 0x40_0000;
pub const RTF_MULTICAST: u32 = 0x80_0000;
/// xnu `bsd/net/route.h`: the route is scoped to `rtm_index` (only sockets
/// bound to that interface use it). Exclusion routes must NOT set it.
pub const RTF_IFSCOPE: u32 = 0x100_0000;
pub const RTF_CONDEMNED: u32 = 0x200_0000;
pub const RTF_PROXY: u32 = 0x800_0000;
pub const RTF_ROUTER: u32 = 0x1000_0000;

// Sockaddr presence bits (`rtm_addrs`). xnu bsd/net/route.h
pub const RTA_DST: u32 = 0x1;
pub const RTA_GATEWAY: u32 = 0x2;
pub const RTA_NETMASK: u32 = 0x4;
pub const RTA_GENMASK: u32 = 0x8;
pub const RTA_IFP: u32 = 0x10;
pub const RTA_IFA: u32 = 0x20;
pub const RTA_AUTHOR: u32 = 0x40;
pub const RTA_BRD: u32 = 0x80;
/// xnu `bsd/net/route.h`: `RTAX_MAX`, the number of sockaddr slots.
pub const RTAX_MAX: usize = 8;

// Address families (macOS values). xnu bsd/sys/socket.h
pub const AF_UNSPEC: u8 = 0;
pub const AF_INET: u8 = 2;
pub const AF_ROUTE: u8 = 17;
pub const AF_LINK: u8 = 18;
pub const AF_INET6: u8 = 30;

/// xnu `bsd/net/if_types.h`: `IFT_OTHER` (what utun registers as).
pub const IFT_OTHER: u8 = 0x1;
/// xnu `bsd/net/if_types.h`: `IFT_ETHER`.
pub const IFT_ETHER: u8 = 0x6;

/// `sizeof(struct rt_msghdr)`: 11 scalar fields (44 bytes, with the u16 pad
/// after `rtm_index`) + `struct rt_metrics` (14 × 4). xnu `bsd/net/route.h`
pub const RT_MSGHDR_LEN: usize = 92;
/// `sizeof(struct if_msghdr)`: 16-byte head (u16 pad after `ifm_index`, as
/// `struct if_data` is 4-aligned) + `struct if_data` (96 bytes on LP64,
/// where `ifi_lastchange` is a `timeval32`). xnu `bsd/net/if.h`, `bsd/net/if_var.h`
pub const IF_MSGHDR_LEN: usize = 112;
/// `sizeof(struct ifa_msghdr)`: u16 pad after `ifam_index`, then
/// `ifam_metric` at 16. xnu `bsd/net/if.h`
pub const IFA_MSGHDR_LEN: usize = 20;

/// `sizeof(struct sockaddr_in)`. xnu `bsd/netinet/in.h`
pub const SOCKADDR_IN_LEN: u8 = 16;
/// `sizeof(struct sockaddr_in6)`. xnu `bsd/netinet6/in6.h`
pub const SOCKADDR_IN6_LEN: u8 = 28;
/// `sizeof(struct sockaddr_dl)` on Apple (no `sdl_rcf`/`sdl_route`): the
/// 8-byte head plus `sdl_data[12]`. xnu `bsd/net/if_dl.h`
pub const SOCKADDR_DL_LEN: u8 = 20;
/// Offset of `sdl_data` in `struct sockaddr_dl`. xnu `bsd/net/if_dl.h`
const SDL_DATA_OFFSET: usize = 8;
/// Offset of `sin_addr` / end of it. xnu `bsd/netinet/in.h`
const SIN_ADDR: usize = 4;
/// Offset of `sin6_addr` and of `sin6_scope_id`. xnu `bsd/netinet6/in6.h`
const SIN6_ADDR: usize = 8;
const SIN6_SCOPE_ID: usize = 24;

/// xnu `bsd/net/rtsock.c` `ROUNDUP32`: the space a sockaddr of `sa_len`
/// bytes occupies in a routing message (4 for a zero-length one).
pub const fn roundup32(sa_len: usize) -> usize {
    if sa_len == 0 {
        4
    } else {
        1 + ((sa_len - 1) | 3)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtMsgError {
    #[error("routing message of {len} bytes is shorter than its {need}-byte {what}")]
    Truncated {
        what: &'static str,
        need: usize,
        len: usize,
    },
    #[error("routing message header says {msglen} bytes but only {len} were read")]
    LengthMismatch { msglen: usize, len: usize },
    #[error("routing message version {0}, expected RTM_VERSION {RTM_VERSION}")]
    Version(u8),
    #[error("routing message type {0:#x} is not a route message (rt_msghdr)")]
    NotRouteMessage(u8),
    #[error("rtm_addrs {0:#x} has bits beyond RTA_BRD")]
    UnknownAddrBits(u32),
    #[error("rtm_addrs announces a {slot} sockaddr but the message ends at byte {end}")]
    MissingSockaddr { slot: &'static str, end: usize },
    #[error("{slot} sockaddr at byte {offset} has sa_len {sa_len}, past the message end at {end}")]
    SockaddrOverrun {
        slot: &'static str,
        offset: usize,
        sa_len: usize,
        end: usize,
    },
    #[error("{slot} sockaddr would be {len} bytes; sa_len holds at most 255")]
    SockaddrTooLong { slot: &'static str, len: usize },
    #[error("buffer of {len} bytes is too small for a {need}-byte routing message")]
    BufferTooSmall { need: usize, len: usize },
}

/// One sockaddr slot of a routing message (xnu `RTAX_*`, bit `1 << slot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rtax {
    Dst = 0,
    Gateway = 1,
    Netmask = 2,
    Genmask = 3,
    Ifp = 4,
    Ifa = 5,
    Author = 6,
    Brd = 7,
}

impl Rtax {
    pub const ALL: [Rtax; RTAX_MAX] = [
        Rtax::Dst,
        Rtax::Gateway,
        Rtax::Netmask,
        Rtax::Genmask,
        Rtax::Ifp,
        Rtax::Ifa,
        Rtax::Author,
        Rtax::Brd,
    ];

    /// The `RTA_*` bit of this slot.
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Rtax::Dst => "RTA_DST",
            Rtax::Gateway => "RTA_GATEWAY",
            Rtax::Netmask => "RTA_NETMASK",
            Rtax::Genmask => "RTA_GENMASK",
            Rtax::Ifp => "RTA_IFP",
            Rtax::Ifa => "RTA_IFA",
            Rtax::Author => "RTA_AUTHOR",
            Rtax::Brd => "RTA_BRD",
        }
    }

    fn is_mask(self) -> bool {
        matches!(self, Rtax::Netmask | Rtax::Genmask)
    }
}

/// A link-level address, `struct sockaddr_dl` (xnu `bsd/net/if_dl.h`): how a
/// route names an interface (`-iface` gateway, `RTA_IFP` in replies).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkAddr {
    /// `sdl_index`: the interface index; 0 = none.
    pub index: u16,
    /// `sdl_type`: `IFT_*`.
    pub if_type: u8,
    /// The interface name (`sdl_nlen` bytes of `sdl_data`, no NUL).
    pub name: String,
    /// The link-layer address (`sdl_alen` bytes after the name).
    pub lladdr: Vec<u8>,
}

/// A sockaddr as routing messages carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SockAddr {
    /// `sockaddr_in`. Port and `sin_zero` are not modelled: routes carry
    /// neither (the kernel clears `sin_zero`, its private scope field).
    Inet(Ipv4Addr),
    /// `sockaddr_in6` (port and flowinfo not modelled). Link-local addresses
    /// from the kernel may carry the KAME embedded scope in bytes 2..4.
    Inet6 { addr: Ipv6Addr, scope_id: u32 },
    /// `sockaddr_dl`.
    Link(LinkAddr),
    /// Any other family, or a sockaddr too short for its family; `data` is
    /// everything after `sa_len` and `sa_family`.
    Unknown { family: u8, data: Vec<u8> },
}

impl SockAddr {
    pub fn family(&self) -> u8 {
        match self {
            SockAddr::Inet(_) => AF_INET,
            SockAddr::Inet6 { .. } => AF_INET6,
            SockAddr::Link(_) => AF_LINK,
            SockAddr::Unknown { family, .. } => *family,
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            SockAddr::Inet(a) => Some(IpAddr::V4(*a)),
            SockAddr::Inet6 { addr, .. } => Some(IpAddr::V6(*addr)),
            _ => None,
        }
    }

    pub fn link(&self) -> Option<&LinkAddr> {
        match self {
            SockAddr::Link(l) => Some(l),
            _ => None,
        }
    }

    /// A sockaddr holding `ip` (port 0, scope 0).
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => SockAddr::Inet(a),
            IpAddr::V6(addr) => SockAddr::Inet6 { addr, scope_id: 0 },
        }
    }

    /// A sockaddr holding `ip` in zone `zone` (an interface index) when `ip`
    /// is a scoped IPv6 address; any other address ignores the zone.
    pub fn scoped(ip: IpAddr, zone: u32) -> Self {
        match ip {
            IpAddr::V6(addr) if has_embedded_scope(&addr) => SockAddr::Inet6 {
                addr,
                scope_id: zone,
            },
            other => SockAddr::from_ip(other),
        }
    }

    /// `sa_len` as this codec writes it.
    fn sa_len(&self) -> usize {
        match self {
            SockAddr::Inet(_) => usize::from(SOCKADDR_IN_LEN),
            SockAddr::Inet6 { .. } => usize::from(SOCKADDR_IN6_LEN),
            SockAddr::Link(l) => {
                (SDL_DATA_OFFSET + l.name.len() + l.lladdr.len()).max(usize::from(SOCKADDR_DL_LEN))
            }
            SockAddr::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the sockaddr (exactly `sa_len` bytes) into `out`, which the
    /// caller has sized with `sa_len()` and zeroed.
    fn write(&self, out: &mut [u8]) {
        let len = out.len();
        // sa_len was checked to fit a u8 by the caller.
        out[0] = u8::try_from(len).unwrap_or(u8::MAX);
        out[1] = self.family();
        match self {
            SockAddr::Inet(a) => out[SIN_ADDR..SIN_ADDR + 4].copy_from_slice(&a.octets()),
            SockAddr::Inet6 { addr, scope_id } => {
                let mut octets = addr.octets();
                let mut wire_scope = *scope_id;
                // KAME: a scoped address travels with its zone in bytes 2-3
                // and sin6_scope_id 0, as route(8) sends it (network_cmds
                // route.tproj/route.c l.1078-1085).
                if *scope_id != 0 && has_embedded_scope(addr) {
                    if let Ok(zone) = u16::try_from(*scope_id) {
                        octets[2..4].copy_from_slice(&zone.to_be_bytes());
                        wire_scope = 0;
                    }
                }
                out[SIN6_ADDR..SIN6_SCOPE_ID].copy_from_slice(&octets);
                out[SIN6_SCOPE_ID..SIN6_SCOPE_ID + 4].copy_from_slice(&wire_scope.to_le_bytes());
            }
            SockAddr::Link(l) => {
                out[2..4].copy_from_slice(&l.index.to_le_bytes());
                out[4] = l.if_type;
                out[5] = u8::try_from(l.name.len()).unwrap_or(u8::MAX);
                out[6] = u8::try_from(l.lladdr.len()).unwrap_or(u8::MAX);
                out[7] = 0; // sdl_slen
                let name_end = SDL_DATA_OFFSET + l.name.len();
                out[SDL_DATA_OFFSET..name_end].copy_from_slice(l.name.as_bytes());
                out[name_end..name_end + l.lladdr.len()].copy_from_slice(&l.lladdr);
            }
            SockAddr::Unknown { data, .. } => out[2..].copy_from_slice(data),
        }
    }

    /// Decodes one sockaddr from exactly its `sa_len` bytes.
    fn decode(sa: &[u8]) -> SockAddr {
        let family = sa.get(1).copied().unwrap_or(AF_UNSPEC);
        match family {
            AF_INET => {
                if let Some(o) = sa.get(SIN_ADDR..SIN_ADDR + 4) {
                    return SockAddr::Inet(Ipv4Addr::new(o[0], o[1], o[2], o[3]));
                }
            }
            AF_INET6 => {
                if let Some(a) = sa
                    .get(SIN6_ADDR..SIN6_SCOPE_ID)
                    .and_then(|a| <[u8; 16]>::try_from(a).ok())
                {
                    // A short sin6 (sa_len 24..27) has a zero scope.
                    let mut scope_id = sa
                        .get(SIN6_SCOPE_ID..SIN6_SCOPE_ID + 4)
                        .and_then(|s| <[u8; 4]>::try_from(s).ok())
                        .map_or(0, u32::from_le_bytes);
                    let mut a = a;
                    // KAME: the kernel keeps a scoped address's zone in
                    // bytes 2-3 (xnu scope6.c `in6_embedded_scope = 1`) and
                    // rtm_scrub does not clear it from a gateway; move it to
                    // scope_id as route(8) does before showing it
                    // (network_cmds route.tproj/route.c l.505-510).
                    let full = sa.len() == usize::from(SOCKADDR_IN6_LEN);
                    if full && scope_id == 0 && has_embedded_scope(&Ipv6Addr::from(a)) {
                        scope_id = u32::from(u16::from_be_bytes([a[2], a[3]]));
                        a[2..4].fill(0);
                    }
                    return SockAddr::Inet6 {
                        addr: Ipv6Addr::from(a),
                        scope_id,
                    };
                }
            }
            AF_LINK => {
                if let Some(l) = decode_link(sa) {
                    return SockAddr::Link(l);
                }
            }
            _ => {}
        }
        SockAddr::Unknown {
            family,
            data: sa.get(2..).unwrap_or_default().to_vec(),
        }
    }

    /// Decodes a netmask in `family` (the family of the hint sockaddr, as
    /// xnu `rtm_scrub` does): its own `sa_family` and port bytes may be
    /// `0xff` and `sa_len` may stop early; missing bytes are zero.
    fn decode_mask(sa: &[u8], hint: Option<u8>) -> SockAddr {
        let own = sa.get(1).copied().unwrap_or(AF_UNSPEC);
        let family = match hint {
            Some(f @ (AF_INET | AF_INET6)) => f,
            _ => own,
        };
        match family {
            AF_INET => {
                let mut o = [0u8; 4];
                copy_from(&mut o, sa, SIN_ADDR);
                SockAddr::Inet(Ipv4Addr::from(o))
            }
            AF_INET6 => {
                let mut o = [0u8; 16];
                copy_from(&mut o, sa, SIN6_ADDR);
                SockAddr::Inet6 {
                    addr: Ipv6Addr::from(o),
                    scope_id: 0,
                }
            }
            _ => SockAddr::decode(sa),
        }
    }
}

/// Whether xnu keeps `addr`'s zone inside the address: link-local unicast
/// (`fe80::/10`) and interface- or link-local multicast (`ff01::/16`,
/// `ff02::/16`), the addresses route(8) embeds and un-embeds
/// (`IN6_IS_ADDR_LINKLOCAL`, `IN6_IS_ADDR_MC_NODELOCAL`,
/// `IN6_IS_ADDR_MC_LINKLOCAL`; `network_cmds` `route.tproj/route.c`).
///
/// xnu `bsd/netinet6/in6.h`: multicast scope is the low nibble of byte 1, and
/// a unicast-based (`0x30` flags) link-local group is not link-local.
fn has_embedded_scope(addr: &Ipv6Addr) -> bool {
    let [b0, b1, ..] = addr.octets();
    let link_local = b0 == 0xfe && b1 & 0xc0 == 0x80;
    let multicast_scope = (b0 == 0xff).then_some(b1 & 0x0f);
    let node_local = multicast_scope == Some(0x01);
    let mc_link_local = multicast_scope == Some(0x02) && b1 & 0xf0 != 0x30;
    link_local || node_local || mc_link_local
}

/// Copies `src[start..]` into the front of `dst`, as far as both reach.
fn copy_from(dst: &mut [u8], src: &[u8], start: usize) {
    if let Some(tail) = src.get(start..) {
        let n = tail.len().min(dst.len());
        dst[..n].copy_from_slice(&tail[..n]);
    }
}

fn decode_link(sa: &[u8]) -> Option<LinkAddr> {
    let head = sa.get(..SDL_DATA_OFFSET)?;
    let index = u16::from_le_bytes([head[2], head[3]]);
    let (nlen, alen, slen) = (
        usize::from(head[5]),
        usize::from(head[6]),
        usize::from(head[7]),
    );
    // A link-layer selector is not modelled; keep such an address raw.
    if slen != 0 {
        return None;
    }
    let name = sa.get(SDL_DATA_OFFSET..SDL_DATA_OFFSET + nlen)?;
    let lladdr = sa.get(SDL_DATA_OFFSET + nlen..SDL_DATA_OFFSET + nlen + alen)?;
    Some(LinkAddr {
        index,
        if_type: head[4],
        name: String::from_utf8(name.to_vec()).ok()?,
        lladdr: lladdr.to_vec(),
    })
}

/// The sockaddrs of a message, by `RTAX_*` slot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteAddrs([Option<SockAddr>; RTAX_MAX]);

impl RouteAddrs {
    pub fn get(&self, slot: Rtax) -> Option<&SockAddr> {
        self.0[slot as usize].as_ref()
    }

    pub fn set(&mut self, slot: Rtax, sa: Option<SockAddr>) {
        self.0[slot as usize] = sa;
    }

    #[must_use]
    pub fn with(mut self, slot: Rtax, sa: SockAddr) -> Self {
        self.set(slot, Some(sa));
        self
    }

    /// The `rtm_addrs` bitmask these slots produce.
    pub fn bits(&self) -> u32 {
        Rtax::ALL
            .iter()
            .filter(|s| self.get(**s).is_some())
            .fold(0, |acc, s| acc | s.bit())
    }

    pub fn dst(&self) -> Option<&SockAddr> {
        self.get(Rtax::Dst)
    }
    pub fn gateway(&self) -> Option<&SockAddr> {
        self.get(Rtax::Gateway)
    }
    pub fn netmask(&self) -> Option<&SockAddr> {
        self.get(Rtax::Netmask)
    }
    pub fn ifp(&self) -> Option<&SockAddr> {
        self.get(Rtax::Ifp)
    }
    pub fn ifa(&self) -> Option<&SockAddr> {
        self.get(Rtax::Ifa)
    }

    /// Bytes the sockaddrs occupy after the header.
    fn wire_len(&self) -> Result<usize, RtMsgError> {
        let mut total = 0;
        for slot in Rtax::ALL {
            if let Some(sa) = self.get(slot) {
                let len = sa.sa_len();
                if len > usize::from(u8::MAX) {
                    return Err(RtMsgError::SockaddrTooLong {
                        slot: slot.name(),
                        len,
                    });
                }
                total += roundup32(len);
            }
        }
        Ok(total)
    }

    /// Writes the sockaddrs into `out` (sized by `wire_len`, zeroed).
    fn write(&self, out: &mut [u8]) {
        let mut off = 0;
        for slot in Rtax::ALL {
            if let Some(sa) = self.get(slot) {
                let len = sa.sa_len();
                sa.write(&mut out[off..off + len]);
                off += roundup32(len);
            }
        }
    }

    /// Reads the sockaddrs announced by `bits` from `body` (everything after
    /// the header, up to `msglen`). `header_len` only serves error offsets.
    fn parse(bits: u32, body: &[u8], header_len: usize) -> Result<Self, RtMsgError> {
        if bits & !0xff != 0 {
            return Err(RtMsgError::UnknownAddrBits(bits));
        }
        let end = header_len + body.len();
        let mut raw: [Option<&[u8]>; RTAX_MAX] = [None; RTAX_MAX];
        let mut off = 0;
        for slot in Rtax::ALL {
            if bits & slot.bit() == 0 {
                continue;
            }
            let Some(&sa_len) = body.get(off) else {
                return Err(RtMsgError::MissingSockaddr {
                    slot: slot.name(),
                    end,
                });
            };
            let sa_len = usize::from(sa_len);
            let Some(sa) = body.get(off..off + sa_len) else {
                return Err(RtMsgError::SockaddrOverrun {
                    slot: slot.name(),
                    offset: header_len + off,
                    sa_len,
                    end,
                });
            };
            raw[slot as usize] = Some(sa);
            // The last sockaddr's padding may be cut off; that is harmless.
            off += roundup32(sa_len);
        }
        // xnu rt_msg1/rt_msg2: masks are read in the family of RTA_DST,
        // else RTA_IFA (ifa_msghdr carries no destination).
        let hint = raw[Rtax::Dst as usize]
            .or(raw[Rtax::Ifa as usize])
            .and_then(|sa| sa.get(1).copied());
        let mut addrs = RouteAddrs::default();
        for slot in Rtax::ALL {
            if let Some(sa) = raw[slot as usize] {
                let decoded = if slot.is_mask() {
                    SockAddr::decode_mask(sa, hint)
                } else {
                    SockAddr::decode(sa)
                };
                addrs.set(slot, Some(decoded));
            }
        }
        Ok(addrs)
    }
}

/// `struct rt_metrics` (xnu `bsd/net/route.h`), 14 × 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtMetrics {
    pub locks: u32,
    pub mtu: u32,
    pub hopcount: u32,
    pub expire: i32,
    pub recvpipe: u32,
    pub sendpipe: u32,
    pub ssthresh: u32,
    pub rtt: u32,
    pub rttvar: u32,
    pub pksent: u32,
    pub filler: [u32; 4],
}

impl RtMetrics {
    fn words(&self) -> [u32; 14] {
        let f = self.filler;
        [
            self.locks,
            self.mtu,
            self.hopcount,
            u32::from_le_bytes(self.expire.to_le_bytes()),
            self.recvpipe,
            self.sendpipe,
            self.ssthresh,
            self.rtt,
            self.rttvar,
            self.pksent,
            f[0],
            f[1],
            f[2],
            f[3],
        ]
    }

    fn from_words(w: [u32; 14]) -> Self {
        RtMetrics {
            locks: w[0],
            mtu: w[1],
            hopcount: w[2],
            expire: i32::from_le_bytes(w[3].to_le_bytes()),
            recvpipe: w[4],
            sendpipe: w[5],
            ssthresh: w[6],
            rtt: w[7],
            rttvar: w[8],
            pksent: w[9],
            filler: [w[10], w[11], w[12], w[13]],
        }
    }
}

/// Little-endian (Apple host order) readers over a length-checked header.
fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

// rt_msghdr field offsets. xnu bsd/net/route.h (natural alignment: the u16
// pad at 6 puts rtm_flags on a 4-byte boundary; no other padding).
const RTM_MSGLEN: usize = 0;
const RTM_VERSION_AT: usize = 2;
const RTM_TYPE: usize = 3;
const RTM_INDEX: usize = 4;
const RTM_FLAGS: usize = 8;
const RTM_ADDRS: usize = 12;
const RTM_PID: usize = 16;
const RTM_SEQ: usize = 20;
const RTM_ERRNO: usize = 24;
const RTM_USE: usize = 28;
const RTM_INITS: usize = 32;
const RTM_RMX: usize = 36;

/// Checks the common prelude (`msglen`, `version`, `type` at 0, 2, 3: the
/// same in `rt_msghdr`, `if_msghdr` and `ifa_msghdr`) and returns the message cut
/// to `msglen`, which must be at least `header_len`.
fn checked_message<'a>(
    buf: &'a [u8],
    header_len: usize,
    what: &'static str,
) -> Result<&'a [u8], RtMsgError> {
    if buf.len() < 4 {
        return Err(RtMsgError::Truncated {
            what: "message prelude",
            need: 4,
            len: buf.len(),
        });
    }
    let msglen = usize::from(le_u16(buf, RTM_MSGLEN));
    if msglen > buf.len() {
        return Err(RtMsgError::LengthMismatch {
            msglen,
            len: buf.len(),
        });
    }
    if buf[RTM_VERSION_AT] != RTM_VERSION {
        return Err(RtMsgError::Version(buf[RTM_VERSION_AT]));
    }
    if msglen < header_len {
        return Err(RtMsgError::Truncated {
            what,
            need: header_len,
            len: msglen,
        });
    }
    Ok(&buf[..msglen])
}

/// A route message (`struct rt_msghdr` + sockaddrs): requests the helper
/// sends and `RTM_ADD`/`DELETE`/`CHANGE`/`GET`/`MISS`… the kernel sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMessage {
    /// `rtm_type`: `RTM_ADD`, `RTM_GET`, …
    pub kind: u8,
    /// `rtm_index`: the interface (replies), or the scope with `RTF_IFSCOPE`.
    pub index: u16,
    /// `rtm_flags` (`RTF_*`; an `int` in C, kept as its bits).
    pub flags: u32,
    /// `rtm_pid`: the sender (the kernel sets it on requests).
    pub pid: i32,
    /// `rtm_seq`: replies are matched on pid + seq.
    pub seq: i32,
    /// `rtm_errno`: why a request failed (EEXIST, ESRCH, …).
    pub errno: i32,
    /// `rtm_use`.
    pub use_count: i32,
    /// `rtm_inits`: which metrics a request initialises (`RTV_*`).
    pub inits: u32,
    pub metrics: RtMetrics,
    pub addrs: RouteAddrs,
}

impl RouteMessage {
    /// An empty message of `kind` with sequence number `seq`.
    pub fn new(kind: u8, seq: i32) -> Self {
        RouteMessage {
            kind,
            index: 0,
            flags: 0,
            pid: 0,
            seq,
            errno: 0,
            use_count: 0,
            inits: 0,
            metrics: RtMetrics::default(),
            addrs: RouteAddrs::default(),
        }
    }

    /// `route add|delete -net <dst> -interface <ifname>` (S3): gateway is
    /// the tunnel's `sockaddr_dl` (its index decides; the name documents),
    /// flags `RTF_UP|RTF_STATIC` with no `RTF_GATEWAY`, and the netmask is
    /// always present, so a /32 is a net route with a full mask.
    pub fn interface_route(kind: u8, dst: IpNet, ifindex: u16, ifname: &str, seq: i32) -> Self {
        let mut m = RouteMessage::new(kind, seq);
        m.flags = RTF_UP | RTF_STATIC;
        m.addrs = RouteAddrs::default()
            .with(Rtax::Dst, SockAddr::from_ip(dst.network()))
            .with(
                Rtax::Gateway,
                SockAddr::Link(LinkAddr {
                    index: ifindex,
                    if_type: 0,
                    name: ifname.to_owned(),
                    lladdr: Vec::new(),
                }),
            )
            .with(Rtax::Netmask, SockAddr::from_ip(dst.netmask()));
        m
    }

    /// `route add|delete -net <dst> <gateway>`: an exclusion route around
    /// the tunnel through the physical gateway (S6). Unscoped (no
    /// `RTF_IFSCOPE`): it must apply to every socket.
    pub fn gateway_route(kind: u8, dst: IpNet, gateway: SockAddr, seq: i32) -> Self {
        let mut m = RouteMessage::new(kind, seq);
        m.flags = RTF_UP | RTF_GATEWAY | RTF_STATIC;
        m.addrs = RouteAddrs::default()
            .with(Rtax::Dst, SockAddr::from_ip(dst.network()))
            .with(Rtax::Gateway, gateway)
            .with(Rtax::Netmask, SockAddr::from_ip(dst.netmask()));
        m
    }

    /// `RTM_GET` for exactly `dst` (DST + NETMASK: an exact-prefix lookup,
    /// the read-back after an install). `RTA_IFP` with an empty
    /// `sockaddr_dl` asks the kernel to add the interface's `sockaddr_dl`
    /// (`RTA_IFP`, with its name) and address (`RTA_IFA`) to the reply, as
    /// route(8) does; without it the reply names no interface.
    pub fn get_exact(dst: IpNet, seq: i32) -> Self {
        let mut m = RouteMessage::new(RTM_GET, seq);
        m.addrs = RouteAddrs::default()
            .with(Rtax::Dst, SockAddr::from_ip(dst.network()))
            .with(Rtax::Netmask, SockAddr::from_ip(dst.netmask()))
            .with(Rtax::Ifp, SockAddr::Link(LinkAddr::default()));
        m
    }

    /// `RTM_GET` for the route a packet to `dst` takes (DST without
    /// NETMASK: xnu's `route_output` then does a longest-match lookup,
    /// `rt_lookup` → `node_lookup`, without cloning, as `route -n get
    /// ADDRESS` does). `RTA_IFP` as in
    /// [`get_exact`](Self::get_exact), so the reply names the interface.
    pub fn get_to(dst: IpAddr, seq: i32) -> Self {
        let mut m = RouteMessage::new(RTM_GET, seq);
        m.addrs = RouteAddrs::default()
            .with(Rtax::Dst, SockAddr::from_ip(dst))
            .with(Rtax::Ifp, SockAddr::Link(LinkAddr::default()));
        m
    }

    /// `RTM_GET` for the (unscoped, primary) default route of one family:
    /// where the physical network's gateway and interface are found.
    pub fn get_default(ipv6: bool, seq: i32) -> Self {
        let dst = if ipv6 {
            IpNet::V6(Ipv6Net::default())
        } else {
            IpNet::V4(Ipv4Net::default())
        };
        RouteMessage::get_exact(dst, seq)
    }

    /// Whether this is the kernel's answer to our request number `seq`:
    /// the socket also carries every other process's route messages, so
    /// replies are matched on pid + seq (DESIGN.md §5).
    pub fn answers(&self, pid: i32, seq: i32) -> bool {
        self.pid == pid && self.seq == seq
    }

    /// Whether the kernel marked the request done (`RTF_DONE`).
    pub fn is_done(&self) -> bool {
        self.flags & RTF_DONE != 0
    }

    /// The prefix this message is about: DST and NETMASK (a missing mask is
    /// a host route). `None` when DST is not an IP address or the mask is
    /// not contiguous.
    pub fn prefix(&self) -> Option<IpNet> {
        let dst = self.addrs.dst()?.ip()?;
        let len = match (self.addrs.netmask().and_then(SockAddr::ip), dst) {
            (None, IpAddr::V4(_)) => 32,
            (None, IpAddr::V6(_)) => 128,
            (Some(mask), _) => ipnet::ip_mask_to_prefix(mask).ok()?,
        };
        IpNet::new(dst, len).ok()
    }

    /// The gateway as an IP address (`RTF_GATEWAY` routes).
    pub fn gateway_ip(&self) -> Option<IpAddr> {
        self.addrs.gateway()?.ip()
    }

    /// The interface a reply names: the name in `RTA_IFP` (the route's
    /// `rt_ifp`, present when the request set `RTA_IFP`, as `get_exact`
    /// does). Check it together with `index` (`rtm_index`, also `rt_ifp`).
    /// Deliberately not the name in an `AF_LINK` gateway: that is only what
    /// was asked for at install time, not where the route resolved (S3).
    pub fn interface_name(&self) -> Option<&str> {
        self.addrs
            .ifp()
            .and_then(SockAddr::link)
            .map(|l| l.name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// The encoded length (`rtm_msglen`).
    pub fn buffer_len(&self) -> Result<usize, RtMsgError> {
        Ok(RT_MSGHDR_LEN + self.addrs.wire_len()?)
    }

    /// Writes the message at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, RtMsgError> {
        let len = self.buffer_len()?;
        let Some(out) = buf.get_mut(..len) else {
            return Err(RtMsgError::BufferTooSmall {
                need: len,
                len: buf.len(),
            });
        };
        out.fill(0);
        // At most 92 + 8 × 256 bytes, so it always fits rtm_msglen.
        let msglen = u16::try_from(len).unwrap_or(u16::MAX);
        out[RTM_MSGLEN..RTM_MSGLEN + 2].copy_from_slice(&msglen.to_le_bytes());
        out[RTM_VERSION_AT] = RTM_VERSION;
        out[RTM_TYPE] = self.kind;
        out[RTM_INDEX..RTM_INDEX + 2].copy_from_slice(&self.index.to_le_bytes());
        out[RTM_FLAGS..RTM_FLAGS + 4].copy_from_slice(&self.flags.to_le_bytes());
        out[RTM_ADDRS..RTM_ADDRS + 4].copy_from_slice(&self.addrs.bits().to_le_bytes());
        out[RTM_PID..RTM_PID + 4].copy_from_slice(&self.pid.to_le_bytes());
        out[RTM_SEQ..RTM_SEQ + 4].copy_from_slice(&self.seq.to_le_bytes());
        out[RTM_ERRNO..RTM_ERRNO + 4].copy_from_slice(&self.errno.to_le_bytes());
        out[RTM_USE..RTM_USE + 4].copy_from_slice(&self.use_count.to_le_bytes());
        out[RTM_INITS..RTM_INITS + 4].copy_from_slice(&self.inits.to_le_bytes());
        for (i, w) in self.metrics.words().iter().enumerate() {
            let at = RTM_RMX + 4 * i;
            out[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        self.addrs.write(&mut out[RT_MSGHDR_LEN..]);
        Ok(len)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, RtMsgError> {
        let mut buf = vec![0; self.buffer_len()?];
        self.emit(&mut buf)?;
        Ok(buf)
    }

    /// Parses one route message from the start of `buf` (bytes past
    /// `rtm_msglen` are ignored).
    pub fn parse(buf: &[u8]) -> Result<Self, RtMsgError> {
        let msg = checked_message(buf, RT_MSGHDR_LEN, "rt_msghdr")?;
        let kind = msg[RTM_TYPE];
        if !is_route_type(kind) {
            return Err(RtMsgError::NotRouteMessage(kind));
        }
        let mut words = [0u32; 14];
        for (i, w) in words.iter_mut().enumerate() {
            *w = le_u32(msg, RTM_RMX + 4 * i);
        }
        Ok(RouteMessage {
            kind,
            index: le_u16(msg, RTM_INDEX),
            flags: le_u32(msg, RTM_FLAGS),
            pid: le_i32(msg, RTM_PID),
            seq: le_i32(msg, RTM_SEQ),
            errno: le_i32(msg, RTM_ERRNO),
            use_count: le_i32(msg, RTM_USE),
            inits: le_u32(msg, RTM_INITS),
            metrics: RtMetrics::from_words(words),
            addrs: RouteAddrs::parse(le_u32(msg, RTM_ADDRS), &msg[RT_MSGHDR_LEN..], RT_MSGHDR_LEN)?,
        })
    }
}

/// Types carried in a `struct rt_msghdr` (xnu `bsd/net/route.h`: `RTM_ADD`
/// through `RTM_RESOLVE`).
fn is_route_type(kind: u8) -> bool {
    (RTM_ADD..=RTM_RESOLVE).contains(&kind)
}

// if_msghdr offsets. xnu bsd/net/if.h (ifm_index is followed by a u16 pad:
// struct if_data is 4-aligned) and bsd/net/if_var.h (if_data: 8 u_chars,
// then ifi_mtu).
const IFM_ADDRS: usize = 4;
const IFM_FLAGS: usize = 8;
const IFM_INDEX: usize = 12;
const IFM_DATA: usize = 16;
const IFI_TYPE: usize = IFM_DATA;
const IFI_MTU: usize = IFM_DATA + 8;
const IFI_BAUDRATE: usize = IFM_DATA + 16;

/// `RTM_IFINFO` (`struct if_msghdr`): an interface changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceMessage {
    /// `ifm_index`.
    pub index: u16,
    /// `ifm_flags`: the interface's `IFF_*` flags (`IFF_UP` 0x1, …).
    pub flags: u32,
    /// `ifi_type` (`IFT_*`).
    pub if_type: u8,
    /// `ifi_mtu`.
    pub mtu: u32,
    /// `ifi_baudrate`.
    pub baudrate: u32,
    pub addrs: RouteAddrs,
}

// ifa_msghdr offsets. xnu bsd/net/if.h
const IFAM_ADDRS: usize = 4;
const IFAM_FLAGS: usize = 8;
const IFAM_INDEX: usize = 12;
const IFAM_METRIC: usize = 16;

/// `RTM_NEWADDR` / `RTM_DELADDR` (`struct ifa_msghdr`): an address was
/// added to or removed from an interface (`RTA_IFA`, `RTA_NETMASK`,
/// `RTA_BRD` = broadcast or point-to-point peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressMessage {
    pub kind: u8,
    /// `ifam_index`.
    pub index: u16,
    /// `ifam_flags`.
    pub flags: u32,
    /// `ifam_metric`.
    pub metric: i32,
    pub addrs: RouteAddrs,
}

/// Any message read from a routing socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingMessage {
    Route(RouteMessage),
    Interface(InterfaceMessage),
    Address(AddressMessage),
    /// A type this codec does not decode (multicast membership, …).
    Other {
        kind: u8,
        len: usize,
    },
}

impl RoutingMessage {
    /// Parses one message from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, RtMsgError> {
        let prelude = checked_message(buf, 4, "message prelude")?;
        let kind = prelude[RTM_TYPE];
        match kind {
            k if is_route_type(k) => RouteMessage::parse(buf).map(RoutingMessage::Route),
            RTM_IFINFO => {
                let msg = checked_message(buf, IF_MSGHDR_LEN, "if_msghdr")?;
                Ok(RoutingMessage::Interface(InterfaceMessage {
                    index: le_u16(msg, IFM_INDEX),
                    flags: le_u32(msg, IFM_FLAGS),
                    if_type: msg[IFI_TYPE],
                    mtu: le_u32(msg, IFI_MTU),
                    baudrate: le_u32(msg, IFI_BAUDRATE),
                    addrs: RouteAddrs::parse(
                        le_u32(msg, IFM_ADDRS),
                        &msg[IF_MSGHDR_LEN..],
                        IF_MSGHDR_LEN,
                    )?,
                }))
            }
            RTM_NEWADDR | RTM_DELADDR => {
                let msg = checked_message(buf, IFA_MSGHDR_LEN, "ifa_msghdr")?;
                Ok(RoutingMessage::Address(AddressMessage {
                    kind,
                    index: le_u16(msg, IFAM_INDEX),
                    flags: le_u32(msg, IFAM_FLAGS),
                    metric: le_i32(msg, IFAM_METRIC),
                    addrs: RouteAddrs::parse(
                        le_u32(msg, IFAM_ADDRS),
                        &msg[IFA_MSGHDR_LEN..],
                        IFA_MSGHDR_LEN,
                    )?,
                }))
            }
            _ => Ok(RoutingMessage::Other {
                kind,
                len: prelude.len(),
            }),
        }
    }

    /// Whether a route monitor should look again after this message: a
    /// route, address or interface change made by anyone but `own_pid`.
    /// `RTM_GET` answers (the kernel copies them to every routing socket)
    /// and other kinds change nothing, so reacting to them, and to our own
    /// read-backs in particular, would re-check forever.
    pub fn is_network_change(&self, own_pid: i32) -> bool {
        match self {
            RoutingMessage::Route(m) => {
                m.pid != own_pid && matches!(m.kind, RTM_ADD | RTM_DELETE | RTM_CHANGE)
            }
            RoutingMessage::Interface(_) | RoutingMessage::Address(_) => true,
            RoutingMessage::Other { .. } => false,
        }
    }

    /// The message type (`RTM_*`).
    pub fn kind(&self) -> u8 {
        match self {
            RoutingMessage::Route(m) => m.kind,
            RoutingMessage::Interface(_) => RTM_IFINFO,
            RoutingMessage::Address(m) => m.kind,
            RoutingMessage::Other { kind, .. } => *kind,
        }
    }
}

/// Splits a buffer holding several messages back to back (a sysctl dump, or
/// a batch of reads) by `msglen`. Stops after the first error, since a bad
/// length leaves no way to find the next message.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<RoutingMessage, RtMsgError>> + '_ {
    let mut rest = buf;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        let result = RoutingMessage::parse(rest);
        match result {
            Ok(_) => {
                // parse succeeded, so msglen is at least 4 and within rest.
                let msglen = usize::from(le_u16(rest, RTM_MSGLEN));
                rest = &rest[msglen..];
            }
            Err(_) => failed = true,
        }
        Some(result)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 92-byte `rt_msghdr` written out field by field (little-endian).
    #[allow(clippy::too_many_arguments)]
    fn header(
        msglen: u16,
        kind: u8,
        index: u16,
        flags: u32,
        addrs: u32,
        pid: i32,
        seq: i32,
        errno: i32,
    ) -> Vec<u8> {
        let mut h = Vec::with_capacity(RT_MSGHDR_LEN);
        h.extend_from_slice(&msglen.to_le_bytes()); // @0 rtm_msglen
        h.push(5); // @2 rtm_version
        h.push(kind); // @3 rtm_type
        h.extend_from_slice(&index.to_le_bytes()); // @4 rtm_index
        h.extend_from_slice(&[0, 0]); // @6 pad
        h.extend_from_slice(&flags.to_le_bytes()); // @8 rtm_flags
        h.extend_from_slice(&addrs.to_le_bytes()); // @12 rtm_addrs
        h.extend_from_slice(&pid.to_le_bytes()); // @16 rtm_pid
        h.extend_from_slice(&seq.to_le_bytes()); // @20 rtm_seq
        h.extend_from_slice(&errno.to_le_bytes()); // @24 rtm_errno
        h.extend_from_slice(&[0; 4]); // @28 rtm_use
        h.extend_from_slice(&[0; 4]); // @32 rtm_inits
        h.extend_from_slice(&[0; 56]); // @36 rtm_rmx
        h
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    // Header of an `-iface` add: msglen 144 (92 + 16 + 20 + 16), version 5,
    // RTM_ADD, index 0, flags RTF_UP|RTF_STATIC (0x801), addrs DST|GATEWAY|
    // NETMASK (0x7), pid 0, seq 1, everything else zero.
    const ADD_IFACE_HEADER: [u8; 92] = [
        0x90, 0x00, // rtm_msglen = 144
        0x05, // rtm_version = RTM_VERSION
        0x01, // rtm_type = RTM_ADD
        0x00, 0x00, // rtm_index
        0x00, 0x00, // pad
        0x01, 0x08, 0x00, 0x00, // rtm_flags = RTF_UP|RTF_STATIC
        0x07, 0x00, 0x00, 0x00, // rtm_addrs = DST|GATEWAY|NETMASK
        0x00, 0x00, 0x00, 0x00, // rtm_pid
        0x01, 0x00, 0x00, 0x00, // rtm_seq = 1
        0x00, 0x00, 0x00, 0x00, // rtm_errno
        0x00, 0x00, 0x00, 0x00, // rtm_use
        0x00, 0x00, 0x00, 0x00, // rtm_inits
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // rtm_rmx (56 bytes)
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, //
    ];

    // sockaddr_dl naming utun4 (index 9): sdl_len 20, AF_LINK, sdl_index 9,
    // sdl_type 0, sdl_nlen 5, sdl_alen 0, sdl_slen 0, "utun4", 7 zero bytes.
    const UTUN4_GATEWAY: [u8; 20] = [
        0x14, 0x12, 0x09, 0x00, 0x00, 0x05, 0x00, 0x00, b'u', b't', b'u', b'n', b'4', 0, 0, 0, 0,
        0, 0, 0,
    ];

    #[test]
    fn header_layout_matches_rt_msghdr() {
        assert_eq!(ADD_IFACE_HEADER.len(), RT_MSGHDR_LEN);
        assert_eq!(
            header(144, RTM_ADD, 0, 0x801, 7, 0, 1, 0),
            ADD_IFACE_HEADER.to_vec()
        );
        assert_eq!(roundup32(0), 4);
        assert_eq!(roundup32(1), 4);
        assert_eq!(roundup32(5), 8);
        assert_eq!(roundup32(16), 16);
        assert_eq!(roundup32(20), 20);
        assert_eq!(roundup32(28), 28);
    }

    #[test]
    fn add_host_target_into_utun_is_a_net_route_with_full_mask() {
        let dst: [u8; 16] = [
            0x10, 0x02, 0x00, 0x00, // sin_len 16, AF_INET, port 0
            198, 51, 100, 7, // sin_addr
            0, 0, 0, 0, 0, 0, 0, 0, // sin_zero
        ];
        let mask: [u8; 16] = [
            0x10, 0x02, 0x00, 0x00, // sin_len 16, AF_INET, port 0
            0xff, 0xff, 0xff, 0xff, // 255.255.255.255
            0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let expected = cat(&[&ADD_IFACE_HEADER, &dst, &UTUN4_GATEWAY, &mask]);
        let m = RouteMessage::interface_route(RTM_ADD, net("198.51.100.7/32"), 9, "utun4", 1);
        assert_eq!(m.flags & (RTF_GATEWAY | RTF_HOST), 0);
        assert_eq!(m.to_bytes().unwrap(), expected);
        assert_eq!(RouteMessage::parse(&expected).unwrap(), m);
    }

    #[test]
    fn add_slash_24_into_utun() {
        let expected = cat(&[
            &ADD_IFACE_HEADER,
            &[0x10, 0x02, 0, 0, 192, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0], // DST 192.0.2.0
            &UTUN4_GATEWAY,
            &[
                0x10, 0x02, 0, 0, 0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0, 0, 0, 0, 0,
            ], // /24
        ]);
        // The host bits of the prefix are cleared.
        let m = RouteMessage::interface_route(RTM_ADD, net("192.0.2.77/24"), 9, "utun4", 1);
        assert_eq!(m.to_bytes().unwrap(), expected);
        assert_eq!(
            RouteMessage::parse(&expected).unwrap().prefix(),
            Some(net("192.0.2.0/24"))
        );
    }

    #[test]
    fn add_full_tunnel_halves_into_utun() {
        let low = cat(&[
            &ADD_IFACE_HEADER,
            &[0x10, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // DST 0.0.0.0
            &UTUN4_GATEWAY,
            &[0x10, 0x02, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // /1
        ]);
        let high = cat(&[
            &ADD_IFACE_HEADER,
            &[0x10, 0x02, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // DST 128.0.0.0
            &UTUN4_GATEWAY,
            &[0x10, 0x02, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // /1
        ]);
        for (dst, bytes) in [("0.0.0.0/1", &low), ("128.0.0.0/1", &high)] {
            let m = RouteMessage::interface_route(RTM_ADD, net(dst), 9, "utun4", 1);
            assert_eq!(&m.to_bytes().unwrap(), bytes, "{dst}");
            assert_eq!(RouteMessage::parse(bytes).unwrap().prefix(), Some(net(dst)));
        }
    }

    #[test]
    fn add_ipv6_slash_64_into_utun() {
        let mut head = ADD_IFACE_HEADER;
        head[0] = 0xa8; // rtm_msglen = 168 = 92 + 28 + 20 + 28
        let dst: [u8; 28] = [
            0x1c, 0x1e, 0x00, 0x00, // sin6_len 28, AF_INET6 (30), port 0
            0x00, 0x00, 0x00, 0x00, // sin6_flowinfo
            0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0x00, 0x00, // 2001:db8:1::
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, // sin6_scope_id
        ];
        let mask: [u8; 28] = [
            0x1c, 0x1e, 0x00, 0x00, // sin6_len 28, AF_INET6, port 0
            0x00, 0x00, 0x00, 0x00, // sin6_flowinfo
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // ffff:ffff:ffff:ffff::
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            0x00, 0x00, 0x00, 0x00, // sin6_scope_id
        ];
        let expected = cat(&[&head, &dst, &UTUN4_GATEWAY, &mask]);
        let m = RouteMessage::interface_route(RTM_ADD, net("2001:db8:1::/64"), 9, "utun4", 1);
        assert_eq!(m.to_bytes().unwrap(), expected);
        assert_eq!(RouteMessage::parse(&expected).unwrap(), m);
    }

    #[test]
    fn exclusion_route_via_ipv4_gateway() {
        let expected = cat(&[
            &header(140, RTM_ADD, 0, 0x803, 7, 0, 2, 0),
            &[0x10, 0x02, 0, 0, 203, 0, 113, 0, 0, 0, 0, 0, 0, 0, 0, 0], // DST 203.0.113.0
            &[0x10, 0x02, 0, 0, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0],   // GATEWAY 192.0.2.1
            &[
                0x10, 0x02, 0, 0, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ], // /24
        ]);
        // The header fields this route differs in, spelled out.
        let head: [u8; 16] = [
            0x8c, 0x00, // rtm_msglen = 140 = 92 + 3 × 16
            0x05, 0x01, // version 5, RTM_ADD
            0x00, 0x00, 0x00, 0x00, // index 0, pad
            0x03, 0x08, 0x00, 0x00, // RTF_UP|RTF_GATEWAY|RTF_STATIC
            0x07, 0x00, 0x00, 0x00, // DST|GATEWAY|NETMASK
        ];
        assert_eq!(expected[..16], head);
        let gw = SockAddr::Inet(Ipv4Addr::new(192, 0, 2, 1));
        let m = RouteMessage::gateway_route(RTM_ADD, net("203.0.113.0/24"), gw, 2);
        assert_eq!(m.flags & RTF_IFSCOPE, 0);
        assert_eq!(m.to_bytes().unwrap(), expected);
        let parsed = RouteMessage::parse(&expected).unwrap();
        assert_eq!(parsed.gateway_ip(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(parsed, m);
    }

    #[test]
    fn delete_of_interface_route() {
        let mut head = ADD_IFACE_HEADER;
        head[3] = 0x02; // rtm_type = RTM_DELETE
        head[20] = 0x05; // rtm_seq = 5
        let expected = cat(&[
            &head,
            &[0x10, 0x02, 0, 0, 198, 51, 100, 7, 0, 0, 0, 0, 0, 0, 0, 0],
            &UTUN4_GATEWAY,
            &[
                0x10, 0x02, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ]);
        let m = RouteMessage::interface_route(RTM_DELETE, net("198.51.100.7/32"), 9, "utun4", 5);
        assert_eq!(m.to_bytes().unwrap(), expected);
    }

    #[test]
    fn get_read_back_request() {
        let expected = cat(&[
            &header(144, RTM_GET, 0, 0, 0x15, 0, 3, 0), // DST|NETMASK|IFP, flags 0
            &[0x10, 0x02, 0, 0, 198, 51, 100, 7, 0, 0, 0, 0, 0, 0, 0, 0], // DST
            &[
                0x10, 0x02, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
            ], // NETMASK
            // IFP: empty sockaddr_dl (sdl_len 20, AF_LINK, all else zero)
            &[
                0x14, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ]);
        assert_eq!(&expected[..4], &[0x90, 0x00, 0x05, 0x04]);
        assert_eq!(&expected[12..16], &[0x15, 0x00, 0x00, 0x00]);
        let m = RouteMessage::get_exact(net("198.51.100.7/32"), 3);
        assert_eq!(m.to_bytes().unwrap(), expected);
    }

    #[test]
    fn get_route_to_one_address_has_no_netmask() {
        let expected = cat(&[
            &header(128, RTM_GET, 0, 0, 0x11, 0, 5, 0), // DST|IFP, flags 0
            &[0x10, 0x02, 0, 0, 203, 0, 113, 5, 0, 0, 0, 0, 0, 0, 0, 0], // DST
            // IFP: empty sockaddr_dl (sdl_len 20, AF_LINK, all else zero)
            &[
                0x14, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ]);
        assert_eq!(&expected[..4], &[0x80, 0x00, 0x05, 0x04]);
        let m = RouteMessage::get_to("203.0.113.5".parse().unwrap(), 5);
        assert_eq!(m.to_bytes().unwrap(), expected);
        let v6 = RouteMessage::get_to("2001:db8::5".parse().unwrap(), 5)
            .to_bytes()
            .unwrap();
        assert_eq!(v6.len(), 92 + 28 + 20);
        assert_eq!(&v6[12..16], &[0x11, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn get_default_route_request() {
        let expected = cat(&[
            &header(144, RTM_GET, 0, 0, 0x15, 0, 4, 0),
            &[0x10, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // DST 0.0.0.0
            &[0x10, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // NETMASK 0.0.0.0
            &[
                0x14, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ], // IFP
        ]);
        assert_eq!(
            RouteMessage::get_default(false, 4).to_bytes().unwrap(),
            expected
        );
        let v6 = RouteMessage::get_default(true, 4).to_bytes().unwrap();
        assert_eq!(v6.len(), 92 + 28 + 28 + 20);
        assert_eq!(&v6[92..96], &[0x1c, 0x1e, 0, 0]);
    }

    #[test]
    fn parse_get_reply_naming_utun4() {
        // What xnu sends back for the read-back of 198.51.100.7/32 after the
        // -iface install: flags gain RTF_DONE, rtm_index is the interface,
        // the mask is trimmed (sa_len 8, family/port bytes 0xff from
        // rn_addmask), IFP is utun4's own sockaddr_dl, IFA its address.
        let mut head = header(172, RTM_GET, 9, 0x841, 0x37, 4242, 3, 0);
        head[40..44].copy_from_slice(&[0xdc, 0x05, 0x00, 0x00]); // rmx_mtu 1500
        let reply = cat(&[
            &head,
            &[0x10, 0x02, 0, 0, 198, 51, 100, 7, 0, 0, 0, 0, 0, 0, 0, 0], // DST
            &UTUN4_GATEWAY,                                               // GATEWAY
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],            // NETMASK /32
            // IFP: sdl_len 20, AF_LINK, index 9, IFT_OTHER, nlen 5, "utun4"
            &[
                0x14, 0x12, 0x09, 0x00, 0x01, 0x05, 0x00, 0x00, b'u', b't', b'u', b'n', b'4', 0, 0,
                0, 0, 0, 0, 0,
            ],
            &[0x10, 0x02, 0, 0, 198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], // IFA 198.18.0.1
        ]);
        assert_eq!(reply.len(), 172); // 92 + 16 + 20 + 8 + 20 + 16
        let m = RouteMessage::parse(&reply).unwrap();
        assert_eq!(m.kind, RTM_GET);
        assert_eq!((m.index, m.pid, m.seq, m.errno), (9, 4242, 3, 0));
        assert!(m.answers(4242, 3) && !m.answers(4242, 4));
        assert!(m.is_done());
        assert_eq!(m.flags & RTF_GATEWAY, 0);
        assert_eq!(m.metrics.mtu, 1500);
        assert_eq!(m.interface_name(), Some("utun4"));
        assert_eq!(m.prefix(), Some(net("198.51.100.7/32")));
        assert_eq!(
            m.addrs.ifp(),
            Some(&SockAddr::Link(LinkAddr {
                index: 9,
                if_type: IFT_OTHER,
                name: "utun4".into(),
                lladdr: vec![],
            }))
        );
        assert_eq!(
            m.addrs.ifa(),
            Some(&SockAddr::Inet(Ipv4Addr::new(198, 18, 0, 1)))
        );
    }

    #[test]
    fn parse_reply_with_truncated_netmask() {
        // RTM_GET reply for 198.18.0.0/15: the mask is sa_len 6 (0xff family
        // and port from rn_addmask, then ff fe) and padded to 8 bytes.
        let reply = cat(&[
            &header(156, RTM_GET, 9, 0x841, 0x17, 77, 8, 0), // DST|GATEWAY|NETMASK|IFP
            &[0x10, 0x02, 0, 0, 198, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &UTUN4_GATEWAY,
            &[0x06, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x00, 0x00], // sa_len 6 + 2 pad
            &UTUN4_GATEWAY,
        ]);
        assert_eq!(reply.len(), 156); // 92 + 16 + 20 + 8 + 20
        let m = RouteMessage::parse(&reply).unwrap();
        assert_eq!(
            m.addrs.netmask(),
            Some(&SockAddr::Inet(Ipv4Addr::new(255, 254, 0, 0)))
        );
        assert_eq!(m.prefix(), Some(net("198.18.0.0/15")));
        assert_eq!(m.interface_name(), Some("utun4"));
    }

    #[test]
    fn parse_default_route_reply_with_zero_length_mask() {
        // RTM_GET 0.0.0.0/0 answered through en0 (index 4): the all-zero
        // mask comes back as sa_len 0, which still occupies 4 bytes.
        let reply = cat(&[
            &header(164, RTM_GET, 4, 0x843, 0x37, 77, 4, 0),
            &[0x10, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // DST 0.0.0.0
            &[0x10, 0x02, 0, 0, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0], // GATEWAY
            &[0x00, 0x00, 0x00, 0x00],                               // NETMASK, sa_len 0
            // IFP: sdl_len 20, AF_LINK, index 4, IFT_ETHER, nlen 3, alen 6,
            // "en0", MAC 00:00:5e:00:53:01 (RFC 7042 documentation range)
            &[
                0x14, 0x12, 0x04, 0x00, 0x06, 0x03, 0x06, 0x00, b'e', b'n', b'0', 0x00, 0x00, 0x5e,
                0x00, 0x53, 0x01, 0, 0, 0,
            ],
            &[0x10, 0x02, 0, 0, 192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0], // IFA 192.0.2.10
        ]);
        assert_eq!(reply.len(), 164); // 92 + 16 + 16 + 4 + 20 + 16
        let m = RouteMessage::parse(&reply).unwrap();
        assert_eq!(m.prefix(), Some(net("0.0.0.0/0")));
        assert_eq!(m.gateway_ip(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(m.interface_name(), Some("en0"));
        assert_eq!(m.index, 4);
        let ifp = m.addrs.ifp().and_then(SockAddr::link).unwrap();
        assert_eq!(ifp.lladdr, [0x00, 0x00, 0x5e, 0x00, 0x53, 0x01]);
    }

    #[test]
    fn parse_ipv6_reply_with_trimmed_mask() {
        // RTM_GET reply for 2001:db8:1::/64: the mask is sa_len 16 (8 bytes
        // of 0xff head from rn_addmask + 8 mask bytes), read as AF_INET6
        // because DST is.
        let reply = cat(&[
            &header(176, RTM_GET, 9, 0x841, 0x17, 77, 9, 0),
            &[
                0x1c, 0x1e, 0, 0, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0,
            ],
            &UTUN4_GATEWAY,
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff,
            ],
            &UTUN4_GATEWAY,
        ]);
        assert_eq!(reply.len(), 176); // 92 + 28 + 20 + 16 + 20
        let m = RouteMessage::parse(&reply).unwrap();
        assert_eq!(m.prefix(), Some(net("2001:db8:1::/64")));
    }

    #[test]
    fn exclusion_route_via_ipv6_gateway() {
        let expected = cat(&[
            // msglen 176 = 92 + 3 × 28, RTM_ADD, RTF_UP|RTF_GATEWAY|RTF_STATIC,
            // DST|GATEWAY|NETMASK, seq 7
            &header(176, RTM_ADD, 0, 0x803, 7, 0, 7, 0),
            &[
                0x1c, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, // len 28, AF_INET6, port, flow
                0x20, 0x01, 0x0d, 0xb8, 0x00, 0x02, 0x00, 0x00, // DST 2001:db8:2::
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
                0x00, 0x00, 0x00, 0x00, // sin6_scope_id
            ],
            &[
                0x1c, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, // len 28, AF_INET6, port, flow
                0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, // GATEWAY 2001:db8::1
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
                0x00, 0x00, 0x00, 0x00, // sin6_scope_id
            ],
            &[
                0x1c, 0x1e, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, // len 28, AF_INET6, port, flow
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, // NETMASK /48
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
                0x00, 0x00, 0x00, 0x00, // sin6_scope_id
            ],
        ]);
        let gw = SockAddr::from_ip("2001:db8::1".parse().unwrap());
        let m = RouteMessage::gateway_route(RTM_ADD, net("2001:db8:2::/48"), gw, 7);
        assert_eq!(m.to_bytes().unwrap(), expected);
        assert_eq!(RouteMessage::parse(&expected).unwrap(), m);
    }

    #[test]
    fn parse_monitor_add_with_ipv6_mask_in_radix_form() {
        // A route added by someone else, as every routing socket sees it:
        // outside RTM_GET, xnu forces an IPv6 mask's sa_len to 28 but its
        // family/port/flowinfo bytes are still 0xff from rn_addmask.
        let msg = cat(&[
            &header(168, RTM_ADD, 9, 0x801, 0x7, 501, 12, 0),
            &[
                0x1c, 0x1e, 0, 0, 0, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0, 0, 0, 0, 0,
            ],
            &UTUN4_GATEWAY,
            &[
                0x1c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // sa_len 28, 0xff head
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // /64
                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
                0x00, 0x00, 0x00, 0x00, // scope
            ],
        ]);
        assert_eq!(msg.len(), 168); // 92 + 28 + 20 + 28
        let RoutingMessage::Route(m) = RoutingMessage::parse(&msg).unwrap() else {
            panic!("not a route message");
        };
        assert_eq!((m.kind, m.pid, m.index), (RTM_ADD, 501, 9));
        assert_eq!(m.prefix(), Some(net("2001:db8:1::/64")));
    }

    #[test]
    fn parse_error_reply_carries_errno() {
        // ESRCH (3): the route to delete was already gone.
        let mut msg = RouteMessage::interface_route(RTM_DELETE, net("192.0.2.0/24"), 9, "utun4", 6)
            .to_bytes()
            .unwrap();
        msg[24] = 3;
        assert_eq!(RouteMessage::parse(&msg).unwrap().errno, 3);
    }

    #[test]
    fn parse_ifinfo() {
        // RTM_IFINFO for utun4 coming up: if_msghdr (112 bytes), no sockaddrs.
        let mut msg = vec![0u8; 112];
        msg[..16].copy_from_slice(&[
            0x70, 0x00, // ifm_msglen = 112
            0x05, // ifm_version
            0x0e, // ifm_type = RTM_IFINFO
            0x00, 0x00, 0x00, 0x00, // ifm_addrs = 0
            0x51, 0x80, 0x00, 0x00, // ifm_flags = UP|POINTOPOINT|RUNNING|MULTICAST
            0x09, 0x00, // ifm_index = 9
            0x00, 0x00, // pad
        ]);
        msg[16] = 0x01; // ifi_type = IFT_OTHER
        msg[24..28].copy_from_slice(&[0xdc, 0x05, 0x00, 0x00]); // ifi_mtu = 1500
        msg[36..40].copy_from_slice(&[0x07, 0x00, 0x00, 0x00]); // ifi_ipackets = 7
        let RoutingMessage::Interface(m) = RoutingMessage::parse(&msg).unwrap() else {
            panic!("not an interface message");
        };
        assert_eq!(m.index, 9);
        assert_eq!(m.flags, 0x8051);
        assert_eq!(m.if_type, IFT_OTHER);
        assert_eq!(m.mtu, 1500);
        assert_eq!(m.addrs, RouteAddrs::default());
        // A truncated if_msghdr is an error, not a panic.
        let mut short = msg[..100].to_vec();
        short[0] = 100;
        assert_eq!(
            RoutingMessage::parse(&short),
            Err(RtMsgError::Truncated {
                what: "if_msghdr",
                need: 112,
                len: 100
            })
        );
    }

    #[test]
    fn parse_newaddr() {
        // RTM_NEWADDR: 198.18.0.1 --> 198.18.0.2 on utun4, mask /16 trimmed
        // to sa_len 6; masks read in the family of IFA (no DST here).
        let msg = cat(&[
            &[
                0x3c, 0x00, // ifam_msglen = 60 = 20 + 8 + 16 + 16
                0x05, 0x0c, // version, RTM_NEWADDR
                0xa4, 0x00, 0x00, 0x00, // ifam_addrs = NETMASK|IFA|BRD
                0x00, 0x00, 0x00, 0x00, // ifam_flags
                0x09, 0x00, 0x00, 0x00, // ifam_index 9, pad
                0x00, 0x00, 0x00, 0x00, // ifam_metric
            ],
            &[0x06, 0x00, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00], // NETMASK
            &[0x10, 0x02, 0, 0, 198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], // IFA
            &[0x10, 0x02, 0, 0, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0], // BRD (peer)
        ]);
        let RoutingMessage::Address(m) = RoutingMessage::parse(&msg).unwrap() else {
            panic!("not an address message");
        };
        assert_eq!((m.kind, m.index), (RTM_NEWADDR, 9));
        assert_eq!(
            m.addrs.netmask(),
            Some(&SockAddr::Inet(Ipv4Addr::new(255, 255, 0, 0)))
        );
        assert_eq!(
            m.addrs.get(Rtax::Brd),
            Some(&SockAddr::Inet(Ipv4Addr::new(198, 18, 0, 2)))
        );
    }

    #[test]
    fn messages_splits_a_batch() {
        let a = RouteMessage::get_exact(net("192.0.2.0/24"), 1)
            .to_bytes()
            .unwrap();
        let b = RouteMessage::get_exact(net("203.0.113.0/24"), 2)
            .to_bytes()
            .unwrap();
        let all: Vec<_> = messages(&cat(&[&a, &b])).collect();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(Result::is_ok));
        // A zero msglen must not loop forever.
        assert_eq!(messages(&[0, 0, 5, 1, 0, 0]).count(), 1);
    }

    // sockaddr_in6 of fe80::1 as xnu holds it in zone 4 (en0): the zone in
    // address bytes 2-3, big-endian, and sin6_scope_id 0 (scope6.c
    // `in6_embedded_scope = 1`).
    const FE80_1_ZONE_4_EMBEDDED: [u8; 28] = [
        28, 30, // sin6_len, sin6_family = AF_INET6
        0, 0, 0, 0, 0, 0, // sin6_port, sin6_flowinfo
        0xfe, 0x80, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // sin6_addr
        0, 0, 0, 0, // sin6_scope_id
    ];

    #[test]
    fn link_local_zone_is_taken_out_of_the_address_on_decode() {
        assert_eq!(
            SockAddr::decode(&FE80_1_ZONE_4_EMBEDDED),
            SockAddr::Inet6 {
                addr: "fe80::1".parse().unwrap(),
                scope_id: 4
            }
        );
        // A global address is never un-embedded: bytes 2-3 are its own.
        let mut global = FE80_1_ZONE_4_EMBEDDED;
        global[8..12].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(
            SockAddr::decode(&global),
            SockAddr::Inet6 {
                addr: "2001:db8::1".parse().unwrap(),
                scope_id: 0
            }
        );
    }

    #[test]
    fn link_local_zone_is_embedded_in_the_address_on_write() {
        let sa = SockAddr::scoped("fe80::1".parse().unwrap(), 4);
        let mut out = vec![0; sa.sa_len()];
        sa.write(&mut out);
        assert_eq!(out, FE80_1_ZONE_4_EMBEDDED);
        // Link-local multicast is scoped too; a unicast-based group is not.
        for (group, scoped) in [("ff02::1", true), ("ff01::1", true), ("ff32::1", false)] {
            let addr: Ipv6Addr = group.parse().unwrap();
            let sa = SockAddr::scoped(IpAddr::V6(addr), 4);
            let mut out = vec![0; sa.sa_len()];
            sa.write(&mut out);
            assert_eq!(out[10..12] == [0, 4], scoped, "{group}");
        }
        // A global gateway carries no zone at all.
        let global = SockAddr::scoped("2001:db8::1".parse().unwrap(), 4);
        assert_eq!(global, SockAddr::from_ip("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let good = RouteMessage::get_exact(net("192.0.2.0/24"), 1)
            .to_bytes()
            .unwrap();
        assert!(matches!(
            RouteMessage::parse(&good[..3]),
            Err(RtMsgError::Truncated { .. })
        ));
        assert_eq!(
            RouteMessage::parse(&good[..100]),
            Err(RtMsgError::LengthMismatch {
                msglen: 144,
                len: 100
            })
        );
        let mut bad = good.clone();
        bad[2] = 4;
        assert_eq!(RouteMessage::parse(&bad), Err(RtMsgError::Version(4)));
        let mut bad = good.clone();
        bad[13] = 1; // rtm_addrs bit 0x100
        assert_eq!(
            RouteMessage::parse(&bad),
            Err(RtMsgError::UnknownAddrBits(0x115))
        );
        let mut bad = good.clone();
        bad[92] = 200; // DST sa_len past the end
        assert!(matches!(
            RouteMessage::parse(&bad),
            Err(RtMsgError::SockaddrOverrun {
                slot: "RTA_DST",
                ..
            })
        ));
        let mut bad = good.clone();
        bad[12] = 0x35; // announce IFA, which is not there
        assert_eq!(
            RouteMessage::parse(&bad),
            Err(RtMsgError::MissingSockaddr {
                slot: "RTA_IFA",
                end: 144
            })
        );
        let mut bad = good;
        bad[3] = RTM_IFINFO;
        assert_eq!(
            RouteMessage::parse(&bad),
            Err(RtMsgError::NotRouteMessage(RTM_IFINFO))
        );
    }

    #[test]
    fn emit_rejects_small_buffer_and_long_sockaddr() {
        let m = RouteMessage::get_exact(net("192.0.2.0/24"), 1);
        assert_eq!(
            m.emit(&mut [0u8; 100]),
            Err(RtMsgError::BufferTooSmall {
                need: 144,
                len: 100
            })
        );
        let mut m = RouteMessage::new(RTM_ADD, 1);
        m.addrs.set(
            Rtax::Author,
            Some(SockAddr::Unknown {
                family: 99,
                data: vec![0; 254],
            }),
        );
        assert_eq!(
            m.to_bytes(),
            Err(RtMsgError::SockaddrTooLong {
                slot: "RTA_AUTHOR",
                len: 256
            })
        );
    }

    fn any_sockaddr() -> impl Strategy<Value = SockAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| SockAddr::Inet(o.into())),
            (any::<[u8; 16]>(), any::<u32>()).prop_map(|(a, scope_id)| SockAddr::Inet6 {
                addr: a.into(),
                scope_id
            }),
            (
                any::<u16>(),
                any::<u8>(),
                "[a-z]{0,8}[0-9]{0,3}",
                proptest::collection::vec(any::<u8>(), 0..8)
            )
                .prop_map(|(index, if_type, name, lladdr)| SockAddr::Link(LinkAddr {
                    index,
                    if_type,
                    name,
                    lladdr
                })),
            (
                any::<u8>().prop_filter("modelled family", |f| ![AF_INET, AF_INET6, AF_LINK]
                    .contains(f)),
                proptest::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(family, data)| SockAddr::Unknown { family, data }),
        ]
    }

    /// Masks are read in the family of DST (else IFA), so a generated mask
    /// must be one of that family; an IPv6 mask never carries a scope.
    fn canonical_mask(mask: SockAddr, hint: Option<u8>) -> SockAddr {
        let bytes: [u8; 16] = match &mask {
            SockAddr::Inet(a) => {
                let mut b = [0; 16];
                b[..4].copy_from_slice(&a.octets());
                b
            }
            SockAddr::Inet6 { addr, .. } => addr.octets(),
            _ => [0x5a; 16],
        };
        let family = match hint {
            Some(f @ (AF_INET | AF_INET6)) => f,
            _ => mask.family(),
        };
        match family {
            AF_INET => SockAddr::Inet(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
            AF_INET6 => SockAddr::Inet6 {
                addr: bytes.into(),
                scope_id: 0,
            },
            _ => mask,
        }
    }

    fn any_route_message() -> impl Strategy<Value = RouteMessage> {
        (
            (RTM_ADD..=RTM_RESOLVE, any::<u16>(), any::<u32>()),
            (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()),
            (any::<u32>(), any::<[u32; 14]>()),
            proptest::collection::vec(proptest::option::of(any_sockaddr()), RTAX_MAX),
        )
            .prop_map(
                |((kind, index, flags), (pid, seq, errno, use_count), (inits, rmx), slots)| {
                    let mut addrs = RouteAddrs::default();
                    for (slot, sa) in Rtax::ALL.into_iter().zip(slots) {
                        addrs.set(slot, sa);
                    }
                    let hint = addrs.dst().or(addrs.ifa()).map(SockAddr::family);
                    for slot in [Rtax::Netmask, Rtax::Genmask] {
                        let mask = addrs.get(slot).cloned();
                        addrs.set(slot, mask.map(|m| canonical_mask(m, hint)));
                    }
                    RouteMessage {
                        kind,
                        index,
                        flags,
                        pid,
                        seq,
                        errno,
                        use_count,
                        inits,
                        metrics: RtMetrics::from_words(rmx),
                        addrs,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decode_encode_round_trip(m in any_route_message()) {
            let bytes = m.to_bytes().unwrap();
            prop_assert_eq!(bytes.len() % 4, 0);
            prop_assert_eq!(RouteMessage::parse(&bytes).unwrap(), m);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = RoutingMessage::parse(&bytes);
            let _ = messages(&bytes).count();
        }

        #[test]
        fn parse_never_panics_past_a_valid_prelude(
            kind in 0u8..0x16,
            addrs in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            // A plausible header so parsing reaches the sockaddrs.
            let mut bytes = vec![0u8; 112];
            bytes.extend_from_slice(&body);
            let len = u16::try_from(bytes.len()).unwrap();
            bytes[..2].copy_from_slice(&len.to_le_bytes());
            bytes[2] = RTM_VERSION;
            bytes[3] = kind;
            for at in [4, 12] {
                bytes[at] = addrs;
            }
            let _ = RoutingMessage::parse(&bytes);
            let _ = messages(&bytes).count();
        }
    }

    #[test]
    fn only_changes_by_others_wake_the_route_monitor() {
        let dst: IpNet = "203.0.113.0/24".parse().unwrap();
        let ours = 4242;
        let mut add = RouteMessage::interface_route(RTM_ADD, dst, 9, "utun4", 1);
        let mut get_reply = RouteMessage::get_exact(dst, 2);
        get_reply.pid = 77;
        let route = |m: &RouteMessage| RoutingMessage::parse(&m.to_bytes().unwrap()).unwrap();
        add.pid = 77;
        assert!(
            route(&add).is_network_change(ours),
            "someone else's RTM_ADD"
        );
        add.pid = ours;
        assert!(!route(&add).is_network_change(ours), "our own RTM_ADD");
        assert!(
            !route(&get_reply).is_network_change(ours),
            "an RTM_GET answer, anyone's"
        );
        let mut delete = RouteMessage::interface_route(RTM_DELETE, dst, 9, "utun4", 3);
        delete.pid = 77;
        assert!(route(&delete).is_network_change(ours));
    }
}
