//! The config's value rules, once for both layers: durations and their limits, SPIFFE IDs and
//! trust domains. Each rule is a pure function giving the value or the problem in the words a
//! user reads (without the quoted input, which the caller quotes in its own notation: Python
//! `repr` in the schema's messages, a field path in the engine's). The Python schema calls them
//! through `_native`; it keeps the structure, the defaults and the line numbers.

use crate::spiffe::{self, SpiffeId};

/// What a duration is written as: text with a unit, or a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DurationInput<'a> {
    Text(&'a str),
    Seconds(f64),
}

/// Whether a duration may be finer than a millisecond (`busy_poll`: `300us`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    Millis,
    Micros,
}

/// The text forms the schema accepts, as the JSON Schema shows them.
pub const DURATION_PATTERN: &str = r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)$";
pub const FINE_DURATION_PATTERN: &str = r"^(\d+(?:\.\d*)?|\.\d+)(us|ms|s|m|h)$";

const UNITS: &[(&str, f64)] = &[("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3_600.0)];
const FINE_UNITS: &[(&str, f64)] = &[("us", 0.000_001), ("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3_600.0)];

/// The longest busy-polling window, in microseconds: beyond it a worker spins through pauses no
/// event fills.
pub const MAX_BUSY_POLL_MICROS: u64 = 10_000;

// === impl Grain ===

impl Grain {
    fn units(self) -> &'static [(&'static str, f64)] {
        match self {
            Grain::Millis => UNITS,
            Grain::Micros => FINE_UNITS,
        }
    }

    /// What would be valid, for a message.
    pub fn expected(self) -> &'static str {
        match self {
            Grain::Millis => "expected a number with a unit ms, s, m or h (e.g. 250ms, 1.5s, 2m) or a number of seconds",
            Grain::Micros => "expected a number with a unit us, ms or s (e.g. 300us, 0.5ms) or a number of seconds",
        }
    }
}

// === durations ===

/// A duration's length in seconds: text is a number and a unit (`250ms`, `1.5s`, `.5s`, `2.s`),
/// a number is seconds. NaN and negative lengths are refused; an infinite one is the caller's
/// to refuse as too long for its type.
pub fn duration(input: DurationInput<'_>, grain: Grain) -> Result<f64, String> {
    let seconds = match input {
        DurationInput::Seconds(seconds) => seconds,
        DurationInput::Text(text) => duration_text(text, grain).ok_or_else(|| grain.expected().to_owned())?,
    };
    if seconds.is_nan() {
        return Err(grain.expected().to_owned());
    }
    if seconds < 0.0 {
        return Err("it must not be negative".to_owned());
    }
    Ok(seconds)
}

/// `DURATION_PATTERN` (or the fine one) read by hand: ASCII digits with at most one '.', then
/// a unit. One trailing newline passes, as it always has under the pattern's `$`.
fn duration_text(text: &str, grain: Grain) -> Option<f64> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    let shaped = digits(whole) && digits(fraction) && (!whole.is_empty() || !fraction.is_empty());
    let scale = grain.units().iter().find(|(name, _)| *name == unit)?.1;
    // The same arithmetic as the schema always did: the number as a double, times the unit.
    shaped.then(|| number.parse::<f64>().ok()).flatten().map(|value| value * scale)
}

/// `busy_poll`, in microseconds: at most `MAX_BUSY_POLL_MICROS`.
pub fn busy_poll(micros: u64) -> Result<u64, String> {
    if micros > MAX_BUSY_POLL_MICROS {
        return Err(format!(
            "{micros}us is too long; at most {MAX_BUSY_POLL_MICROS}us (10ms), or 0 to sleep at once"
        ));
    }
    Ok(micros)
}

/// A duration that must not be zero (`connect_timeout`, a DNS source's `min_ttl`), in
/// microseconds; `field` names it in the message.
pub fn positive_duration(field: &str, micros: u64) -> Result<u64, String> {
    if micros == 0 {
        return Err(format!("{field} must be greater than 0, e.g. 1s"));
    }
    Ok(micros)
}

// === SPIFFE IDs ===

/// A SPIFFE ID, or what is wrong with it (`crate::spiffe` holds the rules).
pub fn spiffe_id(text: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(text).map_err(|error| error.problem().to_owned())
}

/// A trust domain given alone (`mesh.local`), or what is wrong with it.
pub fn trust_domain(name: &str) -> Result<&str, String> {
    match spiffe::check_trust_domain(name) {
        Ok(()) => Ok(name),
        Err(_) if name.starts_with(spiffe::SCHEME_PREFIX) => Err(format!(
            "give the trust domain alone, without 'spiffe://': '{}'",
            name[spiffe::SCHEME_PREFIX.len()..].escape_debug()
        )),
        Err(error) => Err(error.problem().to_owned()),
    }
}

/// The message for a pattern the regex crate refuses: its reason without the caret diagram.
pub fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    let reason = text.lines().find_map(|line| line.trim().strip_prefix("error: ")).unwrap_or(text.trim());
    format!("not a valid regular expression: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(text: &str, grain: Grain) -> Result<f64, String> {
        duration(DurationInput::Text(text), grain)
    }

    #[test]
    fn durations_read_every_unit_as_the_schema_always_did() {
        for (text, expected) in [
            ("250ms", 0.25),
            ("1.5s", 1.5),
            (".5s", 0.5),
            ("2.s", 2.0),
            ("2m", 120.0),
            ("0.25h", 900.0),
            ("1s\n", 1.0),
        ] {
            assert_eq!(seconds(text, Grain::Millis), Ok(expected), "{text:?}");
        }
        assert_eq!(seconds("300us", Grain::Micros), Ok(300.0 * 0.000_001));
        assert_eq!(duration(DurationInput::Seconds(15.0), Grain::Millis), Ok(15.0));
    }

    #[test]
    fn durations_refuse_what_the_schema_refuses() {
        for text in ["", "15", "ms", "1 s", "1S", "1d", "1e3ms", "-1s", " 1s", "1.2.3s", ".s", "1s\n\n", "300us", "\u{661}s"] {
            assert_eq!(seconds(text, Grain::Millis), Err(Grain::Millis.expected().to_owned()), "{text:?}");
        }
        assert_eq!(duration(DurationInput::Seconds(-0.5), Grain::Millis), Err("it must not be negative".to_owned()));
        assert!(duration(DurationInput::Seconds(f64::NAN), Grain::Micros).is_err_and(|e| e.contains("us, ms or s")));
        assert_eq!(duration(DurationInput::Seconds(f64::INFINITY), Grain::Millis), Ok(f64::INFINITY));
    }

    #[test]
    fn limits_name_what_would_be_valid() {
        assert_eq!(busy_poll(10_000), Ok(10_000));
        assert_eq!(busy_poll(20_000), Err("20000us is too long; at most 10000us (10ms), or 0 to sleep at once".to_owned()));
        assert_eq!(positive_duration("connect_timeout", 1), Ok(1));
        assert_eq!(
            positive_duration("connect_timeout", 0),
            Err("connect_timeout must be greater than 0, e.g. 1s".to_owned())
        );
    }

    #[test]
    fn spiffe_problems_are_in_the_schemas_words() {
        let problem = |text: &str| spiffe_id(text).err().unwrap_or_default();
        assert_eq!(
            problem("spiffe://Mesh.local/x"),
            "the trust domain contains 'M'; it may use only lowercase letters a-z, digits 0-9, '.', '-' and '_'"
        );
        assert!(problem("spiffe://a'contains 'b/x").starts_with("the trust domain contains '\\''"));
        assert!(problem(&format!("spiffe://{}/x", "t".repeat(256))).contains("is 256 characters long; at most 255"));
        assert_eq!(problem("spiffe://mesh.local/"), "the path must not end with '/'; remove the trailing '/'");
        assert_eq!(problem("spiffe://mesh.local/a/"), "the path must not end with '/'; remove the trailing '/'");
        assert!(problem("spiffe://mesh.local//a").ends_with("('//'); separate segments with a single '/'"));
        assert!(problem("spiffe://mesh.local/./a").ends_with("'.' segments; write the path out in full without them"));
        assert!(problem("spiffe://mesh.local/a b").starts_with("the path segment 'a b' contains ' '"));
        assert_eq!(spiffe_id("spiffe://mesh.local/ns/a/sa/b").map(|id| id.path().to_owned()), Ok("/ns/a/sa/b".into()));
    }

    #[test]
    fn trust_domains_given_alone() {
        assert_eq!(trust_domain("mesh.local"), Ok("mesh.local"));
        assert_eq!(trust_domain("spiffe://mesh.local"), Err("give the trust domain alone, without 'spiffe://': 'mesh.local'".into()));
        assert!(trust_domain("Mesh").is_err_and(|e| e.starts_with("the trust domain contains 'M'; it may use only")));
        assert!(trust_domain("").is_err_and(|e| e.starts_with("the trust domain is empty")));
    }
}
