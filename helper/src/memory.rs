//! How the helper asks the C allocator to hold memory: what an idle helper
//! costs is mostly what malloc keeps (issue 20: idle RSS at most 8 MiB).

/// Keeps flows' large, mostly unwritten buffers from costing memory. Each
/// TCP flow's transmit buffer (256 KiB, `engine_config` in daemon.rs) is
/// allocated zeroed at the SYN, and most flows write little of it. glibc
/// serves a block this large by mmap, whose pages cost memory only once
/// written; but after the first such block is freed it raises its mmap
/// threshold above them, and from then on they come from the heap, where
/// calloc zero-fills, so touches, every byte (measured: 1,000 concurrent
/// small flows peaked at 149 MiB instead of 69). A fixed threshold stays
/// put. macOS malloc maps blocks this large from fresh pages already.
///
/// Call it from `main` before any other thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_large_buffers_lazy() {
    // SAFETY: mallopt only sets a malloc tunable; it is called once, before
    // any other thread exists.
    let set = unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024) };
    if set != 1 {
        tracing::warn!("cannot fix malloc's mmap threshold: idle flows may hold more memory");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_large_buffers_lazy() {}

/// Gives the pages of freed memory back to the system. glibc keeps a freed
/// block's pages in its arena, resident, unless it lies at the arena's top;
/// `malloc_trim` returns every whole free page of every arena (measured:
/// 0.1 ms with the 1 MiB of a freed coalescing table in it). For the data
/// plane to call when it frees what traffic needed, not per packet or flow.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn return_freed() {
    // SAFETY: malloc_trim only walks malloc's own arenas, under their locks;
    // it frees nothing that is in use.
    unsafe { nix::libc::malloc_trim(0) };
}

/// macOS malloc returns freed large blocks' pages by itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_freed() {}
