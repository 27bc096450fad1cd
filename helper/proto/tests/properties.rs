//! Properties over generated input: every valid message survives the
//! dictionary and the frame, and no input makes a decoder panic.

#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use ztun_proto::plist::{Dictionary, Value};
use ztun_proto::{
    frame, DownTarget, EchoPolicy, Event, Op, Request, Response, TunnelName, TunnelSpec, Upstream,
};

fn name() -> impl Strategy<Value = TunnelName> {
    "[a-zA-Z0-9][a-zA-Z0-9_-]{0,31}".prop_map(|s| s.parse().unwrap())
}

fn route_v4() -> impl Strategy<Value = ipnet::IpNet> {
    (any::<u32>(), 1u8..=32).prop_map(|(a, len)| {
        ipnet::IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc())
    })
}

fn route_v6() -> impl Strategy<Value = ipnet::IpNet> {
    (any::<u128>(), 1u8..=128).prop_map(|(a, len)| {
        ipnet::IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc())
    })
}

fn upstream() -> impl Strategy<Value = Upstream> {
    prop_oneof![
        Just(Upstream::Direct),
        (
            prop_oneof![
                any::<[u8; 4]>().prop_map(|a| format!("{}", Ipv4Addr::from(a))),
                any::<u128>().prop_map(|a| format!("[{}]", Ipv6Addr::from(a))),
                "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}",
            ],
            1u16..,
            proptest::option::of(("[^\\x00]{1,20}", "[^\\x00]{1,20}")),
            prop::sample::select(vec!["socks5", "http"]),
        )
            .prop_filter_map("host must be usable", |(host, port, auth, scheme)| {
                let auth = auth.map(|(u, p): (String, String)| {
                    let enc = |s: &str| {
                        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
                            .to_string()
                    };
                    format!("{}:{}@", enc(&u), enc(&p))
                });
                format!("{scheme}://{}{host}:{port}", auth.unwrap_or_default())
                    .parse()
                    .ok()
            }),
    ]
}

prop_compose! {
    fn spec()(
        name in name(),
        addr in (1u8..=223, any::<[u8; 3]>(), 8u8..=32),
        ipv6 in proptest::option::of((1u16..0xff00, any::<[u16; 7]>(), 1u8..=128)),
        mtu_extra in 0u16..=64255,
        v4 in proptest::collection::vec(route_v4(), 0..5),
        v6 in proptest::collection::vec(route_v6(), 0..3),
        full in any::<bool>(),
        exclude in proptest::collection::vec(route_v4(), 0..3),
        upstream in upstream(),
        failover in proptest::collection::vec(upstream(), 0..3),
        icmp in prop::sample::select(EchoPolicy::ALL.to_vec()),
        transient in any::<bool>(),
    ) -> TunnelSpec {
        let mut spec = TunnelSpec::new(name);
        let (first, rest, len) = addr;
        let a = Ipv4Addr::new(if first == 127 { 10 } else { first }, rest[0], rest[1], rest[2]);
        spec.address = ipnet::Ipv4Net::new(a, len).unwrap();
        spec.peer = if a.octets()[3] == 1 { Ipv4Addr::new(198, 18, 0, 2) } else { Ipv4Addr::new(198, 18, 0, 1) };
        spec.ipv6 = ipv6.map(|(h, r, len)| {
            let a = Ipv6Addr::new(h.max(0x2000), r[0], r[1], r[2], r[3], r[4], r[5], r[6].max(1));
            ipnet::Ipv6Net::new(a, len).unwrap()
        });
        spec.mtu = 1280 + mtu_extra;
        spec.routes = v4;
        if spec.ipv6.is_some() {
            spec.routes.extend(v6);
        }
        spec.full = full || spec.routes.is_empty();
        if spec.full {
            spec.exclude = exclude;
        }
        spec.upstream = upstream;
        if spec.upstream.proxy().is_some() {
            // Proxies only, each once, as the helper requires.
            for u in failover {
                if u.proxy().is_some() && !spec.upstreams().any(|v| *v == u) {
                    spec.failover.push(u);
                }
            }
        }
        spec.icmp = icmp;
        spec.transient = transient;
        spec
    }
}

fn request() -> impl Strategy<Value = Request> {
    let routes = || proptest::collection::vec(route_v4(), 1..4);
    prop_oneof![
        Just(Request::Version),
        spec().prop_map(Request::Up),
        name().prop_map(|n| Request::Down(DownTarget::Name(n))),
        Just(Request::Down(DownTarget::All)),
        proptest::option::of(name()).prop_map(Request::Status),
        proptest::option::of(name()).prop_map(Request::Watch),
        proptest::option::of(name()).prop_map(Request::Flows),
        (name(), routes()).prop_map(|(name, routes)| Request::RouteAdd { name, routes }),
        (name(), routes()).prop_map(|(name, routes)| Request::RouteRemove { name, routes }),
        (
            proptest::option::of(name()),
            proptest::option::of(
                (any::<[u8; 4]>(), 1u16..).prop_filter_map(
                    "a probe must be connectable",
                    |(a, port)| ztun_proto::parse_probe(&format!("{}:{port}", Ipv4Addr::from(a)))
                        .ok(),
                )
            ),
            proptest::option::of(
                "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}"
                    .prop_filter_map("a host name", |n| ztun_proto::parse_dns_name(&n).ok()),
            ),
        )
            .prop_map(|(name, probe, dns_name)| Request::Doctor {
                name,
                probe,
                dns_name,
            }),
    ]
}

/// Arbitrary plist trees, mostly dictionaries with the protocol's own keys so
/// the decoders get past the envelope.
fn plist_value() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "v",
        "op",
        "tunnel",
        "name",
        "routes",
        "address",
        "peer",
        "mtu",
        "ipv6",
        "full",
        "exclude",
        "upstream",
        "icmp",
        "all",
        "ok",
        "error",
        "code",
        "message",
        "tunnels",
        "event",
        "installed",
        "counters",
        "drops",
        "since",
        "state",
        "interface",
        "route",
        "probe",
        "dns_name",
        "checks",
        "check",
        "detail",
        "millis",
        "fix",
    ]);
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        (0i64..3).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "up",
            "down",
            "status",
            "route.add",
            "watch",
            "doctor",
            "203.0.113.5:443",
            "203.0.113.0/24",
            "work",
            "1"
        ])
        .prop_map(|s| Value::String(s.into())),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Data),
        any::<f64>().prop_map(Value::Real),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..8).prop_map(|kv| {
                let mut d = Dictionary::new();
                d.insert("v".into(), Value::from(1_i64));
                for (k, v) in kv {
                    d.insert(k.to_owned(), v);
                }
                Value::Dictionary(d)
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_valid_request_round_trips_through_dictionary_and_frame(req in request()) {
        let value = req.to_value();
        prop_assert_eq!(&Request::from_value(&value).unwrap(), &req);
        let mut bytes = Vec::new();
        frame::encode(&value, &mut bytes).unwrap();
        let (decoded, used) = frame::decode(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(Request::from_value(&decoded).unwrap(), req);
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_trees(value in plist_value()) {
        let _ = Request::from_value(&value);
        let _ = Event::from_value(&value);
        for op in Op::ALL {
            let _ = Response::from_value(op, &value);
        }
    }

    #[test]
    fn accepted_requests_reencode_to_an_equivalent_request(value in plist_value()) {
        if let Ok(req) = Request::from_value(&value) {
            prop_assert_eq!(Request::from_value(&req.to_value()).unwrap(), req);
        }
    }

    #[test]
    fn frame_decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = frame::decode(&bytes);
    }

    #[test]
    fn frame_decoder_never_panics_on_mangled_valid_frames(
        req in request(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = Vec::new();
        frame::encode(&req.to_value(), &mut bytes).unwrap();
        for (at, byte) in flips {
            let i = at.index(bytes.len() - 4) + 4;
            bytes[i] = byte;
        }
        if let Ok(Some((value, _))) = frame::decode(&bytes) {
            let _ = Request::from_value(&value);
        }
    }
}
