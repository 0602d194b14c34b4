//! Opaque TCP settings of the config document: how long an `auto` listener waits for a client's
//! first bytes before it gives a silent one to its `tcp_fallback` cluster. The protocols
//! themselves (`tcp` listeners and clusters) are variants of `ListenerProtocol` and
//! `UpstreamProtocol`.

use crate::duration::Millis;

/// Server-first protocols (MySQL, SMTP, PostgreSQL's SSL probe aside) wait for the server's
/// greeting; a client that sends nothing for this long is taken for one of them.
pub fn default_detect_timeout() -> Millis {
    Millis(100)
}

/// The defaults these settings add to `defaults()`.
pub fn defaults() -> [(&'static str, serde_json::Value); 1] {
    [("listener.detect_timeout_ms", serde_json::json!(default_detect_timeout().0))]
}
