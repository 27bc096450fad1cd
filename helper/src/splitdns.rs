//! Split DNS for targeted fake DNS (`dns = fake` with route domains and
//! without full mode): the system is told to send the queries for the
//! route domains, and only those, to the tunnel's peer address, where the
//! data plane's fake DNS answers. What each platform writes is built here,
//! as text, and tested against it:
//!
//! - macOS: one file per domain in `/etc/resolver` (resolver(5): the file's
//!   name is the domain, `nameserver` the server; mDNSResponder reads the
//!   directory and `scutil --dns` lists each as a resolver for its domain).
//!   The files are the helper's by their first line, so a start after a
//!   crash can find and remove them, and a file someone else wrote is never
//!   overwritten.
//! - Linux: systemd-resolved's per-link configuration through `resolvectl`:
//!   the domains as routing-only domains (`~example.com`), the peer as the
//!   link's server, and the link never the default route for other names.
//!   It lives and dies with the tunnel interface, so a crash leaves nothing.

use std::net::IpAddr;

/// Where macOS reads per-domain resolver files.
pub const RESOLVER_DIR: &str = "/etc/resolver";

const HEADER: &str = "# ztun split DNS for ";

/// A resolver(5) file sending a domain's queries to `server`, marked as
/// the helper's for `interface`.
pub fn resolver_file(interface: &str, server: IpAddr) -> String {
    format!(
        "{HEADER}{interface}: removed when the tunnel goes down\nnameserver {server}\nport 53\n"
    )
}

/// The interface a resolver file was written for, when the helper wrote it.
pub fn owner(text: &str) -> Option<&str> {
    text.lines()
        .next()?
        .strip_prefix(HEADER)?
        .split(':')
        .next()
        .filter(|i| !i.is_empty())
}

/// The `resolvectl` invocations that configure `interface`'s link.
pub fn resolvectl(interface: &str, server: IpAddr, domains: &[String]) -> [Vec<String>; 3] {
    let mut domain = vec!["domain".to_owned(), interface.to_owned()];
    domain.extend(domains.iter().map(|d| format!("~{d}")));
    [
        vec!["dns".into(), interface.into(), server.to_string()],
        domain,
        vec!["default-route".into(), interface.into(), "false".into()],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolver_file_names_the_server_and_says_whose_it_is() {
        let text = resolver_file("utun4", "198.18.0.2".parse().unwrap());
        assert_eq!(
            text,
            "# ztun split DNS for utun4: removed when the tunnel goes down\n\
             nameserver 198.18.0.2\nport 53\n"
        );
        assert_eq!(owner(&text), Some("utun4"));
        assert_eq!(owner("nameserver 192.0.2.53\n"), None, "someone else's");
        assert_eq!(owner(""), None);
    }

    #[test]
    fn resolvectl_sets_routing_only_domains_and_no_default_route() {
        let domains = ["example.com".to_owned(), "corp.example".to_owned()];
        assert_eq!(
            resolvectl("ztun0", "198.18.0.2".parse().unwrap(), &domains),
            [
                vec!["dns", "ztun0", "198.18.0.2"],
                vec!["domain", "ztun0", "~example.com", "~corp.example"],
                vec!["default-route", "ztun0", "false"],
            ]
            .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
        );
    }
}
