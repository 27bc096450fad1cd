//! What a user asks for (`TunnelSpec`) and what the helper reports back
//! (`TunnelStatus`), with validation at the edge: a spec that decodes is one
//! the helper can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use plist::Value;

use crate::fields::{counter, DictBuilder, Fields};
use crate::{DecodeError, Upstream};

/// Default tunnel address: the first host of the benchmarking range 198.18.0.0/15.
pub const DEFAULT_ADDRESS: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 1), 32) {
    Ok(net) => net,
    Err(_) => panic!("constant prefix length is valid"),
};
/// Default point-to-point peer (macOS utun is point-to-point: S2).
pub const DEFAULT_PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Flows terminate in the helper, so a large tunnel MTU costs nothing on the
/// wire and saves per-packet work; 9000 is accepted by both utun and Linux tun.
pub const DEFAULT_MTU: u16 = 9000;
/// Smallest MTU an IPv4 host must accept (RFC 791).
pub const MIN_MTU_V4: u16 = 576;
/// Smallest MTU an IPv6 link may have (RFC 8200 §5).
pub const MIN_MTU_V6: u16 = 1280;
/// Longest tunnel name.
pub const MAX_NAME_LEN: usize = 32;
/// Failover proxies a tunnel may list after its upstream.
pub const MAX_FAILOVER: usize = 7;
/// The fake-IP pool by default: the benchmarking range (RFC 2544), which no
/// real destination uses. The tunnel's own address and peer are in it and
/// are never handed out.
pub const DEFAULT_FAKE_POOL: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15) {
    Ok(net) => net,
    Err(_) => panic!("constant prefix length is valid"),
};
/// The smallest fake-IP pool: a /28, 16 addresses.
pub(crate) const MAX_FAKE_POOL_PREFIX: u8 = 28;
/// Route domains a tunnel may list.
pub const MAX_ROUTE_DOMAINS: usize = 64;

/// Who answers the DNS queries that enter the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsMode {
    /// They are relayed like any UDP: the system's resolver answers.
    #[default]
    System,
    /// The helper answers A queries with addresses from the fake pool and
    /// hands the proxy the name when a flow to one opens (SOCKS5 ATYP
    /// domain, HTTP CONNECT host), so names resolve at the proxy.
    Fake,
}

impl DnsMode {
    pub const ALL: [DnsMode; 2] = [DnsMode::System, DnsMode::Fake];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsMode::System => "system",
            DnsMode::Fake => "fake",
        }
    }
}

impl FromStr for DnsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "\"{}\" is not a DNS mode; use system or fake",
                    s.escape_debug()
                )
            })
    }
}

impl fmt::Display for DnsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `name` (lower case, no trailing dot) is one of `domains` or
/// under one; every name is when `domains` is empty.
pub fn name_in_domains(domains: &[String], name: &str) -> bool {
    domains.is_empty()
        || domains.iter().any(|d| {
            name == d
                || name
                    .strip_suffix(d.as_str())
                    .is_some_and(|head| head.ends_with('.'))
        })
}

/// Parses a route domain: a DNS name (stored in lower case, without a
/// trailing dot) whose names and subdomains' names the fake DNS answers.
pub fn parse_route_domain(s: &str) -> Result<String, String> {
    crate::upstream::dns_name(s)
        .ok_or_else(|| format!("\"{}\" is not a domain like example.com", s.escape_debug()))
}

/// Parses an IPv6 fake-IP pool: a prefix from /32 (the most addresses a
/// pool walks) to /120 (256 addresses).
pub fn parse_fake_pool6(s: &str) -> Result<Ipv6Net, String> {
    let IpNet::V6(net) = parse_route(s)? else {
        return Err(format!(
            "{s}: the IPv6 fake-IP pool is IPv6 (fake_pool is the IPv4 one)"
        ));
    };
    if !(32..=120).contains(&net.prefix_len()) {
        return Err(format!("{net}: an IPv6 pool is a /32 to a /120"));
    }
    Ok(net)
}

/// Parses a fake-IP pool: an IPv4 prefix of at least 16 addresses.
pub fn parse_fake_pool(s: &str) -> Result<Ipv4Net, String> {
    let IpNet::V4(net) = parse_route(s)? else {
        return Err(format!(
            "{s}: the fake-IP pool is IPv4 (AAAA queries get no answer)"
        ));
    };
    if net.prefix_len() > MAX_FAKE_POOL_PREFIX {
        return Err(format!(
            "{net} holds {} addresses; a pool needs at least 16 (a /{MAX_FAKE_POOL_PREFIX})",
            1_u32 << (32 - net.prefix_len())
        ));
    }
    Ok(net)
}

/// A tunnel's user-chosen name: 1–32 of `A-Z a-z 0-9 - _`, starting with a
/// letter or digit. It is a key in the state files and a CLI argument, so
/// nothing that needs quoting is allowed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelName(String);

impl TunnelName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TunnelName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(format!(
                "tunnel name must be 1 to {MAX_NAME_LEN} characters"
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) || !s.chars().all(ok_char) {
            return Err(format!(
                "tunnel name \"{}\" may use only letters, digits, '-' and '_', starting with a letter or digit",
                s.escape_debug()
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for TunnelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a route destination: a CIDR with no host bits set, or a bare address
/// meaning a /32 (/128). `/0` is refused: it would replace the system default
/// route, which ztun never touches (full mode uses two /1 routes instead).
pub fn parse_route(s: &str) -> Result<IpNet, String> {
    let net = if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| format!("\"{s}\" is not a CIDR like 203.0.113.0/24"))?
    } else {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("\"{s}\" is not an address or a CIDR like 203.0.113.0/24"))?
    };
    if net.trunc() != net {
        return Err(format!(
            "{s} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    if net.prefix_len() == 0 {
        return Err(format!(
            "{s} would replace the default route; use full-tunnel mode (full = 1, ztunctl up --full)"
        ));
    }
    Ok(net)
}

/// Parses the tunnel's own IPv4 address with its prefix (`198.18.0.1/32`);
/// a bare address means /32.
pub fn parse_address_v4(s: &str) -> Result<Ipv4Net, String> {
    let net = if s.contains('/') {
        s.parse::<Ipv4Net>()
            .map_err(|_| format!("\"{s}\" is not an IPv4 address with prefix like 198.18.0.1/32"))?
    } else {
        s.parse::<Ipv4Addr>()
            .map(Ipv4Net::from)
            .map_err(|_| format!("\"{s}\" is not an IPv4 address"))?
    };
    usable_host(IpAddr::V4(net.addr()))?;
    Ok(net)
}

/// Parses the tunnel's optional IPv6 address with its prefix (`2001:db8::1/64`).
pub fn parse_address_v6(s: &str) -> Result<Ipv6Net, String> {
    let net = s
        .parse::<Ipv6Net>()
        .map_err(|_| format!("\"{s}\" is not an IPv6 address with prefix like 2001:db8::1/64"))?;
    usable_host(IpAddr::V6(net.addr()))?;
    Ok(net)
}

pub fn parse_peer(s: &str) -> Result<Ipv4Addr, String> {
    let ip = s
        .parse::<Ipv4Addr>()
        .map_err(|_| format!("\"{s}\" is not an IPv4 address"))?;
    usable_host(IpAddr::V4(ip))?;
    Ok(ip)
}

fn usable_host(ip: IpAddr) -> Result<(), String> {
    let bad = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    } || ip.is_loopback();
    if bad {
        Err(format!("{ip} cannot be a tunnel address"))
    } else {
        Ok(())
    }
}

/// What the engine does with ICMP echo requests (S4, S5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EchoPolicy {
    /// Answer from the engine at once.
    Reply,
    /// Send a real echo from a host socket and translate the real reply back,
    /// so `ping` shows the true round trip.
    #[default]
    Forward,
    Drop,
}

impl EchoPolicy {
    pub const ALL: [EchoPolicy; 3] = [EchoPolicy::Reply, EchoPolicy::Forward, EchoPolicy::Drop];

    pub fn as_str(self) -> &'static str {
        match self {
            EchoPolicy::Reply => "reply",
            EchoPolicy::Forward => "forward",
            EchoPolicy::Drop => "drop",
        }
    }
}

impl FromStr for EchoPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("\"{s}\" is not an ICMP policy; use reply, forward or drop"))
    }
}

impl fmt::Display for EchoPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tunnel as the user asks for it (the `up` request's `tunnel` dictionary).
#[derive(Debug, Clone, PartialEq, Eq)]
// Each flag is a key of the wire dictionary, one to one.
#[allow(clippy::struct_excessive_bools)]
pub struct TunnelSpec {
    pub name: TunnelName,
    pub address: Ipv4Net,
    pub peer: Ipv4Addr,
    pub mtu: u16,
    pub ipv6: Option<Ipv6Net>,
    /// Destinations steered into the tunnel (target-only mode).
    pub routes: Vec<IpNet>,
    /// All traffic: `0.0.0.0/1` + `128.0.0.0/1` (and the IPv6 halves) (S6).
    pub full: bool,
    /// Kept outside the tunnel in full mode.
    pub exclude: Vec<IpNet>,
    /// Full mode without `ipv6`: let IPv6 bypass the tunnel instead of
    /// refusing it (the IPv6 leak guard is on by default).
    pub allow_ipv6_leak: bool,
    /// Full mode only: while the tunnel is wanted, the firewall drops every
    /// packet that would leave outside it (except to the upstream, the
    /// exclusions and loopback), also after the helper dies, until
    /// `down` or the helper's next start without it.
    pub kill_switch: bool,
    pub upstream: Upstream,
    /// Proxies that take new flows, in order, while `upstream` (and those
    /// before them) cannot be reached; new flows go back as each recovers.
    pub failover: Vec<Upstream>,
    /// Relay DNS queries (UDP port 53) as DNS over TCP through CONNECT, for
    /// SOCKS5 servers without UDP ASSOCIATE (HTTP proxies always do).
    pub dns_over_tcp: bool,
    pub icmp: EchoPolicy,
    pub dns: DnsMode,
    /// With `dns = fake`: where fake addresses come from (routed into the
    /// tunnel).
    pub fake_pool: Ipv4Net,
    /// With `dns = fake` and `ipv6`: where AAAA answers come from (routed
    /// into the tunnel); without it AAAA queries get no data.
    pub fake_pool6: Option<Ipv6Net>,
    /// With `dns = fake`: only names in these domains (and their
    /// subdomains) get fake addresses; empty means every name. Without
    /// `full`, the system is told to send these domains' queries to the
    /// tunnel's peer address, where the helper answers.
    pub route_domains: Vec<String>,
    /// Not restored after a helper restart.
    pub transient: bool,
}

impl TunnelSpec {
    /// A spec with every optional field at its default.
    pub fn new(name: TunnelName) -> Self {
        Self {
            name,
            address: DEFAULT_ADDRESS,
            peer: DEFAULT_PEER,
            mtu: DEFAULT_MTU,
            ipv6: None,
            routes: Vec::new(),
            full: false,
            exclude: Vec::new(),
            allow_ipv6_leak: false,
            kill_switch: false,
            upstream: Upstream::Direct,
            failover: Vec::new(),
            dns_over_tcp: false,
            icmp: EchoPolicy::default(),
            dns: DnsMode::System,
            fake_pool: DEFAULT_FAKE_POOL,
            fake_pool6: None,
            route_domains: Vec::new(),
            transient: false,
        }
    }

    /// Checks the rules that tie fields together; `key` names the dictionary
    /// the spec came from so errors point at the right field.
    fn check(&self, f: &Fields<'_>) -> Result<(), DecodeError> {
        let min_mtu = if self.ipv6.is_some() {
            MIN_MTU_V6
        } else {
            MIN_MTU_V4
        };
        if self.mtu < min_mtu {
            let why = if self.ipv6.is_some() {
                " with IPv6"
            } else {
                ""
            };
            return Err(f.invalid(
                "mtu",
                format!("{} is below the minimum {min_mtu}{why}", self.mtu),
            ));
        }
        if self.peer == self.address.addr() {
            return Err(f.invalid("peer", format!("{} is the tunnel's own address", self.peer)));
        }
        if self.ipv6.is_none() {
            if let Some((i, net)) = self
                .routes
                .iter()
                .enumerate()
                .find(|(_, n)| n.addr().is_ipv6())
            {
                return Err(DecodeError::Invalid {
                    key: format!("{}[{i}]", f.key("routes")),
                    reason: format!("{net} is IPv6 but the tunnel has no IPv6 address (ipv6)"),
                });
            }
        }
        if !self.full && !self.exclude.is_empty() {
            return Err(f.invalid(
                "exclude",
                "exclusions apply only in full-tunnel mode (full = 1, ztunctl up --full)",
            ));
        }
        if self.allow_ipv6_leak && !self.full {
            return Err(f.invalid(
                "allow_ipv6_leak",
                "the IPv6 leak guard exists only in full-tunnel mode (full = 1, ztunctl up --full)",
            ));
        }
        if self.kill_switch && !self.full {
            return Err(f.invalid(
                "kill_switch",
                "the kill switch needs full-tunnel mode (full = 1, ztunctl up --full)",
            ));
        }
        if self.kill_switch && self.allow_ipv6_leak {
            return Err(f.invalid(
                "kill_switch",
                "the kill switch drops the IPv6 that allow_ipv6_leak (--allow-ipv6-leak) lets out; give one of them",
            ));
        }
        if self.dns_over_tcp && self.upstream.proxy().is_none() {
            return Err(f.invalid(
                "dns_over_tcp",
                "DNS over TCP applies only with a proxy upstream (--upstream socks5://… or http://…)",
            ));
        }
        self.check_failover(f)?;
        self.check_dns(f)?;
        if !self.full && self.routes.is_empty() && self.dns != DnsMode::Fake {
            return Err(f.invalid(
                "routes",
                "give at least one route, or full = 1 (ztunctl up --full) for all traffic",
            ));
        }
        Ok(())
    }

    /// Fake DNS hands names to a proxy, so it needs one; its pool and route
    /// domains mean nothing without it.
    fn check_dns(&self, f: &Fields<'_>) -> Result<(), DecodeError> {
        if self.dns == DnsMode::System {
            if self.fake_pool6.is_some() {
                return Err(f.invalid(
                    "fake_pool6",
                    "a fake-IP pool applies only with dns = fake (ztunctl up --dns fake)",
                ));
            }
            if self.fake_pool != DEFAULT_FAKE_POOL {
                return Err(f.invalid(
                    "fake_pool",
                    "a fake-IP pool applies only with dns = fake (ztunctl up --dns fake)",
                ));
            }
            if !self.route_domains.is_empty() {
                return Err(f.invalid(
                    "route_domains",
                    "route domains apply only with dns = fake (ztunctl up --dns fake)",
                ));
            }
            return Ok(());
        }
        if self.upstream.proxy().is_none() {
            return Err(f.invalid(
                "dns",
                "fake DNS hands names to a proxy, which resolves them: give upstream = socks5://… or http://… (ztunctl up --upstream URL)",
            ));
        }
        if let Some(pool6) = self.fake_pool6 {
            if self.ipv6.is_none() {
                return Err(f.invalid(
                    "fake_pool6",
                    format!("{pool6} needs IPv6 in the tunnel: give ipv6 (ztunctl up --ipv6 CIDR)"),
                ));
            }
        }
        if self.route_domains.len() > MAX_ROUTE_DOMAINS {
            return Err(f.invalid(
                "route_domains",
                format!(
                    "at most {MAX_ROUTE_DOMAINS} route domains, got {}",
                    self.route_domains.len()
                ),
            ));
        }
        if let Some(i) = (1..self.route_domains.len())
            .find(|&i| self.route_domains[..i].contains(&self.route_domains[i]))
        {
            return Err(DecodeError::Invalid {
                key: format!("{}[{i}]", f.key("route_domains")),
                reason: format!("{} is already listed", self.route_domains[i]),
            });
        }
        if !self.full && self.route_domains.is_empty() {
            return Err(f.invalid(
                "route_domains",
                "without full = 1, fake DNS needs the domains to answer for (ztunctl up --route-domain example.com)",
            ));
        }
        Ok(())
    }

    /// Whether the fake DNS answers for `name` (lower case, no trailing
    /// dot): every name without route domains, else a route domain or a
    /// name under one.
    pub fn routes_name(&self, name: &str) -> bool {
        name_in_domains(&self.route_domains, name)
    }

    /// A failover list needs a proxy to fail over from, holds only proxies
    /// (falling back to direct would leave without the proxy) and names
    /// each once.
    fn check_failover(&self, f: &Fields<'_>) -> Result<(), DecodeError> {
        if self.failover.is_empty() {
            return Ok(());
        }
        if self.upstream.proxy().is_none() {
            return Err(f.invalid(
                "failover",
                "a failover needs a proxy upstream to fail over from (upstream = socks5://… or http://…)",
            ));
        }
        if self.failover.len() > MAX_FAILOVER {
            return Err(f.invalid(
                "failover",
                format!(
                    "at most {MAX_FAILOVER} failover upstreams, got {}",
                    self.failover.len()
                ),
            ));
        }
        for (i, u) in self.failover.iter().enumerate() {
            let reason = if u.proxy().is_none() {
                "direct cannot be a failover: flows would leave without the proxy; give socks5://… or http://…".to_owned()
            } else if *u == self.upstream || self.failover[..i].contains(u) {
                format!("{u} is already listed")
            } else {
                continue;
            };
            return Err(DecodeError::Invalid {
                key: format!("{}[{i}]", f.key("failover")),
                reason,
            });
        }
        Ok(())
    }

    /// The upstream, then the failover proxies, in the order flows try them.
    pub fn upstreams(&self) -> impl Iterator<Item = &Upstream> {
        std::iter::once(&self.upstream).chain(&self.failover)
    }

    /// The same spec with every upstream password replaced by `***`, as
    /// status shows it to every local user.
    #[must_use]
    pub fn redacted(&self) -> Self {
        Self {
            upstream: self.upstream.redacted(),
            failover: self.failover.iter().map(Upstream::redacted).collect(),
            ..self.clone()
        }
    }

    /// Decodes and validates a spec dictionary (the helper's saved state
    /// uses the wire form); errors name `tunnel.<field>`.
    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        Self::decode(value, "tunnel")
    }

    /// Checks a spec built in code (the CLI's flags) by the same rules the
    /// helper applies on receipt; errors name `tunnel.<field>`.
    pub fn validate(&self) -> Result<(), DecodeError> {
        Self::from_value(&self.to_value()).map(drop)
    }

    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        let mut spec = TunnelSpec::new(f.parsed("name", str::parse)?);
        if let Some(a) = f.opt_parsed("address", parse_address_v4)? {
            spec.address = a;
        }
        if let Some(p) = f.opt_parsed("peer", parse_peer)? {
            spec.peer = p;
        }
        if let Some(m) = f.opt_int_as::<u16>("mtu")? {
            spec.mtu = m;
        }
        spec.ipv6 = f.opt_parsed("ipv6", parse_address_v6)?;
        spec.routes = f.str_list("routes", parse_route)?;
        spec.full = f.opt_flag("full")?.unwrap_or(false);
        spec.exclude = f.str_list("exclude", parse_route)?;
        spec.allow_ipv6_leak = f.opt_flag("allow_ipv6_leak")?.unwrap_or(false);
        spec.kill_switch = f.opt_flag("kill_switch")?.unwrap_or(false);
        if let Some(u) = f.opt_parsed("upstream", str::parse)? {
            spec.upstream = u;
        }
        spec.failover = f.str_list("failover", str::parse)?;
        spec.dns_over_tcp = f.opt_flag("dns_over_tcp")?.unwrap_or(false);
        if let Some(p) = f.opt_parsed("icmp", str::parse)? {
            spec.icmp = p;
        }
        if let Some(m) = f.opt_parsed("dns", str::parse)? {
            spec.dns = m;
        }
        if let Some(p) = f.opt_parsed("fake_pool", parse_fake_pool)? {
            spec.fake_pool = p;
        }
        spec.fake_pool6 = f.opt_parsed("fake_pool6", parse_fake_pool6)?;
        spec.route_domains = f.str_list("route_domains", parse_route_domain)?;
        spec.transient = f.opt_flag("transient")?.unwrap_or(false);
        spec.check(&f)?;
        Ok(spec)
    }

    /// Every field, written out (defaults included) so a reader never has to
    /// know the defaults.
    fn fields(&self, redact: bool) -> DictBuilder {
        let url = |u: &Upstream| {
            if redact {
                u.redacted().to_url()
            } else {
                u.to_url()
            }
        };
        let failover: Vec<Value> = self
            .failover
            .iter()
            .map(|u| Value::String(url(u)))
            .collect();
        DictBuilder::new()
            .set("name", self.name.to_string())
            .set("address", self.address.to_string())
            .set("peer", self.peer.to_string())
            .set("mtu", i64::from(self.mtu))
            .set_opt("ipv6", self.ipv6.map(|n| n.to_string()))
            .strings("routes", &self.routes)
            .flag("full", self.full)
            .strings("exclude", &self.exclude)
            .flag("allow_ipv6_leak", self.allow_ipv6_leak)
            .flag("kill_switch", self.kill_switch)
            .set("upstream", url(&self.upstream))
            .set("failover", failover)
            .flag("dns_over_tcp", self.dns_over_tcp)
            .set("icmp", self.icmp.as_str())
            .set("dns", self.dns.as_str())
            .set("fake_pool", self.fake_pool.to_string())
            .set_opt("fake_pool6", self.fake_pool6.map(|n| n.to_string()))
            .strings("route_domains", &self.route_domains)
            .flag("transient", self.transient)
    }

    /// The wire form, credentials included (an `up` request).
    pub fn to_value(&self) -> Value {
        self.fields(false).build()
    }

    /// Full mode without IPv6 in the tunnel, unless the user allowed the
    /// leak: IPv6 is routed into the tunnel and refused there, so it
    /// neither bypasses the tunnel nor hangs.
    pub fn blocks_ipv6(&self) -> bool {
        self.full && self.ipv6.is_none() && !self.allow_ipv6_leak
    }
}

/// Where a tunnel is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelState {
    Starting,
    Up,
    /// Up, but something needs attention (a route failed verification, the
    /// upstream is unreachable); details are in the latest error event.
    Degraded,
    Stopping,
}

impl TunnelState {
    pub const ALL: [TunnelState; 4] = [
        TunnelState::Starting,
        TunnelState::Up,
        TunnelState::Degraded,
        TunnelState::Stopping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TunnelState::Starting => "starting",
            TunnelState::Up => "up",
            TunnelState::Degraded => "degraded",
            TunnelState::Stopping => "stopping",
        }
    }
}

impl FromStr for TunnelState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("\"{s}\" is not a tunnel state"))
    }
}

impl fmt::Display for TunnelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A route as installed and read back from the kernel (S3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledRoute {
    pub route: IpNet,
    /// The interface the kernel resolves the route to (read back, not assumed).
    pub interface: String,
    /// Set for exclusion routes, which leave through the physical gateway.
    pub gateway: Option<IpAddr>,
}

impl InstalledRoute {
    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        Ok(Self {
            route: f.parsed("route", |s| s.parse::<IpNet>().map_err(|e| e.to_string()))?,
            interface: f.str("interface")?.to_owned(),
            gateway: f.opt_parsed("gateway", |s| {
                s.parse::<IpAddr>().map_err(|e| e.to_string())
            })?,
        })
    }

    pub fn to_value(&self) -> Value {
        DictBuilder::new()
            .set("route", self.route.to_string())
            .set("interface", self.interface.clone())
            .set_opt("gateway", self.gateway.map(|g| g.to_string()))
            .build()
    }
}

/// An address on the tunnel interface as the kernel holds it now (S2: the
/// point-to-point peer must be set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub address: IpNet,
    pub peer: Option<IpAddr>,
}

impl InterfaceAddress {
    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        Ok(Self {
            address: f.parsed("address", |s| s.parse::<IpNet>().map_err(|e| e.to_string()))?,
            peer: f.opt_parsed("peer", |s| s.parse::<IpAddr>().map_err(|e| e.to_string()))?,
        })
    }

    pub fn to_value(&self) -> Value {
        DictBuilder::new()
            .set("address", self.address.to_string())
            .set_opt("peer", self.peer.map(|p| p.to_string()))
            .build()
    }
}

/// Traffic counters of one tunnel since it came up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets read from the tunnel (sent by local applications).
    pub packets_in: u64,
    /// Packets written to the tunnel.
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub flows_open: u64,
    pub flows_total: u64,
    /// Bytes per second into the tunnel, over the last second.
    pub rate_in: u64,
    /// Bytes per second out of the tunnel, over the last second.
    pub rate_out: u64,
    /// Dropped packets by reason (`bad_checksum`, `not_routed`, …).
    pub drops: BTreeMap<String, u64>,
}

const COUNTER_KEYS: [&str; 8] = [
    "packets_in",
    "packets_out",
    "bytes_in",
    "bytes_out",
    "flows_open",
    "flows_total",
    "rate_in",
    "rate_out",
];

impl Counters {
    fn slots(&mut self) -> [&mut u64; 8] {
        [
            &mut self.packets_in,
            &mut self.packets_out,
            &mut self.bytes_in,
            &mut self.bytes_out,
            &mut self.flows_open,
            &mut self.flows_total,
            &mut self.rate_in,
            &mut self.rate_out,
        ]
    }

    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        let mut c = Counters::default();
        for (key, slot) in COUNTER_KEYS.into_iter().zip(c.slots()) {
            *slot = f.opt_int_as::<u64>(key)?.unwrap_or(0);
        }
        if let Some(drops) = f.opt_value("drops") {
            let path = f.key("drops");
            let d = Fields::new(drops, &path)?;
            for reason in d.keys() {
                c.drops
                    .insert(reason.to_owned(), d.opt_int_as::<u64>(reason)?.unwrap_or(0));
            }
        }
        Ok(c)
    }

    pub fn to_value(&self) -> Value {
        let mut this = self.clone();
        let mut b = DictBuilder::new();
        for (key, slot) in COUNTER_KEYS.into_iter().zip(this.slots()) {
            b = b.set(key, counter(*slot));
        }
        let drops = self
            .drops
            .iter()
            .fold(DictBuilder::new(), |d, (reason, n)| {
                d.set(reason, counter(*n))
            });
        b.set("drops", drops.build()).build()
    }
}

/// How a proxy upstream is doing, as the relay saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// Whether the last attempt to reach the server (a flow or the helper's
    /// own probe) got through the SOCKS5 handshake or the HTTP CONNECT.
    pub reachable: bool,
    /// Why the server could not be used, the last time it could not.
    pub last_error: Option<String>,
    /// How often the server came back after being unreachable.
    pub reconnects: u64,
    /// Flows whose destination was the server itself: in full mode this
    /// stays 0, or the helper's own traffic is looping into the tunnel.
    pub flows_to_upstream: u64,
    /// Flows refused, by reason: SOCKS5 reply codes (`connection_refused`,
    /// `host_unreachable`, …) and the helper's own (`upstream_down`,
    /// `upstream_unreachable`, `auth_rejected`, …).
    pub refused: BTreeMap<String, u64>,
}

impl UpstreamHealth {
    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        let mut refused = BTreeMap::new();
        if let Some(r) = f.opt_value("refused") {
            let path = f.key("refused");
            let d = Fields::new(r, &path)?;
            for reason in d.keys() {
                refused.insert(reason.to_owned(), d.opt_int_as::<u64>(reason)?.unwrap_or(0));
            }
        }
        Ok(Self {
            reachable: f.opt_flag("reachable")?.unwrap_or(false),
            last_error: f.opt_str("last_error")?.map(str::to_owned),
            reconnects: f.opt_int_as::<u64>("reconnects")?.unwrap_or(0),
            flows_to_upstream: f.opt_int_as::<u64>("flows_to_upstream")?.unwrap_or(0),
            refused,
        })
    }

    pub fn to_value(&self) -> Value {
        let refused = self
            .refused
            .iter()
            .fold(DictBuilder::new(), |d, (reason, n)| {
                d.set(reason, counter(*n))
            });
        DictBuilder::new()
            .flag("reachable", self.reachable)
            .set_opt("last_error", self.last_error.clone())
            .set("reconnects", counter(self.reconnects))
            .set("flows_to_upstream", counter(self.flows_to_upstream))
            .set("refused", refused.build())
            .build()
    }
}

/// A system resolver as a tunnel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverRoute {
    pub address: IpAddr,
    /// Whether the kernel routes queries to it into the tunnel.
    pub through_tunnel: bool,
}

impl ResolverRoute {
    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        Ok(Self {
            address: f.parsed("address", |s| {
                s.parse::<IpAddr>().map_err(|e| e.to_string())
            })?,
            through_tunnel: f.opt_flag("through_tunnel")?.unwrap_or(false),
        })
    }

    pub fn to_value(&self) -> Value {
        DictBuilder::new()
            .set("address", self.address.to_string())
            .flag("through_tunnel", self.through_tunnel)
            .build()
    }
}

/// A tunnel as the helper reports it: the spec (password redacted) plus
/// where it stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelStatus {
    /// The spec as requested; `upstream` carries no password.
    pub spec: TunnelSpec,
    /// The kernel interface (`utun4`, `tun0`).
    pub interface: String,
    pub state: TunnelState,
    pub routes: Vec<InstalledRoute>,
    /// The interface's addresses as the kernel reports them now.
    pub addresses: Vec<InterfaceAddress>,
    pub counters: Counters,
    /// Present when the upstream is a proxy.
    pub upstream_health: Option<UpstreamHealth>,
    /// The failover proxies' health, in the spec's order.
    pub failover_health: Vec<UpstreamHealth>,
    /// Where new flows go now (password as `***`): the first upstream that
    /// is reachable; absent when flows go direct.
    pub active_upstream: Option<String>,
    /// The physical interface the tunnel's own sockets leave through now,
    /// and its gateway (the tunnel's exclusions leave through it): followed
    /// across network changes and sleep.
    pub physical: Option<String>,
    pub physical_gateway: Option<IpAddr>,
    /// The system's DNS resolvers and whether the kernel routes each into
    /// this tunnel now (in full mode each should be: else DNS leaks).
    pub resolvers: Vec<ResolverRoute>,
    /// When the tunnel came up, in seconds since the Unix epoch.
    pub since: i64,
}

impl TunnelStatus {
    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        let spec = TunnelSpec::decode(value, path)?;
        let routes = f
            .opt_array("installed")?
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, r)| InstalledRoute::decode(r, &format!("{}[{i}]", f.key("installed"))))
            .collect::<Result<_, _>>()?;
        let addresses = f
            .opt_array("addresses")?
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, a)| InterfaceAddress::decode(a, &format!("{}[{i}]", f.key("addresses"))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            spec,
            interface: f.str("interface")?.to_owned(),
            state: f.parsed("state", str::parse)?,
            routes,
            addresses,
            counters: Counters::decode(f.value("counters")?, &f.key("counters"))?,
            resolvers: f
                .opt_array("resolvers")?
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, r)| ResolverRoute::decode(r, &format!("{}[{i}]", f.key("resolvers"))))
                .collect::<Result<_, _>>()?,
            physical: f.opt_str("physical")?.map(str::to_owned),
            physical_gateway: f.opt_parsed("physical_gateway", |s| {
                s.parse::<IpAddr>().map_err(|e| e.to_string())
            })?,
            upstream_health: f
                .opt_value("upstream_state")
                .map(|v| UpstreamHealth::decode(v, &f.key("upstream_state")))
                .transpose()?,
            failover_health: f
                .opt_array("failover_state")?
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    UpstreamHealth::decode(h, &format!("{}[{i}]", f.key("failover_state")))
                })
                .collect::<Result<_, _>>()?,
            active_upstream: f.opt_str("active_upstream")?.map(str::to_owned),
            since: f.int("since")?,
        })
    }

    /// The wire form: the spec's keys (password redacted) and the status keys
    /// in one dictionary.
    pub fn to_value(&self) -> Value {
        let installed: Vec<Value> = self.routes.iter().map(InstalledRoute::to_value).collect();
        self.spec
            .fields(true)
            .set("interface", self.interface.clone())
            .set("state", self.state.as_str())
            .set("installed", installed)
            .set(
                "addresses",
                self.addresses
                    .iter()
                    .map(InterfaceAddress::to_value)
                    .collect::<Vec<_>>(),
            )
            .set("counters", self.counters.to_value())
            .set(
                "resolvers",
                self.resolvers
                    .iter()
                    .map(ResolverRoute::to_value)
                    .collect::<Vec<_>>(),
            )
            .set_opt("physical", self.physical.clone())
            .set_opt(
                "physical_gateway",
                self.physical_gateway.map(|g| g.to_string()),
            )
            .set_opt(
                "upstream_state",
                self.upstream_health.as_ref().map(UpstreamHealth::to_value),
            )
            .set(
                "failover_state",
                self.failover_health
                    .iter()
                    .map(UpstreamHealth::to_value)
                    .collect::<Vec<_>>(),
            )
            .set_opt("active_upstream", self.active_upstream.clone())
            .set("since", self.since)
            .build()
    }
}
