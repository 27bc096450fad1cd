//! The macOS platform — `MacosPlatform`, every decision it makes and every
//! byte it sends — running on Linux against the xnu model (tests/xnu):
//! the shared daemon scenarios, then what only the Mac has (the utun
//! pending-packet limit, KAME scopes, the kernel's own refusals).
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

mod scenarios;
mod xnu;

use std::collections::BTreeSet;

use ipnet::IpNet;
use scenarios::World;
use xnu::Xnu;
use ztun_helper::platform::macos::MacosPlatform;
use ztun_helper::platform::{DeviceConfig, Platform};

/// The model, and the directory the platform writes resolver files to
/// (`/etc/resolver` on a Mac).
struct Mac(Xnu, tempfile::TempDir);

impl Mac {
    fn new() -> Self {
        Mac(Xnu::new(), tempfile::tempdir().unwrap())
    }
}

impl World for Mac {
    type P = MacosPlatform<Xnu>;
    const NAME: &'static str = "the macOS platform over the xnu model";

    fn platform(&self) -> Self::P {
        MacosPlatform::with_resolver_dir(self.0.clone(), self.1.path().to_owned())
    }

    fn physical(&self) -> &'static str {
        "en0"
    }

    fn table(&self) -> BTreeSet<String> {
        self.0.table().into_iter().map(|r| r.0).collect()
    }

    fn links(&self) -> BTreeSet<String> {
        self.0.links().into_iter().collect()
    }

    fn other_deletes(&self, dst: IpNet) {
        self.0.other_deletes(dst).unwrap();
    }

    fn other_adds_via_router(&self, dst: IpNet) {
        self.0
            .other_adds_via(dst, xnu::ROUTER_V4.parse().unwrap())
            .unwrap();
    }

    fn move_default_v4(&self, router: &str) {
        self.0.move_default_v4(router);
    }

    fn lets_out(&self, dst: std::net::IpAddr) -> bool {
        self.0.lets_out(dst)
    }
}

#[test]
fn the_shared_daemon_scenarios_pass_on_the_macos_platform() {
    scenarios::run_all(|scenario| scenario(), Mac::new);
}

fn device(mtu: u16) -> DeviceConfig {
    DeviceConfig {
        name: None,
        address: "198.18.0.2/32".parse().unwrap(),
        peer: "198.18.0.1".parse().unwrap(),
        ipv6: None,
        mtu,
    }
}

#[test]
fn a_new_utun_takes_the_first_free_unit_and_drains_up_to_its_buffer() {
    let mac = Xnu::new();
    let p = MacosPlatform::new(mac.clone());
    let (utun, name) = p.create_device(&device(1500)).unwrap();
    // utun0 is the system's: the kernel hands out unit 2.
    assert_eq!(name, "utun1");
    // 512 KiB / (1500 + 4) = 348 packets, capped at 256.
    assert_eq!(mac.max_pending("utun1"), Some(256));
    let (jumbo, name) = p.create_device(&device(9000)).unwrap();
    assert_eq!(name, "utun2");
    // 512 KiB / (9000 + 4) = 58.
    assert_eq!(mac.max_pending("utun2"), Some(58));
    assert_eq!(
        mac.addresses("utun1"),
        [(
            "198.18.0.2/32".parse().unwrap(),
            Some("198.18.0.1".parse().unwrap())
        )]
    );
    // The peer's host route comes with the address and goes with the fd.
    assert!(mac.table().iter().any(|r| r.0 == "198.18.0.1/32 utun1"));
    drop((utun, jumbo));
    assert_eq!(mac.utuns(), ["utun0"]);
    assert!(!mac.table().iter().any(|r| r.0.contains("utun1")));
}

#[test]
fn the_ipv6_default_router_is_read_without_its_embedded_zone() {
    let mac = Xnu::new();
    let p = MacosPlatform::new(mac);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let physical = rt.block_on(p.physical_gateway()).unwrap().unwrap();
    assert_eq!(physical.interface, "en0");
    assert_eq!(physical.v4, Some("198.51.100.1".parse().unwrap()));
    // xnu holds it as fe80:4::1 (en0 is index 4); route(8) shows fe80::1%en0.
    assert_eq!(physical.v6, Some("fe80::1".parse().unwrap()));
}

#[test]
fn the_kernel_refuses_a_message_whose_length_or_version_is_wrong() {
    let mac = Xnu::new();
    let mut add = vec![0_u8; 92];
    add[0..2].copy_from_slice(&92_u16.to_le_bytes());
    add[2] = 5;
    add[3] = 1; // RTM_ADD, no sockaddrs at all
    assert_eq!(mac.other_process(&add), Err(22), "no DST: EINVAL");
    let mut short = add.clone();
    short[0] = 93;
    assert_eq!(mac.other_process(&short), Err(22), "msglen != write length");
    let mut old = add;
    old[2] = 4;
    assert_eq!(
        mac.other_process(&old),
        Err(43),
        "RTM_VERSION 4: EPROTONOSUPPORT"
    );
}

/// pf's enable reference is the helper's to give back: one held while a
/// kill switch is up, none after down. A reboot invalidates the saved
/// token; the next start takes a fresh one rather than trust it.
#[test]
fn the_kill_switch_holds_one_pf_reference_and_gives_it_back_even_after_a_reboot() {
    let mac = Mac::new();
    let dir = tempfile::tempdir().unwrap();
    let anchor = ztun_helper::killswitch::PF_ANCHOR;
    let inside: std::net::IpAddr = "203.0.113.5".parse().unwrap();
    let mut spec = scenarios::full_spec();
    spec.kill_switch = true;
    scenarios::incarnation(&mac, dir.path(), None, |d| async move {
        scenarios::up(&d, spec).await.unwrap();
    });
    assert_eq!(mac.0.pf_references(), (1, true));
    assert_eq!(mac.0.pf_rules_in(anchor), 9, "the anchor holds every rule");
    assert!(!mac.0.lets_out(inside), "the helper is gone, pf holds");

    mac.0.reboot_pf();
    assert!(
        mac.0.lets_out(inside),
        "after a reboot pf starts empty and off"
    );
    scenarios::incarnation(&mac, dir.path(), None, |d| async move {
        assert_eq!(scenarios::status(&d).await.0.len(), 1, "restored");
    });
    assert_eq!(
        mac.0.pf_references(),
        (1, true),
        "a fresh reference; the stale one was refused, not counted"
    );
    assert!(!mac.0.lets_out(inside), "held in again");

    scenarios::incarnation(&mac, dir.path(), None, |d| async move {
        scenarios::down_all(&d).await;
    });
    assert_eq!(
        mac.0.pf_references(),
        (0, false),
        "given back: pf is off again"
    );
    assert_eq!(mac.0.pf_rules_in(anchor), 0);
    assert!(mac.0.lets_out(inside));
}

/// Targeted fake DNS on a Mac: one resolver(5) file per route domain,
/// naming the tunnel's peer, exactly as written; gone after down; a file
/// someone else wrote is never touched; a crash's files are swept at the
/// next start and written again for the restored tunnel.
#[test]
fn route_domains_get_a_resolver_file_each_until_the_tunnel_goes() {
    let mac = Mac::new();
    let dir = tempfile::tempdir().unwrap();
    let resolver = mac.1.path().to_owned();
    std::fs::write(resolver.join("corp.example"), "nameserver 192.0.2.53\n").unwrap();
    let mut spec = ztun_proto::TunnelSpec::new("part".parse().unwrap());
    spec.upstream = closed_loopback_proxy();
    spec.dns = ztun_proto::DnsMode::Fake;
    spec.route_domains = vec!["example.com".into(), "example.net".into()];
    spec.icmp = ztun_proto::EchoPolicy::Reply;
    let read = |name: &str| std::fs::read_to_string(resolver.join(name)).ok();
    let interface = scenarios::incarnation(&mac, dir.path(), None, |d| async move {
        scenarios::up(&d, spec).await.unwrap().interface
    })
    .unwrap();
    let want = format!(
        "# ztun split DNS for {interface}: removed when the tunnel goes down\n\
         nameserver 198.18.0.2\nport 53\n"
    );
    // The incarnation ended as a crash would: the files stay behind.
    assert_eq!(read("example.com").as_deref(), Some(want.as_str()));
    assert_eq!(read("example.net").as_deref(), Some(want.as_str()));
    std::fs::write(
        resolver.join("example.org"),
        want.replace(&interface, "utun99"),
    )
    .unwrap();
    scenarios::incarnation(&mac, dir.path(), None, |d| async move {
        assert_eq!(scenarios::status(&d).await.0.len(), 1, "restored");
        scenarios::down_all(&d).await;
    });
    let mut left: Vec<String> = std::fs::read_dir(&resolver)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["corp.example"],
        "only the file that was never ztun's"
    );
    assert_eq!(
        read("corp.example").as_deref(),
        Some("nameserver 192.0.2.53\n")
    );
}

#[test]
fn a_resolver_file_that_is_not_ztuns_is_left_alone_and_reported() {
    let mac = Mac::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(mac.1.path().join("example.com"), "nameserver 192.0.2.53\n").unwrap();
    let mut spec = ztun_proto::TunnelSpec::new("part".parse().unwrap());
    spec.upstream = closed_loopback_proxy();
    spec.dns = ztun_proto::DnsMode::Fake;
    spec.route_domains = vec!["example.com".into()];
    spec.icmp = ztun_proto::EchoPolicy::Reply;
    let message = scenarios::incarnation(&mac, dir.path(), None, |d| async move {
        let mut events = ztun_helper::control::Handler::subscribe(&*d);
        scenarios::up(&d, spec).await.unwrap();
        loop {
            if let Ok(ztun_proto::Event::Error { message, .. }) = events.recv().await {
                break message;
            }
        }
    })
    .unwrap();
    assert_eq!(
        message,
        format!(
            "split DNS is not set up: {}/example.com exists and is not ztun's; move it away or leave example.com out; send the queries for example.com to 198.18.0.2 yourself",
            mac.1.path().display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(mac.1.path().join("example.com")).unwrap(),
        "nameserver 192.0.2.53\n"
    );
}

/// A SOCKS5 upstream on loopback that nothing answers: the tests' sockets
/// are real Linux sockets, and must not leave the machine.
fn closed_loopback_proxy() -> ztun_proto::Upstream {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("socks5://127.0.0.1:{port}").parse().unwrap()
}
