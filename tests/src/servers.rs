//! Real third-party servers for the end-to-end tests, each run inside a
//! test namespace and stopped by pid when its [`Process`] guard drops:
//! `microsocks` and `danted` (SOCKS5), `dnsmasq` (DNS), a UDP echo, and
//! `tcpdump` captures to check what crossed a link. All of them are Debian
//! packages that `scripts/test.sh` and `.ci/run` install.
//!
//! Each starter returns only once the server is ready (its sockets are
//! listening, or tcpdump says it is capturing), or fails with what the
//! program printed. Nothing is written outside the directories the caller
//! passes: no pid files, leases or logs in system paths, and the root
//! namespace's `/etc/passwd` and `/etc/shadow` are never touched (dante's
//! user lives in a private mount namespace).

use std::fmt::Write as _;
use std::io::{self, Read, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{run, Netns, Process};

/// How long a server may take to start listening.
const READY: Duration = Duration::from_secs(10);
/// How much of a server's output is kept for error messages.
const KEEP: usize = 16 * 1024;

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

fn ip(addr: &str) -> io::Result<IpAddr> {
    addr.parse()
        .map_err(|_| invalid(format!("not an IP address: {addr:?}")))
}

fn path_str(path: &Path) -> io::Result<&str> {
    path.to_str()
        .filter(|p| !p.contains(char::is_whitespace) && !p.contains(['"', '#']))
        .ok_or_else(|| {
            invalid(format!(
                "{} must be UTF-8 without spaces, quotes or '#' (it goes into configuration files)",
                path.display()
            ))
        })
}

/// `addr:port` as `ss` prints it (`[v6]:port`).
fn socket_text(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A transport, for [`listening`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Whether a socket in `ns` listens on exactly `addr:port` (TCP) or is
/// bound there (UDP), as `ss` reports it.
pub fn listening(ns: &Netns, proto: Proto, addr: &str, port: u16) -> io::Result<bool> {
    let want = socket_text(ip(addr)?, port);
    let flags = match proto {
        Proto::Tcp => "-Hltn",
        Proto::Udp => "-Hlun",
    };
    let out = ns.exec("ss", &[flags])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(3) == Some(want.as_str())))
}

/// The last [`KEEP`] bytes a process wrote to stdout and stderr, gathered by
/// threads that drain its pipes until it exits (so a chatty server never
/// blocks on a full pipe).
#[derive(Debug, Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    fn drain(&self, mut from: impl Read + Send + 'static) {
        let into = Arc::clone(&self.0);
        std::thread::spawn(move || {
            let mut buf = [0_u8; 4096];
            // Ends when the process (and every child holding the pipe) exits.
            while let Ok(n @ 1..) = from.read(&mut buf) {
                let Ok(mut kept) = into.lock() else { return };
                kept.extend_from_slice(&buf[..n]);
                let excess = kept.len().saturating_sub(KEEP);
                kept.drain(..excess);
            }
        });
    }

    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// Starts `program` in `ns` and waits until `ready` holds; fails (and kills
/// it) if it exits first or is not ready within [`READY`].
fn start(
    ns: &Netns,
    program: &str,
    args: &[&str],
    mut ready: impl FnMut(&Output) -> io::Result<bool>,
) -> io::Result<Process> {
    let mut p = ns.spawn(program, args)?;
    let output = Output::default();
    if let Some(out) = p.child.stdout.take() {
        output.drain(out);
    }
    if let Some(err) = p.child.stderr.take() {
        output.drain(err);
    }
    let deadline = Instant::now() + READY;
    loop {
        if ready(&output)? {
            return Ok(p);
        }
        if let Some(status) = p.child.try_wait()? {
            // Let the drain threads catch the last words.
            std::thread::sleep(Duration::from_millis(100));
            return Err(io::Error::other(format!(
                "{} exited ({status}) before it was ready: {}",
                p.what,
                output.text().trim()
            )));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "{} was not ready within {READY:?}: {}",
                p.what,
                output.text().trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every `(proto, addr)` in `want` is listening on `port`.
fn all_listening(ns: &Netns, want: &[(Proto, &str)], port: u16) -> io::Result<bool> {
    for &(proto, addr) in want {
        if !listening(ns, proto, addr, port)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Debian's `microsocks` (SOCKS5, CONNECT only: it has no UDP ASSOCIATE) on
/// `listen:port`, with RFC 1929 username/password authentication when
/// `auth` is given. Returns once it listens; the guard's pid is microsocks'.
pub fn microsocks(
    ns: &Netns,
    listen: &str,
    port: u16,
    auth: Option<(&str, &str)>,
) -> io::Result<Process> {
    ip(listen)?;
    let port_s = port.to_string();
    let mut args = vec!["-i", listen, "-p", &port_s];
    if let Some((user, pass)) = auth {
        args.extend_from_slice(&["-u", user, "-P", pass]);
    }
    start(ns, "microsocks", &args, |_| {
        listening(ns, Proto::Tcp, listen, port)
    })
}

/// The danted.conf that [`dante`] writes: listens on each of `listen`
/// (`port`), connects out from the listen address of the target's family,
/// accepts clients from `198.51.100.0/24` and `2001:db8::/32` for CONNECT and
/// UDP ASSOCIATE (and the replies to them), with username authentication
/// when `auth`, and logs to `log`.
pub fn dante_conf(listen: &[&str], port: u16, auth: bool, log: &str) -> String {
    let mut c = format!(
        "# Written by ztun-tests (tests/src/servers.rs).\n\
         logoutput: {log}\n"
    );
    for a in listen {
        let _ = writeln!(c, "internal: {a} port = {port}");
    }
    // Outgoing connections and datagrams leave from the listen address of
    // their family: the server namespace reaches its loopback addresses
    // (203.0.113.5, 2001:db8:5::5) from any local address.
    for a in listen {
        let _ = writeln!(c, "external: {a}");
    }
    let method = if auth { "username" } else { "none" };
    let _ = write!(
        c,
        "clientmethod: none\n\
         socksmethod: {method}\n\
         # root to read the (private) shadow file; nobody for everything else.\n\
         user.privileged: root\n\
         user.unprivileged: nobody\n"
    );
    for net in ["198.51.100.0/24", "2001:db8::/32"] {
        let _ = write!(
            c,
            "client pass {{\n  from: {net} to: 0/0\n  log: error\n}}\n\
             socks pass {{\n  from: {net} to: 0/0\n  command: connect udpassociate\n  log: connect disconnect error\n}}\n\
             socks pass {{\n  from: 0/0 to: {net}\n  command: udpreply\n  log: connect disconnect error\n}}\n"
        );
    }
    c
}

/// A `user:$6$…` line for a shadow file, hashed by `openssl passwd -6`.
fn shadow_line(user: &str, pass: &str) -> io::Result<String> {
    let mut openssl = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = openssl.stdin.take() {
        stdin.write_all(format!("{pass}\n").as_bytes())?;
    }
    let out = openssl.wait_with_output()?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !hash.starts_with("$6$") {
        return Err(io::Error::other(format!(
            "openssl passwd -6 failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(format!("{user}:{hash}:19000:0:99999:7:::\n"))
}

/// Copies of `/etc/passwd` and `/etc/shadow` in `dir` with `user` added.
fn private_user_db(dir: &Path, user: &str, pass: &str) -> io::Result<(PathBuf, PathBuf)> {
    let valid = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid || pass.is_empty() || pass.contains('\n') {
        return Err(invalid(format!(
            "dante user must be [a-z0-9_-]{{1,32}} with a one-line, non-empty password: {user:?}"
        )));
    }
    let mut passwd = std::fs::read_to_string("/etc/passwd")?;
    if passwd.lines().any(|l| l.split(':').next() == Some(user)) {
        return Err(invalid(format!(
            "user {user:?} exists in /etc/passwd; pick a name of the test's own"
        )));
    }
    if !passwd.ends_with('\n') {
        passwd.push('\n');
    }
    let _ = writeln!(
        passwd,
        "{user}:x:64999:65534::/nonexistent:/usr/sbin/nologin"
    );
    let mut shadow = std::fs::read_to_string("/etc/shadow")?;
    if !shadow.ends_with('\n') {
        shadow.push('\n');
    }
    shadow.push_str(&shadow_line(user, pass)?);
    let (p, s) = (dir.join("passwd"), dir.join("shadow"));
    std::fs::write(&p, passwd)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
    std::fs::write(&s, shadow)?;
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o600))?;
    Ok((p, s))
}

/// Debian's Dante server (`danted`) on each of `listen` (IPv4 and/or IPv6
/// addresses) at `port`, configured by [`dante_conf`]: CONNECT and UDP
/// ASSOCIATE from `198.51.100.0/24` and `2001:db8::/32`, outgoing traffic from
/// the listen address of the target's family, and RFC 1929 username
/// authentication when `auth` is given.
///
/// `dir` (created if missing) receives `danted.conf`, `danted.log` and
/// `danted.pid`, and with `auth` private copies of `/etc/passwd` and
/// `/etc/shadow` holding the extra user: danted checks passwords against
/// the system database, so it runs in a private mount namespace
/// (`unshare -m`) where those copies are bind-mounted over the originals;
/// the root namespace's files never change.
///
/// danted runs in the foreground (no `-D`), so the guard's pid is danted's
/// own (its "mother" process); its helper processes exit by themselves a
/// second or two after the mother is killed.
pub fn dante(
    ns: &Netns,
    dir: &Path,
    listen: &[&str],
    port: u16,
    auth: Option<(&str, &str)>,
) -> io::Result<Process> {
    if listen.is_empty() {
        return Err(invalid("dante needs at least one listen address".into()));
    }
    for a in listen {
        ip(a)?;
    }
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("danted.conf");
    let log = dir.join("danted.log");
    let pid = dir.join("danted.pid");
    std::fs::write(
        &conf,
        dante_conf(listen, port, auth.is_some(), path_str(&log)?),
    )?;
    let user_db = auth
        .map(|(user, pass)| private_user_db(dir, user, pass))
        .transpose()?;
    // Positional parameters keep the paths out of the shell's parsing.
    let danted = "exec danted -f \"$1\" -p \"$2\" -N 1";
    let script = if user_db.is_some() {
        format!("mount --bind \"$3\" /etc/passwd && mount --bind \"$4\" /etc/shadow && {danted}")
    } else {
        danted.to_owned()
    };
    let mut args = vec![
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
        path_str(&conf)?,
        path_str(&pid)?,
    ];
    if let Some((passwd, shadow)) = &user_db {
        args.push(path_str(passwd)?);
        args.push(path_str(shadow)?);
    }
    let want: Vec<_> = listen.iter().map(|a| (Proto::Tcp, *a)).collect();
    start(ns, "unshare", &args, |_| all_listening(ns, &want, port))
}

/// Validated `--host-record` options for dnsmasq.
fn host_records(records: &[(&str, &str)]) -> io::Result<Vec<String>> {
    records
        .iter()
        .map(|&(name, addr)| {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !ok {
                return Err(invalid(format!("not a DNS name: {name:?}")));
            }
            Ok(format!("--host-record={name},{}", ip(addr)?))
        })
        .collect()
}

/// dnsmasq (from `dnsmasq-base`, which unlike the `dnsmasq` package brings
/// no system service) answering on UDP and TCP port 53 of each of `listen`
/// with the given `(name, address)` A and AAAA records; a name may appear
/// several times. Nothing else is answered: names under `.test` without a
/// record get NXDOMAIN, other names REFUSED, and nothing is forwarded.
/// Use names under `example.test` and documentation addresses.
///
/// It runs with `--no-daemon`: in the foreground, without a pid file,
/// without changing user, and answering TCP in the same process (no
/// forked children), so the guard's pid is all there is to stop.
pub fn dns(ns: &Netns, listen: &[&str], records: &[(&str, &str)]) -> io::Result<Process> {
    dns_inner(ns, listen, records, None)
}

/// [`dns`], also logging every query (`query[A] NAME from ADDR`) to `log`.
pub fn dns_with_log(
    ns: &Netns,
    listen: &[&str],
    records: &[(&str, &str)],
    log: &Path,
) -> io::Result<Process> {
    dns_inner(ns, listen, records, Some(log))
}

fn dns_inner(
    ns: &Netns,
    listen: &[&str],
    records: &[(&str, &str)],
    log: Option<&Path>,
) -> io::Result<Process> {
    if listen.is_empty() {
        return Err(invalid("dns needs at least one listen address".into()));
    }
    let mut args: Vec<String> = [
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--port=53",
        "--local=/test/",
        "--log-queries",
    ]
    .map(String::from)
    .into();
    args.push(match log {
        Some(path) => format!("--log-facility={}", path_str(path)?),
        None => "--log-facility=-".into(),
    });
    for a in listen {
        args.push(format!("--listen-address={}", ip(a)?));
    }
    args.extend(host_records(records)?);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut want = Vec::new();
    for a in listen {
        want.extend([(Proto::Udp, *a), (Proto::Tcp, *a)]);
    }
    start(ns, "dnsmasq", &args, |_| all_listening(ns, &want, 53))
}

const UDP_ECHO: &str = "import socket, sys
a, p = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((a, p))
while True:
    d, src = s.recvfrom(65535)
    s.sendto(d, src)
";

/// python's http.server on `addr:port` serving `dir`; waits until it
/// listens. Its request log goes to `dir/http.log`, where a test reads
/// which source address it saw.
pub fn http(ns: &Netns, dir: &Path, addr: &str, port: u16) -> io::Result<Process> {
    ip(addr)?;
    let dir_s = path_str(dir)?;
    let log = dir.join("http.log");
    // Positional parameters keep the paths out of the shell's parsing.
    let script = "exec python3 -m http.server --bind \"$1\" \"$2\" --directory \"$3\" 2>\"$4\"";
    let port_s = port.to_string();
    start(
        ns,
        "sh",
        &["-c", script, "sh", addr, &port_s, dir_s, path_str(&log)?],
        |_| listening(ns, Proto::Tcp, addr, port),
    )
}

/// A UDP server on `addr:port` that sends every datagram back, unchanged,
/// to the address and port it came from.
pub fn udp_echo(ns: &Netns, addr: &str, port: u16) -> io::Result<Process> {
    ip(addr)?;
    let port_s = port.to_string();
    start(ns, "python3", &["-c", UDP_ECHO, addr, &port_s], |_| {
        listening(ns, Proto::Udp, addr, port)
    })
}

/// Asks the DNS server at `server` (port 53) for the A and AAAA records of
/// `name` with `dig`, over TCP when `tcp`, from inside `ns`; returns the
/// addresses in the order answered (A records first). An answer without
/// addresses (NXDOMAIN, NODATA, REFUSED) is an empty list; no answer at all
/// (within 2 s, one try) is an error.
pub fn dig(ns: &Netns, server: &str, name: &str, tcp: bool) -> io::Result<Vec<IpAddr>> {
    let at = format!("@{}", ip(server)?);
    let transport = if tcp { "+tcp" } else { "+notcp" };
    let out = ns.exec_unchecked(
        "dig",
        &[
            "+short", "+time=2", "+tries=1", transport, &at, name, "A", name, "AAAA",
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "dig {at} {name} failed ({}): {}{}",
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    text.lines()
        .map(str::trim)
        // CNAME targets end in a dot; only addresses are returned.
        .filter(|l| !l.is_empty() && !l.ends_with('.'))
        .map(|l| {
            l.parse()
                .map_err(|_| io::Error::other(format!("dig {at} {name}: not an answer: {l}")))
        })
        .collect()
}

/// Link-level housekeeping that is nobody's traffic, as a tcpdump filter:
/// ARP, IPv6 multicast (router solicitations, MLD) and neighbour
/// solicitations and advertisements.
pub const LINK_CHATTER: &str =
    "arp or ip6 multicast or (icmp6 and (ip6[40] == 135 or ip6[40] == 136))";

/// A running `tcpdump` writing what crosses one interface of a namespace
/// to a pcap file.
#[derive(Debug)]
pub struct Capture {
    process: Process,
    path: PathBuf,
}

impl Capture {
    /// Captures everything on `iface` in `ns` to `path`, packet-buffered.
    /// Returns once tcpdump reports it is listening, so nothing sent after
    /// this returns is missed.
    pub fn start(ns: &Netns, iface: &str, path: &Path) -> io::Result<Self> {
        let file = path
            .to_str()
            .ok_or_else(|| invalid(format!("{} is not UTF-8", path.display())))?;
        // -Z root: stay root rather than switch to the tcpdump user, who
        // may not be allowed to write `path`.
        let process = start(
            ns,
            "tcpdump",
            &[
                "-i",
                iface,
                "-w",
                file,
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-nn",
            ],
            |out| Ok(out.text().contains("listening on")),
        )?;
        Ok(Self {
            process,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tcpdump with SIGINT (so the file is complete) and returns every
    /// captured packet as `tcpdump -nn -r` prints it, one line each.
    pub fn stop(mut self) -> io::Result<Vec<String>> {
        self.process.signal(libc::SIGINT)?;
        if self
            .process
            .wait_for_exit(Duration::from_secs(5))?
            .is_none()
        {
            return Err(io::Error::other(
                "tcpdump did not stop within 5 s of SIGINT",
            ));
        }
        read_pcap(&self.path, "")
    }
}

/// The packets in the pcap file at `path` that match the tcpdump `filter`
/// expression (all of them when it is empty), as `tcpdump -nn -r` prints
/// them.
pub fn read_pcap(path: &Path, filter: &str) -> io::Result<Vec<String>> {
    let file = path
        .to_str()
        .ok_or_else(|| invalid(format!("{} is not UTF-8", path.display())))?;
    let mut args = vec!["-nn", "-r", file];
    if !filter.is_empty() {
        args.push(filter);
    }
    let out = run("tcpdump", &args)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The packets in `path` that are neither to nor from `host` port `port`
/// nor [`LINK_CHATTER`]: what a leak check expects to be empty when all
/// traffic must go to one proxy.
pub fn packets_other_than(path: &Path, host: &str, port: u16) -> io::Result<Vec<String>> {
    let host = ip(host)?;
    read_pcap(
        path,
        &format!("not (host {host} and port {port}) and not ({LINK_CHATTER})"),
    )
}

/// The pids of all processes whose network namespace is `ns`: to check
/// that a server and all its children are gone.
pub fn pids_in(ns: &Netns) -> io::Result<Vec<u32>> {
    let target = std::fs::metadata(Path::new("/run/netns").join(ns.name()))?;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may exit while we look: skip what cannot be read.
        if let Ok(m) = std::fs::metadata(entry.path().join("ns/net")) {
            if m.dev() == target.dev() && m.ino() == target.ino() {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

/// The tinyproxy.conf that [`tinyproxy`] writes: an HTTP proxy on
/// `listen:port` that takes clients from `198.51.100.0/24`, allows CONNECT
/// to any port (no `ConnectPort` line), asks for Basic credentials when
/// `auth` is given, and logs to `log`.
pub fn tinyproxy_conf(listen: &str, port: u16, auth: Option<(&str, &str)>, log: &str) -> String {
    let mut c = format!(
        "User nobody\nGroup nogroup\nPort {port}\nListen {listen}\nTimeout 60\n\
         LogFile \"{log}\"\nLogLevel Info\nMaxClients 100\nAllow 198.51.100.0/24\n\
         DisableViaHeader Yes\n"
    );
    if let Some((user, pass)) = auth {
        let _ = writeln!(c, "BasicAuth {user} {pass}");
    }
    c
}

/// Debian's `tinyproxy` (HTTP CONNECT) in the foreground on `listen:port`
/// in `ns`, configured by [`tinyproxy_conf`] in `dir`. Returns once it
/// listens; the guard's pid is tinyproxy's.
pub fn tinyproxy(
    ns: &Netns,
    dir: &Path,
    listen: &str,
    port: u16,
    auth: Option<(&str, &str)>,
) -> io::Result<Process> {
    ip(listen)?;
    std::fs::create_dir_all(dir)?;
    let conf = dir.join(format!("tinyproxy-{port}.conf"));
    let log = dir.join(format!("tinyproxy-{port}.log"));
    // tinyproxy drops to nobody before it opens its log.
    std::fs::write(&log, "")?;
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666))?;
    std::fs::write(&conf, tinyproxy_conf(listen, port, auth, path_str(&log)?))?;
    start(ns, "tinyproxy", &["-d", "-c", path_str(&conf)?], |_| {
        listening(ns, Proto::Tcp, listen, port)
    })
}
