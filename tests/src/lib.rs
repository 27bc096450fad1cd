//! ztun-tests: the end-to-end harness. Tests build their own network
//! namespaces joined by veth links, run real programs inside them (the
//! helper, ztunctl, ping, curl, iperf3, SOCKS servers) and take everything
//! down again.
//!
//! Rules it enforces (DESIGN.md §7):
//! - Nothing is created in the root namespace: links are made with
//!   `ip -n NS`, so both ends are born inside test namespaces.
//! - Everything started is stopped by pid when its guard drops, and every
//!   namespace is deleted, also when a test panics.
//! - Without root the tests skip with a loud message; under `CI=true` a
//!   missing root is a failure, because CI must never skip them.

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
