//! Crash at every step (issue 10): the helper, built with debug assertions,
//! aborts right after step K of `up`, `route.add`, `down` or the start-up
//! sweep when started with `ZTUN_CRASH_AT=OP:K` — for every K until the
//! operation completes. After each crash a clean helper starts, and what
//! must hold is checked against the kernel itself:
//! - every route in the client namespace that was not there before the
//!   test belongs to a tunnel the helper runs (nothing outside its
//!   knowledge), and the ledger lists nothing stale;
//! - every ztun interface belongs to a running tunnel (no orphans);
//! - the next `up` succeeds, and `down --all` leaves the routing table
//!   exactly as it was before the test.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::collections::BTreeSet;
use std::time::Duration;

use ztun_tests::{can_run, workspace_bin, Process, Topology};

/// Full mode with an exclusion: the halves die with the interface, the
/// exclusion (via the physical gateway) survives a crash and must be swept.
const FULL_UP: &[&str] = &[
    "up",
    "--name",
    "c",
    "--full",
    "--exclude",
    "203.0.113.200/32",
    "--icmp",
    "reply",
];
const TARGET_UP: &[&str] = &[
    "up",
    "--name",
    "c",
    "--route",
    "203.0.113.0/26",
    "--icmp",
    "reply",
];
/// No operation here has more steps than this; reaching it is a failure.
const MAX_STEPS: u32 = 40;

fn kernel_routes(t: &Topology) -> BTreeSet<String> {
    t.client_routes()
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

fn ztun_links(t: &Topology) -> BTreeSet<String> {
    let out = t.client.ip(&["-o", "link"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|name| name.trim().split('@').next().unwrap_or_default().to_owned())
        .filter(|name| name.starts_with("ztun"))
        .collect()
}

fn stop(mut helper: Process) {
    helper.signal(libc::SIGTERM).unwrap();
    helper
        .wait_for_exit(Duration::from_secs(10))
        .unwrap()
        .expect("the helper stops on SIGTERM");
}

/// Checks the invariants with a clean helper, then leaves the namespace as
/// it was before the test (no tunnel, no desired tunnel).
fn assert_recovered(t: &Topology, baseline: &BTreeSet<String>, context: &str) {
    let helper = t.start_helper().unwrap();
    let json = t.ztunctl_ok(&["status", "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        status["stale_routes"].as_array().map_or(0, Vec::len),
        0,
        "{context}: the start-up sweep left ledger entries: {json}"
    );
    let tunnels = status["tunnels"].as_array().cloned().unwrap_or_default();
    let owned: BTreeSet<String> = tunnels
        .iter()
        .flat_map(|t| t["installed"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["route"].as_str().map(str::to_owned))
        .collect();
    let interfaces: BTreeSet<String> = tunnels
        .iter()
        .filter_map(|t| t["interface"].as_str().map(str::to_owned))
        .collect();
    for line in kernel_routes(t).difference(baseline) {
        let dst = line.split_whitespace().next().unwrap_or_default();
        // `ip route` prints host routes without their /32 or /128.
        let known = owned.contains(dst)
            || owned.contains(&format!("{dst}/32"))
            || owned.contains(&format!("{dst}/128"))
            || interfaces
                .iter()
                .any(|i| line.contains(&format!("dev {i} ")));
        assert!(
            known,
            "{context}: route outside the helper's knowledge: {line}\n{json}"
        );
    }
    assert_eq!(
        ztun_links(t),
        interfaces,
        "{context}: orphan tunnel interface"
    );
    t.ztunctl_ok(&[
        "up",
        "--name",
        "probe",
        "--route",
        "198.18.99.0/24",
        "--icmp",
        "reply",
    ])
    .unwrap_or_else(|e| panic!("{context}: the next up failed: {e}"));
    t.ztunctl_ok(&["down", "--all"]).unwrap();
    assert_eq!(
        &kernel_routes(t),
        baseline,
        "{context}: down --all left routes"
    );
    assert!(
        ztun_links(t).is_empty(),
        "{context}: down --all left an interface"
    );
    stop(helper);
}

/// Runs `act` against a helper armed to crash after step `k` of `op`.
/// Returns whether it crashed (false: `op` has fewer than `k` steps).
fn crashed(t: &Topology, op: &str, k: u32, act: &[&str]) -> bool {
    let armed = format!("ZTUN_CRASH_AT={op}:{k}");
    let mut helper = t.start_helper_with(&[&armed]).unwrap();
    let out = t.ztunctl(act).unwrap();
    if out.status.success() {
        stop(helper);
        return false;
    }
    let status = helper
        .wait_for_exit(Duration::from_secs(10))
        .unwrap()
        .unwrap_or_else(|| panic!("{op}:{k}: ztunctl failed but the helper lives: {out:?}"));
    assert!(!status.success(), "{op}:{k}: the helper aborted");
    true
}

/// Brings tunnel `c` up with a clean helper and stops that helper the way
/// launchd or systemd does, so the next start restores `c`.
fn prepare(t: &Topology, up: &[&str]) {
    let helper = t.start_helper().unwrap();
    t.ztunctl_ok(up).unwrap();
    stop(helper);
}

fn every_step(test: &str, op: &str, mut one: impl FnMut(&Topology, u32) -> bool) {
    if !can_run(test) {
        return;
    }
    let t = Topology::new(op).unwrap();
    let baseline = kernel_routes(&t);
    for k in 1..=MAX_STEPS {
        if !one(&t, k) {
            eprintln!(
                "{op}: crashed after each of its {} steps, recovered every time",
                k - 1
            );
            assert!(k > 2, "{op}: crash injection never fired");
            assert_recovered(&t, &baseline, &format!("{op} completed"));
            return;
        }
        assert_recovered(&t, &baseline, &format!("crash after step {k} of {op}"));
    }
    panic!("{op} still crashing after {MAX_STEPS} steps");
}

#[test]
fn a_crash_after_any_step_of_up_loses_and_leaves_nothing() {
    every_step(
        "a_crash_after_any_step_of_up_loses_and_leaves_nothing",
        "up",
        |t, k| crashed(t, "up", k, FULL_UP),
    );
}

#[test]
fn a_crash_after_any_step_of_route_add_loses_and_leaves_nothing() {
    every_step(
        "a_crash_after_any_step_of_route_add_loses_and_leaves_nothing",
        "route.add",
        |t, k| {
            prepare(t, TARGET_UP);
            crashed(t, "route.add", k, &["route", "add", "c", "203.0.113.64/26"])
        },
    );
}

#[test]
fn a_crash_after_any_step_of_down_loses_and_leaves_nothing() {
    every_step(
        "a_crash_after_any_step_of_down_loses_and_leaves_nothing",
        "down",
        |t, k| {
            prepare(t, FULL_UP);
            crashed(t, "down", k, &["down", "c"])
        },
    );
}

#[test]
fn a_crash_after_any_step_of_the_start_up_sweep_loses_and_leaves_nothing() {
    every_step(
        "a_crash_after_any_step_of_the_start_up_sweep_loses_and_leaves_nothing",
        "sweep",
        |t, k| {
            // A killed helper leaves the exclusion route and its ledger.
            let mut helper = t.start_helper().unwrap();
            t.ztunctl_ok(FULL_UP).unwrap();
            helper.signal(libc::SIGKILL).unwrap();
            helper
                .wait_for_exit(Duration::from_secs(5))
                .unwrap()
                .unwrap();
            // The sweep runs before the socket exists: wait for the exit.
            let helper_bin = workspace_bin("ztun-helper");
            let (sock, state) = (t.socket(), t.dir.join("state"));
            std::fs::remove_file(&sock).unwrap();
            let armed = format!("ZTUN_CRASH_AT=sweep:{k}");
            let mut armed_helper = t
                .client
                .spawn(
                    "env",
                    &[
                        &armed,
                        helper_bin.to_str().unwrap(),
                        "--socket",
                        sock.to_str().unwrap(),
                        "--state-dir",
                        state.to_str().unwrap(),
                    ],
                )
                .unwrap();
            let crashed = ztun_tests::eventually(Duration::from_secs(10), || {
                sock.exists()
                    || armed_helper
                        .wait_for_exit(Duration::ZERO)
                        .unwrap()
                        .is_some()
            }) && !sock.exists();
            if !crashed {
                stop(armed_helper);
            }
            crashed
        },
    );
}

#[test]
fn a_truncated_ledger_is_moved_aside_and_the_helper_serves_on() {
    if !can_run("a_truncated_ledger_is_moved_aside_and_the_helper_serves_on") {
        return;
    }
    let t = Topology::new("ledger").unwrap();
    let baseline = kernel_routes(&t);
    let mut helper = t.start_helper().unwrap();
    t.ztunctl_ok(TARGET_UP).unwrap();
    helper.signal(libc::SIGKILL).unwrap();
    helper
        .wait_for_exit(Duration::from_secs(5))
        .unwrap()
        .unwrap();
    let ledger = t.dir.join("state/routes.plist");
    let text = std::fs::read(&ledger).unwrap();
    std::fs::write(&ledger, &text[..text.len() / 2]).unwrap();

    // Routes through the dead tunnel's interface went with it; the helper
    // starts, says what it found, restores the desired tunnel and serves.
    assert_recovered(&t, &baseline, "truncated ledger");
    let moved: Vec<String> = std::fs::read_dir(t.dir.join("state"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("routes.plist.corrupt-"))
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "the unreadable ledger is kept for a person to read"
    );
}
