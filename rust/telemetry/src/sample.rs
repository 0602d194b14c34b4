//! A sampling ratio: the share of requests an access log writes, or of new traces recorded.

/// From 0.0 (none) to 1.0 (all). The two ends draw no random number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample(f64);

// === impl Sample ===

impl Sample {
    pub const ALL: Sample = Sample(1.0);

    /// `None` outside 0.0..=1.0 (or NaN).
    pub fn new(ratio: f64) -> Option<Sample> {
        (0.0..=1.0).contains(&ratio).then_some(Sample(ratio))
    }

    /// Whether this request is in the sample.
    pub fn draw(self) -> bool {
        if self.0 >= 1.0 {
            true
        } else if self.0 <= 0.0 {
            false
        } else {
            rand::random::<f64>() < self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Sample;

    #[test]
    fn the_ends_are_all_or_nothing_and_out_of_range_is_refused() {
        let all = Sample::new(1.0).unwrap();
        let none = Sample::new(0.0).unwrap();
        assert!((0..1000).all(|_| all.draw()));
        assert!((0..1000).all(|_| !none.draw()));
        assert_eq!(Sample::new(1.5), None);
        assert_eq!(Sample::new(-0.1), None);
        assert_eq!(Sample::new(f64::NAN), None);
    }
}
