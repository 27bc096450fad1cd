//! Soak (issue 10): mixed traffic through a tunnel for a bounded time —
//! HTTP fetches, UDP round trips, pings, route changes, and a second tunnel
//! coming and going — while the helper's descriptors, threads, memory and
//! the namespace's interfaces are sampled. Nothing may grow beyond noise.
//! CI runs 20 s; `ZTUN_SOAK_SECS=1800` (scripts/reliability.sh) 30 minutes.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::time::{Duration, Instant};

use ztun_tests::servers;
use ztun_tests::{can_run, Topology, SERVER};

#[derive(Debug, Clone, Copy)]
struct Sample {
    fds: usize,
    threads: usize,
    rss_kib: u64,
    links: usize,
}

fn sample(t: &Topology, pid: u32) -> Sample {
    let count = |dir: String| std::fs::read_dir(dir).unwrap().count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let links = String::from_utf8_lossy(&t.client.ip(&["-o", "link"]).unwrap().stdout)
        .lines()
        .count();
    Sample {
        fds: count(format!("/proc/{pid}/fd")),
        threads: count(format!("/proc/{pid}/task")),
        rss_kib,
        links,
    }
}

#[test]
fn mixed_traffic_for_a_bounded_time_grows_nothing() {
    if !can_run("mixed_traffic_for_a_bounded_time_grows_nothing") {
        return;
    }
    let secs: u64 = std::env::var("ZTUN_SOAK_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
        .min(4 * 3600);
    let t = Topology::new("soak").unwrap();
    let file: Vec<u8> = (0..1024 * 1024_u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(t.dir.join("file"), &file).unwrap();
    let _http = servers::http(&t.server, &t.dir, SERVER, 8080).unwrap();
    let url = format!("http://{SERVER}:8080/file");
    let _echo = servers::udp_echo(&t.server, SERVER, 7000).unwrap();
    let helper = t.start_helper().unwrap();
    t.ztunctl_ok(&[
        "up",
        "--name",
        "soak",
        "--route",
        "203.0.113.0/26",
        "--icmp",
        "forward",
    ])
    .unwrap();
    let got = t.dir.join("got");
    // One source port for the whole soak: each new port would be a new UDP
    // mapping, holding its socket for the 60 s idle timeout (not growth).
    let udp = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(1)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('0.0.0.0', 40000))\n\
         lost = 0\n\
         for i in range(20):\n    for attempt in range(3):\n        s.sendto(b'x' * 512, ('{SERVER}', 7000))\n\
         \x20       try:\n            s.recv(1024); break\n        except socket.timeout:\n            lost += 1\n\
         \x20   else:\n        raise SystemExit('no answer in 3 tries')\n\
         print(lost)\n"
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut samples, mut rounds, mut failures, mut udp_lost) = (Vec::new(), 0_u32, 0_u32, 0_u32);
    let mut last_sample: Option<Instant> = None;
    while Instant::now() < deadline {
        rounds += 1;
        let fetched = t
            .client
            .exec_unchecked(
                "curl",
                &["-sS", "--max-time", "10", "-o", got.to_str().unwrap(), &url],
            )
            .unwrap();
        if !fetched.status.success() || std::fs::read(&got).unwrap_or_default() != file {
            eprintln!(
                "fetch: {}\nstatus then: {}",
                String::from_utf8_lossy(&fetched.stderr).trim(),
                t.ztunctl(&["status", "--json", "soak"])
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default()
            );
            failures += 1;
        }
        let round_trips = t.client.exec_unchecked("python3", &["-c", &udp]).unwrap();
        if round_trips.status.success() {
            udp_lost += String::from_utf8_lossy(&round_trips.stdout)
                .trim()
                .parse::<u32>()
                .unwrap_or(0);
        } else {
            eprintln!(
                "UDP: {}",
                String::from_utf8_lossy(&round_trips.stderr).trim()
            );
            failures += 1;
        }
        let pinged = t
            .client
            .exec_unchecked("ping", &["-c", "2", "-i", "0.2", "-W", "1", SERVER])
            .unwrap();
        if !pinged.status.success() {
            eprintln!("ping: {}", String::from_utf8_lossy(&pinged.stdout).trim());
            failures += 1;
        }
        t.ztunctl_ok(&["route", "add", "soak", "203.0.113.64/26"])
            .unwrap();
        t.ztunctl_ok(&["route", "remove", "soak", "203.0.113.64/26"])
            .unwrap();
        t.ztunctl_ok(&[
            "up",
            "--name",
            "side",
            "--route",
            "198.18.77.0/24",
            "--icmp",
            "reply",
        ])
        .unwrap();
        t.ztunctl_ok(&["down", "side"]).unwrap();
        if last_sample.is_none_or(|at| at.elapsed() >= Duration::from_secs(2)) {
            samples.push(sample(&t, helper.pid()));
            last_sample = Some(Instant::now());
        }
    }
    samples.push(sample(&t, helper.pid()));
    // The first sample is taken after one full round: lazily opened
    // resources (netlink sockets, runtime threads, allocator arenas) exist.
    let (first, last) = (samples[0], *samples.last().unwrap());
    let peak_rss = samples.iter().map(|s| s.rss_kib).max().unwrap();
    eprintln!(
        "soak {secs} s: {rounds} rounds, {failures} failed operations, {udp_lost} UDP datagrams resent, {} samples; \
         fds {} -> {}, threads {} -> {}, RSS {} -> {} KiB (peak {peak_rss}), links {} -> {}",
        samples.len(),
        first.fds,
        last.fds,
        first.threads,
        last.threads,
        first.rss_kib,
        last.rss_kib,
        first.links,
        last.links
    );
    assert_eq!(
        failures, 0,
        "every fetch, UDP round trip and ping succeeded"
    );
    assert!(rounds >= 3, "the soak ran");
    assert!(
        last.fds <= first.fds + 2,
        "descriptors {} -> {}",
        first.fds,
        last.fds
    );
    assert_eq!(last.links, first.links, "interfaces");
    assert!(
        last.threads <= first.threads + 2,
        "threads {} -> {}",
        first.threads,
        last.threads
    );
    assert!(
        last.rss_kib <= first.rss_kib + 16 * 1024,
        "memory grew {} -> {} KiB",
        first.rss_kib,
        last.rss_kib
    );
}
