//! Every operating-system call the helper makes lives below this module:
//! creating the tunnel device, installing, removing and reading back routes,
//! finding the physical network, and binding outbound sockets to it.
//!
//! `Platform` is the one interface; `linux` and (issue 7) `macos` implement
//! it, and `fake` records calls for tests. Route *policy* (what to install,
//! in which order, what to remember) lives in `routes.rs`, never here.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::killswitch::KillSwitch;
use crate::routes::{PhysicalGateway, RouteEntry};

pub mod fake;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod macos;

/// The tunnel device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// A kernel name to ask for (`ztun0`); `None` lets the kernel pick.
    pub name: Option<String>,
    pub address: Ipv4Net,
    /// The point-to-point peer (S2).
    pub peer: Ipv4Addr,
    pub ipv6: Option<Ipv6Net>,
    pub mtu: u16,
}

/// A route as the kernel holds it, read back after install (S3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    pub interface: String,
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("cannot create the tunnel device: {0}")]
    Device(#[source] io::Error),
    #[error("cannot install route {dst} on {interface}: {source}")]
    RouteAdd {
        dst: IpNet,
        interface: String,
        source: io::Error,
    },
    #[error("cannot remove route {dst} from {interface}: {source}")]
    RouteDelete {
        dst: IpNet,
        interface: String,
        source: io::Error,
    },
    #[error("cannot read the routing table: {0}")]
    RouteRead(#[source] io::Error),
    #[error("there is no interface named {0}")]
    NoSuchInterface(String),
    #[error("cannot {action} the kill switch: {reason}")]
    KillSwitch {
        action: &'static str,
        reason: String,
    },
    #[error("split DNS is not set up: {0}")]
    SplitDns(String),
}

impl PlatformError {
    /// `nft` failed to install (`installing`) or remove the kill switch's
    /// table; a missing `nft` says which package brings it.
    pub(crate) fn nft_failed(installing: bool, e: &io::Error) -> Self {
        Self::KillSwitch {
            action: if installing { "install" } else { "remove" },
            reason: if e.kind() == io::ErrorKind::NotFound {
                "nft is not installed (Debian: apt install nftables)".to_owned()
            } else {
                e.to_string()
            },
        }
    }
}

/// The operating system, as the daemon needs it.
pub trait Platform: Send + Sync + 'static {
    /// The open tunnel device (read and write packets through it).
    type Device: crate::device::PacketDevice;

    /// Creates the tunnel device with its address, peer and MTU, and returns
    /// it with the name the kernel gave it.
    fn create_device(&self, config: &DeviceConfig)
        -> Result<(Self::Device, String), PlatformError>;

    /// Installs `entry`. A route that already exists exactly as asked is not
    /// an error; whether it is really ours is decided by reading it back.
    fn add_route(
        &self,
        entry: &RouteEntry,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Removes `entry`; `Ok(false)` when it was already gone.
    fn delete_route(
        &self,
        entry: &RouteEntry,
    ) -> impl Future<Output = Result<bool, PlatformError>> + Send;

    /// The kernel's route for exactly the prefix `dst` in the main table, if
    /// any: the read-back after every install.
    fn lookup_route(
        &self,
        dst: IpNet,
    ) -> impl Future<Output = Result<Option<KernelRoute>, PlatformError>> + Send;

    /// The route the kernel would send a packet to `dst` through now: the
    /// longest match, after every more specific route and (on Linux) policy
    /// rule, as `ip route get` and `route -n get` answer. `None` when the
    /// kernel has no route there. `ztunctl doctor --live` asks it which
    /// tunnel a probe or a DNS resolver goes through.
    fn route_to(
        &self,
        dst: IpAddr,
    ) -> impl Future<Output = Result<Option<KernelRoute>, PlatformError>> + Send;

    /// The addresses on `interface` as the kernel holds them now, each with
    /// its point-to-point peer when it has one (S2).
    fn interface_addresses(
        &self,
        interface: &str,
    ) -> impl Future<Output = Result<Vec<ztun_proto::InterfaceAddress>, PlatformError>> + Send;

    /// The physical network's default route (interface and gateways), or
    /// `None` when the machine has none.
    fn physical_gateway(
        &self,
    ) -> impl Future<Output = Result<Option<PhysicalGateway>, PlatformError>> + Send;

    /// A stream of "the network may have changed" signals (an interface,
    /// address or route came or went), coalesced: the daemon re-checks its
    /// routes after each. Watching runs until the receiver is dropped.
    fn network_changes(&self) -> io::Result<tokio::sync::mpsc::Receiver<()>>;

    /// Binds an outbound socket to `interface` so its traffic can never loop
    /// back into the tunnel (S6).
    fn bind_to_interface(&self, socket: &socket2::Socket, interface: &str) -> io::Result<()>;

    /// Puts the kill switch `rules` in place, replacing the one before in
    /// one step, or removes it (`None`). `held` is the enable reference the
    /// previous call returned (macOS: pf's token), which the daemon keeps in
    /// its state across restarts; the result is the one to keep now.
    fn set_kill_switch(
        &self,
        rules: Option<&KillSwitch>,
        held: Option<u64>,
    ) -> impl Future<Output = Result<Option<u64>, PlatformError>> + Send;

    /// Split DNS: sends the system's queries for `domains` and their
    /// subdomains, and no others, to `server` (the fake DNS at the peer of
    /// the tunnel `interface`), replacing what an earlier call set for it.
    fn set_split_dns(
        &self,
        interface: &str,
        server: IpAddr,
        domains: &[String],
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// Removes what [`Platform::set_split_dns`] set for `interface`, or
    /// (`None`, at start) everything it set for any interface.
    fn clear_split_dns(
        &self,
        interface: Option<&str>,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// The system's DNS resolvers now.
    fn resolvers(&self) -> Vec<std::net::IpAddr> {
        crate::resolvers::system()
    }
}

/// Registers a socket with the tokio reactor (the socket must already be
/// non-blocking). The one place outside the device code where a raw
/// descriptor meets the runtime.
pub fn register(socket: socket2::Socket) -> io::Result<tokio::io::unix::AsyncFd<socket2::Socket>> {
    // SAFETY: `socket2::Socket` owns its descriptor: it is open from creation
    // until the socket is dropped, `as_raw_fd` always returns that same
    // descriptor, and the `AsyncFd` takes ownership of the socket, so the
    // descriptor outlives the registration.
    unsafe { tokio::io::unix::AsyncFd::register(socket) }.map_err(io::Error::from)
}

/// A channel for [`Platform::network_changes`]: capacity one, so a burst of
/// kernel messages becomes one pending signal.
pub fn change_channel() -> (
    tokio::sync::mpsc::Sender<()>,
    tokio::sync::mpsc::Receiver<()>,
) {
    tokio::sync::mpsc::channel(1)
}

/// The tun device as both platforms configure it: the address, its
/// point-to-point peer (S2), the MTU and the optional IPv6 address. Each
/// platform adds its own knobs and naming rule, then calls [`open_device`].
pub(crate) fn device_builder(config: &DeviceConfig) -> tun_rs::DeviceBuilder {
    let builder = tun_rs::DeviceBuilder::new()
        .ipv4(
            config.address.addr(),
            config.address.prefix_len(),
            Some(config.peer),
        )
        .mtu(config.mtu);
    match config.ipv6 {
        Some(v6) => builder.ipv6(v6.addr(), v6.prefix_len()),
        None => builder,
    }
}

/// Creates the device and reads back the name the kernel gave it.
pub(crate) fn open_device(
    builder: tun_rs::DeviceBuilder,
) -> Result<(tun_rs::AsyncDevice, String), PlatformError> {
    let device = builder.build_async().map_err(PlatformError::Device)?;
    let name = device.name().map_err(PlatformError::Device)?;
    Ok((device, name))
}

/// Runs a system tool (`nft`, `pfctl`) with `input` on its stdin and
/// returns what it wrote to stderr, where both report; a failure is an
/// error carrying that text. A missing tool is `NotFound`.
pub(crate) async fn run_tool(program: &str, args: &[&str], input: &str) -> io::Result<String> {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await?;
        // Dropping it closes the pipe: the tool sees the end of its input.
    }
    let out = child.wait_with_output().await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(io::Error::other(format!(
            "{program} failed ({}): {first}",
            out.status
        )))
    }
}
