//! The third-party servers of `ztun_tests::servers`, checked on their own,
//! without ztun: real curl through real microsocks and dante (IPv4, IPv6,
//! username auth), a real SOCKS5 UDP ASSOCIATE through dante, dnsmasq over
//! UDP and TCP, and tcpdump captures with filters.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::net::IpAddr;
use std::process::Output;
use std::time::Duration;

use ztun_tests::servers::{
    dante, dig, dns_with_log, microsocks, packets_other_than, pids_in, read_pcap, udp_echo, Capture,
};
use ztun_tests::{can_run, eventually, Process, Topology, SERVER};

const SERVER6: &str = "2001:db8:5::5";
const PROXY: &str = "198.51.100.2";
const PROXY6: &str = "2001:db8:c::2";

/// A few MiB that no accident reproduces.
fn data() -> Vec<u8> {
    (0..4 * 1024 * 1024_u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_be_bytes()[1])
        .collect()
}

/// python's http.server on `addr`:8080 in the server namespace, serving
/// `t.dir/www/file`; its access log goes to `t.dir/http-<family>.log`.
fn http(t: &Topology, addr: &str, family: &str) -> Process {
    let www = t.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    if !www.join("file").exists() {
        std::fs::write(www.join("file"), data()).unwrap();
    }
    let log = t.dir.join(format!("http-{family}.log"));
    let p = t
        .server
        .spawn(
            "sh",
            &[
                "-c",
                &format!(
                    "exec python3 -m http.server --bind {addr} 8080 --directory {} 2>{}",
                    www.display(),
                    log.display()
                ),
            ],
        )
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            ztun_tests::servers::listening(&t.server, ztun_tests::servers::Proto::Tcp, addr, 8080)
                .unwrap()
        }),
        "http.server on {addr} did not start"
    );
    p
}

/// The client namespace reaches the server over IPv6 (neighbour discovery
/// needs about a second after the links come up).
fn wait_for_ipv6(t: &Topology) {
    assert!(
        eventually(Duration::from_secs(10), || t
            .client
            .exec_unchecked("ping", &["-6", "-c", "1", "-W", "1", SERVER6])
            .is_ok_and(|o| o.status.success())),
        "no IPv6 path from client to server"
    );
}

/// curl in the client namespace, `extra` arguments first, saving the body
/// to `t.dir/got`.
fn curl(t: &Topology, extra: &[&str], url: &str) -> (Output, Vec<u8>) {
    let got = t.dir.join("got");
    let _ = std::fs::remove_file(&got);
    let mut args = vec!["-sS", "--max-time", "30", "-o", got.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(url);
    let out = t.client.exec_unchecked("curl", &args).unwrap();
    (out, std::fs::read(&got).unwrap_or_default())
}

/// Fetches `url` through a SOCKS proxy and asserts the body is intact.
fn fetch_intact(t: &Topology, proxy_args: &[&str], url: &str) {
    let (out, body) = curl(t, proxy_args, url);
    assert!(
        out.status.success(),
        "curl {proxy_args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(body.len(), data().len(), "curl {proxy_args:?} {url}");
    assert!(body == data(), "curl {proxy_args:?} {url}: body differs");
}

/// A fetch the proxy must refuse: curl fails and nothing arrives.
fn fetch_refused(t: &Topology, proxy_args: &[&str], url: &str) -> String {
    let (out, body) = curl(t, proxy_args, url);
    assert!(
        !out.status.success(),
        "curl {proxy_args:?} {url} should fail"
    );
    assert!(
        body.is_empty(),
        "refused fetch delivered {} bytes",
        body.len()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether `pid` is a danted that has not exited (zombies do not count).
fn running_danted(pid: u32) -> bool {
    // "PID (COMM) STATE …"
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.split_once(" (danted) ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn hash_of(path: &str) -> (String, i64) {
    use std::os::unix::fs::MetadataExt;
    let out = ztun_tests::run("sha256sum", &[path]).unwrap();
    let mtime = std::fs::metadata(path).unwrap().mtime();
    (String::from_utf8_lossy(&out.stdout).into_owned(), mtime)
}

/// The root namespace's user database, to check it never changes.
fn user_db() -> Vec<(String, i64)> {
    ["/etc/passwd", "/etc/shadow", "/etc/group"]
        .map(hash_of)
        .into()
}

#[test]
fn microsocks_carries_curl_with_and_without_auth() {
    if !can_run("microsocks_carries_curl_with_and_without_auth") {
        return;
    }
    let t = Topology::new("microsocks").unwrap();
    let _http = http(&t, SERVER, "v4");
    let open = microsocks(&t.server, PROXY, 1080, None).unwrap();
    let _auth = microsocks(&t.server, PROXY, 1081, Some(("alice", "s3cret"))).unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", open.pid())).unwrap(),
        "microsocks\n",
        "the guard's pid is microsocks itself"
    );
    let url = format!("http://{SERVER}:8080/file");

    fetch_intact(&t, &["--socks5", "198.51.100.2:1080"], &url);
    fetch_intact(&t, &["--socks5-hostname", "198.51.100.2:1080"], &url);
    fetch_intact(
        &t,
        &["--socks5", "198.51.100.2:1081", "-U", "alice:s3cret"],
        &url,
    );
    fetch_intact(
        &t,
        &[
            "--socks5-hostname",
            "198.51.100.2:1081",
            "-U",
            "alice:s3cret",
        ],
        &url,
    );
    let err = fetch_refused(
        &t,
        &["--socks5", "198.51.100.2:1081", "-U", "alice:wrong"],
        &url,
    );
    assert!(err.contains("(97)"), "a SOCKS error: {err}");
    fetch_refused(&t, &["--socks5", "198.51.100.2:1081"], &url);

    // microsocks does not bind its outgoing sockets, so the kernel picks
    // the source: for a target on the server's own loopback, the target's
    // address itself. Never the client's.
    let log = std::fs::read_to_string(t.dir.join("http-v4.log")).unwrap();
    assert_eq!(
        log.matches(&format!("{SERVER} - - ")).count(),
        4,
        "four fetches, none from the client: {log}"
    );
    assert!(!log.contains("198.51.100.1 - - "), "never from the client");
}

#[test]
fn dante_carries_curl_over_ipv4_and_ipv6_with_username_auth() {
    if !can_run("dante_carries_curl_over_ipv4_and_ipv6_with_username_auth") {
        return;
    }
    let before = user_db();
    let t = Topology::new("dante").unwrap();
    let _http = http(&t, SERVER, "v4");
    let _http6 = http(&t, SERVER6, "v6");
    let dir = t.dir.join("dante");
    let socks = dante(
        &t.server,
        &dir,
        &[PROXY, PROXY6],
        1080,
        Some(("ztuntest", "s3cret")),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/comm", socks.pid())).unwrap(),
        "danted\n",
        "the guard's pid is danted itself, in the foreground"
    );
    wait_for_ipv6(&t);
    let url = format!("http://{SERVER}:8080/file");
    let url6 = format!("http://[{SERVER6}]:8080/file");
    let auth = ["-U", "ztuntest:s3cret"];

    fetch_intact(
        &t,
        &["--socks5", "198.51.100.2:1080", auth[0], auth[1]],
        &url,
    );
    fetch_intact(
        &t,
        &["--socks5-hostname", "198.51.100.2:1080", auth[0], auth[1]],
        &url,
    );
    fetch_intact(
        &t,
        &["--socks5", "[2001:db8:c::2]:1080", auth[0], auth[1]],
        &url6,
    );
    // Across families: an IPv6 client to an IPv4 target and back.
    fetch_intact(
        &t,
        &["--socks5", "[2001:db8:c::2]:1080", auth[0], auth[1]],
        &url,
    );
    fetch_intact(
        &t,
        &["--socks5", "198.51.100.2:1080", auth[0], auth[1]],
        &url6,
    );

    let err = fetch_refused(
        &t,
        &["--socks5", "198.51.100.2:1080", "-U", "ztuntest:wrong"],
        &url,
    );
    assert!(err.contains("(97)"), "a SOCKS error: {err}");
    let err = fetch_refused(&t, &["--socks5", "198.51.100.2:1080"], &url);
    assert!(err.contains("(97)"), "no acceptable method: {err}");

    // The targets see the proxy's address of their own family.
    let log4 = std::fs::read_to_string(t.dir.join("http-v4.log")).unwrap();
    let log6 = std::fs::read_to_string(t.dir.join("http-v6.log")).unwrap();
    assert_eq!(log4.matches(&format!("{PROXY} - - ")).count(), 3, "{log4}");
    assert_eq!(log6.matches(&format!("{PROXY6} - - ")).count(), 2, "{log6}");
    let dlog = std::fs::read_to_string(dir.join("danted.log")).unwrap();
    assert!(
        dlog.contains("username%ztuntest@198.51.100.1")
            && dlog.contains("username%ztuntest@2001:db8:c::1"),
        "dante logged the authenticated user: {dlog}"
    );
    assert_eq!(user_db(), before, "the root namespace's users never change");

    // danted and all its helper processes are gone after the guard drops.
    let dante_pids: Vec<u32> = pids_in(&t.server)
        .unwrap()
        .into_iter()
        .filter(|&p| running_danted(p))
        .collect();
    assert!(dante_pids.len() > 1, "mother and children: {dante_pids:?}");
    drop(socks);
    assert!(
        eventually(Duration::from_secs(10), || !dante_pids
            .iter()
            .any(|&p| running_danted(p))),
        "danted processes left: {dante_pids:?}"
    );
    assert_eq!(user_db(), before, "the root namespace's users never change");
}

/// A SOCKS5 UDP client (RFC 1928, with RFC 1929 auth when a user is given):
/// UDP ASSOCIATE with REQ:0 (0.0.0.0 or ::), then one datagram to DST:DPORT through the
/// relay (at BND.ADDR, or the proxy's address if that is unspecified).
/// Prints `BND.ADDR BND.PORT` and then the reply's `ADDR PORT PAYLOAD`.
const SOCKS5_UDP: &str = r"
import ipaddress, socket, struct, sys
proxy, pport, user, pw, dst, dport, payload, req = sys.argv[1:9]
pport, dport, payload = int(pport), int(dport), payload.encode()
def rd(s, n):
    b = b''
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit('proxy closed the connection')
        b += c
    return b
class Buf:
    def __init__(self, b):
        self.b = b
    def read(self, n):
        if len(self.b) < n:
            sys.exit('short reply')
        r, self.b = self.b[:n], self.b[n:]
        return r
def enc(a):
    ip = ipaddress.ip_address(a)
    return (b'\x01' if ip.version == 4 else b'\x04') + ip.packed
def addr(read):
    atyp = read(1)[0]
    if atyp not in (1, 4):
        sys.exit('unexpected ATYP %d' % atyp)
    a = ipaddress.ip_address(read(4 if atyp == 1 else 16))
    return str(a), struct.unpack('!H', read(2))[0]
c = socket.create_connection((proxy, pport), timeout=5)
c.sendall(b'\x05\x01' + (b'\x02' if user else b'\x00'))
ver, method = rd(c, 2)
if method == 2:
    c.sendall(b'\x01' + bytes([len(user)]) + user.encode() + bytes([len(pw)]) + pw.encode())
    if rd(c, 2)[1] != 0:
        sys.exit('authentication failed')
elif method != 0:
    sys.exit('no acceptable method (%d)' % method)
c.sendall(b'\x05\x03\x00' + enc(req) + b'\x00\x00')
ver, rep, rsv = rd(c, 3)
if rep != 0:
    sys.exit('UDP ASSOCIATE refused (%d)' % rep)
baddr, bport = addr(lambda n: rd(c, n))
print(baddr, bport)
relay = proxy if ipaddress.ip_address(baddr).is_unspecified else baddr
u = socket.socket(socket.AF_INET6 if ':' in relay else socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b'\x00\x00\x00' + enc(dst) + struct.pack('!H', dport) + payload, (relay, bport))
d, src = u.recvfrom(65535)
if d[:3] != b'\x00\x00\x00':
    sys.exit('bad reply header %r' % d[:3])
r = Buf(d[3:])
ra, rp = addr(r.read)
print(ra, rp, r.b.decode())
";

/// Runs [`SOCKS5_UDP`] in the client namespace against `proxy`:`port`,
/// asking for UDP ASSOCIATE with `req`:0, to the echo at `dst`:7777;
/// returns its stdout, or its stderr on failure.
fn socks5_udp(
    t: &Topology,
    (proxy, port): (&str, u16),
    auth: Option<(&str, &str)>,
    req: &str,
    (dst, payload): (&str, &str),
) -> Result<String, String> {
    let (user, pass) = auth.unwrap_or(("", ""));
    let port = port.to_string();
    let out = t
        .client
        .exec_unchecked(
            "python3",
            &[
                "-c", SOCKS5_UDP, proxy, &port, user, pass, dst, "7777", payload, req,
            ],
        )
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn dante_relays_udp_associate_to_an_echo_with_and_without_auth() {
    if !can_run("dante_relays_udp_associate_to_an_echo_with_and_without_auth") {
        return;
    }
    let before = user_db();
    let t = Topology::new("danteudp").unwrap();
    let _echo = udp_echo(&t.server, SERVER, 7777).unwrap();
    let _echo6 = udp_echo(&t.server, SERVER6, 7777).unwrap();
    let _auth = dante(
        &t.server,
        &t.dir.join("auth"),
        &[PROXY, PROXY6],
        1080,
        Some(("ztunudp", "pw-udp")),
    )
    .unwrap();
    let _open = dante(&t.server, &t.dir.join("open"), &[PROXY, PROXY6], 1081, None).unwrap();
    wait_for_ipv6(&t);
    let creds = Some(("ztunudp", "pw-udp"));

    // dante answers with its own listen address as BND.ADDR (never
    // 0.0.0.0 or ::), of the family of the address in the request, not of
    // the control connection: an IPv6 client asking with 0.0.0.0 gets an
    // IPv4 relay (and may use it from its IPv4 address). The echo comes
    // back through the relay with the echo's own address in the header.
    for (proxy, auth, req, dst, bnd) in [
        ((PROXY, 1080), creds, "0.0.0.0", SERVER, PROXY),
        ((PROXY, 1081), None, "0.0.0.0", SERVER, PROXY),
        ((PROXY6, 1080), creds, "::", SERVER6, PROXY6),
        ((PROXY6, 1081), None, "::", SERVER6, PROXY6),
        ((PROXY, 1080), creds, "0.0.0.0", SERVER6, PROXY),
        ((PROXY6, 1081), None, "::", SERVER, PROXY6),
        ((PROXY6, 1081), None, "0.0.0.0", SERVER, PROXY),
    ] {
        let payload = format!("via-{}-{}-to-{dst}", proxy.0, proxy.1);
        let out = socks5_udp(&t, proxy, auth, req, (dst, &payload))
            .unwrap_or_else(|e| panic!("{payload} asking with {req}: {e}"));
        let mut lines = out.lines();
        let (addr, port) = lines.next().unwrap().split_once(' ').unwrap();
        assert_eq!(addr, bnd, "BND.ADDR for {payload} asking with {req}");
        assert!(port.parse::<u16>().unwrap() > 0, "BND.PORT: {out}");
        assert_eq!(
            lines.next().unwrap(),
            format!("{dst} 7777 {payload}"),
            "the echo came back through the relay"
        );
    }
    let wrong = Some(("ztunudp", "wrong"));
    let err = socks5_udp(&t, (PROXY, 1080), wrong, "0.0.0.0", (SERVER, "x")).unwrap_err();
    assert!(err.contains("authentication failed"), "{err}");
    let err = socks5_udp(&t, (PROXY, 1080), None, "0.0.0.0", (SERVER, "x")).unwrap_err();
    assert!(err.contains("no acceptable method"), "{err}");
    assert_eq!(user_db(), before, "the root namespace's users never change");
}

#[test]
fn dnsmasq_answers_a_and_aaaa_over_udp_and_tcp() {
    if !can_run("dnsmasq_answers_a_and_aaaa_over_udp_and_tcp") {
        return;
    }
    let t = Topology::new("dns").unwrap();
    let log = t.dir.join("dns.log");
    let _dns = dns_with_log(
        &t.server,
        &[PROXY, PROXY6],
        &[
            ("www.example.test", SERVER),
            ("www.example.test", SERVER6),
            ("two.example.test", SERVER),
            ("two.example.test", "203.0.113.200"),
        ],
        &log,
    )
    .unwrap();
    wait_for_ipv6(&t);
    let ips = |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|a| a.parse().unwrap()).collect() };
    let sorted = |mut v: Vec<IpAddr>| {
        v.sort();
        v
    };
    for server in [PROXY, PROXY6] {
        for tcp in [false, true] {
            let pcap = t.dir.join(format!("dns-{server}-{tcp}.pcap"));
            let cap = Capture::start(&t.client, "veth-c", &pcap).unwrap();
            assert_eq!(
                dig(&t.client, server, "www.example.test", tcp).unwrap(),
                ips(&[SERVER, SERVER6]),
                "{server} tcp={tcp}"
            );
            assert_eq!(
                sorted(dig(&t.client, server, "two.example.test", tcp).unwrap()),
                ips(&[SERVER, "203.0.113.200"]),
                "two A records, no AAAA: {server} tcp={tcp}"
            );
            assert_eq!(
                dig(&t.client, server, "nope.example.test", tcp).unwrap(),
                Vec::<IpAddr>::new(),
                "NXDOMAIN"
            );
            assert_eq!(
                dig(&t.client, server, "example.org", tcp).unwrap(),
                Vec::<IpAddr>::new(),
                "nothing outside .test, nothing forwarded"
            );
            cap.stop().unwrap();
            // Each dig asks two questions, each in a packet (UDP) or a
            // connection (TCP) of its own: 4 digs make 8.
            let to_53 = |filter: &str| read_pcap(&pcap, filter).unwrap();
            if tcp {
                // tcpdump's `tcp[13]`-style filters never match IPv6:
                // count the SYNs by their printed flags.
                let syns = to_53("tcp dst port 53")
                    .iter()
                    .filter(|l| l.contains("Flags [S],"))
                    .count();
                assert_eq!(syns, 8, "{server}");
                assert_eq!(to_53("udp port 53").len(), 0, "{server}");
            } else {
                assert_eq!(to_53("udp dst port 53").len(), 8, "{server}");
                assert_eq!(to_53("tcp port 53").len(), 0, "{server}");
            }
        }
    }
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.matches("query[A] www.example.test from 198.51.100.1")
            .count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("query[AAAA] www.example.test from 2001:db8:c::1")
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn a_capture_sees_a_ping_and_the_leak_filter_counts_only_it() {
    if !can_run("a_capture_sees_a_ping_and_the_leak_filter_counts_only_it") {
        return;
    }
    let t = Topology::new("capture").unwrap();
    let _http = http(&t, SERVER, "v4");
    let _socks = microsocks(&t.server, PROXY, 1080, None).unwrap();
    let pcap = t.dir.join("veth-c.pcap");
    let cap = Capture::start(&t.client, "veth-c", &pcap).unwrap();
    let ping = t
        .client
        .exec("ping", &["-c", "3", "-i", "0.2", "-W", "1", PROXY])
        .unwrap();
    assert!(String::from_utf8_lossy(&ping.stdout).contains("3 received"));
    fetch_intact(
        &t,
        &["--socks5", "198.51.100.2:1080"],
        &format!("http://{SERVER}:8080/file"),
    );
    let all = cap.stop().unwrap();
    let requests = all
        .iter()
        .filter(|l| l.contains("ICMP echo request"))
        .count();
    let replies = all.iter().filter(|l| l.contains("ICMP echo reply")).count();
    assert_eq!((requests, replies), (3, 3), "{all:#?}");
    assert_eq!(
        read_pcap(
            &pcap,
            "icmp[icmptype] == icmp-echo and dst host 198.51.100.2"
        )
        .unwrap()
        .len(),
        3
    );
    assert!(
        read_pcap(&pcap, "tcp and host 198.51.100.2 and port 1080")
            .unwrap()
            .len()
            > 100,
        "4 MiB went to the proxy"
    );
    // Everything that is not proxy traffic (nor ARP/ND): just the pings.
    let others = packets_other_than(&pcap, PROXY, 1080).unwrap();
    assert_eq!(others.len(), 6, "{others:#?}");
    assert!(
        others.iter().all(|l| l.contains(": ICMP echo ")),
        "{others:#?}"
    );
    // The capture saw the direct path only: nothing to the target itself.
    assert!(read_pcap(&pcap, &format!("host {SERVER}"))
        .unwrap()
        .is_empty());
}
