//! ztun-helper: the root daemon that owns tunnels, routes and the packet
//! engine (DESIGN.md §2). The daemon itself arrives with issue 5; until then
//! this crate carries the platform dependencies so the macOS cross-check
//! compiles them for both darwin targets.
