//! The syscall seam of the macOS platform: the few kernel calls it makes,
//! and nothing else. Every decision (which bytes to send, how to read the
//! answer, what an errno means) is made above this trait, in code that
//! compiles and runs on every OS; below it, `kernel.rs` is a thin
//! `cfg(target_os = "macos")` layer that hands the bytes to the kernel, and
//! the tests' xnu model (helper/tests/xnu) answers them as xnu would.
//!
//! Arguments are the kernel's own wire form (a routing message is the bytes
//! `write(2)` takes, a socket option is the bytes `setsockopt(2)` takes),
//! so an implementation that decodes them independently catches a wrong
//! byte.

use std::future::Future;
use std::io;

use ztun_proto::InterfaceAddress;

use crate::platform::DeviceConfig;

/// xnu `bsd/netinet/in.h`: `IPPROTO_IP`.
pub const IPPROTO_IP: i32 = 0;
/// xnu `bsd/netinet/in.h`: `IPPROTO_IPV6`.
pub const IPPROTO_IPV6: i32 = 41;
/// xnu `bsd/netinet/in.h`: `IP_BOUND_IF` (an `unsigned int` interface index).
pub const IP_BOUND_IF: i32 = 25;
/// xnu `bsd/netinet6/in6.h`: `IPV6_BOUND_IF` (an `unsigned int` index).
pub const IPV6_BOUND_IF: i32 = 125;

/// xnu `bsd/sys/kern_control.h`: `SYSPROTO_CONTROL`, the option level of a
/// kernel-control socket such as utun.
pub const SYSPROTO_CONTROL: i32 = 2;
/// xnu `bsd/net/if_utun.h` l.63: `UTUN_OPT_MAX_PENDING_PACKETS`, a `u_int32_t`
/// (other lengths are EMSGSIZE, 0 is EINVAL: `if_utun.c: utun_ctl_setopt`).
pub const UTUN_OPT_MAX_PENDING_PACKETS: i32 = 16;

/// An open `PF_ROUTE` socket (`socket(PF_ROUTE, SOCK_RAW, AF_UNSPEC)`).
/// The kernel copies every routing message on the system to it, the
/// answers to its own requests included. Closed when dropped.
pub trait RouteSocket: Send + Sync + 'static {
    /// `write(2)` of one whole routing message; a refused request is the
    /// kernel's errno.
    fn send(&self, message: &[u8]) -> io::Result<()>;

    /// Waits for the next routing message and `read(2)`s it into `buf`.
    fn recv(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// The kernel, as the macOS platform calls it.
pub trait Darwin: Send + Sync + 'static {
    /// An open utun device: its packets, and the interface while it lives
    /// (closing the descriptor detaches the interface).
    type Utun: crate::device::PacketDevice;
    type RouteSocket: RouteSocket;

    /// This process's pid: what the kernel writes into `rtm_pid` of every
    /// message this process sends (xnu `bsd/net/rtsock.c`, `route_output`).
    fn pid(&self) -> i32;

    /// Opens a utun device with the address, peer (S2) and MTU of `config`
    /// and returns it with the name the kernel gave it.
    fn open_utun(&self, config: &DeviceConfig) -> io::Result<(Self::Utun, String)>;

    /// `setsockopt(2)` at level `SYSPROTO_CONTROL` on the utun socket.
    fn set_utun_option(&self, utun: &Self::Utun, name: i32, value: &[u8]) -> io::Result<()>;

    fn route_socket(&self) -> io::Result<Self::RouteSocket>;

    /// `if_nametoindex(3)`; `NotFound` for an unknown name.
    fn if_nametoindex(&self, name: &str) -> io::Result<u32>;

    /// `getifaddrs(3)`, for one interface.
    fn interface_addresses(&self, name: &str) -> io::Result<Vec<InterfaceAddress>>;

    /// `setsockopt(2)` on an outbound socket the relay opened.
    fn setsockopt(
        &self,
        socket: &socket2::Socket,
        level: i32,
        name: i32,
        value: &[u8],
    ) -> io::Result<()>;

    /// Runs `/sbin/pfctl` with `args` and `input` on its stdin; returns
    /// what it printed (stdout, then stderr). pf has no other interface the
    /// helper uses: rules are text in pf.conf(5) grammar, loaded into an
    /// anchor, and enabling is `pfctl -E` / `pfctl -X <token>`.
    fn pfctl(&self, args: &[&str], input: &str) -> impl Future<Output = io::Result<String>> + Send;
}
