//! The shared daemon scenarios (tests/scenarios) on the Linux platform and
//! the real kernel, each in its own network namespace with a veth
//! "physical" interface. Needs root; without it the test says so loudly
//! and runs nothing.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

mod scenarios;

use std::collections::BTreeSet;

use ipnet::IpNet;
use scenarios::{World, ROUTER_V4, ROUTER_V6};
use ztun_helper::platform::linux::LinuxPlatform;
use ztun_tests::run;

const PHYSICAL: &str = "phys0";

/// The calling thread's private network namespace (see `isolated`).
struct Linux;

impl Linux {
    /// The physical network: one end of a veth pair on 198.51.100.2/24 with
    /// both defaults, as DHCP and router advertisements would leave it.
    fn new() -> Self {
        for args in [
            &[
                "link",
                "add",
                PHYSICAL,
                "type",
                "veth",
                "peer",
                "name",
                "phys0-peer",
            ][..],
            &["link", "set", "phys0-peer", "up"],
            &["addr", "add", "198.51.100.2/24", "dev", PHYSICAL],
            &["link", "set", PHYSICAL, "up"],
            &["route", "add", "default", "via", ROUTER_V4, "dev", PHYSICAL],
            &[
                "-6", "route", "add", "default", "via", ROUTER_V6, "dev", PHYSICAL,
            ],
        ] {
            run("ip", args).unwrap();
        }
        Linux
    }
}

/// `ip -o route` lines as `dst/len dev [via gw]`, the form both worlds share.
fn rows(family: &str) -> Vec<String> {
    let out = run("ip", &[family, "-o", "route", "show", "table", "main"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| {
                words
                    .iter()
                    .position(|w| *w == key)
                    .and_then(|i| words.get(i + 1))
            };
            let dst = match (*words.first()?, family) {
                ("default", "-4") => "0.0.0.0/0".to_owned(),
                ("default", _) => "::/0".to_owned(),
                (d, _) if d.contains('/') => d.to_owned(),
                (d, "-4") => format!("{d}/32"),
                (d, _) => format!("{d}/128"),
            };
            let dev = after("dev")?;
            Some(match after("via") {
                Some(via) => format!("{dst} {dev} via {via}"),
                None => format!("{dst} {dev}"),
            })
        })
        .collect()
}

impl World for Linux {
    type P = LinuxPlatform;
    const NAME: &'static str = "the Linux platform";

    fn platform(&self) -> LinuxPlatform {
        LinuxPlatform::new().unwrap()
    }

    fn physical(&self) -> &'static str {
        PHYSICAL
    }

    fn table(&self) -> BTreeSet<String> {
        rows("-4").into_iter().chain(rows("-6")).collect()
    }

    fn links(&self) -> BTreeSet<String> {
        let out = run("ip", &["-o", "link"]).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
            .collect()
    }

    fn other_deletes(&self, dst: IpNet) {
        run("ip", &["route", "del", &dst.to_string()]).unwrap();
    }

    fn other_adds_via_router(&self, dst: IpNet) {
        run(
            "ip",
            &[
                "route",
                "add",
                &dst.to_string(),
                "via",
                ROUTER_V4,
                "dev",
                PHYSICAL,
            ],
        )
        .unwrap();
    }

    fn move_default_v4(&self, router: &str) {
        run(
            "ip",
            &[
                "route", "replace", "default", "via", router, "dev", PHYSICAL,
            ],
        )
        .unwrap();
    }

    /// One datagram from an unmarked socket of this (root) test process:
    /// the kill switch refuses it in the output hook with `EPERM`.
    fn lets_out(&self, dst: std::net::IpAddr) -> bool {
        let any: std::net::IpAddr = if dst.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = std::net::UdpSocket::bind((any, 0)).unwrap();
        match socket.send_to(b"kill switch?", (dst, 9)) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => false,
            Err(e) => panic!("sending to {dst}: {e}"),
        }
    }
}

/// Runs `scenario` on a fresh thread in a new network namespace
/// (`unshare(CLONE_NEWNET)` affects only that thread and what it starts),
/// and re-raises its panic.
fn isolated(scenario: Box<dyn FnOnce() + Send>) {
    let outcome = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership;
        // no other thread shares its network namespace state.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"]).unwrap();
        scenario();
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_shared_daemon_scenarios_pass_on_the_linux_platform() {
    if !ztun_tests::can_run("the shared daemon scenarios on Linux") {
        return;
    }
    scenarios::run_all(isolated, Linux::new);
}
