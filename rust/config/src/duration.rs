//! Durations as configs write them (`250ms`, `1.5s`, `2m`, `1h`, or seconds), to the
//! millisecond or to the microsecond.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written `250ms`, `1.5s`, `2m`, `1h` or as a number of seconds; always written
/// back as whole milliseconds (`"250ms"`), the form the Python layer hands over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

/// A duration to the microsecond, for what is finer than a millisecond (`busy_poll`): written
/// `200us`, `0.5ms` or as the units `Millis` takes; written back as whole microseconds
/// (`"200us"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Micros(pub u64);

// === impl Millis, Micros ===

/// What a duration type counts in, and the units its text may use.
trait Resolution: Sized {
    /// Counts per second.
    const PER_SECOND: f64;
    /// Unit suffixes and their length in seconds; a bare number is seconds.
    const UNITS: &'static [(&'static str, f64)];
    const EXPECTING: &'static str;
    fn from_count(count: u64) -> Self;

    /// Parses a number followed by one of `UNITS`, or a bare number of seconds.
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number.parse().ok()?;
        let seconds = match unit.trim() {
            "" => 1.0,
            unit => Self::UNITS.iter().find(|(name, _)| *name == unit)?.1,
        };
        Self::from_seconds(value * seconds)
    }

    fn from_seconds(seconds: f64) -> Option<Self> {
        let count = (seconds * Self::PER_SECOND).round();
        (seconds.is_finite() && seconds >= 0.0 && count <= u64::MAX as f64).then_some(Self::from_count(count as u64))
    }
}

const COARSE_UNITS: &[(&str, f64)] = &[("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3_600.0)];
const FINE_UNITS: &[(&str, f64)] = &[("us", 0.000_001), ("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3_600.0)];

impl Resolution for Millis {
    const PER_SECOND: f64 = 1_000.0;
    const UNITS: &'static [(&'static str, f64)] = COARSE_UNITS;
    const EXPECTING: &'static str = "a duration such as 250ms, 1.5s, 2m, 1h, or a number of seconds";
    fn from_count(count: u64) -> Self {
        Millis(count)
    }
}

impl Resolution for Micros {
    const PER_SECOND: f64 = 1_000_000.0;
    const UNITS: &'static [(&'static str, f64)] = FINE_UNITS;
    const EXPECTING: &'static str = "a duration such as 200us, 1ms, or a number of seconds";
    fn from_count(count: u64) -> Self {
        Micros(count)
    }
}

impl Millis {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// Parses `250ms`, `1.5s`, `2m`, `1h`; a bare number is seconds.
    pub fn parse(text: &str) -> Option<Millis> {
        Resolution::parse(text)
    }
}

impl Micros {
    pub fn duration(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// Parses `200us`, `1ms` and the units of `Millis`; a bare number is seconds.
    pub fn parse(text: &str) -> Option<Micros> {
        Resolution::parse(text)
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}ms", self.0))
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}us", self.0))
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor(std::marker::PhantomData))
    }
}

/// Reads a duration as text with a unit, or as a number of seconds.
struct DurationVisitor<T>(std::marker::PhantomData<T>);

impl<T: Resolution> de::Visitor<'_> for DurationVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::parse(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        T::from_seconds(v).ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from_count(v.saturating_mul(T::PER_SECOND as u64)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self)).and_then(|s| self.visit_u64(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        for (text, ms) in [("250ms", 250), ("1.5s", 1_500), ("2m", 120_000), ("1h", 3_600_000), ("3", 3_000), ("0s", 0)] {
            assert_eq!(Millis::parse(text), Some(Millis(ms)), "{text}");
        }
        for bad in ["", "fast", "-1s", "1d", "1.2.3s", "300us"] {
            assert_eq!(Millis::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn fine_durations_parse_to_the_microsecond() {
        for (text, us) in [("300us", 300), ("0.5ms", 500), ("2ms", 2_000), ("0.001", 1_000), ("0us", 0)] {
            assert_eq!(Micros::parse(text), Some(Micros(us)), "{text}");
        }
        for bad in ["", "-1us", "1ns", "us"] {
            assert_eq!(Micros::parse(bad), None, "{bad}");
        }
    }
}
