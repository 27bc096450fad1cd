//! A `Platform` that changes nothing and records every call, with a routing
//! table in memory. Tests assert on the recorded sequence (as Tailscale's
//! fake router does), including what happens after a crash.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use super::{DeviceConfig, KernelRoute, Platform, PlatformError};
use crate::device::NullDevice;
use crate::killswitch::KillSwitch;
use crate::routes::{PhysicalGateway, RouteEntry};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    CreateDevice(String),
    AddRoute(RouteEntry),
    DeleteRoute(RouteEntry),
    LookupRoute(IpNet),
    RouteTo(IpAddr),
    PhysicalGateway,
    BindToInterface(String),
    /// The rules asked for (`None`: removed) and the reference held before.
    SetKillSwitch(Option<KillSwitch>, Option<u64>),
    SetSplitDns(String, IpAddr, Vec<String>),
    ClearSplitDns(Option<String>),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    table: Vec<(IpNet, KernelRoute)>,
    physical: Option<PhysicalGateway>,
    next_device: u32,
    /// Installs of these prefixes land on this interface instead (the S3 bug).
    misroute: Option<(IpNet, String)>,
    fail_add: Option<IpNet>,
    fail_delete: Option<IpNet>,
    addresses: Vec<(String, ztun_proto::InterfaceAddress)>,
    changes: Option<tokio::sync::mpsc::Sender<()>>,
    resolvers: Vec<std::net::IpAddr>,
    /// The kill switch the fake firewall holds: it outlives a daemon, as the
    /// kernel's does.
    kill_switch: Option<KillSwitch>,
    fail_kill_switch: bool,
}

/// Cloning shares the state, so a test can keep a handle while the daemon
/// owns another.
#[derive(Debug, Clone, Default)]
pub struct FakePlatform(Arc<Mutex<State>>);

impl FakePlatform {
    pub fn new(physical: Option<PhysicalGateway>) -> Self {
        let fake = Self::default();
        fake.state().physical = physical;
        fake
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread poisons the lock; the state is still the
        // record of what happened, which is what the next assertion wants.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Routes currently in the fake kernel table.
    pub fn table(&self) -> Vec<(IpNet, KernelRoute)> {
        self.state().table.clone()
    }

    /// Makes the kernel put `dst` on `interface` whatever was asked.
    pub fn misroute(&self, dst: IpNet, interface: &str) {
        self.state().misroute = Some((dst, interface.to_owned()));
    }

    /// Makes installing `dst` fail.
    pub fn fail_add(&self, dst: IpNet) {
        self.state().fail_add = Some(dst);
    }

    /// Makes removing `dst` fail (`None` heals it).
    pub fn fail_delete(&self, dst: Option<IpNet>) {
        self.state().fail_delete = dst;
    }

    /// Takes `dst` out of the fake kernel table behind the daemon's back.
    pub fn vanish(&self, dst: IpNet) {
        self.state().table.retain(|(d, _)| *d != dst);
    }

    /// Moves the default route (a Wi-Fi switch, a new DHCP gateway); the
    /// daemon learns of it at the next [`network_changed`](Self::network_changed).
    pub fn set_physical(&self, physical: Option<PhysicalGateway>) {
        self.state().physical = physical;
    }

    /// The resolvers the system lists (none by default).
    pub fn set_resolvers(&self, resolvers: &[std::net::IpAddr]) {
        self.state().resolvers = resolvers.to_vec();
    }

    /// Signals a network change, as the kernel's route monitor would.
    pub fn network_changed(&self) {
        if let Some(tx) = &self.state().changes {
            let _ = tx.try_send(());
        }
    }

    /// The kill switch in the fake firewall now.
    pub fn kill_switch(&self) -> Option<KillSwitch> {
        self.state().kill_switch.clone()
    }

    /// Makes every kill-switch change fail (nft missing, pfctl refusing).
    pub fn fail_kill_switch(&self, fail: bool) {
        self.state().fail_kill_switch = fail;
    }

    /// A route someone else installed.
    pub fn preinstall(&self, dst: IpNet, route: KernelRoute) {
        self.state().table.push((dst, route));
    }
}

impl Platform for FakePlatform {
    type Device = NullDevice;

    fn create_device(&self, config: &DeviceConfig) -> Result<(NullDevice, String), PlatformError> {
        let mut s = self.state();
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format!("tun{}", s.next_device));
        s.next_device += 1;
        s.calls.push(Call::CreateDevice(name.clone()));
        let v4 = ztun_proto::InterfaceAddress {
            address: IpNet::V4(config.address),
            peer: Some(std::net::IpAddr::V4(config.peer)),
        };
        s.addresses.push((name.clone(), v4));
        if let Some(v6) = config.ipv6 {
            s.addresses.push((
                name.clone(),
                ztun_proto::InterfaceAddress {
                    address: IpNet::V6(v6),
                    peer: None,
                },
            ));
        }
        Ok((NullDevice, name))
    }

    async fn add_route(&self, entry: &RouteEntry) -> Result<(), PlatformError> {
        let mut s = self.state();
        s.calls.push(Call::AddRoute(entry.clone()));
        if s.fail_add == Some(entry.dst) {
            return Err(PlatformError::RouteAdd {
                dst: entry.dst,
                interface: entry.target.interface().to_owned(),
                source: io::Error::from(io::ErrorKind::PermissionDenied),
            });
        }
        let mut route = KernelRoute {
            interface: entry.target.interface().to_owned(),
            gateway: entry.target.gateway(),
        };
        if let Some((dst, iface)) = &s.misroute {
            if *dst == entry.dst {
                route.interface.clone_from(iface);
            }
        }
        if !s.table.iter().any(|(d, r)| *d == entry.dst && *r == route) {
            s.table.push((entry.dst, route));
        }
        Ok(())
    }

    async fn delete_route(&self, entry: &RouteEntry) -> Result<bool, PlatformError> {
        let mut s = self.state();
        s.calls.push(Call::DeleteRoute(entry.clone()));
        if s.fail_delete == Some(entry.dst) {
            return Err(PlatformError::RouteDelete {
                dst: entry.dst,
                interface: entry.target.interface().to_owned(),
                source: io::Error::from(io::ErrorKind::PermissionDenied),
            });
        }
        let before = s.table.len();
        s.table.retain(|(d, _)| *d != entry.dst);
        Ok(s.table.len() < before)
    }

    async fn lookup_route(&self, dst: IpNet) -> Result<Option<KernelRoute>, PlatformError> {
        let mut s = self.state();
        s.calls.push(Call::LookupRoute(dst));
        Ok(s.table
            .iter()
            .find(|(d, _)| *d == dst)
            .map(|(_, r)| r.clone()))
    }

    /// The longest prefix in the table that holds `dst`, else the physical
    /// network's default route, as a kernel would choose.
    async fn route_to(&self, dst: IpAddr) -> Result<Option<KernelRoute>, PlatformError> {
        let mut s = self.state();
        s.calls.push(Call::RouteTo(dst));
        let best = s
            .table
            .iter()
            .filter(|(d, _)| d.contains(&dst))
            .max_by_key(|(d, _)| d.prefix_len())
            .map(|(_, r)| r.clone());
        Ok(best.or_else(|| {
            s.physical.as_ref().map(|p| KernelRoute {
                interface: p.interface.clone(),
                gateway: if dst.is_ipv4() { p.v4 } else { p.v6 },
            })
        }))
    }

    async fn interface_addresses(
        &self,
        interface: &str,
    ) -> Result<Vec<ztun_proto::InterfaceAddress>, PlatformError> {
        let s = self.state();
        Ok(s.addresses
            .iter()
            .filter(|(i, _)| i == interface)
            .map(|(_, a)| a.clone())
            .collect())
    }

    async fn physical_gateway(&self) -> Result<Option<PhysicalGateway>, PlatformError> {
        let mut s = self.state();
        s.calls.push(Call::PhysicalGateway);
        Ok(s.physical.clone())
    }

    fn network_changes(&self) -> io::Result<tokio::sync::mpsc::Receiver<()>> {
        let (tx, rx) = super::change_channel();
        self.state().changes = Some(tx);
        Ok(rx)
    }

    fn bind_to_interface(&self, _socket: &socket2::Socket, interface: &str) -> io::Result<()> {
        self.state()
            .calls
            .push(Call::BindToInterface(interface.to_owned()));
        Ok(())
    }

    /// Holds a reference as pf does: taken with the first rules, kept while
    /// rules change, given back when they go.
    async fn set_kill_switch(
        &self,
        rules: Option<&KillSwitch>,
        held: Option<u64>,
    ) -> Result<Option<u64>, PlatformError> {
        let mut s = self.state();
        s.calls.push(Call::SetKillSwitch(rules.cloned(), held));
        if s.fail_kill_switch {
            let missing = io::Error::from(io::ErrorKind::NotFound);
            return Err(PlatformError::nft_failed(rules.is_some(), &missing));
        }
        s.kill_switch = rules.cloned();
        Ok(rules.map(|_| held.unwrap_or(7)))
    }

    async fn set_split_dns(
        &self,
        interface: &str,
        server: IpAddr,
        domains: &[String],
    ) -> Result<(), PlatformError> {
        self.state().calls.push(Call::SetSplitDns(
            interface.to_owned(),
            server,
            domains.to_vec(),
        ));
        Ok(())
    }

    async fn clear_split_dns(&self, interface: Option<&str>) -> Result<(), PlatformError> {
        self.state()
            .calls
            .push(Call::ClearSplitDns(interface.map(str::to_owned)));
        Ok(())
    }

    fn resolvers(&self) -> Vec<std::net::IpAddr> {
        self.state().resolvers.clone()
    }
}
