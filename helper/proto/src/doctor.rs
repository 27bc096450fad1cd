//! `doctor`: a live self-test of each tunnel that the helper runs on a
//! client's behalf (`ztunctl doctor --live`, or a menu-bar app over XPC).
//! This module owns the request's arguments and the reply's check
//! dictionaries; what each check does is the helper's business
//! (`helper/src/doctor.rs`).

use std::net::SocketAddr;

use plist::Value;

use crate::fields::{counter, DictBuilder, Fields};
use crate::spec::TunnelName;
use crate::DecodeError;

/// The check ids the helper sends today. A newer helper may send others; a
/// client shows those as they come rather than refusing the reply.
pub mod check {
    /// A tunnel route as the kernel resolves it now.
    pub const ROUTE: &str = "route";
    /// A TCP connection to the probe through the tunnel and its upstream.
    pub const TCP: &str = "tcp";
    /// A name resolved by the system resolver, and whether each resolver
    /// is routed into the tunnel.
    pub const DNS: &str = "dns";
    /// An echo through the tunnel, per its ICMP policy.
    pub const ICMP: &str = "icmp";
    /// A fresh SOCKS5 handshake with the upstream server.
    pub const UPSTREAM: &str = "upstream";
}

/// One line of a `doctor` reply: what was checked, whether it passed, what
/// was seen, how long it took, and for a failure what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorCheck {
    /// The tunnel checked; absent for checks of the whole machine (the
    /// system resolver, a probe routed into no tunnel).
    pub tunnel: Option<TunnelName>,
    /// What was checked: one of [`check`]'s ids.
    pub check: String,
    pub ok: bool,
    /// What was seen, for a person.
    pub detail: String,
    /// How long the check took, in milliseconds.
    pub millis: u64,
    /// One line saying what to do, when the check failed.
    pub fix: Option<String>,
}

impl DoctorCheck {
    pub(crate) fn decode(value: &Value, path: &str) -> Result<Self, DecodeError> {
        let f = Fields::new(value, path)?;
        Ok(Self {
            tunnel: f.opt_parsed("tunnel", str::parse)?,
            check: f.str("check")?.to_owned(),
            ok: f.flag("ok")?,
            detail: f.str("detail")?.to_owned(),
            millis: f.opt_int_as::<u64>("millis")?.unwrap_or(0),
            fix: f.opt_str("fix")?.map(str::to_owned),
        })
    }

    pub fn to_value(&self) -> Value {
        DictBuilder::new()
            .set_opt("tunnel", self.tunnel.as_ref().map(ToString::to_string))
            .set("check", self.check.clone())
            .flag("ok", self.ok)
            .set("detail", self.detail.clone())
            .set("millis", counter(self.millis))
            .set_opt("fix", self.fix.clone())
            .build()
    }
}

/// Parses a `doctor` probe: an address and a TCP port (`203.0.113.5:443`,
/// `[2001:db8::5]:443`). A name is refused: resolving it is the `dns`
/// check's job, and which address it stands for decides which tunnel the
/// probe tests.
pub fn parse_probe(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|_| {
        format!(
            "\"{}\" is not an address and port like 203.0.113.5:443 or [2001:db8::5]:443",
            s.escape_debug()
        )
    })?;
    if addr.port() == 0 {
        return Err(format!("{addr}: port 0 cannot be connected to"));
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err(format!("{} cannot be connected to", addr.ip()));
    }
    Ok(addr)
}

/// Parses the name a `doctor` request asks the system resolver for: a DNS
/// host name, stored in lower case without a trailing dot.
pub fn parse_dns_name(s: &str) -> Result<String, String> {
    crate::upstream::dns_name(s).ok_or_else(|| {
        format!(
            "\"{}\" is not a host name like www.example.com",
            s.escape_debug()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_an_address_and_a_port() {
        assert_eq!(
            parse_probe("203.0.113.5:443"),
            Ok("203.0.113.5:443".parse().unwrap())
        );
        assert_eq!(
            parse_probe("[2001:db8::5]:80"),
            Ok("[2001:db8::5]:80".parse().unwrap())
        );
        for bad in ["www.example.test:443", "203.0.113.5", "2001:db8::5:80", ""] {
            assert!(
                parse_probe(bad)
                    .unwrap_err()
                    .contains("is not an address and port"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_probe("203.0.113.5:0").unwrap_err(),
            "203.0.113.5:0: port 0 cannot be connected to"
        );
        assert_eq!(
            parse_probe("0.0.0.0:80").unwrap_err(),
            "0.0.0.0 cannot be connected to"
        );
    }

    #[test]
    fn a_dns_name_is_lowered_and_loses_its_trailing_dot() {
        assert_eq!(
            parse_dns_name("WWW.Example.test."),
            Ok("www.example.test".to_owned())
        );
        for bad in ["", "a..b", "-a.example", "192.0.2.1", "a b.example"] {
            assert!(parse_dns_name(bad).is_err(), "{bad}");
        }
    }
}
