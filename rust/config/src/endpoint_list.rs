//! The config schema's endpoint lists, read in bulk.
//!
//! A mesh-sized config lists a hundred thousand endpoints; validated one pydantic model at a
//! time they took over a second. A list is read here in one pass when every item is one the
//! schema certainly accepts — an `address` (an IPv4 literal or a DNS name, and a port) and a
//! `weight` from 0 to `MAX_WEIGHT` — and no address is listed twice. Anything else is left to
//! the schema, which says what is wrong: these rules accept less than the schema's, never
//! more, so a list read here is one the schema would have accepted as it is.

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The schema's bounds on `weight`, and its default.
pub const MAX_WEIGHT: i64 = 1_000_000;
pub const DEFAULT_WEIGHT: i64 = 1;

/// A list being read: the uniqueness keys of its addresses so far, and the list as the engine
/// document writes it (`[{"address":…,"weight":…},…]`).
#[derive(Debug)]
pub struct CertainList {
    /// Hashes of the schema's uniqueness keys: a collision only sends the list to the schema.
    keys: Vec<u64>,
    document: String,
}

// === impl CertainList ===

impl CertainList {
    pub fn with_capacity(items: usize) -> CertainList {
        let mut document = String::with_capacity(items * 48 + 2);
        document.push('[');
        CertainList { keys: Vec::with_capacity(items), document }
    }

    /// Adds one item; false when the schema must read it (and so the whole list) itself.
    pub fn push(&mut self, address: &str, weight: i64) -> bool {
        let Some(key) = certain_key(address) else { return false };
        if !(0..=MAX_WEIGHT).contains(&weight) {
            return false;
        }
        if !self.keys.is_empty() {
            self.document.push(',');
        }
        self.keys.push(key);
        // A certain address is letters, digits, '.', '-' and ':': nothing to escape.
        self.document.push_str(r#"{"address":""#);
        self.document.push_str(address);
        // Writing to a String cannot fail.
        let _ = write!(self.document, r#"","weight":{weight}}}"#);
        true
    }

    /// The engine document's list, or `None` when an address is listed twice (for the schema
    /// to say where).
    pub fn finish(mut self) -> Option<String> {
        self.keys.sort_unstable();
        if self.keys.windows(2).any(|pair| pair[0] == pair[1]) {
            return None;
        }
        self.document.push(']');
        Some(self.document)
    }
}

/// The schema's uniqueness key of an address it certainly accepts, as a number: an IPv4
/// literal as written and its port exactly (top bit set); a DNS name lowercased without its
/// trailing dot, and the port, hashed (top bit clear).
pub fn certain_key(address: &str) -> Option<u64> {
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
pub(crate) fn is_dns_name(name: &str) -> bool {
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

    #[test]
    fn a_certain_list_is_written_as_the_engine_document_writes_it() {
        let mut list = CertainList::with_capacity(2);
        assert!(list.push("10.0.0.1:80", 1) && list.push("orders:8080", 0));
        assert_eq!(list.finish().as_deref(), Some(r#"[{"address":"10.0.0.1:80","weight":1},{"address":"orders:8080","weight":0}]"#));
        assert_eq!(CertainList::with_capacity(0).finish().as_deref(), Some("[]"));
    }

    #[test]
    fn weights_out_of_range_and_repeated_addresses_go_to_the_schema() {
        let mut list = CertainList::with_capacity(1);
        assert!(!list.push("10.0.0.1:80", MAX_WEIGHT + 1));
        assert!(!list.push("10.0.0.1:80", -1));
        let mut twice = CertainList::with_capacity(2);
        assert!(twice.push("Orders:80", 1) && twice.push("orders.:80", 1));
        assert_eq!(twice.finish(), None);
    }
}
