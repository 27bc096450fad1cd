//! `flows`: the TCP and UDP flows a tunnel's data plane holds open now, as
//! `ztunctl flows` and menu-bar apps list them.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use plist::Value;

use crate::fields::{counter, DictBuilder, Fields};
use crate::spec::TunnelName;
use crate::DecodeError;

/// The most flows one reply lists. With more open, the reply keeps the
/// busiest (most bytes both ways) and says how many it left out, so a
/// reply stays far below the 1 MiB frame limit (an entry is about 250
/// bytes) however many flows a tunnel holds.
pub const MAX_FLOWS_PER_REPLY: usize = 1000;

/// A flow's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowProtocol {
    Tcp,
    Udp,
}

impl FlowProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowProtocol::Tcp => "tcp",
            FlowProtocol::Udp => "udp",
        }
    }
}

impl FromStr for FlowProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(FlowProtocol::Tcp),
            "udp" => Ok(FlowProtocol::Udp),
            _ => Err(format!("\"{s}\" is not a flow protocol; use tcp or udp")),
        }
    }
}

impl fmt::Display for FlowProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One open flow: who talks to whom, through what, how much, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub tunnel: TunnelName,
    pub protocol: FlowProtocol,
    /// The application's address and port, as it appears in the tunnel.
    pub source: SocketAddr,
    /// The address and port the application asked for.
    pub destination: SocketAddr,
    /// The name `destination` stands for, when it is a fake DNS address:
    /// what the proxy was asked to connect to.
    pub host: Option<String>,
    /// Where the flow leaves: `direct`, or the proxy's URL with the
    /// password shown as `***`.
    pub upstream: String,
    /// Payload bytes from the application towards the destination.
    pub bytes_up: u64,
    /// Payload bytes from the destination back to the application.
    pub bytes_down: u64,
    /// How long the flow has been open, in milliseconds.
    pub age_millis: u64,
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("\"{s}\" is not an address and port"))
}

impl Flow {
    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        Ok(Self {
            tunnel: f.parsed("tunnel", str::parse)?,
            protocol: f.parsed("protocol", str::parse)?,
            source: f.parsed("source", socket_addr)?,
            destination: f.parsed("destination", socket_addr)?,
            host: f.opt_str("host")?.map(str::to_owned),
            upstream: f.str("upstream")?.to_owned(),
            bytes_up: f.opt_int_as("bytes_up")?.unwrap_or(0),
            bytes_down: f.opt_int_as("bytes_down")?.unwrap_or(0),
            age_millis: f.opt_int_as("age_millis")?.unwrap_or(0),
        })
    }

    pub fn to_value(&self) -> Value {
        DictBuilder::new()
            .set("tunnel", self.tunnel.to_string())
            .set("protocol", self.protocol.as_str())
            .set("source", self.source.to_string())
            .set("destination", self.destination.to_string())
            .set_opt("host", self.host.clone())
            .set("upstream", self.upstream.clone())
            .set("bytes_up", counter(self.bytes_up))
            .set("bytes_down", counter(self.bytes_down))
            .set("age_millis", counter(self.age_millis))
            .build()
    }
}
