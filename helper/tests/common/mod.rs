//! Shared by the root-only helper tests.

/// Runs `test` on a fresh thread inside a new, empty network namespace
/// (`unshare(CLONE_NEWNET)` affects only that thread, and the programs it
/// starts), so nothing a test does can reach the root namespace. Without
/// root it says so loudly and runs nothing.
pub(crate) fn in_private_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !ztun_tests::can_run("this helper test") {
        return;
    }
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership;
        // no other thread shares its network namespace state.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        ztun_tests::run("ip", &["link", "set", "lo", "up"]).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(test());
    })
    .join()
    .unwrap();
}
