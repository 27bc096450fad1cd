//! The macOS `Platform`: utun (its peer set with `SIOCAIFADDR`, S2), routes
//! through a `PF_ROUTE` socket with the pure `rtmsg` codec (S3), and
//! outbound sockets pinned with `IP_BOUND_IF` / `IPV6_BOUND_IF` (S6).
//!
//! Every decision is made here, over the [`Darwin`] syscall seam, so this
//! code compiles and runs on every OS: on a Mac over `kernel.rs`, in the tests
//! over a model of xnu. Each routing-socket exchange uses a fresh socket: the
//! kernel answers at once, and a private socket means no other request's
//! reply is in the way.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use socket2::Socket;
use ztun_proto::InterfaceAddress;

use super::rtmsg::{RouteMessage, SockAddr, RTF_GATEWAY, RTM_ADD, RTM_DELETE};
use super::sys::{
    Darwin, RouteSocket, IPPROTO_IP, IPPROTO_IPV6, IPV6_BOUND_IF, IP_BOUND_IF,
    UTUN_OPT_MAX_PENDING_PACKETS,
};
use crate::killswitch::{KillSwitch, PF_ANCHOR};
use crate::platform::{DeviceConfig, KernelRoute, Platform, PlatformError};
use crate::routes::{PhysicalGateway, RouteEntry, RouteTarget};

/// xnu `bsd/sys/errno.h`.
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
/// How long the kernel may take to answer a routing message.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest routing message read back (a reply is a few hundred bytes).
const REPLY_BUF: usize = 2048;

#[derive(Debug)]
pub struct MacosPlatform<K> {
    kernel: Arc<K>,
    seq: AtomicI32,
    /// Where per-domain resolver files go (`/etc/resolver`).
    resolver_dir: PathBuf,
}

impl<K: Darwin> MacosPlatform<K> {
    pub fn new(kernel: K) -> Self {
        Self::with_resolver_dir(kernel, PathBuf::from(crate::splitdns::RESOLVER_DIR))
    }

    /// [`MacosPlatform::new`] writing resolver files to `dir` (tests).
    pub fn with_resolver_dir(kernel: K, dir: PathBuf) -> Self {
        Self {
            kernel: Arc::new(kernel),
            seq: AtomicI32::new(1),
            resolver_dir: dir,
        }
    }

    /// The resolver files the helper wrote, with the interface each is for.
    fn resolver_files(&self) -> io::Result<Vec<(PathBuf, String)>> {
        let entries = match std::fs::read_dir(&self.resolver_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut ours = Vec::new();
        for entry in entries {
            let path = entry?.path();
            // A file being replaced, or one we cannot read, is not ours.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if let Some(interface) = crate::splitdns::owner(&text) {
                ours.push((path, interface.to_owned()));
            }
        }
        Ok(ours)
    }

    fn next_seq(&self) -> i32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `request` and returns the kernel's answer to it (the message
    /// carrying our pid and seq). A failed request is an `io::Error` with
    /// the kernel's errno: `write` reports it, and so does the reply.
    async fn exchange(&self, request: RouteMessage) -> io::Result<RouteMessage> {
        let bytes = request
            .to_bytes()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (pid, seq) = (self.kernel.pid(), request.seq);
        let socket = self.kernel.route_socket()?;
        socket.send(&bytes)?;
        let mut buf = vec![0_u8; REPLY_BUF];
        let wait = async {
            loop {
                // Every routing message on the system arrives here; ours is
                // the one with our pid and seq.
                let n = socket.recv(&mut buf).await?;
                let Ok(reply) = RouteMessage::parse(&buf[..n]) else {
                    continue;
                };
                if reply.answers(pid, seq) {
                    return if reply.errno == 0 {
                        Ok(reply)
                    } else {
                        Err(io::Error::from_raw_os_error(reply.errno))
                    };
                }
            }
        };
        tokio::time::timeout(REPLY_TIMEOUT, wait)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the kernel did not answer"))?
    }

    fn index_of(&self, interface: &str) -> Result<u32, PlatformError> {
        self.kernel
            .if_nametoindex(interface)
            .ok()
            .filter(|i| *i != 0)
            .ok_or_else(|| PlatformError::NoSuchInterface(interface.to_owned()))
    }

    fn request(&self, kind: u8, entry: &RouteEntry) -> Result<RouteMessage, PlatformError> {
        let seq = self.next_seq();
        Ok(match &entry.target {
            RouteTarget::Tunnel { interface } => {
                let index = u16::try_from(self.index_of(interface)?)
                    .map_err(|_| PlatformError::NoSuchInterface(interface.clone()))?;
                RouteMessage::interface_route(kind, entry.dst, index, interface, seq)
            }
            RouteTarget::Gateway { via, interface } => {
                // A link-local gateway is only an address on its interface:
                // the zone goes with it (S6 exclusions via fe80::1).
                let zone = self.index_of(interface)?;
                RouteMessage::gateway_route(kind, entry.dst, SockAddr::scoped(*via, zone), seq)
            }
        })
    }

    /// The kernel's route for `ipv6`'s default, as (interface, gateway).
    async fn default_route(&self, ipv6: bool) -> Result<Option<(String, IpAddr)>, PlatformError> {
        match self
            .exchange(RouteMessage::get_default(ipv6, self.next_seq()))
            .await
        {
            Ok(reply) => Ok(reply
                .interface_name()
                .map(str::to_owned)
                .zip(reply.gateway_ip())),
            Err(e) if e.raw_os_error() == Some(ESRCH) => Ok(None),
            Err(e) => Err(PlatformError::RouteRead(e)),
        }
    }
}

/// The utun pending-packet limit for `mtu`: as many packets as the 512 KiB
/// receive buffer the utun control reserves holds (`if_utun.c:
/// utun_register_control`, `ctl_recvsize`), each with its 4-byte family
/// header, and at most 256 (the ifnet send queue holds 128 more behind it).
fn max_pending_packets(mtu: u16) -> u32 {
    const RECV_BUFFER: u32 = 512 * 1024;
    (RECV_BUFFER / (u32::from(mtu) + 4)).clamp(1, 256)
}

/// Where an `RTM_GET` reply says the kernel sends packets: its interface, and
/// its gateway when the route has one.
fn kernel_route(reply: &RouteMessage) -> Option<KernelRoute> {
    let interface = reply.interface_name()?;
    let gateway = if reply.flags & RTF_GATEWAY != 0 {
        reply.gateway_ip()
    } else {
        None
    };
    Some(KernelRoute {
        interface: interface.to_owned(),
        gateway,
    })
}

impl<K: Darwin> Platform for MacosPlatform<K> {
    type Device = K::Utun;

    fn create_device(
        &self,
        config: &DeviceConfig,
    ) -> Result<(Self::Device, String), PlatformError> {
        let (utun, name) = self
            .kernel
            .open_utun(config)
            .map_err(PlatformError::Device)?;
        // xnu starts every utun at one packet pending in its socket
        // (`if_utun.c: utun_ctl_bind`), so each read would bring one packet
        // and a disable/enable-output round trip; let a read drain a burst.
        let pending = max_pending_packets(config.mtu);
        if let Err(e) =
            self.kernel
                .set_utun_option(&utun, UTUN_OPT_MAX_PENDING_PACKETS, &pending.to_ne_bytes())
        {
            tracing::warn!(%name, pending, error = %e, "cannot raise the utun pending-packet limit; reads stay one packet at a time");
        }
        Ok((utun, name))
    }

    async fn add_route(&self, entry: &RouteEntry) -> Result<(), PlatformError> {
        let request = self.request(RTM_ADD, entry)?;
        match self.exchange(request).await {
            // Already there: the read-back decides whether it is ours.
            Err(e) if e.raw_os_error() == Some(EEXIST) => Ok(()),
            Err(source) => Err(PlatformError::RouteAdd {
                dst: entry.dst,
                interface: entry.target.interface().to_owned(),
                source,
            }),
            Ok(_) => Ok(()),
        }
    }

    async fn delete_route(&self, entry: &RouteEntry) -> Result<bool, PlatformError> {
        // xnu matches RTM_DELETE on destination and netmask only: read the
        // route first and leave it alone unless it is exactly ours (our
        // interface, and our gateway for an exclusion route).
        match self.lookup_route(entry.dst).await? {
            Some(k) if entry.matches(&k) => {}
            _ => return Ok(false),
        }
        let request = match self.request(RTM_DELETE, entry) {
            Ok(r) => r,
            Err(PlatformError::NoSuchInterface(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.exchange(request).await {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(ESRCH) => Ok(false),
            Err(source) => Err(PlatformError::RouteDelete {
                dst: entry.dst,
                interface: entry.target.interface().to_owned(),
                source,
            }),
        }
    }

    async fn lookup_route(&self, dst: IpNet) -> Result<Option<KernelRoute>, PlatformError> {
        let reply = match self
            .exchange(RouteMessage::get_exact(dst, self.next_seq()))
            .await
        {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(ESRCH) => return Ok(None),
            Err(e) => return Err(PlatformError::RouteRead(e)),
        };
        // RTM_GET answers with the best match; only the exact prefix counts.
        if reply.prefix() != Some(dst) {
            return Ok(None);
        }
        Ok(kernel_route(&reply))
    }

    async fn route_to(&self, dst: IpAddr) -> Result<Option<KernelRoute>, PlatformError> {
        let reply = match self
            .exchange(RouteMessage::get_to(dst, self.next_seq()))
            .await
        {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(ESRCH) => return Ok(None),
            Err(e) => return Err(PlatformError::RouteRead(e)),
        };
        Ok(kernel_route(&reply))
    }

    async fn interface_addresses(
        &self,
        interface: &str,
    ) -> Result<Vec<InterfaceAddress>, PlatformError> {
        self.kernel
            .interface_addresses(interface)
            .map_err(PlatformError::RouteRead)
    }

    async fn physical_gateway(&self) -> Result<Option<PhysicalGateway>, PlatformError> {
        let Some((interface, v4)) = self.default_route(false).await? else {
            return Ok(None);
        };
        let v6 = self
            .default_route(true)
            .await?
            .filter(|(i, _)| *i == interface)
            .map(|(_, gw)| gw);
        Ok(Some(PhysicalGateway {
            interface,
            v4: Some(v4),
            v6,
        }))
    }

    fn network_changes(&self) -> io::Result<tokio::sync::mpsc::Receiver<()>> {
        let socket = self.kernel.route_socket()?;
        let (tx, rx) = crate::platform::change_channel();
        let pid = self.kernel.pid();
        tokio::spawn(async move {
            let mut buf = vec![0_u8; 8192];
            loop {
                let Ok(n) = socket.recv(&mut buf).await else {
                    return;
                };
                // Routes, addresses, interfaces changed by someone else: a
                // reason to look again (the daemon debounces bursts).
                let relevant = super::rtmsg::messages(&buf[..n])
                    .any(|m| m.is_ok_and(|m| m.is_network_change(pid)));
                if relevant {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(())
                    {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    fn bind_to_interface(&self, socket: &Socket, interface: &str) -> io::Result<()> {
        let index = self.index_of(interface).map_err(io::Error::other)?;
        // An unbound socket still reports its family through getsockname.
        let (level, name) = if socket.local_addr()?.is_ipv6() {
            (IPPROTO_IPV6, IPV6_BOUND_IF)
        } else {
            (IPPROTO_IP, IP_BOUND_IF)
        };
        self.kernel
            .setsockopt(socket, level, name, &index.to_ne_bytes())
    }

    /// Loads the rules into the anchor (`pfctl -f` replaces an anchor's
    /// rules in one transaction), then takes a fresh enable reference and
    /// gives back the one held before. pf at boot, or after a reboot, may be
    /// disabled with the old token gone: a new reference every time keeps
    /// pf enabled without trusting an old one, and the count of references
    /// this helper holds at one.
    async fn set_kill_switch(
        &self,
        rules: Option<&KillSwitch>,
        held: Option<u64>,
    ) -> Result<Option<u64>, PlatformError> {
        let fail = |action: &'static str| {
            move |e: io::Error| PlatformError::KillSwitch {
                action,
                reason: e.to_string(),
            }
        };
        let token = if let Some(rules) = rules {
            let text = crate::killswitch::pf_rules(rules);
            self.kernel
                .pfctl(&["-a", PF_ANCHOR, "-f", "-"], &text)
                .await
                .map_err(fail("install"))?;
            let printed = self
                .kernel
                .pfctl(&["-E"], "")
                .await
                .map_err(fail("enable"))?;
            let token =
                crate::killswitch::pf_token(&printed).ok_or_else(|| PlatformError::KillSwitch {
                    action: "enable",
                    reason: format!("pfctl -E printed no token: {}", printed.trim()),
                })?;
            Some(token)
        } else {
            self.kernel
                .pfctl(&["-a", PF_ANCHOR, "-F", "rules"], "")
                .await
                .map_err(fail("remove"))?;
            None
        };
        if let Some(old) = held.filter(|old| Some(*old) != token) {
            // A token a reboot invalidated is refused; nothing is held then.
            if let Err(e) = self.kernel.pfctl(&["-X", &old.to_string()], "").await {
                tracing::info!("pf enable reference {old} was already gone: {e}");
            }
        }
        Ok(token)
    }

    /// One resolver(5) file per domain, written whole (temp file, rename).
    /// A file of that name the helper did not write is left alone and
    /// reported; files of this interface for domains no longer asked for
    /// go.
    async fn set_split_dns(
        &self,
        interface: &str,
        server: IpAddr,
        domains: &[String],
    ) -> Result<(), PlatformError> {
        let fail = |what: String| PlatformError::SplitDns(what);
        std::fs::create_dir_all(&self.resolver_dir)
            .map_err(|e| fail(format!("{}: {e}", self.resolver_dir.display())))?;
        let text = crate::splitdns::resolver_file(interface, server);
        for domain in domains {
            let path = self.resolver_dir.join(domain);
            match std::fs::read_to_string(&path) {
                Ok(existing) if crate::splitdns::owner(&existing).is_none() => {
                    return Err(fail(format!(
                        "{} exists and is not ztun's; move it away or leave {domain} out",
                        path.display()
                    )));
                }
                _ => {}
            }
            let tmp = self.resolver_dir.join(format!(".{domain}.ztun-tmp"));
            std::fs::write(&tmp, &text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        }
        for (path, owner) in self.resolver_files().map_err(|e| fail(e.to_string()))? {
            let asked = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| domains.iter().any(|d| d == n));
            if owner == interface && !asked {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    async fn clear_split_dns(&self, interface: Option<&str>) -> Result<(), PlatformError> {
        let files = self
            .resolver_files()
            .map_err(|e| PlatformError::SplitDns(e.to_string()))?;
        for (path, owner) in files {
            if interface.is_none_or(|i| i == owner) {
                std::fs::remove_file(&path)
                    .map_err(|e| PlatformError::SplitDns(format!("{}: {e}", path.display())))?;
            }
        }
        Ok(())
    }
}
