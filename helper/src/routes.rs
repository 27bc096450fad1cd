//! Which routes a tunnel needs (the plan, pure) and which routes the helper
//! has installed (the ledger, persisted).
//!
//! S7: every route is written to the ledger *before* it is installed and
//! removed from it only *after* it is gone, so after a crash the next start
//! knows exactly what to sweep, and never touches a route that is not ours.
//! This module decides and remembers; it never talks to the kernel.

use std::io;
use std::net::IpAddr;
use std::path::Path;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use plist::{Dictionary, Value};
use ztun_proto::{InstalledRoute, TunnelName, TunnelSpec};

use crate::platform::{KernelRoute, Platform, PlatformError};
use crate::state::{versioned, versioned_list, Loaded, StateFile};

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Into the tunnel, `-iface` style: the interface itself is the next hop
    /// (S3: no gateway, so the kernel can never bind it to another interface).
    Tunnel { interface: String },
    /// Around the tunnel through the physical network's gateway (full-mode
    /// exclusions and the upstream server, S6).
    Gateway { via: IpAddr, interface: String },
}

impl RouteTarget {
    /// The next hop for exclusion routes; `None` for `-iface` tunnel routes.
    pub fn gateway(&self) -> Option<IpAddr> {
        match self {
            RouteTarget::Gateway { via, .. } => Some(*via),
            RouteTarget::Tunnel { .. } => None,
        }
    }

    pub fn interface(&self) -> &str {
        match self {
            RouteTarget::Tunnel { interface } | RouteTarget::Gateway { interface, .. } => interface,
        }
    }
}

/// One route the helper owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    pub tunnel: TunnelName,
    pub dst: IpNet,
    pub target: RouteTarget,
}

impl RouteEntry {
    /// Whether the kernel's route is this entry as planned: same interface
    /// and same gateway (S3: an `-iface` route bound elsewhere is not ours).
    pub fn matches(&self, kernel: &KernelRoute) -> bool {
        kernel.interface == self.target.interface() && kernel.gateway == self.target.gateway()
    }

    /// How status shows this entry when the kernel is not asked.
    pub fn as_installed(&self) -> InstalledRoute {
        InstalledRoute {
            route: self.dst,
            interface: self.target.interface().to_owned(),
            gateway: self.target.gateway(),
        }
    }
}

/// The physical network as it was before `up`: where exclusions leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalGateway {
    pub interface: String,
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("full-tunnel mode needs the physical network's {family} gateway to keep {dst} outside the tunnel, and there is none; connect to a network first")]
    NoGateway { family: &'static str, dst: IpNet },
}

/// The two halves of each address family: more specific than any default
/// route, so the system default is never replaced (S6, DESIGN.md §5).
fn full_tunnel_halves(ipv6: bool) -> Vec<IpNet> {
    let mut halves = vec![
        IpNet::V4(Ipv4Net::new_assert([0, 0, 0, 0].into(), 1)),
        IpNet::V4(Ipv4Net::new_assert([128, 0, 0, 0].into(), 1)),
    ];
    if ipv6 {
        halves.push(IpNet::V6(Ipv6Net::new_assert(0.into(), 1)));
        halves.push(IpNet::V6(Ipv6Net::new_assert((1_u128 << 127).into(), 1)));
    }
    halves
}

/// The routes `spec` needs, in install order: exclusions first, so that in
/// full mode the upstream server is pinned to the physical network before
/// the tunnel routes could capture the helper's own connection to it.
///
/// `upstream` holds the upstream server's addresses (already resolved);
/// each gets a host route around the tunnel in full mode.
pub fn plan(
    spec: &TunnelSpec,
    tunnel_interface: &str,
    physical: Option<&PhysicalGateway>,
    upstream: &[IpAddr],
) -> Result<Vec<RouteEntry>, PlanError> {
    let entry = |dst, target| RouteEntry {
        tunnel: spec.name.clone(),
        dst,
        target,
    };
    // The IPv6 leak guard: full mode without IPv6 in the tunnel still
    // captures IPv6, to refuse it, wherever the network has IPv6 to leak to.
    let guard = spec.blocks_ipv6() && physical.is_some_and(|p| p.v6.is_some());
    let mut routes = Vec::new();
    if spec.full {
        let exclusions = spec
            .exclude
            .iter()
            .copied()
            // A loopback upstream needs no pin: the loopback interface's own
            // routes are more specific than anything the tunnel installs. On
            // xnu a pin would even be dead weight: `127.0.0.1/32 via gw` is
            // a different radix entry from lo0's host route 127.0.0.1 (same
            // key, other mask: radix.c `rn_addroute`), which sorts first
            // and keeps the traffic on lo0.
            .chain(
                upstream
                    .iter()
                    .filter(|ip| !ip.is_loopback())
                    .map(|ip| IpNet::from(*ip)),
            );
        for dst in exclusions {
            let (family, via) = match dst {
                IpNet::V4(_) => ("IPv4", physical.and_then(|p| p.v4)),
                IpNet::V6(_) => ("IPv6", physical.and_then(|p| p.v6)),
            };
            // An IPv6 exclusion needs a route only when IPv6 enters the
            // tunnel: with `ipv6`, or the leak guard on a network that has
            // IPv6 at all.
            if dst.addr().is_ipv6() && spec.ipv6.is_none() && !guard {
                continue;
            }
            let (Some(via), Some(p)) = (via, physical) else {
                return Err(PlanError::NoGateway { family, dst });
            };
            let target = RouteTarget::Gateway {
                via,
                interface: p.interface.clone(),
            };
            let e = entry(dst, target);
            if !routes.contains(&e) {
                routes.push(e);
            }
        }
    }
    let tunnel = RouteTarget::Tunnel {
        interface: tunnel_interface.to_owned(),
    };
    let wanted = spec
        .full
        .then(|| full_tunnel_halves(spec.ipv6.is_some() || guard))
        .into_iter()
        .flatten();
    // Fake DNS addresses stand for names only this tunnel knows.
    let fake = spec.dns == ztun_proto::DnsMode::Fake;
    let pool = fake
        .then_some(IpNet::V4(spec.fake_pool))
        .into_iter()
        .chain(spec.fake_pool6.filter(|_| fake).map(IpNet::V6));
    for dst in wanted.chain(spec.routes.iter().copied()).chain(pool) {
        let e = entry(dst, tunnel.clone());
        if !routes.contains(&e) {
            routes.push(e);
        }
    }
    Ok(routes)
}

/// The routes the helper has installed (or is about to), persisted as an XML
/// plist so an operator can read it: `<state dir>/routes.plist`.
#[derive(Debug)]
pub struct RouteLedger {
    file: StateFile,
    entries: Vec<RouteEntry>,
}

impl RouteLedger {
    pub const FILE: &'static str = "routes.plist";

    /// Opens (or creates) the ledger in `state_dir`; reports how many routes
    /// a previous run left, or that the file was corrupt and moved aside.
    pub fn open(state_dir: &Path) -> io::Result<(Self, Loaded<usize>)> {
        let file = StateFile::new(state_dir, Self::FILE, 0o644);
        let (entries, report) = file.load_list(decode)?;
        Ok((Self { file, entries }, report))
    }

    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    pub fn for_tunnel<'a>(
        &'a self,
        tunnel: &'a TunnelName,
    ) -> impl Iterator<Item = &'a RouteEntry> {
        self.entries.iter().filter(move |e| &e.tunnel == tunnel)
    }

    /// Remembers `entry` on disk; call *before* installing it.
    pub fn record(&mut self, entry: &RouteEntry) -> io::Result<()> {
        if self.entries.contains(entry) {
            return Ok(());
        }
        self.entries.push(entry.clone());
        self.save().inspect_err(|_| {
            self.entries.pop();
        })
    }

    /// Forgets `entry` on disk; call *after* it is removed from the kernel.
    pub fn forget(&mut self, entry: &RouteEntry) -> io::Result<()> {
        let Some(i) = self.entries.iter().position(|e| e == entry) else {
            return Ok(());
        };
        let removed = self.entries.remove(i);
        self.save().inspect_err(|_| self.entries.insert(i, removed))
    }

    fn save(&self) -> io::Result<()> {
        self.file.save(&encode(&self.entries))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("cannot write the route ledger: {0}; check that the state directory is writable")]
    Ledger(#[source] io::Error),
    /// S3: the kernel accepted the route but put it somewhere else.
    #[error("route {dst} resolves to {found}, not {expected}: another route holds the prefix or the kernel moved ours; ztun's own was taken out, anything else left alone")]
    Misrouted {
        dst: IpNet,
        expected: String,
        found: String,
    },
    #[error("route {dst} was installed, but it is not in the routing table when read back")]
    Vanished { dst: IpNet },
}

/// Installs `routes` in order. Each is recorded in the ledger first, added,
/// then read back and accepted only if the kernel has it on the intended
/// interface (and gateway). On any failure, everything this call installed
/// is removed again, newest first, and the first error is returned.
pub async fn install<P: Platform>(
    platform: &P,
    ledger: &mut RouteLedger,
    routes: &[RouteEntry],
) -> Result<Vec<InstalledRoute>, RouteError> {
    let mut installed = Vec::with_capacity(routes.len());
    for entry in routes {
        match install_one(platform, ledger, entry).await {
            Ok(route) => installed.push(route),
            Err(e) => {
                // Best effort: the ledger still lists whatever could not be
                // removed, so the next sweep finishes the job.
                let _ = remove(platform, ledger, &routes[..installed.len()]).await;
                return Err(e);
            }
        }
    }
    Ok(installed)
}

async fn install_one<P: Platform>(
    platform: &P,
    ledger: &mut RouteLedger,
    entry: &RouteEntry,
) -> Result<InstalledRoute, RouteError> {
    ledger.record(entry).map_err(RouteError::Ledger)?;
    crate::fault::step("route ledgered");
    if let Err(e) = platform.add_route(entry).await {
        ledger.forget(entry).map_err(RouteError::Ledger)?;
        return Err(e.into());
    }
    crate::fault::step("route added");
    let problem = match platform.lookup_route(entry.dst).await? {
        Some(k) if entry.matches(&k) => {
            crate::fault::step("route verified");
            return Ok(InstalledRoute {
                route: entry.dst,
                interface: k.interface,
                gateway: k.gateway,
            });
        }
        Some(k) => RouteError::Misrouted {
            dst: entry.dst,
            expected: entry.target.interface().to_owned(),
            found: k
                .gateway
                .map_or(k.interface.clone(), |g| format!("{} via {g}", k.interface)),
        },
        None => RouteError::Vanished { dst: entry.dst },
    };
    platform.delete_route(entry).await?;
    ledger.forget(entry).map_err(RouteError::Ledger)?;
    Err(problem)
}

/// Removes `routes`, newest first, forgetting each only once it is gone.
/// Keeps going past failures (a route that cannot be removed now stays in
/// the ledger for the next sweep) and returns the first error.
pub async fn remove<P: Platform>(
    platform: &P,
    ledger: &mut RouteLedger,
    routes: &[RouteEntry],
) -> Result<(), RouteError> {
    let mut first_error = None;
    for entry in routes.iter().rev() {
        let result = match platform.delete_route(entry).await {
            Ok(_) => {
                crate::fault::step("route deleted");
                let forgotten = ledger.forget(entry).map_err(RouteError::Ledger);
                crate::fault::step("route forgotten");
                forgotten
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// At start-up, before anything else: removes every route the ledger still
/// lists (left by a crash or a power cut) and returns them for the log.
pub async fn sweep<P: Platform>(
    platform: &P,
    ledger: &mut RouteLedger,
) -> Result<Vec<RouteEntry>, RouteError> {
    let leftovers = ledger.entries().to_vec();
    remove(platform, ledger, &leftovers).await?;
    Ok(leftovers)
}

fn encode(entries: &[RouteEntry]) -> Value {
    let routes = entries
        .iter()
        .map(|e| {
            let mut d = Dictionary::new();
            d.insert("tunnel".into(), e.tunnel.to_string().into());
            d.insert("route".into(), e.dst.to_string().into());
            d.insert("interface".into(), e.target.interface().into());
            if let RouteTarget::Gateway { via, .. } = &e.target {
                d.insert("gateway".into(), via.to_string().into());
            }
            Value::Dictionary(d)
        })
        .collect();
    versioned("routes", routes)
}

fn decode(value: &Value) -> Result<Vec<RouteEntry>, String> {
    let routes = versioned_list(value, "routes")?;
    routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r
                .as_dictionary()
                .ok_or(format!("routes[{i}] is not a dictionary"))?;
            let text = |k: &str| {
                r.get(k)
                    .and_then(Value::as_string)
                    .ok_or(format!("routes[{i}].{k} is missing"))
            };
            let tunnel = text("tunnel")?
                .parse()
                .map_err(|e| format!("routes[{i}].tunnel: {e}"))?;
            let dst = text("route")?
                .parse()
                .map_err(|e| format!("routes[{i}].route: {e}"))?;
            let interface = text("interface")?.to_owned();
            let target = match r.get("gateway").and_then(Value::as_string) {
                Some(g) => RouteTarget::Gateway {
                    via: g.parse().map_err(|e| format!("routes[{i}].gateway: {e}"))?,
                    interface,
                },
                None => RouteTarget::Tunnel { interface },
            };
            Ok(RouteEntry {
                tunnel,
                dst,
                target,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn spec(f: impl FnOnce(&mut TunnelSpec)) -> TunnelSpec {
        let mut s = TunnelSpec::new("work".parse().unwrap());
        f(&mut s);
        s
    }

    fn wifi() -> PhysicalGateway {
        PhysicalGateway {
            interface: "en0".into(),
            v4: Some("192.0.2.1".parse().unwrap()),
            v6: Some("2001:db8::1".parse().unwrap()),
        }
    }

    fn show(routes: &[RouteEntry]) -> Vec<String> {
        routes
            .iter()
            .map(|r| match &r.target {
                RouteTarget::Tunnel { interface } => format!("{} -> {interface}", r.dst),
                RouteTarget::Gateway { via, interface } => {
                    format!("{} -> {interface} via {via}", r.dst)
                }
            })
            .collect()
    }

    #[test]
    fn target_only_routes_go_into_the_tunnel_and_nothing_else() {
        let s = spec(|s| {
            s.routes = vec![
                "203.0.113.0/24".parse().unwrap(),
                "198.51.100.7/32".parse().unwrap(),
            ];
        });
        let routes = plan(&s, "utun4", None, &[]).unwrap();
        assert_eq!(
            show(&routes),
            ["203.0.113.0/24 -> utun4", "198.51.100.7/32 -> utun4"]
        );
    }

    #[test]
    fn full_mode_pins_exclusions_and_upstream_first_then_the_halves() {
        let s = spec(|s| {
            s.full = true;
            s.exclude = vec!["198.51.100.0/24".parse().unwrap()];
        });
        let upstream = ["203.0.113.10".parse().unwrap()];
        let routes = plan(&s, "utun4", Some(&wifi()), &upstream).unwrap();
        assert_eq!(
            show(&routes),
            [
                "198.51.100.0/24 -> en0 via 192.0.2.1",
                "203.0.113.10/32 -> en0 via 192.0.2.1",
                "0.0.0.0/1 -> utun4",
                "128.0.0.0/1 -> utun4",
                // The IPv6 leak guard: captured to be refused, not relayed.
                "::/1 -> utun4",
                "8000::/1 -> utun4",
            ]
        );
    }

    #[test]
    fn a_loopback_upstream_is_not_pinned() {
        // lo0's own host route already holds 127.0.0.1 on xnu (an add would
        // meet EEXIST), and loopback never enters the tunnel anyway.
        let s = spec(|s| {
            s.full = true;
            s.allow_ipv6_leak = true;
        });
        let upstream = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let routes = plan(&s, "utun4", Some(&wifi()), &upstream).unwrap();
        assert_eq!(
            show(&routes),
            ["0.0.0.0/1 -> utun4", "128.0.0.0/1 -> utun4"]
        );
    }

    #[test]
    fn allowing_the_ipv6_leak_leaves_ipv6_outside_and_its_exclusions_unrouted() {
        let s = spec(|s| {
            s.full = true;
            s.allow_ipv6_leak = true;
            s.exclude = vec!["2001:db8:1::/48".parse().unwrap()];
        });
        let routes = plan(&s, "utun4", Some(&wifi()), &[]).unwrap();
        assert_eq!(
            show(&routes),
            ["0.0.0.0/1 -> utun4", "128.0.0.0/1 -> utun4"]
        );
    }

    #[test]
    fn the_ipv6_guard_routes_nothing_where_the_network_has_no_ipv6() {
        let s = spec(|s| {
            s.full = true;
            s.exclude = vec!["2001:db8:1::/48".parse().unwrap()];
        });
        let v4_only = PhysicalGateway { v6: None, ..wifi() };
        let routes = plan(&s, "utun4", Some(&v4_only), &[]).unwrap();
        assert_eq!(
            show(&routes),
            ["0.0.0.0/1 -> utun4", "128.0.0.0/1 -> utun4"]
        );
        // With IPv6 on the network, the IPv6 exclusion is pinned outside.
        let routes = plan(&s, "utun4", Some(&wifi()), &[]).unwrap();
        assert_eq!(show(&routes)[0], "2001:db8:1::/48 -> en0 via 2001:db8::1");
    }

    #[test]
    fn full_mode_with_ipv6_adds_the_ipv6_halves() {
        let s = spec(|s| {
            s.full = true;
            s.ipv6 = Some("2001:db8:ff::1/64".parse().unwrap());
            s.exclude = vec!["2001:db8:1::/48".parse().unwrap()];
        });
        let routes = plan(&s, "utun4", Some(&wifi()), &[]).unwrap();
        assert_eq!(
            show(&routes),
            [
                "2001:db8:1::/48 -> en0 via 2001:db8::1",
                "0.0.0.0/1 -> utun4",
                "128.0.0.0/1 -> utun4",
                "::/1 -> utun4",
                "8000::/1 -> utun4",
            ]
        );
    }

    #[test]
    fn full_mode_without_a_gateway_refuses_rather_than_looping() {
        let s = spec(|s| s.full = true);
        let err = plan(&s, "utun4", None, &["203.0.113.10".parse().unwrap()]).unwrap_err();
        assert_eq!(
            err,
            PlanError::NoGateway {
                family: "IPv4",
                dst: "203.0.113.10/32".parse().unwrap()
            }
        );
        assert!(err.to_string().contains("connect to a network first"));
    }

    #[test]
    fn duplicate_destinations_are_planned_once() {
        let s = spec(|s| {
            s.full = true;
            s.routes = vec!["0.0.0.0/1".parse().unwrap()];
            s.exclude = vec!["203.0.113.10/32".parse().unwrap()];
            s.allow_ipv6_leak = true;
        });
        let routes = plan(
            &s,
            "utun4",
            Some(&wifi()),
            &["203.0.113.10".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(
            show(&routes),
            [
                "203.0.113.10/32 -> en0 via 192.0.2.1",
                "0.0.0.0/1 -> utun4",
                "128.0.0.0/1 -> utun4"
            ]
        );
    }

    fn entry(dst: &str) -> RouteEntry {
        RouteEntry {
            tunnel: "work".parse().unwrap(),
            dst: dst.parse().unwrap(),
            target: RouteTarget::Tunnel {
                interface: "tun0".into(),
            },
        }
    }

    #[test]
    fn ledger_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, opened) = RouteLedger::open(dir.path()).unwrap();
        assert_eq!(opened, Loaded::Fresh);
        let excl = RouteEntry {
            target: RouteTarget::Gateway {
                via: "192.0.2.1".parse().unwrap(),
                interface: "eth0".into(),
            },
            ..entry("198.51.100.0/24")
        };
        ledger.record(&entry("203.0.113.0/24")).unwrap();
        ledger.record(&excl).unwrap();
        ledger.record(&entry("203.0.113.0/24")).unwrap();
        drop(ledger);
        let (again, opened) = RouteLedger::open(dir.path()).unwrap();
        assert_eq!(opened, Loaded::Loaded(2));
        assert_eq!(again.entries(), [entry("203.0.113.0/24"), excl]);
    }

    #[test]
    fn forget_removes_only_that_route_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
        ledger.record(&entry("203.0.113.0/24")).unwrap();
        ledger.record(&entry("198.51.100.0/24")).unwrap();
        ledger.forget(&entry("203.0.113.0/24")).unwrap();
        ledger.forget(&entry("192.0.2.0/24")).unwrap();
        let (again, _) = RouteLedger::open(dir.path()).unwrap();
        assert_eq!(again.entries(), [entry("198.51.100.0/24")]);
    }

    #[test]
    fn ledger_is_a_readable_plist_without_temp_files_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
        ledger.record(&entry("203.0.113.0/24")).unwrap();
        let text = fs::read_to_string(dir.path().join("routes.plist")).unwrap();
        assert!(text.contains("<string>203.0.113.0/24</string>"), "{text}");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names, ["routes.plist"]);
    }

    #[test]
    fn corrupt_ledger_is_moved_aside_and_never_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("routes.plist"),
            b"<plist><dict><key>v</key>",
        )
        .unwrap();
        let (ledger, opened) = RouteLedger::open(dir.path()).unwrap();
        assert!(ledger.entries().is_empty());
        let Loaded::Corrupt { moved_to, .. } = opened else {
            panic!("{opened:?}")
        };
        assert_eq!(fs::read(&moved_to).unwrap(), b"<plist><dict><key>v</key>");
        assert!(!dir.path().join("routes.plist").exists());
    }

    #[test]
    fn ledger_entry_with_a_bad_field_counts_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
        ledger.record(&entry("203.0.113.0/24")).unwrap();
        let path = dir.path().join("routes.plist");
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("203.0.113.0/24", "203.0.113.0/99");
        fs::write(&path, text).unwrap();
        let (_, opened) = RouteLedger::open(dir.path()).unwrap();
        let Loaded::Corrupt { reason, .. } = opened else {
            panic!("{opened:?}")
        };
        assert!(reason.starts_with("routes[0].route:"), "{reason}");
    }

    #[test]
    fn a_leftover_temp_file_from_a_crash_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("routes.plist.tmp"), b"half a file").unwrap();
        let (mut ledger, opened) = RouteLedger::open(dir.path()).unwrap();
        assert_eq!(opened, Loaded::Fresh);
        ledger.record(&entry("203.0.113.0/24")).unwrap();
        assert!(!dir.path().join("routes.plist.tmp").exists());
        assert_eq!(RouteLedger::open(dir.path()).unwrap().0.entries().len(), 1);
    }

    mod operations {
        use super::*;
        use crate::platform::fake::{Call, FakePlatform};
        use crate::platform::KernelRoute;

        fn block_on<F: std::future::Future>(f: F) -> F::Output {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(f)
        }

        fn tunnel_routes(dsts: &[&str]) -> Vec<RouteEntry> {
            dsts.iter().map(|d| entry(d)).collect()
        }

        #[test]
        fn install_records_adds_and_reads_back_each_route_in_order() {
            let dir = tempfile::tempdir().unwrap();
            let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
            let fake = FakePlatform::new(None);
            let routes = tunnel_routes(&["203.0.113.0/24", "198.51.100.7/32"]);
            let installed = block_on(install(&fake, &mut ledger, &routes)).unwrap();
            assert_eq!(
                fake.calls(),
                [
                    Call::AddRoute(routes[0].clone()),
                    Call::LookupRoute(routes[0].dst),
                    Call::AddRoute(routes[1].clone()),
                    Call::LookupRoute(routes[1].dst),
                ]
            );
            assert_eq!(
                installed
                    .iter()
                    .map(|r| r.interface.as_str())
                    .collect::<Vec<_>>(),
                ["tun0", "tun0"]
            );
            assert_eq!(ledger.entries(), routes);
        }

        #[test]
        fn a_route_the_kernel_puts_elsewhere_fails_loudly_and_everything_is_rolled_back() {
            // S3: `route add ... -iface utun4` that ended up on en0.
            let dir = tempfile::tempdir().unwrap();
            let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
            let fake = FakePlatform::new(None);
            let routes = tunnel_routes(&["203.0.113.0/24", "198.51.100.7/32"]);
            fake.misroute(routes[1].dst, "eth0");
            let err = block_on(install(&fake, &mut ledger, &routes)).unwrap_err();
            assert_eq!(
                err.to_string(),
                "route 198.51.100.7/32 resolves to eth0, not tun0: another route holds the prefix or the kernel moved ours; ztun's own was taken out, anything else left alone"
            );
            assert!(fake.table().is_empty(), "{:?}", fake.table());
            assert!(ledger.entries().is_empty());
            assert_eq!(
                fake.calls()[4..],
                [
                    Call::DeleteRoute(routes[1].clone()),
                    Call::DeleteRoute(routes[0].clone())
                ]
            );
        }

        #[test]
        fn a_failed_add_leaves_nothing_in_the_kernel_or_the_ledger() {
            let dir = tempfile::tempdir().unwrap();
            let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
            let fake = FakePlatform::new(None);
            let routes = tunnel_routes(&["203.0.113.0/24", "198.51.100.7/32"]);
            fake.fail_add(routes[1].dst);
            let err = block_on(install(&fake, &mut ledger, &routes)).unwrap_err();
            assert!(
                matches!(err, RouteError::Platform(PlatformError::RouteAdd { .. })),
                "{err}"
            );
            assert!(fake.table().is_empty());
            assert!(RouteLedger::open(dir.path())
                .unwrap()
                .0
                .entries()
                .is_empty());
        }

        #[test]
        fn an_exclusion_must_read_back_with_its_gateway() {
            let dir = tempfile::tempdir().unwrap();
            let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
            let fake = FakePlatform::new(None);
            let excl = RouteEntry {
                target: RouteTarget::Gateway {
                    via: "192.0.2.1".parse().unwrap(),
                    interface: "eth0".into(),
                },
                ..entry("198.51.100.0/24")
            };
            // Someone else's route to the same prefix, through another gateway.
            fake.preinstall(
                excl.dst,
                KernelRoute {
                    interface: "eth0".into(),
                    gateway: Some("192.0.2.254".parse().unwrap()),
                },
            );
            let err =
                block_on(install(&fake, &mut ledger, std::slice::from_ref(&excl))).unwrap_err();
            assert!(
                matches!(err, RouteError::Misrouted { ref found, .. } if found == "eth0 via 192.0.2.254"),
                "{err}"
            );
        }

        #[test]
        fn a_crash_between_ledger_and_install_is_swept_on_the_next_start() {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakePlatform::new(None);
            let routes = tunnel_routes(&["203.0.113.0/24", "198.51.100.7/32"]);
            {
                let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
                block_on(install(&fake, &mut ledger, &routes)).unwrap();
                // The helper is killed here: no removal, the ledger stays.
            }
            let (mut ledger, opened) = RouteLedger::open(dir.path()).unwrap();
            assert_eq!(opened, Loaded::Loaded(2));
            let swept = block_on(sweep(&fake, &mut ledger)).unwrap();
            assert_eq!(swept, routes);
            assert!(fake.table().is_empty());
            assert!(RouteLedger::open(dir.path())
                .unwrap()
                .0
                .entries()
                .is_empty());
        }

        #[test]
        fn removing_a_route_that_is_already_gone_is_not_an_error() {
            let dir = tempfile::tempdir().unwrap();
            let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
            let fake = FakePlatform::new(None);
            let routes = tunnel_routes(&["203.0.113.0/24"]);
            ledger.record(&routes[0]).unwrap();
            block_on(remove(&fake, &mut ledger, &routes)).unwrap();
            assert!(ledger.entries().is_empty());
        }
    }
}
