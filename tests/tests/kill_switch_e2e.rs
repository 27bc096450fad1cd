//! The kill switch (issue 19, part 2): a full tunnel with `--kill-switch`
//! fails closed. Killed with SIGKILL, the helper takes its tunnel device
//! with it and the kernel would route everything out through the physical
//! link; the nftables table it left keeps every packet in, which tcpdump on
//! the client's veth shows, until the next start rebuilds it and `down`
//! removes it.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::time::{Duration, Instant};

use ztun_tests::servers::{self, Capture, LINK_CHATTER};
use ztun_tests::{can_run, Topology, BYPASS, CLIENT_PHYSICAL, SERVER};

const SERVER6: &str = "2001:db8:5::5";

/// `curl` of `http://addr:8080/` from the client within 2 s: whether it
/// answered, and how long it took to find out.
fn fetch(t: &Topology, addr: &str) -> (bool, Duration) {
    let started = Instant::now();
    let out = t
        .client
        .exec_unchecked(
            "curl",
            &[
                "-s",
                "--max-time",
                "2",
                "-o",
                "/dev/null",
                &format!("http://{addr}:8080/"),
            ],
        )
        .unwrap();
    (out.status.success(), started.elapsed())
}

/// The client namespace's nftables ruleset, as `nft list ruleset` prints it.
fn ruleset(t: &Topology) -> String {
    String::from_utf8_lossy(&t.client.exec("nft", &["list", "ruleset"]).unwrap().stdout)
        .into_owned()
}

fn route_to(t: &Topology, dst: &str) -> String {
    String::from_utf8_lossy(&t.client.ip(&["route", "get", dst]).unwrap().stdout).into_owned()
}

#[test]
fn after_sigkill_nothing_leaves_the_physical_link_until_down_but_the_exclusion() {
    if !can_run("after_sigkill_nothing_leaves_the_physical_link_until_down_but_the_exclusion") {
        return;
    }
    let t = Topology::new("killswitch").unwrap();
    let _http = servers::http(&t.server, &t.dir, SERVER, 8080).unwrap();
    let _http_bypass = servers::http(&t.server, &t.dir, BYPASS, 8080).unwrap();
    let mut helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "all",
        "--full",
        "--kill-switch",
        "--exclude",
        &format!("{BYPASS}/32"),
        "--icmp",
        "reply",
    ])
    .unwrap();
    let status = t.ztunctl_ok(&["status", "all"]).unwrap();
    assert!(
        status.contains(
            "  firewall  kill switch: only the tunnel, the upstream and exclusions get out\n"
        ),
        "{status}"
    );
    let rules = ruleset(&t);
    assert!(rules.contains("table inet ztun_kill_switch"), "{rules}");
    assert!(rules.contains("oifname \"ztun0\" accept"), "{rules}");
    assert!(
        rules.contains(&format!("ip daddr {BYPASS} accept")),
        "{rules}"
    );
    // Direct mode: the helper's own relay sockets carry the flows out.
    assert!(
        fetch(&t, SERVER).0,
        "through the tunnel with the kill switch on"
    );
    assert!(fetch(&t, BYPASS).0, "the exclusion, beside the tunnel");

    helper.signal(libc::SIGKILL).unwrap();
    helper
        .wait_for_exit(Duration::from_secs(5))
        .unwrap()
        .expect("helper died");
    // The device died with the helper, and with it every route through it:
    // left to the routing table, everything would now leave on the veth.
    assert!(
        route_to(&t, SERVER).contains("dev veth-c"),
        "{}",
        route_to(&t, SERVER)
    );
    assert!(
        ruleset(&t).contains("table inet ztun_kill_switch"),
        "the table outlived the helper"
    );

    let capture = Capture::start(&t.client, "veth-c", &t.dir.join("veth-c.pcap")).unwrap();
    let (answered, took) = fetch(&t, SERVER);
    eprintln!("a fetch outside the tunnel was refused after {took:?}");
    assert!(!answered, "{SERVER} must not be reached outside the tunnel");
    assert!(
        took < Duration::from_millis(1500),
        "refused at once (a local reset), not left to time out: {took:?}"
    );
    let ping = t
        .client
        .exec_unchecked("ping", &["-c", "1", "-W", "1", SERVER])
        .unwrap();
    assert!(!ping.status.success(), "pings are held in");
    let ping6 = t
        .client
        .exec_unchecked("ping", &["-6", "-c", "1", "-W", "1", SERVER6])
        .unwrap();
    assert!(!ping6.status.success(), "IPv6 is held in too");
    let udp = t
        .client
        .exec_unchecked(
            "python3",
            &[
                "-c",
                &format!("import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{SERVER}', 53))"),
            ],
        )
        .unwrap();
    assert!(!udp.status.success(), "a UDP send is refused too");
    assert!(fetch(&t, BYPASS).0, "the exclusion still gets out");
    let pcap = capture.path().to_owned();
    let seen = capture.stop().unwrap();
    let leaked = servers::read_pcap(
        &pcap,
        &format!("not host {BYPASS} and not ({LINK_CHATTER})"),
    )
    .unwrap();
    assert!(
        leaked.is_empty(),
        "nothing but the exclusion left the physical link: {leaked:#?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("> {BYPASS}.8080:"))),
        "the capture saw the exclusion's traffic, so it was listening: {seen:#?}"
    );

    // The next start brings the tunnel back under the same rules, then
    // down lets everything go.
    let _helper = t.start_helper().unwrap();
    assert!(t
        .ztunctl_ok(&["status"])
        .unwrap()
        .starts_with("all  up  ztun0"));
    assert!(fetch(&t, SERVER).0, "through the restored tunnel");
    assert!(ruleset(&t).contains("oifname \"ztun0\" accept"));
    t.ztunctl_ok(&["down", "all"]).unwrap();
    let rules = ruleset(&t);
    assert!(
        !rules.contains("ztun_kill_switch"),
        "down removed the table: {rules}"
    );
    assert!(route_to(&t, SERVER).contains("dev veth-c"));
    assert!(
        fetch(&t, SERVER).0,
        "without the tunnel and its kill switch, straight out"
    );
    let log = std::fs::read_to_string(t.dir.join("http.log")).unwrap_or_default();
    assert!(
        log.contains(CLIENT_PHYSICAL),
        "the last fetch came from the client's own address: {log}"
    );
}
