//! The packaging files agree with the code: every name and path in the
//! launchd job, the entitlements and the systemd unit is the one
//! `ztun_proto::service` (and the helper's defaults) use. One source of
//! truth, checked, so a rename cannot leave an installer pointing nowhere.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::path::{Path, PathBuf};

use ztun_proto::plist::{Dictionary, Value};
use ztun_proto::service;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn dict(path: &str) -> Dictionary {
    Value::from_file(repo(path))
        .unwrap()
        .into_dictionary()
        .unwrap()
}

#[test]
fn the_launchd_job_runs_the_installed_helper_under_the_codes_names() {
    let job = dict("launchd/com.ztun.helper.plist");
    let mut keys: Vec<&str> = job.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "KeepAlive",
            "Label",
            "MachServices",
            "ProcessType",
            "ProgramArguments",
            "RunAtLoad",
            "StandardErrorPath",
            "StandardOutPath",
        ]
    );
    assert_eq!(job["Label"].as_string(), Some(service::LABEL));
    assert_eq!(
        job["ProgramArguments"],
        Value::Array(vec![service::MACOS_HELPER_PATH.into()])
    );
    let mut mach = Dictionary::new();
    mach.insert(service::MACH_SERVICE.into(), Value::Boolean(true));
    assert_eq!(job["MachServices"], Value::Dictionary(mach));
    assert_eq!(job["RunAtLoad"].as_boolean(), Some(true));
    assert_eq!(job["KeepAlive"].as_boolean(), Some(true));
    assert_eq!(job["ProcessType"].as_string(), Some("Interactive"));
    for log in ["StandardOutPath", "StandardErrorPath"] {
        assert_eq!(job[log].as_string(), Some(service::MACOS_LOG_PATH), "{log}");
    }
    assert!(service::MACOS_LAUNCHD_PLIST.ends_with(&format!("/{}.plist", service::LABEL)));
}

#[test]
fn the_entitlements_request_nothing_until_a_key_is_justified() {
    for file in [
        "entitlements/helper.entitlements",
        "entitlements/ztunctl.entitlements",
    ] {
        assert_eq!(dict(file), Dictionary::new(), "{file}");
    }
}

/// `Key=value` lines of a systemd unit.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key} missing from the unit"))
}

#[test]
fn the_systemd_unit_runs_the_installed_helper_with_the_codes_paths() {
    let unit = std::fs::read_to_string(repo("packaging/linux/ztun-helper.service")).unwrap();
    let exec: Vec<&str> = unit_value(&unit, "ExecStart").split_whitespace().collect();
    assert_eq!(exec[0], service::LINUX_HELPER_PATH);
    assert!(
        !service::LINUX_HELPER_PATH.starts_with("/usr/local/")
            && !service::LINUX_CTL_PATH.starts_with("/usr/local/"),
        "a .deb must not install under /usr/local (Debian Policy 9.1.2)"
    );
    assert_eq!(unit_value(&unit, "WantedBy"), "multi-user.target");
    let flag = |name: &str| exec.iter().position(|a| *a == name).map(|i| exec[i + 1]);
    assert_eq!(flag("--socket"), Some(ztun_proto::DEFAULT_SOCKET_PATH));
    assert_eq!(flag("--state-dir"), Some(service::LINUX_STATE_DIR));
    // systemd creates these under /var/lib and /run before the helper starts.
    assert_eq!(
        Path::new("/var/lib").join(unit_value(&unit, "StateDirectory")),
        Path::new(service::LINUX_STATE_DIR)
    );
    let socket_dir = Path::new(ztun_proto::DEFAULT_SOCKET_PATH).parent().unwrap();
    assert_eq!(
        Path::new("/run").join(unit_value(&unit, "RuntimeDirectory")),
        socket_dir
    );
    assert_eq!(
        unit_value(&unit, "CapabilityBoundingSet"),
        "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE"
    );
    assert_eq!(
        unit_value(&unit, "KillSignal"),
        "SIGTERM",
        "SIGTERM is the ordered shutdown"
    );
    assert!(service::LINUX_UNIT.ends_with(".service"));
}
