//! Crash injection for the reliability suite: in a debug build started with
//! `ZTUN_CRASH_AT=OP:K`, the helper aborts right after the K-th step of
//! operation OP (`up`, `route.add`, `down`, `sweep`), as a power cut or
//! `kill -9` would stop it. The suite then restarts the helper and checks
//! that nothing it owned was lost or left behind. Release builds compile
//! every call here to nothing.

#[cfg(debug_assertions)]
mod armed {
    use std::sync::{Mutex, OnceLock, PoisonError};

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
    }

    pub(super) fn step(what: &str) {
        let Some((op, k)) = plan() else { return };
        let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        current.1 += 1;
        if current.0 == op && current.1 == *k {
            eprintln!("ztun-helper: crash injected after step {k} of {op} ({what})");
            std::process::abort();
        }
    }
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
