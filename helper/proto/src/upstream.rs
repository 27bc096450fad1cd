//! Where the helper sends terminated flows: `direct`, a SOCKS5 server
//! (`socks5://[user:pass@]host:port`, RFC 1928 / RFC 1929) or an HTTP proxy
//! (`http://[user:pass@]host:port`, CONNECT as RFC 9110 §9.3.6 defines it,
//! Basic authentication as RFC 7617 does).
//!
//! The password never appears in `Display` or `Debug` output: tracing-oslog
//! logs every message as public, and status is readable by every local user.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// What `Display` prints in place of a password.
pub const REDACTED: &str = "***";

/// Characters percent-encoded in the user-info part of an upstream URL.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b':')
    .add(b'@')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'[')
    .add(b']');

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Upstream {
    /// Flows leave from the helper's own sockets, bound to the physical interface.
    #[default]
    Direct,
    /// TCP through CONNECT, UDP through UDP ASSOCIATE.
    Socks5(ProxyServer),
    /// TCP through CONNECT; UDP cannot pass an HTTP proxy, so DNS goes as
    /// DNS over TCP and other UDP is refused.
    Http(ProxyServer),
}

/// A proxy server: where it is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyServer {
    pub host: Host,
    pub port: u16,
    pub auth: Option<Credentials>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// The SOCKS server's host name, resolved by the helper at `up` (its
    /// address is what full mode keeps outside the tunnel). A DNS name is at
    /// most 253 bytes (RFC 1035), which is what is accepted.
    Domain(String),
}

/// RFC 1929 username/password; each 1..=255 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Domain(name) => f.write_str(name),
        }
    }
}

impl Upstream {
    /// The full URL, credentials included: for the wire only, never for logs.
    pub fn to_url(&self) -> String {
        self.render(false)
    }

    /// The proxy server, unless flows go direct.
    pub fn proxy(&self) -> Option<&ProxyServer> {
        match self {
            Upstream::Direct => None,
            Upstream::Socks5(p) | Upstream::Http(p) => Some(p),
        }
    }

    /// Whether the upstream carries UDP datagrams (SOCKS5 UDP ASSOCIATE).
    pub fn carries_udp(&self) -> bool {
        !matches!(self, Upstream::Http(_))
    }

    /// The same upstream with the password replaced by [`REDACTED`], as
    /// status shows it to every local user.
    #[must_use]
    pub fn redacted(&self) -> Upstream {
        let hide = |s: &ProxyServer| ProxyServer {
            auth: s.auth.as_ref().map(|c| Credentials {
                username: c.username.clone(),
                password: REDACTED.to_owned(),
            }),
            ..s.clone()
        };
        match self {
            Upstream::Socks5(s) => Upstream::Socks5(hide(s)),
            Upstream::Http(s) => Upstream::Http(hide(s)),
            Upstream::Direct => Upstream::Direct,
        }
    }

    fn render(&self, redact: bool) -> String {
        let (scheme, s) = match self {
            Upstream::Direct => return "direct".to_owned(),
            Upstream::Socks5(s) => ("socks5", s),
            Upstream::Http(s) => ("http", s),
        };
        let auth = s.auth.as_ref().map_or(String::new(), |c| {
            let user = utf8_percent_encode(&c.username, USERINFO);
            if redact {
                format!("{user}:{REDACTED}@")
            } else {
                format!("{user}:{}@", utf8_percent_encode(&c.password, USERINFO))
            }
        });
        format!("{scheme}://{auth}{}:{}", s.host, s.port)
    }
}

/// Redacted: safe for logs and terminals.
impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(true))
    }
}

fn credential_part(raw: &str, what: &str) -> Result<String, String> {
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| format!("{what} is not valid UTF-8 after percent-decoding"))?;
    match decoded.len() {
        1..=255 => Ok(decoded.into_owned()),
        0 => Err(format!("{what} is empty")),
        n => Err(format!(
            "{what} is {n} bytes; at most 255 are allowed (RFC 1929)"
        )),
    }
}

fn parse_host(raw: &str) -> Result<Host, String> {
    if let Some(inner) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| format!("[{inner}] is not an IPv6 address"));
    }
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(_) => Ok(Host::Ip(ip)),
            IpAddr::V6(_) => Err(format!("write the IPv6 address in brackets: [{raw}]")),
        };
    }
    dns_name(raw)
        .map(Host::Domain)
        .ok_or_else(|| format!("\"{raw}\" is not a host name or IP address"))
}

/// A DNS host name in lower case without its trailing dot: labels of
/// letters, digits and `-`, each at most 63 bytes, at most 253 in all
/// (RFC 1035). `None` when `raw` is not one.
pub(crate) fn dns_name(raw: &str) -> Option<String> {
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = raw.strip_suffix('.').unwrap_or(raw);
    // A name ending in an all-digit label reads as an IPv4 address to people
    // and to resolvers (RFC 1123 §2.1), so `192.0.2.1.` or `1.2.3` is refused
    // rather than stored as a domain that would re-encode as an address.
    let numeric_tail = name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if name.is_empty() || name.len() > 253 || numeric_tail || !name.split('.').all(valid_label) {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// The upstream forms, as error messages list them.
const FORMS: &str = "direct, socks5://[user:pass@]host:port or http://[user:pass@]host:port";

impl FromStr for Upstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("direct") {
            return Ok(Upstream::Direct);
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("socks5") => ("socks5", rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => ("http", rest),
            Some((scheme, _)) => {
                return Err(format!("scheme \"{scheme}\" is not supported; use {FORMS}"))
            }
            None => {
                return Err(format!(
                    "\"{}\" is not an upstream; use {FORMS}",
                    Upstream::redact_raw(s)
                ))
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err("an upstream URL has no path, query or fragment".to_owned());
        }
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').ok_or(format!(
                    "credentials need both parts: {scheme}://user:pass@host:port"
                ))?;
                let auth = Credentials {
                    username: credential_part(user, "username")?,
                    password: credential_part(pass, "password")?,
                };
                (Some(auth), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = hostport
            .rsplit_once(':')
            .filter(|(h, _)| !h.is_empty() && (!h.contains(':') || h.ends_with(']')))
            .ok_or_else(|| {
                format!("\"{hostport}\" needs a host and a port, e.g. 192.0.2.1:1080")
            })?;
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("port \"{port}\" is not in 1..=65535")),
        };
        let server = ProxyServer {
            host: parse_host(host)?,
            port,
            auth,
        };
        Ok(match scheme {
            "http" => Upstream::Http(server),
            _ => Upstream::Socks5(server),
        })
    }
}

impl Upstream {
    /// Hides anything between `://` and `@` in text that failed to parse, so
    /// an error message never echoes a password back into a log.
    fn redact_raw(s: &str) -> String {
        match (s.find("://"), s.rfind('@')) {
            (Some(a), Some(b)) if b > a => format!("{}://{REDACTED}{}", &s[..a], &s[b..]),
            (None, Some(b)) => format!("{REDACTED}{}", &s[b..]),
            _ => s.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn socks(s: &str) -> ProxyServer {
        match s.parse::<Upstream>().unwrap() {
            Upstream::Socks5(u) => u,
            other => panic!("{s} parsed as {other}"),
        }
    }

    #[test]
    fn http_proxies_parse_like_socks5_ones_and_carry_no_udp() {
        let up: Upstream = "HTTP://alice:s%3Acret@Proxy.Example:3128/".parse().unwrap();
        let Upstream::Http(p) = &up else {
            panic!("{up:?}")
        };
        assert_eq!(p.host, Host::Domain("proxy.example".into()));
        assert_eq!(p.port, 3128);
        assert_eq!(p.auth.as_ref().unwrap().password, "s:cret");
        assert_eq!(up.to_url(), "http://alice:s%3Acret@proxy.example:3128");
        assert_eq!(up.to_string(), "http://alice:***@proxy.example:3128");
        assert!(!up.carries_udp());
        assert!("socks5://192.0.2.1:1080"
            .parse::<Upstream>()
            .unwrap()
            .carries_udp());
    }

    #[test]
    fn direct_is_case_insensitive() {
        assert_eq!("direct".parse::<Upstream>(), Ok(Upstream::Direct));
        assert_eq!("DIRECT".parse::<Upstream>(), Ok(Upstream::Direct));
    }

    #[test]
    fn socks5_with_ipv4_host_and_no_auth() {
        let u = socks("socks5://192.0.2.1:1080");
        assert_eq!(u.host, Host::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
        assert_eq!(u.port, 1080);
        assert_eq!(u.auth, None);
    }

    #[test]
    fn socks5_with_bracketed_ipv6_host() {
        let u = socks("socks5://[2001:db8::1]:1080");
        assert_eq!(u.host, Host::Ip("2001:db8::1".parse().unwrap()));
        assert_eq!(Upstream::Socks5(u).to_url(), "socks5://[2001:db8::1]:1080");
    }

    #[test]
    fn socks5_with_domain_host_is_lowercased() {
        assert_eq!(
            socks("socks5://Proxy.Example:1080").host,
            Host::Domain("proxy.example".into())
        );
    }

    #[test]
    fn credentials_are_percent_decoded_and_reencoded() {
        let u = socks("socks5://al%40ice:p%3Ass%20word@192.0.2.1:1080");
        let auth = u.auth.clone().unwrap();
        assert_eq!(auth.username, "al@ice");
        assert_eq!(auth.password, "p:ss word");
        assert_eq!(
            Upstream::Socks5(u).to_url(),
            "socks5://al%40ice:p%3Ass%20word@192.0.2.1:1080"
        );
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let up: Upstream = "socks5://alice:hunter2@192.0.2.1:1080".parse().unwrap();
        assert_eq!(up.to_string(), "socks5://alice:***@192.0.2.1:1080");
        assert!(!format!("{up:?}").contains("hunter2"));
        assert_eq!(up.redacted().to_url(), "socks5://alice:***@192.0.2.1:1080");
    }

    #[test]
    fn parse_errors_never_echo_the_password() {
        let err = "sock5://alice:hunter2@192.0.2.1:1080"
            .parse::<Upstream>()
            .unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let err = "alice:hunter2@192.0.2.1:1080"
            .parse::<Upstream>()
            .unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn rejects_malformed_upstreams_with_a_reason() {
        for (input, needle) in [
            ("https://192.0.2.1:8080", "scheme \"https\""),
            ("http://192.0.2.1", "needs a host and a port"),
            ("socks5://192.0.2.1", "needs a host and a port"),
            ("socks5://192.0.2.1:0", "not in 1..=65535"),
            ("socks5://192.0.2.1:65536", "not in 1..=65535"),
            ("socks5://2001:db8::1:1080", "needs a host and a port"),
            ("socks5://alice@192.0.2.1:1080", "both parts"),
            ("socks5://:pw@192.0.2.1:1080", "username is empty"),
            ("socks5://bad_host!:1080", "not a host name"),
            ("socks5://192.0.2.1:1080/path", "no path"),
            ("", "is not an upstream"),
        ] {
            let err = input.parse::<Upstream>().unwrap_err();
            assert!(err.contains(needle), "{input:?}: {err}");
        }
    }

    #[test]
    fn a_name_ending_in_digits_is_not_a_domain() {
        // Found by the control_frame fuzz target: "192.0.2.1." became the
        // domain "192.0.2.1", which re-encoded as an IPv4 address.
        for host in ["192.0.2.1.", "1.2.3", "198.51.100", "proxy.42"] {
            let err = format!("socks5://{host}:1080")
                .parse::<Upstream>()
                .unwrap_err();
            assert!(
                err.contains("is not a host name or IP address"),
                "{host}: {err}"
            );
        }
        assert_eq!(
            socks("socks5://proxy42.example.:1080").host,
            Host::Domain("proxy42.example".into())
        );
    }

    #[test]
    fn rejects_credentials_longer_than_rfc1929_allows() {
        let long = "u".repeat(256);
        let err = format!("socks5://{long}:pw@192.0.2.1:1080")
            .parse::<Upstream>()
            .unwrap_err();
        assert!(err.contains("at most 255"), "{err}");
    }
}
