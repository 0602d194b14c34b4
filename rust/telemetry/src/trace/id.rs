//! Trace and span identifiers as W3C Trace Context and B3 write them: lowercase hex, never all
//! zeros (both formats call an all-zero id invalid).

use std::fmt;

/// 16 bytes; a 64-bit B3 trace id is held left-padded with zeros, as B3 says to widen it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// Whether hex digits `A`-`F` are accepted: W3C allows only lowercase; B3 implementations are
/// read leniently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Lower,
    Any,
}

// === impl TraceId ===

impl TraceId {
    pub fn random() -> TraceId {
        TraceId(rand::random::<u128>().max(1).to_be_bytes())
    }

    /// 32 hex digits, or 16 (a 64-bit B3 id); `None` for anything else or all zeros.
    pub fn parse(hex: &[u8], case: Case) -> Option<TraceId> {
        let mut id = [0u8; 16];
        match hex.len() {
            32 => decode(hex, &mut id, case)?,
            16 => decode(hex, &mut id[8..], case)?,
            _ => return None,
        }
        (id != [0; 16]).then_some(TraceId(id))
    }

    /// Whether the id fits in 64 bits, so B3 can write it in 16 hex digits.
    pub fn is_short(&self) -> bool {
        self.0[..8] == [0; 8]
    }

    /// The low 64 bits, as a 64-bit B3 trace id writes them.
    pub fn low(&self) -> &[u8] {
        &self.0[8..]
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

// === impl SpanId ===

impl SpanId {
    pub fn random() -> SpanId {
        SpanId(rand::random::<u64>().max(1).to_be_bytes())
    }

    /// Exactly 16 hex digits, not all zeros.
    pub fn parse(hex: &[u8], case: Case) -> Option<SpanId> {
        let mut id = [0u8; 8];
        if hex.len() != 16 {
            return None;
        }
        decode(hex, &mut id, case)?;
        (id != [0; 8]).then_some(SpanId(id))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

// === hex ===

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends the lowercase hex of `bytes` to `out`.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0xf)]);
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let mut text = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut text, bytes);
    // Hex digits are ASCII.
    f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
}

/// One byte from two hex digits.
pub fn hex_byte(hex: &[u8], case: Case) -> Option<u8> {
    let mut byte = [0u8; 1];
    decode(hex, &mut byte, case)?;
    Some(byte[0])
}

/// Decodes `hex` (twice as long as `out`) into `out`.
fn decode(hex: &[u8], out: &mut [u8], case: Case) -> Option<()> {
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (nibble(pair[0], case)? << 4) | nibble(pair[1], case)?;
    }
    Some(())
}

fn nibble(digit: u8, case: Case) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' if case == Case::Any => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_as_written() {
        let trace = TraceId::parse(b"4bf92f3577b34da6a3ce929d0e0e4736", Case::Lower);
        assert_eq!(trace.map(|t| t.to_string()).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let span = SpanId::parse(b"00f067aa0ba902b7", Case::Lower);
        assert_eq!(span.map(|s| s.to_string()).as_deref(), Some("00f067aa0ba902b7"));
    }

    #[test]
    fn a_64_bit_trace_id_is_widened_with_zeros() {
        let trace = TraceId::parse(b"a3ce929d0e0e4736", Case::Any);
        assert_eq!(trace.map(|t| t.to_string()).as_deref(), Some("0000000000000000a3ce929d0e0e4736"));
        assert!(trace.is_some_and(|t| t.is_short()));
    }

    #[test]
    fn zeros_wrong_lengths_and_uppercase_in_w3c_are_invalid() {
        assert_eq!(TraceId::parse(&[b'0'; 32], Case::Any), None);
        assert_eq!(SpanId::parse(&[b'0'; 16], Case::Any), None);
        assert_eq!(TraceId::parse(b"4bf92f3577b34da6a3ce929d0e0e473", Case::Any), None);
        assert_eq!(SpanId::parse(b"00F067AA0BA902B7", Case::Lower), None);
        assert!(SpanId::parse(b"00F067AA0BA902B7", Case::Any).is_some());
        assert_eq!(SpanId::parse(b"00f067aa0ba902bg", Case::Any), None);
    }

    #[test]
    fn random_ids_are_never_zero() {
        for _ in 0..100 {
            assert_ne!(TraceId::random().0, [0; 16]);
            assert_ne!(SpanId::random().0, [0; 8]);
        }
    }
}
