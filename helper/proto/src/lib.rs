//! ztun's control protocol (DESIGN.md §3): the typed requests, replies and
//! events that `ztunctl`, menu-bar apps and the helper exchange, their
//! dictionary form, and the Unix-socket frame codec.
//!
//! This crate owns the wire schema and validates everything at the edge; it
//! does no I/O and knows nothing of sockets, XPC or tunnels.
//!
//! The dictionary form uses only strings, int64, arrays, dictionaries and
//! data: flags are int64 0/1 (a real bool is accepted on input), so a client
//! reads every number of a reply with one getter (`xpc_dictionary_get_int64`).

mod doctor;
mod error;
mod fields;
mod flows;
pub mod frame;
mod message;
mod spec;
mod upstream;

pub use doctor::{check, parse_dns_name, parse_probe, DoctorCheck};
pub use error::{DecodeError, ErrorCode};
pub use flows::{Flow, FlowProtocol, MAX_FLOWS_PER_REPLY};
pub use message::{
    DownTarget, ErrorReply, Event, NetworkCause, Op, Reply, Request, Response, RouteChange,
    PROTOCOL_VERSION,
};
pub use spec::{
    name_in_domains, parse_address_v4, parse_address_v6, parse_fake_pool, parse_fake_pool6,
    parse_peer, parse_route, parse_route_domain, Counters, DnsMode, EchoPolicy, InstalledRoute,
    InterfaceAddress, ResolverRoute, TunnelName, TunnelSpec, TunnelState, TunnelStatus,
    UpstreamHealth, DEFAULT_ADDRESS, DEFAULT_FAKE_POOL, DEFAULT_MTU, DEFAULT_PEER, MAX_FAILOVER,
    MAX_NAME_LEN, MAX_ROUTE_DOMAINS, MIN_MTU_V4, MIN_MTU_V6,
};
pub use upstream::{Credentials, Host, ProxyServer, Upstream, REDACTED};

/// Names and paths of an installed ztun, in one place: the helper, the
/// packaging files (launchd job, systemd unit) and the tests that check
/// those files all read them from here.
pub mod service {
    /// The launchd job label, the Mach service (XPC) name and the `os_log`
    /// subsystem: one reverse-DNS name for the helper.
    pub const LABEL: &str = "com.ztun.helper";
    pub const MACH_SERVICE: &str = LABEL;
    pub const OS_LOG_SUBSYSTEM: &str = LABEL;
    /// macOS install paths (DESIGN.md §6).
    pub const MACOS_HELPER_PATH: &str = "/Library/PrivilegedHelperTools/com.ztun.helper";
    pub const MACOS_LAUNCHD_PLIST: &str = "/Library/LaunchDaemons/com.ztun.helper.plist";
    pub const MACOS_CTL_PATH: &str = "/usr/local/bin/ztunctl";
    pub const MACOS_LOG_PATH: &str = "/Library/Logs/ztun/helper.log";
    pub const MACOS_STATE_DIR: &str = "/Library/Application Support/ztun";
    /// The macOS package (`packaging/macos`): its identifier, which
    /// `pkgutil --forget` takes on uninstall.
    pub const MACOS_PKG_ID: &str = "com.ztun.pkg";
    /// The code-signing identifier of ztunctl (the helper's is [`LABEL`]).
    pub const MACOS_CTL_SIGNING_ID: &str = "com.ztun.ztunctl";
    /// Linux install paths, as the .deb lays them out: a distribution
    /// package never writes under /usr/local, which belongs to the admin.
    pub const LINUX_HELPER_PATH: &str = "/usr/sbin/ztun-helper";
    pub const LINUX_CTL_PATH: &str = "/usr/bin/ztunctl";
    pub const LINUX_STATE_DIR: &str = "/var/lib/ztun";
    pub const LINUX_UNIT: &str = "ztun-helper.service";
    /// Where the .deb puts the unit (Debian 12 packages ship units in /lib).
    pub const LINUX_UNIT_DIR: &str = "/lib/systemd/system";
    /// The code-signing identifier of the ztun menu-bar app, which a signed
    /// helper answers over XPC by default beside ztunctl.
    pub const MACOS_MENU_BAR_SIGNING_ID: &str = "com.ztun.menubar";
}

/// Where the helper listens for Unix-socket clients by default. On macOS
/// this transport is for development; installed clients use XPC.
pub const DEFAULT_SOCKET_PATH: &str = if cfg!(target_os = "macos") {
    "/var/run/ztun/control.sock"
} else {
    "/run/ztun/control.sock"
};

/// Re-exported so users of the protocol name one plist crate.
pub use plist;
