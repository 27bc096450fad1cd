//! macOS: `utun`, `SIOCAIFADDR`, the `PF_ROUTE` routing socket and
//! `IP_BOUND_IF` (issue 7).
//!
//! The byte codecs (`rtmsg`, `ifreq`) are pure and compiled on every OS, so
//! they are tested on Linux against byte arrays written from the xnu
//! headers; only the code that hands those bytes to the kernel
//! (`system`, the `Platform` implementation) is macOS-only.

pub mod ifreq;
pub mod rtmsg;
#[cfg(target_os = "macos")]
mod system;

#[cfg(target_os = "macos")]
pub use system::MacosPlatform;
