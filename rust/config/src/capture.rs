//! Transparent capture: a listener that takes connections redirected to it by the kernel
//! (`meshproxy capture`'s rules) reads where each was going (`original_destination: true`,
//! Envoy's `use_original_dst`), and its routes may match on that address
//! (`match.original_destination`, Envoy's filter chain `prefix_ranges` and `destination_port`).
//! This is the value rule for one entry of such a match, shared with the Python schema.

use std::net::{IpAddr, SocketAddr};

/// What one `match.original_destination` entry accepts: an address, a network, a port.
pub const DESTINATION_FORMS: &str = "expected IP:PORT (10.0.2.2:8080, [fd00::2]:8080), an IP (any port), a network (10.0.2.0/24, fd00::/64), a network and a port (10.0.2.0/24:8080) or *:PORT (any address)";

/// One entry of `match.original_destination`: the connection's original destination matches
/// when its IP lies in the network (a single address is a network of one) and, if a port is
/// given, its port is that one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestinationMatch {
    /// `None`: any address (`*:PORT`).
    pub network: Option<(IpAddr, u8)>,
    pub port: Option<u16>,
}

// === impl DestinationMatch ===

impl DestinationMatch {
    pub fn matches(&self, destination: SocketAddr) -> bool {
        self.port.is_none_or(|port| port == destination.port())
            && self.network.is_none_or(|(network, prefix)| in_network(destination.ip(), network, prefix))
    }
}

/// Reads one entry (see [`DESTINATION_FORMS`]); the problem is in the words a user reads,
/// without the input, which the caller quotes.
pub fn destination(text: &str) -> Result<DestinationMatch, String> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix("*:") {
        return match port.parse::<u16>() {
            Ok(port) if port != 0 => Ok(DestinationMatch { network: None, port: Some(port) }),
            _ => Err(format!("has no valid port; {DESTINATION_FORMS}")),
        };
    }
    if let Ok(address) = text.parse::<SocketAddr>() {
        if address.port() == 0 {
            return Err(format!("has port 0; {DESTINATION_FORMS}"));
        }
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        return Ok(DestinationMatch { network: Some((address.ip(), prefix)), port: Some(address.port()) });
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        return Ok(DestinationMatch { network: Some((ip, prefix)), port: None });
    }
    if let Some((ip, rest)) = text.split_once('/') {
        let ip = ip.parse::<IpAddr>().map_err(|_| format!("is not a valid network; {DESTINATION_FORMS}"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        // The prefix length is digits: a colon after it can only start a port.
        let (prefix, port) = match rest.split_once(':') {
            Some((prefix, port)) => match port.parse::<u16>() {
                Ok(port) if port != 0 => (prefix, Some(port)),
                _ => return Err(format!("has no valid port; {DESTINATION_FORMS}")),
            },
            None => (rest, None),
        };
        return match prefix.parse::<u8>() {
            Ok(prefix) if prefix <= max => Ok(DestinationMatch { network: Some((ip, prefix)), port }),
            _ => Err(format!("has a prefix length that is not 0 to {max}; {DESTINATION_FORMS}")),
        };
    }
    Err(format!("is not a destination; {DESTINATION_FORMS}"))
}

/// Whether `ip` is in `network/prefix`; an IPv4 address given as IPv6 (`::ffff:10.0.2.2`, as a
/// dual-stack socket reports it) is compared as IPv4.
fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn entry(text: &str) -> DestinationMatch {
        destination(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn each_form_matches_what_it_says() {
        assert!(entry("10.0.2.2:8080").matches(at("10.0.2.2:8080")));
        assert!(!entry("10.0.2.2:8080").matches(at("10.0.2.2:8081")));
        assert!(!entry("10.0.2.2:8080").matches(at("10.0.2.3:8080")));
        assert!(entry("10.0.2.2").matches(at("10.0.2.2:1")));
        assert!(entry("10.0.2.0/24").matches(at("10.0.2.200:80")));
        assert!(!entry("10.0.2.0/24").matches(at("10.0.3.1:80")));
        assert!(entry("0.0.0.0/0").matches(at("192.0.2.1:80")));
        assert!(entry("*:80").matches(at("[fd00::1]:80")));
        assert!(!entry("*:80").matches(at("10.0.0.1:81")));
        assert!(entry("[fd00::2]:8080").matches(at("[fd00::2]:8080")));
        assert!(entry("fd00::/64").matches(at("[fd00::9]:1")));
        assert!(!entry("fd00::/64").matches(at("10.0.0.1:1")));
        assert!(entry("10.0.2.0/24").matches(at("[::ffff:10.0.2.7]:80")));
        assert!(entry("10.0.2.0/24:8080").matches(at("10.0.2.7:8080")));
        assert!(!entry("10.0.2.0/24:8080").matches(at("10.0.2.7:8081")));
        assert!(entry("fd00::/64:8080").matches(at("[fd00::7]:8080")));
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["", "orders:80", "10.0.2.2:0", "10.0.2.0/33", "fd00::/129", "*:x", "*:0", "10.0.2/24", "10.0.2.0/24:0", "10.0.2.0/24:x"] {
            assert!(destination(bad).is_err(), "{bad}");
        }
    }
}
