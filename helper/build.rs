//! Link flags for the helper binary.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed as DT_RELR (glibc 2.36, binutils
        // 2.38): a position-independent Rust binary carries some 10,000
        // of them, 240 KB of `.rela.dyn` that the loader reads at every
        // start and that stays mapped; packed they take a few KB.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
