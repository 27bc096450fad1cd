//! ztun end to end on Linux: the real ztun-helper in a client namespace,
//! driven by the real ztunctl, with real clients (ping, curl, socat) and
//! servers (python's http.server, socat) in a server namespace. Each test
//! builds its own namespaces and takes everything down afterwards.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::io::{Read, Write};
use std::time::Duration;

use ztun_tests::servers;
use ztun_tests::{can_run, eventually, Topology, BYPASS, CLIENT_PHYSICAL, SERVER};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(t: &Topology, dst: &str, count: &str) -> String {
    let out = t
        .client
        .exec_unchecked("ping", &["-c", count, "-i", "0.2", "-W", "1", dst])
        .unwrap();
    stdout(&out)
}

/// `ztunctl status --json` of one tunnel, as JSON.
fn status_json(t: &Topology, name: &str) -> String {
    t.ztunctl_ok(&["status", name, "--json"]).unwrap()
}

fn packets_in(t: &Topology, name: &str) -> u64 {
    counter(t, name, "packets_in")
}

/// One counter of a tunnel's `status --json`.
fn counter(t: &Topology, name: &str, key: &str) -> u64 {
    let json = status_json(t, name);
    let key = format!("\"{key}\": ");
    let at = json.find(&key).unwrap() + key.len();
    json[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn forward_mode_pings_the_real_host_and_reply_mode_answers_itself() {
    if !can_run("forward_mode_pings_the_real_host_and_reply_mode_answers_itself") {
        return;
    }
    let t = Topology::new("ping").unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "fwd",
        "--route",
        "203.0.113.0/25",
        "--icmp",
        "forward",
    ])
    .unwrap();
    let before = t.server_echoes().unwrap();
    assert!(ping(&t, SERVER, "3").contains("3 received"));
    assert_eq!(
        t.server_echoes().unwrap() - before,
        3,
        "the real host answered each ping"
    );
    // Nobody holds 203.0.113.77: a real echo goes unanswered.
    assert!(
        ping(&t, "203.0.113.77", "2").contains("0 received"),
        "forward mode must not invent replies"
    );
    t.ztunctl_ok(&["down", "fwd"]).unwrap();

    t.ztunctl_ok(&[
        "up",
        "--name",
        "rep",
        "--route",
        "203.0.113.0/25",
        "--icmp",
        "reply",
    ])
    .unwrap();
    let before = t.server_echoes().unwrap();
    assert!(
        ping(&t, "203.0.113.77", "2").contains("2 received"),
        "reply mode answers from the helper"
    );
    assert_eq!(
        t.server_echoes().unwrap(),
        before,
        "no echo left the client"
    );
    t.ztunctl_ok(&["down", "rep"]).unwrap();
}

#[test]
fn a_file_fetched_through_the_tunnel_arrives_intact_from_the_helpers_address() {
    if !can_run("a_file_fetched_through_the_tunnel_arrives_intact_from_the_helpers_address") {
        return;
    }
    let t = Topology::new("curl").unwrap();
    let data: Vec<u8> = (0..50 * 1024 * 1024_u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[1])
        .collect();
    std::fs::write(t.dir.join("file"), &data).unwrap();
    let log = t.dir.join("http.log");
    let _http = servers::http(&t.server, &t.dir, SERVER, 8080).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "web", "--route", "203.0.113.0/25"])
        .unwrap();
    let url = format!("http://{SERVER}:8080/file");
    assert!(eventually(Duration::from_secs(10), || {
        t.server
            .exec_unchecked(
                "curl",
                &["-s", "-o", "/dev/null", &format!("http://{SERVER}:8080/")],
            )
            .is_ok_and(|o| o.status.success())
    }));
    let got = t.dir.join("got");
    t.client
        .exec(
            "curl",
            &["-sS", "--max-time", "60", "-o", got.to_str().unwrap(), &url],
        )
        .unwrap();
    assert!(
        std::fs::read(&got).unwrap() == data,
        "50 MiB arrived intact"
    );
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(
        seen.contains(&format!("{CLIENT_PHYSICAL} - - ")),
        "server saw the helper's own address: {seen}"
    );
    assert!(!seen.contains("198.18.0.1"), "never the tunnel's address");
}

#[test]
fn a_udp_request_gets_its_response_through_the_tunnel() {
    if !can_run("a_udp_request_gets_its_response_through_the_tunnel") {
        return;
    }
    let t = Topology::new("udp").unwrap();
    // Answers each datagram at once, upper-cased, so the reply is provably the server's.
    let server = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{SERVER}', 5300))\n\
         while True:\n    d, a = s.recvfrom(65535)\n    s.sendto(d.upper(), a)\n"
    );
    let _echo = t.server.spawn("python3", &["-c", &server]).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || servers::listening(
            &t.server,
            servers::Proto::Udp,
            SERVER,
            5300
        )
        .unwrap_or(false)),
        "the UDP server is bound before the first datagram"
    );
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "dns", "--route", "203.0.113.0/25"])
        .unwrap();
    let client = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\n\
         s.sendto(b'ztun-question', ('{SERVER}', 5300))\nprint(s.recvfrom(100)[0].decode())\n"
    );
    let reply = t.client.exec("python3", &["-c", &client]).unwrap();
    assert_eq!(stdout(&reply), "ZTUN-QUESTION\n");
    // Counted at once, not a publish interval later: one mapping, and the
    // question and its answer, 13 bytes of payload behind 28 of IPv4 and
    // UDP headers each way.
    assert_eq!(counter(&t, "dns", "flows_total"), 1);
    assert_eq!(counter(&t, "dns", "bytes_out"), 41);
    assert!(counter(&t, "dns", "bytes_in") >= 41);
}

#[test]
fn a_udp_datagram_to_a_closed_port_is_refused_at_once_as_without_the_tunnel() {
    if !can_run("a_udp_datagram_to_a_closed_port_is_refused_at_once_as_without_the_tunnel") {
        return;
    }
    let t = Topology::new("udpclosed").unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "u", "--route", "203.0.113.0/25"])
        .unwrap();
    // Nothing listens on 7999: the server's kernel answers port
    // unreachable, the helper's socket reports it, and the client's socket
    // gets the same error from the engine's ICMP message.
    let client = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.connect(('{SERVER}', 7999))\ns.settimeout(3)\nt0 = time.monotonic()\n\
         for _ in range(3):\n    s.send(b'anyone?')\n    try:\n        s.recv(100)\n    except ConnectionRefusedError:\n\
         \x20       print('refused', round(time.monotonic() - t0, 3)); break\n    except socket.timeout:\n        print('timeout')\n"
    );
    let out = t.client.exec("python3", &["-c", &client]).unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("refused "), "{text}");
    let secs: f64 = text.trim().trim_start_matches("refused ").parse().unwrap();
    assert!(secs < 0.5, "refused after {secs} s");
}

#[test]
fn only_routed_destinations_enter_the_tunnel() {
    if !can_run("only_routed_destinations_enter_the_tunnel") {
        return;
    }
    let t = Topology::new("routed").unwrap();
    // The kernel greets a new link with IPv6 router solicitations and MLD
    // reports, which enter the tunnel at times of its choosing; this test
    // counts packets, so the client's new links get no IPv6 at all.
    t.client
        .exec(
            "sh",
            &[
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
            ],
        )
        .unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "part",
        "--route",
        "203.0.113.0/25",
        "--icmp",
        "reply",
    ])
    .unwrap();
    let before = packets_in(&t, "part");
    assert!(
        ping(&t, BYPASS, "3").contains("3 received"),
        "{BYPASS} is reachable directly"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        packets_in(&t, "part"),
        before,
        "{BYPASS} is outside 203.0.113.0/25 and must bypass the tunnel"
    );
    assert!(ping(&t, SERVER, "3").contains("3 received"));
    // Asked right after the last reply came back, with no waiting: status
    // counts every packet up to the moment it is asked.
    assert!(
        packets_in(&t, "part") >= before + 3,
        "the routed pings are counted at once"
    );
}

#[test]
fn a_killed_helper_is_swept_and_its_tunnel_restored_on_restart() {
    if !can_run("a_killed_helper_is_swept_and_its_tunnel_restored_on_restart") {
        return;
    }
    let t = Topology::new("crash").unwrap();
    let mut helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "keep", "--route", "203.0.113.0/25"])
        .unwrap();
    assert!(t
        .client_routes()
        .unwrap()
        .contains("203.0.113.0/25 dev ztun0"));
    let ledger = t.dir.join("state/routes.plist");
    assert!(std::fs::read_to_string(&ledger)
        .unwrap()
        .contains("203.0.113.0/25"));

    helper.signal(libc::SIGKILL).unwrap();
    helper
        .wait_for_exit(Duration::from_secs(5))
        .unwrap()
        .expect("helper died");
    std::fs::remove_file(t.socket()).ok();
    assert!(
        std::fs::read_to_string(&ledger)
            .unwrap()
            .contains("203.0.113.0/25"),
        "the ledger survived the kill"
    );

    let _helper = t.start_helper().unwrap();
    let status = t.ztunctl_ok(&["status"]).unwrap();
    assert!(
        status.starts_with("keep  up  ztun0"),
        "desired tunnel restored: {status}"
    );
    assert!(ping(&t, SERVER, "2").contains("2 received"));
    t.ztunctl_ok(&["down", "keep"]).unwrap();
    assert!(
        !t.client_routes().unwrap().contains("ztun"),
        "{}",
        t.client_routes().unwrap()
    );
    assert!(
        !std::fs::read_to_string(&ledger)
            .unwrap()
            .contains("203.0.113.0/25"),
        "ledger empty after down"
    );
}

#[test]
fn a_clean_stop_removes_every_route_and_a_restart_brings_the_tunnel_back() {
    if !can_run("a_clean_stop_removes_every_route_and_a_restart_brings_the_tunnel_back") {
        return;
    }
    let t = Topology::new("term").unwrap();
    let mut helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "keep", "--route", "203.0.113.0/25"])
        .unwrap();
    helper.signal(libc::SIGTERM).unwrap();
    let status = helper
        .wait_for_exit(Duration::from_secs(10))
        .unwrap()
        .expect("helper exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!t.client_routes().unwrap().contains("ztun"));
    assert!(!t.socket().exists(), "socket removed on exit");
    let _helper = t.start_helper().unwrap();
    assert!(t.ztunctl_ok(&["status"]).unwrap().starts_with("keep  up"));
}

#[test]
fn an_ordinary_user_may_read_status_but_not_change_tunnels() {
    if !can_run("an_ordinary_user_may_read_status_but_not_change_tunnels") {
        return;
    }
    let t = Topology::new("auth").unwrap();
    let _helper = t.start_helper().unwrap();
    std::fs::set_permissions(&t.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ctl = ztun_tests::workspace_bin("ztunctl");
    let sock = t.socket();
    let as_nobody = |args: &[&str]| {
        let mut all = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            ctl.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        t.client.exec_unchecked("setpriv", &all).unwrap()
    };
    let status = as_nobody(&["status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(stdout(&status), "no tunnels are up\n");
    let up = as_nobody(&["up", "--route", "203.0.113.0/25"]);
    assert_eq!(up.status.code(), Some(1));
    let err = String::from_utf8_lossy(&up.stderr);
    assert!(
        err.contains("up: user nobody is not root and not in group ztun")
            && err.contains("(unauthorized)"),
        "{err}"
    );
    assert!(!t.client_routes().unwrap().contains("ztun"));
}

#[test]
fn bad_input_gets_a_one_line_error_and_the_helper_keeps_serving() {
    if !can_run("bad_input_gets_a_one_line_error_and_the_helper_keeps_serving") {
        return;
    }
    let t = Topology::new("bad").unwrap();
    let _helper = t.start_helper().unwrap();
    for (args, expected) in [
        (vec!["up", "--route", "203.0.113.0/99"], "is not a CIDR"),
        (
            vec!["up", "--route", "203.0.113.0/24", "--mtu", "100"],
            "--mtu: 100 is below the minimum 576",
        ),
        (
            vec![
                "up",
                "--route",
                "203.0.113.0/24",
                "--upstream",
                "ftp://192.0.2.1:21",
            ],
            "scheme \"ftp\" is not supported",
        ),
    ] {
        let out = t.ztunctl(&args).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    // Garbage, a 2 GiB length, and half a frame, straight on the socket.
    let mut garbage = std::os::unix::net::UnixStream::connect(t.socket()).unwrap();
    garbage.write_all(b"\0\0\0\x04junk").unwrap();
    let mut reply = Vec::new();
    garbage.read_to_end(&mut reply).unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("not a binary plist"));
    let mut huge = std::os::unix::net::UnixStream::connect(t.socket()).unwrap();
    huge.write_all(&0x8000_0000_u32.to_be_bytes()).unwrap();
    let mut half = std::os::unix::net::UnixStream::connect(t.socket()).unwrap();
    half.write_all(&[0, 0, 1, 0, b'b']).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(t.ztunctl_ok(&["status"]).unwrap(), "no tunnels are up\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served at once despite the stalled client"
    );
}

/// Open descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Threads of a process (a leaked blocking task would hold one).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn up_down_cycles_leak_no_descriptor_route_or_interface() {
    if !can_run("up_down_cycles_leak_no_descriptor_route_or_interface") {
        return;
    }
    // 200 here; scripts/reliability.sh runs 1,000.
    let cycles: u32 = std::env::var("ZTUN_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200)
        .min(10_000);
    let t = Topology::new("cycles").unwrap();
    let helper = t.start_helper().unwrap();
    // One cycle first, so lazily opened resources (netlink, runtime) exist.
    t.ztunctl_ok(&["up", "--name", "c", "--route", "203.0.113.0/25"])
        .unwrap();
    t.ztunctl_ok(&["down", "c"]).unwrap();
    let (fds_before, routes_before) = (fds(helper.pid()), t.client_routes().unwrap());
    let threads_before = threads(helper.pid());
    let links_before = stdout(&t.client.ip(&["-br", "link"]).unwrap());
    let started = std::time::Instant::now();
    for _ in 0..cycles {
        t.ztunctl_ok(&[
            "up",
            "--name",
            "c",
            "--route",
            "203.0.113.0/25",
            "--icmp",
            "forward",
        ])
        .unwrap();
        t.ztunctl_ok(&["down", "c"]).unwrap();
    }
    eprintln!(
        "{cycles} up/down cycles in {:.1} s: fds {fds_before} -> {}, threads {threads_before} -> {}",
        started.elapsed().as_secs_f64(),
        fds(helper.pid()),
        threads(helper.pid())
    );
    // One fewer is possible: a descriptor of the warm-up cycle that was
    // still closing when counted. Growth is the leak.
    let fds_after = fds(helper.pid());
    assert!(
        fds_after <= fds_before,
        "descriptors {fds_before} -> {fds_after}"
    );
    assert_eq!(threads(helper.pid()), threads_before, "threads");
    assert_eq!(t.client_routes().unwrap(), routes_before, "routes");
    assert_eq!(
        stdout(&t.client.ip(&["-br", "link"]).unwrap()),
        links_before,
        "interfaces"
    );
}

#[test]
fn ipv6_pings_and_tcp_go_through_an_ipv6_tunnel() {
    if !can_run("ipv6_pings_and_tcp_go_through_an_ipv6_tunnel") {
        return;
    }
    let t = Topology::new("v6").unwrap();
    let server = "import socket\ns = socket.socket(socket.AF_INET6)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('2001:db8:5::5', 7000))\ns.listen()\nwhile True:\n    c, a = s.accept()\n    c.sendall(a[0].encode())\n    c.close()\n";
    let _tcp = t.server.spawn("python3", &["-c", server]).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "six",
        "--ipv6",
        "2001:db8:ff::1/64",
        "--route",
        "2001:db8:5::/64",
    ])
    .unwrap();
    assert!(t
        .client_routes()
        .unwrap()
        .contains("2001:db8:5::/64 dev ztun0"));
    let before = t.server_echoes6().unwrap();
    let out = t
        .client
        .exec_unchecked(
            "ping",
            &["-6", "-c", "2", "-i", "0.2", "-W", "1", "2001:db8:5::5"],
        )
        .unwrap();
    assert!(stdout(&out).contains("2 received"), "{}", stdout(&out));
    assert_eq!(
        t.server_echoes6().unwrap() - before,
        2,
        "the real host answered"
    );
    let client = "import socket\ns = socket.create_connection(('2001:db8:5::5', 7000), timeout=5)\nprint(s.recv(100).decode())\n";
    assert!(
        eventually(Duration::from_secs(5), || {
            t.client
                .exec_unchecked("python3", &["-c", client])
                .is_ok_and(|o| stdout(&o) == "2001:db8:c::1\n")
        }),
        "the server saw the helper's own IPv6 address"
    );
}

#[test]
fn iperf3_runs_through_the_tunnel_in_both_directions() {
    if !can_run("iperf3_runs_through_the_tunnel_in_both_directions") {
        return;
    }
    let t = Topology::new("iperf").unwrap();
    let _server = t.server.spawn("iperf3", &["-s", "-B", SERVER]).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "bulk", "--route", "203.0.113.0/25"])
        .unwrap();
    for reverse in [false, true] {
        let mut args = vec!["-c", SERVER, "-t", "2", "-J"];
        if reverse {
            args.push("-R");
        }
        let mut received = 0.0;
        let ran = eventually(Duration::from_secs(5), || {
            let out = t.client.exec_unchecked("iperf3", &args).unwrap();
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            received = report["end"]["sum_received"]["bytes"]
                .as_f64()
                .unwrap_or(0.0);
            out.status.success() && received > 0.0
        });
        let direction = if reverse { "download" } else { "upload" };
        assert!(ran, "iperf3 {direction} through the tunnel");
        // Two seconds at even 4 Mbit/s; a working tunnel does hundreds.
        assert!(
            received >= 1e6,
            "iperf3 {direction}: only {received} bytes in 2 s"
        );
        eprintln!(
            "iperf3 {direction}: {:.0} Mbit/s",
            received * 8.0 / 2.0 / 1e6
        );
    }
}

#[test]
fn doctor_passes_a_healthy_tunnel_and_names_a_route_taken_over_by_another_interface() {
    if !can_run("doctor_passes_a_healthy_tunnel_and_names_a_route_taken_over_by_another_interface")
    {
        return;
    }
    let t = Topology::new("doctor").unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "doc", "--route", "203.0.113.0/25"])
        .unwrap();
    let healthy = t.ztunctl_ok(&["doctor"]).unwrap();
    assert!(
        healthy.contains("✓ doc: up on ztun0 (198.18.0.1/32 --> 198.18.0.2)"),
        "{healthy}"
    );
    assert!(
        healthy.contains("✓ doc: 203.0.113.0/25 -> ztun0"),
        "{healthy}"
    );
    for line in [
        "✓ doc: ztun0 has 198.18.0.1/32 with peer 198.18.0.2",
        "✓ route ledger: every route it lists belongs to a running tunnel",
    ] {
        assert!(healthy.contains(line), "{healthy}");
    }
    assert!(healthy.trim_end().ends_with("checks passed"), "{healthy}");

    // S3: the route is replaced by one through the physical interface. The
    // helper's monitor sees it, cannot take the prefix back (someone else
    // holds it) and doctor names the culprit and the fix.
    t.client
        .ip(&[
            "route",
            "replace",
            "203.0.113.0/25",
            "via",
            "198.51.100.2",
            "dev",
            "veth-c",
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let out = t.ztunctl(&["doctor", "doc"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let sick = stdout(&out);
    assert!(
        sick.contains("✗ doc: 203.0.113.0/25 -> veth-c via 198.51.100.2, expected ztun0"),
        "{sick}"
    );
    let fix = "remove the other route (ip route del 203.0.113.0/25 dev veth-c), then ztunctl route add doc 203.0.113.0/25";
    assert!(sick.contains(&format!("    fix: {fix}")), "{sick}");

    // Doing what the fix says heals it (the monitor re-installs on its own).
    t.client
        .ip(&["route", "del", "203.0.113.0/25", "dev", "veth-c"])
        .unwrap();
    t.ztunctl_ok(&["route", "add", "doc", "203.0.113.0/25"])
        .unwrap();
    assert!(t
        .ztunctl_ok(&["doctor", "doc"])
        .unwrap()
        .contains("✓ doc: 203.0.113.0/25 -> ztun0"));
}

#[test]
fn routes_can_be_added_and_removed_but_not_the_last_one() {
    if !can_run("routes_can_be_added_and_removed_but_not_the_last_one") {
        return;
    }
    let t = Topology::new("routes").unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "r",
        "--route",
        "203.0.113.0/25",
        "--icmp",
        "reply",
    ])
    .unwrap();
    assert!(ping(&t, BYPASS, "1").contains("1 received"));
    let before = packets_in(&t, "r");
    t.ztunctl_ok(&["route", "add", "r", "203.0.113.200"])
        .unwrap();
    assert_eq!(
        t.ztunctl_ok(&["route", "list", "r"]).unwrap(),
        "203.0.113.0/25 -> ztun0\n203.0.113.200/32 -> ztun0\n"
    );
    assert!(ping(&t, BYPASS, "2").contains("2 received"));
    assert!(
        eventually(Duration::from_secs(2), || packets_in(&t, "r") >= before + 2),
        "{BYPASS} now enters the tunnel"
    );
    t.ztunctl_ok(&["route", "remove", "r", "203.0.113.0/25"])
        .unwrap();
    assert!(!t.client_routes().unwrap().contains("203.0.113.0/25"));
    let last = t
        .ztunctl(&["route", "remove", "r", "203.0.113.200"])
        .unwrap();
    assert_eq!(last.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&last.stderr)
        .contains("would leave r with no routes; take it down instead"));
}

#[test]
fn a_route_deleted_behind_the_helpers_back_comes_back_by_itself() {
    if !can_run("a_route_deleted_behind_the_helpers_back_comes_back_by_itself") {
        return;
    }
    let t = Topology::new("monitor").unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "m", "--route", "203.0.113.0/25"])
        .unwrap();
    t.client.ip(&["route", "del", "203.0.113.0/25"]).unwrap();
    let started = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(2), || t
            .client_routes()
            .unwrap()
            .contains("203.0.113.0/25 dev ztun0")),
        "not re-installed within 2 s"
    );
    eprintln!("route re-installed after {:?}", started.elapsed());
    assert!(ping(&t, SERVER, "1").contains("1 received"));
}

#[test]
fn full_mode_without_ipv6_refuses_ipv6_at_once_instead_of_leaking_it() {
    if !can_run("full_mode_without_ipv6_refuses_ipv6_at_once_instead_of_leaking_it") {
        return;
    }
    let t = Topology::new("v6guard").unwrap();
    let server = "import socket\ns = socket.socket(socket.AF_INET6)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                  s.bind(('2001:db8:5::5', 7000))\ns.listen()\nwhile True:\n    c, a = s.accept()\n    c.sendall(b'direct')\n    c.close()\n";
    let _tcp = t.server.spawn("python3", &["-c", server]).unwrap();
    // What an application sees: the outcome of a TCP connect and a UDP
    // send/recv to the IPv6 server, with the time each took.
    let probe = "import socket, time\nt0 = time.monotonic()\n\
                 try:\n    s = socket.create_connection(('2001:db8:5::5', 7000), timeout=3); out = s.recv(10).decode()\n\
                 except OSError as e:\n    out = type(e).__name__\nprint(out, round(time.monotonic() - t0, 3))\n\
                 u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.settimeout(3); t0 = time.monotonic()\n\
                 try:\n    u.connect(('2001:db8:5::5', 53)); u.send(b'q'); u.recv(10); out = 'answered'\n\
                 except OSError as e:\n    out = type(e).__name__\nprint(out, round(time.monotonic() - t0, 3))\n";
    let run = |t: &Topology| {
        let out = stdout(&t.client.exec("python3", &["-c", probe]).unwrap());
        out.lines()
            .map(|l| {
                let (what, secs) = l.split_once(' ').unwrap();
                (what.to_owned(), secs.parse::<f64>().unwrap())
            })
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(5), || run(&t)[0].0 == "direct"),
        "IPv6 works without the tunnel"
    );
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "all", "--full", "--icmp", "reply"])
        .unwrap();
    let routes = t.client_routes().unwrap();
    assert!(
        routes.contains("::/1 dev ztun0") && routes.contains("8000::/1 dev ztun0"),
        "{routes}"
    );
    let status = t.ztunctl_ok(&["status", "all"]).unwrap();
    assert!(status.contains("full tunnel, IPv6 refused"), "{status}");
    let seen = run(&t);
    assert_eq!(
        seen[0].0, "ConnectionRefusedError",
        "TCP over IPv6 is refused: {seen:?}"
    );
    assert_eq!(
        seen[1].0, "PermissionError",
        "UDP over IPv6 is prohibited (EACCES): {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, secs)| *secs < 0.5),
        "refused at once: {seen:?}"
    );
    // Counters reach status within the data plane's 100 ms refresh.
    assert!(
        eventually(Duration::from_secs(2), || status_json(&t, "all")
            .contains("\"rejected\": ")),
        "counted as rejected: {}",
        status_json(&t, "all")
    );
    t.ztunctl_ok(&["down", "all"]).unwrap();

    // Opting out: IPv6 goes around the tunnel, as before.
    t.ztunctl_ok(&[
        "up",
        "--name",
        "all",
        "--full",
        "--icmp",
        "reply",
        "--allow-ipv6-leak",
    ])
    .unwrap();
    assert!(!t.client_routes().unwrap().contains("::/1 dev ztun0"));
    assert_eq!(run(&t)[0].0, "direct");
    t.ztunctl_ok(&["down", "all"]).unwrap();
}

#[test]
fn a_new_physical_link_and_gateway_are_followed_within_two_seconds() {
    if !can_run("a_new_physical_link_and_gateway_are_followed_within_two_seconds") {
        return;
    }
    let t = Topology::new("swap").unwrap();
    // A second way out, as a Wi-Fi to Ethernet switch would bring: client
    // veth-c2 198.18.200.1 <-> server veth-s2 198.18.200.2.
    t.client
        .ip(&[
            "link",
            "add",
            "veth-c2",
            "type",
            "veth",
            "peer",
            "name",
            "veth-s2",
            "netns",
            t.server.name(),
        ])
        .unwrap();
    t.client
        .ip(&["addr", "add", "198.18.200.1/24", "dev", "veth-c2"])
        .unwrap();
    t.client.ip(&["link", "set", "veth-c2", "up"]).unwrap();
    t.server
        .ip(&["addr", "add", "198.18.200.2/24", "dev", "veth-s2"])
        .unwrap();
    t.server.ip(&["link", "set", "veth-s2", "up"]).unwrap();
    std::fs::write(t.dir.join("file"), vec![7_u8; 64 * 1024]).unwrap();
    let log = t.dir.join("http.log");
    let _http = servers::http(&t.server, &t.dir, SERVER, 8080).unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "all",
        "--full",
        "--exclude",
        "203.0.113.200/32",
        "--icmp",
        "reply",
    ])
    .unwrap();
    let url = format!("http://{SERVER}:8080/file");
    let fetch = || {
        t.client
            .exec_unchecked("curl", &["-sf", "--max-time", "1", "-o", "/dev/null", &url])
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        eventually(Duration::from_secs(10), fetch),
        "works before the switch"
    );
    assert!(t
        .ztunctl_ok(&["status", "all"])
        .unwrap()
        .contains("  physical  veth-c via 198.51.100.2\n"));

    // The switch: the old link goes down, the default route moves.
    t.client
        .ip(&[
            "route",
            "replace",
            "default",
            "via",
            "198.18.200.2",
            "dev",
            "veth-c2",
        ])
        .unwrap();
    t.client.ip(&["link", "set", "veth-c", "down"]).unwrap();
    let switched = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(5), fetch),
        "new flows work after the switch"
    );
    let took = switched.elapsed();
    eprintln!("new flows worked {took:?} after the switch");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    let status = t.ztunctl_ok(&["status", "all"]).unwrap();
    assert!(
        status.contains("  physical  veth-c2 via 198.18.200.2\n"),
        "{status}"
    );
    let routes = t.client_routes().unwrap();
    assert!(
        routes.contains("203.0.113.200 via 198.18.200.2 dev veth-c2"),
        "the exclusion moved to the new gateway: {routes}"
    );
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(
        seen.lines()
            .last()
            .unwrap_or_default()
            .starts_with("198.18.200.1 "),
        "the helper's connection left through the new link: {seen}"
    );
}

#[test]
fn full_tunnel_mode_carries_everything_without_looping() {
    if !can_run("full_tunnel_mode_carries_everything_without_looping") {
        return;
    }
    let t = Topology::new("full").unwrap();
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "all", "--full", "--icmp", "forward"])
        .unwrap();
    let routes = t.client_routes().unwrap();
    assert!(
        routes.contains("0.0.0.0/1 dev ztun0") && routes.contains("128.0.0.0/1 dev ztun0"),
        "{routes}"
    );
    assert!(
        routes.contains("default via 198.51.100.2"),
        "the default route is never touched: {routes}"
    );
    // Both server addresses now go through the tunnel and still answer:
    // the helper's own sockets are pinned to veth-c, so they do not loop.
    let before = t.server_echoes().unwrap();
    for dst in [SERVER, BYPASS] {
        assert!(ping(&t, dst, "2").contains("2 received"), "{dst}");
    }
    assert_eq!(
        t.server_echoes().unwrap() - before,
        4,
        "real echoes reached the server"
    );
    assert!(eventually(Duration::from_secs(2), || packets_in(&t, "all") >= 4));
    t.ztunctl_ok(&["down", "all"]).unwrap();
    assert!(!t.client_routes().unwrap().contains("ztun0"));
}

#[test]
fn flows_lists_each_open_flow_with_its_bytes_and_forgets_it_once_closed() {
    if !can_run("flows_lists_each_open_flow_with_its_bytes_and_forgets_it_once_closed") {
        return;
    }
    let t = Topology::new("flows").unwrap();
    // Reads 1,000 bytes, answers 5,000, then holds the connection until the
    // client closes it.
    let server = format!(
        "import socket\nl = socket.socket()\nl.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('{SERVER}', 7000))\nl.listen()\nwhile True:\n    c, _ = l.accept()\n    n = 0\n\
         \x20   while n < 1000:\n        n += len(c.recv(1000 - n))\n    c.sendall(b'd' * 5000)\n\
         \x20   c.recv(1)\n    c.close()\n"
    );
    let _tcp = t.server.spawn("python3", &["-c", &server]).unwrap();
    let _udp = servers::udp_echo(&t.server, SERVER, 5300).unwrap();
    assert!(eventually(Duration::from_secs(10), || servers::listening(
        &t.server,
        servers::Proto::Tcp,
        SERVER,
        7000
    )
    .unwrap_or(false)));
    let _helper = t.start_helper().unwrap();
    t.ztunctl_ok(&["up", "--name", "live", "--route", "203.0.113.0/25"])
        .unwrap();
    assert_eq!(
        t.ztunctl_ok(&["flows"]).unwrap(),
        "no open flows\n",
        "nothing is open yet"
    );
    // One TCP flow that has moved 1,000 bytes up and 5,000 down and stays
    // open, and one UDP flow with a 300-byte question answered in kind.
    let done = t.dir.join("client-done");
    let client = format!(
        "import socket, os, time\nc = socket.create_connection(('{SERVER}', 7000))\nc.sendall(b'u' * 1000)\n\
         n = 0\nwhile n < 5000:\n    n += len(c.recv(5000 - n))\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.settimeout(3)\n\
         u.sendto(b'q' * 300, ('{SERVER}', 5300))\nassert len(u.recvfrom(1000)[0]) == 300\n\
         open('{}', 'w').close()\ntime.sleep(30)\n",
        done.display()
    );
    let holder = t.client.spawn("python3", &["-c", &client]).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || done.exists()),
        "the client finished its exchanges"
    );
    let out = t.ztunctl_ok(&["flows", "live", "--json"]).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    let flows = reply["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 2, "{out}");
    assert_eq!(reply["omitted"], 0);
    let find = |protocol: &str| {
        flows
            .iter()
            .find(|f| f["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no {protocol} flow in {out}"))
    };
    let tcp = find("tcp");
    assert_eq!(tcp["tunnel"], "live");
    assert_eq!(tcp["destination"], format!("{SERVER}:7000"));
    assert!(tcp["source"].as_str().unwrap().starts_with("198.18.0.1:"));
    assert_eq!(tcp["upstream"], "direct");
    assert_eq!(
        (tcp["bytes_up"].as_u64(), tcp["bytes_down"].as_u64()),
        (Some(1000), Some(5000))
    );
    let udp = find("udp");
    assert_eq!(udp["destination"], format!("{SERVER}:5300"));
    assert_eq!(
        (udp["bytes_up"].as_u64(), udp["bytes_down"].as_u64()),
        (Some(300), Some(300))
    );
    assert!(tcp["age_millis"].as_u64().unwrap() < 30_000);
    // The table a person reads says the same.
    let table = t.ztunctl_ok(&["flows"]).unwrap();
    assert!(table.starts_with("TUNNEL  PROTO  SOURCE"), "{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains(" tcp "))
        .unwrap()
        .split_whitespace()
        .collect();
    let want = [
        "live",
        "tcp",
        &format!("{SERVER}:7000"),
        "direct",
        "1.0",
        "kB",
        "5.0",
        "kB",
    ];
    assert_eq!([&row[..2], &row[3..9]].concat(), want, "{table}");
    assert!(table.ends_with("2 open flow(s)\n"), "{table}");
    let missing = t.ztunctl(&["flows", "nosuch"]).unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no tunnel named nosuch"));
    // The client goes away: its TCP flow closes and leaves the list.
    drop(holder);
    assert!(
        eventually(Duration::from_secs(10), || {
            !t.ztunctl_ok(&["flows"]).unwrap().contains("tcp")
        }),
        "the closed TCP flow left the list"
    );
}
