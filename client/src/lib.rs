//! ztunctl as a library: the command line, the transport to the helper, and
//! how replies are shown. `main.rs` only parses arguments and maps the
//! outcome to an exit code.
//!
//! Exit codes: 0 ok, 1 the helper refused or failed, 2 usage, 3 the helper
//! could not be reached.

/// How to (re)start the helper, read its log, and delete a route, on this OS.
#[cfg(target_os = "macos")]
pub(crate) mod hints {
    pub(crate) const START: &str = "sudo launchctl kickstart -k system/com.ztun.helper";
    pub(crate) const LOG: &str =
        "log show --last 10m --predicate 'subsystem == \"com.ztun.helper\"'";
    pub(crate) fn delete_route(route: &str, interface: &str) -> String {
        format!("sudo route -n delete {route} -interface {interface}")
    }
}
#[cfg(not(target_os = "macos"))]
pub(crate) mod hints {
    pub(crate) const START: &str = "systemctl restart ztun-helper";
    pub(crate) const LOG: &str = "journalctl -u ztun-helper";
    pub(crate) fn delete_route(route: &str, interface: &str) -> String {
        format!("ip route del {route} dev {interface}")
    }
}

mod cli;
mod doctor;
mod render;
mod transport;

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use ztun_proto::plist::Value;
use ztun_proto::{
    DecodeError, DownTarget, ErrorCode, ErrorReply, Event, Reply, Request, Response, TunnelSpec,
};

pub use cli::{
    Cli, Command, DoctorArgs, DownArgs, FlowsArgs, RouteArgs, RouteCommand, StatusArgs, UpArgs,
};
pub use transport::{Connection, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad flags that clap cannot see (they depend on each other).
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the ztun helper at {endpoint}: {source}; start it ({start}) or pass --socket", start = hints::START)]
    Unreachable {
        endpoint: Endpoint,
        source: io::Error,
    },
    #[error("lost the connection to the helper at {endpoint}: {source}")]
    Lost {
        endpoint: Endpoint,
        source: io::Error,
    },
    #[error("the helper at {endpoint} did not answer within {}s; check `{log}`", after.as_secs(), log = hints::LOG)]
    Timeout { endpoint: Endpoint, after: Duration },
    #[error("{} ({})", .0.message, .0.code)]
    Helper(ErrorReply),
    #[error(
        "the helper sent a reply this ztunctl does not understand: {0}; are both the same version?"
    )]
    Protocol(String),
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    #[error("{failed} check(s) failed; the lines marked ✗ say how to fix each")]
    Doctor { failed: usize },
    /// The helper does not know an operation this command needs.
    #[error("this helper is too old for {0}; upgrade it (install ztunctl and ztun-helper from the same release)")]
    HelperTooOld(&'static str),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Helper(_)
            | ClientError::Protocol(_)
            | ClientError::Output(_)
            | ClientError::Doctor { .. }
            | ClientError::HelperTooOld(_) => 1,
            ClientError::Usage(_) => 2,
            ClientError::Unreachable { .. }
            | ClientError::Lost { .. }
            | ClientError::Timeout { .. } => 3,
        }
    }
}

/// Runs one command, writing what it shows to `out`.
pub fn run(cli: &Cli, out: &mut impl Write) -> Result<(), ClientError> {
    let request = request_for(&cli.command)?;
    if cli.dry_run {
        request
            .to_value()
            .to_writer_xml(&mut *out)
            .map_err(|e| io::Error::other(e.to_string()))?;
        writeln!(out)?;
        return Ok(());
    }
    if let Command::Doctor(args) = &cli.command {
        return doctor::run(cli, args, out);
    }
    if let Command::Flows(args) = &cli.command {
        return flows(cli, args, &request, out);
    }
    if let Command::Version = cli.command {
        writeln!(out, "ztunctl {}", env!("CARGO_PKG_VERSION"))?;
    }
    let mut conn = Connection::open(&cli.endpoint(), cli.timeout)?;
    let reply = exchange(&mut conn, &request)?;
    show(cli, &reply, out)?;
    if let Command::Status(StatusArgs {
        watch: true, json, ..
    }) = cli.command
    {
        loop {
            let value = conn.receive(true)?;
            if json {
                writeln!(out, "{}", json_line(&value)?)?;
            } else {
                // A newer helper may send kinds this ztunctl does not know;
                // the stream goes on.
                let event = Event::from_value(&value);
                writeln!(out, "{}", render::event(&event, SystemTime::now()))?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// The request a command sends; flag combinations are checked here by the
/// same rules the helper applies, so mistakes are usage errors (exit 2).
pub fn request_for(command: &Command) -> Result<Request, ClientError> {
    Ok(match command {
        Command::Up(a) => {
            let mut upstreams = a.upstreams.iter().cloned();
            let spec = TunnelSpec {
                name: a.name.clone(),
                address: a.address,
                peer: a.peer,
                mtu: a.mtu,
                ipv6: a.ipv6,
                routes: a.routes.clone(),
                full: a.full,
                exclude: a.exclude.clone(),
                allow_ipv6_leak: a.allow_ipv6_leak,
                kill_switch: a.kill_switch,
                upstream: upstreams.next().unwrap_or_default(),
                failover: upstreams.collect(),
                dns_over_tcp: a.dns_over_tcp,
                icmp: a.icmp,
                dns: a.dns,
                fake_pool: a.fake_pool,
                fake_pool6: a.fake_pool6,
                route_domains: a.route_domains.clone(),
                transient: a.transient,
            };
            spec.validate()
                .map_err(|e| ClientError::Usage(flag_error(&e)))?;
            Request::Up(spec)
        }
        Command::Down(DownArgs { all: true, .. }) => Request::Down(DownTarget::All),
        Command::Down(DownArgs { name: Some(n), .. }) => Request::Down(DownTarget::Name(n.clone())),
        Command::Down(DownArgs {
            name: None,
            all: false,
        }) => return Err(ClientError::Usage("give a tunnel name or --all".into())),
        Command::Status(a) if a.watch => Request::Watch(a.name.clone()),
        Command::Status(a) => Request::Status(a.name.clone()),
        Command::Route(RouteCommand::Add(a)) => Request::RouteAdd {
            name: a.name.clone(),
            routes: a.routes.clone(),
        },
        Command::Route(RouteCommand::Remove(a)) => Request::RouteRemove {
            name: a.name.clone(),
            routes: a.routes.clone(),
        },
        Command::Route(RouteCommand::List { name }) => Request::Status(Some(name.clone())),
        Command::Doctor(a) if a.live => Request::Doctor {
            name: a.name.clone(),
            probe: a.probe,
            dns_name: a.dns_name.clone(),
        },
        Command::Flows(a) => Request::Flows(a.name.clone()),
        Command::Version | Command::Doctor(_) => Request::Version,
    })
}

/// Rewrites a spec error (`tunnel.routes[1]: …`) in terms of the flag the
/// user typed (`--route: …`).
fn flag_error(e: &DecodeError) -> String {
    let key = e.key();
    let field = key.trim_start_matches("tunnel.");
    let field = field.split('[').next().unwrap_or(field);
    let flag = match field {
        "routes" => "route",
        "failover" => "upstream",
        "route_domains" => "route_domain",
        other => other,
    };
    let reason = e.to_string();
    let reason = reason
        .strip_prefix(&format!("{key}: "))
        .unwrap_or(&reason)
        .to_owned();
    format!("--{}: {reason}", flag.replace('_', "-"))
}

/// A reply that does not decode is the helper's fault, not the user's.
impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

pub(crate) fn exchange(
    conn: &mut Connection,
    request: &Request,
) -> Result<(Value, Reply), ClientError> {
    conn.send(&request.to_value())?;
    let value = conn.receive(false)?;
    match Response::from_value(request.op(), &value)? {
        Response::Ok(reply) => Ok((value, reply)),
        Response::Err(e) => Err(ClientError::Helper(e)),
    }
}

/// How often `flows --watch` asks again.
const FLOWS_REFRESH: Duration = Duration::from_secs(1);

/// `ztunctl flows`: once, or every [`FLOWS_REFRESH`] until interrupted,
/// on one connection.
fn flows(
    cli: &Cli,
    args: &FlowsArgs,
    request: &Request,
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let mut conn = Connection::open(&cli.endpoint(), cli.timeout)?;
    loop {
        let (value, reply) = match exchange(&mut conn, request) {
            Err(ClientError::Helper(e))
                if e.code == ErrorCode::InvalidArgument
                    && e.message.starts_with("op: unknown operation") =>
            {
                return Err(ClientError::HelperTooOld("ztunctl flows"));
            }
            other => other?,
        };
        let Reply::Flows { flows, omitted } = reply else {
            return Err(ClientError::Protocol(format!("unexpected reply {reply:?}")));
        };
        match (args.json, args.watch) {
            (true, false) => {
                let pretty = serde_json::to_string_pretty(&value)
                    .map_err(|e| ClientError::Output(io::Error::other(e)))?;
                writeln!(out, "{pretty}")?;
            }
            (true, true) => writeln!(out, "{}", json_line(&value)?)?,
            (false, watch) => {
                if watch {
                    let stamp = humantime::format_rfc3339_seconds(SystemTime::now());
                    writeln!(out, "{stamp}")?;
                }
                write!(out, "{}", render::flows(&flows, omitted))?;
            }
        }
        if !args.watch {
            return Ok(());
        }
        writeln!(out)?;
        out.flush()?;
        std::thread::sleep(FLOWS_REFRESH);
    }
}

fn json_line(value: &Value) -> Result<String, ClientError> {
    serde_json::to_string(value).map_err(|e| ClientError::Output(io::Error::other(e)))
}

fn show(
    cli: &Cli,
    (value, reply): &(Value, Reply),
    out: &mut impl Write,
) -> Result<(), ClientError> {
    let now = SystemTime::now();
    let json = matches!(cli.command, Command::Status(StatusArgs { json: true, .. }));
    if json {
        if let Command::Status(StatusArgs { watch: false, .. }) = cli.command {
            let pretty = serde_json::to_string_pretty(value)
                .map_err(|e| ClientError::Output(io::Error::other(e)))?;
            writeln!(out, "{pretty}")?;
        }
        return Ok(());
    }
    match (&cli.command, reply) {
        (Command::Version, Reply::Version { version, protocol }) => {
            writeln!(out, "ztun-helper {version} (protocol {protocol})")?;
        }
        (Command::Route(RouteCommand::List { name }), Reply::Tunnels { tunnels: ts, .. }) => {
            for t in ts.iter().filter(|t| &t.spec.name == name) {
                for r in &t.routes {
                    writeln!(out, "{}", render::route(r))?;
                }
            }
        }
        (Command::Status(StatusArgs { watch: true, .. }), Reply::Done) => {
            writeln!(out, "watching for events; Ctrl-C to stop")?;
        }
        (_, Reply::Tunnels { tunnels: ts, .. }) if ts.is_empty() => {
            writeln!(out, "no tunnels are up")?;
        }
        (_, Reply::Tunnels { tunnels: ts, .. }) => {
            let blocks: Vec<String> = ts.iter().map(|t| render::tunnel(t, now)).collect();
            write!(out, "{}", blocks.join("\n"))?;
        }
        (_, Reply::Tunnel(t)) => write!(out, "{}", render::tunnel(t, now))?,
        (Command::Down(DownArgs { all: true, .. }), Reply::Done) => {
            writeln!(out, "all tunnels are down")?;
        }
        (Command::Down(DownArgs { name: Some(n), .. }), Reply::Done) => {
            writeln!(out, "{n} is down")?;
        }
        (_, other) => {
            return Err(ClientError::Protocol(format!("unexpected reply {other:?}")));
        }
    }
    Ok(())
}
