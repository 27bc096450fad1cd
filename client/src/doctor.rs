//! `ztunctl doctor`: one line per check, ✓ or ✗, and for each ✗ the command
//! that fixes it. It asks the helper only what every user may ask
//! (version, status, doctor), and status reports each route as the kernel
//! resolves it at that moment. With `--live` the helper also runs its own
//! checks through each tunnel (the `doctor` operation) and this prints
//! them the same way.

use std::io::Write;
use std::net::IpAddr;

use ipnet::IpNet;

use ztun_proto::plist::Value;
use ztun_proto::{
    DoctorCheck, ErrorCode, Reply, Request, TunnelName, TunnelState, TunnelStatus, Upstream,
    UpstreamHealth, PROTOCOL_VERSION,
};

use crate::{exchange, hints, Cli, ClientError, Connection, DoctorArgs};

/// The interface name status uses for a route the kernel no longer has.
const MISSING: &str = "none";

struct Report<'a, W: Write> {
    out: &'a mut W,
    failed: usize,
    passed: usize,
}

impl<W: Write> Report<'_, W> {
    fn pass(&mut self, what: &str) -> std::io::Result<()> {
        self.passed += 1;
        writeln!(self.out, "✓ {what}")
    }

    fn fail(&mut self, what: &str, fix: &str) -> std::io::Result<()> {
        self.failed += 1;
        writeln!(self.out, "✗ {what}\n    fix: {fix}")
    }

    /// A check the helper ran: `✓ work: tcp: <what it saw> (3 ms)`.
    fn live(&mut self, c: &DoctorCheck) -> std::io::Result<()> {
        let tunnel = c
            .tunnel
            .as_ref()
            .map_or_else(String::new, |t| format!("{t}: "));
        let took = if c.millis == 0 {
            "<1 ms".to_owned()
        } else {
            format!("{} ms", c.millis)
        };
        let what = format!("{tunnel}{}: {} ({took})", c.check, c.detail);
        if c.ok {
            self.pass(&what)
        } else {
            let log = format!("see the helper's log ({})", hints::LOG);
            self.fail(&what, c.fix.as_deref().unwrap_or(&log))
        }
    }
}

pub(crate) fn run(cli: &Cli, args: &DoctorArgs, out: &mut impl Write) -> Result<(), ClientError> {
    if args.json {
        return live_json(cli, args, out);
    }
    let name = args.name.as_ref();
    let mut report = Report {
        out,
        failed: 0,
        passed: 0,
    };
    let endpoint = cli.endpoint();
    let path = endpoint.to_string();
    let mut conn = match Connection::open(&endpoint, cli.timeout) {
        Ok(c) => c,
        Err(e) => {
            report.fail(
                &format!("helper reachable at {path}: {e}"),
                &format!("start it ({}), or pass --socket", hints::START),
            )?;
            return Err(e);
        }
    };
    if let (_, Reply::Version { version, protocol }) = exchange(&mut conn, &Request::Version)? {
        if protocol == PROTOCOL_VERSION {
            report.pass(&format!(
                "helper reachable at {path} (ztun-helper {version}, protocol {protocol})"
            ))?;
        } else {
            report.fail(
                &format!(
                    "helper speaks protocol {protocol}, this ztunctl speaks {PROTOCOL_VERSION}"
                ),
                "install ztunctl and ztun-helper from the same release",
            )?;
        }
    }
    let (_, reply) = exchange(&mut conn, &Request::Status(name.cloned()))?;
    let Reply::Tunnels {
        tunnels,
        stale_routes,
    } = reply
    else {
        return Err(ClientError::Protocol(format!(
            "status answered with {reply:?}"
        )));
    };
    if stale_routes.is_empty() {
        report.pass("route ledger: every route it lists belongs to a running tunnel")?;
    }
    for r in &stale_routes {
        report.fail(
            &format!(
                "route ledger: {} is left over from a tunnel that is gone",
                crate::render::route(r)
            ),
            &format!(
                "restart the helper, which sweeps the ledger first ({})",
                hints::START
            ),
        )?;
    }
    if tunnels.is_empty() {
        report.pass("no tunnels are up")?;
    }
    for t in &tunnels {
        check_tunnel(&mut report, t)?;
    }
    if args.live {
        let (_, checks) = live_checks(&mut conn, args)?;
        writeln!(report.out, "live checks, run by the helper now:")?;
        for c in &checks {
            report.live(c)?;
        }
    }
    if report.failed == 0 {
        writeln!(report.out, "all {} checks passed", report.passed)?;
        Ok(())
    } else {
        Err(ClientError::Doctor {
            failed: report.failed,
        })
    }
}

fn check_tunnel<W: Write>(report: &mut Report<'_, W>, t: &TunnelStatus) -> std::io::Result<()> {
    let (name, iface) = (&t.spec.name, &t.interface);
    let summary = format!(
        "{name}: {} on {iface} ({} --> {})",
        t.state, t.spec.address, t.spec.peer
    );
    // Degraded for an unreachable upstream is reported by the upstream check.
    let upstream_down = t
        .upstream_health
        .iter()
        .chain(&t.failover_health)
        .any(|h| !h.reachable);
    match t.state {
        TunnelState::Up => report.pass(&summary)?,
        TunnelState::Degraded if upstream_down => {
            report.pass(&format!("{name}: data plane running on {iface}"))?;
        }
        _ => report.fail(
            &format!("{summary}: its data plane is not running"),
            &format!(
                "see the helper's log ({}), then ztunctl down {name} and up again",
                hints::LOG
            ),
        )?,
    }
    let v4 = t
        .addresses
        .iter()
        .find(|a| a.address.addr() == IpAddr::V4(t.spec.address.addr()));
    let down_up = format!("ztunctl down {name}, then up again");
    match v4 {
        Some(a) if a.peer == Some(IpAddr::V4(t.spec.peer)) => {
            report.pass(&format!(
                "{name}: {iface} has {} with peer {}",
                t.spec.address, t.spec.peer
            ))?;
        }
        Some(_) => report.fail(
            &format!(
                "{name}: {iface} has {} but not the peer {}",
                t.spec.address, t.spec.peer
            ),
            &down_up,
        )?,
        None => report.fail(
            &format!(
                "{name}: {iface} does not have its address {}",
                t.spec.address
            ),
            &down_up,
        )?,
    }
    if let Some(v6) = t.spec.ipv6 {
        if t.addresses
            .iter()
            .any(|a| a.address.addr() == IpAddr::V6(v6.addr()))
        {
            report.pass(&format!("{name}: {iface} has {v6}"))?;
        } else {
            report.fail(
                &format!("{name}: {iface} does not have its address {v6}"),
                &down_up,
            )?;
        }
    }
    for r in &t.routes {
        let excluded = is_exclusion(t, r.route);
        let shown = crate::render::route(r);
        let reinstall = format!("ztunctl route add {name} {}", r.route);
        if r.interface == MISSING {
            report.fail(
                &format!("{name}: route {} is gone from the routing table", r.route),
                &reinstall,
            )?;
        } else if (r.interface == *iface) != excluded {
            report.pass(&format!("{name}: {shown}"))?;
        } else {
            let want = if excluded {
                "outside the tunnel"
            } else {
                iface.as_str()
            };
            let other = hints::delete_route(&r.route.to_string(), &r.interface);
            report.fail(
                &format!("{name}: {shown}, expected {want}"),
                &format!("remove the other route ({other}), then {reinstall}"),
            )?;
        }
    }
    if t.upstream_health.is_none() {
        return report.pass(&format!(
            "{name}: upstream {} (nothing to check for direct)",
            t.spec.upstream
        ));
    }
    let health = t.upstream_health.iter().chain(&t.failover_health);
    for (upstream, h) in t.spec.upstreams().zip(health) {
        check_upstream(report, name, upstream, h)?;
    }
    Ok(())
}

fn check_upstream<W: Write>(
    report: &mut Report<'_, W>,
    name: &TunnelName,
    upstream: &Upstream,
    h: &UpstreamHealth,
) -> std::io::Result<()> {
    if h.reachable {
        report.pass(&format!("{name}: upstream {upstream} is reachable"))?;
    } else {
        let (server, scheme) = match upstream {
            Upstream::Http(_) => ("HTTP proxy", "http"),
            _ => ("SOCKS5 server", "socks5"),
        };
        report.fail(
            &format!(
                "{name}: upstream {upstream} is unreachable: {}",
                h.last_error.as_deref().unwrap_or("no answer yet")
            ),
            &format!(
                "start the {server} or fix the URL (ztunctl down {name}, then up with --upstream {scheme}://user:pass@host:port); the helper retries by itself"
            ),
        )?;
    }
    if h.flows_to_upstream > 0 {
        report.fail(
            &format!(
                "{name}: {} flow(s) to the upstream server entered the tunnel (a routing loop)",
                h.flows_to_upstream
            ),
            "keep the server outside the tunnel: in target-only mode, do not route its address into the tunnel",
        )?;
    }
    Ok(())
}

/// Whether full mode keeps `route` outside the tunnel: an `--exclude` or
/// the upstream server's host route. Into the tunnel go the /1 halves, the
/// given routes and the host route pinning each system resolver.
fn is_exclusion(t: &TunnelStatus, route: IpNet) -> bool {
    if !t.spec.full || t.spec.exclude.contains(&route) {
        return t.spec.full;
    }
    let resolver_pin = route.prefix_len() == route.max_prefix_len()
        && t.resolvers.iter().any(|r| r.address == route.addr());
    route.prefix_len() != 1 && !t.spec.routes.contains(&route) && !resolver_pin
}

/// The `doctor` request for `args`.
fn live_request(args: &DoctorArgs) -> Request {
    Request::Doctor {
        name: args.name.clone(),
        probe: args.probe,
        dns_name: args.dns_name.clone(),
    }
}

/// Sends `doctor` and returns the reply dictionary and its checks. A helper
/// older than the operation answers `invalid_argument` for the unknown op,
/// which is said as what it means.
fn live_checks(
    conn: &mut Connection,
    args: &DoctorArgs,
) -> Result<(Value, Vec<DoctorCheck>), ClientError> {
    match exchange(conn, &live_request(args)) {
        Ok((value, Reply::Doctor(checks))) => Ok((value, checks)),
        Ok((_, other)) => Err(ClientError::Protocol(format!(
            "doctor answered with {other:?}"
        ))),
        Err(ClientError::Helper(e))
            if e.code == ErrorCode::InvalidArgument
                && e.message.starts_with("op: unknown operation") =>
        {
            Err(ClientError::HelperTooOld("doctor --live"))
        }
        Err(e) => Err(e),
    }
}

/// `--live --json`: the helper's reply dictionary, pretty-printed, as
/// `status --json` prints its own; exit 1 when any check failed.
fn live_json(cli: &Cli, args: &DoctorArgs, out: &mut impl Write) -> Result<(), ClientError> {
    let mut conn = Connection::open(&cli.endpoint(), cli.timeout)?;
    let (value, checks) = live_checks(&mut conn, args)?;
    let pretty = serde_json::to_string_pretty(&value)
        .map_err(|e| ClientError::Output(std::io::Error::other(e)))?;
    writeln!(out, "{pretty}")?;
    match checks.iter().filter(|c| !c.ok).count() {
        0 => Ok(()),
        failed => Err(ClientError::Doctor { failed }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // literals
    use super::*;
    use ztun_proto::{Counters, ResolverRoute, TunnelSpec};

    fn status(full: bool, resolver: &str) -> TunnelStatus {
        let mut spec = TunnelSpec::new("all".parse().unwrap());
        spec.full = full;
        spec.routes = vec!["203.0.113.0/24".parse().unwrap()];
        spec.exclude = vec!["192.0.2.0/24".parse().unwrap()];
        TunnelStatus {
            spec,
            interface: "ztun0".to_owned(),
            state: TunnelState::Up,
            routes: Vec::new(),
            addresses: Vec::new(),
            counters: Counters::default(),
            upstream_health: None,
            failover_health: Vec::new(),
            active_upstream: None,
            physical: None,
            physical_gateway: None,
            resolvers: vec![ResolverRoute {
                address: resolver.parse().unwrap(),
                through_tunnel: true,
            }],
            since: 0,
        }
    }

    #[test]
    fn full_mode_keeps_exclusions_and_the_upstream_out_and_pins_resolvers_in() {
        let full = status(true, "198.51.100.53");
        let out = |r: &str| is_exclusion(&full, r.parse().unwrap());
        assert!(!out("0.0.0.0/1") && !out("128.0.0.0/1") && !out("8000::/1"));
        assert!(!out("203.0.113.0/24"), "a given route goes in");
        assert!(!out("198.51.100.53/32"), "a resolver's pin goes in");
        assert!(out("192.0.2.0/24"), "an --exclude stays out");
        assert!(
            out("198.51.100.7/32"),
            "the upstream's host route stays out"
        );
        // A resolver the user excluded is not pinned: its host route is the
        // exclusion, and stays out.
        let mut excluded = status(true, "198.51.100.53");
        excluded
            .spec
            .exclude
            .push("198.51.100.53/32".parse().unwrap());
        assert!(is_exclusion(&excluded, "198.51.100.53/32".parse().unwrap()));
    }

    #[test]
    fn target_only_mode_has_no_exclusions() {
        let target = status(false, "198.51.100.53");
        for r in ["203.0.113.0/24", "192.0.2.0/24", "198.51.100.7/32"] {
            assert!(!is_exclusion(&target, r.parse().unwrap()), "{r}");
        }
    }
}
