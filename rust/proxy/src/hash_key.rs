//! A route's hash key (`hash_policy`): the request's value of each source listed (a header, a
//! cookie, the client's IP), combined into the hash a hashing cluster picks its endpoint by.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, COOKIE};
use meshproxy_balance::key_hash;

/// The sources of a route's hash key, in config order.
#[derive(Debug)]
pub struct HashKey {
    sources: Box<[KeySource]>,
}

#[derive(Debug)]
pub enum KeySource {
    Header(HeaderName),
    Cookie(String),
    SourceIp,
}

// === impl HashKey ===

impl HashKey {
    pub fn new(sources: Vec<KeySource>) -> HashKey {
        HashKey { sources: sources.into_boxed_slice() }
    }

    /// The request's hash: each source it carries hashed and combined in order (as Envoy
    /// combines its hash policies); `None` when it carries none, and lands anywhere.
    pub fn hash(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        let mut combined = None;
        for source in self.sources.iter() {
            let hash = match source {
                KeySource::Header(name) => headers.get(name).map(|value| key_hash(value.as_bytes())),
                KeySource::Cookie(name) => cookie(headers, name).map(key_hash),
                KeySource::SourceIp => Some(match client {
                    IpAddr::V4(ip) => key_hash(&ip.octets()),
                    IpAddr::V6(ip) => key_hash(&ip.octets()),
                }),
            };
            if let Some(hash) = hash {
                combined = Some(combined.map_or(hash, |before: u64| before.rotate_left(1) ^ hash));
            }
        }
        combined
    }
}

/// The value of the cookie `name` (RFC 6265 §4.2: `name=value` pairs split by `; `, in one or
/// more `Cookie` headers); the first one if it is there twice.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(COOKIE).iter().flat_map(|value| value.as_bytes().split(|&b| b == b';')).find_map(|pair| {
        let pair = pair.trim_ascii();
        let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
        (key == name.as_bytes()).then(|| &value[1..])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn cookies_are_found_among_others_and_across_headers() {
        let map = headers(&[("cookie", "a=1; session=abc"), ("cookie", "b=2")]);
        assert_eq!(cookie(&map, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&map, "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&map, "sess"), None);
        assert_eq!(cookie(&headers(&[("cookie", "novalue; x=")]), "x"), Some(&b""[..]));
    }

    #[test]
    fn the_key_is_made_of_the_sources_the_request_carries() {
        let key = HashKey::new(vec![KeySource::Header(HeaderName::from_static("x-user")), KeySource::Cookie("session".into())]);
        let alice = key.hash(&headers(&[("x-user", "alice")]), CLIENT);
        assert_eq!(alice, key.hash(&headers(&[("x-user", "alice")]), IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1))));
        assert_ne!(alice, key.hash(&headers(&[("x-user", "bob")]), CLIENT));
        assert_ne!(alice, key.hash(&headers(&[("x-user", "alice"), ("cookie", "session=1")]), CLIENT));
        assert_eq!(key.hash(&headers(&[]), CLIENT), None);
        let by_ip = HashKey::new(vec![KeySource::SourceIp]);
        assert_ne!(by_ip.hash(&HeaderMap::new(), CLIENT), by_ip.hash(&HeaderMap::new(), IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1))));
    }
}
