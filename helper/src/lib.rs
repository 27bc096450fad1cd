//! ztun-helper: the root daemon that owns tunnels, routes and the packet
//! engine (DESIGN.md §2): the daemon (`daemon`), each tunnel's data plane
//! (`tunnel`) and upstreams (`relay`), the route plan and ledger (`routes`),
//! desired tunnels (`state`), the operating system behind one interface
//! (`platform`: Linux, macOS, and a recording fake), and the control plane
//! (`control`: authorisation and transports), and the live self-test a
//! client asks for (`doctor`).

pub mod control;
pub mod daemon;
pub mod device;
pub mod doctor;
pub mod fakedns;
pub mod fault;
pub mod killswitch;
pub mod memory;
pub mod platform;
pub mod relay;
pub mod resolvers;
pub mod routes;
pub mod splitdns;
pub mod state;
pub mod tunnel;
pub mod wake;
