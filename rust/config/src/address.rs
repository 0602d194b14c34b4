//! Socket addresses as written in config: a listener binds `IP:PORT`, an endpoint connects to
//! `HOST:PORT`. Each rule gives the address with a key that compares what the kernel would
//! compare (`[::1]` and `[0:0::1]` are one address, `Orders.` and `orders` one name), or the
//! problem in the words a user reads, without the quoted input: the caller writes
//! `'…' is not a valid address; {problem}` in its own notation.

use crate::endpoint_list::is_dns_name;
use crate::problem::shown;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a listener address should look like.
pub const LISTEN_EXAMPLE: &str = "expected IP:PORT, e.g. 127.0.0.1:15001";
/// What an endpoint address should look like.
pub const ENDPOINT_EXAMPLE: &str = "expected HOST:PORT, e.g. 127.0.0.1:8080, [::1]:8080 or orders.internal:8080";

/// An endpoint's address, read: its host's key (an IP in canonical form, IPv6 in brackets, or
/// a DNS name lowercased without its trailing dot) and its port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointAddress {
    pub host: String,
    pub port: u16,
}

/// `127.0.0.1:15001` or `[::1]:15001`; port 0 asks the OS for an ephemeral port. Zone ids
/// (`fe80::1%eth0`) are refused: a sidecar talks over loopback or routable addresses.
pub fn listen(text: &str) -> Result<SocketAddr, String> {
    let (host, bracketed, port) = split(text).ok_or_else(|| split_hint(text, LISTEN_EXAMPLE))?;
    let Some(ip) = ip(host, bracketed) else {
        if bracketed || looks_numeric(host) {
            return Err(format!("{} is not an IP address", shown(host)));
        }
        // Listeners bind before any resolver is consulted, so a name is never right here.
        return Err("a listener binds an IP, e.g. 127.0.0.1:15001 or [::1]:15001, not a host name".to_owned());
    };
    Ok(SocketAddr::new(ip, self::port(port, 0)?))
}

/// `HOST:PORT` where HOST is an IPv4 literal, a bracketed IPv6 literal or a DNS name, and the
/// port is 1 to 65535.
pub fn endpoint(text: &str) -> Result<EndpointAddress, String> {
    let (host, bracketed, port) = split(text).ok_or_else(|| split_hint(text, ENDPOINT_EXAMPLE))?;
    let key = match ip(host, bracketed) {
        Some(IpAddr::V6(ip)) => format!("[{ip}]"),
        Some(IpAddr::V4(ip)) => ip.to_string(),
        // All digits and dots reads as an IPv4 literal to a resolver, so it must be one.
        None if bracketed || looks_numeric(host) => return Err(format!("{} is not an IP address", shown(host))),
        None if is_dns_name(host.strip_suffix('.').unwrap_or(host)) => {
            host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
        }
        None => {
            return Err(format!("{} is not a valid host name (letters, digits, hyphens and dots)", shown(host)));
        }
    };
    Ok(EndpointAddress { host: key, port: self::port(port, 1)? })
}

/// (host, bracketed, port text), or `None` when there is no `:PORT` part.
fn split(text: &str) -> Option<(&str, bool, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, true, after.strip_prefix(':')?));
    }
    let (host, port) = text.rsplit_once(':')?;
    (!host.is_empty() && !host.contains(':')).then_some((host, false, port))
}

fn split_hint(text: &str, example: &str) -> String {
    if text.matches(':').count() > 1 && !text.starts_with('[') {
        return format!("{example} (an IPv6 address goes in brackets: [::1]:15001)");
    }
    example.to_owned()
}

fn ip(host: &str, bracketed: bool) -> Option<IpAddr> {
    if bracketed {
        // `Ipv6Addr` refuses a zone id ('%') as the rule wants.
        return host.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn looks_numeric(host: &str) -> bool {
    host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// One to five ASCII digits, `lowest` to 65535.
fn port(text: &str, lowest: u16) -> Result<u16, String> {
    let digits = (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    match digits.then(|| text.parse::<u16>().ok()).flatten() {
        Some(port) if port >= lowest => Ok(port),
        _ => Err(format!("expected a port from {lowest} to 65535 after the colon")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> (String, u16) {
        let address = endpoint(text).unwrap_or_else(|problem| panic!("{text}: {problem}"));
        (address.host, address.port)
    }

    #[test]
    fn listeners_bind_ip_literals() {
        assert_eq!(listen("127.0.0.1:15001"), Ok("127.0.0.1:15001".parse().unwrap_or_else(|_| unreachable!())));
        assert_eq!(listen("[0:0::1]:0").map(|a| a.to_string()), Ok("[::1]:0".to_owned()));
        assert_eq!(listen("localhost"), Err(LISTEN_EXAMPLE.to_owned()));
        assert_eq!(listen("::1:15001"), Err(format!("{LISTEN_EXAMPLE} (an IPv6 address goes in brackets: [::1]:15001)")));
        assert_eq!(listen("localhost:80"), Err("a listener binds an IP, e.g. 127.0.0.1:15001 or [::1]:15001, not a host name".into()));
        assert_eq!(listen("127.0.0.01:80"), Err("'127.0.0.01' is not an IP address".into()));
        assert_eq!(listen("[fe80::1%eth0]:80"), Err("'fe80::1%eth0' is not an IP address".into()));
        for port in ["99999", "", "-1", "8O", "80\n", "000080"] {
            assert_eq!(listen(&format!("127.0.0.1:{port}")), Err("expected a port from 0 to 65535 after the colon".into()), "{port:?}");
        }
    }

    #[test]
    fn endpoint_keys_compare_what_the_kernel_compares() {
        assert_eq!(key("[0:0::1]:80"), key("[::1]:80"));
        assert_eq!(key("Orders.Internal.:8080"), ("orders.internal".to_owned(), 8080));
        assert_eq!(key("10.0.0.1:1"), ("10.0.0.1".to_owned(), 1));
        assert_ne!(key("orders:80"), key("orders:81"));
    }

    #[test]
    fn endpoint_problems_say_what_would_be_valid() {
        let problem = |text: &str| endpoint(text).err().unwrap_or_default();
        assert_eq!(problem("nope"), ENDPOINT_EXAMPLE);
        assert_eq!(problem("orders_v1:8080"), "'orders_v1' is not a valid host name (letters, digits, hyphens and dots)");
        assert_eq!(problem("1.2.3.256:80"), "'1.2.3.256' is not an IP address");
        assert_eq!(problem("[orders]:80"), "'orders' is not an IP address");
        assert_eq!(problem("orders:0"), "expected a port from 1 to 65535 after the colon");
        assert_eq!(problem("user@orders:80"), "'user@orders' is not a valid host name (letters, digits, hyphens and dots)");
        assert_eq!(problem(":80"), ENDPOINT_EXAMPLE);
    }
}
