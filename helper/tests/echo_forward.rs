//! ICMP `forward` mode against a real host: the forwarder, pinned to its
//! interface, pings a peer in another namespace and maps each real reply
//! back to the tunnel-side request it answers.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::in_private_netns;
use tokio::time::timeout;
use ztun_helper::relay::echo::{EchoForwarder, EchoKey};
use ztun_tests::{run, Netns};

/// This namespace's `va` (`198.51.100.1`, `2001:db8::1`) is wired to `vb`
/// (`198.51.100.2`, `2001:db8::2`) in a second namespace.
fn wire_peer() -> Netns {
    let far = Netns::new("far").unwrap();
    run(
        "ip",
        &[
            "link",
            "add",
            "va",
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "netns",
            far.name(),
        ],
    )
    .unwrap();
    for (args, ns) in [
        (vec!["addr", "add", "198.51.100.1/24", "dev", "va"], None),
        (
            vec!["addr", "add", "2001:db8::1/64", "dev", "va", "nodad"],
            None,
        ),
        (vec!["link", "set", "va", "up"], None),
        (
            vec!["addr", "add", "198.51.100.2/24", "dev", "vb"],
            Some(&far),
        ),
        (
            vec!["addr", "add", "2001:db8::2/64", "dev", "vb", "nodad"],
            Some(&far),
        ),
        (vec!["link", "set", "vb", "up"], Some(&far)),
    ] {
        match ns {
            Some(ns) => ns.ip(&args).unwrap(),
            None => run("ip", &args).unwrap(),
        };
    }
    far
}

fn key(src: &str, dst: &str, ident: u16, seq: u16) -> EchoKey {
    EchoKey {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        ident,
        seq,
    }
}

fn pinned(interface: &'static str) -> impl Fn(&socket2::Socket) -> std::io::Result<()> {
    move |s| s.bind_device(Some(interface.as_bytes()))
}

#[test]
fn a_forwarded_ping_comes_back_as_the_clients_own_reply() {
    in_private_netns(|| async {
        let _far = wire_peer();
        let mut fwd = EchoForwarder::new(true, 0x5a7e, &pinned("va")).unwrap();
        let payload: Vec<u8> = (0..56).collect();
        // The seed capture's request: 198.18.0.1 -> 198.51.100.2, id 32065, seq 0.
        let request = key("198.18.0.1", "198.51.100.2", 32065, 0);
        fwd.send(request, &payload);
        let reply = timeout(Duration::from_secs(3), fwd.recv())
            .await
            .expect("a reply within 3 s")
            .unwrap();
        assert_eq!(reply.key, request);
        assert_eq!(reply.payload, payload);
        assert!(reply.rtt < Duration::from_secs(1), "rtt {:?}", reply.rtt);
        assert!(reply.rtt > Duration::ZERO);
    });
}

#[test]
fn two_clients_with_the_same_ident_and_seq_get_their_own_replies() {
    in_private_netns(|| async {
        let _far = wire_peer();
        let mut fwd = EchoForwarder::new(false, 0x5a7f, &pinned("va")).unwrap();
        let a = key("198.18.0.1", "198.51.100.2", 7, 1);
        let b = key("198.18.0.9", "198.51.100.2", 7, 1);
        fwd.send(a, b"from a");
        fwd.send(b, b"from b");
        let mut got = Vec::new();
        for _ in 0..2 {
            let r = timeout(Duration::from_secs(3), fwd.recv())
                .await
                .unwrap()
                .unwrap();
            got.push((r.key, r.payload));
        }
        got.sort_by_key(|(k, _)| k.src);
        assert_eq!(got, [(a, b"from a".to_vec()), (b, b"from b".to_vec())]);
    });
}

#[test]
fn ipv6_pings_are_forwarded_too() {
    in_private_netns(|| async {
        let _far = wire_peer();
        let mut fwd = EchoForwarder::new(true, 0x5a80, &pinned("va")).unwrap();
        let request = key("2001:db8:ff::1", "2001:db8::2", 1, 2);
        fwd.send(request, b"v6");
        let reply = timeout(Duration::from_secs(3), fwd.recv())
            .await
            .expect("a reply within 3 s")
            .unwrap();
        assert_eq!((reply.key, reply.payload.as_slice()), (request, &b"v6"[..]));
        assert!(matches!(reply.key.dst, IpAddr::V6(_)));
    });
}

#[test]
fn a_ping_to_nobody_gets_no_reply_and_an_ipv6_ping_without_ipv6_is_dropped() {
    in_private_netns(|| async {
        let _far = wire_peer();
        let mut fwd = EchoForwarder::new(false, 0x5a81, &pinned("va")).unwrap();
        fwd.send(key("198.18.0.1", "198.51.100.99", 1, 1), b"anyone?");
        assert!(
            timeout(Duration::from_millis(1500), fwd.recv())
                .await
                .is_err(),
            "no host, no reply"
        );
        fwd.send(key("2001:db8:ff::1", "2001:db8::2", 1, 1), b"v6");
        assert_eq!(fwd.dropped(), 1);
    });
}
