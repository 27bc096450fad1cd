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
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio::sync::{broadcast, mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;
use ztun_engine::{EngineConfig, IpCidr};
use ztun_proto::{
    DnsMode, DownTarget, EchoPolicy, ErrorCode, ErrorReply, Event, Flow, Host, InstalledRoute,
    NetworkCause, ProxyServer, Reply, Request, ResolverRoute, RouteChange, TunnelName, TunnelSpec,
    TunnelState, TunnelStatus, Upstream, PROTOCOL_VERSION,
};

use crate::control::Handler;
use crate::fakedns::{FakeDns, Pool};
use crate::killswitch::KillSwitch;
use crate::platform::{DeviceConfig, Platform, PlatformError};
use crate::relay::echo::EchoForwarder;
use crate::relay::{Binder, Proxy, ProxyKind, Relay};
use crate::routes::{self, PhysicalGateway, RouteEntry, RouteError, RouteLedger, RouteTarget};
use crate::state::{DesiredTunnels, KillSwitchRecord, Loaded, StateFile};
use crate::tunnel::{self, FlowsQuery, SharedCounters};

/// Events kept for a watcher that falls behind before it is told so.
const EVENT_BACKLOG: usize = 256;
/// `flows` requests waiting for one data plane; more are refused as busy.
const FLOWS_QUERIES: usize = 8;
/// How long a data plane may take to list its flows.
const FLOWS_TIMEOUT: Duration = Duration::from_secs(2);

struct Tunnel {
    spec: TunnelSpec,
    interface: String,
    routes: Vec<RouteEntry>,
    installed: Vec<InstalledRoute>,
    /// The physical network the tunnel's sockets are bound to and its
    /// exclusions leave through; followed across network changes.
    physical: Arc<RwLock<Option<PhysicalGateway>>>,
    /// The SOCKS5 server's address, kept outside the tunnel in full mode.
    upstream_ips: Vec<IpAddr>,
    relay: Relay,
    counters: SharedCounters,
    /// Asks the data plane for its open flows.
    flows: mpsc::Sender<FlowsQuery>,
    since: i64,
    data_plane: JoinHandle<()>,
}

impl Tunnel {
    fn status(&self) -> TunnelStatus {
        let spec = self.spec.redacted();
        let mut health = self.relay.proxies().iter().map(|p| p.health.snapshot());
        let upstream_health = health.next();
        let failover_health: Vec<_> = health.collect();
        let physical = self
            .physical
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Degraded while any proxy is down, even with a failover carrying
        // the flows: someone should look at it.
        let upstream_down = upstream_health
            .iter()
            .chain(&failover_health)
            .any(|h| !h.reachable);
        TunnelStatus {
            spec,
            interface: self.interface.clone(),
            state: if self.data_plane.is_finished() || upstream_down {
                TunnelState::Degraded
            } else {
                TunnelState::Up
            },
            routes: self.installed.clone(),
            addresses: Vec::new(),
            counters: self.counters.snapshot(),
            upstream_health,
            failover_health,
            active_upstream: self.relay.active().map(|p| p.url.clone()),
            resolvers: Vec::new(),
            physical_gateway: physical.as_ref().and_then(|p| p.v4.or(p.v6)),
            physical: physical.map(|p| p.interface),
            since: self.since,
        }
    }
}

struct State {
    /// The physical network as last seen, to tell a change from a repeat.
    physical: Option<PhysicalGateway>,
    ledger: RouteLedger,
    desired: DesiredTunnels,
    tunnels: BTreeMap<TunnelName, Tunnel>,
    /// The kill switch this run put in place (`None` before the first).
    kill_switch: Option<KillSwitch>,
    /// Whether one may be in the kernel, and pf's token: survives restarts.
    kill_switch_record: KillSwitchRecord,
}

impl State {
    /// The kill switch to hold now: while any running or wanted tunnel asks
    /// for it, everything may leave only through our tunnels, to an
    /// upstream or to an exclusion. A wanted tunnel that could not come up
    /// keeps it (fail closed) until `down` forgets it.
    fn kill_switch_wanted(&self) -> Option<KillSwitch> {
        let running = self.tunnels.values().map(|t| &t.spec);
        let wanted: Vec<&TunnelSpec> = running.chain(self.desired.specs()).collect();
        if !wanted.iter().any(|s| s.kill_switch) {
            return None;
        }
        let mut allow: Vec<IpNet> = self
            .tunnels
            .values()
            .flat_map(|t| t.upstream_ips.iter().map(|ip| IpNet::from(*ip)))
            .collect();
        for spec in &wanted {
            allow.extend(&spec.exclude);
            // An upstream given by address is known before it is resolved:
            // a tunnel not (yet) up still lets its proxy through.
            allow.extend(spec.upstreams().filter_map(|u| match u.proxy()?.host {
                Host::Ip(ip) => Some(IpNet::from(ip)),
                Host::Domain(_) => None,
            }));
        }
        allow.sort_unstable();
        allow.dedup();
        let helper_sockets = self.tunnels.values().any(|t| {
            t.spec.icmp == EchoPolicy::Forward
                || t.spec
                    .upstreams()
                    .any(|u| matches!(u, Upstream::Direct | Upstream::Socks5(_)))
        });
        Some(KillSwitch {
            tunnels: self.tunnels.values().map(|t| t.interface.clone()).collect(),
            allow,
            helper_sockets,
        })
    }
}

pub struct Daemon<P: Platform> {
    platform: Arc<P>,
    /// Where the state files live (the fake DNS maps among them).
    state_dir: std::path::PathBuf,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
    /// Where data planes run (their devices, sockets and tasks).
    data_plane: tokio::runtime::Handle,
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
    /// [`Daemon::start_on`] with data planes on the current runtime.
    pub async fn start(platform: P, state_dir: &Path) -> io::Result<Self> {
        Self::start_on(platform, state_dir, tokio::runtime::Handle::current()).await
    }

    /// Opens the state in `state_dir`, sweeps routes a crash left behind and
    /// brings back the desired tunnels. Problems with either are logged and
    /// reported as events, never fatal. Each tunnel's data plane runs on
    /// `data_plane`: its device and sockets register there, so its wakeups
    /// stay on that runtime's threads.
    pub async fn start_on(
        platform: P,
        state_dir: &Path,
        data_plane: tokio::runtime::Handle,
    ) -> io::Result<Self> {
        let (mut ledger, ledger_loaded) = RouteLedger::open(state_dir)?;
        let (desired, desired_loaded) = DesiredTunnels::open(state_dir)?;
        let (kill_switch_record, record_loaded) = KillSwitchRecord::open(state_dir)?;
        for (what, loaded) in [
            ("route ledger", ledger_loaded.map(drop)),
            ("desired tunnels", desired_loaded.map(drop)),
            ("kill switch record", record_loaded),
        ] {
            if let Loaded::Corrupt { moved_to, reason } = loaded {
                tracing::warn!(
                    "{what} was unreadable ({reason}); moved to {}",
                    moved_to.display()
                );
            }
        }
        let platform = Arc::new(platform);
        crate::fault::begin("sweep");
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
        // Resolver files a crashed run left point at a peer no one answers.
        if let Err(e) = platform.clear_split_dns(None).await {
            tracing::warn!("{e}");
        }
        let restore = desired.specs().to_vec();
        let physical = platform.physical_gateway().await.unwrap_or_default();
        let daemon = Self {
            platform,
            state_dir: state_dir.to_owned(),
            state: Mutex::new(State {
                physical,
                ledger,
                desired,
                tunnels: BTreeMap::new(),
                kill_switch: None,
                kill_switch_record,
            }),
            events: broadcast::channel(EVENT_BACKLOG).0,
            data_plane,
        };
        // A kill switch the last run left stays in place while the tunnels
        // come back (no window open between two runs); then it is made to
        // fit what is up, or removed when nothing wants it.
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
        let mut state = daemon.state.lock().await;
        if let Err(e) = daemon.enforce_kill_switch(&mut state).await {
            tracing::error!("{e}");
            daemon.emit(Event::Error {
                name: None,
                message: e.to_string(),
            });
        }
        drop(state);
        Ok(daemon)
    }

    fn emit(&self, event: Event) {
        // No subscribers is not an error.
        let _ = self.events.send(event);
    }

    async fn up(&self, spec: TunnelSpec) -> Result<TunnelStatus, ErrorReply> {
        let mut proxies = Vec::new();
        for (i, upstream) in spec.upstreams().enumerate() {
            let (kind, server) = match upstream {
                Upstream::Direct => continue,
                Upstream::Socks5(p) => (ProxyKind::Socks5, p),
                Upstream::Http(p) => (ProxyKind::Http, p),
            };
            let key = if i == 0 {
                "tunnel.upstream".to_owned()
            } else {
                format!("tunnel.failover[{}]", i - 1)
            };
            let address = resolve(server, &key).await?;
            let url = upstream.redacted().to_string();
            proxies.push(Proxy::new(kind, address, server.auth.clone(), url));
        }
        let mut upstream_ips: Vec<IpAddr> = proxies.iter().map(|p| p.server.ip()).collect();
        upstream_ips.sort_unstable();
        upstream_ips.dedup();
        let mut state = self.state.lock().await;
        crate::fault::begin("up");
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
        let (device, interface) = {
            let _on = self.data_plane.enter();
            self.create_device(&state, &spec)?
        };
        crate::fault::step("device created");
        let plan = self
            .plan(&spec, &interface, physical.as_ref(), &upstream_ips)
            .map_err(|e| error(ErrorCode::Platform, e.to_string()))?;
        let physical = Arc::new(RwLock::new(physical));
        let bind = self.binder(Arc::clone(&physical));
        let relay = if proxies.is_empty() {
            Relay::direct(Arc::clone(&bind))
        } else {
            Relay::proxied(Arc::clone(&bind), proxies, spec.dns_over_tcp)
        };
        let echo = match spec.icmp {
            EchoPolicy::Forward => Some({
                let _on = self.data_plane.enter();
                EchoForwarder::new(spec.ipv6.is_some(), echo_ident(&interface), &*bind).map_err(
                    |e| {
                        error(
                            ErrorCode::Platform,
                            format!("cannot open the ICMP relay: {e}"),
                        )
                    },
                )?
            }),
            EchoPolicy::Reply | EchoPolicy::Drop => None,
        };
        let installed = routes::install(&*self.platform, &mut state.ledger, &plan)
            .await
            .map_err(|e| route_error(&e))?;
        // With the exclusions in place: is the upstream there, and does it
        // take our credentials? The tunnel comes up either way (the server
        // may come later); status says what is wrong.
        if let Err(e) = relay.probe_all().await {
            tracing::warn!("tunnel {}: upstream: {e}", spec.name);
        }
        let dns = (spec.dns == DnsMode::Fake).then(|| self.fake_dns(&spec));
        let counters = SharedCounters::default();
        let (flows, queries) = mpsc::channel(FLOWS_QUERIES);
        let config = engine_config(&spec);
        let data_plane = self.data_plane.spawn({
            let (counters, events, name, relay) = (
                Arc::clone(&counters),
                self.events.clone(),
                spec.name.clone(),
                relay.clone(),
            );
            async move {
                let device = Arc::new(device);
                if let Err(e) =
                    tunnel::run(device, config, echo, relay, dns, counters, queries).await
                {
                    tracing::error!("tunnel {name}: data plane stopped: {e}");
                    let _ = events.send(Event::Error {
                        name: Some(name),
                        message: format!("data plane stopped: {e}"),
                    });
                }
            }
        });
        crate::fault::step("data plane started");
        if let Err(e) = state.desired.want(&spec) {
            tracing::warn!(
                "tunnel {} will not be restored after a restart: {e}",
                spec.name
            );
        }
        crate::fault::step("desired saved");
        let tunnel = Tunnel {
            spec,
            interface,
            routes: plan,
            installed,
            physical,
            upstream_ips,
            relay,
            counters,
            flows,
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
        let name = tunnel.spec.name.clone();
        state.tunnels.insert(name.clone(), tunnel);
        if let Err(e) = self.enforce_kill_switch(&mut state).await {
            // Without its firewall the tunnel is not what was asked for.
            let _ = self.teardown(&mut state, &name).await;
            if let Err(e) = state.desired.forget(&name) {
                tracing::warn!("tunnel {name} may come back after a restart: {e}");
            }
            if let Err(e) = self.enforce_kill_switch(&mut state).await {
                tracing::error!("{e}");
            }
            return Err(error(ErrorCode::Platform, e.to_string()));
        }
        let tunnel = &state.tunnels[&name];
        if split_dns(&tunnel.spec) {
            let (interface, spec) = (&tunnel.interface, &tunnel.spec);
            let peer = IpAddr::V4(spec.peer);
            if let Err(e) = self
                .platform
                .set_split_dns(interface, peer, &spec.route_domains)
                .await
            {
                // The tunnel works without it: queries sent to the peer are
                // answered. Say what to do instead.
                let message = format!(
                    "{e}; send the queries for {} to {peer} yourself",
                    spec.route_domains.join(", ")
                );
                tracing::warn!("tunnel {name}: {message}");
                self.emit(Event::Error {
                    name: Some(name.clone()),
                    message,
                });
            }
        }
        self.emit(Event::Tunnel(Box::new(status.clone())));
        Ok(status)
    }

    /// The files a tunnel's fake DNS maps are kept in, IPv4 then IPv6:
    /// 0600, as the names in them are the sites this machine visited.
    fn fake_dns_files(&self, name: &TunnelName) -> [StateFile; 2] {
        ["fake-dns", "fake-dns6"]
            .map(|f| StateFile::new(&self.state_dir, &format!("{f}-{name}.plist"), 0o600))
    }

    /// A tunnel's fake DNS, with the maps a previous run of it left when
    /// the pools are the same. A transient tunnel keeps no map: it never
    /// comes back.
    fn fake_dns(&self, spec: &TunnelSpec) -> FakeDns {
        let [file, file6] = if spec.transient {
            [None, None]
        } else {
            self.fake_dns_files(&spec.name).map(Some)
        };
        let reserved = vec![IpAddr::V4(spec.address.addr()), IpAddr::V4(spec.peer)];
        let pool = Self::restored(
            spec,
            Pool::new(IpNet::V4(spec.fake_pool), reserved),
            file.as_ref(),
        );
        let pool6 = spec.fake_pool6.map(|net| {
            let reserved = spec.ipv6.iter().map(|a| IpAddr::V6(a.addr())).collect();
            Self::restored(spec, Pool::new(IpNet::V6(net), reserved), file6.as_ref())
        });
        FakeDns {
            pool,
            pool6,
            answer_at: (!spec.full).then_some(IpAddr::V4(spec.peer)),
            domains: spec.route_domains.clone(),
            file,
            file6,
            exhausted: 0,
        }
    }

    /// `pool` with the mappings `file` holds, if there is one.
    fn restored(spec: &TunnelSpec, mut pool: Pool, file: Option<&StateFile>) -> Pool {
        let Some(file) = file else {
            return pool;
        };
        match file.load(|v| Ok(v.clone())) {
            Ok(Loaded::Loaded(saved)) => {
                let n = pool.restore(&saved, crate::fakedns::unix_now());
                tracing::info!(
                    "tunnel {}: {n} fake DNS name(s) of {} taken back",
                    spec.name,
                    pool.net()
                );
            }
            Ok(Loaded::Fresh) => {}
            Ok(Loaded::Corrupt { moved_to, reason }) => tracing::warn!(
                "the fake DNS map was unreadable ({reason}); moved to {}",
                moved_to.display()
            ),
            Err(e) => tracing::warn!("the fake DNS map could not be read: {e}"),
        }
        pool
    }

    /// Makes the firewall hold [`State::kill_switch_wanted`]: installs,
    /// replaces or removes the kill switch when it differs from what this
    /// run put in place, or when an earlier run may have left one.
    async fn enforce_kill_switch(&self, state: &mut State) -> Result<(), PlatformError> {
        let wanted = state.kill_switch_wanted();
        let settled = match &wanted {
            None => !state.kill_switch_record.installed(),
            Some(_) => state.kill_switch == wanted,
        };
        if settled {
            return Ok(());
        }
        let held = state.kill_switch_record.token();
        let token = self.platform.set_kill_switch(wanted.as_ref(), held).await?;
        if let Some(k) = &wanted {
            tracing::info!(
                "kill switch: only {:?}, {} allowed prefix(es) and loopback get out",
                k.tunnels,
                k.allow.len()
            );
        } else {
            tracing::info!("kill switch removed");
        }
        if let Err(e) = state.kill_switch_record.record(wanted.is_some(), token) {
            tracing::warn!("the kill switch record was not saved ({e}); the next start clears the firewall anyway");
        }
        state.kill_switch = wanted;
        Ok(())
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

    /// Binds each outbound socket to the physical interface as it is when
    /// the socket opens, so sockets opened after a network change leave
    /// through the new one.
    fn binder(&self, physical: Arc<RwLock<Option<PhysicalGateway>>>) -> Binder {
        let platform = Arc::clone(&self.platform);
        Arc::new(move |socket| {
            let interface = physical
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|p| p.interface.clone());
            match interface {
                Some(i) => platform.bind_to_interface(socket, &i),
                // No default route: nothing to pin to, and nothing to loop through.
                None => Ok(()),
            }
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
        crate::fault::step("data plane stopped");
        if split_dns(&tunnel.spec) {
            if let Err(e) = self.platform.clear_split_dns(Some(&tunnel.interface)).await {
                tracing::warn!("tunnel {name}: {e}");
            }
        }
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
        crate::fault::begin("down");
        let names: Vec<TunnelName> = match target {
            DownTarget::Name(n) => vec![n],
            // Wanted tunnels that are not up (a restore failed) included:
            // down is how a kill switch they hold is let go.
            DownTarget::All => {
                let mut names: Vec<TunnelName> = state.tunnels.keys().cloned().collect();
                names.extend(state.desired.specs().iter().map(|s| s.name.clone()));
                names.sort_unstable();
                names.dedup();
                names
            }
        };
        let mut first_error = None;
        for name in names {
            let wanted = state.desired.specs().iter().any(|s| s.name == name);
            let mut result = self.teardown(&mut state, &name).await;
            if wanted && matches!(&result, Err(e) if e.code == ErrorCode::NotFound) {
                result = Ok(());
            }
            if !matches!(&result, Err(e) if e.code == ErrorCode::NotFound) {
                if let Err(e) = state.desired.forget(&name) {
                    tracing::warn!("tunnel {name} may come back after a restart: {e}");
                }
                for file in self.fake_dns_files(&name) {
                    match std::fs::remove_file(file.path()) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            tracing::warn!("tunnel {name}: its fake DNS map stays: {e}");
                        }
                        _ => {}
                    }
                }
                crate::fault::step("desired forgotten");
            }
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = self.enforce_kill_switch(&mut state).await {
            first_error.get_or_insert(error(ErrorCode::Platform, e.to_string()));
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
        crate::fault::begin(if add { "route.add" } else { "route.remove" });
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
        crate::fault::step("desired saved");
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
    ///
    /// Waking from sleep counts as a change: the monitor may have missed
    /// what happened while the machine slept.
    pub async fn follow_network(&self) {
        let mut changes = match self.platform.network_changes() {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!(
                    "cannot watch the network: lost routes are re-installed only after sleep: {e}"
                );
                None
            }
        };
        let mut clocks = crate::wake::Clocks::now();
        let mut tick = tokio::time::interval(crate::wake::PERIOD);
        loop {
            let cause = tokio::select! {
                change = async {
                    match changes.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if change.is_none() {
                        changes = None;
                        continue;
                    }
                    NetworkCause::Changed
                }
                _ = tick.tick() => {
                    let now = crate::wake::Clocks::now();
                    let slept = clocks.zip(now).and_then(|(a, b)| crate::wake::slept(a, b));
                    clocks = now;
                    let Some(slept) = slept else { continue };
                    tracing::info!("woke after {} s asleep: re-checking the network", slept.as_secs());
                    NetworkCause::Woke
                }
            };
            tokio::time::sleep(SETTLE).await;
            if let Some(rx) = changes.as_mut() {
                while rx.try_recv().is_ok() {}
            }
            self.reassert(cause).await;
        }
    }

    async fn reassert(&self, cause: NetworkCause) {
        let physical = match self.platform.physical_gateway().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot read the physical network: {e}");
                None
            }
        };
        let mut state = self.state.lock().await;
        crate::fault::begin("reassert");
        if cause == NetworkCause::Woke || state.physical != physical {
            state.physical.clone_from(&physical);
            self.emit(Event::Network {
                cause,
                interface: physical.as_ref().map(|p| p.interface.clone()),
                gateway: physical.as_ref().and_then(|p| p.v4.or(p.v6)),
            });
            if cause == NetworkCause::Woke {
                // The upstream may be gone or back; find out now, not at
                // the next flow.
                for tunnel in state.tunnels.values() {
                    let relay = tunnel.relay.clone();
                    tokio::spawn(async move { relay.probe_all().await });
                }
            }
        }
        let State {
            ledger, tunnels, ..
        } = &mut *state;
        for tunnel in tunnels.values_mut() {
            if let Some(now) = &physical {
                self.follow_physical(ledger, tunnel, now).await;
            }
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

impl<P: Platform> Daemon<P> {
    /// After the physical network changed (another interface or gateway):
    /// binds new sockets to it, and in full mode moves the exclusion
    /// routes (the upstream server, `exclude`) to its gateway. With no
    /// physical network at all, nothing changes: sockets stay bound to the
    /// old interface and fail, rather than loop into the tunnel.
    async fn follow_physical(
        &self,
        ledger: &mut RouteLedger,
        tunnel: &mut Tunnel,
        now: &PhysicalGateway,
    ) {
        let before = {
            let mut p = tunnel
                .physical
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if p.as_ref() == Some(now) {
                return;
            }
            p.replace(now.clone())
        };
        let name = tunnel.spec.name.clone();
        tracing::info!(
            "tunnel {name}: physical network is now {} (gateway {}), was {}",
            now.interface,
            now.v4
                .or(now.v6)
                .map_or_else(|| "none".to_owned(), |g| g.to_string()),
            before.map_or_else(|| "none".to_owned(), |b| b.interface)
        );
        if !tunnel.spec.full {
            return;
        }
        let plan = match self.plan(
            &tunnel.spec,
            &tunnel.interface,
            Some(now),
            &tunnel.upstream_ips,
        ) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!("tunnel {name}: exclusions not moved: {e}");
                self.emit(Event::Error {
                    name: Some(name),
                    message: format!("exclusions not moved: {e}"),
                });
                return;
            }
        };
        let stale: Vec<RouteEntry> = tunnel
            .routes
            .iter()
            .filter(|e| !plan.contains(e))
            .cloned()
            .collect();
        let fresh: Vec<RouteEntry> = plan
            .iter()
            .filter(|e| !tunnel.routes.contains(e))
            .cloned()
            .collect();
        // Old gateway routes first: the new ones have the same destinations.
        if let Err(e) = routes::remove(&*self.platform, ledger, &stale).await {
            tracing::warn!("tunnel {name}: old exclusion routes not all removed: {e}");
        }
        for entry in &stale {
            tunnel.installed.retain(|r| r.route != entry.dst);
            self.emit(Event::Route {
                name: name.clone(),
                change: RouteChange::Removed,
                route: entry.as_installed(),
            });
        }
        tunnel.routes.retain(|e| !stale.contains(e));
        match routes::install(&*self.platform, ledger, &fresh).await {
            Ok(installed) => {
                for route in installed {
                    tunnel.installed.push(route.clone());
                    self.emit(Event::Route {
                        name: name.clone(),
                        change: RouteChange::Added,
                        route,
                    });
                }
                tunnel.routes.extend(fresh);
            }
            Err(e) => {
                tracing::warn!("tunnel {name}: exclusions not re-pinned: {e}");
                self.emit(Event::Error {
                    name: Some(name),
                    message: format!("exclusions not re-pinned: {e}"),
                });
            }
        }
    }
}

impl<P: Platform> Daemon<P> {
    /// The routes a tunnel needs now: the route plan, and in full mode a
    /// host route into the tunnel for each system resolver, which would
    /// otherwise leave beside the tunnel whenever it is on the local link
    /// (a /24 beats the tunnel's /1 halves).
    fn plan(
        &self,
        spec: &TunnelSpec,
        interface: &str,
        physical: Option<&PhysicalGateway>,
        upstream: &[IpAddr],
    ) -> Result<Vec<RouteEntry>, routes::PlanError> {
        let mut plan = routes::plan(spec, interface, physical, upstream)?;
        for dst in crate::resolvers::to_pin(spec, &self.platform.resolvers(), upstream) {
            let entry = RouteEntry {
                tunnel: spec.name.clone(),
                dst,
                target: RouteTarget::Tunnel {
                    interface: interface.to_owned(),
                },
            };
            if !plan.contains(&entry) {
                plan.push(entry);
            }
        }
        Ok(plan)
    }
}

/// A proxy's address: the host as given, or its name resolved now (full
/// mode pins this address outside the tunnel). `key` names the field in
/// errors.
async fn resolve(upstream: &ProxyServer, key: &str) -> Result<SocketAddr, ErrorReply> {
    let name = match &upstream.host {
        Host::Ip(ip) => return Ok(SocketAddr::new(*ip, upstream.port)),
        Host::Domain(name) => name,
    };
    let unresolved = |why: String| {
        error(
            ErrorCode::InvalidArgument,
            format!("{key}: cannot resolve {name}: {why}; give the server's address instead"),
        )
    };
    tokio::net::lookup_host((name.as_str(), upstream.port))
        .await
        .map_err(|e| unresolved(e.to_string()))?
        .next()
        .ok_or_else(|| unresolved("no address".to_owned()))
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
        status.resolvers.clear();
        for address in self.platform.resolvers() {
            // Full mode pins each resolver with a host route; in
            // target-only mode a resolver goes through if a tunnel route
            // (read back above) covers it.
            let pinned = matches!(
                self.platform.lookup_route(IpNet::from(address)).await,
                Ok(Some(k)) if k.interface == status.interface
            );
            let covered = !status.spec.full
                && status
                    .routes
                    .iter()
                    .any(|r| r.interface == status.interface && r.route.contains(&address));
            let through_tunnel = pinned || covered;
            status.resolvers.push(ResolverRoute {
                address,
                through_tunnel,
            });
        }
    }
}

impl<P: Platform> Daemon<P> {
    /// What `doctor` needs of each tunnel (all, or the named one), copied so
    /// that its network I/O runs without the state lock.
    async fn doctor_views(&self, name: Option<&TunnelName>) -> Vec<crate::doctor::TunnelView> {
        let state = self.state.lock().await;
        state
            .tunnels
            .values()
            .filter(|t| name.is_none_or(|n| &t.spec.name == n))
            .map(|t| crate::doctor::TunnelView::new(&t.spec, &t.interface, &t.routes, &t.relay))
            .collect()
    }
}

impl<P: Platform> Daemon<P> {
    /// Each tunnel's open flows (all tunnels, or the named one), asked of
    /// the data planes without the state lock held; oldest first.
    async fn flows(&self, name: Option<&TunnelName>) -> Result<Reply, ErrorReply> {
        let asks: Vec<(TunnelName, mpsc::Sender<FlowsQuery>)> = {
            let state = self.state.lock().await;
            state
                .tunnels
                .values()
                .filter(|t| name.is_none_or(|n| &t.spec.name == n))
                .map(|t| (t.spec.name.clone(), t.flows.clone()))
                .collect()
        };
        if let Some(n) = name.filter(|_| asks.is_empty()) {
            return Err(error(
                ErrorCode::NotFound,
                format!("no tunnel named {n}; see ztunctl status"),
            ));
        }
        let (mut flows, mut omitted) = (Vec::new(), 0);
        for (tunnel, ask) in asks {
            let (reply, answer) = oneshot::channel();
            let busy = || {
                error(
                    ErrorCode::Internal,
                    format!("tunnel {tunnel}'s data plane did not list its flows; try again"),
                )
            };
            if ask.try_send(reply).is_err() {
                // A stopped data plane has no flows; a busy one says so.
                if ask.is_closed() {
                    continue;
                }
                return Err(busy());
            }
            let list = match tokio::time::timeout(FLOWS_TIMEOUT, answer).await {
                Ok(Ok(list)) => list,
                Ok(Err(_)) => continue,
                Err(_) => return Err(busy()),
            };
            omitted += list.omitted;
            flows.extend(list.flows.into_iter().map(|f| Flow {
                tunnel: tunnel.clone(),
                protocol: f.protocol,
                source: f.src,
                destination: f.dst,
                host: f.host,
                upstream: f.upstream,
                bytes_up: f.bytes_up,
                bytes_down: f.bytes_down,
                age_millis: u64::try_from(f.age.as_millis()).unwrap_or(u64::MAX),
            }));
        }
        flows.sort_by(|a, b| {
            (&a.tunnel, std::cmp::Reverse(a.age_millis), a.source).cmp(&(
                &b.tunnel,
                std::cmp::Reverse(b.age_millis),
                b.source,
            ))
        });
        Ok(Reply::Flows { flows, omitted })
    }
}

/// The ICMP identifier for a tunnel's forwarder: distinct per interface, so
/// two tunnels' raw sockets never claim each other's replies.
/// Targeted fake DNS: the system must be told where its domains' queries go.
fn split_dns(spec: &TunnelSpec) -> bool {
    spec.dns == DnsMode::Fake && !spec.full && !spec.route_domains.is_empty()
}

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
        // The IPv6 leak guard: refused at once, so applications fall back
        // to IPv4 instead of waiting (the routes exist only where the
        // network has IPv6).
        reject: if spec.blocks_ipv6() {
            vec![IpCidr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0)]
        } else {
            Vec::new()
        },
        echo: match spec.icmp {
            EchoPolicy::Reply => ztun_engine::EchoPolicy::Reply,
            EchoPolicy::Forward => ztun_engine::EchoPolicy::Forward,
            EchoPolicy::Drop => ztun_engine::EchoPolicy::Drop,
        },
        // Flows end in the helper; large buffers cost memory only when used.
        tcp_rx_buffer: 64 * 1024,
        tcp_tx_buffer: 256 * 1024,
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
            Request::Flows(name) => self.flows(name.as_ref()).await,
            Request::Doctor {
                name,
                probe,
                dns_name,
            } => {
                let tunnels = self.doctor_views(name.as_ref()).await;
                if let Some(n) = name.filter(|_| tunnels.is_empty()) {
                    return Err(error(
                        ErrorCode::NotFound,
                        format!("no tunnel named {n}; see ztunctl status"),
                    ));
                }
                let ask = crate::doctor::Ask { probe, dns_name };
                let checks = crate::doctor::run(&*self.platform, tunnels, ask).await;
                Ok(Reply::Doctor(checks))
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::fake::{Call, FakePlatform};
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

    /// A loopback port nothing listens on: connections are refused at
    /// once, and no test traffic leaves the machine.
    fn closed_loopback_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    fn wifi(gateway: &str, interface: &str) -> PhysicalGateway {
        PhysicalGateway {
            interface: interface.into(),
            v4: Some(gateway.parse().unwrap()),
            v6: None,
        }
    }

    #[test]
    fn a_socks5_upstream_that_is_down_at_up_shows_degraded_and_says_why() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let d = Daemon::start(FakePlatform::new(None), dir.path())
                .await
                .unwrap();
            let port = closed_loopback_port();
            let mut s = spec();
            s.upstream = format!("socks5://u:secret@127.0.0.1:{port}")
                .parse()
                .unwrap();
            let Reply::Tunnel(t) = d.handle(Request::Up(s)).await.unwrap() else {
                panic!("up replies with the tunnel")
            };
            assert_eq!(t.state, TunnelState::Degraded);
            let health = t.upstream_health.unwrap();
            assert!(!health.reachable);
            assert_eq!(
                health.last_error.as_deref(),
                Some(format!("127.0.0.1:{port}: Connection refused (os error 111)").as_str())
            );
            assert!(health.refused.is_empty(), "the probe refused no flow");
            assert_eq!(
                t.spec.upstream.to_string(),
                format!("socks5://u:***@127.0.0.1:{port}")
            );
        });
    }

    fn kill_switch_spec(name: &str) -> TunnelSpec {
        let mut s = TunnelSpec::new(name.parse().unwrap());
        s.full = true;
        s.kill_switch = true;
        s.icmp = EchoPolicy::Reply;
        s.exclude = vec!["192.0.2.0/24".parse().unwrap()];
        // A proxy given by address that nothing answers on.
        s.upstream = format!("socks5://127.0.0.1:{}", closed_loopback_port())
            .parse()
            .unwrap();
        s
    }

    fn kill_switch_calls(fake: &FakePlatform) -> Vec<(Option<KillSwitch>, Option<u64>)> {
        fake.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::SetKillSwitch(k, held) => Some((k, held)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_kill_switch_lets_out_only_the_tunnel_its_upstream_and_exclusions_until_down() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(Some(wifi("198.51.100.1", "en0")));
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            assert!(
                kill_switch_calls(&fake).is_empty(),
                "none wanted, none left: nothing to do"
            );
            d.handle(Request::Up(kill_switch_spec("all")))
                .await
                .unwrap();
            assert_eq!(
                fake.kill_switch(),
                Some(KillSwitch {
                    tunnels: vec!["ztun0".into()],
                    allow: vec![
                        "127.0.0.1/32".parse().unwrap(),
                        "192.0.2.0/24".parse().unwrap()
                    ],
                    helper_sockets: true,
                })
            );
            // A second tunnel without a kill switch: its interface is the
            // tunnel too.
            d.handle(Request::Up(spec())).await.unwrap();
            assert_eq!(fake.kill_switch().unwrap().tunnels, ["ztun0", "ztun1"]);
            d.handle(Request::Down(DownTarget::Name("all".parse().unwrap())))
                .await
                .unwrap();
            assert_eq!(fake.kill_switch(), None, "no tunnel wants it any more");
            assert_eq!(
                kill_switch_calls(&fake)
                    .iter()
                    .map(|(_, held)| *held)
                    .collect::<Vec<_>>(),
                [None, Some(7), Some(7)],
                "the reference taken first is the one handed back each time"
            );
            let record = std::fs::read_to_string(dir.path().join(KillSwitchRecord::FILE)).unwrap();
            assert!(
                record.contains("<key>installed</key>\n\t<false/>"),
                "{record}"
            );
        });
    }

    #[test]
    fn a_kill_switch_left_by_a_killed_helper_holds_while_the_next_start_restores_its_tunnel() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(Some(wifi("198.51.100.1", "en0")));
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            d.handle(Request::Up(kill_switch_spec("all")))
                .await
                .unwrap();
            let before = fake.kill_switch();
            // SIGKILL: no shutdown, the firewall is left as it was.
            drop(d);
            assert_eq!(fake.kill_switch(), before);
            let calls = kill_switch_calls(&fake).len();
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            let (tunnels, _) = status(&d).await;
            assert_eq!(tunnels.len(), 1, "restored");
            // The restored tunnel got ztun0 again, so the rules were already
            // right: never removed, not even for a moment.
            let after = &kill_switch_calls(&fake)[calls..];
            assert!(after.iter().all(|(k, _)| k.is_some()), "{after:?}");
            assert_eq!(fake.kill_switch(), before);
        });
    }

    #[test]
    fn a_kill_switch_no_tunnel_wants_is_removed_at_the_next_start_with_its_reference() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(Some(wifi("198.51.100.1", "en0")));
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            let mut transient = kill_switch_spec("once");
            transient.transient = true;
            d.handle(Request::Up(transient)).await.unwrap();
            drop(d);
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            assert!(status(&d).await.0.is_empty());
            assert_eq!(fake.kill_switch(), None);
            assert_eq!(kill_switch_calls(&fake).last(), Some(&(None, Some(7))));
        });
    }

    #[test]
    fn a_wanted_kill_switch_tunnel_that_cannot_come_back_keeps_traffic_blocked_until_down() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(Some(wifi("198.51.100.1", "en0")));
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            d.handle(Request::Up(kill_switch_spec("all")))
                .await
                .unwrap();
            drop(d);
            // The exclusion's route cannot be installed any more.
            fake.fail_add("192.0.2.0/24".parse().unwrap());
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            assert!(status(&d).await.0.is_empty(), "not restored");
            let held = fake.kill_switch().expect("still blocking");
            assert!(held.tunnels.is_empty(), "{held:?}");
            d.handle(Request::Down(DownTarget::Name("all".parse().unwrap())))
                .await
                .unwrap();
            assert_eq!(fake.kill_switch(), None);
            drop(d);
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            assert!(status(&d).await.0.is_empty(), "down forgot it");
        });
    }

    #[test]
    fn targeted_fake_dns_tells_the_system_where_its_domains_go_until_down() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(Some(wifi("198.51.100.1", "en0")));
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            let mut s = TunnelSpec::new("part".parse().unwrap());
            s.icmp = EchoPolicy::Reply;
            s.upstream = format!("socks5://127.0.0.1:{}", closed_loopback_port())
                .parse()
                .unwrap();
            s.dns = DnsMode::Fake;
            s.route_domains = vec!["example.com".into()];
            let t = d.handle(Request::Up(s)).await.unwrap();
            let Reply::Tunnel(t) = t else { panic!("{t:?}") };
            assert!(
                t.routes
                    .iter()
                    .any(|r| r.route.to_string() == "198.18.0.0/15"),
                "the pool is routed into the tunnel: {:?}",
                t.routes
            );
            d.handle(Request::Down(DownTarget::All)).await.unwrap();
            let split: Vec<Call> = fake
                .calls()
                .into_iter()
                .filter(|c| matches!(c, Call::SetSplitDns(..) | Call::ClearSplitDns(..)))
                .collect();
            assert_eq!(
                split,
                [
                    Call::ClearSplitDns(None),
                    Call::SetSplitDns(
                        "ztun0".into(),
                        "198.18.0.2".parse().unwrap(),
                        vec!["example.com".into()]
                    ),
                    Call::ClearSplitDns(Some("ztun0".into())),
                ]
            );
        });
    }

    #[test]
    fn a_tunnel_whose_kill_switch_cannot_be_installed_does_not_come_up() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(Some(wifi("198.51.100.1", "en0")));
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            fake.fail_kill_switch(true);
            let err = d
                .handle(Request::Up(kill_switch_spec("all")))
                .await
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::Platform);
            assert_eq!(
                err.message,
                "cannot install the kill switch: nft is not installed (Debian: apt install nftables)"
            );
            assert!(status(&d).await.0.is_empty());
            assert!(fake.table().is_empty(), "every route it installed is gone");
            drop(d);
            fake.fail_kill_switch(false);
            let d = Daemon::start(fake.clone(), dir.path()).await.unwrap();
            assert!(
                status(&d).await.0.is_empty(),
                "not wanted after a failed up"
            );
        });
    }

    #[test]
    fn full_mode_moves_exclusions_with_the_gateway_and_leaves_a_loopback_socks_server_alone() {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(Some(wifi("198.51.100.1", "en0")));
            let d = Arc::new(Daemon::start(fake.clone(), dir.path()).await.unwrap());
            let follower = tokio::spawn({
                let d = Arc::clone(&d);
                async move { d.follow_network().await }
            });
            tokio::task::yield_now().await;
            let mut s = TunnelSpec::new("all".parse().unwrap());
            s.full = true;
            s.icmp = EchoPolicy::Reply;
            s.exclude = vec!["192.0.2.0/24".parse().unwrap()];
            s.upstream = format!("socks5://127.0.0.1:{}", closed_loopback_port())
                .parse()
                .unwrap();
            d.handle(Request::Up(s)).await.unwrap();
            let shown = |t: &TunnelStatus| -> Vec<String> {
                t.routes
                    .iter()
                    .map(|r| match r.gateway {
                        Some(gw) => format!("{} via {gw} ({})", r.route, r.interface),
                        None => format!("{} dev {}", r.route, r.interface),
                    })
                    .collect()
            };
            let (tunnels, _) = status(&d).await;
            assert_eq!(
                shown(&tunnels[0]),
                [
                    "192.0.2.0/24 via 198.51.100.1 (en0)",
                    "0.0.0.0/1 dev ztun0",
                    "128.0.0.0/1 dev ztun0",
                ]
            );
            let mut events = d.subscribe();
            fake.set_physical(Some(wifi("203.0.113.1", "en1")));
            fake.network_changed();
            let (mut added, mut told) = (0, None);
            while added < 1 {
                let event = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
                    .await
                    .unwrap()
                    .unwrap();
                match event {
                    Event::Route {
                        change: RouteChange::Added,
                        ..
                    } => added += 1,
                    Event::Network { .. } => told = Some(event),
                    _ => {}
                }
            }
            assert_eq!(
                told,
                Some(Event::Network {
                    cause: NetworkCause::Changed,
                    interface: Some("en1".into()),
                    gateway: Some("203.0.113.1".parse().unwrap()),
                }),
                "watchers are told what the network is now, before the routes move"
            );
            let (tunnels, _) = status(&d).await;
            let mut now = shown(&tunnels[0]);
            now.sort();
            assert_eq!(
                now,
                [
                    "0.0.0.0/1 dev ztun0",
                    "128.0.0.0/1 dev ztun0",
                    "192.0.2.0/24 via 203.0.113.1 (en1)",
                ]
            );
            assert!(
                fake.table()
                    .iter()
                    .all(|(_, k)| k.gateway != Some("198.51.100.1".parse().unwrap())),
                "no route is left through the old gateway: {:?}",
                fake.table()
            );
            follower.abort();
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
