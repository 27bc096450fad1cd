//! Linux: the tunnel is a tun device without packet information (`IFF_NO_PI`,
//! through tun-rs, which also sets its address, peer and MTU); routes go
//! through rtnetlink, never through `ip`; outbound sockets are pinned to the
//! physical interface with `SO_BINDTODEVICE`.

use std::io;
use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, RouteMessageBuilder};

use ztun_proto::InterfaceAddress;

use super::{DeviceConfig, KernelRoute, Platform, PlatformError};
use crate::killswitch::KillSwitch;
use crate::routes::{PhysicalGateway, RouteEntry, RouteTarget};

/// errno values netlink reports (asm-generic/errno-base.h, asm-generic/errno.h).
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ENETUNREACH: i32 = 101;
const EHOSTUNREACH: i32 = 113;
const EBUSY: i32 = 16;
/// Times a dump is asked again after the kernel interrupted it.
const DUMP_RETRIES: u32 = 8;

/// Runs a netlink dump, asking again when the kernel interrupted it because
/// the table changed while it was being read (`NLM_F_DUMP_INTR`, which
/// recent kernels report as EBUSY): routes come and go all the time, not
/// least our own.
async fn dump<T, F, Fut>(mut ask: F) -> Result<Vec<T>, rtnetlink::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, rtnetlink::Error>>,
{
    let mut tries = 0;
    loop {
        match ask().await {
            Err(e) if errno(&e) == Some(EBUSY) && tries < DUMP_RETRIES => {
                tries += 1;
                tokio::task::yield_now().await;
            }
            done => return done,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LinuxPlatform {
    netlink: Handle,
}

impl LinuxPlatform {
    /// Opens a netlink connection; its I/O task runs on the current tokio
    /// runtime, in the network namespace of the calling thread.
    pub fn new() -> io::Result<Self> {
        let (connection, netlink, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { netlink })
    }

    async fn index_of(&self, interface: &str) -> Result<u32, PlatformError> {
        let mut links = self
            .netlink
            .link()
            .get()
            .match_name(interface.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(PlatformError::NoSuchInterface(interface.to_owned())),
            Err(e) if errno(&e) == Some(ENODEV) => {
                Err(PlatformError::NoSuchInterface(interface.to_owned()))
            }
            Err(e) => Err(PlatformError::RouteRead(to_io(e))),
        }
    }

    async fn name_of(&self, index: u32) -> Result<String, PlatformError> {
        let mut links = self.netlink.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await
            .map_err(|e| PlatformError::RouteRead(to_io(e)))?;
        link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                netlink_packet_route::link::LinkAttribute::IfName(n) => Some(n),
                _ => None,
            })
        })
        .ok_or_else(|| PlatformError::NoSuchInterface(format!("index {index}")))
    }

    /// The netlink message for `entry`: `dev IFACE scope link` for tunnel
    /// routes (the interface is the next hop), `via GW dev IFACE` otherwise.
    async fn message(&self, entry: &RouteEntry) -> Result<RouteMessage, PlatformError> {
        let index = self.index_of(entry.target.interface()).await?;
        // rtnetlink does not export its error type for this; only its text matters.
        let invalid = |e: &dyn std::fmt::Display| PlatformError::RouteAdd {
            dst: entry.dst,
            interface: entry.target.interface().to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
        };
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(entry.dst.addr(), entry.dst.prefix_len())
            .map_err(|e| invalid(&e))?
            .output_interface(index);
        Ok(match &entry.target {
            RouteTarget::Tunnel { .. } => builder.scope(RouteScope::Link).build(),
            RouteTarget::Gateway { via, .. } => {
                builder.gateway(*via).map_err(|e| invalid(&e))?.build()
            }
        })
    }

    /// Every unicast route of the main table for one address family.
    async fn main_table(&self, family: AddressFamily) -> Result<Vec<RouteMessage>, PlatformError> {
        let routes: Vec<RouteMessage> = dump(|| {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            self.netlink.route().get(query).execute().try_collect()
        })
        .await
        .map_err(|e| PlatformError::RouteRead(to_io(e)))?;
        Ok(routes
            .into_iter()
            .filter(|r| {
                table_of(r) == u32::from(RouteHeader::RT_TABLE_MAIN)
                    && r.header.kind == RouteType::Unicast
            })
            .collect())
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

/// The table a route is in: the header byte, or `RTA_TABLE` for ids > 255.
fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The destination prefix of a route message (`default` has no attribute).
fn destination(r: &RouteMessage) -> Option<IpNet> {
    let addr = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => ip_of(d),
            _ => None,
        })
        .or(match r.header.address_family {
            AddressFamily::Inet => Some(IpAddr::V4(0.into())),
            AddressFamily::Inet6 => Some(IpAddr::V6(0.into())),
            _ => None,
        })?;
    IpNet::new(addr, r.header.destination_prefix_length).ok()
}

fn oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn gateway(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => ip_of(g),
        _ => None,
    })
}

fn priority(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn family(dst: IpNet) -> AddressFamily {
    match dst {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

impl Platform for LinuxPlatform {
    type Device = tun_rs::AsyncDevice;

    fn create_device(
        &self,
        config: &DeviceConfig,
    ) -> Result<(Self::Device, String), PlatformError> {
        // Offloads: TSO super-segments in, coalesced writes out (device.rs).
        let mut builder = super::device_builder(config)
            .packet_information(false)
            .offload(true);
        if let Some(name) = &config.name {
            builder = builder.name(name.clone());
        }
        super::open_device(builder)
    }

    async fn add_route(&self, entry: &RouteEntry) -> Result<(), PlatformError> {
        let message = self.message(entry).await?;
        match self.netlink.route().add(message).execute().await {
            // Already there: the read-back decides whether it is ours.
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(e) => Err(PlatformError::RouteAdd {
                dst: entry.dst,
                interface: entry.target.interface().to_owned(),
                source: to_io(e),
            }),
            Ok(()) => Ok(()),
        }
    }

    async fn delete_route(&self, entry: &RouteEntry) -> Result<bool, PlatformError> {
        let message = match self.message(entry).await {
            Ok(m) => m,
            // The interface is gone, and with it every route through it.
            Err(PlatformError::NoSuchInterface(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.netlink.route().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ESRCH) => Ok(false),
            Err(e) => Err(PlatformError::RouteDelete {
                dst: entry.dst,
                interface: entry.target.interface().to_owned(),
                source: to_io(e),
            }),
        }
    }

    async fn lookup_route(&self, dst: IpNet) -> Result<Option<KernelRoute>, PlatformError> {
        let found = self
            .main_table(family(dst))
            .await?
            .into_iter()
            .find(|r| destination(r) == Some(dst));
        let Some(route) = found else { return Ok(None) };
        let Some(index) = oif(&route) else {
            return Ok(None);
        };
        Ok(Some(KernelRoute {
            interface: self.name_of(index).await?,
            gateway: gateway(&route),
        }))
    }

    async fn route_to(&self, dst: IpAddr) -> Result<Option<KernelRoute>, PlatformError> {
        // RTM_GETROUTE with RTA_DST and without NLM_F_DUMP is `ip route get`:
        // the kernel resolves one packet's route, rules and all.
        let mut query = RouteMessage::default();
        let (family, len, address) = match dst {
            IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
        };
        query.header.address_family = family;
        query.header.destination_prefix_length = len;
        query.attributes.push(RouteAttribute::Destination(address));
        let mut replies = self.netlink.route().get(query).execute();
        let route = match replies.try_next().await {
            Ok(Some(route)) => route,
            Ok(None) => return Ok(None),
            Err(e) if matches!(errno(&e), Some(ENETUNREACH | EHOSTUNREACH)) => return Ok(None),
            Err(e) => return Err(PlatformError::RouteRead(to_io(e))),
        };
        let Some(index) = oif(&route) else {
            return Ok(None);
        };
        Ok(Some(KernelRoute {
            interface: self.name_of(index).await?,
            gateway: gateway(&route),
        }))
    }

    async fn interface_addresses(
        &self,
        interface: &str,
    ) -> Result<Vec<InterfaceAddress>, PlatformError> {
        let index = self.index_of(interface).await?;
        let messages: Vec<AddressMessage> = dump(|| {
            self.netlink
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
        })
        .await
        .map_err(|e| PlatformError::RouteRead(to_io(e)))?;
        // On a point-to-point link IFA_LOCAL is our address and IFA_ADDRESS
        // the peer; otherwise IFA_ADDRESS alone is ours.
        Ok(messages
            .into_iter()
            .filter_map(|m| {
                let (mut local, mut address) = (None, None);
                for a in m.attributes {
                    match a {
                        AddressAttribute::Local(ip) => local = Some(ip),
                        AddressAttribute::Address(ip) => address = Some(ip),
                        _ => {}
                    }
                }
                let ours = local.or(address)?;
                let peer = local.and(address).filter(|p| *p != ours);
                Some(InterfaceAddress {
                    address: IpNet::new(ours, m.header.prefix_len).ok()?,
                    peer,
                })
            })
            .collect())
    }

    async fn physical_gateway(&self) -> Result<Option<PhysicalGateway>, PlatformError> {
        let mut best: Option<(u32, u32, IpAddr)> = None;
        let mut v6 = None;
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            for r in self.main_table(fam).await? {
                let (Some(dst), Some(index), Some(gw)) = (destination(&r), oif(&r), gateway(&r))
                else {
                    continue;
                };
                if dst.prefix_len() != 0 {
                    continue;
                }
                match fam {
                    AddressFamily::Inet if best.is_none_or(|(p, _, _)| priority(&r) < p) => {
                        best = Some((priority(&r), index, gw));
                    }
                    AddressFamily::Inet6 if v6.is_none() => v6 = Some((index, gw)),
                    _ => {}
                }
            }
        }
        // The IPv4 default route names the physical interface; an IPv6
        // gateway counts only on that same interface.
        let Some((_, index, v4)) = best else {
            return Ok(None);
        };
        Ok(Some(PhysicalGateway {
            interface: self.name_of(index).await?,
            v4: Some(v4),
            v6: v6.filter(|(i, _)| *i == index).map(|(_, gw)| gw),
        }))
    }

    fn network_changes(&self) -> io::Result<tokio::sync::mpsc::Receiver<()>> {
        use rtnetlink::MulticastGroup;
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ];
        let (connection, _handle, mut messages) = rtnetlink::new_multicast_connection(&groups)?;
        let (tx, rx) = super::change_channel();
        tokio::spawn(async move {
            tokio::select! {
                () = connection => {}
                () = async {
                    while messages.next().await.is_some() {
                        if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                            return;
                        }
                    }
                } => {}
            }
        });
        Ok(rx)
    }

    /// Binds to the device and marks the socket as the helper's own, which
    /// the kill switch lets out beside the tunnel.
    fn bind_to_interface(&self, socket: &socket2::Socket, interface: &str) -> io::Result<()> {
        socket.bind_device(Some(interface.as_bytes()))?;
        socket.set_mark(crate::killswitch::MARK)
    }

    /// systemd-resolved's per-link settings, which die with the link.
    async fn set_split_dns(
        &self,
        interface: &str,
        server: IpAddr,
        domains: &[String],
    ) -> Result<(), PlatformError> {
        for args in crate::splitdns::resolvectl(interface, server, domains) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            super::run_tool("resolvectl", &args, "")
                .await
                .map_err(|e| {
                    PlatformError::SplitDns(if e.kind() == io::ErrorKind::NotFound {
                        "resolvectl is not installed (split DNS needs systemd-resolved)".to_owned()
                    } else {
                        e.to_string()
                    })
                })?;
        }
        Ok(())
    }

    async fn clear_split_dns(&self, interface: Option<&str>) -> Result<(), PlatformError> {
        // Without an interface there is nothing to do: a link's settings
        // went with it.
        if let Some(i) = interface {
            // A link already gone took its settings with it.
            if let Err(e) = super::run_tool("resolvectl", &["revert", i], "").await {
                tracing::debug!("resolvectl revert {i}: {e}");
            }
        }
        Ok(())
    }

    /// One `nft -f -` transaction: the table is replaced or removed whole,
    /// never left half-written.
    async fn set_kill_switch(
        &self,
        rules: Option<&KillSwitch>,
        _held: Option<u64>,
    ) -> Result<Option<u64>, PlatformError> {
        let script = crate::killswitch::nft_script(rules);
        super::run_tool("nft", &["-f", "-"], &script)
            .await
            .map_err(|e| PlatformError::nft_failed(rules.is_some(), &e))?;
        Ok(None)
    }
}
