//! Protocol detection on `auto` listeners with a `tcp_fallback`: the first bytes a client sends
//! (at most `PEEK_BYTES`, peeked, never consumed) tell HTTP/1.1 and h2c (a method token then a
//! space; the h2c preface starts `PRI `) from a TLS ClientHello and anything else. A client
//! that sends nothing within the listener's `detect_timeout` speaks a server-first protocol
//! (MySQL, SMTP): it goes to the fallback too, and hears its server's greeting.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Enough for the longest method in use (`VERSION-CONTROL`, 15 bytes) and its space.
const PEEK_BYTES: usize = 16;
/// A client that sent part of its first bytes is peeked again after this.
const PEEK_AGAIN: Duration = Duration::from_millis(1);
/// An `auto` listener without `tcp_fallback` closes a client silent this long: hyper's own wait
/// for a request head (`header_read_timeout`), which does not start before the first byte.
pub const SILENT_CLIENT: Duration = Duration::from_secs(30);
/// The first byte of a TLS record carrying a handshake message, and the major version after it.
const TLS_HANDSHAKE: [u8; 2] = [0x16, 0x03];

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A request line (HTTP/1.x) or the h2c preface.
    Http,
    /// A TLS record: TLS from an app, which the listener does not terminate.
    Tls,
    /// Bytes that are neither.
    Other,
    /// Too few bytes to tell yet.
    NeedMore,
    /// Nothing within the timeout.
    Silent,
    /// The client closed (or the socket failed) before sending anything.
    Closed,
}

/// Classifies the first bytes of a connection.
pub fn classify(bytes: &[u8]) -> Seen {
    match bytes {
        [] => Seen::NeedMore,
        [first] if *first == TLS_HANDSHAKE[0] => Seen::NeedMore,
        [first, second, ..] if [*first, *second] == TLS_HANDSHAKE => Seen::Tls,
        _ => {
            // Methods are upper-case by convention (RFC 9110 §9.1); lower-case tokens are left
            // to text protocols (memcached's `get key`).
            let token = bytes.iter().take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_').count();
            match bytes.get(token) {
                Some(b' ') if token > 0 => Seen::Http,
                None if token < PEEK_BYTES => Seen::NeedMore,
                _ => Seen::Other,
            }
        }
    }
}

/// Peeks at the connection's first bytes until they tell what it is, or `timeout` passes.
pub async fn first_bytes(stream: &TcpStream, timeout: Duration) -> Seen {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; PEEK_BYTES];
    loop {
        let peeked = match tokio::time::timeout_at(deadline, stream.peek(&mut buffer)).await {
            Err(_) => return Seen::Silent,
            Ok(Ok(0) | Err(_)) => return Seen::Closed,
            Ok(Ok(peeked)) => peeked,
        };
        let seen = classify(&buffer[..peeked]);
        if seen != Seen::NeedMore {
            return seen;
        }
        // A peek answers at once while bytes wait unread: more bytes are waited for by time.
        if Instant::now() + PEEK_AGAIN >= deadline {
            return Seen::NeedMore;
        }
        tokio::time::sleep(PEEK_AGAIN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_http_tls_and_other_protocols_apart() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Seen::Http);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), Seen::Http, "the h2c preface");
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Seen::Http);
        assert_eq!(classify(b"POS"), Seen::NeedMore);
        assert_eq!(classify(&[0x16]), Seen::NeedMore);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Seen::Tls);
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Seen::Other, "redis");
        assert_eq!(classify(b"PING\r\n"), Seen::Other, "an inline redis command");
        assert_eq!(classify(b"get key\r\n"), Seen::Other, "memcached");
        assert_eq!(classify(&[0, 0, 0, 8, 4, 210, 22, 47]), Seen::Other, "PostgreSQL's SSLRequest");
        assert_eq!(classify(b"ABCDEFGHIJKLMNOP"), Seen::Other, "no method is that long");
        assert_eq!(classify(b" GET"), Seen::Other);
    }
}
