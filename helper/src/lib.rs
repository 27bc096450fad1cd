//! ztun-helper: the root daemon that owns tunnels, routes and the packet
//! engine (DESIGN.md §2). The daemon arrives with issue 5; what is here is
//! its pure core, which needs no kernel: the route plan and the route ledger.
//! The crate also carries the platform dependencies so the macOS cross-check
//! compiles them for both darwin targets.

pub mod routes;
