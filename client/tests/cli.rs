//! ztunctl against a fake helper that speaks the real framing on a real Unix
//! socket: what is sent for each command, what the user sees for each reply,
//! and the exit code for each way things go wrong.

#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Parser;
use ztun_proto::frame;
use ztun_proto::plist::Value;
use ztunctl::{run, Cli, ClientError};

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../tests/fixtures/xpc/{name}.plist"));
    Value::from_file(&path).unwrap()
}

fn framed(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(v, &mut out).unwrap();
    out
}

/// Serves one connection: records the request, then writes `replies` raw
/// (already framed, or garbage) and closes, or holds the connection open
/// for `hold` without answering.
fn fake_helper(sock: &Path, replies: Vec<Vec<u8>>, hold: Duration) -> JoinHandle<Value> {
    let listener = UnixListener::bind(sock).unwrap();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut header = [0; 4];
        conn.read_exact(&mut header).unwrap();
        let mut body = vec![0; frame::body_len(header).unwrap()];
        conn.read_exact(&mut body).unwrap();
        for r in replies {
            conn.write_all(&r).unwrap();
        }
        thread::sleep(hold);
        frame::decode_body(&body).unwrap()
    })
}

fn cli(sock: &Path, args: &[&str]) -> Cli {
    let mut argv = vec![
        "ztunctl",
        "--socket",
        sock.to_str().unwrap(),
        "--timeout",
        "2",
    ];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap()
}

fn run_to_string(cli: &Cli) -> (Result<(), ClientError>, String) {
    let mut out = Vec::new();
    let result = run(cli, &mut out);
    (result, String::from_utf8(out).unwrap())
}

#[test]
fn dry_run_up_prints_exactly_the_golden_up_request() {
    let dir = tempfile::tempdir().unwrap();
    let c = cli(
        &dir.path().join("none.sock"),
        &[
            "--dry-run",
            "up",
            "--name",
            "work",
            "--ipv6",
            "2001:db8:ff::1/64",
            "--route",
            "203.0.113.0/24",
            "--route",
            "198.51.100.7",
            "--route",
            "2001:db8:1::/48",
            "--upstream",
            "socks5://alice:s3cret@192.0.2.10:1080",
            "--upstream",
            "http://bob:pa55@192.0.2.11:3128",
            "--dns-over-tcp",
            "--dns",
            "fake",
            "--route-domain",
            "example.com",
            "--fake-pool6",
            "2001:db8:fa::/64",
        ],
    );
    let (result, out) = run_to_string(&c);
    result.unwrap();
    let printed = Value::from_reader_xml(out.as_bytes()).unwrap();
    assert_eq!(printed, fixture("request-up"));
}

#[test]
fn conflicting_flags_are_a_usage_error_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    for (args, expected) in [
        (
            vec![
                "up",
                "--exclude",
                "192.0.2.0/24",
                "--route",
                "203.0.113.0/24",
            ],
            "--exclude: exclusions apply only in full-tunnel mode",
        ),
        (
            vec!["up"],
            "--route: give at least one route, or full = 1 (ztunctl up --full)",
        ),
        (
            vec!["up", "--route", "2001:db8::/32"],
            "--route: 2001:db8::/32 is IPv6 but the tunnel has no IPv6 address",
        ),
        (
            vec!["up", "--full", "--mtu", "1000", "--ipv6", "2001:db8::1/64"],
            "--mtu: 1000 is below the minimum 1280 with IPv6",
        ),
        (
            vec!["up", "--route", "203.0.113.0/25", "--kill-switch"],
            "--kill-switch: the kill switch needs full-tunnel mode",
        ),
        (
            vec!["up", "--full", "--kill-switch", "--allow-ipv6-leak"],
            "--kill-switch: the kill switch drops the IPv6 that allow_ipv6_leak (--allow-ipv6-leak) lets out",
        ),
    ] {
        let (result, out) = run_to_string(&cli(&sock, &args));
        let err = result.unwrap_err();
        assert_eq!(err.exit_code(), 2, "{args:?}");
        assert!(err.to_string().starts_with(expected), "{args:?}: {err}");
        assert!(out.is_empty());
    }
}

#[test]
fn malformed_flag_values_are_rejected_by_the_parser_with_the_proto_reason() {
    let err = Cli::try_parse_from(["ztunctl", "up", "--route", "203.0.113.9/24"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().contains("did you mean 203.0.113.0/24"),
        "{err}"
    );
    let err = Cli::try_parse_from([
        "ztunctl",
        "up",
        "--upstream",
        "socks5://a:hunter2@bad host:1",
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("\"bad host\" is not a host name"),
        "{err}"
    );
    let err = Cli::try_parse_from(["ztunctl", "down"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
}

#[test]
fn no_helper_is_exit_3_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = run_to_string(&cli(&dir.path().join("absent.sock"), &["status"]));
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(
        err.to_string().contains("cannot reach the ztun helper"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("start it (systemctl restart ztun-helper) or pass --socket"),
        "{err}"
    );
}

#[test]
fn status_sends_a_status_request_and_shows_each_tunnel() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let helper = fake_helper(
        &sock,
        vec![framed(&fixture("reply-status"))],
        Duration::ZERO,
    );
    let (result, out) = run_to_string(&cli(&sock, &["status"]));
    result.unwrap();
    assert_eq!(helper.join().unwrap(), fixture("request-status"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "work  up  utun4  198.18.0.1/32 --> 198.18.0.2  mtu 9000  target-only"
    );
    assert!(
        out.contains(
            "  upstream  socks5://alice:***@192.0.2.10:1080    icmp forward    dns over tcp\n            \
             reachable, 1 reconnect(s); refused connection_refused 4, upstream_down 2    <- new flows\n\
             \x20 failover  http://bob:***@192.0.2.11:3128\n            \
             reachable, 0 reconnect(s); refused udp_not_supported 3\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  routes    203.0.113.0/24 -> utun4\n"),
        "{out}"
    );
    assert!(
        out.contains("            2001:db8:1::/48 -> utun4\n"),
        "{out}"
    );
    assert!(
        out.contains("  traffic   in 1200 pkts / 181.0 kB (2.4 kB/s)   out 1180 pkts / 1.6 MB (131.1 kB/s)\n"),
        "{out}"
    );
    assert!(out.contains("  flows     3 open, 41 total\n"), "{out}");
    assert!(
        out.contains("  drops     bad_checksum 2, not_routed 5\n"),
        "{out}"
    );
}

#[test]
fn status_json_prints_the_reply_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let helper = fake_helper(
        &sock,
        vec![framed(&fixture("reply-status"))],
        Duration::ZERO,
    );
    let (result, out) = run_to_string(&cli(&sock, &["status", "--json"]));
    result.unwrap();
    helper.join().unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["ok"], 1);
    assert_eq!(json["tunnels"][0]["name"], "work");
    assert_eq!(json["tunnels"][0]["installed"][0]["interface"], "utun4");
    assert_eq!(json["tunnels"][0]["counters"]["flows_total"], 41);
}

#[test]
fn helper_error_is_exit_1_with_its_message_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let helper = fake_helper(&sock, vec![framed(&fixture("reply-error"))], Duration::ZERO);
    let (result, _) = run_to_string(&cli(&sock, &["down", "work"]));
    assert_eq!(helper.join().unwrap(), fixture("request-down"));
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        err.to_string(),
        "up: uid 501 is not root and not in group admin; ask an administrator (unauthorized)"
    );
}

#[test]
fn silent_helper_times_out_as_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let helper = fake_helper(&sock, vec![], Duration::from_secs(3));
    let started = Instant::now();
    let (result, _) = run_to_string(&cli(&sock, &["status"]));
    let err = result.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "honours --timeout 2"
    );
    assert_eq!(err.exit_code(), 3);
    assert!(
        err.to_string().contains("did not answer within 2s"),
        "{err}"
    );
    helper.join().unwrap();
}

#[test]
fn garbage_reply_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let mut garbage = 9_u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"not plist");
    let helper = fake_helper(&sock, vec![garbage], Duration::ZERO);
    let (result, _) = run_to_string(&cli(&sock, &["status"]));
    helper.join().unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("not a binary plist"), "{err}");
}

/// An event kind a newer helper might send.
fn future_event() -> Value {
    let mut d = ztun_proto::plist::Dictionary::new();
    d.insert("event".into(), Value::String("sleep".into()));
    Value::Dictionary(d)
}

#[test]
fn watch_prints_one_line_per_event_until_the_helper_closes() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let replies = vec![
        framed(&fixture("reply-done")),
        framed(&fixture("event-route")),
        framed(&fixture("event-error")),
        framed(&future_event()),
        framed(&fixture("event-down")),
    ];
    let helper = fake_helper(&sock, replies, Duration::ZERO);
    let (result, out) = run_to_string(&cli(&sock, &["status", "--watch", "work"]));
    assert_eq!(helper.join().unwrap(), fixture("request-watch"));
    assert_eq!(
        result.unwrap_err().exit_code(),
        3,
        "stream ended by the helper"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "watching for events; Ctrl-C to stop");
    let tails: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_once("  ").unwrap().1)
        .collect();
    assert_eq!(
        tails,
        [
            "all route added: 192.0.2.0/24 -> en0 via 198.51.100.1",
            "work error: route 203.0.113.0/24 now resolves to en0, not utun4; re-installed",
            "(skipped an event this ztunctl cannot show: event: unknown event kind \"sleep\")",
            "work is down",
        ]
    );
}

#[test]
fn doctor_without_a_helper_says_how_to_start_it_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let (result, out) = run_to_string(&cli(&dir.path().join("absent.sock"), &["doctor"]));
    assert_eq!(result.unwrap_err().exit_code(), 3);
    assert!(out.starts_with("✗ helper reachable at "), "{out}");
    assert!(
        out.contains("    fix: start it (systemctl restart ztun-helper), or pass --socket"),
        "{out}"
    );
}

/// Serves one connection and answers each request in turn with the next
/// of `replies`; returns the requests.
fn fake_helper_session(sock: &Path, replies: Vec<Value>) -> JoinHandle<Vec<Value>> {
    let listener = UnixListener::bind(sock).unwrap();
    thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut requests = Vec::new();
        for reply in replies {
            let mut header = [0; 4];
            conn.read_exact(&mut header).unwrap();
            let mut body = vec![0; frame::body_len(header).unwrap()];
            conn.read_exact(&mut body).unwrap();
            requests.push(frame::decode_body(&body).unwrap());
            conn.write_all(&framed(&reply)).unwrap();
        }
        requests
    })
}

const LIVE_ARGS: [&str; 7] = [
    "doctor",
    "work",
    "--live",
    "--probe",
    "203.0.113.5:443",
    "--dns-name",
    "www.example.test",
];

#[test]
fn doctor_live_prints_the_helpers_checks_after_its_own_and_exits_1_on_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let helper = fake_helper_session(
        &sock,
        vec![
            fixture("reply-version"),
            fixture("reply-status"),
            fixture("reply-doctor"),
        ],
    );
    let (result, out) = run_to_string(&cli(&sock, &LIVE_ARGS));
    let requests = helper.join().unwrap();
    assert_eq!(requests[2], fixture("request-doctor"));
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    // The status fixture's stale route, and the live upstream line.
    assert!(err.to_string().starts_with("2 check(s) failed"), "{err}");
    let live = out
        .split_once("live checks, run by the helper now:\n")
        .unwrap_or_else(|| panic!("{out}"))
        .1;
    assert_eq!(
        live,
        "✓ dns: www.example.test resolved to 203.0.113.80 by the system resolver (4 ms)\n\
         ✓ dns: the resolvers' routes are not checked on macOS yet; scutil --dns lists them (<1 ms)\n\
         ✓ work: route: 203.0.113.0/24 -> utun4 (<1 ms)\n\
         ✗ work: upstream: socks5://alice:***@192.0.2.10:1080 unreachable: Connection refused (os error 61) (1 ms)\n\
         \x20   fix: start the SOCKS5 server, or fix the URL (ztunctl down work, then up with --upstream socks5://user:pass@host:port); the helper retries by itself\n\
         ✓ work: tcp: 203.0.113.5:443 answered through utun4 (it closed when we did; the tunnel accepted in 0.21 ms) (12 ms)\n\
         ✓ work: icmp: echo from 203.0.113.5 through utun4 in 11.8 ms (icmp forward: a real ping from the physical interface) (11 ms)\n"
    );
}

#[test]
fn doctor_live_json_prints_the_reply_and_exits_1_on_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let helper = fake_helper(
        &sock,
        vec![framed(&fixture("reply-doctor"))],
        Duration::ZERO,
    );
    let mut args = LIVE_ARGS.to_vec();
    args.push("--json");
    let (result, out) = run_to_string(&cli(&sock, &args));
    assert_eq!(helper.join().unwrap(), fixture("request-doctor"));
    assert_eq!(result.unwrap_err().exit_code(), 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["ok"], 1);
    let checks = json["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 6);
    assert_eq!(checks[3]["check"], "upstream");
    assert_eq!(checks[3]["ok"], 0);
    assert_eq!(checks[3]["tunnel"], "work");
    assert!(checks[3]["fix"]
        .as_str()
        .unwrap()
        .starts_with("start the SOCKS5 server"));
    assert_eq!(checks[4]["millis"], 12);
    assert!(checks[0].get("tunnel").is_none(), "a machine-wide check");
}

#[test]
fn doctor_live_against_a_helper_without_the_op_says_to_upgrade_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("h.sock");
    let old = Value::from_file(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/xpc/reply-error.plist"),
    )
    .unwrap();
    // What a helper from before `doctor` answers for it.
    let mut old = old.into_dictionary().unwrap();
    let mut error = ztun_proto::plist::Dictionary::new();
    error.insert("code".into(), Value::String("invalid_argument".into()));
    error.insert(
        "message".into(),
        Value::String(
            "op: unknown operation \"doctor\"; known: version, up, down, status, route.add, route.remove, watch"
                .into(),
        ),
    );
    old.insert("error".into(), Value::Dictionary(error));
    let helper = fake_helper(&sock, vec![framed(&Value::Dictionary(old))], Duration::ZERO);
    let (result, _) = run_to_string(&cli(&sock, &["doctor", "--live", "--json"]));
    helper.join().unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string()
            .starts_with("this helper is too old for doctor --live; upgrade it"),
        "{err}"
    );
}

#[test]
fn doctor_probe_dns_name_and_json_need_live_and_valid_values() {
    let parse = |args: &[&str]| {
        let mut argv = vec!["ztunctl", "doctor"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    for needs_live in [
        &["--json"][..],
        &["--probe", "203.0.113.5:443"],
        &["--dns-name", "www.example.test"],
    ] {
        let e = parse(needs_live).unwrap_err();
        assert!(e.contains("--live"), "{e}");
    }
    let e = parse(&["--live", "--probe", "www.example.test:443"]).unwrap_err();
    assert!(
        e.contains("is not an address and port like 203.0.113.5:443"),
        "{e}"
    );
    let e = parse(&["--live", "--dns-name", "no spaces.example"]).unwrap_err();
    assert!(e.contains("is not a host name"), "{e}");
    parse(&["work", "--live", "--probe", "[2001:db8::5]:443"]).unwrap();
}

#[test]
fn dry_run_doctor_live_prints_exactly_the_golden_doctor_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--dry-run"];
    args.extend_from_slice(&LIVE_ARGS);
    let (result, out) = run_to_string(&cli(&dir.path().join("none.sock"), &args));
    result.unwrap();
    assert_eq!(
        Value::from_reader_xml(out.as_bytes()).unwrap(),
        fixture("request-doctor")
    );
}
