//! Human output: what a person reads in a terminal. Machine output is
//! `--json`, which prints the protocol's own dictionaries.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ztun_proto::{
    DecodeError, Event, Flow, InstalledRoute, NetworkCause, RouteChange, TunnelStatus,
    UpstreamHealth,
};

/// One tunnel as a block of aligned lines.
pub(crate) fn tunnel(t: &TunnelStatus, now: SystemTime) -> String {
    let s = &t.spec;
    let mut out = String::new();
    let mode = match (s.full, s.blocks_ipv6(), s.allow_ipv6_leak) {
        (false, ..) => "target-only",
        (true, true, _) => "full tunnel, IPv6 refused",
        (true, false, true) => "full tunnel, IPv6 outside",
        (true, false, false) => "full tunnel",
    };
    let _ = writeln!(
        out,
        "{}  {}  {}  {} --> {}  mtu {}  {mode}",
        s.name, t.state, t.interface, s.address, s.peer, s.mtu
    );
    if let Some(v6) = s.ipv6 {
        let _ = writeln!(out, "  ipv6      {v6}");
    }
    let _ = writeln!(out, "  since     {}", since(t.since, now));
    if s.dns == ztun_proto::DnsMode::Fake {
        let names = if s.route_domains.is_empty() {
            "every name".to_owned()
        } else {
            s.route_domains.join(", ")
        };
        let at = if s.full {
            "every query in the tunnel".to_owned()
        } else {
            format!("queries to {}", s.peer)
        };
        let _ =
            writeln!(
            out,
            "  names     fake DNS for {names} ({at}), addresses from {}{}, resolved by the proxy",
            s.fake_pool,
            s.fake_pool6.map(|p| format!(" and {p}")).unwrap_or_default()
        );
    }
    if s.kill_switch {
        let _ = writeln!(
            out,
            "  firewall  kill switch: only the tunnel, the upstream and exclusions get out"
        );
    }
    match (&t.physical, t.physical_gateway) {
        (Some(i), Some(g)) => {
            let _ = writeln!(out, "  physical  {i} via {g}");
        }
        (Some(i), None) => {
            let _ = writeln!(out, "  physical  {i}");
        }
        (None, _) => {}
    }
    let dns = if s.dns_over_tcp {
        "    dns over tcp"
    } else {
        ""
    };
    let _ = writeln!(out, "  upstream  {}    icmp {}{dns}", s.upstream, s.icmp);
    let in_use = |u: &ztun_proto::Upstream| {
        let many = !s.failover.is_empty();
        if many && t.active_upstream.as_deref() == Some(u.to_string().as_str()) {
            "    <- new flows"
        } else {
            ""
        }
    };
    if let Some(h) = &t.upstream_health {
        let _ = writeln!(
            out,
            "            {}{}",
            upstream_health(h),
            in_use(&s.upstream)
        );
    }
    for (i, u) in s.failover.iter().enumerate() {
        let _ = writeln!(out, "  failover  {u}");
        if let Some(h) = t.failover_health.get(i) {
            let _ = writeln!(out, "            {}{}", upstream_health(h), in_use(u));
        }
    }
    if !s.failover.is_empty() && t.active_upstream.is_none() {
        let _ = writeln!(
            out,
            "            every upstream is down: new flows are refused"
        );
    }
    if t.routes.is_empty() {
        let _ = writeln!(out, "  routes    (none installed)");
    }
    for (i, r) in t.routes.iter().enumerate() {
        let label = if i == 0 { "routes" } else { "" };
        let _ = writeln!(out, "  {label:<8}  {}", route(r));
    }
    if !t.resolvers.is_empty() {
        let list: Vec<String> = t
            .resolvers
            .iter()
            .map(|r| match (r.through_tunnel, s.full) {
                (true, _) => format!("{} via tunnel", r.address),
                (false, true) if !r.address.is_loopback() => {
                    format!("{} OUTSIDE (DNS leak)", r.address)
                }
                (false, _) => format!("{} outside", r.address),
            })
            .collect();
        let _ = writeln!(out, "  dns       {}", list.join(", "));
    }
    if !s.exclude.is_empty() {
        let list: Vec<String> = s.exclude.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "  exclude   {}", list.join(", "));
    }
    let c = &t.counters;
    let _ = writeln!(
        out,
        "  traffic   in {} pkts / {} ({}/s)   out {} pkts / {} ({}/s)",
        c.packets_in,
        bytes(c.bytes_in),
        bytes(c.rate_in),
        c.packets_out,
        bytes(c.bytes_out),
        bytes(c.rate_out)
    );
    let _ = writeln!(
        out,
        "  flows     {} open, {} total",
        c.flows_open, c.flows_total
    );
    if !c.drops.is_empty() {
        let list: Vec<String> = c
            .drops
            .iter()
            .map(|(why, n)| format!("{why} {n}"))
            .collect();
        let _ = writeln!(out, "  drops     {}", list.join(", "));
    }
    out
}

/// The open flows as an aligned table, then how many there are.
pub(crate) fn flows(list: &[Flow], omitted: u64) -> String {
    if list.is_empty() && omitted == 0 {
        return "no open flows\n".to_owned();
    }
    let header = [
        "TUNNEL",
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "UPSTREAM",
        "UP",
        "DOWN",
        "AGE",
    ];
    let mut rows = vec![header.map(str::to_owned)];
    rows.extend(list.iter().map(|f| {
        [
            f.tunnel.to_string(),
            f.protocol.to_string(),
            f.source.to_string(),
            match &f.host {
                // A fake DNS address: the name is what was asked for.
                Some(host) => format!("{host}:{} ({})", f.destination.port(), f.destination.ip()),
                None => f.destination.to_string(),
            },
            f.upstream.clone(),
            bytes(f.bytes_up),
            bytes(f.bytes_down),
            age(Duration::from_millis(f.age_millis)),
        ]
    }));
    let mut widths = [0; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Byte counts and ages read best aligned right.
            if (5..=7).contains(&i) {
                let _ = write!(line, "{cell:>w$}  ");
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = write!(out, "{} open flow(s)", list.len() as u64 + omitted);
    if omitted > 0 {
        let _ = write!(out, "; the {omitted} quietest are not listed");
    }
    out.push('\n');
    out
}

/// A flow's age to the second (`0s`, `4m 2s`, `1h 0m 5s`).
fn age(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

/// `reachable, 2 reconnects` or `UNREACHABLE: <why>`, then refusals.
pub(crate) fn upstream_health(h: &UpstreamHealth) -> String {
    let mut line = if h.reachable {
        format!("reachable, {} reconnect(s)", h.reconnects)
    } else {
        format!(
            "UNREACHABLE: {}",
            h.last_error.as_deref().unwrap_or("no answer yet")
        )
    };
    if !h.refused.is_empty() {
        let list: Vec<String> = h
            .refused
            .iter()
            .map(|(why, n)| format!("{why} {n}"))
            .collect();
        let _ = write!(line, "; refused {}", list.join(", "));
    }
    if h.flows_to_upstream > 0 {
        let _ = write!(
            line,
            "; {} flow(s) to the upstream itself entered the tunnel",
            h.flows_to_upstream
        );
    }
    line
}

/// `203.0.113.0/24 -> utun4` or `192.0.2.0/24 -> en0 via 198.51.100.1`.
pub(crate) fn route(r: &InstalledRoute) -> String {
    match r.gateway {
        Some(gw) => format!("{} -> {} via {gw}", r.route, r.interface),
        None => format!("{} -> {}", r.route, r.interface),
    }
}

/// One line per watch event, stamped with the local clock in UTC. An event
/// that does not decode (a kind from a newer helper) gets a line saying so.
pub(crate) fn event(e: &Result<Event, DecodeError>, now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now);
    let what = match e {
        Err(why) => format!("(skipped an event this ztunctl cannot show: {why})"),
        Ok(Event::Tunnel(t)) => format!("{} is {} on {}", t.spec.name, t.state, t.interface),
        Ok(Event::Down { name }) => format!("{name} is down"),
        Ok(Event::Route {
            name,
            change: RouteChange::Added,
            route: r,
        }) => {
            format!("{name} route added: {}", route(r))
        }
        Ok(Event::Route {
            name,
            change: RouteChange::Removed,
            route: r,
        }) => {
            format!("{name} route removed: {}", route(r))
        }
        Ok(Event::Error {
            name: Some(name),
            message,
        }) => format!("{name} error: {message}"),
        Ok(Event::Error {
            name: None,
            message,
        }) => format!("error: {message}"),
        Ok(Event::Network {
            cause,
            interface,
            gateway,
        }) => {
            let now = match (interface, gateway) {
                (Some(i), Some(g)) => format!("{i} via {g}"),
                (Some(i), None) => i.clone(),
                (None, _) => "no physical network".to_owned(),
            };
            let why = match cause {
                NetworkCause::Changed => "network changed",
                NetworkCause::Woke => "woke from sleep",
            };
            format!("{why}: now {now}; tunnels re-checked")
        }
    };
    format!("{stamp}  {what}")
}

fn since(unix: i64, now: SystemTime) -> String {
    let Ok(secs) = u64::try_from(unix) else {
        return "unknown".to_owned();
    };
    let at = UNIX_EPOCH + Duration::from_secs(secs);
    let up = now.duration_since(at).unwrap_or_default();
    let up = humantime::format_duration(Duration::from_secs(up.as_secs()));
    format!("{} ({up} ago)", humantime::format_rfc3339_seconds(at))
}

/// Decimal units, as network tools count bytes.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut unit = 0;
    // Display only: the precision lost above 2^52 bytes cannot show in one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_decimal_units_with_one_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(181_000), "181.0 kB");
        assert_eq!(bytes(1_572_864), "1.6 MB");
        assert_eq!(bytes(u64::MAX), "18446744.1 TB");
    }

    #[test]
    fn flows_are_a_table_with_a_count_and_say_what_was_left_out() {
        let flow = |protocol: &str, source: &str, up, down, age_millis| Flow {
            tunnel: "work".parse().unwrap(),
            protocol: protocol.parse().unwrap(),
            source: source.parse().unwrap(),
            destination: "203.0.113.5:443".parse().unwrap(),
            host: None,
            upstream: "socks5://alice:***@192.0.2.10:1080".into(),
            bytes_up: up,
            bytes_down: down,
            age_millis,
        };
        let list = [
            flow("tcp", "198.18.0.1:50312", 1_200, 10_485_760, 3_723_000),
            flow("udp", "198.18.0.1:5353", 64, 0, 900),
        ];
        assert_eq!(
            flows(&list, 0),
            "TUNNEL  PROTO  SOURCE            DESTINATION      UPSTREAM                                UP     DOWN       AGE\n\
             work    tcp    198.18.0.1:50312  203.0.113.5:443  socks5://alice:***@192.0.2.10:1080  1.2 kB  10.5 MB  1h 2m 3s\n\
             work    udp    198.18.0.1:5353   203.0.113.5:443  socks5://alice:***@192.0.2.10:1080    64 B      0 B        0s\n\
             2 open flow(s)\n"
        );
        assert!(flows(&list[..1], 1_500)
            .ends_with("1501 open flow(s); the 1500 quietest are not listed\n"));
        assert_eq!(flows(&[], 0), "no open flows\n");
    }

    #[test]
    fn exclusion_route_shows_its_gateway() {
        let r = InstalledRoute {
            route: "192.0.2.0/24".parse().unwrap(),
            interface: "en0".into(),
            gateway: Some("198.51.100.1".parse().unwrap()),
        };
        assert_eq!(route(&r), "192.0.2.0/24 -> en0 via 198.51.100.1");
    }

    #[test]
    fn since_shows_the_start_and_the_age() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_003_723);
        assert_eq!(
            since(1_795_000_000, now),
            "2026-11-18T11:06:40Z (1h 2m 3s ago)"
        );
        assert_eq!(since(-5, now), "unknown");
    }
}
