//! The daemon-level scenarios every platform must pass, written once and
//! run by two runners: `linux_scenarios.rs` (the Linux platform on the real
//! kernel, in a private network namespace) and `macos_xnu.rs` (the macOS
//! platform on the xnu model). Each scenario drives the real `Daemon`
//! through its control `Handler`, and checks the kernel's routing table as
//! the kernel itself shows it (`ip route`, the model's table), never
//! through the platform under test.
//!
//! A daemon "incarnation" runs on its own current-thread runtime; dropping
//! that runtime drops every task, device and socket the daemon held, which
//! is what the kernel does when the helper process dies. A crash is a panic
//! at a chosen step (`fault::crash_in_this_thread`), followed by that drop.
#![allow(dead_code)] // each runner uses the part it needs
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use ztun_helper::control::Handler;
use ztun_helper::daemon::Daemon;
use ztun_helper::platform::Platform;
use ztun_proto::{
    DownTarget, EchoPolicy, ErrorReply, Reply, Request, TunnelName, TunnelSpec, TunnelState,
    TunnelStatus,
};

/// One machine: a platform to run the daemon on, and the kernel's own view
/// of it. Both worlds have a physical interface on 198.51.100.2/24 with
/// an IPv4 default via 198.51.100.1 and an IPv6 default via `fe80::1`.
pub(crate) trait World: 'static {
    type P: Platform;
    /// Shown in the summary line.
    const NAME: &'static str;

    /// A platform handle on this machine (called inside the runtime).
    fn platform(&self) -> Self::P;
    /// The physical interface's name.
    fn physical(&self) -> &'static str;
    /// The routing table as rows `dst/len iface [via gw]`.
    fn table(&self) -> BTreeSet<String>;
    /// The names of the interfaces that exist.
    fn links(&self) -> BTreeSet<String>;
    /// Someone else deletes the route to exactly `dst`.
    fn other_deletes(&self, dst: IpNet);
    /// Someone else adds `dst` through the physical router.
    fn other_adds_via_router(&self, dst: IpNet);
    /// The physical network's IPv4 default moves to `router`.
    fn move_default_v4(&self, router: &str);
    /// Whether a UDP datagram an ordinary program sends to `dst` gets past
    /// the firewall (wherever the routing table sends it).
    fn lets_out(&self, dst: IpAddr) -> bool;
}

pub(crate) const ROUTER_V4: &str = "198.51.100.1";
pub(crate) const OTHER_ROUTER_V4: &str = "198.51.100.254";
pub(crate) const ROUTER_V6: &str = "fe80::1";

/// A scenario and its name.
pub(crate) type Scenario<W> = (&'static str, fn(&W));

/// Every shared scenario, in the order they run.
pub(crate) fn all<W: World>() -> Vec<Scenario<W>> {
    vec![
        (
            "up_installs_routes_into_the_tunnel_and_reads_them_back",
            up_installs_and_reads_back,
        ),
        (
            "down_leaves_the_table_and_links_as_they_were",
            down_leaves_nothing,
        ),
        (
            "route_add_and_remove_change_only_their_prefix",
            route_add_and_remove,
        ),
        (
            "a_route_another_interface_holds_is_refused_as_misrouted",
            takeover_is_misrouted,
        ),
        (
            "the_monitor_reinstalls_a_route_deleted_behind_its_back",
            monitor_reinstalls,
        ),
        (
            "full_mode_exclusions_follow_the_default_route_in_both_families",
            exclusions_follow_gateway,
        ),
        (
            "a_loopback_socks_server_in_full_mode_is_not_pinned",
            loopback_upstream_not_pinned,
        ),
        (
            "a_kill_switch_holds_everything_in_across_a_crash_until_down",
            kill_switch_across_a_crash,
        ),
        (
            "a_crash_after_any_step_of_up_loses_and_leaves_nothing",
            crash_up,
        ),
        (
            "a_crash_after_any_step_of_route_add_loses_and_leaves_nothing",
            crash_route_add,
        ),
        (
            "a_crash_after_any_step_of_down_loses_and_leaves_nothing",
            crash_down,
        ),
        (
            "a_crash_after_any_step_of_the_start_up_sweep_loses_and_leaves_nothing",
            crash_sweep,
        ),
    ]
}

/// Runs every scenario on a fresh world from `make` (each inside whatever
/// `isolate` sets up, e.g. a private network namespace), reports each, and
/// prints the count. Fails naming every scenario that failed.
pub(crate) fn run_all<W: World>(isolate: impl Fn(Box<dyn FnOnce() + Send>), make: fn() -> W) {
    let scenarios = all::<W>();
    let mut failed = Vec::new();
    for (name, scenario) in &scenarios {
        let scenario = *scenario;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            isolate(Box::new(move || scenario(&make())));
        }));
        if outcome.is_ok() {
            eprintln!("scenario {name} ... ok ({})", W::NAME);
        } else {
            eprintln!("scenario {name} ... FAILED ({})", W::NAME);
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "failed on {}: {failed:?}", W::NAME);
    let line = format!(
        "{} daemon scenarios ran on {} (of {} shared)",
        scenarios.len(),
        W::NAME,
        scenarios.len()
    );
    println!("{line}");
    // scripts/test.sh prints these lines and checks the platforms agree.
    let summary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ztun-scenarios.txt");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(summary)
        .unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
}

/// The most steps any operation has; reaching it means a crash point was
/// never hit, which is a failure.
const MAX_STEPS: u32 = 40;

/// Runs one daemon incarnation on `world` with its state in `dir`: start
/// (sweep and restore), the route monitor, then `body`. With `crash`, the
/// daemon panics at that step; the result is then `None`. Either way the
/// runtime is dropped at the end, as the process would exit.
pub(crate) fn incarnation<W, F, Fut, T>(
    world: &W,
    dir: &Path,
    crash: Option<(&'static str, u32)>,
    body: F,
) -> Option<T>
where
    W: World,
    F: FnOnce(Arc<Daemon<W::P>>) -> Fut,
    Fut: Future<Output = T>,
{
    quiet_crashes();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    ztun_helper::fault::crash_in_this_thread(crash);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            let d = Arc::new(Daemon::start(world.platform(), dir).await.unwrap());
            tokio::spawn({
                let d = Arc::clone(&d);
                async move { d.follow_network().await }
            });
            tokio::task::yield_now().await;
            body(d).await
        })
    }));
    ztun_helper::fault::crash_in_this_thread(None);
    // The process is gone: every descriptor closes.
    drop(rt);
    match outcome {
        Ok(t) => Some(t),
        Err(panic) => {
            let crashed = panic
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("crash injected"));
            if crash.is_some() && crashed {
                None
            } else {
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// An injected crash is expected: one line for it instead of a panic
/// report with a backtrace. Every other panic is reported as before.
fn quiet_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            match info.payload().downcast_ref::<String>() {
                Some(m) if m.starts_with("crash injected") => eprintln!("  {m}"),
                _ => report(info),
            }
        }));
    });
}

fn name() -> TunnelName {
    "work".parse().unwrap()
}

/// Target mode: 203.0.113.0/24 into the tunnel. ICMP answered in the
/// engine (the forwarder's raw sockets are not what is tested here).
fn target_spec() -> TunnelSpec {
    let mut s = TunnelSpec::new(name());
    s.routes = vec!["203.0.113.0/24".parse().unwrap()];
    s.icmp = EchoPolicy::Reply;
    s
}

/// Full mode with one exclusion per family.
pub(crate) fn full_spec() -> TunnelSpec {
    let mut s = TunnelSpec::new(name());
    s.full = true;
    s.exclude = vec![
        "203.0.113.200/32".parse().unwrap(),
        "2001:db8:2::200/128".parse().unwrap(),
    ];
    s.icmp = EchoPolicy::Reply;
    s
}

pub(crate) async fn up<P: Platform>(
    d: &Daemon<P>,
    spec: TunnelSpec,
) -> Result<TunnelStatus, ErrorReply> {
    match d.handle(Request::Up(spec)).await? {
        Reply::Tunnel(t) => Ok(*t),
        other => panic!("up answered {other:?}"),
    }
}

pub(crate) async fn status<P: Platform>(d: &Daemon<P>) -> (Vec<TunnelStatus>, usize) {
    match d.handle(Request::Status(None)).await.unwrap() {
        Reply::Tunnels {
            tunnels,
            stale_routes,
        } => (tunnels, stale_routes.len()),
        other => panic!("status answered {other:?}"),
    }
}

pub(crate) async fn down_all<P: Platform>(d: &Daemon<P>) {
    d.handle(Request::Down(DownTarget::All)).await.unwrap();
}

async fn change<P: Platform>(d: &Daemon<P>, add: bool, route: &str) -> TunnelStatus {
    let routes = vec![route.parse().unwrap()];
    let request = if add {
        Request::RouteAdd {
            name: name(),
            routes,
        }
    } else {
        Request::RouteRemove {
            name: name(),
            routes,
        }
    };
    match d.handle(request).await.unwrap() {
        Reply::Tunnel(t) => *t,
        other => panic!("route change answered {other:?}"),
    }
}

/// Waits (bounded) until `check` holds, letting the daemon's tasks run.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The interface of a table row (`dst/len iface [via gw]`).
fn row_interface(row: &str) -> &str {
    row.split(' ').nth(1).unwrap_or_default()
}

fn added(world: &impl World, baseline: &BTreeSet<String>) -> BTreeSet<String> {
    world.table().difference(baseline).cloned().collect()
}

fn up_installs_and_reads_back<W: World>(w: &W) {
    let dir = tempfile::tempdir().unwrap();
    let (baseline, links) = (w.table(), w.links());
    incarnation(w, dir.path(), None, |d| async move {
        let t = up(&d, target_spec()).await.unwrap();
        assert_eq!(t.state, TunnelState::Up);
        assert!(
            !links.contains(&t.interface),
            "a new interface: {}",
            t.interface
        );
        let row = format!("203.0.113.0/24 {}", t.interface);
        assert!(w.table().contains(&row), "{row} in {:?}", w.table());
        // What status reports is what the kernel holds: the route read
        // back on the tunnel, the address with its point-to-point peer.
        let (list, stale) = status(&d).await;
        assert_eq!(stale, 0);
        let s = &list[0];
        assert_eq!(s.routes.len(), 1);
        assert_eq!(s.routes[0].route.to_string(), "203.0.113.0/24");
        assert_eq!(s.routes[0].interface, t.interface);
        assert_eq!(s.routes[0].gateway, None);
        let v4 = s
            .addresses
            .iter()
            .find(|a| a.address.addr().is_ipv4())
            .expect("the tunnel has its IPv4 address");
        assert_eq!(v4.address, IpNet::V4(t.spec.address));
        assert_eq!(v4.peer, Some(IpAddr::V4(t.spec.peer)));
        // Nothing else changed but routes on the tunnel interface.
        for row in added(w, &baseline) {
            assert_eq!(row_interface(&row), t.interface, "{row}");
        }
        down_all(&d).await;
    });
}

/// Full mode with the kill switch. The helper dies and its tunnel with it:
/// the routing table would now send everything out through the physical
/// link, and the firewall keeps all of it in but the exclusions. The next
/// start brings the tunnel back under the same firewall; down lets go.
fn kill_switch_across_a_crash<W: World>(w: &W) {
    let dir = tempfile::tempdir().unwrap();
    let inside: IpAddr = "203.0.113.5".parse().unwrap();
    // Off every link (the model's en0 holds 2001:db8:5::/64).
    let inside6: IpAddr = "2001:db8:7::5".parse().unwrap();
    let excluded: IpAddr = "203.0.113.200".parse().unwrap();
    let excluded6: IpAddr = "2001:db8:2::200".parse().unwrap();
    assert!(w.lets_out(inside), "no firewall before the tunnel");
    let mut spec = full_spec();
    spec.kill_switch = true;
    incarnation(w, dir.path(), None, |d| async move {
        up(&d, spec).await.unwrap();
        for dst in [inside, inside6, excluded, excluded6] {
            assert!(
                w.lets_out(dst),
                "{dst}: the tunnel or an exclusion: {:?}",
                w.table()
            );
        }
        // No down: the process dies here.
    });
    assert!(
        w.table().iter().all(|r| !r.starts_with("0.0.0.0/1")),
        "the tunnel's routes died with it: {:?}",
        w.table()
    );
    assert!(!w.lets_out(inside), "held in after the helper died");
    assert!(!w.lets_out(inside6), "IPv6 too");
    assert!(w.lets_out(excluded), "the exclusion still gets out");
    assert!(w.lets_out(excluded6), "and its IPv6 one");
    incarnation(w, dir.path(), None, |d| async move {
        assert_eq!(status(&d).await.0.len(), 1, "restored");
        assert!(w.lets_out(inside), "through the restored tunnel");
        down_all(&d).await;
        assert!(w.lets_out(inside), "down let go: straight out");
    });
    assert!(w.lets_out(inside6));
}

fn down_leaves_nothing<W: World>(w: &W) {
    let dir = tempfile::tempdir().unwrap();
    let (baseline, links) = (w.table(), w.links());
    let (base, base_links) = (&baseline, &links);
    incarnation(w, dir.path(), None, |d| async move {
        up(&d, full_spec()).await.unwrap();
        assert_ne!(w.table(), *base);
        down_all(&d).await;
        assert_eq!(w.table(), *base);
        assert_eq!(w.links(), *base_links);
        assert!(status(&d).await.0.is_empty());
    });
    // And nothing comes back at the next start.
    incarnation(w, dir.path(), None, |d| async move {
        assert!(status(&d).await.0.is_empty());
    });
    assert_eq!(w.table(), baseline);
}

fn route_add_and_remove<W: World>(w: &W) {
    let dir = tempfile::tempdir().unwrap();
    let baseline = w.table();
    incarnation(w, dir.path(), None, |d| async move {
        let t = up(&d, target_spec()).await.unwrap();
        let s = change(&d, true, "192.0.2.0/24").await;
        let rows: Vec<String> = s.routes.iter().map(|r| r.route.to_string()).collect();
        assert_eq!(rows, ["203.0.113.0/24", "192.0.2.0/24"]);
        assert!(w.table().contains(&format!("192.0.2.0/24 {}", t.interface)));
        let s = change(&d, false, "192.0.2.0/24").await;
        assert_eq!(s.routes.len(), 1);
        let table = w.table();
        assert!(
            !table.iter().any(|r| r.starts_with("192.0.2.0/24")),
            "{table:?}"
        );
        assert!(table.contains(&format!("203.0.113.0/24 {}", t.interface)));
        down_all(&d).await;
    });
    assert_eq!(w.table(), baseline);
}

fn takeover_is_misrouted<W: World>(w: &W) {
    let dir = tempfile::tempdir().unwrap();
    let dst: IpNet = "203.0.113.0/24".parse().unwrap();
    w.other_adds_via_router(dst);
    let (baseline, links) = (w.table(), w.links());
    incarnation(w, dir.path(), None, |d| async move {
        let e = up(&d, target_spec()).await.unwrap_err();
        assert!(
            e.message.contains("203.0.113.0/24") && e.message.contains(w.physical()),
            "the error names the route and where it goes: {}",
            e.message
        );
        assert!(status(&d).await.0.is_empty());
    });
    // The other route is untouched and nothing of ours is left.
    assert_eq!(w.table(), baseline);
    assert_eq!(w.links(), links);
}

fn monitor_reinstalls<W: World>(w: &W) {
    let dir = tempfile::tempdir().unwrap();
    let baseline = w.table();
    incarnation(w, dir.path(), None, |d| async move {
        let t = up(&d, target_spec()).await.unwrap();
        let row = format!("203.0.113.0/24 {}", t.interface);
        w.other_deletes("203.0.113.0/24".parse().unwrap());
        assert!(!w.table().contains(&row));
        eventually("the monitor puts the route back", || {
            w.table().contains(&row)
        })
        .await;
        down_all(&d).await;
    });
    assert_eq!(w.table(), baseline);
}

fn exclusions_follow_gateway<W: World>(w: &W) {
    let dir = tempfile::tempdir().unwrap();
    let baseline = w.table();
    let phys = w.physical();
    incarnation(w, dir.path(), None, |d| async move {
        let t = up(&d, full_spec()).await.unwrap();
        let table = w.table();
        for row in [
            format!("0.0.0.0/1 {}", t.interface),
            format!("128.0.0.0/1 {}", t.interface),
            // The IPv6 leak guard: the network has IPv6, the tunnel does not.
            format!("::/1 {}", t.interface),
            format!("8000::/1 {}", t.interface),
            format!("203.0.113.200/32 {phys} via {ROUTER_V4}"),
            format!("2001:db8:2::200/128 {phys} via {ROUTER_V6}"),
        ] {
            assert!(table.contains(&row), "{row} in {table:?}");
        }
        w.move_default_v4(OTHER_ROUTER_V4);
        let moved = format!("203.0.113.200/32 {phys} via {OTHER_ROUTER_V4}");
        eventually("the exclusion follows the new router", || {
            w.table().contains(&moved)
        })
        .await;
        let (list, _) = status(&d).await;
        assert_eq!(
            list[0].physical_gateway,
            Some(OTHER_ROUTER_V4.parse().unwrap())
        );
        down_all(&d).await;
    });
    w.move_default_v4(ROUTER_V4);
    assert_eq!(w.table(), baseline);
}

fn loopback_upstream_not_pinned<W: World>(w: &W) {
    let dir = tempfile::tempdir().unwrap();
    let baseline = w.table();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = &baseline;
    incarnation(w, dir.path(), None, |d| async move {
        let mut spec = full_spec();
        spec.upstream = format!("socks5://127.0.0.1:{port}").parse().unwrap();
        let t = up(&d, spec).await.unwrap();
        assert!(
            t.routes.iter().all(|r| !r.route.addr().is_loopback()),
            "{:?}",
            t.routes
        );
        let new = added(w, base);
        assert!(!new.iter().any(|r| r.starts_with("127.")), "{new:?}");
        down_all(&d).await;
    });
    assert_eq!(w.table(), baseline);
}

/// After a crash: a clean start sweeps what the ledger says is left, every
/// route that was not there before belongs to a running tunnel (on its
/// interface, or one of its exclusions), every new link is a running
/// tunnel's, and `down --all` restores the table and the links exactly.
fn assert_recovered<W: World>(
    w: &W,
    dir: &Path,
    baseline: &BTreeSet<String>,
    links: &BTreeSet<String>,
    context: &str,
) {
    incarnation(w, dir, None, |d| async move {
        let (list, stale) = status(&d).await;
        assert_eq!(
            stale, 0,
            "{context}: the start-up sweep left ledger entries"
        );
        for row in added(w, baseline) {
            let dst: IpNet = row.split(' ').next().unwrap().parse().unwrap();
            let owned = list.iter().any(|t| {
                row_interface(&row) == t.interface || t.routes.iter().any(|r| r.route == dst)
            });
            assert!(owned, "{context}: {row} belongs to no running tunnel");
        }
        for link in w.links().difference(links) {
            assert!(
                list.iter().any(|t| &t.interface == link),
                "{context}: {link} is an orphan"
            );
        }
        down_all(&d).await;
    });
    assert_eq!(
        w.table(),
        *baseline,
        "{context}: down --all restores the table"
    );
    assert_eq!(
        w.links(),
        *links,
        "{context}: down --all removes every link"
    );
}

/// For K = 1, 2, …: with `before`, a clean incarnation brings that tunnel
/// up and is killed with it; then `act` runs in one that crashes after step
/// K of `op`, then the recovery checks; until `act` completes without
/// reaching step K.
fn every_step<W, F, Fut>(w: &W, op: &'static str, before: Option<fn() -> TunnelSpec>, act: F)
where
    W: World,
    F: Fn(Arc<Daemon<W::P>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (baseline, links) = (w.table(), w.links());
    for k in 1..=MAX_STEPS {
        let dir = tempfile::tempdir().unwrap();
        if let Some(spec) = before {
            incarnation(w, dir.path(), None, |d| async move {
                up(&d, spec()).await.unwrap();
            });
        }
        let crashed = incarnation(w, dir.path(), Some((op, k)), &act).is_none();
        assert_recovered(
            w,
            dir.path(),
            &baseline,
            &links,
            &format!("crash after step {k} of {op}"),
        );
        if !crashed {
            assert!(k > 1, "{op} never reached its first crash point");
            return;
        }
    }
    panic!("{op} still crashing after {MAX_STEPS} steps");
}

fn crash_up<W: World>(w: &W) {
    every_step(w, "up", None, |d| async move {
        up(&d, full_spec()).await.unwrap();
    });
}

fn crash_route_add<W: World>(w: &W) {
    every_step(w, "route.add", Some(target_spec), |d| async move {
        change(&d, true, "192.0.2.0/24").await;
    });
}

fn crash_down<W: World>(w: &W) {
    every_step(w, "down", Some(full_spec), |d| async move {
        down_all(&d).await;
    });
}

/// A helper killed with a full tunnel up leaves its exclusions (through the
/// physical router) in the kernel and the ledger; the next start sweeps them.
fn crash_sweep<W: World>(w: &W) {
    every_step(w, "sweep", Some(full_spec), |_| async {});
}
