//! ztun's control protocol (DESIGN.md §3): the typed requests, replies and
//! events that `ztunctl`, menu-bar apps and the helper exchange, their
//! dictionary form, and the Unix-socket frame codec.
//!
//! This crate owns the wire schema and validates everything at the edge; it
//! does no I/O and knows nothing of sockets, XPC or tunnels.
//!
//! The dictionary form uses only strings, int64, arrays, dictionaries and
//! data, because the published `xpc-connection` client cannot carry bool or
//! uint64: flags are int64 0/1 (a real bool is accepted on input).

mod error;
mod fields;
pub mod frame;
mod message;
mod spec;
mod upstream;

pub use error::{DecodeError, ErrorCode};
pub use message::{
    DownTarget, ErrorReply, Event, Op, Reply, Request, Response, RouteChange, PROTOCOL_VERSION,
};
pub use spec::{
    parse_address_v4, parse_address_v6, parse_peer, parse_route, Counters, EchoPolicy,
    InstalledRoute, InterfaceAddress, TunnelName, TunnelSpec, TunnelState, TunnelStatus,
    DEFAULT_ADDRESS, DEFAULT_MTU, DEFAULT_PEER, MAX_NAME_LEN, MIN_MTU_V4, MIN_MTU_V6,
};
pub use upstream::{Credentials, Host, Socks5Upstream, Upstream, REDACTED};

/// Where the helper listens for Unix-socket clients by default. On macOS
/// this transport is for development; installed clients use XPC.
pub const DEFAULT_SOCKET_PATH: &str = if cfg!(target_os = "macos") {
    "/var/run/ztun/control.sock"
} else {
    "/run/ztun/control.sock"
};

/// Re-exported so users of the protocol name one plist crate.
pub use plist;
