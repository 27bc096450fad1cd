//! `ztun-helper`: parse flags, start logging, run the daemon until SIGTERM
//! or SIGINT, then take every tunnel down in order.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The ztun root helper: owns tunnel interfaces, their routes and the packet
/// engine, and serves ztunctl and menu-bar apps: over XPC (the Mach service
/// com.ztun.helper) when launchd runs it on macOS, over a Unix socket
/// otherwise.
#[derive(Debug, Parser)]
#[command(name = "ztun-helper", version, max_term_width = 100)]
struct Args {
    /// Unix control socket to serve [default: /run/ztun/control.sock on
    /// Linux, /var/run/ztun/control.sock on macOS]. Under launchd on macOS
    /// the helper serves XPC, and a socket only when this is given.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Where the route ledger and the desired tunnels are kept.
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,

    /// Members of this group may change tunnels and routes (root always may).
    #[arg(long, default_value = DEFAULT_ADMIN_GROUP, value_name = "GROUP")]
    admin_group: String,

    /// The code-signing requirement XPC clients must satisfy. Default for a
    /// helper signed with a Developer ID: ztunctl or the ztun menu-bar app,
    /// signed by the helper's team. An unsigned helper checks no code.
    #[cfg(target_os = "macos")]
    #[arg(long, env = "ZTUN_CODE_REQUIREMENT", value_name = "REQUIREMENT")]
    code_requirement: Option<String>,
}

const DEFAULT_STATE_DIR: &str = if cfg!(target_os = "macos") {
    ztun_proto::service::MACOS_STATE_DIR
} else {
    ztun_proto::service::LINUX_STATE_DIR
};
const DEFAULT_ADMIN_GROUP: &str = if cfg!(target_os = "macos") {
    "admin"
} else {
    "ztun"
};

/// Whether launchd runs this process as the ztun job: launchd puts the job's
/// label in `XPC_SERVICE_NAME`. A terminal has "0" there, or another app's
/// name when a terminal app launched by launchd passed it on.
fn launched_by_launchd() -> bool {
    cfg!(target_os = "macos")
        && std::env::var_os("XPC_SERVICE_NAME").is_some_and(|n| n == ztun_proto::service::LABEL)
}

/// stderr (journald under systemd); on macOS under launchd, `os_log`, where
/// every message is public, so nothing secret is ever logged.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let (filter, bad_filter) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let to_os_log = launched_by_launchd();
    let registry = tracing_subscriber::registry().with(filter);
    #[cfg(target_os = "macos")]
    let registry =
        registry.with(to_os_log.then(|| {
            tracing_oslog::OsLogger::new(ztun_proto::service::OS_LOG_SUBSYSTEM, "default")
        }));
    registry
        // Colour only for a person at a terminal: journald and log files
        // would show the escape codes.
        .with((!to_os_log).then(|| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        }))
        .init();
    if let Some(why) = bad_filter {
        tracing::warn!("RUST_LOG ignored, logging at info: {why} (give a level, or target=level pairs: RUST_LOG=ztun_helper=debug,info)");
    }
}

/// The log filter `RUST_LOG` asks for (`debug`, or `target=level` pairs
/// such as `ztun_helper=debug,smoltcp=info`), else `info`; and, when it
/// was given but could not be parsed, why.
fn log_filter(rust_log: Option<&str>) -> (tracing_subscriber::filter::Targets, Option<String>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};

    let info = || Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (info(), None),
        Some(spec) => match spec.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (info(), Some(format!("{spec:?}: {e}"))),
        },
    }
}

/// Starts the data plane's own thread and returns its runtime. Every
/// tunnel's engine and its relay tasks run there, on one current-thread
/// runtime, so their hand-offs never cross threads, and a flood cannot
/// starve the control plane, which keeps the main runtime. Measured on 2
/// vCPUs, three back-to-back pairs through dante against the engine and
/// relays spread over two workers: downloads 7.0 against 6.3 Gbit/s, four
/// streams 8.6 against 7.9, connection rate 3,920 against 3,660/s, uploads
/// and latency within the noise. (One worker for everything did as well,
/// but a UDP flood then held `status` off for 3 s.)
fn data_plane_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let (started, handle) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("ztun-data-plane".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => {
                    let _ = started.send(Ok(runtime.handle().clone()));
                    // Runs the tasks spawned on it for the life of the process.
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = started.send(Err(e));
                }
            }
        })?;
    handle
        .recv()
        .map_err(|_| std::io::Error::other("the data plane thread ended at start"))?
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    ztun_helper::memory::keep_large_buffers_lazy();
    let data_plane = match data_plane_runtime() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("ztun-helper: cannot start the data plane thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The control plane: requests, events, the route monitor.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ztun-helper: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args, data_plane)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztun-helper: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args, data_plane: tokio::runtime::Handle) -> anyhow::Result<()> {
    use std::sync::Arc;

    use anyhow::Context as _;
    use tokio::signal::unix::{signal, SignalKind};
    use ztun_helper::control::unix::UnixServer;
    use ztun_helper::control::{AdminGroup, Transports};
    use ztun_helper::daemon::Daemon;

    let admins = AdminGroup::lookup(&args.admin_group)
        .with_context(|| format!("cannot look up group {}", args.admin_group))?;
    if admins.gid.is_none() {
        tracing::warn!(
            "group {} does not exist: only root may change tunnels",
            admins.name
        );
    }
    let admins = Arc::new(admins);
    let transports = Transports::choose(
        cfg!(target_os = "macos"),
        launched_by_launchd(),
        args.socket.as_deref(),
    );
    #[cfg(target_os = "linux")]
    let platform = ztun_helper::platform::linux::LinuxPlatform::new()
        .context("cannot open netlink; is this Linux with rtnetlink?")?;
    #[cfg(target_os = "macos")]
    let platform =
        ztun_helper::platform::macos::MacosPlatform::new(ztun_helper::platform::macos::Libc);
    let daemon = Arc::new(
        Daemon::start_on(platform, &args.state_dir, data_plane)
            .await
            .with_context(|| format!("cannot use state directory {}", args.state_dir.display()))?,
    );
    let unix = match &transports.unix {
        Some(path) => {
            let server = UnixServer::bind(path)
                .with_context(|| format!("cannot serve {}", path.display()))?;
            tracing::info!(
                "serving {} (admin group {})",
                server.path().display(),
                admins.name
            );
            Some(server)
        }
        None => None,
    };
    #[cfg(target_os = "macos")]
    let xpc = if transports.xpc {
        Some(start_xpc(
            args.code_requirement.as_deref(),
            Arc::clone(&daemon),
            Arc::clone(&admins),
        )?)
    } else {
        None
    };
    let follower = tokio::spawn({
        let daemon = Arc::clone(&daemon);
        async move { daemon.follow_network().await }
    });
    let serve_unix = async {
        match &unix {
            Some(server) => server.run(Arc::clone(&daemon), Arc::clone(&admins)).await,
            None => std::future::pending().await,
        }
    };
    #[cfg(target_os = "macos")]
    let xpc_failed = async {
        match &xpc {
            Some(server) => server.failed().await.to_string(),
            None => std::future::pending().await,
        }
    };
    #[cfg(not(target_os = "macos"))]
    let xpc_failed = std::future::pending::<String>();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // Whatever ends serving, tunnels are taken down before the helper exits.
    let outcome = tokio::select! {
        r = serve_unix => r.context("control socket failed"),
        e = xpc_failed => Err(anyhow::anyhow!(
            "the XPC listener failed ({e}); launchd registers {} only for the job whose \
             MachServices lists it",
            ztun_proto::service::MACH_SERVICE
        )),
        _ = term.recv() => {
            tracing::info!("SIGTERM: taking tunnels down");
            Ok(())
        }
        _ = int.recv() => {
            tracing::info!("SIGINT: taking tunnels down");
            Ok(())
        }
    };
    if let Err(e) = &outcome {
        tracing::error!("{e:#}; taking tunnels down");
    }
    // Stop accepting first (dropping the servers removes the socket and
    // cancels the XPC listener), then routes and devices, in that order,
    // tunnel by tunnel.
    drop(unix);
    #[cfg(target_os = "macos")]
    drop(xpc);
    follower.abort();
    daemon.shutdown().await;
    tracing::info!("stopped cleanly");
    outcome
}

/// Starts the XPC listener with the code requirement this helper's
/// signature and configuration call for.
#[cfg(target_os = "macos")]
fn start_xpc<H: ztun_helper::control::Handler>(
    configured: Option<&str>,
    handler: std::sync::Arc<H>,
    admins: std::sync::Arc<ztun_helper::control::AdminGroup>,
) -> anyhow::Result<ztun_helper::control::xpc::XpcServer> {
    use anyhow::Context as _;
    use ztun_helper::control::xpc::{CodePolicy, XpcServer};
    use ztun_xpc::macos::PeerRequirement;

    let policy = CodePolicy::for_this_helper(configured).map_err(anyhow::Error::msg)?;
    let name = admins.name.clone();
    let server = XpcServer::start(
        tokio::runtime::Handle::current(),
        handler,
        admins,
        policy.clone(),
    )
    .context("cannot start the XPC listener")?;
    match (&policy, server.enforcement()) {
        (CodePolicy::Require(r), Some(PeerRequirement::Enforced)) => {
            tracing::info!(
                "XPC clients must satisfy {} (libxpc and the helper check)",
                r.text()
            );
        }
        (CodePolicy::Require(r), _) => tracing::info!(
            "XPC clients must satisfy {} (the helper checks; libxpc cannot before macOS 12)",
            r.text()
        ),
        (CodePolicy::Unchecked, _) => tracing::warn!(
            "this helper is not signed with a Developer ID: XPC clients' code is not checked, \
             only their users (a development build)"
        ),
    }
    tracing::info!(
        "serving XPC service {} (admin group {name})",
        ztun_proto::service::MACH_SERVICE
    );
    Ok(server)
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    #[test]
    fn log_filter_defaults_to_info_without_rust_log() {
        for unset in [None, Some(""), Some("  ")] {
            let (filter, bad) = log_filter(unset);
            assert_eq!(bad, None);
            assert!(filter.would_enable("ztun_helper::daemon", &Level::INFO));
            assert!(!filter.would_enable("ztun_helper::daemon", &Level::DEBUG));
        }
    }

    #[test]
    fn log_filter_takes_a_level_and_target_level_pairs() {
        let (filter, bad) = log_filter(Some("ztun_helper=debug,smoltcp=warn,info"));
        assert_eq!(bad, None);
        assert!(filter.would_enable("ztun_helper::relay", &Level::DEBUG));
        assert!(!filter.would_enable("smoltcp::iface", &Level::INFO));
        assert!(filter.would_enable("tokio::net", &Level::INFO));
        assert!(!filter.would_enable("tokio::net", &Level::DEBUG));

        let (filter, bad) = log_filter(Some("trace"));
        assert_eq!(bad, None);
        assert!(filter.would_enable("smoltcp::iface", &Level::TRACE));
    }

    #[test]
    fn log_filter_falls_back_to_info_and_says_why_on_a_bad_rust_log() {
        let (filter, bad) = log_filter(Some("ztun_helper=loud"));
        let why = bad.expect("a reason");
        assert!(why.starts_with("\"ztun_helper=loud\": "), "{why}");
        assert!(filter.would_enable("ztun_helper::daemon", &Level::INFO));
        assert!(!filter.would_enable("ztun_helper::daemon", &Level::DEBUG));
    }
}
