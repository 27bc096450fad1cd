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

/// glibc uses at most this many `nameserver` lines (resolv.h `MAXNS`).
const MAXNS: usize = 3;

/// The resolvers a resolv.conf names, as glibc's `res_init` reads them: a
/// line starting with `nameserver` and a blank, an address it can parse
/// (an IPv6 zone, `%eth0`, is dropped), the first [`MAXNS`]; each once.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    let listed = text.lines().filter_map(|line| {
        let rest = line.strip_prefix("nameserver")?;
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        let address = rest.split_whitespace().next()?;
        address.split('%').next()?.parse().ok()
    });
    for ip in listed.take(MAXNS) {
        if !found.contains(&ip) {
            found.push(ip);
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
    fn nameservers_are_read_as_glibc_reads_them() {
        let conf = "# written by the test\n\
                    search example.test\n\
                    nameserver 203.0.113.5\n\
                    ;nameserver 192.0.2.9\n\
                    \x20 nameserver 192.0.2.10\n\
                    nameservers 192.0.2.11\n\
                    nameserver not-an-address\n\
                    nameserver\t2001:db8::53%eth0\n\
                    nameserver 198.51.100.53\n\
                    nameserver 192.0.2.53\n";
        let want: Vec<IpAddr> = ["203.0.113.5", "2001:db8::53", "198.51.100.53"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            parse_resolv_conf(conf),
            want,
            "the first three, as MAXNS says"
        );
        assert!(parse_resolv_conf("").is_empty());
        let twice = "nameserver 192.0.2.53\nnameserver 192.0.2.53\n";
        assert_eq!(parse_resolv_conf(twice).len(), 1, "each once");
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
