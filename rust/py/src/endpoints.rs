//! The config schema's endpoint lists, read in bulk for the Python layer.
//!
//! A mesh-sized config lists a hundred thousand endpoints; validated one pydantic model at a
//! time they took over a second. A list is read here in one call when every item is one the
//! schema certainly accepts — a mapping of an `address` (an IPv4 literal or a DNS name, and a
//! port) and an optional integer `weight` — and no address is listed twice. Anything else is
//! left to the schema, which says what is wrong: these rules accept less than the schema's,
//! never more, so a list read here is one the schema would have accepted as it is.

use std::hash::{DefaultHasher, Hash, Hasher};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString, PyTuple};

/// The schema's bounds on `weight`.
const MAX_WEIGHT: i64 = 1_000_000;
const DEFAULT_WEIGHT: i64 = 1;

/// A read list: its addresses (the caller's own str objects), its weights, and the list as
/// the engine document writes it (`[{"address":…,"weight":…},…]`).
type Read<'py> = (Bound<'py, PyTuple>, Bound<'py, PyTuple>, String);

/// Reads a list of endpoint mappings the schema certainly accepts, or gives `None` for the
/// schema to validate it item by item.
#[pyfunction]
pub fn read_endpoints<'py>(items: &Bound<'py, PyAny>) -> PyResult<Option<Read<'py>>> {
    let Ok(list) = items.cast_exact::<PyList>() else { return Ok(None) };
    let mut addresses = Vec::with_capacity(list.len());
    let mut weights = Vec::with_capacity(list.len());
    let mut document = String::with_capacity(list.len() * 48 + 2);
    // Hashes of the schema's uniqueness keys: a collision only sends the list to the schema.
    let mut keys = Vec::with_capacity(list.len());
    let names = (intern!(items.py(), "address"), intern!(items.py(), "weight"));
    document.push('[');
    for item in list.iter() {
        let Some((address, weight)) = read_item(&item, &names) else { return Ok(None) };
        let Ok(text) = address.to_str() else { return Ok(None) };
        let Some(key) = certain_key(text) else { return Ok(None) };
        keys.push(key);
        if !addresses.is_empty() {
            document.push(',');
        }
        // A certain address is letters, digits, '.', '-' and ':': nothing to escape.
        document.push_str(r#"{"address":""#);
        document.push_str(text);
        document.push_str(r#"","weight":"#);
        document.push_str(itoa::Buffer::new().format(weight));
        document.push('}');
        addresses.push(address);
        weights.push(weight);
    }
    document.push(']');
    keys.sort_unstable();
    if keys.windows(2).any(|pair| pair[0] == pair[1]) {
        return Ok(None);
    }
    let py = items.py();
    Ok(Some((PyTuple::new(py, addresses)?, PyTuple::new(py, weights)?, document)))
}

/// `{"address": str, "weight": int}` (weight optional), exactly those types and keys.
/// `names` are the two keys, interned.
fn read_item<'py>(item: &Bound<'py, PyAny>, names: &(&Bound<'py, PyString>, &Bound<'py, PyString>)) -> Option<(Bound<'py, PyString>, i64)> {
    let dict = item.cast_exact::<PyDict>().ok()?;
    let address = dict.get_item(names.0).ok()??.cast_exact::<PyString>().ok()?.clone();
    let weight = match dict.get_item(names.1).ok()? {
        // Exactly int: bool is an int subclass, and the schema refuses it.
        Some(weight) => weight.cast_exact::<PyInt>().ok()?.extract::<i64>().ok()?,
        None if dict.len() == 1 => DEFAULT_WEIGHT,
        None => return None,
    };
    // Any key besides these two is one the schema refuses.
    (dict.len() <= 2 && (0..=MAX_WEIGHT).contains(&weight)).then_some((address, weight))
}

/// The schema's uniqueness key of an address it certainly accepts, as a number: an IPv4
/// literal as written and its port exactly (top bit set); a DNS name lowercased without its
/// trailing dot, and the port, hashed (top bit clear).
fn certain_key(address: &str) -> Option<u64> {
    let (host, port) = address.rsplit_once(':')?;
    let port = certain_port(port)?;
    if let Some(ip) = ipv4(host) {
        return Some(1 << 63 | u64::from(ip) << 16 | u64::from(port));
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // All digits and dots reads as an IPv4 literal to a resolver: the schema refuses it.
        return None;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if !is_dns_name(name) {
        return None;
    }
    let mut hasher = DefaultHasher::new();
    name.to_ascii_lowercase().hash(&mut hasher);
    port.hash(&mut hasher);
    Some(hasher.finish() >> 1)
}

/// One to five ASCII digits, 1 to 65535.
fn certain_port(port: &str) -> Option<u16> {
    let digits = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| port.parse::<u16>().ok()).flatten().filter(|&p| p != 0)
}

/// Four decimal octets, 0 to 255, without leading zeros (which Python's `ipaddress` refuses),
/// as the address's 32 bits. Read in one pass: a mesh lists a hundred thousand of them.
fn ipv4(host: &str) -> Option<u32> {
    let mut ip = 0u32;
    let mut octets = 0;
    for octet in host.as_bytes().split(|&b| b == b'.') {
        let leading_zero = octet.len() > 1 && octet[0] == b'0';
        if octets == 4 || !(1..=3).contains(&octet.len()) || leading_zero {
            return None;
        }
        let mut value = 0u32;
        for &b in octet {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        if value > 255 {
            return None;
        }
        ip = ip << 8 | value;
        octets += 1;
    }
    (octets == 4).then_some(ip)
}

/// Dot-separated labels of ASCII letters, digits and inner hyphens, up to 63 bytes each and
/// 253 in all.
fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        (1..=63).contains(&bytes.len())
            && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    (1..=253).contains(&name.len()) && name.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_addresses_are_ipv4_literals_and_dns_names_with_a_port() {
        for address in ["127.0.0.1:8080", "0.0.0.0:1", "orders:80", "Orders.Internal.:65535", "a-1.b:080"] {
            assert!(certain_key(address).is_some(), "{address}");
        }
        let uncertain = [
            "[::1]:80", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:123456", "01.2.3.4:80",
            "256.1.1.1:80", "1.2.3:80", "1.2.3.4.:80", "-a:80", "a-:80", "a..b:80", "a b:80", "a:8\n",
            "é:80", ":80", "a::80", "a:",
        ];
        for address in uncertain {
            assert!(certain_key(address).is_none(), "{address}");
        }
    }

    #[test]
    fn ipv4_literals_are_read_as_their_32_bits() {
        assert_eq!(ipv4("127.0.0.1"), Some(0x7f00_0001));
        assert_eq!(ipv4("255.255.255.255"), Some(u32::MAX));
        assert_eq!(ipv4("10.1.200.3"), Some(0x0a01_c803));
        for host in ["", "1.2.3", "1.2.3.4.5", "1.2.3.", ".1.2.3", "1..2.3", "256.1.1.1", "1.2.3.04", "1.2.3.a", "1234.1.1.1"] {
            assert_eq!(ipv4(host), None, "{host}");
        }
        // One key per (address, port); names never share a key with a literal.
        assert_ne!(certain_key("10.0.0.1:80"), certain_key("10.0.0.1:81"));
        assert_ne!(certain_key("10.0.0.1:80"), certain_key("10.0.0.2:80"));
        assert_ne!(certain_key("10.0.0.1:80"), certain_key("a.b:80"));
    }

    #[test]
    fn keys_fold_case_and_the_trailing_dot_as_the_schema_does() {
        assert_eq!(certain_key("Orders.Internal.:80"), certain_key("orders.internal:80"));
        assert_eq!(certain_key("orders:080"), certain_key("orders:80"));
        assert_ne!(certain_key("orders:80"), certain_key("orders:81"));
    }
}
