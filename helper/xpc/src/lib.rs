//! ztun's XPC bridge (DESIGN.md §3): how a message dictionary travels as XPC
//! objects, shared by the helper's listener and ztunctl's client.
//!
//! - [`value`] is the one mapping between `plist::Value` (ztun's message
//!   model) and XPC objects. It is written once, over two small traits, and
//!   runs against libxpc on macOS and against [`StandIn`], a model of
//!   libxpc's object tree, in the tests that run on Linux. Incoming trees get
//!   the same bounds as Unix-socket frames, and XPC types outside the table
//!   are refused with the key path.
//! - `macos` (macOS only) holds every `unsafe` block of the XPC transport:
//!   owned XPC objects, dispatch queues, connections with their event and
//!   reply handlers as blocks, and — with feature `server` — the peer's audit
//!   token, group membership and code-signing checks.
//!
//! This crate moves messages and says who sent them; what a message means
//! and who may send it are decided by `ztun-proto` and the helper.

pub mod stand_in;
pub mod value;

#[cfg(target_os = "macos")]
pub mod macos;

pub use stand_in::StandIn;
pub use value::{from_plist, to_plist, BridgeError, View, XpcBuild, XpcRead, XpcType};
