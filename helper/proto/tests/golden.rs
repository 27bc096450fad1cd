//! Golden fixtures: `tests/fixtures/xpc/*.plist` pin the exact dictionaries a
//! Swift menu-bar app sends and receives over XPC (and the Unix socket
//! carries as binary plists). Each fixture must decode into the typed message
//! below and encode back to the same dictionary, key for key.
//!
//! After an intended schema change, regenerate with
//! `ZTUN_BLESS=1 cargo test -p ztun-proto --test golden` and review the diff.

#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::collections::BTreeMap;
use std::path::PathBuf;

use ztun_proto::plist::Value;
use ztun_proto::{
    Counters, DnsMode, DoctorCheck, DownTarget, EchoPolicy, ErrorCode, ErrorReply, Event, Flow,
    FlowProtocol, InstalledRoute, InterfaceAddress, NetworkCause, Op, Reply, Request,
    ResolverRoute, Response, RouteChange, TunnelSpec, TunnelState, TunnelStatus, UpstreamHealth,
};

enum Message {
    Request(Request),
    Response(Op, Response),
    Event(Event),
}

impl Message {
    fn to_value(&self) -> Value {
        match self {
            Message::Request(r) => r.to_value(),
            Message::Response(_, r) => r.to_value(),
            Message::Event(e) => e.to_value(),
        }
    }

    fn assert_decodes_to_self(&self, value: &Value, file: &str) {
        match self {
            Message::Request(r) => assert_eq!(&Request::from_value(value).unwrap(), r, "{file}"),
            Message::Response(op, r) => {
                assert_eq!(&Response::from_value(*op, value).unwrap(), r, "{file}");
            }
            Message::Event(e) => assert_eq!(&Event::from_value(value).unwrap(), e, "{file}"),
        }
    }
}

fn target_only_spec() -> TunnelSpec {
    let mut spec = TunnelSpec::new("work".parse().unwrap());
    spec.ipv6 = Some("2001:db8:ff::1/64".parse().unwrap());
    spec.routes = ["203.0.113.0/24", "198.51.100.7/32", "2001:db8:1::/48"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    spec.upstream = "socks5://alice:s3cret@192.0.2.10:1080".parse().unwrap();
    spec.failover = vec!["http://bob:pa55@192.0.2.11:3128".parse().unwrap()];
    spec.dns_over_tcp = true;
    spec.dns = DnsMode::Fake;
    spec.route_domains = vec!["example.com".into()];
    spec.fake_pool6 = Some("2001:db8:fa::/64".parse().unwrap());
    spec
}

fn full_spec() -> TunnelSpec {
    let mut spec = TunnelSpec::new("all".parse().unwrap());
    spec.full = true;
    spec.exclude = vec!["192.0.2.0/24".parse().unwrap()];
    spec.kill_switch = true;
    spec.icmp = EchoPolicy::Reply;
    spec.mtu = 1500;
    spec.transient = true;
    spec
}

fn status() -> TunnelStatus {
    let spec = target_only_spec().redacted();
    let route = |r: &str| InstalledRoute {
        route: r.parse().unwrap(),
        interface: "utun4".into(),
        gateway: None,
    };
    TunnelStatus {
        spec,
        interface: "utun4".into(),
        state: TunnelState::Up,
        routes: vec![
            route("203.0.113.0/24"),
            route("198.51.100.7/32"),
            route("2001:db8:1::/48"),
        ],
        addresses: vec![
            InterfaceAddress {
                address: "198.18.0.1/32".parse().unwrap(),
                peer: Some("198.18.0.2".parse().unwrap()),
            },
            InterfaceAddress {
                address: "2001:db8:ff::1/64".parse().unwrap(),
                peer: None,
            },
        ],
        counters: Counters {
            packets_in: 1200,
            packets_out: 1180,
            bytes_in: 181_000,
            bytes_out: 1_572_864,
            flows_open: 3,
            flows_total: 41,
            rate_in: 2_400,
            rate_out: 131_072,
            drops: BTreeMap::from([("bad_checksum".into(), 2), ("not_routed".into(), 5)]),
        },
        resolvers: vec![ResolverRoute {
            address: "192.0.2.53".parse().unwrap(),
            through_tunnel: false,
        }],
        physical: Some("en0".into()),
        physical_gateway: Some("198.51.100.1".parse().unwrap()),
        upstream_health: Some(UpstreamHealth {
            reachable: true,
            last_error: Some("192.0.2.10:1080: connection refused".into()),
            reconnects: 1,
            flows_to_upstream: 0,
            refused: BTreeMap::from([
                ("connection_refused".into(), 4),
                ("upstream_down".into(), 2),
            ]),
        }),
        failover_health: vec![UpstreamHealth {
            reachable: true,
            last_error: None,
            reconnects: 0,
            flows_to_upstream: 0,
            refused: BTreeMap::from([("udp_not_supported".into(), 3)]),
        }],
        active_upstream: Some("socks5://alice:***@192.0.2.10:1080".into()),
        since: 1_795_000_000,
    }
}

fn exclusion_route() -> InstalledRoute {
    InstalledRoute {
        route: "192.0.2.0/24".parse().unwrap(),
        interface: "en0".into(),
        gateway: Some("198.51.100.1".parse().unwrap()),
    }
}

/// A `doctor --live` reply as a tunnel with a SOCKS5 upstream that is down
/// would get it: passing lines, a failing one with its fix, and a check of
/// the whole machine (no `tunnel`).
fn doctor_checks() -> Vec<DoctorCheck> {
    let line =
        |tunnel: Option<&str>, check: &str, ok: bool, detail: &str, millis, fix: Option<&str>| {
            DoctorCheck {
                tunnel: tunnel.map(|t| t.parse().unwrap()),
                check: check.into(),
                ok,
                detail: detail.into(),
                millis,
                fix: fix.map(Into::into),
            }
        };
    vec![
        line(
            None,
            "dns",
            true,
            "www.example.test resolved to 203.0.113.80 by the system resolver",
            4,
            None,
        ),
        line(
            None,
            "dns",
            true,
            "the resolvers' routes are not checked on macOS yet; scutil --dns lists them",
            0,
            None,
        ),
        line(Some("work"), "route", true, "203.0.113.0/24 -> utun4", 0, None),
        line(
            Some("work"),
            "upstream",
            false,
            "socks5://alice:***@192.0.2.10:1080 unreachable: Connection refused (os error 61)",
            1,
            Some("start the SOCKS5 server, or fix the URL (ztunctl down work, then up with --upstream socks5://user:pass@host:port); the helper retries by itself"),
        ),
        line(
            Some("work"),
            "tcp",
            true,
            "203.0.113.5:443 answered through utun4 (it closed when we did; the tunnel accepted in 0.21 ms)",
            12,
            None,
        ),
        line(
            Some("work"),
            "icmp",
            true,
            "echo from 203.0.113.5 through utun4 in 11.8 ms (icmp forward: a real ping from the physical interface)",
            11,
            None,
        ),
    ]
}

fn cases() -> Vec<(&'static str, Message)> {
    let name = || "work".parse().unwrap();
    let routes = || vec!["192.0.2.128/25".parse().unwrap()];
    vec![
        ("request-version", Message::Request(Request::Version)),
        (
            "request-up",
            Message::Request(Request::Up(target_only_spec())),
        ),
        (
            "request-up-full",
            Message::Request(Request::Up(full_spec())),
        ),
        (
            "request-down",
            Message::Request(Request::Down(DownTarget::Name(name()))),
        ),
        (
            "request-down-all",
            Message::Request(Request::Down(DownTarget::All)),
        ),
        ("request-status", Message::Request(Request::Status(None))),
        (
            "request-status-name",
            Message::Request(Request::Status(Some(name()))),
        ),
        (
            "request-route-add",
            Message::Request(Request::RouteAdd {
                name: name(),
                routes: routes(),
            }),
        ),
        (
            "request-route-remove",
            Message::Request(Request::RouteRemove {
                name: name(),
                routes: routes(),
            }),
        ),
        (
            "request-watch",
            Message::Request(Request::Watch(Some(name()))),
        ),
        (
            "request-doctor",
            Message::Request(Request::Doctor {
                name: Some(name()),
                probe: Some("203.0.113.5:443".parse().unwrap()),
                dns_name: Some("www.example.test".into()),
            }),
        ),
        ("request-flows", Message::Request(Request::Flows(None))),
        (
            "reply-flows",
            Message::Response(
                Op::Flows,
                Response::Ok(Reply::Flows {
                    flows: vec![
                        Flow {
                            tunnel: name(),
                            protocol: FlowProtocol::Tcp,
                            source: "198.18.0.1:50312".parse().unwrap(),
                            // A fake DNS address, and the name it stands for.
                            destination: "198.18.0.3:443".parse().unwrap(),
                            host: Some("www.example.com".into()),
                            upstream: "socks5://alice:***@192.0.2.10:1080".into(),
                            bytes_up: 1_200,
                            bytes_down: 10_485_760,
                            age_millis: 3_723_000,
                        },
                        Flow {
                            tunnel: name(),
                            protocol: FlowProtocol::Udp,
                            source: "[2001:db8:ff::1]:5353".parse().unwrap(),
                            destination: "[2001:db8:1::53]:53".parse().unwrap(),
                            host: None,
                            upstream: "socks5://alice:***@192.0.2.10:1080".into(),
                            bytes_up: 64,
                            bytes_down: 480,
                            age_millis: 900,
                        },
                    ],
                    omitted: 0,
                }),
            ),
        ),
        (
            "reply-version",
            Message::Response(
                Op::Version,
                Response::Ok(Reply::Version {
                    version: "0.1.0".into(),
                    protocol: 1,
                }),
            ),
        ),
        (
            "reply-tunnel",
            Message::Response(Op::Up, Response::Ok(Reply::Tunnel(Box::new(status())))),
        ),
        (
            "reply-status",
            Message::Response(
                Op::Status,
                Response::Ok(Reply::Tunnels {
                    tunnels: vec![status()],
                    stale_routes: vec![exclusion_route()],
                }),
            ),
        ),
        (
            "reply-doctor",
            Message::Response(Op::Doctor, Response::Ok(Reply::Doctor(doctor_checks()))),
        ),
        (
            "reply-done",
            Message::Response(Op::Down, Response::Ok(Reply::Done)),
        ),
        (
            "reply-error",
            Message::Response(
                Op::Up,
                Response::Err(ErrorReply::new(
                    ErrorCode::Unauthorized,
                    "up: uid 501 is not root and not in group admin; ask an administrator",
                )),
            ),
        ),
        (
            "event-tunnel",
            Message::Event(Event::Tunnel(Box::new(status()))),
        ),
        ("event-down", Message::Event(Event::Down { name: name() })),
        (
            "event-route",
            Message::Event(Event::Route {
                name: "all".parse().unwrap(),
                change: RouteChange::Added,
                route: exclusion_route(),
            }),
        ),
        (
            "event-error",
            Message::Event(Event::Error {
                name: Some(name()),
                message: "route 203.0.113.0/24 now resolves to en0, not utun4; re-installed".into(),
            }),
        ),
        (
            "event-network",
            Message::Event(Event::Network {
                cause: NetworkCause::Woke,
                interface: Some("en0".into()),
                gateway: Some("198.51.100.1".parse().unwrap()),
            }),
        ),
    ]
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/xpc")
}

#[test]
fn every_fixture_decodes_to_its_message_and_encodes_back_unchanged() {
    let dir = fixture_dir();
    let bless = std::env::var_os("ZTUN_BLESS").is_some();
    for (file, message) in cases() {
        let path = dir.join(format!("{file}.plist"));
        let encoded = message.to_value();
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            encoded.to_file_xml(&path).unwrap();
        }
        let fixture = Value::from_file(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with ZTUN_BLESS=1 to create)", path.display())
        });
        message.assert_decodes_to_self(&fixture, file);
        assert_eq!(
            encoded, fixture,
            "{file}: encoding differs from the fixture"
        );
    }
}

#[test]
fn fixture_directory_holds_exactly_the_pinned_messages() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut pinned: Vec<String> = cases().iter().map(|(f, _)| format!("{f}.plist")).collect();
    pinned.sort();
    assert_eq!(on_disk, pinned);
}

#[test]
fn every_op_and_event_kind_has_a_fixture() {
    let cases = cases();
    for op in Op::ALL {
        assert!(
            cases
                .iter()
                .any(|(_, m)| matches!(m, Message::Request(r) if r.op() == op)),
            "no request fixture for {op}"
        );
    }
    for kind in ["tunnel", "down", "route", "error", "network"] {
        assert!(
            cases
                .iter()
                .any(|(_, m)| matches!(m, Message::Event(e) if e.kind() == kind)),
            "no event fixture for {kind}"
        );
    }
}

#[test]
fn status_fixture_never_carries_the_socks_password() {
    let text = std::fs::read_to_string(fixture_dir().join("reply-status.plist")).unwrap();
    assert!(
        text.contains("socks5://alice:***@192.0.2.10:1080"),
        "{text}"
    );
    assert!(!text.contains("s3cret"));
    assert!(text.contains("http://bob:***@192.0.2.11:3128"), "{text}");
    assert!(!text.contains("pa55"));
}
