//! The harness itself: namespaces are private, linked namespaces really
//! carry traffic, and everything is gone afterwards.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::time::Duration;

use ztun_tests::{can_run, link, run, Netns};

fn namespaces() -> String {
    String::from_utf8(run("ip", &["netns", "list"]).unwrap().stdout).unwrap()
}

#[test]
fn linked_namespaces_carry_real_traffic_and_vanish_afterwards() {
    if !can_run("linked_namespaces_carry_real_traffic_and_vanish_afterwards") {
        return;
    }
    let (client_name, server_name);
    {
        let client = Netns::new("client").unwrap();
        let server = Netns::new("server").unwrap();
        (client_name, server_name) = (client.name().to_owned(), server.name().to_owned());
        let (c_if, _) = link(&client, "198.51.100.1/24", &server, "198.51.100.2/24").unwrap();
        let ping = client
            .exec("ping", &["-c", "1", "-W", "2", "198.51.100.2"])
            .unwrap();
        assert!(String::from_utf8_lossy(&ping.stdout).contains("1 received"));
        // The link exists only inside the test namespaces.
        let root_links = String::from_utf8(run("ip", &["-br", "link"]).unwrap().stdout).unwrap();
        assert!(
            !root_links.contains(&c_if),
            "{c_if} leaked into the root namespace"
        );
        assert!(namespaces().contains(&client_name));
    }
    let left = namespaces();
    assert!(
        !left.contains(&client_name) && !left.contains(&server_name),
        "left behind: {left}"
    );
}

#[test]
fn a_spawned_process_is_killed_when_its_guard_drops() {
    if !can_run("a_spawned_process_is_killed_when_its_guard_drops") {
        return;
    }
    let ns = Netns::new("proc").unwrap();
    let pid = {
        let sleeper = ns.spawn("sleep", &["30"]).unwrap();
        sleeper.pid()
    };
    let gone = ztun_tests::eventually(Duration::from_secs(2), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    assert!(gone, "pid {pid} still running");
}
