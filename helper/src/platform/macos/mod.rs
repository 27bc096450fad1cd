//! macOS: utun, `SIOCAIFADDR`, the `PF_ROUTE` routing socket and
//! `IP_BOUND_IF`.
//!
//! Everything but `kernel` compiles and runs on every OS: the byte codecs
//! (`rtmsg`, `ifreq`) are tested against byte arrays written from the xnu
//! headers, and the platform (`platform`) makes its decisions over the
//! `sys::Darwin` syscall seam, which the tests drive with a model of xnu
//! (helper/tests/xnu). Only `kernel`, the seam's real side, is macOS-only.

pub mod ifreq;
#[cfg(target_os = "macos")]
mod kernel;
mod platform;
pub mod rtmsg;
pub mod sys;

#[cfg(target_os = "macos")]
pub use kernel::Libc;
pub use platform::MacosPlatform;
