//! ztun-tests: end-to-end tests that start the real `ztun-helper` in network
//! namespaces they create themselves and drive it with the real `ztunctl`
//! (DESIGN.md §7). They arrive with the daemon (issue 5); protocol and CLI
//! tests live beside their crates.
