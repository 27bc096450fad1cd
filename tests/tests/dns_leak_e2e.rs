//! The on-link DNS leak (issue 11): a resolver on the local link
//! (198.51.100.53 on the client's /24) is more specific than full mode's
//! /1 halves, so without a host route of its own every DNS query would
//! leave beside the tunnel. The helper pins it into the tunnel.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use ztun_tests::servers::{self, Capture};
use ztun_tests::{can_run, NetnsResolvConf, Topology, BYPASS};

const RESOLVER: &str = "198.51.100.53";

#[test]
fn an_on_link_resolver_is_pinned_into_the_tunnel_in_full_mode() {
    if !can_run("an_on_link_resolver_is_pinned_into_the_tunnel_in_full_mode") {
        return;
    }
    let t = Topology::new("dnsleak").unwrap();
    // The resolver is on the client's link, as a home router would be.
    t.server
        .ip(&["addr", "add", &format!("{RESOLVER}/32"), "dev", "veth-s"])
        .unwrap();
    let _dns = servers::dns(&t.server, &[RESOLVER], &[("www.example.test", BYPASS)]).unwrap();
    let _conf = NetnsResolvConf::new(t.client.name(), &format!("nameserver {RESOLVER}\n"));
    let before = String::from_utf8_lossy(&t.client.ip(&["route", "get", RESOLVER]).unwrap().stdout)
        .into_owned();
    assert!(
        before.contains("dev veth-c"),
        "on-link without the tunnel: {before}"
    );

    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "all", "--full", "--icmp", "reply"])
        .unwrap();
    let after = String::from_utf8_lossy(&t.client.ip(&["route", "get", RESOLVER]).unwrap().stdout)
        .into_owned();
    assert!(
        after.contains("dev ztun0"),
        "pinned into the tunnel: {after}"
    );
    let status = t.ztunctl_ok(&["status", "all"]).unwrap();
    assert!(
        status.contains(&format!("  dns       {RESOLVER} via tunnel\n")),
        "{status}"
    );

    // A real lookup goes into the tunnel and is answered.
    let capture = Capture::start(&t.client, "ztun0", &t.dir.join("ztun0.pcap")).unwrap();
    let answer = servers::dig(&t.client, RESOLVER, "www.example.test", false).unwrap();
    assert_eq!(answer, [BYPASS.parse::<std::net::IpAddr>().unwrap()]);
    let seen = capture.stop().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("> {RESOLVER}.53:"))),
        "the query entered the tunnel: {seen:#?}"
    );

    // The pin is the tunnel's: down removes it with the rest.
    t.ztunctl_ok(&["down", "all"]).unwrap();
    let gone = String::from_utf8_lossy(&t.client.ip(&["route", "get", RESOLVER]).unwrap().stdout)
        .into_owned();
    assert!(gone.contains("dev veth-c"), "{gone}");
}
