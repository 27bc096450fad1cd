//! libxpc, safely: every `unsafe` block of ztun's XPC transport is in this
//! module, and what is exported is safe to use.
//!
//! Ownership rule at every boundary: a Rust value that wraps an XPC or
//! dispatch object ([`Object`], [`Connection`], [`Queue`]) holds exactly one
//! reference (+1) and releases it on drop. Objects libxpc *lends* — the
//! argument of an event or reply handler, a dictionary's children — are
//! either retained on the spot to become owned values, or wrapped in
//! [`Node`], which borrows from the owned root and cannot outlive it.
//!
//! Handlers are Rust closures turned into heap blocks with the `block` crate
//! (as `xpc-connection` does); libxpc copies each block it keeps, and the
//! closure runs on the connection's dispatch queue, so closures must be
//! `Send + Sync` and must not block: they hand work to another thread.
//!
//! Symbols are those libxpc has exported since macOS 10.7, plus: the SPI
//! `xpc_connection_get_audit_token` (declared by hand, present on every
//! release that has XPC), and `xpc_connection_set_peer_code_signing_requirement`
//! (macOS 12+), which is looked up at run time so the binary still starts on
//! macOS 11 and earlier. A hard reference would make dyld refuse to launch it
//! there, and Rust has no stable weak linking.

mod connection;
mod ffi;
mod object;
#[cfg(feature = "server")]
mod peer;

pub use connection::{Connection, Event, Queue, XpcError};
pub use object::{Node, Object};
#[cfg(feature = "server")]
pub use peer::{
    check_peer, is_member, own_signature, AuditToken, OwnSignature, PeerRequirement, Requirement,
};
