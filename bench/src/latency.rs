//! Latency recording: one HDR histogram per client task (no sharing on the
//! hot path), merged when a point ends and summarised as the percentiles
//! the report shows.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track, in microseconds (60 s); slower
/// operations are clamped to it rather than dropped.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits the histograms keep (0.1 % resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> LatencyRecorder {
        LatencyRecorder::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder covering 1 us to [`LATENCY_US_MAX`].
    pub fn new() -> LatencyRecorder {
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
            .expect("static histogram bounds are valid");
        LatencyRecorder { histogram }
    }

    /// Records one operation that took `latency_us` microseconds.
    pub fn record(&mut self, latency_us: u64) {
        self.histogram
            .saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
    }

    /// Adds every value recorded by `other`.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with identical bounds merge");
    }

    /// Number of recorded operations.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The percentiles the report shows.
    pub fn summary(&self) -> LatencySummary {
        let quantile_ms = |quantile: f64| {
            if self.histogram.is_empty() {
                0.0
            } else {
                self.histogram.value_at_quantile(quantile) as f64 / 1000.0
            }
        };
        LatencySummary {
            count: self.count(),
            latency_ms_mean: if self.histogram.is_empty() {
                0.0
            } else {
                self.histogram.mean() / 1000.0
            },
            latency_ms_p50: quantile_ms(0.50),
            latency_ms_p90: quantile_ms(0.90),
            latency_ms_p99: quantile_ms(0.99),
            latency_ms_p999: quantile_ms(0.999),
            latency_ms_max: if self.histogram.is_empty() {
                0.0
            } else {
                self.histogram.max() as f64 / 1000.0
            },
        }
    }
}

/// Latency percentiles of one point, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Operations the percentiles are computed from.
    pub count: u64,
    /// Mean latency.
    pub latency_ms_mean: f64,
    /// Median.
    pub latency_ms_p50: f64,
    /// 90th percentile.
    pub latency_ms_p90: f64,
    /// 99th percentile.
    pub latency_ms_p99: f64,
    /// 99.9th percentile.
    pub latency_ms_p999: f64,
    /// Slowest operation.
    pub latency_ms_max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within the histogram's 0.1 % resolution.
    fn assert_close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= expected * 0.002,
            "{actual} is not within 0.2 % of {expected}"
        );
    }

    #[test]
    fn percentiles_of_a_uniform_sequence_are_where_they_belong() {
        let mut recorder = LatencyRecorder::new();
        // 1 ms .. 10 s in 1 ms steps: the p-th percentile is p % of 10 s.
        for millisecond in 1..=10_000u64 {
            recorder.record(millisecond * 1000);
        }
        let summary = recorder.summary();
        assert_eq!(summary.count, 10_000);
        assert_close(summary.latency_ms_p50, 5_000.0);
        assert_close(summary.latency_ms_p90, 9_000.0);
        assert_close(summary.latency_ms_p99, 9_900.0);
        assert_close(summary.latency_ms_p999, 9_990.0);
        assert_close(summary.latency_ms_max, 10_000.0);
        assert_close(summary.latency_ms_mean, 5_000.5);
    }

    #[test]
    fn merged_recorders_hold_every_value_and_an_empty_one_reports_zeros() {
        let mut fast = LatencyRecorder::new();
        let mut slow = LatencyRecorder::new();
        for _ in 0..990 {
            fast.record(1_000);
        }
        for _ in 0..10 {
            slow.record(100_000);
        }
        fast.merge(&slow);
        let summary = fast.summary();
        assert_eq!(summary.count, 1000);
        assert_close(summary.latency_ms_p50, 1.0);
        assert_close(summary.latency_ms_p99, 1.0);
        assert_close(summary.latency_ms_p999, 100.0);
        assert_eq!(LatencyRecorder::new().summary(), LatencySummary::default());
    }

    #[test]
    fn values_beyond_the_range_are_clamped_not_lost() {
        let mut recorder = LatencyRecorder::new();
        recorder.record(0);
        recorder.record(LATENCY_US_MAX * 10);
        assert_eq!(recorder.count(), 2);
        assert!(recorder.summary().latency_ms_max >= LATENCY_US_MAX as f64 / 1000.0 * 0.999);
    }
}
