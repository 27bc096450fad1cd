//! pf, as the helper drives it through pfctl(8): enable references, anchor
//! rules and the verdict on an outbound packet. The rules are read by this
//! file's own parser of the pf.conf(5) grammar; a rule this parser does not
//! know is a syntax error, as pfctl would report it, so a wrong rule fails a
//! test instead of being trusted.
//!
//! - Enable references: bsd/net/pf_ioctl.c `DIOCSTARTREF` (`generate_token`,
//!   `pf_start` when pf was off, `pf_enabled_ref_count++`) and
//!   `DIOCSTOPREF` (`remove_token`; an unknown token is EINVAL, pf not
//!   running is ENOENT; `pf_stop` when the count reaches 0). Tokens live in
//!   a kernel list no process exit touches.
//! - pfctl: `-E` is `DIOCSTARTREF` and prints "pf enabled\nToken : %llu\n";
//!   `-X token` is `DIOCSTOPREF`; `-a anchor -f -` replaces the anchor's
//!   rules with those read from stdin; `-a anchor -F rules` flushes them.
//! - Evaluation: bsd/net/pf.c `pf_test_rule` walks the rules in order; the
//!   last matching rule decides, except that a matching `quick` rule ends
//!   the walk. macOS's stock /etc/pf.conf has no filter rules of its own
//!   beside `anchor "com.apple/*"`, so a packet no rule matches passes.
//! - `user`: pf.conf(5): applies only to TCP and UDP packets of sockets
//!   owned by that user.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use ipnet::IpNet;

// bsd/sys/errno.h
const ENOENT: i32 = 2;
const EINVAL: i32 = 22;

/// pfctl_parser.c `icmp6_type` names (RFC 4443, RFC 4861 numbers).
const ICMP6_TYPES: [(&str, u8); 6] = [
    ("echoreq", 128),
    ("echorep", 129),
    ("routersol", 133),
    ("routeradv", 134),
    ("neighbrsol", 135),
    ("neighbradv", 136),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    /// ICMPv6 of this type.
    Icmp6(u8),
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp6(_) => "icmp6",
        }
    }
}

/// An outbound packet, as pf sees it after routing chose its interface.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packet<'a> {
    pub(crate) out_on: &'a str,
    pub(crate) dst: IpAddr,
    pub(crate) proto: Proto,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    /// The uid owning the sending socket.
    pub(crate) uid: u32,
}

#[derive(Debug, Clone, Default)]
struct Rule {
    pass: bool,
    quick: bool,
    out: bool,
    on: Option<Vec<String>>,
    inet6: Option<bool>,
    proto: Option<Vec<String>>,
    from_port: Option<u16>,
    to: Option<Vec<IpNet>>,
    to_port: Option<u16>,
    icmp6_types: Option<Vec<u8>>,
    user: Option<u32>,
}

impl Rule {
    fn matches(&self, p: &Packet<'_>) -> bool {
        let ports = matches!(p.proto, Proto::Tcp | Proto::Udp);
        self.out
            && self
                .on
                .as_ref()
                .is_none_or(|on| on.iter().any(|i| i == p.out_on))
            && self.inet6.is_none_or(|v6| v6 == p.dst.is_ipv6())
            && self
                .proto
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|x| x == p.proto.name()))
            && self.from_port.is_none_or(|n| ports && n == p.src_port)
            && self.to_port.is_none_or(|n| ports && n == p.dst_port)
            && self
                .to
                .as_ref()
                .is_none_or(|nets| nets.iter().any(|n| n.contains(&p.dst)))
            && self
                .icmp6_types
                .as_ref()
                .is_none_or(|types| matches!(p.proto, Proto::Icmp6(t) if types.contains(&t)))
            && self.user.is_none_or(|uid| ports && uid == p.uid)
    }
}

/// Splits a rule line into words, with `{`, `}` and `,` words of their own.
fn words(line: &str) -> Vec<String> {
    line.replace('{', " { ")
        .replace('}', " } ")
        .replace(',', " , ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// One item or a `{ a, b }` list.
fn list(w: &mut std::iter::Peekable<std::vec::IntoIter<String>>) -> Option<Vec<String>> {
    let first = w.next()?;
    if first != "{" {
        return Some(vec![first]);
    }
    let mut items = Vec::new();
    loop {
        match w.next()?.as_str() {
            "}" => return Some(items),
            "," => {}
            item => items.push(item.to_owned()),
        }
    }
}

fn parse_rule(line: &str) -> Option<Rule> {
    let mut w = words(line).into_iter().peekable();
    let mut r = Rule::default();
    match w.next()?.as_str() {
        "pass" => r.pass = true,
        "block" => {
            if w.peek().is_some_and(|x| x == "drop" || x == "return") {
                w.next();
            }
        }
        _ => return None,
    }
    while let Some(word) = w.next() {
        match word.as_str() {
            "out" => r.out = true,
            "in" => r.out = false,
            "quick" => r.quick = true,
            "on" => r.on = Some(list(&mut w)?),
            "inet" => r.inet6 = Some(false),
            "inet6" => r.inet6 = Some(true),
            "proto" => r.proto = Some(list(&mut w)?),
            "all" => {}
            "from" => {
                if w.next()? != "any" {
                    return None;
                }
                if w.peek().is_some_and(|x| x == "port") {
                    w.next();
                    r.from_port = Some(w.next()?.parse().ok()?);
                }
            }
            "to" => {
                let to = list(&mut w)?;
                if to != ["any"] {
                    r.to = Some(
                        to.iter()
                            .map(|n| {
                                n.parse::<IpNet>()
                                    .ok()
                                    .or_else(|| n.parse::<IpAddr>().ok().map(IpNet::from))
                            })
                            .collect::<Option<_>>()?,
                    );
                }
                if w.peek().is_some_and(|x| x == "port") {
                    w.next();
                    r.to_port = Some(w.next()?.parse().ok()?);
                }
            }
            "icmp6-type" => {
                r.icmp6_types = Some(
                    list(&mut w)?
                        .iter()
                        .map(|n| ICMP6_TYPES.iter().find(|(t, _)| t == n).map(|(_, v)| *v))
                        .collect::<Option<_>>()?,
                );
            }
            "user" => {
                r.user = Some(match w.next()?.as_str() {
                    "root" => 0,
                    uid => uid.parse().ok()?,
                });
            }
            _ => return None,
        }
    }
    Some(r)
}

#[derive(Debug, Default)]
pub(crate) struct Pf {
    tokens: Vec<u64>,
    last_token: u64,
    refcount: u32,
    anchors: BTreeMap<String, Vec<Rule>>,
}

fn os(errno: i32, what: &str) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(errno).kind(),
        format!("pfctl: {what}: {}", io::Error::from_raw_os_error(errno)),
    )
}

impl Pf {
    pub(crate) fn running(&self) -> bool {
        self.refcount > 0
    }

    pub(crate) fn references(&self) -> usize {
        self.tokens.len()
    }

    /// The rule lines loaded into `anchor` (how many).
    pub(crate) fn rules_in(&self, anchor: &str) -> usize {
        self.anchors.get(anchor).map_or(0, Vec::len)
    }

    /// A reboot: no rules, no tokens, pf off.
    pub(crate) fn reboot(&mut self) {
        let last = self.last_token;
        *self = Self::default();
        self.last_token = last;
    }

    /// What pfctl does with `args` and `input`: its output, or its failure.
    pub(crate) fn pfctl(&mut self, args: &[&str], input: &str) -> io::Result<String> {
        match args {
            ["-a", anchor, "-f", "-"] => {
                let mut rules = Vec::new();
                for (i, line) in input.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    rules.push(parse_rule(line).ok_or_else(|| {
                        io::Error::other(format!("stdin:{}: syntax error: {line}", i + 1))
                    })?);
                }
                self.anchors.insert((*anchor).to_owned(), rules);
                Ok(String::new())
            }
            ["-a", anchor, "-F", "rules"] => {
                self.anchors.remove(*anchor);
                Ok("rules cleared\n".into())
            }
            ["-E"] => {
                self.last_token += 0x9e37_79b9;
                self.tokens.push(self.last_token);
                self.refcount += 1;
                Ok(format!(
                    "No ALTQ support in kernel\nALTQ related functions disabled\npf enabled\nToken : {}\n",
                    self.last_token
                ))
            }
            ["-X", token] => {
                if !self.running() {
                    return Err(os(ENOENT, "DIOCSTOPREF"));
                }
                let token: u64 = token.parse().map_err(|_| os(EINVAL, "DIOCSTOPREF"))?;
                let Some(at) = self.tokens.iter().position(|t| *t == token) else {
                    return Err(os(EINVAL, "DIOCSTOPREF"));
                };
                self.tokens.remove(at);
                self.refcount -= 1;
                Ok(if self.refcount == 0 {
                    "pf disabled\n".into()
                } else {
                    String::new()
                })
            }
            other => Err(io::Error::other(format!(
                "the model does not know pfctl {other:?}"
            ))),
        }
    }

    /// Whether `p` leaves: pf off, no match, or a pass decides.
    pub(crate) fn lets_out(&self, p: &Packet<'_>) -> bool {
        if !self.running() {
            return true;
        }
        let mut verdict = true;
        for rules in self
            .anchors
            .iter()
            .filter(|(name, _)| name.starts_with("com.apple/"))
            .map(|(_, r)| r)
        {
            for r in rules.iter().filter(|r| r.matches(p)) {
                verdict = r.pass;
                if r.quick {
                    return verdict;
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(out_on: &'static str, dst: &str) -> Packet<'static> {
        Packet {
            out_on,
            dst: dst.parse().unwrap(),
            proto: Proto::Udp,
            src_port: 50000,
            dst_port: 53,
            uid: 501,
        }
    }

    #[test]
    fn the_last_match_decides_unless_a_quick_rule_matched_first() {
        let mut pf = Pf::default();
        pf.pfctl(
            &["-a", "com.apple/t", "-f", "-"],
            "pass out on en0 all\nblock drop out all\npass out quick inet from any to 192.0.2.0/24\n",
        )
        .unwrap();
        pf.pfctl(&["-E"], "").unwrap();
        assert!(pf.lets_out(&udp("en0", "192.0.2.1")));
        assert!(
            !pf.lets_out(&udp("en0", "203.0.113.1")),
            "block is the last match"
        );
    }

    #[test]
    fn a_rule_the_grammar_does_not_know_is_a_syntax_error() {
        let mut pf = Pf::default();
        let err = pf
            .pfctl(
                &["-a", "com.apple/t", "-f", "-"],
                "pass out quick to everything\n",
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "stdin:1: syntax error: pass out quick to everything"
        );
    }

    #[test]
    fn pf_runs_while_a_reference_is_held_and_an_unknown_token_is_refused() {
        let mut pf = Pf::default();
        let printed = pf.pfctl(&["-E"], "").unwrap();
        let token = printed
            .lines()
            .last()
            .unwrap()
            .strip_prefix("Token : ")
            .unwrap();
        assert!(pf.running());
        assert!(pf.pfctl(&["-X", "1"], "").is_err());
        pf.pfctl(&["-X", token], "").unwrap();
        assert!(!pf.running());
        assert!(
            pf.pfctl(&["-X", token], "").is_err(),
            "ENOENT once pf is off"
        );
    }
}
