//! A gRPC call's deadline over the whole call, as a gRPC client means it (and as Envoy enforces
//! it with `max_stream_duration.grpc_timeout_header_max`): the shorter of the call's
//! `grpc-timeout` and the route's `timeout` ends the call when it passes, streaming responses
//! included, not only the wait for the response head.
//!
//! A call with a `grpc-timeout` takes the route's stream-timeout path (`timeouts::call_limits`) with that
//! deadline covering the response; calls without one, and plain requests, are untouched and pay
//! nothing. Before the head, the call is answered `DEADLINE_EXCEEDED` (trailers-only, as every
//! proxy error of a call). Once the head is sent, the body (`observed`) ends the call with
//! trailers `grpc-status: 4` when what went so far is whole messages, so the client reads a
//! clean status; in the middle of a message, trailers would leave it a cut message, and the
//! stream is reset with CANCEL instead (`timeouts::ResponseTimer::end`). Either way the
//! upstream's stream is dropped (reset with CANCEL) and the call counts as DEADLINE_EXCEEDED.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};

use crate::grpc::{code, GRPC_MESSAGE, GRPC_STATUS};

/// The trailers that end a call whose deadline (`after`) passed mid-response.
pub fn exceeded_trailers(after: Duration) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(GRPC_STATUS, HeaderValue::from(u16::from(code::DEADLINE_EXCEEDED)));
    if let Ok(message) = HeaderValue::try_from(format!("the call's deadline ({}ms) passed", after.as_millis())) {
        trailers.insert(GRPC_MESSAGE, message);
    }
    trailers
}

/// Where a call's response stands among its length-prefixed messages (a 1-byte flag and a
/// 4-byte big-endian length, then the message): whether trailers could follow what was sent.
/// Fed only for calls whose deadline covers the response: a few compares per data frame.
#[derive(Debug, Default)]
pub struct Messages {
    prefix: [u8; 5],
    /// Bytes of the current prefix seen.
    have: usize,
    /// Bytes of the current message still to come.
    left: u64,
}

// === impl Messages ===

impl Messages {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = data.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(self.prefix.len() - self.have);
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == self.prefix.len() {
                let [_, a, b, c, d] = self.prefix;
                self.left = u64::from(u32::from_be_bytes([a, b, c, d]));
                self.have = 0;
            }
        }
    }

    /// Whether every message begun has been sent whole.
    pub fn whole(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_whole_only_between_messages() {
        let mut messages = Messages::default();
        assert!(messages.whole());
        messages.feed(&[0, 0, 0]);
        assert!(!messages.whole(), "a prefix cut");
        messages.feed(&[0, 3, b'a']);
        assert!(!messages.whole(), "a message cut");
        messages.feed(b"bc");
        assert!(messages.whole());
        // Two messages in one frame, one of them empty; then one split across frames.
        messages.feed(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 1, b'x', 0, 0, 0, 0, 2, b'y']);
        assert!(!messages.whole());
        messages.feed(b"z");
        assert!(messages.whole());
    }

    #[test]
    fn the_trailers_say_deadline_exceeded() {
        let trailers = exceeded_trailers(Duration::from_millis(500));
        assert_eq!(crate::grpc::status(&trailers), Some(code::DEADLINE_EXCEEDED));
        assert_eq!(trailers.get(GRPC_MESSAGE).map(HeaderValue::as_bytes), Some(&b"the call's deadline (500ms) passed"[..]));
    }
}
