//! The Linux package as a user gets it: the .deb that `scripts/build-deb.sh`
//! built (its path in `ZTUN_DEB`; `scripts/test.sh` sets it) is read with
//! dpkg-deb, installed with dpkg into a throwaway root, its unit verified by
//! systemd-analyze, its helper started exactly as the unit's `ExecStart` says
//! inside a private network namespace, asked for its status by the packaged
//! ztunctl, stopped, and the package purged again.
//!
//! PID 1 here is not systemd, so nothing can start the unit itself; dpkg
//! runs the maintainer scripts without a chroot (`--force-script-chrootless`)
//! with `DPKG_ROOT` set, which the scripts honour, so they change only the
//! throwaway root. The test checks that the machine's own files are
//! untouched.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ztun_proto::service;
use ztun_tests::{can_run, eventually, Netns};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The package under test, or `None` (said loudly) when it was not built.
fn package(test: &str) -> Option<PathBuf> {
    if !can_run(test) {
        return None;
    }
    if let Some(deb) = std::env::var_os("ZTUN_DEB") {
        let deb = PathBuf::from(deb);
        assert!(deb.is_file(), "ZTUN_DEB={} is not a file", deb.display());
        return Some(deb);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: ZTUN_DEB is not set; CI runs scripts/test.sh, which builds the package and sets it"
    );
    eprintln!(
        "\n!!! SKIPPED {test}: ZTUN_DEB is not set; run scripts/test.sh (it builds the .deb with scripts/build-deb.sh)\n"
    );
    None
}

/// `dpkg-deb -c` as (mode, owner, path) of every entry.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    text(&run("dpkg-deb", &["-c", deb.to_str().unwrap()]))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), f[1].to_owned(), f[5].to_owned())
        })
        .collect()
}

fn control_field(deb: &Path, field: &str) -> String {
    let out = run("dpkg-deb", &["-f", deb.to_str().unwrap(), field]);
    text(&out).trim().to_owned()
}

#[test]
fn the_deb_holds_both_binaries_the_unit_and_the_maintainer_scripts() {
    let Some(deb) = package("the_deb_holds_both_binaries_the_unit_and_the_maintainer_scripts")
    else {
        return;
    };
    assert_eq!(control_field(&deb, "Package"), "ztun");
    assert_eq!(
        control_field(&deb, "Version"),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    let arch = text(&run("dpkg", &["--print-architecture"]));
    assert_eq!(control_field(&deb, "Architecture"), arch.trim());
    assert_eq!(control_field(&deb, "Section"), "net");
    assert!(
        control_field(&deb, "Depends").starts_with("libc6 (>= "),
        "dependencies come from the binaries' shared libraries"
    );
    assert!(!control_field(&deb, "Maintainer").is_empty());
    assert!(control_field(&deb, "Description").contains("ztunctl"));

    let entries = contents(&deb);
    for (_, owner, path) in &entries {
        assert_eq!(owner, "0/0", "{path} is owned by root");
        assert!(
            !path.starts_with("./usr/local/"),
            "{path}: Debian Policy 9.1.2"
        );
    }
    let mut files: Vec<(&str, &str)> = entries
        .iter()
        .filter(|(mode, ..)| !mode.starts_with('d'))
        .map(|(mode, _, path)| (path.as_str(), mode.as_str()))
        .collect();
    files.sort_unstable();
    let unit = format!(".{}/{}", service::LINUX_UNIT_DIR, service::LINUX_UNIT);
    let helper = format!(".{}", service::LINUX_HELPER_PATH);
    let ctl = format!(".{}", service::LINUX_CTL_PATH);
    let mut want = vec![
        (unit.as_str(), "-rw-r--r--"),
        (helper.as_str(), "-rwxr-xr-x"),
        (ctl.as_str(), "-rwxr-xr-x"),
        ("./usr/share/doc/ztun/README.md", "-rw-r--r--"),
        ("./usr/share/doc/ztun/copyright", "-rw-r--r--"),
        ("./usr/share/doc/ztun/operations.md", "-rw-r--r--"),
    ];
    want.sort_unstable();
    assert_eq!(files, want);

    // The maintainer scripts are the repository's, executable.
    let control = tempfile::tempdir().unwrap();
    run(
        "dpkg-deb",
        &[
            "-e",
            deb.to_str().unwrap(),
            control.path().to_str().unwrap(),
        ],
    );
    let mut names: Vec<String> = std::fs::read_dir(control.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["control", "postinst", "postrm", "prerm"]);
    for script in ["postinst", "prerm", "postrm"] {
        let got = control.path().join(script);
        assert_eq!(
            std::fs::read(&got).unwrap(),
            std::fs::read(repo(&format!("packaging/linux/debian/{script}"))).unwrap(),
            "{script}"
        );
        let mode = std::fs::metadata(&got).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{script}");
    }
}

/// What an install into another root must never touch on this machine.
fn host_state() -> Vec<(String, bool)> {
    let wants = format!(
        "/etc/systemd/system/multi-user.target.wants/{}",
        service::LINUX_UNIT
    );
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    vec![
        (wants.clone(), Path::new(&wants).exists()),
        (
            service::LINUX_STATE_DIR.to_owned(),
            Path::new(service::LINUX_STATE_DIR).exists(),
        ),
        (
            service::LINUX_HELPER_PATH.to_owned(),
            Path::new(service::LINUX_HELPER_PATH).exists(),
        ),
        (
            "group ztun".to_owned(),
            group.lines().any(|l| l.starts_with("ztun:")),
        ),
    ]
}

fn dpkg(root: &Path, args: &[&str]) -> Output {
    let root_flag = format!("--root={}", root.display());
    let mut all = vec![
        root_flag.as_str(),
        "--force-script-chrootless",
        // The throwaway root has no libc6 package, only the binaries' need.
        "--force-depends",
        "--log=/dev/null",
    ];
    all.extend_from_slice(args);
    run("dpkg", &all)
}

#[test]
fn the_installed_package_verifies_and_its_units_command_serves_ztunctl() {
    let Some(deb) = package("the_installed_package_verifies_and_its_units_command_serves_ztunctl")
    else {
        return;
    };
    let host_before = host_state();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let under = |p: &str| root.join(p.trim_start_matches('/'));
    // An empty dpkg database and the two group files groupadd edits.
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(under("/var/lib/dpkg/status"), "").unwrap();
    std::fs::write(under("/etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(under("/etc/gshadow"), "root:*::\n").unwrap();

    dpkg(&root, &["--install", deb.to_str().unwrap()]);
    let status = dpkg(&root, &["--status", "ztun"]);
    assert!(text(&status).contains("Status: install ok installed"));

    // What postinst did: the admin group, and the unit enabled.
    let group = std::fs::read_to_string(under("/etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("ztun:")), "{group}");
    let unit_path = format!("{}/{}", service::LINUX_UNIT_DIR, service::LINUX_UNIT);
    let wants = under(&format!(
        "/etc/systemd/system/multi-user.target.wants/{}",
        service::LINUX_UNIT
    ));
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new(&unit_path),
        "enabled"
    );
    // An upgrade (the same package again: prerm upgrade, postinst
    // configure OLD-VERSION) keeps it enabled, and keeps an admin's disable.
    dpkg(&root, &["--install", deb.to_str().unwrap()]);
    assert_eq!(std::fs::read_link(&wants).unwrap(), Path::new(&unit_path));
    let systemctl = |verb: &str| {
        let root_flag = format!("--root={}", root.display());
        run(
            "systemctl",
            &[root_flag.as_str(), verb, service::LINUX_UNIT],
        );
    };
    systemctl("disable");
    assert!(wants.symlink_metadata().is_err());
    dpkg(&root, &["--install", deb.to_str().unwrap()]);
    assert!(
        wants.symlink_metadata().is_err(),
        "an upgrade enabled a unit the admin had disabled"
    );
    systemctl("enable");

    // The unit as installed is the repository's, and systemd accepts it,
    // ExecStart's binary included (looked up inside the root).
    let unit = std::fs::read_to_string(under(&unit_path)).unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(repo("packaging/linux/ztun-helper.service")).unwrap()
    );
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        // Only this unit's errors: the root has no sysinit.target & co.
        .arg("--recursive-errors=no")
        .arg(&unit_path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // Start the helper as the unit would, with the socket and state
    // directory moved into a temp dir, inside a namespace of its own.
    let exec: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], service::LINUX_HELPER_PATH);
    let socket = dir.path().join("run/control.sock");
    let state = dir.path().join("state");
    let mut args = exec[1..].to_vec();
    for (flag, default, ours) in [
        ("--socket", ztun_proto::DEFAULT_SOCKET_PATH, &socket),
        ("--state-dir", service::LINUX_STATE_DIR, &state),
    ] {
        let i = args.iter().position(|a| a == flag).unwrap();
        assert_eq!(args[i + 1], default);
        args[i + 1] = ours.to_str().unwrap().to_owned();
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let helper_bin = under(&exec[0]);
    let ns = Netns::new("deb").unwrap();
    let mut helper = ns.spawn(helper_bin.to_str().unwrap(), &args).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || socket.exists()),
        "the packaged helper did not create its socket"
    );

    let ctl = under(service::LINUX_CTL_PATH);
    let ctl = ctl.to_str().unwrap();
    let sock = socket.to_str().unwrap();
    let status = ns
        .exec_unchecked(ctl, &["--socket", sock, "status"])
        .unwrap();
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    assert_eq!(text(&status), "no tunnels are up\n");
    let version = ns.exec(ctl, &["--socket", sock, "version"]).unwrap();
    let version = text(&version);
    let want = env!("CARGO_PKG_VERSION");
    assert!(
        version.contains(&format!("ztunctl {want}"))
            && version.contains(&format!("ztun-helper {want}")),
        "{version}"
    );
    // What prerm runs on remove.
    let down = ns.exec(ctl, &["--socket", sock, "down", "--all"]).unwrap();
    assert_eq!(text(&down), "all tunnels are down\n");

    // KillSignal=SIGTERM is the ordered shutdown: a clean exit.
    helper.signal(libc::SIGTERM).unwrap();
    let exit = helper.wait_for_exit(Duration::from_secs(10)).unwrap();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    assert!(!socket.exists(), "the helper removes its socket on SIGTERM");
    drop(helper);
    drop(ns);

    // Purge: files, enablement and the state directory go; the group stays.
    std::fs::create_dir_all(under(service::LINUX_STATE_DIR)).unwrap();
    std::fs::write(under(service::LINUX_STATE_DIR).join("routes.plist"), "x").unwrap();
    dpkg(&root, &["--purge", "ztun"]);
    for gone in [
        service::LINUX_HELPER_PATH,
        service::LINUX_CTL_PATH,
        &unit_path,
        service::LINUX_STATE_DIR,
    ] {
        assert!(!under(gone).exists(), "{gone} survived the purge");
    }
    assert!(
        wants.symlink_metadata().is_err(),
        "enablement survived the purge"
    );
    let group = std::fs::read_to_string(under("/etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("ztun:")));

    assert_eq!(host_state(), host_before, "the machine's own files changed");
}
