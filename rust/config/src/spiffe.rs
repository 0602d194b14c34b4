//! SPIFFE IDs (`spiffe://<trust-domain><path>`), parsed as the SPIFFE ID specification defines
//! them, with errors that say what is wrong and what would be valid.
//!
//! The rules are stricter than generic URI syntax on purpose: the spec forbids percent-encoding,
//! ports, userinfo, queries, fragments and dot segments, so that two peers comparing IDs as plain
//! strings always agree. The messages and limits are those of `python/meshproxy/spiffe.py`, so
//! both layers reject the same IDs in the same words.

use crate::problem::shown;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub const SCHEME_PREFIX: &str = "spiffe://";
/// The spec's interoperability limit for a whole ID, scheme included.
pub const MAX_ID_BYTES: usize = 2048;
/// A trust domain is a URI host, which RFC 3986 limits to 255 characters.
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

const TRUST_DOMAIN_RULE: &str = "lowercase letters a-z, digits 0-9, '.', '-' and '_'";
const PATH_SEGMENT_RULE: &str = "letters A-Z and a-z, digits 0-9, '.', '-' and '_'";
const EXAMPLE: &str = "spiffe://example.org/ns/default/sa/web";

/// A valid SPIFFE ID. Cloning it is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    text: Arc<str>,
    /// Where the path starts in `text`: after the trust domain, at its '/' or at the end.
    path_at: usize,
}

/// Why a string is not a SPIFFE ID (or trust domain, or ID prefix); `Display` gives one line
/// naming the string, the problem and what would be valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffeIdError {
    subject: &'static str,
    /// The input as quoted in messages, cut short: an ID may be 2048 bytes long.
    shown: String,
    problem: String,
}

// === impl SpiffeId ===

impl SpiffeId {
    pub fn parse(text: &str) -> Result<SpiffeId, SpiffeIdError> {
        match check(text, Shape::Id) {
            Ok(path_at) => Ok(SpiffeId { text: text.into(), path_at }),
            Err(problem) => Err(SpiffeIdError::new("SPIFFE ID", text, problem)),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn trust_domain(&self) -> &str {
        &self.text[SCHEME_PREFIX.len()..self.path_at]
    }

    /// Empty (the ID of the trust domain itself) or starting with '/'.
    pub fn path(&self) -> &str {
        &self.text[self.path_at..]
    }

    /// The segment after a leading `ns` segment: `shop` in `spiffe://mesh.local/ns/shop/sa/web`
    /// (and in `/ns/shop` or `/ns/shop/anything`). `None` when the path does not start so.
    pub fn namespace(&self) -> Option<&str> {
        let rest = self.path().strip_prefix("/ns/")?;
        rest.split('/').next()
    }

    /// `web` for a path of exactly the Kubernetes shape `/ns/<namespace>/sa/<service-account>`.
    pub fn service_account(&self) -> Option<&str> {
        let (_namespace, rest) = self.path().strip_prefix("/ns/")?.split_once('/')?;
        let account = rest.strip_prefix("sa/")?;
        (!account.contains('/')).then_some(account)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(text: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::parse(text)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({:?})", &*self.text)
    }
}

/// Checks a trust domain name (`mesh.local`), as `identity.trust_domain` gives it.
pub fn check_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    trust_domain_problem(name).map_or(Ok(()), |problem| Err(SpiffeIdError::new("trust domain", name, problem)))
}

/// Checks the part before the `*` of an identity pattern such as `spiffe://mesh.local/ns/shop/*`:
/// it must name a whole trust domain followed by '/', and some valid ID must start with it.
/// Returns the trust domain.
pub fn check_prefix(prefix: &str) -> Result<&str, SpiffeIdError> {
    match check(prefix, Shape::Prefix) {
        Ok(path_at) => Ok(&prefix[SCHEME_PREFIX.len()..path_at]),
        Err(problem) => Err(SpiffeIdError::new("SPIFFE ID prefix", prefix, problem)),
    }
}

// === impl SpiffeIdError ===

impl SpiffeIdError {
    fn new(subject: &'static str, text: &str, problem: String) -> SpiffeIdError {
        SpiffeIdError { subject, shown: shown(text), problem }
    }

    /// What is wrong, without the quoted input: for messages that quote it themselves.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for SpiffeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a valid {}: {}", self.shown, self.subject, self.problem)
    }
}

impl std::error::Error for SpiffeIdError {}

// === the rules ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A whole ID.
    Id,
    /// The start of IDs: its last path segment may be empty or unfinished ('.', '..', '').
    Prefix,
}

/// `Ok(where the path starts)` or what is wrong. Checked in the order a reader would fix
/// things, so that a query or a port is named as such rather than as a stray character.
fn check(text: &str, shape: Shape) -> Result<usize, String> {
    if text.len() > MAX_ID_BYTES {
        return Err(format!("it is {} bytes long; at most {MAX_ID_BYTES} are allowed", text.len()));
    }
    let Some(rest) = text.strip_prefix(SCHEME_PREFIX) else {
        let scheme = text.get(..SCHEME_PREFIX.len());
        if scheme.is_some_and(|s| s.eq_ignore_ascii_case(SCHEME_PREFIX)) {
            return Err("the scheme must be written in lowercase: 'spiffe://'".into());
        }
        return Err(format!("it must start with 'spiffe://' followed by a trust domain, e.g. '{EXAMPLE}'"));
    };
    for (mark, part) in [('?', "a query"), ('#', "a fragment")] {
        if rest.contains(mark) {
            return Err(format!("it must not have {part} ('{mark}...')"));
        }
    }
    let (authority, path) = rest.find('/').map_or((rest, None), |slash| (&rest[..slash], Some(&rest[slash + 1..])));
    if authority.contains('@') {
        return Err("it must not have userinfo ('...@') before the trust domain".into());
    }
    if authority.contains(':') {
        return Err("it must not have a port (':...') after the trust domain".into());
    }
    if let Some(problem) = trust_domain_problem(authority) {
        return Err(problem);
    }
    let path_at = SCHEME_PREFIX.len() + authority.len();
    match (path, shape) {
        (None, Shape::Id) => Ok(path_at),
        (None, Shape::Prefix) => Err(format!(
            "a prefix must name the whole trust domain and a '/', e.g. 'spiffe://{authority}/*' or 'spiffe://{authority}/ns/default/*'"
        )),
        (Some(path), shape) => path_problem(path, shape).map_or(Ok(path_at), Err),
    }
}

fn trust_domain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some(format!("the trust domain is empty; it needs at least one of {TRUST_DOMAIN_RULE}"));
    }
    // Characters first: a domain that passes has only ASCII ones, so its length in bytes is its
    // length in characters.
    if let Some(bad) = name.chars().find(|&c| !is_trust_domain_char(c)) {
        return Some(format!("the trust domain contains {bad:?}; it may use only {TRUST_DOMAIN_RULE}"));
    }
    (name.len() > MAX_TRUST_DOMAIN_BYTES).then(|| {
        format!("the trust domain is {} characters long; at most {MAX_TRUST_DOMAIN_BYTES} are allowed", name.len())
    })
}

/// `path` is what follows the first '/' after the trust domain.
fn path_problem(path: &str, shape: Shape) -> Option<String> {
    let segments = path.split('/').count();
    for (index, segment) in path.split('/').enumerate() {
        // A prefix may stop anywhere in its last segment, even before its first character.
        let unfinished = shape == Shape::Prefix && index == segments - 1;
        if segment.is_empty() && !unfinished {
            if index == segments - 1 {
                return Some("the path must not end with '/'; remove the trailing '/'".into());
            }
            return Some("the path must not have empty segments ('//'); separate segments with a single '/'".into());
        }
        if (segment == "." || segment == "..") && !unfinished {
            return Some(format!("the path must not have '{segment}' segments; write the path out in full without them"));
        }
        if let Some(bad) = segment.chars().find(|&c| !is_path_char(c)) {
            return Some(format!(
                "the path segment {} contains {bad:?}; path segments may use only {PATH_SEGMENT_RULE}",
                shown(segment)
            ));
        }
    }
    None
}

fn is_trust_domain_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn error(text: &str) -> String {
        match SpiffeId::parse(text) {
            Ok(id) => panic!("{text} parsed as {id:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_spec_examples_parse_into_their_parts() {
        for (text, trust_domain, path) in [
            ("spiffe://staging.example.com/payments/mysql", "staging.example.com", "/payments/mysql"),
            ("spiffe://staging.example.com/payments/web-fe", "staging.example.com", "/payments/web-fe"),
            ("spiffe://k8s-west.example.com/ns/staging/sa/default", "k8s-west.example.com", "/ns/staging/sa/default"),
            (
                "spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453",
                "example.com",
                "/9eebccd2-12bf-40a6-b262-65fe0487d453",
            ),
            ("spiffe://example.org", "example.org", ""),
            (
                "spiffe://trust_domain-1.x/Path.With_All-Chars/0/..a/.b",
                "trust_domain-1.x",
                "/Path.With_All-Chars/0/..a/.b",
            ),
        ] {
            let id = SpiffeId::parse(text).unwrap();
            assert_eq!((id.as_str(), id.trust_domain(), id.path()), (text, trust_domain, path));
            assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn invalid_ids_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "it must start with 'spiffe://'"),
            ("http://example.org/a", "it must start with 'spiffe://'"),
            ("spiffe:/example.org", "it must start with 'spiffe://'"),
            ("SPIFFE://example.org/a", "the scheme must be written in lowercase"),
            ("Spiffe://example.org", "the scheme must be written in lowercase"),
            ("spiffe://", "the trust domain is empty"),
            ("spiffe:///path", "the trust domain is empty"),
            ("spiffe://Mesh.local/a", "the trust domain contains 'M'; it may use only lowercase letters"),
            ("spiffe://exa mple.org", "the trust domain contains ' '"),
            ("spiffe://example%2eorg", "contains '%'"),
            ("spiffe://user@example.org/a", "it must not have userinfo"),
            ("spiffe://example.org:8443/a", "it must not have a port"),
            ("spiffe://example.org/a?x=1", "it must not have a query"),
            ("spiffe://example.org/a#frag", "it must not have a fragment"),
            ("spiffe://example.org/", "the path must not end with '/'; remove the trailing '/'"),
            ("spiffe://example.org/a/", "the path must not end with '/'"),
            ("spiffe://example.org//a", "empty segments"),
            ("spiffe://example.org/a//b", "empty segments"),
            ("spiffe://example.org/./a", "must not have '.' segments"),
            ("spiffe://example.org/a/..", "must not have '..' segments"),
            ("spiffe://example.org/a%20b", "the path segment 'a%20b' contains '%'"),
            ("spiffe://example.org/caf\u{e9}", "contains '\u{e9}'"),
            ("spiffe://example.org/a\nb", "contains '\\n'"),
        ] {
            let got = error(text);
            assert!(got.contains(reason), "{text:?}: {got}");
            assert!(got.contains(" is not a valid SPIFFE ID: "), "{got}");
        }
    }

    #[test]
    fn the_length_limits_hold_at_their_edges() {
        let at = |len: usize| format!("spiffe://example.org/{}", "a".repeat(len - "spiffe://example.org/".len()));
        assert!(SpiffeId::parse(&at(MAX_ID_BYTES)).is_ok());
        assert!(error(&at(MAX_ID_BYTES + 1)).contains("2049 bytes long; at most 2048"));
        let domain = |len: usize| format!("spiffe://{}", "d".repeat(len));
        assert!(SpiffeId::parse(&domain(MAX_TRUST_DOMAIN_BYTES)).is_ok());
        assert!(error(&domain(MAX_TRUST_DOMAIN_BYTES + 1)).contains("at most 255"));
    }

    #[test]
    fn long_inputs_are_cut_short_in_messages() {
        let message = error(&format!("spiffe://example.org/{}%", "a".repeat(300)));
        assert!(message.len() < 400, "{message}");
        assert!(message.contains("...'"), "{message}");
    }

    #[test]
    fn namespace_and_service_account_follow_the_kubernetes_shape() {
        let parts = |text: &str| {
            let id = SpiffeId::parse(text).unwrap();
            (id.namespace().map(str::to_owned), id.service_account().map(str::to_owned))
        };
        let both = |ns: &str, sa: &str| (Some(ns.to_owned()), Some(sa.to_owned()));
        assert_eq!(parts("spiffe://mesh.local/ns/shop/sa/web"), both("shop", "web"));
        assert_eq!(parts("spiffe://mesh.local/ns/shop"), (Some("shop".to_owned()), None));
        assert_eq!(parts("spiffe://mesh.local/ns/shop/sa/web/x"), (Some("shop".to_owned()), None));
        assert_eq!(parts("spiffe://mesh.local/ns/shop/pod/web"), (Some("shop".to_owned()), None));
        assert_eq!(parts("spiffe://mesh.local/ns"), (None, None));
        assert_eq!(parts("spiffe://mesh.local/x/ns/shop/sa/web"), (None, None));
        assert_eq!(parts("spiffe://mesh.local/nsx/shop"), (None, None));
        assert_eq!(parts("spiffe://mesh.local"), (None, None));
    }

    #[test]
    fn trust_domains_are_checked_alone() {
        assert!(check_trust_domain("mesh.local").is_ok());
        let message = check_trust_domain("Mesh.local").unwrap_err().to_string();
        assert_eq!(
            message,
            "'Mesh.local' is not a valid trust domain: the trust domain contains 'M'; \
             it may use only lowercase letters a-z, digits 0-9, '.', '-' and '_'"
        );
        assert!(check_trust_domain("").is_err());
        assert!(check_trust_domain("mesh.local:443").is_err());
    }

    #[test]
    fn prefixes_name_a_whole_trust_domain_and_may_stop_mid_segment() {
        for ok in [
            "spiffe://mesh.local/",
            "spiffe://mesh.local/ns/shop/",
            "spiffe://mesh.local/ns/sh",
            "spiffe://mesh.local/ns/.",
        ] {
            assert_eq!(check_prefix(ok).map_err(|e| e.to_string()), Ok("mesh.local"), "{ok}");
        }
        for (bad, reason) in [
            ("spiffe://mesh.local", "a prefix must name the whole trust domain and a '/'"),
            ("spiffe://mesh", "a prefix must name the whole trust domain and a '/'"),
            ("spiffe://mesh.local//", "empty segments"),
            ("spiffe://mesh.local/./", "'.' segments"),
            ("spiffe://Mesh.local/", "contains 'M'"),
            ("spiffe://mesh.local/ns/a b", "contains ' '"),
            ("mesh.local/", "must start with 'spiffe://'"),
        ] {
            let got = check_prefix(bad).map_err(|e| e.to_string());
            assert!(got.as_ref().is_err_and(|e| e.contains(reason)), "{bad}: {got:?}");
        }
    }

    /// The rules, restated independently of `check`.
    fn follows_the_rules(text: &str) -> bool {
        let Some(rest) = text.strip_prefix("spiffe://") else { return false };
        let (domain, path) = rest.split_once('/').map_or((rest, None), |(d, p)| (d, Some(p)));
        let domain_ok = !domain.is_empty()
            && domain.len() <= 255
            && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        let path_ok = path.is_none_or(|p| {
            p.split('/').all(|s| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            })
        });
        text.len() <= 2048 && domain_ok && path_ok
    }

    fn valid_id() -> impl Strategy<Value = String> {
        let segment = "[A-Za-z0-9._-]{1,12}".prop_filter("dot segment", |s| s != "." && s != "..");
        ("[a-z0-9._-]{1,20}", prop::collection::vec(segment, 0..6)).prop_map(|(domain, segments)| {
            format!("spiffe://{domain}{}", segments.iter().map(|s| format!("/{s}")).collect::<String>())
        })
    }

    proptest! {
        #[test]
        fn a_valid_id_survives_display_and_parse(text in valid_id()) {
            let id = SpiffeId::parse(&text).unwrap();
            prop_assert_eq!(id.as_str(), text.as_str());
            prop_assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), text.clone());
            prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn any_string_parses_without_panic_and_iff_it_follows_the_rules(text in any::<String>()) {
            prop_assert_eq!(SpiffeId::parse(&text).is_ok(), follows_the_rules(&text));
        }

        #[test]
        fn near_misses_parse_iff_they_follow_the_rules(text in "(spiffe|SPIFFE|spiffe:)://[a-zA-Z0-9.:@_%?#/-]{0,30}") {
            let parsed = SpiffeId::parse(&text);
            prop_assert_eq!(parsed.is_ok(), follows_the_rules(&text), "{:?}", parsed);
        }

        #[test]
        fn every_prefix_of_a_valid_path_is_a_valid_prefix(text in valid_id(), cut in 0usize..200) {
            let path_at = text["spiffe://".len()..].find('/').map(|i| i + "spiffe://".len());
            if let Some(path_at) = path_at {
                let end = (path_at + 1 + cut).min(text.len());
                prop_assert!(check_prefix(&text[..end]).is_ok(), "{}", &text[..end]);
            }
        }
    }
}
