//! Crash injection for the reliability suite: in a debug build started with
//! `ZTUN_CRASH_AT=OP:K`, the helper aborts right after the K-th step of
//! operation OP (`up`, `route.add`, `down`, `sweep`), as a power cut or
//! `kill -9` would stop it. The suite then restarts the helper and checks
//! that nothing it owned was lost or left behind. Release builds compile
//! every call here to nothing.

#[cfg(debug_assertions)]
mod armed {
    use std::cell::Cell;
    use std::sync::{Mutex, OnceLock, PoisonError};

    /// An in-process plan for one thread: crash after step `k` of `op`.
    #[derive(Clone, Copy)]
    struct Plan {
        op: &'static str,
        k: u32,
        /// The operation this thread is in, and its steps so far.
        current: &'static str,
        done: u32,
    }

    thread_local! {
        static HERE: Cell<Option<Plan>> = const { Cell::new(None) };
    }

    pub(super) fn crash_in_this_thread(plan: Option<(&'static str, u32)>) {
        HERE.set(plan.map(|(op, k)| Plan {
            op,
            k,
            current: "",
            done: 0,
        }));
    }

    /// The operation now running and the steps it has completed.
    static CURRENT: Mutex<(&str, u32)> = Mutex::new(("", 0));

    fn plan() -> Option<&'static (String, u32)> {
        static PLAN: OnceLock<Option<(String, u32)>> = OnceLock::new();
        PLAN.get_or_init(|| {
            let spec = std::env::var("ZTUN_CRASH_AT").ok()?;
            let (op, k) = spec.rsplit_once(':')?;
            Some((op.to_owned(), k.parse().ok()?))
        })
        .as_ref()
    }

    pub(super) fn begin(op: &'static str) {
        *CURRENT.lock().unwrap_or_else(PoisonError::into_inner) = (op, 0);
        if let Some(plan) = HERE.get() {
            HERE.set(Some(Plan {
                current: op,
                done: 0,
                ..plan
            }));
        }
    }

    pub(super) fn step(what: &str) {
        if let Some(plan) = HERE.get() {
            let done = plan.done + 1;
            HERE.set(Some(Plan { done, ..plan }));
            if plan.current == plan.op && done == plan.k {
                HERE.set(None);
                panic!(
                    "crash injected after step {} of {} ({what})",
                    plan.k, plan.op
                );
            }
            return;
        }
        let Some((op, k)) = plan() else { return };
        let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        current.1 += 1;
        if current.0 == op && current.1 == *k {
            eprintln!("ztun-helper: crash injected after step {k} of {op} ({what})");
            std::process::abort();
        }
    }
}

/// Arms (or with `None` disarms) a crash for the calling thread only: step
/// K of operation OP panics, unwinding out of the operation as a process
/// death would stop it. The in-process scenario suites run the daemon on a
/// current-thread runtime and drop that runtime, which closes every device
/// and socket the daemon held, as the kernel does for a dead process.
///
/// # Panics
/// In a release build, which has no crash points.
pub fn crash_in_this_thread(plan: Option<(&'static str, u32)>) {
    #[cfg(debug_assertions)]
    armed::crash_in_this_thread(plan);
    #[cfg(not(debug_assertions))]
    assert!(plan.is_none(), "crash injection needs a debug build");
}

/// Marks the start of an operation whose steps are counted from 1.
#[inline]
pub fn begin(op: &'static str) {
    #[cfg(debug_assertions)]
    armed::begin(op);
    #[cfg(not(debug_assertions))]
    let _ = op;
}

/// Marks a completed step: a point where a crash must leave a state the
/// next start can repair.
#[inline]
pub fn step(what: &str) {
    #[cfg(debug_assertions)]
    armed::step(what);
    #[cfg(not(debug_assertions))]
    let _ = what;
}
