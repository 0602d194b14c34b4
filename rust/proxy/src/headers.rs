//! Header rules of a forwarding proxy (RFC 9110 §7.6): hop-by-hop headers stay on their hop,
//! the client's address is appended to `x-forwarded-for`, and every request carries an
//! `x-request-id`.

use std::net::{IpAddr, SocketAddr};

use http::header::{
    Entry, HeaderMap, HeaderName, HeaderValue, CONNECTION, EXPECT, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

use meshproxy_config::spiffe::SpiffeId;

use crate::error::ProxyError;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The SPIFFE ID of the mesh peer a request came from, for the local app. Set by the sidecar
/// only: the same header arriving from anywhere is removed.
pub const PEER_IDENTITY: HeaderName = HeaderName::from_static("x-meshproxy-peer-identity");

/// Connection-specific headers never forwarded, whatever `Connection` lists; `TE` too, unless
/// it says `trailers`. Bit `i` of `name_bit` stands for entry `i`.
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    TE,
];
const CONNECTION_BIT: u16 = 1;
const TRANSFER_ENCODING_BIT: u16 = 1 << 6;
const UPGRADE_BIT: u16 = 1 << 7;
const TE_BIT: u16 = 1 << 8;
const HOP_BY_HOP_BITS: u16 = (1 << 9) - 1;
const PEER_IDENTITY_BIT: u16 = 1 << 9;
const EXPECT_BIT: u16 = 1 << 10;

/// The bit of a name the proxy removes from messages, or 0. Matched on the name's text: a
/// known name's text is a table lookup, and the match compares lengths before bytes, so most
/// names cost a length compare or two (comparing `HeaderName`s against each entry in turn cost
/// ~9 compares each).
fn name_bit(name: &HeaderName) -> u16 {
    match name.as_str() {
        "connection" => CONNECTION_BIT,
        "keep-alive" => 1 << 1,
        "proxy-connection" => 1 << 2,
        "proxy-authenticate" => 1 << 3,
        "proxy-authorization" => 1 << 4,
        "trailer" => 1 << 5,
        "transfer-encoding" => TRANSFER_ENCODING_BIT,
        "upgrade" => UPGRADE_BIT,
        "te" => TE_BIT,
        "x-meshproxy-peer-identity" => PEER_IDENTITY_BIT,
        "expect" => EXPECT_BIT,
        _ => 0,
    }
}

/// Which of the headers the proxy removes a message carries, found in one pass over its names:
/// each is then removed (a hashed lookup) only when present, and most messages carry none.
/// Scanned when a request arrives; what the proxy itself adds before forwarding it is none of
/// these.
#[derive(Debug, Clone, Copy)]
pub struct Present(u16);

impl Present {
    pub fn scan(headers: &HeaderMap) -> Present {
        Present(headers.keys().fold(0, |found, name| found | name_bit(name)))
    }

    fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// RFC 9112 §6.1: a server answers 501 to a transfer coding it does not understand. The
    /// proxy understands `chunked` only (hyper decodes it); `gzip, chunked` forwarded as plain
    /// `chunked` would silently drop the gzip coding. Looked at only when the request has a
    /// `Transfer-Encoding` at all (found by the scan).
    pub fn check_transfer_codings(self, headers: &HeaderMap) -> Result<(), ProxyError> {
        match self.other_transfer_coding(headers) {
            false => Ok(()),
            true => Err(ProxyError::UnsupportedTransferCoding),
        }
    }

    /// Whether the message's `Transfer-Encoding` names a coding other than `chunked`: one hyper
    /// does not decode, and which the message's body still carries once the chunks are read.
    pub fn other_transfer_coding(self, headers: &HeaderMap) -> bool {
        self.has(TRANSFER_ENCODING_BIT)
            && !headers
                .get_all(TRANSFER_ENCODING)
                .iter()
                .flat_map(|value| value.as_bytes().split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
                // Empty list elements are allowed (RFC 9110 §5.6.1).
                .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case(b"chunked"))
    }

    /// Whether the message carries `Upgrade` (see `upgrade`).
    pub fn upgrade(self) -> bool {
        self.has(UPGRADE_BIT)
    }
}

/// Removes hop-by-hop headers, including those named in `Connection`. `TE: trailers` is kept
/// (gRPC needs it end to end); any other `TE` is dropped.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_present_hop_by_hop(headers, Present::scan(headers));
}

/// `remove_hop_by_hop` with the names already scanned. Nothing is allocated unless `Connection`
/// names a header.
pub fn remove_present_hop_by_hop(headers: &mut HeaderMap, present: Present) {
    let mut found = present.0 & HOP_BY_HOP_BITS;
    if found & TE_BIT != 0 && is_te_trailers(headers) {
        found &= !TE_BIT;
    }
    if found == 0 {
        return;
    }
    if found & CONNECTION_BIT != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // Options, not header names; `keep-alive` as a header is hop-by-hop anyway.
            .filter(|token| !token.eq_ignore_ascii_case("close") && !token.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if found & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

fn is_te_trailers(headers: &HeaderMap) -> bool {
    headers.get(TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
}

/// The client's address as `x-forwarded-for` carries it, formatted once per connection, and where
/// it was connecting when a capture redirected it.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    pub ip: IpAddr,
    forwarded_for: HeaderValue,
    /// Where the client was connecting before a capture redirected it here (`original_dst`);
    /// read only on listeners with `original_destination: true`.
    pub original_destination: Option<SocketAddr>,
}

impl ClientAddress {
    pub fn new(ip: IpAddr) -> ClientAddress {
        let forwarded_for = HeaderValue::from_str(&ip.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        ClientAddress { ip, forwarded_for, original_destination: None }
    }
}

/// The verified identity of a connection's mesh peer, with its header value made once.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub id: SpiffeId,
    header: Option<HeaderValue>,
}

impl PeerIdentity {
    pub fn new(id: SpiffeId) -> PeerIdentity {
        let header = HeaderValue::from_str(id.as_str()).ok();
        PeerIdentity { id, header }
    }
}

/// The peer identity header as the sidecar vouches for it: the verified SPIFFE ID of an mTLS
/// peer, and never what a client sent.
pub fn set_peer_identity(headers: &mut HeaderMap, present: Present, peer: Option<&PeerIdentity>) {
    // `insert` replaces every value a client sent, in one lookup.
    match peer.and_then(|peer| peer.header.clone()) {
        Some(value) => {
            headers.insert(PEER_IDENTITY, value);
        }
        None if present.has(PEER_IDENTITY_BIT) => {
            headers.remove(PEER_IDENTITY);
        }
        None => {}
    }
}

/// Prepares a request's headers for the upstream hop. Each header the proxy may add is looked
/// up once (an entry), not checked and then inserted.
pub fn prepare_request(headers: &mut HeaderMap, present: Present, client: &ClientAddress, authority: Option<&str>) {
    remove_present_hop_by_hop(headers, present);
    // The proxy answers `Expect: 100-continue` itself, when it starts reading the body.
    if present.has(EXPECT_BIT) {
        headers.remove(EXPECT);
    }
    if let Entry::Vacant(host) = headers.entry(HOST) {
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
            host.insert(value);
        }
    }
    append_forwarded_for(headers, client);
    headers.entry(X_FORWARDED_PROTO).or_insert_with(|| HeaderValue::from_static("http"));
    if let Entry::Vacant(request_id) = headers.entry(X_REQUEST_ID) {
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        // In one reference-counted allocation, so the observation of the request keeps a copy
        // for the cost of a count (a value copied from a `&str` allocates again when cloned).
        if let Ok(mut id) = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text)) {
            // Unique per request: HPACK would add each one to the connection's dynamic table
            // (both encoder and decoder), evicting the entries that do repeat. Sensitive
            // values are sent as never-indexed literals instead.
            id.set_sensitive(true);
            request_id.insert(id);
        }
    }
}

/// Appends the client to the first `x-forwarded-for` (replacing any others, and one that is not
/// text), or adds it.
fn append_forwarded_for(headers: &mut HeaderMap, client: &ClientAddress) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut forwarded) => {
            let value = match forwarded.get().to_str() {
                Ok(existing) => joined_forwarded_for(existing, &client.forwarded_for),
                Err(_) => Some(client.forwarded_for.clone()),
            };
            if let Some(value) = value {
                forwarded.insert(value);
            }
        }
        Entry::Vacant(forwarded) => {
            forwarded.insert(client.forwarded_for.clone());
        }
    }
}

/// `existing, client`: joined bytewise into one buffer that becomes the value as it is, rather
/// than through the formatter (the client's address is already text, made per connection).
fn joined_forwarded_for(existing: &str, client: &HeaderValue) -> Option<HeaderValue> {
    let mut joined = Vec::with_capacity(existing.len() + 2 + client.len());
    joined.extend_from_slice(existing.as_bytes());
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(client.as_bytes());
    HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
}

/// The `http://authority/path` form an HTTP/2 request carries in its pseudo-headers.
pub fn absolute_uri(scheme: http::uri::Scheme, authority: http::uri::Authority, path_and_query: http::uri::PathAndQuery) -> Result<http::uri::Uri, ProxyError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    http::uri::Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut map = headers(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-kept", "yes"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
        ]);
        remove_hop_by_hop(&mut map);
        assert_eq!(map.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x-kept"]);
    }

    #[test]
    fn hop_by_hop_headers_are_removed_without_a_connection_header() {
        let mut map = headers(&[
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eA=="),
            ("trailer", "x-checksum"),
            ("x-kept", "yes"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
        ]);
        remove_hop_by_hop(&mut map);
        assert_eq!(map.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x-kept"]);
    }

    #[test]
    fn a_forged_peer_identity_is_removed_and_a_verified_one_set() {
        let forged = || headers(&[("x-meshproxy-peer-identity", "spiffe://evil/ns/x/sa/y"), ("x-kept", "yes")]);
        let mut map = forged();
        let present = Present::scan(&map);
        set_peer_identity(&mut map, present, None);
        assert_eq!(map.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x-kept"]);
        let mut map = forged();
        let peer = PeerIdentity::new(SpiffeId::parse("spiffe://mesh.local/ns/a/sa/b").unwrap());
        let present = Present::scan(&map);
        set_peer_identity(&mut map, present, Some(&peer));
        assert_eq!(map.get_all(&PEER_IDENTITY).iter().collect::<Vec<_>>(), vec!["spiffe://mesh.local/ns/a/sa/b"]);
    }

    #[test]
    fn only_chunked_is_an_understood_transfer_coding() {
        for good in [&[][..], &[("transfer-encoding", "chunked")], &[("transfer-encoding", "Chunked"), ("transfer-encoding", " ,chunked")]] {
            let map = headers(good);
            assert!(Present::scan(&map).check_transfer_codings(&map).is_ok(), "{good:?}");
        }
        for bad in [&[("transfer-encoding", "gzip, chunked")][..], &[("transfer-encoding", "cow, chunked")], &[("transfer-encoding", "gzip"), ("transfer-encoding", "chunked")]] {
            let map = headers(bad);
            assert!(matches!(Present::scan(&map).check_transfer_codings(&map), Err(ProxyError::UnsupportedTransferCoding)), "{bad:?}");
        }
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut map = headers(&[("te", "trailers")]);
        remove_hop_by_hop(&mut map);
        assert_eq!(map.get(TE).map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    }

    #[test]
    fn forwarded_for_is_appended_and_request_id_generated_once() {
        let mut map = headers(&[("x-forwarded-for", "10.1.1.1"), ("expect", "100-continue")]);
        let present = Present::scan(&map);
        prepare_request(&mut map, present, &ClientAddress::new(IpAddr::from([127, 0, 0, 1])), Some("orders"));
        assert_eq!(map.get(&X_FORWARDED_FOR).map(|v| v.as_bytes()), Some(&b"10.1.1.1, 127.0.0.1"[..]));
        assert_eq!(map.get(HOST).map(|v| v.as_bytes()), Some(&b"orders"[..]));
        assert!(map.get(EXPECT).is_none());
        let id = map.get(&X_REQUEST_ID).cloned();
        assert_eq!(id.as_ref().map(|v| v.len()), Some(36));
        assert_eq!(id.as_ref().map(HeaderValue::is_sensitive), Some(true), "a unique id is never HPACK-indexed");
        let present = Present::scan(&map);
        prepare_request(&mut map, present, &ClientAddress::new(IpAddr::from([127, 0, 0, 2])), None);
        assert_eq!(map.get(&X_REQUEST_ID), id.as_ref());
    }
}
