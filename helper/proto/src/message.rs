//! The messages: requests, replies and `watch` events, and their dictionary
//! form (DESIGN.md §3). One model, two transports: the Unix socket carries
//! these dictionaries as binary plists (see `frame`), XPC carries them as
//! `xpc_dictionary`s with the same keys.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use plist::Value;

use crate::doctor::{parse_dns_name, parse_probe, DoctorCheck};
use crate::fields::{counter, DictBuilder, Fields};
use crate::flows::Flow;
use crate::spec::{parse_route, InstalledRoute, TunnelName, TunnelSpec, TunnelStatus};
use crate::{DecodeError, ErrorCode};

/// The protocol version this build speaks (`"v"` in every request).
pub const PROTOCOL_VERSION: i64 = 1;

/// What a request asks for; also what a client needs to know to decode the
/// reply, since replies do not repeat the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Version,
    Up,
    Down,
    Status,
    RouteAdd,
    RouteRemove,
    Watch,
    Doctor,
    Flows,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Version,
        Op::Up,
        Op::Down,
        Op::Status,
        Op::RouteAdd,
        Op::RouteRemove,
        Op::Watch,
        Op::Doctor,
        Op::Flows,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Version => "version",
            Op::Up => "up",
            Op::Down => "down",
            Op::Status => "status",
            Op::RouteAdd => "route.add",
            Op::RouteRemove => "route.remove",
            Op::Watch => "watch",
            Op::Doctor => "doctor",
            Op::Flows => "flows",
        }
    }

    /// Whether the operation changes tunnels or routes (S8: only root and the
    /// admin group may send these; everyone may read).
    pub fn is_mutating(self) -> bool {
        matches!(self, Op::Up | Op::Down | Op::RouteAdd | Op::RouteRemove)
    }
}

impl FromStr for Op {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|op| op.as_str()).collect();
                format!(
                    "unknown operation \"{}\"; known: {}",
                    s.escape_debug(),
                    known.join(", ")
                )
            })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which tunnels a `down` takes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownTarget {
    Name(TunnelName),
    /// Every tunnel (`ztunctl down --all`, the uninstaller).
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Version,
    Up(TunnelSpec),
    Down(DownTarget),
    /// One tunnel, or all when `None`.
    Status(Option<TunnelName>),
    RouteAdd {
        name: TunnelName,
        routes: Vec<IpNet>,
    },
    RouteRemove {
        name: TunnelName,
        routes: Vec<IpNet>,
    },
    /// Events for one tunnel, or all when `None`.
    Watch(Option<TunnelName>),
    /// A live self-test of one tunnel, or all when `name` is `None`: its
    /// routes, its upstream and its ICMP policy, plus a TCP connection to
    /// `probe` and a lookup of `dns_name` when given. Read-only.
    Doctor {
        name: Option<TunnelName>,
        probe: Option<SocketAddr>,
        dns_name: Option<String>,
    },
    /// The open flows of one tunnel, or of all when `None`.
    Flows(Option<TunnelName>),
}

impl Request {
    pub fn op(&self) -> Op {
        match self {
            Request::Version => Op::Version,
            Request::Up(_) => Op::Up,
            Request::Down(_) => Op::Down,
            Request::Status(_) => Op::Status,
            Request::RouteAdd { .. } => Op::RouteAdd,
            Request::RouteRemove { .. } => Op::RouteRemove,
            Request::Watch(_) => Op::Watch,
            Request::Doctor { .. } => Op::Doctor,
            Request::Flows(_) => Op::Flows,
        }
    }

    /// Decodes and validates a request dictionary. Unknown keys are ignored;
    /// `"v"` is checked first so a newer client gets `unsupported_version`
    /// rather than a confusing field error.
    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let f = Fields::new(value, "")?;
        let v = f.int("v")?;
        if v != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: v });
        }
        let op: Op = f.parsed("op", str::parse)?;
        let name = || f.parsed("name", str::parse::<TunnelName>);
        let opt_name = || f.opt_parsed("name", str::parse::<TunnelName>);
        let routes = || {
            let routes = f.str_list("routes", parse_route)?;
            if routes.is_empty() {
                return Err(f.invalid("routes", "give at least one route"));
            }
            Ok(routes)
        };
        Ok(match op {
            Op::Version => Request::Version,
            Op::Up => Request::Up(TunnelSpec::decode(f.value("tunnel")?, "tunnel")?),
            Op::Down => match (f.opt_flag("all")?.unwrap_or(false), opt_name()?) {
                (true, None) => Request::Down(DownTarget::All),
                (false, Some(n)) => Request::Down(DownTarget::Name(n)),
                (true, Some(_)) => {
                    return Err(f.invalid("all", "give either name or all = 1, not both"))
                }
                (false, None) => return Err(f.missing("name")),
            },
            Op::Status => Request::Status(opt_name()?),
            Op::RouteAdd => Request::RouteAdd {
                name: name()?,
                routes: routes()?,
            },
            Op::RouteRemove => Request::RouteRemove {
                name: name()?,
                routes: routes()?,
            },
            Op::Watch => Request::Watch(opt_name()?),
            Op::Doctor => Request::Doctor {
                name: opt_name()?,
                probe: f.opt_parsed("probe", parse_probe)?,
                dns_name: f.opt_parsed("dns_name", parse_dns_name)?,
            },
            Op::Flows => Request::Flows(opt_name()?),
        })
    }

    pub fn to_value(&self) -> Value {
        let b = DictBuilder::new()
            .set("v", PROTOCOL_VERSION)
            .set("op", self.op().as_str());
        let name = |n: &Option<TunnelName>| n.as_ref().map(ToString::to_string);
        match self {
            Request::Version => b,
            Request::Up(spec) => b.set("tunnel", spec.to_value()),
            Request::Down(DownTarget::Name(n)) => b.set("name", n.to_string()),
            Request::Down(DownTarget::All) => b.flag("all", true),
            Request::Status(n) | Request::Watch(n) | Request::Flows(n) => {
                b.set_opt("name", name(n))
            }
            Request::RouteAdd { name, routes } | Request::RouteRemove { name, routes } => {
                b.set("name", name.to_string()).strings("routes", routes)
            }
            Request::Doctor {
                name: n,
                probe,
                dns_name,
            } => b
                .set_opt("name", name(n))
                .set_opt("probe", probe.map(|p| p.to_string()))
                .set_opt("dns_name", dns_name.clone()),
        }
        .build()
    }
}

/// A failed request as the client sees it: a code a program can branch on and
/// one line a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for ErrorReply {
    fn from(e: DecodeError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// A successful reply's payload, by operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `version`: the helper's version and protocol.
    Version { version: String, protocol: i64 },
    /// `up`, `route.add`, `route.remove`: the tunnel as it now stands.
    Tunnel(Box<TunnelStatus>),
    /// `status`: the tunnels, and routes the ledger still lists that belong
    /// to no running tunnel (a removal that failed; the next start sweeps
    /// them).
    Tunnels {
        tunnels: Vec<TunnelStatus>,
        stale_routes: Vec<InstalledRoute>,
    },
    /// `down`, and `watch` before its event stream.
    Done,
    /// `doctor`: one entry per check, in the order they are best read.
    Doctor(Vec<DoctorCheck>),
    /// `flows`: the open flows, oldest first, at most
    /// [`MAX_FLOWS_PER_REPLY`](crate::MAX_FLOWS_PER_REPLY); `omitted` more
    /// were open but left out (the quietest).
    Flows { flows: Vec<Flow>, omitted: u64 },
}

/// A reply: `{"ok": 1, …}` or `{"ok": 0, "error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok(Reply),
    Err(ErrorReply),
}

impl Response {
    pub fn to_value(&self) -> Value {
        let ok = DictBuilder::new().flag("ok", true);
        match self {
            Response::Ok(Reply::Version { version, protocol }) => ok
                .set("version", version.clone())
                .set("protocol", *protocol),
            Response::Ok(Reply::Tunnel(t)) => ok.set("tunnel", t.to_value()),
            Response::Ok(Reply::Tunnels {
                tunnels,
                stale_routes,
            }) => ok
                .set(
                    "tunnels",
                    tunnels
                        .iter()
                        .map(TunnelStatus::to_value)
                        .collect::<Vec<_>>(),
                )
                .set(
                    "stale_routes",
                    stale_routes
                        .iter()
                        .map(InstalledRoute::to_value)
                        .collect::<Vec<_>>(),
                ),
            Response::Ok(Reply::Done) => ok,
            Response::Ok(Reply::Doctor(checks)) => ok.set(
                "checks",
                checks.iter().map(DoctorCheck::to_value).collect::<Vec<_>>(),
            ),
            Response::Ok(Reply::Flows { flows, omitted }) => ok
                .set(
                    "flows",
                    flows.iter().map(Flow::to_value).collect::<Vec<_>>(),
                )
                .set("omitted", counter(*omitted)),
            Response::Err(e) => DictBuilder::new().flag("ok", false).set(
                "error",
                DictBuilder::new()
                    .set("code", e.code.as_str())
                    .set("message", e.message.clone())
                    .build(),
            ),
        }
        .build()
    }

    /// Decodes the reply to a request of kind `op`.
    pub fn from_value(op: Op, value: &Value) -> Result<Self, DecodeError> {
        let f = Fields::new(value, "")?;
        if !f.flag("ok")? {
            let e = Fields::new(f.value("error")?, "error")?;
            // An error code from a newer helper still reaches the user as text.
            let code = e.str("code")?.parse().unwrap_or(ErrorCode::Internal);
            return Ok(Response::Err(ErrorReply::new(code, e.str("message")?)));
        }
        let reply = match op {
            Op::Version => Reply::Version {
                version: f.str("version")?.to_owned(),
                protocol: f.int("protocol")?,
            },
            Op::Up | Op::RouteAdd | Op::RouteRemove => Reply::Tunnel(Box::new(
                TunnelStatus::decode(f.value("tunnel")?, "tunnel")?,
            )),
            Op::Status => Reply::Tunnels {
                tunnels: f
                    .array("tunnels")?
                    .iter()
                    .enumerate()
                    .map(|(i, t)| TunnelStatus::decode(t, &format!("tunnels[{i}]")))
                    .collect::<Result<_, _>>()?,
                stale_routes: f
                    .opt_array("stale_routes")?
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                    .map(|(i, r)| InstalledRoute::decode(r, &format!("stale_routes[{i}]")))
                    .collect::<Result<_, _>>()?,
            },
            Op::Down | Op::Watch => Reply::Done,
            Op::Doctor => Reply::Doctor(
                f.array("checks")?
                    .iter()
                    .enumerate()
                    .map(|(i, c)| DoctorCheck::decode(c, &format!("checks[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Op::Flows => Reply::Flows {
                flows: f
                    .array("flows")?
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Flow::decode(v, &format!("flows[{i}]")))
                    .collect::<Result<_, _>>()?,
                omitted: f.opt_int_as("omitted")?.unwrap_or(0),
            },
        };
        Ok(Response::Ok(reply))
    }

    /// The reply as a `Result`, for callers that treat a helper error as an error.
    pub fn into_result(self) -> Result<Reply, ErrorReply> {
        match self {
            Response::Ok(r) => Ok(r),
            Response::Err(e) => Err(e),
        }
    }
}

impl From<Result<Reply, ErrorReply>> for Response {
    fn from(r: Result<Reply, ErrorReply>) -> Self {
        match r {
            Ok(reply) => Response::Ok(reply),
            Err(e) => Response::Err(e),
        }
    }
}

/// Whether a route event reports an install or a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    Added,
    Removed,
}

impl RouteChange {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteChange::Added => "added",
            RouteChange::Removed => "removed",
        }
    }
}

impl FromStr for RouteChange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "added" => Ok(RouteChange::Added),
            "removed" => Ok(RouteChange::Removed),
            _ => Err(format!(
                "\"{s}\" is not a route change; use added or removed"
            )),
        }
    }
}

/// Why the helper looked at the network again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkCause {
    /// The physical interface or its gateway changed (a Wi-Fi switch, a new
    /// DHCP lease, a cable).
    Changed,
    /// The machine woke from sleep.
    Woke,
}

impl NetworkCause {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkCause::Changed => "changed",
            NetworkCause::Woke => "woke",
        }
    }
}

impl FromStr for NetworkCause {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "changed" => Ok(NetworkCause::Changed),
            "woke" => Ok(NetworkCause::Woke),
            _ => Err(format!(
                "\"{s}\" is not a network cause; use changed or woke"
            )),
        }
    }
}

/// A message on a `watch` stream: `{"event": kind, …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A tunnel came up or changed state (`"event": "tunnel"`).
    Tunnel(Box<TunnelStatus>),
    /// A tunnel is gone (`"event": "down"`).
    Down { name: TunnelName },
    /// A route was installed (and verified) or removed (`"event": "route"`).
    Route {
        name: TunnelName,
        change: RouteChange,
        route: InstalledRoute,
    },
    /// Something went wrong outside any request (`"event": "error"`), e.g. a
    /// route vanished after a network change; `name` is absent for
    /// helper-wide errors.
    Error {
        name: Option<TunnelName>,
        message: String,
    },
    /// The helper re-checked the network (`"event": "network"`): the
    /// physical interface and its gateway now (absent when there is no
    /// physical network), after which every tunnel's sockets, exclusions
    /// and routes were brought in line. Helper-wide.
    Network {
        cause: NetworkCause,
        interface: Option<String>,
        gateway: Option<IpAddr>,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Tunnel(_) => "tunnel",
            Event::Down { .. } => "down",
            Event::Route { .. } => "route",
            Event::Error { .. } => "error",
            Event::Network { .. } => "network",
        }
    }

    pub fn to_value(&self) -> Value {
        let b = DictBuilder::new().set("event", self.kind());
        match self {
            Event::Tunnel(t) => b.set("tunnel", t.to_value()),
            Event::Down { name } => b.set("name", name.to_string()),
            Event::Route {
                name,
                change,
                route,
            } => b
                .set("name", name.to_string())
                .set("change", change.as_str())
                .set("route", route.to_value()),
            Event::Error { name, message } => b
                .set_opt("name", name.as_ref().map(ToString::to_string))
                .set("message", message.clone()),
            Event::Network {
                cause,
                interface,
                gateway,
            } => b
                .set("cause", cause.as_str())
                .set_opt("interface", interface.clone())
                .set_opt("gateway", gateway.map(|g| g.to_string())),
        }
        .build()
    }

    pub fn from_value(value: &Value) -> Result<Self, DecodeError> {
        let f = Fields::new(value, "")?;
        let name = || f.parsed("name", str::parse::<TunnelName>);
        Ok(match f.str("event")? {
            "tunnel" => Event::Tunnel(Box::new(TunnelStatus::decode(
                f.value("tunnel")?,
                "tunnel",
            )?)),
            "down" => Event::Down { name: name()? },
            "route" => Event::Route {
                name: name()?,
                change: f.parsed("change", str::parse)?,
                route: InstalledRoute::decode(f.value("route")?, "route")?,
            },
            "error" => Event::Error {
                name: f.opt_parsed("name", str::parse)?,
                message: f.str("message")?.to_owned(),
            },
            "network" => Event::Network {
                cause: f.parsed("cause", str::parse)?,
                interface: f.opt_str("interface")?.map(str::to_owned),
                gateway: f.opt_parsed("gateway", |s| {
                    s.parse::<IpAddr>().map_err(|e| e.to_string())
                })?,
            },
            other => {
                return Err(f.invalid(
                    "event",
                    format!("unknown event kind \"{}\"", other.escape_debug()),
                ))
            }
        })
    }
}
