//! The macOS `Platform`: `utun` through tun-rs (its peer set with
//! `SIOCAIFADDR`, S2), routes through a `PF_ROUTE` socket with the pure
//! `rtmsg` codec (S3), and outbound sockets pinned with `IP_BOUND_IF` /
//! `IPV6_BOUND_IF` (S6).
//!
//! Routing-socket exchanges are short blocking writes and reads on a fresh
//! socket per request, run on tokio's blocking pool: the kernel answers at
//! once, and a private socket means no other request's reply is in the way.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use socket2::{Domain, Socket, Type};
use ztun_proto::InterfaceAddress;

use super::rtmsg::{RouteMessage, SockAddr, RTF_GATEWAY, RTM_ADD, RTM_DELETE};
use crate::platform::{DeviceConfig, KernelRoute, Platform, PlatformError};
use crate::routes::{PhysicalGateway, RouteEntry, RouteTarget};

/// xnu `bsd/sys/errno.h`.
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
/// xnu `bsd/sys/socket.h`: `PF_ROUTE` (= `AF_ROUTE`).
const PF_ROUTE: i32 = 17;
/// How long the kernel may take to answer a routing message.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest routing message read back (a reply is a few hundred bytes).
const REPLY_BUF: usize = 2048;

#[derive(Debug)]
pub struct MacosPlatform {
    seq: AtomicI32,
    pid: i32,
}

impl Default for MacosPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl MacosPlatform {
    pub fn new() -> Self {
        Self {
            seq: AtomicI32::new(1),
            pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
        }
    }

    fn next_seq(&self) -> i32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `request` and returns the kernel's answer to it (the message
    /// carrying our pid and seq). A failed request is an `io::Error` with
    /// the kernel's errno: `write` reports it, and so does the reply.
    async fn exchange(&self, request: RouteMessage) -> io::Result<RouteMessage> {
        let bytes = request
            .to_bytes()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (pid, seq) = (self.pid, request.seq);
        tokio::task::spawn_blocking(move || {
            let socket = Socket::new(Domain::from(PF_ROUTE), Type::RAW, None)?;
            socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
            (&socket).write_all(&bytes)?;
            let mut buf = vec![0_u8; REPLY_BUF];
            loop {
                // Every routing message on the system arrives here; ours is
                // the one with our pid and seq. A timeout ends the wait.
                let n = (&socket).read(&mut buf)?;
                let Ok(reply) = RouteMessage::parse(&buf[..n]) else {
                    continue;
                };
                if reply.answers(pid, seq) {
                    return if reply.errno == 0 {
                        Ok(reply)
                    } else {
                        Err(io::Error::from_raw_os_error(reply.errno))
                    };
                }
            }
        })
        .await
        .map_err(io::Error::other)?
    }

    fn index_of(interface: &str) -> Result<u32, PlatformError> {
        nix::net::if_::if_nametoindex(interface)
            .ok()
            .filter(|i| *i != 0)
            .ok_or_else(|| PlatformError::NoSuchInterface(interface.to_owned()))
    }

    fn request(&self, kind: u8, entry: &RouteEntry) -> Result<RouteMessage, PlatformError> {
        let seq = self.next_seq();
        Ok(match &entry.target {
            RouteTarget::Tunnel { interface } => {
                let index = u16::try_from(Self::index_of(interface)?)
                    .map_err(|_| PlatformError::NoSuchInterface(interface.clone()))?;
                RouteMessage::interface_route(kind, entry.dst, index, interface, seq)
            }
            RouteTarget::Gateway { via, .. } => {
                RouteMessage::gateway_route(kind, entry.dst, SockAddr::from_ip(*via), seq)
            }
        })
    }

    /// The kernel's route for `ipv6`'s default, as (interface, gateway).
    async fn default_route(&self, ipv6: bool) -> Result<Option<(String, IpAddr)>, PlatformError> {
        match self
            .exchange(RouteMessage::get_default(ipv6, self.next_seq()))
            .await
        {
            Ok(reply) => Ok(reply
                .interface_name()
                .map(str::to_owned)
                .zip(reply.gateway_ip())),
            Err(e) if e.raw_os_error() == Some(ESRCH) => Ok(None),
            Err(e) => Err(PlatformError::RouteRead(e)),
        }
    }
}

/// Prefix length of a netmask given as an address (`255.255.255.0` → 24).
/// Where an `RTM_GET` reply says the kernel sends packets: its interface, and
/// its gateway when the route has one.
fn kernel_route(reply: &RouteMessage) -> Option<KernelRoute> {
    let interface = reply.interface_name()?;
    let gateway = if reply.flags & RTF_GATEWAY != 0 {
        reply.gateway_ip()
    } else {
        None
    };
    Some(KernelRoute {
        interface: interface.to_owned(),
        gateway,
    })
}

fn prefix_of(mask: IpAddr) -> u8 {
    let ones = match mask {
        IpAddr::V4(m) => u32::from(m).count_ones(),
        IpAddr::V6(m) => u128::from(m).count_ones(),
    };
    u8::try_from(ones).unwrap_or(0)
}

fn ip_of(sa: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    sa.as_sockaddr_in()
        .map(|a| IpAddr::V4(a.ip()))
        .or_else(|| sa.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
}

impl Platform for MacosPlatform {
    type Device = tun_rs::AsyncDevice;

    fn create_device(
        &self,
        config: &DeviceConfig,
    ) -> Result<(Self::Device, String), PlatformError> {
        // ztun owns its routes: tun-rs must not add one of its own.
        let mut builder = crate::platform::device_builder(config).associate_route(false);
        // utun names are the kernel's (`utunN`); another name means "any free one".
        if let Some(name) = config.name.as_ref().filter(|n| n.starts_with("utun")) {
            builder = builder.name(name.clone());
        }
        crate::platform::open_device(builder)
    }

    async fn add_route(&self, entry: &RouteEntry) -> Result<(), PlatformError> {
        let request = self.request(RTM_ADD, entry)?;
        match self.exchange(request).await {
            // Already there: the read-back decides whether it is ours.
            Err(e) if e.raw_os_error() == Some(EEXIST) => Ok(()),
            Err(source) => Err(PlatformError::RouteAdd {
                dst: entry.dst,
                interface: entry.target.interface().to_owned(),
                source,
            }),
            Ok(_) => Ok(()),
        }
    }

    async fn delete_route(&self, entry: &RouteEntry) -> Result<bool, PlatformError> {
        // xnu matches RTM_DELETE on destination and netmask only: read the
        // route first and leave it alone unless it is exactly ours (our
        // interface, and our gateway for an exclusion route).
        match self.lookup_route(entry.dst).await? {
            Some(k) if entry.matches(&k) => {}
            _ => return Ok(false),
        }
        let request = match self.request(RTM_DELETE, entry) {
            Ok(r) => r,
            Err(PlatformError::NoSuchInterface(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.exchange(request).await {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(ESRCH) => Ok(false),
            Err(source) => Err(PlatformError::RouteDelete {
                dst: entry.dst,
                interface: entry.target.interface().to_owned(),
                source,
            }),
        }
    }

    async fn lookup_route(&self, dst: IpNet) -> Result<Option<KernelRoute>, PlatformError> {
        let reply = match self
            .exchange(RouteMessage::get_exact(dst, self.next_seq()))
            .await
        {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(ESRCH) => return Ok(None),
            Err(e) => return Err(PlatformError::RouteRead(e)),
        };
        // RTM_GET answers with the best match; only the exact prefix counts.
        if reply.prefix() != Some(dst) {
            return Ok(None);
        }
        Ok(kernel_route(&reply))
    }

    async fn route_to(&self, dst: IpAddr) -> Result<Option<KernelRoute>, PlatformError> {
        let reply = match self
            .exchange(RouteMessage::get_to(dst, self.next_seq()))
            .await
        {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(ESRCH) => return Ok(None),
            Err(e) => return Err(PlatformError::RouteRead(e)),
        };
        Ok(kernel_route(&reply))
    }

    async fn interface_addresses(
        &self,
        interface: &str,
    ) -> Result<Vec<InterfaceAddress>, PlatformError> {
        let all = nix::ifaddrs::getifaddrs().map_err(|e| PlatformError::RouteRead(e.into()))?;
        Ok(all
            .filter(|a| a.interface_name == interface)
            .filter_map(|a| {
                let ours = ip_of(a.address.as_ref()?)?;
                let prefix = a
                    .netmask
                    .as_ref()
                    .and_then(ip_of)
                    .map_or(if ours.is_ipv4() { 32 } else { 128 }, prefix_of);
                let peer = a
                    .destination
                    .as_ref()
                    .and_then(ip_of)
                    .filter(|p| *p != ours);
                Some(InterfaceAddress {
                    address: IpNet::new(ours, prefix).ok()?,
                    peer,
                })
            })
            .collect())
    }

    async fn physical_gateway(&self) -> Result<Option<PhysicalGateway>, PlatformError> {
        let Some((interface, v4)) = self.default_route(false).await? else {
            return Ok(None);
        };
        let v6 = self
            .default_route(true)
            .await?
            .filter(|(i, _)| *i == interface)
            .map(|(_, gw)| gw);
        Ok(Some(PhysicalGateway {
            interface,
            v4: Some(v4),
            v6,
        }))
    }

    fn network_changes(&self) -> io::Result<tokio::sync::mpsc::Receiver<()>> {
        let socket = Socket::new(Domain::from(PF_ROUTE), Type::RAW, None)?;
        socket.set_nonblocking(true)?;
        let socket = crate::platform::register(socket)?;
        let (tx, rx) = crate::platform::change_channel();
        let pid = self.pid;
        tokio::spawn(async move {
            let mut buf = vec![0_u8; 8192];
            loop {
                let Ok(mut ready) = socket.readable().await else {
                    return;
                };
                let n = match ready.try_io(|s| s.get_ref().read(&mut buf)) {
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => return,
                    Err(_would_block) => continue,
                };
                // Routes, addresses, interfaces changed by someone else: a
                // reason to look again (the daemon debounces bursts).
                let relevant = super::rtmsg::messages(&buf[..n])
                    .any(|m| m.is_ok_and(|m| m.is_network_change(pid)));
                if relevant {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(())
                    {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    fn bind_to_interface(&self, socket: &Socket, interface: &str) -> io::Result<()> {
        let index = NonZeroU32::new(Self::index_of(interface).map_err(io::Error::other)?)
            .ok_or_else(|| io::Error::other(format!("no interface named {interface}")))?;
        // An unbound socket still reports its family through getsockname.
        if socket.local_addr()?.is_ipv6() {
            socket.bind_device_by_index_v6(Some(index))
        } else {
            socket.bind_device_by_index_v4(Some(index))
        }
    }
}
