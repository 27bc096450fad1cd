//! The system's DNS resolvers, and which of them full-tunnel mode must pin
//! into the tunnel. A resolver on the local link (192.168.1.1 on a /24) is
//! more specific than the tunnel's `/1` halves, so without a host route of
//! its own every DNS query would leave beside the tunnel: the classic DNS
//! leak of tun2socks-style tools.
//!
//! Read from `/etc/resolv.conf` on both systems. On macOS that file is
//! written by configd and lists the primary resolvers; per-interface
//! (scoped) resolvers that only `scutil --dns` shows are not seen.

use std::net::IpAddr;

use ipnet::IpNet;
use ztun_proto::TunnelSpec;

/// Where the resolvers are listed.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` addresses of a resolv.conf, in order, without
/// duplicates. Unparsable lines are skipped (a link-local IPv6 address with
/// a zone, `fe80::1%en0`, is kept without its zone).
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            if !found.contains(&ip) {
                found.push(ip);
            }
        }
    }
    found
}

/// The system's resolvers now; none when the file cannot be read.
pub fn system() -> Vec<IpAddr> {
    match std::fs::read_to_string(RESOLV_CONF) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::warn!("cannot read {RESOLV_CONF}: {e}; no resolver is pinned into the tunnel");
            Vec::new()
        }
    }
}

/// The resolvers full mode pins into the tunnel with host routes: every one
/// the tunnel can carry, except a loopback stub (its own queries leave
/// through whatever routes apply to its upstreams), one the user excluded,
/// and the upstream server itself.
pub fn to_pin(spec: &TunnelSpec, resolvers: &[IpAddr], upstream: &[IpAddr]) -> Vec<IpNet> {
    if !spec.full {
        return Vec::new();
    }
    resolvers
        .iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter(|ip| ip.is_ipv4() || spec.ipv6.is_some())
        .filter(|ip| !spec.exclude.iter().any(|e| e.contains(*ip)))
        .filter(|ip| !upstream.contains(ip))
        .map(|ip| IpNet::from(*ip))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_in_order_once_each() {
        let text = "# generated\nsearch example.test\nnameserver 192.0.2.53\n\
                    nameserver  2001:db8::53\nnameserver fe80::1%en0\noptions edns0\n\
                    nameserver 192.0.2.53\nnameserver not-an-address\nnameserver\n";
        let want: Vec<IpAddr> = ["192.0.2.53", "2001:db8::53", "fe80::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(parse_resolv_conf(text), want);
    }

    fn full() -> TunnelSpec {
        let mut s = TunnelSpec::new("all".parse().unwrap());
        s.full = true;
        s
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn full_mode_pins_each_resolver_the_tunnel_can_carry() {
        let resolvers = ips(&[
            "192.0.2.1",
            "127.0.0.53",
            "2001:db8::53",
            "198.51.100.9",
            "203.0.113.10",
        ]);
        let mut s = full();
        s.exclude = vec!["198.51.100.0/24".parse().unwrap()];
        let pinned = to_pin(&s, &resolvers, &ips(&["203.0.113.10"]));
        // Not the loopback stub, not IPv6 without ipv6, not excluded, not the upstream.
        assert_eq!(pinned, vec!["192.0.2.1/32".parse::<IpNet>().unwrap()]);
        s.ipv6 = Some("2001:db8:ff::1/64".parse().unwrap());
        let pinned: Vec<String> = to_pin(&s, &resolvers, &[])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            pinned,
            ["192.0.2.1/32", "2001:db8::53/128", "203.0.113.10/32"],
            "with ipv6, IPv6 resolvers too; without an upstream, every other"
        );
    }

    #[test]
    fn target_only_mode_pins_nothing() {
        let s = TunnelSpec::new("t".parse().unwrap());
        assert!(to_pin(&s, &ips(&["192.0.2.1"]), &[]).is_empty());
    }
}
