//! The Linux platform against the real kernel, in a private network
//! namespace: the test thread calls `unshare(CLONE_NEWNET)`, so every device
//! and route here lives and dies with that thread and the root namespace is
//! never touched. Needs root; without it the test says so loudly and passes
//! nothing off as tested.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

mod common;

use std::net::IpAddr;

use common::in_private_netns;

use ztun_helper::platform::linux::LinuxPlatform;
use ztun_helper::platform::{DeviceConfig, KernelRoute, Platform};
use ztun_helper::routes::{self, PhysicalGateway, RouteEntry, RouteLedger, RouteTarget};

fn device(name: &str, address: &str, peer: &str, ipv6: Option<&str>) -> DeviceConfig {
    DeviceConfig {
        name: Some(name.into()),
        address: address.parse().unwrap(),
        peer: peer.parse().unwrap(),
        ipv6: ipv6.map(|v| v.parse().unwrap()),
        mtu: 9000,
    }
}

fn tunnel(dst: &str) -> RouteEntry {
    RouteEntry {
        tunnel: "work".parse().unwrap(),
        dst: dst.parse().unwrap(),
        target: RouteTarget::Tunnel {
            interface: "ztun-t0".into(),
        },
    }
}

/// A default route in the private namespace, as DHCP would install it.
async fn add_default_route(via: &str, interface_index: u32) {
    let (conn, handle, _) = rtnetlink::new_connection().unwrap();
    tokio::spawn(conn);
    let gw: IpAddr = via.parse().unwrap();
    let msg = rtnetlink::RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix("0.0.0.0".parse().unwrap(), 0)
        .unwrap()
        .gateway(gw)
        .unwrap()
        .output_interface(interface_index)
        .build();
    handle.route().add(msg).execute().await.unwrap();
}

#[test]
fn routes_install_read_back_and_come_out_again() {
    in_private_netns(|| async {
        let p = LinuxPlatform::new().unwrap();
        assert_eq!(
            p.physical_gateway().await.unwrap(),
            None,
            "a fresh namespace has no default route"
        );

        let (_tun, name) = p
            .create_device(&device(
                "ztun-t0",
                "198.18.0.1/32",
                "198.18.0.2",
                Some("2001:db8:ff::1/64"),
            ))
            .unwrap();
        assert_eq!(name, "ztun-t0");
        let (phys, phys_name) = p
            .create_device(&device("phys0", "192.0.2.2/24", "192.0.2.1", None))
            .unwrap();
        add_default_route("192.0.2.1", phys.if_index().unwrap()).await;
        let physical = p.physical_gateway().await.unwrap().unwrap();
        assert_eq!(
            physical,
            PhysicalGateway {
                interface: phys_name.clone(),
                v4: Some("192.0.2.1".parse().unwrap()),
                v6: None
            }
        );

        let exclusion = RouteEntry {
            target: RouteTarget::Gateway {
                via: "192.0.2.1".parse().unwrap(),
                interface: phys_name.clone(),
            },
            ..tunnel("198.51.100.0/24")
        };
        let wanted = vec![
            exclusion.clone(),
            tunnel("203.0.113.0/24"),
            tunnel("2001:db8:1::/48"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = RouteLedger::open(dir.path()).unwrap();
        let installed = routes::install(&p, &mut ledger, &wanted).await.unwrap();
        let shown: Vec<String> = installed
            .iter()
            .map(|r| format!("{} {} {:?}", r.route, r.interface, r.gateway))
            .collect();
        assert_eq!(
            shown,
            [
                "198.51.100.0/24 phys0 Some(192.0.2.1)",
                "203.0.113.0/24 ztun-t0 None",
                "2001:db8:1::/48 ztun-t0 None",
            ]
        );
        assert_eq!(
            p.lookup_route("203.0.113.0/24".parse().unwrap())
                .await
                .unwrap(),
            Some(KernelRoute {
                interface: "ztun-t0".into(),
                gateway: None
            })
        );

        // Installing again is idempotent (EEXIST is read back, not failed).
        p.add_route(&tunnel("203.0.113.0/24")).await.unwrap();

        routes::remove(&p, &mut ledger, &wanted).await.unwrap();
        assert!(ledger.entries().is_empty());
        for r in &wanted {
            assert_eq!(
                p.lookup_route(r.dst).await.unwrap(),
                None,
                "{} still installed",
                r.dst
            );
            assert!(
                !p.delete_route(r).await.unwrap(),
                "second delete of {} reports it gone",
                r.dst
            );
        }
    });
}

#[test]
fn outbound_sockets_are_pinned_to_the_physical_interface() {
    in_private_netns(|| async {
        let p = LinuxPlatform::new().unwrap();
        let (_phys, phys_name) = p
            .create_device(&device("phys1", "192.0.2.2/24", "192.0.2.1", None))
            .unwrap();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        p.bind_to_interface(&socket, &phys_name).unwrap();
        assert_eq!(
            socket.device().unwrap().as_deref(),
            Some(phys_name.as_bytes())
        );
    });
}

#[test]
fn deleting_through_a_vanished_interface_reports_the_route_gone() {
    in_private_netns(|| async {
        let p = LinuxPlatform::new().unwrap();
        let r = RouteEntry {
            target: RouteTarget::Tunnel {
                interface: "ztun-gone".into(),
            },
            ..tunnel("203.0.113.0/24")
        };
        assert!(!p.delete_route(&r).await.unwrap());
    });
}
