//! A histogram of how long something took (a checkpoint write, a publication), for the job's
//! `/metrics`.

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Durations in seconds, counted in buckets from 1 ms to about 33 s (doubling). Clones share
/// the counts.
#[derive(Clone, Debug)]
pub struct Durations(Histogram);

impl Default for Durations {
    fn default() -> Self {
        Durations(Histogram::new(exponential_buckets(1e-3, 2.0, 16)))
    }
}

impl Durations {
    /// Counts one duration.
    pub fn observe(&self, duration: std::time::Duration) {
        self.0.observe(duration.as_secs_f64());
    }

    /// The histogram, to encode.
    pub fn histogram(&self) -> &Histogram {
        &self.0
    }
}
