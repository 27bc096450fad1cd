//! Request decoding as a client meets it: what is accepted, and for every way
//! a request can be wrong, the error code and the key the message names.

#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use ztun_proto::plist::{Dictionary, Value};
use ztun_proto::{
    DecodeError, DownTarget, EchoPolicy, ErrorCode, ErrorReply, Op, Request, TunnelSpec, Upstream,
    DEFAULT_ADDRESS, DEFAULT_MTU, DEFAULT_PEER,
};

fn dict(pairs: &[(&str, Value)]) -> Value {
    let mut d = Dictionary::new();
    for (k, v) in pairs {
        d.insert((*k).to_owned(), v.clone());
    }
    Value::Dictionary(d)
}

fn s(x: &str) -> Value {
    Value::String(x.to_owned())
}

fn i(x: i64) -> Value {
    Value::from(x)
}

fn strings(xs: &[&str]) -> Value {
    Value::Array(xs.iter().map(|x| s(x)).collect())
}

/// A minimal valid `up` request whose tunnel dictionary gets `extra` keys
/// added or replaced and the `remove` keys taken out.
fn up_with(extra: &[(&str, Value)], remove: &[&str]) -> Value {
    let mut tunnel = Dictionary::new();
    tunnel.insert("name".into(), s("work"));
    tunnel.insert("routes".into(), strings(&["203.0.113.0/24"]));
    for (k, v) in extra {
        tunnel.insert((*k).to_owned(), v.clone());
    }
    for k in remove {
        tunnel.remove(k);
    }
    dict(&[
        ("v", i(1)),
        ("op", s("up")),
        ("tunnel", Value::Dictionary(tunnel)),
    ])
}

fn decode_err(value: &Value) -> DecodeError {
    match Request::from_value(value) {
        Ok(r) => panic!("expected an error, decoded {r:?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn assert_invalid(value: &Value, key: &str, needle: &str) {
    let e = decode_err(value);
    assert_eq!(e.code(), ErrorCode::InvalidArgument, "{e}");
    assert_eq!(e.key(), key, "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("{key}: ")),
        "message should lead with the key: {msg}"
    );
    assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
}

#[test]
fn minimal_up_takes_every_default() {
    let Request::Up(spec) = Request::from_value(&up_with(&[], &[])).unwrap() else {
        panic!("not an up request")
    };
    assert_eq!(spec.name.as_str(), "work");
    assert_eq!(spec.address, DEFAULT_ADDRESS);
    assert_eq!(spec.peer, DEFAULT_PEER);
    assert_eq!(spec.mtu, DEFAULT_MTU);
    assert_eq!(spec.ipv6, None);
    assert_eq!(spec.routes, vec!["203.0.113.0/24".parse().unwrap()]);
    assert!(!spec.full && !spec.transient);
    assert_eq!(spec.upstream, Upstream::Direct);
    assert_eq!(spec.icmp, EchoPolicy::Forward);
}

#[test]
fn unknown_keys_are_ignored_at_every_level() {
    let mut v = up_with(&[("colour", s("blue"))], &[]);
    v.as_dictionary_mut().unwrap().insert("future".into(), i(7));
    assert!(matches!(Request::from_value(&v), Ok(Request::Up(_))));
}

#[test]
fn a_real_bool_is_accepted_where_a_flag_is_expected() {
    let v = up_with(
        &[("full", Value::Boolean(true)), ("routes", strings(&[]))],
        &[],
    );
    let Request::Up(spec) = Request::from_value(&v).unwrap() else {
        panic!()
    };
    assert!(spec.full);
}

#[test]
fn a_bare_address_route_is_a_host_route() {
    let v = up_with(
        &[
            ("routes", strings(&["203.0.113.5", "2001:db8::5"])),
            ("ipv6", s("2001:db8::1/64")),
        ],
        &[],
    );
    let Request::Up(spec) = Request::from_value(&v).unwrap() else {
        panic!()
    };
    let got: Vec<String> = spec.routes.iter().map(ToString::to_string).collect();
    assert_eq!(got, ["203.0.113.5/32", "2001:db8::5/128"]);
}

#[test]
fn version_other_than_one_is_unsupported_version() {
    for v in [0, 2, -1] {
        let e = decode_err(&dict(&[("v", i(v)), ("op", s("status"))]));
        assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
        assert!(
            e.to_string()
                .contains(&format!("version {v} is not supported")),
            "{e}"
        );
    }
}

#[test]
fn version_is_checked_before_anything_else() {
    let e = decode_err(&dict(&[("v", i(2)), ("op", s("no-such-op"))]));
    assert_eq!(e.code(), ErrorCode::UnsupportedVersion);
}

#[test]
fn envelope_errors_name_their_key() {
    assert_invalid(
        &dict(&[("op", s("status"))]),
        "v",
        "required key is missing",
    );
    assert_invalid(
        &dict(&[("v", s("1")), ("op", s("status"))]),
        "v",
        "expected integer, got string",
    );
    assert_invalid(&dict(&[("v", i(1))]), "op", "required key is missing");
    assert_invalid(
        &dict(&[("v", i(1)), ("op", i(3))]),
        "op",
        "expected string, got integer",
    );
    assert_invalid(
        &dict(&[("v", i(1)), ("op", s("launch"))]),
        "op",
        "unknown operation \"launch\"",
    );
    assert_invalid(&s("status"), "(message)", "expected dictionary, got string");
}

#[test]
fn up_errors_name_the_tunnel_field() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (dict(&[("v", i(1)), ("op", s("up"))]), "tunnel", "missing"),
        (
            dict(&[("v", i(1)), ("op", s("up")), ("tunnel", s("work"))]),
            "tunnel",
            "expected dictionary",
        ),
        (up_with(&[], &["name"]), "tunnel.name", "missing"),
        (
            up_with(&[("name", s("my tunnel"))], &[]),
            "tunnel.name",
            "letters, digits",
        ),
        (
            up_with(&[("name", s("-lead"))], &[]),
            "tunnel.name",
            "starting with a letter",
        ),
        (
            up_with(&[("name", s(&"n".repeat(33)))], &[]),
            "tunnel.name",
            "1 to 32",
        ),
        (
            up_with(&[("mtu", s("1500"))], &[]),
            "tunnel.mtu",
            "expected integer, got string",
        ),
        (
            up_with(&[("mtu", i(575))], &[]),
            "tunnel.mtu",
            "below the minimum 576",
        ),
        (
            up_with(&[("mtu", i(65536))], &[]),
            "tunnel.mtu",
            "65536 is out of range",
        ),
        (
            up_with(&[("mtu", i(-1))], &[]),
            "tunnel.mtu",
            "out of range",
        ),
        (
            up_with(&[("mtu", i(1279)), ("ipv6", s("2001:db8::1/64"))], &[]),
            "tunnel.mtu",
            "below the minimum 1280 with IPv6",
        ),
        (
            up_with(&[("address", s("198.18.0.1/33"))], &[]),
            "tunnel.address",
            "not an IPv4 address",
        ),
        (
            up_with(&[("address", s("224.0.0.1/32"))], &[]),
            "tunnel.address",
            "cannot be a tunnel address",
        ),
        (
            up_with(&[("address", s("2001:db8::1/64"))], &[]),
            "tunnel.address",
            "not an IPv4 address",
        ),
        (
            up_with(&[("peer", s("198.18.0.1"))], &[]),
            "tunnel.peer",
            "the tunnel's own address",
        ),
        (
            up_with(&[("peer", s("198.18.0.0/24"))], &[]),
            "tunnel.peer",
            "not an IPv4 address",
        ),
        (
            up_with(&[("ipv6", s("198.18.0.1/32"))], &[]),
            "tunnel.ipv6",
            "not an IPv6 address",
        ),
        (
            up_with(&[("routes", s("203.0.113.0/24"))], &[]),
            "tunnel.routes",
            "expected array, got string",
        ),
        (
            up_with(&[("routes", strings(&[]))], &[]),
            "tunnel.routes",
            "at least one route",
        ),
        (
            up_with(&[], &["routes"]),
            "tunnel.routes",
            "at least one route",
        ),
        (
            up_with(
                &[("routes", Value::Array(vec![s("203.0.113.0/24"), i(5)]))],
                &[],
            ),
            "tunnel.routes[1]",
            "expected string, got integer",
        ),
        (
            up_with(
                &[("routes", strings(&["203.0.113.0/24", "203.0.113.0/99"]))],
                &[],
            ),
            "tunnel.routes[1]",
            "not a CIDR",
        ),
        (
            up_with(&[("routes", strings(&["203.0.113.9/24"]))], &[]),
            "tunnel.routes[0]",
            "did you mean 203.0.113.0/24",
        ),
        (
            up_with(&[("routes", strings(&["0.0.0.0/0"]))], &[]),
            "tunnel.routes[0]",
            "replace the default route",
        ),
        (
            up_with(
                &[("routes", strings(&["203.0.113.0/24", "2001:db8::/32"]))],
                &[],
            ),
            "tunnel.routes[1]",
            "tunnel has no IPv6 address",
        ),
        (
            up_with(&[("full", i(2))], &[]),
            "tunnel.full",
            "must be 0 or 1",
        ),
        (
            up_with(&[("full", s("yes"))], &[]),
            "tunnel.full",
            "expected integer 0/1",
        ),
        (
            up_with(&[("exclude", strings(&["192.0.2.0/24"]))], &[]),
            "tunnel.exclude",
            "only in full-tunnel",
        ),
        (
            up_with(
                &[("full", i(1)), ("exclude", strings(&["192.0.2.1/24"]))],
                &[],
            ),
            "tunnel.exclude[0]",
            "host bits",
        ),
        (
            up_with(&[("dns", s("fake"))], &[]),
            "tunnel.dns",
            "fake DNS hands names to a proxy",
        ),
        (
            up_with(
                &[
                    ("dns", s("fake")),
                    ("upstream", s("socks5://192.0.2.10:1080")),
                    ("fake_pool", s("198.18.0.0/29")),
                ],
                &[],
            ),
            "tunnel.fake_pool",
            "198.18.0.0/29 holds 8 addresses; a pool needs at least 16 (a /28)",
        ),
        (
            up_with(&[("fake_pool", s("2001:db8::/64"))], &[]),
            "tunnel.fake_pool",
            "the fake-IP pool is IPv4",
        ),
        (
            up_with(&[("fake_pool", s("198.51.100.0/24"))], &[]),
            "tunnel.fake_pool",
            "applies only with dns = fake",
        ),
        (
            up_with(
                &[
                    ("dns", s("fake")),
                    ("upstream", s("socks5://192.0.2.10:1080")),
                    (
                        "route_domains",
                        strings(&["example.com", "under_score.example"]),
                    ),
                ],
                &[],
            ),
            "tunnel.route_domains[1]",
            "\"under_score.example\" is not a domain like example.com",
        ),
        (
            up_with(
                &[
                    ("dns", s("fake")),
                    ("upstream", s("socks5://192.0.2.10:1080")),
                    ("route_domains", strings(&["example.com", "Example.COM."])),
                ],
                &[],
            ),
            "tunnel.route_domains[1]",
            "example.com is already listed",
        ),
        (
            up_with(
                &[
                    ("dns", s("fake")),
                    ("upstream", s("socks5://192.0.2.10:1080")),
                ],
                &["routes"],
            ),
            "tunnel.route_domains",
            "without full = 1, fake DNS needs the domains",
        ),
        (
            up_with(
                &[
                    ("dns", s("fake")),
                    ("upstream", s("socks5://192.0.2.10:1080")),
                    ("route_domains", strings(&["example.com"])),
                    ("fake_pool6", s("2001:db8:fa::/64")),
                ],
                &[],
            ),
            "tunnel.fake_pool6",
            "needs IPv6 in the tunnel",
        ),
        (
            up_with(&[("fake_pool6", s("2001:db8:fa::/124"))], &[]),
            "tunnel.fake_pool6",
            "an IPv6 pool is a /32 to a /120",
        ),
        (
            up_with(&[("fake_pool6", s("2001:db8:fa::/64"))], &[]),
            "tunnel.fake_pool6",
            "applies only with dns = fake",
        ),
        (
            up_with(&[("dns", s("upstream"))], &[]),
            "tunnel.dns",
            "is not a DNS mode; use system or fake",
        ),
        (
            up_with(&[("kill_switch", i(1))], &[]),
            "tunnel.kill_switch",
            "needs full-tunnel mode",
        ),
        (
            up_with(
                &[
                    ("full", i(1)),
                    ("kill_switch", i(1)),
                    ("allow_ipv6_leak", i(1)),
                ],
                &[],
            ),
            "tunnel.kill_switch",
            "give one of them",
        ),
        (
            up_with(&[("upstream", s("https://192.0.2.1:3128"))], &[]),
            "tunnel.upstream",
            "not supported",
        ),
        (
            up_with(&[("failover", strings(&["http://192.0.2.1:3128"]))], &[]),
            "tunnel.failover",
            "needs a proxy upstream to fail over from",
        ),
        (
            up_with(
                &[
                    ("upstream", s("socks5://192.0.2.1:1080")),
                    ("failover", strings(&["http://192.0.2.2:3128", "direct"])),
                ],
                &[],
            ),
            "tunnel.failover[1]",
            "direct cannot be a failover",
        ),
        (
            up_with(
                &[
                    ("upstream", s("socks5://192.0.2.1:1080")),
                    ("failover", strings(&["SOCKS5://192.0.2.1:1080"])),
                ],
                &[],
            ),
            "tunnel.failover[0]",
            "socks5://192.0.2.1:1080 is already listed",
        ),
        (
            up_with(&[("failover", s("http://192.0.2.1:3128"))], &[]),
            "tunnel.failover",
            "expected array",
        ),
        (
            up_with(&[("upstream", s("socks5://192.0.2.1"))], &[]),
            "tunnel.upstream",
            "host and a port",
        ),
        (
            up_with(&[("icmp", s("pong"))], &[]),
            "tunnel.icmp",
            "use reply, forward or drop",
        ),
        (
            up_with(&[("transient", i(-1))], &[]),
            "tunnel.transient",
            "must be 0 or 1",
        ),
    ];
    for (value, key, needle) in &cases {
        assert_invalid(value, key, needle);
    }
}

#[test]
fn down_needs_exactly_one_of_name_and_all() {
    let down = |extra: &[(&str, Value)]| {
        let mut pairs = vec![("v", i(1)), ("op", s("down"))];
        pairs.extend_from_slice(extra);
        dict(&pairs)
    };
    assert_eq!(
        Request::from_value(&down(&[("name", s("work"))])).unwrap(),
        Request::Down(DownTarget::Name("work".parse().unwrap()))
    );
    assert_eq!(
        Request::from_value(&down(&[("all", i(1))])).unwrap(),
        Request::Down(DownTarget::All)
    );
    assert_invalid(&down(&[]), "name", "missing");
    assert_invalid(&down(&[("all", i(0))]), "name", "missing");
    assert_invalid(
        &down(&[("all", i(1)), ("name", s("work"))]),
        "all",
        "not both",
    );
    assert_invalid(&down(&[("name", s("a/b"))]), "name", "letters, digits");
}

#[test]
fn route_ops_need_a_name_and_at_least_one_route() {
    for op in ["route.add", "route.remove"] {
        let base = |extra: &[(&str, Value)]| {
            let mut pairs = vec![("v", i(1)), ("op", s(op))];
            pairs.extend_from_slice(extra);
            dict(&pairs)
        };
        assert_invalid(
            &base(&[("routes", strings(&["192.0.2.0/24"]))]),
            "name",
            "missing",
        );
        assert_invalid(
            &base(&[("name", s("work"))]),
            "routes",
            "at least one route",
        );
        assert_invalid(
            &base(&[("name", s("work")), ("routes", strings(&["bogus"]))]),
            "routes[0]",
            "not an address",
        );
        let ok = Request::from_value(&base(&[
            ("name", s("work")),
            ("routes", strings(&["192.0.2.0/24"])),
        ]));
        assert_eq!(ok.unwrap().op().as_str(), op);
    }
}

#[test]
fn status_and_watch_take_an_optional_name() {
    for op in ["status", "watch"] {
        let all = Request::from_value(&dict(&[("v", i(1)), ("op", s(op))])).unwrap();
        let one =
            Request::from_value(&dict(&[("v", i(1)), ("op", s(op)), ("name", s("work"))])).unwrap();
        assert_eq!(all.to_value().as_dictionary().unwrap().get("name"), None);
        assert_eq!(
            one.to_value().as_dictionary().unwrap().get("name"),
            Some(&s("work"))
        );
    }
}

#[test]
fn doctor_takes_an_optional_name_probe_and_dns_name() {
    let all = Request::from_value(&dict(&[("v", i(1)), ("op", s("doctor"))])).unwrap();
    assert_eq!(
        all,
        Request::Doctor {
            name: None,
            probe: None,
            dns_name: None
        }
    );
    assert_eq!(all.to_value(), dict(&[("v", i(1)), ("op", s("doctor"))]));
    let one = Request::from_value(&dict(&[
        ("v", i(1)),
        ("op", s("doctor")),
        ("name", s("work")),
        ("probe", s("[2001:db8::5]:443")),
        ("dns_name", s("WWW.Example.Test.")),
    ]))
    .unwrap();
    assert_eq!(
        one,
        Request::Doctor {
            name: Some("work".parse().unwrap()),
            probe: Some("[2001:db8::5]:443".parse().unwrap()),
            dns_name: Some("www.example.test".into()),
        }
    );
}

#[test]
fn doctor_errors_name_the_field() {
    let doctor = |key: &str, value: Value| dict(&[("v", i(1)), ("op", s("doctor")), (key, value)]);
    assert_invalid(
        &doctor("probe", s("www.example.test:443")),
        "probe",
        "is not an address and port like 203.0.113.5:443",
    );
    assert_invalid(
        &doctor("probe", s("203.0.113.5:0")),
        "probe",
        "port 0 cannot be connected to",
    );
    assert_invalid(
        &doctor("dns_name", s("not a name")),
        "dns_name",
        "is not a host name like www.example.com",
    );
    assert_invalid(&doctor("name", s("-x")), "name", "may use only letters");
    let e = decode_err(&doctor("probe", i(443)));
    assert_eq!(e.to_string(), "probe: expected string, got integer");
}

#[test]
fn only_changes_are_mutating() {
    let mutating: Vec<&str> = Op::ALL
        .iter()
        .filter(|o| o.is_mutating())
        .map(|o| o.as_str())
        .collect();
    assert_eq!(mutating, ["up", "down", "route.add", "route.remove"]);
}

#[test]
fn decode_error_becomes_an_error_reply_with_the_same_text() {
    let e = decode_err(&up_with(&[("mtu", i(100))], &[]));
    let reply = ErrorReply::from(e.clone());
    assert_eq!(reply.code, ErrorCode::InvalidArgument);
    assert_eq!(reply.message, e.to_string());
    assert_eq!(reply.message, "tunnel.mtu: 100 is below the minimum 576");
}

#[test]
fn spec_round_trip_keeps_the_password_on_the_wire_only() {
    let mut spec = TunnelSpec::new("work".parse().unwrap());
    spec.routes = vec!["203.0.113.0/24".parse().unwrap()];
    spec.upstream = "socks5://alice:hunter2@192.0.2.10:1080".parse().unwrap();
    let req = Request::Up(spec);
    let wire = req.to_value();
    assert_eq!(Request::from_value(&wire).unwrap(), req);
    assert!(!format!("{req:?}").contains("hunter2"));
}

/// Every key of a full `up` request, each replaced in turn by a value of
/// every other plist type: the request is refused as `invalid_argument`
/// and the message names the key (a hostile or buggy client learns what it
/// did wrong, and nothing reaches the daemon).
#[test]
fn a_wrong_type_in_any_field_is_refused_naming_that_field() {
    let full = up_with(
        &[
            ("address", s("198.18.0.1/32")),
            ("peer", s("198.18.0.2")),
            ("mtu", i(9000)),
            ("ipv6", s("2001:db8:ff::1/64")),
            ("full", i(0)),
            ("exclude", strings(&[])),
            ("upstream", s("socks5://u:p@192.0.2.10:1080")),
            ("dns_over_tcp", i(1)),
            ("icmp", s("reply")),
            ("transient", i(0)),
        ],
        &[],
    );
    assert!(
        Request::from_value(&full).is_ok(),
        "the unmutated request is valid"
    );
    let others = [
        i(7),
        s("x"),
        Value::Array(vec![i(1)]),
        dict(&[("k", i(1))]),
        Value::Data(vec![1, 2]),
        Value::Boolean(true),
        Value::Real(1.5),
    ];
    let tunnel = full.as_dictionary().unwrap()["tunnel"]
        .as_dictionary()
        .unwrap()
        .clone();
    let mut checked = 0;
    for (key, original) in &tunnel {
        for other in &others {
            // Flags also take a boolean on input (docs/protocol.md §2).
            let flag_as_bool = matches!(other, Value::Boolean(_))
                && ["full", "dns_over_tcp", "transient"].contains(&key.as_str());
            if std::mem::discriminant(original) == std::mem::discriminant(other) || flag_as_bool {
                continue;
            }
            let mut mutated = full.as_dictionary().unwrap().clone();
            let mut t = tunnel.clone();
            t.insert(key.clone(), other.clone());
            mutated.insert("tunnel".into(), Value::Dictionary(t));
            let err = Request::from_value(&Value::Dictionary(mutated))
                .expect_err(&format!("tunnel.{key} = {other:?} was accepted"));
            let reply = ErrorReply::from(err);
            assert_eq!(reply.code, ErrorCode::InvalidArgument, "tunnel.{key}");
            assert!(
                reply.message.starts_with(&format!("tunnel.{key}")),
                "tunnel.{key} = {other:?}: {}",
                reply.message
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        12 * 6 - 3,
        "12 keys, 6 other types each, less a bool for 3 flags"
    );
}

#[test]
fn route_domains_cover_their_names_and_subdomains_only() {
    let mut spec = TunnelSpec::new("t".parse().unwrap());
    assert!(
        spec.routes_name("anything.example"),
        "no route domains: every name"
    );
    spec.route_domains = vec!["example.com".into(), "corp.example".into()];
    for (name, routed) in [
        ("example.com", true),
        ("www.example.com", true),
        ("a.b.corp.example", true),
        ("badexample.com", false),
        ("example.com.evil", false),
        ("com", false),
    ] {
        assert_eq!(spec.routes_name(name), routed, "{name}");
    }
}
