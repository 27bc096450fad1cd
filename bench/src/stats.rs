//! Small statistics helpers for the client subcommands.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Nearest-rank percentile of `sorted` (ascending): the smallest sample
/// that at least `pct` percent of the samples are less than or equal to.
/// `None` for no samples. `pct` is clamped to 1..=100.
pub(crate) fn percentile(sorted: &[u64], pct: usize) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (pct.clamp(1, 100) * n).div_ceil(100); // 1-based, in 1..=n
    sorted.get(rank - 1).copied()
}

/// A duration in whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Failures counted by their message, for a summary on standard error:
/// the JSON line says how many failed, this says why.
#[derive(Debug, Default)]
pub(crate) struct Failures(BTreeMap<String, u32>);

impl Failures {
    pub(crate) fn add(&mut self, why: &anyhow::Error) {
        *self.0.entry(format!("{why:#}")).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Failures) {
        for (why, n) in other.0 {
            *self.0.entry(why).or_default() += n;
        }
    }

    /// Prints `zbench WHAT: N failed: reason (count), ...` to standard
    /// error, nothing when there were no failures.
    pub(crate) fn report(&self, what: &str) {
        if self.0.is_empty() {
            return;
        }
        let total: u32 = self.0.values().sum();
        let mut line = format!("zbench {what}: {total} failed:");
        for (i, (why, n)) in self.0.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            let _ = write!(line, "{sep}{why} ({n}x)");
        }
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_percentile() {
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn single_sample_is_every_percentile() {
        for p in [1, 50, 99, 100] {
            assert_eq!(percentile(&[7], p), Some(7));
        }
    }

    #[test]
    fn nearest_rank_on_one_to_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 1), Some(1));
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 99), Some(99));
        assert_eq!(percentile(&v, 100), Some(100));
    }

    #[test]
    fn nearest_rank_rounds_the_rank_up() {
        // Ten samples: the 99th percentile's rank is ceil(9.9) = 10, the
        // median's is 5 (no interpolation).
        let v: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(percentile(&v, 99), Some(100));
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 51), Some(60));
        // Three samples: the median is the second.
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        // 200 samples: ranks 100 and 198.
        let v: Vec<u64> = (1..=200).collect();
        assert_eq!(percentile(&v, 50), Some(100));
        assert_eq!(percentile(&v, 99), Some(198));
    }

    #[test]
    fn micros_saturates() {
        assert_eq!(micros(Duration::from_millis(3)), 3000);
        assert_eq!(micros(Duration::MAX), u64::MAX);
    }
}
