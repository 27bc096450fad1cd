//! ztun through real SOCKS5 servers nobody here wrote (Debian's microsocks
//! and dante-server), with real clients: curl, iperf3, dig against dnsmasq,
//! and a UDP echo. The SOCKS server, DNS server and destinations live in
//! the server namespace; the helper and the clients in the client
//! namespace. Issue 6; DESIGN.md S5, S6.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::time::{Duration, Instant};

use ztun_tests::servers::{self, Capture, LINK_CHATTER};
use ztun_tests::{can_run, eventually, Process, Topology, BYPASS, CLIENT_PHYSICAL, SERVER};

/// Where the SOCKS servers listen: the server's side of the veth.
const PROXY: &str = "198.51.100.2";
const PROXY6: &str = "2001:db8:c::2";
const SERVER6: &str = "2001:db8:5::5";
const NAME: &str = "www.example.test";

/// 50 MiB that no compression or dedup could fake.
fn payload() -> Vec<u8> {
    (0..50 * 1024 * 1024_u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[1])
        .collect()
}

/// python's http.server on `addr`:8080 serving `t.dir`, logging to
/// `http-<addr>.log`; waits until it answers.
fn http_server(t: &Topology, addr: &str) -> Process {
    let log = t.dir.join(format!("http-{addr}.log"));
    let dir = t.dir.to_str().unwrap();
    let p = t
        .server
        .spawn(
            "sh",
            &[
                "-c",
                &format!(
                    "exec python3 -m http.server --bind {addr} 8080 --directory {dir} 2>{}",
                    log.display()
                ),
            ],
        )
        .unwrap();
    let url = format!("http://{}:8080/", bracket(addr));
    assert!(
        eventually(Duration::from_secs(10), || t
            .server
            .exec_unchecked("curl", &["-s", "-o", "/dev/null", &url])
            .is_ok_and(|o| o.status.success())),
        "http server on {addr} answers"
    );
    p
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_owned()
    }
}

/// Fetches `file` from `addr`:8080 from the client and compares it with
/// what was served.
fn fetch_intact(t: &Topology, addr: &str, file: &str, want: &[u8]) {
    let got = t.dir.join(format!("got-{file}"));
    let url = format!("http://{}:8080/{file}", bracket(addr));
    let started = Instant::now();
    t.client
        .exec(
            "curl",
            &["-sS", "--max-time", "60", "-o", got.to_str().unwrap(), &url],
        )
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let got = std::fs::read(&got).unwrap();
    assert!(got == want, "{url}: {} bytes arrived intact", want.len());
    #[allow(clippy::cast_precision_loss)]
    let mbit = want.len() as f64 * 8.0 / secs / 1e6;
    eprintln!(
        "{url}: {} MiB in {secs:.2} s ({mbit:.0} Mbit/s)",
        want.len() >> 20
    );
}

/// The `upstream_state` dictionary of tunnel `name`, from `status --json`.
fn upstream_state(t: &Topology, name: &str) -> serde_json::Value {
    let json = t.ztunctl_ok(&["status", name, "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["tunnels"][0]["upstream_state"].clone()
}

/// One UDP request/response from the client: sends `msg` to
/// `addr`:`port`, returns the answer (empty on timeout).
fn udp_roundtrip(t: &Topology, addr: &str, port: u16, msg: &str) -> String {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(1.0)\n\
         for _ in range(5):\n\
         \x20   s.sendto(b'{msg}', ('{addr}', {port}))\n\
         \x20   try:\n\
         \x20       print(s.recv(2048).decode()); break\n\
         \x20   except socket.timeout:\n\
         \x20       pass\n"
    );
    let out = t
        .client
        .exec_unchecked("python3", &["-c", &script])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// iperf3 for 2 s each way; returns Mbit/s (upload, download).
fn iperf_both_ways(t: &Topology, server: &str) -> (f64, f64) {
    let mut rates = [0.0; 2];
    for (i, reverse) in [false, true].into_iter().enumerate() {
        let mut args = vec!["-c", server, "-t", "2", "-J"];
        if reverse {
            args.push("-R");
        }
        let mut received = 0.0;
        let ran = eventually(Duration::from_secs(10), || {
            let out = t.client.exec_unchecked("iperf3", &args).unwrap();
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            received = report["end"]["sum_received"]["bytes"]
                .as_f64()
                .unwrap_or(0.0);
            out.status.success() && received > 0.0
        });
        assert!(
            ran,
            "iperf3 {} through the tunnel and the SOCKS server",
            ["upload", "download"][i]
        );
        assert!(received >= 1e6, "iperf3: only {received} bytes in 2 s");
        rates[i] = received * 8.0 / 2.0 / 1e6;
    }
    eprintln!(
        "iperf3 via SOCKS5: up {:.0} Mbit/s, down {:.0} Mbit/s",
        rates[0], rates[1]
    );
    (rates[0], rates[1])
}

#[test]
fn microsocks_carries_tcp_with_and_without_auth_and_wrong_credentials_say_so() {
    if !can_run("microsocks_carries_tcp_with_and_without_auth_and_wrong_credentials_say_so") {
        return;
    }
    let t = Topology::new("msocks").unwrap();
    let data = payload();
    std::fs::write(t.dir.join("file"), &data).unwrap();
    let _http = http_server(&t, SERVER);
    let _open = servers::microsocks(&t.server, PROXY, 1080, None).unwrap();
    let _authed = servers::microsocks(&t.server, PROXY, 1081, Some(("ann", "pa55:w@rd"))).unwrap();
    let _helper = t.start_helper().unwrap();

    t.ztunctl_ok(&[
        "up",
        "--name",
        "open",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        "socks5://198.51.100.2:1080",
    ])
    .unwrap();
    fetch_intact(&t, SERVER, "file", &data);
    let log = std::fs::read_to_string(t.dir.join(format!("http-{SERVER}.log"))).unwrap();
    assert!(
        !log.contains(CLIENT_PHYSICAL),
        "the server saw the SOCKS server, not the client: {log}"
    );
    t.ztunctl_ok(&["down", "open"]).unwrap();

    // The password needs percent-encoding in the URL: ':' and '@'.
    t.ztunctl_ok(&[
        "up",
        "--name",
        "authed",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        "socks5://ann:pa55%3Aw%40rd@198.51.100.2:1081",
    ])
    .unwrap();
    fetch_intact(&t, SERVER, "file", &data);
    let status = t.ztunctl_ok(&["status", "authed"]).unwrap();
    assert!(
        status.contains("socks5://ann:***@198.51.100.2:1081"),
        "{status}"
    );
    assert!(
        !status.contains("pa55"),
        "status never shows the password: {status}"
    );
    t.ztunctl_ok(&["down", "authed"]).unwrap();

    t.ztunctl_ok(&[
        "up",
        "--name",
        "wrong",
        "--route",
        "203.0.113.128/25",
        "--upstream",
        "socks5://ann:nope@198.51.100.2:1081",
    ])
    .unwrap();
    let state = upstream_state(&t, "wrong");
    assert_eq!(state["reachable"], 0, "{state}");
    assert!(
        state["last_error"]
            .as_str()
            .unwrap()
            .contains("rejected the user name and password"),
        "{state}"
    );
    let doctor = t.ztunctl(&["doctor", "wrong"]).unwrap();
    assert_eq!(
        doctor.status.code(),
        Some(1),
        "doctor fails on a bad upstream"
    );
    let doctor = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        doctor.contains("✗ wrong: upstream socks5://ann:***@198.51.100.2:1081 is unreachable: 198.51.100.2:1081: the SOCKS5 server rejected the user name and password"),
        "{doctor}"
    );
    // A flow through it is refused at once, not left hanging.
    let started = Instant::now();
    let out = t
        .client
        .exec_unchecked(
            "curl",
            &["-sS", "--max-time", "5", &format!("http://{BYPASS}:8080/")],
        )
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused in {:?}",
        started.elapsed()
    );
    t.ztunctl_ok(&["down", "wrong"]).unwrap();
}

#[test]
fn dante_carries_tcp_both_ways_udp_and_dns_over_ipv4_and_ipv6() {
    if !can_run("dante_carries_tcp_both_ways_udp_and_dns_over_ipv4_and_ipv6") {
        return;
    }
    let t = Topology::new("dante").unwrap();
    let data = payload();
    std::fs::write(t.dir.join("file"), &data).unwrap();
    let _http = http_server(&t, SERVER);
    let _http6 = http_server(&t, SERVER6);
    let _iperf = t.server.spawn("iperf3", &["-s", "-B", SERVER]).unwrap();
    let _echo = servers::udp_echo(&t.server, SERVER, 7000).unwrap();
    let _dns = servers::dns(
        &t.server,
        &[SERVER, SERVER6],
        &[(NAME, BYPASS), (NAME, SERVER6)],
    )
    .unwrap();
    let _dante = servers::dante(
        &t.server,
        &t.dir.join("dante"),
        &[PROXY, PROXY6],
        1080,
        Some(("zt", "s3cret")),
    )
    .unwrap();
    let _helper = t.start_helper().unwrap();

    t.ztunctl_ok(&[
        "up",
        "--name",
        "d",
        "--route",
        "203.0.113.0/25",
        "--ipv6",
        "2001:db8:ff::1/64",
        "--route",
        "2001:db8:5::/64",
        "--upstream",
        "socks5://zt:s3cret@198.51.100.2:1080",
        "--icmp",
        "reply",
    ])
    .unwrap();
    fetch_intact(&t, SERVER, "file", &data);
    fetch_intact(&t, SERVER6, "file", &data);
    iperf_both_ways(&t, SERVER);
    assert_eq!(
        udp_roundtrip(&t, SERVER, 7000, "hello over udp associate"),
        "hello over udp associate"
    );
    let mut over_udp = servers::dig(&t.client, SERVER, NAME, false).unwrap();
    over_udp.sort();
    assert_eq!(
        over_udp,
        [
            BYPASS.parse::<std::net::IpAddr>().unwrap(),
            SERVER6.parse().unwrap()
        ]
    );
    assert_eq!(
        servers::dig(&t.client, SERVER, NAME, true).unwrap().len(),
        2,
        "DNS over TCP (CONNECT)"
    );
    assert_eq!(
        servers::dig(&t.client, SERVER6, NAME, false).unwrap().len(),
        2,
        "DNS to an IPv6 resolver"
    );
    let state = upstream_state(&t, "d");
    assert_eq!(state["reachable"], 1, "{state}");
    assert_eq!(state["flows_to_upstream"], 0, "{state}");

    // Through the IPv6 address of the same server.
    t.ztunctl_ok(&["down", "d"]).unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "d6",
        "--route",
        "203.0.113.0/25",
        "--ipv6",
        "2001:db8:ff::1/64",
        "--route",
        "2001:db8:5::/64",
        "--upstream",
        "socks5://zt:s3cret@[2001:db8:c::2]:1080",
        "--icmp",
        "reply",
    ])
    .unwrap();
    fetch_intact(&t, SERVER6, "file", &data);
    assert_eq!(
        udp_roundtrip(&t, SERVER, 7000, "v4 via a v6 proxy"),
        "v4 via a v6 proxy"
    );
    assert_eq!(
        servers::dig(&t.client, SERVER6, NAME, false).unwrap().len(),
        2
    );
    t.ztunctl_ok(&["down", "d6"]).unwrap();
}

#[test]
fn dns_over_tcp_answers_udp_queries_through_a_connect_only_server() {
    if !can_run("dns_over_tcp_answers_udp_queries_through_a_connect_only_server") {
        return;
    }
    let t = Topology::new("dnstcp").unwrap();
    let log = t.dir.join("dns.log");
    let _dns = servers::dns_with_log(&t.server, &[SERVER], &[(NAME, BYPASS)], &log).unwrap();
    // microsocks has no UDP ASSOCIATE: without --dns-over-tcp, no answer.
    let _socks = servers::microsocks(&t.server, PROXY, 1080, None).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "plain",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        "socks5://198.51.100.2:1080",
    ])
    .unwrap();
    let started = Instant::now();
    assert!(
        servers::dig(&t.client, SERVER, NAME, false).is_err(),
        "a UDP query needs UDP ASSOCIATE, which microsocks lacks"
    );
    // Told at once by an ICMP unreachable, not left to dig's 2 s timeout.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "dig failed after {:?}",
        started.elapsed()
    );
    t.ztunctl_ok(&["down", "plain"]).unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "tcpdns",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        "socks5://198.51.100.2:1080",
        "--dns-over-tcp",
    ])
    .unwrap();
    for _ in 0..3 {
        assert_eq!(
            servers::dig(&t.client, SERVER, NAME, false).unwrap(),
            [BYPASS.parse::<std::net::IpAddr>().unwrap()]
        );
    }
    let status = t.ztunctl_ok(&["status", "tcpdns"]).unwrap();
    assert!(status.contains("dns over tcp"), "{status}");
}

#[test]
fn full_mode_through_dante_leaks_nothing_and_never_loops() {
    if !can_run("full_mode_through_dante_leaks_nothing_and_never_loops") {
        return;
    }
    let t = Topology::new("fullsocks").unwrap();
    let data: Vec<u8> = payload().into_iter().take(8 << 20).collect();
    std::fs::write(t.dir.join("file"), &data).unwrap();
    let _http = http_server(&t, SERVER);
    let _echo = servers::udp_echo(&t.server, SERVER, 7000).unwrap();
    let _dns = servers::dns(&t.server, &[SERVER], &[(NAME, BYPASS)]).unwrap();
    let _dante = servers::dante(&t.server, &t.dir.join("dante"), &[PROXY], 1080, None).unwrap();
    let _helper = t.start_helper().unwrap();
    let capture = Capture::start(&t.client, "veth-c", &t.dir.join("veth-c.pcap")).unwrap();
    // ICMP cannot go through SOCKS5: `reply` keeps pings inside, where
    // `forward` would send them straight out.
    t.ztunctl_ok(&[
        "up",
        "--name",
        "all",
        "--full",
        "--upstream",
        "socks5://198.51.100.2:1080",
        "--icmp",
        "reply",
    ])
    .unwrap();
    let routes = t.client_routes().unwrap();
    assert!(routes.contains("0.0.0.0/1 dev ztun0"), "{routes}");
    assert!(
        routes.contains("198.51.100.2 via 198.51.100.2 dev veth-c"),
        "{routes}"
    );
    fetch_intact(&t, SERVER, "file", &data);
    assert_eq!(
        udp_roundtrip(&t, SERVER, 7000, "full mode udp"),
        "full mode udp"
    );
    assert_eq!(
        servers::dig(&t.client, SERVER, NAME, false).unwrap().len(),
        1
    );
    assert!(t
        .client
        .exec_unchecked("ping", &["-c", "2", "-i", "0.2", "-W", "1", BYPASS])
        .unwrap()
        .status
        .success());
    let state = upstream_state(&t, "all");
    assert_eq!(
        state["flows_to_upstream"], 0,
        "the helper's own connections never looped: {state}"
    );
    t.ztunctl_ok(&["down", "all"]).unwrap();
    let pcap = capture.path().to_owned();
    let all = capture.stop().unwrap();
    let leaked =
        servers::read_pcap(&pcap, &format!("not host {PROXY} and not ({LINK_CHATTER})")).unwrap();
    assert!(
        leaked.is_empty(),
        "only SOCKS traffic left the client's veth: {leaked:#?}"
    );
    let to_proxy = servers::read_pcap(&pcap, &format!("host {PROXY} and tcp port 1080")).unwrap();
    assert!(
        to_proxy.len() >= 100,
        "{} of {} packets went to the SOCKS server",
        to_proxy.len(),
        all.len()
    );
    let udp_relay = servers::read_pcap(&pcap, &format!("host {PROXY} and udp")).unwrap();
    assert!(!udp_relay.is_empty(), "UDP went through dante's UDP relay");
}

#[test]
fn killing_the_socks_server_resets_flows_refuses_new_ones_fast_and_recovers() {
    if !can_run("killing_the_socks_server_resets_flows_refuses_new_ones_fast_and_recovers") {
        return;
    }
    let t = Topology::new("sockskill").unwrap();
    let data = payload();
    std::fs::write(t.dir.join("file"), &data).unwrap();
    let _http = http_server(&t, SERVER);
    let socks = servers::microsocks(&t.server, PROXY, 1080, None).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "k",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        "socks5://198.51.100.2:1080",
    ])
    .unwrap();
    let url = format!("http://{SERVER}:8080/file");
    let mut slow = t
        .client
        .spawn(
            "curl",
            &[
                "-sS",
                "--limit-rate",
                "2M",
                "-o",
                "/dev/null",
                "--max-time",
                "30",
                &url,
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    drop(socks);
    let killed = Instant::now();
    let status = slow
        .wait_for_exit(Duration::from_secs(10))
        .unwrap()
        .expect("curl ended");
    assert!(!status.success(), "the transfer was cut, not completed");
    eprintln!(
        "mid-transfer cut seen by the client after {:?}",
        killed.elapsed()
    );

    // New flows: refused at once while the server is away.
    for _ in 0..3 {
        let started = Instant::now();
        let out = t
            .client
            .exec_unchecked("curl", &["-sS", "--max-time", "5", "-o", "/dev/null", &url])
            .unwrap();
        let took = started.elapsed();
        assert!(!out.status.success());
        assert!(
            took < Duration::from_millis(100) + Duration::from_millis(50),
            "refused in {took:?}"
        );
    }
    let state = upstream_state(&t, "k");
    assert_eq!(state["reachable"], 0, "{state}");
    t.ztunctl_ok(&["status"]).unwrap();

    let _socks = servers::microsocks(&t.server, PROXY, 1080, None).unwrap();
    let back = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || upstream_state(&t, "k")
            ["reachable"]
            == 1),
        "the helper noticed the server is back"
    );
    eprintln!(
        "upstream reachable again {:?} after restart",
        back.elapsed()
    );
    fetch_intact(&t, SERVER, "file", &data);
    assert_eq!(upstream_state(&t, "k")["reconnects"], 1);
}

/// Linux's EHOSTUNREACH.
fn libc_ehostunreach() -> i32 {
    113
}

/// The open flows of tunnel `name` from `flows --json`.
fn flows(t: &Topology, name: &str) -> Vec<serde_json::Value> {
    let json = t.ztunctl_ok(&["flows", name, "--json"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["flows"].as_array().cloned().unwrap_or_default()
}

#[test]
fn tinyproxy_carries_tcp_with_credentials_answers_dns_over_tcp_and_refuses_other_udp() {
    if !can_run("tinyproxy_carries_tcp_with_credentials_answers_dns_over_tcp_and_refuses_other_udp")
    {
        return;
    }
    let t = Topology::new("httpproxy").unwrap();
    let data = payload();
    std::fs::write(t.dir.join("file"), &data).unwrap();
    let _http = http_server(&t, SERVER);
    let _dns = servers::dns(&t.server, &[SERVER], &[(NAME, BYPASS)]).unwrap();
    let _udp = servers::udp_echo(&t.server, SERVER, 5300).unwrap();
    let _proxy =
        servers::tinyproxy(&t.server, &t.dir, PROXY, 3128, Some(("alice", "s3cret"))).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "h",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        "http://alice:s3cret@198.51.100.2:3128",
    ])
    .unwrap();
    fetch_intact(&t, SERVER, "file", &data);
    let log = std::fs::read_to_string(t.dir.join("tinyproxy-3128.log")).unwrap();
    assert!(
        log.contains(&format!("CONNECT {SERVER}:8080")) || log.contains("Established connection"),
        "the fetch went through tinyproxy: {log}"
    );
    let state = upstream_state(&t, "h");
    assert_eq!(state["reachable"], 1, "{state}");
    // DNS goes as DNS over TCP through CONNECT without being asked: an
    // HTTP proxy has no other way to carry it.
    assert_eq!(
        servers::dig(&t.client, SERVER, NAME, false).unwrap(),
        [BYPASS.parse::<std::net::IpAddr>().unwrap()]
    );
    // Other UDP is refused at once (ICMP administratively prohibited,
    // which Linux reports to a connected socket as EHOSTUNREACH), not
    // left to time out.
    let refused = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.connect(('{SERVER}', 5300))\ns.settimeout(3)\nt = time.monotonic()\ns.send(b'quic?')\n\
         try:\n    s.recv(100)\n    print('answered')\nexcept OSError as e:\n\
         \x20   print(e.errno, round(time.monotonic() - t, 3))\n"
    );
    let out = t.client.exec("python3", &["-c", &refused]).unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let (errno, secs) = said.trim().split_once(' ').unwrap_or(("", ""));
    assert_eq!(errno, libc_ehostunreach().to_string(), "{said}");
    assert!(
        secs.parse::<f64>().unwrap() < 0.5,
        "refused at once: {said}"
    );
    let state = upstream_state(&t, "h");
    assert!(
        state["refused"]["udp_not_supported"].as_u64() >= Some(1),
        "{state}"
    );
    let status = t.ztunctl_ok(&["status", "h"]).unwrap();
    assert!(
        status.contains("http://alice:***@198.51.100.2:3128"),
        "{status}"
    );
    assert!(!status.contains("s3cret"), "{status}");

    // A wrong password: the tunnel comes up degraded and says what to fix.
    t.ztunctl_ok(&["down", "h"]).unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "bad",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        "http://alice:wrong@198.51.100.2:3128",
    ])
    .unwrap();
    let state = upstream_state(&t, "bad");
    assert_eq!(state["reachable"], 0, "{state}");
    assert!(
        state["last_error"].as_str().unwrap().ends_with(
            "the HTTP proxy rejected the user name and password; check them in the upstream URL"
        ),
        "{state}"
    );
    let out = t
        .client
        .exec_unchecked(
            "curl",
            &[
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                &format!("http://{SERVER}:8080/"),
            ],
        )
        .unwrap();
    assert!(
        !out.status.success(),
        "no flow passes with a refused password"
    );
}

#[test]
fn failover_carries_new_flows_while_the_first_proxy_is_down_and_returns_when_it_is_back() {
    if !can_run(
        "failover_carries_new_flows_while_the_first_proxy_is_down_and_returns_when_it_is_back",
    ) {
        return;
    }
    let t = Topology::new("failover").unwrap();
    let data = payload();
    std::fs::write(t.dir.join("file"), &data).unwrap();
    let _http = http_server(&t, SERVER);
    let socks = servers::microsocks(&t.server, PROXY, 1080, None).unwrap();
    let _proxy = servers::tinyproxy(&t.server, &t.dir, PROXY, 3128, None).unwrap();
    let _helper = t.start_helper().unwrap();
    let (first, second) = ("socks5://198.51.100.2:1080", "http://198.51.100.2:3128");
    t.ztunctl_ok(&[
        "up",
        "--name",
        "f",
        "--route",
        "203.0.113.0/25",
        "--upstream",
        first,
        "--upstream",
        second,
    ])
    .unwrap();
    let active = |t: &Topology| {
        let json = t.ztunctl_ok(&["status", "f", "--json"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["tunnels"][0]["active_upstream"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(active(&t), first);
    // A slow download shows in `flows` with the proxy that carries it.
    let url = format!("http://{SERVER}:8080/file");
    let slow = |t: &Topology| {
        t.client
            .spawn(
                "curl",
                &[
                    "-sS",
                    "--limit-rate",
                    "1M",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "20",
                    &url,
                ],
            )
            .unwrap()
    };
    let carried_by = |t: &Topology| {
        let mut seen = String::new();
        eventually(Duration::from_secs(5), || {
            seen = flows(t, "f")
                .iter()
                .find(|f| f["destination"] == format!("{SERVER}:8080"))
                .map(|f| f["upstream"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            !seen.is_empty()
        });
        seen
    };
    let download = slow(&t);
    assert_eq!(carried_by(&t), first);
    drop(download);

    // The first proxy dies. The very next flow finds it gone and is
    // carried by the failover instead of being reset; so are the rest.
    drop(socks);
    let started = Instant::now();
    fetch_intact(&t, SERVER, "file", &data);
    eprintln!(
        "first fetch after the SOCKS server died: {:?}",
        started.elapsed()
    );
    assert_eq!(active(&t), second);
    let download = slow(&t);
    assert_eq!(carried_by(&t), second);
    drop(download);
    let status = t.ztunctl_ok(&["status", "f"]).unwrap();
    assert!(status.contains("degraded"), "{status}");
    assert!(status.contains(&format!("failover  {second}")), "{status}");
    assert!(status.contains("<- new flows"), "{status}");

    // The first comes back: the prober notices, and new flows return.
    let _socks = servers::microsocks(&t.server, PROXY, 1080, None).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || active(&t) == first),
        "new flows went back to the first proxy"
    );
    let download = slow(&t);
    assert_eq!(carried_by(&t), first);
    drop(download);
    fetch_intact(&t, SERVER, "file", &data);
    assert_eq!(upstream_state(&t, "f")["reconnects"], 1);
}
