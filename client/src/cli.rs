//! The command line: what each command and flag means, as `--help` teaches it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ztun_proto::{DnsMode, EchoPolicy, TunnelName, Upstream, DEFAULT_MTU};

use crate::Endpoint;

/// Control the ztun helper: bring tunnels up and down, steer routes into
/// them, and see what flows through them.
///
/// Reading status is open to every local user; changing tunnels or routes
/// needs root or membership of the helper's admin group.
#[derive(Debug, Parser)]
#[command(
    name = "ztunctl",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The helper's Unix control socket [default: /run/ztun/control.sock].
    /// On macOS ztunctl talks to the installed helper over XPC (the Mach
    /// service com.ztun.helper) unless a socket is given.
    #[arg(long, global = true, env = "ZTUN_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Seconds to wait for the helper's reply.
    #[arg(long, global = true, default_value = "30", value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Print the request as the XML plist the helper would receive (the same
    /// dictionary a menu-bar app sends over XPC) instead of sending it.
    #[arg(long, global = true)]
    pub dry_run: bool,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Where this command reaches the helper.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::choose(self.socket.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring a tunnel up and route destinations into it.
    ///
    /// Target-only (the default): only the --route destinations go through the
    /// tunnel. Full tunnel (--full): everything does, except --exclude and the
    /// upstream server.
    #[command(after_help = "Examples:\n  \
        ztunctl up --route 203.0.113.0/24\n  \
        ztunctl up --name work --route 198.51.100.0/24 --upstream socks5://192.0.2.10:1080\n  \
        ztunctl up --full --upstream socks5://192.0.2.10:1080 --upstream http://192.0.2.11:3128\n  \
        ztunctl up --full --exclude 192.0.2.0/24 --upstream socks5://user:pass@192.0.2.10:1080")]
    Up(UpArgs),
    /// Take a tunnel down, removing every route it installed.
    Down(DownArgs),
    /// Show tunnels, their routes and counters.
    Status(StatusArgs),
    /// Add, remove or list a running tunnel's routes.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Check the helper and each tunnel, a line per check (✓ or ✗ with a
    /// fix); exits 1 when any check fails.
    ///
    /// Without --live, ztunctl checks what the helper reports: its version,
    /// the route ledger, each tunnel's state, addresses and routes as the
    /// kernel resolves them, and the upstream's last known health.
    ///
    /// With --live, the helper also tests each tunnel for real and times
    /// it: every route is read back from the kernel; the SOCKS5 upstream
    /// gets a fresh handshake; pings go through the tunnel as its ICMP
    /// policy says (forward: a real ping to the --probe host; reply:
    /// answered by the helper); --probe connects to HOST:PORT through the
    /// tunnel and its upstream, as any application would; --dns-name
    /// resolves a name with the system resolver and checks that each
    /// resolver is routed where it should be (in full mode, a resolver
    /// outside the tunnel is a DNS leak). Menu-bar apps get the same checks
    /// over XPC (docs/protocol.md, op doctor).
    #[command(after_help = "Examples:\n  \
        ztunctl doctor                                   # what the helper reports\n  \
        ztunctl doctor --live                            # routes, upstream, ICMP policy, tested now\n  \
        ztunctl doctor work --live --probe 203.0.113.5:443\n  \
        ztunctl doctor --live --dns-name www.example.com # where does DNS go?\n  \
        ztunctl doctor --live --json                     # the checks as JSON (keys: docs/protocol.md)")]
    Doctor(DoctorArgs),
    /// List the open TCP and UDP flows of each tunnel: who talks to whom,
    /// through which upstream, how many bytes each way, for how long.
    ///
    /// Oldest first. A tunnel with more than 1,000 open flows lists its
    /// busiest 1,000 and says how many it left out. Menu-bar apps get the
    /// same list over XPC (docs/protocol.md, op flows).
    #[command(after_help = "Examples:\n  \
        ztunctl flows                 # every tunnel's open flows\n  \
        ztunctl flows work --watch    # the list again every second; Ctrl-C to stop\n  \
        ztunctl flows --json          # the helper's reply as JSON (keys: docs/protocol.md)")]
    Flows(FlowsArgs),
    /// Show the versions of ztunctl, the helper and their protocol.
    Version,
}

#[derive(Debug, Args)]
// Each flag is a command-line switch, one to one.
#[allow(clippy::struct_excessive_bools)]
pub struct UpArgs {
    /// Name of the tunnel (letters, digits, '-', '_').
    #[arg(long, default_value = "default", value_parser = parse_from_str::<TunnelName>)]
    pub name: TunnelName,

    /// The tunnel interface's IPv4 address with prefix.
    #[arg(long, default_value = "198.18.0.1/32", value_name = "CIDR", value_parser = ztun_proto::parse_address_v4)]
    pub address: Ipv4Net,

    /// The point-to-point peer address.
    #[arg(long, default_value = "198.18.0.2", value_name = "IP", value_parser = ztun_proto::parse_peer)]
    pub peer: Ipv4Addr,

    /// Tunnel MTU. Flows end inside the helper, so a large MTU is free and fast.
    #[arg(long, default_value_t = DEFAULT_MTU)]
    pub mtu: u16,

    /// An IPv6 address with prefix for the tunnel; needed for IPv6 routes.
    #[arg(long, value_name = "CIDR", value_parser = ztun_proto::parse_address_v6)]
    pub ipv6: Option<Ipv6Net>,

    /// A destination to send through the tunnel (repeatable); a bare address
    /// means a single host.
    #[arg(long = "route", value_name = "CIDR", value_parser = ztun_proto::parse_route)]
    pub routes: Vec<IpNet>,

    /// Send all traffic through the tunnel (0.0.0.0/1 and 128.0.0.0/1, and
    /// the IPv6 halves with --ipv6).
    #[arg(long)]
    pub full: bool,

    /// With --full: a destination kept outside the tunnel (repeatable).
    #[arg(long = "exclude", value_name = "CIDR", value_parser = ztun_proto::parse_route)]
    pub exclude: Vec<IpNet>,

    /// With --full and no --ipv6: let IPv6 bypass the tunnel. By default it
    /// is routed into the tunnel and refused there (RST, ICMPv6
    /// unreachable), so applications fall back to IPv4 at once instead of
    /// leaking around the proxy.
    #[arg(long)]
    pub allow_ipv6_leak: bool,

    /// With --full: fail closed. The firewall (nftables; pf on macOS) drops
    /// every packet that would leave outside the tunnel, except to the
    /// upstream, the --exclude prefixes and loopback. It stays in place if
    /// the helper dies, until `ztunctl down` or the helper's next start
    /// without such a tunnel.
    #[arg(long)]
    pub kill_switch: bool,

    /// Where flows go: direct (the default), socks5://[user:pass@]host:port
    /// or http://[user:pass@]host:port (HTTP CONNECT). Repeat it for
    /// failover: new flows take the first proxy that is reachable, and
    /// move back as soon as an earlier one recovers. An HTTP proxy carries
    /// TCP only: DNS goes through it as DNS over TCP, other UDP is refused
    /// (ICMP prohibited), so QUIC falls back to TCP at once.
    #[arg(long = "upstream", value_name = "URL", value_parser = parse_from_str::<Upstream>)]
    pub upstreams: Vec<Upstream>,

    /// With a socks5 upstream: relay DNS (UDP port 53) as DNS over TCP
    /// through CONNECT, for SOCKS servers without UDP ASSOCIATE.
    #[arg(long)]
    pub dns_over_tcp: bool,

    /// Who answers DNS queries that enter the tunnel: `system` (they are
    /// relayed like any UDP) or `fake`: the helper answers each A query with
    /// an address from --fake-pool, and a flow to that address reaches the
    /// proxy by name (SOCKS5 domain, HTTP CONNECT host), so names resolve
    /// at the proxy, never here. Needs a proxy --upstream. With --full every
    /// query is answered; without it, give --route-domain.
    #[arg(long, default_value = "system", value_name = "MODE", value_parser = parse_from_str::<DnsMode>)]
    pub dns: DnsMode,

    /// With --dns fake: where fake addresses come from (routed into the
    /// tunnel); at least a /28. The tunnel's own address and peer are never
    /// handed out.
    #[arg(long, default_value = "198.18.0.0/15", value_name = "CIDR", value_parser = ztun_proto::parse_fake_pool)]
    pub fake_pool: Ipv4Net,

    /// With --dns fake and --ipv6: answer AAAA queries with addresses from
    /// this IPv6 prefix (a /32 to a /120), routed into the tunnel. Without
    /// it AAAA queries get an empty answer and applications use IPv4.
    #[arg(long, value_name = "CIDR", value_parser = ztun_proto::parse_fake_pool6)]
    pub fake_pool6: Option<Ipv6Net>,

    /// With --dns fake: answer only names in this domain and its
    /// subdomains (repeatable). Without --full the system is told to send
    /// these domains' queries to the tunnel (on macOS /etc/resolver/DOMAIN,
    /// on Linux systemd-resolved), and only they enter it.
    #[arg(long = "route-domain", value_name = "DOMAIN", value_parser = ztun_proto::parse_route_domain)]
    pub route_domains: Vec<String>,

    /// ICMP echo (ping): forward a real echo and report the true round trip,
    /// reply at once from the helper, or drop.
    #[arg(long, default_value = "forward", value_name = "POLICY", value_parser = parse_from_str::<EchoPolicy>)]
    pub icmp: EchoPolicy,

    /// Do not bring this tunnel back after the helper restarts.
    #[arg(long)]
    pub transient: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct DownArgs {
    /// The tunnel to take down.
    #[arg(value_parser = parse_from_str::<TunnelName>)]
    pub name: Option<TunnelName>,

    /// Take every tunnel down.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show only this tunnel.
    #[arg(value_parser = parse_from_str::<TunnelName>)]
    pub name: Option<TunnelName>,

    /// Print the helper's reply as JSON (stable keys: docs/protocol.md).
    #[arg(long)]
    pub json: bool,

    /// Keep running and print each event (state, route, error) as it happens.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Show only this tunnel's flows.
    #[arg(value_parser = parse_from_str::<TunnelName>)]
    pub name: Option<TunnelName>,

    /// Print the helper's reply as JSON (stable keys: docs/protocol.md);
    /// with --watch, one line per refresh.
    #[arg(long)]
    pub json: bool,

    /// Keep running and show the list again every second.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check only this tunnel.
    #[arg(value_parser = parse_from_str::<TunnelName>)]
    pub name: Option<TunnelName>,

    /// Have the helper test each tunnel now, through the tunnel itself.
    #[arg(long)]
    pub live: bool,

    /// With --live: connect to this address and TCP port through the tunnel
    /// its address is routed into (and ping it, if that tunnel is up with
    /// --icmp forward). An address, not a name: --dns-name tests names.
    #[arg(long, requires = "live", value_name = "HOST:PORT", value_parser = ztun_proto::parse_probe)]
    pub probe: Option<SocketAddr>,

    /// With --live: resolve this name with the system resolver, and check
    /// where each resolver in /etc/resolv.conf is routed.
    #[arg(long, requires = "live", value_name = "NAME", value_parser = ztun_proto::parse_dns_name)]
    pub dns_name: Option<String>,

    /// With --live: print only the helper's checks, as JSON (stable keys:
    /// docs/protocol.md); exits 1 when any check fails.
    #[arg(long, requires = "live")]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Steer more destinations into a running tunnel.
    Add(RouteArgs),
    /// Stop steering destinations into a tunnel.
    Remove(RouteArgs),
    /// List a tunnel's installed routes and the interface each resolves to.
    List {
        #[arg(value_parser = parse_from_str::<TunnelName>)]
        name: TunnelName,
    },
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[arg(value_parser = parse_from_str::<TunnelName>)]
    pub name: TunnelName,

    #[arg(required = true, value_name = "CIDR", value_parser = ztun_proto::parse_route)]
    pub routes: Vec<IpNet>,
}

fn parse_from_str<T: std::str::FromStr<Err = String>>(s: &str) -> Result<T, String> {
    s.parse()
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(format!("\"{s}\" is not a number of seconds from 1 to 3600")),
    }
}
