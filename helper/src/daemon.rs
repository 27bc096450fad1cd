//! The daemon: owns every tunnel (device, data plane, routes), the route
//! ledger and the desired tunnels, and answers control requests.
//!
//! Order matters and is kept in one place:
//! - start: sweep what the ledger says a crash left (S7), then bring back
//!   the desired tunnels;
//! - `up`: device, then routes (each ledgered, installed, read back), then
//!   the data plane; any failure undoes what was done, newest first;
//! - `down` and shutdown: the data plane first (it owns the device, so the
//!   interface closes with it and the kernel drops the routes through it),
//!   then every ledgered route still present (exclusion routes through the
//!   physical gateway survive the interface), forgetting each once gone.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, Mutex};
use tokio::task::JoinHandle;
use ztun_engine::{EngineConfig, IpCidr};
use ztun_proto::{
    DownTarget, EchoPolicy, ErrorCode, ErrorReply, Event, InstalledRoute, Reply, Request,
    RouteChange, TunnelName, TunnelSpec, TunnelState, TunnelStatus, Upstream, PROTOCOL_VERSION,
};

use crate::control::Handler;
use crate::platform::{DeviceConfig, Platform, PlatformError};
use crate::relay::echo::EchoForwarder;
use crate::routes::{self, PhysicalGateway, RouteEntry, RouteError, RouteLedger, RouteTarget};
use crate::state::{DesiredTunnels, Loaded};
use crate::tunnel::{self, Binder, SharedCounters};

/// Events kept for a watcher that falls behind before it is told so.
const EVENT_BACKLOG: usize = 256;

struct Tunnel {
    spec: TunnelSpec,
    interface: String,
    routes: Vec<RouteEntry>,
    installed: Vec<InstalledRoute>,
    counters: SharedCounters,
    since: i64,
    data_plane: JoinHandle<()>,
}

impl Tunnel {
    fn status(&self) -> TunnelStatus {
        let mut spec = self.spec.clone();
        spec.upstream = spec.upstream.redacted();
        TunnelStatus {
            spec,
            interface: self.interface.clone(),
            state: if self.data_plane.is_finished() {
                TunnelState::Degraded
            } else {
                TunnelState::Up
            },
            routes: self.installed.clone(),
            addresses: Vec::new(),
            counters: self
                .counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            since: self.since,
        }
    }
}

struct State {
    ledger: RouteLedger,
    desired: DesiredTunnels,
    tunnels: BTreeMap<TunnelName, Tunnel>,
}

pub struct Daemon<P: Platform> {
    platform: Arc<P>,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
}

impl<P: Platform> std::fmt::Debug for Daemon<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").finish_non_exhaustive()
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(code, message)
}

fn route_error(e: &RouteError) -> ErrorReply {
    match e {
        RouteError::Ledger(_) => error(ErrorCode::Internal, e.to_string()),
        _ => error(ErrorCode::Platform, e.to_string()),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl<P: Platform> Daemon<P> {
    /// Opens the state in `state_dir`, sweeps routes a crash left behind and
    /// brings back the desired tunnels. Problems with either are logged and
    /// reported as events, never fatal.
    pub async fn start(platform: P, state_dir: &Path) -> io::Result<Self> {
        let (mut ledger, ledger_loaded) = RouteLedger::open(state_dir)?;
        let (desired, desired_loaded) = DesiredTunnels::open(state_dir)?;
        for (what, loaded) in [
            ("route ledger", &ledger_loaded),
            ("desired tunnels", &desired_loaded),
        ] {
            if let Loaded::Corrupt { moved_to, reason } = loaded {
                tracing::warn!(
                    "{what} was unreadable ({reason}); moved to {}",
                    moved_to.display()
                );
            }
        }
        let platform = Arc::new(platform);
        match routes::sweep(&*platform, &mut ledger).await {
            Ok(swept) if !swept.is_empty() => {
                tracing::info!(
                    "removed {} route(s) left by a previous run: {swept:?}",
                    swept.len()
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "could not remove every leftover route: {e}; they stay in the ledger"
            ),
        }
        let restore = desired.specs().to_vec();
        let daemon = Self {
            platform,
            state: Mutex::new(State {
                ledger,
                desired,
                tunnels: BTreeMap::new(),
            }),
            events: broadcast::channel(EVENT_BACKLOG).0,
        };
        for spec in restore {
            let name = spec.name.clone();
            match daemon.up(spec).await {
                Ok(t) => tracing::info!("restored tunnel {name} on {}", t.interface),
                Err(e) => {
                    tracing::warn!("could not restore tunnel {name}: {}", e.message);
                    daemon.emit(Event::Error {
                        name: Some(name),
                        message: format!("not restored: {}", e.message),
                    });
                }
            }
        }
        Ok(daemon)
    }

    fn emit(&self, event: Event) {
        // No subscribers is not an error.
        let _ = self.events.send(event);
    }

    async fn up(&self, spec: TunnelSpec) -> Result<TunnelStatus, ErrorReply> {
        if let Upstream::Socks5(_) = spec.upstream {
            return Err(error(
                ErrorCode::InvalidArgument,
                "tunnel.upstream: this helper relays directly only; SOCKS5 upstreams are not built yet (use direct)",
            ));
        }
        let mut state = self.state.lock().await;
        if state.tunnels.contains_key(&spec.name) {
            return Err(error(
                ErrorCode::Exists,
                format!("tunnel {} is already up; take it down first", spec.name),
            ));
        }
        let physical = self
            .platform
            .physical_gateway()
            .await
            .map_err(|e| error(ErrorCode::Platform, e.to_string()))?;
        let (device, interface) = self.create_device(&state, &spec)?;
        let plan = routes::plan(&spec, &interface, physical.as_ref(), &[])
            .map_err(|e| error(ErrorCode::Platform, e.to_string()))?;
        let bind = self.binder(physical.as_ref());
        let echo = match spec.icmp {
            EchoPolicy::Forward => Some(
                EchoForwarder::new(spec.ipv6.is_some(), echo_ident(&interface), &*bind).map_err(
                    |e| {
                        error(
                            ErrorCode::Platform,
                            format!("cannot open the ICMP relay: {e}"),
                        )
                    },
                )?,
            ),
            EchoPolicy::Reply | EchoPolicy::Drop => None,
        };
        let installed = routes::install(&*self.platform, &mut state.ledger, &plan)
            .await
            .map_err(|e| route_error(&e))?;
        let counters = SharedCounters::default();
        let config = engine_config(&spec);
        let data_plane = tokio::spawn({
            let (counters, events, name) = (
                Arc::clone(&counters),
                self.events.clone(),
                spec.name.clone(),
            );
            async move {
                if let Err(e) = tunnel::run(Arc::new(device), config, echo, bind, counters).await {
                    tracing::error!("tunnel {name}: data plane stopped: {e}");
                    let _ = events.send(Event::Error {
                        name: Some(name),
                        message: format!("data plane stopped: {e}"),
                    });
                }
            }
        });
        if let Err(e) = state.desired.want(&spec) {
            tracing::warn!(
                "tunnel {} will not be restored after a restart: {e}",
                spec.name
            );
        }
        let tunnel = Tunnel {
            spec,
            interface,
            routes: plan,
            installed,
            counters,
            since: unix_now(),
            data_plane,
        };
        let status = tunnel.status();
        for r in &tunnel.installed {
            self.emit(Event::Route {
                name: tunnel.spec.name.clone(),
                change: RouteChange::Added,
                route: r.clone(),
            });
        }
        state.tunnels.insert(tunnel.spec.name.clone(), tunnel);
        self.emit(Event::Tunnel(Box::new(status.clone())));
        Ok(status)
    }

    /// `ztunN` for the first N no tunnel of ours uses; a name someone else
    /// holds on the system makes the kernel refuse and the next is tried.
    fn create_device(
        &self,
        state: &State,
        spec: &TunnelSpec,
    ) -> Result<(P::Device, String), ErrorReply> {
        let mut last = None;
        for n in 0..16 {
            let name = format!("ztun{n}");
            if state.tunnels.values().any(|t| t.interface == name) {
                continue;
            }
            let config = DeviceConfig {
                name: Some(name),
                address: spec.address,
                peer: spec.peer,
                ipv6: spec.ipv6,
                mtu: spec.mtu,
            };
            match self.platform.create_device(&config) {
                Ok(created) => return Ok(created),
                // The name is taken by someone else's interface: try the next.
                Err(PlatformError::Device(e)) if e.kind() == io::ErrorKind::ResourceBusy => {
                    last = Some(PlatformError::Device(e));
                }
                Err(e) => return Err(error(ErrorCode::Platform, e.to_string())),
            }
        }
        Err(error(
            ErrorCode::Platform,
            last.map_or_else(
                || "no free ztun interface name".to_owned(),
                |e| e.to_string(),
            ),
        ))
    }

    fn binder(&self, physical: Option<&PhysicalGateway>) -> Binder {
        let platform = Arc::clone(&self.platform);
        let interface = physical.map(|p| p.interface.clone());
        Arc::new(move |socket| match &interface {
            Some(i) => platform.bind_to_interface(socket, i),
            // No default route: nothing to pin to, and nothing to loop through.
            None => Ok(()),
        })
    }

    /// Stops the data plane, removes the routes, closes the device.
    async fn teardown(&self, state: &mut State, name: &TunnelName) -> Result<(), ErrorReply> {
        let Some(tunnel) = state.tunnels.remove(name) else {
            return Err(error(
                ErrorCode::NotFound,
                format!("no tunnel named {name}; see ztunctl status"),
            ));
        };
        tunnel.data_plane.abort();
        let _ = tunnel.data_plane.await;
        let result = routes::remove(&*self.platform, &mut state.ledger, &tunnel.routes).await;
        for r in &tunnel.installed {
            self.emit(Event::Route {
                name: name.clone(),
                change: RouteChange::Removed,
                route: r.clone(),
            });
        }
        self.emit(Event::Down { name: name.clone() });
        result.map_err(|e| route_error(&e))
    }

    async fn down(&self, target: DownTarget) -> Result<(), ErrorReply> {
        let mut state = self.state.lock().await;
        let names: Vec<TunnelName> = match target {
            DownTarget::Name(n) => vec![n],
            DownTarget::All => state.tunnels.keys().cloned().collect(),
        };
        let mut first_error = None;
        for name in names {
            let result = self.teardown(&mut state, &name).await;
            if !matches!(&result, Err(e) if e.code == ErrorCode::NotFound) {
                if let Err(e) = state.desired.forget(&name) {
                    tracing::warn!("tunnel {name} may come back after a restart: {e}");
                }
            }
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Takes every tunnel down for a clean exit, keeping the desired set so
    /// they come back at the next start.
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        let names: Vec<TunnelName> = state.tunnels.keys().cloned().collect();
        for name in names {
            if let Err(e) = self.teardown(&mut state, &name).await {
                tracing::warn!("tunnel {name}: {}", e.message);
            }
        }
    }

    async fn change_routes(
        &self,
        name: &TunnelName,
        routes: &[ipnet::IpNet],
        add: bool,
    ) -> Result<TunnelStatus, ErrorReply> {
        let mut state = self.state.lock().await;
        let State {
            ledger, tunnels, ..
        } = &mut *state;
        let Some(tunnel) = tunnels.get_mut(name) else {
            return Err(error(
                ErrorCode::NotFound,
                format!("no tunnel named {name}; see ztunctl status"),
            ));
        };
        if add
            && routes.iter().any(|r| matches!(r, ipnet::IpNet::V6(_)))
            && tunnel.spec.ipv6.is_none()
        {
            return Err(error(
                ErrorCode::InvalidArgument,
                "routes: an IPv6 route needs a tunnel with an IPv6 address",
            ));
        }
        let entries = routes.iter().map(|dst| RouteEntry {
            tunnel: name.clone(),
            dst: *dst,
            target: RouteTarget::Tunnel {
                interface: tunnel.interface.clone(),
            },
        });
        if add {
            // New routes, and tracked ones the kernel no longer resolves to
            // the tunnel: `route add` is also how a lost route is repaired.
            let mut todo = Vec::new();
            for entry in entries {
                if !tunnel.routes.contains(&entry) || !self.resolves_as_planned(&entry).await {
                    todo.push(entry);
                }
            }
            let installed = routes::install(&*self.platform, ledger, &todo)
                .await
                .map_err(|e| route_error(&e))?;
            for (entry, route) in todo.into_iter().zip(installed) {
                self.emit(Event::Route {
                    name: name.clone(),
                    change: RouteChange::Added,
                    route: route.clone(),
                });
                tunnel.installed.retain(|r| r.route != route.route);
                tunnel.installed.push(route);
                if !tunnel.routes.contains(&entry) {
                    tunnel.spec.routes.push(entry.dst);
                    tunnel.routes.push(entry);
                }
            }
        } else {
            let entries: Vec<RouteEntry> = entries.filter(|e| tunnel.routes.contains(e)).collect();
            if !tunnel.spec.full && tunnel.spec.routes.iter().all(|r| routes.contains(r)) {
                return Err(error(
                    ErrorCode::InvalidArgument,
                    format!("routes: that would leave {name} with no routes; take it down instead (ztunctl down {name})"),
                ));
            }
            routes::remove(&*self.platform, ledger, &entries)
                .await
                .map_err(|e| route_error(&e))?;
            tunnel.routes.retain(|e| !entries.contains(e));
            tunnel.installed.retain(|r| !routes.contains(&r.route));
            tunnel.spec.routes.retain(|r| !routes.contains(r));
            for r in &entries {
                self.emit(Event::Route {
                    name: name.clone(),
                    change: RouteChange::Removed,
                    route: r.as_installed(),
                });
            }
        }
        let spec = tunnel.spec.clone();
        if let Err(e) = state.desired.want(&spec) {
            tracing::warn!("route change on {name} will not survive a restart: {e}");
        }
        Ok(state.tunnels[name].status())
    }
}

/// How long the network must be quiet before routes are re-checked: one
/// Wi-Fi switch or DHCP renewal is a burst of kernel messages.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(300);

impl<P: Platform> Daemon<P> {
    /// Whether the kernel still resolves `entry` the way it was installed.
    /// A failed lookup counts as yes: never re-install on a guess.
    async fn resolves_as_planned(&self, entry: &RouteEntry) -> bool {
        match self.platform.lookup_route(entry.dst).await {
            Ok(Some(k)) => entry.matches(&k),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Follows the platform's network-change signals until they stop: after
    /// each burst settles, every tunnel's routes are read again and the ones
    /// that vanished or moved (an interface went down, someone ran `route
    /// delete`, a network switch) are installed again.
    pub async fn follow_network(&self) {
        let mut changes = match self.platform.network_changes() {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(
                    "cannot watch the network, lost routes will not be re-installed: {e}"
                );
                return;
            }
        };
        while changes.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while changes.try_recv().is_ok() {}
            self.reassert().await;
        }
    }

    async fn reassert(&self) {
        let mut state = self.state.lock().await;
        let State {
            ledger, tunnels, ..
        } = &mut *state;
        for tunnel in tunnels.values_mut() {
            let mut lost = Vec::new();
            for entry in &tunnel.routes {
                if !self.resolves_as_planned(entry).await {
                    lost.push(entry.clone());
                }
            }
            if lost.is_empty() {
                continue;
            }
            let name = tunnel.spec.name.clone();
            let shown: Vec<String> = lost.iter().map(|e| e.dst.to_string()).collect();
            match routes::install(&*self.platform, ledger, &lost).await {
                Ok(installed) => {
                    tracing::info!(
                        "tunnel {name}: re-installed lost route(s) {}",
                        shown.join(", ")
                    );
                    for route in installed {
                        tunnel.installed.retain(|r| r.route != route.route);
                        tunnel.installed.push(route.clone());
                        self.emit(Event::Route {
                            name: name.clone(),
                            change: RouteChange::Added,
                            route,
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "tunnel {name}: lost route(s) {} could not be re-installed: {e}",
                        shown.join(", ")
                    );
                    self.emit(Event::Error {
                        name: Some(name),
                        message: format!("lost routes not re-installed: {e}"),
                    });
                }
            }
        }
    }
}

/// What `status` shows for a route the kernel no longer has.
pub const ROUTE_MISSING: &str = "none";

impl<P: Platform> Daemon<P> {
    /// Replaces each route's interface and gateway with the kernel's answer
    /// now, so status (and `ztunctl doctor`) shows what is true, not what was
    /// true at install time: a route someone deleted or moved shows as such.
    async fn verify(&self, status: &mut TunnelStatus) {
        match self.platform.interface_addresses(&status.interface).await {
            Ok(addresses) => status.addresses = addresses,
            Err(e) => tracing::warn!("cannot read the addresses of {}: {e}", status.interface),
        }
        for route in &mut status.routes {
            match self.platform.lookup_route(route.route).await {
                Ok(Some(k)) => (route.interface, route.gateway) = (k.interface, k.gateway),
                Ok(None) => (route.interface, route.gateway) = (ROUTE_MISSING.to_owned(), None),
                Err(e) => tracing::warn!("cannot read back {}: {e}", route.route),
            }
        }
    }
}

/// The ICMP identifier for a tunnel's forwarder: distinct per interface, so
/// two tunnels' raw sockets never claim each other's replies.
fn echo_ident(interface: &str) -> u16 {
    let n: u16 = interface
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(0);
    let pid = u16::try_from(std::process::id() & 0xff).unwrap_or(0);
    0x7a00 ^ (pid << 4) ^ n
}

fn engine_config(spec: &TunnelSpec) -> EngineConfig {
    EngineConfig {
        mtu: usize::from(spec.mtu),
        // The kernel routes only our prefixes into the tunnel, and route.add
        // can widen them while the tunnel runs, so the engine takes every
        // destination it is given.
        routed: Vec::<IpCidr>::new(),
        echo: match spec.icmp {
            EchoPolicy::Reply => ztun_engine::EchoPolicy::Reply,
            EchoPolicy::Forward => ztun_engine::EchoPolicy::Forward,
            EchoPolicy::Drop => ztun_engine::EchoPolicy::Drop,
        },
        // Flows end in the helper; large buffers cost memory only when used.
        tcp_rx_buffer: 64 * 1024,
        tcp_tx_buffer: 64 * 1024,
        ..EngineConfig::default()
    }
}

impl<P: Platform> Handler for Daemon<P> {
    async fn handle(&self, request: Request) -> Result<Reply, ErrorReply> {
        match request {
            Request::Version => Ok(Reply::Version {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                protocol: PROTOCOL_VERSION,
            }),
            Request::Up(spec) => self.up(spec).await.map(|s| Reply::Tunnel(Box::new(s))),
            Request::Down(target) => self.down(target).await.map(|()| Reply::Done),
            Request::Status(name) => {
                let state = self.state.lock().await;
                let mut list: Vec<TunnelStatus> = state
                    .tunnels
                    .values()
                    .filter(|t| name.as_ref().is_none_or(|n| &t.spec.name == n))
                    .map(Tunnel::status)
                    .collect();
                let stale_routes = state
                    .ledger
                    .entries()
                    .iter()
                    .filter(|e| {
                        !state
                            .tunnels
                            .get(&e.tunnel)
                            .is_some_and(|t| t.routes.contains(e))
                    })
                    .map(RouteEntry::as_installed)
                    .collect();
                drop(state);
                if let Some(n) = name.filter(|_| list.is_empty()) {
                    return Err(error(
                        ErrorCode::NotFound,
                        format!("no tunnel named {n}; see ztunctl status"),
                    ));
                }
                for status in &mut list {
                    self.verify(status).await;
                }
                Ok(Reply::Tunnels {
                    tunnels: list,
                    stale_routes,
                })
            }
            Request::RouteAdd { name, routes } => self
                .change_routes(&name, &routes, true)
                .await
                .map(|s| Reply::Tunnel(Box::new(s))),
            Request::RouteRemove { name, routes } => self
                .change_routes(&name, &routes, false)
                .await
                .map(|s| Reply::Tunnel(Box::new(s))),
            Request::Watch(_) => Ok(Reply::Done),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::fake::FakePlatform;
    use ztun_proto::InterfaceAddress;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn spec() -> TunnelSpec {
        let mut s = TunnelSpec::new("work".parse().unwrap());
        s.routes = vec!["203.0.113.0/24".parse().unwrap()];
        // reply: the forwarder's raw sockets would need root.
        s.icmp = EchoPolicy::Reply;
        s
    }

    async fn status(d: &Daemon<FakePlatform>) -> (Vec<TunnelStatus>, Vec<InstalledRoute>) {
        match d.handle(Request::Status(None)).await.unwrap() {
            Reply::Tunnels {
                tunnels,
                stale_routes,
            } => (tunnels, stale_routes),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_shows_the_interfaces_addresses_and_routes_as_the_kernel_has_them() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let d = Daemon::start(FakePlatform::new(None), dir.path())
                .await
                .unwrap();
            d.handle(Request::Up(spec())).await.unwrap();
            let (tunnels, stale) = status(&d).await;
            assert_eq!(tunnels[0].interface, "ztun0");
            assert_eq!(
                tunnels[0].addresses,
                [InterfaceAddress {
                    address: "198.18.0.1/32".parse().unwrap(),
                    peer: Some("198.18.0.2".parse().unwrap())
                }]
            );
            assert_eq!(tunnels[0].routes[0].interface, "ztun0");
            assert!(stale.is_empty());
        });
    }

    #[test]
    fn a_route_that_cannot_be_removed_shows_as_stale_until_the_next_start_sweeps_it() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(None);
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            d.handle(Request::Up(spec())).await.unwrap();
            fake.fail_delete(Some("203.0.113.0/24".parse().unwrap()));
            let err = d
                .handle(Request::Down(DownTarget::Name("work".parse().unwrap())))
                .await
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::Platform);
            let (tunnels, stale) = status(&d).await;
            assert!(tunnels.is_empty());
            assert_eq!(
                stale
                    .iter()
                    .map(|r| r.route.to_string())
                    .collect::<Vec<_>>(),
                ["203.0.113.0/24"]
            );
            drop(d);

            fake.fail_delete(None);
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            let (tunnels, stale) = status(&d).await;
            assert!(tunnels.is_empty(), "down removed it from the desired set");
            assert!(stale.is_empty(), "the start-up sweep removed it");
            assert!(fake.table().is_empty());
        });
    }

    #[test]
    fn a_second_tunnel_of_the_same_name_is_refused_and_names_are_reused_after_down() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let d = Daemon::start(FakePlatform::new(None), dir.path())
                .await
                .unwrap();
            d.handle(Request::Up(spec())).await.unwrap();
            let err = d.handle(Request::Up(spec())).await.unwrap_err();
            assert_eq!(
                (err.code, err.message.as_str()),
                (
                    ErrorCode::Exists,
                    "tunnel work is already up; take it down first"
                )
            );
            d.handle(Request::Down(DownTarget::All)).await.unwrap();
            let Reply::Tunnel(t) = d.handle(Request::Up(spec())).await.unwrap() else {
                panic!()
            };
            assert_eq!(t.interface, "ztun0");
        });
    }

    #[test]
    fn a_socks5_upstream_is_refused_with_a_clear_error_until_it_is_built() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let d = Daemon::start(FakePlatform::new(None), dir.path())
                .await
                .unwrap();
            let mut s = spec();
            s.upstream = "socks5://192.0.2.10:1080".parse().unwrap();
            let err = d.handle(Request::Up(s)).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert!(
                err.message.contains("SOCKS5 upstreams are not built yet"),
                "{}",
                err.message
            );
        });
    }

    #[test]
    fn a_route_lost_behind_the_daemons_back_is_reinstalled_after_a_network_change() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(None);
            let d = Arc::new(Daemon::start(fake.clone(), dir.path()).await.unwrap());
            let follower = tokio::spawn({
                let d = Arc::clone(&d);
                async move { d.follow_network().await }
            });
            tokio::task::yield_now().await;
            d.handle(Request::Up(spec())).await.unwrap();
            let mut events = d.subscribe();
            let dst = "203.0.113.0/24".parse().unwrap();
            fake.vanish(dst);
            assert_eq!(status(&d).await.0[0].routes[0].interface, ROUTE_MISSING);
            fake.network_changed();
            let event = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(
                matches!(&event, Event::Route { change: RouteChange::Added, route, .. } if route.route == dst),
                "{event:?}"
            );
            assert_eq!(status(&d).await.0[0].routes[0].interface, "ztun0");
            follower.abort();
        });
    }
}
