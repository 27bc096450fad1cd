//! `ztun-helper`: parse flags, start logging, run the daemon until SIGTERM
//! or SIGINT, then take every tunnel down in order.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The ztun root helper: owns tunnel interfaces, their routes and the packet
/// engine, and serves ztunctl and menu-bar apps on a control socket.
#[derive(Debug, Parser)]
#[command(name = "ztun-helper", version, max_term_width = 100)]
struct Args {
    /// Control socket to serve.
    #[arg(long, default_value = ztun_proto::DEFAULT_SOCKET_PATH, value_name = "PATH")]
    socket: PathBuf,

    /// Where the route ledger and the desired tunnels are kept.
    #[arg(long, default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,

    /// Members of this group may change tunnels and routes (root always may).
    #[arg(long, default_value = DEFAULT_ADMIN_GROUP, value_name = "GROUP")]
    admin_group: String,
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

/// stderr (journald under systemd); on macOS under launchd, `os_log`, where
/// every message is public, so nothing secret is ever logged.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::EnvFilter;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // launchd names its jobs in XPC_SERVICE_NAME; a terminal session has "0".
    #[cfg(target_os = "macos")]
    if std::env::var_os("XPC_SERVICE_NAME").is_some_and(|n| n != "0") {
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_oslog::OsLogger::new(
                ztun_proto::service::OS_LOG_SUBSYSTEM,
                "default",
            ))
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        // Colour only for a person at a terminal: journald and log files
        // would show the escape codes.
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ztun-helper: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ztun-helper: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    use std::sync::Arc;

    use anyhow::Context as _;
    use tokio::signal::unix::{signal, SignalKind};
    use ztun_helper::control::unix::UnixServer;
    use ztun_helper::control::AdminGroup;
    use ztun_helper::daemon::Daemon;

    let admins = AdminGroup::lookup(&args.admin_group)
        .with_context(|| format!("cannot look up group {}", args.admin_group))?;
    if admins.gid.is_none() {
        tracing::warn!(
            "group {} does not exist: only root may change tunnels",
            admins.name
        );
    }
    #[cfg(target_os = "linux")]
    let platform = ztun_helper::platform::linux::LinuxPlatform::new()
        .context("cannot open netlink; is this Linux with rtnetlink?")?;
    // The Unix socket serves macOS too, for development; XPC is issue 8.
    #[cfg(target_os = "macos")]
    let platform = ztun_helper::platform::macos::MacosPlatform::new();
    let daemon = Arc::new(
        Daemon::start(platform, &args.state_dir)
            .await
            .with_context(|| format!("cannot use state directory {}", args.state_dir.display()))?,
    );
    let server = UnixServer::bind(&args.socket)
        .with_context(|| format!("cannot serve {}", args.socket.display()))?;
    tracing::info!(
        "serving {} (admin group {})",
        server.path().display(),
        admins.name
    );
    let follower = tokio::spawn({
        let daemon = Arc::clone(&daemon);
        async move { daemon.follow_network().await }
    });
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        r = server.run(Arc::clone(&daemon), Arc::new(admins)) => r.context("control socket failed")?,
        _ = term.recv() => tracing::info!("SIGTERM: taking tunnels down"),
        _ = int.recv() => tracing::info!("SIGINT: taking tunnels down"),
    }
    // Stop accepting first (the server is dropped here, removing its
    // socket), then routes and devices, in that order, tunnel by tunnel.
    drop(server);
    follower.abort();
    daemon.shutdown().await;
    tracing::info!("stopped cleanly");
    Ok(())
}
