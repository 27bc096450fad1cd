//! Upstreams: where terminated flows leave the machine. `echo` forwards ICMP
//! echo (S5 `forward` mode); the TCP/UDP direct relay and SOCKS5 (issue 6)
//! join it here. Every socket opened outward is bound to the physical
//! interface first, so nothing can loop back into the tunnel (S6).

pub mod echo;
