//! The kill switch (fail-closed), as firewall rules in text: an nftables
//! table on Linux, a pf anchor on macOS. Both are pure functions of
//! [`KillSwitch`], tested here against the exact text; the platforms load
//! them (`nft -f -`, `pfctl -a … -f -`) and nothing else.
//!
//! The rules live in the kernel, not in the helper: a helper killed with
//! SIGKILL leaves them in place, and with them everything it would have
//! tunnelled stays dropped instead of leaving through the physical link.
//! `down` or the helper's next start without a kill-switch tunnel removes
//! them. Outbound packets pass only when they
//! - leave through loopback or one of our tunnel interfaces,
//! - come from the helper's own relay sockets (Linux: the socket mark
//!   [`MARK`] every outbound socket of the helper carries; macOS: sockets
//!   owned by root, see [`KillSwitch::helper_sockets`]),
//! - go to an upstream proxy or an excluded prefix, or
//! - keep the link itself alive: DHCP, DHCP for IPv6 and IPv6 neighbour discovery
//!   (as Mullvad's kill switch allows).
//!
//! Everything else is refused in the output hook, the way the kernel
//! refuses a closed port: TCP gets a reset, anything else ICMP
//! "administratively prohibited". A dropped SYN would only be retried until
//! the program gives up; refused, it fails at once (and never reaches the
//! wire: the answer is made locally).

use std::fmt::Write as _;

use ipnet::IpNet;

/// The `SO_MARK` on every outbound socket of the helper (Linux), which the
/// nftables rules let out beside the tunnel. Outside the bits Tailscale
/// (`0xff0000`) and wg-quick (51820, `0xca6c`) use.
pub const MARK: u32 = 0x7a74;

/// The nftables table the helper owns (family `inet`: IPv4 and IPv6).
pub const NFT_TABLE: &str = "ztun_kill_switch";

/// The pf anchor the helper owns. macOS's stock `/etc/pf.conf` evaluates
/// `anchor "com.apple/*"`, so rules loaded below it take effect without
/// editing the system's ruleset.
pub const PF_ANCHOR: &str = "com.apple/ztun";

/// What may leave beside the tunnels while the kill switch holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KillSwitch {
    /// Our tunnel interfaces; traffic out of them is the tunnel.
    pub tunnels: Vec<String>,
    /// Destinations allowed beside the tunnels: every upstream proxy's
    /// address and every exclusion.
    pub allow: Vec<IpNet>,
    /// Some tunnel's relay opens sockets to any destination (direct
    /// upstream, forwarded pings). pf cannot match a socket's process, so on
    /// macOS these are let out as TCP and UDP sockets owned by root; Linux
    /// matches them exactly by [`MARK`] and ignores this.
    pub helper_sockets: bool,
}

impl KillSwitch {
    /// The allowed destinations with overlaps merged, IPv4 then IPv6: nft
    /// refuses overlapping intervals in one set, and a merged list reads
    /// better in both rule sets.
    fn allowed(&self) -> (Vec<IpNet>, Vec<IpNet>) {
        IpNet::aggregate(&self.allow)
            .into_iter()
            .partition(|n| n.addr().is_ipv4())
    }
}

fn list<T: std::fmt::Display>(items: &[T], quote: bool) -> String {
    let q = if quote { "\"" } else { "" };
    let inner: Vec<String> = items.iter().map(|i| format!("{q}{i}{q}")).collect();
    format!("{{ {} }}", inner.join(", "))
}

/// The `nft -f -` script that puts `rules` in place, replacing the table
/// before in one transaction, or (for `None`) removes the table. Declaring
/// the table first makes the delete valid when there is none, so both
/// scripts work whatever the kernel holds.
pub fn nft_script(rules: Option<&KillSwitch>) -> String {
    let mut s = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
    let Some(rules) = rules else {
        return s;
    };
    let (v4, v6) = rules.allowed();
    // `writeln!` into a String cannot fail.
    let _ = writeln!(s, "table inet {NFT_TABLE} {{");
    s.push_str("\tchain output {\n");
    s.push_str("\t\ttype filter hook output priority filter; policy drop;\n");
    s.push_str("\t\toifname \"lo\" accept\n");
    let _ = writeln!(s, "\t\tmeta mark {MARK:#x} accept");
    if !rules.tunnels.is_empty() {
        let _ = writeln!(s, "\t\toifname {} accept", list(&rules.tunnels, true));
    }
    if !v4.is_empty() {
        let _ = writeln!(s, "\t\tip daddr {} accept", list(&v4, false));
    }
    if !v6.is_empty() {
        let _ = writeln!(s, "\t\tip6 daddr {} accept", list(&v6, false));
    }
    s.push_str("\t\tudp sport 68 udp dport 67 accept\n");
    s.push_str("\t\tudp sport 546 udp dport 547 accept\n");
    s.push_str(
        "\t\ticmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept\n",
    );
    s.push_str(
        "\t\tmeta l4proto tcp counter reject with tcp reset comment \"outside the tunnel\"\n",
    );
    s.push_str(
        "\t\tcounter reject with icmpx type admin-prohibited comment \"outside the tunnel\"\n",
    );
    s.push_str("\t}\n}\n");
    s
}

/// The rules loaded into [`PF_ANCHOR`] (`pfctl -a com.apple/ztun -f -`).
/// Every rule is `quick`: the first match decides, whatever the main
/// ruleset says after the anchor (pf.conf(5)).
pub fn pf_rules(rules: &KillSwitch) -> String {
    let (v4, v6) = rules.allowed();
    let mut s = String::from("pass out quick on lo0 all\n");
    if !rules.tunnels.is_empty() {
        let _ = writeln!(s, "pass out quick on {} all", list(&rules.tunnels, false));
    }
    if !v4.is_empty() {
        let _ = writeln!(s, "pass out quick inet from any to {}", list(&v4, false));
    }
    if !v6.is_empty() {
        let _ = writeln!(s, "pass out quick inet6 from any to {}", list(&v6, false));
    }
    s.push_str("pass out quick inet proto udp from any port 68 to any port 67\n");
    s.push_str("pass out quick inet6 proto udp from any port 546 to any port 547\n");
    s.push_str(
        "pass out quick inet6 proto icmp6 all icmp6-type { routersol, neighbrsol, neighbradv }\n",
    );
    if rules.helper_sockets {
        s.push_str("pass out quick proto { tcp, udp } all user root\n");
    }
    s.push_str("block return out quick all\n");
    s
}

/// The enable reference `pfctl -E` took, from what it printed: it writes
/// `pf enabled` and `Token : <u64>` to stderr (pfctl's `pfctl_enable`, the
/// `DIOCSTARTREF` ioctl of xnu `bsd/net/pf_ioctl.c`). The token outlives
/// the process that took it (`generate_token` records it in a kernel list
/// that process exit does not touch), so it is kept in the helper's state
/// and released with `pfctl -X <token>`.
pub fn pf_token(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "Token").then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    fn rules() -> KillSwitch {
        KillSwitch {
            tunnels: vec!["ztun0".into(), "ztun1".into()],
            allow: vec![
                net("192.0.2.10/32"),
                net("203.0.113.0/24"),
                // Inside the exclusion above: merged away.
                net("203.0.113.7/32"),
                net("2001:db8:5::/48"),
            ],
            helper_sockets: true,
        }
    }

    #[test]
    fn the_nft_table_drops_what_leaves_beside_the_tunnels_and_lets_the_rest_out() {
        assert_eq!(
            nft_script(Some(&rules())),
            "table inet ztun_kill_switch\n\
             delete table inet ztun_kill_switch\n\
             table inet ztun_kill_switch {\n\
             \tchain output {\n\
             \t\ttype filter hook output priority filter; policy drop;\n\
             \t\toifname \"lo\" accept\n\
             \t\tmeta mark 0x7a74 accept\n\
             \t\toifname { \"ztun0\", \"ztun1\" } accept\n\
             \t\tip daddr { 192.0.2.10/32, 203.0.113.0/24 } accept\n\
             \t\tip6 daddr { 2001:db8:5::/48 } accept\n\
             \t\tudp sport 68 udp dport 67 accept\n\
             \t\tudp sport 546 udp dport 547 accept\n\
             \t\ticmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept\n\
             \t\tmeta l4proto tcp counter reject with tcp reset comment \"outside the tunnel\"\n\
             \t\tcounter reject with icmpx type admin-prohibited comment \"outside the tunnel\"\n\
             \t}\n\
             }\n"
        );
    }

    #[test]
    fn with_nothing_allowed_the_table_has_no_empty_sets() {
        let script = nft_script(Some(&KillSwitch::default()));
        assert!(!script.contains("{  }"), "{script}");
        assert!(!script.contains("daddr"), "{script}");
        assert!(script.contains("policy drop;"), "{script}");
    }

    #[test]
    fn clearing_declares_then_deletes_the_table_so_it_works_when_there_is_none() {
        assert_eq!(
            nft_script(None),
            "table inet ztun_kill_switch\ndelete table inet ztun_kill_switch\n"
        );
    }

    #[test]
    fn the_pf_anchor_passes_the_same_traffic_with_quick_rules_and_blocks_last() {
        assert_eq!(
            pf_rules(&rules()),
            "pass out quick on lo0 all\n\
             pass out quick on { ztun0, ztun1 } all\n\
             pass out quick inet from any to { 192.0.2.10/32, 203.0.113.0/24 }\n\
             pass out quick inet6 from any to { 2001:db8:5::/48 }\n\
             pass out quick inet proto udp from any port 68 to any port 67\n\
             pass out quick inet6 proto udp from any port 546 to any port 547\n\
             pass out quick inet6 proto icmp6 all icmp6-type { routersol, neighbrsol, neighbradv }\n\
             pass out quick proto { tcp, udp } all user root\n\
             block return out quick all\n"
        );
    }

    #[test]
    fn without_direct_relays_root_sockets_are_not_let_out_on_macos() {
        let proxied = KillSwitch {
            helper_sockets: false,
            ..rules()
        };
        assert!(!pf_rules(&proxied).contains("user root"));
    }

    #[test]
    fn the_pf_token_is_read_from_what_pfctl_e_prints() {
        // pfctl's format string is "pf enabled\nToken : %llu\n"; macOS's
        // pfctl prints its ALTQ notice before it.
        let printed = "No ALTQ support in kernel\nALTQ related functions disabled\n\
                       pf enabled\nToken : 14468212733612795391\n";
        assert_eq!(pf_token(printed), Some(14_468_212_733_612_795_391));
        assert_eq!(pf_token("pf enabled\n"), None);
        assert_eq!(pf_token("Token : many\n"), None);
    }
}
