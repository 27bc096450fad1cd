//! The packaging files agree with the code: every name and path in the
//! launchd job, the entitlements, the systemd unit, the macOS installer
//! (component plist, distribution, build script, install and uninstall
//! scripts) and the Debian maintainer scripts is the one `ztun_proto::service`
//! (and the helper's defaults) use. One source of truth, checked, so a
//! rename cannot leave an installer pointing nowhere. The built .deb itself
//! is installed and run by `tests/deb.rs`.
#![allow(clippy::unwrap_used)] // test inputs are built here, not received

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

// ---------------------------------------------------------------------------
// macOS installer: component plist and distribution

#[test]
fn the_component_plist_is_a_valid_empty_bundle_list() {
    // The payload has no bundles (the dry run below shows exactly what it
    // holds), so there is nothing to describe; pkgbuild wants an array.
    let list = Value::from_file(repo("packaging/macos/component.plist")).unwrap();
    assert_eq!(list, Value::Array(Vec::new()));
}

/// One element of an XML document: its path from the root
/// (`installer-gui-script/choice/pkg-ref`), attributes and text.
#[derive(Debug)]
struct Element {
    path: String,
    attrs: HashMap<String, String>,
    text: String,
}

fn xml_elements(path: &str) -> Vec<Element> {
    use quick_xml::events::{BytesStart, Event};

    fn open(e: &BytesStart<'_>, stack: &[String]) -> Element {
        let name = e.name().as_ref().to_owned();
        let attrs = e
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    a.key.as_ref().to_owned(),
                    a.normalized_value(quick_xml::XmlVersion::default())
                        .unwrap()
                        .into_owned(),
                )
            })
            .collect();
        let mut path = stack.join("/");
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(&name);
        Element {
            path,
            attrs,
            text: String::new(),
        }
    }

    let xml = std::fs::read_to_string(repo(path)).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut all, mut stack, mut open_idx) = (Vec::new(), Vec::<String>::new(), Vec::new());
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => {
                let el = open(&e, &stack);
                stack.push(el.path.rsplit('/').next().unwrap().to_owned());
                open_idx.push(all.len());
                all.push(el);
            }
            Event::Empty(e) => all.push(open(&e, &stack)),
            Event::Text(t) => {
                if let Some(&i) = open_idx.last() {
                    let el: &mut Element = &mut all[i];
                    el.text.push_str(t.xml10_content().trim());
                }
            }
            Event::End(_) => {
                stack.pop();
                open_idx.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty(), "{path}: unbalanced XML");
    all
}

fn find<'a>(doc: &'a [Element], path: &str) -> Vec<&'a Element> {
    doc.iter().filter(|e| e.path == path).collect()
}

fn attr<'a>(el: &'a Element, name: &str) -> &'a str {
    el.attrs
        .get(name)
        .unwrap_or_else(|| panic!("{} has no attribute {name}", el.path))
}

/// The component package that pkgbuild writes and productbuild finds in
/// `--package-path`: the text of the distribution's pkg-ref.
fn distribution_component_file() -> String {
    let doc = xml_elements("packaging/macos/distribution.xml");
    let refs: Vec<_> = find(&doc, "installer-gui-script/pkg-ref")
        .into_iter()
        .filter(|e| !e.text.is_empty())
        .collect();
    assert_eq!(refs.len(), 1, "one pkg-ref names the component file");
    refs[0].text.clone()
}

#[test]
fn the_distribution_offers_one_choice_installing_the_package_on_macos_11_and_both_archs() {
    const ROOT: &str = "installer-gui-script";
    let doc = xml_elements("packaging/macos/distribution.xml");
    assert_eq!(doc[0].path, ROOT);
    assert_eq!(attr(&doc[0], "minSpecVersion"), "2");
    assert_eq!(find(&doc, &format!("{ROOT}/title"))[0].text, "ztun");

    let options = find(&doc, &format!("{ROOT}/options"));
    assert_eq!(options.len(), 1);
    let mut archs: Vec<&str> = attr(options[0], "hostArchitectures").split(',').collect();
    archs.sort_unstable();
    assert_eq!(archs, ["arm64", "x86_64"]);
    assert_eq!(attr(options[0], "customize"), "never");

    let os = find(&doc, &format!("{ROOT}/allowed-os-versions/os-version"));
    assert_eq!(os.len(), 1);
    assert_eq!(attr(os[0], "min"), "11.0");

    // A system daemon: the boot volume's system domain only.
    let domains = find(&doc, &format!("{ROOT}/domains"))[0];
    assert_eq!(attr(domains, "enable_localSystem"), "true");
    assert_eq!(attr(domains, "enable_anywhere"), "false");
    assert_eq!(attr(domains, "enable_currentUserHome"), "false");

    // One choice, in the outline, holding the one package.
    let choices = find(&doc, &format!("{ROOT}/choice"));
    assert_eq!(choices.len(), 1);
    let lines = find(&doc, &format!("{ROOT}/choices-outline/line"));
    assert_eq!(lines.len(), 1);
    assert_eq!(attr(lines[0], "choice"), attr(choices[0], "id"));
    let in_choice = find(&doc, &format!("{ROOT}/choice/pkg-ref"));
    assert_eq!(in_choice.len(), 1);
    assert_eq!(attr(in_choice[0], "id"), service::MACOS_PKG_ID);
    let top_refs = find(&doc, &format!("{ROOT}/pkg-ref"));
    assert_eq!(top_refs.len(), 1);
    assert_eq!(attr(top_refs[0], "id"), service::MACOS_PKG_ID);
    assert_eq!(distribution_component_file(), "ztun.pkg");
}

// ---------------------------------------------------------------------------
// macOS installer: build-pkg.sh --dry-run

const SIGN_ID: &str = "Developer ID Application: Example Corp (TEAM123456)";
const INSTALLER_ID: &str = "Developer ID Installer: Example Corp (TEAM123456)";

fn build_pkg(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo("packaging/macos/build-pkg.sh")).args(args);
    for var in [
        "ZTUN_SIGN_IDENTITY",
        "ZTUN_INSTALLER_IDENTITY",
        "ZTUN_NOTARY_PROFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_TARGET_DIR", "/tgt");
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

/// The dry run's commands, each split as a shell would split it.
fn dry_run(args: &[&str], env: &[(&str, &str)]) -> (Vec<Vec<String>>, String) {
    let mut all = vec!["--dry-run", "--out", "/o", "--version", "9.8.7"];
    all.extend_from_slice(args);
    let out = build_pkg(&all, env);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "build-pkg.sh --dry-run failed: {stderr}"
    );
    let commands = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| shlex::split(l).unwrap_or_else(|| panic!("not a shell command: {l}")))
        .collect();
    (commands, stderr)
}

fn commands_of<'a>(commands: &'a [Vec<String>], program: &str) -> Vec<&'a Vec<String>> {
    commands.iter().filter(|c| c[0] == program).collect()
}

fn position(commands: &[Vec<String>], pred: impl Fn(&[String]) -> bool) -> usize {
    commands
        .iter()
        .position(|c| pred(c))
        .expect("a command the test looks for")
}

/// The value after `flag` in a command line.
fn flag<'a>(command: &'a [String], name: &str) -> Option<&'a str> {
    let i = command.iter().position(|a| a == name)?;
    command.get(i + 1).map(String::as_str)
}

/// What both dry runs share: universal binaries from both targets, the
/// payload at the code's paths, pkgbuild and productbuild.
fn check_common(commands: &[Vec<String>]) {
    const TARGETS: [&str; 2] = ["aarch64-apple-darwin", "x86_64-apple-darwin"];
    let builds = commands_of(commands, "cargo");
    assert_eq!(builds.len(), 2);
    for (build, target) in builds.iter().zip(TARGETS) {
        assert_eq!(build[1], "build");
        for word in ["--release", "--locked"] {
            assert!(build.iter().any(|a| a == word), "{build:?}");
        }
        assert_eq!(flag(build, "--target"), Some(target));
        let packages: Vec<_> = build
            .windows(2)
            .filter(|w| w[0] == "-p")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(packages, ["ztun-helper", "ztunctl"]);
    }

    let lipo = commands_of(commands, "lipo");
    assert_eq!(lipo.len(), 2);
    for (cmd, name) in lipo.iter().zip(["ztun-helper", "ztunctl"]) {
        let want: Vec<String> = [
            "lipo".to_owned(),
            "-create".to_owned(),
            "-output".to_owned(),
            format!("/o/bin/{name}"),
            format!("/tgt/{}/release/{name}", TARGETS[0]),
            format!("/tgt/{}/release/{name}", TARGETS[1]),
        ]
        .into();
        assert_eq!(**cmd, want);
    }

    // The payload: exactly the three files, at the code's paths.
    let installs: Vec<(String, String, String)> = commands_of(commands, "install")
        .iter()
        .map(|c| {
            assert_eq!(c.len(), 5, "install -m MODE SRC DST: {c:?}");
            assert_eq!(c[1], "-m");
            (c[2].clone(), c[3].clone(), c[4].clone())
        })
        .collect();
    let want = [
        (
            "0755",
            "/o/bin/ztun-helper".to_owned(),
            service::MACOS_HELPER_PATH,
        ),
        (
            "0644",
            "launchd/com.ztun.helper.plist".to_owned(),
            service::MACOS_LAUNCHD_PLIST,
        ),
        ("0755", "/o/bin/ztunctl".to_owned(), service::MACOS_CTL_PATH),
    ]
    .map(|(m, src, dst)| (m.to_owned(), src, format!("/o/root{dst}")));
    assert_eq!(installs, want);
    for (_, src, _) in &installs {
        if !src.starts_with('/') {
            assert!(repo(src).is_file(), "{src} is not in the repository");
        }
    }
    assert!(
        !commands.iter().flatten().any(|a| a.contains(".app")),
        "no bundles in the payload, so component.plist stays empty"
    );

    let pkgbuild = commands_of(commands, "pkgbuild");
    assert_eq!(pkgbuild.len(), 1);
    let pkgbuild = pkgbuild[0];
    assert_eq!(flag(pkgbuild, "--root"), Some("/o/root"));
    assert_eq!(flag(pkgbuild, "--identifier"), Some(service::MACOS_PKG_ID));
    assert_eq!(flag(pkgbuild, "--version"), Some("9.8.7"));
    assert_eq!(flag(pkgbuild, "--install-location"), Some("/"));
    // root:wheel for every payload file, whoever built the staging tree.
    assert_eq!(flag(pkgbuild, "--ownership"), Some("recommended"));
    assert_eq!(
        flag(pkgbuild, "--component-plist"),
        Some("packaging/macos/component.plist")
    );
    let scripts = flag(pkgbuild, "--scripts").unwrap();
    assert_eq!(scripts, "packaging/macos/scripts");
    for script in ["preinstall", "postinstall"] {
        let meta = std::fs::metadata(repo(scripts).join(script)).unwrap();
        assert!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0,
            "{script} must be executable: Installer runs it as is"
        );
    }
    assert_eq!(
        pkgbuild.last().unwrap(),
        &format!("/o/packages/{}", distribution_component_file())
    );

    let productbuild = commands_of(commands, "productbuild");
    assert_eq!(productbuild.len(), 1);
    let productbuild = productbuild[0];
    assert_eq!(
        flag(productbuild, "--distribution"),
        Some("packaging/macos/distribution.xml")
    );
    assert_eq!(flag(productbuild, "--package-path"), Some("/o/packages"));
    assert_eq!(productbuild.last().unwrap(), "/o/ztun-9.8.7.pkg");

    // Order: build, lipo, payload, pkgbuild, productbuild.
    let at = |p: &str| position(commands, |c| c[0] == p);
    assert!(at("cargo") < at("lipo"));
    assert!(at("lipo") < at("install"));
    assert!(at("install") < at("pkgbuild"));
    assert!(at("pkgbuild") < at("productbuild"));
}

#[test]
fn the_unsigned_dry_run_builds_universal_binaries_and_the_package_without_signing() {
    let (commands, stderr) = dry_run(&[], &[]);
    check_common(&commands);
    assert!(commands_of(&commands, "codesign").is_empty());
    assert!(commands_of(&commands, "xcrun").is_empty());
    assert!(commands_of(&commands, "pkgutil").is_empty());
    let productbuild = commands_of(&commands, "productbuild")[0];
    assert_eq!(flag(productbuild, "--sign"), None);
    // Said once, on one line each, not hidden.
    assert_eq!(
        stderr.lines().filter(|l| l.contains("UNSIGNED")).count(),
        2,
        "{stderr}"
    );
}

#[test]
fn the_signed_dry_run_signs_with_the_hardened_runtime_then_notarizes_and_staples() {
    // The identity from the environment, the others as flags: both work.
    let (commands, stderr) = dry_run(
        &[
            "--installer-identity",
            INSTALLER_ID,
            "--notary-profile",
            "ztun-notary",
        ],
        &[("ZTUN_SIGN_IDENTITY", SIGN_ID)],
    );
    check_common(&commands);
    assert!(!stderr.contains("UNSIGNED"), "{stderr}");

    let signs: Vec<_> = commands_of(&commands, "codesign")
        .into_iter()
        .filter(|c| c.iter().any(|a| a == "--sign"))
        .collect();
    assert_eq!(signs.len(), 2);
    for (cmd, (file, entitlements, id)) in signs.iter().zip([
        ("ztun-helper", "helper", service::LABEL),
        ("ztunctl", "ztunctl", service::MACOS_CTL_SIGNING_ID),
    ]) {
        assert!(cmd.iter().any(|a| a == "--force"), "{cmd:?}");
        assert!(cmd.iter().any(|a| a == "--timestamp"), "{cmd:?}");
        assert_eq!(flag(cmd, "--options"), Some("runtime"), "hardened runtime");
        let ent = format!("entitlements/{entitlements}.entitlements");
        assert_eq!(flag(cmd, "--entitlements"), Some(ent.as_str()));
        assert!(repo(&ent).is_file());
        assert_eq!(flag(cmd, "--sign"), Some(SIGN_ID));
        assert_eq!(flag(cmd, "--identifier"), Some(id));
        assert_eq!(cmd.last().unwrap(), &format!("/o/bin/{file}"));
    }
    // Signed after lipo (codesign signs every slice of the universal
    // file), verified, and only then copied into the payload.
    let first_sign = position(&commands, |c| c[0] == "codesign");
    let verify = position(&commands, |c| {
        c[0] == "codesign" && c.iter().any(|a| a == "--verify")
    });
    assert!(position(&commands, |c| c[0] == "lipo") < first_sign);
    assert!(first_sign < verify);
    assert!(verify < position(&commands, |c| c[0] == "install"));

    let productbuild = commands_of(&commands, "productbuild")[0];
    assert_eq!(flag(productbuild, "--sign"), Some(INSTALLER_ID));
    let product = "/o/ztun-9.8.7.pkg".to_owned();
    let tail: Vec<Vec<String>> = commands[commands.len() - 3..].to_vec();
    let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        tail,
        [
            words(&format!("pkgutil --check-signature {product}")),
            words(&format!(
                "xcrun notarytool submit {product} --keychain-profile ztun-notary --wait"
            )),
            words(&format!("xcrun stapler staple {product}")),
        ]
    );
}

#[test]
fn build_pkg_refuses_what_it_cannot_do_in_one_line_that_says_what_to_do() {
    let once = |args: &[&str]| {
        let out = build_pkg(args, &[]);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        (out.status.code(), err)
    };
    let (code, err) = once(&["--dry-run", "--notary-profile", "p"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--identity and --installer-identity"), "{err}");
    let (code, err) = once(&["--frobnicate"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--help"), "{err}");
    if !cfg!(target_os = "macos") {
        let (code, err) = once(&[]);
        assert_eq!(code, Some(1));
        assert!(
            err.contains("only on macOS") && err.contains("--dry-run"),
            "{err}"
        );
    }
    let help = build_pkg(&["--help"], &[]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    for word in [
        "--identity",
        "--installer-identity",
        "--notary-profile",
        "--dry-run",
    ] {
        assert!(help.contains(word), "--help mentions {word}");
    }
}

// ---------------------------------------------------------------------------
// Install scripts: their names and paths are the code's

/// `NAME=value` (or `readonly NAME=value`) lines of a shell script,
/// unquoted, with the uninstall script's `$R` (its test root) taken off.
fn assignments(path: &str) -> HashMap<String, String> {
    std::fs::read_to_string(repo(path))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once('=')?;
            let name = name.trim_start_matches("readonly ");
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
            ok.then(|| {
                let value = value.trim_matches('"').trim_start_matches("$R");
                (name.to_owned(), value.to_owned())
            })
        })
        .collect()
}

fn parent(path: &str) -> &str {
    Path::new(path).parent().unwrap().to_str().unwrap()
}

#[test]
fn the_install_scripts_use_the_codes_names_and_paths() {
    let check = |path: &str, want: &[(&str, &str)]| {
        let vars = assignments(path);
        for (name, value) in want {
            assert_eq!(
                vars.get(*name).map(String::as_str),
                Some(*value),
                "{path}: {name}"
            );
        }
    };
    check(
        "packaging/macos/scripts/preinstall",
        &[("LABEL", service::LABEL)],
    );
    check(
        "packaging/macos/scripts/postinstall",
        &[
            ("LABEL", service::LABEL),
            ("PLIST", service::MACOS_LAUNCHD_PLIST),
            ("CTL", service::MACOS_CTL_PATH),
            ("LOG", service::MACOS_LOG_PATH),
        ],
    );
    check(
        "packaging/macos/uninstall.sh",
        &[
            ("LABEL", service::LABEL),
            ("HELPER", service::MACOS_HELPER_PATH),
            ("PLIST", service::MACOS_LAUNCHD_PLIST),
            ("CTL", service::MACOS_CTL_PATH),
            ("LOG_DIR", parent(service::MACOS_LOG_PATH)),
            ("STATE_DIR", service::MACOS_STATE_DIR),
            ("PKG_ID", service::MACOS_PKG_ID),
        ],
    );
    check(
        "packaging/macos/build-pkg.sh",
        &[
            ("HELPER_PATH", service::MACOS_HELPER_PATH),
            ("LAUNCHD_PLIST", service::MACOS_LAUNCHD_PLIST),
            ("CTL_PATH", service::MACOS_CTL_PATH),
            ("HELPER_ID", service::LABEL),
            ("CTL_ID", service::MACOS_CTL_SIGNING_ID),
            ("PKG_ID", service::MACOS_PKG_ID),
        ],
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = format!("packaging/linux/debian/{script}");
        check(&path, &[("UNIT", service::LINUX_UNIT)]);
    }
    check(
        "packaging/linux/debian/postinst",
        &[("CTL", service::LINUX_CTL_PATH)],
    );
    check(
        "packaging/linux/debian/prerm",
        &[("CTL", service::LINUX_CTL_PATH)],
    );
    check(
        "packaging/linux/debian/postrm",
        &[("STATE_DIR", service::LINUX_STATE_DIR)],
    );
}

// ---------------------------------------------------------------------------
// macOS uninstall.sh, run on Linux against a fake install

/// Stand-ins for launchctl, pkgutil and ztunctl that log every call to
/// `calls` and keep "the job is loaded" and "the receipt exists" as files.
fn write_stub(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct FakeMac {
    _dir: tempfile::TempDir,
    root: PathBuf,
    stubs: PathBuf,
    calls: PathBuf,
}

impl FakeMac {
    fn installed() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let stubs = dir.path().join("stubs");
        let calls = dir.path().join("calls");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let log = format!("echo \"$(basename \"$0\") $*\" >> '{}'\n", calls.display());
        let st = state.display();
        write_stub(
            &stubs.join("launchctl"),
            &format!(
                "{log}case $1 in\n  print) [ -e '{st}/loaded' ] ;;\n  bootout) rm -f '{st}/loaded' ;;\nesac\n"
            ),
        );
        write_stub(
            &stubs.join("pkgutil"),
            &format!(
                "{log}case $1 in\n  --pkg-info) [ -e '{st}/receipt' ] ;;\n  --forget) rm -f '{st}/receipt' ;;\nesac\n"
            ),
        );
        std::fs::write(state.join("loaded"), "").unwrap();
        std::fs::write(state.join("receipt"), "").unwrap();
        let under = |p: &str| root.join(p.trim_start_matches('/'));
        write_stub(&under(service::MACOS_CTL_PATH), &log);
        for file in [
            service::MACOS_HELPER_PATH,
            service::MACOS_LAUNCHD_PLIST,
            service::MACOS_LOG_PATH,
        ] {
            std::fs::create_dir_all(under(file).parent().unwrap()).unwrap();
            std::fs::write(under(file), "x").unwrap();
        }
        let ledger = under(service::MACOS_STATE_DIR).join("routes.plist");
        std::fs::create_dir_all(ledger.parent().unwrap()).unwrap();
        std::fs::write(
            ledger,
            "<plist version=\"1.0\"><dict><key>version</key><integer>1</integer>\
             <key>routes</key><array/></dict></plist>",
        )
        .unwrap();
        std::fs::create_dir_all(under("/var/run/ztun")).unwrap();
        Self {
            _dir: dir,
            root,
            stubs,
            calls,
        }
    }

    fn uninstall(&self, as_nobody: bool) -> Output {
        let path = format!(
            "{}:{}",
            self.stubs.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let script = repo("packaging/macos/uninstall.sh");
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh"]);
            c.arg(&script);
            c
        } else {
            let mut c = Command::new("sh");
            c.arg(&script);
            c
        };
        cmd.env("ZTUN_ROOT", &self.root)
            .env("PATH", path)
            .output()
            .unwrap()
    }

    fn under(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every file left under the fake root.
    fn files(&self) -> Vec<String> {
        fn walk(dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p.display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }
}

#[test]
fn uninstall_downs_the_tunnels_before_the_bootout_removes_everything_and_is_idempotent() {
    let mac = FakeMac::installed();
    if !is_root() {
        // Not root: the script must refuse, and change nothing.
        let out = mac.uninstall(false);
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));
        assert!(mac.calls().is_empty());
        eprintln!("uninstall_downs_…: only the not-root refusal checked; run as root for the rest");
        return;
    }
    let refused = mac.uninstall(true);
    assert_eq!(refused.status.code(), Some(1), "as nobody");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("must run as root: sudo"), "{err}");
    assert!(mac.calls().is_empty(), "a refused run touches nothing");
    assert_eq!(mac.files().len(), 5);

    let first = mac.uninstall(false);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        stdout.lines().last(),
        Some("ztun is uninstalled"),
        "{stdout}"
    );
    let job = format!("system/{}", service::LABEL);
    assert_eq!(
        mac.calls(),
        [
            format!("launchctl print {job}"),
            "ztunctl --timeout 20 down --all".to_owned(),
            format!("launchctl bootout {job}"),
            format!("launchctl print {job}"),
            format!("launchctl print {job}"),
            format!("pkgutil --pkg-info {}", service::MACOS_PKG_ID),
            format!("pkgutil --forget {}", service::MACOS_PKG_ID),
        ],
        "routes first (down --all while the helper runs), then bootout, then the receipt"
    );
    assert_eq!(mac.files(), Vec::<String>::new(), "every file is gone");
    // ztun's own directories are gone; the system's stay, empty.
    assert!(!mac.root.join("var/run/ztun").exists());
    for dir in [parent(service::MACOS_LOG_PATH), service::MACOS_STATE_DIR] {
        assert!(!mac.under(dir).exists(), "{dir}");
    }
    for dir in [
        parent(service::MACOS_HELPER_PATH),
        parent(service::MACOS_LAUNCHD_PLIST),
        parent(service::MACOS_CTL_PATH),
        parent(parent(service::MACOS_LOG_PATH)),
        parent(service::MACOS_STATE_DIR),
    ] {
        let entries = std::fs::read_dir(mac.under(dir)).unwrap().count();
        assert_eq!(entries, 0, "{dir} stays, and holds nothing of ztun's");
    }

    let before = mac.calls().len();
    let second = mac.uninstall(false);
    assert!(second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stdout),
        "ztun is not installed: nothing to do\n"
    );
    assert_eq!(
        mac.calls()[before..],
        [
            format!("launchctl print {job}"),
            format!("pkgutil --pkg-info {}", service::MACOS_PKG_ID),
        ],
        "the second run only looks"
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}
