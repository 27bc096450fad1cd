//! An in-process model of the xnu networking the macOS platform talks to:
//! the `PF_ROUTE` socket (bsd/net/rtsock.c), the routing table
//! (bsd/net/route.c, bsd/net/radix.c), interfaces and their addresses
//! (bsd/net/if.c, bsd/netinet/in.c) and utun (bsd/net/if_utun.c,
//! bsd/kern/kern_control.c), as of xnu-11417.101.15.
//!
//! It implements the helper's `Darwin` seam, so `MacosPlatform` runs on it
//! unchanged. It never uses the helper's codec: every message the helper
//! writes is decoded here by this file's own reading of the xnu headers
//! (offsets below), and every answer is encoded the same way, so a wrong
//! byte on either side fails a test. Each rule names its source.
//!
//! Layouts (bsd/net/route.h, bsd/net/if.h, bsd/sys/socket.h, netinet/in.h,
//! netinet6/in6.h, net/if_dl.h; all little-endian on both Mac CPUs):
//! - `rt_msghdr` (92 bytes): msglen u16 @0, version u8 @2 (RTM_VERSION 5),
//!   type u8 @3, index u16 @4, flags i32 @8, addrs i32 @12, pid i32 @16,
//!   seq i32 @20, errno i32 @24, use i32 @28, inits u32 @32, rmx @36 (56).
//! - `if_msghdr` (112): msglen, version, type, addrs i32 @4, flags i32 @8,
//!   index u16 @12, `if_data` @16 (96 bytes; mtu u32 @24).
//! - `ifa_msghdr` (20): msglen, version, type, addrs @4, flags @8,
//!   index u16 @12, metric i32 @16.
//! - `sockaddr_in` (16): len @0, family 2 @1, port @2, addr @4.
//! - `sockaddr_in6` (28): len, family 30, port @2, flowinfo @4, addr @8,
//!   scope_id @24.
//! - `sockaddr_dl` (20+): len, family 18, index u16 @2, type @4, nlen @5,
//!   alen @6, slen @7, data @8 (name, then link-layer address).
#![allow(dead_code)]
// each test binary uses a different part of the model
// The prose cites xnu by its C names and paths on every line; backticks on
// each would bury what they say.
#![allow(clippy::doc_markdown)]
#![allow(clippy::unwrap_used)] // a poisoned model lock is a failed test already

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use ipnet::IpNet;
pub(crate) mod pf;

use ztun_helper::device::{Batch, NullDevice, PacketDevice};
use ztun_helper::platform::macos::sys::{Darwin, RouteSocket};
use ztun_helper::platform::DeviceConfig;
use ztun_proto::InterfaceAddress;

/// The helper's pid as this kernel reports it in `rtm_pid`.
pub(crate) const HELPER_PID: i32 = 4242;
/// Someone else on the machine: an administrator running route(8), configd.
pub(crate) const OTHER_PID: i32 = 77;

// bsd/net/route.h
const RTM_VERSION: u8 = 5;
const RTM_ADD: u8 = 0x1;
const RTM_DELETE: u8 = 0x2;
const RTM_GET: u8 = 0x4;
const RTM_NEWADDR: u8 = 0xc;
const RTM_DELADDR: u8 = 0xd;
const RTM_IFINFO: u8 = 0xe;
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
const RTF_HOST: u32 = 0x4;
const RTF_DONE: u32 = 0x40;
const RTF_STATIC: u32 = 0x800;
const RTF_PRCLONING: u32 = 0x10000;
const RTA_DST: u32 = 0x1;
const RTA_GATEWAY: u32 = 0x2;
const RTA_NETMASK: u32 = 0x4;
const RTA_IFP: u32 = 0x10;
const RTA_IFA: u32 = 0x20;
const RTA_BRD: u32 = 0x80;
const RTAX_MAX: usize = 8;
const RT_MSGHDR: usize = 92;
const IF_MSGHDR: usize = 112;
const IFA_MSGHDR: usize = 20;
// bsd/sys/socket.h
const AF_INET: u8 = 2;
const AF_LINK: u8 = 18;
const AF_INET6: u8 = 30;
// bsd/sys/errno.h
const ESRCH: i32 = 3;
const EBUSY: i32 = 16;
const EEXIST: i32 = 17;
const EINVAL: i32 = 22;
const ENETUNREACH: i32 = 51;
const EPROTONOSUPPORT: i32 = 43;
const ENXIO: i32 = 6;
const EMSGSIZE: i32 = 40;
// bsd/net/if.h
const IFF_UP: u32 = 0x1;
const IFF_POINTOPOINT: u32 = 0x10;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_RUNNING: u32 = 0x40;
// bsd/net/if_types.h
const IFT_ETHER: u8 = 0x6;
const IFT_LOOP: u8 = 0x18;
const IFT_OTHER: u8 = 0x1;
// bsd/net/if_utun.h, bsd/sys/kern_control.h
const UTUN_OPT_MAX_PENDING_PACKETS: i32 = 16;

/// rtsock.c `ROUNDUP32`: a sockaddr takes its length rounded up to 4
/// bytes, and a zero-length one takes 4.
fn roundup32(len: usize) -> usize {
    if len > 0 {
        1 + ((len - 1) | 3)
    } else {
        4
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One interface address. IPv6 link-local addresses are kept as xnu keeps
/// them, with the zone embedded in bytes 2-3 (netinet6/scope6.c
/// `in6_embedded_scope = 1`).
#[derive(Debug, Clone)]
struct Address {
    net: IpNet,
    peer: Option<IpAddr>,
}

#[derive(Debug, Clone)]
struct Interface {
    index: u16,
    name: String,
    if_type: u8,
    flags: u32,
    mtu: u32,
    lladdr: Vec<u8>,
    addresses: Vec<Address>,
    /// utun: the kern_control unit (`sc_unit`) its socket is connected to.
    utun_unit: Option<u32>,
    /// utun: what `UTUN_OPT_MAX_PENDING_PACKETS` was set to (if_utun.c
    /// `utun_ctl_bind` starts every unit at 1).
    max_pending: u32,
}

impl Interface {
    /// The interface's own link-level address, `if_lladdr` (if.c
    /// `if_attach`: a `sockaddr_dl` with index, type, name and address).
    fn sockaddr_dl(&self) -> Vec<u8> {
        let mut sa = vec![0_u8; 8];
        sa[1] = AF_LINK;
        sa[2..4].copy_from_slice(&self.index.to_le_bytes());
        sa[4] = self.if_type;
        sa[5] = u8::try_from(self.name.len()).unwrap();
        sa[6] = u8::try_from(self.lladdr.len()).unwrap();
        sa.extend_from_slice(self.name.as_bytes());
        sa.extend_from_slice(&self.lladdr);
        sa.resize(sa.len().max(20), 0);
        sa[0] = u8::try_from(sa.len()).unwrap();
        sa
    }

    fn first_address(&self, v6: bool) -> Option<&Address> {
        self.addresses.iter().find(|a| a.net.addr().is_ipv6() == v6)
    }
}

/// One routing-table entry: radix key and mask (no mask = host route),
/// the gateway sockaddr as given (route.c `rt_setgate` copies it), flags
/// and the interface it resolved to (`rt_ifp`).
#[derive(Debug, Clone)]
struct Route {
    dst: IpAddr,
    /// `None`: a host route (route.c `rtrequest_common_locked`: "If we are
    /// adding a host route then we don't want to put a netmask in the tree").
    prefix: Option<u8>,
    gateway: Vec<u8>,
    flags: u32,
    ifp: u16,
}

impl Route {
    fn contains(&self, ip: IpAddr) -> bool {
        match self.prefix {
            None => self.dst == ip,
            Some(p) => IpNet::new(self.dst, p).is_ok_and(|n| n.contains(&ip)),
        }
    }

    /// Specificity in the radix tree: a longer mask first, and among equal
    /// keys a host route before a full-mask net route (radix.c keeps a
    /// key's duplicates most specific first).
    fn specificity(&self) -> u16 {
        match self.prefix {
            None => 1000,
            Some(p) => u16::from(p),
        }
    }

    fn gateway_ip(&self) -> Option<IpAddr> {
        (self.flags & RTF_GATEWAY != 0)
            .then(|| decode_ip(&self.gateway))
            .flatten()
    }
}

/// A decoded sockaddr (this model's own reading of the headers).
fn decode_ip(sa: &[u8]) -> Option<IpAddr> {
    match *sa.get(1)? {
        AF_INET => {
            let o = sa.get(4..8)?;
            Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])))
        }
        AF_INET6 => {
            let mut o = [0_u8; 16];
            o.copy_from_slice(sa.get(8..24)?);
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

fn sockaddr_ip(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => {
            let mut sa = vec![0_u8; 16];
            sa[0] = 16;
            sa[1] = AF_INET;
            sa[4..8].copy_from_slice(&a.octets());
            sa
        }
        IpAddr::V6(a) => {
            let mut sa = vec![0_u8; 28];
            sa[0] = 28;
            sa[1] = AF_INET6;
            sa[8..24].copy_from_slice(&a.octets());
            sa
        }
    }
}

/// A netmask as rt_msg2 reports it: rtm_scrub → route.c `sa_trim` cuts
/// trailing zero bytes, and an all-zero mask has length 0.
fn sockaddr_mask(v6: bool, prefix: u8) -> Vec<u8> {
    let mask = match IpNet::new(
        if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        },
        prefix,
    ) {
        Ok(n) => n.netmask(),
        Err(_) => return vec![0; 0],
    };
    let mut sa = sockaddr_ip(mask);
    let skip = if v6 { 8 } else { 4 };
    let mut len = sa.len();
    while len > skip && sa[len - 1] == 0 {
        len -= 1;
    }
    if len == skip {
        return Vec::new();
    }
    sa.truncate(len);
    sa[0] = u8::try_from(len).unwrap();
    sa
}

/// Reads a mask in `v6`'s family (rtm_scrub uses the DST's family: the
/// mask's own family byte may be anything) as a prefix length; `None` for
/// a non-contiguous mask, which this model does not route.
fn mask_prefix(sa: &[u8], v6: bool) -> Option<u8> {
    let (skip, width) = if v6 { (8, 16) } else { (4, 4) };
    let mut bytes = vec![0_u8; width];
    if let Some(tail) = sa.get(skip..) {
        let n = tail.len().min(width);
        bytes[..n].copy_from_slice(&tail[..n]);
    }
    let bits: u128 = bytes.iter().fold(0, |acc, b| (acc << 8) | u128::from(*b));
    let bits = bits << (128 - 8 * width);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then(|| u8::try_from(ones).unwrap())
}

fn network(ip: IpAddr, prefix: Option<u8>) -> IpAddr {
    match prefix {
        Some(p) => IpNet::new(ip, p).map_or(ip, |n| n.network()),
        None => ip,
    }
}

/// A request as route_output sees it after rt_xaddrs.
struct Request {
    kind: u8,
    flags: u32,
    addrs: u32,
    seq: i32,
    sa: [Option<Vec<u8>>; RTAX_MAX],
}

/// rtsock.c `route_output` up to the switch: the length and version checks,
/// then `rt_xaddrs`. `Err((errno, broadcast))`: whether the kernel still
/// copies the message to listeners (only once `rtm_buf` exists).
fn decode_request(bytes: &[u8]) -> Result<Request, (i32, bool)> {
    // "if (len < sizeof(*RTM) || len != ...->rtm_msglen) senderr(EINVAL)"
    if bytes.len() < RT_MSGHDR || bytes.len() != usize::from(u16_at(bytes, 0)) {
        return Err((EINVAL, false));
    }
    // "if (RTM->rtm_version != RTM_VERSION) senderr(EPROTONOSUPPORT)"
    if bytes[2] != RTM_VERSION {
        return Err((EPROTONOSUPPORT, true));
    }
    let addrs = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
    let mut sa: [Option<Vec<u8>>; RTAX_MAX] = Default::default();
    let mut cp = RT_MSGHDR;
    // rt_xaddrs: one sockaddr per set bit, in RTAX order, each advancing by
    // ROUNDUP32(sa_len); a truncated one is EINVAL; a zero-length one ends
    // the list ("should be EINVAL but for compat").
    for (i, slot) in sa.iter_mut().enumerate() {
        if addrs & (1 << i) == 0 || cp >= bytes.len() {
            continue;
        }
        let len = usize::from(bytes[cp]);
        if cp + len > bytes.len() || len > 128 {
            return Err((EINVAL, true));
        }
        if len == 0 {
            *slot = Some(vec![0; 2]);
            break;
        }
        if len < 2 {
            return Err((EINVAL, true));
        }
        *slot = Some(bytes[cp..cp + len].to_vec());
        cp += roundup32(len);
    }
    Ok(Request {
        kind: bytes[3],
        flags: u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        addrs,
        seq: i32_at(bytes, 20),
        sa,
    })
}

/// The `rt_msghdr` of a kernel message, with its sockaddrs after it
/// (rt_msg2: each copied, zero-padded to ROUNDUP32).
fn rt_message(
    kind: u8,
    index: u16,
    flags: u32,
    pid: i32,
    seq: i32,
    errno: i32,
    sa: &[Option<Vec<u8>>; RTAX_MAX],
) -> Vec<u8> {
    let mut m = vec![0_u8; RT_MSGHDR];
    m[2] = RTM_VERSION;
    m[3] = kind;
    m[4..6].copy_from_slice(&index.to_le_bytes());
    m[8..12].copy_from_slice(&flags.to_le_bytes());
    m[16..20].copy_from_slice(&pid.to_le_bytes());
    m[20..24].copy_from_slice(&seq.to_le_bytes());
    m[24..28].copy_from_slice(&errno.to_le_bytes());
    let addrs = append_sockaddrs(&mut m, sa);
    m[12..16].copy_from_slice(&addrs.to_le_bytes());
    m
}

/// rt_msg2's body: each present sockaddr in RTAX order, zero-padded to
/// ROUNDUP32; sets the message length (the u16 at 0) and returns the
/// `*_addrs` bits.
fn append_sockaddrs(m: &mut Vec<u8>, sa: &[Option<Vec<u8>>; RTAX_MAX]) -> u32 {
    let mut addrs = 0_u32;
    for (i, s) in sa.iter().enumerate() {
        if let Some(s) = s {
            addrs |= 1 << i;
            let start = m.len();
            m.extend_from_slice(s);
            m.resize(start + roundup32(s.len()), 0);
        }
    }
    let len = u16::try_from(m.len()).unwrap();
    m[0..2].copy_from_slice(&len.to_le_bytes());
    addrs
}

/// rtsock.c `route_output` "flush:": the request copied back to listeners
/// with `rtm_pid` set, and `RTF_DONE` added to its flags on success or
/// `rtm_errno` set on failure.
fn echo(request: &[u8], pid: i32, outcome: Result<u32, i32>) -> Vec<u8> {
    let mut m = request.to_vec();
    m[16..20].copy_from_slice(&pid.to_le_bytes());
    match outcome {
        Ok(flags) => m[8..12].copy_from_slice(&(flags | RTF_DONE).to_le_bytes()),
        Err(errno) => m[24..28].copy_from_slice(&errno.to_le_bytes()),
    }
    m
}

/// One open routing socket's receive queue.
#[derive(Debug, Default)]
struct Queue {
    messages: Mutex<VecDeque<Vec<u8>>>,
    ready: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Kernel {
    interfaces: Vec<Interface>,
    routes: Vec<Route>,
    /// if.c `if_next_index`: indices only grow.
    last_index: u16,
    sockets: Vec<Weak<Queue>>,
    /// Every message ever sent to listeners, for tests to read.
    log: Vec<Vec<u8>>,
    /// `IP_BOUND_IF` / `IPV6_BOUND_IF` set on relay sockets: (level, index).
    bound: Vec<(i32, u32)>,
    pf: pf::Pf,
}

impl Kernel {
    /// raw_input of rtsock.c: a copy to every open routing socket, the
    /// sender's own included (`SO_USELOOPBACK` is on by default,
    /// rtsock.c `rts_attach`).
    fn broadcast(&mut self, message: Vec<u8>) {
        self.sockets.retain(|w| w.strong_count() > 0);
        for q in self.sockets.iter().filter_map(Weak::upgrade) {
            q.messages.lock().unwrap().push_back(message.clone());
            q.ready.notify_one();
        }
        self.log.push(message);
    }

    fn interface(&self, index: u16) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.index == index)
    }

    fn by_name(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// radix.c `rn_match`: the most specific route containing `ip`.
    fn best_match(&self, ip: IpAddr) -> Option<usize> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.dst.is_ipv6() == ip.is_ipv6() && r.contains(ip))
            .max_by_key(|(_, r)| r.specificity())
            .map(|(i, _)| i)
    }

    /// rt_lookup with a mask (radix.c `rn_lookup`): the entry with exactly
    /// this key and mask.
    fn exact(&self, dst: IpAddr, prefix: Option<u8>) -> Option<usize> {
        let key = network(dst, prefix);
        self.routes
            .iter()
            .position(|r| r.dst == key && r.prefix == prefix)
    }

    /// route.c `ifa_ifwithroute_common_locked`: which interface a new route
    /// goes out of.
    fn resolve_interface(&self, flags: u32, gateway: &[u8]) -> Option<u16> {
        if flags & RTF_GATEWAY == 0 {
            // if.c `ifa_ifwithaddr_common`: "AF_LINK addresses can be looked
            // up directly by their index number".
            if gateway.get(1) == Some(&AF_LINK) {
                let index = u16_at(gateway, 2);
                return self.interface(index).map(|i| i.index);
            }
            // An interface route named by one of the interface's addresses.
            let ip = decode_ip(gateway)?;
            return self
                .interfaces
                .iter()
                .find(|i| i.addresses.iter().any(|a| a.net.addr() == ip))
                .map(|i| i.index);
        }
        let ip = decode_ip(gateway)?;
        // ifa_ifwithdstaddr: a point-to-point peer; then ifa_ifwithnet: an
        // address whose subnet holds the gateway.
        if let Some(i) = self
            .interfaces
            .iter()
            .find(|i| i.addresses.iter().any(|a| a.peer == Some(ip)))
        {
            return Some(i.index);
        }
        if let Some(i) = self.interfaces.iter().find(|i| {
            i.addresses.iter().any(|a| {
                a.peer.is_none()
                    && a.net.prefix_len() < a.net.max_prefix_len()
                    && a.net.contains(&ip)
            })
        }) {
            return Some(i.index);
        }
        // Else the route to the gateway, if it is not itself through a
        // gateway (`rtalloc1_scoped_locked(gw)` and its RTF_GATEWAY check).
        let r = &self.routes[self.best_match(ip)?];
        (r.flags & RTF_GATEWAY == 0).then_some(r.ifp)
    }

    /// rtsock.c `route_output` "report:": the answer to an RTM_GET, and to
    /// a successful RTM_DELETE, built from the route itself.
    fn report(&self, kind: u8, r: &Route, want_ifp: bool, pid: i32, seq: i32) -> Vec<u8> {
        let v6 = r.dst.is_ipv6();
        let mut sa: [Option<Vec<u8>>; RTAX_MAX] = Default::default();
        sa[0] = Some(sockaddr_ip(r.dst));
        sa[1] = Some(r.gateway.clone());
        sa[2] = r.prefix.map(|p| sockaddr_mask(v6, p));
        let ifp = self.interface(r.ifp);
        if want_ifp {
            if let Some(ifp) = ifp {
                sa[4] = Some(ifp.sockaddr_dl());
                // rt_ifa: the interface's address in the route's family
                // (route.c `ifaof_ifpforaddr`), else its link address.
                sa[5] = Some(
                    ifp.first_address(v6)
                        .map_or_else(|| ifp.sockaddr_dl(), |a| sockaddr_ip(a.net.addr())),
                );
            }
        }
        rt_message(kind, r.ifp, r.flags | RTF_DONE, pid, seq, 0, &sa)
    }

    /// Everything `route_output` does with one message from `pid`:
    /// the errno `write(2)` returns, after copying the outcome to listeners.
    fn route_output(&mut self, pid: i32, bytes: &[u8]) -> Result<(), i32> {
        let request = match decode_request(bytes) {
            Ok(r) => r,
            Err((errno, broadcast)) => {
                if broadcast {
                    self.broadcast(echo(bytes, pid, Err(errno)));
                }
                return Err(errno);
            }
        };
        let outcome = self.apply(pid, &request);
        let message = match &outcome {
            Ok(Some(report)) => report.clone(),
            Ok(None) => echo(bytes, pid, Ok(request.flags)),
            Err(errno) => echo(bytes, pid, Err(*errno)),
        };
        self.broadcast(message);
        outcome.map(|_| ())
    }

    fn apply(&mut self, pid: i32, q: &Request) -> Result<Option<Vec<u8>>, i32> {
        // "if (info.rti_info[RTAX_DST] == NULL || ...) senderr(EINVAL)"
        let dst_sa = q.sa[0].as_ref().ok_or(EINVAL)?;
        let dst = decode_ip(dst_sa).ok_or(EINVAL)?;
        let v6 = dst.is_ipv6();
        let prefix = match &q.sa[2] {
            // route.c: "If we are adding a host route then we don't want to
            // put a netmask in the tree"; a lookup without a mask is a
            // longest match.
            Some(_) if q.flags & RTF_HOST != 0 && q.kind != RTM_GET => None,
            Some(mask) => Some(mask_prefix(mask, v6).ok_or(EINVAL)?),
            None => None,
        };
        let want_ifp = q.addrs & (RTA_IFP | RTA_IFA) != 0;
        match q.kind {
            RTM_ADD => {
                // "if (info.rti_info[RTAX_GATEWAY] == NULL) senderr(EINVAL)"
                let gateway = q.sa[1].clone().ok_or(EINVAL)?;
                let prefix = if q.flags & RTF_HOST != 0 {
                    None
                } else {
                    prefix.or(Some(if v6 { 128 } else { 32 }))
                };
                // radix.c `rn_addroute`: the same key and mask twice fails,
                // which route.c turns into EEXIST.
                if self.exact(dst, prefix).is_some() {
                    return Err(EEXIST);
                }
                let ifp = self
                    .resolve_interface(q.flags, &gateway)
                    .ok_or(ENETUNREACH)?;
                self.routes.push(Route {
                    dst: network(dst, prefix),
                    prefix,
                    gateway,
                    flags: (q.flags | RTF_UP) & !RTF_DONE,
                    ifp,
                });
                Ok(None)
            }
            RTM_DELETE => {
                // route.c `rtrequest_common_locked` RTM_DELETE:
                // "rnh_deladdr(dst, netmask, rnh)" — key and mask only, the
                // gateway is not compared; nothing there is ESRCH.
                let prefix = if q.flags & RTF_HOST != 0 {
                    None
                } else {
                    prefix.or(Some(if v6 { 128 } else { 32 }))
                };
                let i = self.exact(dst, prefix).ok_or(ESRCH)?;
                let r = self.routes.remove(i);
                Ok(Some(self.report(RTM_DELETE, &r, want_ifp, pid, q.seq)))
            }
            RTM_GET => {
                // rt_lookup(TRUE, dst, netmask): with a mask an exact match,
                // without one the longest; none is ESRCH.
                let i = match &q.sa[2] {
                    Some(_) => self.exact(dst, prefix),
                    None => self.best_match(dst),
                }
                .ok_or(ESRCH)?;
                let r = self.routes[i].clone();
                Ok(Some(self.report(RTM_GET, &r, want_ifp, pid, q.seq)))
            }
            // "default: senderr(EOPNOTSUPP)"
            _ => Err(102),
        }
    }

    /// if.c `if_attach` + in.c `in_ifinit`: a new interface, announced with
    /// RTM_IFINFO, each address with RTM_NEWADDR, and each address's route
    /// with RTM_ADD (pid 0: the kernel's own).
    fn attach(&mut self, mut ifp: Interface) -> u16 {
        self.last_index += 1;
        ifp.index = self.last_index;
        let index = ifp.index;
        let addresses = std::mem::take(&mut ifp.addresses);
        self.broadcast(if_message(RTM_IFINFO, &ifp));
        self.interfaces.push(ifp);
        for a in addresses {
            self.add_address(index, &a);
        }
        index
    }

    /// in.c `in_ifinit` / in6.c `in6_update_ifa`: the address, then its
    /// route: a point-to-point address routes its peer as a host route
    /// (rtinit with RTF_HOST), any other its prefix (loopback: the address
    /// itself); the gateway is the interface's own address.
    fn add_address(&mut self, index: u16, a: &Address) {
        let Some(i) = self.interfaces.iter().position(|i| i.index == index) else {
            return;
        };
        self.interfaces[i].addresses.push(a.clone());
        let ifp = self.interfaces[i].clone();
        self.broadcast(ifa_message(RTM_NEWADDR, &ifp, a));
        let loopback = ifp.flags & IFF_LOOPBACK != 0;
        let (dst, prefix) = match a.peer {
            Some(peer) => (peer, None),
            None if loopback => (a.net.addr(), None),
            None => (a.net.network(), Some(a.net.prefix_len())),
        };
        let route = Route {
            dst,
            prefix,
            gateway: sockaddr_ip(a.net.addr()),
            flags: RTF_UP
                | if prefix.is_none() {
                    RTF_HOST
                } else {
                    RTF_PRCLONING
                },
            ifp: index,
        };
        self.kernel_route_change(RTM_ADD, route);
    }

    /// A route change the kernel makes itself (pid 0) or another process
    /// makes through its own socket.
    fn kernel_route_change(&mut self, kind: u8, route: Route) {
        let message = self.report(kind, &route, false, 0, 0);
        if kind == RTM_ADD {
            self.routes.push(route);
        }
        self.broadcast(message);
    }

    /// if_utun.c `utun_ctl_disconnect` → `ifnet_detach` and
    /// `utun_cleanup_family`: the addresses go (RTM_DELADDR), and
    /// if.c `if_rtdel` deletes every route whose `rt_ifp` is the interface
    /// (RTM_DELETE each); then the interface itself (RTM_IFINFO).
    fn detach(&mut self, index: u16) {
        let Some(i) = self.interfaces.iter().position(|i| i.index == index) else {
            return;
        };
        let ifp = self.interfaces.remove(i);
        for a in &ifp.addresses {
            self.broadcast(ifa_message(RTM_DELADDR, &ifp, a));
        }
        let (gone, kept): (Vec<Route>, Vec<Route>) = std::mem::take(&mut self.routes)
            .into_iter()
            .partition(|r| r.ifp == index);
        self.routes = kept;
        for r in gone {
            let message = self.report(RTM_DELETE, &r, false, 0, 0);
            self.broadcast(message);
        }
        let mut down = ifp;
        down.flags &= !(IFF_UP | IFF_RUNNING);
        self.broadcast(if_message(RTM_IFINFO, &down));
    }
}

/// rt_ifmsg: an `if_msghdr` with no sockaddrs.
fn if_message(kind: u8, ifp: &Interface) -> Vec<u8> {
    let mut m = vec![0_u8; IF_MSGHDR];
    m[0..2].copy_from_slice(&u16::try_from(IF_MSGHDR).unwrap().to_le_bytes());
    m[2] = RTM_VERSION;
    m[3] = kind;
    m[8..12].copy_from_slice(&ifp.flags.to_le_bytes());
    m[12..14].copy_from_slice(&ifp.index.to_le_bytes());
    m[16] = ifp.if_type;
    m[24..28].copy_from_slice(&ifp.mtu.to_le_bytes());
    m
}

/// rt_newaddrmsg: an `ifa_msghdr` with the interface (RTA_IFP), the
/// address (RTA_IFA), its mask and its peer (RTA_BRD).
fn ifa_message(kind: u8, ifp: &Interface, a: &Address) -> Vec<u8> {
    let v6 = a.net.addr().is_ipv6();
    let mut sa: [Option<Vec<u8>>; RTAX_MAX] = Default::default();
    sa[2] = Some(sockaddr_mask(v6, a.net.prefix_len()));
    sa[4] = Some(ifp.sockaddr_dl());
    sa[5] = Some(sockaddr_ip(a.net.addr()));
    sa[7] = a.peer.map(sockaddr_ip);
    let mut m = vec![0_u8; IFA_MSGHDR];
    m[2] = RTM_VERSION;
    m[3] = kind;
    let addrs = append_sockaddrs(&mut m, &sa);
    m[4..8].copy_from_slice(&addrs.to_le_bytes());
    m[12..14].copy_from_slice(&ifp.index.to_le_bytes());
    m
}

/// A route as a person reads `netstat -rn`: destination, interface and
/// gateway (when it is an IP), e.g. `203.0.113.0/24 utun1` or
/// `0.0.0.0/0 en0 via 198.51.100.1`. Host routes show as /32 or /128.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TableRow(pub(crate) String);

/// The model of one Mac: lo0, en0 on 198.51.100.0/24 with a default route
/// and an IPv6 default through a link-local router, and utun0 (held by a
/// system process, as on every Mac). Cloning shares the machine.
#[derive(Debug, Clone)]
pub(crate) struct Xnu(Arc<Mutex<Kernel>>);

/// en0's IPv4 router and its IPv6 one (link-local, zone en0).
pub(crate) const ROUTER_V4: &str = "198.51.100.1";
pub(crate) const ROUTER_V6: &str = "fe80::1";
/// Another router on en0, for a network change.
pub(crate) const OTHER_ROUTER_V4: &str = "198.51.100.254";

impl Default for Xnu {
    fn default() -> Self {
        Self::new()
    }
}

impl Xnu {
    pub(crate) fn new() -> Self {
        let mut k = Kernel::default();
        let lo0 = k.attach(Interface {
            index: 0,
            name: "lo0".into(),
            if_type: IFT_LOOP,
            flags: IFF_UP | IFF_LOOPBACK | IFF_RUNNING,
            mtu: 16384,
            lladdr: Vec::new(),
            addresses: vec![Address {
                net: "127.0.0.1/8".parse().unwrap(),
                peer: None,
            }],
            utun_unit: None,
            max_pending: 0,
        });
        // 127/8 itself, as `netstat -rn` shows on a Mac (`127 127.0.0.1 UCS lo0`).
        k.routes.push(Route {
            dst: "127.0.0.0".parse().unwrap(),
            prefix: Some(8),
            gateway: sockaddr_ip("127.0.0.1".parse().unwrap()),
            flags: RTF_UP | RTF_STATIC | RTF_PRCLONING,
            ifp: lo0,
        });
        let en0 = k.attach(Interface {
            index: 0,
            name: "en0".into(),
            if_type: IFT_ETHER,
            flags: IFF_UP | IFF_RUNNING | 0x800 | 0x8000, // SIMPLEX | MULTICAST
            mtu: 1500,
            lladdr: vec![0x02, 0, 0x5e, 0, 0x53, 0x01],
            addresses: Vec::new(),
            utun_unit: None,
            max_pending: 0,
        });
        k.add_address(
            en0,
            &Address {
                net: "198.51.100.2/24".parse().unwrap(),
                peer: None,
            },
        );
        k.add_address(
            en0,
            &Address {
                net: IpNet::new(IpAddr::V6(embed(ROUTER_V6_HOST, en0)), 64).unwrap(),
                peer: None,
            },
        );
        k.add_address(
            en0,
            &Address {
                net: "2001:db8:5::2/64".parse().unwrap(),
                peer: None,
            },
        );
        k.routes.push(Route {
            dst: "0.0.0.0".parse().unwrap(),
            prefix: Some(0),
            gateway: sockaddr_ip(ROUTER_V4.parse().unwrap()),
            flags: RTF_UP | RTF_GATEWAY | RTF_STATIC | RTF_PRCLONING,
            ifp: en0,
        });
        k.routes.push(Route {
            dst: "::".parse().unwrap(),
            prefix: Some(0),
            gateway: sockaddr_ip(IpAddr::V6(embed(ROUTER_V6.parse().unwrap(), en0))),
            flags: RTF_UP | RTF_GATEWAY | RTF_STATIC | RTF_PRCLONING,
            ifp: en0,
        });
        let machine = Self(Arc::new(Mutex::new(k)));
        // utun0 belongs to a system daemon on every Mac: ours must not
        // assume it.
        let system_utun = machine.attach_utun(None, Vec::new(), 1500).unwrap();
        std::mem::forget(system_utun);
        machine
    }

    fn kernel(&self) -> MutexGuard<'_, Kernel> {
        self.0.lock().unwrap()
    }

    /// kern_control.c `ctl_setup_kctl` (l.486: sc_unit 0 takes the lowest
    /// unused unit; a taken one is EBUSY) and if_utun.c `utun_ctl_setup`
    /// (the interface is `utun<unit-1>`, l.1674).
    fn attach_utun(
        &self,
        unit: Option<u32>,
        addresses: Vec<Address>,
        mtu: u32,
    ) -> io::Result<XnuUtun> {
        let mut k = self.kernel();
        let taken: Vec<u32> = k.interfaces.iter().filter_map(|i| i.utun_unit).collect();
        let unit = match unit {
            Some(u) if taken.contains(&u) => return Err(io::Error::from_raw_os_error(EBUSY)),
            Some(u) => u,
            // kern_control.c l.486: "Find an unused ID" from 1 up.
            None => (1..=u32::MAX).find(|u| !taken.contains(u)).unwrap(),
        };
        let index = k.attach(Interface {
            index: 0,
            name: format!("utun{}", unit - 1),
            if_type: IFT_OTHER,
            flags: IFF_UP | IFF_POINTOPOINT | IFF_RUNNING | 0x8000,
            mtu,
            lladdr: Vec::new(),
            addresses: Vec::new(),
            utun_unit: Some(unit),
            max_pending: 1,
        });
        for a in addresses {
            k.add_address(index, &a);
        }
        let name = k.interface(index).unwrap().name.clone();
        Ok(XnuUtun {
            machine: self.clone(),
            index,
            name,
            device: NullDevice,
        })
    }

    /// The routing table as `netstat -rn` would print it, sorted.
    pub(crate) fn table(&self) -> Vec<TableRow> {
        let k = self.kernel();
        let mut rows: Vec<TableRow> = k
            .routes
            .iter()
            .map(|r| {
                let dst = unembed(r.dst);
                let prefix = r.prefix.unwrap_or(if dst.is_ipv6() { 128 } else { 32 });
                let ifname = k.interface(r.ifp).map_or("?", |i| i.name.as_str());
                TableRow(match r.gateway_ip() {
                    Some(gw) => format!("{dst}/{prefix} {ifname} via {}", unembed(gw)),
                    None => format!("{dst}/{prefix} {ifname}"),
                })
            })
            .collect();
        rows.sort();
        rows
    }

    /// Names of every interface that exists.
    pub(crate) fn links(&self) -> Vec<String> {
        self.kernel()
            .interfaces
            .iter()
            .map(|i| i.name.clone())
            .collect()
    }

    /// Names of the utun interfaces that exist.
    pub(crate) fn utuns(&self) -> Vec<String> {
        self.kernel()
            .interfaces
            .iter()
            .filter(|i| i.utun_unit.is_some())
            .map(|i| i.name.clone())
            .collect()
    }

    /// What `UTUN_OPT_MAX_PENDING_PACKETS` is on `utun`.
    pub(crate) fn max_pending(&self, utun: &str) -> Option<u32> {
        self.kernel().by_name(utun).map(|i| i.max_pending)
    }

    /// The addresses on `name` (IPv6 zones un-embedded).
    pub(crate) fn addresses(&self, name: &str) -> Vec<(IpNet, Option<IpAddr>)> {
        self.kernel().by_name(name).map_or_else(Vec::new, |i| {
            i.addresses.iter().map(|a| (a.net, a.peer)).collect()
        })
    }

    /// Interface indices that relay sockets were bound to, by level.
    /// Whether a UDP datagram an unprivileged program (uid 501) sends to
    /// `dst` leaves: routed by the table (`rn_match`), then judged by pf.
    pub(crate) fn lets_out(&self, dst: IpAddr) -> bool {
        let k = self.kernel();
        let Some(out_on) = k
            .best_match(dst)
            .and_then(|r| k.interface(k.routes[r].ifp))
            .map(|i| i.name.clone())
        else {
            return false;
        };
        k.pf.lets_out(&pf::Packet {
            out_on: &out_on,
            dst,
            proto: pf::Proto::Udp,
            src_port: 50000,
            dst_port: 9,
            uid: 501,
        })
    }

    /// pf's enable references, and whether it runs.
    pub(crate) fn pf_references(&self) -> (usize, bool) {
        let k = self.kernel();
        (k.pf.references(), k.pf.running())
    }

    pub(crate) fn pf_rules_in(&self, anchor: &str) -> usize {
        self.kernel().pf.rules_in(anchor)
    }

    /// The machine restarts: pf forgets its rules and references.
    pub(crate) fn reboot_pf(&self) {
        self.kernel().pf.reboot();
    }

    pub(crate) fn bound_sockets(&self) -> Vec<(i32, u32)> {
        self.kernel().bound.clone()
    }

    /// Every message the kernel sent to routing sockets so far.
    pub(crate) fn messages(&self) -> Vec<Vec<u8>> {
        self.kernel().log.clone()
    }

    /// route(8) run by someone else: `route -n <cmd> ...` as `OTHER_PID`,
    /// through the same `route_output` the helper's messages take.
    pub(crate) fn other_process(&self, message: &[u8]) -> Result<(), i32> {
        self.kernel().route_output(OTHER_PID, message)
    }

    /// `route -n delete -net <dst>` by someone else.
    pub(crate) fn other_deletes(&self, dst: IpNet) -> Result<(), i32> {
        let mut sa: [Option<Vec<u8>>; RTAX_MAX] = Default::default();
        sa[0] = Some(sockaddr_ip(dst.network()));
        sa[2] = Some(sockaddr_ip(dst.netmask()));
        let m = rt_message(RTM_DELETE, 0, RTF_STATIC, 0, 1, 0, &sa);
        self.other_process(&m)
    }

    /// `route -n add -net <dst> <gateway>` by someone else.
    pub(crate) fn other_adds_via(&self, dst: IpNet, gateway: IpAddr) -> Result<(), i32> {
        let mut sa: [Option<Vec<u8>>; RTAX_MAX] = Default::default();
        sa[0] = Some(sockaddr_ip(dst.network()));
        sa[1] = Some(sockaddr_ip(gateway));
        sa[2] = Some(sockaddr_ip(dst.netmask()));
        let m = rt_message(RTM_ADD, 0, RTF_UP | RTF_GATEWAY | RTF_STATIC, 0, 1, 0, &sa);
        self.other_process(&m)
    }

    /// `route -n change default <router>`, as configd does on a network
    /// switch: the old default out, the new one in.
    pub(crate) fn move_default_v4(&self, router: &str) {
        self.other_deletes("0.0.0.0/0".parse().unwrap()).unwrap();
        self.other_adds_via("0.0.0.0/0".parse().unwrap(), router.parse().unwrap())
            .unwrap();
    }
}

const ROUTER_V6_HOST: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

/// netinet6/scope6.c: the zone of a link-local address kept in bytes 2-3.
fn embed(addr: Ipv6Addr, zone: u16) -> Ipv6Addr {
    let mut s = addr.segments();
    s[1] = zone;
    Ipv6Addr::from(s)
}

fn unembed(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
            let mut s = a.segments();
            s[1] = 0;
            IpAddr::V6(Ipv6Addr::from(s))
        }
        other => other,
    }
}

/// A connected utun control socket. Dropping it is closing the descriptor:
/// the interface detaches and takes its routes along.
#[derive(Debug)]
pub(crate) struct XnuUtun {
    machine: Xnu,
    index: u16,
    name: String,
    device: NullDevice,
}

impl Drop for XnuUtun {
    fn drop(&mut self) {
        if let Ok(mut k) = self.machine.0.lock() {
            k.detach(self.index);
        }
    }
}

impl PacketDevice for XnuUtun {
    type Scratch = ();

    fn headroom(&self) -> usize {
        self.device.headroom()
    }

    fn scratch(&self) {}

    async fn recv_batch(&self, (): &mut (), rx: &mut Batch) -> io::Result<()> {
        self.device.recv_batch(&mut (), rx).await
    }

    fn try_recv_batch(&self, (): &mut (), rx: &mut Batch) -> io::Result<()> {
        self.device.try_recv_batch(&mut (), rx)
    }

    async fn send_batch(&self, (): &mut (), tx: &mut Batch) -> io::Result<()> {
        self.device.send_batch(&mut (), tx).await
    }
}

/// An open `PF_ROUTE` socket on the model.
#[derive(Debug)]
pub(crate) struct XnuRouteSocket {
    machine: Xnu,
    queue: Arc<Queue>,
}

impl RouteSocket for XnuRouteSocket {
    fn send(&self, message: &[u8]) -> io::Result<()> {
        self.machine
            .kernel()
            .route_output(HELPER_PID, message)
            .map_err(io::Error::from_raw_os_error)
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let next = self.queue.messages.lock().unwrap().pop_front();
            if let Some(m) = next {
                // A raw socket datagram: what does not fit is discarded.
                let n = m.len().min(buf.len());
                buf[..n].copy_from_slice(&m[..n]);
                return Ok(n);
            }
            self.queue.ready.notified().await;
        }
    }
}

impl Darwin for Xnu {
    type Utun = XnuUtun;
    type RouteSocket = XnuRouteSocket;

    async fn pfctl(&self, args: &[&str], input: &str) -> io::Result<String> {
        self.kernel().pf.pfctl(args, input)
    }

    fn pid(&self) -> i32 {
        HELPER_PID
    }

    /// What kernel.rs does through tun-rs: connect the utun control (a
    /// `utunN` name asks for unit N+1, anything else for any free unit),
    /// then SIOCAIFADDR with the peer, SIOCAIFADDR_IN6, SIOCSIFMTU.
    fn open_utun(&self, config: &DeviceConfig) -> io::Result<(XnuUtun, String)> {
        let unit = config
            .name
            .as_deref()
            .and_then(|n| n.strip_prefix("utun"))
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| n + 1);
        let mut addresses = vec![Address {
            net: IpNet::V4(config.address),
            peer: Some(IpAddr::V4(config.peer)),
        }];
        if let Some(v6) = config.ipv6 {
            addresses.push(Address {
                net: IpNet::V6(v6),
                peer: None,
            });
        }
        let utun = self.attach_utun(unit, addresses, u32::from(config.mtu))?;
        let name = utun.name.clone();
        Ok((utun, name))
    }

    /// if_utun.c `utun_ctl_setopt`, `UTUN_OPT_MAX_PENDING_PACKETS`:
    /// "if (len != sizeof(u_int32_t)) result = EMSGSIZE"; 0 is EINVAL.
    fn set_utun_option(&self, utun: &XnuUtun, name: i32, value: &[u8]) -> io::Result<()> {
        if name != UTUN_OPT_MAX_PENDING_PACKETS {
            return Err(io::Error::from_raw_os_error(ENXIO));
        }
        let value: [u8; 4] = value
            .try_into()
            .map_err(|_| io::Error::from_raw_os_error(EMSGSIZE))?;
        let pending = u32::from_ne_bytes(value);
        if pending == 0 {
            return Err(io::Error::from_raw_os_error(EINVAL));
        }
        let mut k = self.kernel();
        let ifp = k
            .interfaces
            .iter_mut()
            .find(|i| i.index == utun.index)
            .ok_or_else(|| io::Error::from_raw_os_error(ENXIO))?;
        ifp.max_pending = pending;
        Ok(())
    }

    fn route_socket(&self) -> io::Result<XnuRouteSocket> {
        let queue = Arc::new(Queue::default());
        self.kernel().sockets.push(Arc::downgrade(&queue));
        Ok(XnuRouteSocket {
            machine: self.clone(),
            queue,
        })
    }

    fn if_nametoindex(&self, name: &str) -> io::Result<u32> {
        self.kernel()
            .by_name(name)
            .map(|i| u32::from(i.index))
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// getifaddrs(3): libc un-embeds link-local zones before handing the
    /// addresses out.
    fn interface_addresses(&self, name: &str) -> io::Result<Vec<InterfaceAddress>> {
        Ok(self.kernel().by_name(name).map_or_else(Vec::new, |i| {
            i.addresses
                .iter()
                .map(|a| InterfaceAddress {
                    address: IpNet::new(unembed(a.net.addr()), a.net.prefix_len()).unwrap(),
                    peer: a.peer,
                })
                .collect()
        }))
    }

    /// netinet/ip_output.c `ip_ctloutput` IP_BOUND_IF and ip6_output.c
    /// IPV6_BOUND_IF: an `unsigned int` interface index that must exist
    /// (`inp_bindif`: ENXIO otherwise). The model records the binding; the
    /// socket itself is a Linux socket and is left alone.
    fn setsockopt(
        &self,
        _socket: &socket2::Socket,
        level: i32,
        name: i32,
        value: &[u8],
    ) -> io::Result<()> {
        let ok = matches!((level, name), (0, 25) | (41, 125));
        if !ok {
            return Err(io::Error::from_raw_os_error(EINVAL));
        }
        let value: [u8; 4] = value
            .try_into()
            .map_err(|_| io::Error::from_raw_os_error(EINVAL))?;
        let index = u32::from_ne_bytes(value);
        let mut k = self.kernel();
        if u16::try_from(index)
            .ok()
            .and_then(|i| k.interface(i))
            .is_none()
        {
            return Err(io::Error::from_raw_os_error(ENXIO));
        }
        k.bound.push((level, index));
        Ok(())
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;

    #[test]
    fn roundup32_matches_rtsock() {
        assert_eq!(
            [0, 1, 4, 5, 16, 20, 28].map(roundup32),
            [4, 4, 4, 8, 16, 20, 28]
        );
    }

    #[test]
    fn masks_are_trimmed_as_sa_trim_does() {
        assert_eq!(
            sockaddr_mask(false, 24),
            vec![7, AF_INET, 0, 0, 255, 255, 255]
        );
        assert_eq!(sockaddr_mask(false, 0), Vec::<u8>::new());
        assert_eq!(mask_prefix(&sockaddr_mask(false, 24), false), Some(24));
        assert_eq!(mask_prefix(&sockaddr_mask(true, 1), true), Some(1));
        assert_eq!(mask_prefix(&[8, 2, 0, 0, 255, 0, 255, 0], false), None);
    }
}
