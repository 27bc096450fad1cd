//! `ztunctl doctor`: one line per check, ✓ or ✗, and for each ✗ the command
//! that fixes it. It asks the helper only what every user may ask
//! (version, status), and status reports each route as the kernel resolves
//! it at that moment.

use std::io::Write;
use std::net::IpAddr;

use ztun_proto::{Reply, Request, TunnelName, TunnelState, TunnelStatus, PROTOCOL_VERSION};

use crate::{exchange, hints, Cli, ClientError, Connection};

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
}

pub(crate) fn run(
    cli: &Cli,
    name: Option<&TunnelName>,
    out: &mut impl Write,
) -> Result<(), ClientError> {
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
    let upstream_down = t.upstream_health.as_ref().is_some_and(|h| !h.reachable);
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
        // In full mode every route but the halves and the given routes
        // keeps something outside the tunnel: `exclude` and the upstream.
        let excluded =
            t.spec.full && r.route.prefix_len() != 1 && !t.spec.routes.contains(&r.route);
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
    let upstream = &t.spec.upstream;
    let Some(h) = &t.upstream_health else {
        return report.pass(&format!(
            "{name}: upstream {upstream} (nothing to check for direct)"
        ));
    };
    if h.reachable {
        report.pass(&format!("{name}: upstream {upstream} is reachable"))?;
    } else {
        report.fail(
            &format!(
                "{name}: upstream {upstream} is unreachable: {}",
                h.last_error.as_deref().unwrap_or("no answer yet")
            ),
            &format!(
                "start the SOCKS5 server or fix the URL (ztunctl down {name}, then up with --upstream socks5://user:pass@host:port); the helper retries by itself"
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
