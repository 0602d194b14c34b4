//! What is wrong with a config: a message at a field path (`listeners[0].routes[3].cluster`).

use std::fmt;

/// One problem with a config, at a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

// === impl Problem ===

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A value quoted for a message, control characters escaped, cut short.
pub(crate) fn shown(text: &str) -> String {
    const LIMIT: usize = 80;
    if text.chars().count() <= LIMIT {
        return format!("'{}'", text.escape_debug());
    }
    let cut: String = text.chars().take(LIMIT - 3).collect();
    format!("'{}...'", cut.escape_debug())
}
