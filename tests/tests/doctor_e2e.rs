//! `ztunctl doctor --live` end to end: the real helper tests its tunnels
//! (routes read back, a TCP connection and a ping through the tunnel, the
//! system resolver and where each resolver is routed, a fresh SOCKS5
//! handshake) against real servers in the server namespace: python's
//! http.server, dnsmasq and microsocks. Issue 11.
//!
//! The system resolver of the helper is the client namespace's: `ip netns
//! exec` bind-mounts `/etc/netns/NS/resolv.conf` over `/etc/resolv.conf`
//! for what it starts in NS (ip-netns(8)), so each test that resolves
//! writes that file for its own namespace before starting the helper, and
//! removes it afterwards. The root namespace's `/etc/resolv.conf` is never
//! touched.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::io;
use std::path::PathBuf;

use ztun_tests::servers;
use ztun_tests::{can_run, Netns, Process, Topology, SERVER};

const NAME: &str = "www.example.test";
/// The address dnsmasq answers for [`NAME`].
const NAME_ADDR: &str = "203.0.113.80";
/// The server namespace's side of the veth: the client's gateway, and where
/// the SOCKS server listens.
const GATEWAY: &str = "198.51.100.2";

/// `/etc/netns/NS/resolv.conf` naming one nameserver; removed on drop,
/// with its directory, and `/etc/netns` too when this made it and nothing
/// else is in it.
struct NetnsResolvConf {
    dir: PathBuf,
    made_parent: bool,
}

impl NetnsResolvConf {
    fn new(ns: &Netns, nameserver: &str) -> io::Result<Self> {
        let parent = PathBuf::from("/etc/netns");
        let made_parent = !parent.exists();
        let dir = parent.join(ns.name());
        std::fs::create_dir_all(&dir)?;
        let conf = Self { dir, made_parent };
        conf.set(nameserver)?;
        Ok(conf)
    }

    /// Rewrites the file in place: the same inode, so a process that has
    /// it bind-mounted already (the helper) reads the new nameserver.
    fn set(&self, nameserver: &str) -> io::Result<()> {
        std::fs::write(
            self.dir.join("resolv.conf"),
            format!("# written by ztun's doctor_e2e.rs\nnameserver {nameserver}\n"),
        )
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("resolv.conf"));
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
        if self.made_parent {
            // Fails, harmlessly, while another test's directory is in it.
            let _ = std::fs::remove_dir("/etc/netns");
        }
    }
}

/// python's http.server on `SERVER`:8080, serving the test's directory.
fn http_server(t: &Topology) -> Process {
    servers::http(&t.server, &t.dir, SERVER, 8080).unwrap()
}

/// Runs `ztunctl ARGS`; returns (exit code, stdout), and shows stdout so
/// the measured times are in the test log.
fn doctor(t: &Topology, args: &[&str]) -> (i32, String) {
    let out = t.ztunctl(args).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "$ ztunctl {}\n{text}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The output line that starts with `prefix`, and the line after it (the
/// fix of a ✗ line).
fn line_and_fix<'a>(out: &'a str, prefix: &str) -> (&'a str, &'a str) {
    let mut lines = out.lines();
    let Some(line) = lines.by_ref().find(|l| l.starts_with(prefix)) else {
        panic!("no line starting with {prefix:?} in:\n{out}")
    };
    (line, lines.next().unwrap_or_default())
}

/// The `(N ms)` a check line ends with; `<1 ms` is 0.
fn millis_of(line: &str) -> u64 {
    let (_, tail) = line.rsplit_once('(').unwrap();
    let n = tail.trim_end_matches(" ms)");
    if n == "<1" {
        0
    } else {
        n.parse().unwrap_or_else(|_| panic!("no time in {line:?}"))
    }
}

#[test]
fn doctor_live_times_each_check_through_a_direct_tunnel_and_finds_a_closed_port() {
    if !can_run("doctor_live_times_each_check_through_a_direct_tunnel_and_finds_a_closed_port") {
        return;
    }
    let t = Topology::new("doctor").unwrap();
    let _resolv = NetnsResolvConf::new(&t.client, SERVER).unwrap();
    let _dns = servers::dns(&t.server, &[SERVER], &[(NAME, NAME_ADDR)]).unwrap();
    let _http = http_server(&t);
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "d", "--route", "203.0.113.0/25"])
        .unwrap();

    let probe = format!("{SERVER}:8080");
    let (code, out) = doctor(
        &t,
        &[
            "doctor",
            "d",
            "--live",
            "--probe",
            &probe,
            "--dns-name",
            NAME,
        ],
    );
    assert_eq!(code, 0, "{out}");
    let live = out
        .split_once("live checks, run by the helper now:\n")
        .unwrap()
        .1;
    assert!(!live.contains('✗'), "{live}");
    for want in [
        format!("✓ dns: {NAME} resolved to {NAME_ADDR} by the system resolver ("),
        "✓ d: route: 203.0.113.0/25 -> ztun0 (".to_owned(),
        "✓ d: upstream: direct: flows leave from the helper's own sockets".to_owned(),
        format!("✓ d: tcp: {probe} answered through ztun0 (it closed when we did; the tunnel accepted in "),
        format!("✓ d: icmp: echo from {SERVER} through ztun0 in "),
        format!("✓ d: dns: resolver {SERVER} is routed through ztun0 ("),
    ] {
        assert!(live.lines().any(|l| l.starts_with(&want)), "{want}\n{live}");
    }
    let (tcp, _) = line_and_fix(live, "✓ d: tcp:");
    assert!(millis_of(tcp) < 3000, "{tcp}");

    // Nothing listens on port 9: the tunnel takes the connection, the
    // server refuses it, and the line says so with a fix.
    let closed = format!("{SERVER}:9");
    let (code, out) = doctor(&t, &["doctor", "d", "--live", "--probe", &closed]);
    assert_eq!(code, 1, "{out}");
    let (tcp, fix) = line_and_fix(&out, "✗ d: tcp:");
    assert!(tcp.contains(&format!("{closed}: refused ")), "{tcp}");
    assert!(
        fix.starts_with(&format!("    fix: nothing listens on {closed}")),
        "{fix}"
    );
    line_and_fix(&out, &format!("✓ d: icmp: echo from {SERVER}"));

    // Outside the tunnel's routes, the probe is not even tried.
    let (code, out) = doctor(&t, &["doctor", "--live", "--probe", "203.0.113.200:8080"]);
    assert_eq!(code, 1, "{out}");
    let (tcp, fix) = line_and_fix(&out, "✗ d: tcp:");
    assert!(
        tcp.contains("203.0.113.200:8080 does not enter ztun0: the kernel sends it via veth-c (gateway 198.51.100.2); not connected"),
        "{tcp}"
    );
    assert!(fix.contains("ztunctl route add d 203.0.113.200"), "{fix}");

    // --json: the reply dictionary, with the checks.
    let out = t
        .ztunctl(&["doctor", "--live", "--probe", &probe, "--json"])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = json["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["route", "upstream", "tcp", "icmp"], "{json}");
    for c in checks {
        assert_eq!(c["ok"], 1, "{c}");
        assert_eq!(c["tunnel"], "d", "{c}");
        assert!(c["millis"].as_u64().is_some(), "{c}");
        assert!(c.get("fix").is_none(), "{c}");
    }
}

#[test]
fn doctor_live_finds_a_resolver_that_bypasses_a_full_tunnel() {
    if !can_run("doctor_live_finds_a_resolver_that_bypasses_a_full_tunnel") {
        return;
    }
    let t = Topology::new("leak").unwrap();
    // The gateway is also the resolver, as home routers are: on the /24 of
    // the physical interface, more specific than the tunnel's /1 halves.
    let _resolv = NetnsResolvConf::new(&t.client, GATEWAY).unwrap();
    let _dns = servers::dns(&t.server, &[GATEWAY], &[(NAME, NAME_ADDR)]).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "all", "--full"]).unwrap();

    // `up` pinned the on-link resolver into the tunnel with a host route.
    let pinned = format!("✓ all: {GATEWAY}/32 -> ztun0");
    let (code, out) = doctor(&t, &["doctor", "all", "--live", "--dns-name", NAME]);
    assert_eq!(code, 0, "{out}");
    line_and_fix(&out, &pinned);
    line_and_fix(
        &out,
        &format!("✓ all: dns: resolver {GATEWAY} is routed through ztun0"),
    );
    line_and_fix(&out, &format!("✓ dns: {NAME} resolved to {NAME_ADDR}"));

    // Someone removes the pin: every lookup now leaks past the tunnel, and
    // both the route line and the dns line say so, with the fix.
    t.client
        .ip(&["route", "del", &format!("{GATEWAY}/32"), "dev", "ztun0"])
        .unwrap();
    let (code, out) = doctor(&t, &["doctor", "all", "--live", "--dns-name", NAME]);
    assert_eq!(code, 1, "{out}");
    line_and_fix(&out, &format!("✓ dns: {NAME} resolved to {NAME_ADDR}"));
    let (leak, fix) = line_and_fix(&out, "✗ all: dns:");
    assert!(
        leak.contains(&format!(
            "resolver {GATEWAY} is reached via veth-c, outside the tunnel: every lookup leaks past it"
        )),
        "{leak}"
    );
    assert!(
        fix.starts_with(&format!(
            "    fix: exclude it or fix the route (DNS leak): ztunctl route add all {GATEWAY}"
        )),
        "{fix}"
    );

    // The fix the line gives puts the pin back: lookups go through the
    // tunnel again (and the name still resolves, relayed by the helper).
    t.ztunctl_ok(&["route", "add", "all", GATEWAY]).unwrap();
    let (code, out) = doctor(&t, &["doctor", "all", "--live", "--dns-name", NAME]);
    assert_eq!(code, 0, "{out}");
    line_and_fix(&out, &pinned);
    line_and_fix(
        &out,
        &format!("✓ all: dns: resolver {GATEWAY} is routed through ztun0"),
    );
    line_and_fix(&out, &format!("✓ dns: {NAME} resolved to {NAME_ADDR}"));
}

#[test]
fn doctor_live_names_why_a_socks5_upstream_is_down_and_sees_it_come_back() {
    if !can_run("doctor_live_names_why_a_socks5_upstream_is_down_and_sees_it_come_back") {
        return;
    }
    let t = Topology::new("docsocks").unwrap();
    let _http = http_server(&t);
    let _helper = t.start_helper().unwrap();
    let upstream = format!("socks5://{GATEWAY}:1080");
    t.ztunctl_ok(&[
        "up",
        "--name",
        "s",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        &upstream,
        "--icmp",
        "reply",
    ])
    .unwrap();
    let probe = format!("{SERVER}:8080");

    // No SOCKS server yet.
    let (code, out) = doctor(&t, &["doctor", "--live", "--probe", &probe]);
    assert_eq!(code, 1, "{out}");
    let (down, fix) = line_and_fix(&out, "✗ s: upstream:");
    assert!(
        down.contains(&format!("{upstream} unreachable: Connection refused")),
        "{down}"
    );
    assert!(fix.starts_with("    fix: start the SOCKS5 server"), "{fix}");
    let (_, fix) = line_and_fix(&out, "✗ s: tcp:");
    assert!(fix.starts_with("    fix: fix the upstream first"), "{fix}");
    // reply mode: the helper answers the echo itself, in a fraction of a ms.
    let (echo, _) = line_and_fix(
        &out,
        "✓ s: icmp: echo to 203.0.113.5 answered by the helper in ",
    );
    assert!(millis_of(echo) < 5, "{echo}");

    // The server comes up. doctor's own handshake is what tells the
    // helper it is back (its retries may not have yet), and the probe's
    // connection, which waits for that handshake, goes through it.
    let _socks = servers::microsocks(&t.server, GATEWAY, 1080, None).unwrap();
    let out = t
        .ztunctl(&["doctor", "s", "--live", "--probe", &probe, "--json"])
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{json:#}");
    assert!(out.status.success(), "{json}");
    let (code, out) = doctor(&t, &["doctor", "s", "--live", "--probe", &probe]);
    assert_eq!(code, 0, "{out}");
    line_and_fix(
        &out,
        &format!("✓ s: upstream: {upstream} completed the SOCKS5 handshake ("),
    );
    line_and_fix(&out, &format!("✓ s: tcp: {probe} answered through ztun0"));
}
