//! The [`Darwin`] seam on a Mac: each call hands its bytes to the kernel
//! and returns what the kernel said. No decision is made here.
//!
//! utun is opened through tun-rs (`CTLIOCGINFO`, `connect` with
//! `sc_unit` = N+1, `UTUN_OPT_IFNAME`, the peer through `SIOCAIFADDR`);
//! tun-rs must not install a route of its own: ztun owns its routes.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};

use ipnet::IpNet;
use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use ztun_proto::InterfaceAddress;

use super::sys::{Darwin, RouteSocket, SYSPROTO_CONTROL};
use crate::platform::DeviceConfig;

/// xnu `bsd/sys/socket.h`: `PF_ROUTE` (= `AF_ROUTE`).
const PF_ROUTE: i32 = 17;

/// The kernel itself.
#[derive(Debug, Default)]
pub struct Libc;

/// A non-blocking routing socket registered with the tokio reactor.
#[derive(Debug)]
pub struct LibcRouteSocket(AsyncFd<Socket>);

impl RouteSocket for LibcRouteSocket {
    fn send(&self, message: &[u8]) -> io::Result<()> {
        // A routing message is taken whole or refused with an errno; the
        // kernel never blocks the writer.
        self.0.get_ref().write_all(message)
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(result) = ready.try_io(|s| s.get_ref().read(buf)) {
                return result;
            }
        }
    }
}

impl Darwin for Libc {
    async fn pfctl(&self, args: &[&str], input: &str) -> io::Result<String> {
        crate::platform::run_tool("/sbin/pfctl", args, input).await
    }

    type Utun = tun_rs::AsyncDevice;
    type RouteSocket = LibcRouteSocket;

    fn pid(&self) -> i32 {
        i32::try_from(std::process::id()).unwrap_or(i32::MAX)
    }

    fn open_utun(&self, config: &DeviceConfig) -> io::Result<(tun_rs::AsyncDevice, String)> {
        let mut builder = crate::platform::device_builder(config).associate_route(false);
        // utun names are the kernel's (`utunN`); another name means "any free one".
        if let Some(name) = config.name.as_ref().filter(|n| n.starts_with("utun")) {
            builder = builder.name(name.clone());
        }
        crate::platform::open_device(builder).map_err(|e| match e {
            crate::platform::PlatformError::Device(e) => e,
            other => io::Error::other(other),
        })
    }

    fn route_socket(&self) -> io::Result<LibcRouteSocket> {
        let socket = Socket::new(Domain::from(PF_ROUTE), Type::RAW, None)?;
        socket.set_nonblocking(true)?;
        crate::platform::register(socket).map(LibcRouteSocket)
    }

    fn if_nametoindex(&self, name: &str) -> io::Result<u32> {
        nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
    }

    fn interface_addresses(&self, name: &str) -> io::Result<Vec<InterfaceAddress>> {
        let all = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
        Ok(all
            .filter(|a| a.interface_name == name)
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

    fn setsockopt(&self, socket: &Socket, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
        setsockopt(socket.as_raw_fd(), level, name, value)
    }

    fn set_utun_option(
        &self,
        utun: &tun_rs::AsyncDevice,
        name: i32,
        value: &[u8],
    ) -> io::Result<()> {
        setsockopt(utun.as_raw_fd(), SYSPROTO_CONTROL, name, value)
    }
}

/// `setsockopt(2)` on a descriptor the caller keeps open for the call.
fn setsockopt(fd: RawFd, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(value.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both callers pass the descriptor of a socket they borrow for
    // the call, so it is open; `value` is a live slice of exactly `len`
    // bytes that the kernel only reads.
    let rc = unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Prefix length of a netmask given as an address (`255.255.255.0` → 24).
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
