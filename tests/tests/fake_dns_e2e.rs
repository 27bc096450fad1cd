//! Fake-IP DNS (issue 19, part 1): the helper answers the client's DNS
//! queries with addresses from its pool and hands the proxy the name, so
//! the name is resolved by the proxy (dante, tinyproxy: Debian's, with the
//! server namespace's own resolver, dnsmasq) and no query leaves the
//! client. The client's resolver (192.0.2.53) does not exist: only the
//! fake DNS can answer it.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::net::Ipv4Addr;
use std::time::Duration;

use ztun_tests::servers::{self, Capture, LINK_CHATTER};
use ztun_tests::{can_run, eventually, NetnsResolvConf, Topology, SERVER};

const PROXY: &str = "198.51.100.2";
const NAME: &str = "www.example.test";
/// The client's resolver: nobody has it, so only the fake DNS answers.
const NOBODY: &str = "192.0.2.53";

/// One `dig` of `name` (`qtype`) at `server`: the status word (NOERROR,
/// SERVFAIL, …) and the addresses answered.
fn dig(t: &Topology, server: &str, name: &str, qtype: &str, tcp: bool) -> (String, Vec<String>) {
    let transport = if tcp { "+tcp" } else { "+notcp" };
    let out = t
        .client
        .exec_unchecked(
            "dig",
            &[
                "+time=2",
                "+tries=1",
                transport,
                &format!("@{server}"),
                name,
                qtype,
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("dig {name} @{server}: no answer: {text}"))
        .to_owned();
    let answers = text
        .lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect();
    (status, answers)
}

/// `address` as an IPv4 address, checked to be in `pool` (`a.b.c.d/len`).
fn fake(address: &str, pool: &str) -> Ipv4Addr {
    let addr: Ipv4Addr = address.parse().unwrap();
    let (net, len) = pool.split_once('/').unwrap();
    let (net, len): (Ipv4Addr, u32) = (net.parse().unwrap(), len.parse().unwrap());
    let mask = u32::MAX << (32 - len);
    assert_eq!(
        u32::from(addr) & mask,
        u32::from(net),
        "{addr} is in {pool}"
    );
    addr
}

/// The servers every test here uses: the destination's web server, and
/// dnsmasq answering `NAME` for the proxies (the server namespace's
/// resolver); the client resolves through the non-existent [`NOBODY`].
struct Names {
    _http: ztun_tests::Process,
    _dns: ztun_tests::Process,
    _server_conf: NetnsResolvConf,
    _client_conf: NetnsResolvConf,
}

fn names(t: &Topology) -> Names {
    std::fs::write(t.dir.join("file"), b"served by name\n").unwrap();
    Names {
        _http: servers::http(&t.server, &t.dir, SERVER, 8080).unwrap(),
        _dns: servers::dns_with_log(
            &t.server,
            &[SERVER],
            &[(NAME, SERVER)],
            &t.dir.join("dns.log"),
        )
        .unwrap(),
        _server_conf: NetnsResolvConf::new(t.server.name(), &format!("nameserver {SERVER}\n")),
        _client_conf: NetnsResolvConf::new(t.client.name(), &format!("nameserver {NOBODY}\n")),
    }
}

fn curl(t: &Topology, args: &[&str]) -> Option<String> {
    let mut all = vec!["-sS", "--max-time", "5"];
    all.extend_from_slice(args);
    let out = t.client.exec_unchecked("curl", &all).unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn drops(t: &Topology, name: &str, reason: &str) -> u64 {
    let json = t.ztunctl_ok(&["status", name, "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["tunnels"][0]["counters"]["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn names_go_to_the_proxy_and_no_dns_query_leaves_the_machine() {
    if !can_run("names_go_to_the_proxy_and_no_dns_query_leaves_the_machine") {
        return;
    }
    let t = Topology::new("fakedns").unwrap();
    let _names = names(&t);
    let _dante = servers::dante(&t.server, &t.dir.join("dante"), &[PROXY], 1080, None).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "all",
        "--full",
        "--upstream",
        &format!("socks5://{PROXY}:1080"),
        "--dns",
        "fake",
        "--ipv6",
        "2001:db8:ff::1/64",
        "--fake-pool6",
        "2001:db8:fa::/64",
        "--icmp",
        "reply",
    ])
    .unwrap();
    let status = t.ztunctl_ok(&["status", "all"]).unwrap();
    assert!(
        status.contains("  names     fake DNS for every name (every query in the tunnel), addresses from 198.18.0.0/15 and 2001:db8:fa::/64, resolved by the proxy\n"),
        "{status}"
    );
    let capture = Capture::start(&t.client, "veth-c", &t.dir.join("veth-c.pcap")).unwrap();

    let (status, a) = dig(&t, NOBODY, NAME, "A", false);
    assert_eq!(status, "NOERROR");
    let addr = fake(&a[0], "198.18.0.0/15");
    assert_ne!(
        addr,
        Ipv4Addr::new(198, 18, 0, 1),
        "never the tunnel's own address"
    );
    assert_eq!(
        dig(&t, NOBODY, NAME, "A", true).1,
        a,
        "over TCP: the same address"
    );
    assert_eq!(
        dig(&t, "203.0.113.99", NAME, "A", false).1,
        a,
        "whichever resolver is asked"
    );
    let (status, aaaa) = dig(&t, NOBODY, NAME, "AAAA", false);
    assert_eq!(status, "NOERROR");
    assert!(aaaa[0].starts_with("2001:db8:fa::"), "{aaaa:?}");
    assert_eq!(
        dig(&t, NOBODY, NAME, "HTTPS", false),
        ("NOERROR".to_owned(), vec![]),
        "other types: no data"
    );
    assert_eq!(
        dig(&t, NOBODY, "other.example.test", "A", false).0,
        "NOERROR"
    );

    // A real client resolving through the system and fetching by name.
    let url = format!("http://{NAME}:8080/file");
    assert_eq!(curl(&t, &[&url]).as_deref(), Some("served by name\n"));
    // Over IPv6 to the fake IPv6 address, though the server has only IPv4:
    // the proxy is handed the name and picks the address itself.
    assert_eq!(curl(&t, &["-6", &url]).as_deref(), Some("served by name\n"));

    // The flow list shows the name the fake address stands for.
    let holder = t
        .client
        .spawn(
            "python3",
            &[
                "-c",
                &format!(
                    "import socket, time\n\
                     a = socket.getaddrinfo('{NAME}', 8080, socket.AF_INET, socket.SOCK_STREAM)[0][4]\n\
                     s = socket.create_connection(a)\ntime.sleep(10)"
                ),
            ],
        )
        .unwrap();
    let mut listed = String::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            listed = t.ztunctl_ok(&["flows", "all"]).unwrap();
            listed.contains(&format!("{NAME}:8080 ({addr})"))
        }),
        "{listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&t.ztunctl_ok(&["flows", "all", "--json"]).unwrap()).unwrap();
    assert!(
        json["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["host"] == NAME && f["destination"] == format!("{addr}:8080")),
        "{json}"
    );
    holder.signal(libc::SIGKILL).unwrap();

    // A UDP flow by name, through dante's UDP relay.
    let _echo = servers::udp_echo(&t.server, SERVER, 7000).unwrap();
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(1)\n\
         for _ in range(5):\n\
         \x20   s.sendto(b'udp by name', ('{NAME}', 7000))\n\
         \x20   try:\n\
         \x20       print(s.recv(64).decode()); break\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n"
    );
    let out = t.client.exec("python3", &["-c", &script]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "udp by name");

    let pcap = capture.path().to_owned();
    capture.stop().unwrap();
    let dns = servers::read_pcap(&pcap, "port 53").unwrap();
    assert!(dns.is_empty(), "no DNS query left the client: {dns:#?}");
    let others =
        servers::read_pcap(&pcap, &format!("not host {PROXY} and not ({LINK_CHATTER})")).unwrap();
    assert!(
        others.is_empty(),
        "everything went to the proxy: {others:#?}"
    );
    // The proxy resolved the name: the server namespace's resolver was
    // asked, by the server namespace itself.
    let log = std::fs::read_to_string(t.dir.join("dns.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("query[A] {NAME} from {SERVER}")),
        "{log}"
    );
}

#[test]
fn a_full_pool_says_servfail_and_the_map_survives_a_restart_but_not_down() {
    if !can_run("a_full_pool_says_servfail_and_the_map_survives_a_restart_but_not_down") {
        return;
    }
    let t = Topology::new("fakepool").unwrap();
    let _names = names(&t);
    let _socks = servers::microsocks(&t.server, PROXY, 1080, None).unwrap();
    let mut helper = t.start_helper().unwrap();
    let pool = "198.19.255.240/28";
    let up = [
        "up",
        "--name",
        "all",
        "--full",
        "--upstream",
        "socks5://198.51.100.2:1080",
        "--dns",
        "fake",
        "--fake-pool",
        pool,
        "--icmp",
        "reply",
    ];
    t.ztunctl_ok(&up).unwrap();
    let (_, a) = dig(&t, NOBODY, NAME, "A", false);
    let addr = fake(&a[0], pool);
    assert_eq!(
        dig(&t, NOBODY, NAME, "AAAA", false),
        ("NOERROR".to_owned(), vec![]),
        "without an IPv6 pool AAAA gets no data, so clients use the A answer"
    );
    // A /28 has 14 addresses to hand out: the name above and 13 more.
    for i in 0..13 {
        let (status, a) = dig(&t, NOBODY, &format!("n{i}.example.test"), "A", false);
        assert_eq!(status, "NOERROR", "n{i}");
        fake(&a[0], pool);
    }
    assert_eq!(
        dig(&t, NOBODY, "one-too-many.example.test", "A", false),
        ("SERVFAIL".to_owned(), vec![]),
        "every address is in use: no address is handed out twice"
    );
    assert_eq!(drops(&t, "all", "fake_pool_full"), 1);

    // Killed and started again: the same name keeps its address, and a
    // client that kept the address (no new lookup) is carried by name.
    std::thread::sleep(Duration::from_millis(1500)); // the map is saved within a second
    let map = t.dir.join("state/fake-dns-all.plist");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&map).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the names visited are private");
    assert!(std::fs::read_to_string(&map).unwrap().contains(NAME));
    helper.signal(libc::SIGKILL).unwrap();
    helper
        .wait_for_exit(Duration::from_secs(5))
        .unwrap()
        .expect("died");
    let _helper = t.start_helper().unwrap();
    assert_eq!(
        dig(&t, NOBODY, NAME, "A", false).1,
        a,
        "the same address after a restart"
    );
    let pinned = format!("{NAME}:8080:{addr}");
    let url = format!("http://{NAME}:8080/file");
    assert_eq!(
        curl(&t, &["--resolve", &pinned, &url]).as_deref(),
        Some("served by name\n")
    );

    // down forgets the map: the old address means nothing any more, and a
    // client still holding it is refused at once, so it resolves again.
    t.ztunctl_ok(&["down", "all"]).unwrap();
    t.ztunctl_ok(&up).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(curl(&t, &["--resolve", &pinned, &url]), None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused, not timed out"
    );
    assert_eq!(drops(&t, "all", "fake_address_unknown"), 1);
    t.ztunctl_ok(&["down", "all"]).unwrap();
    assert!(
        !t.dir.join("state/fake-dns-all.plist").exists(),
        "down leaves no map behind"
    );
}

#[test]
fn targeted_fake_dns_answers_its_domains_at_the_peer_and_reaches_an_http_proxy_by_name() {
    if !can_run(
        "targeted_fake_dns_answers_its_domains_at_the_peer_and_reaches_an_http_proxy_by_name",
    ) {
        return;
    }
    let t = Topology::new("fakedns-part").unwrap();
    let _names = names(&t);
    let _proxy =
        servers::tinyproxy(&t.server, &t.dir.join("tinyproxy"), PROXY, 3128, None).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "part",
        "--upstream",
        "http://198.51.100.2:3128",
        "--dns",
        "fake",
        "--route-domain",
        "example.test",
    ])
    .unwrap();
    let routes = t.client_routes().unwrap();
    assert!(routes.contains("198.18.0.0/15 dev ztun0"), "{routes}");
    assert!(!routes.contains("0.0.0.0/1"), "targeted: {routes}");
    // The peer answers the route domain, over UDP and TCP...
    let (status, a) = dig(&t, "198.18.0.2", NAME, "A", false);
    assert_eq!(status, "NOERROR");
    let addr = fake(&a[0], "198.18.0.0/15");
    assert_eq!(dig(&t, "198.18.0.2", NAME, "A", true).1, a);
    // ...and refuses what is not its to answer.
    assert_eq!(
        dig(&t, "198.18.0.2", "www.example.org", "A", false),
        ("REFUSED".to_owned(), vec![])
    );
    let pinned = format!("{NAME}:8080:{addr}");
    let url = format!("http://{NAME}:8080/file");
    assert_eq!(
        curl(&t, &["--resolve", &pinned, &url]).as_deref(),
        Some("served by name\n"),
        "tinyproxy got CONNECT {NAME}:8080 and resolved it"
    );
}
