//! Noticing that the machine slept. Routes, gateways and the upstream may
//! all have changed while it did, and the route monitor may have missed it
//! (the messages arrived before the helper ran again, or none came). Two
//! clocks are read together: one that stops while the machine sleeps, one
//! that does not; when the second has run ahead of the first, it slept.

use std::time::Duration;

/// Sleep shorter than this is not worth re-checking the network for (and
/// is within the noise of a busy machine's scheduling).
pub const THRESHOLD: Duration = Duration::from_secs(2);

/// How often the clocks are compared.
pub const PERIOD: Duration = Duration::from_secs(2);

/// The two clocks, read one right after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// Stops during sleep (Linux `CLOCK_MONOTONIC`, macOS `CLOCK_UPTIME_RAW`).
    pub awake: Duration,
    /// Runs during sleep (Linux `CLOCK_BOOTTIME`, macOS `CLOCK_MONOTONIC`).
    pub total: Duration,
}

impl Clocks {
    /// Reads both clocks; `None` where the system cannot tell them apart.
    pub fn now() -> Option<Self> {
        use nix::time::{clock_gettime, ClockId};
        #[cfg(target_os = "linux")]
        let (awake, total) = (ClockId::CLOCK_MONOTONIC, ClockId::CLOCK_BOOTTIME);
        #[cfg(target_os = "macos")]
        let (awake, total) = (
            ClockId::from_raw(nix::libc::CLOCK_UPTIME_RAW),
            ClockId::CLOCK_MONOTONIC,
        );
        let read = |id| clock_gettime(id).ok().map(Duration::from);
        Some(Self {
            awake: read(awake)?,
            total: read(total)?,
        })
    }
}

/// How long the machine slept between two readings, if long enough to
/// matter.
pub fn slept(before: Clocks, now: Clocks) -> Option<Duration> {
    let total = now.total.saturating_sub(before.total);
    let awake = now.awake.saturating_sub(before.awake);
    Some(total.saturating_sub(awake)).filter(|d| *d >= THRESHOLD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(awake: u64, total: u64) -> Clocks {
        Clocks {
            awake: Duration::from_millis(awake),
            total: Duration::from_millis(total),
        }
    }

    #[test]
    fn a_night_asleep_is_the_gap_between_the_clocks() {
        let before = at(10_000, 50_000);
        let after = at(12_000, 8 * 3_600_000 + 52_000);
        assert_eq!(slept(before, after), Some(Duration::from_secs(8 * 3600)));
    }

    #[test]
    fn clocks_that_advance_together_mean_no_sleep() {
        assert_eq!(slept(at(0, 100), at(2_000, 2_100)), None);
        // Drift and scheduling noise under the threshold are ignored.
        assert_eq!(slept(at(0, 0), at(2_000, 3_900)), None);
        assert_eq!(slept(at(0, 0), at(2_000, 4_000)), Some(THRESHOLD));
    }

    #[test]
    fn a_clock_going_backwards_is_not_a_sleep() {
        assert_eq!(slept(at(5_000, 5_000), at(4_000, 4_000)), None);
    }

    #[test]
    fn this_machine_has_both_clocks_and_is_awake() {
        let a = Clocks::now().expect("both clocks");
        let b = Clocks::now().expect("both clocks");
        assert_eq!(slept(a, b), None);
        assert!(
            b.total >= b.awake,
            "the sleep-counting clock is never behind"
        );
    }
}
