//! ztun-tests: the end-to-end harness. Tests build their own network
//! namespaces joined by veth links, run real programs inside them (the
//! helper, ztunctl, ping, curl, iperf3, SOCKS servers) and take everything
//! down again. The e2e tests themselves are in `tests/linux_e2e.rs`.
//!
//! Rules it enforces (DESIGN.md §7):
//! - Nothing is created in the root namespace: links are made with
//!   `ip -n NS`, so both ends are born inside test namespaces.
//! - Everything started is stopped by pid when its guard drops, and every
//!   namespace is deleted, also when a test panics.
//! - Without root the tests skip with a loud message; under `CI=true` a
//!   missing root is a failure, because CI must never skip them.

pub mod servers;

use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether end-to-end tests can run here; prints why not when they cannot.
///
/// # Panics
/// Under `CI=true` without root: CI must run these tests, never skip them.
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: end-to-end tests need root and CI must not skip them"
    );
    eprintln!(
        "\n!!! SKIPPED {test}: end-to-end tests need root (network namespaces); run as root\n"
    );
    false
}

/// Runs a command to completion; a non-zero exit is an error carrying its
/// stderr, so a failed setup step says what failed.
pub fn run(program: &str, args: &[&str]) -> io::Result<Output> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by a test; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `ztun-<pid>-<n>-<label>` with its loopback up.
    pub fn new(label: &str) -> io::Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ztun-{}-{n}-{label}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS…`: configuration applied inside this namespace only.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn exec_args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        all
    }

    /// Runs `program` inside the namespace to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        run("ip", &self.exec_args(program, args))
    }

    /// Like [`Netns::exec`], but returns the output whatever the exit status.
    pub fn exec_unchecked(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(self.exec_args(program, args))
            .stdin(Stdio::null())
            .output()
    }

    /// Starts `program` inside the namespace; it is killed when the guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> io::Result<Process> {
        let child = Command::new("ip")
            .args(self.exec_args(program, args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(Process {
            child,
            what: format!("{program} in {}", self.name),
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace also deletes the veth ends inside it.
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// A veth link between two namespaces, each end addressed (`"198.51.100.1/24"`).
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> io::Result<(String, String)> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (a_if, b_if) = (format!("va{n}"), format!("vb{n}"));
    a.ip(&[
        "link",
        "add",
        &a_if,
        "type",
        "veth",
        "peer",
        "name",
        &b_if,
        "netns",
        b.name(),
    ])?;
    for (ns, ifname, addr) in [(a, &a_if, a_addr), (b, &b_if, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", ifname])?;
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok((a_if, b_if))
}

/// A process started by a test; killed (by pid) and reaped on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
    what: String,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Appends everything the process writes to stdout and stderr to
    /// `path`, from threads that drain its pipes until it exits. A process
    /// whose pipes nobody reads blocks once they fill (64 KiB): a long test
    /// would see it hang.
    pub fn log_to(&mut self, path: &std::path::Path) -> io::Result<()> {
        let pipes: [Option<Box<dyn io::Read + Send>>; 2] = [
            self.child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
            self.child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        ];
        for mut pipe in pipes.into_iter().flatten() {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            std::thread::spawn(move || {
                let _ = io::copy(&mut pipe, &mut file);
            });
        }
        Ok(())
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, not yet reaped, so it cannot name another process.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_for_exit(
        &mut self,
        limit: Duration,
    ) -> io::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Err(e) = self.child.kill() {
                eprintln!(
                    "warning: could not kill {} (pid {}): {e}",
                    self.what,
                    self.child.id()
                );
            }
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// A built binary of this workspace (`ztun-helper`, `ztunctl`), next to the
/// test executable's directory.
///
/// # Panics
/// When it is not built: `cargo test --workspace` (scripts/test.sh) builds it.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build -p ztun-helper -p ztunctl` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The end-to-end topology, as in `scripts/demo.sh`: a client namespace
/// that runs the helper, with its default route over a veth to a server
/// namespace that holds the destinations (203.0.113.5 and 203.0.113.200 on
/// its loopback). All addresses are documentation addresses.
#[derive(Debug)]
pub struct Topology {
    pub client: Netns,
    pub server: Netns,
    pub dir: std::path::PathBuf,
}

pub const SERVER: &str = "203.0.113.5";
/// A server address outside the routes the tests steer into the tunnel.
pub const BYPASS: &str = "203.0.113.200";
/// The client's physical address: what servers see as the source.
pub const CLIENT_PHYSICAL: &str = "198.51.100.1";

impl Topology {
    pub fn new(test: &str) -> io::Result<Self> {
        let client = Netns::new("c")?;
        let server = Netns::new("s")?;
        client.ip(&[
            "link",
            "add",
            "veth-c",
            "type",
            "veth",
            "peer",
            "name",
            "veth-s",
            "netns",
            server.name(),
        ])?;
        client.ip(&["addr", "add", "198.51.100.1/24", "dev", "veth-c"])?;
        client.ip(&["addr", "add", "2001:db8:c::1/64", "dev", "veth-c", "nodad"])?;
        client.ip(&["link", "set", "veth-c", "up"])?;
        server.ip(&["addr", "add", "198.51.100.2/24", "dev", "veth-s"])?;
        server.ip(&["addr", "add", "2001:db8:c::2/64", "dev", "veth-s", "nodad"])?;
        server.ip(&["link", "set", "veth-s", "up"])?;
        for addr in ["203.0.113.5/32", "203.0.113.200/32", "2001:db8:5::5/128"] {
            server.ip(&["addr", "add", addr, "dev", "lo"])?;
        }
        client.ip(&["route", "add", "default", "via", "198.51.100.2"])?;
        client.ip(&["-6", "route", "add", "default", "via", "2001:db8:c::2"])?;
        let dir = std::env::temp_dir().join(format!("ztun-e2e-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            client,
            server,
            dir,
        })
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.join("control.sock")
    }

    /// Starts the helper in the client namespace and waits for its socket.
    pub fn start_helper(&self) -> io::Result<Process> {
        self.start_helper_with(&[])
    }

    /// Starts the helper with extra environment (`NAME=value` each, e.g.
    /// `ZTUN_CRASH_AT=up:3`) and waits for its socket. A socket file left by
    /// a killed helper is removed first, so the wait means this one is up.
    pub fn start_helper_with(&self, env: &[&str]) -> io::Result<Process> {
        let helper = workspace_bin("ztun-helper");
        let sock = self.socket();
        let state = self.dir.join("state");
        match std::fs::remove_file(&sock) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut args: Vec<&str> = env.to_vec();
        args.extend_from_slice(&[
            helper.to_str().unwrap_or_default(),
            "--socket",
            sock.to_str().unwrap_or_default(),
            "--state-dir",
            state.to_str().unwrap_or_default(),
        ]);
        let mut p = self.client.spawn("env", &args)?;
        p.log_to(&self.dir.join("helper.log"))?;
        if !eventually(Duration::from_secs(10), || sock.exists()) {
            return Err(io::Error::other(
                "ztun-helper did not create its socket within 10 s",
            ));
        }
        Ok(p)
    }

    /// Runs ztunctl against this topology's helper; returns the output
    /// whatever the exit code.
    pub fn ztunctl(&self, args: &[&str]) -> io::Result<Output> {
        let ctl = workspace_bin("ztunctl");
        let sock = self.socket();
        let mut all = vec!["--socket", sock.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        self.client
            .exec_unchecked(ctl.to_str().unwrap_or_default(), &all)
    }

    /// ztunctl that must succeed; returns its stdout.
    pub fn ztunctl_ok(&self, args: &[&str]) -> io::Result<String> {
        let out = self.ztunctl(args)?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ztunctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The client namespace's routing table (both families), as text.
    pub fn client_routes(&self) -> io::Result<String> {
        let v4 = self.client.ip(&["route"])?;
        let v6 = self.client.ip(&["-6", "route"])?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&v4.stdout),
            String::from_utf8_lossy(&v6.stdout)
        ))
    }

    /// Echo requests the server's kernel has answered (`Icmp: InEchos`).
    pub fn server_echoes(&self) -> io::Result<u64> {
        let snmp = self.server.exec("cat", &["/proc/net/snmp"])?;
        let text = String::from_utf8_lossy(&snmp.stdout).into_owned();
        let mut icmp = text.lines().filter(|l| l.starts_with("Icmp:"));
        let (names, values) = (
            icmp.next().unwrap_or_default(),
            icmp.next().unwrap_or_default(),
        );
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InEchos")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| io::Error::other("no Icmp InEchos in /proc/net/snmp"))
    }

    /// ICMPv6 echo requests the server's kernel has received (`Icmp6InEchos`).
    pub fn server_echoes6(&self) -> io::Result<u64> {
        let snmp = self.server.exec("cat", &["/proc/net/snmp6"])?;
        String::from_utf8_lossy(&snmp.stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("Icmp6InEchos")
                    .and_then(|v| v.trim().parse().ok())
            })
            .ok_or_else(|| io::Error::other("no Icmp6InEchos in /proc/net/snmp6"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `ip netns exec` bind-mounts `/etc/netns/NS/resolv.conf` over
/// `/etc/resolv.conf` for programs in NS: the client namespace's own
/// resolver list, removed with the guard.
#[derive(Debug)]
pub struct NetnsResolvConf(std::path::PathBuf);

#[allow(clippy::unwrap_used, clippy::missing_panics_doc)]
impl NetnsResolvConf {
    pub fn new(ns: &str, text: &str) -> Self {
        let dir = std::path::PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        Self(dir)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // /etc/netns itself, if this made it and nothing else uses it.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}
