//! The Advanced Anomaly statistic: a robust z-score of each client's request count against
//! its peers in the same window (see [`crate::rule_spec::AnomalyParams`]).
//!
//! Honest scope: this is a median/MAD outlier test on `ln(1 + requests)` across the clients
//! of one namespace in one window. It catches a client far above its peers right now. It
//! does not learn seasonality, does not look at latency or payload sizes, and a flood that
//! many clients share evenly does not stand out. Counts come from the heavy-hitter-bounded
//! windows, so with more clients than the bound the baseline is made of the heavier
//! clients, which makes the test more conservative, not less.

/// Median and MAD of `xs` (sorted in place). `None` when `xs` is empty.
pub fn median_mad(xs: &mut [f64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let median = median_sorted(xs);
    let mut dev: Vec<f64> = xs.iter().map(|x| (x - median).abs()).collect();
    dev.sort_by(f64::total_cmp);
    Some((median, median_sorted(&dev)))
}

fn median_sorted(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Robust z-score of `x` given a baseline median and MAD (floored at `min_mad`).
pub fn robust_z(x: f64, median: f64, mad: f64, min_mad: f64) -> f64 {
    (x - median) / (1.4826 * mad.max(min_mad).max(f64::EPSILON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_of_known_values() {
        let mut xs = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(median_mad(&mut xs), Some((3.0, 1.0)));
        assert_eq!(median_mad(&mut []), None);
    }

    #[test]
    fn outliers_score_high_and_peers_low() {
        assert!(robust_z(10.0, 3.0, 1.0, 0.5) > 4.0);
        assert!(robust_z(3.5, 3.0, 1.0, 0.5) < 1.0);
        // A flat baseline uses the floor, not a zero MAD.
        assert!(robust_z(3.1, 3.0, 0.0, 0.5).is_finite());
    }
}
