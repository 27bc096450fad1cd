//! ztun-helper: the root daemon that owns tunnels, routes and the packet
//! engine (DESIGN.md §2). The daemon itself arrives with issue 5; what is
//! here so far: the route plan and ledger (`routes`), the operating system
//! behind one interface (`platform`: Linux, and a recording fake), and the
//! control plane (`control`: authorisation and the Unix-socket server).

pub mod control;
pub mod daemon;
pub mod platform;
pub mod relay;
pub mod routes;
pub mod state;
pub mod tunnel;
