//! Durations as configs write them (`250ms`, `1.5s`, `2m`, `1h`, or seconds), to the
//! millisecond or to the microsecond.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::values::{self, DurationInput, Grain};

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

/// What a duration type counts in; the text it is read from follows `values::duration`.
trait Resolution: Sized {
    /// Counts per second.
    const PER_SECOND: f64;
    const GRAIN: Grain;
    fn from_count(count: u64) -> Self;

    /// Reads text with a unit, or a number of seconds, as `values::duration` does.
    fn read(input: DurationInput<'_>) -> Option<Self> {
        values::duration(input, Self::GRAIN).ok().and_then(Self::from_seconds)
    }

    fn from_seconds(seconds: f64) -> Option<Self> {
        let count = (seconds * Self::PER_SECOND).round();
        (seconds.is_finite() && seconds >= 0.0 && count <= u64::MAX as f64).then_some(Self::from_count(count as u64))
    }
}

impl Resolution for Millis {
    const PER_SECOND: f64 = 1_000.0;
    const GRAIN: Grain = Grain::Millis;
    fn from_count(count: u64) -> Self {
        Millis(count)
    }
}

impl Resolution for Micros {
    const PER_SECOND: f64 = 1_000_000.0;
    const GRAIN: Grain = Grain::Micros;
    fn from_count(count: u64) -> Self {
        Micros(count)
    }
}

impl Millis {
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// The duration, or `None` for 0 (which the config's timeouts read as "never").
    pub fn nonzero(self) -> Option<Duration> {
        (self.0 > 0).then(|| self.duration())
    }

    /// Parses `250ms`, `1.5s`, `2m`, `1h`.
    pub fn parse(text: &str) -> Option<Millis> {
        Resolution::read(DurationInput::Text(text))
    }
}

impl Micros {
    pub fn duration(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// Parses `200us`, `1ms` and the units of `Millis`.
    pub fn parse(text: &str) -> Option<Micros> {
        Resolution::read(DurationInput::Text(text))
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
        f.write_str(T::GRAIN.expected())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::read(DurationInput::Text(v)).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        T::read(DurationInput::Seconds(v)).ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
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
        for (text, ms) in [("250ms", 250), ("1.5s", 1_500), ("2m", 120_000), ("1h", 3_600_000), ("0s", 0)] {
            assert_eq!(Millis::parse(text), Some(Millis(ms)), "{text}");
        }
        for bad in ["", "fast", "-1s", "1d", "1.2.3s", "300us", "3", " 1s"] {
            assert_eq!(Millis::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn fine_durations_parse_to_the_microsecond() {
        for (text, us) in [("300us", 300), ("0.5ms", 500), ("2ms", 2_000), ("0us", 0)] {
            assert_eq!(Micros::parse(text), Some(Micros(us)), "{text}");
        }
        for bad in ["", "-1us", "1ns", "us", "0.001"] {
            assert_eq!(Micros::parse(bad), None, "{bad}");
        }
    }
}
